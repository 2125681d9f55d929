//! Zero-copy relay between two plain TCP connections (Linux): each direction moves bytes
//! from one socket into a pipe and from the pipe into the other socket with `splice(2)`, so
//! the payload stays in kernel pages and is never copied into the proxy's memory (as
//! HAProxy's `option splice-auto` does).
//!
//! # Where it sits
//! [`super::tunnel::relay_tcp`] calls [`relay`] for CONNECT tunnels that are not
//! intercepted and for WebSocket upgrades whose both ends are plain TCP, when
//! `proxy.splice` is on; everything else (intercepted TLS, TLS to the origin, other
//! platforms) takes the copy relay of [`super::tunnel`]. HTTP bodies go through hyper and are
//! copied.
//!
//! # How
//! A direction first writes the bytes already read from its source (an HTTP parser's read
//! buffer), then loops: wait until the source is readable, splice at most a pipe's worth
//! (64 KiB) from it into the pipe, wait until the destination is writable, splice the pipe
//! empty into it. Readiness comes from tokio (`poll_read_ready`, `poll_write_ready`, and
//! `try_io`, which clears readiness when the kernel answers `EAGAIN`); both pipe ends and
//! both sockets are non-blocking. End of file on a source shuts the destination's writing
//! down (half-close); the relay ends when both directions have, on the first error, or
//! after the same idle timeout as the copy relay ([`super::tunnel::drive`]).
//!
//! # Cost
//! No per-byte work in the proxy: two `splice` calls per chunk of up to 64 KiB and the
//! readiness wake-ups. A direction holds its pipe (two file descriptors, and kernel pages
//! only while bytes are in it) from its first bytes until a tick of the idle timer finds it
//! quiet and empty, as the copy relay does with its buffers: a busy tunnel uses six
//! descriptors instead of two, which counts against `RLIMIT_NOFILE` (raise `LimitNOFILE`
//! with `proxy.max_connections`). The kernel also caps the pages an unprivileged user's
//! pipes may hold (`/proc/sys/fs/pipe-user-pages-soft`, 16384 pages by default, about 500
//! busy tunnels at 64 KiB a pipe); past it new pipes get one or two pages and the relay
//! moves that much per `splice`: slower, still correct.
//!
//! # How it fails
//! A failed `splice` or `pipe2` (a reset, `EMFILE`) ends the relay as
//! [`RelayEnd::Error`](super::tunnel::RelayEnd::Error) with the bytes counted so far (bytes
//! read from a source count as moved, as in the copy relay); dropping the relay closes both
//! sockets and the pipes, and bytes still in a pipe are lost with the connection, as they
//! would be in a buffer.

use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf as _, Bytes};
use nix::fcntl::{OFlag, SpliceFFlags, splice};
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::tunnel::{RelayStats, TcpEnds, Ticking, drive};

/// The most one `splice` moves into a pipe: a pipe's default capacity (16 pages).
const CHUNK: usize = 64 * 1024;

/// Both `splice` calls: move pages rather than copy them where the kernel can, and never
/// block (the pipe ends are non-blocking too; the sockets are, as tokio opens them).
fn flags() -> SpliceFFlags {
    SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK
}

/// The pipe of one direction.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    fn new() -> io::Result<Self> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        Ok(Self { read, write })
    }
}

/// One direction of a spliced relay.
#[derive(Default)]
struct Dir {
    /// Bytes read from the source before the relay began, written first.
    prefix: Bytes,
    /// `None` while the direction is quiet.
    pipe: Option<Pipe>,
    /// Bytes in the pipe, not yet written.
    in_pipe: usize,
    read_done: bool,
    done: bool,
    /// Bytes read from the source (and so, in the end, written).
    moved: u64,
    /// Bytes moved since the idle timer last looked.
    active: bool,
}

impl Dir {
    fn new(prefix: Bytes) -> Self {
        Self {
            moved: prefix.len() as u64,
            active: !prefix.is_empty(),
            prefix,
            ..Self::default()
        }
    }

    /// Moves bytes from `src` to `dst` until `src` has nothing now (Pending) or ends (then
    /// shuts `dst`'s writing down: Ready).
    fn poll_move(
        &mut self,
        cx: &mut Context<'_>,
        src: &TcpStream,
        dst: &TcpStream,
    ) -> Poll<io::Result<()>> {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            ready!(self.poll_write_out(cx, dst))?;
            if self.read_done {
                socket2::SockRef::from(dst).shutdown(Shutdown::Write)?;
                self.done = true;
                self.pipe = None;
                return Poll::Ready(Ok(()));
            }
            ready!(src.poll_read_ready(cx))?;
            let pipe = match &mut self.pipe {
                Some(p) => p,
                None => self.pipe.insert(Pipe::new()?),
            };
            let filled = src.try_io(Interest::READABLE, || {
                Ok(splice(src, None, &pipe.write, None, CHUNK, flags())?)
            });
            match filled {
                Ok(0) => self.read_done = true,
                Ok(n) => {
                    self.in_pipe = n;
                    self.moved += n as u64;
                    self.active = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Writes the prefix, then empties the pipe into `dst`.
    fn poll_write_out(&mut self, cx: &mut Context<'_>, dst: &TcpStream) -> Poll<io::Result<()>> {
        while !self.prefix.is_empty() {
            ready!(dst.poll_write_ready(cx))?;
            match dst.try_write(&self.prefix) {
                Ok(n) => self.prefix.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        while self.in_pipe > 0 {
            let Some(pipe) = &self.pipe else {
                return Poll::Ready(Err(io::ErrorKind::InvalidData.into()));
            };
            ready!(dst.poll_write_ready(cx))?;
            let len = self.in_pipe;
            let drained = dst.try_io(Interest::WRITABLE, || {
                Ok(splice(&pipe.read, None, dst, None, len, flags())?)
            });
            match drained {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.in_pipe -= n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// Splices both ways between `a` (the client) and `b` (the upstream) until both directions
/// have ended; run by [`drive`] under the idle timeout.
struct SpliceRelay {
    a: TcpStream,
    b: TcpStream,
    /// `a` to `b`.
    up: Dir,
    /// `b` to `a`.
    down: Dir,
}

impl Future for SpliceRelay {
    type Output = io::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let up = this.up.poll_move(cx, &this.a, &this.b)?;
        let down = this.down.poll_move(cx, &this.b, &this.a)?;
        if up.is_ready() && down.is_ready() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }
}

impl Ticking for SpliceRelay {
    /// A direction that stayed quiet with an empty pipe closes the pipe.
    fn tick(&mut self) -> bool {
        let mut moved = false;
        for dir in [&mut self.up, &mut self.down] {
            if std::mem::take(&mut dir.active) {
                moved = true;
            } else if dir.in_pipe == 0 {
                dir.pipe = None;
            }
        }
        moved
    }

    fn moved(&self) -> (u64, u64) {
        (self.up.moved, self.down.moved)
    }
}

/// Splices between the two ends until close, error or `idle` with nothing moving.
pub(super) async fn relay(ends: TcpEnds, idle: Duration) -> RelayStats {
    let relay = SpliceRelay {
        a: ends.client,
        b: ends.upstream,
        up: Dir::new(ends.client_read),
        down: Dir::new(ends.upstream_read),
    };
    drive(relay, idle).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::tunnel::RelayEnd;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    /// A connected pair of loopback sockets.
    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
        (c.unwrap(), s.unwrap().0)
    }

    /// A relay between two loopback socket pairs, running: the client's and the upstream's
    /// far ends, and the relay's task.
    async fn relaying() -> (TcpStream, TcpStream, tokio::task::JoinHandle<RelayStats>) {
        let (client_far, client) = pair().await;
        let (upstream, upstream_far) = pair().await;
        let ends = TcpEnds {
            client,
            client_read: Bytes::new(),
            upstream,
            upstream_read: Bytes::new(),
        };
        let task = tokio::spawn(relay(ends, Duration::from_secs(30)));
        (client_far, upstream_far, task)
    }

    fn data(len: usize, seed: u32) -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i.wrapping_mul(seed) >> 3) as u8)
            .collect()
    }

    #[tokio::test]
    async fn splices_both_ways_with_prefixes_then_half_closes_in_turn() {
        let (client_far, client) = pair().await;
        let (upstream, upstream_far) = pair().await;
        let ends = TcpEnds {
            client,
            client_read: Bytes::from_static(b"early-up:"),
            upstream,
            upstream_read: Bytes::from_static(b"early-down:"),
        };
        let task = tokio::spawn(relay(ends, Duration::from_secs(30)));
        // Several pipes' worth each way, at once.
        let up_data = data(3 << 20, 2_654_435_761);
        let down_data = data((2 << 20) + 12_345, 40_503);
        let (mut cr, mut cw) = client_far.into_split();
        let (mut ur, mut uw) = upstream_far.into_split();
        let (w1, w2) = (up_data.clone(), down_data.clone());
        let send_up = tokio::spawn(async move {
            cw.write_all(&w1).await.unwrap();
            cw.shutdown().await.unwrap();
            cw
        });
        let send_down = tokio::spawn(async move {
            uw.write_all(&w2).await.unwrap();
            uw.shutdown().await.unwrap();
            uw
        });
        let (mut got_up, mut got_down) = (Vec::new(), Vec::new());
        let (a, b) = tokio::join!(ur.read_to_end(&mut got_up), cr.read_to_end(&mut got_down));
        a.unwrap();
        b.unwrap();
        assert_eq!(&got_up[..9], b"early-up:");
        assert!(
            got_up[9..] == up_data[..],
            "upstream got the client's bytes"
        );
        assert_eq!(&got_down[..11], b"early-down:");
        assert!(
            got_down[11..] == down_data[..],
            "client got the upstream's bytes"
        );
        let stats = task.await.unwrap();
        assert_eq!(stats.end, RelayEnd::Closed);
        assert_eq!(
            (stats.up, stats.down),
            (up_data.len() as u64 + 9, down_data.len() as u64 + 11)
        );
        drop((send_up.await, send_down.await));
    }

    #[tokio::test]
    async fn a_half_closed_client_still_receives_everything() {
        let (mut client_far, mut upstream_far, task) = relaying().await;
        client_far.write_all(b"request").await.unwrap();
        client_far.shutdown().await.unwrap();
        // The upstream sees the request, then end of file, and only then answers.
        let mut req = Vec::new();
        upstream_far.read_to_end(&mut req).await.unwrap();
        assert_eq!(req, b"request");
        let answer = data(1 << 20, 7);
        upstream_far.write_all(&answer).await.unwrap();
        upstream_far.shutdown().await.unwrap();
        let mut got = Vec::new();
        client_far.read_to_end(&mut got).await.unwrap();
        assert!(got == answer);
        let stats = task.await.unwrap();
        assert_eq!(
            (stats.up, stats.down, stats.end),
            (7, 1 << 20, RelayEnd::Closed)
        );
    }

    #[tokio::test]
    async fn a_reset_ends_the_relay_with_the_counts_so_far() {
        let (mut client_far, mut upstream_far, task) = relaying().await;
        upstream_far.write_all(&data(100_000, 3)).await.unwrap();
        let mut got = vec![0u8; 100_000];
        client_far.read_exact(&mut got).await.unwrap();
        // The upstream dies mid-body: an abortive close (RST).
        upstream_far.set_zero_linger().unwrap();
        drop(upstream_far);
        let stats = task.await.unwrap();
        assert_eq!(stats.end, RelayEnd::Error);
        assert_eq!(stats.down, 100_000);
        // The client sees its connection end, not a hang.
        let mut rest = Vec::new();
        let r = client_far.read_to_end(&mut rest).await;
        assert!(r.is_err() || rest.is_empty(), "{r:?}");
    }

    #[tokio::test]
    async fn a_quiet_tunnel_closes_its_pipes_and_a_silent_one_times_out() {
        let (mut client_far, client) = pair().await;
        let (upstream, mut upstream_far) = pair().await;
        let mut r = SpliceRelay {
            a: client,
            b: upstream,
            up: Dir::default(),
            down: Dir::default(),
        };
        // A new tunnel ends its first tick without pipes (a spurious readiness may have
        // opened one).
        assert!(futures_util::poll!(&mut r).is_pending());
        assert!(!r.tick());
        assert!(r.up.pipe.is_none() && r.down.pipe.is_none());
        client_far.write_all(b"hello").await.unwrap();
        // Readiness reaches the relay through tokio: wait for it, then poll.
        r.a.readable().await.unwrap();
        assert!(futures_util::poll!(&mut r).is_pending());
        r.b.writable().await.unwrap();
        assert!(futures_util::poll!(&mut r).is_pending());
        let mut got = [0u8; 5];
        upstream_far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
        assert!(r.up.pipe.is_some() && r.down.pipe.is_none());
        assert!(r.tick(), "bytes moved");
        assert!(r.up.pipe.is_some());
        assert!(!r.tick());
        assert!(r.up.pipe.is_none(), "a quiet direction closes its pipe");

        let (_keep_a, client) = pair().await;
        let (upstream, _keep_b) = pair().await;
        let ends = TcpEnds {
            client,
            client_read: Bytes::new(),
            upstream,
            upstream_read: Bytes::new(),
        };
        let stats = relay(ends, Duration::from_millis(40)).await;
        assert_eq!(stats.end, RelayEnd::Idle);
    }
}
