//! Shared parts of the hub's in-process tests: a spoke directory whose spokes can go away, a
//! manager that records what `create` was given, temp state files.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use llmbox::boxes::memory::MemoryBoxManager;
use llmbox::boxes::{BoxError, BoxInfo, BoxManager, CreateOptions, Created, ExecResult};
use llmbox::cluster::{LOCAL_SPOKE, SpokeDirectory, SpokeStatus};
use llmbox::hub::{Hub, HubConfig};
use llmbox::store::Store;
use serde_json::Value;

/// A memory manager that remembers every `CreateOptions` it was given.
pub struct Recording {
    pub inner: MemoryBoxManager,
    pub creates: Mutex<Vec<CreateOptions>>,
    /// While true, `submit_code` waits (holds an activation open).
    pub hold_submit: AtomicBool,
    /// Set when a `submit_code` has started.
    pub submit_entered: AtomicBool,
}

impl Recording {
    pub fn new(namespace: &str) -> Self {
        Recording {
            inner: MemoryBoxManager::new(namespace, 20),
            creates: Mutex::new(Vec::new()),
            hold_submit: AtomicBool::new(false),
            submit_entered: AtomicBool::new(false),
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
        self.inner.submit_code(id, code)
    }
    fn list(&self) -> Result<Vec<BoxInfo>, BoxError> {
        self.inner.list()
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
            })
            .collect()
    }
}

/// A fresh state file path in its own temp directory.
pub fn state_path(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("llmbox-hubtest-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir.join("state.json")
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
pub fn token_of(activation_url: &str) -> String {
    activation_url
        .rsplit('/')
        .next()
        .expect("token")
        .to_string()
}

/// A parsed HTTP response.
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not json ({e}): {}", self.text()))
    }
}

/// Sends raw bytes, reads to the end.
pub fn raw(addr: SocketAddr, request: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    s.write_all(request).expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read");
    parse(&buf)
}

fn parse(buf: &[u8]) -> Resp {
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(buf)));
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .expect("status line")
        .split(' ')
        .nth(1)
        .expect("code")
        .parse()
        .expect("num");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = buf[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Resp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[end + 2..end + 2 + size]);
        data = &data[end + 4 + size..];
    }
}

/// One HTTP/1.1 request with `Connection: close`.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    raw(addr, &bytes)
}
