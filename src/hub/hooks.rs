//! Hooks (`--hook PATH`, repeatable): executables the hub runs around a box's life (DESIGN §8).
//!
//! Each hook is run as `PATH box.create` or `PATH box.destroy` with one JSON request on stdin
//! (`{"event", "box_id", "spoke", …}`) and answers one JSON object on stdout. A `box.create`
//! answer may carry `files` (each with `path`, `content` or `content_base64`, an octal `mode`
//! string, `uid`, `gid`), which travel inside the create verb so they work on remote spokes,
//! and an opaque `state`, replayed to the same hook's `box.destroy`. A run is bounded by a
//! timeout; a hook that fails, times out or answers garbage fails the create, and the hooks
//! that already ran get their `box.destroy` with the state they returned.
//!
//! Threads: one run uses three short-lived helper threads (stdin writer, stdout and stderr
//! readers) that end when the child's pipes close; the caller waits for the child itself.

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::boxes::InjectFile;

/// Cap on what a hook may print on stdout.
pub(crate) const MAX_HOOK_OUTPUT: u64 = 8 << 20;
/// Cap on the files all hooks together inject into one box: they travel inside one create
/// message (base64 in JSON) that must stay well under the cluster's 64 MiB message cap, or the
/// spoke would drop its whole connection.
pub(crate) const MAX_HOOK_FILES_BYTES: usize = 16 << 20;
/// Cap on the opaque `state` one hook returns: it is kept in the hub's state file with the
/// session, and that file is rewritten whole on every change.
pub(crate) const MAX_HOOK_STATE_BYTES: usize = 64 << 10;
/// Cap on the stderr kept for an error message.
const MAX_HOOK_STDERR: u64 = 4096;
/// How often a running hook is polled for exit.
const POLL: Duration = Duration::from_millis(20);

/// Why a hook failed.
#[derive(Debug)]
pub enum HookError {
    /// The executable could not be started.
    Spawn {
        /// The hook.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// It ran longer than the timeout and was killed.
    Timeout {
        /// The hook.
        path: PathBuf,
        /// The limit.
        after: Duration,
    },
    /// It exited, but a process it started still held its stdout or stderr open when the
    /// timeout ran out, so its answer cannot be known to be complete.
    PipesHeld {
        /// The hook.
        path: PathBuf,
        /// The limit.
        after: Duration,
    },
    /// It exited non-zero.
    Failed {
        /// The hook.
        path: PathBuf,
        /// Exit status text.
        status: String,
        /// The end of its stderr.
        stderr: String,
    },
    /// Its stdout is not the expected JSON.
    BadOutput {
        /// The hook.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl fmt::Display for HookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HookError::Spawn { path, source } => {
                write!(f, "{}: cannot start: {source}", path.display())
            }
            HookError::Timeout { path, after } => write!(
                f,
                "{}: did not finish within {}s and was killed",
                path.display(),
                after.as_secs()
            ),
            HookError::PipesHeld { path, after } => write!(
                f,
                "{}: exited, but a process it started still held its stdout or stderr open after {}s; redirect that process's output (e.g. >/dev/null 2>&1)",
                path.display(),
                after.as_secs_f32()
            ),
            HookError::Failed {
                path,
                status,
                stderr,
            } => {
                write!(f, "{}: {status}", path.display())?;
                if !stderr.trim().is_empty() {
                    write!(f, ": {}", stderr.trim())?;
                }
                Ok(())
            }
            HookError::BadOutput { path, reason } => {
                write!(f, "{}: bad answer: {reason}", path.display())
            }
        }
    }
}

impl std::error::Error for HookError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HookError::Spawn { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// One file in a `box.create` answer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HookFile {
    path: String,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    content_base64: Option<String>,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    uid: u32,
    #[serde(default)]
    gid: u32,
}

/// A `box.create` answer.
#[derive(Debug, Default, Deserialize)]
struct CreateAnswer {
    #[serde(default)]
    files: Vec<HookFile>,
    #[serde(default)]
    state: Option<Value>,
}

/// What the box is, as hooks see it.
#[derive(Debug, Clone)]
pub(crate) struct HookBox<'a> {
    /// The caller's box id.
    pub(crate) box_id: &'a str,
    /// The spoke it goes to.
    pub(crate) spoke: &'a str,
    /// Its image.
    pub(crate) image: &'a str,
    /// Its description.
    pub(crate) description: &'a str,
}

/// The configured hooks.
pub(crate) struct Hooks {
    paths: Vec<PathBuf>,
    timeout: Duration,
}

impl Hooks {
    /// Hooks run in `paths` order, each bounded by `timeout`.
    pub(crate) fn new(paths: Vec<PathBuf>, timeout: Duration) -> Self {
        Hooks { paths, timeout }
    }

    /// Runs every hook's `box.create`. Returns the files to inject and the combined state
    /// (`{"<hook path>": state}`, `None` when no hook returned one).
    ///
    /// # Errors
    /// The first hook failure; the hooks that ran before it have had their `box.destroy`.
    pub(crate) fn create(
        &self,
        b: &HookBox<'_>,
    ) -> Result<(Vec<InjectFile>, Option<Value>), HookError> {
        let request = json!({
            "event": "box.create",
            "box_id": b.box_id,
            "spoke": b.spoke,
            "image": b.image,
            "description": b.description,
        });
        let mut files = Vec::new();
        let mut states = serde_json::Map::new();
        for path in &self.paths {
            let answer = run(path, "box.create", &request, self.timeout)
                .and_then(|out| parse_create(path, &out));
            match answer {
                Ok((mut f, state)) => {
                    files.append(&mut f);
                    let total: usize = files.iter().map(|f| f.content.len()).sum();
                    if total > MAX_HOOK_FILES_BYTES {
                        if let Some(state) = state {
                            states.insert(path.display().to_string(), state);
                        }
                        self.destroy(b.box_id, b.spoke, "", Some(&Value::Object(states)));
                        return Err(HookError::BadOutput {
                            path: path.clone(),
                            reason: format!(
                                "the hooks' files together hold more than {MAX_HOOK_FILES_BYTES} bytes"
                            ),
                        });
                    }
                    if let Some(state) = state {
                        states.insert(path.display().to_string(), state);
                    }
                }
                Err(err) => {
                    let so_far = Value::Object(states);
                    self.destroy(b.box_id, b.spoke, "", Some(&so_far));
                    return Err(err);
                }
            }
        }
        let state = (!states.is_empty()).then_some(Value::Object(states));
        Ok((files, state))
    }

    /// Runs every hook's `box.destroy` with the state it returned at create. Best effort:
    /// failures are logged, not returned (the box is gone either way).
    pub(crate) fn destroy(
        &self,
        box_id: &str,
        spoke: &str,
        container_id: &str,
        state: Option<&Value>,
    ) {
        for path in &self.paths {
            let key = path.display().to_string();
            let own_state = state
                .and_then(|s| s.get(&key))
                .cloned()
                .unwrap_or(Value::Null);
            let request = json!({
                "event": "box.destroy",
                "box_id": box_id,
                "spoke": spoke,
                "container_id": container_id,
                "state": own_state,
            });
            if let Err(err) = run(path, "box.destroy", &request, self.timeout) {
                log::warn!("hook box.destroy for box {box_id:?}: {err}");
            }
        }
    }
}

fn parse_create(path: &Path, stdout: &[u8]) -> Result<(Vec<InjectFile>, Option<Value>), HookError> {
    let bad = |reason: String| HookError::BadOutput {
        path: path.to_path_buf(),
        reason,
    };
    if stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok((Vec::new(), None));
    }
    let answer: CreateAnswer =
        serde_json::from_slice(stdout).map_err(|e| bad(format!("not a JSON object: {e}")))?;
    let mut files = Vec::with_capacity(answer.files.len());
    for f in answer.files {
        let content = match (f.content, f.content_base64) {
            (Some(text), None) => text.into_bytes(),
            (None, Some(b64)) => crate::util::base64::decode(&b64)
                .map_err(|e| bad(format!("file {:?}: {e}", f.path)))?,
            (None, None) => Vec::new(),
            (Some(_), Some(_)) => {
                return Err(bad(format!(
                    "file {:?}: give content or content_base64, not both",
                    f.path
                )));
            }
        };
        let mode = match f.mode.as_deref() {
            None | Some("") => 0o644,
            Some(m) => u32::from_str_radix(m.trim_start_matches("0o"), 8)
                .map_err(|_| bad(format!("file {:?}: mode {m:?} is not octal", f.path)))?,
        };
        let file = InjectFile {
            path: f.path,
            content,
            mode,
            uid: f.uid,
            gid: f.gid,
        };
        file.validate().map_err(|e| bad(e.to_string()))?;
        files.push(file);
    }
    let state = answer.state.filter(|s| !s.is_null());
    if let Some(state) = &state {
        // Stored in the hub's state file with the session, which every change rewrites.
        let size = serde_json::to_vec(state).map_or(usize::MAX, |v| v.len());
        if size > MAX_HOOK_STATE_BYTES {
            return Err(bad(format!(
                "its state is larger than {MAX_HOOK_STATE_BYTES} bytes; keep only an id or a path there"
            )));
        }
    }
    Ok((files, state))
}

/// Runs one hook with `request` on stdin; returns its stdout.
fn run(path: &Path, event: &str, request: &Value, timeout: Duration) -> Result<Vec<u8>, HookError> {
    let mut child = spawn(path, event)?;
    let input = serde_json::to_vec(request).expect("a json! value always serializes");
    let mut stdin = child.stdin.take();
    // Each helper owns one pipe end and finishes when the pipe closes (child exit or kill, or
    // the exit of whatever process the hook left holding it). Nobody waits for the writer: a
    // process that inherited stdin and never reads it must not stall the hub.
    let writer = std::thread::Builder::new()
        .name("hook-stdin".into())
        .spawn(move || {
            if let Some(stdin) = stdin.as_mut() {
                // A hook that ignores stdin closes the pipe early; that is its choice.
                let _ = stdin.write_all(&input);
            }
        });
    if let Err(e) = writer {
        log::warn!(
            "hook {}: cannot start the stdin writer: {e}",
            path.display()
        );
    }
    let stdout = child
        .stdout
        .take()
        .map(|p| reader("hook-stdout", p, MAX_HOOK_OUTPUT + 1));
    let stderr = child
        .stderr
        .take()
        .map(|p| reader("hook-stderr", p, MAX_HOOK_STDERR));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(HookError::Timeout {
                    path: path.to_path_buf(),
                    after: timeout,
                });
            }
            Ok(None) => std::thread::sleep(POLL),
            Err(source) => {
                break Err(HookError::Spawn {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
    };
    // After a timeout a grandchild may still hold the pipes open: leave the helper threads to
    // end when it does, rather than waiting for it here. After an exit, wait for the pipes to
    // close only until the same deadline (a hook may leave a process behind that inherited them).
    let status = status?;
    let collect = |pipe: Option<mpsc::Receiver<Vec<u8>>>| match pipe {
        None => Ok(Vec::new()),
        Some(rx) => rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .map_err(|_| HookError::PipesHeld {
                path: path.to_path_buf(),
                after: timeout,
            }),
    };
    let out = collect(stdout)?;
    let err = collect(stderr)?;
    if !status.success() {
        return Err(HookError::Failed {
            path: path.to_path_buf(),
            status: status.to_string(),
            stderr: String::from_utf8_lossy(&err).into_owned(),
        });
    }
    if out.len() as u64 > MAX_HOOK_OUTPUT {
        return Err(HookError::BadOutput {
            path: path.to_path_buf(),
            reason: format!("it printed more than {MAX_HOOK_OUTPUT} bytes"),
        });
    }
    Ok(out)
}

/// Linux's "text file busy": the executable is still open for writing somewhere, typically
/// in a process forked while the file was being written, for the instant before it execs.
const ETXTBSY: i32 = 26;
/// Spawn attempts on ETXTBSY before giving up.
const SPAWN_ATTEMPTS: u32 = 5;

fn spawn(path: &Path, event: &str) -> Result<std::process::Child, HookError> {
    let mut attempt = 1;
    loop {
        let result = Command::new(path)
            .arg(event)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        match result {
            Err(e) if e.raw_os_error() == Some(ETXTBSY) && attempt < SPAWN_ATTEMPTS => {
                attempt += 1;
                std::thread::sleep(POLL);
            }
            other => {
                return other.map_err(|source| HookError::Spawn {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
    }
}

/// Reads `pipe` (at most `cap` bytes kept, the rest drained) on its own thread; what it read
/// arrives on the returned channel once the pipe closes.
fn reader(name: &str, pipe: impl Read + Send + 'static, cap: u64) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::sync_channel(1);
    let fallback = tx.clone();
    let spawn = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let mut buf = Vec::new();
            let mut limited = pipe.take(cap);
            let _ = limited.read_to_end(&mut buf);
            // Drain the rest so the child never blocks on a full pipe.
            let _ = std::io::copy(&mut limited.into_inner(), &mut std::io::sink());
            let _ = tx.send(buf);
        });
    if let Err(e) = spawn {
        // The pipe went down with the closure: the hook sees it closed; answer empty output.
        log::warn!("hook: cannot start the {name} reader: {e}");
        let _ = fallback.send(Vec::new());
    }
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(name: &str, body: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("llmbox-hooks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    fn hb() -> HookBox<'static> {
        HookBox {
            box_id: "web",
            spoke: "local",
            image: "img",
            description: "",
        }
    }

    #[test]
    fn create_hook_files_and_state_are_collected() {
        let hook = script(
            "files.sh",
            r#"read req; case "$1" in box.create) echo '{"files":[{"path":"/etc/a","content":"hi","mode":"0600","uid":1},{"path":"/etc/b","content_base64":"aGk="}],"state":{"n":1}}';; esac"#,
        );
        let hooks = Hooks::new(vec![hook.clone()], Duration::from_secs(10));
        let (files, state) = hooks.create(&hb()).expect("create");
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].mode, 0o600);
        assert_eq!(files[0].uid, 1);
        assert_eq!(files[1].content, b"hi");
        assert_eq!(state.expect("state")[hook.display().to_string()]["n"], 1);
    }

    #[test]
    fn failing_create_hook_replays_earlier_state_to_destroy() {
        let marker =
            std::env::temp_dir().join(format!("llmbox-hook-replay-{}", std::process::id()));
        let _ = std::fs::remove_file(&marker);
        let first = script(
            "first.sh",
            &format!(
                r#"read req; if [ "$1" = box.create ]; then echo '{{"state":"s1"}}'; else echo "$req" > {}; fi"#,
                marker.display()
            ),
        );
        let second = script("second.sh", "echo boom >&2; exit 3");
        let hooks = Hooks::new(vec![first, second], Duration::from_secs(10));
        let err = hooks
            .create(&hb())
            .expect_err("second hook fails")
            .to_string();
        assert!(
            err.contains("boom") && err.contains("exit status: 3"),
            "{err}"
        );
        let replayed: Value =
            serde_json::from_slice(&std::fs::read(&marker).expect("destroy ran")).expect("json");
        assert_eq!(replayed["event"], "box.destroy");
        assert_eq!(replayed["state"], "s1");
    }

    #[test]
    fn slow_hook_is_killed_at_the_timeout() {
        let hook = script("slow.sh", "sleep 30");
        let hooks = Hooks::new(vec![hook], Duration::from_millis(200));
        let err = hooks.create(&hb()).expect_err("times out");
        assert!(matches!(err, HookError::Timeout { .. }), "{err}");
    }

    #[test]
    fn a_process_left_holding_the_hooks_stdout_does_not_stall_the_create() {
        // The hook answers and exits, but the background `sleep` inherited its stdout.
        let hook = script("daemon.sh", "sleep 30 & echo '{}'");
        let hooks = Hooks::new(vec![hook], Duration::from_millis(300));
        let err = hooks.create(&hb()).expect_err("pipes held open");
        assert!(matches!(err, HookError::PipesHeld { .. }), "{err}");
        assert!(err.to_string().contains("redirect"), "{err}");
    }

    #[test]
    fn hooks_files_together_may_not_outgrow_one_create_message() {
        // Each answer is under the per-hook cap; together they are not.
        let body = "printf '{\"files\":[{\"path\":\"/x\",\"content\":\"'; \
                    head -c 7000000 /dev/zero | tr '\\0' a; printf '\"}]}'";
        let hooks: Vec<PathBuf> = (0..3)
            .map(|i| script(&format!("big{i}.sh"), body))
            .collect();
        let one = Hooks::new(hooks[..1].to_vec(), Duration::from_secs(20));
        assert_eq!(
            one.create(&hb()).expect("one is fine").0[0].content.len(),
            7_000_000
        );
        let err = match Hooks::new(hooks, Duration::from_secs(20)).create(&hb()) {
            Ok(_) => panic!("three are too much, yet accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("more than 16777216 bytes"), "{err}");
    }

    #[test]
    fn bad_answers_are_named() {
        for (name, body, want) in [
            ("garbage.sh", "echo not-json", "not a JSON object"),
            (
                "mode.sh",
                r#"echo '{"files":[{"path":"/x","mode":"9z"}]}'"#,
                "not octal",
            ),
            (
                "huge.sh",
                "head -c 9000000 /dev/zero | tr '\\0' ' '; echo '{}'",
                "printed more than 8388608 bytes",
            ),
            (
                "state.sh",
                "printf '{\"state\":\"'; head -c 100000 /dev/zero | tr '\\0' s; printf '\"}'",
                "state is larger than 65536 bytes",
            ),
            (
                "path.sh",
                r#"echo '{"files":[{"path":"rel"}]}'"#,
                "must be absolute",
            ),
        ] {
            let hooks = Hooks::new(vec![script(name, body)], Duration::from_secs(10));
            let err = hooks.create(&hb()).expect_err(name).to_string();
            assert!(err.contains(want), "{name}: {err}");
        }
    }
}
