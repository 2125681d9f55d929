//! The key summary: a compact set of the hosts of the reputation table's keys, so that a URL
//! none of whose lookup hosts (the host and its parent domains) is in the table is decided
//! `untested` without a round trip.
//!
//! # Where it sits
//! On the request path in [`super::Reputation::lookup`], before the host cache: one probe per
//! lookup host (at most [`crate::canon::MAX_HOSTS`]). It is loaded by the change follower from
//! the source it follows (`GET /v1/keys/hosts`, with the change sequence it is as of) and kept
//! current by that follower: a key the change stream names has its host added *before* the
//! cached answers for it are dropped, so the next lookup of the host asks the server.
//! Deleted keys stay until the next load (a host listed for nothing costs only a lookup).
//!
//! # What it costs
//! Each host is a 40-bit fingerprint (the top bits of a foldhash hash, seeded per process):
//! a directory of positions by the fingerprint's top bits (about one slot per four hosts,
//! at least 256 slots) and, in one sorted array, the low 32 bits of each fingerprint (the
//! directory slot holds the rest): 5 bytes per host, and a probe reads one directory pair
//! and about four neighbouring entries (two cache misses on a large table). Hosts added
//! since the load live in a small sorted array merged into the big one when it grows past a
//! sixteenth of it, so a change costs a copy of the small array and a merge now and then
//! costs one pass.
//!
//! # How it fails
//! It cannot say "listed" wrongly in a way that matters: a fingerprint collision (about
//! hosts / 2^40 per probe: one in a million with a million hosts) only sends a lookup to
//! the server. It can say "not listed" wrongly
//! only when it misses an addition, which the follower prevents by loading it together with
//! the change sequence it is as of and dropping it whenever it loses the stream.

use std::hash::BuildHasher as _;

/// Hosts added since the load are merged into the sorted array when there are more than
/// this many and more than a sixteenth of the array.
const MERGE_AT_LEAST: usize = 4096;

/// Bits of a host's fingerprint: the top bits of its 64-bit hash.
const FP_BITS: u32 = 40;

/// Fewest bits of the directory index: the fingerprint's bits above the 32 stored per host.
const MIN_DIR_BITS: u32 = FP_BITS - 32;

/// The hosts of a table's keys, by hash. Immutable: an update builds a new one
/// ([`KeySummary::with_added`]) sharing the big array, swapped in by its owner.
#[derive(Debug, Clone)]
pub struct KeySummary {
    hasher: foldhash::fast::RandomState,
    base: std::sync::Arc<Sorted>,
    /// Sorted, distinct fingerprints of hosts added since `base` was built.
    added: Vec<u64>,
}

/// Sorted, distinct fingerprints: a directory by their top bits and their low 32 bits.
#[derive(Debug)]
struct Sorted {
    /// The low 32 bits of each fingerprint, in fingerprint order.
    low: Vec<u32>,
    /// `dir[i]` is the first position in `low` of a fingerprint whose top `bits` bits are
    /// `>= i`; one more slot at the end holds `low.len()`.
    dir: Vec<u32>,
    /// How many top bits of a fingerprint index `dir`: `MIN_DIR_BITS..=32`.
    bits: u32,
}

impl Sorted {
    /// `None` when there are more than `u32::MAX` fingerprints.
    fn new(mut fps: Vec<u64>) -> Option<Sorted> {
        fps.sort_unstable();
        fps.dedup();
        u32::try_from(fps.len()).ok()?;
        // About four fingerprints per directory slot.
        let bits = (usize::BITS - (fps.len() / 4).leading_zeros()).clamp(MIN_DIR_BITS, 32);
        let slots = 1usize << bits;
        let mut dir = Vec::with_capacity(slots + 1);
        let mut at = 0usize;
        for slot in 0..slots {
            while at < fps.len() && top(fps[at], bits) < slot {
                at += 1;
            }
            dir.push(u32::try_from(at).ok()?);
        }
        dir.push(u32::try_from(fps.len()).ok()?);
        // Truncation intended: the directory slot holds the bits above these.
        let low = fps.iter().map(|&f| f as u32).collect();
        Some(Sorted { low, dir, bits })
    }

    fn contains(&self, fp: u64) -> bool {
        let slot = top(fp, self.bits);
        let (lo, hi) = (self.dir[slot] as usize, self.dir[slot + 1] as usize);
        // Truncation intended, as in `new`.
        self.low[lo..hi].contains(&(fp as u32))
    }

    /// Every fingerprint, in order (for a merge).
    fn fingerprints(&self) -> impl Iterator<Item = u64> + '_ {
        self.dir.windows(2).enumerate().flat_map(move |(slot, w)| {
            let high = (slot as u64 >> (self.bits - MIN_DIR_BITS)) << 32;
            self.low[w[0] as usize..w[1] as usize]
                .iter()
                .map(move |&l| high | u64::from(l))
        })
    }

    fn len(&self) -> usize {
        self.low.len()
    }
}

/// The fingerprint of `host` under `hasher`.
fn fingerprint(hasher: &foldhash::fast::RandomState, host: &str) -> u64 {
    hasher.hash_one(host) >> (64 - FP_BITS)
}

impl KeySummary {
    /// A summary of `hosts`, or `None` when there are more than `u32::MAX` of them.
    pub fn new<S: AsRef<str>>(hosts: impl IntoIterator<Item = S>) -> Option<KeySummary> {
        let hasher = foldhash::fast::RandomState::default();
        let fps: Vec<u64> = hosts
            .into_iter()
            .map(|h| fingerprint(&hasher, h.as_ref()))
            .collect();
        Some(KeySummary {
            hasher,
            base: std::sync::Arc::new(Sorted::new(fps)?),
            added: Vec::new(),
        })
    }

    /// Whether `host` may be the host of a key (always, for a host that is).
    pub fn contains(&self, host: &str) -> bool {
        let fp = fingerprint(&self.hasher, host);
        self.base.contains(fp) || self.added.binary_search(&fp).is_ok()
    }

    /// This summary with `hosts` added: the small array of additions copied with them, or
    /// everything merged into a new sorted array when the additions have grown large.
    #[must_use]
    pub fn with_added<S: AsRef<str>>(&self, hosts: impl IntoIterator<Item = S>) -> KeySummary {
        let mut added = self.added.clone();
        added.extend(
            hosts
                .into_iter()
                .map(|h| fingerprint(&self.hasher, h.as_ref()))
                .filter(|fp| !self.base.contains(*fp)),
        );
        added.sort_unstable();
        added.dedup();
        if added.len() > MERGE_AT_LEAST.max(self.base.len() / 16) {
            let mut all = Vec::with_capacity(self.base.len() + added.len());
            all.extend(self.base.fingerprints());
            all.extend_from_slice(&added);
            if let Some(merged) = Sorted::new(all) {
                return KeySummary {
                    hasher: self.hasher.clone(),
                    base: std::sync::Arc::new(merged),
                    added: Vec::new(),
                };
            }
        }
        KeySummary {
            hasher: self.hasher.clone(),
            base: self.base.clone(),
            added,
        }
    }

    /// Distinct hosts in the summary.
    pub fn len(&self) -> usize {
        self.base.len() + self.added.len()
    }

    /// Whether the summary lists no host.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of memory its arrays take.
    pub fn bytes(&self) -> usize {
        (self.base.low.capacity() + self.base.dir.capacity()) * 4 + self.added.capacity() * 8
    }
}

/// The top `bits` bits of fingerprint `fp`, as a directory slot.
fn top(fp: u64, bits: u32) -> usize {
    // `bits` is MIN_DIR_BITS..=32: the shift is in range and the slot fits a usize.
    (fp >> (FP_BITS - bits)) as usize
}

/// Reads a `GET /v1/keys/hosts` answer: the first line `seq N`, then one host per line (the
/// hosts, read as they are iterated; an empty line is skipped).
///
/// # Errors
/// A message when the first line is not `seq N` or the text is not UTF-8.
pub fn parse_key_hosts(body: &[u8]) -> Result<(u64, impl Iterator<Item = &str>), String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("key hosts not UTF-8: {e}"))?;
    let mut lines = text.split('\n');
    let seq = lines
        .next()
        .and_then(|l| l.strip_prefix("seq "))
        .and_then(|n| n.trim().parse().ok())
        .ok_or("key hosts do not start with `seq N`")?;
    Ok((seq, lines.filter(|l| !l.is_empty())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("host{i}.example.test")).collect()
    }

    #[test]
    fn lists_every_host_it_was_built_from_and_few_others() {
        for n in [0, 1, 3, 4, 5, 100, 10_000] {
            let listed = hosts(n);
            let s = KeySummary::new(listed.iter().map(String::as_str)).unwrap();
            assert_eq!(s.len(), n);
            assert!(listed.iter().all(|h| s.contains(h)), "{n}");
            let strangers = (0..10_000)
                .filter(|i| s.contains(&format!("other{i}.test")))
                .count();
            assert_eq!(strangers, 0, "{n}");
        }
    }

    #[test]
    fn added_hosts_are_listed_before_and_after_a_merge() {
        let base = hosts(1000);
        let mut s = KeySummary::new(base.iter().map(String::as_str)).unwrap();
        assert!(!s.contains("new.test"));
        s = s.with_added(["new.test", "host1.example.test"]);
        assert!(s.contains("new.test"));
        assert_eq!(s.len(), 1001, "a host listed already is not added twice");
        let more: Vec<String> = (0..MERGE_AT_LEAST + 1)
            .map(|i| format!("more{i}.test"))
            .collect();
        s = s.with_added(more.iter().map(String::as_str));
        assert!(s.added.is_empty(), "merged");
        assert_eq!(s.len(), 1001 + more.len());
        assert!(
            s.contains("new.test") && s.contains("more7.test") && s.contains("host9.example.test")
        );
        assert!(!s.contains("none.test"));
    }

    #[test]
    fn a_merge_keeps_every_fingerprint_whatever_the_directory_size() {
        for n in [0, 3, 1000, 5000] {
            let base = hosts(n);
            let s = KeySummary::new(base.iter().map(String::as_str)).unwrap();
            let before: Vec<u64> = s.base.fingerprints().collect();
            assert!(before.windows(2).all(|w| w[0] < w[1]), "{n}: in order");
            let more: Vec<String> = (0..MERGE_AT_LEAST * 2)
                .map(|i| format!("grow{i}.test"))
                .collect();
            let m = s.with_added(more.iter().map(String::as_str));
            assert!(
                m.added.is_empty() && m.base.bits > s.base.bits,
                "{n}: merged, larger"
            );
            assert!(base.iter().chain(&more).all(|h| m.contains(h)), "{n}");
            let after: std::collections::BTreeSet<u64> = m.base.fingerprints().collect();
            assert!(before.iter().all(|f| after.contains(f)), "{n}");
            assert_eq!(m.len(), n + more.len());
        }
    }

    #[test]
    fn reads_the_key_hosts_answer() {
        let read = |body: &'static [u8]| {
            parse_key_hosts(body).map(|(seq, hosts)| (seq, hosts.collect::<Vec<_>>()))
        };
        assert_eq!(
            read(b"seq 42\na.test\n\nb.test\n").unwrap(),
            (42, vec!["a.test", "b.test"])
        );
        assert_eq!(read(b"seq 7\n").unwrap(), (7, vec![]));
        for bad in [&b""[..], b"a.test\n", b"seq x\n", b"seq 1\n\xff\n"] {
            assert!(read(bad).is_err(), "{bad:?}");
        }
    }
}
