//! Proxy auto-config: the `/proxy.pac` and `/wpad.dat` pages, generated from the `pac:`
//! section of the configuration.
//!
//! Browsers (and WPAD discovery) fetch a small JavaScript file whose `FindProxyForURL(url,
//! host)` says where each request goes. Ours sends everything through this proxy except the
//! `pac.bypass` entries (intranet names and networks), which go `DIRECT`.
//!
//! The file is code that every browser of the organisation runs, so nothing from the
//! configuration reaches it unchecked: [`PacConfig::parse`] accepts only host names made of
//! letters, digits, `-`, `_` and `.`, IPv4 networks and a `host:port` proxy address, all at
//! config load (an error names the entry), and every value is written as a JSON string
//! literal (a valid JavaScript string literal) rather than pasted into the code. The request
//! `Host` used when the proxy listens on an unspecified address goes through the same check.
//!
//! Networks match IP-literal hosts only (`isInNet` on an address, no DNS lookup in the
//! browser): list intranet names by domain.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use ipnet::Ipv4Net;

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

    /// The PAC file sending everything but the bypass entries through `proxy`
    /// (`host:port`, checked by [`PacConfig::parse`] or [`PacConfig::proxy_for`]).
    pub fn render(&self, proxy: &str) -> String {
        let mut hosts = Vec::new();
        let mut domains = Vec::new();
        let mut subdomains = Vec::new();
        let mut nets = Vec::new();
        let mut plain = false;
        for b in &self.bypass {
            match b {
                Bypass::Plain => plain = true,
                Bypass::Host(h) => hosts.push(js_string(h)),
                Bypass::Domain(d) => domains.push(js_string(d)),
                Bypass::Subdomains(d) => subdomains.push(js_string(d)),
                Bypass::Net(n) => nets.push(format!(
                    "[{}, {}]",
                    js_string(&n.network().to_string()),
                    js_string(&n.netmask().to_string())
                )),
            }
        }
        let route = if self.direct_fallback {
            format!("PROXY {proxy}; DIRECT")
        } else {
            format!("PROXY {proxy}")
        };
        let mut js = String::new();
        js.push_str(
            "// Proxy auto-config generated by webrep from the pac section of its configuration.\n\
             // Everything goes through the proxy except the hosts and networks below.\n\
             function FindProxyForURL(url, host) {\n",
        );
        let _ = writeln!(js, "  var proxy = {};", js_string(&route));
        let _ = writeln!(js, "  var plain = {plain};");
        let _ = writeln!(js, "  var hosts = [{}];", hosts.join(", "));
        let _ = writeln!(js, "  var domains = [{}];", domains.join(", "));
        let _ = writeln!(js, "  var subdomains = [{}];", subdomains.join(", "));
        let _ = writeln!(js, "  var nets = [{}];", nets.join(", "));
        js.push_str(
            "  var i;\n\
             \x20 host = host.toLowerCase();\n\
             \x20 if (host.charAt(host.length - 1) == \".\") host = host.substring(0, host.length - 1);\n\
             \x20 if (plain && isPlainHostName(host)) return \"DIRECT\";\n\
             \x20 for (i = 0; i < hosts.length; i++) {\n\
             \x20   if (host == hosts[i]) return \"DIRECT\";\n\
             \x20 }\n\
             \x20 for (i = 0; i < domains.length; i++) {\n\
             \x20   if (host == domains[i] || dnsDomainIs(host, \".\" + domains[i])) return \"DIRECT\";\n\
             \x20 }\n\
             \x20 for (i = 0; i < subdomains.length; i++) {\n\
             \x20   if (dnsDomainIs(host, \".\" + subdomains[i])) return \"DIRECT\";\n\
             \x20 }\n\
             \x20 // Networks match IPv4 literals only: no DNS lookup in the browser.\n\
             \x20 if (/^[0-9]+\\.[0-9]+\\.[0-9]+\\.[0-9]+$/.test(host)) {\n\
             \x20   for (i = 0; i < nets.length; i++) {\n\
             \x20     if (isInNet(host, nets[i][0], nets[i][1])) return \"DIRECT\";\n\
             \x20   }\n\
             \x20 }\n\
             \x20 return proxy;\n\
             }\n",
        );
        js
    }
}

/// A JavaScript string literal for `s` (JSON's escaping is valid JavaScript).
fn js_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// A host name: letters, digits, `-`, `_`, dots between labels; lowercased, trailing dot
/// dropped. Or an IPv4 address.
fn parse_host(s: &str) -> Option<String> {
    let h = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
    let ok = !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    ok.then_some(h)
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

    #[test]
    fn render_quotes_every_value() {
        let p = PacConfig::parse(Some("proxy.corp:3128"), &[".corp.example".into()], true).unwrap();
        let js = p.render("proxy.corp:3128");
        assert!(
            js.contains("var proxy = \"PROXY proxy.corp:3128; DIRECT\";"),
            "{js}"
        );
        assert!(js.contains("var domains = [\"corp.example\"];"), "{js}");
        assert!(js.contains("function FindProxyForURL(url, host)"), "{js}");
    }
}
