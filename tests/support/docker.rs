//! For the tests that run against the real Docker daemon: the test image, a per-test namespace
//! whose guard removes everything it labelled (even when the test fails), a limit on
//! simultaneous Docker-heavy tests, and a `docker` CLI wrapper for checks made independently of
//! the code under test.

use std::process::Command;
use std::sync::{Condvar, Mutex, Once};

use llmbox::boxes::{BoxManager, CreateOptions, Created};
use llmbox::docker::{DEFAULT_DOCKER_HOST, DockerBoxManager, ManagerConfig};

use super::fixtures;

/// The image the fixture script builds.
pub const TEST_IMAGE: &str = "llmbox-test-box:latest";
/// Label put on helper containers (peers, unmanaged bystanders) so the guard finds them.
pub const TEST_LABEL: &str = "com.llmbox.test";
/// Most Docker-heavy tests running at once in one test binary (2 cores shared).
const MAX_CONCURRENT: usize = 2;

static IMAGE: Once = Once::new();
static SLOTS: Mutex<usize> = Mutex::new(0);
static FREED: Condvar = Condvar::new();

/// Builds the test image once per test binary (quick when it is up to date). Panics loudly
/// when Docker or busybox is missing: these tests never skip.
pub fn ensure_image() {
    IMAGE.call_once(|| {
        let script = fixtures().join("build-test-image.sh");
        let out = Command::new("bash")
            .arg(&script)
            .output()
            .expect("run build-test-image.sh");
        assert!(
            out.status.success(),
            "building {TEST_IMAGE} failed (is Docker running?): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// Runs the `docker` CLI; returns (success, stdout, stderr).
pub fn docker(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run the docker CLI");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

/// Runs `script` with `sh -c` in container `id` as root through the `docker` CLI, whatever user
/// the box manager's `exec` runs as: a look inside the box independent of the code under test.
/// Returns (success, stdout, stderr).
pub fn root_sh(id: &str, script: &str) -> (bool, String, String) {
    docker(&["exec", "-u", "0:0", id, "sh", "-c", script])
}

/// `docker inspect -f FORMAT target`, asserting success.
pub fn inspect(target: &str, format: &str) -> String {
    let (ok, out, err) = docker(&["inspect", "-f", format, target]);
    assert!(ok, "docker inspect {target}: {err}");
    out
}

/// True when a container or network with this id/name exists.
pub fn exists(kind: &str, target: &str) -> bool {
    docker(&[kind, "inspect", target]).0
}

/// A permit to run a Docker-heavy test; released on drop.
pub struct Slot;

impl Drop for Slot {
    fn drop(&mut self) {
        let mut n = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
        *n -= 1;
        FREED.notify_one();
    }
}

fn slot() -> Slot {
    let mut n = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
    while *n >= MAX_CONCURRENT {
        n = FREED.wait(n).unwrap_or_else(|e| e.into_inner());
    }
    *n += 1;
    Slot
}

/// A test's own namespace. Dropping it removes every container and network labelled with
/// it (managed boxes and the test's helper containers).
pub struct TestNs {
    /// `t-<name>-<pid>`.
    pub ns: String,
    _slot: Option<Slot>,
}

impl TestNs {
    /// A namespace for test `name`, waiting for a free slot and building the image first.
    pub fn new(name: &str) -> TestNs {
        ensure_image();
        let ns = format!("t-{name}-{}", std::process::id());
        let me = TestNs {
            ns,
            _slot: Some(slot()),
        };
        me.cleanup();
        me
    }

    /// A second namespace for the same test, sharing its slot (so a test never waits on
    /// itself).
    pub fn sibling(&self, name: &str) -> TestNs {
        let me = TestNs {
            ns: format!("{}-{name}", self.ns),
            _slot: None,
        };
        me.cleanup();
        me
    }

    /// A manager config for this namespace with the fake claude injected.
    pub fn config(&self) -> ManagerConfig {
        let mut c = ManagerConfig::new(&self.ns);
        c.docker_host = DEFAULT_DOCKER_HOST.to_string();
        c.claude_bin = Some(fixtures().join("fake-claude"));
        c.max_boxes = 10;
        c
    }

    /// A manager with [`TestNs::config`].
    pub fn manager(&self) -> DockerBoxManager {
        DockerBoxManager::new(self.config()).expect("manager")
    }

    /// Runs a helper container (peer or bystander) labelled for this test; returns its name.
    pub fn helper(&self, suffix: &str, extra_labels: &[&str]) -> String {
        let name = format!("{}-{suffix}", self.ns);
        let label = format!("{TEST_LABEL}={}", self.ns);
        let mut args = vec!["run", "-d", "--name", &name, "--label", &label];
        for l in extra_labels {
            args.push("--label");
            args.push(l);
        }
        args.extend([TEST_IMAGE, "sleep", "3600"]);
        let (ok, _, err) = docker(&args);
        assert!(ok, "docker run {name}: {err}");
        name
    }

    /// Containers carrying this namespace's label.
    pub fn containers(&self) -> Vec<String> {
        let filter = format!("label=com.llmbox.namespace={}", self.ns);
        let (ok, out, err) = docker(&["ps", "-aq", "--filter", &filter]);
        assert!(ok, "docker ps: {err}");
        out.lines().map(String::from).collect()
    }

    /// Networks carrying this namespace's label.
    pub fn networks(&self) -> Vec<String> {
        let filter = format!("label=com.llmbox.namespace={}", self.ns);
        let (ok, out, err) = docker(&["network", "ls", "-q", "--filter", &filter]);
        assert!(ok, "docker network ls: {err}");
        out.lines().map(String::from).collect()
    }

    fn cleanup(&self) {
        let labels = [
            format!("label=com.llmbox.namespace={}", self.ns),
            format!("label={TEST_LABEL}={}", self.ns),
        ];
        // Containers first (boxes and peers), so no network still has endpoints.
        for label in &labels {
            let (_, ids, _) = docker(&["ps", "-aq", "--filter", label]);
            let ids: Vec<&str> = ids.lines().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f", "-v"];
                args.extend(ids);
                docker(&args);
            }
        }
        for label in &labels {
            let (_, nets, _) = docker(&["network", "ls", "-q", "--filter", label]);
            for net in nets.lines() {
                docker(&["network", "rm", net]);
            }
        }
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Options for a box on the test image.
pub fn opts(box_id: &str) -> CreateOptions {
    CreateOptions {
        image: TEST_IMAGE.to_string(),
        box_id: box_id.to_string(),
        description: format!("test box {box_id}"),
        ..Default::default()
    }
}

/// Creates a box and checks the authorize URL has the real shape.
pub fn create(m: &DockerBoxManager, box_id: &str) -> Created {
    let created = m.create(opts(box_id)).expect("create");
    assert!(
        created
            .authorize_url
            .starts_with("https://claude.com/cai/oauth/authorize?"),
        "{}",
        created.authorize_url
    );
    assert!(created.authorize_url.contains("code_challenge="));
    assert!(created.authorize_url.contains("state="));
    created
}
