//! Who may reach what on the HTTP front: which paths a listener serves ([`Surface`]) and
//! whether one MCP request may go on ([`Access::decide`]). The HTTP layer calls these and
//! turns a [`Denial`] into its 401; nothing here touches a socket.
//!
//! The rule (shared/notes/mcp.md §4, static keys): as soon as the state file holds one API
//! key, every MCP request needs `Authorization: Bearer <key>`, checked before any dispatch.
//! With no key at all MCP is open, but only on a loopback listener (or with
//! `--insecure-no-auth`): a hub whose last key was revoked while it listens beyond loopback
//! refuses every MCP request instead of falling open. Any other shape of the header — no
//! scheme, `Basic`, empty, huge, non-ASCII, sent twice — is refused the same way, never an
//! error of the server. Without `--mcp-oauth`, OAuth discovery is deliberately absent (no
//! `/.well-known/oauth-protected-resource`, no `resource_metadata`): OAuth-capable clients
//! would otherwise start a flow the hub cannot finish.
//!
//! With `--mcp-oauth` ([`super::oauth`]) every MCP request needs a credential, on loopback
//! too: an access token of this hub (`llmbox_at_…`) or an API key. Every 401 then names the
//! Protected Resource Metadata in `WWW-Authenticate: Bearer resource_metadata="…"`, which is
//! where an OAuth client starts.

use std::net::SocketAddr;
use std::sync::Arc;

use super::apikeys::{self, Caller, Verdict};
use super::audit::AuditLog;
use crate::store::Store;

/// Longest `Authorization` value looked at; a longer one is refused unread.
pub(crate) const MAX_AUTHORIZATION_LEN: usize = 1024;
/// The `WWW-Authenticate` realm.
pub(crate) const REALM: &str = "llmbox";

/// What one listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Surface {
    /// Everything on one port (Go llmbox's layout; the default without `--mcp-listen`).
    #[default]
    All,
    /// The public side of the two-port layout: the activation page, `/healthz`, the favicon.
    Page,
    /// The private side (`--mcp-listen`): MCP (`POST /mcp`, `POST /`) and `/metrics`.
    Mcp,
}

impl Surface {
    /// True when a request for `path` is served here; anything else is 404.
    pub(crate) fn serves(self, path: &str) -> bool {
        let mcp = matches!(path, "/mcp" | "/" | "/metrics");
        // A client that reaches MCP on the private port finds its resource metadata there too.
        let metadata = path.starts_with("/.well-known/oauth-protected-resource");
        match self {
            Surface::All => true,
            Surface::Mcp => mcp || metadata,
            Surface::Page => !mcp,
        }
    }
}

/// A listener's access settings, given to the HTTP front at start.
#[derive(Clone, Default)]
pub struct Access {
    /// Which paths it serves.
    pub surface: Surface,
    /// `--insecure-no-auth`: MCP without keys is open even beyond loopback.
    pub insecure_no_auth: bool,
    /// Where tool calls and activation attempts are recorded (`--audit-log`).
    pub audit: Option<Arc<AuditLog>>,
    /// Sign-in on the web pages (`--oidc-*`); `None` leaves the activation page a bearer link.
    pub signin: Option<Arc<super::signin::Signin>>,
    /// `--mcp-oauth`: the hub's own authorization server (needs `signin`).
    pub oauth: Option<Arc<super::oauth::OAuth>>,
}

/// Why an MCP request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Denial {
    /// A key was presented (or the header was unusable): `error="invalid_token"` is added.
    pub(crate) invalid_token: bool,
    /// The sentence in the JSON-RPC error body.
    pub(crate) message: String,
    /// With `--mcp-oauth`: the whole `WWW-Authenticate` value, naming the resource metadata.
    pub(crate) oauth_challenge: Option<String>,
}

impl Denial {
    fn new(invalid_token: bool, message: &str) -> Denial {
        Denial {
            invalid_token,
            message: message.to_string(),
            oauth_challenge: None,
        }
    }

    /// The `WWW-Authenticate` value of the 401.
    pub(crate) fn www_authenticate(&self) -> String {
        if let Some(c) = &self.oauth_challenge {
            return c.clone();
        }
        if self.invalid_token {
            format!("Bearer realm=\"{REALM}\", error=\"invalid_token\"")
        } else {
            format!("Bearer realm=\"{REALM}\"")
        }
    }
}

/// The outcome of [`Access::decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Go on, as this caller.
    Allow(Caller),
    /// Answer 401.
    Deny(Denial),
}

/// What the `Authorization` headers of a request hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Presented<'a> {
    /// No `Authorization` header.
    Nothing,
    /// One `Bearer` header with a plausible token.
    Bearer(&'a str),
    /// Anything else: another scheme, no token, an oversized or non-ASCII value, two headers.
    Unusable,
}

/// Reads the `Authorization` header values of one request (every one of them, so that two
/// headers are noticed).
pub(crate) fn presented<'a>(values: &[&'a str]) -> Presented<'a> {
    match values {
        [] => Presented::Nothing,
        [one] => {
            if one.len() > MAX_AUTHORIZATION_LEN || !one.is_ascii() {
                return Presented::Unusable;
            }
            let value = one.trim();
            let Some((scheme, token)) = value.split_once(' ') else {
                return Presented::Unusable;
            };
            let token = token.trim();
            if !scheme.eq_ignore_ascii_case("bearer")
                || token.is_empty()
                || !token.bytes().all(|b| b.is_ascii_graphic())
            {
                return Presented::Unusable;
            }
            Presented::Bearer(token)
        }
        _ => Presented::Unusable,
    }
}

impl Access {
    /// Decides whether an MCP request for `path` that arrived on `local` (the listener's
    /// address) with these `Authorization` values may go on.
    pub(crate) fn decide(
        &self,
        store: &Store,
        local: SocketAddr,
        authorization: &[&str],
        path: &str,
    ) -> Decision {
        let presented = presented(authorization);
        if let Some(oauth) = &self.oauth {
            return match Self::decide_oauth(oauth, store, &presented) {
                Decision::Deny(mut d) => {
                    d.oauth_challenge = Some(oauth.www_authenticate(path, d.invalid_token));
                    Decision::Deny(d)
                }
                allow => allow,
            };
        }
        let key = match presented {
            Presented::Bearer(token) => Some(token),
            _ => None,
        };
        match apikeys::verify(store, key) {
            Ok(Verdict::Valid(caller)) => Decision::Allow(caller),
            // A bearer key where none exists was revoked (the last one) or never made: refused
            // like any invalid key, so revoking the last key never lets its holder back in.
            // Other schemes (a proxy's own Basic credentials) do not concern the hub here.
            Ok(Verdict::NoKeys) if key.is_some() => Decision::Deny(Denial::new(
                true,
                "unauthorized: the API key is unknown, expired or revoked",
            )),
            Ok(Verdict::NoKeys) if self.insecure_no_auth || local.ip().is_loopback() => {
                Decision::Allow(Caller::Anonymous)
            }
            Ok(Verdict::NoKeys) => Decision::Deny(Denial::new(
                presented != Presented::Nothing,
                "unauthorized: this hub has no API key yet and serves MCP beyond loopback; the operator runs `llmbox apikey create`",
            )),
            Ok(Verdict::Invalid) => Decision::Deny(match presented {
                Presented::Nothing => Denial::new(
                    false,
                    "unauthorized: send Authorization: Bearer <API key> (`llmbox apikey create` makes one)",
                ),
                _ => Denial::new(
                    true,
                    "unauthorized: the API key is unknown, expired or revoked",
                ),
            }),
            Err(e) => {
                // The hub cannot tell who may call: refuse, loudly, rather than fall open.
                log::error!("API keys: {e}");
                Decision::Deny(Denial::new(
                    false,
                    "unauthorized: the hub cannot read its API keys right now; try again shortly",
                ))
            }
        }
    }
}

impl Access {
    /// [`Access::decide`] with `--mcp-oauth`: an access token of this hub or an API key; no
    /// anonymous mode.
    fn decide_oauth(
        oauth: &super::oauth::OAuth,
        store: &Store,
        presented: &Presented<'_>,
    ) -> Decision {
        let token = match presented {
            Presented::Nothing => {
                return Decision::Deny(Denial::new(
                    false,
                    "unauthorized: connect through OAuth (this hub's WWW-Authenticate names its metadata) or send Authorization: Bearer <API key>",
                ));
            }
            Presented::Unusable => {
                return Decision::Deny(Denial::new(
                    true,
                    "unauthorized: send exactly one Authorization: Bearer <token> header",
                ));
            }
            Presented::Bearer(t) => *t,
        };
        let trouble = |e: &dyn std::fmt::Display| {
            log::error!("MCP credentials: {e}");
            Decision::Deny(Denial::new(
                false,
                "unauthorized: the hub cannot read its credentials right now; try again shortly",
            ))
        };
        if token.starts_with(super::oauth::grants::ACCESS_PREFIX) {
            return match oauth.verify_access(store, token) {
                Ok(Some(caller)) => Decision::Allow(caller),
                Ok(None) => Decision::Deny(Denial::new(
                    true,
                    "unauthorized: the access token is unknown, expired or revoked; refresh it or connect again",
                )),
                Err(e) => trouble(&e),
            };
        }
        match apikeys::verify(store, Some(token)) {
            Ok(Verdict::Valid(caller)) => Decision::Allow(caller),
            Ok(_) => Decision::Deny(Denial::new(
                true,
                "unauthorized: the token is neither a current access token nor an API key of this hub",
            )),
            Err(e) => trouble(&e),
        }
    }
}

/// Why `llmbox hub` must not start: MCP would be open beyond loopback with no key. `None`
/// when it may.
pub(crate) fn refuse_open_mcp(
    store: &Store,
    mcp_listen: SocketAddr,
    insecure_no_auth: bool,
) -> Option<String> {
    if insecure_no_auth || mcp_listen.ip().is_loopback() {
        return None;
    }
    match store.load() {
        Ok(state) if !state.api_keys.is_empty() => None,
        _ => Some(format!(
            "MCP would be served on {mcp_listen}, beyond loopback, to anyone: no API key exists. Run `llmbox apikey create --name NAME` first (or keep MCP on loopback, or pass --insecure-no-auth if a proxy in front authenticates callers)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::apikeys::tests::store;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    #[test]
    fn surfaces_split_the_page_from_mcp() {
        for (path, all, page, mcp) in [
            ("/mcp", true, false, true),
            ("/", true, false, true),
            ("/metrics", true, false, true),
            ("/healthz", true, true, false),
            ("/readyz", true, true, false),
            ("/auth/x", true, true, false),
            ("/favicon.svg", true, true, false),
            (
                "/.well-known/oauth-protected-resource/mcp",
                true,
                true,
                true,
            ),
            ("/.well-known/oauth-authorization-server", true, true, false),
            ("/oauth/token", true, true, false),
        ] {
            assert_eq!(Surface::All.serves(path), all, "{path}");
            assert_eq!(Surface::Page.serves(path), page, "{path}");
            assert_eq!(Surface::Mcp.serves(path), mcp, "{path}");
        }
    }

    #[test]
    fn only_one_bearer_header_with_a_visible_token_is_a_key() {
        let big = format!("Bearer {}", "a".repeat(100_000));
        assert_eq!(presented(&[]), Presented::Nothing);
        assert_eq!(presented(&["Bearer abc"]), Presented::Bearer("abc"));
        assert_eq!(presented(&["bearer  abc "]), Presented::Bearer("abc"));
        for bad in [
            vec!["abc"],
            vec!["Basic YWxhZGRpbjpvcGVuc2VzYW1l"],
            vec![""],
            vec!["Bearer"],
            vec!["Bearer "],
            vec![big.as_str()],
            vec!["Bearer clé"],
            vec!["Bearer a b"],
            vec!["Bearer abc", "Bearer abc"],
        ] {
            assert_eq!(presented(&bad), Presented::Unusable, "{bad:?}");
        }
    }

    #[test]
    fn without_keys_mcp_is_open_on_loopback_only_unless_insecure() {
        let s = store("open");
        let open = Access::default();
        assert_eq!(
            open.decide(&s, addr("127.0.0.1:1"), &[], "/mcp"),
            Decision::Allow(Caller::Anonymous)
        );
        assert_eq!(
            open.decide(&s, addr("127.0.0.1:1"), &["Basic cHJveHk6cHc="], "/mcp"),
            Decision::Allow(Caller::Anonymous),
            "a proxy's own credentials"
        );
        assert!(matches!(
            open.decide(&s, addr("127.0.0.1:1"), &["Bearer llmbox_revoked"], "/mcp"),
            Decision::Deny(Denial {
                invalid_token: true,
                ..
            })
        ));
        assert!(matches!(
            open.decide(&s, addr("10.0.0.1:1"), &[], "/mcp"),
            Decision::Deny(Denial {
                invalid_token: false,
                ..
            })
        ));
        let insecure = Access {
            insecure_no_auth: true,
            ..Access::default()
        };
        assert_eq!(
            insecure.decide(&s, addr("10.0.0.1:1"), &[], "/mcp"),
            Decision::Allow(Caller::Anonymous)
        );
        assert!(refuse_open_mcp(&s, addr("0.0.0.0:80"), false).is_some());
        assert!(refuse_open_mcp(&s, addr("0.0.0.0:80"), true).is_none());
        assert!(refuse_open_mcp(&s, addr("127.0.0.1:80"), false).is_none());
    }

    #[test]
    fn with_a_key_every_request_needs_it_and_a_wrong_one_is_an_invalid_token() {
        let s = store("keys");
        let (key, _) = apikeys::create_key(&s, "ci", None, false).expect("key");
        let access = Access::default();
        let local = addr("127.0.0.1:1");
        let bearer = format!("Bearer {key}");
        assert!(matches!(
            access.decide(&s, local, &[&bearer], "/mcp"),
            Decision::Allow(Caller::Key { .. })
        ));
        let Decision::Deny(none) = access.decide(&s, local, &[], "/mcp") else {
            panic!("no header must be refused");
        };
        assert!(!none.invalid_token);
        assert_eq!(none.www_authenticate(), "Bearer realm=\"llmbox\"");
        for bad in ["Bearer llmbox_00", "Basic x", "", &format!("bearer {key}x")] {
            let Decision::Deny(d) = access.decide(&s, local, &[bad], "/mcp") else {
                panic!("{bad:?} must be refused");
            };
            assert!(d.invalid_token, "{bad:?}");
            assert_eq!(
                d.www_authenticate(),
                "Bearer realm=\"llmbox\", error=\"invalid_token\""
            );
        }
        assert!(refuse_open_mcp(&s, addr("0.0.0.0:80"), false).is_none());
    }
}
