//! The proxy's counters, for the admin listener ([`super::admin`]): Prometheus `/metrics`
//! ([`registry`], built once, read by [`ProxyCollector`] at each scrape, one function per
//! family group) and the same counters as JSON on `/stats` ([`stats`], with the hosts whose
//! client handshakes failed).
//!
//! # Where it sits
//! Outside the request path: the counters are the relaxed atomics the request path already
//! keeps (filter decisions, cache states, file scans, feedback queue and spool, certificate
//! mints, failed client handshakes, tunnels, DNS lookups, policy reload failures, rejected
//! request heads, client connections, password checks, upstream pool bounds, the client-side
//! traffic of [`super::traffic`]) and the histogram of reputation round trips, beside the
//! process metrics ([`crate::metrics::ProcessCollector`], unprefixed) and the build info; a scrape runs the registered collector, which writes them with typed label sets
//! (`labels`) in the OpenMetrics text format. Label values come from closed sets only:
//! actions, cache states, outcomes, and the configured source names.
//!
//! # What it costs
//! Nothing per request beyond those atomics; a scrape writes a few dozen samples.
//!
//! # How it fails
//! The admin listener failing to bind is a start-up error naming `admin.listen`. A scrape
//! cannot fail: an encoding error (which would be a bug) answers 500.

mod labels;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::ProxyState;
use super::filter::Filter;
use crate::feedback::Feedback;
use crate::metrics::{counter, counters, gauge};
use labels::{
    Action, ActionLabels, Auth, AuthLabels, Cache, CacheLabels, DirectionLabels, Dns, DnsLabels,
    Early, EarlyLabels, FeedbackLabels, Head, HeadLabels, ReasonLabels, RelayPath, RelayPathLabels,
    RequestLabels, Scan, ScanLabels, SourceLabels, Tunnel, TunnelLabels,
};

/// The proxy's registry (prefix `webrep`), built once per admin listener: one collector
/// that reads `state` at each scrape.
pub fn registry(state: Arc<ProxyState>) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(crate::metrics::ProcessCollector));
    r.sub_registry_with_prefix("webrep")
        .register_collector(Box::new(ProxyCollector(state)));
    r
}

/// Writes every family of the proxy from its state, at scrape time.
pub struct ProxyCollector(Arc<ProxyState>);

impl fmt::Debug for ProxyCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProxyCollector")
    }
}

impl Collector for ProxyCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let state = &*self.0;
        if let Some(f) = &state.filter {
            encode_decisions(&mut enc, f)?;
            encode_reputation(&mut enc, f)?;
            if let Some(fb) = &f.feedback {
                encode_feedback(&mut enc, fb)?;
            }
        }
        encode_files(&mut enc, state)?;
        encode_intercept(&mut enc, state)?;
        encode_auth(&mut enc, state)?;
        encode_connections(&mut enc, state)?;
        encode_traffic(&mut enc, state)?;
        encode_dns(&mut enc, state)?;
        encode_upstream_pool(&mut enc, state)?;
        crate::metrics::allocator(&mut enc)?;
        crate::metrics::build_info(&mut enc)?;
        encode_losses(&mut enc, state)
    }
}

/// Each label value with the count at its position in `counts`, a module's own `(name,
/// count)` list of the same length (the [`labels`] tests check that the names agree).
fn by_position<V, S, const N: usize>(
    values: [V; N],
    counts: [(&str, u64); N],
    labels: impl Fn(V) -> S,
) -> impl Iterator<Item = (S, u64)> {
    values
        .into_iter()
        .zip(counts)
        .map(move |(v, (_, n))| (labels(v), n))
}

/// Each label value with its counter's count now.
fn loaded<'a, V: 'a, S, const N: usize>(
    pairs: [(V, &'a AtomicU64); N],
    labels: impl Fn(V) -> S + 'a,
) -> impl Iterator<Item = (S, u64)> + 'a {
    pairs
        .into_iter()
        .map(move |(v, c)| (labels(v), c.load(Relaxed)))
}

/// Filtering decisions by action, by reason and by reputation cache state.
fn encode_decisions(enc: &mut DescriptorEncoder, f: &Filter) -> fmt::Result {
    let s = &f.stats;
    counters(
        enc,
        "decisions",
        "Filtering decisions by action",
        Action::ALL
            .into_iter()
            .zip(&s.actions)
            .map(|(action, c)| (ActionLabels { action }, c.load(Relaxed))),
    )?;
    counters(
        enc,
        "decision_reasons",
        "Filtering decisions by reason (reputation_unavailable: the fail mode decided)",
        crate::policy::Reason::ALL
            .into_iter()
            .zip(&s.reasons)
            .map(|(reason, c)| (ReasonLabels { reason }, c.load(Relaxed))),
    )?;
    counters(
        enc,
        "reputation_answers",
        "Reputation answers by cache state (none: decided by a list or rule)",
        Cache::ALL
            .into_iter()
            .zip(&s.cache)
            .map(|(cache, c)| (CacheLabels { cache }, c.load(Relaxed))),
    )
}

/// The reputation client (changes applied, cache drops, key summary, source health, round
/// trips) and the policy (reload failures, generation).
fn encode_reputation(enc: &mut DescriptorEncoder, f: &Filter) -> fmt::Result {
    counter(
        enc,
        "reputation_changes_applied",
        "Cache invalidations applied from the change stream",
        f.reputation.changes_applied.load(Relaxed),
    )?;
    counter(
        enc,
        "reputation_cache_drops",
        "Whole-cache drops: the change follower's first answer, a source switch, a change log that no longer reaches back (or a replaced server store), and admin purges",
        f.reputation.cache_drops.load(Relaxed),
    )?;
    crate::metrics::family(
        enc,
        "reputation_source_up",
        "1 while a reputation source is in use, 0 while it is marked down",
        f.reputation.source_health().into_iter().map(|(name, up)| {
            let labels = SourceLabels {
                source: name.to_string(),
            };
            (labels, ConstGauge::new(i64::from(up)))
        }),
    )?;
    counter(
        enc,
        "reputation_summary_skips",
        "Lookups answered untested by the key summary (no key on the host or its parents), with no round trip",
        f.reputation.summary_skips.load(Relaxed),
    )?;
    counter(
        enc,
        "reputation_summary_loads",
        "Key summaries loaded from the followed source",
        f.reputation.summary_loads.load(Relaxed),
    )?;
    let (hosts, bytes) = f.reputation.summary_size().unwrap_or((0, 0));
    gauge(
        enc,
        "reputation_summary_hosts",
        "Hosts in the key summary (0 while none is loaded: every host is asked)",
        hosts,
    )?;
    gauge(
        enc,
        "reputation_summary_bytes",
        "Memory of the key summary",
        bytes,
    )?;
    crate::metrics::metric(
        enc,
        "reputation_lookup_seconds",
        "Round trips to the reputation sources (failover included)",
        &f.reputation.lookup_seconds,
    )?;
    counter(
        enc,
        "policy_reload_failures",
        "Policy reloads that failed (the running policy was kept)",
        f.policy.reload_failures.load(Relaxed),
    )?;
    gauge(
        enc,
        "policy_generation",
        "Generation of the loaded policy (1 at start, +1 per successful reload)",
        f.policy.generation(),
    )
}

/// Feedback events by outcome, the memory queue and the spool.
fn encode_feedback(enc: &mut DescriptorEncoder, fb: &Feedback) -> fmt::Result {
    counters(
        enc,
        "feedback_events",
        "Feedback events by outcome (dropped_*, rejected: lost, each cause logged; spool_write_failed: kept in memory only; folded: occurrences folded into aggregates)",
        by_position(labels::Feedback::ALL, fb.stats.counters(), |outcome| {
            FeedbackLabels { outcome }
        }),
    )?;
    gauge(
        enc,
        "feedback_queue_events",
        "Feedback events waiting in memory (only while the spool cannot be written)",
        fb.queue_len(),
    )?;
    gauge(
        enc,
        "feedback_spool_events",
        "Feedback events in the spool not yet acknowledged by a server",
        fb.spool_events(),
    )?;
    gauge(
        enc,
        "feedback_spool_bytes",
        "Bytes of those events",
        fb.spool_bytes(),
    )
}

/// Downloads hashed for file reputation, by outcome.
fn encode_files(enc: &mut DescriptorEncoder, state: &ProxyState) -> fmt::Result {
    let Some(sc) = &state.scanner else {
        return Ok(());
    };
    let st = &sc.stats;
    counters(
        enc,
        "file_scans",
        "Downloads hashed for file reputation, by outcome",
        loaded(
            [
                (Scan::scanned, &st.scanned),
                (Scan::held, &st.held),
                (Scan::blocked, &st.blocked),
                (Scan::monitored, &st.monitored),
                (Scan::unavailable, &st.unavailable),
            ],
            |outcome| ScanLabels { outcome },
        ),
    )
}

/// Interception: the CA's expiry, certificates minted, failed client handshakes, early
/// upstream handshakes.
fn encode_intercept(enc: &mut DescriptorEncoder, state: &ProxyState) -> fmt::Result {
    let Some(i) = &state.interceptor else {
        return Ok(());
    };
    gauge(
        enc,
        "intercept_ca_expiry_timestamp_seconds",
        "When the interception CA's validity ends, unix seconds (alert well before: clients reject every intercepted connection after it)",
        i.minter.ca().not_after.unix_timestamp(),
    )?;
    counter(
        enc,
        "certificates_minted",
        "Leaf certificates minted for intercepted hosts",
        i.minter.minted.load(Relaxed),
    )?;
    counter(
        enc,
        "client_handshake_failures",
        "Client TLS handshakes that failed after interception (per host on the admin listener's /stats)",
        i.failed_handshakes().iter().map(|(_, n)| n).sum(),
    )?;
    let Some(e) = &i.early else {
        return Ok(());
    };
    counters(
        enc,
        "early_upstream_connections",
        "Upstream TLS handshakes started beside an intercepted client's (intercept.early_upstream_ms), and how many a request used",
        loaded(
            [(Early::started, &e.started), (Early::used, &e.used)],
            |state| EarlyLabels { state },
        ),
    )
}

/// Tunnels by kind and client connections (open, refused, closed idle, parked).
fn encode_connections(enc: &mut DescriptorEncoder, state: &ProxyState) -> fmt::Result {
    counters(
        enc,
        "tunnels",
        "CONNECT tunnels opened, by kind",
        loaded(
            [
                (Tunnel::tunnel, &state.tunnels[0]),
                (Tunnel::intercepted, &state.tunnels[1]),
            ],
            |kind| TunnelLabels { kind },
        ),
    )?;
    counters(
        enc,
        "tunnel_bytes",
        "Bytes relayed both ways by CONNECT tunnels that are not intercepted and by WebSockets, by path: spliced (proxy.splice, Linux, plain TCP on both sides) or copied",
        loaded(
            [
                (RelayPath::copy, &state.relayed_bytes[0]),
                (RelayPath::splice, &state.relayed_bytes[1]),
            ],
            |path| RelayPathLabels { path },
        ),
    )?;
    crate::metrics::conn_limits(
        enc,
        [
            "client_connections",
            "client_connections_refused",
            "client_connections_closed_idle",
        ],
        "Client",
        ["proxy.max_connections_per_client", "proxy.max_connections"],
        crate::metrics::conn_counts(&state.conns),
    )?;
    counter(
        enc,
        "client_connections_parked",
        "Idle keep-alive client connections that gave back their HTTP buffers (proxy.client_park_after_ms)",
        state.conns.stats.parked.load(Relaxed),
    )
}

/// Client-side traffic ([`super::traffic`]): requests by method and status class, body
/// bytes both ways, tunnels open now.
fn encode_traffic(enc: &mut DescriptorEncoder, state: &ProxyState) -> fmt::Result {
    let t = &state.traffic;
    counters(
        enc,
        "requests",
        "Requests answered, by method (other: any method not named) and status class, counted when the response head is ready (the proxy's own pages and refusals included; request heads refused before they were read whole are in rejected_requests)",
        t.requests()
            .map(|(method, class, n)| (RequestLabels { method, class }, n)),
    )?;
    counters(
        enc,
        "client_bytes",
        "Body bytes received from clients (in: request bodies, what clients sent into tunnels and WebSockets) and sent to them (out: response bodies, what tunnels and WebSockets relayed to clients), counted when each body or relay ends",
        [
            (
                DirectionLabels { direction: "in" },
                t.bytes_in.load(Relaxed),
            ),
            (
                DirectionLabels { direction: "out" },
                t.bytes_out.load(Relaxed),
            ),
        ],
    )?;
    gauge(
        enc,
        "open_tunnels",
        "CONNECT tunnels open now, relayed or intercepted",
        t.open_tunnels(),
    )
}

/// Host name lookups by result and the DNS cache.
fn encode_dns(enc: &mut DescriptorEncoder, state: &ProxyState) -> fmt::Result {
    let resolver = state.dialer.resolver();
    let dns = &resolver.stats;
    counters(
        enc,
        "dns_lookups",
        "Host name lookups (names in proxy.hosts and IP literals aside), by result: resolved or failed by the resolver (proxy.dns_resolver), or answered from the DNS cache",
        loaded(
            [
                (Dns::resolved, &dns.resolved),
                (Dns::failed, &dns.failed),
                (Dns::cached, &dns.cached),
            ],
            |result| DnsLabels { result },
        ),
    )?;
    gauge(
        enc,
        "dns_cache_names",
        "Names in the DNS cache (answers and remembered failures)",
        resolver.cached_names(),
    )?;
    gauge(
        enc,
        "dns_cache_bytes",
        "Bytes the DNS cache's entries weigh against proxy.dns_cache_bytes",
        resolver.cached_bytes(),
    )
}

/// Upstream connections open and idle in the pools, and idle ones closed to keep within
/// `proxy.upstream_max_idle`.
fn encode_upstream_pool(enc: &mut DescriptorEncoder, state: &ProxyState) -> fmt::Result {
    let c = super::pool::IdleBound::counts(&state.upstream_bounds);
    gauge(
        enc,
        "upstream_connections",
        "Upstream connections the pooled clients hold open, busy or idle (tunnels aside)",
        c.open,
    )?;
    gauge(
        enc,
        "upstream_idle_connections",
        "Pooled HTTP/1 upstream connections waiting for reuse (at most proxy.upstream_max_idle)",
        c.idle,
    )?;
    counter(
        enc,
        "upstream_pool_evictions",
        "Idle upstream connections closed because proxy.upstream_max_idle were idle",
        c.evictions,
    )?;
    let entries = state.clients.iter().map(|p| p.idle()).sum::<usize>()
        + state
            .https_clients
            .iter()
            .map(|c| c.h1.idle())
            .sum::<usize>();
    gauge(
        enc,
        "upstream_pool_entries",
        "Entries the HTTP/1.1 upstream pools hold, connections closed since and not yet dropped included",
        entries,
    )
}

/// What was refused or lost before or after the request path: request heads, access log
/// and diagnostic log lines.
fn encode_losses(enc: &mut DescriptorEncoder, state: &ProxyState) -> fmt::Result {
    counters(
        enc,
        "rejected_requests",
        "Request heads refused before the proxy's service saw them, by class: malformed (400), too_large (431, 414), header_timeout (closed)",
        by_position(Head::ALL, state.rejected.counts(), |class| HeadLabels {
            class,
        }),
    )?;
    counter(
        enc,
        "access_log_dropped",
        "Access log lines lost: the writer fell behind, or writing failed",
        state.access_log.dropped(),
    )?;
    counter(
        enc,
        "log_dropped",
        "Diagnostic log lines lost: standard error fell behind, or writing to it failed",
        crate::telemetry::dropped_lines(),
    )?;
    counter(
        enc,
        "access_log_write_failed",
        "Access log lines lost because the destination refused the write (full disk, closed stdout)",
        state.access_log.write_failed(),
    )
}

/// Proxy authentication's families: checks by result, checks waiting for a thread.
fn encode_auth(enc: &mut DescriptorEncoder, state: &ProxyState) -> fmt::Result {
    let Some(auth) = &state.auth else {
        return Ok(());
    };
    let checks = auth.load().checks().clone();
    counters(
        enc,
        "auth_checks",
        "Proxy credential checks by result: user_/wrong_ hashed (a password hash ran) or cached (answered from the cache of verified or of wrong credentials), malformed, throttled (429: the client address is over auth.failures_per_client), busy (503: the password-check queue was full)",
        by_position(Auth::ALL, checks.stats.counts(), |result| AuthLabels {
            result,
        }),
    )?;
    gauge(
        enc,
        "auth_hash_queue",
        "Password checks waiting for a thread (at most auth.hash_queue)",
        checks.queued(),
    )
}

/// `/stats`: filtering decisions by action and cache state, reputation changes applied,
/// the policy generation, feedback events by outcome (losses by cause) and the spool,
/// access-log and diagnostic lines lost, request heads refused by class, client connections
/// (open, refused for their address, idle ones closed to make room), client-side traffic
/// (requests by method and status class, body bytes, open tunnels), DNS and file-scan
/// counters, password checks, and the hosts with failed client handshakes after
/// interception, as JSON.
pub fn stats(state: &ProxyState) -> serde_json::Value {
    let mut v = match &state.filter {
        Some(f) => serde_json::json!({
            "filter": f.stats.to_json(),
            "reputation_changes_applied": f.reputation.changes_applied.load(Relaxed),
            "reputation_cache_drops": f.reputation.cache_drops.load(Relaxed),
            "reputation_summary_skips": f.reputation.summary_skips.load(Relaxed),
            "reputation_summary_hosts": f.reputation.summary_size().map(|(n, _)| n),
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
    v["traffic"] = state.traffic.to_json();
    let resolver = state.dialer.resolver();
    let pool = super::pool::IdleBound::counts(&state.upstream_bounds);
    v["upstream_pool"] = serde_json::json!({
        "open": pool.open,
        "idle": pool.idle,
        "evictions": pool.evictions,
    });
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
            o.insert("aggregates_held".into(), fb.aggregates_held().into());
            o.into()
        }
        None => serde_json::Value::Null,
    }
}
