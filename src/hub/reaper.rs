//! The reaper thread: every `--reap-interval`, one [`Hub::reap_once`] pass (pending boxes older
//! than `--auth-ttl` are removed on every connected spoke and their sessions dropped), then one
//! [`Hub::reconcile`] pass (sessions whose boxes vanished, e.g. while their spoke was away when
//! the hub started, are dropped once the spoke answers again).
//!
//! Thread: `hub-reaper`, owned by [`Reaper`]; it ends when the [`Reaper`] is stopped or
//! dropped (its stop channel closes).

use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;

use super::Hub;

/// Handle on the running reaper; dropping it stops the thread.
pub struct Reaper {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Reaper {
    /// Starts the reaper, or returns `None` when `--reap-interval` is zero (cron-only installs).
    ///
    /// # Errors
    /// The thread could not be started.
    pub fn start(hub: Arc<Hub>) -> std::io::Result<Option<Reaper>> {
        let interval = hub.config().reap_interval;
        if interval.is_zero() {
            return Ok(None);
        }
        let (stop, stopped) = mpsc::channel::<()>();
        // Owns an Arc of the hub; ends when `stop` is used or dropped.
        let thread = std::thread::Builder::new()
            .name("hub-reaper".into())
            .spawn(move || {
                loop {
                    match stopped.recv_timeout(interval) {
                        Err(RecvTimeoutError::Timeout) => {
                            hub.reap_once();
                            // Sessions kept at start because their spoke was away are checked
                            // again once it is back.
                            hub.reconcile();
                        }
                        _ => return,
                    }
                }
            })?;
        Ok(Some(Reaper {
            stop: Some(stop),
            thread: Some(thread),
        }))
    }

    /// Stops the thread and waits for it (at most one pass in progress).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.shutdown();
    }
}
