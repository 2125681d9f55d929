//! The validated `feedback:` section: the proxy's side of feedback events (the queue, the
//! batches, the on-disk spool and the shutdown flush; the server's side is under `server:`).
//!
//! Read by the proxy's feedback sender. Its `enabled` default depends on the `reputation:`
//! section (on when sources are configured), so it is validated with that knowledge. Fails on
//! a proxy id that events could not carry, an empty queue, batches outside 1..=10000, an
//! empty spool path, zero intervals, a kind that must stay one event each among
//! `aggregate_kinds`, and a zero `aggregate_max_hosts`.

use std::path::PathBuf;
use std::time::Duration;

use crate::api::events::{Kind, MAX_IDENT};

use super::check::{InvalidValue, millis};
use super::raw::RawFeedbackConfig;

/// Validated `feedback:` section. Field meanings are documented on [`RawFeedbackConfig`].
#[derive(Debug, Clone)]
pub struct FeedbackConfig {
    /// Resolved: `enabled`, or whether reputation sources are configured.
    pub enabled: bool,
    pub proxy_id: Option<String>,
    pub queue_events: usize,
    pub batch_events: usize,
    pub batch_interval: Duration,
    pub send_timeout: Duration,
    pub retry_interval: Duration,
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
    pub spool_fsync: Duration,
    pub shutdown_flush: Duration,
    /// `aggregate_secs`; `None` for 0 (every event on its own).
    pub aggregate: Option<Duration>,
    pub aggregate_kinds: Vec<Kind>,
    pub aggregate_max_hosts: usize,
}

impl FeedbackConfig {
    /// Validates `f`; `has_sources`: whether `reputation.sources` is not empty, which turns
    /// feedback on unless `enabled` says otherwise.
    pub(super) fn validate(f: RawFeedbackConfig, has_sources: bool) -> Result<Self, InvalidValue> {
        if let Some(id) = &f.proxy_id
            && (id.is_empty() || id.len() > MAX_IDENT || !id.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(InvalidValue::new(
                "feedback.proxy_id",
                format!("{id:?}: use 1 to {MAX_IDENT} visible ASCII characters"),
            ));
        }
        if f.queue_events == 0 {
            return Err(InvalidValue::new(
                "feedback.queue_events",
                "must be at least 1",
            ));
        }
        if !(1..=10_000).contains(&f.batch_events) {
            return Err(InvalidValue::new(
                "feedback.batch_events",
                format!("{} is outside 1..=10000", f.batch_events),
            ));
        }
        if let Some(k) = f.aggregate_kinds.iter().find(|k| {
            matches!(
                k,
                Kind::Blocked
                    | Kind::Warned
                    | Kind::Continued
                    | Kind::UserReport
                    | Kind::FileVerdict
            )
        }) {
            return Err(InvalidValue::new(
                "feedback.aggregate_kinds",
                format!(
                    "{}: blocks, warnings, continues, user reports and file verdicts stay one \
                     event each",
                    k.as_str()
                ),
            ));
        }
        if f.aggregate_max_hosts == 0 {
            return Err(InvalidValue::new(
                "feedback.aggregate_max_hosts",
                "must be at least 1",
            ));
        }
        if f.spool_dir.as_os_str().is_empty() {
            return Err(InvalidValue::new("feedback.spool_dir", "empty path"));
        }
        Ok(FeedbackConfig {
            enabled: f.enabled.unwrap_or(has_sources),
            proxy_id: f.proxy_id,
            queue_events: f.queue_events,
            batch_events: f.batch_events,
            batch_interval: millis("feedback.batch_interval_ms", f.batch_interval_ms)?,
            send_timeout: millis("feedback.send_timeout_ms", f.send_timeout_ms)?,
            retry_interval: millis("feedback.retry_interval_ms", f.retry_interval_ms)?,
            spool_dir: f.spool_dir,
            spool_max_bytes: f.spool_max_bytes,
            spool_fsync: millis("feedback.spool_fsync_ms", f.spool_fsync_ms)?,
            shutdown_flush: millis("feedback.shutdown_flush_ms", f.shutdown_flush_ms)?,
            aggregate: (f.aggregate_secs > 0).then(|| Duration::from_secs(f.aggregate_secs)),
            aggregate_kinds: f.aggregate_kinds,
            aggregate_max_hosts: f.aggregate_max_hosts,
        })
    }
}
