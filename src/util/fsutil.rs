//! Files written so a crash at any moment leaves the old or the new content, never a mix.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes `data` to `path` atomically with mode 0600: write `<path>.tmp`, fsync, rename over,
/// fsync the directory. The temp file is always created new, so it never inherits a stale
/// file's mode or follows a symlink.
///
/// # Errors
/// Any I/O error, with the temp file removed.
pub(crate) fn write_atomic_0600(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = tmp_path(path);
    // A leftover (or planted) temp file would keep its own mode, and a symlink there would
    // redirect the secret: remove whatever is there and create the file afresh (O_EXCL, which
    // also refuses to follow a symlink).
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// `<path>.tmp`, beside the target so the rename stays on one filesystem.
pub(crate) fn tmp_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    name.into()
}

fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// Checks that a file can be created in `path`'s directory, without touching `path` itself.
///
/// # Errors
/// The I/O error creating or removing a probe file.
pub(crate) fn check_dir_writable(path: &Path) -> io::Result<()> {
    let mut probe = path.as_os_str().to_owned();
    probe.push(format!(".probe-{}", std::process::id()));
    let probe = std::path::PathBuf::from(probe);
    let create = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&probe)
    };
    match create() {
        // Left by an earlier process with this pid (a container's pid 1, killed mid-check).
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(&probe)?;
            create()?;
        }
        other => {
            other?;
        }
    }
    fs::remove_file(&probe)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn atomic_write_replaces_content_with_mode_0600() {
        let dir = std::env::temp_dir().join(format!("llmbox-fsutil-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("f.json");
        write_atomic_0600(&path, b"one").expect("write");
        write_atomic_0600(&path, b"two").expect("rewrite");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!tmp_path(&path).exists());
        check_dir_writable(&path).expect("writable");
        // A probe left behind by an earlier process with the same pid does not count.
        let mut stale = path.as_os_str().to_owned();
        stale.push(format!(".probe-{}", std::process::id()));
        fs::write(&stale, b"").expect("stale probe");
        check_dir_writable(&path).expect("writable despite a stale probe");
        assert!(!Path::new(&stale).exists());
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn a_stale_or_planted_temp_file_never_widens_the_mode_or_redirects_the_write() {
        let dir = std::env::temp_dir().join(format!("llmbox-fsutil-tmp-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("creds.json");
        // A world-readable leftover temp file: the secret must not inherit its mode.
        fs::write(tmp_path(&path), b"old").expect("stale tmp");
        fs::set_permissions(tmp_path(&path), fs::Permissions::from_mode(0o644)).expect("chmod");
        write_atomic_0600(&path, b"secret").expect("write");
        let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A symlink planted at the temp path: the write must not land in its target.
        let target = dir.join("elsewhere");
        fs::write(&target, b"untouched").expect("target");
        std::os::unix::fs::symlink(&target, tmp_path(&path)).expect("symlink");
        write_atomic_0600(&path, b"secret2").expect("write");
        assert_eq!(fs::read(&target).expect("target"), b"untouched");
        assert_eq!(fs::read(&path).expect("read"), b"secret2");
        assert!(
            !fs::symlink_metadata(&path)
                .expect("lstat")
                .file_type()
                .is_symlink()
        );
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
