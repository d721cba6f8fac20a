//! The hub's state file: join tokens, enrolled spokes and activation sessions in one JSON
//! document (DESIGN §6).
//!
//! Every change is a locked read-modify-write: exclusive lock on `<file>.lock`, read, change,
//! write `<file>.tmp`, fsync, rename over, fsync the directory, unlock. The running hub and the
//! CLI commands share the file this way, and readers reload when the file changed on disk (its
//! inode, size and mtime), so a token minted by the CLI works at once. Secrets never appear
//! here: tokens, credentials and page tokens are kept only as their SHA-256 hex.
//!
//! Unknown or corrupt content is an error naming the path, never silently replaced.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::util::fsutil::write_atomic_0600;

/// The state-file format this build reads and writes.
pub(crate) const STATE_VERSION: u32 = 1;

/// The whole state file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// Format version; see [`STATE_VERSION`].
    pub(crate) version: u32,
    /// Outstanding one-time join tokens.
    #[serde(default)]
    pub join_tokens: Vec<JoinTokenRecord>,
    /// Enrolled spokes.
    #[serde(default)]
    pub spokes: Vec<SpokeRecord>,
    /// Activation sessions, one per box created through the hub.
    #[serde(default)]
    pub sessions: Vec<Session>,
    /// API keys MCP callers present (`llmbox apikey`). Absent in files written before keys
    /// existed, and left out while empty so such files stay readable by older hubs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_keys: Vec<ApiKeyRecord>,
    /// Which API key created which box (see `hub::ownership`); beside the sessions rather than
    /// in them so a session written by an older hub needs nothing new.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub box_owners: Vec<BoxOwner>,
    /// People signed in on the web pages (`hub::signin`); left out while empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signin_sessions: Vec<SigninSession>,
    /// OAuth clients registered at `/oauth/register` (`hub::oauth`); left out while empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub oauth_clients: Vec<OAuthClientRecord>,
    /// OAuth grants (one per consent: its access and refresh token hashes); left out while empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub oauth_grants: Vec<OAuthGrantRecord>,
}

/// A client registered by Dynamic Client Registration (RFC 7591). Public (no secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthClientRecord {
    /// The `client_id` handed out (public, not a secret).
    pub client_id: String,
    /// The `client_name` it registered with (shown on the consent page).
    pub client_name: String,
    /// Its redirect URIs, compared exactly.
    pub redirect_uris: Vec<String>,
    /// Registered at, unix seconds.
    pub created: i64,
    /// Last used at `/oauth/authorize` or `/oauth/token`, unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<i64>,
}

/// One grant: a person's consent to one client, and the token family it issued. Tokens are
/// kept only as SHA-256 hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthGrantRecord {
    /// Public handle (16 hex), for logs and `/admin`.
    pub id: String,
    /// The client it was issued to.
    pub client_id: String,
    /// The client's name at consent.
    pub client_name: String,
    /// The person's verified email.
    pub email: String,
    /// The sign-in provider's label they signed in through.
    pub provider: String,
    /// The resource (RFC 8707) the tokens are bound to: this hub's MCP URL.
    pub resource: String,
    /// Granted scope.
    pub scope: String,
    /// Consented at, unix seconds.
    pub created: i64,
    /// SHA-256 hex of the current access token.
    pub access_hash: String,
    /// The access token expires at, unix seconds.
    pub access_expires: i64,
    /// SHA-256 hex of the current refresh token.
    pub refresh_hash: String,
    /// The refresh token expires at, unix seconds.
    pub refresh_expires: i64,
    /// SHA-256 hex of refresh tokens already rotated away (newest last, bounded): presenting
    /// one again revokes the grant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spent_refresh_hashes: Vec<String>,
}

/// One person signed in through a sign-in provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigninSession {
    /// SHA-256 hex of the session id in the cookie (the id itself never reaches disk).
    pub id_hash: String,
    /// The verified email, lowercased.
    pub email: String,
    /// Google's hosted domain (`hd`), when the provider sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosted_domain: Option<String>,
    /// The provider's label.
    pub provider: String,
    /// Expires at, unix seconds.
    pub expires: i64,
}

/// The API key that created a box through the hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoxOwner {
    /// The box's full container id (unique, unlike a box id that may be reused later).
    pub container_id: String,
    /// The owning key's id ([`ApiKeyRecord::id`]), or `person:<provider>:<email>` for a box a
    /// person's OAuth token created (the field keeps its name for older state files).
    pub key_id: String,
}

/// An API key for MCP callers, known only by its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyRecord {
    /// SHA-256 hex of the whole key (`llmbox_…`).
    pub hash: String,
    /// The operator's name for it (unique; shown in listings and the audit log).
    pub name: String,
    /// Sees and acts on every box, not only its own.
    #[serde(default)]
    pub admin: bool,
    /// Minted at, unix seconds.
    pub created: i64,
    /// Expires at, unix seconds; `None` never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
    /// Last accepted at, unix seconds, to the minute or so (see `hub::apikeys`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<i64>,
}

impl ApiKeyRecord {
    /// The key's public handle for `apikey list` / `apikey revoke --id`: the first 12 hex
    /// characters of its hash (reveals nothing of the key).
    pub fn id(&self) -> &str {
        hash_prefix(&self.hash)
    }

    /// True when the key has expired by unix second `now`.
    pub fn is_expired(&self, now: i64) -> bool {
        self.expires.is_some_and(|at| at <= now)
    }
}

/// The first 12 characters of a hash (never slicing inside a character: the file may have been
/// edited by hand).
fn hash_prefix(hash: &str) -> &str {
    let end = hash.char_indices().nth(12).map_or(hash.len(), |(i, _)| i);
    &hash[..end]
}

/// A join token, known only by its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinTokenRecord {
    /// SHA-256 hex of the token.
    pub hash: String,
    /// The spoke name the token enrolls.
    pub name: String,
    /// Minted at, unix seconds.
    pub created: i64,
    /// Expires at, unix seconds.
    pub expires: i64,
}

impl JoinTokenRecord {
    /// The token's public handle for `token list` / `token revoke --id`: the first 12 hex
    /// characters of its hash (reveals nothing of the token).
    pub fn id(&self) -> &str {
        hash_prefix(&self.hash)
    }
}

/// An enrolled spoke, known by name; its credential only by hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpokeRecord {
    /// Spoke name (also its box namespace).
    pub name: String,
    /// SHA-256 hex of the credential minted at enrollment.
    pub credential_hash: String,
    /// Enrolled at, unix seconds.
    pub enrolled: i64,
}

/// Where an activation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionStatus {
    /// Waiting for the person's code.
    Pending,
    /// Activated; `session_url` is set.
    Ready,
    /// The last activation attempt failed; `error` says why (the box may still accept a code).
    Error,
}

/// One box created through the hub and its activation page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Session {
    /// SHA-256 hex of the page token in `/auth/<token>`.
    pub(crate) token_hash: String,
    /// Full container id on the spoke.
    pub container_id: crate::boxes::ContainerId,
    /// The spoke holding the box.
    pub(crate) spoke: String,
    /// The caller's box id (unique hub-wide).
    pub box_id: String,
    /// Free text from create.
    #[serde(default)]
    pub(crate) description: String,
    /// The newest OAuth authorize URL the box printed. Never shown to a model.
    pub(crate) authorize_url: String,
    /// Pending, ready or error.
    pub status: SessionStatus,
    /// The remote-control session URL, once ready.
    #[serde(default)]
    pub session_url: String,
    /// The last activation error, if any.
    #[serde(default)]
    pub error: String,
    /// Opaque state returned by the `box.create` hook, replayed to `box.destroy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) hook_state: Option<serde_json::Value>,
    /// Created at, unix seconds.
    pub(crate) created: i64,
    /// SHA-256 hex of further page tokens for the same page, minted when a restarted hub is
    /// asked for the link again (it knows tokens only by hash); every one of them stays valid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) more_token_hashes: Vec<String>,
    /// SHA-256 hex of the codes typed on the activation page (the newest few), so a restarted
    /// hub can still hide their TTY echo in the box's logs; the codes themselves never reach disk.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) code_hashes: Vec<String>,
    /// The signed-in person who activated the box, when sign-in is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activated_by: Option<String>,
    /// The box stopped after a failed code (a Go spoke's box does not loop its login): it can
    /// take no other code, and only a new box helps.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stopped: bool,
}

impl Session {
    /// True when `token_hash` opens this session's activation page.
    pub(crate) fn has_token_hash(&self, token_hash: &str) -> bool {
        self.token_hash == token_hash || self.more_token_hashes.iter().any(|h| h == token_hash)
    }
}

/// Why the state file could not be used.
#[derive(Debug)]
pub enum StoreError {
    /// Reading, writing or locking failed.
    Io {
        /// The file involved.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The file is not a state document this build understands.
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The state file's directory does not exist (`--state` names a place that is not there).
    NoDirectory {
        /// The state file.
        path: PathBuf,
        /// Its directory.
        dir: PathBuf,
    },
    /// Another `llmbox hub` holds the hub lock on this state file.
    HubRunning {
        /// The lock file.
        lock: PathBuf,
        /// The pid written in it by the holder, when readable.
        pid: Option<u32>,
    },
    /// The file was written by a newer (or unknown) format.
    UnknownVersion {
        /// The state file.
        path: PathBuf,
        /// The version found.
        version: u32,
    },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io { path, op, source } => {
                write!(f, "state file {}: {op}: {source}", path.display())
            }
            StoreError::Corrupt { path, source } => write!(
                f,
                "state file {} is not valid llmbox state ({source}); fix or move it away, it is never overwritten",
                path.display()
            ),
            StoreError::NoDirectory { path, dir } => write!(
                f,
                "state file {}: directory {} does not exist; create it (mode 0700) or pass another --state",
                path.display(),
                dir.display()
            ),
            StoreError::HubRunning { lock, pid } => {
                let holder = pid.map_or("another process".to_string(), |p| format!("pid {p}"));
                write!(
                    f,
                    "another llmbox hub ({holder}) is running on this state file (it holds {}); stop it first, or give this hub its own --state",
                    lock.display()
                )
            }
            StoreError::UnknownVersion { path, version } => write!(
                f,
                "state file {} has format version {version}, this llmbox reads version {STATE_VERSION}; use a matching llmbox",
                path.display()
            ),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Io { source, .. } => Some(source),
            StoreError::Corrupt { source, .. } => Some(source),
            StoreError::UnknownVersion { .. }
            | StoreError::NoDirectory { .. }
            | StoreError::HubRunning { .. } => None,
        }
    }
}

/// Identity of the file's current content as seen by `stat`: a rename gives a new inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

/// The running hub's claim on its state file; released when dropped (or the process ends).
#[derive(Debug)]
pub struct HubLock {
    _file: File,
}

/// Handle on one state file. Cheap to share (`Arc<Store>`); all methods are thread-safe.
pub struct Store {
    path: PathBuf,
    lock_path: PathBuf,
    cache: Mutex<Option<(Stamp, Arc<State>)>>,
}

impl Store {
    /// Opens `path` and checks that it parses (a missing file is an empty state).
    ///
    /// # Errors
    /// [`StoreError`] naming the path.
    pub fn open(path: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let path = path.into();
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push(".lock");
        let store = Store {
            path,
            lock_path: lock_path.into(),
            cache: Mutex::new(None),
        };
        store.load()?;
        Ok(store)
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current state, re-read only when the file changed on disk since the last read.
    ///
    /// # Errors
    /// [`StoreError`] naming the path.
    pub fn load(&self) -> Result<Arc<State>, StoreError> {
        let _lock = self.lock(false)?;
        self.read_locked()
    }

    /// Locked read-modify-write. `change` sees the freshest state; the file is rewritten only
    /// when the state actually changed. Returns what `change` returned.
    ///
    /// # Errors
    /// [`StoreError`]; on error the file is unchanged.
    pub fn update<T>(&self, change: impl FnOnce(&mut State) -> T) -> Result<T, StoreError> {
        let _lock = self.lock(true)?;
        let current = self.read_locked()?;
        let mut next = (*current).clone();
        let out = change(&mut next);
        if next != *current {
            next.version = STATE_VERSION;
            let mut bytes = serde_json::to_vec_pretty(&next).map_err(|e| StoreError::Io {
                path: self.path.clone(),
                op: "encode",
                source: io::Error::other(e),
            })?;
            bytes.push(b'\n');
            write_atomic_0600(&self.path, &bytes).map_err(|source| StoreError::Io {
                path: self.path.clone(),
                op: "write",
                source,
            })?;
            let stamp = self.stamp()?;
            *self.cache_guard() = stamp.map(|s| (s, Arc::new(next)));
        }
        Ok(out)
    }

    /// Checks, before a hub starts serving, that the file is usable for writing: its directory
    /// exists, the lock can be taken exclusively and a file can be created beside it. (A hub
    /// that started without this learnt it only at the first create, after a box was made.)
    ///
    /// # Errors
    /// [`StoreError`] naming the path and the reason.
    pub fn check_writable(&self) -> Result<(), StoreError> {
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dir.is_dir() {
            return Err(StoreError::NoDirectory {
                path: self.path.clone(),
                dir,
            });
        }
        // Held across the probe: two checks at once (a burst of /readyz) share one probe name.
        let _lock = self.lock(true)?;
        crate::util::fsutil::check_dir_writable(&self.path).map_err(|source| StoreError::Io {
            path: self.path.clone(),
            op: "create a file beside it",
            source,
        })
    }

    /// Takes the hub lock (`<file>.hub.lock`, exclusive, non-blocking, held until the returned
    /// [`HubLock`] drops) and writes this pid in it. Only `llmbox hub` takes it: the CLI
    /// commands keep working beside a running hub through the ordinary file lock.
    ///
    /// # Errors
    /// [`StoreError::HubRunning`] naming the holder's pid; I/O errors naming the lock file.
    pub fn lock_hub(&self) -> Result<HubLock, StoreError> {
        let mut path = self.path.as_os_str().to_owned();
        path.push(".hub.lock");
        let path = PathBuf::from(path);
        let io_err = |op, source| StoreError::Io {
            path: path.clone(),
            op,
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io_err("open hub lock", e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let pid = fs::read_to_string(&path)
                    .ok()
                    .and_then(|t| t.trim().parse().ok());
                return Err(StoreError::HubRunning { lock: path, pid });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_err("lock hub lock", e)),
        }
        use std::io::{Seek, Write};
        file.set_len(0)
            .and_then(|()| file.seek(io::SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{}", std::process::id()))
            .map_err(|e| io_err("write hub lock", e))?;
        Ok(HubLock { _file: file })
    }

    fn cache_guard(&self) -> std::sync::MutexGuard<'_, Option<(Stamp, Arc<State>)>> {
        // The cache is a plain value; a panic elsewhere cannot leave it half-written.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the lock file: exclusive for a change, shared for a read. `None` is a reader that
    /// cannot open the lock file at all.
    fn lock(&self, exclusive: bool) -> Result<Option<File>, StoreError> {
        let io_err = |op, source| StoreError::Io {
            path: self.lock_path.clone(),
            op,
            source,
        };
        let opened = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&self.lock_path);
        let file = match opened {
            Ok(file) => file,
            Err(e) if exclusive => return Err(io_err("open lock file", e)),
            // A reader in a directory it cannot write (a read-only filesystem, an operator
            // running `spoke list` on the hub's file) still reads: every writer replaces the
            // file by an atomic rename, so an unlocked read sees the old or the new document.
            Err(e) => match File::open(&self.lock_path) {
                Ok(file) => file,
                Err(_) => {
                    log::debug!(
                        "state file {}: reading without the lock ({e})",
                        self.path.display()
                    );
                    return Ok(None);
                }
            },
        };
        let locked = if exclusive {
            file.lock()
        } else {
            file.lock_shared()
        };
        locked.map_err(|e| io_err("lock", e))?;
        Ok(Some(file))
    }

    fn stamp(&self) -> Result<Option<Stamp>, StoreError> {
        match fs::metadata(&self.path) {
            Ok(meta) => Ok(Some(Stamp {
                ino: meta.ino(),
                len: meta.len(),
                mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Io {
                path: self.path.clone(),
                op: "stat",
                source,
            }),
        }
    }

    /// Reads the file (or the cache when unchanged); the caller holds the lock.
    fn read_locked(&self) -> Result<Arc<State>, StoreError> {
        let Some(stamp) = self.stamp()? else {
            return Ok(Arc::new(State {
                version: STATE_VERSION,
                ..State::default()
            }));
        };
        if let Some((cached, state)) = self.cache_guard().as_ref()
            && *cached == stamp
        {
            return Ok(Arc::clone(state));
        }
        let bytes = fs::read(&self.path).map_err(|source| StoreError::Io {
            path: self.path.clone(),
            op: "read",
            source,
        })?;
        let state = parse(&self.path, &bytes)?;
        let state = Arc::new(state);
        *self.cache_guard() = Some((stamp, Arc::clone(&state)));
        Ok(state)
    }
}

pub(crate) fn parse(path: &Path, bytes: &[u8]) -> Result<State, StoreError> {
    // Look at the version first so a newer format says so instead of "unknown field".
    #[derive(Deserialize)]
    struct Versioned {
        version: u32,
    }
    let corrupt = |source| StoreError::Corrupt {
        path: path.to_path_buf(),
        source,
    };
    let Versioned { version } = serde_json::from_slice(bytes).map_err(corrupt)?;
    if version != STATE_VERSION {
        return Err(StoreError::UnknownVersion {
            path: path.to_path_buf(),
            version,
        });
    }
    serde_json::from_slice(bytes).map_err(corrupt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temp_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "llmbox-store-{}-{name}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("mkdir");
        dir.join("state.json")
    }

    #[test]
    fn a_missing_directory_is_named_before_anything_is_written() {
        let path = temp_path("nodir").with_file_name("gone").join("state.json");
        let store = Store::open(&path).expect("a missing file reads as empty");
        let e = store.check_writable().expect_err("no directory");
        let msg = e.to_string();
        assert!(matches!(e, StoreError::NoDirectory { .. }), "{msg}");
        assert!(
            msg.contains("does not exist") && msg.contains("gone"),
            "{msg}"
        );
        let ok = Store::open(temp_path("writable")).expect("open");
        ok.check_writable().expect("writable");
    }

    #[test]
    fn a_second_hub_lock_names_the_holding_pid_and_frees_on_drop() {
        let path = temp_path("hublock");
        let a = Store::open(&path).expect("open");
        let b = Store::open(&path).expect("open");
        let held = a.lock_hub().expect("first");
        let e = b.lock_hub().expect_err("second");
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        // The ordinary lock (the CLI commands) is not the hub lock.
        b.update(|s| s.spokes.push(spoke("x")))
            .expect("update beside the hub");
        drop(held);
        b.lock_hub().expect("free again");
    }

    fn spoke(name: &str) -> SpokeRecord {
        SpokeRecord {
            name: name.into(),
            credential_hash: "h".into(),
            enrolled: 1,
        }
    }

    #[test]
    fn missing_file_is_empty_state_and_update_writes_0600() {
        let path = temp_path("new");
        let store = Store::open(&path).expect("open");
        assert!(store.load().expect("load").spokes.is_empty());
        store.update(|s| s.spokes.push(spoke("a"))).expect("update");
        let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = Store::open(&path).expect("reopen");
        assert_eq!(again.load().expect("load").spokes[0].name, "a");
    }

    #[test]
    fn a_change_by_another_handle_is_seen() {
        let path = temp_path("reload");
        let hub = Store::open(&path).expect("hub");
        let cli = Store::open(&path).expect("cli");
        assert!(hub.load().expect("load").spokes.is_empty());
        cli.update(|s| s.spokes.push(spoke("b")))
            .expect("cli update");
        assert_eq!(hub.load().expect("reload").spokes.len(), 1);
    }

    #[test]
    fn concurrent_updates_lose_nothing() {
        let path = temp_path("race");
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let store = Store::open(&path).expect("open");
                    for j in 0..10 {
                        store
                            .update(|s| s.spokes.push(spoke(&format!("s{i}-{j}"))))
                            .expect("update");
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread");
        }
        let store = Store::open(&path).expect("open");
        assert_eq!(store.load().expect("load").spokes.len(), 80);
    }

    #[test]
    fn corrupt_and_unknown_files_are_errors_naming_the_path() {
        let path = temp_path("corrupt");
        fs::write(&path, b"{not json").expect("write");
        let err = Store::open(&path)
            .err()
            .expect("corrupt must fail")
            .to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        fs::write(&path, br#"{"version":99}"#).expect("write");
        let err = Store::open(&path)
            .err()
            .expect("version must fail")
            .to_string();
        assert!(err.contains("version 99"), "{err}");
        fs::write(&path, br#"{"version":1,"surprise":true}"#).expect("write");
        assert!(Store::open(&path).is_err());
        assert_eq!(
            fs::read(&path).expect("read"),
            br#"{"version":1,"surprise":true}"#
        );
    }

    #[test]
    fn a_token_id_is_twelve_characters_even_of_a_hand_edited_hash() {
        let rec = |hash: &str| JoinTokenRecord {
            hash: hash.into(),
            name: "e".into(),
            created: 0,
            expires: 0,
        };
        assert_eq!(rec(&"ab".repeat(32)).id(), "abababababab");
        assert_eq!(rec("abc").id(), "abc");
        assert_eq!(rec("aéééééééé").id(), "aéééééééé");
        assert_eq!(
            rec(&format!("a{}", "é".repeat(20))).id(),
            format!("a{}", "é".repeat(11))
        );
    }

    #[test]
    fn a_reader_that_cannot_open_the_lock_file_for_writing_still_reads() {
        let path = temp_path("lockdir");
        Store::open(&path)
            .expect("open")
            .update(|s| s.spokes.push(spoke("a")))
            .expect("update");
        // Stands in for an unwritable directory (root ignores modes): the lock file cannot be
        // opened for writing.
        let mut lock = path.as_os_str().to_owned();
        lock.push(".lock");
        fs::remove_file(&lock).expect("rm lock");
        fs::create_dir(&lock).expect("lock dir");
        let store = Store::open(&path).expect("a reader opens");
        assert_eq!(store.load().expect("load").spokes[0].name, "a");
        let err = store
            .update(|s| s.spokes.clear())
            .expect_err("a writer needs the lock")
            .to_string();
        assert!(err.contains("open lock file"), "{err}");
        assert_eq!(
            Store::open(&path)
                .expect("reopen")
                .load()
                .expect("load")
                .spokes
                .len(),
            1
        );
    }

    #[test]
    fn a_file_without_api_keys_loads_and_an_empty_list_is_not_written() {
        let path = temp_path("keys");
        fs::write(
            &path,
            br#"{"version":1,"join_tokens":[],"spokes":[],"sessions":[]}"#,
        )
        .expect("write");
        let store = Store::open(&path).expect("an old file opens");
        assert!(store.load().expect("load").api_keys.is_empty());
        store.update(|s| s.spokes.push(spoke("a"))).expect("update");
        let text = fs::read_to_string(&path).expect("read");
        assert!(!text.contains("api_keys"), "{text}");
        store
            .update(|s| {
                s.api_keys.push(ApiKeyRecord {
                    hash: "ab".repeat(32),
                    name: "ci".into(),
                    admin: false,
                    created: 1,
                    expires: None,
                    last_used: None,
                })
            })
            .expect("update");
        let again = Store::open(&path).expect("reopen");
        let keys = &again.load().expect("load").api_keys;
        assert_eq!(
            (keys[0].id(), keys[0].name.as_str()),
            ("abababababab", "ci")
        );
    }

    #[test]
    fn unchanged_state_is_not_rewritten() {
        let path = temp_path("noop");
        let store = Store::open(&path).expect("open");
        store.update(|_| ()).expect("noop");
        assert!(!path.exists());
    }
}
