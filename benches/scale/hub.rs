//! The hub under test: the built `llmbox hub --no-local` binary as its own process on loopback
//! ports, with a temp state file. Its stderr log (level info) is read by a `hub-log` thread that
//! keeps the set of connected spokes from the plane's `spoke X: connected from …` and
//! `spoke X: disconnected: …` lines, so the bench sees connections the way the hub does without
//! reaching into the process.
//!
//! The process is killed (SIGKILL) on drop, so a failing bench leaves nothing running.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::mcp::Mcp;

/// How long the hub may take to answer `/healthz` after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Warning and error lines from the hub kept to print.
const KEPT_WARNINGS: usize = 5;

/// How to start the hub.
#[derive(Debug, Clone)]
pub struct HubArgs {
    /// The `llmbox` binary.
    pub bin: PathBuf,
    /// `--listen` (HTTP: `/healthz`, and `/mcp` when the build has it).
    pub listen: SocketAddr,
    /// `--spoke-listen`.
    pub spoke_listen: SocketAddr,
    /// `--state`.
    pub state: PathBuf,
    /// `--heartbeat`.
    pub heartbeat: Duration,
    /// Flags this build also accepts (`--reap-interval 0` when it has a reaper).
    pub extra: Vec<String>,
}

/// What the hub's log says about its spokes.
#[derive(Default)]
pub struct LogWatch {
    /// Per spoke: connections opened minus closed (a superseded socket closes after its
    /// successor opened, so a count, not a flag).
    open: Mutex<HashMap<String, i64>>,
    /// Spokes with at least one open connection.
    connected: AtomicUsize,
    /// Warning and error lines seen.
    warnings: AtomicUsize,
    /// The first few of them.
    kept: Mutex<Vec<String>>,
}

impl LogWatch {
    fn on_line(&self, line: &str) {
        if line.contains("[WARN]") || line.contains("[ERROR]") {
            self.warnings.fetch_add(1, Ordering::SeqCst);
            let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
            if kept.len() < KEPT_WARNINGS {
                kept.push(line.to_string());
            }
        }
        let (delta, marker) = if line.contains(": connected from ") {
            (1, ": connected from ")
        } else if line.contains(": disconnected: ") {
            (-1, ": disconnected: ")
        } else {
            return;
        };
        let Some(head) = line.split(marker).next() else {
            return;
        };
        let Some((_, name)) = head.rsplit_once("spoke ") else {
            return;
        };
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(name.to_string()).or_insert(0);
        let before = *n;
        *n += delta;
        if before <= 0 && *n > 0 {
            self.connected.fetch_add(1, Ordering::SeqCst);
        } else if before > 0 && *n <= 0 {
            self.connected.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Spokes connected now, as the hub logged them.
    pub fn connected(&self) -> usize {
        self.connected.load(Ordering::SeqCst)
    }

    /// Warning/error lines so far and the first few of them.
    pub fn warnings(&self) -> (usize, Vec<String>) {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner()).clone();
        (self.warnings.load(Ordering::SeqCst), kept)
    }
}

/// A running hub process.
pub struct HubProcess {
    child: Child,
    /// Its pid (for `/proc`).
    pub pid: u32,
    /// Its log, read as it comes.
    pub log: Arc<LogWatch>,
}

impl HubProcess {
    /// Starts the hub and waits for `/healthz`.
    ///
    /// # Panics
    /// When the binary cannot start or does not answer within [`START_TIMEOUT`].
    pub fn start(args: &HubArgs) -> HubProcess {
        let mut child = Command::new(&args.bin)
            .arg("hub")
            .arg("--no-local")
            .args(["--listen", &args.listen.to_string()])
            .args(["--spoke-listen", &args.spoke_listen.to_string()])
            .arg("--state")
            .arg(&args.state)
            .args([
                "--heartbeat",
                &format!("{}ms", args.heartbeat.as_millis()),
                "--log-level",
                "info",
            ])
            .args(&args.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", args.bin.display()));
        let log = Arc::new(LogWatch::default());
        let stderr = child.stderr.take().expect("stderr is piped");
        let watch = Arc::clone(&log);
        // Owns the hub's stderr; ends when the process does.
        thread::Builder::new()
            .name("hub-log".into())
            .spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    watch.on_line(&line);
                }
            })
            .expect("spawn hub-log");
        let mut hub = HubProcess {
            pid: child.id(),
            child,
            log,
        };
        let mut http = Mcp::new(args.listen);
        let start = Instant::now();
        while !http.healthy() {
            if let Ok(Some(status)) = hub.child.try_wait() {
                let (_, lines) = hub.log.warnings();
                panic!("the hub exited at start ({status}): {lines:?}");
            }
            assert!(
                start.elapsed() < START_TIMEOUT,
                "the hub did not answer /healthz within {START_TIMEOUT:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
        hub
    }

    /// Waits until `n` spokes are connected; the time it took, or `None` at `timeout`.
    pub fn wait_connected(&self, n: usize, since: Instant, timeout: Duration) -> Option<Duration> {
        loop {
            if self.log.connected() >= n {
                return Some(since.elapsed());
            }
            if since.elapsed() > timeout {
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGKILL and reap.
    pub fn kill(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
