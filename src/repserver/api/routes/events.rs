//! Feedback ([`crate::repserver::events`]): `POST /v1/events` (client; a bad event is refused
//! alone), and for admins `GET /v1/events`, `GET /v1/feedback/summary`, `GET /v1/escalations`
//! and `POST /v1/escalations/revert`.

use std::time::Duration;

use http::StatusCode;

use super::super::Shared;
use super::super::jobs::publish;
use super::super::reply::{ApiError, number_param, parse_json, query_param};
use crate::api::events::IngestReply;
use crate::api::feedback::{Revert, Reverted, StoredEvents, Summary};
use crate::clock::unix_secs;
use crate::model::Key;

/// `POST /v1/events`: stores the valid events of a batch (`{"events": [...]}`),
/// de-duplicated by token, proxy and id, then applies the escalation rules; answers an
/// [`IngestReply`] with one result per event. A bad event is refused alone; only a body that
/// is not a batch is a 400, and too many events a 413.
pub(super) async fn ingest_events(
    shared: &Shared,
    body: &[u8],
    reporter: Option<String>,
) -> Result<IngestReply, ApiError> {
    use crate::api::events::{BatchError, EventResult, EventStatus, parse_batch};
    let items = parse_batch(body, shared.config.max_batch).map_err(|e| match e {
        BatchError::TooMany { .. } => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
        BatchError::Malformed(m) => ApiError::bad_request(m),
    })?;
    let mut results = Vec::with_capacity(items.len());
    let mut events = Vec::with_capacity(items.len());
    for item in items {
        let error = match item.event {
            Ok(e) => {
                events.push(e);
                None
            }
            Err(e) => Some(e.to_string()),
        };
        results.push(EventResult {
            id: item.id,
            status: EventStatus::Rejected,
            error,
        });
    }
    let rejected = (results.len() - events.len()) as u64;
    let ingest = if events.is_empty() {
        crate::repserver::events::Ingest::default()
    } else {
        let rules = shared.escalation.load_full();
        let seq_tx = shared.seq_tx.clone();
        shared
            .call(move |store| {
                let r = store.ingest_events_from(reporter.as_deref(), &events, unix_secs(), &rules);
                if let Ok(crate::repserver::events::Ingest { seq: Some(seq), .. }) = &r {
                    publish(&seq_tx, *seq);
                }
                r
            })
            .await??
    };
    if ingest.accepted > 0 {
        shared.ingested.notify_one();
    }
    // The stored events' statuses fill the results that are not refusals, in order.
    let mut stored = ingest.statuses.iter();
    for r in results.iter_mut().filter(|r| r.error.is_none()) {
        r.status = stored.next().copied().unwrap_or(EventStatus::Accepted);
    }
    static REFUSED: crate::telemetry::LogLimiter = crate::telemetry::LogLimiter::new();
    if rejected > 0 && REFUSED.allow(Duration::from_secs(10)) {
        tracing::warn!(
            rejected,
            first = results.iter().find_map(|r| r.error.as_deref()),
            "feedback events refused (the others of the batch were stored)"
        );
    }
    shared.stats.events(
        ingest.accepted,
        ingest.duplicate,
        rejected,
        ingest.escalated.len() as u64,
    );
    Ok(IngestReply {
        accepted: ingest.accepted,
        duplicate: ingest.duplicate,
        escalated: ingest.escalated,
        rejected,
        results: Some(results),
    })
}

/// `GET /v1/events?kind=K&host=H&limit=N`: stored events, newest first.
pub(super) async fn list_events(
    shared: &Shared,
    query: Option<&str>,
) -> Result<StoredEvents, ApiError> {
    use crate::api::events::Kind;
    let kind = match query_param(query, "kind")? {
        None => None,
        Some(k) => Some(
            Kind::parse(&k).ok_or_else(|| ApiError::bad_request(format!("unknown kind {k:?}")))?,
        ),
    };
    let host = query_param(query, "host")?;
    let limit = number_param(query, "limit", 100, 100_000)? as usize;
    let events = shared
        .read(move |store| store.events(kind, host.as_deref(), limit))
        .await??;
    Ok(StoredEvents { events })
}

/// `GET /v1/feedback/summary?since_secs=S&limit=N`: the aggregates of the last S seconds.
pub(super) async fn feedback_summary(
    shared: &Shared,
    query: Option<&str>,
) -> Result<Summary, ApiError> {
    let since_secs = number_param(query, "since_secs", 86_400, 10 * 365 * 86_400)?;
    let limit = number_param(query, "limit", 20, 1000)? as usize;
    let since = unix_secs()
        .saturating_sub(i64::try_from(since_secs).unwrap_or(0))
        .saturating_mul(1000);
    Ok(shared
        .read(move |store| store.feedback_summary(since, limit))
        .await??)
}

/// `POST /v1/escalations/revert` with `{"key": "host/"}`.
pub(super) async fn revert_escalation(shared: &Shared, body: &[u8]) -> Result<Reverted, ApiError> {
    let r: Revert = parse_json(body)?;
    let key = Key::parse(&r.key).map_err(|e| ApiError::bad_request(format!("key: {e}")))?;
    let seq_tx = shared.seq_tx.clone();
    let shown = key.as_str().to_owned();
    let seq = shared
        .call(move |store| {
            let r = store.revert_escalation(&key);
            if let Ok(Some(seq)) = &r {
                publish(&seq_tx, *seq);
            }
            r
        })
        .await??;
    match seq {
        Some(seq) => Ok(Reverted {
            reverted: shown,
            seq,
        }),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no active escalation for {shown}"),
        )),
    }
}
