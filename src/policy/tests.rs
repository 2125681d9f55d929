//! Table-driven tests of policy compilation and evaluation.

use std::fmt::Write as _;

use jiff::Timestamp;

use super::*;
use crate::canon::canonicalize;
use crate::model::{Category, Key, RiskLevel, Score, Verdict};

fn policy(yaml: &str) -> Policy {
    Policy::from_yaml(yaml, "t.yaml").unwrap_or_else(|e| panic!("{e}"))
}

/// A verdict with `score` (`None`: untested) and categories.
fn verdict(score: Option<u8>, cats: &[&str]) -> Verdict {
    match score {
        None => Verdict::untested(),
        Some(s) => {
            let score = Score::new(s).unwrap();
            Verdict {
                risk: score.risk(),
                score: Some(score),
                categories: cats.iter().map(|c| Category::parse(c).unwrap()).collect(),
                matched: vec![Key::parse("example.com/").unwrap()],
            }
        }
    }
}

/// A request from 192.0.2.10, no user, at a fixed time.
struct Req {
    url: &'static str,
    client: &'static str,
    user: Option<&'static str>,
    groups: Vec<String>,
    now: Timestamp,
}

fn req(url: &'static str) -> Req {
    Req {
        url,
        client: "192.0.2.10",
        user: None,
        groups: Vec::new(),
        now: "2026-03-04T12:00:00Z".parse().unwrap(),
    }
}

impl Req {
    fn client(mut self, c: &'static str) -> Self {
        self.client = c;
        self
    }
    fn user(mut self, u: &'static str, groups: &[&str]) -> Self {
        self.user = Some(u);
        self.groups = groups.iter().map(|g| (*g).to_owned()).collect();
        self
    }
    fn at(mut self, t: &str) -> Self {
        self.now = t.parse().unwrap();
        self
    }

    /// Runs `f` with the facts of this request.
    fn with<R>(&self, f: impl FnOnce(&RequestFacts<'_>) -> R) -> R {
        let url = canonicalize(self.url).unwrap();
        let facts = RequestFacts {
            url: &url,
            client: self.client.parse().unwrap(),
            user: self.user,
            groups: &self.groups,
            now: self.now,
        };
        f(&facts)
    }

    /// (action, reason, rule id, list entry, category) of the decision.
    fn eval(&self, p: &Policy, v: Option<&Verdict>) -> Outcome {
        self.with(|f| {
            let d = evaluate(p, f, v);
            // The two-step path the proxy takes agrees with `evaluate` on every row: settled
            // exactly when a list or a rule's action decides, and then with that decision
            // whatever the verdict would have been (no risk: nothing was looked up).
            let prepared = super::prepare(p, f);
            match prepared.settled() {
                Some(s) => {
                    assert!(
                        matches!(d.reason, Reason::Approved | Reason::Blocked | Reason::Rule),
                        "{}: settled as {s:?}, evaluated as {d:?}",
                        self.url
                    );
                    assert_eq!(s, Decision { risk: None, ..d }, "{}", self.url);
                }
                None => assert!(
                    !matches!(d.reason, Reason::Approved | Reason::Blocked | Reason::Rule),
                    "{}: not settled, evaluated as {d:?}",
                    self.url
                ),
            }
            assert_eq!(prepared.decide(v), d, "{}", self.url);
            assert_eq!(prepared.stale_window(), p.stale_window(f), "{}", self.url);
            Outcome {
                action: d.action,
                reason: d.reason,
                rule: d.rule_id.map(str::to_owned),
                entry: d.list_hit.map(|h| h.entry.to_owned()),
                category: d.category.map(|c| c.as_str().to_owned()),
            }
        })
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    action: Action,
    reason: Reason,
    rule: Option<String>,
    entry: Option<String>,
    category: Option<String>,
}

/// Collects table failures so a test reports every failing row.
#[derive(Default)]
struct Failures(String);

impl Failures {
    fn check<T: std::fmt::Debug + PartialEq>(&mut self, row: &str, got: T, want: T) {
        if got != want {
            let _ = writeln!(self.0, "{row}: got {got:?}, want {want:?}");
        }
    }
    fn finish(self) {
        assert!(self.0.is_empty(), "failing rows:\n{}", self.0);
    }
}

use Action::{Allow, Block, Monitor, Warn};

#[test]
fn every_security_level_against_every_risk_level() {
    // (score, risk) rows; None is untested.
    let risks = [
        (Some(10), RiskLevel::Dangerous),
        (Some(50), RiskLevel::Dangerous),
        (Some(51), RiskLevel::HighlySuspicious),
        (Some(65), RiskLevel::HighlySuspicious),
        (Some(66), RiskLevel::Suspicious),
        (Some(80), RiskLevel::Suspicious),
        (Some(81), RiskLevel::Safe),
        (Some(100), RiskLevel::Safe),
        (None, RiskLevel::Untested),
    ];
    let table: [(&str, [Action; 5]); 3] = [
        // dangerous, highly suspicious, suspicious, safe, untested
        ("high", [Block, Block, Block, Allow, Allow]),
        ("medium", [Block, Block, Allow, Allow, Allow]),
        ("low", [Block, Allow, Allow, Allow, Allow]),
    ];
    let mut f = Failures::default();
    for (level, expect) in table {
        let p = policy(&format!("security_level: {level}\n"));
        for (score, risk) in risks {
            let v = verdict(score, &[]);
            assert_eq!(v.risk, risk);
            let col = match risk {
                RiskLevel::Dangerous => 0,
                RiskLevel::HighlySuspicious => 1,
                RiskLevel::Suspicious => 2,
                RiskLevel::Safe => 3,
                RiskLevel::Untested => 4,
            };
            let o = req("http://example.com/").eval(&p, Some(&v));
            f.check(&format!("{level} × {score:?}"), o.action, expect[col]);
            let want_reason = match (expect[col], risk) {
                (Block, _) => Reason::Risk,
                (_, RiskLevel::Untested) => Reason::Untested,
                _ => Reason::Allowed,
            };
            f.check(
                &format!("{level} × {score:?} reason"),
                o.reason,
                want_reason,
            );
        }
    }
    // The default level is medium.
    let p = policy("");
    let o = req("http://example.com/").eval(&p, Some(&verdict(Some(70), &[])));
    f.check("default level, suspicious", o.action, Allow);
    let o = req("http://example.com/").eval(&p, Some(&verdict(Some(60), &[])));
    f.check("default level, highly suspicious", o.action, Block);
    f.finish();
}

#[test]
fn untested_action() {
    let mut f = Failures::default();
    for (yaml, want) in [
        ("", Allow),
        ("untested: allow\n", Allow),
        ("untested: warn\n", Warn),
        ("untested: block\n", Block),
    ] {
        let p = policy(yaml);
        let o = req("http://new.example/").eval(&p, Some(&Verdict::untested()));
        f.check(yaml, (o.action, o.reason), (want, Reason::Untested));
        // A tested URL is not affected by the untested action.
        let o = req("http://new.example/").eval(&p, Some(&verdict(Some(90), &[])));
        f.check(yaml, o.action, Allow);
    }
    f.finish();
}

#[test]
fn list_precedence_both_ways() {
    let lists = "  approved: [example.com]\n  blocked: [\"*.example.com\", evil.test]\n";
    let approved_first = policy(&format!("lists:\n{lists}"));
    let blocked_first = policy(&format!("lists:\n  precedence: blocked_first\n{lists}"));
    let explicit = policy(&format!("lists:\n  precedence: approved_first\n{lists}"));
    let safe = verdict(Some(95), &[]);
    let bad = verdict(Some(5), &["malware"]);
    let mut f = Failures::default();
    for (name, p, url, v, want) in [
        // On both lists.
        (
            "approved_first",
            &approved_first,
            "http://www.example.com/",
            &bad,
            (Allow, Reason::Approved, "example.com"),
        ),
        (
            "explicit",
            &explicit,
            "http://www.example.com/",
            &bad,
            (Allow, Reason::Approved, "example.com"),
        ),
        (
            "blocked_first",
            &blocked_first,
            "http://www.example.com/",
            &safe,
            (Block, Reason::Blocked, "*.example.com"),
        ),
        // On one list only: precedence does not matter.
        (
            "approved_first",
            &approved_first,
            "http://example.com/",
            &bad,
            (Allow, Reason::Approved, "example.com"),
        ),
        (
            "blocked_first",
            &blocked_first,
            "http://example.com/",
            &bad,
            (Allow, Reason::Approved, "example.com"),
        ),
        (
            "approved_first",
            &approved_first,
            "http://a.evil.test/",
            &safe,
            (Block, Reason::Blocked, "evil.test"),
        ),
        (
            "blocked_first",
            &blocked_first,
            "http://a.evil.test/",
            &safe,
            (Block, Reason::Blocked, "evil.test"),
        ),
    ] {
        let o = req(url).eval(p, Some(v));
        f.check(
            &format!("{name} {url}"),
            (o.action, o.reason, o.entry.as_deref()),
            (want.0, want.1, Some(want.2)),
        );
    }
    // Lists decide even when no reputation is available.
    let o = req("http://a.evil.test/").eval(&approved_first, None);
    f.check("blocked, no reputation", o.reason, Reason::Blocked);
    f.finish();
}

#[test]
fn wildcard_path_prefix_and_regex_through_canonical_forms() {
    let p = policy(
        r#"
lists:
  blocked:
    - "*.ads.example"
    - "www.ex*le.com"
    - example.org/dl/
    - example.net/a b/
    - 192.0.2.99
    - bücher.example
  blocked_regex:
    - '^https?://[^/]*\.tracker\.test/.*\?id='
"#,
    );
    let safe = verdict(Some(95), &[]);
    let mut f = Failures::default();
    for (url, want) in [
        ("HTTP://X.ADS.EXAMPLE./banner", Some("*.ads.example")),
        ("http://a.b.ads.example/", Some("*.ads.example")),
        ("http://ads.example/", None),
        ("http://www.example.com/", Some("www.ex*le.com")),
        ("http://www.exampLE.com:8080/x", Some("www.ex*le.com")),
        ("http://www.exle.com/", Some("www.ex*le.com")),
        ("http://www.example.com.evil.test/", None),
        ("http://example.org/dl/file.exe", Some("example.org/dl/")),
        (
            "http://example.org/x/../dl/file.exe",
            Some("example.org/dl/"),
        ),
        ("http://example.org/%64l/file.exe", Some("example.org/dl/")),
        ("http://example.org//dl//file.exe", Some("example.org/dl/")),
        ("http://sub.example.org/dl/", Some("example.org/dl/")),
        ("http://example.org/dl", None),
        ("http://example.org/dlx/", None),
        ("http://example.net/a%20b/c", Some("example.net/a b/")),
        ("http://3221226083/", Some("192.0.2.99")),
        ("http://xn--bcher-kva.example/", Some("bücher.example")),
        ("http://www.bücher.example/", Some("bücher.example")),
        (
            "https://x.tracker.test/p?id=1",
            Some(r"^https?://[^/]*\.tracker\.test/.*\?id="),
        ),
        ("https://x.tracker.test/p?q=1", None),
    ] {
        let o = req(url).eval(&p, Some(&safe));
        f.check(url, o.entry.as_deref(), want);
        let action = if want.is_some() { Block } else { Allow };
        f.check(url, o.action, action);
    }
    f.finish();
}

#[test]
fn category_actions() {
    let p = policy(
        r#"
categories:
  custom: [intranet-tools]
  actions:
    malware: block
    social-networking: warn
    streaming: monitor
    news: allow
    intranet-tools: block
  uncategorized: warn
"#,
    );
    let mut f = Failures::default();
    for (cats, want) in [
        (&["malware"][..], (Block, Reason::Category, Some("malware"))),
        (
            &["social-networking"][..],
            (Warn, Reason::Category, Some("social-networking")),
        ),
        (
            &["streaming"][..],
            (Monitor, Reason::Category, Some("streaming")),
        ),
        (&["news"][..], (Allow, Reason::Allowed, None)),
        (&["gambling"][..], (Allow, Reason::Allowed, None)),
        // The strictest action among several categories wins.
        (
            &["streaming", "social-networking", "news"][..],
            (Warn, Reason::Category, Some("social-networking")),
        ),
        (
            &["news", "malware", "streaming"][..],
            (Block, Reason::Category, Some("malware")),
        ),
        (
            &["intranet-tools"][..],
            (Block, Reason::Category, Some("intranet-tools")),
        ),
        // A category the policy does not know (e.g. another admin's custom one) is allowed.
        (&["some-other"][..], (Allow, Reason::Allowed, None)),
        (&[][..], (Warn, Reason::Uncategorized, None)),
    ] {
        let o = req("http://example.com/").eval(&p, Some(&verdict(Some(90), cats)));
        f.check(
            &format!("{cats:?}"),
            (o.action, o.reason, o.category.as_deref()),
            want,
        );
    }
    // Risk comes before categories: a dangerous score blocks whatever its category says.
    let o = req("http://example.com/").eval(&p, Some(&verdict(Some(5), &["news"])));
    f.check(
        "dangerous news",
        (o.action, o.reason),
        (Block, Reason::Risk),
    );
    // Untested comes before uncategorized.
    let o = req("http://example.com/").eval(&p, Some(&Verdict::untested()));
    f.check("untested", (o.action, o.reason), (Allow, Reason::Untested));
    f.finish();
}

#[test]
fn reputation_unavailable_fail_mode() {
    let mut f = Failures::default();
    for (yaml, want) in [
        ("", Allow),
        ("reputation_unavailable: {action: warn}\n", Warn),
        (
            "reputation_unavailable: {action: block, stale_seconds: 60}\n",
            Block,
        ),
    ] {
        let p = policy(yaml);
        let o = req("http://example.com/").eval(&p, None);
        f.check(
            yaml,
            (o.action, o.reason),
            (want, Reason::ReputationUnavailable),
        );
    }
    let p = policy("reputation_unavailable: {action: block, stale_seconds: 60}\n");
    req("http://example.com/").with(|facts| {
        f.check("stale", p.stale_window(facts).as_secs(), 60);
    });
    f.finish();
}

const RULES: &str = r#"
security_level: low
lists:
  blocked: [blocked.example]
rules:
  - id: admins
    match:
      users: [root]
    action: allow
  - id: lab-net
    match:
      clients: ["10.1.0.0/16", "2001:db8:1::/48"]
    security_level: high
    lists:
      approved: [blocked.example]
  - id: students
    match:
      groups: [students]
    categories:
      actions:
        games: block
  - id: students-and-lab
    match:
      groups: [students]
      clients: ["10.1.0.0/16"]
    action: block
  - id: night-guests
    match:
      clients: ["192.0.2.128/25"]
      hosts: ["*.example.org", shop.example]
    action: warn
"#;

#[test]
fn rule_order_and_conditions() {
    let p = policy(RULES);
    assert_eq!(
        p.rule_ids().collect::<Vec<_>>(),
        [
            "admins",
            "lab-net",
            "students",
            "students-and-lab",
            "night-guests"
        ]
    );
    let suspicious = verdict(Some(70), &["games"]);
    let mut f = Failures::default();
    for (name, r, want) in [
        (
            "no rule: low level allows suspicious",
            req("http://x.example/"),
            (Allow, Reason::Allowed, None),
        ),
        (
            "user root: rule action",
            req("http://x.example/").user("root", &[]),
            (Allow, Reason::Rule, Some("admins")),
        ),
        (
            "lists come before the rule action",
            req("http://blocked.example/").user("root", &[]),
            (Block, Reason::Blocked, Some("admins")),
        ),
        (
            "other user",
            req("http://x.example/").user("alice", &[]),
            (Allow, Reason::Allowed, None),
        ),
        (
            "lab client: high level",
            req("http://x.example/").client("10.1.2.3"),
            (Block, Reason::Risk, Some("lab-net")),
        ),
        (
            "lab client v6",
            req("http://x.example/").client("2001:db8:1:2::5"),
            (Block, Reason::Risk, Some("lab-net")),
        ),
        (
            "outside lab",
            req("http://x.example/").client("10.2.0.1"),
            (Allow, Reason::Allowed, None),
        ),
        (
            "rule lists add to the top-level ones, approved first",
            req("http://blocked.example/").client("10.1.2.3"),
            (Allow, Reason::Approved, Some("lab-net")),
        ),
        (
            "students: category override",
            req("http://x.example/").user("bob", &["staff", "students"]),
            (Block, Reason::Category, Some("students")),
        ),
        (
            "students in the lab: first match wins (lab-net)",
            req("http://x.example/")
                .client("10.1.0.9")
                .user("bob", &["students"]),
            (Block, Reason::Risk, Some("lab-net")),
        ),
        (
            "guest net, matching host",
            req("http://www.example.org/").client("192.0.2.200"),
            (Warn, Reason::Rule, Some("night-guests")),
        ),
        (
            "guest net, other matching host",
            req("http://shop.example/cart").client("192.0.2.200"),
            (Warn, Reason::Rule, Some("night-guests")),
        ),
        (
            "guest net, other host",
            req("http://example.org/").client("192.0.2.200"),
            (Allow, Reason::Allowed, None),
        ),
        (
            "other net, matching host",
            req("http://www.example.org/").client("192.0.2.1"),
            (Allow, Reason::Allowed, None),
        ),
    ] {
        let o = r.eval(&p, Some(&suspicious));
        f.check(name, (o.action, o.reason, o.rule.as_deref()), want);
    }
    f.finish();
}

#[test]
fn schedules_across_time_zone_and_dst_boundary() {
    // New York switched from EST (UTC-5) to EDT (UTC-4) on Sunday 2026-03-08.
    let p = policy(
        r#"
rules:
  - id: office-hours
    match:
      schedule:
        time_zone: America/New_York
        windows:
          - days: [mon-fri]
            from: "09:00"
            to: "17:00"
    action: block
  - id: weekend-night
    match:
      schedule:
        time_zone: Europe/Berlin
        windows:
          - days: [sun]
            from: "22:00"
            to: "02:00"
    action: warn
"#,
    );
    let mut f = Failures::default();
    for (utc, want) in [
        // Friday before the switch: 09:00 EST is 14:00 UTC.
        ("2026-03-06T13:59:00Z", None),
        ("2026-03-06T14:00:00Z", Some("office-hours")),
        ("2026-03-06T21:59:00Z", Some("office-hours")),
        ("2026-03-06T22:00:00Z", None),
        // Monday after the switch: 09:00 EDT is 13:00 UTC.
        ("2026-03-09T12:59:00Z", None),
        ("2026-03-09T13:00:00Z", Some("office-hours")),
        ("2026-03-09T13:30:00Z", Some("office-hours")),
        ("2026-03-09T20:59:00Z", Some("office-hours")),
        ("2026-03-09T21:00:00Z", None),
        // Saturday and the Sunday of the switch itself.
        ("2026-03-07T15:00:00Z", None),
        ("2026-03-08T15:00:00Z", None),
        // Berlin (CET, UTC+1): Sunday 22:00 to Monday 02:00 local, across the week's end.
        ("2026-03-08T20:59:00Z", None),
        ("2026-03-08T21:00:00Z", Some("weekend-night")),
        ("2026-03-09T00:59:00Z", Some("weekend-night")),
        ("2026-03-09T01:00:00Z", None),
        // Berlin in summer time (CEST, UTC+2) after 2026-03-29.
        ("2026-04-05T20:00:00Z", Some("weekend-night")),
        ("2026-04-05T19:59:00Z", None),
    ] {
        let o = req("http://example.com/")
            .at(utc)
            .eval(&p, Some(&verdict(Some(90), &[])));
        f.check(utc, o.rule.as_deref(), want);
    }
    f.finish();
}

/// Interception settings at the top level and in a rule for a lab network.
const INTERCEPTION_POLICY: &str = r#"
interception:
  intercept_hosts: [login.bank.example]
  tunnel_hosts: [bank.example, "*.pinned.example"]
  non_tls: allow
rules:
  - id: tunnel-everything-for-lab
    match:
      clients: ["10.1.0.0/16"]
    interception:
      default: tunnel
      intercept_categories: [streaming]
      tunnel_categories: []
"#;

#[test]
fn interception_decisions() {
    let p = policy(INTERCEPTION_POLICY);
    let finance = verdict(Some(90), &["finance"]);
    let health = verdict(Some(90), &["health", "news"]);
    let streaming = verdict(Some(90), &["streaming"]);
    let news = verdict(Some(90), &["news"]);
    use InterceptMode::{Intercept, Tunnel};
    use InterceptReason as R;
    let mut f = Failures::default();
    for (name, r, v, want) in [
        (
            "default intercepts",
            req("https://news.example/"),
            Some(&news),
            (Intercept, R::Default, None, None),
        ),
        (
            "no verdict: default",
            req("https://news.example/"),
            None,
            (Intercept, R::Default, None, None),
        ),
        (
            "finance tunnelled by default",
            req("https://shop.example/"),
            Some(&finance),
            (Tunnel, R::TunnelCategory, None, Some("finance")),
        ),
        (
            "health tunnelled by default",
            req("https://clinic.example/"),
            Some(&health),
            (Tunnel, R::TunnelCategory, None, Some("health")),
        ),
        (
            "tunnel host",
            req("https://www.bank.example/"),
            Some(&news),
            (Tunnel, R::TunnelHost, Some("bank.example"), None),
        ),
        (
            "tunnel wildcard",
            req("https://app.pinned.example/"),
            Some(&news),
            (Tunnel, R::TunnelHost, Some("*.pinned.example"), None),
        ),
        (
            "intercept host beats tunnel host and category",
            req("https://login.bank.example/"),
            Some(&finance),
            (
                Intercept,
                R::InterceptHost,
                Some("login.bank.example"),
                None,
            ),
        ),
        (
            "rule: default tunnel",
            req("https://news.example/").client("10.1.0.1"),
            Some(&news),
            (Tunnel, R::Default, None, None),
        ),
        (
            "rule: intercept category",
            req("https://video.example/").client("10.1.0.1"),
            Some(&streaming),
            (Intercept, R::InterceptCategory, None, Some("streaming")),
        ),
        (
            "rule: finance no longer tunnelled, default tunnel",
            req("https://shop.example/").client("10.1.0.1"),
            Some(&finance),
            (Tunnel, R::Default, None, None),
        ),
    ] {
        let d = r.with(|facts| {
            let d = intercept(&p, facts, v);
            (
                d.mode,
                d.reason,
                d.entry.map(str::to_owned),
                d.category.map(|c| c.as_str().to_owned()),
            )
        });
        f.check(name, (d.0, d.1, d.2.as_deref(), d.3.as_deref()), want);
    }
    f.finish();
}

#[test]
fn non_tls_action_is_the_policys_or_block() {
    let p = policy(INTERCEPTION_POLICY);
    let mut f = Failures::default();
    req("https://x.example/").with(|facts| {
        f.check(
            "non_tls",
            intercept(&p, facts, None).non_tls,
            NonTlsAction::Allow,
        );
        let d = policy("");
        f.check(
            "non_tls default",
            intercept(&d, facts, None).non_tls,
            NonTlsAction::Block,
        );
    });
    f.finish();
}

#[test]
fn feedback_reporting_and_warn_settings() {
    let p = policy(
        r#"
categories:
  actions: {streaming: monitor, games: warn}
warn: {continue_seconds: 600}
feedback:
  report: [monitor, untested]
  anonymize_users: true
"#,
    );
    let r = req("http://example.com/");
    let report = |v: &Verdict| r.with(|f| evaluate(&p, f, Some(v)).report);
    assert!(report(&verdict(Some(90), &["streaming"])));
    assert!(!report(&verdict(Some(90), &["games"])));
    assert!(report(&Verdict::untested()));
    assert!(!report(&verdict(Some(90), &[])));
    r.with(|f| {
        let d = evaluate(&p, f, Some(&verdict(Some(90), &["games"])));
        assert_eq!(d.warn_continue.as_secs(), 600);
        assert!(d.anonymize_users && !d.anonymize_clients);
        assert!(!p.reports_continue(f));
    });
    // Defaults: block, warn, continue, monitor, untested and unavailable are reported.
    let d = policy("");
    r.with(|f| {
        assert!(evaluate(&d, f, None).report);
        assert!(!evaluate(&d, f, Some(&verdict(Some(90), &[]))).report);
        assert!(evaluate(&d, f, Some(&verdict(Some(5), &[]))).report);
        assert!(d.reports_continue(f));
    });
}

/// (yaml, line, column, rule id, text the message must contain)
const INVALID: &[(&str, u32, u32, Option<&str>, &str)] = &[
    (
        "security_level: high\nuntested_action: warn\n",
        2,
        1,
        None,
        "unknown key `untested_action` at the top level; did you mean `untested`?",
    ),
    (
        "rules:\n  - id: a\n    match:\n      client: [\"10.0.0.0/8\"]\n",
        4,
        7,
        Some("a"),
        "unknown key `client` in `rules[0].match`; did you mean `clients`?",
    ),
    (
        "rules:\n  - id: a\n    action: block\n  - id: b\n    security_level: extreme\nuntested: warn\n",
        5,
        21,
        Some("b"),
        "expected one of high",
    ),
    (
        "rules:\n  - id: a\n    action: block\nuntested: sometimes\n",
        4,
        11,
        None,
        "expected one of allow",
    ),
    (
        "lists:\n  blocked:\n    - ok.example\n    - \"example.*\"\n",
        4,
        7,
        None,
        "wildcard in the top-level label",
    ),
    (
        "lists:\n  approved: [\"ex ample.com\"]\n",
        2,
        14,
        None,
        "not a host name",
    ),
    (
        "rules:\n  - id: a\n    match:\n      clients: [\"10.0.0.0/33\"]\n",
        4,
        17,
        Some("a"),
        "is not a network",
    ),
    (
        "lists:\n  blocked_regex:\n    - 'a(b'\n",
        3,
        7,
        None,
        "invalid regex",
    ),
    (
        "lists:\n  blocked_regex:\n    - 'a{1000}{1000}'\n",
        3,
        7,
        None,
        "invalid regex",
    ),
    (
        "rules:\n  - id: a\n    action: block\n  - id: b\n    action: warn\n  - id: a\n    action: allow\n",
        6,
        9,
        Some("a"),
        "duplicate rule id `a` (first used on line 2)",
    ),
    (
        "security_level: 3\n",
        1,
        17,
        None,
        "expected one of high, medium, low",
    ),
    (
        "untested: monitor\n",
        1,
        11,
        None,
        "expected one of allow, warn, block",
    ),
    (
        "warn:\n  continue_seconds: soon\n",
        2,
        21,
        None,
        "expected a whole number (0 or more), found `soon`",
    ),
    ("rules: {id: a}\n", 1, 8, None, "expected a list"),
    (
        "categories:\n  actions:\n    malwar: block\n",
        3,
        13,
        None,
        "unknown category \"malwar\"",
    ),
    (
        "categories:\n  custom: [malware]\n",
        2,
        12,
        None,
        "built in",
    ),
    (
        "rules:\n  - id: a\n    match:\n      schedule:\n        time_zone: Europe/Nowhere\n        windows: [{days: [mon], from: \"09:00\", to: \"17:00\"}]\n",
        5,
        20,
        Some("a"),
        "unknown time zone",
    ),
    (
        "rules:\n  - id: a\n    match:\n      schedule:\n        time_zone: UTC\n        windows: [{days: [mon], from: \"09:00\", to: \"9am\"}]\n",
        6,
        52,
        Some("a"),
        "not a time",
    ),
    (
        "rules:\n  - id: a\n    match:\n      users: []\n",
        2,
        9,
        Some("a"),
        "empty",
    ),
    (
        "rules:\n  - id: \"a b\"\n",
        2,
        9,
        Some("a b"),
        "invalid rule id",
    ),
    (
        "rules:\n  - id: a\n    match:\n      hosts: [example.com/path]\n",
        4,
        15,
        Some("a"),
        "takes no path",
    ),
    (
        "interception:\n  tunnel_categories: [banking]\n",
        2,
        23,
        None,
        "unknown category",
    ),
    (
        "reputation_unavailable:\n  stale_seconds: 99999999\n",
        2,
        18,
        None,
        "30 days",
    ),
    (
        "rules:\n  - id: a\n    categories:\n      custom: [x]\n",
        4,
        16,
        Some("a"),
        "top level only",
    ),
];

#[test]
fn invalid_policies_give_precise_errors() {
    let mut f = Failures::default();
    for (yaml, line, column, rule, needle) in INVALID {
        let errs = match Policy::from_yaml(yaml, "bad.yaml") {
            Ok(_) => {
                f.check(yaml, "valid", "error");
                continue;
            }
            Err(e) => e,
        };
        let e = &errs.errors[0];
        f.check(yaml, (e.line, e.column), (*line, *column));
        f.check(yaml, e.rule_id.as_deref(), *rule);
        f.check(yaml, e.message.contains(needle), true);
        if !e.message.contains(needle) {
            let _ = writeln!(f.0, "  message was: {}", e.message);
        }
        let shown = e.to_string();
        f.check(
            yaml,
            shown.starts_with(&format!("bad.yaml:{line}:{column}: ")),
            true,
        );
    }
    f.finish();
}

#[test]
fn every_error_is_reported_not_only_the_first() {
    let errs = Policy::from_yaml(
        "lists:\n  blocked: [\"a.*\", \"b.*\"]\nrules:\n  - id: r\n    match:\n      clients: [nope]\n",
        "x.yaml",
    )
    .unwrap_err();
    let lines: Vec<String> = errs.errors.iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[2].starts_with("x.yaml:6:17: rule `r`: "), "{lines:?}");
}

#[test]
fn empty_policy_is_all_defaults() {
    let p = policy("# nothing\n");
    assert_eq!(p.rule_ids().count(), 0);
    assert!(p.summary().contains("security_level medium"));
    let o = req("http://example.com/").eval(&p, Some(&verdict(Some(90), &["finance"])));
    assert_eq!(o.action, Allow);
}

#[test]
fn shipped_policies_mean_what_they_say() {
    let default = policy(include_str!("../../policies/default.yaml"));
    let strict = policy(include_str!("../../policies/strict.yaml"));
    let example = policy(include_str!("../../policies/example.yaml"));
    assert_eq!(example.rule_ids().count(), 4);
    let r = req("https://example.com/");
    let mut f = Failures::default();
    // Every security category is blocked by both.
    for (name, class) in crate::model::BUILTIN_CATEGORIES {
        let v = verdict(Some(95), &[name]);
        let is_security = *class == crate::model::CategoryClass::Security;
        f.check(
            &format!("default {name}"),
            r.eval(&default, Some(&v)).action == Block,
            is_security,
        );
        f.check(
            &format!("strict {name}"),
            r.eval(&strict, Some(&v)).action == Block,
            is_security,
        );
    }
    // default: medium.
    f.check(
        "default suspicious",
        r.eval(&default, Some(&verdict(Some(70), &[]))).action,
        Allow,
    );
    f.check(
        "default highly suspicious",
        r.eval(&default, Some(&verdict(Some(60), &[]))).action,
        Block,
    );
    f.check(
        "default untested",
        r.eval(&default, Some(&Verdict::untested())).action,
        Allow,
    );
    // strict: high, untested warned, social networking and streaming warned, fail closed.
    f.check(
        "strict suspicious",
        r.eval(&strict, Some(&verdict(Some(70), &[]))).action,
        Block,
    );
    f.check(
        "strict untested",
        r.eval(&strict, Some(&Verdict::untested())).action,
        Warn,
    );
    f.check(
        "strict social",
        r.eval(&strict, Some(&verdict(Some(95), &["social-networking"])))
            .action,
        Warn,
    );
    f.check(
        "strict streaming",
        r.eval(&strict, Some(&verdict(Some(95), &["streaming"])))
            .action,
        Warn,
    );
    f.check("strict unavailable", r.eval(&strict, None).action, Block);
    // Both tunnel finance and health.
    for p in [&default, &strict] {
        r.with(|facts| {
            let d = intercept(p, facts, Some(&verdict(Some(95), &["health"])));
            f.check("tunnel health", d.mode, InterceptMode::Tunnel);
        });
    }
    f.finish();
}

#[test]
fn client_networks_match_mapped_ipv4_and_host_addresses() {
    let p = policy(
        "rules:\n  - id: one\n    match: {clients: [\"192.0.2.77\", \"10.9.0.0/16\", \"2001:db8::/32\"]}\n    action: block\n",
    );
    let mut f = Failures::default();
    for (client, want) in [
        ("192.0.2.77", Some("one")),
        ("192.0.2.78", None),
        ("::ffff:192.0.2.77", Some("one")),
        ("::ffff:10.9.200.1", Some("one")),
        ("10.10.0.1", None),
        ("2001:db8:ffff::1", Some("one")),
        ("2001:db9::1", None),
    ] {
        let o = req("http://example.com/").client(client).eval(&p, None);
        f.check(client, o.rule.as_deref(), want);
    }
    f.finish();
}

#[test]
fn precomputed_offsets_agree_with_jiff() {
    // Every hour of 2026 and a few far-off instants, in zones with and without DST, on
    // both hemispheres: the schedule's minute of the week equals jiff's own conversion.
    for zone in [
        "Europe/Berlin",
        "America/New_York",
        "Australia/Sydney",
        "Asia/Kolkata",
        "UTC",
    ] {
        let s = compile::test_schedule(zone);
        let tz = jiff::tz::TimeZone::get(zone).unwrap();
        let start: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let extra = [
            "1969-07-20T20:17:00Z",
            "2099-12-31T23:59:00Z",
            "2150-06-01T12:00:00Z",
        ];
        let instants = (0..24 * 366)
            .map(|h| Timestamp::from_second(start.as_second() + h * 3600 + 1799).unwrap())
            .chain(extra.iter().map(|t| t.parse().unwrap()))
            // One second either side of every transition from 2001 to 2098.
            .chain(
                tz.following("2001-01-01T00:00:00Z".parse().unwrap())
                    .take_while(|t| t.timestamp().as_second() < 4_070_908_800)
                    .flat_map(|t| {
                        let at = t.timestamp().as_second();
                        [at - 1, at, at + 1].map(|s| Timestamp::from_second(s).unwrap())
                    })
                    .collect::<Vec<_>>(),
            );
        for ts in instants {
            let dt = tz.to_datetime(ts);
            let want = i64::from(dt.weekday().to_monday_zero_offset()) * 1440
                + i64::from(dt.hour()) * 60
                + i64::from(dt.minute());
            assert_eq!(
                i64::from(s.minute_of_week_for_test(ts)),
                want,
                "{zone} {ts}"
            );
        }
    }
}

mod no_panics {
    use proptest::prelude::*;

    use super::*;

    const EXAMPLE: &str = include_str!("../../policies/example.yaml");

    fn prefix(s: &str, cut: usize) -> &str {
        let mut cut = cut.min(s.len());
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        &s[..cut]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn any_host_pattern_parses_or_errs(s in "\\PC{0,48}", path in any::<bool>()) {
            let _ = pattern::parse(&s, path);
        }

        #[test]
        fn truncated_example_compiles_or_errs(cut in 0usize..7000) {
            let _ = Policy::from_yaml(prefix(EXAMPLE, cut), "cut.yaml");
        }

        #[test]
        fn example_with_a_byte_replaced_compiles_or_errs(at in 0usize..7000, c in any::<char>()) {
            let mut t = EXAMPLE.to_owned();
            let head = prefix(EXAMPLE, at).len();
            if let Some(old) = t[head..].chars().next() {
                t.replace_range(head..head + old.len_utf8(), c.encode_utf8(&mut [0; 4]));
            }
            let _ = Policy::from_yaml(&t, "mutated.yaml");
        }

        /// A wildcard made from a host by starring part of a non-top-level label matches
        /// that host and its subdomains, and the evaluation of random URLs never panics.
        #[test]
        fn starred_labels_match_their_host(
            // Letters first: all-numeric names are IPv4 addresses to the canonicalizer.
            labels in prop::collection::vec("[a-z][a-z0-9]{0,7}", 2..5),
            which in 0usize..3,
            from in 0usize..8,
            sub in "[a-z]{1,5}",
        ) {
            let which = which % (labels.len() - 1);
            let label = &labels[which];
            let from = from % label.len();
            let mut starred = labels.clone();
            starred[which] = format!("{}*", &label[..from]);
            let pattern = starred.join(".");
            let yaml = format!("lists:\n  blocked: [\"{pattern}\"]\n");
            let p = Policy::from_yaml(&yaml, "w.yaml").unwrap();
            let host = labels.join(".");
            for url in [format!("http://{host}/"), format!("http://{sub}.{host}/x")] {
                let u = canonicalize(&url).unwrap();
                let facts = RequestFacts {
                    url: &u,
                    client: "192.0.2.1".parse().unwrap(),
                    user: None,
                    groups: &[],
                    now: Timestamp::UNIX_EPOCH,
                };
                let d = evaluate(&p, &facts, None);
                prop_assert_eq!(d.reason, Reason::Blocked, "{} vs {}", pattern, url);
            }
        }
    }
}

#[test]
fn file_settings_compile_overlay_and_refuse_what_does_not_apply() {
    let p = policy(
        "files:\n  content_types: [application/zip, 'Image/*']\n  extensions: [.EXE, msi]\n  max_bytes: 1000\n  suspicious: block\nrules:\n  - id: lab\n    match:\n      clients: [10.0.0.0/8]\n    files:\n      scan: false\n",
    );
    let top = req("http://example.com/a").with(|f| p.files(f));
    assert!(top.scan);
    assert_eq!(top.content_types, ["application/zip", "image/"]);
    assert_eq!(top.extensions, ["exe", "msi"]);
    assert_eq!((top.max_bytes, top.min_bytes), (1000, 1));
    assert_eq!(
        (top.malicious, top.suspicious, top.unavailable),
        (Action::Block, Action::Block, Action::Allow)
    );
    let lab = req("http://example.com/a")
        .client("10.1.2.3")
        .with(|f| p.files(f));
    assert!(!lab.scan, "the rule's overlay");
    assert_eq!(
        lab.extensions,
        ["exe", "msi"],
        "inherited from the top level"
    );
    let empty = policy("{}");
    assert_eq!(
        *req("http://x.test/").with(|f| empty.files(f)),
        FileSettings::default()
    );
    for (yaml, needle) in [
        (
            "files:\n  malicious: warn\n",
            "does not apply to a download",
        ),
        (
            "files:\n  unavailable: monitor\n",
            "does not apply to a download",
        ),
        ("files:\n  content_types: [zip]\n", "is not a media type"),
        ("files:\n  extensions: ['a b']\n", "is not a file extension"),
    ] {
        let e = Policy::from_yaml(yaml, "f.yaml").unwrap_err();
        assert!(e.errors[0].message.contains(needle), "{yaml}: {e}");
        assert_eq!(e.errors[0].line, 2, "{yaml}: {e}");
    }
}
