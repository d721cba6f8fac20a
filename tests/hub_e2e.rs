//! End to end with real parts: the `llmbox hub` binary as its own process, the real Docker
//! daemon, the test image with the fake `claude` injected by `--claude-bin`, the official MCP
//! Python SDK 1.x and 2.x, a real browser, and a hub restart on the same state file.
//!
//! Each hub runs its `local` spoke under a test namespace (`--local-namespace`), whose guard
//! removes every box and network labelled with it, even when the test fails.
//! Needs Docker and `make test-clients`; fails loudly without them.

mod support;

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::http::request;
use support::{root, temp_dir};

/// One hub-process test at a time: each starts boxes on the shared daemon (2 cores).
static SERIAL: Mutex<()> = Mutex::new(());

fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// A running `llmbox hub`; killed on drop.
struct HubProcess {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl HubProcess {
    fn start(ns: &str, dir: &Path, state: &Path, addr: SocketAddr, extra: &[&str]) -> HubProcess {
        Self::start_with_plane(ns, dir, state, addr, free_addr(), extra)
    }

    fn start_with_plane(
        ns: &str,
        dir: &Path,
        state: &Path,
        addr: SocketAddr,
        plane: SocketAddr,
        extra: &[&str],
    ) -> HubProcess {
        let log = dir.join(format!("hub-{}.log", addr.port()));
        let out = File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_llmbox"))
            .arg("hub")
            .args(["--listen", &addr.to_string()])
            .args(["--spoke-listen", &plane.to_string()])
            .arg("--state")
            .arg(state)
            .args(["--box-image", support::docker::TEST_IMAGE])
            .arg("--claude-bin")
            .arg(support::fixtures().join("fake-claude"))
            .args([
                "--log-level",
                "debug",
                "--memory-mb",
                "256",
                "--local-namespace",
                ns,
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .expect("start llmbox hub");
        let hub = HubProcess { child, addr, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(addr).is_ok()
                && request(addr, "GET", "/healthz", &[], b"").status == 200
            {
                return hub;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("llmbox hub did not come up: {}", hub.log_text());
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn python(venv: &str) -> PathBuf {
    let p = root().join(venv).join("bin/python");
    assert!(
        p.exists(),
        "{} is missing: run `make test-clients` (make test does)",
        p.display()
    );
    p
}

fn run_script(python: &Path, script: &str, args: &[&str]) -> String {
    let out = Command::new(python)
        .arg(root().join("tests/clients").join(script))
        .args(args)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{script}: {}", stdout.trim());
    assert!(
        out.status.success(),
        "{script} {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn call(addr: SocketAddr, tool: &str, args: Value) -> Value {
    let body = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":tool,"arguments":args}});
    let r = request(
        addr,
        "POST",
        "/mcp",
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["result"].clone()
}

#[test]
fn python_sdks_and_a_browser_drive_a_real_hub_on_docker() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let ns = support::docker::TestNs::new("e2e-sdk");
    let ids = ["e2e-v1", "e2e-v2", "e2e-web", "e2e-phone"].map(String::from);
    let dir = temp_dir("sdk");
    let hub = HubProcess::start(&ns.ns, &dir, &dir.join("state.json"), free_addr(), &[]);
    let (url, mcp) = (hub.url(), format!("{}/mcp", hub.url()));

    let v1 = run_script(
        &python(".venv-mcp1"),
        "mcp_flow.py",
        &[
            "--url",
            &mcp,
            "--public-url",
            &url,
            "--box-id",
            &ids[0],
            "--spoke",
            "local",
            "--bad-code-first",
        ],
    );
    assert!(v1.contains("protocol 2025-11-25): OK"), "{v1}");
    let v2 = run_script(
        &python(".venv-mcp2"),
        "mcp_flow.py",
        &["--url", &mcp, "--public-url", &url, "--box-id", &ids[1]],
    );
    assert!(v2.contains("protocol 2026-07-28): OK"), "{v2}");

    // A person in a real browser, desktop with a mistyped code first, then a phone in dark mode.
    let shots = root().join("docs/screenshots");
    let mut page_tokens = Vec::new();
    for (id, name, w, h, extra) in [
        (&ids[2], "desktop", "1280", "900", "--bad-code-first"),
        (&ids[3], "phone", "390", "844", "--dark"),
    ] {
        let created = call(
            hub.addr,
            "create_llmbox",
            json!({"box_id": id, "description": "a box for the browser test"}),
        );
        assert_eq!(created["isError"], false, "{created}");
        let page = created["structuredContent"]["auth_url"]
            .as_str()
            .expect("link")
            .to_string();
        page_tokens.push(support::hub::token_of(&page));
        let out = run_script(
            &python(".venv-mcp1"),
            "browser_flow.py",
            &[
                "--page",
                &page,
                "--box-id",
                id,
                "--name",
                name,
                "--width",
                w,
                "--height",
                h,
                "--shots",
                &shots.display().to_string(),
                extra,
            ],
        );
        assert!(out.contains("OK https://claude.ai/code/session_"), "{out}");
        if name == "desktop" {
            assert!(
                out.contains("fresh link differs from the first: True"),
                "{out}"
            );
        }
        let got = call(hub.addr, "get_llmbox", json!({"box_id": id}));
        assert_eq!(got["structuredContent"]["status"], "ready", "{got}");
        assert_eq!(
            call(hub.addr, "destroy_llmbox", json!({"box_id": id}))["isError"],
            false
        );
    }

    // A box whose login does not loop (like a Go spoke's box) stops after a code: the page
    // says so and offers no form, and the chatbot is told to make a new box.
    let stop_id = "e2e-stop";
    let created = call(hub.addr, "create_llmbox", json!({"box_id": stop_id}));
    let page = created["structuredContent"]["auth_url"]
        .as_str()
        .expect("link")
        .to_string();
    page_tokens.push(support::hub::token_of(&page));
    let browser_shots = root().join("target/browser-shots");
    let out = run_script(
        &python(".venv-mcp1"),
        "browser_flow.py",
        &[
            "--page",
            &page,
            "--box-id",
            stop_id,
            "--name",
            "stop",
            "--code",
            "stop-box",
            "--expect",
            "stopped",
            "--shots",
            &browser_shots.display().to_string(),
        ],
    );
    assert!(out.contains("OK stopped"), "{out}");
    std::fs::copy(
        browser_shots.join("stop-stopped.png"),
        shots.join("desktop-stopped.png"),
    )
    .expect("copy the screenshot");
    let got = call(hub.addr, "get_llmbox", json!({"box_id": stop_id}));
    assert_eq!(got["structuredContent"]["status"], "error", "{got}");
    assert!(got["structuredContent"].get("auth_url").is_none(), "{got}");
    assert!(
        got["structuredContent"]["instructions"]
            .as_str()
            .expect("text")
            .contains("create_llmbox a new box"),
        "{got}"
    );
    assert_eq!(
        call(hub.addr, "destroy_llmbox", json!({"box_id": stop_id}))["isError"],
        false
    );

    let log = hub.log_text();
    for secret in [
        "e2e-good-code-4242",
        "browser-good-code-777",
        "bad-code",
        "stop-box",
    ] {
        assert!(
            !log.contains(secret),
            "the code {secret:?} reached the hub's log:\n{log}"
        );
    }
    for token in &page_tokens {
        assert!(
            !log.contains(token.as_str()),
            "a page token reached the hub's log"
        );
    }
    assert!(
        ns.containers().is_empty(),
        "boxes were left behind: {:?}",
        ns.containers()
    );
}

#[test]
fn a_restarted_hub_keeps_pending_links_and_ready_boxes() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let ns = support::docker::TestNs::new("e2e-restart");
    let (pending_id, ready_id) = ("e2e-pend".to_string(), "e2e-ready".to_string());
    let dir = temp_dir("restart");
    let state = dir.join("state.json");
    let addr = free_addr();
    let mut first = HubProcess::start(&ns.ns, &dir, &state, addr, &[]);

    let link_of = |v: &Value| {
        v["structuredContent"]["auth_url"]
            .as_str()
            .expect("link")
            .to_string()
    };
    let pending = call(addr, "create_llmbox", json!({"box_id": pending_id}));
    let ready = call(addr, "create_llmbox", json!({"box_id": ready_id}));
    let (pending_link, ready_link) = (link_of(&pending), link_of(&ready));
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let path = |link: &str| {
        link.trim_start_matches(&format!("http://{addr}"))
            .to_string()
    };
    let done = request(
        addr,
        "POST",
        &path(&ready_link),
        &form,
        b"code=restart-code-1",
    );
    assert!(
        done.text().contains("id=\"session-url\""),
        "{}",
        done.text()
    );
    let session_url =
        call(addr, "get_llmbox", json!({"box_id": ready_id}))["structuredContent"]["session_url"]
            .clone();
    first.kill();

    let second = HubProcess::start(&ns.ns, &dir, &state, addr, &[]);
    let got = call(addr, "get_llmbox", json!({"box_id": ready_id}));
    assert_eq!(got["structuredContent"]["status"], "ready", "{got}");
    assert_eq!(got["structuredContent"]["session_url"], session_url);
    // The box's terminal echoed the code; the restarted hub knows it only by hash and still
    // hides it.
    let cid = got["structuredContent"]["container_id"]
        .as_str()
        .expect("id")
        .to_string();
    let (_, raw_logs, _) = support::docker::docker(&["logs", &cid]);
    assert!(
        raw_logs.contains("restart-code-1"),
        "the box did not echo the code: {raw_logs}"
    );
    let logs = call(addr, "get_llmbox_logs", json!({"box_id": ready_id}));
    let text = logs["structuredContent"]["logs"].as_str().expect("logs");
    assert!(
        !text.contains("restart-code-1") && text.contains("[code hidden]"),
        "{text}"
    );
    assert!(!text.contains("oauth/authorize"), "{text}");
    let page = request(addr, "GET", &path(&pending_link), &[], b"");
    assert_eq!(
        page.status, 200,
        "the pending link died with the old process"
    );
    let activated = request(
        addr,
        "POST",
        &path(&pending_link),
        &form,
        b"code=restart-code-2",
    );
    assert!(
        activated.text().contains("id=\"session-url\""),
        "{}",
        activated.text()
    );
    let got = call(addr, "get_llmbox", json!({"box_id": pending_id}));
    assert_eq!(got["structuredContent"]["status"], "ready", "{got}");
    for id in [&pending_id, &ready_id] {
        assert_eq!(
            call(addr, "destroy_llmbox", json!({"box_id": id}))["isError"],
            false
        );
    }
    drop(second);
}

#[test]
fn a_hub_whose_docker_is_down_still_serves_and_says_so() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = temp_dir("nodocker");
    let dead = format!("unix://{}", dir.join("no-docker.sock").display());
    let hub = HubProcess::start(
        "t-e2e-nodocker",
        &dir,
        &dir.join("state.json"),
        free_addr(),
        &["--docker-host", &dead],
    );
    let spokes = call(hub.addr, "list_spokes", json!({}));
    assert_eq!(spokes["structuredContent"]["spokes"][0]["name"], "local");
    assert_eq!(spokes["structuredContent"]["spokes"][0]["connected"], false);
    let created = call(hub.addr, "create_llmbox", json!({"box_id": "never"}));
    assert_eq!(created["isError"], true, "{created}");
    let text = created["content"][0]["text"].as_str().expect("text");
    assert!(
        text.contains("docker")
            || text.contains("Docker")
            || text.contains("no spoke is connected"),
        "{text}"
    );
    let listed = call(hub.addr, "list_llmboxes", json!({}));
    assert_eq!(
        listed["structuredContent"]["unreachable"][0]["spoke"], "local",
        "{listed}"
    );
}

#[test]
fn llmbox_reap_with_state_drops_the_sessions_of_what_it_reaped() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let ns = support::docker::TestNs::new("e2e-reap");
    let id = "e2e-reap".to_string();
    let dir = temp_dir("reap");
    let state = dir.join("state.json");
    let hub = HubProcess::start(&ns.ns, &dir, &state, free_addr(), &["--reap-interval", "0"]);
    let created = call(hub.addr, "create_llmbox", json!({"box_id": id}));
    assert_eq!(created["isError"], false, "{created}");
    let out = Command::new(env!("CARGO_BIN_EXE_llmbox"))
        .args([
            "reap",
            "--ttl",
            "0",
            "--namespace",
            &ns.ns,
            "--log-level",
            "off",
            "--state",
        ])
        .arg(&state)
        .output()
        .expect("llmbox reap");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("box_id={id}")), "{stdout}");
    let state_text = std::fs::read_to_string(&state).expect("state");
    assert!(
        !state_text.contains(&id),
        "the session survived the reap: {state_text}"
    );
    let got = call(hub.addr, "get_llmbox", json!({"box_id": id}));
    assert_eq!(got["isError"], true, "{got}");
}

#[test]
fn hook_files_land_in_a_real_box_and_destroy_gets_the_hook_state() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let ns = support::docker::TestNs::new("e2e-hook");
    let dir = temp_dir("hook");
    let replay = dir.join("destroy.json");
    let hook = dir.join("hook.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nread req\nif [ \"$1\" = box.create ]; then\n  printf '%s\\n' '{{\"files\":[{{\"path\":\"/etc/llmbox/greeting.txt\",\"content\":\"hello from the hook\\n\",\"mode\":\"0640\",\"uid\":1000,\"gid\":1000}}],\"state\":{{\"lease\":\"L-7\"}}}}'\nelse\n  echo \"$req\" > {}\nfi\n",
            replay.display()
        ),
    )
    .expect("write hook");
    let mode = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755);
    std::fs::set_permissions(&hook, mode).expect("chmod");
    let hook_arg = hook.display().to_string();
    let hub = HubProcess::start(
        &ns.ns,
        &dir,
        &dir.join("state.json"),
        free_addr(),
        &["--hook", &hook_arg],
    );
    let created = call(hub.addr, "create_llmbox", json!({"box_id": "hooked"}));
    assert_eq!(created["isError"], false, "{created}");
    let out = call(
        hub.addr,
        "exec_llmbox",
        json!({"box_id": "hooked", "command": "cat /etc/llmbox/greeting.txt; stat -c '%a %u:%g' /etc/llmbox/greeting.txt"}),
    );
    // The hook gave the file to the exec user (1000:1000 by default), who can read it.
    assert_eq!(
        out["structuredContent"]["stdout"], "hello from the hook\n640 1000:1000\n",
        "{out}"
    );
    assert_eq!(
        call(hub.addr, "destroy_llmbox", json!({"box_id": "hooked"}))["isError"],
        false
    );
    let replayed: Value = serde_json::from_str(
        std::fs::read_to_string(&replay)
            .expect("destroy hook ran")
            .trim(),
    )
    .expect("json");
    assert_eq!(replayed["event"], "box.destroy");
    assert_eq!(replayed["box_id"], "hooked");
    assert_eq!(replayed["state"]["lease"], "L-7");
}

/// A running `llmbox spoke`; killed on drop.
struct SpokeProcess(Child);

impl Drop for SpokeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_separate_spoke_process_serves_boxes_in_its_own_namespace() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let local = support::docker::TestNs::new("e2e-hubns");
    let edge = local.sibling("edge");
    let dir = temp_dir("spoke");
    let state = dir.join("state.json");
    let plane = free_addr();
    let hub = HubProcess::start_with_plane(&local.ns, &dir, &state, free_addr(), plane, &[]);
    let plane_url = format!("ws://{plane}");
    let minted = Command::new(env!("CARGO_BIN_EXE_llmbox"))
        .args([
            "spoke", "token", "create", "--name", &edge.ns, "--hub", &plane_url, "--state",
        ])
        .arg(&state)
        .output()
        .expect("token create");
    let text = String::from_utf8_lossy(&minted.stdout).into_owned();
    assert!(
        minted.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&minted.stderr)
    );
    let token = text
        .split("--token ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("token in the output")
        .to_string();
    let spoke_log = File::create(dir.join("spoke.log")).expect("log");
    let _spoke = SpokeProcess(
        Command::new(env!("CARGO_BIN_EXE_llmbox"))
            .args([
                "spoke",
                "--hub",
                &plane_url,
                "--token",
                &token,
                "--log-level",
                "debug",
            ])
            .arg("--credentials")
            .arg(dir.join("spoke.json"))
            .arg("--claude-bin")
            .arg(support::fixtures().join("fake-claude"))
            .args(["--memory-mb", "256"])
            .stdin(Stdio::null())
            .stdout(spoke_log.try_clone().expect("dup"))
            .stderr(spoke_log)
            .spawn()
            .expect("start llmbox spoke"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let spokes = call(hub.addr, "list_spokes", json!({}));
        let up = spokes["structuredContent"]["spokes"]
            .as_array()
            .is_some_and(|l| {
                l.iter()
                    .any(|s| s["name"] == edge.ns.as_str() && s["connected"] == true)
            });
        if up {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the spoke never connected: {spokes}\n{}",
            std::fs::read_to_string(dir.join("spoke.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let url = hub.url();
    let v1 = run_script(
        &python(".venv-mcp1"),
        "mcp_flow.py",
        &[
            "--url",
            &format!("{url}/mcp"),
            "--public-url",
            &url,
            "--box-id",
            "far-away",
            "--spoke",
            &edge.ns,
        ],
    );
    assert!(v1.contains(": OK"), "{v1}");
    // While it ran, the box lived in the spoke's namespace and not in the hub's own.
    assert!(local.containers().is_empty());
    let created = call(
        hub.addr,
        "create_llmbox",
        json!({"box_id": "placed", "spoke": edge.ns}),
    );
    assert_eq!(created["isError"], false, "{created}");
    assert_eq!(
        edge.containers().len(),
        1,
        "the box is not in the spoke's namespace"
    );
    assert!(
        local.containers().is_empty(),
        "the box landed in the hub's namespace"
    );
    assert_eq!(
        call(hub.addr, "destroy_llmbox", json!({"box_id": "placed"}))["isError"],
        false
    );
    assert!(edge.containers().is_empty());
}

/// One MCP tool call with an API key; returns the `result`.
fn keyed_call(addr: SocketAddr, key: &str, tool: &str, args: Value) -> Value {
    let body = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":tool,"arguments":args}});
    let auth = format!("Bearer {key}");
    let r = request(
        addr,
        "POST",
        "/mcp",
        &[
            ("Content-Type", "application/json"),
            ("Accept", "application/json"),
            ("Authorization", &auth),
        ],
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{tool}: {}", r.text());
    r.json()["result"].clone()
}

#[test]
fn each_key_reaches_only_its_own_boxes_and_an_admin_key_all_of_them() {
    let ns = support::docker::TestNs::new("e2e-owners");
    let dir = temp_dir("owners");
    let state = dir.join("state.json");
    let (a, b, admin) = (
        support::apikey_create(&state, "key-a", false),
        support::apikey_create(&state, "key-b", false),
        support::apikey_create(&state, "ops", true),
    );
    let hub = HubProcess::start(&ns.ns, &dir, &state, free_addr(), &[]);
    let call = |key: &str, tool: &str, args: Value| keyed_call(hub.addr, key, tool, args);
    for (key, id) in [(&a, "own-a"), (&b, "own-b")] {
        let made = call(key, "create_llmbox", json!({"box_id": id}));
        assert_eq!(made["isError"], false, "{made}");
    }
    // The same id by another key: refused without naming who holds it.
    let taken = call(&b, "create_llmbox", json!({"box_id": "own-a"}));
    assert_eq!(taken["isError"], true);
    let text = taken["content"][0]["text"].as_str().expect("text");
    assert!(
        text.contains("already exists") && !text.contains("key-a"),
        "{text}"
    );

    // Key b on a's box gets exactly what a box that does not exist gets, for every verb.
    let per_box: [(&str, Value); 4] = [
        ("get_llmbox", json!({})),
        ("get_llmbox_logs", json!({"tail": 5})),
        ("exec_llmbox", json!({"command": "id"})),
        ("destroy_llmbox", json!({})),
    ];
    for (tool, extra) in &per_box {
        let with = |id: &str| {
            let mut args = extra.clone();
            args["box_id"] = json!(id);
            args
        };
        let foreign = call(&b, tool, with("own-a"));
        let missing = call(&b, tool, with("own-zz"));
        assert_eq!(foreign["isError"], true, "{tool}: {foreign}");
        let shown = |v: &Value, id: &str| v.to_string().replace(id, "<ID>");
        assert_eq!(
            shown(&foreign, "own-a"),
            shown(&missing, "own-zz"),
            "{tool}"
        );
        // An admin sees the nonexistent box the same way too (no key is told more).
        assert_eq!(
            shown(&call(&admin, tool, with("own-zz")), "own-zz"),
            shown(&missing, "own-zz"),
            "{tool} for an admin"
        );
    }
    // The box survived b's destroy; its owner reaches it.
    let got = call(&a, "get_llmbox", json!({"box_id": "own-a"}));
    assert_eq!(got["isError"], false, "{got}");
    let ran = call(
        &a,
        "exec_llmbox",
        json!({"box_id": "own-a", "command": "id -u"}),
    );
    assert_eq!(ran["structuredContent"]["stdout"], "1000\n", "{ran}");
    assert_eq!(
        call(&a, "get_llmbox_logs", json!({"box_id": "own-a"}))["isError"],
        false
    );

    let listed = |key: &str| -> Vec<(String, Option<String>)> {
        let l = call(key, "list_llmboxes", json!({}));
        assert_eq!(l["isError"], false, "{l}");
        let mut boxes: Vec<(String, Option<String>)> = l["structuredContent"]["boxes"]
            .as_array()
            .expect("boxes")
            .iter()
            .map(|b| {
                (
                    b["box_id"].as_str().expect("id").to_string(),
                    b["owner"].as_str().map(str::to_string),
                )
            })
            .collect();
        boxes.sort();
        boxes
    };
    assert_eq!(listed(&a), [("own-a".to_string(), None)]);
    assert_eq!(listed(&b), [("own-b".to_string(), None)]);
    assert_eq!(
        listed(&admin),
        [
            ("own-a".to_string(), Some("key-a".to_string())),
            ("own-b".to_string(), Some("key-b".to_string()))
        ]
    );
    // The admin acts on anyone's box.
    let ran = call(
        &admin,
        "exec_llmbox",
        json!({"box_id": "own-b", "command": "echo x"}),
    );
    assert_eq!(ran["structuredContent"]["stdout"], "x\n", "{ran}");
    assert_eq!(
        call(&admin, "destroy_llmbox", json!({"box_id": "own-b"}))["isError"],
        false
    );
    assert_eq!(
        call(&a, "destroy_llmbox", json!({"box_id": "own-a"}))["isError"],
        false
    );
    assert!(listed(&admin).is_empty());
    assert!(ns.containers().is_empty(), "{:?}", ns.containers());
}
