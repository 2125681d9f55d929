//! Relaying bytes both ways between two connections (CONNECT tunnels, WebSocket upgrades)
//! until either side closes or nothing moves for the idle timeout.
//!
//! # How
//! `Relay` copies each direction through a 16 KiB buffer that exists only while the tunnel
//! is in use: a quiet direction waits with a 512-byte inline buffer, the first bytes to
//! arrive bring the 16 KiB one, and that is released once the direction has been quiet for a
//! tick of the idle timer (at most 15 s) with nothing left to write. Browsers keep
//! many tunnels open and silent (HTTP/2 connections they may reuse), and those then cost the
//! sockets and the task, not 32 KiB of buffers each. A half that reaches end of file shuts the
//! other side's writing down (half-close) and the relay ends when both have.
//!
//! The idle timer wakes every quarter of the idle timeout (at most every 15 s); the tunnel
//! closes after between 1 and 1.25 idle timeouts of silence. [`drive`] runs that timer for
//! any [`Ticking`] relay: this copy and the zero-copy one of [`super::splice`].
//!
//! [`relay_tcp`] is the entry for two plain TCP connections (CONNECT tunnels that are not
//! intercepted, WebSockets between plain sockets): spliced on Linux when `proxy.splice` is
//! on, copied otherwise; it adds the bytes to the proxy's `[copied, spliced]` counters
//! (`webrep_tunnel_bytes_total{path}`).
//!
//! # Cost
//! Per busy tunnel 32 KiB of buffers, per quiet one none (1 KiB inline in its task); no
//! per-byte work beyond the copy, one allocation when a direction wakes from quiet, and one
//! timer wake-up per tick.
//!
//! # How it fails
//! A read or write error on either side ends the relay ([`RelayEnd::Error`]); both sockets
//! are then dropped (closed) by the caller.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::tap::Prefixed;

const BUF: usize = 16 * 1024;

/// The inline buffer a quiet direction waits with: the first bytes after a pause land here,
/// then move to a fresh [`BUF`] buffer.
const PROBE: usize = 512;

/// The longest pause between two idle-timer ticks (and so the longest a quiet tunnel keeps
/// its buffers).
const MAX_TICK: Duration = Duration::from_secs(15);

/// How a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayEnd {
    /// One side closed and the other was shut down in turn.
    Closed,
    /// Nothing moved for the idle timeout.
    Idle,
    /// A read or write failed (usually a reset).
    Error,
}

/// Bytes moved and how it ended.
#[derive(Debug, Clone, Copy)]
pub struct RelayStats {
    /// Bytes from the client side to the upstream side.
    pub up: u64,
    /// Bytes from the upstream side to the client side.
    pub down: u64,
    pub end: RelayEnd,
}

/// One direction of a relay.
struct Half {
    /// `None` while the direction is quiet.
    buf: Option<Box<[u8]>>,
    /// What a quiet direction reads into, so that waiting costs no heap buffer.
    probe: [u8; PROBE],
    /// `buf[pos..cap]` is read and not yet written.
    pos: usize,
    cap: usize,
    /// Written since the last flush.
    need_flush: bool,
    read_done: bool,
    done: bool,
    /// Bytes read (and so, in the end, written).
    moved: u64,
    /// Bytes moved since the idle timer last looked.
    active: bool,
}

impl Default for Half {
    fn default() -> Self {
        Self {
            buf: None,
            probe: [0; PROBE],
            pos: 0,
            cap: 0,
            need_flush: false,
            read_done: false,
            done: false,
            moved: 0,
            active: false,
        }
    }
}

/// One read into `buf`: the number of bytes read (0 at end of file).
fn read_into<R: AsyncRead + Unpin>(
    r: &mut R,
    cx: &mut Context<'_>,
    buf: &mut [u8],
) -> Poll<io::Result<usize>> {
    let mut rb = ReadBuf::new(buf);
    ready!(Pin::new(r).poll_read(cx, &mut rb))?;
    Poll::Ready(Ok(rb.filled().len()))
}

impl Half {
    /// Copies from `r` to `w` until `r` has nothing now (Pending) or ends (then shuts `w`
    /// down: Ready).
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            if let Some(buf) = &self.buf {
                while self.pos < self.cap {
                    let n = ready!(Pin::new(&mut *w).poll_write(cx, &buf[self.pos..self.cap]))?;
                    if n == 0 {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    self.pos += n;
                    self.need_flush = true;
                }
            }
            if self.read_done {
                ready!(Pin::new(&mut *w).poll_flush(cx))?;
                ready!(Pin::new(&mut *w).poll_shutdown(cx))?;
                self.done = true;
                self.buf = None;
                return Poll::Ready(Ok(()));
            }
            let polled = match &mut self.buf {
                Some(buf) => read_into(r, cx, buf),
                None => read_into(r, cx, &mut self.probe),
            };
            let n = match polled {
                Poll::Pending => {
                    if self.need_flush {
                        ready!(Pin::new(&mut *w).poll_flush(cx))?;
                        self.need_flush = false;
                    }
                    return Poll::Pending;
                }
                Poll::Ready(r) => r?,
            };
            if n == 0 {
                self.read_done = true;
                continue;
            }
            if self.buf.is_none() {
                // Bytes after a pause: from here on the full-size buffer.
                let mut buf = vec![0u8; BUF].into_boxed_slice();
                buf[..n].copy_from_slice(&self.probe[..n]);
                self.buf = Some(buf);
            }
            self.pos = 0;
            self.cap = n;
            self.moved += n as u64;
            self.active = true;
        }
    }

    /// Lets the buffer go if nothing waits in it (called when the direction was quiet).
    fn release(&mut self) {
        if self.pos >= self.cap {
            self.buf = None;
        }
    }
}

/// Copies both ways between `a` and `b` until both directions have ended (see the module
/// docs); polled by [`relay`], which adds the idle timeout.
struct Relay<A, B> {
    a: A,
    b: B,
    /// `a` to `b`.
    up: Half,
    /// `b` to `a`.
    down: Half,
}

impl<A, B> Future for Relay<A, B>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    type Output = io::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let up = this.up.poll_copy(cx, &mut this.a, &mut this.b)?;
        let down = this.down.poll_copy(cx, &mut this.b, &mut this.a)?;
        if up.is_ready() && down.is_ready() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }
}

impl<A, B> Ticking for Relay<A, B>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    /// A direction that stayed quiet lets its buffer go.
    fn tick(&mut self) -> bool {
        let mut moved = false;
        for half in [&mut self.up, &mut self.down] {
            if std::mem::take(&mut half.active) {
                moved = true;
            } else {
                half.release();
            }
        }
        moved
    }

    fn moved(&self) -> (u64, u64) {
        (self.up.moved, self.down.moved)
    }
}

/// A relay future that [`drive`] runs under the idle timeout: it ends when both directions
/// have, says at each tick of the idle timer whether bytes moved since the last, and keeps
/// its byte counts when it is dropped unfinished.
pub(super) trait Ticking: Future<Output = io::Result<()>> + Unpin {
    /// Did bytes move since the last tick? A quiet direction may let its resources go.
    fn tick(&mut self) -> bool;
    /// Bytes moved so far: client to upstream, upstream to client.
    fn moved(&self) -> (u64, u64);
}

/// Runs `relay` until it ends, fails, or nothing moved for `idle`.
pub(super) async fn drive<R: Ticking>(mut relay: R, idle: Duration) -> RelayStats {
    let tick = (idle / 4).clamp(Duration::from_millis(1), MAX_TICK);
    let mut quiet = Duration::ZERO;
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + tick, tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = loop {
        tokio::select! {
            r = &mut relay => break if r.is_ok() { RelayEnd::Closed } else { RelayEnd::Error },
            _ = interval.tick() => {
                if relay.tick() {
                    quiet = Duration::ZERO;
                } else {
                    quiet += tick;
                    if quiet >= idle {
                        break RelayEnd::Idle;
                    }
                }
            }
        }
    };
    let (up, down) = relay.moved();
    RelayStats { up, down, end }
}

/// Relays between `client` and `upstream` until close, error or idle timeout.
pub async fn relay<A, B>(client: A, upstream: B, idle: Duration) -> RelayStats
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let relay = Relay {
        a: client,
        b: upstream,
        up: Half::default(),
        down: Half::default(),
    };
    drive(relay, idle).await
}

/// Two plain TCP connections to join, each with the bytes already read from it (by an HTTP
/// parser or a peek) that go to the other side first.
pub struct TcpEnds {
    pub client: TcpStream,
    pub client_read: Bytes,
    pub upstream: TcpStream,
    pub upstream_read: Bytes,
}

/// Relays between two plain TCP connections until close, error or idle timeout: by
/// `splice(2)` through a pipe per direction on Linux when `splice` is set (see
/// [`super::splice`]), else by copying; the counts of the path taken go to `counts`
/// (`[copied, spliced]` bytes, both directions).
pub async fn relay_tcp(
    ends: TcpEnds,
    idle: Duration,
    splice: bool,
    counts: &[AtomicU64; 2],
) -> RelayStats {
    #[cfg(target_os = "linux")]
    if splice {
        let stats = super::splice::relay(ends, idle).await;
        counts[1].fetch_add(stats.up + stats.down, Relaxed);
        return stats;
    }
    #[cfg(not(target_os = "linux"))]
    let _ = splice;
    // The prefixes are read through `Prefixed`, so the counts include them.
    let stats = relay(
        Prefixed::new(ends.client_read, ends.client),
        Prefixed::new(ends.upstream_read, ends.upstream),
        idle,
    )
    .await;
    counts[0].fetch_add(stats.up + stats.down, Relaxed);
    stats
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn relays_both_ways_then_half_closes_in_turn() {
        let (client, client_far) = tokio::io::duplex(1024);
        let (upstream, upstream_far) = tokio::io::duplex(1024);
        let task = tokio::spawn(relay(client, upstream, Duration::from_secs(30)));
        // More than the buffer and the pipes hold, both ways at once.
        let up_data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let down_data: Vec<u8> = (0..70_000u32).map(|i| (i % 241) as u8).collect();
        let (w1, w2) = (up_data.clone(), down_data.clone());
        let (mut cr, mut cw) = tokio::io::split(client_far);
        let (mut ur, mut uw) = tokio::io::split(upstream_far);
        let send_up = tokio::spawn(async move {
            cw.write_all(&w1).await.unwrap();
            cw.shutdown().await.unwrap();
        });
        let send_down = tokio::spawn(async move {
            uw.write_all(&w2).await.unwrap();
            uw.shutdown().await.unwrap();
        });
        let mut got_up = Vec::new();
        let mut got_down = Vec::new();
        let (a, b) = tokio::join!(ur.read_to_end(&mut got_up), cr.read_to_end(&mut got_down));
        a.unwrap();
        b.unwrap();
        assert_eq!(got_up, up_data);
        assert_eq!(got_down, down_data);
        let stats = task.await.unwrap();
        assert_eq!((stats.up, stats.down), (100_000, 70_000));
        assert_eq!(stats.end, RelayEnd::Closed);
        send_up.await.unwrap();
        send_down.await.unwrap();
    }

    #[tokio::test]
    async fn a_quiet_tunnel_lets_its_buffers_go_and_a_silent_one_times_out() {
        let (client, mut client_far) = tokio::io::duplex(1024);
        let (upstream, mut upstream_far) = tokio::io::duplex(1024);
        let mut r = Relay {
            a: client,
            b: upstream,
            up: Half::default(),
            down: Half::default(),
        };
        // A new tunnel waits without heap buffers.
        assert!(futures_util::poll!(&mut r).is_pending());
        assert!(r.up.buf.is_none() && r.down.buf.is_none());
        client_far.write_all(b"hello").await.unwrap();
        // One poll moves the bytes and leaves both directions waiting.
        assert!(futures_util::poll!(&mut r).is_pending());
        let mut got = [0u8; 5];
        upstream_far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
        assert!(r.up.buf.is_some() && r.down.buf.is_none());
        // A tick after traffic keeps the busy direction's buffer.
        assert!(r.tick(), "bytes moved");
        assert!(r.up.buf.is_some());
        // The next finds it quiet: the buffer goes, the tunnel stays, and polling again
        // (the timer's wake-up polls the relay too) does not bring it back.
        assert!(!r.tick());
        assert!(futures_util::poll!(&mut r).is_pending());
        assert!(r.up.buf.is_none() && r.down.buf.is_none());
        upstream_far.write_all(b"back").await.unwrap();
        assert!(futures_util::poll!(&mut r).is_pending());
        let mut got = [0u8; 4];
        client_far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"back");

        let (client, _keep_a) = tokio::io::duplex(64);
        let (upstream, _keep_b) = tokio::io::duplex(64);
        let stats = relay(client, upstream, Duration::from_millis(40)).await;
        assert_eq!(stats.end, RelayEnd::Idle);
    }
}
