//! The failure budget: how many wrong credentials one client address may send in a window.
//!
//! Where it sits: [`super::Authenticator::check`] asks it before any credential that is not
//! already known good is looked at, and tells it every failure (a wrong or malformed
//! credential, or one refused because the password-check queue was full). An address over its
//! budget gets no password check until its window ends: its requests are answered 429 after a
//! delay (`auth.failure_delay_ms`), which slows a guessing loop down on every connection it
//! has.
//!
//! Addresses: an IPv4 address, or the /64 an IPv6 address is in (one host usually has a whole
//! /64); an IPv4-mapped IPv6 address counts as its IPv4 address.
//!
//! Cost: a hash map lookup per check that is not a cache hit; at most [`MAX_ADDRESSES`]
//! windows are held (least used dropped first). A window starts with an address's first
//! failure and lasts `auth.failure_window_seconds` (a fixed window: later failures do not
//! extend it).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Client addresses with a failure window held at most.
pub(super) const MAX_ADDRESSES: u64 = 100_000;

/// One address's failures since the start of its window.
#[derive(Debug)]
struct Window {
    start: Instant,
    failures: AtomicU32,
}

/// Failures per client address within a window; see the module doc.
#[derive(Debug)]
pub(super) struct FailureBudget {
    per_client: u32,
    window: Duration,
    windows: moka::sync::Cache<IpAddr, Arc<Window>>,
}

impl FailureBudget {
    /// A budget of `per_client` failures per `window`; `None` when `per_client` is 0 (no
    /// limit).
    pub(super) fn new(per_client: u32, window: Duration) -> Option<Self> {
        (per_client > 0 && !window.is_zero()).then(|| Self {
            per_client,
            window,
            windows: moka::sync::Cache::builder()
                .max_capacity(MAX_ADDRESSES)
                .time_to_live(window)
                .build(),
        })
    }

    /// Whether `client` has used its budget up, and if so how long until its window ends.
    pub(super) fn over(&self, client: IpAddr) -> Option<Duration> {
        let w = self.windows.get(&address_key(client))?;
        (w.failures.load(Ordering::Relaxed) >= self.per_client)
            .then(|| self.window.saturating_sub(w.start.elapsed()))
    }

    /// Counts a wrong credential from `client`.
    pub(super) fn record_failure(&self, client: IpAddr) {
        self.windows
            .get_with(address_key(client), || {
                Arc::new(Window {
                    start: Instant::now(),
                    failures: AtomicU32::new(0),
                })
            })
            .failures
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// The address a budget is kept for: IPv4 as is, IPv6 by its /64.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_address_is_over_after_its_budget_and_others_are_not() {
        let b = FailureBudget::new(2, Duration::from_secs(60)).unwrap();
        let a = ip("192.0.2.1");
        assert_eq!(b.over(a), None);
        b.record_failure(a);
        assert_eq!(b.over(a), None);
        b.record_failure(a);
        let retry_after = b.over(a).expect("two failures use the budget up");
        assert!(retry_after <= Duration::from_secs(60));
        assert_eq!(b.over(ip("192.0.2.2")), None);
        // One IPv6 /64 is one client; the mapped form of an IPv4 address is that address.
        b.record_failure(ip("2001:db8::1"));
        b.record_failure(ip("2001:db8::ffff:2"));
        assert!(b.over(ip("2001:db8::3")).is_some());
        assert_eq!(b.over(ip("2001:db8:0:1::1")), None);
        assert!(b.over(ip("::ffff:192.0.2.1")).is_some());
        assert!(FailureBudget::new(0, Duration::from_secs(60)).is_none());
    }
}
