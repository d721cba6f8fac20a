//! A real browser (Debian's chromium + chromedriver, driven by selenium) activates boxes through
//! the page served by the hub's HTTP front on a loopback port: desktop width with a `bad-code`
//! retry in light mode, phone width in dark mode; then the page's other ends: a link past its
//! time, a host whose Docker is down, a box that stops after a wrong code (as a Go spoke's box
//! does). Screenshots go to `target/browser-shots/`; the expired and host-trouble ones are
//! copied to `docs/screenshots/` (`hub_e2e` takes the others there, from a real hub on Docker).
//!
//! Needs `make test-clients` (chromium, chromedriver, `.venv-mcp1` with selenium); fails loudly
//! without them.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use llmbox::hub::http::HttpFront;
use llmbox::hub::{CreateRequest, HubConfig};

fn require(path: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: run `make test-clients` (make test does) to install chromium, chromedriver and selenium"
    );
}

#[test]
fn a_person_activates_boxes_in_a_real_browser_on_desktop_and_phone() {
    require("/usr/bin/chromium");
    require("/usr/bin/chromedriver");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv-mcp1/bin/python");
    require(&python.display().to_string());

    let path = support::hub::state_path("browser");
    let board = Arc::new(support::hub::Switchboard::default().with("local"));
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = probe.local_addr().expect("addr");
    drop(probe);
    let public = format!("http://{addr}");
    let hub = support::hub::hub_on(&path, &board, HubConfig::new(&public));
    let front = HttpFront::start(Arc::clone(&hub), &addr.to_string()).expect("listen");

    for (box_id, name, width, height, dark, bad_first) in [
        ("desk", "desktop", "1280", "900", false, true),
        ("phone", "phone", "390", "844", true, false),
    ] {
        let view = hub
            .create_box(CreateRequest {
                box_id: box_id.into(),
                description: "browser test".into(),
                ..Default::default()
            })
            .expect("create");
        let page = view.auth_url.expect("link");
        let mut extra = vec![];
        if dark {
            extra.push("--dark");
        }
        if bad_first {
            extra.push("--bad-code-first");
        }
        let out = browser_flow(&python, &page, box_id, name, (width, height), &extra);
        assert!(out.contains("OK https://"), "{out}");
        assert_eq!(hub.get_box(box_id).expect("get").status, "ready");
    }

    // A box that stops after a wrong code, like a Go spoke's.
    let local = board.manager("local");
    local.stop_on_bad_code.store(true, Ordering::SeqCst);
    let page = create(&hub, "stops");
    let out = browser_flow(
        &python,
        &page,
        "stops",
        "desktop",
        ("1280", "900"),
        &["--code", "bad-code", "--expect", "stopped"],
    );
    assert!(out.contains("OK stopped"), "{out}");
    local.stop_on_bad_code.store(false, Ordering::SeqCst);

    // The host's Docker is down: the operator's error, shown on a phone in dark mode.
    local.docker_down.store(true, Ordering::SeqCst);
    let page = create(&hub, "hostdown");
    let out = browser_flow(
        &python,
        &page,
        "hostdown",
        "phone",
        ("390", "844"),
        &["--dark", "--expect", "host"],
    );
    assert!(out.contains("OK host"), "{out}");
    local.docker_down.store(false, Ordering::SeqCst);
    front.stop();

    // A link past its time, on a hub whose links last a second.
    let path = support::hub::state_path("browser-expired");
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = probe.local_addr().expect("addr");
    drop(probe);
    let mut config = HubConfig::new(&format!("http://{addr}"));
    config.auth_ttl = Duration::from_secs(1);
    let hub = support::hub::hub_on(&path, &board, config);
    let front = HttpFront::start(Arc::clone(&hub), &addr.to_string()).expect("listen");
    let page = create(&hub, "late");
    std::thread::sleep(Duration::from_millis(2100));
    let out = browser_flow(
        &python,
        &page,
        "late",
        "desktop",
        ("1280", "900"),
        &["--expect", "expired"],
    );
    assert!(out.contains("OK expired"), "{out}");
    front.stop();

    let shots = root.join("target/browser-shots");
    for shot in ["desktop-expired.png", "phone-host.png"] {
        std::fs::copy(shots.join(shot), root.join("docs/screenshots").join(shot))
            .expect("copy the screenshot to docs/screenshots");
    }
}

fn create(hub: &llmbox::hub::Hub, box_id: &str) -> String {
    hub.create_box(CreateRequest {
        box_id: box_id.into(),
        description: "browser test".into(),
        ..Default::default()
    })
    .expect("create")
    .auth_url
    .expect("link")
}

/// Runs `tests/clients/browser_flow.py` on `page`; returns its output (it must succeed).
fn browser_flow(
    python: &Path,
    page: &str,
    box_id: &str,
    name: &str,
    (width, height): (&str, &str),
    extra: &[&str],
) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(python)
        .arg(root.join("tests/clients/browser_flow.py"))
        .args(["--page", page, "--box-id", box_id, "--name", name])
        .args(["--width", width, "--height", height])
        .arg("--shots")
        .arg(root.join("target/browser-shots"))
        .args(extra)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{name}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{stdout}");
    stdout
}
