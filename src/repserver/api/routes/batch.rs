//! `POST /v1/lookup`: a batch of URLs and hosts, answered in pieces of [`PIECE_ITEMS`]
//! items, each looked up in one store job and one snapshot and serialized only when the
//! client has taken the one before, so the server's memory does not grow with the batch.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;

use super::super::Shared;
use super::super::auth::{Role, authorize_or_drain};
use super::super::reply::{ApiError, Body, check_batch, parse_json, read_body, uncached};
use super::count;
use super::lookup::{answer_hosts, answer_urls};
use super::tier::{LookupItem, consult_upstream};
use crate::api::lookup as wire;
use crate::clock::unix_secs;
use crate::repserver::metrics::Kind;

/// Items of a batch lookup answered by one store job (in one snapshot) and sent as one piece
/// of the answer.
const PIECE_ITEMS: usize = 1000;

/// A run of consecutive items of one list of a batch lookup: `urls[start..end]`, or
/// `hosts[start..end]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Piece {
    hosts: bool,
    start: usize,
    end: usize,
}

/// The pieces of a batch of `urls` URLs and `hosts` hosts, at most `per_piece` items each:
/// the URLs first, then the hosts. An empty batch is one empty URL piece, so that every
/// answer has a first and a last piece.
fn plan_pieces(urls: usize, hosts: usize, per_piece: usize) -> Vec<Piece> {
    let per_piece = per_piece.max(1);
    let runs = |n: usize, hosts: bool| {
        (0..n).step_by(per_piece).map(move |start| Piece {
            hosts,
            start,
            end: (start + per_piece).min(n),
        })
    };
    let mut plan: Vec<Piece> = runs(urls, false).chain(runs(hosts, true)).collect();
    if plan.is_empty() {
        plan.push(Piece {
            hosts: false,
            start: 0,
            end: 0,
        });
    }
    plan
}

/// The bytes of one piece of the answer `{"urls":[...],"hosts":[...]}`: the brackets and
/// commas around its items that its place calls for (`last`: no piece follows;
/// `no_urls`: the batch has no URL, so a host piece opens the answer).
fn frame_piece<T: serde::Serialize>(
    piece: Piece,
    last: bool,
    no_urls: bool,
    items: &[T],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(items.len() * 512 + 32);
    if piece.start > 0 {
        out.push(b',');
    } else if !piece.hosts {
        out.extend_from_slice(b"{\"urls\":[");
    } else {
        if no_urls {
            out.extend_from_slice(b"{\"urls\":[");
        }
        out.extend_from_slice(b"],\"hosts\":[");
    }
    for (i, v) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Writing plain data into a `Vec` cannot fail.
        let _ = serde_json::to_writer(&mut out, v);
    }
    if last {
        out.extend_from_slice(if piece.hosts {
            b"]}"
        } else {
            b"],\"hosts\":[]}"
        });
    }
    out
}

/// The answers to one piece's items, looked up in one store job and one snapshot, checked
/// against the upstream tier and counted. A URL or host that does not parse is an error for
/// that item; a store failure fails the piece.
async fn answer_piece(
    shared: &Shared,
    batch: &Arc<wire::BatchRequest>,
    piece: Piece,
) -> Result<PieceItems, ApiError> {
    let (config, items) = (shared.config.clone(), batch.clone());
    let mut answers = shared
        .read(move |store| {
            store.snapshot(|store| {
                let now = unix_secs();
                if piece.hosts {
                    let hosts = &items.hosts[piece.start..piece.end];
                    answer_hosts(store, &config, hosts, now).map(PieceItems::Hosts)
                } else {
                    let urls = &items.urls[piece.start..piece.end];
                    answer_urls(store, &config, urls, now).map(PieceItems::Urls)
                }
            })
        })
        .await??;
    match &mut answers {
        PieceItems::Urls(urls) => {
            consult_upstream(shared, urls, &mut []).await;
            count(shared, Kind::Url, urls.iter().map(LookupItem::counted_as));
        }
        PieceItems::Hosts(hosts) => {
            consult_upstream(shared, &mut [], hosts).await;
            count(shared, Kind::Host, hosts.iter().map(LookupItem::counted_as));
        }
    }
    Ok(answers)
}

/// The answers of one piece of a batch lookup.
enum PieceItems {
    Urls(Vec<wire::UrlItem>),
    Hosts(Vec<wire::HostItem>),
}

/// `POST /v1/lookup`: one answer per URL and per host, in order, at most
/// [`ApiConfig::max_batch`] items. The answer is streamed in pieces of [`PIECE_ITEMS`] items:
/// a piece is looked up and serialized only when the client has taken the one before, so the
/// server holds one piece at a time whatever the batch size, and other requests' store jobs
/// run between pieces. The first piece is answered before the status goes out (a store that
/// fails at once is a 500, a full store queue a 503); either later cuts the answer off.
pub(super) async fn lookup_batch(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let req = authorize_or_drain(shared, req, Role::Client).await?;
    let body = read_body(shared, req).await?;
    let batch: wire::BatchRequest = parse_json(&body)?;
    drop(body);
    check_batch(shared, batch.urls.len() + batch.hosts.len())?;
    let plan: Arc<[Piece]> = plan_pieces(batch.urls.len(), batch.hosts.len(), PIECE_ITEMS).into();
    let no_urls = batch.urls.is_empty();
    let batch = Arc::new(batch);
    let answer = move |answers: &PieceItems, i: usize, plan: &[Piece]| {
        let last = i + 1 == plan.len();
        Bytes::from(match answers {
            PieceItems::Urls(items) => frame_piece(plan[i], last, no_urls, items),
            PieceItems::Hosts(items) => frame_piece(plan[i], last, no_urls, items),
        })
    };
    let first = answer(&answer_piece(shared, &batch, plan[0]).await?, 0, &plan);
    let shared = shared.clone();
    let rest = futures_util::stream::unfold(1, move |i| {
        let (shared, batch, plan) = (shared.clone(), batch.clone(), plan.clone());
        async move {
            let piece = *plan.get(i)?;
            Some(match answer_piece(&shared, &batch, piece).await {
                Ok(answers) => (Ok(answer(&answers, i, &plan)), i + 1),
                Err(e) => {
                    tracing::warn!(error = %e.message, "batch lookup cut off");
                    (Err(std::io::Error::other(e.message)), plan.len())
                }
            })
        }
    });
    let pieces =
        futures_util::StreamExt::chain(futures_util::stream::once(async move { Ok(first) }), rest);
    let pieces = futures_util::TryStreamExt::map_ok(pieces, http_body::Frame::data);
    Ok(uncached(
        StatusCode::OK,
        "application/json",
        http_body_util::StreamBody::new(pieces).boxed_unsync(),
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn pieces_of_a_batch_join_into_its_answer() {
        let item = |kind: &str, i: usize| json!({ kind: i });
        for (urls, hosts) in [
            (0, 0),
            (1, 0),
            (0, 1),
            (3, 0),
            (0, 7),
            (3, 3),
            (7, 10),
            (9, 3),
        ] {
            let plan = plan_pieces(urls, hosts, 3);
            assert!(plan.iter().all(|p| p.end > p.start || urls + hosts == 0));
            let mut answer = Vec::new();
            for (i, p) in plan.iter().enumerate() {
                let kind = if p.hosts { "host" } else { "url" };
                let items: Vec<Value> = (p.start..p.end).map(|i| item(kind, i)).collect();
                answer.extend(frame_piece(*p, i + 1 == plan.len(), urls == 0, &items));
            }
            let answer: Value = serde_json::from_slice(&answer).unwrap_or_else(|e| {
                panic!("{urls}+{hosts}: {e}: {}", String::from_utf8_lossy(&answer))
            });
            let want = json!({
                "urls": (0..urls).map(|i| item("url", i)).collect::<Vec<_>>(),
                "hosts": (0..hosts).map(|i| item("host", i)).collect::<Vec<_>>(),
            });
            assert_eq!(answer, want, "{urls}+{hosts}");
        }
        assert_eq!(plan_pieces(2500, 0, PIECE_ITEMS).len(), 3);
    }
}
