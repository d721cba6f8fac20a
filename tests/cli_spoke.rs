//! The real `llmbox` binary: token, list and revoke commands on a state file, file modes,
//! only hashes on disk, exit codes (2 usage, 3 rejected), `--version`, and `llmbox hub`
//! serving `/healthz` and the spoke plane.

mod support;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use llmbox::util::secret::sha256_hex;
use support::cluster::Hub;
use support::{free_port, temp_dir, wait_for};

fn llmbox(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_llmbox"))
        .args(args)
        .output()
        .expect("run llmbox")
}

/// `llmbox spoke --hub URL --token T --credentials FILE`, run to its end.
fn spoke_with_token(hub: &str, token: &str, creds: &Path) -> Output {
    llmbox(&[
        "spoke",
        "--hub",
        hub,
        "--token",
        token,
        "--credentials",
        creds.to_str().expect("utf8"),
    ])
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every 64-hex word in `text`.
fn hex64_words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_ascii_hexdigit())
        .filter(|w| w.len() == 64)
        .map(str::to_string)
        .collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

/// Kills and reaps a child process this test started.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn version_flag_and_command_print_the_version() {
    for args in [&["--version"][..], &["version"][..]] {
        let o = llmbox(args);
        assert!(o.status.success());
        assert_eq!(
            stdout(&o),
            format!("llmbox {}\n", env!("CARGO_PKG_VERSION"))
        );
    }
}

#[test]
fn token_create_prints_the_token_once_and_stores_only_its_hash() {
    let dir = temp_dir("cli-token");
    let state = dir.join("state.json");
    let s = state.to_str().expect("utf8");
    let o = llmbox(&[
        "spoke", "token", "create", "--name", "edge-1", "--ttl", "1h30m", "--state", s,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let tokens = hex64_words(&out);
    assert_eq!(tokens.len(), 1, "the token appears exactly once: {out}");
    let token = &tokens[0];
    assert!(
        out.contains(&format!("llmbox spoke --hub ws://HUB:8081 --token {token}")),
        "{out}"
    );
    assert!(out.contains(s), "names the state file: {out}");
    let raw = std::fs::read_to_string(&state).expect("state");
    assert!(!raw.contains(token.as_str()));
    assert!(raw.contains(&sha256_hex(token.as_bytes())));
    assert_eq!(mode(&state), 0o600);

    let list = llmbox(&["spoke", "token", "list", "--state", s]);
    let listed = stdout(&list);
    assert!(
        listed.contains(&sha256_hex(token.as_bytes())[..12]),
        "{listed}"
    );
    assert!(
        listed.contains("edge-1") && !listed.contains(token.as_str()),
        "{listed}"
    );

    let id = &sha256_hex(token.as_bytes())[..8];
    let r = llmbox(&["spoke", "token", "revoke", "--id", id, "--state", s]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(!stdout(&llmbox(&["spoke", "token", "list", "--state", s])).contains("edge-1"));
    let again = llmbox(&["spoke", "token", "revoke", "--id", id, "--state", s]);
    // Not there any more: a runtime answer (1), as for `--name` and `spoke revoke`.
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_flags_and_durations_exit_2_with_the_usage_line() {
    let dir = temp_dir("cli-usage");
    let s = dir.join("state.json");
    let s = s.to_str().expect("utf8");
    for (args, says) in [
        (vec!["spoke", "token", "create", "--state", s], "--name"),
        (
            vec![
                "spoke", "token", "create", "--name", "e", "--ttl", "5x", "--state", s,
            ],
            "--ttl",
        ),
        (
            vec!["spoke", "token", "create", "--name", "local", "--state", s],
            "reserved",
        ),
        (
            vec![
                "spoke", "token", "create", "--name", "Bad_Name", "--state", s,
            ],
            "invalid spoke name",
        ),
        (
            vec![
                "spoke", "token", "create", "--name", "e", "--ttl", "0", "--state", s,
            ],
            "--ttl: token lifetime 0s is out of range",
        ),
        (
            vec![
                "spoke", "token", "create", "--name", "e", "--ttl", "9000h", "--state", s,
            ],
            "--ttl: token lifetime 9000h is out of range",
        ),
        (
            vec!["spoke", "token", "create", "--name", "édge", "--state", s],
            "invalid spoke name",
        ),
        (vec!["spoke", "token", "revoke", "--state", s], "--id"),
        (
            vec!["spoke", "token", "revoke", "--id", "ab", "--state", s],
            "too short",
        ),
        (
            vec!["spoke", "--hub", "ws://127.0.0.1:1", "--heartbeat", "soon"],
            "--heartbeat",
        ),
        (vec!["spoke", "--hub", "http://x", "--token", "t"], "--hub"),
        (vec!["spoke", "--token", "t"], "--hub is required"),
        (vec!["spoke", "--bogus"], "--bogus"),
        (vec!["hub", "--heartbeat", "x1"], "--heartbeat"),
        (vec!["hub", "--log-level", "loud"], "--log-level"),
    ] {
        let o = llmbox(&args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(
            err.to_lowercase().contains("usage: llmbox"),
            "{args:?} prints a usage line: {err}"
        );
    }
    assert!(!Path::new(s).exists(), "nothing was written");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(left.is_empty(), "bad input created {left:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn revoking_what_is_not_there_exits_1_naming_it() {
    let dir = temp_dir("cli-notfound");
    let s = dir.join("state.json");
    let s = s.to_str().expect("utf8");
    for (args, says) in [
        (
            vec!["spoke", "token", "revoke", "--id", "abcdef", "--state", s],
            "no join token has an id starting with \"abcdef\"",
        ),
        (
            vec!["spoke", "token", "revoke", "--name", "edge", "--state", s],
            "no join token for spoke \"edge\"",
        ),
        (
            vec!["spoke", "revoke", "--name", "edge", "--state", s],
            "no spoke or join token named \"edge\"",
        ),
    ] {
        let o = llmbox(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_spoke_without_credentials_or_token_says_how_to_enroll() {
    let dir = temp_dir("cli-nocreds");
    let creds = dir.join("none.json");
    let o = llmbox(&[
        "spoke",
        "--hub",
        "ws://127.0.0.1:1",
        "--credentials",
        creds.to_str().expect("utf8"),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("llmbox spoke token create"),
        "{}",
        stderr(&o)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_rejected_enrollment_exits_3_telling_to_enroll_again() {
    let hub = Hub::start("cli-reject", Duration::from_secs(5));
    let creds = hub.dir.join("creds.json");
    let unknown = "ab".repeat(32);
    let o = spoke_with_token(&hub.url, &unknown, &creds);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("enroll again"), "{}", stderr(&o));
    assert!(!creds.exists());
}

#[test]
fn an_unwritable_credentials_path_does_not_spend_the_token() {
    let hub = Hub::start("cli-unwritable", Duration::from_secs(5));
    let token = hub.token("edge");
    let creds = hub.dir.join("missing-dir").join("creds.json");
    let o = spoke_with_token(&hub.url, &token, &creds);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("not writable"), "{}", stderr(&o));
    assert_eq!(
        hub.store.load().expect("state").join_tokens.len(),
        1,
        "token unspent"
    );
}

#[test]
fn an_unusable_credentials_file_exits_1_saying_to_move_it_away_and_spends_no_token() {
    let hub = Hub::start("cli-badcreds", Duration::from_secs(5));
    let token = hub.token("edge");
    let creds = hub.dir.join("creds.json");
    let long = format!(r#"{{"name":"edge","credential":"{}"}}"#, "ab".repeat(32));
    for content in [
        "{not json".to_string(),
        r#"{"name":"","credential":""}"#.to_string(),
        long.replace("edge", "Not A Label"),
        r#"{"name":"edge","credential":"short"}"#.to_string(),
    ] {
        std::fs::write(&creds, &content).expect("write");
        let o = spoke_with_token(&hub.url, &token, &creds);
        assert_eq!(o.status.code(), Some(1), "{content}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains(&format!("credentials file {}", creds.display()))
                && err.contains("move it away"),
            "{content}: {err}"
        );
        assert_eq!(std::fs::read_to_string(&creds).expect("kept"), content);
    }
    // A directory where the file should be: a clear read error, nothing spent.
    std::fs::remove_file(&creds).expect("rm");
    std::fs::create_dir(&creds).expect("dir");
    let o = spoke_with_token(&hub.url, &token, &creds);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("read credentials"), "{}", stderr(&o));
    assert_eq!(hub.store.load().expect("state").join_tokens.len(), 1);
}

#[test]
fn the_spoke_binary_enrolls_saves_0600_credentials_and_spoke_list_and_revoke_work() {
    let hub = Hub::start("cli-enroll", Duration::from_secs(5));
    let token = hub.token("edge");
    let creds = hub.dir.join("creds.json");
    let child = Command::new(env!("CARGO_BIN_EXE_llmbox"))
        .args([
            "spoke",
            "--hub",
            &hub.url,
            "--token",
            &token,
            "--credentials",
        ])
        .arg(&creds)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let _child = ChildGuard(child);
    let saved = wait_for("credentials file", || {
        std::fs::read_to_string(&creds)
            .ok()
            .filter(|t| t.ends_with('\n'))
    });
    assert_eq!(mode(&creds), 0o600);
    let v: serde_json::Value = serde_json::from_str(&saved).expect("json");
    assert_eq!(v["name"], "edge");
    let credential = v["credential"].as_str().expect("credential");
    let state_text = std::fs::read_to_string(hub.store.path()).expect("state");
    assert!(!state_text.contains(credential) && !state_text.contains(token.as_str()));
    assert!(state_text.contains(&sha256_hex(credential.as_bytes())));

    let s = hub.store.path().to_str().expect("utf8");
    let list = stdout(&llmbox(&["spoke", "list", "--state", s]));
    assert!(list.lines().any(|l| l.starts_with("edge ")), "{list}");
    let r = llmbox(&["spoke", "revoke", "--name", "edge", "--state", s]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(!stdout(&llmbox(&["spoke", "list", "--state", s])).contains("edge"));
    let missing = llmbox(&["spoke", "revoke", "--name", "edge", "--state", s]);
    assert_eq!(missing.status.code(), Some(1));
}

#[test]
fn the_hub_serves_healthz_and_the_spoke_plane() {
    let dir = temp_dir("cli-hub");
    let (http, plane) = (free_port(), free_port());
    let state = dir.join("state.json");
    let child = Command::new(env!("CARGO_BIN_EXE_llmbox"))
        .args(["hub", "--no-local", "--heartbeat", "1s"])
        .args(["--listen", &format!("127.0.0.1:{http}")])
        .args(["--spoke-listen", &format!("127.0.0.1:{plane}")])
        .arg("--state")
        .arg(&state)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn hub");
    let _hub = ChildGuard(child);
    let get = |port: u16, path: &str| -> Option<String> {
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        tcp.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(
            tcp,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut buf = Vec::new();
        let _ = tcp.read_to_end(&mut buf);
        Some(String::from_utf8_lossy(&buf).into_owned())
    };
    let health = wait_for("hub up", || get(http, "/healthz"));
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.ends_with("ok\n"), "{health}");
    let plain = wait_for("plane up", || get(plane, "/spoke/connect"));
    assert!(plain.starts_with("HTTP/1.1 400"), "{plain}");
    // A token minted by the CLI while the hub runs works at once.
    let o = llmbox(&[
        "spoke",
        "token",
        "create",
        "--name",
        "edge",
        "--state",
        state.to_str().expect("utf8"),
    ]);
    let token = hex64_words(&stdout(&o)).pop().expect("token");
    let tcp = std::net::TcpStream::connect(("127.0.0.1", plane)).expect("connect");
    let (mut ws, _) =
        tungstenite::client::client(format!("ws://127.0.0.1:{plane}/spoke/connect"), tcp)
            .expect("upgrade");
    ws.send(tungstenite::Message::text(format!(
        r#"{{"type":"enroll","payload":{{"join_token":"{token}"}}}}"#
    )))
    .expect("send");
    let welcome = ws.read().expect("welcome").into_text().expect("text");
    assert!(
        welcome.starts_with(r#"{"type":"welcome","payload":{"name":"edge","credential":""#),
        "{welcome}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_corrupt_state_file_stops_the_hub_naming_the_path() {
    let dir = temp_dir("cli-corrupt");
    let state = dir.join("state.json");
    std::fs::write(&state, "{not json").expect("write");
    let o = llmbox(&[
        "hub",
        "--no-local",
        "--listen",
        "127.0.0.1:0",
        "--spoke-listen",
        "127.0.0.1:0",
        "--state",
        state.to_str().expect("utf8"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(state.to_str().expect("utf8")),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read_to_string(&state).expect("kept"), "{not json");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn secrets_never_reach_the_hub_log_even_at_trace() {
    let dir = temp_dir("cli-secrets");
    let (http, plane) = (free_port(), free_port());
    let state = dir.join("state.json");
    let log = dir.join("hub.log");
    let child = Command::new(env!("CARGO_BIN_EXE_llmbox"))
        .args(["hub", "--no-local", "--log-level", "trace"])
        .args(["--listen", &format!("127.0.0.1:{http}")])
        .args(["--spoke-listen", &format!("127.0.0.1:{plane}")])
        .arg("--state")
        .arg(&state)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn hub");
    let hub = ChildGuard(child);
    let o = llmbox(&[
        "spoke",
        "token",
        "create",
        "--name",
        "edge",
        "--state",
        state.to_str().expect("utf8"),
    ]);
    let token = hex64_words(&stdout(&o)).pop().expect("token");
    let tcp = wait_for("plane up", || {
        std::net::TcpStream::connect(("127.0.0.1", plane)).ok()
    });
    let (mut ws, _) =
        tungstenite::client::client(format!("ws://127.0.0.1:{plane}/spoke/connect"), tcp)
            .expect("upgrade");
    ws.send(tungstenite::Message::text(format!(
        r#"{{"type":"enroll","payload":{{"join_token":"{token}"}}}}"#
    )))
    .expect("send");
    let welcome = ws.read().expect("welcome").into_text().expect("text");
    let v: serde_json::Value = serde_json::from_str(&welcome).expect("json");
    let credential = v["payload"]["credential"]
        .as_str()
        .expect("credential")
        .to_string();
    // A second, rejected use of the token is logged too (with its reason, not the token).
    let tcp = std::net::TcpStream::connect(("127.0.0.1", plane)).expect("connect");
    let (mut again, _) =
        tungstenite::client::client(format!("ws://127.0.0.1:{plane}/spoke/connect"), tcp)
            .expect("upgrade");
    again
        .send(tungstenite::Message::text(format!(
            r#"{{"type":"enroll","payload":{{"join_token":"{token}"}}}}"#
        )))
        .expect("send");
    let _ = again.read();
    // Secrets sent the wrong way (a double-encoded payload, a misplaced field, a binary frame)
    // are rejected without being quoted in the reason.
    for bad in [
        tungstenite::Message::text(format!(
            r#"{{"type":"enroll","payload":"{{\"join_token\":\"{token}\"}}"}}"#
        )),
        tungstenite::Message::text(format!(r#"{{"type":"{credential}"}}"#)),
        tungstenite::Message::text(format!(r#"{{"type":"enroll","id":"{token}"}}"#)),
        tungstenite::Message::Binary(token.clone().into_bytes().into()),
    ] {
        let tcp = std::net::TcpStream::connect(("127.0.0.1", plane)).expect("connect");
        let (mut c, _) =
            tungstenite::client::client(format!("ws://127.0.0.1:{plane}/spoke/connect"), tcp)
                .expect("upgrade");
        c.send(bad).expect("send");
        let _ = c.read();
    }
    drop((ws, again, hub));
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        text.contains("enrollment rejected"),
        "the hub logged: {text}"
    );
    let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    for secret in [&token, &credential] {
        assert!(!text.contains(secret.as_str()), "secret in the log: {text}");
        assert!(
            !text.contains(&hex(secret)[..32]),
            "secret (hex) in the log"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
