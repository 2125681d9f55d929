//! Cost of one policy evaluation with a 100,000-entry blocked list and 50 rules.
//!
//! Budget: 1 µs median per request. Run with
//! `cargo bench --bench policy -- --warm-up-time 1 --measurement-time 3`.
//! `mixed/requests` evaluates the whole request set per iteration: divide by its size (the
//! throughput line shows the per-element rate); `request/*` measures each request alone.
//! URLs are canonicalized outside the measured loop (that cost is `benches/canon.rs`).
//!
//! Measured 2026-11-28 on the 2-core VM with another build running (load average 2.5):
//! `mixed/requests` 11.0 µs for 12 requests, 0.92 µs each; `request/*` medians 0.64 µs
//! (risk block) to 1.27 µs (a nine-label host, every suffix looked up).
//!
//! `mixed/reputation_path_*` is the policy's share of a filtered request in the proxy, the
//! old way (`evaluate` twice) beside the current one (`prepare`, then `decide`). Measured
//! 2026-12-05, two runs: 8.36 / 8.60 µs against 4.28 / 4.50 µs for the 12 requests, so
//! 0.70 µs against 0.36 µs a request.

//!
//! The policy: 100,000 blocked entries (96,000 domains, 2,000 path prefixes, 2,000
//! wildcards), 200 approved entries, 2 blocked regexes, 12 category actions, and 50 rules of
//! which none matches the benchmark client except the last, so every request walks all of
//! them: 20 on client networks, 10 on users, 10 on groups, 5 on host patterns (which are
//! looked up because they carry no other condition) and 5 on schedules in different time
//! zones.

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use webrep::canon::{CanonicalUrl, canonicalize};
use webrep::model::{Category, Key, Score, Verdict};
use webrep::policy::{Policy, Reason, RequestFacts, evaluate, prepare};

const BLOCKED: usize = 100_000;

fn policy_yaml() -> String {
    let mut y = String::with_capacity(4 << 20);
    y.push_str("security_level: medium\nuntested: warn\nlists:\n  approved:\n");
    for i in 0..200 {
        let _ = writeln!(y, "    - partner{i}.example.com");
    }
    y.push_str("  blocked:\n");
    for i in 0..BLOCKED {
        let _ = match i % 50 {
            0 => writeln!(y, "    - site{i}.example.net/dl{i}/"),
            1 => writeln!(y, "    - \"*.cdn{i}.bad{}.test\"", i % 97),
            _ => writeln!(y, "    - host{i}.bad{}.test", i % 997),
        };
    }
    y.push_str("  blocked_regex:\n    - '^https?://[^/]+/wp-login\\.php'\n    - '\\.(exe|scr)$'\n");
    y.push_str(
        "categories:\n  actions:\n    malware: block\n    phishing: block\n    command-and-control: block\n    cryptomining: block\n    spam: block\n    newly-observed: warn\n    adult: block\n    gambling: block\n    social-networking: warn\n    streaming: monitor\n    file-sharing: monitor\n    weapons: warn\n",
    );
    y.push_str("rules:\n");
    for i in 0..20 {
        let _ = writeln!(
            y,
            "  - id: net-{i}\n    match:\n      clients: [\"10.{i}.0.0/16\", \"2001:db8:{i:x}::/48\"]\n    security_level: high"
        );
    }
    for i in 0..10 {
        let _ = writeln!(
            y,
            "  - id: user-{i}\n    match:\n      users: [user{i}a, user{i}b, user{i}c]\n    untested: allow"
        );
    }
    for i in 0..10 {
        let _ = writeln!(
            y,
            "  - id: group-{i}\n    match:\n      groups: [group{i}]\n    categories:\n      actions:\n        games: block"
        );
    }
    for i in 0..5 {
        let _ = writeln!(
            y,
            "  - id: hosts-{i}\n    match:\n      hosts: [\"*.rule{i}.example\", rule{i}.example.org, \"w*.rule{i}.test\"]\n    action: warn"
        );
    }
    for (i, tz) in [
        "Europe/Berlin",
        "America/New_York",
        "Asia/Tokyo",
        "Australia/Sydney",
        "America/Sao_Paulo",
    ]
    .iter()
    .enumerate()
    {
        // Windows chosen so that the benchmark time (a Wednesday noon UTC) is outside all.
        let _ = writeln!(
            y,
            "  - id: sched-{i}\n    match:\n      clients: [\"0.0.0.0/0\", \"::/0\"]\n      schedule:\n        time_zone: {tz}\n        windows:\n          - days: [sat, sun]\n            from: \"00:00\"\n            to: \"24:00\"\n    action: block"
        );
    }
    y
}

fn verdict(score: u8, cats: &[&str]) -> Verdict {
    let score = Score::new(score).expect("score in range");
    Verdict {
        risk: score.risk(),
        score: Some(score),
        categories: cats
            .iter()
            .map(|c| Category::parse(c).expect("valid category"))
            .collect(),
        matched: vec![Key::parse("example.com/").expect("valid key")],
    }
}

/// (name, url, verdict or None)
fn requests() -> Vec<(&'static str, CanonicalUrl, Option<Verdict>)> {
    let v = |s, c: &[&str]| Some(verdict(s, c));
    [
        (
            "miss_safe",
            "https://www.example.com/index.html",
            v(95, &["news"]),
        ),
        (
            "miss_deep_host",
            "https://a.b.c.d.e.f.example.co.uk/1/2/3/page.html?x=1",
            v(90, &["shopping"]),
        ),
        ("blocked_exact", "http://host12345.bad380.test/", v(90, &[])),
        (
            "blocked_subdomain",
            "http://x.y.host777.bad777.test/a/b",
            v(90, &[]),
        ),
        (
            "blocked_path",
            "http://site500.example.net/dl500/f.zip",
            None,
        ),
        (
            "blocked_wildcard",
            "http://img.cdn51.bad51.test/x.png",
            None,
        ),
        ("approved", "https://api.partner42.example.com/v1/", None),
        (
            "regex_hit",
            "https://blog.example.org/wp-login.php?redirect=1",
            v(95, &[]),
        ),
        (
            "category_warn",
            "https://social.example/feed",
            v(90, &["social-networking"]),
        ),
        ("risk_block", "http://shady.example/", v(40, &["malware"])),
        (
            "untested",
            "http://brand-new.example/",
            Some(Verdict::untested()),
        ),
        ("unavailable", "http://down.example/", None),
    ]
    .into_iter()
    .map(|(n, u, v)| (n, canonicalize(u).expect("bench URLs canonicalize"), v))
    .collect()
}

fn bench_policy(c: &mut Criterion) {
    let yaml = policy_yaml();
    let t = Instant::now();
    let policy = Policy::from_yaml(&yaml, "bench.yaml").expect("bench policy compiles");
    eprintln!(
        "compiled {} bytes of policy in {:?}: {}",
        yaml.len(),
        t.elapsed(),
        policy.summary()
    );
    let reqs = requests();
    let groups = vec!["staff".to_owned(), "everyone".to_owned()];
    let now: jiff::Timestamp = "2026-03-04T12:00:00Z".parse().expect("timestamp");
    let client: std::net::IpAddr = "192.0.2.10".parse().expect("ip");
    let facts = |url| RequestFacts {
        url,
        client,
        user: Some("alice"),
        groups: &groups,
        now,
    };

    let mut mixed = c.benchmark_group("mixed");
    mixed.throughput(Throughput::Elements(reqs.len() as u64));
    mixed.bench_function("requests", |b| {
        b.iter(|| {
            let mut blocked = 0usize;
            for (_, url, v) in &reqs {
                let d = evaluate(black_box(&policy), &facts(url), v.as_ref());
                blocked += usize::from(!d.action.forwards());
            }
            black_box(blocked)
        })
    });
    // The proxy's reputation path over the same set: the policy's part of a filtered
    // request. Before: `evaluate` with an untested verdict to see whether a list or rule
    // decides, the stale window, then `evaluate` again with the verdict (rule selection
    // three times, lists twice). Now: `prepare` once, then `decide`.
    mixed.bench_function("reputation_path_evaluate_twice", |b| {
        let untested = Verdict::untested();
        b.iter(|| {
            let mut blocked = 0usize;
            for (_, url, v) in &reqs {
                let f = facts(url);
                let p = black_box(&policy);
                let first = evaluate(p, &f, Some(&untested));
                let d = if matches!(
                    first.reason,
                    Reason::Approved | Reason::Blocked | Reason::Rule
                ) {
                    first
                } else {
                    black_box(p.stale_window(&f));
                    evaluate(p, &f, v.as_ref())
                };
                blocked += usize::from(!d.action.forwards());
            }
            black_box(blocked)
        })
    });
    mixed.bench_function("reputation_path_prepared", |b| {
        b.iter(|| {
            let mut blocked = 0usize;
            for (_, url, v) in &reqs {
                let f = facts(url);
                let prepared = prepare(black_box(&policy), &f);
                let d = prepared.settled().unwrap_or_else(|| {
                    black_box(prepared.stale_window());
                    prepared.decide(v.as_ref())
                });
                blocked += usize::from(!d.action.forwards());
            }
            black_box(blocked)
        })
    });
    mixed.finish();

    let mut each = c.benchmark_group("request");
    for (name, url, v) in &reqs {
        each.bench_function(*name, |b| {
            b.iter(|| black_box(evaluate(black_box(&policy), &facts(url), v.as_ref()).action))
        });
    }
    each.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench_policy
}
criterion_main!(benches);
