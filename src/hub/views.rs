//! What the MCP tools report about boxes: plain serde views built from a session, a listed box
//! or a destroy, with one [`BoxStatus`] for every place a box's status is shown.
//!
//! No I/O and no secrets here: a view is built from a session snapshot the ledger handed out and
//! from text the ledger already scrubbed; the authorize URL of a session never enters a view.

use std::fmt;

use serde::Serialize;

use crate::boxes::{BoxInfo, Phase};
use crate::store::{Session, SessionStatus};

/// Where a box stands, as a model reads it (`status` in every view).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BoxStatus {
    /// Waiting for the person's code.
    Pending,
    /// The last code failed; still waiting for one.
    Error,
    /// Activated.
    Ready,
    /// Just destroyed (only in `destroy_llmbox`'s answer).
    Destroyed,
}

impl BoxStatus {
    /// The word on the wire.
    pub fn as_str(&self) -> &'static str {
        match self {
            BoxStatus::Pending => "pending",
            BoxStatus::Error => "error",
            BoxStatus::Ready => "ready",
            BoxStatus::Destroyed => "destroyed",
        }
    }

    /// The status of a box with this session.
    pub fn of_session(status: SessionStatus) -> Self {
        match status {
            SessionStatus::Pending => BoxStatus::Pending,
            SessionStatus::Error => BoxStatus::Error,
            SessionStatus::Ready => BoxStatus::Ready,
        }
    }

    /// The status of a box as its spoke reports it (no session known).
    pub fn of_phase(phase: Phase) -> Self {
        match phase {
            Phase::Pending => BoxStatus::Pending,
            Phase::Ready => BoxStatus::Ready,
        }
    }

    /// A listed box: its session's word while the box still waits (so `error` shows), else
    /// what the spoke says (a box activated elsewhere, or with no session, is as listed).
    pub fn listed(phase: Phase, session: Option<&Session>) -> Self {
        match session {
            Some(s) if s.status != SessionStatus::Ready && phase == Phase::Pending => {
                BoxStatus::of_session(s.status)
            }
            _ => BoxStatus::of_phase(phase),
        }
    }
}

impl fmt::Display for BoxStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for BoxStatus {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<str> for BoxStatus {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

/// One box as `create_llmbox` / `get_llmbox` / `destroy_llmbox` report it. The names a Go-era
/// chatbot reads are Go llmbox's: `auth_url`, `instructions`, `box_id`, `container_id` (12
/// characters), `status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BoxView {
    /// The caller's box id.
    pub box_id: String,
    /// The spoke holding it.
    pub spoke: String,
    /// Where it stands.
    pub status: BoxStatus,
    /// The activation page to hand to the person, while the box waits and its link stands.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_url: Option<String>,
    /// When the link expires (RFC 3339, UTC), while the box waits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Seconds left until then (0 once passed), while the box waits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in_seconds: Option<u64>,
    /// The remote-control session URL, once ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_url: Option<String>,
    /// The last activation error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Short container id.
    pub container_id: String,
    /// Free text from create.
    pub description: String,
    /// Created at, unix seconds.
    pub created: i64,
    /// What the caller should do next, in a sentence for a model.
    pub instructions: String,
    /// The signed-in person who activated the box (sign-in configured only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activated_by: Option<String>,
}

/// When a waiting box's link expires, and the time now (unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Expiry {
    /// The link's end.
    pub(super) at: i64,
    /// Now.
    pub(super) now: i64,
}

impl Expiry {
    /// True once the link's time is up.
    pub(super) fn passed(&self) -> bool {
        self.now >= self.at
    }

    fn left(&self) -> u64 {
        u64::try_from(self.at - self.now).unwrap_or(0)
    }
}

impl BoxView {
    /// A box created through this hub. `auth_url` is the page link (handed in while the box is
    /// not ready); `scrubbed_error` is the session's error with typed codes hidden; `expiry`
    /// is its link's.
    pub(super) fn of_session(
        s: &Session,
        auth_url: Option<String>,
        scrubbed_error: String,
        expiry: Expiry,
    ) -> BoxView {
        let ready = s.status == SessionStatus::Ready;
        let expires = crate::util::time::rfc3339_secs(expiry.at);
        let waiting = !ready && !s.stopped;
        let open = waiting && !expiry.passed();
        let instructions = if ready {
            "The box is ready: give the person session_url. Use exec_llmbox to run commands and get_llmbox_logs to read its output.".to_string()
        } else if s.stopped {
            "The box stopped after a sign-in code failed and cannot take another one, so its link no longer helps. Call destroy_llmbox on it, then create_llmbox a new box and give the person the new auth_url.".to_string()
        } else if expiry.passed() {
            format!(
                "Nobody activated the box in time: its link expired at {expires} and the box is about to be reaped. Call destroy_llmbox on it, then create_llmbox a new box and give the person the new auth_url."
            )
        } else if s.status == SessionStatus::Error {
            format!(
                "The last code did not work; the page shows why and offers a fresh sign-in link. Ask the person to open auth_url again before it expires at {expires} (in {} s), then call get_llmbox.",
                expiry.left()
            )
        } else {
            format!(
                "Give the person the auth_url (never anything else): they sign in with their own Claude account there and paste the code before the link expires at {expires} (in {} s). Then call get_llmbox until status is ready.",
                expiry.left()
            )
        };
        BoxView {
            box_id: s.box_id.clone(),
            spoke: s.spoke.clone(),
            status: BoxStatus::of_session(s.status),
            auth_url: auth_url.filter(|_| open),
            expires_at: waiting.then_some(expires),
            expires_in_seconds: waiting.then(|| expiry.left()),
            session_url: ready.then(|| s.session_url.clone()),
            error: (!scrubbed_error.is_empty() && !ready).then_some(scrubbed_error),
            container_id: s.container_id.short().to_string(),
            description: s.description.clone(),
            created: s.created,
            instructions,
            activated_by: s.activated_by.clone().filter(|_| ready),
        }
    }

    /// A box made outside this hub (no session), as `spoke` listed it.
    pub(super) fn of_listed(info: BoxInfo, spoke: String) -> BoxView {
        BoxView {
            status: BoxStatus::of_phase(info.phase),
            instructions: match info.phase {
                Phase::Ready => "The box is ready; use exec_llmbox and get_llmbox_logs.".into(),
                Phase::Pending => "This box was not created through this hub, so it has no activation page here; destroy it and create a new one.".into(),
            },
            box_id: info.box_id,
            spoke,
            auth_url: None,
            expires_at: None,
            expires_in_seconds: None,
            session_url: None,
            error: None,
            container_id: info.container_id.short().to_string(),
            description: info.description,
            created: info.created,
            activated_by: None,
        }
    }

    /// What `destroy_llmbox` answers, described by the session or the listing it found.
    pub(super) fn destroyed(
        box_id: &str,
        spoke: String,
        container_id: &str,
        description: String,
        created: i64,
    ) -> BoxView {
        BoxView {
            box_id: box_id.to_string(),
            spoke,
            status: BoxStatus::Destroyed,
            auth_url: None,
            expires_at: None,
            expires_in_seconds: None,
            session_url: None,
            error: None,
            container_id: crate::boxes::short_id(container_id).to_string(),
            description,
            created,
            instructions: "The box and its files are gone; create_llmbox makes a new one.".into(),
            activated_by: None,
        }
    }
}

/// One box in `list_llmboxes`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListedBox {
    /// The caller's box id (empty for a box made without one).
    pub box_id: String,
    /// The spoke holding it.
    pub spoke: String,
    /// `pending`, `ready` or `error`.
    pub status: BoxStatus,
    /// Short container id.
    pub container_id: String,
    /// Image.
    pub image: String,
    /// Docker's state (`running`, `exited`, …).
    pub state: String,
    /// Free text from create.
    pub description: String,
    /// Created at, unix seconds.
    pub created: i64,
}

impl ListedBox {
    /// A listed box with the session of the same box, if the hub has one.
    pub(super) fn new(b: BoxInfo, session: Option<&Session>) -> ListedBox {
        ListedBox {
            status: BoxStatus::listed(b.phase, session),
            box_id: b.box_id,
            spoke: b.spoke,
            container_id: b.container_id.short().to_string(),
            image: b.image,
            state: b.state,
            description: b.description,
            created: b.created,
        }
    }
}

/// A spoke whose `list` failed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpokeFailure {
    /// The spoke.
    pub spoke: String,
    /// Why.
    pub error: String,
}

/// What `list_llmboxes` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListView {
    /// Boxes on every spoke that answered.
    pub boxes: Vec<ListedBox>,
    /// Spokes that are away or failed to answer; their boxes are missing above.
    pub unreachable: Vec<SpokeFailure>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(status: SessionStatus) -> Session {
        Session {
            token_hash: "h".into(),
            container_id: "0123456789abcdef0123".into(),
            spoke: "edge".into(),
            box_id: "web".into(),
            description: "d".into(),
            authorize_url: "https://claude.com/cai/oauth/authorize?secret".into(),
            status,
            session_url: "https://claude.ai/code/s".into(),
            error: "old".into(),
            hook_state: None,
            created: 7,
            more_token_hashes: Vec::new(),
            code_hashes: Vec::new(),
            activated_by: None,
            stopped: false,
        }
    }

    #[test]
    fn status_words_are_the_wire_words() {
        for (status, word) in [
            (BoxStatus::Pending, "pending"),
            (BoxStatus::Error, "error"),
            (BoxStatus::Ready, "ready"),
            (BoxStatus::Destroyed, "destroyed"),
        ] {
            assert_eq!(
                serde_json::to_value(status).expect("json"),
                serde_json::json!(word)
            );
            assert_eq!(status, word);
        }
    }

    #[test]
    fn a_listed_box_shows_its_sessions_error_only_while_it_waits() {
        let failed = session(SessionStatus::Error);
        assert_eq!(
            BoxStatus::listed(Phase::Pending, Some(&failed)),
            BoxStatus::Error
        );
        assert_eq!(
            BoxStatus::listed(Phase::Ready, Some(&failed)),
            BoxStatus::Ready
        );
        assert_eq!(BoxStatus::listed(Phase::Pending, None), BoxStatus::Pending);
    }

    const OPEN: Expiry = Expiry { at: 307, now: 7 };

    #[test]
    fn a_ready_view_has_the_session_url_and_neither_page_nor_error() {
        let v = BoxView::of_session(
            &session(SessionStatus::Ready),
            Some("http://hub/auth/t".into()),
            "old".into(),
            OPEN,
        );
        assert_eq!(v.status, BoxStatus::Ready);
        assert_eq!(v.session_url.as_deref(), Some("https://claude.ai/code/s"));
        assert_eq!((&v.auth_url, &v.error), (&None, &None));
        assert_eq!((&v.expires_at, v.expires_in_seconds), (&None, None));
        assert_eq!(v.container_id, "0123456789ab");
        let text = serde_json::to_string(&v).expect("json");
        assert!(!text.contains("authorize"), "{text}");
    }

    #[test]
    fn a_waiting_view_has_the_page_its_expiry_and_the_scrubbed_error_but_no_session_url() {
        let v = BoxView::of_session(
            &session(SessionStatus::Error),
            Some("http://hub/auth/t".into()),
            "scrubbed".into(),
            OPEN,
        );
        assert_eq!(v.auth_url.as_deref(), Some("http://hub/auth/t"));
        assert_eq!(v.error.as_deref(), Some("scrubbed"));
        assert_eq!(v.session_url, None);
        assert_eq!(v.expires_at.as_deref(), Some("1970-01-01T00:05:07Z"));
        assert_eq!(v.expires_in_seconds, Some(300));
        let json = serde_json::to_value(&v).expect("json");
        for key in [
            "auth_url",
            "instructions",
            "box_id",
            "container_id",
            "status",
        ] {
            assert!(json.get(key).is_some(), "{key} missing: {json}");
        }
        for gone in ["activation_url", "next_step"] {
            assert!(json.get(gone).is_none(), "{gone} still there: {json}");
        }
    }

    #[test]
    fn an_expired_or_stopped_box_offers_no_link_and_says_to_make_a_new_one() {
        let expired = BoxView::of_session(
            &session(SessionStatus::Pending),
            Some("http://hub/auth/t".into()),
            String::new(),
            Expiry { at: 307, now: 400 },
        );
        assert_eq!(expired.auth_url, None);
        assert_eq!(expired.expires_in_seconds, Some(0));
        assert!(
            expired
                .instructions
                .contains("expired at 1970-01-01T00:05:07Z"),
            "{}",
            expired.instructions
        );
        let mut s = session(SessionStatus::Error);
        s.stopped = true;
        let stopped = BoxView::of_session(&s, Some("http://hub/auth/t".into()), "x".into(), OPEN);
        assert_eq!((&stopped.auth_url, &stopped.expires_at), (&None, &None));
        assert!(
            stopped.instructions.contains("stopped"),
            "{}",
            stopped.instructions
        );
        assert!(
            stopped.instructions.contains("create_llmbox"),
            "{}",
            stopped.instructions
        );
    }
}
