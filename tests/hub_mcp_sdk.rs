//! The official MCP Python SDK, 1.x (handshake era) and 2.x (default Client: the stateless
//! 2026-07-28 era), against the hub's HTTP front on a real loopback port. The boxes are in
//! memory here — the layer under test is the hub's MCP surface; `hub_e2e` runs the same driver
//! against a real `llmbox hub` process on Docker.
//!
//! Needs the virtualenvs `make test-clients` builds; fails loudly without them.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use llmbox::hub::HubConfig;
use llmbox::hub::http::HttpFront;

fn venv_python(venv: &str) -> PathBuf {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(venv)
        .join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make test-clients` (make test does) to install the MCP Python SDKs",
        python.display()
    );
    python
}

fn run_flow(venv: &str, test: &str, bad_code_first: bool, legacy: bool) {
    run_flow_with(venv, test, bad_code_first, legacy, false);
}

/// The flow; with `keyed`, an API key exists and the SDK sends it as a bearer header (and the
/// script first checks that the endpoint refuses a request without it).
fn run_flow_with(venv: &str, test: &str, bad_code_first: bool, legacy: bool, keyed: bool) {
    let path = support::hub::state_path(test);
    let board = Arc::new(
        support::hub::Switchboard::default()
            .with("local")
            .with("edge"),
    );
    // The public URL must be this listener's own address: bind first, then build the hub.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = probe.local_addr().expect("addr");
    drop(probe);
    let public = format!("http://{addr}");
    let hub = support::hub::hub_on(&path, &board, HubConfig::new(&public));
    let key = keyed.then(|| {
        llmbox::hub::apikeys::create_key(hub.store(), "sdk", None, false)
            .expect("key")
            .0
    });
    let front = HttpFront::start(Arc::clone(&hub), &addr.to_string()).expect("listen");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/mcp_flow.py");
    let mut cmd = Command::new(venv_python(venv));
    cmd.arg(&script)
        .args(["--url", &format!("{public}/mcp"), "--public-url", &public])
        .args(["--box-id", &format!("sdk-{}", test.replace('_', "-"))])
        .args(["--spoke", "edge", "--exec-echoes"]);
    if bad_code_first {
        cmd.arg("--bad-code-first");
    }
    if legacy {
        cmd.arg("--legacy");
    }
    if let Some(key) = &key {
        cmd.args(["--bearer", key]);
    }
    let out = cmd.output().expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{venv}: {stdout}\n{stderr}");
    assert!(stdout.contains(": OK"), "{stdout}");
    println!("{stdout}");
    if keyed {
        let state = hub.store().load().expect("state");
        assert!(state.api_keys[0].last_used.is_some(), "the key was used");
    }
    front.stop();
}

#[test]
fn python_sdk_1x_sends_the_api_key_as_a_bearer_header_through_the_whole_flow() {
    run_flow_with(".venv-mcp1", "v1key", false, false, true);
}

#[test]
fn python_sdk_2x_sends_the_api_key_as_a_bearer_header_through_the_whole_flow() {
    run_flow_with(".venv-mcp2", "v2key", false, false, true);
}

#[test]
fn python_sdk_2x_legacy_mode_sends_the_api_key_too() {
    run_flow_with(".venv-mcp2", "v2legacykey", false, true, true);
}

#[test]
fn python_sdk_1x_drives_the_whole_flow_in_the_handshake_era() {
    run_flow(".venv-mcp1", "v1", true, false);
}

#[test]
fn python_sdk_2x_default_client_drives_the_whole_flow_in_the_stateless_era() {
    run_flow(".venv-mcp2", "v2", false, false);
}

#[test]
fn python_sdk_2x_client_in_legacy_mode_uses_the_handshake_era() {
    run_flow(".venv-mcp2", "v2legacy", true, true);
}
