//! Reading the files the configuration names: config, policy, users, groups, tokens, CA and
//! TLS PEM files, and the small state files kept beside them (the feedback anonymizing key).
//!
//! Every such read goes through [`read`] or [`read_to_string`], which accept a regular file
//! only and read at most a size cap, so a path that points at `/dev/zero`, a FIFO, a
//! directory or a runaway file gives a clear error at once instead of reading gigabytes or
//! blocking a thread (a reload thread, or startup) forever:
//!
//! - the path is `stat`ed first, so a device or a FIFO is refused without being opened;
//! - it is then opened with `O_NONBLOCK` (opening a FIFO that was swapped in meanwhile does
//!   not wait for a writer) and `O_NOCTTY`, and the open descriptor is `fstat`ed again, so
//!   what is read is the regular file that was checked;
//! - the read stops one byte past the cap: a file larger than its cap is an error, never
//!   silently cut.
//!
//! Symbolic links are followed (ConfigMaps and `/etc/alternatives` are links); what they
//! point at must be a regular file. Not for feeds given on the command line (`webrep import
//! FILE` streams any size, and reads pipes such as `<(zcat feed.gz)` on purpose).
//!
//! Cost: two `stat`s, one `open` and reads of the file's size; callers run it at startup or
//! on the blocking pool of a reload, never on the request path.
//!
//! # Caps
//! One per kind of file, in bytes (README.md, "Files webrep reads", lists them for admins):
//! [`CONFIG_MAX`], [`POLICY_MAX`], [`USERS_MAX`], [`GROUPS_MAX`], [`TOKENS_MAX`], [`PEM_MAX`],
//! [`STATE_MAX`].

use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use rustls_pki_types::CertificateDer;

/// The config file (`--config`): 4 MiB.
pub const CONFIG_MAX: u64 = 4 << 20;
/// A policy file (`policy.file`): 16 MiB, room for lists of hundreds of thousands of
/// domains.
pub const POLICY_MAX: u64 = 16 << 20;
/// `auth.users_file`: 64 MiB (about 500 000 users with argon2 hashes).
pub const USERS_MAX: u64 = 64 << 20;
/// `auth.groups_file`: 64 MiB.
pub const GROUPS_MAX: u64 = 64 << 20;
/// Token files (`server.tokens_file`, `admin.token_file`, `token_file` of a source or the
/// upstream tier, `--token-file`): 1 MiB.
pub const TOKENS_MAX: u64 = 1 << 20;
/// PEM files: the interception CA's certificate and key, `intercept.upstream_ca_file`,
/// `ca_file` of a source or the upstream tier, `server.tls.cert` and `server.tls.key`:
/// 4 MiB (a full public CA bundle is about 250 KiB).
pub const PEM_MAX: u64 = 4 << 20;
/// Small state files webrep writes itself (`anonymize-key`, `proxy-id` in the feedback
/// spool directory): 64 KiB.
pub const STATE_MAX: u64 = 64 << 10;

/// Why a configured file could not be read. Every variant names the path.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file cannot be opened or read (missing, permissions, I/O error).
    #[error("{}: {error}", path.display())]
    Io {
        /// The path as configured.
        path: PathBuf,
        /// What the system said.
        error: std::io::Error,
    },
    /// The path is not a regular file.
    #[error("{}: is a {kind}, not a regular file", path.display())]
    NotRegular {
        /// The path as configured.
        path: PathBuf,
        /// What it is instead: `FIFO (named pipe)`, `character device`, `directory`, ...
        kind: &'static str,
    },
    /// The file is larger than the cap for its kind.
    #[error("{}: larger than the limit of {max} bytes for this kind of file{}", path.display(),
        size.map_or(String::new(), |s| format!(" ({s} bytes)")))]
    TooLarge {
        /// The path as configured.
        path: PathBuf,
        /// Its size, when the file said (`None`: it grew while being read).
        size: Option<u64>,
        /// The cap.
        max: u64,
    },
    /// The file is not UTF-8 text.
    #[error("{}: not UTF-8 text", path.display())]
    NotUtf8 {
        /// The path as configured.
        path: PathBuf,
    },
}

impl ReadError {
    /// The path the error is about.
    pub fn path(&self) -> &Path {
        match self {
            ReadError::Io { path, .. }
            | ReadError::NotRegular { path, .. }
            | ReadError::TooLarge { path, .. }
            | ReadError::NotUtf8 { path } => path,
        }
    }

    /// Whether the file does not exist (callers that fall back to a default check this).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::Io { error, .. } if error.kind() == std::io::ErrorKind::NotFound)
    }
}

/// What a non-regular file is, for the error message.
fn kind_of(t: std::fs::FileType) -> Option<&'static str> {
    if t.is_file() {
        None
    } else if t.is_dir() {
        Some("directory")
    } else if t.is_fifo() {
        Some("FIFO (named pipe)")
    } else if t.is_char_device() {
        Some("character device")
    } else if t.is_block_device() {
        Some("block device")
    } else if t.is_socket() {
        Some("socket")
    } else {
        Some("special file")
    }
}

/// Reads the regular file at `path`, at most `max_bytes`.
///
/// # Errors
/// [`ReadError::NotRegular`] for a FIFO, device, directory or socket (never opened for
/// reading, never waited on); [`ReadError::TooLarge`] when the file holds more than
/// `max_bytes`; [`ReadError::Io`] otherwise.
pub fn read(path: &Path, max_bytes: u64) -> Result<Vec<u8>, ReadError> {
    let io = |error| ReadError::Io {
        path: path.to_owned(),
        error,
    };
    let check = |meta: &std::fs::Metadata| {
        if let Some(kind) = kind_of(meta.file_type()) {
            return Err(ReadError::NotRegular {
                path: path.to_owned(),
                kind,
            });
        }
        if meta.len() > max_bytes {
            return Err(ReadError::TooLarge {
                path: path.to_owned(),
                size: Some(meta.len()),
                max: max_bytes,
            });
        }
        Ok(())
    };
    check(&std::fs::metadata(path).map_err(io)?)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    check(&meta)?;
    let mut buf = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(io)?;
    if buf.len() as u64 > max_bytes {
        return Err(ReadError::TooLarge {
            path: path.to_owned(),
            size: None,
            max: max_bytes,
        });
    }
    Ok(buf)
}

/// [`read`] as UTF-8 text.
///
/// # Errors
/// Those of [`read`], and [`ReadError::NotUtf8`].
pub fn read_to_string(path: &Path, max_bytes: u64) -> Result<String, ReadError> {
    String::from_utf8(read(path, max_bytes)?).map_err(|_| ReadError::NotUtf8 {
        path: path.to_owned(),
    })
}

/// The certificates of the PEM file at `path` ([`PEM_MAX`]): at least one.
///
/// # Errors
/// A message naming the path: unreadable ([`read`]), not PEM, or no certificate in it.
pub fn pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls_pki_types::pem::PemObject as _;
    let pem = read(path, PEM_MAX).map_err(|e| e.to_string())?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", path.display()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_regular_file_within_the_cap_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, "abc\n").unwrap();
        assert_eq!(read_to_string(&p, 4).unwrap(), "abc\n");
        // Through a symbolic link too.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert_eq!(read(&link, 4).unwrap(), b"abc\n");
    }

    #[test]
    fn a_file_over_the_cap_is_refused_not_cut() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, "abcde").unwrap();
        let e = read(&p, 4).unwrap_err();
        assert!(
            matches!(
                e,
                ReadError::TooLarge {
                    size: Some(5),
                    max: 4,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(
            e.to_string().contains("larger than the limit of 4 bytes"),
            "{e}"
        );
        // A sparse file of 1 TiB: refused from its size, nothing read.
        let big = std::fs::File::create(dir.path().join("sparse")).unwrap();
        big.set_len(1 << 40).unwrap();
        let e = read(&dir.path().join("sparse"), POLICY_MAX).unwrap_err();
        assert!(matches!(e, ReadError::TooLarge { .. }), "{e:?}");
    }

    #[test]
    fn devices_directories_and_fifos_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        for (path, kind) in [
            (Path::new("/dev/zero"), "character device"),
            (dir.path(), "directory"),
            (fifo.as_path(), "FIFO (named pipe)"),
        ] {
            let e = read(path, 1 << 20).unwrap_err();
            assert!(
                matches!(&e, ReadError::NotRegular { kind: k, .. } if *k == kind),
                "{path:?}: {e:?}"
            );
            let msg = e.to_string();
            assert!(msg.starts_with(&path.display().to_string()), "{msg}");
        }
        let e = read(&dir.path().join("missing"), 1).unwrap_err();
        assert!(e.is_not_found(), "{e:?}");
        std::fs::write(dir.path().join("bin"), [0xff, 0xfe]).unwrap();
        assert!(matches!(
            read_to_string(&dir.path().join("bin"), 10),
            Err(ReadError::NotUtf8 { .. })
        ));
    }
}
