//! Opening a link to the hub and moving messages over it: dial, then one upgrade path for
//! `ws://` and `wss://` (tungstenite wraps the socket in TLS or not from the URL's scheme), both
//! within the connect timeout however slowly the hub trickles its answer, then [`Link::serve`].
//!
//! What differs between the schemes is only who writes. A plain socket splits: a
//! `spoke-write-<hub>` thread owns the write half, so a slow write never holds up reading. A
//! rustls stream cannot be split, so the reading thread also writes, draining the outgoing
//! channel between short reads ([`transport::pump`] with `drain`). No frame meaning here: the
//! link carries text; [`super::handler`] reads it.

use std::fmt;
use std::io;
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tungstenite::http::Uri;
use tungstenite::protocol::Role;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Connector, WebSocket};

use crate::cluster::ClusterError;
use crate::cluster::dial::{self, parse_hub_url, tls_config};
use crate::cluster::transport::{self, End, Flow, Outgoing, SplitStream, pump, ws_config};

/// Where and how to reach the hub, checked once per run.
#[derive(Clone)]
pub(crate) struct Target {
    uri: Uri,
    /// Set for `wss://`.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// The TCP connect timeout, and the bound on the TLS handshake plus the upgrade answer.
    timeout: Duration,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("uri", &self.uri)
            .field("tls", &self.tls.is_some())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Target {
    /// The hub at `hub_url` (`ws://` or `wss://`, trusting `ca_file` too).
    ///
    /// # Errors
    /// A bad URL ([`ClusterError::Invalid`]) or CA file ([`ClusterError::Tls`]).
    pub(crate) fn new(
        hub_url: &str,
        ca_file: Option<&Path>,
        timeout: Duration,
    ) -> Result<Target, ClusterError> {
        let (uri, tls) = parse_hub_url(hub_url)?;
        let tls = if tls {
            Some(tls_config(ca_file)?)
        } else {
            None
        };
        Ok(Target { uri, tls, timeout })
    }

    /// The URL dialed (with the connect path filled in).
    pub(crate) fn uri(&self) -> &Uri {
        &self.uri
    }

    /// `host[:port]`, for thread names and logs (never the URL's user info).
    fn hub(&self) -> String {
        let host = self.uri.host().unwrap_or("hub");
        match self.uri.port_u16() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        }
    }
}

/// Why a link could not be opened.
#[derive(Debug)]
pub(crate) enum LinkError {
    /// Name resolution or the TCP connect failed.
    Connect(io::Error),
    /// The socket could not be cloned (for its timeouts and the writer).
    Socket(io::Error),
    /// The TLS handshake or the WebSocket upgrade failed or ran out of time.
    Upgrade {
        /// Whether this was `wss://`.
        tls: bool,
        /// tungstenite's account of it.
        reason: String,
    },
    /// The writer thread could not be started.
    Writer(io::Error),
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::Connect(e) => write!(f, "connect: {e}"),
            LinkError::Socket(e) => write!(f, "socket: {e}"),
            LinkError::Upgrade { tls: true, reason } => write!(f, "tls upgrade: {reason}"),
            LinkError::Upgrade { tls: false, reason } => write!(f, "upgrade: {reason}"),
            LinkError::Writer(e) => write!(f, "writer: {e}"),
        }
    }
}

impl std::error::Error for LinkError {}

/// Connects to the hub's host (TCP_NODELAY, the timeout as the read timeout until the upgrade).
/// Split from [`Link::upgrade`] so a stop can reach the socket while the upgrade waits.
///
/// # Errors
/// [`LinkError::Connect`].
pub(crate) fn dial(target: &Target) -> Result<TcpStream, LinkError> {
    dial::dial(&target.uri, target.tls.is_some(), target.timeout).map_err(LinkError::Connect)
}

/// Who writes to the socket.
enum Writer {
    /// Split: this thread owns the write half.
    Thread(JoinHandle<()>),
    /// Single owner (TLS): the reader drains this channel between reads.
    Drained(Receiver<Outgoing>),
}

/// An upgraded connection to the hub.
pub(crate) struct Link {
    ws: WebSocket<MaybeTlsStream<SplitStream>>,
    /// The socket, for read timeouts and the final shutdown.
    control: TcpStream,
    tx: Sender<Outgoing>,
    writer: Writer,
}

impl Link {
    /// Upgrades `tcp` (from [`dial()`]) to a WebSocket, through TLS for `wss://`.
    ///
    /// # Errors
    /// [`LinkError::Socket`], [`LinkError::Upgrade`] (also when the handshake and the upgrade
    /// answer together take longer than the timeout), [`LinkError::Writer`].
    pub(crate) fn upgrade(target: &Target, tcp: TcpStream) -> Result<Link, LinkError> {
        let control = tcp.try_clone().map_err(LinkError::Socket)?;
        let mut stream = SplitStream::new(tcp);
        // The whole handshake must come within the timeout, however slowly the hub trickles
        // it (each read alone would wait that long). (`checked_add`: --connect-timeout may be
        // any duration; too far off means none.)
        stream.set_deadline(Instant::now().checked_add(target.timeout));
        let tls = target.tls.is_some();
        let connector = target
            .tls
            .as_ref()
            .map(|c| Connector::Rustls(Arc::clone(c)));
        let (mut ws, _) = tungstenite::client_tls_with_config(
            target.uri.to_string(),
            stream,
            Some(ws_config()),
            connector,
        )
        .map_err(|e| LinkError::Upgrade {
            tls,
            reason: e.to_string(),
        })?;
        let (tx, rx) = mpsc::channel();
        let writer = match ws.get_mut() {
            MaybeTlsStream::Plain(plain) => {
                plain.set_deadline(None);
                plain.attach(tx.clone());
                let name = format!("spoke-write-{}", target.hub());
                // Owns the write half; ends at the Close `serve` sends, or a failed write.
                let writer = transport::spawn_writer(name, &control, Role::Client, rx)
                    .map_err(LinkError::Writer)?;
                Writer::Thread(writer)
            }
            // Never attached: rustls writes its records straight to the socket.
            MaybeTlsStream::Rustls(tls) => {
                tls.sock.set_deadline(None);
                Writer::Drained(rx)
            }
            #[allow(unreachable_patterns)]
            _ => Writer::Drained(rx),
        };
        Ok(Link {
            ws,
            control,
            tx,
            writer,
        })
    }

    /// A sender for messages to the hub (answers from verb workers).
    pub(crate) fn sender(&self) -> Sender<Outgoing> {
        self.tx.clone()
    }

    /// Queues one text message; `false` when the link is already gone.
    pub(crate) fn send_text(&self, text: String) -> bool {
        transport::send_text(&self.tx, text)
    }

    /// Reads until `on_text` stops, the hub closes or goes silent for three heartbeats; then
    /// shuts the socket down and joins the writer. Messages still being sent (by verb workers)
    /// go into a dead channel.
    pub(crate) fn serve(
        mut self,
        heartbeat: Duration,
        on_text: &mut dyn FnMut(&str) -> Flow,
    ) -> End {
        let control = &self.control;
        let set_timeout = |d: Duration| control.set_read_timeout(Some(d));
        let drain = match &self.writer {
            Writer::Drained(rx) => Some(rx),
            Writer::Thread(_) => None,
        };
        let end = pump(
            &mut self.ws,
            &self.tx,
            drain,
            heartbeat,
            &set_timeout,
            on_text,
        );
        let _ = self.control.shutdown(Shutdown::Both);
        if let Writer::Thread(writer) = self.writer {
            // The writer ends at this Close.
            let _ = self
                .tx
                .send(Outgoing::Close(transport::close_normal("bye")));
            drop((self.ws, self.tx));
            let _ = writer.join();
        }
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    fn target(scheme: &str, listener: &TcpListener, timeout: Duration) -> Target {
        let addr = listener.local_addr().expect("addr");
        Target::new(&format!("{scheme}://{addr}"), None, timeout).expect("target")
    }

    #[test]
    fn a_ws_link_carries_text_both_ways() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let target = target("ws", &listener, Duration::from_secs(10));
        // The hub's end: echoes one text message, then waits for the close.
        let hub = thread::spawn(move || {
            let (tcp, _) = listener.accept().expect("accept");
            let mut ws = tungstenite::accept(tcp).expect("upgrade");
            let msg = ws.read().expect("read");
            ws.send(msg).expect("echo");
            while ws.read().is_ok() {}
        });
        let link = Link::upgrade(&target, dial(&target).expect("dial")).expect("link");
        assert!(link.send_text("hello".into()));
        let end = link.serve(Duration::from_secs(10), &mut |text| {
            Flow::Stop(format!("got {text}"))
        });
        assert_eq!(end, End::Handler("got hello".into()));
        hub.join().expect("hub");
    }

    /// A hub that accepts the socket and never says a word.
    fn silent_hub(listener: TcpListener) -> thread::JoinHandle<()> {
        thread::spawn(move || {
            let (mut tcp, _) = listener.accept().expect("accept");
            let _ = io::copy(&mut tcp, &mut io::sink());
        })
    }

    #[test]
    fn a_silent_hub_fails_the_upgrade_within_the_timeout_on_either_scheme() {
        for (scheme, prefix) in [("ws", "upgrade: "), ("wss", "tls upgrade: ")] {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let target = target(scheme, &listener, Duration::from_millis(300));
            let hub = silent_hub(listener);
            let start = Instant::now();
            let tcp = dial(&target).expect("dial");
            let err = Link::upgrade(&target, tcp)
                .err()
                .expect("no answer")
                .to_string();
            assert!(err.starts_with(prefix), "{scheme}: {err}");
            // A liveness bound, well above the timeout: without the deadline it waits forever.
            assert!(start.elapsed() < Duration::from_secs(20), "{scheme}");
            hub.join().expect("hub");
        }
    }

    #[test]
    fn a_closed_port_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let target = target("ws", &listener, Duration::from_secs(5));
        drop(listener);
        let err = dial(&target).expect_err("nobody listens").to_string();
        assert!(err.starts_with("connect: "), "{err}");
    }

    #[test]
    fn the_writer_is_named_after_the_hub_without_user_info() {
        let t =
            Target::new("ws://user:secret@hub.example:8081", None, Duration::ZERO).expect("target");
        assert_eq!(t.hub(), "hub.example:8081");
        assert_eq!(t.uri().path(), "/spoke/connect");
    }
}
