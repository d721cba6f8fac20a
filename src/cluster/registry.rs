//! The hub's live directory of spokes: enrolled ones from the state file, connected ones from
//! the plane, and the in-process `local` spoke (DESIGN §5, §8).
//!
//! Supersede rule: a new connection under a name replaces the old one in the map at once; the
//! old connection is closed, and its teardown removes the entry only if it still holds its own
//! generation, so tearing down the old socket never evicts the new one. The map lock is never
//! held across a socket operation.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::boxes::BoxManager;
use crate::store::Store;
use crate::util::unix_now;

use super::remote::RemoteSpoke;
use super::tokens::CredentialIndex;
use super::transport::CLOSE_WAIT;
use super::{LOCAL_SPOKE, SpokeDirectory, SpokeStatus};

/// A probe telling whether the local spoke's backend (its Docker daemon) is up, or why not.
pub(crate) type HealthProbe = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

struct Live {
    spoke: Arc<RemoteSpoke>,
    since: i64,
    generation: u64,
    /// What this connection's Docker answered at the last reaper pass ([`SpokeStatus::docker`]);
    /// a new connection starts unknown.
    docker: Option<String>,
}

/// Spokes known to the hub. Shared as `Arc<Registry>` by the plane and the hub.
pub struct Registry {
    store: Arc<Store>,
    live: Mutex<HashMap<String, Live>>,
    local: Mutex<Option<(Arc<dyn BoxManager>, HealthProbe)>>,
    generations: AtomicU64,
    /// Enrolled credential hashes by name, for enrollment and the revocation sweep.
    credentials: CredentialIndex,
}

impl Registry {
    /// A registry listing the spokes enrolled in `store`.
    pub fn new(store: Arc<Store>) -> Self {
        Registry {
            store,
            live: Mutex::new(HashMap::new()),
            local: Mutex::new(None),
            generations: AtomicU64::new(1),
            credentials: CredentialIndex::default(),
        }
    }

    /// The state file.
    pub(crate) fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The enrolled spokes' credential hashes by name, built once per state.
    pub(crate) fn credentials(&self) -> &CredentialIndex {
        &self.credentials
    }

    /// Registers the hub's in-process spoke `local`; `healthy` decides its `connected`.
    pub(crate) fn set_local(&self, manager: Arc<dyn BoxManager>, healthy: HealthProbe) {
        *lock(&self.local) = Some((manager, healthy));
    }

    /// Makes `spoke` the live connection for its name. Returns the generation to pass to
    /// [`Registry::remove`], and the superseded connection (the caller closes it).
    pub fn insert(&self, spoke: Arc<RemoteSpoke>) -> (u64, Option<Arc<RemoteSpoke>>) {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        let name = spoke.name().to_string();
        let old = lock(&self.live).insert(
            name,
            Live {
                spoke,
                since: unix_now(),
                generation,
                docker: None,
            },
        );
        (generation, old.map(|l| l.spoke))
    }

    /// Removes `name` if its live entry is still `generation`.
    pub(crate) fn remove(&self, name: &str, generation: u64) {
        let mut live = lock(&self.live);
        if live.get(name).is_some_and(|l| l.generation == generation) {
            live.remove(name);
        }
    }

    /// Every live remote connection.
    pub(crate) fn connections(&self) -> Vec<Arc<RemoteSpoke>> {
        lock(&self.live)
            .values()
            .map(|l| Arc::clone(&l.spoke))
            .collect()
    }

    /// Closes connections whose spoke is no longer enrolled with the credential they used
    /// (revoked, or enrolled again elsewhere). Returns the names closed.
    pub fn drop_revoked(&self) -> Vec<String> {
        // Connections first, state second: every connection in the snapshot wrote its
        // credential before it was inserted, so the state read after it knows that credential
        // unless it was really revoked. (The other order closes a spoke that enrolls between
        // the read and the snapshot.)
        let connections = self.connections();
        let state = match self.store.load() {
            Ok(s) => s,
            Err(e) => {
                log::error!("spoke plane: cannot check revocations: {e}");
                return Vec::new();
            }
        };
        // One lookup per connection in the index of this state (built once per state).
        let enrolled = self.credentials.of(&state);
        let mut closed = Vec::new();
        let by = Instant::now() + CLOSE_WAIT;
        for spoke in connections {
            if enrolled.get(spoke.name()).map(String::as_str) != Some(spoke.credential_hash()) {
                log::info!("spoke {}: revoked; closing its connection", spoke.name());
                spoke.close_by("revoked", by);
                closed.push(spoke.name().to_string());
            }
        }
        closed
    }
}

/// [`SpokeStatus::docker`]'s text for an answer.
fn docker_text(answer: Result<(), String>) -> String {
    answer.map_or_else(|e| e, |()| super::DOCKER_OK.to_string())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The registry holds plain maps; a panic elsewhere cannot leave them half-changed.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SpokeDirectory for Registry {
    fn get(&self, name: &str) -> Option<Arc<dyn BoxManager>> {
        if name == LOCAL_SPOKE {
            return lock(&self.local).as_ref().map(|(m, _)| Arc::clone(m));
        }
        let spoke = lock(&self.live).get(name).map(|l| Arc::clone(&l.spoke))?;
        Some(spoke as Arc<dyn BoxManager>)
    }

    fn statuses(&self) -> Vec<SpokeStatus> {
        let mut out: BTreeMap<String, SpokeStatus> = BTreeMap::new();
        match self.store.load() {
            Ok(state) => {
                for r in &state.spokes {
                    out.insert(
                        r.name.clone(),
                        SpokeStatus {
                            name: r.name.clone(),
                            connected: false,
                            local: false,
                            connected_since: None,
                            docker: None,
                        },
                    );
                }
            }
            Err(e) => log::error!("listing spokes: {e}"),
        }
        for (name, l) in lock(&self.live).iter() {
            out.insert(
                name.clone(),
                SpokeStatus {
                    name: name.clone(),
                    connected: true,
                    local: false,
                    connected_since: Some(l.since),
                    docker: l.docker.clone(),
                },
            );
        }
        let local = lock(&self.local).as_ref().map(|(_, p)| Arc::clone(p));
        if let Some(probe) = local {
            // The probe may touch Docker: called with no lock held.
            let answer = probe();
            out.insert(
                LOCAL_SPOKE.to_string(),
                SpokeStatus {
                    name: LOCAL_SPOKE.to_string(),
                    connected: answer.is_ok(),
                    local: true,
                    connected_since: None,
                    docker: Some(docker_text(answer)),
                },
            );
        }
        out.into_values().collect()
    }

    fn note_docker(&self, name: &str, answer: Result<(), String>) {
        if let Some(live) = lock(&self.live).get_mut(name) {
            live.docker = Some(docker_text(answer));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boxes::memory::MemoryBoxManager;
    use crate::cluster::remote::CallDeadlines;
    use crate::store::SpokeRecord;

    fn registry(tag: &str) -> Registry {
        let dir = std::env::temp_dir().join(format!("llmbox-reg-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        Registry::new(Arc::new(Store::open(dir.join("s.json")).expect("store")))
    }

    fn remote(name: &str) -> Arc<RemoteSpoke> {
        let socket =
            crate::cluster::transport::Socket::detached(tungstenite::protocol::Role::Server);
        Arc::new(RemoteSpoke::new(
            name,
            "h",
            socket,
            CallDeadlines::default(),
        ))
    }

    #[test]
    fn statuses_list_enrolled_live_and_local_sorted() {
        let reg = registry("statuses");
        reg.store()
            .update(|s| {
                s.spokes.push(SpokeRecord {
                    name: "zeta".into(),
                    credential_hash: "x".into(),
                    enrolled: 1,
                })
            })
            .expect("update");
        reg.insert(remote("alpha"));
        reg.set_local(
            Arc::new(MemoryBoxManager::new("local", 1)),
            Arc::new(|| Err("cannot reach Docker at unix:///nowhere".to_string())),
        );
        let st = reg.statuses();
        let names: Vec<_> = st.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["alpha", "local", "zeta"]);
        assert!(st[0].connected && !st[0].local && st[0].connected_since.is_some());
        assert!(!st[1].connected && st[1].local);
        assert!(!st[2].connected);
        assert_eq!(
            st[1].docker.as_deref(),
            Some("cannot reach Docker at unix:///nowhere")
        );
        assert_eq!(st[0].docker, None, "not asked yet");
        reg.note_docker("alpha", Err("cannot reach Docker at unix:///x".into()));
        reg.note_docker("zeta", Ok(()));
        let st = reg.statuses();
        assert_eq!(
            st[0].docker.as_deref(),
            Some("cannot reach Docker at unix:///x")
        );
        assert_eq!(
            st[2].docker, None,
            "an enrolled spoke that is away is not asked"
        );
        reg.note_docker("alpha", Ok(()));
        assert_eq!(reg.statuses()[0].docker.as_deref(), Some("ok"));
        // A new connection under the name starts unknown again.
        reg.insert(remote("alpha"));
        assert_eq!(reg.statuses()[0].docker, None);
        assert!(reg.get("local").is_some());
        assert!(reg.get("alpha").is_some());
        assert!(reg.get("zeta").is_none());
    }

    #[test]
    fn a_spoke_enrolling_during_a_revocation_check_is_not_taken_for_revoked() {
        let reg = Arc::new(registry("revoke-race"));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let checker = {
            let (reg, stop) = (Arc::clone(&reg), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut wrongly = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    wrongly.extend(reg.drop_revoked());
                }
                wrongly
            })
        };
        for i in 0..100 {
            let name = format!("s{i}");
            let (token, _) = crate::cluster::tokens::create_token(
                reg.store(),
                &name,
                std::time::Duration::from_secs(60),
            )
            .expect("token");
            let e = crate::cluster::tokens::enroll_with_token(reg.store(), &token).expect("enroll");
            let socket =
                crate::cluster::transport::Socket::detached(tungstenite::protocol::Role::Server);
            reg.insert(Arc::new(RemoteSpoke::new(
                &name,
                &e.credential_hash,
                socket,
                CallDeadlines::default(),
            )));
        }
        stop.store(true, Ordering::SeqCst);
        let wrongly = checker.join().expect("checker");
        assert!(wrongly.is_empty(), "closed as revoked: {wrongly:?}");
    }

    #[test]
    fn tearing_down_a_superseded_connection_keeps_the_new_one() {
        let reg = registry("supersede");
        let (g1, none) = reg.insert(remote("e"));
        assert!(none.is_none());
        let (g2, old) = reg.insert(remote("e"));
        assert!(old.is_some());
        reg.remove("e", g1);
        assert!(reg.get("e").is_some());
        reg.remove("e", g2);
        assert!(reg.get("e").is_none());
    }
}
