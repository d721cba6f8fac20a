//! Clients: Dynamic Client Registration (RFC 7591) at `/oauth/register`, and finding the
//! client an authorize or token request names — a registered one, or a Client ID Metadata
//! Document ([`super::cimd`]) when the `client_id` is an https URL.
//!
//! Every client is public (PKCE, `token_endpoint_auth_method` `none`): a chatbot has nowhere
//! safe to keep a secret, and the hub hands none out. Registration is open to anyone, so it is
//! bounded: [`REGISTRATIONS_PER_MINUTE`] hub-wide, [`MAX_CLIENTS`] kept, and a client is
//! dropped when unused — [`UNUSED_CLIENT_TTL`] after registering if it never got a grant, or the
//! refresh-token lifetime after its last use.
//!
//! Redirect URIs: https; http only to a loopback host (RFC 8252 §7.3, native apps such as
//! Claude Desktop); a private-use scheme with a dot (RFC 8252 §7.1, `com.example.app:/cb`). No
//! fragment, at most [`MAX_REDIRECT_URIS`], each compared exactly at authorize time.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::store::{OAuthClientRecord, Store};

use super::{OAuth, OAuthError, OAuthReply, OAuthRequest, now, secret, secs};

/// Registrations accepted per minute, hub-wide.
pub(crate) const REGISTRATIONS_PER_MINUTE: usize = 20;
/// Registered clients kept.
pub(crate) const MAX_CLIENTS: usize = 1000;
/// How long a client that never got a grant stays registered.
pub(crate) const UNUSED_CLIENT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Redirect URIs per client.
pub(crate) const MAX_REDIRECT_URIS: usize = 8;
/// Longest redirect URI.
pub(crate) const MAX_URI_LEN: usize = 512;
/// Longest client name shown on the consent page.
pub(crate) const MAX_CLIENT_NAME: usize = 100;

/// The registrations of the last minute.
#[derive(Debug, Default)]
pub(crate) struct Window(VecDeque<Instant>);

impl Window {
    /// Counts one more registration; false when the minute's budget is spent.
    pub(crate) fn admit(&mut self, now: Instant) -> bool {
        while self
            .0
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            self.0.pop_front();
        }
        if self.0.len() >= REGISTRATIONS_PER_MINUTE {
            return false;
        }
        self.0.push_back(now);
        true
    }
}

/// A client as an authorize or token request sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Client {
    /// Its `client_id`.
    pub(crate) client_id: String,
    /// The name shown on the consent page.
    pub(crate) name: String,
    /// Its redirect URIs.
    pub(crate) redirect_uris: Vec<String>,
    /// Known from a metadata document (its `client_id` is that document's URL).
    pub(crate) from_document: bool,
}

/// Why `uri` may not be a redirect URI; `Ok` when it may.
///
/// # Errors
/// A sentence naming the rule it breaks.
pub(crate) fn check_redirect_uri(uri: &str) -> Result<(), String> {
    if uri.len() > MAX_URI_LEN {
        return Err(format!("redirect URIs are at most {MAX_URI_LEN} bytes"));
    }
    if uri.contains('#') || uri.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(format!(
            "{uri:?}: a redirect URI has no fragment, spaces or non-ASCII characters"
        ));
    }
    let Some((scheme, rest)) = uri.split_once(':') else {
        return Err(format!("{uri:?} is not an absolute URI"));
    };
    let scheme = scheme.to_ascii_lowercase();
    let authority = || {
        rest.strip_prefix("//")
            .map(|r| r.split(['/', '?']).next().unwrap_or(""))
            .unwrap_or("")
    };
    match scheme.as_str() {
        "https" if !host_of(authority()).is_empty() => Ok(()),
        "http" if is_loopback_name(&host_of(authority())) => Ok(()),
        "http" => Err(format!(
            "{uri:?}: plain http is allowed only to a loopback host (localhost, 127.0.0.1, [::1])"
        )),
        s if s.contains('.')
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".+-".contains(&b)) =>
        {
            Ok(())
        }
        _ => Err(format!(
            "{uri:?}: use https, http to a loopback host, or a private-use scheme like com.example.app"
        )),
    }
}

/// The host of an authority, lowercased (`user@` and the port stripped, IPv6 unbracketed).
pub(crate) fn host_of(authority: &str) -> String {
    let a = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match a.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => a.split(':').next().unwrap_or(""),
    };
    host.to_ascii_lowercase()
}

fn is_loopback_name(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Client metadata as a registration or a metadata document states it, checked.
///
/// # Errors
/// [`OAuthError::invalid_redirect_uri`] or [`OAuthError::invalid_client_metadata`].
pub(crate) fn parse_metadata(doc: &Value) -> Result<(String, Vec<String>), OAuthError> {
    let Some(obj) = doc.as_object() else {
        return Err(OAuthError::invalid_client_metadata(
            "the client metadata must be a JSON object",
        ));
    };
    let uris: Vec<String> = match obj.get("redirect_uris") {
        Some(Value::Array(a)) if !a.is_empty() && a.len() <= MAX_REDIRECT_URIS => a
            .iter()
            .map(|u| u.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                OAuthError::invalid_redirect_uri("redirect_uris must be a list of strings")
            })?,
        _ => {
            return Err(OAuthError::invalid_redirect_uri(format!(
                "redirect_uris must list 1 to {MAX_REDIRECT_URIS} URIs"
            )));
        }
    };
    for u in &uris {
        check_redirect_uri(u).map_err(OAuthError::invalid_redirect_uri)?;
    }
    let list = |key: &str| -> Result<Option<Vec<String>>, OAuthError> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .map(Some)
                .ok_or_else(|| {
                    OAuthError::invalid_client_metadata(format!("{key} must be a list of strings"))
                }),
            Some(_) => Err(OAuthError::invalid_client_metadata(format!(
                "{key} must be a list of strings"
            ))),
        }
    };
    if let Some(g) = list("grant_types")?
        && (!g.iter().any(|x| x == "authorization_code")
            || g.iter()
                .any(|x| x != "authorization_code" && x != "refresh_token"))
    {
        return Err(OAuthError::invalid_client_metadata(
            "grant_types may hold only authorization_code and refresh_token",
        ));
    }
    if let Some(r) = list("response_types")?
        && r.iter().any(|x| x != "code")
    {
        return Err(OAuthError::invalid_client_metadata(
            "response_types may hold only code",
        ));
    }
    let name = match obj.get("client_name") {
        None | Some(Value::Null) => "an unnamed client".to_string(),
        Some(Value::String(n)) => {
            let n: String = n.chars().filter(|c| !c.is_control()).collect();
            let n = n.trim();
            if n.is_empty() || n.chars().count() > MAX_CLIENT_NAME {
                return Err(OAuthError::invalid_client_metadata(format!(
                    "client_name must be 1 to {MAX_CLIENT_NAME} characters"
                )));
            }
            n.to_string()
        }
        Some(_) => {
            return Err(OAuthError::invalid_client_metadata(
                "client_name must be a string",
            ));
        }
    };
    Ok((name, uris))
}

impl OAuth {
    /// `POST /oauth/register`.
    pub(crate) fn register(
        &self,
        store: &Store,
        req: &OAuthRequest<'_>,
    ) -> Result<OAuthReply, OAuthError> {
        if req.content_type != "application/json" {
            return Err(OAuthError::invalid_client_metadata(
                "send the client metadata as application/json",
            ));
        }
        let doc: Value = serde_json::from_slice(req.body).map_err(|e| {
            OAuthError::invalid_client_metadata(format!("the body is not JSON: {e}"))
        })?;
        let (name, redirect_uris) = parse_metadata(&doc)?;
        let admitted = self
            .registrations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(Instant::now());
        if !admitted {
            return Err(OAuthError::busy(format!(
                "more than {REGISTRATIONS_PER_MINUTE} registrations in the last minute; try again shortly"
            )));
        }
        let client_id = format!("llmbox-client-{}", &secret("")?[..32]);
        let now = now();
        let unused_ttl = secs(UNUSED_CLIENT_TTL);
        let used_ttl = secs(self.config.refresh_ttl);
        let record = OAuthClientRecord {
            client_id: client_id.clone(),
            client_name: name.clone(),
            redirect_uris: redirect_uris.clone(),
            created: now,
            last_used: None,
        };
        let added = store.update(|state| {
            let granted: Vec<String> = state
                .oauth_grants
                .iter()
                .map(|g| g.client_id.clone())
                .collect();
            state.oauth_clients.retain(|c| {
                granted.contains(&c.client_id)
                    || match c.last_used {
                        None => now.saturating_sub(c.created) < unused_ttl,
                        Some(t) => now.saturating_sub(t) < used_ttl,
                    }
            });
            if state.oauth_clients.len() >= MAX_CLIENTS {
                return false;
            }
            state.oauth_clients.push(record);
            true
        })?;
        if !added {
            return Err(OAuthError::busy(format!(
                "this hub already holds {MAX_CLIENTS} registered clients; unused ones expire within a day"
            )));
        }
        log::info!("oauth: registered client {client_id} ({name:?})");
        Ok(OAuthReply::Json(
            201,
            json!({
                "client_id": client_id,
                "client_id_issued_at": now,
                "client_name": name,
                "redirect_uris": redirect_uris,
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "none",
            }),
        ))
    }

    /// The client `client_id` names: registered here, or described by the metadata document
    /// at that URL.
    ///
    /// # Errors
    /// [`OAuthError::invalid_client`] for an unknown client or an unusable document.
    pub(crate) fn client(&self, store: &Store, client_id: &str) -> Result<Client, OAuthError> {
        if super::cimd::is_document_url(client_id, self.config.cimd_allow_loopback_http) {
            let (name, redirect_uris) = self.documents.client(client_id)?;
            return Ok(Client {
                client_id: client_id.to_string(),
                name,
                redirect_uris,
                from_document: true,
            });
        }
        let state = store.load()?;
        state
            .oauth_clients
            .iter()
            .find(|c| c.client_id == client_id)
            .map(|c| Client {
                client_id: c.client_id.clone(),
                name: c.client_name.clone(),
                redirect_uris: c.redirect_uris.clone(),
                from_document: false,
            })
            .ok_or_else(|| {
                OAuthError::invalid_client(
                    "unknown client_id: register at /oauth/register first (unused registrations expire)",
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_are_https_loopback_http_or_private_schemes() {
        for ok in [
            "https://claude.ai/api/mcp/auth_callback",
            "https://chatgpt.com/connector_platform_oauth_redirect",
            "http://localhost:33418/callback",
            "http://127.0.0.1:9/cb?x=1",
            "http://[::1]:8080/",
            "com.example.app:/oauth2redirect",
        ] {
            assert!(check_redirect_uri(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://example.com/cb",
            "http://localhost.evil.example/cb",
            "https://x.example/cb#frag",
            "javascript:alert(1)",
            "data:text/html,x",
            "https:///nohost",
            "/relative",
            "https://a.example/ cb",
        ] {
            assert!(check_redirect_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn metadata_needs_redirect_uris_and_only_the_code_flow() {
        let ok = json!({"redirect_uris": ["https://a.example/cb"], "client_name": "A\u{7}pp",
            "grant_types": ["authorization_code", "refresh_token"], "token_endpoint_auth_method": "client_secret_post"});
        assert_eq!(
            parse_metadata(&ok).expect("ok"),
            ("App".to_string(), vec!["https://a.example/cb".to_string()])
        );
        for (bad, code) in [
            (json!({}), "invalid_redirect_uri"),
            (json!({"redirect_uris": []}), "invalid_redirect_uri"),
            (
                json!({"redirect_uris": ["http://a.example/cb"]}),
                "invalid_redirect_uri",
            ),
            (json!({"redirect_uris": [1]}), "invalid_redirect_uri"),
            (
                json!({"redirect_uris": ["https://a.example/cb"], "grant_types": ["client_credentials"]}),
                "invalid_client_metadata",
            ),
            (
                json!({"redirect_uris": ["https://a.example/cb"], "response_types": ["token"]}),
                "invalid_client_metadata",
            ),
            (
                json!({"redirect_uris": ["https://a.example/cb"], "client_name": "x".repeat(101)}),
                "invalid_client_metadata",
            ),
            (json!([1]), "invalid_client_metadata"),
        ] {
            assert_eq!(parse_metadata(&bad).expect_err("bad").code, code, "{bad}");
        }
    }

    #[test]
    fn the_registration_window_admits_a_bounded_number_per_minute() {
        let mut w = Window::default();
        let t = Instant::now();
        for _ in 0..REGISTRATIONS_PER_MINUTE {
            assert!(w.admit(t));
        }
        assert!(!w.admit(t));
        assert!(w.admit(t + Duration::from_secs(61)));
    }
}
