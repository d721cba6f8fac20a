//! The cluster: hub and spokes over a WebSocket the spoke dials (DESIGN §3–5).
//!
//! The hub layer only needs [`SpokeDirectory`]: which spokes exist and a [`BoxManager`] for
//! each connected one. [`registry::Registry`] is the live one, fed by [`plane`] (the hub's
//! accept loop for spoke sockets); [`spoke`] is the dialing end that `llmbox spoke` runs.
//!
//! Modules: [`proto`] (wire frames, no sockets), [`transport`] (moving messages over one
//! WebSocket), [`tokens`] (join tokens and credentials on the state file), [`dial`] (reaching the hub: URL,
//! TLS, connect, backoff), [`remote`] (a
//! connected spoke as a `BoxManager`), [`registry`], [`plane`], [`serve`] (spoke-side verb
//! dispatch and admission), [`workers`] (the spoke's bounded verb threads) and [`spoke`].

pub(crate) mod dial;
pub mod plane;
pub mod proto;
pub mod registry;
pub mod remote;
pub mod serve;
pub mod spoke;
pub mod tokens;
pub mod transport;
pub(crate) mod workers;

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use crate::boxes::BoxManager;

/// The name of the hub's in-process spoke.
pub const LOCAL_SPOKE: &str = "local";

/// Why a cluster operation failed.
#[derive(Debug)]
pub enum ClusterError {
    /// A socket or file operation failed; `op` says which.
    Io {
        /// What was being done.
        op: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The state file could not be used.
    Store(crate::store::StoreError),
    /// Bad input from the operator (a name, a URL, a CA file).
    Invalid(String),
    /// What the operator named (a join token, a spoke) is not there.
    NotFound(String),
    /// The hub rejected this spoke's enrollment (terminal).
    Rejected(String),
    /// The WebSocket handshake or protocol failed.
    Protocol(String),
    /// TLS setup failed.
    Tls(String),
    /// Building or running the box manager failed.
    Manager(String),
    /// The OS random source failed (a runtime failure of the host, not the operator's input).
    Random(getrandom::Error),
}

impl ClusterError {
    /// An I/O failure while doing `op`.
    pub(crate) fn io(op: impl Into<String>, source: std::io::Error) -> Self {
        ClusterError::Io {
            op: op.into(),
            source,
        }
    }
}

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterError::Io { op, source } => write!(f, "{op}: {source}"),
            ClusterError::Store(e) => write!(f, "{e}"),
            ClusterError::Invalid(msg) => f.write_str(msg),
            ClusterError::NotFound(msg) => f.write_str(msg),
            ClusterError::Rejected(msg) => f.write_str(msg),
            ClusterError::Protocol(msg) => write!(f, "protocol: {msg}"),
            ClusterError::Tls(msg) => write!(f, "tls: {msg}"),
            ClusterError::Manager(msg) => write!(f, "box manager: {msg}"),
            ClusterError::Random(e) => write!(f, "random source: {e}"),
        }
    }
}

impl std::error::Error for ClusterError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClusterError::Io { source, .. } => Some(source),
            ClusterError::Store(e) => Some(e),
            ClusterError::Random(e) => Some(e),
            _ => None,
        }
    }
}

impl From<crate::store::StoreError> for ClusterError {
    fn from(e: crate::store::StoreError) -> Self {
        ClusterError::Store(e)
    }
}

/// One spoke as `list_spokes` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpokeStatus {
    /// Spoke name (its box namespace).
    pub name: String,
    /// True while a socket (or, for `local`, the Docker daemon) is up.
    pub connected: bool,
    /// True for the hub's own in-process spoke.
    pub local: bool,
    /// Unix seconds of the current connection, when connected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connected_since: Option<i64>,
    /// Whether the spoke's Docker answered the last time the hub asked: `"ok"`, or the error.
    /// `local` is asked at every listing; a remote spoke at every reaper pass (its `reap` verb
    /// goes to its Docker, so the pass costs nothing extra). Absent until asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docker: Option<String>,
}

/// The [`SpokeStatus::docker`] text of a spoke whose Docker answered.
pub const DOCKER_OK: &str = "ok";

/// What the hub routes through: the spokes it knows and a manager for each connected one.
pub trait SpokeDirectory: Send + Sync {
    /// The connected spoke called `name`, as a box manager; `None` when unknown or away.
    fn get(&self, name: &str) -> Option<Arc<dyn BoxManager>>;
    /// Every known spoke (enrolled or local), connected or not, sorted by name.
    fn statuses(&self) -> Vec<SpokeStatus>;
    /// Records what the spoke `name` answered when the hub last reached its Docker (the
    /// reaper pass): `Ok` or the error's text. Directories that do not track it ignore it.
    fn note_docker(&self, name: &str, answer: Result<(), String>) {
        let _ = (name, answer);
    }
}

/// A fixed set of always-connected spokes: the directory of a hub test that needs no sockets.
/// A test double, like `boxes::memory`: only with `cfg(test)` or `--features test-doubles`.
#[cfg(any(test, feature = "test-doubles"))]
#[derive(Default)]
pub struct StaticDirectory {
    spokes: std::collections::BTreeMap<String, Arc<dyn BoxManager>>,
}

#[cfg(any(test, feature = "test-doubles"))]
impl StaticDirectory {
    /// Adds (or replaces) a spoke.
    pub fn with(mut self, name: &str, manager: Arc<dyn BoxManager>) -> Self {
        self.spokes.insert(name.to_string(), manager);
        self
    }
}

#[cfg(any(test, feature = "test-doubles"))]
impl SpokeDirectory for StaticDirectory {
    fn get(&self, name: &str) -> Option<Arc<dyn BoxManager>> {
        self.spokes.get(name).cloned()
    }

    fn statuses(&self) -> Vec<SpokeStatus> {
        self.spokes
            .keys()
            .map(|name| SpokeStatus {
                name: name.clone(),
                connected: true,
                local: name == LOCAL_SPOKE,
                connected_since: None,
                docker: None,
            })
            .collect()
    }
}
