//! Spoke routing: which spoke a create goes to, asking every spoke for its boxes at once,
//! finding the spoke that holds a box, and counting every verb call (`/metrics`).
//!
//! Holds no sessions: where the hub has a session for a box, the caller hands it in (the
//! session names the spoke); otherwise the box is looked for in a fan-out `list`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use super::HubError;
use super::metrics::Metrics;
use super::views::SpokeFailure;
use crate::boxes::{BoxError, BoxInfo, BoxManager, ContainerId};
use crate::cluster::{SpokeDirectory, SpokeStatus};
use crate::store::Session;

/// Spokes asked at once when the hub lists boxes across the cluster.
const FAN_OUT_THREADS: usize = 16;

/// One spoke's answer to `list`: its boxes, or why it could not be listed.
type SpokeListing = Result<Vec<BoxInfo>, String>;

/// Where a box is: its spoke, the id to hand the verbs, and how the hub knows it.
pub(super) struct Located {
    /// The spoke holding the box.
    pub spoke: String,
    /// The id the verbs get: the session's full id, or the listed short id.
    pub target: ContainerId,
    /// The hub's session of the box, when it was created through this hub.
    pub session: Option<Session>,
    /// The listing it was found in, for a box made outside this hub.
    pub info: Option<BoxInfo>,
}

/// Routes verbs to spokes and counts them.
pub(super) struct Router {
    spokes: Arc<dyn SpokeDirectory>,
    metrics: Metrics,
}

impl Router {
    pub fn new(spokes: Arc<dyn SpokeDirectory>) -> Self {
        Router {
            spokes,
            metrics: Metrics::default(),
        }
    }

    pub fn directory(&self) -> &Arc<dyn SpokeDirectory> {
        &self.spokes
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The spokes that are connected now.
    pub fn connected(&self) -> Vec<SpokeStatus> {
        let mut all = self.spokes.statuses();
        all.retain(|s| s.connected);
        all
    }

    /// Runs one verb, counting it and its latency under `method`.
    pub fn verb<T>(
        &self,
        method: &'static str,
        call: impl FnOnce() -> Result<T, BoxError>,
    ) -> Result<T, BoxError> {
        self.verb_judged(method, call, |_| true)
    }

    /// [`Router::verb`], where a failure counts as a verb error only when `is_fault` says so
    /// (a box refusing a person's mistyped code is an answer, not a fault).
    pub fn verb_judged<T>(
        &self,
        method: &'static str,
        call: impl FnOnce() -> Result<T, BoxError>,
        is_fault: impl FnOnce(&BoxError) -> bool,
    ) -> Result<T, BoxError> {
        let started = Instant::now();
        let result = call();
        let ok = result.as_ref().err().is_none_or(|e| !is_fault(e));
        self.metrics.observe(method, started.elapsed(), ok);
        result
    }

    /// The connected manager of `spoke`.
    pub fn manager(&self, spoke: &str) -> Result<Arc<dyn BoxManager>, HubError> {
        if let Some(m) = self.spokes.get(spoke) {
            return Ok(m);
        }
        let known: Vec<String> = self.spokes.statuses().into_iter().map(|s| s.name).collect();
        if known.iter().any(|k| k == spoke) {
            Err(HubError::SpokeAway(spoke.to_string()))
        } else {
            Err(HubError::UnknownSpoke {
                name: spoke.to_string(),
                known,
            })
        }
    }

    /// The spoke a create goes to: the one asked for (which must be connected), else the
    /// local spoke, else the first connected one.
    pub fn choose(&self, wanted: Option<&str>) -> Result<String, HubError> {
        if let Some(name) = wanted {
            self.manager(name)?;
            return Ok(name.to_string());
        }
        let connected = self.connected();
        connected
            .iter()
            .find(|s| s.local)
            .or(connected.first())
            .map(|s| s.name.clone())
            .ok_or(HubError::NoSpoke)
    }

    /// `spoke`'s boxes; `None` when it is away.
    pub fn list_on(&self, spoke: &str) -> Option<Result<Vec<BoxInfo>, BoxError>> {
        let manager = self.spokes.get(spoke)?;
        Some(self.verb("list", || manager.list()))
    }

    /// Whether `spoke` holds box `id`; `None` when it is away or its `list` failed, so the
    /// answer is unknown.
    pub fn holds(&self, spoke: &str, id: &ContainerId) -> Option<bool> {
        let list = self.list_on(spoke)?.ok()?;
        Some(list.iter().any(|b| id.same_box(&b.container_id)))
    }

    /// Lists every spoke's boxes, asking up to [`FAN_OUT_THREADS`] spokes at once so one slow
    /// spoke costs its own deadline, not the sum of everyone's round trips. Results keep the
    /// order of [`SpokeDirectory::statuses`]; failures and away spokes are reported beside the
    /// boxes.
    pub fn fan_out(&self) -> (Vec<BoxInfo>, Vec<SpokeFailure>) {
        let spokes = self.spokes.statuses();
        let next = AtomicUsize::new(0);
        let slots: Vec<Mutex<Option<SpokeListing>>> =
            spokes.iter().map(|_| Mutex::new(None)).collect();
        std::thread::scope(|scope| {
            for _ in 0..spokes.len().min(FAN_OUT_THREADS) {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(spoke) = spokes.get(i) else { return };
                        let listed = match self.list_on(&spoke.name) {
                            None => Err(HubError::SpokeAway(spoke.name.clone()).to_string()),
                            Some(listed) => listed.map_err(|e| e.to_string()),
                        };
                        *slots[i].lock().unwrap_or_else(PoisonError::into_inner) = Some(listed);
                    }
                });
            }
        });
        let mut boxes = Vec::new();
        let mut failed = Vec::new();
        for (spoke, slot) in spokes.iter().zip(slots) {
            // Every slot is filled once the scope returns (a panicking worker re-panics there).
            let listed = slot
                .into_inner()
                .unwrap_or_else(PoisonError::into_inner)
                .unwrap_or_else(|| Err("the hub did not ask this spoke".into()));
            match listed {
                Ok(mut list) => {
                    for b in &mut list {
                        b.spoke = spoke.name.clone();
                    }
                    boxes.append(&mut list);
                }
                Err(error) => failed.push(SpokeFailure {
                    spoke: spoke.name.clone(),
                    error,
                }),
            }
        }
        (boxes, failed)
    }

    /// Finds `box_id`: on the spoke its `session` names, else in a fan-out listing.
    ///
    /// # Errors
    /// [`HubError::UnknownBox`], or [`HubError::MaybeOnSilentSpoke`] when spokes that did
    /// not answer may hold it.
    pub fn locate(&self, box_id: &str, session: Option<Session>) -> Result<Located, HubError> {
        if let Some(s) = session {
            return Ok(Located {
                spoke: s.spoke.clone(),
                target: s.container_id.clone(),
                session: Some(s),
                info: None,
            });
        }
        let (boxes, failed) = self.fan_out();
        match boxes
            .into_iter()
            .find(|b| b.box_id.eq_ignore_ascii_case(box_id))
        {
            Some(info) => Ok(Located {
                spoke: info.spoke.clone(),
                target: info.container_id.clone(),
                session: None,
                info: Some(info),
            }),
            // The box may sit on a spoke that did not answer: say so rather than "unknown".
            None if !failed.is_empty() => Err(HubError::MaybeOnSilentSpoke {
                box_id: box_id.to_string(),
                spokes: failed.into_iter().map(|f| f.spoke).collect(),
            }),
            None => Err(HubError::UnknownBox(box_id.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boxes::CreateOptions;
    use crate::boxes::memory::MemoryBoxManager;
    use crate::cluster::StaticDirectory;

    fn router(names: &[&str]) -> (Router, Vec<Arc<MemoryBoxManager>>) {
        let mut dir = StaticDirectory::default();
        let mut managers = Vec::new();
        for name in names {
            let m = Arc::new(MemoryBoxManager::new(name, 5));
            dir = dir.with(name, Arc::clone(&m) as Arc<dyn BoxManager>);
            managers.push(m);
        }
        (Router::new(Arc::new(dir)), managers)
    }

    fn make(m: &MemoryBoxManager, box_id: &str) -> ContainerId {
        let opts = CreateOptions {
            image: "img".into(),
            box_id: box_id.into(),
            ..Default::default()
        };
        ContainerId::new(m.create(opts).expect("create").id)
    }

    #[test]
    fn a_create_goes_to_the_spoke_asked_for_else_local_else_the_first() {
        let (r, _) = router(&["edge", "local"]);
        assert_eq!(r.choose(None).expect("spoke"), "local");
        assert_eq!(r.choose(Some("edge")).expect("spoke"), "edge");
        assert!(matches!(
            r.choose(Some("far")),
            Err(HubError::UnknownSpoke { .. })
        ));
        let (r, _) = router(&["b-edge", "a-edge"]);
        assert_eq!(r.choose(None).expect("spoke"), "a-edge");
        let (r, _) = router(&[]);
        assert!(matches!(r.choose(None), Err(HubError::NoSpoke)));
    }

    #[test]
    fn a_box_is_located_by_its_session_or_else_by_listing_every_spoke() {
        let (r, m) = router(&["edge", "local"]);
        let id = make(&m[0], "web");
        let found = r.locate("WEB", None).expect("listed");
        assert_eq!(
            (found.spoke.as_str(), found.target.as_str()),
            ("edge", id.short())
        );
        assert!(found.info.is_some() && found.session.is_none());
        assert!(matches!(
            r.locate("nope", None),
            Err(HubError::UnknownBox(_))
        ));
    }

    #[test]
    fn holds_knows_a_box_by_its_full_id_and_says_nothing_for_an_unknown_spoke() {
        let (r, m) = router(&["edge"]);
        let id = make(&m[0], "web");
        assert_eq!(r.holds("edge", &id), Some(true));
        m[0].destroy(&id).expect("destroy");
        assert_eq!(r.holds("edge", &id), Some(false));
        assert_eq!(r.holds("far", &id), None);
    }

    #[test]
    fn every_verb_is_counted_under_its_method() {
        let (r, _) = router(&["edge"]);
        r.fan_out();
        let _ = r.verb("destroy", || Err::<(), _>(BoxError::NotFound("x".into())));
        let text = r.metrics().render(1, &[]);
        assert!(text.contains("method=\"list\""), "{text}");
        assert!(text.contains("method=\"destroy\""), "{text}");
    }
}
