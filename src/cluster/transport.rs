//! Moving WebSocket messages over one socket, for both ends (DESIGN §3).
//!
//! Split mode (hub sockets, spoke over `ws://`): the reader thread owns a tungstenite
//! `WebSocket` over a [`SplitStream`], whose *write* half does not touch the socket but hands the
//! bytes (pongs, close replies) to the connection's writer channel. A writer thread owns a
//! `try_clone` of the socket and is the only thing that writes to it, so frames never
//! interleave. The writer ends when every [`Outgoing`] sender is dropped or a write fails.
//!
//! Single-owner mode (spoke over `wss://`, whose rustls stream cannot be split): one thread
//! alternates a short-timeout read with draining the same outgoing channel ([`pump`] with
//! `drain`).
//!
//! Liveness: [`pump`] sends a Ping every heartbeat and declares the peer dead after
//! [`MISSED_HEARTBEATS`] heartbeats without any inbound frame. An oversized message is answered
//! with Close 1009. Replies the read path queues for the writer (pongs, close replies) are
//! bounded by [`MAX_REPLY_BACKLOG`]: a peer that floods pings and never reads is cut off.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::thread;
use std::time::{Duration, Instant};

use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use crate::util::slot::Slot;

use super::proto::MAX_MESSAGE_BYTES;

/// Inbound silence (in heartbeats) after which a peer is dead.
pub(crate) const MISSED_HEARTBEATS: u32 = 3;

/// tungstenite's read buffer: small, so an idle connection costs tens of KiB (DESIGN §10).
pub(crate) const READ_BUFFER_BYTES: usize = 4096;

/// Stack of connection threads (reader, writer): they hold little.
pub const CONN_THREAD_STACK: usize = 256 << 10;

/// How long one socket write may block before the peer is considered gone.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Read timeout of the single-owner (TLS) loop: the latency bound of its outgoing drain.
pub(crate) const TLS_POLL: Duration = Duration::from_millis(5);

/// Most bytes of replies the read path may have queued for the writer (pongs, close replies).
/// A peer that floods pings and never reads its pongs reaches it, and its connection ends
/// instead of the queue growing without bound.
pub(crate) const MAX_REPLY_BACKLOG: usize = 1 << 20;

/// The WebSocket settings both ends use: 64 MiB caps on messages and frames, small buffers.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES))
}

/// What the writer puts on the socket.
#[derive(Debug)]
pub enum Outgoing {
    /// A message to frame and send.
    Msg(Message),
    /// Bytes tungstenite already framed on the read path (pong, close reply).
    Raw(QueuedReply),
    /// Send this close frame, then shut the socket down.
    Close(CloseFrame),
    /// A message counted by its [`Slot`] until it is written (or dropped).
    Counted(Message, Slot),
}

/// Reply bytes on their way to the writer; they count against [`MAX_REPLY_BACKLOG`] until
/// written (or dropped).
#[derive(Debug)]
pub struct QueuedReply {
    bytes: Vec<u8>,
    backlog: Arc<AtomicUsize>,
}

impl QueuedReply {
    /// The framed bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for QueuedReply {
    fn drop(&mut self) {
        self.backlog.fetch_sub(self.bytes.len(), Ordering::SeqCst);
    }
}

/// The reader's stream: reads from the socket, writes into the writer's channel. Before
/// [`SplitStream::attach`] (during the HTTP upgrade) writes go straight to the socket.
#[derive(Debug)]
pub(crate) struct SplitStream {
    tcp: TcpStream,
    out: Option<Sender<Outgoing>>,
    deadline: Option<Instant>,
    /// Reply bytes queued and not yet written.
    backlog: Arc<AtomicUsize>,
}

impl SplitStream {
    /// Wraps a connected socket.
    pub(crate) fn new(tcp: TcpStream) -> Self {
        SplitStream {
            tcp,
            out: None,
            deadline: None,
            backlog: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Makes every read fail with `TimedOut` once `deadline` has passed (the enrollment
    /// deadline covers the whole upgrade, however slowly the peer trickles bytes); `None`
    /// lifts it, leaving the socket's own read timeout.
    pub(crate) fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    /// Routes further writes through `out`.
    pub(crate) fn attach(&mut self, out: Sender<Outgoing>) {
        self.out = Some(out);
    }
}

impl Read for SplitStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(deadline) = self.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
            }
            self.tcp.set_read_timeout(Some(left))?;
        }
        self.tcp.read(buf)
    }
}

impl Write for SplitStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &self.out {
            // The whole buffer is taken at once, so every chunk holds whole frames.
            Some(out) => {
                let queued = self.backlog.load(Ordering::SeqCst);
                if queued.saturating_add(buf.len()) > MAX_REPLY_BACKLOG {
                    return Err(io::Error::other(format!(
                        "the peer does not read: {queued} bytes of replies are still queued"
                    )));
                }
                self.backlog.fetch_add(buf.len(), Ordering::SeqCst);
                let reply = QueuedReply {
                    bytes: buf.to_vec(),
                    backlog: Arc::clone(&self.backlog),
                };
                out.send(Outgoing::Raw(reply))
                    .map(|()| buf.len())
                    .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "writer gone"))
            }
            None => self.tcp.write(buf),
        }
    }

    // rustls writes its records (and its last-gasp alert, once) with `write_vectored`; the
    // default would send only the first buffer, losing e.g. a certificate alert.
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match &self.out {
            Some(_) => {
                let first = bufs
                    .iter()
                    .find(|b| !b.is_empty())
                    .map_or(&[][..], |b| &**b);
                self.write(first)
            }
            None => self.tcp.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &self.out {
            Some(_) => Ok(()),
            None => self.tcp.flush(),
        }
    }
}

/// Starts the writer thread for `tcp` (a clone of the reader's socket).
///
/// The thread owns the write half; it ends when all senders are dropped, after a
/// [`Outgoing::Close`], or when a write fails, and then shuts the socket down so the reader
/// wakes up too.
///
/// # Errors
/// Cloning the socket or spawning the thread failed.
pub(crate) fn spawn_writer(
    name: String,
    tcp: &TcpStream,
    role: Role,
    rx: Receiver<Outgoing>,
) -> io::Result<thread::JoinHandle<()>> {
    let clone = tcp.try_clone()?;
    clone.set_write_timeout(Some(WRITE_TIMEOUT))?;
    thread::Builder::new()
        .name(name)
        .stack_size(CONN_THREAD_STACK)
        .spawn(move || {
            let mut ws = WebSocket::from_raw_socket(clone, role, Some(ws_config()));
            while let Ok(out) = rx.recv() {
                if let Err(e) = write_one(&mut ws, out) {
                    log::debug!("{}: write: {e}", thread_name());
                    break;
                }
            }
            let _ = ws.get_ref().shutdown(Shutdown::Both);
        })
}

fn thread_name() -> String {
    thread::current().name().unwrap_or("conn").to_string()
}

/// Writes one outgoing item; `Err` ends the connection (a Close counts as the end).
fn write_one<S: Read + Write>(ws: &mut WebSocket<S>, out: Outgoing) -> Result<(), String> {
    match out {
        Outgoing::Msg(msg) | Outgoing::Counted(msg, _) => ws.send(msg).map_err(|e| e.to_string()),
        Outgoing::Raw(reply) => {
            let s = ws.get_mut();
            s.write_all(reply.bytes())
                .and_then(|()| s.flush())
                .map_err(|e| e.to_string())
        }
        Outgoing::Close(frame) => {
            let _ = ws.close(Some(frame));
            let _ = ws.flush();
            Err("closed by us".into())
        }
    }
}

/// Close 1009 ("message too big").
pub(crate) fn close_too_big() -> CloseFrame {
    CloseFrame {
        code: CloseCode::Size,
        reason: format!("message over {MAX_MESSAGE_BYTES} bytes").into(),
    }
}

/// A normal close.
pub(crate) fn close_normal(reason: &str) -> CloseFrame {
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
    /// The peer closed or the socket ended.
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

/// Reads messages until the connection ends, sending a Ping every `heartbeat` through `tx` and
/// handing every text message to `on_text`.
///
/// `set_timeout` sets the socket's read timeout. With `drain`, this is the single-owner loop:
/// outgoing items are written from this thread between short reads.
pub(crate) fn pump<S: Read + Write>(
    ws: &mut WebSocket<S>,
    tx: &Sender<Outgoing>,
    drain: Option<&Receiver<Outgoing>>,
    heartbeat: Duration,
    set_timeout: &dyn Fn(Duration) -> io::Result<()>,
    on_text: &mut dyn FnMut(&str) -> Flow,
) -> End {
    let tick = if drain.is_some() {
        TLS_POLL
    } else {
        (heartbeat / 2).max(Duration::from_millis(10))
    };
    if let Err(e) = set_timeout(tick) {
        return End::Closed(format!("set read timeout: {e}"));
    }
    // `--heartbeat` is any duration the operator typed: saturate instead of overflowing.
    let dead_after = heartbeat.saturating_mul(MISSED_HEARTBEATS);
    let mut last_in = Instant::now();
    let mut last_ping = Instant::now();
    loop {
        if let Some(rx) = drain {
            loop {
                match rx.try_recv() {
                    Ok(out) => {
                        if let Err(e) = write_one(ws, out) {
                            return End::Closed(e);
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return End::Closed("sender gone".into()),
                }
            }
        }
        match ws.read() {
            Ok(msg) => {
                last_in = Instant::now();
                match msg {
                    Message::Text(text) => {
                        if let Flow::Stop(why) = on_text(text.as_str()) {
                            return End::Handler(why);
                        }
                    }
                    Message::Close(frame) => {
                        let why = frame.map(|f| format!("{} {}", f.code, f.reason));
                        // tungstenite queued the close reply; flush it out.
                        let _ = ws.flush();
                        return End::Closed(why.unwrap_or_else(|| "close".into()));
                    }
                    // Binary is not part of the protocol; pings are answered by tungstenite.
                    _ => {}
                }
            }
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(tungstenite::Error::Capacity(e)) => {
                log::warn!("{}: {e}; closing with 1009", thread_name());
                let frame = close_too_big();
                if drain.is_some() {
                    let _ = write_one(ws, Outgoing::Close(frame));
                } else {
                    let _ = tx.send(Outgoing::Close(frame));
                }
                return End::TooBig;
            }
            Err(e) => return End::Closed(e.to_string()),
        }
        let now = Instant::now();
        if now.duration_since(last_in) >= dead_after {
            return End::Dead;
        }
        if now.duration_since(last_ping) >= heartbeat {
            last_ping = now;
            let ping = Message::Ping(Vec::new().into());
            let sent = match drain {
                Some(_) => write_one(ws, Outgoing::Msg(ping)).is_ok(),
                None => tx.send(Outgoing::Msg(ping)).is_ok(),
            };
            if !sent {
                return End::Closed("writer gone".into());
            }
        }
    }
}

/// Sends one frame's JSON as a text message through `tx`; false when the connection is gone.
pub(crate) fn send_text(tx: &Sender<Outgoing>, text: String) -> bool {
    tx.send(Outgoing::Msg(Message::text(text))).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::mpsc;

    #[test]
    fn replies_a_peer_never_reads_are_bounded_and_the_bound_frees_as_they_are_written() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let tcp = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let mut stream = SplitStream::new(tcp);
        let (tx, rx) = mpsc::channel();
        stream.attach(tx);
        let pong = [0u8; 127];
        let fits = MAX_REPLY_BACKLOG / pong.len();
        for _ in 0..fits {
            stream.write_all(&pong).expect("within the bound");
        }
        let err = stream.write(&pong).expect_err("past the bound");
        assert!(err.to_string().contains("does not read"), "{err}");
        // The writer taking (writing) replies makes room again.
        let written: Vec<Outgoing> = rx.try_iter().take(10).collect();
        drop(written);
        stream.write_all(&pong).expect("room again");
    }

    #[test]
    fn a_huge_heartbeat_neither_panics_nor_hides_the_peers_close() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let ours = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (theirs, _) = listener.accept().expect("accept");
        let mut peer = WebSocket::from_raw_socket(theirs, Role::Client, None);
        peer.send(Message::text("hi")).expect("text");
        peer.send(Message::Close(None)).expect("close");
        let control = ours.try_clone().expect("clone");
        let mut ws = WebSocket::from_raw_socket(ours, Role::Server, Some(ws_config()));
        let (tx, _rx) = mpsc::channel();
        let mut seen = Vec::new();
        let end = pump(
            &mut ws,
            &tx,
            None,
            Duration::MAX,
            &|d| control.set_read_timeout(Some(d)),
            &mut |t| {
                seen.push(t.to_string());
                Flow::Continue
            },
        );
        assert!(matches!(end, End::Closed(_)), "{end:?}");
        assert_eq!(seen, ["hi"]);
    }
}
