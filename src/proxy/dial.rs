//! Connecting to upstreams: DNS resolution, the destination check, the connect deadline.
//!
//! Used by both the pooled HTTP client (through [`Connector`], a hyper-util `Connect`
//! service) and CONNECT tunnels. Every resolved address is checked against the
//! [`DestinationPolicy`] before a single packet is sent to it; addresses are tried in the
//! resolver's order with address families alternating, a new attempt starting every
//! `proxy.happy_eyeballs_delay_ms` while earlier ones still run (RFC 8305), all within one
//! deadline (`proxy.upstream_connect_timeout_ms`). Names in `proxy.hosts` ([`StaticHosts`]) are
//! answered from config; every other name goes to the system resolver (`getaddrinfo`, so
//! `/etc/hosts` and `nsswitch.conf` apply) on tokio's blocking pool, behind a [`Resolver`]
//! cache shared by all workers.
//!
//! # The DNS cache
//! `getaddrinfo` says nothing of a record's TTL, so answers are kept for a fixed
//! `proxy.dns_cache_ttl_ms` (default 30 s, the order of a browser's own host cache) and
//! failures for `proxy.dns_negative_ttl_ms` (default 5 s); concurrent lookups of one name
//! share one resolver call. Cost: a cached name is a hash lookup (well under a microsecond)
//! where the resolver call is a blocking-pool hop plus the lookup itself, tens of
//! microseconds from `/etc/hosts` and a network round trip from DNS; without the cache every
//! CONNECT and every new upstream connection pays it. With a slow or dead DNS server the
//! cache also keeps a burst of requests for one name from taking one blocking thread each.
//! Every address, cached or not, is checked against the destination policy at each dial.
//!
//! Failures are typed ([`DialError`]) so the proxy can answer 403 for a refused destination,
//! 502 for DNS or connection errors and 504 for the deadline, each with its RFC 9209
//! `Proxy-Status` error type.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Uri;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::acl::{DestinationPolicy, Refusal, ip_literal};
/// `proxy.hosts` and the DNS cache settings, validated by config.
use crate::config::{DnsCacheConfig, StaticHosts};

/// Why no upstream connection could be made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DialError {
    #[error("destination {addr} refused: {}", .reason.as_str())]
    Refused { addr: SocketAddr, reason: Refusal },
    #[error("cannot resolve {host}")]
    Dns {
        host: String,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("{host} resolves to no address")]
    NoAddress { host: String },
    #[error("no connection to {host} within {timeout:?}")]
    Timeout { host: String, timeout: Duration },
    #[error("connection to {addr} failed")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("request URI has no host")]
    NoHost,
}

impl DialError {
    /// The RFC 9209 error type for `Proxy-Status`.
    pub fn proxy_status(&self) -> &'static str {
        match self {
            DialError::Refused { .. } => "destination_ip_prohibited",
            DialError::Dns { .. } | DialError::NoAddress { .. } => "dns_error",
            DialError::Timeout { .. } => "connection_timeout",
            DialError::Connect { source, .. } => match source.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection_refused",
                _ => "destination_unavailable",
            },
            DialError::NoHost => "http_request_error",
        }
    }
}

/// What the resolver said about one name.
#[derive(Debug, Clone)]
enum Answer {
    Found(Arc<[IpAddr]>),
    Failed(Arc<std::io::Error>),
}

struct AnswerTtl(DnsCacheConfig);

impl moka::Expiry<String, Answer> for AnswerTtl {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Answer,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        Some(match value {
            Answer::Found(_) => self.0.ttl,
            Answer::Failed(_) => self.0.negative_ttl,
        })
    }
}

/// Resolver counters, for `/stats` and `/metrics`.
#[derive(Debug, Default)]
pub struct DnsStats {
    /// Resolver calls that returned addresses.
    pub resolved: AtomicU64,
    /// Resolver calls that failed (no such name, no address, resolver error).
    pub failed: AtomicU64,
    /// Lookups answered from the cache (including cached failures, and lookups that waited
    /// for another's resolver call).
    pub cached: AtomicU64,
}

impl DnsStats {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "resolved": self.resolved.load(Relaxed),
            "failed": self.failed.load(Relaxed),
            "cached": self.cached.load(Relaxed),
        })
    }
}

type LookupFn = dyn Fn(String) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>
    + Send
    + Sync;

/// The system resolver behind the DNS cache (see the module docs). Cheap to clone; clones
/// share the cache.
#[derive(Clone)]
pub struct Resolver {
    cache: Option<moka::future::Cache<String, Answer>>,
    lookup: Arc<LookupFn>,
    pub stats: Arc<DnsStats>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("cached_names", &self.cached_names())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Default for Resolver {
    fn default() -> Self {
        Self::new(DnsCacheConfig::default())
    }
}

impl Resolver {
    /// The system resolver (`getaddrinfo` on the blocking pool) with the cache `cfg` says.
    pub fn new(cfg: DnsCacheConfig) -> Self {
        Self::with_lookup(cfg, |host| {
            Box::pin(async move {
                Ok(tokio::net::lookup_host((host.as_str(), 0))
                    .await?
                    .map(|a| a.ip())
                    .collect())
            })
        })
    }

    /// The cache in front of another lookup function (tests count and fail its calls).
    pub fn with_lookup(
        cfg: DnsCacheConfig,
        lookup: impl Fn(String) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        let cache = (!cfg.ttl.is_zero()).then(|| {
            moka::future::Cache::builder()
                .max_capacity(cfg.max_names)
                .expire_after(AnswerTtl(cfg))
                .build()
        });
        Self {
            cache,
            lookup: Arc::new(lookup),
            stats: Arc::default(),
        }
    }

    /// Names in the cache (answers and failures); moka counts lazily, so this may lag the
    /// last few lookups.
    pub fn cached_names(&self) -> u64 {
        self.cache.as_ref().map_or(0, |c| c.entry_count())
    }

    /// The addresses of `host` (not an IP literal), in the resolver's order, each once.
    ///
    /// # Errors
    /// The resolver's error, or `NotFound` for a name with no address; cached for the
    /// negative TTL.
    pub async fn resolve(&self, host: &str) -> Result<Arc<[IpAddr]>, Arc<std::io::Error>> {
        let key = host.trim_end_matches('.').to_ascii_lowercase();
        let answer = match &self.cache {
            None => self.call(key).await,
            Some(cache) => {
                let entry = cache
                    .entry(key.clone())
                    .or_insert_with(self.call(key))
                    .await;
                if !entry.is_fresh() {
                    self.stats.cached.fetch_add(1, Relaxed);
                }
                entry.into_value()
            }
        };
        match answer {
            Answer::Found(ips) => Ok(ips),
            Answer::Failed(e) => Err(e),
        }
    }

    async fn call(&self, host: String) -> Answer {
        match (self.lookup)(host).await {
            Ok(found) if !found.is_empty() => {
                self.stats.resolved.fetch_add(1, Relaxed);
                // getaddrinfo lists an address once per socket type; dial each once.
                let mut ips = Vec::with_capacity(found.len());
                for ip in found {
                    if !ips.contains(&ip) {
                        ips.push(ip);
                    }
                }
                Answer::Found(ips.into())
            }
            Ok(_) => {
                self.stats.failed.fetch_add(1, Relaxed);
                Answer::Failed(Arc::new(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no address",
                )))
            }
            Err(e) => {
                self.stats.failed.fetch_add(1, Relaxed);
                Answer::Failed(Arc::new(e))
            }
        }
    }
}

/// Resolves, checks and connects.
#[derive(Debug, Clone)]
pub struct Dialer {
    policy: Arc<DestinationPolicy>,
    timeout: Duration,
    hosts: Arc<StaticHosts>,
    resolver: Resolver,
    /// Happy Eyeballs: the next address is tried this long after the previous attempt.
    attempt_delay: Duration,
}

impl Dialer {
    pub fn new(policy: Arc<DestinationPolicy>, timeout: Duration) -> Self {
        Self {
            policy,
            timeout,
            hosts: Arc::default(),
            resolver: Resolver::default(),
            attempt_delay: Duration::from_millis(250),
        }
    }

    /// How long a connection attempt may go unanswered before the next address is tried in
    /// parallel (`proxy.happy_eyeballs_delay_ms`).
    #[must_use]
    pub fn with_attempt_delay(mut self, delay: Duration) -> Self {
        self.attempt_delay = delay;
        self
    }

    /// Resolves names not in `proxy.hosts` through `resolver` (and its cache).
    #[must_use]
    pub fn with_resolver(mut self, resolver: Resolver) -> Self {
        self.resolver = resolver;
        self
    }

    /// The resolver and its counters.
    pub fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    /// Answers the names in `hosts` from config.
    #[must_use]
    pub fn with_static_hosts(mut self, hosts: StaticHosts) -> Self {
        self.hosts = Arc::new(hosts);
        self
    }

    pub fn policy(&self) -> &DestinationPolicy {
        &self.policy
    }

    /// Connects to `host:port` (host may be a bracketed IPv6 literal) within the deadline.
    pub async fn dial(&self, host: &str, port: u16) -> Result<TcpStream, DialError> {
        match tokio::time::timeout(self.timeout, self.dial_inner(host, port)).await {
            Ok(r) => r,
            Err(_) => Err(DialError::Timeout {
                host: host.to_owned(),
                timeout: self.timeout,
            }),
        }
    }

    async fn dial_inner(&self, host: &str, port: u16) -> Result<TcpStream, DialError> {
        if host.is_empty() {
            return Err(DialError::NoHost);
        }
        let configured = self.hosts.get(host);
        let addrs: Vec<SocketAddr> = match (ip_literal(host), configured) {
            (Some(ip), _) => vec![SocketAddr::new(ip, port)],
            (None, Some(ips)) => ips.iter().map(|&ip| SocketAddr::new(ip, port)).collect(),
            (None, None) => self
                .resolver
                .resolve(host)
                .await
                .map_err(|source| DialError::Dns {
                    host: host.to_owned(),
                    source,
                })?
                .iter()
                .map(|&ip| SocketAddr::new(ip, port))
                .collect(),
        };
        // Refuse the whole host if any of its addresses is refused: a name that mixes a
        // public and an internal address is a rebinding attempt, not a fallback.
        for &addr in &addrs {
            self.policy
                .check(addr)
                .map_err(|reason| DialError::Refused { addr, reason })?;
        }
        let s = connect_first(host, interleave_families(addrs), self.attempt_delay).await?;
        let _ = s.set_nodelay(true);
        Ok(s)
    }
}

/// The resolver's order, but alternating address families from the first one's (RFC 8305
/// §4): a name whose IPv6 addresses all fail still gets its IPv4 tried early.
fn interleave_families(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let first_v6 = addrs.first().is_some_and(SocketAddr::is_ipv6);
    let (mut a, mut b): (std::collections::VecDeque<_>, std::collections::VecDeque<_>) =
        addrs.into_iter().partition(|x| x.is_ipv6() == first_v6);
    let mut out = Vec::with_capacity(a.len() + b.len());
    loop {
        match (a.pop_front(), b.pop_front()) {
            (None, None) => return out,
            (x, y) => out.extend(x.into_iter().chain(y)),
        }
    }
}

/// Connection attempts to `addrs` in order, each started `delay` after the one before or as
/// soon as it fails, earlier ones left running (Happy Eyeballs, RFC 8305 §5): the first to
/// connect wins and the others are dropped. An address that never answers (a black-holed
/// route, a full accept queue) thus costs `delay`, not the whole connect timeout. The
/// caller's deadline bounds the lot.
///
/// # Errors
/// The last attempt's error when all failed; [`DialError::NoAddress`] naming `host` when
/// there was no address to try.
async fn connect_first(
    host: &str,
    addrs: Vec<SocketAddr>,
    delay: Duration,
) -> Result<TcpStream, DialError> {
    use futures_util::StreamExt as _;
    let mut pending = addrs.into_iter();
    let mut attempts = futures_util::stream::FuturesUnordered::new();
    let attempt = |addr: SocketAddr| async move {
        TcpStream::connect(addr)
            .await
            .map_err(|source| DialError::Connect {
                addr,
                source: Arc::new(source),
            })
    };
    let mut last = None;
    loop {
        if attempts.is_empty() {
            match pending.next() {
                Some(addr) => attempts.push(attempt(addr)),
                None => {
                    return Err(last.unwrap_or_else(|| DialError::NoAddress {
                        host: host.to_owned(),
                    }));
                }
            }
        }
        let more = pending.len() > 0;
        tokio::select! {
            Some(r) = attempts.next() => match r {
                Ok(s) => return Ok(s),
                Err(e) => {
                    last = Some(e);
                    if let Some(addr) = pending.next() {
                        attempts.push(attempt(addr));
                    }
                }
            },
            () = tokio::time::sleep(delay), if more => {
                if let Some(addr) = pending.next() {
                    attempts.push(attempt(addr));
                }
            }
        }
    }
}

/// The hyper-util `Connect` service for the pooled upstream client.
///
/// hyper-util clones the connector for every request, pooled connection or not, so it holds
/// the dialer behind one `Arc` (one reference count, not the half dozen of a [`Dialer`] clone
/// with its DNS cache).
#[derive(Debug, Clone)]
pub struct Connector {
    dialer: Arc<Dialer>,
}

impl Connector {
    pub fn new(dialer: Dialer) -> Self {
        Self {
            dialer: Arc::new(dialer),
        }
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = DialError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, DialError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let dialer = self.dialer.clone();
        Box::pin(async move {
            let host = uri.host().ok_or(DialError::NoHost)?;
            let default = if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            };
            let port = uri.port_u16().unwrap_or(default);
            dialer.dial(host, port).await.map(TokioIo::new)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lookup function that counts its calls and answers `127.0.0.1` for names starting
    /// with "ok", an error for the rest.
    fn counting() -> (Arc<AtomicU64>, Resolver, Resolver) {
        let calls = Arc::new(AtomicU64::new(0));
        let make = |cfg: DnsCacheConfig| {
            let calls = calls.clone();
            Resolver::with_lookup(cfg, move |host: String| {
                let calls = calls.clone();
                Box::pin(async move {
                    calls.fetch_add(1, Relaxed);
                    // Let concurrent lookups pile up behind this one.
                    tokio::task::yield_now().await;
                    if host.starts_with("ok") {
                        Ok(vec![
                            "127.0.0.1".parse().unwrap(),
                            "127.0.0.1".parse().unwrap(),
                        ])
                    } else {
                        Err(std::io::Error::other("no such name"))
                    }
                })
            })
        };
        let cached = make(DnsCacheConfig::default());
        let off = make(DnsCacheConfig {
            ttl: Duration::ZERO,
            ..DnsCacheConfig::default()
        });
        (calls, cached, off)
    }

    #[test]
    fn address_families_alternate_from_the_first_ones() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            interleave_families(vec![
                a("[::1]:1"),
                a("[::2]:1"),
                a("10.0.0.1:1"),
                a("10.0.0.2:1"),
                a("[::3]:1"),
            ]),
            [
                a("[::1]:1"),
                a("10.0.0.1:1"),
                a("[::2]:1"),
                a("10.0.0.2:1"),
                a("[::3]:1")
            ]
        );
        assert_eq!(
            interleave_families(vec![a("10.0.0.1:1"), a("[::1]:1"), a("10.0.0.2:1")]),
            [a("10.0.0.1:1"), a("[::1]:1"), a("10.0.0.2:1")]
        );
        assert!(interleave_families(vec![]).is_empty());
    }

    #[tokio::test]
    async fn the_dns_cache_shares_one_lookup_per_name_and_remembers_failures() {
        let (calls, r, _) = counting();
        let all = futures_util::future::join_all((0..100).map(|i| {
            let r = r.clone();
            async move {
                r.resolve(if i % 2 == 0 {
                    "ok.example"
                } else {
                    "OK.Example."
                })
                .await
            }
        }))
        .await;
        assert!(all.iter().all(|a| a.as_deref().unwrap().len() == 1));
        assert_eq!(
            calls.load(Relaxed),
            1,
            "one resolver call for 100 lookups of one name"
        );
        assert_eq!(r.stats.resolved.load(Relaxed), 1);
        assert_eq!(r.stats.cached.load(Relaxed), 99);

        assert!(r.resolve("bad.example").await.is_err());
        let e = r.resolve("bad.example").await.unwrap_err();
        assert_eq!(e.to_string(), "no such name");
        assert_eq!(calls.load(Relaxed), 2, "the failure is remembered");
        assert_eq!(r.stats.failed.load(Relaxed), 1);
        r.cache.as_ref().unwrap().run_pending_tasks().await;
        assert_eq!(r.cached_names(), 2);
    }

    #[tokio::test]
    async fn without_the_cache_every_lookup_calls_the_resolver() {
        let (calls, _, off) = counting();
        for _ in 0..3 {
            off.resolve("ok.example").await.unwrap();
            off.resolve("bad.example").await.unwrap_err();
        }
        assert_eq!(calls.load(Relaxed), 6);
        assert_eq!(off.stats.cached.load(Relaxed), 0);
        assert_eq!(off.cached_names(), 0);
    }

    #[tokio::test]
    async fn cached_answers_expire_after_their_ttl() {
        let calls = Arc::new(AtomicU64::new(0));
        let c = calls.clone();
        let r = Resolver::with_lookup(
            DnsCacheConfig {
                ttl: Duration::from_millis(30),
                negative_ttl: Duration::ZERO,
                max_names: 10,
            },
            move |_| {
                c.fetch_add(1, Relaxed);
                Box::pin(async { Ok(vec!["127.0.0.1".parse().unwrap()]) })
            },
        );
        r.resolve("ok.example").await.unwrap();
        r.resolve("ok.example").await.unwrap();
        assert_eq!(calls.load(Relaxed), 1);
        // Waiting out the TTL, not synchronising: past it the entry cannot be served.
        tokio::time::sleep(Duration::from_millis(60)).await;
        r.resolve("ok.example").await.unwrap();
        assert_eq!(calls.load(Relaxed), 2);
    }

    #[tokio::test]
    async fn the_system_resolver_answers_localhost_through_the_cache() {
        // /etc/hosts ("files" comes first in nsswitch.conf): nothing leaves the machine.
        let r = Resolver::new(DnsCacheConfig::default());
        let a = r.resolve("localhost").await.unwrap();
        assert!(a.iter().all(|ip| ip.is_loopback()), "{a:?}");
        assert_eq!(r.resolve("LOCALHOST.").await.unwrap(), a);
        assert_eq!(r.stats.resolved.load(Relaxed), 1);
        assert_eq!(r.stats.cached.load(Relaxed), 1);
        // A 64-byte label cannot go into a DNS query: the resolver fails without sending.
        let long = format!("{}.invalid", "a".repeat(64));
        assert!(r.resolve(&long).await.is_err());
        assert!(r.resolve(&long).await.is_err());
        assert_eq!(r.stats.failed.load(Relaxed), 1);
    }
}
