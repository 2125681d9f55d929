//! `GET /healthz` (liveness, no token) and the metrics listener's `GET /metrics`
//! (Prometheus, no token, on its own listener).

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use super::super::Shared;
use crate::api::admin::{FollowHealth, Health};
use crate::clock::unix_secs;
use crate::repserver::metrics::Kind;

/// `GET /healthz`: up, the change sequence, the lookups answered, and how far behind the
/// upstream the mirror is when this server follows one, and the feedback events not yet
/// forwarded when it forwards them.
pub(super) fn healthz(shared: &Shared) -> Health {
    let mut h = Health::ok(
        *shared.seq.borrow(),
        shared.stats.looked_up(Kind::Url) + shared.stats.looked_up(Kind::Host),
    );
    h.upstream = shared.follow.as_ref().map(|f| {
        let f = f.snapshot();
        FollowHealth {
            state: f.stage.to_owned(),
            complete: f.complete,
            reachable: f.reachable,
            upstream_seq: f.upstream_seq,
            applied_seq: f.applied_seq,
            behind: f.behind(),
            last_answer_secs_ago: (f.last_answer > 0)
                .then(|| u64::try_from(unix_secs() - f.last_answer).unwrap_or(0)),
        }
    });
    if shared.forwarding {
        h.forward_behind = Some(shared.stats.forward_lag());
    }
    h
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
    let following = shared.follow.is_some();
    let counts = shared
        .read(move |store| {
            let mirrored = if following {
                Some(store.mirror_len()?)
            } else {
                None
            };
            Ok::<_, crate::repserver::store::StoreError>((store.len()?, mirrored))
        })
        .await
        .ok()
        .and_then(Result::ok);
    let follow = shared.follow.as_ref().map(|f| {
        let mut f = f.snapshot();
        f.mirrored = counts.and_then(|c| c.1);
        f
    });
    crate::metrics::scrape_answer(
        req.method(),
        crate::repserver::metrics::render(
            &shared.stats,
            &shared.conns,
            seq,
            counts.map(|c| c.0),
            follow,
        ),
    )
}
