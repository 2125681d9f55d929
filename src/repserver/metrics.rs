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
//! - `webrep_server_busy_total`: requests refused with 503 because the store queue was full;
//! - `webrep_server_connections_refused_total`: connections refused (429) because their
//!   client address had `server.max_connections_per_client` open;
//!   `webrep_server_connections_closed_idle_total`: idle connections closed to make room at
//!   `server.max_connections`; the gauge `webrep_server_connections`: connections open;
//! - gauges read at scrape time: `webrep_server_change_seq` (the change sequence),
//!   `webrep_server_entries` (table size; one `count(*)` on a reader thread),
//!   `webrep_server_followers` (change-stream followers now waiting: long-polls and
//!   event streams).
//!
//! # Where it sits
//! [`super::api`] bumps these as it answers; [`render`] reads them. The request path pays a
//! few relaxed atomic adds and one histogram observation per request.
//!
//! # How it fails
//! The listener failing to bind is a start-up error naming `server.metrics_listen`. If the
//! store cannot be asked (it is shutting down), `webrep_server_entries` is left out.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::metrics::{counter, counter_family, gauge};

/// The routes, as labels. Index = [`Route`] discriminant.
const ROUTES: [&str; 13] = [
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
const STATUS: [&str; 3] = ["2xx", "4xx", "5xx"];

type RouteLabel = [(&'static str, &'static str); 1];
type SecondsFamily = Family<RouteLabel, Histogram, fn() -> Histogram>;

fn seconds_histogram() -> Histogram {
    // 100 µs to ~1.6 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 15))
}

/// The server's counters, shared by every connection.
#[derive(Debug)]
pub struct ServerStats {
    requests: [[AtomicU64; 3]; ROUTES.len()],
    seconds: SecondsFamily,
    items: [[AtomicU64; 4]; 3],
    upstream_unavailable: AtomicU64,
    events: [AtomicU64; 4],
    busy: AtomicU64,
    followers: Gauge,
}

impl Default for ServerStats {
    fn default() -> Self {
        ServerStats {
            requests: Default::default(),
            seconds: Family::new_with_constructor(seconds_histogram),
            items: Default::default(),
            upstream_unavailable: AtomicU64::new(0),
            events: Default::default(),
            busy: AtomicU64::new(0),
            followers: Gauge::default(),
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
        let class = match status.as_u16() {
            500.. => 2,
            400..500 => 1,
            _ => 0,
        };
        self.requests[route as usize][class].fetch_add(1, Relaxed);
        self.seconds
            .get_or_create(&[("route", route.label())])
            .observe(seconds);
    }

    /// Counts `n` looked-up items of `kind` answered by `answer`.
    pub fn items(&self, kind: Kind, answer: Answer, n: u64) {
        if n > 0 {
            self.items[kind as usize][answer as usize].fetch_add(n, Relaxed);
        }
    }

    /// Items of `kind` looked up so far (every answer, errors included).
    pub fn looked_up(&self, kind: Kind) -> u64 {
        self.items[kind as usize]
            .iter()
            .map(|n| n.load(Relaxed))
            .sum()
    }

    /// Counts a lookup whose misses the upstream tier did not answer.
    pub fn upstream_unavailable(&self) {
        self.upstream_unavailable.fetch_add(1, Relaxed);
    }

    /// Counts an ingested batch of feedback events.
    pub fn events(&self, accepted: u64, duplicate: u64, rejected: u64, escalated: u64) {
        for (c, n) in self
            .events
            .iter()
            .zip([accepted, duplicate, rejected, escalated])
        {
            c.fetch_add(n, Relaxed);
        }
    }

    /// Counts a request refused because the store queue was full.
    pub fn busy(&self) {
        self.busy.fetch_add(1, Relaxed);
    }

    /// Counts a change-stream follower (a long-poll or an event stream) until the guard is
    /// dropped.
    pub fn follower(&self) -> Following {
        self.followers.inc();
        Following(self.followers.clone())
    }

    /// Requests counted so far for `route` with a status of `class` (`"2xx"`, `"4xx"`,
    /// `"5xx"`); for tests and `/healthz`-like summaries.
    pub fn requests(&self, route: Route, class: &str) -> u64 {
        STATUS
            .iter()
            .position(|c| *c == class)
            .map_or(0, |i| self.requests[route as usize][i].load(Relaxed))
    }
}

/// The current metrics in the OpenMetrics text format; `seq` and `entries` are read by the
/// caller (`entries` is `None` when the store could not be asked).
///
/// # Errors
/// An encoding error, which would be a bug.
pub fn render(
    stats: &ServerStats,
    conns: &crate::conns::ConnLimits,
    seq: u64,
    entries: Option<u64>,
) -> Result<String, std::fmt::Error> {
    let mut r = Registry::with_prefix("webrep_server");
    register_requests(&mut r, stats);
    register_lookups(&mut r, stats);
    register_outcomes(&mut r, stats);
    crate::metrics::conn_limits(
        &mut r,
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
        conns,
    );
    register_store(&mut r, stats, seq, entries);
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &r)?;
    Ok(out)
}

/// A counter family with two labels.
type Family2 =
    Family<[(&'static str, &'static str); 2], prometheus_client::metrics::counter::Counter>;

/// Requests by route and status class, and their latency.
fn register_requests(r: &mut Registry, stats: &ServerStats) {
    let requests = Family2::default();
    for (route, by_status) in ROUTES.iter().zip(&stats.requests) {
        for (status, n) in STATUS.iter().zip(by_status) {
            let n = n.load(Relaxed);
            if n > 0 {
                requests
                    .get_or_create(&[("route", route), ("status", status)])
                    .inc_by(n);
            }
        }
    }
    r.register(
        "requests",
        "API requests by route and status class",
        requests,
    );
    r.register(
        "request_seconds",
        "Time from request to response head, by route",
        stats.seconds.clone(),
    );
}

/// Looked-up items by kind and what answered them, and the upstream tier's failures.
fn register_lookups(r: &mut Registry, stats: &ServerStats) {
    let items = Family2::default();
    for (kind, by_answer) in KINDS.iter().zip(&stats.items) {
        for (answer, n) in ANSWERS.iter().zip(by_answer) {
            items
                .get_or_create(&[("kind", kind), ("answer", answer)])
                .inc_by(n.load(Relaxed));
        }
    }
    r.register(
        "lookup_items",
        "Looked-up URLs, hosts and file hashes by what answered them",
        items,
    );
    counter(
        r,
        "upstream_unavailable",
        "Lookups whose misses the upstream tier did not answer",
        stats.upstream_unavailable.load(Relaxed),
    );
}

/// Feedback events by outcome, refusals of a full queue, lost log lines.
fn register_outcomes(r: &mut Registry, stats: &ServerStats) {
    counter_family(
        r,
        "events",
        "Feedback events accepted, duplicates, refused as invalid, and hosts escalated",
        "outcome",
        ["accepted", "duplicate", "rejected", "escalated"]
            .iter()
            .zip(&stats.events)
            .map(|(k, c)| ((*k).to_owned(), c.load(Relaxed))),
    );
    counter(
        r,
        "busy",
        "Requests refused with 503 because the store queue was full",
        stats.busy.load(Relaxed),
    );
    counter(
        r,
        "log_dropped",
        "Diagnostic log lines lost: standard error fell behind, or writing to it failed",
        crate::telemetry::dropped_lines(),
    );
}

/// The change sequence, the table's size and the waiting followers.
fn register_store(r: &mut Registry, stats: &ServerStats, seq: u64, entries: Option<u64>) {
    gauge(
        r,
        "change_seq",
        "The change sequence (bumped once per write)",
        i64::try_from(seq).unwrap_or(i64::MAX),
    );
    if let Some(n) = entries {
        gauge(
            r,
            "entries",
            "Entries in the reputation table",
            i64::try_from(n).unwrap_or(i64::MAX),
        );
    }
    r.register(
        "followers",
        "Change-stream followers now waiting (long-polls and event streams)",
        stats.followers.clone(),
    );
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
        let text = render(&s, &no_limits(), 7, Some(42)).unwrap();
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
        ] {
            assert!(text.contains(want), "{want} missing from\n{text}");
        }
        drop(open);
        assert!(
            render(&s, &no_limits(), 7, None)
                .unwrap()
                .contains("webrep_server_followers 0")
        );
        assert_eq!(s.requests(Route::Lookup, "2xx"), 1);
    }
}
