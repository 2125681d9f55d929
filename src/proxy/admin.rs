//! The admin listener's routes (`admin.listen`, off by default; keep it on loopback):
//! Prometheus `/metrics` and the same counters as JSON on `/stats` ([`super::metrics`]), both
//! without a token, and the token-protected admin API (`admin.token_file`): explain a
//! decision, reload (policy, users and groups files), cache stats and purge. What reveals
//! traffic is served here, never on the proxy port.
//!
//! # Where it sits
//! Outside the request path, on its own listener. Explain asks the filter's side-effect-free
//! [`Filter::decide`](super::filter::Filter::decide) path, so it counts and reports nothing.
//!
//! # What it costs
//! Per admin request: a constant-time token comparison, then the route's own work (a scrape,
//! one decision with at most one reputation lookup, a reload, a cache walk).
//!
//! # How it fails
//! Every failure is a JSON `{"error": ...}` with its status: 403 without `admin.token_file`,
//! 401 for a missing or wrong token, 409 with filtering off, 400 for bad parameters, 405 for
//! the wrong method, 404 for an unknown path.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::ProxyState;
use super::filter::Filter;
use super::metrics::{registry, stats};

/// Serves `/metrics` and the admin API on `listener` until `shutdown`. The metrics registry
/// is built here, once, and only encoded per scrape.
pub async fn serve_admin(
    listener: TcpListener,
    state: Arc<ProxyState>,
    shutdown: CancellationToken,
) {
    let metrics = Arc::new(registry(state.clone()));
    crate::metrics::serve(listener, shutdown, move |req| {
        let (state, metrics) = (state.clone(), metrics.clone());
        async move {
            if req.uri().path() == "/metrics" {
                let text = crate::metrics::encode(&metrics);
                return crate::metrics::scrape_answer(req.method(), text);
            }
            let token = state.admin_token.load_full();
            answer(&state, token.as_deref().map(String::as_str), req).await
        }
    })
    .await;
}

fn json(status: StatusCode, v: &serde_json::Value) -> Response<Full<Bytes>> {
    crate::metrics::reply(status, "application/json", format!("{v}\n"))
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json(status, &serde_json::json!({ "error": message }))
}

/// The value of query parameter `name`, percent-decoded (`None` when absent or not valid
/// percent-encoded UTF-8).
fn param(query: Option<&str>, name: &str) -> Option<String> {
    crate::urlenc::query_param(query, name).ok()?
}

/// Constant-time comparison of the bearer token.
fn authorized(req: &Request<Incoming>, token: &str) -> bool {
    let Some(given) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    crate::secrets::token_eq(given, token)
}

/// The admin listener's routes besides `/metrics` ([`serve_admin`]): `/stats` (no token), and with the `admin.token_file`
/// token: `GET /v1/explain?url=U[&client=IP][&user=NAME][&time=RFC3339]` (what the proxy
/// would decide for that request at that time, default now), `POST /v1/reload` ([`super::ProxyState::reload`]), `GET /v1/cache` (entries) and
/// `POST /v1/cache/purge` (drop every cached answer).
async fn answer(
    state: &ProxyState,
    token: Option<&str>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let (method, path) = (req.method().as_str(), req.uri().path());
    if path == "/stats" {
        return match method {
            "GET" => json(StatusCode::OK, &stats(state)),
            _ => error(StatusCode::METHOD_NOT_ALLOWED, "GET only"),
        };
    }
    if !path.starts_with("/v1/") {
        return error(
            StatusCode::NOT_FOUND,
            "not found: /metrics, /stats, /v1/explain, /v1/reload, /v1/cache, /v1/cache/purge",
        );
    }
    let Some(token) = token else {
        return error(
            StatusCode::FORBIDDEN,
            "the admin API is off: set admin.token_file",
        );
    };
    if !authorized(&req, token) {
        return error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong `Authorization: Bearer` token",
        );
    }
    let Some(filter) = &state.filter else {
        return error(
            StatusCode::CONFLICT,
            "filtering is off (policy.enabled: false): nothing to explain, reload or purge",
        );
    };
    match (method, path) {
        ("GET", "/v1/explain") => explain(filter, req.uri().query()).await,
        ("POST", "/v1/reload") => {
            let r = state.reload().await;
            let status = if r.errors.is_empty() {
                StatusCode::OK
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            json(status, &serde_json::json!(r))
        }
        ("GET", "/v1/cache") => json(StatusCode::OK, &filter.reputation.cache_stats()),
        ("POST", "/v1/cache/purge") => {
            filter.reputation.invalidate_all();
            json(StatusCode::OK, &serde_json::json!({ "purged": true }))
        }
        (_, "/v1/explain" | "/v1/cache") => error(StatusCode::METHOD_NOT_ALLOWED, "GET only"),
        (_, "/v1/reload" | "/v1/cache/purge") => error(StatusCode::METHOD_NOT_ALLOWED, "POST only"),
        _ => error(StatusCode::NOT_FOUND, "no such admin API path"),
    }
}

/// `GET /v1/explain?url=U[&client=IP][&user=NAME][&time=RFC3339]`: what the proxy would
/// decide for that request at that time (default now), from `127.0.0.1` by default.
async fn explain(filter: &Filter, q: Option<&str>) -> Response<Full<Bytes>> {
    let Some(url) = param(q, "url") else {
        return error(StatusCode::BAD_REQUEST, "missing query parameter `url`");
    };
    let client = match param(q, "client") {
        None => std::net::IpAddr::from([127, 0, 0, 1]),
        Some(c) => match c.parse() {
            Ok(ip) => ip,
            Err(_) => {
                return error(StatusCode::BAD_REQUEST, "`client` is not an IP address");
            }
        },
    };
    let user = param(q, "user");
    let at = match param(q, "time") {
        None => None,
        Some(t) => match t.parse::<jiff::Timestamp>() {
            Ok(t) => Some(t),
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "`time` is not an RFC 3339 time (e.g. 2026-03-04T08:30:00Z)",
                );
            }
        },
    };
    match filter.explain(&url, client, user.as_deref(), at).await {
        Ok(v) => json(StatusCode::OK, &v),
        Err(e) => error(StatusCode::BAD_REQUEST, &e),
    }
}
