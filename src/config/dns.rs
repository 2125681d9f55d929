//! The proxy's name resolution settings: `proxy.hosts` ([`StaticHosts`], names answered from
//! config before the system resolver) and the DNS cache ([`DnsCacheConfig`]).
//!
//! Part of the `proxy:` section; the proxy's dialer uses both. Pure data and lookups, no I/O.
//! A bad entry fails the load with a message naming it (an empty or malformed name, a name
//! without addresses, an address that is not an IP literal), and so does a DNS cache of no
//! names.

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

/// `proxy.dns_cache_ttl_ms`, `proxy.dns_negative_ttl_ms` and `proxy.dns_cache_max_names`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsCacheConfig {
    /// How long an answer is used; zero turns the cache off.
    pub ttl: Duration,
    /// How long a failed lookup is remembered (zero: not at all).
    pub negative_ttl: Duration,
    /// Most names kept.
    pub max_names: u64,
}

impl TryFrom<&RawProxyConfig> for DnsCacheConfig {
    type Error = InvalidValue;

    fn try_from(p: &RawProxyConfig) -> Result<Self, InvalidValue> {
        if p.dns_cache_max_names == 0 {
            return Err(InvalidValue::new(
                "proxy.dns_cache_max_names",
                "must be greater than 0 (dns_cache_ttl_ms: 0 turns the cache off)",
            ));
        }
        Ok(Self {
            ttl: Duration::from_millis(p.dns_cache_ttl_ms),
            negative_ttl: Duration::from_millis(p.dns_negative_ttl_ms),
            max_names: p.dns_cache_max_names,
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
}
