//! `POST /oauth/token` (the `authorization_code` and `refresh_token` grants) and
//! `POST /oauth/revoke` (RFC 7009).
//!
//! Public clients only: a request names its `client_id` and carries no secret; the code is
//! bound to it, to the redirect URI and to the PKCE verifier ([`OAuth::redeem`]). A replayed
//! code is refused and revokes the grant it became. An optional `resource` must name this hub
//! and the consented resource (RFC 8707 §2.2). Token answers carry `Cache-Control: no-store`
//! (the HTTP front sets it on every answer).

use serde_json::json;

use super::authorize::Redeemed;
use super::grants::Issued;
use super::{OAuth, OAuthError, OAuthReply, OAuthRequest};
use crate::hub::audit::AuditLog;
use crate::store::Store;

fn answer(issued: &Issued) -> OAuthReply {
    OAuthReply::Json(
        200,
        json!({
            "access_token": issued.access,
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
            "refresh_token": issued.refresh,
            "scope": issued.scope,
        }),
    )
}

impl OAuth {
    /// `POST /oauth/token`.
    pub(crate) fn token(
        &self,
        store: &Store,
        audit: Option<&AuditLog>,
        req: &OAuthRequest<'_>,
    ) -> Result<OAuthReply, OAuthError> {
        let form = req.form()?;
        let client_id = form.required("client_id")?;
        let note = |event: &str, email: &str, provider: &str, why: Option<&str>| {
            if let Some(a) = audit {
                a.signin(event, Some(email), Some(provider), why, req.remote);
            }
        };
        match form.required("grant_type")? {
            "authorization_code" => {
                let code = form.required("code")?;
                let verifier = form.required("code_verifier")?;
                let resource = form.get("resource");
                if let Some(r) = resource
                    && self.names_this_hub(r).is_none()
                {
                    return Err(OAuthError::invalid_target(format!(
                        "resource must be this hub's MCP URL {}",
                        self.mcp_resource()
                    )));
                }
                match self.redeem(code, client_id, form.get("redirect_uri"), verifier)? {
                    Redeemed::Replayed(grant) => {
                        if let Some(id) = grant {
                            let revoked = store.update(|state| {
                                let before = state.oauth_grants.len();
                                state.oauth_grants.retain(|g| g.id != id);
                                before != state.oauth_grants.len()
                            })?;
                            if revoked {
                                log::warn!(
                                    "oauth: grant {id}: its authorization code was presented again; the grant is revoked"
                                );
                            }
                        }
                        Err(OAuthError::invalid_grant(
                            "the authorization code was already used; any tokens it gave are revoked",
                        ))
                    }
                    Redeemed::Fresh { consent, hash } => {
                        if let Some(r) = resource
                            && self.names_this_hub(r).as_deref() != Some(consent.resource.as_str())
                        {
                            return Err(OAuthError::invalid_target(
                                "resource differs from the one of the authorization request",
                            ));
                        }
                        let issued = self.issue(store, &consent)?;
                        self.code_became(&hash, &issued.grant);
                        note("oauth_token", &consent.email, &consent.provider, None);
                        log::info!(
                            "oauth: grant {} for {} ({}) to client {}",
                            issued.grant,
                            consent.email,
                            consent.provider,
                            consent.client_id
                        );
                        Ok(answer(&issued))
                    }
                }
            }
            "refresh_token" => {
                let token = form.required("refresh_token")?;
                let (issued, consent) = self
                    .refresh(
                        store,
                        audit.map(|a| (a, req.remote)),
                        token,
                        client_id,
                        form.get("resource"),
                    )
                    .inspect_err(|e| {
                        if e.code == "invalid_grant" {
                            log::info!(
                                "oauth: refresh refused for client {client_id}: {}",
                                e.description
                            );
                        }
                    })?;
                note("oauth_refresh", &consent.email, &consent.provider, None);
                Ok(answer(&issued))
            }
            other => Err(OAuthError::unsupported_grant_type(format!(
                "grant_type {other:?} is not supported: use authorization_code or refresh_token"
            ))),
        }
    }

    /// `POST /oauth/revoke`: ends the grant behind the token (access or refresh). Unknown
    /// tokens are answered 200 as RFC 7009 §2.2 says.
    pub(crate) fn revoke(
        &self,
        store: &Store,
        audit: Option<&AuditLog>,
        req: &OAuthRequest<'_>,
    ) -> Result<OAuthReply, OAuthError> {
        let form = req.form()?;
        let token = form.required("token")?;
        if let Some(hint) = form.get("token_type_hint")
            && hint != "access_token"
            && hint != "refresh_token"
        {
            return Err(OAuthError {
                status: 400,
                code: "unsupported_token_type",
                description: "token_type_hint must be access_token or refresh_token".into(),
            });
        }
        if let Some((grant, email, provider)) =
            self.revoke_token(store, token, form.get("client_id"))?
        {
            log::info!("oauth: grant {grant} of {email} ({provider}) revoked by its client");
            if let Some(a) = audit {
                a.signin(
                    "oauth_revoke",
                    Some(&email),
                    Some(&provider),
                    None,
                    req.remote,
                );
            }
        }
        Ok(OAuthReply::Json(200, json!({})))
    }
}
