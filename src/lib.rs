//! llmbox: hand a person their own sandboxed Claude Code box, on any number of hosts.
//!
//! Layers, each a module; arrows only point down (DESIGN §2):
//! `cli` → `hub` → `cluster` → `boxes` ← `docker`; `store` and `util` are leaves.
#![deny(unsafe_code)]

pub mod boxes;
pub mod cli;
pub mod cluster;
pub mod docker;
// Entry points for the cargo-fuzz targets in `fuzz/`; never in a normal build.
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod hub;
pub mod paths;
pub mod store;
pub mod util;
