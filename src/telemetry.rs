//! Diagnostic logging (tracing) to standard error, as text or JSON lines. `RUST_LOG`
//! overrides the configured filter. The access log is separate (`accesslog`).
//!
//! Standard error is written by a thread of its own behind a bounded queue ([`QUEUE_LINES`]
//! lines): a task that logs only formats its line and queues it, so a reader of standard
//! error that stops reading (a full pipe) or a closed one (`EPIPE`, e.g. `| head`) never
//! blocks, fails or kills the process. Lines that do not fit the queue, and lines whose write
//! failed, are dropped and counted ([`dropped_lines`]; `webrep_log_dropped_total` on both
//! metrics listeners and `log_dropped` in the proxy's `/stats`). On exit the [`Guard`] gives
//! the queue [`EXIT_FLUSH`] to drain, and no more.
//!
//! The queue is ours rather than `tracing-appender`'s: that crate's guard prints to standard
//! output when its queue is full at exit, which panics or blocks on exactly the closed or
//! stuck streams this module exists for.
//!
//! Filters are checked strictly ([`crate::config::parse_log_filter`]): a word that is not a
//! level is an error rather than a filter that silently matches nothing. A reload changes
//! the filter of the running subscriber ([`set_level`]); that costs a read lock where an
//! event's level is not already known to be off for its call site.

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::Duration;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Lines of diagnostics that may wait for standard error; beyond it they are dropped.
pub const QUEUE_LINES: usize = 16_384;

/// How long the process waits at exit for queued lines to reach standard error.
pub const EXIT_FLUSH: Duration = Duration::from_secs(1);

/// Lines queued, lines the writer thread has dealt with (written or failed), lines lost.
static QUEUED: AtomicU64 = AtomicU64::new(0);
static HANDLED: AtomicU64 = AtomicU64::new(0);
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Diagnostic lines lost so far: the queue was full, or writing to standard error failed.
pub fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// The subscriber's writer: queues each formatted event (tracing writes one event per
/// `write_all`) for the writer thread, or counts it as dropped.
#[derive(Clone)]
struct QueueWriter(SyncSender<Vec<u8>>);

impl std::io::Write for QueueWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.0.try_send(buf.to_vec()) {
            Ok(()) => {
                QUEUED.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for QueueWriter {
    type Writer = QueueWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Starts the writer thread; the queue's sending end.
fn start_writer() -> std::io::Result<SyncSender<Vec<u8>>> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(QUEUE_LINES);
    std::thread::Builder::new()
        .name("webrep-log".into())
        .spawn(move || {
            for line in rx {
                if std::io::stderr().write_all(&line).is_err() {
                    DROPPED.fetch_add(1, Ordering::Relaxed);
                }
                HANDLED.fetch_add(1, Ordering::Relaxed);
            }
        })?;
    Ok(tx)
}

/// Hold it until the process ends: dropping it waits (up to [`EXIT_FLUSH`]) for the queued
/// lines to be written.
#[must_use = "dropping the guard is the exit flush"]
pub struct Guard(());

impl Drop for Guard {
    fn drop(&mut self) {
        let end = std::time::Instant::now() + EXIT_FLUSH;
        while HANDLED.load(Ordering::Relaxed) < QUEUED.load(Ordering::Relaxed)
            && std::time::Instant::now() < end
        {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// The filter to log with: `RUST_LOG` when set and not empty, else `level` (the config's
/// `log.level`).
///
/// # Errors
/// A message naming `RUST_LOG` or `log.level` when the filter is not valid.
pub fn filter(level: &str) -> Result<EnvFilter, String> {
    let (source, text) = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => ("RUST_LOG", v),
        Ok(_) | Err(std::env::VarError::NotPresent) => ("log.level", level.to_owned()),
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err("RUST_LOG is not valid UTF-8".into());
        }
    };
    crate::config::parse_log_filter(&text).map_err(|e| format!("{source}={text:?}: {e}"))
}

/// Swaps the installed subscriber's filter (set once by [`init`]).
type SetFilter = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;
static SET_FILTER: std::sync::OnceLock<SetFilter> = std::sync::OnceLock::new();

/// Applies `level` (a reloaded `log.level`) to the running subscriber. Returns whether it
/// applied: not when `RUST_LOG` is set (it wins, as at start) or when no subscriber of
/// [`init`]'s is installed.
///
/// # Errors
/// An invalid filter (the config check refuses those first), or a subscriber gone.
pub fn set_level(level: &str) -> Result<bool, String> {
    if std::env::var_os("RUST_LOG").is_some_and(|v| !v.is_empty()) {
        return Ok(false);
    }
    let Some(set) = SET_FILTER.get() else {
        return Ok(false);
    };
    let filter = crate::config::parse_log_filter(level).map_err(|e| format!("log.level: {e}"))?;
    set(filter).map(|()| true)
}

/// Installs the global subscriber writing to standard error through the queue. Later calls
/// install nothing.
///
/// # Errors
/// An invalid `RUST_LOG` or `level` (see [`filter`]), or no thread for the writer; nothing
/// is installed then.
pub fn init(level: &str, format: LogFormat) -> Result<Guard, String> {
    let filter = filter(level)?;
    // Colours only for a terminal: journald and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let writer = start_writer().map_err(|e| format!("cannot start the log writer: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .log_internal_errors(false)
        .with_writer(QueueWriter(writer));
    // Each format is a subscriber type of its own, and so is its reload handle.
    let _ = match format {
        LogFormat::Text => {
            let b = builder.with_filter_reloading();
            let h = b.reload_handle();
            let _ = SET_FILTER.set(Box::new(move |f| h.reload(f).map_err(|e| e.to_string())));
            b.try_init()
        }
        LogFormat::Json => {
            let b = builder.json().with_filter_reloading();
            let h = b.reload_handle();
            let _ = SET_FILTER.set(Box::new(move |f| h.reload(f).map_err(|e| e.to_string())));
            b.try_init()
        }
    };
    Ok(Guard(()))
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

/// The clock of [`LogLimiter`]: milliseconds since the first limiter asked, plus one, so
/// that it never reads 0 (a limiter's "nothing logged yet").
fn log_epoch_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = EPOCH.get_or_init(std::time::Instant::now);
    u64::try_from(start.elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .saturating_add(1)
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
                .compare_exchange(next, now.saturating_add(every), Relaxed, Relaxed)
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

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        // No one reads this queue of one line.
        let (tx, _rx) = std::sync::mpsc::sync_channel(1);
        let mut w = QueueWriter(tx);
        let before = dropped_lines();
        for _ in 0..3 {
            w.write_all(b"a line\n").unwrap();
        }
        assert!(dropped_lines() >= before + 2);
    }
}
