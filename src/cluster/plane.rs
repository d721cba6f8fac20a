//! The hub's spoke plane: its own accept loop on `--spoke-listen`, the upgrade on
//! `/spoke/connect`, enrollment, and one reader + one writer thread per spoke (DESIGN §3–5).
//!
//! Threads: `spoke-plane-accept` (owns the listener; ends when the plane stops),
//! `spoke-plane-watch` (every heartbeat, closes revoked spokes' connections; ends when the
//! plane stops), and per socket `spoke-conn-<peer>` (upgrade, enrollment, then reading until
//! the socket ends) and `spoke-write-<peer>` (owns the write half). An accept error (EMFILE
//! included) is logged and the loop keeps serving. Stopping the [`PlaneHandle`] (or dropping
//! it) stops both loops through one [`Stop`] signal, closes every enrolled spoke's connection
//! and joins the two loops; a stranger still enrolling is cut off by its enrollment deadline.
//!
//! Limits on strangers: at most `max_connections` sockets at once (past it a new socket is
//! closed at once), the whole upgrade and the enroll within the enrollment deadline, and
//! messages of at most [`MAX_ENROLL_MESSAGE_BYTES`] until enrolled (64 MiB after). Rejection
//! reasons go to the log without quoting what the peer sent.

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use tungstenite::handshake::HandshakeError;
use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::http::StatusCode;
use tungstenite::protocol::Role;
use tungstenite::{Message, WebSocket};

use crate::util::slot::Slots;
use crate::util::stop::{Stop, StopHandle};

use super::ClusterError;
use super::proto::{
    CONNECT_PATH, EnrollPayload, Frame, Kind, MAX_MESSAGE_BYTES, WelcomePayload,
    describe_json_error, to_value,
};
use super::registry::Registry;
use super::remote::{CallDeadlines, RemoteSpoke};
use super::tokens::{self, Enrolled};
use super::transport::{self, CONN_THREAD_STACK, SplitStream, WRITE_TIMEOUT, pump, ws_config};

/// Time from accepting a socket to a finished enrollment.
pub(crate) const ENROLL_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest message a socket may send before it has enrolled: an `enroll` is well under 1 KiB,
/// and a stranger must not make the hub buffer 64 MiB per socket.
pub(crate) const MAX_ENROLL_MESSAGE_BYTES: usize = 64 << 10;

/// Default heartbeat (`--heartbeat`).
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);

/// Default ceiling on simultaneous spoke sockets (enrolled or still enrolling).
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Pause after a failed accept (EMFILE) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How the plane runs.
#[derive(Debug, Clone)]
pub struct PlaneConfig {
    /// Ping interval; a peer silent for 3 of these is dead, and revocations are checked this often.
    pub heartbeat: Duration,
    /// Deadline from accept to a finished enrollment.
    pub enroll_timeout: Duration,
    /// Per-verb call deadlines for remote spokes.
    pub deadlines: CallDeadlines,
    /// Past this many open spoke sockets, new ones are closed at once.
    pub max_connections: usize,
}

impl Default for PlaneConfig {
    fn default() -> Self {
        PlaneConfig {
            heartbeat: DEFAULT_HEARTBEAT,
            enroll_timeout: ENROLL_TIMEOUT,
            deadlines: CallDeadlines::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// A running plane; [`PlaneHandle::stop`] or dropping it stops it.
pub struct PlaneHandle {
    addr: SocketAddr,
    /// The accept and watch loops; stopping it wakes the accept loop and closes the spokes.
    threads: StopHandle,
}

impl PlaneHandle {
    /// The address the plane listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `ws://` URL spokes dial.
    pub fn url(&self) -> String {
        format!("ws://{}{CONNECT_PATH}", self.addr)
    }

    /// Stops accepting, closes every spoke connection and joins the plane's threads (as
    /// dropping the handle does).
    pub fn stop(self) {
        self.threads.stop();
    }
}

/// Starts serving spokes on `listener`.
///
/// # Errors
/// Reading the listener's address or spawning the plane's threads failed.
pub fn start(
    listener: TcpListener,
    registry: Arc<Registry>,
    config: PlaneConfig,
) -> Result<PlaneHandle, ClusterError> {
    let addr = listener
        .local_addr()
        .map_err(|e| ClusterError::io("spoke plane: listener address", e))?;
    let config = Arc::new(config);
    let mut threads = StopHandle::new();
    // A blocking accept hears no condvar: the stop wakes it with a connection of our own.
    threads.on_stop(move || {
        let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
    });
    {
        let registry = Arc::clone(&registry);
        threads.on_stop(move || {
            for spoke in registry.connections() {
                spoke.close("hub stopping");
            }
        });
    }
    // Owns the listener; ends when the plane stops.
    {
        let (registry, config) = (Arc::clone(&registry), Arc::clone(&config));
        threads
            .spawn("spoke-plane-accept", move |stop| {
                accept_loop(listener, registry, config, stop);
            })
            .map_err(|e| ClusterError::io("spoke plane: spawn accept thread", e))?;
    }
    // Checks revocations every heartbeat; ends when the plane stops.
    let every = config.heartbeat;
    threads
        .spawn("spoke-plane-watch", move |stop| {
            while !stop.wait_timeout(every) {
                registry.drop_revoked();
            }
        })
        .map_err(|e| ClusterError::io("spoke plane: spawn watch thread", e))?;
    log::info!("spoke plane listening on ws://{addr}{CONNECT_PATH}");
    Ok(PlaneHandle { addr, threads })
}

fn accept_loop(
    listener: TcpListener,
    registry: Arc<Registry>,
    config: Arc<PlaneConfig>,
    stop: Stop,
) {
    let open = Slots::new();
    for conn in listener.incoming() {
        if stop.is_stopped() {
            break;
        }
        let tcp = match conn {
            Ok(tcp) => tcp,
            Err(e) => {
                log::error!("spoke plane: accept: {e}; still serving");
                if stop.wait_timeout(ACCEPT_BACKOFF) {
                    break;
                }
                continue;
            }
        };
        // Given back when the connection thread ends (or is never started).
        let Some(slot) = open.try_take(config.max_connections) else {
            log::warn!(
                "spoke plane: {} sockets open, the limit; refusing another",
                config.max_connections
            );
            let _ = tcp.shutdown(Shutdown::Both);
            continue;
        };
        let peer = tcp
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into());
        let (registry, config) = (Arc::clone(&registry), Arc::clone(&config));
        // Owns the socket from upgrade to close; ends when the socket ends.
        let spawned = thread::Builder::new()
            .name(format!("spoke-conn-{peer}"))
            .stack_size(CONN_THREAD_STACK)
            .spawn(move || {
                let _slot = slot;
                serve_socket(tcp, &peer, &registry, &config);
            });
        if let Err(e) = spawned {
            log::error!("spoke plane: cannot start a connection thread: {e}");
        }
    }
}

fn serve_socket(tcp: TcpStream, peer: &str, registry: &Arc<Registry>, config: &PlaneConfig) {
    let deadline = Instant::now() + config.enroll_timeout;
    let setup = tcp
        .set_nodelay(true)
        .and_then(|()| tcp.set_read_timeout(Some(config.enroll_timeout)))
        .and_then(|()| tcp.set_write_timeout(Some(WRITE_TIMEOUT)))
        .and_then(|()| tcp.try_clone());
    let raw = match setup {
        Ok(raw) => raw,
        Err(e) => {
            log::warn!("spoke plane: {peer}: socket setup: {e}");
            return;
        }
    };
    // The callback's error type is tungstenite's (a whole HTTP response); its size is theirs.
    #[allow(clippy::result_large_err)]
    let check_path = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        if req.uri().path() == CONNECT_PATH {
            Ok(resp)
        } else {
            let mut err = ErrorResponse::new(Some(format!(
                "not found; spokes connect to {CONNECT_PATH}\n"
            )));
            *err.status_mut() = StatusCode::NOT_FOUND;
            Err(err)
        }
    };
    let mut stream = SplitStream::new(tcp);
    stream.set_deadline(Some(deadline));
    let mut ws = match tungstenite::accept_hdr_with_config(stream, check_path, Some(ws_config())) {
        Ok(ws) => ws,
        Err(HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            log::info!("spoke plane: {peer}: refused {}", resp.status());
            return;
        }
        Err(e) => {
            log::info!("spoke plane: {peer}: not a WebSocket upgrade: {e}");
            let body = "a WebSocket upgrade to /spoke/connect is required\n";
            let _ = write!(
                &raw,
                "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = raw.shutdown(Shutdown::Both);
            return;
        }
    };
    ws.set_config(|c| {
        c.max_message_size = Some(MAX_ENROLL_MESSAGE_BYTES);
        c.max_frame_size = Some(MAX_ENROLL_MESSAGE_BYTES);
    });
    let (tx, rx) = mpsc::channel();
    ws.get_mut().attach(tx.clone());
    let writer =
        match transport::spawn_writer(format!("spoke-write-{peer}"), &raw, Role::Server, rx) {
            Ok(w) => w,
            Err(e) => {
                log::error!("spoke plane: {peer}: cannot start writer: {e}");
                return;
            }
        };
    match read_enroll(&mut ws, deadline) {
        Err(why) => {
            log::warn!("spoke plane: {peer}: enrollment rejected: {why}");
            transport::send_text(&tx, Frame::rejected().encode());
        }
        Ok(payload) => match enroll(registry, &payload) {
            Err(why) => {
                log::warn!("spoke plane: {peer}: enrollment rejected: {why}");
                transport::send_text(&tx, Frame::rejected().encode());
            }
            Ok(enrolled) => {
                ws.get_mut().set_deadline(None);
                ws.set_config(|c| {
                    c.max_message_size = Some(MAX_MESSAGE_BYTES);
                    c.max_frame_size = Some(MAX_MESSAGE_BYTES);
                });
                run_spoke(&mut ws, &raw, tx.clone(), enrolled, peer, registry, config);
            }
        },
    }
    let _ = tx.send(transport::Outgoing::Close(transport::close_normal("bye")));
    drop(tx);
    drop(ws);
    let _ = writer.join();
}

/// Reads the first text message before `deadline`; it must be an `enroll`.
fn read_enroll(
    ws: &mut WebSocket<SplitStream>,
    deadline: Instant,
) -> Result<EnrollPayload, String> {
    // The stream's deadline bounds every read here.
    loop {
        if Instant::now() >= deadline {
            return Err("no enroll message within the enrollment deadline".into());
        }
        match ws.read() {
            Ok(Message::Text(text)) => {
                let frame = Frame::decode(text.as_str())
                    .map_err(|e| format!("bad first message: {}", describe_json_error(&e)))?;
                if frame.kind != Kind::Enroll {
                    return Err(format!("first message is {:?}, not enroll", frame.kind));
                }
                return frame
                    .payload_as::<EnrollPayload>()
                    .map_err(|e| format!("bad enroll payload: {}", describe_json_error(&e)));
            }
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            // Named by kind only: its bytes may be a secret sent the wrong way.
            Ok(Message::Binary(b)) => {
                return Err(format!(
                    "first message is binary ({} bytes), not text",
                    b.len()
                ));
            }
            Ok(_) => return Err("the peer closed before enrolling".into()),
            Err(e) => return Err(format!("reading enroll: {e}")),
        }
    }
}

fn enroll(registry: &Registry, p: &EnrollPayload) -> Result<Enrolled, tokens::EnrollError> {
    let store = registry.store();
    if !p.join_token.is_empty() {
        tokens::enroll_with_token(store, &p.join_token)
    } else if !p.name.is_empty() && !p.credential.is_empty() {
        tokens::check_credential(store, &p.name, &p.credential)
    } else {
        Err(tokens::EnrollError::Incomplete)
    }
}

fn run_spoke(
    ws: &mut WebSocket<SplitStream>,
    raw: &TcpStream,
    tx: mpsc::Sender<transport::Outgoing>,
    enrolled: Enrolled,
    peer: &str,
    registry: &Arc<Registry>,
    config: &PlaneConfig,
) {
    let name = enrolled.name.clone();
    let welcome = Frame {
        payload: Some(to_value(&WelcomePayload {
            name: name.clone(),
            credential: enrolled.credential.clone().unwrap_or_default(),
        })),
        ..Frame::new(Kind::Welcome)
    };
    if !transport::send_text(&tx, welcome.encode()) {
        return;
    }
    let spoke = Arc::new(RemoteSpoke::new(
        &name,
        &enrolled.credential_hash,
        tx.clone(),
        config.deadlines,
    ));
    let (generation, old) = registry.insert(Arc::clone(&spoke));
    if let Some(old) = old {
        log::info!("spoke {name}: reconnected from {peer}; closing the superseded connection");
        old.close("superseded by a new connection");
    }
    log::info!(
        "spoke {name}: connected from {peer}{}",
        if enrolled.credential.is_some() {
            " (new enrollment)"
        } else {
            ""
        }
    );
    let set_timeout = |d: Duration| raw.set_read_timeout(Some(d));
    let end = pump(ws, &tx, None, config.heartbeat, &set_timeout, &mut |text| {
        match Frame::decode(text) {
            Ok(frame) if frame.kind == Kind::Resp => spoke.complete(frame),
            Ok(frame) => log::warn!("spoke {name}: unexpected {:?} frame ignored", frame.kind),
            Err(e) => log::warn!(
                "spoke {name}: undecodable message ignored: {}",
                describe_json_error(&e)
            ),
        }
        transport::Flow::Continue
    });
    registry.remove(&name, generation);
    spoke.fail_all();
    log::info!("spoke {name}: disconnected: {end}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn registry(tag: &str) -> (Arc<Registry>, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("llmbox-plane-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let store = Arc::new(Store::open(dir.join("s.json")).expect("store"));
        (Arc::new(Registry::new(store)), dir)
    }

    /// The names of this process's threads, as the kernel shows them.
    fn thread_names() -> Vec<String> {
        let tasks = std::fs::read_dir("/proc/self/task").expect("/proc/self/task");
        tasks
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|n| n.trim_end().to_string())
            .collect()
    }

    #[test]
    fn connection_threads_carry_the_peer_and_dropping_the_handle_stops_accepting() {
        let (registry, dir) = registry("drop");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let plane = start(listener, registry, PlaneConfig::default()).expect("plane");
        let addr = plane.addr();
        // A socket that never upgrades: its thread waits out the enrollment deadline alone.
        let stranger = TcpStream::connect(addr).expect("connect while running");
        // Its thread is named after it (the kernel keeps the first 15 bytes of a name).
        let local = stranger.local_addr().expect("addr").to_string();
        let name: String = format!("spoke-conn-{local}").chars().take(15).collect();
        let start = Instant::now();
        while !thread_names().contains(&name) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no thread {name:?}"
            );
            thread::sleep(Duration::from_millis(5));
        }
        drop(plane);
        // The accept loop was joined, so the listener is closed by the time drop returns.
        let refused = TcpStream::connect_timeout(&addr, Duration::from_secs(5));
        assert!(
            refused.is_err(),
            "the plane still accepts after its handle dropped"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
