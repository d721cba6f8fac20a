//! The real `llmbox hub` binary with API keys, the private MCP port and the audit log: it
//! refuses to serve MCP beyond loopback without a key (exit 2), a key made and revoked with
//! `llmbox apikey` takes effect within a second, `--mcp-listen` splits the ports, the audit
//! log is reopened on SIGHUP, and `--exec-user 0` warns at start.

mod support;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::free_port;

fn llmbox(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_llmbox"))
        .args(args)
        .output()
        .expect("run llmbox")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8")
}

/// Kills and reaps a hub this test started.
struct HubChild(Child);

impl Drop for HubChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_hub(state: &Path, log: &Path, extra: &[&str]) -> HubChild {
    let err = std::fs::File::create(log).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_llmbox"))
        .args(["hub", "--no-local", "--state", s(state)])
        .args(["--spoke-listen", &format!("127.0.0.1:{}", free_port())])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .expect("spawn hub");
    HubChild(child)
}

/// One raw HTTP request; `None` while nothing listens.
fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> Option<(u16, String)> {
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.push_str(body);
    tcp.write_all(req.as_bytes()).ok()?;
    let mut buf = Vec::new();
    let _ = tcp.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    Some((status, text))
}

fn mcp(port: u16, key: Option<&str>, body: &str) -> u16 {
    let auth = key.map(|k| format!("Authorization: Bearer {k}"));
    let mut headers = vec!["Content-Type: application/json", "Accept: application/json"];
    if let Some(a) = &auth {
        headers.push(a);
    }
    http(port, "POST", "/mcp", &headers, body).map_or(0, |(status, _)| status)
}

const PING: &str = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
const LIST_SPOKES: &str = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"list_spokes","arguments":{}}}"#;

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

#[test]
fn mcp_beyond_loopback_without_a_key_exits_2_saying_to_create_one() {
    let dir = support::temp_dir("refuse");
    let state = dir.join("state.json");
    for extra in [
        vec!["--listen".to_string(), format!("0.0.0.0:{}", free_port())],
        vec![
            "--listen".to_string(),
            format!("127.0.0.1:{}", free_port()),
            "--mcp-listen".to_string(),
            format!("0.0.0.0:{}", free_port()),
        ],
    ] {
        let mut args = vec!["hub", "--no-local", "--state", s(&state)];
        let plane = format!("127.0.0.1:{}", free_port());
        args.extend(["--spoke-listen", &plane]);
        args.extend(extra.iter().map(String::as_str));
        let out = llmbox(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {err}");
        assert!(err.contains("llmbox apikey create"), "{err}");
    }
    // With --insecure-no-auth it starts (and says what that means); with a key it starts too.
    let port = free_port();
    let log = dir.join("insecure.log");
    let listen = format!("0.0.0.0:{port}");
    let _hub = spawn_hub(&state, &log, &["--listen", &listen, "--insecure-no-auth"]);
    wait_until("insecure hub up", Duration::from_secs(10), || {
        mcp(port, None, PING) == 200
    });
    let logged = std::fs::read_to_string(&log).expect("log");
    assert!(logged.contains("no caller authentication"), "{logged}");
    drop(_hub);
    let key = support::apikey_create(&state, "ops", false);
    let port = free_port();
    let listen = format!("0.0.0.0:{port}");
    let _hub = spawn_hub(&state, &dir.join("keyed.log"), &["--listen", &listen]);
    wait_until("keyed hub up", Duration::from_secs(10), || {
        mcp(port, Some(&key), PING) == 200
    });
    assert_eq!(mcp(port, None, PING), 401);
}

#[test]
fn apikey_create_and_revoke_reach_a_running_hub_within_a_second() {
    let dir = support::temp_dir("live");
    let state = dir.join("state.json");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _hub = spawn_hub(&state, &dir.join("hub.log"), &["--listen", &listen]);
    wait_until("hub up", Duration::from_secs(10), || {
        mcp(port, None, PING) == 200
    });
    let key = support::apikey_create(&state, "ci", false);
    let took = wait_until("the key is required", Duration::from_secs(1), || {
        mcp(port, None, PING) == 401
    });
    println!("create took effect after {took:?}");
    assert_eq!(mcp(port, Some(&key), LIST_SPOKES), 200);
    let out = llmbox(&["apikey", "revoke", "--name", "ci", "--state", s(&state)]);
    assert!(out.status.success());
    let took = wait_until("the revoked key is refused", Duration::from_secs(1), || {
        mcp(port, Some(&key), PING) == 401
    });
    println!("revoke took effect after {took:?}");
    let list = llmbox(&["apikey", "list", "--state", s(&state)]);
    assert!(!String::from_utf8_lossy(&list.stdout).contains("ci "));
}

#[test]
fn mcp_listen_splits_the_ports_and_the_audit_log_is_reopened_on_sighup() {
    let dir = support::temp_dir("ports");
    let state = dir.join("state.json");
    let audit = dir.join("audit.log");
    let key = support::apikey_create(&state, "desk", false);
    let (page, private) = (free_port(), free_port());
    let hub = spawn_hub(
        &state,
        &dir.join("hub.log"),
        &[
            "--listen",
            &format!("127.0.0.1:{page}"),
            "--mcp-listen",
            &format!("127.0.0.1:{private}"),
            "--audit-log",
            s(&audit),
        ],
    );
    wait_until("hub up", Duration::from_secs(10), || {
        mcp(private, Some(&key), PING) == 200
    });
    assert_eq!(mcp(page, Some(&key), PING), 404, "no MCP on the page port");
    assert_eq!(
        http(page, "GET", "/metrics", &[], "").map(|r| r.0),
        Some(404)
    );
    assert_eq!(
        http(page, "GET", "/healthz", &[], "").map(|r| r.0),
        Some(200)
    );
    assert_eq!(
        http(private, "GET", "/metrics", &[], "").map(|r| r.0),
        Some(200)
    );
    assert_eq!(
        http(private, "GET", "/healthz", &[], "").map(|r| r.0),
        Some(404)
    );
    assert_eq!(mcp(private, Some(&key), LIST_SPOKES), 200);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&audit).expect("audit log").permissions(),
    ) & 0o777;
    assert_eq!(mode, 0o600);
    // logrotate: move the file, send SIGHUP, and the next line lands in a new file.
    let rotated = dir.join("audit.log.1");
    std::fs::rename(&audit, &rotated).expect("rotate");
    let hup = Command::new("kill")
        .args(["-HUP", &hub.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(hup.success());
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        mcp(private, Some(&key), LIST_SPOKES),
        200,
        "the hub survived SIGHUP"
    );
    let old = std::fs::read_to_string(&rotated).expect("rotated");
    let new = std::fs::read_to_string(&audit).expect("reopened");
    assert_eq!(old.lines().count(), 1, "{old}");
    assert_eq!(new.lines().count(), 1, "{new}");
    for line in old.lines().chain(new.lines()) {
        let v: serde_json::Value = serde_json::from_str(line).expect("json line");
        assert_eq!(
            (v["tool"].as_str(), v["caller"].as_str()),
            (Some("list_spokes"), Some("desk"))
        );
    }
    assert!(!format!("{old}{new}").contains(&key["llmbox_".len()..]));
}

#[test]
fn exec_user_0_warns_at_start_about_what_it_exposes() {
    let dir = support::temp_dir("rootexec");
    let state = dir.join("state.json");
    let log = dir.join("hub.log");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    // A local spoke (the warning concerns its boxes) on a daemon that need not answer.
    let child = Command::new(env!("CARGO_BIN_EXE_llmbox"))
        .args([
            "hub",
            "--state",
            s(&state),
            "--listen",
            &listen,
            "--exec-user",
            "0",
        ])
        .args(["--spoke-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--docker-host", "unix:///nonexistent/docker.sock"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn");
    let _hub = HubChild(child);
    wait_until("hub up", Duration::from_secs(10), || {
        mcp(port, None, PING) == 200
    });
    let logged = std::fs::read_to_string(&log).expect("log");
    assert!(
        logged.contains("--exec-user 0") && logged.contains("credentials"),
        "{logged}"
    );
    let bad = llmbox(&["hub", "--exec-user", "root", "--state", s(&state)]);
    assert_eq!(bad.status.code(), Some(2));
}
