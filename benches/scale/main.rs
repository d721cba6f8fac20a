//! `make bench-scale`: how far one hub goes. One real `llmbox hub --no-local` process (the built
//! binary, loopback ports, a temp state file) and N real spoke loops with in-memory box
//! managers ([`fleet`]), at N = 100, 1000, 5000, 10000. Prints numbers, asserts nothing.
//!
//! Measured, each beside a baseline from the same run:
//! - hub RSS and threads with N idle spokes, vs a bare tungstenite echo process holding N idle
//!   connections (one reader thread each);
//! - hub CPU while idle with N spokes heartbeating every [`HEARTBEAT`] (both ends ping), over
//!   [`CPU_WINDOW`], as % of one core; the spoke processes' CPU beside it; and once more at the
//!   largest N with a fresh hub and spokes at the shipped heartbeat (15 s);
//! - verb round trip p50/p99 through the hub's MCP endpoint (`exec_llmbox` to one spoke) while
//!   N are connected, beside MCP `ping` (HTTP + JSON-RPC, no spoke) and the in-process spoke
//!   plane (`RemoteSpoke::exec`, one spoke, no HTTP); a `list_llmboxes` fan-out to all N;
//! - time for all N to reconnect after the hub is SIGKILLed and started again on the same state
//!   file, with the spoke loop's own jittered backoff (1 s → 30 s, ±20 %).
//!
//! `SCALE_STEPS=100,500` runs other sizes; `LLMBOX_BIN` points at another `llmbox` binary.
//! Children: this binary re-run with `BENCH_CHILD=echo` (the baseline server) or
//! `BENCH_CHILD=fleet:…` (a batch of spokes).

mod baseline;
#[path = "../common/mod.rs"]
mod common;
mod fleet;
mod hub;
mod mcp;
mod report;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use common::{
    ProcStatus, clock_ticks_per_sec, cpu_ticks, listen_overflows, proc_status, system_busy_ticks,
};
use fleet::{Fleet, spoke_name};
use hub::{HubArgs, HubProcess};
use mcp::Mcp;
use report::{Cpu, Restart, Row, ms, secs, us};

/// Spoke counts measured (override with `SCALE_STEPS`).
const STEPS: [usize; 4] = [100, 1000, 5000, 10_000];
/// Heartbeat of the hub and of every spoke (short, so the idle CPU shows it: 7.5× the default).
const HEARTBEAT: Duration = Duration::from_secs(2);
/// Window of the idle CPU reading.
const CPU_WINDOW: Duration = Duration::from_secs(10);
/// Pause after a connect burst before reading memory and CPU (two short heartbeats).
const SETTLE: Duration = Duration::from_secs(4);
/// The shipped heartbeat, for one more idle CPU reading at the largest N.
const DEFAULT_HEARTBEAT: Duration = llmbox::cluster::plane::DEFAULT_HEARTBEAT;
/// Window of that reading: two default heartbeats.
const DEFAULT_CPU_WINDOW: Duration = Duration::from_secs(30);
/// Round trips per latency figure.
const CALLS: usize = 1000;
/// `list_llmboxes` fan-outs per N.
const FANOUTS: usize = 5;
/// How long N spokes may take to connect (or reconnect).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(180);
/// Descriptors the hub holds per spoke: the socket (one descriptor, no clones).
const HUB_FDS_PER_SPOKE: u64 = 1;
/// Descriptors kept for everything else in the hub.
const FD_SLACK: u64 = 300;
/// The box the MCP round trips exec in (created on spoke 0).
const PROBE_BOX: &str = "scale-probe";

fn main() {
    if let Ok(mode) = std::env::var("BENCH_CHILD") {
        match mode.split_once(':') {
            Some(("fleet", spec)) => fleet::child_main(spec),
            _ => baseline::echo_child(),
        }
        return;
    }
    // `cargo test --all-targets` runs this binary too, without `--bench`: measure nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("scale benchmark: run it with `make bench-scale`");
        return;
    }
    run();
}

fn run() {
    let limit = llmbox::util::rlimit::raise_nofile_limit().unwrap_or(1024);
    let steps = steps(limit);
    let max_n = steps.iter().copied().max().unwrap_or(0);
    let bin = std::env::var_os("LLMBOX_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_llmbox")));
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    println!("== llmbox scale benchmark ==");
    println!(
        "machine: {cores} cores, {} MiB memory; open-file limit {limit} (hub: {HUB_FDS_PER_SPOKE} per spoke; spokes: {} per child process)",
        common::mem_total_mib(),
        fleet::SPOKES_PER_CHILD
    );
    println!(
        "threads: kernel.pid_max {} (every thread on the machine counts against it), {} in use now",
        read_trim("/proc/sys/kernel/pid_max"),
        threads_in_use()
    );
    println!(
        "hub: {} --no-local, heartbeat {HEARTBEAT:?} (hub and spokes); spokes: llmbox::cluster::spoke::run + MemoryBoxManager, library backoff",
        bin.display()
    );
    let dir = std::env::temp_dir().join(format!("llmbox-bench-scale-{}", std::process::id()));
    let _cleanup = RemoveDir(dir.clone());
    let state = dir.join("state.json");
    let creds = dir.join("creds");
    let t = Instant::now();
    fleet::seed(&state, &creds, max_n);
    println!(
        "seeded {max_n} spoke records and credentials in {:.1}s",
        t.elapsed().as_secs_f64()
    );

    let inproc = baseline::inprocess_baseline(&dir.join("inproc"));
    let mut rows: Vec<Row> = steps
        .iter()
        .map(|&n| Row {
            n,
            ..Row::default()
        })
        .collect();
    for row in &mut rows {
        row.sweep = baseline::revocation_sweep(&state, row.n);
    }
    let echo = baseline::echo_phase(&mut rows);

    let args = HubArgs {
        bin: bin.clone(),
        listen: free_addr(),
        spoke_listen: free_addr(),
        state: state.clone(),
        heartbeat: HEARTBEAT,
        extra: extra_flags(&bin),
    };
    let hub = HubProcess::start(&args);
    thread::sleep(Duration::from_millis(300));
    let hub0 = proc_status(hub.pid);
    let mut mcp = Mcp::new(args.listen);
    let mcp_missing = mcp.call("ping", json!({})).err();
    if let Some(why) = &mcp_missing {
        println!("MCP endpoint not available on this build ({why}): MCP round trips skipped");
    }
    let url = format!("ws://{}/spoke/connect", args.spoke_listen);
    let mut fleet = Fleet::new(&url, &creds, HEARTBEAT);
    let mut probe: Option<Result<(), String>> = None;
    for row in &mut rows {
        println!("\n-- N = {} --", row.n);
        let (since, overflows) = (Instant::now(), listen_overflows());
        fleet.grow_to(row.n);
        row.connect = hub.wait_connected(row.n, since, CONNECT_TIMEOUT);
        row.overflows = listen_overflows() - overflows;
        match row.connect {
            Some(d) => println!(
                "{} spokes connected in {:.2}s ({} listen-queue overflows)",
                row.n,
                d.as_secs_f64(),
                row.overflows
            ),
            None => println!(
                "only {} of {} spokes connected within {CONNECT_TIMEOUT:?}",
                hub.log.connected(),
                row.n
            ),
        }
        // Let the connection bursts settle: two heartbeats of nothing but pings.
        thread::sleep(SETTLE);
        row.hub = proc_status(hub.pid);
        row.fleet = sum_status(&fleet.pids());
        row.cpu = idle_cpu(&hub, &fleet, CPU_WINDOW);
        println!(
            "hub: {:.1} MiB, {} threads, idle CPU {:.2}% of a core; spokes: {:.2}% ({} threads, {:.1} MiB); everything else: {:.2}%; threads on the machine: {}",
            row.hub.rss_kib as f64 / 1024.0,
            row.hub.threads,
            row.cpu.hub,
            row.cpu.spokes,
            row.fleet.threads,
            row.fleet.rss_kib as f64 / 1024.0,
            row.cpu.others,
            threads_in_use()
        );
        if mcp_missing.is_none() {
            let probe = probe.get_or_insert_with(|| {
                mcp.tool(
                    "create_llmbox",
                    json!({"box_id": PROBE_BOX, "spoke": spoke_name(0), "description": "scale bench probe"}),
                )
                .map(|_| ())
            });
            measure_mcp(&mut mcp, probe, row);
        }
    }

    let (hub, restart) = restart_phase(hub, &args, max_n);
    if mcp_missing.is_none() && matches!(probe, Some(Ok(()))) {
        match mcp.tool(
            "exec_llmbox",
            json!({"box_id": PROBE_BOX, "command": "echo still-here"}),
        ) {
            Ok(_) => println!("after the restart: exec_llmbox in {PROBE_BOX} answers"),
            Err(e) => println!("after the restart: exec_llmbox in {PROBE_BOX} failed: {e}"),
        }
    }
    let (warnings, first) = hub.log.warnings();
    if warnings > 0 {
        println!("hub logged {warnings} warning/error lines since its restart; first: {first:?}");
    }
    drop(fleet);
    hub.kill();
    let at_default = default_heartbeat_phase(&args, &creds, max_n);
    report::print_tables(&rows, hub0, &echo, &inproc, restart, at_default, max_n);
}

/// CPU over `window`, each as % of one core: the hub, the spoke processes, and everything else
/// on the machine (other engineers' builds and tests share it; this bench's own parent is idle).
fn idle_cpu(hub: &HubProcess, fleet: &Fleet, window: Duration) -> Cpu {
    let clk = clock_ticks_per_sec() as f64;
    let me = std::process::id();
    let sample = || {
        (
            cpu_ticks(hub.pid),
            fleet_ticks(fleet),
            cpu_ticks(me),
            system_busy_ticks(),
        )
    };
    let ((h0, f0, m0, s0), t0) = (sample(), Instant::now());
    thread::sleep(window);
    let (h1, f1, m1, s1) = sample();
    let pct = |ticks: u64| ticks as f64 / clk / t0.elapsed().as_secs_f64() * 100.0;
    let (h, f, m) = (h1 - h0.min(h1), f1 - f0.min(f1), m1 - m0.min(m1));
    Cpu {
        hub: pct(h),
        spokes: pct(f),
        others: pct(s1.saturating_sub(s0).saturating_sub(h + f + m)),
    }
}

/// A fresh hub and `n` fresh spokes, all at the default heartbeat: their idle CPU over
/// [`DEFAULT_CPU_WINDOW`] (two heartbeats).
fn default_heartbeat_phase(args: &HubArgs, creds: &Path, n: usize) -> Cpu {
    println!("\n-- {n} spokes at the default heartbeat {DEFAULT_HEARTBEAT:?} --");
    let args = HubArgs {
        heartbeat: DEFAULT_HEARTBEAT,
        ..args.clone()
    };
    let hub = HubProcess::start(&args);
    let url = format!("ws://{}/spoke/connect", args.spoke_listen);
    let mut fleet = Fleet::new(&url, creds, DEFAULT_HEARTBEAT);
    let since = Instant::now();
    fleet.grow_to(n);
    if hub.wait_connected(n, since, CONNECT_TIMEOUT).is_none() {
        println!(
            "only {} of {n} spokes connected within {CONNECT_TIMEOUT:?}",
            hub.log.connected()
        );
    }
    thread::sleep(SETTLE);
    let cpu = idle_cpu(&hub, &fleet, DEFAULT_CPU_WINDOW);
    println!(
        "hub idle CPU {:.2}% of a core; spokes: {:.2}%; everything else: {:.2}%",
        cpu.hub, cpu.spokes, cpu.others
    );
    cpu
}

/// The steps to run: `SCALE_STEPS` or [`STEPS`], capped at what the open-file limit allows.
fn steps(limit: u64) -> Vec<usize> {
    let wanted: Vec<usize> = std::env::var("SCALE_STEPS")
        .ok()
        .map(|s| s.split(',').filter_map(|v| v.trim().parse().ok()).collect())
        .unwrap_or_else(|| STEPS.to_vec());
    let fit = (limit.saturating_sub(FD_SLACK) / HUB_FDS_PER_SPOKE) as usize;
    wanted
        .into_iter()
        .map(|n| {
            if n > fit {
                println!(
                    "N = {n} does not fit the open-file limit {limit} ({HUB_FDS_PER_SPOKE} per spoke in the hub): measuring {fit}"
                );
            }
            n.min(fit)
        })
        .collect()
}

/// `--reap-interval 0` when the hub has a reaper (its passes over N spokes are not idle load).
fn extra_flags(bin: &Path) -> Vec<String> {
    let help = Command::new(bin)
        .args(["hub", "--help"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if help.contains("--reap-interval") {
        vec!["--reap-interval".into(), "0".into()]
    } else {
        Vec::new()
    }
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path).map_or_else(|e| format!("? ({e})"), |s| s.trim().to_string())
}

/// Threads of every process this bench can see (`/proc/*/status` `Threads:`).
fn threads_in_use() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .map(|pid| proc_status(pid).threads)
        .sum()
}

fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("address")
}

fn sum_status(pids: &[u32]) -> ProcStatus {
    pids.iter()
        .map(|&p| proc_status(p))
        .fold(ProcStatus::default(), |a, b| ProcStatus {
            rss_kib: a.rss_kib + b.rss_kib,
            threads: a.threads + b.threads,
        })
}

fn fleet_ticks(fleet: &Fleet) -> u64 {
    fleet.pids().iter().map(|&p| cpu_ticks(p)).sum()
}

/// MCP `ping`, `exec_llmbox` to the probe box, and `list_llmboxes` fan-outs.
fn measure_mcp(mcp: &mut Mcp, probe: &Result<(), String>, row: &mut Row) {
    row.ping = timed(CALLS, || mcp.call("ping", json!({})).map(|_| ()));
    match probe {
        Ok(()) => {
            row.exec = timed(CALLS, || {
                mcp.tool(
                    "exec_llmbox",
                    json!({"box_id": PROBE_BOX, "command": "echo hi"}),
                )
                .map(|_| ())
            });
        }
        Err(e) => println!("create_llmbox on {} failed: {e}", spoke_name(0)),
    }
    row.fanout = timed(FANOUTS, || mcp.tool("list_llmboxes", json!({})).map(|_| ()));
    println!(
        "MCP ping p50 {} µs; exec_llmbox p50 {} µs p99 {} µs; list_llmboxes over {} spokes p50 {} ms",
        us(&row.ping, 50),
        us(&row.exec, 50),
        us(&row.exec, 99),
        row.n,
        ms(&row.fanout, 50)
    );
}

/// Times `calls` calls of `f`; the first failure is printed and ends the series.
fn timed(calls: usize, mut f: impl FnMut() -> Result<(), String>) -> Vec<Duration> {
    let mut out = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        if let Err(e) = f() {
            println!("call failed: {e}");
            break;
        }
        out.push(t.elapsed());
    }
    out
}

// ---------- restart

fn restart_phase(hub: HubProcess, args: &HubArgs, n: usize) -> (HubProcess, Restart) {
    println!("\n-- hub SIGKILL and restart with {n} spokes --");
    let (t, overflows) = (Instant::now(), listen_overflows());
    hub.kill();
    let killed = t.elapsed();
    let hub = HubProcess::start(args);
    let hub_up = t.elapsed();
    let mut marks = [(50, None), (90, None), (100, None)];
    loop {
        let back = hub.log.connected();
        for (share, at) in &mut marks {
            if at.is_none() && back * 100 >= n * *share {
                *at = Some(t.elapsed());
            }
        }
        if back >= n || t.elapsed() > CONNECT_TIMEOUT {
            break;
        }
        thread::sleep(Duration::from_millis(5));
    }
    let restart = Restart {
        killed,
        hub_up,
        half: marks[0].1,
        most: marks[1].1,
        all: marks[2].1,
        back: hub.log.connected(),
        overflows: listen_overflows() - overflows,
    };
    println!(
        "old hub reaped after {:.2}s, new one up after {:.2}s; 50% back {}, 90% {}, all {} ({} listen-queue overflows)",
        killed.as_secs_f64(),
        hub_up.as_secs_f64(),
        secs(restart.half),
        secs(restart.most),
        secs(restart.all),
        restart.overflows
    );
    (hub, restart)
}

/// Removes the bench's temp directory on drop.
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
