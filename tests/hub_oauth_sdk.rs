//! Real clients against the hub's OAuth (issue 14): the official MCP Python SDK's OAuth client
//! (`mcp.client.auth.OAuthClientProvider`), 1.x in `.venv-mcp1` and 2.x in `.venv-mcp2`, and a
//! real OpenID provider (django-oauth-toolkit, `tests/support/oidc.rs`) where the person signs
//! in. `tests/clients/oauth_flow.py` lets the SDK discover from the 401, register (DCR),
//! authorize with PKCE and `resource`, exchange the code, call tools, refresh once the access
//! token expired, and then revokes; the person's part (the hub's sign-in button, the provider's
//! login form, the consent page) is followed over HTTP as a browser would.
//!
//! Needs `make test-clients`; fails loudly without it.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use llmbox::hub::auth::Access;
use llmbox::hub::http::HttpFront;
use llmbox::hub::oauth::{OAuth, OAuthConfig};
use llmbox::hub::signin::{Rules, Signin, SigninConfig};
use llmbox::hub::{Hub, HubConfig};
use serde_json::Value;
use support::oidc::{CLIENT_ID, Provider, require, start_provider};

/// Access tokens live this long here, so the SDK must refresh within the test.
const ACCESS_TTL: Duration = Duration::from_secs(3);

struct Setup {
    hub: Arc<Hub>,
    _front: HttpFront,
    mcp: String,
    _provider: Provider,
}

fn setup(tag: &str, cimd_loopback: bool) -> Setup {
    let dir = support::temp_dir(tag);
    let addr: SocketAddr = format!("127.0.0.1:{}", support::free_port())
        .parse()
        .expect("addr");
    let public = format!("http://{addr}");
    let provider = start_provider(
        &dir,
        &format!("{public}/signin/oidc/callback"),
        &["ada@example.org:ada-pw-1", "bob@example.org:bob-pw-2"],
    );
    let board = Arc::new(support::hub::Switchboard::default().with("local"));
    let hub = support::hub::hub_on(&dir.join("state.json"), &board, HubConfig::new(&public));
    let signin = Signin::start(SigninConfig {
        public_url: public.clone(),
        oidc: vec![provider.oidc_config()],
        github: None,
        rules: Rules {
            domains: vec!["example.org".into()],
            ..Rules::default()
        },
        session_ttl: Duration::from_secs(3600),
        spoke_url: "ws://127.0.0.1:1".into(),
    })
    .expect("discovery at the real provider");
    let mut config = OAuthConfig::new(&public);
    config.access_ttl = ACCESS_TTL;
    config.cimd_allow_loopback_http = cimd_loopback;
    let access = Access {
        signin: Some(Arc::new(signin)),
        oauth: Some(Arc::new(OAuth::new(config))),
        ..Access::default()
    };
    let front =
        HttpFront::start_with_access(Arc::clone(&hub), &addr.to_string(), access).expect("listen");
    Setup {
        hub,
        _front: front,
        mcp: format!("{public}/mcp"),
        _provider: provider,
    }
}

fn venv_python(venv: &str) -> PathBuf {
    let p = support::root().join(venv).join("bin/python");
    require(&p);
    p
}

/// Runs the SDK flow; the JSON lines it printed, by step.
fn run_flow(venv: &str, s: &Setup, email: &str, password: &str, extra: &[&str]) -> Vec<Value> {
    let out = Command::new(venv_python(venv))
        .arg(support::root().join("tests/clients/oauth_flow.py"))
        .args(["--url", &s.mcp, "--email", email, "--password", password])
        .args(extra)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{venv}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{venv}: {stdout}");
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn step<'a>(lines: &'a [Value], name: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["step"] == name)
        .unwrap_or_else(|| panic!("no {name} step in {lines:?}"))
}

fn sdk_connects_calls_refreshes_and_revokes(venv: &str, tag: &str) {
    let s = setup(tag, false);
    let wait = (ACCESS_TTL + Duration::from_secs(2)).as_secs().to_string();
    let ada = run_flow(
        venv,
        &s,
        "ada@example.org",
        "ada-pw-1",
        &["--box-id", "ada-box", "--wait-refresh", &wait],
    );
    let authorize = step(&ada, "authorize");
    assert_eq!(authorize["resource"], s.mcp.as_str(), "RFC 8707 resource");
    let consent = step(&ada, "consent_page");
    assert_eq!(consent["client"], "llmbox SDK test");
    assert_eq!(consent["redirect_host"], "127.0.0.1");
    assert_eq!(consent["signed_in_as"], "ada@example.org");
    let called = step(&ada, "tools_call");
    assert_eq!(called["created"], true);
    assert_eq!(called["boxes"], serde_json::json!(["ada-box"]));
    assert!(
        called["client_id"]
            .as_str()
            .is_some_and(|c| c.starts_with("llmbox-client-")),
        "registered by DCR: {called}"
    );
    let refreshed = step(&ada, "refreshed");
    assert_eq!(refreshed["rotated"], true, "{refreshed}");
    assert_eq!(refreshed["new_access"], true, "{refreshed}");
    assert_eq!(refreshed["boxes"], serde_json::json!(["ada-box"]));
    let revoked = step(&ada, "revoked");
    assert_eq!(revoked["status"], 200);
    assert_eq!(
        revoked["then"], 401,
        "the revoked grant's access token is refused"
    );
    // Another person through the same SDK sees none of ada's boxes.
    let bob = run_flow(
        venv,
        &s,
        "bob@example.org",
        "bob-pw-2",
        &["--box-id", "bob-box"],
    );
    assert_eq!(
        step(&bob, "tools_call")["boxes"],
        serde_json::json!(["bob-box"])
    );
    let state = std::fs::read_to_string(s.hub.store().path()).expect("state");
    assert!(!state.contains("llmbox_at_") && !state.contains("llmbox_rt_"));
}

#[test]
fn the_python_sdk_1x_oauth_client_connects_through_a_real_provider() {
    sdk_connects_calls_refreshes_and_revokes(".venv-mcp1", "oauth-sdk1");
}

#[test]
fn the_python_sdk_2x_oauth_client_connects_through_a_real_provider() {
    sdk_connects_calls_refreshes_and_revokes(".venv-mcp2", "oauth-sdk2");
}

fn sdk_connects_with_a_client_id_metadata_document(venv: &str, tag: &str) {
    let s = setup(tag, true);
    let lines = run_flow(
        venv,
        &s,
        "ada@example.org",
        "ada-pw-1",
        &["--box-id", "doc-box", "--serve-client-metadata"],
    );
    assert!(
        lines.iter().any(|l| l["step"] == "document_fetched"),
        "the hub fetched the document: {lines:?}"
    );
    assert_eq!(
        step(&lines, "consent_page")["client"],
        "llmbox SDK test (CIMD)"
    );
    let called = step(&lines, "tools_call");
    assert!(
        called["client_id"]
            .as_str()
            .is_some_and(|c| c.ends_with("/llmbox-sdk-client.json")),
        "the URL is the client_id, no registration: {called}"
    );
    assert_eq!(called["boxes"], serde_json::json!(["doc-box"]));
    assert_eq!(step(&lines, "revoked")["then"], 401);
    let state = s.hub.store().load().expect("state");
    assert!(state.oauth_clients.is_empty(), "nothing was registered");
}

#[test]
fn the_python_sdk_1x_uses_a_client_id_metadata_document() {
    sdk_connects_with_a_client_id_metadata_document(".venv-mcp1", "oauth-sdk1-cimd");
}

#[test]
fn the_python_sdk_2x_uses_a_client_id_metadata_document() {
    sdk_connects_with_a_client_id_metadata_document(".venv-mcp2", "oauth-sdk2-cimd");
}

/// The hub process whose log is checked; killed when dropped.
struct HubProcess(std::process::Child);

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_hub_binary_logs_no_code_and_no_token_of_a_whole_sdk_flow() {
    let dir = support::temp_dir("oauth-sdk-log");
    let port = support::free_port();
    let public = format!("http://127.0.0.1:{port}");
    let provider = start_provider(
        &dir,
        &format!("{public}/signin/oidc/callback"),
        &["ada@example.org:ada-pw-1"],
    );
    let log = dir.join("hub.log");
    let child = Command::new(env!("CARGO_BIN_EXE_llmbox"))
        .args(["hub", "--no-local", "--log-level", "debug", "--mcp-oauth"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args([
            "--spoke-listen",
            &format!("127.0.0.1:{}", support::free_port()),
        ])
        .args(["--public-url", &public, "--oauth-access-ttl", "3s"])
        .args([
            "--oidc-issuer",
            &provider.issuer,
            "--oidc-client-id",
            CLIENT_ID,
        ])
        .arg("--oidc-client-secret-file")
        .arg(dir.join("client-secret"))
        .args(["--allow-domain", "example.org", "--state"])
        .arg(dir.join("state.json"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start llmbox hub");
    let _hub = HubProcess(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    support::wait_for("the hub to listen", || {
        std::net::TcpStream::connect(addr).ok().map(|_| ())
    });
    let secrets = dir.join("secrets");
    let out = Command::new(venv_python(".venv-mcp2"))
        .arg(support::root().join("tests/clients/oauth_flow.py"))
        .args([
            "--url",
            &format!("{public}/mcp"),
            "--email",
            "ada@example.org",
        ])
        .args([
            "--password",
            "ada-pw-1",
            "--wait-refresh",
            "5",
            "--secrets-out",
        ])
        .arg(&secrets)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{}\n{}\nhub log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let secrets = std::fs::read_to_string(&secrets).expect("secrets");
    let secrets: Vec<&str> = secrets.lines().filter(|l| !l.is_empty()).collect();
    assert!(
        secrets.len() >= 5,
        "a code and two token pairs: {}",
        secrets.len()
    );
    let text = std::fs::read_to_string(&log).expect("hub log");
    assert!(
        text.contains("oauth: grant"),
        "the grant is logged by id: {text}"
    );
    assert!(
        text.contains("/oauth/consent/…"),
        "consent paths are masked: {text}"
    );
    for s in secrets {
        assert!(!text.contains(s), "the hub's log holds a secret: {text}");
    }
}
