//! `make bench-cluster`: the cost of a verb round trip hub → spoke → hub over loopback, next to
//! a bare tungstenite echo over the same loopback measured in the same run. Prints numbers,
//! asserts nothing.
//!
//! - latency: p50/p99 of 10k sequential calls (`list` on the in-memory manager vs an echo);
//! - throughput: calls per second with 8 and 64 in flight on one socket;
//! - memory: RSS growth of a hub process holding 1000 idle enrolled spokes, vs a process
//!   holding 1000 idle bare WebSocket connections (each with a reader thread).
//!
//! The memory figures come from child processes (this binary re-run with `BENCH_CHILD`), so
//! the client side of the sockets does not count.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use llmbox::boxes::BoxManager;
use llmbox::cluster::plane::{self, PlaneConfig};
use llmbox::cluster::registry::Registry;
use llmbox::store::{JoinTokenRecord, Store};
use llmbox::util::secret::{random_hex_32, sha256_hex};
use llmbox::util::unix_now;
use tungstenite::Message;

mod common;
use common::{BenchHub, REQ, echo_client, pct, print_latency, rss_kib, serve_echo};

const SEQUENTIAL: usize = 10_000;
const PIPELINED: usize = 20_000;
const IDLE_SPOKES: usize = 1000;

fn main() {
    if let Ok(mode) = std::env::var("BENCH_CHILD") {
        child(&mode);
        return;
    }
    // `cargo test --all-targets` runs this binary too, without `--bench`: measure nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("cluster benchmark: run it with `make bench-cluster`");
        return;
    }
    match llmbox::util::rlimit::raise_nofile_limit() {
        Ok(n) => println!("open-file limit: {n}"),
        Err(e) => println!("cannot raise the open-file limit: {e}"),
    }
    let echo_listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let echo_addr = echo_listener.local_addr().expect("addr");
    serve_echo(echo_listener);
    let hub =
        BenchHub::start(&std::env::temp_dir().join(format!("llmbox-bench-{}", std::process::id())));

    println!("\n== round trip, {SEQUENTIAL} sequential calls (loopback) ==");
    let base = echo_sequential(echo_addr);
    let ours = remote_sequential(&hub.remote);
    print_latency("bare tungstenite echo", &base);
    print_latency("llmbox list hub->spoke->hub", &ours);
    println!(
        "overhead: p50 x{:.2}, p99 x{:.2}",
        pct(&ours, 50) / pct(&base, 50),
        pct(&ours, 99) / pct(&base, 99)
    );

    for inflight in [8, 64] {
        println!("\n== throughput, {inflight} in flight on one socket, {PIPELINED} calls ==");
        let b = echo_pipelined(echo_addr, inflight);
        let o = remote_pipelined(&hub.remote, inflight);
        println!("bare tungstenite echo:        {b:>10.0} msg/s");
        println!(
            "llmbox list hub->spoke->hub:  {o:>10.0} calls/s  (x{:.2} of baseline)",
            o / b
        );
    }

    println!("\n== memory: {IDLE_SPOKES} idle connections (child process RSS growth) ==");
    let base = idle_rss("echo");
    let ours = idle_rss("hub");
    println!(
        "bare tungstenite + reader thread: {:>8.1} MiB total, {:>6.1} KiB per connection",
        base as f64 / 1024.0,
        base as f64 / IDLE_SPOKES as f64
    );
    println!(
        "llmbox hub, enrolled spokes:      {:>8.1} MiB total, {:>6.1} KiB per spoke (x{:.2})",
        ours as f64 / 1024.0,
        ours as f64 / IDLE_SPOKES as f64,
        ours as f64 / base.max(1) as f64
    );
    hub.stop.stop();
}

// ---------- bare tungstenite echo baseline

fn echo_sequential(addr: std::net::SocketAddr) -> Vec<Duration> {
    let mut ws = echo_client(addr);
    (0..SEQUENTIAL)
        .map(|_| {
            let t = Instant::now();
            ws.send(Message::text(REQ)).expect("send");
            ws.read().expect("echo");
            t.elapsed()
        })
        .collect()
}

fn echo_pipelined(addr: std::net::SocketAddr, window: usize) -> f64 {
    let mut ws = echo_client(addr);
    let start = Instant::now();
    let (mut sent, mut got) = (0, 0);
    while got < PIPELINED {
        while sent < PIPELINED && sent - got < window {
            ws.write(Message::text(REQ)).expect("write");
            sent += 1;
        }
        ws.flush().expect("flush");
        ws.read().expect("echo");
        got += 1;
    }
    PIPELINED as f64 / start.elapsed().as_secs_f64()
}

// ---------- llmbox hub + spoke

fn remote_sequential(remote: &Arc<dyn BoxManager>) -> Vec<Duration> {
    (0..SEQUENTIAL)
        .map(|_| {
            let t = Instant::now();
            remote.list().expect("list");
            t.elapsed()
        })
        .collect()
}

fn remote_pipelined(remote: &Arc<dyn BoxManager>, inflight: usize) -> f64 {
    let left = Arc::new(AtomicUsize::new(PIPELINED));
    let start = Instant::now();
    let workers: Vec<_> = (0..inflight)
        .map(|_| {
            let (remote, left) = (Arc::clone(remote), Arc::clone(&left));
            thread::spawn(move || {
                while left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    remote.list().expect("list");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    PIPELINED as f64 / start.elapsed().as_secs_f64()
}

// ---------- idle memory (child processes)

/// Starts a child in `mode`, opens IDLE_SPOKES idle connections to it, returns its RSS growth.
fn idle_rss(mode: &str) -> u64 {
    let dir = std::env::temp_dir().join(format!("llmbox-bench-idle-{}-{mode}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let state = dir.join("state.json");
    let mut tokens = Vec::new();
    if mode == "hub" {
        let store = Store::open(&state).expect("store");
        let now = unix_now();
        let mut records = Vec::new();
        for i in 0..IDLE_SPOKES {
            let t = random_hex_32().expect("random");
            records.push(JoinTokenRecord {
                hash: sha256_hex(t.as_bytes()),
                name: format!("idle-{i}"),
                created: now,
                expires: now + 600,
            });
            tokens.push(t);
        }
        store
            .update(|s| s.join_tokens.extend(records))
            .expect("tokens");
    }
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .env("BENCH_CHILD", format!("{mode}:{}", state.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("child");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("addr");
    let addr = line.trim().to_string();
    thread::sleep(Duration::from_millis(200));
    let before = rss_kib(child.id());
    let mut conns = Vec::new();
    for token in tokens
        .iter()
        .map(Some)
        .chain(std::iter::repeat(None))
        .take(IDLE_SPOKES)
    {
        let tcp = TcpStream::connect(&addr).expect("connect");
        let (mut ws, _) = tungstenite::client::client(format!("ws://{addr}/spoke/connect"), tcp)
            .expect("upgrade");
        if let Some(token) = token {
            ws.send(Message::text(format!(
                r#"{{"type":"enroll","payload":{{"join_token":"{token}"}}}}"#
            )))
            .expect("enroll");
            let welcome = ws.read().expect("welcome");
            assert!(
                welcome.to_text().unwrap_or("").contains("welcome"),
                "{welcome:?}"
            );
        } else {
            ws.send(Message::text(REQ)).expect("send");
            ws.read().expect("echo");
        }
        conns.push(ws);
    }
    thread::sleep(Duration::from_millis(500));
    let after = rss_kib(child.id());
    drop(child.stdin.take());
    let _ = child.wait();
    drop(conns);
    let _ = std::fs::remove_dir_all(dir);
    after.saturating_sub(before)
}

fn child(mode: &str) {
    let _ = llmbox::util::rlimit::raise_nofile_limit();
    let (kind, state) = mode.split_once(':').expect("mode");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    if kind == "hub" {
        let store = Arc::new(Store::open(state).expect("store"));
        let registry = Arc::new(Registry::new(store));
        let config = PlaneConfig {
            heartbeat: Duration::from_secs(600),
            ..PlaneConfig::default()
        };
        std::mem::forget(plane::start(listener, registry, config).expect("plane"));
    } else {
        // Bare tungstenite: one reader thread per socket, same buffers and stack size.
        serve_echo(listener);
    }
    println!("{addr}");
    let _ = std::io::stdout().flush();
    // Serve until the parent closes stdin.
    common::wait_for_stdin_close();
}
