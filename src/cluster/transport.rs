//! Moving WebSocket messages over one socket, for both ends (DESIGN §3): one descriptor and
//! one thread per socket.
//!
//! A [`Socket`] is the connection's one TCP descriptor, shared by its reader and its writers.
//! The reader thread owns reading: a tungstenite `WebSocket` over a [`Stream`], whose writes
//! (the pongs and close replies tungstenite makes while reading, and the reader's own pings and
//! closes) go to the socket under the socket's write turn. Every other thread that sends (an
//! MCP handler calling a spoke, a spoke's verb worker answering) frames its message itself and
//! writes it under the same turn ([`Socket::send_text`]), so frames never interleave and no
//! socket needs a writer thread. Each write has a deadline, which also bounds the wait for the
//! turn: a peer that stops reading cannot block a caller past it; the caller then shuts the
//! connection down, so the reader ends and fails what is still in flight.
//!
//! Queued mode (spoke over `wss://`, whose rustls stream cannot be shared): senders hand their
//! messages to the reader through a channel, and the reader alternates a short-timeout read
//! with draining it ([`pump`] with `drain`).
//!
//! Liveness: [`pump`] sends a Ping every heartbeat from the reader thread (on its read timeout)
//! and declares the peer dead after [`MISSED_HEARTBEATS`] heartbeats without any inbound frame.
//! An oversized message is answered with Close 1009. A peer that floods pings and never reads
//! its pongs blocks the reader's pong write: the reader stops reading it (backpressure), and
//! past the write deadline the connection ends.
//!
//! Closing (RFC 6455 §5.5.1): a Close from the peer is echoed before the socket is shut (the
//! client then waits briefly for the server to drop TCP first); our own close sends a Close,
//! stops data frames, and waits up to [`CLOSE_WAIT`] for the peer's Close before shutting the
//! socket. A close asked for by another thread ([`Socket::close`]) writes the Close there and
//! leaves the wait to the reader, with one process-wide timer thread (`ws-close-timer`) that
//! shuts the socket if the peer's Close has not come by then.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::thread;
use std::time::{Duration, Instant};

use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::{Frame, FrameHeader};
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use crate::util::slot::Slot;

use super::proto::MAX_MESSAGE_BYTES;

/// Inbound silence (in heartbeats) after which a peer is dead.
pub(crate) const MISSED_HEARTBEATS: u32 = 3;

/// tungstenite's read buffer: small, so an idle connection costs tens of KiB (DESIGN §10).
pub(crate) const READ_BUFFER_BYTES: usize = 4096;

/// Stack of connection threads: they hold little.
pub const CONN_THREAD_STACK: usize = 256 << 10;

/// How long one write (including the wait for the write turn) may take before the peer is
/// considered gone; callers with a nearer deadline use theirs.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long our end waits for the peer's Close after sending its own (and a client for the
/// server's TCP close after echoing one) before shutting the socket.
pub const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// What a Close gets to be written when its [`Socket::close_by`] deadline has passed: a
/// socket whose turn and buffer are free takes it at once; one stalled costs no more.
pub(crate) const CLOSE_WRITE_MIN: Duration = Duration::from_millis(10);

/// Bytes of data frames a socket holds for its turn holder to write (per connection, and only
/// while a write is under way): senders past it wait for the turn themselves.
pub(crate) const MAX_BACKLOG_BYTES: usize = 1 << 20;

/// Read timeout of the queued (TLS) loop: the latency bound of its outgoing drain.
pub(crate) const TLS_POLL: Duration = Duration::from_millis(5);

/// The WebSocket settings both ends use: 64 MiB caps on messages and frames, small buffers.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES))
}

/// What a queued-mode sender hands the reader.
#[derive(Debug)]
pub enum Outgoing {
    /// A message to frame and send.
    Msg(Message),
    /// Send this close frame and end the connection (after the peer's Close, briefly).
    Close(CloseFrame),
    /// A message counted by its [`Slot`] until it is written (or dropped).
    Counted(Message, Slot),
}

/// Why a message was not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// The connection is closing or closed: no more messages.
    Closed,
    /// The write (or the wait for the write turn) missed its deadline, or failed; the
    /// connection was shut down.
    Failed(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Closed => f.write_str("connection closed"),
            SendError::Failed(why) => write!(f, "write failed: {why}"),
        }
    }
}

/// Who may write what, under [`Socket::state`].
#[derive(Debug, Default)]
struct WriteState {
    /// Someone holds the write turn (is writing a frame).
    busy: bool,
    /// Data frames handed over while the turn was held: whoever holds the turn writes them
    /// before giving it back (at most [`MAX_BACKLOG_BYTES`]; past that, senders wait).
    backlog: Vec<u8>,
    /// Answer slots of the frames in `backlog`, given back once they are written.
    backlog_slots: Vec<Slot>,
    /// The latest deadline among the frames in `backlog` (their senders' write deadlines).
    backlog_by: Option<Instant>,
    /// Threads waiting for the turn: the holder gives it back after a batch when there are.
    waiting: usize,
    /// No more data frames: a Close went out or is going out, or the socket was shut.
    closed: bool,
    /// A Close frame of ours went out (from any thread).
    close_sent: bool,
    /// The WebSocket is up (frames may be written); before that a close just shuts the socket.
    upgraded: bool,
    /// Queued mode: senders hand their messages to the reader here.
    queue: Option<Sender<Outgoing>>,
}

/// One connection's socket: one descriptor, shared by its reader and its writers.
#[derive(Debug)]
pub struct Socket {
    /// `None` for a detached socket (tests, benches): every write fails.
    tcp: Option<TcpStream>,
    role: Role,
    state: Mutex<WriteState>,
    /// Signalled when the write turn is given back.
    turn: Condvar,
}

/// Which writes a closing connection still lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Text messages: refused once a Close is on its way.
    Data,
    /// Pongs, pings, close frames, the upgrade: until the socket is shut.
    Control,
}

impl Socket {
    /// Shares `tcp` as the connection of `role` (its end: `Server` on the hub).
    pub fn new(tcp: TcpStream, role: Role) -> Arc<Socket> {
        Arc::new(Socket {
            tcp: Some(tcp),
            role,
            state: Mutex::new(WriteState::default()),
            turn: Condvar::new(),
        })
    }

    /// A socket with no connection behind it: every send fails with [`SendError::Closed`].
    /// For tests and benchmarks that need a spoke handle and no peer.
    pub fn detached(role: Role) -> Arc<Socket> {
        Arc::new(Socket {
            tcp: None,
            role,
            state: Mutex::new(WriteState {
                closed: true,
                ..WriteState::default()
            }),
            turn: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, WriteState> {
        // Plain flags; a panicking writer cannot leave them inconsistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The descriptor, for read timeouts and reads.
    pub(crate) fn tcp(&self) -> io::Result<&TcpStream> {
        self.tcp
            .as_ref()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "detached socket"))
    }

    /// Marks the WebSocket as up; with `queue`, senders go through the reader (queued mode).
    pub(crate) fn upgraded(&self, queue: Option<Sender<Outgoing>>) {
        let mut s = self.lock();
        s.upgraded = true;
        s.queue = queue;
    }

    /// Shuts the socket down (both directions): the reader wakes and ends, writers fail.
    pub(crate) fn shutdown(&self) {
        {
            let mut s = self.lock();
            s.closed = true;
            // Frames nobody will write now; their answer slots go back.
            s.backlog = Vec::new();
            s.backlog_slots.clear();
        }
        if let Some(tcp) = &self.tcp {
            let _ = tcp.shutdown(Shutdown::Both);
        }
        self.turn.notify_all();
    }

    /// Stops data frames because a Close is going out; `true` when one already went out.
    fn begin_close(&self) -> bool {
        let mut s = self.lock();
        s.closed = true;
        std::mem::replace(&mut s.close_sent, true)
    }

    /// Whether a Close of ours went out.
    fn close_sent(&self) -> bool {
        self.lock().close_sent
    }

    /// Writes `bytes` (whole frames) under the write turn, within `deadline`. A missed
    /// deadline or a failed write shuts the socket down.
    ///
    /// Write combining: a data frame that finds the turn held is appended to the backlog and
    /// the sender returns at once; the holder writes the backlog (in one write per batch)
    /// before it gives the turn back. So concurrent callers neither queue up on the turn nor
    /// wake each other, and `slot` is given back when its frame is on the wire. Control
    /// frames (pongs, closes) always wait for the turn: the reader shuts the socket right
    /// after writing a Close, which must be out by then.
    fn write(
        &self,
        bytes: Vec<u8>,
        slot: Option<Slot>,
        kind: Kind,
        deadline: Instant,
    ) -> Result<(), SendError> {
        let tcp = self.tcp.as_ref().ok_or(SendError::Closed)?;
        let (mut batch, mut slots, mut by) = {
            let mut s = self.lock();
            loop {
                if s.closed && kind == Kind::Data {
                    return Err(SendError::Closed);
                }
                if !s.busy {
                    break;
                }
                if kind == Kind::Data && s.backlog.len() + bytes.len() <= MAX_BACKLOG_BYTES {
                    s.backlog.extend_from_slice(&bytes);
                    s.backlog_slots.extend(slot);
                    s.backlog_by = s.backlog_by.max(Some(deadline));
                    return Ok(());
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    drop(s);
                    self.shutdown();
                    return Err(SendError::Failed(
                        "no write turn within the deadline: the peer does not read".into(),
                    ));
                }
                s.waiting += 1;
                s = self
                    .turn
                    .wait_timeout(s, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                s.waiting -= 1;
            }
            s.busy = true;
            // A holder that gave the turn back to waiters may have left frames: they go first.
            let mut batch = std::mem::take(&mut s.backlog);
            batch.extend_from_slice(&bytes);
            let mut slots = std::mem::take(&mut s.backlog_slots);
            slots.extend(slot);
            let by = s.backlog_by.take().max(Some(deadline)).unwrap_or(deadline);
            (batch, slots, by)
        };
        loop {
            let written = write_all_by(tcp, &batch, by);
            drop(std::mem::take(&mut slots));
            let mut s = self.lock();
            if written.is_err() || s.backlog.is_empty() || s.waiting > 0 {
                s.busy = false;
                let wake = s.waiting > 0;
                drop(s);
                if wake {
                    // Every waiter: one whose wait is timing out at this moment must not
                    // swallow the wake (it leaves; the others take the turn and the backlog).
                    self.turn.notify_all();
                }
                return written.map_err(|e| {
                    self.shutdown();
                    SendError::Failed(e.to_string())
                });
            }
            batch = std::mem::take(&mut s.backlog);
            slots = std::mem::take(&mut s.backlog_slots);
            by = s.backlog_by.take().unwrap_or(by);
        }
    }

    /// Frames `msg` for this end's role (masked from a client).
    fn frame(&self, msg: Message) -> Result<Vec<u8>, SendError> {
        let frame = match msg {
            Message::Text(t) => Frame::message(t, OpCode::Data(Data::Text), true),
            Message::Binary(b) => Frame::message(b, OpCode::Data(Data::Binary), true),
            Message::Ping(p) => Frame::ping(p),
            Message::Pong(p) => Frame::pong(p),
            Message::Close(c) => Frame::close(c),
            Message::Frame(f) => f,
        };
        let (header, payload) = (frame.header().clone(), frame.into_payload());
        let mask = match self.role {
            Role::Server => None,
            Role::Client => {
                let mut key = [0u8; 4];
                getrandom::fill(&mut key)
                    .map_err(|e| SendError::Failed(format!("frame mask: {e}")))?;
                Some(key)
            }
        };
        let frame = Frame::from_payload(FrameHeader { mask, ..header }, payload);
        let mut out = Vec::with_capacity(frame.len());
        frame
            .format(&mut out)
            .map_err(|e| SendError::Failed(e.to_string()))?;
        Ok(out)
    }

    /// Sends one text message within `deadline` (from any thread).
    ///
    /// # Errors
    /// [`SendError::Closed`] once the connection is closing; [`SendError::Failed`] when the
    /// write missed its deadline or failed (the connection is then shut down).
    pub fn send_text(&self, text: String, deadline: Instant) -> Result<(), SendError> {
        self.send(Message::text(text), None, deadline)
    }

    /// Sends `msg`, holding `slot` until it is written (queued mode: until the reader writes
    /// it).
    pub(crate) fn send_counted(
        &self,
        msg: Message,
        slot: Slot,
        deadline: Instant,
    ) -> Result<(), SendError> {
        self.send(msg, Some(slot), deadline)
    }

    fn send(&self, msg: Message, slot: Option<Slot>, deadline: Instant) -> Result<(), SendError> {
        let queue = {
            let s = self.lock();
            if s.closed {
                return Err(SendError::Closed);
            }
            s.queue.clone()
        };
        if let Some(queue) = queue {
            let item = match slot {
                Some(slot) => Outgoing::Counted(msg, slot),
                None => Outgoing::Msg(msg),
            };
            return queue.send(item).map_err(|_| SendError::Closed);
        }
        let bytes = self.frame(msg)?;
        self.write(bytes, slot, Kind::Data, deadline)
    }

    /// Closes the connection from any thread (superseded, revoked, stopping): sends Close
    /// with `frame`, stops data frames, and shuts the socket [`CLOSE_WAIT`] later unless the
    /// reader saw the peer's Close first. Before the upgrade it just shuts the socket.
    pub fn close(self: &Arc<Self>, frame: CloseFrame) {
        self.close_by(frame, Instant::now() + CLOSE_WAIT);
    }

    /// [`close`](Socket::close) whose Close must be written by `deadline` (or within
    /// [`CLOSE_WRITE_MIN`] when that has passed), else the socket is shut at once. Closing
    /// many sockets in a row (a hub stopping, a revocation sweep) shares one deadline, so
    /// peers that stopped reading cost it once in all instead of [`CLOSE_WAIT`] each.
    pub fn close_by(self: &Arc<Self>, frame: CloseFrame, deadline: Instant) {
        let (upgraded, queue) = {
            let s = self.lock();
            (s.upgraded, s.queue.clone())
        };
        if let Some(queue) = queue {
            // The reader writes it and waits for the peer's Close itself.
            if queue.send(Outgoing::Close(frame)).is_err() {
                self.shutdown();
            }
            return;
        }
        if !upgraded || self.begin_close() {
            if !upgraded {
                self.shutdown();
            }
            return;
        }
        let by = deadline.max(Instant::now() + CLOSE_WRITE_MIN);
        let sent = self
            .frame(Message::Close(Some(frame)))
            .and_then(|bytes| self.write(bytes, None, Kind::Control, by));
        match sent {
            Ok(()) => shutdown_at(self, Instant::now() + CLOSE_WAIT),
            Err(_) => self.shutdown(),
        }
    }
}

/// Writes all of `bytes` to `tcp`, each write blocking at most until `deadline`.
fn write_all_by(mut tcp: &TcpStream, mut bytes: &[u8], deadline: Instant) -> io::Result<()> {
    while !bytes.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "write deadline passed: the peer does not read",
            ));
        }
        tcp.set_write_timeout(Some(left))?;
        match tcp.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "write deadline passed: the peer does not read",
                ));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sockets to shut at a time, oldest first (every entry waits the same [`CLOSE_WAIT`]).
struct CloseTimer {
    due: Mutex<VecDeque<(Instant, Weak<Socket>)>>,
    wake: Condvar,
}

/// Shuts `socket` down at `at`, unless it is gone by then: one process-wide timer thread
/// (`ws-close-timer`, started on first use, sleeping while nothing is due).
fn shutdown_at(socket: &Arc<Socket>, at: Instant) {
    static TIMER: OnceLock<Option<Arc<CloseTimer>>> = OnceLock::new();
    let timer = TIMER.get_or_init(|| {
        let timer = Arc::new(CloseTimer {
            due: Mutex::new(VecDeque::new()),
            wake: Condvar::new(),
        });
        let t = Arc::clone(&timer);
        let spawned = thread::Builder::new()
            .name("ws-close-timer".into())
            .stack_size(CONN_THREAD_STACK)
            .spawn(move || run_close_timer(&t));
        match spawned {
            Ok(_) => Some(timer),
            Err(e) => {
                log::error!("cannot start the close timer: {e}; closes shut sockets at once");
                None
            }
        }
    });
    match timer {
        Some(timer) => {
            let mut due = timer.due.lock().unwrap_or_else(|e| e.into_inner());
            due.push_back((at, Arc::downgrade(socket)));
            timer.wake.notify_one();
        }
        None => socket.shutdown(),
    }
}

fn run_close_timer(timer: &CloseTimer) {
    let mut due = timer.due.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let now = Instant::now();
        while due.front().is_some_and(|(at, _)| *at <= now) {
            if let Some(socket) = due.pop_front().and_then(|(_, s)| s.upgrade()) {
                socket.shutdown();
            }
        }
        due = match due.front() {
            Some((at, _)) => {
                let left = at.saturating_duration_since(now);
                timer
                    .wake
                    .wait_timeout(due, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
            None => timer.wake.wait(due).unwrap_or_else(|e| e.into_inner()),
        };
    }
}

/// The reader's stream over a [`Socket`]: reads from the descriptor, writes under the write
/// turn. Handed to tungstenite (and rustls) for the upgrade and the connection's life.
#[derive(Debug)]
pub struct Stream {
    socket: Arc<Socket>,
    deadline: Option<Instant>,
}

impl Stream {
    /// The reader's stream over `socket`.
    pub fn new(socket: Arc<Socket>) -> Self {
        Stream {
            socket,
            deadline: None,
        }
    }

    /// Makes every read fail with `TimedOut` once `deadline` has passed (the enrollment
    /// deadline covers the whole upgrade, however slowly the peer trickles bytes); `None`
    /// lifts it, leaving the socket's own read timeout.
    pub(crate) fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    fn write_deadline(&self) -> Instant {
        let within = if self.socket.close_sent() {
            CLOSE_WAIT
        } else {
            WRITE_TIMEOUT
        };
        Instant::now() + within
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut tcp = self.socket.tcp()?;
        if let Some(deadline) = self.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
            }
            tcp.set_read_timeout(Some(left))?;
        }
        tcp.read(buf)
    }
}

impl Write for Stream {
    // tungstenite hands over whole frames (its write buffer is off) and rustls whole records;
    // the whole buffer is written under one turn, so frames never interleave.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.socket
            .write(buf.to_vec(), None, Kind::Control, self.write_deadline())
            .map(|()| buf.len())
            .map_err(|e| io::Error::new(io::ErrorKind::BrokenPipe, e.to_string()))
    }

    // rustls writes its records (and its last-gasp alert, once) with `write_vectored`; the
    // default would send only the first buffer, losing e.g. a certificate alert.
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        self.write(&all)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
impl Socket {
    /// A queued-mode socket with no connection: what is sent arrives on `queue`'s receiver.
    pub(crate) fn queued(role: Role, queue: Sender<Outgoing>) -> Arc<Socket> {
        Arc::new(Socket {
            tcp: None,
            role,
            state: Mutex::new(WriteState {
                upgraded: true,
                queue: Some(queue),
                ..WriteState::default()
            }),
            turn: Condvar::new(),
        })
    }
}

fn thread_name() -> String {
    thread::current().name().unwrap_or("conn").to_string()
}

/// Close 1009 ("message too big").
pub(crate) fn close_too_big() -> CloseFrame {
    CloseFrame {
        code: CloseCode::Size,
        reason: format!("message over {MAX_MESSAGE_BYTES} bytes").into(),
    }
}

/// A normal close.
pub fn close_normal(reason: &str) -> CloseFrame {
    CloseFrame {
        code: CloseCode::Normal,
        reason: reason.to_string().into(),
    }
}

/// What the message handler tells [`pump`].
pub(crate) enum Flow {
    /// Keep reading.
    Continue,
    /// Stop: the handler decided the connection is over.
    Stop(String),
}

/// Why [`pump`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum End {
    /// The peer closed, we closed, or the socket ended.
    Closed(String),
    /// No inbound frame for [`MISSED_HEARTBEATS`] heartbeats.
    Dead,
    /// The peer sent a message over the cap; Close 1009 was sent.
    TooBig,
    /// The handler stopped.
    Handler(String),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Closed(why) => write!(f, "connection closed ({why})"),
            End::Dead => write!(
                f,
                "no frame for {MISSED_HEARTBEATS} heartbeats: peer is dead"
            ),
            End::TooBig => write!(f, "peer sent a message over {MAX_MESSAGE_BYTES} bytes"),
            End::Handler(why) => f.write_str(why),
        }
    }
}

fn is_timeout(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(e)
        if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
}

/// Reads messages until the connection ends, sending a Ping every `heartbeat` and handing
/// every text message to `on_text`; the socket is shut down when it returns (after the close
/// handshake, when there is one).
///
/// With `drain`, this is the queued loop: senders' messages are written from this thread
/// between short reads.
pub(crate) fn pump<S: Read + Write>(
    ws: &mut WebSocket<S>,
    socket: &Socket,
    drain: Option<&Receiver<Outgoing>>,
    heartbeat: Duration,
    on_text: &mut dyn FnMut(&str) -> Flow,
) -> End {
    // Direct mode: the read timeout is the time until the next ping (or the dead line) is
    // due, so an idle socket wakes once a heartbeat; re-set only when it is off by more than
    // `slack`, so a busy socket does not pay a syscall per message.
    let mut tick = match drain {
        Some(_) => TLS_POLL,
        None => heartbeat.clamp(MIN_TICK, MAX_TICK),
    };
    let slack = (heartbeat / 8).max(MIN_TICK);
    if let Err(e) = set_tick(socket, tick) {
        return e;
    }
    // `--heartbeat` is any duration the operator typed: saturate instead of overflowing.
    let dead_after = heartbeat.saturating_mul(MISSED_HEARTBEATS);
    let mut last_in = Instant::now();
    let mut last_ping = Instant::now();
    loop {
        if let Some(rx) = drain {
            loop {
                match rx.try_recv() {
                    Ok(Outgoing::Msg(msg) | Outgoing::Counted(msg, _)) => {
                        if let Err(e) = ws.send(msg) {
                            socket.shutdown();
                            return End::Closed(e.to_string());
                        }
                    }
                    Ok(Outgoing::Close(frame)) => {
                        let why = format!("closed by us: {}", frame.reason);
                        close(ws, socket, frame);
                        return End::Closed(why);
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        close(ws, socket, close_normal("bye"));
                        return End::Closed("sender gone".into());
                    }
                }
            }
        }
        match ws.read() {
            Ok(msg) => {
                last_in = Instant::now();
                match msg {
                    Message::Text(text) => {
                        if let Flow::Stop(why) = on_text(text.as_str()) {
                            close(ws, socket, close_normal("bye"));
                            return End::Handler(why);
                        }
                    }
                    Message::Close(frame) => {
                        let why = frame.map_or_else(
                            || "close".to_string(),
                            |f| format!("{} {}", f.code, f.reason),
                        );
                        return peer_closed(ws, socket, why);
                    }
                    // Binary is not part of the protocol; pings are answered by tungstenite.
                    _ => {}
                }
            }
            Err(e) if is_timeout(&e) => {}
            Err(tungstenite::Error::Capacity(e)) => {
                log::warn!("{}: {e}; closing with 1009", thread_name());
                // tungstenite's read state is spent after a capacity error: send the Close,
                // then drop bytes (the rest of the message, the peer's Close) until the end.
                if !socket.begin_close() {
                    let _ = ws.close(Some(close_too_big()));
                }
                wait_for_eof(socket);
                socket.shutdown();
                return End::TooBig;
            }
            Err(e) => {
                socket.shutdown();
                return End::Closed(e.to_string());
            }
        }
        let now = Instant::now();
        if now.duration_since(last_in) >= dead_after {
            // Nobody there to answer a Close.
            socket.shutdown();
            return End::Dead;
        }
        if now.duration_since(last_ping) >= heartbeat {
            last_ping = now;
            if let Err(e) = ws.send(Message::Ping(Vec::new().into())) {
                socket.shutdown();
                return End::Closed(format!("ping: {e}"));
            }
        }
        if drain.is_none() {
            let due = [(last_ping, heartbeat), (last_in, dead_after)]
                .into_iter()
                .filter_map(|(at, after)| at.checked_add(after))
                .min();
            let wait = due.map_or(MAX_TICK, |d| d.saturating_duration_since(now));
            let wait = wait.clamp(MIN_TICK, MAX_TICK);
            if wait.abs_diff(tick) > slack {
                tick = wait;
                if let Err(e) = set_tick(socket, tick) {
                    return e;
                }
            }
        }
    }
}

/// Shortest and longest read timeout of [`pump`]'s direct mode.
const MIN_TICK: Duration = Duration::from_millis(10);
const MAX_TICK: Duration = Duration::from_secs(3600);

/// Sets the reader's read timeout; on failure the socket is shut and this is why it ended.
fn set_tick(socket: &Socket, tick: Duration) -> Result<(), End> {
    socket
        .tcp()
        .and_then(|tcp| tcp.set_read_timeout(Some(tick)))
        .map_err(|e| {
            socket.shutdown();
            End::Closed(format!("set read timeout: {e}"))
        })
}

/// The peer sent Close (`why`): echo it unless ours already went out (then this is the
/// answer), then shut the socket — a client first waits briefly for the server to drop TCP,
/// as RFC 6455 §7.1.1 asks.
fn peer_closed<S: Read + Write>(ws: &mut WebSocket<S>, socket: &Socket, why: String) -> End {
    if socket.begin_close() {
        socket.shutdown();
        return End::Closed(format!("closed by us; the peer answered ({why})"));
    }
    // tungstenite queued the echo while reading; this writes it (a server's flush then
    // reports the connection closed).
    let _ = ws.flush();
    if socket.role == Role::Client {
        wait_for_eof(socket);
    }
    socket.shutdown();
    End::Closed(why)
}

/// Reads (and drops) until the peer ends the stream, for at most [`CLOSE_WAIT`].
fn wait_for_eof(socket: &Socket) {
    let Ok(mut tcp) = socket.tcp() else { return };
    let until = Instant::now() + CLOSE_WAIT;
    let mut sink = [0u8; 512];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || tcp.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match tcp.read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Our own close: sends Close with `frame` (unless one went out already), stops data frames,
/// waits up to [`CLOSE_WAIT`] for the peer's Close (messages meanwhile are dropped), then
/// shuts the socket.
pub(crate) fn close<S: Read + Write>(ws: &mut WebSocket<S>, socket: &Socket, frame: CloseFrame) {
    if !socket.begin_close() {
        // Written within CLOSE_WAIT now that a close is under way (see `Stream`).
        let _ = ws.close(Some(frame));
    }
    let until = Instant::now() + CLOSE_WAIT;
    if let Ok(tcp) = socket.tcp() {
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || tcp.set_read_timeout(Some(left)).is_err() {
                break;
            }
            match ws.read() {
                Ok(Message::Close(_)) => break,
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {}
                Err(_) => break,
            }
        }
    }
    socket.shutdown();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::slot::Slots;
    use std::net::TcpListener;

    /// A connected pair: (ours as a shared socket of `role`, the peer's raw socket).
    fn pair(role: Role) -> (Arc<Socket>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let ours = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (theirs, _) = listener.accept().expect("accept");
        let socket = Socket::new(ours, role);
        socket.upgraded(None);
        (socket, theirs)
    }

    /// Waits until a writer holds `socket`'s write turn.
    fn wait_for_the_turn_held(socket: &Socket) {
        let start = Instant::now();
        while !socket.lock().busy {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no writer took the turn"
            );
            thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_huge_heartbeat_neither_panics_nor_hides_the_peers_close() {
        let (socket, theirs) = pair(Role::Server);
        let mut peer = WebSocket::from_raw_socket(theirs, Role::Client, None);
        peer.send(Message::text("hi")).expect("text");
        peer.send(Message::Close(None)).expect("close");
        let mut ws = WebSocket::from_raw_socket(
            Stream::new(Arc::clone(&socket)),
            Role::Server,
            Some(ws_config()),
        );
        let mut seen = Vec::new();
        let end = pump(&mut ws, &socket, None, Duration::MAX, &mut |t| {
            seen.push(t.to_string());
            Flow::Continue
        });
        assert!(matches!(end, End::Closed(_)), "{end:?}");
        assert_eq!(seen, ["hi"]);
        // The Close was echoed before the socket was shut.
        match peer.read() {
            Ok(Message::Close(_)) => {}
            other => panic!("no close echo: {other:?}"),
        }
    }

    #[test]
    fn frames_from_64_threads_at_once_never_interleave() {
        let (socket, theirs) = pair(Role::Client);
        const THREADS: usize = 64;
        const EACH: usize = 50;
        let reader = thread::spawn(move || {
            let mut peer = WebSocket::from_raw_socket(theirs, Role::Server, Some(ws_config()));
            let mut got = Vec::new();
            while got.len() < THREADS * EACH {
                match peer.read().expect("every frame decodes") {
                    Message::Text(t) => got.push(t.to_string()),
                    other => panic!("unexpected {other:?}"),
                }
            }
            got
        });
        let writers: Vec<_> = (0..THREADS)
            .map(|t| {
                let socket = Arc::clone(&socket);
                thread::spawn(move || {
                    for i in 0..EACH {
                        // Sizes across the 7-bit, 16-bit and 64-bit length forms.
                        let pad = "x".repeat((t * 997 + i * 131) % 70_000);
                        let deadline = Instant::now() + Duration::from_secs(60);
                        socket
                            .send_text(format!("{t}:{i}:{pad}"), deadline)
                            .expect("send");
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().expect("writer");
        }
        let got = reader.join().expect("reader");
        let mut seen = std::collections::HashSet::new();
        for text in &got {
            let mut parts = text.splitn(3, ':');
            let (t, i) = (parts.next().expect("t"), parts.next().expect("i"));
            let (t, i): (usize, usize) = (t.parse().expect("t"), i.parse().expect("i"));
            assert_eq!(
                parts.next().expect("pad").len(),
                (t * 997 + i * 131) % 70_000
            );
            assert!(seen.insert((t, i)), "duplicate {t}:{i}");
        }
        assert_eq!(seen.len(), THREADS * EACH);
    }

    #[test]
    fn frames_sent_while_the_turn_is_held_are_written_by_its_holder() {
        let (socket, theirs) = pair(Role::Server);
        // The peer does not read yet: the holder's big frame fills the socket buffers.
        let big = "b".repeat(32 << 20);
        let holder = {
            let socket = Arc::clone(&socket);
            thread::spawn(move || socket.send_text(big, Instant::now() + Duration::from_secs(120)))
        };
        wait_for_the_turn_held(&socket);
        // Small frames do not wait for the turn: every sender returns while nothing is read,
        // and each frame's slot is held until it is on the wire.
        let answers = Slots::new();
        let senders: Vec<_> = (0..10)
            .map(|i| {
                let (socket, slot) = (Arc::clone(&socket), answers.take());
                thread::spawn(move || {
                    let msg = Message::text(format!("small {i}"));
                    socket.send_counted(msg, slot, Instant::now() + Duration::from_secs(120))
                })
            })
            .collect();
        for s in senders {
            assert_eq!(s.join().expect("sender"), Ok(()));
        }
        assert!(
            socket.lock().busy,
            "the big frame was written with nobody reading"
        );
        assert_eq!(answers.taken(), 10);
        let mut peer = WebSocket::from_raw_socket(theirs, Role::Client, Some(ws_config()));
        match peer.read().expect("the big frame decodes") {
            Message::Text(t) => assert_eq!(t.len(), 32 << 20),
            other => panic!("unexpected {other:?}"),
        }
        let mut small: Vec<String> = (0..10)
            .map(|_| match peer.read().expect("a small frame decodes") {
                Message::Text(t) => t.to_string(),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        small.sort();
        assert_eq!(
            small,
            (0..10).map(|i| format!("small {i}")).collect::<Vec<_>>()
        );
        assert_eq!(holder.join().expect("holder"), Ok(()));
        assert_eq!(
            answers.taken(),
            0,
            "slots of written frames were not given back"
        );
    }

    #[test]
    fn a_peer_that_stops_reading_fails_writers_by_their_deadline_and_closes_the_socket() {
        let (socket, theirs) = pair(Role::Server);
        // The peer never reads: the first writer blocks in the kernel, the rest on the turn.
        let writers: Vec<_> = (0..4)
            .map(|_| {
                let socket = Arc::clone(&socket);
                thread::spawn(move || {
                    let big = "y".repeat(8 << 20);
                    let start = Instant::now();
                    let r = socket.send_text(big, Instant::now() + Duration::from_millis(500));
                    (r, start.elapsed())
                })
            })
            .collect();
        for w in writers {
            let (r, took) = w.join().expect("writer");
            assert!(r.is_err(), "a write to a peer that never reads succeeded");
            // A liveness bound far above the 0.5 s deadline: nobody waits for ever.
            assert!(took < Duration::from_secs(20), "{took:?}");
        }
        // The connection is shut: later sends fail at once, and the peer sees the end.
        assert_eq!(
            socket.send_text("late".into(), Instant::now() + Duration::from_secs(5)),
            Err(SendError::Closed)
        );
        drop(theirs);
    }

    #[test]
    fn closing_many_stalled_peers_in_a_row_costs_one_shared_deadline() {
        const PEERS: usize = 8;
        // Each socket's turn is held by a writer blocked in the kernel: its peer never reads.
        let stalled: Vec<_> = (0..PEERS)
            .map(|_| {
                let (socket, theirs) = pair(Role::Server);
                let s = Arc::clone(&socket);
                let writer = thread::spawn(move || {
                    s.send_text(
                        "y".repeat(32 << 20),
                        Instant::now() + Duration::from_secs(600),
                    )
                });
                (socket, theirs, writer)
            })
            .collect();
        // Every writer holds its turn before the closes start.
        for (socket, _, _) in &stalled {
            wait_for_the_turn_held(socket);
        }
        let start = Instant::now();
        let by = start + CLOSE_WAIT;
        for (socket, _, _) in &stalled {
            socket.close_by(close_normal("stopping"), by);
        }
        let took = start.elapsed();
        // One close each at CLOSE_WAIT would take PEERS × 1 s; the shared deadline takes ~1 s.
        // A liveness bound, well under PEERS × CLOSE_WAIT.
        assert!(took < CLOSE_WAIT * (PEERS as u32 / 2), "{took:?}");
        for (socket, theirs, writer) in stalled {
            assert!(
                writer.join().expect("writer").is_err(),
                "the stalled write finished"
            );
            assert_eq!(
                socket.send_text("late".into(), Instant::now() + Duration::from_secs(5)),
                Err(SendError::Closed)
            );
            drop(theirs);
        }
    }

    #[test]
    fn our_close_waits_for_the_peers_close_and_a_silent_peer_only_briefly() {
        // A peer that answers the Close.
        let (socket, theirs) = pair(Role::Server);
        let peer = thread::spawn(move || {
            let mut peer = WebSocket::from_raw_socket(theirs, Role::Client, None);
            loop {
                match peer.read() {
                    Ok(Message::Close(f)) => {
                        let f = f.expect("a close frame");
                        // tungstenite echoes on the next flush.
                        let _ = peer.flush();
                        return (f.code, f.reason.to_string());
                    }
                    Ok(_) => {}
                    Err(e) => panic!("no close: {e}"),
                }
            }
        });
        let mut ws = WebSocket::from_raw_socket(
            Stream::new(Arc::clone(&socket)),
            Role::Server,
            Some(ws_config()),
        );
        close(&mut ws, &socket, close_normal("done"));
        assert_eq!(
            peer.join().expect("peer"),
            (CloseCode::Normal, "done".into())
        );
        // A peer that never answers: the socket is shut after CLOSE_WAIT, not held.
        let (socket, _theirs) = pair(Role::Server);
        let mut ws = WebSocket::from_raw_socket(
            Stream::new(Arc::clone(&socket)),
            Role::Server,
            Some(ws_config()),
        );
        let start = Instant::now();
        close(&mut ws, &socket, close_normal("done"));
        assert!(start.elapsed() < CLOSE_WAIT + Duration::from_secs(10));
    }

    #[test]
    fn a_close_from_another_thread_is_answered_and_the_reader_ends() {
        let (socket, theirs) = pair(Role::Server);
        let peer = thread::spawn(move || {
            let mut peer = WebSocket::from_raw_socket(theirs, Role::Client, None);
            while let Ok(msg) = peer.read() {
                if msg.is_close() {
                    let _ = peer.flush();
                }
            }
        });
        let reader = {
            let socket = Arc::clone(&socket);
            thread::spawn(move || {
                let mut ws = WebSocket::from_raw_socket(
                    Stream::new(Arc::clone(&socket)),
                    Role::Server,
                    Some(ws_config()),
                );
                pump(
                    &mut ws,
                    &socket,
                    None,
                    Duration::from_secs(600),
                    &mut |_| Flow::Continue,
                )
            })
        };
        socket.close(close_normal("superseded"));
        let end = reader.join().expect("reader");
        assert!(
            matches!(&end, End::Closed(why) if why.contains("the peer answered")),
            "{end:?}"
        );
        peer.join().expect("peer");
    }
}
