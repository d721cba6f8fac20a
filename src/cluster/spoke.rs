//! The dialing end: `llmbox spoke` connects to the hub, enrolls (join token) or reconnects
//! (saved credentials), and serves verbs against its own box manager (DESIGN §3–5).
//!
//! Threads: the caller's thread runs [`run`] (dial, enroll, read; over `wss://` it also writes,
//! alternating short reads with draining the outgoing channel); over `ws://` a `spoke-write`
//! thread owns the write half; each verb runs on a `spoke-verb` worker ([`super::workers`]: at
//! most `max_workers` at once, past that a request is answered with an error at once). Reconnects
//! back off 1 s → 30 s with ±20 % jitter, reset after a welcome. A rejected enrollment is
//! terminal ([`ClusterError::Rejected`]).
//!
//! The spoke takes nothing on trust from the hub: a welcome must name a valid spoke name (the
//! one it enrolled as, on a reconnect) and carry a 64-hex credential, else nothing is saved and
//! the run ends; the ws:// upgrade answer must arrive within the connect timeout.

use std::io;
use std::net::{Shutdown, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tungstenite::http::Uri;
use tungstenite::protocol::Role;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Connector, Message, WebSocket};

use crate::boxes::BoxManager;
use crate::util::fsutil::{check_dir_writable, write_atomic_0600};
use crate::util::secret::is_hex_64;
use crate::util::slot::Slots;
use crate::util::stop::Stop;

use super::ClusterError;
use super::dial::dial;
pub use super::dial::{BACKOFF_MAX, BACKOFF_MIN, Backoff, parse_hub_url, tls_config};
use super::proto::{EnrollPayload, Frame, Kind, WelcomePayload, describe_json_error, to_value};
use super::serve::{self, Policy};
use super::tokens::validate_spoke_name;
use super::transport::{self, End, Flow, Outgoing, SplitStream, pump, ws_config};
use super::workers::{Pool, Refused};

/// Default credentials file (`--credentials`).
pub const DEFAULT_CREDENTIALS: &str = "llmbox-spoke.json";
/// Default TCP connect (and upgrade) timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound on verbs running at once.
pub const DEFAULT_MAX_WORKERS: usize = 32;
/// Most answers queued for the hub and not yet written. A hub that sends requests and never
/// reads the answers reaches it, and the connection ends instead of the queue growing.
pub const MAX_QUEUED_ANSWERS: usize = 4096;

/// What a spoke needs to run. Its `Debug` hides the join token.
#[derive(Clone)]
pub struct SpokeConfig {
    /// `ws://host:port[/spoke/connect]` or `wss://…`.
    pub hub_url: String,
    /// A one-time join token (first enrollment).
    pub token: Option<String>,
    /// Where `{"name","credential"}` lives (mode 0600).
    pub credentials: PathBuf,
    /// Admission policy for `create`.
    pub policy: Policy,
    /// A PEM file of extra CA certificates for `wss://` (a private CA).
    pub ca_file: Option<PathBuf>,
    /// Ping interval; 3 silent heartbeats mean the hub is gone.
    pub heartbeat: Duration,
    /// TCP connect and upgrade timeout.
    pub connect_timeout: Duration,
    /// Verbs running at once.
    pub max_workers: usize,
    /// Reconnect delay bounds (tests shorten them).
    pub backoff: (Duration, Duration),
}

impl std::fmt::Debug for SpokeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpokeConfig")
            .field("hub_url", &self.hub_url)
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .field("credentials", &self.credentials)
            .field("policy", &self.policy)
            .field("ca_file", &self.ca_file)
            .field("heartbeat", &self.heartbeat)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_workers", &self.max_workers)
            .field("backoff", &self.backoff)
            .finish()
    }
}

impl SpokeConfig {
    /// Defaults for dialing `hub_url`.
    pub fn new(hub_url: &str) -> Self {
        SpokeConfig {
            hub_url: hub_url.to_string(),
            token: None,
            credentials: PathBuf::from(DEFAULT_CREDENTIALS),
            policy: Policy::default(),
            ca_file: None,
            heartbeat: super::plane::DEFAULT_HEARTBEAT,
            connect_timeout: CONNECT_TIMEOUT,
            max_workers: DEFAULT_MAX_WORKERS,
            backoff: (BACKOFF_MIN, BACKOFF_MAX),
        }
    }
}

/// The spoke's saved identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// Enrolled name (also the box namespace).
    pub name: String,
    /// The secret minted at first enrollment.
    pub credential: String,
}

/// Reads the credentials file; `None` when it does not exist.
///
/// # Errors
/// Unreadable, or not a credentials document (named by path, saying to move it away: a join
/// token never overwrites a file the spoke cannot read as its own).
pub fn load_credentials(path: &Path) -> Result<Option<Credentials>, ClusterError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(ClusterError::io(
                format!("read credentials {}", path.display()),
                e,
            ));
        }
    };
    let invalid = |why: String| {
        ClusterError::io(
            format!("credentials file {}", path.display()),
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{why}; move it away and start the spoke with a new join token (--token)"),
            ),
        )
    };
    let creds: Credentials = serde_json::from_slice(&bytes).map_err(|e| {
        invalid(format!(
            "not a spoke credentials document ({})",
            describe_json_error(&e)
        ))
    })?;
    validate_spoke_name(&creds.name).map_err(|e| invalid(e.to_string()))?;
    if !is_hex_64(&creds.credential) {
        return Err(invalid("its credential is not 64 hex characters".into()));
    }
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        log::warn!(
            "credentials file {} is open to other users (mode {:o}); run chmod 600 on it",
            path.display(),
            meta.permissions().mode() & 0o777
        );
    }
    Ok(Some(creds))
}

/// Writes the credentials file atomically with mode 0600.
///
/// # Errors
/// The write failed.
pub fn save_credentials(path: &Path, creds: &Credentials) -> Result<(), ClusterError> {
    let mut bytes = serde_json::to_vec_pretty(creds).expect("two strings always serialize");
    bytes.push(b'\n');
    write_atomic_0600(path, &bytes)
        .map_err(|e| ClusterError::io(format!("write credentials {}", path.display()), e))
}

/// Stops a running [`run`] from another thread.
#[derive(Clone, Default)]
pub struct SpokeStop {
    stop: Stop,
    socket: Arc<Mutex<Option<TcpStream>>>,
}

impl SpokeStop {
    /// Asks [`run`] to return: closes the current socket and ends the reconnect loop.
    pub fn stop(&self) {
        self.stop.stop();
        if let Some(s) = self.lock().as_ref() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Drops the current connection (the loop reconnects): for tests of reconnects.
    pub fn drop_connection(&self) {
        if let Some(s) = self.lock().as_ref() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn is_stopped(&self) -> bool {
        self.stop.is_stopped()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<TcpStream>> {
        self.socket.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, s: Option<TcpStream>) {
        *self.lock() = s;
    }

    fn sleep(&self, d: Duration) {
        self.stop.wait_timeout(d);
    }
}

/// Builds the box manager once the spoke's name (namespace) is known.
pub type ManagerFactory<'a> = &'a mut dyn FnMut(&str) -> Result<Arc<dyn BoxManager>, String>;

/// How one connection ended.
enum Outcome {
    /// Welcomed, then ended (reconnect at once with reset backoff).
    Served(String),
    /// Failed before a welcome (reconnect with backoff).
    Failed(String),
    /// The hub rejected the enrollment.
    Rejected,
    /// A local failure that retrying cannot fix.
    Fatal(ClusterError),
}

/// Runs the spoke until `stop` or a terminal failure.
///
/// # Errors
/// [`ClusterError::Rejected`] when the hub rejects the enrollment (tell the operator to enroll
/// again); bad configuration; a credentials file that cannot be written; the manager factory's
/// error.
pub fn run(
    config: &SpokeConfig,
    factory: ManagerFactory<'_>,
    stop: &SpokeStop,
) -> Result<(), ClusterError> {
    let (uri, tls) = parse_hub_url(&config.hub_url)?;
    let tls = if tls {
        Some(tls_config(config.ca_file.as_deref())?)
    } else {
        None
    };
    // Saved credentials win over --token: a spoke restarted with the command line it enrolled
    // with must not spend (and be rejected for) its used token. The token stays as a fallback
    // for when those credentials are rejected (revoked, then given a fresh token).
    let mut spare_token = config.token.clone().filter(|t| !t.is_empty());
    let mut identity = match load_credentials(&config.credentials)? {
        Some(c) => {
            if spare_token.is_some() {
                log::info!(
                    "already enrolled as {:?} ({}); --token is kept in reserve",
                    c.name,
                    config.credentials.display()
                );
            }
            EnrollPayload {
                name: c.name,
                credential: c.credential,
                ..Default::default()
            }
        }
        None => match spare_token.take() {
            Some(token) => token_identity(config, token)?,
            None => {
                return Err(ClusterError::Invalid(format!(
                    "no credentials file {} and no --token: create a join token on the hub (llmbox spoke token create --name NAME) and pass it with --token",
                    config.credentials.display()
                )));
            }
        },
    };
    let mut manager: Option<Arc<dyn BoxManager>> = None;
    let mut backoff = Backoff::new(config.backoff.0, config.backoff.1);
    while !stop.is_stopped() {
        let enroll = identity.clone();
        // After the first welcome the token is spent: reconnect with the saved credential.
        let mut welcomed = |c: Credentials| {
            identity = EnrollPayload {
                name: c.name,
                credential: c.credential,
                ..Default::default()
            };
        };
        let outcome = connect_once(
            config,
            &uri,
            tls.as_ref(),
            enroll,
            &mut welcomed,
            &mut manager,
            factory,
            stop,
        );
        match outcome {
            Outcome::Served(why) => {
                log::warn!("hub connection ended: {why}; reconnecting");
                backoff.reset();
            }
            Outcome::Failed(why) => log::warn!("cannot reach the hub at {uri}: {why}"),
            Outcome::Rejected if spare_token.is_some() => {
                log::warn!("the hub rejected the saved credentials; enrolling with --token");
                if let Some(token) = spare_token.take() {
                    identity = token_identity(config, token)?;
                }
                continue;
            }
            Outcome::Rejected => {
                return Err(ClusterError::Rejected(format!(
                    "the hub rejected this spoke's enrollment (revoked, re-enrolled elsewhere, or a used/expired token); enroll again: run `llmbox spoke token create --name NAME` on the hub and start this spoke with the new --token (credentials file {})",
                    config.credentials.display()
                )));
            }
            Outcome::Fatal(e) => return Err(e),
        }
        if stop.is_stopped() {
            break;
        }
        let delay = backoff.next_delay();
        log::info!("reconnecting in {:.1}s", delay.as_secs_f64());
        stop.sleep(delay);
    }
    Ok(())
}

/// The enrollment payload for a join token, spent only if its credential can be kept.
fn token_identity(config: &SpokeConfig, token: String) -> Result<EnrollPayload, ClusterError> {
    check_dir_writable(&config.credentials).map_err(|e| {
        ClusterError::io(
            format!(
                "credentials file {} is not writable, so the join token was not used",
                config.credentials.display()
            ),
            e,
        )
    })?;
    Ok(EnrollPayload {
        join_token: token,
        ..Default::default()
    })
}

#[allow(clippy::too_many_arguments)]
fn connect_once(
    config: &SpokeConfig,
    uri: &Uri,
    tls: Option<&Arc<rustls::ClientConfig>>,
    enroll: EnrollPayload,
    welcomed: &mut dyn FnMut(Credentials),
    manager: &mut Option<Arc<dyn BoxManager>>,
    factory: ManagerFactory<'_>,
    stop: &SpokeStop,
) -> Outcome {
    let tcp = match dial(uri, tls.is_some(), config.connect_timeout) {
        Ok(t) => t,
        Err(e) => return Outcome::Failed(format!("connect: {e}")),
    };
    let control = match tcp.try_clone() {
        Ok(c) => c,
        Err(e) => return Outcome::Failed(format!("socket: {e}")),
    };
    stop.set(control.try_clone().ok());
    if stop.is_stopped() {
        return Outcome::Served("stopping".into());
    }
    let set_timeout = |d: Duration| control.set_read_timeout(Some(d));
    let (tx, rx) = mpsc::channel();
    let expected_name = enroll.name.clone();
    let enroll_frame = Frame {
        payload: Some(to_value(&enroll)),
        ..Frame::new(Kind::Enroll)
    };
    transport::send_text(&tx, enroll_frame.encode());
    let mut session = Session {
        config,
        tx: tx.clone(),
        expected_name,
        welcomed,
        manager,
        factory,
        outcome: None,
        served: false,
        policy: Arc::new(config.policy.clone()),
        workers: Pool::new(config.max_workers),
        answers: Slots::new(),
    };
    let end = match tls {
        None => {
            let request = uri.to_string();
            let mut stream = SplitStream::new(tcp);
            // The whole upgrade answer must come within the connect timeout, however slowly
            // the hub trickles it (each read alone would wait that long).
            // (`checked_add`: --connect-timeout may be any duration; too far off means none.)
            stream.set_deadline(Instant::now().checked_add(config.connect_timeout));
            let mut ws =
                match tungstenite::client::client_with_config(request, stream, Some(ws_config())) {
                    Ok((ws, _)) => ws,
                    Err(e) => return Outcome::Failed(format!("upgrade: {e}")),
                };
            ws.get_mut().set_deadline(None);
            ws.get_mut().attach(tx.clone());
            let writer =
                match transport::spawn_writer("spoke-write".into(), &control, Role::Client, rx) {
                    Ok(w) => w,
                    Err(e) => return Outcome::Failed(format!("writer: {e}")),
                };
            let end = pump(
                &mut ws,
                &tx,
                None,
                config.heartbeat,
                &set_timeout,
                &mut |t| session.on_text(t),
            );
            let _ = control.shutdown(Shutdown::Both);
            let out = finish(&mut session, end);
            // The writer ends at this Close; workers still running send into a dead channel.
            let _ = tx.send(Outgoing::Close(transport::close_normal("bye")));
            drop((ws, session, tx));
            let _ = writer.join();
            return out;
        }
        Some(tls) => {
            let request = uri.to_string();
            // As over ws://: the TLS handshake and the upgrade answer together get the connect
            // timeout. The stream is never attached, so it writes straight to the socket.
            let mut stream = SplitStream::new(tcp);
            stream.set_deadline(Instant::now().checked_add(config.connect_timeout));
            let mut ws: WebSocket<_> = match tungstenite::client_tls_with_config(
                request,
                stream,
                Some(ws_config()),
                Some(Connector::Rustls(Arc::clone(tls))),
            ) {
                Ok((ws, _)) => ws,
                Err(e) => return Outcome::Failed(format!("tls upgrade: {e}")),
            };
            match ws.get_mut() {
                MaybeTlsStream::Rustls(tls) => tls.sock.set_deadline(None),
                MaybeTlsStream::Plain(plain) => plain.set_deadline(None),
                #[allow(unreachable_patterns)]
                _ => {}
            }
            let end = pump(
                &mut ws,
                &tx,
                Some(&rx),
                config.heartbeat,
                &set_timeout,
                &mut |t| session.on_text(t),
            );
            let _ = control.shutdown(Shutdown::Both);
            end
        }
    };
    finish(&mut session, end)
}

fn finish(session: &mut Session<'_>, end: End) -> Outcome {
    match session.outcome.take() {
        Some(o) => o,
        None if session.served => Outcome::Served(end.to_string()),
        None => Outcome::Failed(end.to_string()),
    }
}

/// One connection's message handling.
struct Session<'a> {
    config: &'a SpokeConfig,
    tx: Sender<Outgoing>,
    /// The name this connection enrolled under (empty for a join token: the hub names it).
    expected_name: String,
    welcomed: &'a mut dyn FnMut(Credentials),
    manager: &'a mut Option<Arc<dyn BoxManager>>,
    factory: ManagerFactory<'a>,
    /// Set when the connection must end with this outcome (rejected, fatal).
    outcome: Option<Outcome>,
    /// True once welcomed: the end of this connection resets the backoff.
    served: bool,
    policy: Arc<Policy>,
    workers: Pool,
    /// Answers queued and not yet written (see [`MAX_QUEUED_ANSWERS`]).
    answers: Slots,
}

impl Session<'_> {
    fn on_text(&mut self, text: &str) -> Flow {
        let frame = match Frame::decode(text) {
            Ok(f) => f,
            Err(e) => {
                log::warn!(
                    "undecodable message from the hub ignored: {}",
                    describe_json_error(&e)
                );
                return Flow::Continue;
            }
        };
        match frame.kind {
            Kind::Welcome => self.on_welcome(&frame),
            Kind::Err => {
                log::error!("hub: {}", frame.error);
                self.outcome = Some(Outcome::Rejected);
                Flow::Stop("enrollment rejected".into())
            }
            Kind::Req => self.on_req(frame),
            other => {
                log::warn!("unexpected {other:?} frame from the hub ignored");
                Flow::Continue
            }
        }
    }

    fn on_welcome(&mut self, frame: &Frame) -> Flow {
        if self.served {
            log::warn!("a second welcome from the hub ignored");
            return Flow::Continue;
        }
        let w: WelcomePayload = match frame.payload_as() {
            Ok(w) => w,
            Err(e) => return Flow::Stop(format!("bad welcome: {}", describe_json_error(&e))),
        };
        // The name becomes this host's box namespace (Docker labels) and the credential goes
        // to disk: take neither from a hub that makes them up.
        if let Err(why) = self.check_welcome(&w) {
            self.outcome = Some(Outcome::Fatal(ClusterError::Protocol(why)));
            return Flow::Stop("bad welcome".into());
        }
        if !w.credential.is_empty() {
            let creds = Credentials {
                name: w.name.clone(),
                credential: w.credential.clone(),
            };
            if let Err(e) = save_credentials(&self.config.credentials, &creds) {
                self.outcome = Some(Outcome::Fatal(e));
                return Flow::Stop("cannot save credentials".into());
            }
            log::info!(
                "enrolled as {:?}; credentials saved to {}",
                w.name,
                self.config.credentials.display()
            );
            (self.welcomed)(creds);
        }
        if self.manager.is_none() {
            match (self.factory)(&w.name) {
                Ok(m) => *self.manager = Some(m),
                Err(e) => {
                    self.outcome = Some(Outcome::Fatal(ClusterError::Manager(e)));
                    return Flow::Stop("no box manager".into());
                }
            }
        }
        log::info!("connected to the hub as {:?}", w.name);
        self.served = true;
        Flow::Continue
    }

    fn check_welcome(&self, w: &WelcomePayload) -> Result<(), String> {
        if let Err(e) = validate_spoke_name(&w.name) {
            return Err(format!(
                "the hub welcomed this spoke under an invalid spoke name: {e}"
            ));
        }
        if !self.expected_name.is_empty() && w.name != self.expected_name {
            return Err(format!(
                "the hub welcomed this spoke as {:?}, but it enrolled as {:?}",
                w.name, self.expected_name
            ));
        }
        if !w.credential.is_empty() && !is_hex_64(&w.credential) {
            return Err(
                "the hub's welcome carries a malformed credential (not 64 hex characters)".into(),
            );
        }
        Ok(())
    }

    /// Queues `resp` for the hub, counted until written.
    fn answer(&self, resp: &Frame) {
        let msg = Message::text(resp.encode());
        let _ = self.tx.send(Outgoing::Counted(msg, self.answers.take()));
    }

    fn on_req(&mut self, frame: Frame) -> Flow {
        let queued = self.answers.taken();
        if queued >= MAX_QUEUED_ANSWERS {
            return Flow::Stop(format!(
                "the hub does not read its answers ({queued} queued)"
            ));
        }
        let Some(manager) = self.manager.clone() else {
            self.answer(&Frame::resp_err(frame.id, "spoke not enrolled yet"));
            return Flow::Continue;
        };
        let (tx, policy) = (self.tx.clone(), Arc::clone(&self.policy));
        let id = frame.id;
        // Counted from acceptance: a running verb's answer is as good as queued.
        let ticket = self.answers.take();
        let job = move || {
            let resp = serve::handle(manager.as_ref(), &policy, &frame);
            let msg = Message::text(resp.encode());
            let _ = tx.send(Outgoing::Counted(msg, ticket));
        };
        let refused = match self.workers.submit(job) {
            Ok(()) => return Flow::Continue,
            Err(Refused::Busy(max)) => {
                format!("spoke busy: {max} verbs already running; try again shortly")
            }
            Err(Refused::Spawn(e)) => format!("spoke cannot start a worker: {e}"),
        };
        self.answer(&Frame::resp_err(id, refused));
        Flow::Continue
    }
}
