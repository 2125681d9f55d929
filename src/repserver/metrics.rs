//! The reputation server's Prometheus metrics, served on `server.metrics_listen` (off by
//! default; keep it on loopback): `GET /metrics`, no token.
//!
//! # What it counts
//! - `webrep_server_requests_total{route, status}`: API requests by route (a closed set named
//!   after the paths) and status class (`2xx`, `4xx`, `5xx`);
//! - `webrep_server_request_seconds{route}`: time to the response head (an event stream's
//!   head is sent at once; its life is not counted);
//! - `webrep_server_lookup_items_total{kind, answer}`: every URL, host and file hash looked
//!   up, by what answered it: `listed` (a table entry), `untested` (no entry anywhere; for
//!   files, `unknown`), `upstream` (the upstream tier) or `error` (a malformed item);
//! - `webrep_server_upstream_unavailable_total`: lookups whose misses the upstream tier did
//!   not answer in time;
//! - `webrep_server_events_total{outcome}`: feedback events `accepted`, `duplicate`,
//!   `rejected` (refused one by one as invalid), and `escalated` hosts;
//! - `webrep_server_forward_events_total{outcome}`: feedback events sent on to the upstream
//!   tier (`server.upstream.feedback`): `forwarded` (the upstream took them), `refused` (it
//!   refused them as invalid, or they no longer decoded: passed) and `lost` (pruned by
//!   retention before they went up); `webrep_server_forward_batches_failed_total`: rounds the
//!   upstream did not answer for (tried again after a back-off); the gauge
//!   `webrep_server_forward_behind`: events stored and not yet forwarded;
//! - `webrep_server_busy_total`: requests refused with 503 because the store queue was full;
//! - `webrep_server_connections_refused_total`: connections refused (429) because their
//!   client address had `server.max_connections_per_client` open;
//!   `webrep_server_connections_closed_idle_total`: idle connections closed to make room at
//!   `server.max_connections`; the gauge `webrep_server_connections`: connections open;
//! - a following server's mirror of its upstream: `webrep_server_upstream_behind` (upstream
//!   transactions not yet applied), `_upstream_seq`, `_upstream_last_answer_timestamp_seconds`,
//!   `_upstream_mirror_complete`, `_upstream_mirror_entries`, and the counters `_upstream_mirror_rows_total`,
//!   `_upstream_snapshots_total`, `_upstream_sync_failures_total`,
//!   `_upstream_snapshot_bytes_total`, `_upstream_change_bytes_total`;
//!   `webrep_server_sync_served_total`: sync pages served to the servers following this one;
//! - gauges read at scrape time: `webrep_server_change_seq` (the change sequence),
//!   `webrep_server_entries` (table size; one `count(*)` on a reader thread),
//!   `webrep_server_followers` (change-stream followers now waiting: long-polls and
//!   event streams).
//!
//! # Where it sits
//! [`super::api`] bumps these as it answers; [`render`] encodes the registry built once with
//! the stats, whose one collector writes every family with typed label sets. The request
//! path pays a few relaxed atomic adds and one histogram observation per request (no lock:
//! each route's histogram is created on its first request).
//!
//! # How it fails
//! The listener failing to bind is a start-up error naming `server.metrics_listen`. If the
//! store cannot be asked (it is shutting down), `webrep_server_entries` is left out.

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, LabelValueEncoder,
};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::follow::FollowSnapshot;
use crate::metrics::{counter, counters, gauge};

/// The routes, as labels. Index = [`Route`] discriminant.
const ROUTES: [&str; 16] = [
    "healthz",
    "lookup",
    "entries",
    "changes",
    "changes_stream",
    "import",
    "files",
    "files_lookup",
    "categories",
    "events",
    "feedback_summary",
    "escalations",
    "sync_snapshot",
    "sync_changes",
    "key_hosts",
    "other",
];

/// An API route, for the `route` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Healthz,
    Lookup,
    Entries,
    Changes,
    ChangesStream,
    Import,
    Files,
    FilesLookup,
    Categories,
    Events,
    FeedbackSummary,
    Escalations,
    SyncSnapshot,
    SyncChanges,
    KeyHosts,
    Other,
}

/// Every path of the API, with its route (the metrics label) and the methods it takes (the
/// `Allow` header of a 405): the one table the router, the metrics and 405 answers share.
pub const PATHS: &[(&str, Route, &str)] = &[
    ("/healthz", Route::Healthz, "GET"),
    ("/v1/lookup", Route::Lookup, "GET, POST"),
    ("/v1/entries", Route::Entries, "POST"),
    ("/v1/changes", Route::Changes, "GET"),
    ("/v1/changes/stream", Route::ChangesStream, "GET"),
    ("/v1/import", Route::Import, "POST"),
    ("/v1/files", Route::Files, "GET, POST"),
    ("/v1/files/lookup", Route::FilesLookup, "POST"),
    ("/v1/categories", Route::Categories, "GET, POST"),
    ("/v1/events", Route::Events, "GET, POST"),
    ("/v1/feedback/summary", Route::FeedbackSummary, "GET"),
    ("/v1/escalations", Route::Escalations, "GET"),
    ("/v1/escalations/revert", Route::Escalations, "POST"),
    ("/v1/sync/snapshot", Route::SyncSnapshot, "GET"),
    ("/v1/sync/changes", Route::SyncChanges, "GET"),
    ("/v1/keys/hosts", Route::KeyHosts, "GET"),
];

impl Route {
    /// The route of a request path.
    pub fn of(path: &str) -> Route {
        PATHS
            .iter()
            .find(|(p, _, _)| *p == path)
            .map_or(Route::Other, |(_, r, _)| *r)
    }

    /// The methods `path` takes, `None` for a path the API does not have.
    pub fn allowed(path: &str) -> Option<&'static str> {
        PATHS
            .iter()
            .find(|(p, _, _)| *p == path)
            .map(|(_, _, m)| *m)
    }

    /// Every route, in the order of [`ROUTES`].
    const ALL: [Route; ROUTES.len()] = [
        Route::Healthz,
        Route::Lookup,
        Route::Entries,
        Route::Changes,
        Route::ChangesStream,
        Route::Import,
        Route::Files,
        Route::FilesLookup,
        Route::Categories,
        Route::Events,
        Route::FeedbackSummary,
        Route::Escalations,
        Route::SyncSnapshot,
        Route::SyncChanges,
        Route::KeyHosts,
        Route::Other,
    ];

    fn label(self) -> &'static str {
        ROUTES[self as usize]
    }
}

/// What was looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Url = 0,
    Host = 1,
    File = 2,
}

/// What answered a looked-up item.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    Listed = 0,
    Untested = 1,
    Upstream = 2,
    Error = 3,
}

const KINDS: [&str; 3] = ["url", "host", "file"];
const ANSWERS: [&str; 4] = ["listed", "untested", "upstream", "error"];

/// Encoded as its name in `ROUTES` (a variant name is not the path-derived label).
impl EncodeLabelValue for Route {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        EncodeLabelValue::encode(&self.label(), encoder)
    }
}

/// Encoded as `url`, `host` or `file`.
impl EncodeLabelValue for Kind {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        EncodeLabelValue::encode(&KINDS[*self as usize], encoder)
    }
}

/// Encoded as `listed`, `untested`, `upstream` or `error`.
impl EncodeLabelValue for Answer {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        EncodeLabelValue::encode(&ANSWERS[*self as usize], encoder)
    }
}

/// A response status class; encoded by hand, as `2xx` is no Rust name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Ok,
    Client,
    Server,
}

impl Status {
    const ALL: [Status; 3] = [Status::Ok, Status::Client, Status::Server];

    fn of(status: http::StatusCode) -> Status {
        match status.as_u16() {
            500.. => Status::Server,
            400..500 => Status::Client,
            _ => Status::Ok,
        }
    }

    fn label(self) -> &'static str {
        ["2xx", "4xx", "5xx"][self as usize]
    }
}

impl EncodeLabelValue for Status {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        EncodeLabelValue::encode(&self.label(), encoder)
    }
}

/// What became of ingested feedback events (`escalated`: hosts), spelled as the values.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, EncodeLabelValue)]
enum Outcome {
    accepted,
    duplicate,
    rejected,
    escalated,
}

impl Outcome {
    const ALL: [Outcome; 4] = [
        Outcome::accepted,
        Outcome::duplicate,
        Outcome::rejected,
        Outcome::escalated,
    ];
}

/// `{route, status}` of `webrep_server_requests`.
/// What became of an event offered to the upstream tier.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, EncodeLabelValue)]
pub enum Forwarded {
    forwarded,
    refused,
    lost,
}

impl Forwarded {
    const ALL: [Forwarded; 3] = [Forwarded::forwarded, Forwarded::refused, Forwarded::lost];
}

#[derive(Debug, EncodeLabelSet)]
struct ForwardLabels {
    outcome: Forwarded,
}

#[derive(Debug, EncodeLabelSet)]
struct RequestLabels {
    route: Route,
    status: Status,
}

/// `{route}` of `webrep_server_request_seconds`.
#[derive(Debug, EncodeLabelSet)]
struct RouteLabels {
    route: Route,
}

/// `{kind, answer}` of `webrep_server_lookup_items`.
#[derive(Debug, EncodeLabelSet)]
struct ItemLabels {
    kind: Kind,
    answer: Answer,
}

/// `{outcome}` of `webrep_server_events`.
#[derive(Debug, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: Outcome,
}

fn seconds_histogram() -> Histogram {
    // 100 µs to ~1.6 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 15))
}

/// The server's counters, shared by every connection, and the registry that reads them.
#[derive(Debug)]
pub struct ServerStats {
    counts: Arc<Counts>,
    /// Built once, with one [`ServerCollector`]; held while a scrape is encoded, so that the
    /// inputs the collector reads ([`Counts::scrape`]) are that scrape's.
    registry: Mutex<Registry>,
}

/// What the request path bumps, and what a scrape passes in.
#[derive(Debug, Default)]
struct Counts {
    requests: [[AtomicU64; 3]; ROUTES.len()],
    /// Per route, created on the route's first request (so a route never asked is not
    /// written, as a `Family` leaves out label sets never created).
    seconds: [OnceLock<Histogram>; ROUTES.len()],
    items: [[AtomicU64; 4]; 3],
    upstream_unavailable: AtomicU64,
    events: [AtomicU64; 4],
    busy: AtomicU64,
    sync_served: AtomicU64,
    followers: Gauge,
    scrape: Mutex<Scrape>,
    forward: [AtomicU64; 3],
    forward_failed: AtomicU64,
    forward_behind: AtomicU64,
}

/// The values [`render`] is given (read by the caller from the store and the listener).
#[derive(Debug, Default, Clone, Copy)]
struct Scrape {
    seq: u64,
    entries: Option<u64>,
    conns: [u64; 3],
    follow: Option<FollowSnapshot>,
}

impl Default for ServerStats {
    fn default() -> Self {
        let counts = Arc::new(Counts::default());
        let mut registry = Registry::with_prefix("webrep_server");
        registry.register_collector(Box::new(ServerCollector(counts.clone())));
        ServerStats {
            counts,
            registry: Mutex::new(registry),
        }
    }
}

/// Keeps `webrep_server_followers` up while a follower waits.
#[derive(Debug)]
pub struct Following(Gauge);

impl Drop for Following {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl ServerStats {
    /// Counts one answered request.
    pub fn request(&self, route: Route, status: http::StatusCode, seconds: f64) {
        let c = &self.counts;
        c.requests[route as usize][Status::of(status) as usize].fetch_add(1, Relaxed);
        c.seconds[route as usize]
            .get_or_init(seconds_histogram)
            .observe(seconds);
    }

    /// Counts `n` looked-up items of `kind` answered by `answer`.
    pub fn items(&self, kind: Kind, answer: Answer, n: u64) {
        if n > 0 {
            self.counts.items[kind as usize][answer as usize].fetch_add(n, Relaxed);
        }
    }

    /// Items of `kind` looked up so far (every answer, errors included).
    pub fn looked_up(&self, kind: Kind) -> u64 {
        self.counts.items[kind as usize]
            .iter()
            .map(|n| n.load(Relaxed))
            .sum()
    }

    /// Counts a lookup whose misses the upstream tier did not answer.
    pub fn upstream_unavailable(&self) {
        self.counts.upstream_unavailable.fetch_add(1, Relaxed);
    }

    /// Counts an ingested batch of feedback events.
    pub fn events(&self, accepted: u64, duplicate: u64, rejected: u64, escalated: u64) {
        for (c, n) in self
            .counts
            .events
            .iter()
            .zip([accepted, duplicate, rejected, escalated])
        {
            c.fetch_add(n, Relaxed);
        }
    }

    /// Counts a sync page served to a following server.
    pub fn sync_served(&self) {
        self.counts.sync_served.fetch_add(1, Relaxed);
    }

    /// Counts a request refused because the store queue was full.
    /// Counts `n` events that went up as `outcome`.
    pub fn forward(&self, outcome: Forwarded, n: u64) {
        self.counts.forward[outcome as usize].fetch_add(n, Relaxed);
    }

    /// The events counted as `outcome` so far.
    pub fn forwarded(&self, outcome: Forwarded) -> u64 {
        self.counts.forward[outcome as usize].load(Relaxed)
    }

    /// Counts a round the upstream did not answer for.
    pub fn forward_failed(&self) {
        self.counts.forward_failed.fetch_add(1, Relaxed);
    }

    /// Rounds the upstream did not answer for so far.
    pub fn forward_failures(&self) -> u64 {
        self.counts.forward_failed.load(Relaxed)
    }

    /// Sets the events stored and not yet forwarded.
    pub fn forward_behind(&self, n: u64) {
        self.counts.forward_behind.store(n, Relaxed);
    }

    /// Events stored and not yet forwarded, as last seen by the forwarder.
    pub fn forward_lag(&self) -> u64 {
        self.counts.forward_behind.load(Relaxed)
    }

    pub fn busy(&self) {
        self.counts.busy.fetch_add(1, Relaxed);
    }

    /// Counts a change-stream follower (a long-poll or an event stream) until the guard is
    /// dropped.
    pub fn follower(&self) -> Following {
        self.counts.followers.inc();
        Following(self.counts.followers.clone())
    }

    /// Requests counted so far for `route` with a status of `class` (`"2xx"`, `"4xx"`,
    /// `"5xx"`); for tests and `/healthz`-like summaries.
    pub fn requests(&self, route: Route, class: &str) -> u64 {
        Status::ALL
            .iter()
            .find(|s| s.label() == class)
            .map_or(0, |s| {
                self.counts.requests[route as usize][*s as usize].load(Relaxed)
            })
    }
}

/// The current metrics in the OpenMetrics text format; `seq`, `entries` and the follower's
/// state are read by the caller (`entries` is `None` when the store could not be asked,
/// `follow` when the server follows no upstream).
///
/// # Errors
/// An encoding error, which would be a bug.
pub fn render(
    stats: &ServerStats,
    conns: &crate::conns::ConnLimits,
    seq: u64,
    entries: Option<u64>,
    follow: Option<FollowSnapshot>,
) -> Result<String, fmt::Error> {
    let registry = stats
        .registry
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    *stats
        .counts
        .scrape
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Scrape {
        seq,
        entries,
        conns: crate::metrics::conn_counts(conns),
        follow,
    };
    crate::metrics::encode(&registry)
}

/// Writes every family of the server from its counts and the scrape's inputs.
#[derive(Debug)]
struct ServerCollector(Arc<Counts>);

impl Collector for ServerCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let c = &*self.0;
        let scrape = *c.scrape.lock().unwrap_or_else(PoisonError::into_inner);
        encode_requests(&mut enc, c)?;
        encode_lookups(&mut enc, c)?;
        encode_outcomes(&mut enc, c)?;
        encode_forward(&mut enc, c)?;
        crate::metrics::conn_limits(
            &mut enc,
            [
                "connections",
                "connections_refused",
                "connections_closed_idle",
            ],
            "API",
            [
                "server.max_connections_per_client",
                "server.max_connections",
            ],
            scrape.conns,
        )?;
        encode_store(&mut enc, c, scrape)?;
        crate::metrics::allocator(&mut enc)?;
        if let Some(f) = scrape.follow {
            encode_follow(&mut enc, &f)?;
        }
        Ok(())
    }
}

/// Requests by route and status class (those counted at least once), and their latency.
fn encode_requests(enc: &mut DescriptorEncoder, c: &Counts) -> fmt::Result {
    let requests = Route::ALL.into_iter().flat_map(|route| {
        Status::ALL.into_iter().filter_map(move |status| {
            let n = c.requests[route as usize][status as usize].load(Relaxed);
            (n > 0).then_some((RequestLabels { route, status }, n))
        })
    });
    counters(
        enc,
        "requests",
        "API requests by route and status class",
        requests,
    )?;
    crate::metrics::family(
        enc,
        "request_seconds",
        "Time from request to response head, by route",
        Route::ALL.into_iter().filter_map(|route| {
            let h = c.seconds[route as usize].get()?.clone();
            Some((RouteLabels { route }, h))
        }),
    )
}

/// Looked-up items by kind and what answered them, and the upstream tier's failures.
fn encode_lookups(enc: &mut DescriptorEncoder, c: &Counts) -> fmt::Result {
    const KIND: [Kind; 3] = [Kind::Url, Kind::Host, Kind::File];
    const ANSWER: [Answer; 4] = [
        Answer::Listed,
        Answer::Untested,
        Answer::Upstream,
        Answer::Error,
    ];
    let items = KIND.into_iter().flat_map(|kind| {
        ANSWER.into_iter().map(move |answer| {
            let n = c.items[kind as usize][answer as usize].load(Relaxed);
            (ItemLabels { kind, answer }, n)
        })
    });
    counters(
        enc,
        "lookup_items",
        "Looked-up URLs, hosts and file hashes by what answered them",
        items,
    )?;
    counter(
        enc,
        "upstream_unavailable",
        "Lookups whose misses the upstream tier did not answer",
        c.upstream_unavailable.load(Relaxed),
    )
}

/// Feedback events by outcome, refusals of a full queue, lost log lines.
fn encode_outcomes(enc: &mut DescriptorEncoder, c: &Counts) -> fmt::Result {
    counters(
        enc,
        "events",
        "Feedback events accepted, duplicates, refused as invalid, and hosts escalated",
        Outcome::ALL
            .into_iter()
            .zip(&c.events)
            .map(|(outcome, n)| (OutcomeLabels { outcome }, n.load(Relaxed))),
    )?;
    counter(
        enc,
        "sync_served",
        "Sync pages (snapshot and changes) served to the servers following this one",
        c.sync_served.load(Relaxed),
    )?;
    counter(
        enc,
        "busy",
        "Requests refused with 503 because the store queue was full",
        c.busy.load(Relaxed),
    )?;
    counter(
        enc,
        "log_dropped",
        "Diagnostic log lines lost: standard error fell behind, or writing to it failed",
        crate::telemetry::dropped_lines(),
    )
}

/// The change sequence, the table's size and the waiting followers.
fn encode_forward(enc: &mut DescriptorEncoder, c: &Counts) -> fmt::Result {
    counters(
        enc,
        "forward_events",
        "Feedback events sent on to the upstream tier: forwarded, refused there, lost to pruning",
        Forwarded::ALL
            .into_iter()
            .zip(&c.forward)
            .map(|(outcome, n)| (ForwardLabels { outcome }, n.load(Relaxed))),
    )?;
    counter(
        enc,
        "forward_batches_failed",
        "Forwarding rounds the upstream tier did not answer for (tried again)",
        c.forward_failed.load(Relaxed),
    )?;
    gauge(
        enc,
        "forward_behind",
        "Feedback events stored and not yet forwarded to the upstream tier",
        c.forward_behind.load(Relaxed),
    )
}

fn encode_store(enc: &mut DescriptorEncoder, c: &Counts, scrape: Scrape) -> fmt::Result {
    gauge(
        enc,
        "change_seq",
        "The change sequence (bumped once per write)",
        scrape.seq,
    )?;
    if let Some(n) = scrape.entries {
        gauge(enc, "entries", "Entries in the reputation table", n)?;
    }
    crate::metrics::metric(
        enc,
        "followers",
        "Change-stream followers now waiting (long-polls and event streams)",
        &c.followers,
    )
}

/// The follower of the upstream tier: how far behind, since when silent, what it moved.
fn encode_follow(enc: &mut DescriptorEncoder, f: &FollowSnapshot) -> fmt::Result {
    gauge(
        enc,
        "upstream_behind",
        "Upstream transactions known and not yet applied to the mirror",
        f.behind(),
    )?;
    gauge(
        enc,
        "upstream_seq",
        "The upstream's change sequence at its last answer",
        f.upstream_seq,
    )?;
    gauge(
        enc,
        "upstream_last_answer_timestamp_seconds",
        "Unix time of the upstream's last answer to the follower (0: never)",
        f.last_answer,
    )?;
    if let Some(n) = f.mirrored {
        gauge(
            enc,
            "upstream_mirror_entries",
            "Entries mirrored from the upstream's table",
            n,
        )?;
    }
    gauge(
        enc,
        "upstream_mirror_complete",
        "1 once a whole snapshot of the upstream's table is in the mirror",
        u64::from(f.complete),
    )?;
    counter(
        enc,
        "upstream_mirror_rows",
        "Mirror rows written or deleted from the upstream's snapshots and changes",
        f.applied,
    )?;
    counter(
        enc,
        "upstream_snapshots",
        "Snapshots of the upstream's table completed",
        f.snapshots,
    )?;
    counter(
        enc,
        "upstream_sync_failures",
        "Exchanges with the upstream that failed (down, slow, bad answer)",
        f.failures,
    )?;
    counter(
        enc,
        "upstream_snapshot_bytes",
        "Bytes of snapshot pages received from the upstream",
        f.snapshot_bytes,
    )?;
    counter(
        enc,
        "upstream_change_bytes",
        "Bytes of change pages received from the upstream",
        f.change_bytes,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_limits() -> std::sync::Arc<crate::conns::ConnLimits> {
        crate::conns::ConnLimits::new(0, 0, "text/plain", "")
    }

    #[test]
    fn every_family_renders_with_closed_labels() {
        let s = ServerStats::default();
        s.request(Route::Lookup, http::StatusCode::OK, 0.001);
        s.request(Route::of("/nope"), http::StatusCode::NOT_FOUND, 0.0002);
        s.items(Kind::File, Answer::Listed, 3);
        s.events(2, 1, 4, 0);
        let open = s.follower();
        let text = render(&s, &no_limits(), 7, Some(42), None).unwrap();
        for want in [
            r#"webrep_server_requests_total{route="lookup",status="2xx"} 1"#,
            r#"webrep_server_requests_total{route="other",status="4xx"} 1"#,
            r#"webrep_server_request_seconds_count{route="lookup"} 1"#,
            r#"webrep_server_lookup_items_total{kind="file",answer="listed"} 3"#,
            r#"webrep_server_events_total{outcome="accepted"} 2"#,
            r#"webrep_server_events_total{outcome="rejected"} 4"#,
            "webrep_server_change_seq 7",
            "webrep_server_entries 42",
            "webrep_server_followers 1",
            "webrep_server_connections 0",
            "webrep_server_connections_refused_total 0",
            r#"webrep_server_forward_events_total{outcome="lost"} 0"#,
            "webrep_server_forward_batches_failed_total 0",
            "webrep_server_forward_behind 0",
        ] {
            assert!(text.contains(want), "{want} missing from\n{text}");
        }
        drop(open);
        assert!(
            render(&s, &no_limits(), 7, None, None)
                .unwrap()
                .contains("webrep_server_followers 0")
        );
        assert_eq!(s.requests(Route::Lookup, "2xx"), 1);
    }

    #[test]
    fn every_route_in_label_order() {
        for (i, r) in Route::ALL.into_iter().enumerate() {
            assert_eq!(r as usize, i, "{r:?}");
        }
        for (_, r, _) in PATHS {
            assert!(Route::ALL.contains(r), "{r:?}");
        }
    }
}
