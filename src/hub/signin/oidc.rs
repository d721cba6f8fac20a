//! One OpenID Connect provider found by discovery: its authorize URL (code flow, PKCE S256,
//! `state`, `nonce`), the code-for-token exchange and the ID token's check against its JWKS,
//! refetched once when a token names a key the cached set lacks.
//!
//! HTTP goes through one ureq agent (rustls, ring) with a global timeout, no more than
//! [`MAX_RESPONSE_BYTES`] read from any answer, and few redirects. The provider's endpoints
//! must be https, except on a loopback issuer (a provider on the same machine, as in tests).
//! The client secret lives only in memory; it is never logged or shown.

use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;

use super::SigninError;
use super::jwt::{self, Expected, Identity, Jwks, JwtError};

/// Largest discovery document, JWKS or token response read.
pub(crate) const MAX_RESPONSE_BYTES: u64 = 256 * 1024;
/// Time limit of one request to the provider, connect to last byte.
pub(crate) const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);

/// The discovery fields used.
#[derive(Debug, Clone, Deserialize)]
struct Metadata {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Vec<String>,
}

/// A discovered provider.
pub(crate) struct OidcProvider {
    /// The button's label (`--oidc-name`).
    pub(crate) label: String,
    issuer: String,
    client_id: String,
    client_secret: String,
    meta: Metadata,
    keys: Mutex<Jwks>,
    agent: ureq::Agent,
}

impl std::fmt::Debug for OidcProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcProvider")
            .field("label", &self.label)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// The ureq agent every provider call uses.
pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(PROVIDER_TIMEOUT))
        .http_status_as_error(false)
        .max_redirects(3)
        .user_agent(concat!("llmbox/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// True for an http(s) URL allowed as a provider endpoint: https, or http on loopback.
pub(crate) fn endpoint_allowed(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let name = if host.starts_with('[') {
        host.split(']').next().unwrap_or("").trim_start_matches('[')
    } else {
        host.split(':').next().unwrap_or("")
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn read_json<T: serde::de::DeserializeOwned>(
    mut resp: ureq::http::Response<ureq::Body>,
    what: &str,
) -> Result<T, SigninError> {
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .with_config()
        .limit(MAX_RESPONSE_BYTES)
        .read_to_string()
        .map_err(|e| SigninError::Provider(format!("{what}: reading the answer: {e}")))?;
    if status != 200 {
        let detail: String = text.chars().take(300).collect();
        return Err(SigninError::Provider(format!(
            "{what}: HTTP {status}: {detail}"
        )));
    }
    serde_json::from_str(&text).map_err(|e| SigninError::Provider(format!("{what}: {e}")))
}

impl OidcProvider {
    /// Discovers `issuer` (`/.well-known/openid-configuration`) and loads its keys.
    ///
    /// # Errors
    /// [`SigninError::Provider`] when the provider cannot be reached or its answers are wrong.
    pub(crate) fn discover(
        label: &str,
        issuer: &str,
        client_id: &str,
        client_secret: &str,
    ) -> Result<OidcProvider, SigninError> {
        let issuer = issuer.trim_end_matches('/').to_string();
        if !endpoint_allowed(&issuer) {
            return Err(SigninError::Provider(format!(
                "--oidc-issuer {issuer}: must be https (plain http only on loopback)"
            )));
        }
        let agent = agent();
        let url = format!("{issuer}/.well-known/openid-configuration");
        let what = format!("discovery at {url}");
        let resp = agent
            .get(&url)
            .call()
            .map_err(|e| SigninError::Provider(format!("{what}: {e}")))?;
        let meta: Metadata = read_json(resp, &what)?;
        if meta.issuer.trim_end_matches('/') != issuer {
            return Err(SigninError::Provider(format!(
                "{what}: names issuer {:?}, not {issuer:?}",
                meta.issuer
            )));
        }
        for (name, u) in [
            ("authorization_endpoint", &meta.authorization_endpoint),
            ("token_endpoint", &meta.token_endpoint),
            ("jwks_uri", &meta.jwks_uri),
        ] {
            if !endpoint_allowed(u) {
                return Err(SigninError::Provider(format!(
                    "{what}: {name} {u:?} is not https"
                )));
            }
        }
        let provider = OidcProvider {
            label: label.to_string(),
            // The token's `iss` must equal the metadata's exactly (OIDC Discovery §4.3).
            issuer: meta.issuer.clone(),
            client_id: client_id.to_string(),
            client_secret: client_secret.to_string(),
            meta,
            keys: Mutex::new(Jwks::default()),
            agent,
        };
        provider.refresh_keys()?;
        Ok(provider)
    }

    fn refresh_keys(&self) -> Result<(), SigninError> {
        let what = format!("keys at {}", self.meta.jwks_uri);
        let resp = self
            .agent
            .get(&self.meta.jwks_uri)
            .call()
            .map_err(|e| SigninError::Provider(format!("{what}: {e}")))?;
        let keys: Jwks = read_json(resp, &what)?;
        *self.keys.lock().unwrap_or_else(|e| e.into_inner()) = keys;
        Ok(())
    }

    /// True for Google, whose `hd` claim decides domain rules.
    pub(crate) fn is_google(&self) -> bool {
        self.issuer.trim_end_matches('/') == "https://accounts.google.com"
    }

    /// Where to send the browser.
    pub(crate) fn authorize_url(
        &self,
        redirect_uri: &str,
        state: &str,
        nonce: &str,
        challenge: &str,
    ) -> String {
        let sep = if self.meta.authorization_endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        format!(
            "{}{sep}response_type=code&client_id={}&redirect_uri={}&scope=openid%20email%20profile&state={state}&nonce={nonce}&code_challenge={challenge}&code_challenge_method=S256",
            self.meta.authorization_endpoint,
            super::url_encode(&self.client_id),
            super::url_encode(redirect_uri),
        )
    }

    /// Trades `code` for an ID token and checks it.
    ///
    /// # Errors
    /// [`SigninError::Provider`] (the exchange) or [`SigninError::Token`] (the check).
    pub(crate) fn finish(
        &self,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
        nonce: &str,
        now: i64,
    ) -> Result<Identity, SigninError> {
        #[derive(Deserialize)]
        struct TokenResponse {
            id_token: Option<String>,
        }
        let basic_only = !self.meta.token_endpoint_auth_methods_supported.is_empty()
            && !self
                .meta
                .token_endpoint_auth_methods_supported
                .iter()
                .any(|m| m == "client_secret_post");
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
            ("client_id", &self.client_id),
        ];
        let mut req = self.agent.post(&self.meta.token_endpoint);
        if basic_only {
            let pair = format!(
                "{}:{}",
                super::url_encode(&self.client_id),
                super::url_encode(&self.client_secret)
            );
            req = req.header(
                "Authorization",
                &format!("Basic {}", crate::util::base64::encode(pair.as_bytes())),
            );
        } else {
            form.push(("client_secret", &self.client_secret));
        }
        let what = format!("token exchange at {}", self.meta.token_endpoint);
        let resp = req
            .header("Accept", "application/json")
            .send_form(form)
            .map_err(|e| SigninError::Provider(format!("{what}: {e}")))?;
        let answer: TokenResponse = read_json(resp, &what)?;
        let token = answer.id_token.ok_or_else(|| {
            SigninError::Provider(format!(
                "{what}: no id_token (is the openid scope allowed?)"
            ))
        })?;
        let want = Expected {
            issuer: &self.issuer,
            client_id: &self.client_id,
            nonce,
            now,
        };
        let check = |keys: &Jwks| jwt::verify(&token, keys, &want);
        let first = check(&self.keys.lock().unwrap_or_else(|e| e.into_inner()));
        match first {
            Err(JwtError::UnknownKey(_)) => {
                // The provider may have rotated its keys: fetch once, then decide.
                self.refresh_keys()?;
                check(&self.keys.lock().unwrap_or_else(|e| e.into_inner()))
                    .map_err(SigninError::Token)
            }
            other => other.map_err(SigninError::Token),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::signin::jwt::tests::{NOW, Signer, claims};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// An in-process provider for what a real one will not do on demand: rotate its keys
    /// between discovery and a sign-in. Serves discovery, the JWKS (whatever `keys` holds now,
    /// counting fetches) and a token endpoint answering `token`.
    struct Fake {
        issuer: String,
        keys: Arc<Mutex<serde_json::Value>>,
        token: Arc<Mutex<String>>,
        jwks_fetches: Arc<AtomicUsize>,
        server: Arc<tiny_http::Server>,
    }

    impl Fake {
        fn start(keys: serde_json::Value) -> Fake {
            let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
            let port = server.server_addr().to_ip().unwrap().port();
            let issuer = format!("http://127.0.0.1:{port}");
            let fake = Fake {
                issuer: issuer.clone(),
                keys: Arc::new(Mutex::new(keys)),
                token: Arc::new(Mutex::new(String::new())),
                jwks_fetches: Arc::new(AtomicUsize::new(0)),
                server: Arc::clone(&server),
            };
            let (keys, token, fetches) = (
                Arc::clone(&fake.keys),
                Arc::clone(&fake.token),
                Arc::clone(&fake.jwks_fetches),
            );
            // Owns the fake's socket; ends when the server is unblocked in Drop.
            std::thread::spawn(move || {
                for req in server.incoming_requests() {
                    let body = match req.url() {
                        u if u.ends_with("/.well-known/openid-configuration") => {
                            serde_json::json!({
                                "issuer": issuer,
                                "authorization_endpoint": format!("{issuer}/authorize"),
                                "token_endpoint": format!("{issuer}/token"),
                                "jwks_uri": format!("{issuer}/jwks"),
                            })
                            .to_string()
                        }
                        "/jwks" => {
                            fetches.fetch_add(1, Ordering::SeqCst);
                            keys.lock().unwrap().to_string()
                        }
                        _ => serde_json::json!({"id_token": *token.lock().unwrap()}).to_string(),
                    };
                    let _ = req.respond(tiny_http::Response::from_string(body));
                }
            });
            fake
        }
    }

    impl Drop for Fake {
        fn drop(&mut self) {
            self.server.unblock();
        }
    }

    fn claims_for(issuer: &str) -> serde_json::Value {
        let mut c = claims();
        c["iss"] = serde_json::json!(issuer);
        c
    }

    #[test]
    fn rotated_keys_are_refetched_once_and_an_unknown_kid_is_refused_after_that_one_fetch() {
        let old = Signer::ec("old");
        let new = Signer::rsa("new");
        let fake = Fake::start(serde_json::json!({ "keys": [old.jwk()] }));
        let p = OidcProvider::discover("Fake", &fake.issuer, "hub-client", "s").unwrap();
        assert_eq!(fake.jwks_fetches.load(Ordering::SeqCst), 1);
        let finish = |p: &OidcProvider| p.finish("code", "verifier", "http://h/cb", "n-1", NOW);

        // Signed with the cached key: no fetch.
        *fake.token.lock().unwrap() = old.sign(&claims_for(&fake.issuer));
        assert_eq!(finish(&p).unwrap().email, "ada@example.org");
        assert_eq!(fake.jwks_fetches.load(Ordering::SeqCst), 1);

        // The provider rotated: one fetch, then the new key verifies.
        *fake.keys.lock().unwrap() = serde_json::json!({ "keys": [new.jwk()] });
        *fake.token.lock().unwrap() = new.sign(&claims_for(&fake.issuer));
        assert_eq!(finish(&p).unwrap().email, "ada@example.org");
        assert_eq!(fake.jwks_fetches.load(Ordering::SeqCst), 2);

        // A kid the provider does not publish: one fetch, then refused.
        let stranger = Signer::ec("stranger");
        *fake.token.lock().unwrap() = stranger.sign(&claims_for(&fake.issuer));
        match finish(&p) {
            Err(SigninError::Token(JwtError::UnknownKey(k))) => assert_eq!(k, "stranger"),
            other => panic!("{other:?}"),
        }
        assert_eq!(fake.jwks_fetches.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn discovery_naming_another_issuer_is_refused() {
        let fake = Fake::start(serde_json::json!({"keys": []}));
        let claimed = format!("{}/other", fake.issuer);
        match OidcProvider::discover("Fake", &claimed, "c", "s") {
            Err(SigninError::Provider(m)) => assert!(m.contains("names issuer"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn endpoints_must_be_https_except_on_loopback() {
        for ok in [
            "https://accounts.google.com",
            "http://127.0.0.1:9000/o",
            "http://localhost/x",
            "http://[::1]:8080/",
        ] {
            assert!(endpoint_allowed(ok), "{ok}");
        }
        for bad in [
            "http://idp.example/",
            "http://127.0.0.1.evil.example/",
            "http://localhost@evil.example/",
            "ftp://x",
            "",
        ] {
            assert!(!endpoint_allowed(bad), "{bad}");
        }
    }
}
