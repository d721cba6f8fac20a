//! Upkeep of the sessions: dropping them (with their destroy hooks and in-memory secrets),
//! reconciling them with the spokes at start, one reaper pass, and forgetting what
//! `llmbox reap --state` removed.

use super::Hub;
use crate::store::Session;

/// Drops the sessions of boxes reaped outside the hub (`llmbox reap --state FILE`), given their
/// short (12-character) container ids. Matched by id alone: the reaping host's namespace label
/// need not be the spoke's name (`--local-namespace`), and Docker ids do not repeat. Hooks are
/// not run (the CLI has none). Returns how many sessions were dropped.
///
/// # Errors
/// The state file could not be read or written.
pub fn forget_reaped(
    store: &crate::store::Store,
    short_ids: &[String],
) -> Result<usize, crate::store::StoreError> {
    let ids: Vec<&String> = short_ids.iter().filter(|id| id.len() >= 12).collect();
    if ids.is_empty() {
        return Ok(0);
    }
    store.update(|state| {
        let before = state.sessions.len();
        state
            .sessions
            .retain(|s| !ids.iter().any(|id| s.container_id.starts_with(id.as_str())));
        before - state.sessions.len()
    })
}

impl Hub {
    /// Removes the sessions matching `pred`, runs their destroy hooks, forgets their secrets.
    /// Returns how many were removed (0 when the state file could not be written; logged).
    pub(super) fn drop_sessions(&self, pred: impl Fn(&Session) -> bool) -> usize {
        let removed = self.store.update(|state| {
            let (gone, kept): (Vec<Session>, Vec<Session>) = std::mem::take(&mut state.sessions)
                .into_iter()
                .partition(|s| pred(s));
            state.sessions = kept;
            gone
        });
        let removed = match removed {
            Ok(r) => r,
            Err(e) => {
                log::warn!("dropping sessions: {e}");
                return 0;
            }
        };
        for s in &removed {
            {
                let mut v = self.volatile();
                v.tokens.remove(&s.container_id);
                v.codes.remove(&s.container_id);
            }
            self.hooks
                .destroy(&s.box_id, &s.spoke, &s.container_id, s.hook_state.as_ref());
        }
        removed.len()
    }

    /// At start and after each reaper pass: drops the sessions whose box is gone from a reachable spoke; sessions on a
    /// spoke that is away (or fails to list) are kept. Returns how many were dropped.
    pub fn reconcile(&self) -> usize {
        let sessions = match self.store.load() {
            Ok(state) => state.sessions.clone(),
            Err(e) => {
                log::warn!("reconciling sessions: {e}");
                return 0;
            }
        };
        let mut gone: Vec<String> = Vec::new();
        let mut spokes: Vec<&str> = sessions.iter().map(|s| s.spoke.as_str()).collect();
        spokes.sort_unstable();
        spokes.dedup();
        for spoke in spokes {
            let Some(manager) = self.spokes.get(spoke) else {
                continue;
            };
            let list = match self.verb("list", || manager.list()) {
                Ok(list) => list,
                Err(e) => {
                    log::warn!("reconciling sessions of spoke {spoke:?}: {e}");
                    continue;
                }
            };
            for s in sessions.iter().filter(|s| s.spoke == spoke) {
                let alive = list.iter().any(|b| {
                    !b.container_id.is_empty() && s.container_id.starts_with(&b.container_id)
                });
                if !alive {
                    gone.push(s.container_id.clone());
                }
            }
        }
        if gone.is_empty() {
            return 0;
        }
        let n = self.drop_sessions(|s| gone.contains(&s.container_id));
        log::info!("dropped {n} sessions whose boxes are gone");
        n
    }

    /// One reaper pass: `reap` with `--auth-ttl` on every connected spoke (except spokes where
    /// an activation is running: their turn is the next pass), then drop the sessions of what
    /// was reaped. Returns how many boxes were reaped.
    pub fn reap_once(&self) -> usize {
        let mut reaped: Vec<(String, String)> = Vec::new();
        let activating: Vec<String> = self.volatile().activating.values().cloned().collect();
        for status in self.spokes.statuses().into_iter().filter(|s| s.connected) {
            // A person may be typing the code of a box that just reached its TTL: reaping
            // under them would turn a good code into an error. The spoke's turn comes next pass.
            if activating.contains(&status.name) {
                log::debug!(
                    "reaping on spoke {:?} deferred: an activation is running there",
                    status.name
                );
                continue;
            }
            let Some(manager) = self.spokes.get(&status.name) else {
                continue;
            };
            match self.verb("reap", || manager.reap(self.config.auth_ttl)) {
                Ok(ids) => {
                    if !ids.is_empty() {
                        log::info!(
                            "reaped {} pending boxes on spoke {:?}",
                            ids.len(),
                            status.name
                        );
                    }
                    reaped.extend(ids.into_iter().map(|id| (status.name.clone(), id)));
                }
                Err(e) => log::warn!("reaping on spoke {:?}: {e}", status.name),
            }
        }
        if !reaped.is_empty() {
            self.drop_sessions(|s| {
                reaped.iter().any(|(spoke, id)| {
                    *spoke == s.spoke && !id.is_empty() && s.container_id.starts_with(id.as_str())
                })
            });
        }
        reaped.len()
    }
}
