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
//! # What it costs
//! Per request: one lock of the worker's own (uncontended) mutex to take a connection and one
//! to give it back, a hash lookup each; one small task per response that waits for its body
//! to end. Per idle connection one entry (its sender and a copy of its connection facts).
//! Every [`SWEEP`] while connections are idle, one pass over the worker's idle entries.
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

use super::body::UpstreamBody;

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

/// A connection: its sender, and what its connector said about it (copied into every
/// response's extensions: the peer address, the idle bound's handle).
struct Conn {
    tx: http1::SendRequest<UpstreamBody>,
    connected: Connected,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

#[derive(Default)]
struct Held {
    by_origin: HashMap<Key, Vec<Idle>>,
    /// A sweep task runs (started by the first idle entry, ends when none is left).
    sweeping: bool,
}

/// The limits every pool of the process shares.
#[derive(Clone)]
pub struct Settings {
    pub builder: http1::Builder,
    pub max_idle_per_host: usize,
    pub idle_timeout: Duration,
}

/// One worker's pool over connector `C`.
pub struct H1Pool<C> {
    connector: C,
    settings: Settings,
    held: Arc<Mutex<Held>>,
}

impl<C> H1Pool<C> {
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

fn lock(held: &Mutex<Held>) -> std::sync::MutexGuard<'_, Held> {
    // The lock guards plain map operations: a panic cannot leave it inconsistent.
    held.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<C> H1Pool<C>
where
    C: tower_service::Service<Uri> + Clone + Send + 'static,
    C::Response: hyper::rt::Read + hyper::rt::Write + Connection + Unpin + Send + 'static,
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
        loop {
            let (mut conn, reused) = match self.checkout(&key) {
                Some(c) => (c, true),
                // Boxed: the handshake's state would otherwise sit in every request's future.
                None => (Box::pin(self.connect(uri.clone())).await?, false),
            };
            match conn.tx.try_send_request(req).await {
                Ok(mut resp) => {
                    conn.connected.get_extras(resp.extensions_mut());
                    self.give_back_when_done(key, conn);
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

    /// The most recently idle live connection to `key`, dropping closed and expired ones.
    fn checkout(&self, key: &Key) -> Option<Conn> {
        let mut held = lock(&self.held);
        let list = held.by_origin.get_mut(key)?;
        let now = Instant::now();
        let mut found = None;
        while let Some(idle) = list.pop() {
            if idle.conn.tx.is_ready()
                && now.duration_since(idle.since) < self.settings.idle_timeout
            {
                found = Some(idle.conn);
                break;
            }
        }
        if list.is_empty() {
            held.by_origin.remove(key);
        }
        found
    }

    /// A new connection to `uri`'s origin, its connection task spawned on this worker.
    async fn connect(&self, uri: Uri) -> Result<Conn, PoolError> {
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(|e| PoolError::Connect(e.into()))?;
        let io = connector
            .call(uri)
            .await
            .map_err(|e| PoolError::Connect(e.into()))?;
        let connected = io.connected();
        let (tx, conn) = self
            .settings
            .builder
            .handshake(io)
            .await
            .map_err(PoolError::Http)?;
        tokio::spawn(async move {
            // Its end (the origin closed, an error, every sender dropped) is the pool's
            // business only through `is_ready`; the request in flight gets the error.
            let _ = conn.with_upgrades().await;
        });
        Ok(Conn { tx, connected })
    }

    /// Once the response's body is done (the connection can take a request again), `conn`
    /// waits in the pool; a connection that closes or upgrades instead is dropped.
    fn give_back_when_done(&self, key: Key, mut conn: Conn) {
        let held = Arc::downgrade(&self.held);
        let (max_idle_per_host, idle_timeout) =
            (self.settings.max_idle_per_host, self.settings.idle_timeout);
        tokio::spawn(async move {
            if conn.tx.ready().await.is_ok()
                && let Some(held) = held.upgrade()
            {
                put(&held, max_idle_per_host, idle_timeout, key, conn);
            }
        });
    }
}

/// `conn` idle from now, unless its origin has `max_idle_per_host` already (then it closes).
fn put(
    held_ref: &Arc<Mutex<Held>>,
    max_idle_per_host: usize,
    idle_timeout: Duration,
    key: Key,
    conn: Conn,
) {
    let mut held = lock(held_ref);
    let list = held.by_origin.entry(key).or_default();
    if list.len() >= max_idle_per_host {
        return;
    }
    list.push(Idle {
        conn,
        since: Instant::now(),
    });
    if !held.sweeping {
        held.sweeping = true;
        tokio::spawn(sweep(Arc::downgrade(held_ref), idle_timeout));
    }
}

/// Every [`SWEEP`], drops the idle entries that closed or expired; ends when none is left
/// (the next idle connection starts another) or the pool is gone.
async fn sweep(held: Weak<Mutex<Held>>, idle_timeout: Duration) {
    loop {
        tokio::time::sleep(SWEEP).await;
        let Some(held) = held.upgrade() else { return };
        let mut held = lock(&held);
        let now = Instant::now();
        held.by_origin.retain(|_, list| {
            list.retain(|i| !i.conn.tx.is_closed() && now.duration_since(i.since) < idle_timeout);
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
