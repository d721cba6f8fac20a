//! `make bench-docker`: p50 over 20 runs of create→authorize URL, an exec round trip and
//! destroy through llmbox's own Engine client, next to the same Engine calls made by the
//! `docker` CLI in the same run, so our overhead reads as a ratio. Prints a table; asserts
//! nothing. Needs the test image (`make test-image`) and the Docker daemon.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use llmbox::boxes::{BoxManager, CreateOptions};
use llmbox::docker::{DEFAULT_DOCKER_HOST, DockerBoxManager, ManagerConfig};

const RUNS: usize = 20;
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
    samples.sort();
    samples[samples.len() / 2]
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
}
