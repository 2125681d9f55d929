//! The upstream tier in lookups: one answer across the tiers, and what answered each item,
//! for the counters.
//!
//! # What an answer combines
//! An item that no local `host/` entry decides (a host: none for the host or its parents; a
//! URL: none among its matches, whatever path entries matched) is asked of the upstream
//! server, all such items of a request in one go ([`Upstream::resolve`], cached there), and
//! its answer is combined with the local one:
//! - a host: the upstream's host verdict (and `matched` keys), and the path entries of both
//!   tiers, the local ones first; a local entry wins over the upstream's for the same key; at
//!   most `host_path_limit` of them, `truncated` when either tier's were or the merged list
//!   is longer;
//! - a URL: the combination rule ([`model::combine`]) over the local matches and the
//!   upstream's (its `explain.matched`), a local entry winning for its key again. That is the
//!   verdict a proxy computes for the URL from the host answer (the host verdict standing for
//!   the `host/` entries, plus the path entries), so the proxy and `webrep lookup` agree.
//!
//! A combined verdict says `"tier": "upstream"`; each entry that came from the upstream says
//! so too. Its TTL is the shorter of the upstream's and the local one (for a host's local path
//! entries: `ttl_secs` capped by their expiry).
//!
//! # What it costs
//! An item with a local `host/` entry never involves the upstream: deciding that is a look at
//! the item's verdict (a host) or matched keys (a URL). Combining is per request, on the
//! upstream's possibly cached answer, so local changes apply at once: for a host a merge of
//! two bounded lists; for a URL with local matches, reading the few matched entries of both
//! tiers back into the model and the combination rule over them (a URL without local matches
//! takes the upstream's answer as it is).
//!
//! # How it fails
//! When the upstream could not be asked, or its answer for an item cannot be combined (an
//! entry that does not parse, a score resting on no entry), the item keeps its local answer
//! and says `"upstream": "unavailable"`: a proxy reads that as no answer, never as a verdict
//! from the partial local one.
//!
//! [`Upstream::resolve`]: crate::repserver::upstream::Upstream::resolve

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::super::{ApiConfig, Shared};
use super::lookup::capped_ttl;
use crate::api::lookup as wire;
use crate::canon;
use crate::clock::unix_secs;
use crate::model;
use crate::repserver::metrics::Answer;
use crate::repserver::upstream::Misses;

/// What combining the tiers' answers for an item needs besides them.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tiering {
    /// Unix seconds: entries expired by then do not count.
    now: i64,
    /// The configured TTL of an answer resting on a local entry.
    ttl_secs: u64,
    /// At most this many path entries in a host answer.
    path_limit: usize,
}

impl Tiering {
    fn of(config: &ApiConfig, now: i64) -> Tiering {
        Tiering {
            now,
            ttl_secs: config.ttl_secs,
            path_limit: config.host_path_limit,
        }
    }
}

/// Why the upstream's answer for an item cannot be combined with the local one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Uncombinable(String);

/// The fields every answer has, as the tiering reads them.
pub(super) trait Fields {
    /// The verdict.
    fn verdict(&self) -> &wire::VerdictView;
    /// The verdict, to change.
    fn verdict_mut(&mut self) -> &mut wire::VerdictView;
    /// The canonical form the upstream's answers are keyed by.
    fn canonical(&self) -> &str;
}

/// A URL's or a host's answer, as the upstream tier sees it.
pub(super) trait TieredAnswer: Fields {
    /// Whether no local `host/` entry decides the answer, so that the upstream is asked.
    fn needs_upstream(&self) -> bool;
    /// Whether the answer rests on no entry at all.
    fn rests_on_nothing(&self) -> bool;
    /// Combines the upstream tier's answer for the same item into this local one.
    fn combine_upstream(&mut self, upstream: &Self, t: &Tiering) -> Result<(), Uncombinable>;
}

/// An item of a lookup answer (an answer, or a refusal), as the upstream tier and the counters
/// see it.
pub(super) trait LookupItem {
    /// The answer type of the item.
    type Answer: TieredAnswer;
    /// The answer; `None` for a refused item.
    fn answer(&self) -> Option<&Self::Answer>;
    /// The answer, to change.
    fn answer_mut(&mut self) -> Option<&mut Self::Answer>;

    /// The counter the item goes to.
    fn counted_as(&self) -> Answer {
        match self.answer() {
            None => Answer::Error,
            Some(a) if a.verdict().tier == wire::Tier::Upstream => Answer::Upstream,
            Some(a) if a.rests_on_nothing() => Answer::Untested,
            Some(_) => Answer::Listed,
        }
    }
}

/// [`LookupItem`] for a batch item enum and [`Fields`] for its answer: the same code for URLs
/// and hosts, whose wire types have the same shape.
macro_rules! lookup_item {
    ($item:ident, $answer:ident) => {
        impl LookupItem for wire::$item {
            type Answer = wire::$answer;
            fn answer(&self) -> Option<&wire::$answer> {
                match self {
                    wire::$item::Answer(a) => Some(a),
                    wire::$item::Refused { .. } => None,
                }
            }
            fn answer_mut(&mut self) -> Option<&mut wire::$answer> {
                match self {
                    wire::$item::Answer(a) => Some(a),
                    wire::$item::Refused { .. } => None,
                }
            }
        }

        impl Fields for wire::$answer {
            fn verdict(&self) -> &wire::VerdictView {
                &self.verdict
            }
            fn verdict_mut(&mut self) -> &mut wire::VerdictView {
                &mut self.verdict
            }
            fn canonical(&self) -> &str {
                &self.canonical
            }
        }
    };
}

lookup_item!(UrlItem, UrlAnswer);
lookup_item!(HostItem, HostAnswer);

impl TieredAnswer for wire::HostAnswer {
    fn needs_upstream(&self) -> bool {
        self.verdict.is_untested()
    }

    fn rests_on_nothing(&self) -> bool {
        self.verdict.is_untested() && self.paths.is_empty()
    }

    /// The upstream's host verdict with the path entries of both tiers.
    fn combine_upstream(&mut self, upstream: &Self, t: &Tiering) -> Result<(), Uncombinable> {
        let local = std::mem::take(&mut self.paths);
        let local_ttl = if local.is_empty() {
            u64::MAX
        } else {
            capped_ttl(t.ttl_secs, local.iter().map(|e| e.expires), t.now)
        };
        let (paths, over) = merge_entries(local, &upstream.paths, t.path_limit);
        self.truncated = self.truncated || upstream.truncated || over;
        self.paths = paths;
        self.canonical.clone_from(&upstream.canonical);
        self.matched.clone_from(&upstream.matched);
        self.verdict.clone_from(&upstream.verdict);
        self.verdict.tier = wire::Tier::Upstream;
        self.verdict.ttl_secs = upstream.verdict.ttl_secs.min(local_ttl);
        Ok(())
    }
}

impl TieredAnswer for wire::UrlAnswer {
    fn needs_upstream(&self) -> bool {
        !self
            .explain
            .matched
            .iter()
            .any(wire::EntryView::is_host_level)
    }

    fn rests_on_nothing(&self) -> bool {
        self.verdict.is_untested()
    }

    /// The combination rule over the local matches and the upstream's.
    fn combine_upstream(&mut self, upstream: &Self, t: &Tiering) -> Result<(), Uncombinable> {
        if self.explain.matched.is_empty() {
            // Nothing local: the upstream's answer is the combination.
            let url = std::mem::take(&mut self.url);
            *self = wire::UrlAnswer {
                url,
                ..upstream.clone()
            };
            self.verdict.tier = wire::Tier::Upstream;
            for e in &mut self.explain.matched {
                e.tier = e.tier.saturating_add(1);
            }
            return Ok(());
        }
        if upstream.verdict.score.is_some() && upstream.explain.matched.is_empty() {
            return Err(Uncombinable("the upstream's verdict names no entry".into()));
        }
        let url = canon::canonicalize(&self.canonical)
            .map_err(|e| Uncombinable(format!("not a URL: {e}")))?;
        let local = self.explain.matched.clone();
        let (views, _) = merge_entries(local, &upstream.explain.matched, usize::MAX);
        let entries = views
            .iter()
            .map(wire::EntryView::entry)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Uncombinable(e.to_string()))?;
        let verdict = model::combine(&url, &entries, t.now);
        let matched = verdict
            .matched
            .iter()
            .filter_map(|k| entries.iter().position(|e| e.key == *k))
            .map(|i| views[i].clone())
            .collect();
        let ttl_secs = self.verdict.ttl_secs.min(upstream.verdict.ttl_secs);
        let mut view = wire::VerdictView::of(&verdict, ttl_secs, wire::Tier::Upstream);
        (view.upstream, view.cached) = (upstream.verdict.upstream, upstream.verdict.cached);
        self.explain = wire::Explain::of(&view, matched);
        self.verdict = view;
        Ok(())
    }
}

/// The entries of both tiers for one item: the local ones, then the upstream's whose key no
/// local entry has (marked as the upstream's), at most `limit` of them; `true` when some were
/// left out.
fn merge_entries(
    local: Vec<wire::EntryView>,
    upstream: &[wire::EntryView],
    limit: usize,
) -> (Vec<wire::EntryView>, bool) {
    let mut out = local;
    let local_keys: HashSet<&str> = out.iter().map(|e| e.key.as_str()).collect();
    let theirs: Vec<wire::EntryView> = upstream
        .iter()
        .filter(|e| !local_keys.contains(e.key.as_str()))
        // One more than fits tells that some were left out.
        .take(limit.saturating_sub(out.len()).saturating_add(1))
        .map(|e| wire::EntryView {
            tier: e.tier.saturating_add(1),
            ..e.clone()
        })
        .collect();
    out.extend(theirs);
    let over = out.len() > limit;
    out.truncate(limit);
    (out, over)
}

/// Combines the upstream tier's answers into the items no local `host/` entry (own or
/// mirrored) decides, when the server asks its upstream tier (a follower that mirrors
/// everything asks only until its mirror is a whole copy). Items it could not answer keep
/// their local answer and say `"upstream": "unavailable"`; so do the untested items of a
/// follower that cannot ask while its mirror is not yet a whole copy.
pub(super) async fn consult_upstream(
    shared: &Shared,
    urls: &mut [wire::UrlItem],
    hosts: &mut [wire::HostItem],
) {
    let mirrored = shared.follow.as_ref().is_some_and(|f| f.is_complete());
    let upstream = match &shared.upstream {
        // A follower with a whole copy that asks only until it has one.
        Some(_) if mirrored && shared.ask_until_mirrored => return,
        Some(u) => u,
        None => {
            // A follower that cannot ask, whose mirror is not a whole copy yet: an item it
            // has no entry for may well be listed upstream.
            if shared.follow.is_some() && !mirrored {
                shared.stats.upstream_unavailable();
                mark_unavailable(urls);
                mark_unavailable(hosts);
            }
            return;
        }
    };
    let misses = Misses {
        urls: misses(urls),
        hosts: misses(hosts),
    };
    if misses.urls.is_empty() && misses.hosts.is_empty() {
        return;
    }
    let answers = upstream.resolve(misses).await;
    let t = Tiering::of(&shared.config, unix_secs());
    let bad_urls = merge_upstream(urls, &answers.urls, answers.unavailable, &t);
    let bad_hosts = merge_upstream(hosts, &answers.hosts, answers.unavailable, &t);
    let bad = bad_urls.or(bad_hosts);
    if let Some(Uncombinable(why)) = &bad {
        upstream.warn_unusable(why);
    }
    if answers.unavailable || bad.is_some() {
        shared.stats.upstream_unavailable();
    }
}

/// The canonical forms of the items that need the upstream.
fn misses<T: LookupItem>(items: &[T]) -> Vec<String> {
    items
        .iter()
        .filter_map(T::answer)
        .filter(|a| a.needs_upstream())
        .map(|a| a.canonical().to_owned())
        .collect()
}

/// Marks every item that would need the upstream as answered without it.
fn mark_unavailable<T: LookupItem>(items: &mut [T]) {
    for answer in items.iter_mut().filter_map(T::answer_mut) {
        if answer.needs_upstream() {
            answer.verdict_mut().upstream = Some(wire::UpstreamState::Unavailable);
        }
    }
}

/// Combines the upstream tier's answers into the items that need it; marks those it did not
/// answer unavailable when the upstream could not be asked, and those whose answer cannot be
/// combined. Returns the first reason an answer could not be combined.
fn merge_upstream<T: LookupItem>(
    items: &mut [T],
    found: &HashMap<String, Arc<T::Answer>>,
    unavailable: bool,
    t: &Tiering,
) -> Option<Uncombinable> {
    let mut bad = None;
    for answer in items.iter_mut().filter_map(T::answer_mut) {
        if !answer.needs_upstream() {
            continue;
        }
        match found.get(answer.canonical()) {
            Some(up) => {
                if let Err(e) = answer.combine_upstream(up, t) {
                    answer.verdict_mut().upstream = Some(wire::UpstreamState::Unavailable);
                    bad.get_or_insert(e);
                }
            }
            None if unavailable => {
                answer.verdict_mut().upstream = Some(wire::UpstreamState::Unavailable);
            }
            None => {}
        }
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry as a server's answer shows it.
    fn entry(key: &str, score: u8, category: &str, tier: u8) -> wire::EntryView {
        wire::EntryView {
            key: key.into(),
            score,
            risk: "x".into(),
            categories: vec![category.into()],
            source: "manual".into(),
            added: 1,
            updated: 1,
            expires: None,
            note: None,
            tier,
        }
    }

    fn local(key: &str, score: u8, category: &str) -> wire::EntryView {
        entry(key, score, category, 0)
    }

    /// A verdict: untested without a score.
    fn verdict(score: Option<u8>, category: &str, ttl_secs: u64) -> wire::VerdictView {
        let v = match score.and_then(model::Score::new) {
            Some(s) => model::Verdict {
                risk: s.risk(),
                score: Some(s),
                categories: vec![model::Category::parse(category).unwrap()],
                matched: vec![],
            },
            None => model::Verdict::untested(),
        };
        wire::VerdictView::of(&v, ttl_secs, wire::Tier::Local)
    }

    fn host(
        v: wire::VerdictView,
        matched: &[&str],
        paths: Vec<wire::EntryView>,
    ) -> wire::HostAnswer {
        wire::HostAnswer {
            host: "A.test".into(),
            canonical: "a.test".into(),
            verdict: v,
            matched: matched.iter().map(|k| (*k).to_owned()).collect(),
            paths,
            truncated: false,
        }
    }

    fn url(u: &str, v: wire::VerdictView, matched: Vec<wire::EntryView>) -> wire::UrlAnswer {
        wire::UrlAnswer {
            url: u.into(),
            canonical: canon::canonicalize(u).unwrap().to_string(),
            explain: wire::Explain::of(&v, matched),
            verdict: v,
        }
    }

    const T: Tiering = Tiering {
        now: 1000,
        ttl_secs: 300,
        path_limit: 3,
    };

    fn keys(entries: &[wire::EntryView]) -> Vec<(&str, u8, u8)> {
        entries
            .iter()
            .map(|e| (e.key.as_str(), e.score, e.tier))
            .collect()
    }

    #[test]
    fn both_tiers_path_entries_merge_local_first_a_local_one_winning_within_the_bound() {
        let mine = vec![
            local("a.test/login/", 60, "phishing"),
            local("a.test/x/", 70, "spam"),
        ];
        let theirs = [
            local("a.test/login/", 10, "malware"),
            local("a.test/dl/", 20, "malware"),
            local("a.test/y/", 30, "malware"),
        ];
        let (all, over) = merge_entries(mine.clone(), &theirs, 10);
        assert!(!over);
        assert_eq!(
            keys(&all),
            [
                ("a.test/login/", 60, 0),
                ("a.test/x/", 70, 0),
                ("a.test/dl/", 20, 1),
                ("a.test/y/", 30, 1),
            ]
        );
        let (bounded, over) = merge_entries(mine, &theirs, 3);
        assert!(over);
        assert_eq!(bounded, all[..3]);
    }

    #[test]
    fn a_host_answer_takes_the_upstream_verdict_and_both_tiers_paths() {
        use wire::Tier::Upstream;
        let mut expiring = local("a.test/login/", 60, "phishing");
        expiring.expires = Some(T.now + 100);
        let mut mine = host(verdict(None, "", 60), &[], vec![expiring]);
        assert!(
            mine.needs_upstream(),
            "path entries alone do not decide a host"
        );
        let theirs = host(
            verdict(Some(5), "malware", 600),
            &["a.test/"],
            vec![
                local("a.test/login/", 90, "news"),
                local("a.test/dl/", 20, "malware"),
            ],
        );
        mine.combine_upstream(&theirs, &T).unwrap();
        assert_eq!(mine.host, "A.test", "the host as asked");
        assert_eq!(
            (
                mine.verdict.score,
                mine.verdict.tier,
                mine.matched.as_slice()
            ),
            (Some(5), Upstream, ["a.test/".to_owned()].as_slice())
        );
        assert_eq!(
            keys(&mine.paths),
            [("a.test/login/", 60, 0), ("a.test/dl/", 20, 1)]
        );
        assert!(!mine.truncated);
        assert_eq!(
            mine.verdict.ttl_secs, 100,
            "capped by the local entry's expiry"
        );
        // The bound holds over the merged list, and the upstream's truncation carries over.
        let mut mine = host(
            verdict(None, "", 60),
            &[],
            vec![local("a.test/a/", 60, "spam")],
        );
        mine.combine_upstream(&theirs, &Tiering { path_limit: 2, ..T })
            .unwrap();
        assert_eq!(
            keys(&mine.paths),
            [("a.test/a/", 60, 0), ("a.test/login/", 90, 1)]
        );
        assert!(mine.truncated);
        let mut theirs = theirs;
        theirs.truncated = true;
        let mut mine = host(verdict(None, "", 60), &[], vec![]);
        mine.combine_upstream(&theirs, &T).unwrap();
        assert!(mine.truncated);
        assert_eq!(
            mine.verdict.ttl_secs, 600,
            "no local entry: the upstream's TTL"
        );
        // A local `host/` entry decides alone.
        let listed = host(verdict(Some(90), "news", 300), &["a.test/"], vec![]);
        assert!(!listed.needs_upstream());
    }

    #[test]
    fn a_url_answer_is_the_combination_rule_over_both_tiers_matches() {
        use wire::Tier::Upstream;
        let u = "http://a.test/login/x";
        let mut mine = url(
            u,
            verdict(Some(60), "phishing", 300),
            vec![local("a.test/login/", 60, "phishing")],
        );
        assert!(
            mine.needs_upstream(),
            "a path entry alone does not decide a URL"
        );
        let theirs = url(
            u,
            verdict(Some(5), "malware", 200),
            vec![
                local("a.test/login/", 90, "news"),
                local("a.test/", 5, "malware"),
            ],
        );
        mine.combine_upstream(&theirs, &T).unwrap();
        // Worst score (the upstream's host entry); categories of the most specific match (the
        // local path entry, which beat the upstream's of the same key).
        assert_eq!(
            (
                mine.verdict.risk.as_str(),
                mine.verdict.score,
                mine.verdict.tier
            ),
            ("dangerous", Some(5), Upstream)
        );
        assert_eq!(mine.verdict.categories, ["phishing"]);
        assert_eq!(mine.verdict.ttl_secs, 200);
        assert_eq!(
            keys(&mine.explain.matched),
            [("a.test/login/", 60, 0), ("a.test/", 5, 1)]
        );
        assert_eq!(
            (mine.explain.score, &mine.explain.categories),
            (Some(5), &mine.verdict.categories)
        );
        // Nothing local: the upstream's answer as it is, for the URL as asked.
        let mut none = url("http://A.test/other", verdict(None, "", 60), vec![]);
        let theirs_other = url(
            "http://a.test/other",
            verdict(Some(5), "malware", 200),
            vec![local("a.test/", 5, "malware")],
        );
        none.combine_upstream(&theirs_other, &T).unwrap();
        assert_eq!(
            (none.url.as_str(), none.verdict.score),
            ("http://A.test/other", Some(5))
        );
        assert_eq!(keys(&none.explain.matched), [("a.test/", 5, 1)]);
        // A local `host/` entry decides alone.
        let listed = url(
            u,
            verdict(Some(90), "news", 300),
            vec![local("a.test/", 90, "news")],
        );
        assert!(!listed.needs_upstream());
    }

    #[test]
    fn an_upstream_answer_that_cannot_be_combined_leaves_the_item_unavailable() {
        let u = "http://a.test/login/x";
        let mine = url(
            u,
            verdict(Some(60), "phishing", 300),
            vec![local("a.test/login/", 60, "phishing")],
        );
        let unexplained = url(u, verdict(Some(5), "malware", 200), vec![]);
        let mut garbled = unexplained.clone();
        garbled.explain.matched = vec![local("a.test/", 5, "No Such")];
        for theirs in [unexplained, garbled] {
            let found: HashMap<String, Arc<wire::UrlAnswer>> =
                [(theirs.canonical.clone(), Arc::new(theirs))].into();
            let mut items = [wire::UrlItem::Answer(Box::new(mine.clone()))];
            assert!(merge_upstream(&mut items, &found, false, &T).is_some());
            let a = items[0].answer().unwrap();
            assert_eq!(a.verdict.upstream, Some(wire::UpstreamState::Unavailable));
            assert_eq!(
                a.explain.matched, mine.explain.matched,
                "the local answer kept"
            );
        }
        // An upstream that could not be asked: a host with local path entries only is
        // unavailable too, never an answer from its local part alone.
        let mut items = [wire::HostItem::Answer(Box::new(host(
            verdict(None, "", 60),
            &[],
            vec![local("a.test/login/", 60, "phishing")],
        )))];
        assert!(merge_upstream(&mut items, &HashMap::new(), true, &T).is_none());
        let a = items[0].answer().unwrap();
        assert_eq!(a.verdict.upstream, Some(wire::UpstreamState::Unavailable));
        assert!(matches!(items[0].counted_as(), Answer::Listed));
    }
}
