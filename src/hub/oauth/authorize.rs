//! `/oauth/authorize` and the consent page, and the authorization codes they mint.
//!
//! `GET /oauth/authorize` checks the request (a known client, a `redirect_uri` it registered —
//! compared exactly —, `response_type=code`, `state`, PKCE S256, a `resource` naming this hub's
//! MCP URL) and parks it in memory under a random id, then sends the browser to
//! `/oauth/consent/<id>`. Until the client and the redirect URI are known good, errors are a
//! page (never a redirect to an unchecked URI); after that, RFC 6749 §4.1.2.1 redirects with
//! `error`, `state` and `iss`.
//!
//! `/oauth/consent/<id>` asks the person to sign in (the sign-in providers; they come back to
//! the same page), then shows who they are signed in as, the client's name, and the host the
//! browser will go back to. Allow and Deny are POSTs carrying the session's CSRF token. Allow
//! mints a code: 32 random bytes, known only by its SHA-256 in memory, valid [`CODE_TTL`], bound
//! to the client, the redirect URI, the PKCE challenge and the consent.
//!
//! Both maps are bounded ([`MAX_REQUESTS`], [`MAX_CODES`]; past a bound the oldest entry goes).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::grants::Consent;
use super::registration::{Client, host_of};
use super::{Form, OAuth, OAuthError, OAuthReply, OAuthRequest, SCOPE, secret};
use crate::hub::audit::AuditLog;
use crate::hub::page::{document, escape};
use crate::hub::signin::web::WebReply;
use crate::hub::signin::{Person, Signin, url_encode};
use crate::store::Store;
use crate::util::secret::{ct_eq, sha256_hex};

/// How long a parked authorization request waits for sign-in and consent.
pub(crate) const REQUEST_TTL: Duration = Duration::from_secs(10 * 60);
/// Parked authorization requests kept at once.
pub(crate) const MAX_REQUESTS: usize = 10_000;
/// How long a code may wait for `/oauth/token`.
pub(crate) const CODE_TTL: Duration = Duration::from_secs(60);
/// Codes kept at once (redeemed ones stay until they expire, to notice a replay).
pub(crate) const MAX_CODES: usize = 10_000;

/// An authorization request waiting for the person.
#[derive(Debug, Clone)]
pub(crate) struct AuthRequest {
    client: Client,
    redirect_uri: String,
    state: String,
    challenge: String,
    resource: String,
    started: Instant,
}

/// Parked requests by id.
#[derive(Debug, Default)]
pub(crate) struct PendingRequests(HashMap<String, AuthRequest>);

impl PendingRequests {
    fn insert(&mut self, id: String, req: AuthRequest) {
        self.0.retain(|_, r| r.started.elapsed() < REQUEST_TTL);
        if self.0.len() >= MAX_REQUESTS
            && let Some(oldest) = self
                .0
                .iter()
                .min_by_key(|(_, r)| r.started)
                .map(|(k, _)| k.clone())
        {
            self.0.remove(&oldest);
        }
        self.0.insert(id, req);
    }

    fn get(&self, id: &str) -> Option<AuthRequest> {
        self.0
            .get(id)
            .filter(|r| r.started.elapsed() < REQUEST_TTL)
            .cloned()
    }

    fn take(&mut self, id: &str) -> Option<AuthRequest> {
        self.0
            .remove(id)
            .filter(|r| r.started.elapsed() < REQUEST_TTL)
    }
}

/// A minted code.
#[derive(Debug, Clone)]
struct CodeGrant {
    consent: Consent,
    redirect_uri: String,
    challenge: String,
    issued: Instant,
    /// Presented once already (whatever came of it).
    redeemed: bool,
    /// The grant it became, revoked if the code is presented again.
    grant: Option<String>,
}

/// Codes by SHA-256.
#[derive(Debug, Default)]
pub(crate) struct Codes(HashMap<String, CodeGrant>);

impl Codes {
    fn prune(&mut self) {
        self.0.retain(|_, c| c.issued.elapsed() < CODE_TTL);
        while self.0.len() >= MAX_CODES {
            let Some(oldest) = self
                .0
                .iter()
                .min_by_key(|(_, c)| c.issued)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.0.remove(&oldest);
        }
    }
}

/// What presenting a code came to.
#[derive(Debug)]
pub(crate) enum Redeemed {
    /// Good: the consent to issue tokens for; report the grant with [`OAuth::code_became`].
    Fresh {
        /// The consent.
        consent: Consent,
        /// The code's hash.
        hash: String,
    },
    /// Presented before: refused, and the grant it became (if any) must be revoked.
    Replayed(Option<String>),
}

/// True for an RFC 7636 code verifier or challenge: 43 to 128 unreserved characters.
fn pkce_shaped(s: &str) -> bool {
    (43..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// `uri` with `params` added to its query.
fn with_query(uri: &str, params: &[(&str, &str)]) -> String {
    let mut out = uri.to_string();
    let mut sep = if uri.contains('?') { '&' } else { '?' };
    for (k, v) in params {
        out.push(sep);
        out.push_str(k);
        out.push('=');
        out.push_str(&url_encode(v));
        sep = '&';
    }
    out
}

/// A page for an authorization request that cannot be sent back to its client.
fn refusal(status: u16, what: &str) -> OAuthReply {
    OAuthReply::Web(WebReply::page(
        status,
        document(
            "Cannot connect · llmbox",
            &format!(
                "<h1>This connection request cannot be used</h1><p id=\"error\" role=\"alert\">{}</p>\
<p id=\"todo\">Start again from your chatbot's connector settings. If it keeps failing, tell whoever runs this hub.</p>",
                escape(what)
            ),
        ),
    ))
}

impl OAuth {
    /// `GET /oauth/authorize`.
    pub(crate) fn authorize(
        &self,
        store: &Store,
        _signin: &Signin,
        req: &OAuthRequest<'_>,
    ) -> OAuthReply {
        let q = match Form::parse(req.query) {
            Ok(q) => q,
            Err(e) => return refusal(400, &e.description),
        };
        let Some(client_id) = q.get("client_id") else {
            return refusal(400, "The request names no client (client_id is missing).");
        };
        let client = match self.client(store, client_id) {
            Ok(c) => c,
            Err(e) => return refusal(400, &e.description),
        };
        let redirect_uri = match q.get("redirect_uri") {
            Some(u) if client.redirect_uris.iter().any(|r| r == u) => u.to_string(),
            Some(_) => {
                return refusal(
                    400,
                    "The redirect_uri is not one this client registered (they are compared exactly).",
                );
            }
            None if client.redirect_uris.len() == 1 => client.redirect_uris[0].clone(),
            None => return refusal(400, "The request has no redirect_uri."),
        };
        let state = q.get("state").unwrap_or("");
        let back = |e: OAuthError| {
            let mut params = vec![("error", e.code), ("error_description", &e.description)];
            if !state.is_empty() {
                params.push(("state", state));
            }
            params.push(("iss", self.issuer()));
            OAuthReply::Web(WebReply::redirect(
                with_query(&redirect_uri, &params),
                Vec::new(),
            ))
        };
        if q.get("response_type") != Some("code") {
            return back(OAuthError {
                status: 400,
                code: "unsupported_response_type",
                description: "response_type must be code".into(),
            });
        }
        if state.is_empty() {
            return back(OAuthError::invalid_request(
                "the state parameter is required",
            ));
        }
        if state.len() > 512 {
            return back(OAuthError::invalid_request(
                "state is at most 512 characters",
            ));
        }
        let challenge = match (q.get("code_challenge"), q.get("code_challenge_method")) {
            (Some(c), Some("S256")) if pkce_shaped(c) => c.to_string(),
            (Some(_), Some("S256")) => {
                return back(OAuthError::invalid_request(
                    "code_challenge must be 43 to 128 base64url characters",
                ));
            }
            (None, _) => {
                return back(OAuthError::invalid_request(
                    "PKCE is required: send code_challenge with code_challenge_method=S256",
                ));
            }
            (Some(_), _) => {
                return back(OAuthError::invalid_request(
                    "code_challenge_method must be S256",
                ));
            }
        };
        let resource = match q.get("resource") {
            None => {
                return back(OAuthError::invalid_target(format!(
                    "the resource parameter (RFC 8707) is required: {}",
                    self.mcp_resource()
                )));
            }
            Some(r) => match self.names_this_hub(r) {
                Some(canonical) => canonical,
                None => {
                    return back(OAuthError::invalid_target(format!(
                        "resource must be this hub's MCP URL {}",
                        self.mcp_resource()
                    )));
                }
            },
        };
        let id = match secret("") {
            Ok(id) => id,
            Err(e) => return refusal(500, &e.description),
        };
        let parked = AuthRequest {
            client,
            redirect_uri,
            state: state.to_string(),
            challenge,
            resource,
            started: Instant::now(),
        };
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), parked);
        OAuthReply::Web(WebReply::redirect(
            format!("/oauth/consent/{id}"),
            Vec::new(),
        ))
    }

    /// `GET|POST /oauth/consent/<id>`.
    pub(crate) fn consent(
        &self,
        store: &Store,
        signin: &Signin,
        audit: Option<&AuditLog>,
        req: &OAuthRequest<'_>,
        id: &str,
    ) -> OAuthReply {
        if !crate::util::secret::is_hex_64(id) || !(req.get() || req.post()) {
            return refusal(404, "There is no such connection request.");
        }
        let here = format!("/oauth/consent/{id}");
        let Some(parked) = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
        else {
            return refusal(
                400,
                "This connection request is unknown, was already answered, or took longer than ten minutes.",
            );
        };
        let person = match signin.viewer(store, req.cookies) {
            Ok(p) => p,
            Err(e) => return refusal(500, &OAuthError::from(e).description),
        };
        let Some(person) = person else {
            let html = document(
                "Sign in · llmbox",
                &format!(
                    "<h1>Sign in to connect {}</h1><p>Sign in first; you come back here to allow or deny the connection.</p>{}",
                    escape(&parked.client.name),
                    signin.buttons(&here)
                ),
            );
            return OAuthReply::Web(WebReply::page(if req.post() { 401 } else { 200 }, html));
        };
        if !person.allowed {
            note(
                audit,
                "oauth_consent_refused",
                &person,
                Some("outside the allow rules"),
                req,
            );
            return OAuthReply::Web(WebReply::page(
                403,
                document(
                    "Not allowed · llmbox",
                    &format!(
                        "<h1>Not allowed</h1><p id=\"error\" role=\"alert\">You are signed in as {} ({}), and this hub does not let that account use it.</p>{}{}",
                        escape(&person.email),
                        escape(&person.provider),
                        signin.who(&person, &here),
                        signin.buttons(&here)
                    ),
                ),
            ));
        }
        if req.get() {
            return OAuthReply::Web(WebReply::page(
                200,
                consent_page(signin, &person, &parked, &here),
            ));
        }
        let form = match req.form() {
            Ok(f) => f,
            Err(e) => return refusal(400, &e.description),
        };
        if !ct_eq(form.get("csrf").unwrap_or(""), &person.csrf) {
            note(
                audit,
                "oauth_consent_refused",
                &person,
                Some("bad CSRF token"),
                req,
            );
            return refusal(
                403,
                "This form did not come from your own copy of the page (its CSRF token is missing or old). Reload the page.",
            );
        }
        let Some(parked) = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(id)
        else {
            return refusal(400, "This connection request was already answered.");
        };
        let iss = self.issuer();
        if form.get("decision") != Some("allow") {
            note(audit, "oauth_consent_denied", &person, None, req);
            return OAuthReply::Web(WebReply::redirect(
                with_query(
                    &parked.redirect_uri,
                    &[
                        ("error", "access_denied"),
                        ("error_description", "the person denied the connection"),
                        ("state", &parked.state),
                        ("iss", iss),
                    ],
                ),
                Vec::new(),
            ));
        }
        let code = match secret("") {
            Ok(c) => c,
            Err(e) => return refusal(500, &e.description),
        };
        let grant = CodeGrant {
            consent: Consent {
                client_id: parked.client.client_id.clone(),
                client_name: parked.client.name.clone(),
                email: person.email.clone(),
                provider: person.provider.clone(),
                resource: parked.resource.clone(),
                scope: SCOPE.into(),
            },
            redirect_uri: parked.redirect_uri.clone(),
            challenge: parked.challenge.clone(),
            issued: Instant::now(),
            redeemed: false,
            grant: None,
        };
        {
            let mut codes = self.codes.lock().unwrap_or_else(|e| e.into_inner());
            codes.prune();
            codes.0.insert(sha256_hex(code.as_bytes()), grant);
        }
        note(audit, "oauth_consent", &person, None, req);
        log::info!(
            "oauth: {} ({}) allowed client {}",
            person.email,
            person.provider,
            parked.client.client_id
        );
        OAuthReply::Web(WebReply::redirect(
            with_query(
                &parked.redirect_uri,
                &[("code", &code), ("state", &parked.state), ("iss", iss)],
            ),
            Vec::new(),
        ))
    }

    /// Presents `code` for `client_id` with `redirect_uri` and PKCE `verifier`. Any attempt
    /// with a known code uses it up (so a verifier cannot be guessed at leisure).
    ///
    /// # Errors
    /// [`OAuthError::invalid_grant`] for an unknown, expired or mismatched code.
    pub(crate) fn redeem(
        &self,
        code: &str,
        client_id: &str,
        redirect_uri: Option<&str>,
        verifier: &str,
    ) -> Result<Redeemed, OAuthError> {
        let hash = sha256_hex(code.as_bytes());
        let mut codes = self.codes.lock().unwrap_or_else(|e| e.into_inner());
        codes.prune();
        let Some(c) = codes.0.get_mut(&hash) else {
            return Err(OAuthError::invalid_grant(
                "the authorization code is unknown or expired (codes live 60 seconds)",
            ));
        };
        if c.redeemed {
            return Ok(Redeemed::Replayed(c.grant.clone()));
        }
        c.redeemed = true;
        if c.consent.client_id != client_id {
            return Err(OAuthError::invalid_grant(
                "the authorization code was issued to another client",
            ));
        }
        if redirect_uri != Some(c.redirect_uri.as_str()) {
            return Err(OAuthError::invalid_grant(
                "redirect_uri must be the one of the authorization request",
            ));
        }
        if !pkce_shaped(verifier)
            || !ct_eq(&crate::hub::signin::pkce_challenge(verifier), &c.challenge)
        {
            return Err(OAuthError::invalid_grant(
                "the code_verifier does not match the code_challenge",
            ));
        }
        Ok(Redeemed::Fresh {
            consent: c.consent.clone(),
            hash,
        })
    }

    /// Records that the code with `hash` became grant `grant` (revoked if it is replayed).
    pub(crate) fn code_became(&self, hash: &str, grant: &str) {
        let mut codes = self.codes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = codes.0.get_mut(hash) {
            c.grant = Some(grant.to_string());
        }
    }
}

fn note(
    audit: Option<&AuditLog>,
    event: &str,
    p: &Person,
    why: Option<&str>,
    req: &OAuthRequest<'_>,
) {
    if let Some(a) = audit {
        a.signin(event, Some(&p.email), Some(&p.provider), why, req.remote);
    }
}

fn consent_page(signin: &Signin, person: &Person, parked: &AuthRequest, here: &str) -> String {
    let authority = parked
        .redirect_uri
        .split_once("://")
        .map_or("", |(_, rest)| rest.split(['/', '?']).next().unwrap_or(""));
    let host = match host_of(authority) {
        h if h.is_empty() => parked
            .redirect_uri
            .split(':')
            .next()
            .unwrap_or("")
            .to_string(),
        h => h,
    };
    let origin = if parked.client.from_document {
        format!(
            "<p class=\"muted\" id=\"client-id\">It identifies itself by {}.</p>",
            escape(&parked.client.client_id)
        )
    } else {
        String::new()
    };
    let csrf = escape(&person.csrf);
    document(
        "Connect · llmbox",
        &format!(
            "{who}<h1>Connect <span id=\"client-name\">{name}</span>?</h1>\
<p><b>{name}</b> asks to use this llmbox hub as you: to create boxes that belong to you, list, use and remove them.</p>{origin}\
<p>When you answer, your browser goes back to <b id=\"redirect-host\">{host}</b>.</p>\
<form method=\"post\" action=\"{here}\" id=\"consent\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<button type=\"submit\" name=\"decision\" value=\"allow\" id=\"allow\">Allow</button> \
<button type=\"submit\" name=\"decision\" value=\"deny\" id=\"deny\">Deny</button></form>",
            who = signin.who(person, here),
            name = escape(&parked.client.name),
            host = escape(&host),
            here = escape(here),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_appended_encoded() {
        assert_eq!(
            with_query("https://a.example/cb", &[("code", "x y"), ("state", "s&t")]),
            "https://a.example/cb?code=x%20y&state=s%26t"
        );
        assert_eq!(
            with_query("http://localhost:1/cb?k=v", &[("code", "c")]),
            "http://localhost:1/cb?k=v&code=c"
        );
    }

    #[test]
    fn pkce_values_are_43_to_128_unreserved_characters() {
        assert!(pkce_shaped(&"a".repeat(43)));
        assert!(pkce_shaped(&"-._~".repeat(32)));
        assert!(!pkce_shaped(&"a".repeat(42)));
        assert!(!pkce_shaped(&"a".repeat(129)));
        assert!(!pkce_shaped(&format!("{}+", "a".repeat(43))));
    }
}
