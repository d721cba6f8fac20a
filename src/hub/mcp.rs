//! MCP over JSON-RPC, sans IO: a request body and three headers in, an HTTP status and a JSON
//! body (or none, for 202) out. No sockets here; [`super::http`] moves the bytes.
//!
//! Two eras share one endpoint (notes/mcp.md §1):
//! - the handshake era: `initialize` negotiates one of [`HANDSHAKE_VERSIONS`] (an unknown
//!   version is answered with our newest, never an error); later requests carry
//!   `MCP-Protocol-Version` (absent means 2025-03-26, unknown is 400); batches only in
//!   2025-03-26; JSON-RPC errors to a well-formed request travel with HTTP 200.
//! - the stateless 2026-07-28 era: a request whose `params._meta` names a protocol version (or
//!   `server/discover`) is served on its own; the version, `MCP-Protocol-Version`, `Mcp-Method`
//!   and, for `tools/call`, `Mcp-Name` must agree (else 400 `-32020`); an unsupported version
//!   is 400 `-32022`; results carry `resultType` and `_meta` server info.
//!
//! Ids are echoed with their JSON type. Notifications and responses get 202 with no body.

use serde_json::{Map, Value, json};

/// Handshake-era versions, newest first.
pub(crate) const HANDSHAKE_VERSIONS: [&str; 4] =
    ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];
/// The stateless era's version.
pub(crate) const MODERN_VERSION: &str = "2026-07-28";
/// Assumed when a handshake-era request carries no `MCP-Protocol-Version`.
pub(crate) const DEFAULT_VERSION: &str = "2025-03-26";
/// The only version that allows JSON-RPC batches.
pub(crate) const BATCH_VERSION: &str = "2025-03-26";
/// Most requests in one batch: a batch costs its sender one body but the hub one answer per
/// item (89,230 `tools/list` in a 4 MiB body were a 696 MB answer).
pub(crate) const MAX_BATCH_ITEMS: usize = 64;
/// Most bytes of answers one batch collects; items answered past it get an error instead.
pub(crate) const MAX_BATCH_RESPONSE_BYTES: usize = 4 << 20;
/// How long a modern client may cache `server/discover` and `tools/list` (they never change
/// while the hub runs).
pub(crate) const LIST_TTL_MS: u64 = 300_000;

/// The `_meta` key holding a modern request's protocol version.
const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// The `_meta` key of the server stamp on modern results.
const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";

/// JSON-RPC and MCP error codes used here.
pub(crate) mod code {
    /// Invalid JSON.
    pub(crate) const PARSE_ERROR: i64 = -32700;
    /// Not a valid JSON-RPC request.
    pub(crate) const INVALID_REQUEST: i64 = -32600;
    /// Unknown method.
    pub(crate) const METHOD_NOT_FOUND: i64 = -32601;
    /// Bad params (including an unknown tool).
    pub(crate) const INVALID_PARAMS: i64 = -32602;
    /// A 2026 header disagrees with the body (or is missing).
    pub(crate) const HEADER_MISMATCH: i64 = -32020;
    /// A 2026 request names a version this server does not speak.
    pub(crate) const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
}

/// The MCP headers of one HTTP request.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct McpHeaders<'a> {
    /// `MCP-Protocol-Version`.
    pub(crate) protocol_version: Option<&'a str>,
    /// `Mcp-Method` (2026).
    pub(crate) method: Option<&'a str>,
    /// `Mcp-Name` (2026, `tools/call`).
    pub(crate) name: Option<&'a str>,
}

/// What to answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct McpReply {
    /// HTTP status.
    pub(crate) status: u16,
    /// JSON body; `None` means 202 with no body.
    pub(crate) body: Option<Value>,
}

/// A tool call's result as the tool layer produces it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ToolOutcome {
    /// `structuredContent`.
    pub(crate) structured: Value,
    /// `isError`.
    pub(crate) is_error: bool,
    /// The text content: the structured JSON, or for an error the sentence itself.
    pub(crate) text: String,
}

/// The tools behind the dispatcher.
pub(crate) trait ToolHost {
    /// Tool definitions for `tools/list`.
    fn tools(&self) -> Vec<Value>;
    /// Runs tool `name`; `None` when no such tool exists.
    fn call(&self, name: &str, arguments: &Map<String, Value>) -> Option<ToolOutcome>;
}

/// Who the server is.
#[derive(Debug, Clone)]
pub(crate) struct ServerInfo {
    /// `serverInfo.name`.
    pub(crate) name: String,
    /// `serverInfo.version`.
    pub(crate) version: String,
    /// `instructions` for the model.
    pub(crate) instructions: String,
}

/// A JSON-RPC failure: HTTP status, code, message, optional data.
struct Failure {
    status: u16,
    code: i64,
    message: String,
    data: Option<Value>,
}

fn fail(status: u16, code: i64, message: impl Into<String>) -> Failure {
    Failure {
        status,
        code,
        message: message.into(),
        data: None,
    }
}

fn error_body(id: Option<&Value>, f: &Failure) -> Value {
    let mut error = json!({"code": f.code, "message": f.message});
    if let Some(data) = &f.data {
        error["data"] = data.clone();
    }
    let mut body = json!({"jsonrpc": "2.0", "error": error});
    if let Some(id) = id {
        body["id"] = id.clone();
    }
    body
}

fn reply_error(id: Option<&Value>, f: Failure) -> McpReply {
    McpReply {
        status: f.status,
        body: Some(error_body(id, &f)),
    }
}

/// Dispatches one POST body.
pub(crate) fn handle(
    body: &[u8],
    headers: &McpHeaders<'_>,
    host: &dyn ToolHost,
    info: &ServerInfo,
) -> McpReply {
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return reply_error(
                None,
                fail(400, code::PARSE_ERROR, format!("parse error: {e}")),
            );
        }
    };
    match value {
        Value::Array(items) => {
            let version = headers.protocol_version.unwrap_or(DEFAULT_VERSION);
            if version != BATCH_VERSION {
                return reply_error(
                    None,
                    fail(
                        400,
                        code::INVALID_REQUEST,
                        format!(
                            "invalid request: JSON-RPC batches are allowed only in protocol {BATCH_VERSION}, not {version}"
                        ),
                    ),
                );
            }
            if items.is_empty() {
                return reply_error(
                    None,
                    fail(400, code::INVALID_REQUEST, "invalid request: empty batch"),
                );
            }
            if items.len() > MAX_BATCH_ITEMS {
                return reply_error(
                    None,
                    fail(
                        400,
                        code::INVALID_REQUEST,
                        format!(
                            "invalid request: a batch holds at most {MAX_BATCH_ITEMS} requests, not {}",
                            items.len()
                        ),
                    ),
                );
            }
            let mut bytes = 0usize;
            let answers: Vec<Value> = items
                .into_iter()
                .filter_map(|item| {
                    let answer = match one(item, headers, host, info, true) {
                        Answer::None => return None,
                        Answer::Result(id, result) => {
                            json!({"jsonrpc": "2.0", "id": id, "result": result})
                        }
                        Answer::Error(id, f) => error_body(id.as_ref(), &f),
                    };
                    bytes = bytes.saturating_add(answer.to_string().len());
                    if bytes <= MAX_BATCH_RESPONSE_BYTES {
                        return Some(answer);
                    }
                    let too_big = fail(
                        200,
                        code::INVALID_REQUEST,
                        format!(
                            "the batch's answers passed {MAX_BATCH_RESPONSE_BYTES} bytes; send this request on its own"
                        ),
                    );
                    Some(error_body(answer.get("id"), &too_big))
                })
                .collect();
            if answers.is_empty() {
                McpReply {
                    status: 202,
                    body: None,
                }
            } else {
                McpReply {
                    status: 200,
                    body: Some(Value::Array(answers)),
                }
            }
        }
        other => match one(other, headers, host, info, false) {
            Answer::None => McpReply {
                status: 202,
                body: None,
            },
            Answer::Result(id, result) => McpReply {
                status: 200,
                body: Some(json!({"jsonrpc": "2.0", "id": id, "result": result})),
            },
            Answer::Error(id, f) => reply_error(id.as_ref(), f),
        },
    }
}

enum Answer {
    /// A notification or a response: nothing to send back.
    None,
    Result(Value, Value),
    Error(Option<Value>, Failure),
}

fn valid_id(id: &Value) -> bool {
    id.is_string() || id.is_i64() || id.is_u64()
}

fn one(
    msg: Value,
    headers: &McpHeaders<'_>,
    host: &dyn ToolHost,
    info: &ServerInfo,
    in_batch: bool,
) -> Answer {
    let Value::Object(obj) = msg else {
        return Answer::Error(
            None,
            fail(
                400,
                code::INVALID_REQUEST,
                "invalid request: expected a JSON-RPC object",
            ),
        );
    };
    let id = obj.get("id").filter(|id| valid_id(id)).cloned();
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Answer::Error(
            id,
            fail(
                400,
                code::INVALID_REQUEST,
                "invalid request: \"jsonrpc\" must be \"2.0\"",
            ),
        );
    }
    let Some(method_value) = obj.get("method") else {
        // A response to something we never sent (we send no requests): accept and ignore.
        if obj.contains_key("id") && (obj.contains_key("result") || obj.contains_key("error")) {
            return Answer::None;
        }
        return Answer::Error(
            id,
            fail(400, code::INVALID_REQUEST, "invalid request: no \"method\""),
        );
    };
    let Some(method) = method_value.as_str() else {
        return Answer::Error(
            id,
            fail(
                400,
                code::INVALID_REQUEST,
                "invalid request: \"method\" must be a string",
            ),
        );
    };
    let Some(raw_id) = obj.get("id") else {
        // Notifications (`notifications/initialized`, `notifications/cancelled`, …) need no answer.
        return Answer::None;
    };
    let Some(id) = id else {
        return Answer::Error(
            None,
            fail(
                400,
                code::INVALID_REQUEST,
                format!("invalid request: id must be a string or an integer, not {raw_id}"),
            ),
        );
    };
    let params = match obj.get("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p.clone(),
        Some(_) => {
            return Answer::Error(
                Some(id),
                fail(
                    200,
                    code::INVALID_PARAMS,
                    "invalid params: \"params\" must be an object",
                ),
            );
        }
    };
    let meta_version = params
        .get("_meta")
        .and_then(|m| m.get(META_VERSION))
        .and_then(Value::as_str);
    let modern = method != "initialize"
        && !in_batch
        && (meta_version.is_some()
            || method == "server/discover"
            || headers.protocol_version == Some(MODERN_VERSION));
    let result = if modern {
        modern_call(method, meta_version, &params, headers, host, info)
    } else {
        legacy_call(method, &params, headers, host, info)
    };
    match result {
        Ok(r) => Answer::Result(id, r),
        Err(f) => Answer::Error(Some(id), f),
    }
}

fn legacy_call(
    method: &str,
    params: &Map<String, Value>,
    headers: &McpHeaders<'_>,
    host: &dyn ToolHost,
    info: &ServerInfo,
) -> Result<Value, Failure> {
    if method != "initialize"
        && let Some(v) = headers.protocol_version
        && !HANDSHAKE_VERSIONS.contains(&v)
    {
        return Err(fail(
            400,
            code::INVALID_REQUEST,
            format!(
                "bad request: unsupported MCP-Protocol-Version {v:?}; supported: {}",
                HANDSHAKE_VERSIONS.join(", ")
            ),
        ));
    }
    match method {
        "initialize" => {
            let asked = params.get("protocolVersion").and_then(Value::as_str);
            let version = asked
                .filter(|v| HANDSHAKE_VERSIONS.contains(v))
                .unwrap_or(HANDSHAKE_VERSIONS[0]);
            Ok(json!({
                "protocolVersion": version,
                "capabilities": {"tools": {"listChanged": false}},
                "serverInfo": server_info(info),
                "instructions": info.instructions,
            }))
        }
        "ping" => Ok(json!({})),
        "tools/list" => Ok(json!({"tools": host.tools()})),
        "tools/call" => call_tool(params, host),
        other => Err(fail(
            200,
            code::METHOD_NOT_FOUND,
            format!("method not found: {other}"),
        )),
    }
}

fn server_info(info: &ServerInfo) -> Value {
    json!({"name": info.name, "title": "llmbox", "version": info.version})
}

fn call_tool(params: &Map<String, Value>, host: &dyn ToolHost) -> Result<Value, Failure> {
    let Some(name) = params.get("name").and_then(Value::as_str) else {
        return Err(fail(
            200,
            code::INVALID_PARAMS,
            "invalid params: tools/call needs a string \"name\"",
        ));
    };
    let empty = Map::new();
    let arguments = match params.get("arguments") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(a)) => a,
        Some(_) => {
            return Err(fail(
                200,
                code::INVALID_PARAMS,
                "invalid params: \"arguments\" must be an object",
            ));
        }
    };
    let Some(outcome) = host.call(name, arguments) else {
        return Err(fail(
            200,
            code::INVALID_PARAMS,
            format!("unknown tool: {name}"),
        ));
    };
    Ok(json!({
        "content": [{"type": "text", "text": outcome.text}],
        "structuredContent": outcome.structured,
        "isError": outcome.is_error,
    }))
}

fn all_versions() -> Vec<&'static str> {
    let mut v = vec![MODERN_VERSION];
    v.extend(HANDSHAKE_VERSIONS);
    v
}

fn modern_call(
    method: &str,
    meta_version: Option<&str>,
    params: &Map<String, Value>,
    headers: &McpHeaders<'_>,
    host: &dyn ToolHost,
    info: &ServerInfo,
) -> Result<Value, Failure> {
    let Some(version) = meta_version.or(headers.protocol_version) else {
        return Err(fail(
            400,
            code::INVALID_PARAMS,
            format!("invalid params: _meta[\"{META_VERSION}\"] is required"),
        ));
    };
    let mismatch = |what: &str| {
        fail(
            400,
            code::HEADER_MISMATCH,
            format!("header mismatch: {what}"),
        )
    };
    // Header and body disagreeing is the problem to name, even when one of them is a version
    // this server speaks only in the handshake era.
    if let (Some(h), Some(m)) = (headers.protocol_version, meta_version)
        && h != m
    {
        return Err(mismatch(&format!(
            "MCP-Protocol-Version {h:?} differs from the body's {m:?}"
        )));
    }
    if version != MODERN_VERSION {
        let mut f = fail(
            400,
            code::UNSUPPORTED_PROTOCOL_VERSION,
            format!("unsupported protocol version {version:?}"),
        );
        f.data = Some(json!({"supported": all_versions(), "requested": version}));
        return Err(f);
    }
    if headers.protocol_version.is_none() {
        return Err(mismatch("MCP-Protocol-Version header is missing"));
    }
    if meta_version.is_none() {
        return Err(mismatch(&format!(
            "the body lacks _meta[\"{META_VERSION}\"]"
        )));
    }
    match headers.method {
        Some(m) if m == method => {}
        Some(m) => {
            return Err(mismatch(&format!(
                "Mcp-Method {m:?} differs from the body's {method:?}"
            )));
        }
        None => return Err(mismatch("Mcp-Method header is missing")),
    }
    let stamp = json!({META_SERVER_INFO: server_info(info)});
    let mut result = match method {
        "server/discover" => json!({
            "supportedVersions": all_versions(),
            "capabilities": {"tools": {"listChanged": false}},
            "serverInfo": server_info(info),
            "instructions": info.instructions,
            "ttlMs": LIST_TTL_MS,
            "cacheScope": "public",
        }),
        "tools/list" => {
            json!({"tools": host.tools(), "ttlMs": LIST_TTL_MS, "cacheScope": "public"})
        }
        "tools/call" => {
            let name = params.get("name").and_then(Value::as_str);
            match (headers.name, name) {
                (Some(h), Some(n)) if h == n => {}
                (None, _) => return Err(mismatch("Mcp-Name header is missing")),
                (Some(h), Some(n)) => {
                    return Err(mismatch(&format!(
                        "Mcp-Name {h:?} differs from the body's {n:?}"
                    )));
                }
                (Some(h), None) => {
                    return Err(mismatch(&format!(
                        "Mcp-Name is {h:?} but the body names no tool (params.name)"
                    )));
                }
            }
            call_tool(params, host)?
        }
        other => {
            return Err(fail(
                404,
                code::METHOD_NOT_FOUND,
                format!("method not found: {other}"),
            ));
        }
    };
    result["resultType"] = json!("complete");
    result["_meta"] = stamp;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::seeded::SeededRng;

    struct Echo;

    impl ToolHost for Echo {
        fn tools(&self) -> Vec<Value> {
            vec![json!({"name": "echo", "inputSchema": {"type": "object"}})]
        }

        fn call(&self, name: &str, arguments: &Map<String, Value>) -> Option<ToolOutcome> {
            (name == "echo").then(|| ToolOutcome {
                structured: Value::Object(arguments.clone()),
                is_error: arguments.contains_key("fail"),
                text: "echoed".into(),
            })
        }
    }

    fn info() -> ServerInfo {
        ServerInfo {
            name: "llmbox".into(),
            version: "0".into(),
            instructions: "use it".into(),
        }
    }

    fn run(body: &str, headers: McpHeaders<'_>) -> McpReply {
        handle(body.as_bytes(), &headers, &Echo, &info())
    }

    fn legacy(body: &str) -> McpReply {
        run(body, McpHeaders::default())
    }

    fn modern_headers<'a>(method: &'a str, name: Option<&'a str>) -> McpHeaders<'a> {
        McpHeaders {
            protocol_version: Some(MODERN_VERSION),
            method: Some(method),
            name,
        }
    }

    fn error_code(reply: &McpReply) -> i64 {
        reply.body.as_ref().expect("body")["error"]["code"]
            .as_i64()
            .expect("code")
    }

    #[test]
    fn initialize_echoes_known_versions_and_counters_unknown_ones() {
        for (asked, want) in [
            ("2025-11-25", "2025-11-25"),
            ("2025-06-18", "2025-06-18"),
            ("2025-03-26", "2025-03-26"),
            ("2024-11-05", "2024-11-05"),
            ("1999-01-01", "2025-11-25"),
            ("2026-07-28", "2025-11-25"),
        ] {
            let r = legacy(&format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"protocolVersion":"{asked}","capabilities":{{}},"clientInfo":{{"name":"t","version":"1"}}}}}}"#
            ));
            assert_eq!(r.status, 200);
            let result = &r.body.expect("body")["result"];
            assert_eq!(result["protocolVersion"], want, "{asked}");
            assert_eq!(result["capabilities"]["tools"]["listChanged"], false);
            assert_eq!(result["serverInfo"]["name"], "llmbox");
        }
    }

    #[test]
    fn ids_are_echoed_with_their_type() {
        for id in [r#""1""#, "1", r#""abc""#, "0", "9007199254740993"] {
            let r = legacy(&format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#));
            let body = r.body.expect("body");
            assert_eq!(
                body["id"],
                serde_json::from_str::<Value>(id).expect("id"),
                "{id}"
            );
            assert_eq!(body["result"], json!({}));
        }
    }

    #[test]
    fn bad_ids_are_invalid_requests_without_an_id() {
        for id in ["null", "1.5", "true", "[1]", "{}"] {
            let r = legacy(&format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#));
            assert_eq!(r.status, 400, "{id}");
            assert_eq!(error_code(&r), code::INVALID_REQUEST);
            assert!(r.body.expect("body").get("id").is_none(), "{id}");
        }
    }

    #[test]
    fn params_null_and_missing_are_the_same_but_wrong_types_are_invalid() {
        for params in ["", r#","params":null"#, r#","params":{}"#] {
            let r = legacy(&format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/list"{params}}}"#
            ));
            assert_eq!(r.status, 200, "{params}");
            assert_eq!(r.body.expect("body")["result"]["tools"][0]["name"], "echo");
        }
        for params in [r#","params":[]"#, r#","params":"x""#, r#","params":3"#] {
            let r = legacy(&format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/list"{params}}}"#
            ));
            assert_eq!(
                (r.status, error_code(&r)),
                (200, code::INVALID_PARAMS),
                "{params}"
            );
        }
    }

    #[test]
    fn tool_calls_take_null_or_missing_arguments_and_reject_other_shapes() {
        for args in ["", r#","arguments":null"#, r#","arguments":{}"#] {
            let r = legacy(&format!(
                r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"echo"{args}}}}}"#
            ));
            let result = &r.body.expect("body")["result"];
            assert_eq!(result["isError"], false, "{args}");
            assert_eq!(result["structuredContent"], json!({}));
            assert_eq!(result["content"][0]["text"], "echoed");
        }
        let r = legacy(
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":[1]}}"#,
        );
        assert_eq!(error_code(&r), code::INVALID_PARAMS);
        let r =
            legacy(r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"nope"}}"#);
        assert_eq!((r.status, error_code(&r)), (200, code::INVALID_PARAMS));
        let r =
            legacy(r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"arguments":{}}}"#);
        assert_eq!(error_code(&r), code::INVALID_PARAMS);
        let r = legacy(
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"fail":1}}}"#,
        );
        assert_eq!(r.body.expect("body")["result"]["isError"], true);
    }

    #[test]
    fn malformed_and_invalid_messages() {
        let cases: &[(&str, u16, i64)] = &[
            ("{", 400, code::PARSE_ERROR),
            ("", 400, code::PARSE_ERROR),
            ("42", 400, code::INVALID_REQUEST),
            (r#"{"id":1,"method":"ping"}"#, 400, code::INVALID_REQUEST),
            (
                r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
                400,
                code::INVALID_REQUEST,
            ),
            (r#"{"jsonrpc":"2.0","id":1}"#, 400, code::INVALID_REQUEST),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":5}"#,
                400,
                code::INVALID_REQUEST,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"resources/list"}"#,
                200,
                code::METHOD_NOT_FOUND,
            ),
        ];
        for (body, status, code) in cases {
            let r = legacy(body);
            assert_eq!((r.status, error_code(&r)), (*status, *code), "{body}");
        }
    }

    #[test]
    fn notifications_and_responses_get_202_without_body() {
        for body in [
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}"#,
            r#"{"jsonrpc":"2.0","method":"no/such/notification"}"#,
            r#"{"jsonrpc":"2.0","id":5,"result":{}}"#,
        ] {
            assert_eq!(
                legacy(body),
                McpReply {
                    status: 202,
                    body: None
                },
                "{body}"
            );
        }
    }

    #[test]
    fn batches_only_in_2025_03_26() {
        let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":"b","method":"nope"}]"#;
        let r = legacy(batch);
        assert_eq!(r.status, 200);
        let answers = r.body.expect("body");
        assert_eq!(answers.as_array().expect("array").len(), 2);
        assert_eq!(answers[0]["id"], 1);
        assert_eq!(answers[1]["id"], "b");
        assert_eq!(answers[1]["error"]["code"], code::METHOD_NOT_FOUND);
        let only_notes = r#"[{"jsonrpc":"2.0","method":"notifications/initialized"}]"#;
        assert_eq!(legacy(only_notes).status, 202);
        for v in ["2025-06-18", "2025-11-25"] {
            let r = run(
                batch,
                McpHeaders {
                    protocol_version: Some(v),
                    ..Default::default()
                },
            );
            assert_eq!(
                (r.status, error_code(&r)),
                (400, code::INVALID_REQUEST),
                "{v}"
            );
        }
        assert_eq!(error_code(&legacy("[]")), code::INVALID_REQUEST);
    }

    #[test]
    fn batches_are_bounded_in_items() {
        let item = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
        let batch = |n: usize| format!("[{}]", vec![item; n].join(","));
        let r = legacy(&batch(MAX_BATCH_ITEMS));
        assert_eq!(r.status, 200);
        let answers = r.body.expect("body");
        assert_eq!(answers.as_array().expect("array").len(), MAX_BATCH_ITEMS);
        assert!(answers[0]["result"]["tools"].is_array());
        let r = legacy(&batch(MAX_BATCH_ITEMS + 1));
        assert_eq!((r.status, error_code(&r)), (400, code::INVALID_REQUEST));
    }

    #[test]
    fn unknown_protocol_header_is_400_but_not_on_initialize() {
        let h = McpHeaders {
            protocol_version: Some("2030-01-01"),
            ..Default::default()
        };
        let r = run(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#, h);
        assert_eq!(r.status, 400);
        let r = run(
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25"}}"#,
            h,
        );
        assert_eq!(r.status, 200);
    }

    fn modern_body(method: &str, version: &str, extra: &str) -> String {
        format!(
            r#"{{"jsonrpc":"2.0","id":"m1","method":"{method}","params":{{"_meta":{{"io.modelcontextprotocol/protocolVersion":"{version}","io.modelcontextprotocol/clientCapabilities":{{}}}}{extra}}}}}"#
        )
    }

    #[test]
    fn modern_discover_list_and_call_carry_result_type_and_server_info() {
        let r = run(
            &modern_body("server/discover", MODERN_VERSION, ""),
            modern_headers("server/discover", None),
        );
        assert_eq!(r.status, 200);
        let result = &r.body.expect("body")["result"];
        assert_eq!(result["resultType"], "complete");
        assert!(
            result["supportedVersions"]
                .as_array()
                .expect("list")
                .contains(&json!(MODERN_VERSION))
        );
        assert_eq!(result["cacheScope"], "public");
        assert_eq!(
            result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
            "llmbox"
        );
        let r = run(
            &modern_body("tools/list", MODERN_VERSION, ""),
            modern_headers("tools/list", None),
        );
        let result = &r.body.expect("body")["result"];
        assert_eq!(result["tools"][0]["name"], "echo");
        assert!(result["ttlMs"].is_u64());
        let r = run(
            &modern_body(
                "tools/call",
                MODERN_VERSION,
                r#","name":"echo","arguments":{"a":1}"#,
            ),
            modern_headers("tools/call", Some("echo")),
        );
        let body = r.body.expect("body");
        assert_eq!(body["id"], "m1");
        assert_eq!(body["result"]["structuredContent"]["a"], 1);
        assert_eq!(body["result"]["resultType"], "complete");
    }

    #[test]
    fn modern_header_rules() {
        let list = modern_body("tools/list", MODERN_VERSION, "");
        let cases: Vec<(McpHeaders<'_>, &str, i64)> = vec![
            (
                McpHeaders {
                    protocol_version: None,
                    method: Some("tools/list"),
                    name: None,
                },
                "missing version header",
                code::HEADER_MISMATCH,
            ),
            (
                McpHeaders {
                    protocol_version: Some("2025-11-25"),
                    method: Some("tools/list"),
                    name: None,
                },
                "header differs",
                code::HEADER_MISMATCH,
            ),
            (
                McpHeaders {
                    protocol_version: Some(MODERN_VERSION),
                    method: None,
                    name: None,
                },
                "missing Mcp-Method",
                code::HEADER_MISMATCH,
            ),
            (
                McpHeaders {
                    protocol_version: Some(MODERN_VERSION),
                    method: Some("tools/call"),
                    name: None,
                },
                "Mcp-Method differs",
                code::HEADER_MISMATCH,
            ),
        ];
        // The body names a handshake-era version, the header the stateless one: a mismatch,
        // not an "unsupported" version (the server does speak 2025-11-25).
        let r = run(
            &modern_body("tools/list", "2025-11-25", ""),
            modern_headers("tools/list", None),
        );
        assert_eq!((r.status, error_code(&r)), (400, code::HEADER_MISMATCH));
        let r = run(
            &modern_body("tools/call", MODERN_VERSION, ""),
            modern_headers("tools/call", Some("echo")),
        );
        let message = r.body.expect("body")["error"]["message"].to_string();
        assert!(
            message.contains("names no tool") && !message.contains("None"),
            "{message}"
        );
        for (headers, what, want) in cases {
            let r = run(&list, headers);
            assert_eq!((r.status, error_code(&r)), (400, want), "{what}");
        }
        let call = modern_body("tools/call", MODERN_VERSION, r#","name":"echo""#);
        for name in [None, Some("other")] {
            let r = run(&call, modern_headers("tools/call", name));
            assert_eq!(
                (r.status, error_code(&r)),
                (400, code::HEADER_MISMATCH),
                "{name:?}"
            );
        }
    }

    #[test]
    fn modern_unsupported_version_names_the_supported_ones() {
        let r = run(
            &modern_body("server/discover", "2099-01-01", ""),
            McpHeaders {
                protocol_version: Some("2099-01-01"),
                method: Some("server/discover"),
                name: None,
            },
        );
        assert_eq!(
            (r.status, error_code(&r)),
            (400, code::UNSUPPORTED_PROTOCOL_VERSION)
        );
        let data = &r.body.expect("body")["error"]["data"];
        assert_eq!(data["requested"], "2099-01-01");
        assert!(
            data["supported"]
                .as_array()
                .expect("list")
                .contains(&json!("2025-11-25"))
        );
    }

    #[test]
    fn modern_unknown_method_is_404() {
        let r = run(
            &modern_body("ping", MODERN_VERSION, ""),
            modern_headers("ping", None),
        );
        assert_eq!((r.status, error_code(&r)), (404, code::METHOD_NOT_FOUND));
    }

    fn any_value(rng: &mut SeededRng, depth: u32) -> Value {
        let scalars = [
            json!(null),
            json!(true),
            json!(0),
            json!(-1),
            json!(1.5),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(""),
            json!("2.0"),
            json!("tools/call"),
            json!("echo"),
            json!(MODERN_VERSION),
            json!("2025-03-26"),
            json!("é\u{0}\u{fffd}"),
        ];
        match rng.next_u64() % 8 {
            0 if depth < 4 => Value::Array(
                (0..rng.next_u64() % 4)
                    .map(|_| any_value(rng, depth + 1))
                    .collect(),
            ),
            1 | 2 if depth < 4 => {
                let keys = [
                    "jsonrpc",
                    "id",
                    "method",
                    "params",
                    "name",
                    "arguments",
                    "_meta",
                    META_VERSION,
                    "protocolVersion",
                    "result",
                    "error",
                    "fail",
                ];
                let mut map = Map::new();
                for _ in 0..rng.next_u64() % 6 {
                    map.insert(rng.pick(&keys).to_string(), any_value(rng, depth + 1));
                }
                Value::Object(map)
            }
            _ => rng.pick(&scalars).clone(),
        }
    }

    /// A message that is usually close to valid, so the deeper branches are reached too.
    fn near_valid(rng: &mut SeededRng) -> Value {
        let methods = [
            "initialize",
            "ping",
            "tools/list",
            "tools/call",
            "server/discover",
            "nope",
        ];
        let mut msg = json!({"jsonrpc": "2.0", "method": *rng.pick(&methods)});
        if !rng.one_in(4) {
            msg["id"] = any_value(rng, 3);
        }
        let mut params = json!({"name": "echo", "arguments": any_value(rng, 2)});
        if rng.one_in(2) {
            params["_meta"] = json!({META_VERSION: any_value(rng, 3)});
        }
        msg["params"] = if rng.one_in(5) {
            any_value(rng, 1)
        } else {
            params
        };
        if rng.one_in(6) {
            msg.as_object_mut()
                .expect("object")
                .remove(*rng.pick(&["jsonrpc", "method"]));
        }
        msg
    }

    #[test]
    fn random_messages_get_well_formed_answers_and_never_panic() {
        let versions = [
            None,
            Some(MODERN_VERSION),
            Some("2025-03-26"),
            Some("2025-06-18"),
            Some("x"),
        ];
        let methods = [
            None,
            Some("tools/call"),
            Some("tools/list"),
            Some("server/discover"),
        ];
        for seed in 1..=3000u64 {
            let mut rng = SeededRng::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let value = match rng.next_u64() % 4 {
                0 => any_value(&mut rng, 0),
                1 => Value::Array(
                    (0..rng.next_u64() % 4)
                        .map(|_| near_valid(&mut rng))
                        .collect(),
                ),
                _ => near_valid(&mut rng),
            };
            let mut body = value.to_string().into_bytes();
            if rng.one_in(5) && !body.is_empty() {
                // Byte damage: a cut, or a flipped byte.
                let at = (rng.next_u64() % body.len() as u64) as usize;
                if rng.one_in(2) {
                    body.truncate(at);
                } else {
                    body[at] ^= (rng.next_u64() % 255 + 1) as u8;
                }
            }
            let headers = McpHeaders {
                protocol_version: *rng.pick(&versions),
                method: *rng.pick(&methods),
                name: *rng.pick(&[None, Some("echo"), Some("other")]),
            };
            let reply = handle(&body, &headers, &Echo, &info());
            let shown = String::from_utf8_lossy(&body);
            assert!(
                [200, 202, 400, 404].contains(&reply.status),
                "seed {seed}: status {} for {shown}",
                reply.status
            );
            let Some(answer) = reply.body else {
                assert_eq!(reply.status, 202, "seed {seed}: no body for {shown}");
                continue;
            };
            let answers = match answer {
                Value::Array(items) => items,
                one => vec![one],
            };
            for a in answers {
                assert_eq!(a["jsonrpc"], "2.0", "seed {seed}: {a} for {shown}");
                assert!(
                    a.get("result").is_some() != a.get("error").is_some(),
                    "seed {seed}: {a}"
                );
                if let Some(id) = a.get("id") {
                    assert!(valid_id(id), "seed {seed}: id {id} echoed for {shown}");
                }
                if let Some(e) = a.get("error") {
                    assert!(
                        e["code"].is_i64() && e["message"].is_string(),
                        "seed {seed}: {a}"
                    );
                }
            }
        }
    }

    #[test]
    fn deeply_nested_json_is_a_parse_error_not_a_stack_overflow() {
        for depth in [200usize, 100_000] {
            let body = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            assert_eq!(
                error_code(&legacy(&body)),
                code::PARSE_ERROR,
                "depth {depth}"
            );
            let body = format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"echo","arguments":{{"a":{}1{}}}}}}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            );
            assert_eq!(
                error_code(&legacy(&body)),
                code::PARSE_ERROR,
                "depth {depth}"
            );
        }
    }
}
