//! Query strings and form bodies: finding a parameter, decoding its value
//! (`application/x-www-form-urlencoded` rules: `+` is a space, `%XX` a byte) and encoding a
//! value to put in a query.
//!
//! A leaf of the crate over the `percent-encoding` crate, shared by the reputation server's
//! API, the proxy's admin API and block-page forms, and the clients that build query strings.
//! URL canonicalization does not use it: [`crate::canon`] has its own escape rules.
//!
//! Decoding is strict, the same for every caller: a `%` that is not followed by two hex
//! digits, or bytes that are not UTF-8 once decoded, make the value undecodable
//! ([`BadEncoding`]) instead of being passed on as they are or replaced. Callers turn that
//! into a 400 or leave the field out. Cost: one pass over the value and one allocation when
//! it holds escapes; no I/O.

use std::borrow::Cow;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// Everything but the unreserved characters of RFC 3986 (`A-Z a-z 0-9 - . _ ~`).
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A value with a malformed `%` escape, or that does not decode to UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("bad percent-encoding")]
pub struct BadEncoding;

/// Decodes a query or form value: `+` is a space, `%XX` a byte, and the result must be UTF-8.
///
/// # Errors
/// [`BadEncoding`]: a `%` without two hex digits after it, or bytes that are not UTF-8.
pub fn decode(value: &str) -> Result<String, BadEncoding> {
    let b = value.as_bytes();
    let escapes_well_formed = b
        .iter()
        .enumerate()
        .filter(|&(_, &c)| c == b'%')
        .all(|(i, _)| {
            b.get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
        });
    if !escapes_well_formed {
        return Err(BadEncoding);
    }
    let spaced = if b.contains(&b'+') {
        Cow::Owned(value.replace('+', " "))
    } else {
        Cow::Borrowed(value)
    };
    percent_decode_str(&spaced)
        .decode_utf8()
        .map(Cow::into_owned)
        .map_err(|_| BadEncoding)
}

/// The decoded value of the first `name=` parameter of `query` (`name` alone counts as an
/// empty value); `Ok(None)` when there is none. Names are compared as written, undecoded.
///
/// # Errors
/// [`BadEncoding`] when that first value does not decode.
pub fn query_param(query: Option<&str>, name: &str) -> Result<Option<String>, BadEncoding> {
    let Some(query) = query else {
        return Ok(None);
    };
    query
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| decode(v))
        .transpose()
}

/// Percent-encodes a query parameter value: everything but unreserved characters.
pub fn encode_query_value(value: &str) -> String {
    utf8_percent_encode(value, QUERY_VALUE).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(decode("a%2Fb+c").as_deref(), Ok("a/b c"));
        assert_eq!(decode("%e2%82%ac").as_deref(), Ok("\u{20ac}"));
        assert_eq!(decode("%2B+").as_deref(), Ok("+ "));
        assert_eq!(decode("%+f"), Err(BadEncoding));
        assert_eq!(decode("%+1"), Err(BadEncoding));
        assert_eq!(decode("%4"), Err(BadEncoding));
        assert_eq!(decode("a%"), Err(BadEncoding));
        assert_eq!(decode("%zz"), Err(BadEncoding));
        assert_eq!(decode("%ff"), Err(BadEncoding));
        assert_eq!(decode("").as_deref(), Ok(""));
    }

    #[test]
    fn query_parameters() {
        let q = Some("since=5&url=http%3A%2F%2Fa.test%2F&since=9&flag");
        assert_eq!(query_param(q, "since").unwrap().as_deref(), Some("5"));
        assert_eq!(
            query_param(q, "url").unwrap().as_deref(),
            Some("http://a.test/")
        );
        assert_eq!(query_param(q, "flag").unwrap().as_deref(), Some(""));
        assert_eq!(query_param(q, "wait_ms").unwrap(), None);
        assert_eq!(query_param(None, "url").unwrap(), None);
        assert_eq!(query_param(Some("url=%zz"), "url"), Err(BadEncoding));
        assert_eq!(query_param(Some("url=%zz&url=a"), "url"), Err(BadEncoding));
    }

    #[test]
    fn encoded_values_decode_to_themselves() {
        let v = "http://a.test/p q?x=1&y=+~-._\u{20ac}%";
        let e = encode_query_value(v);
        assert_eq!(
            e,
            "http%3A%2F%2Fa.test%2Fp%20q%3Fx%3D1%26y%3D%2B~-._%E2%82%AC%25"
        );
        assert_eq!(decode(&e).as_deref(), Ok(v));
    }
}
