//! One connection's frames from the hub: text in, an [`Event`] out. The handler checks a
//! welcome and says whom the hub welcomed; it dispatches requests to the verb workers and queues
//! their answers itself; everything that outlives the connection (the saved identity, the box
//! manager, the outcome) is the loop's to decide from the events ([`super::reconnect`]).
//!
//! Invariants: a welcome is believed only if it names a valid spoke name — the one enrolled
//! under, on a reconnect — and a credential that is empty or 64 hex characters; only the first
//! welcome counts. Answers are counted from a request's acceptance until written: past
//! [`MAX_QUEUED_ANSWERS`] the connection ends. No threads of its own (verbs run on the
//! connection's [`Pool`]).

use std::sync::Arc;
use std::time::Instant;

use tungstenite::Message;

use crate::boxes::BoxManager;
use crate::cluster::proto::{Frame, Kind, WelcomePayload, describe_json_error};
use crate::cluster::serve::{self, Policy};
use crate::cluster::tokens::validate_spoke_name;
use crate::cluster::transport::{Socket, WRITE_TIMEOUT};
use crate::cluster::workers::{Pool, Refused};
use crate::util::secret::is_hex_64;
use crate::util::slot::{Slot, Slots};

use super::{Credentials, MAX_QUEUED_ANSWERS};

/// What one frame from the hub amounted to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// Nothing for the loop to do: a request dispatched or answered, a frame ignored.
    Handled,
    /// The hub welcomed this spoke as `name` and the welcome holds up. `credentials` are new
    /// ones to save (a first enrollment), `None` on a reconnect. The loop must give the handler
    /// a box manager ([`Handler::serve_with`]) for requests to be served.
    Welcomed {
        /// The spoke's name (its box namespace).
        name: String,
        /// A newly minted identity, to be saved before anything else.
        credentials: Option<Credentials>,
    },
    /// The welcome does not hold up (the reason, for the operator): a hub that makes up names
    /// or credentials is not one to keep talking to.
    BadWelcome(String),
    /// The hub rejected the enrollment (its error text).
    Rejected(String),
    /// This connection must end (why); the loop reconnects.
    End(String),
}

/// One connection's message handling.
pub(crate) struct Handler {
    socket: Arc<Socket>,
    /// The name this connection enrolled under (empty for a join token: the hub names it).
    expected_name: String,
    /// Set at the first welcome: later ones are ignored.
    welcomed: bool,
    manager: Option<Arc<dyn BoxManager>>,
    policy: Arc<Policy>,
    workers: Pool,
    /// Answers queued and not yet written (see [`MAX_QUEUED_ANSWERS`]).
    answers: Slots,
}

impl Handler {
    /// A handler answering through `socket`, for a connection enrolled as `expected_name` (empty
    /// with a join token), serving with `manager` once there is one.
    pub(crate) fn new(
        socket: Arc<Socket>,
        expected_name: &str,
        policy: Arc<Policy>,
        max_workers: usize,
        manager: Option<Arc<dyn BoxManager>>,
    ) -> Handler {
        Handler {
            socket,
            expected_name: expected_name.to_string(),
            welcomed: false,
            manager,
            policy,
            workers: Pool::new(max_workers),
            answers: Slots::new(),
        }
    }

    /// Serves further requests with `manager`.
    pub(crate) fn serve_with(&mut self, manager: Arc<dyn BoxManager>) {
        self.manager = Some(manager);
    }

    /// Handles one text message from the hub.
    pub(crate) fn on_text(&mut self, text: &str) -> Event {
        let frame = match Frame::decode(text) {
            Ok(f) => f,
            Err(e) => {
                log::warn!(
                    "undecodable message from the hub ignored: {}",
                    describe_json_error(&e)
                );
                return Event::Handled;
            }
        };
        match frame.kind {
            Kind::Welcome => self.on_welcome(&frame),
            Kind::Err => Event::Rejected(frame.error),
            Kind::Req => self.on_req(frame),
            other => {
                log::warn!("unexpected {other:?} frame from the hub ignored");
                Event::Handled
            }
        }
    }

    fn on_welcome(&mut self, frame: &Frame) -> Event {
        if self.welcomed {
            log::warn!("a second welcome from the hub ignored");
            return Event::Handled;
        }
        let w: WelcomePayload = match frame.payload_as() {
            Ok(w) => w,
            Err(e) => return Event::End(format!("bad welcome: {}", describe_json_error(&e))),
        };
        // The name becomes this host's box namespace (Docker labels) and the credential goes
        // to disk: take neither from a hub that makes them up.
        if let Err(why) = self.check_welcome(&w) {
            return Event::BadWelcome(why);
        }
        self.welcomed = true;
        let credentials = (!w.credential.is_empty()).then(|| Credentials {
            name: w.name.clone(),
            credential: w.credential,
        });
        Event::Welcomed {
            name: w.name,
            credentials,
        }
    }

    fn check_welcome(&self, w: &WelcomePayload) -> Result<(), String> {
        if let Err(e) = validate_spoke_name(&w.name) {
            return Err(format!(
                "the hub welcomed this spoke under an invalid spoke name: {e}"
            ));
        }
        if !self.expected_name.is_empty() && w.name != self.expected_name {
            return Err(format!(
                "the hub welcomed this spoke as {:?}, but it enrolled as {:?}",
                w.name, self.expected_name
            ));
        }
        if !w.credential.is_empty() && !is_hex_64(&w.credential) {
            return Err(
                "the hub's welcome carries a malformed credential (not 64 hex characters)".into(),
            );
        }
        Ok(())
    }

    /// Sends `resp` to the hub, counted until written.
    fn answer(&self, resp: &Frame) {
        send_answer(&self.socket, resp, self.answers.take());
    }

    fn on_req(&mut self, frame: Frame) -> Event {
        let queued = self.answers.taken();
        if queued >= MAX_QUEUED_ANSWERS {
            return Event::End(format!(
                "the hub does not read its answers ({queued} queued)"
            ));
        }
        let Some(manager) = self.manager.clone() else {
            self.answer(&Frame::resp_err(frame.id, "spoke not enrolled yet"));
            return Event::Handled;
        };
        let (socket, policy) = (Arc::clone(&self.socket), Arc::clone(&self.policy));
        let id = frame.id;
        // Counted from acceptance: a running verb's answer is as good as queued.
        let slot = self.answers.take();
        let job = move || {
            let resp = serve::handle(manager.as_ref(), &policy, &frame);
            send_answer(&socket, &resp, slot);
        };
        let refused = match self.workers.submit(job) {
            Ok(()) => return Event::Handled,
            Err(Refused::Busy(max)) => {
                format!("spoke busy: {max} verbs already running; try again shortly")
            }
            Err(Refused::Spawn(e)) => format!("spoke cannot start a worker: {e}"),
        };
        self.answer(&Frame::resp_err(id, refused));
        Event::Handled
    }
}

/// Writes (or, over TLS, queues) one answer, holding `slot` until it is written. A hub that
/// does not read it within [`WRITE_TIMEOUT`] loses the connection.
fn send_answer(socket: &Socket, resp: &Frame, slot: Slot) {
    let msg = Message::text(resp.encode());
    if let Err(e) = socket.send_counted(msg, slot, Instant::now() + WRITE_TIMEOUT) {
        log::debug!("answer {} not sent: {e}", resp.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boxes::memory::MemoryBoxManager;
    use crate::cluster::transport::Outgoing;
    use std::sync::mpsc::{self, Receiver};
    use std::time::Duration;
    use tungstenite::protocol::Role;

    const CRED: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn handler(expected: &str) -> (Handler, Receiver<Outgoing>) {
        let (tx, rx) = mpsc::channel();
        let h = Handler::new(
            Socket::queued(Role::Client, tx),
            expected,
            Arc::new(Policy::default()),
            4,
            None,
        );
        (h, rx)
    }

    fn welcome(name: &str, credential: &str) -> String {
        format!(r#"{{"type":"welcome","payload":{{"name":"{name}","credential":"{credential}"}}}}"#)
    }

    /// The next answer the handler queued, as (id, error).
    fn next_answer(rx: &Receiver<Outgoing>) -> (u64, String) {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Outgoing::Counted(msg, _)) => {
                let frame = Frame::decode(msg.to_text().expect("text")).expect("frame");
                assert_eq!(frame.kind, Kind::Resp);
                (frame.id, frame.error)
            }
            other => panic!("expected a counted answer, got {other:?}"),
        }
    }

    #[test]
    fn a_first_enrollment_welcome_returns_the_new_identity_once() {
        let (mut h, _rx) = handler("");
        assert_eq!(
            h.on_text(&welcome("edge-1", CRED)),
            Event::Welcomed {
                name: "edge-1".into(),
                credentials: Some(Credentials {
                    name: "edge-1".into(),
                    credential: CRED.into(),
                }),
            }
        );
        assert_eq!(h.on_text(&welcome("edge-2", CRED)), Event::Handled);
    }

    #[test]
    fn a_reconnect_welcome_carries_no_credentials_to_save() {
        let (mut h, _rx) = handler("edge-1");
        assert_eq!(
            h.on_text(&welcome("edge-1", "")),
            Event::Welcomed {
                name: "edge-1".into(),
                credentials: None,
            }
        );
    }

    #[test]
    fn welcomes_that_do_not_hold_up_are_refused_with_a_reason() {
        let cases = [
            ("", welcome("Not Valid", CRED), "invalid spoke name"),
            ("edge-1", welcome("edge-2", CRED), "but it enrolled as"),
            ("", welcome("edge-1", "abc"), "malformed credential"),
        ];
        for (expected, text, why) in cases {
            let (mut h, _rx) = handler(expected);
            match h.on_text(&text) {
                Event::BadWelcome(reason) => assert!(reason.contains(why), "{reason}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        let (mut h, _rx) = handler("");
        let end = h.on_text(r#"{"type":"welcome","payload":[1]}"#);
        assert!(
            matches!(&end, Event::End(why) if why.starts_with("bad welcome")),
            "{end:?}"
        );
    }

    #[test]
    fn a_rejection_ends_with_the_hubs_words_and_noise_is_ignored() {
        let (mut h, _rx) = handler("edge-1");
        assert_eq!(
            h.on_text(r#"{"type":"err","error":"enrollment rejected"}"#),
            Event::Rejected("enrollment rejected".into())
        );
        assert_eq!(h.on_text("not json"), Event::Handled);
        assert_eq!(h.on_text(r#"{"type":"enroll"}"#), Event::Handled);
    }

    #[test]
    fn requests_before_a_manager_are_answered_not_enrolled_yet() {
        let (mut h, rx) = handler("");
        assert_eq!(
            h.on_text(r#"{"type":"req","id":7,"method":"list","payload":{}}"#),
            Event::Handled
        );
        assert_eq!(next_answer(&rx), (7, "spoke not enrolled yet".into()));
    }

    #[test]
    fn requests_run_on_the_manager_given_after_the_welcome() {
        let (mut h, rx) = handler("");
        h.on_text(&welcome("edge-1", CRED));
        h.serve_with(Arc::new(MemoryBoxManager::new("edge-1", 5)));
        assert_eq!(
            h.on_text(r#"{"type":"req","id":9,"method":"list","payload":{}}"#),
            Event::Handled
        );
        assert_eq!(next_answer(&rx), (9, String::new()));
    }

    #[test]
    fn a_hub_that_never_reads_its_answers_ends_the_connection() {
        let (mut h, rx) = handler("");
        let req = r#"{"type":"req","id":1,"method":"list","payload":{}}"#;
        // Every answer stays in `rx`, unwritten.
        for _ in 0..MAX_QUEUED_ANSWERS {
            assert_eq!(h.on_text(req), Event::Handled);
        }
        let end = h.on_text(req);
        assert!(
            matches!(&end, Event::End(why) if why.contains("does not read its answers")),
            "{end:?}"
        );
        // Written (dropped here), the answers make room again.
        drop(rx);
        assert_eq!(h.on_text(req), Event::Handled);
    }
}
