//! The temporary files `POST /v1/import` spools uploads to, beside the store, and the removal
//! of those a killed server left behind.
//!
//! An upload is written to `.webrep-import-XXXXXX` in the store's directory and deleted when
//! its import ends. A server killed meanwhile (`kill -9`, a crash, power loss) leaves the file
//! there; [`remove_stale`] at the start of `webrep server` removes every such file no running
//! server is using.
//!
//! In use means locked: [`create`] takes an exclusive `flock` on the file it creates and
//! holds it for the life of the upload, and [`remove_stale`] removes a file only while it
//! holds that lock itself. So a server started on a store another server is serving leaves
//! that server's live uploads alone. The one window, a file created but not yet locked, is
//! closed from the other side: [`create`] checks after locking that its path still names the
//! file it holds, and starts over with a new file when a starting server removed it.
//!
//! Cost: one `flock` per upload; one directory scan at start.

use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

/// The name every upload file starts with; nothing else in the directory is touched.
pub const PREFIX: &str = ".webrep-import-";

/// Creates a new, locked upload file in `dir`; deleted when the handle drops.
///
/// # Errors
/// The file cannot be created or locked.
pub fn create(dir: &Path) -> io::Result<tempfile::NamedTempFile> {
    for _ in 0..4 {
        let tmp = tempfile::Builder::new().prefix(PREFIX).tempfile_in(dir)?;
        match tmp.as_file().try_lock() {
            Ok(()) => {}
            // A starting server holds it to remove it: take another one.
            Err(std::fs::TryLockError::WouldBlock) => continue,
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        let held = tmp.as_file().metadata()?;
        match std::fs::symlink_metadata(tmp.path()) {
            Ok(m) if m.dev() == held.dev() && m.ino() == held.ino() => return Ok(tmp),
            // Removed by a starting server before we locked it.
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(
        "upload files keep being removed by starting servers",
    ))
}

/// Removes the upload files in `dir` that no running server holds (see the module docs);
/// returns their paths. Entries that vanish or cannot be opened meanwhile are skipped.
///
/// # Errors
/// `dir` cannot be listed.
pub fn remove_stale(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let Ok(entry) = entry else { continue };
        let is_upload = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(PREFIX));
        if !is_upload || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let path = entry.path();
        let Ok(file) = std::fs::File::open(&path) else {
            continue;
        };
        // Locked: a live upload of a running server. Held until the file is gone otherwise.
        if file.try_lock().is_ok() && std::fs::remove_file(&path).is_ok() {
            removed.push(path);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_uploads_go_live_ones_and_other_files_stay() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join(format!("{PREFIX}abc123"));
        std::fs::write(&stale, "left by a killed server").unwrap();
        let other = dir.path().join("reputation.db");
        std::fs::write(&other, "x").unwrap();
        let not_ours = dir.path().join(".webrep-importer");
        std::fs::write(&not_ours, "x").unwrap();
        let live = create(dir.path()).unwrap();

        let removed = remove_stale(dir.path()).unwrap();
        assert_eq!(removed, vec![stale.clone()]);
        assert!(!stale.exists());
        assert!(live.path().exists(), "a locked upload is in use");
        assert!(other.exists() && not_ours.exists());
        // Once its import is over it goes, and nothing is left to remove.
        let live_path = live.path().to_owned();
        drop(live);
        assert!(!live_path.exists());
        assert!(remove_stale(dir.path()).unwrap().is_empty());
    }
}
