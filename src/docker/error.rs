//! `DockerError`: every way a call to the Docker Engine fails, keeping the daemon's own words.

use std::fmt;
use std::io;

use super::http::HttpError;

/// Longest daemon message kept in an error: the message reaches a person (MCP output, the
/// activation page, a log line), and an error body can be megabytes of whatever the peer sent.
pub(crate) const MAX_DAEMON_MESSAGE_BYTES: usize = 4096;

/// A failed Docker Engine call.
#[derive(Debug)]
pub enum DockerError {
    /// `--docker-host` / `DOCKER_HOST` is not `unix://…` or `tcp://host:port`.
    InvalidHost(String),
    /// The daemon could not be reached at all (socket missing, refused, connect timeout).
    Unreachable {
        /// The host URL as configured.
        host: String,
        /// Why the connection failed.
        source: io::Error,
    },
    /// Reading or writing an established connection failed (a read timeout shows up here).
    Io {
        /// What was being done.
        context: String,
        /// The I/O failure.
        source: io::Error,
    },
    /// The daemon's answer was not valid HTTP.
    Http {
        /// What was being done.
        context: String,
        /// The protocol problem.
        source: HttpError,
    },
    /// 404 with the daemon's message ("No such container: …").
    NotFound(String),
    /// 409 with the daemon's message (name in use, container not running, …).
    Conflict(String),
    /// Any other error status with the daemon's message.
    Api {
        /// HTTP status.
        status: u16,
        /// The daemon's `message`, or the raw body when it sent none.
        message: String,
    },
    /// A JSON body could not be read or written.
    Json {
        /// What was being decoded.
        context: String,
        /// The serde failure.
        source: serde_json::Error,
    },
    /// The daemon answered something we cannot use (no API version, a missing field).
    Protocol(String),
    /// A step of a larger operation failed; `context` names the step.
    Context {
        /// What was being done ("start the box").
        context: String,
        /// Why it failed.
        source: Box<DockerError>,
    },
}

impl DockerError {
    /// True for a daemon that cannot be reached at all.
    pub(crate) fn is_unreachable(&self) -> bool {
        match self {
            DockerError::Unreachable { .. } => true,
            DockerError::Context { source, .. } => source.is_unreachable(),
            _ => false,
        }
    }

    /// True for a 404 from the daemon.
    pub fn is_not_found(&self) -> bool {
        matches!(self, DockerError::NotFound(_))
    }

    /// Wraps `self` with the step that failed.
    pub(crate) fn context(self, context: impl Into<String>) -> Self {
        DockerError::Context {
            context: context.into(),
            source: Box::new(self),
        }
    }

    /// An error for a failed read/write, naming the timeout when that is what happened.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        DockerError::Io {
            context: context.into(),
            source,
        }
    }

    /// Wraps a codec error; an I/O error inside it is reported as I/O.
    pub(crate) fn http(context: impl Into<String>, source: HttpError) -> Self {
        match source {
            HttpError::Io(e) => DockerError::io(context, e),
            other => DockerError::Http {
                context: context.into(),
                source: other,
            },
        }
    }

    /// The typed error for an error status, from the daemon's `{"message": …}` body.
    pub(crate) fn from_status(status: u16, body: &[u8]) -> Self {
        let message = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
            .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
        let message = clip(message, MAX_DAEMON_MESSAGE_BYTES);
        match status {
            404 => DockerError::NotFound(message),
            409 => DockerError::Conflict(message),
            _ => DockerError::Api { status, message },
        }
    }
}

/// `text` cut to at most `max` bytes at a character boundary, marked when cut.
pub(crate) fn clip(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str(" [truncated]");
    }
    text
}

fn describe_io(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => "timed out".to_string(),
        _ => e.to_string(),
    }
}

impl fmt::Display for DockerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DockerError::InvalidHost(h) => write!(
                f,
                "invalid Docker host {h:?}: use unix:///path/to/docker.sock or tcp://host:port"
            ),
            DockerError::Unreachable { host, source } => {
                write!(f, "cannot reach Docker at {host}: {}", describe_io(source))
            }
            DockerError::Io { context, source } => {
                write!(f, "docker: {context}: {}", describe_io(source))
            }
            DockerError::Http { context, source } => write!(f, "docker: {context}: {source}"),
            DockerError::NotFound(m) | DockerError::Conflict(m) => write!(f, "docker: {m}"),
            DockerError::Api { status, message } => write!(f, "docker: HTTP {status}: {message}"),
            DockerError::Json { context, source } => write!(f, "docker: {context}: {source}"),
            DockerError::Protocol(m) => write!(f, "docker: {m}"),
            DockerError::Context { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for DockerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DockerError::Unreachable { source, .. } | DockerError::Io { source, .. } => {
                Some(source)
            }
            DockerError::Http { source, .. } => Some(source),
            DockerError::Json { source, .. } => Some(source),
            DockerError::Context { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_messages_become_typed_errors() {
        let nf = DockerError::from_status(404, br#"{"message":"No such container: x"}"#);
        assert!(nf.is_not_found());
        assert_eq!(nf.to_string(), "docker: No such container: x");
        let c = DockerError::from_status(409, br#"{"message":"name in use"}"#);
        assert!(matches!(c, DockerError::Conflict(_)));
        let other = DockerError::from_status(500, b"plain text\n");
        assert_eq!(other.to_string(), "docker: HTTP 500: plain text");
    }

    #[test]
    fn a_huge_daemon_message_is_clipped_at_a_character_boundary() {
        let body = format!(
            "{{\"message\":\"{}\"}}",
            "\u{e9}".repeat(MAX_DAEMON_MESSAGE_BYTES)
        );
        let e = DockerError::from_status(500, body.as_bytes());
        let DockerError::Api { message, .. } = &e else {
            panic!("{e:?}");
        };
        assert!(message.len() <= MAX_DAEMON_MESSAGE_BYTES + " [truncated]".len());
        assert!(message.starts_with('\u{e9}') && message.ends_with(" [truncated]"));
        let raw = vec![b'x'; 10 * MAX_DAEMON_MESSAGE_BYTES];
        assert!(
            DockerError::from_status(404, &raw).to_string().len() < 2 * MAX_DAEMON_MESSAGE_BYTES
        );
        assert_eq!(clip("short".into(), 10), "short");
    }

    #[test]
    fn unreachable_names_the_host_and_reason() {
        let e = DockerError::Unreachable {
            host: "unix:///nope.sock".into(),
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        assert!(e.is_unreachable());
        assert!(
            e.to_string()
                .starts_with("cannot reach Docker at unix:///nope.sock: "),
            "{e}"
        );
        let t = DockerError::io("read", io::Error::from(io::ErrorKind::WouldBlock));
        assert_eq!(t.to_string(), "docker: read: timed out");
    }
}
