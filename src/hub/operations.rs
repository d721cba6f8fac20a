//! The seven MCP operations on boxes, composed from the [`Ledger`](super::ledger::Ledger) (the
//! hub's sessions), the [`Router`](super::routing::Router) (spokes) and the hooks.
//!
//! Every per-box operation finds the box's spoke from its session (or, for a box made outside
//! this hub, from a fan-out `list`), and runs the verb there. Box ids are unique hub-wide: a
//! create claims its id in memory, then checks the sessions and every reachable spoke. The
//! state file changes only after the spoke accepted the change, and a rejected request never
//! touches it.

use super::hooks::HookBox;
use super::ledger::NewSession;
use super::routing::Located;
use super::views::{BoxView, Expiry, ListView, ListedBox};
use super::{Hub, HubError};
use crate::boxes::{BoxError, BoxManager, ContainerId, CreateOptions, ErrorKind, ExecResult};
use crate::cluster::SpokeStatus;
use crate::store::Session;

/// Most log lines `get_llmbox_logs` returns.
pub const MAX_LOG_TAIL: usize = 10_000;
/// Longest command `exec_llmbox` accepts.
pub const MAX_COMMAND_LEN: usize = 64 * 1024;
/// Longest description `create_llmbox` accepts.
pub const MAX_DESCRIPTION_LEN: usize = 1024;

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

impl CreateRequest {
    /// Checks the request before anything is asked of a spoke; returns the image to run
    /// (`default_image` when the request names none).
    fn image(&self, default_image: &str) -> Result<String, HubError> {
        check_box_id(&self.box_id)?;
        if self.description.len() > MAX_DESCRIPTION_LEN {
            return Err(HubError::InvalidArgument(format!(
                "description is longer than {MAX_DESCRIPTION_LEN} bytes"
            )));
        }
        let image = self.image.as_deref().unwrap_or(default_image);
        if image.trim().is_empty() {
            return Err(HubError::InvalidArgument(
                "image is empty; omit it to use the hub's default image".into(),
            ));
        }
        Ok(image.to_string())
    }
}

fn check_box_id(box_id: &str) -> Result<(), HubError> {
    crate::boxes::validate_box_id(box_id).map_err(HubError::InvalidBoxId)
}

impl Hub {
    /// When the link of session `s` expires (`--auth-ttl` after its create), and now.
    pub(super) fn expiry(&self, s: &Session) -> Expiry {
        let ttl = i64::try_from(self.config.auth_ttl.as_secs()).unwrap_or(i64::MAX);
        Expiry {
            at: s.created.saturating_add(ttl),
            now: crate::util::unix_now(),
        }
    }

    /// The box's view from its session, with the page link while it is not ready.
    fn view(&self, s: &Session) -> Result<BoxView, HubError> {
        let auth_url = match s.status {
            crate::store::SessionStatus::Ready => None,
            _ => Some(self.activation_url(&self.ledger.page_token(s)?)),
        };
        // The box's own words: scrubbed like its logs before a model sees them.
        let error = self.ledger.scrub(&s.container_id, Some(s), &s.error);
        Ok(BoxView::of_session(s, auth_url, error, self.expiry(s)))
    }

    /// Remembers the sessions matching `pred` as reaped unactivated (before they are dropped).
    pub(super) fn remember_reaped(&self, pred: impl Fn(&Session) -> bool) {
        let now = crate::util::unix_now();
        for s in self.ledger.sessions().unwrap_or_default() {
            if s.status != crate::store::SessionStatus::Ready && pred(&s) {
                self.reaped.record(&s, self.expiry(&s).at, now);
            }
        }
    }

    /// True only when the session's spoke is connected and answered a `list` without its box.
    pub(super) fn box_is_gone(&self, s: &Session) -> bool {
        self.router.holds(&s.spoke, &s.container_id) == Some(false)
    }

    /// Finds `box_id` by its session, else on any spoke.
    fn locate(&self, box_id: &str) -> Result<Located, HubError> {
        check_box_id(box_id)?;
        let session = self.ledger.by_box(box_id)?;
        self.router.locate(box_id, session)
    }

    /// Refuses `box_id` when a session or a reachable spoke has it. A session whose box
    /// vanished while its spoke was away (a restart's reconcile keeps those) frees the id.
    fn check_id_free(&self, box_id: &str) -> Result<(), HubError> {
        if let Some(s) = self.ledger.by_box(box_id)? {
            if !self.box_is_gone(&s) {
                return Err(HubError::DuplicateBoxId(box_id.to_string()));
            }
            self.drop_sessions(|x| x.container_id == s.container_id);
        }
        let (existing, _) = self.router.fan_out();
        if existing
            .iter()
            .any(|b| b.box_id.eq_ignore_ascii_case(box_id))
        {
            return Err(HubError::DuplicateBoxId(box_id.to_string()));
        }
        Ok(())
    }

    /// `create_llmbox`: hooks, the create verb on the chosen spoke, a new session.
    ///
    /// # Errors
    /// Bad arguments, a taken id, no usable spoke, a hook or verb failure, the state file.
    pub fn create_box(&self, req: CreateRequest) -> Result<BoxView, HubError> {
        let image = req.image(&self.config.box_image)?;
        let spoke = self.router.choose(req.spoke.as_deref())?;
        let _claim = self.ledger.claim_create(&req.box_id).ok_or_else(|| {
            HubError::Busy(format!(
                "a box with id {:?} is being created right now; pick another id",
                req.box_id
            ))
        })?;
        self.check_id_free(&req.box_id)?;
        let manager = self.router.manager(&spoke)?;
        let hook_box = HookBox {
            box_id: &req.box_id,
            spoke: &spoke,
            image: &image,
            description: &req.description,
        };
        let (files, hook_state) = self.hooks.create(&hook_box).map_err(HubError::Hook)?;
        let opts = CreateOptions {
            image,
            box_id: req.box_id.clone(),
            description: req.description.clone(),
            spoke_name: spoke.clone(),
            files,
        };
        let created = self
            .router
            .verb("create", || manager.create(opts))
            .map_err(|source| {
                self.hooks
                    .destroy(&req.box_id, &spoke, "", hook_state.as_ref());
                HubError::Verb {
                    op: "create",
                    box_id: req.box_id.clone(),
                    spoke: spoke.clone(),
                    source,
                }
            })?;
        let id = ContainerId::new(created.id);
        self.reaped.forget(&req.box_id, crate::util::unix_now());
        let opened = self.ledger.open(NewSession {
            container_id: id.clone(),
            spoke: spoke.clone(),
            box_id: req.box_id.clone(),
            description: req.description,
            authorize_url: created.authorize_url,
            hook_state: hook_state.clone(),
        });
        match opened {
            Ok(session) => {
                log::info!(
                    "created box {:?} on spoke {spoke:?} (container {})",
                    req.box_id,
                    id.short()
                );
                self.view(&session)
            }
            Err(err) => {
                // The box exists but nobody could ever activate it: take it down again.
                if let Err(e) = self.router.verb("destroy", || manager.destroy(&id)) {
                    log::warn!("removing box {:?} after a failed create: {e}", req.box_id);
                }
                self.hooks
                    .destroy(&req.box_id, &spoke, &id, hook_state.as_ref());
                Err(err)
            }
        }
    }

    /// `get_llmbox`: the box's activation state.
    ///
    /// # Errors
    /// Bad or unknown box id, its spoke away, the state file.
    pub fn get_box(&self, box_id: &str) -> Result<BoxView, HubError> {
        let found = match self.locate(box_id) {
            Err(HubError::UnknownBox(id)) => {
                return Err(match self.reaped.by_box(&id, crate::util::unix_now()) {
                    Some(r) => HubError::Reaped {
                        box_id: r.box_id,
                        spoke: r.spoke,
                        expired_at: r.expired_at,
                        reaped_at: r.reaped_at,
                    },
                    None => HubError::UnknownBox(id),
                });
            }
            other => other?,
        };
        // Its spoke must be up: a box on an away spoke is reported as such.
        self.router.manager(&found.spoke)?;
        if let Some(s) = found.session {
            // A box removed behind the hub's back (reaped, `docker rm`) loses its session here.
            if self.box_is_gone(&s) {
                let expiry = self.expiry(&s);
                if s.status != crate::store::SessionStatus::Ready && expiry.passed() {
                    // Gone after its link expired: reaped (by `llmbox reap`, another hub).
                    self.remember_reaped(|x| x.container_id == s.container_id);
                    self.drop_sessions(|x| x.container_id == s.container_id);
                    return Err(HubError::Reaped {
                        box_id: s.box_id,
                        spoke: s.spoke,
                        expired_at: expiry.at,
                        reaped_at: expiry.now,
                    });
                }
                self.drop_sessions(|x| x.container_id == s.container_id);
                return Err(HubError::BoxGone {
                    box_id: s.box_id,
                    spoke: s.spoke,
                });
            }
            return self.view(&s);
        }
        let info = found
            .info
            .ok_or_else(|| HubError::UnknownBox(box_id.to_string()))?;
        Ok(BoxView::of_listed(info, found.spoke))
    }

    /// `list_llmboxes`: every box on every reachable spoke, with its activation status.
    pub fn list_boxes(&self) -> ListView {
        let (boxes, unreachable) = self.router.fan_out();
        let sessions = self.ledger.sessions().unwrap_or_default();
        let boxes = boxes
            .into_iter()
            .map(|b| {
                let session = sessions
                    .iter()
                    .find(|s| s.spoke == b.spoke && s.container_id.same_box(&b.container_id));
                ListedBox::new(b, session)
            })
            .collect();
        ListView { boxes, unreachable }
    }

    /// `list_spokes`.
    pub fn list_spokes(&self) -> Vec<SpokeStatus> {
        self.router.directory().statuses()
    }

    /// `destroy_llmbox`: the destroy verb, then the session and the destroy hooks.
    ///
    /// # Errors
    /// Bad or unknown box id, its spoke away, the verb failing.
    pub fn destroy_box(&self, box_id: &str) -> Result<BoxView, HubError> {
        let found = self.locate(box_id)?;
        let manager = self.router.manager(&found.spoke)?;
        if let Err(source) = self
            .router
            .verb("destroy", || manager.destroy(&found.target))
        {
            match self.verb_failed("destroy", box_id, &found, source) {
                // Already gone on the spoke, and its session with it: the job is done.
                HubError::BoxGone { .. } => {}
                err => return Err(err),
            }
        }
        // Runs the destroy hooks with the state they returned at create.
        self.drop_sessions(|s| s.container_id == found.target);
        log::info!("destroyed box {box_id:?} on spoke {:?}", found.spoke);
        let (description, created) = match (&found.session, &found.info) {
            (Some(s), _) => (s.description.clone(), s.created),
            (None, Some(i)) => (i.description.clone(), i.created),
            (None, None) => (String::new(), 0),
        };
        Ok(BoxView::destroyed(
            box_id,
            found.spoke,
            &found.target,
            description,
            created,
        ))
    }

    /// The hub's handling of a failed verb on a located box, decided here by the failure's kind
    /// alone, so a remote spoke's failure is handled like the local spoke's (the kind crosses
    /// the wire; a Go spoke's untyped errors are reported as they came):
    /// - `not_found` for a box the hub has a session of: the box was removed behind the hub's
    ///   back, so its session is dropped and the answer is [`HubError::BoxGone`] (which
    ///   `destroy` takes as done);
    /// - anything else: [`HubError::Verb`] with the spoke's words.
    fn verb_failed(
        &self,
        op: &'static str,
        box_id: &str,
        found: &Located,
        source: BoxError,
    ) -> HubError {
        if let (Some(ErrorKind::NotFound), Some(s)) = (source.kind(), &found.session) {
            self.drop_sessions(|x| x.container_id == s.container_id);
            return HubError::BoxGone {
                box_id: s.box_id.clone(),
                spoke: s.spoke.clone(),
            };
        }
        HubError::Verb {
            op,
            box_id: box_id.to_string(),
            spoke: found.spoke.clone(),
            source,
        }
    }

    /// Runs `verb` on the located box's spoke, naming `op` in its error.
    fn on_box<T>(
        &self,
        box_id: &str,
        op: &'static str,
        method: &'static str,
        verb: impl FnOnce(&dyn BoxManager, &ContainerId) -> Result<T, BoxError>,
    ) -> Result<(Located, T), HubError> {
        let found = self.locate(box_id)?;
        let manager = self.router.manager(&found.spoke)?;
        match self
            .router
            .verb(method, || verb(manager.as_ref(), &found.target))
        {
            Ok(out) => Ok((found, out)),
            Err(source) => Err(self.verb_failed(op, box_id, &found, source)),
        }
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
        let (found, logs) =
            self.on_box(box_id, "read logs of", "logs", |m, id| m.logs(id, tail))?;
        Ok(self
            .ledger
            .scrub(&found.target, found.session.as_ref(), &logs))
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
        let cmd = ["/bin/sh".to_string(), "-c".to_string(), command.to_string()];
        let (found, mut out) = self.on_box(box_id, "exec in", "exec", |m, id| m.exec(id, &cmd))?;
        let session = found.session.as_ref();
        out.stdout = self.ledger.scrub(&found.target, session, &out.stdout);
        out.stderr = self.ledger.scrub(&found.target, session, &out.stderr);
        Ok(out)
    }
}
