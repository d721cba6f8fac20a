//! The real OpenID provider of the sign-in tests: django-oauth-toolkit from PyPI with OIDC on
//! (`tests/fixtures/oidc/provider.py`, its own login form, a fresh RSA key), in `.venv-oidc`
//! (`make test-clients`), started on a free loopback port and killed when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The hub's client id at the provider.
pub const CLIENT_ID: &str = "llmbox-test-hub";

/// The hub's client secret at the provider (written to the file the provider reads).
const CLIENT_SECRET: &str = "provider-test-secret-1";

/// Fails loudly when a test tool `make test-clients` installs is missing.
pub fn require(path: &Path) {
    assert!(
        path.exists(),
        "{} is missing: run `make test-clients` (make test does) to install the OpenID provider, chromium and chromedriver",
        path.display()
    );
}

/// The interpreter of `.venv-oidc`.
pub fn python() -> PathBuf {
    let p = super::root().join(".venv-oidc/bin/python");
    require(&p);
    p
}

/// The provider process; killed when dropped (also when the test fails).
pub struct Provider {
    child: Child,
    /// The issuer URL it announced.
    pub issuer: String,
}

impl Provider {
    /// The hub's sign-in configuration for this provider (button label "Test IdP").
    pub fn oidc_config(&self) -> llmbox::hub::signin::OidcConfig {
        llmbox::hub::signin::OidcConfig {
            label: "Test IdP".into(),
            issuer: self.issuer.clone(),
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.into(),
        }
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the provider for a hub whose callback is `redirect_uri`, with `users`
/// (`EMAIL:PASSWORD[:unverified]`).
pub fn start_provider(dir: &Path, redirect_uri: &str, users: &[&str]) -> Provider {
    let secret = dir.join("client-secret");
    std::fs::write(&secret, format!("{CLIENT_SECRET}\n")).expect("secret");
    let port = super::free_port();
    let mut cmd = Command::new(python());
    cmd.arg(super::fixtures().join("oidc/provider.py"))
        .args(["--port", &port.to_string(), "--client-id", CLIENT_ID])
        .arg("--client-secret-file")
        .arg(&secret)
        .args(["--redirect-uri", redirect_uri]);
    for u in users {
        cmd.args(["--user", u]);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the provider");
    let stdout = child.stdout.take().expect("stdout");
    let mut provider = Provider {
        child,
        issuer: String::new(),
    };
    let mut lines = BufReader::new(stdout).lines();
    // Django prints its banner first; the fixture prints `ready ISSUER` once discovery answers.
    provider.issuer = loop {
        let line = lines
            .next()
            .and_then(Result::ok)
            .unwrap_or_else(|| panic!("the provider exited before it was ready"));
        if let Some(issuer) = line.strip_prefix("ready ") {
            break issuer.to_string();
        }
        assert!(!line.contains("never answered"), "provider: {line}");
    };
    // Keep draining its stdout so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    provider
}
