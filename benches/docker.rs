//! `make bench-docker`: p50 over 20 runs of create→authorize URL, an exec round trip and
//! destroy through llmbox's own Engine client, next to the same Engine calls made by the
//! `docker` CLI in the same run, so our overhead reads as a ratio. Then creates at once:
//! [`CONCURRENT`] `create_llmbox` calls at the same moment through a real hub's MCP endpoint
//! (the built `llmbox hub` on its local Docker, each call on its own connection), create →
//! activation link, beside [`CONCURRENT`] `docker` CLI runs of the same Engine calls at once.
//! Prints tables; asserts nothing. Needs the test image (`make test-image`) and the Docker
//! daemon.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

#[allow(dead_code)]
#[path = "scale/mcp.rs"]
mod mcp;

use llmbox::boxes::{BoxManager, CreateOptions};
use llmbox::docker::{DEFAULT_DOCKER_HOST, DockerBoxManager, ManagerConfig};

const RUNS: usize = 20;
/// Creates started at the same moment.
const CONCURRENT: usize = 8;
/// Rounds of [`CONCURRENT`] creates (the samples of the p50/p99).
const ROUNDS: usize = 3;
const IMAGE: &str = "llmbox-test-box:latest";

fn fake_claude() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-claude")
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run the docker CLI");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Removes everything labelled with the bench namespace, also when the bench panics.
struct Guard(String);

impl Drop for Guard {
    fn drop(&mut self) {
        let label = format!("label=com.llmbox.namespace={}", self.0);
        let ids = Command::new("docker")
            .args(["ps", "-aq", "--filter", &label])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        for id in ids.lines() {
            let _ = Command::new("docker").args(["rm", "-f", "-v", id]).output();
        }
        let nets = Command::new("docker")
            .args(["network", "ls", "-q", "--filter", &label])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        for net in nets.lines() {
            let _ = Command::new("docker").args(["network", "rm", net]).output();
        }
    }
}

fn p50(samples: &mut [Duration]) -> Duration {
    pct(samples, 50)
}

/// The `p`th percentile (nearest rank); zero when there are no samples.
fn pct(samples: &mut [Duration], p: usize) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort();
    let rank = (samples.len() * p).div_ceil(100).max(1);
    samples[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// The CLI doing what `create` does: network, create, copy the binary in, start attached
/// and read until the authorize URL.
fn cli_create(ns: &str, i: usize, script: &str) -> (String, String, Duration) {
    let net = format!("{ns}-net-{i}");
    let start = Instant::now();
    let label = format!("com.llmbox.namespace={ns}");
    docker(&["network", "create", "--label", &label, &net]);
    let id = docker(&[
        "create",
        "-t",
        "-i",
        "--label",
        "com.llmbox.managed=true",
        "--label",
        &label,
        "--network",
        &net,
        "--hostname",
        "bench",
        "-e",
        "HOME=/root",
        "-w",
        "/workspace",
        "--memory",
        "4096m",
        "--cpus",
        "2",
        "--pids-limit",
        "4096",
        "--security-opt",
        "no-new-privileges",
        "--entrypoint",
        "/bin/sh",
        IMAGE,
        "-c",
        script,
    ]);
    let claude = fake_claude();
    docker(&[
        "cp",
        &claude.to_string_lossy(),
        &format!("{id}:/usr/local/bin/claude"),
    ]);
    let mut child = Command::new("docker")
        .args(["start", "--attach", &id])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker start --attach");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut found = false;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if line.contains("https://claude.com/cai/oauth/authorize?") {
            found = true;
            break;
        }
    }
    let took = start.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    assert!(found, "the CLI-made box printed no authorize URL");
    (id, net, took)
}

fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("address")
}

/// The built `llmbox hub` on the local Docker, its boxes under namespace `ns`; killed on drop.
struct Hub(Child);

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_hub(ns: &str, dir: &std::path::Path) -> (Hub, SocketAddr) {
    let listen = free_addr();
    let child = Command::new(env!("CARGO_BIN_EXE_llmbox"))
        .arg("hub")
        .args(["--listen", &listen.to_string()])
        .args(["--spoke-listen", &free_addr().to_string()])
        .arg("--state")
        .arg(dir.join("state.json"))
        .args(["--box-image", IMAGE, "--local-namespace", ns])
        .arg("--claude-bin")
        .arg(fake_claude())
        .args(["--log-level", "warn"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start llmbox hub");
    let hub = Hub(child);
    let mut probe = mcp::Mcp::new(listen);
    let start = Instant::now();
    while !probe.healthy() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the hub did not answer"
        );
        thread::sleep(Duration::from_millis(20));
    }
    (hub, listen)
}

/// Runs `f(i)` for `i` in `0..CONCURRENT` on as many threads released at the same moment;
/// each one's time.
fn at_once<F>(f: F) -> Vec<Duration>
where
    F: Fn(usize) + Send + Sync + 'static,
{
    let (f, gate) = (Arc::new(f), Arc::new(Barrier::new(CONCURRENT)));
    let threads: Vec<_> = (0..CONCURRENT)
        .map(|i| {
            let (f, gate) = (Arc::clone(&f), Arc::clone(&gate));
            thread::spawn(move || {
                gate.wait();
                let t = Instant::now();
                f(i);
                t.elapsed()
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("a concurrent create panicked"))
        .collect()
}

/// [`ROUNDS`] × [`CONCURRENT`] creates at once through the hub's MCP, and as many `docker`
/// CLI runs at once: (ours, CLI) per-create times.
fn concurrent_creates(ns: &str, script: &str) -> (Vec<Duration>, Vec<Duration>) {
    let dir = std::env::temp_dir().join(format!("llmbox-bench-docker-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (hub, addr) = start_hub(ns, &dir);
    let (mut ours, mut cli) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        ours.extend(at_once(move |i| {
            let mut c = mcp::Mcp::new(addr);
            let r = c.tool(
                "create_llmbox",
                json!({"box_id": format!("cc-{round}-{i}"), "description": "bench"}),
            );
            let text = r.expect("create_llmbox").to_string();
            assert!(
                text.contains("pending"),
                "no pending box with its link: {text}"
            );
        }));
        for i in 0..CONCURRENT {
            let mut c = mcp::Mcp::new(addr);
            let _ = c.tool(
                "destroy_llmbox",
                json!({"box_id": format!("cc-{round}-{i}")}),
            );
        }
        let (ns2, script2) = (ns.to_string(), script.to_string());
        let made = Arc::new(std::sync::Mutex::new(Vec::new()));
        let made2 = Arc::clone(&made);
        cli.extend(at_once(move |i| {
            let (id, net, _) = cli_create(&ns2, 1000 + round * CONCURRENT + i, &script2);
            made2.lock().expect("ids").push((id, net));
        }));
        for (id, net) in made.lock().expect("ids").drain(..) {
            let _ = Command::new("docker")
                .args(["rm", "-f", "-v", &id])
                .output();
            let _ = Command::new("docker")
                .args(["network", "rm", &net])
                .output();
        }
    }
    drop(hub);
    let _ = std::fs::remove_dir_all(&dir);
    (ours, cli)
}

fn main() {
    // `cargo test --all-targets` runs bench binaries without `--bench`: build-check only.
    if !std::env::args().any(|a| a == "--bench") {
        println!("docker bench: run it with `make bench-docker`");
        return;
    }
    let ns = format!("bench-{}", std::process::id());
    let _guard = Guard(ns.clone());
    let mut config = ManagerConfig::new(&ns);
    config.docker_host = DEFAULT_DOCKER_HOST.to_string();
    config.claude_bin = Some(fake_claude());
    let m = DockerBoxManager::new(config).expect("manager");
    m.ping().expect("the Docker daemon answers");
    let script =
        llmbox::docker::boxspec::entrypoint_script("bench", "", llmbox::docker::ExecUser::DEFAULT);

    let (mut ours_create, mut ours_exec, mut ours_destroy) = (vec![], vec![], vec![]);
    let (mut cli_create_t, mut cli_exec, mut cli_destroy) = (vec![], vec![], vec![]);
    for i in 0..RUNS {
        // Ours.
        let t = Instant::now();
        let created = m
            .create(CreateOptions {
                image: IMAGE.into(),
                box_id: format!("bench-{i}"),
                ..Default::default()
            })
            .expect("create");
        ours_create.push(t.elapsed());
        let t = Instant::now();
        let r = m.exec(&created.id, &["true".into()]).expect("exec");
        ours_exec.push(t.elapsed());
        assert_eq!(r.exit_code, 0);
        let t = Instant::now();
        m.destroy(&created.id).expect("destroy");
        ours_destroy.push(t.elapsed());

        // The docker CLI, same calls.
        let (id, net, took) = cli_create(&ns, i, &script);
        cli_create_t.push(took);
        let t = Instant::now();
        docker(&["exec", &id, "true"]);
        cli_exec.push(t.elapsed());
        let t = Instant::now();
        docker(&["stop", "-t", "10", &id]);
        docker(&["rm", "-v", &id]);
        docker(&["network", "rm", &net]);
        cli_destroy.push(t.elapsed());
    }

    let (mut ours_cc, mut cli_cc) = concurrent_creates(&ns, &script);

    println!("llmbox Docker box manager vs docker CLI, p50 of {RUNS} runs (same daemon, same run)");
    println!(
        "{:<28} {:>12} {:>12} {:>8}",
        "operation", "llmbox", "docker CLI", "ratio"
    );
    for (name, ours, cli) in [
        (
            "create -> authorize URL",
            &mut ours_create,
            &mut cli_create_t,
        ),
        ("exec round trip (true)", &mut ours_exec, &mut cli_exec),
        (
            "destroy (stop, rm, net rm)",
            &mut ours_destroy,
            &mut cli_destroy,
        ),
    ] {
        let (o, c) = (p50(ours), p50(cli));
        println!(
            "{:<28} {:>12} {:>12} {:>7.2}x",
            name,
            ms(o),
            ms(c),
            o.as_secs_f64() / c.as_secs_f64()
        );
    }
    println!(
        "\n{CONCURRENT} creates at once, {ROUNDS} rounds: create_llmbox through the hub's MCP (create -> activation link) vs {CONCURRENT} docker CLI runs at once"
    );
    println!(
        "{:<28} {:>12} {:>12} {:>8}",
        "", "llmbox MCP", "docker CLI", "ratio"
    );
    for p in [50, 99] {
        let (o, c) = (pct(&mut ours_cc, p), pct(&mut cli_cc, p));
        println!(
            "{:<28} {:>12} {:>12} {:>7.2}x",
            format!("p{p} of {} creates", ours_cc.len()),
            ms(o),
            ms(c),
            o.as_secs_f64() / c.as_secs_f64()
        );
    }
}
