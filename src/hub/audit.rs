//! The audit log (`llmbox hub --audit-log FILE`): one JSON object per line, appended to a 0600
//! file, for every MCP tool call and every activation attempt.
//!
//! A tool call line holds `ts` (RFC 3339 UTC), `event: "tool_call"`, `caller` (the key's name,
//! or `anonymous`), `key_id`, `tool`, `box_id`, `spoke`, `ok`, `error`, `ms`, and for
//! `exec_llmbox` also `command` and `exit_code`. An activation line holds `ts`,
//! `event: "activate"`, `box_id`, `spoke`, `ok` and `remote_addr`. What never appears: a code,
//! a page token, an API key, an authorize URL, a session secret — the callers hand over only
//! the fields above, and text that may carry a box's own words (errors, the command) is
//! scrubbed of sign-in links first.
//!
//! On SIGHUP the file is reopened at its path on the next write, so logrotate can move it. A
//! failed write is logged at error level and never fails the call it records. One mutex
//! serialises writers; it is held only for the write of one line.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde_json::{Value, json};

use super::apikeys::Caller;

/// The open audit log.
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
}

/// One tool call, as the tool layer saw it.
#[derive(Debug, Clone, Default)]
pub(crate) struct ToolCall<'a> {
    /// The tool's name.
    pub(crate) tool: &'a str,
    /// The `box_id` argument, when there was one.
    pub(crate) box_id: Option<&'a str>,
    /// The spoke holding (or asked to hold) the box, when known.
    pub(crate) spoke: Option<&'a str>,
    /// Whether the call succeeded.
    pub(crate) ok: bool,
    /// The error text given to the caller, on failure.
    pub(crate) error: Option<&'a str>,
    /// How long the call took, in milliseconds.
    pub(crate) ms: u64,
    /// For `exec_llmbox`: the command line.
    pub(crate) command: Option<&'a str>,
    /// For `exec_llmbox`: the command's exit code, when it ran.
    pub(crate) exit_code: Option<i64>,
}

fn open_append(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    // A file that existed before (made by hand, or by an older run) is narrowed to 0600 too;
    // a device or pipe given as the log is left as it is.
    if file.metadata()?.is_file() {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

impl AuditLog {
    /// Opens (creating, 0600) `path` for appending, and makes SIGHUP reopen it.
    ///
    /// # Errors
    /// The file cannot be opened or narrowed to 0600.
    pub fn open(path: impl Into<PathBuf>) -> io::Result<AuditLog> {
        let path = path.into();
        let file = open_append(&path)?;
        crate::util::signal::note_hangups();
        Ok(AuditLog {
            path,
            file: Mutex::new(file),
        })
    }

    /// Records a tool call by `caller`.
    pub(crate) fn tool_call(&self, caller: &Caller, call: &ToolCall<'_>) {
        let scrub = |s: &str| super::redact::scrub(s, &[], &[]);
        let mut line = json!({
            "ts": crate::util::time::rfc3339(SystemTime::now()),
            "event": "tool_call",
            "caller": caller.name(),
            "key_id": caller.key_id(),
            "tool": call.tool,
            "box_id": call.box_id,
            "spoke": call.spoke,
            "ok": call.ok,
            "error": call.error.map(scrub),
            "ms": call.ms,
        });
        if call.tool == "exec_llmbox" {
            line["command"] = json!(call.command.map(scrub));
            line["exit_code"] = json!(call.exit_code);
        }
        self.write(&line);
    }

    /// Records an activation attempt (a code posted on the page). `box_id` is `None` for a
    /// page token that matched no box.
    pub(crate) fn activation(
        &self,
        box_id: Option<&str>,
        spoke: Option<&str>,
        ok: bool,
        remote_addr: Option<std::net::SocketAddr>,
        by: Option<&str>,
    ) {
        let mut line = json!({
            "ts": crate::util::time::rfc3339(SystemTime::now()),
            "event": "activate",
            "box_id": box_id,
            "spoke": spoke,
            "ok": ok,
            "remote_addr": remote_addr.map(|a| a.to_string()),
        });
        if let Some(by) = by {
            line["by"] = json!(by);
        }
        self.write(&line);
    }

    /// Records a sign-in step (`event` is `signin`, `signin_refused` or `signout`): who, with
    /// which provider, and why it failed. Never a code, token or session id.
    pub(crate) fn signin(
        &self,
        event: &str,
        email: Option<&str>,
        provider: Option<&str>,
        reason: Option<&str>,
        remote_addr: Option<std::net::SocketAddr>,
    ) {
        self.write(&json!({
            "ts": crate::util::time::rfc3339(SystemTime::now()),
            "event": event,
            "email": email,
            "provider": provider,
            "ok": reason.is_none(),
            "reason": reason,
            "remote_addr": remote_addr.map(|a| a.to_string()),
        }));
    }

    fn write(&self, line: &Value) {
        let mut text = line.to_string();
        text.push('\n');
        // A plain file handle: a panic elsewhere cannot leave it inconsistent.
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if crate::util::signal::take_hangup() {
            match open_append(&self.path) {
                Ok(fresh) => *file = fresh,
                Err(e) => log::error!(
                    "audit log {}: cannot reopen after SIGHUP, still writing to the old file: {e}",
                    self.path.display()
                ),
            }
        }
        if let Err(e) = file.write_all(text.as_bytes()) {
            log::error!("audit log {}: a record was lost: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("llmbox-audit-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        dir.join("audit.log")
    }

    fn lines(path: &Path) -> Vec<Value> {
        std::fs::read_to_string(path)
            .expect("read")
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect()
    }

    #[test]
    fn tool_calls_and_activations_are_appended_as_json_lines_0600() {
        let path = temp("lines");
        std::fs::write(&path, "{\"old\":true}\n").expect("seed");
        let log = AuditLog::open(&path).expect("open");
        let key = Caller::Key {
            id: "abcdef123456".into(),
            name: "ci".into(),
            admin: false,
        };
        log.tool_call(
            &key,
            &ToolCall {
                tool: "exec_llmbox",
                box_id: Some("web"),
                spoke: Some("local"),
                ok: true,
                ms: 12,
                command: Some("echo hi"),
                exit_code: Some(3),
                ..Default::default()
            },
        );
        log.tool_call(
            &Caller::Anonymous,
            &ToolCall {
                tool: "get_llmbox",
                box_id: Some("nope"),
                error: Some(
                    "box printed https://claude.com/cai/oauth/authorize?code_challenge=x&state=y",
                ),
                ..Default::default()
            },
        );
        log.activation(
            Some("web"),
            Some("local"),
            true,
            "127.0.0.1:5".parse().ok(),
            None,
        );
        let got = lines(&path);
        assert_eq!(got.len(), 4);
        assert_eq!(got[0]["old"], true, "appended, not truncated");
        let exec = &got[1];
        assert_eq!(
            (
                exec["event"].as_str(),
                exec["caller"].as_str(),
                exec["key_id"].as_str()
            ),
            (Some("tool_call"), Some("ci"), Some("abcdef123456"))
        );
        assert_eq!(
            (exec["command"].as_str(), exec["exit_code"].as_i64()),
            (Some("echo hi"), Some(3))
        );
        assert_eq!(
            (exec["ms"].as_u64(), exec["ok"].as_bool()),
            (Some(12), Some(true))
        );
        let ts = exec["ts"].as_str().expect("ts");
        assert!(
            ts.ends_with('Z') && ts.len() == 24 && &ts[10..11] == "T",
            "{ts}"
        );
        let failed = &got[2];
        assert_eq!(failed["caller"], "anonymous");
        assert!(failed["key_id"].is_null());
        assert!(failed.get("command").is_none(), "only exec has a command");
        assert!(
            !failed["error"]
                .as_str()
                .expect("error")
                .contains("oauth/authorize")
        );
        assert_eq!(got[3]["event"], "activate");
        assert_eq!(got[3]["remote_addr"], "127.0.0.1:5");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn an_unopenable_path_is_an_error_at_start() {
        assert!(AuditLog::open("/nonexistent-dir/audit.log").is_err());
    }
}
