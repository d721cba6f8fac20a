//! Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document, MCP 2025-11-25):
//! a `client_id` that is an https URL names a JSON document describing the client; the hub
//! fetches it instead of asking the client to register.
//!
//! The URL comes from a stranger, so the fetch is a server-side request made on their behalf,
//! and it is fenced in:
//! - https only, with a path, no fragment, no user info;
//! - the name is resolved here ([`PublicOnly`], ureq's resolver hook) and only public addresses
//!   are dialled: loopback, private, link-local (169.254.169.254, the cloud metadata address),
//!   CGNAT, multicast, documentation, unspecified, and their IPv6 forms are refused after
//!   resolution, so a name that resolves to 127.0.0.1 is refused like the literal;
//! - no redirects are followed (a redirect could lead anywhere, private addresses included);
//! - [`FETCH_TIMEOUT`] for the whole exchange, at most [`MAX_DOCUMENT`] bytes, no proxy;
//! - the document must name itself (`client_id` equal to the URL), list its redirect URIs
//!   (the rules of [`super::registration`]), and use no client secret.
//!
//! Answers are cached by their `Cache-Control` (`max-age`, capped at [`MAX_CACHE`]; `no-store`
//! or `no-cache` not cached; no header: [`DEFAULT_CACHE`]), failures for [`FAILURE_CACHE`] so a
//! stranger repeating an authorize request cannot make the hub fetch in a loop; at most
//! [`MAX_CACHED`] entries. The cache's mutex is never held across a fetch.
//!
//! Test only (`--oauth-test-cimd-loopback`): plain http to a loopback address is allowed, and
//! only that — private and link-local addresses stay refused.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::OAuthError;
use super::registration::parse_metadata;

/// The whole fetch: connect, TLS, request, answer.
pub(crate) const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest document read.
pub(crate) const MAX_DOCUMENT: u64 = 64 << 10;
/// Longest a document is cached, whatever its headers say.
pub(crate) const MAX_CACHE: Duration = Duration::from_secs(24 * 3600);
/// How long a document without caching headers is kept.
pub(crate) const DEFAULT_CACHE: Duration = Duration::from_secs(300);
/// How long a failed fetch is remembered.
pub(crate) const FAILURE_CACHE: Duration = Duration::from_secs(30);
/// Cached documents and failures at once.
pub(crate) const MAX_CACHED: usize = 1000;
/// Longest `client_id` URL.
pub(crate) const MAX_URL_LEN: usize = 512;

/// True when `client_id` is the URL of a metadata document (https with a path; with
/// `allow_loopback_http`, http too — the resolver then still admits only loopback).
pub(crate) fn is_document_url(client_id: &str, allow_loopback_http: bool) -> bool {
    let rest = client_id.strip_prefix("https://").or_else(|| {
        allow_loopback_http
            .then(|| client_id.strip_prefix("http://"))
            .flatten()
    });
    let Some(rest) = rest else {
        return false;
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    client_id.len() <= MAX_URL_LEN
        && !authority.is_empty()
        && !authority.contains('@')
        && path.len() > 1
        && !client_id.contains('#')
        && client_id.bytes().all(|b| b.is_ascii_graphic())
}

/// True for an address a fetch made for a stranger may reach.
pub(crate) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            // NAT64 (64:ff9b::/96) reaches the embedded IPv4 address.
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                let [x, y] = [s[6], s[7]];
                let v4 = std::net::Ipv4Addr::new(
                    (x >> 8) as u8,
                    (x & 0xff) as u8,
                    (y >> 8) as u8,
                    (y & 0xff) as u8,
                );
                return is_public(IpAddr::V4(v4));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || s[0..7] == [0, 0, 0, 0, 0, 0, 0])
        }
    }
}

/// ureq's resolver, keeping only addresses [`is_public`] admits (or, in the test mode,
/// loopback ones).
#[derive(Debug)]
struct PublicOnly {
    loopback_only: bool,
}

impl ureq::unversioned::resolver::Resolver for PublicOnly {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let all = ureq::unversioned::resolver::DefaultResolver::default()
            .resolve(uri, config, timeout)?;
        let mut kept = self.empty();
        for addr in all.iter() {
            let ok = if self.loopback_only {
                addr.ip().is_loopback()
            } else {
                is_public(addr.ip())
            };
            if ok {
                kept.push(*addr);
            }
        }
        if kept.is_empty() {
            let shown: Vec<String> = all.iter().map(|a| a.ip().to_string()).collect();
            return Err(ureq::Error::Io(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "it resolves to {} only, which the hub does not fetch from (not a public address)",
                    shown.join(", ")
                ),
            )));
        }
        Ok(kept)
    }
}

#[derive(Debug, Clone)]
struct Cached {
    until: Instant,
    outcome: Result<(String, Vec<String>), OAuthError>,
}

/// Fetches and caches metadata documents.
pub(crate) struct Fetcher {
    https: ureq::Agent,
    /// Test only: an agent for http to loopback.
    loopback: Option<ureq::Agent>,
    cache: Mutex<HashMap<String, Cached>>,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("loopback", &self.loopback.is_some())
            .finish_non_exhaustive()
    }
}

fn agent(loopback_only: bool) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(FETCH_TIMEOUT))
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .user_agent(concat!("llmbox/", env!("CARGO_PKG_VERSION")))
        .build();
    ureq::Agent::with_parts(
        config,
        ureq::unversioned::transport::DefaultConnector::default(),
        PublicOnly { loopback_only },
    )
}

/// How long an answer with these `Cache-Control` values may be reused.
fn freshness(cache_control: Option<&str>) -> Duration {
    let Some(cc) = cache_control else {
        return DEFAULT_CACHE;
    };
    let mut max_age = None;
    for d in cc.split(',').map(|d| d.trim().to_ascii_lowercase()) {
        if d == "no-store" || d == "no-cache" {
            return Duration::ZERO;
        }
        if let Some(v) = d.strip_prefix("max-age=") {
            max_age = v.trim_matches('"').parse::<u64>().ok();
        }
    }
    max_age.map_or(DEFAULT_CACHE, |s| Duration::from_secs(s).min(MAX_CACHE))
}

impl Fetcher {
    /// A fetcher; `allow_loopback_http` is for tests only.
    pub(crate) fn new(allow_loopback_http: bool) -> Fetcher {
        Fetcher {
            https: agent(false),
            loopback: allow_loopback_http.then(|| agent(true)),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The client name and redirect URIs the document at `url` states.
    ///
    /// # Errors
    /// [`OAuthError::invalid_client`] saying why the document cannot be used.
    pub(crate) fn client(&self, url: &str) -> Result<(String, Vec<String>), OAuthError> {
        let now = Instant::now();
        if let Some(hit) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(url)
            .filter(|c| c.until > now)
        {
            return hit.outcome.clone();
        }
        let (outcome, keep) = match self.fetch(url) {
            Ok((doc, fresh)) => (Ok(doc), fresh),
            Err(e) => {
                log::info!("oauth: client metadata document {url}: {}", e.description);
                (Err(e), FAILURE_CACHE)
            }
        };
        if !keep.is_zero() {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            cache.retain(|_, c| c.until > now);
            if cache.len() >= MAX_CACHED
                && let Some(oldest) = cache
                    .iter()
                    .min_by_key(|(_, c)| c.until)
                    .map(|(k, _)| k.clone())
            {
                cache.remove(&oldest);
            }
            cache.insert(
                url.to_string(),
                Cached {
                    until: now + keep,
                    outcome: outcome.clone(),
                },
            );
        }
        outcome
    }

    fn fetch(&self, url: &str) -> Result<((String, Vec<String>), Duration), OAuthError> {
        let refuse = |why: String| {
            OAuthError::invalid_client(format!("the client metadata document at {url}: {why}"))
        };
        let agent = match (&self.loopback, url.starts_with("http://")) {
            (Some(a), true) => a,
            (None, true) => return Err(refuse("only https is fetched".into())),
            (_, false) => &self.https,
        };
        let mut resp = agent
            .get(url)
            .header("Accept", "application/json")
            .call()
            .map_err(|e| refuse(format!("cannot fetch it: {e}")))?;
        let status = resp.status().as_u16();
        if status != 200 {
            let what = if (300..400).contains(&status) {
                format!("it answered {status}; redirects are not followed")
            } else {
                format!("it answered {status}")
            };
            return Err(refuse(what));
        }
        let fresh = freshness(
            resp.headers()
                .get("cache-control")
                .and_then(|v| v.to_str().ok()),
        );
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MAX_DOCUMENT)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => {
                    refuse(format!("it is larger than {MAX_DOCUMENT} bytes"))
                }
                e => refuse(format!("reading it: {e}")),
            })?;
        let doc: Value =
            serde_json::from_slice(&bytes).map_err(|e| refuse(format!("it is not JSON: {e}")))?;
        if doc.get("client_id").and_then(Value::as_str) != Some(url) {
            return Err(refuse("its client_id is not its own URL".into()));
        }
        if doc.get("client_secret").is_some()
            || doc
                .get("token_endpoint_auth_method")
                .and_then(Value::as_str)
                .is_some_and(|m| m != "none")
        {
            return Err(refuse(
                "it names a client secret; a metadata-document client is public (token_endpoint_auth_method none)".into(),
            ));
        }
        let parsed = parse_metadata(&doc).map_err(|e| refuse(e.description))?;
        Ok((parsed, fresh))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_urls_are_https_with_a_path() {
        assert!(is_document_url("https://app.example/client.json", false));
        for bad in [
            "https://app.example",
            "https://app.example/",
            "https://user@app.example/c.json",
            "https://app.example/c.json#x",
            "http://127.0.0.1:1/c.json",
            "llmbox-client-abc",
        ] {
            assert!(!is_document_url(bad, false), "{bad}");
        }
        assert!(is_document_url("http://127.0.0.1:1/c.json", true));
    }

    #[test]
    fn only_public_addresses_are_fetched_from() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2001:db8::1",
        ] {
            assert!(!is_public(bad.parse().expect("ip")), "{bad}");
        }
        for ok in ["93.184.216.34", "1.1.1.1", "2606:4700::1111"] {
            assert!(is_public(ok.parse().expect("ip")), "{ok}");
        }
    }

    #[test]
    fn caching_follows_cache_control() {
        assert_eq!(freshness(None), DEFAULT_CACHE);
        assert_eq!(freshness(Some("max-age=60")), Duration::from_secs(60));
        assert_eq!(freshness(Some("public, max-age=999999999")), MAX_CACHE);
        assert_eq!(freshness(Some("no-store")), Duration::ZERO);
        assert_eq!(freshness(Some("max-age=60, no-cache")), Duration::ZERO);
    }

    #[test]
    fn a_name_resolving_to_loopback_or_metadata_addresses_is_refused_before_connecting() {
        let f = Fetcher::new(false);
        for url in [
            "https://localhost:9/client.json",
            "https://127.0.0.1:9/client.json",
            "https://169.254.169.254/latest/meta-data",
        ] {
            let err = f.client(url).expect_err(url);
            assert_eq!(err.code, "invalid_client");
            assert!(
                err.description.contains("not a public address"),
                "{url}: {}",
                err.description
            );
        }
        // The test mode admits loopback http, never link-local.
        let t = Fetcher::new(true);
        let err = t
            .client("http://169.254.169.254/latest/meta-data")
            .expect_err("metadata address");
        assert!(
            err.description.contains("not a public address"),
            "{}",
            err.description
        );
    }
}
