//! The ledger: the hub's sessions (one per box created through the hub, in the state file) and
//! every secret tied to them. It is the only code that reads or changes `State::sessions`, holds
//! page tokens or typed codes, or claims a box for a create or an activation. It makes no spoke
//! calls and runs no hooks; the operations compose it with routing.
//!
//! Invariants, each kept here and tested below over a temp store with no spokes:
//! - A page token reaches disk only as its SHA-256. The clear token lives in memory, by
//!   container id, so the link can be repeated; after a restart another token is minted beside
//!   the stored hash, and every token ever handed out keeps opening the page.
//! - A code typed on the activation page is never stored: its hash is written *before* the box
//!   sees it ([`Ledger::record_code`]), so its echo is hidden from logs even if this process dies
//!   meanwhile; the code itself stays in memory (the newest [`MAX_CODES_PER_BOX`]) only to scrub
//!   it from logs and exec output ([`Ledger::scrub`]).
//! - A ready session is never turned back: a failed code arriving after a success leaves it
//!   ready ([`Ledger::mark_failed`]).
//! - Removing a session forgets its token and codes with it.
//! - A box id is claimed for at most one create at a time, hub-wide and case-insensitively; a box
//!   for at most one activation at a time ([`Claim`]).
//!
//! One short mutex guards the in-memory part; it is never held across a state-file write.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use super::HubError;
use super::redact::scrub;
use crate::boxes::{ContainerId, SHORT_LEN};
use crate::store::{Session, SessionStatus, Store, StoreError};
use crate::util::secret::{is_hex_64, random_hex_32, sha256_hex};
use crate::util::unix_now;

/// Most codes remembered per box for redaction (a person retrying many times).
pub const MAX_CODES_PER_BOX: usize = 8;

/// What a new session records: a box the create verb just made.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// Full container id.
    pub container_id: ContainerId,
    /// The spoke holding it.
    pub spoke: String,
    /// The caller's box id.
    pub box_id: String,
    /// Free text.
    pub description: String,
    /// The sign-in link the box printed.
    pub authorize_url: String,
    /// What the create hooks returned, replayed to the destroy hooks.
    pub hook_state: Option<serde_json::Value>,
}

/// In-memory bookkeeping that never reaches disk.
#[derive(Default)]
struct Memory {
    /// Page tokens handed out by this process, by container id.
    tokens: HashMap<ContainerId, String>,
    /// Codes typed for each box, kept only to scrub them from logs and exec output.
    codes: HashMap<ContainerId, Vec<String>>,
    /// Box ids (lowercase) whose create is in flight.
    creating: HashSet<String>,
    /// Boxes with an activation in flight, and the spoke of each.
    activating: HashMap<ContainerId, String>,
}

/// What a [`Claim`] holds.
enum Claimed {
    Create(String),
    Activation(ContainerId),
}

/// A box claimed for one create or one activation; dropping it releases the claim.
pub struct Claim<'a> {
    ledger: &'a Ledger,
    what: Claimed,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut m = self.ledger.memory();
        match &self.what {
            Claimed::Create(key) => {
                m.creating.remove(key);
            }
            Claimed::Activation(id) => {
                m.activating.remove(id);
            }
        }
    }
}

/// The owner of the hub's sessions and their secrets.
pub struct Ledger {
    store: Arc<Store>,
    memory: Mutex<Memory>,
}

fn push_bounded(list: &mut Vec<String>, item: String) {
    if list.len() >= MAX_CODES_PER_BOX {
        list.remove(0);
    }
    list.push(item);
}

impl Ledger {
    /// A ledger over the sessions of `store`.
    pub fn new(store: Arc<Store>) -> Self {
        Ledger {
            store,
            memory: Mutex::new(Memory::default()),
        }
    }

    /// The state file.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    fn memory(&self) -> MutexGuard<'_, Memory> {
        // Plain sets and maps: a panic elsewhere cannot leave them half-updated.
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every session, as stored now.
    ///
    /// # Errors
    /// The state file.
    pub fn sessions(&self) -> Result<Vec<Session>, StoreError> {
        Ok(self.store.load()?.sessions.clone())
    }

    /// The session of `box_id` (case-insensitive).
    ///
    /// # Errors
    /// The state file.
    pub fn by_box(&self, box_id: &str) -> Result<Option<Session>, StoreError> {
        let state = self.store.load()?;
        Ok(state
            .sessions
            .iter()
            .find(|s| s.box_id.eq_ignore_ascii_case(box_id))
            .cloned())
    }

    /// The session whose page `token` opens; `None` for an unknown or malformed token.
    ///
    /// # Errors
    /// The state file.
    pub fn by_token(&self, token: &str) -> Result<Option<Session>, StoreError> {
        if !is_hex_64(token) {
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

    /// Records a pending session for a box just created, with a fresh page token (kept in
    /// memory; only its hash is stored).
    ///
    /// # Errors
    /// The random source or the state file; nothing is recorded then.
    pub fn open(&self, new: NewSession) -> Result<Session, HubError> {
        let token = random_hex_32().map_err(HubError::Random)?;
        let session = Session {
            token_hash: sha256_hex(token.as_bytes()),
            container_id: new.container_id,
            spoke: new.spoke,
            box_id: new.box_id,
            description: new.description,
            authorize_url: new.authorize_url,
            status: SessionStatus::Pending,
            session_url: String::new(),
            error: String::new(),
            hook_state: new.hook_state,
            created: unix_now(),
            more_token_hashes: Vec::new(),
            code_hashes: Vec::new(),
            activated_by: None,
            stopped: false,
        };
        let record = session.clone();
        self.store.update(|state| state.sessions.push(record))?;
        self.memory()
            .tokens
            .insert(session.container_id.clone(), token);
        Ok(session)
    }

    /// The page token to show for a session: the one this process handed out, or a fresh one
    /// whose hash is added beside the stored ones (after a restart the hub knows only hashes).
    ///
    /// # Errors
    /// The random source, the state file, or [`HubError::UnknownBox`] when the session is gone.
    pub fn page_token(&self, session: &Session) -> Result<String, HubError> {
        if let Some(t) = self.memory().tokens.get(&session.container_id) {
            return Ok(t.clone());
        }
        let token = random_hex_32().map_err(HubError::Random)?;
        let hash = sha256_hex(token.as_bytes());
        let found = self.store.update(|state| {
            state
                .sessions
                .iter_mut()
                .find(|s| s.container_id == session.container_id)
                .map(|s| s.more_token_hashes.push(hash))
                .is_some()
        })?;
        if !found {
            return Err(HubError::UnknownBox(session.box_id.clone()));
        }
        self.memory()
            .tokens
            .insert(session.container_id.clone(), token.clone());
        Ok(token)
    }

    /// Remembers a code about to be typed into box `id`: in memory, and its hash on disk, so
    /// its echo is hidden from then on. Call it before the box sees the code.
    ///
    /// # Errors
    /// The state file.
    pub fn record_code(&self, id: &ContainerId, code: &str) -> Result<(), StoreError> {
        push_bounded(
            self.memory().codes.entry(id.clone()).or_default(),
            code.to_string(),
        );
        let hash = sha256_hex(code.as_bytes());
        self.store.update(|state| {
            if let Some(s) = state.sessions.iter_mut().find(|s| s.container_id == *id) {
                push_bounded(&mut s.code_hashes, hash);
            }
        })
    }

    /// Marks box `id` activated at `session_url`.
    ///
    /// # Errors
    /// The state file.
    pub fn mark_ready(
        &self,
        id: &ContainerId,
        session_url: &str,
        activated_by: Option<&str>,
    ) -> Result<(), StoreError> {
        self.store.update(|state| {
            if let Some(s) = state.sessions.iter_mut().find(|s| s.container_id == *id) {
                s.status = SessionStatus::Ready;
                s.session_url = session_url.to_string();
                s.error.clear();
                s.activated_by = activated_by.map(str::to_string);
            }
        })
    }

    /// Records a failed code for box `id`, with the fresh sign-in link when one was found and
    /// whether the box stopped after it — unless the session is ready by now (a racing
    /// submission won): a ready session is never turned back, and is returned instead.
    ///
    /// # Errors
    /// The state file.
    pub fn mark_failed(
        &self,
        id: &ContainerId,
        error: &str,
        fresh_authorize_url: Option<String>,
        stopped: bool,
    ) -> Result<Option<Session>, StoreError> {
        self.store.update(|state| {
            let s = state.sessions.iter_mut().find(|s| s.container_id == *id)?;
            if s.status == SessionStatus::Ready {
                return Some(s.clone());
            }
            s.status = SessionStatus::Error;
            s.error = error.to_string();
            s.stopped = stopped;
            if let Some(url) = fresh_authorize_url {
                s.authorize_url = url;
            }
            None
        })
    }

    /// Removes the sessions matching `pred` and forgets their secrets; returns them (their
    /// destroy hooks are the caller's to run).
    ///
    /// # Errors
    /// The state file; nothing is removed then.
    pub fn remove(&self, pred: impl Fn(&Session) -> bool) -> Result<Vec<Session>, StoreError> {
        let removed = self.store.update(|state| {
            let (gone, kept): (Vec<Session>, Vec<Session>) = std::mem::take(&mut state.sessions)
                .into_iter()
                .partition(|s| pred(s));
            state.sessions = kept;
            gone
        })?;
        let mut m = self.memory();
        for s in &removed {
            m.tokens.remove(&s.container_id);
            m.codes.remove(&s.container_id);
        }
        Ok(removed)
    }

    /// `text` with sign-in links hidden and the codes typed for box `id` (in memory, or known
    /// by hash from `session` after a restart).
    pub fn scrub(&self, id: &ContainerId, session: Option<&Session>, text: &str) -> String {
        let codes = self.memory().codes.get(id).cloned().unwrap_or_default();
        let hashes = session
            .map(|s| s.code_hashes.as_slice())
            .unwrap_or_default();
        scrub(text, &codes, hashes)
    }

    /// Claims `box_id` for one create; `None` while another create of it is in flight.
    pub fn claim_create(&self, box_id: &str) -> Option<Claim<'_>> {
        let key = box_id.to_ascii_lowercase();
        self.memory().creating.insert(key.clone()).then(|| Claim {
            ledger: self,
            what: Claimed::Create(key),
        })
    }

    /// Claims the box of `session` for one activation; `None` while another is in flight.
    pub fn claim_activation(&self, session: &Session) -> Option<Claim<'_>> {
        let id = &session.container_id;
        let mut m = self.memory();
        if m.activating.contains_key(id) {
            return None;
        }
        m.activating.insert(id.clone(), session.spoke.clone());
        Some(Claim {
            ledger: self,
            what: Claimed::Activation(id.clone()),
        })
    }

    /// The spokes where an activation is in flight (the reaper leaves them alone meanwhile).
    pub fn activating_spokes(&self) -> Vec<String> {
        self.memory().activating.values().cloned().collect()
    }
}

/// Drops the sessions of boxes reaped outside the hub (`llmbox reap --state FILE`), given their
/// short (12-character) container ids. Matched by id alone: the reaping host's namespace label
/// need not be the spoke's name (`--local-namespace`), and Docker ids do not repeat. Hooks are
/// not run (the CLI has none). Returns how many sessions were dropped.
///
/// # Errors
/// The state file could not be read or written.
pub fn forget_reaped(store: &Store, short_ids: &[String]) -> Result<usize, StoreError> {
    // Anything shorter than a short id could match boxes it does not name.
    let ids: Vec<&String> = short_ids
        .iter()
        .filter(|id| id.len() >= SHORT_LEN)
        .collect();
    if ids.is_empty() {
        return Ok(0);
    }
    store.update(|state| {
        let before = state.sessions.len();
        state
            .sessions
            .retain(|s| !ids.iter().any(|id| s.container_id.matches(id)));
        before - state.sessions.len()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ledger over a fresh state file in its own temp directory (removed on drop).
    struct Temp {
        dir: std::path::PathBuf,
        ledger: Ledger,
    }

    impl Drop for Temp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn temp(tag: &str) -> Temp {
        let dir = std::env::temp_dir().join(format!(
            "llmbox-ledger-{}-{tag}-{}",
            std::process::id(),
            &random_hex_32().expect("random")[..8]
        ));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let store = Arc::new(Store::open(dir.join("state.json")).expect("store"));
        Temp {
            dir,
            ledger: Ledger::new(store),
        }
    }

    /// The same state file as a restarted hub sees it: nothing in memory.
    fn restarted(t: &Temp) -> Ledger {
        Ledger::new(Arc::new(
            Store::open(t.ledger.store().path()).expect("store"),
        ))
    }

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn new_session(box_id: &str, id: &str) -> NewSession {
        NewSession {
            container_id: ContainerId::new(id),
            spoke: "edge".into(),
            box_id: box_id.into(),
            description: "d".into(),
            authorize_url: "https://claude.com/cai/oauth/authorize?x=1".into(),
            hook_state: None,
        }
    }

    fn on_disk(t: &Temp) -> String {
        std::fs::read_to_string(t.ledger.store().path()).expect("read")
    }

    #[test]
    fn page_tokens_reach_disk_only_as_hashes_and_every_token_keeps_opening_the_page() {
        let t = temp("tokens");
        let s = t.ledger.open(new_session("web", ID)).expect("open");
        let first = t.ledger.page_token(&s).expect("token");
        assert_eq!(t.ledger.page_token(&s).expect("again"), first, "repeated");
        assert!(!on_disk(&t).contains(&first));
        assert!(on_disk(&t).contains(&sha256_hex(first.as_bytes())));

        let later = restarted(&t);
        let second = later.page_token(&s).expect("fresh after a restart");
        assert_ne!(second, first);
        assert!(!on_disk(&t).contains(&second));
        for token in [&first, &second] {
            let found = later.by_token(token).expect("load").expect("opens");
            assert_eq!(found.box_id, "web");
        }
        assert!(later.by_token("not-hex").expect("load").is_none());
        assert!(later.by_token(&"0".repeat(64)).expect("load").is_none());
    }

    #[test]
    fn codes_are_hashed_on_disk_before_the_box_sees_them_and_scrubbed_after_a_restart() {
        let t = temp("codes");
        let s = t.ledger.open(new_session("web", ID)).expect("open");
        t.ledger
            .record_code(&s.container_id, "code-one-secret")
            .expect("record");
        assert!(!on_disk(&t).contains("code-one-secret"));
        let echo = "typed: code-one-secret\n";
        assert!(
            !t.ledger
                .scrub(&s.container_id, None, echo)
                .contains("code-one-secret")
        );

        let later = restarted(&t);
        let stored = later
            .by_box("WEB")
            .expect("load")
            .expect("case-insensitive");
        assert_eq!(
            stored.code_hashes,
            vec![sha256_hex(b"code-one-secret")],
            "the hash was written before any verb ran"
        );
        assert!(
            !later
                .scrub(&s.container_id, Some(&stored), echo)
                .contains("code-one-secret")
        );
    }

    #[test]
    fn only_the_newest_codes_are_kept() {
        let t = temp("bounded");
        let s = t.ledger.open(new_session("web", ID)).expect("open");
        for i in 0..MAX_CODES_PER_BOX + 3 {
            t.ledger
                .record_code(&s.container_id, &format!("code-{i}"))
                .expect("record");
        }
        let stored = t.ledger.by_box("web").expect("load").expect("session");
        assert_eq!(stored.code_hashes.len(), MAX_CODES_PER_BOX);
        assert_eq!(stored.code_hashes[0], sha256_hex(b"code-3"));
    }

    #[test]
    fn a_ready_session_is_never_turned_back_by_a_late_failure() {
        let t = temp("ready");
        let s = t.ledger.open(new_session("web", ID)).expect("open");
        let failed = t.ledger.mark_failed(
            &s.container_id,
            "bad code",
            Some("https://fresh".into()),
            false,
        );
        assert!(failed.expect("store").is_none());
        let stored = t.ledger.by_box("web").expect("load").expect("session");
        assert_eq!(
            (stored.status, stored.authorize_url.as_str()),
            (SessionStatus::Error, "https://fresh")
        );

        t.ledger
            .mark_ready(&s.container_id, "https://claude.ai/code/s", None)
            .expect("ready");
        let late = t
            .ledger
            .mark_failed(&s.container_id, "already activated", None, false);
        let ready = late.expect("store").expect("the ready session comes back");
        assert_eq!(ready.status, SessionStatus::Ready);
        let stored = t.ledger.by_box("web").expect("load").expect("session");
        assert_eq!(
            (stored.status, stored.error.as_str()),
            (SessionStatus::Ready, "")
        );
    }

    #[test]
    fn removing_a_session_forgets_its_token_and_codes() {
        let t = temp("remove");
        let s = t.ledger.open(new_session("web", ID)).expect("open");
        t.ledger
            .open(new_session("db", &"f".repeat(64)))
            .expect("open");
        let token = t.ledger.page_token(&s).expect("token");
        t.ledger
            .record_code(&s.container_id, "the-code")
            .expect("record");
        let gone = t.ledger.remove(|x| x.box_id == "web").expect("remove");
        assert_eq!(gone.len(), 1);
        assert!(t.ledger.by_token(&token).expect("load").is_none());
        assert!(matches!(
            t.ledger.page_token(&s),
            Err(HubError::UnknownBox(_))
        ));
        assert_eq!(
            t.ledger.scrub(&s.container_id, None, "the-code"),
            "the-code"
        );
        assert_eq!(t.ledger.sessions().expect("load").len(), 1);
    }

    #[test]
    fn a_box_id_is_claimed_by_one_create_and_a_box_by_one_activation_at_a_time() {
        let t = temp("claims");
        let first = t.ledger.claim_create("web").expect("free");
        assert!(t.ledger.claim_create("WEB").is_none(), "case-insensitive");
        drop(first);
        assert!(t.ledger.claim_create("web").is_some(), "released on drop");

        let s = t.ledger.open(new_session("web", ID)).expect("open");
        let running = t.ledger.claim_activation(&s).expect("free");
        assert!(t.ledger.claim_activation(&s).is_none());
        assert_eq!(t.ledger.activating_spokes(), vec!["edge".to_string()]);
        drop(running);
        assert!(t.ledger.activating_spokes().is_empty());
    }

    #[test]
    fn forget_reaped_matches_short_ids_only() {
        let t = temp("reaped");
        t.ledger.open(new_session("web", ID)).expect("open");
        t.ledger
            .open(new_session("db", &"f".repeat(64)))
            .expect("open");
        let store = t.ledger.store();
        let too_short = vec![String::new(), "0123".into()];
        assert_eq!(forget_reaped(store, &too_short).expect("forget"), 0);
        let reaped = vec![ID[..SHORT_LEN].to_string(), "eeeeeeeeeeee".into()];
        assert_eq!(forget_reaped(store, &reaped).expect("forget"), 1);
        assert_eq!(t.ledger.sessions().expect("load")[0].box_id, "db");
    }
}
