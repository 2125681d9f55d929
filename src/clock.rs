//! Wall-clock time as unix seconds and milliseconds: the times stored in the reputation
//! server (entry and event times, retention cut-offs), written in feedback events and access
//! logs, and carried in continue tokens.
//!
//! A leaf of the crate: std only, no I/O, usable by the proxy and the server alike. Elapsed
//! time inside a process is measured with `Instant` instead; this is only for times that
//! leave the process or outlive it.
//!
//! Cost: one `clock_gettime` per call. It does not fail: a clock set before 1970 reads as
//! the epoch (0), and one past the year 292 million as `i64::MAX`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Time from the unix epoch to `t`; zero when `t` is earlier.
pub fn since_epoch(t: SystemTime) -> Duration {
    t.duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// Now, in whole seconds since the unix epoch.
pub fn unix_secs() -> i64 {
    i64::try_from(since_epoch(SystemTime::now()).as_secs()).unwrap_or(i64::MAX)
}

/// Now, in milliseconds since the unix epoch.
pub fn unix_millis() -> i64 {
    i64::try_from(since_epoch(SystemTime::now()).as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_milliseconds_agree_and_early_times_read_as_the_epoch() {
        let (s, ms) = (unix_secs(), unix_millis());
        assert!(s > 1_700_000_000, "{s}");
        assert!((ms / 1000 - s).abs() <= 1, "{s} {ms}");
        assert_eq!(
            since_epoch(UNIX_EPOCH - Duration::from_secs(5)),
            Duration::ZERO
        );
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(since_epoch(t).as_millis(), 1_700_000_000_123);
    }
}
