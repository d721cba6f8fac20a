//! The baselines measured in the same run as the hub: a bare tungstenite echo process holding
//! the same N idle connections, the in-process spoke plane's own verb round trip, and the cost
//! of one revocation sweep (what the hub's `spoke-plane-watch` thread does every heartbeat).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use llmbox::boxes::CreateOptions;
use llmbox::cluster::registry::Registry;
use llmbox::cluster::remote::{CallDeadlines, RemoteSpoke};
use llmbox::cluster::transport::{Socket, ws_config};
use llmbox::store::Store;

use super::common::{self, ProcStatus, proc_status};
use super::report::Row;
use super::{CALLS, PROBE_BOX, timed};

/// Sweeps timed per N (the median is reported).
const SWEEPS: usize = 5;

/// `RemoteSpoke::exec` in this process, one spoke, no HTTP: the spoke plane's own cost.
pub fn inprocess_baseline(dir: &Path) -> Vec<Duration> {
    let hub = common::BenchHub::start(dir);
    let created = hub.remote.create(CreateOptions {
        image: "bench".into(),
        box_id: PROBE_BOX.into(),
        description: String::new(),
        spoke_name: "bench".into(),
        files: Vec::new(),
    });
    let samples = match created {
        Ok(c) => {
            let cmd = ["/bin/sh".to_string(), "-c".into(), "echo hi".into()];
            timed(CALLS, || {
                hub.remote
                    .exec(&c.id, &cmd)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
        }
        Err(e) => {
            println!("in-process baseline: create failed: {e}");
            Vec::new()
        }
    };
    hub.stop.stop();
    samples
}

// ---------- the echo baseline

/// The child: a bare tungstenite echo server; prints its address, serves until stdin closes.
pub fn echo_child() {
    let _ = llmbox::util::rlimit::raise_nofile_limit();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    println!("{}", listener.local_addr().expect("address"));
    common::serve_echo(listener);
    common::wait_for_stdin_close();
}

/// Kills the child on drop.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The echo child at rest, and how long the kernel took to tear it down.
pub struct Echo {
    pub rest: ProcStatus,
    /// From the SIGKILL to the child reaped, with the largest N connected: the same teardown
    /// (N threads, N sockets) the hub's restart waits for, paid by a process that does nothing.
    pub teardown: Duration,
}

/// Holds N idle connections to an echo child for each N; returns the child's RSS at rest.
pub fn echo_phase(rows: &mut [Row]) -> Echo {
    let mut child = Command::new(std::env::current_exe().expect("own executable"))
        .env("BENCH_CHILD", "echo")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the echo child");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("stdout is piped"))
        .read_line(&mut line)
        .expect("echo address");
    let addr: SocketAddr = line.trim().parse().expect("echo address");
    let mut child = ChildGuard(child);
    let pid = child.0.id();
    thread::sleep(Duration::from_millis(200));
    let rest = proc_status(pid);
    let mut conns = Vec::new();
    for row in rows.iter_mut() {
        while conns.len() < row.n {
            let tcp = TcpStream::connect(addr).expect("connect to the echo child");
            let (ws, _) = tungstenite::client::client_with_config(
                format!("ws://{addr}/"),
                tcp,
                Some(ws_config()),
            )
            .expect("echo upgrade");
            conns.push(ws);
        }
        thread::sleep(Duration::from_millis(500));
        row.echo = proc_status(pid);
    }
    let t = Instant::now();
    let _ = child.0.kill();
    let _ = child.0.wait();
    let teardown = t.elapsed();
    drop(conns);
    Echo { rest, teardown }
}

/// One `Registry::drop_revoked` pass with the first `n` spokes of `state` connected (fake
/// connections on detached sockets): the median of [`SWEEPS`] passes.
pub fn revocation_sweep(state: &Path, n: usize) -> Duration {
    let store = Arc::new(Store::open(state).expect("state file"));
    let spokes = store.load().expect("state file").spokes.clone();
    let registry = Registry::new(store);
    for record in spokes.iter().take(n) {
        let socket = Socket::detached(tungstenite::protocol::Role::Server);
        let spoke = RemoteSpoke::new(
            &record.name,
            &record.credential_hash,
            socket,
            CallDeadlines::default(),
        );
        registry.insert(Arc::new(spoke));
    }
    let mut times: Vec<Duration> = (0..SWEEPS)
        .map(|_| {
            let t = Instant::now();
            let closed = registry.drop_revoked();
            let took = t.elapsed();
            assert!(
                closed.is_empty(),
                "the sweep closed enrolled spokes: {closed:?}"
            );
            took
        })
        .collect();
    times.sort();
    times[SWEEPS / 2]
}
