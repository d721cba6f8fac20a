//! The seven MCP tools: their definitions (input and output schemas, annotations, descriptions
//! written for a model) and the glue from arguments to [`Hub`] calls.
//!
//! [`outcome`] is the one place a hub result or error becomes MCP output: success is the
//! structured JSON plus the same JSON as text; a failure is `isError: true` with the full error
//! chain as a sentence, logged once here. Argument problems (missing, wrong type, unknown key)
//! are tool errors too, so the model can correct itself.

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::CreateRequest;
use super::apikeys::Caller;
use super::audit::{AuditLog, ToolCall};
use super::mcp::{ToolHost, ToolOutcome};
use super::ownership;
use super::{Hub, HubError};
use crate::boxes::DEFAULT_LOG_TAIL;

/// The hub as an MCP tool host, for one request's caller.
pub(crate) struct HubTools<'a> {
    /// The hub.
    pub(crate) hub: &'a Hub,
    /// Who is calling (from the request's API key).
    pub(crate) caller: &'a Caller,
    /// Where each call is recorded, when `--audit-log` is on.
    pub(crate) audit: Option<&'a AuditLog>,
}

/// Turns a hub result into MCP tool output (the single error → MCP function).
pub(crate) fn outcome<T: Serialize>(tool: &str, result: Result<T, HubError>) -> ToolOutcome {
    match result.map(|v| serde_json::to_value(v)) {
        Ok(Ok(structured)) => ToolOutcome {
            text: serde_json::to_string_pretty(&structured).unwrap_or_default(),
            structured,
            is_error: false,
        },
        Ok(Err(e)) => error_outcome(tool, &format!("internal error encoding the result: {e}")),
        Err(e) => error_outcome(tool, &e.to_string()),
    }
}

fn error_outcome(tool: &str, message: &str) -> ToolOutcome {
    // Error text can carry a spoke's or a box's own words (a remote spoke, a hook's stderr): a
    // sign-in link in it must not reach the model, nor the log.
    let message = &super::redact::scrub(message, &[], &[]);
    log::info!("tool {tool} failed: {message}");
    ToolOutcome {
        structured: json!({"error": message}),
        is_error: true,
        text: message.to_string(),
    }
}

/// Reads the arguments of one call, naming the problem precisely.
struct Args<'a> {
    map: &'a Map<String, Value>,
}

impl<'a> Args<'a> {
    fn new(map: &'a Map<String, Value>, allowed: &[&str]) -> Result<Self, HubError> {
        if let Some(k) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            let takes = if allowed.is_empty() {
                "no arguments".to_string()
            } else {
                allowed.join(", ")
            };
            return Err(HubError::InvalidArgument(format!(
                "unknown argument {k:?}; this tool takes {takes}"
            )));
        }
        Ok(Args { map })
    }

    fn string(&self, key: &str) -> Result<Option<String>, HubError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(HubError::InvalidArgument(format!(
                "{key} must be a string, not {}",
                kind(other)
            ))),
        }
    }

    fn required(&self, key: &str) -> Result<String, HubError> {
        self.string(key)?
            .ok_or_else(|| HubError::InvalidArgument(format!("{key} is required")))
    }

    fn integer(&self, key: &str) -> Result<Option<i64>, HubError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64()),
            Some(Value::Number(n)) if n.is_u64() => Ok(Some(i64::MAX)),
            // "must be an integer, not a number" would read as nonsense for 1.5.
            Some(Value::Number(n)) => Err(HubError::InvalidArgument(format!(
                "{key} must be a whole number, not {n}"
            ))),
            Some(other) => Err(HubError::InvalidArgument(format!(
                "{key} must be an integer, not {}",
                kind(other)
            ))),
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl ToolHost for HubTools<'_> {
    fn tools(&self) -> Vec<Value> {
        definitions()
    }

    fn call(&self, name: &str, arguments: &Map<String, Value>) -> Option<ToolOutcome> {
        let started = std::time::Instant::now();
        let out = self.owned_dispatch(name, arguments)?;
        if let Some(audit) = self.audit {
            self.record(audit, name, arguments, &out, started.elapsed());
        }
        Some(out)
    }
}

impl HubTools<'_> {
    /// One audit line for a finished call; the spoke comes from the answer, the arguments, or
    /// the box's session, in that order.
    fn record(
        &self,
        audit: &AuditLog,
        tool: &str,
        arguments: &Map<String, Value>,
        out: &ToolOutcome,
        took: std::time::Duration,
    ) {
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
        let box_id = text(arguments.get("box_id"));
        let session_spoke = || {
            let id = box_id.as_deref()?;
            let state = self.hub.store().load().ok()?;
            let session = state.sessions.iter().find(|s| s.box_id == id)?;
            Some(session.spoke.clone())
        };
        let spoke = text(out.structured.get("spoke"))
            .or_else(|| text(arguments.get("spoke")))
            .or_else(session_spoke);
        audit.tool_call(
            self.caller,
            &ToolCall {
                tool,
                box_id: box_id.as_deref(),
                spoke: spoke.as_deref(),
                ok: !out.is_error,
                error: out.is_error.then_some(out.text.as_str()),
                ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
                command: arguments.get("command").and_then(Value::as_str),
                exit_code: out.structured.get("exit_code").and_then(Value::as_i64),
            },
        );
    }

    /// [`Self::dispatch`] within the caller's boxes (see [`ownership`]): a foreign box is
    /// refused before the hub is asked, a new box is recorded as the caller's, a listing is
    /// narrowed (or, for an admin, tagged with owners).
    fn owned_dispatch(&self, name: &str, arguments: &Map<String, Value>) -> Option<ToolOutcome> {
        let store = self.hub.store();
        if !self.caller.sees_all() && ownership::PER_BOX_TOOLS.contains(&name) {
            let box_id = arguments.get("box_id").and_then(Value::as_str);
            let allowed = store
                .load()
                .map_err(HubError::from)
                .and_then(|state| ownership::check(&state, self.caller, name, box_id));
            if let Err(e) = allowed {
                return Some(outcome::<Value>(name, Err(e)));
            }
        }
        let mut out = self.dispatch(name, arguments)?;
        if out.is_error || matches!(self.caller, Caller::Anonymous) {
            return Some(out);
        }
        match name {
            "create_llmbox" => {
                let box_id = arguments
                    .get("box_id")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if let Err(e) = ownership::record(store, self.caller, box_id) {
                    // The box exists; only its owner is unknown, so other keys still cannot
                    // reach it (nor, until an admin helps, its creator).
                    log::error!("box {box_id:?}: cannot record its owner: {e}");
                }
            }
            "list_llmboxes" => match store.load() {
                Ok(state) => {
                    ownership::shape_list(&state, self.caller, &mut out.structured);
                    out.text = serde_json::to_string_pretty(&out.structured).unwrap_or_default();
                }
                Err(e) => return Some(outcome::<Value>(name, Err(e.into()))),
            },
            _ => {}
        }
        Some(out)
    }

    fn dispatch(&self, name: &str, arguments: &Map<String, Value>) -> Option<ToolOutcome> {
        let hub = self.hub;
        let out = match name {
            "create_llmbox" => outcome(
                name,
                Args::new(arguments, &["box_id", "image", "description", "spoke"]).and_then(|a| {
                    hub.create_box(CreateRequest {
                        box_id: a.required("box_id")?,
                        image: a.string("image")?,
                        description: a.string("description")?.unwrap_or_default(),
                        spoke: a.string("spoke")?.filter(|s| !s.is_empty()),
                    })
                }),
            ),
            "get_llmbox" => outcome(
                name,
                Args::new(arguments, &["box_id"]).and_then(|a| hub.get_box(&a.required("box_id")?)),
            ),
            "list_llmboxes" => outcome(name, Args::new(arguments, &[]).map(|_| hub.list_boxes())),
            "list_spokes" => outcome(
                name,
                Args::new(arguments, &[]).map(|_| json!({"spokes": hub.list_spokes()})),
            ),
            "destroy_llmbox" => outcome(
                name,
                Args::new(arguments, &["box_id"])
                    .and_then(|a| hub.destroy_box(&a.required("box_id")?)),
            ),
            "get_llmbox_logs" => outcome(
                name,
                Args::new(arguments, &["box_id", "tail"]).and_then(|a| {
                    let box_id = a.required("box_id")?;
                    let tail = a.integer("tail")?.unwrap_or(DEFAULT_LOG_TAIL as i64);
                    let tail = usize::try_from(tail).unwrap_or(0);
                    let logs = hub.box_logs(&box_id, tail)?;
                    Ok(json!({"box_id": box_id, "logs": logs}))
                }),
            ),
            "exec_llmbox" => outcome(
                name,
                Args::new(arguments, &["box_id", "command"]).and_then(|a| {
                    let box_id = a.required("box_id")?;
                    let r = hub.exec_box(&box_id, &a.required("command")?)?;
                    Ok(json!({"box_id": box_id, "exit_code": r.exit_code, "stdout": r.stdout, "stderr": r.stderr}))
                }),
            ),
            _ => return None,
        };
        Some(out)
    }
}

fn box_id_schema() -> Value {
    json!({
        "type": "string",
        "description": "The box's id: 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit.",
        "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$",
        "maxLength": 63
    })
}

fn box_view_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "box_id": {"type": "string"},
            "spoke": {"type": "string"},
            "status": {"type": "string", "description": "pending, error (last code failed; still waiting), ready, or destroyed"},
            "auth_url": {"type": "string", "description": "Link for the person to activate the box (Go llmbox's name); present while the box waits and its link stands"},
            "expires_at": {"type": "string", "format": "date-time", "description": "When auth_url expires (RFC 3339, UTC); the box is reaped unactivated after that"},
            "expires_in_seconds": {"type": "integer", "minimum": 0, "description": "Seconds left until expires_at"},
            "session_url": {"type": "string", "description": "Claude remote-control session, once ready"},
            "error": {"type": "string"},
            "container_id": {"type": "string"},
            "description": {"type": "string"},
            "created": {"type": "integer"},
            "instructions": {"type": "string", "description": "What to do next"},
            "activated_by": {"type": "string"}
        },
        "required": ["box_id", "spoke", "status", "container_id", "instructions"]
    })
}

fn object(properties: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false})
}

fn tool(
    name: &str,
    title: &str,
    description: &str,
    input: Value,
    output: Value,
    annotations: Value,
) -> Value {
    json!({
        "name": name,
        "title": title,
        "description": description,
        "inputSchema": input,
        "outputSchema": output,
        "annotations": annotations
    })
}

/// The seven tool definitions.
pub(crate) fn definitions() -> Vec<Value> {
    let read_only = json!({"readOnlyHint": true, "destructiveHint": false, "idempotentHint": true, "openWorldHint": false});
    vec![
        tool(
            "create_llmbox",
            "Create a box",
            "Create a sandboxed Claude Code box (a container) for a person. Returns status 'pending', an auth_url and when it expires (expires_at, expires_in_seconds; a few minutes): give that link to the person at once, who opens it, signs in with their own Claude account and pastes the code there (never ask them for the code yourself). Then call get_llmbox until status is 'ready' and hand the person the session_url. Box ids are unique across the whole hub.",
            object(
                json!({
                    "box_id": box_id_schema(),
                    "image": {"type": "string", "description": "Container image; omit to use the hub's default box image."},
                    "description": {"type": "string", "description": "Free text shown in listings.", "maxLength": 1024},
                    "spoke": {"type": "string", "description": "Host to run the box on (see list_spokes); omit for the hub's own host or the first connected one."}
                }),
                &["box_id"],
            ),
            box_view_schema(),
            json!({"readOnlyHint": false, "destructiveHint": false, "idempotentHint": false, "openWorldHint": true}),
        ),
        tool(
            "get_llmbox",
            "Get a box",
            "Get one box's activation state. While status is 'pending' or 'error', give the person the auth_url again and ask them to finish there before expires_at; follow instructions when there is no auth_url (the box stopped or its link expired: create a new one); when 'ready', session_url is the Claude remote-control session to hand them.",
            object(json!({"box_id": box_id_schema()}), &["box_id"]),
            box_view_schema(),
            read_only.clone(),
        ),
        tool(
            "list_llmboxes",
            "List boxes",
            "List the boxes on every reachable spoke with their status (pending, error, ready): with an API key, the boxes that key created; with an admin key, every box, each with its owner. Spokes that are away or failed are listed under 'unreachable'; their boxes are missing from the list.",
            object(json!({}), &[]),
            json!({
                "type": "object",
                "properties": {
                    "boxes": {"type": "array", "items": {"type": "object", "properties": {
                        "box_id": {"type": "string"}, "spoke": {"type": "string"}, "status": {"type": "string"},
                        "container_id": {"type": "string"}, "image": {"type": "string"}, "state": {"type": "string"},
                        "description": {"type": "string"}, "created": {"type": "integer"},
                        "owner": {"type": "string", "description": "For an admin key: the name of the API key that created the box"}
                    }}},
                    "unreachable": {"type": "array", "items": {"type": "object", "properties": {
                        "spoke": {"type": "string"}, "error": {"type": "string"}
                    }}}
                },
                "required": ["boxes", "unreachable"]
            }),
            read_only.clone(),
        ),
        tool(
            "list_spokes",
            "List spokes",
            "List the hosts (spokes) boxes can run on, whether each is connected, and whether its Docker answered when last asked (docker: \"ok\" or the error; a spoke whose Docker fails cannot create boxes). Pass a connected spoke's name to create_llmbox to place a box there.",
            object(json!({}), &[]),
            json!({
                "type": "object",
                "properties": {"spokes": {"type": "array", "items": {"type": "object", "properties": {
                    "name": {"type": "string"}, "connected": {"type": "boolean"}, "local": {"type": "boolean"},
                    "connected_since": {"type": "integer"}, "docker": {"type": "string"}
                }}}},
                "required": ["spokes"]
            }),
            read_only.clone(),
        ),
        tool(
            "destroy_llmbox",
            "Destroy a box",
            "Stop and remove a box with everything in it. This cannot be undone; the session URL stops working.",
            object(json!({"box_id": box_id_schema()}), &["box_id"]),
            box_view_schema(),
            json!({"readOnlyHint": false, "destructiveHint": true, "idempotentHint": true, "openWorldHint": false}),
        ),
        tool(
            "get_llmbox_logs",
            "Read a box's output",
            "Read the last lines a box printed (its terminal), to see what Claude Code is doing or why it failed. Sign-in links and typed codes are hidden.",
            object(
                json!({
                    "box_id": box_id_schema(),
                    "tail": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 200, "description": "How many lines from the end."}
                }),
                &["box_id"],
            ),
            json!({"type": "object", "properties": {"box_id": {"type": "string"}, "logs": {"type": "string"}}, "required": ["box_id", "logs"]}),
            read_only,
        ),
        tool(
            "exec_llmbox",
            "Run a command in a box",
            "Run a shell command in a box (/bin/sh -c, no terminal, working directory /workspace) and return its exit code, stdout and stderr (each capped at 64 KiB). A non-zero exit code is a normal result.",
            object(
                json!({
                    "box_id": box_id_schema(),
                    "command": {"type": "string", "description": "Shell command line."}
                }),
                &["box_id", "command"],
            ),
            json!({"type": "object", "properties": {
                "box_id": {"type": "string"}, "exit_code": {"type": "integer"},
                "stdout": {"type": "string"}, "stderr": {"type": "string"}
            }, "required": ["box_id", "exit_code", "stdout", "stderr"]}),
            json!({"readOnlyHint": false, "destructiveHint": true, "idempotentHint": false, "openWorldHint": true}),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boxes::BoxError;

    #[test]
    fn a_fractional_number_is_named_as_such() {
        let map = json!({"tail": 1.5});
        let args = Args::new(map.as_object().expect("object"), &["tail"]).expect("args");
        let err = args.integer("tail").expect_err("not whole").to_string();
        assert_eq!(
            err,
            "invalid argument: tail must be a whole number, not 1.5"
        );
        let map = json!({"tail": "5"});
        let args = Args::new(map.as_object().expect("object"), &["tail"]).expect("args");
        let err = args.integer("tail").expect_err("a string").to_string();
        assert_eq!(
            err,
            "invalid argument: tail must be an integer, not a string"
        );
    }

    #[test]
    fn a_sign_in_link_in_a_spokes_error_never_reaches_the_tool_output() {
        let err = HubError::Verb {
            op: "create",
            box_id: "web".into(),
            spoke: "edge".into(),
            source: BoxError::Box(
                "box printed https://claude.com/cai/oauth/authorize?code_challenge=x&state=y then died"
                    .into(),
            ),
        };
        let out = outcome::<Value>("create_llmbox", Err(err));
        assert!(out.is_error);
        let shown = format!("{} {}", out.text, out.structured);
        assert!(!shown.contains("oauth/authorize"), "{shown}");
        assert!(
            shown.contains("then died") && shown.contains("spoke \"edge\""),
            "{shown}"
        );
    }
}
