//! URL and host lookups against the table: one URL's answer (verdict, TTL, explain), one
//! host's answer (verdict and the bounded path entries under it), `GET /v1/lookup?url=`, and
//! the items of a batch. A TTL is the configured one (untested: its own) capped by the expiry
//! of the entries the answer rests on.

use http::StatusCode;

use super::super::reply::ApiError;
use super::super::{ApiConfig, Shared};
use super::count;
use super::tier::{LookupItem, consult_upstream};
use crate::api::lookup as wire;
use crate::canon;
use crate::clock::unix_secs;
use crate::model::{RiskLevel, Verdict};
use crate::repserver::metrics::Kind;
use crate::repserver::store::{HostAnswer, Store};

/// The configured TTL of an answer: untested ones have their own.
fn ttl(config: &ApiConfig, v: &Verdict) -> u64 {
    if v.risk == RiskLevel::Untested {
        config.untested_ttl_secs
    } else {
        config.ttl_secs
    }
}

/// One URL's answer (run on the store thread): verdict, TTL and explain. A URL that does not
/// parse is a 400 ([`ApiError::bad_request`]), a store failure a 500.
fn answer_url(
    store: &Store,
    config: &ApiConfig,
    input: &str,
    now: i64,
) -> Result<wire::UrlAnswer, ApiError> {
    let url =
        canon::canonicalize(input).map_err(|e| ApiError::bad_request(format!("not a URL: {e}")))?;
    let verdict = store.lookup(&url, now)?;
    let matched = verdict
        .matched
        .iter()
        .filter_map(|k| store.get_any(k.as_str()).transpose())
        .collect::<Result<Vec<_>, _>>()?;
    let ttl_secs = capped_ttl(
        ttl(config, &verdict),
        matched.iter().map(|e| e.expires),
        now,
    );
    let view = wire::VerdictView::of(&verdict, ttl_secs, wire::Tier::Local);
    Ok(wire::UrlAnswer {
        url: input.to_owned(),
        canonical: url.to_string(),
        explain: wire::Explain::of(&view, matched.iter().map(wire::EntryView::of).collect()),
        verdict: view,
    })
}

/// An answer is not cached beyond the expiry of an entry it rests on: `base` capped by the
/// time left until each of `expires` (unix seconds) at `now`.
pub(super) fn capped_ttl(base: u64, expires: impl Iterator<Item = Option<i64>>, now: i64) -> u64 {
    expires
        .flatten()
        .map(|x| u64::try_from(x.saturating_sub(now)).unwrap_or(0))
        .fold(base, u64::min)
}

/// One host's answer (run on the store thread). Its TTL is capped by the expiry of the
/// `host/` entries of its verdict and of the path entries sent with it.
fn answer_host(
    store: &Store,
    config: &ApiConfig,
    input: &str,
    a: &HostAnswer,
    now: i64,
) -> Result<wire::HostAnswer, ApiError> {
    let matched = a
        .verdict
        .matched
        .iter()
        .filter_map(|k| store.get_any(k.as_str()).transpose())
        .collect::<Result<Vec<_>, _>>()?;
    let expires = matched.iter().chain(&a.paths).map(|e| e.expires);
    let ttl_secs = capped_ttl(ttl(config, &a.verdict), expires, now);
    Ok(wire::HostAnswer {
        host: input.to_owned(),
        canonical: a.host.clone(),
        verdict: wire::VerdictView::of(&a.verdict, ttl_secs, wire::Tier::Local),
        matched: a
            .verdict
            .matched
            .iter()
            .map(|k| k.as_str().to_owned())
            .collect(),
        paths: a.paths.iter().map(wire::EntryView::of).collect(),
        truncated: a.truncated,
    })
}

/// `GET /v1/lookup?url=`: one URL's answer, combined with the upstream tier's when no local
/// `host/` entry matches it, counted.
pub(super) async fn lookup_one(shared: &Shared, url: String) -> Result<wire::UrlItem, ApiError> {
    let config = shared.config.clone();
    let answer = shared
        .read(move |store| answer_url(store, &config, &url, unix_secs()))
        .await??;
    let mut urls = [wire::UrlItem::Answer(Box::new(answer))];
    consult_upstream(shared, &mut urls, &mut []).await;
    count(shared, Kind::Url, urls.iter().map(LookupItem::counted_as));
    let [answer] = urls;
    Ok(answer)
}

/// The answers to a batch's URLs (run on a store thread); a URL that does not parse is an
/// error for that item, a store failure fails them all.
pub(super) fn answer_urls(
    store: &Store,
    config: &ApiConfig,
    urls: &[String],
    now: i64,
) -> Result<Vec<wire::UrlItem>, ApiError> {
    let mut out = Vec::with_capacity(urls.len());
    for u in urls {
        out.push(match answer_url(store, config, u, now) {
            Ok(a) => wire::UrlItem::Answer(Box::new(a)),
            Err(e) if e.status == StatusCode::BAD_REQUEST => wire::UrlItem::Refused {
                url: u.clone(),
                error: e.message,
            },
            Err(e) => return Err(e),
        });
    }
    Ok(out)
}

/// The answers to a batch's hosts (run on a store thread, one read for them all); a host
/// that does not parse is an error for that item, a store failure fails them all.
pub(super) fn answer_hosts(
    store: &Store,
    config: &ApiConfig,
    hosts: &[String],
    now: i64,
) -> Result<Vec<wire::HostItem>, ApiError> {
    let refs: Vec<&str> = hosts.iter().map(String::as_str).collect();
    let answers = store.lookup_hosts(&refs, now, config.host_path_limit)?;
    let mut out = Vec::with_capacity(answers.len());
    for (h, a) in hosts.iter().zip(&answers) {
        out.push(match a {
            Ok(a) => wire::HostItem::Answer(Box::new(answer_host(store, config, h, a, now)?)),
            Err(e) => wire::HostItem::Refused {
                host: h.clone(),
                error: format!("not a host: {e}"),
            },
        });
    }
    Ok(out)
}
