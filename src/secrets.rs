//! Files that hold secrets (tokens, password hashes, private keys): whether anyone besides
//! their owner and group may read them.
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
//! inspected is not warned about: reading it fails with the reason.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

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
