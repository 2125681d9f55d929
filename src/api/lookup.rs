//! Lookups (`GET /v1/lookup?url=`, `POST /v1/lookup`): the request and the per-URL and
//! per-host answers, as the server writes them and as the proxy, an upper server tier and
//! the `webrep lookup` command read them (DESIGN.md §4, `docs/repserver.md`).
//!
//! Answers carry the table's values as their wire forms (a key, a category or a risk band as
//! text): the reader checks them with the model's own parsers before it uses them. Reading
//! tolerates fields it does not know, so a newer server's additions do not break an older
//! reader. Serializing cannot fail; a malformed answer is a serde error for the reader.

use serde::{Deserialize, Serialize};

use crate::model::{Category, Entry, Key, Score, Source, Verdict};

/// The explain part's statement of the combination rule.
pub const RULE: &str = "worst score of all matches; categories of the most specific match";

/// A batch lookup: URLs and hosts, answered in this order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// URLs as the client saw them.
    #[serde(default)]
    pub urls: Vec<String>,
    /// Host names or IP literals.
    #[serde(default)]
    pub hosts: Vec<String>,
}

/// A batch answer: one item per URL and per host of the request, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchAnswer {
    /// The URLs' answers.
    pub urls: Vec<UrlItem>,
    /// The hosts' answers.
    pub hosts: Vec<HostItem>,
}

/// Which tier's table answered: of a verdict, whether the server asked combined its upstream
/// tier's answer into it; of an entry, whose table it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// The server asked.
    #[default]
    Local,
    /// Its upstream tier, for an item it had no `host/` entry for.
    Upstream,
}

impl Tier {
    /// The wire form, as the command line prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Local => "local",
            Tier::Upstream => "upstream",
        }
    }

    /// Whether this is [`Tier::Local`] (an entry's tier is left out then).
    pub fn is_local(&self) -> bool {
        *self == Tier::Local
    }
}

/// The state of the upstream tier, when it matters to an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamState {
    /// The upstream tier could not be asked: the answer is the local (untested) one.
    Unavailable,
}

/// A table entry as answers show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryView {
    /// Its key (`host/`, `host/path/`, `host/path?query`).
    pub key: String,
    /// Its score, 0 to 100.
    pub score: u8,
    /// The score's risk band.
    pub risk: String,
    /// Its categories.
    pub categories: Vec<String>,
    /// `manual`, `escalation` or `feed:NAME`.
    pub source: String,
    /// First added, unix seconds.
    pub added: i64,
    /// Last changed, unix seconds.
    pub updated: i64,
    /// Stops applying, unix seconds.
    pub expires: Option<i64>,
    /// Free text.
    pub note: Option<String>,
    /// 0 (left out) for the answering server's own entry; 1 for one it learned from its
    /// upstream tier's own table, 2 from the tier above that, and so on.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tier: u8,
}

fn is_zero(v: &u8) -> bool {
    *v == 0
}

/// Why an entry of an answer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad entry {key:?} in an answer: {what}")]
pub struct EntryViewError {
    /// The entry's key as sent.
    pub key: String,
    /// What is wrong with it.
    pub what: String,
}

impl EntryView {
    /// The wire form of `e`, an entry of the server's own table.
    pub fn of(e: &Entry) -> EntryView {
        EntryView {
            key: e.key.as_str().to_owned(),
            score: e.score.get(),
            risk: e.score.risk().as_str().to_owned(),
            categories: category_names(&e.categories),
            source: e.source.to_stored(),
            added: e.added,
            updated: e.updated,
            expires: e.expires,
            note: e.note.clone(),
            tier: e.tier,
        }
    }

    /// The entry as the combination rule reads it, checked with the model's parsers: key,
    /// score, categories, expiry (and source, times and note as sent; a source this reader
    /// does not know reads as `manual`).
    ///
    /// # Errors
    /// [`EntryViewError`] when the key, the score or a category does not parse.
    pub fn entry(&self) -> Result<Entry, EntryViewError> {
        let bad = |what: String| EntryViewError {
            key: self.key.chars().take(200).collect(),
            what,
        };
        let key = Key::read(&self.key).map_err(|e| bad(e.to_string()))?;
        let score = Score::new(self.score).ok_or_else(|| bad("bad score".into()))?;
        let categories = self
            .categories
            .iter()
            .map(|c| Category::parse(c).map_err(|e| bad(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let source = Source::from_stored(&self.source).unwrap_or(Source::Manual);
        let mut e = Entry::new(key, score, categories, source, self.added);
        (e.updated, e.expires, e.note, e.tier) =
            (self.updated, self.expires, self.note.clone(), self.tier);
        Ok(e)
    }

    /// Whether the key is a `host/` key (no path, no query): the host-level verdict.
    pub fn is_host_level(&self) -> bool {
        self.key.find('/').is_some_and(|i| i + 1 == self.key.len())
    }
}

fn category_names(c: &[crate::model::Category]) -> Vec<String> {
    c.iter().map(|c| c.as_str().to_owned()).collect()
}

/// The verdict part of every answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerdictView {
    /// The risk band, or `untested`.
    pub risk: String,
    /// The worst score of the matches; `null` when untested.
    pub score: Option<u8>,
    /// The categories of the most specific match.
    pub categories: Vec<String>,
    /// How long the answer may be cached, in seconds.
    pub ttl_secs: u64,
    /// Which tier answered.
    pub tier: Tier,
    /// Set when the upstream tier was needed and could not be asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamState>,
    /// The answer comes from the upstream tier's cache of this server.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cached: bool,
}

impl VerdictView {
    /// The wire form of `v`, from `tier`, cacheable for `ttl_secs`.
    pub fn of(v: &Verdict, ttl_secs: u64, tier: Tier) -> VerdictView {
        VerdictView {
            risk: v.risk.as_str().to_owned(),
            score: v.score.map(Score::get),
            categories: category_names(&v.categories),
            ttl_secs,
            tier,
            upstream: None,
            cached: false,
        }
    }

    /// Whether nothing matched.
    pub fn is_untested(&self) -> bool {
        self.risk == crate::model::RiskLevel::Untested.as_str()
    }
}

/// How a URL's verdict came about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explain {
    /// Every matching entry, most specific first.
    pub matched: Vec<EntryView>,
    /// The combined risk band.
    pub risk: String,
    /// The combined score.
    pub score: Option<u8>,
    /// The combined categories.
    pub categories: Vec<String>,
    /// The combination rule, in words ([`RULE`]).
    pub rule: String,
}

impl Explain {
    /// The explain part of an answer with verdict `v`, resting on `matched`.
    pub fn of(v: &VerdictView, matched: Vec<EntryView>) -> Explain {
        Explain {
            matched,
            risk: v.risk.clone(),
            score: v.score,
            categories: v.categories.clone(),
            rule: RULE.to_owned(),
        }
    }
}

/// One URL's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UrlAnswer {
    /// The URL as asked.
    pub url: String,
    /// Its canonical form.
    pub canonical: String,
    /// The verdict.
    #[serde(flatten)]
    pub verdict: VerdictView,
    /// The entries behind it.
    pub explain: Explain,
}

/// One host's answer: the verdict of its `host/` entries and those of its parent domains,
/// and the path-level entries under them, so that the reader can decide every URL of the
/// host itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostAnswer {
    /// The host as asked.
    pub host: String,
    /// Its canonical form.
    pub canonical: String,
    /// The verdict for `http://host/`.
    #[serde(flatten)]
    pub verdict: VerdictView,
    /// The keys of the matching `host/` entries, most specific first.
    pub matched: Vec<String>,
    /// Path-prefix and exact entries on the host and its parents, bounded.
    pub paths: Vec<EntryView>,
    /// More path entries exist than were sent: ask per URL for this host.
    pub truncated: bool,
}

/// An item of a batch's `urls` list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum UrlItem {
    /// The URL's answer.
    Answer(Box<UrlAnswer>),
    /// A URL the server could not read.
    Refused {
        /// The URL as asked.
        url: String,
        /// Why.
        error: String,
    },
}

/// An item of a batch's `hosts` list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HostItem {
    /// The host's answer.
    Answer(Box<HostAnswer>),
    /// A host the server could not read.
    Refused {
        /// The host as asked.
        host: String,
        /// Why.
        error: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_read_back_as_written_and_refusals_are_told_apart() {
        let answer = UrlItem::Answer(Box::new(UrlAnswer {
            url: "http://A.test".into(),
            canonical: "http://a.test/".into(),
            verdict: VerdictView {
                risk: "untested".into(),
                score: None,
                categories: vec![],
                ttl_secs: 60,
                tier: Tier::Local,
                upstream: Some(UpstreamState::Unavailable),
                cached: false,
            },
            explain: Explain {
                matched: vec![],
                risk: "untested".into(),
                score: None,
                categories: vec![],
                rule: RULE.into(),
            },
        }));
        let refused = UrlItem::Refused {
            url: "::".into(),
            error: "not a URL".into(),
        };
        let text = serde_json::to_string(&[&answer, &refused]).unwrap();
        assert!(text.contains(r#""tier":"local""#), "{text}");
        assert!(text.contains(r#""upstream":"unavailable""#), "{text}");
        assert!(!text.contains("cached"), "{text}");
        let back: Vec<UrlItem> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, [answer, refused]);
    }

    #[test]
    fn entries_say_their_tier_only_when_upstream_and_read_back_into_the_model() {
        let mut e = EntryView::of(&Entry::new(
            Key::parse("a.test/dl/").unwrap(),
            Score::new(20).unwrap(),
            vec![Category::parse("malware").unwrap()],
            Source::Feed("urlhaus".into()),
            5,
        ));
        let text = serde_json::to_string(&e).unwrap();
        assert!(!text.contains("tier"), "{text}");
        e.tier = 1;
        let text = serde_json::to_string(&e).unwrap();
        assert!(text.contains(r#""tier":1"#), "{text}");
        assert_eq!(serde_json::from_str::<EntryView>(&text).unwrap(), e);
        let back = e.entry().unwrap();
        assert_eq!((back.key.as_str(), back.score.get()), ("a.test/dl/", 20));
        assert_eq!(back.source, Source::Feed("urlhaus".into()));
        assert!(!e.is_host_level());
        for (key, host_level) in [("a.test/", true), ("a.test/?q=1", false), ("", false)] {
            e.key = key.into();
            assert_eq!(e.is_host_level(), host_level, "{key:?}");
        }
        e.key = "a.test/".into();
        e.categories = vec!["Not A Category".into()];
        assert!(e.entry().is_err());
    }

    #[test]
    fn tiers_print_as_they_are_written() {
        for tier in [Tier::Local, Tier::Upstream] {
            assert_eq!(serde_json::to_value(tier).unwrap(), tier.as_str());
        }
    }
}
