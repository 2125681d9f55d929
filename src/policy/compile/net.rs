//! Client networks: CIDR text parsed, and kept as address and mask integers for matching.

use std::net::IpAddr;

use ipnet::IpNet;

/// A client network as address and mask integers: `contains` is one AND and one compare
/// (`IpNet::contains` costs several times that, and rules are walked for every request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::policy) enum Net {
    V4 { net: u32, mask: u32 },
    V6 { net: u128, mask: u128 },
}

impl From<IpNet> for Net {
    fn from(n: IpNet) -> Net {
        match n {
            IpNet::V4(n) => Net::V4 {
                net: u32::from(n.network()),
                mask: u32::from(n.netmask()),
            },
            IpNet::V6(n) => Net::V6 {
                net: u128::from(n.network()),
                mask: u128::from(n.netmask()),
            },
        }
    }
}

impl Net {
    /// `ip` must already have IPv4-mapped IPv6 addresses turned into IPv4.
    pub(in crate::policy) fn contains(self, ip: IpAddr) -> bool {
        match (self, ip) {
            (Net::V4 { net, mask }, IpAddr::V4(a)) => u32::from(a) & mask == net,
            (Net::V6 { net, mask }, IpAddr::V6(a)) => u128::from(a) & mask == net,
            _ => false,
        }
    }
}

/// A CIDR network or a single address, host bits cleared.
pub(super) fn parse_net(s: &str) -> Result<IpNet, String> {
    s.trim()
        .parse::<IpNet>()
        .or_else(|_| s.trim().parse::<IpAddr>().map(IpNet::from))
        .map(|n| n.trunc())
        .map_err(|_| {
            format!("{s:?} is not a network (expected CIDR such as 10.0.0.0/8, or an address)")
        })
}
