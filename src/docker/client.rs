//! The Engine client's transport: open a connection to `unix://…` or `tcp://…` with timeouts,
//! send one request through the codec in [`super::http`], reuse keep-alive connections, and
//! hijack a connection for attach and exec start.
//!
//! The API version is negotiated lazily from `/_ping` on the first call and remembered; a
//! failed negotiation (daemon down) is retried on the next call, so a hub can start before
//! its Docker daemon. No thread is spawned here; every call blocks its caller, bounded by the
//! connect timeout and the call's timeout, which is a deadline for the whole answer (a
//! daemon that trickles bytes cannot stretch a call past it). The idle-connection lock is
//! never held across I/O.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::error::DockerError;
use super::http::{self, BodyReader, Framing, ResponseHead};

/// Connect timeout for `tcp://` hosts (a Unix socket connects or fails at once).
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline of an ordinary call: the whole answer must arrive within it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Write timeout of every call.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle keep-alive connections kept for reuse.
pub(crate) const MAX_IDLE_CONNECTIONS: usize = 4;
/// Oldest Engine API this client speaks; a newer daemon is spoken to in its own version.
pub(crate) const MIN_API_VERSION: (u32, u32) = (1, 41);

/// Where the daemon listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// A Unix socket path.
    Unix(PathBuf),
    /// `host:port`.
    Tcp(String),
}

impl Endpoint {
    /// Parses `unix:///path`, `tcp://host:port` (or a bare absolute socket path).
    ///
    /// # Errors
    /// [`DockerError::InvalidHost`].
    pub(crate) fn parse(host: &str) -> Result<Endpoint, DockerError> {
        let bad = || DockerError::InvalidHost(host.to_string());
        if let Some(path) = host.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(bad());
            }
            Ok(Endpoint::Unix(PathBuf::from(path)))
        } else if let Some(addr) = host.strip_prefix("tcp://") {
            let addr = addr.trim_end_matches('/');
            match addr.rsplit_once(':') {
                Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => {
                    Ok(Endpoint::Tcp(addr.to_string()))
                }
                _ => Err(bad()),
            }
        } else if host.starts_with('/') {
            Ok(Endpoint::Unix(PathBuf::from(host)))
        } else {
            Err(bad())
        }
    }
}

/// One open connection to the daemon.
#[derive(Debug)]
pub(crate) enum Conn {
    /// Over a Unix socket.
    Unix(UnixStream),
    /// Over TCP.
    Tcp(TcpStream),
}

impl Conn {
    /// Sets the read timeout (`None` blocks forever; callers always pass one).
    ///
    /// # Errors
    /// The OS error.
    pub(crate) fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.set_read_timeout(t),
            Conn::Tcp(s) => s.set_read_timeout(t),
        }
    }

    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.set_write_timeout(t),
            Conn::Tcp(s) => s.set_write_timeout(t),
        }
    }

    /// A second handle on the same socket (the write half of a hijacked stream).
    ///
    /// # Errors
    /// The OS error.
    pub(crate) fn try_clone(&self) -> io::Result<Conn> {
        Ok(match self {
            Conn::Unix(s) => Conn::Unix(s.try_clone()?),
            Conn::Tcp(s) => Conn::Tcp(s.try_clone()?),
        })
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(buf),
            Conn::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(buf),
            Conn::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.flush(),
            Conn::Tcp(s) => s.flush(),
        }
    }
}

/// A complete, non-error response.
#[derive(Debug)]
pub struct Response {
    /// The whole body.
    pub(crate) body: Vec<u8>,
}

/// A hijacked connection: raw bytes from the daemon after the response head, and the write
/// half for stdin.
pub struct Hijacked {
    /// The daemon's stream (already-buffered bytes first).
    pub(crate) reader: BufReader<Conn>,
    /// The same socket for writing.
    pub(crate) writer: Conn,
}

/// A body to send.
pub enum Body<'a> {
    /// Nothing.
    None,
    /// A JSON document.
    Json(&'a serde_json::Value),
    /// A tar archive.
    Tar(&'a [u8]),
}

/// The Engine client: an endpoint, a negotiated version, and a few idle connections.
pub struct Client {
    host: String,
    endpoint: Endpoint,
    version: Mutex<Option<String>>,
    idle: Mutex<Vec<BufReader<Conn>>>,
}

impl Client {
    /// A client for `host`; does not connect.
    ///
    /// # Errors
    /// [`DockerError::InvalidHost`].
    pub fn new(host: &str) -> Result<Client, DockerError> {
        Ok(Client {
            host: host.to_string(),
            endpoint: Endpoint::parse(host)?,
            version: Mutex::new(None),
            idle: Mutex::new(Vec::new()),
        })
    }

    fn connect(&self) -> Result<Conn, DockerError> {
        let unreachable = |source| DockerError::Unreachable {
            host: self.host.clone(),
            source,
        };
        let conn = match &self.endpoint {
            Endpoint::Unix(path) => Conn::Unix(UnixStream::connect(path).map_err(unreachable)?),
            Endpoint::Tcp(addr) => {
                let mut last = io::Error::new(io::ErrorKind::NotFound, "no address resolved");
                let mut found = None;
                for sa in addr.to_socket_addrs().map_err(unreachable)? {
                    match TcpStream::connect_timeout(&sa, CONNECT_TIMEOUT) {
                        Ok(s) => {
                            found = Some(s);
                            break;
                        }
                        Err(e) => last = e,
                    }
                }
                let s = found.ok_or_else(|| unreachable(last))?;
                let _ = s.set_nodelay(true);
                Conn::Tcp(s)
            }
        };
        conn.set_write_timeout(Some(WRITE_TIMEOUT))
            .map_err(|e| DockerError::io("set write timeout", e))?;
        Ok(conn)
    }

    /// Asks the daemon to answer (`GET /_ping`) and (re)negotiates the API version.
    ///
    /// # Errors
    /// [`DockerError::Unreachable`] when the daemon is down, or any call error.
    pub fn ping(&self) -> Result<String, DockerError> {
        let (head, body) = self.round_trip("GET", "/_ping", &Body::None, DEFAULT_TIMEOUT)?;
        if head.status != 200 {
            // Keep the daemon's words ("daemon is shutting down", a proxy's 403 …).
            return Err(DockerError::from_status(head.status, &body));
        }
        let daemon = head
            .header("api-version")
            .ok_or_else(|| DockerError::Protocol("/_ping answered without Api-Version".into()))?;
        let version = negotiate(daemon)?;
        *self.version.lock().unwrap_or_else(|e| e.into_inner()) = Some(version.clone());
        Ok(version)
    }

    fn versioned(&self, path: &str) -> Result<String, DockerError> {
        let known = self
            .version
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let version = match known {
            Some(v) => v,
            None => self.ping()?,
        };
        Ok(format!("/v{version}{path}"))
    }

    /// One request and its whole response; an error status becomes a typed error.
    ///
    /// # Errors
    /// Any [`DockerError`].
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: &Body<'_>,
        timeout: Duration,
    ) -> Result<Response, DockerError> {
        let target = self.versioned(path)?;
        let (head, data) = self.round_trip(method, &target, body, timeout)?;
        if head.status >= 400 {
            return Err(DockerError::from_status(head.status, &data));
        }
        Ok(Response { body: data })
    }

    /// [`Client::call`] decoding a JSON answer.
    ///
    /// # Errors
    /// Any [`DockerError`].
    pub(crate) fn call_json<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: &Body<'_>,
        timeout: Duration,
    ) -> Result<T, DockerError> {
        let resp = self.call(method, path, body, timeout)?;
        serde_json::from_slice(&resp.body).map_err(|source| DockerError::Json {
            context: format!("decode answer to {method} {path}"),
            source,
        })
    }

    fn round_trip(
        &self,
        method: &str,
        target: &str,
        body: &Body<'_>,
        timeout: Duration,
    ) -> Result<(ResponseHead, Vec<u8>), DockerError> {
        let request = encode(method, target, body, &[])?;
        let context = format!("{method} {target}");
        // A reused connection may have been closed by the daemon while idle: if it fails
        // before a single byte of answer, retry once on a fresh one.
        let pooled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        if let Some(reader) = pooled {
            match self.exchange(reader, &request, method, timeout, &context) {
                Err(Stale(_)) => {}
                Ok(result) => return result,
            }
        }
        let reader = BufReader::new(self.connect()?);
        match self.exchange(reader, &request, method, timeout, &context) {
            Ok(result) => result,
            // On a fresh connection there is no staleness to forgive: the failure is the answer.
            Err(Stale(e)) => Err(e),
        }
    }

    fn exchange(
        &self,
        mut reader: BufReader<Conn>,
        request: &[u8],
        method: &str,
        timeout: Duration,
        context: &str,
    ) -> Result<Result<(ResponseHead, Vec<u8>), DockerError>, Stale> {
        let deadline = Instant::now() + timeout;
        if let Err(e) = reader.get_ref().set_read_timeout(Some(timeout)) {
            return Err(Stale(DockerError::io(context, e)));
        }
        if let Err(e) = reader.get_mut().write_all(request) {
            return Err(Stale(DockerError::io(context, e)));
        }
        let mut timed = DeadlineReader {
            inner: &mut reader,
            deadline,
        };
        let head = match http::read_head(&mut timed) {
            Ok(h) => h,
            Err(e @ http::HttpError::UnexpectedEof("status line")) => {
                return Err(Stale(DockerError::http(context, e)));
            }
            Err(http::HttpError::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                ) =>
            {
                return Err(Stale(DockerError::io(context, e)));
            }
            Err(e) => return Ok(Err(DockerError::http(context, e))),
        };
        let framing = match head.framing(method) {
            Ok(f) => f,
            Err(e) => return Ok(Err(DockerError::http(context, e))),
        };
        let mut body = BodyReader::new(timed, framing);
        let data = match http::read_body_to_end(&mut body, http::MAX_BODY_BYTES) {
            Ok(d) => d,
            Err(e) => return Ok(Err(DockerError::http(context, e))),
        };
        // The body reader borrowed `reader` and is done with it here.
        if head.keep_alive() && body.is_done() && framing != Framing::UntilClose {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < MAX_IDLE_CONNECTIONS && reader.buffer().is_empty() {
                idle.push(reader);
            }
        }
        Ok(Ok((head, data)))
    }

    /// Sends a request asking to take over the connection (attach, exec start) and returns
    /// the raw stream once the daemon answered 101 or 200.
    ///
    /// # Errors
    /// Any [`DockerError`]; an error status carries the daemon's message.
    pub(crate) fn hijack(
        &self,
        method: &str,
        path: &str,
        body: &Body<'_>,
        timeout: Duration,
    ) -> Result<Hijacked, DockerError> {
        let target = self.versioned(path)?;
        let context = format!("{method} {target}");
        let request = encode(
            method,
            &target,
            body,
            &[("Connection", "Upgrade"), ("Upgrade", "tcp")],
        )?;
        let mut conn = self.connect()?;
        conn.set_read_timeout(Some(timeout))
            .map_err(|e| DockerError::io(&context, e))?;
        conn.write_all(&request)
            .map_err(|e| DockerError::io(&context, e))?;
        let writer = conn.try_clone().map_err(|e| DockerError::io(&context, e))?;
        let mut reader = BufReader::new(conn);
        let deadline = Instant::now() + timeout;
        let head = http::read_head(&mut DeadlineReader::new(&mut reader, deadline))
            .map_err(|e| DockerError::http(&context, e))?;
        if head.status >= 400 {
            let framing = head
                .framing(method)
                .map_err(|e| DockerError::http(&context, e))?;
            let mut body = BodyReader::new(reader, framing);
            let data = http::read_body_to_end(&mut body, http::MAX_BODY_BYTES)
                .map_err(|e| DockerError::http(&context, e))?;
            return Err(DockerError::from_status(head.status, &data));
        }
        if head.status != 101 && head.status != 200 {
            return Err(DockerError::Protocol(format!(
                "{context}: unexpected status {} for a stream",
                head.status
            )));
        }
        Ok(Hijacked { reader, writer })
    }
}

/// A connection that failed before any answer: forgiven (and retried) on a pooled one, which
/// the daemon may have closed while idle; the error itself on a fresh one.
struct Stale(DockerError);

/// A buffered connection every socket read of which ends by one deadline: a peer that
/// trickles bytes cannot stretch a call (or an exec's output) past it. A read after the
/// deadline fails with [`io::ErrorKind::TimedOut`]; one cut short by it, with the socket's
/// timeout error (`WouldBlock`).
pub(crate) struct DeadlineReader<'a> {
    inner: &'a mut BufReader<Conn>,
    deadline: Instant,
}

impl<'a> DeadlineReader<'a> {
    /// Reads from `inner` until `deadline`.
    pub(crate) fn new(inner: &'a mut BufReader<Conn>, deadline: Instant) -> Self {
        DeadlineReader { inner, deadline }
    }
}

impl BufRead for DeadlineReader<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.inner.buffer().is_empty() {
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the call's deadline passed",
                ));
            }
            self.inner.get_ref().set_read_timeout(Some(left))?;
        }
        self.inner.fill_buf()
    }

    fn consume(&mut self, n: usize) {
        self.inner.consume(n);
    }
}

impl Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

fn encode(
    method: &str,
    target: &str,
    body: &Body<'_>,
    headers: &[(&str, &str)],
) -> Result<Vec<u8>, DockerError> {
    Ok(match body {
        Body::None => http::encode_request(method, target, headers, None),
        Body::Json(v) => {
            let data = serde_json::to_vec(v).map_err(|source| DockerError::Json {
                context: format!("encode body of {method} {target}"),
                source,
            })?;
            http::encode_request(method, target, headers, Some(("application/json", &data)))
        }
        Body::Tar(data) => {
            http::encode_request(method, target, headers, Some(("application/x-tar", data)))
        }
    })
}

/// Picks the version to speak: the daemon's own, when it is at least [`MIN_API_VERSION`].
///
/// # Errors
/// [`DockerError::Protocol`] for a daemon older than [`MIN_API_VERSION`] or a garbled version.
fn negotiate(daemon: &str) -> Result<String, DockerError> {
    let parsed = daemon
        .split_once('.')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)));
    match parsed {
        Some(v) if v >= MIN_API_VERSION => Ok(format!("{}.{}", v.0, v.1)),
        Some(_) => Err(DockerError::Protocol(format!(
            "the daemon speaks Engine API {daemon}; llmbox needs {}.{} or newer",
            MIN_API_VERSION.0, MIN_API_VERSION.1
        ))),
        None => Err(DockerError::Protocol(format!(
            "the daemon sent a garbled API version {daemon:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_parse_or_fail_clearly() {
        assert_eq!(
            Endpoint::parse("unix:///var/run/docker.sock").expect("unix"),
            Endpoint::Unix("/var/run/docker.sock".into())
        );
        assert_eq!(
            Endpoint::parse("tcp://127.0.0.1:2375").expect("tcp"),
            Endpoint::Tcp("127.0.0.1:2375".into())
        );
        for bad in [
            "http://x",
            "unix://rel",
            "tcp://nohost",
            "tcp://:1",
            "tcp://h:99999",
        ] {
            let err = Endpoint::parse(bad).expect_err(bad);
            assert!(err.to_string().contains("invalid Docker host"), "{err}");
        }
    }

    #[test]
    fn version_negotiation_accepts_1_41_and_newer() {
        assert_eq!(negotiate("1.41").expect("1.41"), "1.41");
        assert_eq!(negotiate("1.47").expect("1.47"), "1.47");
        assert!(negotiate("1.40").is_err());
        assert!(negotiate("banana").is_err());
    }

    #[test]
    fn a_daemon_that_is_down_is_unreachable_and_retried_later() {
        let path =
            std::env::temp_dir().join(format!("llmbox-nodaemon-{}.sock", std::process::id()));
        let host = format!("unix://{}", path.display());
        let client = Client::new(&host).expect("client");
        let err = client.ping().expect_err("no daemon");
        assert!(err.is_unreachable(), "{err}");
        assert!(
            err.to_string()
                .starts_with(&format!("cannot reach Docker at {host}: "))
        );
        // A listener appears later: the next call negotiates then.
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).expect("read");
            s.write_all(b"HTTP/1.1 200 OK\r\nApi-Version: 1.43\r\nContent-Length: 2\r\n\r\nOK")
                .expect("write");
        });
        assert_eq!(client.ping().expect("ping"), "1.43");
        server.join().expect("server");
        let _ = std::fs::remove_file(&path);
    }
}
