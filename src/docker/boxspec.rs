//! What a box is made of, as data: its labels, names, entrypoint script, the create body for
//! the Engine, and the archive injected before start. No I/O here, so all of it is
//! unit-tested; [`super::manager`] does the calls.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::tar::{self, Entry, TarError};
use super::{ExecUser, ManagerConfig};
use crate::boxes::InjectFile;

/// Label marking a container (or network) as made by llmbox.
pub(crate) const LABEL_MANAGED: &str = "com.llmbox.managed";
/// Label holding the namespace (the spoke name; `local` on the hub).
pub(crate) const LABEL_NAMESPACE: &str = "com.llmbox.namespace";
/// Label holding the caller's box id.
pub(crate) const LABEL_BOX_ID: &str = "com.llmbox.box-id";
/// Label holding the description.
pub(crate) const LABEL_DESCRIPTION: &str = "com.llmbox.description";
/// Name prefix of a box waiting for its code.
pub(crate) const PENDING_PREFIX: &str = "llmbox-pending-";
/// Name prefix of an activated box.
pub(crate) const READY_PREFIX: &str = "llmbox-";
/// Name prefix of a box's own network.
pub(crate) const NETWORK_PREFIX: &str = "llmboxnet-";
/// TTY width: wide enough that the authorize URL prints on one line.
pub(crate) const TTY_WIDTH: u32 = 1000;
/// TTY height.
pub(crate) const TTY_HEIGHT: u32 = 50;
/// Where the Claude binary goes.
pub(crate) const CLAUDE_PATH: &str = "/usr/local/bin/claude";
/// The seeded Claude config.
pub(crate) const CLAUDE_JSON_PATH: &str = "/root/.claude.json";
/// The box's working directory.
pub(crate) const WORKDIR: &str = "/workspace";

/// `~/.claude.json` pre-accepting the `/workspace` trust dialog and the remote-control dialog.
/// (`remoteControlDialogSeen` is our best knowledge of the CLI's key; an unknown key is ignored
/// by the CLI, so the worst case is one extra prompt.)
pub(crate) const CLAUDE_JSON_SEED: &str = r#"{
  "hasCompletedOnboarding": true,
  "remoteControlDialogSeen": true,
  "projects": {
    "/workspace": {
      "hasTrustDialogAccepted": true,
      "hasCompletedProjectOnboarding": true
    }
  }
}
"#;

/// The short form of a container id: the box layer's one short-id rule.
pub(crate) use crate::boxes::short_id;

/// The name of a pending box.
pub(crate) fn pending_name(id: &str) -> String {
    format!("{PENDING_PREFIX}{}", short_id(id))
}

/// The name of a ready box.
pub(crate) fn ready_name(id: &str) -> String {
    format!("{READY_PREFIX}{}", short_id(id))
}

/// The box's network.
pub(crate) fn network_name(id: &str) -> String {
    format!("{NETWORK_PREFIX}{}", short_id(id))
}

/// True when a container name says the box still waits for its code.
pub(crate) fn is_pending_name(name: &str) -> bool {
    name.trim_start_matches('/').starts_with(PENDING_PREFIX)
}

/// Label filters selecting the managed boxes of `namespace` (all namespaces when `None`).
pub(crate) fn label_filters(namespace: Option<&str>) -> Vec<String> {
    let mut filters = vec![format!("{LABEL_MANAGED}=true")];
    if let Some(ns) = namespace {
        filters.push(format!("{LABEL_NAMESPACE}={ns}"));
    }
    filters
}

/// Quotes `s` for POSIX sh.
pub(crate) fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The box's entrypoint (run by `/bin/sh -c`): close the box to the exec user
/// ([`isolation_prelude`]), log in until credentials exist, surviving a bad code, then become
/// `claude remote-control` under `script` (which gives it a pty of its own). The login runs in
/// the background with the TTY on fd 3 so that SIGTERM (docker stop) ends a pending box at once
/// instead of after the 10 s grace.
pub fn entrypoint_script(box_id: &str, remote_args: &str, exec_user: ExecUser) -> String {
    let mut command = String::from("claude remote-control");
    for arg in remote_args.split_whitespace() {
        command.push(' ');
        command.push_str(&sh_quote(arg));
    }
    command.push_str(" --name ");
    command.push_str(&sh_quote(&format!("{box_id}-default")));
    format!(
        r#"{}pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; exit 143' TERM INT
exec 3<&0
logged_in() {{ [ -n "${{CLAUDE_CODE_OAUTH_TOKEN:-}}" ] || [ -s "$HOME/.claude/.credentials.json" ]; }}
while ! logged_in; do
  claude auth login --claudeai <&3 &
  pid=$!
  if wait "$pid"; then pid=; continue; fi
  pid=
  echo "llmbox: sign-in did not complete; starting a new sign-in"
  sleep 2 &
  pid=$!
  wait "$pid"
  pid=
done
exec 3<&-
exec script -qfc {} /dev/null
"#,
        isolation_prelude(exec_user),
        sh_quote(&command)
    )
}

/// Where Claude Code reads a project's settings (hooks run commands as Claude's user, root).
pub const PROJECT_SETTINGS_DIR: &str = "/workspace/.claude";
/// Where Claude Code reads a project's MCP servers.
pub const PROJECT_MCP_JSON: &str = "/workspace/.mcp.json";

/// The first lines of the entrypoint, run as root on every start, so that commands of the
/// `exec` verb (an unprivileged user) cannot reach what belongs to the person's Claude: `$HOME`
/// (`/root`: the credentials, `~/.claude*`) becomes 0700 whatever the image made it, and
/// `/workspace` is writable by everyone but sticky, with Claude's project settings and MCP list
/// pre-made root-owned there, so the exec user can add files but cannot plant a settings hook or
/// an MCP server that the root Claude process would run (nor rename those away). Hook-injected
/// files are left as they are (an existing `.claude` or `.mcp.json` is not touched). With
/// `--exec-user 0` nothing changes: root reaches everything anyway.
pub fn isolation_prelude(exec_user: ExecUser) -> String {
    if exec_user.is_root() {
        return String::new();
    }
    format!(
        r#"umask 022
chmod 700 "$HOME" || echo "llmbox: cannot make $HOME private" >&2
mkdir -p {ws} && chown 0:0 {ws} && chmod 1777 {ws} || echo "llmbox: cannot open {ws} to uid {uid}" >&2
[ -e {dir} ] || {{ mkdir {dir} && chmod 755 {dir}; }}
[ -e {mcp} ] || {{ printf '{{"mcpServers":{{}}}}\n' > {mcp} && chmod 644 {mcp}; }}
"#,
        ws = WORKDIR,
        uid = exec_user.uid,
        dir = PROJECT_SETTINGS_DIR,
        mcp = PROJECT_MCP_JSON,
    )
}

/// The body of `POST /containers/create` for a box.
pub(crate) fn create_body(
    config: &ManagerConfig,
    image: &str,
    box_id: &str,
    description: &str,
) -> Value {
    let labels: HashMap<&str, &str> = HashMap::from([
        (LABEL_MANAGED, "true"),
        (LABEL_NAMESPACE, config.namespace.as_str()),
        (LABEL_BOX_ID, box_id),
        (LABEL_DESCRIPTION, description),
    ]);
    let memory = config.memory_mb.saturating_mul(1024 * 1024);
    let nano_cpus = (config.cpus * 1e9).round() as i64;
    json!({
        "Image": image,
        "Hostname": box_id,
        "User": "0:0",
        "Env": ["HOME=/root"],
        "WorkingDir": WORKDIR,
        "Tty": true,
        "OpenStdin": true,
        "StdinOnce": false,
        "AttachStdin": true,
        "AttachStdout": true,
        "AttachStderr": true,
        "Entrypoint": ["/bin/sh", "-c", entrypoint_script(box_id, &config.remote_args, config.exec_user)],
        "Cmd": [],
        "Labels": labels,
        "HostConfig": {
            "Memory": memory,
            "MemorySwap": memory,
            "NanoCpus": nano_cpus,
            "PidsLimit": config.pids_limit,
            "SecurityOpt": ["no-new-privileges"],
            "RestartPolicy": {"Name": "no"},
            "ConsoleSize": [TTY_HEIGHT, TTY_WIDTH],
        },
    })
}

/// Labels of a box's network.
pub(crate) fn network_labels(namespace: &str, box_id: &str) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_NAMESPACE.to_string(), namespace.to_string()),
        (LABEL_BOX_ID.to_string(), box_id.to_string()),
    ])
}

/// The archive copied to `/` before start: the Claude binary (when given), the config seed,
/// then the caller's files (which may override the seed).
///
/// # Errors
/// [`TarError`] for a path ustar cannot hold.
pub(crate) fn injection_tar(
    claude: Option<&[u8]>,
    files: &[InjectFile],
) -> Result<Vec<u8>, TarError> {
    let mut entries = Vec::with_capacity(files.len() + 2);
    if let Some(bin) = claude {
        entries.push(Entry {
            path: CLAUDE_PATH,
            data: bin,
            mode: 0o755,
            uid: 0,
            gid: 0,
        });
    }
    entries.push(Entry {
        path: CLAUDE_JSON_PATH,
        data: CLAUDE_JSON_SEED.as_bytes(),
        mode: 0o600,
        uid: 0,
        gid: 0,
    });
    for f in files {
        entries.push(Entry {
            path: &f.path,
            data: &f.content,
            mode: f.mode,
            uid: f.uid,
            gid: f.gid,
        });
    }
    tar::build(&entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids_never_split_a_character() {
        assert_eq!(short_id("0123456789abcdef"), "0123456789ab");
        assert_eq!(short_id("abc"), "abc");
        assert_eq!(short_id("abcdefghijk\u{e9}\u{e9}"), "abcdefghijk\u{e9}");
        assert_eq!(short_id(""), "");
    }

    #[test]
    fn names_encode_the_phase() {
        let id = "0123456789abcdef0123";
        assert_eq!(pending_name(id), "llmbox-pending-0123456789ab");
        assert_eq!(ready_name(id), "llmbox-0123456789ab");
        assert_eq!(network_name(id), "llmboxnet-0123456789ab");
        assert!(is_pending_name("/llmbox-pending-0123456789ab"));
        assert!(!is_pending_name("llmbox-0123456789ab"));
    }

    #[test]
    fn create_body_carries_limits_labels_and_tty() {
        let mut config = ManagerConfig::new("edge-1");
        config.remote_args = "--spawn same-dir".into();
        let body = create_body(&config, "img:1", "web", "my box");
        assert_eq!(body["Labels"][LABEL_NAMESPACE], "edge-1");
        assert_eq!(body["Labels"][LABEL_BOX_ID], "web");
        assert_eq!(body["Labels"][LABEL_DESCRIPTION], "my box");
        assert_eq!(body["HostConfig"]["Memory"], 4096_u64 * 1024 * 1024);
        assert_eq!(body["HostConfig"]["NanoCpus"], 2_000_000_000_i64);
        assert_eq!(body["HostConfig"]["PidsLimit"], 4096);
        assert_eq!(body["HostConfig"]["SecurityOpt"][0], "no-new-privileges");
        assert_eq!(body["Hostname"], "web");
        assert_eq!(body["Tty"], true);
        assert_eq!(body["Env"][0], "HOME=/root");
        let script = body["Entrypoint"][2].as_str().expect("script");
        assert!(
            script.contains(
                r#"exec script -qfc 'claude remote-control '\''--spawn'\'' '\''same-dir'\'' --name '\''web-default'\''' /dev/null"#
            ),
            "{script}"
        );
    }

    #[test]
    fn the_entrypoint_closes_home_and_opens_the_workspace_only_for_an_unprivileged_exec() {
        let script = entrypoint_script("web", "", ExecUser::DEFAULT);
        assert!(
            script.starts_with("umask 022\nchmod 700 \"$HOME\""),
            "{script}"
        );
        assert!(script.contains("chmod 1777 /workspace"), "{script}");
        assert!(script.contains("[ -e /workspace/.claude ] ||"), "{script}");
        let root = entrypoint_script("web", "", ExecUser { uid: 0, gid: 0 });
        assert!(root.starts_with("pid=\n"), "{root}");
        assert!(!root.contains("chmod"), "{root}");
    }

    #[test]
    fn sh_quote_survives_single_quotes() {
        assert_eq!(sh_quote("a'b"), r"'a'\''b'");
    }

    #[test]
    fn injection_puts_binary_seed_and_files() {
        let files = vec![InjectFile {
            path: "/etc/hook.json".into(),
            content: b"{}".to_vec(),
            mode: 0o640,
            uid: 5,
            gid: 6,
        }];
        let tar = injection_tar(Some(b"#!/bin/sh\n"), &files).expect("tar");
        let names: Vec<String> = tar
            .chunks(512)
            .filter(|b| b[257..262] == *b"ustar")
            .map(|b| {
                String::from_utf8_lossy(&b[..100])
                    .trim_end_matches('\0')
                    .to_string()
            })
            .collect();
        assert_eq!(
            names,
            ["usr/local/bin/claude", "root/.claude.json", "etc/hook.json"]
        );
        let long = vec![InjectFile {
            path: format!("/{}", "x".repeat(300)),
            ..Default::default()
        }];
        assert!(injection_tar(None, &long).is_err());
    }
}
