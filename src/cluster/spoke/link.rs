//! Opening a link to the hub and moving messages over it: dial, then one upgrade path for
//! `ws://` and `wss://` (tungstenite wraps the socket in TLS or not from the URL's scheme), both
//! within the connect timeout however slowly the hub trickles its answer, then [`Link::serve`].
//!
//! What differs between the schemes is only who writes. Over `ws://` the connection is one
//! [`Socket`] (one descriptor, no writer thread): the reading thread reads, and verb workers
//! write their answers themselves under the socket's write turn. A rustls stream cannot be
//! shared, so over `wss://` senders queue their messages and the reading thread writes them,
//! draining the queue between short reads ([`transport::pump`] with `drain`). No frame meaning
//! here: the link carries text; [`super::handler`] reads it.

use std::fmt;
use std::io;
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use tungstenite::http::Uri;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Connector, WebSocket};

use crate::cluster::ClusterError;
use crate::cluster::dial::{self, parse_hub_url, tls_config};
use crate::cluster::transport::{
    End, Flow, Outgoing, Socket, Stream, WRITE_TIMEOUT, pump, ws_config,
};

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
}

/// Why a link could not be opened.
#[derive(Debug)]
pub(crate) enum LinkError {
    /// Name resolution or the TCP connect failed.
    Connect(io::Error),
    /// The TLS handshake or the WebSocket upgrade failed or ran out of time.
    Upgrade {
        /// Whether this was `wss://`.
        tls: bool,
        /// tungstenite's account of it.
        reason: String,
    },
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::Connect(e) => write!(f, "connect: {e}"),
            LinkError::Upgrade { tls: true, reason } => write!(f, "tls upgrade: {reason}"),
            LinkError::Upgrade { tls: false, reason } => write!(f, "upgrade: {reason}"),
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

/// An upgraded connection to the hub.
pub(crate) struct Link {
    ws: WebSocket<MaybeTlsStream<Stream>>,
    /// The connection's one descriptor, shared with the senders.
    socket: Arc<Socket>,
    /// `wss://`: what senders queued, written by the reading thread.
    drain: Option<Receiver<Outgoing>>,
}

impl Link {
    /// Upgrades `socket` (over the socket from [`dial()`]) to a WebSocket, through TLS for
    /// `wss://`.
    ///
    /// # Errors
    /// [`LinkError::Upgrade`] (also when the handshake and the upgrade answer together take
    /// longer than the timeout).
    pub(crate) fn upgrade(target: &Target, socket: Arc<Socket>) -> Result<Link, LinkError> {
        let mut stream = Stream::new(Arc::clone(&socket));
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
        let drain = match ws.get_mut() {
            MaybeTlsStream::Plain(plain) => {
                plain.set_deadline(None);
                socket.upgraded(None);
                None
            }
            // rustls writes its records through the socket's write turn; messages queue.
            MaybeTlsStream::Rustls(tls) => {
                tls.sock.set_deadline(None);
                let (tx, rx) = mpsc::channel();
                socket.upgraded(Some(tx));
                Some(rx)
            }
            #[allow(unreachable_patterns)]
            _ => {
                let (tx, rx) = mpsc::channel();
                socket.upgraded(Some(tx));
                Some(rx)
            }
        };
        Ok(Link { ws, socket, drain })
    }

    /// The socket, for senders (answers from verb workers).
    pub(crate) fn socket(&self) -> Arc<Socket> {
        Arc::clone(&self.socket)
    }

    /// Sends one text message; `false` when the link is already gone.
    pub(crate) fn send_text(&self, text: String) -> bool {
        self.socket
            .send_text(text, Instant::now() + WRITE_TIMEOUT)
            .is_ok()
    }

    /// Reads until `on_text` stops, the hub closes or goes silent for three heartbeats; the
    /// close handshake and the socket's shutdown happen before it returns. Messages still
    /// being sent (by verb workers) then fail.
    pub(crate) fn serve(
        mut self,
        heartbeat: Duration,
        on_text: &mut dyn FnMut(&str) -> Flow,
    ) -> End {
        pump(
            &mut self.ws,
            &self.socket,
            self.drain.as_ref(),
            heartbeat,
            on_text,
        )
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
        let socket = Socket::new(
            dial(&target).expect("dial"),
            tungstenite::protocol::Role::Client,
        );
        let link = Link::upgrade(&target, socket).expect("link");
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
            let socket = Socket::new(tcp, tungstenite::protocol::Role::Client);
            let err = Link::upgrade(&target, socket)
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
    fn the_connect_path_is_filled_in() {
        let t =
            Target::new("ws://user:secret@hub.example:8081", None, Duration::ZERO).expect("target");
        assert_eq!(t.uri().path(), "/spoke/connect");
    }
}
