//! Upkeep of the sessions: dropping them (with their destroy hooks), reconciling them with the
//! spokes at start and after each reaper pass, and one reaper pass. The ledger changes the
//! sessions; this module decides which go.

use super::Hub;
use crate::boxes::ContainerId;
use crate::store::Session;

impl Hub {
    /// Removes the sessions matching `pred` (the ledger forgets their secrets), then runs their
    /// destroy hooks. Returns how many were removed (0 when the state file could not be
    /// written; logged).
    pub(super) fn drop_sessions(&self, pred: impl Fn(&Session) -> bool) -> usize {
        let removed = match self.ledger.remove(pred) {
            Ok(r) => r,
            Err(e) => {
                log::warn!("dropping sessions: {e}");
                return 0;
            }
        };
        for s in &removed {
            self.hooks
                .destroy(&s.box_id, &s.spoke, &s.container_id, s.hook_state.as_ref());
        }
        removed.len()
    }

    /// At start and after each reaper pass: drops the sessions whose box is gone from a
    /// reachable spoke; sessions on a spoke that is away (or fails to list) are kept. Returns
    /// how many were dropped.
    pub fn reconcile(&self) -> usize {
        let sessions = match self.ledger.sessions() {
            Ok(sessions) => sessions,
            Err(e) => {
                log::warn!("reconciling sessions: {e}");
                return 0;
            }
        };
        let mut gone: Vec<ContainerId> = Vec::new();
        let mut spokes: Vec<&str> = sessions.iter().map(|s| s.spoke.as_str()).collect();
        spokes.sort_unstable();
        spokes.dedup();
        for spoke in spokes {
            let list = match self.router.list_on(spoke) {
                None => continue,
                Some(Ok(list)) => list,
                Some(Err(e)) => {
                    log::warn!("reconciling sessions of spoke {spoke:?}: {e}");
                    continue;
                }
            };
            for s in sessions.iter().filter(|s| s.spoke == spoke) {
                if !list
                    .iter()
                    .any(|b| s.container_id.same_box(&b.container_id))
                {
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
        let activating = self.ledger.activating_spokes();
        for status in self.router.connected() {
            // A person may be typing the code of a box that just reached its TTL: reaping
            // under them would turn a good code into an error. The spoke's turn comes next pass.
            if activating.contains(&status.name) {
                log::debug!(
                    "reaping on spoke {:?} deferred: an activation is running there",
                    status.name
                );
                continue;
            }
            let Ok(manager) = self.router.manager(&status.name) else {
                continue;
            };
            match self
                .router
                .verb("reap", || manager.reap(self.config.auth_ttl))
            {
                Ok(ids) => {
                    // The reap verb went to the spoke's Docker: it answered.
                    self.router.directory().note_docker(&status.name, Ok(()));
                    if !ids.is_empty() {
                        log::info!(
                            "reaped {} pending boxes on spoke {:?}",
                            ids.len(),
                            status.name
                        );
                    }
                    reaped.extend(ids.into_iter().map(|id| (status.name.clone(), id)));
                }
                Err(e) => {
                    log::warn!("reaping on spoke {:?}: {e}", status.name);
                    self.router
                        .directory()
                        .note_docker(&status.name, Err(e.to_string()));
                }
            }
        }
        if !reaped.is_empty() {
            let was_reaped = |s: &Session| {
                reaped
                    .iter()
                    .any(|(spoke, id)| *spoke == s.spoke && s.container_id.matches(id))
            };
            self.remember_reaped(was_reaped);
            self.drop_sessions(was_reaped);
        }
        reaped.len()
    }
}
