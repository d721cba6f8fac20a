//! A minimal ustar writer for the one archive llmbox copies into a box before it starts:
//! regular files with owner and mode, at absolute paths.
//!
//! Parent directories are not written as entries on purpose: a directory entry for an
//! existing `/root` or `/etc` would make the daemon chmod/chown it to the entry's values.
//! The daemon's extractor creates missing parents itself (0755, root), which is what we want.
//! Paths must fit ustar's `prefix` (155) + `name` (100) split; a longer one is a clear error.

use std::fmt;

/// ustar `name` field length.
pub(crate) const USTAR_NAME_LEN: usize = 100;
/// ustar `prefix` field length.
pub(crate) const USTAR_PREFIX_LEN: usize = 155;
/// Largest file size ustar's 11 octal digits can state.
pub(crate) const USTAR_MAX_SIZE: u64 = 0o77777777777;
/// Largest uid or gid ustar's 7 octal digits can state.
pub(crate) const USTAR_MAX_ID: u32 = 0o7777777;
const BLOCK: usize = 512;

/// Why an entry could not be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TarError {
    /// The path cannot be split into ustar's prefix and name fields.
    PathTooLong(String),
    /// The path is not ASCII without NUL, or not absolute.
    BadPath(String),
    /// The file is larger than ustar can describe.
    TooLarge(String),
    /// The owner uid or gid is larger than ustar can describe: (path, id).
    OwnerTooLarge(String, u32),
}

impl fmt::Display for TarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TarError::PathTooLong(p) => write!(
                f,
                "file path {p:?} is too long for a tar header: keep each file name within {USTAR_NAME_LEN} bytes and its directory within {USTAR_PREFIX_LEN}"
            ),
            TarError::BadPath(p) => write!(f, "file path {p:?} must be absolute ASCII without NUL"),
            TarError::TooLarge(p) => write!(f, "file {p:?} is larger than 8 GiB"),
            TarError::OwnerTooLarge(p, id) => write!(
                f,
                "file {p:?}: owner id {id} is larger than a tar header can hold ({USTAR_MAX_ID})"
            ),
        }
    }
}

impl std::error::Error for TarError {}

/// One regular file to archive.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry<'a> {
    /// Absolute path in the box.
    pub(crate) path: &'a str,
    /// Content.
    pub(crate) data: &'a [u8],
    /// Permission bits.
    pub(crate) mode: u32,
    /// Owner uid.
    pub(crate) uid: u32,
    /// Owner gid.
    pub(crate) gid: u32,
}

/// Builds an archive of `entries`, paths made relative to `/`.
///
/// # Errors
/// [`TarError`] for the first entry that cannot be written.
pub(crate) fn build(entries: &[Entry<'_>]) -> Result<Vec<u8>, TarError> {
    let total: usize = entries
        .iter()
        .map(|e| BLOCK + e.data.len().div_ceil(BLOCK) * BLOCK)
        .sum();
    let mut out = Vec::with_capacity(total + 2 * BLOCK);
    for entry in entries {
        out.extend_from_slice(&header(entry)?);
        out.extend_from_slice(entry.data);
        let pad = (BLOCK - entry.data.len() % BLOCK) % BLOCK;
        out.resize(out.len() + pad, 0);
    }
    out.resize(out.len() + 2 * BLOCK, 0);
    Ok(out)
}

/// Splits `rel` into (prefix, name) fitting ustar, splitting only at a `/`.
fn split_path(rel: &str) -> Option<(&str, &str)> {
    if rel.len() <= USTAR_NAME_LEN {
        return Some(("", rel));
    }
    rel.match_indices('/')
        .map(|(i, _)| (&rel[..i], &rel[i + 1..]))
        .find(|(prefix, name)| {
            prefix.len() <= USTAR_PREFIX_LEN && name.len() <= USTAR_NAME_LEN && !name.is_empty()
        })
}

fn octal(field: &mut [u8], value: u64) {
    // Width-1 zero-padded octal digits and a NUL terminator.
    let width = field.len() - 1;
    let digits = format!("{value:0width$o}");
    field[..width].copy_from_slice(&digits.as_bytes()[digits.len() - width..]);
    field[width] = 0;
}

fn header(entry: &Entry<'_>) -> Result<[u8; BLOCK], TarError> {
    let bad = || TarError::BadPath(entry.path.to_string());
    let rel = entry.path.strip_prefix('/').ok_or_else(bad)?;
    if rel.is_empty() || !rel.is_ascii() || rel.contains('\0') {
        return Err(bad());
    }
    let (prefix, name) =
        split_path(rel).ok_or_else(|| TarError::PathTooLong(entry.path.to_string()))?;
    let size = entry.data.len() as u64;
    if size > USTAR_MAX_SIZE {
        return Err(TarError::TooLarge(entry.path.to_string()));
    }
    // Clamping would silently give the file another owner than the one asked for.
    for id in [entry.uid, entry.gid] {
        if id > USTAR_MAX_ID {
            return Err(TarError::OwnerTooLarge(entry.path.to_string(), id));
        }
    }
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], u64::from(entry.mode & 0o7777));
    octal(&mut h[108..116], u64::from(entry.uid));
    octal(&mut h[116..124], u64::from(entry.gid));
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 0);
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let digits = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(digits.as_bytes());
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(h: &[u8], range: std::ops::Range<usize>) -> String {
        String::from_utf8_lossy(&h[range])
            .trim_end_matches('\0')
            .to_string()
    }

    #[test]
    fn header_fields_and_padding() {
        let tar = build(&[Entry {
            path: "/root/.claude.json",
            data: b"{}",
            mode: 0o600,
            uid: 1000,
            gid: 1001,
        }])
        .expect("tar");
        assert_eq!(tar.len(), 512 * 4, "header, one data block, two end blocks");
        assert_eq!(field(&tar, 0..100), "root/.claude.json");
        assert_eq!(field(&tar, 100..108), "0000600");
        assert_eq!(field(&tar, 108..116), "0001750");
        assert_eq!(field(&tar, 116..124), "0001751");
        assert_eq!(field(&tar, 124..136), "00000000002");
        assert_eq!(&tar[257..262], b"ustar");
        assert_eq!(&tar[512..514], b"{}");
        let mut copy = tar[..512].to_vec();
        copy[148..156].copy_from_slice(b"        ");
        let sum: u32 = copy.iter().map(|&b| u32::from(b)).sum();
        assert_eq!(field(&tar, 148..154), format!("{sum:06o}"));
    }

    #[test]
    fn owners_beyond_ustar_are_an_error_not_another_owner() {
        let entry = |uid, gid| Entry {
            path: "/etc/hook",
            data: b"",
            mode: 0o644,
            uid,
            gid,
        };
        let tar = build(&[entry(USTAR_MAX_ID, USTAR_MAX_ID)]).expect("largest ids fit");
        assert_eq!(field(&tar, 108..116), "7777777");
        for (uid, gid) in [(USTAR_MAX_ID + 1, 0), (0, u32::MAX)] {
            let err = build(&[entry(uid, gid)]).expect_err("too large");
            assert_eq!(
                err,
                TarError::OwnerTooLarge("/etc/hook".into(), uid.max(gid))
            );
            assert!(err.to_string().contains("owner id"), "{err}");
        }
    }

    #[test]
    fn long_paths_use_the_prefix_field() {
        let dir = "d".repeat(120);
        let path = format!("/{dir}/file.sh");
        let tar = build(&[Entry {
            path: &path,
            data: b"",
            mode: 0o755,
            uid: 0,
            gid: 0,
        }])
        .expect("tar");
        assert_eq!(field(&tar, 0..100), "file.sh");
        assert_eq!(field(&tar, 345..500), dir);
    }

    #[test]
    fn paths_beyond_ustar_are_a_clear_error() {
        let long_name = format!("/x/{}", "n".repeat(101));
        let long_dir = format!("/{}/f", "d".repeat(160));
        for path in [long_name, long_dir] {
            let err = build(&[Entry {
                path: &path,
                data: b"",
                mode: 0o644,
                uid: 0,
                gid: 0,
            }])
            .expect_err("too long");
            assert!(matches!(err, TarError::PathTooLong(_)));
            assert!(
                err.to_string().contains("too long for a tar header"),
                "{err}"
            );
        }
        let rel = build(&[Entry {
            path: "rel",
            data: b"",
            mode: 0,
            uid: 0,
            gid: 0,
        }]);
        assert!(matches!(rel, Err(TarError::BadPath(_))));
    }
}
