//! The spoke's credentials file: `{"name","credential"}` written atomically with mode 0600 at
//! the first welcome, read at every start.
//!
//! A file the spoke cannot read as its own (not JSON, a bad name, a credential that is not 64
//! hex characters) is an error naming the file and saying to move it away: a join token never
//! overwrites it. A file open to other users still loads, with a warning. No threads.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::cluster::ClusterError;
use crate::cluster::proto::describe_json_error;
use crate::cluster::tokens::validate_spoke_name;
use crate::util::fsutil::{check_dir_writable, write_atomic_0600};
use crate::util::secret::is_hex_64;

/// Default credentials file (`--credentials`).
pub const DEFAULT_CREDENTIALS: &str = "llmbox-spoke.json";

/// The spoke's saved identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// Enrolled name (also the box namespace).
    pub name: String,
    /// The secret minted at first enrollment.
    pub credential: String,
}

/// Reads the credentials file; `None` when it does not exist.
///
/// # Errors
/// Unreadable, or not a credentials document (named by path, saying to move it away: a join
/// token never overwrites a file the spoke cannot read as its own).
pub fn load_credentials(path: &Path) -> Result<Option<Credentials>, ClusterError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(ClusterError::io(
                format!("read credentials {}", path.display()),
                e,
            ));
        }
    };
    let invalid = |why: String| {
        ClusterError::io(
            format!("credentials file {}", path.display()),
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{why}; move it away and start the spoke with a new join token (--token)"),
            ),
        )
    };
    let creds: Credentials = serde_json::from_slice(&bytes).map_err(|e| {
        invalid(format!(
            "not a spoke credentials document ({})",
            describe_json_error(&e)
        ))
    })?;
    validate_spoke_name(&creds.name).map_err(|e| invalid(e.to_string()))?;
    if !is_hex_64(&creds.credential) {
        return Err(invalid("its credential is not 64 hex characters".into()));
    }
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        log::warn!(
            "credentials file {} is open to other users (mode {:o}); run chmod 600 on it",
            path.display(),
            meta.permissions().mode() & 0o777
        );
    }
    Ok(Some(creds))
}

/// Writes the credentials file atomically with mode 0600.
///
/// # Errors
/// The write failed.
pub fn save_credentials(path: &Path, creds: &Credentials) -> Result<(), ClusterError> {
    let mut bytes = serde_json::to_vec_pretty(creds).expect("two strings always serialize");
    bytes.push(b'\n');
    write_atomic_0600(path, &bytes)
        .map_err(|e| ClusterError::io(format!("write credentials {}", path.display()), e))
}

/// Checks that a credentials file could be written at `path`, before a join token is spent:
/// a token whose credential cannot be kept is lost.
///
/// # Errors
/// The directory is missing or not writable (saying the token was not used).
pub(crate) fn check_writable(path: &Path) -> Result<(), ClusterError> {
    check_dir_writable(path).map_err(|e| {
        ClusterError::io(
            format!(
                "credentials file {} is not writable, so the join token was not used",
                path.display()
            ),
            e,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::cluster::spoke::TestDir as Dir;

    fn creds() -> Credentials {
        Credentials {
            name: "edge-1".into(),
            credential: "ab".repeat(32),
        }
    }

    #[test]
    fn saved_credentials_load_back_from_a_0600_file() {
        let dir = Dir::new("roundtrip");
        let path = dir.0.join("c.json");
        save_credentials(&path, &creds()).expect("save");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_credentials(&path).expect("load"), Some(creds()));
    }

    #[test]
    fn a_missing_file_is_no_credentials_yet() {
        let dir = Dir::new("missing");
        assert_eq!(
            load_credentials(&dir.0.join("none.json")).expect("load"),
            None
        );
    }

    #[test]
    fn a_file_that_is_not_the_spokes_own_is_named_and_to_be_moved_away() {
        let dir = Dir::new("foreign");
        let path = dir.0.join("c.json");
        let cases = [
            ("not json".to_string(), "not a spoke credentials document"),
            (
                format!(
                    r#"{{"name":"Bad Name!","credential":"{}"}}"#,
                    "ab".repeat(32)
                ),
                "invalid spoke name",
            ),
            (
                r#"{"name":"edge-1","credential":"short"}"#.to_string(),
                "not 64 hex characters",
            ),
        ];
        for (text, why) in cases {
            std::fs::write(&path, &text).expect("write");
            let err = load_credentials(&path).expect_err(&text).to_string();
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(err.contains("move it away"), "{err}");
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn a_token_is_not_spent_when_its_credential_could_not_be_kept() {
        let dir = Dir::new("writable");
        assert!(check_writable(&dir.0.join("c.json")).is_ok());
        let err = check_writable(&dir.0.join("no-such-dir").join("c.json"))
            .expect_err("missing directory")
            .to_string();
        assert!(err.contains("join token was not used"), "{err}");
    }
}
