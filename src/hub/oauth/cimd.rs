//! Client ID Metadata Documents: a `client_id` that is an https URL names a JSON document
//! describing the client. Not fetched yet: such a `client_id` is refused.

use super::OAuthError;

/// Fetches and caches metadata documents.
#[derive(Debug, Default)]
pub(crate) struct Fetcher {
    _allow_loopback_http: bool,
}

impl Fetcher {
    /// A fetcher; `allow_loopback_http` is for tests only.
    pub(crate) fn new(allow_loopback_http: bool) -> Fetcher {
        Fetcher {
            _allow_loopback_http: allow_loopback_http,
        }
    }

    /// The client name and redirect URIs the document at `url` states.
    ///
    /// # Errors
    /// Always, for now.
    pub(crate) fn client(&self, _url: &str) -> Result<(String, Vec<String>), OAuthError> {
        Err(OAuthError::invalid_client(
            "client ID metadata documents are not supported by this hub yet; register at /oauth/register",
        ))
    }
}

/// True when `client_id` is the URL of a metadata document.
pub(crate) fn is_document_url(client_id: &str, allow_loopback_http: bool) -> bool {
    client_id.starts_with("https://") || (allow_loopback_http && client_id.starts_with("http://"))
}
