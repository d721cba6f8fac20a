//! What the hub publishes about itself: Protected Resource Metadata (RFC 9728) for the MCP
//! endpoint, Authorization Server Metadata (RFC 8414), and the resource identifiers (RFC 8707)
//! tokens may be bound to.
//!
//! The MCP endpoint answers at `/mcp` and, for Go llmbox's clients, at `/`; so the hub's
//! resource identifiers are `<public>/mcp` and `<public>` (each with or without a trailing
//! slash: the SDKs render a root URL with one). The issuer is `<public>`, and the metadata's
//! `issuer` is exactly the `authorization_servers` entry, as clients check since the
//! 2026-07-28 revision (SEP-2468).

use serde_json::{Value, json};

use super::{OAuth, SCOPE};

impl OAuth {
    /// The issuer identifier: the public URL.
    pub(crate) fn issuer(&self) -> &str {
        &self.config.public_url
    }

    /// The MCP endpoint's resource identifier, which tokens are normally bound to.
    pub(crate) fn mcp_resource(&self) -> String {
        format!("{}/mcp", self.config.public_url)
    }

    /// The canonical form of `resource` when it names this hub's MCP endpoint (`<public>/mcp`
    /// or `<public>`); `None` for anything else.
    pub(crate) fn names_this_hub(&self, resource: &str) -> Option<String> {
        let given = canonical(resource)?;
        let ours = [
            canonical(&self.mcp_resource())?,
            canonical(&self.config.public_url)?,
        ];
        ours.into_iter().find(|r| *r == given)
    }

    /// Where the metadata of the MCP endpoint at `path` is (the `resource_metadata` of a 401).
    pub(crate) fn resource_metadata_url(&self, path: &str) -> String {
        let suffix = if path == "/" { "" } else { "/mcp" };
        format!(
            "{}/.well-known/oauth-protected-resource{suffix}",
            self.config.public_url
        )
    }

    /// The `WWW-Authenticate` value of a 401 from the MCP endpoint at `path`; `invalid_token`
    /// when a token was presented.
    pub(crate) fn www_authenticate(&self, path: &str, invalid_token: bool) -> String {
        let error = if invalid_token {
            ", error=\"invalid_token\""
        } else {
            ""
        };
        format!(
            "Bearer realm=\"{}\", resource_metadata=\"{}\"{error}",
            crate::hub::auth::REALM,
            self.resource_metadata_url(path)
        )
    }

    /// RFC 9728 metadata: of `<public>/mcp` when `mcp`, else of `<public>`.
    pub(crate) fn protected_resource(&self, mcp: bool) -> Value {
        let resource = if mcp {
            self.mcp_resource()
        } else {
            self.config.public_url.clone()
        };
        json!({
            "resource": resource,
            "authorization_servers": [self.issuer()],
            "bearer_methods_supported": ["header"],
            "scopes_supported": [SCOPE],
            "resource_name": "llmbox",
            "resource_documentation": format!("{}/signin", self.config.public_url),
        })
    }

    /// RFC 8414 metadata, served at the OpenID discovery path too (clients try either).
    pub(crate) fn server_metadata(&self) -> Value {
        let base = &self.config.public_url;
        json!({
            "issuer": self.issuer(),
            "authorization_endpoint": format!("{base}/oauth/authorize"),
            "token_endpoint": format!("{base}/oauth/token"),
            "registration_endpoint": format!("{base}/oauth/register"),
            "revocation_endpoint": format!("{base}/oauth/revoke"),
            "scopes_supported": [SCOPE],
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "revocation_endpoint_auth_methods_supported": ["none"],
            "client_id_metadata_document_supported": true,
            "authorization_response_iss_parameter_supported": true,
        })
    }
}

/// `scheme://host[:port]` lowercased plus the path without trailing slashes; `None` for what
/// is not an absolute http(s) URL without query or fragment.
fn canonical(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if !(scheme == "http" || scheme == "https") || rest.contains(['?', '#']) {
        return None;
    }
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if authority.is_empty() {
        return None;
    }
    Some(format!(
        "{scheme}://{}{}",
        authority.to_ascii_lowercase(),
        path.trim_end_matches('/')
    ))
}

#[cfg(test)]
mod tests {
    use super::super::OAuthConfig;
    use super::*;

    fn oauth() -> OAuth {
        OAuth::new(OAuthConfig::new("https://Hub.example/"))
    }

    #[test]
    fn the_mcp_url_and_the_root_name_this_hub_and_nothing_else_does() {
        let o = oauth();
        for ok in [
            "https://hub.example/mcp",
            "https://HUB.example/mcp/",
            "https://hub.example",
            "https://hub.example/",
        ] {
            assert!(o.names_this_hub(ok).is_some(), "{ok}");
        }
        for bad in [
            "https://hub.example/mcp/x",
            "https://hub.example/MCP",
            "http://hub.example/mcp",
            "https://evil.example/mcp",
            "https://hub.example/mcp?x=1",
            "https://hub.example/mcp#f",
            "hub.example/mcp",
            "",
        ] {
            assert!(o.names_this_hub(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn metadata_names_one_issuer_everywhere() {
        let o = oauth();
        let prm = o.protected_resource(true);
        let asm = o.server_metadata();
        assert_eq!(prm["resource"], "https://Hub.example/mcp");
        assert_eq!(prm["authorization_servers"][0], asm["issuer"]);
        assert_eq!(asm["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(
            o.www_authenticate("/mcp", true),
            "Bearer realm=\"llmbox\", resource_metadata=\"https://Hub.example/.well-known/oauth-protected-resource/mcp\", error=\"invalid_token\""
        );
        assert!(
            o.www_authenticate("/", false)
                .ends_with("oauth-protected-resource\"")
        );
    }
}
