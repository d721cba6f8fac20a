//! Counted slots: a shared count of things in use (open sockets, running handlers, busy
//! workers, queued answers) and a [`Slot`] guard per thing that gives its place back when
//! dropped — also when the thread holding it panics or is never started.
//!
//! One guard instead of one hand-written "decrement on drop" struct per counter. The bounded
//! take never lets the count pass the bound, even for a moment, so a reader of
//! [`Slots::taken`] sees at most the bound. No threads, no locks: one atomic counter.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A count of slots in use, shared by clones and by the [`Slot`]s it hands out.
#[derive(Debug, Clone, Default)]
pub(crate) struct Slots {
    taken: Arc<AtomicUsize>,
}

impl Slots {
    /// No slot taken.
    pub(crate) fn new() -> Self {
        Slots::default()
    }

    /// Slots in use now.
    pub(crate) fn taken(&self) -> usize {
        self.taken.load(Ordering::SeqCst)
    }

    /// Takes a slot if fewer than `max` are in use; `None` at the bound.
    pub(crate) fn try_take(&self, max: usize) -> Option<Slot> {
        self.taken
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot {
                taken: Arc::clone(&self.taken),
            })
    }

    /// Takes a slot whatever the count (a count to watch, not a bound to enforce).
    pub(crate) fn take(&self) -> Slot {
        self.taken.fetch_add(1, Ordering::SeqCst);
        Slot {
            taken: Arc::clone(&self.taken),
        }
    }
}

/// One slot in use; dropping it gives the slot back.
#[derive(Debug)]
#[must_use = "dropping the slot gives it back at once"]
pub struct Slot {
    taken: Arc<AtomicUsize>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.taken.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_refuses_and_a_dropped_slot_makes_room() {
        let slots = Slots::new();
        let a = slots.try_take(2).expect("first");
        let _b = slots.try_take(2).expect("second");
        assert!(slots.try_take(2).is_none());
        assert_eq!(slots.taken(), 2);
        drop(a);
        assert_eq!(slots.taken(), 1);
        assert!(slots.try_take(2).is_some());
        assert!(Slots::new().try_take(0).is_none());
    }

    #[test]
    fn an_unbounded_take_counts_and_clones_share_the_count() {
        let slots = Slots::new();
        let other = slots.clone();
        let held: Vec<Slot> = (0..5).map(|_| other.take()).collect();
        assert_eq!(slots.taken(), 5);
        drop(held);
        assert_eq!(slots.taken(), 0);
    }

    #[test]
    fn a_slot_is_given_back_when_its_thread_panics() {
        let slots = Slots::new();
        let slot = slots.try_take(1).expect("free");
        let joined = std::thread::spawn(move || {
            let _slot = slot;
            panic!("a handler bug");
        })
        .join();
        assert!(joined.is_err());
        assert_eq!(slots.taken(), 0);
    }
}
