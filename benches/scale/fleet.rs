//! The spokes: real `llmbox::cluster::spoke::run` loops, each with its own in-memory box
//! manager and saved credentials, spread over child processes (this bench binary re-run with
//! `BENCH_CHILD=fleet:…`).
//!
//! Why children: one spoke loop holds 1 descriptor (its socket, shared with its stop handle)
//! and 1 thread (the loop; a `spoke-verb` worker only while it serves a verb and for 10 s
//! after), so the open-file limit no longer forces them apart; but real spokes live on other
//! hosts, a crash of one child takes down only its share, and spreading them keeps each
//! process's thread count modest. Each child holds at most [`SPOKES_PER_CHILD`].
//!
//! Enrollment is seeded: spoke records (credential hashes) go into the hub's state file through
//! `Store`, and each spoke's credentials file is written beside it, so every spoke connects as
//! a reconnecting spoke would, with its saved credential.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use llmbox::boxes::BoxManager;
use llmbox::boxes::memory::MemoryBoxManager;
use llmbox::cluster::spoke::{self, Credentials, SpokeConfig, SpokeStop};
use llmbox::cluster::transport::CONN_THREAD_STACK;
use llmbox::store::{SpokeRecord, Store};
use llmbox::util::secret::{random_hex_32, sha256_hex};
use llmbox::util::unix_now;

/// Most spoke loops in one child process (see the module docs).
pub const SPOKES_PER_CHILD: usize = 2000;
/// Verbs a bench spoke runs at once.
const SPOKE_WORKERS: usize = 4;
/// Boxes a bench spoke may hold.
const SPOKE_MAX_BOXES: usize = 10;

/// The name of spoke `i`.
pub fn spoke_name(i: usize) -> String {
    format!("scale-{i:05}")
}

fn creds_path(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("{}.json", spoke_name(i)))
}

/// Enrolls spokes `0..n` directly in the state file and writes their credentials files.
///
/// # Panics
/// When the state file or a credentials file cannot be written.
pub fn seed(state: &Path, creds_dir: &Path, n: usize) {
    std::fs::create_dir_all(creds_dir).expect("creds dir");
    let store = Store::open(state).expect("state file");
    let now = unix_now();
    let mut records = Vec::with_capacity(n);
    for i in 0..n {
        let credential = random_hex_32().expect("random");
        records.push(SpokeRecord {
            name: spoke_name(i),
            credential_hash: sha256_hex(credential.as_bytes()),
            enrolled: now,
        });
        let creds = Credentials {
            name: spoke_name(i),
            credential,
        };
        // A plain write: `save_credentials` fsyncs each file, which costs minutes for 5000 temp
        // files and measures nothing of interest here.
        let bytes = serde_json::to_vec(&creds).expect("two strings always serialize");
        std::fs::write(creds_path(creds_dir, i), bytes).expect("credentials file");
    }
    store
        .update(|s| s.spokes.extend(records))
        .expect("seed spokes");
}

/// What one fleet child runs, passed in `BENCH_CHILD`.
struct ChildSpec {
    url: String,
    creds_dir: PathBuf,
    from: usize,
    to: usize,
    heartbeat: Duration,
}

impl ChildSpec {
    fn encode(&self) -> String {
        format!(
            "fleet:{}|{}|{}|{}|{}",
            self.url,
            self.creds_dir.display(),
            self.from,
            self.to,
            self.heartbeat.as_millis()
        )
    }

    fn decode(s: &str) -> Option<ChildSpec> {
        let mut p = s.split('|');
        let spec = ChildSpec {
            url: p.next()?.to_string(),
            creds_dir: PathBuf::from(p.next()?),
            from: p.next()?.parse().ok()?,
            to: p.next()?.parse().ok()?,
            heartbeat: Duration::from_millis(p.next()?.parse().ok()?),
        };
        Some(spec)
    }
}

/// The fleet child: starts its spoke loops, says `started`, serves until stdin closes.
///
/// # Panics
/// On a malformed spec (the parent wrote it) or when a thread cannot be spawned.
pub fn child_main(spec: &str) {
    let _ = llmbox::util::rlimit::raise_nofile_limit();
    let spec = ChildSpec::decode(spec).expect("fleet spec from the parent");
    let mut stops = Vec::new();
    for i in spec.from..spec.to {
        let mut config = SpokeConfig::new(&spec.url);
        config.credentials = creds_path(&spec.creds_dir, i);
        config.heartbeat = spec.heartbeat;
        config.max_workers = SPOKE_WORKERS;
        // The library's backoff (1 s → 30 s, ±20 % jitter) is kept as it is.
        let stop = SpokeStop::default();
        stops.push(stop.clone());
        // Runs one spoke until the process ends.
        thread::Builder::new()
            .name("fleet-spoke".into())
            .stack_size(CONN_THREAD_STACK)
            .spawn(move || {
                let mut factory = |name: &str| {
                    Ok(Arc::new(MemoryBoxManager::new(name, SPOKE_MAX_BOXES))
                        as Arc<dyn BoxManager>)
                };
                if let Err(e) = spoke::run(&config, &mut factory, &stop) {
                    eprintln!("fleet: spoke {i} ended: {e}");
                }
            })
            .expect("spawn a spoke loop");
    }
    println!("started");
    let _ = std::io::stdout().flush();
    super::common::wait_for_stdin_close();
    for s in stops {
        s.stop();
    }
}

/// The spokes started so far, across their child processes.
pub struct Fleet {
    exe: PathBuf,
    url: String,
    creds_dir: PathBuf,
    heartbeat: Duration,
    /// Children and their stdin (dropping it ends the child).
    children: Vec<(Child, Option<ChildStdin>)>,
    started: usize,
}

impl Fleet {
    /// No spokes yet; they will dial `url` with the credentials in `creds_dir`.
    pub fn new(url: &str, creds_dir: &Path, heartbeat: Duration) -> Self {
        Fleet {
            exe: std::env::current_exe().expect("own executable"),
            url: url.to_string(),
            creds_dir: creds_dir.to_path_buf(),
            heartbeat,
            children: Vec::new(),
            started: 0,
        }
    }

    /// Starts spokes up to `n` in total (new children of at most [`SPOKES_PER_CHILD`]).
    ///
    /// # Panics
    /// When a child cannot start.
    pub fn grow_to(&mut self, n: usize) {
        while self.started < n {
            let to = n.min(self.started + SPOKES_PER_CHILD);
            let spec = ChildSpec {
                url: self.url.clone(),
                creds_dir: self.creds_dir.clone(),
                from: self.started,
                to,
                heartbeat: self.heartbeat,
            };
            let mut child = Command::new(&self.exe)
                .env("BENCH_CHILD", spec.encode())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("start a fleet child");
            let mut line = String::new();
            BufReader::new(child.stdout.as_mut().expect("stdout is piped"))
                .read_line(&mut line)
                .expect("fleet child output");
            assert_eq!(line.trim(), "started", "fleet child did not start");
            let stdin = child.stdin.take();
            self.children.push((child, stdin));
            self.started = to;
        }
    }

    /// The children's pids.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|(c, _)| c.id()).collect()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (child, stdin) in &mut self.children {
            drop(stdin.take());
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
