//! For the hub's in-process tests: a spoke directory whose spokes can go away, a manager that
//! records what `create` was given, hubs on fresh state files.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use llmbox::boxes::memory::MemoryBoxManager;
use llmbox::boxes::{BoxError, BoxInfo, BoxManager, CreateOptions, Created, ExecResult};
use llmbox::cluster::{LOCAL_SPOKE, SpokeDirectory, SpokeStatus};
use llmbox::hub::{Hub, HubConfig};
use llmbox::store::Store;

use super::temp_dir;

/// A memory manager that remembers every `CreateOptions` it was given.
pub struct Recording {
    pub inner: MemoryBoxManager,
    pub creates: Mutex<Vec<CreateOptions>>,
    /// While true, `submit_code` waits (holds an activation open).
    pub hold_submit: AtomicBool,
    /// Set when a `submit_code` has started.
    pub submit_entered: AtomicBool,
    /// Like a Go spoke's box (its entrypoint does not loop the login): a failed code stops
    /// the box, which then lists as `exited`.
    pub stop_on_bad_code: AtomicBool,
    /// Container ids of the boxes stopped so.
    pub exited: Mutex<Vec<String>>,
    /// While true, `submit_code` fails as a spoke whose Docker socket is wrong does.
    pub docker_down: AtomicBool,
}

impl Recording {
    pub fn new(namespace: &str) -> Self {
        Recording {
            inner: MemoryBoxManager::new(namespace, 20),
            creates: Mutex::new(Vec::new()),
            hold_submit: AtomicBool::new(false),
            submit_entered: AtomicBool::new(false),
            stop_on_bad_code: AtomicBool::new(false),
            exited: Mutex::new(Vec::new()),
            docker_down: AtomicBool::new(false),
        }
    }
}

impl BoxManager for Recording {
    fn create(&self, opts: CreateOptions) -> Result<Created, BoxError> {
        self.creates.lock().expect("lock").push(opts.clone());
        self.inner.create(opts)
    }
    fn submit_code(&self, id: &str, code: &str) -> Result<String, BoxError> {
        self.submit_entered.store(true, Ordering::SeqCst);
        while self.hold_submit.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        if self.docker_down.load(Ordering::SeqCst) {
            return Err(BoxError::Unavailable(
                "cannot reach Docker at unix:///nonexistent/docker.sock: No such file or directory"
                    .into(),
            ));
        }
        let exited = self.exited.lock().expect("lock").iter().any(|e| e == id);
        if exited {
            return Err(BoxError::Box("box is exited and cannot take a code".into()));
        }
        let result = self.inner.submit_code(id, code);
        if result.is_err() && self.stop_on_bad_code.load(Ordering::SeqCst) {
            self.exited.lock().expect("lock").push(id.to_string());
        }
        result
    }
    fn list(&self) -> Result<Vec<BoxInfo>, BoxError> {
        let exited = self.exited.lock().expect("lock").clone();
        let mut list = self.inner.list()?;
        for b in &mut list {
            if exited
                .iter()
                .any(|id| id.starts_with(b.container_id.as_str()))
            {
                b.state = "exited".into();
            }
        }
        Ok(list)
    }
    fn destroy(&self, id: &str) -> Result<(), BoxError> {
        self.inner.destroy(id)
    }
    fn logs(&self, id: &str, tail: usize) -> Result<String, BoxError> {
        self.inner.logs(id, tail)
    }
    fn exec(&self, id: &str, cmd: &[String]) -> Result<ExecResult, BoxError> {
        self.inner.exec(id, cmd)
    }
    fn reap(&self, ttl: Duration) -> Result<Vec<String>, BoxError> {
        self.inner.reap(ttl)
    }
}

/// Spokes that can be switched off and on.
#[derive(Default)]
pub struct Switchboard {
    spokes: BTreeMap<String, (Arc<Recording>, AtomicBool)>,
}

impl Switchboard {
    pub fn with(mut self, name: &str) -> Self {
        self.spokes.insert(
            name.to_string(),
            (Arc::new(Recording::new(name)), AtomicBool::new(true)),
        );
        self
    }

    pub fn manager(&self, name: &str) -> Arc<Recording> {
        Arc::clone(&self.spokes[name].0)
    }

    pub fn set_connected(&self, name: &str, up: bool) {
        self.spokes[name].1.store(up, Ordering::SeqCst);
    }
}

impl SpokeDirectory for Switchboard {
    fn get(&self, name: &str) -> Option<Arc<dyn BoxManager>> {
        let (m, up) = self.spokes.get(name)?;
        up.load(Ordering::SeqCst)
            .then(|| Arc::clone(m) as Arc<dyn BoxManager>)
    }

    fn statuses(&self) -> Vec<SpokeStatus> {
        self.spokes
            .iter()
            .map(|(name, (_, up))| SpokeStatus {
                name: name.clone(),
                connected: up.load(Ordering::SeqCst),
                local: name == LOCAL_SPOKE,
                connected_since: None,
                docker: None,
            })
            .collect()
    }
}

/// A fresh state file path in its own [`temp_dir`].
pub fn state_path(test: &str) -> PathBuf {
    temp_dir(test).join("state.json")
}

/// A hub over `local` and `edge` spokes with a fresh state file.
pub fn hub(test: &str) -> (Arc<Hub>, Arc<Switchboard>, PathBuf) {
    let path = state_path(test);
    let board = Arc::new(Switchboard::default().with(LOCAL_SPOKE).with("edge"));
    let hub = hub_on(&path, &board, HubConfig::new("http://hub.test"));
    (hub, board, path)
}

/// A hub on an existing state file and directory.
pub fn hub_on(path: &PathBuf, board: &Arc<Switchboard>, mut config: HubConfig) -> Arc<Hub> {
    config.box_image = "img".into();
    let store = Arc::new(Store::open(path).expect("store"));
    Arc::new(Hub::new(
        config,
        store,
        Arc::clone(board) as Arc<dyn SpokeDirectory>,
    ))
}

/// The page token in an activation URL.
pub fn token_of(auth_url: &str) -> String {
    auth_url.rsplit('/').next().expect("token").to_string()
}
