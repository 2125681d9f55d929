//! Feedback on the server: durable storage of proxies' events, aggregates over them, and
//! escalation rules that turn reports into ordinary table entries.
//!
//! # Where it sits
//! Behind `POST /v1/events`, `GET /v1/events`, `GET /v1/feedback/summary`,
//! `GET /v1/escalations` and `POST /v1/escalations/revert` in [`super::api`], on the store's
//! writer thread (ingest, escalation, revert, pruning) or a reader thread (queries).
//!
//! # What it costs
//! Ingest is one transaction with one `INSERT OR IGNORE` per event (a unique index on
//! `(reporter, proxy, id)` de-duplicates replays), plus one row per listed client of an
//! aggregate (an event with `count` above 1, folded by the proxy per kind and host; its
//! clients go to `event_clients`, schema 8); then, for each host of the batch with events of a
//! kind some rule counts, one indexed `COUNT(DISTINCT ...)` per such rule. A rule that fires
//! is one ordinary write ([`Store::write`]: sequence bump and change-log row), so the entry
//! reaches every proxy through the change stream like any admin write.
//!
//! # Aggregates
//! Every figure counts an aggregate as the occurrences it stands for: counts per kind and
//! per host sum `count`, and distinct clients (summary, escalation) are those of single
//! events together with those listed for aggregates, so they equal what the events sent one
//! by one would give, up to the [`crate::api::events::MAX_LISTED`] clients an aggregate
//! names. An aggregate falls in time windows at its first occurrence (`time`).
//!
//! # Trust
//! An event's `proxy` and `client` are what its sender claims; its `reporter` (a fingerprint
//! of the bearer token it came with, [`reporter_id`]) is not. Rules with
//! `distinct_reporters` above 1 count those, so one token cannot escalate a host alone.
//!
//! # How it fails
//! An event that does not validate is refused on its own by the API (the others are
//! stored). A store error fails the whole batch (nothing stored, nothing acknowledged; the
//! proxy keeps it spooled and retries). The answer goes out only after the transaction has
//! committed (WAL, `synchronous=NORMAL`: a killed server process loses nothing it
//! acknowledged; a power loss may lose the last moments). Escalation never overwrites an
//! entry that did not come from escalation (an admin's or a feed's): such a host is logged
//! and left alone. A category the store does not know makes that escalation fail with a
//! warning; the events stay stored.

use std::collections::BTreeSet;

use rusqlite::{OptionalExtension as _, params};
use serde_json::Value;

use super::store::{Store, StoreError};
use crate::api::events::{Event, EventStatus, Kind};
use crate::api::feedback::{
    CategoryBlocks, Escalation, Escalations, RuleBlocks, Summary, UntestedHost, UserReport,
};
use crate::model::{Entry, Key, KeyKind, Source};

/// Schema 2 -> 3: the events and the escalations fired.
pub(super) const MIGRATE_3: &str = "
CREATE TABLE events (
    proxy TEXT NOT NULL,
    id TEXT NOT NULL,
    kind TEXT NOT NULL,
    time INTEGER NOT NULL,
    received INTEGER NOT NULL,
    client TEXT,
    user TEXT,
    host TEXT,
    url TEXT,
    action TEXT,
    reason TEXT,
    risk TEXT,
    score INTEGER,
    category TEXT,
    rule TEXT,
    ticket TEXT,
    comment TEXT,
    body TEXT NOT NULL
);
CREATE UNIQUE INDEX events_by_id ON events (proxy, id);
CREATE INDEX events_by_host ON events (host, kind, time);
CREATE INDEX events_by_kind ON events (kind, time);
CREATE INDEX events_by_received ON events (received);
CREATE TABLE escalations (
    key TEXT PRIMARY KEY NOT NULL,
    host TEXT NOT NULL,
    rule INTEGER NOT NULL,
    score INTEGER NOT NULL,
    category TEXT,
    clients INTEGER NOT NULL,
    fired INTEGER NOT NULL,
    reverted INTEGER,
    seq INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Schema 3 -> 4: who sent each event: a fingerprint of the bearer token it came with (the
/// `proxy` and `client` fields are only what the sender claims).
pub(super) const MIGRATE_4: &str = "ALTER TABLE events ADD COLUMN reporter TEXT;";

/// Schema 4 -> 5: an event is a duplicate only of one sent with the same token. Keyed on the
/// claimed `(proxy, id)` alone, a holder of another token could store events under a
/// victim proxy's name and ids first (request ids are shown on block pages, and follow a
/// sequence), and the victim's real reports would then be dropped as replays. (Every key
/// of the old index is a key of the new one, so existing rows cannot conflict.)
pub(super) const MIGRATE_5: &str = "
DROP INDEX events_by_id;
CREATE UNIQUE INDEX events_by_id ON events (ifnull(reporter, ''), proxy, id);
";

/// Schema 7 -> 8: aggregated events. `count` is how many occurrences a row stands for (1
/// for every older row); `event_clients` lists the distinct clients of an aggregate by the
/// rowid of its row (a single event keeps its client in `events.client` only), so that
/// `COUNT(DISTINCT ...)` over clients counts each of an aggregate's clients as if its
/// occurrences had been sent one by one. A trigger removes the list with its row, whoever
/// deletes it (pruning, the forwarder's pruning).
pub(super) const MIGRATE_8: &str = "
ALTER TABLE events ADD COLUMN count INTEGER NOT NULL DEFAULT 1;
CREATE TABLE event_clients (
    event INTEGER NOT NULL,
    client TEXT NOT NULL,
    PRIMARY KEY (event, client)
) WITHOUT ROWID;
CREATE TRIGGER event_clients_follow AFTER DELETE ON events
    WHEN old.count > 1
    BEGIN DELETE FROM event_clients WHERE event = old.rowid; END;
";

/// The fingerprint stored as an event's `reporter`: the first 8 bytes of the SHA-256 of the
/// bearer token, in hex. Tells tokens apart without keeping anything that would let the
/// token be guessed.
pub fn reporter_id(token: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(token.as_bytes());
    hex::encode(&digest[..8])
}

/// One `server.escalation` rule, validated by config.
use crate::config::EscalationRule;

/// What one ingest did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ingest {
    /// Events stored.
    pub accepted: u64,
    /// Events already stored (same proxy and id): ignored.
    pub duplicate: u64,
    /// Per event, in the order given: whether it was stored ([`EventStatus::Accepted`]) or
    /// a duplicate.
    pub statuses: Vec<EventStatus>,
    /// Keys written by escalation rules.
    pub escalated: Vec<String>,
    /// The sequence number of the last escalation write, if any (to wake followers).
    pub seq: Option<u64>,
}

impl Store {
    /// [`Store::ingest_events_from`] with no reporter (local tools and tests).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] (nothing stored).
    pub fn ingest_events(
        &mut self,
        events: &[Event],
        received: i64,
        rules: &[EscalationRule],
    ) -> Result<Ingest, StoreError> {
        self.ingest_events_from(None, events, received, rules)
    }

    /// Stores `events` sent by `reporter` ([`reporter_id`] of the sender's token) and
    /// received at `received` (unix seconds) in one transaction, ignoring those already
    /// stored, then applies `rules` to the hosts they name.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] (nothing stored).
    pub fn ingest_events_from(
        &mut self,
        reporter: Option<&str>,
        events: &[Event],
        received: i64,
        rules: &[EscalationRule],
    ) -> Result<Ingest, StoreError> {
        let mut out = Ingest {
            statuses: Vec::with_capacity(events.len()),
            ..Ingest::default()
        };
        let mut candidates: BTreeSet<(usize, String)> = BTreeSet::new();
        {
            let tx = self.conn.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT OR IGNORE INTO events (proxy, id, kind, time, received, client, \
                     user, host, url, action, reason, risk, score, category, rule, ticket, \
                     comment, body, reporter, count) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, \
                     ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
                )?;
                let mut listed = tx.prepare_cached(
                    "INSERT OR IGNORE INTO event_clients (event, client) VALUES (?1, ?2)",
                )?;
                for e in events {
                    let body = serde_json::to_string(e).unwrap_or_default();
                    let n = stmt.execute(params![
                        e.proxy,
                        e.id,
                        e.kind.as_str(),
                        e.time,
                        received,
                        e.client.as_ref().or(e.clients.first()),
                        e.user.as_ref().or(e.users.first()),
                        e.host,
                        e.url,
                        e.action,
                        e.reason,
                        e.risk,
                        e.score,
                        e.categories.first(),
                        e.rule,
                        e.ticket,
                        e.comment,
                        body,
                        reporter,
                        i64::try_from(e.count).unwrap_or(i64::MAX),
                    ])?;
                    if n == 0 {
                        out.duplicate += 1;
                        out.statuses.push(EventStatus::Duplicate);
                        continue;
                    }
                    if e.count > 1 && !e.clients.is_empty() {
                        let row = tx.last_insert_rowid();
                        for c in &e.clients {
                            listed.execute(params![row, c])?;
                        }
                    }
                    out.accepted += 1;
                    out.statuses.push(EventStatus::Accepted);
                    if let Some(h) = &e.host {
                        for (i, r) in rules.iter().enumerate() {
                            if r.kinds.contains(&e.kind) {
                                candidates.insert((i, h.clone()));
                            }
                        }
                    }
                }
            }
            tx.commit()?;
        }
        let now = crate::clock::unix_millis();
        for (i, host) in candidates {
            match self.escalate(i, &rules[i], &host, now) {
                Ok(Some((key, seq))) => {
                    out.escalated.push(key);
                    out.seq = Some(seq);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(host, rule = i, error = %e, "escalation failed");
                }
            }
        }
        Ok(out)
    }

    /// Applies rule `index` to `host` at `now` (unix ms): writes the entry when the rule
    /// fires and nothing better stands in its way. Returns the key and sequence written.
    fn escalate(
        &mut self,
        index: usize,
        rule: &EscalationRule,
        host: &str,
        now: i64,
    ) -> Result<Option<(String, u64)>, StoreError> {
        let key = Key::read(&format!("{host}/"))?;
        if key.kind() != KeyKind::Host {
            // A "host" with a path in it: not a host an entry can be written for.
            return Ok(None);
        }
        let Some(tally) = self.tally(rule, host, &key, now)? else {
            return Ok(None);
        };
        if !self.escalation_may_write(&key, rule)? {
            return Ok(None);
        }
        let seq = self.write_escalation(index, rule, host, &key, &tally, now)?;
        tracing::info!(
            key = key.as_str(),
            rule = index,
            clients = tally.clients,
            score = rule.score.get(),
            "escalation rule fired"
        );
        Ok(Some((key.as_str().to_owned(), seq)))
    }

    /// The distinct clients (and reporters, when the rule asks for several) behind the
    /// rule's events about `host` in its window, counted only after the host's last revert;
    /// `None` when the rule does not fire.
    fn tally(
        &self,
        rule: &EscalationRule,
        host: &str,
        key: &Key,
        now: i64,
    ) -> Result<Option<Tally>, StoreError> {
        let reverted: Option<i64> = self
            .conn
            .query_row(
                "SELECT reverted FROM escalations WHERE key = ?1",
                [key.as_str()],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        let window_ms = i64::try_from(rule.window_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        // After a revert only newer events count: strictly newer, since events received in
        // the revert's own millisecond came before it.
        let since = now
            .saturating_sub(window_ms)
            .max(reverted.map_or(0, |t| t.saturating_add(1)));
        let kinds: Vec<String> = rule
            .kinds
            .iter()
            .map(|k| format!("'{}'", k.as_str()))
            .collect();
        let kinds = kinds.join(", ");
        // `what` counted over `from`, the rule's events about the host in the window.
        let count = |what: &str, from: &str| -> Result<i64, StoreError> {
            let sql = format!("SELECT {what} FROM {from}");
            Ok(self
                .conn
                .prepare_cached(&sql)?
                .query_row(params![host, since], |r| r.get(0))?)
        };
        let events = format!(
            "events WHERE host = ?1 AND kind IN ({kinds}) AND time >= ?2 AND client IS NOT NULL"
        );
        // The clients of single events and those listed for aggregates, each counted once.
        let clients = count(
            "count(DISTINCT who)",
            &format!(
                "(SELECT proxy || ' ' || client AS who FROM {events} UNION ALL \
                 SELECT e.proxy || ' ' || c.client FROM events e \
                 JOIN event_clients c ON c.event = e.rowid WHERE e.host = ?1 \
                 AND e.kind IN ({kinds}) AND e.time >= ?2 AND e.count > 1)"
            ),
        )?;
        if clients < i64::from(rule.distinct_clients) {
            return Ok(None);
        }
        let mut reporters = None;
        if rule.distinct_reporters > 1 {
            let n = count("count(DISTINCT reporter)", &events)?;
            if n < i64::from(rule.distinct_reporters) {
                return Ok(None);
            }
            reporters = Some(n);
        }
        Ok(Some(Tally { clients, reporters }))
    }

    /// Whether an escalation may write `key`: nothing there, or an escalation's own entry
    /// with a better score than the rule's. An admin's or a feed's entry is left alone.
    fn escalation_may_write(&self, key: &Key, rule: &EscalationRule) -> Result<bool, StoreError> {
        let Some(existing) = self.get(key)? else {
            return Ok(true);
        };
        if existing.source != Source::Escalation {
            tracing::info!(
                key = key.as_str(),
                source = existing.source.to_stored(),
                "escalation rule fired but the entry was not written by escalation: left alone"
            );
            return Ok(false);
        }
        Ok(existing.score > rule.score)
    }

    /// Writes the escalation's entry and its record in one transaction; the sequence written.
    fn write_escalation(
        &mut self,
        index: usize,
        rule: &EscalationRule,
        host: &str,
        key: &Key,
        tally: &Tally,
        now: i64,
    ) -> Result<u64, StoreError> {
        let mut entry = Entry::new(
            key.clone(),
            rule.score,
            rule.category.iter().cloned().collect(),
            Source::Escalation,
            now / 1000,
        );
        let clients = tally.clients;
        entry.note = Some(match tally.reporters {
            None => format!(
                "escalation rule {index}: {clients} distinct clients within {} s",
                rule.window_secs
            ),
            Some(r) => format!(
                "escalation rule {index}: {clients} distinct clients from {r} reporters within {} s",
                rule.window_secs
            ),
        });
        let category = rule.category.as_ref().map(|c| c.as_str().to_owned());
        let score = rule.score.get();
        self.write(|w| -> Result<u64, StoreError> {
            w.upsert(&entry)?;
            w.tx.execute(
                "INSERT OR REPLACE INTO escalations (key, host, rule, score, category, clients, \
                 fired, reverted, seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, ?8)",
                params![
                    key.as_str(),
                    host,
                    index as i64,
                    score,
                    category,
                    clients,
                    now,
                    w.seq() as i64
                ],
            )?;
            Ok(w.seq())
        })
    }

    /// The escalations fired (reverted ones included), newest first.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn escalations(&self) -> Result<Escalations, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT key, host, rule, score, category, clients, fired, reverted, seq \
             FROM escalations ORDER BY fired DESC",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(Escalation {
                key: r.get(0)?,
                host: r.get(1)?,
                rule: r.get(2)?,
                score: r.get(3)?,
                category: r.get(4)?,
                clients: r.get(5)?,
                fired_ms: r.get(6)?,
                reverted_ms: r.get(7)?,
                seq: r.get(8)?,
            })
        })?;
        Ok(Escalations {
            escalations: rows.collect::<Result<Vec<_>, _>>()?,
        })
    }

    /// Reverts the escalation of `key`: deletes its entry (an ordinary write, when the entry
    /// is still the escalation's) and marks it reverted, so that only events after now can
    /// fire it again. `Ok(None)` when no escalation of that key is active.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn revert_escalation(&mut self, key: &Key) -> Result<Option<u64>, StoreError> {
        let active: Option<i64> = self
            .conn
            .query_row(
                "SELECT fired FROM escalations WHERE key = ?1 AND reverted IS NULL",
                [key.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        if active.is_none() {
            return Ok(None);
        }
        let ours = self
            .get(key)?
            .is_some_and(|e| e.source == Source::Escalation);
        let now = crate::clock::unix_millis();
        let seq = self.write(|w| -> Result<u64, StoreError> {
            if ours {
                w.delete(key)?;
            }
            w.tx.execute(
                "UPDATE escalations SET reverted = ?2 WHERE key = ?1",
                params![key.as_str(), now],
            )?;
            Ok(w.seq())
        })?;
        Ok(Some(seq))
    }

    /// Deletes events received before `before` (unix seconds). Returns how many.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn prune_events(&mut self, before: i64) -> Result<u64, StoreError> {
        let n = self
            .conn
            .execute("DELETE FROM events WHERE received < ?1", [before])?;
        Ok(n as u64)
    }

    /// Stored events, newest first: their JSON as sent, filtered by `kind` and `host`, at
    /// most `limit`.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn events(
        &self,
        kind: Option<Kind>,
        host: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Value>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT body, reporter FROM events WHERE (?1 IS NULL OR kind = ?1) \
             AND (?2 IS NULL OR host = ?2) ORDER BY time DESC, proxy, id LIMIT ?3",
        )?;
        let rows = stmt.query_map(
            params![
                kind.map(Kind::as_str),
                host,
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?)),
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (body, reporter) = row?;
            let mut v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            if let (Some(obj), Some(r)) = (v.as_object_mut(), reporter) {
                obj.insert("reporter".into(), r.into());
            }
            out.push(v);
        }
        Ok(out)
    }

    /// The aggregates over events since `since` (unix ms): counts per kind, top untested
    /// hosts by distinct clients and proxies, blocks by rule and by category, user reports
    /// with their tickets; each list at most `limit` long.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn feedback_summary(&self, since: i64, limit: usize) -> Result<Summary, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let c = &self.conn;
        let mut kinds = std::collections::BTreeMap::new();
        {
            let mut s = c.prepare_cached(
                "SELECT kind, sum(count) FROM events WHERE time >= ?1 GROUP BY kind ORDER BY kind",
            )?;
            for row in s.query_map([since], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })? {
                let (k, n) = row?;
                kinds.insert(k, n);
            }
        }
        let mut untested = Vec::new();
        {
            // Clients: those of single events and those listed for aggregates, each once.
            let mut s = c.prepare_cached(
                "WITH u AS (SELECT rowid AS r, host, proxy, client, count FROM events \
                   WHERE (kind = 'untested' OR risk = 'untested') AND time >= ?1 \
                   AND host IS NOT NULL), \
                 who AS (SELECT host, proxy || ' ' || coalesce(client, '') AS w FROM u \
                   UNION ALL SELECT u.host, u.proxy || ' ' || c.client FROM u \
                   JOIN event_clients c ON c.event = u.r WHERE u.count > 1), \
                 cl AS (SELECT host, count(DISTINCT w) AS clients FROM who GROUP BY host), \
                 ev AS (SELECT host, count(DISTINCT proxy) AS proxies, sum(count) AS events \
                   FROM u GROUP BY host) \
                 SELECT ev.host, cl.clients, ev.proxies, ev.events FROM ev JOIN cl USING (host) \
                 ORDER BY 2 DESC, 3 DESC, 1 LIMIT ?2",
            )?;
            for row in s.query_map(params![since, limit], |r| {
                Ok(UntestedHost {
                    host: r.get(0)?,
                    clients: r.get(1)?,
                    proxies: r.get(2)?,
                    events: r.get(3)?,
                })
            })? {
                untested.push(row?);
            }
        }
        let by_rule = self.blocks_by("rule", since, limit, |rule, blocks| RuleBlocks {
            rule,
            blocks,
        })?;
        let by_category = self.blocks_by("category", since, limit, |category, blocks| {
            CategoryBlocks { category, blocks }
        })?;
        let mut reports = Vec::new();
        {
            let mut s = c.prepare_cached(
                "SELECT time, proxy, id, ticket, host, url, client, comment FROM events \
                 WHERE kind = 'user_report' AND time >= ?1 ORDER BY time DESC LIMIT ?2",
            )?;
            for row in s.query_map(params![since, limit], |r| {
                Ok(UserReport {
                    time: r.get(0)?,
                    proxy: r.get(1)?,
                    id: r.get(2)?,
                    ticket: r.get(3)?,
                    host: r.get(4)?,
                    url: r.get(5)?,
                    client: r.get(6)?,
                    comment: r.get(7)?,
                })
            })? {
                reports.push(row?);
            }
        }
        Ok(Summary {
            since_ms: since,
            kinds,
            untested_hosts: untested,
            blocks_by_rule: by_rule,
            blocks_by_category: by_category,
            user_reports: reports,
        })
    }

    /// Blocks since `since` (unix ms) grouped by `column` (`rule` or `category`, a fixed
    /// name, never input), most first, at most `limit` groups, each made by `row`.
    fn blocks_by<T>(
        &self,
        column: &str,
        since: i64,
        limit: i64,
        row: impl Fn(Option<String>, i64) -> T,
    ) -> Result<Vec<T>, StoreError> {
        let sql = format!(
            "SELECT {column}, sum(count) FROM events WHERE kind = 'blocked' AND time >= ?1 \
             GROUP BY {column} ORDER BY 2 DESC, 1 LIMIT ?2"
        );
        let mut s = self.conn.prepare_cached(&sql)?;
        let rows = s.query_map(params![since, limit], |r| Ok(row(r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}

/// Who stands behind an escalation: distinct clients, and distinct reporting proxies when
/// the rule counts them.
struct Tally {
    clients: i64,
    reporters: Option<i64>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::{Category, Score};

    fn report(proxy: &str, id: &str, client: &str, host: &str) -> Event {
        let mut e = Event::new(
            id.into(),
            Kind::UserReport,
            crate::clock::unix_millis(),
            proxy.into(),
        );
        e.client = Some(client.into());
        e.host = Some(host.into());
        e.ticket = Some("t1".into());
        e
    }

    fn rule() -> EscalationRule {
        EscalationRule {
            kinds: vec![Kind::UserReport, Kind::FileVerdict],
            distinct_clients: 3,
            distinct_reporters: 1,
            window_secs: 3600,
            score: Score::new(70).unwrap(),
            category: Some(Category::parse("malware").unwrap()),
        }
    }

    #[test]
    fn feedback_ingest_is_idempotent_by_token_proxy_and_id() {
        let mut s = Store::open_in_memory().unwrap();
        let batch = [
            report("p1", "a", "10.0.0.1", "x.test"),
            report("p1", "b", "10.0.0.1", "x.test"),
        ];
        let r = s.ingest_events(&batch, 1, &[]).unwrap();
        assert_eq!((r.accepted, r.duplicate), (2, 0));
        let r = s.ingest_events(&batch, 1, &[]).unwrap();
        assert_eq!((r.accepted, r.duplicate), (0, 2));
        // Another proxy may use the same id.
        let r = s
            .ingest_events(&[report("p2", "a", "10.0.0.1", "x.test")], 1, &[])
            .unwrap();
        assert_eq!(r.accepted, 1);
        // Replays are per token: an event stored first under p3's name and id with another
        // token does not make p3's own report a duplicate.
        let forged = [report("p3", "f1", "10.0.0.9", "x.test")];
        let r = s.ingest_events_from(Some("eve"), &forged, 1, &[]).unwrap();
        assert_eq!((r.accepted, r.duplicate), (1, 0));
        let r = s
            .ingest_events_from(Some("p3-token"), &forged, 1, &[])
            .unwrap();
        assert_eq!((r.accepted, r.duplicate), (1, 0));
        let r = s
            .ingest_events_from(Some("p3-token"), &forged, 1, &[])
            .unwrap();
        assert_eq!((r.accepted, r.duplicate), (0, 1));
        assert_eq!(
            s.events(Some(Kind::UserReport), None, 100).unwrap().len(),
            5
        );
        assert_eq!(s.prune_events(2).unwrap(), 5);
        assert!(s.events(None, None, 100).unwrap().is_empty());
    }

    #[test]
    fn feedback_escalation_needs_distinct_clients_and_spares_admin_entries() {
        let mut s = Store::open_in_memory().unwrap();
        let rules = [rule()];
        // One client three times: not enough.
        for id in ["1", "2", "3"] {
            let r = s
                .ingest_events(&[report("p1", id, "10.0.0.1", "bad.test")], 1, &rules)
                .unwrap();
            assert!(r.escalated.is_empty());
        }
        let seq = s.seq().unwrap();
        s.ingest_events(&[report("p1", "4", "10.0.0.2", "bad.test")], 1, &rules)
            .unwrap();
        // A third client on another proxy: fires.
        let r = s
            .ingest_events(&[report("p2", "5", "10.0.0.3", "bad.test")], 1, &rules)
            .unwrap();
        assert_eq!(r.escalated, ["bad.test/"]);
        assert!(s.seq().unwrap() > seq);
        let e = s.get(&Key::parse("bad.test/").unwrap()).unwrap().unwrap();
        assert_eq!((e.score.get(), e.source.clone()), (70, Source::Escalation));
        assert!(
            s.changes_since(seq, 10)
                .unwrap()
                .keys
                .contains(&"bad.test/".to_owned())
        );
        assert_eq!(s.escalations().unwrap().escalations[0].clients, 3);
        // Revert: the entry goes; the old reports do not fire it again.
        let key = Key::parse("bad.test/").unwrap();
        assert!(s.revert_escalation(&key).unwrap().is_some());
        assert!(s.get(&key).unwrap().is_none());
        assert!(s.revert_escalation(&key).unwrap().is_none());
        // The old reports and the revert in one millisecond (as on a fast machine): those
        // reports still came before it and do not count.
        let t = crate::clock::unix_millis() - 10;
        s.conn
            .execute("UPDATE events SET time = ?1 WHERE host = 'bad.test'", [t])
            .unwrap();
        s.conn
            .execute("UPDATE escalations SET reverted = ?1", [t])
            .unwrap();
        let r = s
            .ingest_events(&[report("p1", "6", "10.0.0.1", "bad.test")], 1, &rules)
            .unwrap();
        assert!(r.escalated.is_empty());

        // A host that is not one writes nothing.
        for (i, c) in ["10.0.0.1", "10.0.0.2", "10.0.0.3"].iter().enumerate() {
            let r = s
                .ingest_events(
                    &[report("p1", &format!("h{i}"), c, "x.test/evil")],
                    1,
                    &rules,
                )
                .unwrap();
            assert!(r.escalated.is_empty());
        }

        // An admin's entry is never overwritten.
        let admin = Entry::new(
            Key::parse("good.test/").unwrap(),
            Score::new(95).unwrap(),
            Vec::new(),
            Source::Manual,
            1,
        );
        s.upsert(std::slice::from_ref(&admin)).unwrap();
        for (i, c) in ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
            .iter()
            .enumerate()
        {
            let r = s
                .ingest_events(&[report("p1", &format!("g{i}"), c, "good.test")], 1, &rules)
                .unwrap();
            assert!(r.escalated.is_empty());
        }
        assert_eq!(s.get(&admin.key).unwrap().unwrap(), admin);
    }

    /// `n` untested occurrences about each host, from clients `c0..ck` of proxy `p1`, one
    /// event each, and the same folded into one aggregate per host (as the proxy does).
    fn occurrences(hosts: &[&str], n: usize, k: usize) -> (Vec<Event>, Vec<Event>) {
        let now = crate::clock::unix_millis();
        let (mut single, mut folded) = (Vec::new(), Vec::new());
        for host in hosts {
            let mut agg: Option<Event> = None;
            for i in 0..n {
                let mut e = Event::new(
                    format!("{host}-{i}"),
                    Kind::Untested,
                    now + i as i64,
                    "p1".into(),
                );
                e.host = Some((*host).into());
                e.client = Some(format!("c{}", i % k));
                e.risk = Some("untested".into());
                single.push(e.clone());
                match &mut agg {
                    None => agg = Some(e),
                    Some(a) => {
                        a.count += 1;
                        a.last_time = Some(e.time);
                        let c = e.client.unwrap();
                        if a.clients.is_empty() {
                            a.clients.push(a.client.clone().unwrap());
                        }
                        if !a.clients.contains(&c) {
                            a.clients.push(c);
                        }
                    }
                }
            }
            folded.extend(agg);
        }
        (single, folded)
    }

    #[test]
    fn feedback_aggregated_events_count_as_the_occurrences_they_stand_for() {
        let hosts = ["a.test", "b.test", "c.test"];
        let (single, folded) = occurrences(&hosts, 40, 3);
        assert_eq!(folded.len(), 3);
        let untested_rule = EscalationRule {
            kinds: vec![Kind::Untested],
            distinct_clients: 3,
            ..rule()
        };
        let rules = [untested_rule];
        let mut one_by_one = Store::open_in_memory().unwrap();
        let r1 = one_by_one.ingest_events(&single, 1, &rules).unwrap();
        let mut aggregated = Store::open_in_memory().unwrap();
        let r2 = aggregated.ingest_events(&folded, 1, &rules).unwrap();
        assert_eq!((r1.accepted, r2.accepted), (120, 3));
        assert_eq!(r1.escalated, ["a.test/", "b.test/", "c.test/"]);
        assert_eq!(r2.escalated, r1.escalated, "the rule fires alike");
        let summary = |s: &Store| {
            let mut v = serde_json::to_value(s.feedback_summary(0, 10).unwrap()).unwrap();
            v.as_object_mut().unwrap().remove("since_ms");
            v
        };
        assert_eq!(summary(&aggregated), summary(&one_by_one));
        assert_eq!(summary(&aggregated)["kinds"]["untested"], 120);
        assert_eq!(
            summary(&aggregated)["untested_hosts"][0],
            json!({ "host": "a.test", "clients": 3, "proxies": 1, "events": 40 })
        );
        // Two clients only: the rule does not fire, aggregated or not.
        let (single, folded) = occurrences(&["d.test"], 40, 2);
        let r1 = one_by_one.ingest_events(&single, 1, &rules).unwrap();
        let r2 = aggregated.ingest_events(&folded, 1, &rules).unwrap();
        assert!(r1.escalated.is_empty() && r2.escalated.is_empty());
        // A replay of an aggregate is a duplicate, and pruning takes its client list along.
        let r = aggregated.ingest_events(&folded, 1, &rules).unwrap();
        assert_eq!((r.accepted, r.duplicate), (0, 1));
        assert_eq!(aggregated.prune_events(2).unwrap(), 4);
        let left: i64 = aggregated
            .conn
            .query_row("SELECT count(*) FROM event_clients", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 0);
    }

    #[test]
    fn feedback_summary_aggregates() {
        let mut s = Store::open_in_memory().unwrap();
        let mut evs = Vec::new();
        for (i, (proxy, client, host)) in [
            ("p1", "c1", "u1.test"),
            ("p1", "c2", "u1.test"),
            ("p2", "c1", "u1.test"),
            ("p1", "c1", "u2.test"),
        ]
        .iter()
        .enumerate()
        {
            let mut e = Event::new(
                format!("u{i}"),
                Kind::Untested,
                crate::clock::unix_millis(),
                (*proxy).into(),
            );
            e.client = Some((*client).into());
            e.host = Some((*host).into());
            evs.push(e);
        }
        let mut b = Event::new(
            "b1".into(),
            Kind::Blocked,
            crate::clock::unix_millis(),
            "p1".into(),
        );
        b.rule = Some("r1".into());
        b.categories = vec!["malware".into(), "spam".into()];
        evs.push(b);
        evs.push(report("p1", "rep", "c9", "u1.test"));
        s.ingest_events(&evs, 1, &[]).unwrap();
        let v = serde_json::to_value(s.feedback_summary(0, 10).unwrap()).unwrap();
        assert_eq!(v["kinds"]["untested"], 4);
        assert_eq!(
            v["untested_hosts"][0],
            json!({ "host": "u1.test", "clients": 3, "proxies": 2, "events": 3 })
        );
        assert_eq!(v["blocks_by_rule"][0], json!({ "rule": "r1", "blocks": 1 }));
        assert_eq!(
            v["blocks_by_category"][0],
            json!({ "category": "malware", "blocks": 1 })
        );
        assert_eq!(v["user_reports"][0]["ticket"], "t1");
    }
}
