//! Hostile or buggy peers over real loopback sockets: a spoke that sends frames of every wrong
//! shape, answers with unknown ids or deeply nested JSON, and a hub that welcomes a spoke under a
//! name it never asked for. The hub keeps the connection and keeps answering correct calls; the
//! spoke keeps nothing a hub made up.

mod support;

use std::net::TcpListener;
use std::thread;
use std::time::Duration;

use llmbox::cluster::ClusterError;
use llmbox::cluster::plane::PlaneConfig;
use llmbox::cluster::spoke::SpokeConfig;
use support::cluster::{Hub, RawSpoke, Spoke, welcome_credential};
use support::temp_dir;

const HB: Duration = Duration::from_secs(5);

/// `[[[[…]]]]` nested `depth` deep: past serde_json's recursion limit, and deep enough to
/// overflow a small thread stack if anything parsed it recursively without a limit.
fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

#[test]
fn deeply_nested_json_before_enrollment_is_rejected_and_the_hub_keeps_serving() {
    let hub = Hub::start("nested-pre", HB);
    let mut c = RawSpoke::connect(&hub);
    c.send(&format!(
        r#"{{"type":"enroll","payload":{{"join_token":{}}}}}"#,
        nested(200_000)
    ));
    assert_eq!(c.next_text().as_deref(), Ok(support::cluster::REJECTED));
    // The plane (and the process) are still up.
    let mut ok = RawSpoke::connect(&hub);
    welcome_credential(&ok.enroll_token(&hub.token("edge")).expect("welcome"));
}

#[test]
fn an_enroll_message_past_the_enrollment_cap_is_rejected_and_spends_nothing() {
    let hub = Hub::start("bigenroll", HB);
    let token = hub.token("edge");
    // A valid enroll padded with JSON whitespace to 1 MiB: a stranger's message that large is
    // not read in full before it has enrolled.
    let mut c = RawSpoke::connect(&hub);
    let big = format!(
        r#"{{"type":"enroll","payload":{{"join_token":"{token}"{}}}}}"#,
        " ".repeat(1 << 20)
    );
    // The hub may hang up while the rest of the message is still on its way.
    let _ = c.ws.send(tungstenite::Message::text(big));
    let answer = c.next_text();
    assert!(
        answer.as_deref() == Ok(support::cluster::REJECTED) || answer.is_err(),
        "{answer:?}"
    );
    assert_eq!(hub.store.load().expect("state").join_tokens.len(), 1);
    // The same token in a normal message enrolls, and after enrolling 1 MiB messages are fine.
    let mut ok = RawSpoke::connect(&hub);
    welcome_credential(&ok.enroll_token(&token).expect("welcome"));
    let remote = hub.wait_connected("edge");
    let caller = thread::spawn(move || remote.logs("web", 5));
    let id = ok.next_request_id();
    let big = "x".repeat(1 << 20);
    ok.send(&format!(
        r#"{{"type":"resp","id":{id},"payload":{{"logs":"{big}"}}}}"#
    ));
    assert_eq!(caller.join().expect("join").expect("logs").len(), 1 << 20);
}

#[test]
fn junk_after_enrollment_is_ignored_and_correct_answers_still_land() {
    let hub = Hub::start("junk", HB);
    let mut raw = RawSpoke::connect(&hub);
    welcome_credential(&raw.enroll_token(&hub.token("edge")).expect("welcome"));
    let remote = hub.wait_connected("edge");
    let caller = thread::spawn(move || remote.list());
    let id = raw.next_request_id();
    let junk = [
        "not json".to_string(),
        "{}".to_string(),
        r#"{"type":"bogus","id":1}"#.to_string(),
        r#"{"type":"enroll","payload":{"join_token":"x"}}"#.to_string(),
        r#"{"type":"welcome","payload":{"name":"other"}}"#.to_string(),
        r#"{"type":"req","id":7,"method":"list","payload":{}}"#.to_string(),
        r#"{"type":"err","error":"enrollment rejected"}"#.to_string(),
        r#"{"type":"resp","id":-1}"#.to_string(),
        r#"{"type":"resp","id":18446744073709551615,"payload":{}}"#.to_string(),
        format!(r#"{{"type":"resp","id":{},"payload":{{}}}}"#, id + 1000),
        format!(
            r#"{{"type":"resp","id":{},"payload":{}}}"#,
            id + 2000,
            nested(200_000)
        ),
        // A frame of the wrong direction carrying the waiting call's id.
        format!(
            r#"{{"type":"req","id":{id},"method":"list","payload":{}}}"#,
            nested(100)
        ),
    ];
    for j in &junk {
        raw.send(j);
    }
    for _ in 0..1000 {
        raw.send(r#"{"type":"resp","id":424242,"payload":{"boxes":[]}}"#);
    }
    raw.ws
        .send(tungstenite::Message::Binary(vec![1, 2, 3].into()))
        .expect("binary");
    raw.send(&format!(
        r#"{{"type":"resp","id":{id},"payload":{{"boxes":[]}}}}"#
    ));
    let boxes = caller.join().expect("join").expect("the real answer lands");
    assert!(boxes.is_empty());
    // The same connection survived all of it and serves the next call.
    let remote = hub.wait_connected("edge");
    let caller = thread::spawn(move || remote.logs("web", 5));
    let id = raw.next_request_id();
    raw.send(&format!(
        r#"{{"type":"resp","id":{id},"payload":{{"logs":"hi"}}}}"#
    ));
    assert_eq!(caller.join().expect("join").expect("logs"), "hi");
}

#[test]
fn a_wrongly_shaped_answer_is_a_clear_error_for_that_call_only() {
    let hub = Hub::start("shape", HB);
    let mut raw = RawSpoke::connect(&hub);
    welcome_credential(&raw.enroll_token(&hub.token("edge")).expect("welcome"));
    let remote = hub.wait_connected("edge");
    let answer = |raw: &mut RawSpoke, payload: &str| {
        let id = raw.next_request_id();
        raw.send(&format!(
            r#"{{"type":"resp","id":{id},"payload":{payload}}}"#
        ));
    };
    let r = std::sync::Arc::clone(&remote);
    let call = thread::spawn(move || r.list());
    answer(&mut raw, r#"{"boxes":"nope"}"#);
    let err = call.join().expect("join").expect_err("bad shape");
    assert!(
        err.to_string()
            .starts_with("spoke edge: bad answer to list"),
        "{err}"
    );
    let r = std::sync::Arc::clone(&remote);
    let call = thread::spawn(move || r.list());
    answer(&mut raw, r#"{"boxes":[]}"#);
    assert!(call.join().expect("join").expect("good answer").is_empty());
}

#[test]
fn a_peer_flooding_pings_without_reading_the_pongs_is_cut_off() {
    // A long enrollment deadline, so only the reply bound can end this connection.
    let hub = Hub::start_with(
        "pingflood",
        PlaneConfig {
            heartbeat: HB,
            enroll_timeout: Duration::from_secs(300),
            ..PlaneConfig::default()
        },
    );
    let mut raw = RawSpoke::connect(&hub);
    raw.ws
        .get_ref()
        .set_write_timeout(Some(Duration::from_secs(1)))
        .expect("write timeout");
    let payload = vec![7u8; 125];
    // About 50 MB of pings, far past the socket buffers and the hub's reply bound.
    let sent = (0..400_000).position(|_| {
        raw.ws
            .send(tungstenite::Message::Ping(payload.clone().into()))
            .is_err()
    });
    assert!(
        sent.is_some(),
        "the hub kept reading 50 MB of pings whose pongs nobody read"
    );
    // Everyone else is still served.
    let mut ok = RawSpoke::connect(&hub);
    welcome_credential(&ok.enroll_token(&hub.token("edge")).expect("welcome"));
}

#[test]
fn past_the_connection_cap_sockets_are_refused_and_a_freed_slot_serves_again() {
    let hub = Hub::start_with(
        "cap",
        PlaneConfig {
            heartbeat: HB,
            enroll_timeout: Duration::from_secs(300),
            max_connections: 3,
            ..PlaneConfig::default()
        },
    );
    // Three sockets that never even send the upgrade hold every slot.
    let mut idle: Vec<_> = (0..3)
        .map(|_| std::net::TcpStream::connect(hub.addr()).expect("connect"))
        .collect();
    // The hub counts a socket when it accepts it: wait until the fourth is turned away.
    support::wait_for("a refused socket", || {
        RawSpoke::try_connect(&hub).is_none().then_some(())
    });
    // Freeing one slot lets a spoke in again.
    drop(idle.pop());
    let mut ok = support::wait_for("a free slot", || RawSpoke::try_connect(&hub));
    welcome_credential(&ok.enroll_token(&hub.token("edge")).expect("welcome"));
    drop(idle);
}

/// A fake hub that trickles `opening`, then `chunk` every 100 ms, to the first socket and
/// reports each accepted socket's number on the returned channel.
fn trickling_hub(
    opening: &'static [u8],
    chunk: &'static [u8],
) -> (
    String,
    std::sync::mpsc::Receiver<usize>,
    thread::JoinHandle<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = std::sync::mpsc::channel();
    let fake = thread::spawn(move || {
        for n in 0..2 {
            let (mut tcp, _) = listener.accept().expect("accept");
            tx.send(n).expect("report");
            if n == 1 {
                break;
            }
            // Always inside the read timeout, never a finished answer.
            thread::spawn(move || {
                use std::io::Write;
                let _ = tcp.write_all(opening);
                for _ in 0..300 {
                    thread::sleep(Duration::from_millis(100));
                    if tcp.write_all(chunk).is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr.to_string(), rx, fake)
}

fn assert_redials(url: &str, tag: &str, rx: &std::sync::mpsc::Receiver<usize>) {
    let (mut config, _creds) = spoke_against(url, tag);
    config.connect_timeout = Duration::from_millis(500);
    let spoke = Spoke::run(config);
    assert_eq!(rx.recv_timeout(Duration::from_secs(20)), Ok(0));
    // A liveness bound, far above the 0.5 s connect timeout and below the 30 s trickle and
    // tungstenite's own limits (about 14 s).
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)),
        Ok(1),
        "{tag}: the spoke never gave up on a hub trickling its answer"
    );
    drop(spoke);
}

#[test]
fn a_hub_trickling_its_upgrade_answer_is_given_up_on_and_redialed() {
    // A header growing by 256 bytes every 100 ms (chunks this large also pass tungstenite's
    // small-packet check).
    let (addr, rx, fake) = trickling_hub(
        b"HTTP/1.1 101 Switching Protocols\r\nX-Slow: ",
        &[b'a'; 256],
    );
    assert_redials(&format!("ws://{addr}"), "trickle-ws", &rx);
    fake.join().expect("fake hub");
}

#[test]
fn a_hub_trickling_its_tls_handshake_is_given_up_on_and_redialed() {
    // A TLS record header announcing 16 KiB, then its body 16 bytes every 100 ms.
    let (addr, rx, fake) = trickling_hub(&[0x16, 0x03, 0x03, 0x40, 0x00], &[0u8; 16]);
    assert_redials(&format!("wss://{addr}"), "trickle-tls", &rx);
    fake.join().expect("fake hub");
}

#[test]
fn absurdly_long_spoke_timeouts_neither_panic_nor_stop_it_serving() {
    let hub = Hub::start("absurd", HB);
    let mut config = support::cluster::Spoke::config(
        &hub,
        Some(hub.token("edge")),
        hub.dir.join("creds.json"),
        Duration::MAX,
    );
    config.connect_timeout = Duration::MAX;
    let _spoke = Spoke::run(config);
    let remote = hub.wait_connected("edge");
    assert!(remote.list().expect("list").is_empty());
}

#[test]
fn a_hub_flooding_requests_without_reading_the_answers_is_cut_off() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("ws://{}", listener.local_addr().expect("addr"));
    let (config, _creds) = spoke_against(&url, "reqflood");
    let spoke = Spoke::run(config);
    let (tcp, _) = listener.accept().expect("accept");
    tcp.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    tcp.set_write_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let mut ws = tungstenite::accept(tcp).expect("upgrade");
    let _enroll = ws.read().expect("enroll");
    ws.send(tungstenite::Message::text(format!(
        r#"{{"type":"welcome","payload":{{"name":"edge","credential":"{}"}}}}"#,
        "cd".repeat(32)
    )))
    .expect("welcome");
    // About 40 MB of requests, never reading an answer: far past the socket buffers and the
    // spoke's bound on queued answers.
    let stopped = (1..=800_000u64).position(|id| {
        let req = format!(r#"{{"type":"req","id":{id},"method":"list","payload":{{}}}}"#);
        ws.send(tungstenite::Message::text(req)).is_err()
    });
    assert!(
        stopped.is_some(),
        "the spoke kept queueing answers for a hub that never reads them"
    );
    drop(spoke);
}

/// A fake hub that welcomes the first enroll with `welcome` and then idles.
fn fake_hub(welcome: String) -> (String, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("ws://{}", listener.local_addr().expect("addr"));
    let handle = thread::spawn(move || {
        let (tcp, _) = listener.accept().expect("accept");
        tcp.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut ws = tungstenite::accept(tcp).expect("upgrade");
        let _enroll = ws.read().expect("enroll");
        ws.send(tungstenite::Message::text(welcome))
            .expect("welcome");
        // Wait for the spoke to hang up.
        while ws.read().is_ok() {}
    });
    (url, handle)
}

fn spoke_against(url: &str, tag: &str) -> (SpokeConfig, std::path::PathBuf) {
    let dir = temp_dir(tag);
    let creds = dir.join("creds.json");
    let mut c = SpokeConfig::new(url);
    c.token = Some("ab".repeat(32));
    c.credentials = creds.clone();
    c.heartbeat = HB;
    c.backoff = (Duration::from_millis(50), Duration::from_millis(200));
    (c, creds)
}

#[test]
fn a_welcome_under_an_invalid_name_is_refused_and_nothing_is_saved() {
    for (tag, name) in [
        ("badname", "../../etc"),
        ("localname", "local"),
        ("empty", ""),
    ] {
        let welcome = format!(
            r#"{{"type":"welcome","payload":{{"name":{},"credential":"{}"}}}}"#,
            serde_json::to_string(name).expect("json"),
            "cd".repeat(32)
        );
        let (url, hub) = fake_hub(welcome);
        let (config, creds) = spoke_against(&url, tag);
        let spoke = Spoke::run(config);
        let err = spoke.join().expect_err("refused");
        assert!(matches!(err, ClusterError::Protocol(_)), "{tag}: {err:?}");
        assert!(err.to_string().contains("invalid spoke name"), "{err}");
        assert!(!creds.exists(), "{tag}: no credentials saved");
        hub.join().expect("fake hub");
    }
}

#[test]
fn a_welcome_with_a_malformed_credential_is_refused_and_nothing_is_saved() {
    let welcome =
        r#"{"type":"welcome","payload":{"name":"edge","credential":"short"}}"#.to_string();
    let (url, hub) = fake_hub(welcome);
    let (config, creds) = spoke_against(&url, "badcred");
    let err = Spoke::run(config).join().expect_err("refused");
    assert!(err.to_string().contains("credential"), "{err}");
    assert!(!creds.exists());
    hub.join().expect("fake hub");
}

#[test]
fn a_reconnect_welcomed_under_another_name_is_refused() {
    let welcome = r#"{"type":"welcome","payload":{"name":"other"}}"#.to_string();
    let (url, hub) = fake_hub(welcome);
    let (mut config, creds) = spoke_against(&url, "rename");
    config.token = None;
    let saved = format!(r#"{{"name":"edge","credential":"{}"}}"#, "ef".repeat(32));
    std::fs::write(&creds, &saved).expect("saved credentials");
    let err = Spoke::run(config).join().expect_err("refused");
    assert!(
        err.to_string().contains("but it enrolled as \"edge\""),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&creds).expect("kept"), saved);
    hub.join().expect("fake hub");
}
