//! Cost of HTTPS interception's certificate work: minting a leaf for a host never seen
//! (key generation, signing, a rustls `ServerConfig`) and fetching a cached one.
//!
//! Run with `cargo bench --bench intercept`. The CA is created in a temporary directory.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use webrep::intercept::ca::{InitOptions, init};
use webrep::intercept::mint::Minter;

fn minting(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(init(dir.path(), &InitOptions::default()).unwrap());
    let minter = Minter::new(ca, Duration::from_secs(7 * 86400), 1_000_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("mint");
    g.measurement_time(Duration::from_secs(5));
    // Cold: a host never seen, through the cache (as a first visit is).
    let n = AtomicU64::new(0);
    g.bench_function("cold", |b| {
        b.iter(|| {
            let host = format!("h{}.bench.test", n.fetch_add(1, Ordering::Relaxed));
            black_box(rt.block_on(minter.server_config(&host)).unwrap())
        })
    });
    // Cached: the same host again.
    rt.block_on(minter.server_config("cached.bench.test"))
        .unwrap();
    g.bench_function("cached", |b| {
        b.iter(|| {
            black_box(
                rt.block_on(minter.server_config("cached.bench.test"))
                    .unwrap(),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, minting);
criterion_main!(benches);
