//! The validated `pac:` section: what the proxy auto-config file (`/proxy.pac`,
//! `/wpad.dat`) names as the proxy and which hosts and networks it sends `DIRECT`.
//!
//! The file is code that every browser of the organisation runs, so nothing from the
//! configuration reaches it unchecked: [`PacConfig::parse`] accepts only host names made of
//! letters, digits, `-`, `_` and `.`, IPv4 networks and a `host:port` proxy address, and
//! fails the load with the key (`pac.proxy` or `pac.bypass`) and the first bad entry. The
//! request `Host` used when the proxy listens on an unspecified address goes through the same
//! check ([`PacConfig::proxy_for`]). The proxy's own pages render the file from this.

use std::net::{IpAddr, SocketAddr};

use ipnet::Ipv4Net;

use super::check::InvalidValue;
use super::raw::RawPacConfig;

/// One `pac.bypass` entry: what goes `DIRECT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bypass {
    /// `<local>`: plain host names (no dot), such as `intranet`.
    Plain,
    /// `host.corp`: exactly this host.
    Host(String),
    /// `.corp.example`: this domain and every name under it. Holds the name without the dot.
    Domain(String),
    /// `*.corp.example`: every name under this domain, not the domain itself. Holds the name
    /// without `*.`.
    Subdomains(String),
    /// `10.0.0.0/8` (or an address): IP-literal hosts in this network.
    Net(Ipv4Net),
}

/// The validated `pac:` section.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PacConfig {
    /// `host:port` the file names; `None`: the proxy's first listen address (or, when that is
    /// unspecified, the host the browser fetched the file from, with that listener's port).
    pub proxy: Option<String>,
    pub bypass: Vec<Bypass>,
    /// `PROXY host:port; DIRECT`: browsers go direct while the proxy is unreachable.
    pub direct_fallback: bool,
}

impl PacConfig {
    /// Validates the raw `pac:` section.
    ///
    /// # Errors
    /// The key (`pac.proxy` or `pac.bypass`) and a message naming the first bad entry.
    pub fn parse(
        proxy: Option<&str>,
        bypass: &[String],
        direct_fallback: bool,
    ) -> Result<Self, (&'static str, String)> {
        let proxy = match proxy {
            None => None,
            Some(p) => Some(parse_proxy(p).ok_or_else(|| {
                (
                    "pac.proxy",
                    format!(
                        "{p:?} is not host:port (a host name, an IPv4 address or [IPv6], and a port)"
                    ),
                )
            })?),
        };
        let bypass = bypass
            .iter()
            .map(|e| parse_bypass(e).map_err(|m| ("pac.bypass", m)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            proxy,
            bypass,
            direct_fallback,
        })
    }

    /// The `host:port` to name in the file for a request that reached the proxy at `host`
    /// (its `Host` header or absolute-form authority, if any), given the bound listeners.
    pub fn proxy_for(&self, listeners: &[SocketAddr], host: Option<&str>) -> Option<String> {
        if let Some(p) = &self.proxy {
            return Some(p.clone());
        }
        let first = listeners.first()?;
        if !first.ip().is_unspecified() {
            return Some(first.to_string());
        }
        // Listening on every address: the name the browser used to reach us is the one that
        // works for it. Checked like a configured value.
        let host = host?;
        let name = match parse_proxy(host) {
            Some(hp) => hp.rsplit_once(':').map(|(h, _)| h.to_owned())?,
            None => parse_host(host)?,
        };
        Some(format!("{name}:{}", first.port()))
    }
}

impl TryFrom<RawPacConfig> for PacConfig {
    type Error = InvalidValue;

    fn try_from(raw: RawPacConfig) -> Result<Self, InvalidValue> {
        Self::parse(raw.proxy.as_deref(), &raw.bypass, raw.direct_fallback)
            .map_err(|(key, reason)| InvalidValue::new(key, reason))
    }
}

/// A host name: letters, digits, `-`, `_`, dots between labels; lowercased, trailing dot
/// dropped. Or an IPv4 address.
fn parse_host(s: &str) -> Option<String> {
    let h = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
    crate::canon::is_dns_name(&h, false).then_some(h)
}

/// `host:port` with a host name, an IPv4 address or a bracketed IPv6 address.
fn parse_proxy(s: &str) -> Option<String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return (addr.port() != 0).then(|| addr.to_string());
    }
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    if host.parse::<IpAddr>().is_ok() || host.starts_with('[') {
        return None;
    }
    Some(format!("{}:{port}", parse_host(host)?))
}

fn parse_bypass(e: &str) -> Result<Bypass, String> {
    let bad = || {
        format!(
            "{e:?}: expected a host (intranet.corp), a domain with everything under it \
             (.corp.example), only the names under a domain (*.corp.example), <local> (names \
             without a dot), or an IPv4 network (10.0.0.0/8)"
        )
    };
    if e == "<local>" {
        return Ok(Bypass::Plain);
    }
    if e.contains('/') || e.parse::<IpAddr>().is_ok() {
        let net = e
            .parse::<ipnet::IpNet>()
            .or_else(|_| e.parse::<IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| bad())?;
        return match net {
            ipnet::IpNet::V4(n) => Ok(Bypass::Net(n.trunc())),
            ipnet::IpNet::V6(_) => Err(format!(
                "{e:?}: PAC files match IPv4 networks only (isInNet); list IPv6 intranet \
                 hosts by name"
            )),
        };
    }
    if let Some(d) = e.strip_prefix("*.") {
        return parse_host(d).map(Bypass::Subdomains).ok_or_else(bad);
    }
    if let Some(d) = e.strip_prefix('.') {
        return parse_host(d).map(Bypass::Domain).ok_or_else(bad);
    }
    parse_host(e).map(Bypass::Host).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pac(bypass: &[&str]) -> Result<PacConfig, (&'static str, String)> {
        PacConfig::parse(
            None,
            &bypass.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            false,
        )
    }

    #[test]
    fn entries_parse_into_their_kinds() {
        let p = pac(&[
            "<local>",
            "Intranet.Corp.",
            ".corp.example",
            "*.lab.example",
            "10.1.2.3/8",
            "192.168.1.1",
        ])
        .unwrap();
        assert_eq!(
            p.bypass,
            vec![
                Bypass::Plain,
                Bypass::Host("intranet.corp".into()),
                Bypass::Domain("corp.example".into()),
                Bypass::Subdomains("lab.example".into()),
                Bypass::Net("10.0.0.0/8".parse().unwrap()),
                Bypass::Net("192.168.1.1/32".parse().unwrap()),
            ]
        );
    }

    #[test]
    fn injection_attempts_and_junk_are_refused() {
        for bad in [
            "a\"); return \"DIRECT",
            "a.b\n",
            "evil.com\"",
            "a b",
            "",
            ".",
            "*.",
            "a..b",
            "x/33",
            "10.0.0.0/33",
            "fd00::/8",
            "<script>",
            "ex*ample.com",
        ] {
            assert!(pac(&[bad]).is_err(), "{bad:?} was accepted");
        }
        for bad in [
            "a\";x:1",
            "host",
            "host:0",
            "host:99999",
            "ho\"st:80",
            "[::1:80",
            "0.0.0.0:0",
        ] {
            assert!(
                PacConfig::parse(Some(bad), &[], false).is_err(),
                "{bad:?} was accepted"
            );
        }
        assert_eq!(
            PacConfig::parse(Some("Proxy.Corp:3128"), &[], false)
                .unwrap()
                .proxy
                .as_deref(),
            Some("proxy.corp:3128")
        );
        assert_eq!(
            PacConfig::parse(Some("[::1]:3128"), &[], false)
                .unwrap()
                .proxy
                .as_deref(),
            Some("[::1]:3128")
        );
    }

    #[test]
    fn the_default_proxy_is_the_first_listener_or_the_requested_host() {
        let p = PacConfig::default();
        let l: SocketAddr = "10.0.0.5:3128".parse().unwrap();
        assert_eq!(p.proxy_for(&[l], None).as_deref(), Some("10.0.0.5:3128"));
        let any: SocketAddr = "0.0.0.0:3128".parse().unwrap();
        assert_eq!(
            p.proxy_for(&[any], Some("proxy.corp:3128")).as_deref(),
            Some("proxy.corp:3128")
        );
        assert_eq!(
            p.proxy_for(&[any], Some("Proxy.Corp")).as_deref(),
            Some("proxy.corp:3128")
        );
        assert_eq!(p.proxy_for(&[any], Some("a\";b")), None);
        assert_eq!(p.proxy_for(&[any], None), None);
    }
}
