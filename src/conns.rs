//! Client connections of the proxy and of the reputation server: how many may be open in all
//! and per client address, which idle one is closed to make room, and what each connection's
//! activity is (requests in flight, since when it has been idle).
//!
//! # Where it sits
//! Right after `accept`, before a connection gets a task: [`ConnLimits::admit`] either hands
//! out a [`ConnPermit`] (held for as long as the connection, or the tunnel or WebSocket it
//! turned into, is open) or refuses the client for having too many connections already; a
//! refused client gets a short fixed answer ([`ConnLimits::refuse`]) and the socket is closed.
//! The proxy's accept loops (`proxy.max_connections`, `proxy.max_connections_per_client`) and
//! the reputation server's (`server.max_connections`, `server.max_connections_per_client`)
//! share this one implementation.
//!
//! # Rules
//! - **Per client address.** A client is an IPv4 address, or an IPv6 /64 prefix (one host or
//!   one customer network: whoever holds an address in it usually holds all of it, so counting
//!   single IPv6 addresses would limit nothing); IPv4-mapped IPv6 addresses count as IPv4.
//!   Beyond its limit a client is refused at once, whatever the total.
//! - **In all.** At the total limit, the connection idle for longest is asked to close and the
//!   new client is served in its place. Idle means no request in progress and no byte of the
//!   next request head received (a connection that has sent nothing since it was accepted is
//!   idle too); tunnels and WebSockets are never chosen. When no connection is idle, the new
//!   client waits until one closes or becomes idle (further clients wait in the kernel's
//!   accept backlog meanwhile). At most [`MAX_PENDING_CLOSES`] closes are pending at a time,
//!   so the total is exceeded by at most that many, and only for as long as an idle
//!   connection takes to close (its graceful shutdown is immediate).
//!
//! # What it costs
//! One short critical section (a `Mutex` shared by all workers) when a connection opens and
//! one when it closes; nothing per request beyond the atomics of [`ConnActivity`]. Choosing an
//! idle connection scans the open ones (some µs per thousand), only at the total limit. Per
//! connection: a slab entry and a share of a per-client counter.
//!
//! # How it fails
//! It cannot: a poisoned lock (a panic elsewhere while holding it) is recovered, since the
//! counters are updated in single steps. A refused client whose answer cannot be written just
//! sees the connection close.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Closes of idle connections that may be pending at once (see the module docs).
pub const MAX_PENDING_CLOSES: usize = 64;

/// How often a client waiting at the total limit looks again for an idle connection (one
/// closing wakes it at once).
const RECHECK: Duration = Duration::from_millis(100);

/// Refused clients that may be kept briefly to read what they sent (so that the answer is
/// not lost to a reset); beyond, further refused connections are closed without waiting.
const MAX_LINGERING: usize = 256;

/// How long, and for how many bytes, a refused client is read from before its socket closes.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;

/// "No byte yet" in [`ConnActivity`]'s millisecond fields.
pub(crate) const NONE: u64 = u64::MAX;

/// What one client connection is doing, shared between its IO wrapper, its service, its
/// watchdog and [`ConnLimits`]: requests in flight, since when it is idle, the first byte of
/// a request head, and a request to close.
#[derive(Debug)]
pub struct ConnActivity {
    pub(crate) base: Instant,
    pub(crate) in_flight: AtomicU32,
    /// Milliseconds since `base` when the connection last became idle.
    pub(crate) idle_since: AtomicU64,
    /// Milliseconds since `base` of the first byte read while idle, or `NONE`.
    pub(crate) first_byte: AtomicU64,
    /// Putting the connection aside: `PARK_NO`, `PARK_ASKED` (the socket's shutdown is
    /// skipped), or `PARK_BYTES_MOVED` (asked, and bytes were read or written since).
    park: AtomicU8,
    close: Notify,
}

const PARK_NO: u8 = 0;
const PARK_ASKED: u8 = 1;
const PARK_BYTES_MOVED: u8 = 2;

impl Default for ConnActivity {
    fn default() -> Self {
        Self::new()
    }
}

impl ConnActivity {
    pub fn new() -> Self {
        Self {
            base: Instant::now(),
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
            first_byte: AtomicU64::new(NONE),
            park: AtomicU8::new(PARK_NO),
            close: Notify::new(),
        }
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    pub fn request_finished(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.first_byte.store(NONE, Ordering::Relaxed);
            self.idle_since.store(self.now_ms(), Ordering::Release);
        }
    }

    /// Marks a request started until the returned guard is dropped (with the response body).
    pub fn start_request(self: &Arc<Self>) -> InFlight {
        self.request_started();
        InFlight(self.clone())
    }

    /// Notes bytes read from the client (the start of a request head when idle).
    pub fn bytes_read(&self) {
        if self.first_byte.load(Ordering::Relaxed) == NONE
            && self.in_flight.load(Ordering::Relaxed) == 0
        {
            self.first_byte.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// Since when the connection has been idle (no request in progress, no byte of a new
    /// request head), or `None` while it is not.
    pub fn idle_since(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0
            || self.first_byte.load(Ordering::Relaxed) != NONE
        {
            return None;
        }
        Some(self.base + Duration::from_millis(self.idle_since.load(Ordering::Acquire)))
    }

    /// Starts putting an idle connection aside: its HTTP state is ended while the socket
    /// stays open (see [`ConnActivity::keeps_socket_open`]).
    pub fn begin_park(&self) {
        self.park.store(PARK_ASKED, Ordering::Relaxed);
    }

    /// True while a park is under way: the socket's shutdown is to be skipped.
    pub fn keeps_socket_open(&self) -> bool {
        self.park.load(Ordering::Relaxed) != PARK_NO
    }

    /// Notes bytes read or written: during a park, proof that the HTTP connection was not
    /// idle after all.
    pub fn bytes_moved(&self) {
        if self.park.load(Ordering::Relaxed) == PARK_ASKED {
            self.park.store(PARK_BYTES_MOVED, Ordering::Relaxed);
        }
    }

    /// Ends a park: true when no byte moved since [`ConnActivity::begin_park`], so the HTTP
    /// connection ended from idle and the socket may serve a new one.
    pub fn end_park(&self) -> bool {
        self.park.swap(PARK_NO, Ordering::Relaxed) == PARK_ASKED
    }

    /// Asks the connection to close (gracefully: an idle one closes at once).
    pub fn ask_to_close(&self) {
        self.close.notify_one();
    }

    /// Resolves once [`ConnActivity::ask_to_close`] was called (also if it was called before).
    pub async fn close_asked(&self) {
        self.close.notified().await;
    }
}

/// A request in progress on a connection; dropping it marks the request finished.
#[derive(Debug)]
pub struct InFlight(Arc<ConnActivity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// The key a client's connections are counted under: its IPv4 address, or its IPv6 /64.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

/// Counters for `/metrics` and `/stats`.
#[derive(Debug, Default)]
pub struct ConnStats {
    /// Connections refused because their client had too many open.
    pub refused_per_client: AtomicU64,
    /// Idle connections closed to make room for a new client at the total limit.
    pub closed_idle: AtomicU64,
    /// Idle keep-alive connections that gave back their HTTP buffers and wait for their next
    /// request like a new connection (the proxy's `proxy.client_park_after_ms`).
    pub parked: AtomicU64,
}

/// The connection limits of one listener set (see the module docs).
#[derive(Debug)]
pub struct ConnLimits {
    max: usize,
    per_client: usize,
    inner: Mutex<Inner>,
    freed: Notify,
    lingering: AtomicUsize,
    /// What a refused client is sent.
    answer: Box<[u8]>,
    pub stats: ConnStats,
}

#[derive(Debug, Default)]
struct Inner {
    conns: slab::Slab<Entry>,
    per_client: HashMap<IpAddr, u32, foldhash::fast::RandomState>,
    /// Entries asked to close and not gone yet.
    closing: usize,
}

#[derive(Debug)]
struct Entry {
    client: IpAddr,
    /// `None` for a connection that is never closed to make room (a tunnel, a WebSocket).
    activity: Option<Arc<ConnActivity>>,
    closing: bool,
}

/// The client already has its limit of connections open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyFromClient;

/// A connection's place under the limits; dropping it frees the place.
#[derive(Debug)]
pub struct ConnPermit {
    limits: Arc<ConnLimits>,
    id: usize,
}

impl ConnLimits {
    /// At most `max` connections in all and `per_client` per client; 0 means no limit. A
    /// refused client is answered `429 Too Many Requests` with `body` as `content_type`.
    pub fn new(max: usize, per_client: usize, content_type: &str, body: &str) -> Arc<Self> {
        let unlimited = |n: usize| if n == 0 { usize::MAX } else { n };
        let answer = format!(
            "HTTP/1.1 429 Too Many Requests\r\nContent-Type: {content_type}\r\n\
             Content-Length: {}\r\nRetry-After: 1\r\nCache-Control: no-store\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
        Arc::new(Self {
            max: unlimited(max),
            per_client: unlimited(per_client),
            inner: Mutex::default(),
            freed: Notify::new(),
            lingering: AtomicUsize::new(0),
            answer: answer.into_bytes().into_boxed_slice(),
            stats: ConnStats::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().conns.len()
    }

    /// Open connections and the counters, for `/stats`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "open": self.open(),
            "refused_per_client": self.stats.refused_per_client.load(Ordering::Relaxed),
            "closed_idle": self.stats.closed_idle.load(Ordering::Relaxed),
            "parked": self.stats.parked.load(Ordering::Relaxed),
        })
    }

    /// A place for a new connection from `ip` whose activity is `activity`: at once when
    /// there is room or an idle connection to close, else once there is.
    ///
    /// # Errors
    /// [`TooManyFromClient`] when the client has its limit of connections open (counted in
    /// [`ConnStats::refused_per_client`]).
    pub async fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        activity: &Arc<ConnActivity>,
    ) -> Result<ConnPermit, TooManyFromClient> {
        let client = client_key(ip);
        loop {
            // Registered before looking, so that a close in between still wakes us.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(admitted) = self.try_admit(client, activity) {
                return admitted;
            }
            let _ = tokio::time::timeout(RECHECK, freed).await;
        }
    }

    /// One attempt of [`ConnLimits::admit`]; `None`: full, and nothing idle to close.
    fn try_admit(
        self: &Arc<Self>,
        client: IpAddr,
        activity: &Arc<ConnActivity>,
    ) -> Option<Result<ConnPermit, TooManyFromClient>> {
        let mut inner = self.lock();
        let count = inner.per_client.get(&client).copied().unwrap_or(0);
        if count as usize >= self.per_client {
            self.stats
                .refused_per_client
                .fetch_add(1, Ordering::Relaxed);
            return Some(Err(TooManyFromClient));
        }
        if inner.conns.len() >= self.max && !self.close_idlest(&mut inner) {
            return None;
        }
        *inner.per_client.entry(client).or_insert(0) += 1;
        let id = inner.conns.insert(Entry {
            client,
            activity: Some(activity.clone()),
            closing: false,
        });
        Some(Ok(ConnPermit {
            limits: self.clone(),
            id,
        }))
    }

    /// Asks the connection idle for longest to close; false when none is idle (or too many
    /// closes are pending).
    fn close_idlest(&self, inner: &mut Inner) -> bool {
        if inner.closing >= MAX_PENDING_CLOSES {
            return false;
        }
        let idlest = inner
            .conns
            .iter()
            .filter(|(_, e)| !e.closing)
            .filter_map(|(id, e)| Some((e.activity.as_ref()?.idle_since()?, id)))
            .min();
        let Some((_, id)) = idlest else {
            return false;
        };
        let entry = &mut inner.conns[id];
        entry.closing = true;
        if let Some(a) = &entry.activity {
            a.ask_to_close();
        }
        inner.closing += 1;
        self.stats.closed_idle.fetch_add(1, Ordering::Relaxed);
        true
    }

    fn release(&self, id: usize) {
        let mut inner = self.lock();
        let Some(entry) = inner.conns.try_remove(id) else {
            return;
        };
        if entry.closing {
            inner.closing -= 1;
        }
        if let Some(n) = inner.per_client.get_mut(&entry.client) {
            *n -= 1;
            if *n == 0 {
                inner.per_client.remove(&entry.client);
            }
        }
        drop(inner);
        self.freed.notify_waiters();
    }

    /// Answers a refused client with a 429 (written at once, without reading the request)
    /// and closes the connection. The socket is read from for up to a second
    /// first, so that the answer is not lost to the reset a close with unread bytes sends;
    /// when many refused clients are already being read from, it closes at once.
    pub async fn refuse(&self, mut stream: TcpStream) {
        // A fresh socket's send buffer holds a short answer: one write, no waiting.
        let _ = stream.try_write(&self.answer);
        if self.lingering.fetch_add(1, Ordering::AcqRel) >= MAX_LINGERING {
            self.lingering.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let _ = stream.shutdown().await;
        let drain = async {
            let mut buf = [0u8; 2048];
            let mut read = 0;
            while read < LINGER_BYTES {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => read += n,
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
        self.lingering.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConnPermit {
    /// Keeps this connection from being closed to make room (a tunnel or WebSocket took it
    /// over: it is busy whatever its HTTP activity says).
    pub fn keep_open(&self) {
        if let Some(e) = self.limits.lock().conns.get_mut(self.id) {
            e.activity = None;
        }
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        self.limits.release(self.id);
    }
}

/// A client [`accept_loop`] admitted: serve it while holding `permit`, telling `activity`
/// what it does.
#[derive(Debug)]
pub struct Admitted {
    pub stream: TcpStream,
    pub peer: std::net::SocketAddr,
    pub permit: ConnPermit,
    pub activity: Arc<ConnActivity>,
}

/// How long a listener waits after a failed accept (out of descriptors and the like)
/// before it tries again, instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Accepts clients on `listener` until `shutdown`: each is admitted under `limits`
/// (waiting at the total limit, while further clients wait in the backlog) and served by
/// the task `serve` makes of it, on `tracker`; a client over its address's limit is refused
/// with 429, also on `tracker`. The proxy's workers and the reputation server each run one
/// per listening socket.
pub async fn accept_loop<F, Fut>(
    listener: &TcpListener,
    limits: &Arc<ConnLimits>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
    mut serve: F,
) where
    F: FnMut(Admitted) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = shutdown.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let activity = Arc::new(ConnActivity::new());
        let admitted = tokio::select! {
            a = limits.admit(peer.ip(), &activity) => a,
            () = shutdown.cancelled() => return,
        };
        let Ok(permit) = admitted else {
            tracing::debug!(client.addr = %peer, "too many connections from this client; refused");
            let limits = limits.clone();
            tracker.spawn(async move { limits.refuse(stream).await });
            continue;
        };
        let _ = stream.set_nodelay(true);
        tracker.spawn(serve(Admitted {
            stream,
            peer,
            permit,
            activity,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_ipv4_addresses_and_ipv6_64s() {
        let k = |s: &str| client_key(s.parse().unwrap());
        assert_eq!(k("192.0.2.7"), k("192.0.2.7"));
        assert_ne!(k("192.0.2.7"), k("192.0.2.8"));
        assert_eq!(k("2001:db8:1:2:aaaa::1"), k("2001:db8:1:2:ffff::9"));
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
        assert_eq!(k("::ffff:192.0.2.7"), k("192.0.2.7"));
    }

    #[tokio::test]
    async fn a_client_over_its_limit_is_refused_and_a_closed_connection_frees_its_place() {
        let limits = ConnLimits::new(10, 2, "text/plain", "no\n");
        let a = "192.0.2.1".parse().unwrap();
        let b = "192.0.2.2".parse().unwrap();
        let act = || Arc::new(ConnActivity::new());
        let first = limits.admit(a, &act()).await.unwrap();
        let _second = limits.admit(a, &act()).await.unwrap();
        assert_eq!(
            limits.admit(a, &act()).await.unwrap_err(),
            TooManyFromClient
        );
        let _other = limits.admit(b, &act()).await.unwrap();
        drop(first);
        let _third = limits.admit(a, &act()).await.unwrap();
        assert_eq!(limits.open(), 3);
        assert_eq!(limits.stats.refused_per_client.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn at_the_limit_the_idlest_connection_is_asked_to_close_and_busy_ones_never() {
        let limits = ConnLimits::new(3, 0, "text/plain", "no\n");
        let ip = "192.0.2.1".parse().unwrap();
        let busy = Arc::new(ConnActivity::new());
        let _busy_req = busy.start_request();
        let tunnel = Arc::new(ConnActivity::new());
        let older = Arc::new(ConnActivity::new());
        let newer = Arc::new(ConnActivity::new());
        // The tunnel has been idle longest by its HTTP activity, but it is kept.
        let t = limits.admit(ip, &tunnel).await.unwrap();
        t.keep_open();
        let _busy = limits.admit(ip, &busy).await.unwrap();
        let _older = limits.admit(ip, &older).await.unwrap();
        let _newer = limits.admit(ip, &newer).await.unwrap();
        assert_eq!(limits.stats.closed_idle.load(Ordering::Relaxed), 1);
        let asked =
            |a: &ConnActivity| futures_util::FutureExt::now_or_never(a.close_asked()).is_some();
        assert!(asked(&older));
        assert!(!asked(&newer) && !asked(&busy) && !asked(&tunnel));
    }
}
