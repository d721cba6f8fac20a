//! For the cluster tests: a hub plane on loopback with its own state file, spoke loops in
//! threads over in-memory managers, and a hand-driven spoke speaking frame by frame.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use llmbox::boxes::BoxManager;
use llmbox::boxes::memory::MemoryBoxManager;
use llmbox::cluster::SpokeDirectory;
use llmbox::cluster::plane::{self, PlaneConfig, PlaneHandle};
use llmbox::cluster::registry::Registry;
use llmbox::cluster::spoke::{self, SpokeConfig, SpokeStop};
use llmbox::cluster::{ClusterError, tokens};
use llmbox::store::Store;

use super::{temp_dir, wait_for};

/// A hub plane on loopback with its own state file.
pub struct Hub {
    pub dir: PathBuf,
    pub store: Arc<Store>,
    pub registry: Arc<Registry>,
    pub plane: Option<PlaneHandle>,
    pub url: String,
}

impl Hub {
    pub fn start(tag: &str, heartbeat: Duration) -> Hub {
        Self::start_with(
            tag,
            PlaneConfig {
                heartbeat,
                ..PlaneConfig::default()
            },
        )
    }

    pub fn start_with(tag: &str, config: PlaneConfig) -> Hub {
        let dir = temp_dir(tag);
        let store = Arc::new(Store::open(dir.join("state.json")).expect("store"));
        let registry = Arc::new(Registry::new(Arc::clone(&store)));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let plane = plane::start(listener, Arc::clone(&registry), config).expect("plane");
        let url = plane.url();
        Hub {
            dir,
            store,
            registry,
            plane: Some(plane),
            url,
        }
    }

    /// The plane's `host:port`.
    pub fn addr(&self) -> String {
        self.plane
            .as_ref()
            .expect("plane running")
            .addr()
            .to_string()
    }

    pub fn token(&self, name: &str) -> String {
        tokens::create_token(&self.store, name, Duration::from_secs(600))
            .expect("token")
            .0
    }

    /// Waits until `name` is connected (optionally: a different connection than `not`).
    pub fn wait_connected(&self, name: &str) -> Arc<dyn BoxManager> {
        wait_for(&format!("spoke {name} connected"), || {
            self.registry.get(name)
        })
    }

    pub fn wait_disconnected(&self, name: &str) {
        wait_for(&format!("spoke {name} gone"), || {
            self.registry.get(name).is_none().then_some(())
        })
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(p) = self.plane.take() {
            p.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A spoke process-in-a-thread backed by an in-memory manager.
pub struct Spoke {
    pub stop: SpokeStop,
    pub manager: Arc<MemoryBoxManager>,
    pub handle: Option<thread::JoinHandle<Result<(), ClusterError>>>,
    pub credentials: PathBuf,
}

impl Spoke {
    pub fn config(
        hub: &Hub,
        token: Option<String>,
        credentials: PathBuf,
        heartbeat: Duration,
    ) -> SpokeConfig {
        let mut c = SpokeConfig::new(&hub.url);
        c.token = token;
        c.credentials = credentials;
        c.heartbeat = heartbeat;
        c.backoff = (Duration::from_millis(50), Duration::from_millis(200));
        c
    }

    pub fn run(config: SpokeConfig) -> Spoke {
        let manager = Arc::new(MemoryBoxManager::new("spoke", 50));
        let stop = SpokeStop::default();
        let credentials = config.credentials.clone();
        let (m, s) = (Arc::clone(&manager), stop.clone());
        let handle = thread::Builder::new()
            .name("test-spoke".into())
            .spawn(move || {
                let mut factory = |_: &str| Ok(Arc::clone(&m) as Arc<dyn BoxManager>);
                spoke::run(&config, &mut factory, &s)
            })
            .expect("spawn");
        Spoke {
            stop,
            manager,
            handle: Some(handle),
            credentials,
        }
    }

    /// Enrolls a new spoke `name` with a fresh token.
    pub fn enroll(hub: &Hub, name: &str, heartbeat: Duration) -> Spoke {
        let creds = hub.dir.join(format!("{name}-creds.json"));
        Spoke::run(Spoke::config(hub, Some(hub.token(name)), creds, heartbeat))
    }

    /// Waits for the spoke loop to return.
    pub fn join(mut self) -> Result<(), ClusterError> {
        self.handle
            .take()
            .expect("running")
            .join()
            .expect("spoke thread")
    }
}

impl Drop for Spoke {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A hand-driven spoke: a bare tungstenite client speaking the protocol frame by frame.
pub struct RawSpoke {
    pub ws: tungstenite::WebSocket<std::net::TcpStream>,
}

impl RawSpoke {
    /// Connects and upgrades (no enrollment yet).
    pub fn connect(hub: &Hub) -> RawSpoke {
        RawSpoke::try_connect(hub).expect("upgrade")
    }

    /// Connects and upgrades; `None` when the hub refuses the socket or the upgrade.
    pub fn try_connect(hub: &Hub) -> Option<RawSpoke> {
        let tcp = std::net::TcpStream::connect(hub.addr()).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let (ws, _) = tungstenite::client::client(hub.url.as_str(), tcp).ok()?;
        Some(RawSpoke { ws })
    }

    /// Reads the hub's next `req` and returns its id.
    pub fn next_request_id(&mut self) -> u64 {
        let req = self.next_text().expect("a request from the hub");
        let v: serde_json::Value = serde_json::from_str(&req).expect("json");
        assert_eq!(v["type"], "req", "{req}");
        v["id"].as_u64().expect("id")
    }

    pub fn send(&mut self, text: &str) {
        self.ws
            .send(tungstenite::Message::text(text))
            .expect("send");
    }

    /// The next text message, or `Err` with why the connection ended (close code or error).
    pub fn next_text(&mut self) -> Result<String, String> {
        loop {
            match self.ws.read() {
                Ok(tungstenite::Message::Text(t)) => return Ok(t.to_string()),
                Ok(tungstenite::Message::Close(f)) => {
                    return Err(format!("close {:?}", f.map(|f| u16::from(f.code))));
                }
                Ok(_) => {}
                Err(e) => return Err(format!("error {e}")),
            }
        }
    }

    /// Sends an enroll with a join token and returns the answer frame's JSON.
    pub fn enroll_token(&mut self, token: &str) -> Result<String, String> {
        self.send(&format!(
            r#"{{"type":"enroll","payload":{{"join_token":"{token}"}}}}"#
        ));
        self.next_text()
    }

    pub fn enroll_creds(&mut self, name: &str, credential: &str) -> Result<String, String> {
        self.send(&format!(
            r#"{{"type":"enroll","payload":{{"name":"{name}","credential":"{credential}"}}}}"#
        ));
        self.next_text()
    }
}

/// The credential in a welcome frame.
pub fn welcome_credential(text: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(text).expect("json");
    assert_eq!(v["type"], "welcome", "{text}");
    v["payload"]["credential"]
        .as_str()
        .expect("credential")
        .to_string()
}

/// The rejection frame, exactly.
pub const REJECTED: &str = r#"{"type":"err","error":"enrollment rejected"}"#;
