//! Enrollment over real loopback sockets: tokens are one-time (even when raced), bad first
//! frames and wrong credentials are rejected with exactly "enrollment rejected", the plane
//! answers non-upgrades and wrong paths with 4xx, and the 10 s deadline (shortened here) holds.

mod support;

use std::io::{Read, Write};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use llmbox::cluster::SpokeDirectory;
use llmbox::cluster::plane::PlaneConfig;
use support::cluster::{Hub, REJECTED, RawSpoke, Spoke, welcome_credential};
use support::wait_for;

const HB: Duration = Duration::from_secs(5);

#[test]
fn one_token_raced_on_many_sockets_gets_exactly_one_welcome() {
    let hub = Hub::start("race", HB);
    let token = hub.token("edge");
    let n = 12;
    let barrier = Arc::new(Barrier::new(n));
    let mut clients: Vec<RawSpoke> = (0..n).map(|_| RawSpoke::connect(&hub)).collect();
    let answers: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = clients
            .iter_mut()
            .map(|c| {
                let (b, t) = (Arc::clone(&barrier), token.clone());
                s.spawn(move || {
                    b.wait();
                    c.enroll_token(&t).expect("an answer")
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("join"))
            .collect()
    });
    let welcomes = answers.iter().filter(|a| a.contains("\"welcome\"")).count();
    let rejects = answers.iter().filter(|a| a.as_str() == REJECTED).count();
    assert_eq!((welcomes, rejects), (1, n - 1), "{answers:?}");
    let state = hub.store.load().expect("state");
    assert!(state.join_tokens.is_empty());
    assert_eq!(state.spokes.len(), 1);
}

#[test]
fn bad_first_frames_are_rejected_and_change_nothing() {
    let hub = Hub::start("badfirst", HB);
    let token = hub.token("edge");
    let before = hub.store.load().expect("state");
    for first in [
        "not json",
        r#"{"type":"req","id":1,"method":"list","payload":{}}"#,
        r#"{"type":"bogus"}"#,
        r#"{"type":"enroll","payload":{}}"#,
        r#"{"type":"enroll","payload":{"join_token":"short"}}"#,
        r#"{"type":"enroll","payload":{"join_token":"0000000000000000000000000000000000000000000000000000000000000000"}}"#,
        r#"{"type":"enroll","payload":{"name":"edge","credential":"wrong"}}"#,
    ] {
        let mut c = RawSpoke::connect(&hub);
        c.send(first);
        assert_eq!(c.next_text().as_deref(), Ok(REJECTED), "{first}");
        assert!(
            c.next_text().is_err(),
            "closed after the rejection: {first}"
        );
    }
    assert_eq!(*hub.store.load().expect("state"), *before);
    // The token still works after all that.
    let mut c = RawSpoke::connect(&hub);
    welcome_credential(&c.enroll_token(&token).expect("welcome"));
}

#[test]
fn credentials_reconnect_and_a_superseded_credential_is_rejected() {
    let hub = Hub::start("creds", HB);
    let mut first = RawSpoke::connect(&hub);
    let cred = welcome_credential(&first.enroll_token(&hub.token("edge")).expect("welcome"));
    drop(first);
    let mut again = RawSpoke::connect(&hub);
    let answer = again.enroll_creds("edge", &cred).expect("welcome");
    assert_eq!(answer, r#"{"type":"welcome","payload":{"name":"edge"}}"#);
    drop(again);
    // Enrolling again under the same name replaces the credential.
    let mut fresh = RawSpoke::connect(&hub);
    welcome_credential(&fresh.enroll_token(&hub.token("edge")).expect("welcome"));
    let mut stale = RawSpoke::connect(&hub);
    assert_eq!(stale.enroll_creds("edge", &cred).as_deref(), Ok(REJECTED));
}

#[test]
fn the_name_local_cannot_enroll_even_with_a_forged_token_record() {
    let hub = Hub::start("local", HB);
    let token = hub.token("edge");
    hub.store
        .update(|s| s.join_tokens[0].name = "local".into())
        .expect("forge");
    let mut c = RawSpoke::connect(&hub);
    assert_eq!(c.enroll_token(&token).as_deref(), Ok(REJECTED));
    assert!(hub.store.load().expect("state").spokes.is_empty());
    assert!(hub.registry.get("local").is_none());
}

fn http_status(hub: &Hub, request: &str) -> String {
    let addr = hub.addr();
    let mut tcp = std::net::TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    tcp.write_all(request.as_bytes()).expect("write");
    let mut buf = Vec::new();
    let _ = tcp.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    text.lines().next().unwrap_or_default().to_string()
}

#[test]
fn non_upgrades_and_wrong_paths_get_4xx() {
    let hub = Hub::start_with(
        "http",
        PlaneConfig {
            enroll_timeout: Duration::from_millis(500),
            ..PlaneConfig::default()
        },
    );
    let plain = http_status(&hub, "GET /spoke/connect HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(plain.starts_with("HTTP/1.1 400"), "{plain}");
    let upgrade = "Host: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let wrong = http_status(&hub, &format!("GET /other HTTP/1.1\r\n{upgrade}"));
    assert!(wrong.starts_with("HTTP/1.1 404"), "{wrong}");
    let right = http_status(&hub, &format!("GET /spoke/connect HTTP/1.1\r\n{upgrade}"));
    assert!(right.starts_with("HTTP/1.1 101"), "{right}");
}

#[test]
fn a_socket_that_never_enrolls_is_closed_at_the_deadline() {
    let hub = Hub::start_with(
        "deadline",
        PlaneConfig {
            enroll_timeout: Duration::from_millis(300),
            ..PlaneConfig::default()
        },
    );
    let mut c = RawSpoke::connect(&hub);
    // No enroll sent: the hub gives up, says so and closes; the read ends instead of hanging.
    assert_eq!(c.next_text().as_deref(), Ok(REJECTED));
    assert!(c.next_text().is_err());
    let mut late = RawSpoke::connect(&hub);
    std::thread::sleep(Duration::from_millis(600));
    let token = hub.token("edge");
    late.send(&format!(
        r#"{{"type":"enroll","payload":{{"join_token":"{token}"}}}}"#
    ));
    assert_eq!(
        late.next_text().as_deref(),
        Ok(REJECTED),
        "no welcome after the deadline"
    );
    assert_eq!(hub.store.load().expect("state").join_tokens.len(), 1);
}

#[test]
fn a_trickled_upgrade_request_is_cut_off_at_the_enrollment_deadline() {
    let hub = Hub::start_with(
        "trickle",
        PlaneConfig {
            enroll_timeout: Duration::from_millis(400),
            ..PlaneConfig::default()
        },
    );
    let addr = hub.addr();
    let mut tcp = std::net::TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let mut sent = 0;
    // A request line, then a header value growing by 256 bytes every 100 ms (large enough
    // chunks that tungstenite's own small-packet check does not fire): the request never
    // completes, and the hub must hang up anyway once the enrollment deadline passes.
    tcp.write_all(b"GET /spoke/connect HTTP/1.1\r\nX-Slow: ")
        .expect("request line");
    let closed = loop {
        if tcp.write_all(&[b'a'; 256]).is_err() {
            break true;
        }
        let mut b = [0u8; 64];
        match tcp.read(&mut b) {
            Ok(0) => break true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            _ => break true,
        }
        // 64 chunks take several seconds, many times the 0.4 s deadline (tungstenite's own
        // limits would end such a request only after about 14 s).
        sent += 1;
        if sent >= 64 {
            break false;
        }
    };
    assert!(closed, "the hub kept a trickling socket open");
}

#[test]
fn a_restarted_spoke_prefers_its_saved_credentials_over_a_used_token() {
    let hub = Hub::start("restart-token", HB);
    let creds = hub.dir.join("edge-creds.json");
    let token = hub.token("edge");
    let first = Spoke::run(Spoke::config(&hub, Some(token.clone()), creds.clone(), HB));
    hub.wait_connected("edge");
    // The hub counts the spoke connected when it sends the welcome; the spoke saves its
    // credential just after reading it.
    wait_for("credentials saved", || creds.exists().then_some(()));
    drop(first);
    hub.wait_disconnected("edge");
    // Same command line again, token included (as a service unit would): it must reconnect.
    let _again = Spoke::run(Spoke::config(&hub, Some(token), creds.clone(), HB));
    hub.wait_connected("edge");
}

#[test]
fn rejected_credentials_fall_back_to_a_fresh_token() {
    let hub = Hub::start("revoked-token", HB);
    let creds = hub.dir.join("edge-creds.json");
    let first = Spoke::run(Spoke::config(
        &hub,
        Some(hub.token("edge")),
        creds.clone(),
        HB,
    ));
    hub.wait_connected("edge");
    // The hub counts the spoke connected when it sends the welcome; the spoke saves its
    // credential just after reading it.
    wait_for("credentials saved", || creds.exists().then_some(()));
    drop(first);
    hub.wait_disconnected("edge");
    hub.store
        .update(|s| s.spokes.retain(|r| r.name != "edge"))
        .expect("revoke");
    let fresh = hub.token("edge");
    let _again = Spoke::run(Spoke::config(&hub, Some(fresh), creds, HB));
    hub.wait_connected("edge");
}
