//! One way to stop a background loop: a [`Stop`] signal that loops check between steps and
//! sleep on (a stop ends the sleep at once), plus wakers that unblock what a condvar cannot reach
//! (a blocking `accept`, a socket read), and a [`StopHandle`] that owns the loops' threads and
//! stops and joins them when stopped or dropped.
//!
//! Before this, each loop stopped its own way (a flag and a condvar and a self-connect, a
//! dropped channel, 50 ms polling) and dropping a handle stopped some loops and not others.
//!
//! Invariants: a stop is never missed — the flag is set and checked under the same lock the
//! waits and the waker registrations take; a stop is final; wakers run once, on the stopping
//! thread, outside the lock (they may block briefly, e.g. connecting to a listener).
//! No threads of its own.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Something that unblocks a loop stuck in a call the condvar cannot interrupt.
type WakeFn = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct State {
    stopped: bool,
    next_waker: u64,
    wakers: BTreeMap<u64, WakeFn>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

/// A stop signal, shared by clones: one side calls [`Stop::stop`], loops call
/// [`Stop::is_stopped`] and sleep with [`Stop::wait_timeout`].
#[derive(Clone, Default)]
pub(crate) struct Stop {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stop")
            .field("stopped", &self.is_stopped())
            .finish()
    }
}

impl Stop {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A waker that panicked poisons nothing we rely on: the state is a flag and a map.
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gives the signal: every wait returns `true`, every registered waker runs (once, here).
    /// Later calls do nothing.
    pub(crate) fn stop(&self) {
        let wakers = {
            let mut state = self.lock();
            if state.stopped {
                return;
            }
            state.stopped = true;
            std::mem::take(&mut state.wakers)
        };
        self.shared.changed.notify_all();
        for (_, wake) in wakers {
            wake();
        }
    }

    /// Whether the signal was given.
    pub(crate) fn is_stopped(&self) -> bool {
        self.lock().stopped
    }

    /// Sleeps for `timeout` or until the signal, whichever comes first; `true` when stopped.
    /// A timeout too far off to represent means waiting for the signal alone.
    pub(crate) fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        let mut state = self.lock();
        loop {
            if state.stopped {
                return true;
            }
            let left = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return false,
                },
                None => Duration::from_secs(3600),
            };
            // Spurious wakeups loop back to the flag and the deadline.
            state = match self.shared.changed.wait_timeout(state, left) {
                Ok((s, _)) => s,
                Err(e) => e.into_inner().0,
            };
        }
    }

    /// Runs `wake` when the signal is given, for as long as the returned guard lives: the way
    /// to unblock a call the condvar cannot reach (shut a socket down, connect to a listener).
    /// Already stopped: `wake` runs now.
    pub(crate) fn on_stop(&self, wake: impl FnOnce() + Send + 'static) -> Waker {
        let mut state = self.lock();
        if state.stopped {
            drop(state);
            wake();
            return Waker {
                stop: self.clone(),
                id: None,
            };
        }
        let id = state.next_waker;
        state.next_waker += 1;
        state.wakers.insert(id, Box::new(wake));
        Waker {
            stop: self.clone(),
            id: Some(id),
        }
    }
}

/// A registration made by [`Stop::on_stop`]; dropping it withdraws the waker.
#[must_use = "dropping the guard withdraws the waker at once"]
pub(crate) struct Waker {
    stop: Stop,
    id: Option<u64>,
}

impl Drop for Waker {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.stop.lock().wakers.remove(&id);
        }
    }
}

/// Owns a [`Stop`] and the threads that watch it. [`StopHandle::stop`] — or dropping the
/// handle — gives the signal and joins every thread, so no loop outlives its handle.
#[derive(Default)]
pub(crate) struct StopHandle {
    stop: Stop,
    wakers: Vec<Waker>,
    threads: Vec<JoinHandle<()>>,
}

impl StopHandle {
    /// A handle with no threads yet.
    pub(crate) fn new() -> Self {
        StopHandle::default()
    }

    /// The signal its threads watch (the unit tests stop through it).
    #[cfg(test)]
    pub(crate) fn signal(&self) -> Stop {
        self.stop.clone()
    }

    /// Runs `wake` when the handle stops (kept for the handle's life).
    pub(crate) fn on_stop(&mut self, wake: impl FnOnce() + Send + 'static) {
        let waker = self.stop.on_stop(wake);
        self.wakers.push(waker);
    }

    /// Starts a thread named `name` running `body` with the signal; the handle joins it.
    ///
    /// # Errors
    /// The thread could not be started.
    pub(crate) fn spawn(
        &mut self,
        name: impl Into<String>,
        body: impl FnOnce(Stop) + Send + 'static,
    ) -> io::Result<()> {
        let stop = self.stop.clone();
        let thread = thread::Builder::new()
            .name(name.into())
            .spawn(move || body(stop))?;
        self.threads.push(thread);
        Ok(())
    }

    /// Waits for the threads to end on their own (or by a [`Stop::stop`] from elsewhere),
    /// without giving the signal.
    pub(crate) fn wait(mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    /// Gives the signal and joins the threads.
    pub(crate) fn stop(self) {
        drop(self);
    }
}

impl Drop for StopHandle {
    fn drop(&mut self) {
        self.stop.stop();
        self.wakers.clear();
        for t in self.threads.drain(..) {
            // A thread that panicked has nothing left to stop.
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    #[test]
    fn a_wait_without_a_stop_times_out_false() {
        let stop = Stop::default();
        let start = Instant::now();
        assert!(!stop.wait_timeout(Duration::from_millis(20)));
        assert!(start.elapsed() >= Duration::from_millis(20));
        assert!(!stop.is_stopped());
    }

    #[test]
    fn a_stop_ends_a_long_wait_on_another_thread() {
        let stop = Stop::default();
        let (tx, rx) = mpsc::channel();
        let s = stop.clone();
        let waiter = thread::spawn(move || tx.send(s.wait_timeout(Duration::MAX)));
        stop.stop();
        // A liveness bound: without the stop the wait would last forever.
        assert_eq!(rx.recv_timeout(Duration::from_secs(30)), Ok(true));
        waiter.join().expect("waiter").expect("sent");
    }

    #[test]
    fn a_stop_given_before_the_wait_is_not_missed() {
        let stop = Stop::default();
        stop.stop();
        stop.stop();
        assert!(stop.wait_timeout(Duration::MAX));
        assert!(stop.clone().is_stopped());
    }

    #[test]
    fn wakers_run_once_on_stop_and_not_after_their_guard_is_dropped() {
        let stop = Stop::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = |runs: &Arc<AtomicUsize>| {
            let runs = Arc::clone(runs);
            move || {
                runs.fetch_add(1, Ordering::SeqCst);
            }
        };
        let kept = stop.on_stop(counted(&runs));
        drop(stop.on_stop(move || panic!("a withdrawn waker ran")));
        stop.stop();
        stop.stop();
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        drop(kept);
        // Registered after the stop: runs at once.
        let _late = stop.on_stop(counted(&runs));
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn dropping_the_handle_stops_and_joins_its_threads() {
        let mut handle = StopHandle::new();
        let (tx, rx) = mpsc::channel();
        handle
            .spawn("stop-test-loop", move |stop| {
                let mut turns = 0;
                while !stop.wait_timeout(Duration::from_millis(1)) {
                    turns += 1;
                }
                let name = thread::current().name().map(str::to_string);
                let _ = tx.send((turns, name));
            })
            .expect("spawn");
        let woke = Arc::new(AtomicUsize::new(0));
        let w = Arc::clone(&woke);
        handle.on_stop(move || {
            w.fetch_add(1, Ordering::SeqCst);
        });
        drop(handle);
        // Joined: the thread already reported before the drop returned.
        let (_, name) = rx
            .try_recv()
            .expect("the loop ended before the drop returned");
        assert_eq!(name.as_deref(), Some("stop-test-loop"));
        assert_eq!(woke.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn wait_joins_threads_stopped_from_elsewhere() {
        let mut handle = StopHandle::new();
        let signal = handle.signal();
        handle
            .spawn("stop-test-wait", |stop| {
                stop.wait_timeout(Duration::MAX);
            })
            .expect("spawn");
        let stopper = thread::spawn(move || signal.stop());
        handle.wait();
        stopper.join().expect("stopper");
    }
}
