//! The reconnect loop and its stop handle: [`run`] owns what outlives one connection — the
//! identity it enrolls with, the spare join token, the box manager, the backoff — and acts on
//! the [`Event`]s each connection's [`Handler`] returns; [`SpokeStop`] ends it from another
//! thread.
//!
//! Each turn: dial ([`link::dial`]), let the stop reach the socket, upgrade, send the enroll,
//! serve until the connection ends, then decide: reconnect at once with a reset backoff
//! (welcomed, then ended), after the next backoff delay (never welcomed), enroll with the spare
//! token (saved credentials rejected), or return (rejected, or a local failure retrying cannot
//! fix). The backoff sleeps on the stop signal. Runs on the caller's thread.

use std::sync::{Arc, Mutex, MutexGuard};

use tungstenite::protocol::Role;

use crate::boxes::BoxManager;
use crate::cluster::ClusterError;
use crate::cluster::dial::Backoff;
use crate::cluster::proto::{EnrollPayload, Frame, Kind, to_value};
use crate::cluster::serve::Policy;
use crate::cluster::transport::{self, Flow, Socket};
use crate::util::stop::Stop;

use super::SpokeConfig;
use super::credentials::{self, Credentials, load_credentials, save_credentials};
use super::handler::{Event, Handler};
use super::link::{self, Link, Target};

/// Stops a running [`run`] from another thread.
#[derive(Clone, Default)]
pub struct SpokeStop {
    stop: Stop,
    /// The current connection's socket, closed to end a read or an upgrade.
    socket: Arc<Mutex<Option<Arc<Socket>>>>,
}

impl SpokeStop {
    /// Asks [`run`] to return: ends the backoff sleep, closes the current connection (a
    /// Close to the hub, and a brief wait for its answer; before the upgrade, at once) and
    /// ends the reconnect loop.
    pub fn stop(&self) {
        self.stop.stop();
        let socket = self.lock().clone();
        if let Some(s) = socket {
            s.close(transport::close_normal("spoke stopping"));
        }
    }

    /// Drops the current connection without a close handshake (the loop reconnects): for
    /// tests of reconnects.
    pub fn drop_connection(&self) {
        if let Some(s) = self.lock().as_ref() {
            s.shutdown();
        }
    }

    fn is_stopped(&self) -> bool {
        self.stop.is_stopped()
    }

    fn lock(&self) -> MutexGuard<'_, Option<Arc<Socket>>> {
        self.socket.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `tcp` the socket a stop shuts down; `false` when already stopped. The socket is
    /// set before the flag is read and [`SpokeStop::stop`] sets the flag before it shuts the
    /// socket, so a stop either finds this socket or is seen here.
    fn watch(&self, socket: &Arc<Socket>) -> bool {
        *self.lock() = Some(Arc::clone(socket));
        !self.is_stopped()
    }
}

/// Builds the box manager once the spoke's name (namespace) is known.
pub type ManagerFactory<'a> = &'a mut dyn FnMut(&str) -> Result<Arc<dyn BoxManager>, String>;

/// How one connection ended.
enum Outcome {
    /// Welcomed, then ended (reconnect at once with reset backoff).
    Served(String),
    /// Failed before a welcome (reconnect with backoff).
    Failed(String),
    /// The hub rejected the enrollment.
    Rejected,
    /// A local failure that retrying cannot fix.
    Fatal(ClusterError),
}

/// Runs the spoke until `stop` or a terminal failure.
///
/// # Errors
/// [`ClusterError::Rejected`] when the hub rejects the enrollment (tell the operator to enroll
/// again); bad configuration; a credentials file that cannot be written; the manager factory's
/// error.
pub fn run(
    config: &SpokeConfig,
    factory: ManagerFactory<'_>,
    stop: &SpokeStop,
) -> Result<(), ClusterError> {
    let target = Target::new(
        &config.hub_url,
        config.ca_file.as_deref(),
        config.connect_timeout,
    )?;
    // Saved credentials win over --token: a spoke restarted with the command line it enrolled
    // with must not spend (and be rejected for) its used token. The token stays as a fallback
    // for when those credentials are rejected (revoked, then given a fresh token).
    let mut spare_token = config.token.clone().filter(|t| !t.is_empty());
    let identity = match load_credentials(&config.credentials)? {
        Some(c) => {
            if spare_token.is_some() {
                log::info!(
                    "already enrolled as {:?} ({}); --token is kept in reserve",
                    c.name,
                    config.credentials.display()
                );
            }
            saved_identity(c)
        }
        None => match spare_token.take() {
            Some(token) => token_identity(config, token)?,
            None => {
                return Err(ClusterError::Invalid(format!(
                    "no credentials file {} and no --token: create a join token on the hub (llmbox spoke token create --name NAME) and pass it with --token",
                    config.credentials.display()
                )));
            }
        },
    };
    let mut spoke = Runner {
        config,
        target,
        identity,
        manager: None,
        factory,
        policy: Arc::new(config.policy.clone()),
    };
    let mut backoff = Backoff::new(config.backoff.0, config.backoff.1);
    while !stop.is_stopped() {
        match spoke.connect_once(stop) {
            Outcome::Served(why) => {
                log::warn!("hub connection ended: {why}; reconnecting");
                backoff.reset();
            }
            Outcome::Failed(why) => log::warn!("cannot reach the hub at {}: {why}", spoke.uri()),
            Outcome::Rejected if spare_token.is_some() => {
                log::warn!("the hub rejected the saved credentials; enrolling with --token");
                if let Some(token) = spare_token.take() {
                    spoke.identity = token_identity(config, token)?;
                }
                continue;
            }
            Outcome::Rejected => {
                return Err(ClusterError::Rejected(format!(
                    "the hub rejected this spoke's enrollment (revoked, re-enrolled elsewhere, or a used/expired token); enroll again: run `llmbox spoke token create --name NAME` on the hub and start this spoke with the new --token (credentials file {})",
                    config.credentials.display()
                )));
            }
            Outcome::Fatal(e) => return Err(e),
        }
        if stop.is_stopped() {
            break;
        }
        let delay = backoff.next_delay();
        log::info!("reconnecting in {:.1}s", delay.as_secs_f64());
        stop.stop.wait_timeout(delay);
    }
    Ok(())
}

/// Reconnecting with saved credentials.
fn saved_identity(c: Credentials) -> EnrollPayload {
    EnrollPayload {
        name: c.name,
        credential: c.credential,
        ..Default::default()
    }
}

/// The enrollment payload for a join token, spent only if its credential can be kept.
fn token_identity(config: &SpokeConfig, token: String) -> Result<EnrollPayload, ClusterError> {
    credentials::check_writable(&config.credentials)?;
    Ok(EnrollPayload {
        join_token: token,
        ..Default::default()
    })
}

/// What lives across connections.
struct Runner<'a> {
    config: &'a SpokeConfig,
    target: Target,
    /// What the next connection enrolls with: after the first welcome the token is spent and
    /// the saved credential takes its place.
    identity: EnrollPayload,
    /// Built at the first welcome, kept across reconnects.
    manager: Option<Arc<dyn BoxManager>>,
    factory: ManagerFactory<'a>,
    policy: Arc<Policy>,
}

impl Runner<'_> {
    fn uri(&self) -> &tungstenite::http::Uri {
        self.target.uri()
    }

    /// One connection, from dial to its end.
    fn connect_once(&mut self, stop: &SpokeStop) -> Outcome {
        let tcp = match link::dial(&self.target) {
            Ok(tcp) => tcp,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        let socket = Socket::new(tcp, Role::Client);
        if !stop.watch(&socket) {
            return Outcome::Served("stopping".into());
        }
        let link = match Link::upgrade(&self.target, socket) {
            Ok(link) => link,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        let enroll = Frame {
            payload: Some(to_value(&self.identity)),
            ..Frame::new(Kind::Enroll)
        };
        link.send_text(enroll.encode());
        let mut handler = Handler::new(
            link.socket(),
            &self.identity.name,
            Arc::clone(&self.policy),
            self.config.max_workers,
            self.manager.clone(),
        );
        let mut outcome = None;
        let mut served = false;
        let end = link.serve(
            self.config.heartbeat,
            &mut |text| match handler.on_text(text) {
                Event::Handled => Flow::Continue,
                Event::Welcomed { name, credentials } => match self.welcomed(&name, credentials) {
                    Ok(manager) => {
                        handler.serve_with(manager);
                        log::info!("connected to the hub as {name:?}");
                        served = true;
                        Flow::Continue
                    }
                    Err((fatal, why)) => {
                        outcome = Some(Outcome::Fatal(fatal));
                        Flow::Stop(why.into())
                    }
                },
                Event::BadWelcome(why) => {
                    outcome = Some(Outcome::Fatal(ClusterError::Protocol(why)));
                    Flow::Stop("bad welcome".into())
                }
                Event::Rejected(error) => {
                    log::error!("hub: {error}");
                    outcome = Some(Outcome::Rejected);
                    Flow::Stop("enrollment rejected".into())
                }
                Event::End(why) => Flow::Stop(why),
            },
        );
        match outcome {
            Some(o) => o,
            None if served => Outcome::Served(end.to_string()),
            None => Outcome::Failed(end.to_string()),
        }
    }

    /// Acts on a welcome: saves new credentials (and enrolls with them from now on) and builds
    /// the box manager the first time; the manager to serve with, or the fatal error and the
    /// reason the connection ends.
    fn welcomed(
        &mut self,
        name: &str,
        credentials: Option<Credentials>,
    ) -> Result<Arc<dyn BoxManager>, (ClusterError, &'static str)> {
        if let Some(creds) = credentials {
            save_credentials(&self.config.credentials, &creds)
                .map_err(|e| (e, "cannot save credentials"))?;
            log::info!(
                "enrolled as {name:?}; credentials saved to {}",
                self.config.credentials.display()
            );
            self.identity = saved_identity(creds);
        }
        if let Some(m) = &self.manager {
            return Ok(Arc::clone(m));
        }
        let manager =
            (self.factory)(name).map_err(|e| (ClusterError::Manager(e), "no box manager"))?;
        self.manager = Some(Arc::clone(&manager));
        Ok(manager)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boxes::memory::MemoryBoxManager;
    use crate::cluster::proto::EnrollPayload;
    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::thread;
    use std::time::{Duration, Instant};

    const CRED: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    use crate::cluster::spoke::TestDir as Dir;

    fn config(url: &str, dir: &Dir, token: Option<&str>) -> SpokeConfig {
        let mut c = SpokeConfig::new(url);
        c.token = token.map(str::to_string);
        c.credentials = dir.0.join("creds.json");
        c.backoff = (Duration::from_millis(10), Duration::from_millis(20));
        c
    }

    /// A scripted hub: for each answer, accepts one connection, reads the enroll, reports its
    /// payload, sends the answer and closes.
    fn scripted_hub(
        answers: Vec<String>,
    ) -> (
        String,
        mpsc::Receiver<EnrollPayload>,
        thread::JoinHandle<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("ws://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = mpsc::channel();
        let hub = thread::spawn(move || {
            for answer in answers {
                let (tcp, _) = listener.accept().expect("accept");
                let mut ws = tungstenite::accept(tcp).expect("upgrade");
                let enroll = ws.read().expect("enroll");
                let frame = Frame::decode(enroll.to_text().expect("text")).expect("frame");
                assert_eq!(frame.kind, Kind::Enroll);
                tx.send(frame.payload_as().expect("payload"))
                    .expect("report");
                ws.send(tungstenite::Message::text(answer)).expect("answer");
                let _ = ws.close(None);
                while ws.read().is_ok() {}
            }
        });
        (url, rx, hub)
    }

    fn welcome(name: &str, credential: &str) -> String {
        format!(r#"{{"type":"welcome","payload":{{"name":"{name}","credential":"{credential}"}}}}"#)
    }

    const REJECTED: &str = r#"{"type":"err","error":"enrollment rejected"}"#;

    fn memory_factory() -> impl FnMut(&str) -> Result<Arc<dyn BoxManager>, String> {
        |name: &str| Ok(Arc::new(MemoryBoxManager::new(name, 5)) as Arc<dyn BoxManager>)
    }

    #[test]
    fn the_welcomed_identity_is_saved_and_used_for_the_next_enrollment() {
        let dir = Dir::new("identity");
        let (url, enrolls, hub) = scripted_hub(vec![welcome("edge-1", CRED), REJECTED.to_string()]);
        let config = config(&url, &dir, Some("the-token"));
        let err = run(&config, &mut memory_factory(), &SpokeStop::default())
            .expect_err("the second enrollment is rejected");
        assert!(matches!(err, ClusterError::Rejected(_)), "{err}");
        let first = enrolls.recv().expect("first enroll");
        assert_eq!(first.join_token, "the-token");
        let second = enrolls.recv().expect("second enroll");
        assert_eq!(
            (second.name.as_str(), second.credential.as_str()),
            ("edge-1", CRED)
        );
        assert!(second.join_token.is_empty());
        assert_eq!(
            load_credentials(&config.credentials).expect("load"),
            Some(Credentials {
                name: "edge-1".into(),
                credential: CRED.into(),
            })
        );
        hub.join().expect("hub");
    }

    #[test]
    fn rejected_saved_credentials_fall_back_to_the_spare_token() {
        let dir = Dir::new("spare");
        let (url, enrolls, hub) = scripted_hub(vec![REJECTED.to_string(), REJECTED.to_string()]);
        let config = config(&url, &dir, Some("spare-token"));
        let saved = Credentials {
            name: "edge-1".into(),
            credential: CRED.into(),
        };
        save_credentials(&config.credentials, &saved).expect("save");
        let err = run(&config, &mut memory_factory(), &SpokeStop::default()).expect_err("rejected");
        assert!(matches!(err, ClusterError::Rejected(_)), "{err}");
        assert_eq!(enrolls.recv().expect("first").name, "edge-1");
        assert_eq!(enrolls.recv().expect("second").join_token, "spare-token");
        hub.join().expect("hub");
    }

    #[test]
    fn a_welcome_under_another_name_ends_the_run_and_saves_nothing() {
        let dir = Dir::new("othername");
        let (url, _enrolls, hub) = scripted_hub(vec![welcome("edge-2", "")]);
        let config = config(&url, &dir, None);
        let saved = Credentials {
            name: "edge-1".into(),
            credential: CRED.into(),
        };
        save_credentials(&config.credentials, &saved).expect("save");
        let err = run(&config, &mut memory_factory(), &SpokeStop::default()).expect_err("fatal");
        assert!(err.to_string().contains("but it enrolled as"), "{err}");
        assert_eq!(
            load_credentials(&config.credentials).expect("load"),
            Some(saved)
        );
        hub.join().expect("hub");
    }

    #[test]
    fn no_credentials_and_no_token_is_a_configuration_error() {
        let dir = Dir::new("nothing");
        let config = config("ws://127.0.0.1:9", &dir, None);
        let err = run(&config, &mut memory_factory(), &SpokeStop::default()).expect_err("invalid");
        assert!(
            matches!(&err, ClusterError::Invalid(m) if m.contains("no --token")),
            "{err}"
        );
    }

    #[test]
    fn a_stop_ends_the_backoff_sleep_at_once() {
        let dir = Dir::new("backoff");
        // Nobody listens: every dial fails and the loop sleeps its (long) backoff.
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("ws://{}", listener.local_addr().expect("addr"));
        drop(listener);
        let mut config = config(&url, &dir, Some("t"));
        config.backoff = (Duration::from_secs(600), Duration::from_secs(600));
        let stop = SpokeStop::default();
        let (s, (tx, rx)) = (stop.clone(), mpsc::channel());
        let spoke = thread::spawn(move || {
            let r = run(&config, &mut memory_factory(), &s);
            let _ = tx.send(r.is_ok());
        });
        thread::sleep(Duration::from_millis(100));
        let start = Instant::now();
        stop.stop();
        // A liveness bound far below the 10-minute backoff.
        assert_eq!(rx.recv_timeout(Duration::from_secs(30)), Ok(true));
        assert!(start.elapsed() < Duration::from_secs(30));
        spoke.join().expect("spoke");
    }
}
