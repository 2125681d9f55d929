//! The durable reputation table: SQLite through rusqlite (bundled), WAL journal,
//! `synchronous=NORMAL`, schema versioned with `PRAGMA user_version`.
//!
//! The API is synchronous; a server runs it on `spawn_blocking` or on a dedicated thread.
//! Every write is one transaction that bumps the change sequence once and records each key it
//! touched under that sequence number, so a follower asking [`Store::changes_since`] learns
//! which keys to drop from its cache.

use std::path::Path;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::api::changes::Changes;
use crate::canon::{self, CanonicalUrl};
use crate::model::{
    Category, CategoryError, Entry, FileEntry, FileVerdict, Key, KeyError, Score, Sha256Hex,
    Source, Taxonomy, Verdict, combine, lookup_hosts,
};

/// The schema version this code writes and reads.
pub const SCHEMA_VERSION: i64 = 8;

const SCHEMA: &str = "
CREATE TABLE meta (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL);
INSERT INTO meta (id, seq) VALUES (1, 0);
CREATE TABLE entries (
    key TEXT PRIMARY KEY NOT NULL,
    host TEXT NOT NULL,
    score INTEGER NOT NULL,
    categories TEXT NOT NULL,
    source TEXT NOT NULL,
    added INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    expires INTEGER,
    note TEXT
) WITHOUT ROWID;
CREATE INDEX entries_by_host ON entries (host);
CREATE TABLE file_hashes (
    sha256 TEXT PRIMARY KEY NOT NULL,
    verdict TEXT NOT NULL,
    name TEXT,
    source TEXT NOT NULL,
    updated INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE changes (
    seq INTEGER NOT NULL,
    key TEXT NOT NULL,
    PRIMARY KEY (seq, key)
) WITHOUT ROWID;
CREATE TABLE categories (name TEXT PRIMARY KEY NOT NULL) WITHOUT ROWID;
";

/// Schema 1 -> 2: the change log remembers up to which sequence it was pruned.
const MIGRATE_2: &str = "ALTER TABLE meta ADD COLUMN pruned_through INTEGER NOT NULL DEFAULT 0;";

/// Schema 2 -> 3: feedback events and escalations ([`super::events`]).
const MIGRATE_3: &str = super::events::MIGRATE_3;

/// Schema 5 -> 6: state of the tiers above this server, by name: the feedback forwarder's
/// cursor (the last event rowid the upstream acknowledged) and the key of its anonymizing hash
/// ([`super::forward`]).
const MIGRATE_6: &str = "
CREATE TABLE tier_state (name TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) WITHOUT ROWID;
";

/// What brings a store of schema `N - 1` to `N`, for each `N` after 1 (the last is
/// [`SCHEMA_VERSION`]).
const MIGRATIONS: [(i64, &str); 7] = [
    (2, MIGRATE_2),
    (3, MIGRATE_3),
    (4, super::events::MIGRATE_4),
    (5, super::events::MIGRATE_5),
    (6, MIGRATE_6),
    (7, super::mirror::MIGRATE_7),
    (8, super::events::MIGRATE_8),
];

const ENTRY_COLUMNS: &str = "key, score, categories, source, added, updated, expires, note, 0";

/// `SELECT` of every entry column and the row's tier (0 for this server's own), from the
/// server's own `entries` and from the `mirror` of its upstream's table ([`super::mirror`]),
/// with one condition for both: the SQL text is a constant, so a cached statement is found
/// without formatting a string first. The rest of the statement (`ORDER BY`, ...) follows.
macro_rules! select_both_tiers {
    ($where:literal $(, $rest:literal)*) => {
        concat!(
            "SELECT key, score, categories, source, added, updated, expires, note, 0 FROM entries ",
            $where,
            " UNION ALL SELECT key, score, categories, source, added, updated, expires, note, tier \
             FROM mirror ",
            $where
            $(, $rest)*
        )
    };
}

/// The entries keyed on one host (`?1` = `host/`, `?2` = `host0`), own and mirrored, in key
/// order (SQLite merges the two primary-key ranges): the keys starting with `host/`. A host
/// never contains `/`, so these are exactly the keys whose host is `host`, and `host/` itself
/// sorts first. Path entries expired at `?3` are left out; the `host/` entry is returned
/// expired or not ([`combine`] decides). A key in both tables comes twice, next to each other.
const HOST_RANGE: &str = select_both_tiers!(
    "WHERE key >= ?1 AND key < ?2 AND (key = ?1 OR expires IS NULL OR expires > ?3)",
    " ORDER BY 1"
);

/// One URL's entries, own and mirrored: the primary keys against all its expressions at once
/// (unused parameters stay NULL, which matches nothing).
const EXPRESSION_PROBE: &str = select_both_tiers!(
    "WHERE key IN (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, \
     ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30)"
);
const _: () = assert!(canon::MAX_EXPRESSIONS == 30);

/// One key's entry: the server's own, else the mirrored one.
const ONE_KEY: &str = select_both_tiers!("WHERE key = ?1", " ORDER BY 9 LIMIT 1");

/// The server's own entry under one key.
const OWN_KEY: &str = "SELECT key, score, categories, source, added, updated, expires, note, 0 FROM entries \
     WHERE key = ?1";

/// Page cache per connection (`PRAGMA cache_size`, negative = KiB): 64 MiB instead of
/// SQLite's 2 MiB, which is filled only as pages are used. With a 1,000,000-entry table
/// (a 200 MiB file) the upper levels of the B-trees then stay cached, which makes host
/// lookups and imports markedly faster (`benches/repserver.rs`, `docs/performance.md`).
/// Memory-mapped reads (`mmap_size`) gained nothing on top of this while mapping the whole
/// file into the RSS, so they stay off.
const CACHE_KIB: i64 = 64 * 1024;

/// Page cache of a connection that scans a whole table ([`Store::key_hosts`]), in KiB: SQLite's
/// default. A scan reads each page once, so a larger cache would only hold memory.
const SCAN_CACHE_KIB: i64 = 2 * 1024;

/// `PRAGMA journal_size_limit`: after a checkpoint the WAL is truncated to this size rather
/// than keeping the size of the largest import on disk.
const WAL_LIMIT_BYTES: i64 = 64 * 1024 * 1024;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused (I/O error, disk full, locked, corrupt file, ...).
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The file was written by a newer webrep.
    #[error("store schema version {found} is newer than the supported {supported}")]
    SchemaTooNew {
        /// `user_version` in the file.
        found: i64,
        /// [`SCHEMA_VERSION`].
        supported: i64,
    },
    /// An entry names a category that is not known.
    #[error(transparent)]
    Category(#[from] CategoryError),
    /// A key or host could not be parsed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A row in the file does not decode (edited by hand, or damaged).
    #[error("store row {key:?} is damaged: {what}")]
    Corrupt {
        /// The row's key.
        key: String,
        /// What is wrong.
        what: &'static str,
    },
}

/// The per-host answer of [`Store::lookup_hosts`]: the verdict for the host itself (its `host/`
/// entries and those of its parent domains) and the path-level entries that may apply under
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAnswer {
    /// The canonical host.
    pub host: String,
    /// The verdict for `http://host/`.
    pub verdict: Verdict,
    /// Path-prefix and exact entries keyed on the host or a parent domain, at most the limit
    /// given.
    pub paths: Vec<Entry>,
    /// More path entries exist than the limit: ask per URL for this host.
    pub truncated: bool,
}

/// The reputation table. One connection; not shared between threads.
#[derive(Debug)]
pub struct Store {
    pub(super) conn: Connection,
    taxonomy: Taxonomy,
}

impl Store {
    /// Opens (or creates) the store at `path`.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] when the file cannot be opened or is not a database,
    /// [`StoreError::SchemaTooNew`].
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(path)?;
        conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0))?;
        Store::init(conn)
    }

    /// A second, read-only connection to the same file, for a reader thread: with WAL it
    /// reads while this one writes, and sees each write transaction whole or not at all.
    /// `None` for an in-memory store. Its [`taxonomy`](Self::taxonomy) is the one of the
    /// moment it was opened (readers do not need categories defined later).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn reader(&self) -> Result<Option<Store>, StoreError> {
        let Some(path) = self.conn.path().filter(|p| !p.is_empty()) else {
            return Ok(None);
        };
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        Store::tune(&conn)?;
        Ok(Some(Store {
            conn,
            taxonomy: self.taxonomy.clone(),
        }))
    }

    /// A store that lives in memory only (tests, the embedded sample table).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn open_in_memory() -> Result<Store, StoreError> {
        Store::init(Connection::open_in_memory()?)
    }

    /// Settings every connection gets (the writer's and the readers').
    fn tune(conn: &Connection) -> Result<(), StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // Query plans here never depend on bound values (primary-key ranges and probes), and
        // without this SQLite re-prepares a statement with a bound `LIMIT ?` on every
        // execution (it plans with the limit's value): a third of a host lookup's time.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
        conn.set_prepared_statement_cache_capacity(32);
        conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
        Ok(())
    }

    fn init(mut conn: Connection) -> Result<Store, StoreError> {
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Store::tune(&conn)?;
        conn.pragma_update(None, "journal_size_limit", WAL_LIMIT_BYTES)?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        if version < SCHEMA_VERSION {
            let tx = conn.transaction()?;
            if version == 0 {
                tx.execute_batch(SCHEMA)?;
            }
            for (to, script) in MIGRATIONS {
                if version < to {
                    tx.execute_batch(script)?;
                }
            }
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            tx.commit()?;
        }
        let mut taxonomy = Taxonomy::default();
        {
            let mut stmt = conn.prepare("SELECT name FROM categories")?;
            let names = stmt.query_map([], |r| r.get::<_, String>(0))?;
            for name in names {
                let name = name?;
                taxonomy.define(Category::parse(&name)?)?;
            }
        }
        Ok(Store { conn, taxonomy })
    }

    /// The known categories.
    pub fn taxonomy(&self) -> &Taxonomy {
        &self.taxonomy
    }

    /// Defines an admin category (durably). Defining one twice is not an error.
    ///
    /// # Errors
    /// [`StoreError::Category`] for a built-in name, [`StoreError::Sqlite`].
    pub fn define_category(&mut self, category: Category) -> Result<(), StoreError> {
        let mut taxonomy = self.taxonomy.clone();
        taxonomy.define(category.clone())?;
        self.conn.execute(
            "INSERT OR IGNORE INTO categories (name) VALUES (?1)",
            [category.as_str()],
        )?;
        self.taxonomy = taxonomy;
        Ok(())
    }

    /// The current change sequence number (0 for a fresh store).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn seq(&self) -> Result<u64, StoreError> {
        let seq: i64 = self
            .conn
            .query_row("SELECT seq FROM meta WHERE id = 1", [], |r| r.get(0))?;
        Ok(u64::try_from(seq).unwrap_or(0))
    }

    /// Runs `f` inside one transaction that bumps the sequence once: either everything `f`
    /// wrote is committed, or (when `f` or the commit fails) nothing is.
    ///
    /// # Errors
    /// `f`'s error, or [`StoreError`] converted into `E`.
    pub fn write<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&mut Writer<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let tx = self.conn.transaction().map_err(StoreError::from)?;
        let seq: i64 = tx
            .query_row(
                "UPDATE meta SET seq = seq + 1 WHERE id = 1 RETURNING seq",
                [],
                |r| r.get(0),
            )
            .map_err(StoreError::from)?;
        let mut writer = Writer {
            tx,
            seq,
            taxonomy: &self.taxonomy,
            written: 0,
        };
        let out = f(&mut writer)?;
        writer.tx.commit().map_err(StoreError::from)?;
        Ok(out)
    }

    /// Inserts or replaces entries in one transaction. An existing entry keeps its `added`
    /// time. Returns the new sequence number.
    ///
    /// # Errors
    /// [`StoreError::Category`] for an unknown category (nothing is written),
    /// [`StoreError::Sqlite`].
    pub fn upsert(&mut self, entries: &[Entry]) -> Result<u64, StoreError> {
        self.write(|w| {
            for e in entries {
                w.upsert(e)?;
            }
            Ok(w.seq())
        })
    }

    /// Deletes entries in one transaction; missing keys are not an error. Returns the new
    /// sequence number.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn delete(&mut self, keys: &[Key]) -> Result<u64, StoreError> {
        self.write(|w| {
            for k in keys {
                w.delete(k)?;
            }
            Ok(w.seq())
        })
    }

    /// Inserts or replaces file-hash entries in one transaction. Returns the new sequence.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn upsert_files(&mut self, files: &[FileEntry]) -> Result<u64, StoreError> {
        self.write(|w| {
            for f in files {
                w.upsert_file(f)?;
            }
            Ok(w.seq())
        })
    }

    /// The file-hash entry for a digest, if any.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`], [`StoreError::Corrupt`].
    pub fn lookup_file(&self, sha256: &Sha256Hex) -> Result<Option<FileEntry>, StoreError> {
        // This server's own verdict, else the one mirrored from the upstream tier.
        let mut stmt = self.conn.prepare_cached(
            "SELECT verdict, name, source, updated, 0 FROM file_hashes WHERE sha256 = ?1 \
             UNION ALL SELECT verdict, name, source, updated, tier FROM mirror_files \
             WHERE sha256 = ?1 ORDER BY 5 LIMIT 1",
        )?;
        let row = stmt
            .query_row([sha256.as_str()], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .optional()?;
        let Some((verdict, name, source, updated)) = row else {
            return Ok(None);
        };
        let corrupt = |what| StoreError::Corrupt {
            key: sha256.as_str().to_owned(),
            what,
        };
        Ok(Some(FileEntry {
            sha256: sha256.clone(),
            verdict: FileVerdict::parse(&verdict).ok_or_else(|| corrupt("bad verdict"))?,
            name,
            source: Source::from_stored(&source).ok_or_else(|| corrupt("bad source"))?,
            updated,
        }))
    }

    /// This server's own entry under exactly `key`, expired or not (not a mirrored one).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`], [`StoreError::Corrupt`].
    pub fn get(&self, key: &Key) -> Result<Option<Entry>, StoreError> {
        self.get_with(OWN_KEY, key.as_str())
    }

    /// The entry that applies under exactly `key`, expired or not: this server's own, else
    /// the one mirrored from the upstream tier.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`], [`StoreError::Corrupt`].
    pub fn get_any(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        self.get_with(ONE_KEY, key)
    }

    fn get_with(&self, sql: &str, key: &str) -> Result<Option<Entry>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let raw = stmt.query_row([key], RawEntry::read).optional()?;
        raw.map(RawEntry::decode).transpose()
    }

    /// The combined verdict for a URL at time `now` (unix seconds): every entry keyed by one
    /// of the URL's expressions, by the rule of [`combine`]. At most
    /// [`canon::MAX_EXPRESSIONS`] primary-key probes, in one statement.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`], [`StoreError::Corrupt`].
    pub fn lookup(&self, url: &CanonicalUrl, now: i64) -> Result<Verdict, StoreError> {
        let mut stmt = self.conn.prepare_cached(EXPRESSION_PROBE)?;
        // Parameters keep their values between executions: clear the ones a URL with fewer
        // expressions than the last one would leave behind.
        stmt.clear_bindings();
        for (i, e) in url.expressions().enumerate() {
            stmt.raw_bind_parameter(i + 1, e.as_str())?;
        }
        let mut rows = stmt.raw_query();
        let mut found: Vec<Entry> = Vec::new();
        while let Some(row) = rows.next()? {
            let e = RawEntry::read(row)?.decode()?;
            // This server's own entry wins over the mirrored one under the same key.
            match found.iter_mut().find(|f| f.key == e.key) {
                Some(f) if e.tier < f.tier => *f = e,
                Some(_) => {}
                None => found.push(e),
            }
        }
        Ok(combine(url, &found, now))
    }

    /// [`lookup`](Self::lookup) on a URL given as text; canonicalizes it first.
    ///
    /// # Errors
    /// [`StoreError::Key`] when the text is not a URL, else as [`lookup`](Self::lookup).
    pub fn lookup_str(&self, url: &str, now: i64) -> Result<Verdict, StoreError> {
        let url = canon::canonicalize(url).map_err(KeyError::from)?;
        self.lookup(&url, now)
    }

    /// All entries keyed on `host` or one of its parent domains (as lookup expressions use
    /// them), expired ones included, at most `limit`: one query on the host index.
    ///
    /// # Errors
    /// [`StoreError::Key`] for a bad host, [`StoreError::Sqlite`], [`StoreError::Corrupt`].
    pub fn entries_for_host(&self, host: &str, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let url = host_url(host)?;
        let hosts = lookup_hosts(&url);
        self.entries_on_hosts(&hosts, limit)
    }

    fn entries_on_hosts(&self, hosts: &[&str], limit: usize) -> Result<Vec<Entry>, StoreError> {
        let marks = vec!["?"; hosts.len()].join(",");
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {ENTRY_COLUMNS} FROM entries WHERE host IN ({marks}) LIMIT ?{}",
            hosts.len() + 1
        ))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut values: Vec<&dyn rusqlite::ToSql> =
            hosts.iter().map(|h| h as &dyn rusqlite::ToSql).collect();
        values.push(&limit);
        let rows = stmt.query_map(values.as_slice(), RawEntry::read)?;
        let mut out = Vec::new();
        for raw in rows {
            out.push(raw?.decode()?);
        }
        Ok(out)
    }

    /// Per-host answers for many hosts in one call: each host's verdict (from the `host/`
    /// entries of the host and its parent domains) and up to `path_limit` unexpired
    /// path-level entries that may apply under it, those on the host itself first, then its
    /// parents' from the longest (in key order within one host). A host that does not parse
    /// gets its own error; the others are answered. All answers come from one snapshot.
    ///
    /// Cost: one primary-key range scan per host and parent (at most [`canon::MAX_HOSTS`]),
    /// reading the `host/` row and at most `path_limit + 1` path rows in all.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`], [`StoreError::Corrupt`].
    pub fn lookup_hosts(
        &self,
        hosts: &[&str],
        now: i64,
        path_limit: usize,
    ) -> Result<Vec<Result<HostAnswer, KeyError>>, StoreError> {
        self.snapshot(|s| s.answer_hosts(hosts, now, path_limit))
    }

    /// Runs the reads of `f` in one read transaction: everything it reads comes from one
    /// snapshot, and the WAL read lock is taken once rather than once per statement (a
    /// lock and an unlock system call each). Inside a transaction already, `f` just runs.
    ///
    /// # Errors
    /// `f`'s error, or [`StoreError::Sqlite`] converted into `E`.
    pub fn snapshot<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, E>,
    ) -> Result<T, E> {
        if !self.conn.is_autocommit() {
            return f(self);
        }
        // BEGIN and COMMIT are cached statements: parsing them each time costs a quarter of
        // a one-host lookup.
        self.conn
            .prepare_cached("BEGIN")
            .and_then(|mut s| s.execute([]))
            .map_err(StoreError::from)?;
        let out = f(self);
        // Nothing was written: COMMIT and ROLLBACK end it alike, and it must end even when a
        // query failed.
        let end = self
            .conn
            .prepare_cached("COMMIT")
            .and_then(|mut s| s.execute([]));
        if end.is_err() && !self.conn.is_autocommit() {
            self.conn.execute_batch("ROLLBACK").ok();
        }
        let out = out?;
        end.map_err(StoreError::from)?;
        Ok(out)
    }

    /// [`lookup_hosts`](Self::lookup_hosts) inside its read transaction.
    fn answer_hosts(
        &self,
        hosts: &[&str],
        now: i64,
        path_limit: usize,
    ) -> Result<Vec<Result<HostAnswer, KeyError>>, StoreError> {
        let mut stmt = self.conn.prepare_cached(HOST_RANGE)?;
        let want = path_limit.saturating_add(1);
        let (mut lo, mut hi) = (String::new(), String::new());
        let mut out = Vec::with_capacity(hosts.len());
        for host in hosts {
            let url = match host_url(host) {
                Ok(u) => u,
                Err(e) => {
                    out.push(Err(e));
                    continue;
                }
            };
            // The `host/` entries of the host and its parents (as the expressions of
            // `http://host/` name them) and its path entries, most specific host first: one
            // primary-key range per suffix.
            let mut host_entries = Vec::new();
            let mut paths = Vec::new();
            for suffix in lookup_hosts(&url) {
                lo.clear();
                lo.push_str(suffix);
                lo.push('/');
                hi.clear();
                hi.push_str(suffix);
                hi.push('0');
                let mut rows = stmt.query(params![lo, hi, now])?;
                while let Some(row) = rows.next()? {
                    let raw = RawEntry::read(row)?;
                    let list = if raw.key == lo {
                        &mut host_entries
                    } else {
                        &mut paths
                    };
                    // A key in both tables: its rows are adjacent; the own entry wins.
                    if let Some(last) = list
                        .last_mut()
                        .filter(|l: &&mut Entry| l.key.as_str() == raw.key)
                    {
                        if raw.tier < i64::from(last.tier) {
                            *last = raw.decode()?;
                        }
                    } else if list.len() < want || raw.key == lo {
                        list.push(raw.decode()?);
                    } else {
                        // `host/` sorts first: only more path entries follow.
                        break;
                    }
                }
            }
            let verdict = combine(&url, &host_entries, now);
            let truncated = paths.len() > path_limit;
            paths.truncate(path_limit);
            out.push(Ok(HostAnswer {
                host: url.host().to_owned(),
                verdict,
                paths,
                truncated,
            }));
        }
        Ok(out)
    }

    /// Deletes the oldest change-log rows so that at most about `keep` remain (whole
    /// sequence numbers are removed, so slightly fewer may remain). A follower asking for
    /// changes from before the pruned point is then told `truncated` (drop everything).
    /// Returns the number of rows deleted.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn prune_changes(&mut self, keep: u64) -> Result<u64, StoreError> {
        let offset = i64::try_from(keep).unwrap_or(i64::MAX);
        let tx = self.conn.transaction()?;
        // The sequence of the newest row beyond the `keep` newest: it and all older go.
        let cut: Option<i64> = tx
            .query_row(
                "SELECT seq FROM changes ORDER BY seq DESC, key DESC LIMIT 1 OFFSET ?1",
                [offset],
                |r| r.get(0),
            )
            .optional()?;
        let Some(cut) = cut else {
            return Ok(0);
        };
        let n = tx.execute("DELETE FROM changes WHERE seq <= ?1", [cut])?;
        tx.execute(
            "UPDATE meta SET pruned_through = max(pruned_through, ?1) WHERE id = 1",
            [cut],
        )?;
        tx.commit()?;
        Ok(n as u64)
    }

    /// The keys changed after sequence `since`, at most `limit` of them, in sequence order.
    /// When `since` is older than the pruned part of the log, the answer is `truncated`.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn changes_since(&self, since: u64, limit: usize) -> Result<Changes, StoreError> {
        // Read the sequence first: a write by another connection in between can only add keys
        // newer than `seq` (dropped twice by the follower), never hide one.
        let seq = self.seq()?;
        let pruned: i64 =
            self.conn
                .query_row("SELECT pruned_through FROM meta WHERE id = 1", [], |r| {
                    r.get(0)
                })?;
        // Before the pruned point, or ahead of this store (it was replaced or restored from
        // an older copy): the follower cannot catch up key by key.
        if i64::try_from(since).unwrap_or(i64::MAX) < pruned || since > seq {
            return Ok(Changes {
                seq,
                keys: Vec::new(),
                truncated: true,
            });
        }
        let since = i64::try_from(since).unwrap_or(i64::MAX);
        let fetch = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
        let mut stmt = self.conn.prepare_cached(
            "SELECT key, min(seq) AS first FROM changes WHERE seq > ?1 \
             GROUP BY key ORDER BY first, key LIMIT ?2",
        )?;
        let mut keys = Vec::new();
        for key in stmt.query_map(params![since, fetch], |r| r.get::<_, String>(0))? {
            keys.push(key?);
        }
        let truncated = keys.len() > limit;
        keys.truncate(limit);
        Ok(Changes {
            seq,
            keys,
            truncated,
        })
    }

    /// The host part of every key in the table, own and mirrored, expired entries included,
    /// each on its own line after a first line `seq N`: the change sequence the list is as
    /// of (read in the same snapshot), from which a follower of the change stream continues
    /// without a gap. A host in both tables, or under several keys of the mirror, may be
    /// listed more than once. Cost: a scan of the host index of the own table and of the whole
    /// mirror, on a connection of its own with a 2 MiB page cache (on a file; an in-memory
    /// store uses this one), and about 20 bytes of answer per host.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn key_hosts(&self) -> Result<Vec<u8>, StoreError> {
        match self.scanner()? {
            Some(scanner) => scanner.list_key_hosts(),
            None => self.list_key_hosts(),
        }
    }

    /// A read-only connection of its own with a small page cache, for a scan of a whole
    /// table: in a reader's cache (64 MiB) the scan would leave pages no lookup needs soon,
    /// and they would stay in the server's memory. Closed when dropped. `None` for an
    /// in-memory store.
    fn scanner(&self) -> Result<Option<Store>, StoreError> {
        let Some(scanner) = self.reader()? else {
            return Ok(None);
        };
        scanner
            .conn
            .pragma_update(None, "cache_size", -SCAN_CACHE_KIB)?;
        Ok(Some(scanner))
    }

    /// [`key_hosts`](Self::key_hosts) on this connection.
    fn list_key_hosts(&self) -> Result<Vec<u8>, StoreError> {
        self.snapshot(|s| {
            let mut out = format!("seq {}\n", s.seq()?).into_bytes();
            for query in [
                "SELECT DISTINCT host FROM entries",
                "SELECT host FROM mirror",
            ] {
                let mut stmt = s.conn.prepare(query)?;
                let mut rows = stmt.query([])?;
                let mut last = String::new();
                while let Some(row) = rows.next()? {
                    let host: String = row.get(0)?;
                    // The mirror's keys of one host are adjacent (key order).
                    if host != last {
                        out.extend_from_slice(host.as_bytes());
                        out.push(b'\n');
                        last = host;
                    }
                }
            }
            Ok(out)
        })
    }

    /// Number of entries in the table.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn len(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM entries", [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Whether the table holds no entry.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }
}

fn host_url(host: &str) -> Result<CanonicalUrl, KeyError> {
    Ok(canon::canonicalize(&format!("http://{}/", host.trim()))?)
}

/// Writes inside one transaction of [`Store::write`].
pub struct Writer<'a> {
    pub(super) tx: Transaction<'a>,
    seq: i64,
    taxonomy: &'a Taxonomy,
    written: u64,
}

impl Writer<'_> {
    /// The sequence number this transaction writes under.
    pub fn seq(&self) -> u64 {
        u64::try_from(self.seq).unwrap_or(0)
    }

    /// Rows written or deleted so far in this transaction.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The known categories.
    pub fn taxonomy(&self) -> &Taxonomy {
        self.taxonomy
    }

    pub(super) fn record(&mut self, key: &str) -> Result<(), StoreError> {
        self.tx
            .prepare_cached("INSERT OR IGNORE INTO changes (seq, key) VALUES (?1, ?2)")?
            .execute(params![self.seq, key])?;
        self.written += 1;
        Ok(())
    }

    /// Inserts or replaces one entry (keeping the stored `added` time).
    ///
    /// # Errors
    /// [`StoreError::Category`] for an unknown category, [`StoreError::Sqlite`].
    pub fn upsert(&mut self, e: &Entry) -> Result<(), StoreError> {
        for c in &e.categories {
            if !self.taxonomy.is_known(c) {
                return Err(CategoryError::Unknown(c.as_str().to_owned()).into());
            }
        }
        let cats: Vec<&str> = e.categories.iter().map(Category::as_str).collect();
        self.tx
            .prepare_cached(
                "INSERT INTO entries (key, host, score, categories, source, added, updated, \
                 expires, note) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                 ON CONFLICT (key) DO UPDATE SET score = excluded.score, \
                 categories = excluded.categories, source = excluded.source, \
                 updated = excluded.updated, expires = excluded.expires, note = excluded.note",
            )?
            .execute(params![
                e.key.as_str(),
                e.key.host(),
                e.score.get(),
                cats.join(" "),
                e.source.to_stored(),
                e.added,
                e.updated,
                e.expires,
                e.note,
            ])?;
        self.record(e.key.as_str())
    }

    /// Deletes one entry; a missing key is not an error (and is not recorded as a change).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn delete(&mut self, key: &Key) -> Result<(), StoreError> {
        let n = self
            .tx
            .prepare_cached("DELETE FROM entries WHERE key = ?1")?
            .execute([key.as_str()])?;
        if n > 0 {
            self.record(key.as_str())?;
        }
        Ok(())
    }

    /// Inserts or replaces one file-hash entry.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn upsert_file(&mut self, f: &FileEntry) -> Result<(), StoreError> {
        self.tx
            .prepare_cached(
                "INSERT OR REPLACE INTO file_hashes (sha256, verdict, name, source, updated) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                f.sha256.as_str(),
                f.verdict.as_str(),
                f.name,
                f.source.to_stored(),
                f.updated
            ])?;
        self.record(&format!(
            "{}{}",
            crate::api::changes::FILE_CHANGE_PREFIX,
            f.sha256.as_str()
        ))
    }
}

/// An entry row (the columns of [`HOST_RANGE`], the tier last), validated.
pub(super) fn decode_row(r: &rusqlite::Row<'_>) -> Result<Entry, StoreError> {
    RawEntry::read(r)?.decode()
}

/// A row as SQLite returns it, before validation.
struct RawEntry {
    key: String,
    score: i64,
    categories: String,
    source: String,
    added: i64,
    updated: i64,
    expires: Option<i64>,
    note: Option<String>,
    tier: i64,
}

impl RawEntry {
    fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawEntry> {
        Ok(RawEntry {
            key: r.get(0)?,
            score: r.get(1)?,
            categories: r.get(2)?,
            source: r.get(3)?,
            added: r.get(4)?,
            updated: r.get(5)?,
            expires: r.get(6)?,
            note: r.get(7)?,
            tier: r.get(8)?,
        })
    }

    fn decode(self) -> Result<Entry, StoreError> {
        let corrupt = |what| StoreError::Corrupt {
            key: self.key.clone(),
            what,
        };
        let key = Key::from_canonical(&self.key).ok_or_else(|| corrupt("key not canonical"))?;
        let score = Score::from_i64(self.score).ok_or_else(|| corrupt("score out of range"))?;
        let categories = self
            .categories
            .split_ascii_whitespace()
            .map(Category::parse)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| corrupt("bad category"))?;
        let source = Source::from_stored(&self.source).ok_or_else(|| corrupt("bad source"))?;
        Ok(Entry {
            key,
            score,
            categories,
            source,
            added: self.added,
            updated: self.updated,
            expires: self.expires,
            note: self.note,
            tier: u8::try_from(self.tier).map_err(|_| corrupt("tier out of range"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RiskLevel;

    fn entry(key: &str, score: u8, cats: &[&str]) -> Entry {
        Entry::new(
            Key::parse(key).unwrap(),
            Score::new(score).unwrap(),
            cats.iter().map(|c| Category::parse(c).unwrap()).collect(),
            Source::Manual,
            1000,
        )
    }

    #[test]
    fn upsert_lookup_and_combination() {
        let mut s = Store::open_in_memory().unwrap();
        assert_eq!(s.seq().unwrap(), 0);
        let seq = s
            .upsert(&[
                entry("example.test/", 90, &["news"]),
                entry("example.test/dl/", 30, &["malware"]),
            ])
            .unwrap();
        assert_eq!(seq, 1);
        let v = s
            .lookup_str("http://www.example.test/dl/x.exe", 2000)
            .unwrap();
        assert_eq!(v.risk, RiskLevel::Dangerous);
        assert_eq!(v.categories[0].as_str(), "malware");
        assert_eq!(v.matched.len(), 2);
        let v = s.lookup_str("http://example.test/about", 2000).unwrap();
        assert_eq!(v.risk, RiskLevel::Safe);
        let v = s.lookup_str("http://other.test/", 2000).unwrap();
        assert_eq!(v.risk, RiskLevel::Untested);
        assert!(matches!(s.lookup_str("", 0), Err(StoreError::Key(_))));
    }

    #[test]
    fn the_key_hosts_of_a_file_store_are_read_on_a_scanner_of_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("rep.db")).unwrap();
        let reader = s.reader().unwrap().unwrap();
        s.upsert(&[entry("a.test/", 90, &["news"]), entry("b.test/x/", 10, &[])])
            .unwrap();
        s.upsert(&[entry("c.test/", 50, &[])]).unwrap();
        // From the writer and from a reader alike: everything committed, with its sequence.
        for store in [&s, &reader] {
            let text = String::from_utf8(store.key_hosts().unwrap()).unwrap();
            let mut lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.remove(0), "seq 2");
            lines.sort_unstable();
            assert_eq!(lines, ["a.test", "b.test", "c.test"]);
        }
        let scanner = s.scanner().unwrap().unwrap();
        let cache: i64 = scanner
            .conn
            .query_row("PRAGMA cache_size", [], |r| r.get(0))
            .unwrap();
        assert_eq!(cache, -SCAN_CACHE_KIB);
        assert!(
            Store::open_in_memory()
                .unwrap()
                .scanner()
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn upsert_keeps_added_time_and_updates_the_rest() {
        let mut s = Store::open_in_memory().unwrap();
        s.upsert(&[entry("a.test/", 90, &[])]).unwrap();
        let mut e = entry("a.test/", 10, &["spam"]);
        e.added = 5000;
        e.updated = 5000;
        s.upsert(&[e]).unwrap();
        let got = s.get(&Key::parse("a.test/").unwrap()).unwrap().unwrap();
        assert_eq!((got.added, got.updated, got.score.get()), (1000, 5000, 10));
    }

    #[test]
    fn unknown_category_rolls_back_the_whole_batch() {
        let mut s = Store::open_in_memory().unwrap();
        let err = s
            .upsert(&[
                entry("a.test/", 10, &["malware"]),
                entry("b.test/", 10, &["intranet"]),
            ])
            .unwrap_err();
        assert!(matches!(err, StoreError::Category(_)));
        assert_eq!(s.len().unwrap(), 0);
        assert_eq!(s.seq().unwrap(), 0);
        s.define_category(Category::parse("intranet").unwrap())
            .unwrap();
        s.upsert(&[entry("b.test/", 10, &["intranet"])]).unwrap();
        assert_eq!(s.len().unwrap(), 1);
    }

    #[test]
    fn write_closure_error_rolls_back() {
        let mut s = Store::open_in_memory().unwrap();
        let r: Result<(), StoreError> = s.write(|w| {
            w.upsert(&entry("a.test/", 10, &[]))?;
            Err(StoreError::Corrupt {
                key: "x".into(),
                what: "forced",
            })
        });
        assert!(r.is_err());
        assert!(s.is_empty().unwrap());
        assert!(s.changes_since(0, 10).unwrap().keys.is_empty());
    }

    #[test]
    fn changes_since() {
        let mut s = Store::open_in_memory().unwrap();
        s.upsert(&[entry("a.test/", 10, &[]), entry("b.test/", 10, &[])])
            .unwrap();
        let seq2 = s.delete(&[Key::parse("a.test/").unwrap()]).unwrap();
        let c = s.changes_since(0, 10).unwrap();
        assert_eq!(c.seq, seq2);
        assert_eq!(c.keys, ["a.test/", "b.test/"]);
        assert!(!c.truncated);
        let c = s.changes_since(1, 10).unwrap();
        assert_eq!(c.keys, ["a.test/"]);
        // A key written in several sequences is listed once, and does not hide others.
        s.upsert(&[entry("b.test/", 20, &[])]).unwrap();
        s.upsert(&[entry("b.test/", 30, &[])]).unwrap();
        s.upsert(&[entry("c.test/", 30, &[])]).unwrap();
        let c = s.changes_since(1, 2).unwrap();
        assert_eq!(c.keys, ["a.test/", "b.test/"]);
        assert!(c.truncated);
        let c = s.changes_since(1, 3).unwrap();
        assert_eq!(c.keys, ["a.test/", "b.test/", "c.test/"]);
        assert!(!c.truncated);
        let c = s.changes_since(0, 1).unwrap();
        assert!(c.truncated);
        assert_eq!(c.keys.len(), 1);
        assert!(s.changes_since(c.seq, 10).unwrap().keys.is_empty());
    }

    #[test]
    fn pruned_change_log_tells_old_followers_to_start_over() {
        let mut s = Store::open_in_memory().unwrap();
        for i in 0..10 {
            s.upsert(&[entry(&format!("h{i}.test/"), 10, &[])]).unwrap();
        }
        assert_eq!(s.prune_changes(100).unwrap(), 0, "nothing beyond the limit");
        assert_eq!(s.prune_changes(4).unwrap(), 6);
        // Followers at or after the cut see exact changes...
        let c = s.changes_since(6, 100).unwrap();
        assert_eq!(c.keys, ["h6.test/", "h7.test/", "h8.test/", "h9.test/"]);
        assert!(!c.truncated);
        // ...one from before it must drop everything.
        let c = s.changes_since(5, 100).unwrap();
        assert!(c.truncated && c.keys.is_empty());
        assert_eq!(c.seq, 10);
        assert!(s.changes_since(0, 100).unwrap().truncated);
    }

    /// A store file at `path` as schema `version` left it.
    fn store_of_version(path: &Path, version: i64) -> Connection {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        for (to, script) in MIGRATIONS {
            if to <= version {
                conn.execute_batch(script).unwrap();
            }
        }
        conn.pragma_update(None, "user_version", version).unwrap();
        conn
    }

    #[test]
    fn migrations_end_at_the_schema_version() {
        assert_eq!(MIGRATIONS.last().unwrap().0, SCHEMA_VERSION);
        assert!(MIGRATIONS.windows(2).all(|w| w[1].0 == w[0].0 + 1));
    }

    #[test]
    fn a_version_1_store_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        {
            let conn = store_of_version(&path, 1);
            conn.execute("INSERT INTO changes (seq, key) VALUES (1, 'a.test/')", [])
                .unwrap();
            conn.execute("UPDATE meta SET seq = 1", []).unwrap();
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(s.changes_since(0, 10).unwrap().keys, ["a.test/"]);
    }

    #[test]
    fn a_version_2_store_gets_the_feedback_tables() {
        use crate::api::events::{Event, Kind};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v2.db");
        {
            store_of_version(&path, 2);
        }
        let mut s = Store::open(&path).unwrap();
        let e = Event::new("a".into(), Kind::Untested, 1, "p".into());
        assert_eq!(s.ingest_events(&[e], 1, &[]).unwrap().accepted, 1);
        drop(s);
        let s = Store::open(&path).unwrap();
        assert_eq!(s.events(None, None, 10).unwrap().len(), 1);
        let v: i64 = s
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
    }

    #[test]
    fn a_version_4_store_keys_replays_by_token_and_keeps_its_events() {
        use crate::api::events::{Event, Kind};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v4.db");
        {
            let conn = store_of_version(&path, 4);
            conn.execute(
                "INSERT INTO events (proxy, id, kind, time, received, body) \
                 VALUES ('p', 'a', 'untested', 1, 1, '{}')",
                [],
            )
            .unwrap();
        }
        let mut s = Store::open(&path).unwrap();
        let e = Event::new("a".into(), Kind::Untested, 1, "p".into());
        // The stored event (no reporter) still dedupes a replay without one...
        let r = s.ingest_events(std::slice::from_ref(&e), 1, &[]).unwrap();
        assert_eq!((r.accepted, r.duplicate), (0, 1));
        // ...but not the same proxy and id sent with a token.
        let r = s.ingest_events_from(Some("t1"), &[e], 1, &[]).unwrap();
        assert_eq!((r.accepted, r.duplicate), (1, 0));
        assert_eq!(s.events(None, None, 10).unwrap().len(), 2);
    }

    #[test]
    fn a_version_6_store_gets_a_store_id_and_an_empty_mirror() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v6.db");
        {
            let conn = store_of_version(&path, 6);
            conn.execute(
                "INSERT INTO entries VALUES ('a.test/', 'a.test', 5, '', 'manual', 0, 0, NULL, NULL)",
                [],
            )
            .unwrap();
        }
        let s = Store::open(&path).unwrap();
        let id = s.store_id().unwrap();
        assert_eq!(id.len(), 32, "{id}");
        assert_eq!(s.mirror_len().unwrap(), 0);
        assert_eq!(
            s.lookup_str("http://a.test/", 0).unwrap().score,
            Score::new(5)
        );
        let other = Store::open_in_memory().unwrap();
        assert_ne!(other.store_id().unwrap(), id, "each store its own id");
        drop(s);
        assert_eq!(Store::open(&path).unwrap().store_id().unwrap(), id, "kept");
    }

    #[test]
    fn a_version_7_store_counts_its_events_once_and_takes_aggregates() {
        use crate::api::events::{Event, Kind};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v7.db");
        let now = crate::clock::unix_millis();
        {
            let conn = store_of_version(&path, 7);
            conn.execute(
                "INSERT INTO events (proxy, id, kind, time, received, client, host, body) \
                 VALUES ('p', 'a', 'untested', ?1, 1, 'c1', 'u.test', '{}')",
                [now],
            )
            .unwrap();
        }
        let mut s = Store::open(&path).unwrap();
        let mut e = Event::new("b".into(), Kind::Untested, now, "p".into());
        e.host = Some("u.test".into());
        e.client = Some("c1".into());
        e.count = 5;
        e.clients = vec!["c1".into(), "c2".into()];
        assert_eq!(s.ingest_events(&[e], 1, &[]).unwrap().accepted, 1);
        let sum = s.feedback_summary(0, 10).unwrap();
        assert_eq!(sum.kinds["untested"], 6, "the old row counts once");
        let u = &sum.untested_hosts[0];
        assert_eq!((u.clients, u.events), (2, 6));
        let v: i64 = s
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
    }

    #[test]
    fn a_version_5_store_gets_the_tier_state_and_forwards_its_events() {
        use crate::api::events::{Event, Kind};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v5.db");
        {
            let conn = store_of_version(&path, 5);
            conn.execute(
                "INSERT INTO events (proxy, id, kind, time, received, body, reporter) \
                 VALUES ('p', 'a', 'untested', 1, 1, ?1, 'r1')",
                [
                    serde_json::to_string(&Event::new("a".into(), Kind::Untested, 1, "p".into()))
                        .unwrap(),
                ],
            )
            .unwrap();
        }
        let mut s = Store::open(&path).unwrap();
        let key = s.forward_setup().unwrap();
        // The events stored before forwarding existed are forwarded too, from the start.
        let b = s.forward_backlog(10).unwrap();
        assert_eq!((b.cursor, b.events.len(), b.behind), (0, 1, 1));
        assert!(s.advance_forward_cursor(0, b.events[0].rowid).unwrap());
        drop(s);
        let mut s = Store::open(&path).unwrap();
        assert_eq!(
            s.forward_setup().unwrap(),
            key,
            "the key survives a restart"
        );
        assert_eq!(s.forward_cursor().unwrap(), 1, "and so does the cursor");
        assert!(s.forward_backlog(10).unwrap().events.is_empty());
    }

    #[test]
    fn host_answers_in_batch() {
        let mut s = Store::open_in_memory().unwrap();
        s.upsert(&[
            entry("example.test/", 85, &["news"]),
            entry("example.test/a/", 60, &["spam"]),
            entry("www.example.test/b?x=1", 5, &["phishing"]),
            entry("www.example.test/c/", 70, &[]),
            entry("bad.test/", 0, &["malware"]),
        ])
        .unwrap();
        let a = s
            .lookup_hosts(&["WWW.example.test", "bad.test", "none.test", "[zz]"], 0, 2)
            .unwrap();
        let www = a[0].as_ref().unwrap();
        assert_eq!(www.host, "www.example.test");
        assert_eq!(www.verdict.risk, RiskLevel::Safe);
        assert_eq!(www.paths.len(), 2);
        assert!(www.truncated);
        assert_eq!(a[1].as_ref().unwrap().verdict.risk, RiskLevel::Dangerous);
        assert!(a[1].as_ref().unwrap().paths.is_empty());
        assert_eq!(a[2].as_ref().unwrap().verdict.risk, RiskLevel::Untested);
        assert!(a[3].is_err());
        assert_eq!(
            s.entries_for_host("www.example.test", 100).unwrap().len(),
            4
        );
    }

    #[test]
    fn file_hashes() {
        let mut s = Store::open_in_memory().unwrap();
        let h = Sha256Hex::parse(&"ab".repeat(32)).unwrap();
        assert_eq!(s.lookup_file(&h).unwrap(), None);
        let f = FileEntry {
            sha256: h.clone(),
            verdict: FileVerdict::Malicious,
            name: Some("eicar".into()),
            source: Source::Feed("test".into()),
            updated: 7,
        };
        s.upsert_files(std::slice::from_ref(&f)).unwrap();
        assert_eq!(s.lookup_file(&h).unwrap(), Some(f));
        let c = s.changes_since(0, 10).unwrap();
        assert_eq!(c.keys, [format!("sha256:{}", "ab".repeat(32))]);
    }

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rep.db");
        {
            let mut s = Store::open(&path).unwrap();
            s.define_category(Category::parse("intranet").unwrap())
                .unwrap();
            s.upsert(&[entry("a.test/", 10, &["intranet"])]).unwrap();
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(s.len().unwrap(), 1);
        assert_eq!(s.seq().unwrap(), 1);
        assert!(s.taxonomy().resolve("intranet").is_ok());
        let v = s.lookup_str("http://x.a.test/", 0).unwrap();
        assert_eq!(v.risk, RiskLevel::Dangerous);
        let mode: String = s
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn readers_see_a_batch_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rep.db");
        let mut writer = Store::open(&path).unwrap();
        let reader = Store::open(&path).unwrap();
        writer
            .write(|w| {
                for i in 0..100 {
                    w.upsert(&entry(&format!("h{i}.test/"), 10, &[]))?;
                    // Mid-transaction: the other connection sees nothing yet.
                    if i == 50 {
                        assert_eq!(reader.len()?, 0);
                        assert_eq!(
                            reader.lookup_str("http://h1.test/", 0)?.risk,
                            RiskLevel::Untested
                        );
                        let a = reader.lookup_hosts(&["h1.test"], 0, 10)?;
                        assert_eq!(
                            a[0].as_ref().map(|a| a.verdict.risk),
                            Ok(RiskLevel::Untested)
                        );
                        // The batch's read transaction is over.
                        assert!(reader.conn.is_autocommit());
                    }
                }
                Ok::<_, StoreError>(())
            })
            .unwrap();
        assert_eq!(reader.len().unwrap(), 100);
        assert_eq!(reader.seq().unwrap(), 1);
        // A batch abandoned mid-way (as by a crash) leaves the file clean and unchanged.
        let r: Result<(), StoreError> = writer.write(|w| {
            w.upsert(&entry("late.test/", 10, &[]))?;
            Err(StoreError::Corrupt {
                key: "late.test/".into(),
                what: "abandoned",
            })
        });
        assert!(r.is_err());
        drop(writer);
        let reopened = Store::open(&path).unwrap();
        assert_eq!(reopened.len().unwrap(), 100);
        assert_eq!(
            reopened.lookup_str("http://late.test/", 0).unwrap().risk,
            RiskLevel::Untested
        );
    }

    #[test]
    fn host_answers_keep_neighbouring_hosts_apart() {
        let mut s = Store::open_in_memory().unwrap();
        let mut expired = entry("gone.a.test/", 0, &["malware"]);
        expired.expires = Some(5);
        s.upsert(&[
            entry("a.test/", 90, &["news"]),
            entry("a.test/p/", 40, &[]),
            // Keys that sort next to `a.test/...` but belong to other hosts.
            entry("a.tes/", 0, &["malware"]),
            entry("a.test-b.test/", 0, &["malware"]),
            entry("a.test0.test/", 0, &["malware"]),
            entry("xa.test/", 0, &["malware"]),
            entry("www.a.test/q/", 30, &[]),
            expired,
        ])
        .unwrap();
        let a = s
            .lookup_hosts(&["www.a.test", "a.test", "gone.a.test"], 10, 10)
            .unwrap();
        let www = a[0].as_ref().unwrap();
        assert_eq!(www.verdict.score.map(Score::get), Some(90));
        assert_eq!(www.verdict.matched.len(), 1);
        let keys: Vec<&str> = www.paths.iter().map(|e| e.key.as_str()).collect();
        // The host's own path entries first, then its parent's.
        assert_eq!(keys, ["www.a.test/q/", "a.test/p/"]);
        let bare = a[1].as_ref().unwrap();
        assert_eq!(bare.verdict.score.map(Score::get), Some(90));
        assert_eq!(bare.paths.len(), 1);
        // An expired host entry does not count; the parent's still does.
        let gone = a[2].as_ref().unwrap();
        assert_eq!(gone.verdict.matched.len(), 1);
        assert_eq!(gone.verdict.score.map(Score::get), Some(90));
        // Path limit 0: no paths, but the verdict is whole and the answer says truncated.
        let a = s.lookup_hosts(&["www.a.test"], 10, 0).unwrap();
        let www = a[0].as_ref().unwrap();
        assert!(www.paths.is_empty() && www.truncated);
        assert_eq!(www.verdict.score.map(Score::get), Some(90));
        assert!(s.conn.is_autocommit());
    }

    #[test]
    fn url_lookup_forgets_the_previous_urls_expressions() {
        let mut s = Store::open_in_memory().unwrap();
        s.upsert(&[entry("a.b.c.d.test/1/2/3.html?x=1", 10, &["phishing"])])
            .unwrap();
        let v = s
            .lookup_str("http://a.b.c.d.test/1/2/3.html?x=1", 0)
            .unwrap();
        assert_eq!(v.risk, RiskLevel::Dangerous);
        // Fewer expressions than the previous URL: nothing of it may be left bound.
        let v = s.lookup_str("http://z.test/", 0).unwrap();
        assert_eq!(v.risk, RiskLevel::Untested);
        assert!(v.matched.is_empty());
    }

    #[test]
    fn expired_path_entries_do_not_fill_the_host_answer() {
        let mut s = Store::open_in_memory().unwrap();
        let mut old = entry("a.test/old/", 10, &[]);
        old.expires = Some(5);
        s.upsert(&[old, entry("a.test/new/", 10, &[])]).unwrap();
        let a = s.lookup_hosts(&["a.test"], 10, 1).unwrap();
        let a = a[0].as_ref().unwrap();
        assert_eq!(a.paths.len(), 1);
        assert_eq!(a.paths[0].key.as_str(), "a.test/new/");
        assert!(!a.truncated);
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rep.db");
        {
            let c = Connection::open(&path).unwrap();
            c.pragma_update(None, "user_version", 99).unwrap();
        }
        assert!(matches!(
            Store::open(&path),
            Err(StoreError::SchemaTooNew { found: 99, .. })
        ));
    }

    #[test]
    fn damaged_row_is_an_error_not_a_panic() {
        let s = Store::open_in_memory().unwrap();
        s.conn
            .execute(
                "INSERT INTO entries VALUES ('a.test/', 'a.test', 500, '', 'manual', 0, 0, NULL, NULL)",
                [],
            )
            .unwrap();
        assert!(matches!(
            s.lookup_str("http://a.test/", 0),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
