//! The change stream (`GET /v1/changes`, long-poll or server-sent events): its answer and
//! what its keys mean to a follower.

use serde::{Deserialize, Serialize};

/// What changed after a sequence number: the answer to `GET /v1/changes`, and the data of
/// each `changes` server-sent event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    /// The current sequence number; pass it as `since` next time.
    pub seq: u64,
    /// The keys written or deleted after the sequence asked about, without duplicates.
    pub keys: Vec<String>,
    /// More keys changed than the limit: drop the whole cache and continue from `seq`.
    #[serde(default)]
    pub truncated: bool,
}

impl Changes {
    /// No change since `seq`.
    pub fn none(seq: u64) -> Changes {
        Changes {
            seq,
            keys: Vec::new(),
            truncated: false,
        }
    }
}

/// Prefix of a change key that stands for a file-hash write, followed by the lower-case
/// SHA-256 hex; any other key is a table entry's key (entry keys never contain `:` before
/// their first `/` except in bracketed IPv6 hosts, which start with `[`).
pub const FILE_CHANGE_PREFIX: &str = "sha256:";
