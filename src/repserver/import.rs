//! Feed import: URLhaus CSV, plain domain lists, hosts files and webrep JSON-lines, read as a
//! stream (bounded memory: one line at a time, each at most
//! [`ImportOptions::max_line_bytes`]) and written into the store in one transaction.
//!
//! Bad lines are reported with their 1-based line numbers (the first
//! [`ImportOptions::max_bad_lines`] kept, all counted) and skipped; a file in which no line is
//! valid is refused as the wrong format and nothing is written. A last line without a newline
//! is accepted only in formats whose syntax shows truncation (CSV quotes, JSON); in domain
//! lists and hosts files it is reported as a bad line, since `evil.exa` cut from
//! `evil.example` would otherwise land in the table as another name.

use std::io::{self, BufRead};
use std::net::IpAddr;

use serde::Deserialize;

use super::store::{Store, StoreError};
use crate::api::admin::ImportAnswer;
use crate::model::{
    Category, CategoryError, Entry, FileEntry, FileVerdict, Key, KeyKind, Score, Sha256Hex, Source,
    Taxonomy,
};

/// The feed formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The abuse.ch URLhaus CSV dump: `#` banner, header comment, quoted fields
    /// `id,dateadded,url,url_status,last_online,threat,tags,urlhaus_link,reporter`. Each URL
    /// becomes an exact key with category `malware`, score 0 when `online`, 20 otherwise.
    UrlhausCsv,
    /// One domain per line (UT1 / Shallalist `domains` files), `#` comments. Each becomes a
    /// `host/` key with the caller's category and score.
    DomainList,
    /// A hosts file: `IP name [name...]`, `#` comments; local names (`localhost`, ...) are
    /// skipped. Each name becomes a `host/` key with the caller's category and score.
    Hosts,
    /// webrep's own format: one JSON object per line, see [`JsonEntry`].
    JsonLines,
    /// File hashes, one SHA-256 (64 hex digits) per line, optionally followed by white space
    /// and a name (so `sha256sum` output works), `#` comments. Each becomes a file verdict
    /// `malicious` (or the import's `file_verdict`).
    Sha256List,
    /// The abuse.ch MalwareBazaar CSV export: `#` comment lines, quoted fields
    /// `first_seen_utc, sha256_hash, md5_hash, sha1_hash, reporter, file_name,
    /// file_type_guess, mime_type, signature, ...`. Each row becomes a file verdict
    /// `malicious` named by its signature (or file name).
    MalwareBazaarCsv,
}

impl Format {
    /// Stable name: `urlhaus`, `domains`, `hosts`, `jsonl`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::UrlhausCsv => "urlhaus",
            Format::DomainList => "domains",
            Format::Hosts => "hosts",
            Format::JsonLines => "jsonl",
            Format::Sha256List => "sha256",
            Format::MalwareBazaarCsv => "malwarebazaar",
        }
    }

    /// Whether the format holds file hashes (written to the file-hash table) rather than URL
    /// entries.
    pub fn is_files(self) -> bool {
        matches!(self, Format::Sha256List | Format::MalwareBazaarCsv)
    }

    /// Every format's name, for messages.
    pub const NAMES: &'static str = "urlhaus, domains, hosts, jsonl, sha256, malwarebazaar";

    /// Every format.
    pub const ALL: [Format; 6] = [
        Format::UrlhausCsv,
        Format::DomainList,
        Format::Hosts,
        Format::JsonLines,
        Format::Sha256List,
        Format::MalwareBazaarCsv,
    ];

    /// Parses [`as_str`](Self::as_str) output.
    pub fn from_name(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.as_str() == name)
    }
}

/// One line of the JSON-lines format. Unknown fields are refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonEntry {
    /// The key (`host/`, `host/path/`, `host/path?query`, or a URL).
    pub key: String,
    /// 0..=100.
    pub score: u8,
    /// Known category names. Default none.
    #[serde(default)]
    pub categories: Vec<String>,
    /// `manual`, `escalation`, `feed:NAME` or a bare feed name. Default: the import's feed.
    #[serde(default)]
    pub source: Option<String>,
    /// Unix seconds. Default: the import time.
    #[serde(default)]
    pub added: Option<i64>,
    /// Unix seconds. Default: the import time.
    #[serde(default)]
    pub updated: Option<i64>,
    /// Unix seconds. Default: never.
    #[serde(default)]
    pub expires: Option<i64>,
    /// Free text.
    #[serde(default)]
    pub note: Option<String>,
}

/// How to import one file.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The file's format.
    pub format: Format,
    /// The feed name recorded as each entry's source (`feed:NAME`).
    pub feed: String,
    /// Category of every entry of a domain list (required there) or hosts file (optional).
    pub category: Option<Category>,
    /// Score of every entry of a domain list or hosts file. Default 0.
    pub score: Score,
    /// The import time, unix seconds: `added`/`updated` where the feed gives none.
    pub now: i64,
    /// Bad lines kept in the report (all are counted). Default 100.
    pub max_bad_lines: usize,
    /// Longest line accepted, in bytes; longer lines are bad lines. Default 65536.
    pub max_line_bytes: usize,
    /// The verdict of every hash of a file-hash list. Default `malicious`.
    pub file_verdict: FileVerdict,
}

impl ImportOptions {
    /// Options with the defaults above.
    pub fn new(format: Format, feed: &str, now: i64) -> ImportOptions {
        ImportOptions {
            format,
            feed: feed.to_owned(),
            category: None,
            score: Score::ZERO,
            now,
            max_bad_lines: 100,
            max_line_bytes: 64 * 1024,
            file_verdict: FileVerdict::Malicious,
        }
    }
}

/// A rejected line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// 1-based line number.
    pub line: u64,
    /// Why it was rejected.
    pub reason: String,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Lines read.
    pub lines: u64,
    /// Entries written.
    pub imported: u64,
    /// Comment, blank and header lines and local names.
    pub skipped: u64,
    /// Bad lines, the first [`ImportOptions::max_bad_lines`].
    pub bad: Vec<BadLine>,
    /// All bad lines, counted.
    pub bad_total: u64,
    /// The file did not end with a newline.
    pub unterminated_last_line: bool,
    /// The store sequence number of the import (0 when only parsed).
    pub seq: u64,
}

/// The wire form of a report: what `POST /v1/import` answers, and what `webrep import
/// --store` prints through the same code.
impl From<ImportReport> for ImportAnswer {
    fn from(report: ImportReport) -> ImportAnswer {
        ImportAnswer {
            seq: report.seq,
            lines: report.lines,
            imported: report.imported,
            skipped: report.skipped,
            bad_total: report.bad_total,
            bad: report
                .bad
                .into_iter()
                .map(|b| crate::api::admin::BadLine {
                    line: b.line,
                    reason: b.reason,
                })
                .collect(),
            unterminated_last_line: report.unterminated_last_line,
        }
    }
}

/// Why an import failed as a whole (nothing was written).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Reading the input failed.
    #[error("reading line {line}: {source}")]
    Io {
        /// The line being read.
        line: u64,
        /// The error.
        source: io::Error,
    },
    /// No line of the file is valid in the given format.
    #[error("not a {format} file: no valid line ({bad_total} bad lines{first})")]
    WrongFormat {
        /// The format asked for.
        format: &'static str,
        /// Bad lines counted.
        bad_total: u64,
        /// The first bad line, as `; line N: reason`, or empty.
        first: String,
    },
    /// The options do not fit the format (e.g. a domain list without a category).
    #[error("import options: {0}")]
    Options(String),
    /// The caller's category is not known.
    #[error(transparent)]
    Category(#[from] CategoryError),
    /// The store refused the write.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Names in hosts files that mean the machine itself, not a site.
const LOCAL_NAMES: &[&str] = &[
    "localhost",
    "localhost.localdomain",
    "local",
    "broadcasthost",
    "ip6-localhost",
    "ip6-loopback",
    "ip6-localnet",
    "ip6-mcastprefix",
    "ip6-allnodes",
    "ip6-allrouters",
    "ip6-allhosts",
    "0.0.0.0",
];

/// One parsed item: a URL-table entry or a file verdict.
#[derive(Debug, Clone)]
pub enum Item {
    Url(Entry),
    File(FileEntry),
}

/// Imports a feed into the store in one transaction: readers see all of it or none of it.
///
/// # Errors
/// [`ImportError`]; on any error nothing is written.
pub fn import<R: BufRead>(
    store: &mut Store,
    reader: R,
    opts: &ImportOptions,
) -> Result<ImportReport, ImportError> {
    store.write(|w| {
        let taxonomy = w.taxonomy().clone();
        let mut report = parse(reader, opts, &taxonomy, |item| match item {
            Item::Url(e) => w.upsert(&e),
            Item::File(f) => w.upsert_file(&f),
        })?;
        report.seq = w.seq();
        Ok(report)
    })
}

/// Parses a feed, handing each valid entry to `sink`. No I/O besides reading `reader`.
///
/// # Errors
/// [`ImportError`]: I/O, wrong format, bad options, or the sink's error.
pub fn parse<R: BufRead>(
    mut reader: R,
    opts: &ImportOptions,
    taxonomy: &Taxonomy,
    mut sink: impl FnMut(Item) -> Result<(), StoreError>,
) -> Result<ImportReport, ImportError> {
    if let Some(c) = &opts.category
        && !taxonomy.is_known(c)
    {
        return Err(CategoryError::Unknown(c.as_str().to_owned()).into());
    }
    if opts.format == Format::DomainList && opts.category.is_none() {
        return Err(ImportError::Options(
            "a domain list needs a category".to_owned(),
        ));
    }
    let mut report = ImportReport::default();
    let mut buf = Vec::new();
    loop {
        let line_no = report.lines + 1;
        let read =
            read_line_bounded(&mut reader, &mut buf, opts.max_line_bytes).map_err(|source| {
                ImportError::Io {
                    line: line_no,
                    source,
                }
            })?;
        let (terminated, too_long) = match read {
            LineRead::Eof => break,
            LineRead::Line {
                terminated,
                too_long,
            } => (terminated, too_long),
        };
        report.lines = line_no;
        if !terminated {
            report.unterminated_last_line = true;
        }
        let outcome = if too_long {
            Err(format!("line longer than {} bytes", opts.max_line_bytes))
        } else {
            match std::str::from_utf8(&buf) {
                Err(_) => Err("not UTF-8".to_owned()),
                Ok(text) => {
                    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
                    let text = text.strip_suffix('\r').unwrap_or(text);
                    parse_line(text, terminated, opts, taxonomy)
                }
            }
        };
        match outcome {
            Ok(entries) if entries.is_empty() => report.skipped += 1,
            Ok(entries) => {
                for e in entries {
                    sink(e)?;
                    report.imported += 1;
                }
            }
            Err(reason) => {
                report.bad_total += 1;
                if report.bad.len() < opts.max_bad_lines {
                    report.bad.push(BadLine {
                        line: line_no,
                        reason,
                    });
                }
            }
        }
    }
    if report.imported == 0 {
        return Err(ImportError::WrongFormat {
            format: opts.format.as_str(),
            bad_total: report.bad_total,
            first: report
                .bad
                .first()
                .map(|b| format!("; line {}: {}", b.line, b.reason))
                .unwrap_or_default(),
        });
    }
    Ok(report)
}

enum LineRead {
    Eof,
    Line { terminated: bool, too_long: bool },
}

/// Reads one line (without its `\n`) into `buf`, keeping at most `max` bytes; the rest of an
/// overlong line is read and dropped.
fn read_line_bounded<R: BufRead>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<LineRead> {
    buf.clear();
    let mut any = false;
    let mut too_long = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(if any {
                LineRead::Line {
                    terminated: false,
                    too_long,
                }
            } else {
                LineRead::Eof
            });
        }
        any = true;
        let (chunk, used, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], i + 1, true),
            None => (available, available.len(), false),
        };
        let room = max.saturating_sub(buf.len());
        if chunk.len() > room {
            too_long = true;
        }
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        reader.consume(used);
        if done {
            return Ok(LineRead::Line {
                terminated: true,
                too_long,
            });
        }
    }
}

/// Parses one line: `Ok(vec![])` for a line to skip, `Err(reason)` for a bad line.
fn parse_line(
    line: &str,
    terminated: bool,
    opts: &ImportOptions,
    taxonomy: &Taxonomy,
) -> Result<Vec<Item>, String> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(Vec::new());
    }
    match opts.format {
        Format::Sha256List => {
            let (hash, name) = match trimmed.split_once(char::is_whitespace) {
                Some((h, n)) => (h, Some(n.trim().trim_start_matches('*'))),
                None => (trimmed, None),
            };
            let sha256 = Sha256Hex::parse(hash)
                .ok_or_else(|| format!("{:?} is not a SHA-256 (64 hex digits)", clip(hash)))?;
            if !terminated {
                return Err("last line has no newline (truncated file?)".to_owned());
            }
            return Ok(vec![Item::File(file_entry(
                sha256,
                name.filter(|n| !n.is_empty()),
                opts,
            ))]);
        }
        Format::MalwareBazaarCsv => return parse_bazaar(trimmed, opts),
        _ => {}
    }
    parse_url_line(trimmed, terminated, opts, taxonomy)
        .map(|v| v.into_iter().map(Item::Url).collect())
}

fn file_entry(sha256: Sha256Hex, name: Option<&str>, opts: &ImportOptions) -> FileEntry {
    FileEntry {
        sha256,
        verdict: opts.file_verdict,
        name: name.map(|n| clip(n).to_owned()),
        source: feed_source(opts),
        updated: opts.now,
    }
}

/// One MalwareBazaar CSV row: the SHA-256 is the second field; the name is the signature
/// (ninth) or else the file name (sixth).
fn parse_bazaar(line: &str, opts: &ImportOptions) -> Result<Vec<Item>, String> {
    // The export separates its quoted fields with `", "`.
    let fields = split_csv(&line.replace("\", \"", "\",\""))?;
    if fields.len() < 9 {
        return Err(format!(
            "expected at least 9 fields, found {}",
            fields.len()
        ));
    }
    if fields[1] == "sha256_hash" {
        return Ok(Vec::new());
    }
    let sha256 = Sha256Hex::parse(fields[1].trim())
        .ok_or_else(|| format!("bad sha256_hash {:?}", clip(&fields[1])))?;
    let usable = |v: &str| {
        let v = v.trim();
        (!v.is_empty() && v != "n/a").then_some(v.to_owned())
    };
    let name = usable(&fields[8]).or_else(|| usable(&fields[5]));
    Ok(vec![Item::File(file_entry(sha256, name.as_deref(), opts))])
}

fn parse_url_line(
    trimmed: &str,
    terminated: bool,
    opts: &ImportOptions,
    taxonomy: &Taxonomy,
) -> Result<Vec<Entry>, String> {
    match opts.format {
        Format::UrlhausCsv => parse_urlhaus(trimmed, opts).map(|e| e.into_iter().collect()),
        Format::DomainList => {
            if !terminated {
                return Err("last line has no newline (truncated file?)".to_owned());
            }
            host_entry(trimmed, opts).map(|e| vec![e])
        }
        Format::Hosts => {
            if !terminated {
                return Err("last line has no newline (truncated file?)".to_owned());
            }
            parse_hosts(trimmed, opts)
        }
        Format::JsonLines => parse_json(trimmed, opts, taxonomy).map(|e| vec![e]),
        Format::Sha256List | Format::MalwareBazaarCsv => Ok(Vec::new()),
    }
}

fn feed_source(opts: &ImportOptions) -> Source {
    Source::Feed(opts.feed.clone())
}

/// A `host/` entry for a bare host name, with the caller's category and score.
fn host_entry(name: &str, opts: &ImportOptions) -> Result<Entry, String> {
    let ok = name
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if !ok {
        return Err(format!("not a host name: {:?}", clip(name)));
    }
    let key = Key::parse(name).map_err(|e| e.to_string())?;
    if key.kind() != KeyKind::Host {
        return Err(format!("not a host name: {:?}", clip(name)));
    }
    Ok(Entry::new(
        key,
        opts.score,
        opts.category.iter().cloned().collect(),
        feed_source(opts),
        opts.now,
    ))
}

fn parse_hosts(line: &str, opts: &ImportOptions) -> Result<Vec<Entry>, String> {
    let data = line.split('#').next().unwrap_or("");
    let mut tokens = data.split_ascii_whitespace();
    let ip = tokens.next().unwrap_or("");
    if ip.parse::<IpAddr>().is_err() {
        return Err(format!("not an IP address: {:?}", clip(ip)));
    }
    let mut out = Vec::new();
    let mut names = 0;
    for name in tokens {
        names += 1;
        if LOCAL_NAMES.contains(&name.to_ascii_lowercase().as_str()) {
            continue;
        }
        out.push(host_entry(name, opts)?);
    }
    if names == 0 {
        return Err("no host name after the address".to_owned());
    }
    Ok(out)
}

fn parse_urlhaus(line: &str, opts: &ImportOptions) -> Result<Option<Entry>, String> {
    let fields = split_csv(line)?;
    if fields.first().map(String::as_str) == Some("id") {
        return Ok(None);
    }
    let [
        id,
        dateadded,
        url,
        status,
        _last_online,
        threat,
        tags,
        _link,
        _reporter,
    ] = <[String; 9]>::try_from(fields)
        .map_err(|f| format!("expected 9 fields, found {}", f.len()))?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("bad id {:?}", clip(&id)));
    }
    let added = parse_datetime(&dateadded)
        .ok_or_else(|| format!("bad dateadded {:?}", clip(&dateadded)))?;
    let key = Key::parse(&url).map_err(|e| e.to_string())?;
    let score =
        Score::new(if status == "online" { 0 } else { 20 }).ok_or_else(|| "score".to_owned())?;
    let malware = Category::parse("malware").map_err(|e| e.to_string())?;
    let mut e = Entry::new(key, score, vec![malware], feed_source(opts), opts.now);
    e.added = added;
    let mut note = format!("urlhaus {id}: {threat}");
    if !tags.is_empty() {
        note.push_str(" [");
        note.push_str(clip(&tags));
        note.push(']');
    }
    e.note = Some(note);
    Ok(Some(e))
}

/// Splits one CSV line: fields separated by `,`, optionally quoted with `"` (`""` inside a
/// quoted field is one `"`).
fn split_csv(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("unterminated quoted field".to_owned()),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(_) => return Err("text after a closing quote".to_owned()),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => return Err("quote inside an unquoted field".to_owned()),
                    Some(c) => field.push(c),
                }
            }
            fields.push(field);
        }
    }
}

/// `YYYY-MM-DD HH:MM:SS` (UTC, exactly that shape) to unix seconds.
fn parse_datetime(s: &str) -> Option<i64> {
    if s.len() != "YYYY-MM-DD HH:MM:SS".len() {
        return None;
    }
    let t = jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M:%S", s).ok()?;
    Some(jiff::tz::TimeZone::UTC.to_timestamp(t).ok()?.as_second())
}

fn parse_json(line: &str, opts: &ImportOptions, taxonomy: &Taxonomy) -> Result<Entry, String> {
    let j: JsonEntry = serde_json::from_str(line).map_err(|e| format!("bad JSON: {e}"))?;
    j.into_entry(taxonomy, feed_source(opts), opts.now)
}

impl JsonEntry {
    /// Validates and converts the JSON form into an [`Entry`] (feed import and the API's
    /// writes share this). A missing `source` becomes `default_source`; a source is either a
    /// stored form (`manual`, `feed:NAME`, ...) or a bare feed name. Missing times are `now`.
    pub fn into_entry(
        self,
        taxonomy: &Taxonomy,
        default_source: Source,
        now: i64,
    ) -> Result<Entry, String> {
        let key = Key::parse(&self.key).map_err(|e| e.to_string())?;
        let score =
            Score::new(self.score).ok_or_else(|| format!("score {} above 100", self.score))?;
        let categories = self
            .categories
            .iter()
            .map(|c| taxonomy.resolve(c))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let source = match self.source.as_deref() {
            None => default_source,
            Some(s) => Source::from_stored(s)
                .or_else(|| (!s.is_empty() && !s.contains(':')).then(|| Source::Feed(s.to_owned())))
                .ok_or_else(|| format!("bad source {:?}", clip(s)))?,
        };
        let mut e = Entry::new(key, score, categories, source, now);
        e.added = self.added.unwrap_or(now);
        e.updated = self.updated.unwrap_or(now);
        e.expires = self.expires;
        e.note = self.note;
        Ok(e)
    }
}

/// At most 80 bytes of `s` (on a char boundary), for messages.
fn clip(s: &str) -> &str {
    let mut end = s.len().min(80);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RiskLevel;

    const URLHAUS: &[u8] = include_bytes!("../../tests/fixtures/feeds/urlhaus.csv");
    const DOMAINS: &[u8] = include_bytes!("../../tests/fixtures/feeds/domains");
    const HOSTS: &[u8] = include_bytes!("../../tests/fixtures/feeds/hosts");
    const JSONL: &[u8] = include_bytes!("../../tests/fixtures/feeds/entries.jsonl");
    const SHA256: &[u8] = include_bytes!("../../tests/fixtures/feeds/sha256.txt");
    const BAZAAR: &[u8] = include_bytes!("../../tests/fixtures/feeds/malwarebazaar.csv");

    fn opts(format: Format) -> ImportOptions {
        ImportOptions::new(format, "test", 1_700_000_000)
    }

    fn with_category(format: Format, cat: &str) -> ImportOptions {
        let mut o = opts(format);
        o.category = Some(Category::parse(cat).unwrap());
        o
    }

    fn bad_lines(r: &ImportReport) -> Vec<u64> {
        r.bad.iter().map(|b| b.line).collect()
    }

    fn hash(c: &str) -> Sha256Hex {
        Sha256Hex::parse(&c.repeat(64 / c.len())).unwrap()
    }

    #[test]
    fn sha256_lists_become_file_verdicts() {
        let mut s = Store::open_in_memory().unwrap();
        let r = import(&mut s, SHA256, &opts(Format::Sha256List)).unwrap();
        assert_eq!(r.imported, 3, "{r:?}");
        assert_eq!(bad_lines(&r), [6, 7]);
        let f = s.lookup_file(&hash("a")).unwrap().unwrap();
        assert_eq!((f.verdict, f.name), (FileVerdict::Malicious, None));
        assert_eq!(f.source, Source::Feed("test".into()));
        let f = s.lookup_file(&hash("b")).unwrap().unwrap();
        assert_eq!(
            f.name.as_deref(),
            Some("dropper.exe"),
            "upper-case hex accepted"
        );
        let f = s.lookup_file(&hash("0123456789abcdef")).unwrap().unwrap();
        assert_eq!(
            f.name.as_deref(),
            Some("bin/loader.bin"),
            "sha256sum's binary marker"
        );
        // Another verdict for the whole list.
        let mut o = opts(Format::Sha256List);
        o.file_verdict = FileVerdict::Suspicious;
        import(&mut s, SHA256, &o).unwrap();
        assert_eq!(
            s.lookup_file(&hash("a")).unwrap().unwrap().verdict,
            FileVerdict::Suspicious
        );
        // A URL feed is not a hash list.
        assert!(matches!(
            import(&mut s, DOMAINS, &opts(Format::Sha256List)),
            Err(ImportError::WrongFormat { .. })
        ));
    }

    #[test]
    fn malwarebazaar_csv_becomes_file_verdicts_named_by_signature() {
        let mut s = Store::open_in_memory().unwrap();
        let r = import(&mut s, BAZAAR, &opts(Format::MalwareBazaarCsv)).unwrap();
        assert_eq!(r.imported, 2, "{r:?}");
        assert_eq!(bad_lines(&r), [10, 11]);
        let f = s.lookup_file(&hash("a")).unwrap().unwrap();
        assert_eq!(
            (f.verdict, f.name.as_deref()),
            (FileVerdict::Malicious, Some("AgentTesla"))
        );
        let f = s.lookup_file(&hash("b")).unwrap().unwrap();
        assert_eq!(
            f.name.as_deref(),
            Some("payload.dll"),
            "no signature: the file name"
        );
    }

    #[test]
    fn urlhaus_csv() {
        let mut s = Store::open_in_memory().unwrap();
        let r = import(&mut s, URLHAUS, &opts(Format::UrlhausCsv)).unwrap();
        assert_eq!(r.imported, 4, "{r:?}");
        assert_eq!(bad_lines(&r), [13, 14, 15]);
        assert!(r.skipped >= 9);
        let v = s
            .lookup_str("http://malware.example:8080/bins/x86", 1_700_000_000)
            .unwrap();
        assert_eq!(
            (v.risk, v.score.map(Score::get)),
            (RiskLevel::Dangerous, Some(0))
        );
        assert_eq!(v.categories[0].as_str(), "malware");
        let e = s.get(&v.matched[0]).unwrap().unwrap();
        assert_eq!(e.added, 1_704_067_200 + 3600);
        assert_eq!(e.source, Source::Feed("test".into()));
        assert!(e.note.unwrap().contains("mozi"));
        let v = s
            .lookup_str("http://dropper.test/a/b.php?id=1", 1_700_000_000)
            .unwrap();
        assert_eq!(v.score.map(Score::get), Some(20));
        // Exact key: another query is not covered.
        let v = s.lookup_str("http://dropper.test/a/b.php?id=2", 0).unwrap();
        assert_eq!(v.risk, RiskLevel::Untested);
    }

    #[test]
    fn feed_lines_that_are_not_urls_are_bad_lines_not_host_keys() {
        let csv = concat!(
            "\"2001\",\"2024-01-01 01:00:00\",\"not a url at all\",\"online\",\"\",\"malware_download\",\"\",\"https://urlhaus.invalid/url/2001/\",\"r\"\n",
            "\"2002\",\"2024-01-01 01:00:00\",\"http://a b.example/x\",\"online\",\"\",\"malware_download\",\"\",\"https://urlhaus.invalid/url/2002/\",\"r\"\n",
            "\"2003\",\"2024-01-01 01:00:00\",\"http://fine.example/x\",\"online\",\"\",\"malware_download\",\"\",\"https://urlhaus.invalid/url/2003/\",\"r\"\n",
        );
        let mut s = Store::open_in_memory().unwrap();
        let r = import(&mut s, csv.as_bytes(), &opts(Format::UrlhausCsv)).unwrap();
        assert_eq!((r.imported, bad_lines(&r)), (1, vec![1, 2]), "{r:?}");
        assert!(r.bad[0].reason.contains("not a url"), "{r:?}");
        assert_eq!(s.len().unwrap(), 1);
        let jsonl = concat!(
            "{\"key\":\"not a url\",\"score\":5,\"categories\":[\"malware\"]}\n",
            "{\"key\":\"ok.example/\",\"score\":5,\"categories\":[\"malware\"]}\n",
        );
        let r = import(&mut s, jsonl.as_bytes(), &opts(Format::JsonLines)).unwrap();
        assert_eq!((r.imported, bad_lines(&r)), (1, vec![1]), "{r:?}");
        let domains = &b"not a domain\nok2.example\n"[..];
        let r = import(
            &mut s,
            domains,
            &with_category(Format::DomainList, "malware"),
        )
        .unwrap();
        assert_eq!((r.imported, bad_lines(&r)), (1, vec![1]), "{r:?}");
        assert_eq!(s.len().unwrap(), 3);
    }

    #[test]
    fn urlhaus_truncated_last_line_is_bad() {
        let cut = &URLHAUS[..URLHAUS.len() - 30];
        let mut s = Store::open_in_memory().unwrap();
        let r = import(&mut s, cut, &opts(Format::UrlhausCsv)).unwrap();
        assert!(r.unterminated_last_line);
        assert_eq!(bad_lines(&r), [13, 14, 15, 16]);
        assert_eq!(r.imported, 3);
    }

    #[test]
    fn domain_list() {
        let mut s = Store::open_in_memory().unwrap();
        let r = import(
            &mut s,
            DOMAINS,
            &with_category(Format::DomainList, "gambling"),
        )
        .unwrap();
        assert_eq!(r.imported, 4, "{r:?}");
        assert_eq!(bad_lines(&r), [6, 7]);
        let v = s.lookup_str("http://www.casino.example/x", 0).unwrap();
        assert_eq!(v.categories[0].as_str(), "gambling");
        assert_eq!(v.risk, RiskLevel::Dangerous);
        assert!(matches!(
            import(&mut s, DOMAINS, &opts(Format::DomainList)),
            Err(ImportError::Options(_))
        ));
        assert!(matches!(
            import(
                &mut s,
                DOMAINS,
                &with_category(Format::DomainList, "no-such")
            ),
            Err(ImportError::Category(_))
        ));
    }

    #[test]
    fn truncated_domain_list_reports_the_last_line() {
        let r = parse(
            &b"a.example\nb.exam"[..],
            &with_category(Format::DomainList, "adult"),
            &Taxonomy::default(),
            |_| Ok(()),
        )
        .unwrap();
        assert_eq!((r.imported, bad_lines(&r)), (1, vec![2]));
        assert!(r.unterminated_last_line);
    }

    #[test]
    fn hosts_file() {
        let mut s = Store::open_in_memory().unwrap();
        let mut o = with_category(Format::Hosts, "advertising");
        o.score = Score::new(60).unwrap();
        let r = import(&mut s, HOSTS, &o).unwrap();
        assert_eq!(r.imported, 4, "{r:?}");
        assert_eq!(bad_lines(&r), [8, 9]);
        assert_eq!(
            s.lookup_str("http://ads.example/", 0).unwrap().risk,
            RiskLevel::HighlySuspicious
        );
        assert_eq!(
            s.lookup_str("http://localhost/", 0).unwrap().risk,
            RiskLevel::Untested
        );
    }

    #[test]
    fn json_lines() {
        let mut s = Store::open_in_memory().unwrap();
        let r = import(&mut s, JSONL, &opts(Format::JsonLines)).unwrap();
        assert_eq!(r.imported, 3, "{r:?}");
        assert_eq!(bad_lines(&r), [4, 5, 6, 7]);
        let v = s.lookup_str("https://shop.example/cart", 0).unwrap();
        assert_eq!(v.risk, RiskLevel::Safe);
        let e = s.get(&v.matched[0]).unwrap().unwrap();
        assert_eq!(e.source, Source::Manual);
        assert_eq!(e.expires, Some(4_000_000_000));
        let v = s.lookup_str("http://phish.test/login/x", 0).unwrap();
        assert_eq!(v.risk, RiskLevel::Dangerous);
    }

    #[test]
    fn wrong_format_writes_nothing() {
        let mut s = Store::open_in_memory().unwrap();
        for (data, format) in [
            (URLHAUS, Format::JsonLines),
            (JSONL, Format::UrlhausCsv),
            (DOMAINS, Format::Hosts),
            (HOSTS, Format::UrlhausCsv),
            (&b""[..], Format::JsonLines),
        ] {
            let mut o = with_category(format, "malware");
            o.max_bad_lines = 2;
            let err = import(&mut s, data, &o).unwrap_err();
            assert!(
                matches!(err, ImportError::WrongFormat { .. }),
                "{format:?}: {err}"
            );
        }
        assert!(s.is_empty().unwrap());
        assert_eq!(s.changes_since(0, 10).unwrap().keys.len(), 0);
    }

    #[test]
    fn import_is_atomic_when_the_store_fails() {
        let mut s = Store::open_in_memory().unwrap();
        let mut n = 0;
        let r: Result<ImportReport, ImportError> = s.write(|w| {
            let tax = w.taxonomy().clone();
            parse(
                DOMAINS,
                &with_category(Format::DomainList, "adult"),
                &tax,
                |item| {
                    let Item::Url(e) = item else {
                        unreachable!("a domain list holds URL entries")
                    };
                    n += 1;
                    if n == 3 {
                        return Err(StoreError::Corrupt {
                            key: e.key.to_string(),
                            what: "forced",
                        });
                    }
                    w.upsert(&e)
                },
            )
        });
        assert!(matches!(r, Err(ImportError::Store(_))));
        assert!(s.is_empty().unwrap());
    }

    /// Child half of `kill_9_mid_import_leaves_the_previous_table`: imports into the store
    /// named by `WEBREP_TEST_KILL_DB`, says `READY` halfway through, then waits to be killed.
    #[test]
    #[ignore = "run as a child process by kill_9_mid_import_leaves_the_previous_table"]
    fn kill_9_child() {
        let Some(path) = std::env::var_os("WEBREP_TEST_KILL_DB") else {
            return;
        };
        let mut s = Store::open(std::path::Path::new(&path)).unwrap();
        let data: String = (0..1000).map(|i| format!("d{i}.example\n")).collect();
        let _ = s.write(|w| {
            let tax = w.taxonomy().clone();
            parse(
                data.as_bytes(),
                &with_category(Format::DomainList, "adult"),
                &tax,
                |item| {
                    if let Item::Url(e) = item {
                        w.upsert(&e)?;
                    }
                    if w.written() == 500 {
                        println!("READY");
                        std::thread::sleep(std::time::Duration::from_secs(60));
                    }
                    Ok(())
                },
            )
        });
    }

    #[test]
    fn kill_9_mid_import_leaves_the_previous_table() {
        use std::io::BufRead as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rep.db");
        {
            let mut s = Store::open(&path).unwrap();
            import(
                &mut s,
                DOMAINS,
                &with_category(Format::DomainList, "gambling"),
            )
            .unwrap();
        }
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "repserver::import::tests::kill_9_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("WEBREP_TEST_KILL_DB", &path)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let ready = std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.contains("READY"));
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        assert!(ready, "child never reached the middle of its import");
        let s = Store::open(&path).unwrap();
        assert_eq!(s.len().unwrap(), 4);
        assert_eq!(
            s.lookup_str("http://d1.example/", 0).unwrap().risk,
            RiskLevel::Untested
        );
        assert_eq!(s.seq().unwrap(), 1);
    }

    #[test]
    fn overlong_and_binary_lines_are_bad_lines() {
        let mut data = b"a.example\n".to_vec();
        data.extend(std::iter::repeat_n(b'x', 200));
        data.extend(b"\n\xff\xfe\nb.example\n");
        let mut o = with_category(Format::DomainList, "adult");
        o.max_line_bytes = 100;
        o.max_bad_lines = 1;
        let r = parse(&data[..], &o, &Taxonomy::default(), |_| Ok(())).unwrap();
        assert_eq!(r.imported, 2);
        assert_eq!(r.bad_total, 2);
        assert_eq!(bad_lines(&r), [2]);
        assert!(r.bad[0].reason.contains("longer"));
    }

    #[test]
    fn csv_and_dates() {
        assert_eq!(
            split_csv(r#""a","b ""q"#).unwrap_err(),
            "unterminated quoted field"
        );
        assert_eq!(
            split_csv(r#""a","b ""q""",c"#).unwrap(),
            ["a", "b \"q\"", "c"]
        );
        assert_eq!(split_csv("").unwrap(), [""]);
        assert_eq!(split_csv(r#""a","""#).unwrap(), ["a", ""]);
        assert!(split_csv(r#""a"x"#).is_err());
        assert_eq!(parse_datetime("1970-01-01 00:00:00"), Some(0));
        assert_eq!(
            parse_datetime("2024-01-01 01:00:00"),
            Some(1_704_067_200 + 3600)
        );
        assert_eq!(parse_datetime("2024-02-30 00:00:00"), None);
        assert_eq!(parse_datetime("2024-01-01T00:00:00"), None);
        assert_eq!(parse_datetime("2024-01-01 00:00:0x"), None);
    }
}
