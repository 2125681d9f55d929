//! The follower loop of a server that follows its upstream tier ([`crate::repserver::follow`]
//! says what it does): a background task of [`super::serve_with`] that fetches snapshot
//! pages and change pages from the upstream and applies each on the store's writer thread in
//! one transaction together with the new cursor, then wakes the local change followers.
//!
//! Cost: one upstream exchange per page (at most `page` entries) or per long-poll (`wait`),
//! one write transaction per page that changed something; an idle long-poll that ends with
//! nothing new writes only the cursor. Failures wait on the [`Follow::retry`] schedule; a
//! warning is logged when the upstream stops answering and an
//! info line when it answers again.

use std::sync::Arc;
use std::time::Duration;

use super::Shared;
use super::jobs::publish;
use crate::api::sync::{FileView, SnapshotKind, SnapshotPage, SyncChanges};
use crate::client::ClientError;
use crate::clock::unix_secs;
use crate::model::{Entry, FileEntry};
use crate::repserver::follow::{Follow, FollowStatus};
use crate::repserver::mirror::{FollowState, Stage};

/// Why one step of the follower failed.
#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error("upstream: {0}")]
    Upstream(#[from] ClientError),
    #[error("upstream answer: {0}")]
    Answer(String),
    #[error("store: {0}")]
    Store(String),
}

impl From<super::reply::ApiError> for StepError {
    fn from(e: super::reply::ApiError) -> StepError {
        StepError::Store(e.message)
    }
}

impl From<crate::repserver::store::StoreError> for StepError {
    fn from(e: crate::repserver::store::StoreError) -> StepError {
        StepError::Store(e.to_string())
    }
}

/// Follows the upstream until shutdown.
pub(super) async fn follow_loop(shared: Arc<Shared>, follow: Follow, status: Arc<FollowStatus>) {
    let mut failures = 0u32;
    let mut state: Option<FollowState> = None;
    let mut down_since_warned = false;
    loop {
        if shared.shutdown.is_cancelled() {
            return;
        }
        let step = async {
            let st = match state.take() {
                Some(st) => st,
                None => shared.call(|s| s.follow_state()).await??,
            };
            status.set_stage(matches!(st.stage, Stage::Follow { .. }), st.complete);
            // Another subscription than the mirror was copied under: copy again.
            let st = if st.subscription == follow.subscription.query() {
                st
            } else {
                if st.upstream.is_some() {
                    tracing::info!("the subscription changed; taking a fresh snapshot");
                }
                FollowState {
                    subscription: follow.subscription.query(),
                    ..fresh(st)
                }
            };
            step(&shared, &follow, &status, st).await
        };
        let result = tokio::select! {
            r = step => r,
            () = shared.shutdown.cancelled() => return,
        };
        match result {
            Ok(next) => {
                state = Some(next);
                failures = 0;
                if down_since_warned {
                    tracing::info!(upstream = follow.client.base(), "upstream answers again");
                    down_since_warned = false;
                }
            }
            Err(e) => {
                status.failed();
                failures = failures.saturating_add(1);
                if !down_since_warned {
                    tracing::warn!(upstream = follow.client.base(), error = %e,
                        "following the upstream failed; serving the mirror as it is, retrying");
                    down_since_warned = true;
                }
                let pause = follow.retry.wait(failures);
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = shared.shutdown.cancelled() => return,
                }
            }
        }
    }
}

/// One exchange and what it changes: the next state.
async fn step(
    shared: &Shared,
    follow: &Follow,
    status: &FollowStatus,
    st: FollowState,
) -> Result<FollowState, StepError> {
    match st.stage.clone() {
        Stage::New => snapshot_page(shared, follow, status, fresh(st), None).await,
        Stage::Snapshot { kind, seq, after } => {
            let at = (kind, seq, after);
            snapshot_page(shared, follow, status, st, Some(at)).await
        }
        Stage::Follow { seq, after } => changes_page(shared, follow, status, st, seq, after).await,
    }
}

/// A state that starts a fresh snapshot: a new generation, nothing copied.
fn fresh(st: FollowState) -> FollowState {
    FollowState {
        stage: Stage::New,
        generation: st.generation + 1,
        ..st
    }
}

/// GET with the subscription; the typed answer, its size counted.
async fn get<T: serde::de::DeserializeOwned>(
    follow: &Follow,
    status: &FollowStatus,
    path: &str,
    timeout: Duration,
    snapshot: bool,
) -> Result<T, StepError> {
    let path = format!("{path}{}", follow.subscription.query());
    let bytes = follow.client.get_bytes(&path, timeout).await?;
    status.received(snapshot, bytes.len());
    serde_json::from_slice(&bytes).map_err(|e| StepError::Answer(e.to_string()))
}

/// Copies one snapshot page. `at`: the part, the upstream sequence the snapshot started at,
/// and the last key copied; `None` for the first page of a fresh snapshot.
async fn snapshot_page(
    shared: &Shared,
    follow: &Follow,
    status: &FollowStatus,
    st: FollowState,
    at: Option<(SnapshotKind, u64, Option<String>)>,
) -> Result<FollowState, StepError> {
    let (kind, after) = at
        .as_ref()
        .map_or((SnapshotKind::Entries, None), |(k, _, a)| (*k, a.clone()));
    let kind_name = match kind {
        SnapshotKind::Entries => "entries",
        SnapshotKind::Files => "files",
    };
    let mut path = format!("/v1/sync/snapshot?kind={kind_name}&limit={}", follow.page);
    if let Some(a) = &after {
        path.push_str(&format!("&after={}", crate::urlenc::encode_query_value(a)));
    }
    let page: SnapshotPage = get(follow, status, &path, follow.timeout, true).await?;
    let now = unix_secs();
    status.answered(page.seq, now);
    let started = match at {
        // The upstream's table was replaced during the copy: start over.
        Some(_) if st.upstream.as_deref() != Some(page.store.as_str()) => {
            tracing::info!("the upstream's store changed during the snapshot; starting over");
            return Ok(fresh(st));
        }
        Some((_, seq, _)) => seq,
        None => {
            tracing::info!(
                upstream = follow.client.base(),
                "taking a snapshot of the upstream"
            );
            page.seq
        }
    };
    let entries = parse_entries(&page.entries)?;
    let files = parse_files(&page.files)?;
    let (stage, done) = match (kind, page.next) {
        (_, Some(next)) => (
            Stage::Snapshot {
                kind,
                seq: started,
                after: Some(next),
            },
            false,
        ),
        (SnapshotKind::Entries, None) => (
            Stage::Snapshot {
                kind: SnapshotKind::Files,
                seq: started,
                after: None,
            },
            false,
        ),
        (SnapshotKind::Files, None) => (
            Stage::Follow {
                seq: started,
                after: None,
            },
            true,
        ),
    };
    let next = FollowState {
        upstream: Some(page.store),
        stage,
        upstream_seq: page.seq,
        synced_at: Some(now),
        complete: st.complete || done,
        ..st
    };
    let rows = apply(shared, next.clone(), entries, files, Vec::new(), done).await?;
    status.applied_through(done.then_some(started), rows);
    if done {
        status.snapshot_done();
        status.set_stage(true, true);
        tracing::info!(
            upstream_seq = started,
            "snapshot of the upstream complete; following"
        );
    }
    Ok(next)
}

/// Applies one page of changes after the cursor `(seq, after)`.
async fn changes_page(
    shared: &Shared,
    follow: &Follow,
    status: &FollowStatus,
    st: FollowState,
    seq: u64,
    after: Option<String>,
) -> Result<FollowState, StepError> {
    let wait_ms = follow.wait.as_millis();
    let mut path = format!(
        "/v1/sync/changes?since={seq}&limit={}&wait_ms={wait_ms}",
        follow.page
    );
    if let Some(a) = &after {
        path.push_str(&format!("&after={}", crate::urlenc::encode_query_value(a)));
    }
    let timeout = follow.wait + follow.timeout;
    let page: SyncChanges = get(follow, status, &path, timeout, false).await?;
    let now = unix_secs();
    status.answered(page.seq, now);
    if page.reset || st.upstream.as_deref() != Some(page.store.as_str()) {
        tracing::warn!(
            cursor = seq,
            upstream_seq = page.seq,
            "the upstream cannot send the changes since the cursor (log pruned or store \
             replaced); taking a fresh snapshot, serving the mirror meanwhile"
        );
        return Ok(fresh(st));
    }
    let next = FollowState {
        stage: Stage::Follow {
            seq: page.through_seq,
            after: page.through_key.clone(),
        },
        upstream_seq: page.seq,
        synced_at: Some(now),
        ..st
    };
    let rows = if page.entries.is_empty() && page.files.is_empty() && page.deleted.is_empty() {
        let saved = next.clone();
        shared.call(move |s| s.save_follow_state(&saved)).await??;
        0
    } else {
        let entries = parse_entries(&page.entries)?;
        let files = parse_files(&page.files)?;
        apply(shared, next.clone(), entries, files, page.deleted, false).await?
    };
    // Complete through a sequence only when no key of it is left.
    status.applied_through(page.through_key.is_none().then_some(page.through_seq), rows);
    Ok(next)
}

fn parse_entries(views: &[crate::api::lookup::EntryView]) -> Result<Vec<Entry>, StepError> {
    views
        .iter()
        .map(|v| {
            let mut e = v.entry().map_err(|e| StepError::Answer(e.to_string()))?;
            // One tier further from where it was written.
            e.tier = e.tier.saturating_add(1);
            Ok(e)
        })
        .collect()
}

fn parse_files(views: &[FileView]) -> Result<Vec<(FileEntry, u8)>, StepError> {
    views
        .iter()
        .map(|v| {
            Ok((
                v.to_file().map_err(StepError::Answer)?,
                v.tier.saturating_add(1),
            ))
        })
        .collect()
}

/// Writes a page to the mirror with the next state in one transaction (ending a snapshot
/// with `sweep`: rows of older generations go), then wakes the local followers. Returns the
/// mirror rows that changed.
async fn apply(
    shared: &Shared,
    next: FollowState,
    entries: Vec<Entry>,
    files: Vec<(FileEntry, u8)>,
    deleted: Vec<String>,
    sweep: bool,
) -> Result<u64, StepError> {
    let seq_tx = shared.seq_tx.clone();
    let rows = shared
        .call(move |store| {
            let generation = next.generation;
            let (seq, rows) = store.write(|w| -> Result<(u64, u64), StepError> {
                let mut rows = 0u64;
                for e in &entries {
                    rows += u64::from(w.mirror_entry(e, generation)?);
                }
                for (f, tier) in &files {
                    rows += u64::from(w.mirror_file(f, *tier, generation)?);
                }
                for key in &deleted {
                    rows += u64::from(w.unmirror(key)?);
                }
                if sweep {
                    rows += w.sweep_mirror(generation)?;
                }
                w.set_follow_state(&next)?;
                Ok((w.seq(), rows))
            })?;
            publish(&seq_tx, seq);
            Ok::<_, StepError>(rows)
        })
        .await??;
    Ok(rows)
}
