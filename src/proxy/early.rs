//! Early upstream TLS for intercepted tunnels: the handshake with the real server runs beside
//! the client's own handshake, and the tunnel's first decrypted request finds its upstream
//! connection ready.
//!
//! # Where it sits
//! [`super::connect`] dials the CONNECT target before it answers `200` (so that a dead target
//! is a 502, not a reset). For a tunnel that is intercepted, [`super::intercept`] hands that
//! TCP connection to [`EarlyConns::start`] as soon as the ClientHello is read: the TLS
//! handshake with the server starts there, with the same verified client configuration (and
//! ALPN) as the pool the tunnel's requests will use: `h2` and `http/1.1` when the client
//! offered `h2`, none otherwise. The pools' connector ([`EarlyConnector`]) takes such a
//! connection for its host and port before it dials one, waiting for a handshake still in
//! flight; from then on it is an ordinary pooled connection.
//!
//! Without it, that first connection would be closed unused, and the first request would dial
//! and handshake only after it arrived: one more TCP connection to every intercepted server,
//! and the whole upstream handshake (a round trip or two to the server) added to the first
//! request of every tunnel that finds no pooled connection.
//!
//! Only for servers the pool is unlikely to hold a connection to: a host, port and pool (of
//! the tunnel's worker: each has its own) for which a connection was made, or a tunnel
//! ended, within `proxy.upstream_idle_timeout_ms` is "warm", and a new tunnel to it closes
//! its dialled connection unused (its requests will find the pooled one, and an early
//! handshake would be wasted).
//!
//! # What it costs
//! One task per intercepted tunnel to a cold server, living at most
//! `intercept.early_upstream_ms`; a lock around a small map at start and at take; one
//! lookup in the warm-server cache per tunnel and an insert per connection made and per
//! tunnel ended (at most 10,000 servers remembered). A tunnel whose client never sends a
//! request (a browser's speculative preconnect, a client that rejects the CA) has paid one
//! upstream TLS handshake for nothing; the connection is closed when the keep time ends. At
//! most [`MAX_EARLY`] are kept at once.
//!
//! # How it fails
//! A handshake that fails or times out (`proxy.upstream_connect_timeout_ms`) is dropped
//! silently: the connector then dials afresh, and that attempt reports the error (an
//! upstream certificate failure becomes the block page naming it). A connection the server closed
//! while it waited is as stale as any pooled one; the keep time is short for that reason.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use super::pool::Tracked;
use http::Uri;
use hyper_rustls::MaybeHttpsStream;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::sync::oneshot;

/// What the HTTPS pools' connector produces.
pub type UpstreamIo = MaybeHttpsStream<Tracked>;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Most servers remembered as warm.
const WARM_SERVERS: u64 = 10_000;

/// Most early connections kept at once; beyond this a tunnel's dialled connection is closed
/// unused (its first request dials its own).
pub const MAX_EARLY: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    /// The worker whose pools (and tunnel) it is for: each worker has its own pools.
    worker: usize,
    /// Lower case, without IPv6 brackets.
    host: String,
    port: u16,
    /// Made for the pool that offers `h2` (else the HTTP/1.1-only one).
    h2: bool,
}

impl Key {
    fn new(worker: usize, host: &str, port: u16, h2: bool) -> Key {
        Key {
            worker,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_ascii_lowercase(),
            port,
            h2,
        }
    }
}

struct Slot {
    id: u64,
    rx: oneshot::Receiver<Option<UpstreamIo>>,
}

#[derive(Default)]
struct Slots {
    map: HashMap<Key, Vec<Slot>>,
    len: usize,
    next_id: u64,
}

/// Upstream TLS connections started early, by host, port and pool.
pub struct EarlyConns {
    keep: Duration,
    handshake_timeout: Duration,
    tls_h1: Arc<ClientConfig>,
    tls_h2: Arc<ClientConfig>,
    slots: Mutex<Slots>,
    /// Servers the pools probably hold a connection to (see the module docs).
    warm: moka::sync::Cache<Key, ()>,
    /// Early connections started.
    pub started: AtomicU64,
    /// ... taken by a request (the rest expired unused, failed, or were turned away when
    /// [`MAX_EARLY`] were kept).
    pub used: AtomicU64,
}

impl EarlyConns {
    /// `tls_h1` and `tls_h2` must be the configurations of the two pools' connectors (no ALPN,
    /// and `h2` + `http/1.1`), so that an early connection is what the pool would have made.
    /// `pool_idle` is how long the pools keep an idle connection.
    pub fn new(
        keep: Duration,
        handshake_timeout: Duration,
        pool_idle: Duration,
        tls_h1: Arc<ClientConfig>,
        tls_h2: Arc<ClientConfig>,
    ) -> Arc<EarlyConns> {
        Arc::new(EarlyConns {
            keep,
            handshake_timeout,
            tls_h1,
            tls_h2,
            slots: Mutex::new(Slots::default()),
            warm: moka::sync::Cache::builder()
                .max_capacity(WARM_SERVERS)
                .time_to_idle(pool_idle)
                .build(),
            started: AtomicU64::new(0),
            used: AtomicU64::new(0),
        })
    }

    /// Connections kept now (handshaking, or waiting for their request).
    pub fn kept(&self) -> usize {
        self.slots.lock().map_or(0, |s| s.len)
    }

    /// Starts the TLS handshake with `host:port` over `tcp` (the CONNECT's dialled
    /// connection) for the pool that offers `h2` (`h2`) or HTTP/1.1 only, and keeps the result
    /// for [`EarlyConnector`]. A warm server (see the module docs), a host that is no TLS
    /// server name, or a full store closes `tcp` instead. `tcp` is registered with the
    /// worker's idle bound like any connection the pool dials.
    pub fn start(self: &Arc<Self>, worker: usize, host: &str, port: u16, h2: bool, tcp: Tracked) {
        let key = Key::new(worker, host, port, h2);
        if self.warm.contains_key(&key) {
            return;
        }
        let Ok(name) = ServerName::try_from(key.host.clone()) else {
            return;
        };
        let (tx, rx) = oneshot::channel();
        let id = {
            let Ok(mut s) = self.slots.lock() else {
                return;
            };
            if s.len >= MAX_EARLY {
                return;
            }
            s.next_id += 1;
            let id = s.next_id;
            s.map.entry(key.clone()).or_default().push(Slot { id, rx });
            s.len += 1;
            id
        };
        self.started.fetch_add(1, Relaxed);
        let cfg = if h2 { &self.tls_h2 } else { &self.tls_h1 }.clone();
        let (keep, timeout) = (self.keep, self.handshake_timeout);
        let me: Weak<EarlyConns> = Arc::downgrade(self);
        tokio::spawn(async move {
            let until = tokio::time::Instant::now() + keep;
            let connect = tokio_rustls::TlsConnector::from(cfg).connect(name, TokioIo::new(tcp));
            let io = match tokio::time::timeout(timeout, connect).await {
                Ok(Ok(tls)) => Some(MaybeHttpsStream::Https(TokioIo::new(tls))),
                Ok(Err(e)) => {
                    tracing::debug!(host = %key.host, port = key.port, error = %e,
                        "early upstream TLS handshake failed; the request will dial again");
                    None
                }
                Err(_) => None,
            };
            // A taker waiting on the slot gets the connection now; nobody listening (taken
            // and given up, or the store gone) drops it.
            if tx.send(io).is_err() {
                return;
            }
            tokio::time::sleep_until(until).await;
            // Not taken in time: remove the slot, which closes the connection in it.
            if let Some(me) = me.upgrade() {
                me.remove(&key, id);
            }
        });
    }

    /// A tunnel to `host:port` whose requests went to the pool offering `h2` (or not) ended:
    /// the pool probably keeps its connection a while.
    pub fn tunnel_ended(&self, worker: usize, host: &str, port: u16, h2: bool) {
        self.warm.insert(Key::new(worker, host, port, h2), ());
    }

    /// Takes the most recent connection kept for `uri`'s host and port and this pool, and
    /// marks the server warm (the pool is about to hold a connection to it).
    fn take(
        &self,
        worker: usize,
        uri: &Uri,
        h2: bool,
    ) -> Option<oneshot::Receiver<Option<UpstreamIo>>> {
        let host = uri.host()?;
        let port = uri.port_u16().unwrap_or(443);
        let key = Key::new(worker, host, port, h2);
        self.warm.insert(key.clone(), ());
        let mut s = self.slots.lock().ok()?;
        if s.len == 0 {
            return None;
        }
        let v = s.map.get_mut(&key)?;
        let slot = v.pop()?;
        if v.is_empty() {
            s.map.remove(&key);
        }
        s.len -= 1;
        Some(slot.rx)
    }

    fn remove(&self, key: &Key, id: u64) {
        let Ok(mut s) = self.slots.lock() else {
            return;
        };
        let Some(v) = s.map.get_mut(key) else {
            return;
        };
        let before = v.len();
        v.retain(|slot| slot.id != id);
        let removed = before - v.len();
        if v.is_empty() {
            s.map.remove(key);
        }
        s.len -= removed;
    }
}

/// `io`, its socket marked as handed to hyper (TLS handshake done) for the idle bound.
fn handed_over(io: UpstreamIo) -> UpstreamIo {
    match &io {
        MaybeHttpsStream::Https(tls) => tls.inner().get_ref().0.inner().handed_over(),
        MaybeHttpsStream::Http(tcp) => tcp.handed_over(),
    }
    io
}

/// The HTTPS pools' connector: an early connection for the request's host and port when one
/// is kept (see the module docs), else the wrapped connector (`hyper-rustls` over the
/// [`super::dial::Connector`]).
#[derive(Clone)]
pub struct EarlyConnector<C> {
    inner: C,
    early: Option<Arc<EarlyConns>>,
    /// The worker whose pool this is.
    worker: usize,
    /// This is the pool that offers `h2`.
    h2: bool,
}

impl<C> EarlyConnector<C> {
    pub fn new(inner: C, early: Option<Arc<EarlyConns>>, worker: usize, h2: bool) -> Self {
        Self {
            inner,
            early,
            worker,
            h2,
        }
    }
}

impl<C> tower_service::Service<Uri> for EarlyConnector<C>
where
    C: tower_service::Service<Uri, Response = UpstreamIo, Error = BoxError>,
    C::Future: Send + 'static,
{
    type Response = UpstreamIo;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<UpstreamIo, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let kept = self
            .early
            .as_ref()
            .and_then(|e| e.take(self.worker, &uri, self.h2));
        // Futures do nothing until polled: the fallback dials only when it is awaited.
        let fallback = self.inner.call(uri);
        let Some(rx) = kept else {
            return Box::pin(async move { fallback.await.map(handed_over) });
        };
        let early = self.early.clone();
        Box::pin(async move {
            match rx.await {
                Ok(Some(io)) => {
                    if let Some(e) = early {
                        e.used.fetch_add(1, Relaxed);
                    }
                    Ok(handed_over(io))
                }
                _ => fallback.await.map(handed_over),
            }
        })
    }
}
