//! Delta sync for the servers that follow this one (client token): `GET /v1/sync/snapshot`
//! (a page of the table in key order) and `GET /v1/sync/changes` (the current value of each
//! key changed after a cursor, long-polled like `/v1/changes`). Both run on a reader thread
//! ([`crate::repserver::mirror`] has the queries and their cost).

use std::time::Duration;

use super::super::Shared;
use super::super::reply::{ApiError, number_param, query_param};
use crate::api::sync::{MAX_PAGE, SnapshotKind, SnapshotPage, Subscription, SyncChanges};

/// The page size when a request names none.
const DEFAULT_PAGE: u64 = 5_000;

fn subscription(query: Option<&str>) -> Result<Subscription, ApiError> {
    Ok(Subscription::from_params(
        query_param(query, "sources")?.as_deref(),
        query_param(query, "categories")?.as_deref(),
    ))
}

fn page_limit(query: Option<&str>) -> Result<usize, ApiError> {
    let n = number_param(query, "limit", DEFAULT_PAGE, MAX_PAGE as u64)?;
    Ok(usize::try_from(n.max(1)).unwrap_or(MAX_PAGE))
}

/// `GET /v1/sync/snapshot?kind=entries|files&after=K&limit=N&sources=..&categories=..`.
pub(super) async fn snapshot(
    shared: &Shared,
    query: Option<&str>,
) -> Result<SnapshotPage, ApiError> {
    let kind = match query_param(query, "kind")?.as_deref() {
        None | Some("entries") => SnapshotKind::Entries,
        Some("files") => SnapshotKind::Files,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "`kind` is `entries` or `files`, not {other:?}"
            )));
        }
    };
    let after = query_param(query, "after")?;
    let limit = page_limit(query)?;
    let sub = subscription(query)?;
    shared.stats.sync_served();
    Ok(shared
        .read(move |store| store.snapshot_page(kind, after.as_deref(), limit, &sub))
        .await??)
}

/// `GET /v1/sync/changes?since=S&after=K&limit=N&wait_ms=M&sources=..&categories=..`: waits
/// up to `wait_ms` (at most `max_wait_ms`) for a change after `S`, then answers.
pub(super) async fn changes(shared: &Shared, query: Option<&str>) -> Result<SyncChanges, ApiError> {
    let since = number_param(query, "since", 0, u64::MAX)?;
    let after = query_param(query, "after")?;
    let limit = page_limit(query)?;
    let sub = subscription(query)?;
    let wait = Duration::from_millis(number_param(
        query,
        "wait_ms",
        0,
        shared.config.max_wait_ms,
    )?);
    let mut rx = shared.seq.clone();
    let deadline = tokio::time::Instant::now() + wait;
    let _following = shared.stats.follower();
    loop {
        // Seen before reading the store: a commit after this point wakes `changed()`.
        let current = *rx.borrow_and_update();
        // A cursor inside a sequence (`after`) may have rows left in it; one ahead of this
        // store is answered at once (`reset`).
        if current != since || after.is_some() || tokio::time::Instant::now() >= deadline {
            let (after, sub) = (after.clone(), sub.clone());
            let answer = shared
                .read(move |store| store.sync_changes(since, after.as_deref(), limit, &sub))
                .await??;
            // Nothing after the cursor yet (a write that changed no row): wait on.
            let idle = answer.entries.is_empty()
                && answer.files.is_empty()
                && answer.deleted.is_empty()
                && !answer.reset
                && !answer.more;
            if !idle || tokio::time::Instant::now() >= deadline {
                shared.stats.sync_served();
                return Ok(answer);
            }
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { break },
            _ = tokio::time::sleep_until(deadline) => {}
            _ = shared.shutdown.cancelled() => break,
        }
    }
    let (after, sub) = (after.clone(), sub.clone());
    Ok(shared
        .read(move |store| store.sync_changes(since, after.as_deref(), limit, &sub))
        .await??)
}
