//! The hub's spoke plane: its own accept loop on `--spoke-listen`, the upgrade on
//! `/spoke/connect`, enrollment, and one thread per spoke socket (DESIGN §3–5).
//!
//! Threads: `spoke-plane-accept` (owns the listener; ends when the plane stops),
//! `spoke-plane-watch` (every heartbeat, closes revoked spokes' connections; ends when the
//! plane stops), and per socket `spoke-conn-<peer>` (upgrade, enrollment, then reading until
//! the socket ends; it also sends the heartbeat pings and answers pings and closes). Callers
//! write their requests to the socket themselves ([`transport::Socket`]), and a close asked
//! for from elsewhere waits for the peer's Close on the process's one `ws-close-timer`
//! thread, so a socket costs one thread and one descriptor. An accept error (EMFILE
//! included) is logged and the loop keeps serving. Stopping the [`PlaneHandle`] (or dropping
//! it) stops both loops through one [`Stop`] signal, closes every enrolled spoke's connection
//! and joins the two loops; a stranger still enrolling is cut off by its enrollment deadline.
//!
//! Limits on strangers: at most `max_connections` sockets at once (the hub derives it from its
//! descriptor budget), of which at most `max_strangers` not yet enrolled, at most
//! `max_strangers_per_source` of those from one IP address (past any, a new socket is closed
//! at once, and the refusals are logged as one summary per [`REFUSAL_SUMMARY_EVERY`]), so
//! strangers cannot lock out a spoke that reconnects or enrolls; the whole upgrade and the
//! enroll within the enrollment deadline, and messages of at most [`MAX_ENROLL_MESSAGE_BYTES`]
//! until enrolled (64 MiB after). Rejection reasons go to the log without quoting what the
//! peer sent. One credential used from two sockets at once (each superseding the other) is
//! logged as a WARN naming both peers, at most once per [`PING_PONG_WARN_EVERY`] per spoke.

use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
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
use super::transport::{
    self, CLOSE_WAIT, CONN_THREAD_STACK, Socket, Stream, WRITE_TIMEOUT, pump, ws_config,
};

/// Time from accepting a socket to a finished enrollment.
pub(crate) const ENROLL_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest message a socket may send before it has enrolled: an `enroll` is well under 1 KiB,
/// and a stranger must not make the hub buffer 64 MiB per socket.
pub(crate) const MAX_ENROLL_MESSAGE_BYTES: usize = 64 << 10;

/// Default heartbeat (`--heartbeat`).
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);

/// Default ceiling on simultaneous spoke sockets (enrolled or still enrolling): 10,000 spokes
/// with room for reconnects superseding and strangers enrolling (the descriptor budget may cap
/// it lower).
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 12_000;

/// Descriptors one spoke socket holds: the socket itself, shared by its reader and writers.
pub(crate) const FDS_PER_SOCKET: u64 = 1;

/// Default ceiling on sockets not yet enrolled.
pub(crate) const DEFAULT_MAX_STRANGERS: usize = 256;

/// Default ceiling on sockets not yet enrolled from one IP address.
pub(crate) const DEFAULT_MAX_STRANGERS_PER_SOURCE: usize = 32;

/// Refused sockets are reported at most this often, counted in between.
pub(crate) const REFUSAL_SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// A connection superseded younger than this suggests one credential on two hosts.
const PING_PONG_WINDOW: Duration = Duration::from_secs(60);

/// At most one ping-pong warning per spoke name this often.
pub(crate) const PING_PONG_WARN_EVERY: Duration = Duration::from_secs(60);

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
    /// Past this many sockets not yet enrolled, new ones are closed at once.
    pub max_strangers: usize,
    /// Past this many sockets not yet enrolled from one IP address, new ones from it are closed.
    pub max_strangers_per_source: usize,
}

impl Default for PlaneConfig {
    fn default() -> Self {
        PlaneConfig {
            heartbeat: DEFAULT_HEARTBEAT,
            enroll_timeout: ENROLL_TIMEOUT,
            deadlines: CallDeadlines::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_strangers: DEFAULT_MAX_STRANGERS,
            max_strangers_per_source: DEFAULT_MAX_STRANGERS_PER_SOURCE,
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
            let by = Instant::now() + CLOSE_WAIT;
            for spoke in registry.connections() {
                spoke.close_by("hub stopping", by);
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
    let strangers = Arc::new(Strangers::default());
    let supersedes = Arc::new(Supersedes::default());
    let mut refusals = Refusals::default();
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
        let source = tcp.peer_addr().ok();
        // Given back when the connection thread ends (or is never started).
        let Some(slot) = open.try_take(config.max_connections) else {
            refusals.refuse(Refusal::Sockets, &config);
            let _ = tcp.shutdown(Shutdown::Both);
            continue;
        };
        let stranger = match Strangers::admit(&strangers, source.map(|a| a.ip()), &config) {
            Ok(stranger) => stranger,
            Err(why) => {
                refusals.refuse(why, &config);
                let _ = tcp.shutdown(Shutdown::Both);
                continue;
            }
        };
        let peer = source.map_or_else(|| "?".into(), |a| a.to_string());
        let (registry, config) = (Arc::clone(&registry), Arc::clone(&config));
        let supersedes = Arc::clone(&supersedes);
        // Owns the socket from upgrade to close; ends when the socket ends.
        let spawned = thread::Builder::new()
            .name(format!("spoke-conn-{peer}"))
            .stack_size(CONN_THREAD_STACK)
            .spawn(move || {
                let _slot = slot;
                serve_socket(tcp, &peer, stranger, &supersedes, &registry, &config);
            });
        if let Err(e) = spawned {
            log::error!("spoke plane: cannot start a connection thread: {e}");
        }
    }
}

/// Why a socket was closed at accept.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    Sockets,
    Strangers,
    PerSource,
}

/// Counts refused sockets and reports them as one line per [`REFUSAL_SUMMARY_EVERY`]: a
/// flood of strangers must not become a flood of log lines.
#[derive(Default)]
struct Refusals {
    last: Option<Instant>,
    counts: [u64; 3],
}

impl Refusals {
    fn refuse(&mut self, why: Refusal, config: &PlaneConfig) {
        self.counts[why as usize] += 1;
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < REFUSAL_SUMMARY_EVERY)
        {
            return;
        }
        let [sockets, strangers, per_source] = std::mem::take(&mut self.counts);
        log::warn!(
            "spoke plane: refused {} sockets{}: {sockets} past the socket limit ({}), {strangers} past the not-yet-enrolled limit ({}), {per_source} past the per-address not-yet-enrolled limit ({})",
            sockets + strangers + per_source,
            self.last.map_or(String::new(), |t| format!(
                " in the last {}s",
                now.duration_since(t).as_secs()
            )),
            config.max_connections,
            config.max_strangers,
            config.max_strangers_per_source,
        );
        self.last = Some(now);
    }
}

/// Sockets not yet enrolled, in all and per source address.
#[derive(Default)]
struct Strangers {
    by_source: Mutex<(usize, HashMap<Option<IpAddr>, usize>)>,
}

impl Strangers {
    fn admit(
        this: &Arc<Strangers>,
        source: Option<IpAddr>,
        config: &PlaneConfig,
    ) -> Result<StrangerSlot, Refusal> {
        let mut guard = this.by_source.lock().unwrap_or_else(|e| e.into_inner());
        let (total, by_source) = &mut *guard;
        if *total >= config.max_strangers {
            return Err(Refusal::Strangers);
        }
        let here = by_source.entry(source).or_insert(0);
        if *here >= config.max_strangers_per_source {
            return Err(Refusal::PerSource);
        }
        *here += 1;
        *total += 1;
        Ok(StrangerSlot {
            strangers: Arc::clone(this),
            source,
        })
    }
}

/// One socket counted as not yet enrolled; dropped when it enrolls or ends.
struct StrangerSlot {
    strangers: Arc<Strangers>,
    source: Option<IpAddr>,
}

impl Drop for StrangerSlot {
    fn drop(&mut self) {
        let mut guard = self
            .strangers
            .by_source
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (total, by_source) = &mut *guard;
        *total = total.saturating_sub(1);
        if let Some(n) = by_source.get_mut(&self.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                by_source.remove(&self.source);
            }
        }
    }
}

/// Where each enrolled spoke last connected from, to tell a reconnect (the old connection
/// was dead or old) from one credential on two hosts superseding each other in turn.
#[derive(Default)]
struct Supersedes {
    seen: Mutex<HashMap<String, Seen>>,
}

struct Seen {
    peer: String,
    at: Instant,
    warned: Option<Instant>,
}

impl Supersedes {
    /// Records that `name` connected from `peer`; when it superseded (`superseded`) a
    /// connection from another peer opened under [`PING_PONG_WINDOW`] ago, returns that peer,
    /// at most once per [`PING_PONG_WARN_EVERY`].
    fn connected(&self, name: &str, peer: &str, superseded: bool) -> Option<String> {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let entry = seen.entry(name.to_string()).or_insert_with(|| Seen {
            peer: peer.to_string(),
            at: now,
            warned: None,
        });
        let ping_pong = superseded
            && entry.peer != peer
            && now.duration_since(entry.at) < PING_PONG_WINDOW
            && entry
                .warned
                .is_none_or(|t| now.duration_since(t) >= PING_PONG_WARN_EVERY);
        let old = std::mem::replace(&mut entry.peer, peer.to_string());
        entry.at = now;
        if ping_pong {
            entry.warned = Some(now);
            Some(old)
        } else {
            None
        }
    }
}

fn serve_socket(
    tcp: TcpStream,
    peer: &str,
    stranger: StrangerSlot,
    supersedes: &Supersedes,
    registry: &Arc<Registry>,
    config: &PlaneConfig,
) {
    let deadline = Instant::now() + config.enroll_timeout;
    let setup = tcp
        .set_nodelay(true)
        .and_then(|()| tcp.set_read_timeout(Some(config.enroll_timeout)));
    if let Err(e) = setup {
        log::warn!("spoke plane: {peer}: socket setup: {e}");
        return;
    }
    // The one descriptor: read here, written under its write turn by this thread and callers.
    let socket = Socket::new(tcp, Role::Server);
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
    let mut stream = Stream::new(Arc::clone(&socket));
    stream.set_deadline(Some(deadline));
    let mut ws = match tungstenite::accept_hdr_with_config(stream, check_path, Some(ws_config())) {
        Ok(ws) => ws,
        Err(HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            log::info!("spoke plane: {peer}: refused {}", resp.status());
            socket.shutdown();
            return;
        }
        Err(e) => {
            log::info!("spoke plane: {peer}: not a WebSocket upgrade: {e}");
            let body = "a WebSocket upgrade to /spoke/connect is required\n";
            if let Ok(mut raw) = socket.tcp() {
                let _ = write!(
                    raw,
                    "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
            socket.shutdown();
            return;
        }
    };
    socket.upgraded(None);
    ws.set_config(|c| {
        c.max_message_size = Some(MAX_ENROLL_MESSAGE_BYTES);
        c.max_frame_size = Some(MAX_ENROLL_MESSAGE_BYTES);
    });
    let enrolled = read_enroll(&mut ws, deadline)
        .and_then(|payload| enroll(registry, &payload).map_err(|e| e.to_string()));
    match enrolled {
        Err(why) => {
            log::warn!("spoke plane: {peer}: enrollment rejected: {why}");
            let _ = socket.send_text(Frame::rejected().encode(), Instant::now() + WRITE_TIMEOUT);
            transport::close(&mut ws, &socket, transport::close_normal("bye"));
        }
        Ok(enrolled) => {
            // Enrolled: no longer a stranger.
            drop(stranger);
            ws.get_mut().set_deadline(None);
            ws.set_config(|c| {
                c.max_message_size = Some(MAX_MESSAGE_BYTES);
                c.max_frame_size = Some(MAX_MESSAGE_BYTES);
            });
            let spoke = Conn {
                socket: &socket,
                peer,
                supersedes,
            };
            run_spoke(&mut ws, spoke, enrolled, registry, config);
        }
    }
}

/// Reads the first text message before `deadline`; it must be an `enroll`.
fn read_enroll(ws: &mut WebSocket<Stream>, deadline: Instant) -> Result<EnrollPayload, String> {
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
        tokens::check_credential(store, registry.credentials(), &p.name, &p.credential)
    } else {
        Err(tokens::EnrollError::Incomplete)
    }
}

/// An enrolled socket's handles.
struct Conn<'a> {
    socket: &'a Arc<Socket>,
    peer: &'a str,
    supersedes: &'a Supersedes,
}

fn run_spoke(
    ws: &mut WebSocket<Stream>,
    conn: Conn<'_>,
    enrolled: Enrolled,
    registry: &Arc<Registry>,
    config: &PlaneConfig,
) {
    let Conn {
        socket,
        peer,
        supersedes,
    } = conn;
    let name = enrolled.name.clone();
    let welcome = Frame {
        payload: Some(to_value(&WelcomePayload {
            name: name.clone(),
            credential: enrolled.credential.clone().unwrap_or_default(),
        })),
        ..Frame::new(Kind::Welcome)
    };
    if socket
        .send_text(welcome.encode(), Instant::now() + WRITE_TIMEOUT)
        .is_err()
    {
        return;
    }
    let spoke = Arc::new(RemoteSpoke::new(
        &name,
        &enrolled.credential_hash,
        Arc::clone(socket),
        config.deadlines,
    ));
    let (generation, old) = registry.insert(Arc::clone(&spoke));
    if let Some(other) = supersedes.connected(&name, peer, old.is_some()) {
        log::warn!(
            "spoke {name}: its credential is in use from {other} and {peer} at once, each connection superseding the other; is one credential on two hosts? (next such warning in {}s at the soonest)",
            PING_PONG_WARN_EVERY.as_secs()
        );
    }
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
    let end = pump(ws, socket, None, config.heartbeat, &mut |text| {
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
mod stranger_tests {
    use super::*;

    #[test]
    fn strangers_are_capped_in_all_and_per_source() {
        let config = PlaneConfig {
            max_strangers: 3,
            max_strangers_per_source: 2,
            ..PlaneConfig::default()
        };
        let s = Arc::new(Strangers::default());
        let a: IpAddr = IpAddr::from([10, 0, 0, 1]);
        let b: IpAddr = IpAddr::from([10, 0, 0, 2]);
        let a1 = Strangers::admit(&s, Some(a), &config).ok();
        assert!(a1.is_some());
        let a2 = Strangers::admit(&s, Some(a), &config).ok();
        assert!(a2.is_some());
        assert!(matches!(
            Strangers::admit(&s, Some(a), &config),
            Err(Refusal::PerSource)
        ));
        let b1 = Strangers::admit(&s, Some(b), &config).ok();
        assert!(b1.is_some());
        assert!(matches!(
            Strangers::admit(&s, Some(b), &config),
            Err(Refusal::Strangers)
        ));
        drop(a1);
        assert!(Strangers::admit(&s, Some(b), &config).is_ok());
    }

    #[test]
    fn only_a_young_superseded_connection_from_elsewhere_is_a_ping_pong() {
        let s = Supersedes::default();
        assert_eq!(s.connected("edge", "10.0.0.1:1", false), None);
        // The same peer reconnecting is a reconnect.
        assert_eq!(s.connected("edge", "10.0.0.1:1", true), None);
        assert_eq!(
            s.connected("edge", "10.0.0.2:5", true).as_deref(),
            Some("10.0.0.1:1")
        );
        // Rate-limited: the next flip is not reported again at once.
        assert_eq!(s.connected("edge", "10.0.0.1:1", true), None);
    }
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
