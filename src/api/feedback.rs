//! What an admin reads and does about feedback (`docs/feedback.md`): the stored events
//! (`GET /v1/events`) and reverting an escalation (`POST /v1/escalations/revert`), as the
//! server writes them and as `webrep feedback` reads them. The events themselves are
//! [`super::events`].

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
