//! The container id: one type for the id a box is known by on its spoke, however much of it a
//! layer holds.
//!
//! Docker ids are 64 hex characters. The state file keeps the full id of every session's box
//! (from `create`); a listing (`list`, the wire `Box`) carries only the short form, the first
//! [`SHORT_LEN`] characters, and `reap` answers with short forms too. So a [`ContainerId`] holds
//! as much of the id as its source gave (the full id from Docker or the state file, the short
//! form from a listing), and every comparison between the two goes through [`ContainerId::matches`]:
//! an empty prefix never matches (so a box listed without an id can never be mistaken for every
//! session). Serialised as the plain string it holds, so neither the state file nor the wire
//! changes.

use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Serialize};

/// Characters in a short container id (Docker's `docker ps` form).
pub const SHORT_LEN: usize = 12;

/// The first [`SHORT_LEN`] characters of `id`, or all of a shorter one. Ids come from a daemon
/// or a peer: one that is not hex still yields a prefix, never a panic on a character boundary.
pub fn short_id(id: &str) -> &str {
    let end = id
        .char_indices()
        .nth(SHORT_LEN)
        .map_or(id.len(), |(i, _)| i);
    &id[..end]
}

/// A container id on a spoke: the full id, or the short form when that is all its source gave.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ContainerId(String);

impl ContainerId {
    /// The id as a spoke gave it (full or short).
    pub fn new(id: impl Into<String>) -> Self {
        ContainerId(id.into())
    }

    /// The id as held.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The short form shown to models and people (see [`short_id`]).
    pub fn short(&self) -> &str {
        short_id(&self.0)
    }

    /// True when `prefix` is non-empty and starts this id: a listed box's short id, a reaped
    /// id, or a key a caller typed.
    pub fn matches(&self, prefix: &str) -> bool {
        !prefix.is_empty() && self.0.starts_with(prefix)
    }

    /// True when `other` names the same box: one of the two ids starts the other (a full id
    /// and the short form of a listing), and neither is empty.
    pub fn same_box(&self, other: &ContainerId) -> bool {
        self.matches(&other.0) || other.matches(&self.0)
    }
}

/// Reads as the id string, for the verbs and Docker calls that take `&str`.
impl Deref for ContainerId {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for ContainerId {
    fn from(id: String) -> Self {
        ContainerId(id)
    }
}

impl From<&str> for ContainerId {
    fn from(id: &str) -> Self {
        ContainerId(id.to_string())
    }
}

impl PartialEq<str> for ContainerId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for ContainerId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for ContainerId {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn short_is_twelve_characters_and_never_panics_on_short_or_odd_ids() {
        assert_eq!(ContainerId::new(FULL).short(), "0123456789ab");
        assert_eq!(ContainerId::new("abc").short(), "abc");
        assert_eq!(ContainerId::new("").short(), "");
        assert_eq!(short_id("abcdefghijk\u{e9}\u{e9}"), "abcdefghijk\u{e9}");
    }

    #[test]
    fn an_empty_prefix_matches_nothing() {
        let id = ContainerId::new(FULL);
        assert!(id.matches("0123456789ab"));
        assert!(id.matches(FULL));
        assert!(!id.matches(""));
        assert!(!id.matches("123456789abc"));
        assert!(!ContainerId::new("").matches(""));
    }

    #[test]
    fn a_full_id_and_its_listed_short_form_are_the_same_box_either_way_round() {
        let full = ContainerId::new(FULL);
        let listed = ContainerId::new(full.short());
        assert!(full.same_box(&listed) && listed.same_box(&full));
        assert!(!full.same_box(&ContainerId::new("ffffffffffff")));
        assert!(!full.same_box(&ContainerId::default()));
        assert!(!ContainerId::default().same_box(&ContainerId::default()));
    }

    #[test]
    fn serialises_as_the_plain_string_it_holds() {
        let full = ContainerId::new(FULL);
        assert_eq!(
            serde_json::to_string(&full).expect("json"),
            format!("\"{FULL}\"")
        );
        let short: ContainerId = serde_json::from_str("\"0123456789ab\"").expect("json");
        assert_eq!(short, "0123456789ab");
        assert_eq!(
            serde_json::to_string(&short).expect("json"),
            "\"0123456789ab\""
        );
    }
}
