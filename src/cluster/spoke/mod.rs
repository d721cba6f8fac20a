//! The dialing end: `llmbox spoke` connects to the hub, enrolls (join token) or reconnects
//! (saved credentials), and serves verbs against its own box manager (DESIGN §3–5).
//!
//! One job per file:
//! - [`credentials`]: the credentials file (`{"name","credential"}`, mode 0600), read with
//!   suspicion and written atomically;
//! - [`link`]: opening a link to the hub — dial, TLS when `wss://`, the WebSocket upgrade within
//!   the connect timeout — one code path for both schemes, and moving messages over it;
//! - [`handler`]: one connection's frames in, [`handler::Event`]s out (welcomed as whom,
//!   rejected, end) — requests are dispatched to the verb workers there;
//! - [`reconnect`]: the reconnect loop [`run()`] that owns the identity, the box manager and the
//!   backoff, and [`SpokeStop`], its stop handle.
//!
//! Threads: the caller's thread runs [`run()`] (dial, enroll, read; over `wss://` it also
//! writes, alternating short reads with draining the outgoing channel); over `ws://` verb
//! workers write their answers to the socket themselves, so the connection needs no writer
//! thread; each verb runs on a `spoke-verb` worker
//! ([`super::workers`]: at most `max_workers` at once, past that a request is answered with an
//! error at once). Reconnects back off 1 s → 30 s with ±20 % jitter, reset after a welcome; the
//! backoff sleeps on the stop signal, so a stop ends it at once. A rejected enrollment is
//! terminal ([`ClusterError::Rejected`]).
//!
//! The spoke takes nothing on trust from the hub: a welcome must name a valid spoke name (the
//! one it enrolled as, on a reconnect) and carry a 64-hex credential, else nothing is saved and
//! the run ends; the upgrade answer must arrive within the connect timeout.

use std::path::PathBuf;
use std::time::Duration;

use super::serve::Policy;

pub(crate) mod credentials;
pub(crate) mod handler;
pub(crate) mod link;
pub(crate) mod reconnect;

pub use super::dial::{BACKOFF_MAX, BACKOFF_MIN, Backoff, parse_hub_url, tls_config};
pub use credentials::{Credentials, DEFAULT_CREDENTIALS, load_credentials, save_credentials};
pub use reconnect::{ManagerFactory, SpokeStop, run};

#[cfg(doc)]
use super::ClusterError;

/// Default TCP connect (and upgrade) timeout.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound on verbs running at once.
pub(crate) const DEFAULT_MAX_WORKERS: usize = 32;
/// Most answers queued for the hub and not yet written. A hub that sends requests and never
/// reads the answers reaches it, and the connection ends instead of the queue growing.
pub(crate) const MAX_QUEUED_ANSWERS: usize = 4096;

/// What a spoke needs to run. Its `Debug` hides the join token.
#[derive(Clone)]
pub struct SpokeConfig {
    /// `ws://host:port[/spoke/connect]` or `wss://…`.
    pub(crate) hub_url: String,
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

/// A fresh directory for one unit test of the spoke, removed when dropped.
#[cfg(test)]
pub(crate) struct TestDir(pub PathBuf);

#[cfg(test)]
impl TestDir {
    pub(crate) fn new(tag: &str) -> TestDir {
        let dir = std::env::temp_dir().join(format!("llmbox-spoke-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        TestDir(dir)
    }
}

#[cfg(test)]
impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_debug_hides_the_join_token() {
        let mut c = SpokeConfig::new("ws://hub:8081");
        c.token = Some("secret-join-token".into());
        let shown = format!("{c:?}");
        assert!(!shown.contains("secret-join-token"), "{shown}");
        assert!(shown.contains("<hidden>"), "{shown}");
    }
}
