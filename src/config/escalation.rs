//! The server's side of feedback in the `server:` section: how long events are kept and the
//! escalation rules that turn reports into table entries ([`FeedbackOptions`]).
//!
//! Read by the reputation server, which applies the rules on every ingest and swaps them on
//! reload. Fails on a zero retention and on a rule with no kinds, zero thresholds, a zero
//! window, a score over 100 or an unknown category; a rule's error names its index.

use std::time::Duration;

use crate::api::events::Kind;
use crate::model::{Category, Score};

use super::check::{DEFAULTS_ARE_VALID, InvalidValue, positive};
use super::raw::{RawEscalationRule, RawServerConfig};

/// One `server.escalation` rule: when events of `kinds` about one host come from at least
/// `distinct_clients` distinct clients (proxy and client address together), sent with at
/// least `distinct_reporters` different tokens, within `window_secs`, the host gets an
/// entry with `score` (and `category`).
#[derive(Debug, Clone, PartialEq)]
pub struct EscalationRule {
    /// Event kinds counted.
    pub kinds: Vec<Kind>,
    /// Distinct clients needed.
    pub distinct_clients: u32,
    /// Distinct reporters (bearer tokens) needed: with one token per proxy, 2 or more means
    /// no single proxy, or stolen token, can escalate a host by claiming many clients.
    /// 1 counts clients only.
    pub distinct_reporters: u32,
    /// The window, seconds back from the newest event.
    pub window_secs: u64,
    /// The score of the entry written.
    pub score: Score,
    /// Its category, if any.
    pub category: Option<Category>,
}

impl EscalationRule {
    /// Validates rule number `i` of `server.escalation`.
    fn validate(i: usize, r: RawEscalationRule) -> Result<Self, InvalidValue> {
        let bad = |why: String| InvalidValue::new("server.escalation", format!("rule {i}: {why}"));
        if r.kinds.is_empty() {
            return Err(bad("`kinds` is empty".into()));
        }
        if r.distinct_clients == 0 {
            return Err(bad("`distinct_clients` must be at least 1".into()));
        }
        if r.distinct_reporters == 0 {
            return Err(bad("`distinct_reporters` must be at least 1".into()));
        }
        if r.window_secs == 0 {
            return Err(bad("`window_secs` must be greater than 0".into()));
        }
        let score =
            Score::new(r.score).ok_or_else(|| bad(format!("score {} is over 100", r.score)))?;
        let category = r
            .category
            .as_deref()
            .map(Category::parse)
            .transpose()
            .map_err(|e| bad(e.to_string()))?;
        Ok(EscalationRule {
            kinds: r.kinds,
            distinct_clients: r.distinct_clients,
            distinct_reporters: r.distinct_reporters,
            window_secs: r.window_secs,
            score,
            category,
        })
    }
}

/// What the server does with feedback events: `server.event_retention_days` and
/// `server.escalation`.
#[derive(Debug, Clone)]
pub struct FeedbackOptions {
    /// Events received longer ago than this are pruned (checked every minute).
    pub retention: Duration,
    /// `server.escalation` rules, applied on every ingest.
    pub escalation: Vec<EscalationRule>,
}

impl TryFrom<&RawServerConfig> for FeedbackOptions {
    type Error = InvalidValue;

    fn try_from(s: &RawServerConfig) -> Result<Self, InvalidValue> {
        let escalation = s
            .escalation
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, r)| EscalationRule::validate(i, r))
            .collect::<Result<Vec<_>, _>>()?;
        let days = positive("server.event_retention_days", s.event_retention_days)?;
        Ok(FeedbackOptions {
            retention: Duration::from_secs(days.saturating_mul(86_400)),
            escalation,
        })
    }
}

/// The built-in `server:` defaults: their retention, no rules.
impl Default for FeedbackOptions {
    fn default() -> Self {
        Self::try_from(&RawServerConfig::default()).expect(DEFAULTS_ARE_VALID)
    }
}
