//! Leaf helpers shared by every layer: durations, the clock, secrets, base64, atomic files,
//! process limits, stopping loops and counting slots.
//! Nothing here knows about boxes, spokes or MCP.

pub(crate) mod backlog;
pub mod base64;
pub mod duration;
pub(crate) mod fsutil;
pub mod rlimit;
pub mod secret;
// A test double: compiled for unit tests and with `--features test-doubles` only.
#[cfg(any(test, feature = "test-doubles"))]
pub mod seeded;
pub(crate) mod signal;
pub(crate) mod slot;
pub(crate) mod stop;
pub(crate) mod time;

/// Seconds since the unix epoch (0 if the clock is before 1970): the timestamps of state
/// records, box listings and reaping.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
