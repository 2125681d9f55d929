//! Host rules: percent-unescape, IDN to punycode, trim and collapse dots, every numeric IPv4
//! form to dotted decimal, bracketed IPv6 to its RFC 5952 text (IPv4-mapped and NAT64 to the
//! IPv4 form), lowercase, escape.

use std::io::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::CanonError;
use super::escape::{self, HOST};

/// What kind of host a canonical URL has. Lookup expressions use host suffixes for domain
/// names only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostKind {
    /// A domain name (or anything else that is not an IP literal), lowercase, punycoded.
    Domain,
    /// An IPv4 address in dotted decimal; IPv4-mapped and NAT64 IPv6 addresses land here.
    Ipv4,
    /// A bracketed IPv6 address in RFC 5952 form, e.g. `[2001:db8::1]`.
    Ipv6,
}

impl HostKind {
    /// A stable lower-case name: `domain`, `ipv4` or `ipv6`.
    pub fn as_str(self) -> &'static str {
        match self {
            HostKind::Domain => "domain",
            HostKind::Ipv4 => "ipv4",
            HostKind::Ipv6 => "ipv6",
        }
    }
}

/// Whether `name` (lower-cased, without a trailing dot) has the shape of a DNS name: at most
/// 253 bytes, labels of 1 to 63 letters, digits, `-` or `_`, and `*` too when
/// `allow_wildcard` (certificate names). Used where a host name is configured or minted.
pub fn is_dns_name(name: &str, allow_wildcard: bool) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| {
                    b.is_ascii_alphanumeric()
                        || b == b'-'
                        || b == b'_'
                        || (allow_wildcard && b == b'*')
                })
        })
}

/// Canonicalizes the raw host bytes of a URL (userinfo and port already split off) and
/// appends the result to `out`.
///
/// # Errors
/// [`CanonError::EmptyHost`] when nothing but dots is left, [`CanonError::InvalidIpv6`] for a
/// bracketed host that is not an IPv6 address, [`CanonError::TooManyEscapeRounds`].
pub(super) fn push_host(
    out: &mut Vec<u8>,
    raw: &[u8],
    scratch: &mut Vec<u8>,
) -> Result<HostKind, CanonError> {
    if raw.first() == Some(&b'[') {
        return push_ipv6(out, raw, scratch);
    }
    let host = escape::unescape(raw, scratch)?;
    if host.is_ascii() {
        return push_ascii_host(out, host);
    }
    // UTS 46 mapping (lowercase, width and compatibility folding, ignored code points) and
    // punycode, with the WHATWG URL deny list. A host that is not valid UTF-8 or that UTS 46
    // refuses keeps its bytes, lowercased and percent-escaped.
    match idna::domain_to_ascii_cow(host, idna::AsciiDenyList::URL) {
        Ok(ascii) => push_ascii_host(out, ascii.as_bytes()),
        Err(_) => push_ascii_host(out, host),
    }
}

fn labels(host: &[u8]) -> impl Iterator<Item = &[u8]> {
    host.split(|&b| b == b'.').filter(|label| !label.is_empty())
}

/// Dots trimmed and collapsed, then IPv4 or a lowercase, escaped name.
fn push_ascii_host(out: &mut Vec<u8>, host: &[u8]) -> Result<HostKind, CanonError> {
    if labels(host).next().is_none() {
        return Err(CanonError::EmptyHost);
    }
    if let Some(addr) = parse_ipv4(host) {
        push_ipv4(out, addr);
        return Ok(HostKind::Ipv4);
    }
    for (i, label) in labels(host).enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        for &b in label {
            escape::push_escaped_byte(out, b.to_ascii_lowercase(), HOST);
        }
    }
    Ok(HostKind::Domain)
}

/// Dotted decimal, without going through `fmt`.
fn push_ipv4(out: &mut Vec<u8>, addr: Ipv4Addr) {
    for (i, octet) in addr.octets().into_iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        if octet >= 100 {
            out.push(b'0' + octet / 100);
        }
        if octet >= 10 {
            out.push(b'0' + octet / 10 % 10);
        }
        out.push(b'0' + octet % 10);
    }
}

/// The IPv4 address a host name stands for in `inet_aton`'s numeric forms (`0`, `127.1`,
/// `0x7f.0.0.1`, `2130706433`), which getaddrinfo accepts as addresses: a resolver that
/// would send them to DNS instead answers them from here.
pub fn numeric_ipv4(host: &str) -> Option<Ipv4Addr> {
    parse_ipv4(host.as_bytes())
}

/// Parses a host the way `inet_aton` and the WHATWG URL standard do: one to four parts, each
/// decimal, octal (leading `0`) or hex (leading `0x`); all parts but the last are one byte,
/// the last fills the remaining bytes. Empty labels (from stray dots) are ignored.
fn parse_ipv4(host: &[u8]) -> Option<Ipv4Addr> {
    let mut parts = [0u32; 4];
    let mut n = 0;
    for label in labels(host) {
        if n == 4 {
            return None;
        }
        parts[n] = parse_ipv4_part(label)?;
        n += 1;
    }
    if n == 0 {
        return None;
    }
    let mut addr: u32 = 0;
    for (i, &part) in parts[..n - 1].iter().enumerate() {
        if part > 255 {
            return None;
        }
        addr |= part << (8 * (3 - i));
    }
    let last = parts[n - 1];
    let last_bits = 8 * (5 - n) as u32;
    if last_bits < 32 && last >> last_bits != 0 {
        return None;
    }
    Some(Ipv4Addr::from(addr | last))
}

fn parse_ipv4_part(s: &[u8]) -> Option<u32> {
    let (digits, radix) = match s {
        [b'0', b'x' | b'X', rest @ ..] => (rest, 16),
        [b'0', rest @ ..] if !rest.is_empty() => (rest, 8),
        _ => (s, 10),
    };
    let mut value: u64 = 0;
    for &b in digits {
        let d = (b as char).to_digit(radix)?;
        value = value * u64::from(radix) + u64::from(d);
        if value > u64::from(u32::MAX) {
            return None;
        }
    }
    u32::try_from(value).ok()
}

fn push_ipv6(out: &mut Vec<u8>, raw: &[u8], scratch: &mut Vec<u8>) -> Result<HostKind, CanonError> {
    let inner = raw
        .strip_prefix(b"[")
        .and_then(|r| r.strip_suffix(b"]"))
        .ok_or(CanonError::InvalidIpv6)?;
    let inner = escape::unescape(inner, scratch)?;
    let addr: Ipv6Addr = std::str::from_utf8(inner)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(CanonError::InvalidIpv6)?;
    if let Some(v4) = ipv4_of_ipv6(addr) {
        push_ipv4(out, v4);
        return Ok(HostKind::Ipv4);
    }
    write!(out, "[{addr}]").expect("writing to a Vec cannot fail");
    Ok(HostKind::Ipv6)
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:0:0/96`) or NAT64 well-known-prefix
/// (`64:ff9b::/96`) IPv6 address.
fn ipv4_of_ipv6(addr: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = addr.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = addr.segments();
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let o = addr.octets();
        return Some(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(raw: &str) -> Result<(String, HostKind), CanonError> {
        let mut out = Vec::new();
        let mut scratch = Vec::new();
        let kind = push_host(&mut out, raw.as_bytes(), &mut scratch)?;
        Ok((String::from_utf8(out).unwrap(), kind))
    }

    fn ok(raw: &str) -> String {
        host(raw).unwrap().0
    }

    #[test]
    fn ipv4_numeric_forms_reach_dotted_decimal() {
        for form in [
            "192.0.2.1",
            "3221225985",
            "0xc0000201",
            "0XC0000201",
            "030000001001",
            "0300.0.02.01",
            "0xc0.0x0.0x2.0x1",
            "192.0.513",
            "192.513",
            "0xc0.0.0x201",
            "192.0.2.1.",
            ".192..0.2.1..",
            "%31%39%32.0.2.1",
        ] {
            assert_eq!(
                host(form).unwrap(),
                ("192.0.2.1".into(), HostKind::Ipv4),
                "{form}"
            );
        }
        assert_eq!(ok("0x"), "0.0.0.0");
        assert_eq!(ok("10.0.99.100"), "10.0.99.100");
        assert_eq!(ok("0xff.9.0.0x7b"), "255.9.0.123");
        assert_eq!(ok("255.255.255.255"), "255.255.255.255");
        assert_eq!(ok("4294967295"), "255.255.255.255");
    }

    #[test]
    fn not_ipv4_stays_a_name() {
        for name in [
            "1.2.3.4.5",
            "4294967296",
            "256.1.1.1",
            "08.1.1.1",
            "1.2.3.x",
            "0x1g",
        ] {
            assert_eq!(host(name).unwrap().1, HostKind::Domain, "{name}");
        }
        assert_eq!(ok("1.2.65536"), "1.2.65536");
        assert_eq!(ok("1.2.65535"), "1.2.255.255");
    }

    #[test]
    fn dots_are_trimmed_and_collapsed_and_case_folded() {
        assert_eq!(ok("..WWW..Example...COM.."), "www.example.com");
        assert_eq!(host("..."), Err(CanonError::EmptyHost));
        assert_eq!(host("%2e%2E"), Err(CanonError::EmptyHost));
    }

    #[test]
    fn idn_becomes_punycode() {
        assert_eq!(ok("bücher.example"), "xn--bcher-kva.example");
        assert_eq!(ok("BÜCHER.example"), "xn--bcher-kva.example");
        assert_eq!(ok("b%C3%BCcher.example"), "xn--bcher-kva.example");
        assert_eq!(ok("ｅｘａｍｐｌｅ．ｃｏｍ"), "example.com");
        assert_eq!(ok("ex\u{00ad}ample.com"), "example.com");
        assert_eq!(ok("xn--BCHER-KVA.example"), "xn--bcher-kva.example");
    }

    #[test]
    fn bytes_idna_refuses_are_escaped() {
        assert_eq!(ok("%01%80.com"), "%01%80.com");
        assert_eq!(ok("a b\u{e9}.com"), "a%20b%C3%A9.com");
    }

    #[test]
    fn structural_bytes_in_a_name_are_escaped() {
        assert_eq!(ok("a%2fb%3a80%40c%3fd"), "a%2Fb%3A80%40c%3Fd");
        assert_eq!(ok("host%23.com"), "host%23.com");
    }

    #[test]
    fn ipv6_is_normalized_and_mapped_forms_become_ipv4() {
        assert_eq!(
            host("[2001:0DB8:0000::1]").unwrap(),
            ("[2001:db8::1]".into(), HostKind::Ipv6)
        );
        assert_eq!(
            host("[::ffff:1.2.3.4]").unwrap(),
            ("1.2.3.4".into(), HostKind::Ipv4)
        );
        assert_eq!(
            host("[::ffff:102:304]").unwrap(),
            ("1.2.3.4".into(), HostKind::Ipv4)
        );
        assert_eq!(
            host("[64:ff9b::1.2.3.4]").unwrap(),
            ("1.2.3.4".into(), HostKind::Ipv4)
        );
        assert_eq!(ok("[::1]"), "[::1]");
        assert_eq!(host("[::1"), Err(CanonError::InvalidIpv6));
        assert_eq!(host("[1.2.3.4]"), Err(CanonError::InvalidIpv6));
        assert_eq!(host("[fe80::1%25eth0]"), Err(CanonError::InvalidIpv6));
    }
}
