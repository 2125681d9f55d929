//! Connecting to upstreams: DNS resolution, the destination check, the connect deadline.
//!
//! Used by both the pooled HTTP client (through [`Connector`], a hyper-util `Connect`
//! service) and CONNECT tunnels. Every resolved address is checked against the
//! [`DestinationPolicy`] before a single packet is sent to it; addresses are tried in the
//! resolver's order with address families alternating, a new attempt starting every
//! `proxy.happy_eyeballs_delay_ms` while earlier ones still run (RFC 8305), all within one
//! deadline (`proxy.upstream_connect_timeout_ms`). Names in `proxy.hosts` ([`StaticHosts`]) are
//! answered from config; every other name goes to the [`Resolver`] (`proxy.dns_resolver`,
//! see [`super::dns`]), whose cache all workers share. Every address, cached or not, is
//! checked against the destination policy at each dial.
//!
//! Failures are typed ([`DialError`]) so the proxy can answer 403 for a refused destination,
//! 502 for DNS or connection errors and 504 for the deadline, each with its RFC 9209
//! `Proxy-Status` error type.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Uri;
use tokio::net::TcpStream;

use super::acl::{DestinationPolicy, Refusal, ip_literal};
use super::pool::{IdleBound, Tracked};
/// `proxy.hosts` and the DNS cache settings, validated by config.
use crate::config::StaticHosts;

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

pub use super::dns::{DnsStats, Resolver};

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

/// The hyper-util `Connect` service for the pooled upstream client: every connection it
/// makes is a [`Tracked`] socket under its worker's [`IdleBound`].
///
/// hyper-util clones the connector for every request, pooled connection or not, so it holds
/// the dialer behind one `Arc` (one reference count, not the half dozen of a [`Dialer`] clone
/// with its DNS cache).
#[derive(Debug, Clone)]
pub struct Connector {
    dialer: Arc<Dialer>,
    /// The worker's bound on idle connections, which every connection made registers with.
    bound: Arc<IdleBound>,
    /// Its connections go to hyper as they are (not through a TLS handshake first).
    plain: bool,
}

impl Connector {
    /// The connector of the plain HTTP pool.
    pub fn new(dialer: Dialer, bound: Arc<IdleBound>) -> Self {
        Self {
            dialer: Arc::new(dialer),
            bound,
            plain: true,
        }
    }

    /// The connector under a TLS one: whoever hands its connections to hyper says so
    /// ([`Tracked::handed_over`]).
    pub fn for_tls(dialer: Dialer, bound: Arc<IdleBound>) -> Self {
        Self {
            plain: false,
            ..Self::new(dialer, bound)
        }
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = Tracked;
    type Error = DialError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, DialError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (dialer, bound, plain) = (self.dialer.clone(), self.bound.clone(), self.plain);
        Box::pin(async move {
            let host = uri.host().ok_or(DialError::NoHost)?;
            let default = if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            };
            let port = uri.port_u16().unwrap_or(default);
            let io = Tracked::new(dialer.dial(host, port).await?, &bound);
            if plain {
                io.handed_over();
            }
            Ok(io)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
