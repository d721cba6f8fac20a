//! The WebSocket close handshake (RFC 6455 §5.5.1, §7.1) at both ends, over real loopback
//! sockets, against bare tungstenite peers as a Go llmbox peer would behave: a Close from the
//! peer is echoed before the socket is shut, and our own Close waits for the peer's answer, so
//! a peer answering a little late gets a clean end of stream, not a reset.

mod support;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

use llmbox::cluster::SpokeDirectory;
use llmbox::cluster::spoke::SpokeConfig;
use support::cluster::{Hub, RawSpoke, Spoke, welcome_credential};
use support::temp_dir;

const HB: Duration = Duration::from_secs(5);

/// The next Close from `ws` (text and pings skipped), as (code, reason).
fn next_close(ws: &mut WebSocket<TcpStream>) -> (CloseCode, String) {
    loop {
        match ws.read() {
            Ok(Message::Close(Some(f))) => return (f.code, f.reason.to_string()),
            Ok(Message::Close(None)) => return (CloseCode::Status, String::new()),
            Ok(_) => {}
            Err(e) => panic!("the connection ended without a Close: {e}"),
        }
    }
}

/// After the close handshake, the raw socket ends cleanly: end of stream, not a reset.
fn assert_clean_eof(tcp: &mut TcpStream) {
    let mut buf = [0u8; 64];
    match tcp.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("{n} more bytes after the close handshake"),
        Err(e) => panic!("the socket did not end cleanly: {e}"),
    }
    // A reset that came after the end of stream (our answer hit a closed socket) shows here.
    let pending = tcp.take_error().expect("SO_ERROR");
    assert!(
        pending.is_none(),
        "the peer reset the connection: {pending:?}"
    );
}

/// A reconnect's welcome (it carries no new credential).
fn assert_welcome(text: &str) {
    let v: serde_json::Value = serde_json::from_str(text).expect("json");
    assert_eq!(v["type"], "welcome", "{text}");
}

#[test]
fn the_hub_echoes_a_close_from_the_spoke_and_then_ends_the_stream() {
    let hub = Hub::start("close-echo", HB);
    let mut raw = RawSpoke::connect(&hub);
    welcome_credential(&raw.enroll_token(&hub.token("edge")).expect("welcome"));
    hub.wait_connected("edge");
    raw.ws
        .close(Some(CloseFrame {
            code: CloseCode::Away,
            reason: "going away".into(),
        }))
        .expect("close");
    // The echo carries the code back (tungstenite reports the handshake done with an error
    // on the read after it).
    assert_eq!(
        next_close(&mut raw.ws),
        (CloseCode::Away, "going away".into())
    );
    assert_clean_eof(raw.ws.get_mut());
    hub.wait_disconnected("edge");
}

#[test]
fn the_hub_closing_a_spoke_waits_for_its_late_close_answer() {
    let hub = Hub::start("close-ours", HB);
    let mut first = RawSpoke::connect(&hub);
    let credential = welcome_credential(&first.enroll_token(&hub.token("edge")).expect("welcome"));
    hub.wait_connected("edge");
    // The same credential on a second socket supersedes the first: the hub closes it.
    let mut second = RawSpoke::connect(&hub);
    assert_welcome(&second.enroll_creds("edge", &credential).expect("welcome"));
    let (code, reason) = next_close(&mut first.ws);
    assert_eq!(code, CloseCode::Normal);
    assert!(reason.contains("superseded"), "{reason}");
    // Answer late (well inside the hub's wait): the answer must land, not hit a reset.
    thread::sleep(Duration::from_millis(300));
    first.ws.flush().expect("the close answer is written");
    // Give a reset (the answer reaching a closed socket) time to come back before reading.
    thread::sleep(Duration::from_millis(200));
    assert_clean_eof(first.ws.get_mut());
    // The new connection serves.
    let remote = hub.wait_connected("edge");
    let caller = thread::spawn(move || remote.list());
    let id = second.next_request_id();
    second.send(&format!(
        r#"{{"type":"resp","id":{id},"payload":{{"boxes":[]}}}}"#
    ));
    assert!(caller.join().expect("join").expect("list").is_empty());
}

#[test]
fn a_hub_closing_on_a_spoke_that_never_answers_shuts_the_socket_soon() {
    let hub = Hub::start("close-silent", HB);
    let mut first = RawSpoke::connect(&hub);
    let credential = welcome_credential(&first.enroll_token(&hub.token("edge")).expect("welcome"));
    hub.wait_connected("edge");
    let mut second = RawSpoke::connect(&hub);
    assert_welcome(&second.enroll_creds("edge", &credential).expect("welcome"));
    // Read the Close at the raw level and never answer: the hub shuts the socket after its
    // brief wait (a liveness bound far above it, far below the 15 s of three heartbeats).
    let tcp = first.ws.get_mut();
    tcp.set_read_timeout(Some(Duration::from_secs(12)))
        .expect("timeout");
    let mut buf = [0u8; 256];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => panic!("the hub did not shut a silent peer's socket: {e}"),
        }
    }
}

/// A fake hub: welcomes the spoke's first enroll, then runs `then` on the socket; reports
/// each accepted connection on the returned channel (`redial`: accepts a second one too).
fn fake_hub(
    redial: bool,
    then: fn(&mut WebSocket<TcpStream>),
) -> (
    String,
    std::sync::mpsc::Receiver<usize>,
    thread::JoinHandle<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("ws://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = thread::spawn(move || {
        for n in 0..1 + usize::from(redial) {
            let (tcp, _) = listener.accept().expect("accept");
            tcp.set_read_timeout(Some(Duration::from_secs(20)))
                .expect("timeout");
            let _ = tx.send(n);
            if n == 1 {
                break;
            }
            let mut ws = tungstenite::accept(tcp).expect("upgrade");
            let _enroll = ws.read().expect("enroll");
            ws.send(Message::text(format!(
                r#"{{"type":"welcome","payload":{{"name":"edge","credential":"{}"}}}}"#,
                "cd".repeat(32)
            )))
            .expect("welcome");
            then(&mut ws);
        }
    });
    (url, rx, handle)
}

fn spoke_against(url: &str, tag: &str) -> SpokeConfig {
    let dir = temp_dir(tag);
    let mut c = SpokeConfig::new(url);
    c.token = Some("ab".repeat(32));
    c.credentials = dir.join("creds.json");
    c.heartbeat = HB;
    c.backoff = (Duration::from_millis(50), Duration::from_millis(200));
    c
}

#[test]
fn the_spoke_echoes_a_close_from_the_hub_and_redials() {
    let (url, accepted, fake) = fake_hub(true, |ws| {
        ws.close(Some(CloseFrame {
            code: CloseCode::Restart,
            reason: "hub restarting".into(),
        }))
        .expect("close");
        assert_eq!(
            next_close(ws),
            (CloseCode::Restart, "hub restarting".into())
        );
        // The server ends TCP first (RFC 6455 §7.1.1); dropping `ws` does.
    });
    let spoke = Spoke::run(spoke_against(&url, "spoke-echo"));
    assert_eq!(accepted.recv_timeout(Duration::from_secs(20)), Ok(0));
    assert_eq!(
        accepted.recv_timeout(Duration::from_secs(20)),
        Ok(1),
        "the spoke did not redial after the hub's close"
    );
    fake.join().expect("fake hub");
    drop(spoke);
}

#[test]
fn a_stopping_spoke_sends_close_and_waits_for_the_hubs_answer() {
    let (url, accepted, fake) = fake_hub(false, |ws| {
        let (code, reason) = next_close(ws);
        assert_eq!(code, CloseCode::Normal);
        assert_eq!(reason, "spoke stopping");
        // Answer late, inside the spoke's wait: the answer is written, then the server ends TCP.
        thread::sleep(Duration::from_millis(300));
        // A server's flush writes the answer, then reports the handshake over.
        match ws.flush() {
            Ok(()) | Err(tungstenite::Error::ConnectionClosed) => {}
            Err(e) => panic!("the close answer was not written: {e}"),
        }
    });
    let spoke = Spoke::run(spoke_against(&url, "spoke-stop"));
    assert_eq!(accepted.recv_timeout(Duration::from_secs(20)), Ok(0));
    // Wait for the welcome to be taken (the credentials file appears), then stop.
    support::wait_for("the spoke welcomed", || {
        spoke.credentials.exists().then_some(())
    });
    spoke.stop.stop();
    spoke.join().expect("a stop ends the run cleanly");
    // The fake hub's own assertions ran; a second connection never came.
    fake.join().expect("fake hub");
    assert!(accepted.try_recv().is_err());
}

#[test]
fn a_spoke_stopping_while_the_hub_plane_runs_leaves_the_hub_at_once() {
    let hub = Hub::start("close-spoke-stop", HB);
    let spoke = Spoke::enroll(&hub, "edge", HB);
    hub.wait_connected("edge");
    spoke.stop.stop();
    spoke.join().expect("clean stop");
    hub.wait_disconnected("edge");
    assert!(hub.registry.get("edge").is_none());
}
