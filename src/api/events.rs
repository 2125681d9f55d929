//! The feedback event: what a proxy reports to its reputation server (`"v": 1`), and the
//! server's answer to a batch of them.
//!
//! One JSON object per event; a batch is `{"events": [...]}` (`POST /v1/events`), answered
//! with an [`IngestReply`] that has one [`EventResult`] per event. The schema and its limits
//! are defined here once and shared by the proxy (which builds events, [`Event::fit`]s them
//! to the limits and checks them with [`Event::validate`] before they are spooled) and the
//! server (which checks every event with the same [`Event::validate`] and refuses the bad
//! ones one by one). `docs/feedback.md` describes every field.
//!
//! Unknown fields are refused (a newer proxy must bump `v`), every string has a length bound
//! and [`Event::validate`] checks what serde cannot; nothing here panics on input.

use serde::{Deserialize, Serialize};

/// The schema version this code writes and accepts.
pub const VERSION: u32 = 1;

/// Longest `url` accepted, bytes. The proxy cuts a longer one ([`Event::fit`]).
pub const MAX_URL: usize = 8192;
/// Longest of any other string field, bytes (cut likewise by the proxy).
pub const MAX_FIELD: usize = 1024;
/// Longest user comment, characters (longer ones are cut by the proxy, refused by the server).
pub const MAX_COMMENT: usize = 2000;
/// Most categories in one event (the proxy keeps the first ones).
pub const MAX_CATEGORIES: usize = 32;
/// Longest `id`, `proxy` and `ticket`, bytes (1 to this many visible ASCII characters).
pub const MAX_IDENT: usize = 64;
/// Most `clients` (and most `users`) one aggregated event lists. An aggregate that saw more
/// distinct ones lists the first this many and says so (`clients_truncated`).
pub const MAX_LISTED: usize = 64;
/// Most bytes of events the proxy puts in one `POST /v1/events` body. One event within the
/// limits above always fits, and it is half the server's default `max_body_bytes` (1 MiB),
/// so batches of long URLs are split by size rather than refused as too large.
pub const MAX_BATCH_BYTES: usize = 512 * 1024;

/// What a string over its limit becomes: its first bytes (cut at a character boundary) and
/// this marker followed by the 64 hex digits of the SHA-256 of the whole string. A canonical
/// URL has no `#` (fragments are dropped, a literal `#` is escaped), so the marker cannot be
/// mistaken for part of one, and two long URLs that differ after the cut stay distinct.
pub const CUT_MARKER: &str = "#sha256=";

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
    /// How many occurrences this event stands for: 1 for a single one (left out of the
    /// JSON); more for an aggregate the proxy folded per kind and host over an interval, whose
    /// other fields are those of its first occurrence (`time` is the first, `last_time` the
    /// last).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub count: u64,
    /// For an aggregate: the time of its last occurrence, unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_time: Option<i64>,
    /// For an aggregate: its distinct clients (at most [`MAX_LISTED`]), in the order first
    /// seen; `client` is the first of them. Empty (left out): `client` alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clients: Vec<String>,
    /// The aggregate saw more distinct clients than `clients` lists.
    #[serde(default, skip_serializing_if = "is_false")]
    pub clients_truncated: bool,
    /// For an aggregate: its distinct users, as `clients`; empty: `user` alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// The aggregate saw more distinct users than `users` lists.
    #[serde(default, skip_serializing_if = "is_false")]
    pub users_truncated: bool,
}

fn one() -> u64 {
    1
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if takes a reference
fn is_one(n: &u64) -> bool {
    *n == 1
}

#[allow(clippy::trivially_copy_pass_by_ref)] // likewise
fn is_false(b: &bool) -> bool {
    !*b
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
            count: 1,
            last_time: None,
            clients: Vec::new(),
            clients_truncated: false,
            users: Vec::new(),
            users_truncated: false,
        }
    }

    /// Every client this event stands for: `clients`, or `client` alone when it lists none.
    pub fn all_clients(&self) -> impl Iterator<Item = &str> {
        let single = self
            .clients
            .is_empty()
            .then_some(self.client.as_deref())
            .flatten();
        self.clients.iter().map(String::as_str).chain(single)
    }

    /// Brings every field within the limits [`Event::validate`] checks, as the schema says:
    /// a string over its limit is cut and marked with the hash of the whole ([`CUT_MARKER`]),
    /// a comment is cut to [`MAX_COMMENT`] characters, categories beyond [`MAX_CATEGORIES`]
    /// are left out, a score above 100 becomes 100 and a negative time 0. Identifiers (`id`,
    /// `proxy`, `ticket`) and a file hash cannot be repaired: [`Event::validate`] still
    /// refuses bad ones. The proxy calls this before spooling an event.
    pub fn fit(&mut self) {
        self.time = self.time.max(0);
        self.last_time = self.last_time.map(|t| t.max(self.time));
        self.score = self.score.map(|s| s.min(100));
        if let Some(u) = &mut self.url {
            cut(u, MAX_URL);
        }
        for s in [
            &mut self.client,
            &mut self.user,
            &mut self.host,
            &mut self.action,
            &mut self.reason,
            &mut self.risk,
            &mut self.rule,
            &mut self.list_hit,
            &mut self.cache,
            &mut self.source,
        ]
        .into_iter()
        .flatten()
        {
            cut(s, MAX_FIELD);
        }
        if let Some(c) = &mut self.comment
            && let Some((at, _)) = c.char_indices().nth(MAX_COMMENT)
        {
            c.truncate(at);
        }
        self.categories.truncate(MAX_CATEGORIES);
        for c in &mut self.categories {
            cut(c, MAX_FIELD);
        }
        self.count = self.count.max(1);
        for (list, truncated) in [
            (&mut self.clients, &mut self.clients_truncated),
            (&mut self.users, &mut self.users_truncated),
        ] {
            if list.len() > MAX_LISTED {
                list.truncate(MAX_LISTED);
                *truncated = true;
            }
            for c in list.iter_mut() {
                cut(c, MAX_FIELD);
            }
        }
        if let Some(f) = &mut self.file {
            for s in [&mut f.content_type, &mut f.verdict].into_iter().flatten() {
                cut(s, MAX_FIELD);
            }
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
            if s.is_empty() || s.len() > MAX_IDENT || !s.bytes().all(|b| b.is_ascii_graphic()) {
                Err(EventError(format!(
                    "`{name}` must be 1 to {MAX_IDENT} visible ASCII characters"
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
        if self.count == 0 {
            return bad("`count` must be at least 1".into());
        }
        if self.last_time.is_some_and(|t| t < self.time) {
            return bad("`last_time` must not be before `time`".into());
        }
        for (name, list) in [("clients", &self.clients), ("users", &self.users)] {
            if list.len() > MAX_LISTED || list.iter().any(|c| c.len() > MAX_FIELD) {
                return bad(format!("at most {MAX_LISTED} short `{name}`"));
            }
            if self.count == 1 && !list.is_empty() {
                return bad(format!("`{name}` only on an aggregate (`count` above 1)"));
            }
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

/// Cuts `s` to at most `max` bytes the [`CUT_MARKER`] way; shorter strings are left alone.
fn cut(s: &mut String, max: usize) {
    use sha2::Digest as _;
    if s.len() <= max {
        return;
    }
    let digest = sha2::Sha256::digest(s.as_bytes());
    let mut at = max.saturating_sub(CUT_MARKER.len() + 2 * digest.len());
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    s.truncate(at);
    s.push_str(CUT_MARKER);
    for b in digest {
        s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        s.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
}

/// `anon:` and a keyed hash of `value` (HMAC-SHA256 under `key`, its first 12 bytes in hex):
/// what an anonymized `client` or `user` becomes. The same key always gives the same
/// pseudonym, so distinct values stay distinct; without the key it cannot be reversed or
/// recomputed. The proxy keys it per proxy, a server forwarding events upstream per site.
pub fn pseudonym(key: &[u8], value: &str) -> String {
    use hmac::{KeyInit as _, Mac as _};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(value.as_bytes());
    let digest = mac.finalize().into_bytes();
    format!("anon:{}", hex::encode(&digest[..12]))
}

/// Ranges of `lines` (each one event's JSON) whose batch bodies stay within
/// [`MAX_BATCH_BYTES`]; an event alone may exceed it only if it is larger by itself.
pub fn batch_ranges<L: AsRef<[u8]>>(lines: &[L]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, l) in lines.iter().enumerate() {
        let len = l.as_ref().len();
        if i > start && size + len + 1 > MAX_BATCH_BYTES {
            out.push(start..i);
            (start, size) = (i, 0);
        }
        size += len + 1;
    }
    if start < lines.len() {
        out.push(start..lines.len());
    }
    out
}

/// `{"events":[...]}` from the events' JSON lines, without re-encoding them.
pub fn batch_body<L: AsRef<[u8]>>(lines: &[L]) -> Vec<u8> {
    let mut body =
        Vec::with_capacity(lines.iter().map(|l| l.as_ref().len() + 1).sum::<usize>() + 16);
    body.extend_from_slice(b"{\"events\":[");
    for (i, l) in lines.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(l.as_ref());
    }
    body.extend_from_slice(b"]}");
    body
}

/// One event of a batch as the server read it: the event, or why it is refused (naming its
/// index, `events[3]: ...`), with the `id` it claimed when that is a short string.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchItem {
    /// The `id` sent, when it is a string of at most [`MAX_IDENT`] bytes (echoed in the
    /// result even when the event is refused).
    pub id: Option<String>,
    /// The event, or why it is refused.
    pub event: Result<Event, EventError>,
}

/// Parses a batch body `{"events": [...]}` into one [`BatchItem`] per event, in order: a bad
/// event is refused on its own, the others stand. Only a body that is not that shape at all
/// is refused whole. `max` bounds the count (beyond it: [`BatchError::TooMany`]).
///
/// # Errors
/// [`BatchError`].
pub fn parse_batch(body: &[u8], max: usize) -> Result<Vec<BatchItem>, BatchError> {
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
    let items = batch.events.into_iter().enumerate().map(|(i, v)| {
        let id = v
            .get("id")
            .and_then(serde_json::Value::as_str)
            .filter(|id| id.len() <= MAX_IDENT)
            .map(str::to_owned);
        let event = serde_json::from_value::<Event>(v)
            .map_err(|e| EventError(e.to_string()))
            .and_then(|e| e.validate().map(|()| e))
            .map_err(|e| EventError(format!("events[{i}]: {e}")));
        BatchItem { id, event }
    });
    Ok(items.collect())
}

/// Why a batch is refused whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Not JSON, or not the batch shape.
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

/// What the server did with one event of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    /// Stored.
    Accepted,
    /// Stored already (the same token, `proxy` and `id`): a replay, ignored.
    Duplicate,
    /// Refused (see the result's `error`); the proxy drops it rather than send it again.
    Rejected,
}

/// The result for one event of a batch, in the order sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventResult {
    /// The event's `id` as sent, when it was a string of at most [`MAX_IDENT`] bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// What happened to it.
    pub status: EventStatus,
    /// Why it was refused (`events[3]: ...`), for [`EventStatus::Rejected`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The answer to `POST /v1/events`. Servers without per-event results answer only the
/// first three fields (and refuse a batch with a bad event whole, with a 400); a reader
/// therefore treats a missing `results` as every event taken.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestReply {
    /// Events stored.
    pub accepted: u64,
    /// Events already stored (replays).
    pub duplicate: u64,
    /// Keys written by escalation rules.
    #[serde(default)]
    pub escalated: Vec<String>,
    /// Events refused.
    #[serde(default)]
    pub rejected: u64,
    /// One per event sent, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<Vec<EventResult>>,
}

impl IngestReply {
    /// What became of each of the `n` events of the batch this answers, in order: `None`
    /// when it was taken (stored, or stored before), `Some(why)` when it was refused. An
    /// answer without `results` (an older server), or with a number of them that does not
    /// fit the batch, takes every event.
    pub fn refusals(&self, n: usize) -> Vec<Option<String>> {
        match self.results.as_ref().filter(|r| r.len() == n) {
            Some(results) => results
                .iter()
                .map(|r| {
                    (r.status == EventStatus::Rejected)
                        .then(|| r.error.clone().unwrap_or_else(|| "refused".into()))
                })
                .collect(),
            None => vec![None; n],
        }
    }
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
    fn feedback_batches_refuse_bad_events_one_by_one() {
        let ok = serde_json::json!({ "events": [event()] }).to_string();
        let items = parse_batch(ok.as_bytes(), 10).unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].event.as_ref().unwrap(), &event());
        assert_eq!(items[0].id.as_deref(), Some("00000001deadbeef"));
        // Only a body that is not a batch at all is refused whole.
        for body in ["not json", "{\"event\": []}", "{\"events\": {}}"] {
            let err = parse_batch(body.as_bytes(), 10).unwrap_err().to_string();
            assert!(err.contains("bad JSON"), "{body}: {err}");
        }
        let bad = [
            (serde_json::json!({ "v": 1 }), "missing field"),
            (
                serde_json::json!({ "v": 2, "id": "x", "kind": "blocked", "time": 1, "proxy": "p" }),
                "unsupported event version 2",
            ),
            (
                serde_json::json!({ "v": 1, "id": "", "kind": "blocked", "time": 1, "proxy": "p" }),
                "`id`",
            ),
            (
                serde_json::json!({ "v": 1, "id": "a", "kind": "nope", "time": 1, "proxy": "p" }),
                "unknown variant",
            ),
            (
                serde_json::json!({ "v": 1, "id": "a", "kind": "blocked", "time": 1, "proxy": "p", "score": 101 }),
                "`score`",
            ),
            (
                serde_json::json!({ "v": 1, "id": "a", "kind": "blocked", "time": 1, "proxy": "p", "extra": 1 }),
                "unknown field",
            ),
            (
                serde_json::json!({ "v": 1, "id": "a", "kind": "blocked", "time": 1, "proxy": "p", "url": "x".repeat(MAX_URL + 1) }),
                "`url` longer than 8192 bytes",
            ),
            (serde_json::json!(17), "expected struct Event"),
        ];
        for (bad_event, want) in bad {
            // Each bad event between two good ones: refused alone, naming its index.
            let body = serde_json::json!({ "events": [event(), bad_event, event()] }).to_string();
            let items = parse_batch(body.as_bytes(), 10).unwrap();
            assert!(items[0].event.is_ok() && items[2].event.is_ok(), "{body}");
            let err = items[1].event.as_ref().unwrap_err().to_string();
            assert!(
                err.starts_with("events[1]: ") && err.contains(want),
                "{body}: {err}"
            );
        }
        let many = serde_json::json!({ "events": [event(), event(), event()] }).to_string();
        assert!(matches!(
            parse_batch(many.as_bytes(), 2),
            Err(BatchError::TooMany { count: 3, max: 2 })
        ));
    }

    #[test]
    fn feedback_fit_brings_every_field_within_what_the_server_accepts() {
        let long = |n: usize, tail: &str| format!("http://a.test/{}{tail}", "é".repeat(n));
        let mut e = event();
        e.url = Some(long(5000, "x"));
        e.user = Some("u".repeat(MAX_FIELD * 3));
        e.comment = Some("ü".repeat(MAX_COMMENT + 10));
        e.categories = (0..40).map(|i| format!("c{i}")).collect();
        e.time = -5;
        e.file = Some(FileFacts {
            sha256: "ab".repeat(32),
            size: 1,
            content_type: Some("t".repeat(MAX_FIELD + 1)),
            verdict: None,
        });
        assert!(e.validate().is_err());
        e.fit();
        e.validate().unwrap();
        let url = e.url.clone().unwrap();
        assert!(
            url.len() <= MAX_URL && url.starts_with("http://a.test/é"),
            "{url}"
        );
        let (head, hash) = url.split_once(CUT_MARKER).unwrap();
        assert!(long(5000, "x").starts_with(head));
        assert_eq!(hash.len(), 64);
        // Two URLs that differ only after the cut stay apart; a short one is untouched.
        let mut other = event();
        other.url = Some(long(5000, "y"));
        other.fit();
        assert_ne!(other.url, e.url);
        let mut short = event();
        short.url = Some("http://a.test/short".into());
        short.fit();
        assert_eq!(short, {
            let mut s = event();
            s.url = Some("http://a.test/short".into());
            s
        });
        assert_eq!(e.comment.as_ref().unwrap().chars().count(), MAX_COMMENT);
        assert_eq!(e.categories.len(), MAX_CATEGORIES);
        assert_eq!(e.categories[0], "c0");
        assert_eq!(e.time, 0);
        // An identifier cannot be repaired: still refused.
        let mut bad = event();
        bad.id = "x".repeat(MAX_IDENT + 1);
        bad.fit();
        assert!(bad.validate().is_err());
    }

    #[test]
    fn feedback_batches_split_by_size_and_answers_map_to_each_event() {
        let small = vec![b"{}".to_vec(); 3];
        assert_eq!(
            batch_ranges(&small),
            std::iter::once(0..3).collect::<Vec<_>>()
        );
        assert_eq!(batch_body(&small), b"{\"events\":[{},{},{}]}");
        let big = vec![vec![b'x'; MAX_BATCH_BYTES / 2]; 3];
        assert_eq!(batch_ranges(&big), [0..1, 1..2, 2..3]);
        let huge = vec![vec![b'x'; MAX_BATCH_BYTES * 2]];
        assert_eq!(
            batch_ranges(&huge),
            std::iter::once(0..1).collect::<Vec<_>>(),
            "alone when larger by itself"
        );
        assert!(batch_ranges::<Vec<u8>>(&[]).is_empty());

        let result = |status, error: Option<&str>| EventResult {
            id: None,
            status,
            error: error.map(str::to_owned),
        };
        let reply = IngestReply {
            results: Some(vec![
                result(EventStatus::Accepted, None),
                result(EventStatus::Rejected, Some("events[1]: bad")),
                result(EventStatus::Duplicate, None),
            ]),
            ..IngestReply::default()
        };
        assert_eq!(
            reply.refusals(3),
            [None, Some("events[1]: bad".to_owned()), None]
        );
        // Not an answer for this batch, or an older server's: every event taken.
        assert_eq!(reply.refusals(2), [None, None]);
        assert_eq!(IngestReply::default().refusals(2), [None, None]);

        let p = pseudonym(b"key", "10.0.0.1");
        assert!(p.starts_with("anon:") && p.len() == 29, "{p}");
        assert_eq!(p, pseudonym(b"key", "10.0.0.1"));
        assert_ne!(p, pseudonym(b"other", "10.0.0.1"));
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]

            /// Whatever the strings, a fitted event validates, and fitting it again changes
            /// nothing.
            #[test]
            fn a_fitted_event_always_validates(
                url in "\\PC{0,9000}",
                user in "\\PC{0,1500}",
                comment in "\\PC{0,2100}",
                categories in proptest::collection::vec("\\PC{0,1100}", 0..40),
                score in any::<u8>(),
                time in any::<i64>(),
            ) {
                let mut e = event();
                e.url = Some(url);
                e.user = Some(user);
                e.comment = Some(comment);
                e.categories = categories;
                e.score = Some(score);
                e.time = time;
                e.fit();
                prop_assert!(e.validate().is_ok(), "{:?}", e.validate());
                let mut again = e.clone();
                again.fit();
                prop_assert_eq!(again, e);
            }
        }
    }
}
