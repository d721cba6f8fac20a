//! GitHub sign-in (OAuth 2, not OpenID Connect): the authorize URL (with `state` and PKCE
//! S256, which GitHub supports), the code-for-token exchange, and the person's primary,
//! verified email from `GET /user/emails` (scope `user:email`). The access token is used for
//! that one call and then dropped; it is never stored or logged.
//!
//! HTTP as in [`super::oidc`]: one ureq agent, timeouts, bounded answers.

use serde::Deserialize;

use super::jwt::Identity;
use super::oidc::{MAX_RESPONSE_BYTES, agent, endpoint_allowed};
use super::{GithubConfig, SigninError, url_encode};

/// GitHub's web side (authorize, token).
pub const GITHUB_WEB: &str = "https://github.com";
/// GitHub's API.
pub const GITHUB_API: &str = "https://api.github.com";

/// A configured GitHub OAuth app.
pub(crate) struct GithubProvider {
    config: GithubConfig,
    agent: ureq::Agent,
}

impl std::fmt::Debug for GithubProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubProvider")
            .field("client_id", &self.config.client_id)
            .finish_non_exhaustive()
    }
}

fn body_text(
    mut resp: ureq::http::Response<ureq::Body>,
    what: &str,
) -> Result<(u16, String), SigninError> {
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .with_config()
        .limit(MAX_RESPONSE_BYTES)
        .read_to_string()
        .map_err(|e| SigninError::Provider(format!("{what}: reading the answer: {e}")))?;
    Ok((status, text))
}

impl GithubProvider {
    /// # Errors
    /// [`SigninError::Config`] for endpoints that are not https (plain http only on loopback).
    pub(crate) fn new(config: GithubConfig) -> Result<GithubProvider, SigninError> {
        for base in [&config.web_base, &config.api_base] {
            if !endpoint_allowed(base) {
                return Err(SigninError::Config(format!(
                    "GitHub endpoint {base:?} is not https"
                )));
            }
        }
        Ok(GithubProvider {
            config,
            agent: agent(),
        })
    }

    /// Where to send the browser.
    pub(crate) fn authorize_url(&self, redirect_uri: &str, state: &str, challenge: &str) -> String {
        format!(
            "{}/login/oauth/authorize?client_id={}&redirect_uri={}&scope=user%3Aemail&state={state}&code_challenge={challenge}&code_challenge_method=S256&allow_signup=false",
            self.config.web_base,
            url_encode(&self.config.client_id),
            url_encode(redirect_uri)
        )
    }

    /// Trades `code` for an access token and reads the primary, verified email.
    ///
    /// # Errors
    /// [`SigninError::Provider`]: GitHub refused or could not be reached;
    /// [`SigninError::Refused`]: the account has no primary verified email.
    pub(crate) fn finish(
        &self,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
    ) -> Result<Identity, SigninError> {
        #[derive(Deserialize)]
        struct TokenAnswer {
            access_token: Option<String>,
            error: Option<String>,
            error_description: Option<String>,
        }
        #[derive(Deserialize)]
        struct Email {
            email: String,
            primary: bool,
            verified: bool,
        }
        let url = format!("{}/login/oauth/access_token", self.config.web_base);
        let what = format!("token exchange at {url}");
        let resp = self
            .agent
            .post(&url)
            .header("Accept", "application/json")
            .send_form([
                ("client_id", self.config.client_id.as_str()),
                ("client_secret", self.config.client_secret.as_str()),
                ("code", code),
                ("redirect_uri", redirect_uri),
                ("code_verifier", verifier),
            ])
            .map_err(|e| SigninError::Provider(format!("{what}: {e}")))?;
        let (status, text) = body_text(resp, &what)?;
        let answer: TokenAnswer = serde_json::from_str(&text)
            .map_err(|e| SigninError::Provider(format!("{what}: HTTP {status}: not JSON ({e})")))?;
        // GitHub reports a bad code as 200 with an `error` field.
        let token = match (answer.access_token, answer.error) {
            (Some(t), None) if status == 200 => t,
            (_, err) => {
                return Err(SigninError::Provider(format!(
                    "{what}: HTTP {status}: {}: {}",
                    err.unwrap_or_else(|| "no access_token".into()),
                    answer.error_description.unwrap_or_default()
                )));
            }
        };
        let url = format!("{}/user/emails", self.config.api_base);
        let what = format!("emails at {url}");
        let resp = self
            .agent
            .get(&url)
            .header("Authorization", &format!("Bearer {token}"))
            .header("Accept", "application/vnd.github+json")
            .call()
            .map_err(|e| SigninError::Provider(format!("{what}: {e}")))?;
        let (status, text) = body_text(resp, &what)?;
        if status != 200 {
            let detail: String = text.chars().take(300).collect();
            return Err(SigninError::Provider(format!(
                "{what}: HTTP {status}: {detail}"
            )));
        }
        let emails: Vec<Email> = serde_json::from_str(&text)
            .map_err(|e| SigninError::Provider(format!("{what}: {e}")))?;
        let primary = emails
            .into_iter()
            .find(|e| e.primary && e.verified)
            .ok_or_else(|| {
                SigninError::Refused(
                    "this GitHub account has no primary, verified email; verify one at github.com/settings/emails".into(),
                )
            })?;
        let email = primary.email.to_ascii_lowercase();
        Ok(Identity {
            subject: email.clone(),
            email,
            hosted_domain: None,
        })
    }
}
