//! The upstream tier in lookups: items with no local entry (a host: nor a path entry) are
//! asked of the upstream server in one go, and its answers take their place; when it cannot
//! be asked they stay untested and say `"upstream": "unavailable"`. Also what answered each
//! item, for the counters.

use std::sync::Arc;

use super::super::Shared;
use crate::api::lookup as wire;
use crate::repserver::metrics::Answer;
use crate::repserver::upstream::Misses;

/// A URL's or a host's item of a lookup answer, as the upstream tier and the counters see it.
pub(super) trait LookupItem: Sized {
    /// The answer type of the item.
    type Answer: Clone;
    /// The item's answer when it rests on no local entry (a host's: nor on a path entry).
    fn locally_untested(&self) -> Option<&Self::Answer>;
    /// The canonical form an answer is keyed by.
    fn canonical(answer: &Self::Answer) -> &str;
    /// Takes the upstream tier's answer in place of this one.
    fn take_upstream(&mut self, upstream: &Self::Answer);
    /// Says the upstream tier could not be asked.
    fn mark_unavailable(&mut self);
    /// The counter the item goes to.
    fn counted_as(&self) -> Answer;
}

/// What answered an item with `verdict` (`None`: a refused item).
pub(super) fn counted_as(verdict: Option<&wire::VerdictView>, untested: bool) -> Answer {
    match verdict {
        None => Answer::Error,
        Some(v) if v.tier == wire::Tier::Upstream => Answer::Upstream,
        Some(_) if untested => Answer::Untested,
        Some(_) => Answer::Listed,
    }
}

impl LookupItem for wire::UrlItem {
    type Answer = wire::UrlAnswer;
    fn locally_untested(&self) -> Option<&wire::UrlAnswer> {
        match self {
            wire::UrlItem::Answer(a) if a.verdict.is_untested() => Some(a),
            _ => None,
        }
    }
    fn canonical(answer: &wire::UrlAnswer) -> &str {
        &answer.canonical
    }
    fn take_upstream(&mut self, upstream: &wire::UrlAnswer) {
        if let wire::UrlItem::Answer(a) = self {
            let url = std::mem::take(&mut a.url);
            **a = wire::UrlAnswer {
                url,
                ..upstream.clone()
            };
            a.verdict.tier = wire::Tier::Upstream;
        }
    }
    fn mark_unavailable(&mut self) {
        if let wire::UrlItem::Answer(a) = self {
            a.verdict.upstream = Some(wire::UpstreamState::Unavailable);
        }
    }
    fn counted_as(&self) -> Answer {
        match self {
            wire::UrlItem::Answer(a) => counted_as(Some(&a.verdict), a.verdict.is_untested()),
            wire::UrlItem::Refused { .. } => Answer::Error,
        }
    }
}

impl LookupItem for wire::HostItem {
    type Answer = wire::HostAnswer;
    fn locally_untested(&self) -> Option<&wire::HostAnswer> {
        match self {
            wire::HostItem::Answer(a) if a.verdict.is_untested() && a.paths.is_empty() => Some(a),
            _ => None,
        }
    }
    fn canonical(answer: &wire::HostAnswer) -> &str {
        &answer.canonical
    }
    fn take_upstream(&mut self, upstream: &wire::HostAnswer) {
        if let wire::HostItem::Answer(a) = self {
            let host = std::mem::take(&mut a.host);
            **a = wire::HostAnswer {
                host,
                ..upstream.clone()
            };
            a.verdict.tier = wire::Tier::Upstream;
        }
    }
    fn mark_unavailable(&mut self) {
        if let wire::HostItem::Answer(a) = self {
            a.verdict.upstream = Some(wire::UpstreamState::Unavailable);
        }
    }
    fn counted_as(&self) -> Answer {
        match self {
            wire::HostItem::Answer(a) => counted_as(
                Some(&a.verdict),
                a.verdict.is_untested() && a.paths.is_empty(),
            ),
            wire::HostItem::Refused { .. } => Answer::Error,
        }
    }
}

/// Replaces locally untested answers with the upstream tier's, when there is one. Items the
/// upstream could not answer keep their untested answer and say `"upstream": "unavailable"`;
/// so do those of a server that follows its upstream without asking it while its mirror is
/// not yet a whole copy.
pub(super) async fn consult_upstream(
    shared: &Shared,
    urls: &mut [wire::UrlItem],
    hosts: &mut [wire::HostItem],
) {
    let Some(upstream) = &shared.upstream else {
        // A follower that does not ask, whose mirror is not a whole copy yet: an item it has
        // no entry for may well be listed upstream.
        if shared.follow.as_ref().is_some_and(|f| !f.is_complete()) {
            shared.stats.upstream_unavailable();
            merge_upstream(urls, &std::collections::HashMap::new(), true);
            merge_upstream(hosts, &std::collections::HashMap::new(), true);
        }
        return;
    };
    let misses = Misses {
        urls: misses(urls),
        hosts: misses(hosts),
    };
    if misses.urls.is_empty() && misses.hosts.is_empty() {
        return;
    }
    let answers = upstream.resolve(misses).await;
    if answers.unavailable {
        shared.stats.upstream_unavailable();
    }
    merge_upstream(urls, &answers.urls, answers.unavailable);
    merge_upstream(hosts, &answers.hosts, answers.unavailable);
}

/// The canonical forms of the items with a locally untested answer.
fn misses<T: LookupItem>(items: &[T]) -> Vec<String> {
    items
        .iter()
        .filter_map(T::locally_untested)
        .map(|a| T::canonical(a).to_owned())
        .collect()
}

/// Puts the upstream tier's answers in place of the locally untested items it answered;
/// marks the others unavailable when the upstream could not be asked.
fn merge_upstream<T: LookupItem>(
    items: &mut [T],
    found: &std::collections::HashMap<String, Arc<T::Answer>>,
    unavailable: bool,
) {
    for item in items.iter_mut() {
        let Some(local) = item.locally_untested() else {
            continue;
        };
        match found.get(T::canonical(local)) {
            Some(up) => item.take_upstream(up),
            None if unavailable => item.mark_unavailable(),
            None => {}
        }
    }
}
