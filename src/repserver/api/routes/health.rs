//! `GET /healthz` (liveness, no token) and the metrics listener's `GET /metrics`
//! (Prometheus, no token, on its own listener).

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use super::super::Shared;
use crate::api::admin::Health;
use crate::repserver::metrics::Kind;

/// `GET /healthz`: up, the change sequence, the lookups answered; when forwarding feedback
/// upstream, the events not yet forwarded.
pub(super) fn healthz(shared: &Shared) -> Health {
    let mut health = Health::ok(
        *shared.seq.borrow(),
        shared.stats.looked_up(Kind::Url) + shared.stats.looked_up(Kind::Host),
    );
    if shared.forwarding {
        health.forward_behind = Some(shared.stats.forward_lag());
    }
    health
}

/// The metrics listener: `GET /metrics`, nothing else.
pub(in crate::repserver::api) async fn metrics_answer(
    shared: &Shared,
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    if req.uri().path() != "/metrics" {
        return crate::metrics::reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: /metrics\n".into(),
        );
    }
    let seq = *shared.seq.borrow();
    let entries = shared
        .read(|store| store.len())
        .await
        .ok()
        .and_then(Result::ok);
    crate::metrics::scrape_answer(
        req.method(),
        crate::repserver::metrics::render(&shared.stats, &shared.conns, seq, entries),
    )
}
