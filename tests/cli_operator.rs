//! The operator's first hour, as the real `llmbox` binary meets it (issue 11, items 1–4): a hub
//! on an unusable state file exits 1 naming the path and why; a second hub on one state file
//! exits 1 naming the first one's pid while the CLI keeps working beside it; the state and
//! credentials paths come from `$LLMBOX_STATE` / `$LLMBOX_CREDENTIALS` (not the current
//! directory) and every command says which file it used; `spoke token create` refuses an
//! enrolled name unless `--replace`; `/readyz` is 503 with reasons when Docker is unreachable
//! while `/healthz` stays 200; a spoke whose Docker is wrong warns at start and `list_spokes`
//! shows its Docker error after a reaper pass.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use llmbox::store::{SpokeRecord, Store};
use serde_json::{Value, json};
use support::{free_port, temp_dir};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_llmbox"));
    // Never the machine's own default (/var/lib/llmbox as root): each test names its files.
    c.env_remove("LLMBOX_STATE")
        .env_remove("LLMBOX_CREDENTIALS");
    c
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run llmbox")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Kills and reaps a process this test started.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Hub {
    proc: Proc,
    addr: SocketAddr,
    plane: u16,
    log: std::path::PathBuf,
}

impl Hub {
    fn start(dir: &Path, state: &Path, extra: &[&str]) -> Hub {
        let port = free_port();
        let plane = free_port();
        let log = dir.join(format!("hub-{port}.log"));
        let child = bin()
            .args(["hub", "--state", s(state)])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--spoke-listen", &format!("127.0.0.1:{plane}")])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn hub");
        let hub = Hub {
            proc: Proc(child),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            plane,
            log,
        };
        support::wait_for("the hub to serve /healthz", || {
            std::net::TcpStream::connect(hub.addr).ok()
        });
        hub
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn get(&self, path: &str) -> support::http::Resp {
        support::http::request(self.addr, "GET", path, &[], b"")
    }

    fn spokes(&self) -> Value {
        let body = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_spokes","arguments":{}}});
        let r = support::http::request(
            self.addr,
            "POST",
            "/mcp",
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["result"]["structuredContent"]["spokes"].clone()
    }
}

#[test]
fn a_hub_on_a_state_file_in_a_missing_directory_exits_1_naming_it_before_serving() {
    let dir = temp_dir("op-nodir");
    let file = dir.join("a-file");
    std::fs::write(&file, "x").expect("file");
    for (state, why) in [
        (
            "/nonexistent-llmbox-dir/state.json".to_string(),
            "directory /nonexistent-llmbox-dir does not exist",
        ),
        (format!("{}/state.json", s(&file)), "Not a directory"),
    ] {
        let started = Instant::now();
        let out = run(&[
            "hub",
            "--no-local",
            "--state",
            &state,
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--spoke-listen",
            &format!("127.0.0.1:{}", free_port()),
        ]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(&state), "names the path: {err}");
        assert!(err.contains(why), "says why: {err}");
        assert!(started.elapsed() < Duration::from_secs(5), "fails fast");
    }
}

#[test]
fn a_second_hub_on_one_state_file_exits_1_naming_the_first_and_the_cli_works_beside_it() {
    let dir = temp_dir("op-twohubs");
    let state = dir.join("state.json");
    let first = Hub::start(&dir, &state, &["--no-local"]);
    let pid = first.proc.0.id();
    let out = run(&[
        "hub",
        "--no-local",
        "--state",
        s(&state),
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
        "--spoke-listen",
        &format!("127.0.0.1:{}", free_port()),
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("pid {pid}")), "{err}");
    assert!(err.contains("another llmbox hub"), "{err}");
    // The commands an operator runs beside the hub take no hub lock.
    for args in [
        vec!["spoke", "token", "create", "--name", "edge-1"],
        vec!["spoke", "token", "list"],
        vec!["spoke", "list"],
        vec!["apikey", "list"],
    ] {
        let mut a = args.clone();
        a.extend(["--state", s(&state)]);
        let o = run(&a);
        assert!(o.status.success(), "{args:?}: {}", text(&o.stderr));
    }
    assert_eq!(first.get("/healthz").status, 200, "the first hub serves on");
    // Once the first hub is gone, the lock is free.
    drop(first);
    let again = Hub::start(&dir, &state, &["--no-local"]);
    assert_eq!(again.get("/healthz").status, 200);
}

#[test]
fn paths_come_from_the_environment_not_the_current_directory_and_are_printed() {
    let dir = temp_dir("op-paths");
    let elsewhere = dir.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).expect("mkdir");
    let state = dir.join("hub-state.json");
    let out = bin()
        .args(["spoke", "token", "create", "--name", "edge-1"])
        .env("LLMBOX_STATE", &state)
        .current_dir(&elsewhere)
        .output()
        .expect("run");
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("state file {} (from $LLMBOX_STATE)", s(&state))),
        "{err}"
    );
    assert!(state.is_file(), "the token went to $LLMBOX_STATE");
    assert!(
        std::fs::read_dir(&elsewhere).expect("ls").next().is_none(),
        "nothing in the current directory"
    );
    let list = bin()
        .args(["spoke", "token", "list"])
        .env("LLMBOX_STATE", &state)
        .current_dir(&elsewhere)
        .output()
        .expect("run");
    assert!(
        text(&list.stdout).contains("edge-1"),
        "{}",
        text(&list.stdout)
    );
    // The hub logs the file it uses, and a spoke its credentials file.
    let hub = bin()
        .args(["hub", "--no-local", "--listen", "127.0.0.1:0"])
        .args(["--spoke-listen", "127.0.0.1:0"])
        .env("LLMBOX_STATE", &state)
        .current_dir(&elsewhere)
        .stderr(Stdio::piped())
        .spawn()
        .expect("hub");
    let hub = Proc(hub);
    let creds = dir.join("creds.json");
    let spoke = bin()
        .args([
            "spoke",
            "--hub",
            "ws://127.0.0.1:9",
            "--token",
            &"ab".repeat(32),
        ])
        .args(["--docker-host", "unix:///nonexistent-llmbox/docker.sock"])
        .env("LLMBOX_CREDENTIALS", &creds)
        .current_dir(&elsewhere)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spoke");
    let spoke = Proc(spoke);
    let first_lines = |mut p: Proc, want: &str| -> String {
        use std::io::BufRead;
        let err = p.0.stderr.take().expect("stderr");
        let mut seen = String::new();
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains(want) {
                break;
            }
        }
        seen
    };
    let hub_log = first_lines(hub, "hub serving");
    assert!(
        hub_log.contains(&format!("state file {} (from $LLMBOX_STATE)", s(&state))),
        "{hub_log}"
    );
    // Every log line carries an RFC 3339 timestamp with the date.
    let first = hub_log.lines().next().expect("a line");
    assert!(
        first.len() > 20 && first.as_bytes()[4] == b'-' && first.as_bytes()[10] == b'T',
        "{first}"
    );
    for want in ["MCP: http://", "spoke plane: ws://", "public URL"] {
        assert!(hub_log.contains(want), "{want}: {hub_log}");
    }
    let spoke_log = first_lines(spoke, "WARN");
    assert!(
        spoke_log.contains(&format!(
            "credentials file {} (from $LLMBOX_CREDENTIALS)",
            s(&creds)
        )),
        "{spoke_log}"
    );
    assert!(
        spoke_log.contains("[WARN]")
            && spoke_log.contains("cannot reach Docker at unix:///nonexistent-llmbox/docker.sock"),
        "a spoke whose Docker is wrong says so at start: {spoke_log}"
    );
}

#[test]
fn token_create_for_an_enrolled_name_refuses_the_takeover_unless_replace() {
    let dir = temp_dir("op-takeover");
    let state = dir.join("state.json");
    Store::open(&state)
        .expect("store")
        .update(|st| {
            st.spokes.push(SpokeRecord {
                name: "edge-1".into(),
                credential_hash: "a".repeat(64),
                enrolled: 1_700_000_000,
            })
        })
        .expect("enroll");
    let create = |extra: &[&str]| {
        let mut a = vec![
            "spoke",
            "token",
            "create",
            "--name",
            "edge-1",
            "--state",
            s(&state),
        ];
        a.extend(extra);
        run(&a)
    };
    let refused = create(&[]);
    let err = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{err}");
    assert!(
        err.contains("already enrolled") && err.contains("replaces"),
        "{err}"
    );
    assert!(err.contains("--replace"), "{err}");
    assert!(text(&refused.stdout).is_empty(), "no token printed");
    let st = Store::open(&state).expect("store").load().expect("load");
    assert!(st.join_tokens.is_empty(), "no token stored");
    let replaced = create(&["--replace"]);
    assert!(replaced.status.success(), "{}", text(&replaced.stderr));
    assert!(
        text(&replaced.stdout).contains("--token "),
        "{}",
        text(&replaced.stdout)
    );
    // A new name needs no flag.
    let fresh = run(&[
        "spoke",
        "token",
        "create",
        "--name",
        "edge-2",
        "--state",
        s(&state),
    ]);
    assert!(fresh.status.success(), "{}", text(&fresh.stderr));
}

#[test]
fn readyz_is_503_with_reasons_when_docker_is_unreachable_and_healthz_stays_200() {
    let dir = temp_dir("op-readyz");
    let sock = format!("unix://{}/no-docker.sock", s(&dir));
    let down = Hub::start(&dir, &dir.join("a.json"), &["--docker-host", &sock]);
    let r = down.get("/readyz");
    assert_eq!(r.status, 503, "{}", r.text());
    let v = r.json();
    assert_eq!(v["ready"], false, "{v}");
    let reasons = v["reasons"].as_array().expect("reasons");
    assert!(
        reasons.iter().any(|x| x
            .as_str()
            .is_some_and(|t| t.contains("local spoke") && t.contains("no-docker.sock"))),
        "{v}"
    );
    assert_eq!(down.get("/healthz").status, 200, "liveness only");
    let log = down.log();
    assert!(
        log.contains("[WARN]") && log.contains("no-docker.sock"),
        "{log}"
    );
    // The local spoke's status in list_spokes says why.
    let spokes = down.spokes();
    let local = &spokes[0];
    assert_eq!(local["name"], "local", "{spokes}");
    assert!(
        local["docker"]
            .as_str()
            .is_some_and(|d| d.contains("cannot reach Docker")),
        "{spokes}"
    );
    let no_local = Hub::start(&dir, &dir.join("b.json"), &["--no-local"]);
    let r = no_local.get("/readyz");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["ready"], true);
    // The real daemon, where it runs: ready, and the start-up report names its API version.
    let real = Hub::start(&dir, &dir.join("c.json"), &[]);
    let r = real.get("/readyz");
    assert_eq!(r.status, 200, "{}", r.text());
    let log = real.log();
    assert!(log.contains("answers (API 1."), "{log}");
    assert!(
        log.contains("box image"),
        "says whether the default image is there: {log}"
    );
}

#[test]
fn list_spokes_shows_a_remote_spokes_docker_error_after_a_reaper_pass() {
    let dir = temp_dir("op-remote-docker");
    let state = dir.join("state.json");
    let hub = Hub::start(&dir, &state, &["--no-local", "--reap-interval", "1s"]);
    let out = run(&[
        "spoke",
        "token",
        "create",
        "--name",
        "bad-docker",
        "--state",
        s(&state),
    ]);
    let printed = text(&out.stdout);
    let token = printed
        .split("--token ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("token")
        .to_string();
    let sock = format!("unix://{}/missing.sock", s(&dir));
    let _spoke = Proc(
        bin()
            .args(["spoke", "--hub", &format!("ws://127.0.0.1:{}", hub.plane)])
            .args(["--token", &token, "--docker-host", &sock])
            .args(["--credentials", s(&dir.join("creds.json"))])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("spoke.log")).expect("log"))
            .spawn()
            .expect("spoke"),
    );
    let docker = support::wait_for("list_spokes to show the spoke's Docker error", || {
        let spokes = hub.spokes();
        let me = spokes
            .as_array()?
            .iter()
            .find(|s| s["name"] == "bad-docker")?
            .clone();
        (me["connected"] == true).then_some(())?;
        me["docker"].as_str().map(str::to_string)
    });
    assert!(
        docker.contains("cannot reach Docker") && docker.contains("missing.sock"),
        "{docker}"
    );
}
