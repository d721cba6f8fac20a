//! `wss://`: the spoke dials through rustls, trusts a private CA given with `--ca-file`, and
//! serves verbs over the single-owner TLS loop. The hub end here is a TLS WebSocket server
//! written in the test (the real hub sits behind a TLS proxy), with a CA and certificate made
//! by the `openssl` command line.

mod support;

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use llmbox::cluster::spoke::SpokeConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use support::cluster::Spoke;
use support::temp_dir;
use tungstenite::Message;

fn server_config(dir: &Path) -> Arc<rustls::ServerConfig> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("leaf.pem"))
        .expect("leaf")
        .map(|c| c.expect("cert"))
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("leaf.key")).expect("key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    Arc::new(config)
}

fn next_text<S: std::io::Read + std::io::Write>(ws: &mut tungstenite::WebSocket<S>) -> String {
    loop {
        match ws.read().expect("read") {
            Message::Text(t) => return t.to_string(),
            Message::Close(f) => panic!("closed: {f:?}"),
            _ => {}
        }
    }
}

#[test]
fn a_spoke_enrolls_and_serves_over_wss_with_a_private_ca() {
    let dir = temp_dir("tls");
    support::pki::make_pki(&dir);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut config = SpokeConfig::new(&format!("wss://localhost:{port}"));
    config.token = Some("cd".repeat(32));
    config.credentials = dir.join("creds.json");
    config.ca_file = Some(dir.join("ca.pem"));
    config.heartbeat = Duration::from_secs(5);
    config.backoff = (Duration::from_millis(20), Duration::from_millis(50));
    let spoke = Spoke::run(config);

    let (tcp, _) = listener.accept().expect("accept");
    tcp.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let tls = rustls::ServerConnection::new(server_config(&dir)).expect("tls");
    let mut ws = tungstenite::accept(rustls::StreamOwned::new(tls, tcp)).expect("wss upgrade");
    let enroll = next_text(&mut ws);
    assert_eq!(
        enroll,
        format!(
            r#"{{"type":"enroll","payload":{{"join_token":"{}"}}}}"#,
            "cd".repeat(32)
        )
    );
    // A credential the way the hub mints them: 64 hex characters.
    let credential = "5e".repeat(32);
    ws.send(Message::text(format!(
        r#"{{"type":"welcome","payload":{{"name":"edge","credential":"{credential}"}}}}"#
    )))
    .expect("welcome");
    ws.send(Message::text(r#"{"type":"req","id":1,"method":"create","payload":{"opts":{"Image":"i","BoxID":"web","Description":"","SpokeName":"edge","Files":null}}}"#))
        .expect("req");
    let created = next_text(&mut ws);
    assert!(
        created.starts_with(r#"{"type":"resp","id":1,"payload":{"id":""#),
        "{created}"
    );
    ws.send(Message::text(
        r#"{"type":"req","id":2,"method":"list","payload":{}}"#,
    ))
    .expect("req");
    let listed = next_text(&mut ws);
    assert!(listed.contains(r#""box_id":"web""#), "{listed}");
    ws.send(Message::text(r#"{"type":"req","id":3,"method":"nope"}"#))
        .expect("req");
    assert_eq!(
        next_text(&mut ws),
        r#"{"type":"resp","id":3,"error":"unknown method \"nope\""}"#
    );
    let saved = std::fs::read_to_string(dir.join("creds.json")).expect("creds saved");
    assert!(saved.contains(&credential), "{saved}");
    drop(spoke);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn without_the_private_ca_the_spoke_refuses_the_hub_certificate() {
    let dir = temp_dir("tls-noca");
    support::pki::make_pki(&dir);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut config = SpokeConfig::new(&format!("wss://localhost:{port}"));
    config.token = Some("cd".repeat(32));
    config.credentials = dir.join("creds.json");
    config.backoff = (Duration::from_millis(20), Duration::from_millis(50));
    let spoke = Spoke::run(config);
    let (tcp, _) = listener.accept().expect("accept");
    tcp.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let tls = rustls::ServerConnection::new(server_config(&dir)).expect("tls");
    let err =
        tungstenite::accept(rustls::StreamOwned::new(tls, tcp)).expect_err("handshake refused");
    assert!(
        err.to_string().to_lowercase().contains("certificate") || err.to_string().contains("alert"),
        "{err}"
    );
    assert!(!dir.join("creds.json").exists());
    drop(spoke);
    let _ = std::fs::remove_dir_all(dir);
}
