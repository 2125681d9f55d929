//! The label sets of the proxy's metric families: one struct per family shape, and one enum
//! per closed set of label values, spelled as the values (so the derived encoding writes
//! them as they are). Only configured reputation source names come from outside a closed
//! set.
//!
//! # Where it sits
//! Read by the proxy's collector ([`super::ProxyCollector`]) at scrape time, never on the
//! request path, which keeps counting in the relaxed atomics of the modules that do the work.
//! `ALL` lists a set in the order of the counters it labels.
//!
//! # What it costs, how it fails
//! Nothing: plain values, encoded without allocating; nothing here can fail.

#![allow(non_camel_case_types)]

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};

/// What the filter did (`continue`: a warning the user went past), in the order of
/// [`crate::proxy::filter::FilterStats::actions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Action {
    Allow,
    Monitor,
    Warn,
    Continue,
    Block,
}

impl Action {
    pub(super) const ALL: [Action; 5] = [
        Action::Allow,
        Action::Monitor,
        Action::Warn,
        Action::Continue,
        Action::Block,
    ];
}

/// Encoded by hand: `continue` is a Rust keyword, so no variant can be spelled as the value.
impl EncodeLabelValue for Action {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        let s = match self {
            Action::Allow => "allow",
            Action::Monitor => "monitor",
            Action::Warn => "warn",
            Action::Continue => "continue",
            Action::Block => "block",
        };
        EncodeLabelValue::encode(&s, encoder)
    }
}

/// The policy's reasons, as the access log spells them.
impl EncodeLabelValue for crate::policy::Reason {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// How the reputation cache answered (`none`: a list or rule decided, nothing was asked),
/// in the order of [`crate::proxy::filter::FilterStats::cache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub(super) enum Cache {
    hit,
    miss,
    stale,
    unavailable,
    none,
}

impl Cache {
    pub(super) const ALL: [Cache; 5] = [
        Cache::hit,
        Cache::miss,
        Cache::stale,
        Cache::unavailable,
        Cache::none,
    ];
}

/// What became of feedback events, in the order of
/// [`crate::feedback::FeedbackStats::counters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub(super) enum Feedback {
    queued,
    folded,
    aggregate_flushed_early,
    sent,
    duplicate,
    spooled,
    replayed,
    dropped_queue,
    dropped_spool,
    dropped_damaged,
    rejected,
    spool_write_failed,
}

impl Feedback {
    pub(super) const ALL: [Feedback; 12] = [
        Feedback::queued,
        Feedback::folded,
        Feedback::aggregate_flushed_early,
        Feedback::sent,
        Feedback::duplicate,
        Feedback::spooled,
        Feedback::replayed,
        Feedback::dropped_queue,
        Feedback::dropped_spool,
        Feedback::dropped_damaged,
        Feedback::rejected,
        Feedback::spool_write_failed,
    ];
}

/// What became of a download hashed for file reputation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub(super) enum Scan {
    scanned,
    held,
    blocked,
    monitored,
    unavailable,
}

/// Early upstream handshakes: started, and taken by a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub(super) enum Early {
    started,
    used,
}

/// A CONNECT tunnel relayed untouched, or intercepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub(super) enum Tunnel {
    tunnel,
    intercepted,
}

/// How a plain TCP tunnel's bytes were moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub(super) enum RelayPath {
    copy,
    splice,
}

/// How a host name lookup was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub(super) enum Dns {
    resolved,
    failed,
    cached,
}

/// Why a request head was refused before the service saw it, in the order of
/// [`crate::proxy::conn::Rejected::counts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub(super) enum Head {
    malformed,
    too_large,
    header_timeout,
}

impl Head {
    pub(super) const ALL: [Head; 3] = [Head::malformed, Head::too_large, Head::header_timeout];
}

/// How a proxy credential check ended, in the order of
/// [`crate::proxy::auth::AuthStats::counts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub(super) enum Auth {
    user_cached,
    user_hashed,
    wrong_cached,
    wrong_hashed,
    malformed,
    throttled,
    busy,
}

impl Auth {
    pub(super) const ALL: [Auth; 7] = [
        Auth::user_cached,
        Auth::user_hashed,
        Auth::wrong_cached,
        Auth::wrong_hashed,
        Auth::malformed,
        Auth::throttled,
        Auth::busy,
    ];
}

/// `{action}` of `webrep_decisions`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct ActionLabels {
    pub action: Action,
}

/// `{reason}` of `webrep_decision_reasons`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct ReasonLabels {
    pub reason: crate::policy::Reason,
}

/// `{cache}` of `webrep_reputation_answers`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct CacheLabels {
    pub cache: Cache,
}

/// `{source}` of `webrep_reputation_source_up`: a configured source's name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct SourceLabels {
    pub source: String,
}

/// `{outcome}` of `webrep_feedback_events`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct FeedbackLabels {
    pub outcome: Feedback,
}

/// `{outcome}` of `webrep_file_scans`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct ScanLabels {
    pub outcome: Scan,
}

/// `{state}` of `webrep_early_upstream_connections`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct EarlyLabels {
    pub state: Early,
}

/// `{kind}` of `webrep_tunnels`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct TunnelLabels {
    pub kind: Tunnel,
}

/// `{path}` of `webrep_tunnel_bytes`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct RelayPathLabels {
    pub path: RelayPath,
}

/// `{result}` of `webrep_dns_lookups`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct DnsLabels {
    pub result: Dns,
}

/// `{class}` of `webrep_rejected_requests`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct HeadLabels {
    pub class: Head,
}

/// `{result}` of `webrep_auth_checks`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct AuthLabels {
    pub result: Auth,
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::registry::Registry;

    use super::*;

    /// The text of one sample labelled `labels`.
    fn encoded<S>(labels: S) -> String
    where
        S: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
    {
        let family = Family::<S, Counter>::default();
        family.get_or_create(&labels).inc();
        let mut r = Registry::default();
        r.register("x", "x", family);
        crate::metrics::encode(&r).unwrap()
    }

    /// Each value, encoded, is the name its counter has in the module that keeps it.
    fn check<S>(key: &str, labels: impl IntoIterator<Item = S>, names: &[&str])
    where
        S: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
    {
        let labels: Vec<S> = labels.into_iter().collect();
        assert_eq!(labels.len(), names.len(), "{key}");
        for (l, name) in labels.into_iter().zip(names) {
            let text = encoded(l);
            assert!(
                text.contains(&format!("{{{key}=\"{name}\"}}")),
                "{name}: {text}"
            );
        }
    }

    #[test]
    fn values_in_the_order_of_the_counters_they_label() {
        let feedback = crate::feedback::FeedbackStats::default().counters();
        check(
            "outcome",
            Feedback::ALL.map(|outcome| FeedbackLabels { outcome }),
            &feedback.map(|(k, _)| k),
        );
        let heads = crate::proxy::conn::Rejected::default().counts();
        check(
            "class",
            Head::ALL.map(|class| HeadLabels { class }),
            &heads.map(|(k, _)| k),
        );
        let auth = crate::proxy::auth::AuthStats::default().counts();
        check(
            "result",
            Auth::ALL.map(|result| AuthLabels { result }),
            &auth.map(|(k, _)| k),
        );
        check(
            "reason",
            crate::policy::Reason::ALL.map(|reason| ReasonLabels { reason }),
            &crate::policy::Reason::ALL.map(crate::policy::Reason::as_str),
        );
        check(
            "action",
            Action::ALL.map(|action| ActionLabels { action }),
            &["allow", "monitor", "warn", "continue", "block"],
        );
    }
}

/// Label set of `webrep_requests_total`: a method of [`crate::proxy::traffic::METHODS`] and a
/// status class of [`crate::proxy::traffic::CLASSES`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct RequestLabels {
    pub method: &'static str,
    pub class: &'static str,
}

/// Label set of `webrep_client_bytes_total`: `in` (from clients) or `out` (to clients).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct DirectionLabels {
    pub direction: &'static str,
}
