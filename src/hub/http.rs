//! The HTTP front on tiny_http: MCP (`POST /mcp`, `POST /`), the activation page
//! (`GET|POST /auth/<token>`), `/healthz` (liveness), `/readyz` (state file and local Docker),
//! `/metrics` and the favicon.
//!
//! Transport rules live here, protocol rules in [`super::mcp`]: a `Host` that names neither an
//! IP address, `localhost` nor the `--public-url`'s host is 421 (DNS rebinding), a foreign
//! `Origin` is 403 (on MCP and on the page's form post), a body over [`MAX_MCP_BODY`] is 413
//! (and the connection closed, the body unread), a non-JSON Content-Type 415, an Accept that
//! excludes JSON 406, other methods 405 with `Allow`.
//!
//! Bounds against strangers ([`FrontLimits`]): open connections (derived from the descriptor
//! budget; past it the vendored tiny_http answers a fast 503 on its accept thread), handler
//! threads (past it 503), the bytes of all request bodies being read at once (past it 503), and
//! per connection the head size, header count and read deadlines of [`tiny_http::Limits`].
//!
//! Threads: tiny_http's `http-accept` and one `http-conn` per connection; `hub-http-accept`
//! receives requests; each request runs on its own `hub-http` thread, at most
//! [`FrontLimits::handlers`] at once — past that a short-lived `hub-http-busy` thread answers
//! 503 (not even a refusal may run on the receiving thread: a reply may block on a slow peer).
//! A handler thread is named after its peer (`hub-http-<addr>`). [`HttpFront::stop`] (or
//! dropping the front) gives the receiving loop's stop signal, unblocks it and joins it;
//! handler threads finish their one request and end. If tiny_http's accept thread dies anyway, the receiving thread
//! logs an ERROR and ends, and [`HttpFront::wait`] reports it so the process exits non-zero.

use super::signin::web::{Gate, WebReply, WebRequest};
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tiny_http::{Header, Method, Request, Response, Server};

use crate::util::slot::Slots;
use crate::util::stop::{Stop, StopHandle};

use super::auth::{Access, Decision};
use super::mcp::{self, McpHeaders, ServerInfo};
use super::tools::HubTools;
use super::{Hub, HubError, page};

/// Open HTTP connections when no descriptor budget is given ([`FrontLimits::default`]).
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Largest connection cap whatever the descriptor budget: each connection is a thread.
pub(crate) const MAX_CONNECTIONS_CEILING: usize = 8192;
/// Descriptors one HTTP connection holds (tiny_http keeps a read and a write descriptor).
pub(crate) const FDS_PER_CONNECTION: u64 = 2;
/// Bytes of request bodies all handlers may hold at once; past it, 503.
pub(crate) const MAX_BODY_BYTES_IN_FLIGHT: usize = 256 << 20;
/// Largest MCP request body.
pub(crate) const MAX_MCP_BODY: usize = 4 << 20;
/// Largest activation form body.
pub(crate) const MAX_FORM_BODY: usize = 64 << 10;
/// Stack of one handler thread.
const HANDLER_STACK: usize = 512 << 10;

/// What the front may hold at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrontLimits {
    /// Open connections; past it a new one gets a fast 503 and is closed.
    pub connections: usize,
    /// Handler threads (a request from its head to its reply); past it 503. A connection
    /// carries one request at a time, so this never needs to exceed `connections`.
    pub handlers: usize,
    /// Bytes of request bodies being read or held by handlers; past it 503.
    pub body_bytes: usize,
}

impl Default for FrontLimits {
    fn default() -> Self {
        FrontLimits {
            connections: DEFAULT_MAX_CONNECTIONS,
            handlers: DEFAULT_MAX_CONNECTIONS,
            body_bytes: MAX_BODY_BYTES_IN_FLIGHT,
        }
    }
}

impl FrontLimits {
    /// The limits for a front that may use `fds` descriptors: two per connection, at most
    /// [`MAX_CONNECTIONS_CEILING`] connections, at least 16.
    pub(crate) fn for_descriptors(fds: u64) -> FrontLimits {
        let connections = usize::try_from(fds / FDS_PER_CONNECTION)
            .unwrap_or(usize::MAX)
            .clamp(16, MAX_CONNECTIONS_CEILING);
        FrontLimits {
            connections,
            handlers: connections,
            ..FrontLimits::default()
        }
    }

    fn server_limits(&self) -> tiny_http::Limits {
        tiny_http::Limits {
            max_connections: self.connections,
            ..tiny_http::Limits::default()
        }
    }
}

/// The running HTTP front.
pub struct HttpFront {
    addr: SocketAddr,
    /// The receiving loop; stopping it unblocks the server's `recv`.
    accept: StopHandle,
    /// Set when the receiving loop ended without being stopped.
    died: Arc<AtomicBool>,
}

/// How the front ended without being stopped.
#[derive(Debug)]
pub(crate) struct FrontDied(pub(crate) String);

impl std::fmt::Display for FrontDied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the HTTP front stopped serving: {}", self.0)
    }
}

impl HttpFront {
    /// Binds `listen` and starts serving with the default limits.
    ///
    /// # Errors
    /// [`HubError::Listen`] when the address cannot be bound or the thread not started.
    pub fn start(hub: Arc<Hub>, listen: &str) -> Result<HttpFront, HubError> {
        Self::start_limited(hub, listen, FrontLimits::default())
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
        let limits = FrontLimits {
            handlers: max_handlers,
            ..FrontLimits::default()
        };
        Self::start_limited(hub, listen, limits)
    }

    /// [`HttpFront::start`] with chosen limits.
    ///
    /// # Errors
    /// [`HubError::Listen`].
    pub fn start_limited(
        hub: Arc<Hub>,
        listen: &str,
        limits: FrontLimits,
    ) -> Result<HttpFront, HubError> {
        Self::start_serving(hub, listen, limits, Access::default())
    }

    /// [`HttpFront::start`] serving what `access` says (the paths of its surface, API keys, the
    /// audit log; see [`super::auth`]), with the default limits.
    ///
    /// # Errors
    /// [`HubError::Listen`].
    pub fn start_with_access(
        hub: Arc<Hub>,
        listen: &str,
        access: Access,
    ) -> Result<HttpFront, HubError> {
        Self::start_serving(hub, listen, FrontLimits::default(), access)
    }

    /// [`HttpFront::start_limited`] serving what `access` says.
    ///
    /// # Errors
    /// [`HubError::Listen`].
    pub fn start_serving(
        hub: Arc<Hub>,
        listen: &str,
        limits: FrontLimits,
        access: Access,
    ) -> Result<HttpFront, HubError> {
        let listen_err = |reason: String| HubError::Listen {
            addr: listen.to_string(),
            reason,
        };
        let listener = TcpListener::bind(listen).map_err(|e| listen_err(e.to_string()))?;
        let server = Server::from_listener_with_limits(listener, None, limits.server_limits())
            .map_err(|e| listen_err(e.to_string()))?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| listen_err("not an IP address".into()))?;
        let server = Arc::new(server);
        let public_url = hub.config().public_url.clone();
        let origins = Origins::new(&listen_origin(addr)).with(&origin_of(&public_url));
        let front = Front {
            hub,
            access,
            addr,
            origins,
            hosts: Hosts::new(&public_url),
            bodies: Arc::new(AtomicUsize::new(0)),
            limits,
            info: ServerInfo {
                name: "llmbox".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                instructions: INSTRUCTIONS.into(),
            },
        };
        let mut accept = StopHandle::new();
        let srv = Arc::clone(&server);
        accept.on_stop(move || srv.unblock());
        let died = Arc::new(AtomicBool::new(false));
        let dead = Arc::clone(&died);
        // Owns the receiving side of the server; ends when stopped (the server unblocked), or
        // when tiny_http's accept thread died.
        accept
            .spawn("hub-http-accept", move |stop| {
                let _watch = DiesUnlessStopped {
                    stop: stop.clone(),
                    died: dead,
                };
                accept_loop(&server, &stop, Arc::new(front));
            })
            .map_err(|e| listen_err(format!("cannot start the accept thread: {e}")))?;
        Ok(HttpFront { addr, accept, died })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and waits for the accept thread, as dropping the front does.
    pub fn stop(self) {
        self.accept.stop();
    }

    /// Blocks until the front ends, which it does only when stopped or when it can no longer
    /// serve.
    ///
    /// # Errors
    /// [`FrontDied`] when it ended without being stopped: the caller should exit non-zero so
    /// a supervisor restarts the process.
    pub(crate) fn wait(self) -> Result<(), FrontDied> {
        let died = Arc::clone(&self.died);
        self.accept.wait();
        if died.load(Ordering::SeqCst) {
            Err(FrontDied("its receiving loop ended".into()))
        } else {
            Ok(())
        }
    }
}

/// Marks the front dead when the receiving loop ends (returns or panics) unstopped.
struct DiesUnlessStopped {
    stop: Stop,
    died: Arc<AtomicBool>,
}

impl Drop for DiesUnlessStopped {
    fn drop(&mut self) {
        if !self.stop.is_stopped() {
            self.died.store(true, Ordering::SeqCst);
        }
    }
}

const INSTRUCTIONS: &str = "llmbox hands a person their own sandboxed Claude Code box. Create one with create_llmbox, give the person only the auth_url it returns (before it expires: expires_at) (they sign in with their own Claude account there; never ask them for codes or credentials), poll get_llmbox until status is ready, then give them the session_url. exec_llmbox and get_llmbox_logs work on any box; destroy_llmbox removes one.";

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
    /// Which paths this listener serves, who may call MCP, the audit log.
    access: Access,
    /// The listener's own address (MCP without keys is open only on loopback).
    addr: SocketAddr,
    origins: Origins,
    hosts: Hosts,
    /// Body bytes reserved by handlers now (see [`BodyReservation`]).
    bodies: Arc<AtomicUsize>,
    limits: FrontLimits,
    info: ServerInfo,
}

/// Bytes of body reserved against [`FrontLimits::body_bytes`]; released when dropped.
struct BodyReservation {
    total: Arc<AtomicUsize>,
    bytes: usize,
}

impl BodyReservation {
    fn take(total: &Arc<AtomicUsize>, bytes: usize, limit: usize) -> Option<BodyReservation> {
        let before = total.fetch_add(bytes, Ordering::SeqCst);
        if before.saturating_add(bytes) > limit {
            total.fetch_sub(bytes, Ordering::SeqCst);
            return None;
        }
        Some(BodyReservation {
            total: Arc::clone(total),
            bytes,
        })
    }
}

impl Drop for BodyReservation {
    fn drop(&mut self) {
        self.total.fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

/// At most one warning per this interval for failures to start a thread; the rest counted.
const SPAWN_WARN_EVERY: Duration = Duration::from_secs(10);

/// A warning repeated at most once per [`SPAWN_WARN_EVERY`]: a flood of connections at the
/// thread limit must not become a flood of log lines.
struct ThrottledWarn {
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl ThrottledWarn {
    fn warn(&mut self, line: impl FnOnce() -> String) {
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < SPAWN_WARN_EVERY)
        {
            self.suppressed += 1;
            return;
        }
        let more = std::mem::take(&mut self.suppressed);
        if more > 0 {
            log::warn!("{} ({more} more since the last report)", line());
        } else {
            log::warn!("{}", line());
        }
        self.last = Some(now);
    }
}

fn accept_loop(server: &Server, stop: &Stop, front: Arc<Front>) {
    let in_flight = Slots::new();
    let max_handlers = front.limits.handlers;
    let mut spawn_failed = ThrottledWarn {
        last: None,
        suppressed: 0,
    };
    loop {
        let request = match server.recv() {
            Ok(r) => r,
            Err(e) => {
                if !stop.is_stopped() {
                    // tiny_http reports only the end of its accept thread here.
                    log::error!("http: the front can no longer accept connections: {e}");
                }
                return;
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
                let _ = request.respond(Reply::busy().into_response());
            };
            if let Err(e) = std::thread::Builder::new()
                .name("hub-http-busy".into())
                .stack_size(HANDLER_STACK)
                .spawn(refuse)
            {
                spawn_failed
                    .warn(|| format!("http: cannot start a thread to refuse a request: {e}"));
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
            // The request went down with the closure; the client sees a 500 or a close.
            spawn_failed.warn(|| format!("http: cannot start a handler thread: {e}"));
        }
    }
}

/// One response before it becomes a tiny_http one.
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    /// Close the connection after this reply, the rest of the request body unread.
    close: bool,
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
            close: false,
        }
    }

    /// 503 with `Retry-After`: the front is at one of its bounds.
    fn busy() -> Reply {
        Reply::text(503, "busy: too many requests in progress, retry shortly\n")
            .header("Retry-After", "1")
    }

    /// This reply ends the connection (tiny_http then neither drains nor reads on).
    fn closing(mut self) -> Reply {
        self.close = true;
        self
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
            close: false,
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
        if self.close {
            response = response.with_connection_close();
        }
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
        "/mcp"
        | "/"
        | "/healthz"
        | "/readyz"
        | "/metrics"
        | "/favicon.svg"
        | "/favicon.ico"
        | "/signin"
        | "/signin/oidc"
        | "/signin/oidc/callback"
        | "/signin/github"
        | "/signin/github/callback"
        | "/signout"
        | "/.well-known/oauth-protected-resource"
        | "/.well-known/oauth-protected-resource/mcp"
        | "/.well-known/oauth-authorization-server"
        | "/.well-known/openid-configuration"
        | "/oauth/register"
        | "/oauth/authorize"
        | "/oauth/token"
        | "/oauth/revoke" => path,
        p if p.starts_with("/oauth/consent/") => "/oauth/consent/…",
        p if p == "/admin" || p.starts_with("/admin/") => "/admin/…",
        p if p.starts_with("/auth/") => "/auth/…",
        _ => "(other path)",
    }
}

fn route(front: &Front, req: &mut Request, path: &str) -> Reply {
    let method = req.method().clone();
    // `/healthz` and `/readyz` answer any name (probes use internal ones).
    if path != "/healthz"
        && path != "/readyz"
        && let Some(host) = header(req, "Host")
        && !front.hosts.allows(host)
    {
        return Reply::text(
            421,
            "misdirected request: this Host is not served here; use the hub's public URL\n",
        )
        .closing();
    }
    if !front.access.surface.serves(path) {
        return Reply::text(404, "not found\n");
    }
    match path {
        "/mcp" | "/" => match method {
            Method::Post => mcp_post(front, req),
            _ => Reply::not_allowed("POST"),
        },
        "/healthz" => match method {
            Method::Get | Method::Head => Reply::text(200, "ok\n"),
            _ => Reply::not_allowed("GET"),
        },
        "/readyz" => match method {
            Method::Get | Method::Head => {
                let reasons = front.hub.readiness();
                let status = if reasons.is_empty() { 200 } else { 503 };
                Reply::json(
                    status,
                    &serde_json::json!({"ready": reasons.is_empty(), "reasons": reasons}),
                )
            }
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
            None if super::oauth::OAuth::serves(path) => {
                match (&front.access.oauth, &front.access.signin) {
                    (Some(oauth), Some(signin)) => oauth_route(front, oauth, signin, req, path),
                    _ => Reply::text(404, "not found\n"),
                }
            }
            None => match &front.access.signin {
                Some(signin) => signin_route(front, signin, req, path, method),
                None => Reply::text(404, "not found\n"),
            },
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

/// Reads at most `max` bytes of body, reserved against the front's body budget first.
/// `Err(413 reply)` past `max`, `Err(503)` when the budget is spent; both close the
/// connection without reading the rest (a declared 100 GB is not drained).
fn read_body(
    front: &Front,
    req: &mut Request,
    max: usize,
    too_big: impl Fn() -> Reply,
) -> Result<(Vec<u8>, BodyReservation), Reply> {
    if req.body_length().is_some_and(|n| n > max) {
        return Err(too_big().closing());
    }
    let want = req.body_length().unwrap_or(max);
    let Some(reservation) = BodyReservation::take(&front.bodies, want, front.limits.body_bytes)
    else {
        return Err(Reply::busy().closing());
    };
    let mut body = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    if let Err(e) = req.as_reader().take(limit).read_to_end(&mut body) {
        return Err(Reply::text(400, &format!("reading the request body: {e}\n")).closing());
    }
    if body.len() > max {
        return Err(too_big().closing());
    }
    Ok((body, reservation))
}

fn mcp_post(front: &Front, req: &mut Request) -> Reply {
    let authorization: Vec<&str> = req
        .headers()
        .iter()
        .filter(|h| h.field.equiv("Authorization"))
        .map(|h| h.value.as_str())
        .collect();
    let caller = match front.access.decide(
        front.hub.store(),
        front.addr,
        &authorization,
        req.url().split('?').next().unwrap_or(""),
    ) {
        Decision::Allow(caller) => caller,
        Decision::Deny(denial) => {
            return jsonrpc_error(401, mcp::code::INVALID_REQUEST, &denial.message)
                .header("WWW-Authenticate", &denial.www_authenticate());
        }
    };
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
    let (body, _reservation) = match read_body(front, req, MAX_MCP_BODY, || {
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
    let tools = HubTools {
        hub: &front.hub,
        caller: &caller,
        audit: front.access.audit.as_deref(),
    };
    let reply = mcp::handle(&body, &headers, &tools, &front.info);
    match reply.body {
        None => Reply::empty(reply.status),
        Some(body) => Reply::json(reply.status, &body),
    }
}

/// The OAuth routes (see [`super::oauth`]); 404 for any other path.
fn oauth_route(
    front: &Front,
    oauth: &super::oauth::OAuth,
    signin: &super::signin::Signin,
    req: &mut Request,
    path: &str,
) -> Reply {
    use super::oauth::{OAuthReply, OAuthRequest};
    let method = req.method().as_str().to_ascii_uppercase();
    let content_type = header(req, "Content-Type")
        .map(media_type)
        .unwrap_or_default();
    let (body, _reservation) = if method == "POST" {
        match read_body(front, req, super::oauth::MAX_BODY, || {
            Reply::json(
                413,
                &serde_json::json!({"error": "invalid_request", "error_description": "the request body is too large"}),
            )
        }) {
            Ok((b, r)) => (b, Some(r)),
            Err(reply) => return reply,
        }
    } else {
        (Vec::new(), None)
    };
    let url = req.url().to_string();
    let request = OAuthRequest {
        method: &method,
        path,
        query: url.split_once('?').map_or("", |(_, q)| q),
        body: &body,
        content_type: &content_type,
        cookies: header(req, "Cookie"),
        remote: req.remote_addr().copied(),
    };
    match oauth.serve(&front.hub, signin, front.access.audit.as_deref(), &request) {
        Some(OAuthReply::Json(status, value)) => {
            Reply::json(status, &value).header("Pragma", "no-cache")
        }
        Some(OAuthReply::Web(w)) => web_reply(w),
        None => Reply::text(404, "not found\n"),
    }
}

/// The 403 for a signed-in person on the activation page of a box another person's chatbot
/// created (`None` when `person` may go on: the owner, or a box no person owns).
fn not_the_owner(
    front: &Front,
    signin: &super::signin::Signin,
    person: &super::signin::Person,
    token: &str,
) -> Option<Reply> {
    let page = front.hub.activation_page(token).ok().flatten()?;
    let state = front.hub.store().load().ok()?;
    let (provider, email) = super::ownership::person_owner(&state, &page.box_id)?;
    if provider == person.provider && email == person.email {
        return None;
    }
    let here = format!("/auth/{token}");
    let body = format!(
        "<h1>Not your box</h1><p id=\"error\" role=\"alert\">You are signed in as {} ({}). This box was created for someone else, and only that person can activate it.</p>\
<p id=\"todo\">If it is yours, sign out and sign in with the account your chatbot is connected as.</p>{}{}",
        page::escape(&person.email),
        page::escape(&person.provider),
        signin.who(person, &here),
        signin.buttons(&here)
    );
    Some(Reply::html(
        403,
        page::document("Not your box · llmbox", &body),
    ))
}

/// The sign-in routes (see [`super::signin::web`]); 404 for any other path.
fn signin_route(
    front: &Front,
    signin: &super::signin::Signin,
    req: &mut Request,
    path: &str,
    method: Method,
) -> Reply {
    let post = method == Method::Post;
    let form = if post {
        match read_form(front, req) {
            Ok(f) => f,
            Err(reply) => return reply,
        }
    } else {
        String::new()
    };
    let url = req.url().to_string();
    let web = WebRequest {
        post,
        path,
        query: url.split_once('?').map_or("", |(_, q)| q),
        cookies: header(req, "Cookie"),
        form: &form,
        remote: req.remote_addr().copied(),
    };
    let audit = front.access.audit.as_deref();
    match signin
        .serve(front.hub.store(), audit, &web)
        .or_else(|| signin.admin(&front.hub, audit, &web))
    {
        Some(reply) => web_reply(reply),
        None => Reply::text(404, "not found\n"),
    }
}

fn web_reply(w: WebReply) -> Reply {
    let mut reply = match w.location {
        Some(location) => Reply::empty(w.status).header("Location", &location),
        None => Reply::html(w.status, w.html),
    };
    for c in w.cookies {
        reply.headers.push(("Set-Cookie", c));
    }
    reply
}

/// Reads a small urlencoded form (the activation code, a CSRF token).
fn read_form(front: &Front, req: &mut Request) -> Result<String, Reply> {
    if header(req, "Content-Type").map(media_type).as_deref()
        != Some("application/x-www-form-urlencoded")
    {
        return Err(Reply::html(
            415,
            page::message("Unsupported form", "Send the page's own form."),
        ));
    }
    let (body, _reservation) = read_body(front, req, MAX_FORM_BODY, || {
        Reply::html(
            413,
            page::message(
                "Too large",
                "That form was far too large; paste only the code.",
            ),
        )
    })?;
    Ok(String::from_utf8_lossy(&body).into_owned())
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
    let mut person = None;
    let mut form = None;
    if let Some(signin) = &front.access.signin {
        let post = method == Method::Post;
        if post {
            match read_form(front, req) {
                Ok(f) => form = Some(f),
                Err(reply) => return reply,
            }
        }
        let path = format!("/auth/{token}");
        let web = WebRequest {
            post,
            path: &path,
            cookies: header(req, "Cookie"),
            form: form.as_deref().unwrap_or(""),
            remote: req.remote_addr().copied(),
            ..WebRequest::default()
        };
        // An unknown token is 404 before anything about sign-in is said.
        match front.hub.activation_page(token) {
            Ok(Some(_)) => {}
            Ok(None) => return Reply::html(404, page::not_found()),
            Err(e) => {
                log::error!("activation page: {e}");
                return Reply::html(
                    500,
                    page::message(
                        "Something went wrong",
                        "The hub could not read its state; try again in a moment.",
                    ),
                );
            }
        }
        match signin.gate(front.hub.store(), &web, front.access.audit.as_deref()) {
            Ok(Gate::Allowed(p)) => {
                if let Some(refused) = not_the_owner(front, signin, &p, token) {
                    if let Some(a) = &front.access.audit {
                        a.signin(
                            "activate_refused",
                            Some(&p.email),
                            Some(&p.provider),
                            Some("not the box's owner"),
                            req.remote_addr().copied(),
                        );
                    }
                    return refused;
                }
                person = Some((signin, p));
            }
            Ok(Gate::Refused(reply)) => return web_reply(reply),
            Err(e) => {
                log::error!("activation page: {e}");
                return Reply::html(
                    500,
                    page::message(
                        "Something went wrong",
                        "The hub could not read its state; try again in a moment.",
                    ),
                );
            }
        }
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
            let body = match form.take() {
                Some(f) => f,
                None => match read_form(front, req) {
                    Ok(f) => f,
                    Err(reply) => return reply,
                },
            };
            let code = form_value(&body, "code").unwrap_or_default();
            let by = person.as_ref().map(|(_, p)| p.email.as_str());
            let result = front.hub.activate_as(token, &code, by);
            if let Some(audit) = &front.access.audit {
                let page = result.as_ref().ok().and_then(Option::as_ref);
                audit.activation(
                    page.map(|p| p.box_id.as_str()),
                    page.map(|p| p.spoke.as_str()),
                    page.is_some_and(|p| matches!(p.state, super::PageState::Ready { .. })),
                    req.remote_addr().copied(),
                    by,
                );
            }
            result
        }
        _ => return Reply::not_allowed("GET, POST"),
    };
    match result {
        Ok(Some(view)) => match &person {
            // An expired link (past `--auth-ttl`, or its box reaped) is gone for good: 410.
            _ if view.state == super::PageState::Expired => Reply::html(410, page::render(&view)),
            Some((signin, p)) => Reply::html(
                200,
                page::render_with(
                    &view,
                    &signin.who(p, &format!("/auth/{token}")),
                    &super::signin::Signin::csrf_field(p),
                ),
            ),
            None => Reply::html(200, page::render(&view)),
        },
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

pub(crate) fn percent_decode(s: &str) -> String {
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

/// Which `Host` names the front answers (DNS rebinding: a page on an attacker's domain that
/// re-resolves to this hub sends that domain as `Host`). Allowed: any IP literal (a browser
/// sending one is on a page of that very address), `localhost`, and the `--public-url`'s host.
/// Ports are not compared: rebinding changes the name, not the port.
pub(crate) struct Hosts {
    public: String,
}

impl Hosts {
    /// Hosts for a front whose links use `public_url`.
    pub(crate) fn new(public_url: &str) -> Hosts {
        let authority = origin_of(public_url);
        let authority = authority
            .split_once("://")
            .map_or(authority.as_str(), |(_, a)| a);
        Hosts {
            public: host_name(authority),
        }
    }

    /// True when a request naming `host` (a `Host` header value) is served.
    pub(crate) fn allows(&self, host: &str) -> bool {
        let name = host_name(host);
        name == self.public || name == "localhost" || name.parse::<std::net::IpAddr>().is_ok()
    }
}

/// The name of `host[:port]` or `[v6][:port]`, lowercased, without a trailing dot.
fn host_name(authority: &str) -> String {
    let a = authority.trim();
    let a = a.rsplit_once('@').map_or(a, |(_, h)| h);
    let name = if let Some(v6) = a.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        a.split(':').next().unwrap_or("")
    };
    name.trim_end_matches('.').to_ascii_lowercase()
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
    fn hosts_allow_ip_literals_localhost_and_the_public_name_only() {
        let h = Hosts::new("https://Hub.Example:8443/prefix");
        for ok in [
            "hub.example",
            "HUB.example:8443",
            "hub.example.",
            "127.0.0.1:8080",
            "10.1.2.3",
            "[::1]:8080",
            "localhost:3000",
        ] {
            assert!(h.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "hub.example.evil.example",
            "x",
            "localhost.evil.example",
            "",
        ] {
            assert!(!h.allows(bad), "{bad}");
        }
        assert!(Hosts::new("http://hub:8080").allows("hub:8080"));
    }

    #[test]
    fn front_limits_follow_the_descriptor_budget() {
        assert_eq!(FrontLimits::for_descriptors(1000).connections, 500);
        assert_eq!(FrontLimits::for_descriptors(10).connections, 16);
        assert_eq!(
            FrontLimits::for_descriptors(1 << 40).connections,
            MAX_CONNECTIONS_CEILING
        );
        let l = FrontLimits::for_descriptors(1000);
        assert_eq!(l.handlers, l.connections);
    }

    #[test]
    fn body_reservations_stay_within_the_budget() {
        let total = Arc::new(AtomicUsize::new(0));
        let a = BodyReservation::take(&total, 60, 100).expect("fits");
        assert!(BodyReservation::take(&total, 41, 100).is_none());
        let b = BodyReservation::take(&total, 40, 100).expect("fits exactly");
        drop(a);
        drop(b);
        assert_eq!(total.load(Ordering::SeqCst), 0);
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
