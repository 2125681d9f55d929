//! The bound on idle upstream connections: at most `proxy.upstream_max_idle` pooled
//! connections wait for reuse in the whole process, the least recently used one closed to
//! make room.
//!
//! # Where it sits
//! The pools bound idle connections per host (`proxy.upstream_max_idle_per_host`) and in
//! time (`proxy.upstream_idle_timeout_ms`) but not in total, and with the long tail of an
//! office's hosts they would otherwise hold one idle connection for every host visited
//! within the idle timeout, each with its file descriptor and buffers. Every upstream
//! connection the pools make ([`super::dial::Connector`], and the early TLS connections of
//! [`super::early`]) is a [`Tracked`] socket registered with its worker's [`IdleBound`]
//! (each worker thread has one, over its plain and HTTPS pools: no lock is shared between
//! workers; the process's bound is split evenly among them).
//!
//! A connection is busy from the moment a request is written to it until the response body
//! handed to the client is finished or dropped (the [`PoolHandle`] that the pools copy into
//! every response's extensions, released by [`super::body::ProxyBody`]); it is then idle,
//! in least-recently-used order. A connection handed to hyper that has had no request
//! written for [`FRESH_GRACE`] is idle too (hyper-util's HTTP/2 pool keeps unused the
//! connection it was making for a request that found a pooled one first); a per-worker task
//! looks for those every [`FRESH_GRACE`]. When a connection becoming idle makes one too
//! many, the oldest idle one is evicted: its socket reads as closed from then on and its
//! waiting reader, if any, is woken, so hyper's connection task ends and the socket closes;
//! [`super::h1pool`], which holds its idle connections as bare sockets, drops the entry
//! within a second. A request that took the evicted
//! connection from the pool at that very moment is sent again on a new one (the closure is
//! seen before the request is written). Connections that never become idle here stay out of
//! the count: HTTP/2
//! connections (multiplexed; one per host, bounded by the per-host limit and the idle
//! timeout), upgraded ones (WebSocket), and one whose response was abandoned before its
//! head arrived.
//!
//! # What it costs
//! Per connection one small shared record (a few dozen bytes). Per request: an atomic load on
//! each write, and a lock of the worker's own (uncontended) mutex around a B-tree insert when
//! the response ends and a remove when the connection is next used or closed.
//!
//! # How it fails
//! It cannot fail a request: an evicted connection ends the way a connection the origin
//! closed ends, which the pools already handle by dialling another.

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// One worker's idle upstream connections, least recently used first, and its counters.
#[derive(Debug)]
pub struct IdleBound {
    max_idle: usize,
    lru: Mutex<Lru>,
    /// Idle connections now (the LRU's length, readable without the lock).
    idle: AtomicUsize,
    /// Upstream connections open now, busy or idle.
    open: AtomicUsize,
    /// Idle connections closed to keep within `max_idle`.
    evictions: AtomicU64,
}

#[derive(Debug, Default)]
struct Lru {
    /// Idle connections by the order they became idle.
    by_age: BTreeMap<u64, Arc<Slot>>,
    next: u64,
    /// Connections handed to hyper with no request written yet, oldest first.
    fresh: VecDeque<(Instant, Weak<Slot>)>,
}

/// What a connection and the bound share.
#[derive(Debug, Default)]
struct Slot {
    /// Its key in the LRU while idle; 0 while busy.
    idle_key: AtomicU64,
    evicted: AtomicBool,
    /// Handed to hyper (after the TLS handshake, for HTTPS).
    handed: AtomicBool,
    /// A request was written since it was handed over.
    used: AtomicBool,
    /// The task reading the socket, woken on eviction.
    reader: AtomicWaker,
}

/// How long a connection handed to hyper may stay without a request before it counts as
/// idle. hyper-util finishes a connection it started for a request that found a pooled one
/// first, and pools it unused; the request it was made for is written microseconds after the
/// handover otherwise.
pub const FRESH_GRACE: Duration = Duration::from_secs(1);

/// Counts summed over the workers, for `/metrics` and `/stats`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PoolCounts {
    pub open: usize,
    pub idle: usize,
    pub evictions: u64,
}

impl IdleBound {
    /// One bound per worker: `total` idle connections for the process, split evenly (each
    /// worker keeps at least one connection).
    pub fn per_worker(total: usize, workers: usize) -> Vec<Arc<IdleBound>> {
        let workers = workers.max(1);
        let each = total.div_ceil(workers).max(1);
        (0..workers).map(|_| Arc::new(Self::new(each))).collect()
    }

    pub fn new(max_idle: usize) -> Self {
        Self {
            max_idle,
            lru: Mutex::default(),
            idle: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    /// The counts of all `bounds`.
    pub fn counts(bounds: &[Arc<IdleBound>]) -> PoolCounts {
        bounds
            .iter()
            .fold(PoolCounts::default(), |c, b| PoolCounts {
                open: c.open + b.open.load(Relaxed),
                idle: c.idle + b.idle.load(Relaxed),
                evictions: c.evictions + b.evictions.load(Relaxed),
            })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        // The lock guards plain map operations: a panic cannot leave it inconsistent.
        self.lru
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `slot` is in use again (or closing): out of the LRU.
    fn busy(&self, slot: &Slot) {
        let mut lru = self.lock();
        let key = slot.idle_key.swap(0, Relaxed);
        if key != 0 && lru.by_age.remove(&key).is_some() {
            self.store_counts(&lru);
        }
    }

    /// `slot` waits for reuse: into the LRU, and the oldest idle connection evicted if that
    /// makes one too many.
    fn idle(&self, slot: &Arc<Slot>) {
        let victims = {
            let mut lru = self.lock();
            Self::insert(&mut lru, slot);
            self.over_bound(&mut lru)
        };
        self.evict(victims);
    }

    fn insert(lru: &mut Lru, slot: &Arc<Slot>) {
        if slot.idle_key.load(Relaxed) != 0 || slot.evicted.load(Relaxed) {
            return;
        }
        lru.next += 1;
        let key = lru.next;
        slot.idle_key.store(key, Relaxed);
        lru.by_age.insert(key, slot.clone());
    }

    fn store_counts(&self, lru: &Lru) {
        self.idle.store(lru.by_age.len(), Relaxed);
    }

    /// The idle connections beyond the bounds, oldest first, taken out of the LRU: grown
    /// ones beyond their own bound first, then any beyond the total.
    fn over_bound(&self, lru: &mut Lru) -> Vec<Arc<Slot>> {
        let mut victims = Vec::new();
        while lru.by_age.len() > self.max_idle
            && let Some((_, v)) = lru.by_age.pop_first()
        {
            victims.push(v);
        }
        self.store_counts(lru);
        victims
    }

    /// Closes `victims`: each reads as closed from now on, and its reader is woken to see it.
    fn evict(&self, victims: Vec<Arc<Slot>>) {
        for v in victims {
            v.idle_key.store(0, Relaxed);
            v.evicted.store(true, Relaxed);
            self.evictions.fetch_add(1, Relaxed);
            v.reader.wake();
        }
    }

    /// Connections handed over before `cutoff` and never used since become idle (and the
    /// bound is enforced over them).
    fn sweep(&self, cutoff: Instant) {
        let victims = {
            let mut lru = self.lock();
            while lru.fresh.front().is_some_and(|(t, _)| *t <= cutoff) {
                let Some((_, slot)) = lru.fresh.pop_front() else {
                    break;
                };
                if let Some(slot) = slot.upgrade()
                    && !slot.used.load(Relaxed)
                {
                    Self::insert(&mut lru, &slot);
                }
            }
            self.over_bound(&mut lru)
        };
        self.evict(victims);
    }

    /// Every [`FRESH_GRACE`], counts the connections hyper-util pooled unused as idle; runs
    /// on the worker's runtime until `stop`.
    pub async fn sweep_fresh(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(FRESH_GRACE);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => return,
            }
            if let Some(cutoff) = Instant::now().checked_sub(FRESH_GRACE) {
                self.sweep(cutoff);
            }
        }
    }
}

/// An upstream socket registered with its worker's [`IdleBound`]: reads as closed once
/// evicted; a write marks it busy.
#[derive(Debug)]
pub struct Tracked {
    io: TokioIo<TcpStream>,
    reg: Registration,
}

/// A [`Tracked`] socket's place in its worker's [`IdleBound`]: given up when the socket is
/// dropped or taken out of the pool's hands ([`Tracked::into_tcp`]).
#[derive(Debug)]
struct Registration {
    slot: Arc<Slot>,
    bound: Arc<IdleBound>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.bound.busy(&self.slot);
        self.bound.open.fetch_sub(1, Relaxed);
    }
}

impl Tracked {
    /// A new connection, busy (it was dialled for a request).
    pub fn new(tcp: TcpStream, bound: &Arc<IdleBound>) -> Self {
        bound.open.fetch_add(1, Relaxed);
        Self {
            io: TokioIo::new(tcp),
            reg: Registration {
                slot: Arc::default(),
                bound: bound.clone(),
            },
        }
    }

    /// The socket, no longer counted by the bound: for a connection that left the pool for
    /// good (an upgraded WebSocket, relayed as a raw byte stream).
    pub fn into_tcp(self) -> TcpStream {
        self.io.into_inner()
    }

    /// Now hyper has it: from here on a write is a request, and a connection without one for
    /// [`FRESH_GRACE`] counts as idle (see [`IdleBound::sweep_fresh`]).
    pub fn handed_over(&self) {
        if !self.reg.slot.handed.swap(true, Relaxed) {
            let weak = Arc::downgrade(&self.reg.slot);
            self.reg
                .bound
                .lock()
                .fresh
                .push_back((Instant::now(), weak));
        }
    }

    /// Whether this idle connection can carry another request: not evicted, and nothing to
    /// read (on an idle HTTP/1.1 connection a byte is the origin's close or garbage). One
    /// non-blocking `peek`.
    pub fn reusable(&self) -> bool {
        if self.reg.slot.evicted.load(Relaxed) {
            return false;
        }
        let mut byte = [std::mem::MaybeUninit::<u8>::uninit()];
        matches!(
            socket2::SockRef::from(self.io.inner()).peek(&mut byte),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
        )
    }

    fn note_write(&self, len: usize) {
        if len == 0 {
            return;
        }
        if self.reg.slot.idle_key.load(Relaxed) != 0 {
            self.reg.bound.busy(&self.reg.slot);
        }
        if self.reg.slot.handed.load(Relaxed) && !self.reg.slot.used.load(Relaxed) {
            self.reg.slot.used.store(true, Relaxed);
        }
    }
}

impl hyper::rt::Read for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        // Registered before the check, so that an eviction between the two still wakes us.
        self.reg.slot.reader.register(cx.waker());
        if self.reg.slot.evicted.load(Relaxed) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.note_write(buf.len());
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.note_write(bufs.iter().map(|b| b.len()).sum());
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl Connection for Tracked {
    fn connected(&self) -> Connected {
        self.io.connected().extra(PoolHandle {
            slot: self.reg.slot.clone(),
            bound: self.reg.bound.clone(),
        })
    }
}

/// In every response's extensions (the pools copy it there): releases the connection
/// the response came on to the idle LRU when the response body is done.
#[derive(Debug, Clone)]
pub struct PoolHandle {
    slot: Arc<Slot>,
    bound: Arc<IdleBound>,
}

impl PoolHandle {
    /// The response's body is finished or dropped: its connection waits for reuse.
    pub fn release(self) {
        self.bound.idle(&self.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot() -> Arc<Slot> {
        Arc::default()
    }

    #[test]
    fn the_oldest_idle_connection_is_evicted_past_the_bound() {
        let b = IdleBound::new(2);
        let (s1, s2, s3) = (slot(), slot(), slot());
        b.idle(&s1);
        b.idle(&s2);
        b.busy(&s1);
        b.idle(&s1);
        assert_eq!(b.idle.load(Relaxed), 2);
        b.idle(&s3);
        // s2 became idle before s1's second release.
        assert!(s2.evicted.load(Relaxed));
        assert!(!s1.evicted.load(Relaxed) && !s3.evicted.load(Relaxed));
        assert_eq!(b.idle.load(Relaxed), 2);
        assert_eq!(b.evictions.load(Relaxed), 1);
        // An evicted connection does not come back.
        b.idle(&s2);
        assert_eq!(b.idle.load(Relaxed), 2);
    }

    #[test]
    fn a_connection_handed_over_and_never_used_becomes_idle() {
        let b = Arc::new(IdleBound::new(1));
        let (unused, used) = (slot(), slot());
        used.used.store(true, Relaxed);
        let t0 = Instant::now();
        {
            let mut lru = b.lock();
            lru.fresh.push_back((t0, Arc::downgrade(&unused)));
            lru.fresh.push_back((t0, Arc::downgrade(&used)));
        }
        b.sweep(t0 - Duration::from_millis(1));
        assert_eq!(b.idle.load(Relaxed), 0, "not yet past the grace");
        b.sweep(t0);
        assert_eq!(b.idle.load(Relaxed), 1);
        assert!(unused.idle_key.load(Relaxed) != 0);
        assert_eq!(used.idle_key.load(Relaxed), 0);
        // Past the bound, the unused one is the oldest idle.
        let other = slot();
        b.idle(&other);
        assert!(unused.evicted.load(Relaxed));
    }

    #[test]
    fn the_process_bound_is_split_among_workers() {
        let w = IdleBound::per_worker(10, 3);
        assert_eq!(w.len(), 3);
        assert!(w.iter().all(|b| b.max_idle == 4));
        assert_eq!(IdleBound::per_worker(1, 4)[0].max_idle, 1);
    }
}
