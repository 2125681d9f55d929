//! The proxy's key summary ([`webrep::reputation::summary::KeySummary`]): its memory and the
//! cost of one probe for a table of 1 and 10 million hosts, a host listed and one not, beside
//! a `HashSet<u64>` of the same hashes (the obvious alternative), and the time to build it
//! from the server's host list.
//!
//! Run: `cargo bench --bench key_summary`. Memory figures are printed before the timings.

use std::collections::HashSet;
use std::hash::BuildHasher as _;

use criterion::{Criterion, criterion_group, criterion_main};
use webrep::reputation::summary::KeySummary;

/// Hosts probed in turn (a power of two).
const PROBES: u64 = 1 << 18;

fn host(i: u64) -> String {
    format!("www{i}.example{}.test", i % 9973)
}

fn bench_summary(c: &mut Criterion) {
    for n in [1_000_000u64, 10_000_000] {
        let started = std::time::Instant::now();
        let summary = KeySummary::new((0..n).map(host)).unwrap();
        let built = started.elapsed();
        let hasher = foldhash::fast::RandomState::default();
        let set: HashSet<u64, foldhash::fast::RandomState> =
            (0..n).map(|i| hasher.hash_one(host(i).as_str())).collect();
        // A hashbrown table: one u64 and one control byte per bucket.
        let set_bytes = set.capacity().next_power_of_two() * 9;
        eprintln!(
            "key summary of {n} hosts: {} bytes ({:.1} per host), built in {built:?}; \
             HashSet<u64>: about {set_bytes} bytes ({:.1} per host)",
            summary.bytes(),
            summary.bytes() as f64 / n as f64,
            set_bytes as f64 / n as f64,
        );
        // Enough probes that the arrays' lines are not all in the CPU caches.
        let listed: Vec<String> = (0..PROBES).map(|i| host(i * 7919 % n)).collect();
        let strangers: Vec<String> = (0..PROBES).map(|i| format!("x{i}.other.test")).collect();
        let mask = PROBES as usize - 1;
        let label = format!("{}M", n / 1_000_000);
        let mut i = 0usize;
        c.bench_function(&format!("key_summary/{label}/listed"), |b| {
            b.iter(|| {
                i = (i + 1) & mask;
                summary.contains(&listed[i])
            })
        });
        c.bench_function(&format!("key_summary/{label}/not_listed"), |b| {
            b.iter(|| {
                i = (i + 1) & mask;
                summary.contains(&strangers[i])
            })
        });
        c.bench_function(&format!("hash_set/{label}/not_listed"), |b| {
            b.iter(|| {
                i = (i + 1) & mask;
                set.contains(&hasher.hash_one(strangers[i].as_str()))
            })
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = bench_summary
}
criterion_main!(benches);
