//! Which configuration file `webrep proxy` and `webrep server` read when none is named:
//! `/etc/webrep/webrep.yaml` (where the Debian package puts it) when it exists, else none,
//! and the built-in defaults apply (the quick start).
//!
//! Order: `--config FILE`, else the `WEBREP_CONFIG` environment variable (both handled by
//! the command line), else `DIR/webrep.yaml` where DIR is `WEBREP_DEFAULT_CONFIG_DIR` when
//! set and not empty, `/etc/webrep` otherwise, when that file exists. A file that exists but
//! cannot be read is still chosen, so that reading it fails with the reason instead of the
//! defaults running silently; only "no such file" (of it or of its directory) falls back.
//!
//! Cost: one `lstat` at start. Never fails: what it picks is read by [`super::Config::load`],
//! which reports the problems.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// Where the packaged configuration lives.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/webrep";
/// The file name looked for in [`DEFAULT_CONFIG_DIR`].
pub const DEFAULT_CONFIG_FILE: &str = "webrep.yaml";
/// The environment variable that replaces [`DEFAULT_CONFIG_DIR`] in the lookup (tests, a
/// second installation); ignored when unset or empty.
pub const DEFAULT_CONFIG_DIR_ENV: &str = "WEBREP_DEFAULT_CONFIG_DIR";

/// The file to read: `explicit` (`--config` or `WEBREP_CONFIG`) when given, else
/// [`default_config_file`] when something is there, else `None` (the built-in defaults).
/// `dir_override` is the value of [`DEFAULT_CONFIG_DIR_ENV`].
pub fn config_file_to_read(
    explicit: Option<&Path>,
    dir_override: Option<&OsStr>,
) -> Option<PathBuf> {
    if let Some(path) = explicit {
        return Some(path.to_path_buf());
    }
    let path = default_config_file(dir_override);
    match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        _ => Some(path),
    }
}

/// `DIR/webrep.yaml`: DIR is `dir_override` when it is given and not empty, else
/// [`DEFAULT_CONFIG_DIR`].
pub fn default_config_file(dir_override: Option<&OsStr>) -> PathBuf {
    let dir = dir_override
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_CONFIG_DIR), PathBuf::from);
    dir.join(DEFAULT_CONFIG_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_file_wins_even_when_it_does_not_exist() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("webrep.yaml"), "").unwrap();
        let explicit = Path::new("/nonexistent/other.yaml");
        assert_eq!(
            config_file_to_read(Some(explicit), Some(dir.path().as_os_str())),
            Some(explicit.to_path_buf())
        );
    }

    #[test]
    fn the_default_file_is_read_only_when_it_exists() {
        let dir = tempfile::tempdir().unwrap();
        let over = Some(dir.path().as_os_str());
        assert_eq!(config_file_to_read(None, over), None);
        std::fs::write(dir.path().join("webrep.yaml"), "").unwrap();
        assert_eq!(
            config_file_to_read(None, over),
            Some(dir.path().join("webrep.yaml"))
        );
        let gone = dir.path().join("missing");
        assert_eq!(config_file_to_read(None, Some(gone.as_os_str())), None);
    }

    #[test]
    fn a_dangling_link_is_chosen_so_that_reading_it_reports_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/nonexistent/x.yaml", dir.path().join("webrep.yaml")).unwrap();
        assert_eq!(
            config_file_to_read(None, Some(dir.path().as_os_str())),
            Some(dir.path().join("webrep.yaml"))
        );
    }

    #[test]
    fn the_default_directory_is_etc_webrep_unless_overridden() {
        assert_eq!(
            default_config_file(None),
            Path::new("/etc/webrep/webrep.yaml")
        );
        assert_eq!(
            default_config_file(Some(OsStr::new(""))),
            Path::new("/etc/webrep/webrep.yaml")
        );
        assert_eq!(
            default_config_file(Some(OsStr::new("/opt/w"))),
            Path::new("/opt/w/webrep.yaml")
        );
    }
}
