//! The reputation server's store with a 1,000,000-entry table: import time, peak RSS
//! and store size, then batch host lookups and single-URL lookups on one thread.
//!
//! Budget: at least 50,000 host lookups/s on one core, RSS under 1 GiB.
//!
//! Run with `cargo bench --bench repserver`. `WEBREP_BENCH_ENTRIES=100000 cargo bench --bench
//! repserver` builds a smaller table for a quick run (default 1,000,000).
//!
//! Setup (printed to stderr, not measured by criterion): a deterministic table is generated
//! (no network, no data files) as a webrep JSON-lines feed in a temporary directory: about
//! 80% `host/` entries (registrable domains and subdomains one or two labels deep), 15%
//! `host/path/` prefixes and 5% exact URLs, scores spread over every risk band, one or two
//! categories each, one entry in ten with an expiry (half of them already past). It is
//! imported through [`import::import`] into a file-backed store (WAL, as the server opens it),
//! and the import time, entries/s, peak RSS (`VmHWM`) and store file size are printed. The
//! store is built once and shared by every group.
//!
//! Groups:
//! - `lookup_hosts/batch_100`: [`Store::lookup_hosts`] on batches of 100 hosts (50% hosts
//!   with an entry, 30% unlisted subdomains of listed domains, 20% unknown), path limit 100
//!   as the API's default; throughput in hosts/s.
//! - `lookup_hosts/batch_1`: one host per call, for latency.
//! - `lookup/url`: [`Store::lookup`] on one canonical URL with a path and query (every
//!   expression probed, full combination).
//!
//! Then, printed (each run takes seconds, so not a criterion group): `POST /v1/lookup` with
//! one batch of 10,000, 50,000 and 200,000 such URLs (`WEBREP_BENCH_BATCHES=10000,1000000`
//! picks other sizes, empty skips it) to the real server on 127.0.0.1 on the same store, with
//! `max_batch` and `max_body_bytes` raised to fit and two reader threads: seconds from request
//! to the last byte of the answer, microseconds per URL of wall time and of the process's CPU
//! time (server and client; on a shared machine the CPU figure moves much less with the load),
//! both flat when the batch path is linear, and the RSS once each answer is dropped.

use std::fs::File;
use std::hint::black_box;
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokio_util::sync::CancellationToken;
use webrep::canon::{CanonicalUrl, canonicalize};
use webrep::config::ApiConfig;
use webrep::model::BUILTIN_CATEGORIES;
use webrep::repserver::api::{self, ServeOptions, Tokens};
use webrep::repserver::import::{self, Format, ImportOptions};
use webrep::repserver::store::Store;

/// The table size when `WEBREP_BENCH_ENTRIES` is not set.
const DEFAULT_ENTRIES: u64 = 1_000_000;
/// The time every entry is written and looked up at (unix seconds).
const NOW: i64 = 1_800_000_000;
/// Host lookups per batch, as a proxy would send them.
const BATCH: usize = 100;
/// The API's default path limit per host answer.
const PATH_LIMIT: usize = 100;

/// splitmix64: a tiny deterministic generator, so the table is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[usize::try_from(self.below(items.len() as u64)).unwrap_or(0)]
    }
}

const WORDS: &[&str] = &[
    "shop", "news", "mail", "cloud", "bank", "game", "media", "secure", "login", "free", "best",
    "online", "data", "web", "app", "net", "info", "travel", "photo", "music",
];
const SUBS: &[&str] = &[
    "www", "cdn", "api", "login", "mail", "static", "img", "m", "dl", "update",
];
const TLDS: &[&str] = &["test", "example", "invalid", "co.test", "com.example"];
const SEGMENTS: &[&str] = &[
    "dl",
    "files",
    "wp-content",
    "uploads",
    "bin",
    "admin",
    "static",
    "js",
    "login",
    "account",
];

/// The shape of the generated table, all derived from the entry count.
struct Table {
    entries: u64,
    /// Registrable domains; each has a `domain/` entry.
    domains: u64,
    /// `host/` entries in all (domains first, then subdomains).
    host_entries: u64,
    /// `host/path/` entries.
    prefix_entries: u64,
}

impl Table {
    fn new(entries: u64) -> Table {
        let host_entries = entries * 80 / 100;
        Table {
            entries,
            domains: (host_entries / 2).max(1),
            host_entries,
            prefix_entries: entries * 15 / 100,
        }
    }

    /// Registrable domain number `d`: unique by construction.
    fn domain(&self, d: u64) -> String {
        let w = WORDS[(d % WORDS.len() as u64) as usize];
        let t = TLDS[((d / 7) % TLDS.len() as u64) as usize];
        format!("{w}{d:x}.{t}")
    }

    /// The host of `host/` entry `i` (`i < host_entries`): a domain, or a subdomain one or
    /// two labels deep of a domain chosen by `i`.
    fn listed_host(&self, i: u64) -> String {
        if i < self.domains {
            return self.domain(i);
        }
        let mut rng = Rng(i);
        let parent = self.domain(rng.below(self.domains));
        let sub = rng.pick(SUBS);
        if rng.below(4) == 0 {
            format!("{sub}{i:x}.{}.{parent}", rng.pick(SUBS))
        } else {
            format!("{sub}{i:x}.{parent}")
        }
    }

    /// The key of entry `i`.
    fn key(&self, i: u64, rng: &mut Rng) -> String {
        if i < self.host_entries {
            return format!("{}/", self.listed_host(i));
        }
        let host = self.listed_host(rng.below(self.host_entries));
        let seg = rng.pick(SEGMENTS);
        if i < self.host_entries + self.prefix_entries {
            if rng.below(2) == 0 {
                format!("{host}/{seg}{i:x}/")
            } else {
                format!("{host}/{seg}/{}{i:x}/", rng.pick(SEGMENTS))
            }
        } else if rng.below(2) == 0 {
            format!("{host}/{seg}/file{i:x}.exe")
        } else {
            format!("{host}/{seg}/index.php?id={i}")
        }
    }

    /// Writes the table as a webrep JSON-lines feed.
    fn write_jsonl(&self, path: &Path) -> std::io::Result<()> {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
        let mut rng = Rng(0x5eed);
        for i in 0..self.entries {
            let key = self.key(i, &mut rng);
            let score = rng.below(101);
            let c1 = BUILTIN_CATEGORIES[rng.below(BUILTIN_CATEGORIES.len() as u64) as usize].0;
            write!(
                out,
                "{{\"key\":\"{key}\",\"score\":{score},\"categories\":[\"{c1}\""
            )?;
            if rng.below(3) == 0 {
                let c2 = BUILTIN_CATEGORIES[rng.below(BUILTIN_CATEGORIES.len() as u64) as usize].0;
                write!(out, ",\"{c2}\"")?;
            }
            write!(out, "]")?;
            if rng.below(10) == 0 {
                // Half already expired at NOW, half still running.
                let expires = NOW - 86_400 + rng.below(2 * 86_400) as i64;
                write!(out, ",\"expires\":{expires}")?;
            }
            writeln!(out, "}}")?;
        }
        out.flush()
    }

    /// Hosts to look up: 50% with an entry, 30% unlisted subdomains of listed domains, 20%
    /// unknown.
    fn query_hosts(&self, n: usize) -> Vec<String> {
        let mut rng = Rng(0xf00d);
        (0..n)
            .map(|q| match rng.below(10) {
                0..=4 => self.listed_host(rng.below(self.host_entries)),
                5..=7 => format!("q{q:x}.{}", self.domain(rng.below(self.domains))),
                _ => format!("q{q:x}.unlisted{}.test", rng.below(1 << 40)),
            })
            .collect()
    }

    /// URLs with a path and query on listed hosts (half on subdomains that have no entry).
    fn query_urls(&self, n: usize) -> Vec<CanonicalUrl> {
        self.query_url_texts(n)
            .iter()
            .map(|url| canonicalize(url).expect("generated URLs are valid"))
            .collect()
    }

    /// [`query_urls`](Self::query_urls) as text.
    fn query_url_texts(&self, n: usize) -> Vec<String> {
        let mut rng = Rng(0xbeef);
        (0..n)
            .map(|q| {
                let host = self.listed_host(rng.below(self.host_entries));
                let host = if rng.below(2) == 0 {
                    host
                } else {
                    format!("www.{host}")
                };
                format!(
                    "http://{host}/{}/{}/page{q}.html?id={}",
                    rng.pick(SEGMENTS),
                    rng.pick(SEGMENTS),
                    rng.below(1000)
                )
            })
            .collect()
    }
}

/// CPU time this thread has run so far (Linux `/proc/thread-self/schedstat`).
fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(Duration::from_nanos(
        stat.split_whitespace().next()?.parse().ok()?,
    ))
}

/// CPU time (user and system) of every thread of this process so far (Linux `/proc/self/stat`,
/// in clock ticks of 10 ms).
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name, which is in parentheses and may contain spaces:
    // utime and stime are the 12th and 13th of them.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((user + system) * 10))
}

/// A size field of `/proc/self/status` (Linux), in bytes.
fn proc_status(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Peak RSS, and the current RSS split into anonymous memory (heap, SQLite's page cache) and
/// file pages (the store's memory-mapped pages, shared with the kernel's page cache).
fn rss_report() -> String {
    let m = |f| proc_status(f).map_or(f64::NAN, mib);
    format!(
        "peak RSS {:.1} MiB (now {:.1} MiB: anon {:.1}, file {:.1})",
        m("VmHWM"),
        m("VmRSS"),
        m("RssAnon"),
        m("RssFile")
    )
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Generates and imports the table; prints the setup figures.
fn build_store(dir: &Path, entries: u64) -> Store {
    let table = Table::new(entries);
    let feed = dir.join("bench.jsonl");
    let t = Instant::now();
    table.write_jsonl(&feed).expect("writing the feed");
    let feed_size = std::fs::metadata(&feed).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "repserver bench: generated {entries} entries ({:.1} MiB JSON-lines) in {:.1} s",
        mib(feed_size),
        t.elapsed().as_secs_f64()
    );
    let db = dir.join("rep.db");
    let mut store = Store::open(&db).expect("opening the store");
    let reader = BufReader::with_capacity(1 << 20, File::open(&feed).expect("opening the feed"));
    let opts = ImportOptions::new(Format::JsonLines, "bench", NOW);
    let t = Instant::now();
    let report = import::import(&mut store, reader, &opts).expect("import");
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(report.bad_total, 0, "{:?}", report.bad.first());
    let rows = store.len().expect("count");
    let size = |f: &str| std::fs::metadata(dir.join(f)).map_or(0, |m| m.len());
    eprintln!(
        "repserver bench: imported {} entries ({rows} rows) in {secs:.1} s = {:.0} entries/s; \
         store file {:.1} MiB (+ WAL {:.1} MiB); {}",
        report.imported,
        report.imported as f64 / secs,
        mib(size("rep.db")),
        mib(size("rep.db-wal")),
        rss_report(),
    );
    std::fs::remove_file(&feed).ok();
    store
}

fn bench_store(c: &mut Criterion) {
    let entries = std::env::var("WEBREP_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(DEFAULT_ENTRIES);
    let dir = tempfile::tempdir().expect("temp dir");
    let store = build_store(dir.path(), entries);
    let table = Table::new(entries);

    let hosts = table.query_hosts(100 * BATCH);
    let host_refs: Vec<&str> = hosts.iter().map(String::as_str).collect();
    let batches: Vec<&[&str]> = host_refs.chunks(BATCH).collect();
    // Sanity: the mix finds what it should (half listed, plus the listed parents of 30%).
    let answers: Vec<_> = batches
        .iter()
        .flat_map(|b| store.lookup_hosts(b, NOW, PATH_LIMIT).expect("lookup"))
        .collect();
    let rated = answers
        .iter()
        .filter(|a| a.as_ref().is_ok_and(|a| a.verdict.score.is_some()))
        .count();
    let with_paths = answers
        .iter()
        .filter(|a| a.as_ref().is_ok_and(|a| !a.paths.is_empty()))
        .count();
    eprintln!(
        "repserver bench: {} query hosts, {rated} with a verdict, {with_paths} with path entries",
        answers.len()
    );
    // Hosts per second of this thread's CPU time as well as of wall time: on a shared
    // machine the wall-clock figures below move with the load, the CPU figure much less.
    let (t, cpu) = (Instant::now(), thread_cpu());
    let mut looked_up = 0;
    for _ in 0..5 {
        for b in &batches {
            looked_up += black_box(store.lookup_hosts(b, NOW, PATH_LIMIT)).map_or(0, |a| a.len());
        }
    }
    let wall = t.elapsed();
    let cpu = thread_cpu().zip(cpu).map(|(b, a)| b.saturating_sub(a));
    eprintln!(
        "repserver bench: lookup_hosts in batches of {BATCH}: {:.0} hosts/s (wall), {} hosts/s \
         (CPU time of this thread)",
        looked_up as f64 / wall.as_secs_f64(),
        cpu.map_or("?".to_owned(), |c| format!(
            "{:.0}",
            looked_up as f64 / c.as_secs_f64()
        )),
    );

    let mut g = c.benchmark_group("lookup_hosts");
    g.measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut i = 0;
    g.bench_function("batch_100", |b| {
        b.iter(|| {
            i = (i + 1) % batches.len();
            black_box(store.lookup_hosts(black_box(batches[i]), NOW, PATH_LIMIT))
        })
    });
    g.throughput(Throughput::Elements(1));
    let mut i = 0;
    g.bench_function("batch_1", |b| {
        b.iter(|| {
            i = (i + 1) % host_refs.len();
            black_box(store.lookup_hosts(black_box(&host_refs[i..=i]), NOW, PATH_LIMIT))
        })
    });
    g.finish();

    let urls = table.query_urls(10_000);
    let mut g = c.benchmark_group("lookup");
    g.throughput(Throughput::Elements(1));
    let mut i = 0;
    g.bench_function("url", |b| {
        b.iter(|| {
            i = (i + 1) % urls.len();
            black_box(store.lookup(black_box(&urls[i]), NOW))
        })
    });
    g.finish();

    eprintln!("repserver bench: at the end: {}", rss_report());
    drop(store);
    bench_api_batches(dir.path(), &table);
}

/// The batch sizes of the API part: `WEBREP_BENCH_BATCHES`, comma-separated (empty skips
/// the part).
fn batch_sizes() -> Vec<usize> {
    std::env::var("WEBREP_BENCH_BATCHES")
        .unwrap_or_else(|_| "10000,50000,200000".to_owned())
        .split(',')
        .filter_map(|n| n.trim().replace('_', "").parse().ok())
        .filter(|&n| n > 0)
        .collect()
}

/// `POST /v1/lookup` with one batch of each size through the real server on loopback (limits
/// raised to fit), timed from sending the request to the last byte of the answer: seconds,
/// cost per URL, and the process's memory after each answer has been read and dropped.
fn bench_api_batches(dir: &Path, table: &Table) {
    #[derive(serde::Deserialize)]
    struct Answer {
        urls: Vec<serde::de::IgnoredAny>,
    }
    let sizes = batch_sizes();
    let Some(&largest) = sizes.iter().max() else {
        return;
    };
    webrep::tls::install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let store = Store::open(&dir.join("rep.db")).expect("opening the store");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding 127.0.0.1:0");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let config = ApiConfig {
            max_batch: largest,
            max_body: 1 << 30,
            ..ApiConfig::default()
        };
        let options = ServeOptions {
            read_threads: 2,
            ..ServeOptions::default()
        };
        let tokens = Tokens {
            client: vec!["bench".into()],
            admin: Vec::new(),
        };
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(api::serve_with(
            listener,
            store,
            tokens,
            config,
            options,
            shutdown.clone(),
        ));
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        let all = table.query_url_texts(largest);
        for n in sizes {
            let body = serde_json::to_vec(&serde_json::json!({ "urls": &all[..n] })).expect("JSON");
            let (t, cpu) = (Instant::now(), process_cpu());
            let resp = http
                .post(format!("{base}/v1/lookup"))
                .bearer_auth("bench")
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("sending the batch");
            let status = resp.status();
            let answer = resp.bytes().await.expect("reading the answer");
            let secs = t.elapsed().as_secs_f64();
            let cpu = process_cpu().zip(cpu).map(|(b, a)| b.saturating_sub(a));
            let parsed: Answer = serde_json::from_slice(&answer).expect("a JSON answer");
            assert!(status.is_success() && parsed.urls.len() == n, "{status}");
            let size = answer.len();
            drop((answer, parsed));
            eprintln!(
                "repserver bench: POST /v1/lookup of {n} URLs: {secs:.2} s = {:.1} µs/URL \
                 (CPU of the process, client included: {} µs/URL), answer {:.1} MiB; \
                 afterwards {}",
                secs * 1e6 / n as f64,
                cpu.map_or("?".to_owned(), |c| format!(
                    "{:.1}",
                    c.as_secs_f64() * 1e6 / n as f64
                )),
                mib(size as u64),
                rss_report(),
            );
        }
        shutdown.cancel();
        let _ = server.await;
    });
}

criterion_group!(benches, bench_store);
criterion_main!(benches);
