//! GitHub sign-in (issue 13) against a local fake of GitHub's three endpoints — authorize, token,
//! `GET /user/emails` — on a loopback port (GitHub itself cannot be reached from tests). The fake
//! checks what GitHub checks: the client secret, a code it issued once, and the PKCE verifier
//! against the challenge the authorize request carried. The hub's side runs for real over HTTP.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use llmbox::hub::auth::Access;
use llmbox::hub::http::HttpFront;
use llmbox::hub::signin::{GithubConfig, Rules, Signin, SigninConfig};
use llmbox::hub::{CreateRequest, HubConfig};
use sha2::{Digest, Sha256};
use support::http::{Resp, request};

const SECRET: &str = "gh-secret-1";

/// The fake GitHub: codes it issued (code → PKCE challenge) and the emails it reports.
struct FakeGithub {
    addr: SocketAddr,
    emails: Arc<Mutex<serde_json::Value>>,
    server: Arc<tiny_http::Server>,
}

impl Drop for FakeGithub {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

fn query(url: &str) -> HashMap<String, String> {
    let q = url.split_once('?').map_or("", |(_, q)| q);
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), percent_decode(v)))
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).expect("hex"));
            i += 3;
        } else {
            out.push(if b[i] == b'+' { b' ' } else { b[i] });
            i += 1;
        }
    }
    String::from_utf8(out).expect("utf8")
}

fn s256(verifier: &str) -> String {
    llmbox::util::base64::encode_url(&Sha256::digest(verifier.as_bytes()))
}

fn start_fake(emails: serde_json::Value) -> FakeGithub {
    let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind"));
    let addr = server.server_addr().to_ip().expect("ip");
    let emails = Arc::new(Mutex::new(emails));
    let fake = FakeGithub {
        addr,
        emails: Arc::clone(&emails),
        server: Arc::clone(&server),
    };
    let codes: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    // Owns the fake's socket; ends when the server is unblocked on drop.
    std::thread::spawn(move || {
        let mut n = 0;
        for mut req in server.incoming_requests() {
            let url = req.url().to_string();
            let path = url.split('?').next().unwrap_or("").to_string();
            let json = |v: serde_json::Value| tiny_http::Response::from_string(v.to_string());
            let reply = match path.as_str() {
                "/login/oauth/authorize" => {
                    let q = query(&url);
                    assert_eq!(
                        q.get("code_challenge_method").map(String::as_str),
                        Some("S256")
                    );
                    assert_eq!(q.get("scope").map(String::as_str), Some("user:email"));
                    n += 1;
                    let code = format!("code-{n}");
                    codes
                        .lock()
                        .unwrap()
                        .insert(code.clone(), q["code_challenge"].clone());
                    let to = format!("{}?code={code}&state={}", q["redirect_uri"], q["state"]);
                    let h = tiny_http::Header::from_bytes("Location", to).unwrap();
                    tiny_http::Response::from_string("")
                        .with_status_code(302)
                        .with_header(h)
                }
                "/login/oauth/access_token" => {
                    let mut body = String::new();
                    std::io::Read::read_to_string(req.as_reader(), &mut body).unwrap();
                    let f = query(&format!("?{body}"));
                    let challenge = codes.lock().unwrap().remove(&f["code"]);
                    let ok = f.get("client_secret").map(String::as_str) == Some(SECRET)
                        && challenge.is_some_and(|c| c == s256(&f["code_verifier"]));
                    if ok {
                        json(
                            serde_json::json!({"access_token":"gho_fake","token_type":"bearer","scope":"user:email"}),
                        )
                    } else {
                        // GitHub answers a bad code with 200 and an error field.
                        json(
                            serde_json::json!({"error":"bad_verification_code","error_description":"The code passed is incorrect or expired."}),
                        )
                    }
                }
                "/user/emails" => {
                    let auth = req
                        .headers()
                        .iter()
                        .find(|h| h.field.equiv("Authorization"))
                        .map(|h| h.value.to_string());
                    if auth.as_deref() == Some("Bearer gho_fake") {
                        json(emails.lock().unwrap().clone())
                    } else {
                        json(serde_json::json!({"message":"Requires authentication"}))
                            .with_status_code(401)
                    }
                }
                _ => tiny_http::Response::from_string("not found").with_status_code(404),
            };
            let _ = req.respond(reply);
        }
    });
    fake
}

fn cookie_pair(resp: &Resp, name: &str) -> String {
    resp.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Set-Cookie"))
        .map(|(_, v)| v.split(';').next().unwrap_or("").to_string())
        .find(|p| p.starts_with(&format!("{name}=")) && p.len() > name.len() + 1)
        .unwrap_or_else(|| panic!("no {name} cookie in {:?}", resp.headers))
}

/// Runs the browser's part of a sign-in by hand: start, the fake's authorize, the callback.
fn sign_in(hub: SocketAddr, fake: SocketAddr, next: &str) -> Resp {
    let start = request(
        hub,
        "GET",
        &format!("/signin/github?p=0&next={next}"),
        &[],
        b"",
    );
    assert_eq!(start.status, 303, "{}", start.text());
    let login = cookie_pair(&start, "llmbox-login");
    let location = start.header("Location").expect("location").to_string();
    let prefix = format!("http://{fake}");
    let on_fake = location
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{location}"));
    let authorized = request(fake, "GET", on_fake, &[], b"");
    assert_eq!(authorized.status, 302);
    let back = authorized.header("Location").expect("back").to_string();
    let on_hub = back
        .strip_prefix(&format!("http://{hub}"))
        .unwrap_or_else(|| panic!("{back}"));
    assert!(on_hub.starts_with("/signin/github/callback?"), "{on_hub}");
    request(hub, "GET", on_hub, &[("Cookie", &login)], b"")
}

#[test]
fn github_sign_in_takes_the_primary_verified_email_and_refuses_an_account_without_one() {
    let fake = start_fake(serde_json::json!([
        {"email":"ada@old.example","primary":false,"verified":true,"visibility":null},
        {"email":"Ada@Example.org","primary":true,"verified":true,"visibility":"private"}
    ]));
    let dir = support::temp_dir("signin-github");
    let addr: SocketAddr = format!("127.0.0.1:{}", support::free_port())
        .parse()
        .expect("addr");
    let public = format!("http://{addr}");
    let board = Arc::new(support::hub::Switchboard::default().with("local"));
    let hub = support::hub::hub_on(&dir.join("state.json"), &board, HubConfig::new(&public));
    let base = format!("http://{}", fake.addr);
    let signin = Signin::start(SigninConfig {
        public_url: public,
        oidc: Vec::new(),
        github: Some(GithubConfig {
            web_base: base.clone(),
            api_base: base,
            ..GithubConfig::new("gh-client", SECRET)
        }),
        rules: Rules {
            domains: vec!["example.org".into()],
            ..Rules::default()
        },
        session_ttl: Duration::from_secs(600),
        spoke_url: "ws://127.0.0.1:1".into(),
    })
    .expect("signin");
    let access = Access {
        signin: Some(Arc::new(signin)),
        ..Access::default()
    };
    let front =
        HttpFront::start_with_access(Arc::clone(&hub), &addr.to_string(), access).expect("listen");
    let url = hub
        .create_box(CreateRequest {
            box_id: "gh".into(),
            ..Default::default()
        })
        .expect("create")
        .auth_url
        .expect("link");
    let path = format!("/auth/{}", support::hub::token_of(&url));
    let anon = request(addr, "GET", &path, &[], b"");
    assert!(
        anon.text().contains("href=\"/signin/github?p=0&amp;next="),
        "{}",
        anon.text()
    );
    assert!(anon.text().contains("Sign in with GitHub"));

    let done = sign_in(addr, fake.addr, &path);
    assert_eq!(done.status, 303, "{}", done.text());
    assert_eq!(done.header("Location"), Some(path.as_str()));
    let session = cookie_pair(&done, "llmbox");
    let page = request(addr, "GET", &path, &[("Cookie", &session)], b"");
    assert_eq!(page.status, 200);
    assert!(
        page.text().contains("id=\"signed-in-as\">ada@example.org<"),
        "{}",
        page.text()
    );
    assert!(page.text().contains("id=\"activate\""));

    // An account whose only primary email is unverified is refused, with a page saying so.
    *fake.emails.lock().unwrap() = serde_json::json!([
        {"email":"bob@example.org","primary":true,"verified":false,"visibility":null}
    ]);
    let refused = sign_in(addr, fake.addr, &path);
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert!(
        refused.text().contains("no primary, verified email"),
        "{}",
        refused.text()
    );
    front.stop();
}
