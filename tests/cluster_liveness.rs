//! Connections that end, stall, are replaced, revoked or abused: in-flight calls fail with
//! "spoke X disconnected", silent peers are declared dead after 3 heartbeats (both ends), a
//! reconnect supersedes without being evicted, a revoke from another process closes the
//! connection within a heartbeat, an oversized message gets Close 1009, and a hub restart loses
//! no spoke and no token.

mod support;

use std::io::Write;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use llmbox::boxes::CreateOptions;
use llmbox::cluster::plane::{self, PlaneConfig};
use llmbox::cluster::{ClusterError, SpokeDirectory};
use support::cluster::{Hub, REJECTED, RawSpoke, Spoke, welcome_credential};
use support::wait_for;

const HB: Duration = Duration::from_secs(5);
const SHORT_HB: Duration = Duration::from_millis(100);

fn opts(id: &str) -> CreateOptions {
    CreateOptions {
        image: "img".into(),
        box_id: id.into(),
        ..Default::default()
    }
}

#[test]
fn a_dropped_socket_fails_in_flight_calls_and_the_spoke_comes_back() {
    let hub = Hub::start("inflight", HB);
    let spoke = Spoke::enroll(&hub, "edge", HB);
    let remote = hub.wait_connected("edge");
    remote.create(opts("web")).expect("create");
    let slow = Arc::clone(&remote);
    let call = std::thread::spawn(move || slow.exec("web", &["sleep".into(), "30".into()]));
    // Let the request reach the spoke, then cut the socket under it.
    std::thread::sleep(Duration::from_millis(200));
    spoke.stop.drop_connection();
    let err = call.join().expect("join").expect_err("in flight");
    assert_eq!(err.to_string(), "spoke edge disconnected");
    // The spoke reconnects with its saved credentials and serves again.
    let again = wait_for("reconnect", || {
        hub.registry.get("edge").filter(|m| m.list().is_ok())
    });
    assert_eq!(again.list().expect("list").len(), 1);
}

#[test]
fn the_hub_declares_a_silent_spoke_dead_after_three_heartbeats() {
    let hub = Hub::start("deadspoke", SHORT_HB);
    let mut raw = RawSpoke::connect(&hub);
    welcome_credential(&raw.enroll_token(&hub.token("edge")).expect("welcome"));
    hub.wait_connected("edge");
    let up = hub.registry.statuses();
    assert!(up.iter().any(|s| s.name == "edge" && s.connected), "{up:?}");
    // The raw client never reads again, so it never answers the hub's pings.
    hub.wait_disconnected("edge");
    // Still listed: enrolled, just not connected.
    let down = hub.registry.statuses();
    assert!(
        down.iter()
            .any(|s| s.name == "edge" && !s.connected && !s.local),
        "{down:?}"
    );
    drop(raw);
}

#[test]
fn a_spoke_declares_a_silent_hub_dead_and_redials() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let dir = support::temp_dir("deadhub");
    let creds = dir.join("creds.json");
    llmbox::cluster::spoke::save_credentials(
        &creds,
        &llmbox::cluster::spoke::Credentials {
            name: "edge".into(),
            credential: "c".repeat(64),
        },
    )
    .expect("creds");
    let mut config = llmbox::cluster::spoke::SpokeConfig::new(&format!("ws://{addr}"));
    config.credentials = creds;
    config.heartbeat = SHORT_HB;
    config.backoff = (Duration::from_millis(20), Duration::from_millis(50));
    let spoke = Spoke::run(config);
    // A fake hub: welcome, then silence (it never reads, so never pongs).
    let mut held = Vec::new();
    for _ in 0..2 {
        let (tcp, _) = listener.accept().expect("accept");
        let mut ws = tungstenite::accept(tcp).expect("upgrade");
        let enroll = ws.read().expect("enroll").into_text().expect("text");
        assert!(enroll.contains(&"c".repeat(64)), "{enroll}");
        ws.send(tungstenite::Message::text(
            r#"{"type":"welcome","payload":{"name":"edge"}}"#,
        ))
        .expect("welcome");
        held.push(ws);
    }
    // Reaching the second accept means the spoke gave up on the first, silent, connection.
    drop(spoke);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_reconnect_supersedes_and_the_old_teardown_does_not_evict_it() {
    let hub = Hub::start("supersede", HB);
    let mut old = RawSpoke::connect(&hub);
    let cred = welcome_credential(&old.enroll_token(&hub.token("edge")).expect("welcome"));
    let mut new = RawSpoke::connect(&hub);
    new.enroll_creds("edge", &cred).expect("welcome");
    // The old socket is closed by the hub.
    assert!(old.next_text().is_err());
    drop(old);
    // The new one still serves: a call reaches it and its answer comes back.
    let remote = hub.wait_connected("edge");
    let call = std::thread::spawn(move || remote.logs("web", 5));
    let req = new.next_text().expect("req");
    let v: serde_json::Value = serde_json::from_str(&req).expect("json");
    assert_eq!(v["method"], "logs");
    new.send(&format!(
        r#"{{"type":"resp","id":{},"payload":{{"logs":"from the new socket"}}}}"#,
        v["id"]
    ));
    assert_eq!(
        call.join().expect("join").expect("logs"),
        "from the new socket"
    );
}

#[test]
fn revoking_from_another_process_drops_the_spoke_and_its_reconnect_is_rejected() {
    let hub = Hub::start("revoke", SHORT_HB);
    let spoke = Spoke::enroll(&hub, "edge", SHORT_HB);
    hub.wait_connected("edge");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_llmbox"))
        .args(["spoke", "revoke", "--name", "edge", "--state"])
        .arg(hub.store.path())
        .output()
        .expect("run llmbox");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    hub.wait_disconnected("edge");
    let err = spoke.join().expect_err("rejected");
    assert!(matches!(err, ClusterError::Rejected(_)), "{err}");
    assert!(err.to_string().contains("enroll again"), "{err}");
}

#[test]
fn an_oversized_message_gets_close_1009_and_others_keep_working() {
    let hub = Hub::start("oversize", HB);
    let _good = Spoke::enroll(&hub, "good", HB);
    let good = hub.wait_connected("good");
    let mut raw = RawSpoke::connect(&hub);
    welcome_credential(&raw.enroll_token(&hub.token("big")).expect("welcome"));
    // A masked text frame header announcing 64 MiB + 1 bytes; the hub refuses on the header.
    let len: u64 = (64 << 20) + 1;
    let mut header = vec![0x81, 0x80 | 127];
    header.extend_from_slice(&len.to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    raw.ws.get_mut().write_all(&header).expect("header");
    raw.ws
        .get_mut()
        .write_all(&[0u8; 4096])
        .expect("some payload");
    assert_eq!(raw.next_text(), Err("close Some(1009)".into()));
    hub.wait_disconnected("big");
    good.create(opts("web")).expect("other spokes still served");
}

#[test]
fn a_hub_restart_loses_no_spoke_and_no_token() {
    let mut hub = Hub::start("restart", SHORT_HB);
    let spoke = Spoke::enroll(&hub, "edge", SHORT_HB);
    hub.wait_connected("edge");
    let spare = hub.token("spare");
    let addr = hub.plane.as_ref().expect("plane").addr();
    hub.plane.take().expect("plane").stop();
    // A new hub process on the same address and state file.
    let listener = wait_for("rebind", || TcpListener::bind(addr).ok());
    let registry = Arc::new(llmbox::cluster::registry::Registry::new(Arc::new(
        llmbox::store::Store::open(hub.store.path()).expect("reopen"),
    )));
    hub.registry = Arc::clone(&registry);
    hub.plane = Some(
        plane::start(
            listener,
            registry,
            PlaneConfig {
                heartbeat: SHORT_HB,
                ..PlaneConfig::default()
            },
        )
        .expect("restart"),
    );
    let remote = hub.wait_connected("edge");
    remote.list().expect("served after restart");
    let mut raw = RawSpoke::connect(&hub);
    welcome_credential(&raw.enroll_token(&spare).expect("spare token still valid"));
    let mut reuse = RawSpoke::connect(&hub);
    assert_eq!(reuse.enroll_token(&spare).as_deref(), Ok(REJECTED));
    drop(spoke);
}
