//! Who may use the proxy and where it may connect to.
//!
//! [`ClientAcl`] is checked once per accepted connection against the configured client
//! networks. [`DestinationPolicy`] is checked for every address the proxy is about to
//! connect to, after DNS resolution, so that a host name resolving to `127.0.0.1` or to the
//! cloud metadata address is refused exactly like the literal address (the SSRF and
//! DNS-rebinding cases). Both are pure lookups over small vectors: tens of nanoseconds.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

/// Allowed client networks.
#[derive(Debug, Clone)]
pub struct ClientAcl {
    nets: Vec<IpNet>,
}

impl ClientAcl {
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self { nets }
    }

    /// Is a client at `ip` allowed? IPv4-mapped IPv6 addresses are treated as IPv4.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

/// Why a destination address was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// One of the proxy's own listening sockets.
    OwnListener,
    /// Loopback, link-local (incl. cloud metadata), unspecified, broadcast or multicast.
    Internal,
    /// A network in `proxy.destinations.refuse`.
    Configured,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::OwnListener => "the proxy's own listening address",
            Refusal::Internal => "an internal address (loopback, link-local or metadata)",
            Refusal::Configured => "a refused destination network",
        }
    }
}

/// The networks the proxy never connects to unless `destinations.allow_internal` is set.
pub fn internal_networks() -> Vec<IpNet> {
    [
        "127.0.0.0/8",
        "0.0.0.0/8",
        "169.254.0.0/16",
        "224.0.0.0/4",
        "255.255.255.255/32",
        "::1/128",
        "::/128",
        "fe80::/10",
        "ff00::/8",
    ]
    .iter()
    .map(|s| s.parse().expect("static network literal is valid"))
    .collect()
}

/// Where the proxy refuses to connect.
#[derive(Debug, Clone)]
pub struct DestinationPolicy {
    own: Vec<SocketAddr>,
    internal: Vec<IpNet>,
    refused: Vec<IpNet>,
}

impl DestinationPolicy {
    /// `own` are the proxy's bound listen addresses; `allow_internal` lifts the built-in
    /// internal set (never the own-listener rule); `refused` are extra networks.
    pub fn new(own: Vec<SocketAddr>, allow_internal: bool, refused: Vec<IpNet>) -> Self {
        Self {
            own,
            internal: if allow_internal {
                Vec::new()
            } else {
                internal_networks()
            },
            refused,
        }
    }

    /// Checks one resolved address.
    pub fn check(&self, addr: SocketAddr) -> Result<(), Refusal> {
        let ip = addr.ip().to_canonical();
        if self.is_own_listener(ip, addr.port()) {
            return Err(Refusal::OwnListener);
        }
        if self.internal.iter().any(|n| n.contains(&ip)) {
            return Err(Refusal::Internal);
        }
        if self.refused.iter().any(|n| n.contains(&ip)) {
            return Err(Refusal::Configured);
        }
        Ok(())
    }

    /// Is `ip:port` one of our own listeners? A listener on an unspecified address
    /// (`0.0.0.0`, `::`) matches loopback and unspecified targets on its port.
    pub fn is_own_listener(&self, ip: IpAddr, port: u16) -> bool {
        let ip = ip.to_canonical();
        self.own.iter().any(|l| {
            l.port() == port
                && (l.ip().to_canonical() == ip
                    || (l.ip().is_unspecified() && (ip.is_loopback() || ip.is_unspecified())))
        })
    }
}

/// Parses the host part of a URI authority as an IP literal (`[::1]` brackets allowed).
pub fn ip_literal(host: &str) -> Option<IpAddr> {
    let h = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    h.parse::<Ipv4Addr>()
        .map(IpAddr::V4)
        .or_else(|_| h.parse::<Ipv6Addr>().map(IpAddr::V6))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn clients_outside_the_networks_are_refused() {
        let acl = ClientAcl::new(vec!["10.0.0.0/8".parse().unwrap()]);
        assert!(acl.allows("10.1.2.3".parse().unwrap()));
        assert!(acl.allows("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!acl.allows("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn internal_destinations_are_refused_by_default() {
        let p = DestinationPolicy::new(vec![sa("127.0.0.1:3128")], false, vec![]);
        for a in [
            "127.0.0.1:80",
            "127.9.9.9:80",
            "169.254.169.254:80",
            "[::1]:80",
            "[::ffff:127.0.0.1]:80",
            "[fe80::1]:80",
            "0.0.0.0:80",
            "224.0.0.1:80",
        ] {
            assert_eq!(p.check(sa(a)), Err(Refusal::Internal), "{a}");
        }
        assert_eq!(p.check(sa("192.0.2.1:80")), Ok(()));
    }

    #[test]
    fn the_switch_allows_internal_but_never_our_own_listener() {
        let p = DestinationPolicy::new(vec![sa("0.0.0.0:3128")], true, vec![]);
        assert_eq!(p.check(sa("127.0.0.1:80")), Ok(()));
        assert_eq!(p.check(sa("127.0.0.1:3128")), Err(Refusal::OwnListener));
        assert_eq!(
            p.check(sa("[::ffff:127.0.0.1]:3128")),
            Err(Refusal::OwnListener)
        );
    }

    #[test]
    fn configured_networks_are_refused() {
        let p = DestinationPolicy::new(vec![], true, vec!["10.0.0.0/8".parse().unwrap()]);
        assert_eq!(p.check(sa("10.9.9.9:443")), Err(Refusal::Configured));
    }

    #[test]
    fn ip_literals_parse_with_and_without_brackets() {
        assert_eq!(ip_literal("[::1]"), Some("::1".parse().unwrap()));
        assert_eq!(ip_literal("192.0.2.1"), Some("192.0.2.1".parse().unwrap()));
        assert_eq!(ip_literal("example.com"), None);
    }
}
