//! A bounded memory of boxes reaped before anyone activated them, so `get_llmbox` can say "it
//! was reaped at T" instead of "no box exists", and the box's page can say "this link has
//! expired" (410) instead of "unknown link" (404).
//!
//! In memory only, at most [`MAX_REAPED`] boxes for at most [`KEEP_REAPED`]: past either bound
//! the oldest are forgotten and the answers fall back to "unknown". Page tokens are kept as the
//! hashes the state file already held; nothing secret is added.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::store::Session;

/// Most reaped boxes remembered.
pub(crate) const MAX_REAPED: usize = 256;
/// How long (seconds) a reaped box is remembered.
pub(crate) const KEEP_REAPED: i64 = 24 * 60 * 60;

/// One reaped box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReapedBox {
    /// Its box id.
    pub(crate) box_id: String,
    /// The spoke it was on.
    pub(crate) spoke: String,
    /// When its link expired (unix seconds).
    pub(crate) expired_at: i64,
    /// When the hub saw it reaped (unix seconds).
    pub(crate) reaped_at: i64,
    /// The SHA-256 hex of every page token of its session.
    token_hashes: Vec<String>,
}

/// The memory (one short mutex; never held across I/O).
#[derive(Default)]
pub(crate) struct Reaped {
    boxes: Mutex<VecDeque<ReapedBox>>,
}

impl Reaped {
    fn lock(&self, now: i64) -> std::sync::MutexGuard<'_, VecDeque<ReapedBox>> {
        let mut boxes = self.boxes.lock().unwrap_or_else(|e| e.into_inner());
        while boxes
            .front()
            .is_some_and(|b| now - b.reaped_at > KEEP_REAPED)
        {
            boxes.pop_front();
        }
        boxes
    }

    /// Remembers session `s`, whose link expired at `expired_at`, as reaped at `now`.
    pub(crate) fn record(&self, s: &Session, expired_at: i64, now: i64) {
        let mut boxes = self.lock(now);
        boxes.retain(|b| !b.box_id.eq_ignore_ascii_case(&s.box_id));
        if boxes.len() >= MAX_REAPED {
            boxes.pop_front();
        }
        let mut token_hashes = vec![s.token_hash.clone()];
        token_hashes.extend(s.more_token_hashes.iter().cloned());
        boxes.push_back(ReapedBox {
            box_id: s.box_id.clone(),
            spoke: s.spoke.clone(),
            expired_at,
            reaped_at: now,
            token_hashes,
        });
    }

    /// Forgets `box_id` (a new box took the id).
    pub(crate) fn forget(&self, box_id: &str, now: i64) {
        self.lock(now)
            .retain(|b| !b.box_id.eq_ignore_ascii_case(box_id));
    }

    /// The reaped box with this id, if remembered.
    pub(crate) fn by_box(&self, box_id: &str, now: i64) -> Option<ReapedBox> {
        self.lock(now)
            .iter()
            .find(|b| b.box_id.eq_ignore_ascii_case(box_id))
            .cloned()
    }

    /// The reaped box whose page a token with this hash opened, if remembered.
    pub(crate) fn by_token_hash(&self, hash: &str, now: i64) -> Option<ReapedBox> {
        self.lock(now)
            .iter()
            .find(|b| b.token_hashes.iter().any(|h| h == hash))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SessionStatus;

    fn session(box_id: &str, token_hash: &str) -> Session {
        Session {
            token_hash: token_hash.into(),
            container_id: "0123456789abcdef".into(),
            spoke: "edge".into(),
            box_id: box_id.into(),
            description: String::new(),
            authorize_url: String::new(),
            status: SessionStatus::Pending,
            session_url: String::new(),
            error: String::new(),
            hook_state: None,
            created: 0,
            more_token_hashes: vec![format!("{token_hash}-2")],
            code_hashes: Vec::new(),
            activated_by: None,
            stopped: false,
        }
    }

    #[test]
    fn remembers_by_box_and_by_any_token_hash_until_forgotten() {
        let r = Reaped::default();
        r.record(&session("web", "h1"), 300, 330);
        let got = r.by_box("WEB", 340).expect("by box");
        assert_eq!(
            (got.expired_at, got.reaped_at, got.spoke.as_str()),
            (300, 330, "edge")
        );
        assert_eq!(r.by_token_hash("h1", 340), Some(got.clone()));
        assert_eq!(r.by_token_hash("h1-2", 340), Some(got));
        assert_eq!(r.by_token_hash("h9", 340), None);
        r.forget("web", 350);
        assert_eq!(r.by_box("web", 350), None);
    }

    #[test]
    fn is_bounded_in_count_and_in_age() {
        let r = Reaped::default();
        for i in 0..MAX_REAPED + 10 {
            r.record(&session(&format!("b{i}"), &format!("h{i}")), 0, 10);
        }
        assert_eq!(r.by_box("b0", 10), None, "the oldest went first");
        assert!(r.by_box(&format!("b{}", MAX_REAPED + 9), 10).is_some());
        assert_eq!(r.boxes.lock().expect("lock").len(), MAX_REAPED);
        assert_eq!(
            r.by_box("b20", 10 + KEEP_REAPED + 1),
            None,
            "older than a day"
        );
        assert!(r.boxes.lock().expect("lock").is_empty());
    }
}
