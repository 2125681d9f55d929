//! [`ReadTap`]: a transparent socket wrapper that reports how many bytes each read returned.
//! Used for the client connection's activity tracking ([`super::conn`]) and for tunnel idle
//! detection and byte counts ([`super::tunnel`]). Writes pass straight through (vectored
//! writes included, which hyper relies on). Cost: one branch per read.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Told about every read that returned data.
pub trait OnRead: Unpin {
    fn on_read(&mut self, n: usize);
}

/// Wraps `T`, calling `O::on_read` after each read that returned bytes.
pub struct ReadTap<T, O> {
    pub inner: T,
    pub observer: O,
}

impl<T: AsyncRead + Unpin, O: OnRead> AsyncRead for ReadTap<T, O> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.observer.on_read(n);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin, O: OnRead> AsyncWrite for ReadTap<T, O> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
