//! The routes: [`handle`] answers one request, dispatching by path and method; the paths,
//! their metrics labels and their methods (the `Allow` of a 405) come from the one table
//! [`crate::repserver::metrics::PATHS`]. One file per group of paths:
//! - [`health`]: `GET /healthz` and the metrics listener's `GET /metrics`;
//! - [`lookup`] (one URL, and the answers of a batch's URLs and hosts), [`batch`]
//!   (`POST /v1/lookup`, streamed in pieces) and [`tier`] (the upstream tier's answers in
//!   place of local untested ones);
//! - [`entries`]: `POST /v1/entries`; [`import`]: `POST /v1/import`;
//! - [`changes`]: `GET /v1/changes` (long-poll) and `GET /v1/changes/stream` (SSE);
//! - [`files`]: file-hash lookups and writes; [`categories`];
//! - [`events`]: feedback events, their summary and escalations;
//! - [`sync`]: snapshot pages and changed values for the servers that follow this one;
//! - [`keys`]: `GET /v1/keys/hosts`, the hosts of the table's keys for a proxy's key summary.

mod batch;
mod categories;
mod changes;
mod entries;
mod events;
mod files;
mod health;
mod import;
mod keys;
mod lookup;
mod sync;
mod tier;

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::Shared;
use super::auth::{Role, authorize_or_drain, authorized_body, bearer_token};
use super::reply::{ApiError, Body, error_response, ok, query_param, read_body};
use crate::repserver::metrics::{Answer, Kind, Route};

pub(super) use health::metrics_answer;

/// Answers one request and counts it by route and status.
pub(super) async fn handle(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let started = std::time::Instant::now();
    let which = Route::of(req.uri().path());
    let response = match which {
        Route::ChangesStream => changes::change_stream(shared, &req),
        Route::Lookup if req.method() == Method::POST => batch::lookup_batch(shared, req).await,
        _ => route(shared, which, req).await,
    };
    let response = response.unwrap_or_else(|e| error_response(&e));
    shared
        .stats
        .request(which, response.status(), started.elapsed().as_secs_f64());
    response
}

/// The API's JSON routes (the streamed ones are [`handle`]'s): the handler for the path's
/// route and the method, its answer as JSON, else 405 with the path's methods, or 404.
async fn route(
    shared: &Shared,
    which: Route,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let query = req.uri().query().map(str::to_owned);
    let query = query.as_deref();
    let (client, admin) = (Role::Client, Role::Admin);
    Ok(match (which, &method) {
        (Route::Healthz, &Method::GET) => ok(&health::healthz(shared)),
        (Route::Lookup, &Method::GET) => {
            authorize_or_drain(shared, req, client).await?;
            let url = query_param(query, "url")?
                .ok_or_else(|| ApiError::bad_request("missing query parameter `url`"))?;
            ok(&lookup::lookup_one(shared, url).await?)
        }
        (Route::Entries, &Method::POST) => {
            let body = authorized_body(shared, req, admin).await?;
            ok(&entries::write_entries(shared, &body).await?)
        }
        (Route::Changes, &Method::GET) => {
            authorize_or_drain(shared, req, client).await?;
            ok(&changes::changes(shared, query).await?)
        }
        (Route::Import, &Method::POST) => {
            let req = authorize_or_drain(shared, req, admin).await?;
            ok(&import::import_feed(shared, req).await?)
        }
        (Route::Files, &Method::GET) => {
            authorize_or_drain(shared, req, client).await?;
            ok(&files::get_file(shared, query).await?)
        }
        (Route::Files, &Method::POST) => {
            let body = authorized_body(shared, req, admin).await?;
            ok(&files::write_files(shared, &body).await?)
        }
        (Route::FilesLookup, &Method::POST) => {
            let body = authorized_body(shared, req, client).await?;
            ok(&files::lookup_files(shared, &body).await?)
        }
        (Route::Categories, &Method::GET) => {
            authorize_or_drain(shared, req, client).await?;
            ok(&shared.call(|store| categories::categories(store)).await?)
        }
        (Route::Categories, &Method::POST) => {
            let body = authorized_body(shared, req, admin).await?;
            ok(&categories::define_categories(shared, &body).await?)
        }
        (Route::Events, &Method::POST) => {
            let req = authorize_or_drain(shared, req, client).await?;
            let reporter = bearer_token(&req).map(crate::repserver::events::reporter_id);
            let body = read_body(shared, req).await?;
            ok(&events::ingest_events(shared, &body, reporter).await?)
        }
        (Route::Events, &Method::GET) => {
            authorize_or_drain(shared, req, admin).await?;
            ok(&events::list_events(shared, query).await?)
        }
        (Route::FeedbackSummary, &Method::GET) => {
            authorize_or_drain(shared, req, admin).await?;
            ok(&events::feedback_summary(shared, query).await?)
        }
        // One route, two paths: the list and the revert.
        (Route::Escalations, &Method::GET) if path == "/v1/escalations" => {
            authorize_or_drain(shared, req, admin).await?;
            ok(&shared.read(|store| store.escalations()).await??)
        }
        (Route::Escalations, &Method::POST) if path == "/v1/escalations/revert" => {
            let body = authorized_body(shared, req, admin).await?;
            ok(&events::revert_escalation(shared, &body).await?)
        }
        (Route::SyncSnapshot, &Method::GET) => {
            authorize_or_drain(shared, req, client).await?;
            ok(&sync::snapshot(shared, query).await?)
        }
        (Route::SyncChanges, &Method::GET) => {
            authorize_or_drain(shared, req, client).await?;
            ok(&sync::changes(shared, query).await?)
        }
        (Route::KeyHosts, &Method::GET) => {
            authorize_or_drain(shared, req, client).await?;
            keys::key_hosts(shared).await?
        }
        _ => return Err(no_route(&path, &method)),
    })
}

/// 405 with the methods of a path the API has, else 404.
fn no_route(path: &str, method: &Method) -> ApiError {
    match Route::allowed(path) {
        Some(allow) => ApiError {
            allow: Some(allow),
            ..ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method {method} not allowed; allowed: {allow}"),
            )
        },
        None => ApiError::new(StatusCode::NOT_FOUND, "no such path"),
    }
}

/// Counts looked-up items by what answered them (for `/metrics`).
pub(super) fn count(shared: &Shared, kind: Kind, answers: impl Iterator<Item = Answer>) {
    let mut n = [0u64; 4];
    for answer in answers {
        n[answer as usize] += 1;
    }
    for (a, n) in [
        Answer::Listed,
        Answer::Untested,
        Answer::Upstream,
        Answer::Error,
    ]
    .into_iter()
    .zip(n)
    {
        shared.stats.items(kind, a, n);
    }
}
