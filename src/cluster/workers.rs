//! The spoke's bounded verb workers (DESIGN §3): each request runs on its own worker thread so
//! a slow `exec` never blocks a `list`; past the bound a request is refused at once.
//!
//! Threads are kept for reuse instead of spawned per request (a spawn costs more than a whole
//! loopback round trip). Invariant: there are always at least as many threads as accepted jobs
//! not yet finished, so an accepted job never waits behind another. Threads (`spoke-verb`) end
//! when the pool is dropped (the job channel closes), or after [`IDLE_EXIT`] without a job
//! while no accepted job needs them: a spoke that once served a burst does not keep its
//! threads for ever (a `list_llmboxes` across 10,000 spokes starts one on each).

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
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

/// What the pool and its workers share, under one lock.
#[derive(Default)]
struct Queue {
    /// Accepted jobs no worker has taken yet.
    jobs: VecDeque<Job>,
    /// Worker threads alive.
    threads: usize,
    /// Of those, the ones asleep on the condvar: only then does a new job signal it (a
    /// notify is a syscall even with nobody waiting, and busy workers look at the queue
    /// before they sleep).
    waiting: usize,
    /// The pool was dropped: workers finish the queued jobs and end.
    closed: bool,
}

/// The queue and the signal a waiting worker sleeps on: one job wakes one worker.
type Shared = Arc<(Mutex<Queue>, Condvar)>;

/// A pool of at most `max` worker threads.
pub(crate) struct Pool {
    max: usize,
    shared: Shared,
    /// Jobs accepted and not yet finished.
    busy: Slots,
    /// [`IDLE_EXIT`], shorter in tests.
    idle_exit: Duration,
}

fn lock(shared: &Shared) -> MutexGuard<'_, Queue> {
    // A queue and two plain fields; a panicking holder cannot leave them inconsistent.
    shared.0.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pool {
    /// An empty pool; threads start on demand.
    pub(crate) fn new(max: usize) -> Self {
        Pool {
            max: max.max(1),
            shared: Arc::default(),
            busy: Slots::new(),
            idle_exit: IDLE_EXIT,
        }
    }

    /// Runs `job` on a worker now, or refuses it. The slot is taken and the thread count
    /// checked under the queue's lock, which is what keeps the threads at or above the
    /// accepted jobs.
    ///
    /// # Errors
    /// [`Refused::Busy`] at the bound; [`Refused::Spawn`] when no thread could be started.
    pub(crate) fn submit(&self, job: impl FnOnce() + Send + 'static) -> Result<(), Refused> {
        let wake = {
            let mut queue = lock(&self.shared);
            let Some(slot) = self.busy.try_take(self.max) else {
                return Err(Refused::Busy(self.max));
            };
            // (A refused job's slot goes back as it drops on the way out.)
            if queue.threads < self.busy.taken() {
                self.spawn().map_err(Refused::Spawn)?;
                queue.threads += 1;
            }
            queue.jobs.push_back((Box::new(job), slot));
            queue.waiting > 0
        };
        if wake {
            self.shared.1.notify_one();
        }
        Ok(())
    }

    fn spawn(&self) -> io::Result<()> {
        let (shared, busy, idle_exit) =
            (Arc::clone(&self.shared), self.busy.clone(), self.idle_exit);
        thread::Builder::new()
            .name("spoke-verb".into())
            .stack_size(WORKER_STACK)
            .spawn(move || work(&shared, &busy, idle_exit))?;
        Ok(())
    }

    /// Worker threads started so far (the unit tests' view of the pool).
    #[cfg(test)]
    pub(crate) fn threads(&self) -> usize {
        lock(&self.shared).threads
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        lock(&self.shared).closed = true;
        self.shared.1.notify_all();
    }
}

/// A worker: takes jobs until the pool is dropped and the queue is empty, or until it has
/// been idle for `idle_exit` while no accepted job needs it. The lock is never held while a
/// job runs.
fn work(shared: &Shared, busy: &Slots, idle_exit: Duration) {
    let mut queue = lock(shared);
    loop {
        if let Some((job, slot)) = queue.jobs.pop_front() {
            drop(queue);
            // A panicking job must not take its thread along: the pool counts on its
            // threads to run every accepted job.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                log::error!("spoke-verb: a verb panicked; the worker keeps serving");
            }
            drop(slot);
            queue = lock(shared);
            continue;
        }
        if queue.closed {
            queue.threads -= 1;
            return;
        }
        queue.waiting += 1;
        let (q, waited) = shared
            .1
            .wait_timeout(queue, idle_exit)
            .unwrap_or_else(|e| e.into_inner());
        queue = q;
        queue.waiting -= 1;
        if waited.timed_out() && queue.jobs.is_empty() && queue.threads > busy.taken() {
            queue.threads -= 1;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn idle_workers_end_and_the_next_job_starts_one_again() {
        let mut pool = Pool::new(4);
        pool.idle_exit = Duration::from_millis(50);
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
