//! The hub's spoke plane as a stranger (or a spoke) reaches it: a real plane on loopback,
//! its HTTP upgrade (tungstenite's handshake parser and the path check), WebSocket framing with
//! the plane's size limits, the enroll message (`Frame::decode`, the enroll payload, join
//! tokens and saved credentials against a real state file), then an enrolled spoke's
//! messages. The first byte picks how the rest is sent:
//! - even: raw bytes on the socket (handshake and frames as the fuzzer writes them);
//! - odd: after a proper upgrade, as WebSocket messages (masked, as a spoke sends them) split
//!   at `0xFF` bytes (never in UTF-8); a message starting `b`, `p` or `c` is sent as binary,
//!   ping or close with the rest, any other as text.
//!
//! `@TOKEN@` becomes a join token valid for this message (re-minted each time), `@CRED@` the
//! saved credential of the enrolled spoke `fuzzspoke`.
//!
//! Checked: the plane accepts every connection and closes it promptly once the peer's input
//! has ended; every text message it sends is a frame; threads do not pile up.
#![no_main]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

mod common;
use common::{replace, threads};

use libfuzzer_sys::fuzz_target;
use llmbox::cluster::plane::{self, PlaneConfig, PlaneHandle};
use llmbox::cluster::proto::Frame;
use llmbox::cluster::registry::Registry;
use llmbox::store::{JoinTokenRecord, SpokeRecord, Store};
use llmbox::util::secret::sha256_hex;
use tungstenite::Message;

const ANSWER_WITHIN: Duration = Duration::from_secs(10);
/// A join token (64 hex digits) for the spoke `fuzzjoin`, re-minted before each input naming it.
const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
/// The saved credential of the enrolled spoke `fuzzspoke`.
const CRED: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

struct Plane {
    addr: SocketAddr,
    store: Arc<Store>,
    _plane: PlaneHandle,
}

static PLANE: LazyLock<Plane> = LazyLock::new(|| {
    let dir = std::env::temp_dir().join(format!("llmbox-fuzz-plane-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let store = Arc::new(Store::open(dir.join("state.json")).expect("store"));
    store
        .update(|s| {
            s.spokes.push(SpokeRecord {
                name: "fuzzspoke".into(),
                credential_hash: sha256_hex(CRED.as_bytes()),
                enrolled: 1,
            })
        })
        .expect("state");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let registry = Arc::new(Registry::new(Arc::clone(&store)));
    let config = PlaneConfig {
        // The inputs arrive one connection at a time from one address.
        max_strangers_per_source: 64,
        ..PlaneConfig::default()
    };
    let plane = plane::start(listener, registry, config).expect("plane");
    Plane {
        addr: plane.addr(),
        store,
        _plane: plane,
    }
});

fn connect(addr: SocketAddr) -> TcpStream {
    let conn = TcpStream::connect(addr).expect("the plane accepts");
    conn.set_read_timeout(Some(ANSWER_WITHIN)).expect("timeout");
    conn.set_write_timeout(Some(ANSWER_WITHIN))
        .expect("timeout");
    conn
}

fn assert_closed_in_time(read: std::io::Result<()>, started: Instant) {
    if let Err(e) = read {
        assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "the plane kept the connection open {:?} after the input ended",
            started.elapsed()
        );
    }
}

/// Raw bytes; the answer is read to its end.
fn raw(addr: SocketAddr, input: &[u8]) {
    let mut conn = connect(addr);
    let _ = conn.write_all(input);
    let _ = conn.shutdown(Shutdown::Write);
    let started = Instant::now();
    let mut answer = Vec::new();
    assert_closed_in_time(conn.read_to_end(&mut answer).map(drop), started);
    if !answer.is_empty() {
        assert!(
            answer.starts_with(b"HTTP/1.1 "),
            "not an HTTP answer: {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(200)])
        );
    }
}

/// A proper upgrade, then `input`'s messages; every message the plane sends is read.
fn messages(addr: SocketAddr, input: &[u8]) {
    let url = format!("ws://{addr}/spoke/connect");
    // The plane closes a socket past its stranger caps at once; the slots of the connections
    // just ended free when their threads finish, which on a loaded machine can lag. A refusal
    // that lasts is a finding (a leaked slot).
    let refused_since = Instant::now();
    let mut ws = loop {
        match tungstenite::client(url.as_str(), connect(addr)) {
            Ok((ws, _)) => break ws,
            Err(e) if refused_since.elapsed() < ANSWER_WITHIN => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!(
                "the plane refused proper upgrades for {:?}: {e} ({} threads)",
                refused_since.elapsed(),
                threads()
            ),
        }
    };
    for piece in input.split(|&b| b == 0xff) {
        let msg = match piece.split_first() {
            Some((b'b', rest)) => Message::Binary(rest.to_vec().into()),
            Some((b'p', rest)) => Message::Ping(rest.to_vec().into()),
            Some((b'c', _)) => {
                let _ = ws.close(None);
                break;
            }
            _ => Message::Text(String::from_utf8_lossy(piece).into_owned().into()),
        };
        if ws.send(msg).is_err() {
            break;
        }
    }
    let _ = ws.flush();
    let _ = ws.get_mut().shutdown(Shutdown::Write);
    let started = Instant::now();
    loop {
        match ws.read() {
            Ok(Message::Text(text)) => {
                let frame = Frame::decode(text.as_str());
                assert!(frame.is_ok(), "the plane sent a non-frame: {text:?}");
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) => {
                assert_closed_in_time(Err(e), started);
                break;
            }
            Err(_) => break,
        }
    }
}

static RUNS: AtomicUsize = AtomicUsize::new(0);

fuzz_target!(|data: &[u8]| {
    let plane = &*PLANE;
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut input = replace(rest, b"@CRED@", CRED.as_bytes());
    if input.windows(7).any(|w| w == b"@TOKEN@") {
        input = replace(&input, b"@TOKEN@", TOKEN.as_bytes());
        let hash = sha256_hex(TOKEN.as_bytes());
        plane
            .store
            .update(|s| {
                s.join_tokens.retain(|t| t.hash != hash);
                s.join_tokens.push(JoinTokenRecord {
                    hash,
                    name: "fuzzjoin".into(),
                    created: 1,
                    expires: i64::MAX,
                });
            })
            .expect("state");
    }
    if mode.is_multiple_of(2) {
        raw(plane.addr, &input);
    } else {
        messages(plane.addr, &input);
    }
    if RUNS.fetch_add(1, Ordering::Relaxed) % 256 == 255 {
        let deadline = Instant::now() + Duration::from_secs(5);
        while threads() > 64 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            threads() <= 64,
            "{} threads after the connections closed",
            threads()
        );
    }
});
