//! The activation page and the MCP answers in the states issue 11 measured, in process over the
//! real HTTP front and memory box managers: a link past `--auth-ttl` and one whose box was
//! reaped (410, and `get_llmbox` says when), a box that stops after a wrong code (as a Go
//! spoke's does), a host whose Docker is unreachable (the operator's error, not the person's),
//! and the activations metric that keeps a mistyped code apart from server errors.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use llmbox::cluster::LOCAL_SPOKE;
use llmbox::hub::http::HttpFront;
use llmbox::hub::{Hub, HubConfig};
use serde_json::{Value, json};
use support::http::request;
use support::hub::{Switchboard, hub_on, state_path};

const FORM: [(&str, &str); 1] = [("Content-Type", "application/x-www-form-urlencoded")];
const JSON_HEADERS: [(&str, &str); 2] = [
    ("Content-Type", "application/json"),
    ("Accept", "application/json, text/event-stream"),
];

struct Setup {
    front: HttpFront,
    hub: Arc<Hub>,
    board: Arc<Switchboard>,
}

impl Setup {
    fn new(test: &str, auth_ttl: Duration) -> Setup {
        let board = Arc::new(Switchboard::default().with(LOCAL_SPOKE));
        let mut config = HubConfig::new("http://hub.test");
        config.auth_ttl = auth_ttl;
        let hub = hub_on(&state_path(test), &board, config);
        let front = HttpFront::start(Arc::clone(&hub), "127.0.0.1:0").expect("listen");
        Setup { front, hub, board }
    }

    fn addr(&self) -> SocketAddr {
        self.front.local_addr()
    }

    /// Creates `box_id` over MCP; returns the structured answer and the page's path.
    fn create(&self, box_id: &str) -> (Value, String) {
        let created = self.call("create_llmbox", json!({"box_id": box_id}));
        assert_eq!(created["isError"], false, "{created}");
        let view = created["structuredContent"].clone();
        let link = view["auth_url"].as_str().expect("auth_url").to_string();
        let path = link.trim_start_matches("http://hub.test").to_string();
        (view, path)
    }

    fn call(&self, tool: &str, args: Value) -> Value {
        let body = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":tool,"arguments":args}});
        let r = request(
            self.addr(),
            "POST",
            "/mcp",
            &JSON_HEADERS,
            body.to_string().as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["result"].clone()
    }

    fn metrics(&self) -> String {
        request(self.addr(), "GET", "/metrics", &[], b"").text()
    }
}

#[test]
fn create_tells_the_chatbot_when_the_link_expires_in_go_llmboxs_names() {
    let s = Setup::new("states-names", Duration::from_secs(300));
    let (view, path) = s.create("web");
    for key in [
        "box_id",
        "container_id",
        "status",
        "auth_url",
        "instructions",
    ] {
        assert!(view.get(key).is_some(), "{key} missing: {view}");
    }
    assert!(view.get("activation_url").is_none() && view.get("next_step").is_none());
    assert_eq!(view["container_id"].as_str().expect("id").len(), 12);
    let left = view["expires_in_seconds"].as_u64().expect("seconds");
    assert!((295..=300).contains(&left), "{view}");
    let at = view["expires_at"].as_str().expect("expires_at");
    assert!(
        at.len() == 20 && at.ends_with('Z') && at.as_bytes()[10] == b'T',
        "{at}"
    );
    assert!(
        view["instructions"].as_str().expect("text").contains(at),
        "{view}"
    );
    let page = request(s.addr(), "GET", &path, &[], b"");
    assert_eq!(page.status, 200);
    assert!(
        page.text().contains(&format!("datetime=\"{at}\"")),
        "{}",
        page.text()
    );
}

#[test]
fn an_expired_link_is_gone_410_and_a_reaped_box_is_reported_with_its_time() {
    let s = Setup::new("states-expired", Duration::from_secs(1));
    let (view, path) = s.create("web");
    assert!(view["expires_in_seconds"].as_u64().expect("secs") <= 1);
    std::thread::sleep(Duration::from_millis(2100));

    // Past --auth-ttl, before the reaper: expired for the person and for the chatbot.
    let page = request(s.addr(), "GET", &path, &[], b"");
    assert_eq!(page.status, 410, "{}", page.text());
    assert!(
        page.text()
            .contains("This link has expired \u{2014} ask for a new box."),
        "{}",
        page.text()
    );
    assert!(!page.text().contains("id=\"activate\""));
    let sent = request(s.addr(), "POST", &path, &FORM, b"code=late-code");
    assert_eq!(sent.status, 410);
    assert!(
        !s.board
            .manager(LOCAL_SPOKE)
            .submit_entered
            .load(Ordering::SeqCst),
        "a code for an expired link reached the box"
    );
    let got = s.call("get_llmbox", json!({"box_id": "web"}));
    assert_eq!(got["isError"], false, "{got}");
    assert!(got["structuredContent"].get("auth_url").is_none(), "{got}");
    assert_eq!(got["structuredContent"]["expires_in_seconds"], 0);
    assert!(
        got["structuredContent"]["instructions"]
            .as_str()
            .expect("text")
            .contains("expired"),
        "{got}"
    );

    // The reaper takes it: get_llmbox says it was reaped and when; the page stays 410.
    assert_eq!(s.hub.reap_once(), 1);
    let gone = s.call("get_llmbox", json!({"box_id": "web"}));
    assert_eq!(gone["isError"], true, "{gone}");
    let text = gone["content"][0]["text"].as_str().expect("text");
    assert!(
        text.contains("box \"web\" on spoke \"local\" was reaped at 20")
            && text.contains("because nobody activated it before its link expired at 20")
            && text.contains("create_llmbox makes a new one"),
        "{text}"
    );
    assert!(!text.contains("no box with id"), "{text}");
    let page = request(s.addr(), "GET", &path, &[], b"");
    assert_eq!(page.status, 410, "{}", page.text());
    assert!(page.text().contains("id=\"expired\""));
    // A link that never was stays unknown.
    let unknown = format!("/auth/{}", "b".repeat(64));
    assert_eq!(request(s.addr(), "GET", &unknown, &[], b"").status, 404);

    // A new box under the same id is a new box.
    let (again, _) = s.create("web");
    assert_eq!(again["status"], "pending");
    let got = s.call("get_llmbox", json!({"box_id": "web"}));
    assert_eq!(got["isError"], false, "{got}");
}

#[test]
fn a_box_that_stops_after_a_wrong_code_sends_the_chatbot_for_a_new_one() {
    let s = Setup::new("states-stopped", Duration::from_secs(300));
    let recording = s.board.manager(LOCAL_SPOKE);
    recording.stop_on_bad_code.store(true, Ordering::SeqCst);
    let (_, path) = s.create("web");

    let page = request(s.addr(), "POST", &path, &FORM, b"code=bad-code");
    assert_eq!(page.status, 200);
    let html = page.text();
    assert!(
        html.contains("<p id=\"stopped\" role=\"alert\">Your box stopped after that code"),
        "{html}"
    );
    assert!(html.contains("<details id=\"details\">"), "{html}");
    assert!(
        !html.contains("id=\"activate\"") && !html.contains("id=\"signin\""),
        "the old link is offered again: {html}"
    );
    // Reloaded, the page says the same; a second code goes nowhere.
    assert!(
        request(s.addr(), "GET", &path, &[], b"")
            .text()
            .contains("id=\"stopped\"")
    );
    let again = request(s.addr(), "POST", &path, &FORM, b"code=good-code");
    assert!(again.text().contains("id=\"stopped\""), "{}", again.text());

    let got = s.call("get_llmbox", json!({"box_id": "web"}));
    let view = &got["structuredContent"];
    assert_eq!(view["status"], "error", "{got}");
    assert!(view.get("auth_url").is_none(), "{got}");
    let instructions = view["instructions"].as_str().expect("text");
    assert!(
        instructions.contains("stopped")
            && instructions.contains("destroy_llmbox")
            && instructions.contains("create_llmbox"),
        "{instructions}"
    );
    let metrics = s.metrics();
    assert!(
        metrics.contains("llmbox_activations_total{outcome=\"bad_code\"} 1"),
        "{metrics}"
    );
}

#[test]
fn an_unreachable_docker_is_the_operators_error_and_leaves_the_link_standing() {
    let s = Setup::new("states-docker", Duration::from_secs(300));
    let recording = s.board.manager(LOCAL_SPOKE);
    recording.docker_down.store(true, Ordering::SeqCst);
    let (_, path) = s.create("web");

    let html = request(s.addr(), "POST", &path, &FORM, b"code=some-code").text();
    assert!(html.contains("its operator must fix"), "{html}");
    assert!(
        html.contains("<pre>cannot reach Docker at unix:///nonexistent/docker.sock"),
        "{html}"
    );
    assert!(
        !html.contains("Sign in again"),
        "the person is asked to sign in again: {html}"
    );
    assert!(html.contains("id=\"activate\""), "{html}");
    let got = s.call("get_llmbox", json!({"box_id": "web"}));
    assert_eq!(got["structuredContent"]["status"], "pending", "{got}");

    // The host's spoke away: the same, without a code reaching anything.
    s.board.set_connected(LOCAL_SPOKE, false);
    let html = request(s.addr(), "POST", &path, &FORM, b"code=some-code").text();
    assert!(
        html.contains("its operator must fix") && html.contains("not connected"),
        "{html}"
    );
    s.board.set_connected(LOCAL_SPOKE, true);

    recording.docker_down.store(false, Ordering::SeqCst);
    let html = request(s.addr(), "POST", &path, &FORM, b"code=good-code").text();
    assert!(html.contains("id=\"session-url\""), "{html}");
    let metrics = s.metrics();
    for line in [
        "llmbox_activations_total{outcome=\"ok\"} 1",
        "llmbox_activations_total{outcome=\"bad_code\"} 0",
        "llmbox_activations_total{outcome=\"error\"} 2",
        "llmbox_verb_errors_total{method=\"submit_code\"} 1",
    ] {
        assert!(metrics.contains(line), "{line}:\n{metrics}");
    }
}

#[test]
fn a_wrong_code_on_a_box_that_keeps_its_login_offers_the_form_again() {
    let s = Setup::new("states-retry", Duration::from_secs(300));
    let (_, path) = s.create("web");
    let html = request(s.addr(), "POST", &path, &FORM, b"code=bad-code").text();
    assert!(
        html.contains("<p id=\"error\" role=\"alert\">That code did not work."),
        "{html}"
    );
    assert!(
        html.contains("<details id=\"details\"><summary>Details</summary><pre>login failed: OAuth error: invalid code</pre></details>"),
        "{html}"
    );
    assert!(html.contains("id=\"activate\"") && html.contains("id=\"expiry\""));
}
