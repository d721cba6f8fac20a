//! The hub: sessions, routing, MCP, the activation page, the HTTP front, the reaper and hooks
//! (DESIGN §8).
//!
//! [`Hub`] is the product logic and knows nothing of HTTP. It is composed of three parts:
//! - the [`ledger`]: the hub's *sessions* — one per box created through the hub, in the state
//!   file — and every secret tied to them (page tokens, typed codes, create and activation
//!   claims); the only code that touches them, and where their invariants are kept and tested;
//! - the router ([`routing`]): which spoke a create goes to, the fan-out `list`, finding a box's
//!   spoke, the per-verb metrics (through [`SpokeDirectory`]);
//! - the [`hooks`].
//!
//! The operations compose them: the seven MCP operations ([`operations`]), the activation page
//! ([`activation`]), and upkeep (reconcile, one reaper pass). They answer in [`views`]. The
//! sans-IO MCP dispatcher ([`mcp`]) and the tool layer ([`tools`]) sit on top; [`http`] is the
//! only module that touches sockets (tiny_http), and [`page`] renders the activation page.
//!
//! Invariants: page tokens reach disk only as their SHA-256; the OAuth authorize URL and the
//! codes a person types never leave through MCP (see [`redact`] and [`ledger`]); no lock is held
//! across a spoke call, a hook run or a state-file write, except the store's own file lock.
//!
//! Threads: the HTTP front's accept loop and bounded handler threads ([`http`]), and the reaper
//! ([`reaper`]); each is named and owned by the handle that started it.

mod activation;
pub mod apikeys;
pub mod audit;
pub mod auth;
pub(crate) mod hooks;
pub mod http;
mod ledger;
pub(crate) mod mcp;
pub(crate) mod metrics;
pub mod oauth;
mod operations;
pub(crate) mod ownership;
pub(crate) mod page;
mod reaped;
pub mod reaper;
pub(crate) mod redact;
mod routing;
pub mod signin;
pub(crate) mod tools;
mod upkeep;
mod views;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::boxes::BoxError;
use crate::cluster::SpokeDirectory;
use crate::store::{SessionStatus, Store, StoreError};

pub use activation::{ActivationPage, PageState};
pub use ledger::forget_reaped;
pub use operations::CreateRequest;
pub use views::{BoxStatus, BoxView, ListView, ListedBox, SpokeFailure};

/// Default `--auth-ttl`: pending boxes older than this are reaped.
pub(crate) const DEFAULT_AUTH_TTL: Duration = Duration::from_secs(5 * 60);
/// Default `--reap-interval`.
pub(crate) const DEFAULT_REAP_INTERVAL: Duration = Duration::from_secs(30);
/// Default `--box-image`.
pub(crate) const DEFAULT_BOX_IMAGE: &str = crate::boxes::DEFAULT_BOX_IMAGE;
/// How long one hook run may take before it is killed and counted as failed.
pub(crate) const HOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// What the hub is configured with (flags of `llmbox hub` that concern the hub layer).
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Base of the links handed out (`--public-url`), without a trailing slash.
    pub(crate) public_url: String,
    /// Image used when `create_llmbox` names none (`--box-image`).
    pub box_image: String,
    /// Pending boxes older than this are reaped (`--auth-ttl`).
    pub auth_ttl: Duration,
    /// How often the reaper runs; zero turns it off (`--reap-interval`).
    pub reap_interval: Duration,
    /// Hook executables (`--hook`), run in order.
    pub hooks: Vec<PathBuf>,
    /// Time limit of one hook run.
    pub(crate) hook_timeout: Duration,
}

impl HubConfig {
    /// Defaults for a hub whose links start with `public_url`.
    pub fn new(public_url: &str) -> Self {
        HubConfig {
            public_url: public_url.trim_end_matches('/').to_string(),
            box_image: DEFAULT_BOX_IMAGE.to_string(),
            auth_ttl: DEFAULT_AUTH_TTL,
            reap_interval: DEFAULT_REAP_INTERVAL,
            hooks: Vec::new(),
            hook_timeout: HOOK_TIMEOUT,
        }
    }
}

/// Why a hub operation failed. Displayed text is a sentence a model (or a person) can act on.
#[derive(Debug)]
pub enum HubError {
    /// A tool argument is missing, of the wrong type or out of range.
    InvalidArgument(String),
    /// A box id that breaks the box-id rule (the box layer's own message).
    InvalidBoxId(BoxError),
    /// No box with this id is known to the hub or any reachable spoke.
    UnknownBox(String),
    /// No reachable spoke has the box, but some spokes did not answer and may hold it.
    MaybeOnSilentSpoke {
        /// The box asked for.
        box_id: String,
        /// The spokes that did not answer.
        spokes: Vec<String>,
    },
    /// The box vanished from its spoke behind the hub's back (reaped while pending, removed).
    BoxGone {
        /// The box.
        box_id: String,
        /// Its spoke.
        spoke: String,
    },
    /// The box was reaped before anyone activated it (the hub remembers it a while).
    Reaped {
        /// The box.
        box_id: String,
        /// Its spoke.
        spoke: String,
        /// When its link expired (unix seconds).
        expired_at: i64,
        /// When it was reaped (unix seconds).
        reaped_at: i64,
    },
    /// The box id is taken somewhere in the cluster.
    DuplicateBoxId(String),
    /// No spoke of this name is known.
    UnknownSpoke {
        /// The name asked for.
        name: String,
        /// The names that exist.
        known: Vec<String>,
    },
    /// The spoke is known but not connected right now.
    SpokeAway(String),
    /// No spoke at all is connected.
    NoSpoke,
    /// Another operation on the same box is in progress.
    Busy(String),
    /// A verb on a spoke failed.
    Verb {
        /// The verb (`create`, `destroy`, …).
        op: &'static str,
        /// The box it was for.
        box_id: String,
        /// The spoke it ran on.
        spoke: String,
        /// What the spoke said.
        source: BoxError,
    },
    /// The state file could not be read or written.
    Store(StoreError),
    /// A hook failed.
    Hook(hooks::HookError),
    /// The OS random source failed.
    Random(getrandom::Error),
    /// The HTTP front could not listen.
    Listen {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
}

impl fmt::Display for HubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HubError::InvalidArgument(msg) => write!(f, "invalid argument: {msg}"),
            HubError::InvalidBoxId(err) => write!(f, "{err}"),
            HubError::UnknownBox(id) => write!(
                f,
                "no box with id {id:?} exists; call list_llmboxes to see the boxes, or create_llmbox to make one"
            ),
            HubError::MaybeOnSilentSpoke { box_id, spokes } => write!(
                f,
                "no reachable spoke has a box with id {box_id:?}; spokes {} did not answer and may hold it, so try again later",
                spokes.join(", ")
            ),
            HubError::BoxGone { box_id, spoke } => write!(
                f,
                "box {box_id:?} no longer exists on spoke {spoke:?} (it was reaped while waiting for activation, or removed); create a new one"
            ),
            HubError::Reaped {
                box_id,
                spoke,
                expired_at,
                reaped_at,
            } => write!(
                f,
                "box {box_id:?} on spoke {spoke:?} was reaped at {} because nobody activated it before its link expired at {}; create_llmbox makes a new one",
                crate::util::time::rfc3339_secs(*reaped_at),
                crate::util::time::rfc3339_secs(*expired_at)
            ),
            HubError::DuplicateBoxId(id) => write!(
                f,
                "a box with id {id:?} already exists; pick another id or destroy that box first"
            ),
            HubError::UnknownSpoke { name, known } => write!(
                f,
                "no spoke named {name:?}; known spokes: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
            HubError::SpokeAway(name) => write!(
                f,
                "spoke {name:?} is not connected right now; try again later or use another spoke (list_spokes shows which are up)"
            ),
            HubError::NoSpoke => {
                f.write_str("no spoke is connected, so no box can be created now; try again later")
            }
            HubError::Busy(msg) => f.write_str(msg),
            HubError::Verb {
                op,
                box_id,
                spoke,
                source,
            } => write!(f, "{op} box {box_id:?} on spoke {spoke:?}: {source}"),
            HubError::Store(err) => write!(f, "hub state: {err}"),
            HubError::Hook(err) => write!(f, "hook: {err}"),
            HubError::Random(err) => write!(f, "random source: {err}"),
            HubError::Listen { addr, reason } => write!(f, "listen on {addr}: {reason}"),
        }
    }
}

impl std::error::Error for HubError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HubError::Verb { source, .. } => Some(source),
            HubError::Store(err) => Some(err),
            HubError::Hook(err) => Some(err),
            HubError::Random(err) => Some(err),
            _ => None,
        }
    }
}

impl From<StoreError> for HubError {
    fn from(err: StoreError) -> Self {
        HubError::Store(err)
    }
}

/// The hub: every MCP tool and the activation page call into this.
pub struct Hub {
    config: HubConfig,
    ledger: ledger::Ledger,
    router: routing::Router,
    hooks: hooks::Hooks,
    /// Boxes reaped unactivated, remembered a while for `get_llmbox` and their pages.
    reaped: reaped::Reaped,
}

impl Hub {
    /// A hub over `store` routing through `spokes`.
    pub fn new(config: HubConfig, store: Arc<Store>, spokes: Arc<dyn SpokeDirectory>) -> Self {
        let hooks = hooks::Hooks::new(config.hooks.clone(), config.hook_timeout);
        Hub {
            config,
            ledger: ledger::Ledger::new(store),
            router: routing::Router::new(spokes),
            hooks,
            reaped: reaped::Reaped::default(),
        }
    }

    /// The configuration in force.
    pub(crate) fn config(&self) -> &HubConfig {
        &self.config
    }

    /// The state file.
    pub fn store(&self) -> &Arc<Store> {
        self.ledger.store()
    }

    /// The activation page link for a page token.
    pub(crate) fn activation_url(&self, token: &str) -> String {
        format!("{}/auth/{token}", self.config.public_url)
    }

    /// Why the hub cannot serve a create now, for `/readyz`; empty when it can. Ready means the
    /// state file is usable for writing and, when the hub has its `local` spoke, that spoke's
    /// Docker answers. (`/healthz` stays liveness: it says only that the process serves HTTP.)
    pub fn readiness(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        if let Err(e) = self.store().check_writable() {
            reasons.push(e.to_string());
        }
        for s in self.router.directory().statuses() {
            if s.local && !s.connected {
                let why = s.docker.unwrap_or_else(|| "Docker does not answer".into());
                reasons.push(format!("local spoke: {why}"));
            }
        }
        reasons
    }

    /// Prometheus text for `/metrics`.
    pub(crate) fn render_metrics(&self) -> String {
        let connected = self.router.connected().len();
        let (mut pending, mut ready) = (0, 0);
        for s in self.ledger.sessions().unwrap_or_default() {
            match s.status {
                SessionStatus::Ready => ready += 1,
                _ => pending += 1,
            }
        }
        self.router
            .metrics()
            .render(connected, &[("pending", pending), ("ready", ready)])
    }
}
