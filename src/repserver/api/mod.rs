//! The reputation server's HTTP/1.1 JSON API over one [`Store`] (DESIGN.md §4); the full
//! reference with every path is `docs/repserver.md`.
//!
//! # What it does
//! [`serve_with`] accepts connections (plain or TLS) on a listener until a shutdown token is
//! cancelled and answers:
//! - `GET /healthz`: liveness, no token needed;
//! - lookups: `GET /v1/lookup?url=U` (the combined verdict for one URL, with `ttl_secs` and an
//!   `explain` part) and `POST /v1/lookup` with `{"urls": [...], "hosts": [...]}` (one answer
//!   per item, at most [`ApiConfig::max_batch`]; a host answer carries the path-level entries
//!   under it, bounded, with `truncated`; streamed in pieces of 1,000 items); items
//!   with no local entry go to the upstream tier when there is one ([`super::upstream`]);
//! - admin writes: `POST /v1/entries` (`upsert` / `delete` in one transaction),
//!   `POST /v1/import` (a feed file, spooled to disk then imported in one transaction),
//!   `POST /v1/files`, `POST /v1/categories`;
//! - file hashes: `GET /v1/files?sha256=H`, `POST /v1/files/lookup`; `GET /v1/categories`;
//! - the change stream: `GET /v1/changes?since=N&wait_ms=M` (long-poll) and
//!   `GET /v1/changes/stream?since=N` (server-sent events).
//! - feedback ([`super::events`]): `POST /v1/events` (client; a batch of events, de-duplicated
//!   by proxy and id, escalation rules applied, a result per event: a bad event is refused
//!   alone), and for admins `GET /v1/events`,
//!   `GET /v1/feedback/summary`, `GET /v1/escalations`, `POST /v1/escalations/revert`.
//!
//! Bearer tokens ([`Tokens`]): client tokens may look up and follow changes, admin tokens may
//! also write. Errors are JSON `{"error": "..."}`: 401 without a token, 403 for an unknown or
//! insufficient one, 400 for malformed input, 413 for a body over [`ApiConfig::max_body`]
//! (imports: [`ApiConfig::max_import_bytes`]), 404 / 405 for unknown paths and methods, 503
//! when the store threads are gone or their queue is full, 500 for a store failure.
//!
//! The parts, one job each: `listen` (accept loop, limits, TLS, connections), `jobs` (the
//! store's threads and the background pruning), `forward` (the task that sends stored feedback
//! events on to the upstream tier, [`super::forward`]), `auth` (tokens and roles), `reply` (errors,
//! answers, bodies, query parameters) and `routes` (dispatch by the route table
//! [`super::metrics::PATHS`], one file per group of paths).
//!
//! # Where it sits
//! Between `webrep server` ([`super::server`]) and [`super::store`]. The store is synchronous:
//! one writer thread owns the store and runs writes, imports and pruning in order; reader
//! threads ([`ServeOptions::read_threads`]) each own a read-only connection to the same file
//! and answer lookups and change queries (an in-memory store runs everything on the writer).
//! Async handlers await a oneshot reply and never block a tokio worker. Writes publish the
//! new sequence on a `tokio::sync::watch` channel, which wakes long-polls and event streams.
//!
//! # What it costs
//! Per request: one job on a store thread (its cost is the store's, see [`super::store`]), one
//! JSON encode, at most [`ApiConfig::max_body`] bytes buffered (an import upload goes to a
//! temporary file, not memory). A batch lookup is one job and one encoded piece per
//! 1,000 items, each made when the client has taken the one before: its cost per
//! item and the memory it holds do not grow with the batch (`benches/repserver.rs`). At most
//! [`ApiConfig::max_queued_jobs`] jobs wait per queue; beyond that a request is a 503 (load
//! shedding rather than an unbounded queue). At most [`ServeOptions::max_connections`]
//! connections, at most [`ServeOptions::max_connections_per_client`] from one client address
//! (beyond, 429 and closed: [`crate::conns`]); at the total limit the connection idle for
//! longest (no request in progress, which includes one still sending its head) is closed to
//! make room, so one client's idle or half-sent connections never lock the others out. One
//! that sends no complete request head (or TLS handshake) within 30 s is closed. A waiting
//! follower holds a connection and a watch receiver, no thread.
//!
//! # How it fails
//! Nothing here panics on input: bad JSON, bad URLs, bad keys, unknown categories and scores
//! over 100 are 400s naming the problem; a bad item in a batch lookup is an error for that
//! item only; a store failure after a batch lookup's first piece cuts its answer off (the
//! client sees an incomplete body, never a short list); a bad event in a feedback batch is
//! refused alone (the others are stored); a bad item in a write refuses the whole write
//! (nothing is written). An upstream
//! that fails leaves items untested, never an error. On shutdown the listener closes, pending
//! long-polls answer empty, event streams end, connections drain, then the store threads are
//! joined so the file is closed when [`serve_with`] returns.

mod auth;
mod follow;
mod forward;
mod jobs;
mod listen;
mod reply;
mod routes;

use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::follow::{Follow, FollowStatus};
use super::metrics::ServerStats;
use super::store::Store;
use super::upstream::Upstream;
use crate::conns::ConnLimits;
use jobs::{Job, StoreThreads, join_threads, prune_events_loop, prune_loop};
use listen::accept_loop;
use routes::metrics_answer;

/// Bearer tokens accepted by the API.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    /// May look up and follow changes.
    pub client: Vec<String>,
    /// May do everything a client may, and write.
    pub admin: Vec<String>,
}

/// The API's limits and TTLs and the server's feedback settings, validated by config.
use crate::config::{ApiConfig, FeedbackOptions};

/// What [`serve_with`] adds to [`serve`]; the defaults are plain HTTP, no upstream, no
/// connection limit, no pruning, spooling imports in the system temporary directory.
#[derive(Default)]
pub struct ServeOptions {
    /// Serve HTTPS with this acceptor.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Ask this upstream tier about what the store has no entry for.
    pub upstream: Option<Arc<Upstream>>,
    /// With `follow`: ask `upstream` only while the mirror is not yet a whole copy (a
    /// follower of everything: once copied, a miss here is a miss there). Default false:
    /// always ask.
    pub ask_until_mirrored: bool,
    /// Follow this upstream tier: mirror its table and apply its changes as they happen.
    pub follow: Option<Follow>,
    /// Where the follower reports how far behind it is; a fresh one when `None`.
    pub follow_status: Option<Arc<FollowStatus>>,
    /// Most concurrent connections; 0 is unlimited.
    pub max_connections: usize,
    /// Most concurrent connections from one client address (IPv6: one /64); 0 is unlimited.
    pub max_connections_per_client: usize,
    /// Change-log rows kept; older ones are pruned every [`PRUNE_INTERVAL`]. 0 never prunes.
    pub change_log_rows: u64,
    /// Where feed uploads are spooled before import (beside the store is best: same disk).
    pub spool_dir: Option<std::path::PathBuf>,
    /// Threads with their own read-only connection that answer lookups and change queries,
    /// so that reads run in parallel with each other and with a long import. 0 (or an
    /// in-memory store) runs everything on the one store thread.
    pub read_threads: usize,
    /// Feedback events: retention and escalation rules.
    pub feedback: FeedbackOptions,
    /// Counters for `/metrics`; a fresh set when `None`.
    pub stats: Option<Arc<ServerStats>>,
    /// Serve `GET /metrics` (Prometheus, no token) on this listener.
    pub metrics: Option<TcpListener>,
    /// Where the accepted tokens live: [`serve_with`] stores its `tokens` there at start, and
    /// whoever holds the handle may swap in new ones (`webrep server` does on SIGHUP).
    pub tokens_handle: Option<Arc<arc_swap::ArcSwap<Tokens>>>,
    /// Where the running escalation rules live, so that a reload can swap them (the
    /// rules of `feedback` are stored in it at start).
    pub escalation_handle: Option<Arc<arc_swap::ArcSwap<Vec<crate::config::EscalationRule>>>>,
    /// Send the stored feedback events on to this upstream tier ([`super::forward`]).
    pub forward: Option<super::forward::ForwardOptions>,
}

/// How often the change log is pruned.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// What every connection shares.
struct Shared {
    jobs: std::sync::mpsc::SyncSender<Job>,
    /// The reader threads' queue, when there are reader threads.
    reads: Option<std::sync::mpsc::SyncSender<Job>>,
    seq: watch::Receiver<u64>,
    seq_tx: Arc<watch::Sender<u64>>,
    tokens: Arc<arc_swap::ArcSwap<Tokens>>,
    config: ApiConfig,
    shutdown: CancellationToken,
    upstream: Option<Arc<Upstream>>,
    /// See [`ServeOptions::ask_until_mirrored`].
    ask_until_mirrored: bool,
    /// How far the follower of the upstream tier is, when this server follows one.
    follow: Option<Arc<FollowStatus>>,
    spool_dir: std::path::PathBuf,
    /// Escalation rules for ingested events (swapped whole by a reload).
    escalation: Arc<arc_swap::ArcSwap<Vec<crate::config::EscalationRule>>>,
    /// Counters for `/metrics`.
    stats: Arc<ServerStats>,
    /// Connections open, in all and per client.
    conns: Arc<ConnLimits>,
    /// Woken when events are stored, for the feedback forwarder.
    ingested: Arc<tokio::sync::Notify>,
    /// Whether stored events are forwarded upstream (pruning counts the unforwarded).
    forwarding: bool,
}

/// Serves the API on `listener` until `shutdown` is cancelled, then drains the connections
/// and closes the store before returning. Plain HTTP, no upstream: see [`serve_with`].
///
/// # Errors
/// When the store's sequence cannot be read at start or the store thread cannot be spawned.
pub async fn serve(
    listener: TcpListener,
    store: Store,
    tokens: Tokens,
    config: ApiConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with(
        listener,
        store,
        tokens,
        config,
        ServeOptions::default(),
        shutdown,
    )
    .await
}

/// [`serve`] with TLS, an upstream tier, a connection limit and change-log pruning.
///
/// # Errors
/// When the store's sequence cannot be read at start or the store thread cannot be spawned.
pub async fn serve_with(
    listener: TcpListener,
    store: Store,
    tokens: Tokens,
    config: ApiConfig,
    options: ServeOptions,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let start_seq = store.seq().map_err(std::io::Error::other)?;
    let (seq_tx, seq_rx) = watch::channel(start_seq);
    let queue = config.max_queued_jobs.max(1);
    let StoreThreads {
        jobs,
        reads,
        threads,
    } = StoreThreads::start(store, options.read_threads, queue)?;
    let shared = Arc::new(Shared {
        jobs,
        reads,
        seq: seq_rx,
        seq_tx: Arc::new(seq_tx),
        tokens: {
            let handle = options.tokens_handle.clone().unwrap_or_default();
            handle.store(Arc::new(tokens));
            handle
        },
        config,
        shutdown: shutdown.clone(),
        upstream: options.upstream.clone(),
        ask_until_mirrored: options.ask_until_mirrored,
        follow: options
            .follow
            .as_ref()
            .map(|_| options.follow_status.clone().unwrap_or_default()),
        spool_dir: options.spool_dir.clone().unwrap_or_else(std::env::temp_dir),
        escalation: {
            let handle = options.escalation_handle.clone().unwrap_or_default();
            handle.store(Arc::new(options.feedback.escalation.clone()));
            handle
        },
        stats: options.stats.clone().unwrap_or_default(),
        conns: ConnLimits::new(
            options.max_connections,
            options.max_connections_per_client,
            "application/json",
            "{\"error\": \"too many connections from your address\"}\n",
        ),
        ingested: Arc::new(tokio::sync::Notify::new()),
        forwarding: options.forward.is_some(),
    });
    let tracker = TaskTracker::new();
    let tls = options.tls.clone();
    spawn_background(&tracker, &shared, options, &shutdown);
    accept_loop(&listener, &shared, tls, &tracker, &shutdown).await;
    drop(listener);
    tracker.close();
    tracker.wait().await;
    // The last senders go with `shared`: the store's threads then see their queues close.
    drop(shared);
    join_threads(threads).await;
    Ok(())
}

/// The server's background tasks, on `tracker`: the metrics listener, change-log and event
/// pruning, the follower of the upstream tier, the feedback forwarder.
fn spawn_background(
    tracker: &TaskTracker,
    shared: &Arc<Shared>,
    options: ServeOptions,
    shutdown: &CancellationToken,
) {
    if let Some(listener) = options.metrics {
        let shared = shared.clone();
        tracker.spawn(crate::metrics::serve(
            listener,
            shutdown.clone(),
            move |req: Request<Incoming>| {
                let shared = shared.clone();
                async move { metrics_answer(&shared, &req).await }
            },
        ));
    }
    if options.change_log_rows > 0 {
        tracker.spawn(prune_loop(shared.clone(), options.change_log_rows));
    }
    tracker.spawn(prune_events_loop(
        shared.clone(),
        options.feedback.retention,
    ));
    if let (Some(follow), Some(status)) = (options.follow, &shared.follow) {
        tracker.spawn(follow::follow_loop(shared.clone(), follow, status.clone()));
    }
    if let Some(forward) = options.forward {
        tracker.spawn(forward::forward_loop(shared.clone(), forward));
    }
}
