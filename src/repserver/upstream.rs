//! Asking the tier above on a miss: another `webrep server` asked about what no `host/` entry
//! of the local table or of the mirror of the tier above ([`super::mirror`]) decides, with a
//! deadline and in batches, its answers cached for their TTL.
//!
//! # Where it sits
//! In the API's lookup handlers ([`super::api`]), after the local store has answered: the
//! items no local `host/` entry decides (local path entries or not) are looked up here. The
//! handlers combine an upstream answer with the local one (the upstream's host verdict, the
//! path entries of both tiers, a local entry winning for its key) and mark it
//! `"tier": "upstream"`; this module caches the upstream's answers as it gave them, so a
//! local change applies at once.
//!
//! # What it costs
//! A cache hit is one moka lookup. Misses of one request go out together in batches of
//! `server.upstream.batch` items, one round trip each, all batches concurrently; concurrent misses
//! on one key from different requests are not coalesced (each request asks), which the cache
//! makes rare. The cache holds at most the configured number of answers (each a typed answer
//! of a few hundred bytes), each for the TTL the upstream gave it.
//!
//! # How it fails
//! An upstream that is down, slow past the deadline, or answers garbage never fails the
//! lookup: the items keep their local answer (untested, with the untested TTL, or resting on
//! local path entries alone) and carry `"upstream": "unavailable"`, which a proxy reads as no
//! answer; a warning is logged at most once a minute. Nothing is cached from a failed
//! exchange, so the next request asks again.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::api::lookup::{BatchAnswer, BatchRequest, HostAnswer, HostItem, UrlAnswer, UrlItem};
use crate::client::{ClientError, RepClient};
use moka::Expiry;

/// One cached upstream answer.
#[derive(Clone, Debug)]
struct Cached {
    answer: CachedAnswer,
    ttl: Duration,
    at: Instant,
}

/// An upstream answer for a URL or a host.
#[derive(Clone, Debug)]
enum CachedAnswer {
    Url(Arc<UrlAnswer>),
    Host(Arc<HostAnswer>),
}

struct AnswerTtl;

impl Expiry<String, Cached> for AnswerTtl {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Cached,
        _now: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// The upstream tier of a server.
pub struct Upstream {
    client: RepClient,
    timeout: Duration,
    batch: usize,
    cache: moka::future::Cache<String, Cached>,
    /// Unix-ish seconds (since `epoch`) of the last "upstream unavailable" warning.
    last_warning: AtomicU64,
    epoch: Instant,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("base", &self.client.base())
            .field("timeout", &self.timeout)
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

/// What to ask: canonical URLs and canonical hosts.
#[derive(Debug, Default)]
pub struct Misses {
    /// Canonical URLs.
    pub urls: Vec<String>,
    /// Canonical hosts.
    pub hosts: Vec<String>,
}

/// The upstream's answers, by canonical URL and canonical host; `None` when the upstream could
/// not be asked (down, timeout, bad answer).
#[derive(Debug, Default)]
pub struct Answers {
    /// By canonical URL.
    pub urls: HashMap<String, Arc<UrlAnswer>>,
    /// By canonical host.
    pub hosts: HashMap<String, Arc<HostAnswer>>,
    /// Some items could not be answered.
    pub unavailable: bool,
}

impl Upstream {
    /// An upstream tier over `client`.
    pub fn new(client: RepClient, timeout: Duration, batch: usize, cache_entries: u64) -> Upstream {
        Upstream {
            client,
            timeout,
            batch: batch.max(1),
            cache: moka::future::Cache::builder()
                .max_capacity(cache_entries)
                .expire_after(AnswerTtl)
                .build(),
            last_warning: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Answers for the misses: from the cache, else from the upstream within the deadline.
    /// The `ttl_secs` of a cached answer is what is left of its TTL.
    pub async fn resolve(&self, misses: Misses) -> Answers {
        let mut out = Answers::default();
        let mut ask = Misses::default();
        for url in misses.urls {
            match self.cached(&format!("u:{url}")).await {
                Some(CachedAnswer::Url(v)) => {
                    out.urls.insert(url, v);
                }
                _ => ask.urls.push(url),
            }
        }
        for host in misses.hosts {
            match self.cached(&format!("h:{host}")).await {
                Some(CachedAnswer::Host(v)) => {
                    out.hosts.insert(host, v);
                }
                _ => ask.hosts.push(host),
            }
        }
        if ask.urls.is_empty() && ask.hosts.is_empty() {
            return out;
        }
        // Batches of at most `batch` items, asked concurrently under one deadline.
        let mut items: Vec<(bool, String)> = ask.urls.into_iter().map(|u| (true, u)).collect();
        items.extend(ask.hosts.into_iter().map(|h| (false, h)));
        let requests = items.chunks(self.batch).map(|chunk| {
            let pick = |url: bool| {
                chunk
                    .iter()
                    .filter(|i| i.0 == url)
                    .map(|i| i.1.clone())
                    .collect()
            };
            let body = BatchRequest {
                urls: pick(true),
                hosts: pick(false),
            };
            async move {
                self.client
                    .post_json("/v1/lookup", &body, self.timeout)
                    .await
            }
        });
        let results = futures_util::future::join_all(requests).await;
        for result in results {
            match result.and_then(parse_batch) {
                Ok(Answered { urls, hosts }) => {
                    for v in urls {
                        let (ttl, url) = (v.verdict.ttl_secs, v.canonical.clone());
                        self.store(format!("u:{url}"), CachedAnswer::Url(v.clone()), ttl)
                            .await;
                        out.urls.insert(url, v);
                    }
                    for v in hosts {
                        let (ttl, host) = (v.verdict.ttl_secs, v.canonical.clone());
                        self.store(format!("h:{host}"), CachedAnswer::Host(v.clone()), ttl)
                            .await;
                        out.hosts.insert(host, v);
                    }
                }
                Err(e) => {
                    out.unavailable = true;
                    self.warn(&e);
                }
            }
        }
        out
    }

    /// A cached answer, its `ttl_secs` what is left of its TTL and marked `cached`.
    async fn cached(&self, key: &str) -> Option<CachedAnswer> {
        let c = self.cache.get(key).await?;
        let left = c.ttl.saturating_sub(c.at.elapsed());
        if left.is_zero() {
            return None;
        }
        let left = left.as_secs().max(1);
        Some(match c.answer {
            CachedAnswer::Url(a) => {
                let mut a = (*a).clone();
                (a.verdict.ttl_secs, a.verdict.cached) = (left, true);
                CachedAnswer::Url(Arc::new(a))
            }
            CachedAnswer::Host(a) => {
                let mut a = (*a).clone();
                (a.verdict.ttl_secs, a.verdict.cached) = (left, true);
                CachedAnswer::Host(Arc::new(a))
            }
        })
    }

    async fn store(&self, key: String, answer: CachedAnswer, ttl_secs: u64) {
        if ttl_secs > 0 {
            let c = Cached {
                answer,
                ttl: Duration::from_secs(ttl_secs),
                at: Instant::now(),
            };
            self.cache.insert(key, c).await;
        }
    }

    /// Logs that the upstream answered something this server cannot use for an item (the
    /// item is answered as if the upstream were unavailable); at most once a minute, with the
    /// other warnings about the upstream.
    pub fn warn_unusable(&self, why: &str) {
        self.warn(&format_args!("unusable answer: {why}"));
    }

    fn warn(&self, e: &dyn std::fmt::Display) {
        let now = self.epoch.elapsed().as_secs() + 60;
        let last = self.last_warning.load(Ordering::Relaxed);
        if now >= last + 60
            && self
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(upstream = self.client.base(), error = %e,
                "upstream reputation server unavailable; answering without it");
        }
    }
}

/// The answers of one upstream batch.
struct Answered {
    urls: Vec<Arc<UrlAnswer>>,
    hosts: Vec<Arc<HostAnswer>>,
}

/// The answers of one upstream batch; items the upstream refused are left out (they are
/// answered untested).
fn parse_batch(v: serde_json::Value) -> Result<Answered, ClientError> {
    let batch: BatchAnswer = serde_json::from_value(v)
        .map_err(|e| ClientError::Json(format!("bad upstream lookup answer: {e}")))?;
    let urls = batch.urls.into_iter().filter_map(|i| match i {
        UrlItem::Answer(a) => Some(Arc::new(*a)),
        UrlItem::Refused { .. } => None,
    });
    let hosts = batch.hosts.into_iter().filter_map(|i| match i {
        HostItem::Answer(a) => Some(Arc::new(*a)),
        HostItem::Refused { .. } => None,
    });
    Ok(Answered {
        urls: urls.collect(),
        hosts: hosts.collect(),
    })
}
