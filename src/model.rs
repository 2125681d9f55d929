//! The reputation vocabulary shared by the proxy, the policy and the reputation server:
//! scores, risk bands, categories, table entries, keys, file verdicts and the combination
//! rule (DESIGN.md §3). Pure core: no I/O, no clock (callers pass the time in), and it imports
//! nothing of this crate but [`crate::canon`].

use std::collections::BTreeSet;
use std::fmt;

use crate::canon::{self, CanonError, CanonicalUrl};

/// A reputation score, 0 (worst) to 100 (best). Built only through [`Score::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Score(u8);

/// The highest score.
pub const MAX_SCORE: u8 = 100;

impl Score {
    /// The lowest score, 0.
    pub const ZERO: Score = Score(0);

    /// A score, or `None` when `value` is above [`MAX_SCORE`].
    pub fn new(value: u8) -> Option<Score> {
        (value <= MAX_SCORE).then_some(Score(value))
    }

    /// A score from any integer, or `None` when it is outside 0..=100.
    pub fn from_i64(value: i64) -> Option<Score> {
        u8::try_from(value).ok().and_then(Score::new)
    }

    /// The numeric value, 0..=100.
    pub fn get(self) -> u8 {
        self.0
    }

    /// The risk band this score falls in (never [`RiskLevel::Untested`]).
    pub fn risk(self) -> RiskLevel {
        match self.0 {
            0..=50 => RiskLevel::Dangerous,
            51..=65 => RiskLevel::HighlySuspicious,
            66..=80 => RiskLevel::Suspicious,
            _ => RiskLevel::Safe,
        }
    }
}

impl fmt::Display for Score {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A risk level: one of the four score bands, or untested (no entry anywhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RiskLevel {
    /// Score 0-50.
    Dangerous,
    /// Score 51-65.
    HighlySuspicious,
    /// Score 66-80.
    Suspicious,
    /// Score 81-100.
    Safe,
    /// No entry matched; not a score.
    Untested,
}

impl RiskLevel {
    /// A stable snake-case name, e.g. `highly_suspicious`.
    pub fn as_str(self) -> &'static str {
        match self {
            RiskLevel::Dangerous => "dangerous",
            RiskLevel::HighlySuspicious => "highly_suspicious",
            RiskLevel::Suspicious => "suspicious",
            RiskLevel::Safe => "safe",
            RiskLevel::Untested => "untested",
        }
    }
}

impl fmt::Display for RiskLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a category says something about safety or about content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CategoryClass {
    /// A threat: malware, phishing, ...
    Security,
    /// What a site is about: news, gambling, ...
    Content,
    /// Defined by an administrator.
    Custom,
}

/// The built-in taxonomy: name and class. Names are stable; admin-defined categories may not
/// reuse them.
pub const BUILTIN_CATEGORIES: &[(&str, CategoryClass)] = &[
    ("malware", CategoryClass::Security),
    ("phishing", CategoryClass::Security),
    ("command-and-control", CategoryClass::Security),
    ("cryptomining", CategoryClass::Security),
    ("spam", CategoryClass::Security),
    ("newly-observed", CategoryClass::Security),
    ("potentially-unwanted", CategoryClass::Security),
    ("adult", CategoryClass::Content),
    ("gambling", CategoryClass::Content),
    ("social-networking", CategoryClass::Content),
    ("streaming", CategoryClass::Content),
    ("finance", CategoryClass::Content),
    ("health", CategoryClass::Content),
    ("news", CategoryClass::Content),
    ("shopping", CategoryClass::Content),
    ("games", CategoryClass::Content),
    ("education", CategoryClass::Content),
    ("government", CategoryClass::Content),
    ("search-engines", CategoryClass::Content),
    ("webmail", CategoryClass::Content),
    ("file-sharing", CategoryClass::Content),
    ("advertising", CategoryClass::Content),
    ("technology", CategoryClass::Content),
    ("travel", CategoryClass::Content),
    ("weapons", CategoryClass::Content),
    ("drugs", CategoryClass::Content),
];

/// The longest category name, in bytes.
pub const MAX_CATEGORY_LEN: usize = 64;

/// A syntactically valid category name: 1 to [`MAX_CATEGORY_LEN`] bytes of lowercase ASCII
/// letters, digits and `-`, starting with a letter, no `--`, not ending in `-`.
///
/// Whether the name is *known* (built-in or admin-defined) is a [`Taxonomy`] question.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Category(String);

/// Why a category name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CategoryError {
    /// Not of the form described at [`Category`].
    #[error(
        "invalid category name {0:?}: use 1-64 lowercase letters, digits and '-', starting with a letter"
    )]
    InvalidName(String),
    /// Neither built-in nor defined by an administrator.
    #[error("unknown category {0:?}")]
    Unknown(String),
    /// An admin-defined category may not reuse a built-in name.
    #[error("category {0:?} is built in")]
    Builtin(String),
}

impl Category {
    /// Validates a name.
    ///
    /// # Errors
    /// [`CategoryError::InvalidName`].
    pub fn parse(name: &str) -> Result<Category, CategoryError> {
        let b = name.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= MAX_CATEGORY_LEN
            && b[0].is_ascii_lowercase()
            && b.last() != Some(&b'-')
            && !name.contains("--")
            && b.iter()
                .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
        if ok {
            Ok(Category(name.to_owned()))
        } else {
            Err(CategoryError::InvalidName(name.chars().take(80).collect()))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The class of a built-in category, `None` for any other name.
    pub fn builtin_class(&self) -> Option<CategoryClass> {
        BUILTIN_CATEGORIES
            .iter()
            .find(|(n, _)| *n == self.0)
            .map(|&(_, c)| c)
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The known categories: the built-in ones plus those an administrator defined.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Taxonomy {
    custom: BTreeSet<Category>,
}

impl Taxonomy {
    /// Adds an admin-defined category.
    ///
    /// # Errors
    /// [`CategoryError::Builtin`] when the name is a built-in one.
    pub fn define(&mut self, category: Category) -> Result<(), CategoryError> {
        if category.builtin_class().is_some() {
            return Err(CategoryError::Builtin(category.0));
        }
        self.custom.insert(category);
        Ok(())
    }

    /// Whether the category is built in or defined.
    pub fn is_known(&self, category: &Category) -> bool {
        category.builtin_class().is_some() || self.custom.contains(category)
    }

    /// The class of a known category, `None` when unknown.
    pub fn class(&self, category: &Category) -> Option<CategoryClass> {
        category.builtin_class().or_else(|| {
            self.custom
                .contains(category)
                .then_some(CategoryClass::Custom)
        })
    }

    /// Validates a name and checks it is known.
    ///
    /// # Errors
    /// [`CategoryError::InvalidName`] or [`CategoryError::Unknown`].
    pub fn resolve(&self, name: &str) -> Result<Category, CategoryError> {
        let c = Category::parse(name)?;
        if self.is_known(&c) {
            Ok(c)
        } else {
            Err(CategoryError::Unknown(c.0))
        }
    }

    /// The admin-defined categories, sorted.
    pub fn custom(&self) -> impl Iterator<Item = &Category> {
        self.custom.iter()
    }
}

/// Where an entry came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    /// An imported feed, by its name (e.g. `urlhaus`).
    Feed(String),
    /// Written by an administrator.
    Manual,
    /// Learned from feedback escalation.
    Escalation,
}

impl Source {
    /// Stored form: `manual`, `escalation` or `feed:NAME`.
    pub fn to_stored(&self) -> String {
        match self {
            Source::Feed(n) => format!("feed:{n}"),
            Source::Manual => "manual".to_owned(),
            Source::Escalation => "escalation".to_owned(),
        }
    }

    /// Parses the stored form; `None` for anything else (an empty feed name included).
    pub fn from_stored(s: &str) -> Option<Source> {
        match s {
            "manual" => Some(Source::Manual),
            "escalation" => Some(Source::Escalation),
            _ => s
                .strip_prefix("feed:")
                .filter(|n| !n.is_empty())
                .map(|n| Source::Feed(n.to_owned())),
        }
    }
}

/// What part of the URL space a key covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// `host/`: the host and everything under it, its subdomains included.
    Host,
    /// `host/path/`: a path prefix on the host and its subdomains.
    PathPrefix,
    /// `host/path` or `host/path?query`: exactly that URL.
    Exact,
}

/// Path prefixes deeper than this many `/` never appear among a URL's expressions, so a
/// prefix key deeper than that could never match anything deeper than itself.
pub const MAX_PREFIX_SLASHES: usize = canon::MAX_PATHS - 2;

/// A table key: a Safe Browsing style expression in canonical form, e.g. `example.com/`,
/// `example.com/dl/`, `example.com/a.php?id=1`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    text: String,
    host_len: usize,
}

/// Why a key is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key is not a URL the canonicalizer accepts.
    #[error("invalid key: {0}")]
    Canon(#[from] CanonError),
    /// A path prefix deeper than any lookup expression goes.
    #[error("path prefix has more than {MAX_PREFIX_SLASHES} '/' and could never match")]
    PrefixTooDeep,
    /// The host holds bytes no host name can (`not a url` would become `not%20a%20url`).
    #[error("not a url: no host name can be {0:?}")]
    NotAHost(String),
}

impl Key {
    /// Parses a key written as `host/...`, a bare `host`, or a whole URL with a scheme, and
    /// canonicalizes it: two spellings of one expression give one key. For what an admin, a
    /// feed or an API client writes: the host must be an address or a name
    /// ([`CanonicalUrl::host_is_well_formed`](canon::CanonicalUrl::host_is_well_formed)).
    ///
    /// # Errors
    /// [`KeyError`] when the input is not a URL, has no host a URL can name, or is a prefix
    /// deeper than lookups go.
    pub fn parse(input: &str) -> Result<Key, KeyError> {
        let url = Key::canonical(input)?;
        if !url.host_is_well_formed() {
            return Err(KeyError::NotAHost(url.host().to_owned()));
        }
        Key::from_url(&url)
    }

    /// [`Key::parse`] without the host check: for keys read back from a store or a server's
    /// answer, so that reading never refuses a key a peer stored.
    ///
    /// # Errors
    /// [`KeyError`] when the input is not a URL or is a prefix deeper than lookups go.
    pub fn read(input: &str) -> Result<Key, KeyError> {
        Key::from_url(&Key::canonical(input)?)
    }

    /// The canonical URL a key is written as: a whole URL with a scheme, or `host/...` and a
    /// bare `host`, read as `http://`.
    fn canonical(input: &str) -> Result<canon::CanonicalUrl, KeyError> {
        let trimmed = input.trim();
        let has_scheme = trimmed.find("://").is_some_and(|i| {
            i > 0
                && trimmed[..i]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        });
        Ok(if has_scheme {
            canon::canonicalize(trimmed)?
        } else {
            canon::canonicalize(&format!("http://{trimmed}"))?
        })
    }

    /// The exact key of a canonical URL: host, path and query. A URL with path `/` and no
    /// query gives the `host/` key.
    ///
    /// # Errors
    /// [`KeyError::PrefixTooDeep`].
    pub fn from_url(url: &CanonicalUrl) -> Result<Key, KeyError> {
        let key = Key {
            text: format!("{}{}", url.host(), url.path_and_query()),
            host_len: url.host().len(),
        };
        if key.kind() == KeyKind::PathPrefix
            && key.path().bytes().filter(|&b| b == b'/').count() > MAX_PREFIX_SLASHES
        {
            return Err(KeyError::PrefixTooDeep);
        }
        Ok(key)
    }

    /// The `host/` key of a URL's host.
    pub fn host_key(url: &CanonicalUrl) -> Key {
        Key {
            text: format!("{}/", url.host()),
            host_len: url.host().len(),
        }
    }

    /// Rebuilds a key from text that is already canonical (e.g. read back from the store).
    /// Re-parses it and checks that nothing changed; `None` when it is not canonical.
    pub fn from_canonical(text: &str) -> Option<Key> {
        Key::read(text).ok().filter(|k| k.text == text)
    }

    /// The key text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The host part.
    pub fn host(&self) -> &str {
        &self.text[..self.host_len]
    }

    /// The path part, starting with `/`, with the query if any.
    pub fn path(&self) -> &str {
        &self.text[self.host_len..]
    }

    /// What the key covers.
    pub fn kind(&self) -> KeyKind {
        let path = self.path();
        if path == "/" {
            KeyKind::Host
        } else if path.ends_with('/') && !path.contains('?') {
            KeyKind::PathPrefix
        } else {
            KeyKind::Exact
        }
    }

    /// Specificity rank for the combination rule: a longer host first, then a longer path.
    fn specificity(&self) -> (usize, usize) {
        (self.host_len, self.text.len() - self.host_len)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The hosts whose entries can match a URL on `host`: the host itself, then its suffixes as
/// the lookup expressions use them (at most [`canon::MAX_HOSTS`]).
pub fn lookup_hosts(url: &CanonicalUrl) -> Vec<&str> {
    let mut hosts: Vec<&str> = Vec::with_capacity(canon::MAX_HOSTS);
    for e in url.expressions() {
        if hosts.last() != Some(&e.host()) {
            hosts.push(e.host());
        }
    }
    hosts
}

/// One row of the reputation table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// What the entry covers.
    pub key: Key,
    /// Its score.
    pub score: Score,
    /// Its categories, sorted and without duplicates (see [`Entry::new`]).
    pub categories: Vec<Category>,
    /// Where it came from.
    pub source: Source,
    /// When it was first added, unix seconds.
    pub added: i64,
    /// When it was last changed, unix seconds.
    pub updated: i64,
    /// When it stops applying, unix seconds; `None` for never.
    pub expires: Option<i64>,
    /// Free text for humans.
    pub note: Option<String>,
    /// Which tier's table it comes from: 0 for this server's own entries, 1 for one learned
    /// from the upstream server's own table, 2 from the upstream's upstream, and so on.
    pub tier: u8,
}

impl Entry {
    /// A new entry added and updated at `now`, without expiry or note. Categories are sorted
    /// and deduplicated.
    pub fn new(
        key: Key,
        score: Score,
        mut categories: Vec<Category>,
        source: Source,
        now: i64,
    ) -> Entry {
        categories.sort();
        categories.dedup();
        Entry {
            key,
            score,
            categories,
            source,
            added: now,
            updated: now,
            expires: None,
            note: None,
            tier: 0,
        }
    }

    /// Whether the entry has expired at `now`.
    pub fn is_expired(&self, now: i64) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }
}

/// The combined answer for one URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The band of [`score`](Self::score), or untested.
    pub risk: RiskLevel,
    /// The worst score of all matching entries; `None` when untested.
    pub score: Option<Score>,
    /// The categories of the most specific matching entry.
    pub categories: Vec<Category>,
    /// The keys of all matching entries, most specific first (for explain).
    pub matched: Vec<Key>,
}

impl Verdict {
    /// The answer when nothing matched.
    pub fn untested() -> Verdict {
        Verdict {
            risk: RiskLevel::Untested,
            score: None,
            categories: Vec::new(),
            matched: Vec::new(),
        }
    }
}

/// The combination rule (DESIGN.md §3). An entry matches when its key is one of the URL's
/// lookup expressions and it has not expired at `now`. The worst (lowest) score of all
/// matches wins; categories come from the most specific match: the one with the longest
/// host, then the longest path. No match gives [`Verdict::untested`].
pub fn combine<'a>(
    url: &CanonicalUrl,
    entries: impl IntoIterator<Item = &'a Entry>,
    now: i64,
) -> Verdict {
    let exprs: Vec<&str> = url.expressions().map(|e| e.as_str()).collect();
    let mut matched: Vec<&Entry> = entries
        .into_iter()
        .filter(|e| !e.is_expired(now) && exprs.contains(&e.key.as_str()))
        .collect();
    if matched.is_empty() {
        return Verdict::untested();
    }
    matched.sort_by(|a, b| {
        b.key
            .specificity()
            .cmp(&a.key.specificity())
            .then_with(|| a.key.cmp(&b.key))
    });
    matched.dedup_by(|a, b| a.key == b.key);
    let score = matched.iter().map(|e| e.score).min().unwrap_or(Score(0));
    Verdict {
        risk: score.risk(),
        score: Some(score),
        categories: matched[0].categories.clone(),
        matched: matched.iter().map(|e| e.key.clone()).collect(),
    }
}

/// A file's reputation, for the file-hash table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileVerdict {
    /// Known good.
    Clean,
    /// Reported, not confirmed.
    Suspicious,
    /// Known bad.
    Malicious,
}

impl FileVerdict {
    /// Stable name: `clean`, `suspicious`, `malicious`.
    pub fn as_str(self) -> &'static str {
        match self {
            FileVerdict::Clean => "clean",
            FileVerdict::Suspicious => "suspicious",
            FileVerdict::Malicious => "malicious",
        }
    }

    /// Parses [`as_str`](Self::as_str) output.
    pub fn parse(s: &str) -> Option<FileVerdict> {
        match s {
            "clean" => Some(FileVerdict::Clean),
            "suspicious" => Some(FileVerdict::Suspicious),
            "malicious" => Some(FileVerdict::Malicious),
            _ => None,
        }
    }
}

/// A SHA-256 digest as 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sha256Hex(String);

impl Sha256Hex {
    /// Validates 64 hex digits (either case) and lowercases them.
    pub fn parse(s: &str) -> Option<Sha256Hex> {
        (s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| Sha256Hex(s.to_ascii_lowercase()))
    }

    /// The hex text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One row of the file-hash table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// The file's SHA-256.
    pub sha256: Sha256Hex,
    /// Its verdict.
    pub verdict: FileVerdict,
    /// A name for humans, e.g. a malware family or the file name.
    pub name: Option<String>,
    /// Where the verdict came from.
    pub source: Source,
    /// When it was last changed, unix seconds.
    pub updated: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(v: u8) -> Score {
        Score::new(v).unwrap()
    }

    fn entry(key: &str, s: u8, cats: &[&str]) -> Entry {
        Entry::new(
            Key::parse(key).unwrap(),
            score(s),
            cats.iter().map(|c| Category::parse(c).unwrap()).collect(),
            Source::Manual,
            1000,
        )
    }

    fn url(u: &str) -> CanonicalUrl {
        canon::canonicalize(u).unwrap()
    }

    #[test]
    fn band_edges() {
        for (v, r) in [
            (0, RiskLevel::Dangerous),
            (50, RiskLevel::Dangerous),
            (51, RiskLevel::HighlySuspicious),
            (65, RiskLevel::HighlySuspicious),
            (66, RiskLevel::Suspicious),
            (80, RiskLevel::Suspicious),
            (81, RiskLevel::Safe),
            (100, RiskLevel::Safe),
        ] {
            assert_eq!(score(v).risk(), r, "score {v}");
        }
        assert_eq!(Score::new(101), None);
        assert_eq!(Score::from_i64(-1), None);
        assert_eq!(Score::from_i64(300), None);
        assert_eq!(Score::from_i64(100), Some(score(100)));
    }

    #[test]
    fn category_names() {
        for ok in ["malware", "a", "x-1", "my-cat2"] {
            assert!(Category::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Malware",
            "1abc",
            "a--b",
            "a-",
            "a b",
            "é",
            &"a".repeat(65),
        ] {
            assert!(Category::parse(bad).is_err(), "{bad}");
        }
        let mut t = Taxonomy::default();
        assert!(t.resolve("phishing").is_ok());
        assert_eq!(
            t.resolve("intranet"),
            Err(CategoryError::Unknown("intranet".into()))
        );
        t.define(Category::parse("intranet").unwrap()).unwrap();
        assert_eq!(
            t.class(&Category::parse("intranet").unwrap()),
            Some(CategoryClass::Custom)
        );
        assert!(t.define(Category::parse("malware").unwrap()).is_err());
    }

    #[test]
    fn keys_are_canonical_and_classified() {
        let k = Key::parse("WWW.Example.COM.").unwrap();
        assert_eq!(k.as_str(), "www.example.com/");
        assert_eq!(k.kind(), KeyKind::Host);
        let k = Key::parse("https://a.example/x/./y/").unwrap();
        assert_eq!(
            (k.as_str(), k.kind()),
            ("a.example/x/y/", KeyKind::PathPrefix)
        );
        let k = Key::parse("a.example/p.php?id=1#frag").unwrap();
        assert_eq!(
            (k.as_str(), k.kind()),
            ("a.example/p.php?id=1", KeyKind::Exact)
        );
        assert_eq!(k.host(), "a.example");
        assert_eq!(k.path(), "/p.php?id=1");
        assert_eq!(Key::parse("a.example/page").unwrap().kind(), KeyKind::Exact);
        assert!(Key::parse("").is_err());
        // What an admin or a feed writes must name a host; what is read back need not.
        assert!(matches!(
            Key::parse("not a url"),
            Err(KeyError::NotAHost(h)) if h == "not%20a%20url"
        ));
        assert!(Key::parse("http://%01%80.com/x").is_err());
        assert_eq!(Key::read("not a url").unwrap().as_str(), "not%20a%20url/");
        assert!(Key::from_canonical("not%20a%20url/").is_some());
        assert!(Key::parse("http://[zz]/").is_err());
        assert_eq!(
            Key::parse("h.example/1/2/3/4/"),
            Err(KeyError::PrefixTooDeep)
        );
        assert!(Key::parse("h.example/1/2/3/").is_ok());
        assert!(Key::from_canonical("h.example/").is_some());
        assert!(Key::from_canonical("H.example/").is_none());
    }

    #[test]
    fn sources_round_trip() {
        for s in [
            Source::Manual,
            Source::Escalation,
            Source::Feed("urlhaus".into()),
        ] {
            assert_eq!(Source::from_stored(&s.to_stored()), Some(s));
        }
        assert_eq!(Source::from_stored("feed:"), None);
        assert_eq!(Source::from_stored("other"), None);
    }

    #[test]
    fn no_match_is_untested() {
        let e = [entry("other.example/", 10, &["malware"])];
        let v = combine(&url("http://a.example/"), &e, 2000);
        assert_eq!(v, Verdict::untested());
        assert_eq!(v.risk, RiskLevel::Untested);
    }

    #[test]
    fn host_entry_covers_subdomains_and_paths() {
        let e = [entry("example.test/", 40, &["phishing"])];
        let v = combine(&url("http://a.b.example.test/x/y?z=1"), &e, 2000);
        assert_eq!(v.risk, RiskLevel::Dangerous);
        assert_eq!(v.score, Some(score(40)));
        assert_eq!(v.matched[0].as_str(), "example.test/");
    }

    #[test]
    fn worst_score_wins_categories_from_most_specific() {
        let e = [
            entry("example.test/", 90, &["news"]),
            entry("example.test/dl/", 60, &["file-sharing"]),
            entry("example.test/dl/x.exe", 95, &["malware", "technology"]),
            entry("unrelated.example/", 0, &["malware"]),
        ];
        let v = combine(&url("http://example.test/dl/x.exe"), &e, 2000);
        assert_eq!(v.score, Some(score(60)));
        assert_eq!(v.risk, RiskLevel::HighlySuspicious);
        let cats: Vec<_> = v.categories.iter().map(Category::as_str).collect();
        assert_eq!(cats, ["malware", "technology"]);
        let keys: Vec<_> = v.matched.iter().map(Key::as_str).collect();
        assert_eq!(
            keys,
            ["example.test/dl/x.exe", "example.test/dl/", "example.test/"]
        );
        // Another file under the prefix: prefix and host match, not the exact entry.
        let v = combine(&url("http://example.test/dl/y.zip"), &e, 2000);
        assert_eq!(v.score, Some(score(60)));
        assert_eq!(v.categories[0].as_str(), "file-sharing");
        // Outside the prefix: the host entry alone.
        let v = combine(&url("http://example.test/about"), &e, 2000);
        assert_eq!((v.score, v.risk), (Some(score(90)), RiskLevel::Safe));
    }

    #[test]
    fn longer_host_is_more_specific_than_longer_path() {
        let e = [
            entry("example.test/a/", 70, &["news"]),
            entry("www.example.test/", 85, &["shopping"]),
        ];
        let v = combine(&url("http://www.example.test/a/b"), &e, 2000);
        assert_eq!((v.score, v.risk), (Some(score(70)), RiskLevel::Suspicious));
        assert_eq!(v.categories[0].as_str(), "shopping");
    }

    #[test]
    fn expired_entries_do_not_match() {
        let mut e = entry("example.test/", 10, &["malware"]);
        e.expires = Some(1500);
        assert_eq!(
            combine(&url("http://example.test/"), [&e], 1499).score,
            Some(score(10))
        );
        assert_eq!(
            combine(&url("http://example.test/"), [&e], 1500).risk,
            RiskLevel::Untested
        );
    }

    #[test]
    fn exact_key_with_query_matches_only_that_query() {
        let e = [entry("example.test/p?id=1", 5, &["phishing"])];
        assert_eq!(
            combine(&url("http://example.test/p?id=1"), &e, 0).score,
            Some(score(5))
        );
        assert_eq!(
            combine(&url("http://example.test/p?id=2"), &e, 0).risk,
            RiskLevel::Untested
        );
        assert_eq!(
            combine(&url("http://example.test/p"), &e, 0).risk,
            RiskLevel::Untested
        );
    }

    #[test]
    fn lookup_hosts_are_host_and_suffixes() {
        assert_eq!(
            lookup_hosts(&url("http://a.b.example.test/x/y")),
            ["a.b.example.test", "b.example.test", "example.test"]
        );
        assert_eq!(lookup_hosts(&url("http://192.0.2.1/x")), ["192.0.2.1"]);
    }

    #[test]
    fn sha256_hex() {
        let h = "A".repeat(64);
        assert_eq!(Sha256Hex::parse(&h).unwrap().as_str(), "a".repeat(64));
        assert!(Sha256Hex::parse("abc").is_none());
        assert!(Sha256Hex::parse(&"g".repeat(64)).is_none());
        assert_eq!(
            FileVerdict::parse("malicious"),
            Some(FileVerdict::Malicious)
        );
    }
}
