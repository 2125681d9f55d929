//! The on-disk spool: the write-ahead log of feedback events. Every event is appended here
//! before it counts as emitted, and the sender delivers from here.
//!
//! # Layout
//! Segment files `seg-<20-digit sequence>.jsonl`, one event per line, oldest first, and a
//! `cursor` file (`<sequence> <offset>`): how far the server has acknowledged. Appends go
//! to the newest segment; a new one starts when it reaches [`SEGMENT_BYTES`], when the
//! sender has delivered all of it (so that it can be deleted at once and the directory holds
//! only what is undelivered), and at every start (earlier segments are never written again).
//! An operator can read the spool with `cat`.
//!
//! # Where it sits and what it costs
//! [`Spool::append`] runs on the request path: one short mutex and one `write(2)` of the
//! event's line (about 400 bytes) to the page cache, no fsync; a new segment costs one
//! `open(2)`, once per delivered batch at most. The sender ([`super::Feedback::start`])
//! calls [`Spool::read`] and [`Spool::advance`] off the request path (blocking pool);
//! [`Spool::sync`] fsyncs what was appended since the last call, every
//! `feedback.spool_fsync_ms`.
//!
//! # How it fails
//! An appended event survives a crash of the process (`kill -9`): it is in the kernel's
//! page cache. A power loss may lose what was appended since the last fsync; the lines cut
//! short then are skipped and counted, never the rest of a segment. A batch the server
//! acknowledged is behind the cursor; a crash between the acknowledgement and the cursor
//! update sends it again, which the server's de-duplication absorbs. The undelivered bytes
//! are bounded by `max_bytes` ([`SpoolError::Full`]). A write or open error
//! ([`SpoolError::Io`], e.g. a full disk) cuts a partial line off again, and appends fail at
//! once for a second before a new segment is tried; the caller keeps the event in memory
//! instead.

use std::collections::VecDeque;
use std::io::{Read as _, Seek as _, Write as _};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// A segment takes appends until it holds this many bytes.
pub const SEGMENT_BYTES: u64 = 4 << 20;

/// After a segment could not be created or written, appends fail at once for this long.
const OPEN_RETRY: Duration = Duration::from_secs(1);

/// Why an event was not spooled.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The undelivered events take `max_bytes` already.
    #[error("the feedback spool is full ({bytes} of {max} bytes undelivered)")]
    Full {
        /// Bytes held.
        bytes: u64,
        /// The bound.
        max: u64,
    },
    /// Writing failed (disk full, read-only file system, directory gone, ...).
    #[error("feedback spool: {0}")]
    Io(#[from] std::io::Error),
}

/// A place in the spool: a segment and a byte offset in it. Ordered as the events are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    /// The segment's sequence number.
    pub seq: u64,
    /// Bytes into it.
    pub offset: u64,
}

/// One line of a [`Chunk`].
#[derive(Debug, Clone)]
pub struct Line {
    range: Range<usize>,
    /// Where the line ends (past its newline).
    pub end: Pos,
    /// Not JSON (cut short by a power loss, or damaged): skipped, counted by the caller.
    pub damaged: bool,
    /// Whether it ends with a newline (a line cut off at the end of a segment does not,
    /// and is not counted as an event).
    newline: bool,
}

/// Lines read from the spool, oldest first.
#[derive(Debug, Default)]
pub struct Chunk {
    buf: Vec<u8>,
    /// The lines, in order.
    pub lines: Vec<Line>,
}

impl Chunk {
    /// The bytes of `line` (without its newline).
    pub fn text(&self, line: &Line) -> &[u8] {
        &self.buf[line.range.clone()]
    }

    /// Where the first `n` lines end, and how many events (newline-terminated lines) they
    /// are; `None` for none.
    pub fn prefix_end(&self, n: usize) -> Option<(Pos, u64)> {
        let last = self.lines.get(n.checked_sub(1)?)?;
        let events = self.lines[..n].iter().filter(|l| l.newline).count();
        Some((last.end, events as u64))
    }
}

#[derive(Debug)]
struct Segment {
    seq: u64,
    len: u64,
    /// Newline-terminated lines in the file.
    events: u64,
}

#[derive(Debug)]
struct State {
    /// Every segment file, oldest first; the cursor is in the first one (or before it).
    segments: VecDeque<Segment>,
    /// The last segment's file while it takes appends.
    active: Option<std::fs::File>,
    /// Whether the active file has appends not yet fsynced.
    active_dirty: bool,
    /// Closed segments with appends not yet fsynced.
    unsynced: Vec<std::fs::File>,
    /// Whether segments were created since the directory was last fsynced.
    dir_dirty: bool,
    next_seq: u64,
    /// How far the server has acknowledged.
    cursor: Pos,
    /// Events of the cursor's segment before the cursor.
    cursor_events: u64,
    /// After a failure to create or write a segment: appends fail until then, with this
    /// error.
    failed: Option<(Instant, String)>,
}

/// The spool directory, shared by the request path (appends) and the sender (reads).
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    state: Mutex<State>,
    held_events: AtomicU64,
    held_bytes: AtomicU64,
    wake: tokio::sync::Notify,
}

fn segment_seq(name: &str) -> Option<u64> {
    name.strip_prefix("seg-")?
        .strip_suffix(".jsonl")?
        .parse()
        .ok()
}

fn newlines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&c| c == b'\n').count() as u64
}

/// The cursor file's position, when it has a readable one.
fn read_cursor(dir: &Path) -> Option<Pos> {
    let text = std::fs::read_to_string(dir.join("cursor")).ok()?;
    let (seq, offset) = text.trim().split_once(' ')?;
    Some(Pos {
        seq: seq.parse().ok()?,
        offset: offset.parse().ok()?,
    })
}

impl State {
    fn segment_path(dir: &Path, seq: u64) -> PathBuf {
        dir.join(format!("seg-{seq:020}.jsonl"))
    }

    fn held(&self) -> (u64, u64) {
        let events = self.segments.iter().map(|s| s.events).sum::<u64>();
        let bytes = self.segments.iter().map(|s| s.len).sum::<u64>();
        let (before_events, before_bytes) = match self.segments.front() {
            Some(s) if s.seq == self.cursor.seq => (self.cursor_events, self.cursor.offset),
            _ => (0, 0),
        };
        (
            events.saturating_sub(before_events),
            bytes.saturating_sub(before_bytes),
        )
    }

    /// Stops appending to the current segment (it is fsynced later if it needs to be).
    fn close_active(&mut self) {
        if let Some(f) = self.active.take()
            && std::mem::take(&mut self.active_dirty)
        {
            self.unsynced.push(f);
        }
    }

    /// Starts a new segment for appends.
    fn open_segment(&mut self, dir: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt as _;
        if let Some((until, why)) = &self.failed
            && Instant::now() < *until
        {
            return Err(std::io::Error::other(format!(
                "{why} (a new segment is tried again within a second)"
            )));
        }
        self.close_active();
        let seq = self.next_seq;
        let opened = std::fs::OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(Self::segment_path(dir, seq));
        // A name taken (by something the spool does not know) is skipped next time.
        self.next_seq += 1;
        match opened {
            Ok(f) => {
                self.segments.push_back(Segment {
                    seq,
                    len: 0,
                    events: 0,
                });
                self.active = Some(f);
                self.dir_dirty = true;
                self.failed = None;
                Ok(())
            }
            Err(e) => {
                self.failed = Some((Instant::now() + OPEN_RETRY, e.to_string()));
                Err(e)
            }
        }
    }

    /// Moves the cursor past segments it has finished (closed ones, and the active one when
    /// it has delivered all of it), returning their files to delete.
    fn skip_finished(&mut self, dir: &Path) -> Vec<PathBuf> {
        let mut done = Vec::new();
        while let Some(&Segment { seq, len, .. }) = self.segments.front() {
            if seq > self.cursor.seq {
                self.cursor = Pos { seq, offset: 0 };
                self.cursor_events = 0;
            }
            let last = self.segments.len() == 1;
            // The active segment stays while it is empty (it was just created for an append).
            let finished = self.cursor.offset >= len && (len > 0 || !last || self.active.is_none());
            if !finished {
                break;
            }
            if last {
                self.close_active();
                self.unsynced.clear();
            }
            done.push(Self::segment_path(dir, seq));
            self.segments.pop_front();
            self.cursor = Pos {
                seq: self.segments.front().map_or(self.next_seq, |s| s.seq),
                offset: 0,
            };
            self.cursor_events = 0;
        }
        done
    }
}

impl Spool {
    /// Opens (creating) the spool in `dir`: deletes leftover temporary files and segments
    /// the cursor has passed, and counts what is left to deliver. Appends go to a new
    /// segment, created at the first one.
    ///
    /// # Errors
    /// The directory cannot be created or read.
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<Spool> {
        std::fs::create_dir_all(dir)?;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            if let Some(seq) = segment_seq(name)
                && entry.file_type()?.is_file()
            {
                found.push(seq);
            }
        }
        found.sort_unstable();
        let mut cursor = read_cursor(dir).unwrap_or(Pos {
            seq: found.first().copied().unwrap_or(0),
            offset: 0,
        });
        let mut segments = VecDeque::new();
        let mut cursor_events = 0;
        for seq in found {
            let path = State::segment_path(dir, seq);
            if seq < cursor.seq {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let bytes = std::fs::read(&path)?;
            if seq == cursor.seq {
                cursor.offset = cursor.offset.min(bytes.len() as u64);
                cursor_events = newlines(&bytes[..cursor.offset as usize]);
            }
            segments.push_back(Segment {
                seq,
                len: bytes.len() as u64,
                events: newlines(&bytes),
            });
        }
        let next_seq = segments
            .back()
            .map_or(cursor.seq, |s| (s.seq + 1).max(cursor.seq));
        let state = State {
            segments,
            active: None,
            active_dirty: false,
            unsynced: Vec::new(),
            dir_dirty: false,
            next_seq,
            cursor,
            cursor_events,
            failed: None,
        };
        let spool = Spool {
            dir: dir.to_owned(),
            max_bytes,
            state: Mutex::new(state),
            held_events: AtomicU64::new(0),
            held_bytes: AtomicU64::new(0),
            wake: tokio::sync::Notify::new(),
        };
        spool.publish(&spool.lock());
        Ok(spool)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, st: &State) {
        let (events, bytes) = st.held();
        self.held_events.store(events, Relaxed);
        self.held_bytes.store(bytes, Relaxed);
    }

    /// Events not yet acknowledged by a server.
    pub fn events(&self) -> u64 {
        self.held_events.load(Relaxed)
    }

    /// Bytes of those events.
    pub fn bytes(&self) -> u64 {
        self.held_bytes.load(Relaxed)
    }

    /// Whether every event spooled has been delivered.
    pub fn is_empty(&self) -> bool {
        self.events() == 0
    }

    /// Where the next append goes: every event appended so far is before it.
    pub fn end(&self) -> Pos {
        let st = self.lock();
        match (st.segments.back(), &st.active) {
            (Some(s), Some(_)) => Pos {
                seq: s.seq,
                offset: s.len,
            },
            _ => Pos {
                seq: st.next_seq,
                offset: 0,
            },
        }
    }

    /// Appends one event's line (JSON and a newline): a `write(2)`, no fsync. Wakes the
    /// sender.
    ///
    /// # Errors
    /// [`SpoolError::Full`] when the undelivered events would exceed `max_bytes`;
    /// [`SpoolError::Io`] when the segment cannot be created or written.
    pub fn append(&self, line: &[u8]) -> Result<(), SpoolError> {
        let len = line.len() as u64;
        let mut st = self.lock();
        let held = self.held_bytes.load(Relaxed);
        if held.saturating_add(len) > self.max_bytes {
            return Err(SpoolError::Full {
                bytes: held,
                max: self.max_bytes,
            });
        }
        let full = st.segments.back().is_none_or(|s| s.len >= SEGMENT_BYTES);
        if st.active.is_none() || full {
            st.open_segment(&self.dir)?;
        }
        let written = match st.active.as_mut() {
            Some(f) => f.write_all(line),
            None => Err(std::io::Error::other("no segment open")),
        };
        if let Err(e) = written {
            // Cut a partial line off; a new segment is tried after a pause (on a full disk
            // an empty file can often be created, and one per event would pile up).
            let good = st.segments.back().map_or(0, |s| s.len);
            if let Some(f) = &st.active {
                let _ = f.set_len(good);
            }
            st.close_active();
            st.failed = Some((Instant::now() + OPEN_RETRY, e.to_string()));
            return Err(e.into());
        }
        st.active_dirty = true;
        if let Some(s) = st.segments.back_mut() {
            s.len += len;
            s.events += 1;
        }
        self.held_events.fetch_add(1, Relaxed);
        self.held_bytes.fetch_add(len, Relaxed);
        drop(st);
        self.wake.notify_one();
        Ok(())
    }

    /// Waits for the next append (returns at once if one came since the last wait).
    pub async fn appended(&self) {
        self.wake.notified().await;
    }

    /// Reads lines from the cursor on, up to `max_events` events and about `max_bytes`
    /// bytes, from one segment. Segments the cursor has finished are deleted first. Lines
    /// that are not JSON are marked damaged; so is a run of `max_bytes` without a newline.
    ///
    /// # Errors
    /// The segment cannot be read.
    pub fn read(&self, max_events: usize, max_bytes: usize) -> std::io::Result<Chunk> {
        let (from, limit, closed) = {
            let mut st = self.lock();
            let done = st.skip_finished(&self.dir);
            let front = st
                .segments
                .front()
                .map(|s| (s.len, st.segments.len() > 1 || st.active.is_none()));
            self.publish(&st);
            let cursor = st.cursor;
            drop(st);
            for path in done {
                let _ = std::fs::remove_file(path);
            }
            let Some((len, closed)) = front else {
                return Ok(Chunk::default());
            };
            (cursor, len, closed)
        };
        let want = usize::try_from(limit - from.offset)
            .unwrap_or(usize::MAX)
            .min(max_bytes);
        let mut file = std::fs::File::open(State::segment_path(&self.dir, from.seq))?;
        file.seek(std::io::SeekFrom::Start(from.offset))?;
        let mut buf = Vec::with_capacity(want);
        file.take(want as u64).read_to_end(&mut buf)?;
        let at_end = from.offset + buf.len() as u64 >= limit;
        let window_full = buf.len() >= max_bytes;
        Ok(split_lines(
            buf,
            from,
            max_events,
            closed && at_end,
            window_full,
        ))
    }

    /// Records that everything before `to` (in the cursor's segment) is delivered,
    /// `events` lines: moves the cursor, writes it down, and deletes the segments it has
    /// finished.
    ///
    /// # Errors
    /// The cursor file cannot be written (the events are then sent again after a restart).
    pub fn advance(&self, to: Pos, events: u64) -> std::io::Result<()> {
        let (cursor, done) = {
            let mut st = self.lock();
            if to.seq == st.cursor.seq && to.offset > st.cursor.offset {
                st.cursor = to;
                st.cursor_events += events;
            }
            let done = st.skip_finished(&self.dir);
            self.publish(&st);
            (st.cursor, done)
        };
        let tmp = self.dir.join("cursor.tmp");
        std::fs::write(&tmp, format!("{} {}\n", cursor.seq, cursor.offset))?;
        std::fs::rename(&tmp, self.dir.join("cursor"))?;
        for path in done {
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    }

    /// Fsyncs what was appended since the last call, and the directory when segments were
    /// created.
    ///
    /// # Errors
    /// An fsync failed.
    pub fn sync(&self) -> std::io::Result<()> {
        let (files, dir) = {
            let mut st = self.lock();
            let mut files = std::mem::take(&mut st.unsynced);
            if std::mem::take(&mut st.active_dirty)
                && let Some(f) = &st.active
            {
                files.push(f.try_clone()?);
            }
            (files, std::mem::take(&mut st.dir_dirty))
        };
        for f in files {
            f.sync_data()?;
        }
        if dir {
            std::fs::File::open(&self.dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// Splits `buf` (read at `from`) into lines, at most `max_events` of them. `segment_end`:
/// the buffer reaches the end of a closed segment, so a last line without a newline was cut
/// short and is taken as damaged. `window_full`: the buffer is as long as a read may be, so
/// if it holds no newline at all it is damaged as a whole (no event is that long).
fn split_lines(
    buf: Vec<u8>,
    from: Pos,
    max_events: usize,
    segment_end: bool,
    window_full: bool,
) -> Chunk {
    let mut lines = Vec::new();
    let mut start = 0;
    let at = |offset: usize| Pos {
        seq: from.seq,
        offset: from.offset + offset as u64,
    };
    while lines.len() < max_events {
        let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') else {
            break;
        };
        let range = start..start + nl;
        let damaged = serde_json::from_slice::<serde::de::IgnoredAny>(&buf[range.clone()]).is_err();
        start += nl + 1;
        lines.push(Line {
            range,
            end: at(start),
            damaged,
            newline: true,
        });
    }
    let rest = start < buf.len() && lines.len() < max_events;
    // A tail without a newline: cut short at the end of a segment, or a window full of bytes
    // with no newline at all; either way it can never be an event.
    if rest && (segment_end || (lines.is_empty() && window_full)) {
        lines.push(Line {
            range: start..buf.len(),
            end: at(buf.len()),
            damaged: true,
            newline: false,
        });
    }
    Chunk { buf, lines }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(i: u32) -> Vec<u8> {
        format!("{{\"v\":1,\"id\":\"{i:016x}\"}}\n").into_bytes()
    }

    fn ids(c: &Chunk) -> Vec<String> {
        c.lines
            .iter()
            .filter(|l| !l.damaged)
            .map(|l| {
                let v: serde_json::Value = serde_json::from_slice(c.text(l)).unwrap();
                v["id"].as_str().unwrap().to_owned()
            })
            .collect()
    }

    fn segments(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                let n = e.as_ref().unwrap().file_name();
                segment_seq(n.to_str().unwrap()).is_some()
            })
            .count()
    }

    #[test]
    fn feedback_spool_delivers_in_order_from_a_durable_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), 1 << 20).unwrap();
        for i in 0..5 {
            s.append(&line(i)).unwrap();
        }
        assert_eq!(s.events(), 5);
        let c = s.read(3, 1 << 20).unwrap();
        assert_eq!(
            ids(&c),
            ["0000000000000000", "0000000000000001", "0000000000000002"]
        );
        // Two of the three acknowledged, then a restart: delivery resumes at the third.
        let (to, n) = c.prefix_end(2).unwrap();
        s.advance(to, n).unwrap();
        assert_eq!(s.events(), 3);
        drop(s);
        let s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(s.events(), 3);
        s.append(&line(5)).unwrap();
        let c = s.read(100, 1 << 20).unwrap();
        assert_eq!(
            ids(&c),
            ["0000000000000002", "0000000000000003", "0000000000000004"]
        );
        let (to, n) = c.prefix_end(c.lines.len()).unwrap();
        s.advance(to, n).unwrap();
        // The old run's segment is finished and deleted; the new one follows.
        let c = s.read(100, 1 << 20).unwrap();
        assert_eq!(ids(&c), ["0000000000000005"]);
        assert_eq!(segments(dir.path()), 1);
        let (to, n) = c.prefix_end(1).unwrap();
        s.advance(to, n).unwrap();
        // All delivered: the directory holds no segment until the next append.
        assert!(s.is_empty() && s.bytes() == 0);
        assert_eq!(segments(dir.path()), 0);
        s.append(&line(6)).unwrap();
        assert_eq!(ids(&s.read(100, 1 << 20).unwrap()), ["0000000000000006"]);
        s.sync().unwrap();
    }

    #[test]
    fn feedback_spool_is_bounded_by_undelivered_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let one = line(0).len() as u64;
        let s = Spool::open(dir.path(), 2 * one).unwrap();
        s.append(&line(0)).unwrap();
        s.append(&line(1)).unwrap();
        assert!(matches!(s.append(&line(2)), Err(SpoolError::Full { .. })));
        let c = s.read(1, 1 << 20).unwrap();
        let (to, n) = c.prefix_end(1).unwrap();
        s.advance(to, n).unwrap();
        s.append(&line(2)).unwrap();
        assert_eq!(s.events(), 2);
    }

    #[test]
    fn feedback_spool_skips_damaged_lines_and_torn_tails() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), 1 << 20).unwrap();
        s.append(&line(0)).unwrap();
        drop(s);
        // What a power loss can leave: a line of zeros, then one cut short.
        let path = State::segment_path(dir.path(), 0);
        let mut text = std::fs::read(&path).unwrap();
        text.extend_from_slice(b"\0\0\0\0\n");
        text.extend_from_slice(&line(1));
        text.extend_from_slice(b"{\"v\":1,\"id\":");
        std::fs::write(&path, text).unwrap();
        std::fs::write(dir.path().join("seg-00000000000000000009.jsonl.tmp"), "x").unwrap();
        let s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(s.events(), 3);
        let c = s.read(100, 1 << 20).unwrap();
        let damaged: Vec<bool> = c.lines.iter().map(|l| l.damaged).collect();
        assert_eq!(damaged, [false, true, false, true]);
        assert_eq!(ids(&c), ["0000000000000000", "0000000000000001"]);
        let (to, n) = c.prefix_end(c.lines.len()).unwrap();
        assert_eq!(n, 3, "the torn tail is no event");
        s.advance(to, n).unwrap();
        assert!(s.is_empty() && s.bytes() == 0);
        assert!(
            !dir.path()
                .join("seg-00000000000000000009.jsonl.tmp")
                .exists()
        );
        // A window with no newline at all is damaged as a whole, not read forever.
        let chunk = split_lines(b"abcd".to_vec(), Pos::default(), 10, false, true);
        assert!(chunk.lines.len() == 1 && chunk.lines[0].damaged);
        let partial = split_lines(b"abcd".to_vec(), Pos::default(), 10, false, false);
        assert!(
            partial.lines.is_empty(),
            "the rest of the line is read next time"
        );
    }

    #[test]
    fn feedback_spool_write_errors_are_reported_and_retried() {
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = dir.path().join("spool");
        let s = Spool::open(&spool_dir, 1 << 20).unwrap();
        s.append(&line(0)).unwrap();
        let c = s.read(10, 1 << 20).unwrap();
        let (to, n) = c.prefix_end(1).unwrap();
        s.advance(to, n).unwrap();
        // The directory is gone (a regular file in its place): the next segment cannot be
        // created, whoever runs the test.
        std::fs::rename(&spool_dir, dir.path().join("moved")).unwrap();
        std::fs::write(&spool_dir, "").unwrap();
        assert!(matches!(s.append(&line(1)), Err(SpoolError::Io(_))));
        let again = s.append(&line(1)).unwrap_err().to_string();
        assert!(again.contains("tried again"), "{again}");
        assert_eq!(s.events(), 0);
    }
}
