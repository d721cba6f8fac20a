//! The cluster wire protocol (DESIGN §4): one JSON object per WebSocket text message, in the
//! exact shape llmbox's Go hub and spoke (v0.0.36) use.
//!
//! Plain serde types and conversions, no sockets. `id`, `method`, `payload` and `error` are
//! omitted when empty or zero; `create`'s `opts` keeps the Go peers' capitalised field names and
//! sends file content as standard base64. Every type here round-trips: decoding a Go-shaped
//! frame and encoding it again gives the same bytes.
//!
//! Decoding is as lenient as a Go peer's own decoder where a Go peer may send it: a nil slice
//! marshals as `null` (a file's `Content`, `exec`'s `cmd`) and reads here as empty, and `logs`'
//! `tail` is a signed Go `int` whose `<= 0` means the default (a Go hub passes a chatbot's value
//! straight through). Those re-encode as `""`, `[]` and `0`.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::boxes::{BoxInfo, CreateOptions, ErrorKind, InjectFile};
use crate::util::base64;

/// Largest WebSocket message and frame either end accepts (larger gets Close 1009).
pub(crate) const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// The exact `error` text of a rejected enrollment; the real reason stays in the hub's log.
pub(crate) const ENROLLMENT_REJECTED: &str = "enrollment rejected";

/// The path the spoke plane serves.
pub(crate) const CONNECT_PATH: &str = "/spoke/connect";

/// Method names of the seven verbs.
pub(crate) mod method {
    /// `create`.
    pub(crate) const CREATE: &str = "create";
    /// `submit_code`.
    pub(crate) const SUBMIT_CODE: &str = "submit_code";
    /// `list`.
    pub(crate) const LIST: &str = "list";
    /// `destroy`.
    pub(crate) const DESTROY: &str = "destroy";
    /// `logs`.
    pub(crate) const LOGS: &str = "logs";
    /// `exec`.
    pub(crate) const EXEC: &str = "exec";
    /// `reap`.
    pub(crate) const REAP: &str = "reap";
}

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    /// Spoke → hub, first message: join token or saved credentials.
    Enroll,
    /// Hub → spoke: enrollment accepted.
    Welcome,
    /// Hub → spoke: a verb call.
    Req,
    /// Spoke → hub: a verb's answer (payload or error).
    Resp,
    /// Hub → spoke: enrollment rejected (then close).
    Err,
}

/// One wire message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Frame {
    /// The message kind (`type` on the wire).
    #[serde(rename = "type")]
    pub(crate) kind: Kind,
    /// Request id, counting up from 1 per connection; 0 (omitted) outside req/resp.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub id: u64,
    /// The verb of a `req`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) method: String,
    /// The body; omitted when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) payload: Option<Box<RawValue>>,
    /// An error text (`err`, or a failed `resp`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) error: String,
    /// The kind of a failed `resp`'s error (`kind` on the wire), when the spoke typed it.
    /// Omitted when absent, so Go peers (whose decoder ignores it) see their own frames.
    #[serde(rename = "kind", default, skip_serializing_if = "Option::is_none")]
    pub(crate) error_kind: Option<ErrorKind>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Frame {
    /// A frame of `kind` with nothing else set.
    pub(crate) fn new(kind: Kind) -> Self {
        Frame {
            kind,
            id: 0,
            method: String::new(),
            payload: None,
            error: String::new(),
            error_kind: None,
        }
    }

    /// A `req` for `method` with `payload`.
    pub(crate) fn req(id: u64, method: &str, payload: Box<RawValue>) -> Self {
        Frame {
            id,
            method: method.to_string(),
            payload: Some(payload),
            ..Frame::new(Kind::Req)
        }
    }

    /// A successful `resp`; `None` for verbs that answer nothing (`destroy`).
    pub(crate) fn resp_ok(id: u64, payload: Option<Box<RawValue>>) -> Self {
        Frame {
            id,
            payload,
            ..Frame::new(Kind::Resp)
        }
    }

    /// A failed `resp`.
    pub(crate) fn resp_err(id: u64, error: impl Into<String>) -> Self {
        Frame {
            id,
            error: error.into(),
            ..Frame::new(Kind::Resp)
        }
    }

    /// A failed `resp` typed with `kind` (see [`ErrorKind`]).
    pub(crate) fn resp_failed(id: u64, error: impl Into<String>, kind: Option<ErrorKind>) -> Self {
        Frame {
            error_kind: kind,
            ..Frame::resp_err(id, error)
        }
    }

    /// The `err` frame of a rejected enrollment.
    pub(crate) fn rejected() -> Self {
        Frame {
            error: ENROLLMENT_REJECTED.to_string(),
            ..Frame::new(Kind::Err)
        }
    }

    /// Encodes as one JSON text.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a frame of plain JSON values always serializes")
    }

    /// Decodes one JSON text.
    ///
    /// # Errors
    /// The serde error for anything that is not a frame.
    pub fn decode(text: &str) -> Result<Frame, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The payload decoded as `T` (a missing payload decodes as `{}`).
    ///
    /// # Errors
    /// The serde error.
    pub(crate) fn payload_as<T: for<'de> Deserialize<'de>>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.payload.as_deref().map_or("{}", RawValue::get))
    }
}

/// A JSON error told without the input's text: serde_json quotes offending values, and a peer
/// may have put a secret (a join token, a credential, an OAuth code) in the wrong place, so
/// only the kind of error and its position reach a log or an answer.
pub(crate) fn describe_json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let kind = match e.classify() {
        Category::Io => "unreadable JSON",
        Category::Syntax => "not valid JSON",
        Category::Data => "JSON of the wrong shape",
        Category::Eof => "truncated JSON",
    };
    format!("{kind} (line {}, column {})", e.line(), e.column())
}

/// `enroll` payload: a join token (first time) or name + credential (reconnect).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EnrollPayload {
    /// The one-time join token.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) join_token: String,
    /// The enrolled name (reconnect).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) name: String,
    /// The credential from the first welcome (reconnect).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) credential: String,
}

/// `welcome` payload; `credential` only on first enrollment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WelcomePayload {
    /// The spoke's name.
    pub(crate) name: String,
    /// The freshly minted credential (first enrollment only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) credential: String,
}

/// `create` request payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CreateReq {
    /// The options, in the Go peers' shape.
    pub(crate) opts: WireCreateOptions,
}

/// `CreateOptions` as the Go peers marshal it: capitalised names, every field present,
/// `Files` null when there are none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct WireCreateOptions {
    /// Image to run.
    #[serde(default)]
    pub(crate) image: String,
    /// Box id.
    #[serde(rename = "BoxID", default)]
    pub(crate) box_id: String,
    /// Free text.
    #[serde(default)]
    pub(crate) description: String,
    /// The spoke the hub routed to.
    #[serde(default)]
    pub(crate) spoke_name: String,
    /// Files to inject (null when none, as Go's nil slice).
    #[serde(default)]
    pub(crate) files: Option<Vec<WireFile>>,
}

/// One injected file on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct WireFile {
    /// Absolute path in the box.
    #[serde(default)]
    pub(crate) path: String,
    /// Standard base64 of the bytes (`null` from a Go peer's nil slice reads as empty).
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) content: String,
    /// Permission bits.
    #[serde(default)]
    pub(crate) mode: u32,
    /// Owner uid.
    #[serde(rename = "UID", default)]
    pub(crate) uid: u32,
    /// Owner gid.
    #[serde(rename = "GID", default)]
    pub(crate) gid: u32,
}

impl From<&CreateOptions> for WireCreateOptions {
    fn from(o: &CreateOptions) -> Self {
        let files: Vec<WireFile> = o
            .files
            .iter()
            .map(|f| WireFile {
                path: f.path.clone(),
                content: base64::encode(&f.content),
                mode: f.mode,
                uid: f.uid,
                gid: f.gid,
            })
            .collect();
        WireCreateOptions {
            image: o.image.clone(),
            box_id: o.box_id.clone(),
            description: o.description.clone(),
            spoke_name: o.spoke_name.clone(),
            files: (!files.is_empty()).then_some(files),
        }
    }
}

impl WireCreateOptions {
    /// Converts to the domain type, decoding file content.
    ///
    /// # Errors
    /// A message naming the file whose content is not base64.
    pub(crate) fn into_options(self) -> Result<CreateOptions, String> {
        let mut files = Vec::new();
        for f in self.files.unwrap_or_default() {
            let content = base64::decode(&f.content)
                .map_err(|e| format!("file {:?}: content is not base64: {e}", f.path))?;
            files.push(InjectFile {
                path: f.path,
                content,
                mode: f.mode,
                uid: f.uid,
                gid: f.gid,
            });
        }
        Ok(CreateOptions {
            image: self.image,
            box_id: self.box_id,
            description: self.description,
            spoke_name: self.spoke_name,
            files,
        })
    }
}

/// `create` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CreateResp {
    /// Full container id.
    pub(crate) id: String,
    /// The authorize URL the box printed.
    pub(crate) authorize_url: String,
}

/// `submit_code` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SubmitReq {
    /// Container id or name.
    pub(crate) id: String,
    /// The OAuth code (a secret: never logged).
    pub(crate) code: String,
}

/// `submit_code` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SubmitResp {
    /// The remote-control session URL.
    pub(crate) session_url: String,
}

/// `list` response (`boxes` null from a Go peer with no boxes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ListResp {
    /// The spoke's boxes.
    #[serde(default)]
    pub(crate) boxes: Option<Vec<BoxInfo>>,
}

/// `destroy` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TargetReq {
    /// Container id, name or box id.
    pub(crate) id_or_name: String,
}

/// `logs` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LogsReq {
    /// Container id, name or box id.
    pub(crate) id_or_name: String,
    /// How many lines (0 means the default; a Go peer's `<= 0` reads as 0).
    #[serde(default, deserialize_with = "go_int_tail")]
    pub(crate) tail: usize,
}

/// `logs` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LogsResp {
    /// The lines.
    pub(crate) logs: String,
}

/// `exec` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ExecReq {
    /// Container id, name or box id.
    pub(crate) id_or_name: String,
    /// argv (`null` from a Go peer's nil slice reads as empty, which the spoke refuses).
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) cmd: Vec<String>,
}

/// A `null` where Go marshals a nil slice reads as the empty value.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A Go `int` line count: any whole number; `<= 0` (and `null`) reads as 0, the default.
fn go_int_tail<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = Option::<serde_json::Number>::deserialize(d)?;
    match n {
        None => Ok(0),
        Some(n) if n.is_i64() || n.is_u64() => Ok(n
            .as_u64()
            .map_or(0, |v| usize::try_from(v).unwrap_or(usize::MAX))),
        Some(_) => Err(serde::de::Error::custom("tail must be a whole number")),
    }
}

// The `exec` response is [`ExecResult`] as is.

/// `reap` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ReapReq {
    /// Pending boxes older than this many nanoseconds go.
    pub(crate) ttl_nanos: i64,
}

/// `reap` response (`reaped` null from a Go peer that reaped nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ReapResp {
    /// Short ids removed.
    #[serde(default)]
    pub(crate) reaped: Option<Vec<String>>,
}

/// Serializes a payload struct to raw JSON (field order kept).
pub(crate) fn to_value<T: Serialize>(payload: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(payload).expect("payload types hold only plain JSON values")
}

/// The empty object `{}` (the payload of `list`).
pub(crate) fn empty_object() -> Box<RawValue> {
    RawValue::from_string("{}".to_string()).expect("{} is JSON")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boxes::ExecResult;

    #[test]
    fn json_errors_are_described_without_quoting_the_input() {
        let secret = "ab".repeat(32);
        for text in [
            format!(r#"{{"type":"{secret}"}}"#),
            format!(r#"{{"type":"enroll","id":"{secret}"}}"#),
            format!(r#"{{"type":"enroll","payload":"{secret}"}}"#),
        ] {
            let described = match Frame::decode(&text) {
                Err(e) => describe_json_error(&e),
                Ok(f) => {
                    describe_json_error(&f.payload_as::<EnrollPayload>().expect_err("wrong shape"))
                }
            };
            assert!(!described.contains(&secret[..16]), "{described}");
            assert!(
                described.starts_with("JSON of the wrong shape (line 1"),
                "{described}"
            );
        }
    }
    use crate::boxes::Phase;

    /// Decodes `text` as a frame and checks it encodes back to the same bytes.
    fn round_trip(text: &str) -> Frame {
        let frame = Frame::decode(text).expect("decodes");
        assert_eq!(frame.encode(), text);
        frame
    }

    #[test]
    fn go_shaped_enroll_and_welcome_frames_round_trip() {
        let f = round_trip(r#"{"type":"enroll","payload":{"join_token":"abc"}}"#);
        let p: EnrollPayload = f.payload_as().expect("payload");
        assert_eq!(p.join_token, "abc");
        let f = round_trip(r#"{"type":"enroll","payload":{"name":"edge-1","credential":"c"}}"#);
        assert_eq!(f.payload_as::<EnrollPayload>().expect("p").name, "edge-1");
        round_trip(r#"{"type":"welcome","payload":{"name":"edge-1","credential":"c"}}"#);
        let f = round_trip(r#"{"type":"welcome","payload":{"name":"edge-1"}}"#);
        assert_eq!(
            to_value(&f.payload_as::<WelcomePayload>().expect("p")).get(),
            f.payload.as_deref().expect("payload").get()
        );
        assert_eq!(
            round_trip(r#"{"type":"err","error":"enrollment rejected"}"#).encode(),
            Frame::rejected().encode()
        );
    }

    #[test]
    fn go_shaped_create_request_round_trips_with_base64_content() {
        let text = r#"{"type":"req","id":7,"method":"create","payload":{"opts":{"Image":"img:1","BoxID":"web","Description":"d","SpokeName":"edge-1","Files":[{"Path":"/etc/h.json","Content":"aGVsbG8=","Mode":420,"UID":1000,"GID":1000}]}}}"#;
        let frame = round_trip(text);
        assert_eq!(frame.id, 7);
        let req: CreateReq = frame.payload_as().expect("create payload");
        let opts = req.opts.clone().into_options().expect("base64");
        assert_eq!(opts.files[0].content, b"hello");
        assert_eq!(opts.files[0].mode, 0o644);
        let again = Frame::req(
            7,
            method::CREATE,
            to_value(&CreateReq {
                opts: (&opts).into(),
            }),
        );
        assert_eq!(again.encode(), text);
    }

    #[test]
    fn create_without_files_sends_null_files_like_go() {
        let text = r#"{"type":"req","id":1,"method":"create","payload":{"opts":{"Image":"i","BoxID":"b","Description":"","SpokeName":"","Files":null}}}"#;
        let req: CreateReq = round_trip(text).payload_as().expect("p");
        let opts = req.opts.into_options().expect("opts");
        assert!(opts.files.is_empty());
        let again = Frame::req(
            1,
            method::CREATE,
            to_value(&CreateReq {
                opts: (&opts).into(),
            }),
        );
        assert_eq!(again.encode(), text);
    }

    #[test]
    fn bad_base64_content_is_a_clear_error() {
        let wire = WireCreateOptions {
            files: Some(vec![WireFile {
                path: "/x".into(),
                content: "!!".into(),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let err = wire.into_options().expect_err("bad base64");
        assert!(err.contains("\"/x\""), "{err}");
    }

    #[test]
    fn an_error_kind_is_optional_and_an_unknown_one_reads_as_unknown() {
        let go = Frame::decode(r#"{"type":"resp","id":1,"error":"boom"}"#).expect("frame");
        assert_eq!(go.error_kind, None);
        let typed = Frame::decode(r#"{"type":"resp","id":1,"error":"taken","kind":"duplicate"}"#)
            .expect("frame");
        assert_eq!(typed.error_kind, Some(ErrorKind::Duplicate));
        assert_eq!(
            Frame::resp_failed(1, "taken", Some(ErrorKind::Duplicate)).encode(),
            r#"{"type":"resp","id":1,"error":"taken","kind":"duplicate"}"#
        );
        let newer = Frame::decode(r#"{"type":"resp","id":1,"error":"x","kind":"quota"}"#)
            .expect("a newer kind does not break the frame");
        assert_eq!(newer.error_kind, Some(ErrorKind::Unknown));
    }

    #[test]
    fn verb_payloads_round_trip_in_go_shape() {
        for text in [
            r#"{"type":"req","id":2,"method":"submit_code","payload":{"id":"abc","code":"xyz"}}"#,
            r#"{"type":"resp","id":2,"payload":{"session_url":"https://claude.ai/code/s"}}"#,
            r#"{"type":"req","id":3,"method":"list","payload":{}}"#,
            r#"{"type":"req","id":4,"method":"destroy","payload":{"id_or_name":"web"}}"#,
            r#"{"type":"resp","id":4}"#,
            r#"{"type":"req","id":5,"method":"logs","payload":{"id_or_name":"web","tail":50}}"#,
            r#"{"type":"resp","id":5,"payload":{"logs":"a\nb"}}"#,
            r#"{"type":"req","id":6,"method":"exec","payload":{"id_or_name":"web","cmd":["/bin/sh","-c","ls"]}}"#,
            r#"{"type":"resp","id":6,"payload":{"stdout":"x","stderr":"","exit_code":1}}"#,
            r#"{"type":"req","id":8,"method":"reap","payload":{"ttl_nanos":300000000000}}"#,
            r#"{"type":"resp","id":8,"payload":{"reaped":["abcdef123456"]}}"#,
            r#"{"type":"resp","id":9,"error":"no managed box matches \"x\""}"#,
            r#"{"type":"resp","id":9,"error":"no managed box matches \"x\"","kind":"not_found"}"#,
        ] {
            round_trip(text);
        }
        let exec: ExecResult = Frame::decode(
            r#"{"type":"resp","id":6,"payload":{"stdout":"x","stderr":"","exit_code":1}}"#,
        )
        .expect("frame")
        .payload_as()
        .expect("exec");
        assert_eq!(exec.exit_code, 1);
        let reap: ReapReq = Frame::decode(
            r#"{"type":"req","id":8,"method":"reap","payload":{"ttl_nanos":300000000000}}"#,
        )
        .expect("frame")
        .payload_as()
        .expect("reap");
        assert_eq!(reap.ttl_nanos, 300_000_000_000);
    }

    #[test]
    fn list_response_with_go_box_round_trips() {
        let text = r#"{"type":"resp","id":3,"payload":{"boxes":[{"container_id":"abcdef123456","name":"llmbox-abcdef123456","box_id":"web","spoke":"edge-1","image":"img","state":"running","status":"Up 2 minutes","phase":"ready","created":1700000000}]}}"#;
        let frame = round_trip(text);
        let list: ListResp = frame.payload_as().expect("list");
        let boxes = list.boxes.clone().expect("boxes");
        assert_eq!(boxes[0].phase, Phase::Ready);
        assert!(boxes[0].description.is_empty());
        assert_eq!(
            to_value(&list).get(),
            frame.payload.as_deref().expect("payload").get()
        );
        let empty: ListResp = Frame::decode(r#"{"type":"resp","id":3,"payload":{"boxes":null}}"#)
            .expect("frame")
            .payload_as()
            .expect("null boxes");
        assert!(empty.boxes.is_none());
    }

    #[test]
    fn go_nulls_and_a_signed_tail_decode_as_a_go_peer_means_them() {
        let create = r#"{"type":"req","id":1,"method":"create","payload":{"opts":{"Image":"i","BoxID":"b","Description":"","SpokeName":"","Files":[{"Path":"/etc/empty","Content":null,"Mode":420,"UID":0,"GID":0}]}}}"#;
        let req: CreateReq = Frame::decode(create)
            .expect("frame")
            .payload_as()
            .expect("null content");
        let opts = req.opts.into_options().expect("opts");
        assert_eq!(opts.files[0].path, "/etc/empty");
        assert!(opts.files[0].content.is_empty());

        let tail = |t: &str| {
            Frame::decode(&format!(
                r#"{{"type":"req","id":2,"method":"logs","payload":{{"id_or_name":"web","tail":{t}}}}}"#
            ))
            .expect("frame")
            .payload_as::<LogsReq>()
            .map(|r| r.tail)
        };
        assert_eq!(tail("-1").expect("negative"), 0);
        assert_eq!(tail("-9223372036854775808").expect("min int"), 0);
        assert_eq!(tail("0").expect("zero"), 0);
        assert_eq!(tail("null").expect("null"), 0);
        assert_eq!(tail("50").expect("positive"), 50);
        let err = tail("1.5").expect_err("not whole").to_string();
        assert!(err.contains("tail must be a whole number"), "{err}");
        assert!(tail(r#""5""#).is_err());

        let exec: ExecReq = Frame::decode(
            r#"{"type":"req","id":3,"method":"exec","payload":{"id_or_name":"web","cmd":null}}"#,
        )
        .expect("frame")
        .payload_as()
        .expect("null cmd");
        assert!(exec.cmd.is_empty());
        let missing: ExecReq = Frame::decode(
            r#"{"type":"req","id":3,"method":"exec","payload":{"id_or_name":"web"}}"#,
        )
        .expect("frame")
        .payload_as()
        .expect("missing cmd");
        assert!(missing.cmd.is_empty());
    }

    #[test]
    fn unknown_types_and_garbage_do_not_decode() {
        assert!(Frame::decode(r#"{"type":"bogus"}"#).is_err());
        assert!(Frame::decode("not json").is_err());
        assert!(Frame::decode(r#"{"id":1}"#).is_err());
    }

    #[test]
    fn missing_payload_reads_as_empty_object() {
        let f = Frame::decode(r#"{"type":"req","id":1,"method":"list"}"#).expect("frame");
        let p: serde_json::Map<String, serde_json::Value> = f.payload_as().expect("empty");
        assert!(p.is_empty());
    }
}
