//! Path and query rules: percent-unescape, resolve `.` and `..`, collapse slashes (path only),
//! re-escape.

use super::CanonError;
use super::escape::{self, PATH, QUERY};

/// Canonicalizes a raw path (empty, or starting with `/`) and appends it to `out`; the
/// result always starts with `/`.
///
/// `backslash_is_slash`: for the schemes browsers treat that way (http, https, ws, wss, ftp),
/// a literal `\` in the raw path separates segments like `/`. A `%5C` does not: it stays a
/// byte of its segment and is written back as `%5C`.
///
/// # Errors
/// [`CanonError::TooManyEscapeRounds`].
pub(super) fn push_path(
    out: &mut Vec<u8>,
    raw: &[u8],
    backslash_is_slash: bool,
    scratch: &mut Vec<u8>,
    tmp: &mut Vec<u8>,
) -> Result<(), CanonError> {
    let raw = if backslash_is_slash && raw.contains(&b'\\') {
        tmp.clear();
        tmp.extend(raw.iter().map(|&b| if b == b'\\' { b'/' } else { b }));
        &tmp[..]
    } else {
        raw
    };
    let path = escape::unescape(raw, scratch)?;
    let start = out.len();
    out.push(b'/');
    let body = path.strip_prefix(b"/").unwrap_or(path);
    let mut segments = body.split(|&b| b == b'/').peekable();
    // Invariant: before each segment, `out` ends with `/`.
    while let Some(segment) = segments.next() {
        match segment {
            b"" | b"." => {}
            b".." => {
                // Drop the last segment written, if any: "/a/b/" -> "/a/".
                let last_slash = out.len() - 1;
                if last_slash > start {
                    let prev = out[start..last_slash]
                        .iter()
                        .rposition(|&b| b == b'/')
                        .map_or(start, |p| start + p);
                    out.truncate(prev + 1);
                }
            }
            _ => {
                escape::push_escaped(out, segment, PATH);
                if segments.peek().is_some() {
                    out.push(b'/');
                }
            }
        }
    }
    Ok(())
}

/// Canonicalizes a raw query (the bytes after the first `?`) and appends it to `out`: unescaped,
/// re-escaped, otherwise left alone (no dot or slash rules).
///
/// # Errors
/// [`CanonError::TooManyEscapeRounds`].
pub(super) fn push_query(
    out: &mut Vec<u8>,
    raw: &[u8],
    scratch: &mut Vec<u8>,
) -> Result<(), CanonError> {
    let query = escape::unescape(raw, scratch)?;
    escape::push_escaped(out, query, QUERY);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(raw: &str) -> String {
        let mut out = Vec::new();
        push_path(
            &mut out,
            raw.as_bytes(),
            true,
            &mut Vec::new(),
            &mut Vec::new(),
        )
        .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn dot_segments_resolve() {
        assert_eq!(path(""), "/");
        assert_eq!(path("/"), "/");
        assert_eq!(path("/blah/.."), "/");
        assert_eq!(path("/a/./b"), "/a/b");
        assert_eq!(path("/a/b/../c"), "/a/c");
        assert_eq!(path("/a/b/../../../../c"), "/c");
        assert_eq!(path("/a/b/."), "/a/b/");
        assert_eq!(path("/a/b/.."), "/a/");
        assert_eq!(path("/a/%2e%2E/b"), "/b");
        assert_eq!(path("/a/.%2e/b"), "/b");
        assert_eq!(path("/a/..b/c"), "/a/..b/c");
        assert_eq!(path("/.secure/"), "/.secure/");
    }

    #[test]
    fn slashes_collapse_and_trailing_slash_stays() {
        assert_eq!(path("//a///b//"), "/a/b/");
        assert_eq!(path("/a%2f%2fb"), "/a/b");
        assert_eq!(path("/a\\b\\\\c"), "/a/b/c");
        assert_eq!(path("/a%5Cb"), "/a%5Cb");
    }

    #[test]
    fn reescapes_what_the_rules_name() {
        assert_eq!(path("/%7Ea%2521b%20c%23d%3Fe"), "/~a!b%20c%23d%3Fe");
        assert_eq!(path("/%%%25%32%35asd%%"), "/%25%25%25asd%25%25");
        assert_eq!(path("/caf\u{e9}"), "/caf%C3%A9");
    }

    #[test]
    fn query_is_unescaped_and_reescaped_but_not_resolved() {
        let mut out = Vec::new();
        push_query(&mut out, b"more//slashes/../x%2520y?z#", &mut Vec::new()).unwrap();
        assert_eq!(out, b"more//slashes/../x%20y?z%23");
    }
}
