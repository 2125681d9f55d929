//! `GET /v1/keys/hosts` (client token): the host part of every key in the table, one per
//! line after a first line `seq N` (`text/plain`), for a proxy's key summary: a host none
//! of whose lookup hosts is listed is untested here, so the proxy decides it without asking.
//! The list is as of change sequence `N`; the change stream from `N` names every key added
//! since.
//!
//! Offered only while this server's table answers every miss itself: not while it asks an
//! upstream tier about hosts it has no entry for, nor while a follower's mirror is not yet a
//! whole copy (then a miss here is not "untested" but "ask upstream" or "unknown"); those
//! get 409 and the proxy asks per host.
//!
//! Cost: one reader-thread job that scans the host index and the mirror (about a second
//! for millions of keys) and an answer of about 20 bytes per host, built whole.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt as _, Full};

use super::super::Shared;
use super::super::reply::{ApiError, Body, uncached};

/// Whether a miss in this server's table is its final answer (untested), so that a list
/// of its keys' hosts tells a proxy every host it would answer something else for.
fn authoritative(shared: &Shared) -> bool {
    let mirrored = shared.follow.as_ref().is_none_or(|f| f.is_complete());
    match &shared.upstream {
        Some(_) => shared.ask_until_mirrored && shared.follow.is_some() && mirrored,
        None => mirrored,
    }
}

/// `GET /v1/keys/hosts`.
pub(super) async fn key_hosts(shared: &Shared) -> Result<Response<Body>, ApiError> {
    if !authoritative(shared) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "this server does not answer every miss from its own table (it asks an upstream \
             tier, or its mirror is not a whole copy yet): no key summary",
        ));
    }
    let text = shared.read(|store| store.key_hosts()).await??;
    let body = Full::new(Bytes::from(text))
        .map_err(|never| match never {})
        .boxed_unsync();
    Ok(uncached(StatusCode::OK, "text/plain; charset=utf-8", body))
}
