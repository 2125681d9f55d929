//! Host name resolution for upstream connections, behind one cache bounded by bytes.
//!
//! The [`Dialer`](super::dial::Dialer) asks a [`Resolver`] for every name that is neither an
//! IP literal nor in `proxy.hosts`, before each CONNECT and each new pooled upstream
//! connection; every address it returns, cached or not, is then checked against the
//! destination policy at each dial.
//!
//! # Resolvers
//! `proxy.dns_resolver: hickory` (the default) asks the name servers of `/etc/resolv.conf`
//! (or `proxy.dns_nameservers`) directly, without a thread: A and AAAA in parallel, AAAA
//! first in the answer (the dialer alternates families from the first, RFC 8305), with
//! `/etc/hosts` consulted first as glibc does (both files are read once, when the proxy
//! starts; a restart picks up changes). An answer is kept for its record TTL (the least
//! TTL of its records) clamped to `proxy.dns_min_ttl_ms ..= proxy.dns_max_ttl_ms`; a "no
//! such name" or "no address" answer for the TTL of its SOA record (RFC 2308: the lesser of
//! the record's TTL and its minimum field) clamped to `dns_min_ttl_ms ..=
//! dns_negative_max_ttl_ms`. Failures without a TTL (a timeout, a server failure, a negative
//! answer without SOA) are kept for `proxy.dns_negative_ttl_ms`. `proxy.dns_resolver:
//! system` is `getaddrinfo` on tokio's blocking pool (so `nsswitch.conf` applies), whose
//! answers carry no TTL: they are kept for the fixed `proxy.dns_cache_ttl_ms`, failures for
//! `dns_negative_ttl_ms`.
//!
//! # The cache
//! One moka cache shared by all workers, bounded by `proxy.dns_cache_bytes`: an entry
//! weighs its name, its addresses and [`ENTRY_OVERHEAD`] bytes of bookkeeping, so the bound
//! holds in memory whatever the mix of short and long names. Concurrent lookups of one name
//! share one query. `proxy.dns_cache_ttl_ms: 0` turns the cache off (and the sharing with
//! it). Cost: a hit is a hash lookup and an `Arc` clone (well under a microsecond); a miss
//! is a query to the name server (a loopback round trip is some tens of microseconds) or,
//! with `system`, a blocking-pool hop plus `getaddrinfo`. `docs/performance.md` ("DNS") has
//! the figures.
//!
//! # Failure
//! A failed lookup is an `std::io::Error` (`NotFound` for no such name or no address,
//! `TimedOut` for a silent server) that the dialer turns into a 502 with `Proxy-Status:
//! dns_error`; a lookup that outlives `proxy.upstream_connect_timeout_ms` is a 504. A
//! malformed or unexpected answer is a failure like any other, never a panic.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::config::{DnsCacheConfig, ResolverKind};

/// Bytes an entry costs beyond its name and addresses: moka's entry, deque and timer nodes,
/// the `Arc`s, allocator rounding. Measured (`measure_memory_per_cached_name`): 100,000
/// names grew the resident set by about 590 bytes each, which this makes the counted weight
/// approach.
pub const ENTRY_OVERHEAD: u32 = 450;

/// What a lookup function found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub ips: Vec<IpAddr>,
    /// How long the records may be used; `None`: the resolver does not say (`system`).
    pub ttl: Option<Duration>,
}

/// Why a lookup function found nothing.
#[derive(Debug)]
pub struct Failure {
    pub error: std::io::Error,
    /// The negative answer's TTL (from its SOA record); `None` for failures without one.
    pub ttl: Option<Duration>,
}

impl From<std::io::Error> for Failure {
    fn from(error: std::io::Error) -> Self {
        Self { error, ttl: None }
    }
}

/// A lookup function's future.
pub type LookupFuture = Pin<Box<dyn Future<Output = Result<Found, Failure>> + Send>>;

type LookupFn = dyn Fn(String) -> LookupFuture + Send + Sync;

/// What the resolver said about one name, and for how long it holds.
#[derive(Debug, Clone)]
enum Answer {
    Found(Arc<[IpAddr]>, Duration),
    Failed(Arc<std::io::Error>, Duration),
}

impl Answer {
    fn ttl(&self) -> Duration {
        match self {
            Answer::Found(_, t) | Answer::Failed(_, t) => *t,
        }
    }
}

struct AnswerTtl;

impl moka::Expiry<String, Answer> for AnswerTtl {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Answer,
        _now: Instant,
    ) -> Option<Duration> {
        Some(value.ttl())
    }
}

/// The weight of an entry in bytes, as the cache bound counts it.
fn weigh(name: &str, answer: &Answer) -> u32 {
    let payload = match answer {
        Answer::Found(ips, _) => ips.len() * std::mem::size_of::<IpAddr>(),
        // The error's message is allocated once; count a typical one.
        Answer::Failed(..) => 64,
    };
    u32::try_from(name.len() + payload)
        .unwrap_or(u32::MAX)
        .saturating_add(ENTRY_OVERHEAD)
}

/// Resolver counters, for `/stats` and `/metrics`.
#[derive(Debug, Default)]
pub struct DnsStats {
    /// Queries that returned addresses.
    pub resolved: AtomicU64,
    /// Queries that failed (no such name, no address, resolver error).
    pub failed: AtomicU64,
    /// Lookups answered from the cache (including cached failures, and lookups that waited
    /// for another's query).
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

/// A resolver behind the DNS cache (see the module docs). Cheap to clone; clones share the
/// cache.
#[derive(Clone)]
pub struct Resolver {
    cache: Option<moka::future::Cache<String, Answer>>,
    cfg: Arc<DnsCacheConfig>,
    lookup: Arc<LookupFn>,
    pub stats: Arc<DnsStats>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("resolver", &self.cfg.resolver)
            .field("cached_names", &self.cached_names())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Default for Resolver {
    /// `getaddrinfo` behind the default cache.
    fn default() -> Self {
        Self::system(DnsCacheConfig::default())
    }
}

impl Resolver {
    /// The resolver `cfg.resolver` names, behind the cache `cfg` says.
    ///
    /// # Errors
    /// With `hickory` and no `dns_nameservers`: `/etc/resolv.conf` cannot be read or parsed.
    pub fn new(cfg: DnsCacheConfig) -> std::io::Result<Self> {
        match cfg.resolver {
            ResolverKind::System => Ok(Self::system(cfg)),
            ResolverKind::Hickory => {
                let r = Arc::new(hickory::build(&cfg)?);
                Ok(Self::with_lookup(cfg, move |host| {
                    let r = r.clone();
                    Box::pin(async move { hickory::lookup(&r, &host).await })
                }))
            }
        }
    }

    /// `getaddrinfo` on the blocking pool, whatever `cfg.resolver` says.
    pub fn system(cfg: DnsCacheConfig) -> Self {
        Self::with_lookup(cfg, |host| {
            Box::pin(async move {
                let ips = tokio::net::lookup_host((host.as_str(), 0))
                    .await?
                    .map(|a| a.ip())
                    .collect();
                Ok(Found { ips, ttl: None })
            })
        })
    }

    /// The cache in front of another lookup function (tests count and fail its calls).
    pub fn with_lookup(
        cfg: DnsCacheConfig,
        lookup: impl Fn(String) -> LookupFuture + Send + Sync + 'static,
    ) -> Self {
        let cache = (!cfg.ttl.is_zero()).then(|| {
            moka::future::Cache::builder()
                .max_capacity(cfg.max_bytes)
                .weigher(|name: &String, answer: &Answer| weigh(name, answer))
                .expire_after(AnswerTtl)
                .build()
        });
        Self {
            cache,
            cfg: Arc::new(cfg),
            lookup: Arc::new(lookup),
            stats: Arc::default(),
        }
    }

    /// Names in the cache (answers and failures); moka counts lazily, so this may lag the
    /// last few lookups.
    pub fn cached_names(&self) -> u64 {
        self.cache.as_ref().map_or(0, |c| c.entry_count())
    }

    /// Bytes the cache's entries weigh (see [`ENTRY_OVERHEAD`]); lags like
    /// [`cached_names`](Self::cached_names).
    pub fn cached_bytes(&self) -> u64 {
        self.cache.as_ref().map_or(0, |c| c.weighted_size())
    }

    /// Applies pending evictions and expiries now (tests).
    pub async fn sync(&self) {
        if let Some(c) = &self.cache {
            c.run_pending_tasks().await;
        }
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
            Answer::Found(ips, _) => Ok(ips),
            Answer::Failed(e, _) => Err(e),
        }
    }

    async fn call(&self, host: String) -> Answer {
        match (self.lookup)(host).await {
            Ok(found) if !found.ips.is_empty() => {
                self.stats.resolved.fetch_add(1, Relaxed);
                // getaddrinfo lists an address once per socket type; dial each once.
                let mut ips = Vec::with_capacity(found.ips.len());
                for ip in found.ips {
                    if !ips.contains(&ip) {
                        ips.push(ip);
                    }
                }
                let ttl = found.ttl.map_or(self.cfg.ttl, |t| self.cfg.answer_ttl(t));
                Answer::Found(ips.into(), ttl)
            }
            Ok(_) => {
                self.stats.failed.fetch_add(1, Relaxed);
                let e = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
                Answer::Failed(Arc::new(e), self.cfg.negative_ttl)
            }
            Err(f) => {
                self.stats.failed.fetch_add(1, Relaxed);
                Answer::Failed(Arc::new(f.error), self.cfg.failure_ttl(f.ttl))
            }
        }
    }
}

/// The hickory stub resolver: building it from config, and one lookup.
mod hickory {
    use std::time::{Duration, Instant};

    use hickory_resolver::TokioResolver;
    use hickory_resolver::config::{
        ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
        ResolverOpts,
    };
    use hickory_resolver::net::runtime::TokioRuntimeProvider;
    use hickory_resolver::net::{DnsError, NetError};
    use hickory_resolver::proto::op::ResponseCode;

    use super::{Failure, Found};
    use crate::config::DnsCacheConfig;

    /// A resolver for `cfg`'s name servers (or the system's), with hickory's own cache off:
    /// ours, bounded by bytes, is in front of it.
    pub(super) fn build(cfg: &DnsCacheConfig) -> std::io::Result<TokioResolver> {
        let (config, mut opts) = if cfg.nameservers.is_empty() {
            hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| {
                    std::io::Error::other(format!(
                        "reading /etc/resolv.conf (set proxy.dns_nameservers, or dns_resolver: system): {e}"
                    ))
                })?
        } else {
            let servers = cfg
                .nameservers
                .iter()
                .map(|a| {
                    let (mut udp, mut tcp) = (ConnectionConfig::udp(), ConnectionConfig::tcp());
                    udp.port = a.port();
                    tcp.port = a.port();
                    NameServerConfig::new(a.ip(), true, vec![udp, tcp])
                })
                .collect();
            let mut opts = ResolverOpts::default();
            // Explicit name servers stand for the whole of the system's configuration.
            opts.use_hosts_file = ResolveHosts::Never;
            (ResolverConfig::from_name_servers(servers), opts)
        };
        opts.cache_size = 0;
        opts.timeout = cfg.timeout;
        opts.attempts = cfg.attempts;
        opts.ip_strategy = LookupIpStrategy::Ipv6AndIpv4;
        TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(opts)
            .build()
            .map_err(|e| std::io::Error::other(format!("building the DNS resolver: {e}")))
    }

    /// The A and AAAA records of `host`, and how long they hold.
    pub(super) async fn lookup(r: &TokioResolver, host: &str) -> Result<Found, Failure> {
        // getaddrinfo takes "0", "127.1" or "2130706433" as addresses; so must this, or they
        // would reach DNS (and miss the destination check of the address they stand for).
        if let Some(ip) = crate::canon::numeric_ipv4(host) {
            return Ok(Found {
                ips: vec![ip.into()],
                ttl: None,
            });
        }
        match r.lookup_ip(host).await {
            Ok(found) => Ok(Found {
                ips: found.iter().collect(),
                ttl: Some(
                    found
                        .valid_until()
                        .saturating_duration_since(Instant::now()),
                ),
            }),
            Err(e) => Err(failure(&e)),
        }
    }

    /// A hickory error as an I/O error of the matching kind, with the negative TTL of a
    /// "no such name" or "no address" answer.
    fn failure(e: &NetError) -> Failure {
        use std::io::{Error, ErrorKind};
        match e {
            NetError::Dns(DnsError::NoRecordsFound(n)) => {
                let what = if n.response_code == ResponseCode::NXDomain {
                    "no such name"
                } else {
                    "no address"
                };
                Failure {
                    error: Error::new(ErrorKind::NotFound, what),
                    ttl: n.negative_ttl.map(|s| Duration::from_secs(u64::from(s))),
                }
            }
            NetError::Timeout => Error::new(ErrorKind::TimedOut, "DNS query timed out").into(),
            other => Error::other(other.to_string()).into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A lookup function that counts its calls and answers `127.0.0.1` (twice, as
    /// getaddrinfo lists it per socket type) for names starting with "ok", an error for the
    /// rest.
    fn counting(cfg: DnsCacheConfig) -> (Arc<AtomicU64>, Resolver) {
        let calls = Arc::new(AtomicU64::new(0));
        let c = calls.clone();
        let r = Resolver::with_lookup(cfg, move |host: String| {
            let calls = c.clone();
            Box::pin(async move {
                calls.fetch_add(1, Relaxed);
                // Let concurrent lookups pile up behind this one.
                tokio::task::yield_now().await;
                if host.starts_with("ok") {
                    Ok(Found {
                        ips: vec![ip("127.0.0.1"), ip("127.0.0.1")],
                        ttl: None,
                    })
                } else {
                    Err(std::io::Error::other("no such name").into())
                }
            })
        });
        (calls, r)
    }

    #[tokio::test]
    async fn the_dns_cache_shares_one_lookup_per_name_and_remembers_failures() {
        let (calls, r) = counting(DnsCacheConfig::default());
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
            "one query for 100 lookups of one name"
        );
        assert_eq!(r.stats.resolved.load(Relaxed), 1);
        assert_eq!(r.stats.cached.load(Relaxed), 99);

        assert!(r.resolve("bad.example").await.is_err());
        let e = r.resolve("bad.example").await.unwrap_err();
        assert_eq!(e.to_string(), "no such name");
        assert_eq!(calls.load(Relaxed), 2, "the failure is remembered");
        assert_eq!(r.stats.failed.load(Relaxed), 1);
        r.sync().await;
        assert_eq!(r.cached_names(), 2);
    }

    #[tokio::test]
    async fn without_the_cache_every_lookup_calls_the_resolver() {
        let (calls, off) = counting(DnsCacheConfig {
            ttl: Duration::ZERO,
            ..DnsCacheConfig::default()
        });
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
                ..DnsCacheConfig::default()
            },
            move |_| {
                c.fetch_add(1, Relaxed);
                Box::pin(async {
                    Ok(Found {
                        ips: vec!["127.0.0.1".parse().unwrap()],
                        ttl: None,
                    })
                })
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

    #[test]
    fn record_ttls_are_clamped_and_negative_ttls_come_from_the_soa() {
        let cfg = DnsCacheConfig {
            min_ttl: Duration::from_secs(2),
            max_ttl: Duration::from_secs(600),
            negative_ttl: Duration::from_secs(5),
            negative_max_ttl: Duration::from_secs(60),
            ..DnsCacheConfig::default()
        };
        let s = Duration::from_secs;
        assert_eq!(cfg.answer_ttl(s(0)), s(2));
        assert_eq!(cfg.answer_ttl(s(300)), s(300));
        assert_eq!(cfg.answer_ttl(s(86_400)), s(600));
        assert_eq!(cfg.failure_ttl(Some(s(30))), s(30));
        assert_eq!(cfg.failure_ttl(Some(s(3600))), s(60));
        assert_eq!(cfg.failure_ttl(Some(s(0))), s(2));
        assert_eq!(cfg.failure_ttl(None), s(5), "no SOA: dns_negative_ttl_ms");
    }

    #[tokio::test]
    async fn each_answer_is_kept_for_its_own_ttl() {
        let r = Resolver::with_lookup(
            DnsCacheConfig {
                min_ttl: Duration::ZERO,
                ..DnsCacheConfig::default()
            },
            |host: String| {
                Box::pin(async move {
                    match host.as_str() {
                        "short.test" => Ok(Found {
                            ips: vec![ip("192.0.2.1")],
                            ttl: Some(Duration::from_millis(30)),
                        }),
                        "long.test" => Ok(Found {
                            ips: vec![ip("192.0.2.2")],
                            ttl: Some(Duration::from_secs(300)),
                        }),
                        _ => Err(Failure {
                            error: std::io::Error::new(std::io::ErrorKind::NotFound, "nx"),
                            ttl: Some(Duration::from_millis(30)),
                        }),
                    }
                })
            },
        );
        for h in ["short.test", "long.test", "nx.test"] {
            let _ = r.resolve(h).await;
        }
        tokio::time::sleep(Duration::from_millis(80)).await;
        for h in ["short.test", "long.test", "nx.test"] {
            let _ = r.resolve(h).await;
        }
        assert_eq!(r.stats.resolved.load(Relaxed), 3, "short.test asked again");
        assert_eq!(r.stats.failed.load(Relaxed), 2, "nx.test asked again");
        assert_eq!(r.stats.cached.load(Relaxed), 1, "long.test from the cache");
    }

    #[tokio::test]
    async fn the_cache_is_bounded_by_bytes_not_names() {
        let max_bytes = 64 * 1024;
        let r = Resolver::with_lookup(
            DnsCacheConfig {
                max_bytes,
                ..DnsCacheConfig::default()
            },
            |_| {
                Box::pin(async {
                    Ok(Found {
                        ips: vec![ip("192.0.2.1"), ip("2001:db8::1")],
                        ttl: Some(Duration::from_secs(300)),
                    })
                })
            },
        );
        let name = |i: usize, len: usize| format!("{i}-{}.test", "x".repeat(len));
        for i in 0..5_000 {
            r.resolve(&name(i, 10)).await.unwrap();
        }
        r.sync().await;
        let short = r.cached_names();
        assert!(r.cached_bytes() <= max_bytes, "{} bytes", r.cached_bytes());
        let per_entry = u64::from(ENTRY_OVERHEAD) + 18 + 2 * 17;
        assert!(
            short >= max_bytes / per_entry * 8 / 10 && short < 5_000,
            "{short} short names in {max_bytes} bytes"
        );
        r.cache.as_ref().unwrap().invalidate_all();
        r.sync().await;
        for i in 0..5_000 {
            r.resolve(&name(i, 240)).await.unwrap();
        }
        r.sync().await;
        assert!(r.cached_bytes() <= max_bytes, "{} bytes", r.cached_bytes());
        assert!(
            r.cached_names() < short * 3 / 4,
            "long names take more room: {} vs {short}",
            r.cached_names()
        );
    }

    #[tokio::test]
    async fn the_system_resolver_answers_localhost_through_the_cache() {
        // /etc/hosts ("files" comes first in nsswitch.conf): nothing leaves the machine.
        let r = Resolver::system(DnsCacheConfig::default());
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

    #[tokio::test]
    async fn the_hickory_resolver_takes_numeric_hosts_as_getaddrinfo_does() {
        let r = Resolver::new(DnsCacheConfig::default()).unwrap();
        for (host, want) in [
            ("0", "0.0.0.0"),
            ("127.1", "127.0.0.1"),
            ("0x7f.0.0.1", "127.0.0.1"),
            ("2130706433", "127.0.0.1"),
            ("017700000001", "127.0.0.1"),
        ] {
            assert_eq!(&*r.resolve(host).await.unwrap(), &[ip(want)], "{host}");
        }
    }

    #[tokio::test]
    async fn the_hickory_resolver_answers_localhost_from_etc_hosts() {
        // /etc/hosts is read before any name server: nothing leaves the machine.
        let r = Resolver::new(DnsCacheConfig::default()).unwrap();
        let a = r.resolve("localhost").await.unwrap();
        assert!(
            !a.is_empty() && a.iter().all(|ip| ip.is_loopback()),
            "{a:?}"
        );
        assert_eq!(r.resolve("localhost.").await.unwrap(), a);
        assert_eq!(r.stats.cached.load(Relaxed), 1);
    }

    /// Resident memory per cached name against the weight the bound counts, for
    /// `docs/performance.md` ("DNS"): run with `--ignored --nocapture`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    #[ignore = "a measurement, not a check"]
    async fn measure_memory_per_cached_name() {
        fn rss() -> u64 {
            let s = std::fs::read_to_string("/proc/self/status").unwrap();
            let kb = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
            kb.split_whitespace()
                .nth(1)
                .unwrap()
                .parse::<u64>()
                .unwrap()
                * 1024
        }
        let r = Resolver::with_lookup(DnsCacheConfig::default(), |_| {
            Box::pin(async {
                Ok(Found {
                    ips: vec![ip("192.0.2.1"), ip("2001:db8::1")],
                    ttl: Some(Duration::from_secs(3600)),
                })
            })
        });
        let n = 100_000;
        let before = rss();
        for i in 0..n {
            r.resolve(&format!("host{i}.example-site.test"))
                .await
                .unwrap();
        }
        r.sync().await;
        let after = rss();
        println!(
            "{} names: {} bytes counted ({} per name), resident grew by {} bytes ({} per name)",
            r.cached_names(),
            r.cached_bytes(),
            r.cached_bytes() / r.cached_names().max(1),
            after.saturating_sub(before),
            after.saturating_sub(before) / r.cached_names().max(1)
        );
    }
}
