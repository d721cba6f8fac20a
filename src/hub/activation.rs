//! The activation page's logic: find the session behind a page token, feed a code to the box,
//! record ready or error. The code is never logged and never stored; after a failed code the
//! newest sign-in link is read back from the box's logs (the `logs` verb, so it works on any
//! spoke) and offered again. One activation per box runs at a time (the ledger's claim).

use super::redact::{newest_authorize_url, scrub};
use super::{Hub, HubError};
use crate::boxes::{BoxError, BoxManager};
use crate::store::{Session, SessionStatus};

/// Log lines read back to find a fresh sign-in link after a failed code.
const FRESH_LINK_TAIL: usize = 200;

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
        /// What to tell the person.
        message: String,
    },
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
}

/// What the page says when another activation of the same box holds the claim.
const ANOTHER_RUNNING: &str =
    "Another activation of this box is running; wait a moment, then reload this page.";

fn page_of(s: &Session, state: PageState, notice: Option<String>) -> ActivationPage {
    ActivationPage {
        box_id: s.box_id.clone(),
        spoke: s.spoke.clone(),
        description: s.description.clone(),
        authorize_url: s.authorize_url.clone(),
        state,
        notice,
    }
}

fn stored_state(s: &Session) -> PageState {
    match s.status {
        SessionStatus::Pending => PageState::Pending,
        SessionStatus::Ready => PageState::Ready {
            session_url: s.session_url.clone(),
        },
        SessionStatus::Error => PageState::Error {
            message: s.error.clone(),
        },
    }
}

fn already_ready(s: &Session) -> ActivationPage {
    let note = "This box is already activated, so the code was not sent again.";
    page_of(s, stored_state(s), Some(note.into()))
}

fn unusable(s: &Session, message: impl Into<String>) -> ActivationPage {
    let message = message.into();
    page_of(s, PageState::Unusable { message }, None)
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
        Ok(self
            .ledger
            .by_token(token)?
            .map(|s| page_of(&s, stored_state(&s), None)))
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
            return Ok(None);
        };
        if s.status == SessionStatus::Ready {
            return Ok(Some(already_ready(&s)));
        }
        let code = code.trim();
        if let Some(message) = unusable_code(code) {
            return Ok(Some(unusable(&s, message)));
        }
        let Some(_claim) = self.ledger.claim_activation(&s) else {
            return Ok(Some(unusable(&s, ANOTHER_RUNNING)));
        };
        // Read again under the claim: a submission that finished between the first read and
        // the claim may have activated the box already.
        let Some(s) = self.ledger.by_token(token)? else {
            return Ok(None);
        };
        if s.status == SessionStatus::Ready {
            return Ok(Some(already_ready(&s)));
        }
        self.ledger.record_code(&s.container_id, code)?;
        let manager = match self.router.manager(&s.spoke) {
            Ok(m) => m,
            Err(e) => return Ok(Some(unusable(&s, e.to_string()))),
        };
        let submitted = self
            .router
            .verb("submit_code", || manager.submit_code(&s.container_id, code));
        let page = match submitted {
            Ok(session_url) => {
                self.ledger
                    .mark_ready(&s.container_id, &session_url, activated_by)?;
                log::info!("box {:?} on spoke {:?} activated", s.box_id, s.spoke);
                page_of(&s, PageState::Ready { session_url }, None)
            }
            Err(err) => self.code_failed(&s, manager.as_ref(), code, &err)?,
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
        let fresh = self
            .router
            .verb("logs", || manager.logs(&s.container_id, FRESH_LINK_TAIL))
            .ok()
            .and_then(|logs| newest_authorize_url(&logs));
        // A racing submission may have activated the box meanwhile (this code then failed as
        // "already activated"): the ledger keeps it ready and hands it back.
        if let Some(ready) = self
            .ledger
            .mark_failed(&s.container_id, &message, fresh.clone())?
        {
            return Ok(already_ready(&ready));
        }
        let mut page = page_of(s, PageState::Error { message }, None);
        if let Some(url) = fresh {
            page.authorize_url = url;
        }
        Ok(page)
    }
}
