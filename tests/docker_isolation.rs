//! The person's Claude credential out of the chatbot's reach, on the real Docker daemon: after
//! activation, the `exec` verb (an unprivileged user by default) cannot read the credentials,
//! `~/.claude*`, the Claude process's environment or memory, cannot change the `claude` binary,
//! its config or the project settings Claude would obey, and still works in `/workspace`.
//! Every refusal is paired with the same look as root (through the `docker` CLI), so a test
//! that looks in the wrong place fails instead of passing.

mod support;

use llmbox::boxes::BoxManager;
use llmbox::docker::{DockerBoxManager, ExecUser};
use support::docker::{TestNs, create, root_sh};

fn sh(script: &str) -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), script.into()]
}

/// Pids of the processes running Claude (remote control, under `script`) and the entrypoint,
/// found as root. (The looking shell and its `grep`s match too but are gone by the second look.)
fn claude_pids(id: &str) -> Vec<String> {
    let (ok, out, err) = root_sh(
        id,
        "for p in /proc/[0-9]*; do grep -q claude $p/cmdline 2>/dev/null && echo ${p#/proc/}; done; true",
    );
    assert!(ok, "{err}");
    out.lines()
        .filter(|pid| root_sh(id, &format!("test -d /proc/{pid}")).0)
        .map(str::to_string)
        .collect()
}

/// Asserts that `script` fails for the exec user with "Permission denied" (or a read-only
/// refusal) and that root, for the control, succeeds with output containing `root_sees`.
fn refused_but_there(m: &DockerBoxManager, id: &str, script: &str, root_sees: &str) {
    let r = m.exec("web", &sh(script)).expect("exec");
    assert_ne!(r.exit_code, 0, "{script} must fail as the exec user: {r:?}");
    assert!(
        r.stderr.contains("Permission denied") || r.stderr.contains("Operation not permitted"),
        "{script}: {r:?}"
    );
    if !root_sees.is_empty() {
        let (ok, out, err) = root_sh(id, script);
        assert!(ok, "root control for {script}: {err}");
        assert!(out.contains(root_sees), "root control for {script}: {out}");
    }
}

#[test]
fn after_activation_exec_cannot_reach_the_persons_claude_but_works_in_the_workspace() {
    let t = TestNs::new("isolation");
    let config = t.config();
    assert_eq!(
        config.exec_user,
        ExecUser {
            uid: 1000,
            gid: 1000
        }
    );
    let m = DockerBoxManager::new(config).expect("manager");
    let c = create(&m, "web");
    m.submit_code("web", "good-code").expect("activate");
    let id = c.id.as_str();

    let who = m.exec("web", &sh("id -u; id -g; echo $HOME")).expect("id");
    assert_eq!(who.stdout, "1000\n1000\n/workspace\n", "{who:?}");

    // The credentials the fake claude wrote at login, and the rest of ~/.claude*.
    refused_but_there(
        &m,
        id,
        "cat /root/.claude/.credentials.json",
        "claudeAiOauth",
    );
    refused_but_there(&m, id, "cat /root/.claude.json", "hasTrustDialogAccepted");
    refused_but_there(&m, id, "ls -a /root", ".claude");
    refused_but_there(&m, id, "ls -a /root/.claude", "credentials");

    // The Claude processes' environment, memory map and memory.
    let pids = claude_pids(id);
    let running_remote_control = pids.iter().any(|pid| {
        root_sh(id, &format!("tr '\\0' ' ' < /proc/{pid}/cmdline"))
            .1
            .contains("claude remote-control")
    });
    assert!(running_remote_control, "remote control among {pids:?}");
    for pid in &pids {
        refused_but_there(&m, id, &format!("cat /proc/{pid}/environ"), "HOME=/root");
        refused_but_there(&m, id, &format!("cat /proc/{pid}/maps"), "r");
        refused_but_there(&m, id, &format!("head -c 1 /proc/{pid}/mem"), "");
    }

    // The binary, its config, and the project settings and MCP list Claude reads in /workspace.
    let before = root_sh(id, "cat /usr/local/bin/claude /workspace/.mcp.json").1;
    for script in [
        "echo x >> /usr/local/bin/claude",
        "rm -f /usr/local/bin/claude",
        "echo {} > /usr/local/bin/claude.new && mv /usr/local/bin/claude.new /usr/local/bin/claude",
        "echo {} > /root/.claude.json",
        "echo {} > /workspace/.claude/settings.json",
        "mv /workspace/.claude /workspace/old-claude",
        "echo '{\"mcpServers\":{\"x\":{\"command\":\"sh\"}}}' > /workspace/.mcp.json",
        "rm -f /workspace/.mcp.json",
    ] {
        refused_but_there(&m, id, script, "");
    }
    assert_eq!(
        root_sh(id, "cat /usr/local/bin/claude /workspace/.mcp.json").1,
        before
    );
    let fixture = std::fs::read_to_string(support::fixtures().join("fake-claude")).expect("read");
    assert!(before.starts_with(fixture.trim_end()), "binary unchanged");

    // What the exec user can do: work in /workspace, read what is there.
    let r = m
        .exec(
            "web",
            &sh(
                "cd /workspace && echo hello > note && cat note && mkdir -p d/e && echo x > d/e/f \
                 && rm -r d && cat .mcp.json && ls -a . && rm note",
            ),
        )
        .expect("exec");
    assert_eq!(r.exit_code, 0, "{r:?}");
    assert!(r.stdout.starts_with("hello\n"), "{r:?}");
    assert!(r.stdout.contains("mcpServers"), "{r:?}");
    // The box is still ready: remote control kept running through all of it.
    let logs = m.logs("web", 50).expect("logs");
    assert!(logs.contains("session_web"), "{logs}");
}

#[test]
fn exec_user_0_is_the_explicit_opt_out_and_runs_as_root() {
    let t = TestNs::new("rootexec");
    let mut config = t.config();
    config.exec_user = ExecUser::parse("0").expect("0");
    let m = DockerBoxManager::new(config).expect("manager");
    create(&m, "web");
    m.submit_code("web", "good-code").expect("activate");
    let r = m
        .exec(
            "web",
            &sh("id -u; cat /root/.claude/.credentials.json; stat -c %a /workspace"),
        )
        .expect("exec");
    assert_eq!(r.exit_code, 0, "{r:?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines[0], "0");
    assert!(lines[1].contains("claudeAiOauth"), "{r:?}");
    // No isolation step ran: the workspace is as the image made it.
    assert_eq!(lines[2], "755", "{r:?}");
}
