//! The reputation server's per-host answer as the proxy caches it, and the verdict for one URL
//! computed from it (pure: no I/O, the time is a parameter).
//!
//! A host answer (`POST /v1/lookup {"hosts": [...]}`, DESIGN.md §4) carries the combined
//! verdict of the `host/` entries of the host and its parent domains, and the path-level
//! entries keyed under them (bounded; `truncated` beyond). The verdict of a URL on that host
//! is the combination rule of DESIGN.md §3 over the host verdict (standing in for its most
//! specific `host/` entry, with the worst score of them all) and the path entries that are
//! among the URL's lookup expressions: so one answer serves every URL of the host, and a
//! request costs a cache hit and no network. A truncated answer cannot do that; its URLs are
//! asked one by one ([`HostAnswer::complete`] says so). A server with an upstream tier has
//! already combined both tiers into the answer (the upstream's host verdict, both tiers' path
//! entries) and answers each URL by the same rule, so the two ways agree.

use crate::api::lookup::{EntryView, HostItem, UpstreamState, UrlItem, VerdictView};
use crate::canon::CanonicalUrl;
use crate::model::{Category, Entry, Key, Score, Source, Verdict, combine};

/// Why an answer could not be read.
#[derive(Debug, Clone, thiserror::Error)]
#[error("bad reputation answer: {0}")]
pub struct AnswerError(pub String);

/// One host's answer.
#[derive(Debug, Clone)]
pub struct HostAnswer {
    /// The most specific `host/` entry standing for all of them (worst score, its
    /// categories); `None` when no `host/` entry matches.
    host_entry: Option<Entry>,
    /// Path-prefix and exact entries on the host and its parents.
    paths: Vec<Entry>,
    /// More path entries exist than were sent.
    pub truncated: bool,
    /// Seconds the server said the answer may be cached.
    pub ttl_secs: u64,
}

fn bad(what: &str) -> AnswerError {
    AnswerError(what.to_owned())
}

fn categories(names: &[String]) -> Result<Vec<Category>, AnswerError> {
    names
        .iter()
        .map(|c| Category::parse(c).map_err(|_| bad("bad category")))
        .collect()
}

fn score(n: Option<u8>) -> Result<Option<Score>, AnswerError> {
    n.map(|n| Score::new(n).ok_or_else(|| bad("bad score")))
        .transpose()
}

/// An answer the server could only give without its upstream tier, which it needed (it
/// had no `host/` entry of its own, whatever path entries it had): not "untested" but
/// "unknown", so the caller treats it as no answer (the policy's `reputation_unavailable`
/// fail mode, or a stale cached answer), never as a verdict from the partial answer.
fn without_upstream(v: &VerdictView) -> Result<(), AnswerError> {
    match v.upstream {
        Some(UpstreamState::Unavailable) => Err(bad(
            "the server's upstream tier could not be asked and it has no entry of its own",
        )),
        None => Ok(()),
    }
}

fn key(k: &str) -> Result<Key, AnswerError> {
    Key::read(k).map_err(|e| AnswerError(e.to_string()))
}

/// A path entry of a host answer, checked with the model's parsers.
fn path_entry(p: &EntryView) -> Result<Entry, AnswerError> {
    p.entry().map_err(|e| AnswerError(e.to_string()))
}

impl HostAnswer {
    /// Reads one item of a batch answer's `hosts` list. `now` stamps the entries (unix
    /// seconds).
    ///
    /// # Errors
    /// [`AnswerError`] for an item the server refused, or one whose keys, scores or
    /// categories do not parse.
    pub fn from_item(item: &HostItem, now: i64) -> Result<HostAnswer, AnswerError> {
        let a = match item {
            HostItem::Answer(a) => a,
            HostItem::Refused { error, .. } => {
                return Err(AnswerError(format!("the server refused the host: {error}")));
            }
        };
        without_upstream(&a.verdict)?;
        let host_entry = match (score(a.verdict.score)?, a.matched.first()) {
            (Some(s), Some(k)) => Some(Entry::new(
                key(k)?,
                s,
                categories(&a.verdict.categories)?,
                Source::Manual,
                now,
            )),
            (None, _) => None,
            (Some(_), None) => return Err(bad("a score without a matched key")),
        };
        let paths = a.paths.iter().map(path_entry).collect::<Result<_, _>>()?;
        Ok(HostAnswer {
            host_entry,
            paths,
            truncated: a.truncated,
            ttl_secs: a.verdict.ttl_secs,
        })
    }

    /// Whether this answer alone decides every URL of the host (no path entries were left
    /// out).
    pub fn complete(&self) -> bool {
        !self.truncated
    }

    /// The verdict for `url` (on this answer's host) at `now`.
    pub fn verdict(&self, url: &CanonicalUrl, now: i64) -> Verdict {
        combine(url, self.host_entry.iter().chain(&self.paths), now)
    }
}

/// Reads a single-URL answer (an item of a batch's `urls` list): the server's own verdict
/// and its TTL in seconds.
///
/// # Errors
/// [`AnswerError`].
pub fn url_verdict(item: &UrlItem) -> Result<(Verdict, u64), AnswerError> {
    let a = match item {
        UrlItem::Answer(a) => a,
        UrlItem::Refused { error, .. } => {
            return Err(AnswerError(format!("the server refused the URL: {error}")));
        }
    };
    without_upstream(&a.verdict)?;
    let verdict = match score(a.verdict.score)? {
        None => Verdict::untested(),
        Some(s) => Verdict {
            risk: s.risk(),
            score: Some(s),
            categories: categories(&a.verdict.categories)?,
            matched: a
                .explain
                .matched
                .iter()
                .filter_map(|e| Key::read(&e.key).ok())
                .collect(),
        },
    };
    Ok((verdict, a.verdict.ttl_secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canon::canonicalize;
    use crate::model::RiskLevel;
    use serde_json::json;

    /// Reads a host item as the proxy does: the wire type, then the model's checks.
    fn from_json(v: serde_json::Value, now: i64) -> Result<HostAnswer, AnswerError> {
        let item: HostItem = serde_json::from_value(v).map_err(|e| AnswerError(e.to_string()))?;
        HostAnswer::from_item(&item, now)
    }

    /// A path entry as the server writes it.
    fn path(key: &str, score: u8, category: &str, expires: Option<i64>) -> serde_json::Value {
        json!({ "key": key, "score": score, "risk": "x", "categories": [category],
                "source": "manual", "added": 1, "updated": 1, "expires": expires, "note": null })
    }

    /// A host answer as the server writes it, with `fields` replaced.
    fn host(fields: serde_json::Value) -> serde_json::Value {
        let mut v = json!({
            "host": "www.shop.test", "canonical": "www.shop.test", "risk": "untested",
            "score": null, "categories": [], "ttl_secs": 60, "tier": "local",
            "matched": [], "paths": [], "truncated": false,
        });
        for (k, f) in fields.as_object().unwrap() {
            v[k] = f.clone();
        }
        v
    }

    fn answer() -> HostAnswer {
        from_json(
            host(json!({
                "risk": "safe", "score": 90, "categories": ["shopping"], "ttl_secs": 300,
                "matched": ["www.shop.test/", "shop.test/"],
                "paths": [
                    path("shop.test/dl/", 10, "malware", None),
                    path("www.shop.test/a?b=1", 60, "spam", None),
                    path("www.shop.test/old/", 5, "phishing", Some(100)),
                ],
            })),
            50,
        )
        .unwrap()
    }

    #[test]
    fn one_host_answer_decides_every_url_of_the_host() {
        let a = answer();
        let v = |u: &str, now| a.verdict(&canonicalize(u).unwrap(), now);
        let safe = v("http://www.shop.test/index.html", 50);
        assert_eq!(
            (safe.risk, safe.score.map(Score::get)),
            (RiskLevel::Safe, Some(90))
        );
        assert_eq!(safe.categories[0].as_str(), "shopping");
        // A dangerous path prefix under a parent domain: the worst score wins; categories come
        // from the most specific match, and a longer host is more specific than a longer path.
        let dl = v("http://www.shop.test/dl/tool.exe", 50);
        assert_eq!(dl.score.map(Score::get), Some(10));
        assert_eq!(dl.categories[0].as_str(), "shopping");
        let dl = v("http://shop.test/dl/tool.exe", 50);
        assert_eq!(dl.score.map(Score::get), Some(10));
        assert_eq!(dl.categories[0].as_str(), "malware");
        // An exact URL matches only itself.
        assert_eq!(
            v("http://www.shop.test/a?b=1", 50).score.map(Score::get),
            Some(60)
        );
        assert_eq!(
            v("http://www.shop.test/a?b=2", 50).score.map(Score::get),
            Some(90)
        );
        // Expired path entries stop counting.
        assert_eq!(
            v("http://www.shop.test/old/x", 50).score.map(Score::get),
            Some(5)
        );
        assert_eq!(
            v("http://www.shop.test/old/x", 200).score.map(Score::get),
            Some(90)
        );
    }

    #[test]
    fn untested_and_malformed_answers() {
        let a = from_json(host(json!({})), 0).unwrap();
        let v = a.verdict(&canonicalize("http://x.test/").unwrap(), 0);
        assert_eq!(v.risk, RiskLevel::Untested);
        for bad in [
            json!({ "host": "a b", "error": "not a host" }),
            json!({ "score": 5 }),
            host(json!({ "score": 500, "matched": ["a.test/"] })),
            host(json!({ "score": 5 })),
            host(json!({ "paths": [{ "key": "a.test/x/" }] })),
            host(json!({ "paths": [path("", 5, "malware", None)] })),
            host(json!({ "score": 5, "matched": ["a.test/"], "categories": ["No Such"] })),
        ] {
            assert!(from_json(bad.clone(), 0).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_answer_given_without_a_needed_upstream_is_no_answer() {
        let down = host(json!({ "upstream": "unavailable" }));
        let e = from_json(down, 0).unwrap_err();
        assert!(e.0.contains("upstream tier could not be asked"), "{e}");
        // Local path entries do not make it an answer: they are not all the server needed.
        let partial = host(json!({
            "upstream": "unavailable", "paths": [path("www.shop.test/login/", 60, "spam", None)],
        }));
        assert!(from_json(partial, 0).is_err());
        let url = |extra: serde_json::Value| -> UrlItem {
            let mut v = json!({
                "url": "http://x.test/", "canonical": "http://x.test/", "risk": "untested",
                "score": null, "categories": [], "ttl_secs": 60, "tier": "local",
                "explain": { "matched": [], "risk": "untested", "score": null,
                             "categories": [], "rule": "" },
            });
            for (k, f) in extra.as_object().unwrap() {
                v[k] = f.clone();
            }
            serde_json::from_value(v).unwrap()
        };
        assert!(url_verdict(&url(json!({ "upstream": "unavailable" }))).is_err());
        let (v, ttl) = url_verdict(&url(json!({}))).unwrap();
        assert_eq!((v.risk, ttl), (RiskLevel::Untested, 60));
    }
}
