//! Helpers shared by the benchmarks (`benches/cluster.rs`, `benches/scale/`): percentiles,
//! `/proc` readings of a process (RSS, threads, CPU ticks), the bare tungstenite echo server
//! that serves as the baseline, and an in-process hub plane with one in-memory spoke.
//!
//! Each bench uses a subset of these, hence the `dead_code` allowance below.
#![allow(dead_code)]

// The in-memory spokes are a library test double, left out of the shipped binary.
#[cfg(not(feature = "test-doubles"))]
compile_error!(
    "the benches need the library's test doubles: `cargo bench --features test-doubles` (the make bench-* targets pass it)"
);

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use llmbox::boxes::BoxManager;
use llmbox::boxes::memory::MemoryBoxManager;
use llmbox::cluster::SpokeDirectory;
use llmbox::cluster::plane::{self, PlaneConfig};
use llmbox::cluster::registry::Registry;
use llmbox::cluster::spoke::{self, SpokeConfig, SpokeStop};
use llmbox::cluster::transport::{CONN_THREAD_STACK, ws_config};
use llmbox::store::Store;

/// The same bytes a `list` request carries (what the echo baseline bounces).
pub const REQ: &str = r#"{"type":"req","id":12345,"method":"list","payload":{}}"#;

// ---------- percentiles

/// The `p`th percentile of `samples`, in microseconds.
pub fn pct(samples: &[Duration], p: usize) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut s: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    s.sort_by(f64::total_cmp);
    s[(s.len() * p / 100).min(s.len() - 1)]
}

/// One line: `what  p50 … µs  p99 … µs`.
pub fn print_latency(what: &str, samples: &[Duration]) {
    println!(
        "{what:<30} p50 {:>8.1} µs   p99 {:>8.1} µs",
        pct(samples, 50),
        pct(samples, 99)
    );
}

// ---------- /proc

/// Resident memory and thread count of a process, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStatus {
    /// `VmRSS` in KiB.
    pub rss_kib: u64,
    /// `Threads`.
    pub threads: u64,
}

/// Reads `/proc/<pid>/status`; zeros when the process is gone.
pub fn proc_status(pid: u32) -> ProcStatus {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    ProcStatus {
        rss_kib: field("VmRSS:"),
        threads: field("Threads:"),
    }
}

/// `VmRSS` of a process in KiB (0 when it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    proc_status(pid).rss_kib
}

/// utime + stime of a process in clock ticks, from `/proc/<pid>/stat` (0 when it is gone).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) is in parentheses and may hold spaces: count after the last ')'.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let get = |i: usize| -> u64 { fields.get(i - 3).and_then(|v| v.parse().ok()).unwrap_or(0) };
    get(14) + get(15)
}

/// Busy clock ticks of the whole machine, all cores (`/proc/stat` `cpu` line minus idle and
/// iowait): with [`cpu_ticks`] of the processes under test, what everything else used.
pub fn system_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = v.iter().take(8).sum();
    total.saturating_sub(v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0))
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on every Linux this runs on).
pub fn clock_ticks_per_sec() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// `TcpExt: ListenOverflows` of this network namespace (`/proc/net/netstat`): connections
/// dropped because a listener's accept queue was full. Namespace-wide, so it also counts other
/// processes' listeners; 0 when unreadable.
pub fn listen_overflows() -> u64 {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "ListenOverflows")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// `MemTotal` in MiB, from `/proc/meminfo`.
pub fn mem_total_mib() -> u64 {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib / 1024)
        .unwrap_or(0)
}

// ---------- bare tungstenite echo (the baseline)

/// Serves a bare tungstenite echo on `listener` from a background thread: one reader thread per
/// socket (the stack size and buffers of llmbox's connection threads), text messages echoed.
pub fn serve_echo(listener: TcpListener) {
    thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let _ = thread::Builder::new()
                .name("echo-conn".into())
                .stack_size(CONN_THREAD_STACK)
                .spawn(move || {
                    let _ = tcp.set_nodelay(true);
                    let Ok(mut ws) = tungstenite::accept_with_config(tcp, Some(ws_config())) else {
                        return;
                    };
                    while let Ok(msg) = ws.read() {
                        if msg.is_text() && ws.send(msg).is_err() {
                            break;
                        }
                    }
                });
        }
    });
}

/// A client of [`serve_echo`].
///
/// # Panics
/// When the echo server cannot be reached (a bench has nothing to measure then).
pub fn echo_client(addr: SocketAddr) -> tungstenite::WebSocket<TcpStream> {
    let tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let (ws, _) =
        tungstenite::client::client_with_config(format!("ws://{addr}/"), tcp, Some(ws_config()))
            .expect("upgrade");
    ws
}

/// Blocks until the parent closes this child's stdin (how bench children are told to end).
pub fn wait_for_stdin_close() {
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
}

// ---------- in-process hub plane + one in-memory spoke

/// A spoke plane in this process with one enrolled in-memory spoke named `bench`.
pub struct BenchHub {
    /// The connected spoke, as the hub sees it.
    pub remote: Arc<dyn BoxManager>,
    /// Stops the spoke loop.
    pub stop: SpokeStop,
}

impl BenchHub {
    /// Starts the plane on a loopback port with its state under `dir` and waits for the spoke.
    ///
    /// # Panics
    /// When the plane cannot start or the spoke does not connect within 20 s.
    pub fn start(dir: &Path) -> BenchHub {
        std::fs::create_dir_all(dir).expect("dir");
        let store = Arc::new(Store::open(dir.join("state.json")).expect("store"));
        let registry = Arc::new(Registry::new(Arc::clone(&store)));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let plane =
            plane::start(listener, Arc::clone(&registry), PlaneConfig::default()).expect("plane");
        let (token, _) =
            llmbox::cluster::tokens::create_token(&store, "bench", Duration::from_secs(60))
                .expect("token");
        let mut config = SpokeConfig::new(&plane.url());
        config.token = Some(token);
        config.credentials = dir.join("creds.json");
        config.max_workers = 256;
        let stop = SpokeStop::default();
        let s = stop.clone();
        thread::spawn(move || {
            let manager: Arc<dyn BoxManager> = Arc::new(MemoryBoxManager::new("bench", 10));
            let mut factory = |_: &str| Ok(Arc::clone(&manager));
            let _ = spoke::run(&config, &mut factory, &s);
        });
        let start = Instant::now();
        let remote = loop {
            if let Some(r) = registry.get("bench") {
                break r;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "spoke did not connect"
            );
            thread::sleep(Duration::from_millis(5));
        };
        // The plane serves until the process ends.
        std::mem::forget(plane);
        BenchHub { remote, stop }
    }
}
