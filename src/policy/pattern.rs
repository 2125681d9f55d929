//! Host patterns and path prefixes, compiled into [`HostSet`]s for lookups that do not scan.
//!
//! An entry is `host[/path-prefix]`:
//! - a plain host (`example.com`, `192.0.2.7`, `bücher.example`) is canonicalized like a
//!   request URL (IDN to punycode, lowercase, numeric IPv4 forms, ...) and covers that host
//!   and, for domain names, all its subdomains;
//! - a host with `*` inside labels (`*.example.com`, `www.ex*le.com`) is a wildcard: `*`
//!   matches any run of characters within one label (never a `.`); the pattern covers every
//!   host whose last labels match it, and so their subdomains too. A `*` in the top-level
//!   label is an error, as are characters a canonical host name cannot hold;
//! - a path (`example.com/downloads/`) restricts the entry to paths that start with that
//!   canonical prefix at a segment boundary (`/a` covers `/a`, `/a/` and `/a/b`, not `/ab`).
//!
//! # Lookup cost
//! Plain entries sit in a hash map keyed by canonical host. A lookup walks the label
//! boundaries of the request's canonical host (every suffix, not only the five that lookup
//! expressions use, so a deep subdomain cannot skip an entry) and makes one hash lookup per
//! suffix. Wildcards are grouped by their literal right-hand part (`example.com` for
//! `*.example.com`, `com` for `www.ex*le.com`), found by the same walk, and only the patterns
//! of a matching group are tried label by label. IP hosts are looked up exactly.

// foldhash: a keyed (per-process random seed) hash several times faster than SipHash on
// short host names; a lookup hashes each label boundary of the host.
use foldhash::HashMap;

use crate::canon::{self, CanonicalUrl, HostKind};

/// One parsed list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pattern {
    /// A canonical host (domain or IP) and an optional canonical path prefix.
    Host {
        host: String,
        kind: HostKind,
        path: Option<String>,
    },
    /// A wildcard host and an optional canonical path prefix.
    Wildcard {
        labels: Vec<LabelGlob>,
        anchor: String,
        path: Option<String>,
    },
}

/// A pattern for one host label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LabelGlob {
    /// `*`: any label.
    Any,
    /// No `*`: exactly this label.
    Literal(Box<str>),
    /// `ab*cd*ef`: the pieces between the stars, in order.
    Glob(Box<[Box<str>]>),
}

impl LabelGlob {
    fn matches(&self, label: &str) -> bool {
        match self {
            LabelGlob::Any => true,
            LabelGlob::Literal(l) => **l == *label,
            LabelGlob::Glob(pieces) => glob_match(pieces, label),
        }
    }
}

/// `pieces` are the parts of a label pattern split at `*` (so there is at least one star
/// between consecutive pieces): the first is a prefix, the last a suffix, the middle ones
/// appear in order, none overlapping.
fn glob_match(pieces: &[Box<str>], label: &str) -> bool {
    let (Some(first), Some(last)) = (pieces.first(), pieces.last()) else {
        return true;
    };
    if pieces.len() == 1 {
        return **first == *label;
    }
    if label.len() < first.len() + last.len()
        || !label.starts_with(&**first)
        || !label.ends_with(&**last)
    {
        return false;
    }
    let mut rest = &label[first.len()..label.len() - last.len()];
    for piece in &pieces[1..pieces.len() - 1] {
        match rest.find(&**piece) {
            Some(i) => rest = &rest[i + piece.len()..],
            None => return false,
        }
    }
    true
}

/// Whether canonical `path` lies under canonical `prefix` at a segment boundary.
fn path_matches(prefix: &str, path: &str) -> bool {
    path.starts_with(prefix)
        && (path.len() == prefix.len()
            || prefix.ends_with('/')
            || path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

/// Parses one entry. `allow_path` is false for rule host patterns and interception hosts.
///
/// # Errors
/// A message saying what is wrong with the entry (the caller adds the position).
pub(crate) fn parse(text: &str, allow_path: bool) -> Result<Pattern, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty host pattern".into());
    }
    if t.contains("://") {
        return Err(format!(
            "`{t}`: write the entry without a scheme (it covers every scheme)"
        ));
    }
    if t.contains(['?', '#']) {
        return Err(format!(
            "`{t}`: queries and fragments are not allowed in list entries; use a regex"
        ));
    }
    let (host, path) = match t.find('/') {
        Some(i) => (&t[..i], Some(&t[i..])),
        None => (t, None),
    };
    if path.is_some() && !allow_path {
        return Err(format!("`{t}`: a host pattern here takes no path"));
    }
    let path = match path {
        Some(p) => canonical_path(p)?,
        None => None,
    };
    if host.contains('*') {
        let (labels, anchor) = parse_wildcard(host)?;
        return Ok(Pattern::Wildcard {
            labels,
            anchor,
            path,
        });
    }
    if host.is_empty() {
        return Err(format!("`{t}`: no host"));
    }
    // A bare IPv6 address needs its brackets back to be read as a URL host.
    let url = if host.parse::<std::net::Ipv6Addr>().is_ok() {
        canon::canonicalize(&format!("http://[{host}]/"))
    } else {
        canon::canonicalize(&format!("http://{host}/"))
    }
    .map_err(|e| format!("`{host}` is not a host name: {e}"))?;
    if url.port().is_some() {
        return Err(format!("`{host}`: ports are not part of host patterns"));
    }
    if url.host_kind() == HostKind::Domain
        && !url
            .host()
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(format!("`{host}` is not a host name"));
    }
    Ok(Pattern::Host {
        host: url.host().to_owned(),
        kind: url.host_kind(),
        path,
    })
}

/// The canonical form of a path prefix; `None` for `/` (the whole host).
fn canonical_path(path: &str) -> Result<Option<String>, String> {
    let url = canon::canonicalize(&format!("http://h.invalid{path}"))
        .map_err(|e| format!("`{path}` is not a path: {e}"))?;
    Ok((url.path() != "/").then(|| url.path().to_owned()))
}

fn parse_wildcard(host: &str) -> Result<(Vec<LabelGlob>, String), String> {
    let lower = host.trim_end_matches('.').to_ascii_lowercase();
    if !lower.is_ascii() {
        return Err(format!(
            "`{host}`: write internationalized names in wildcard patterns in punycode (xn--...)"
        ));
    }
    let parts: Vec<&str> = lower.split('.').collect();
    for p in &parts {
        if p.is_empty() {
            return Err(format!("`{host}`: empty label in host pattern"));
        }
        if let Some(c) = p
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '*')))
        {
            return Err(format!(
                "`{host}`: `{c}` cannot appear in a host name (use `*` inside labels only)"
            ));
        }
        if p.len() > 63 {
            return Err(format!("`{host}`: label longer than 63 characters"));
        }
    }
    let Some(tld) = parts.last().filter(|_| parts.len() >= 2) else {
        return Err(format!(
            "`{host}`: a wildcard pattern needs a literal top-level label, e.g. `*.example.com`"
        ));
    };
    if tld.contains('*') {
        return Err(format!(
            "`{host}`: a wildcard in the top-level label (`{tld}`) is not allowed"
        ));
    }
    let last_wild = parts.iter().rposition(|p| p.contains('*')).unwrap_or(0);
    let anchor = parts[last_wild + 1..].join(".");
    let labels = parts
        .iter()
        .map(|p| {
            if *p == "*" {
                LabelGlob::Any
            } else if p.contains('*') {
                LabelGlob::Glob(p.split('*').map(Box::from).collect())
            } else {
                LabelGlob::Literal((*p).into())
            }
        })
        .collect();
    Ok((labels, anchor))
}

#[derive(Debug, Default)]
struct HostEntry {
    /// An IP entry covers only that address, never a longer "domain" ending in it
    /// (`1.192.0.2.7` is not under `192.0.2.7`).
    ip: bool,
    /// The entry text when the whole host (and its subdomains) is covered.
    whole: Option<Box<str>>,
    /// (canonical path prefix, entry text).
    prefixes: Vec<(Box<str>, Box<str>)>,
}

#[derive(Debug)]
struct Wildcard {
    labels: Box<[LabelGlob]>,
    path: Option<Box<str>>,
    text: Box<str>,
}

impl Wildcard {
    fn matches(&self, host: &str, path: &str) -> bool {
        let mut host_labels = host.rsplit('.');
        for glob in self.labels.iter().rev() {
            match host_labels.next() {
                Some(label) if glob.matches(label) => {}
                _ => return false,
            }
        }
        self.path.as_deref().is_none_or(|p| path_matches(p, path))
    }
}

/// A compiled set of host patterns. Immutable once built; lookups allocate nothing.
#[derive(Debug, Default)]
pub(crate) struct HostSet {
    hosts: HashMap<Box<str>, HostEntry>,
    /// Wildcards by their literal right-hand part.
    wildcards: HashMap<Box<str>, Vec<Wildcard>>,
    /// Fewest and most labels among `hosts` keys: suffixes outside are not looked up.
    host_labels: LabelRange,
    /// The same for `wildcards` keys.
    anchor_labels: LabelRange,
    len: usize,
}

/// An inclusive range of label counts; empty (`min > max`) by default.
#[derive(Debug, Clone, Copy)]
struct LabelRange {
    min: usize,
    max: usize,
}

impl Default for LabelRange {
    fn default() -> Self {
        Self {
            min: usize::MAX,
            max: 0,
        }
    }
}

impl LabelRange {
    fn add(&mut self, name: &str) {
        let n = label_count(name);
        self.min = self.min.min(n);
        self.max = self.max.max(n);
    }

    fn contains(self, n: usize) -> bool {
        self.min <= n && n <= self.max
    }
}

fn label_count(name: &str) -> usize {
    name.bytes().filter(|&b| b == b'.').count() + 1
}

impl HostSet {
    /// Adds a parsed pattern; `text` is what a match reports (the entry as written).
    pub(crate) fn insert(&mut self, pattern: Pattern, text: &str) {
        self.len += 1;
        let text: Box<str> = text.trim().into();
        match pattern {
            Pattern::Host { host, kind, path } => {
                self.host_labels.add(&host);
                let e = self.hosts.entry(host.into()).or_default();
                e.ip = kind != HostKind::Domain;
                match path {
                    None => {
                        e.whole.get_or_insert(text);
                    }
                    Some(p) => e.prefixes.push((p.into(), text)),
                }
            }
            Pattern::Wildcard {
                labels,
                anchor,
                path,
            } => {
                self.anchor_labels.add(&anchor);
                self.wildcards
                    .entry(anchor.into())
                    .or_default()
                    .push(Wildcard {
                        labels: labels.into(),
                        path: path.map(Into::into),
                        text,
                    });
            }
        }
    }

    /// Number of entries inserted.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Number of wildcard entries.
    pub(crate) fn wildcard_count(&self) -> usize {
        self.wildcards.values().map(Vec::len).sum()
    }

    /// The first entry (most specific host first) covering `url`, as written.
    pub(crate) fn find_url(&self, url: &CanonicalUrl) -> Option<&str> {
        self.find(url.host(), url.host_kind(), url.path())
    }

    /// The first entry covering `host` (canonical) and `path` (canonical, no query).
    pub(crate) fn find(&self, host: &str, kind: HostKind, path: &str) -> Option<&str> {
        if self.len == 0 {
            return None;
        }
        if kind != HostKind::Domain {
            return self.hosts.get(host).and_then(|e| e.lookup(path));
        }
        let floor = self.host_labels.min.min(self.anchor_labels.min);
        let mut labels = label_count(host);
        let mut suffix = host;
        while labels >= floor {
            if self.host_labels.contains(labels)
                && let Some(hit) = self
                    .hosts
                    .get(suffix)
                    .filter(|e| !e.ip || suffix.len() == host.len())
                    .and_then(|e| e.lookup(path))
            {
                return Some(hit);
            }
            if self.anchor_labels.contains(labels)
                && let Some(ws) = self.wildcards.get(suffix)
                && let Some(w) = ws.iter().find(|w| w.matches(host, path))
            {
                return Some(&w.text);
            }
            // A byte scan: faster than `str::find(char)` on names this short.
            match suffix.bytes().position(|b| b == b'.') {
                Some(i) => suffix = &suffix[i + 1..],
                None => return None,
            }
            labels -= 1;
        }
        None
    }
}

impl HostEntry {
    fn lookup(&self, path: &str) -> Option<&str> {
        if let Some(t) = &self.whole {
            return Some(t);
        }
        self.prefixes
            .iter()
            .find(|(p, _)| path_matches(p, path))
            .map(|(_, t)| &**t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(entries: &[&str]) -> HostSet {
        let mut s = HostSet::default();
        for e in entries {
            s.insert(parse(e, true).unwrap(), e);
        }
        s
    }

    fn hit<'a>(s: &'a HostSet, url: &str) -> Option<&'a str> {
        let u = canon::canonicalize(url).unwrap();
        // The set borrows nothing from the URL, so the answer can outlive it.
        s.find_url(&u)
    }

    #[test]
    fn bare_domain_covers_subdomains_only_at_label_boundaries() {
        let s = set(&["example.com"]);
        assert_eq!(hit(&s, "http://example.com/"), Some("example.com"));
        assert_eq!(
            hit(&s, "https://a.b.c.d.e.f.example.com/x"),
            Some("example.com")
        );
        assert_eq!(hit(&s, "http://EXAMPLE.com./"), Some("example.com"));
        assert_eq!(hit(&s, "http://badexample.com/"), None);
        assert_eq!(hit(&s, "http://example.com.evil.test/"), None);
    }

    #[test]
    fn wildcards_inside_labels() {
        let s = set(&["www.ex*le.com", "*.corp.example"]);
        assert_eq!(hit(&s, "http://www.example.com/"), Some("www.ex*le.com"));
        assert_eq!(hit(&s, "http://www.exle.com/"), Some("www.ex*le.com"));
        assert_eq!(hit(&s, "http://x.www.exAMple.com/"), Some("www.ex*le.com"));
        assert_eq!(hit(&s, "http://www.example.org/"), None);
        assert_eq!(hit(&s, "http://ww.example.com/"), None);
        assert_eq!(hit(&s, "http://a.corp.example/"), Some("*.corp.example"));
        assert_eq!(hit(&s, "http://b.a.corp.example/"), Some("*.corp.example"));
        assert_eq!(hit(&s, "http://corp.example/"), None);
    }

    #[test]
    fn path_prefixes_through_canonical_forms() {
        let s = set(&["example.org/Docs/", "example.net/a"]);
        assert_eq!(
            hit(&s, "http://example.org/x/../Docs/%69ndex.html"),
            Some("example.org/Docs/")
        );
        assert_eq!(hit(&s, "http://example.org/docs/"), None);
        assert_eq!(hit(&s, "http://example.org/"), None);
        assert_eq!(hit(&s, "http://example.net/a"), Some("example.net/a"));
        assert_eq!(hit(&s, "http://example.net/a/b?q"), Some("example.net/a"));
        assert_eq!(hit(&s, "http://example.net/ab"), None);
    }

    #[test]
    fn ip_hosts_match_exactly_in_any_spelling() {
        let s = set(&["192.0.2.7", "2001:db8::1"]);
        assert_eq!(hit(&s, "http://3221225991/"), Some("192.0.2.7"));
        assert_eq!(hit(&s, "http://0xc0.0.2.7/"), Some("192.0.2.7"));
        assert_eq!(hit(&s, "http://1.192.0.2.7/"), None);
        assert_eq!(hit(&s, "http://[2001:DB8:0::1]/"), Some("2001:db8::1"));
    }

    #[test]
    fn idn_entries_are_punycoded() {
        let s = set(&["bücher.example"]);
        assert_eq!(
            hit(&s, "http://xn--bcher-kva.example/"),
            Some("bücher.example")
        );
    }

    #[test]
    fn bad_patterns() {
        for (p, needle) in [
            ("example.*", "top-level label"),
            ("*", "literal top-level"),
            ("a..*.com", "empty label"),
            ("ex%ample*.com", "cannot appear"),
            ("https://example.com/", "without a scheme"),
            ("example.com/?q=1", "queries"),
            ("", "empty"),
            ("example.com:8080", "port"),
        ] {
            let e = parse(p, true).unwrap_err();
            assert!(e.contains(needle), "{p:?}: {e}");
        }
        assert!(
            parse("example.com/x", false)
                .unwrap_err()
                .contains("no path")
        );
    }

    #[test]
    fn glob_pieces() {
        let g = |p: &str| LabelGlob::Glob(p.split('*').map(Box::from).collect());
        assert!(g("a*b*c").matches("abc"));
        assert!(g("a*b*c").matches("axxbyyc"));
        assert!(!g("a*b*c").matches("acb"));
        assert!(!g("ab*ba").matches("aba"));
        assert!(g("*x").matches("x"));
        assert!(g("x*").matches("xyz"));
    }
}
