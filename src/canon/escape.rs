//! Percent-unescaping (repeated, bounded) and percent-escaping for the canonical form.
//!
//! Unescaping runs in rounds, each a linear pass, until no `%XX` triplet is left, as the Safe
//! Browsing rules ask ("repeatedly percent-unescape the URL until it has no more
//! percent-escapes"). At most [`MAX_UNESCAPE_ROUNDS`] rounds run, so the cost is linear in the
//! input; input nested deeper than that is refused with [`CanonError::TooManyEscapeRounds`].

use super::CanonError;

/// The most rounds of percent-unescaping one component may need. A published example needs 8
/// (`%2525252525252525`); real URLs need 1 or 2. Deeper nesting is an evasion attempt and is
/// refused rather than guessed at.
pub const MAX_UNESCAPE_ROUNDS: usize = 32;

/// Escape-table bit: the byte is escaped in a host name.
pub(super) const HOST: u8 = 1;
/// Escape-table bit: the byte is escaped in a path.
pub(super) const PATH: u8 = 2;
/// Escape-table bit: the byte is escaped in a query.
pub(super) const QUERY: u8 = 4;

/// Which bytes are escaped where. Everywhere: bytes <= 0x20, >= 0x7f, `#` and `%` (the Safe
/// Browsing set). In a host, also the bytes that would change how the canonical URL splits
/// when read again (`/ ? @ : \ [ ]`). In a path, also `?` and `\`, so that a `%3F` or `%5C`
/// found in a path stays part of the path.
static ESCAPE: [u8; 256] = build_escape_table();

const fn build_escape_table() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        if b <= 0x20 || b >= 0x7f || b == b'#' || b == b'%' {
            t[i] = HOST | PATH | QUERY;
        }
        i += 1;
    }
    let host_extra = b"/?@:\\[]";
    let mut j = 0;
    while j < host_extra.len() {
        t[host_extra[j] as usize] |= HOST;
        j += 1;
    }
    t[b'?' as usize] |= PATH;
    t[b'\\' as usize] |= PATH;
    t
}

const UPPER_HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Whether `b` is escaped in the context named by `set` ([`HOST`], [`PATH`] or [`QUERY`]).
#[inline]
pub(super) fn needs_escape(b: u8, set: u8) -> bool {
    ESCAPE[b as usize] & set != 0
}

/// Appends `b` to `out`, as `%XX` (uppercase hex) when the context `set` asks for it.
#[inline]
pub(super) fn push_escaped_byte(out: &mut Vec<u8>, b: u8, set: u8) {
    if needs_escape(b, set) {
        out.extend_from_slice(&[
            b'%',
            UPPER_HEX[(b >> 4) as usize],
            UPPER_HEX[(b & 15) as usize],
        ]);
    } else {
        out.push(b);
    }
}

/// Appends `bytes` to `out`, escaping what the context `set` asks for. Runs of bytes that
/// need no escape are copied whole.
pub(super) fn push_escaped(out: &mut Vec<u8>, bytes: &[u8], set: u8) {
    let mut rest = bytes;
    while let Some(i) = rest.iter().position(|&b| needs_escape(b, set)) {
        out.extend_from_slice(&rest[..i]);
        push_escaped_byte(out, rest[i], set);
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
}

#[inline]
fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Whether `s` holds at least one `%XX` triplet with two hex digits.
fn has_escape(s: &[u8]) -> bool {
    let mut rest = s;
    while let Some(i) = rest.iter().position(|&b| b == b'%') {
        if let [_, hi, lo, ..] = rest[i..]
            && hex_value(hi).is_some()
            && hex_value(lo).is_some()
        {
            return true;
        }
        rest = &rest[i + 1..];
    }
    false
}

/// One left-to-right round: decodes every `%XX` triplet of `buf` in place.
fn decode_round_in_place(buf: &mut Vec<u8>) {
    let n = buf.len();
    let (mut r, mut w) = (0, 0);
    while r < n {
        let b = buf[r];
        if b == b'%'
            && r + 2 < n
            && let (Some(hi), Some(lo)) = (hex_value(buf[r + 1]), hex_value(buf[r + 2]))
        {
            buf[w] = hi << 4 | lo;
            w += 1;
            r += 3;
            continue;
        }
        buf[w] = b;
        w += 1;
        r += 1;
    }
    buf.truncate(w);
}

/// Percent-unescapes `input` until no `%XX` triplet is left.
///
/// Returns `input` itself when it holds no escape (no copy), otherwise the decoded bytes in
/// `scratch`. A `%` not followed by two hex digits is kept as it is.
///
/// # Errors
/// [`CanonError::TooManyEscapeRounds`] when escapes are still left after
/// [`MAX_UNESCAPE_ROUNDS`] rounds.
pub(super) fn unescape<'a>(
    input: &'a [u8],
    scratch: &'a mut Vec<u8>,
) -> Result<&'a [u8], CanonError> {
    if !has_escape(input) {
        return Ok(input);
    }
    scratch.clear();
    scratch.extend_from_slice(input);
    for _ in 0..MAX_UNESCAPE_ROUNDS {
        decode_round_in_place(scratch);
        if !has_escape(scratch) {
            return Ok(scratch);
        }
    }
    Err(CanonError::TooManyEscapeRounds {
        max: MAX_UNESCAPE_ROUNDS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unescaped(s: &str) -> Result<Vec<u8>, CanonError> {
        let mut scratch = Vec::new();
        unescape(s.as_bytes(), &mut scratch).map(<[u8]>::to_vec)
    }

    #[test]
    fn input_without_escapes_is_borrowed() {
        let mut scratch = Vec::new();
        let input = b"/plain/path%zz%4";
        let out = unescape(input, &mut scratch).unwrap();
        assert!(std::ptr::eq(out, &input[..]));
        assert!(scratch.capacity() == 0);
    }

    #[test]
    fn decodes_until_no_escape_is_left() {
        assert_eq!(unescaped("%25%32%35").unwrap(), b"%");
        assert_eq!(unescaped("%2525252525252525").unwrap(), b"%");
        assert_eq!(unescaped("%%%25%32%35asd%%").unwrap(), b"%%%asd%%");
        assert_eq!(unescaped("a%2fb%2Fc").unwrap(), b"a/b/c");
        assert_eq!(unescaped("%ff%00").unwrap(), [0xff, 0x00]);
    }

    #[test]
    fn decoded_bytes_combine_with_earlier_percent() {
        // "%%32%35" -> "%25" -> "%"
        assert_eq!(unescaped("%%32%35").unwrap(), b"%");
    }

    #[test]
    fn refuses_nesting_deeper_than_the_bound() {
        let deep = format!("%{}", "25".repeat(MAX_UNESCAPE_ROUNDS));
        assert_eq!(unescaped(&deep).unwrap(), b"%");
        let deeper = format!("%{}", "25".repeat(MAX_UNESCAPE_ROUNDS + 1));
        assert_eq!(
            unescaped(&deeper),
            Err(CanonError::TooManyEscapeRounds {
                max: MAX_UNESCAPE_ROUNDS
            })
        );
    }

    #[test]
    fn escapes_in_uppercase_hex_per_context() {
        let mut out = Vec::new();
        push_escaped(&mut out, b"a b#%?\\\x7f\x80/", PATH);
        assert_eq!(out, b"a%20b%23%25%3F%5C%7F%80/");
        out.clear();
        push_escaped(&mut out, b"a?b/c\\d", QUERY);
        assert_eq!(out, b"a?b/c\\d");
        out.clear();
        push_escaped(&mut out, b"a:b@c/d?[]", HOST);
        assert_eq!(out, b"a%3Ab%40c%2Fd%3F%5B%5D");
    }
}
