//! llmbox: per-connection read deadlines.
//!
//! Upstream tiny_http reads with no timeout at all, so a peer that sends half a head, declares a
//! body and sends nothing, or just keeps an idle keep-alive connection open, holds a thread and
//! two descriptors for as long as it likes. Every read of a connection goes through one
//! `ReadPolicy`, which knows what the connection is waiting for and so which deadline applies:
//!
//! - waiting for the first byte of a request: the head deadline for the first request, the
//!   keep-alive idle timeout between requests (expiry closes silently);
//! - inside a head: one deadline for the whole head, counted from its first byte (a slowloris
//!   adding a header every few seconds still ends);
//! - inside a body: an idle timeout between reads (a slow but moving upload may continue);
//! - closing: reads return end-of-file at once (a response said `Connection: close`, or the
//!   framing was lost), so nothing drains a body nobody will read;
//! - lingering: after a refusal, what the peer already sent is read and discarded for a short
//!   while, so closing does not reset the connection before the peer has read the refusal.

use std::io::{Error as IoError, ErrorKind};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The deadlines a connection's reads obey.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadlines {
    pub head: Duration,
    pub body_idle: Duration,
    pub keep_alive: Duration,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for a request's first byte until `until`.
    Idle { until: Instant },
    /// Inside a head, which must be complete by `until`.
    Head { until: Instant },
    /// Inside a body: each read may wait `body_idle`.
    Body,
    /// Reads return end-of-file.
    Closing,
    /// Discarding what the peer sent, until `until`.
    Linger { until: Instant },
}

/// What a read may do now.
pub(crate) enum Gate {
    /// Read, waiting at most this long.
    Wait(Duration),
    /// Report end-of-file without reading.
    Eof,
    /// The deadline has passed.
    Expired,
}

/// One connection's read phase; shared by the connection's reader, its parser and its requests.
pub(crate) struct ReadPolicy {
    deadlines: Deadlines,
    phase: Mutex<Phase>,
}

impl ReadPolicy {
    pub(crate) fn new(deadlines: Deadlines) -> ReadPolicy {
        ReadPolicy {
            deadlines,
            phase: Mutex::new(Phase::Idle {
                until: Instant::now() + deadlines.head,
            }),
        }
    }

    fn set(&self, phase: Phase) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = phase;
    }

    fn get(&self) -> Phase {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection waits for its next request (not the first: that one starts idle with the
    /// head deadline when the policy is made).
    pub(crate) fn await_next_request(&self) {
        self.set(Phase::Idle {
            until: Instant::now() + self.deadlines.keep_alive,
        });
    }

    /// A head's first byte arrived.
    pub(crate) fn head_started(&self) {
        let mut phase = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        if let Phase::Idle { .. } = *phase {
            *phase = Phase::Head {
                until: Instant::now() + self.deadlines.head,
            };
        }
    }

    /// The head is complete; what follows is its body.
    pub(crate) fn body(&self) {
        let mut phase = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        if let Phase::Head { .. } | Phase::Idle { .. } = *phase {
            *phase = Phase::Body;
        }
    }

    /// No more reads: the connection closes after the current response.
    pub(crate) fn close(&self) {
        self.set(Phase::Closing);
    }

    /// True once [`ReadPolicy::close`] was called (or the framing was lost).
    pub(crate) fn is_closing(&self) -> bool {
        matches!(self.get(), Phase::Closing | Phase::Linger { .. })
    }

    /// True while the connection waits for a request's first byte.
    pub(crate) fn is_idle(&self) -> bool {
        matches!(self.get(), Phase::Idle { .. })
    }

    /// Reads may discard what the peer sent for `d` more.
    pub(crate) fn linger(&self, d: Duration) {
        self.set(Phase::Linger {
            until: Instant::now() + d,
        });
    }

    /// What the next read may do.
    pub(crate) fn gate(&self) -> Gate {
        let left = |until: Instant| until.saturating_duration_since(Instant::now());
        match self.get() {
            Phase::Idle { until } | Phase::Head { until } => match left(until) {
                d if d.is_zero() => Gate::Expired,
                d => Gate::Wait(d),
            },
            Phase::Body => Gate::Wait(self.deadlines.body_idle),
            Phase::Closing => Gate::Eof,
            Phase::Linger { until } => match left(until) {
                d if d.is_zero() => Gate::Eof,
                d => Gate::Wait(d),
            },
        }
    }

    /// A read failed with `e`: a timeout becomes `TimedOut` (Unix reports `WouldBlock`), and a
    /// body whose read failed has lost its framing, so the connection closes.
    pub(crate) fn failed(&self, e: IoError) -> IoError {
        let timed_out = matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut);
        let mut phase = self.phase.lock().unwrap_or_else(|p| p.into_inner());
        match *phase {
            Phase::Body => *phase = Phase::Closing,
            Phase::Linger { .. } => *phase = Phase::Closing,
            _ => {}
        }
        if timed_out {
            IoError::new(ErrorKind::TimedOut, "read deadline passed")
        } else {
            e
        }
    }
}

