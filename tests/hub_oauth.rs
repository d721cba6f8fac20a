//! The hub as its own OAuth 2.1 authorization server (issue 14), over a real loopback socket in
//! raw HTTP/1.1: discovery from the 401, Dynamic Client Registration, authorize with PKCE,
//! the consent page, the token endpoint, tools/call with the access token, refresh, revoke, and
//! each way of getting it wrong as its own test. Identity end to end: a person's token reaches
//! only that person's boxes, and only they can activate them.
//!
//! The person's sign-in is a session record written to the state file, exactly what a finished
//! sign-in at the provider writes (`hub::signin`); the real provider and the official MCP SDK's
//! OAuth client drive the whole flow in `tests/hub_oauth_sdk.rs`.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use llmbox::hub::audit::AuditLog;
use llmbox::hub::auth::Access;
use llmbox::hub::http::HttpFront;
use llmbox::hub::oauth::{OAuth, OAuthConfig};
use llmbox::hub::signin::{GithubConfig, Rules, Signin, SigninConfig};
use llmbox::hub::{Hub, HubConfig};
use llmbox::store::SigninSession;
use llmbox::util::secret::sha256_hex;
use serde_json::{Value, json};
use support::http::{Resp, request};

const REDIRECT: &str = "http://127.0.0.1:9/callback";
const VERIFIER: &str = "a-verifier-of-at-least-forty-three-characters-0123456789";

struct Setup {
    hub: Arc<Hub>,
    _front: HttpFront,
    addr: SocketAddr,
    public: String,
    audit: std::path::PathBuf,
}

fn setup(tag: &str, access_ttl: Duration) -> Setup {
    setup_with(tag, access_ttl, false)
}

/// [`setup`]; `cimd_loopback` is the test-only `--oauth-test-cimd-loopback`.
fn setup_with(tag: &str, access_ttl: Duration, cimd_loopback: bool) -> Setup {
    let dir = support::temp_dir(tag);
    let addr: SocketAddr = format!("127.0.0.1:{}", support::free_port())
        .parse()
        .expect("addr");
    let public = format!("http://{addr}");
    let board = Arc::new(support::hub::Switchboard::default().with("local"));
    let hub = support::hub::hub_on(&dir.join("state.json"), &board, HubConfig::new(&public));
    // Never contacted: every sign-in here is a session record (see the module docs).
    let signin = Signin::start(SigninConfig {
        public_url: public.clone(),
        oidc: Vec::new(),
        github: Some(GithubConfig {
            web_base: "http://127.0.0.1:1".into(),
            api_base: "http://127.0.0.1:1".into(),
            ..GithubConfig::new("gh-client", "gh-secret")
        }),
        rules: Rules {
            domains: vec!["example.org".into()],
            admins: vec!["root@example.org".into()],
            ..Rules::default()
        },
        session_ttl: Duration::from_secs(600),
        spoke_url: "ws://127.0.0.1:1".into(),
    })
    .expect("signin");
    let mut config = OAuthConfig::new(&public);
    config.access_ttl = access_ttl;
    config.cimd_allow_loopback_http = cimd_loopback;
    let audit = dir.join("audit.log");
    let access = Access {
        audit: Some(Arc::new(AuditLog::open(&audit).expect("audit"))),
        signin: Some(Arc::new(signin)),
        oauth: Some(Arc::new(OAuth::new(config))),
        ..Access::default()
    };
    let front =
        HttpFront::start_with_access(Arc::clone(&hub), &addr.to_string(), access).expect("listen");
    Setup {
        hub,
        _front: front,
        addr,
        public,
        audit,
    }
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn challenge(verifier: &str) -> String {
    use sha2::{Digest, Sha256};
    llmbox::util::base64::encode_url(&Sha256::digest(verifier.as_bytes()))
}

/// A signed-in person: the session cookie and the CSRF token of their forms.
struct Person {
    cookie: String,
    csrf: String,
}

fn sign_in(s: &Setup, email: &str) -> Person {
    let sid = format!("{:0>64}", sha256_hex(email.as_bytes())[..40].to_string());
    s.hub
        .store()
        .update(|st| {
            st.signin_sessions.push(SigninSession {
                id_hash: sha256_hex(sid.as_bytes()),
                email: email.into(),
                hosted_domain: None,
                provider: "GitHub".into(),
                expires: llmbox::util::unix_now() + 600,
            })
        })
        .expect("session");
    Person {
        cookie: format!("llmbox={sid}"),
        csrf: sha256_hex(format!("llmbox-csrf:{sid}").as_bytes()),
    }
}

impl Setup {
    fn mcp_url(&self) -> String {
        format!("{}/mcp", self.public)
    }

    fn get(&self, path: &str, cookie: Option<&str>) -> Resp {
        let headers: Vec<(&str, &str)> = cookie.iter().map(|c| ("Cookie", *c)).collect();
        request(self.addr, "GET", path, &headers, b"")
    }

    fn post_form(&self, path: &str, body: &str, cookie: Option<&str>) -> Resp {
        let mut headers = vec![("Content-Type", "application/x-www-form-urlencoded")];
        if let Some(c) = cookie {
            headers.push(("Cookie", c));
        }
        request(self.addr, "POST", path, &headers, body.as_bytes())
    }

    fn register(&self, redirect: &str) -> String {
        let r = request(
            self.addr,
            "POST",
            "/oauth/register",
            &[("Content-Type", "application/json")],
            json!({"redirect_uris": [redirect], "client_name": "Test Chatbot"})
                .to_string()
                .as_bytes(),
        );
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()["client_id"]
            .as_str()
            .expect("client_id")
            .to_string()
    }

    fn authorize_path(&self, client: &str, extra: &[(&str, &str)]) -> String {
        let ch = challenge(VERIFIER);
        let mcp = self.mcp_url();
        let mut params = vec![
            ("response_type", "code"),
            ("client_id", client),
            ("redirect_uri", REDIRECT),
            ("state", "st-1"),
            ("code_challenge", ch.as_str()),
            ("code_challenge_method", "S256"),
            ("resource", mcp.as_str()),
        ];
        for (k, v) in extra {
            params.retain(|(x, _)| x != k);
            if !v.is_empty() {
                params.push((k, v));
            }
        }
        format!("/oauth/authorize?{}", form(&params))
    }

    /// Authorize + consent as `p`: the code.
    fn code(&self, client: &str, p: &Person) -> String {
        let r = self.get(&self.authorize_path(client, &[]), None);
        assert_eq!(r.status, 303, "{}", r.text());
        let consent = r.header("Location").expect("location").to_string();
        assert!(consent.starts_with("/oauth/consent/"), "{consent}");
        let page = self.get(&consent, Some(&p.cookie));
        assert_eq!(page.status, 200, "{}", page.text());
        let r = self.post_form(
            &consent,
            &form(&[("csrf", &p.csrf), ("decision", "allow")]),
            Some(&p.cookie),
        );
        assert_eq!(r.status, 303, "{}", r.text());
        let back = r.header("Location").expect("location");
        assert!(back.starts_with(REDIRECT), "{back}");
        assert!(back.contains("state=st-1"), "{back}");
        query_value(back, "code").expect("code")
    }

    fn token(&self, pairs: &[(&str, &str)]) -> Resp {
        self.post_form("/oauth/token", &form(pairs), None)
    }

    fn exchange(&self, client: &str, code: &str) -> Resp {
        let mcp = self.mcp_url();
        self.token(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("client_id", client),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
            ("resource", &mcp),
        ])
    }

    /// A person connected through a fresh client: (client, access, refresh).
    fn connect(&self, p: &Person) -> (String, String, String) {
        let client = self.register(REDIRECT);
        let code = self.code(&client, p);
        let r = self.exchange(&client, &code);
        assert_eq!(r.status, 200, "{}", r.text());
        let t = r.json();
        assert_eq!(t["token_type"], "Bearer");
        (
            client,
            t["access_token"].as_str().expect("access").into(),
            t["refresh_token"].as_str().expect("refresh").into(),
        )
    }

    fn call(&self, token: &str, tool: &str, args: Value) -> Resp {
        let bearer = format!("Bearer {token}");
        request(
            self.addr,
            "POST",
            "/mcp",
            &[
                ("Content-Type", "application/json"),
                ("Accept", "application/json, text/event-stream"),
                ("Authorization", &bearer),
            ],
            json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":tool,"arguments":args}})
                .to_string()
                .as_bytes(),
        )
    }

    fn grants(&self) -> usize {
        self.hub.store().load().expect("state").oauth_grants.len()
    }
}

fn query_value(url: &str, key: &str) -> Option<String> {
    let q = url.split_once('?')?.1;
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.to_string())
    })
}

fn assert_oauth_error(r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.json()["error"], code, "{}", r.text());
    assert_eq!(r.header("Cache-Control"), Some("no-store"));
}

fn assert_invalid_token(r: &Resp, s: &Setup) {
    assert_eq!(r.status, 401, "{}", r.text());
    let want = format!(
        "Bearer realm=\"llmbox\", resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\", error=\"invalid_token\"",
        s.public
    );
    assert_eq!(r.header("WWW-Authenticate"), Some(want.as_str()));
}

#[test]
fn a_401_leads_to_resource_metadata_which_leads_to_the_authorization_server() {
    let s = setup("oauth-discovery", Duration::from_secs(3600));
    let r = request(
        s.addr,
        "POST",
        "/mcp",
        &[("Content-Type", "application/json")],
        br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
    );
    assert_eq!(
        r.status, 401,
        "a hub with --mcp-oauth is never open, even on loopback"
    );
    let www = r.header("WWW-Authenticate").expect("challenge");
    let prm_url = format!("{}/.well-known/oauth-protected-resource/mcp", s.public);
    assert_eq!(
        www,
        format!("Bearer realm=\"llmbox\", resource_metadata=\"{prm_url}\"")
    );
    let prm = s.get("/.well-known/oauth-protected-resource/mcp", None);
    assert_eq!(prm.status, 200);
    let prm = prm.json();
    assert_eq!(prm["resource"], s.mcp_url());
    assert_eq!(prm["authorization_servers"], json!([s.public]));
    let root = s.get("/.well-known/oauth-protected-resource", None).json();
    assert_eq!(root["resource"], s.public.as_str());
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        let asm = s.get(path, None);
        assert_eq!(asm.status, 200, "{path}");
        let asm = asm.json();
        assert_eq!(asm["issuer"], s.public.as_str(), "{path}");
        assert_eq!(asm["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(
            asm["token_endpoint"],
            format!("{}/oauth/token", s.public).as_str()
        );
    }
    let root_401 = request(
        s.addr,
        "POST",
        "/",
        &[("Content-Type", "application/json")],
        b"{}",
    );
    assert!(
        root_401
            .header("WWW-Authenticate")
            .is_some_and(|h| h.contains("oauth-protected-resource\""))
    );
}

#[test]
fn a_person_connects_signs_in_consents_calls_a_tool_refreshes_and_revokes() {
    let s = setup("oauth-flow", Duration::from_secs(3600));
    let client = s.register(REDIRECT);
    // Not signed in: the consent page asks for sign-in and comes back to itself.
    let r = s.get(&s.authorize_path(&client, &[]), None);
    let consent = r.header("Location").expect("location").to_string();
    let page = s.get(&consent, None);
    assert_eq!(page.status, 200);
    assert!(
        page.text().contains("Sign in to connect Test Chatbot"),
        "{}",
        page.text()
    );
    assert!(
        page.text().contains(&format!("next={}", enc(&consent))),
        "the button comes back here: {}",
        page.text()
    );
    let ada = sign_in(&s, "ada@example.org");
    let page = s.get(&consent, Some(&ada.cookie)).text();
    assert!(page.contains("id=\"client-name\">Test Chatbot<"), "{page}");
    assert!(page.contains("id=\"redirect-host\">127.0.0.1<"), "{page}");
    assert!(page.contains("ada@example.org"), "{page}");
    // A post without the CSRF token is refused and consumes nothing.
    let r = s.post_form(&consent, "decision=allow", Some(&ada.cookie));
    assert_eq!(r.status, 403);
    let r = s.post_form(
        &consent,
        &form(&[("csrf", &ada.csrf), ("decision", "allow")]),
        Some(&ada.cookie),
    );
    assert_eq!(r.status, 303, "{}", r.text());
    let back = r.header("Location").expect("location");
    let code = query_value(back, "code").expect("code");
    assert_eq!(
        query_value(back, "iss").as_deref(),
        Some(enc(&s.public).as_str())
    );
    let t = s.exchange(&client, &code);
    assert_eq!(t.status, 200, "{}", t.text());
    assert_eq!(t.header("Cache-Control"), Some("no-store"));
    let t = t.json();
    assert_eq!(t["expires_in"], 3600);
    assert_eq!(t["scope"], "mcp");
    let access = t["access_token"].as_str().expect("access");
    let refresh = t["refresh_token"].as_str().expect("refresh");
    let r = s.call(access, "create_llmbox", json!({"box_id": "ada-box"}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["result"]["isError"], false, "{}", r.text());
    // Refresh: a new pair, the old access token no longer works.
    let r = s.token(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh),
        ("client_id", &client),
    ]);
    assert_eq!(r.status, 200, "{}", r.text());
    let fresh = r.json();
    let access2 = fresh["access_token"].as_str().expect("access");
    assert_ne!(access2, access);
    assert_invalid_token(&s.call(access, "list_llmboxes", json!({})), &s);
    let listed = s.call(access2, "list_llmboxes", json!({})).json();
    assert_eq!(
        listed["result"]["structuredContent"]["boxes"][0]["box_id"], "ada-box",
        "{listed}"
    );
    // Revoke (RFC 7009): 200, and the grant is gone.
    let r = s.post_form(
        "/oauth/revoke",
        &form(&[("token", access2), ("client_id", &client)]),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_invalid_token(&s.call(access2, "list_llmboxes", json!({})), &s);
    assert_eq!(s.grants(), 0);
    let r = s.post_form("/oauth/revoke", &form(&[("token", "unknown")]), None);
    assert_eq!(r.status, 200, "an unknown token is no error");
    // No secret in the state file or the audit log.
    let state = std::fs::read_to_string(s.hub.store().path()).expect("state");
    let audit = std::fs::read_to_string(&s.audit).expect("audit");
    for secret in [access, refresh, access2, &code, VERIFIER] {
        assert!(!state.contains(secret), "state holds a secret");
        assert!(!audit.contains(secret), "audit holds a secret");
    }
    assert!(audit.contains("\"oauth_consent\""), "{audit}");
}

#[test]
fn a_wrong_pkce_verifier_is_invalid_grant_and_uses_the_code_up() {
    let s = setup("oauth-pkce", Duration::from_secs(3600));
    let ada = sign_in(&s, "ada@example.org");
    let client = s.register(REDIRECT);
    let code = s.code(&client, &ada);
    let mcp = s.mcp_url();
    let wrong = "another-verifier-of-at-least-forty-three-characters-xyz";
    let r = s.token(&[
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("client_id", &client),
        ("redirect_uri", REDIRECT),
        ("code_verifier", wrong),
        ("resource", &mcp),
    ]);
    assert_oauth_error(&r, 400, "invalid_grant");
    assert!(r.text().contains("code_verifier"), "{}", r.text());
    assert_eq!(s.grants(), 0);
    assert_oauth_error(&s.exchange(&client, &code), 400, "invalid_grant");
    assert_eq!(s.grants(), 0);
}

#[test]
fn a_reused_code_is_refused_and_revokes_what_it_gave() {
    let s = setup("oauth-reuse-code", Duration::from_secs(3600));
    let ada = sign_in(&s, "ada@example.org");
    let client = s.register(REDIRECT);
    let code = s.code(&client, &ada);
    let first = s.exchange(&client, &code);
    assert_eq!(first.status, 200);
    let access = first.json()["access_token"]
        .as_str()
        .expect("a")
        .to_string();
    assert_eq!(s.call(&access, "list_llmboxes", json!({})).status, 200);
    assert_oauth_error(&s.exchange(&client, &code), 400, "invalid_grant");
    assert_invalid_token(&s.call(&access, "list_llmboxes", json!({})), &s);
    assert_eq!(s.grants(), 0);
}

#[test]
fn a_missing_resource_is_sent_back_as_invalid_target() {
    let s = setup("oauth-no-resource", Duration::from_secs(3600));
    let client = s.register(REDIRECT);
    let r = s.get(&s.authorize_path(&client, &[("resource", "")]), None);
    assert_eq!(r.status, 303);
    let back = r.header("Location").expect("location");
    assert!(back.starts_with(REDIRECT), "{back}");
    assert_eq!(
        query_value(back, "error").as_deref(),
        Some("invalid_target")
    );
    assert_eq!(query_value(back, "state").as_deref(), Some("st-1"));
}

#[test]
fn a_wrong_resource_is_refused_at_authorize_and_at_the_token_endpoint() {
    let s = setup("oauth-wrong-resource", Duration::from_secs(3600));
    let client = s.register(REDIRECT);
    for other in [
        "https://evil.example/mcp",
        &format!("{}/mcp/other", s.public),
    ] {
        let r = s.get(&s.authorize_path(&client, &[("resource", other)]), None);
        let back = r.header("Location").expect("location");
        assert_eq!(
            query_value(back, "error").as_deref(),
            Some("invalid_target"),
            "{other}"
        );
    }
    let ada = sign_in(&s, "ada@example.org");
    let code = s.code(&client, &ada);
    let r = s.token(&[
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("client_id", &client),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
        ("resource", "https://evil.example/mcp"),
    ]);
    assert_oauth_error(&r, 400, "invalid_target");
    assert_eq!(s.grants(), 0);
}

#[test]
fn a_redirect_uri_mismatch_is_a_page_never_a_redirect_and_invalid_grant_at_the_token_endpoint() {
    let s = setup("oauth-redirect", Duration::from_secs(3600));
    let client = s.register(REDIRECT);
    for other in [
        "http://127.0.0.1:9/callback/",
        "http://127.0.0.1:9/other",
        "https://evil.example/callback",
    ] {
        let r = s.get(&s.authorize_path(&client, &[("redirect_uri", other)]), None);
        assert_eq!(r.status, 400, "{other}");
        assert!(r.header("Location").is_none(), "{other}");
        assert!(r.text().contains("compared exactly"), "{}", r.text());
    }
    let ada = sign_in(&s, "ada@example.org");
    let code = s.code(&client, &ada);
    let r = s.token(&[
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("client_id", &client),
        ("redirect_uri", "http://127.0.0.1:9/other"),
        ("code_verifier", VERIFIER),
    ]);
    assert_oauth_error(&r, 400, "invalid_grant");
    assert_eq!(s.grants(), 0);
}

#[test]
fn authorize_requires_pkce_s256_and_state() {
    let s = setup("oauth-authorize-params", Duration::from_secs(3600));
    let client = s.register(REDIRECT);
    for (params, code) in [
        (vec![("code_challenge", "")], "invalid_request"),
        (vec![("code_challenge_method", "plain")], "invalid_request"),
        (vec![("code_challenge_method", "")], "invalid_request"),
        (vec![("state", "")], "invalid_request"),
        (
            vec![("response_type", "token")],
            "unsupported_response_type",
        ),
    ] {
        let r = s.get(&s.authorize_path(&client, &params), None);
        assert_eq!(r.status, 303, "{params:?}");
        let back = r.header("Location").expect("location");
        assert_eq!(
            query_value(back, "error").as_deref(),
            Some(code),
            "{params:?}"
        );
    }
    let r = s.get(&s.authorize_path("llmbox-client-unknown", &[]), None);
    assert_eq!(r.status, 400);
    assert!(r.header("Location").is_none());
}

#[test]
fn an_expired_access_token_is_401_invalid_token_and_refresh_mends_it() {
    let s = setup("oauth-expired", Duration::from_secs(1));
    let ada = sign_in(&s, "ada@example.org");
    let (client, access, refresh) = s.connect(&ada);
    assert_eq!(s.call(&access, "list_llmboxes", json!({})).status, 200);
    std::thread::sleep(Duration::from_millis(2100));
    assert_invalid_token(&s.call(&access, "list_llmboxes", json!({})), &s);
    let r = s.token(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", &refresh),
        ("client_id", &client),
    ]);
    assert_eq!(r.status, 200, "{}", r.text());
    let access2 = r.json()["access_token"].as_str().expect("a").to_string();
    assert_eq!(s.call(&access2, "list_llmboxes", json!({})).status, 200);
}

#[test]
fn a_reused_refresh_token_revokes_the_whole_family() {
    let s = setup("oauth-refresh-reuse", Duration::from_secs(3600));
    let ada = sign_in(&s, "ada@example.org");
    let (client, _, refresh) = s.connect(&ada);
    let refreshed = |t: &str| {
        s.token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", t),
            ("client_id", &client),
        ])
    };
    let second = refreshed(&refresh).json();
    let access2 = second["access_token"].as_str().expect("a");
    let refresh2 = second["refresh_token"].as_str().expect("r");
    assert_eq!(s.call(access2, "list_llmboxes", json!({})).status, 200);
    assert_oauth_error(&refreshed(&refresh), 400, "invalid_grant");
    assert_invalid_token(&s.call(access2, "list_llmboxes", json!({})), &s);
    assert_oauth_error(&refreshed(refresh2), 400, "invalid_grant");
    assert_eq!(s.grants(), 0);
    let audit = std::fs::read_to_string(&s.audit).expect("audit");
    assert!(audit.contains("\"oauth_refresh_reuse\""), "{audit}");
    assert!(!audit.contains(&refresh) && !audit.contains(refresh2));
}

#[test]
fn person_a_token_on_person_b_box_is_not_found_and_lists_show_only_their_own() {
    let s = setup("oauth-owners", Duration::from_secs(3600));
    let (_, ada, _) = s.connect(&sign_in(&s, "ada@example.org"));
    let (_, bob, _) = s.connect(&sign_in(&s, "bob@example.org"));
    let made = s
        .call(&bob, "create_llmbox", json!({"box_id": "bob-box"}))
        .json();
    assert_eq!(made["result"]["isError"], false, "{made}");
    let r = s
        .call(&ada, "get_llmbox", json!({"box_id": "bob-box"}))
        .json();
    assert_eq!(r["result"]["isError"], true, "{r}");
    let text = r["result"]["content"][0]["text"].as_str().unwrap_or("");
    let unknown = s
        .call(&ada, "get_llmbox", json!({"box_id": "no-such-box"}))
        .json();
    assert_eq!(
        text.replace("bob-box", "no-such-box"),
        unknown["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or(""),
        "the same answer as for a box that does not exist"
    );
    for tool in ["destroy_llmbox", "exec_llmbox", "get_llmbox_logs"] {
        let mut args = json!({"box_id": "bob-box"});
        if tool == "exec_llmbox" {
            args["command"] = json!("true");
        }
        let r = s.call(&ada, tool, args).json();
        assert_eq!(r["result"]["isError"], true, "{tool}: {r}");
    }
    let ada_list = s.call(&ada, "list_llmboxes", json!({})).json();
    assert_eq!(ada_list["result"]["structuredContent"]["boxes"], json!([]));
    let bob_list = s.call(&bob, "list_llmboxes", json!({})).json();
    assert_eq!(
        bob_list["result"]["structuredContent"]["boxes"][0]["box_id"],
        "bob-box"
    );
    // An admin API key beside OAuth sees every box, tagged with its owner.
    let key = support::apikey_create(s.hub.store().path(), "ops", true);
    let all = s.call(&key, "list_llmboxes", json!({})).json();
    assert_eq!(
        all["result"]["structuredContent"]["boxes"][0]["owner"], "bob@example.org",
        "{all}"
    );
}

#[test]
fn only_the_owner_signed_in_through_the_same_provider_may_activate() {
    let s = setup("oauth-activation", Duration::from_secs(3600));
    let ada = sign_in(&s, "ada@example.org");
    let bob = sign_in(&s, "bob@example.org");
    let (_, ada_token, _) = s.connect(&ada);
    let made = s
        .call(&ada_token, "create_llmbox", json!({"box_id": "ada-box"}))
        .json();
    let url = made["result"]["structuredContent"]["auth_url"]
        .as_str()
        .expect("activation url")
        .to_string();
    let path = url
        .strip_prefix(&s.public)
        .expect("on this hub")
        .to_string();
    let r = s.get(&path, Some(&bob.cookie));
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.text()
            .contains("You are signed in as bob@example.org (GitHub)"),
        "{}",
        r.text()
    );
    let r = s.post_form(
        &path,
        &form(&[("csrf", &bob.csrf), ("code", "some-code")]),
        Some(&bob.cookie),
    );
    assert_eq!(r.status, 403, "a post is refused as well");
    let r = s.get(&path, Some(&ada.cookie));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("ada-box"));
}

#[test]
fn api_keys_keep_working_beside_oauth_tokens() {
    let s = setup("oauth-apikeys", Duration::from_secs(3600));
    let key = support::apikey_create(s.hub.store().path(), "ci", false);
    let r = s.call(&key, "list_llmboxes", json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_invalid_token(&s.call("llmbox_0000", "list_llmboxes", json!({})), &s);
    assert_invalid_token(&s.call("llmbox_at_0000", "list_llmboxes", json!({})), &s);
}

#[test]
fn registration_refuses_bad_metadata_and_is_rate_limited() {
    let s = setup("oauth-register", Duration::from_secs(3600));
    let reg = |body: &str, ct: &str| {
        request(
            s.addr,
            "POST",
            "/oauth/register",
            &[("Content-Type", ct)],
            body.as_bytes(),
        )
    };
    assert_oauth_error(
        &reg(
            r#"{"redirect_uris":["http://evil.example/cb"]}"#,
            "application/json",
        ),
        400,
        "invalid_redirect_uri",
    );
    assert_oauth_error(
        &reg("{", "application/json"),
        400,
        "invalid_client_metadata",
    );
    assert_oauth_error(
        &reg(
            r#"{"redirect_uris":["https://a.example/cb"]}"#,
            "text/plain",
        ),
        400,
        "invalid_client_metadata",
    );
    let big = format!(
        r#"{{"redirect_uris":["https://a.example/cb"],"x":"{}"}}"#,
        "a".repeat(20_000)
    );
    let r = reg(&big, "application/json");
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(
        s.hub.store().load().expect("state").oauth_clients.len(),
        0,
        "nothing registered by bad input"
    );
    let good = r#"{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"client_secret_post"}"#;
    let first = reg(good, "application/json");
    assert_eq!(first.status, 201);
    assert_eq!(first.json()["token_endpoint_auth_method"], "none");
    let mut limited = None;
    for i in 0..40 {
        let r = reg(good, "application/json");
        if r.status != 201 {
            limited = Some((i, r));
            break;
        }
    }
    let (i, r) = limited.expect("rate limited");
    assert!(i < 25, "limited after {i}");
    assert_oauth_error(&r, 429, "temporarily_unavailable");
}

#[test]
fn token_endpoint_errors_are_specific_and_change_nothing() {
    let s = setup("oauth-token-errors", Duration::from_secs(3600));
    let client = s.register(REDIRECT);
    assert_oauth_error(
        &s.token(&[("grant_type", "password"), ("client_id", &client)]),
        400,
        "unsupported_grant_type",
    );
    assert_oauth_error(
        &s.token(&[("grant_type", "authorization_code")]),
        400,
        "invalid_request",
    );
    assert_oauth_error(
        &s.token(&[
            ("grant_type", "authorization_code"),
            ("client_id", &client),
            ("code", "x"),
            ("code_verifier", VERIFIER),
        ]),
        400,
        "invalid_grant",
    );
    let r = s.post_form(
        "/oauth/token",
        "grant_type=refresh_token&grant_type=refresh_token",
        None,
    );
    assert_oauth_error(&r, 400, "invalid_request");
    let r = request(
        s.addr,
        "POST",
        "/oauth/token",
        &[("Content-Type", "application/json")],
        b"{}",
    );
    assert_oauth_error(&r, 400, "invalid_request");
    let r = s.get("/oauth/token", None);
    assert_eq!(r.status, 405);
    assert_eq!(s.grants(), 0);
}

#[test]
fn admin_shows_owners_and_revokes_a_persons_grants() {
    let s = setup("oauth-admin", Duration::from_secs(3600));
    let ada = sign_in(&s, "ada@example.org");
    let (_, ada_token, _) = s.connect(&ada);
    let made = s
        .call(&ada_token, "create_llmbox", json!({"box_id": "ada-box"}))
        .json();
    assert_eq!(made["result"]["isError"], false, "{made}");
    let root = sign_in(&s, "root@example.org");
    let page = s.get("/admin", Some(&root.cookie)).text();
    assert!(page.contains("id=\"people\""), "{page}");
    assert!(page.contains("ada@example.org (GitHub)"), "{page}");
    assert!(page.contains("Test Chatbot"), "{page}");
    let r = s.post_form(
        "/admin/oauth/revoke",
        &form(&[
            ("csrf", &root.csrf),
            ("provider", "GitHub"),
            ("email", "ada@example.org"),
        ]),
        Some(&root.cookie),
    );
    assert!(r.status == 200 || r.status == 303, "{}", r.status);
    assert!(
        r.text()
            .contains("revoked 1 OAuth grants of ada@example.org"),
        "{}",
        r.text()
    );
    assert_invalid_token(&s.call(&ada_token, "list_llmboxes", json!({})), &s);
}

#[test]
fn mcp_oauth_without_a_sign_in_provider_is_a_usage_error() {
    let dir = support::temp_dir("oauth-cli");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_llmbox"))
        .args(["hub", "--mcp-oauth", "--no-local", "--state"])
        .arg(dir.join("state.json"))
        .output()
        .expect("run llmbox hub");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--mcp-oauth needs a sign-in provider"),
        "{err}"
    );
}

/// Client metadata documents on loopback http (the test-only mode): by path, what is served,
/// and how often each path was fetched.
struct Documents {
    base: String,
    hits: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
}

impl Documents {
    fn start() -> Documents {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind"));
        let base = format!("http://{}", server.server_addr().to_ip().expect("ip"));
        let hits = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
        let (b, h) = (base.clone(), Arc::clone(&hits));
        // Serves until the test process ends; each request on its own thread (one is slow).
        std::thread::spawn(move || {
            while let Ok(req) = server.recv() {
                let (b, h) = (b.clone(), Arc::clone(&h));
                std::thread::spawn(move || serve_document(req, &b, &h));
            }
        });
        Documents { base, hits }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn hits(&self, path: &str) -> usize {
        self.hits
            .lock()
            .expect("hits")
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}

fn serve_document(
    req: tiny_http::Request,
    base: &str,
    hits: &std::sync::Mutex<std::collections::HashMap<String, usize>>,
) {
    let path = req.url().to_string();
    *hits.lock().expect("hits").entry(path.clone()).or_default() += 1;
    let url = format!("{base}{path}");
    let doc = |id: &str| {
        json!({"client_id": id, "client_name": "Doc Client", "redirect_uris": [REDIRECT],
            "grant_types": ["authorization_code", "refresh_token"], "token_endpoint_auth_method": "none"})
        .to_string()
    };
    let header = |n: &str, v: &str| tiny_http::Header::from_bytes(n, v).expect("header");
    let resp = match path.as_str() {
        "/client.json" => tiny_http::Response::from_string(doc(&url))
            .with_header(header("Cache-Control", "max-age=60")),
        "/nostore.json" => tiny_http::Response::from_string(doc(&url))
            .with_header(header("Cache-Control", "no-store")),
        "/other-id.json" => tiny_http::Response::from_string(doc("https://else.example/c.json")),
        "/big.json" => tiny_http::Response::from_string(format!(
            "{{\"client_id\":\"{url}\",\"pad\":\"{}\"}}",
            "x".repeat(100 << 10)
        )),
        "/slow.json" => {
            std::thread::sleep(Duration::from_secs(8));
            tiny_http::Response::from_string(doc(&url))
        }
        "/redirect.json" => tiny_http::Response::from_string("")
            .with_status_code(302)
            .with_header(header("Location", &format!("{base}/client.json"))),
        _ => tiny_http::Response::from_string("no").with_status_code(404),
    };
    let _ = req.respond(resp);
}

#[test]
fn a_client_id_metadata_document_client_connects_and_its_document_is_cached() {
    let docs = Documents::start();
    let s = setup_with("oauth-cimd", Duration::from_secs(3600), true);
    let asm = s
        .get("/.well-known/oauth-authorization-server", None)
        .json();
    assert_eq!(asm["client_id_metadata_document_supported"], true);
    let ada = sign_in(&s, "ada@example.org");
    let client = docs.url("/client.json");
    let r = s.get(&s.authorize_path(&client, &[]), None);
    assert_eq!(r.status, 303, "{}", r.text());
    let consent = r.header("Location").expect("location").to_string();
    let page = s.get(&consent, Some(&ada.cookie)).text();
    assert!(page.contains("id=\"client-name\">Doc Client<"), "{page}");
    assert!(
        page.contains(&client),
        "the page names the document URL: {page}"
    );
    let code = s.code(&client, &ada);
    let r = s.exchange(&client, &code);
    assert_eq!(r.status, 200, "{}", r.text());
    let access = r.json()["access_token"].as_str().expect("a").to_string();
    assert_eq!(s.call(&access, "list_llmboxes", json!({})).status, 200);
    assert_eq!(
        docs.hits("/client.json"),
        1,
        "max-age=60: fetched once for two authorizes"
    );
    let nostore = docs.url("/nostore.json");
    for _ in 0..2 {
        assert_eq!(s.get(&s.authorize_path(&nostore, &[]), None).status, 303);
    }
    assert_eq!(
        docs.hits("/nostore.json"),
        2,
        "no-store: fetched every time"
    );
}

fn assert_document_refused(s: &Setup, client: &str, why: &str) {
    let r = s.get(&s.authorize_path(client, &[]), None);
    assert_eq!(r.status, 400, "{client}: {}", r.text());
    assert!(
        r.header("Location").is_none(),
        "never sent back to an unknown client"
    );
    assert!(r.text().contains(why), "{client}: {}", r.text());
}

#[test]
fn a_document_url_resolving_to_loopback_is_refused() {
    let docs = Documents::start();
    let s = setup("oauth-cimd-loopback", Duration::from_secs(3600));
    let port = docs.base.rsplit(':').next().expect("port").to_string();
    for url in [
        format!("https://localhost:{port}/client.json"),
        format!("https://127.0.0.1:{port}/client.json"),
    ] {
        assert_document_refused(&s, &url, "not a public address");
    }
    assert_eq!(docs.hits("/client.json"), 0, "nothing was fetched");
    // Plain http is not fetched at all outside the test mode.
    let r = s.get(&s.authorize_path(&docs.url("/client.json"), &[]), None);
    assert_eq!(r.status, 400);
    assert_eq!(docs.hits("/client.json"), 0);
}

#[test]
fn a_document_url_at_the_cloud_metadata_address_is_refused() {
    let s = setup("oauth-cimd-metadata", Duration::from_secs(3600));
    assert_document_refused(
        &s,
        "https://169.254.169.254/latest/meta-data/client",
        "not a public address",
    );
    let t = setup_with("oauth-cimd-metadata-test", Duration::from_secs(3600), true);
    assert_document_refused(
        &t,
        "http://169.254.169.254/latest/meta-data/client",
        "not a public address",
    );
}

#[test]
fn an_oversized_document_is_refused() {
    let docs = Documents::start();
    let s = setup_with("oauth-cimd-big", Duration::from_secs(3600), true);
    assert_document_refused(&s, &docs.url("/big.json"), "larger than 65536 bytes");
}

#[test]
fn a_slow_document_is_given_up_after_five_seconds() {
    let docs = Documents::start();
    let s = setup_with("oauth-cimd-slow", Duration::from_secs(3600), true);
    let started = std::time::Instant::now();
    assert_document_refused(&s, &docs.url("/slow.json"), "cannot fetch it");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(7), "took {took:?}");
    assert!(took >= Duration::from_secs(4), "took {took:?}");
}

#[test]
fn a_document_naming_another_client_id_or_redirecting_is_refused() {
    let docs = Documents::start();
    let s = setup_with("oauth-cimd-bad", Duration::from_secs(3600), true);
    assert_document_refused(
        &s,
        &docs.url("/other-id.json"),
        "its client_id is not its own URL",
    );
    assert_document_refused(
        &s,
        &docs.url("/redirect.json"),
        "redirects are not followed",
    );
    assert_eq!(
        docs.hits("/client.json"),
        0,
        "the redirect was not followed"
    );
}
