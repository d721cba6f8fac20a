//! The activation page's logic: find the session behind a page token, feed a code to the box,
//! record ready or error. The code is never logged and never stored; after a failed code the
//! newest sign-in link is read back from the box's logs (the `logs` verb, so it works on any
//! spoke) and offered again. One activation per box runs at a time.

use super::redact::newest_authorize_url;
use super::{Hub, HubError, MAX_CODES_PER_BOX};
use crate::store::{Session, SessionStatus};
use crate::util::secret::sha256_hex;

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

/// Removes an activation-in-progress mark when dropped.
struct Activating<'a> {
    hub: &'a Hub,
    container_id: String,
}

impl Drop for Activating<'_> {
    fn drop(&mut self) {
        self.hub.volatile().activating.remove(&self.container_id);
    }
}

impl Hub {
    fn session_by_token(&self, token: &str) -> Result<Option<Session>, HubError> {
        if !crate::util::secret::is_hex_64(token) {
            return Ok(None);
        }
        let hash = sha256_hex(token.as_bytes());
        let state = self.store.load()?;
        Ok(state
            .sessions
            .iter()
            .find(|s| s.has_token_hash(&hash))
            .cloned())
    }

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
        Self::page_of(s, Self::stored_state(s), Some(note.into()))
    }

    /// The activation page for `token`; `None` for an unknown or malformed token.
    ///
    /// # Errors
    /// The state file.
    pub fn activation_page(&self, token: &str) -> Result<Option<ActivationPage>, HubError> {
        Ok(self
            .session_by_token(token)?
            .map(|s| Self::page_of(&s, Self::stored_state(&s), None)))
    }

    /// Feeds `code` to the box behind `token`; `None` for an unknown or malformed token. The
    /// code is never logged and never stored.
    ///
    /// # Errors
    /// The state file.
    pub fn activate(&self, token: &str, code: &str) -> Result<Option<ActivationPage>, HubError> {
        let Some(s) = self.session_by_token(token)? else {
            return Ok(None);
        };
        if s.status == SessionStatus::Ready {
            return Ok(Some(Self::already_ready(&s)));
        }
        let code = code.trim();
        let unusable = if code.is_empty() {
            Some("Enter the code shown after you signed in, then press Activate.".to_string())
        } else {
            // The box layer's own rule, checked here so the person gets the page's wording and
            // nothing reaches the box.
            crate::boxes::validate_code(code).err().map(|_| {
                format!(
                    "That is not a code: paste only the code the sign-in page shows (one line, at most {} characters).",
                    crate::boxes::MAX_CODE_BYTES
                )
            })
        };
        if let Some(message) = unusable {
            return Ok(Some(Self::page_of(
                &s,
                PageState::Unusable { message },
                None,
            )));
        }
        let started = {
            let mut v = self.volatile();
            let free = !v.activating.contains_key(&s.container_id);
            if free {
                v.activating.insert(s.container_id.clone(), s.spoke.clone());
            }
            free
        };
        if !started {
            let message =
                "Another activation of this box is running; wait a moment, then reload this page.";
            return Ok(Some(Self::page_of(
                &s,
                PageState::Unusable {
                    message: message.into(),
                },
                None,
            )));
        }
        let _mark = Activating {
            hub: self,
            container_id: s.container_id.clone(),
        };
        // Read again under the mark: a submission that finished between the first read and
        // the mark may have activated the box already.
        let Some(s) = self.session_by_token(token)? else {
            return Ok(None);
        };
        if s.status == SessionStatus::Ready {
            return Ok(Some(Self::already_ready(&s)));
        }
        {
            let mut v = self.volatile();
            let codes = v.codes.entry(s.container_id.clone()).or_default();
            if codes.len() >= MAX_CODES_PER_BOX {
                codes.remove(0);
            }
            codes.push(code.to_string());
        }
        // Before the box sees it, so its echo is hidden even if this process dies meanwhile.
        let (id, hash) = (s.container_id.clone(), sha256_hex(code.as_bytes()));
        self.store.update(|state| {
            if let Some(x) = state.sessions.iter_mut().find(|x| x.container_id == id) {
                if x.code_hashes.len() >= MAX_CODES_PER_BOX {
                    x.code_hashes.remove(0);
                }
                x.code_hashes.push(hash);
            }
        })?;
        let manager = match self.manager(&s.spoke) {
            Ok(m) => m,
            Err(e) => {
                let message = e.to_string();
                return Ok(Some(Self::page_of(
                    &s,
                    PageState::Unusable { message },
                    None,
                )));
            }
        };
        match self.verb("submit_code", || manager.submit_code(&s.container_id, code)) {
            Ok(session_url) => {
                let (id, url) = (s.container_id.clone(), session_url.clone());
                self.store.update(|state| {
                    if let Some(x) = state.sessions.iter_mut().find(|x| x.container_id == id) {
                        x.status = SessionStatus::Ready;
                        x.session_url = url;
                        x.error.clear();
                    }
                })?;
                log::info!("box {:?} on spoke {:?} activated", s.box_id, s.spoke);
                Ok(Some(Self::page_of(
                    &s,
                    PageState::Ready { session_url },
                    None,
                )))
            }
            Err(err) => {
                let message = err.to_string().replace(code, "[code hidden]");
                // The page shows the person their box's words; the log gets them without any
                // sign-in link (a spoke other than ours may quote one).
                log::info!(
                    "activation of box {:?} on spoke {:?} failed: {}",
                    s.box_id,
                    s.spoke,
                    super::redact::scrub(&message, &[], &[])
                );
                let fresh = self
                    .verb("logs", || manager.logs(&s.container_id, FRESH_LINK_TAIL))
                    .ok()
                    .and_then(|logs| newest_authorize_url(&logs));
                let (id, msg) = (s.container_id.clone(), message.clone());
                let fresh_url = fresh.clone();
                // A racing submission may have activated the box meanwhile (this code then
                // failed as "already activated"): a ready session is never turned back.
                let now_ready = self.store.update(|state| {
                    let x = state.sessions.iter_mut().find(|x| x.container_id == id)?;
                    if x.status == SessionStatus::Ready {
                        return Some(x.clone());
                    }
                    x.status = SessionStatus::Error;
                    x.error = msg;
                    if let Some(url) = fresh_url {
                        x.authorize_url = url;
                    }
                    None
                })?;
                if let Some(ready) = now_ready {
                    return Ok(Some(Self::already_ready(&ready)));
                }
                let mut page = Self::page_of(&s, PageState::Error { message }, None);
                if let Some(url) = fresh {
                    page.authorize_url = url;
                }
                Ok(Some(page))
            }
        }
    }
}
