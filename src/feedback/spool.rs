//! The on-disk spool: batches of events no reputation source took, kept in order until one
//! does.
//!
//! One segment file per batch, `seg-<20-digit sequence>.jsonl`, one event per line. A segment
//! is written to `*.tmp`, fsynced, renamed into place and the directory fsynced: after a
//! crash a segment is there whole or not at all (a leftover `*.tmp` is deleted at open).
//! Replay reads the oldest segment first; a segment is deleted only after a source took all
//! of it, so a crash in between sends it again, which the server's de-duplication by
//! token, `proxy` and `id` absorbs. The total size is bounded by `max_bytes`: a batch that does not
//! fit is refused ([`SpoolError::Full`]) and the caller counts the drop.
//!
//! Plain files rather than SQLite: appends and deletes of whole segments are all the spool
//! does, an operator can read it with `cat`, and a damaged line costs that line only (it is
//! skipped and counted), never the rest.

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::event::Event;

/// Why a batch was not spooled.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The spool holds `max_bytes` already (or the batch alone is larger).
    #[error("the feedback spool is full ({bytes} of {max} bytes)")]
    Full {
        /// Bytes held.
        bytes: u64,
        /// The bound.
        max: u64,
    },
    /// Writing failed (disk full, permissions, ...).
    #[error("feedback spool: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    bytes: u64,
    events: u64,
}

/// The spool directory. Used by one task only.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    bytes: u64,
    events: u64,
    next: u64,
    segments: VecDeque<Segment>,
}

fn segment_seq(name: &str) -> Option<u64> {
    name.strip_prefix("seg-")?
        .strip_suffix(".jsonl")?
        .parse()
        .ok()
}

impl Spool {
    /// Opens (creating) the spool in `dir`: deletes leftover temporary files and finds the
    /// segments there, oldest first.
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
            if name.ends_with(".jsonl.tmp") {
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            if let Some(seq) = segment_seq(name) {
                let bytes = entry.metadata()?.len();
                let events = std::fs::read(entry.path())
                    .map(|b| b.iter().filter(|&&c| c == b'\n').count() as u64)
                    .unwrap_or(0);
                found.push((
                    seq,
                    Segment {
                        path: entry.path(),
                        bytes,
                        events,
                    },
                ));
            }
        }
        found.sort_by_key(|(seq, _)| *seq);
        let next = found.last().map_or(0, |(s, _)| s + 1);
        let bytes = found.iter().map(|(_, s)| s.bytes).sum();
        let events = found.iter().map(|(_, s)| s.events).sum();
        Ok(Spool {
            dir: dir.to_owned(),
            max_bytes,
            bytes,
            events,
            next,
            segments: found.into_iter().map(|(_, s)| s).collect(),
        })
    }

    /// Whether nothing is spooled.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Events held.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Appends one batch as a new segment, durably (fsync of the file and the directory).
    ///
    /// # Errors
    /// [`SpoolError::Full`] when it does not fit; [`SpoolError::Io`].
    pub fn append(&mut self, events: &[Event]) -> Result<(), SpoolError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut text = Vec::with_capacity(events.len() * 400);
        for e in events {
            if serde_json::to_writer(&mut text, e).is_ok() {
                text.push(b'\n');
            }
        }
        let size = text.len() as u64;
        if self.bytes.saturating_add(size) > self.max_bytes {
            return Err(SpoolError::Full {
                bytes: self.bytes,
                max: self.max_bytes,
            });
        }
        let path = self.dir.join(format!("seg-{:020}.jsonl", self.next));
        let tmp = self.dir.join(format!("seg-{:020}.jsonl.tmp", self.next));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(&self.dir)?.sync_all()
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(e.into());
        }
        self.next += 1;
        self.bytes += size;
        self.events += events.len() as u64;
        self.segments.push_back(Segment {
            path,
            bytes: size,
            events: events.len() as u64,
        });
        Ok(())
    }

    /// The events of the oldest segment and the number of its lines that did not parse
    /// (skipped). `None` when the spool is empty.
    ///
    /// # Errors
    /// The segment cannot be read.
    pub fn oldest(&self) -> Option<std::io::Result<(Vec<Event>, u64)>> {
        let seg = self.segments.front()?;
        Some(std::fs::read(&seg.path).map(|bytes| {
            let mut bad = 0;
            let mut out = Vec::new();
            for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                match serde_json::from_slice::<Event>(line) {
                    Ok(e) => out.push(e),
                    Err(_) => bad += 1,
                }
            }
            (out, bad)
        }))
    }

    /// Deletes the oldest segment (delivered, or unreadable).
    ///
    /// # Errors
    /// The file cannot be deleted (it is forgotten anyway, and read again at the next open).
    pub fn pop_oldest(&mut self) -> std::io::Result<()> {
        let Some(seg) = self.segments.pop_front() else {
            return Ok(());
        };
        self.bytes = self.bytes.saturating_sub(seg.bytes);
        self.events = self.events.saturating_sub(seg.events);
        match std::fs::remove_file(&seg.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feedback::event::Kind;

    fn batch(from: u32, n: u32) -> Vec<Event> {
        (from..from + n)
            .map(|i| Event::new(format!("{i:016x}"), Kind::Untested, 1, "p".into()))
            .collect()
    }

    #[test]
    fn feedback_spool_keeps_order_across_reopen_and_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 10_000).unwrap();
        assert!(s.is_empty());
        s.append(&batch(0, 3)).unwrap();
        s.append(&batch(3, 2)).unwrap();
        assert_eq!(s.events(), 5);
        // A torn temporary file from a crash is ignored and removed.
        std::fs::write(
            dir.path().join("seg-00000000000000000009.jsonl.tmp"),
            "{\"v\":",
        )
        .unwrap();
        drop(s);
        let mut s = Spool::open(dir.path(), 10_000).unwrap();
        assert_eq!((s.events(), s.is_empty()), (5, false));
        let (first, bad) = s.oldest().unwrap().unwrap();
        assert_eq!((first.len(), bad), (3, 0));
        assert_eq!(first[0].id, format!("{:016x}", 0));
        s.pop_oldest().unwrap();
        let (second, _) = s.oldest().unwrap().unwrap();
        assert_eq!(second[0].id, format!("{:016x}", 3));
        s.append(&batch(5, 1)).unwrap();
        s.pop_oldest().unwrap();
        let (third, _) = s.oldest().unwrap().unwrap();
        assert_eq!(
            third[0].id,
            format!("{:016x}", 5),
            "appended after reopen comes last"
        );
        s.pop_oldest().unwrap();
        assert!(s.is_empty() && s.bytes() == 0);
        assert!(
            !dir.path()
                .join("seg-00000000000000000009.jsonl.tmp")
                .exists()
        );

        // Bounded: a batch that does not fit is refused, nothing is written.
        let mut s = Spool::open(dir.path(), 300).unwrap();
        s.append(&batch(0, 1)).unwrap();
        assert!(matches!(
            s.append(&batch(1, 10)),
            Err(SpoolError::Full { .. })
        ));
        assert_eq!(s.events(), 1);
    }

    #[test]
    fn feedback_spool_skips_damaged_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 10_000).unwrap();
        s.append(&batch(0, 2)).unwrap();
        let path = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{not json\n");
        std::fs::write(&path, text).unwrap();
        let (events, bad) = s.oldest().unwrap().unwrap();
        assert_eq!((events.len(), bad), (2, 1));
    }
}
