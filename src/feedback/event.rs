//! The feedback event: what a proxy reports to its reputation server (`"v": 1`).
//!
//! One JSON object per event; a batch is `{"events": [...]}` (`POST /v1/events`). The schema
//! is shared by the proxy (which builds events) and the server (which validates and stores
//! them), so both sides agree field for field. `docs/feedback.md` describes every field.
//!
//! Unknown fields are refused (a newer proxy must bump `v`), every string has a length bound
//! and [`Event::validate`] checks what serde cannot; nothing here panics on input.

use serde::{Deserialize, Serialize};

/// The schema version this code writes and accepts.
pub const VERSION: u32 = 1;

/// Longest `url` accepted, bytes.
pub const MAX_URL: usize = 8192;
/// Longest of any other string field, bytes.
pub const MAX_FIELD: usize = 1024;
/// Longest user comment, characters (longer ones are cut by the proxy, refused by the server).
pub const MAX_COMMENT: usize = 2000;
/// Most categories in one event.
pub const MAX_CATEGORIES: usize = 32;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A request was blocked (a block page, or a refused CONNECT).
    Blocked,
    /// A warn page was shown.
    Warned,
    /// The user continued past a warn page.
    Continued,
    /// Forwarded, and reported because the policy monitors it.
    Monitored,
    /// Forwarded with no reputation for the URL (untested).
    Untested,
    /// No reputation source answered; the policy's `reputation_unavailable` action applied.
    ReputationUnavailable,
    /// Forwarded, reported because the policy asks for allowed requests too.
    Allowed,
    /// A verdict on a downloaded file (schema only for now).
    FileVerdict,
    /// "Report a mistake" on a block or warn page.
    UserReport,
}

impl Kind {
    /// Every kind, in a stable order.
    pub const ALL: [Kind; 9] = [
        Kind::Blocked,
        Kind::Warned,
        Kind::Continued,
        Kind::Monitored,
        Kind::Untested,
        Kind::ReputationUnavailable,
        Kind::Allowed,
        Kind::FileVerdict,
        Kind::UserReport,
    ];

    /// The name in JSON and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Blocked => "blocked",
            Kind::Warned => "warned",
            Kind::Continued => "continued",
            Kind::Monitored => "monitored",
            Kind::Untested => "untested",
            Kind::ReputationUnavailable => "reputation_unavailable",
            Kind::Allowed => "allowed",
            Kind::FileVerdict => "file_verdict",
            Kind::UserReport => "user_report",
        }
    }

    /// The kind named `s`.
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A file verdict's facts (file reputation is a later issue: schema only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileFacts {
    /// SHA-256 of the content, 64 lowercase hex digits.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// The declared content type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The file verdict (`malicious`, `clean`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
}

/// One feedback event. Optional fields are left out of the JSON when empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Schema version, [`VERSION`].
    pub v: u32,
    /// Unique per proxy: the request id (16 hex digits), which is the ticket on block and
    /// warn pages. `(proxy, id)`, sent with the same token, makes a replay idempotent.
    pub id: String,
    /// What happened.
    pub kind: Kind,
    /// When, unix milliseconds.
    pub time: i64,
    /// The proxy that saw it (`feedback.proxy_id`).
    pub proxy: String,
    /// The client address, or `anon:` plus a keyed hash when anonymized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// The authenticated user, or `anon:` plus a keyed hash when anonymized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The canonical URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The canonical host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The policy action (`allow`, `monitor`, `warn`, `block`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Why (`risk`, `untested`, `category`, `blocked`, `rule`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Risk level (`dangerous`, ..., `untested`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk: Option<String>,
    /// Reputation score 0..=100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<u8>,
    /// Categories, the deciding one first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
    /// The policy rule that applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The list entry that decided (approved or blocked list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list_hit: Option<String>,
    /// Reputation cache state (`hit`, `miss`, `stale`, `unavailable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<String>,
    /// The reputation source that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// For a user report: the ticket reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// For a user report: the user's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// For a file verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileFacts>,
}

/// Why an event is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EventError(pub String);

impl Event {
    /// An event of `kind` with only the required fields set.
    pub fn new(id: String, kind: Kind, time: i64, proxy: String) -> Event {
        Event {
            v: VERSION,
            id,
            kind,
            time,
            proxy,
            client: None,
            user: None,
            url: None,
            host: None,
            action: None,
            reason: None,
            risk: None,
            score: None,
            categories: Vec::new(),
            rule: None,
            list_hit: None,
            cache: None,
            source: None,
            ticket: None,
            comment: None,
            file: None,
        }
    }

    /// Checks what the types do not: the version, identifiers, lengths and ranges.
    ///
    /// # Errors
    /// [`EventError`] naming the field.
    pub fn validate(&self) -> Result<(), EventError> {
        let bad = |m: String| Err(EventError(m));
        if self.v != VERSION {
            return bad(format!(
                "unsupported event version {} (this server reads {VERSION})",
                self.v
            ));
        }
        let ident = |name: &str, s: &str| {
            if s.is_empty() || s.len() > 64 || !s.bytes().all(|b| b.is_ascii_graphic()) {
                Err(EventError(format!(
                    "`{name}` must be 1 to 64 visible ASCII characters"
                )))
            } else {
                Ok(())
            }
        };
        ident("id", &self.id)?;
        ident("proxy", &self.proxy)?;
        if let Some(t) = &self.ticket {
            ident("ticket", t)?;
        }
        if self.time < 0 {
            return bad("`time` must be unix milliseconds".into());
        }
        if self.url.as_ref().is_some_and(|u| u.len() > MAX_URL) {
            return bad(format!("`url` longer than {MAX_URL} bytes"));
        }
        for (name, v) in [
            ("client", &self.client),
            ("user", &self.user),
            ("host", &self.host),
            ("action", &self.action),
            ("reason", &self.reason),
            ("risk", &self.risk),
            ("rule", &self.rule),
            ("list_hit", &self.list_hit),
            ("cache", &self.cache),
            ("source", &self.source),
        ] {
            if v.as_ref().is_some_and(|s| s.len() > MAX_FIELD) {
                return bad(format!("`{name}` longer than {MAX_FIELD} bytes"));
            }
        }
        if self
            .comment
            .as_ref()
            .is_some_and(|c| c.chars().count() > MAX_COMMENT)
        {
            return bad(format!("`comment` longer than {MAX_COMMENT} characters"));
        }
        if self.score.is_some_and(|s| s > 100) {
            return bad("`score` must be 0..=100".into());
        }
        if self.categories.len() > MAX_CATEGORIES
            || self.categories.iter().any(|c| c.len() > MAX_FIELD)
        {
            return bad(format!("at most {MAX_CATEGORIES} short `categories`"));
        }
        if let Some(f) = &self.file {
            if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return bad("`file.sha256` must be 64 hex digits".into());
            }
            if [&f.content_type, &f.verdict]
                .iter()
                .any(|v| v.as_ref().is_some_and(|s| s.len() > MAX_FIELD))
            {
                return bad(format!("`file` fields longer than {MAX_FIELD} bytes"));
            }
        }
        Ok(())
    }
}

/// Parses a batch body `{"events": [...]}`: every event, or the first problem naming its
/// index. `max` bounds the count (beyond it: [`BatchError::TooMany`]).
///
/// # Errors
/// [`BatchError`].
pub fn parse_batch(body: &[u8], max: usize) -> Result<Vec<Event>, BatchError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Batch {
        events: Vec<serde_json::Value>,
    }
    let batch: Batch = serde_json::from_slice(body).map_err(|e| {
        BatchError::Malformed(format!("bad JSON: {e} (expected {{\"events\": [...]}})"))
    })?;
    if batch.events.len() > max {
        return Err(BatchError::TooMany {
            count: batch.events.len(),
            max,
        });
    }
    let mut out = Vec::with_capacity(batch.events.len());
    for (i, v) in batch.events.into_iter().enumerate() {
        let e: Event = serde_json::from_value(v)
            .map_err(|e| BatchError::Malformed(format!("events[{i}]: {e}")))?;
        e.validate()
            .map_err(|e| BatchError::Malformed(format!("events[{i}]: {e}")))?;
        out.push(e);
    }
    Ok(out)
}

/// Why a batch is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Not JSON, not the batch shape, or an event that does not validate.
    #[error("{0}")]
    Malformed(String),
    /// More events than allowed in one batch.
    #[error("{count} events in one batch; at most {max}")]
    TooMany {
        /// Events sent.
        count: usize,
        /// The bound.
        max: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        let mut e = Event::new("00000001deadbeef".into(), Kind::Blocked, 1, "p1".into());
        e.host = Some("bad.test".into());
        e.categories = vec!["malware".into()];
        e
    }

    #[test]
    fn feedback_event_round_trips_and_leaves_out_empty_fields() {
        let e = event();
        let text = serde_json::to_string(&e).unwrap();
        assert!(
            !text.contains("comment") && !text.contains("null"),
            "{text}"
        );
        assert!(text.contains("\"v\":1") && text.contains("\"kind\":\"blocked\""));
        let back: Event = serde_json::from_str(&text).unwrap();
        assert_eq!(back, e);
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
            let json = serde_json::to_value(k).unwrap();
            assert_eq!(json.as_str(), Some(k.as_str()));
        }
    }

    #[test]
    fn feedback_batches_refuse_bad_input_naming_the_event() {
        let ok = serde_json::json!({ "events": [event()] }).to_string();
        assert_eq!(parse_batch(ok.as_bytes(), 10).unwrap().len(), 1);
        for (body, want) in [
            ("not json".to_owned(), "bad JSON"),
            ("{\"event\": []}".to_owned(), "bad JSON"),
            (
                "{\"events\": [{\"v\": 1}]}".to_owned(),
                "events[0]: missing field",
            ),
            (
                serde_json::json!({ "events": [event(), { "v": 2, "id": "x", "kind": "blocked", "time": 1, "proxy": "p" }] })
                    .to_string(),
                "events[1]: unsupported event version 2",
            ),
            (
                serde_json::json!({ "events": [{ "v": 1, "id": "", "kind": "blocked", "time": 1, "proxy": "p" }] })
                    .to_string(),
                "events[0]: `id`",
            ),
            (
                serde_json::json!({ "events": [{ "v": 1, "id": "a", "kind": "nope", "time": 1, "proxy": "p" }] })
                    .to_string(),
                "events[0]: unknown variant",
            ),
            (
                serde_json::json!({ "events": [{ "v": 1, "id": "a", "kind": "blocked", "time": 1, "proxy": "p", "score": 101 }] })
                    .to_string(),
                "events[0]: `score`",
            ),
            (
                serde_json::json!({ "events": [{ "v": 1, "id": "a", "kind": "blocked", "time": 1, "proxy": "p", "extra": 1 }] })
                    .to_string(),
                "events[0]: unknown field",
            ),
        ] {
            let err = parse_batch(body.as_bytes(), 10).unwrap_err().to_string();
            assert!(err.contains(want), "{body}: {err}");
        }
        let many = serde_json::json!({ "events": [event(), event(), event()] }).to_string();
        assert!(matches!(
            parse_batch(many.as_bytes(), 2),
            Err(BatchError::TooMany { count: 3, max: 2 })
        ));
    }
}
