//! Recording a decision, once per request: the decision counters, the feedback event (its id
//! is the request's id, the ticket on the page) and, for a block or warn, the remembered
//! ticket a "report a mistake" click names; then the decision becomes what the request path
//! acts on, [`Allowed`] or a [`Refusal`].
//!
//! [`Filter::record`] takes the [`Decision`] by value, so a decision is recorded at most once;
//! the request path calls it right after [`Filter::decide`], before anything is sent upstream,
//! so a request whose upstream never answers is still counted and reported. It costs a few
//! relaxed atomics and, with feedback on and the policy asking, one event appended to the
//! spool (never waiting on the reputation server). It cannot fail: feedback counts and logs
//! its own losses.

use std::net::IpAddr;
use std::sync::Arc;

use super::Filter;
use super::decide::Decision;
use super::pages::{PageFormat, Refusal};
use super::tokens::CONTINUE_PATH;
use crate::accesslog::{Decided, RequestId};
use crate::api::events::Kind;
use crate::canon::canonicalize;
use crate::feedback::Feedback;
use crate::model::{RiskLevel, Verdict};
use crate::policy::{Action, Reason, RequestFacts, evaluate};
use crate::reputation::CacheState;

/// Counts of decisions by action and by reputation cache state: relaxed atomics, a few
/// nanoseconds per request.
#[derive(Debug, Default)]
pub struct FilterStats {
    /// allow, monitor, warn, continue, block.
    pub actions: [std::sync::atomic::AtomicU64; 5],
    /// hit, miss, stale, unavailable, none (decided by a list or rule).
    pub cache: [std::sync::atomic::AtomicU64; 5],
    /// By reason, in the order of [`crate::policy::Reason::ALL`].
    pub reasons: [std::sync::atomic::AtomicU64; crate::policy::Reason::ALL.len()],
}

impl FilterStats {
    const ACTIONS: [&'static str; 5] = ["allow", "monitor", "warn", "continue", "block"];
    const CACHE: [&'static str; 5] = ["hit", "miss", "stale", "unavailable", "none"];

    fn count(&self, d: &Decided) {
        use std::sync::atomic::Ordering::Relaxed;
        if let Some(i) = Self::ACTIONS.iter().position(|a| *a == d.action) {
            self.actions[i].fetch_add(1, Relaxed);
        }
        if let Some(i) = Self::CACHE.iter().position(|c| *c == d.cache) {
            self.cache[i].fetch_add(1, Relaxed);
        }
        if let Some(i) = crate::policy::Reason::ALL
            .iter()
            .position(|r| r.as_str() == d.reason)
        {
            self.reasons[i].fetch_add(1, Relaxed);
        }
    }

    /// `{"actions": {"allow": n, ...}, "cache": {"hit": n, ...}}`.
    pub fn to_json(&self) -> serde_json::Value {
        use std::sync::atomic::Ordering::Relaxed;
        let map = |names: &[&str], v: &[std::sync::atomic::AtomicU64]| {
            names
                .iter()
                .zip(v)
                .map(|(n, c)| ((*n).to_owned(), serde_json::Value::from(c.load(Relaxed))))
                .collect::<serde_json::Map<_, _>>()
        };
        serde_json::json!({
            "actions": map(&Self::ACTIONS, &self.actions),
            "cache": map(&Self::CACHE, &self.cache),
            "reasons": map(
                &crate::policy::Reason::ALL.map(crate::policy::Reason::as_str),
                &self.reasons
            ),
        })
    }
}

/// What an allowed request was decided on (for the interception decision of a CONNECT).
#[derive(Debug)]
pub struct Allowed {
    pub canonical: crate::canon::CanonicalUrl,
    /// `None` when decided by a list or rule without a lookup, or when no answer came.
    pub verdict: Option<Verdict>,
    /// The decision, for the access log.
    pub decided: Arc<Decided>,
    /// The policy's `feedback.anonymize_*` for this request (for later events about it).
    pub anonymize: (bool, bool),
    /// The policy's `files:` settings for this request (which downloads are scanned).
    pub files: Arc<crate::policy::FileSettings>,
}

impl Decision {
    /// The decision, for the access log (a continued warning logs `continue`).
    pub fn decided(&self) -> Decided {
        let o = &self.outcome;
        Decided {
            action: if o.continued {
                "continue"
            } else {
                o.action.as_str()
            },
            reason: o.reason.as_str(),
            rule: o.rule_id.as_deref().map(Into::into),
            cache: o.cache.map_or("none", CacheState::as_str),
            source: o.source.clone(),
            risk: o.risk.map(RiskLevel::as_str),
            score: o.score(),
        }
    }
}

impl Filter {
    /// Records `decision`, made for the request `id`: counts it, emits its feedback event
    /// when the policy reports it (with `id` as the event's id) and remembers a block or
    /// warn's ticket. Returns what the request path acts on: [`Allowed`], or the
    /// [`Refusal`] to answer in `format`.
    ///
    /// # Errors
    /// The [`Refusal`] for a request the policy does not forward.
    pub fn record(
        &self,
        decision: Decision,
        id: RequestId,
        format: PageFormat,
    ) -> Result<Allowed, Box<Refusal>> {
        let ticket = self
            .feedback
            .as_ref()
            .and_then(|fb| feedback_event(fb, &decision, id));
        if decision.forwards() {
            let decided = Arc::new(decision.decided());
            self.stats.count(&decided);
            let o = decision.outcome;
            return Ok(Allowed {
                canonical: decision.canonical,
                verdict: o.verdict,
                decided,
                anonymize: o.anonymize,
                files: o.files,
            });
        }
        let refusal = self.refusal(decision, ticket, format);
        self.stats.count(&refusal.decided());
        Err(Box::new(refusal))
    }

    /// The page's facts for a refused `decision`, with the report link of `ticket` and, for
    /// a warning, a signed continue link.
    fn refusal(&self, decision: Decision, ticket: Option<String>, format: PageFormat) -> Refusal {
        let Decision {
            url,
            canonical,
            client,
            outcome: o,
            ..
        } = decision;
        let continue_link = (o.action == Action::Warn).then(|| {
            let token = self.continue_token(client, canonical.host(), &url, o.warn_continue);
            format!("{CONTINUE_PATH}?token={token}")
        });
        Refusal {
            action: o.action,
            reason: o.reason,
            url,
            category: o.category.clone().or_else(|| {
                o.verdict
                    .as_ref()
                    .and_then(|v| v.categories.first())
                    .map(|c| c.as_str().to_owned())
            }),
            score: o.score(),
            rule_id: o.rule_id,
            list_entry: o.list_entry,
            risk: o.risk,
            cache: o.cache,
            source: o.source,
            format,
            continue_link,
            detail: None,
            report_link: ticket.map(|t| format!("{}?ticket={t}", crate::feedback::REPORT_PATH)),
            canonical,
            verdict: o.verdict,
        }
    }

    /// With feedback on and the policy reporting continues: a `continued` event for `url`,
    /// with `id` (the continue request's id).
    pub(super) fn report_continue(&self, client: IpAddr, url: &str, id: RequestId) {
        let Some(fb) = &self.feedback else { return };
        let Ok(canonical) = canonicalize(url) else {
            return;
        };
        let policy = self.policy.snapshot();
        let facts = RequestFacts {
            url: &canonical,
            client,
            user: None,
            groups: &[],
            now: jiff::Timestamp::now(),
        };
        if !policy.reports_continue(&facts) {
            return;
        }
        let decision = evaluate(&policy, &facts, None);
        let mut e = fb.event(id.to_string(), Kind::Continued);
        e.client = Some(fb.pseudonym(&client.to_string(), decision.anonymize_clients));
        e.url = Some(canonical.as_str().to_owned());
        e.host = Some(canonical.host().to_owned());
        e.action = Some(Action::Allow.as_str().to_owned());
        fb.emit(e);
    }
}

/// The kind of event `decision` reports, or `None` for a continued warning (its continue
/// link reported it already).
fn event_kind(decision: &Decision) -> Option<Kind> {
    let o = &decision.outcome;
    Some(match o.action {
        Action::Block => Kind::Blocked,
        Action::Warn if o.continued => return None,
        Action::Warn => Kind::Warned,
        Action::Monitor => Kind::Monitored,
        Action::Allow => match o.reason {
            Reason::Untested => Kind::Untested,
            Reason::ReputationUnavailable => Kind::ReputationUnavailable,
            _ => Kind::Allowed,
        },
    })
}

/// The feedback event of a decision, with the request's `id`, when the policy reports it (a
/// block or warn decision is also remembered for a user report, reported or not). Returns
/// the ticket for the page's report link on block and warn decisions.
fn feedback_event(fb: &Feedback, decision: &Decision, id: RequestId) -> Option<String> {
    let kind = event_kind(decision)?;
    let o = &decision.outcome;
    let refused = matches!(kind, Kind::Blocked | Kind::Warned);
    if !o.report && !refused {
        return None;
    }
    let canonical = &decision.canonical;
    let mut e = fb.event(id.to_string(), kind);
    e.client = Some(fb.pseudonym(&decision.client.to_string(), o.anonymize.0));
    e.user = decision
        .user
        .as_deref()
        .map(|u| fb.pseudonym(u, o.anonymize.1));
    e.url = Some(canonical.as_str().to_owned());
    e.host = Some(canonical.host().to_owned());
    e.action = Some(o.action.as_str().to_owned());
    e.reason = Some(o.reason.as_str().to_owned());
    e.risk = o.risk.map(|r| r.as_str().to_owned());
    e.rule.clone_from(&o.rule_id);
    e.list_hit.clone_from(&o.list_entry);
    // Decided without a lookup (a list or rule hit): reported as `hit`.
    e.cache = Some(o.cache.unwrap_or(CacheState::Hit).as_str().to_owned());
    e.source = o.source.as_deref().map(str::to_owned);
    e.categories.extend(o.category.clone());
    if let Some(v) = &o.verdict {
        e.score = v.score.map(|s| s.get());
        for c in &v.categories {
            if !e.categories.iter().any(|x| x == c.as_str()) {
                e.categories.push(c.as_str().to_owned());
            }
        }
    }
    let ticket = refused.then(|| {
        fb.remember_ticket(decision.client, &e);
        e.id.clone()
    });
    if o.report {
        fb.emit(e);
    }
    ticket
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;

    use super::*;
    use crate::proxy::filter::decide::tests::filter;

    const POLICY: &str = "lists:\n  blocked: [bad.example]\n  approved: [good.example]\nreputation_unavailable:\n  action: warn\n";

    fn with_feedback(dir: &std::path::Path) -> Filter {
        let mut f = filter(POLICY);
        let fb = Feedback::new(&crate::feedback::tests::config(dir)).unwrap();
        f.feedback = Some(Arc::new(fb));
        f
    }

    fn actions(f: &Filter) -> serde_json::Value {
        f.stats.to_json()["actions"].clone()
    }

    #[tokio::test]
    async fn a_block_is_counted_once_and_reported_with_the_request_id() {
        let dir = tempfile::tempdir().unwrap();
        let f = with_feedback(dir.path());
        let me: IpAddr = [192, 0, 2, 7].into();
        let d = f.decide("http://bad.example/", me, None).await.unwrap();
        let id = RequestId(0x2a);
        let r = f.record(d, id, PageFormat::Json).unwrap_err();
        assert_eq!(r.action, Action::Block);
        assert_eq!(
            r.report_link.as_deref(),
            Some("/.webrep/report?ticket=000000000000002a")
        );
        assert_eq!(actions(&f)["block"], 1);
        let fb = f.feedback.as_ref().unwrap();
        assert_eq!(fb.stats.spooled.load(Relaxed), 1);
    }

    #[tokio::test]
    async fn a_warning_gets_a_continue_link_and_an_allow_none() {
        let f = filter(POLICY);
        let me: IpAddr = [192, 0, 2, 7].into();
        let d = f.decide("http://other.example/a", me, None).await.unwrap();
        let r = f.record(d, RequestId(1), PageFormat::Text).unwrap_err();
        assert_eq!(r.action, Action::Warn);
        assert!(
            r.continue_link
                .as_deref()
                .is_some_and(|l| l.starts_with(CONTINUE_PATH)),
            "{r:?}"
        );
        assert_eq!(r.report_link, None, "no feedback, no report link");
        let d = f.decide("http://good.example/", me, None).await.unwrap();
        let a = f.record(d, RequestId(2), PageFormat::Text).unwrap();
        assert_eq!(a.decided.action, "allow");
        assert_eq!(a.decided.cache, "none");
        let a = actions(&f);
        assert_eq!(
            (a["warn"].as_u64(), a["allow"].as_u64()),
            (Some(1), Some(1))
        );
    }
}
