//! The proxy layouts of docs/deploy.md, for real: `deploy/nginx-llmbox.conf` in Debian's
//! nginx-light and `deploy/Caddyfile` in Debian's caddy, each in front of a real `llmbox hub`
//! with TLS from a private CA (made here with `openssl`). Through the proxy's public site the
//! activation page answers and a real `llmbox spoke` enrolls over `wss://` (the WebSocket
//! upgrade passes), while `/mcp` and `/metrics` are not there; MCP answers only on the private
//! site, with an API key. The test changes only names, addresses, ports and certificate paths
//! in the shipped files.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{free_port, temp_dir};

/// Stops and reaps a process this test started: SIGTERM first (nginx's master stops its
/// workers on it; SIGKILL would leave them serving), SIGKILL after 5 s.
struct Proc(Child, &'static str);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} did not stop on SIGTERM; killing it", self.1);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8")
}

/// The hub's three listeners (page, MCP, spoke plane) and the proxy's two sites.
struct Ports {
    page: u16,
    mcp: u16,
    plane: u16,
    public: u16,
    private: u16,
}

impl Ports {
    fn new() -> Ports {
        Ports {
            page: free_port(),
            mcp: free_port(),
            plane: free_port(),
            public: free_port(),
            private: free_port(),
        }
    }

    /// The shipped file with the example's upstream ports moved to this test's hub.
    fn upstreams(&self, text: &str) -> String {
        text.replace("127.0.0.1:8080", &format!("127.0.0.1:{}", self.page))
            .replace("127.0.0.1:8090", &format!("127.0.0.1:{}", self.mcp))
            .replace("127.0.0.1:8081", &format!("127.0.0.1:{}", self.plane))
    }
}

fn shipped(name: &str) -> String {
    std::fs::read_to_string(support::root().join("deploy").join(name)).expect("deploy file")
}

/// `curl` over TLS trusting the test CA: (status, body).
fn curl(
    dir: &Path,
    method: &str,
    url: &str,
    headers: &[&str],
    body: Option<&str>,
) -> (u16, String) {
    let mut c = Command::new("curl");
    c.args([
        "-sS",
        "--max-time",
        "20",
        "--cacert",
        s(&dir.join("ca.pem")),
    ])
    .args(["-X", method, "-o", "-", "-w", "\n%{http_code}", url]);
    for h in headers {
        c.args(["-H", h]);
    }
    if let Some(b) = body {
        c.args(["--data-binary", b]);
    }
    let out = c.output().expect("curl must be installed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    let status = code.trim().parse().unwrap_or(0);
    if status == 0 {
        // curl's own complaint, for the assertion message.
        return (0, String::from_utf8_lossy(&out.stderr).into_owned());
    }
    (status, body.to_string())
}

/// True when a `list_spokes` answer shows `name` connected.
fn connected(answer: &str, name: &str) -> bool {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(answer) else {
        return false;
    };
    v["result"]["structuredContent"]["spokes"]
        .as_array()
        .is_some_and(|l| {
            l.iter()
                .any(|s| s["name"] == name && s["connected"] == true)
        })
}

fn wait_until<T>(what: &str, limit: Duration, mut ok: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = ok() {
            return v;
        }
        assert!(start.elapsed() < limit, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn spawn(cmd: &mut Command, log: PathBuf, what: &'static str) -> Proc {
    let log = std::fs::File::create(log).expect("log");
    let child = cmd
        .stdout(log.try_clone().expect("dup"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("start {what}: {e} (.ci/run installs it)"));
    Proc(child, what)
}

/// Starts the hub the way docs/deploy.md runs it behind a proxy, with an API key; returns it.
fn hub(dir: &Path, ports: &Ports) -> (Proc, String) {
    let state = dir.join("state.json");
    let key = support::apikey_create(&state, "chatbot", false);
    let mut c = Command::new(env!("CARGO_BIN_EXE_llmbox"));
    c.args(["hub", "--no-local", "--state", s(&state)])
        .args(["--listen", &format!("127.0.0.1:{}", ports.page)])
        .args(["--mcp-listen", &format!("127.0.0.1:{}", ports.mcp)])
        .args(["--spoke-listen", &format!("127.0.0.1:{}", ports.plane)])
        .args([
            "--public-url",
            &format!("https://localhost:{}", ports.public),
        ])
        .args(["--spoke-url", &format!("wss://localhost:{}", ports.public)])
        .env_remove("LLMBOX_STATE");
    let proc = spawn(&mut c, dir.join("hub.log"), "llmbox hub");
    wait_until("the hub to listen", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", ports.page)).ok()
    });
    (proc, key)
}

/// What both layouts must do, once the proxy listens on `ports.public` / `ports.private`.
fn check_layout(dir: &Path, ports: &Ports, key: &str, proxy_log: &Path) {
    let public = format!("https://localhost:{}", ports.public);
    let private = format!("https://localhost:{}", ports.private);
    let log = || std::fs::read_to_string(proxy_log).unwrap_or_default();
    wait_until("the proxy to answer", Duration::from_secs(20), || {
        (curl(dir, "GET", &format!("{public}/healthz"), &[], None).0 == 200).then_some(())
    });
    // The page is published: its routes answer through the proxy (an unknown link is the
    // page's own "not found" answer, not the proxy's).
    let (status, body) = curl(dir, "GET", &format!("{public}/readyz"), &[], None);
    assert_eq!(status, 200, "{body}\n{}", log());
    assert!(body.contains("\"ready\":true"), "{body}");
    let (status, body) = curl(
        dir,
        "GET",
        &format!("{public}/auth/no-such-link"),
        &[],
        None,
    );
    assert!(status == 404 || status == 410, "{status} {body}");
    // MCP is not published on the public site, with or without a key.
    let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_spokes","arguments":{}}}"#;
    let auth = format!("Authorization: Bearer {key}");
    let json = [
        "Content-Type: application/json",
        "Accept: application/json, text/event-stream",
    ];
    let with_key = [json[0], json[1], auth.as_str()];
    for path in ["/mcp", "/metrics", "/"] {
        let (status, body) = curl(
            dir,
            "POST",
            &format!("{public}{path}"),
            &with_key,
            Some(list),
        );
        assert_eq!(status, 404, "public {path}: {body}");
        assert!(!body.contains("jsonrpc"), "public {path}: {body}");
    }
    // The private site serves MCP, and only with the key.
    let (status, _) = curl(dir, "POST", &format!("{private}/mcp"), &json, Some(list));
    assert_eq!(status, 401, "private MCP without a key\n{}", log());
    let (status, body) = curl(
        dir,
        "POST",
        &format!("{private}/mcp"),
        &with_key,
        Some(list),
    );
    assert_eq!(status, 200, "private MCP: {body}\n{}", log());
    // A real spoke enrolls through the public site's WebSocket upgrade (wss://, the test CA).
    let state = dir.join("state.json");
    let out = Command::new(env!("CARGO_BIN_EXE_llmbox"))
        .args([
            "spoke",
            "token",
            "create",
            "--name",
            "edge-proxy",
            "--state",
            s(&state),
        ])
        .args(["--hub", &format!("wss://localhost:{}", ports.public)])
        .output()
        .expect("token");
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = printed
        .lines()
        .find(|l| l.trim_start().starts_with("llmbox spoke --hub"))
        .expect("spoke line")
        .trim()
        .to_string();
    let words: Vec<&str> = line.split_whitespace().collect();
    let _spoke = spawn(
        Command::new(env!("CARGO_BIN_EXE_llmbox"))
            .args(&words[1..])
            .args(["--ca-file", s(&dir.join("ca.pem"))])
            .args(["--credentials", s(&dir.join("spoke.json"))])
            .args(["--heartbeat", "1s"])
            .env_remove("LLMBOX_CREDENTIALS"),
        dir.join("spoke.log"),
        "llmbox spoke",
    );
    wait_until(
        "the spoke to enroll through the proxy",
        Duration::from_secs(30),
        || {
            let (_, body) = curl(
                dir,
                "POST",
                &format!("{private}/mcp"),
                &with_key,
                Some(list),
            );
            // The hub lists the spoke at its welcome; the spoke saves its credential on reading it.
            (connected(&body, "edge-proxy") && dir.join("spoke.json").exists()).then_some(())
        },
    );
    // It stays up across several heartbeats through the proxy.
    std::thread::sleep(Duration::from_secs(3));
    let (_, body) = curl(
        dir,
        "POST",
        &format!("{private}/mcp"),
        &with_key,
        Some(list),
    );
    assert!(
        connected(&body, "edge-proxy"),
        "{body}\n{}",
        std::fs::read_to_string(dir.join("spoke.log")).unwrap_or_default()
    );
}

#[test]
fn nginx_publishes_the_page_and_the_spoke_plane_and_keeps_mcp_private() {
    let dir = temp_dir("proxy-nginx");
    support::pki::make_pki(&dir);
    let ports = Ports::new();
    let (_hub, key) = hub(&dir, &ports);
    let (cert, leaf_key) = (dir.join("leaf.pem"), dir.join("leaf.key"));
    let site = ports
        .upstreams(&shipped("nginx-llmbox.conf"))
        .replace(
            "listen 443 ssl;",
            &format!("listen 127.0.0.1:{} ssl;", ports.public),
        )
        .replace(
            "listen 10.0.0.1:8443 ssl;",
            &format!("listen 127.0.0.1:{} ssl;", ports.private),
        )
        .replace("mcp.hub.example", "localhost")
        .replace("hub.example", "localhost")
        .replace("/etc/ssl/llmbox/localhost.pem", s(&cert))
        .replace("/etc/ssl/llmbox/localhost.key", s(&leaf_key));
    assert!(
        !site.contains("/etc/ssl"),
        "every certificate path replaced:\n{site}"
    );
    std::fs::write(dir.join("llmbox.conf"), &site).expect("site");
    let d = s(&dir);
    let main = format!(
        "daemon off;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log info;\nevents {{ worker_connections 64; }}\n\
         http {{\n  access_log {d}/nginx-access.log;\n  client_body_temp_path {d}/nginx-body;\n  proxy_temp_path {d}/nginx-proxy;\n\
         include {d}/llmbox.conf;\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), main).expect("conf");
    let nginx = Command::new("nginx")
        .args(["-t", "-p", d, "-c", s(&dir.join("nginx.conf"))])
        .output()
        .expect("nginx must be installed (Debian's nginx-light; .ci/run installs it)");
    assert!(
        nginx.status.success(),
        "nginx -t: {}",
        String::from_utf8_lossy(&nginx.stderr)
    );
    let _nginx = spawn(
        Command::new("nginx").args(["-p", d, "-c", s(&dir.join("nginx.conf"))]),
        dir.join("nginx.log"),
        "nginx",
    );
    check_layout(&dir, &ports, &key, &dir.join("nginx-error.log"));
}

#[test]
fn caddy_publishes_the_page_and_the_spoke_plane_and_keeps_mcp_private() {
    let dir = temp_dir("proxy-caddy");
    support::pki::make_pki(&dir);
    let ports = Ports::new();
    let (_hub, key) = hub(&dir, &ports);
    let tls = format!(
        "\ttls {} {}",
        s(&dir.join("leaf.pem")),
        s(&dir.join("leaf.key"))
    );
    let sites = ports
        .upstreams(&shipped("Caddyfile"))
        .replace(
            "mcp.hub.example:8443 {",
            &format!("https://localhost:{} {{\n{tls}", ports.private),
        )
        .replace(
            "hub.example {",
            &format!("https://localhost:{} {{\n{tls}", ports.public),
        )
        .replace("bind 10.0.0.1", "bind 127.0.0.1");
    assert!(
        !sites
            .lines()
            .any(|l| !l.trim_start().starts_with('#') && l.contains("hub.example")),
        "every name replaced:\n{sites}"
    );
    let d = s(&dir);
    // Test-only globals: no admin socket, no :80 redirect listener, storage under the test dir.
    let file = format!(
        "{{\n\tadmin off\n\tauto_https disable_redirects\n\tstorage file_system {d}/caddy-data\n\tskip_install_trust\n}}\n\n{sites}"
    );
    std::fs::write(dir.join("Caddyfile"), file).expect("Caddyfile");
    let env = |c: &mut Command| {
        c.env("HOME", d)
            .env("XDG_DATA_HOME", dir.join("xdg-data"))
            .env("XDG_CONFIG_HOME", dir.join("xdg-config"));
    };
    let mut validate = Command::new("caddy");
    validate.args([
        "validate",
        "--adapter",
        "caddyfile",
        "--config",
        s(&dir.join("Caddyfile")),
    ]);
    env(&mut validate);
    let v = validate
        .stdin(Stdio::null())
        .output()
        .expect("caddy must be installed (Debian's caddy; .ci/run installs it)");
    assert!(
        v.status.success(),
        "caddy validate: {}",
        String::from_utf8_lossy(&v.stderr)
    );
    let mut run = Command::new("caddy");
    run.args([
        "run",
        "--adapter",
        "caddyfile",
        "--config",
        s(&dir.join("Caddyfile")),
    ]);
    env(&mut run);
    let _caddy = spawn(&mut run, dir.join("caddy.log"), "caddy");
    check_layout(&dir, &ports, &key, &dir.join("caddy.log"));
}
