//! The change stream: `GET /v1/changes?since=N&wait_ms=M` (long-poll) and
//! `GET /v1/changes/stream?since=N` (server-sent events). Both wake on the sequence watch
//! channel that every commit publishes to; a follower holds a connection and a watch
//! receiver, no thread.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use tokio::sync::watch;

use super::super::Shared;
use super::super::auth::{Role, authorize};
use super::super::reply::{ApiError, Body, query_param, uncached};
use crate::api::changes::Changes;

/// `GET /v1/changes?since=N&wait_ms=M`: the keys changed after `since`, as soon as there are
/// any, else none after `wait_ms` (at most `max_wait_ms`) or at shutdown.
pub(super) async fn changes(shared: &Shared, query: Option<&str>) -> Result<Changes, ApiError> {
    let number = |name: &str| -> Result<u64, ApiError> {
        match query_param(query, name)? {
            None => Ok(0),
            Some(v) => v
                .parse()
                .map_err(|_| ApiError::bad_request(format!("`{name}` is not a number"))),
        }
    };
    let since = number("since")?;
    let wait = Duration::from_millis(number("wait_ms")?.min(shared.config.max_wait_ms));
    let limit = shared.config.max_change_keys;
    let mut rx = shared.seq.clone();
    let deadline = tokio::time::Instant::now() + wait;
    let _following = shared.stats.follower();
    loop {
        // Mark the current value seen before reading the store: a write after this point
        // wakes `changed()` below, so none is missed.
        let current = *rx.borrow_and_update();
        // `since` ahead of this store (replaced, or restored from an older copy) is answered
        // at once too: `truncated`, so the follower drops its cache now, not after the wait.
        if current != since || tokio::time::Instant::now() >= deadline {
            let c = shared
                .read(move |store| store.changes_since(since, limit))
                .await??;
            return Ok(c);
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return Ok(Changes::none(current)) },
            _ = tokio::time::sleep_until(deadline) => {}
            _ = shared.shutdown.cancelled() => return Ok(Changes::none(current)),
        }
    }
}

/// A comment line sent on an idle event stream so that proxies and clients see it alive.
const SSE_KEEPALIVE: Duration = Duration::from_secs(15);

/// `GET /v1/changes/stream?since=N`: the change stream as server-sent events. Each event is
/// `id: SEQ`, `event: changes`, `data: {"seq":..,"keys":[..],"truncated":..}` (the same JSON
/// as `/v1/changes`), sent as soon as a write commits; a `: keep-alive` comment every 15 s
/// when idle. A client that reconnects passes the last `id` as `since` (or `Last-Event-ID`).
/// The stream ends when the server shuts down.
pub(super) fn change_stream(
    shared: &Arc<Shared>,
    req: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    if req.method() != Method::GET {
        return Err(ApiError {
            allow: Some("GET"),
            ..ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed; allowed: GET",
            )
        });
    }
    authorize(shared, req, Role::Client)?;
    let last_event = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let since = match query_param(req.uri().query(), "since")?.or(last_event) {
        None => *shared.seq.borrow(),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request("`since` is not a number"))?,
    };
    struct State {
        shared: Arc<Shared>,
        rx: watch::Receiver<u64>,
        since: u64,
        first: bool,
        _following: crate::repserver::metrics::Following,
    }
    let state = State {
        _following: shared.stats.follower(),
        rx: shared.seq.clone(),
        shared: shared.clone(),
        since,
        first: true,
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        loop {
            let current = *st.rx.borrow_and_update();
            if current > st.since || (st.first && current < st.since) {
                st.first = false;
                let (since, limit) = (st.since, st.shared.config.max_change_keys);
                let c = match st
                    .shared
                    .read(move |store| store.changes_since(since, limit))
                    .await
                {
                    Ok(Ok(c)) => c,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "change stream: store failed");
                        return None;
                    }
                    Err(_) => return None,
                };
                st.since = c.seq;
                // Plain data: encoding cannot fail.
                let data = serde_json::to_string(&c).unwrap_or_default();
                let event = format!("id: {}\nevent: changes\ndata: {data}\n\n", c.seq);
                return Some((Ok(http_body::Frame::data(Bytes::from(event))), st));
            }
            if st.first {
                st.first = false;
                // Tell the client at once that the stream is open and where it stands.
                let event = format!(": open, seq {current}\n\n");
                return Some((Ok(http_body::Frame::data(Bytes::from(event))), st));
            }
            tokio::select! {
                r = st.rx.changed() => if r.is_err() { return None },
                () = tokio::time::sleep(SSE_KEEPALIVE) => {
                    return Some((Ok(http_body::Frame::data(Bytes::from_static(b": keep-alive\n\n"))), st));
                }
                () = st.shared.shutdown.cancelled() => return None,
            }
        }
    });
    Ok(uncached(
        StatusCode::OK,
        "text/event-stream",
        http_body_util::StreamBody::new(stream).boxed_unsync(),
    ))
}
