//! The hub's HTTP front as a stranger reaches it: the fuzzer's bytes are written to a real
//! `HttpFront` (the vendored tiny_http: request line, headers, limits, body framing, keep-alive
//! pipelining; then the hub's routing, Host/Origin checks, `/mcp`, the activation page and its
//! form, `/metrics`, `/healthz`) over loopback, the write side is shut, and the answer read.
//! Each input goes to two fronts: one in the open loopback mode (no API keys, no sign-in) and
//! one guarded (an API key, GitHub sign-in). `@TOKEN@` in the input becomes the page token of
//! a live box, so the activation routes are reached past the token check; `@KEY@` the guarded
//! front's API key, so its `/mcp` is reached past `Authorization`.
//!
//! Checked: the front answers every connection and closes it promptly once the peer's input
//! has ended (a hang is a finding: it holds a thread and two descriptors); an answer is
//! HTTP/1.x and never a 500; threads do not pile up.
#![no_main]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

mod common;
use common::{replace, threads};

use libfuzzer_sys::fuzz_target;
use llmbox::boxes::memory::MemoryBoxManager;
use llmbox::cluster::{LOCAL_SPOKE, SpokeDirectory, StaticDirectory};
use llmbox::fuzzing::McpHeaders;
use llmbox::hub::apikeys;
use llmbox::hub::apikeys::Caller;
use llmbox::hub::auth::Access;
use llmbox::hub::http::HttpFront;
use llmbox::hub::signin::{GithubConfig, Rules, Signin, SigninConfig};
use llmbox::hub::{Hub, HubConfig};
use llmbox::store::Store;

/// Longer than any deadline the front keeps once the peer's input has ended.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

struct Front {
    addr: SocketAddr,
    token: String,
    key: String,
    _front: HttpFront,
}

/// A front over a fresh hub with one live box. `guarded`: an API key in the state (so `/mcp`
/// wants `Authorization: Bearer`) and GitHub sign-in on the web pages (its endpoints on a
/// dead loopback port: nothing leaves the machine), so cookies, `/signin…`, `/admin` and the
/// callback's state check are reached; otherwise the open loopback mode without keys.
fn start(guarded: bool) -> Front {
    let tag = if guarded { "guarded" } else { "open" };
    let dir = std::env::temp_dir().join(format!("llmbox-fuzz-http-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let store = Arc::new(Store::open(dir.join("state.json")).expect("store"));
    let spokes = StaticDirectory::default().with(
        LOCAL_SPOKE,
        Arc::new(MemoryBoxManager::new("fuzz-local", 8)),
    );
    let mut config = HubConfig::new("http://hub.test");
    config.box_image = "img".into();
    let hub = Arc::new(Hub::new(
        config,
        store,
        Arc::new(spokes) as Arc<dyn SpokeDirectory>,
    ));
    // One live box whose activation page the inputs can name.
    let create = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"create_llmbox","arguments":{"box_id":"fuzzbox1"}}}"#;
    let (_, reply) = llmbox::fuzzing::mcp(&hub, &Caller::Anonymous, create, &McpHeaders::default());
    let reply = reply.expect("create answered");
    let url = reply["result"]["structuredContent"]["auth_url"]
        .as_str()
        .unwrap_or_else(|| panic!("no auth_url in {reply}"));
    let token = url.rsplit('/').next().expect("token").to_string();
    let mut access = Access::default();
    let mut key = String::new();
    if guarded {
        key = apikeys::create_key(hub.store(), "fuzz", None, true)
            .expect("key")
            .0;
        let dead = "http://127.0.0.1:1".to_string();
        let signin = Signin::start(SigninConfig {
            public_url: "http://hub.test".into(),
            oidc: Vec::new(),
            github: Some(GithubConfig {
                web_base: dead.clone(),
                api_base: dead,
                ..GithubConfig::new("fuzz-client", "fuzz-secret")
            }),
            rules: Rules {
                domains: vec!["example.test".into()],
                admins: vec!["admin@example.test".into()],
                ..Rules::default()
            },
            session_ttl: Duration::from_secs(600),
            spoke_url: "ws://127.0.0.1:1".into(),
        })
        .expect("signin");
        access.signin = Some(Arc::new(signin));
    }
    let front = HttpFront::start_with_access(hub, "127.0.0.1:0", access).expect("front");
    Front {
        addr: front.local_addr(),
        token,
        key,
        _front: front,
    }
}

static OPEN: LazyLock<Front> = LazyLock::new(|| start(false));
static GUARDED: LazyLock<Front> = LazyLock::new(|| start(true));

static RUNS: AtomicUsize = AtomicUsize::new(0);

/// Writes `data` to `front`, shuts the write side, and checks the answer.
fn probe(front: &Front, data: &[u8]) {
    let input = replace(data, b"@TOKEN@", front.token.as_bytes());
    let input = replace(&input, b"@KEY@", front.key.as_bytes());
    let mut conn = TcpStream::connect(front.addr).expect("the front accepts");
    conn.set_read_timeout(Some(ANSWER_WITHIN)).expect("timeout");
    conn.set_write_timeout(Some(ANSWER_WITHIN))
        .expect("timeout");
    // The front may answer and close before reading everything (431, 413, 400): not an error.
    let _ = conn.write_all(&input);
    let _ = conn.shutdown(Shutdown::Write);
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = conn.read_to_end(&mut answer);
    if let Err(e) = &read {
        assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "the front kept the connection open {:?} after the input ended ({} bytes answered)",
            started.elapsed(),
            answer.len()
        );
    }
    if !answer.is_empty() {
        assert!(
            answer.starts_with(b"HTTP/1.1 ") || answer.starts_with(b"HTTP/1.0 "),
            "not an HTTP answer: {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(200)])
        );
        let status = &answer[9..answer.len().min(12)];
        assert_ne!(
            status,
            b"500",
            "{}",
            String::from_utf8_lossy(&answer[..answer.len().min(2000)])
        );
    }
}

fuzz_target!(|data: &[u8]| {
    probe(&OPEN, data);
    probe(&GUARDED, data);
    // Connection threads end shortly after their socket closes; a pile-up is a leak.
    if RUNS.fetch_add(1, Ordering::Relaxed) % 256 == 255 {
        let deadline = Instant::now() + Duration::from_secs(5);
        while threads() > 96 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            threads() <= 96,
            "{} threads after the connections closed",
            threads()
        );
    }
});
