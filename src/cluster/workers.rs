//! The spoke's bounded verb workers (DESIGN §3): each request runs on its own worker thread so
//! a slow `exec` never blocks a `list`; past the bound a request is refused at once.
//!
//! Threads are kept for reuse instead of spawned per request (a spawn costs more than a whole
//! loopback round trip). Invariant: there are always at least as many threads as accepted jobs
//! not yet finished, so an accepted job never waits behind another. Threads (`spoke-verb`) end
//! when the pool is dropped (the job channel closes).

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;

use crate::util::slot::{Slot, Slots};

/// Stack of a verb worker (it runs Docker calls).
pub(crate) const WORKER_STACK: usize = 1 << 20;

/// A job and the busy slot it gives back when it ends (by return or by panic).
type Job = (Box<dyn FnOnce() + Send + 'static>, Slot);

/// Why a job was not accepted.
#[derive(Debug)]
pub(crate) enum Refused {
    /// `max` jobs are already running.
    Busy(usize),
    /// A worker thread could not be started.
    Spawn(io::Error),
}

/// A pool of at most `max` worker threads.
pub(crate) struct Pool {
    max: usize,
    tx: Sender<Job>,
    rx: Arc<Mutex<Receiver<Job>>>,
    /// Jobs accepted and not yet finished.
    busy: Slots,
    threads: AtomicUsize,
}

impl Pool {
    /// An empty pool; threads start on demand.
    pub(crate) fn new(max: usize) -> Self {
        let (tx, rx) = mpsc::channel();
        Pool {
            max: max.max(1),
            tx,
            rx: Arc::new(Mutex::new(rx)),
            busy: Slots::new(),
            threads: AtomicUsize::new(0),
        }
    }

    /// Runs `job` on a worker now, or refuses it. Called from one thread (the connection's
    /// reader), which is what keeps the thread count at or above the accepted jobs.
    ///
    /// # Errors
    /// [`Refused::Busy`] at the bound; [`Refused::Spawn`] when no thread could be started.
    pub(crate) fn submit(&self, job: impl FnOnce() + Send + 'static) -> Result<(), Refused> {
        let Some(slot) = self.busy.try_take(self.max) else {
            return Err(Refused::Busy(self.max));
        };
        // (A refused job's slot goes back as it drops on the way out.)
        if self.threads.load(Ordering::SeqCst) < self.busy.taken() {
            self.spawn().map_err(Refused::Spawn)?;
        }
        self.tx
            .send((Box::new(job), slot))
            .expect("the pool owns the receiver, so the channel is open");
        Ok(())
    }

    fn spawn(&self) -> io::Result<()> {
        let rx = Arc::clone(&self.rx);
        // Takes jobs until the pool (the only sender) is dropped.
        thread::Builder::new()
            .name("spoke-verb".into())
            .stack_size(WORKER_STACK)
            .spawn(move || {
                loop {
                    // The lock is held only while waiting for the next job, never while running it.
                    let job = match rx.lock() {
                        Ok(guard) => guard.recv(),
                        Err(poisoned) => poisoned.into_inner().recv(),
                    };
                    let Ok((job, _busy)) = job else { break };
                    // A panicking job must not take its thread along: the pool counts on
                    // its threads to run every accepted job.
                    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                        log::error!("spoke-verb: a verb panicked; the worker keeps serving");
                    }
                }
            })?;
        self.threads.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Worker threads started so far (the unit tests' view of the pool).
    #[cfg(test)]
    pub(crate) fn threads(&self) -> usize {
        self.threads.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;
    use std::time::Duration;

    #[test]
    fn jobs_past_the_bound_are_refused_and_threads_are_reused() {
        let pool = Pool::new(2);
        let gate = Arc::new(Barrier::new(3));
        for _ in 0..2 {
            let g = Arc::clone(&gate);
            pool.submit(move || {
                g.wait();
            })
            .expect("accepted");
        }
        assert!(matches!(pool.submit(|| {}), Err(Refused::Busy(2))));
        gate.wait();
        // Once both finished, new jobs run on the same two threads.
        let (tx, rx) = mpsc::channel();
        for i in 0..10 {
            let tx = tx.clone();
            loop {
                let tx = tx.clone();
                if pool.submit(move || tx.send(i).expect("send")).is_ok() {
                    break;
                }
                thread::sleep(Duration::from_millis(1));
            }
        }
        let mut got: Vec<i32> = (0..10).map(|_| rx.recv().expect("ran")).collect();
        got.sort_unstable();
        assert_eq!(got, (0..10).collect::<Vec<_>>());
        assert_eq!(pool.threads(), 2);
    }

    #[test]
    fn a_panicking_job_leaves_its_thread_serving_the_next_one() {
        let pool = Pool::new(1);
        pool.submit(|| panic!("a verb bug")).expect("accepted");
        let (tx, rx) = mpsc::channel();
        loop {
            let tx = tx.clone();
            if pool.submit(move || tx.send(()).expect("send")).is_ok() {
                break;
            }
            thread::sleep(Duration::from_millis(1));
        }
        // A liveness bound, not a timing assertion: without a thread the job never runs.
        rx.recv_timeout(Duration::from_secs(30))
            .expect("the job after a panic ran");
        assert_eq!(pool.threads(), 1);
    }

    #[test]
    fn a_slow_job_does_not_hold_up_a_quick_one() {
        let pool = Pool::new(4);
        let (slow_tx, slow_rx) = mpsc::channel::<()>();
        pool.submit(move || {
            let _ = slow_rx.recv();
        })
        .expect("slow");
        let (tx, rx) = mpsc::channel();
        pool.submit(move || tx.send("quick").expect("send"))
            .expect("quick");
        assert_eq!(rx.recv().expect("quick ran"), "quick");
        drop(slow_tx);
    }
}
