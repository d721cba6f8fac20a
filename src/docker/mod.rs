//! Boxes on Docker: a hand-written Engine API client over the daemon's socket, and the
//! [`crate::boxes::BoxManager`] built on it (DESIGN §7). This layer has never heard of spokes,
//! hubs or MCP.

use std::path::PathBuf;

/// Everything the Docker box manager is configured with (flags of `llmbox hub` and
/// `llmbox spoke`).
#[derive(Debug, Clone, PartialEq)]
pub struct ManagerConfig {
    /// `unix:///var/run/docker.sock` or `tcp://host:port` (`--docker-host`, else `DOCKER_HOST`).
    pub docker_host: String,
    /// The namespace label value: the spoke's name, `local` on the hub.
    pub namespace: String,
    /// A Claude binary injected at `/usr/local/bin/claude` (`--claude-bin`); none keeps the
    /// image's own.
    pub claude_bin: Option<PathBuf>,
    /// Extra arguments for `claude remote-control` (`--remote-args`).
    pub remote_args: String,
    /// Ceiling on managed boxes in this namespace (`--max-boxes`).
    pub max_boxes: usize,
    /// Memory limit per box in MiB (`--memory-mb`).
    pub memory_mb: u64,
    /// CPU limit per box (`--cpus`).
    pub cpus: f64,
    /// Process limit per box (`--pids-limit`).
    pub pids_limit: i64,
    /// Containers joined to every box's network (`--box-peer`, repeatable).
    pub box_peers: Vec<String>,
}

/// The Docker socket used when neither `--docker-host` nor `DOCKER_HOST` is set.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

impl ManagerConfig {
    /// The defaults of DESIGN §7 for `namespace`, with the Docker host from `DOCKER_HOST`.
    pub fn new(namespace: &str) -> Self {
        ManagerConfig {
            docker_host: std::env::var("DOCKER_HOST")
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| DEFAULT_DOCKER_HOST.to_string()),
            namespace: namespace.to_string(),
            claude_bin: None,
            remote_args: "--spawn same-dir".to_string(),
            max_boxes: 50,
            memory_mb: 4096,
            cpus: 2.0,
            pids_limit: 4096,
            box_peers: Vec::new(),
        }
    }
}
