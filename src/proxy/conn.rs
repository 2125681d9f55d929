//! One client connection: the header-read and keep-alive idle timeouts over its
//! [`ConnActivity`] (which lives in [`crate::conns`], shared with the connection limits).
//!
//! hyper's own header timer also runs while a keep-alive connection sits idle, so it cannot
//! express "10 s to send a request head, but 60 s of idle keep-alive". Instead the socket is
//! wrapped in [`ActivityIo`], which notes the first byte read after the connection went idle,
//! and the service notes when requests start and finish. A [`watchdog`] future per connection
//! sleeps until the next deadline and reports which one expired: an idle connection is
//! closed gracefully, a client that started a request head and did not finish it in time is
//! cut off. Cost per request: two atomic updates and one clock read; the watchdog wakes at
//! deadlines and every half of the shorter timeout, never per request.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::tap::{OnRead, ReadTap};
pub use crate::conns::ConnActivity;
use crate::conns::NONE;

/// Which deadline expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// No request and no bytes for the idle timeout: close gracefully.
    Idle,
    /// A request head was started and not finished in time: cut the connection.
    HeaderTimeout,
}

/// Resolves when the connection has been idle, or half-way through a request head, for too
/// long. Never resolves while a request is in progress.
pub async fn watchdog(act: &ConnActivity, idle: Duration, header: Duration) -> Expiry {
    let idle_ms = idle.as_millis() as u64;
    let header_ms = header.as_millis() as u64;
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
                let deadline = act.idle_since.load(Ordering::Acquire) + idle_ms;
                if now >= deadline {
                    return Expiry::Idle;
                }
                deadline.min(now + recheck_ms)
            }
        };
        tokio::time::sleep_until((act.base + Duration::from_millis(wake_at)).into()).await;
    }
}

/// A client socket that reports reads to its [`ConnActivity`].
pub type ActivityIo<T> = ReadTap<T, std::sync::Arc<ConnActivity>>;

impl OnRead for std::sync::Arc<ConnActivity> {
    fn on_read(&mut self, _n: usize) {
        self.bytes_read();
    }
}
