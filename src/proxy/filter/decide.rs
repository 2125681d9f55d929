//! The decision for one URL: lists and rules first (no lookup), then the reputation.
//!
//! [`Filter::decide`] has no side effects: it counts nothing, reports nothing and remembers
//! nothing, so the request path, the SNI check of an intercepted tunnel and the admin API's
//! explain can all ask it. The [`Decision`] it returns owns everything
//! [`Filter::record`](super::Filter::record) needs afterwards. It costs one canonicalization,
//! one or two policy evaluations and, when reputation matters, one cache lookup (a round trip
//! on a cold host). A URL that does not canonicalize is an error; a missing reputation is
//! decided by the policy's `reputation_unavailable` action.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::Filter;
use crate::canon::{CanonicalUrl, canonicalize};
use crate::model::{RiskLevel, Verdict};
use crate::policy::{Action, FileSettings, Policy, Reason, RequestFacts};
use crate::proxy::error::ProxyError;
use crate::reputation::CacheState;

/// What the policy decided for one request, and what it rested on.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The URL as the client wrote it.
    pub url: String,
    pub canonical: CanonicalUrl,
    pub client: IpAddr,
    pub user: Option<Arc<str>>,
    pub outcome: Outcome,
}

/// The policy's answer, owned (it outlives the policy snapshot it came from).
#[derive(Debug, Clone)]
pub struct Outcome {
    pub action: Action,
    pub reason: Reason,
    /// A warning the client already continued past (still valid): forwarded, counted as
    /// `continue`, and not reported again.
    pub continued: bool,
    pub rule_id: Option<String>,
    pub list_entry: Option<String>,
    /// The category the policy decided on, if one did.
    pub category: Option<String>,
    pub risk: Option<RiskLevel>,
    /// `None` for list and rule hits, or when no answer came.
    pub verdict: Option<Verdict>,
    /// The reputation cache's state; `None` when no lookup was made.
    pub cache: Option<CacheState>,
    /// The reputation source that answered.
    pub source: Option<Arc<str>>,
    /// Whether the policy's `feedback.report` asks for this decision.
    pub report: bool,
    /// The policy's `feedback.anonymize_clients` and `anonymize_users` for this request.
    pub anonymize: (bool, bool),
    /// How long a warn page's continue link stays valid.
    pub warn_continue: Duration,
    /// The policy's `files:` settings for this request (which downloads are scanned).
    pub files: Arc<FileSettings>,
}

impl Decision {
    /// Whether the request goes upstream: the policy forwards it, or the client continued
    /// past its warning.
    pub fn forwards(&self) -> bool {
        self.outcome.action.forwards() || self.outcome.continued
    }
}

impl Outcome {
    /// The reputation score the decision saw.
    pub fn score(&self) -> Option<u8> {
        self.verdict.as_ref().and_then(|v| v.score).map(|s| s.get())
    }
}

impl Filter {
    /// Decides a request for `url` (as the client wrote it) from `client` (and `user`), now.
    /// No counters, no feedback event: [`Filter::record`](super::Filter::record) does those,
    /// once per request.
    ///
    /// # Errors
    /// [`ProxyError::BadRequest`] for a URL that does not canonicalize.
    pub async fn decide(
        &self,
        url: &str,
        client: IpAddr,
        user: Option<&Arc<str>>,
    ) -> Result<Decision, ProxyError> {
        let canonical = canonicalize(url)
            .map_err(|_| ProxyError::BadRequest("the URL cannot be checked (not a valid URL)"))?;
        let policy = self.policy.snapshot();
        let groups = self.groups_of(user.map(|u| &**u));
        let facts = RequestFacts {
            url: &canonical,
            client,
            user: user.map(|u| &**u),
            groups: groups.as_deref().unwrap_or(&[]),
            now: jiff::Timestamp::now(),
        };
        let outcome = self.outcome(&policy, &facts).await;
        Ok(Decision {
            url: url.to_owned(),
            canonical,
            client,
            user: user.cloned(),
            outcome,
        })
    }

    /// The policy's decision for `facts`: lists and rule actions first, without any lookup;
    /// otherwise the reputation (stale answers past the policy's window count as none).
    /// Shared by [`Filter::decide`] and [`Filter::explain`], so both decide alike.
    async fn outcome(&self, policy: &Policy, facts: &RequestFacts<'_>) -> Outcome {
        let prepared = crate::policy::prepare(policy, facts);
        let (d, verdict, cache, source) = match prepared.settled() {
            Some(d) => (d, None, None, None),
            None => {
                let lookup = self.reputation.lookup(facts.url).await;
                let mut verdict = lookup.verdict;
                if lookup.cache == CacheState::Stale
                    && lookup
                        .stale_for
                        .is_some_and(|d| d > prepared.stale_window())
                {
                    verdict = None;
                }
                let d = prepared.decide(verdict.as_ref());
                (d, verdict, Some(lookup.cache), lookup.source)
            }
        };
        let continued = d.action == Action::Warn && self.continued(facts.client, facts.url.host());
        Outcome {
            action: d.action,
            reason: d.reason,
            continued,
            rule_id: d.rule_id.map(str::to_owned),
            list_entry: d.list_hit.map(|h| h.entry.to_owned()),
            category: d.category.map(|c| c.as_str().to_owned()),
            risk: d.risk,
            verdict,
            cache,
            source,
            report: d.report,
            anonymize: (d.anonymize_clients, d.anonymize_users),
            warn_continue: d.warn_continue,
            files: d.files.clone(),
        }
    }

    /// What the proxy would do with a request for `url` from `client` (and `user`) at `at`
    /// (default now: rule schedules depend on it; the reputation is today's), without doing
    /// it: the decision, the rule and list entry, the reputation and whether it
    /// was cached, and whether a CONNECT to the host would be intercepted. No counters, no
    /// feedback event. For the admin API.
    ///
    /// # Errors
    /// A URL that does not canonicalize.
    pub async fn explain(
        &self,
        url: &str,
        client: IpAddr,
        user: Option<&str>,
        at: Option<jiff::Timestamp>,
    ) -> Result<serde_json::Value, String> {
        let canonical = canonicalize(url).map_err(|e| format!("not a URL: {e}"))?;
        let policy = self.policy.snapshot();
        let now = at.unwrap_or_else(jiff::Timestamp::now);
        let groups = self.groups_of(user);
        let facts = RequestFacts {
            url: &canonical,
            client,
            user,
            groups: groups.as_deref().unwrap_or(&[]),
            now,
        };
        let o = self.outcome(&policy, &facts).await;
        let i = crate::policy::intercept(&policy, &facts, o.verdict.as_ref());
        Ok(serde_json::json!({
            "url": url,
            "canonical": canonical.as_str(),
            "client": client.to_string(),
            "user": user,
            "groups": groups.as_deref().unwrap_or(&[]),
            "action": o.action.as_str(),
            "reason": o.reason.as_str(),
            "continued": o.continued,
            "rule": o.rule_id,
            "list_entry": o.list_entry,
            "category": o.category,
            "risk": o.risk.map(RiskLevel::as_str),
            "score": o.score(),
            "categories": o.verdict.as_ref().map(|v| v.categories.iter().map(|c| c.as_str()).collect::<Vec<_>>()),
            "cache": o.cache.map_or("none", CacheState::as_str),
            "source": o.source.as_deref(),
            "intercept": i.mode == crate::policy::InterceptMode::Intercept,
            "time": now.to_string(),
            "policy_generation": policy.generation(),
        }))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::client::FollowRetry;
    use crate::policyfile::PolicyHandle;
    use crate::reputation::{Reputation, ReputationConfig};

    /// A filter over `policy` (YAML) with no reputation source: every lookup is unavailable.
    pub(in crate::proxy::filter) fn filter(policy: &str) -> Filter {
        let policy = Policy::from_yaml(policy, "test.yaml").expect("test policy is valid");
        let reputation = Reputation::new(ReputationConfig {
            sources: Vec::new(),
            cache_entries: 100,
            max_stale: Duration::from_secs(60),
            retry_after: Duration::from_secs(1),
            follow_retry: FollowRetry::default(),
            key_summary_max_bytes: None,
        });
        Filter::new(
            Arc::new(reputation),
            PolicyHandle::with_policy("test.yaml", policy),
        )
    }

    const LISTS: &str = "lists:\n  blocked: [bad.example]\n  approved: [good.example]\nreputation_unavailable:\n  action: warn\n";

    fn me() -> IpAddr {
        [192, 0, 2, 7].into()
    }

    #[tokio::test]
    async fn a_blocked_list_entry_decides_without_a_lookup() {
        let f = filter(LISTS);
        let d = f
            .decide("http://www.bad.example/x", me(), None)
            .await
            .unwrap();
        assert_eq!(d.outcome.action, Action::Block);
        assert_eq!(d.outcome.reason, Reason::Blocked);
        assert_eq!(d.outcome.list_entry.as_deref(), Some("bad.example"));
        assert_eq!(d.outcome.cache, None);
        assert!(!d.forwards());
        assert_eq!(d.url, "http://www.bad.example/x");
        assert_eq!(d.canonical.host(), "www.bad.example");
    }

    #[tokio::test]
    async fn an_approved_entry_forwards_without_a_lookup() {
        let f = filter(LISTS);
        let d = f.decide("http://good.example/", me(), None).await.unwrap();
        assert_eq!(
            (d.outcome.action, d.outcome.reason),
            (Action::Allow, Reason::Approved)
        );
        assert_eq!(d.outcome.cache, None);
        assert!(d.forwards());
    }

    #[tokio::test]
    async fn no_reputation_answer_is_decided_by_the_fail_mode() {
        let f = filter(LISTS);
        let d = f.decide("http://other.example/", me(), None).await.unwrap();
        assert_eq!(
            (d.outcome.action, d.outcome.reason),
            (Action::Warn, Reason::ReputationUnavailable)
        );
        assert_eq!(d.outcome.cache, Some(CacheState::Unavailable));
        assert!(!d.forwards());
    }

    #[tokio::test]
    async fn a_continued_warning_forwards() {
        let f = filter(LISTS);
        let until = std::time::SystemTime::now() + Duration::from_secs(60);
        f.continues.insert((me(), "other.example".into()), until);
        let d = f.decide("http://other.example/", me(), None).await.unwrap();
        assert!(d.outcome.continued && d.forwards());
        // Another client has not continued.
        let d = f
            .decide("http://other.example/", [192, 0, 2, 8].into(), None)
            .await
            .unwrap();
        assert!(!d.outcome.continued && !d.forwards());
    }

    #[tokio::test]
    async fn a_url_that_does_not_canonicalize_is_a_bad_request() {
        let f = filter(LISTS);
        let e = f.decide("http://.../", me(), None).await.unwrap_err();
        assert!(matches!(e, ProxyError::BadRequest(_)), "{e:?}");
    }

    #[tokio::test]
    async fn deciding_counts_nothing_and_reports_nothing() {
        let f = filter(LISTS);
        for url in ["http://bad.example/", "http://other.example/"] {
            f.decide(url, me(), None).await.unwrap();
            f.explain(url, me(), None, None).await.unwrap();
        }
        assert_eq!(f.stats.to_json(), FilterStats::default().to_json());
    }

    #[tokio::test]
    async fn explain_decides_as_decide_does() {
        let f = filter(LISTS);
        let d = f.decide("http://bad.example/a", me(), None).await.unwrap();
        let e = f
            .explain("http://bad.example/a", me(), None, None)
            .await
            .unwrap();
        assert_eq!(e["action"], d.outcome.action.as_str());
        assert_eq!(e["reason"], d.outcome.reason.as_str());
        assert_eq!(e["list_entry"], "bad.example");
        assert_eq!(e["cache"], "none");
    }

    use super::super::FilterStats;
}
