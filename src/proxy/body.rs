//! The response body type of the proxy, and what happens when a response is finished.
//!
//! [`ProxyBody`] is either empty, one buffer (pages and errors made by the proxy), the
//! upstream's [`Incoming`] body, streamed frame by frame and never collected, or a boxed
//! body that transforms the upstream's on its way (a download being hashed). It carries a
//! [`ResponseGuard`] that, when hyper drops the body (fully written, or the client went
//! away), marks the client connection idle again and writes the access log line with the
//! bytes actually sent and the time taken. Cost: one branch and an add per frame.
//!
//! [`UpstreamBody`] is the other direction: the client's request body on its way upstream,
//! noting when the client's side of it fails, so that a malformed upload is answered as the
//! client's fault (400) and not as the upstream's (502).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::HeaderValue;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::pool::PoolHandle;
use crate::accesslog::{AccessLog, AccessRecord, RecordKind, RequestId};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

enum Inner {
    Empty,
    Full(Option<Bytes>),
    Upstream(Incoming),
    /// A body transformed on its way (a download being hashed, see `filescan`).
    Boxed(Pin<Box<dyn Body<Data = Bytes, Error = BoxError> + Send>>),
}

/// What the proxy sends to the client.
pub struct ProxyBody {
    inner: Inner,
    guard: Option<ResponseGuard>,
    /// The upstream connection the body comes from, released to the idle bound on drop.
    pool: Option<PoolHandle>,
}

impl std::fmt::Debug for ProxyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProxyBody")
    }
}

impl ProxyBody {
    pub fn empty() -> Self {
        Self {
            inner: Inner::Empty,
            guard: None,
            pool: None,
        }
    }

    pub fn full(b: impl Into<Bytes>) -> Self {
        let b = b.into();
        Self {
            inner: if b.is_empty() {
                Inner::Empty
            } else {
                Inner::Full(Some(b))
            },
            guard: None,
            pool: None,
        }
    }

    pub fn upstream(b: Incoming) -> Self {
        Self {
            inner: Inner::Upstream(b),
            guard: None,
            pool: None,
        }
    }

    /// Any other body (boxed: one allocation per response).
    pub fn boxed(b: impl Body<Data = Bytes, Error = BoxError> + Send + 'static) -> Self {
        Self {
            inner: Inner::Boxed(Box::pin(b)),
            guard: None,
            pool: None,
        }
    }

    /// Attaches the guard that logs and releases the connection when the body is done.
    pub fn with_guard(mut self, guard: ResponseGuard) -> Self {
        self.guard = Some(guard);
        self
    }

    /// Releases `handle`'s upstream connection to the idle bound when this body is done.
    pub fn with_pool(mut self, handle: PoolHandle) -> Self {
        self.pool = Some(handle);
        self
    }

    fn note_end(&mut self) {
        if let Some(g) = &mut self.guard
            && let Some(l) = &mut g.log
        {
            l.complete = true;
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = match &mut this.inner {
            Inner::Empty => Poll::Ready(None),
            Inner::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Inner::Upstream(b) => match Pin::new(b).poll_frame(cx) {
                Poll::Ready(Some(Err(e))) => {
                    if let Some(l) = this.guard.as_mut().and_then(|g| g.log.as_mut()) {
                        l.error = Some("http_response_incomplete");
                    }
                    Poll::Ready(Some(Err(e.into())))
                }
                Poll::Ready(Some(Ok(f))) => Poll::Ready(Some(Ok(f))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
            Inner::Boxed(b) => match b.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Err(e))) => {
                    if let Some(l) = this.guard.as_mut().and_then(|g| g.log.as_mut()) {
                        l.error = Some("http_response_incomplete");
                    }
                    Poll::Ready(Some(Err(e)))
                }
                other => other,
            },
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(g)) = (frame.data_ref(), this.guard.as_mut()) {
                    g.bytes_out += data.len() as u64;
                    if let Some(l) = &mut g.log {
                        l.bytes_out += data.len() as u64;
                    }
                }
            }
            Poll::Ready(None) => this.note_end(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Empty => true,
            Inner::Full(b) => b.is_none(),
            Inner::Upstream(b) => b.is_end_stream(),
            Inner::Boxed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Empty => SizeHint::with_exact(0),
            Inner::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Inner::Upstream(b) => b.size_hint(),
            Inner::Boxed(b) => b.size_hint(),
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        if self.is_end_stream() {
            self.note_end();
        }
        if let Some(h) = self.pool.take() {
            h.release();
        }
    }
}

/// The client's request body as sent upstream; a read error (a malformed chunk, the client
/// gone mid-upload) sets the shared flag the forwarder looks at when the upstream exchange
/// fails. Requests without a body carry no flag (no allocation).
pub struct UpstreamBody {
    inner: Incoming,
    failed: Option<Arc<AtomicBool>>,
    /// Where the bytes read are added when the body is dropped (none for an empty body).
    traffic: Option<Arc<super::traffic::Traffic>>,
    bytes_in: u64,
}

impl UpstreamBody {
    /// Wraps `inner`; the flag, when the body is not empty, says whether reading it failed.
    /// The bytes read are added to `traffic`'s `bytes_in`.
    pub fn new(
        inner: Incoming,
        traffic: &Arc<super::traffic::Traffic>,
    ) -> (Self, Option<Arc<AtomicBool>>) {
        let empty = inner.is_end_stream();
        let failed = (!empty).then(|| Arc::new(AtomicBool::new(false)));
        (
            Self {
                inner,
                failed: failed.clone(),
                traffic: (!empty).then(|| traffic.clone()),
                bytes_in: 0,
            },
            failed,
        )
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if let Some(t) = &self.traffic {
            t.bytes_in.fetch_add(self.bytes_in, Ordering::Relaxed);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match (&polled, &self.failed) {
            (Poll::Ready(Some(Err(_))), Some(f)) => f.store(true, Ordering::Relaxed),
            (Poll::Ready(Some(Ok(frame))), _) => {
                self.bytes_in += frame.data_ref().map_or(0, |d| d.len() as u64);
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Released when the response body is dropped: marks the request finished on its client
/// connection and writes the access log line.
pub struct ResponseGuard {
    pub(crate) in_flight: Option<crate::conns::InFlight>,
    pub(crate) log: Option<PendingLog>,
    /// Where the body bytes sent are added once the response is done.
    pub(crate) traffic: Arc<super::traffic::Traffic>,
    pub(crate) bytes_out: u64,
}

impl Drop for ResponseGuard {
    fn drop(&mut self) {
        self.traffic
            .bytes_out
            .fetch_add(self.bytes_out, Ordering::Relaxed);
        if let Some(l) = self.log.take() {
            l.write();
        }
        // The request ends once its log line is written.
        drop(self.in_flight.take());
    }
}

/// The access log line of a response still being sent.
pub struct PendingLog {
    pub log: Arc<AccessLog>,
    pub start: SystemTime,
    pub started: Instant,
    pub id: RequestId,
    pub client: std::net::SocketAddr,
    pub user: Option<Arc<str>>,
    pub method: http::Method,
    pub url: String,
    pub status: u16,
    pub bytes_out: u64,
    pub kind: RecordKind,
    pub upstream: Option<std::net::SocketAddr>,
    pub error: Option<&'static str>,
    pub content_type: Option<HeaderValue>,
    pub complete: bool,
    pub decision: Option<Arc<crate::accesslog::Decided>>,
}

impl PendingLog {
    fn write(self) {
        let error = match (self.error, self.complete) {
            (Some(e), _) => Some(e),
            (None, false) => Some("client_aborted"),
            (None, true) => None,
        };
        self.log.record(&AccessRecord {
            start: self.start,
            duration: self.started.elapsed(),
            id: self.id,
            client: self.client,
            user: self.user.as_deref(),
            method: self.method.as_str(),
            url: &self.url,
            status: self.status,
            bytes_out: self.bytes_out,
            bytes_in: None,
            kind: self.kind,
            upstream: self.upstream,
            error,
            content_type: self.content_type.as_ref().and_then(|v| v.to_str().ok()),
            decision: self.decision.as_deref(),
        });
    }
}
