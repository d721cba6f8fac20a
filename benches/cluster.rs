//! `make bench-cluster`: the cost of a verb round trip hub → spoke → hub over loopback, next to
//! a bare tungstenite echo over the same loopback measured in the same run. Prints numbers,
//! asserts nothing.
//!
//! - latency: p50/p99 of 10k sequential calls (`list` on the in-memory manager vs an echo);
//! - throughput: calls per second with 8 and 64 in flight on one socket, against two
//!   baselines: the pipelined echo (one client thread keeps the window full: no thread
//!   hand-off at all) and the channel echo (the hub's shape over the same echo server: callers
//!   on their own threads write their frame under one lock and block, one reader thread hands
//!   each reply to its caller over a channel keyed by id — the wake per call any blocking
//!   caller pays);
//! - memory: RSS growth of a hub process holding 1000 idle enrolled spokes, vs a process
//!   holding 1000 idle bare WebSocket connections (each with a reader thread).
//!
//! The machine is shared and its speed moves by several times within a minute, so latency and
//! throughput are measured in [`ROUNDS`] alternating rounds (echo, then llmbox), each round's
//! ratio printed, and the median ratio reported: a ratio taken from two far-apart runs would
//! measure the neighbours.
//!
//! The memory figures come from child processes (this binary re-run with `BENCH_CHILD`), so
//! the client side of the sockets does not count.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::Shutdown;
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use llmbox::boxes::BoxManager;
use llmbox::cluster::plane::{self, PlaneConfig};
use llmbox::cluster::registry::Registry;
use llmbox::store::{JoinTokenRecord, Store};
use llmbox::util::secret::{random_hex_32, sha256_hex};
use llmbox::util::unix_now;
use tungstenite::protocol::Role;
use tungstenite::{Message, WebSocket};

mod common;
use common::{BenchHub, REQ, echo_client, pct, print_latency, rss_kib, serve_echo};

const SEQUENTIAL: usize = 10_000;
const PIPELINED: usize = 20_000;
/// Alternating baseline/llmbox rounds; each round does 1/ROUNDS of the calls.
const ROUNDS: usize = 5;
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

    println!(
        "\n== round trip, {SEQUENTIAL} sequential calls (loopback), {ROUNDS} alternating rounds =="
    );
    let (mut base, mut ours, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        let b = echo_sequential(echo_addr, SEQUENTIAL / ROUNDS);
        let o = remote_sequential(&hub.remote, SEQUENTIAL / ROUNDS);
        let (b50, b99, o50, o99) = (pct(&b, 50), pct(&b, 99), pct(&o, 50), pct(&o, 99));
        let ratio = (o50 / b50, o99 / b99);
        println!(
            "round {round}: echo p50 {b50:>7.1} µs p99 {b99:>8.1} µs | llmbox p50 {o50:>7.1} µs p99 {o99:>8.1} µs | x{:.2}, x{:.2}",
            ratio.0, ratio.1
        );
        base.extend(b);
        ours.extend(o);
        ratios.push(ratio);
    }
    print_latency("bare tungstenite echo", &base);
    print_latency("llmbox list hub->spoke->hub", &ours);
    println!(
        "overhead, median of the rounds' ratios: p50 x{:.2}, p99 x{:.2}",
        median(ratios.iter().map(|r| r.0)),
        median(ratios.iter().map(|r| r.1))
    );

    for inflight in [8, 64] {
        println!(
            "\n== throughput, {inflight} in flight on one socket, {PIPELINED} calls, {ROUNDS} alternating rounds =="
        );
        let (mut ratios, mut channel_ratios, mut shape) = (Vec::new(), Vec::new(), Vec::new());
        for round in 1..=ROUNDS {
            let b = echo_pipelined(echo_addr, inflight, PIPELINED / ROUNDS);
            let c = channel_echo(echo_addr, inflight, PIPELINED / ROUNDS);
            let o = remote_pipelined(&hub.remote, inflight, PIPELINED / ROUNDS);
            println!(
                "round {round}: echo {b:>9.0} msg/s | channel echo {c:>9.0} calls/s | llmbox {o:>9.0} calls/s | x{:.2} of echo, x{:.2} of channel echo",
                o / b,
                o / c
            );
            ratios.push(o / b);
            channel_ratios.push(o / c);
            shape.push(c / b);
        }
        println!(
            "llmbox list hub->spoke->hub, median of the rounds: x{:.2} of the pipelined echo, x{:.2} of the channel echo",
            median(ratios),
            median(channel_ratios)
        );
        println!(
            "the channel echo itself (the calling shape's bound): x{:.2} of the pipelined echo",
            median(shape)
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

/// The middle value (the upper one of an even count).
fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.into_iter().collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn echo_sequential(addr: std::net::SocketAddr, calls: usize) -> Vec<Duration> {
    let mut ws = echo_client(addr);
    (0..calls)
        .map(|_| {
            let t = Instant::now();
            ws.send(Message::text(REQ)).expect("send");
            ws.read().expect("echo");
            t.elapsed()
        })
        .collect()
}

fn echo_pipelined(addr: std::net::SocketAddr, window: usize, calls: usize) -> f64 {
    let mut ws = echo_client(addr);
    let start = Instant::now();
    let (mut sent, mut got) = (0, 0);
    while got < calls {
        while sent < calls && sent - got < window {
            ws.write(Message::text(REQ)).expect("write");
            sent += 1;
        }
        ws.flush().expect("flush");
        ws.read().expect("echo");
        got += 1;
    }
    calls as f64 / start.elapsed().as_secs_f64()
}

/// The hub's calling shape over a bare echo connection (see the module doc).
struct ChannelEcho {
    writer: Mutex<WebSocket<TcpStream>>,
    pending: Mutex<HashMap<u64, mpsc::SyncSender<()>>>,
    next: AtomicU64,
}

impl ChannelEcho {
    fn connect(addr: std::net::SocketAddr) -> Arc<ChannelEcho> {
        let ws = echo_client(addr);
        let tcp = ws.get_ref().try_clone().expect("clone the socket");
        let echo = Arc::new(ChannelEcho {
            writer: Mutex::new(ws),
            pending: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
        });
        let reader = Arc::clone(&echo);
        thread::spawn(move || {
            let mut ws = WebSocket::from_raw_socket(tcp, Role::Client, None);
            while let Ok(msg) = ws.read() {
                let id = msg.to_text().ok().and_then(|t| t.parse::<u64>().ok());
                let waiter = id.and_then(|id| reader.pending.lock().expect("pending").remove(&id));
                if let Some(tx) = waiter {
                    let _ = tx.send(());
                }
            }
        });
        echo
    }

    fn call(&self) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::sync_channel(1);
        self.pending.lock().expect("pending").insert(id, tx);
        self.writer
            .lock()
            .expect("writer")
            .send(Message::text(id.to_string()))
            .expect("send");
        rx.recv().expect("echo");
    }
}

impl Drop for ChannelEcho {
    fn drop(&mut self) {
        // Ends the reader thread.
        if let Ok(ws) = self.writer.lock() {
            let _ = ws.get_ref().shutdown(Shutdown::Both);
        }
    }
}

fn channel_echo(addr: std::net::SocketAddr, inflight: usize, calls: usize) -> f64 {
    let echo = ChannelEcho::connect(addr);
    in_flight(inflight, calls, move || echo.call())
}

/// Calls per second of `call` made `calls` times from `inflight` threads.
fn in_flight(inflight: usize, calls: usize, call: impl Fn() + Send + Sync + 'static) -> f64 {
    let (call, left) = (Arc::new(call), Arc::new(AtomicUsize::new(calls)));
    let start = Instant::now();
    let workers: Vec<_> = (0..inflight)
        .map(|_| {
            let (call, left) = (Arc::clone(&call), Arc::clone(&left));
            thread::spawn(move || {
                while left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    call();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    calls as f64 / start.elapsed().as_secs_f64()
}

// ---------- llmbox hub + spoke

fn remote_sequential(remote: &Arc<dyn BoxManager>, calls: usize) -> Vec<Duration> {
    (0..calls)
        .map(|_| {
            let t = Instant::now();
            remote.list().expect("list");
            t.elapsed()
        })
        .collect()
}

fn remote_pipelined(remote: &Arc<dyn BoxManager>, inflight: usize, calls: usize) -> f64 {
    let remote = Arc::clone(remote);
    in_flight(inflight, calls, move || {
        remote.list().expect("list");
    })
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
