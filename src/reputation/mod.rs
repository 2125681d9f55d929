//! The proxy's side of reputation: an ordered list of reputation servers with
//! health tracking and failover, a moka cache of their per-host answers, stale answers during
//! an outage, and a follower of the change stream that drops changed keys.
//!
//! # Where it sits
//! On the request path, after canonicalization and before the policy decision:
//! [`Reputation::lookup`] turns a canonical URL into a [`Lookup`] (a verdict, or none when no
//! source answered and nothing stale is cached). It never blocks a worker: misses are one
//! async round trip.
//!
//! # What it costs
//! With a key summary loaded ([`summary`], kept current by the change follower), a URL none of
//! whose lookup hosts has a key in the table is `untested` at once: a few hash probes, no cache
//! entry, no network. Otherwise, in steady state a lookup is one moka hit on the URL's host and the
//! combination rule over that host's few cached entries ([`answer::HostAnswer::verdict`]); no
//! network. A cold host costs one `POST /v1/lookup` for the host (all its expressions in one
//! answer); concurrent misses on one host share that request (moka coalesces the initialisation). A
//! host whose path entries did not fit one answer (`truncated`) is asked per URL, cached per URL
//! the same way. File hashes are cached the same way; misses of different hashes are batched (at
//! most 4 requests in flight, up to 100 hashes each; a lone miss goes out at once). Memory: at most
//! `reputation.cache_entries` answers, each for its TTL, plus a second bounded map of the same
//! answers kept `max_stale_secs` longer for outages.
//!
//! # How it fails
//! A source that fails (refused, timeout past its deadline, an error status, a malformed
//! answer) is marked down for `retry_after_ms` and the next one is asked, within the same
//! lookup. When none answers: a cached answer past its TTL but within `max_stale_secs` is
//! served as [`CacheState::Stale`]; otherwise the lookup has no verdict and the policy's
//! `reputation_unavailable` action applies. Nothing here panics on a server's answer.
//!
//! The change follower ([`Reputation::follow_changes`]) loads the key summary from the source it
//! follows and adds the host of each changed key to it before dropping the key's cached answers;
//! without a summary (not offered, not yet loaded, dropped on a switch or a `truncated` answer
//! until it is loaded anew) every host is asked. While the follower's polls fail, the summary's
//! answers are stale like those of the cache (served as [`CacheState::Stale`] for up to
//! `max_stale_secs` from the first failed poll, within the policy's stale window). It drops the
//! whole cache on its first answer, on a switch to another source, and when a source answers
//! `truncated`. A failed poll keeps its position, so a reputation server that restarts on its store
//! costs the proxies no cache: they resume where they were and drop only what changed meanwhile. It
//! is retried after 50 ms, then twice as long after each further failure up to 1 s
//! (`follow_retry_first_ms`, `follow_retry_max_ms`; [`FollowRetry`]): a change written on a server
//! just back arrives within about a second, and a server that stays down gets at most one poll a
//! second from each proxy. The follower stays with a failing source for `retry_after_ms` before it
//! follows another one, so a restart costs no switch.

pub mod answer;
pub mod summary;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::api::changes::Changes;
use crate::api::files;
use crate::api::lookup::{BatchAnswer, BatchRequest};
use crate::canon::CanonicalUrl;
use crate::client::{ClientError, FollowRetry, RepClient};
use crate::model::Verdict;
use answer::{AnswerError, HostAnswer, url_verdict};
use summary::KeySummary;

/// Where a lookup's verdict came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheState {
    /// A cached answer within its TTL.
    Hit,
    /// Asked a server for this lookup (or waited for a concurrent request that did).
    Miss,
    /// No source answered; a cached answer past its TTL was used.
    Stale,
    /// No source answered and nothing was cached.
    Unavailable,
}

impl CacheState {
    /// Stable name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheState::Hit => "hit",
            CacheState::Miss => "miss",
            CacheState::Stale => "stale",
            CacheState::Unavailable => "unavailable",
        }
    }
}

/// The outcome of one lookup.
#[derive(Debug, Clone)]
pub struct Lookup {
    /// The verdict; `None` when no source answered and nothing usable was cached.
    pub verdict: Option<Verdict>,
    /// Where it came from.
    pub cache: CacheState,
    /// The source that gave the answer (its configured name).
    pub source: Option<Arc<str>>,
    /// For a stale answer: how long past its TTL it is.
    pub stale_for: Option<Duration>,
}

/// A file-hash answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileAnswer {
    /// `None`: the server knows nothing of this file.
    pub verdict: Option<crate::model::FileVerdict>,
    /// A name for humans (malware family, file name).
    pub name: Option<Box<str>>,
}

/// The outcome of one file-hash lookup.
#[derive(Debug, Clone)]
pub struct FileLookup {
    /// `None` when no source answered.
    pub answer: Option<FileAnswer>,
    pub cache: CacheState,
    pub source: Option<Arc<str>>,
}

/// One reputation server.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// A name for logs and the access log.
    pub name: String,
    /// A client for it (base URL, token, CA).
    pub client: RepClient,
    /// How long one request to it may take.
    pub timeout: Duration,
}

/// What [`Reputation::new`] needs.
#[derive(Debug, Clone)]
pub struct ReputationConfig {
    /// In order: the first healthy one is asked.
    pub sources: Vec<SourceConfig>,
    /// Most cached answers.
    pub cache_entries: u64,
    /// How long past its TTL an answer is kept for outages.
    pub max_stale: Duration,
    /// How long a failed source is skipped.
    pub retry_after: Duration,
    /// How soon the change follower asks again after a failed poll.
    pub follow_retry: FollowRetry,
    /// Keep a key summary of the followed source, loaded from a host list of at most this
    /// many bytes; `None`: none (every host is asked).
    pub key_summary_max_bytes: Option<usize>,
}

impl From<&crate::config::ReputationSettings> for FollowRetry {
    fn from(r: &crate::config::ReputationSettings) -> Self {
        FollowRetry {
            first: r.follow_retry_first,
            max: r.follow_retry_max,
        }
    }
}

impl Default for FollowRetry {
    /// The schedule of `reputation.follow_retry_first_ms` and `follow_retry_max_ms`'s
    /// defaults.
    fn default() -> Self {
        Self::from(&crate::config::ReputationSettings::default())
    }
}

struct Source {
    name: Arc<str>,
    client: RepClient,
    timeout: Duration,
    /// Milliseconds since `Reputation::epoch` until which the source is skipped.
    down_until: AtomicU64,
}

/// A cached answer and when it stops being fresh.
#[derive(Debug)]
struct Cached<T> {
    value: T,
    fresh_until: Instant,
    source: Arc<str>,
}

type HostEntry = Arc<Cached<HostAnswer>>;

/// The key summary in use and the source it came from (named by a lookup it decides).
#[derive(Debug)]
struct Summary {
    keys: KeySummary,
    source: Arc<str>,
}

/// How long the follower waits before it asks again for a key summary that it could not get
/// (a server that offers none, or not yet, or a list too long).
const SUMMARY_RETRY: Duration = Duration::from_secs(60);
type UrlEntry = Arc<Cached<Verdict>>;

struct FreshFor;

impl<T: Send + Sync + 'static> moka::Expiry<String, Arc<Cached<T>>> for FreshFor {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Arc<Cached<T>>,
        now: Instant,
    ) -> Option<Duration> {
        Some(value.fresh_until.saturating_duration_since(now))
    }
}

/// Keeps an answer `max_stale` past its freshness, for outages.
struct StaleFor(Duration);

impl<T: Send + Sync + 'static> moka::Expiry<String, Arc<Cached<T>>> for StaleFor {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Arc<Cached<T>>,
        now: Instant,
    ) -> Option<Duration> {
        Some(value.fresh_until.saturating_duration_since(now) + self.0)
    }
}

/// Why a fetch failed at every source.
#[derive(Debug, Clone, thiserror::Error)]
#[error("no reputation source answered: {0}")]
pub struct Unavailable(String);

/// Why [`Reputation::post_events`] failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PostError {
    /// No source took the batch (down, timed out, or failing).
    #[error("no reputation source took the events: {0}")]
    Unavailable(String),
    /// A source refused the batch as bad input.
    #[error("a reputation source refused the events: {0}")]
    Rejected(String),
}

/// The proxy's reputation client and cache. Share it in an `Arc`.
pub struct Reputation {
    sources: Vec<Source>,
    hosts: moka::future::Cache<String, HostEntry>,
    urls: moka::future::Cache<String, UrlEntry>,
    stale_hosts: moka::future::Cache<String, HostEntry>,
    stale_urls: moka::future::Cache<String, UrlEntry>,
    /// File-hash answers, by lower-case SHA-256 hex.
    files: moka::future::Cache<String, Arc<Cached<FileAnswer>>>,
    /// File-hash misses waiting to go out together.
    file_batch: FileBatcher,
    retry_after: Duration,
    follow_retry: FollowRetry,
    epoch: Instant,
    /// Changes applied from the change stream (keys dropped), whole-cache drops included.
    pub changes_applied: AtomicU64,
    /// Whole-cache drops: the change follower's first answer, a switch to another source,
    /// a `truncated` answer, and admin purges.
    pub cache_drops: AtomicU64,
    /// Time of each round trip to the sources (failover included), for metrics.
    pub lookup_seconds: prometheus_client::metrics::histogram::Histogram,
    /// The key summary, while one is loaded and current.
    summary: arc_swap::ArcSwapOption<Summary>,
    /// See [`ReputationConfig::key_summary_max_bytes`].
    summary_max_bytes: Option<usize>,
    /// While the change follower's polls fail: when the first of them failed (milliseconds
    /// since `epoch`, at least 1); 0 while they succeed. The summary may then miss what was
    /// added meanwhile: its answers are stale, like cached answers of a source that is down.
    summary_stale_since: AtomicU64,
    /// How long past its freshness an answer may serve while no source answers.
    max_stale: Duration,
    /// Lookups the key summary answered `untested` with no round trip.
    pub summary_skips: AtomicU64,
    /// Key summaries loaded.
    pub summary_loads: AtomicU64,
}

impl std::fmt::Debug for Reputation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reputation")
            .field(
                "sources",
                &self.sources.iter().map(|s| &s.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Where a batched file lookup's answer goes.
type FileWaiter = tokio::sync::oneshot::Sender<Result<Arc<Cached<FileAnswer>>, Unavailable>>;

/// Most file-hash requests in flight at once; hashes missed meanwhile wait and go together.
const FILE_REQUESTS_IN_FLIGHT: usize = 4;
/// Most hashes in one file-hash request (the server's `max_batch` default is 1000).
const FILE_BATCH_MAX: usize = 100;

/// Batches file-hash misses. A miss joins the queue, then waits for one of
/// [`FILE_REQUESTS_IN_FLIGHT`] request slots; whoever gets a slot sends the queued hashes, up
/// to [`FILE_BATCH_MAX`] per `POST /v1/files/lookup`, until the queue is empty. With a slot
/// free a lone miss goes out at once (no added latency, no timer); under load, misses ride
/// together in the next request, so the number of requests stays bounded by the round-trip
/// time, not the number of downloads.
struct FileBatcher {
    queue: std::sync::Mutex<Vec<(String, FileWaiter)>>,
    slots: tokio::sync::Semaphore,
}

impl Default for FileBatcher {
    fn default() -> Self {
        FileBatcher {
            queue: std::sync::Mutex::new(Vec::new()),
            slots: tokio::sync::Semaphore::new(FILE_REQUESTS_IN_FLIGHT),
        }
    }
}

impl FileBatcher {
    fn push(&self, sha256: String, tx: FileWaiter) {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((sha256, tx));
    }

    /// Up to [`FILE_BATCH_MAX`] queued hashes whose waiters are still there.
    fn take(&self) -> Vec<(String, FileWaiter)> {
        let mut q = self
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        q.retain(|(_, tx)| !tx.is_closed());
        let n = q.len().min(FILE_BATCH_MAX);
        q.drain(..n).collect()
    }
}

/// One item of a `/v1/files/lookup` answer ([`files::FileItem`], read on its own so that a
/// bad item fails alone), cached for its `ttl_secs`.
fn file_answer(item: &Value, source: &Arc<str>) -> Result<Arc<Cached<FileAnswer>>, Unavailable> {
    use serde::Deserialize as _;
    let answer = match files::FileItem::deserialize(item) {
        Ok(files::FileItem::Answer(a)) => a,
        Ok(files::FileItem::Refused { error, .. }) => {
            return Err(Unavailable(format!("{source}: {error}")));
        }
        Err(e) => return Err(Unavailable(format!("{source}: bad file answer: {e}"))),
    };
    let verdict = if answer.is_unknown() {
        None
    } else {
        let name = &answer.verdict;
        Some(
            crate::model::FileVerdict::parse(name)
                .ok_or_else(|| Unavailable(format!("{source}: unknown verdict {name:?}")))?,
        )
    };
    Ok(Arc::new(Cached {
        fresh_until: Instant::now() + Duration::from_secs(answer.ttl_secs),
        value: FileAnswer {
            verdict,
            name: answer.stored.and_then(|s| s.name).map(Into::into),
        },
        source: source.clone(),
    }))
}

impl Reputation {
    /// A client over `config.sources`.
    pub fn new(config: ReputationConfig) -> Reputation {
        fn cache<T: Send + Sync + 'static>(
            n: u64,
            stale: Option<Duration>,
        ) -> moka::future::Cache<String, Arc<Cached<T>>> {
            let b = moka::future::Cache::builder()
                .max_capacity(n)
                .support_invalidation_closures();
            match stale {
                None => b.expire_after(FreshFor).build(),
                Some(d) => b.expire_after(StaleFor(d)).build(),
            }
        }
        let n = config.cache_entries;
        let max_stale = Some(config.max_stale);
        Reputation {
            sources: config
                .sources
                .into_iter()
                .map(|s| Source {
                    name: s.name.into(),
                    client: s.client,
                    timeout: s.timeout,
                    down_until: AtomicU64::new(0),
                })
                .collect(),
            hosts: cache(n, None),
            urls: cache(n, None),
            stale_hosts: cache(n, max_stale),
            stale_urls: cache(n, max_stale),
            files: cache(n, None),
            file_batch: FileBatcher::default(),
            retry_after: config.retry_after,
            follow_retry: config.follow_retry,
            epoch: Instant::now(),
            changes_applied: AtomicU64::new(0),
            cache_drops: AtomicU64::new(0),
            summary: arc_swap::ArcSwapOption::empty(),
            summary_max_bytes: config.key_summary_max_bytes,
            summary_stale_since: AtomicU64::new(0),
            max_stale: config.max_stale,
            summary_skips: AtomicU64::new(0),
            summary_loads: AtomicU64::new(0),
            lookup_seconds: prometheus_client::metrics::histogram::Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 14),
            ),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The verdict for a canonical URL (see the module docs).
    pub async fn lookup(&self, url: &CanonicalUrl) -> Lookup {
        if let Some(untested) = self.summary_miss(url) {
            return untested;
        }
        let host = url.host().to_owned();
        let now = crate::clock::unix_secs();
        let mut cache = CacheState::Hit;
        let fetched = self
            .hosts
            .try_get_with(host.clone(), async {
                cache = CacheState::Miss;
                self.fetch_host(&host).await
            })
            .await;
        let entry = match fetched {
            Ok(e) => e,
            Err(e) => return self.stale_host(&host, url, now, &e).await,
        };
        if entry.value.complete() {
            return Lookup {
                verdict: Some(entry.value.verdict(url, now)),
                cache,
                source: Some(entry.source.clone()),
                stale_for: None,
            };
        }
        // Too many path entries for one answer: this URL on its own.
        let key = url.to_string();
        let mut cache = CacheState::Hit;
        let fetched = self
            .urls
            .try_get_with(key.clone(), async {
                cache = CacheState::Miss;
                self.fetch_url(&key).await
            })
            .await;
        match fetched {
            Ok(e) => Lookup {
                verdict: Some(e.value.clone()),
                cache,
                source: Some(e.source.clone()),
                stale_for: None,
            },
            Err(err) => match self.stale_urls.get(&key).await {
                Some(e) => Lookup {
                    verdict: Some(e.value.clone()),
                    cache: CacheState::Stale,
                    source: Some(e.source.clone()),
                    stale_for: Some(e.fresh_until.elapsed()),
                },
                None => {
                    tracing::debug!(error = %err, "reputation unavailable");
                    Lookup {
                        verdict: None,
                        cache: CacheState::Unavailable,
                        source: None,
                        stale_for: None,
                    }
                }
            },
        }
    }

    /// `untested` when a key summary is loaded and lists none of the URL's lookup hosts:
    /// the server would answer the same (no key on the host or its parents).
    /// While the change follower cannot reach its source the answer is
    /// [`CacheState::Stale`] (stale since the first failed poll), as a cached answer of that
    /// source would be; past `max_stale` the summary is not used.
    fn summary_miss(&self, url: &CanonicalUrl) -> Option<Lookup> {
        let stale_since = self.summary_stale_since.load(Ordering::Relaxed);
        let stale_for = (stale_since != 0)
            .then(|| Duration::from_millis(self.now_ms().saturating_sub(stale_since)));
        if stale_for.is_some_and(|d| d > self.max_stale) {
            return None;
        }
        let guard = self.summary.load();
        let summary = guard.as_ref()?;
        let mut last = "";
        for e in url.expressions() {
            let host = e.host();
            if host != last {
                if summary.keys.contains(host) {
                    return None;
                }
                last = host;
            }
        }
        self.summary_skips.fetch_add(1, Ordering::Relaxed);
        Some(Lookup {
            verdict: Some(Verdict::untested()),
            cache: stale_for.map_or(CacheState::Hit, |_| CacheState::Stale),
            source: Some(summary.source.clone()),
            stale_for,
        })
    }

    /// The loaded key summary's hosts and bytes of memory, `None` without one.
    pub fn summary_size(&self) -> Option<(usize, usize)> {
        self.summary
            .load()
            .as_ref()
            .map(|s| (s.keys.len(), s.keys.bytes()))
    }

    async fn stale_host(
        &self,
        host: &str,
        url: &CanonicalUrl,
        now: i64,
        err: &Unavailable,
    ) -> Lookup {
        match self.stale_hosts.get(host).await {
            Some(e) if e.value.complete() => Lookup {
                verdict: Some(e.value.verdict(url, now)),
                cache: CacheState::Stale,
                source: Some(e.source.clone()),
                stale_for: Some(e.fresh_until.elapsed()),
            },
            _ => {
                tracing::debug!(host, error = %err, "reputation unavailable");
                Lookup {
                    verdict: None,
                    cache: CacheState::Unavailable,
                    source: None,
                    stale_for: None,
                }
            }
        }
    }

    /// The verdict for a file's SHA-256 (lower-case hex): cached for the answer's TTL,
    /// concurrent lookups of one hash coalesced, misses of different hashes batched into
    /// shared requests (`FileBatcher`), the sources asked in order with their deadlines
    /// like URL lookups. `verdict: None` with [`CacheState::Unavailable`] when no source
    /// answered.
    pub async fn lookup_file(&self, sha256: &str) -> FileLookup {
        let mut cache = CacheState::Hit;
        let fetched = self
            .files
            .try_get_with(sha256.to_owned(), async {
                cache = CacheState::Miss;
                self.fetch_file(sha256).await
            })
            .await;
        match fetched {
            Ok(e) => FileLookup {
                answer: Some(e.value.clone()),
                cache,
                source: Some(e.source.clone()),
            },
            Err(err) => {
                tracing::debug!(sha256, error = %err, "file reputation unavailable");
                FileLookup {
                    answer: None,
                    cache: CacheState::Unavailable,
                    source: None,
                }
            }
        }
    }

    /// One hash's answer, asked together with whatever other hashes are waiting (see
    /// [`FileBatcher`]).
    async fn fetch_file(&self, sha256: &str) -> Result<Arc<Cached<FileAnswer>>, Unavailable> {
        // A batch can be lost when the lookup that carried it is cancelled (its client went
        // away): the hashes in it are then queued again, at most a few times.
        for _ in 0..3 {
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.file_batch.push(sha256.to_owned(), tx);
            // Wait for a free request slot; whoever gets one takes every waiting hash.
            // It goes on until the queue is empty, so no hash is left behind.
            if let Ok(_permit) = self.file_batch.slots.acquire().await {
                loop {
                    let batch = self.file_batch.take();
                    if batch.is_empty() {
                        break;
                    }
                    self.send_file_batch(batch).await;
                }
            }
            if let Ok(answer) = rx.await {
                return answer;
            }
        }
        Err(Unavailable(
            "file lookup cancelled three times with its batch".into(),
        ))
    }

    /// Asks the sources about `batch` in one request and hands each waiter its answer.
    async fn send_file_batch(&self, batch: Vec<(String, FileWaiter)>) {
        let request = files::LookupRequest {
            sha256: batch.iter().map(|(h, _)| h.clone()).collect(),
        };
        let answer = self.ask_at("/v1/files/lookup", &request).await;
        let (v, source) = match answer {
            Ok(a) => a,
            Err(e) => {
                for (_, tx) in batch {
                    let _ = tx.send(Err(e.clone()));
                }
                return;
            }
        };
        let items = v.get("files").and_then(Value::as_array);
        for (i, (_, tx)) in batch.into_iter().enumerate() {
            let one = match items.and_then(|items| items.get(i)) {
                Some(item) => file_answer(item, &source),
                None => Err(Unavailable(format!("{source}: no answer for item {i}"))),
            };
            let _ = tx.send(one);
        }
    }

    /// Asks the sources in order, skipping those marked down (unless all are), until one
    /// answers `body`; returns the answer and the source's name.
    async fn ask<B: serde::Serialize + Sync + ?Sized>(
        &self,
        body: &B,
    ) -> Result<(Value, Arc<str>), Unavailable> {
        self.ask_at("/v1/lookup", body).await
    }

    /// Entries in the caches (approximate: moka counts lazily), as JSON.
    pub fn cache_stats(&self) -> serde_json::Value {
        json!({
            "hosts": self.hosts.entry_count(),
            "urls": self.urls.entry_count(),
            "stale_hosts": self.stale_hosts.entry_count(),
            "stale_urls": self.stale_urls.entry_count(),
            "files": self.files.entry_count(),
        })
    }

    /// Each source's name and whether it is in use (not marked down after a failure).
    pub fn source_health(&self) -> Vec<(Arc<str>, bool)> {
        let now = self.now_ms();
        self.sources
            .iter()
            .map(|s| (s.name.clone(), s.down_until.load(Ordering::Relaxed) <= now))
            .collect()
    }

    /// The sources in order, skipping those marked down (all of them when every one is).
    fn source_order(&self) -> Vec<&Source> {
        let now = self.now_ms();
        let order: Vec<&Source> = self
            .sources
            .iter()
            .filter(|s| s.down_until.load(Ordering::Relaxed) <= now)
            .collect();
        if order.is_empty() {
            self.sources.iter().collect()
        } else {
            order
        }
    }

    /// [`Self::ask`] at another API path.
    async fn ask_at<B: serde::Serialize + Sync + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<(Value, Arc<str>), Unavailable> {
        let started = Instant::now();
        let r = self.ask_sources(path, body).await;
        self.lookup_seconds.observe(started.elapsed().as_secs_f64());
        r
    }

    async fn ask_sources<B: serde::Serialize + Sync + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<(Value, Arc<str>), Unavailable> {
        let order = self.source_order();
        let mut errors = Vec::new();
        for s in order {
            match s.client.post_json(path, body, s.timeout).await {
                Ok(v) => {
                    s.down_until.store(0, Ordering::Relaxed);
                    return Ok((v, s.name.clone()));
                }
                Err(e) => {
                    self.mark_down(s, &e);
                    errors.push(format!("{}: {e}", s.name));
                }
            }
        }
        if errors.is_empty() {
            errors.push("no source configured".into());
        }
        Err(Unavailable(errors.join("; ")))
    }

    /// Posts feedback events (`body`: the JSON `{"events": [...]}`) to the first healthy
    /// source, failing over like lookups do, each attempt within `timeout`. A source that
    /// refuses the batch whole as bad input (a 4xx other than 401/403/404/408/429) is
    /// [`PostError::Rejected`]: asking another would not help, and the batch must not be
    /// retried forever.
    ///
    /// # Errors
    /// [`PostError`].
    pub async fn post_events(
        &self,
        body: bytes::Bytes,
        timeout: Duration,
    ) -> Result<(Value, Arc<str>), PostError> {
        use http_body_util::BodyExt as _;
        let order = self.source_order();
        let mut errors = Vec::new();
        for s in order {
            let attempt = http_body_util::Full::new(body.clone())
                .map_err(|never| match never {})
                .boxed_unsync();
            match s
                .client
                .post_body("/v1/events", "application/json", attempt, timeout)
                .await
            {
                Ok(v) => {
                    s.down_until.store(0, Ordering::Relaxed);
                    return Ok((v, s.name.clone()));
                }
                Err(e) if e.is_refusal() => {
                    return Err(PostError::Rejected(format!("{}: {e}", s.name)));
                }
                Err(e) => {
                    self.mark_down(s, &e);
                    errors.push(format!("{}: {e}", s.name));
                }
            }
        }
        if errors.is_empty() {
            errors.push("no source configured".into());
        }
        Err(PostError::Unavailable(errors.join("; ")))
    }

    fn mark_down(&self, s: &Source, e: &dyn std::fmt::Display) {
        let was_up = s.down_until.load(Ordering::Relaxed) <= self.now_ms();
        let until = self.now_ms() + u64::try_from(self.retry_after.as_millis()).unwrap_or(u64::MAX);
        s.down_until.store(until, Ordering::Relaxed);
        if was_up {
            tracing::warn!(source = %s.name, error = %e, retry_after = ?self.retry_after,
                "reputation source failed; using the next one");
        }
    }

    async fn fetch_host(&self, host: &str) -> Result<HostEntry, Unavailable> {
        let request = BatchRequest {
            hosts: vec![host.to_owned()],
            ..BatchRequest::default()
        };
        let (v, source) = self.ask(&request).await?;
        let answer = batch_answer(v)
            .and_then(|b| {
                b.hosts
                    .into_iter()
                    .next()
                    .ok_or_else(|| AnswerError("no host".into()))
            })
            .and_then(|item| HostAnswer::from_item(&item, crate::clock::unix_secs()))
            .map_err(|e| Unavailable(format!("{source}: {e}")))?;
        let entry = Arc::new(Cached {
            fresh_until: Instant::now() + Duration::from_secs(answer.ttl_secs),
            value: answer,
            source,
        });
        self.stale_hosts
            .insert(host.to_owned(), entry.clone())
            .await;
        Ok(entry)
    }

    async fn fetch_url(&self, url: &str) -> Result<UrlEntry, Unavailable> {
        let request = BatchRequest {
            urls: vec![url.to_owned()],
            ..BatchRequest::default()
        };
        let (v, source) = self.ask(&request).await?;
        let (verdict, ttl) = batch_answer(v)
            .and_then(|b| {
                b.urls
                    .into_iter()
                    .next()
                    .ok_or_else(|| AnswerError("no URL".into()))
            })
            .and_then(|item| url_verdict(&item))
            .map_err(|e| Unavailable(format!("{source}: {e}")))?;
        let entry = Arc::new(Cached {
            fresh_until: Instant::now() + Duration::from_secs(ttl),
            value: verdict,
            source,
        });
        self.stale_urls.insert(url.to_owned(), entry.clone()).await;
        Ok(entry)
    }

    /// Drops every cached answer a changed key can affect: answers for its host and the
    /// host's subdomains (a `host/` entry covers them), fresh and stale.
    pub fn invalidate_key(&self, key: &str) {
        if let Some(hash) = key.strip_prefix(crate::api::changes::FILE_CHANGE_PREFIX) {
            let hash = hash.to_ascii_lowercase();
            let _ = self.files.invalidate_entries_if(move |k, _| *k == hash);
            self.changes_applied.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let host = key.split('/').next().unwrap_or(key).to_owned();
        let covers = move |h: &str| {
            h == host
                || (h.len() > host.len()
                    && h.ends_with(&host)
                    && h.as_bytes()[h.len() - host.len() - 1] == b'.')
        };
        let on_host = {
            let covers = covers.clone();
            move |k: &String, _: &HostEntry| covers(k)
        };
        let on_url = move |k: &String, _: &UrlEntry| {
            let rest = k.split_once("://").map_or(k.as_str(), |(_, r)| r);
            covers(rest.split('/').next().unwrap_or(rest))
        };
        for (c, f) in [(&self.hosts, on_host.clone()), (&self.stale_hosts, on_host)] {
            if let Err(e) = c.invalidate_entries_if(f) {
                tracing::warn!(error = %e, "cache invalidation failed; dropping everything");
                c.invalidate_all();
            }
        }
        for (c, f) in [(&self.urls, on_url.clone()), (&self.stale_urls, on_url)] {
            if let Err(e) = c.invalidate_entries_if(f) {
                tracing::warn!(error = %e, "cache invalidation failed; dropping everything");
                c.invalidate_all();
            }
        }
        self.changes_applied.fetch_add(1, Ordering::Relaxed);
    }

    /// Drops every cached answer.
    pub fn invalidate_all(&self) {
        self.hosts.invalidate_all();
        self.urls.invalidate_all();
        self.stale_hosts.invalidate_all();
        self.stale_urls.invalidate_all();
        self.files.invalidate_all();
        self.changes_applied.fetch_add(1, Ordering::Relaxed);
        self.cache_drops.fetch_add(1, Ordering::Relaxed);
    }

    /// The source the change follower asks next: the one it follows while that has been
    /// failing for less than `retry_after` (a restart or a blip must not cost a switch, which
    /// drops the whole cache, and another switch back), else the first healthy one (so it
    /// returns to a preferred source that is back), else the first. `None` without sources.
    fn follow_source(
        &self,
        position: Option<(usize, u64)>,
        failing_since: Option<Instant>,
    ) -> Option<usize> {
        if let (Some((current, _)), Some(since)) = (position, failing_since)
            && since.elapsed() < self.retry_after
        {
            return Some(current);
        }
        let now = self.now_ms();
        self.sources
            .iter()
            .position(|s| s.down_until.load(Ordering::Relaxed) <= now)
            .or(if self.sources.is_empty() {
                None
            } else {
                Some(0)
            })
    }

    /// Follows the change stream of the first healthy source until `shutdown`, dropping the
    /// keys that change (long-poll, `wait_ms` 25 s). On the first answer, a source switch or
    /// a `truncated` answer, the whole cache is dropped, since sequence numbers are per
    /// server. A failed poll (refused, timed out, an error status, a malformed answer) marks
    /// the source down for lookups and is retried on the [`FollowRetry`] schedule; it keeps
    /// the position: the same source, back, resumes from it. The follower stays with a
    /// failing source for `retry_after` before it moves to another one; a poll answered
    /// clears the source's down mark for lookups too.
    ///
    /// With a key summary configured it loads one from the source it follows (at the start,
    /// after a switch or a `truncated` answer, which drop the one in use, and every
    /// [`SUMMARY_RETRY`] while it has none) and adds the host of every changed key to it
    /// before dropping that key's cached answers. While its polls fail the summary's answers
    /// are stale.
    pub async fn follow_changes(self: Arc<Self>, shutdown: CancellationToken) {
        let mut position: Option<(usize, u64)> = None;
        // Failed polls in a row, for the retry schedule, and when the first of them failed.
        let mut failures = 0u32;
        let mut failing_since: Option<Instant> = None;
        let mut summary_due = Instant::now();
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let Some(index) = self.follow_source(position, failing_since) else {
                return;
            };
            let s = &self.sources[index];
            let switched = !matches!(position, Some((i, _)) if i == index);
            if switched {
                self.summary.store(None);
                summary_due = Instant::now();
            }
            if self.summary_max_bytes.is_some()
                && summary_due <= Instant::now()
                && self.summary.load().is_none()
            {
                let loaded = tokio::select! {
                    r = self.load_summary(s) => r,
                    _ = shutdown.cancelled() => return,
                };
                match loaded {
                    // The summary is as of `seq`: following from there misses no key. A
                    // position kept on this source is older, and changes from it are
                    // applied again (harmless).
                    Some(seq) => {
                        if switched {
                            self.invalidate_all();
                            position = Some((index, seq));
                        }
                        continue;
                    }
                    None => summary_due = Instant::now() + SUMMARY_RETRY,
                }
            }
            let (since, wait) = match position {
                Some((i, seq)) if i == index => (seq, 25_000),
                _ => (0, 0),
            };
            let path = format!("/v1/changes?since={since}&wait_ms={wait}");
            let result = tokio::select! {
                r = s.client.get(&path, s.timeout + Duration::from_millis(wait + 5_000)) => r,
                _ = shutdown.cancelled() => return,
            };
            match result.and_then(parse_changes) {
                Ok(Changes {
                    seq,
                    keys,
                    truncated,
                }) => {
                    if truncated {
                        // Keys added meanwhile may be missing from the summary: load anew.
                        self.summary.store(None);
                        summary_due = Instant::now();
                    }
                    if switched || truncated {
                        if switched && position.is_some() {
                            tracing::info!(source = %s.name, "following the change stream of another source");
                        }
                        self.invalidate_all();
                    } else {
                        self.apply_changes(&keys);
                    }
                    position = Some((index, seq));
                    failures = 0;
                    failing_since = None;
                    s.down_until.store(0, Ordering::Relaxed);
                    self.summary_stale_since.store(0, Ordering::Relaxed);
                }
                Err(e) => {
                    if self.summary_stale_since.load(Ordering::Relaxed) == 0 {
                        let now = self.now_ms().max(1);
                        self.summary_stale_since.store(now, Ordering::Relaxed);
                    }
                    self.mark_down(s, &e);
                    failures = failures.saturating_add(1);
                    failing_since.get_or_insert_with(Instant::now);
                    // The position is kept. When this source answers again it names what
                    // changed meanwhile, or says `truncated` when its log no longer reaches
                    // back or its store was replaced, so a restart of the server or a
                    // network blip does not drop the whole cache and send every client's
                    // next request to a server that has just come back.
                    tokio::select! {
                        _ = tokio::time::sleep(self.follow_retry.wait(failures)) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
            }
        }
    }

    /// Drops the cached answers of changed `keys`, after adding their hosts to the key
    /// summary (so a lookup that finds the cache empty asks the server).
    fn apply_changes(&self, keys: &[String]) {
        if let Some(current) = self.summary.load_full() {
            let hosts = keys
                .iter()
                .filter(|k| !k.starts_with(crate::api::changes::FILE_CHANGE_PREFIX))
                .map(|k| k.split('/').next().unwrap_or(k));
            self.summary.store(Some(Arc::new(Summary {
                keys: current.keys.with_added(hosts),
                source: current.source.clone(),
            })));
        }
        for k in keys {
            self.invalidate_key(k);
        }
    }

    /// Loads and installs the key summary of `s`; its change sequence, or `None` when `s`
    /// offers none (logged).
    async fn load_summary(&self, s: &Source) -> Option<u64> {
        let max = self.summary_max_bytes?;
        // A long list takes longer than a lookup.
        let timeout = s.timeout + Duration::from_secs(60);
        let loaded = s
            .client
            .get_bytes_within("/v1/keys/hosts", timeout, max)
            .await
            .map_err(|e| e.to_string())
            .and_then(|body| {
                let (seq, hosts) = summary::parse_key_hosts(&body)?;
                let keys = KeySummary::new(hosts).ok_or("too many hosts")?;
                Ok((seq, keys))
            });
        match loaded {
            Ok((seq, keys)) => {
                tracing::info!(source = %s.name, hosts = keys.len(), bytes = keys.bytes(), seq,
                    "key summary loaded: hosts with no key are untested without a round trip");
                self.summary.store(Some(Arc::new(Summary {
                    keys,
                    source: s.name.clone(),
                })));
                self.summary_loads.fetch_add(1, Ordering::Relaxed);
                Some(seq)
            }
            Err(e) => {
                tracing::info!(source = %s.name, error = %e, retry_in = ?SUMMARY_RETRY,
                    "no key summary: every host is asked");
                None
            }
        }
    }
}

/// A batch lookup's answer.
fn batch_answer(v: Value) -> Result<BatchAnswer, AnswerError> {
    serde_json::from_value(v).map_err(|e| AnswerError(e.to_string()))
}

fn parse_changes(v: Value) -> Result<Changes, ClientError> {
    serde_json::from_value(v).map_err(|e| ClientError::Json(format!("bad change answer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follow_retry_doubles_from_first_up_to_max_with_jitter_in_the_upper_half() {
        let r = FollowRetry::default();
        let ceilings: Vec<u64> = (1..=8)
            .map(|n| u64::try_from(r.ceiling(n).as_millis()).unwrap())
            .collect();
        assert_eq!(ceilings, [50, 100, 200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(r.ceiling(0), r.first);
        assert_eq!(r.ceiling(u32::MAX), r.max);
        for n in [1, 3, 6, 40] {
            for _ in 0..200 {
                let w = r.wait(n);
                assert!(w >= r.ceiling(n) / 2 && w <= r.ceiling(n), "{n}: {w:?}");
            }
        }
        // A first wait longer than the cap is cut to the cap.
        let odd = FollowRetry {
            first: Duration::from_secs(3),
            max: Duration::from_secs(1),
        };
        assert_eq!(odd.ceiling(1), Duration::from_secs(1));
    }
}
