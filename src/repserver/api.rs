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
//!   under it, bounded, with `truncated`; streamed in pieces of [`PIECE_ITEMS`] items); items
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
//! [`PIECE_ITEMS`] items, each made when the client has taken the one before: its cost per
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

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::import::{self, ImportError, ImportOptions, JsonEntry};
use super::metrics::{Answer, Kind, Route, ServerStats};
use super::store::{HostAnswer, Store, StoreError};
use super::upstream::{Misses, Upstream};
use crate::api::changes::Changes;
use crate::api::lookup as wire;
use crate::canon;
use crate::clock::unix_secs;
use crate::conns::{ConnActivity, ConnLimits, ConnPermit};
use crate::model::{
    Entry, FileEntry, FileVerdict, Key, RiskLevel, Score, Sha256Hex, Source, Verdict,
};

/// Bearer tokens accepted by the API.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    /// May look up and follow changes.
    pub client: Vec<String>,
    /// May do everything a client may, and write.
    pub admin: Vec<String>,
}

/// The API's limits and TTLs and the server's feedback settings, validated by config.
pub use crate::config::{ApiConfig, FeedbackOptions};

/// What [`serve_with`] adds to [`serve`]; the defaults are plain HTTP, no upstream, no
/// connection limit, no pruning, spooling imports in the system temporary directory.
#[derive(Default)]
pub struct ServeOptions {
    /// Serve HTTPS with this acceptor.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Ask this upstream tier about what the store has no entry for.
    pub upstream: Option<Arc<Upstream>>,
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
    pub escalation_handle: Option<Arc<arc_swap::ArcSwap<Vec<super::events::EscalationRule>>>>,
}

/// How often the change log is pruned.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// A client that does not finish sending a request head (or a TLS handshake) within this is
/// disconnected.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// An answer body. A streamed one that fails part-way ends with an error, which makes hyper
/// cut the connection: the client sees an incomplete answer, never a short one.
type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;
type Job = Box<dyn FnOnce(&mut Store) + Send>;

/// An error answer: status and message.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
    /// The `Allow` header of a 405.
    allow: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            allow: None,
        }
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Category(_) | StoreError::Key(_) => ApiError::bad_request(e.to_string()),
            _ => {
                tracing::error!(error = %e, "reputation store failed");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "store failure")
            }
        }
    }
}

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
    spool_dir: std::path::PathBuf,
    /// Escalation rules for ingested events (swapped whole by a reload).
    escalation: Arc<arc_swap::ArcSwap<Vec<super::events::EscalationRule>>>,
    /// Counters for `/metrics`.
    stats: Arc<ServerStats>,
    /// Connections open, in all and per client.
    conns: Arc<ConnLimits>,
}

impl Shared {
    /// Runs `f` on the store thread (the one writer) and awaits its result.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        self.run_on(&self.jobs, f).await
    }

    /// Runs a read-only `f` on a reader thread, or on the store thread when there are none.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        self.run_on(
            self.reads.as_ref().unwrap_or(&self.jobs),
            move |s: &mut Store| f(s),
        )
        .await
    }

    async fn run_on<T: Send + 'static>(
        &self,
        queue: &std::sync::mpsc::SyncSender<Job>,
        f: impl FnOnce(&mut Store) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |store| {
            let _ = tx.send(f(store));
        });
        let gone = || ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store unavailable");
        queue.try_send(job).map_err(|e| match e {
            std::sync::mpsc::TrySendError::Full(_) => {
                self.stats.busy();
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server busy, retry later")
            }
            std::sync::mpsc::TrySendError::Disconnected(_) => gone(),
        })?;
        rx.await.map_err(|_| gone())
    }
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

/// The store's threads: one writer that runs jobs in order, and readers with read-only
/// connections (none for an in-memory store, whose lookups go to the writer).
struct StoreThreads {
    jobs: std::sync::mpsc::SyncSender<Job>,
    reads: Option<std::sync::mpsc::SyncSender<Job>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl StoreThreads {
    /// Opens `read_threads` readers on `store`'s file and starts every thread, each with a
    /// queue of `queue` jobs.
    fn start(store: Store, read_threads: usize, queue: usize) -> std::io::Result<StoreThreads> {
        let mut readers = Vec::new();
        for _ in 0..read_threads {
            match store.reader() {
                Ok(Some(r)) => readers.push(r),
                Ok(None) => break,
                Err(e) => return Err(std::io::Error::other(e)),
            }
        }
        let mut threads = Vec::new();
        let reads = if readers.is_empty() {
            None
        } else {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(queue);
            let rx = Arc::new(std::sync::Mutex::new(rx));
            for (i, reader) in readers.into_iter().enumerate() {
                let rx = rx.clone();
                threads.push(
                    std::thread::Builder::new()
                        .name(format!("webrep-read-{i}"))
                        .spawn(move || run_reader(reader, &rx))?,
                );
            }
            Some(tx)
        };
        let (jobs, job_rx) = std::sync::mpsc::sync_channel::<Job>(queue);
        threads.push(
            std::thread::Builder::new()
                .name("webrep-store".to_owned())
                .spawn(move || {
                    let mut store = store;
                    while let Ok(job) = job_rx.recv() {
                        job(&mut store);
                    }
                })?,
        );
        Ok(StoreThreads {
            jobs,
            reads,
            threads,
        })
    }
}

/// Waits for the store's threads, once every sender is gone (their queues then end).
async fn join_threads(threads: Vec<std::thread::JoinHandle<()>>) {
    let _ = tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    })
    .await;
}

/// A reader thread: jobs from the shared queue until it closes.
fn run_reader(mut reader: Store, rx: &std::sync::Mutex<std::sync::mpsc::Receiver<Job>>) {
    loop {
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        match job {
            Ok(job) => job(&mut reader),
            Err(_) => return,
        }
    }
}

/// The server's background tasks, on `tracker`: the metrics listener, change-log and event
/// pruning.
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
}

/// Accepts clients until shutdown: each admitted one is served on `tracker`; one over its
/// address's limit is refused with 429.
async fn accept_loop(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let activity = Arc::new(ConnActivity::new());
        let admitted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = shared.conns.admit(peer.ip(), &activity) => a,
        };
        let Ok(permit) = admitted else {
            tracing::debug!(client.addr = %peer, "too many connections from this client; refused");
            let conns = shared.conns.clone();
            tracker.spawn(async move { conns.refuse(stream).await });
            continue;
        };
        let _ = stream.set_nodelay(true);
        tracker.spawn(serve_client(
            stream,
            tls.clone(),
            shared.clone(),
            activity,
            permit,
        ));
    }
}

/// One admitted client: the TLS handshake (when configured), then HTTP until it closes.
async fn serve_client(
    stream: tokio::net::TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    activity: Arc<ConnActivity>,
    _permit: ConnPermit,
) {
    match tls {
        None => serve_connection(stream, shared, activity).await,
        Some(acceptor) => {
            let handshake = tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream));
            let handshake = tokio::select! {
                h = handshake => h,
                () = activity.close_asked() => return,
            };
            match handshake {
                Ok(Ok(tls)) => serve_connection(tls, shared, activity).await,
                Ok(Err(e)) => tracing::debug!(error = %e, "api TLS handshake failed"),
                Err(_) => tracing::debug!("api TLS handshake timed out"),
            }
        }
    }
}

async fn serve_connection<I>(io: I, shared: Arc<Shared>, activity: Arc<ConnActivity>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let shutdown = shared.shutdown.clone();
    let act = activity.clone();
    let svc = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        let in_flight = act.start_request();
        async move {
            let response = handle(&shared, req).await;
            // The request is in progress until its body is done (an event stream's too).
            Ok::<_, Infallible>(response.map(|body| {
                body.map_frame(move |frame| {
                    let _ = &in_flight;
                    frame
                })
                .boxed_unsync()
            }))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r { tracing::debug!(error = %e, "api connection"); }
            return;
        }
        _ = shutdown.cancelled() => conn.as_mut().graceful_shutdown(),
        // Closed to make room for a new client (the limit is reached and this one is idle):
        // at once when no request is in progress (hyper's graceful shutdown would wait for a
        // half-sent head), else after the request in progress.
        () = activity.close_asked() => {
            if activity.idle_since().is_some() {
                return;
            }
            conn.as_mut().graceful_shutdown();
        }
    }
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "api connection");
    }
}

/// Prunes the change log to `keep` rows every [`PRUNE_INTERVAL`] until shutdown.
async fn prune_loop(shared: Arc<Shared>, keep: u64) {
    let mut tick = tokio::time::interval(PRUNE_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shared.shutdown.cancelled() => return,
        }
        match shared.call(move |store| store.prune_changes(keep)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(rows = n, "pruned the change log"),
            Ok(Err(e)) => tracing::warn!(error = %e, "pruning the change log failed"),
            Err(e) => tracing::debug!(error = e.message, "pruning skipped"),
        }
    }
}

/// Deletes feedback events older than `retention` every [`PRUNE_INTERVAL`] until shutdown.
async fn prune_events_loop(shared: Arc<Shared>, retention: Duration) {
    let mut tick = tokio::time::interval(PRUNE_INTERVAL);
    let keep = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shared.shutdown.cancelled() => return,
        }
        let before = unix_secs().saturating_sub(keep);
        match shared.call(move |store| store.prune_events(before)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(events = n, "pruned old feedback events"),
            Ok(Err(e)) => tracing::warn!(error = %e, "pruning feedback events failed"),
            Err(e) => tracing::debug!(error = e.message, "event pruning skipped"),
        }
    }
}

async fn handle(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let started = std::time::Instant::now();
    let which = Route::of(req.uri().path());
    let response = match which {
        Route::ChangesStream => change_stream(shared, &req),
        Route::Lookup if req.method() == Method::POST => lookup_batch(shared, req).await,
        _ => route(shared, req)
            .await
            .map(|v| json_response(StatusCode::OK, &v)),
    };
    let response = response.unwrap_or_else(|e| error_response(&e));
    shared
        .stats
        .request(which, response.status(), started.elapsed().as_secs_f64());
    response
}

/// The metrics listener: `GET /metrics`, nothing else.
async fn metrics_answer(shared: &Shared, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.uri().path() != "/metrics" {
        return crate::metrics::reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: /metrics\n".into(),
        );
    }
    let seq = *shared.seq.borrow();
    let entries = shared
        .read(|store| store.len())
        .await
        .ok()
        .and_then(Result::ok);
    crate::metrics::scrape_answer(
        req.method(),
        super::metrics::render(&shared.stats, &shared.conns, seq, entries),
    )
}

fn error_response(e: &ApiError) -> Response<Body> {
    let mut r = json_response(e.status, &json!({ "error": e.message }));
    if let Some(allow) = e.allow {
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    r
}

/// A comment line sent on an idle event stream so that proxies and clients see it alive.
const SSE_KEEPALIVE: Duration = Duration::from_secs(15);

/// `GET /v1/changes/stream?since=N`: the change stream as server-sent events. Each event is
/// `id: SEQ`, `event: changes`, `data: {"seq":..,"keys":[..],"truncated":..}` (the same JSON
/// as `/v1/changes`), sent as soon as a write commits; a `: keep-alive` comment every 15 s
/// when idle. A client that reconnects passes the last `id` as `since` (or `Last-Event-ID`).
/// The stream ends when the server shuts down.
fn change_stream(
    shared: &Arc<Shared>,
    req: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    if req.method() != Method::GET {
        return Err(ApiError {
            allow: Some("GET"),
            ..ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed; allowed: GET",
            )
        });
    }
    authorize(shared, req, Role::Client)?;
    let last_event = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let since = match query_param(req.uri().query(), "since")?.or(last_event) {
        None => *shared.seq.borrow(),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request("`since` is not a number"))?,
    };
    struct State {
        shared: Arc<Shared>,
        rx: watch::Receiver<u64>,
        since: u64,
        first: bool,
        _following: super::metrics::Following,
    }
    let state = State {
        _following: shared.stats.follower(),
        rx: shared.seq.clone(),
        shared: shared.clone(),
        since,
        first: true,
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        loop {
            let current = *st.rx.borrow_and_update();
            if current > st.since || (st.first && current < st.since) {
                st.first = false;
                let (since, limit) = (st.since, st.shared.config.max_change_keys);
                let c = match st
                    .shared
                    .read(move |store| store.changes_since(since, limit))
                    .await
                {
                    Ok(Ok(c)) => c,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "change stream: store failed");
                        return None;
                    }
                    Err(_) => return None,
                };
                st.since = c.seq;
                let data = json!(c);
                let event = format!("id: {}\nevent: changes\ndata: {data}\n\n", c.seq);
                return Some((Ok(http_body::Frame::data(Bytes::from(event))), st));
            }
            if st.first {
                st.first = false;
                // Tell the client at once that the stream is open and where it stands.
                let event = format!(": open, seq {current}\n\n");
                return Some((Ok(http_body::Frame::data(Bytes::from(event))), st));
            }
            tokio::select! {
                r = st.rx.changed() => if r.is_err() { return None },
                () = tokio::time::sleep(SSE_KEEPALIVE) => {
                    return Some((Ok(http_body::Frame::data(Bytes::from_static(b": keep-alive\n\n"))), st));
                }
                () = st.shared.shutdown.cancelled() => return None,
            }
        }
    });
    Ok(uncached(
        StatusCode::OK,
        "text/event-stream",
        http_body_util::StreamBody::new(stream).boxed_unsync(),
    ))
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let body = Full::new(Bytes::from(v.to_string()))
        .map_err(|never: Infallible| -> std::io::Error { match never {} });
    uncached(status, "application/json", body.boxed_unsync())
}

/// A response of `content_type` that no cache keeps (`Cache-Control: no-store`).
fn uncached(status: StatusCode, content_type: &'static str, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Client,
    Admin,
}

/// The API's JSON routes (the streamed ones are [`handle`]'s): the handler for the path and
/// method, else 405 with the path's methods, or 404.
async fn route(shared: &Shared, req: Request<Incoming>) -> Result<Value, ApiError> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let query = req.uri().query().map(str::to_owned);
    let query = query.as_deref();
    let (client, admin) = (Role::Client, Role::Admin);
    match (path.as_str(), &method) {
        ("/healthz", &Method::GET) => Ok(healthz(shared)),
        ("/v1/lookup", &Method::GET) => {
            authorize_or_drain(shared, req, client).await?;
            let url = query_param(query, "url")?
                .ok_or_else(|| ApiError::bad_request("missing query parameter `url`"))?;
            lookup_one(shared, url).await
        }
        ("/v1/entries", &Method::POST) => {
            write_entries(shared, &authorized_body(shared, req, admin).await?).await
        }
        ("/v1/changes", &Method::GET) => {
            authorize_or_drain(shared, req, client).await?;
            changes(shared, query).await
        }
        ("/v1/import", &Method::POST) => {
            import_feed(shared, authorize_or_drain(shared, req, admin).await?).await
        }
        ("/v1/files", &Method::GET) => {
            authorize_or_drain(shared, req, client).await?;
            get_file(shared, query).await
        }
        ("/v1/files", &Method::POST) => {
            write_files(shared, &authorized_body(shared, req, admin).await?).await
        }
        ("/v1/files/lookup", &Method::POST) => {
            lookup_files(shared, &authorized_body(shared, req, client).await?).await
        }
        ("/v1/categories", &Method::GET) => {
            authorize_or_drain(shared, req, client).await?;
            shared.call(|store| categories_json(store)).await
        }
        ("/v1/categories", &Method::POST) => {
            define_categories(shared, &authorized_body(shared, req, admin).await?).await
        }
        ("/v1/events", &Method::POST) => {
            let req = authorize_or_drain(shared, req, client).await?;
            let reporter = bearer_token(&req).map(super::events::reporter_id);
            let body = read_body(shared, req).await?;
            ingest_events(shared, &body, reporter).await
        }
        ("/v1/events", &Method::GET) => {
            authorize_or_drain(shared, req, admin).await?;
            list_events(shared, query).await
        }
        ("/v1/feedback/summary", &Method::GET) => {
            authorize_or_drain(shared, req, admin).await?;
            feedback_summary(shared, query).await
        }
        ("/v1/escalations", &Method::GET) => {
            authorize_or_drain(shared, req, admin).await?;
            let answer = shared.read(|store| store.escalations()).await?;
            answer.map_err(ApiError::from)
        }
        ("/v1/escalations/revert", &Method::POST) => {
            revert_escalation(shared, &authorized_body(shared, req, admin).await?).await
        }
        _ => Err(no_route(&path, &method)),
    }
}

/// 405 with the methods of a path the API has, else 404.
fn no_route(path: &str, method: &Method) -> ApiError {
    match Route::allowed(path) {
        Some(allow) => ApiError {
            allow: Some(allow),
            ..ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method {method} not allowed; allowed: {allow}"),
            )
        },
        None => ApiError::new(StatusCode::NOT_FOUND, "no such path"),
    }
}

/// `GET /healthz`: up, the change sequence, the lookups answered.
fn healthz(shared: &Shared) -> Value {
    json!({
        "status": "ok",
        "seq": *shared.seq.borrow(),
        "lookups": shared.stats.looked_up(Kind::Url) + shared.stats.looked_up(Kind::Host),
    })
}

/// The body of a request `role` may send.
async fn authorized_body(
    shared: &Shared,
    req: Request<Incoming>,
    role: Role,
) -> Result<Bytes, ApiError> {
    let req = authorize_or_drain(shared, req, role).await?;
    read_body(shared, req).await
}

/// `GET /v1/files?sha256=`: one file hash's answer, counted.
async fn get_file(shared: &Shared, query: Option<&str>) -> Result<Value, ApiError> {
    let h = query_param(query, "sha256")?
        .ok_or_else(|| ApiError::bad_request("missing query parameter `sha256`"))?;
    let config = shared.config.clone();
    let answer = shared
        .read(move |store| file_answer(store, &config, &h))
        .await?;
    if let Ok(v) = &answer {
        count(shared, Kind::File, std::iter::once(file_counted_as(v)));
    }
    answer
}

/// Checks the bearer token: 401 without one, 403 for an unknown one or a client token where
/// admin is needed.
/// The token of an `Authorization: Bearer ...` value.
fn bearer_value(value: &http::HeaderValue) -> Option<&str> {
    value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

/// The request's bearer token, if it has one.
fn bearer_token(req: &Request<Incoming>) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(bearer_value)
}

fn authorize(shared: &Shared, req: &Request<Incoming>, need: Role) -> Result<(), ApiError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing bearer token",
        ));
    };
    let token = bearer_value(value).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Authorization is not a bearer token",
        )
    })?;
    let known = |list: &[String]| {
        list.iter()
            .fold(false, |acc, t| acc | crate::secrets::token_eq(token, t))
    };
    let tokens = shared.tokens.load();
    let role = if known(&tokens.admin) {
        Role::Admin
    } else if known(&tokens.client) {
        Role::Client
    } else {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "unknown token"));
    };
    if need == Role::Admin && role != Role::Admin {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "this token may not write",
        ));
    }
    Ok(())
}

/// [`authorize`], and on refusal reads (and drops) what the client is still sending, up to
/// [`ApiConfig::max_body`] bytes within a few seconds, before the error goes out: a client
/// that is writing its body when we close would otherwise see a broken pipe instead of the
/// 401/403.
async fn authorize_or_drain(
    shared: &Shared,
    req: Request<Incoming>,
    need: Role,
) -> Result<Request<Incoming>, ApiError> {
    match authorize(shared, &req, need) {
        Ok(()) => Ok(req),
        Err(e) => {
            let limit = shared.config.max_body;
            let drain = async {
                let mut body = req.into_body();
                let mut seen = 0usize;
                while seen <= limit {
                    match body.frame().await {
                        Some(Ok(f)) => seen += f.data_ref().map_or(0, |d| d.len()),
                        _ => break,
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
            Err(e)
        }
    }
}

async fn read_body(shared: &Shared, req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let limit = shared.config.max_body;
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body larger than {limit} bytes"),
        )),
        Err(e) => Err(ApiError::bad_request(format!("reading body: {e}"))),
    }
}

fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("bad JSON: {e}")))
}

/// The decoded value of the first `name=` parameter of a query string.
fn query_param(query: Option<&str>, name: &str) -> Result<Option<String>, ApiError> {
    crate::urlenc::query_param(query, name)
        .map_err(|_| ApiError::bad_request(format!("bad encoding in `{name}`")))
}

fn ttl(config: &ApiConfig, v: &Verdict) -> u64 {
    if v.risk == RiskLevel::Untested {
        config.untested_ttl_secs
    } else {
        config.ttl_secs
    }
}

/// One URL's answer (run on the store thread): verdict, TTL and explain. A URL that does not
/// parse is a 400 ([`ApiError::bad_request`]), a store failure a 500.
fn answer_url(
    store: &Store,
    config: &ApiConfig,
    input: &str,
    now: i64,
) -> Result<wire::UrlAnswer, ApiError> {
    let url =
        canon::canonicalize(input).map_err(|e| ApiError::bad_request(format!("not a URL: {e}")))?;
    let verdict = store.lookup(&url, now)?;
    let matched = verdict
        .matched
        .iter()
        .filter_map(|k| store.get(k).transpose())
        .collect::<Result<Vec<_>, _>>()?;
    let ttl_secs = capped_ttl(ttl(config, &verdict), matched.iter(), now);
    let view = wire::VerdictView::of(&verdict, ttl_secs, wire::Tier::Local);
    Ok(wire::UrlAnswer {
        url: input.to_owned(),
        canonical: url.to_string(),
        explain: wire::Explain {
            matched: matched.iter().map(wire::EntryView::of).collect(),
            risk: view.risk.clone(),
            score: view.score,
            categories: view.categories.clone(),
            rule: wire::RULE.to_owned(),
        },
        verdict: view,
    })
}

/// An answer is not cached beyond the expiry of an entry it rests on.
fn capped_ttl<'a>(base: u64, entries: impl Iterator<Item = &'a Entry>, now: i64) -> u64 {
    entries
        .filter_map(|e| e.expires)
        .map(|x| u64::try_from(x.saturating_sub(now)).unwrap_or(0))
        .fold(base, u64::min)
}

/// One host's answer (run on the store thread). Its TTL is capped by the expiry of the
/// `host/` entries of its verdict and of the path entries sent with it.
fn answer_host(
    store: &Store,
    config: &ApiConfig,
    input: &str,
    a: &HostAnswer,
    now: i64,
) -> Result<wire::HostAnswer, ApiError> {
    let matched = a
        .verdict
        .matched
        .iter()
        .filter_map(|k| store.get(k).transpose())
        .collect::<Result<Vec<_>, _>>()?;
    let ttl_secs = capped_ttl(ttl(config, &a.verdict), matched.iter().chain(&a.paths), now);
    Ok(wire::HostAnswer {
        host: input.to_owned(),
        canonical: a.host.clone(),
        verdict: wire::VerdictView::of(&a.verdict, ttl_secs, wire::Tier::Local),
        matched: a
            .verdict
            .matched
            .iter()
            .map(|k| k.as_str().to_owned())
            .collect(),
        paths: a.paths.iter().map(wire::EntryView::of).collect(),
        truncated: a.truncated,
    })
}

async fn lookup_one(shared: &Shared, url: String) -> Result<Value, ApiError> {
    let config = shared.config.clone();
    let answer = shared
        .read(move |store| answer_url(store, &config, &url, unix_secs()))
        .await??;
    let mut urls = [wire::UrlItem::Answer(Box::new(answer))];
    consult_upstream(shared, &mut urls, &mut []).await;
    count(shared, Kind::Url, urls.iter().map(LookupItem::counted_as));
    let [answer] = urls;
    Ok(json!(answer))
}

/// Counts looked-up items by what answered them (for `/metrics`).
fn count(shared: &Shared, kind: Kind, answers: impl Iterator<Item = Answer>) {
    let mut n = [0u64; 4];
    for answer in answers {
        n[answer as usize] += 1;
    }
    for (a, n) in [
        Answer::Listed,
        Answer::Untested,
        Answer::Upstream,
        Answer::Error,
    ]
    .into_iter()
    .zip(n)
    {
        shared.stats.items(kind, a, n);
    }
}

/// What answered a file lookup's item.
fn file_counted_as(v: &Value) -> Answer {
    if v.get("error").is_some() {
        Answer::Error
    } else if v.get("tier").and_then(Value::as_str) == Some("upstream") {
        Answer::Upstream
    } else if v.get("verdict").and_then(Value::as_str) == Some("unknown") {
        Answer::Untested
    } else {
        Answer::Listed
    }
}

/// A URL's or a host's item of a lookup answer, as the upstream tier and the counters see it.
trait LookupItem: Sized {
    /// The answer type of the item.
    type Answer: Clone;
    /// The item's answer when it rests on no local entry (a host's: nor on a path entry).
    fn locally_untested(&self) -> Option<&Self::Answer>;
    /// The canonical form an answer is keyed by.
    fn canonical(answer: &Self::Answer) -> &str;
    /// Takes the upstream tier's answer in place of this one.
    fn take_upstream(&mut self, upstream: &Self::Answer);
    /// Says the upstream tier could not be asked.
    fn mark_unavailable(&mut self);
    /// The counter the item goes to.
    fn counted_as(&self) -> Answer;
}

fn counted_as(verdict: Option<&wire::VerdictView>, untested: bool) -> Answer {
    match verdict {
        None => Answer::Error,
        Some(v) if v.tier == wire::Tier::Upstream => Answer::Upstream,
        Some(_) if untested => Answer::Untested,
        Some(_) => Answer::Listed,
    }
}

impl LookupItem for wire::UrlItem {
    type Answer = wire::UrlAnswer;
    fn locally_untested(&self) -> Option<&wire::UrlAnswer> {
        match self {
            wire::UrlItem::Answer(a) if a.verdict.is_untested() => Some(a),
            _ => None,
        }
    }
    fn canonical(answer: &wire::UrlAnswer) -> &str {
        &answer.canonical
    }
    fn take_upstream(&mut self, upstream: &wire::UrlAnswer) {
        if let wire::UrlItem::Answer(a) = self {
            let url = std::mem::take(&mut a.url);
            **a = wire::UrlAnswer {
                url,
                ..upstream.clone()
            };
            a.verdict.tier = wire::Tier::Upstream;
        }
    }
    fn mark_unavailable(&mut self) {
        if let wire::UrlItem::Answer(a) = self {
            a.verdict.upstream = Some(wire::UpstreamState::Unavailable);
        }
    }
    fn counted_as(&self) -> Answer {
        match self {
            wire::UrlItem::Answer(a) => counted_as(Some(&a.verdict), a.verdict.is_untested()),
            wire::UrlItem::Refused { .. } => Answer::Error,
        }
    }
}

impl LookupItem for wire::HostItem {
    type Answer = wire::HostAnswer;
    fn locally_untested(&self) -> Option<&wire::HostAnswer> {
        match self {
            wire::HostItem::Answer(a) if a.verdict.is_untested() && a.paths.is_empty() => Some(a),
            _ => None,
        }
    }
    fn canonical(answer: &wire::HostAnswer) -> &str {
        &answer.canonical
    }
    fn take_upstream(&mut self, upstream: &wire::HostAnswer) {
        if let wire::HostItem::Answer(a) = self {
            let host = std::mem::take(&mut a.host);
            **a = wire::HostAnswer {
                host,
                ..upstream.clone()
            };
            a.verdict.tier = wire::Tier::Upstream;
        }
    }
    fn mark_unavailable(&mut self) {
        if let wire::HostItem::Answer(a) = self {
            a.verdict.upstream = Some(wire::UpstreamState::Unavailable);
        }
    }
    fn counted_as(&self) -> Answer {
        match self {
            wire::HostItem::Answer(a) => counted_as(
                Some(&a.verdict),
                a.verdict.is_untested() && a.paths.is_empty(),
            ),
            wire::HostItem::Refused { .. } => Answer::Error,
        }
    }
}

/// Replaces locally untested answers with the upstream tier's, when there is one. Items the
/// upstream could not answer keep their untested answer and say `"upstream": "unavailable"`.
async fn consult_upstream(
    shared: &Shared,
    urls: &mut [wire::UrlItem],
    hosts: &mut [wire::HostItem],
) {
    let Some(upstream) = &shared.upstream else {
        return;
    };
    let misses = Misses {
        urls: misses(urls),
        hosts: misses(hosts),
    };
    if misses.urls.is_empty() && misses.hosts.is_empty() {
        return;
    }
    let answers = upstream.resolve(misses).await;
    if answers.unavailable {
        shared.stats.upstream_unavailable();
    }
    merge_upstream(urls, &answers.urls, answers.unavailable);
    merge_upstream(hosts, &answers.hosts, answers.unavailable);
}

/// The canonical forms of the items with a locally untested answer.
fn misses<T: LookupItem>(items: &[T]) -> Vec<String> {
    items
        .iter()
        .filter_map(T::locally_untested)
        .map(|a| T::canonical(a).to_owned())
        .collect()
}

fn merge_upstream<T: LookupItem>(
    items: &mut [T],
    found: &std::collections::HashMap<String, Arc<T::Answer>>,
    unavailable: bool,
) {
    for item in items.iter_mut() {
        let Some(local) = item.locally_untested() else {
            continue;
        };
        match found.get(T::canonical(local)) {
            Some(up) => item.take_upstream(up),
            None if unavailable => item.mark_unavailable(),
            None => {}
        }
    }
}

/// Items of a batch lookup answered by one store job (in one snapshot) and sent as one piece
/// of the answer.
const PIECE_ITEMS: usize = 1000;

/// A run of consecutive items of one list of a batch lookup: `urls[start..end]`, or
/// `hosts[start..end]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Piece {
    hosts: bool,
    start: usize,
    end: usize,
}

/// The pieces of a batch of `urls` URLs and `hosts` hosts, at most `per_piece` items each:
/// the URLs first, then the hosts. An empty batch is one empty URL piece, so that every
/// answer has a first and a last piece.
fn plan_pieces(urls: usize, hosts: usize, per_piece: usize) -> Vec<Piece> {
    let per_piece = per_piece.max(1);
    let runs = |n: usize, hosts: bool| {
        (0..n).step_by(per_piece).map(move |start| Piece {
            hosts,
            start,
            end: (start + per_piece).min(n),
        })
    };
    let mut plan: Vec<Piece> = runs(urls, false).chain(runs(hosts, true)).collect();
    if plan.is_empty() {
        plan.push(Piece {
            hosts: false,
            start: 0,
            end: 0,
        });
    }
    plan
}

/// The bytes of one piece of the answer `{"urls":[...],"hosts":[...]}`: the brackets and
/// commas around its items that its place calls for (`last`: no piece follows;
/// `no_urls`: the batch has no URL, so a host piece opens the answer).
fn frame_piece<T: serde::Serialize>(
    piece: Piece,
    last: bool,
    no_urls: bool,
    items: &[T],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(items.len() * 512 + 32);
    if piece.start > 0 {
        out.push(b',');
    } else if !piece.hosts {
        out.extend_from_slice(b"{\"urls\":[");
    } else {
        if no_urls {
            out.extend_from_slice(b"{\"urls\":[");
        }
        out.extend_from_slice(b"],\"hosts\":[");
    }
    for (i, v) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Writing plain data into a `Vec` cannot fail.
        let _ = serde_json::to_writer(&mut out, v);
    }
    if last {
        out.extend_from_slice(if piece.hosts {
            b"]}"
        } else {
            b"],\"hosts\":[]}"
        });
    }
    out
}

/// The answers to one piece's items, looked up in one store job and one snapshot, checked
/// against the upstream tier and counted. A URL or host that does not parse is an error for
/// that item; a store failure fails the piece.
async fn answer_piece(
    shared: &Shared,
    batch: &Arc<wire::BatchRequest>,
    piece: Piece,
) -> Result<PieceItems, ApiError> {
    let (config, items) = (shared.config.clone(), batch.clone());
    let mut answers = shared
        .read(move |store| {
            store.snapshot(|store| {
                let now = unix_secs();
                if piece.hosts {
                    let hosts = &items.hosts[piece.start..piece.end];
                    answer_hosts(store, &config, hosts, now).map(PieceItems::Hosts)
                } else {
                    let urls = &items.urls[piece.start..piece.end];
                    answer_urls(store, &config, urls, now).map(PieceItems::Urls)
                }
            })
        })
        .await??;
    match &mut answers {
        PieceItems::Urls(urls) => {
            consult_upstream(shared, urls, &mut []).await;
            count(shared, Kind::Url, urls.iter().map(LookupItem::counted_as));
        }
        PieceItems::Hosts(hosts) => {
            consult_upstream(shared, &mut [], hosts).await;
            count(shared, Kind::Host, hosts.iter().map(LookupItem::counted_as));
        }
    }
    Ok(answers)
}

/// The answers of one piece of a batch lookup.
enum PieceItems {
    Urls(Vec<wire::UrlItem>),
    Hosts(Vec<wire::HostItem>),
}

fn answer_urls(
    store: &Store,
    config: &ApiConfig,
    urls: &[String],
    now: i64,
) -> Result<Vec<wire::UrlItem>, ApiError> {
    let mut out = Vec::with_capacity(urls.len());
    for u in urls {
        out.push(match answer_url(store, config, u, now) {
            Ok(a) => wire::UrlItem::Answer(Box::new(a)),
            Err(e) if e.status == StatusCode::BAD_REQUEST => wire::UrlItem::Refused {
                url: u.clone(),
                error: e.message,
            },
            Err(e) => return Err(e),
        });
    }
    Ok(out)
}

fn answer_hosts(
    store: &Store,
    config: &ApiConfig,
    hosts: &[String],
    now: i64,
) -> Result<Vec<wire::HostItem>, ApiError> {
    let refs: Vec<&str> = hosts.iter().map(String::as_str).collect();
    let answers = store.lookup_hosts(&refs, now, config.host_path_limit)?;
    let mut out = Vec::with_capacity(answers.len());
    for (h, a) in hosts.iter().zip(&answers) {
        out.push(match a {
            Ok(a) => wire::HostItem::Answer(Box::new(answer_host(store, config, h, a, now)?)),
            Err(e) => wire::HostItem::Refused {
                host: h.clone(),
                error: format!("not a host: {e}"),
            },
        });
    }
    Ok(out)
}

/// `POST /v1/lookup`: one answer per URL and per host, in order, at most
/// [`ApiConfig::max_batch`] items. The answer is streamed in pieces of [`PIECE_ITEMS`] items:
/// a piece is looked up and serialized only when the client has taken the one before, so the
/// server holds one piece at a time whatever the batch size, and other requests' store jobs
/// run between pieces. The first piece is answered before the status goes out (a store that
/// fails at once is a 500, a full store queue a 503); either later cuts the answer off.
async fn lookup_batch(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let req = authorize_or_drain(shared, req, Role::Client).await?;
    let body = read_body(shared, req).await?;
    let batch: wire::BatchRequest = parse_json(&body)?;
    drop(body);
    check_batch(shared, batch.urls.len() + batch.hosts.len())?;
    let plan: Arc<[Piece]> = plan_pieces(batch.urls.len(), batch.hosts.len(), PIECE_ITEMS).into();
    let no_urls = batch.urls.is_empty();
    let batch = Arc::new(batch);
    let answer = move |answers: &PieceItems, i: usize, plan: &[Piece]| {
        let last = i + 1 == plan.len();
        Bytes::from(match answers {
            PieceItems::Urls(items) => frame_piece(plan[i], last, no_urls, items),
            PieceItems::Hosts(items) => frame_piece(plan[i], last, no_urls, items),
        })
    };
    let first = answer(&answer_piece(shared, &batch, plan[0]).await?, 0, &plan);
    let shared = shared.clone();
    let rest = futures_util::stream::unfold(1, move |i| {
        let (shared, batch, plan) = (shared.clone(), batch.clone(), plan.clone());
        async move {
            let piece = *plan.get(i)?;
            Some(match answer_piece(&shared, &batch, piece).await {
                Ok(answers) => (Ok(answer(&answers, i, &plan)), i + 1),
                Err(e) => {
                    tracing::warn!(error = %e.message, "batch lookup cut off");
                    (Err(std::io::Error::other(e.message)), plan.len())
                }
            })
        }
    });
    let pieces =
        futures_util::StreamExt::chain(futures_util::stream::once(async move { Ok(first) }), rest);
    let pieces = futures_util::TryStreamExt::map_ok(pieces, http_body::Frame::data);
    Ok(uncached(
        StatusCode::OK,
        "application/json",
        http_body_util::StreamBody::new(pieces).boxed_unsync(),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteRequest {
    #[serde(default)]
    upsert: Vec<JsonEntry>,
    #[serde(default)]
    delete: Vec<String>,
}

async fn write_entries(shared: &Shared, body: &[u8]) -> Result<Value, ApiError> {
    let req: WriteRequest = parse_json(body)?;
    let n = req.upsert.len() + req.delete.len();
    if n == 0 {
        return Err(ApiError::bad_request("nothing to write"));
    }
    if n > shared.config.max_batch {
        return Err(ApiError::bad_request(format!(
            "{n} items in one batch; at most {}",
            shared.config.max_batch
        )));
    }
    let seq_tx = shared.seq_tx.clone();
    let seq = shared
        .call(move |store| -> Result<u64, ApiError> {
            let now = unix_secs();
            let mut entries = Vec::with_capacity(req.upsert.len());
            for (i, j) in req.upsert.into_iter().enumerate() {
                entries.push(
                    j.into_entry(store.taxonomy(), Source::Manual, now)
                        .map_err(|e| ApiError::bad_request(format!("upsert[{i}]: {e}")))?,
                );
            }
            let mut keys = Vec::with_capacity(req.delete.len());
            for (i, k) in req.delete.iter().enumerate() {
                keys.push(
                    Key::parse(k)
                        .map_err(|e| ApiError::bad_request(format!("delete[{i}]: {e}")))?,
                );
            }
            let seq = store.write(|w| -> Result<u64, ApiError> {
                for e in &entries {
                    w.upsert(e)?;
                }
                for k in &keys {
                    w.delete(k)?;
                }
                Ok(w.seq())
            })?;
            publish(&seq_tx, seq);
            Ok(seq)
        })
        .await??;
    Ok(json!({ "seq": seq }))
}

/// Wakes the followers with a new sequence number. Called on the store thread right after
/// the commit: followers are woken even when the writer's connection is gone before its
/// answer.
fn publish(seq_tx: &watch::Sender<u64>, seq: u64) {
    seq_tx.send_if_modified(|cur| {
        let newer = seq > *cur;
        if newer {
            *cur = seq;
        }
        newer
    });
}

async fn changes(shared: &Shared, query: Option<&str>) -> Result<Value, ApiError> {
    let number = |name: &str| -> Result<u64, ApiError> {
        match query_param(query, name)? {
            None => Ok(0),
            Some(v) => v
                .parse()
                .map_err(|_| ApiError::bad_request(format!("`{name}` is not a number"))),
        }
    };
    let since = number("since")?;
    let wait = Duration::from_millis(number("wait_ms")?.min(shared.config.max_wait_ms));
    let limit = shared.config.max_change_keys;
    let mut rx = shared.seq.clone();
    let deadline = tokio::time::Instant::now() + wait;
    let _following = shared.stats.follower();
    loop {
        // Mark the current value seen before reading the store: a write after this point
        // wakes `changed()` below, so none is missed.
        let current = *rx.borrow_and_update();
        // `since` ahead of this store (replaced, or restored from an older copy) is answered
        // at once too: `truncated`, so the follower drops its cache now, not after the wait.
        if current != since || tokio::time::Instant::now() >= deadline {
            let c = shared
                .read(move |store| store.changes_since(since, limit))
                .await??;
            return Ok(json!(c));
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return Ok(empty_changes(current)) },
            _ = tokio::time::sleep_until(deadline) => {}
            _ = shared.shutdown.cancelled() => return Ok(empty_changes(current)),
        }
    }
}

fn empty_changes(seq: u64) -> Value {
    json!(Changes::none(seq))
}

/// `POST /v1/import?format=F&feed=NAME[&category=C][&score=N]`: the body (a feed file) is
/// spooled to a temporary file (at most [`ApiConfig::max_import_bytes`]), then imported in one
/// transaction on the store thread. Answers the import report.
async fn import_feed(shared: &Shared, req: Request<Incoming>) -> Result<Value, ApiError> {
    let q = req.uri().query();
    let format_name = query_param(q, "format")?.ok_or_else(|| {
        ApiError::bad_request(format!(
            "missing query parameter `format` ({})",
            import::Format::NAMES
        ))
    })?;
    let format = import::Format::from_name(&format_name).ok_or_else(|| {
        ApiError::bad_request(format!(
            "unknown format {format_name:?}; one of {}",
            import::Format::NAMES
        ))
    })?;
    let feed = query_param(q, "feed")?.unwrap_or_else(|| format.as_str().to_owned());
    if feed.is_empty()
        || feed.len() > 64
        || !feed.bytes().all(|b| b.is_ascii_graphic() && b != b':')
    {
        return Err(ApiError::bad_request(
            "`feed` must be 1 to 64 visible characters without ':'",
        ));
    }
    let category = query_param(q, "category")?;
    let score = match query_param(q, "score")? {
        None => Score::ZERO,
        Some(s) => s
            .parse::<u8>()
            .ok()
            .and_then(Score::new)
            .ok_or_else(|| ApiError::bad_request(format!("`score` {s:?} is not 0..=100")))?,
    };
    let file_verdict = match query_param(q, "verdict")? {
        None => crate::model::FileVerdict::Malicious,
        Some(v) => crate::model::FileVerdict::parse(&v).ok_or_else(|| {
            ApiError::bad_request(format!(
                "`verdict` {v:?} is not clean, suspicious or malicious"
            ))
        })?,
    };
    let spool = spool_body(shared, req.into_body()).await?;
    let seq_tx = shared.seq_tx.clone();
    let report = shared
        .call(move |store| -> Result<import::ImportReport, ApiError> {
            let mut opts = ImportOptions::new(format, &feed, unix_secs());
            opts.score = score;
            opts.file_verdict = file_verdict;
            if let Some(c) = category {
                opts.category = Some(
                    store
                        .taxonomy()
                        .resolve(&c)
                        .map_err(|e| ApiError::bad_request(e.to_string()))?,
                );
            }
            let file = spool.reopen().map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("spool: {e}"))
            })?;
            let report = import::import(store, std::io::BufReader::new(file), &opts).map_err(
                |e| match e {
                    ImportError::Store(e) => ApiError::from(e),
                    e => ApiError::bad_request(e.to_string()),
                },
            )?;
            publish(&seq_tx, report.seq);
            drop(spool);
            Ok(report)
        })
        .await??;
    tracing::info!(
        format = format.as_str(),
        imported = report.imported,
        bad = report.bad_total,
        seq = report.seq,
        "feed imported"
    );
    Ok(json!({
        "seq": report.seq,
        "lines": report.lines,
        "imported": report.imported,
        "skipped": report.skipped,
        "bad_total": report.bad_total,
        "bad": report.bad.iter().map(|b| json!({ "line": b.line, "reason": b.reason })).collect::<Vec<_>>(),
        "unterminated_last_line": report.unterminated_last_line,
    }))
}

/// Writes a request body to a new temporary file in the spool directory, at most
/// [`ApiConfig::max_import_bytes`]. The file is deleted when the returned handle drops.
async fn spool_body(
    shared: &Shared,
    mut body: Incoming,
) -> Result<tempfile::NamedTempFile, ApiError> {
    use tokio::io::AsyncWriteExt as _;
    let internal = |what: &str, e: std::io::Error| {
        tracing::error!(error = %e, "import spool: {what}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("import spool: {what}: {e}"),
        )
    };
    let tmp = super::upload::create(&shared.spool_dir)
        .map_err(|e| internal("cannot create a temporary file", e))?;
    let mut out = tokio::fs::File::from_std(
        tmp.reopen()
            .map_err(|e| internal("cannot open the temporary file", e))?,
    );
    let limit = shared.config.max_import_bytes;
    let mut written: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::bad_request(format!("reading body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            written += data.len() as u64;
            if written > limit {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("feed larger than {limit} bytes"),
                ));
            }
            out.write_all(&data)
                .await
                .map_err(|e| internal("cannot write", e))?;
        }
    }
    out.flush().await.map_err(|e| internal("cannot write", e))?;
    Ok(tmp)
}

/// One file-hash answer: the stored verdict, or `unknown`.
fn file_answer(store: &Store, config: &ApiConfig, input: &str) -> Result<Value, ApiError> {
    let h = Sha256Hex::parse(input)
        .ok_or_else(|| ApiError::bad_request("`sha256` is not 64 hex digits"))?;
    Ok(match store.lookup_file(&h)? {
        Some(f) => json!({
            "sha256": f.sha256.as_str(),
            "verdict": f.verdict.as_str(),
            "name": f.name,
            "source": f.source.to_stored(),
            "updated": f.updated,
            "ttl_secs": config.ttl_secs,
        }),
        None => json!({
            "sha256": h.as_str(),
            "verdict": "unknown",
            "ttl_secs": config.untested_ttl_secs,
        }),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLookupRequest {
    sha256: Vec<String>,
}

async fn lookup_files(shared: &Shared, body: &[u8]) -> Result<Value, ApiError> {
    let req: FileLookupRequest = parse_json(body)?;
    check_batch(shared, req.sha256.len())?;
    let config = shared.config.clone();
    let answer = shared
        .read(move |store| -> Result<Value, ApiError> {
            let mut files = Vec::with_capacity(req.sha256.len());
            for h in &req.sha256 {
                files.push(match file_answer(store, &config, h) {
                    Ok(v) => v,
                    Err(e) if e.status == StatusCode::BAD_REQUEST => {
                        json!({ "sha256": h, "error": e.message })
                    }
                    Err(e) => return Err(e),
                });
            }
            Ok(json!({ "files": files }))
        })
        .await??;
    if let Some(files) = answer.get("files").and_then(Value::as_array) {
        count(shared, Kind::File, files.iter().map(file_counted_as));
    }
    Ok(answer)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonFile {
    sha256: String,
    verdict: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    source: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileWriteRequest {
    upsert: Vec<JsonFile>,
}

async fn write_files(shared: &Shared, body: &[u8]) -> Result<Value, ApiError> {
    let req: FileWriteRequest = parse_json(body)?;
    if req.upsert.is_empty() {
        return Err(ApiError::bad_request("nothing to write"));
    }
    check_batch(shared, req.upsert.len())?;
    let now = unix_secs();
    let mut files = Vec::with_capacity(req.upsert.len());
    for (i, f) in req.upsert.into_iter().enumerate() {
        let bad = |m: String| ApiError::bad_request(format!("upsert[{i}]: {m}"));
        files.push(FileEntry {
            sha256: Sha256Hex::parse(&f.sha256)
                .ok_or_else(|| bad("`sha256` is not 64 hex digits".into()))?,
            verdict: FileVerdict::parse(&f.verdict).ok_or_else(|| {
                bad(format!(
                    "verdict {:?}: one of clean, suspicious, malicious",
                    f.verdict
                ))
            })?,
            name: f.name,
            source: match f.source.as_deref() {
                None => Source::Manual,
                Some(s) => {
                    Source::from_stored(s).ok_or_else(|| bad(format!("bad source {s:?}")))?
                }
            },
            updated: now,
        });
    }
    let seq_tx = shared.seq_tx.clone();
    let seq = shared
        .call(move |store| -> Result<u64, ApiError> {
            let seq = store.upsert_files(&files)?;
            publish(&seq_tx, seq);
            Ok(seq)
        })
        .await??;
    Ok(json!({ "seq": seq }))
}

/// `POST /v1/events`: stores the valid events of a batch (`{"events": [...]}`),
/// de-duplicated by token, proxy and id, then applies the escalation rules; answers an
/// [`IngestReply`] with one result per event. A bad event is refused alone; only a body that
/// is not a batch is a 400, and too many events a 413.
async fn ingest_events(
    shared: &Shared,
    body: &[u8],
    reporter: Option<String>,
) -> Result<Value, ApiError> {
    use crate::api::events::{BatchError, EventResult, EventStatus, IngestReply, parse_batch};
    let items = parse_batch(body, shared.config.max_batch).map_err(|e| match e {
        BatchError::TooMany { .. } => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
        BatchError::Malformed(m) => ApiError::bad_request(m),
    })?;
    let mut results = Vec::with_capacity(items.len());
    let mut events = Vec::with_capacity(items.len());
    for item in items {
        let error = match item.event {
            Ok(e) => {
                events.push(e);
                None
            }
            Err(e) => Some(e.to_string()),
        };
        results.push(EventResult {
            id: item.id,
            status: EventStatus::Rejected,
            error,
        });
    }
    let rejected = (results.len() - events.len()) as u64;
    let ingest = if events.is_empty() {
        super::events::Ingest::default()
    } else {
        let rules = shared.escalation.load_full();
        let seq_tx = shared.seq_tx.clone();
        shared
            .call(move |store| {
                let r = store.ingest_events_from(reporter.as_deref(), &events, unix_secs(), &rules);
                if let Ok(super::events::Ingest { seq: Some(seq), .. }) = &r {
                    publish(&seq_tx, *seq);
                }
                r
            })
            .await??
    };
    // The stored events' statuses fill the results that are not refusals, in order.
    let mut stored = ingest.statuses.iter();
    for r in results.iter_mut().filter(|r| r.error.is_none()) {
        r.status = stored.next().copied().unwrap_or(EventStatus::Accepted);
    }
    static REFUSED: crate::telemetry::LogLimiter = crate::telemetry::LogLimiter::new();
    if rejected > 0 && REFUSED.allow(Duration::from_secs(10)) {
        tracing::warn!(
            rejected,
            first = results.iter().find_map(|r| r.error.as_deref()),
            "feedback events refused (the others of the batch were stored)"
        );
    }
    shared.stats.events(
        ingest.accepted,
        ingest.duplicate,
        rejected,
        ingest.escalated.len() as u64,
    );
    let reply = IngestReply {
        accepted: ingest.accepted,
        duplicate: ingest.duplicate,
        escalated: ingest.escalated,
        rejected,
        results: Some(results),
    };
    serde_json::to_value(reply)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// A numeric query parameter with a default and a maximum.
fn number_param(query: Option<&str>, name: &str, default: u64, max: u64) -> Result<u64, ApiError> {
    match query_param(query, name)? {
        None => Ok(default),
        Some(v) => v
            .parse::<u64>()
            .map(|n| n.min(max))
            .map_err(|_| ApiError::bad_request(format!("`{name}` must be a number"))),
    }
}

/// `GET /v1/events?kind=K&host=H&limit=N`: stored events, newest first.
async fn list_events(shared: &Shared, query: Option<&str>) -> Result<Value, ApiError> {
    use crate::api::events::Kind;
    let kind = match query_param(query, "kind")? {
        None => None,
        Some(k) => Some(
            Kind::parse(&k).ok_or_else(|| ApiError::bad_request(format!("unknown kind {k:?}")))?,
        ),
    };
    let host = query_param(query, "host")?;
    let limit = number_param(query, "limit", 100, 100_000)? as usize;
    let events = shared
        .read(move |store| store.events(kind, host.as_deref(), limit))
        .await??;
    Ok(json!({ "events": events }))
}

/// `GET /v1/feedback/summary?since_secs=S&limit=N`: the aggregates of the last S seconds.
async fn feedback_summary(shared: &Shared, query: Option<&str>) -> Result<Value, ApiError> {
    let since_secs = number_param(query, "since_secs", 86_400, 10 * 365 * 86_400)?;
    let limit = number_param(query, "limit", 20, 1000)? as usize;
    let since = unix_secs()
        .saturating_sub(i64::try_from(since_secs).unwrap_or(0))
        .saturating_mul(1000);
    Ok(shared
        .read(move |store| store.feedback_summary(since, limit))
        .await??)
}

/// `POST /v1/escalations/revert` with `{"key": "host/"}`.
async fn revert_escalation(shared: &Shared, body: &[u8]) -> Result<Value, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Revert {
        key: String,
    }
    let r: Revert = parse_json(body)?;
    let key = Key::parse(&r.key).map_err(|e| ApiError::bad_request(format!("key: {e}")))?;
    let seq_tx = shared.seq_tx.clone();
    let shown = key.as_str().to_owned();
    let seq = shared
        .call(move |store| {
            let r = store.revert_escalation(&key);
            if let Ok(Some(seq)) = &r {
                publish(&seq_tx, *seq);
            }
            r
        })
        .await??;
    match seq {
        Some(seq) => Ok(json!({ "reverted": shown, "seq": seq })),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no active escalation for {shown}"),
        )),
    }
}

fn check_batch(shared: &Shared, n: usize) -> Result<(), ApiError> {
    if n > shared.config.max_batch {
        return Err(ApiError::bad_request(format!(
            "{n} items in one batch; at most {}",
            shared.config.max_batch
        )));
    }
    Ok(())
}

fn categories_json(store: &Store) -> Value {
    let builtin: Vec<Value> = crate::model::BUILTIN_CATEGORIES
        .iter()
        .map(|(name, class)| json!({ "name": name, "class": format!("{class:?}").to_ascii_lowercase() }))
        .collect();
    let custom: Vec<&str> = store.taxonomy().custom().map(|c| c.as_str()).collect();
    json!({ "builtin": builtin, "custom": custom })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CategoryRequest {
    define: Vec<String>,
}

async fn define_categories(shared: &Shared, body: &[u8]) -> Result<Value, ApiError> {
    let req: CategoryRequest = parse_json(body)?;
    check_batch(shared, req.define.len())?;
    let mut cats = Vec::with_capacity(req.define.len());
    for name in &req.define {
        cats.push(
            crate::model::Category::parse(name)
                .map_err(|e| ApiError::bad_request(format!("{name:?}: {e}")))?,
        );
    }
    shared
        .call(move |store| -> Result<Value, ApiError> {
            for c in cats {
                store.define_category(c)?;
            }
            Ok(categories_json(store))
        })
        .await?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decoding itself is [`crate::urlenc`]'s (tested there); a value that does not decode is
    /// a 400 naming the parameter.
    #[test]
    fn query_parameters() {
        let q = Some("url=http%3A%2F%2Fa.test%2F");
        assert_eq!(
            query_param(q, "url").unwrap().as_deref(),
            Some("http://a.test/")
        );
        let e = query_param(Some("url=%zz"), "url").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.message, "bad encoding in `url`");
    }

    #[test]
    fn pieces_of_a_batch_join_into_its_answer() {
        let item = |kind: &str, i: usize| json!({ kind: i });
        for (urls, hosts) in [
            (0, 0),
            (1, 0),
            (0, 1),
            (3, 0),
            (0, 7),
            (3, 3),
            (7, 10),
            (9, 3),
        ] {
            let plan = plan_pieces(urls, hosts, 3);
            assert!(plan.iter().all(|p| p.end > p.start || urls + hosts == 0));
            let mut answer = Vec::new();
            for (i, p) in plan.iter().enumerate() {
                let kind = if p.hosts { "host" } else { "url" };
                let items: Vec<Value> = (p.start..p.end).map(|i| item(kind, i)).collect();
                answer.extend(frame_piece(*p, i + 1 == plan.len(), urls == 0, &items));
            }
            let answer: Value = serde_json::from_slice(&answer).unwrap_or_else(|e| {
                panic!("{urls}+{hosts}: {e}: {}", String::from_utf8_lossy(&answer))
            });
            let want = json!({
                "urls": (0..urls).map(|i| item("url", i)).collect::<Vec<_>>(),
                "hosts": (0..hosts).map(|i| item("host", i)).collect::<Vec<_>>(),
            });
            assert_eq!(answer, want, "{urls}+{hosts}");
        }
        assert_eq!(plan_pieces(2500, 0, PIECE_ITEMS).len(), 3);
    }
}
