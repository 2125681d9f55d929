//! The mirror of the upstream tier's table in a following server's store, and both ends of
//! delta sync over the store: the pages and changed values an upstream serves
//! ([`Store::snapshot_page`], [`Store::sync_changes`]) and what a follower writes
//! ([`Writer::mirror_entry`], [`Writer::sweep_mirror`], [`Writer::set_follow_state`]).
//!
//! # Where it sits
//! Under the sync routes (`GET /v1/sync/...`, on reader threads) and the follower
//! (`super::api::follow`, on the writer thread). Mirrored entries live in their own tables
//! (`mirror`, `mirror_files`), each row marked with its tier (1: the upstream's own entry, 2:
//! one the upstream mirrored, ...), so that this server's own entries are never overwritten by
//! the upstream's and a deleted own entry uncovers the mirrored one again. Every lookup reads
//! both tables ([`Store::lookup`], [`Store::lookup_hosts`]); under one key the own entry wins.
//! Mirror writes are recorded in the change log like any write, so they reach the local
//! proxies (and the servers following this one) through the change stream.
//!
//! # What it costs
//! A snapshot page is one primary-key range scan over each table (merged in key order); a
//! changes page is one range scan of the change log plus one primary-key probe per changed
//! key. Applying is one upsert per entry; an entry whose value did not change costs an
//! update of its generation only and is not recorded as a change, so a repeated snapshot
//! wakes no proxy. A fresh snapshot marks what it copies with a new generation and deletes
//! the rows of older generations at its end, so the mirror keeps protecting while the copy
//! runs.
//!
//! # How it fails
//! A damaged row is a [`StoreError::Corrupt`] for the page that reads it. The follow state
//! is written in the same transaction as the entries it accounts for, so a follower killed at
//! any point resumes at the last page it committed.

use rusqlite::{OptionalExtension as _, params};

use super::store::{Store, StoreError, Writer};
use crate::api::changes::FILE_CHANGE_PREFIX;
use crate::api::lookup::EntryView;
use crate::api::sync::{FileView, SnapshotKind, SnapshotPage, Subscription, SyncChanges};
use crate::model::{Category, Entry, FileEntry, Sha256Hex};

/// Schema 6 -> 7: the mirror of the upstream's table, the follower's state, and a store id
/// that tells followers whether this is still the table they copied.
pub(super) const MIGRATE_7: &str = "
CREATE TABLE mirror (
    key TEXT PRIMARY KEY NOT NULL,
    host TEXT NOT NULL,
    score INTEGER NOT NULL,
    categories TEXT NOT NULL,
    source TEXT NOT NULL,
    added INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    expires INTEGER,
    note TEXT,
    tier INTEGER NOT NULL,
    gen INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE mirror_files (
    sha256 TEXT PRIMARY KEY NOT NULL,
    verdict TEXT NOT NULL,
    name TEXT,
    source TEXT NOT NULL,
    updated INTEGER NOT NULL,
    tier INTEGER NOT NULL,
    gen INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE follow_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    upstream TEXT,
    stage TEXT NOT NULL,
    gen INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    after TEXT,
    upstream_seq INTEGER NOT NULL,
    synced_at INTEGER,
    complete INTEGER NOT NULL DEFAULT 0,
    subscription TEXT NOT NULL DEFAULT ''
);
INSERT INTO follow_state (id, stage, gen, seq, upstream_seq) VALUES (1, 'new', 0, 0, 0);
ALTER TABLE meta ADD COLUMN store_id TEXT;
UPDATE meta SET store_id = lower(hex(randomblob(16)));
";

/// Where a follower is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// Nothing copied yet.
    New,
    /// Copying the upstream's snapshot: the entries after `after` (or the files, with
    /// [`SnapshotKind::Files`]), which started at the upstream's sequence `seq`.
    Snapshot {
        /// Which part is being copied.
        kind: SnapshotKind,
        /// The upstream's sequence when the snapshot started.
        seq: u64,
        /// The last key (hash) copied.
        after: Option<String>,
    },
    /// Following the change log after the cursor `(seq, after)`.
    Follow {
        /// The upstream's sequence of the cursor.
        seq: u64,
        /// The last key done inside `seq`; `None` when all of `seq` is done.
        after: Option<String>,
    },
}

/// A follower's durable state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowState {
    /// The upstream's store id, once known.
    pub upstream: Option<String>,
    /// Where the follower is.
    pub stage: Stage,
    /// The generation that the current (or last) snapshot marks its rows with.
    pub generation: i64,
    /// The upstream's sequence at the last answer.
    pub upstream_seq: u64,
    /// Unix seconds of the last answer from the upstream.
    pub synced_at: Option<i64>,
    /// A snapshot has finished once: the mirror is a whole copy (perhaps behind), also while
    /// a fresh snapshot replaces it.
    pub complete: bool,
    /// The subscription the mirror was copied under ([`Subscription::query`]); another one
    /// needs a fresh snapshot.
    pub subscription: String,
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Store {
    /// This store's id: fixed when the file was created (or migrated), so a follower can tell
    /// a replaced table from the one it copied.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn store_id(&self) -> Result<String, StoreError> {
        Ok(self.conn.query_row(
            "SELECT ifnull(store_id, '') FROM meta WHERE id = 1",
            [],
            |r| r.get(0),
        )?)
    }

    /// Entries mirrored from the upstream tier.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn mirror_len(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM mirror", [], |r| r.get(0))?;
        Ok(to_u64(n))
    }

    /// One page of the table as a follower copies it: at most `limit` entries (file verdicts)
    /// after `after` in key order, own and mirrored (the own wins under one key), those the
    /// subscription takes. `next` is the last key read, `None` after the last page.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`], [`StoreError::Corrupt`].
    pub fn snapshot_page(
        &self,
        kind: SnapshotKind,
        after: Option<&str>,
        limit: usize,
        sub: &Subscription,
    ) -> Result<SnapshotPage, StoreError> {
        self.snapshot(|s| {
            let mut page = SnapshotPage {
                store: s.store_id()?,
                seq: s.seq()?,
                entries: Vec::new(),
                files: Vec::new(),
                next: None,
            };
            let after = after.unwrap_or("");
            let (read, last) = match kind {
                SnapshotKind::Entries => s.entries_page(after, limit, sub, &mut page.entries)?,
                SnapshotKind::Files => s.files_page(after, limit, sub, &mut page.files)?,
            };
            page.next = (read >= limit.max(1)).then_some(last).flatten();
            Ok(page)
        })
    }

    /// Rows after `after`, own and mirrored, into `out`: how many keys were read and the last.
    fn entries_page(
        &self,
        after: &str,
        limit: usize,
        sub: &Subscription,
        out: &mut Vec<EntryView>,
    ) -> Result<(usize, Option<String>), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT key, score, categories, source, added, updated, expires, note, 0 \
             FROM entries WHERE key > ?1 \
             UNION ALL SELECT key, score, categories, source, added, updated, expires, note, \
             tier FROM mirror WHERE key > ?1 ORDER BY 1, 9 LIMIT ?2",
        )?;
        // A key in both tables takes two rows: read one more than the page so the last key's
        // second row is not cut off.
        let fetch = to_i64(limit.max(1) as u64 + 1);
        let mut rows = stmt.query(params![after, fetch])?;
        let (mut read, mut last): (usize, Option<String>) = (0, None);
        while let Some(row) = rows.next()? {
            let e = super::store::decode_row(row)?;
            if last.as_deref() == Some(e.key.as_str()) {
                continue;
            }
            if read >= limit.max(1) {
                break;
            }
            read += 1;
            last = Some(e.key.as_str().to_owned());
            if sub.takes_entry(&e) {
                out.push(EntryView::of(&e));
            }
        }
        Ok((read, last))
    }

    /// File verdicts after `after`, own and mirrored, into `out`.
    fn files_page(
        &self,
        after: &str,
        limit: usize,
        sub: &Subscription,
        out: &mut Vec<FileView>,
    ) -> Result<(usize, Option<String>), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT sha256, verdict, name, source, updated, 0 FROM file_hashes \
             WHERE sha256 > ?1 UNION ALL SELECT sha256, verdict, name, source, updated, tier \
             FROM mirror_files WHERE sha256 > ?1 ORDER BY 1, 6 LIMIT ?2",
        )?;
        let fetch = to_i64(limit.max(1) as u64 + 1);
        let mut rows = stmt.query(params![after, fetch])?;
        let (mut read, mut last): (usize, Option<String>) = (0, None);
        while let Some(row) = rows.next()? {
            let (f, tier) = file_row(row)?;
            if last.as_deref() == Some(f.sha256.as_str()) {
                continue;
            }
            if read >= limit.max(1) {
                break;
            }
            read += 1;
            last = Some(f.sha256.as_str().to_owned());
            if sub.takes_file(&f) {
                out.push(FileView::of(&f, tier));
            }
        }
        Ok((read, last))
    }

    /// The current value of every key changed after the cursor `(since, after)`, at most
    /// `limit` change-log rows, those the subscription takes (the others, and keys that are
    /// gone, as `deleted`). `reset` when the change log no longer reaches back to the cursor
    /// or the cursor is ahead of this store.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`], [`StoreError::Corrupt`].
    pub fn sync_changes(
        &self,
        since: u64,
        after: Option<&str>,
        limit: usize,
        sub: &Subscription,
    ) -> Result<SyncChanges, StoreError> {
        self.snapshot(|s| {
            let seq = s.seq()?;
            let mut out = SyncChanges {
                store: s.store_id()?,
                seq,
                through_seq: since,
                through_key: after.map(str::to_owned),
                entries: Vec::new(),
                files: Vec::new(),
                deleted: Vec::new(),
                more: false,
                reset: false,
            };
            let pruned: u64 = to_u64(s.conn.query_row(
                "SELECT pruned_through FROM meta WHERE id = 1",
                [],
                |r| r.get(0),
            )?);
            // Rows with sequence <= `pruned` are gone: a cursor before that point (or inside
            // it) would miss some.
            if since < pruned || (since == pruned && after.is_some()) || since > seq {
                out.reset = true;
                return Ok(out);
            }
            let rows = s.change_rows(since, after, limit.max(1))?;
            out.more = rows.len() > limit.max(1);
            let rows = &rows[..rows.len().min(limit.max(1))];
            match rows.last() {
                Some((q, k)) if out.more => {
                    (out.through_seq, out.through_key) = (*q, Some(k.clone()))
                }
                // Everything up to the sequence read in this transaction is in.
                _ => (out.through_seq, out.through_key) = (seq, None),
            }
            let mut keys: Vec<&str> = rows.iter().map(|(_, k)| k.as_str()).collect();
            keys.sort_unstable();
            keys.dedup();
            for key in keys {
                s.changed_value(key, sub, &mut out)?;
            }
            Ok(out)
        })
    }

    /// Change-log rows after the cursor, at most `limit + 1`.
    fn change_rows(
        &self,
        since: u64,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        let fetch = to_i64(limit as u64 + 1);
        let read = |r: &rusqlite::Row<'_>| Ok((to_u64(r.get(0)?), r.get::<_, String>(1)?));
        let rows = match after {
            None => self
                .conn
                .prepare_cached(
                    "SELECT seq, key FROM changes WHERE seq > ?1 ORDER BY seq, key LIMIT ?2",
                )?
                .query_map(params![to_i64(since), fetch], read)?
                .collect::<Result<Vec<_>, _>>()?,
            Some(key) => self
                .conn
                .prepare_cached(
                    "SELECT seq, key FROM changes WHERE (seq, key) > (?1, ?2) \
                     ORDER BY seq, key LIMIT ?3",
                )?
                .query_map(params![to_i64(since), key, fetch], read)?
                .collect::<Result<Vec<_>, _>>()?,
        };
        Ok(rows)
    }

    /// Puts the current value of a changed key into `out`: an entry, a file verdict, or
    /// `deleted`.
    fn changed_value(
        &self,
        key: &str,
        sub: &Subscription,
        out: &mut SyncChanges,
    ) -> Result<(), StoreError> {
        if let Some(hash) = key.strip_prefix(FILE_CHANGE_PREFIX) {
            let file = match Sha256Hex::parse(hash) {
                Some(h) => self.file_with_tier(&h)?,
                None => None,
            };
            match file {
                Some((f, tier)) if sub.takes_file(&f) => out.files.push(FileView::of(&f, tier)),
                _ => out.deleted.push(key.to_owned()),
            }
            return Ok(());
        }
        match self.get_any(key)? {
            Some(e) if sub.takes_entry(&e) => out.entries.push(EntryView::of(&e)),
            _ => out.deleted.push(key.to_owned()),
        }
        Ok(())
    }

    /// A file verdict and its tier: this server's own, else the mirrored one.
    fn file_with_tier(&self, h: &Sha256Hex) -> Result<Option<(FileEntry, u8)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT sha256, verdict, name, source, updated, 0 FROM file_hashes \
             WHERE sha256 = ?1 UNION ALL SELECT sha256, verdict, name, source, updated, tier \
             FROM mirror_files WHERE sha256 = ?1 ORDER BY 6 LIMIT 1",
        )?;
        let mut rows = stmt.query([h.as_str()])?;
        match rows.next()? {
            Some(row) => Ok(Some(file_row(row)?)),
            None => Ok(None),
        }
    }

    /// The follower's durable state.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`], [`StoreError::Corrupt`] for a stage this code does not know.
    pub fn follow_state(&self) -> Result<FollowState, StoreError> {
        read_state(&self.conn)
    }

    /// Writes the follower's state on its own, without a change of this store's sequence
    /// (nothing the proxies need to know: the upstream answered, or its cursor moved past
    /// sequences that changed no row).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn save_follow_state(&mut self, st: &FollowState) -> Result<(), StoreError> {
        write_state(&self.conn, st)
    }
}

fn read_state(conn: &rusqlite::Connection) -> Result<FollowState, StoreError> {
    let row = conn
        .query_row(
            "SELECT upstream, stage, gen, seq, after, upstream_seq, synced_at, complete, \
             subscription FROM follow_state WHERE id = 1",
            [],
            |r| {
                Ok((
                    r.get::<_, Option<String>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                    r.get::<_, bool>(7)?,
                    r.get::<_, String>(8)?,
                ))
            },
        )
        .optional()?;
    let Some((upstream, stage, gen_, seq, after, upstream_seq, synced_at, complete, subscription)) =
        row
    else {
        return Err(StoreError::Corrupt {
            key: "follow_state".to_owned(),
            what: "row missing",
        });
    };
    let seq = to_u64(seq);
    let stage = match stage.as_str() {
        "new" => Stage::New,
        "entries" | "files" => Stage::Snapshot {
            kind: if stage == "entries" {
                SnapshotKind::Entries
            } else {
                SnapshotKind::Files
            },
            seq,
            after,
        },
        "follow" => Stage::Follow { seq, after },
        _ => {
            return Err(StoreError::Corrupt {
                key: "follow_state".to_owned(),
                what: "unknown stage",
            });
        }
    };
    Ok(FollowState {
        upstream,
        stage,
        generation: gen_,
        upstream_seq: to_u64(upstream_seq),
        synced_at,
        complete,
        subscription,
    })
}

/// A file row (`sha256, verdict, name, source, updated, tier`).
fn file_row(r: &rusqlite::Row<'_>) -> Result<(FileEntry, u8), StoreError> {
    let sha: String = r.get(0)?;
    let corrupt = |what| StoreError::Corrupt {
        key: sha.clone(),
        what,
    };
    let f = FileEntry {
        sha256: Sha256Hex::parse(&sha).ok_or_else(|| corrupt("bad hash"))?,
        verdict: crate::model::FileVerdict::parse(&r.get::<_, String>(1)?)
            .ok_or_else(|| corrupt("bad verdict"))?,
        name: r.get(2)?,
        source: crate::model::Source::from_stored(&r.get::<_, String>(3)?)
            .ok_or_else(|| corrupt("bad source"))?,
        updated: r.get(4)?,
    };
    let tier = u8::try_from(r.get::<_, i64>(5)?).map_err(|_| corrupt("tier out of range"))?;
    Ok((f, tier))
}

impl Writer<'_> {
    /// Puts an entry learned from the upstream into the mirror, marked with generation `gen`
    /// (its `tier` is the one it has here: one more than the upstream sent). Recorded as a
    /// change only when its value changed. Returns whether it did.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn mirror_entry(&mut self, e: &Entry, gen_: i64) -> Result<bool, StoreError> {
        let cats: Vec<&str> = e.categories.iter().map(Category::as_str).collect();
        let changed = self
            .tx
            .prepare_cached(
                "INSERT INTO mirror (key, host, score, categories, source, added, updated, \
                 expires, note, tier, gen) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
                 ON CONFLICT (key) DO UPDATE SET score = excluded.score, \
                 categories = excluded.categories, source = excluded.source, \
                 added = excluded.added, updated = excluded.updated, expires = excluded.expires, \
                 note = excluded.note, tier = excluded.tier, gen = excluded.gen \
                 WHERE score IS NOT excluded.score OR categories IS NOT excluded.categories \
                 OR source IS NOT excluded.source OR added IS NOT excluded.added \
                 OR updated IS NOT excluded.updated OR expires IS NOT excluded.expires \
                 OR note IS NOT excluded.note OR tier IS NOT excluded.tier",
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
                e.tier,
                gen_,
            ])?
            > 0;
        if changed {
            self.record(e.key.as_str())?;
        } else {
            self.tx
                .prepare_cached("UPDATE mirror SET gen = ?2 WHERE key = ?1")?
                .execute(params![e.key.as_str(), gen_])?;
        }
        Ok(changed)
    }

    /// Puts a file verdict learned from the upstream into the mirror, at `tier` here.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn mirror_file(&mut self, f: &FileEntry, tier: u8, gen_: i64) -> Result<bool, StoreError> {
        let changed = self
            .tx
            .prepare_cached(
                "INSERT INTO mirror_files (sha256, verdict, name, source, updated, tier, gen) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (sha256) DO UPDATE SET \
                 verdict = excluded.verdict, name = excluded.name, source = excluded.source, \
                 updated = excluded.updated, tier = excluded.tier, gen = excluded.gen \
                 WHERE verdict IS NOT excluded.verdict OR name IS NOT excluded.name \
                 OR source IS NOT excluded.source OR updated IS NOT excluded.updated \
                 OR tier IS NOT excluded.tier",
            )?
            .execute(params![
                f.sha256.as_str(),
                f.verdict.as_str(),
                f.name,
                f.source.to_stored(),
                f.updated,
                tier,
                gen_,
            ])?
            > 0;
        if changed {
            self.record(&format!("{FILE_CHANGE_PREFIX}{}", f.sha256.as_str()))?;
        } else {
            self.tx
                .prepare_cached("UPDATE mirror_files SET gen = ?2 WHERE sha256 = ?1")?
                .execute(params![f.sha256.as_str(), gen_])?;
        }
        Ok(changed)
    }

    /// Takes a key (an entry key, or `sha256:` and a hash) out of the mirror; recorded as a
    /// change when it was there.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn unmirror(&mut self, key: &str) -> Result<bool, StoreError> {
        let n = match key.strip_prefix(FILE_CHANGE_PREFIX) {
            Some(hash) => self
                .tx
                .prepare_cached("DELETE FROM mirror_files WHERE sha256 = ?1")?
                .execute([hash])?,
            None => self
                .tx
                .prepare_cached("DELETE FROM mirror WHERE key = ?1")?
                .execute([key])?,
        };
        if n > 0 {
            self.record(key)?;
        }
        Ok(n > 0)
    }

    /// Deletes the mirrored rows that a finished snapshot of generation `gen` did not copy
    /// (gone upstream, or no longer subscribed), each recorded as a change. Returns how many.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn sweep_mirror(&mut self, gen_: i64) -> Result<u64, StoreError> {
        let mut stale: Vec<String> = self
            .tx
            .prepare("SELECT key FROM mirror WHERE gen < ?1")?
            .query_map([gen_], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let files: Vec<String> = self
            .tx
            .prepare("SELECT sha256 FROM mirror_files WHERE gen < ?1")?
            .query_map([gen_], |r| r.get::<_, String>(0))?
            .collect::<Result<_, _>>()?;
        stale.extend(
            files
                .into_iter()
                .map(|h| format!("{FILE_CHANGE_PREFIX}{h}")),
        );
        let mut n = 0;
        for key in &stale {
            n += u64::from(self.unmirror(key)?);
        }
        Ok(n)
    }

    /// Writes the follower's state in this transaction.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn set_follow_state(&mut self, st: &FollowState) -> Result<(), StoreError> {
        write_state(&self.tx, st)
    }
}

fn write_state(conn: &rusqlite::Connection, st: &FollowState) -> Result<(), StoreError> {
    let (stage, seq, after) = match &st.stage {
        Stage::New => ("new", 0, None),
        Stage::Snapshot { kind, seq, after } => (
            match kind {
                SnapshotKind::Entries => "entries",
                SnapshotKind::Files => "files",
            },
            *seq,
            after.as_deref(),
        ),
        Stage::Follow { seq, after } => ("follow", *seq, after.as_deref()),
    };
    conn.prepare_cached(
        "UPDATE follow_state SET upstream = ?1, stage = ?2, gen = ?3, seq = ?4, after = ?5, \
         upstream_seq = ?6, synced_at = ?7, complete = ?8, subscription = ?9 WHERE id = 1",
    )?
    .execute(params![
        st.upstream,
        stage,
        st.generation,
        to_i64(seq),
        after,
        to_i64(st.upstream_seq),
        st.synced_at,
        st.complete,
        st.subscription
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Key, RiskLevel, Score, Source};

    fn entry(key: &str, score: u8, tier: u8) -> Entry {
        let mut e = Entry::new(
            Key::parse(key).unwrap(),
            Score::new(score).unwrap(),
            vec![],
            Source::Feed("f".into()),
            1,
        );
        e.tier = tier;
        e
    }

    fn mirror(s: &mut Store, entries: &[Entry], generation: i64) -> u64 {
        s.write(|w| {
            let mut n = 0;
            for e in entries {
                n += u64::from(w.mirror_entry(e, generation)?);
            }
            Ok::<_, StoreError>(n)
        })
        .unwrap()
    }

    #[test]
    fn own_entries_win_under_a_key_and_mirrored_ones_combine_with_them() {
        let mut s = Store::open_in_memory().unwrap();
        mirror(
            &mut s,
            &[entry("mixed.test/", 5, 1), entry("shared.test/", 10, 1)],
            1,
        );
        s.upsert(&[
            entry("mixed.test/login/", 60, 0),
            entry("shared.test/", 90, 0),
        ])
        .unwrap();
        // Different keys: the worst of own and mirrored.
        let v = s.lookup_str("http://mixed.test/login/x", 0).unwrap();
        assert_eq!(v.score, Score::new(5));
        // One key: the own entry.
        let v = s.lookup_str("http://shared.test/", 0).unwrap();
        assert_eq!(v.risk, RiskLevel::Safe);
        let h = &s
            .lookup_hosts(&["mixed.test", "shared.test"], 0, 10)
            .unwrap();
        let mixed = h[0].as_ref().unwrap();
        assert_eq!(mixed.verdict.score, Score::new(5));
        assert_eq!(mixed.paths.len(), 1);
        assert_eq!(h[1].as_ref().unwrap().verdict.risk, RiskLevel::Safe);
        assert_eq!(s.get_any("shared.test/").unwrap().unwrap().tier, 0);
        // Deleting the own entry uncovers the mirrored one.
        s.delete(&[Key::parse("shared.test/").unwrap()]).unwrap();
        assert_eq!(s.get_any("shared.test/").unwrap().unwrap().tier, 1);
        assert_eq!(
            s.lookup_str("http://shared.test/", 0).unwrap().score,
            Score::new(10)
        );
    }

    #[test]
    fn an_unchanged_mirrored_entry_is_not_a_change_and_a_sweep_drops_older_generations() {
        let mut s = Store::open_in_memory().unwrap();
        assert_eq!(
            mirror(&mut s, &[entry("a.test/", 5, 1), entry("b.test/", 5, 1)], 1),
            2
        );
        let seq = s.seq().unwrap();
        // The same values again (a repeated snapshot, generation 2): nothing changes.
        assert_eq!(mirror(&mut s, &[entry("a.test/", 5, 1)], 2), 0);
        assert!(s.changes_since(seq, 10).unwrap().keys.is_empty());
        let n = s.write(|w| w.sweep_mirror(2)).unwrap();
        assert_eq!(n, 1, "b.test/ was not copied again");
        assert_eq!(s.changes_since(seq, 10).unwrap().keys, ["b.test/"]);
        assert_eq!(s.mirror_len().unwrap(), 1);
    }

    #[test]
    fn changes_are_paged_by_cursor_inside_one_sequence_and_filtered() {
        let mut s = Store::open_in_memory().unwrap();
        let mut manual = entry("c.test/", 50, 0);
        manual.source = Source::Manual;
        let seq = s
            .upsert(&[entry("a.test/", 5, 0), entry("b.test/", 5, 0), manual])
            .unwrap();
        let all = Subscription::default();
        let page = s.sync_changes(0, None, 2, &all).unwrap();
        assert!(page.more);
        assert_eq!(
            (page.through_seq, page.through_key.as_deref()),
            (seq, Some("b.test/"))
        );
        assert_eq!(page.entries.len(), 2);
        let rest = s.sync_changes(seq, Some("b.test/"), 2, &all).unwrap();
        assert!(!rest.more);
        assert_eq!((rest.through_seq, rest.through_key), (seq, None));
        assert_eq!(rest.entries[0].key, "c.test/");
        // Not subscribed: sent as gone, so a follower that had it drops it.
        let feeds = Subscription {
            sources: vec!["feed:f".into()],
            categories: vec![],
        };
        let page = s.sync_changes(0, None, 10, &feeds).unwrap();
        assert_eq!(page.deleted, ["c.test/"]);
        assert_eq!(page.entries.len(), 2);
        // A cursor ahead of the store, or before the pruned log, is a reset.
        assert!(s.sync_changes(seq + 5, None, 10, &all).unwrap().reset);
        s.upsert(&[entry("d.test/", 5, 0)]).unwrap();
        s.prune_changes(1).unwrap();
        assert!(s.sync_changes(0, None, 10, &all).unwrap().reset);
        assert!(
            s.sync_changes(seq, Some("a.test/"), 10, &all)
                .unwrap()
                .reset
        );
        assert!(!s.sync_changes(seq, None, 10, &all).unwrap().reset);
    }

    #[test]
    fn snapshot_pages_walk_own_and_mirrored_keys_once_each() {
        let mut s = Store::open_in_memory().unwrap();
        mirror(&mut s, &[entry("a.test/", 5, 1), entry("b.test/", 5, 2)], 1);
        s.upsert(&[entry("b.test/", 90, 0), entry("c.test/", 5, 0)])
            .unwrap();
        let all = Subscription::default();
        let mut keys = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let p = s
                .snapshot_page(SnapshotKind::Entries, after.as_deref(), 1, &all)
                .unwrap();
            keys.extend(p.entries.iter().map(|e| (e.key.clone(), e.score, e.tier)));
            match p.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(
            keys,
            [
                ("a.test/".to_owned(), 5, 1),
                ("b.test/".to_owned(), 90, 0),
                ("c.test/".to_owned(), 5, 0)
            ]
        );
    }

    #[test]
    fn the_follow_state_round_trips() {
        let mut s = Store::open_in_memory().unwrap();
        assert_eq!(s.follow_state().unwrap().stage, Stage::New);
        for stage in [
            Stage::Snapshot {
                kind: SnapshotKind::Files,
                seq: 7,
                after: Some("ab".into()),
            },
            Stage::Follow {
                seq: 9,
                after: None,
            },
        ] {
            let st = FollowState {
                upstream: Some("id".into()),
                stage,
                generation: 3,
                upstream_seq: 12,
                synced_at: Some(100),
                complete: true,
                subscription: "&sources=feed%3Aa".into(),
            };
            s.save_follow_state(&st).unwrap();
            assert_eq!(s.follow_state().unwrap(), st);
        }
    }
}
