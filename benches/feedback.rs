//! Smart feedback: what the request path pays to emit an event, how many events per second
//! the proxy's sender delivers, and how fast the server stores them.
//!
//! Run with `cargo bench --bench feedback`.
//!
//! Groups:
//! - `feedback/handoff`: [`Feedback::event`] plus [`Feedback::emit`] (build one untested
//!   event as the filter does, fit it, encode it and append it to the spool: one `write(2)`)
//!   while the sender task reads the spool and posts to a real in-process reputation server
//!   on 127.0.0.1. Only the hand-off is timed; between samples the bench waits (untimed)
//!   until the sender has delivered everything, so nothing is dropped.
//! - `feedback/handoff_folded`: the same event emitted with `feedback.aggregate_secs` on
//!   (folded into its host's aggregate: a mutex, a hash lookup and a scan of the host's
//!   clients; no encode, no append), over 1,000 hosts.
//! - `feedback/pipeline_10000`: 10,000 events emitted and waited for until the server has
//!   them all (read from the spool, batches of 500 over HTTP, stored on a file-backed store,
//!   the cursor advanced): delivered events/s.
//! - `feedback/ingest_500`: [`Store::ingest_events`] of batches of 500 new events into a
//!   file-backed store (WAL, `synchronous=NORMAL`), one escalation rule over user reports:
//!   the server's ingest events/s without HTTP.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokio_util::sync::CancellationToken;
use webrep::api::events::{Event, Kind};
use webrep::client::FollowRetry;
use webrep::client::RepClient;
use webrep::config::FeedbackConfig;
use webrep::config::{ApiConfig, EscalationRule};
use webrep::feedback::Feedback;
use webrep::model::Score;
use webrep::repserver::api::{self, Tokens};
use webrep::repserver::store::Store;
use webrep::reputation::{Reputation, ReputationConfig, SourceConfig};

const TOKEN: &str = "bench-client-token-0123456789";

fn fill(fb: &Feedback, i: u64) -> Event {
    let mut e = fb.event(format!("{i:016x}"), Kind::Untested);
    e.client = Some(fb.pseudonym("10.1.2.3", false));
    e.url = Some(format!("http://host{}.example/path/{i}", i % 1000));
    e.host = Some(format!("host{}.example", i % 1000));
    e.action = Some("allow".into());
    e.reason = Some("untested".into());
    e.risk = Some("untested".into());
    e.cache = Some("hit".into());
    e.source = Some("local".into());
    e
}

async fn wait_delivered(fb: &Feedback, target: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while fb.stats.sent.load(Ordering::Relaxed)
        + fb.stats.dropped_queue.load(Ordering::Relaxed)
        + fb.stats.rejected.load(Ordering::Relaxed)
        < target
    {
        assert!(Instant::now() < deadline, "the sender stalled");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn bench_proxy_side(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    webrep::tls::install_default();
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let fb = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(api::serve(
            listener,
            Store::open(&dir.path().join("reputation.db")).unwrap(),
            Tokens {
                client: vec![TOKEN.into()],
                admin: Vec::new(),
            },
            ApiConfig::default(),
            stop.clone(),
        ));
        let reputation = Arc::new(Reputation::new(ReputationConfig {
            sources: vec![SourceConfig {
                name: "local".into(),
                client: RepClient::new(&base, TOKEN, None).unwrap(),
                timeout: Duration::from_secs(10),
            }],
            cache_entries: 1000,
            max_stale: Duration::from_secs(60),
            retry_after: Duration::from_secs(1),
            follow_retry: FollowRetry::default(),
            key_summary_max_bytes: None,
        }));
        let fb = Arc::new(
            Feedback::new(&FeedbackConfig {
                enabled: true,
                proxy_id: Some("bench".into()),
                queue_events: 1 << 22,
                batch_events: 500,
                batch_interval: Duration::from_millis(20),
                send_timeout: Duration::from_secs(30),
                retry_interval: Duration::from_secs(1),
                spool_dir: dir.path().join("spool"),
                spool_max_bytes: 1 << 30,
                spool_fsync: Duration::from_secs(1),
                shutdown_flush: Duration::from_secs(5),
                aggregate: None,
                aggregate_kinds: Vec::new(),
                aggregate_max_hosts: 1,
            })
            .unwrap(),
        );
        fb.start(reputation).unwrap();
        fb
    });
    let mut g = c.benchmark_group("feedback");
    g.throughput(Throughput::Elements(1));
    let mut handed = 0u64;
    g.bench_function("handoff", |b| {
        b.iter_custom(|iters| {
            // Untimed: let the sender catch up, so the queue is empty at the start.
            rt.block_on(wait_delivered(&fb, handed));
            let start = Instant::now();
            for i in 0..iters {
                fb.emit(fill(&fb, i));
            }
            let took = start.elapsed();
            handed += iters;
            took
        });
    });
    rt.block_on(wait_delivered(&fb, handed));
    let folding = Feedback::new(&FeedbackConfig {
        enabled: true,
        proxy_id: Some("bench-folded".into()),
        queue_events: 1,
        batch_events: 500,
        batch_interval: Duration::from_millis(20),
        send_timeout: Duration::from_secs(30),
        retry_interval: Duration::from_secs(1),
        spool_dir: dir.path().join("spool-folded"),
        spool_max_bytes: 1 << 30,
        spool_fsync: Duration::from_secs(1),
        shutdown_flush: Duration::from_secs(5),
        aggregate: Some(Duration::from_secs(3600)),
        aggregate_kinds: vec![Kind::Untested],
        aggregate_max_hosts: 100_000,
    })
    .unwrap();
    g.bench_function("handoff_folded", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            folding.emit(fill(&folding, i));
        });
    });
    assert_eq!(folding.spool_events(), 0, "every event folded");
    const N: u64 = 10_000;
    g.throughput(Throughput::Elements(N));
    g.sample_size(10);
    g.bench_function("pipeline_10000", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                for i in 0..N {
                    fb.emit(fill(&fb, i));
                }
                handed += N;
                rt.block_on(wait_delivered(&fb, handed));
                total += start.elapsed();
            }
            total
        });
    });
    g.finish();
    eprintln!(
        "feedback bench: sent {} dropped {} spooled {}",
        fb.stats.sent.load(Ordering::Relaxed),
        fb.stats.dropped_queue.load(Ordering::Relaxed),
        fb.stats.spooled.load(Ordering::Relaxed)
    );
    rt.block_on(fb.close());
    stop.cancel();
}

fn bench_ingest(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("ingest.db")).unwrap();
    let rules = [EscalationRule {
        kinds: vec![Kind::UserReport, Kind::FileVerdict],
        distinct_clients: 3,
        distinct_reporters: 1,
        window_secs: 3600,
        score: Score::new(70).unwrap(),
        category: None,
    }];
    let mut next = 0u64;
    let mut batch = move || -> Vec<Event> {
        (0..500)
            .map(|_| {
                next += 1;
                let kind = if next.is_multiple_of(50) {
                    Kind::UserReport
                } else {
                    Kind::Blocked
                };
                let mut e =
                    Event::new(format!("{next:016x}"), kind, 1_800_000_000_000, "p1".into());
                e.client = Some(format!("10.0.{}.{}", (next / 256) % 256, next % 256));
                e.host = Some(format!("host{}.example", next % 5000));
                e.url = Some(format!("http://host{}.example/x", next % 5000));
                e.action = Some("block".into());
                e.reason = Some("risk".into());
                e.categories = vec!["malware".into()];
                e.rule = Some("r1".into());
                e
            })
            .collect()
    };
    let mut g = c.benchmark_group("feedback");
    g.throughput(Throughput::Elements(500));
    g.bench_function("ingest_500", |b| {
        b.iter_batched(
            &mut batch,
            |events| {
                let r = store.ingest_events(&events, 1_800_000_000, &rules).unwrap();
                assert_eq!(r.accepted, 500);
            },
            criterion::BatchSize::SmallInput,
        );
    });
    g.finish();
}

criterion_group!(benches, bench_proxy_side, bench_ingest);
criterion_main!(benches);
