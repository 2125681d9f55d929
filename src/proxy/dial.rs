//! Connecting to upstreams: DNS resolution, the destination check, the connect deadline.
//!
//! Used by both the pooled HTTP client (through [`Connector`], a hyper-util `Connect`
//! service) and CONNECT tunnels. Every resolved address is checked against the
//! [`DestinationPolicy`] before a single packet is sent to it; addresses are tried in the
//! order the resolver returns them, all within one deadline
//! (`proxy.upstream_connect_timeout_ms`). Names in `proxy.hosts` ([`StaticHosts`]) are
//! answered from config; every other name goes to the system resolver on tokio's blocking
//! pool.
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
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::acl::{DestinationPolicy, Refusal, ip_literal};

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

/// `proxy.hosts`: names answered from config instead of the system resolver. Exact names
/// first, then `*.suffix` entries, longest suffix first, then `*` (every name). Names are compared in lower case
/// without a trailing dot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StaticHosts {
    exact: std::collections::HashMap<String, Vec<std::net::IpAddr>>,
    /// (".suffix", addresses), longest first.
    wildcard: Vec<(String, Vec<std::net::IpAddr>)>,
    /// `*`: every other name (a closed lab network; no name goes to DNS).
    any: Option<Vec<std::net::IpAddr>>,
}

impl StaticHosts {
    /// Validates the config map.
    ///
    /// # Errors
    /// A message naming the bad entry: an empty or malformed name, no address, an address
    /// that is not an IP literal.
    pub fn parse(
        raw: &std::collections::BTreeMap<String, Vec<String>>,
    ) -> Result<StaticHosts, String> {
        let mut out = StaticHosts::default();
        for (name, addrs) in raw {
            let key = name.trim_end_matches('.').to_ascii_lowercase();
            if key == "*" {
                let ips = addrs
                    .iter()
                    .map(|a| {
                        a.parse::<std::net::IpAddr>()
                            .map_err(|_| format!("\"*\": {a:?} is not an IP address"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if ips.is_empty() {
                    return Err("\"*\" has no address".to_owned());
                }
                out.any = Some(ips);
                continue;
            }
            let bare = key.strip_prefix("*.").unwrap_or(&key);
            if bare.is_empty()
                || bare.contains('*')
                || !bare
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
            {
                return Err(format!(
                    "{name:?} is not a host name (or *.domain for every name under domain)"
                ));
            }
            if addrs.is_empty() {
                return Err(format!("{name:?} has no address"));
            }
            let ips = addrs
                .iter()
                .map(|a| {
                    a.parse::<std::net::IpAddr>()
                        .map_err(|_| format!("{name:?}: {a:?} is not an IP address"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            if key.starts_with("*.") {
                out.wildcard.push((key[1..].to_owned(), ips));
            } else {
                out.exact.insert(key, ips);
            }
        }
        out.wildcard
            .sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        Ok(out)
    }

    /// The configured addresses of `host`, if any.
    pub fn get(&self, host: &str) -> Option<&[std::net::IpAddr]> {
        if self.exact.is_empty() && self.wildcard.is_empty() && self.any.is_none() {
            return None;
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if let Some(v) = self.exact.get(&host) {
            return Some(v);
        }
        self.wildcard
            .iter()
            .find(|(suffix, _)| host.ends_with(suffix.as_str()) && host.len() > suffix.len())
            .map(|(_, v)| v.as_slice())
            .or(self.any.as_deref())
    }
}

/// Resolves, checks and connects.
#[derive(Debug, Clone)]
pub struct Dialer {
    policy: Arc<DestinationPolicy>,
    timeout: Duration,
    hosts: Arc<StaticHosts>,
}

impl Dialer {
    pub fn new(policy: Arc<DestinationPolicy>, timeout: Duration) -> Self {
        Self {
            policy,
            timeout,
            hosts: Arc::default(),
        }
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
            (None, None) => tokio::net::lookup_host((host, port))
                .await
                .map_err(|source| DialError::Dns {
                    host: host.to_owned(),
                    source: Arc::new(source),
                })?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(DialError::NoAddress {
                host: host.to_owned(),
            });
        }
        // Refuse the whole host if any of its addresses is refused: a name that mixes a
        // public and an internal address is a rebinding attempt, not a fallback.
        for &addr in &addrs {
            self.policy
                .check(addr)
                .map_err(|reason| DialError::Refused { addr, reason })?;
        }
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Err(source) => {
                    last = Some(DialError::Connect {
                        addr,
                        source: Arc::new(source),
                    })
                }
            }
        }
        Err(last.unwrap_or(DialError::NoAddress {
            host: host.to_owned(),
        }))
    }
}

/// The hyper-util `Connect` service for the pooled upstream client.
#[derive(Debug, Clone)]
pub struct Connector {
    dialer: Dialer,
}

impl Connector {
    pub fn new(dialer: Dialer) -> Self {
        Self { dialer }
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

    fn hosts(pairs: &[(&str, &[&str])]) -> Result<StaticHosts, String> {
        StaticHosts::parse(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect(),
        )
    }

    #[test]
    fn static_hosts_match_exact_names_then_the_longest_wildcard() {
        let h = hosts(&[
            ("Intranet.Corp.", &["10.1.2.3"]),
            ("*.lab.corp", &["10.9.0.1", "::1"]),
            ("*.corp", &["10.0.0.1"]),
        ])
        .unwrap();
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert_eq!(h.get("intranet.corp"), Some(&[ip("10.1.2.3")][..]));
        assert_eq!(h.get("INTRANET.corp."), Some(&[ip("10.1.2.3")][..]));
        assert_eq!(h.get("a.b.lab.corp").unwrap().len(), 2);
        assert_eq!(h.get("x.corp"), Some(&[ip("10.0.0.1")][..]));
        assert_eq!(
            h.get("corp"),
            None,
            "a wildcard does not cover the bare domain"
        );
        assert_eq!(h.get("lab.corp"), Some(&[ip("10.0.0.1")][..]));
        assert_eq!(h.get("example.org"), None);
        let all = hosts(&[("*", &["127.0.0.1"]), ("*.lab.corp", &["10.9.0.1"])]).unwrap();
        assert_eq!(
            all.get("anything.example.org"),
            Some(&[ip("127.0.0.1")][..])
        );
        assert_eq!(all.get("x.lab.corp"), Some(&[ip("10.9.0.1")][..]));
    }

    #[test]
    fn static_hosts_reject_bad_entries_by_name() {
        for (name, addrs, want) in [
            ("", &["10.0.0.1"][..], "not a host name"),
            ("a b", &["10.0.0.1"][..], "not a host name"),
            ("*.*.x", &["10.0.0.1"][..], "not a host name"),
            ("ok.test", &[][..], "has no address"),
            ("ok.test", &["10.0.0.300"][..], "is not an IP address"),
        ] {
            let e = hosts(&[(name, addrs)]).unwrap_err();
            assert!(e.contains(want), "{name:?}: {e}");
        }
    }
}
