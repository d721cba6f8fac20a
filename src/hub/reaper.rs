//! The reaper thread: every `--reap-interval`, one [`Hub::reap_once`] pass (pending boxes older
//! than `--auth-ttl` are removed on every connected spoke and their sessions dropped), then one
//! [`Hub::reconcile`] pass (sessions whose boxes vanished, e.g. while their spoke was away when
//! the hub started, are dropped once the spoke answers again).
//!
//! Thread: `hub-reaper`, owned by [`Reaper`]; it ends when the [`Reaper`] is stopped or
//! dropped (its [`StopHandle`] gives the signal the thread sleeps on, and joins it).

use std::sync::Arc;

use crate::util::stop::StopHandle;

use super::Hub;

/// Handle on the running reaper; dropping it stops the thread.
pub struct Reaper {
    thread: StopHandle,
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
        let mut thread = StopHandle::new();
        // Owns an Arc of the hub; ends when the reaper stops (a pass in progress finishes).
        thread.spawn("hub-reaper", move |stop| {
            while !stop.wait_timeout(interval) {
                hub.reap_once();
                // Sessions kept at start because their spoke was away are checked again once
                // it is back.
                hub.reconcile();
            }
        })?;
        Ok(Some(Reaper { thread }))
    }

    /// Stops the thread and waits for it (at most one pass in progress), as dropping it does.
    pub fn stop(self) {
        self.thread.stop();
    }
}
