//! File reputation (`GET /v1/files?sha256=H`, `POST /v1/files/lookup`, `POST /v1/files`): the
//! requests and the per-hash answers, as the server writes them and as the proxy reads them
//! when it checks a download (DESIGN.md §4, `docs/repserver.md`).
//!
//! A hash the table has no verdict for is answered `unknown`, without the stored fields; a
//! hash that is not 64 hex digits is, in a batch, an item of its own with an `error`. Reading
//! tolerates fields it does not know.

use serde::{Deserialize, Serialize};

use crate::model::FileEntry;

/// The verdict of a hash the table has no verdict for.
pub const UNKNOWN: &str = "unknown";

/// `POST /v1/files/lookup`: hashes to look up, answered in this order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupRequest {
    /// SHA-256 hashes, hex.
    pub sha256: Vec<String>,
}

/// The answer to `POST /v1/files/lookup`: one item per hash asked, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupAnswer {
    /// The hashes' answers.
    pub files: Vec<FileItem>,
}

/// One hash's answer: the answer to `GET /v1/files`, and an item of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileAnswer {
    /// The hash: as stored (lower case) when there is a verdict, else as asked.
    pub sha256: String,
    /// `clean`, `suspicious`, `malicious`, or [`UNKNOWN`].
    pub verdict: String,
    /// What the table holds about it; absent for an unknown hash.
    #[serde(flatten)]
    pub stored: Option<Stored>,
    /// How long the answer may be cached, in seconds; a reader takes [`ASSUMED_TTL_SECS`]
    /// when it is missing.
    #[serde(default = "assumed_ttl")]
    pub ttl_secs: u64,
}

/// How long a reader caches an answer that does not say.
pub const ASSUMED_TTL_SECS: u64 = 60;

fn assumed_ttl() -> u64 {
    ASSUMED_TTL_SECS
}

/// The stored part of a known hash's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// A name for humans (a malware family, a file name); `null` when none.
    pub name: Option<String>,
    /// Where the verdict came from: `manual`, `feed:NAME`, ...
    pub source: String,
    /// Last changed, unix seconds.
    pub updated: i64,
}

impl FileAnswer {
    /// The answer for a stored verdict, cacheable for `ttl_secs`.
    pub fn of(f: &FileEntry, ttl_secs: u64) -> FileAnswer {
        FileAnswer {
            sha256: f.sha256.as_str().to_owned(),
            verdict: f.verdict.as_str().to_owned(),
            stored: Some(Stored {
                name: f.name.clone(),
                source: f.source.to_stored(),
                updated: f.updated,
            }),
            ttl_secs,
        }
    }

    /// The answer for a hash with no verdict, cacheable for `ttl_secs`.
    pub fn unknown(sha256: &str, ttl_secs: u64) -> FileAnswer {
        FileAnswer {
            sha256: sha256.to_owned(),
            verdict: UNKNOWN.to_owned(),
            stored: None,
            ttl_secs,
        }
    }

    /// Whether the table has no verdict for the hash.
    pub fn is_unknown(&self) -> bool {
        self.verdict == UNKNOWN
    }
}

/// An item of a batch's `files` list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FileItem {
    /// The hash's answer.
    Answer(FileAnswer),
    /// A hash the server could not read.
    Refused {
        /// The hash as asked.
        sha256: String,
        /// Why.
        error: String,
    },
}

/// `POST /v1/files` (admin): file verdicts to write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteRequest {
    /// The verdicts, written in one transaction.
    pub upsert: Vec<FileWrite>,
}

/// One file verdict to write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileWrite {
    /// The SHA-256, hex.
    pub sha256: String,
    /// `clean`, `suspicious` or `malicious`.
    pub verdict: String,
    /// A name for humans.
    #[serde(default)]
    pub name: Option<String>,
    /// Where it came from; `manual` when absent.
    #[serde(default)]
    pub source: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_unknown_and_refused_items_read_back_as_written() {
        let known = FileItem::Answer(FileAnswer {
            sha256: "ab".repeat(32),
            verdict: "malicious".into(),
            stored: Some(Stored {
                name: None,
                source: "feed:x".into(),
                updated: 7,
            }),
            ttl_secs: 300,
        });
        let unknown = FileItem::Answer(FileAnswer::unknown(&"cd".repeat(32), 60));
        let refused = FileItem::Refused {
            sha256: "zz".into(),
            error: "`sha256` is not 64 hex digits".into(),
        };
        let items = [known, unknown, refused];
        let text = serde_json::to_string(&items).unwrap();
        assert!(
            text.contains(r#""name":null,"source":"feed:x","updated":7"#),
            "{text}"
        );
        assert!(
            text.contains(r#""verdict":"unknown","ttl_secs":60}"#),
            "{text}"
        );
        let back: Vec<FileItem> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, items);
    }

    #[test]
    fn an_answer_without_a_ttl_is_cached_for_the_assumed_time() {
        let text = format!(r#"{{"sha256":"{}","verdict":"clean"}}"#, "ab".repeat(32));
        let read: FileAnswer = serde_json::from_str(&text).unwrap();
        assert_eq!(read.ttl_secs, ASSUMED_TTL_SECS);
    }
}
