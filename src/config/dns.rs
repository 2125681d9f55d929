//! The proxy's name resolution settings: `proxy.hosts` ([`StaticHosts`], names answered from
//! config before any resolver) and the resolver with its cache ([`DnsCacheConfig`]).
//!
//! Part of the `proxy:` section; the proxy's dialer uses both. Pure data and lookups, no I/O.
//! A bad entry fails the load with a message naming it (an empty or malformed name, a name
//! without addresses, an address that is not an IP literal), and so does a DNS cache of no
//! bytes, an unknown resolver, or a name server that is not an address.

use std::time::Duration;

use super::check::{DEFAULTS_ARE_VALID, InvalidValue};
use super::raw::RawProxyConfig;

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

/// `proxy.dns_resolver`: who answers names that `proxy.hosts` does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolverKind {
    /// The asynchronous DNS stub resolver, answers kept for their record TTL.
    Hickory,
    /// `getaddrinfo`, answers kept for the fixed `dns_cache_ttl_ms`.
    System,
}

/// The `proxy.dns_*` keys: the resolver and its cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsCacheConfig {
    pub resolver: ResolverKind,
    /// `dns_nameservers`: empty for the system's (`/etc/resolv.conf`).
    pub nameservers: Vec<std::net::SocketAddr>,
    /// How long a `system` answer is used; zero turns the cache off for either resolver.
    pub ttl: Duration,
    /// How long a failure without a TTL is remembered (zero: not at all).
    pub negative_ttl: Duration,
    /// Memory the cache may use, in bytes (never 0).
    pub max_bytes: u64,
    /// Clamps of a record's TTL.
    pub min_ttl: Duration,
    pub max_ttl: Duration,
    /// Upper clamp of a negative answer's SOA TTL.
    pub negative_max_ttl: Duration,
    /// Per query, and how many times a timed-out query is sent again.
    pub timeout: Duration,
    pub attempts: usize,
    /// The config sets the deprecated `dns_cache_max_names` (ignored; the proxy warns).
    pub sets_max_names: bool,
}

impl DnsCacheConfig {
    /// How long an answer whose records say `ttl` is kept: `ttl` clamped to the configured
    /// bounds.
    pub fn answer_ttl(&self, ttl: Duration) -> Duration {
        ttl.clamp(self.min_ttl, self.max_ttl.max(self.min_ttl))
    }

    /// How long a failure is kept: the negative answer's SOA TTL clamped to the configured
    /// bounds, or `dns_negative_ttl_ms` when it has none (a timeout, a server failure).
    pub fn failure_ttl(&self, soa_ttl: Option<Duration>) -> Duration {
        match soa_ttl {
            Some(t) => t.clamp(self.min_ttl, self.negative_max_ttl.max(self.min_ttl)),
            None => self.negative_ttl,
        }
    }
}

/// `ip` or `ip:port` (port 53), `[v6]:port` for IPv6 with a port.
fn nameserver(s: &str) -> Option<std::net::SocketAddr> {
    s.parse::<std::net::SocketAddr>().ok().or_else(|| {
        s.parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| std::net::SocketAddr::new(ip, 53))
    })
}

impl TryFrom<&RawProxyConfig> for DnsCacheConfig {
    type Error = InvalidValue;

    fn try_from(p: &RawProxyConfig) -> Result<Self, InvalidValue> {
        let resolver = match p.dns_resolver.as_str() {
            "hickory" => ResolverKind::Hickory,
            "system" => ResolverKind::System,
            other => {
                return Err(InvalidValue::new(
                    "proxy.dns_resolver",
                    format!("{other:?} is neither \"hickory\" nor \"system\""),
                ));
            }
        };
        let nameservers = p
            .dns_nameservers
            .iter()
            .map(|s| {
                nameserver(s).ok_or_else(|| {
                    InvalidValue::new(
                        "proxy.dns_nameservers",
                        format!("{s:?} is not an ip or ip:port"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if resolver == ResolverKind::System && !nameservers.is_empty() {
            return Err(InvalidValue::new(
                "proxy.dns_nameservers",
                "needs dns_resolver: hickory (the system resolver reads /etc/resolv.conf)",
            ));
        }
        if p.dns_cache_bytes == 0 {
            return Err(InvalidValue::new(
                "proxy.dns_cache_bytes",
                "must be greater than 0 (dns_cache_ttl_ms: 0 turns the cache off)",
            ));
        }
        if p.dns_min_ttl_ms > p.dns_max_ttl_ms {
            return Err(InvalidValue::new(
                "proxy.dns_min_ttl_ms",
                "is greater than dns_max_ttl_ms",
            ));
        }
        if p.dns_timeout_ms == 0 {
            return Err(InvalidValue::new(
                "proxy.dns_timeout_ms",
                "must be greater than 0",
            ));
        }
        if p.dns_attempts > 10 {
            return Err(InvalidValue::new("proxy.dns_attempts", "is more than 10"));
        }
        Ok(Self {
            resolver,
            nameservers,
            ttl: Duration::from_millis(p.dns_cache_ttl_ms),
            negative_ttl: Duration::from_millis(p.dns_negative_ttl_ms),
            max_bytes: p.dns_cache_bytes,
            min_ttl: Duration::from_millis(p.dns_min_ttl_ms),
            max_ttl: Duration::from_millis(p.dns_max_ttl_ms),
            negative_max_ttl: Duration::from_millis(p.dns_negative_max_ttl_ms),
            timeout: Duration::from_millis(p.dns_timeout_ms),
            attempts: p.dns_attempts,
            sets_max_names: p.dns_cache_max_names != RawProxyConfig::default().dns_cache_max_names,
        })
    }
}

/// The settings of the built-in `proxy:` defaults.
impl Default for DnsCacheConfig {
    fn default() -> Self {
        Self::try_from(&RawProxyConfig::default()).expect(DEFAULTS_ARE_VALID)
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

    #[test]
    fn older_dns_keys_still_load_and_name_servers_take_a_port() {
        let p = RawProxyConfig {
            dns_cache_max_names: 50_000,
            dns_cache_ttl_ms: 60_000,
            dns_nameservers: vec![
                "10.0.0.53".into(),
                "127.0.0.1:5353".into(),
                "[::1]:53".into(),
            ],
            ..RawProxyConfig::default()
        };
        let c = DnsCacheConfig::try_from(&p).unwrap();
        assert_eq!(c.ttl, Duration::from_secs(60));
        assert!(c.sets_max_names);
        assert!(!DnsCacheConfig::default().sets_max_names);
        assert_eq!(
            c.nameservers,
            ["10.0.0.53:53", "127.0.0.1:5353", "[::1]:53"]
                .map(|a| a.parse::<std::net::SocketAddr>().unwrap())
        );
        let sys = RawProxyConfig {
            dns_resolver: "system".into(),
            ..RawProxyConfig::default()
        };
        assert_eq!(
            DnsCacheConfig::try_from(&sys).unwrap().resolver,
            ResolverKind::System
        );
    }
}
