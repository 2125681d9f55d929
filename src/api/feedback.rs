//! What an admin reads and does about feedback (`docs/feedback.md`): the stored events
//! (`GET /v1/events`), their aggregates (`GET /v1/feedback/summary`), the escalations
//! (`GET /v1/escalations`) and reverting one (`POST /v1/escalations/revert`), as the server
//! writes them and as `webrep feedback` reads them. The events themselves are
//! [`super::events`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The answer to `GET /v1/events`: stored events, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvents {
    /// Each event's JSON as its proxy sent it, with `reporter` added: a fingerprint of the
    /// token it was posted with.
    pub events: Vec<serde_json::Value>,
}

/// `POST /v1/escalations/revert` (admin): the escalated key to revert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revert {
    /// The key (`host/`).
    pub key: String,
}

/// The answer to `POST /v1/escalations/revert`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reverted {
    /// The key reverted, canonical.
    pub reverted: String,
    /// The change sequence number of the revert.
    pub seq: u64,
}

/// The answer to `GET /v1/feedback/summary`: the aggregates over the events since
/// `since_ms`, each list at most the limit asked for long.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// The start of the window, unix milliseconds.
    pub since_ms: i64,
    /// Events per kind.
    pub kinds: BTreeMap<String, i64>,
    /// Untested hosts, most distinct clients first.
    pub untested_hosts: Vec<UntestedHost>,
    /// Blocks per policy rule, most first.
    pub blocks_by_rule: Vec<RuleBlocks>,
    /// Blocks per category, most first.
    pub blocks_by_category: Vec<CategoryBlocks>,
    /// User reports ("report a mistake"), newest first.
    pub user_reports: Vec<UserReport>,
}

/// An untested host and who saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UntestedHost {
    /// The host.
    pub host: String,
    /// Distinct clients (per proxy).
    pub clients: i64,
    /// Distinct proxies.
    pub proxies: i64,
    /// Events.
    pub events: i64,
}

/// Blocks by one policy rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleBlocks {
    /// The rule's id; `null` for blocks no rule named.
    pub rule: Option<String>,
    /// How many.
    pub blocks: i64,
}

/// Blocks of one category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CategoryBlocks {
    /// The category; `null` for blocks without one.
    pub category: Option<String>,
    /// How many.
    pub blocks: i64,
}

/// A user's report of a mistake, with its ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserReport {
    /// When, unix milliseconds.
    pub time: i64,
    /// The proxy that sent it.
    pub proxy: String,
    /// The event's id.
    pub id: String,
    /// The ticket shown on the page.
    pub ticket: Option<String>,
    /// The host reported.
    pub host: Option<String>,
    /// The URL reported.
    pub url: Option<String>,
    /// The client that reported it.
    pub client: Option<String>,
    /// The user's comment.
    pub comment: Option<String>,
}

/// The answer to `GET /v1/escalations`: every escalation fired, reverted ones included,
/// newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escalations {
    /// The escalations.
    pub escalations: Vec<Escalation>,
}

/// An escalation: an entry an escalation rule wrote for a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escalation {
    /// The entry's key (`host/`).
    pub key: String,
    /// The host.
    pub host: String,
    /// The rule's index in `server.escalation`.
    pub rule: i64,
    /// The score written.
    pub score: i64,
    /// The category written.
    pub category: Option<String>,
    /// Distinct clients behind it.
    pub clients: i64,
    /// When it fired, unix milliseconds.
    pub fired_ms: i64,
    /// When it was reverted, unix milliseconds; `null` while active.
    pub reverted_ms: Option<i64>,
    /// The change sequence number of its write.
    pub seq: i64,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn answers_have_their_documented_fields() {
        let reverted = Reverted {
            reverted: "bad.test/".into(),
            seq: 7,
        };
        assert_eq!(
            serde_json::to_value(&reverted).unwrap(),
            json!({ "reverted": "bad.test/", "seq": 7 })
        );
        let events = StoredEvents {
            events: vec![json!({ "id": "a", "reporter": "r" })],
        };
        assert_eq!(
            serde_json::to_value(&events).unwrap(),
            json!({ "events": [{ "id": "a", "reporter": "r" }] })
        );
    }
}
