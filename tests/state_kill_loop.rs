//! A state file is never left unparsable, whatever moment a writer is killed at: `llmbox spoke
//! token create` processes are SIGKILLed at staggered points of their locked read-modify-write,
//! in a loop, and the file must parse (and hold every token whose command finished) after each.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use llmbox::store::Store;

const ROUNDS: usize = 60;

#[test]
fn killing_writers_at_any_moment_never_corrupts_the_state_file() {
    let dir = support::temp_dir("kill-loop");
    let state = dir.join("state.json");
    let writer = |round: usize| {
        Command::new(env!("CARGO_BIN_EXE_llmbox"))
            .args(["spoke", "token", "create", "--name", &format!("s{round}")])
            .arg("--state")
            .arg(&state)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn llmbox")
    };
    // How long one writer lives here, so the kills spread over its whole life.
    let start = std::time::Instant::now();
    assert!(writer(ROUNDS).wait().expect("wait").success());
    let life = start.elapsed().as_micros().max(1) as u64;
    let mut finished = 1usize;
    for round in 0..ROUNDS {
        let mut child = writer(round);
        std::thread::sleep(Duration::from_micros(
            life * 3 / 2 * round as u64 / ROUNDS as u64,
        ));
        let _ = child.kill();
        let status = child.wait().expect("wait");
        if status.success() {
            finished += 1;
        }
        let store = Store::open(&state)
            .unwrap_or_else(|e| panic!("round {round}: state file unparsable after a kill: {e}"));
        let tokens = store.load().expect("load").join_tokens.len();
        assert!(
            tokens >= finished,
            "round {round}: {finished} commands finished but only {tokens} tokens are stored"
        );
    }
    println!(
        "{finished} of {} writers finished before their kill",
        ROUNDS + 1
    );
    assert!(
        finished < ROUNDS + 1,
        "no writer was killed: the test proved nothing"
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
