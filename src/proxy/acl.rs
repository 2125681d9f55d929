//! Who may use the proxy and where it may connect to.
//!
//! [`ClientAcl`] is checked once per accepted connection against the configured client
//! networks. [`DestinationPolicy`] is checked for every address the proxy is about to
//! connect to, after DNS resolution, so that a host name resolving to `127.0.0.1` or to the
//! cloud metadata address is refused exactly like the literal address (the SSRF and
//! DNS-rebinding cases).
//!
//! # IPv6 addresses that carry an IPv4 address
//! Several IPv6 forms deliver to (or on behalf of) an IPv4 address written inside them. Each
//! such address is checked as itself *and* as the IPv4 address it carries, so that
//! `[::ffff:127.0.0.1]`, `[::127.0.0.1]` or `[64:ff9b::a9fe:a9fe]` are refused like
//! `127.0.0.1` and `169.254.169.254`, and a `refuse` network such as `10.0.0.0/8` covers its
//! IPv6 spellings too ([`embedded_ipv4`]):
//! - IPv4-mapped `::ffff:0:0/96` and the deprecated IPv4-compatible `::/96` (RFC 4291): the
//!   last 32 bits;
//! - NAT64's well-known prefix `64:ff9b::/96` (RFC 6052): the last 32 bits;
//! - 6to4 `2002::/16` (RFC 3056): bits 16 to 47;
//! - Teredo `2001::/32` (RFC 4380): the server (bits 32 to 63) and the client, whose address
//!   is stored inverted in the last 32 bits.
//!
//! The local-use NAT64 prefix `64:ff9b:1::/48` (RFC 8215) places the IPv4 address where the
//! operator's prefix length says, which the proxy cannot know: the whole prefix is in the
//! internal set instead (a site's own translator, like a private network).
//!
//! # Own listeners
//! The proxy never connects to a port it listens on (its proxy ports, the admin listener,
//! the embedded reputation server) at any address of its own host: loopback, the
//! unspecified address (`0.0.0.0` and `::` reach the local host), the bound addresses and
//! every address of the host's interfaces, read from the system (`getifaddrs`) at the
//! moment of the check, so that an address added later is covered. Only a destination on
//! one of those ports pays for that read (one netlink round trip to the kernel, no I/O
//! beyond it); the rule holds with
//! `destinations.allow_internal` too, so a client cannot make the proxy open a tunnel into
//! itself. It is deliberately wider than "would reach our socket": another service on the
//! same host and the same port number is refused too.
//!
//! Cost: pure lookups over small vectors, tens of nanoseconds per address.

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
    /// Loopback, link-local, cloud metadata, unspecified, broadcast or multicast.
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

/// The networks the proxy never connects to unless `destinations.allow_internal` is set:
/// loopback, unspecified, link-local (where most clouds serve instance metadata, at
/// 169.254.169.254), the metadata addresses outside link-local (AWS's IPv6
/// `fd00:ec2::254`, Alibaba's `100.100.100.200`, Azure's WireServer `168.63.129.16`,
/// Oracle's legacy `192.0.0.192`), the local-use NAT64 prefix, broadcast and multicast.
/// Carrier-grade NAT space (`100.64.0.0/10`) as a whole is not in it: it holds real
/// destinations on some networks (VPN overlays, ISP services); `refuse` can add it.
pub fn internal_networks() -> Vec<IpNet> {
    [
        "127.0.0.0/8",
        "0.0.0.0/8",
        "169.254.0.0/16",
        "100.100.100.200/32",
        "168.63.129.16/32",
        "192.0.0.192/32",
        "224.0.0.0/4",
        "255.255.255.255/32",
        "::1/128",
        "::/128",
        "fe80::/10",
        "fd00:ec2::254/128",
        "64:ff9b:1::/48",
        "ff00::/8",
    ]
    .iter()
    .map(|s| s.parse().expect("static network literal is valid"))
    .collect()
}

/// The IPv4 addresses an IPv6 address delivers to or on behalf of (see the module docs):
/// none for a plain IPv6 address, one for the mapped, compatible, NAT64 and 6to4 forms, two
/// (server, client) for Teredo.
pub fn embedded_ipv4(ip: Ipv6Addr) -> [Option<Ipv4Addr>; 2] {
    let o = ip.octets();
    let seg = ip.segments();
    let v4 = |b: &[u8]| Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]));
    let last = v4(&o[12..16]);
    if o[..10] == [0; 10] && (o[10..12] == [0xff, 0xff] || o[10..12] == [0, 0]) {
        // IPv4-mapped, IPv4-compatible (`::` and `::1` land in 0.0.0.0/8: refused too).
        [last, None]
    } else if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        [last, None]
    } else if seg[0] == 0x2002 {
        [v4(&o[2..6]), None]
    } else if seg[..2] == [0x2001, 0] {
        let client = Ipv4Addr::from(!u32::from_be_bytes([o[12], o[13], o[14], o[15]]));
        [v4(&o[4..8]), Some(client)]
    } else {
        [None, None]
    }
}

/// Where the host's interface addresses come from.
#[derive(Debug, Clone)]
enum Interfaces {
    /// Read from the system at each check that needs them.
    System,
    /// A fixed list (unit tests).
    #[cfg_attr(not(test), allow(dead_code))]
    Fixed(Vec<IpAddr>),
}

impl Interfaces {
    fn contains(&self, ip: IpAddr) -> bool {
        match self {
            Interfaces::Fixed(v) => v.contains(&ip),
            Interfaces::System => match if_addrs::get_if_addrs() {
                Ok(all) => all.iter().any(|i| i.ip().to_canonical() == ip),
                Err(e) => {
                    // Unknown: refuse, the safe side for the ports we listen on.
                    tracing::warn!(error = %e, "cannot list the host's addresses");
                    true
                }
            },
        }
    }
}

/// The host's interface addresses, as the own-listener check reads them.
///
/// # Errors
/// The system call failed.
pub fn interface_addresses() -> std::io::Result<Vec<IpAddr>> {
    Ok(if_addrs::get_if_addrs()?.iter().map(|i| i.ip()).collect())
}

/// Where the proxy refuses to connect.
#[derive(Debug, Clone)]
pub struct DestinationPolicy {
    /// The proxy listeners (absolute-form requests to them get the proxy's own pages).
    proxy: Vec<SocketAddr>,
    /// The other sockets of this process: the admin listener, the embedded reputation server.
    others: Vec<SocketAddr>,
    interfaces: Interfaces,
    internal: Vec<IpNet>,
    refused: Vec<IpNet>,
}

impl DestinationPolicy {
    /// `proxy` are the proxy's bound listen addresses and `others` the process's other
    /// listening sockets (admin, embedded reputation server); `allow_internal` lifts the
    /// built-in internal set (never the own-listener rule); `refused` are extra networks.
    pub fn new(
        proxy: Vec<SocketAddr>,
        others: Vec<SocketAddr>,
        allow_internal: bool,
        refused: Vec<IpNet>,
    ) -> Self {
        Self {
            proxy,
            others,
            interfaces: Interfaces::System,
            internal: if allow_internal {
                Vec::new()
            } else {
                internal_networks()
            },
            refused,
        }
    }

    /// Checks one resolved address, in each of its forms (itself and the IPv4 addresses it
    /// carries).
    pub fn check(&self, addr: SocketAddr) -> Result<(), Refusal> {
        let ip = addr.ip().to_canonical();
        let embedded = match ip {
            IpAddr::V6(v6) => embedded_ipv4(v6),
            IpAddr::V4(_) => [None, None],
        };
        let forms = || std::iter::once(ip).chain(embedded.into_iter().flatten().map(IpAddr::V4));
        if forms().any(|f| self.is_own(f, addr.port())) {
            return Err(Refusal::OwnListener);
        }
        if forms().any(|f| self.internal.iter().any(|n| n.contains(&f))) {
            return Err(Refusal::Internal);
        }
        if forms().any(|f| self.refused.iter().any(|n| n.contains(&f))) {
            return Err(Refusal::Configured);
        }
        Ok(())
    }

    /// Is `ip:port` one of the proxy listeners, at an address of this host? (Absolute-form
    /// requests there are for the proxy's own pages.)
    pub fn is_own_listener(&self, ip: IpAddr, port: u16) -> bool {
        self.proxy.iter().any(|l| l.port() == port) && self.is_local(ip.to_canonical())
    }

    /// Is `ip:port` any listening socket of this process, at an address of this host?
    fn is_own(&self, ip: IpAddr, port: u16) -> bool {
        self.proxy
            .iter()
            .chain(&self.others)
            .any(|l| l.port() == port)
            && self.is_local(ip)
    }

    /// Does `ip` (canonical) reach this host?
    fn is_local(&self, ip: IpAddr) -> bool {
        ip.is_loopback()
            || ip.is_unspecified()
            || self
                .proxy
                .iter()
                .chain(&self.others)
                .any(|l| l.ip().to_canonical() == ip)
            || self.interfaces.contains(ip)
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

    fn policy(own: &[&str], others: &[&str], allow_internal: bool) -> DestinationPolicy {
        let mut p = DestinationPolicy::new(
            own.iter().map(|a| sa(a)).collect(),
            others.iter().map(|a| sa(a)).collect(),
            allow_internal,
            vec![],
        );
        p.interfaces = Interfaces::Fixed(vec![
            "127.0.0.1".parse().unwrap(),
            "192.0.2.7".parse().unwrap(),
            "2001:db8::7".parse().unwrap(),
        ]);
        p
    }

    #[test]
    fn internal_destinations_are_refused_by_default() {
        let p = policy(&["127.0.0.1:3128"], &[], false);
        for a in [
            "127.0.0.1:80",
            "127.9.9.9:80",
            "169.254.169.254:80",
            "[::1]:80",
            "[::ffff:127.0.0.1]:80",
            "[fe80::1]:80",
            "0.0.0.0:80",
            "224.0.0.1:80",
            // Cloud metadata outside link-local.
            "[fd00:ec2::254]:80",
            "100.100.100.200:80",
            "168.63.129.16:80",
            "192.0.0.192:80",
            // The local-use NAT64 prefix, whatever its layout.
            "[64:ff9b:1::a]:80",
        ] {
            assert_eq!(p.check(sa(a)), Err(Refusal::Internal), "{a}");
        }
        assert_eq!(p.check(sa("192.0.2.1:80")), Ok(()));
        assert_eq!(
            p.check(sa("100.64.0.1:80")),
            Ok(()),
            "CGNAT space is not internal"
        );
    }

    #[test]
    fn ipv6_forms_of_a_refused_ipv4_address_are_refused_like_it() {
        let p = policy(&["127.0.0.1:3128"], &[], false);
        for a in [
            "[::127.0.0.1]:80",
            "[::ffff:127.0.0.1]:80",
            "[64:ff9b::127.0.0.1]:80",
            "[64:ff9b::a9fe:a9fe]:80",
            // 6to4 of 127.0.0.1 and of 169.254.169.254.
            "[2002:7f00:1::1]:80",
            "[2002:a9fe:a9fe::]:80",
            // Teredo: server 192.0.2.1, client 127.0.0.1 stored inverted.
            "[2001:0:c000:201::80ff:fffe]:80",
            // Teredo whose server is a metadata address.
            "[2001:0:a9fe:a9fe::3fff:fffe]:80",
        ] {
            assert_eq!(p.check(sa(a)), Err(Refusal::Internal), "{a}");
        }
        // The same forms of a public address are fine.
        for a in [
            "[64:ff9b::c000:201]:80",
            "[2002:c000:201::1]:80",
            "[2001:0:c000:201::3fff:fdfe]:80",
            "[2001:db8::1]:80",
        ] {
            assert_eq!(p.check(sa(a)), Ok(()), "{a}");
        }
        // A configured network covers its IPv6 spellings.
        let p = DestinationPolicy::new(vec![], vec![], true, vec!["10.0.0.0/8".parse().unwrap()]);
        for a in [
            "[::ffff:10.1.2.3]:80",
            "[64:ff9b::10.1.2.3]:80",
            "[2002:a01:203::]:80",
        ] {
            assert_eq!(p.check(sa(a)), Err(Refusal::Configured), "{a}");
        }
    }

    #[test]
    fn embedded_ipv4_reads_each_form() {
        let v6 = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        let v4 = |s: &str| Some(s.parse::<Ipv4Addr>().unwrap());
        assert_eq!(embedded_ipv4(v6("::ffff:1.2.3.4")), [v4("1.2.3.4"), None]);
        assert_eq!(embedded_ipv4(v6("::1.2.3.4")), [v4("1.2.3.4"), None]);
        assert_eq!(embedded_ipv4(v6("64:ff9b::1.2.3.4")), [v4("1.2.3.4"), None]);
        assert_eq!(
            embedded_ipv4(v6("2002:102:304:5::6")),
            [v4("1.2.3.4"), None]
        );
        assert_eq!(
            embedded_ipv4(v6("2001:0:4136:e378:8000:63bf:3fff:fdd2")),
            [v4("65.54.227.120"), v4("192.0.2.45")],
            "the RFC 4380 example"
        );
        assert_eq!(embedded_ipv4(v6("2001:db8::1")), [None, None]);
        assert_eq!(embedded_ipv4(v6("fd00::1")), [None, None]);
    }

    #[test]
    fn the_switch_allows_internal_but_never_our_own_listeners_at_any_local_address() {
        let p = policy(&["127.0.0.1:3128"], &["127.0.0.1:9129"], true);
        assert_eq!(p.check(sa("127.0.0.1:80")), Ok(()));
        assert_eq!(p.check(sa("192.0.2.7:80")), Ok(()));
        for a in [
            "127.0.0.1:3128",
            "[::ffff:127.0.0.1]:3128",
            "[::127.0.0.1]:3128",
            "[64:ff9b::127.0.0.1]:3128",
            // Every address that reaches this host, on any of our ports.
            "0.0.0.0:3128",
            "[::]:3128",
            "127.0.0.2:3128",
            "[::1]:3128",
            "192.0.2.7:3128",
            "[2001:db8::7]:3128",
            // The admin listener too.
            "127.0.0.1:9129",
            "0.0.0.0:9129",
        ] {
            assert_eq!(p.check(sa(a)), Err(Refusal::OwnListener), "{a}");
        }
        // Another host on our port number is someone else.
        assert_eq!(p.check(sa("192.0.2.8:3128")), Ok(()));
        // Only proxy listeners serve the proxy's pages; the admin port is refused instead.
        assert!(p.is_own_listener("0.0.0.0".parse().unwrap(), 3128));
        assert!(!p.is_own_listener("127.0.0.1".parse().unwrap(), 9129));
    }

    #[test]
    fn the_system_interfaces_include_loopback() {
        let all = interface_addresses().unwrap();
        assert!(all.contains(&"127.0.0.1".parse().unwrap()), "{all:?}");
        let p = DestinationPolicy::new(vec![sa("127.0.0.1:3128")], vec![], true, vec![]);
        for ip in all {
            assert_eq!(
                p.check(SocketAddr::new(ip, 3128)),
                Err(Refusal::OwnListener),
                "{ip}"
            );
        }
    }

    #[test]
    fn configured_networks_are_refused() {
        let p = DestinationPolicy::new(vec![], vec![], true, vec!["10.0.0.0/8".parse().unwrap()]);
        assert_eq!(p.check(sa("10.9.9.9:443")), Err(Refusal::Configured));
    }

    #[test]
    fn ip_literals_parse_with_and_without_brackets() {
        assert_eq!(ip_literal("[::1]"), Some("::1".parse().unwrap()));
        assert_eq!(ip_literal("192.0.2.1"), Some("192.0.2.1".parse().unwrap()));
        assert_eq!(ip_literal("example.com"), None);
    }
}
