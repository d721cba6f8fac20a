//! Sign-in on the web pages (issue 13): OpenID Connect providers found by discovery, who may
//! activate (allow rules), and server-side sessions.
//!
//! A sign-in runs: `GET /signin/oidc?p=N&next=/auth/…` makes a pending login (random `state`,
//! `nonce` and PKCE verifier, kept in memory for [`LOGIN_TTL`] and bound to the browser by a
//! short cookie holding the state) and redirects to the provider; the provider sends the browser
//! to `/signin/oidc/callback`, where the code is traded for an ID token, the token checked
//! ([`jwt`]), and a session made. A session id is 32 random bytes in the cookie; the state file
//! holds only its SHA-256 ([`crate::store::SigninSession`]) with the email and expiry. Each
//! form carries a CSRF token derived from the session id (SHA-256 under another label), so it
//! needs no storage and cannot be computed from the state file.
//!
//! The session cookie is `__Host-llmbox` with `Secure` when the public URL is https. On plain
//! http it is `llmbox` without `Secure`: browsers drop a `__Host-` cookie that lacks `Secure`
//! (chromium does, on loopback too), and Go llmbox's always-Secure cookie broke plain-http
//! installs.
//!
//! Not here: the HTTP plumbing ([`super::http`] hands requests to [`web`]) and the pages' look
//! ([`super::page`]). No threads; the pending logins sit behind one mutex held for a map
//! operation only, never across a provider call.

pub(crate) mod admin;
pub(crate) mod github;
pub mod jwt;
pub(crate) mod oidc;
pub(crate) mod web;

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::store::{SigninSession, Store, StoreError};
use crate::util::secret::{ct_eq, sha256_hex};

/// Default `--session-ttl`.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// How long a started sign-in may take at the provider.
pub(crate) const LOGIN_TTL: Duration = Duration::from_secs(10 * 60);
/// Started sign-ins kept at once; past it the oldest are dropped (a flood of starts cannot
/// grow memory without bound).
pub(crate) const MAX_PENDING: usize = 10_000;

/// One OpenID Connect provider as configured (`--oidc-*`); the secret is already read from
/// its file.
#[derive(Clone)]
pub struct OidcConfig {
    /// The button's label (`--oidc-name`, default "OpenID Connect", "Google" for Google).
    pub label: String,
    /// `--oidc-issuer`.
    pub issuer: String,
    /// `--oidc-client-id`.
    pub client_id: String,
    /// The contents of `--oidc-client-secret-file`, trimmed.
    pub client_secret: String,
}

impl fmt::Debug for OidcConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcConfig")
            .field("label", &self.label)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// A GitHub OAuth app (`--github-client-id`, `--github-client-secret-file`).
#[derive(Clone)]
pub struct GithubConfig {
    /// The app's client id.
    pub client_id: String,
    /// The contents of `--github-client-secret-file`, trimmed.
    pub client_secret: String,
    /// Authorize and token endpoints' base ([`github::GITHUB_WEB`]; a local fake in tests).
    pub web_base: String,
    /// The API's base ([`github::GITHUB_API`]; a local fake in tests).
    pub api_base: String,
}

impl GithubConfig {
    /// The app `client_id` on github.com.
    pub fn new(client_id: &str, client_secret: &str) -> GithubConfig {
        GithubConfig {
            client_id: client_id.to_string(),
            client_secret: client_secret.to_string(),
            web_base: github::GITHUB_WEB.into(),
            api_base: github::GITHUB_API.into(),
        }
    }
}

impl fmt::Debug for GithubConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GithubConfig")
            .field("client_id", &self.client_id)
            .field("web_base", &self.web_base)
            .finish_non_exhaustive()
    }
}

/// Who may do what once signed in.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// `--allow-email`, lowercased.
    pub emails: Vec<String>,
    /// `--allow-domain`, lowercased.
    pub domains: Vec<String>,
    /// `--admin-email`, lowercased.
    pub admins: Vec<String>,
}

impl Rules {
    /// True when `email` (with Google's `hd`, if any) may activate. For a Google account the
    /// domain rule goes by `hd` only: a consumer Google account may carry a verified address at
    /// any domain, while `hd` proves a Workspace account of that domain.
    pub(crate) fn allows(&self, email: &str, hosted_domain: Option<&str>, google: bool) -> bool {
        if self.emails.iter().any(|e| e == email) || self.admins.iter().any(|e| e == email) {
            return true;
        }
        let domain = if google {
            hosted_domain
        } else {
            email.rsplit_once('@').map(|(_, d)| d)
        };
        domain.is_some_and(|d| self.domains.iter().any(|r| r == d))
    }
}

/// Sign-in settings (`llmbox hub` flags).
#[derive(Debug, Clone)]
pub struct SigninConfig {
    /// The hub's public URL, without a trailing slash (redirect URIs, cookie security).
    pub public_url: String,
    /// The OpenID Connect providers.
    pub oidc: Vec<OidcConfig>,
    /// The GitHub app, if any.
    pub github: Option<GithubConfig>,
    /// The allow and admin rules.
    pub rules: Rules,
    /// `--session-ttl`.
    pub session_ttl: Duration,
    /// The URL spokes dial (`ws://…` or `wss://…`), for the lines `/admin` hands out.
    pub spoke_url: String,
}

/// Why sign-in failed or cannot start.
#[derive(Debug)]
pub enum SigninError {
    /// The configuration is unusable (a usage error: exit 2).
    Config(String),
    /// The provider could not be reached or answered wrongly.
    Provider(String),
    /// The ID token was refused.
    Token(jwt::JwtError),
    /// The provider vouched for nobody usable (no verified email).
    Refused(String),
    /// The state file.
    Store(StoreError),
    /// The system's random source failed.
    Random(String),
}

impl fmt::Display for SigninError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SigninError::Config(m) => write!(f, "sign-in: {m}"),
            SigninError::Provider(m) => write!(f, "sign-in provider: {m}"),
            SigninError::Token(e) => write!(f, "sign-in: {e}"),
            SigninError::Refused(m) => write!(f, "sign-in: {m}"),
            SigninError::Store(e) => write!(f, "sign-in: {e}"),
            SigninError::Random(e) => write!(f, "sign-in: random source: {e}"),
        }
    }
}

impl std::error::Error for SigninError {}

impl From<StoreError> for SigninError {
    fn from(e: StoreError) -> Self {
        SigninError::Store(e)
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub(crate) fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn random() -> Result<String, SigninError> {
    crate::util::secret::random_hex_32().map_err(|e| SigninError::Random(e.to_string()))
}

/// The PKCE S256 challenge of `verifier` (RFC 7636 §4.2).
pub(crate) fn pkce_challenge(verifier: &str) -> String {
    use sha2::{Digest, Sha256};
    crate::util::base64::encode_url(&Sha256::digest(verifier.as_bytes()))
}

/// The CSRF token of the forms shown to the holder of session `id`.
fn csrf_of(id: &str) -> String {
    sha256_hex(format!("llmbox-csrf:{id}").as_bytes())
}

/// One sign-in button.
#[derive(Debug)]
enum Provider {
    Oidc(oidc::OidcProvider),
    Github(github::GithubProvider),
}

impl Provider {
    fn label(&self) -> &str {
        match self {
            Provider::Oidc(p) => &p.label,
            Provider::Github(_) => "GitHub",
        }
    }

    /// The path segment of its routes: `/signin/<kind>`, `/signin/<kind>/callback`.
    fn kind(&self) -> &'static str {
        match self {
            Provider::Oidc(_) => "oidc",
            Provider::Github(_) => "github",
        }
    }
}

/// A started sign-in, waiting for the provider's callback.
struct Pending {
    provider: usize,
    verifier: String,
    nonce: String,
    next: String,
    started: Instant,
}

/// A signed-in person as a page sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Person {
    /// The verified email.
    pub(crate) email: String,
    /// The provider's label.
    pub(crate) provider: String,
    /// The token every form of theirs must carry.
    pub(crate) csrf: String,
    /// Within the allow rules.
    pub(crate) allowed: bool,
    /// Listed by `--admin-email`.
    pub(crate) admin: bool,
}

/// The configured sign-in: providers, rules, the pending logins.
pub struct Signin {
    config: SigninConfig,
    providers: Vec<Provider>,
    pending: Mutex<HashMap<String, Pending>>,
}

impl fmt::Debug for Signin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signin")
            .field("providers", &self.providers)
            .finish_non_exhaustive()
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Signin {
    /// Checks `config` and discovers every provider.
    ///
    /// # Errors
    /// [`SigninError::Config`] for providers without any allow rule (or rules without a
    /// provider); [`SigninError::Provider`] when discovery fails.
    pub fn start(config: SigninConfig) -> Result<Signin, SigninError> {
        let rules = &config.rules;
        let has_rules =
            !rules.emails.is_empty() || !rules.domains.is_empty() || !rules.admins.is_empty();
        if config.oidc.is_empty() && config.github.is_none() {
            return Err(SigninError::Config(
                "--allow-email, --allow-domain and --admin-email need a sign-in provider (--oidc-issuer … or --github-client-id …)".into(),
            ));
        }
        if !has_rules {
            return Err(SigninError::Config(
                "a sign-in provider without any --allow-email or --allow-domain would let nobody in; add at least one".into(),
            ));
        }
        let mut providers = Vec::new();
        for p in &config.oidc {
            providers.push(Provider::Oidc(oidc::OidcProvider::discover(
                &p.label,
                &p.issuer,
                &p.client_id,
                &p.client_secret,
            )?));
        }
        if let Some(g) = &config.github {
            providers.push(Provider::Github(github::GithubProvider::new(g.clone())?));
        }
        Ok(Signin {
            config,
            providers,
            pending: Mutex::new(HashMap::new()),
        })
    }

    /// True when the cookie must be `Secure` (the public URL is https).
    fn secure(&self) -> bool {
        self.config.public_url.starts_with("https://")
    }

    /// The session cookie's name (see the module docs for why it differs on plain http).
    pub(crate) fn cookie_name(&self) -> &'static str {
        if self.secure() {
            "__Host-llmbox"
        } else {
            "llmbox"
        }
    }

    fn login_cookie_name(&self) -> &'static str {
        if self.secure() {
            "__Host-llmbox-login"
        } else {
            "llmbox-login"
        }
    }

    fn cookie(&self, name: &str, value: &str, max_age: u64) -> String {
        let secure = if self.secure() { "; Secure" } else { "" };
        format!("{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}")
    }

    /// The buttons, in order: label and the path that starts each.
    pub(crate) fn buttons_of(&self) -> Vec<(&str, String)> {
        let mut oidc = 0;
        self.providers
            .iter()
            .map(|p| match p {
                Provider::Oidc(_) => {
                    oidc += 1;
                    (p.label(), format!("/signin/oidc?p={}", oidc - 1))
                }
                Provider::Github(_) => (p.label(), "/signin/github?p=0".to_string()),
            })
            .collect()
    }

    /// The label of provider `index`.
    pub(crate) fn label_of(&self, index: usize) -> Option<&str> {
        self.providers.get(index).map(Provider::label)
    }

    /// The index of the `n`th provider of `kind` (`oidc` or `github`).
    pub(crate) fn index_of(&self, kind: &str, n: usize) -> Option<usize> {
        self.providers
            .iter()
            .enumerate()
            .filter(|(_, p)| p.kind() == kind)
            .nth(n)
            .map(|(i, _)| i)
    }

    fn redirect_uri(&self, kind: &str) -> String {
        format!("{}/signin/{kind}/callback", self.config.public_url)
    }

    /// Starts a sign-in with provider `index`, coming back to `next`: the provider's URL and
    /// the login cookie to set.
    fn begin(&self, index: usize, next: &str) -> Result<(String, String), SigninError> {
        let provider = self
            .providers
            .get(index)
            .ok_or_else(|| SigninError::Config(format!("no sign-in provider number {index}")))?;
        let (state, nonce, verifier) = (random()?, random()?, random()?);
        let redirect = self.redirect_uri(provider.kind());
        let challenge = pkce_challenge(&verifier);
        let url = match provider {
            Provider::Oidc(p) => p.authorize_url(&redirect, &state, &nonce, &challenge),
            Provider::Github(p) => p.authorize_url(&redirect, &state, &challenge),
        };
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.retain(|_, p| p.started.elapsed() < LOGIN_TTL);
        if pending.len() >= MAX_PENDING
            && let Some(oldest) = pending
                .iter()
                .min_by_key(|(_, p)| p.started)
                .map(|(k, _)| k.clone())
        {
            pending.remove(&oldest);
        }
        pending.insert(
            state.clone(),
            Pending {
                provider: index,
                verifier,
                nonce,
                next: next.to_string(),
                started: Instant::now(),
            },
        );
        let cookie = self.cookie(self.login_cookie_name(), &state, LOGIN_TTL.as_secs());
        Ok((url, cookie))
    }

    /// Takes the pending sign-in `state`, which the browser's login cookie must name too (so a
    /// callback link planted by someone else does not sign this browser in).
    /// The callback must be the provider's own (`kind`).
    fn take_pending(&self, state: &str, cookies: Option<&str>, kind: &str) -> Option<Pending> {
        let bound = cookie_value(cookies, self.login_cookie_name())?;
        if !ct_eq(&bound, state) {
            return None;
        }
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let p = pending.remove(state)?;
        let right_kind = self
            .providers
            .get(p.provider)
            .is_some_and(|v| v.kind() == kind);
        (p.started.elapsed() < LOGIN_TTL && right_kind).then_some(p)
    }

    /// Finishes a sign-in: the identity, made into a stored session. Returns the session
    /// cookie, the person and where to go next.
    fn complete(
        &self,
        store: &Store,
        p: &Pending,
        code: &str,
    ) -> Result<(String, Person), SigninError> {
        let provider = self
            .providers
            .get(p.provider)
            .ok_or_else(|| SigninError::Config("provider gone".into()))?;
        let now = now_secs();
        let redirect = self.redirect_uri(provider.kind());
        let id = match provider {
            Provider::Oidc(o) => o.finish(code, &p.verifier, &redirect, &p.nonce, now)?,
            Provider::Github(g) => g.finish(code, &p.verifier, &redirect)?,
        };
        let session_id = random()?;
        let ttl = self.config.session_ttl.as_secs();
        let record = SigninSession {
            id_hash: sha256_hex(session_id.as_bytes()),
            email: id.email.clone(),
            hosted_domain: id.hosted_domain.clone(),
            provider: provider.label().to_string(),
            expires: now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)),
        };
        store.update(|state| {
            state.signin_sessions.retain(|s| s.expires > now);
            state.signin_sessions.push(record.clone());
        })?;
        let person = self.person(&record, &session_id);
        Ok((self.cookie(self.cookie_name(), &session_id, ttl), person))
    }

    fn person(&self, s: &SigninSession, session_id: &str) -> Person {
        let google = self
            .providers
            .iter()
            .any(|p| matches!(p, Provider::Oidc(o) if o.label == s.provider && o.is_google()));
        Person {
            email: s.email.clone(),
            provider: s.provider.clone(),
            csrf: csrf_of(session_id),
            allowed: self
                .config
                .rules
                .allows(&s.email, s.hosted_domain.as_deref(), google),
            admin: self.config.rules.admins.contains(&s.email),
        }
    }

    /// Who holds the session in `cookies`, if anyone (an expired or unknown one is nobody).
    ///
    /// # Errors
    /// The state file.
    pub(crate) fn viewer(
        &self,
        store: &Store,
        cookies: Option<&str>,
    ) -> Result<Option<Person>, StoreError> {
        let Some(id) = cookie_value(cookies, self.cookie_name()) else {
            return Ok(None);
        };
        let hash = sha256_hex(id.as_bytes());
        let state = store.load()?;
        let now = now_secs();
        Ok(state
            .signin_sessions
            .iter()
            .find(|s| ct_eq(&s.id_hash, &hash) && s.expires > now)
            .map(|s| self.person(s, &id)))
    }

    /// Ends the session in `cookies`; the cookie that clears it in the browser.
    fn sign_out(&self, store: &Store, cookies: Option<&str>) -> Result<String, StoreError> {
        if let Some(id) = cookie_value(cookies, self.cookie_name()) {
            let hash = sha256_hex(id.as_bytes());
            store.update(|state| state.signin_sessions.retain(|s| s.id_hash != hash))?;
        }
        Ok(self.cookie(self.cookie_name(), "", 0))
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub(crate) fn cookie_value(header: Option<&str>, name: &str) -> Option<String> {
    header?.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name && !v.is_empty()).then(|| v.trim_matches('"').to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_challenge_matches_rfc_7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn allow_rules_match_emails_domains_and_googles_hd_only_for_google() {
        let rules = Rules {
            emails: vec!["ada@else.org".into()],
            domains: vec!["example.org".into()],
            admins: vec!["root@other.net".into()],
        };
        assert!(rules.allows("ada@else.org", None, false));
        assert!(rules.allows("bob@example.org", None, false));
        assert!(rules.allows("root@other.net", None, false));
        assert!(!rules.allows("eve@evil.example", None, false));
        assert!(!rules.allows("eve@sub.example.org", None, false));
        // Google: a consumer account with an example.org address is not the Workspace domain.
        assert!(!rules.allows("bob@example.org", None, true));
        assert!(rules.allows("bob@example.org", Some("example.org"), true));
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let h = Some("a=1; llmbox-login=xyz; llmbox=s1");
        assert_eq!(cookie_value(h, "llmbox").as_deref(), Some("s1"));
        assert_eq!(cookie_value(h, "llmbox-login").as_deref(), Some("xyz"));
        assert_eq!(cookie_value(h, "b"), None);
        assert_eq!(cookie_value(None, "a"), None);
    }

    #[test]
    fn url_encode_leaves_only_unreserved_characters() {
        assert_eq!(
            url_encode("http://h:1/a b?x=&"),
            "http%3A%2F%2Fh%3A1%2Fa%20b%3Fx%3D%26"
        );
    }
}
