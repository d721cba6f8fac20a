//! A connected spoke as a [`BoxManager`]: each verb is a `req` down the socket and waits for
//! the `resp` with the same id (DESIGN §3–4).
//!
//! The calling thread (an MCP handler) writes its `req` frame itself, under the socket's
//! write turn ([`Socket::send_text`]), within the nearer of the call's deadline and
//! [`transport::WRITE_TIMEOUT`]; a spoke that does not read makes that write fail, which shuts
//! the connection. The answer comes back from the connection's reader thread over a channel.
//!
//! Correlation: an incrementing `u64` id and a map of waiting callers behind a short mutex
//! (never held across a send or a wait). When the socket ends, the connection's reader calls
//! [`RemoteSpoke::fail_all`]: every waiting call fails with "spoke X disconnected" and later
//! calls fail at once. Each call has a deadline ([`CallDeadlines`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::boxes::{
    BoxError, BoxInfo, BoxManager, CreateOptions, Created, ExecResult, RemoteError,
};

use super::proto::{self, Frame, Kind, method};
use super::transport::{self, Socket};

/// How long the hub waits for each verb's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallDeadlines {
    /// `create` (container start plus the wait for the authorize URL, maybe an image pull).
    pub create: Duration,
    /// `submit_code` (the box has 60 s to print its session URL).
    pub submit_code: Duration,
    /// `exec` (a command in the box).
    pub exec: Duration,
    /// `destroy`, `reap` (stopping takes up to 10 s per box).
    pub destroy: Duration,
    /// `list`, `logs`.
    pub quick: Duration,
}

impl Default for CallDeadlines {
    fn default() -> Self {
        CallDeadlines {
            create: Duration::from_secs(180),
            submit_code: Duration::from_secs(90),
            exec: Duration::from_secs(120),
            destroy: Duration::from_secs(60),
            quick: Duration::from_secs(20),
        }
    }
}

impl CallDeadlines {
    /// The deadline of `method`.
    pub(crate) fn of(&self, m: &str) -> Duration {
        match m {
            method::CREATE => self.create,
            method::SUBMIT_CODE => self.submit_code,
            method::EXEC => self.exec,
            method::DESTROY | method::REAP => self.destroy,
            _ => self.quick,
        }
    }
}

/// Longest error text (in characters) taken from a spoke's answer: it reaches the hub's log
/// and MCP output, and a buggy or hostile spoke could send megabytes of it.
pub(crate) const MAX_REMOTE_ERROR_CHARS: usize = 2000;

type Waiter = SyncSender<Result<Frame, BoxError>>;

/// `error` cut to [`MAX_REMOTE_ERROR_CHARS`] characters, saying so when it was cut.
fn bounded_error(mut error: String) -> String {
    if let Some((cut, _)) = error.char_indices().nth(MAX_REMOTE_ERROR_CHARS) {
        let total = error.len();
        error.truncate(cut);
        error.push_str(&format!("… ({total} bytes, cut)"));
    }
    error
}

/// The hub's handle on one connected spoke.
pub struct RemoteSpoke {
    name: String,
    credential_hash: String,
    socket: Arc<Socket>,
    /// `None` once the connection ended.
    pending: Mutex<Option<HashMap<u64, Waiter>>>,
    next_id: AtomicU64,
    deadlines: CallDeadlines,
}

impl RemoteSpoke {
    /// A handle writing to `socket` (the connection's, shared with its reader).
    pub fn new(
        name: &str,
        credential_hash: &str,
        socket: Arc<Socket>,
        deadlines: CallDeadlines,
    ) -> Self {
        RemoteSpoke {
            name: name.to_string(),
            credential_hash: credential_hash.to_string(),
            socket,
            pending: Mutex::new(Some(HashMap::new())),
            next_id: AtomicU64::new(1),
            deadlines,
        }
    }

    /// The spoke's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Hash of the credential this connection enrolled with.
    pub(crate) fn credential_hash(&self) -> &str {
        &self.credential_hash
    }

    fn lock(&self) -> MutexGuard<'_, Option<HashMap<u64, Waiter>>> {
        // Plain data; a panicking caller cannot leave it inconsistent.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn disconnected(&self) -> BoxError {
        BoxError::Unavailable(format!("spoke {} disconnected", self.name))
    }

    /// Hands a `resp` frame to the call waiting on its id (a late answer is dropped).
    pub(crate) fn complete(&self, frame: Frame) {
        let waiter = self.lock().as_mut().and_then(|p| p.remove(&frame.id));
        match waiter {
            Some(w) => {
                let _ = w.try_send(Ok(frame));
            }
            None => log::debug!(
                "spoke {}: answer for unknown or expired call {}",
                self.name,
                frame.id
            ),
        }
    }

    /// Ends the connection for callers: every waiting call fails with "spoke X disconnected".
    pub(crate) fn fail_all(&self) {
        let waiters = self.lock().take();
        for (_, w) in waiters.into_iter().flatten() {
            let _ = w.try_send(Err(self.disconnected()));
        }
    }

    /// Asks the connection to close (superseded, revoked, hub stopping).
    pub(crate) fn close(&self, reason: &str) {
        self.socket.close(transport::close_normal(reason));
    }

    /// [`close`](RemoteSpoke::close) within a `deadline` shared by the other spokes closed
    /// in the same pass ([`Socket::close_by`]).
    pub(crate) fn close_by(&self, reason: &str, deadline: Instant) {
        self.socket
            .close_by(transport::close_normal(reason), deadline);
    }

    /// Sends `method` with `payload` and waits for the answer's payload (`None` when the
    /// spoke sent none).
    fn call(&self, m: &str, payload: Box<RawValue>) -> Result<Option<Box<RawValue>>, BoxError> {
        let (wtx, wrx) = mpsc::sync_channel(1);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        match self.lock().as_mut() {
            Some(p) => {
                p.insert(id, wtx);
            }
            None => return Err(self.disconnected()),
        }
        let deadline = self.deadlines.of(m);
        let write_by = Instant::now() + deadline.min(transport::WRITE_TIMEOUT);
        if let Err(e) = self
            .socket
            .send_text(Frame::req(id, m, payload).encode(), write_by)
        {
            log::debug!("spoke {}: {m}: {e}", self.name);
            self.forget(id);
            return Err(self.disconnected());
        }
        match wrx.recv_timeout(deadline) {
            Ok(Ok(frame)) if frame.kind != Kind::Resp => Err(self.bad(m, "answer is not a resp")),
            Ok(Ok(frame)) if !frame.error.is_empty() => Err(BoxError::Remote(RemoteError::new(
                frame.error_kind,
                bounded_error(frame.error),
            ))),
            Ok(Ok(frame)) => Ok(frame.payload),
            Ok(Err(e)) => Err(e),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.forget(id);
                Err(BoxError::Unavailable(format!(
                    "spoke {} did not answer {m} within {}",
                    self.name,
                    crate::util::duration::format_duration(deadline)
                )))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(self.disconnected()),
        }
    }

    fn forget(&self, id: u64) {
        if let Some(p) = self.lock().as_mut() {
            p.remove(&id);
        }
    }

    fn bad(&self, m: &str, why: &str) -> BoxError {
        BoxError::Backend(format!("spoke {}: bad answer to {m}: {why}", self.name).into())
    }

    fn decode<T: for<'de> Deserialize<'de>>(
        &self,
        m: &str,
        v: Option<Box<RawValue>>,
    ) -> Result<T, BoxError> {
        let text = v.as_deref().map_or("null", RawValue::get);
        // The answer may carry what must not reach a model (an authorize URL): no quoting.
        serde_json::from_str(text).map_err(|e| self.bad(m, &proto::describe_json_error(&e)))
    }
}

impl BoxManager for RemoteSpoke {
    fn create(&self, opts: CreateOptions) -> Result<Created, BoxError> {
        let req = proto::CreateReq {
            opts: (&opts).into(),
        };
        let v = self.call(method::CREATE, proto::to_value(&req))?;
        let r: proto::CreateResp = self.decode(method::CREATE, v)?;
        Ok(Created {
            id: r.id,
            authorize_url: r.authorize_url,
        })
    }

    fn submit_code(&self, id_or_name: &str, code: &str) -> Result<String, BoxError> {
        let req = proto::SubmitReq {
            id: id_or_name.to_string(),
            code: code.to_string(),
        };
        let v = self.call(method::SUBMIT_CODE, proto::to_value(&req))?;
        let r: proto::SubmitResp = self.decode(method::SUBMIT_CODE, v)?;
        Ok(r.session_url)
    }

    fn list(&self) -> Result<Vec<BoxInfo>, BoxError> {
        let v = self.call(method::LIST, proto::empty_object())?;
        let r: proto::ListResp = self.decode(method::LIST, v)?;
        Ok(r.boxes.unwrap_or_default())
    }

    fn destroy(&self, id_or_name: &str) -> Result<(), BoxError> {
        let req = proto::TargetReq {
            id_or_name: id_or_name.to_string(),
        };
        self.call(method::DESTROY, proto::to_value(&req))?;
        Ok(())
    }

    fn logs(&self, id_or_name: &str, tail: usize) -> Result<String, BoxError> {
        let req = proto::LogsReq {
            id_or_name: id_or_name.to_string(),
            tail,
        };
        let v = self.call(method::LOGS, proto::to_value(&req))?;
        let r: proto::LogsResp = self.decode(method::LOGS, v)?;
        Ok(r.logs)
    }

    fn exec(&self, id_or_name: &str, cmd: &[String]) -> Result<ExecResult, BoxError> {
        let req = proto::ExecReq {
            id_or_name: id_or_name.to_string(),
            cmd: cmd.to_vec(),
        };
        let v = self.call(method::EXEC, proto::to_value(&req))?;
        self.decode(method::EXEC, v)
    }

    fn reap(&self, ttl: Duration) -> Result<Vec<String>, BoxError> {
        let req = proto::ReapReq {
            ttl_nanos: i64::try_from(ttl.as_nanos()).unwrap_or(i64::MAX),
        };
        let v = self.call(method::REAP, proto::to_value(&req))?;
        let r: proto::ReapResp = self.decode(method::REAP, v)?;
        Ok(r.reaped.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::transport::Outgoing;
    use tungstenite::Message;
    use tungstenite::protocol::Role;

    fn spoke_with_answerer(
        answer: impl Fn(Frame) -> Option<Frame> + Send + 'static,
    ) -> std::sync::Arc<RemoteSpoke> {
        let (tx, rx) = mpsc::channel();
        let spoke = std::sync::Arc::new(RemoteSpoke::new(
            "edge",
            "h",
            Socket::queued(Role::Server, tx),
            CallDeadlines {
                quick: Duration::from_millis(300),
                ..Default::default()
            },
        ));
        let s2 = std::sync::Arc::clone(&spoke);
        std::thread::spawn(move || {
            while let Ok(Outgoing::Msg(Message::Text(t))) = rx.recv() {
                let req = Frame::decode(t.as_str()).expect("req");
                if let Some(resp) = answer(req) {
                    s2.complete(resp);
                }
            }
        });
        spoke
    }

    #[test]
    fn ids_count_up_from_one_and_errors_travel() {
        let spoke =
            spoke_with_answerer(|req| Some(Frame::resp_err(req.id, format!("id {}", req.id))));
        let e1 = spoke.list().expect_err("error");
        let e2 = spoke.list().expect_err("error");
        assert_eq!(e1.to_string(), "id 1");
        assert_eq!(e2.to_string(), "id 2");
    }

    #[test]
    fn a_huge_error_from_a_spoke_is_cut_to_the_bound() {
        let spoke = spoke_with_answerer(|req| Some(Frame::resp_err(req.id, "é".repeat(1 << 20))));
        let err = spoke.list().expect_err("error").to_string();
        assert!(
            err.starts_with(&"é".repeat(MAX_REMOTE_ERROR_CHARS)),
            "kept the start"
        );
        assert!(
            err.ends_with("… (2097152 bytes, cut)"),
            "ends badly ({} bytes)",
            err.len()
        );
        assert!(err.chars().count() < MAX_REMOTE_ERROR_CHARS + 40);
        let short = spoke_with_answerer(|req| Some(Frame::resp_err(req.id, "no such box")));
        assert_eq!(short.list().expect_err("error").to_string(), "no such box");
    }

    #[test]
    fn a_missed_deadline_names_the_spoke_and_the_wait() {
        let spoke = spoke_with_answerer(|_| None);
        let err = spoke.list().expect_err("deadline");
        assert!(
            err.to_string()
                .starts_with("spoke edge did not answer list within"),
            "{err}"
        );
    }

    #[test]
    fn fail_all_fails_waiting_and_later_calls() {
        let spoke = spoke_with_answerer(|_| None);
        let s2 = std::sync::Arc::clone(&spoke);
        let waiter = std::thread::spawn(move || s2.logs("x", 1));
        while spoke.lock().as_ref().map(|p| p.is_empty()).unwrap_or(true) {
            std::thread::yield_now();
        }
        spoke.fail_all();
        let err = waiter.join().expect("join").expect_err("failed");
        assert_eq!(err.to_string(), "spoke edge disconnected");
        assert_eq!(
            spoke.list().expect_err("gone").to_string(),
            "spoke edge disconnected"
        );
    }
}
