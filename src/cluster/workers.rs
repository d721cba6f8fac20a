//! The spoke's bounded verb workers (DESIGN §3): each request runs on its own worker thread so
//! a slow `exec` never blocks a `list`; past the bound a request is refused at once.
//!
//! Threads are kept for reuse instead of spawned per request (a spawn costs more than a whole
//! loopback round trip). Invariant: there are always at least as many threads as accepted jobs
//! not yet finished, so an accepted job never waits behind another. Threads (`spoke-verb`) end
//! when the pool is dropped (the job channel closes), or after [`IDLE_EXIT`] without a job
//! while no accepted job needs them: a spoke that once served a burst does not keep its
//! threads for ever (a `list_llmboxes` across 10,000 spokes starts one on each).

use std::io;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use crate::util::slot::{Slot, Slots};

/// A worker idle this long ends, unless accepted jobs need it.
pub(crate) const IDLE_EXIT: Duration = Duration::from_secs(10);

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
    /// Worker threads alive. Held while a job is accepted (its slot taken and the count
    /// checked) and while an idle worker decides to end, so an accepted job always has one.
    threads: Arc<Mutex<usize>>,
    /// [`IDLE_EXIT`], shorter in tests.
    idle_exit: Duration,
}

fn count(threads: &Mutex<usize>) -> MutexGuard<'_, usize> {
    // A plain count; a panicking holder cannot leave it inconsistent.
    threads.lock().unwrap_or_else(|e| e.into_inner())
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
            threads: Arc::new(Mutex::new(0)),
            idle_exit: IDLE_EXIT,
        }
    }

    /// Runs `job` on a worker now, or refuses it. Called from one thread (the connection's
    /// reader), which is what keeps the thread count at or above the accepted jobs.
    ///
    /// # Errors
    /// [`Refused::Busy`] at the bound; [`Refused::Spawn`] when no thread could be started.
    pub(crate) fn submit(&self, job: impl FnOnce() + Send + 'static) -> Result<(), Refused> {
        let slot = {
            let mut threads = count(&self.threads);
            let Some(slot) = self.busy.try_take(self.max) else {
                return Err(Refused::Busy(self.max));
            };
            // (A refused job's slot goes back as it drops on the way out.)
            if *threads < self.busy.taken() {
                self.spawn().map_err(Refused::Spawn)?;
                *threads += 1;
            }
            slot
        };
        self.tx
            .send((Box::new(job), slot))
            .expect("the pool owns the receiver, so the channel is open");
        Ok(())
    }

    fn spawn(&self) -> io::Result<()> {
        let (rx, threads, busy, idle_exit) = (
            Arc::clone(&self.rx),
            Arc::clone(&self.threads),
            self.busy.clone(),
            self.idle_exit,
        );
        // Takes jobs until the pool (the only sender) is dropped.
        thread::Builder::new()
            .name("spoke-verb".into())
            .stack_size(WORKER_STACK)
            .spawn(move || {
                loop {
                    // The lock is held only while waiting for the next job, never while running it.
                    let job = {
                        let rx = rx.lock().unwrap_or_else(|e| e.into_inner());
                        match rx.recv_timeout(idle_exit) {
                            Ok(job) => job,
                            Err(RecvTimeoutError::Disconnected) => break,
                            Err(RecvTimeoutError::Timeout) => {
                                let mut n = count(&threads);
                                if *n > busy.taken() {
                                    *n -= 1;
                                    break;
                                }
                                continue;
                            }
                        }
                    };
                    let (job, _busy) = job;
                    // A panicking job must not take its thread along: the pool counts on
                    // its threads to run every accepted job.
                    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                        log::error!("spoke-verb: a verb panicked; the worker keeps serving");
                    }
                }
            })?;
        Ok(())
    }

    /// Worker threads started so far (the unit tests' view of the pool).
    #[cfg(test)]
    pub(crate) fn threads(&self) -> usize {
        *count(&self.threads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_workers_end_and_the_next_job_starts_one_again() {
        let pool = Pool {
            idle_exit: Duration::from_millis(50),
            ..Pool::new(4)
        };
        let (tx, rx) = mpsc::channel();
        for _ in 0..3 {
            let tx = tx.clone();
            pool.submit(move || {
                std::thread::sleep(Duration::from_millis(100));
                let _ = tx.send(());
            })
            .expect("accepted");
        }
        for _ in 0..3 {
            rx.recv_timeout(Duration::from_secs(20)).expect("ran");
        }
        let start = std::time::Instant::now();
        while pool.threads() > 0 {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "idle workers stay"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        pool.submit(move || {
            let _ = tx.send(());
        })
        .expect("accepted");
        rx.recv_timeout(Duration::from_secs(20))
            .expect("ran after the idle exit");
    }
    use std::sync::Barrier;

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
