//! The pool of HTTP/1.1 upstream connections: requests to origins (plain, and decrypted
//! requests of HTTP/1.1 clients) go over a kept-alive connection to the same scheme and
//! authority when one is idle, else over a new one from the worker's connector.
//!
//! # Where it sits
//! In the forward path ([`super::forward`]), once the filter has allowed the request: one
//! pool per worker and kind (plain; verified TLS offering `http/1.1` only). The connector
//! makes [`super::pool::Tracked`] sockets, so the process-wide bound on idle connections
//! ([`super::pool::IdleBound`]) applies as before: it closes the least recently used idle
//! connection, and this pool drops the closed entry within [`SWEEP`]. Requests from HTTP/2
//! clients go over hyper-util's pool, which multiplexes one `h2` connection per origin.
//!
//! Why not hyper-util's pool for HTTP/1.1 too: it drops a closed idle connection only when
//! a request for the same origin looks, or when its sweep runs, once per idle timeout. With
//! an office's long tail of hosts nearly every pooled connection is closed (by the bound or
//! by the origin) before its host is asked for again, and each closed entry kept its request
//! channel (about 10 KB) until the sweep: the proxy's memory grew by about 10 MB a second
//! between sweeps (`docs/performance.md`). Here a closed or expired entry lives at most
//! [`SWEEP`].
//!
//! A request goes to the most recently idle connection of its origin (the older ones then
//! expire first); a connection waits for reuse from the moment its response body is done
//! until `proxy.upstream_idle_timeout_ms`, at most `proxy.upstream_max_idle_per_host` per
//! origin. A request that a reused connection refused before writing it (the origin had
//! closed it) is sent again over another connection, as hyper-util does.
//!
//! An idle connection waits as its bare socket ([`Parkable`]): hyper's state for a
//! connection (its request channel, about 10 KB, its header write buffer of 8 KiB and its
//! read buffer) is made for each request and taken apart when the connection is idle again
//! (hyper's `without_shutdown`), so that the thousands of idle connections an office's long
//! tail of hosts leaves in the pool hold a socket each and no buffers. A parked connection is
//! taken only when nothing waits to be read on it (a byte on an idle HTTP/1.1 connection is
//! the origin closing it, or garbage), and the sweep drops the ones that closed or were
//! evicted. Requests that ask for an upgrade (WebSocket) keep hyper's connection to the end:
//! an upgraded connection never comes back.
//!
//! # What it costs
//! Per request: one lock of the worker's own (uncontended) mutex to take a connection and one
//! to give it back, a hash lookup each; hyper's per-connection state allocated and freed
//! (about 30 KB, from the allocator's thread cache), one task running the connection and one
//! small task per response that waits for its body to end; a `peek` of a reused socket. Per
//! idle connection one entry (its socket and a copy of its connection facts). Every
//! [`SWEEP`] while connections are idle, one pass over the worker's idle entries with a
//! `peek` each.
//!
//! # How it fails
//! A connector error (DNS, refused destination, connect, TLS) and an HTTP error from hyper
//! come back as [`PoolError`], with the original error as its source for the caller to name.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;

use super::body::UpstreamBody;
use super::pool::Tracked;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How often closed and expired idle entries are dropped while any are held.
pub const SWEEP: Duration = Duration::from_secs(1);

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The connector failed (its error is the source).
    #[error("connecting upstream")]
    Connect(#[source] BoxError),
    /// hyper failed on the connection: handshake, writing the request, reading the response.
    #[error("upstream HTTP/1.1")]
    Http(#[source] hyper::Error),
    /// The request URI names no scheme or authority to connect to.
    #[error("request URI has no scheme or host")]
    NoTarget,
}

/// An origin: connections are shared by requests with the same scheme and authority.
type Key = (Scheme, Authority);

/// An upstream connection the pool can hold while idle as its bare socket.
pub trait Parkable {
    /// Whether it can carry another request: its socket is open, not evicted by the idle
    /// bound, and has nothing to read.
    fn reusable(&self) -> bool;
}

impl Parkable for Tracked {
    fn reusable(&self) -> bool {
        Tracked::reusable(self)
    }
}

impl Parkable for hyper_rustls::MaybeHttpsStream<Tracked> {
    fn reusable(&self) -> bool {
        match self {
            Self::Http(t) => t.reusable(),
            // A TLS record waiting on an idle connection is the origin's close_notify (or
            // something as unexpected): the socket's check is the connection's.
            Self::Https(tls) => TokioIo::inner(tls.inner().get_ref().0).reusable(),
        }
    }
}

/// An idle connection: its socket, and what its connector said about it (copied into every
/// response's extensions: the peer address, the idle bound's handle).
struct Idle<T> {
    io: T,
    connected: Arc<Connected>,
    since: Instant,
}

struct Held<T> {
    by_origin: HashMap<Key, Vec<Idle<T>>>,
    /// A sweep task runs (started by the first idle entry, ends when none is left).
    sweeping: bool,
}

impl<T> Default for Held<T> {
    fn default() -> Self {
        Self {
            by_origin: HashMap::new(),
            sweeping: false,
        }
    }
}

/// What a pool and its connections' tasks share.
type Shared<T> = Arc<Mutex<Held<T>>>;

/// The limits a parked connection is given back with.
#[derive(Clone, Copy)]
struct Limits {
    max_idle_per_host: usize,
    idle_timeout: Duration,
}

/// The limits every pool of the process shares.
#[derive(Clone)]
pub struct Settings {
    pub builder: http1::Builder,
    pub max_idle_per_host: usize,
    pub idle_timeout: Duration,
}

/// One worker's pool over connector `C`.
pub struct H1Pool<C: tower_service::Service<Uri>> {
    connector: C,
    settings: Settings,
    held: Shared<C::Response>,
}

impl<C: tower_service::Service<Uri>> H1Pool<C> {
    pub fn new(connector: C, settings: Settings) -> Self {
        Self {
            connector,
            settings,
            held: Arc::default(),
        }
    }

    /// Idle connections held now (closed ones not yet swept included).
    pub fn idle(&self) -> usize {
        lock(&self.held).by_origin.values().map(Vec::len).sum()
    }
}

fn lock<T>(held: &Mutex<Held<T>>) -> std::sync::MutexGuard<'_, Held<T>> {
    // The lock guards plain map operations: a panic cannot leave it inconsistent.
    held.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<C> H1Pool<C>
where
    C: tower_service::Service<Uri> + Clone + Send + 'static,
    C::Response:
        hyper::rt::Read + hyper::rt::Write + Connection + Parkable + Unpin + Send + Sync + 'static,
    C::Error: Into<BoxError>,
    C::Future: Send,
{
    /// Sends `req` (absolute URI) in origin form over a pooled or new connection to its
    /// origin; the connection goes back to the pool when the response body is done.
    ///
    /// # Errors
    /// [`PoolError`].
    pub async fn request(
        &self,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, PoolError> {
        let uri = req.uri().clone();
        let key = match (uri.scheme(), uri.authority()) {
            (Some(s), Some(a)) => (s.clone(), a.clone()),
            _ => return Err(PoolError::NoTarget),
        };
        *req.uri_mut() = origin_form(&uri);
        let upgrade = req.headers().contains_key(http::header::UPGRADE);
        loop {
            let (io, connected, reused) = match self.checkout(&key) {
                Some(idle) => (idle.io, idle.connected, true),
                // Boxed: the handshake's state would otherwise sit in every request's future.
                None => {
                    let io = Box::pin(self.connect(uri.clone())).await?;
                    let connected = Arc::new(io.connected());
                    (io, connected, false)
                }
            };
            // Boxed too: it holds the socket (with its TLS state) while hyper takes it over.
            let (mut tx, parked) = Box::pin(self.handshake(io, &key, &connected, upgrade)).await?;
            match tx.try_send_request(req).await {
                Ok(mut resp) => {
                    connected.get_extras(resp.extensions_mut());
                    give_back_when_done(tx, parked);
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    // Refused before a byte was written: the origin had closed it.
                    Some(again) if reused => req = again,
                    _ => return Err(PoolError::Http(e.into_error())),
                },
            }
        }
    }

    /// The most recently idle reusable connection to `key`, dropping closed, evicted and
    /// expired ones.
    fn checkout(&self, key: &Key) -> Option<Idle<C::Response>> {
        let mut held = lock(&self.held);
        let list = held.by_origin.get_mut(key)?;
        let now = Instant::now();
        let mut found = None;
        while let Some(idle) = list.pop() {
            if now.duration_since(idle.since) < self.settings.idle_timeout && idle.io.reusable() {
                found = Some(idle);
                break;
            }
        }
        if list.is_empty() {
            held.by_origin.remove(key);
        }
        found
    }

    /// A new connection to `uri`'s origin from the connector.
    async fn connect(&self, uri: Uri) -> Result<C::Response, PoolError> {
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(|e| PoolError::Connect(e.into()))?;
        connector
            .call(uri)
            .await
            .map_err(|e| PoolError::Connect(e.into()))
    }

    /// hyper's connection over `io`, its task spawned on this worker. Unless the request
    /// asks for an upgrade, the task parks the socket in the pool when the connection ends
    /// idle and fit for another request (see [`give_back_when_done`]); the returned sender
    /// is told so through `parked`.
    async fn handshake(
        &self,
        io: C::Response,
        key: &Key,
        connected: &Arc<Connected>,
        upgrade: bool,
    ) -> Result<(http1::SendRequest<UpstreamBody>, ReuseSignal), PoolError> {
        let (tx, conn) = self
            .settings
            .builder
            .handshake(io)
            .await
            .map_err(PoolError::Http)?;
        let (signal, reusable) = tokio::sync::oneshot::channel();
        if upgrade {
            tokio::spawn(async move {
                // Its end is the request's business; an upgraded connection never returns.
                let _ = conn.with_upgrades().await;
            });
            return Ok((tx, signal));
        }
        let (held, key, connected) = (Arc::downgrade(&self.held), key.clone(), connected.clone());
        let limits = Limits {
            max_idle_per_host: self.settings.max_idle_per_host,
            idle_timeout: self.settings.idle_timeout,
        };
        tokio::spawn(async move {
            // Ends when the sender is dropped with the connection idle (Ok), or when the
            // origin closes or an error ends it (the request in flight gets the error).
            let Ok(parts) = conn.without_shutdown().await else {
                return;
            };
            let mut reusable = reusable;
            if reusable.try_recv().is_ok()
                && parts.read_buf.is_empty()
                && let Some(held) = held.upgrade()
            {
                let idle = Idle {
                    io: parts.io,
                    connected,
                    since: Instant::now(),
                };
                put(&held, limits, key, idle);
            }
        });
        Ok((tx, signal))
    }
}

/// Said by the request's side to the connection's task: the connection was idle and ready
/// for another request when its sender was dropped.
type ReuseSignal = tokio::sync::oneshot::Sender<()>;

/// Once the response's body is done and hyper says the connection can take a request again,
/// signals so and drops the sender: the connection's task then parks the socket. A
/// connection that closes or upgrades instead is not signalled.
fn give_back_when_done(mut tx: http1::SendRequest<UpstreamBody>, parked: ReuseSignal) {
    tokio::spawn(async move {
        if tx.ready().await.is_ok() {
            let _ = parked.send(());
        }
        drop(tx);
    });
}

/// `idle` waits in the pool from now, unless its origin has `max_idle_per_host` already
/// (then it closes).
fn put<T: Parkable + Send + 'static>(
    held_ref: &Shared<T>,
    limits: Limits,
    key: Key,
    idle: Idle<T>,
) {
    let mut held = lock(held_ref);
    let list = held.by_origin.entry(key).or_default();
    if list.len() >= limits.max_idle_per_host {
        return;
    }
    list.push(idle);
    if !held.sweeping {
        held.sweeping = true;
        tokio::spawn(sweep(Arc::downgrade(held_ref), limits.idle_timeout));
    }
}

/// Every [`SWEEP`], drops the idle entries that closed, were evicted or expired; ends when
/// none is left (the next idle connection starts another) or the pool is gone.
async fn sweep<T: Parkable>(held: Weak<Mutex<Held<T>>>, idle_timeout: Duration) {
    loop {
        tokio::time::sleep(SWEEP).await;
        let Some(held) = held.upgrade() else { return };
        let mut held = lock(&held);
        let now = Instant::now();
        held.by_origin.retain(|_, list| {
            list.retain(|i| now.duration_since(i.since) < idle_timeout && i.io.reusable());
            !list.is_empty()
        });
        let map = &mut held.by_origin;
        if map.capacity() > 4 * map.len() + 1024 {
            map.shrink_to_fit();
        }
        if map.is_empty() {
            held.sweeping = false;
            return;
        }
    }
}

/// The request target an origin expects: the path and query of `uri`, `/` when it has none.
fn origin_form(uri: &Uri) -> Uri {
    match uri.path_and_query() {
        Some(pq) if pq.as_str() != "/" => {
            let mut parts = http::uri::Parts::default();
            parts.path_and_query = Some(pq.clone());
            Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"))
        }
        _ => Uri::from_static("/"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_origin_form_keeps_path_and_query_only() {
        let f = |s: &str| origin_form(&s.parse().unwrap()).to_string();
        assert_eq!(f("http://a.test/x/y?q=1"), "/x/y?q=1");
        assert_eq!(f("http://a.test"), "/");
        assert_eq!(f("http://a.test/"), "/");
        assert_eq!(f("https://u@a.test:8443/p?"), "/p?");
    }
}
