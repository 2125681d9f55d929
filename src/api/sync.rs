//! Delta sync between reputation servers (`GET /v1/sync/snapshot`, `GET /v1/sync/changes`):
//! what a following server asks for and what the server above it answers, as both ends read
//! them (`docs/repserver.md`, "Tiers").
//!
//! A follower copies the upstream's table once in pages of a snapshot, then follows its change
//! log by cursor, receiving the current value of every changed key (or that it is gone). Both
//! answers name the upstream's store (`store`, an id fixed when the store file was created):
//! a different id means the upstream's table was replaced, and the follower starts over.

use serde::{Deserialize, Serialize};

use crate::api::lookup::EntryView;
use crate::model::{Entry, FileEntry, FileVerdict, Sha256Hex, Source};

/// Most entries or files in one page of either answer; a larger `limit` is lowered to it.
pub const MAX_PAGE: usize = 10_000;

/// What a follower mirrors: everything when both lists are empty, else the entries and file
/// verdicts whose source is one of `sources` or (entries) that have one of `categories`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Subscription {
    /// Stored sources: `feed:NAME`, `manual`, `escalation`.
    pub sources: Vec<String>,
    /// Category names.
    pub categories: Vec<String>,
}

impl Subscription {
    /// Whether the subscription takes everything.
    pub fn is_everything(&self) -> bool {
        self.sources.is_empty() && self.categories.is_empty()
    }

    /// Whether an entry from `source` with `categories` is mirrored.
    pub fn takes_entry(&self, e: &Entry) -> bool {
        self.is_everything()
            || self.sources.contains(&e.source.to_stored())
            || e.categories
                .iter()
                .any(|c| self.categories.iter().any(|s| s == c.as_str()))
    }

    /// Whether a file verdict from `source` is mirrored.
    pub fn takes_file(&self, f: &FileEntry) -> bool {
        self.is_everything() || self.sources.contains(&f.source.to_stored())
    }

    /// The query parameters that carry the subscription (`&sources=a,b&categories=c`), empty
    /// for everything. Names are URL-safe: sources and categories are ASCII words.
    pub fn query(&self) -> String {
        let mut q = String::new();
        for (name, list) in [("sources", &self.sources), ("categories", &self.categories)] {
            if !list.is_empty() {
                q.push_str(&format!(
                    "&{name}={}",
                    crate::urlenc::encode_query_value(&list.join(","))
                ));
            }
        }
        q
    }

    /// The subscription of a request's `sources` and `categories` parameters (comma lists).
    pub fn from_params(sources: Option<&str>, categories: Option<&str>) -> Subscription {
        let list = |v: Option<&str>| -> Vec<String> {
            v.unwrap_or("")
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        Subscription {
            sources: list(sources),
            categories: list(categories),
        }
    }
}

/// A file verdict as the sync answers carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileView {
    /// SHA-256, lower-case hex.
    pub sha256: String,
    /// `clean`, `suspicious`, `malicious`.
    pub verdict: String,
    /// A name for humans.
    pub name: Option<String>,
    /// `manual`, `feed:NAME`, ...
    pub source: String,
    /// Last changed, unix seconds.
    pub updated: i64,
    /// 0 (left out) for the answering server's own verdict, else how many tiers above it the
    /// verdict was written.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tier: u8,
}

fn is_zero(v: &u8) -> bool {
    *v == 0
}

impl FileView {
    /// The wire form of `f`, from `tier`.
    pub fn of(f: &FileEntry, tier: u8) -> FileView {
        FileView {
            sha256: f.sha256.as_str().to_owned(),
            verdict: f.verdict.as_str().to_owned(),
            name: f.name.clone(),
            source: f.source.to_stored(),
            updated: f.updated,
            tier,
        }
    }

    /// The verdict it carries.
    ///
    /// # Errors
    /// A field that does not parse, named.
    pub fn to_file(&self) -> Result<FileEntry, String> {
        Ok(FileEntry {
            sha256: Sha256Hex::parse(&self.sha256)
                .ok_or_else(|| format!("file {:?}: not a SHA-256", self.sha256))?,
            verdict: FileVerdict::parse(&self.verdict)
                .ok_or_else(|| format!("file {}: bad verdict", self.sha256))?,
            name: self.name.clone(),
            source: Source::from_stored(&self.source)
                .ok_or_else(|| format!("file {}: bad source", self.sha256))?,
            updated: self.updated,
        })
    }
}

/// Which part of the table a snapshot page is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotKind {
    /// URL entries, in key order.
    Entries,
    /// File verdicts, in hash order.
    Files,
}

/// `GET /v1/sync/snapshot?kind=entries|files&after=K&limit=N`: one page of the table, in key
/// (hash) order after `K`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPage {
    /// The answering server's store id.
    pub store: String,
    /// Its change sequence when the page was read.
    pub seq: u64,
    /// Entries (a page of `kind=entries`).
    #[serde(default)]
    pub entries: Vec<EntryView>,
    /// File verdicts (a page of `kind=files`).
    #[serde(default)]
    pub files: Vec<FileView>,
    /// Pass as `after` for the next page; `null` after the last page.
    pub next: Option<String>,
}

/// `GET /v1/sync/changes?since=S&after=K&limit=N&wait_ms=M`: the current value of each key
/// changed after the cursor `(S, K)` (`K` absent: after all of sequence `S`), in change-log
/// order, at most `limit` change-log rows; it waits up to `wait_ms` for a first change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncChanges {
    /// The answering server's store id.
    pub store: String,
    /// Its current change sequence.
    pub seq: u64,
    /// The cursor to pass next time: everything up to it is in this answer.
    pub through_seq: u64,
    /// With `through_seq`: the last key of the answer inside that sequence; `null` when all of
    /// `through_seq` is in.
    pub through_key: Option<String>,
    /// Changed entries, as they are now.
    #[serde(default)]
    pub entries: Vec<EntryView>,
    /// Changed file verdicts, as they are now.
    #[serde(default)]
    pub files: Vec<FileView>,
    /// Keys (entry keys, or `sha256:` and the hash) that are gone or no longer subscribed.
    #[serde(default)]
    pub deleted: Vec<String>,
    /// More changes follow: ask again at once.
    #[serde(default)]
    pub more: bool,
    /// The cursor is older than the change log kept (or ahead of this store): take a fresh
    /// snapshot.
    #[serde(default)]
    pub reset: bool,
}
