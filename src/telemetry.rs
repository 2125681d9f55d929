//! Diagnostic logging (tracing) to standard error, as text or JSON lines. `RUST_LOG`
//! overrides the configured filter. The access log is separate (`accesslog`).

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. Safe to call once; later calls are ignored.
pub fn init(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a terminal: journald and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Lets a warning through at most once per interval, for failures that can repeat on every
/// request (a full queue, a refused event, a failing disk). Give each cause its own limiter,
/// so that one noisy cause never hides another; put running totals in the message, so the
/// lines let through still say how many happened in between. Lock-free: one relaxed load,
/// and a compare-exchange when a line is due.
#[derive(Debug, Default)]
pub struct LogLimiter {
    /// Milliseconds since [`log_epoch_ms`]'s start before which nothing is let through; 0 at first.
    next_ms: std::sync::atomic::AtomicU64,
}

/// The clock of [`LogLimiter`]: milliseconds since the first limiter asked.
fn log_epoch_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = EPOCH.get_or_init(std::time::Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl LogLimiter {
    /// A limiter that lets the first line through.
    pub const fn new() -> LogLimiter {
        LogLimiter {
            next_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Whether a line may be logged now; if so, the next one waits `every`.
    pub fn allow(&self, every: std::time::Duration) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let now = log_epoch_ms();
        let next = self.next_ms.load(Relaxed);
        let every = u64::try_from(every.as_millis()).unwrap_or(u64::MAX);
        now >= next
            && self
                .next_ms
                .compare_exchange(next, now.saturating_add(every).max(1), Relaxed, Relaxed)
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn log_limiter_lets_one_line_through_per_interval_and_cause() {
        let (a, b) = (LogLimiter::new(), LogLimiter::new());
        assert!(a.allow(Duration::from_secs(3600)));
        assert!(!a.allow(Duration::from_secs(3600)), "the second waits");
        assert!(
            b.allow(Duration::from_secs(3600)),
            "another cause has its own"
        );
        let c = LogLimiter::new();
        assert!(c.allow(Duration::ZERO));
        assert!(
            c.allow(Duration::ZERO),
            "due again once the interval has passed"
        );
    }
}
