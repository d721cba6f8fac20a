//! The spoke's side of the verbs: decode a `req`, apply the admission policy, call the local
//! [`BoxManager`], encode the `resp` (DESIGN §4). No sockets here.
//!
//! A spoke is never a generic proxy: it re-validates every argument itself. Unknown methods and
//! bad payloads get an error `resp` for that id; the socket stays up.

use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::boxes::{BoxError, BoxManager, DEFAULT_LOG_TAIL, ErrorKind};

use super::proto::{self, Frame, method};

/// What a spoke admits on `create`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// When non-empty, the only images `create` may name (`--allowed-image`).
    pub allowed_images: Vec<String>,
}

impl Policy {
    /// Checks a create's options: the box-id rule, an image named, and the allow-list.
    ///
    /// # Errors
    /// The [`BoxError`] to send back.
    pub(crate) fn admit(&self, opts: &crate::boxes::CreateOptions) -> Result<(), BoxError> {
        opts.validate()?;
        if !self.allowed_images.is_empty() && !self.allowed_images.contains(&opts.image) {
            return Err(BoxError::ImageNotAllowed(opts.image.clone()));
        }
        Ok(())
    }
}

/// Why a verb was not done: the error text for the `resp` and its kind (see
/// [`BoxError::kind`]), so the hub handles a remote failure as it would a local one.
struct Failure {
    error: String,
    kind: Option<ErrorKind>,
}

impl From<BoxError> for Failure {
    fn from(e: BoxError) -> Self {
        Failure {
            kind: e.kind(),
            error: e.to_string(),
        }
    }
}

impl Failure {
    /// A request the spoke could not use (bad payload, unknown method).
    fn invalid(error: String) -> Self {
        Failure {
            error,
            kind: Some(ErrorKind::Invalid),
        }
    }
}

fn payload<T: for<'de> Deserialize<'de>>(frame: &Frame) -> Result<T, Failure> {
    frame
        .payload_as()
        .map_err(|e| Failure::invalid(format!("bad {} payload: {e}", frame.method)))
}

/// Runs one `req` frame and builds its `resp`. A verb that panics (a bug in the manager) is
/// answered with an error for that id instead of leaving the hub waiting for its deadline.
pub fn handle(manager: &dyn BoxManager, policy: &Policy, frame: &Frame) -> Frame {
    let run = std::panic::AssertUnwindSafe(|| dispatch(manager, policy, frame));
    match std::panic::catch_unwind(run) {
        Ok(Ok(payload)) => Frame::resp_ok(frame.id, payload),
        Ok(Err(f)) => Frame::resp_failed(frame.id, f.error, f.kind),
        Err(_) => {
            log::error!("spoke: {} (id {}) panicked", frame.method, frame.id);
            Frame::resp_err(
                frame.id,
                format!(
                    "{} failed unexpectedly on the spoke; see its log",
                    frame.method
                ),
            )
        }
    }
}

fn dispatch(
    manager: &dyn BoxManager,
    policy: &Policy,
    frame: &Frame,
) -> Result<Option<Box<RawValue>>, Failure> {
    let err = Failure::from;
    match frame.method.as_str() {
        method::CREATE => {
            let req: proto::CreateReq = payload(frame)?;
            let opts = req.opts.into_options().map_err(Failure::invalid)?;
            policy.admit(&opts).map_err(err)?;
            let c = manager.create(opts).map_err(err)?;
            Ok(Some(proto::to_value(&proto::CreateResp {
                id: c.id,
                authorize_url: c.authorize_url,
            })))
        }
        method::SUBMIT_CODE => {
            let req: proto::SubmitReq = payload(frame)?;
            let url = manager.submit_code(&req.id, &req.code).map_err(err)?;
            Ok(Some(proto::to_value(&proto::SubmitResp {
                session_url: url,
            })))
        }
        method::LIST => {
            let boxes = manager.list().map_err(err)?;
            Ok(Some(proto::to_value(&proto::ListResp {
                boxes: Some(boxes),
            })))
        }
        method::DESTROY => {
            let req: proto::TargetReq = payload(frame)?;
            manager.destroy(&req.id_or_name).map_err(err)?;
            Ok(None)
        }
        method::LOGS => {
            let req: proto::LogsReq = payload(frame)?;
            let tail = if req.tail == 0 {
                DEFAULT_LOG_TAIL
            } else {
                req.tail
            };
            let logs = manager.logs(&req.id_or_name, tail).map_err(err)?;
            Ok(Some(proto::to_value(&proto::LogsResp { logs })))
        }
        method::EXEC => {
            let req: proto::ExecReq = payload(frame)?;
            // Empty, missing and a Go peer's `null` alike.
            if req.cmd.is_empty() {
                return Err(err(BoxError::InvalidArgument(
                    "exec: command is required".into(),
                )));
            }
            let r = manager.exec(&req.id_or_name, &req.cmd).map_err(err)?;
            Ok(Some(proto::to_value(&r)))
        }
        method::REAP => {
            let req: proto::ReapReq = payload(frame)?;
            if req.ttl_nanos < 0 {
                return Err(Failure::invalid("reap: negative ttl".into()));
            }
            let reaped = manager
                .reap(Duration::from_nanos(req.ttl_nanos as u64))
                .map_err(err)?;
            Ok(Some(proto::to_value(&proto::ReapResp {
                reaped: Some(reaped),
            })))
        }
        // Untyped, as a Go spoke answers it: a method this spoke lacks is a version mismatch
        // for the operator, nothing the hub's handling could act on.
        other => Err(Failure {
            error: format!("unknown method {other:?}"),
            kind: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boxes::memory::MemoryBoxManager;

    fn run(policy: &Policy, text: &str) -> Frame {
        let m = MemoryBoxManager::new("edge", 5);
        handle(&m, policy, &Frame::decode(text).expect("frame"))
    }

    #[test]
    fn unknown_method_and_bad_payload_answer_with_an_error_for_that_id() {
        let r = run(
            &Policy::default(),
            r#"{"type":"req","id":4,"method":"shell","payload":{}}"#,
        );
        assert_eq!((r.id, r.error.as_str()), (4, "unknown method \"shell\""));
        assert_eq!(r.error_kind, None);
        let r = run(
            &Policy::default(),
            r#"{"type":"req","id":5,"method":"logs","payload":{"tail":"x"}}"#,
        );
        assert_eq!(r.id, 5);
        assert!(r.error.starts_with("bad logs payload"), "{}", r.error);
        assert_eq!(r.error_kind, Some(ErrorKind::Invalid));
    }

    #[test]
    fn go_shaped_logs_and_exec_are_served_or_refused_clearly() {
        let m = MemoryBoxManager::new("edge", 5);
        let req = |text: &str| handle(&m, &Policy::default(), &Frame::decode(text).expect("frame"));
        let made = req(
            r#"{"type":"req","id":1,"method":"create","payload":{"opts":{"Image":"i","BoxID":"web","Description":"","SpokeName":"","Files":[{"Path":"/etc/e","Content":null,"Mode":420,"UID":0,"GID":0}]}}}"#,
        );
        assert!(made.error.is_empty(), "{}", made.error);
        let logs = req(
            r#"{"type":"req","id":2,"method":"logs","payload":{"id_or_name":"web","tail":-1}}"#,
        );
        assert!(logs.error.is_empty(), "{}", logs.error);
        let l: proto::LogsResp = logs.payload_as().expect("logs");
        assert!(l.logs.contains("authorize"), "{}", l.logs);
        let exec = req(
            r#"{"type":"req","id":3,"method":"exec","payload":{"id_or_name":"web","cmd":null}}"#,
        );
        assert_eq!(
            (exec.id, exec.error.as_str()),
            (3, "invalid argument: exec: command is required")
        );
        assert_eq!(exec.error_kind, Some(ErrorKind::Invalid));
    }

    #[test]
    fn a_refusal_is_answered_with_its_kind_and_a_boxs_own_failure_without_one() {
        let m = MemoryBoxManager::new("edge", 5);
        let req = |text: &str| handle(&m, &Policy::default(), &Frame::decode(text).expect("frame"));
        let gone =
            req(r#"{"type":"req","id":1,"method":"destroy","payload":{"id_or_name":"nope"}}"#);
        assert_eq!(gone.error, "no managed box matches \"nope\"");
        assert_eq!(gone.error_kind, Some(ErrorKind::NotFound));
        let create = r#"{"type":"req","id":2,"method":"create","payload":{"opts":{"Image":"i","BoxID":"web","Description":"","SpokeName":"","Files":null}}}"#;
        let made = req(create);
        assert!(made.error.is_empty(), "{}", made.error);
        assert_eq!(req(create).error_kind, Some(ErrorKind::Duplicate));
        let c: proto::CreateResp = made.payload_as().expect("created");
        let bad = req(&format!(
            r#"{{"type":"req","id":3,"method":"submit_code","payload":{{"id":"{}","code":"{}"}}}}"#,
            c.id,
            crate::boxes::memory::BAD_CODE
        ));
        assert!(!bad.error.is_empty());
        assert_eq!(bad.error_kind, None);
    }

    /// A manager whose every verb panics (a bug in a backend).
    struct Panicking;

    impl BoxManager for Panicking {
        fn create(
            &self,
            _: crate::boxes::CreateOptions,
        ) -> Result<crate::boxes::Created, BoxError> {
            panic!("create bug")
        }
        fn submit_code(&self, _: &str, _: &str) -> Result<String, BoxError> {
            panic!("submit bug")
        }
        fn list(&self) -> Result<Vec<crate::boxes::BoxInfo>, BoxError> {
            panic!("list bug")
        }
        fn destroy(&self, _: &str) -> Result<(), BoxError> {
            panic!("destroy bug")
        }
        fn logs(&self, _: &str, _: usize) -> Result<String, BoxError> {
            panic!("logs bug")
        }
        fn exec(&self, _: &str, _: &[String]) -> Result<crate::boxes::ExecResult, BoxError> {
            panic!("exec bug")
        }
        fn reap(&self, _: Duration) -> Result<Vec<String>, BoxError> {
            panic!("reap bug")
        }
    }

    #[test]
    fn a_panicking_verb_is_answered_with_an_error_for_its_id() {
        let req =
            Frame::decode(r#"{"type":"req","id":9,"method":"list","payload":{}}"#).expect("frame");
        let r = handle(&Panicking, &Policy::default(), &req);
        assert_eq!(r.kind, proto::Kind::Resp);
        assert_eq!(r.id, 9);
        assert_eq!(
            r.error,
            "list failed unexpectedly on the spoke; see its log"
        );
        assert_eq!(r.error_kind, None, "a bug is nothing the hub can act on");
    }

    #[test]
    fn admission_checks_box_id_image_and_allow_list() {
        let policy = Policy {
            allowed_images: vec!["good:1".into()],
        };
        let create = |image: &str, id: &str| {
            format!(
                r#"{{"type":"req","id":1,"method":"create","payload":{{"opts":{{"Image":"{image}","BoxID":"{id}","Description":"","SpokeName":"","Files":null}}}}}}"#
            )
        };
        assert!(
            run(&policy, &create("bad:1", "web"))
                .error
                .contains("not allowed")
        );
        assert!(
            run(&policy, &create("good:1", "Bad_Id"))
                .error
                .contains("invalid box id")
        );
        assert!(run(&policy, &create("", "web")).error.contains("no image"));
        assert_eq!(
            run(&policy, &create("bad:1", "web")).error_kind,
            Some(ErrorKind::Invalid)
        );
        let ok = run(&policy, &create("good:1", "web"));
        assert!(ok.error.is_empty(), "{}", ok.error);
        let c: proto::CreateResp = ok.payload_as().expect("created");
        assert!(
            c.authorize_url
                .starts_with("https://claude.com/cai/oauth/authorize")
        );
    }
}
