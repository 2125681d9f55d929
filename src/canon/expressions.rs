//! Lookup expressions: host suffixes times path prefixes, as slices of one canonical URL.
//!
//! Every expression is `host-suffix` immediately followed by `path-prefix`, and in the
//! canonical buffer a host suffix ends where the path begins, so each expression is one
//! contiguous slice of [`CanonicalUrl::as_str`]: building them allocates nothing.

use super::{CanonicalUrl, HostKind};

/// The most host variants per URL: the exact host and up to four suffixes.
pub const MAX_HOSTS: usize = 5;
/// The most path variants per URL: exact path with query, exact path without query, and up
/// to four prefixes from the root.
pub const MAX_PATHS: usize = 6;
/// The most lookup expressions one URL yields (`MAX_HOSTS * MAX_PATHS`).
pub const MAX_EXPRESSIONS: usize = MAX_HOSTS * MAX_PATHS;

/// One lookup expression, e.g. `b.c/1/` (host suffix `b.c`, path prefix `/1/`).
///
/// It borrows from the [`CanonicalUrl`] it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Expression<'a> {
    text: &'a str,
    host_len: usize,
}

impl<'a> Expression<'a> {
    /// The whole expression, `host` then `path`, e.g. `b.c/1/2.html?param=1`.
    pub fn as_str(&self) -> &'a str {
        self.text
    }

    /// The host part: the exact host or one of its suffixes.
    pub fn host(&self) -> &'a str {
        &self.text[..self.host_len]
    }

    /// The path part, starting with `/`: the exact path (with or without the query) or a
    /// prefix ending in `/`.
    pub fn path(&self) -> &'a str {
        &self.text[self.host_len..]
    }

    /// Whether this is a `host/` expression, the one that covers everything on the host.
    pub fn is_host_only(&self) -> bool {
        self.path() == "/"
    }
}

impl std::fmt::Display for Expression<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.text)
    }
}

impl AsRef<str> for Expression<'_> {
    fn as_ref(&self) -> &str {
        self.text
    }
}

/// Iterator over the lookup expressions of a [`CanonicalUrl`], from
/// [`CanonicalUrl::expressions`].
///
/// Order: for each host (the exact host, then suffixes from longest to shortest), each path
/// (exact with query, exact without query, then prefixes from `/` down). No duplicates; at
/// most [`MAX_EXPRESSIONS`].
#[derive(Debug, Clone)]
pub struct Expressions<'a> {
    url: &'a str,
    host_end: usize,
    host_starts: [usize; MAX_HOSTS],
    hosts: usize,
    path_ends: [usize; MAX_PATHS],
    paths: usize,
    /// Index of the next host and the next path: `(host, path)` counts up like two digits.
    host: usize,
    path: usize,
}

impl<'a> Expressions<'a> {
    pub(super) fn new(url: &'a CanonicalUrl) -> Self {
        let s = url.as_str();
        let bytes = s.as_bytes();
        let (host_start, host_end, path_end) = (url.host_start, url.host_end, url.path_end);

        let mut host_starts = [0; MAX_HOSTS];
        host_starts[0] = host_start;
        let mut hosts = 1;
        if url.host_kind == HostKind::Domain {
            // Dots from the right: the suffix with k labels starts after the k-th dot from
            // the right. k runs 5..=2 (the last five labels, never the bare top-level label),
            // skipping k = all labels, which is the exact host.
            let mut dots = [0usize; MAX_HOSTS];
            let mut found = 0;
            for (i, &b) in bytes[host_start..host_end].iter().enumerate().rev() {
                if b == b'.' {
                    dots[found] = host_start + i;
                    found += 1;
                    if found == MAX_HOSTS {
                        break;
                    }
                }
            }
            for k in (2..=MAX_HOSTS).rev() {
                if k - 1 < found {
                    host_starts[hosts] = dots[k - 1] + 1;
                    hosts += 1;
                }
            }
        }

        let mut path_ends = [0; MAX_PATHS];
        let mut paths = 0;
        if path_end < s.len() {
            path_ends[paths] = s.len();
            paths += 1;
        }
        path_ends[paths] = path_end;
        paths += 1;
        let mut prefixes = 0;
        for (i, &b) in bytes[host_end..path_end].iter().enumerate() {
            if b == b'/' {
                let end = host_end + i + 1;
                if end != path_end {
                    path_ends[paths] = end;
                    paths += 1;
                }
                prefixes += 1;
                if prefixes == MAX_PATHS - 2 {
                    break;
                }
            }
        }

        Expressions {
            url: s,
            host_end,
            host_starts,
            hosts,
            path_ends,
            paths,
            host: 0,
            path: 0,
        }
    }
}

impl<'a> Iterator for Expressions<'a> {
    type Item = Expression<'a>;

    fn next(&mut self) -> Option<Expression<'a>> {
        if self.host >= self.hosts {
            return None;
        }
        let start = self.host_starts[self.host];
        let end = self.path_ends[self.path];
        self.path += 1;
        if self.path == self.paths {
            self.path = 0;
            self.host += 1;
        }
        Some(Expression {
            text: &self.url[start..end],
            host_len: self.host_end - start,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.hosts * self.paths).saturating_sub(self.host * self.paths + self.path);
        (left, Some(left))
    }
}

impl ExactSizeIterator for Expressions<'_> {}

impl std::iter::FusedIterator for Expressions<'_> {}

#[cfg(test)]
mod tests {
    use super::super::canonicalize;
    use super::*;

    fn exprs(url: &str) -> Vec<String> {
        canonicalize(url)
            .unwrap()
            .expressions()
            .map(|e| e.as_str().to_owned())
            .collect()
    }

    #[test]
    fn host_suffixes_use_the_last_five_labels_and_skip_the_tld() {
        assert_eq!(
            exprs("http://a.b.c.d.e.f.g/"),
            ["a.b.c.d.e.f.g/", "c.d.e.f.g/", "d.e.f.g/", "e.f.g/", "f.g/"]
        );
        assert_eq!(
            exprs("http://a.b.c.d.e/"),
            ["a.b.c.d.e/", "b.c.d.e/", "c.d.e/", "d.e/"]
        );
        assert_eq!(exprs("http://localhost/"), ["localhost/"]);
        assert_eq!(exprs("http://example.com/"), ["example.com/"]);
    }

    #[test]
    fn ip_hosts_get_no_suffixes() {
        assert_eq!(exprs("http://192.0.2.1/"), ["192.0.2.1/"]);
        assert_eq!(
            exprs("http://[2001:db8::1]/a"),
            ["[2001:db8::1]/a", "[2001:db8::1]/"]
        );
    }

    #[test]
    fn path_variants_are_exact_then_prefixes() {
        assert_eq!(
            exprs("http://h/1/2/3/4/5/6.html?q"),
            [
                "h/1/2/3/4/5/6.html?q",
                "h/1/2/3/4/5/6.html",
                "h/",
                "h/1/",
                "h/1/2/",
                "h/1/2/3/"
            ]
        );
        assert_eq!(exprs("http://h/1/2/"), ["h/1/2/", "h/", "h/1/"]);
        assert_eq!(exprs("http://h/q?"), ["h/q?", "h/q", "h/"]);
        assert_eq!(exprs("http://h/?"), ["h/?", "h/"]);
    }

    #[test]
    fn at_most_thirty_and_all_distinct() {
        let url = canonicalize("http://a.b.c.d.e.f.g.h/1/2/3/4/5/6?x=y").unwrap();
        let all: Vec<_> = url.expressions().collect();
        assert_eq!(all.len(), MAX_EXPRESSIONS);
        assert_eq!(url.expressions().len(), MAX_EXPRESSIONS);
        let mut it = url.expressions();
        it.nth(6);
        assert_eq!(it.len(), MAX_EXPRESSIONS - 7);
        assert_eq!(it.by_ref().count(), MAX_EXPRESSIONS - 7);
        assert_eq!((it.len(), it.next()), (0, None));
        let mut texts: Vec<_> = all.iter().map(Expression::as_str).collect();
        texts.sort_unstable();
        texts.dedup();
        assert_eq!(texts.len(), MAX_EXPRESSIONS);
    }

    #[test]
    fn parts_split_at_the_host() {
        let url = canonicalize("http://a.b.c/1/2.html?param=1").unwrap();
        let e: Vec<_> = url.expressions().collect();
        assert_eq!(e[0].host(), "a.b.c");
        assert_eq!(e[0].path(), "/1/2.html?param=1");
        assert!(e[2].is_host_only());
        assert_eq!(e[5].host(), "b.c");
        assert_eq!(e[5].path(), "/1/2.html");
    }
}
