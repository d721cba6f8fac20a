//! `llmbox hub` and `llmbox spoke` end at once on SIGTERM (as PID 1 in a container nothing else
//! would stop them before `docker stop` gives up and kills).

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::temp_dir;

fn terminate_and_wait(mut child: Child) -> Option<i32> {
    std::thread::sleep(Duration::from_millis(300)); // let it install its handlers and start
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code();
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("process ignored SIGTERM for 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `llmbox <args> <file flag> <dir>/<file>` quietly, SIGTERMs it, and expects 128 + 15.
fn assert_exits_on_sigterm(tag: &str, args: &[&str], file_flag: &str, file: &str) {
    let dir = temp_dir(tag);
    let child = Command::new(env!("CARGO_BIN_EXE_llmbox"))
        .args(args)
        .arg(file_flag)
        .arg(dir.join(file))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    assert_eq!(terminate_and_wait(child), Some(128 + 15));
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn a_spoke_dialing_an_absent_hub_exits_on_sigterm() {
    let token = "ab".repeat(32);
    let args = ["spoke", "--hub", "ws://127.0.0.1:9/", "--token", &token];
    assert_exits_on_sigterm("spoke", &args, "--credentials", "creds.json");
}

#[test]
fn a_serving_hub_exits_on_sigterm() {
    let args = [
        "hub",
        "--no-local",
        "--listen",
        "127.0.0.1:0",
        "--spoke-listen",
        "127.0.0.1:0",
    ];
    assert_exits_on_sigterm("hub", &args, "--state", "state.json");
}
