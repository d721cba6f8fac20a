//! Sign-in on the activation page (issue 13) against a real OpenID provider: django-oauth-toolkit
//! from PyPI with OIDC on (`tests/fixtures/oidc/provider.py`, its own login form, a fresh RSA
//! key), started by each test on a free loopback port, and a real browser (chromium driven by
//! selenium) signing in through that form: activating a box, being refused outside the allow
//! rules or with an unverified email, and minting on `/admin` (phone width) a join token that
//! the real `llmbox spoke` binary then enrolls with. Checks the page gate, the admin actions and
//! the sign-in start over raw HTTP too.
//!
//! Needs `make test-clients` (`.venv-oidc`, chromium, chromedriver); fails loudly without them.
//! What a real provider will not do on demand (bad signatures, `alg: none`, wrong `iss`/`aud`,
//! expired tokens, replayed nonces, unverified email, rotated keys) is in the unit tests of
//! `hub::signin::jwt` and `hub::signin::oidc`.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use llmbox::hub::audit::AuditLog;
use llmbox::hub::auth::Access;
use llmbox::hub::http::HttpFront;
use llmbox::hub::signin::{Rules, Signin, SigninConfig};
use llmbox::hub::{CreateRequest, Hub, HubConfig};
use llmbox::store::SigninSession;
use sha2::{Digest, Sha256};
use support::http::request;

use support::oidc::{CLIENT_ID, Provider, python, require, start_provider};

/// A child process this test started, killed and reaped when dropped (also on failure).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Setup {
    hub: Arc<Hub>,
    front: HttpFront,
    addr: SocketAddr,
    audit: PathBuf,
    _provider: Provider,
}

/// A hub on a free port whose page is gated by the provider; `ada@example.org` is allowed by
/// email, `eve@other.example` by nothing.
fn setup(tag: &str) -> Setup {
    let dir = support::temp_dir(tag);
    let addr: SocketAddr = format!("127.0.0.1:{}", support::free_port())
        .parse()
        .expect("addr");
    let public = format!("http://{addr}");
    let provider = start_provider(
        &dir,
        &format!("{public}/signin/oidc/callback"),
        &[
            "ada@example.org:ada-pw-1",
            "eve@other.example:eve-pw-2",
            "una@example.org:una-pw-3:unverified",
        ],
    );
    let board = Arc::new(support::hub::Switchboard::default().with("local"));
    let hub = support::hub::hub_on(&dir.join("state.json"), &board, HubConfig::new(&public));
    let signin = Signin::start(SigninConfig {
        public_url: public,
        oidc: vec![provider.oidc_config()],
        github: None,
        rules: Rules {
            emails: vec!["ada@example.org".into()],
            ..Rules::default()
        },
        session_ttl: Duration::from_secs(3600),
        spoke_url: "ws://127.0.0.1:1".into(),
    })
    .expect("discovery at the real provider");
    let audit = dir.join("audit.log");
    let access = Access {
        audit: Some(Arc::new(AuditLog::open(&audit).expect("audit"))),
        signin: Some(Arc::new(signin)),
        ..Access::default()
    };
    let front =
        HttpFront::start_with_access(Arc::clone(&hub), &addr.to_string(), access).expect("listen");
    Setup {
        hub,
        front,
        addr,
        audit,
        _provider: provider,
    }
}

fn new_box(hub: &Hub, box_id: &str) -> (String, String) {
    let view = hub
        .create_box(CreateRequest {
            box_id: box_id.into(),
            description: "sign-in test".into(),
            ..Default::default()
        })
        .expect("create");
    let url = view.auth_url.expect("link");
    let path = format!("/auth/{}", support::hub::token_of(&url));
    (url, path)
}

fn browser(page: &str, email: &str, password: &str, expect: &str) -> String {
    browser_with(page, email, password, expect, &[])
}

fn browser_with(page: &str, email: &str, password: &str, expect: &str, extra: &[&str]) -> String {
    require(Path::new("/usr/bin/chromium"));
    require(Path::new("/usr/bin/chromedriver"));
    let out = Command::new(python())
        .arg(support::root().join("tests/clients/signin_flow.py"))
        .args(["--page", page, "--email", email, "--password", password])
        .args(["--expect", expect])
        .args(extra)
        .arg("--shots")
        .arg(support::root().join("target/browser-shots"))
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{stdout}");
    stdout.into_owned()
}

fn audit_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

#[test]
fn a_person_signs_in_at_a_real_provider_and_activates_while_a_stranger_is_refused() {
    let s = setup("signin-browser");
    let (page, _) = new_box(&s.hub, "signed");
    browser(&page, "ada@example.org", "ada-pw-1", "activated");
    let view = s.hub.get_box("signed").expect("get");
    assert_eq!(view.status, "ready");
    assert_eq!(view.activated_by.as_deref(), Some("ada@example.org"));
    let json = serde_json::to_value(&view).expect("json");
    assert_eq!(json["activated_by"], "ada@example.org");

    let (page, _) = new_box(&s.hub, "stranger");
    browser(&page, "eve@other.example", "eve-pw-2", "refused");
    assert_eq!(s.hub.get_box("stranger").expect("get").status, "pending");
    // The provider itself says una's email is unverified: refused at the callback.
    browser(&page, "una@example.org", "una-pw-3", "unverified");
    assert_eq!(s.hub.get_box("stranger").expect("get").status, "pending");

    let lines = audit_lines(&s.audit);
    let has = |event: &str, email: &str| {
        lines
            .iter()
            .any(|l| l["event"] == event && (l["email"] == email || l["by"] == email))
    };
    assert!(has("signin", "ada@example.org"), "{lines:?}");
    assert!(has("activate", "ada@example.org"), "{lines:?}");
    assert!(has("signin_refused", "eve@other.example"), "{lines:?}");
    assert!(has("activate_refused", "eve@other.example"), "{lines:?}");
    assert!(
        lines.iter().any(|l| l["event"] == "signin"
            && l["ok"] == false
            && l["reason"]
                .as_str()
                .is_some_and(|r| r.contains("not verified"))),
        "{lines:?}"
    );
    // The state file holds session hashes only: no cookie value in it.
    let state = std::fs::read_to_string(s.hub.store().path()).expect("state");
    assert!(state.contains("\"signin_sessions\""), "{state}");
    s.front.stop();
}

/// Stores a session for `email` as a sign-in would; the cookie value and its CSRF token.
fn plant_session(hub: &Hub, email: &str) -> (String, String) {
    let id = format!("{:0>64}", email.len());
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    hub.store()
        .update(|st| {
            st.signin_sessions.push(SigninSession {
                id_hash: hex(&Sha256::digest(id.as_bytes())),
                email: email.into(),
                hosted_domain: None,
                provider: "Test IdP".into(),
                expires: 4_000_000_000,
            })
        })
        .expect("store");
    let csrf = hex(&Sha256::digest(format!("llmbox-csrf:{id}").as_bytes()));
    (format!("llmbox={id}"), csrf)
}

#[test]
fn the_gated_page_shows_only_sign_in_and_refuses_posts_without_a_session_or_csrf() {
    let s = setup("signin-gate");
    let (_, path) = new_box(&s.hub, "gated");
    let form = ("Content-Type", "application/x-www-form-urlencoded");

    let anon = request(s.addr, "GET", &path, &[], b"");
    assert_eq!(anon.status, 200);
    let html = anon.text();
    assert!(html.contains("id=\"provider-0\""), "{html}");
    for hidden in [
        "id=\"activate\"",
        "id=\"signin\"",
        "oauth/authorize",
        "id=\"box-id\"",
    ] {
        assert!(
            !html.contains(hidden),
            "anonymous page shows {hidden}: {html}"
        );
    }
    let post = request(s.addr, "POST", &path, &[form], b"code=abc");
    assert_eq!(post.status, 401, "{}", post.text());

    let (cookie, csrf) = plant_session(&s.hub, "ada@example.org");
    let page = request(s.addr, "GET", &path, &[("Cookie", &cookie)], b"");
    assert_eq!(page.status, 200);
    assert!(
        page.text()
            .contains(&format!("name=\"csrf\" value=\"{csrf}\""))
    );
    let bad = request(
        s.addr,
        "POST",
        &path,
        &[form, ("Cookie", &cookie)],
        b"code=abc&csrf=0000",
    );
    assert_eq!(bad.status, 403, "{}", bad.text());
    let none = request(
        s.addr,
        "POST",
        &path,
        &[form, ("Cookie", &cookie)],
        b"code=abc",
    );
    assert_eq!(none.status, 403);
    assert_eq!(s.hub.get_box("gated").expect("get").status, "pending");
    let body = format!("code=good-code-1&csrf={csrf}");
    let ok = request(
        s.addr,
        "POST",
        &path,
        &[form, ("Cookie", &cookie)],
        body.as_bytes(),
    );
    assert_eq!(ok.status, 200);
    assert!(ok.text().contains("id=\"session-url\""), "{}", ok.text());
    assert_eq!(
        s.hub.get_box("gated").expect("get").activated_by.as_deref(),
        Some("ada@example.org")
    );

    let (_, path2) = new_box(&s.hub, "gated2");
    let (eve, eve_csrf) = plant_session(&s.hub, "eve@other.example");
    let refused = request(s.addr, "GET", &path2, &[("Cookie", &eve)], b"");
    assert_eq!(refused.status, 403);
    assert!(
        refused.text().contains("signed in as eve@other.example"),
        "{}",
        refused.text()
    );
    let body = format!("code=x&csrf={eve_csrf}");
    let refused = request(
        s.addr,
        "POST",
        &path2,
        &[form, ("Cookie", &eve)],
        body.as_bytes(),
    );
    assert_eq!(refused.status, 403);
    assert_eq!(s.hub.get_box("gated2").expect("get").status, "pending");
    s.front.stop();
}

#[test]
fn sign_in_starts_with_pkce_and_a_bound_state_that_works_once() {
    let s = setup("signin-start");
    let (_, path) = new_box(&s.hub, "flow");
    let start = request(
        s.addr,
        "GET",
        &format!("/signin/oidc?p=0&next={path}"),
        &[],
        b"",
    );
    assert_eq!(start.status, 303);
    let location = start.header("Location").expect("location").to_string();
    for part in [
        "response_type=code",
        "code_challenge_method=S256",
        "code_challenge=",
        "nonce=",
        &format!("client_id={CLIENT_ID}"),
    ] {
        assert!(location.contains(part), "{location}");
    }
    let cookie = start.header("Set-Cookie").expect("cookie");
    assert!(cookie.starts_with("llmbox-login="), "{cookie}");
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain http: {cookie}");
    let state = location
        .split(['?', '&'])
        .find_map(|kv| kv.strip_prefix("state="))
        .expect("state");
    let login = format!("llmbox-login={state}");
    let callback = format!("/signin/oidc/callback?state={state}&code=not-a-real-code");
    // Another browser (no login cookie) cannot use this state.
    let foreign = request(s.addr, "GET", &callback, &[], b"");
    assert_eq!(foreign.status, 400);
    assert!(foreign.text().contains("Sign-in expired"));
    // The real provider refuses the made-up code: a page saying so.
    let refused = request(s.addr, "GET", &callback, &[("Cookie", &login)], b"");
    assert_eq!(refused.status, 502, "{}", refused.text());
    assert!(
        refused.text().contains("invalid_grant"),
        "{}",
        refused.text()
    );
    // The state was spent by that attempt: replaying it is refused.
    let replay = request(s.addr, "GET", &callback, &[("Cookie", &login)], b"");
    assert_eq!(replay.status, 400);
    assert!(replay.text().contains("already used"));
    // An open redirect is not possible: a foreign `next` falls back to /signin.
    let evil = request(
        s.addr,
        "GET",
        "/signin/oidc?p=0&next=https://evil.example/",
        &[],
        b"",
    );
    assert_eq!(evil.status, 303);
    s.front.stop();
}

#[test]
fn a_provider_without_allow_rules_refuses_to_start_with_exit_2() {
    let dir = support::temp_dir("signin-norules");
    let secret = dir.join("secret");
    std::fs::write(&secret, "x\n").expect("secret");
    let out = Command::new(env!("CARGO_BIN_EXE_llmbox"))
        .args(["hub", "--oidc-issuer", "https://accounts.google.com"])
        .args(["--oidc-client-id", "abc", "--oidc-client-secret-file"])
        .arg(&secret)
        .arg("--state")
        .arg(dir.join("state.json"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--allow-email"), "{err}");
}

#[test]
fn admins_mint_a_join_token_a_real_spoke_enrolls_with_and_revoke_it_others_are_refused() {
    use llmbox::cluster::SpokeDirectory;
    let plane = support::cluster::Hub::start("signin-admin", Duration::from_millis(200));
    let addr: SocketAddr = format!("127.0.0.1:{}", support::free_port())
        .parse()
        .expect("addr");
    let public = format!("http://{addr}");
    let provider = start_provider(
        &plane.dir,
        &format!("{public}/signin/oidc/callback"),
        &["root@example.org:root-pw"],
    );
    let directory: Arc<dyn SpokeDirectory> = Arc::clone(&plane.registry) as _;
    let hub = Arc::new(Hub::new(
        HubConfig::new(&public),
        Arc::clone(&plane.store),
        directory,
    ));
    let signin = Signin::start(SigninConfig {
        public_url: public,
        oidc: vec![provider.oidc_config()],
        github: None,
        rules: Rules {
            emails: vec!["eve@other.example".into()],
            admins: vec!["root@example.org".into()],
            ..Rules::default()
        },
        session_ttl: Duration::from_secs(3600),
        spoke_url: plane.url.clone(),
    })
    .expect("signin");
    let audit = plane.dir.join("audit.log");
    let access = Access {
        signin: Some(Arc::new(signin)),
        audit: Some(Arc::new(AuditLog::open(&audit).expect("audit"))),
        ..Access::default()
    };
    let front =
        HttpFront::start_with_access(Arc::clone(&hub), &addr.to_string(), access).expect("listen");
    let form = ("Content-Type", "application/x-www-form-urlencoded");

    // Chromium on a phone-sized screen signs in at the provider and mints a token with the
    // page's own form; a real spoke enrolls with the line it shows.
    let out = browser_with(
        &format!("http://{addr}/admin"),
        "root@example.org",
        "root-pw",
        "admin",
        &["--width", "390", "--spoke-name", "edge-7"],
    );
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("SPOKE-LINE "))
        .expect("spoke line");
    let token = line.rsplit(' ').next().expect("token").to_string();
    // The real `llmbox spoke` binary runs the very line the page showed (its Docker is this
    // host's; it creates nothing until asked for a box).
    let words: Vec<&str> = line.split(' ').collect();
    assert_eq!(words[..2], ["llmbox", "spoke"], "{line}");
    let spoke7 = Command::new(env!("CARGO_BIN_EXE_llmbox"))
        .args(&words[1..])
        .arg("--credentials")
        .arg(plane.dir.join("edge-7-creds.json"))
        .args(["--heartbeat", "200ms"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("llmbox spoke");
    let spoke7 = KillOnDrop(spoke7);
    plane.wait_connected("edge-7");
    drop(spoke7);
    let logged = std::fs::read_to_string(&audit).expect("audit");
    assert!(logged.contains("minted join token"), "{logged}");
    assert!(
        !logged.contains(&token),
        "a join token reached the audit log"
    );

    let anon = request(addr, "GET", "/admin", &[], b"");
    assert!(anon.text().contains("id=\"provider-0\""), "{}", anon.text());
    assert!(!anon.text().contains("id=\"mint\""));
    let anon = request(addr, "POST", "/admin/token", &[form], b"name=x&ttl=1h");
    assert_eq!(anon.status, 401);
    let (eve, eve_csrf) = plant_session(&hub, "eve@other.example");
    let body = format!("name=x&ttl=1h&csrf={eve_csrf}");
    let refused = request(
        addr,
        "POST",
        "/admin/token",
        &[form, ("Cookie", &eve)],
        body.as_bytes(),
    );
    assert_eq!(refused.status, 403);
    assert!(refused.text().contains("signed in as eve@other.example"));

    let (root, csrf) = plant_session(&hub, "root@example.org");
    let page = request(addr, "GET", "/admin", &[("Cookie", &root)], b"");
    assert_eq!(page.status, 200);
    for id in [
        "id=\"spokes\"",
        "id=\"tokens\"",
        "id=\"boxes\"",
        "id=\"apikeys\"",
        "id=\"mint\"",
    ] {
        assert!(page.text().contains(id), "{id}: {}", page.text());
    }
    let bad = request(
        addr,
        "POST",
        "/admin/token",
        &[form, ("Cookie", &root)],
        b"name=edge-9&ttl=10m&csrf=00",
    );
    assert_eq!(bad.status, 403);
    assert!(plane.store.load().expect("load").join_tokens.is_empty());

    let body = format!("name=edge-9&ttl=10m&csrf={csrf}");
    let minted = request(
        addr,
        "POST",
        "/admin/token",
        &[form, ("Cookie", &root)],
        body.as_bytes(),
    );
    assert_eq!(minted.status, 200);
    let html = minted.text();
    assert!(
        html.contains("id=\"docker-line\"") && html.contains("id=\"systemd-unit\""),
        "{html}"
    );
    // The unit shown is the shipped, hardened one with this spoke's arguments.
    assert!(
        html.contains("ProtectSystem=strict") && html.contains("LLMBOX_SPOKE_ARGS=--hub "),
        "{html}"
    );
    let line_start =
        html.find("id=\"spoke-line\">").expect("spoke line") + "id=\"spoke-line\">".len();
    let line = &html[line_start..line_start + html[line_start..].find('<').expect("end")];
    assert!(
        line.starts_with(&format!("llmbox spoke --hub {} --token ", plane.url)),
        "{line}"
    );
    let token = line.rsplit(' ').next().expect("token").to_string();
    assert_eq!(token.len(), 64, "{line}");

    // A real spoke (the spoke loop the binary runs, over a real WebSocket) enrolls with it.
    let creds = plane.dir.join("edge-9-creds.json");
    let spoke = support::cluster::Spoke::run(support::cluster::Spoke::config(
        &plane,
        Some(token),
        creds,
        Duration::from_millis(200),
    ));
    plane.wait_connected("edge-9");
    let page = request(addr, "GET", "/admin", &[("Cookie", &root)], b"");
    assert!(
        page.text().contains("<td>edge-9</td><td>yes</td>"),
        "{}",
        page.text()
    );
    // Whether a remote spoke's Docker answered, as list_spokes has it: unknown until a reaper
    // pass asks (its reap verb goes to the spoke's Docker), then its answer.
    assert!(
        page.text()
            .contains("<td>edge-9</td><td>yes</td><td class=\"docker\">not asked yet"),
        "{}",
        page.text()
    );
    hub.reap_once();
    let page = request(addr, "GET", "/admin", &[("Cookie", &root)], b"");
    assert!(
        page.text()
            .contains("<td>edge-9</td><td>yes</td><td class=\"docker\">yes</td>"),
        "{}",
        page.text()
    );

    let body = format!("name=edge-9&csrf={csrf}");
    let revoked = request(
        addr,
        "POST",
        "/admin/spoke/revoke",
        &[form, ("Cookie", &root)],
        body.as_bytes(),
    );
    assert_eq!(revoked.status, 200);
    assert!(
        revoked.text().contains("revoked spoke edge-9"),
        "{}",
        revoked.text()
    );
    plane.wait_disconnected("edge-9");
    drop(spoke);

    let body = format!("name=ci-bot&ttl=&csrf={csrf}");
    let key = request(
        addr,
        "POST",
        "/admin/apikey",
        &[form, ("Cookie", &root)],
        body.as_bytes(),
    );
    assert!(key.text().contains("id=\"api-key\""), "{}", key.text());
    let id = plane.store.load().expect("load").api_keys[0]
        .id()
        .to_string();
    let body = format!("id={id}&csrf={csrf}");
    let gone = request(
        addr,
        "POST",
        "/admin/apikey/revoke",
        &[form, ("Cookie", &root)],
        body.as_bytes(),
    );
    assert!(gone.text().contains("revoked API key"), "{}", gone.text());
    assert!(plane.store.load().expect("load").api_keys.is_empty());
    front.stop();
}
