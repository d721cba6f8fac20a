//! Leaf helpers shared by every layer: durations, secrets, base64, atomic files, process limits.
//! Nothing here knows about boxes, spokes or MCP.

pub mod backlog;
pub mod base64;
pub mod duration;
pub mod fsutil;
pub mod rlimit;
pub mod secret;
pub mod seeded;
pub mod signal;
