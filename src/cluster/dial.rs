//! Reaching the hub: the `--hub` URL, the TLS client config (webpki roots plus `--ca-file`),
//! a TCP connect with a timeout and TCP_NODELAY, and the reconnect backoff. No protocol here.

use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tungstenite::http::Uri;

use super::ClusterError;
use super::proto::CONNECT_PATH;
use super::transport;

/// First reconnect delay.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest reconnect delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Jitter on each delay, as a fraction either way.
pub(crate) const BACKOFF_JITTER: f64 = 0.2;

/// How long after a welcomed connection ends the spoke keeps retrying at the floor delay
/// before it starts doubling: a hub restart (the common case) takes a few seconds, and a
/// spoke that had doubled to 4 s by then would come back seconds after the hub did.
pub(crate) const FLOOR_WINDOW: Duration = Duration::from_secs(10);

/// Exponential backoff with jitter; after a [`reset`](Backoff::reset) the delay stays at
/// the floor for [`FLOOR_WINDOW`].
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    /// Until when delays stay at `min` (set by `reset`).
    floor_until: Option<Instant>,
}

impl Backoff {
    /// Starts at `min`, doubling up to `max`.
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            next: min,
            floor_until: None,
        }
    }

    /// The next delay (with ±20 % jitter) and advance.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.next;
        if self.floor_until.is_none_or(|t| Instant::now() >= t) {
            self.next = (self.next * 2).min(self.max);
        }
        let mut b = [0u8; 4];
        let unit = match getrandom::fill(&mut b) {
            Ok(()) => f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX),
            Err(_) => 0.5,
        };
        base.mul_f64(1.0 - BACKOFF_JITTER + 2.0 * BACKOFF_JITTER * unit)
    }

    /// Back to `min` (after a welcomed connection), staying there for [`FLOOR_WINDOW`].
    pub(crate) fn reset(&mut self) {
        self.next = self.min;
        self.floor_until = Instant::now().checked_add(FLOOR_WINDOW);
    }
}

/// The hub URL, checked: `ws`/`wss`, a host, and `/spoke/connect` when no path is given.
///
/// # Errors
/// [`ClusterError::Invalid`] saying what is wrong.
pub fn parse_hub_url(url: &str) -> Result<(Uri, bool), ClusterError> {
    let bad = |why: &str| ClusterError::Invalid(format!("invalid --hub {url:?}: {why}"));
    let uri: Uri = url.parse().map_err(|e| bad(&format!("{e}")))?;
    let tls = match uri.scheme_str() {
        Some("ws") => false,
        Some("wss") => true,
        _ => return Err(bad("use ws://host:port or wss://host")),
    };
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    let uri = if matches!(uri.path(), "" | "/") {
        let fixed = format!(
            "{}://{}{CONNECT_PATH}",
            uri.scheme_str().unwrap_or("ws"),
            uri.authority().map(|a| a.as_str()).unwrap_or_default()
        );
        fixed.parse().map_err(|e| bad(&format!("{e}")))?
    } else {
        uri
    };
    Ok((uri, tls))
}

/// Builds the TLS client config: webpki roots plus the certificates in `ca_file`.
///
/// # Errors
/// An unreadable or empty PEM file, or a bad certificate.
pub fn tls_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, ClusterError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        let bad = |why: String| ClusterError::Tls(format!("--ca-file {}: {why}", path.display()));
        let mut added = 0;
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
            let cert = cert.map_err(|e| bad(e.to_string()))?;
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
            added += 1;
        }
        if added == 0 {
            return Err(bad("no PEM certificate in the file".into()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClusterError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Connects to the hub's host with `timeout`, TCP_NODELAY on, and `timeout` as the read
/// timeout for the upgrade.
///
/// # Errors
/// Name resolution or the last address's connect error.
pub(crate) fn dial(uri: &Uri, tls: bool, timeout: Duration) -> io::Result<TcpStream> {
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host}: no address"));
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(transport::WRITE_TIMEOUT))?;
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_urls_get_the_connect_path_and_need_ws_schemes() {
        let (u, tls) = parse_hub_url("ws://127.0.0.1:8081").expect("ok");
        assert_eq!(
            (u.to_string().as_str(), tls),
            ("ws://127.0.0.1:8081/spoke/connect", false)
        );
        let (u, tls) = parse_hub_url("wss://hub.example/spoke/connect").expect("ok");
        assert_eq!((u.path(), tls), ("/spoke/connect", true));
        for bad in ["http://x", "x:1", "ws://", "not a url"] {
            assert!(parse_hub_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let delays: Vec<f64> = (0..8).map(|_| b.next_delay().as_secs_f64()).collect();
        for (d, base) in delays
            .iter()
            .zip([1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0])
        {
            assert!(
                *d >= base * 0.8 - 1e-9 && *d <= base * 1.2 + 1e-9,
                "{d} vs {base}"
            );
        }
        // After a welcomed connection: the floor for FLOOR_WINDOW (a hub restart), not 1, 2, 4 s.
        b.reset();
        for _ in 0..8 {
            assert!(b.next_delay() <= Duration::from_secs_f64(1.2));
        }
        // Past the window it doubles again.
        b.floor_until = Some(Instant::now());
        let first = b.next_delay();
        assert!(first <= Duration::from_secs_f64(1.2), "{first:?}");
        assert!(b.next_delay() >= Duration::from_secs_f64(1.6));
    }

    #[test]
    fn a_ca_file_without_certificates_is_an_error() {
        let path = std::env::temp_dir().join(format!("llmbox-ca-{}.pem", std::process::id()));
        std::fs::write(&path, "nothing here\n").expect("write");
        let err = tls_config(Some(&path)).expect_err("empty");
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
        assert!(tls_config(None).is_ok());
        let _ = std::fs::remove_file(path);
    }
}
