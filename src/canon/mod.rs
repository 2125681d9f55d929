//! URL canonicalization (Safe Browsing rules) and lookup expressions. Pure: no I/O.
//!
//! [`canonicalize`] turns any spelling of a URL into one canonical form, the one the Google Safe
//! Browsing v4 "URLs and Hashing" document specifies (also published as Web Risk "URLs and
//! hashing", with the IPv6 rules of the v5 text). [`CanonicalUrl::expressions`] then yields
//! the lookup expressions of that URL: host suffixes times path prefixes, at most 30.
//!
//! # Where it sits
//! Every reputation lookup, every approved/blocked list match and every cache key in webrep
//! goes through this module: the proxy canonicalizes each request URL (and each CONNECT host)
//! before the policy pre-check, the reputation server canonicalizes again on its side and
//! keys its table by expressions, and feed import canonicalizes every entry. Two spellings of
//! one URL (case, trailing dots, percent-encoding, numeric IPs, `..` segments, userinfo,
//! ports, fragments, embedded tab/CR/LF) reach the same canonical form, so none of them
//! walks past a list entry.
//!
//! # The canonical form
//! `scheme://host/path[?query]`, printable ASCII only:
//! - tab, CR and LF removed; leading and trailing bytes <= 0x20 trimmed; fragment dropped;
//! - no scheme means `http`; scheme lowercased; userinfo and port dropped (the port stays
//!   available through [`CanonicalUrl::port`]);
//! - host, path and query each percent-unescaped until no `%XX` is left (at most
//!   [`MAX_UNESCAPE_ROUNDS`] rounds);
//! - host: IDN to punycode (UTS 46), dots trimmed and collapsed, every numeric IPv4 form
//!   (decimal, octal, hex, fewer than four parts) to dotted decimal, bracketed IPv6 to RFC 5952
//!   text with IPv4-mapped and NAT64 (`64:ff9b::/96`) addresses turned into IPv4, lowercase;
//! - path: `.` and `..` segments resolved, repeated slashes collapsed, never empty; the query is
//!   left alone apart from escaping;
//! - bytes <= 0x20, >= 0x7f, `#` and `%` re-escaped as `%XX` in uppercase hex.
//!
//! Deviations from the document, each to keep the form stable when it is read again
//! (canonicalizing a canonical URL returns it unchanged): a `?` or `\` that unescaping
//! produces inside the path is written back as `%3F` / `%5C` (it stays part of the path);
//! in a host name `/ ? @ : \ [ ]` are escaped too. A literal `\` in an http(s), ws(s) or ftp
//! path separates segments as it does in browsers.
//!
//! # Cost
//! Linear in the input: a few short passes, plus one pass per unescape round (at most
//! [`MAX_UNESCAPE_ROUNDS`]). One `String` is allocated for the result in the common case; a
//! scratch buffer is added when the URL holds percent-escapes, and the IDNA crate uses its own
//! buffers for non-ASCII hosts. Expressions are slices of that `String`, so no allocation is
//! made per expression. The budget is 1 µs median for canonicalize + expressions over a mixed
//! corpus (`cargo bench --bench canon`; figures in `docs/performance.md`,
//! "Canonicalization"); IDN hosts and long query strings are the dearest URLs.
//!
//! # Ownership
//! No shared state. A [`CanonicalUrl`] is an owned, immutable value (`Send + Sync`), and its
//! expressions borrow from it. No configuration keys affect this module. Its limits are the
//! constants [`MAX_URL_LEN`] and [`MAX_UNESCAPE_ROUNDS`].
//!
//! # Failure
//! Input that is not a URL gets a [`CanonError`], never a panic: empty input, no host, a bad
//! port, a bad IPv6 literal, an unsupported scheme, more than [`MAX_URL_LEN`] bytes, or
//! escapes nested deeper than [`MAX_UNESCAPE_ROUNDS`]. The proxy answers such a request with
//! 400; the module itself never decides allow or block.

mod cli;
mod escape;
mod expressions;
mod host;
mod path;

pub use cli::{url_command, url_lines};
pub use escape::MAX_UNESCAPE_ROUNDS;
pub use expressions::{Expression, Expressions, MAX_EXPRESSIONS, MAX_HOSTS, MAX_PATHS};
pub use host::{HostKind, is_dns_name, numeric_ipv4};

use std::borrow::Cow;

/// The longest input [`canonicalize`] accepts, in bytes (before any processing).
pub const MAX_URL_LEN: usize = 16 * 1024;

/// Why an input cannot be canonicalized. Each variant means the input is not a URL webrep
/// can judge; callers refuse it (the proxy with 400, the CLI with exit status 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonError {
    /// Nothing left after trimming whitespace and removing the fragment.
    #[error("url is empty")]
    Empty,
    /// The input is longer than [`MAX_URL_LEN`].
    #[error("url is {len} bytes long, more than the limit of {max}")]
    TooLong {
        /// Input length in bytes.
        len: usize,
        /// The limit, [`MAX_URL_LEN`].
        max: usize,
    },
    /// The host is empty, or nothing but dots.
    #[error("url has no host")]
    EmptyHost,
    /// The port is not a decimal number in 0..=65535.
    #[error("url has an invalid port")]
    InvalidPort,
    /// A bracketed host that is not an IPv6 address.
    #[error("url has an invalid IPv6 address")]
    InvalidIpv6,
    /// `name://` where `name` is not a valid scheme.
    #[error("url has an invalid scheme")]
    InvalidScheme,
    /// `name:` followed by something that is neither `//` nor a port, e.g. `mailto:` or
    /// `javascript:`.
    #[error("url scheme has no host part (not a hierarchical url)")]
    UnsupportedScheme,
    /// Percent-escapes still left after the maximum number of unescape rounds.
    #[error("percent-escapes are nested more than {max} levels deep")]
    TooManyEscapeRounds {
        /// The limit, [`MAX_UNESCAPE_ROUNDS`].
        max: usize,
    },
}

/// A URL in canonical form. Built only by [`canonicalize`]; holds one `String` and the
/// offsets of its parts.
///
/// Equality and hashing include the port the input carried; compare
/// [`as_str`](Self::as_str) to compare canonical forms only.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CanonicalUrl {
    url: String,
    scheme_end: usize,
    host_start: usize,
    host_end: usize,
    path_end: usize,
    port: Option<u16>,
    host_kind: HostKind,
}

impl CanonicalUrl {
    /// The canonical URL, e.g. `http://example.com/b?q=1`.
    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// The scheme, lowercase, e.g. `https`.
    pub fn scheme(&self) -> &str {
        &self.url[..self.scheme_end]
    }

    /// The canonical host: a lowercase punycode name, dotted-decimal IPv4, or bracketed IPv6.
    pub fn host(&self) -> &str {
        &self.url[self.host_start..self.host_end]
    }

    /// What kind of host [`host`](Self::host) is.
    pub fn host_kind(&self) -> HostKind {
        self.host_kind
    }

    /// Whether the host is one a URL can name: an IP address, or a name without bytes that
    /// canonicalization had to escape (spaces, control bytes, `/`, `?`, bytes IDNA refuses).
    /// Matching takes such hosts as they come (a hostile request may carry one); what an admin
    /// or a feed enters as a URL must pass this too, so that `not a url` is refused instead of
    /// becoming the host `not%20a%20url`.
    pub fn host_is_well_formed(&self) -> bool {
        self.host_kind != HostKind::Domain || !self.host().contains('%')
    }

    /// The canonical path, starting with `/`, without the query.
    pub fn path(&self) -> &str {
        &self.url[self.host_end..self.path_end]
    }

    /// The query without its `?`: `None` when the URL had no `?`, `Some("")` for a bare `?`.
    pub fn query(&self) -> Option<&str> {
        self.url.get(self.path_end + 1..)
    }

    /// The path and the query as they appear in the canonical URL, e.g. `/b?q=1`.
    pub fn path_and_query(&self) -> &str {
        &self.url[self.host_end..]
    }

    /// The port written in the input, if any. It is not part of the canonical form.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The port written in the input, else the scheme's default (80 for http and ws, 443 for
    /// https and wss, 21 for ftp); `None` for other schemes without a port.
    pub fn port_or_default(&self) -> Option<u16> {
        self.port.or(match self.scheme() {
            "http" | "ws" => Some(80),
            "https" | "wss" => Some(443),
            "ftp" => Some(21),
            _ => None,
        })
    }

    /// The lookup expressions of this URL (host suffixes times path prefixes, at most
    /// [`MAX_EXPRESSIONS`]), each a slice of [`as_str`](Self::as_str).
    ///
    /// ```
    /// let url = webrep::canon::canonicalize("http://a.b.c/1/2.html?param=1").unwrap();
    /// let exprs: Vec<&str> = url.expressions().map(|e| e.as_str()).collect();
    /// assert_eq!(exprs, [
    ///     "a.b.c/1/2.html?param=1", "a.b.c/1/2.html", "a.b.c/", "a.b.c/1/",
    ///     "b.c/1/2.html?param=1", "b.c/1/2.html", "b.c/", "b.c/1/",
    /// ]);
    /// ```
    pub fn expressions(&self) -> Expressions<'_> {
        Expressions::new(self)
    }
}

impl std::fmt::Display for CanonicalUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

impl AsRef<str> for CanonicalUrl {
    fn as_ref(&self) -> &str {
        &self.url
    }
}

/// Canonicalizes a URL by the Safe Browsing rules (see the [module docs](self)).
///
/// ```
/// use webrep::canon::canonicalize;
/// let url = canonicalize("HTTP://user@Example.COM.:8080/a/./b/../c#frag").unwrap();
/// assert_eq!(url.as_str(), "http://example.com/a/c");
/// assert_eq!(url.port(), Some(8080));
/// ```
///
/// # Errors
/// A [`CanonError`] when the input is not a URL.
pub fn canonicalize(input: &str) -> Result<CanonicalUrl, CanonError> {
    canonicalize_bytes(input.as_bytes())
}

/// [`canonicalize`] over raw bytes, which need not be UTF-8: bytes that are not part of valid
/// UTF-8 end up percent-escaped.
///
/// # Errors
/// A [`CanonError`] when the input is not a URL.
pub fn canonicalize_bytes(input: &[u8]) -> Result<CanonicalUrl, CanonError> {
    if input.len() > MAX_URL_LEN {
        return Err(CanonError::TooLong {
            len: input.len(),
            max: MAX_URL_LEN,
        });
    }
    let trimmed = trim_c0_and_space(input);
    let cleaned: Cow<'_, [u8]> = if trimmed.iter().any(|&b| matches!(b, b'\t' | b'\r' | b'\n')) {
        Cow::Owned(
            trimmed
                .iter()
                .copied()
                .filter(|&b| !matches!(b, b'\t' | b'\r' | b'\n'))
                .collect(),
        )
    } else {
        Cow::Borrowed(trimmed)
    };
    let s = match cleaned.iter().position(|&b| b == b'#') {
        Some(hash) => &cleaned[..hash],
        None => &cleaned[..],
    };
    if s.is_empty() {
        return Err(CanonError::Empty);
    }

    let (scheme, rest) = split_scheme(s)?;
    let special = is_special(scheme);
    let authority_end = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?' || (special && b == b'\\'))
        .unwrap_or(rest.len());
    let (authority, after) = rest.split_at(authority_end);
    let (path_raw, query_raw) = match after.iter().position(|&b| b == b'?') {
        Some(q) => (&after[..q], Some(&after[q + 1..])),
        None => (after, None),
    };
    let host_port = match authority.iter().rposition(|&b| b == b'@') {
        Some(at) => &authority[at + 1..],
        None => authority,
    };
    let (host_raw, port) = split_port(host_port)?;
    if host_raw.is_empty() {
        return Err(CanonError::EmptyHost);
    }

    let mut out = Vec::with_capacity(s.len() + 8);
    let mut scratch = Vec::new();
    out.extend(scheme.iter().map(u8::to_ascii_lowercase));
    let scheme_end = out.len();
    out.extend_from_slice(b"://");
    let host_start = out.len();
    let host_kind = host::push_host(&mut out, host_raw, &mut scratch)?;
    let host_end = out.len();
    path::push_path(&mut out, path_raw, special, &mut scratch, &mut Vec::new())?;
    let path_end = out.len();
    if let Some(query) = query_raw {
        out.push(b'?');
        path::push_query(&mut out, query, &mut scratch)?;
    }

    let url = String::from_utf8(out).expect("canonical url is escaped to printable ASCII");
    Ok(CanonicalUrl {
        url,
        scheme_end,
        host_start,
        host_end,
        path_end,
        port,
        host_kind,
    })
}

fn trim_c0_and_space(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| b > 0x20).unwrap_or(s.len());
    let end = s.iter().rposition(|&b| b > 0x20).map_or(start, |e| e + 1);
    &s[start..end]
}

/// Schemes whose URLs browsers parse with `\` as `/` and any number of slashes after `:`.
fn is_special(scheme: &[u8]) -> bool {
    ["http", "https", "ws", "wss", "ftp"]
        .iter()
        .any(|s| scheme.eq_ignore_ascii_case(s.as_bytes()))
}

fn is_scheme(s: &[u8]) -> bool {
    matches!(s.first(), Some(b) if b.is_ascii_alphabetic())
        && s.iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

/// Splits off the scheme and the slashes after it. No scheme means `http`; so does
/// `host:port` (`localhost:8080/x`, `example.com:80`).
fn split_scheme(s: &[u8]) -> Result<(&[u8], &[u8]), CanonError> {
    const DEFAULT: &[u8] = b"http";
    fn no_scheme(s: &[u8]) -> &[u8] {
        s.strip_prefix(b"//").unwrap_or(s)
    }
    let Some(colon) = s.iter().position(|&b| b == b':') else {
        return Ok((DEFAULT, no_scheme(s)));
    };
    let (candidate, after) = (&s[..colon], &s[colon + 1..]);
    if !is_scheme(candidate) {
        let looks_like_scheme = !candidate.iter().any(|&b| matches!(b, b'/' | b'?' | b'@'));
        if looks_like_scheme && after.starts_with(b"//") {
            return Err(CanonError::InvalidScheme);
        }
        return Ok((DEFAULT, no_scheme(s)));
    }
    if is_special(candidate) {
        let start = after
            .iter()
            .position(|&b| b != b'/' && b != b'\\')
            .unwrap_or(after.len());
        return Ok((candidate, &after[start..]));
    }
    if let Some(rest) = after.strip_prefix(b"//") {
        return Ok((candidate, rest));
    }
    // `name:digits` up to the end of the authority is a host and a port, not a scheme.
    let port_end = after
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'\\'))
        .unwrap_or(after.len());
    if after[..port_end].iter().all(u8::is_ascii_digit) {
        return Ok((DEFAULT, s));
    }
    Err(CanonError::UnsupportedScheme)
}

/// Splits `host[:port]` or `[v6][:port]`.
fn split_port(host_port: &[u8]) -> Result<(&[u8], Option<u16>), CanonError> {
    let (host, port) = if host_port.first() == Some(&b'[') {
        let close = host_port
            .iter()
            .position(|&b| b == b']')
            .ok_or(CanonError::InvalidIpv6)?;
        let (host, rest) = host_port.split_at(close + 1);
        match rest {
            [] => (host, None),
            [b':', port @ ..] => (host, Some(port)),
            _ => return Err(CanonError::InvalidIpv6),
        }
    } else {
        match host_port.iter().position(|&b| b == b':') {
            Some(colon) => (&host_port[..colon], Some(&host_port[colon + 1..])),
            None => (host_port, None),
        }
    };
    let port = match port {
        None | Some([]) => None,
        Some(digits) => Some(parse_port(digits)?),
    };
    Ok((host, port))
}

fn parse_port(digits: &[u8]) -> Result<u16, CanonError> {
    let mut value: u32 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return Err(CanonError::InvalidPort);
        }
        value = value * 10 + u32::from(b - b'0');
        if value > u32::from(u16::MAX) {
            return Err(CanonError::InvalidPort);
        }
    }
    u16::try_from(value).map_err(|_| CanonError::InvalidPort)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        canonicalize(s).unwrap().as_str().to_owned()
    }

    #[test]
    fn parts_are_exposed() {
        let url = canonicalize("HTTPS://u:p@WWW.Example.com:8443/a/b?x=1").unwrap();
        assert_eq!(url.as_str(), "https://www.example.com/a/b?x=1");
        assert_eq!(url.scheme(), "https");
        assert_eq!(url.host(), "www.example.com");
        assert_eq!(url.host_kind(), HostKind::Domain);
        assert_eq!(url.path(), "/a/b");
        assert_eq!(url.query(), Some("x=1"));
        assert_eq!(url.path_and_query(), "/a/b?x=1");
        assert_eq!(url.port(), Some(8443));
        assert_eq!(url.port_or_default(), Some(8443));
        assert_eq!(url.to_string(), url.as_str());
    }

    #[test]
    fn port_defaults_by_scheme() {
        assert_eq!(
            canonicalize("http://h/").unwrap().port_or_default(),
            Some(80)
        );
        assert_eq!(
            canonicalize("https://h/").unwrap().port_or_default(),
            Some(443)
        );
        assert_eq!(canonicalize("h").unwrap().port_or_default(), Some(80));
        assert_eq!(canonicalize("gopher://h/").unwrap().port_or_default(), None);
        assert_eq!(canonicalize("http://h:/").unwrap().port(), None);
        assert_eq!(canonicalize("http://h:00080/").unwrap().port(), Some(80));
    }

    #[test]
    fn query_absent_empty_present() {
        assert_eq!(canonicalize("http://h/q").unwrap().query(), None);
        assert_eq!(canonicalize("http://h/q?").unwrap().query(), Some(""));
        assert_eq!(canonicalize("http://h?a").unwrap().as_str(), "http://h/?a");
    }

    #[test]
    fn schemes_and_host_port_forms() {
        assert_eq!(canon("localhost:8080/x"), "http://localhost/x");
        assert_eq!(canon("example.com:80"), "http://example.com/");
        assert_eq!(canon("//example.com/a"), "http://example.com/a");
        assert_eq!(canon("http:example.com/a"), "http://example.com/a");
        assert_eq!(canon("http:\\\\example.com\\a"), "http://example.com/a");
        assert_eq!(canon("HTTP:////example.com"), "http://example.com/");
        assert_eq!(canon("wss://example.com/s"), "wss://example.com/s");
        assert_eq!(canon("foo://Example.com/a\\b"), "foo://example.com/a%5Cb");
    }

    #[test]
    fn userinfo_is_dropped_at_the_last_at_sign() {
        assert_eq!(canon("http://good.com@evil.com/"), "http://evil.com/");
        assert_eq!(canon("http://a@b:c@evil.com:81/"), "http://evil.com/");
        assert_eq!(
            canon("http://evil.com\\@good.com/"),
            "http://evil.com/@good.com/"
        );
        assert_eq!(canon("http://a%40b@evil.com/"), "http://evil.com/");
    }

    #[test]
    fn errors_are_typed() {
        assert_eq!(canonicalize(""), Err(CanonError::Empty));
        assert_eq!(canonicalize(" \t\r\n "), Err(CanonError::Empty));
        assert_eq!(canonicalize("#frag"), Err(CanonError::Empty));
        assert_eq!(canonicalize("http://"), Err(CanonError::EmptyHost));
        assert_eq!(canonicalize("http://.../"), Err(CanonError::EmptyHost));
        assert_eq!(canonicalize("http://user@/"), Err(CanonError::EmptyHost));
        assert_eq!(canonicalize("/just/a/path"), Err(CanonError::EmptyHost));
        assert_eq!(
            canonicalize("file:///etc/passwd"),
            Err(CanonError::EmptyHost)
        );
        assert_eq!(
            canonicalize("http://h:65536/"),
            Err(CanonError::InvalidPort)
        );
        assert_eq!(canonicalize("http://h:8o/"), Err(CanonError::InvalidPort));
        assert_eq!(canonicalize("http://[::1/"), Err(CanonError::InvalidIpv6));
        assert_eq!(canonicalize("http://[::1]x/"), Err(CanonError::InvalidIpv6));
        assert_eq!(canonicalize("ht tp://h/"), Err(CanonError::InvalidScheme));
        assert_eq!(
            canonicalize("javascript:alert(1)"),
            Err(CanonError::UnsupportedScheme)
        );
        assert_eq!(
            canonicalize("mailto:a@example.com"),
            Err(CanonError::UnsupportedScheme)
        );
        let long = format!("http://h/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(
            canonicalize(&long),
            Err(CanonError::TooLong {
                len: long.len(),
                max: MAX_URL_LEN
            })
        );
        let deep = format!("http://h/%{}", "25".repeat(MAX_UNESCAPE_ROUNDS + 1));
        assert_eq!(
            canonicalize(&deep),
            Err(CanonError::TooManyEscapeRounds {
                max: MAX_UNESCAPE_ROUNDS
            })
        );
    }

    #[test]
    fn non_utf8_bytes_are_escaped() {
        let url = canonicalize_bytes(b"http://h/\xff\xfe?\x80").unwrap();
        assert_eq!(url.as_str(), "http://h/%FF%FE?%80");
    }

    #[test]
    fn canonical_form_is_stable() {
        for input in [
            "http://h/a%3Fb/..%3Fc?d",
            "http://h/a%5Cb",
            "http://a%2fb%3a80%40c/",
            "http://h/a/..%3Fb",
            "http://[::ffff:1.2.3.4]:80/",
        ] {
            let once = canonicalize(input).unwrap();
            let twice = canonicalize(once.as_str()).unwrap();
            assert_eq!(once.as_str(), twice.as_str(), "{input}");
        }
    }
}
