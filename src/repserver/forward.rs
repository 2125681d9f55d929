//! Feedback flows up: the events this server stored are sent on to its upstream tier, each
//! once, so that the upstream's escalation rules count the clients of every site.
//!
//! # Where it sits
//! One background task of [`super::api::serve_with`] (`api/forward.rs`), started when
//! [`super::api::ServeOptions::forward`] is set: by `webrep server` when `server.upstream` is
//! configured and `server.upstream.feedback.forward` is on. It reads the store's `events`
//! table in rowid order after a durable cursor (the `tier_state` table), applies the
//! privacy settings ([`disclose`]), posts the events with `POST /v1/events` to the upstream
//! with the upstream's client token, and moves the cursor past what the upstream answered
//! for. The ingest path wakes it, so an event goes up within one round trip of arriving.
//!
//! # Invariants
//! - The events table is the spool: an outage leaves the cursor behind, and nothing else is
//!   kept. The cursor moves only after the upstream's answer, and only over a prefix of the
//!   batch with a final answer each (accepted or duplicate: delivered; rejected: refused).
//! - Each event is counted once at the top: it keeps its `proxy` and `id`, and the upstream
//!   de-duplicates by token, proxy and id, so a batch sent again after a lost answer or a
//!   restart is absorbed. The upstream's `reporter` of these events is this server's token,
//!   so its `distinct_reporters` counts sites. Events this server received from a tier below
//!   go further up the same way (a chain of tiers); above a middle tier, `reporter` counts
//!   middle tiers.
//! - An event that retention pruning deletes before it was forwarded is counted as lost
//!   ([`Pruned::unforwarded`]) and logged, never skipped silently. Pruning also pulls the
//!   cursor back to the newest remaining event, because SQLite gives the next event the
//!   rowid after the largest one left (after an emptied table: 1 again). For the same reason
//!   the store is never `VACUUM`ed: that may renumber the rowids of a table without an
//!   `INTEGER PRIMARY KEY`, such as `events`.
//!
//! # Privacy
//! What leaves the site is the event as stored, minus what `server.upstream.feedback` keeps
//! back: `client` and `user` become `anon:` and a keyed hash by default (HMAC-SHA256 under a
//! random key made once per site and kept in the store's `tier_state`: stable across
//! restarts, distinct values stay distinct, the upstream cannot reverse them), a user
//! report's `comment` is dropped, and the URL loses its query. Proxy ids, hosts, verdicts,
//! rules, tickets (request ids) and file facts go as they are.
//!
//! # What it costs
//! Per round: one read job on a reader thread (the cursor, then at most [`READ_BATCH`]
//! events by rowid range), one JSON decode and encode per event, one HMAC per anonymized
//! value, one `POST` per [`crate::api::events::MAX_BATCH_BYTES`] of events, and one write job
//! for the cursor. Idle, it waits on the ingest's wake-up (and re-reads every
//! [`IDLE_RECHECK`]).
//!
//! # How it fails
//! An upstream that is down, slow past [`SEND_TIMEOUT`], throttling, refusing the token,
//! or answering garbage leaves the cursor where it is; the round is tried again after a
//! back-off (50 ms doubling to 5 s, with jitter), counted in
//! `webrep_server_forward_batches_failed_total` and logged at most every 10 s. An event the
//! upstream refuses as invalid (its own result, or a 4xx for a batch that is narrowed down by
//! halving until the refused event is alone) is counted, logged and passed: it never holds
//! up the queue. A stored event that no longer decodes is passed the same way. Store errors
//! are retried with the same back-off.

use std::time::Duration;

use rusqlite::{OptionalExtension as _, params};

use super::store::{Store, StoreError};
use crate::api::events::{Event, IngestReply, batch_body, batch_ranges, pseudonym};
use crate::client::{ClientError, RepClient};
use crate::config::{Disclosure, Retention, UpstreamFeedback, UrlDisclosure};

/// Most events read from the store per round.
pub const READ_BATCH: usize = 500;

/// Deadline of one `POST /v1/events` to the upstream (an ingest there applies its
/// escalation rules before answering).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// How often an idle forwarder looks at the store without being woken.
pub const IDLE_RECHECK: Duration = Duration::from_secs(10);

/// `tier_state` name of the cursor: the rowid of the last event the upstream answered for.
const CURSOR: &str = "feedback.forward.cursor";
/// `tier_state` name of the anonymizing key, 64 hex digits.
const KEY: &str = "feedback.anonymize_key";

/// What the forwarder needs: the upstream's client (with its token) and what leaves.
#[derive(Clone, Debug)]
pub struct ForwardOptions {
    /// The upstream tier, with the client token this server posts events with.
    pub client: RepClient,
    /// What of each event leaves the site.
    pub privacy: UpstreamFeedback,
}

impl ForwardOptions {
    /// The forwarder of `server.upstream`: `None` without an upstream, or with
    /// `server.upstream.feedback.forward: false`.
    ///
    /// # Errors
    /// An unreadable token file, a bad URL or CA file.
    pub fn for_config(
        upstream: Option<&crate::config::UpstreamConfig>,
    ) -> anyhow::Result<Option<ForwardOptions>> {
        use anyhow::Context as _;
        let Some(u) = upstream.filter(|u| u.feedback.forward) else {
            return Ok(None);
        };
        let token = match (&u.token, &u.token_file) {
            (Some(t), _) => t.clone(),
            (None, Some(path)) => {
                crate::secrets::read_token_file(path, "server.upstream.token_file")?
            }
            (None, None) => anyhow::bail!("server.upstream: no token"),
        };
        let client =
            RepClient::new(&u.url, &token, u.ca_file.as_deref()).context("server.upstream")?;
        Ok(Some(ForwardOptions {
            client,
            privacy: u.feedback,
        }))
    }
}

/// A stored event waiting to go up.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Its rowid in `events`.
    pub rowid: i64,
    /// Its JSON as received.
    pub body: String,
}

/// One round's reading: the cursor, the events after it, and how many are stored after it.
#[derive(Debug, Clone, Default)]
pub struct Backlog {
    /// The rowid of the last event forwarded.
    pub cursor: i64,
    /// The next events, in rowid order.
    pub events: Vec<Stored>,
    /// Events stored after the cursor (the newest rowid minus the cursor).
    pub behind: u64,
}

/// What one retention pruning did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Events deleted.
    pub deleted: u64,
    /// Of those, events not yet forwarded (counted only while forwarding is on).
    pub unforwarded: u64,
}

impl Store {
    /// Makes the forwarder's state: the cursor (at the start of the table when new) and the
    /// anonymizing key (random when new). Returns the key.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`]; [`StoreError::Corrupt`] for a stored key that is not 64 hex
    /// digits.
    pub fn forward_setup(&mut self) -> Result<[u8; 32], StoreError> {
        let fresh = {
            use rand::RngCore as _;
            let mut raw = [0u8; 32];
            rand::rng().fill_bytes(&mut raw);
            hex::encode(raw)
        };
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT OR IGNORE INTO tier_state (name, value) VALUES (?1, '0')",
            [CURSOR],
        )?;
        tx.execute(
            "INSERT OR IGNORE INTO tier_state (name, value) VALUES (?1, ?2)",
            [KEY, fresh.as_str()],
        )?;
        let stored: String =
            tx.query_row("SELECT value FROM tier_state WHERE name = ?1", [KEY], |r| {
                r.get(0)
            })?;
        tx.commit()?;
        let mut key = [0u8; 32];
        hex::decode_to_slice(stored.trim(), &mut key).map_err(|_| StoreError::Corrupt {
            key: KEY.to_owned(),
            what: "not 64 hex digits",
        })?;
        Ok(key)
    }

    /// The forward cursor: the rowid of the last event forwarded, 0 before any.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`]; [`StoreError::Corrupt`] for a cursor that is not a number.
    pub fn forward_cursor(&self) -> Result<i64, StoreError> {
        let v: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM tier_state WHERE name = ?1",
                [CURSOR],
                |r| r.get(0),
            )
            .optional()?;
        v.map_or(Ok(0), |v| {
            v.trim().parse().map_err(|_| StoreError::Corrupt {
                key: CURSOR.to_owned(),
                what: "not a number",
            })
        })
    }

    /// The cursor and at most `limit` events after it, in one read transaction.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`], [`StoreError::Corrupt`].
    pub fn forward_backlog(&self, limit: usize) -> Result<Backlog, StoreError> {
        // A read transaction (also on a reader's read-only connection): the cursor and the
        // events after it from one snapshot.
        let tx = self.conn.unchecked_transaction()?;
        let cursor = {
            let v: Option<String> = tx
                .query_row(
                    "SELECT value FROM tier_state WHERE name = ?1",
                    [CURSOR],
                    |r| r.get(0),
                )
                .optional()?;
            v.map_or(Ok(0), |v| v.trim().parse::<i64>())
                .map_err(|_| StoreError::Corrupt {
                    key: CURSOR.to_owned(),
                    what: "not a number",
                })?
        };
        let newest: i64 = tx.query_row("SELECT coalesce(max(rowid), 0) FROM events", [], |r| {
            r.get(0)
        })?;
        let events = {
            let mut stmt = tx.prepare_cached(
                "SELECT rowid, body FROM events WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
            )?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = stmt.query_map(params![cursor, limit], |r| {
                Ok(Stored {
                    rowid: r.get(0)?,
                    body: r.get(1)?,
                })
            })?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        tx.commit()?;
        Ok(Backlog {
            cursor,
            events,
            behind: u64::try_from(newest.saturating_sub(cursor)).unwrap_or(0),
        })
    }

    /// Moves the cursor from `from` to `to`, unless it is no longer at `from` (pruning pulled
    /// it back meanwhile): then nothing changes and the answer is `false`.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn advance_forward_cursor(&mut self, from: i64, to: i64) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "INSERT INTO tier_state (name, value) VALUES (?1, ?3) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value WHERE value = ?2",
            params![CURSOR, from.to_string(), to.to_string()],
        )?;
        Ok(n > 0)
    }

    /// Deletes events received before `before` (unix seconds), in one transaction with what
    /// forwarding needs: the deleted events the cursor had not passed are counted when
    /// `forwarding`, and the cursor is pulled back to the newest event left.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`], [`StoreError::Corrupt`].
    pub fn prune_events_forwarded(
        &mut self,
        before: i64,
        forwarding: bool,
    ) -> Result<Pruned, StoreError> {
        let cursor = self.forward_cursor()?;
        let tx = self.conn.transaction()?;
        let unforwarded: i64 = if forwarding {
            tx.query_row(
                "SELECT count(*) FROM events WHERE received < ?1 AND rowid > ?2",
                params![before, cursor],
                |r| r.get(0),
            )?
        } else {
            0
        };
        let deleted = tx.execute("DELETE FROM events WHERE received < ?1", [before])?;
        let newest: i64 = tx.query_row("SELECT coalesce(max(rowid), 0) FROM events", [], |r| {
            r.get(0)
        })?;
        if newest < cursor {
            tx.execute(
                "UPDATE tier_state SET value = ?2 WHERE name = ?1",
                params![CURSOR, newest.to_string()],
            )?;
        }
        tx.commit()?;
        Ok(Pruned {
            deleted: deleted as u64,
            unforwarded: u64::try_from(unforwarded).unwrap_or(0),
        })
    }
}

/// `e` as it may leave the site under `privacy`, pseudonyms keyed with `key`.
pub fn disclose(e: &mut Event, privacy: &UpstreamFeedback, key: &[u8]) {
    let apply = |v: &mut Option<String>, d: Disclosure| match d {
        Disclosure::Keep => {}
        Disclosure::Drop => *v = None,
        Disclosure::Anonymize => {
            if let Some(s) = v.as_mut() {
                *s = pseudonym(key, s);
            }
        }
    };
    apply(&mut e.client, privacy.client);
    apply(&mut e.user, privacy.user);
    // An aggregate's lists go the way of its `client` and `user`.
    for (list, d) in [
        (&mut e.clients, privacy.client),
        (&mut e.users, privacy.user),
    ] {
        match d {
            Disclosure::Keep => {}
            Disclosure::Drop => list.clear(),
            Disclosure::Anonymize => {
                for s in list.iter_mut() {
                    *s = pseudonym(key, s);
                }
            }
        }
    }
    if privacy.comment == Retention::Drop {
        e.comment = None;
    }
    match privacy.url {
        UrlDisclosure::Keep => {}
        UrlDisclosure::Drop => e.url = None,
        UrlDisclosure::StripQuery => {
            if let Some(u) = e.url.as_mut()
                && let Some(at) = u.find('?')
            {
                u.truncate(at);
            }
        }
    }
}

/// What became of one event offered to the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No final answer (the upstream was unavailable): offered again later.
    Pending,
    /// Stored there (or stored before).
    Taken,
    /// Refused there as invalid, with the reason: passed.
    Refused(String),
}

/// Offers `lines` (each one event's JSON) to the upstream in batches of at most
/// [`crate::api::events::MAX_BATCH_BYTES`], halving a batch the upstream refuses whole until
/// the refused event is alone. Stops at the first batch the upstream does not answer for:
/// that one and the rest stay [`Outcome::Pending`], and the error is returned with them.
pub async fn deliver(client: &RepClient, lines: &[Vec<u8>]) -> (Vec<Outcome>, Option<ClientError>) {
    let mut out = vec![Outcome::Pending; lines.len()];
    let mut todo: std::collections::VecDeque<std::ops::Range<usize>> = batch_ranges(lines).into();
    while let Some(r) = todo.pop_front() {
        let body = bytes::Bytes::from(batch_body(&lines[r.clone()]));
        match post(client, body).await {
            Ok(reply) => {
                for (slot, refusal) in out[r.clone()].iter_mut().zip(reply.refusals(r.len())) {
                    *slot = refusal.map_or(Outcome::Taken, Outcome::Refused);
                }
            }
            Err(e) if e.is_refusal() && r.len() == 1 => {
                out[r.start] = Outcome::Refused(e.to_string())
            }
            Err(e) if e.is_refusal() => {
                let mid = r.start + r.len() / 2;
                todo.push_front(mid..r.end);
                todo.push_front(r.start..mid);
            }
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

/// One `POST /v1/events`: the upstream's answer, which must be an [`IngestReply`].
async fn post(client: &RepClient, body: bytes::Bytes) -> Result<IngestReply, ClientError> {
    use http_body_util::BodyExt as _;
    let body = http_body_util::Full::new(body)
        .map_err(|never| match never {})
        .boxed_unsync();
    let v = client
        .post_body("/v1/events", "application/json", body, SEND_TIMEOUT)
        .await?;
    serde_json::from_value(v).map_err(|e| ClientError::Json(format!("not an ingest answer: {e}")))
}

/// The lines to send for `events`, disclosed under `privacy`: each event's JSON, or `None`
/// for a stored body that no longer decodes.
pub fn prepare(events: &[Stored], privacy: &UpstreamFeedback, key: &[u8]) -> Vec<Option<Vec<u8>>> {
    events
        .iter()
        .map(|s| {
            let mut e: Event = serde_json::from_str(&s.body).ok()?;
            disclose(&mut e, privacy, key);
            serde_json::to_vec(&e).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::events::Kind;

    fn event(id: &str, client: &str) -> Event {
        let mut e = Event::new(id.into(), Kind::UserReport, 1, "p1".into());
        e.client = Some(client.into());
        e.user = Some("alice".into());
        e.host = Some("x.test".into());
        e.url = Some("http://x.test/a?mail=alice@example.com".into());
        e.comment = Some("call me at 555".into());
        e
    }

    #[test]
    fn forward_disclosure_treats_an_aggregates_lists_like_client_and_user() {
        let mut a = event("1", "10.0.0.1");
        a.count = 3;
        a.clients = vec!["10.0.0.1".into(), "10.0.0.2".into()];
        a.users = vec!["alice".into(), "bob".into()];
        let mut anon = a.clone();
        disclose(&mut anon, &UpstreamFeedback::default(), b"k1");
        assert_eq!(anon.clients[0], anon.client.clone().unwrap());
        assert!(anon.clients.iter().all(|c| c.starts_with("anon:")));
        assert!(anon.users.iter().all(|u| u.starts_with("anon:")));
        assert_ne!(anon.clients[0], anon.clients[1]);
        let drop = UpstreamFeedback {
            client: Disclosure::Drop,
            user: Disclosure::Drop,
            ..UpstreamFeedback::default()
        };
        disclose(&mut a, &drop, b"k1");
        assert!(a.client.is_none() && a.clients.is_empty() && a.users.is_empty());
        assert_eq!(a.count, 3);
        a.validate().unwrap();
    }

    #[test]
    fn forward_disclosure_defaults_anonymize_and_drop_what_identifies_a_person() {
        let p = UpstreamFeedback::default();
        let mut a = event("1", "10.0.0.1");
        disclose(&mut a, &p, b"k1");
        let pa = a.client.clone().unwrap();
        assert!(pa.starts_with("anon:") && pa.len() == 29, "{pa}");
        assert!(a.user.as_deref().unwrap().starts_with("anon:"));
        assert_eq!(a.comment, None);
        assert_eq!(a.url.as_deref(), Some("http://x.test/a"));
        assert_eq!((a.id.as_str(), a.proxy.as_str()), ("1", "p1"));
        // Stable per key, distinct per value and per key.
        let mut again = event("2", "10.0.0.1");
        disclose(&mut again, &p, b"k1");
        assert_eq!(again.client.as_deref(), Some(pa.as_str()));
        let mut other = event("3", "10.0.0.2");
        disclose(&mut other, &p, b"k1");
        assert_ne!(other.client.as_deref(), Some(pa.as_str()));
        let mut site2 = event("1", "10.0.0.1");
        disclose(&mut site2, &p, b"k2");
        assert_ne!(site2.client.as_deref(), Some(pa.as_str()));

        let keep = UpstreamFeedback {
            client: Disclosure::Keep,
            user: Disclosure::Drop,
            comment: Retention::Keep,
            url: UrlDisclosure::Drop,
            ..p
        };
        let mut k = event("1", "10.0.0.1");
        disclose(&mut k, &keep, b"k1");
        assert_eq!(k.client.as_deref(), Some("10.0.0.1"));
        assert_eq!(k.user, None);
        assert_eq!(k.comment.as_deref(), Some("call me at 555"));
        assert_eq!(
            (k.url.as_deref(), k.host.as_deref()),
            (None, Some("x.test"))
        );
        k.validate().unwrap();
    }

    #[test]
    fn forward_cursor_is_compare_and_set_and_survives_pruning() {
        let mut s = Store::open_in_memory().unwrap();
        let key = s.forward_setup().unwrap();
        assert_eq!(s.forward_setup().unwrap(), key, "made once");
        let evs: Vec<Event> = (0..5).map(|i| event(&format!("e{i}"), "c")).collect();
        s.ingest_events(&evs[..3], 10, &[]).unwrap();
        let b = s.forward_backlog(2).unwrap();
        assert_eq!((b.cursor, b.events.len(), b.behind), (0, 2, 3));
        assert!(s.advance_forward_cursor(0, b.events[1].rowid).unwrap());
        assert!(!s.advance_forward_cursor(0, 99).unwrap(), "moved meanwhile");
        let b = s.forward_backlog(10).unwrap();
        assert_eq!((b.events.len(), b.behind), (1, 1));
        // Pruning the unforwarded third event counts it lost; the cursor follows the table
        // back, so that the rowids SQLite hands out again are not skipped.
        let p = s.prune_events_forwarded(11, true).unwrap();
        assert_eq!(
            p,
            Pruned {
                deleted: 3,
                unforwarded: 1
            }
        );
        assert_eq!(s.forward_cursor().unwrap(), 0);
        s.ingest_events(&evs[3..], 20, &[]).unwrap();
        let b = s.forward_backlog(10).unwrap();
        assert_eq!(b.events.len(), 2);
        let lines = prepare(&b.events, &UpstreamFeedback::default(), &key);
        assert!(lines.iter().all(Option::is_some));
        // Not forwarding: nothing counted.
        let p = s.prune_events_forwarded(21, false).unwrap();
        assert_eq!(
            p,
            Pruned {
                deleted: 2,
                unforwarded: 0
            }
        );
    }

    #[test]
    fn forward_backlog_reads_on_a_read_only_connection() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("f.db")).unwrap();
        s.forward_setup().unwrap();
        s.ingest_events(&[event("e1", "c")], 10, &[]).unwrap();
        let reader = s.reader().unwrap().unwrap();
        let b = reader.forward_backlog(10).unwrap();
        assert_eq!((b.cursor, b.events.len()), (0, 1));
        assert!(s.advance_forward_cursor(0, b.events[0].rowid).unwrap());
        assert!(reader.forward_backlog(10).unwrap().events.is_empty());
    }
}
