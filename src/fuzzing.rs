//! Entry points for the libFuzzer targets in `fuzz/` (only with `--features fuzzing`).
//!
//! Each function hands fuzzer bytes to one crate-internal parser exactly as the code that reads
//! them from outside does, and returns a summary the target can check; none re-implements a
//! parser. What is already public (`util::duration`, `cluster::proto::Frame`,
//! `cluster::serve::handle`, the HTTP front, the spoke plane) the targets call directly.

use std::io::{BufReader, Read};
use std::path::Path;

use serde_json::Value;

use crate::hub::Hub;
use crate::hub::apikeys::Caller;

/// What the Docker response codec made of one response.
#[derive(Debug)]
pub struct DockerResponse {
    /// The status code.
    pub status: u16,
    /// The body, as [`crate::docker::http::read_body_to_end`] collected it.
    pub body: Vec<u8>,
    /// Whether the connection could carry another request.
    pub keep_alive: bool,
}

/// Parses `bytes` as the Engine's answer to a `method` request: head, framing, whole body
/// (bounded by `body_limit`), as the Docker client does.
///
/// # Errors
/// The codec's error, as text.
pub fn docker_response(
    bytes: &[u8],
    method: &str,
    body_limit: usize,
) -> Result<DockerResponse, String> {
    use crate::docker::http;
    let mut r = BufReader::with_capacity(64, bytes);
    let head = http::read_head(&mut r).map_err(|e| e.to_string())?;
    let framing = head.framing(method).map_err(|e| e.to_string())?;
    let mut reader = http::BodyReader::new(r, framing);
    let body = http::read_body_to_end(&mut reader, body_limit).map_err(|e| e.to_string())?;
    Ok(DockerResponse {
        status: head.status,
        body,
        keep_alive: head.keep_alive(),
    })
}

/// Reads the Engine's multiplexed stream (8-byte frame headers) frame by frame through
/// `reader`, as the attach/exec/logs readers do: (stream kind as a number, payload) pairs.
///
/// # Errors
/// The demultiplexer's error, as text.
pub fn docker_frames<R: Read>(reader: &mut R) -> Result<Vec<(u8, Vec<u8>)>, String> {
    let mut out = Vec::new();
    while let Some((kind, payload)) =
        crate::docker::text::read_frame(reader).map_err(|e| e.to_string())?
    {
        out.push((kind as u8, payload));
    }
    Ok(out)
}

/// [`crate::docker::text::demux_all`] over a whole buffer.
///
/// # Errors
/// The demultiplexer's error, as text.
pub fn docker_demux_all(data: &[u8]) -> Result<Vec<u8>, String> {
    crate::docker::text::demux_all(data).map_err(|e| e.to_string())
}

/// Terminal text as the activation flow reads it: ANSI stripped, then the authorize and
/// session URLs, the capped capture and the log tail.
pub fn terminal_text(bytes: &[u8]) -> (String, Vec<(usize, String)>, Option<String>) {
    use crate::docker::text;
    let mut capped = text::CappedBuffer::default();
    capped.push(bytes);
    let _ = capped.finish();
    let clean = text::strip_ansi(bytes);
    let urls = text::authorize_urls(&clean);
    let session = text::session_url(&clean);
    let _ = text::last_lines(&clean, 5);
    (clean, urls, session)
}

/// Parses a state file's bytes as [`crate::store::Store`] does when it loads one.
///
/// # Errors
/// The store's error, as text.
pub fn state_file(bytes: &[u8]) -> Result<crate::store::State, String> {
    crate::store::parse(Path::new("fuzz-state.json"), bytes).map_err(|e| e.to_string())
}

/// The MCP headers of one request, owned.
#[derive(Debug, Clone, Default)]
pub struct McpHeaders {
    /// `MCP-Protocol-Version`.
    pub protocol_version: Option<String>,
    /// `Mcp-Method`.
    pub method: Option<String>,
    /// `Mcp-Name`.
    pub name: Option<String>,
}

/// Dispatches one `/mcp` POST body through the JSON-RPC envelope and the hub's real tools, as
/// the HTTP front does for `caller`: the HTTP status and the JSON body (`None`: 202).
pub fn mcp(hub: &Hub, caller: &Caller, body: &[u8], headers: &McpHeaders) -> (u16, Option<Value>) {
    use crate::hub::mcp;
    let headers = mcp::McpHeaders {
        protocol_version: headers.protocol_version.as_deref(),
        method: headers.method.as_deref(),
        name: headers.name.as_deref(),
    };
    let tools = crate::hub::tools::HubTools {
        hub,
        caller,
        audit: None,
    };
    let info = mcp::ServerInfo {
        name: "llmbox".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        instructions: "fuzz".into(),
    };
    let reply = mcp::handle(body, &headers, &tools, &info);
    (reply.status, reply.body)
}

/// What an ID token must say, for [`id_token`].
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    /// Issuer.
    pub issuer: &'a str,
    /// Client id.
    pub client_id: &'a str,
    /// Nonce of the sign-in.
    pub nonce: &'a str,
    /// Now, unix seconds.
    pub now: i64,
}

/// Parses `jwks` as a provider's key set and checks `token` against it, as the sign-in
/// callback does: the verified, lowercased email.
///
/// # Errors
/// The key set's parse error or the token's [`crate::hub::signin::jwt::JwtError`], as text.
pub fn id_token(token: &str, jwks: &[u8], want: &Expected<'_>) -> Result<String, String> {
    use crate::hub::signin::jwt;
    let keys: jwt::Jwks = serde_json::from_slice(jwks).map_err(|e| format!("jwks: {e}"))?;
    let want = jwt::Expected {
        issuer: want.issuer,
        client_id: want.client_id,
        nonce: want.nonce,
        now: want.now,
    };
    jwt::verify(token, &keys, &want)
        .map(|id| id.email)
        .map_err(|e| e.to_string())
}

/// Decodes `frame`'s payload as every type a peer's frame carries (the enroll and welcome
/// payloads, each verb's request and answer), as the plane, the spoke link and the hub's remote
/// spokes do; and a create request on into its options. How many decoded.
pub fn frame_payloads(frame: &crate::cluster::proto::Frame) -> usize {
    use crate::cluster::proto as p;
    let ok = |r: Result<(), serde_json::Error>| usize::from(r.is_ok());
    let mut n = 0;
    n += ok(frame.payload_as::<p::EnrollPayload>().map(drop));
    n += ok(frame.payload_as::<p::WelcomePayload>().map(drop));
    if let Ok(req) = frame.payload_as::<p::CreateReq>() {
        n += 1;
        let _ = req.opts.into_options();
    }
    n += ok(frame.payload_as::<p::CreateResp>().map(drop));
    n += ok(frame.payload_as::<p::SubmitReq>().map(drop));
    n += ok(frame.payload_as::<p::SubmitResp>().map(drop));
    n += ok(frame.payload_as::<p::ListResp>().map(drop));
    n += ok(frame.payload_as::<p::TargetReq>().map(drop));
    n += ok(frame.payload_as::<p::LogsReq>().map(drop));
    n += ok(frame.payload_as::<p::LogsResp>().map(drop));
    n += ok(frame.payload_as::<p::ExecReq>().map(drop));
    n += ok(frame.payload_as::<crate::boxes::ExecResult>().map(drop));
    n += ok(frame.payload_as::<p::ReapReq>().map(drop));
    n += ok(frame.payload_as::<p::ReapResp>().map(drop));
    n
}

/// Parses `args` as the flags of `llmbox <command>` (`hub`, `spoke`, `reap`, `apikey`) as
/// `main` does, then checks them as the command does before it starts anything (`hub` and
/// `reap`: every flag's value; `spoke`: its `--hub` URL). `Ok(true)` when they are accepted,
/// `Ok(false)` when argh printed help; the refusal otherwise.
///
/// # Errors
/// argh's or the command's message.
pub fn command_flags(command: &str, args: &[&str]) -> Result<bool, String> {
    use crate::cli;
    use argh::FromArgs;
    let name = format!("llmbox {command}");
    let refused = |e: argh::EarlyExit| {
        if e.status.is_ok() {
            Ok(false)
        } else {
            Err(e.output)
        }
    };
    match command {
        "hub" => match cli::hub::Args::from_args(&[&name], args) {
            Ok(a) => cli::hub::Config::from_args(&a)
                .map(|_| true)
                .map_err(|e| e.message),
            Err(e) => refused(e),
        },
        "reap" => match cli::reap::Args::from_args(&[&name], args) {
            Ok(a) => cli::reap::Config::from_args(&a)
                .map(|_| true)
                .map_err(|e| e.message),
            Err(e) => refused(e),
        },
        "spoke" => match cli::spoke::Args::from_args(&[&name], args) {
            Ok(a) => match &a.hub {
                Some(hub) => crate::cluster::spoke::parse_hub_url(hub)
                    .map(|_| true)
                    .map_err(|e| e.to_string()),
                None => Ok(true),
            },
            Err(e) => refused(e),
        },
        _ => match cli::apikey::Args::from_args(&[&name], args) {
            Ok(_) => Ok(true),
            Err(e) => refused(e),
        },
    }
}
