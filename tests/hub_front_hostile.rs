//! The HTTP front under attack (issue 10): each row of the issue's table, tried on loopback
//! against a real `llmbox hub --no-local` process (lowered limits where the attack needs
//! them), asserting the listener still answers and that descriptors, threads and memory stay
//! bounded. Every hub is killed and its directory removed when its test ends.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::free_port;

/// A hub process on free loopback ports.
struct HubProc {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl HubProc {
    /// Starts `llmbox hub --no-local`, run through `wrap` (e.g. `prlimit ... --`).
    fn start(tag: &str, wrap: &[&str], extra: &[&str]) -> HubProc {
        let dir = support::temp_dir(&format!("front-{tag}"));
        // A hub run as another user (the thread-limit row) writes its state here too.
        let _ = Command::new("chmod").arg("777").arg(&dir).status();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let plane = format!("127.0.0.1:{}", free_port());
        let bin = env!("CARGO_BIN_EXE_llmbox");
        let (program, args): (&str, Vec<String>) = match wrap.split_first() {
            Some((first, rest)) => (
                first,
                rest.iter()
                    .map(|s| s.to_string())
                    .chain([bin.to_string()])
                    .collect(),
            ),
            None => (bin, Vec::new()),
        };
        let child = Command::new(program)
            .args(args)
            .args(["hub", "--no-local", "--log-level", "warn"])
            .args(["--listen", &addr.to_string(), "--spoke-listen", &plane])
            .arg("--state")
            .arg(dir.join("state.json"))
            .args(extra)
            .env("MALLOC_ARENA_MAX", "2")
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(dir.join("hub.log"))
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            )
            .spawn()
            .expect("spawn hub");
        let hub = HubProc { child, addr, dir };
        let up = Instant::now();
        while get(hub.addr, "/healthz").map(|r| r.0) != Some(200) {
            assert!(
                up.elapsed() < Duration::from_secs(20),
                "hub never came up: {}",
                hub.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        hub
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("hub.log")).unwrap_or_default()
    }

    /// The hub's own pid (a wrapper execs into it, so it is the child's).
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    fn status_field(&self, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    fn threads(&self) -> u64 {
        self.status_field("Threads:")
    }

    fn rss_mib(&self) -> u64 {
        self.status_field("VmRSS:") / 1024
    }

    /// Waits until `/healthz` answers 200 again, within `limit`.
    fn answers_within(&self, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if get(self.addr, "/healthz").map(|r| r.0) == Some(200) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Waits for `cond` on this hub within `limit`.
    fn settles(&self, limit: Duration, cond: impl Fn(&HubProc) -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if cond(self) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        cond(self)
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for HubProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends `bytes` on a fresh connection and reads the answer to its end (10 s at most).
fn exchange(addr: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(bytes).ok()?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    Some(buf)
}

/// Status and whole answer of `GET path` with `Connection: close`.
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let buf = exchange(addr, req.as_bytes())?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.get(9..12)?.parse().ok()?;
    Some((status, text))
}

fn status_of(answer: &[u8]) -> Option<u16> {
    String::from_utf8_lossy(answer).get(9..12)?.parse().ok()
}

fn mcp_request(addr: SocketAddr, body: &str) -> Vec<u8> {
    format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn the_h2c_preface_is_answered_505_and_leaks_nothing() {
    let hub = HubProc::start("h2c", &[], &[]);
    let answer = exchange(hub.addr, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").expect("an answer");
    assert_eq!(status_of(&answer), Some(505), "{answer:?}");
    let (fds, threads) = (hub.fds(), hub.threads());
    // Scanners send the preface and hang up at once; each used to leak a thread and 2 fds.
    for _ in 0..2000 {
        if let Ok(mut s) = TcpStream::connect(hub.addr) {
            let _ = s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        }
    }
    for version in ["HTTP/0.9", "HTTP/3", "HTTP/1.2"] {
        let answer =
            exchange(hub.addr, format!("GET / {version}\r\n\r\n").as_bytes()).expect("an answer");
        assert_eq!(status_of(&answer), Some(505), "{version}");
    }
    assert!(
        hub.settles(Duration::from_secs(10), |h| h.fds() <= fds + 8
            && h.threads() <= threads + 8),
        "fds {} (were {fds}), threads {} (were {threads})",
        hub.fds(),
        hub.threads()
    );
    assert!(hub.answers_within(Duration::from_secs(5)));
}

#[test]
fn descriptor_exhaustion_meets_the_connection_cap_not_a_dead_listener() {
    // At nofile 256 the front's share is 21 connections; 300 idle ones exhaust neither it nor
    // the process: the rest get a fast 503 and the listener lives.
    let hub = HubProc::start("nofile", &["prlimit", "--nofile=256:256", "--"], &[]);
    let mut idle = Vec::new();
    let mut refused = 0;
    for _ in 0..300 {
        let Ok(mut s) = TcpStream::connect(hub.addr) else {
            continue;
        };
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let mut head = [0u8; 12];
        match s.read_exact(&mut head) {
            Ok(()) if &head == b"HTTP/1.1 503" => refused += 1,
            _ => idle.push(s),
        }
    }
    assert!(refused >= 250, "only {refused} refused");
    assert!(hub.fds() < 200, "{} fds", hub.fds());
    let busy = get(hub.addr, "/healthz").expect("an answer");
    assert_eq!(busy.0, 503);
    assert!(busy.1.contains("Retry-After: 1"), "{}", busy.1);
    drop(idle);
    assert!(hub.answers_within(Duration::from_secs(5)));
}

#[test]
fn at_the_thread_limit_connections_are_dropped_and_the_front_lives() {
    // RLIMIT_NPROC does not bind root: the hub runs as nobody, alone under that user's count.
    let mut hub = HubProc::start(
        "nproc",
        &[
            "prlimit",
            "--nproc=120:120",
            "--",
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ],
        &[],
    );
    let mut slow = Vec::new();
    for _ in 0..300 {
        if let Ok(mut s) = TcpStream::connect(hub.addr) {
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ");
            slow.push(s);
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(hub.alive(), "the hub died: {}", hub.log());
    assert!(hub.threads() <= 120, "{} threads", hub.threads());
    drop(slow);
    assert!(hub.answers_within(Duration::from_secs(10)), "{}", hub.log());
    let log = hub.log();
    assert!(!log.contains("panicked"), "{log}");
    // The attack did reach the limit: connections were dropped for want of a thread.
    assert!(log.contains("cannot start a thread"), "{log}");
}

#[test]
fn a_huge_batch_is_one_json_rpc_error_not_gigabytes() {
    let hub = HubProc::start("batch", &[], &[]);
    let item = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let batch = |n: usize| format!("[{}]", vec![item; n].join(","));
    let huge = batch(80_000);
    assert!(huge.len() < 4 << 20);
    let answer = exchange(hub.addr, &mcp_request(hub.addr, &huge)).expect("an answer");
    let text = String::from_utf8_lossy(&answer);
    assert_eq!(status_of(&answer), Some(400), "{text}");
    assert!(
        text.contains("-32600") && text.contains("at most 64"),
        "{text}"
    );
    let ok = exchange(hub.addr, &mcp_request(hub.addr, &batch(64))).expect("an answer");
    assert_eq!(status_of(&ok), Some(200));
    assert!(hub.rss_mib() < 200, "{} MiB", hub.rss_mib());
}

#[test]
fn heads_are_bounded_in_bytes_and_lines() {
    let hub = HubProc::start("head", &[], &[]);
    let rss = hub.rss_mib();
    // A 16 MiB header line: refused after 64 KiB, never buffered.
    let mut line = b"GET /healthz HTTP/1.1\r\nX-Big: ".to_vec();
    line.resize(16 << 20, b'a');
    let mut s = TcpStream::connect(hub.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let _ = s.write_all(&line);
    let mut head = [0u8; 12];
    s.read_exact(&mut head).expect("an answer");
    assert_eq!(&head, b"HTTP/1.1 431");
    // A GET with Host, `extra` short headers and Connection: close.
    let with_headers = |extra: usize| {
        let mut req = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n", hub.addr).into_bytes();
        for i in 0..extra {
            req.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        req.extend_from_slice(b"Connection: close\r\n\r\n");
        status_of(&exchange(hub.addr, &req).expect("answer"))
    };
    // A thousand short headers are refused; 101 are refused, 100 are fine.
    assert_eq!(with_headers(1000), Some(431));
    assert_eq!(with_headers(99), Some(431));
    assert_eq!(with_headers(98), Some(200));
    assert!(
        hub.rss_mib() < rss + 32,
        "{} MiB (was {rss})",
        hub.rss_mib()
    );
}

#[test]
fn stalled_bodies_hold_no_one_else_up_and_end_at_the_idle_deadline() {
    let hub = HubProc::start("stalled", &[], &[]);
    let threads = hub.threads();
    let mut stalled = Vec::new();
    for length in ["1024", "100000000000"] {
        for _ in 0..64 {
            let mut s = TcpStream::connect(hub.addr).expect("connect");
            let head = format!(
                "POST /mcp HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n",
                hub.addr
            );
            s.write_all(head.as_bytes()).expect("write");
            stalled.push(s);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(get(hub.addr, "/healthz").map(|r| r.0), Some(200));
    let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    assert_eq!(
        status_of(&exchange(hub.addr, &mcp_request(hub.addr, list)).expect("answer")),
        Some(200)
    );
    let page = get(hub.addr, &format!("/auth/{}", "ab".repeat(32))).expect("answer");
    assert_eq!(page.0, 404);
    // The 100 GB ones were answered 413 and closed at once; the others end at the body idle
    // deadline (10 s), answered 408.
    let start = Instant::now();
    for mut s in stalled {
        s.set_read_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        let status = status_of(&buf);
        assert!(matches!(status, Some(408 | 413)), "{status:?}");
    }
    assert!(start.elapsed() < Duration::from_secs(14));
    assert!(
        hub.settles(Duration::from_secs(5), |h| h.threads() <= threads + 4),
        "{} threads (were {threads})",
        hub.threads()
    );
}

#[test]
fn slow_heads_are_capped_refused_fast_and_cut_at_the_head_deadline() {
    // nofile 1024: 128 connections for the front.
    let hub = HubProc::start("slowloris", &["prlimit", "--nofile=1024:1024", "--"], &[]);
    let mut slow = Vec::new();
    for _ in 0..600 {
        if let Ok(mut s) = TcpStream::connect(hub.addr) {
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ");
            slow.push(s);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(hub.threads() < 128 + 40, "{} threads", hub.threads());
    assert!(hub.fds() < 2 * 128 + 40, "{} fds", hub.fds());
    // Past the cap: a fast 503, not a queue.
    let t = Instant::now();
    let busy = get(hub.addr, "/healthz").expect("an answer");
    assert_eq!(busy.0, 503, "{}", busy.1);
    assert!(t.elapsed() < Duration::from_secs(2));
    // Trickling one byte a second does not extend the head deadline (10 s).
    let trickle_until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < trickle_until {
        for s in slow.iter_mut().take(8) {
            let _ = s.write_all(b"a");
        }
        std::thread::sleep(Duration::from_secs(1));
        if get(hub.addr, "/healthz").map(|r| r.0) == Some(200) {
            break;
        }
    }
    assert!(hub.answers_within(Duration::from_secs(3)));
}

#[test]
fn a_burst_of_keep_alive_connections_is_all_served() {
    let hub = HubProc::start("burst", &[], &[]);
    let mut conns: Vec<TcpStream> = (0..64)
        .map(|_| TcpStream::connect(hub.addr).expect("connect"))
        .collect();
    let req = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", hub.addr);
    for round in 0..2 {
        for s in &mut conns {
            s.write_all(req.as_bytes()).expect("write");
        }
        for s in &mut conns {
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let mut buf = [0u8; 512];
            let n = s.read(&mut buf).expect("every connection answered");
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "round {round}");
        }
    }
}

#[test]
fn keep_alive_answers_go_out_without_a_delayed_ack_stall() {
    let hub = HubProc::start("nodelay", &[], &[]);
    let mut s = TcpStream::connect(hub.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let req = format!(
        "POST /mcp HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        hub.addr,
        body.len()
    );
    let read_one = |s: &mut TcpStream| {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16 << 10];
        loop {
            let n = s.read(&mut chunk).expect("read");
            assert!(n > 0, "closed");
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf);
            if let Some(end) = text.find("\r\n\r\n") {
                let len: usize = text[..end]
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .and_then(|v| v.trim().parse().ok())
                    .expect("a length");
                if buf.len() >= end + 4 + len {
                    assert!(len > 1024);
                    return;
                }
            }
        }
    };
    s.write_all(req.as_bytes()).expect("write");
    read_one(&mut s);
    let start = Instant::now();
    for _ in 0..20 {
        s.write_all(req.as_bytes()).expect("write");
        read_one(&mut s);
    }
    // With Nagle and delayed ACK each answer over 1 KiB took ~44 ms.
    let each = start.elapsed() / 20;
    assert!(each < Duration::from_millis(20), "{each:?} per answer");
}

#[test]
fn ambiguous_body_framing_is_400_and_closed() {
    let hub = HubProc::start("framing", &[], &[]);
    let a = hub.addr;
    for (why, head) in [
        ("two lengths", "Content-Length: 5\r\nContent-Length: 6\r\n"),
        (
            "length and chunked",
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        ),
        ("gzip coding", "Transfer-Encoding: gzip\r\n"),
        ("chunked twice", "Transfer-Encoding: chunked, chunked\r\n"),
        ("not a number", "Content-Length: 5x\r\n"),
        ("negative", "Content-Length: -1\r\n"),
    ] {
        // A second request follows: a server that misread the framing would answer it.
        let req = format!(
            "POST /mcp HTTP/1.1\r\nHost: {a}\r\nContent-Type: application/json\r\n{head}\r\nhello\r\nGET /healthz HTTP/1.1\r\nHost: {a}\r\n\r\n"
        );
        let answer = exchange(a, req.as_bytes()).expect("an answer");
        let text = String::from_utf8_lossy(&answer);
        assert_eq!(status_of(&answer), Some(400), "{why}: {text}");
        assert_eq!(text.matches("HTTP/1.1").count(), 1, "{why}: {text}");
        assert!(text.contains("Connection: close"), "{why}: {text}");
    }
    // A non-ASCII head byte is a 400 too, not a silent close.
    let latin = b"GET /healthz HTTP/1.1\r\nX-Name: caf\xe9\r\n\r\n";
    assert_eq!(status_of(&exchange(a, latin).expect("answer")), Some(400));
    // Equal repeated lengths are one length.
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let ok = format!(
        "POST /mcp HTTP/1.1\r\nHost: {a}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {n}\r\nContent-Length: {n}\r\n\r\n{ping}",
        n = ping.len()
    );
    assert_eq!(
        status_of(&exchange(a, ok.as_bytes()).expect("answer")),
        Some(200)
    );
}

#[test]
fn foreign_host_names_are_misdirected() {
    let hub = HubProc::start("host", &[], &["--public-url", "https://hub.example"]);
    let a = hub.addr;
    let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let with_host = |host: &str, path: &str| {
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{list}",
            list.len()
        );
        status_of(&exchange(a, req.as_bytes()).expect("answer"))
    };
    for host in ["evil.example", "hub.example.evil.example", "x"] {
        assert_eq!(with_host(host, "/mcp"), Some(421), "{host}");
        assert_eq!(
            with_host(host, &format!("/auth/{}", "ab".repeat(32))),
            Some(421)
        );
    }
    for host in [
        "hub.example",
        "HUB.EXAMPLE:443",
        "localhost:1",
        &a.to_string(),
        "[::1]",
    ] {
        assert_eq!(with_host(host, "/mcp"), Some(200), "{host}");
    }
    // Probes reach /healthz by any name.
    let req = "GET /healthz HTTP/1.1\r\nHost: lb.internal\r\nConnection: close\r\n\r\n";
    assert_eq!(
        status_of(&exchange(a, req.as_bytes()).expect("answer")),
        Some(200)
    );
}

#[test]
fn mutated_heads_get_a_status_or_a_close_and_the_front_lives() {
    // A seeded stand-in for a fuzzer on the head parser and body framing: valid requests
    // with random damage, each answered by a well-formed status (never 500) or a close.
    use llmbox::util::seeded::SeededRng;
    let hub = HubProc::start("mutate", &[], &[]);
    let a = hub.addr;
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let seeds = [
        format!("GET /healthz HTTP/1.1\r\nHost: {a}\r\n\r\n"),
        format!(
            "POST /mcp HTTP/1.1\r\nHost: {a}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
        format!(
            "POST /mcp HTTP/1.1\r\nHost: {a}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        ),
    ];
    let pieces: [&[u8]; 10] = [
        b"\r\n",
        b"\n",
        b"\r",
        b":",
        b" ",
        b"\xff\xfe",
        b"Content-Length: 99999999999999999999\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"HTTP/2.0",
        b"\x00",
    ];
    let mut rng = SeededRng::from_env(10);
    let fds = hub.fds();
    for _ in 0..400 {
        let mut req = rng.pick(&seeds).clone().into_bytes();
        for _ in 0..=rng.below(4) {
            let at = rng.below(req.len() + 1);
            match rng.below(4) {
                0 => req.truncate(at),
                1 if at < req.len() => req[at] = (rng.next_u64() & 0xff) as u8,
                _ => {
                    let piece = rng.pick(&pieces);
                    req.splice(at..at, piece.iter().copied());
                }
            }
        }
        let Ok(mut s) = TcpStream::connect(a) else {
            panic!("the front stopped accepting");
        };
        s.set_read_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        let _ = s.write_all(&req);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        if answer.is_empty() {
            continue;
        }
        let text = String::from_utf8_lossy(&answer);
        let status = status_of(&answer);
        assert!(
            text.starts_with("HTTP/1.") && status.is_some_and(|c| (100..600).contains(&c)),
            "{:?} -> {text:?}",
            String::from_utf8_lossy(&req)
        );
        assert_ne!(status, Some(500), "{:?}", String::from_utf8_lossy(&req));
    }
    assert!(hub.answers_within(Duration::from_secs(5)));
    assert!(
        hub.settles(Duration::from_secs(10), |h| h.fds() <= fds + 8),
        "{} fds (were {fds})",
        hub.fds()
    );
}
