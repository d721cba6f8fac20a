//! Sessions and routing: what each MCP tool and the activation page do to boxes.
//!
//! Every per-box operation finds the box's spoke from its session (or, for a box made outside
//! this hub, from a fan-out `list`), and runs the verb there. Box ids are unique hub-wide: a
//! create reserves its id in memory, then checks the sessions and every reachable spoke. The
//! state file changes only after the spoke accepted the change, and a rejected request never
//! touches it.

use std::sync::Arc;

use serde::Serialize;

use super::redact::scrub;
use super::{Hub, HubError};
use crate::boxes::{BoxInfo, BoxManager, CreateOptions, ErrorKind, ExecResult, Phase};
use crate::cluster::SpokeStatus;
use crate::store::{Session, SessionStatus};
use crate::util::secret::{random_hex_32, sha256_hex};
use crate::util::unix_now;

/// Most log lines `get_llmbox_logs` returns.
pub(crate) const MAX_LOG_TAIL: usize = 10_000;
/// Longest command `exec_llmbox` accepts.
pub(crate) const MAX_COMMAND_LEN: usize = 64 * 1024;
/// Longest description `create_llmbox` accepts.
pub(crate) const MAX_DESCRIPTION_LEN: usize = 1024;

/// What `create_llmbox` asks for.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    /// The caller's box id.
    pub box_id: String,
    /// Image; the hub's `--box-image` when `None`.
    pub image: Option<String>,
    /// Free text.
    pub description: String,
    /// Target spoke; `local` (or the first connected spoke) when `None`.
    pub spoke: Option<String>,
}

/// One box as `create_llmbox` / `get_llmbox` report it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BoxView {
    /// The caller's box id.
    pub(crate) box_id: String,
    /// The spoke holding it.
    pub spoke: String,
    /// `pending` (waiting for the person), `ready`, or `error` (last code failed; still waiting).
    pub status: String,
    /// The activation page to hand to the person, while not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activation_url: Option<String>,
    /// The remote-control session URL, once ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_url: Option<String>,
    /// The last activation error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    /// Short container id.
    pub container_id: String,
    /// Free text from create.
    pub(crate) description: String,
    /// Created at, unix seconds.
    pub(crate) created: i64,
    /// What the caller should do next.
    pub(crate) next_step: String,
}

/// One box in `list_llmboxes`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListedBox {
    /// The caller's box id (empty for a box made without one).
    pub box_id: String,
    /// The spoke holding it.
    pub(crate) spoke: String,
    /// `pending`, `ready` or `error`.
    pub(crate) status: String,
    /// Short container id.
    pub(crate) container_id: String,
    /// Image.
    pub(crate) image: String,
    /// Docker's state (`running`, `exited`, …).
    pub(crate) state: String,
    /// Free text from create.
    pub(crate) description: String,
    /// Created at, unix seconds.
    pub(crate) created: i64,
}

/// A spoke whose `list` failed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpokeFailure {
    /// The spoke.
    pub spoke: String,
    /// Why.
    pub(crate) error: String,
}

/// What `list_llmboxes` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListView {
    /// Boxes on every spoke that answered.
    pub boxes: Vec<ListedBox>,
    /// Spokes that are away or failed to answer; their boxes are missing above.
    pub unreachable: Vec<SpokeFailure>,
}

/// Where a box lives, found from its session or by asking the spokes.
struct Located {
    spoke: String,
    /// What the verbs get as `id_or_name`.
    target: String,
    session: Option<Session>,
    info: Option<BoxInfo>,
}

/// Removes a create reservation when dropped.
struct Reservation<'a> {
    hub: &'a Hub,
    key: String,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.hub.volatile().creating.remove(&self.key);
    }
}

fn status_word(status: SessionStatus) -> &'static str {
    match status {
        SessionStatus::Pending => "pending",
        SessionStatus::Ready => "ready",
        SessionStatus::Error => "error",
    }
}

/// Spokes asked at once when the hub lists boxes across the cluster.
const FAN_OUT_THREADS: usize = 16;

/// One spoke's answer to `list`: its boxes, or why it could not be listed.
type SpokeListing = Result<Vec<BoxInfo>, String>;

pub(super) fn short(id: &str) -> String {
    id.chars().take(12).collect()
}

fn check_box_id(box_id: &str) -> Result<(), HubError> {
    crate::boxes::validate_box_id(box_id).map_err(HubError::InvalidBoxId)
}

impl Hub {
    /// The connected manager of `spoke`.
    pub(super) fn manager(&self, spoke: &str) -> Result<Arc<dyn BoxManager>, HubError> {
        if let Some(m) = self.spokes.get(spoke) {
            return Ok(m);
        }
        let known: Vec<String> = self.spokes.statuses().into_iter().map(|s| s.name).collect();
        if known.iter().any(|k| k == spoke) {
            Err(HubError::SpokeAway(spoke.to_string()))
        } else {
            Err(HubError::UnknownSpoke {
                name: spoke.to_string(),
                known,
            })
        }
    }

    fn session_by_box(&self, box_id: &str) -> Result<Option<Session>, HubError> {
        let state = self.store.load()?;
        Ok(state
            .sessions
            .iter()
            .find(|s| s.box_id.eq_ignore_ascii_case(box_id))
            .cloned())
    }

    /// Lists every connected spoke; failures and away spokes are reported beside the boxes.
    /// Lists every spoke's boxes, asking up to [`FAN_OUT_THREADS`] spokes at once so one slow
    /// spoke costs its own deadline, not the sum of everyone's round trips. Results keep the
    /// order of [`SpokeDirectory::statuses`].
    fn fan_out(&self) -> (Vec<BoxInfo>, Vec<SpokeFailure>) {
        let spokes = self.spokes.statuses();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let slots: Vec<std::sync::Mutex<Option<SpokeListing>>> =
            spokes.iter().map(|_| std::sync::Mutex::new(None)).collect();
        std::thread::scope(|scope| {
            for _ in 0..spokes.len().min(FAN_OUT_THREADS) {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(spoke) = spokes.get(i) else { return };
                        let listed = match self.spokes.get(&spoke.name) {
                            None => Err(HubError::SpokeAway(spoke.name.clone()).to_string()),
                            Some(m) => self.verb("list", || m.list()).map_err(|e| e.to_string()),
                        };
                        *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(listed);
                    }
                });
            }
        });
        let mut boxes = Vec::new();
        let mut failed = Vec::new();
        for (spoke, slot) in spokes.iter().zip(slots) {
            // Every slot is filled once the scope returns (a panicking worker re-panics there).
            let listed = slot
                .into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .unwrap_or_else(|| Err("the hub did not ask this spoke".into()));
            match listed {
                Ok(mut list) => {
                    for b in &mut list {
                        b.spoke = spoke.name.clone();
                    }
                    boxes.append(&mut list);
                }
                Err(error) => failed.push(SpokeFailure {
                    spoke: spoke.name.clone(),
                    error,
                }),
            }
        }
        (boxes, failed)
    }

    fn locate(&self, box_id: &str) -> Result<Located, HubError> {
        check_box_id(box_id)?;
        if let Some(s) = self.session_by_box(box_id)? {
            return Ok(Located {
                spoke: s.spoke.clone(),
                target: s.container_id.clone(),
                session: Some(s),
                info: None,
            });
        }
        let (boxes, failed) = self.fan_out();
        match boxes
            .into_iter()
            .find(|b| b.box_id.eq_ignore_ascii_case(box_id))
        {
            Some(info) => Ok(Located {
                spoke: info.spoke.clone(),
                target: info.container_id.clone(),
                session: None,
                info: Some(info),
            }),
            // The box may sit on a spoke that did not answer: say so rather than "unknown".
            None if !failed.is_empty() => Err(HubError::MaybeOnSilentSpoke {
                box_id: box_id.to_string(),
                spokes: failed.into_iter().map(|f| f.spoke).collect(),
            }),
            None => Err(HubError::UnknownBox(box_id.to_string())),
        }
    }

    /// The page token to show for a session: the one this process handed out, or a fresh one
    /// added beside the stored hash (after a restart the hub knows only hashes).
    fn page_token(&self, session: &Session) -> Result<String, HubError> {
        if let Some(t) = self.volatile().tokens.get(&session.container_id) {
            return Ok(t.clone());
        }
        let token = random_hex_32().map_err(HubError::Random)?;
        let hash = sha256_hex(token.as_bytes());
        let container_id = session.container_id.clone();
        let found = self.store.update(|state| {
            state
                .sessions
                .iter_mut()
                .find(|s| s.container_id == container_id)
                .map(|s| s.more_token_hashes.push(hash))
                .is_some()
        })?;
        if !found {
            return Err(HubError::UnknownBox(session.box_id.clone()));
        }
        self.volatile()
            .tokens
            .insert(session.container_id.clone(), token.clone());
        Ok(token)
    }

    fn view(&self, s: &Session) -> Result<BoxView, HubError> {
        let ready = s.status == SessionStatus::Ready;
        let activation_url = if ready {
            None
        } else {
            Some(self.activation_url(&self.page_token(s)?))
        };
        let next_step = match s.status {
            SessionStatus::Pending => {
                "Give the person the activation_url (never anything else): they sign in with their own Claude account there and paste the code. Then call get_llmbox until status is ready."
            }
            SessionStatus::Error => {
                "The last code did not work; the activation page shows why and offers a fresh sign-in link. Ask the person to open activation_url again, then call get_llmbox."
            }
            SessionStatus::Ready => {
                "The box is ready: give the person session_url. Use exec_llmbox to run commands and get_llmbox_logs to read its output."
            }
        };
        Ok(BoxView {
            box_id: s.box_id.clone(),
            spoke: s.spoke.clone(),
            status: status_word(s.status).to_string(),
            activation_url,
            session_url: ready.then(|| s.session_url.clone()),
            // The box's own words: scrubbed like its logs before a model sees them.
            error: (!s.error.is_empty() && !ready).then(|| scrub(&s.error, &[], &s.code_hashes)),
            container_id: short(&s.container_id),
            description: s.description.clone(),
            created: s.created,
            next_step: next_step.to_string(),
        })
    }

    fn choose_spoke(&self, wanted: Option<&str>) -> Result<String, HubError> {
        if let Some(name) = wanted {
            self.manager(name)?;
            return Ok(name.to_string());
        }
        let connected: Vec<SpokeStatus> = self
            .spokes
            .statuses()
            .into_iter()
            .filter(|s| s.connected)
            .collect();
        connected
            .iter()
            .find(|s| s.local)
            .or(connected.first())
            .map(|s| s.name.clone())
            .ok_or(HubError::NoSpoke)
    }

    /// `create_llmbox`: hooks, the create verb on the chosen spoke, a new session.
    ///
    /// # Errors
    /// Bad arguments, a taken id, no usable spoke, a hook or verb failure, the state file.
    pub fn create_box(&self, req: CreateRequest) -> Result<BoxView, HubError> {
        check_box_id(&req.box_id)?;
        if req.description.len() > MAX_DESCRIPTION_LEN {
            return Err(HubError::InvalidArgument(format!(
                "description is longer than {MAX_DESCRIPTION_LEN} bytes"
            )));
        }
        let image = req
            .image
            .clone()
            .unwrap_or_else(|| self.config.box_image.clone());
        if image.trim().is_empty() {
            return Err(HubError::InvalidArgument(
                "image is empty; omit it to use the hub's default image".into(),
            ));
        }
        let spoke = self.choose_spoke(req.spoke.as_deref())?;
        let key = req.box_id.to_ascii_lowercase();
        if !self.volatile().creating.insert(key.clone()) {
            return Err(HubError::Busy(format!(
                "a box with id {:?} is being created right now; pick another id",
                req.box_id
            )));
        }
        let _reservation = Reservation { hub: self, key };
        if let Some(s) = self.session_by_box(&req.box_id)? {
            if !self.box_is_gone(&s) {
                return Err(HubError::DuplicateBoxId(req.box_id));
            }
            // Its box vanished while its spoke was away (a restart's reconcile keeps such
            // sessions): the id is free again.
            self.drop_sessions(|x| x.container_id == s.container_id);
        }
        let (existing, _) = self.fan_out();
        if existing
            .iter()
            .any(|b| b.box_id.eq_ignore_ascii_case(&req.box_id))
        {
            return Err(HubError::DuplicateBoxId(req.box_id));
        }
        let manager = self.manager(&spoke)?;
        let hook_box = super::hooks::HookBox {
            box_id: &req.box_id,
            spoke: &spoke,
            image: &image,
            description: &req.description,
        };
        let (files, hook_state) = self.hooks.create(&hook_box).map_err(HubError::Hook)?;
        let opts = CreateOptions {
            image: image.clone(),
            box_id: req.box_id.clone(),
            description: req.description.clone(),
            spoke_name: spoke.clone(),
            files,
        };
        let created = match self.verb("create", || manager.create(opts)) {
            Ok(c) => c,
            Err(source) => {
                self.hooks
                    .destroy(&req.box_id, &spoke, "", hook_state.as_ref());
                return Err(HubError::Verb {
                    op: "create",
                    box_id: req.box_id,
                    spoke,
                    source,
                });
            }
        };
        let saved = random_hex_32().map_err(HubError::Random).and_then(|token| {
            let session = Session {
                token_hash: sha256_hex(token.as_bytes()),
                container_id: created.id.clone(),
                spoke: spoke.clone(),
                box_id: req.box_id.clone(),
                description: req.description.clone(),
                authorize_url: created.authorize_url.clone(),
                status: SessionStatus::Pending,
                session_url: String::new(),
                error: String::new(),
                hook_state: hook_state.clone(),
                created: unix_now(),
                more_token_hashes: Vec::new(),
                code_hashes: Vec::new(),
            };
            let record = session.clone();
            self.store.update(|state| state.sessions.push(record))?;
            Ok((token, session))
        });
        match saved {
            Ok((token, session)) => {
                self.volatile()
                    .tokens
                    .insert(session.container_id.clone(), token);
                log::info!(
                    "created box {:?} on spoke {spoke:?} (container {})",
                    req.box_id,
                    short(&created.id)
                );
                self.view(&session)
            }
            Err(err) => {
                // The box exists but nobody could ever activate it: take it down again.
                if let Err(e) = self.verb("destroy", || manager.destroy(&created.id)) {
                    log::warn!("removing box {:?} after a failed create: {e}", req.box_id);
                }
                self.hooks
                    .destroy(&req.box_id, &spoke, &created.id, hook_state.as_ref());
                Err(err)
            }
        }
    }

    /// `get_llmbox`: the box's activation state.
    ///
    /// # Errors
    /// Bad or unknown box id, its spoke away, the state file.
    pub fn get_box(&self, box_id: &str) -> Result<BoxView, HubError> {
        let found = self.locate(box_id)?;
        // Its spoke must be up: a box on an away spoke is reported as such.
        self.manager(&found.spoke)?;
        if let Some(s) = found.session {
            // A box removed behind the hub's back (reaped, `docker rm`) loses its session here.
            if self.box_is_gone(&s) {
                self.drop_sessions(|x| x.container_id == s.container_id);
                return Err(HubError::BoxGone {
                    box_id: s.box_id.clone(),
                    spoke: s.spoke.clone(),
                });
            }
            return self.view(&s);
        }
        let info = found
            .info
            .ok_or_else(|| HubError::UnknownBox(box_id.to_string()))?;
        Ok(BoxView {
            box_id: info.box_id.clone(),
            spoke: found.spoke,
            status: info.phase.to_string(),
            activation_url: None,
            session_url: None,
            error: None,
            container_id: info.container_id.clone(),
            description: info.description.clone(),
            created: info.created,
            next_step: match info.phase {
                Phase::Ready => "The box is ready; use exec_llmbox and get_llmbox_logs.".into(),
                Phase::Pending => "This box was not created through this hub, so it has no activation page here; destroy it and create a new one.".into(),
            },
        })
    }

    /// True only when the session's spoke is connected and answered a `list` without its box.
    pub(super) fn box_is_gone(&self, s: &Session) -> bool {
        let Some(manager) = self.spokes.get(&s.spoke) else {
            return false;
        };
        self.verb("list", || manager.list()).is_ok_and(|list| {
            !list
                .iter()
                .any(|b| !b.container_id.is_empty() && s.container_id.starts_with(&b.container_id))
        })
    }

    /// `list_llmboxes`: every box on every reachable spoke, with its activation status.
    pub fn list_boxes(&self) -> ListView {
        let (boxes, unreachable) = self.fan_out();
        let sessions = self
            .store
            .load()
            .map(|s| s.sessions.clone())
            .unwrap_or_default();
        let boxes = boxes
            .into_iter()
            .map(|b| {
                let session = sessions.iter().find(|s| {
                    s.spoke == b.spoke
                        && !b.container_id.is_empty()
                        && s.container_id.starts_with(&b.container_id)
                });
                let status = match session {
                    Some(s) if s.status != SessionStatus::Ready && b.phase == Phase::Pending => {
                        status_word(s.status).to_string()
                    }
                    _ => b.phase.to_string(),
                };
                ListedBox {
                    box_id: b.box_id,
                    spoke: b.spoke,
                    status,
                    container_id: b.container_id,
                    image: b.image,
                    state: b.state,
                    description: b.description,
                    created: b.created,
                }
            })
            .collect();
        ListView { boxes, unreachable }
    }

    /// `list_spokes`.
    pub(crate) fn list_spokes(&self) -> Vec<SpokeStatus> {
        self.spokes.statuses()
    }

    /// `destroy_llmbox`: the destroy verb, then the session and the destroy hooks.
    ///
    /// # Errors
    /// Bad or unknown box id, its spoke away, the verb failing.
    pub fn destroy_box(&self, box_id: &str) -> Result<BoxView, HubError> {
        let found = self.locate(box_id)?;
        let manager = self.manager(&found.spoke)?;
        match self.verb("destroy", || manager.destroy(&found.target)) {
            Ok(()) => {}
            // Already gone on the spoke (local or remote alike: the kind crosses the wire):
            // forgetting the session finishes the job.
            Err(e) if e.kind() == Some(ErrorKind::NotFound) && found.session.is_some() => {}
            Err(source) => {
                return Err(HubError::Verb {
                    op: "destroy",
                    box_id: box_id.to_string(),
                    spoke: found.spoke,
                    source,
                });
            }
        }
        let target = found.target.clone();
        // Runs the destroy hooks with the state they returned at create.
        self.drop_sessions(|s| s.container_id == target);
        log::info!("destroyed box {box_id:?} on spoke {:?}", found.spoke);
        let (container_id, description, created) = match (&found.session, &found.info) {
            (Some(s), _) => (short(&s.container_id), s.description.clone(), s.created),
            (None, Some(i)) => (i.container_id.clone(), i.description.clone(), i.created),
            (None, None) => (short(&found.target), String::new(), 0),
        };
        Ok(BoxView {
            box_id: box_id.to_string(),
            spoke: found.spoke,
            status: "destroyed".into(),
            activation_url: None,
            session_url: None,
            error: None,
            container_id,
            description,
            created,
            next_step: "The box and its files are gone; create_llmbox makes a new one.".into(),
        })
    }

    /// Scrubs `text` of sign-in links and of the codes typed for the located box.
    fn scrub_for(&self, found: &Located, text: &str) -> String {
        let codes = self
            .volatile()
            .codes
            .get(&found.target)
            .cloned()
            .unwrap_or_default();
        let hashes = found
            .session
            .as_ref()
            .map(|s| s.code_hashes.as_slice())
            .unwrap_or_default();
        scrub(text, &codes, hashes)
    }

    /// `get_llmbox_logs`: the last `tail` lines, with sign-in links and typed codes hidden.
    ///
    /// # Errors
    /// Bad arguments, unknown box, its spoke away, the verb failing.
    pub fn box_logs(&self, box_id: &str, tail: usize) -> Result<String, HubError> {
        if tail == 0 || tail > MAX_LOG_TAIL {
            return Err(HubError::InvalidArgument(format!(
                "tail must be between 1 and {MAX_LOG_TAIL}"
            )));
        }
        let found = self.locate(box_id)?;
        let manager = self.manager(&found.spoke)?;
        let logs = self
            .verb("logs", || manager.logs(&found.target, tail))
            .map_err(|source| HubError::Verb {
                op: "read logs of",
                box_id: box_id.to_string(),
                spoke: found.spoke.clone(),
                source,
            })?;
        Ok(self.scrub_for(&found, &logs))
    }

    /// `exec_llmbox`: `/bin/sh -c command` in the box, output scrubbed like the logs.
    ///
    /// # Errors
    /// Bad arguments, unknown box, its spoke away, the verb failing.
    pub fn exec_box(&self, box_id: &str, command: &str) -> Result<ExecResult, HubError> {
        if command.trim().is_empty() {
            return Err(HubError::InvalidArgument("command is empty".into()));
        }
        if command.len() > MAX_COMMAND_LEN {
            return Err(HubError::InvalidArgument(format!(
                "command is longer than {MAX_COMMAND_LEN} bytes"
            )));
        }
        let found = self.locate(box_id)?;
        let manager = self.manager(&found.spoke)?;
        let cmd = ["/bin/sh".to_string(), "-c".to_string(), command.to_string()];
        let mut out = self
            .verb("exec", || manager.exec(&found.target, &cmd))
            .map_err(|source| HubError::Verb {
                op: "exec in",
                box_id: box_id.to_string(),
                spoke: found.spoke.clone(),
                source,
            })?;
        out.stdout = self.scrub_for(&found, &out.stdout);
        out.stderr = self.scrub_for(&found, &out.stderr);
        Ok(out)
    }
}
