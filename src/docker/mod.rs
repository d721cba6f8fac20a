//! Boxes on Docker: a hand-written Engine API client over the daemon's socket, and the
//! [`crate::boxes::BoxManager`] built on it (DESIGN §7). This layer has never heard of spokes,
//! hubs or MCP.
//!
//! Layers, bottom up: [`client`] opens `unix://` or `tcp://` connections with timeouts and
//! moves bytes through the sans-IO codec in [`http`]; [`api`] is the typed Engine calls;
//! [`text`] reads terminals (stream framing, ANSI, URLs); [`tar`] and [`boxspec`] describe a
//! box as data; [`manager`] and [`activate`] are the seven verbs. [`reap`] serves
//! `llmbox reap` across namespaces.

pub(crate) mod activate;
pub mod api;
pub mod boxspec;
pub mod client;
pub(crate) mod error;
pub(crate) mod http;
pub(crate) mod manager;
pub(crate) mod tar;
pub mod text;

use std::path::PathBuf;
use std::time::Duration;

pub use error::DockerError;
pub use manager::DockerBoxManager;

/// Grace period between SIGTERM and SIGKILL when a box is destroyed.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(10);

/// Everything the Docker box manager is configured with (flags of `llmbox hub` and
/// `llmbox spoke`).
#[derive(Debug, Clone, PartialEq)]
pub struct ManagerConfig {
    /// `unix:///var/run/docker.sock` or `tcp://host:port` (`--docker-host`, else `DOCKER_HOST`).
    pub docker_host: String,
    /// The namespace label value: the spoke's name, `local` on the hub.
    pub(crate) namespace: String,
    /// A Claude binary injected at `/usr/local/bin/claude` (`--claude-bin`); none keeps the
    /// image's own.
    pub claude_bin: Option<PathBuf>,
    /// Extra arguments for `claude remote-control` (`--remote-args`).
    pub(crate) remote_args: String,
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
    /// Longest an `exec` may run before the manager stops waiting for it
    /// ([`manager::EXEC_TIMEOUT`] by default).
    pub exec_timeout: Duration,
    /// Who the `exec` verb runs as (`--exec-user`): unprivileged by default, so a chatbot's
    /// commands cannot read the person's Claude credentials (root-only in the box).
    pub exec_user: ExecUser,
}

/// The numeric user and group the `exec` verb runs its commands as (`--exec-user UID[:GID]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecUser {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

impl ExecUser {
    /// The default: uid and gid 1000, the first ordinary user on most images (`node` in the
    /// default box image), never root.
    pub const DEFAULT: ExecUser = ExecUser {
        uid: 1000,
        gid: 1000,
    };

    /// Parses `UID` or `UID:GID` (numbers only: the box may have no `/etc/passwd` entry for
    /// the user, and a name would resolve differently in every image). `UID` alone uses the
    /// same number as group.
    ///
    /// # Errors
    /// A sentence naming the accepted form.
    pub fn parse(value: &str) -> Result<ExecUser, String> {
        let bad = || format!("{value:?} is not UID or UID:GID (numbers, like 1000:1000)");
        let (uid, gid) = value.split_once(':').unwrap_or((value, value));
        let number = |s: &str| {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            s.parse::<u32>().map_err(|_| bad())
        };
        Ok(ExecUser {
            uid: number(uid)?,
            gid: number(gid)?,
        })
    }

    /// True when commands would run as root (uid 0), the explicit opt-out.
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// The form Docker's `User` field takes.
    pub fn docker_user(&self) -> String {
        format!("{}:{}", self.uid, self.gid)
    }
}

impl Default for ExecUser {
    fn default() -> Self {
        ExecUser::DEFAULT
    }
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
            exec_timeout: manager::EXEC_TIMEOUT,
            exec_user: ExecUser::DEFAULT,
        }
    }
}

/// What an exec as root exposes, for the warning `--exec-user 0` prints at start.
pub(crate) const ROOT_EXEC_WARNING: &str = "--exec-user 0: exec_llmbox commands run as root in every box, so the chatbot can read each person's Claude credentials (~/.claude/.credentials.json, ~/.claude.json), the Claude process's environment and memory, and replace the claude binary; use it only when every caller may act as every person who signs in";

/// One box removed by [`reap`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReapedBox {
    /// Full container id.
    pub id: String,
    /// Short (12-character) container id.
    pub(crate) short_id: String,
    /// The namespace (spoke name) the box belonged to.
    pub namespace: String,
    /// The caller's box id.
    pub(crate) box_id: String,
}

/// Removes pending boxes older than `ttl` from the daemon at `docker_host`, in `namespace` or
/// in every namespace; ready boxes are never touched. Box networks whose box is gone are
/// removed too. For `llmbox reap` (cron).
///
/// # Errors
/// [`DockerError::Unreachable`] when the daemon is down, or the first failed call.
pub fn reap(
    docker_host: &str,
    ttl: Duration,
    namespace: Option<&str>,
) -> Result<Vec<ReapedBox>, DockerError> {
    let client = client::Client::new(docker_host)?;
    let filters = boxspec::label_filters(namespace);
    // Networks before boxes: see [`manager::reap_orphan_networks`].
    let networks = api::list_networks(&client, &filters)?;
    let boxes = api::list_containers(&client, &filters)?;
    let reaped = manager::reap_among(&client, &boxes, ttl)?;
    manager::reap_orphan_networks(&client, &networks, &boxes)?;
    Ok(reaped
        .into_iter()
        .map(|b| {
            let label = |k: &str| b.labels.get(k).cloned().unwrap_or_default();
            ReapedBox {
                short_id: boxspec::short_id(&b.id).to_string(),
                namespace: label(boxspec::LABEL_NAMESPACE),
                box_id: label(boxspec::LABEL_BOX_ID),
                id: b.id,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_user_takes_numbers_only_and_uid_alone_means_the_same_gid() {
        for bad in [
            "node",
            "1000:",
            ":1000",
            "-1",
            "1000:1000:1",
            "",
            "99999999999",
            " 1",
        ] {
            assert!(ExecUser::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(ExecUser::parse("33:44"), Ok(ExecUser { uid: 33, gid: 44 }));
        assert_eq!(ExecUser::parse("7"), Ok(ExecUser { uid: 7, gid: 7 }));
        assert_eq!(ExecUser::DEFAULT.docker_user(), "1000:1000");
        assert!(ExecUser::parse("0").is_ok_and(|u| u.is_root()));
    }
}
