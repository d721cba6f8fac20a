//! A real browser (Debian's chromium + chromedriver, driven by selenium) activates boxes through
//! the page served by the hub's HTTP front on a loopback port: desktop width with a `bad-code`
//! retry in light mode, phone width in dark mode. Screenshots go to `target/browser-shots/`
//! (`hub_e2e` takes the ones in `docs/screenshots/`, from a real hub on Docker).
//!
//! Needs `make test-clients` (chromium, chromedriver, `.venv-mcp1` with selenium); fails loudly
//! without them.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

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
        let mut cmd = Command::new(&python);
        cmd.arg(root.join("tests/clients/browser_flow.py"))
            .args(["--page", &page, "--box-id", box_id, "--name", name])
            .args(["--width", width, "--height", height])
            .arg("--shots")
            .arg(root.join("target/browser-shots"));
        if dark {
            cmd.arg("--dark");
        }
        if bad_first {
            cmd.arg("--bad-code-first");
        }
        let out = cmd.output().expect("run python");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        println!("{stdout}");
        assert_eq!(hub.get_box(box_id).expect("get").status, "ready");
    }
    front.stop();
}
