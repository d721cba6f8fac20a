//! [`DockerBoxManager`]: the seven verbs of [`BoxManager`] on the Docker Engine (DESIGN §7).
//!
//! Every verb acts only on managed containers of this manager's namespace; a key that matches
//! anything else is "no managed box matches …". Create and submit-code live in
//! [`super::activate`]; the rest is here. No thread is spawned: each verb runs on its caller's
//! thread, bounded by the client's timeouts. The reservation lock (duplicate ids and the box
//! ceiling) is never held across a Docker call.

use std::collections::HashSet;
use std::io::ErrorKind;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use log::{info, warn};
use serde_json::Value;

use super::api::{self, ContainerSummary, NetworkSummary};
use super::boxspec::{self, LABEL_BOX_ID, LABEL_DESCRIPTION, LABEL_NAMESPACE};
use super::client::{Client, DeadlineReader};
use super::error::DockerError;
use super::text::{self, CappedBuffer, StreamKind};
use super::{ManagerConfig, STOP_GRACE};
use crate::boxes::{
    BoxError, BoxInfo, BoxManager, CreateOptions, Created, DEFAULT_LOG_TAIL, ExecResult, Phase,
};

/// Default [`ManagerConfig::exec_timeout`]: longest an exec is waited for, output or not (a
/// command that never ends would otherwise hold its caller's thread and a connection forever).
pub(crate) const EXEC_TIMEOUT: Duration = Duration::from_secs(600);

/// The Docker-backed box manager of one namespace.
pub struct DockerBoxManager {
    pub(super) config: ManagerConfig,
    pub(super) client: Client,
    /// Lower-cased box ids whose create is in flight.
    reservations: Mutex<HashSet<String>>,
}

/// Turns a Docker failure into the box layer's error; a daemon that is down is
/// "unavailable" so the hub can show the spoke as disconnected.
pub(super) fn backend(err: DockerError) -> BoxError {
    if err.is_unreachable() {
        BoxError::Unavailable(err.to_string())
    } else {
        BoxError::Backend(Box::new(err))
    }
}

/// [`backend`] for a call on a box that [`DockerBoxManager::resolve`] found: a 404 means the
/// box was removed behind our back since, which the caller hears as the box not existing.
pub(super) fn backend_on(key: &str) -> impl Fn(DockerError) -> BoxError + '_ {
    move |err| {
        if err.is_not_found() {
            BoxError::NotFound(key.trim().to_string())
        } else {
            backend(err)
        }
    }
}

/// Holds a box id reserved until dropped.
pub(super) struct Reservation<'a> {
    manager: &'a DockerBoxManager,
    key: String,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.manager.lock_reservations().remove(&self.key);
    }
}

impl DockerBoxManager {
    /// A manager for `config`. Does not contact the daemon: the API version is negotiated on
    /// first use, and again later if that failed.
    ///
    /// # Errors
    /// [`DockerError::InvalidHost`] for a malformed `docker_host`.
    pub fn new(config: ManagerConfig) -> Result<DockerBoxManager, DockerError> {
        let client = Client::new(&config.docker_host)?;
        Ok(DockerBoxManager {
            config,
            client,
            reservations: Mutex::new(HashSet::new()),
        })
    }

    /// A cheap health probe (`GET /_ping`, renegotiating the API version).
    ///
    /// # Errors
    /// [`DockerError::Unreachable`] when the daemon is down, or the call's error.
    pub fn ping(&self) -> Result<(), DockerError> {
        self.client.ping().map(drop)
    }

    /// Like [`DockerBoxManager::ping`], returning the API version agreed with the daemon (for
    /// the hub's start-up report).
    ///
    /// # Errors
    /// As [`DockerBoxManager::ping`].
    pub fn api_version(&self) -> Result<String, DockerError> {
        self.client.ping()
    }

    /// The daemon this manager talks to, as configured (`unix:///var/run/docker.sock`).
    pub fn docker_host(&self) -> &str {
        &self.config.docker_host
    }

    /// True when `image` is on this host's daemon (no pull is tried).
    ///
    /// # Errors
    /// Any [`DockerError`] other than not-found.
    pub fn has_image(&self, image: &str) -> Result<bool, DockerError> {
        api::image_exists(&self.client, image)
    }

    fn lock_reservations(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        // The set holds plain strings; a panic elsewhere cannot leave it inconsistent.
        self.reservations.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves `box_id` (case-insensitively), then checks it against the daemon's boxes and
    /// the ceiling. Reserving first means a concurrent create of the same id either sees the
    /// reservation or, once that create finished, the container itself.
    pub(super) fn reserve(&self, box_id: &str) -> Result<Reservation<'_>, BoxError> {
        let key = box_id.to_ascii_lowercase();
        let others_in_flight = {
            let mut held = self.lock_reservations();
            if !held.insert(key.clone()) {
                return Err(BoxError::DuplicateBoxId(box_id.to_string()));
            }
            held.len() - 1
        };
        let reservation = Reservation { manager: self, key };
        let boxes = self.managed()?;
        if boxes.iter().any(|b| {
            b.labels
                .get(LABEL_BOX_ID)
                .is_some_and(|id| id.eq_ignore_ascii_case(box_id))
        }) {
            return Err(BoxError::DuplicateBoxId(box_id.to_string()));
        }
        if boxes.len() + others_in_flight >= self.config.max_boxes {
            return Err(BoxError::TooManyBoxes(self.config.max_boxes));
        }
        Ok(reservation)
    }

    /// The managed containers of this namespace.
    pub(super) fn managed(&self) -> Result<Vec<ContainerSummary>, BoxError> {
        api::list_containers(
            &self.client,
            &boxspec::label_filters(Some(&self.config.namespace)),
        )
        .map_err(backend)
    }

    /// The one managed box of this namespace that `key` names: a full or prefix id, a name
    /// (with or without `/`), or a box id. A key that names several is refused as ambiguous
    /// (never resolved to one of them).
    pub(super) fn resolve(&self, key: &str) -> Result<ContainerSummary, BoxError> {
        let key = key.trim();
        let name_key = key.strip_prefix('/').unwrap_or(key);
        if key.is_empty() {
            return Err(BoxError::NotFound(key.to_string()));
        }
        let boxes = self.managed()?;
        let exact: Vec<&ContainerSummary> = boxes
            .iter()
            .filter(|b| {
                b.id == key
                    || b.name() == name_key
                    || b.labels.get(LABEL_BOX_ID).is_some_and(|id| id == key)
            })
            .collect();
        let hits = if exact.is_empty() {
            boxes.iter().filter(|b| b.id.starts_with(key)).collect()
        } else {
            exact
        };
        match hits.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(BoxError::NotFound(key.to_string())),
            many => Err(BoxError::ambiguous(key, many.len())),
        }
    }

    /// Stops (grace), removes the container with its volumes, then its network.
    pub(super) fn remove_box(&self, id: &str, graceful: bool) -> Result<(), DockerError> {
        if graceful {
            match api::stop_container(&self.client, id, STOP_GRACE) {
                Ok(()) => {}
                // 304 "already stopped" arrives as success; a vanished one is fine too.
                Err(e) if e.is_not_found() => {}
                Err(e) => warn!("stop {}: {e}; removing by force", boxspec::short_id(id)),
            }
        }
        match api::remove_container(&self.client, id, true) {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        remove_box_network(&self.client, id)
    }
}

/// Removes `llmboxnet-<id12>` after disconnecting whatever is still attached (peers).
/// A network that is already gone is fine.
pub(super) fn remove_box_network(client: &Client, id: &str) -> Result<(), DockerError> {
    let net = boxspec::network_name(id);
    let inspected = match api::inspect_network(client, &net) {
        Ok(v) => v,
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(e),
    };
    if let Some(attached) = inspected.get("Containers").and_then(Value::as_object) {
        for container in attached.keys() {
            match api::disconnect_network(client, &net, container) {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => warn!("disconnect {container} from {net}: {e}"),
            }
        }
    }
    match api::remove_network(client, &net) {
        Ok(()) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

fn to_info(b: &ContainerSummary) -> BoxInfo {
    let label = |k: &str| b.labels.get(k).cloned().unwrap_or_default();
    BoxInfo {
        container_id: boxspec::short_id(&b.id).into(),
        name: b.name().to_string(),
        box_id: label(LABEL_BOX_ID),
        description: label(LABEL_DESCRIPTION),
        spoke: label(LABEL_NAMESPACE),
        image: b.image.clone(),
        state: b.state.clone(),
        status: b.status.clone(),
        phase: if boxspec::is_pending_name(b.name()) {
            Phase::Pending
        } else {
            Phase::Ready
        },
        created: b.created,
    }
}

/// Reaps pending boxes older than `ttl` among `boxes`; returns what it removed.
pub(super) fn reap_among(
    client: &Client,
    boxes: &[ContainerSummary],
    ttl: Duration,
) -> Result<Vec<ContainerSummary>, DockerError> {
    let now = crate::util::unix_now();
    let ttl_secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    let mut reaped = Vec::new();
    for b in boxes {
        if !boxspec::is_pending_name(b.name()) || now.saturating_sub(b.created) < ttl_secs {
            continue;
        }
        // The list may be seconds old by now (each removal takes a while) and the box may
        // have been activated since: look again right before removing, so that a box renamed
        // ready in the meantime is not force-removed.
        match api::inspect_container(client, &b.id) {
            Ok(v)
                if v.get("Name")
                    .and_then(Value::as_str)
                    .is_some_and(boxspec::is_pending_name) => {}
            Ok(_) => continue,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        }
        match api::remove_container(client, &b.id, true) {
            Ok(()) => {}
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        }
        remove_box_network(client, &b.id)?;
        info!(
            "reaped pending box {} ({}) of namespace {}",
            boxspec::short_id(&b.id),
            b.labels.get(LABEL_BOX_ID).map_or("", String::as_str),
            b.labels.get(LABEL_NAMESPACE).map_or("", String::as_str)
        );
        reaped.push(b.clone());
    }
    Ok(reaped)
}

/// Removes the box networks among `networks` whose box is not among `boxes`: a box removed
/// behind our back (`docker rm -f`) leaves its network, and leaked bridge networks use up
/// the daemon's address pools until no box can be created. List the networks *before* the
/// boxes: a create in flight makes its container before its network, so its network is
/// never taken for an orphan. Returns the names removed.
pub(super) fn reap_orphan_networks(
    client: &Client,
    networks: &[NetworkSummary],
    boxes: &[ContainerSummary],
) -> Result<Vec<String>, DockerError> {
    let mut removed = Vec::new();
    for net in networks {
        let Some(id12) = net.name.strip_prefix(boxspec::NETWORK_PREFIX) else {
            continue;
        };
        if id12.is_empty() || boxes.iter().any(|b| boxspec::short_id(&b.id) == id12) {
            continue;
        }
        remove_box_network(client, id12)?;
        info!(
            "removed network {} left behind by box {} of namespace {}",
            net.name,
            net.labels.get(LABEL_BOX_ID).map_or("", String::as_str),
            net.labels.get(LABEL_NAMESPACE).map_or("", String::as_str)
        );
        removed.push(net.name.clone());
    }
    Ok(removed)
}

impl BoxManager for DockerBoxManager {
    fn create(&self, opts: CreateOptions) -> Result<Created, BoxError> {
        self.create_box(opts)
    }

    fn submit_code(&self, id_or_name: &str, code: &str) -> Result<String, BoxError> {
        self.submit(id_or_name, code)
    }

    fn list(&self) -> Result<Vec<BoxInfo>, BoxError> {
        let mut boxes: Vec<BoxInfo> = self.managed()?.iter().map(to_info).collect();
        boxes.sort_by(|a, b| a.created.cmp(&b.created).then(a.name.cmp(&b.name)));
        Ok(boxes)
    }

    fn destroy(&self, id_or_name: &str) -> Result<(), BoxError> {
        let b = self.resolve(id_or_name)?;
        self.remove_box(&b.id, true).map_err(backend)?;
        info!("destroyed box {} ({})", boxspec::short_id(&b.id), b.name());
        Ok(())
    }

    fn logs(&self, id_or_name: &str, tail: usize) -> Result<String, BoxError> {
        // 0 is what an omitted `tail` decodes to on the wire: use the default then.
        let tail = if tail == 0 { DEFAULT_LOG_TAIL } else { tail };
        let b = self.resolve(id_or_name)?;
        let gone = backend_on(id_or_name);
        let raw = api::logs(&self.client, &b.id, tail).map_err(&gone)?;
        let tty = api::inspect_container(&self.client, &b.id)
            .map_err(&gone)?
            .pointer("/Config/Tty")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        let bytes = if tty {
            raw
        } else {
            text::demux_all(&raw)
                .map_err(|e| backend(DockerError::io("read multiplexed logs", e)))?
        };
        Ok(text::last_lines(&text::strip_ansi(&bytes), tail))
    }

    fn exec(&self, id_or_name: &str, cmd: &[String]) -> Result<ExecResult, BoxError> {
        if cmd.is_empty() || cmd[0].is_empty() {
            return Err(BoxError::InvalidArgument("empty command".into()));
        }
        let b = self.resolve(id_or_name)?;
        let gone = backend_on(id_or_name);
        let user = self.config.exec_user;
        // The box's HOME (/root) is closed to an unprivileged user; /workspace is its own.
        let env: Vec<String> = if user.is_root() {
            Vec::new()
        } else {
            vec![format!("HOME={}", boxspec::WORKDIR)]
        };
        let exec_id =
            api::exec_create(&self.client, &b.id, cmd, &user.docker_user(), &env).map_err(&gone)?;
        let limit = self.config.exec_timeout;
        let deadline = Instant::now() + limit;
        let mut stream = api::exec_start(&self.client, &exec_id, limit).map_err(&gone)?;
        let mut output = DeadlineReader::new(&mut stream.reader, deadline);
        let (mut stdout, mut stderr) = (CappedBuffer::default(), CappedBuffer::default());
        // Keep reading past the caps so the command is never blocked on a full pipe.
        loop {
            match text::read_frame(&mut output) {
                Ok(Some((StreamKind::Stderr, data))) => stderr.push(&data),
                Ok(Some((_, data))) => stdout.push(&data),
                Ok(None) => break,
                Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
                    return Err(BoxError::Box(format!(
                        "the command did not finish within {}s and may still be running in the box",
                        limit.as_secs()
                    )));
                }
                Err(e) => return Err(backend(DockerError::io("read exec output", e))),
            }
        }
        drop(stream);
        // The stream ends when the process does; inspect may lag a moment behind it.
        let mut exit_code = None;
        for _ in 0..50 {
            exit_code = api::exec_exit_code(&self.client, &exec_id).map_err(backend)?;
            if exit_code.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let exit_code = exit_code.ok_or_else(|| {
            BoxError::Backend(Box::new(DockerError::Protocol(
                "exec output ended but the daemon reports no exit code".into(),
            )))
        })?;
        Ok(ExecResult {
            stdout: stdout.finish(),
            stderr: stderr.finish(),
            exit_code,
        })
    }

    fn reap(&self, ttl: Duration) -> Result<Vec<String>, BoxError> {
        let filters = boxspec::label_filters(Some(&self.config.namespace));
        let networks = api::list_networks(&self.client, &filters).map_err(backend)?;
        let boxes = self.managed()?;
        let reaped = reap_among(&self.client, &boxes, ttl).map_err(backend)?;
        reap_orphan_networks(&self.client, &networks, &boxes).map_err(backend)?;
        Ok(reaped
            .iter()
            .map(|b| boxspec::short_id(&b.id).to_string())
            .collect())
    }
}
