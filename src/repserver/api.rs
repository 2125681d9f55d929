//! The reputation server's HTTP/1.1 JSON API over one [`Store`] (DESIGN.md §4).
//!
//! # What it does
//! [`serve`] accepts connections on a listener until a shutdown token is cancelled and
//! answers:
//! - `GET /healthz`: liveness, no token needed;
//! - `GET /v1/lookup?url=U`: the combined verdict for one URL, with `ttl_secs` and an
//!   `explain` part (every matching entry with its score and categories);
//! - `POST /v1/lookup` with `{"urls": [...], "hosts": [...]}`: one answer per item, at most
//!   [`ApiConfig::max_batch`] items; an item that is not a URL or host gets its own `error`;
//!   a host answer carries the path-level entries under it (bounded, with `truncated`);
//! - `POST /v1/entries` (admin) with `{"upsert": [entry...], "delete": [key...]}`: one
//!   transaction; answers the new sequence number;
//! - `GET /v1/changes?since=N&wait_ms=M`: a long-poll on the change sequence; answers as soon
//!   as something newer than `N` exists, or empty after at most [`ApiConfig::max_wait_ms`].
//!
//! Bearer tokens ([`Tokens`]): client tokens may look up and follow changes, admin tokens may
//! also write. Errors are JSON `{"error": "..."}`: 401 without a token, 403 for an unknown or
//! insufficient one, 400 for malformed input, 413 for a body over [`ApiConfig::max_body`],
//! 404 / 405 for unknown paths and methods, 503 when the store thread is gone or its queue is
//! full, 500 for a store failure.
//!
//! # Where it sits
//! Between `webrep server` (not wired yet) and [`super::store`]. The store is synchronous, so
//! it lives on one dedicated thread that runs jobs sent to it one at a time; async handlers
//! await a oneshot reply and never block a tokio worker. Writes publish the new sequence on a
//! `tokio::sync::watch` channel, which wakes the long-polls.
//!
//! # What it costs
//! Per request: one job on the store thread (its cost is the store's, see
//! [`super::store`]), one JSON encode, at most [`ApiConfig::max_body`] bytes buffered. The
//! store thread serializes all store work: lookups do not run in parallel with each other or
//! with writes; at most [`ApiConfig::max_queued_jobs`] wait for it, beyond that a request is
//! a 503 (load shedding rather than an unbounded queue). Connections are not limited in
//! number; one that sends no complete request head within 30 s is closed. A waiting
//! follower holds a connection and a watch receiver, no thread. No figures measured yet.
//!
//! # How it fails
//! Nothing here panics on input: bad JSON, bad URLs, bad keys, unknown categories and scores
//! over 100 are 400s naming the problem; a bad item in a batch lookup is an error for that
//! item only; a bad item in a write refuses the whole write (nothing is written). On shutdown
//! the listener closes, pending long-polls answer empty, connections drain, then the store
//! thread is joined so the file is closed when [`serve`] returns.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

use super::import::JsonEntry;
use super::model::{Entry, Key, RiskLevel, Score, Source, Verdict};
use super::store::{HostAnswer, Store, StoreError};
use crate::canon;

/// Bearer tokens accepted by the API.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    /// May look up and follow changes.
    pub client: Vec<String>,
    /// May do everything a client may, and write.
    pub admin: Vec<String>,
}

/// Fixed limits and TTLs of the API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// `ttl_secs` of an answer backed by at least one entry.
    pub ttl_secs: u64,
    /// `ttl_secs` of an untested answer (shorter: the table may learn the URL soon).
    pub untested_ttl_secs: u64,
    /// Largest request body accepted, bytes; larger is 413.
    pub max_body: usize,
    /// Most items (URLs plus hosts, or upserts plus deletes) in one batch.
    pub max_batch: usize,
    /// Most path-level entries returned with a host answer.
    pub host_path_limit: usize,
    /// Longest `wait_ms` honoured by `/v1/changes`.
    pub max_wait_ms: u64,
    /// Most keys returned by one `/v1/changes` answer (beyond: `truncated`).
    pub max_change_keys: usize,
    /// Most store jobs waiting for the store thread; a request beyond that is a 503.
    pub max_queued_jobs: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            ttl_secs: 300,
            untested_ttl_secs: 60,
            max_body: 1024 * 1024,
            max_batch: 1000,
            host_path_limit: 100,
            max_wait_ms: 30_000,
            max_change_keys: 10_000,
            max_queued_jobs: 1024,
        }
    }
}

/// A client that does not finish sending a request head within this is disconnected.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

type Body = Full<Bytes>;
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
    seq: watch::Receiver<u64>,
    seq_tx: Arc<watch::Sender<u64>>,
    tokens: Tokens,
    config: ApiConfig,
    shutdown: CancellationToken,
}

impl Shared {
    /// Runs `f` on the store thread and awaits its result.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |store| {
            let _ = tx.send(f(store));
        });
        let gone = || ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store unavailable");
        self.jobs.try_send(job).map_err(|e| match e {
            std::sync::mpsc::TrySendError::Full(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server busy, retry later")
            }
            std::sync::mpsc::TrySendError::Disconnected(_) => gone(),
        })?;
        rx.await.map_err(|_| gone())
    }
}

/// Serves the API on `listener` until `shutdown` is cancelled, then drains the connections
/// and closes the store before returning.
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
    let start_seq = store.seq().map_err(std::io::Error::other)?;
    let (seq_tx, seq_rx) = watch::channel(start_seq);
    let (jobs, job_rx) = std::sync::mpsc::sync_channel::<Job>(config.max_queued_jobs.max(1));
    let thread = std::thread::Builder::new()
        .name("webrep-store".to_owned())
        .spawn(move || {
            let mut store = store;
            while let Ok(job) = job_rx.recv() {
                job(&mut store);
            }
        })?;
    let shared = Arc::new(Shared {
        jobs,
        seq: seq_rx,
        seq_tx: Arc::new(seq_tx),
        tokens,
        config,
        shutdown: shutdown.clone(),
    });
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(&shared, req).await) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r { tracing::debug!(error = %e, "api connection"); }
                    return;
                }
                _ = shutdown.cancelled() => conn.as_mut().graceful_shutdown(),
            }
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "api connection");
            }
        });
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
    drop(shared);
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    Ok(())
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    match route(shared, req).await {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => {
            let mut r = json_response(e.status, &json!({ "error": e.message }));
            if let Some(allow) = e.allow {
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            r
        }
    }
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Client,
    Admin,
}

async fn route(shared: &Shared, req: Request<Incoming>) -> Result<Value, ApiError> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let get = method == Method::GET;
    let post = method == Method::POST;
    let not_allowed = |allow: &'static str| ApiError {
        allow: Some(allow),
        ..ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {method} not allowed; allowed: {allow}"),
        )
    };
    match path.as_str() {
        "/healthz" if get => Ok(json!({ "status": "ok" })),
        "/healthz" => Err(not_allowed("GET")),
        "/v1/lookup" if get || post => {
            authorize(shared, &req, Role::Client)?;
            if get {
                let url = query_param(req.uri().query(), "url")?
                    .ok_or_else(|| ApiError::bad_request("missing query parameter `url`"))?;
                lookup_one(shared, url).await
            } else {
                let body = read_body(shared, req).await?;
                lookup_batch(shared, &body).await
            }
        }
        "/v1/lookup" => Err(not_allowed("GET, POST")),
        "/v1/entries" if post => {
            authorize(shared, &req, Role::Admin)?;
            let body = read_body(shared, req).await?;
            write_entries(shared, &body).await
        }
        "/v1/entries" => Err(not_allowed("POST")),
        "/v1/changes" if get => {
            authorize(shared, &req, Role::Client)?;
            changes(shared, req.uri().query()).await
        }
        "/v1/changes" => Err(not_allowed("GET")),
        _ => Err(ApiError::new(StatusCode::NOT_FOUND, "no such path")),
    }
}

/// Checks the bearer token: 401 without one, 403 for an unknown one or a client token where
/// admin is needed.
fn authorize(shared: &Shared, req: &Request<Incoming>, need: Role) -> Result<(), ApiError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing bearer token",
        ));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "Authorization is not a bearer token",
            )
        })?;
    let known = |list: &[String]| {
        list.iter()
            .fold(false, |acc, t| acc | ct_eq(t.as_bytes(), token.as_bytes()))
    };
    let role = if known(&shared.tokens.admin) {
        Role::Admin
    } else if known(&shared.tokens.client) {
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

/// Compares without an early exit on the first differing byte.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
    for pair in query.unwrap_or("").split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == name {
            return percent_decode(v)
                .map(Some)
                .ok_or_else(|| ApiError::bad_request(format!("bad encoding in `{name}`")));
        }
    }
    Ok(None)
}

/// Form-style decoding: `+` is a space, `%XX` a byte; the result must be UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn ttl(config: &ApiConfig, v: &Verdict) -> u64 {
    if v.risk == RiskLevel::Untested {
        config.untested_ttl_secs
    } else {
        config.ttl_secs
    }
}

fn entry_json(e: &Entry) -> Value {
    json!({
        "key": e.key.as_str(),
        "score": e.score.get(),
        "risk": e.score.risk().as_str(),
        "categories": e.categories.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        "source": e.source.to_stored(),
        "added": e.added,
        "updated": e.updated,
        "expires": e.expires,
        "note": e.note,
    })
}

fn verdict_fields(v: &Verdict, ttl_secs: u64) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("risk".into(), json!(v.risk.as_str()));
    m.insert("score".into(), json!(v.score.map(Score::get)));
    m.insert(
        "categories".into(),
        json!(v.categories.iter().map(|c| c.as_str()).collect::<Vec<_>>()),
    );
    m.insert("ttl_secs".into(), json!(ttl_secs));
    m
}

/// One URL's answer (run on the store thread): verdict, TTL and explain. A URL that does not
/// parse is a 400 ([`ApiError::bad_request`]), a store failure a 500.
fn answer_url(store: &Store, config: &ApiConfig, input: &str, now: i64) -> Result<Value, ApiError> {
    let url =
        canon::canonicalize(input).map_err(|e| ApiError::bad_request(format!("not a URL: {e}")))?;
    let verdict = store.lookup(&url, now)?;
    let matched = verdict
        .matched
        .iter()
        .filter_map(|k| store.get(k).transpose())
        .collect::<Result<Vec<_>, _>>()?;
    // An answer is not cached beyond the expiry of an entry it rests on.
    let ttl_secs = matched
        .iter()
        .filter_map(|e| e.expires)
        .map(|x| u64::try_from(x.saturating_sub(now)).unwrap_or(0))
        .fold(ttl(config, &verdict), u64::min);
    let mut m = verdict_fields(&verdict, ttl_secs);
    m.insert("url".into(), json!(input));
    m.insert("canonical".into(), json!(url.to_string()));
    m.insert(
        "explain".into(),
        json!({
            "matched": matched.iter().map(entry_json).collect::<Vec<_>>(),
            "risk": verdict.risk.as_str(),
            "score": verdict.score.map(Score::get),
            "categories": verdict.categories.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
            "rule": "worst score of all matches; categories of the most specific match",
        }),
    );
    Ok(Value::Object(m))
}

fn answer_host(config: &ApiConfig, input: &str, a: &HostAnswer) -> Value {
    let mut m = verdict_fields(&a.verdict, ttl(config, &a.verdict));
    m.insert("host".into(), json!(input));
    m.insert("canonical".into(), json!(a.host));
    m.insert(
        "matched".into(),
        json!(
            a.verdict
                .matched
                .iter()
                .map(Key::as_str)
                .collect::<Vec<_>>()
        ),
    );
    m.insert(
        "paths".into(),
        json!(a.paths.iter().map(entry_json).collect::<Vec<_>>()),
    );
    m.insert("truncated".into(), json!(a.truncated));
    Value::Object(m)
}

async fn lookup_one(shared: &Shared, url: String) -> Result<Value, ApiError> {
    let config = shared.config.clone();
    shared
        .call(move |store| answer_url(store, &config, &url, now()))
        .await?
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    #[serde(default)]
    urls: Vec<String>,
    #[serde(default)]
    hosts: Vec<String>,
}

async fn lookup_batch(shared: &Shared, body: &[u8]) -> Result<Value, ApiError> {
    let req: BatchRequest = parse_json(body)?;
    let n = req.urls.len() + req.hosts.len();
    if n > shared.config.max_batch {
        return Err(ApiError::bad_request(format!(
            "{n} items in one batch; at most {}",
            shared.config.max_batch
        )));
    }
    let config = shared.config.clone();
    shared
        .call(move |store| -> Result<Value, ApiError> {
            let now = now();
            let mut urls = Vec::with_capacity(req.urls.len());
            for u in &req.urls {
                urls.push(match answer_url(store, &config, u, now) {
                    Ok(v) => v,
                    Err(e) if e.status == StatusCode::BAD_REQUEST => {
                        json!({ "url": u, "error": e.message })
                    }
                    Err(e) => return Err(e),
                });
            }
            let host_refs: Vec<&str> = req.hosts.iter().map(String::as_str).collect();
            let answers = store.lookup_hosts(&host_refs, now, config.host_path_limit)?;
            let hosts: Vec<Value> = req
                .hosts
                .iter()
                .zip(&answers)
                .map(|(h, a)| match a {
                    Ok(a) => answer_host(&config, h, a),
                    Err(e) => json!({ "host": h, "error": format!("not a host: {e}") }),
                })
                .collect();
            Ok(json!({ "urls": urls, "hosts": hosts }))
        })
        .await?
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
            let now = now();
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
            // Published here, on the store thread, right after the commit: followers are
            // woken even when the writer's connection is gone before its answer.
            seq_tx.send_if_modified(|cur| {
                let newer = seq > *cur;
                if newer {
                    *cur = seq;
                }
                newer
            });
            Ok(seq)
        })
        .await??;
    Ok(json!({ "seq": seq }))
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
    loop {
        // Mark the current value seen before reading the store: a write after this point
        // wakes `changed()` below, so none is missed.
        let current = *rx.borrow_and_update();
        if current > since || tokio::time::Instant::now() >= deadline {
            let c = shared
                .call(move |store| store.changes_since(since, limit))
                .await??;
            return Ok(json!({ "seq": c.seq, "keys": c.keys, "truncated": c.truncated }));
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return Ok(empty_changes(current)) },
            _ = tokio::time::sleep_until(deadline) => {}
            _ = shared.shutdown.cancelled() => return Ok(empty_changes(current)),
        }
    }
}

fn empty_changes(seq: u64) -> Value {
    json!({ "seq": seq, "keys": [], "truncated": false })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb+c").as_deref(), Some("a/b c"));
        assert_eq!(percent_decode("%e2%82%ac").as_deref(), Some("\u{20ac}"));
        assert_eq!(percent_decode("%+f"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%ff"), None);
        assert_eq!(percent_decode("").as_deref(), Some(""));
    }

    #[test]
    fn query_parameters() {
        let q = Some("since=5&url=http%3A%2F%2Fa.test%2F&since=9");
        assert_eq!(query_param(q, "since").unwrap().as_deref(), Some("5"));
        assert_eq!(
            query_param(q, "url").unwrap().as_deref(),
            Some("http://a.test/")
        );
        assert_eq!(query_param(q, "wait_ms").unwrap(), None);
        assert_eq!(query_param(None, "url").unwrap(), None);
        assert!(query_param(Some("url=%zz"), "url").is_err());
    }

    #[test]
    fn token_comparison() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
        assert!(!ct_eq(b"", b"a"));
    }
}
