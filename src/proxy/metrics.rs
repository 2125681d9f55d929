//! The proxy's counters, for the admin listener ([`super::admin`]): Prometheus `/metrics`
//! ([`render`], one function per family group) and the same counters as JSON on `/stats`
//! ([`stats`], with the hosts whose client handshakes failed).
//!
//! # Where it sits
//! Outside the request path: the counters are the relaxed atomics the request path already
//! keeps (filter decisions, cache states, file scans, feedback queue and spool, certificate
//! mints, failed client handshakes, tunnels, DNS lookups, policy reload failures, rejected
//! request heads, client connections, password checks) and the histogram of reputation round
//! trips; a scrape reads them into a fresh `prometheus-client` registry and encodes it in the
//! OpenMetrics text format. Label values come from closed
//! sets only: actions, cache states, outcomes, and the configured source names.
//!
//! # What it costs
//! Nothing per request beyond those atomics; a scrape builds a few dozen samples.
//!
//! # How it fails
//! The admin listener failing to bind is a start-up error naming `admin.listen`. A scrape
//! cannot fail: an encoding error (which would be a bug) answers 500.

use std::sync::atomic::Ordering::Relaxed;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::ProxyState;
use super::filter::Filter;
use crate::feedback::Feedback;
use crate::metrics::{Labels, counter, counter_family, gauge};

/// The current metrics in the OpenMetrics text format.
pub fn render(state: &ProxyState) -> Result<String, std::fmt::Error> {
    let mut r = Registry::with_prefix("webrep");
    if let Some(f) = &state.filter {
        render_decisions(&mut r, f);
        render_reputation(&mut r, f);
        if let Some(fb) = &f.feedback {
            render_feedback(&mut r, fb);
        }
    }
    render_files(&mut r, state);
    render_intercept(&mut r, state);
    render_auth(&mut r, state);
    render_connections(&mut r, state);
    render_dns(&mut r, state);
    render_losses(&mut r, state);
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &r)?;
    Ok(out)
}

/// Filtering decisions by action, by reason and by reputation cache state.
fn render_decisions(r: &mut Registry, f: &Filter) {
    let s = &f.stats;
    counter_family(
        r,
        "decisions",
        "Filtering decisions by action",
        "action",
        ["allow", "monitor", "warn", "continue", "block"]
            .iter()
            .zip(&s.actions)
            .map(|(a, c)| ((*a).to_owned(), c.load(Relaxed))),
    );
    counter_family(
        r,
        "decision_reasons",
        "Filtering decisions by reason (reputation_unavailable: the fail mode decided)",
        "reason",
        crate::policy::Reason::ALL
            .iter()
            .zip(&s.reasons)
            .map(|(a, c)| (a.as_str().to_owned(), c.load(Relaxed))),
    );
    counter_family(
        r,
        "reputation_answers",
        "Reputation answers by cache state (none: decided by a list or rule)",
        "cache",
        ["hit", "miss", "stale", "unavailable", "none"]
            .iter()
            .zip(&s.cache)
            .map(|(a, c)| ((*a).to_owned(), c.load(Relaxed))),
    );
}

/// The reputation client (changes applied, cache drops, source health, round trips) and
/// the policy (reload failures, generation).
fn render_reputation(r: &mut Registry, f: &Filter) {
    counter(
        r,
        "reputation_changes_applied",
        "Cache invalidations applied from the change stream",
        f.reputation.changes_applied.load(Relaxed),
    );
    counter(
        r,
        "reputation_cache_drops",
        "Whole-cache drops: the change follower's first answer, a source switch, a change log that no longer reaches back (or a replaced server store), and admin purges",
        f.reputation.cache_drops.load(Relaxed),
    );
    let up = Family::<Labels, Gauge>::default();
    for (name, healthy) in f.reputation.source_health() {
        up.get_or_create(&vec![("source", name.to_string())])
            .set(i64::from(healthy));
    }
    r.register(
        "reputation_source_up",
        "1 while a reputation source is in use, 0 while it is marked down",
        up,
    );
    r.register(
        "reputation_lookup_seconds",
        "Round trips to the reputation sources (failover included)",
        f.reputation.lookup_seconds.clone(),
    );
    counter(
        r,
        "policy_reload_failures",
        "Policy reloads that failed (the running policy was kept)",
        f.policy.reload_failures.load(Relaxed),
    );
    gauge(
        r,
        "policy_generation",
        "Generation of the loaded policy (1 at start, +1 per successful reload)",
        i64::try_from(f.policy.generation()).unwrap_or(i64::MAX),
    );
}

/// Feedback events by outcome, the memory queue and the spool.
fn render_feedback(r: &mut Registry, fb: &Feedback) {
    let st = &fb.stats;
    counter_family(
        r,
        "feedback_events",
        "Feedback events by outcome (dropped_*, rejected: lost, each cause logged; spool_write_failed: kept in memory only)",
        "outcome",
        st.counters().into_iter().map(|(k, n)| (k.to_owned(), n)),
    );
    gauge(
        r,
        "feedback_queue_events",
        "Feedback events waiting in memory (only while the spool cannot be written)",
        i64::try_from(fb.queue_len()).unwrap_or(i64::MAX),
    );
    gauge(
        r,
        "feedback_spool_events",
        "Feedback events in the spool not yet acknowledged by a server",
        i64::try_from(fb.spool_events()).unwrap_or(i64::MAX),
    );
    gauge(
        r,
        "feedback_spool_bytes",
        "Bytes of those events",
        i64::try_from(fb.spool_bytes()).unwrap_or(i64::MAX),
    );
}

/// Downloads hashed for file reputation, by outcome.
fn render_files(r: &mut Registry, state: &ProxyState) {
    if let Some(sc) = &state.scanner {
        let st = &sc.stats;
        counter_family(
            r,
            "file_scans",
            "Downloads hashed for file reputation, by outcome",
            "outcome",
            [
                ("scanned", &st.scanned),
                ("held", &st.held),
                ("blocked", &st.blocked),
                ("monitored", &st.monitored),
                ("unavailable", &st.unavailable),
            ]
            .into_iter()
            .map(|(k, c)| (k.to_owned(), c.load(Relaxed))),
        );
    }
}

/// Interception: the CA's expiry, certificates minted, failed client handshakes, early
/// upstream handshakes.
fn render_intercept(r: &mut Registry, state: &ProxyState) {
    if let Some(i) = &state.interceptor {
        gauge(
            r,
            "intercept_ca_expiry_timestamp_seconds",
            "When the interception CA's validity ends, unix seconds (alert well before: clients reject every intercepted connection after it)",
            i.minter.ca().not_after.unix_timestamp(),
        );
        counter(
            r,
            "certificates_minted",
            "Leaf certificates minted for intercepted hosts",
            i.minter.minted.load(Relaxed),
        );
        counter(
            r,
            "client_handshake_failures",
            "Client TLS handshakes that failed after interception (per host on the admin listener's /stats)",
            i.failed_handshakes().iter().map(|(_, n)| n).sum(),
        );
        if let Some(e) = &i.early {
            counter_family(
                r,
                "early_upstream_connections",
                "Upstream TLS handshakes started beside an intercepted client's (intercept.early_upstream_ms), and how many a request used",
                "state",
                [("started", &e.started), ("used", &e.used)]
                    .into_iter()
                    .map(|(k, c)| (k.to_owned(), c.load(Relaxed))),
            );
        }
    }
}

/// Tunnels by kind and client connections (open, refused, closed idle, parked).
fn render_connections(r: &mut Registry, state: &ProxyState) {
    counter_family(
        r,
        "tunnels",
        "CONNECT tunnels opened, by kind",
        "kind",
        [
            ("tunnel", &state.tunnels[0]),
            ("intercepted", &state.tunnels[1]),
        ]
        .into_iter()
        .map(|(k, c)| (k.to_owned(), c.load(Relaxed))),
    );
    crate::metrics::conn_limits(
        r,
        [
            "client_connections",
            "client_connections_refused",
            "client_connections_closed_idle",
        ],
        "Client",
        ["proxy.max_connections_per_client", "proxy.max_connections"],
        &state.conns,
    );
    crate::metrics::counter(
        r,
        "client_connections_parked",
        "Idle keep-alive client connections that gave back their HTTP buffers (proxy.client_park_after_ms)",
        state.conns.stats.parked.load(Relaxed),
    );
}

/// Host name lookups by result and the DNS cache.
fn render_dns(r: &mut Registry, state: &ProxyState) {
    let resolver = state.dialer.resolver();
    let dns = &resolver.stats;
    counter_family(
        r,
        "dns_lookups",
        "Host name lookups (names in proxy.hosts and IP literals aside), by result: resolved or failed by the system resolver, or answered from the DNS cache",
        "result",
        [
            ("resolved", &dns.resolved),
            ("failed", &dns.failed),
            ("cached", &dns.cached),
        ]
        .into_iter()
        .map(|(k, c)| (k.to_owned(), c.load(Relaxed))),
    );
    gauge(
        r,
        "dns_cache_names",
        "Names in the DNS cache (answers and remembered failures)",
        i64::try_from(resolver.cached_names()).unwrap_or(i64::MAX),
    );
}

/// What was refused or lost before or after the request path: request heads, access log
/// and diagnostic log lines.
fn render_losses(r: &mut Registry, state: &ProxyState) {
    counter_family(
        r,
        "rejected_requests",
        "Request heads refused before the proxy's service saw them, by class: malformed (400), too_large (431, 414), header_timeout (closed)",
        "class",
        state
            .rejected
            .counts()
            .into_iter()
            .map(|(k, n)| (k.to_owned(), n)),
    );
    counter(
        r,
        "access_log_dropped",
        "Access log lines lost: the writer fell behind, or writing failed",
        state.access_log.dropped(),
    );
    counter(
        r,
        "log_dropped",
        "Diagnostic log lines lost: standard error fell behind, or writing to it failed",
        crate::telemetry::dropped_lines(),
    );
    counter(
        r,
        "access_log_write_failed",
        "Access log lines lost because the destination refused the write (full disk, closed stdout)",
        state.access_log.write_failed(),
    );
}

/// Proxy authentication's families: checks by result, checks waiting for a thread.
fn render_auth(r: &mut Registry, state: &ProxyState) {
    if let Some(auth) = &state.auth {
        let checks = auth.load().checks().clone();
        counter_family(
            r,
            "auth_checks",
            "Proxy credential checks by result: user_/wrong_ hashed (a password hash ran) or cached (answered from the cache of verified or of wrong credentials), malformed, throttled (429: the client address is over auth.failures_per_client), busy (503: the password-check queue was full)",
            "result",
            checks
                .stats
                .counts()
                .into_iter()
                .map(|(k, n)| (k.to_owned(), n)),
        );
        gauge(
            r,
            "auth_hash_queue",
            "Password checks waiting for a thread (at most auth.hash_queue)",
            i64::try_from(checks.queued()).unwrap_or(i64::MAX),
        );
    }
}

/// `/stats`: filtering decisions by action and cache state, reputation changes applied,
/// the policy generation, feedback events by outcome (losses by cause) and the spool,
/// access-log and diagnostic lines lost, request heads refused by class, client connections
/// (open, refused for their address, idle ones closed to make room), DNS and file-scan
/// counters, password checks, and the hosts with failed client handshakes after
/// interception, as JSON.
pub fn stats(state: &ProxyState) -> serde_json::Value {
    let mut v = match &state.filter {
        Some(f) => serde_json::json!({
            "filter": f.stats.to_json(),
            "reputation_changes_applied": f.reputation.changes_applied.load(Relaxed),
            "reputation_cache_drops": f.reputation.cache_drops.load(Relaxed),
            "policy_generation": f.policy.generation(),
        }),
        None => serde_json::json!({ "filter": null }),
    };
    v["feedback"] = feedback_stats(state);
    v["access_log_dropped"] = state.access_log.dropped().into();
    v["access_log_write_failed"] = state.access_log.write_failed().into();
    v["log_dropped"] = crate::telemetry::dropped_lines().into();
    // Request heads refused before the service saw them, by class.
    v["rejected_requests"] = state
        .rejected
        .counts()
        .iter()
        .map(|(k, n)| ((*k).to_owned(), serde_json::Value::from(*n)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    v["connections"] = state.conns.to_json();
    let resolver = state.dialer.resolver();
    v["dns"] = resolver.stats.to_json();
    v["dns"]["cached_names"] = resolver.cached_names().into();
    v["files"] = state
        .scanner
        .as_ref()
        .map_or(serde_json::Value::Null, |s| s.stats.to_json());
    // Hosts whose clients failed the TLS handshake after interception (pinned apps, clients
    // without the CA): candidates for the policy's tunnel_hosts. The 100 with most failures.
    v["failed_handshakes"] = match &state.interceptor {
        Some(i) => i
            .failed_handshakes()
            .into_iter()
            .take(100)
            .map(|(host, n)| serde_json::json!({ "host": host, "count": n }))
            .collect(),
        None => serde_json::Value::Null,
    };
    // The interception CA: which one, and until when clients accept what it signs.
    v["intercept_ca"] = match &state.interceptor {
        Some(i) => {
            let ca = i.minter.ca();
            serde_json::json!({
                "fingerprint": ca.fingerprint(),
                "not_after": ca.not_after.unix_timestamp(),
                "problem": ca.expiry_problem().map(|p| p.to_string()),
            })
        }
        None => serde_json::Value::Null,
    };
    // Early upstream handshakes (intercept.early_upstream_ms): started, taken by a request,
    // kept now.
    v["early_upstream"] = match state.interceptor.as_ref().and_then(|i| i.early.as_ref()) {
        Some(e) => serde_json::json!({
            "started": e.started.load(Relaxed),
            "used": e.used.load(Relaxed),
            "kept": e.kept(),
        }),
        None => serde_json::Value::Null,
    };
    v["auth"] = match &state.auth {
        Some(a) => {
            let checks = a.load().checks().clone();
            let mut counts: serde_json::Map<String, serde_json::Value> = checks
                .stats
                .counts()
                .into_iter()
                .map(|(k, n)| (k.to_owned(), n.into()))
                .collect();
            counts.insert("queued".into(), checks.queued().into());
            counts.into()
        }
        None => serde_json::Value::Null,
    };
    v
}

/// Feedback events by outcome (losses by cause), the memory queue and the spool; `null`
/// without feedback.
fn feedback_stats(state: &ProxyState) -> serde_json::Value {
    match state.filter.as_ref().and_then(|f| f.feedback.as_ref()) {
        Some(fb) => {
            let mut o: serde_json::Map<String, serde_json::Value> = fb
                .stats
                .counters()
                .into_iter()
                .map(|(k, n)| (k.to_owned(), n.into()))
                .collect();
            o.insert("queue_events".into(), fb.queue_len().into());
            o.insert("spool_events".into(), fb.spool_events().into());
            o.insert("spool_bytes".into(), fb.spool_bytes().into());
            o.into()
        }
        None => serde_json::Value::Null,
    }
}
