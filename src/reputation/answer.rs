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
//! asked one by one ([`HostAnswer::complete`] says so).

use serde_json::Value;

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

fn categories(v: &Value) -> Result<Vec<Category>, AnswerError> {
    v.as_array()
        .ok_or_else(|| bad("categories is not a list"))?
        .iter()
        .map(|c| {
            c.as_str()
                .and_then(|s| Category::parse(s).ok())
                .ok_or_else(|| bad("bad category"))
        })
        .collect()
}

fn score(v: &Value) -> Result<Option<Score>, AnswerError> {
    match v {
        Value::Null => Ok(None),
        v => v
            .as_u64()
            .and_then(|n| u8::try_from(n).ok())
            .and_then(Score::new)
            .map(Some)
            .ok_or_else(|| bad("bad score")),
    }
}

impl HostAnswer {
    /// Reads one item of a batch answer's `hosts` list. `now` stamps the entries (unix
    /// seconds).
    ///
    /// # Errors
    /// [`AnswerError`] for an item with an `error`, or one that does not have the fields a
    /// webrep server sends.
    pub fn from_json(v: &Value, now: i64) -> Result<HostAnswer, AnswerError> {
        if let Some(e) = v.get("error") {
            return Err(AnswerError(format!(
                "the server refused the host: {}",
                e.as_str().unwrap_or("?")
            )));
        }
        let ttl_secs = v
            .get("ttl_secs")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad("no ttl_secs"))?;
        let host_score = score(v.get("score").unwrap_or(&Value::Null))?;
        let matched = v
            .get("matched")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("no matched list"))?;
        let host_entry = match (host_score, matched.first().and_then(Value::as_str)) {
            (Some(s), Some(k)) => Some(Entry::new(
                Key::parse(k).map_err(|e| AnswerError(e.to_string()))?,
                s,
                categories(v.get("categories").unwrap_or(&Value::Null))?,
                Source::Manual,
                now,
            )),
            (None, _) => None,
            (Some(_), None) => return Err(bad("a score without a matched key")),
        };
        let mut paths = Vec::new();
        for p in v
            .get("paths")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("no paths list"))?
        {
            let key = p
                .get("key")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("path entry without a key"))?;
            let mut e = Entry::new(
                Key::parse(key).map_err(|e| AnswerError(e.to_string()))?,
                score(p.get("score").unwrap_or(&Value::Null))?
                    .ok_or_else(|| bad("path entry without a score"))?,
                categories(p.get("categories").unwrap_or(&Value::Null))?,
                Source::Manual,
                now,
            );
            e.expires = p.get("expires").and_then(Value::as_i64);
            paths.push(e);
        }
        Ok(HostAnswer {
            host_entry,
            paths,
            truncated: v.get("truncated").and_then(Value::as_bool).unwrap_or(false),
            ttl_secs,
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

/// Reads a single-URL answer (an item of a batch's `urls` list): the server's own verdict.
///
/// # Errors
/// [`AnswerError`].
pub fn url_verdict(v: &Value) -> Result<(Verdict, u64), AnswerError> {
    if let Some(e) = v.get("error") {
        return Err(AnswerError(format!(
            "the server refused the URL: {}",
            e.as_str().unwrap_or("?")
        )));
    }
    let ttl = v
        .get("ttl_secs")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("no ttl_secs"))?;
    let verdict = match score(v.get("score").unwrap_or(&Value::Null))? {
        None => Verdict::untested(),
        Some(s) => Verdict {
            risk: s.risk(),
            score: Some(s),
            categories: categories(v.get("categories").unwrap_or(&Value::Null))?,
            matched: v
                .get("explain")
                .and_then(|e| e.get("matched"))
                .and_then(Value::as_array)
                .map(|m| {
                    m.iter()
                        .filter_map(|e| e.get("key").and_then(Value::as_str))
                        .filter_map(|k| Key::parse(k).ok())
                        .collect()
                })
                .unwrap_or_default(),
        },
    };
    Ok((verdict, ttl))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canon::canonicalize;
    use crate::model::RiskLevel;
    use serde_json::json;

    fn answer() -> HostAnswer {
        HostAnswer::from_json(
            &json!({
                "host": "www.shop.test", "risk": "safe", "score": 90,
                "categories": ["shopping"], "ttl_secs": 300,
                "matched": ["www.shop.test/", "shop.test/"],
                "paths": [
                    { "key": "shop.test/dl/", "score": 10, "categories": ["malware"] },
                    { "key": "www.shop.test/a?b=1", "score": 60, "categories": ["spam"] },
                    { "key": "www.shop.test/old/", "score": 5, "categories": ["phishing"], "expires": 100 },
                ],
                "truncated": false,
            }),
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
        let a = HostAnswer::from_json(
            &json!({ "risk": "untested", "score": null, "categories": [], "ttl_secs": 60,
                     "matched": [], "paths": [], "truncated": false }),
            0,
        )
        .unwrap();
        let v = a.verdict(&canonicalize("http://x.test/").unwrap(), 0);
        assert_eq!(v.risk, RiskLevel::Untested);
        for bad in [
            json!({ "error": "not a host" }),
            json!({ "score": 5 }),
            json!({ "score": 500, "ttl_secs": 1, "matched": ["a.test/"], "paths": [] }),
            json!({ "score": 5, "ttl_secs": 1, "matched": [], "paths": [] }),
            json!({ "score": null, "ttl_secs": 1, "matched": [], "paths": [{ "key": "a.test/x/" }] }),
        ] {
            assert!(HostAnswer::from_json(&bad, 0).is_err(), "{bad}");
        }
    }
}
