//! The feedback forwarder's task ([`crate::repserver::forward`] says what it guarantees):
//! reads the next events after the cursor on a reader thread, sends them upstream, moves the
//! cursor on the writer thread, and waits for the ingest's wake-up when nothing is left.
//! Every wait races the shutdown token, so an interrupted round only means that round is
//! sent again after the next start (the upstream de-duplicates it).

use std::sync::Arc;
use std::time::Duration;

use super::Shared;
use super::reply::ApiError;
use crate::client::ClientError;
use crate::repserver::forward::{
    Backlog, ForwardOptions, IDLE_RECHECK, Outcome, READ_BATCH, deliver, prepare,
};
use crate::repserver::metrics::Forwarded;
use crate::repserver::store::StoreError;
use crate::telemetry::LogLimiter;

/// First back-off after a failed round; doubled after each failure up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// At most one warning per cause this often.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Why a round did not finish.
enum RoundError {
    Store(String),
    Upstream(ClientError),
}

impl From<ApiError> for RoundError {
    fn from(e: ApiError) -> Self {
        RoundError::Store(e.message)
    }
}

impl From<StoreError> for RoundError {
    fn from(e: StoreError) -> Self {
        RoundError::Store(e.to_string())
    }
}

/// Forwards until shutdown.
pub(super) async fn forward_loop(shared: Arc<Shared>, options: ForwardOptions) {
    let Some(key) = setup(&shared).await else {
        return;
    };
    tracing::info!(
        upstream = options.client.base(),
        "forwarding feedback events upstream"
    );
    let mut backoff = BACKOFF_MIN;
    let stop = shared.shutdown.clone();
    loop {
        let round = tokio::select! {
            r = round(&shared, &options, &key) => r,
            () = stop.cancelled() => return,
        };
        let wait = match round {
            // More may be waiting: go on at once.
            Ok(true) => {
                backoff = BACKOFF_MIN;
                continue;
            }
            Ok(false) => {
                backoff = BACKOFF_MIN;
                tokio::select! {
                    () = shared.ingested.notified() => {}
                    () = tokio::time::sleep(IDLE_RECHECK) => {}
                    () = stop.cancelled() => return,
                }
                continue;
            }
            Err(e) => {
                note_failure(&shared, &options, &e);
                let wait = jitter(backoff);
                backoff = (backoff * 2).min(BACKOFF_MAX);
                wait
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// The anonymizing key, once the forwarder's state exists; `None` at shutdown. A store that
/// cannot make it is asked again after a back-off.
async fn setup(shared: &Shared) -> Option<[u8; 32]> {
    static FAILED: LogLimiter = LogLimiter::new();
    let mut backoff = BACKOFF_MIN;
    loop {
        let e = match shared.call(|s| s.forward_setup()).await {
            Ok(Ok(key)) => return Some(key),
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.message,
        };
        if FAILED.allow(LOG_EVERY) {
            tracing::warn!(
                error = e,
                "cannot prepare feedback forwarding; trying again"
            );
        }
        tokio::select! {
            () = tokio::time::sleep(jitter(backoff)) => {}
            () = shared.shutdown.cancelled() => return None,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One round: the next events, sent, the cursor moved. `Ok(true)` when events went up (more
/// may wait), `Ok(false)` when there were none.
async fn round(
    shared: &Shared,
    options: &ForwardOptions,
    key: &[u8; 32],
) -> Result<bool, RoundError> {
    let backlog: Backlog = shared.read(|s| s.forward_backlog(READ_BATCH)).await??;
    shared.stats.forward_behind(backlog.behind);
    if backlog.events.is_empty() {
        return Ok(false);
    }
    let lines = prepare(&backlog.events, &options.privacy, key);
    let sendable: Vec<Vec<u8>> = lines.iter().flatten().cloned().collect();
    let (outcomes, error) = deliver(&options.client, &sendable).await;
    // Walk the batch in order up to the first event with no final answer.
    let mut outcomes = outcomes.into_iter();
    let (mut done, mut to) = (0u64, backlog.cursor);
    let (mut taken, mut refused) = (0u64, 0u64);
    for (stored, line) in backlog.events.iter().zip(&lines) {
        let outcome = match line {
            None => Outcome::Refused("the stored event no longer decodes".into()),
            Some(_) => outcomes.next().unwrap_or(Outcome::Pending),
        };
        match outcome {
            Outcome::Pending => break,
            Outcome::Taken => taken += 1,
            Outcome::Refused(why) => {
                refused += 1;
                refusal(stored.rowid, &why);
            }
        }
        (done, to) = (done + 1, stored.rowid);
    }
    if done > 0 {
        let from = backlog.cursor;
        // The cursor moves only if pruning did not pull it back meanwhile; if it did, the
        // next round reads from where pruning left it (the upstream absorbs repeats).
        shared
            .call(move |s| s.advance_forward_cursor(from, to))
            .await??;
        shared.stats.forward(Forwarded::forwarded, taken);
        shared.stats.forward(Forwarded::refused, refused);
        shared
            .stats
            .forward_behind(backlog.behind.saturating_sub(done));
    }
    match error {
        Some(e) => Err(RoundError::Upstream(e)),
        None => Ok(true),
    }
}

/// Logs an event the upstream refused (or that no longer decodes): passed, not retried.
fn refusal(rowid: i64, why: &str) {
    static REFUSED: LogLimiter = LogLimiter::new();
    if REFUSED.allow(LOG_EVERY) {
        tracing::warn!(
            event = rowid,
            error = why,
            "the upstream refused a feedback event; it is not forwarded"
        );
    }
}

/// Counts and logs a round that did not finish.
fn note_failure(shared: &Shared, options: &ForwardOptions, e: &RoundError) {
    static UPSTREAM: LogLimiter = LogLimiter::new();
    static STORE: LogLimiter = LogLimiter::new();
    match e {
        RoundError::Upstream(e) => {
            shared.stats.forward_failed();
            if UPSTREAM.allow(LOG_EVERY) {
                tracing::warn!(
                    upstream = options.client.base(),
                    error = %e,
                    behind = shared.stats.forward_lag(),
                    "feedback not forwarded; kept in the store and offered again"
                );
            }
        }
        RoundError::Store(e) => {
            if STORE.allow(LOG_EVERY) {
                tracing::warn!(
                    error = e,
                    "cannot read feedback events to forward; trying again"
                );
            }
        }
    }
}

/// `d` less up to a half of it, at random: forwarders of many sites that lost their upstream
/// at once do not come back in step.
fn jitter(d: Duration) -> Duration {
    let half = u64::try_from(d.as_millis() / 2).unwrap_or(0);
    d.saturating_sub(Duration::from_millis(rand::random_range(0..=half)))
}
