//! Where the hub's state file and a spoke's credentials live when no flag names them, so a
//! command run from another directory finds the same file instead of quietly starting a new one
//! in the current directory (issue 11, item 2).
//!
//! Order: the flag (`--state`, `--credentials`), else the environment variable
//! ([`STATE_ENV`], [`CREDENTIALS_ENV`]), else `/var/lib/llmbox/<file>` when run as root, else
//! `$XDG_STATE_HOME/llmbox/<file>` (`$HOME/.local/state/llmbox/<file>` when that is unset). The
//! directory of a *default* path is created with mode 0700 (a path the operator named is used
//! as given: a missing directory there is a mistake the hub reports at start). No threads.

use std::ffi::OsString;
use std::fmt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// The hub's state file name in its default directory.
pub const STATE_FILE: &str = "llmbox-state.json";
/// A spoke's credentials file name in its default directory.
pub const CREDENTIALS_FILE: &str = "llmbox-spoke.json";
/// Names the state file when `--state` is not given.
pub const STATE_ENV: &str = "LLMBOX_STATE";
/// Names the spoke's credentials file when `--credentials` is not given.
pub const CREDENTIALS_ENV: &str = "LLMBOX_CREDENTIALS";
/// The directory root's files go to (systemd's `StateDirectory=llmbox`).
pub const ROOT_DIR: &str = "/var/lib/llmbox";

/// Which file is being located.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// The hub's state file.
    State,
    /// A spoke's credentials.
    Credentials,
}

impl FileKind {
    fn flag(self) -> &'static str {
        match self {
            FileKind::State => "--state",
            FileKind::Credentials => "--credentials",
        }
    }

    fn env(self) -> &'static str {
        match self {
            FileKind::State => STATE_ENV,
            FileKind::Credentials => CREDENTIALS_ENV,
        }
    }

    fn file(self) -> &'static str {
        match self {
            FileKind::State => STATE_FILE,
            FileKind::Credentials => CREDENTIALS_FILE,
        }
    }

    fn what(self) -> &'static str {
        match self {
            FileKind::State => "state file",
            FileKind::Credentials => "credentials file",
        }
    }
}

/// Where a path came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The command line.
    Flag,
    /// The environment variable.
    Env,
    /// The built-in default (root's directory or the XDG state directory).
    Default,
}

/// A located file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The file.
    pub path: PathBuf,
    /// How it was chosen.
    pub source: Source,
    kind: FileKind,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let from = match self.source {
            Source::Flag => self.kind.flag().to_string(),
            Source::Env => format!("${}", self.kind.env()),
            Source::Default => "default".to_string(),
        };
        write!(
            f,
            "{} {} (from {from})",
            self.kind.what(),
            absolute(&self.path).display()
        )
    }
}

/// Why no path could be chosen.
#[derive(Debug)]
pub enum PathError {
    /// Neither the flag, the variable, `$XDG_STATE_HOME` nor `$HOME` is set (and not root).
    NoHome(FileKind),
    /// The default directory could not be created.
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathError::NoHome(kind) => write!(
                f,
                "no {} given and no home to put one in: pass {}, or set ${}, $XDG_STATE_HOME or $HOME",
                kind.what(),
                kind.flag(),
                kind.env()
            ),
            PathError::CreateDir { dir, source } => {
                write!(f, "cannot create directory {}: {source}", dir.display())
            }
        }
    }
}

impl std::error::Error for PathError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PathError::CreateDir { source, .. } => Some(source),
            PathError::NoHome(_) => None,
        }
    }
}

/// What the choice depends on besides the flag: read from the process, or given by a test.
#[derive(Debug, Clone, Default)]
pub(crate) struct Env {
    /// The file's own variable ([`STATE_ENV`] or [`CREDENTIALS_ENV`]).
    pub(crate) explicit: Option<OsString>,
    /// `$XDG_STATE_HOME`.
    pub(crate) xdg_state_home: Option<OsString>,
    /// `$HOME`.
    pub(crate) home: Option<OsString>,
    /// The effective user is root.
    pub(crate) root: bool,
}

impl Env {
    fn of_process(kind: FileKind) -> Env {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        Env {
            explicit: var(kind.env()),
            xdg_state_home: var("XDG_STATE_HOME"),
            home: var("HOME"),
            root: effective_uid() == Some(0),
        }
    }
}

/// The path for `kind`, without touching the filesystem.
pub(crate) fn choose(kind: FileKind, flag: Option<&Path>, env: &Env) -> Result<Located, PathError> {
    let located = |path: PathBuf, source| Located { path, source, kind };
    if let Some(p) = flag {
        return Ok(located(p.to_path_buf(), Source::Flag));
    }
    if let Some(p) = &env.explicit {
        return Ok(located(PathBuf::from(p), Source::Env));
    }
    if env.root {
        return Ok(located(
            Path::new(ROOT_DIR).join(kind.file()),
            Source::Default,
        ));
    }
    // XDG: a relative $XDG_STATE_HOME is invalid and must be ignored.
    let base = match &env.xdg_state_home {
        Some(x) if Path::new(x).is_absolute() => PathBuf::from(x),
        _ => match &env.home {
            Some(h) => Path::new(h).join(".local/state"),
            None => return Err(PathError::NoHome(kind)),
        },
    };
    Ok(located(
        base.join("llmbox").join(kind.file()),
        Source::Default,
    ))
}

/// The path for `kind` as this process sees it; a default path's directory is created 0700.
///
/// # Errors
/// [`PathError`]: no home to default to, or the directory could not be made.
pub fn locate(kind: FileKind, flag: Option<&Path>) -> Result<Located, PathError> {
    let located = choose(kind, flag, &Env::of_process(kind))?;
    if located.source == Source::Default
        && let Some(dir) = located.path.parent()
        && !dir.is_dir()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| PathError::CreateDir {
                dir: dir.to_path_buf(),
                source,
            })?;
    }
    Ok(located)
}

/// `path` made absolute against the current directory (without resolving symlinks, so a
/// missing file still prints), for messages.
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The effective uid from `/proc/self/status` (no FFI needed); `None` when it cannot be read.
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_effective_uid(&status)
}

/// The second field of the `Uid:` line (real, effective, saved, fs).
fn parse_effective_uid(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(explicit: Option<&str>, xdg: Option<&str>, home: Option<&str>, root: bool) -> Env {
        Env {
            explicit: explicit.map(OsString::from),
            xdg_state_home: xdg.map(OsString::from),
            home: home.map(OsString::from),
            root,
        }
    }

    #[test]
    fn the_flag_then_the_variable_then_root_then_xdg_then_home() {
        let all = env(Some("/e/s.json"), Some("/xdg"), Some("/home/a"), true);
        let c = |flag: Option<&str>, e: &Env| {
            choose(FileKind::State, flag.map(Path::new), e).expect("path")
        };
        assert_eq!(c(Some("x.json"), &all).path, Path::new("x.json"));
        assert_eq!(c(Some("x.json"), &all).source, Source::Flag);
        assert_eq!(c(None, &all).path, Path::new("/e/s.json"));
        assert_eq!(c(None, &all).source, Source::Env);
        let root = env(None, Some("/xdg"), Some("/root"), true);
        assert_eq!(
            c(None, &root).path,
            Path::new("/var/lib/llmbox/llmbox-state.json")
        );
        let user = env(None, Some("/xdg"), Some("/home/a"), false);
        assert_eq!(
            c(None, &user).path,
            Path::new("/xdg/llmbox/llmbox-state.json")
        );
        assert_eq!(c(None, &user).source, Source::Default);
        for xdg in [None, Some("relative/dir")] {
            let home = env(None, xdg, Some("/home/a"), false);
            assert_eq!(
                c(None, &home).path,
                Path::new("/home/a/.local/state/llmbox/llmbox-state.json")
            );
        }
        let creds = choose(FileKind::Credentials, None, &user).expect("creds");
        assert_eq!(creds.path, Path::new("/xdg/llmbox/llmbox-spoke.json"));
    }

    #[test]
    fn no_home_at_all_says_which_flag_or_variable_to_set() {
        let e = choose(FileKind::Credentials, None, &env(None, None, None, false))
            .expect_err("nowhere");
        let msg = e.to_string();
        assert!(
            msg.contains("--credentials") && msg.contains("$LLMBOX_CREDENTIALS"),
            "{msg}"
        );
    }

    #[test]
    fn a_located_path_prints_absolute_with_its_source() {
        let l = choose(FileKind::State, Some(Path::new("s.json")), &Env::default()).expect("p");
        let text = l.to_string();
        assert!(text.starts_with("state file /"), "{text}");
        assert!(text.ends_with("/s.json (from --state)"), "{text}");
    }

    #[test]
    fn the_effective_uid_is_the_second_uid_field() {
        let status = "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t1\t1\t1\t1\n";
        assert_eq!(parse_effective_uid(status), Some(0));
        assert_eq!(parse_effective_uid("Name: x\n"), None);
        assert!(effective_uid().is_some());
    }
}
