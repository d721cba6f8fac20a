//! API keys for MCP callers: minting, revoking and verifying `llmbox_<64 hex>` keys kept in the
//! state file only as their SHA-256 (`llmbox apikey` and the hub share this module).
//!
//! Verification hashes whatever was presented and compares that hash with every stored one in
//! constant time, without stopping at a match: how long it takes depends only on the number of
//! keys, never on how close a guess came. A key is accepted while it is in the file and not
//! expired; `apikey revoke` removes it, and the hub sees the change on its next request (the
//! store re-reads the file when it changed on disk). `last_used` is written at most once per
//! [`LAST_USED_RESOLUTION`] per key, so busy callers do not rewrite the state file per request.
//!
//! No threads, no I/O beyond the [`Store`].

use std::fmt;
use std::time::Duration;

use crate::store::{ApiKeyRecord, State, Store, StoreError};
use crate::util::secret::{ct_eq, random_hex_32, sha256_hex};
use crate::util::unix_now;

/// Every key starts with this, so secret scanners can find leaked ones.
pub(crate) const KEY_PREFIX: &str = "llmbox_";
/// Fewest characters of a key id `apikey revoke --id` accepts.
pub(crate) const MIN_KEY_ID_PREFIX: usize = 4;
/// Longest key name.
pub(crate) const MAX_NAME_LEN: usize = 64;
/// How stale `last_used` may get: it is rewritten only when older than this.
pub(crate) const LAST_USED_RESOLUTION: Duration = Duration::from_secs(60);

/// Why a key operation failed.
#[derive(Debug)]
pub enum ApiKeyError {
    /// A bad name, ttl or id prefix; nothing was changed.
    Invalid(String),
    /// No key matches.
    NotFound(String),
    /// The OS random source failed.
    Random(String),
    /// The state file could not be read or written.
    Store(StoreError),
}

impl fmt::Display for ApiKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiKeyError::Invalid(msg) | ApiKeyError::NotFound(msg) => f.write_str(msg),
            ApiKeyError::Random(e) => write!(f, "random source: {e}"),
            ApiKeyError::Store(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ApiKeyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ApiKeyError::Store(e) => Some(e),
            _ => None,
        }
    }
}

impl From<StoreError> for ApiKeyError {
    fn from(e: StoreError) -> Self {
        ApiKeyError::Store(e)
    }
}

/// Who is calling the MCP endpoint, as the tools and the audit log see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No key is configured: the loopback-only open mode of a hub without keys.
    Anonymous,
    /// A caller that presented a valid key.
    Key {
        /// The key's id (hash prefix).
        id: String,
        /// The key's name.
        name: String,
        /// Whether it is an admin key.
        admin: bool,
    },
    /// A person whose chatbot presented an OAuth access token of this hub (`hub::oauth`).
    Person {
        /// Their verified email.
        email: String,
        /// The sign-in provider's label they signed in through.
        provider: String,
        /// The OAuth grant the token belongs to (its public id).
        grant: String,
    },
}

impl Caller {
    /// The name the audit log shows: the key's name, or `anonymous`.
    pub(crate) fn name(&self) -> &str {
        match self {
            Caller::Anonymous => "anonymous",
            Caller::Key { name, .. } => name,
            Caller::Person { email, .. } => email,
        }
    }

    /// The key id, when a key was presented.
    pub(crate) fn key_id(&self) -> Option<&str> {
        match self {
            Caller::Anonymous | Caller::Person { .. } => None,
            Caller::Key { id, .. } => Some(id),
        }
    }

    /// The owner id of the boxes this caller creates (see `hub::ownership`): the key id, or
    /// [`person_owner_id`] of a person; `None` for the anonymous caller.
    pub(crate) fn owner_id(&self) -> Option<String> {
        match self {
            Caller::Anonymous => None,
            Caller::Key { id, .. } => Some(id.clone()),
            Caller::Person {
                email, provider, ..
            } => Some(person_owner_id(provider, email)),
        }
    }

    /// True when the caller sees and acts on every box: an admin key, or anyone on a hub
    /// without keys (where there is no owner to tell apart).
    pub(crate) fn sees_all(&self) -> bool {
        match self {
            Caller::Anonymous => true,
            Caller::Key { admin, .. } => *admin,
            // A person sees their own boxes, even one listed by --admin-email: the admin page
            // is where an admin sees everyone's.
            Caller::Person { .. } => false,
        }
    }
}

/// The owner id recorded for a box a person created: `person:<provider>:<email>` (a key id is
/// hex, so the two never collide).
pub(crate) fn person_owner_id(provider: &str, email: &str) -> String {
    format!("person:{provider}:{email}")
}

/// What the hub makes of one request's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The state holds no key at all: MCP is open (loopback only; see `hub::auth`).
    NoKeys,
    /// A valid key.
    Valid(Caller),
    /// Keys exist and the one presented is unknown, expired or revoked.
    Invalid,
}

/// Checks a key name: 1 to [`MAX_NAME_LEN`] of letters, digits, `.`, `_`, `-`, starting with a
/// letter or digit (it is printed in tables and logs).
///
/// # Errors
/// [`ApiKeyError::Invalid`] saying what a name must look like.
pub(crate) fn validate_name(name: &str) -> Result<(), ApiKeyError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(ApiKeyError::Invalid(format!(
            "invalid key name {name:?}: use 1-{MAX_NAME_LEN} letters, digits, '.', '_' or '-', starting with a letter or digit"
        )))
    }
}

/// Checks a key lifetime given with `--ttl`: above zero.
///
/// # Errors
/// [`ApiKeyError::Invalid`].
pub(crate) fn validate_ttl(ttl: Duration) -> Result<(), ApiKeyError> {
    if ttl.is_zero() {
        return Err(ApiKeyError::Invalid(
            "--ttl must be above zero (leave it out for a key that does not expire)".into(),
        ));
    }
    Ok(())
}

/// Checks an id prefix for `apikey revoke --id`: long enough to be meant.
///
/// # Errors
/// [`ApiKeyError::Invalid`] saying how long it must be.
pub(crate) fn validate_id_prefix(prefix: &str) -> Result<(), ApiKeyError> {
    if prefix.chars().count() < MIN_KEY_ID_PREFIX {
        return Err(ApiKeyError::Invalid(format!(
            "key id {prefix:?} is too short: give at least {MIN_KEY_ID_PREFIX} characters of the id `apikey list` shows"
        )));
    }
    Ok(())
}

/// Mints a key named `name` (unique), valid for `ttl` (`None`: until revoked); returns the key
/// (shown once) and its record as stored.
///
/// # Errors
/// A bad or taken name, a zero ttl, the random source, or the state file.
pub fn create_key(
    store: &Store,
    name: &str,
    ttl: Option<Duration>,
    admin: bool,
) -> Result<(String, ApiKeyRecord), ApiKeyError> {
    validate_name(name)?;
    if let Some(ttl) = ttl {
        validate_ttl(ttl)?;
    }
    let key = format!(
        "{KEY_PREFIX}{}",
        random_hex_32().map_err(|e| ApiKeyError::Random(e.to_string()))?
    );
    let now = unix_now();
    let record = ApiKeyRecord {
        hash: sha256_hex(key.as_bytes()),
        name: name.to_string(),
        admin,
        created: now,
        expires: ttl.map(|t| now.saturating_add(i64::try_from(t.as_secs()).unwrap_or(i64::MAX))),
        last_used: None,
    };
    let stored = record.clone();
    let added = store.update(move |s| {
        if s.api_keys.iter().any(|k| k.name == stored.name) {
            return false;
        }
        s.api_keys.push(stored);
        true
    })?;
    if !added {
        return Err(ApiKeyError::Invalid(format!(
            "a key named {name:?} exists already; pick another name or revoke that key first"
        )));
    }
    Ok((key, record))
}

/// Removes the key whose id starts with `prefix`; returns it.
///
/// # Errors
/// A prefix too short or matching several keys ([`ApiKeyError::Invalid`]), none matching
/// ([`ApiKeyError::NotFound`]), or the state file.
pub fn revoke_by_id(store: &Store, prefix: &str) -> Result<ApiKeyRecord, ApiKeyError> {
    validate_id_prefix(prefix)?;
    store
        .update(|s| {
            let hits: Vec<usize> = (0..s.api_keys.len())
                .filter(|&i| s.api_keys[i].id().starts_with(prefix))
                .collect();
            match hits.as_slice() {
                [one] => Ok(s.api_keys.remove(*one)),
                [] => Err(ApiKeyError::NotFound(format!(
                    "no API key with id {prefix:?}"
                ))),
                many => Err(ApiKeyError::Invalid(format!(
                    "key id {prefix:?} matches {} keys; give more characters",
                    many.len()
                ))),
            }
        })
        .map_err(ApiKeyError::from)?
}

/// Removes the key named `name`; returns it.
///
/// # Errors
/// [`ApiKeyError::NotFound`], or the state file.
pub fn revoke_by_name(store: &Store, name: &str) -> Result<ApiKeyRecord, ApiKeyError> {
    store
        .update(|s| match s.api_keys.iter().position(|k| k.name == name) {
            Some(i) => Ok(s.api_keys.remove(i)),
            None => Err(ApiKeyError::NotFound(format!("no API key named {name:?}"))),
        })
        .map_err(ApiKeyError::from)?
}

/// The stored key `presented` is, looked up by hash over every record in constant time (no
/// early exit), or `None`. Expiry is not checked here.
pub(crate) fn find<'a>(state: &'a State, presented: &str) -> Option<&'a ApiKeyRecord> {
    let hash = sha256_hex(presented.as_bytes());
    let mut found = None;
    for record in &state.api_keys {
        // Every record is compared, whatever matched before; what is compared is a hash, so
        // even a timing leak would say nothing about how close the presented key came.
        let hit = ct_eq(&record.hash, &hash);
        if hit && found.is_none() {
            found = Some(record);
        }
    }
    found
}

/// Judges one request: `presented` is the bearer key it carried, if any.
///
/// # Errors
/// The state file could not be read (the caller answers 500 then: it cannot tell).
pub(crate) fn verify(store: &Store, presented: Option<&str>) -> Result<Verdict, StoreError> {
    let state = store.load()?;
    if state.api_keys.is_empty() {
        return Ok(Verdict::NoKeys);
    }
    let Some(presented) = presented else {
        return Ok(Verdict::Invalid);
    };
    let now = unix_now();
    let Some(record) = find(&state, presented).filter(|r| !r.is_expired(now)) else {
        return Ok(Verdict::Invalid);
    };
    let caller = Caller::Key {
        id: record.id().to_string(),
        name: record.name.clone(),
        admin: record.admin,
    };
    let stale = record.last_used.is_none_or(|at| {
        now.saturating_sub(at) >= i64::try_from(LAST_USED_RESOLUTION.as_secs()).unwrap_or(60)
    });
    if stale {
        let hash = record.hash.clone();
        // A failed bookkeeping write must not refuse a valid key.
        if let Err(e) = store.update(|s| {
            if let Some(k) = s.api_keys.iter_mut().find(|k| k.hash == hash) {
                k.last_used = Some(now);
            }
        }) {
            log::warn!("API key {}: cannot record its last use: {e}", record.id());
        }
    }
    Ok(Verdict::Valid(caller))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fresh state file of its own for a unit test (also used by `hub::auth`'s tests).
    pub(crate) fn store(tag: &str) -> Store {
        let dir = std::env::temp_dir().join(format!(
            "llmbox-keys-{}-{tag}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        Store::open(dir.join("state.json")).expect("store")
    }

    #[test]
    fn a_key_has_the_scannable_shape_and_only_its_hash_is_stored() {
        let s = store("shape");
        let (key, record) = create_key(&s, "ci", None, false).expect("create");
        let hex = key.strip_prefix(KEY_PREFIX).expect("prefix");
        assert!(crate::util::secret::is_hex_64(hex), "{key}");
        let text = std::fs::read_to_string(s.path()).expect("read");
        assert!(!text.contains(hex), "the key never reaches disk");
        assert!(text.contains(&sha256_hex(key.as_bytes())));
        assert_eq!(record.id().len(), 12);
        assert!(matches!(
            verify(&s, Some(&key)).expect("verify"),
            Verdict::Valid(Caller::Key { ref name, admin: false, .. }) if name == "ci"
        ));
    }

    #[test]
    fn no_keys_means_open_and_with_keys_a_missing_wrong_or_near_key_is_invalid() {
        let s = store("verdicts");
        assert_eq!(verify(&s, None).expect("verify"), Verdict::NoKeys);
        assert_eq!(verify(&s, Some("x")).expect("verify"), Verdict::NoKeys);
        let (key, _) = create_key(&s, "a", None, true).expect("create");
        let mut near = key.clone();
        let last = if near.ends_with('0') { "1" } else { "0" };
        near.replace_range(near.len() - 1.., last);
        for bad in [
            None,
            Some(""),
            Some(near.as_str()),
            Some("llmbox_"),
            Some("Bearer"),
        ] {
            assert_eq!(
                verify(&s, bad).expect("verify"),
                Verdict::Invalid,
                "{bad:?}"
            );
        }
        assert!(matches!(
            verify(&s, Some(&key)).expect("verify"),
            Verdict::Valid(Caller::Key { admin: true, .. })
        ));
    }

    #[test]
    fn an_expired_or_revoked_key_is_invalid_and_names_are_unique() {
        let s = store("expire");
        let (key, _) = create_key(&s, "short", Some(Duration::from_secs(60)), false).expect("a");
        let (other, rec) = create_key(&s, "other", None, false).expect("b");
        s.update(|st| st.api_keys[0].expires = Some(unix_now() - 1))
            .expect("age");
        assert_eq!(verify(&s, Some(&key)).expect("verify"), Verdict::Invalid);
        assert!(matches!(
            create_key(&s, "other", None, false),
            Err(ApiKeyError::Invalid(_))
        ));
        assert_eq!(
            revoke_by_id(&s, &rec.id()[..6]).expect("revoke").name,
            "other"
        );
        assert_eq!(verify(&s, Some(&other)).expect("verify"), Verdict::Invalid);
        assert!(matches!(
            revoke_by_name(&s, "other"),
            Err(ApiKeyError::NotFound(_))
        ));
        assert_eq!(revoke_by_name(&s, "short").expect("revoke").name, "short");
        assert_eq!(verify(&s, Some(&key)).expect("verify"), Verdict::NoKeys);
    }

    #[test]
    fn last_used_is_written_at_most_once_a_minute() {
        let s = store("lastused");
        let (key, _) = create_key(&s, "k", None, false).expect("create");
        verify(&s, Some(&key)).expect("verify");
        let first = s.load().expect("load").api_keys[0].last_used.expect("set");
        let ino = |s: &Store| {
            std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(s.path()).expect("stat"))
        };
        let before = ino(&s);
        for _ in 0..20 {
            verify(&s, Some(&key)).expect("verify");
        }
        assert_eq!(ino(&s), before, "no rewrite within the minute");
        s.update(|st| st.api_keys[0].last_used = Some(first - 61))
            .expect("age");
        verify(&s, Some(&key)).expect("verify");
        assert!(s.load().expect("load").api_keys[0].last_used >= Some(first));
    }

    #[test]
    fn bad_names_and_prefixes_are_refused_before_anything_changes() {
        let s = store("bad");
        for bad in ["", "-x", "a b", "é", &"n".repeat(65), "a/b"] {
            assert!(
                matches!(
                    create_key(&s, bad, None, false),
                    Err(ApiKeyError::Invalid(_))
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            create_key(&s, "ok", Some(Duration::ZERO), false),
            Err(ApiKeyError::Invalid(_))
        ));
        assert!(matches!(
            revoke_by_id(&s, "abc"),
            Err(ApiKeyError::Invalid(_))
        ));
        assert!(!s.path().exists(), "nothing was written");
    }

    #[test]
    fn callers_name_themselves_for_the_audit_log() {
        assert_eq!(Caller::Anonymous.name(), "anonymous");
        assert_eq!(Caller::Anonymous.key_id(), None);
        assert!(Caller::Anonymous.sees_all());
        let k = Caller::Key {
            id: "abc".into(),
            name: "ci".into(),
            admin: false,
        };
        assert_eq!(
            (k.name(), k.key_id(), k.sees_all()),
            ("ci", Some("abc"), false)
        );
    }
}
