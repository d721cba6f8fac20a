//! The box manager contract: the seven verbs every spoke serves, and their types.
//!
//! `BoxManager` is the only thing the cluster and the hub know about boxes. Implementations:
//! the Docker manager (`crate::docker`), the remote spoke (`crate::cluster`), and the in-memory
//! manager in [`memory`] for tests of the layers above. This module also owns the box-id rule,
//! because every implementation and the hub must apply the same one.

mod id;
// A test double: compiled for unit tests and with `--features test-doubles` only.
#[cfg(any(test, feature = "test-doubles"))]
pub mod memory;

pub use id::{ContainerId, SHORT_LEN, short_id};

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Longest DNS label, and so the longest box id.
pub(crate) const MAX_BOX_ID_LEN: usize = 63;

/// Longest OAuth code `submit_code` accepts (real ones are about a hundred characters; the
/// hub's activation page allows the same).
pub(crate) const MAX_CODE_BYTES: usize = 4096;

/// The image the real box runs (`make box-image` builds it): the hub's default `--box-image`.
pub const DEFAULT_BOX_IMAGE: &str = "llmbox-box:latest";

/// Default number of log lines returned by `logs` when the caller names none.
pub(crate) const DEFAULT_LOG_TAIL: usize = 200;

/// The seven verbs. Every implementation re-validates its arguments and acts only on the
/// boxes it manages itself (its own namespace).
pub trait BoxManager: Send + Sync {
    /// Creates and starts a box parked at its login prompt; returns the container id and the
    /// OAuth authorize URL the box printed.
    ///
    /// # Errors
    /// Invalid or duplicate box id, the box ceiling, an image that is missing or not allowed,
    /// or a backend failure (nothing is left behind on failure).
    fn create(&self, opts: CreateOptions) -> Result<Created, BoxError>;

    /// Feeds an OAuth code to a pending box; returns the remote-control session URL.
    ///
    /// # Errors
    /// Unknown box, or the login failed (the error carries the box's own words, never the code).
    fn submit_code(&self, id_or_name: &str, code: &str) -> Result<String, BoxError>;

    /// Lists the managed boxes of this manager's namespace.
    ///
    /// # Errors
    /// Backend failure.
    fn list(&self) -> Result<Vec<BoxInfo>, BoxError>;

    /// Stops and removes a box and its network.
    ///
    /// # Errors
    /// Unknown box or backend failure.
    fn destroy(&self, id_or_name: &str) -> Result<(), BoxError>;

    /// The last `tail` lines of the box's output, ANSI and CR stripped.
    ///
    /// # Errors
    /// Unknown box or backend failure.
    fn logs(&self, id_or_name: &str, tail: usize) -> Result<String, BoxError>;

    /// Runs `cmd` in the box without a TTY; a non-zero exit is a result, not an error.
    ///
    /// # Errors
    /// Unknown box, empty command, or backend failure.
    fn exec(&self, id_or_name: &str, cmd: &[String]) -> Result<ExecResult, BoxError>;

    /// Removes pending boxes older than `ttl`; ready boxes are never reaped. Returns the short
    /// (12-character) container ids removed. (The Docker manager also removes box networks
    /// whose box was removed behind its back.)
    ///
    /// # Errors
    /// Backend failure.
    fn reap(&self, ttl: Duration) -> Result<Vec<String>, BoxError>;
}

/// What `create` needs. Validated by [`CreateOptions::validate`] in every implementation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateOptions {
    /// Image to run; required (spokes hold no default).
    pub image: String,
    /// The caller's name for the box: one DNS label, unique case-insensitively.
    pub box_id: String,
    /// Free text shown in listings.
    pub description: String,
    /// The spoke the hub routed this create to (informational on the spoke).
    pub spoke_name: String,
    /// Files written into the box before it starts (hooks, seeds).
    pub files: Vec<InjectFile>,
}

impl CreateOptions {
    /// Checks the parts every implementation must refuse before touching anything.
    ///
    /// # Errors
    /// [`BoxError::InvalidBoxId`], [`BoxError::NoImage`], [`BoxError::InvalidArgument`] for a
    /// file path that is not absolute or climbs with `..`.
    pub(crate) fn validate(&self) -> Result<(), BoxError> {
        validate_box_id(&self.box_id)?;
        if self.image.trim().is_empty() {
            return Err(BoxError::NoImage);
        }
        for file in &self.files {
            file.validate()?;
        }
        Ok(())
    }
}

/// One file injected into a box at create time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InjectFile {
    /// Absolute path inside the box.
    pub path: String,
    /// Raw bytes.
    pub content: Vec<u8>,
    /// Permission bits (e.g. 0o644).
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
}

impl InjectFile {
    /// A path must be absolute, without `..`, NUL or empty components, and the mode must be
    /// permission bits only.
    ///
    /// # Errors
    /// [`BoxError::InvalidArgument`] naming the path.
    pub(crate) fn validate(&self) -> Result<(), BoxError> {
        let bad = |why: &str| {
            Err(BoxError::InvalidArgument(format!(
                "file path {:?}: {why}",
                self.path
            )))
        };
        if !self.path.starts_with('/') {
            return bad("must be absolute");
        }
        if self.path.contains('\0') {
            return bad("contains a NUL byte");
        }
        let parts: Vec<&str> = self.path[1..].split('/').collect();
        if parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == "..")
        {
            return bad("must not contain empty, '.' or '..' components");
        }
        if self.mode > 0o7777 {
            return Err(BoxError::InvalidArgument(format!(
                "file {:?}: mode {:o} is not permission bits",
                self.path, self.mode
            )));
        }
        Ok(())
    }
}

/// The result of `create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Created {
    /// Full container id.
    pub id: String,
    /// The OAuth authorize URL the box is waiting on. A secret-ish link: never shown to a model.
    pub authorize_url: String,
}

/// Where a box is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Waiting for its OAuth code.
    Pending,
    /// Logged in and running remote control.
    Ready,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Pending => "pending",
            Phase::Ready => "ready",
        })
    }
}

/// One box as `list` reports it; this is also the wire `Box` of DESIGN §4.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoxInfo {
    /// Short (12-character) container id: a listing carries only the short form, from the local
    /// spoke as from a remote one.
    pub container_id: ContainerId,
    /// Container name (`llmbox-pending-<id12>` or `llmbox-<id12>`).
    pub name: String,
    /// The caller's box id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub box_id: String,
    /// Free text from create.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The spoke (namespace) the box lives on.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub spoke: String,
    /// Image the box runs.
    pub image: String,
    /// Docker state (`running`, `exited`, …).
    pub state: String,
    /// Docker's human status (`Up 3 minutes`).
    pub(crate) status: String,
    /// Pending or ready.
    pub phase: Phase,
    /// Creation time, unix seconds.
    pub(crate) created: i64,
}

/// The result of `exec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecResult {
    /// Standard output, capped (a truncation marker ends a capped stream).
    pub stdout: String,
    /// Standard error, capped likewise.
    pub stderr: String,
    /// The command's exit code.
    pub exit_code: i64,
}

/// Why a verb failed. Displayed text is meant for a person or a model to act on.
#[derive(Debug)]
pub enum BoxError {
    /// The box id breaks the DNS-label rule; holds the offending id.
    InvalidBoxId(String),
    /// Another box already uses this id (compared case-insensitively).
    DuplicateBoxId(String),
    /// The `--max-boxes` ceiling is reached; holds the ceiling.
    TooManyBoxes(usize),
    /// `create` named no image.
    NoImage,
    /// The image is not on the spoke's `--allowed-image` list.
    ImageNotAllowed(String),
    /// Any other bad argument (a file path, an empty command, …).
    InvalidArgument(String),
    /// No managed box of this namespace matches the given id, name or prefix.
    NotFound(String),
    /// The box itself reported a failure (login failed, no URL printed in time); the text is
    /// the box's own last words, never a secret.
    Box(String),
    /// The backend (Docker, a spoke's transport) failed; the source keeps the full chain.
    Backend(Box<dyn std::error::Error + Send + Sync + 'static>),
    /// The manager cannot be reached at all (spoke disconnected, Docker down, deadline missed).
    Unavailable(String),
    /// An error that crossed the wire from a spoke, kept as the spoke wrote it.
    Remote(RemoteError),
}

/// What kind of failure a verb met, as far as a caller acts on it. It crosses the wire as the
/// optional `kind` of an error `resp`, so a hub treats a remote spoke's failure like the local
/// spoke's; a spoke that sends none (llmbox's Go spoke) gives an untyped [`RemoteError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// No managed box matches the id, name or prefix ([`BoxError::NotFound`]).
    NotFound,
    /// The box id is taken ([`BoxError::DuplicateBoxId`]).
    Duplicate,
    /// An argument was refused before anything was touched (box id, image, path, command).
    Invalid,
    /// The manager cannot take this now, though it may later ([`BoxError::TooManyBoxes`]).
    Busy,
    /// The manager cannot be reached ([`BoxError::Unavailable`]).
    Unavailable,
    /// A kind this build does not know (a newer spoke): treated as untyped.
    #[serde(other)]
    Unknown,
}

/// A spoke's failure as it arrived: its words, and its kind when it sent one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteError {
    /// The kind the spoke named; `None` for an untyped error (or a kind this build lacks).
    pub kind: Option<ErrorKind>,
    /// The spoke's error text, bounded by the receiving end.
    pub message: String,
}

impl RemoteError {
    /// An error received with `kind` (absent or unknown means untyped).
    pub fn new(kind: Option<ErrorKind>, message: String) -> Self {
        RemoteError {
            kind: kind.filter(|k| *k != ErrorKind::Unknown),
            message,
        }
    }
}

impl BoxError {
    /// The error for a key (id prefix, name or box id) that names `count` boxes, two or more:
    /// a verb never picks one of them.
    pub(crate) fn ambiguous(key: &str, count: usize) -> BoxError {
        BoxError::InvalidArgument(format!(
            "{key:?} matches {count} managed boxes; give the box id or more of the container id"
        ))
    }
}

impl fmt::Display for BoxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BoxError::InvalidBoxId(id) => write!(
                f,
                "invalid box id {id:?}: use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit"
            ),
            BoxError::DuplicateBoxId(id) => write!(
                f,
                "a box with id {id:?} already exists; pick another id or destroy that box first"
            ),
            BoxError::TooManyBoxes(max) => write!(
                f,
                "box limit reached ({max} boxes); destroy a box before creating another"
            ),
            BoxError::NoImage => f.write_str("no image given: name the image the box should run"),
            BoxError::ImageNotAllowed(image) => {
                write!(f, "image {image:?} is not allowed on this spoke")
            }
            BoxError::InvalidArgument(msg) => write!(f, "invalid argument: {msg}"),
            BoxError::NotFound(what) => write!(f, "no managed box matches {what:?}"),
            BoxError::Box(msg) => f.write_str(msg),
            BoxError::Backend(err) => write!(f, "{err}"),
            BoxError::Unavailable(msg) => f.write_str(msg),
            BoxError::Remote(remote) => f.write_str(&remote.message),
        }
    }
}

impl BoxError {
    /// The kind of this failure: the one mapping from errors to kinds, used by a spoke to type
    /// its answer and by the hub to decide how to handle a failure from any spoke. `None` for
    /// failures a caller can only report (the box's own words, a backend failure).
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            BoxError::NotFound(_) => Some(ErrorKind::NotFound),
            BoxError::DuplicateBoxId(_) => Some(ErrorKind::Duplicate),
            BoxError::InvalidBoxId(_)
            | BoxError::NoImage
            | BoxError::ImageNotAllowed(_)
            | BoxError::InvalidArgument(_) => Some(ErrorKind::Invalid),
            BoxError::TooManyBoxes(_) => Some(ErrorKind::Busy),
            BoxError::Unavailable(_) => Some(ErrorKind::Unavailable),
            BoxError::Box(_) | BoxError::Backend(_) => None,
            BoxError::Remote(remote) => remote.kind,
        }
    }
}

impl std::error::Error for BoxError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BoxError::Backend(err) => Some(err.as_ref()),
            _ => None,
        }
    }
}

/// True when `id` is one DNS label: `^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`.
pub(crate) fn is_valid_box_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            bytes.len() <= MAX_BOX_ID_LEN
                && alnum(first)
                && alnum(last)
                && bytes.iter().all(|b| alnum(b) || *b == b'-')
        }
        _ => false,
    }
}

/// Checks an OAuth code for `submit_code` and returns it trimmed. The code is typed into the
/// box's terminal, where a control character is a key press (^C kills the login, ^D ends its
/// input, ESC starts a sequence), not text; so only one line of printable characters passes.
/// The error never quotes the code.
///
/// # Errors
/// [`BoxError::InvalidArgument`].
pub(crate) fn validate_code(code: &str) -> Result<&str, BoxError> {
    let code = code.trim();
    if code.is_empty() || code.chars().any(char::is_control) {
        return Err(BoxError::InvalidArgument(
            "the code must be one non-empty line of printable characters".into(),
        ));
    }
    if code.len() > MAX_CODE_BYTES {
        return Err(BoxError::InvalidArgument(format!(
            "the code is longer than {MAX_CODE_BYTES} bytes; paste only the code the sign-in page shows"
        )));
    }
    Ok(code)
}

/// [`is_valid_box_id`] as a `Result`.
///
/// # Errors
/// [`BoxError::InvalidBoxId`].
pub(crate) fn validate_box_id(id: &str) -> Result<(), BoxError> {
    if is_valid_box_id(id) {
        Ok(())
    } else {
        Err(BoxError::InvalidBoxId(id.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_id_accepts_dns_labels() {
        for id in ["a", "0", "web", "my-box-1", &"a".repeat(63)] {
            assert!(is_valid_box_id(id), "{id}");
        }
    }

    #[test]
    fn box_id_rejects_everything_else() {
        for id in [
            "",
            "Bad_ID",
            "a;rm -rf /",
            "-lead",
            "trail-",
            "UPPER",
            "dot.ted",
            "spa ce",
            "ünï",
            &"a".repeat(64),
        ] {
            assert!(!is_valid_box_id(id), "{id}");
            assert!(matches!(
                validate_box_id(id),
                Err(BoxError::InvalidBoxId(_))
            ));
        }
    }

    #[test]
    fn inject_file_paths_must_be_absolute_and_plain() {
        let file = |path: &str| InjectFile {
            path: path.into(),
            mode: 0o644,
            ..Default::default()
        };
        assert!(file("/etc/hook.json").validate().is_ok());
        for path in ["rel/x", "/a/../b", "/a//b", "/a/./b", "/", "/a\0b"] {
            assert!(file(path).validate().is_err(), "{path:?}");
        }
        let mut wide = file("/x");
        wide.mode = 0o10000;
        assert!(wide.validate().is_err());
    }

    #[test]
    fn codes_are_one_trimmed_line_of_printable_characters() {
        assert_eq!(
            validate_code("  abc#state-1 \n").expect("ok"),
            "abc#state-1"
        );
        let long = "a".repeat(MAX_CODE_BYTES + 1);
        for code in [
            "", " \t ", "ab\ncd", "ab\rcd", "a\0b", "a\u{3}b", "a\u{4}", "\u{1b}[A", &long,
        ] {
            let err = validate_code(code).expect_err("refused");
            assert!(matches!(err, BoxError::InvalidArgument(_)), "{code:?}");
            let text = err.to_string();
            assert!(
                code.trim().is_empty() || !text.contains(code.trim()),
                "{text}"
            );
        }
    }

    #[test]
    fn create_options_need_an_image() {
        let opts = CreateOptions {
            box_id: "web".into(),
            ..Default::default()
        };
        assert!(matches!(opts.validate(), Err(BoxError::NoImage)));
    }

    #[test]
    fn every_refusal_has_a_kind_and_a_remote_error_keeps_the_one_it_arrived_with() {
        let cases = [
            (BoxError::NotFound("x".into()), Some(ErrorKind::NotFound)),
            (
                BoxError::DuplicateBoxId("x".into()),
                Some(ErrorKind::Duplicate),
            ),
            (BoxError::InvalidBoxId("X".into()), Some(ErrorKind::Invalid)),
            (BoxError::NoImage, Some(ErrorKind::Invalid)),
            (
                BoxError::ImageNotAllowed("i".into()),
                Some(ErrorKind::Invalid),
            ),
            (
                BoxError::InvalidArgument("a".into()),
                Some(ErrorKind::Invalid),
            ),
            (BoxError::TooManyBoxes(3), Some(ErrorKind::Busy)),
            (
                BoxError::Unavailable("down".into()),
                Some(ErrorKind::Unavailable),
            ),
            (BoxError::Box("login failed".into()), None),
            (BoxError::Backend("io".into()), None),
        ];
        for (err, kind) in cases {
            assert_eq!(err.kind(), kind, "{err:?}");
            let remote = BoxError::Remote(RemoteError::new(err.kind(), err.to_string()));
            assert_eq!(remote.kind(), kind);
            assert_eq!(remote.to_string(), err.to_string());
        }
        let newer = RemoteError::new(Some(ErrorKind::Unknown), "x".into());
        assert_eq!(BoxError::Remote(newer).kind(), None);
    }

    #[test]
    fn error_kinds_have_snake_case_wire_names_and_unknown_ones_decode() {
        assert_eq!(
            serde_json::to_string(&ErrorKind::NotFound).expect("json"),
            "\"not_found\""
        );
        let k: ErrorKind = serde_json::from_str("\"quota_exceeded\"").expect("json");
        assert_eq!(k, ErrorKind::Unknown);
    }

    #[test]
    fn box_info_omits_empty_optional_fields() {
        let info = BoxInfo {
            container_id: "abcdef123456".into(),
            name: "llmbox-abcdef123456".into(),
            box_id: String::new(),
            description: String::new(),
            spoke: String::new(),
            image: "img".into(),
            state: "running".into(),
            status: "Up".into(),
            phase: Phase::Ready,
            created: 5,
        };
        let json = serde_json::to_value(&info).expect("serializable");
        assert!(json.get("box_id").is_none());
        assert_eq!(json["phase"], "ready");
    }
}
