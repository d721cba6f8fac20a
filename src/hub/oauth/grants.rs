//! Grants in the state file ([`OAuthGrantRecord`]): issuing a token family at consent,
//! accepting an access token at the MCP endpoint, rotating a refresh token, revoking.
//!
//! Tokens are `llmbox_at_<64 hex>` (access) and `llmbox_rt_<64 hex>` (refresh), opaque; the
//! file holds only their SHA-256. A lookup hashes what was presented and compares with every
//! stored hash in constant time, as API keys do. Every refresh rotates both tokens; the old
//! refresh token's hash is kept (the newest [`MAX_SPENT`]) so that presenting it again — a
//! stolen token racing its owner — revokes the whole grant (OAuth 2.1 §4.3.1).
//!
//! Bounds: [`MAX_GRANTS_PER_PERSON`] per person and [`MAX_GRANTS`] in all (the oldest go
//! first); grants whose refresh token expired are dropped whenever one is issued.

use crate::hub::apikeys::Caller;
use crate::hub::audit::AuditLog;
use crate::store::{OAuthGrantRecord, State, Store, StoreError};
use crate::util::secret::{ct_eq, sha256_hex};

use super::{OAuth, OAuthError, now, secret, secs};

/// Prefix of access tokens (secret scanners can find leaked ones).
pub(crate) const ACCESS_PREFIX: &str = "llmbox_at_";
/// Prefix of refresh tokens.
pub(crate) const REFRESH_PREFIX: &str = "llmbox_rt_";
/// Grants kept in all.
pub(crate) const MAX_GRANTS: usize = 10_000;
/// Grants kept per person (each chatbot connection is one).
pub(crate) const MAX_GRANTS_PER_PERSON: usize = 50;
/// Rotated-away refresh hashes kept per grant.
pub(crate) const MAX_SPENT: usize = 32;

/// A token response's secrets, shown once to the client.
#[derive(Debug)]
pub(crate) struct Issued {
    /// The access token.
    pub(crate) access: String,
    /// The refresh token.
    pub(crate) refresh: String,
    /// Seconds the access token lives.
    pub(crate) expires_in: i64,
    /// The granted scope.
    pub(crate) scope: String,
    /// The grant's public id.
    pub(crate) grant: String,
}

/// Who consented to what: the grant a code turns into.
#[derive(Debug, Clone)]
pub(crate) struct Consent {
    /// The client.
    pub(crate) client_id: String,
    /// Its name at consent.
    pub(crate) client_name: String,
    /// The person's email.
    pub(crate) email: String,
    /// Their provider's label.
    pub(crate) provider: String,
    /// The canonical resource.
    pub(crate) resource: String,
    /// The granted scope.
    pub(crate) scope: String,
}

/// What a refresh attempt found, decided under the state lock.
enum Refreshed {
    Rotated(Box<(Issued, Consent)>),
    Reused {
        grant: String,
        email: String,
        provider: String,
    },
    Refused(&'static str),
}

fn fresh_pair(oauth: &OAuth, now: i64) -> Result<(String, String, i64, i64), OAuthError> {
    let access = secret(ACCESS_PREFIX)?;
    let refresh = secret(REFRESH_PREFIX)?;
    let access_expires = now.saturating_add(secs(oauth.config.access_ttl));
    let refresh_expires = now.saturating_add(secs(oauth.config.refresh_ttl));
    Ok((access, refresh, access_expires, refresh_expires))
}

/// Drops grants that can no longer be used, and the oldest past the bounds (`email` of
/// `provider` is about to get one more).
fn prune(state: &mut State, now: i64, provider: &str, email: &str) {
    state.oauth_grants.retain(|g| g.refresh_expires > now);
    let theirs = |g: &OAuthGrantRecord| g.provider == provider && g.email == email;
    while state.oauth_grants.iter().filter(|g| theirs(g)).count() >= MAX_GRANTS_PER_PERSON {
        let Some(i) = state.oauth_grants.iter().position(theirs) else {
            break;
        };
        state.oauth_grants.remove(i);
    }
    while state.oauth_grants.len() >= MAX_GRANTS {
        state.oauth_grants.remove(0);
    }
}

impl OAuth {
    /// Makes a grant for `consent` and its first tokens.
    ///
    /// # Errors
    /// The random source or the state file.
    pub(crate) fn issue(&self, store: &Store, consent: &Consent) -> Result<Issued, OAuthError> {
        let now = now();
        let (access, refresh, access_expires, refresh_expires) = fresh_pair(self, now)?;
        let id = secret("")?[..16].to_string();
        let record = OAuthGrantRecord {
            id: id.clone(),
            client_id: consent.client_id.clone(),
            client_name: consent.client_name.clone(),
            email: consent.email.clone(),
            provider: consent.provider.clone(),
            resource: consent.resource.clone(),
            scope: consent.scope.clone(),
            created: now,
            access_hash: sha256_hex(access.as_bytes()),
            access_expires,
            refresh_hash: sha256_hex(refresh.as_bytes()),
            refresh_expires,
            spent_refresh_hashes: Vec::new(),
        };
        store.update(|state| {
            prune(state, now, &consent.provider, &consent.email);
            state.oauth_grants.push(record);
            if let Some(c) = state
                .oauth_clients
                .iter_mut()
                .find(|c| c.client_id == consent.client_id)
            {
                c.last_used = Some(now);
            }
        })?;
        Ok(Issued {
            access,
            refresh,
            expires_in: secs(self.config.access_ttl),
            scope: consent.scope.clone(),
            grant: id,
        })
    }

    /// The person behind access token `token`, when it is current and bound to this hub;
    /// `None` for anything else (unknown, expired, revoked, another audience).
    ///
    /// # Errors
    /// The state file.
    pub(crate) fn verify_access(
        &self,
        store: &Store,
        token: &str,
    ) -> Result<Option<Caller>, StoreError> {
        let hash = sha256_hex(token.as_bytes());
        let state = store.load()?;
        let now = now();
        let mut found = None;
        // Every hash is compared, without stopping at a match (see the module docs).
        for g in &state.oauth_grants {
            if ct_eq(&g.access_hash, &hash) {
                found = Some(g);
            }
        }
        Ok(found
            .filter(|g| g.access_expires > now && self.names_this_hub(&g.resource).is_some())
            .map(|g| Caller::Person {
                email: g.email.clone(),
                provider: g.provider.clone(),
                grant: g.id.clone(),
            }))
    }

    /// Trades refresh token `token` of `client_id` for a new pair. A token already rotated away
    /// revokes its grant (and says so in `audit`).
    ///
    /// # Errors
    /// [`OAuthError::invalid_grant`] for an unknown, expired, reused or foreign token;
    /// [`OAuthError::invalid_target`] for a `resource` other than the grant's.
    pub(crate) fn refresh(
        &self,
        store: &Store,
        audit: Option<(&AuditLog, Option<std::net::SocketAddr>)>,
        token: &str,
        client_id: &str,
        resource: Option<&str>,
    ) -> Result<(Issued, Consent), OAuthError> {
        if let Some(r) = resource
            && self.names_this_hub(r).is_none()
        {
            return Err(OAuthError::invalid_target(
                "resource must be this hub's MCP URL",
            ));
        }
        let now = now();
        let (access, refresh, access_expires, refresh_expires) = fresh_pair(self, now)?;
        let hash = sha256_hex(token.as_bytes());
        let access_ttl = secs(self.config.access_ttl);
        let outcome = store.update(|state| {
            let mut current = None;
            let mut spent = None;
            for (i, g) in state.oauth_grants.iter().enumerate() {
                if ct_eq(&g.refresh_hash, &hash) {
                    current = Some(i);
                }
                if g.spent_refresh_hashes.iter().any(|h| ct_eq(h, &hash)) {
                    spent = Some(i);
                }
            }
            if let Some(i) = spent {
                let g = state.oauth_grants.remove(i);
                return Refreshed::Reused {
                    grant: g.id,
                    email: g.email,
                    provider: g.provider,
                };
            }
            let Some(i) = current else {
                return Refreshed::Refused("the refresh token is unknown or revoked");
            };
            let g = &mut state.oauth_grants[i];
            if g.client_id != client_id {
                return Refreshed::Refused("the refresh token was issued to another client");
            }
            if g.refresh_expires <= now {
                return Refreshed::Refused("the refresh token has expired; sign in again");
            }
            if let Some(r) = resource
                && self.names_this_hub(r) != self.names_this_hub(&g.resource)
            {
                return Refreshed::Refused("resource differs from the one consented to");
            }
            let old = std::mem::replace(&mut g.refresh_hash, sha256_hex(refresh.as_bytes()));
            g.spent_refresh_hashes.push(old);
            if g.spent_refresh_hashes.len() > MAX_SPENT {
                g.spent_refresh_hashes.remove(0);
            }
            g.access_hash = sha256_hex(access.as_bytes());
            g.access_expires = access_expires;
            g.refresh_expires = refresh_expires;
            let consent = Consent {
                client_id: g.client_id.clone(),
                client_name: g.client_name.clone(),
                email: g.email.clone(),
                provider: g.provider.clone(),
                resource: g.resource.clone(),
                scope: g.scope.clone(),
            };
            let issued = Issued {
                access: access.clone(),
                refresh: refresh.clone(),
                expires_in: access_ttl,
                scope: g.scope.clone(),
                grant: g.id.clone(),
            };
            let client = g.client_id.clone();
            if let Some(c) = state
                .oauth_clients
                .iter_mut()
                .find(|c| c.client_id == client)
            {
                c.last_used = Some(now);
            }
            Refreshed::Rotated(Box::new((issued, consent)))
        })?;
        match outcome {
            Refreshed::Rotated(pair) => Ok(*pair),
            Refreshed::Reused {
                grant,
                email,
                provider,
            } => {
                log::warn!(
                    "oauth: grant {grant} of {email} ({provider}): a refresh token that was already rotated was presented again; the grant is revoked"
                );
                if let Some((a, remote)) = audit {
                    a.signin(
                        "oauth_refresh_reuse",
                        Some(&email),
                        Some(&provider),
                        Some("a rotated refresh token was presented again; the grant is revoked"),
                        remote,
                    );
                }
                Err(OAuthError::invalid_grant(
                    "this refresh token was already used; the grant is revoked, sign in again",
                ))
            }
            Refreshed::Refused(why) => Err(OAuthError::invalid_grant(why)),
        }
    }

    /// Revokes the grant behind `token` (an access or refresh token, current or rotated) when
    /// it belongs to `client_id` (RFC 7009: unknown tokens are no error). The grant's id, if
    /// one was revoked.
    ///
    /// # Errors
    /// The state file.
    pub(crate) fn revoke_token(
        &self,
        store: &Store,
        token: &str,
        client_id: Option<&str>,
    ) -> Result<Option<(String, String, String)>, StoreError> {
        let hash = sha256_hex(token.as_bytes());
        store.update(|state| {
            let mut hit = None;
            for (i, g) in state.oauth_grants.iter().enumerate() {
                let matches = ct_eq(&g.access_hash, &hash)
                    | ct_eq(&g.refresh_hash, &hash)
                    | g.spent_refresh_hashes.iter().any(|h| ct_eq(h, &hash));
                if matches {
                    hit = Some(i);
                }
            }
            let i = hit?;
            if client_id.is_some_and(|c| c != state.oauth_grants[i].client_id) {
                return None;
            }
            let g = state.oauth_grants.remove(i);
            Some((g.id, g.email, g.provider))
        })
    }
}

/// Revokes every grant of `email` signed in through `provider` (`/admin`); how many.
///
/// # Errors
/// The state file.
pub(crate) fn revoke_person(
    store: &Store,
    provider: &str,
    email: &str,
) -> Result<usize, StoreError> {
    store.update(|state| {
        let before = state.oauth_grants.len();
        state
            .oauth_grants
            .retain(|g| !(g.provider == provider && g.email == email));
        before - state.oauth_grants.len()
    })
}

#[cfg(test)]
mod tests {
    use super::super::OAuthConfig;
    use super::*;

    fn setup(tag: &str) -> (OAuth, Store) {
        let dir =
            std::env::temp_dir().join(format!("llmbox-oauth-grants-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let store = Store::open(dir.join("state.json")).expect("store");
        (OAuth::new(OAuthConfig::new("https://hub.example")), store)
    }

    fn consent(email: &str) -> Consent {
        Consent {
            client_id: "c1".into(),
            client_name: "Test".into(),
            email: email.into(),
            provider: "IdP".into(),
            resource: "https://hub.example/mcp".into(),
            scope: "mcp".into(),
        }
    }

    #[test]
    fn only_hashes_reach_the_state_file_and_the_access_token_names_its_person() {
        let (o, store) = setup("hash");
        let issued = o.issue(&store, &consent("ada@example.org")).expect("issue");
        let text = std::fs::read_to_string(store.path()).expect("state");
        assert!(!text.contains(&issued.access) && !text.contains(&issued.refresh));
        assert!(issued.access.starts_with(ACCESS_PREFIX));
        let who = o.verify_access(&store, &issued.access).expect("load");
        assert!(
            matches!(who, Some(Caller::Person { ref email, .. }) if email == "ada@example.org")
        );
        assert_eq!(
            o.verify_access(&store, &issued.refresh).expect("load"),
            None
        );
        assert_eq!(o.verify_access(&store, "llmbox_at_00").expect("load"), None);
    }

    #[test]
    fn a_token_for_another_audience_is_refused() {
        let (o, store) = setup("aud");
        let mut c = consent("ada@example.org");
        c.resource = "https://other.example/mcp".into();
        let issued = o.issue(&store, &c).expect("issue");
        assert_eq!(o.verify_access(&store, &issued.access).expect("load"), None);
    }

    #[test]
    fn refresh_rotates_and_a_reused_refresh_token_revokes_the_family() {
        let (o, store) = setup("rotate");
        let first = o.issue(&store, &consent("ada@example.org")).expect("issue");
        let (second, _) = o
            .refresh(&store, None, &first.refresh, "c1", None)
            .expect("refresh");
        assert_ne!(second.refresh, first.refresh);
        assert_eq!(
            o.verify_access(&store, &first.access).expect("load"),
            None,
            "rotated away"
        );
        assert!(
            o.verify_access(&store, &second.access)
                .expect("load")
                .is_some()
        );
        let err = o
            .refresh(&store, None, &first.refresh, "c1", None)
            .expect_err("reuse");
        assert_eq!(err.code, "invalid_grant");
        assert_eq!(
            o.verify_access(&store, &second.access).expect("load"),
            None,
            "family revoked"
        );
        assert!(
            o.refresh(&store, None, &second.refresh, "c1", None)
                .is_err()
        );
    }

    #[test]
    fn a_refresh_by_another_client_or_for_another_resource_changes_nothing() {
        let (o, store) = setup("foreign");
        let first = o.issue(&store, &consent("ada@example.org")).expect("issue");
        let before = store.load().expect("load");
        assert_eq!(
            o.refresh(&store, None, &first.refresh, "c2", None)
                .expect_err("client")
                .code,
            "invalid_grant"
        );
        assert_eq!(
            o.refresh(
                &store,
                None,
                &first.refresh,
                "c1",
                Some("https://evil.example/mcp")
            )
            .expect_err("target")
            .code,
            "invalid_target"
        );
        assert_eq!(*store.load().expect("load"), *before);
        assert!(
            o.refresh(
                &store,
                None,
                &first.refresh,
                "c1",
                Some("https://hub.example/mcp")
            )
            .is_ok()
        );
    }

    #[test]
    fn grants_per_person_are_bounded_and_revoked_by_person() {
        let (o, store) = setup("bound");
        for _ in 0..MAX_GRANTS_PER_PERSON + 3 {
            o.issue(&store, &consent("ada@example.org")).expect("issue");
        }
        o.issue(&store, &consent("bob@example.org")).expect("issue");
        let state = store.load().expect("load");
        assert_eq!(state.oauth_grants.len(), MAX_GRANTS_PER_PERSON + 1);
        assert_eq!(
            revoke_person(&store, "IdP", "ada@example.org").expect("revoke"),
            MAX_GRANTS_PER_PERSON
        );
        assert_eq!(store.load().expect("load").oauth_grants.len(), 1);
    }

    #[test]
    fn revoking_any_token_of_a_grant_ends_it_but_only_for_its_client() {
        let (o, store) = setup("revoke");
        let issued = o.issue(&store, &consent("ada@example.org")).expect("issue");
        assert_eq!(
            o.revoke_token(&store, &issued.access, Some("c2"))
                .expect("revoke"),
            None
        );
        assert!(
            o.revoke_token(&store, &issued.refresh, Some("c1"))
                .expect("revoke")
                .is_some()
        );
        assert_eq!(o.verify_access(&store, &issued.access).expect("load"), None);
        assert_eq!(
            o.revoke_token(&store, "nothing", None).expect("revoke"),
            None
        );
    }
}
