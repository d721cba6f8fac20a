//! The cluster: hub and spokes over a WebSocket the spoke dials (DESIGN §3–5).
//!
//! The hub layer only needs [`SpokeDirectory`]: which spokes exist and a [`BoxManager`] for
//! each connected one.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::boxes::BoxManager;

/// The name of the hub's in-process spoke.
pub const LOCAL_SPOKE: &str = "local";

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
}

/// What the hub routes through: the spokes it knows and a manager for each connected one.
pub trait SpokeDirectory: Send + Sync {
    /// The connected spoke called `name`, as a box manager; `None` when unknown or away.
    fn get(&self, name: &str) -> Option<Arc<dyn BoxManager>>;
    /// Every known spoke (enrolled or local), connected or not, sorted by name.
    fn statuses(&self) -> Vec<SpokeStatus>;
}

/// A fixed set of always-connected spokes: the directory of a hub test that needs no sockets.
#[derive(Default)]
pub struct StaticDirectory {
    spokes: BTreeMap<String, Arc<dyn BoxManager>>,
}

impl StaticDirectory {
    /// Adds (or replaces) a spoke.
    pub fn with(mut self, name: &str, manager: Arc<dyn BoxManager>) -> Self {
        self.spokes.insert(name.to_string(), manager);
        self
    }
}

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
            })
            .collect()
    }
}
