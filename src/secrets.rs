//! Files that hold secrets (tokens, password hashes, private keys): whether anyone besides
//! their owner and group may read them; the one reader of single-token files, with the one
//! token check ([`read_token_file`]); and the constant-time comparison of bearer tokens
//! ([`token_eq`]).
//!
//! Every reader of such a file asks here, once per read: the proxy's `auth.users_file`,
//! `admin.token_file` and reputation sources' `token_file`; the server's
//! `server.tokens_file`, `server.upstream.token_file` and `server.tls.key`; the CLI's
//! `--token-file`; the feedback anonymization key; and the interception CA key. Group read
//! is the packaged layout (`root:webrep`, mode 0640), so only bits for others count, and the
//! file is still read: a warning, not a refusal. The CA key is stricter (it can sign
//! certificates for any site): [`crate::intercept::ca`] refuses it when group or others have
//! any access ([`GROUP_OR_OTHERS`]).
//!
//! Cost: one `stat` per read, off the request path (start and reload). A file that cannot be
//! inspected is not warned about: reading it fails with the reason. A token file whose first
//! line is not a token is refused with its key and path, never its content.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

/// Read or write for others: what makes a secrets file warned about.
pub const OTHERS: u32 = 0o006;
/// Any access for group or others: what the CA key may not have.
pub const GROUP_OR_OTHERS: u32 = 0o077;

/// The permission bits (`mode & 0o777`) of `path` when it has any of `mask`; `None` when it
/// has none of them.
///
/// # Errors
/// `path` cannot be inspected (missing, no permission on its directory).
pub fn open_to(path: &Path, mask: u32) -> std::io::Result<Option<u32>> {
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
    Ok((mode & mask != 0).then_some(mode))
}

/// What to tell the admin when others may read or write `path`, a secrets file configured as
/// `key` (a config key or option, named in the message); `None` when they may not.
pub fn warning(path: &Path, key: &str) -> Option<String> {
    let mode = open_to(path, OTHERS).ok()??;
    Some(format!(
        "{key} {} holds secrets but other users can access it (mode {mode:o}): chmod o-rwx it \
         (0640 with the service's group, or 0600)",
        path.display()
    ))
}

/// Logs [`warning`], if any (the servers; the CLI prints it).
pub fn warn_if_open(path: &Path, key: &str) {
    if let Some(w) = warning(path, key) {
        tracing::warn!("{w}");
    }
}

/// Reads the secrets file `path`, configured as `key`, as [`crate::fsread::read_to_string`]
/// does (a regular file of at most `max_bytes`), after [`warn_if_open`].
///
/// # Errors
/// [`crate::fsread::ReadError`].
pub fn read_to_string(
    path: &Path,
    max_bytes: u64,
    key: &str,
) -> Result<String, crate::fsread::ReadError> {
    warn_if_open(path, key);
    crate::fsread::read_to_string(path, max_bytes)
}

/// A bearer token we accept: 16 to 256 visible ASCII characters (no spaces), so that it fits
/// an `Authorization` header and is not trivially guessable.
pub fn valid_token(t: &str) -> bool {
    (16..=256).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_graphic())
}

/// Why a token file cannot be used. The messages name the config key and the file (with
/// what the system said), never the token.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// The file cannot be read (missing, not a regular file, too large, not UTF-8).
    #[error("cannot read {key} {error}")]
    Read {
        /// The config key or option that names the file.
        key: String,
        /// Why, with the path.
        error: crate::fsread::ReadError,
    },
    /// Its first line is not a token [`valid_token`] accepts.
    #[error(
        "{key} {}: the first line is not a token (16 to 256 visible ASCII characters)",
        path.display()
    )]
    NotAToken {
        /// The config key or option that names the file.
        key: String,
        /// The file.
        path: PathBuf,
    },
}

/// The bearer token in the first line of the token file `path`, configured as `key` (a
/// config key or option, named in errors), read as [`read_to_string`] does (warning when
/// others may read it) and trimmed: every file that holds one token (the proxy's
/// `admin.token_file` and reputation sources' `token_file`, the server's
/// `server.upstream.token_file`, the CLI's `--token-file`) is read and checked here.
///
/// # Errors
/// [`TokenFileError`]: the file cannot be read, or its first line is not a valid token.
pub fn read_token_file(path: &Path, key: &str) -> Result<String, TokenFileError> {
    let text = read_to_string(path, crate::fsread::TOKENS_MAX, key).map_err(|error| {
        TokenFileError::Read {
            key: key.to_owned(),
            error,
        }
    })?;
    let token = text.lines().next().unwrap_or("").trim();
    if !valid_token(token) {
        return Err(TokenFileError::NotAToken {
            key: key.to_owned(),
            path: path.to_owned(),
        });
    }
    Ok(token.to_owned())
}

/// Whether the bearer token `given` is `known`, compared in constant time (no early exit on
/// the first differing byte, so response timing does not reveal how much of a guess was
/// right; only the length may show).
pub fn token_eq(given: &str, known: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    given.as_bytes().ct_eq(known.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_file_holds_one_valid_token_on_its_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        let token = "0123456789abcdef";
        std::fs::write(&f, format!("  {token}  \nignored\n")).unwrap();
        assert_eq!(read_token_file(&f, "admin.token_file").unwrap(), token);
        for bad in ["", "\n0123456789abcdef\n", "short\n", "0123456789 abcdef\n"] {
            std::fs::write(&f, bad).unwrap();
            let e = read_token_file(&f, "admin.token_file").unwrap_err();
            assert!(matches!(e, TokenFileError::NotAToken { .. }), "{bad:?}");
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!("admin.token_file {}: ", f.display()))
                    && msg.contains("16 to 256 visible ASCII characters"),
                "{msg}"
            );
        }
        let missing = dir.path().join("missing");
        let e = read_token_file(&missing, "--token-file").unwrap_err();
        assert!(matches!(e, TokenFileError::Read { .. }), "{e}");
        let want = format!("cannot read --token-file {}: ", missing.display());
        assert!(e.to_string().starts_with(&want), "{e}");
    }

    #[test]
    fn token_comparison() {
        assert!(token_eq("abc", "abc"));
        assert!(!token_eq("abc", "abd"));
        assert!(!token_eq("abc", "abcd"));
        assert!(!token_eq("", "a"));
    }

    #[test]
    fn only_the_masked_bits_count() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("tokens");
        std::fs::write(&f, "client x\n").unwrap();
        let set = |mode| std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode));
        set(0o644).unwrap();
        assert_eq!(open_to(&f, OTHERS).unwrap(), Some(0o644));
        set(0o640).unwrap();
        assert_eq!(open_to(&f, OTHERS).unwrap(), None);
        assert_eq!(open_to(&f, GROUP_OR_OTHERS).unwrap(), Some(0o640));
        set(0o602).unwrap();
        assert_eq!(open_to(&f, OTHERS).unwrap(), Some(0o602));
        set(0o600).unwrap();
        assert_eq!(open_to(&f, GROUP_OR_OTHERS).unwrap(), None);
        assert!(open_to(&dir.path().join("missing"), OTHERS).is_err());
        assert_eq!(warning(&f, "server.tokens_file"), None);
        set(0o604).unwrap();
        let w = warning(&f, "server.tokens_file").unwrap();
        assert!(
            w.starts_with("server.tokens_file ") && w.contains("mode 604"),
            "{w}"
        );
    }
}
