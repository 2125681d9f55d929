//! Relaying bytes both ways between two connections (CONNECT tunnels, WebSocket upgrades)
//! until either side closes or nothing moves for the idle timeout.
//!
//! The copy is tokio's `copy_bidirectional_with_sizes` with 16 KiB buffers per direction;
//! each read marks the tunnel active, and a timer that wakes four times per idle period
//! closes the tunnel after between 1 and 1.25 idle periods of silence. Cost: 32 KiB of
//! buffers per tunnel, no per-byte work beyond the copy.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use super::tap::{OnRead, ReadTap};

const BUF: usize = 16 * 1024;

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

/// Per side: bytes read, and a shared "something moved" flag for the idle timer.
struct Activity {
    active: Arc<AtomicBool>,
    read: u64,
}

impl OnRead for Activity {
    fn on_read(&mut self, n: usize) {
        self.read += n as u64;
        self.active.store(true, Ordering::Relaxed);
    }
}

/// Relays between `client` and `upstream` until close, error or idle timeout.
pub async fn relay<A, B>(client: A, upstream: B, idle: Duration) -> RelayStats
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let active = Arc::new(AtomicBool::new(false));
    let side = || Activity {
        active: active.clone(),
        read: 0,
    };
    let mut a = ReadTap {
        inner: client,
        observer: side(),
    };
    let mut b = ReadTap {
        inner: upstream,
        observer: side(),
    };
    let end = {
        let copy = tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, BUF, BUF);
        tokio::pin!(copy);
        let tick = (idle / 4).max(Duration::from_millis(1));
        let mut quiet = 0u32;
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + tick, tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                r = &mut copy => break if r.is_ok() { RelayEnd::Closed } else { RelayEnd::Error },
                _ = interval.tick() => {
                    if active.swap(false, Ordering::Relaxed) {
                        quiet = 0;
                    } else {
                        quiet += 1;
                        if quiet >= 4 {
                            break RelayEnd::Idle;
                        }
                    }
                }
            }
        }
    };
    RelayStats {
        up: a.observer.read,
        down: b.observer.read,
        end,
    }
}
