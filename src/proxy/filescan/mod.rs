//! File reputation on the response path: downloads the policy selects are hashed
//! (SHA-256) while they stream, and the hash is looked up on the reputation server.
//!
//! # Where it sits
//! In [`super::forward`], after the upstream's response head has arrived and before it goes
//! to the client, for plain HTTP and for requests decrypted from an intercepted tunnel. The
//! policy's `files:` settings for the request select responses by media type, file
//! extension (URL path or `Content-Disposition` file name), `Content-Disposition:
//! attachment`, and size ([`select`]). Only `200` responses to `GET` are scanned.
//!
//! Two ways, so that a bad file never reaches the client whole:
//! - **held back** ([`FileScanner::hold`]): a response whose `Content-Length` is at most
//!   `files.hold_back_bytes` is read whole (hashing as it comes), looked up, and then sent,
//!   or replaced by the block page. Memory: at most `hold_back_bytes` per download and
//!   `files.hold_back_total_bytes` across all of them (a semaphore; a download that does not
//!   fit streams instead, never waits);
//! - **streamed** ([`ScanBody`]): anything larger or unsized streams to the client frame by
//!   frame, but the most recent frame is always held back; at the end the hash is looked up,
//!   and only a good (or allowed) verdict releases that last frame. A blocked file ends with
//!   an error instead: hyper closes the connection short of the declared length (or
//!   without the last chunk), so the client is left with a failed, truncated download.
//!
//! # What it costs
//! SHA-256 over every selected byte: about 0.6 ms of CPU per MiB with the `sha2` crate's
//! SHA-NI code (1.6-1.7 GiB/s per core here; `ring` and OpenSSL are no faster). Where it
//! runs depends on whether a core is free for it ([`Sha256Pipeline`]):
//! - a held-back body hashes each frame inline as it arrives, while the frame is in cache:
//!   nothing is sent before the verdict, so there is no forwarding to overlap with;
//! - a streamed download hashes beside the forwarding, in jobs of 256 KiB on the blocking
//!   pool (or of what waits, from 32 KiB, whenever the upstream has nothing for now: the
//!   hash keeps up with a download slower than hashing, which then ends with only its last
//!   frames to hash), while fewer streamed downloads than workers are being hashed; beyond
//!   that it hashes inline, since every core already has a download and jobs would only add
//!   hand-offs and a second pass through memory ([`FileScanner::stream_hasher`]).
//!
//! Held-back bodies keep the frames they came in (no copy). One cached lookup per distinct
//! file (a round trip when cold; misses of different files share requests), and one frame of
//! delay at the end of a streamed download. Responses not selected cost one header check.
//!
//! What that costs in throughput, scanned against unscanned, is measured by
//! `cargo bench --bench proxy -- ^files` (`docs/performance.md`, "File reputation").
//!
//! # How it fails
//! No answer from any reputation source follows `files.unavailable` (allow by default). An
//! upstream body error passes to the client as it would without scanning. A held-back
//! response that turns out longer than its `Content-Length` is an upstream error (502).

mod hash;
mod select;
mod stream;
mod verdict;

pub use hash::Sha256Pipeline;
pub use select::select;
pub use stream::{ScanBody, Streaming};
pub use verdict::{FileDecision, decide};

use select::content_length;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use http::HeaderMap;
use http_body::Body;
use hyper::body::Incoming;

use super::body::BoxError;

/// Runtime state of file scanning (one per proxy).
pub struct FileScanner {
    /// `files.hold_back_bytes`.
    pub hold_back_bytes: u64,
    /// Streamed downloads being hashed now, across workers; at `cores` or more, new ones
    /// hash inline (no core is free for hashing beside them).
    streaming: Arc<AtomicUsize>,
    cores: usize,
    /// Permits in KiB for `files.hold_back_total_bytes`.
    held: Arc<tokio::sync::Semaphore>,
    pub stats: FileStats,
}

/// Counters, served on `/stats`.
#[derive(Debug, Default)]
pub struct FileStats {
    /// Downloads hashed.
    pub scanned: AtomicU64,
    /// ... of which held back whole.
    pub held: AtomicU64,
    /// Blocked by their verdict (page or cut).
    pub blocked: AtomicU64,
    /// Allowed with a monitor action.
    pub monitored: AtomicU64,
    /// No answer from any source.
    pub unavailable: AtomicU64,
}

impl FileStats {
    pub fn to_json(&self) -> serde_json::Value {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "scanned": l(&self.scanned),
            "held": l(&self.held),
            "blocked": l(&self.blocked),
            "monitored": l(&self.monitored),
            "unavailable": l(&self.unavailable),
        })
    }
}

/// How a selected download is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Read whole (this many bytes) before anything is sent.
    Hold(u64),
    /// Streamed with the last frame held back.
    Stream,
}

/// A permit for held-back bytes, returned when dropped.
pub struct Held(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

impl FileScanner {
    /// `cores`: CPUs the proxy runs on (its worker count).
    pub fn new(config: &crate::config::FilesConfig, cores: usize) -> FileScanner {
        let kib = u32::try_from(config.hold_back_total_bytes.div_ceil(1024)).unwrap_or(u32::MAX);
        FileScanner {
            hold_back_bytes: config.hold_back_bytes,
            streaming: Arc::new(AtomicUsize::new(0)),
            cores: cores.max(1),
            held: Arc::new(tokio::sync::Semaphore::new(kib as usize)),
            stats: FileStats::default(),
        }
    }

    /// Hold (with a permit for the bytes) or stream, for a response with `headers`.
    pub fn mode(&self, headers: &HeaderMap) -> (Mode, Option<Held>) {
        match content_length(headers) {
            Some(len) if len <= self.hold_back_bytes => {
                let kib = u32::try_from(len.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
                match self.held.clone().try_acquire_many_owned(kib) {
                    Ok(p) => (Mode::Hold(len), Some(Held(p))),
                    Err(_) => (Mode::Stream, None),
                }
            }
            _ => (Mode::Stream, None),
        }
    }

    /// Reads a held-back body whole (at most `len` bytes) as the frames it came in (no
    /// copy), hashing it on the way ([`Sha256Pipeline`]).
    ///
    /// # Errors
    /// The upstream's body error, or a body longer than `len`.
    pub async fn hold(
        &self,
        mut body: Incoming,
        len: u64,
    ) -> Result<(Vec<Bytes>, u64, String), BoxError> {
        self.stats.scanned.fetch_add(1, Ordering::Relaxed);
        self.stats.held.fetch_add(1, Ordering::Relaxed);
        let mut frames = Vec::new();
        let mut size = 0u64;
        // Inline: a held body is not sent before it is whole, so there is no forwarding for
        // a hashing job to overlap with, and each frame is hashed while in cache.
        let mut hash = Sha256Pipeline::inline();
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            if let Ok(d) = frame?.into_data() {
                size += d.len() as u64;
                if size > len {
                    return Err("upstream body longer than its Content-Length".into());
                }
                hash.push(&d);
                frames.push(d);
                std::future::poll_fn(|cx| hash.poll_ready(cx)).await?;
            }
        }
        let sha = std::future::poll_fn(|cx| hash.poll_finish(cx)).await?;
        Ok((frames, size, sha))
    }

    /// The hasher for a streamed download, and its place among those in flight: jobs on the
    /// blocking pool while fewer streamed downloads than cores are being hashed (the spare
    /// core hashes beside the forwarding), inline once every core has one (jobs would only
    /// add hand-offs and a second pass through memory).
    pub fn stream_hasher(&self) -> (Sha256Pipeline, Streaming) {
        let before = self.streaming.fetch_add(1, Ordering::Relaxed);
        let hasher = if before < self.cores {
            Sha256Pipeline::default()
        } else {
            Sha256Pipeline::inline()
        };
        (hasher, Streaming(self.streaming.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::FileSettings;
    use http::{Method, StatusCode};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn downloads_are_selected_by_type_extension_attachment_and_size() {
        let s = FileSettings::default();
        let get = Method::GET;
        let ok = StatusCode::OK;
        let sel = |path: &str, h: &[(&str, &str)]| select(&s, &get, path, ok, &headers(h));
        assert!(sel("/a", &[("content-type", "application/x-msdownload")]));
        assert!(sel(
            "/a",
            &[("content-type", "Application/Zip; charset=binary")]
        ));
        assert!(!sel("/a", &[("content-type", "text/html")]));
        assert!(sel("/setup.EXE", &[("content-type", "text/plain")]));
        assert!(sel("/a", &[("content-disposition", "attachment")]));
        assert!(sel(
            "/a",
            &[("content-disposition", "inline; filename=\"x.msi\"")]
        ));
        assert!(!sel("/index.html", &[("content-type", "text/html")]));
        assert!(!sel(
            "/a.exe",
            &[("content-type", "application/zip"), ("content-length", "0")]
        ));
        assert!(!select(&s, &Method::HEAD, "/a.exe", ok, &headers(&[])));
        assert!(!select(
            &s,
            &get,
            "/a.exe",
            StatusCode::PARTIAL_CONTENT,
            &headers(&[])
        ));
        let capped = FileSettings {
            max_bytes: 100,
            content_types: vec!["application/".into()],
            ..FileSettings::default()
        };
        let h = |n: &str| headers(&[("content-type", "application/foo"), ("content-length", n)]);
        assert!(select(&capped, &get, "/a", ok, &h("100")));
        assert!(!select(&capped, &get, "/a", ok, &h("101")));
        let off = FileSettings {
            scan: false,
            ..FileSettings::default()
        };
        assert!(!select(&off, &get, "/a.exe", ok, &headers(&[])));
    }

    #[test]
    fn streamed_downloads_hash_beside_the_forwarding_only_while_a_core_is_free() {
        let scanner = FileScanner::new(&crate::config::FilesConfig::default(), 2);
        let (a, a_count) = scanner.stream_hasher();
        let (b, b_count) = scanner.stream_hasher();
        let (c, c_count) = scanner.stream_hasher();
        assert!(
            !a.inline && !b.inline,
            "one per core: jobs on the blocking pool"
        );
        assert!(c.inline, "every core busy: the third hashes inline");
        drop((a_count, c_count));
        let (d, _d_count) = scanner.stream_hasher();
        assert!(!d.inline, "a core is free again");
        drop(b_count);
        assert_eq!(scanner.streaming.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn the_hold_back_budget_is_shared_and_returned() {
        let scanner = FileScanner::new(
            &crate::config::FilesConfig {
                hold_back_bytes: 4096,
                hold_back_total_bytes: 6144,
            },
            1,
        );
        let h = |n: &str| headers(&[("content-length", n)]);
        let (m1, p1) = scanner.mode(&h("4096"));
        assert_eq!(m1, Mode::Hold(4096));
        let (m2, p2) = scanner.mode(&h("4096"));
        assert_eq!(m2, Mode::Stream, "over the total: streams");
        assert!(p2.is_none());
        assert_eq!(
            scanner.mode(&h("5000")).0,
            Mode::Stream,
            "over the per-download size"
        );
        assert_eq!(scanner.mode(&headers(&[])).0, Mode::Stream, "unsized");
        drop(p1);
        assert_eq!(scanner.mode(&h("4096")).0, Mode::Hold(4096));
    }
}
