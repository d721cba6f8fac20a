//! The bench's measurements and the tables printed from them.

use std::time::Duration;

use super::baseline::Echo;
use super::common::{self, ProcStatus, pct};
use super::{CALLS, CONNECT_TIMEOUT, CPU_WINDOW, DEFAULT_CPU_WINDOW, DEFAULT_HEARTBEAT, HEARTBEAT};

/// One N's measurements.
#[derive(Default)]
pub struct Row {
    /// Spokes connected.
    pub n: usize,
    /// Time for the newest spokes to connect (all N connected).
    pub connect: Option<Duration>,
    /// The hub process at rest with N spokes.
    pub hub: ProcStatus,
    /// The echo baseline process holding N idle connections.
    pub echo: ProcStatus,
    /// The spoke processes, summed.
    pub fleet: ProcStatus,
    /// CPU over the idle window.
    pub cpu: Cpu,
    /// One revocation sweep over N connections (in-process, median).
    pub sweep: Duration,
    /// MCP `ping` round trips.
    pub ping: Vec<Duration>,
    /// MCP `exec_llmbox` round trips.
    pub exec: Vec<Duration>,
    /// MCP `list_llmboxes` fan-outs.
    pub fanout: Vec<Duration>,
    /// Listen-queue overflows while these spokes connected.
    pub overflows: u64,
}

/// An idle CPU reading, each as % of one core.
#[derive(Default, Clone, Copy)]
pub struct Cpu {
    /// The hub process.
    pub hub: f64,
    /// The spoke processes, summed.
    pub spokes: f64,
    /// Everything else on the machine (background load: other builds and tests).
    pub others: f64,
}

/// Reconnect times after a SIGKILL of the hub and a new start on the same state file.
pub struct Restart {
    /// From the SIGKILL to the old process reaped (its threads and sockets torn down).
    pub killed: Duration,
    /// From the kill to the new process answering `/healthz`.
    pub hub_up: Duration,
    /// From the kill to half of the N connected again.
    pub half: Option<Duration>,
    /// … to 90 %.
    pub most: Option<Duration>,
    /// … to all N (None: not within the timeout).
    pub all: Option<Duration>,
    /// How many were back at the timeout.
    pub back: usize,
    /// Listen-queue overflows during the reconnect storm.
    pub overflows: u64,
}

/// A percentile in µs, or `-` when nothing was measured.
pub fn us(samples: &[Duration], p: usize) -> String {
    if samples.is_empty() {
        "-".into()
    } else {
        format!("{:.0}", pct(samples, p))
    }
}

/// A percentile in ms, or `-` when nothing was measured.
pub fn ms(samples: &[Duration], p: usize) -> String {
    if samples.is_empty() {
        "-".into()
    } else {
        format!("{:.1}", pct(samples, p) / 1000.0)
    }
}

pub fn secs(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.2}s", d.as_secs_f64()))
}

// ---------- output

pub fn print_tables(
    rows: &[Row],
    hub0: ProcStatus,
    echo: &Echo,
    inproc: &[Duration],
    restart: Restart,
    at_default: Cpu,
    n: usize,
) {
    let mib = |k: u64| k as f64 / 1024.0;
    let per = |k: u64, k0: u64, n: usize| k.saturating_sub(k0) as f64 / n.max(1) as f64;
    println!(
        "\n== memory and threads, N idle spokes (hub at rest: {:.1} MiB, {} threads; echo at rest: {:.1} MiB) ==",
        mib(hub0.rss_kib),
        hub0.threads,
        mib(echo.rest.rss_kib)
    );
    println!(
        "{:>6} | {:>9} {:>9} {:>8} | {:>9} {:>9} {:>8} | {:>6} | {:>8} {:>9}",
        "N",
        "hub MiB",
        "KiB/spk",
        "threads",
        "echo MiB",
        "KiB/conn",
        "threads",
        "ratio",
        "connect",
        "overflows"
    );
    for r in rows {
        let (h, e) = (
            per(r.hub.rss_kib, hub0.rss_kib, r.n),
            per(r.echo.rss_kib, echo.rest.rss_kib, r.n),
        );
        println!(
            "{:>6} | {:>9.1} {:>9.1} {:>8} | {:>9.1} {:>9.1} {:>8} | {:>6.2} | {:>8} {:>9}",
            r.n,
            mib(r.hub.rss_kib),
            h,
            r.hub.threads,
            mib(r.echo.rss_kib),
            e,
            r.echo.threads,
            h / e.max(0.001),
            secs(r.connect),
            r.overflows
        );
    }
    println!("\n== idle CPU over {CPU_WINDOW:?}, heartbeat {HEARTBEAT:?} (% of one core) ==");
    println!(
        "{:>6} | {:>8} | {:>10} {:>12} {:>9} | {:>14} | {:>10}",
        "N", "hub", "spokes", "spokes MiB", "threads", "sweep ms/beat", "others"
    );
    for r in rows {
        println!(
            "{:>6} | {:>7.2}% | {:>9.2}% {:>12.1} {:>9} | {:>14.2} | {:>9.1}%",
            r.n,
            r.cpu.hub,
            r.cpu.spokes,
            mib(r.fleet.rss_kib),
            r.fleet.threads,
            r.sweep.as_secs_f64() * 1e3,
            r.cpu.others
        );
    }
    println!(
        "{n:>6} spokes at the default heartbeat {DEFAULT_HEARTBEAT:?}, over {DEFAULT_CPU_WINDOW:?}: hub {:.2}%, spokes {:.2}%, others {:.1}%",
        at_default.hub, at_default.spokes, at_default.others
    );
    println!("\n== verb round trip to one spoke while N are connected ({CALLS} calls) ==");
    common::print_latency("in-process RemoteSpoke exec", inproc);
    println!(
        "{:>6} | {:>20} | {:>24} | {:>18}",
        "N", "MCP ping p50/p99 µs", "MCP exec_llmbox p50/p99 µs", "list_llmboxes p50 ms"
    );
    for r in rows {
        println!(
            "{:>6} | {:>9} / {:>8} | {:>11} / {:>10} | {:>18}",
            r.n,
            us(&r.ping, 50),
            us(&r.ping, 99),
            us(&r.exec, 50),
            us(&r.exec, 99),
            ms(&r.fanout, 50),
        );
    }
    println!(
        "\n== hub SIGKILL + restart with {n} spokes (library backoff 1 s → 30 s, ±20 %, 1 s floor for 10 s after a welcomed connection) =="
    );
    println!(
        "old process reaped {:.2}s after the SIGKILL (baseline: the bare echo holding {n} connections, reaped {:.2}s after its SIGKILL); new one answering /healthz {:.2}s after the SIGKILL",
        restart.killed.as_secs_f64(),
        echo.teardown.as_secs_f64(),
        restart.hub_up.as_secs_f64()
    );
    let since_up = |d: Option<Duration>| secs(d.map(|d| d.saturating_sub(restart.hub_up)));
    println!(
        "spokes reconnected after the kill: 50% {}, 90% {}, all {}; after the new hub's start: 50% {}, 90% {}, all {}",
        secs(restart.half),
        secs(restart.most),
        secs(restart.all),
        since_up(restart.half),
        since_up(restart.most),
        since_up(restart.all)
    );
    println!(
        "listen-queue overflows (TcpExt ListenOverflows) during the reconnect: {}",
        restart.overflows
    );
    if restart.all.is_none() {
        println!(
            "only {} of {n} spokes back within {CONNECT_TIMEOUT:?}",
            restart.back
        );
    }
}
