//! The change stream (`GET /v1/changes`, long-poll or server-sent events): what its keys
//! mean to a follower.

/// Prefix of a change key that stands for a file-hash write, followed by the lower-case
/// SHA-256 hex; any other key is a table entry's key (entry keys never contain `:` before
/// their first `/` except in bracketed IPv6 hosts, which start with `[`).
pub const FILE_CHANGE_PREFIX: &str = "sha256:";
