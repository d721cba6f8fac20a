//! The HTTP front on tiny_http: MCP (`POST /mcp`, `POST /`), the activation page
//! (`GET|POST /auth/<token>`), `/healthz`, `/metrics` and the favicon.
//!
//! Transport rules live here, protocol rules in [`super::mcp`]: a foreign `Origin` is 403 (on
//! MCP and on the page's form post), a body over [`MAX_MCP_BODY`] is 413, a non-JSON
//! Content-Type 415, an Accept that excludes JSON 406, other methods 405 with `Allow`.
//!
//! Threads: `hub-http-accept` receives requests and owns the server handle's accept side; each
//! request runs on its own `hub-http` thread, at most [`MAX_HANDLERS`] at once — past that a
//! short-lived `hub-http-busy` thread answers 503 (tiny_http drains unread bodies on reply, so
//! not even a refusal may run on the accept thread). A handler thread is named after its peer
//! (`hub-http-<addr>`). [`HttpFront::stop`] (or dropping the front) gives the accept loop's stop
//! signal, unblocks it and joins it; handler threads finish their one request and end.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;

use tiny_http::{Header, Method, Request, Response, Server};

use crate::util::slot::Slots;
use crate::util::stop::{Stop, StopHandle};

use super::mcp::{self, McpHeaders, ServerInfo};
use super::tools::HubTools;
use super::{Hub, HubError, page};

/// Handler threads running at once; past this, 503.
pub(crate) const MAX_HANDLERS: usize = 64;
/// Largest MCP request body.
pub(crate) const MAX_MCP_BODY: usize = 4 << 20;
/// Largest activation form body.
pub(crate) const MAX_FORM_BODY: usize = 64 << 10;
/// Stack of one handler thread.
const HANDLER_STACK: usize = 512 << 10;

/// The running HTTP front.
pub struct HttpFront {
    addr: SocketAddr,
    /// The accept loop; stopping it unblocks the server's `recv`.
    accept: StopHandle,
}

impl HttpFront {
    /// Binds `listen` and starts serving with the default handler bound.
    ///
    /// # Errors
    /// [`HubError::Listen`] when the address cannot be bound or the thread not started.
    pub fn start(hub: Arc<Hub>, listen: &str) -> Result<HttpFront, HubError> {
        Self::start_with(hub, listen, MAX_HANDLERS)
    }

    /// [`HttpFront::start`] with a chosen bound on handler threads.
    ///
    /// # Errors
    /// [`HubError::Listen`].
    pub fn start_with(
        hub: Arc<Hub>,
        listen: &str,
        max_handlers: usize,
    ) -> Result<HttpFront, HubError> {
        let listen_err = |reason: String| HubError::Listen {
            addr: listen.to_string(),
            reason,
        };
        let server = Server::http(listen).map_err(|e| listen_err(e.to_string()))?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| listen_err("not an IP address".into()))?;
        let server = Arc::new(server);
        let origins = Origins::new(&listen_origin(addr)).with(&origin_of(&hub.config().public_url));
        let front = Front {
            hub,
            origins,
            info: ServerInfo {
                name: "llmbox".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                instructions: INSTRUCTIONS.into(),
            },
        };
        let mut accept = StopHandle::new();
        let srv = Arc::clone(&server);
        accept.on_stop(move || srv.unblock());
        // Owns the receiving side of the server; ends when stopped (the server unblocked).
        accept
            .spawn("hub-http-accept", move |stop| {
                accept_loop(&server, &stop, Arc::new(front), max_handlers);
            })
            .map_err(|e| listen_err(format!("cannot start the accept thread: {e}")))?;
        Ok(HttpFront { addr, accept })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and waits for the accept thread, as dropping the front does.
    pub fn stop(self) {
        self.accept.stop();
    }

    /// Blocks until the accept thread ends (it ends only when stopped).
    pub(crate) fn wait(self) {
        self.accept.wait();
    }
}

const INSTRUCTIONS: &str = "llmbox hands a person their own sandboxed Claude Code box. Create one with create_llmbox, give the person only the activation_url it returns (they sign in with their own Claude account there; never ask them for codes or credentials), poll get_llmbox until status is ready, then give them the session_url. exec_llmbox and get_llmbox_logs work on any box; destroy_llmbox removes one.";

fn listen_origin(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}", rest.split('/').next().unwrap_or("")),
        None => url.to_string(),
    }
}

struct Front {
    hub: Arc<Hub>,
    origins: Origins,
    info: ServerInfo,
}

fn accept_loop(server: &Server, stop: &Stop, front: Arc<Front>, max_handlers: usize) {
    let in_flight = Slots::new();
    loop {
        let request = match server.recv() {
            Ok(r) => r,
            Err(e) => {
                if stop.is_stopped() {
                    return;
                }
                log::warn!("http accept: {e}");
                continue;
            }
        };
        if stop.is_stopped() {
            return;
        }
        // Given back when the handler ends, even by panic.
        let Some(slot) = in_flight.try_take(max_handlers) else {
            // Not on this thread: tiny_http drains an unread request body when the request is
            // answered or dropped, so a slow client would stall the accept loop.
            let refuse = move || {
                let busy = Reply::text(503, "busy: too many requests in progress, retry shortly\n")
                    .header("Retry-After", "1");
                let _ = request.respond(busy.into_response());
            };
            if let Err(e) = std::thread::Builder::new()
                .name("hub-http-busy".into())
                .stack_size(HANDLER_STACK)
                .spawn(refuse)
            {
                log::warn!("http: cannot start a thread to refuse a request: {e}");
            }
            continue;
        };
        let peer = request
            .remote_addr()
            .map_or_else(|| "?".to_string(), ToString::to_string);
        let front = Arc::clone(&front);
        let spawned = std::thread::Builder::new()
            .name(format!("hub-http-{peer}"))
            .stack_size(HANDLER_STACK)
            .spawn(move || {
                let _slot = slot;
                serve(&front, request);
            });
        if let Err(e) = spawned {
            // The request went down with the closure; the client sees a closed connection.
            log::warn!("http: cannot start a handler thread: {e}");
        }
    }
}

/// One response before it becomes a tiny_http one.
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            headers: vec![
                ("Content-Type", content_type.to_string()),
                ("Cache-Control", "no-store".into()),
                ("X-Content-Type-Options", "nosniff".into()),
            ],
            body: body.into(),
        }
    }

    fn text(status: u16, text: &str) -> Reply {
        Reply::new(status, "text/plain; charset=utf-8", text)
    }

    fn json(status: u16, value: &serde_json::Value) -> Reply {
        Reply::new(
            status,
            "application/json",
            serde_json::to_vec(value).unwrap_or_default(),
        )
    }

    fn empty(status: u16) -> Reply {
        Reply {
            status,
            headers: vec![("Cache-Control", "no-store".into())],
            body: Vec::new(),
        }
    }

    fn html(status: u16, html: String) -> Reply {
        Reply::new(status, "text/html; charset=utf-8", html)
            .header("Content-Security-Policy", page::csp())
            .header("Referrer-Policy", "no-referrer")
            .header("X-Frame-Options", "DENY")
    }

    fn header(mut self, name: &'static str, value: &str) -> Reply {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name, value.to_string()));
        self
    }

    fn not_allowed(allow: &str) -> Reply {
        Reply::text(405, "method not allowed\n").header("Allow", allow)
    }

    fn into_response(self) -> Response<std::io::Cursor<Vec<u8>>> {
        let mut response = Response::from_data(self.body).with_status_code(self.status);
        for (name, value) in self.headers {
            if let Ok(h) = Header::from_bytes(name.as_bytes(), value.as_bytes()) {
                response.add_header(h);
            }
        }
        response
    }
}

fn header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers()
        .iter()
        .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

fn serve(front: &Front, mut request: Request) {
    let path = request.url().split('?').next().unwrap_or("").to_string();
    let reply = route(front, &mut request, &path);
    log::debug!(
        "{} {} -> {}",
        request.method(),
        loggable_path(&path),
        reply.status
    );
    if let Err(e) = request.respond(reply.into_response()) {
        log::debug!("http: writing the response: {e}");
    }
}

/// The request path as a log line may show it: the fixed routes as they are, anything else
/// masked. An activation path is a secret, and so is a token pasted into a mistyped path
/// (`//auth/<token>`, `/auth/<token>/`), which is answered 404 but would still be logged.
fn loggable_path(path: &str) -> &str {
    match path {
        "/mcp" | "/" | "/healthz" | "/metrics" | "/favicon.svg" | "/favicon.ico" => path,
        p if p.starts_with("/auth/") => "/auth/…",
        _ => "(other path)",
    }
}

fn route(front: &Front, req: &mut Request, path: &str) -> Reply {
    let method = req.method().clone();
    match path {
        "/mcp" | "/" => match method {
            Method::Post => mcp_post(front, req),
            _ => Reply::not_allowed("POST"),
        },
        "/healthz" => match method {
            Method::Get | Method::Head => Reply::text(200, "ok\n"),
            _ => Reply::not_allowed("GET"),
        },
        "/metrics" => match method {
            Method::Get => Reply::new(
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                front.hub.render_metrics(),
            ),
            _ => Reply::not_allowed("GET"),
        },
        "/favicon.svg" | "/favicon.ico" => match method {
            Method::Get | Method::Head => Reply::new(200, "image/svg+xml", page::FAVICON_SVG)
                .header("Cache-Control", "public, max-age=86400"),
            _ => Reply::not_allowed("GET"),
        },
        _ => match path.strip_prefix("/auth/") {
            Some(token) => auth(front, req, token, method),
            None => Reply::text(404, "not found\n"),
        },
    }
}

fn jsonrpc_error(status: u16, code: i64, message: &str) -> Reply {
    Reply::json(
        status,
        &serde_json::json!({"jsonrpc": "2.0", "error": {"code": code, "message": message}}),
    )
}

fn media_type(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Reads at most `max` bytes of body; `Err(413 reply)` past it.
fn read_body(req: &mut Request, max: usize, too_big: impl Fn() -> Reply) -> Result<Vec<u8>, Reply> {
    if req.body_length().is_some_and(|n| n > max) {
        return Err(too_big());
    }
    let mut body = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    if let Err(e) = req.as_reader().take(limit).read_to_end(&mut body) {
        return Err(Reply::text(
            400,
            &format!("reading the request body: {e}\n"),
        ));
    }
    if body.len() > max {
        return Err(too_big());
    }
    Ok(body)
}

fn mcp_post(front: &Front, req: &mut Request) -> Reply {
    if let Some(origin) = header(req, "Origin")
        && !front.origins.allows(origin)
    {
        return jsonrpc_error(
            403,
            mcp::code::INVALID_REQUEST,
            &format!("forbidden: Origin {origin:?} is not allowed"),
        );
    }
    let content_type = header(req, "Content-Type")
        .map(media_type)
        .unwrap_or_default();
    if content_type != "application/json" {
        return jsonrpc_error(
            415,
            mcp::code::INVALID_REQUEST,
            "unsupported media type: send Content-Type: application/json",
        );
    }
    if let Some(accept) = header(req, "Accept")
        && !accepts_json(accept)
    {
        return jsonrpc_error(
            406,
            mcp::code::INVALID_REQUEST,
            "not acceptable: this server answers application/json; list it in Accept",
        );
    }
    let body = match read_body(req, MAX_MCP_BODY, || {
        jsonrpc_error(
            413,
            mcp::code::INVALID_REQUEST,
            &format!("payload too large: the limit is {MAX_MCP_BODY} bytes"),
        )
    }) {
        Ok(b) => b,
        Err(reply) => return reply,
    };
    let headers = McpHeaders {
        protocol_version: header(req, "MCP-Protocol-Version"),
        method: header(req, "Mcp-Method"),
        name: header(req, "Mcp-Name"),
    };
    let reply = mcp::handle(&body, &headers, &HubTools(&front.hub), &front.info);
    match reply.body {
        None => Reply::empty(reply.status),
        Some(body) => Reply::json(reply.status, &body),
    }
}

fn accepts_json(accept: &str) -> bool {
    accept
        .split(',')
        .map(media_type)
        .any(|m| m == "application/json" || m == "application/*" || m == "*/*")
}

fn auth(front: &Front, req: &mut Request, token: &str, method: Method) -> Reply {
    if !crate::util::secret::is_hex_64(token) {
        return Reply::html(404, page::not_found());
    }
    let result = match method {
        Method::Get | Method::Head => front.hub.activation_page(token),
        Method::Post => {
            // With `Referrer-Policy: no-referrer` browsers send `Origin: null` on the page's
            // own form post, so null passes here; the secret token in the path is what stops
            // cross-site posts, the Origin check only turns away pages that name themselves.
            if let Some(origin) = header(req, "Origin")
                && origin != "null"
                && !front.origins.allows(origin)
            {
                return Reply::html(
                    403,
                    page::message(
                        "Refused",
                        "This form may only be sent from the activation page itself.",
                    ),
                );
            }
            if header(req, "Content-Type").map(media_type).as_deref()
                != Some("application/x-www-form-urlencoded")
            {
                return Reply::html(
                    415,
                    page::message(
                        "Unsupported form",
                        "Send the code with the page's own form.",
                    ),
                );
            }
            let body = match read_body(req, MAX_FORM_BODY, || {
                Reply::html(
                    413,
                    page::message(
                        "Too large",
                        "That form was far too large; paste only the code.",
                    ),
                )
            }) {
                Ok(b) => b,
                Err(reply) => return reply,
            };
            let code = form_value(&String::from_utf8_lossy(&body), "code").unwrap_or_default();
            front.hub.activate(token, &code)
        }
        _ => return Reply::not_allowed("GET, POST"),
    };
    match result {
        Ok(Some(view)) => Reply::html(200, page::render(&view)),
        Ok(None) => Reply::html(404, page::not_found()),
        Err(e) => {
            log::error!("activation page: {e}");
            Reply::html(
                500,
                page::message(
                    "Something went wrong",
                    "The hub could not read its state; try again in a moment.",
                ),
            )
        }
    }
}

/// The value of `key` in an `application/x-www-form-urlencoded` body.
pub(crate) fn form_value(body: &str, key: &str) -> Option<String> {
    body.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Which browser origins may call the MCP endpoint and post the form: the public URL's own
/// origin and loopback origins (a page served from another domain, as in DNS rebinding, is not).
pub(crate) struct Origins {
    allowed: Vec<String>,
}

impl Origins {
    /// Origins allowed besides loopback ones.
    pub(crate) fn new(public_origin: &str) -> Self {
        Origins {
            allowed: vec![normalize_origin(public_origin)],
        }
    }

    /// Adds another allowed origin (the `--public-url`'s).
    pub(crate) fn with(mut self, origin: &str) -> Self {
        self.allowed.push(normalize_origin(origin));
        self
    }

    /// True when `origin` may call.
    pub(crate) fn allows(&self, origin: &str) -> bool {
        let o = normalize_origin(origin);
        if self.allowed.contains(&o) {
            return true;
        }
        let Some(rest) = o
            .strip_prefix("http://")
            .or_else(|| o.strip_prefix("https://"))
        else {
            return false;
        };
        let host = if let Some(v6) = rest.strip_prefix('[') {
            v6.split(']').next().unwrap_or("")
        } else {
            rest.split(':').next().unwrap_or("")
        };
        host == "localhost"
            || host == "::1"
            || host
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

fn normalize_origin(origin: &str) -> String {
    let o = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    // Default ports are implied in browser origins.
    o.strip_suffix(":80")
        .filter(|r| r.starts_with("http://"))
        .or_else(|| o.strip_suffix(":443").filter(|r| r.starts_with("https://")))
        .map_or(o.clone(), str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_are_percent_and_plus_decoded() {
        assert_eq!(
            form_value("code=abc%23def+x", "code").as_deref(),
            Some("abc#def x")
        );
        assert_eq!(form_value("a=1&code=", "code").as_deref(), Some(""));
        assert_eq!(form_value("a=1", "code"), None);
        assert_eq!(form_value("code=%zz%4", "code").as_deref(), Some("%zz%4"));
        assert_eq!(form_value("c%6fde=%E2%9C%93", "code").as_deref(), Some("✓"));
    }

    #[test]
    fn no_path_that_may_hold_a_page_token_is_logged() {
        let token = "ab".repeat(32);
        for path in [
            format!("/auth/{token}"),
            format!("//auth/{token}"),
            format!("/x/auth/{token}"),
            format!("/{token}"),
        ] {
            let shown = loggable_path(&path);
            assert!(!shown.contains(&token), "{path} logged as {shown}");
        }
        assert_eq!(loggable_path("/mcp"), "/mcp");
        assert_eq!(loggable_path("/healthz"), "/healthz");
    }

    #[test]
    fn origins_allow_the_public_one_and_loopback_only() {
        let o = Origins::new("http://127.0.0.1:8080").with("https://hub.example");
        for ok in [
            "https://hub.example",
            "https://HUB.example:443",
            "http://localhost:3000",
            "http://127.0.0.2",
            "http://[::1]:9",
        ] {
            assert!(o.allows(ok), "{ok}");
        }
        for bad in [
            "https://evil.example",
            "http://hub.example",
            "null",
            "http://localhost.evil.example",
            "file://",
        ] {
            assert!(!o.allows(bad), "{bad}");
        }
    }

    #[test]
    fn origin_of_keeps_scheme_host_and_port() {
        assert_eq!(
            origin_of("https://hub.example:8443/prefix/x"),
            "https://hub.example:8443"
        );
        assert_eq!(origin_of("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
    }
}
