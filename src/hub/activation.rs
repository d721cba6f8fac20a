//! The activation page's logic: find the session behind a page token, feed a code to the box,
//! record ready or error. The code is never logged and never stored; after a failed code the
//! newest sign-in link is read back from the box's logs (the `logs` verb, so it works on any
//! spoke) and offered again — unless the box stopped (a Go spoke's box does not loop its
//! login), which only a new box mends. A failure of the host (its Docker unreachable, a
//! backend error) is the operator's: the session is left as it was and the page says so. A link
//! past `--auth-ttl`, or of a box reaped unactivated, has expired. One activation per box runs
//! at a time (the ledger's claim).

use super::metrics::Outcome;
use super::redact::{newest_authorize_url, scrub};
use super::{Hub, HubError};
use crate::boxes::{BoxError, BoxManager, ErrorKind};
use crate::store::{Session, SessionStatus};
use crate::util::secret::{is_hex_64, sha256_hex};

/// Log lines read back to find a fresh sign-in link after a failed code.
const FRESH_LINK_TAIL: usize = 200;
/// After a failed code that left no new sign-in link, how often and how many times the box's
/// state is read to see whether it stopped (2 s in all).
const STOP_POLL: std::time::Duration = std::time::Duration::from_millis(250);
const STOP_POLLS: usize = 8;

/// Where the activation page stands.
#[derive(Debug, Clone, PartialEq)]
pub enum PageState {
    /// Waiting for the code.
    Pending,
    /// Activated.
    Ready {
        /// Where the person continues.
        session_url: String,
    },
    /// The box rejected the last code; a fresh sign-in link and the form are offered again.
    Error {
        /// The box's own words (shown folded under "details").
        message: String,
    },
    /// The box stopped after the last code and can take no other; only a new box helps.
    Stopped {
        /// The box's own words (shown folded under "details").
        message: String,
    },
    /// The host failed (its Docker unreachable, its spoke away, a backend error): the
    /// operator's to fix; the code was not judged, so the same link still stands.
    HostTrouble {
        /// The error (shown folded under "details").
        message: String,
    },
    /// The link expired: `--auth-ttl` passed unactivated, or the box was reaped (410).
    Expired,
    /// The input could not be used (empty, too long, busy, spoke away); nothing reached the
    /// box, so the same sign-in link still stands and the form is offered again.
    Unusable {
        /// What to tell the person.
        message: String,
    },
}

/// Everything the activation page shows.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivationPage {
    /// The box id.
    pub(crate) box_id: String,
    /// Its spoke.
    pub(crate) spoke: String,
    /// Its description.
    pub(crate) description: String,
    /// The newest sign-in link.
    pub authorize_url: String,
    /// Pending, ready or error.
    pub state: PageState,
    /// A polite side note (second submission after success, activation in progress).
    pub notice: Option<String>,
    /// When the link expires (unix seconds) and how many seconds are left, while it waits.
    pub(crate) expires: Option<(i64, u64)>,
}

/// What the page says when another activation of the same box holds the claim.
const ANOTHER_RUNNING: &str =
    "Another activation of this box is running; wait a moment, then reload this page.";

/// How a failed `submit_code` is judged, from the error alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Judged {
    /// The box's own words (ours typed as [`BoxError::Box`], a Go spoke's untyped): it refused
    /// the code or did not finish signing in.
    Refused,
    /// The host failed: Docker unreachable, a backend error, the spoke unreachable.
    Host,
    /// Anything else (the box gone, a refused argument).
    Other,
}

fn judge(err: &BoxError) -> Judged {
    match err {
        BoxError::Box(_) => Judged::Refused,
        BoxError::Remote(r) if r.kind.is_none() => Judged::Refused,
        BoxError::Unavailable(_) | BoxError::Backend(_) => Judged::Host,
        e if e.kind() == Some(ErrorKind::Unavailable) => Judged::Host,
        _ => Judged::Other,
    }
}

impl Hub {
    fn page_of(&self, s: &Session, state: PageState, notice: Option<String>) -> ActivationPage {
        let expiry = self.expiry(s);
        let waits = !matches!(
            state,
            PageState::Ready { .. } | PageState::Stopped { .. } | PageState::Expired
        );
        ActivationPage {
            box_id: s.box_id.clone(),
            spoke: s.spoke.clone(),
            description: s.description.clone(),
            authorize_url: s.authorize_url.clone(),
            state,
            notice,
            expires: waits.then(|| {
                (
                    expiry.at,
                    u64::try_from(expiry.at - expiry.now).unwrap_or(0),
                )
            }),
        }
    }

    /// The page of a session as stored: expired once `--auth-ttl` passed unactivated.
    fn stored_page(&self, s: &Session) -> ActivationPage {
        let state = match s.status {
            SessionStatus::Ready => PageState::Ready {
                session_url: s.session_url.clone(),
            },
            _ if s.stopped => PageState::Stopped {
                message: s.error.clone(),
            },
            _ if self.expiry(s).passed() => PageState::Expired,
            SessionStatus::Pending => PageState::Pending,
            SessionStatus::Error => PageState::Error {
                message: s.error.clone(),
            },
        };
        self.page_of(s, state, None)
    }

    fn already_ready(&self, s: &Session) -> ActivationPage {
        let note = "This box is already activated, so the code was not sent again.";
        let mut page = self.stored_page(s);
        page.notice = Some(note.into());
        page
    }

    fn unusable(&self, s: &Session, message: impl Into<String>) -> ActivationPage {
        let message = message.into();
        self.page_of(s, PageState::Unusable { message }, None)
    }

    /// The page of a reaped box whose link `token` was, while the hub remembers it.
    fn reaped_page(&self, token: &str) -> Option<ActivationPage> {
        if !is_hex_64(token) {
            return None;
        }
        let hash = sha256_hex(token.as_bytes());
        let r = self.reaped.by_token_hash(&hash, crate::util::unix_now())?;
        Some(ActivationPage {
            box_id: r.box_id,
            spoke: r.spoke,
            description: String::new(),
            authorize_url: String::new(),
            state: PageState::Expired,
            notice: None,
            expires: None,
        })
    }
}

/// Why `code` (trimmed) cannot be sent at all, in the page's words; `None` when it can.
/// The box layer's own rule, checked here so nothing unusable reaches the box.
fn unusable_code(code: &str) -> Option<String> {
    if code.is_empty() {
        return Some("Enter the code shown after you signed in, then press Activate.".into());
    }
    crate::boxes::validate_code(code).err().map(|_| {
        format!(
            "That is not a code: paste only the code the sign-in page shows (one line, at most {} characters).",
            crate::boxes::MAX_CODE_BYTES
        )
    })
}

impl Hub {
    /// The activation page for `token`; `None` for an unknown or malformed token.
    ///
    /// # Errors
    /// The state file.
    pub fn activation_page(&self, token: &str) -> Result<Option<ActivationPage>, HubError> {
        Ok(match self.ledger.by_token(token)? {
            Some(s) => Some(self.stored_page(&s)),
            None => self.reaped_page(token),
        })
    }

    /// Feeds `code` to the box behind `token`; `None` for an unknown or malformed token. The
    /// code is never logged and never stored.
    ///
    /// # Errors
    /// The state file.
    pub fn activate(&self, token: &str, code: &str) -> Result<Option<ActivationPage>, HubError> {
        self.activate_as(token, code, None)
    }

    /// [`Hub::activate`] by a signed-in person, whose email is recorded on the session.
    ///
    /// # Errors
    /// The state file.
    pub fn activate_as(
        &self,
        token: &str,
        code: &str,
        activated_by: Option<&str>,
    ) -> Result<Option<ActivationPage>, HubError> {
        let Some(s) = self.ledger.by_token(token)? else {
            return Ok(self.reaped_page(token));
        };
        // Ready, stopped or expired: nothing to send the code to.
        let stored = self.stored_page(&s);
        if s.status == SessionStatus::Ready {
            return Ok(Some(self.already_ready(&s)));
        }
        if matches!(stored.state, PageState::Stopped { .. } | PageState::Expired) {
            return Ok(Some(stored));
        }
        let code = code.trim();
        if let Some(message) = unusable_code(code) {
            return Ok(Some(self.unusable(&s, message)));
        }
        let Some(_claim) = self.ledger.claim_activation(&s) else {
            return Ok(Some(self.unusable(&s, ANOTHER_RUNNING)));
        };
        // Read again under the claim: a submission that finished between the first read and
        // the claim may have activated the box already.
        let Some(s) = self.ledger.by_token(token)? else {
            return Ok(self.reaped_page(token));
        };
        if s.status == SessionStatus::Ready {
            return Ok(Some(self.already_ready(&s)));
        }
        let manager = match self.router.manager(&s.spoke) {
            Ok(m) => m,
            Err(e) => {
                self.router.metrics().activation(Outcome::Error);
                let message = e.to_string();
                return Ok(Some(self.page_of(
                    &s,
                    PageState::HostTrouble { message },
                    None,
                )));
            }
        };
        self.ledger.record_code(&s.container_id, code)?;
        let submitted = self.router.verb_judged(
            "submit_code",
            || manager.submit_code(&s.container_id, code),
            |e| judge(e) != Judged::Refused,
        );
        let page = match submitted {
            Ok(session_url) => {
                self.ledger
                    .mark_ready(&s.container_id, &session_url, activated_by)?;
                self.router.metrics().activation(Outcome::Ok);
                log::info!("box {:?} on spoke {:?} activated", s.box_id, s.spoke);
                self.page_of(&s, PageState::Ready { session_url }, None)
            }
            Err(err) if judge(&err) == Judged::Host => {
                self.router.metrics().activation(Outcome::Error);
                let message = err.to_string().replace(code, "[code hidden]");
                log::warn!(
                    "activation of box {:?} on spoke {:?}: the host failed: {}",
                    s.box_id,
                    s.spoke,
                    scrub(&message, &[], &[])
                );
                self.page_of(&s, PageState::HostTrouble { message }, None)
            }
            Err(err) => {
                self.router.metrics().activation(match judge(&err) {
                    Judged::Refused => Outcome::BadCode,
                    _ => Outcome::Error,
                });
                self.code_failed(&s, manager.as_ref(), code, &err)?
            }
        };
        Ok(Some(page))
    }

    /// After the box refused `code`: records the error with the newest sign-in link the box
    /// printed (read back through the `logs` verb, so it works on any spoke).
    fn code_failed(
        &self,
        s: &Session,
        manager: &dyn BoxManager,
        code: &str,
        err: &BoxError,
    ) -> Result<ActivationPage, HubError> {
        let message = err.to_string().replace(code, "[code hidden]");
        // The page shows the person their box's words; the log gets them without any
        // sign-in link (a spoke other than ours may quote one).
        log::info!(
            "activation of box {:?} on spoke {:?} failed: {}",
            s.box_id,
            s.spoke,
            scrub(&message, &[], &[])
        );
        // A box that is no longer running (or no longer listed) takes no other code.
        let stopped_now = || match self.router.list_on(&s.spoke) {
            Some(Ok(list)) => Some(
                !list
                    .iter()
                    .any(|b| s.container_id.same_box(&b.container_id) && b.state == "running"),
            ),
            _ => None,
        };
        let mut stopped = stopped_now() == Some(true);
        let mut fresh = if stopped {
            None
        } else {
            self.router
                .verb("logs", || manager.logs(&s.container_id, FRESH_LINK_TAIL))
                .ok()
                .and_then(|logs| newest_authorize_url(&logs))
        };
        // No new sign-in link: a box whose login does not loop (a Go spoke's) may be on its
        // way down; give it a moment to stop before offering the old link again.
        if !stopped && fresh.as_deref().is_none_or(|f| f == s.authorize_url) {
            for _ in 0..STOP_POLLS {
                std::thread::sleep(STOP_POLL);
                match stopped_now() {
                    Some(true) => {
                        stopped = true;
                        fresh = None;
                        break;
                    }
                    Some(false) => {}
                    None => break,
                }
            }
        }
        // A racing submission may have activated the box meanwhile (this code then failed as
        // "already activated"): the ledger keeps it ready and hands it back.
        if let Some(ready) =
            self.ledger
                .mark_failed(&s.container_id, &message, fresh.clone(), stopped)?
        {
            return Ok(self.already_ready(&ready));
        }
        if stopped {
            log::info!(
                "box {:?} on spoke {:?} stopped after a failed code; only a new box helps",
                s.box_id,
                s.spoke
            );
            return Ok(self.page_of(s, PageState::Stopped { message }, None));
        }
        let mut page = self.page_of(s, PageState::Error { message }, None);
        if let Some(url) = fresh {
            page.authorize_url = url;
        }
        Ok(page)
    }
}
