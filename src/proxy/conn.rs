//! One client connection: the header-read and keep-alive idle timeouts over its
//! [`ConnActivity`] (which lives in [`crate::conns`], shared with the connection limits).
//!
//! hyper's own header timer also runs while a keep-alive connection sits idle, so it cannot
//! express "10 s to send a request head, but 60 s of idle keep-alive". Instead the socket is
//! wrapped in [`ClientIo`] (or [`ActivityIo`] inside an intercepted tunnel), which notes the
//! first byte read after the connection went idle, and the service notes when requests start
//! and finish. A [`watchdog`] future per connection sleeps until the next deadline and
//! reports which one expired: an idle connection is closed gracefully, a client that started
//! a request head and did not finish it in time is cut off, and a keep-alive connection idle
//! for `proxy.client_park_after_ms` is parked: its HTTP connection (with hyper's read and
//! write buffers, about 13 KB) is dropped, the socket and any bytes read but not parsed are
//! kept, and a new HTTP connection is built when the client sends again. [`ClientIo`] skips
//! the socket shutdown that ends an HTTP connection while a park is under way, and a park
//! that catches the connection moving bytes (a response still being written, a request body
//! still arriving) closes it instead of serving it again mid-stream. Cost per request: two
//! atomic updates and one clock read; the watchdog wakes at deadlines and every half of the
//! shorter timeout, never per request.
//!
//! Request heads refused before the service sees them (hyper answers a malformed head 400,
//! one over `proxy.max_header_bytes` or `proxy.max_header_lines` 431 and an overlong URI
//! 414 itself, then ends the connection with the parse error; the watchdog cuts a head not
//! finished in time) are classified by [`head_refusal`] and [`record_rejected`] gives each
//! an access-log line of kind `rejected` and a count in [`Rejected`].

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::tap::{OnRead, Prefixed, ReadTap};
use crate::conns::ConnActivity;
use crate::conns::NONE;

/// Which deadline expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// No request and no bytes for the idle timeout: close gracefully.
    Idle,
    /// A request head was started and not finished in time: cut the connection.
    HeaderTimeout,
    /// Idle for the park time (shorter than the idle timeout): put the HTTP connection aside
    /// and keep the socket.
    Park,
}

/// Resolves when the connection has been idle, or half-way through a request head, for too
/// long, or idle for `park` when that is set. Never resolves while a request is in progress.
pub async fn watchdog(
    act: &ConnActivity,
    idle: Duration,
    header: Duration,
    park: Option<Duration>,
) -> Expiry {
    let idle_ms = idle.as_millis() as u64;
    let header_ms = header.as_millis() as u64;
    let park_ms = park.map(|p| p.as_millis() as u64).filter(|&p| p < idle_ms);
    // Nothing wakes the watchdog when a request starts or ends or its first byte arrives, so
    // it also looks every half of the shorter timeout: each fires after 1 to 1.5 times its
    // configured value.
    let recheck_ms = (idle_ms.min(header_ms) / 2).max(1);
    loop {
        let now = act.now_ms();
        let wake_at = if act.in_flight.load(Ordering::Acquire) > 0 {
            now + recheck_ms
        } else {
            let first = act.first_byte.load(Ordering::Relaxed);
            if first != NONE {
                let deadline = first + header_ms;
                if now >= deadline {
                    return Expiry::HeaderTimeout;
                }
                deadline
            } else {
                let since = act.idle_since.load(Ordering::Acquire);
                let deadline = since + idle_ms;
                if now >= deadline {
                    return Expiry::Idle;
                }
                match park_ms.map(|p| since + p) {
                    Some(park_at) if now >= park_at => return Expiry::Park,
                    Some(park_at) => park_at.min(now + recheck_ms),
                    None => deadline.min(now + recheck_ms),
                }
            }
        };
        tokio::time::sleep_until((act.base + Duration::from_millis(wake_at)).into()).await;
    }
}

/// A client socket that reports reads to its [`ConnActivity`].
pub type ActivityIo<T> = ReadTap<T, std::sync::Arc<ConnActivity>>;

/// The socket of a connection on the proxy's listener, as its HTTP connection sees it: first
/// the bytes a parked HTTP connection had read and not parsed, then the socket's; reads and
/// writes are reported to the [`ConnActivity`], and while a park is under way the shutdown
/// that ends an HTTP connection is skipped so that the socket stays open.
pub struct ClientIo {
    inner: Prefixed<TcpStream>,
    activity: Arc<ConnActivity>,
}

impl ClientIo {
    pub fn new(carry: Bytes, stream: TcpStream, activity: Arc<ConnActivity>) -> Self {
        Self {
            inner: Prefixed::new(carry, stream),
            activity,
        }
    }

    /// What is left to replay, and the socket.
    pub fn into_parts(self) -> (Bytes, TcpStream) {
        self.inner.into_parts()
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.bytes_read();
            self.activity.bytes_moved();
        }
        r
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.bytes_moved();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.bytes_moved();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.activity.keeps_socket_open() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl OnRead for std::sync::Arc<ConnActivity> {
    fn on_read(&mut self, _n: usize) {
        self.bytes_read();
    }
}

/// A request head refused before the proxy's service saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadRefusal {
    /// The status of the refusal: what hyper answered (400, 431, 414), or 408 for a head
    /// not finished in time, where the connection is closed without an answer (as nginx
    /// logs it).
    pub status: u16,
    /// What was wrong, for the access log's `error` field.
    pub reason: &'static str,
}

/// The refusal a connection's error stands for, when it is a request head hyper could not
/// parse. hyper's error kinds are told apart by its public predicates, the finer reasons by
/// its (fixed) messages; an unknown message is plain `malformed_request`.
pub fn head_refusal(e: &hyper::Error) -> Option<HeadRefusal> {
    if e.is_parse_too_large() {
        return Some(if e.to_string().starts_with("URI too long") {
            HeadRefusal {
                status: 414,
                reason: "uri_too_long",
            }
        } else {
            HeadRefusal {
                status: 431,
                reason: "header_too_large",
            }
        });
    }
    if !e.is_parse() {
        return None;
    }
    let msg = e.to_string();
    let reason = [
        ("invalid HTTP method", "invalid_method"),
        ("invalid URI", "invalid_uri"),
        ("invalid HTTP version parsed (found HTTP2", "http2_preface"),
        ("invalid HTTP version", "invalid_version"),
        ("invalid HTTP header", "invalid_header"),
        ("invalid content-length", "invalid_content_length"),
        ("invalid transfer-encoding", "invalid_transfer_encoding"),
        ("unexpected transfer-encoding", "invalid_transfer_encoding"),
    ]
    .iter()
    .find(|(prefix, _)| msg.starts_with(prefix))
    .map_or("malformed_request", |(_, r)| r);
    Some(HeadRefusal {
        status: 400,
        reason,
    })
}

/// A head not finished within `proxy.header_read_timeout_ms`.
pub const HEADER_TIMEOUT: HeadRefusal = HeadRefusal {
    status: 408,
    reason: "header_timeout",
};

/// Request heads refused before the service, by class (for `/stats` and `/metrics`).
#[derive(Debug, Default)]
pub struct Rejected {
    /// Unparsable heads (400).
    pub malformed: AtomicU64,
    /// Heads or URIs over the limits (431, 414).
    pub too_large: AtomicU64,
    /// Heads not finished in time (closed).
    pub header_timeout: AtomicU64,
}

impl Rejected {
    /// The classes with their counts, in a fixed order.
    pub fn counts(&self) -> [(&'static str, u64); 3] {
        [
            ("malformed", self.malformed.load(Ordering::Relaxed)),
            ("too_large", self.too_large.load(Ordering::Relaxed)),
            (
                "header_timeout",
                self.header_timeout.load(Ordering::Relaxed),
            ),
        ]
    }
}

/// Counts a refused head and writes its access-log line (method `-`, no URL, kind
/// `rejected`, the reason as `error`).
pub fn record_rejected(state: &super::ProxyState, client: SocketAddr, r: HeadRefusal) {
    let counter = match r.status {
        408 => &state.rejected.header_timeout,
        414 | 431 => &state.rejected.too_large,
        _ => &state.rejected.malformed,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    tracing::info!(client.addr = %client, status = r.status, reason = r.reason,
        "request head refused");
    state.access_log.record(&crate::accesslog::AccessRecord {
        start: SystemTime::now(),
        duration: Duration::ZERO,
        id: state.ids.next(),
        client,
        user: None,
        method: "-",
        url: "",
        status: r.status,
        bytes_out: 0,
        bytes_in: None,
        kind: crate::accesslog::RecordKind::Rejected,
        upstream: None,
        error: Some(r.reason),
        content_type: None,
        decision: None,
    });
}
