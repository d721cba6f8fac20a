//! The one support module of the integration tests: every `tests/*.rs` mounts it with
//! `mod support;` (cargo does not build a directory without `main.rs` as a test of its own).
//!
//! Here: [`temp_dir`] (the only way a test gets a scratch directory), [`wait_for`] (the only
//! poll-until-true loop) and [`fixtures`]. By subject: [`docker`] (the test image, per-test
//! namespaces, the `docker` CLI), [`hub`] (in-process hubs over switchable spokes), [`http`]
//! (raw HTTP/1.1 requests), [`oidc`] (the real OpenID provider), [`pki`] (a private CA and a localhost certificate), [`cluster`] (a loopback plane, spoke loops, a hand-driven spoke).
// Each test binary uses a different part of this module.
#![allow(dead_code)]

pub mod cluster;
pub mod docker;
pub mod http;
pub mod hub;
pub mod oidc;
pub mod pki;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

// The doubles (`MemoryBoxManager`, `StaticDirectory`, `SeededRng`) are not in the shipped
// library; say so instead of letting every test fail on a missing path.
#[cfg(not(feature = "test-doubles"))]
compile_error!(
    "the integration tests need the library's test doubles: \
     `cargo test --features test-doubles` (make test passes it)"
);

/// How long [`wait_for`] waits before failing the test.
pub const WAIT_LIMIT: Duration = Duration::from_secs(20);

/// Polls `check` until it returns `Some`, and returns that value; panics naming `what` after
/// [`WAIT_LIMIT`]. Polls every 10 ms at first, backing off to 100 ms (a check may run the
/// `docker` CLI).
pub fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            start.elapsed() < WAIT_LIMIT,
            "timed out after {WAIT_LIMIT:?} waiting for {what}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// A fresh, empty directory for one test: `$TMPDIR/llmbox-test-<pid>-<n>-<tag>`, `n` counting
/// the calls in this process so two calls never share one (even with the same `tag`). Left in
/// place after the test, for reading what it wrote.
pub fn temp_dir(tag: &str) -> PathBuf {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("llmbox-test-{}-{n}-{tag}", std::process::id()));
    // A directory of an earlier run whose pid this process now has.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the test's temp dir");
    dir
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `tests/fixtures`.
pub fn fixtures() -> PathBuf {
    root().join("tests/fixtures")
}

/// Runs `llmbox apikey create --name NAME [--admin] --state STATE` and returns the key it
/// printed (its first line).
pub fn apikey_create(state: &std::path::Path, name: &str, admin: bool) -> String {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_llmbox"));
    cmd.args(["apikey", "create", "--name", name, "--state"])
        .arg(state);
    if admin {
        cmd.arg("--admin");
    }
    let out = cmd.output().expect("run llmbox apikey create");
    assert!(
        out.status.success(),
        "apikey create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .expect("the key line")
        .to_string()
}

/// A loopback TCP port that was free a moment ago (for a child process to bind).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// What `ulimit <flag>` prints in a shell (e.g. `-Hn` for the hard open-file limit).
pub fn ulimit(flag: &str) -> String {
    let out = std::process::Command::new("sh")
        .args(["-c", &format!("ulimit {flag}")])
        .output()
        .expect("ulimit");
    String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_string()
}

/// Lowers this test process's soft open-file limit to `soft` (hard limit unchanged), with
/// util-linux's `prlimit`, so a test can run the process out of descriptors.
pub fn set_nofile(soft: &str) {
    let hard = ulimit("-Hn");
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &std::process::id().to_string()])
        .arg(format!("--nofile={soft}:{hard}"))
        .status()
        .expect("prlimit (util-linux) must be installed");
    assert!(status.success(), "prlimit failed");
}
