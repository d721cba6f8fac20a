//! Create and submit-code: the two verbs that talk to a box's terminal.
//!
//! Create validates, reserves the box id, makes sure the image is there (one pull when it is
//! missing), creates the container and its network, injects the Claude binary, seed and hook
//! files, attaches *before* start so no output is lost, starts, and waits up to
//! [`AUTHORIZE_DEADLINE`] for the authorize URL. Any failure after the container exists
//! removes it and its network ([`Cleanup`]). Submit-code attaches with stdin (no history),
//! types the code, and reads what the box prints after it for up to [`SUBMIT_DEADLINE`].
//! The code never reaches a log line or an error message.

use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::api;
use super::boxspec::{self, TTY_HEIGHT, TTY_WIDTH};
use super::client::Hijacked;
use super::error::DockerError;
use super::manager::{DockerBoxManager, backend, backend_on};
use super::text;
use crate::boxes::{BoxError, CreateOptions, Created};

/// How long create waits for the authorize URL.
pub(crate) const AUTHORIZE_DEADLINE: Duration = Duration::from_secs(30);
/// How long submit-code waits for the session URL.
pub(crate) const SUBMIT_DEADLINE: Duration = Duration::from_secs(60);
/// Most terminal output kept while scanning for a URL.
pub(crate) const MAX_CAPTURE_BYTES: usize = 1024 * 1024;
/// Lines of the box's own output quoted in a failure.
pub(crate) const QUOTED_LINES: usize = 6;
/// Largest `--claude-bin` accepted.
pub(crate) const MAX_CLAUDE_BIN_BYTES: u64 = 1024 * 1024 * 1024;

/// Removes a half-made box (container and network) unless disarmed.
struct Cleanup<'a> {
    manager: &'a DockerBoxManager,
    id: Option<String>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take()
            && let Err(e) = self.manager.remove_box(&id, false)
        {
            warn!("cleanup of failed box {}: {e}", boxspec::short_id(&id));
        }
    }
}

/// What the terminal showed when the wait ended.
enum Seen {
    /// The thing we waited for.
    Found(String),
    /// The box printed a fresh authorize URL instead (a failed login); holds the text before.
    NewLogin(String),
    /// The box's output ended (it exited); holds everything seen.
    Ended(String),
    /// The deadline passed; holds everything seen.
    Deadline(String),
}

/// Reads the hijacked terminal until `scan` finds something or the deadline passes.
fn watch(
    stream: &mut Hijacked,
    deadline: Instant,
    scan: impl Fn(&str) -> Option<Seen>,
) -> Result<Seen, DockerError> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Seen::Deadline(text::strip_ansi(&raw)));
        }
        stream
            .reader
            .get_ref()
            .set_read_timeout(Some(left))
            .map_err(|e| DockerError::io("set attach timeout", e))?;
        match stream.reader.read(&mut buf) {
            Ok(0) => return Ok(Seen::Ended(text::strip_ansi(&raw))),
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if raw.len() > MAX_CAPTURE_BYTES {
                    raw.drain(..raw.len() - MAX_CAPTURE_BYTES);
                }
                if let Some(seen) = scan(&text::strip_ansi(&raw)) {
                    return Ok(seen);
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Ok(Seen::Deadline(text::strip_ansi(&raw)));
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(DockerError::io("read box terminal", e)),
        }
    }
}

/// The box's last meaningful lines, without URLs of the sign-in and without `secret`.
fn quote_box(seen: &str, secret: Option<&str>) -> String {
    let lines: Vec<&str> = seen
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .filter(|l| !l.contains("/oauth/authorize"))
        .filter(|l| secret.is_none_or(|s| s.is_empty() || !l.contains(s)))
        .collect();
    let start = lines.len().saturating_sub(QUOTED_LINES);
    if lines[start..].is_empty() {
        "(the box printed nothing)".to_string()
    } else {
        lines[start..].join(" | ")
    }
}

impl DockerBoxManager {
    pub(super) fn create_box(&self, opts: CreateOptions) -> Result<Created, BoxError> {
        opts.validate()?;
        // Build the archive first: a path ustar cannot hold is refused before anything exists.
        let claude = self.read_claude_bin()?;
        let tar = boxspec::injection_tar(claude.as_deref(), &opts.files)
            .map_err(|e| BoxError::InvalidArgument(e.to_string()))?;
        let _reservation = self.reserve(&opts.box_id)?;
        self.ensure_image(&opts.image)?;

        let body = boxspec::create_body(&self.config, &opts.image, &opts.box_id, &opts.description);
        let id = api::create_container(&self.client, "", &body).map_err(backend)?;
        let mut cleanup = Cleanup {
            manager: self,
            id: Some(id.clone()),
        };
        let step = |what: &str, e: DockerError| backend(e.context(what));
        api::rename_container(&self.client, &id, &boxspec::pending_name(&id))
            .map_err(|e| step("name the box", e))?;
        self.wire_network(&id, &opts.box_id)?;
        api::put_archive(&self.client, &id, "/", &tar)
            .map_err(|e| step("copy files into the box", e))?;
        let mut stream = api::attach(&self.client, &id, false, AUTHORIZE_DEADLINE)
            .map_err(|e| step("attach to the box", e))?;
        api::start_container(&self.client, &id).map_err(|e| step("start the box", e))?;
        if let Err(e) = api::resize_container(&self.client, &id, TTY_WIDTH, TTY_HEIGHT) {
            debug!("resize {}: {e}", boxspec::short_id(&id));
        }
        let deadline = Instant::now() + AUTHORIZE_DEADLINE;
        let seen = watch(&mut stream, deadline, |t| {
            text::authorize_urls(t)
                .into_iter()
                .next()
                .map(|(_, url)| Seen::Found(url))
        })
        .map_err(backend)?;
        let authorize_url = match seen {
            Seen::Found(url) => url,
            Seen::Ended(t) => {
                return Err(BoxError::Box(format!(
                    "box {} exited before printing a sign-in link: {}",
                    opts.box_id,
                    quote_box(&t, None)
                )));
            }
            Seen::Deadline(t) | Seen::NewLogin(t) => {
                return Err(BoxError::Box(format!(
                    "box {} printed no sign-in link within {}s: {}",
                    opts.box_id,
                    AUTHORIZE_DEADLINE.as_secs(),
                    quote_box(&t, None)
                )));
            }
        };
        cleanup.id = None;
        info!(
            "created box {} ({}) in namespace {}",
            opts.box_id,
            boxspec::short_id(&id),
            self.config.namespace
        );
        Ok(Created { id, authorize_url })
    }

    fn read_claude_bin(&self) -> Result<Option<Vec<u8>>, BoxError> {
        let Some(path) = &self.config.claude_bin else {
            return Ok(None);
        };
        let fail = |e: std::io::Error| {
            BoxError::Unavailable(format!("read --claude-bin {}: {e}", path.display()))
        };
        let meta = std::fs::metadata(path).map_err(fail)?;
        if meta.len() > MAX_CLAUDE_BIN_BYTES {
            return Err(BoxError::Unavailable(format!(
                "--claude-bin {} is larger than {MAX_CLAUDE_BIN_BYTES} bytes",
                path.display()
            )));
        }
        std::fs::read(path).map(Some).map_err(fail)
    }

    fn ensure_image(&self, image: &str) -> Result<(), BoxError> {
        if api::image_exists(&self.client, image).map_err(backend)? {
            return Ok(());
        }
        info!("image {image} is missing; pulling it once");
        api::pull_image(&self.client, image).map_err(|e| {
            // The daemon's words name the host's resolver and network addresses: they stay in
            // this host's log; the caller (and through it the chatbot) gets the fix-it line.
            warn!("pulling image {image}: {e}");
            BoxError::InvalidArgument(missing_image(image, &e.to_string()))
        })
    }

    /// Gives the box its own network with the peers on it, and takes it off the default
    /// bridge.
    fn wire_network(&self, id: &str, box_id: &str) -> Result<(), BoxError> {
        let net = boxspec::network_name(id);
        let labels = boxspec::network_labels(&self.config.namespace, box_id);
        let fail = |what: String, e: DockerError| backend(e.context(what));
        api::create_network(&self.client, &net, &labels)
            .map_err(|e| fail(format!("create network {net}"), e))?;
        api::connect_network(&self.client, &net, id)
            .map_err(|e| fail(format!("connect the box to {net}"), e))?;
        api::disconnect_network(&self.client, "bridge", id)
            .map_err(|e| fail("take the box off the default bridge".into(), e))?;
        for peer in &self.config.box_peers {
            api::connect_network(&self.client, &net, peer)
                .map_err(|e| fail(format!("connect box peer {peer:?} to {net}"), e))?;
        }
        Ok(())
    }

    pub(super) fn submit(&self, id_or_name: &str, code: &str) -> Result<String, BoxError> {
        let code = crate::boxes::validate_code(code)?;
        let b = self.resolve(id_or_name)?;
        let label = b
            .labels
            .get(boxspec::LABEL_BOX_ID)
            .cloned()
            .unwrap_or_else(|| boxspec::short_id(&b.id).to_string());
        if !boxspec::is_pending_name(b.name()) {
            return Err(BoxError::Box(format!("box {label} is already activated")));
        }
        if b.state != "running" {
            return Err(BoxError::Box(format!(
                "box {label} is {} and cannot take a code; destroy it and create a new one",
                b.state
            )));
        }
        let mut stream = api::attach(&self.client, &b.id, true, SUBMIT_DEADLINE)
            .map_err(backend_on(id_or_name))?;
        let mut line = code.as_bytes().to_vec();
        line.push(b'\r');
        stream
            .writer
            .write_all(&line)
            .map_err(|e| backend(DockerError::io("type the code into the box", e)))?;
        let deadline = Instant::now() + SUBMIT_DEADLINE;
        let seen = watch(&mut stream, deadline, |t| {
            if let Some((at, _)) = text::authorize_urls(t).into_iter().next() {
                return Some(Seen::NewLogin(t[..at].to_string()));
            }
            text::session_url(t).map(Seen::Found)
        })
        .map_err(backend)?;
        drop(stream);
        match seen {
            Seen::Found(url) => {
                api::rename_container(&self.client, &b.id, &boxspec::ready_name(&b.id))
                    .map_err(backend_on(id_or_name))?;
                info!("box {label} ({}) is ready", boxspec::short_id(&b.id));
                Ok(url)
            }
            Seen::NewLogin(t) => Err(BoxError::Box(format!(
                "sign-in failed in box {label}: {}; a new sign-in link is waiting",
                quote_box(&t, Some(code))
            ))),
            Seen::Ended(t) => Err(BoxError::Box(format!(
                "box {label} stopped after the code was typed: {}",
                quote_box(&t, Some(code))
            ))),
            Seen::Deadline(t) => Err(BoxError::Box(format!(
                "box {label} printed no session link within {}s: {}",
                SUBMIT_DEADLINE.as_secs(),
                quote_box(&t, Some(code))
            ))),
        }
    }
}

/// What a create that needs a missing image is told: what went wrong in a few words (never the
/// daemon's text, which names the host's resolver and addresses) and how the operator fixes it.
pub(crate) fn missing_image(image: &str, daemon_said: &str) -> String {
    let said = daemon_said.to_ascii_lowercase();
    let why = if [
        "lookup ",
        "dial tcp",
        "no such host",
        "timeout",
        "connection refused",
        "network is unreachable",
    ]
    .iter()
    .any(|w| said.contains(w))
    {
        "no registry is reachable from this host"
    } else if [
        "pull access denied",
        "not found",
        "manifest unknown",
        "does not exist",
    ]
    .iter()
    .any(|w| said.contains(w))
    {
        "the registry has no such image"
    } else {
        "the registry refused the pull"
    };
    let fix = if image == crate::boxes::DEFAULT_BOX_IMAGE {
        "build it on the box host with `make box-image` (in the llmbox sources)".to_string()
    } else {
        format!("load {image:?} on the box host (docker pull / docker load)")
    };
    format!(
        "image {image:?} is not on this host and could not be pulled ({why}); this is for the hub's operator: {fix}, or start the hub with --box-image naming an image the host has"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boxes::{BoxManager, MAX_CODE_BYTES};
    use crate::docker::ManagerConfig;

    #[test]
    fn a_failed_pull_names_the_fix_and_never_the_hosts_addresses() {
        let said = r#"Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io on 10.0.2.3:53: no such host"#;
        let m = missing_image("llmbox-box:latest", said);
        assert!(
            m.contains("make box-image") && m.contains("--box-image"),
            "{m}"
        );
        assert!(m.contains("no registry is reachable"), "{m}");
        assert!(!m.contains("10.0.2.3") && !m.contains("registry-1"), "{m}");
        let other = missing_image("acme/tool:1", "pull access denied for acme/tool");
        assert!(
            other.contains("no such image") && other.contains("acme/tool:1"),
            "{other}"
        );
        assert!(!other.contains("make box-image"), "{other}");
    }

    #[test]
    fn codes_that_are_not_one_printable_line_are_refused_before_docker_is_asked() {
        // No daemon listens here: a refusal that asked Docker would be "cannot reach Docker".
        let mut config = ManagerConfig::new("local");
        config.docker_host = format!("unix:///tmp/llmbox-no-daemon-{}.sock", std::process::id());
        let m = DockerBoxManager::new(config).expect("manager");
        let long = "a".repeat(MAX_CODE_BYTES + 1);
        for code in [
            "",
            "  ",
            "ab\ncd",
            "ab\rcd",
            "ab\0",
            "ab\u{3}cd",
            "ab\u{4}",
            "\u{1b}[A",
            &long,
        ] {
            let err = m.submit_code("web", code).expect_err("refused");
            assert!(
                matches!(err, BoxError::InvalidArgument(_)),
                "{code:?}: {err}"
            );
            assert!(
                !err.to_string().contains(code.trim()) || code.trim().is_empty(),
                "{err}"
            );
        }
        let ok = m
            .submit_code("web", " good-code#state ")
            .expect_err("no daemon");
        assert!(matches!(ok, BoxError::Unavailable(_)), "{ok}");
    }

    #[test]
    fn quoted_box_output_never_holds_the_code_or_sign_in_links() {
        let seen = "Paste code: s3cret-code\nhttps://claude.com/cai/oauth/authorize?code_challenge=a&state=b\n\
            OAuth error: Invalid code\nllmbox: sign-in did not complete\n";
        let quoted = quote_box(seen, Some("s3cret-code"));
        assert!(!quoted.contains("s3cret"), "{quoted}");
        assert!(!quoted.contains("authorize"), "{quoted}");
        assert!(quoted.contains("OAuth error: Invalid code"), "{quoted}");
        assert_eq!(quote_box("\n\n", None), "(the box printed nothing)");
    }
}
