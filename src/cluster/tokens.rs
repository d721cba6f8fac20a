//! Join tokens and spoke credentials on the hub's state file (DESIGN §5).
//!
//! Secrets exist in clear only in memory on their way to the operator or the spoke; the state
//! file holds their SHA-256 hex. Every change is one locked read-modify-write of the [`Store`],
//! so the hub and CLI commands can run at once, and a token is consumed by exactly one
//! enrollment however many sockets present it.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::boxes::is_valid_box_id;
use crate::store::{JoinTokenRecord, SpokeRecord, State, Store, StoreError};
use crate::util::secret::{ct_eq, is_hex_64, random_hex_32, sha256_hex};
use crate::util::unix_now;

use super::{ClusterError, LOCAL_SPOKE};

/// Longest join-token lifetime accepted by `token create`.
pub(crate) const MAX_TOKEN_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// Fewest characters of a token id `token revoke --id` accepts.
pub(crate) const MIN_TOKEN_ID_PREFIX: usize = 4;

/// Checks a join token's lifetime: above zero, at most [`MAX_TOKEN_TTL`].
///
/// # Errors
/// [`ClusterError::Invalid`] naming the range and the value.
pub(crate) fn validate_ttl(ttl: Duration) -> Result<(), ClusterError> {
    if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
        return Err(ClusterError::Invalid(format!(
            "token lifetime {} is out of range: give between 1s and {}",
            crate::util::duration::format_duration(ttl),
            crate::util::duration::format_duration(MAX_TOKEN_TTL)
        )));
    }
    Ok(())
}

/// Checks a token id prefix for `token revoke --id`: long enough to be meant.
///
/// # Errors
/// [`ClusterError::Invalid`] saying how long it must be.
pub(crate) fn validate_token_id_prefix(prefix: &str) -> Result<(), ClusterError> {
    if prefix.chars().count() < MIN_TOKEN_ID_PREFIX {
        return Err(ClusterError::Invalid(format!(
            "token id {prefix:?} is too short: give at least {MIN_TOKEN_ID_PREFIX} characters of the id `token list` shows"
        )));
    }
    Ok(())
}

/// Checks a spoke name: one DNS label (it becomes a Docker label value and box namespace),
/// never the hub's own `local`.
///
/// # Errors
/// [`ClusterError::Invalid`] saying what a name must look like.
pub(crate) fn validate_spoke_name(name: &str) -> Result<(), ClusterError> {
    if name == LOCAL_SPOKE {
        return Err(ClusterError::Invalid(format!(
            "spoke name {name:?} is reserved for the hub's own spoke; pick another"
        )));
    }
    if !is_valid_box_id(name) {
        return Err(ClusterError::Invalid(format!(
            "invalid spoke name {name:?}: use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit"
        )));
    }
    Ok(())
}

fn random() -> Result<String, ClusterError> {
    random_hex_32().map_err(ClusterError::Random)
}

/// Mints a join token for `name` valid for `ttl`; returns the token (shown once) and its
/// record as stored.
///
/// # Errors
/// Bad name or ttl, the random source, or the state file.
pub fn create_token(
    store: &Store,
    name: &str,
    ttl: Duration,
) -> Result<(String, JoinTokenRecord), ClusterError> {
    validate_spoke_name(name)?;
    validate_ttl(ttl)?;
    let token = random()?;
    let now = unix_now();
    let record = JoinTokenRecord {
        hash: sha256_hex(token.as_bytes()),
        name: name.to_string(),
        created: now,
        expires: now.saturating_add(ttl.as_secs() as i64),
    };
    let stored = record.clone();
    store.update(move |s| s.join_tokens.push(stored))?;
    Ok((token, record))
}

/// Removes join tokens whose id (hash prefix) starts with `prefix`; returns the removed ones.
///
/// # Errors
/// A prefix too short or matching several tokens ([`ClusterError::Invalid`]), none matching
/// ([`ClusterError::NotFound`]), or the state file.
pub(crate) fn revoke_token_by_id(
    store: &Store,
    prefix: &str,
) -> Result<JoinTokenRecord, ClusterError> {
    validate_token_id_prefix(prefix)?;
    store.update(|s| {
        let hits: Vec<usize> = s
            .join_tokens
            .iter()
            .enumerate()
            .filter(|(_, t)| t.hash.starts_with(prefix))
            .map(|(i, _)| i)
            .collect();
        match hits.as_slice() {
            [i] => Ok(s.join_tokens.remove(*i)),
            [] => Err(ClusterError::NotFound(format!(
                "no join token has an id starting with {prefix:?}"
            ))),
            _ => Err(ClusterError::Invalid(format!(
                "{} join tokens have ids starting with {prefix:?}; give more characters",
                hits.len()
            ))),
        }
    })?
}

/// Removes every join token for spoke `name`; returns how many.
///
/// # Errors
/// The state file.
pub(crate) fn revoke_tokens_by_name(store: &Store, name: &str) -> Result<usize, ClusterError> {
    Ok(store.update(|s| {
        let before = s.join_tokens.len();
        s.join_tokens.retain(|t| t.name != name);
        before - s.join_tokens.len()
    })?)
}

/// Deletes spoke `name` and its outstanding tokens. Returns false when nothing was there.
///
/// # Errors
/// The state file.
pub(crate) fn revoke_spoke(store: &Store, name: &str) -> Result<bool, ClusterError> {
    Ok(store.update(|s| {
        let before = s.spokes.len() + s.join_tokens.len();
        s.spokes.retain(|r| r.name != name);
        s.join_tokens.retain(|t| t.name != name);
        before != s.spokes.len() + s.join_tokens.len()
    })?)
}

/// A successful enrollment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Enrolled {
    /// The spoke's name.
    pub(crate) name: String,
    /// A freshly minted credential (first enrollment only); send it once, never log it.
    pub(crate) credential: Option<String>,
    /// The credential's hash as now stored (to notice revocation and supersession).
    pub(crate) credential_hash: String,
}

/// Why the hub refused an enrollment. Only the hub's log sees it: the peer is told exactly
/// [`super::proto::ENROLLMENT_REJECTED`] whatever the reason, so a prober learns nothing.
#[derive(Debug)]
pub(crate) enum EnrollError {
    /// The join token is not 64 hex characters.
    MalformedToken,
    /// No outstanding join token has this hash (never minted, used, or revoked).
    UnknownToken,
    /// The join token expired before it was used (it is consumed all the same).
    ExpiredToken {
        /// The token's public id.
        id: String,
        /// The spoke it would have enrolled.
        name: String,
    },
    /// The join token names a spoke name that breaks the rule (a hand-edited state file).
    InvalidName(String),
    /// A spoke presented credentials under the hub's own spoke name.
    LocalName,
    /// A spoke presented credentials for a name that is not enrolled (revoked?).
    NotEnrolled(String),
    /// The credential does not match the name's (wrong, or superseded by a re-enrollment).
    WrongCredential(String),
    /// The enroll message named neither a join token nor a name and credential.
    Incomplete,
    /// The OS random source failed while minting the credential.
    Random(getrandom::Error),
    /// The state file could not be read or written.
    Store(StoreError),
}

impl fmt::Display for EnrollError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnrollError::MalformedToken => f.write_str("join token is not 64 hex characters"),
            EnrollError::UnknownToken => f.write_str("unknown or already used join token"),
            EnrollError::ExpiredToken { id, name } => {
                write!(f, "join token {id} for {name:?} expired")
            }
            EnrollError::InvalidName(name) => write!(f, "join token names invalid spoke {name:?}"),
            EnrollError::LocalName => {
                write!(f, "the name {LOCAL_SPOKE:?} is the hub's own spoke")
            }
            EnrollError::NotEnrolled(name) => {
                write!(f, "spoke {name:?} is not enrolled (revoked?)")
            }
            EnrollError::WrongCredential(name) => {
                write!(f, "wrong or superseded credential for spoke {name:?}")
            }
            EnrollError::Incomplete => {
                f.write_str("enroll names neither a join token nor name and credential")
            }
            EnrollError::Random(e) => write!(f, "random source: {e}"),
            EnrollError::Store(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for EnrollError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EnrollError::Random(e) => Some(e),
            EnrollError::Store(e) => Some(e),
            _ => None,
        }
    }
}

/// Exchanges a join token for a new credential. The token is consumed whether or not it is
/// still valid.
///
/// # Errors
/// Unknown, reused or expired token, a reserved name, the random source, or the state file.
pub(crate) fn enroll_with_token(store: &Store, token: &str) -> Result<Enrolled, EnrollError> {
    if !is_hex_64(token) {
        return Err(EnrollError::MalformedToken);
    }
    let credential = random_hex_32().map_err(EnrollError::Random)?;
    let credential_hash = sha256_hex(credential.as_bytes());
    let hash = sha256_hex(token.as_bytes());
    let now = unix_now();
    let outcome = store
        .update(|s| {
            let pos = s.join_tokens.iter().position(|t| ct_eq(&t.hash, &hash));
            let Some(pos) = pos else {
                return Err(EnrollError::UnknownToken);
            };
            let record = s.join_tokens.remove(pos);
            if record.expires <= now {
                return Err(EnrollError::ExpiredToken {
                    id: record.id().to_string(),
                    name: record.name,
                });
            }
            if validate_spoke_name(&record.name).is_err() {
                return Err(EnrollError::InvalidName(record.name));
            }
            // Enrolling again under a name replaces the record (and so its credential).
            s.spokes.retain(|r| r.name != record.name);
            s.spokes.push(SpokeRecord {
                name: record.name.clone(),
                credential_hash: credential_hash.clone(),
                enrolled: now,
            });
            Ok(record.name)
        })
        .map_err(EnrollError::Store)?;
    outcome.map(|name| Enrolled {
        name,
        credential: Some(credential),
        credential_hash,
    })
}

/// The enrolled spokes' credential hashes by name, built once per state: a reconnect storm
/// of N spokes checks N credentials, and a scan of the spoke list per check made that N²
/// (at 10,000 spokes, the largest user-space cost in the hub's connection threads during a
/// restart in `make bench-scale`). The revocation sweep looks its connections up in it too.
#[derive(Default)]
pub(crate) struct CredentialIndex {
    /// The state it was built from, and the index.
    built: Mutex<Option<(Arc<State>, Arc<Hashes>)>>,
}

/// Credential hash by spoke name.
pub(crate) type Hashes = HashMap<String, String>;

impl CredentialIndex {
    /// The index of `state` (the store hands out the same `Arc` until the file changes).
    pub(crate) fn of(&self, state: &Arc<State>) -> Arc<Hashes> {
        // An `Option` of two `Arc`s: a panicking holder cannot leave it half-written.
        let mut built = self.built.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((of, index)) = built.as_ref()
            && Arc::ptr_eq(of, state)
        {
            return Arc::clone(index);
        }
        // Reversed, so that for a repeated name the first record wins, as a scan's would.
        let index: Arc<Hashes> = Arc::new(
            state
                .spokes
                .iter()
                .rev()
                .map(|r| (r.name.clone(), r.credential_hash.clone()))
                .collect(),
        );
        *built = Some((Arc::clone(state), Arc::clone(&index)));
        index
    }
}

/// Checks a reconnecting spoke's saved credential (constant-time).
///
/// # Errors
/// Unknown name or wrong credential (the reason for the hub's log), or the state file.
pub(crate) fn check_credential(
    store: &Store,
    index: &CredentialIndex,
    name: &str,
    credential: &str,
) -> Result<Enrolled, EnrollError> {
    if name == LOCAL_SPOKE {
        return Err(EnrollError::LocalName);
    }
    let state = store.load().map_err(EnrollError::Store)?;
    let index = index.of(&state);
    let Some(stored) = index.get(name) else {
        return Err(EnrollError::NotEnrolled(name.to_string()));
    };
    let hash = sha256_hex(credential.as_bytes());
    if !ct_eq(&hash, stored) {
        return Err(EnrollError::WrongCredential(name.to_string()));
    }
    Ok(Enrolled {
        name: name.to_string(),
        credential: None,
        credential_hash: hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(tag: &str) -> Store {
        let dir = std::env::temp_dir().join(format!("llmbox-tokens-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        Store::open(dir.join("state.json")).expect("store")
    }

    #[test]
    fn a_token_enrolls_once_and_only_its_hash_is_stored() {
        let s = store("once");
        let index = CredentialIndex::default();
        let (token, rec) = create_token(&s, "edge-1", Duration::from_secs(60)).expect("mint");
        assert_eq!(rec.hash, sha256_hex(token.as_bytes()));
        let raw = std::fs::read_to_string(s.path()).expect("read");
        assert!(!raw.contains(&token));
        let e = enroll_with_token(&s, &token).expect("enroll");
        assert_eq!(e.name, "edge-1");
        let cred = e.credential.expect("credential");
        assert!(
            !std::fs::read_to_string(s.path())
                .expect("read")
                .contains(&cred)
        );
        assert!(matches!(
            enroll_with_token(&s, &token),
            Err(EnrollError::UnknownToken)
        ));
        assert!(check_credential(&s, &index, "edge-1", &cred).is_ok());
        assert!(matches!(
            check_credential(&s, &index, "edge-1", "nope"),
            Err(EnrollError::WrongCredential(_))
        ));
        assert!(matches!(
            check_credential(&s, &index, "edge-2", &cred),
            Err(EnrollError::NotEnrolled(_))
        ));
        assert!(matches!(
            check_credential(&s, &index, "local", &cred),
            Err(EnrollError::LocalName)
        ));
        assert!(matches!(
            enroll_with_token(&s, "short"),
            Err(EnrollError::MalformedToken)
        ));
    }

    #[test]
    fn an_expired_token_is_consumed_and_rejected() {
        let s = store("expired");
        let (token, _) = create_token(&s, "edge-1", Duration::from_secs(60)).expect("mint");
        s.update(|st| st.join_tokens[0].expires = 1).expect("age");
        let err = enroll_with_token(&s, &token).expect_err("expired");
        assert!(matches!(err, EnrollError::ExpiredToken { .. }), "{err:?}");
        assert!(err.to_string().contains("expired"), "{err}");
        assert!(s.load().expect("load").join_tokens.is_empty());
        assert!(s.load().expect("load").spokes.is_empty());
    }

    #[test]
    fn names_must_be_labels_and_not_local() {
        let s = store("names");
        for bad in ["local", "Edge", "", "a_b", "-x"] {
            assert!(
                create_token(&s, bad, Duration::from_secs(5)).is_err(),
                "{bad}"
            );
        }
        assert!(create_token(&s, "ok", Duration::ZERO).is_err());
        assert!(s.load().expect("load").join_tokens.is_empty());
    }

    #[test]
    fn reenrolling_supersedes_the_old_credential_and_revoke_removes_all() {
        let s = store("reenroll");
        // One index across the changes: it must follow the state file.
        let index = CredentialIndex::default();
        let (t1, _) = create_token(&s, "e", Duration::from_secs(60)).expect("t1");
        let c1 = enroll_with_token(&s, &t1)
            .expect("e1")
            .credential
            .expect("c1");
        assert!(check_credential(&s, &index, "e", &c1).is_ok());
        let (t2, _) = create_token(&s, "e", Duration::from_secs(60)).expect("t2");
        let c2 = enroll_with_token(&s, &t2)
            .expect("e2")
            .credential
            .expect("c2");
        assert!(check_credential(&s, &index, "e", &c1).is_err());
        assert!(check_credential(&s, &index, "e", &c2).is_ok());
        assert_eq!(s.load().expect("load").spokes.len(), 1);
        create_token(&s, "e", Duration::from_secs(60)).expect("t3");
        assert!(revoke_spoke(&s, "e").expect("revoke"));
        let st = s.load().expect("load");
        assert!(st.spokes.is_empty() && st.join_tokens.is_empty());
        assert!(matches!(
            check_credential(&s, &index, "e", &c2),
            Err(EnrollError::NotEnrolled(_))
        ));
        assert!(!revoke_spoke(&s, "e").expect("again"));
    }

    #[test]
    fn token_revoke_by_id_prefix() {
        let s = store("byid");
        let (_, rec) = create_token(&s, "e", Duration::from_secs(60)).expect("mint");
        assert!(revoke_token_by_id(&s, "ab").is_err());
        let gone = revoke_token_by_id(&s, rec.id()).expect("revoke");
        assert_eq!(gone.hash, rec.hash);
        assert!(revoke_token_by_id(&s, rec.id()).is_err());
    }
}
