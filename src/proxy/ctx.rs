//! The per-request context: the facts every phase of a request needs, passed explicitly.
//!
//! [`super::service`] builds one [`RequestCtx`] per request (its id, the client, the start
//! time, the worker, the user once authenticated) and hands `&mut` to the phases of
//! [`super::forward`] and [`super::connect`], which add what they learn (the filter's decision)
//! for the ones after them and for the access log. Anything that needs the request's id (the
//! feedback event, the ticket on a page, a log line) takes it from here, never from ambient
//! state, so work that outlives the request (a tunnel, a WebSocket relay, a scanned body)
//! carries a clone of the context. Cloning costs a few `Arc` increments; nothing here fails.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::accesslog::RequestId;

/// One request's context: who asked, when, under which id, and what the phases learned on
/// the way. Built by the service for every request and passed by reference to each phase.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    /// The request's id: the ticket on its pages, its access log line's `id`, and the id of
    /// its feedback event.
    pub id: RequestId,
    /// When the request arrived (wall clock, for the access log).
    pub start: SystemTime,
    /// When the request arrived (monotonic, for its duration).
    pub started: Instant,
    pub client: SocketAddr,
    /// The worker (thread) serving this request: selects its upstream pool.
    pub worker: usize,
    /// The client connection's place under `proxy.max_connections` (and the per-client
    /// limit); a tunnel or WebSocket takes it over, so upgraded connections stay counted.
    pub slot: ConnSlot,
    /// The authenticated user: set by proxy authentication, or the CONNECT's user inside a
    /// tunnel.
    pub user: Option<Arc<str>>,
    /// The request arrived inside an intercepted CONNECT tunnel (its URL was rebuilt from
    /// the tunnel's target).
    pub inner: bool,
    /// What filtering decided, once it has (for the access log); set by the filter phase.
    pub decision: Option<Arc<crate::accesslog::Decided>>,
}

/// A connection's place under the connection limits, shared between the connection task and
/// a tunnel that outlives it.
pub type ConnSlot = Arc<std::sync::Mutex<Option<crate::conns::ConnPermit>>>;

/// Moves the connection's place out, for a tunnel or WebSocket that outlives its HTTP
/// connection; from then on it is never closed to make room for another client.
pub fn take_slot(slot: &ConnSlot) -> Option<crate::conns::ConnPermit> {
    let permit = slot.lock().ok().and_then(|mut s| s.take());
    if let Some(p) = &permit {
        p.keep_open();
    }
    permit
}
