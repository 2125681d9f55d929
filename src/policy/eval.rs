//! Pure evaluation of a compiled [`Policy`]: no I/O, no locks, no allocation (except a
//! small one when a regex entry matches, to learn which one).
//!
//! The order is documented in the [module docs](super) and `docs/policy.md`.

use std::net::IpAddr;
use std::time::Duration;

use jiff::Timestamp;

use super::compile::{
    OFFSET_BUCKET_SHIFT, Policy, Rule, Schedule, Settings, TRANSITIONS_FROM, TRANSITIONS_UNTIL,
    report_bit,
};
use super::schema::{InterceptMode, NonTlsAction, Precedence, ReportKind, SecurityLevel};
use crate::canon::CanonicalUrl;
use crate::model::{Category, RiskLevel, Verdict};

/// What the policy says to do with a request. Ordered from most to least permissive, so the
/// strictest of several actions is their maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Forward.
    Allow,
    /// Forward and report (a feedback event), nothing shown to the user.
    Monitor,
    /// Show a warn page; the user may continue.
    Warn,
    /// Show a block page.
    Block,
}

impl Action {
    /// `allow`, `monitor`, `warn` or `block`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Monitor => "monitor",
            Action::Warn => "warn",
            Action::Block => "block",
        }
    }

    /// Whether the request is forwarded without anything shown to the user.
    pub fn forwards(self) -> bool {
        matches!(self, Action::Allow | Action::Monitor)
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the policy decided what it did (a closed set, fit for a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The URL is on an approved list.
    Approved,
    /// The URL is on a blocked list.
    Blocked,
    /// The matching rule's `action`.
    Rule,
    /// No reputation answer: `reputation_unavailable.action`.
    ReputationUnavailable,
    /// The risk level is one the security level blocks.
    Risk,
    /// No reputation entry: the `untested` action.
    Untested,
    /// A category action.
    Category,
    /// A tested URL without categories: the `uncategorized` action.
    Uncategorized,
    /// Nothing objected.
    Allowed,
    /// A downloaded file's hash verdict (`files.malicious` / `files.suspicious`).
    File,
}

impl Reason {
    /// Every reason, for counters keyed by reason.
    pub const ALL: [Reason; 10] = [
        Reason::Approved,
        Reason::Blocked,
        Reason::Rule,
        Reason::ReputationUnavailable,
        Reason::Risk,
        Reason::Untested,
        Reason::Category,
        Reason::Uncategorized,
        Reason::Allowed,
        Reason::File,
    ];

    /// A stable snake-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Approved => "approved",
            Reason::Blocked => "blocked",
            Reason::Rule => "rule",
            Reason::ReputationUnavailable => "reputation_unavailable",
            Reason::Risk => "risk",
            Reason::Untested => "untested",
            Reason::Category => "category",
            Reason::Uncategorized => "uncategorized",
            Reason::Allowed => "allowed",
            Reason::File => "file",
        }
    }
}

/// Which list an entry is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListKind {
    Approved,
    Blocked,
}

/// A list entry that matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListHit<'p> {
    /// The list.
    pub list: ListKind,
    /// The entry as written in the policy (a host pattern, path entry or regex).
    pub entry: &'p str,
}

/// The facts of one request the policy can look at. Borrowed: building it allocates nothing.
///
/// For a CONNECT, `url` is the canonical form of `https://host/` (the port is not part of
/// policy matching).
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The canonical URL.
    pub url: &'a CanonicalUrl,
    /// The client's address (an IPv4-mapped IPv6 address is matched as IPv4).
    pub client: IpAddr,
    /// The authenticated user, if any.
    pub user: Option<&'a str>,
    /// The user's groups.
    pub groups: &'a [String],
    /// The time of the request (for schedules).
    pub now: Timestamp,
}

/// The policy's answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'p> {
    /// What to do.
    pub action: Action,
    /// Why.
    pub reason: Reason,
    /// The first rule that matched the request, if any (its settings applied even when the
    /// decision came from elsewhere).
    pub rule_id: Option<&'p str>,
    /// The list entry that decided, for [`Reason::Approved`] and [`Reason::Blocked`].
    pub list_hit: Option<ListHit<'p>>,
    /// The category whose action decided, for [`Reason::Category`].
    pub category: Option<&'p Category>,
    /// The verdict's risk level, when there was a verdict.
    pub risk: Option<RiskLevel>,
    /// Whether `feedback.report` asks for this decision to be reported.
    pub report: bool,
    /// `feedback.anonymize_clients` of the applied settings.
    pub anonymize_clients: bool,
    /// `feedback.anonymize_users` of the applied settings.
    pub anonymize_users: bool,
    /// For warn decisions: how long a "continue" stays valid (`warn.continue_seconds`).
    pub warn_continue: Duration,
    /// The `files:` settings of the applied settings (for the response's download check).
    pub files: &'p std::sync::Arc<crate::policy::FileSettings>,
}

/// Why a CONNECT is intercepted or tunnelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InterceptReason {
    /// The host is on `interception.intercept_hosts`.
    InterceptHost,
    /// The host is on `interception.tunnel_hosts`.
    TunnelHost,
    /// A category of the verdict is on `interception.tunnel_categories`.
    TunnelCategory,
    /// A category of the verdict is on `interception.intercept_categories`.
    InterceptCategory,
    /// `interception.default`.
    Default,
}

/// Whether to decrypt a CONNECT tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterceptDecision<'p> {
    /// Intercept (decrypt and filter every request) or tunnel (relay untouched).
    pub mode: InterceptMode,
    /// Why.
    pub reason: InterceptReason,
    /// The host pattern that decided, for the host reasons.
    pub entry: Option<&'p str>,
    /// The category that decided, for the category reasons.
    pub category: Option<&'p Category>,
    /// The first rule that matched, if any.
    pub rule_id: Option<&'p str>,
    /// What to do when the client sends bytes that are not TLS.
    pub non_tls: NonTlsAction,
}

impl SecurityLevel {
    /// Whether this level blocks `risk` (never [`RiskLevel::Untested`], which has its own
    /// action).
    pub fn blocks(self, risk: RiskLevel) -> bool {
        match risk {
            RiskLevel::Dangerous => true,
            RiskLevel::HighlySuspicious => self != SecurityLevel::Low,
            RiskLevel::Suspicious => self == SecurityLevel::High,
            RiskLevel::Safe | RiskLevel::Untested => false,
        }
    }
}

impl Policy {
    /// The first rule matching `facts`, and the settings that apply.
    fn select(&self, facts: &RequestFacts<'_>) -> (Option<&Rule>, &Settings) {
        // IPv4-mapped IPv6 (`::ffff:192.0.2.1`, from a dual-stack listener) is IPv4 here.
        let client = match facts.client {
            IpAddr::V6(a) => a.to_ipv4_mapped().map_or(facts.client, IpAddr::V4),
            a @ IpAddr::V4(_) => a,
        };
        match self.rules.iter().find(|r| r.matches(facts, client)) {
            Some(r) => (Some(r), &r.settings),
            None => (None, &self.base),
        }
    }

    /// The `files:` settings that apply to `facts` (the first matching rule's, else the top
    /// level's).
    pub fn files(&self, facts: &RequestFacts<'_>) -> std::sync::Arc<crate::policy::FileSettings> {
        self.select(facts).1.files.clone()
    }

    /// The first rule matching `facts`, if any.
    pub fn matching_rule(&self, facts: &RequestFacts<'_>) -> Option<&str> {
        self.select(facts).0.map(|r| &*r.id)
    }

    /// How long past its TTL a cached reputation answer may serve this request
    /// (`reputation_unavailable.stale_seconds`); the cache asks before [`evaluate`].
    pub fn stale_window(&self, facts: &RequestFacts<'_>) -> Duration {
        self.select(facts).1.stale
    }

    /// Whether `feedback.report` of the settings that apply to `facts` includes
    /// "continued after a warn page".
    pub fn reports_continue(&self, facts: &RequestFacts<'_>) -> bool {
        self.select(facts).1.feedback.report & report_bit(ReportKind::Continue) != 0
    }
}

impl Rule {
    /// All given conditions hold; the cheap ones are checked first.
    fn matches(&self, f: &RequestFacts<'_>, client: IpAddr) -> bool {
        (self.clients.is_empty() || self.clients.iter().any(|n| n.contains(client)))
            && (self.users.is_empty()
                || f.user.is_some_and(|u| self.users.iter().any(|x| **x == *u)))
            && (self.groups.is_empty()
                || f.groups
                    .iter()
                    .any(|g| self.groups.iter().any(|x| **x == **g)))
            && self
                .hosts
                .as_ref()
                .is_none_or(|h| h.find_url(f.url).is_some())
            && self.schedule.as_ref().is_none_or(|s| s.contains(f.now))
    }
}

impl Schedule {
    /// Whether `now`, in this schedule's time zone, falls in one of its windows.
    pub(super) fn contains(&self, now: Timestamp) -> bool {
        let m = self.minute_of_week(now);
        self.ranges.iter().any(|&(s, e)| s <= m && m < e)
    }

    #[cfg(test)]
    pub(super) fn minute_of_week_for_test(&self, now: Timestamp) -> u16 {
        self.minute_of_week(now)
    }

    /// Local minutes since Monday 00:00.
    fn minute_of_week(&self, now: Timestamp) -> u16 {
        let utc = now.as_second();
        let offset = if (TRANSITIONS_FROM..TRANSITIONS_UNTIL).contains(&utc) {
            let b = usize::try_from((utc - TRANSITIONS_FROM) >> OFFSET_BUCKET_SHIFT).ok();
            b.and_then(|b| self.buckets.get(b)).and_then(|&i| {
                let mut i = usize::try_from(i).ok()?;
                while self.offsets.get(i + 1).is_some_and(|&(at, _)| at <= utc) {
                    i += 1;
                }
                self.offsets.get(i).map(|o| o.1)
            })
        } else {
            None
        }
        .unwrap_or_else(|| self.tz.to_offset(now).seconds());
        // 1970-01-01 was a Thursday: 3 days after a Monday.
        let minutes = (utc + i64::from(offset)).div_euclid(60) + 3 * 1440;
        u16::try_from(minutes.rem_euclid(7 * 1440)).unwrap_or(0)
    }
}

fn list_hit<'p>(s: &'p Settings, url: &CanonicalUrl) -> Option<ListHit<'p>> {
    let find = |list: ListKind| {
        s.lists.iter().find_map(|l| {
            let u = match list {
                ListKind::Approved => &l.approved,
                ListKind::Blocked => &l.blocked,
            };
            u.hosts
                .find_url(url)
                .or_else(|| {
                    let (set, texts) = u.regexes.as_ref()?;
                    // `is_match` allocates nothing; `matches` (which one?) only on a hit.
                    if !set.is_match(url.as_str()) {
                        return None;
                    }
                    let i = set.matches(url.as_str()).into_iter().next()?;
                    texts.get(i).map(|t| &**t)
                })
                .map(|entry| ListHit { list, entry })
        })
    };
    match s.precedence {
        Precedence::ApprovedFirst => find(ListKind::Approved).or_else(|| find(ListKind::Blocked)),
        Precedence::BlockedFirst => find(ListKind::Blocked).or_else(|| find(ListKind::Approved)),
    }
}

/// Decides a request (see the evaluation order in the [module docs](super)). `verdict` is
/// `None` when no reputation answer is available (no source answered and no stale answer
/// may be served).
///
/// The same as [`prepare`] then [`Prepared::decide`]; a caller that asks the reputation
/// only when needed uses those two, so the rule and the lists are matched once.
pub fn evaluate<'p>(
    policy: &'p Policy,
    facts: &RequestFacts<'_>,
    verdict: Option<&Verdict>,
) -> Decision<'p> {
    prepare(policy, facts).decide(verdict)
}

/// The first half of [`evaluate`], what needs no reputation: the matching rule, the settings
/// that apply and the list entry that matches, each found once. [`Prepared::settled`] says
/// whether that already decides; [`Prepared::decide`] finishes with the verdict.
pub fn prepare<'p>(policy: &'p Policy, facts: &RequestFacts<'_>) -> Prepared<'p> {
    let (rule, settings) = policy.select(facts);
    Prepared {
        rule,
        settings,
        list: list_hit(settings, facts.url),
    }
}

/// A request's evaluation up to the reputation question ([`prepare`]). Borrows the policy
/// only; cheap to keep while the lookup runs.
#[derive(Debug, Clone, Copy)]
pub struct Prepared<'p> {
    rule: Option<&'p Rule>,
    settings: &'p Settings,
    list: Option<ListHit<'p>>,
}

impl<'p> Prepared<'p> {
    /// The decision when a list entry or the rule's `action` makes it (steps 2 and 3 of the
    /// evaluation order): no reputation lookup is needed. `None` otherwise.
    pub fn settled(&self) -> Option<Decision<'p>> {
        (self.list.is_some() || self.rule.is_some_and(|r| r.action.is_some()))
            .then(|| self.decide(None))
    }

    /// How long past its TTL a cached reputation answer may serve this request
    /// (`reputation_unavailable.stale_seconds`), as [`Policy::stale_window`].
    pub fn stale_window(&self) -> Duration {
        self.settings.stale
    }

    /// The decision with `verdict` (`None`: no reputation answer).
    pub fn decide(&self, verdict: Option<&Verdict>) -> Decision<'p> {
        let (rule, s) = (self.rule, self.settings);
        let mut d = Decision {
            action: Action::Allow,
            reason: Reason::Allowed,
            rule_id: rule.map(|r| &*r.id),
            list_hit: None,
            category: None,
            risk: verdict.map(|v| v.risk),
            report: false,
            anonymize_clients: s.feedback.anonymize_clients,
            anonymize_users: s.feedback.anonymize_users,
            warn_continue: s.warn_continue,
            files: &s.files,
        };
        decide(&mut d, rule, s, self.list, verdict);
        let by_action = match d.action {
            Action::Allow => ReportKind::Allow,
            Action::Monitor => ReportKind::Monitor,
            Action::Warn => ReportKind::Warn,
            Action::Block => ReportKind::Block,
        };
        let mask = s.feedback.report;
        d.report = mask & report_bit(by_action) != 0
            || (d.reason == Reason::Untested && mask & report_bit(ReportKind::Untested) != 0)
            || (d.reason == Reason::ReputationUnavailable
                && mask & report_bit(ReportKind::ReputationUnavailable) != 0);
        d
    }
}

fn decide<'p>(
    d: &mut Decision<'p>,
    rule: Option<&'p Rule>,
    s: &'p Settings,
    list: Option<ListHit<'p>>,
    verdict: Option<&Verdict>,
) {
    // 1. Lists, in the configured precedence: the admin's explicit word on a URL.
    if let Some(hit) = list {
        (d.action, d.reason) = match hit.list {
            ListKind::Approved => (Action::Allow, Reason::Approved),
            ListKind::Blocked => (Action::Block, Reason::Blocked),
        };
        d.list_hit = Some(hit);
        return;
    }
    // 2. A rule that decides outright.
    if let Some(a) = rule.and_then(|r| r.action) {
        (d.action, d.reason) = (a, Reason::Rule);
        return;
    }
    // 3. No reputation answer: the fail mode.
    let Some(v) = verdict else {
        (d.action, d.reason) = (s.reputation_unavailable, Reason::ReputationUnavailable);
        return;
    };
    // 4. Risk against the security level.
    if s.security_level.blocks(v.risk) {
        (d.action, d.reason) = (Action::Block, Reason::Risk);
        return;
    }
    // 5. Untested has its own action (an untested verdict has no categories).
    if v.risk == RiskLevel::Untested {
        (d.action, d.reason) = (s.untested, Reason::Untested);
        return;
    }
    // 6. Categories: the strictest configured action among the verdict's categories.
    if v.categories.is_empty() {
        if s.uncategorized != Action::Allow {
            (d.action, d.reason) = (s.uncategorized, Reason::Uncategorized);
        }
        return;
    }
    let mut best: Option<&'p (Category, Action)> = None;
    for c in &v.categories {
        if let Some(entry) = s.categories.iter().find(|(k, _)| k == c)
            && best.is_none_or(|b| entry.1 > b.1)
        {
            best = Some(entry);
        }
    }
    if let Some((cat, action)) = best
        && *action != Action::Allow
    {
        (d.action, d.reason, d.category) = (*action, Reason::Category, Some(cat));
    }
}

/// Decides whether to decrypt a CONNECT to `facts.url`'s host: `intercept_hosts`, then
/// `tunnel_hosts`, then `tunnel_categories`, then `intercept_categories` (of the verdict's
/// categories; none when `verdict` is `None`), then `interception.default`. Whether the
/// CONNECT is allowed at all is [`evaluate`]'s question, asked first.
pub fn intercept<'p>(
    policy: &'p Policy,
    facts: &RequestFacts<'_>,
    verdict: Option<&Verdict>,
) -> InterceptDecision<'p> {
    let (rule, s) = policy.select(facts);
    let i = &s.interception;
    let mut d = InterceptDecision {
        mode: i.default,
        reason: InterceptReason::Default,
        entry: None,
        category: None,
        rule_id: rule.map(|r| &*r.id),
        non_tls: i.non_tls,
    };
    if let Some(e) = i.intercept_hosts.find_url(facts.url) {
        (d.mode, d.reason, d.entry) = (
            InterceptMode::Intercept,
            InterceptReason::InterceptHost,
            Some(e),
        );
    } else if let Some(e) = i.tunnel_hosts.find_url(facts.url) {
        (d.mode, d.reason, d.entry) = (InterceptMode::Tunnel, InterceptReason::TunnelHost, Some(e));
    } else if let Some(v) = verdict {
        let find = |set: &'p [Category]| set.iter().find(|c| v.categories.contains(c));
        if let Some(c) = find(&i.tunnel_categories) {
            (d.mode, d.reason, d.category) = (
                InterceptMode::Tunnel,
                InterceptReason::TunnelCategory,
                Some(c),
            );
        } else if let Some(c) = find(&i.intercept_categories) {
            (d.mode, d.reason, d.category) = (
                InterceptMode::Intercept,
                InterceptReason::InterceptCategory,
                Some(c),
            );
        }
    }
    d
}
