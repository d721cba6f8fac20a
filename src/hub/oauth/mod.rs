//! The hub as its own OAuth 2.1 authorization server for MCP (issue 14; MCP 2025-11-25
//! "Authorization"): the MCP endpoint is a resource server, and people sign in through the
//! sign-in providers of [`super::signin`] before they consent to a chatbot acting as them.
//!
//! - [`metadata`]: Protected Resource Metadata (RFC 9728), Authorization Server Metadata
//!   (RFC 8414, also at the OpenID discovery path), the `WWW-Authenticate` of a 401.
//! - [`registration`]: Dynamic Client Registration (RFC 7591), rate-limited and bounded.
//! - [`cimd`]: Client ID Metadata Documents (an https `client_id` fetched, public addresses only).
//! - [`authorize`]: `/oauth/authorize` (PKCE S256, exact redirect URI, `state`, `resource`), the
//!   sign-in and the consent page, authorization codes (memory only, single use, 60 s).
//! - [`token`]: `/oauth/token` (code and refresh grants) and `/oauth/revoke` (RFC 7009).
//! - [`grants`]: the grants in the state file; tokens there only as SHA-256.
//!
//! Sans-IO like [`super::signin::web`]: [`OAuthRequest`] in, [`OAuthReply`] out;
//! [`super::http`] does the sockets and the body limits. No threads. The in-memory maps
//! (pending authorization requests, codes, the registration window) sit behind mutexes held
//! for a map operation only, never across a fetch or a state-file write, and each has a bound.
//!
//! Secrets (codes, tokens, verifiers) are never logged, never in an audit line, never in MCP
//! output: log lines name a grant by its public id and a client by its `client_id`. A refused
//! request gets the RFC 6749 §5.2 JSON error of [`OAuthError`] and changes nothing.

pub(crate) mod admin;
pub(crate) mod authorize;
pub(crate) mod cimd;
pub(crate) mod grants;
pub(crate) mod metadata;
pub(crate) mod registration;
pub(crate) mod token;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value, json};

use super::signin::web::WebReply;

/// Default `--oauth-access-ttl`.
pub const DEFAULT_ACCESS_TTL: Duration = Duration::from_secs(3600);
/// Default `--oauth-refresh-ttl`.
pub const DEFAULT_REFRESH_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// The one scope this hub grants.
pub(crate) const SCOPE: &str = "mcp";
/// Largest body of `/oauth/register`, `/oauth/token`, `/oauth/revoke` and the consent form.
pub(crate) const MAX_BODY: usize = 16 << 10;

/// `--mcp-oauth` settings.
#[derive(Debug, Clone)]
pub struct OAuthConfig {
    /// The hub's public URL without a trailing slash: the issuer, and the base of the MCP URL
    /// (`<public>/mcp`) tokens are bound to.
    pub public_url: String,
    /// Access token lifetime (`--oauth-access-ttl`).
    pub access_ttl: Duration,
    /// Refresh token lifetime (`--oauth-refresh-ttl`); also how long an unused client stays.
    pub refresh_ttl: Duration,
    /// Test only: a `client_id` metadata document may be fetched over plain http from loopback.
    pub cimd_allow_loopback_http: bool,
}

impl OAuthConfig {
    /// Defaults for a hub at `public_url`.
    pub fn new(public_url: &str) -> OAuthConfig {
        OAuthConfig {
            public_url: public_url.trim_end_matches('/').to_string(),
            access_ttl: DEFAULT_ACCESS_TTL,
            refresh_ttl: DEFAULT_REFRESH_TTL,
            cimd_allow_loopback_http: false,
        }
    }
}

/// A refused OAuth request: the RFC 6749 §5.2 (or RFC 7591 §3.2.2) `error` code, its HTTP
/// status and a description for people (never holding a secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    /// HTTP status.
    pub status: u16,
    /// The `error` code.
    pub code: &'static str,
    /// The `error_description`.
    pub description: String,
}

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "oauth: {}: {}", self.code, self.description)
    }
}

impl std::error::Error for OAuthError {}

impl OAuthError {
    fn new(status: u16, code: &'static str, description: impl Into<String>) -> OAuthError {
        OAuthError {
            status,
            code,
            description: description.into(),
        }
    }

    /// A missing, repeated or malformed parameter.
    pub(crate) fn invalid_request(d: impl Into<String>) -> OAuthError {
        OAuthError::new(400, "invalid_request", d)
    }

    /// An unknown client, or one not allowed here.
    pub(crate) fn invalid_client(d: impl Into<String>) -> OAuthError {
        OAuthError::new(401, "invalid_client", d)
    }

    /// A code or refresh token that is unknown, expired, used, or bound to something else.
    pub(crate) fn invalid_grant(d: impl Into<String>) -> OAuthError {
        OAuthError::new(400, "invalid_grant", d)
    }

    /// A grant type this server does not do.
    pub(crate) fn unsupported_grant_type(d: impl Into<String>) -> OAuthError {
        OAuthError::new(400, "unsupported_grant_type", d)
    }

    /// A `resource` (RFC 8707) that is not this hub's MCP endpoint.
    pub(crate) fn invalid_target(d: impl Into<String>) -> OAuthError {
        OAuthError::new(400, "invalid_target", d)
    }

    /// RFC 7591: a redirect URI this server does not accept.
    pub(crate) fn invalid_redirect_uri(d: impl Into<String>) -> OAuthError {
        OAuthError::new(400, "invalid_redirect_uri", d)
    }

    /// RFC 7591: other unusable client metadata.
    pub(crate) fn invalid_client_metadata(d: impl Into<String>) -> OAuthError {
        OAuthError::new(400, "invalid_client_metadata", d)
    }

    /// A bound is reached (registrations per minute, registered clients).
    pub(crate) fn busy(d: impl Into<String>) -> OAuthError {
        OAuthError::new(429, "temporarily_unavailable", d)
    }

    /// The hub's own trouble (the state file, the random source).
    pub(crate) fn server_error(d: impl Into<String>) -> OAuthError {
        OAuthError::new(500, "server_error", d)
    }

    /// The JSON body.
    pub(crate) fn body(&self) -> Value {
        json!({"error": self.code, "error_description": self.description})
    }
}

impl From<crate::store::StoreError> for OAuthError {
    fn from(e: crate::store::StoreError) -> Self {
        log::error!("oauth: {e}");
        OAuthError::server_error("the hub cannot read or write its state right now; try again")
    }
}

/// A request for an OAuth route, as the HTTP front read it.
#[derive(Debug, Clone, Default)]
pub(crate) struct OAuthRequest<'a> {
    /// The method, uppercase.
    pub(crate) method: &'a str,
    /// The path, without the query.
    pub(crate) path: &'a str,
    /// The query, without `?`.
    pub(crate) query: &'a str,
    /// The body of a POST (at most [`MAX_BODY`]).
    pub(crate) body: &'a [u8],
    /// The media type of the body, lowercase.
    pub(crate) content_type: &'a str,
    /// The `Cookie` header.
    pub(crate) cookies: Option<&'a str>,
    /// The peer.
    pub(crate) remote: Option<SocketAddr>,
}

impl OAuthRequest<'_> {
    fn post(&self) -> bool {
        self.method == "POST"
    }

    fn get(&self) -> bool {
        self.method == "GET" || self.method == "HEAD"
    }

    /// The form fields of a urlencoded POST body.
    fn form(&self) -> Result<Form, OAuthError> {
        if self.content_type != "application/x-www-form-urlencoded" {
            return Err(OAuthError::invalid_request(
                "send the parameters as application/x-www-form-urlencoded",
            ));
        }
        Form::parse(&String::from_utf8_lossy(self.body))
    }
}

/// Parameters of a query or form, each at most once (RFC 6749 §3.1: "parameters MUST NOT be
/// included more than once").
#[derive(Debug, Default)]
pub(crate) struct Form(Vec<(String, String)>);

impl Form {
    /// Parses `a=1&b=2`.
    ///
    /// # Errors
    /// A parameter sent twice.
    pub(crate) fn parse(text: &str) -> Result<Form, OAuthError> {
        let mut out: Vec<(String, String)> = Vec::new();
        for pair in text.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = crate::hub::http::percent_decode(k);
            if out.iter().any(|(x, _)| *x == k) {
                return Err(OAuthError::invalid_request(format!(
                    "parameter {k:?} was sent more than once"
                )));
            }
            out.push((k, crate::hub::http::percent_decode(v)));
        }
        Ok(Form(out))
    }

    /// The value of `key`, if present and not empty.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// The value of `key`.
    ///
    /// # Errors
    /// [`OAuthError::invalid_request`] naming it when absent.
    pub(crate) fn required(&self, key: &str) -> Result<&str, OAuthError> {
        self.get(key)
            .ok_or_else(|| OAuthError::invalid_request(format!("the {key} parameter is missing")))
    }
}

/// What to answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum OAuthReply {
    /// A JSON document (metadata, a token response, an error) with its status.
    Json(u16, Value),
    /// A page or a redirect.
    Web(WebReply),
}

impl From<OAuthError> for OAuthReply {
    fn from(e: OAuthError) -> Self {
        OAuthReply::Json(e.status, e.body())
    }
}

impl From<Result<OAuthReply, OAuthError>> for OAuthReply {
    fn from(r: Result<OAuthReply, OAuthError>) -> Self {
        r.unwrap_or_else(OAuthReply::from)
    }
}

/// The authorization server: its settings and the in-memory state of flows in progress.
pub struct OAuth {
    config: OAuthConfig,
    pending: Mutex<authorize::PendingRequests>,
    codes: Mutex<authorize::Codes>,
    registrations: Mutex<registration::Window>,
    documents: cimd::Fetcher,
}

impl fmt::Debug for OAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuth")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl OAuth {
    /// The authorization server for `config`.
    pub fn new(config: OAuthConfig) -> OAuth {
        let documents = cimd::Fetcher::new(config.cimd_allow_loopback_http);
        OAuth {
            config,
            pending: Mutex::new(authorize::PendingRequests::default()),
            codes: Mutex::new(authorize::Codes::default()),
            registrations: Mutex::new(registration::Window::default()),
            documents,
        }
    }

    /// True for the paths this module serves.
    pub(crate) fn serves(path: &str) -> bool {
        path.starts_with("/.well-known/") || path.starts_with("/oauth/")
    }

    /// Serves one OAuth route; `None` for a path that is not one.
    pub(crate) fn serve(
        &self,
        hub: &super::Hub,
        signin: &super::signin::Signin,
        audit: Option<&super::audit::AuditLog>,
        req: &OAuthRequest<'_>,
    ) -> Option<OAuthReply> {
        let store = hub.store();
        let wrong_method = || {
            OAuthReply::Json(
                405,
                json!({"error": "invalid_request", "error_description": "method not allowed"}),
            )
        };
        let reply = match req.path {
            "/.well-known/oauth-protected-resource"
            | "/.well-known/oauth-protected-resource/mcp" => {
                if !req.get() {
                    return Some(wrong_method());
                }
                OAuthReply::Json(200, self.protected_resource(req.path.ends_with("/mcp")))
            }
            "/.well-known/oauth-authorization-server" | "/.well-known/openid-configuration" => {
                if !req.get() {
                    return Some(wrong_method());
                }
                OAuthReply::Json(200, self.server_metadata())
            }
            "/oauth/register" if req.post() => self.register(store, req).into(),
            "/oauth/authorize" if req.get() => self.authorize(store, signin, req),
            "/oauth/token" if req.post() => self.token(store, audit, req).into(),
            "/oauth/revoke" if req.post() => self.revoke(store, audit, req).into(),
            "/oauth/register" | "/oauth/authorize" | "/oauth/token" | "/oauth/revoke" => {
                wrong_method()
            }
            p => match p.strip_prefix("/oauth/consent/") {
                Some(id) => self.consent(store, signin, audit, req, id),
                None => return None,
            },
        };
        Some(reply)
    }
}

/// Unix seconds now.
fn now() -> i64 {
    crate::util::unix_now()
}

/// Seconds of `d`, as the state file keeps them.
fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// A fresh secret: 32 random bytes as hex, behind `prefix`.
fn secret(prefix: &str) -> Result<String, OAuthError> {
    crate::util::secret::random_hex_32()
        .map(|r| format!("{prefix}{r}"))
        .map_err(|e| {
            log::error!("oauth: random source: {e}");
            OAuthError::server_error("the hub's random source failed; try again")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parameter_sent_twice_is_an_invalid_request() {
        let f = Form::parse("a=1&b=x%20y&c=").expect("form");
        assert_eq!(f.get("b"), Some("x y"));
        assert_eq!(f.get("c"), None, "an empty value counts as absent");
        assert!(f.required("c").is_err());
        let err = Form::parse("code=1&code=2").expect_err("twice");
        assert_eq!(err.code, "invalid_request");
        assert_eq!(err.status, 400);
    }

    #[test]
    fn errors_are_rfc_6749_json() {
        let e = OAuthError::invalid_grant("the code was already used");
        assert_eq!(
            e.body(),
            json!({"error": "invalid_grant", "error_description": "the code was already used"})
        );
    }
}
