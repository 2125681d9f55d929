//! Fuzz target for policies: any text either compiles (`Policy::from_yaml`) or is refused with
//! errors, never panics; a policy that compiles decides a few requests without panicking, and
//! the proxy's two-step evaluation (`prepare`, then `settled` or `decide`) agrees with
//! `evaluate`.
//! Seed it with `policies/*.yaml` (see `fuzz/README.md`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use webrep::canon::canonicalize;
use webrep::policy::{Decision, Policy, Reason, RequestFacts, evaluate, intercept, prepare};
use webrep::model::Verdict;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(policy) = Policy::from_yaml(text, "fuzz.yaml") else {
        return;
    };
    let groups = ["staff".to_owned()];
    for (url, user) in [
        ("http://example.com/", None),
        ("https://a.b.example.org:8443/x/y.exe?q=1", Some("alice")),
        ("http://10.1.2.3/", Some("bob")),
    ] {
        let url = canonicalize(url).unwrap();
        for now in [0i64, 1_764_000_000, 1_764_043_200] {
            let facts = RequestFacts {
                url: &url,
                client: "192.168.1.20".parse().unwrap(),
                user,
                groups: &groups,
                now: jiff::Timestamp::from_second(now).unwrap(),
            };
            let prepared = prepare(&policy, &facts);
            let settled = prepared.settled();
            assert_eq!(prepared.stale_window(), policy.stale_window(&facts));
            for verdict in [None, Some(Verdict::untested())] {
                let d = evaluate(&policy, &facts, verdict.as_ref());
                assert_eq!(prepared.decide(verdict.as_ref()), d);
                let by_list_or_rule =
                    matches!(d.reason, Reason::Approved | Reason::Blocked | Reason::Rule);
                assert_eq!(settled.is_some(), by_list_or_rule, "{d:?}");
                if let Some(s) = settled {
                    assert_eq!(s, Decision { risk: None, ..d });
                }
                let _ = intercept(&policy, &facts, verdict.as_ref());
            }
        }
    }
});
