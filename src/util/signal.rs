//! Ending the process promptly on SIGTERM and SIGINT; noting SIGHUP for files to reopen.
//!
//! As PID 1 in a container a process that installs no handler ignores SIGTERM, so `docker stop`
//! would wait out its whole grace period. llmbox needs no shutdown work: the state file and the
//! credentials file are only ever replaced atomically, and boxes outlive the process by design.
//! So the handler just exits, with the conventional `128 + signal` status.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, Ordering};

const SIGHUP: i32 = 1;
const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

unsafe extern "C" {
    fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
    fn _exit(status: i32) -> !;
}

extern "C" fn exit_now(signum: i32) {
    // SAFETY: `_exit` is async-signal-safe (POSIX.1) and touches no Rust state.
    unsafe { _exit(128 + signum) }
}

/// Makes SIGTERM and SIGINT end the process at once.
pub(crate) fn exit_on_termination() {
    for signum in [SIGTERM, SIGINT] {
        // SAFETY: installs a handler that only calls the async-signal-safe `_exit`; `signal`
        // with a valid signal number and function pointer has no other effect.
        unsafe {
            signal(signum, exit_now);
        }
    }
}

/// Set by the SIGHUP handler, taken by [`take_hangup`].
static HANGUP: AtomicBool = AtomicBool::new(false);

extern "C" fn note_hangup(_signum: i32) {
    // A lock-free atomic store is async-signal-safe.
    HANGUP.store(true, Ordering::SeqCst);
}

/// Makes SIGHUP (logrotate's "reopen your files") harmless: instead of ending the process it is
/// noted, and [`take_hangup`] reports it once.
pub(crate) fn note_hangups() {
    // SAFETY: installs a handler that only stores to a static atomic; `signal` with a valid
    // signal number and function pointer has no other effect.
    unsafe {
        signal(SIGHUP, note_hangup);
    }
}

/// True once after each SIGHUP since the last call.
pub(crate) fn take_hangup() -> bool {
    HANGUP.swap(false, Ordering::SeqCst)
}
