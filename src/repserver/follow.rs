//! Following the upstream tier: what a following server is told to do ([`Follow`]) and
//! what it reports about how far behind it is ([`FollowStatus`], read by `/healthz` and
//! `/metrics`). The loop itself runs inside the API (`super::api::follow`), beside the store
//! threads it writes through.
//!
//! # What following does
//! The server copies the upstream's table once (`GET /v1/sync/snapshot`, in pages), then
//! follows its change log (`GET /v1/sync/changes`, long-polled by cursor) and applies each
//! page to its mirror ([`super::mirror`]) in one transaction with the cursor, so proxies of this
//! site see upstream changes through the local change stream and are answered from the local
//! table, with no per-request round trip to the upstream. After a restart or an outage it
//! resumes by cursor; when the upstream's change log no longer reaches back that far, or the
//! upstream's store was replaced, it takes a fresh snapshot while still serving the old copy.
//!
//! # How it fails
//! An upstream that is down, slow or answers garbage is retried on the [`Follow::retry`]
//! schedule (by default 50 ms doubling to 1 s, with jitter); the mirror keeps serving what it has, and the status
//! says since when the upstream has not answered. A page with an entry that does not parse
//! is refused whole (logged, retried: a bug or a damaged upstream must not half-apply).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64};
use std::time::Duration;

use crate::api::sync::Subscription;
use crate::client::{FollowRetry, RepClient};

/// What a following server follows, and how.
#[derive(Debug, Clone)]
pub struct Follow {
    /// The upstream server (its client token).
    pub client: RepClient,
    /// What is mirrored.
    pub subscription: Subscription,
    /// Entries asked per page.
    pub page: usize,
    /// How long one long-poll for changes waits at the upstream.
    pub wait: Duration,
    /// How long one exchange may take beyond `wait`.
    pub timeout: Duration,
    /// The pauses between retries.
    pub retry: FollowRetry,
}

impl Follow {
    /// Following everything of `client`, with the defaults of `server.upstream`.
    pub fn everything(client: RepClient) -> Follow {
        Follow {
            client,
            subscription: Subscription::default(),
            page: 5_000,
            wait: Duration::from_secs(25),
            timeout: Duration::from_secs(30),
            retry: FollowRetry {
                first: Duration::from_millis(50),
                max: Duration::from_secs(1),
            },
        }
    }
}

/// Where a follower stands, for `/healthz` and `/metrics`.
#[derive(Debug, Default)]
pub struct FollowStatus {
    /// 0 new, 1 snapshot, 2 following.
    stage: AtomicU8,
    /// A snapshot has completed (now or before a restart): the mirror is a whole copy.
    complete: AtomicBool,
    /// The upstream answered the last exchange.
    reachable: AtomicBool,
    /// The upstream's change sequence at its last answer.
    upstream_seq: AtomicU64,
    /// The upstream sequence the mirror is complete through.
    applied_seq: AtomicU64,
    /// Unix seconds of the last answer from the upstream; 0: never.
    last_answer: AtomicI64,
    /// Entries and file verdicts that changed in the mirror.
    applied: AtomicU64,
    /// Snapshots finished.
    snapshots: AtomicU64,
    /// Exchanges that failed.
    failures: AtomicU64,
    /// Bytes of sync answers received, snapshot pages and changes apart.
    snapshot_bytes: AtomicU64,
    change_bytes: AtomicU64,
}

/// A copy of a [`FollowStatus`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FollowSnapshot {
    /// `new`, `snapshot` or `following`.
    pub stage: &'static str,
    /// A whole copy is in place.
    pub complete: bool,
    /// The upstream answered the last exchange.
    pub reachable: bool,
    /// The upstream's change sequence at its last answer.
    pub upstream_seq: u64,
    /// The upstream sequence the mirror is complete through.
    pub applied_seq: u64,
    /// Unix seconds of the last answer; 0: never.
    pub last_answer: i64,
    /// Mirror rows changed.
    pub applied: u64,
    /// Snapshots finished.
    pub snapshots: u64,
    /// Failed exchanges.
    pub failures: u64,
    /// Bytes received in snapshot pages.
    pub snapshot_bytes: u64,
    /// Bytes received in change pages.
    pub change_bytes: u64,
    /// Entries in the mirror, when the reader counted them (a scrape does).
    pub mirrored: Option<u64>,
}

impl FollowSnapshot {
    /// Upstream transactions not yet applied.
    pub fn behind(&self) -> u64 {
        self.upstream_seq.saturating_sub(self.applied_seq)
    }
}

impl FollowStatus {
    /// A copy of the status.
    pub fn snapshot(&self) -> FollowSnapshot {
        FollowSnapshot {
            stage: ["new", "snapshot", "following"][usize::from(self.stage.load(Relaxed).min(2))],
            complete: self.complete.load(Relaxed),
            reachable: self.reachable.load(Relaxed),
            upstream_seq: self.upstream_seq.load(Relaxed),
            applied_seq: self.applied_seq.load(Relaxed),
            last_answer: self.last_answer.load(Relaxed),
            applied: self.applied.load(Relaxed),
            snapshots: self.snapshots.load(Relaxed),
            failures: self.failures.load(Relaxed),
            snapshot_bytes: self.snapshot_bytes.load(Relaxed),
            change_bytes: self.change_bytes.load(Relaxed),
            mirrored: None,
        }
    }

    /// Whether the mirror is a whole copy (a snapshot has completed).
    pub fn is_complete(&self) -> bool {
        self.complete.load(Relaxed)
    }

    pub(crate) fn set_stage(&self, following: bool, complete: bool) {
        self.stage.store(if following { 2 } else { 1 }, Relaxed);
        if complete {
            self.complete.store(true, Relaxed);
        }
    }

    pub(crate) fn answered(&self, upstream_seq: u64, now: i64) {
        self.reachable.store(true, Relaxed);
        self.upstream_seq.store(upstream_seq, Relaxed);
        self.last_answer.store(now, Relaxed);
    }

    pub(crate) fn failed(&self) {
        self.reachable.store(false, Relaxed);
        self.failures.fetch_add(1, Relaxed);
    }

    pub(crate) fn applied_through(&self, seq: Option<u64>, rows: u64) {
        if let Some(seq) = seq {
            self.applied_seq.store(seq, Relaxed);
        }
        self.applied.fetch_add(rows, Relaxed);
    }

    pub(crate) fn snapshot_done(&self) {
        self.snapshots.fetch_add(1, Relaxed);
    }

    pub(crate) fn received(&self, snapshot: bool, bytes: usize) {
        let c = if snapshot {
            &self.snapshot_bytes
        } else {
            &self.change_bytes
        };
        c.fetch_add(bytes as u64, Relaxed);
    }
}
