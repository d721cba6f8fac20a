//! A Go hub's frames, byte for byte, reach our real spoke loop over a loopback WebSocket: the
//! hub side here is a bare tungstenite server sending the JSON a Go llmbox v0.0.36 hub sends
//! (`tail` passed straight through from a chatbot, nil slices marshalled as `null`).

mod support;

use std::net::TcpListener;
use std::time::Duration;

use llmbox::boxes::BoxManager;
use support::cluster::Spoke;
use tungstenite::Message;

/// A hand-driven hub holding one enrolled spoke connection.
struct GoHub {
    ws: tungstenite::WebSocket<std::net::TcpStream>,
}

impl GoHub {
    /// Accepts the spoke's socket and welcomes its enrollment as a Go hub does.
    fn accept(listener: &TcpListener) -> GoHub {
        let (tcp, _) = listener.accept().expect("spoke connects");
        tcp.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut hub = GoHub {
            ws: tungstenite::accept(tcp).expect("upgrade"),
        };
        let enroll: serde_json::Value =
            serde_json::from_str(&hub.next_text()).expect("enroll json");
        assert_eq!(enroll["type"], "enroll");
        let credential = "c0".repeat(32);
        hub.send(&format!(
            r#"{{"type":"welcome","payload":{{"name":"edge","credential":"{credential}"}}}}"#
        ));
        hub
    }

    fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).expect("send");
    }

    fn next_text(&mut self) -> String {
        loop {
            match self.ws.read().expect("read") {
                Message::Text(t) => return t.to_string(),
                Message::Close(f) => panic!("spoke closed: {f:?}"),
                _ => {}
            }
        }
    }

    /// Sends one request and returns the spoke's answer as JSON.
    fn call(&mut self, text: &str) -> serde_json::Value {
        self.send(text);
        let v: serde_json::Value = serde_json::from_str(&self.next_text()).expect("resp json");
        assert_eq!(v["type"], "resp", "{v}");
        v
    }
}

#[test]
fn a_go_hubs_null_content_negative_tail_and_null_cmd_are_understood() {
    let dir = support::temp_dir("go-frames");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "ws://{}/spoke/connect",
        listener.local_addr().expect("addr")
    );
    let mut config = llmbox::cluster::spoke::SpokeConfig::new(&url);
    config.token = Some("go-join-token".into());
    config.credentials = dir.join("creds.json");
    config.heartbeat = Duration::from_secs(5);
    let spoke = Spoke::run(config);
    let mut hub = GoHub::accept(&listener);

    // A file whose Go []byte was nil: `"Content":null`.
    let created = hub.call(
        r#"{"type":"req","id":1,"method":"create","payload":{"opts":{"Image":"img:1","BoxID":"web","Description":"","SpokeName":"edge","Files":[{"Path":"/etc/empty.json","Content":null,"Mode":420,"UID":1000,"GID":1000}]}}}"#,
    );
    assert_eq!(created["id"], 1);
    assert!(created.get("error").is_none(), "{created}");
    assert!(
        created["payload"]["authorize_url"]
            .as_str()
            .expect("url")
            .starts_with("https://")
    );
    let listed = spoke.manager.list().expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].box_id, "web");

    // A chatbot's `tail: -1`, passed straight through by a Go hub: the default 200 lines.
    let logs = hub
        .call(r#"{"type":"req","id":2,"method":"logs","payload":{"id_or_name":"web","tail":-1}}"#);
    assert!(logs.get("error").is_none(), "{logs}");
    assert!(
        logs["payload"]["logs"]
            .as_str()
            .expect("logs")
            .contains("authorize"),
        "{logs}"
    );

    // A nil argv: a clear refusal for that id, not a decode error.
    let exec = hub
        .call(r#"{"type":"req","id":3,"method":"exec","payload":{"id_or_name":"web","cmd":null}}"#);
    assert_eq!(exec["id"], 3);
    assert_eq!(
        exec["error"], "invalid argument: exec: command is required",
        "{exec}"
    );

    // The socket is still serving.
    let exec = hub.call(
        r#"{"type":"req","id":4,"method":"exec","payload":{"id_or_name":"web","cmd":["echo","hi"]}}"#,
    );
    assert_eq!(exec["payload"]["exit_code"], 0, "{exec}");
    drop(spoke);
}
