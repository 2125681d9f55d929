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

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use sha2::Digest as _;

use super::body::BoxError;
use crate::model::FileVerdict;
use crate::policy::{Action, FileSettings};
use crate::reputation::{CacheState, FileAnswer, Reputation};

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

/// Whether the policy's `files:` settings select a response to `method path` with status
/// and headers.
pub fn select(
    s: &FileSettings,
    method: &Method,
    path: &str,
    status: StatusCode,
    headers: &HeaderMap,
) -> bool {
    if !s.scan || method != Method::GET || status != StatusCode::OK {
        return false;
    }
    if let Some(len) = content_length(headers)
        && (len < s.min_bytes || (s.max_bytes > 0 && len > s.max_bytes))
    {
        return false;
    }
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    if !media.is_empty()
        && s.content_types.iter().any(|t| {
            if t.ends_with('/') {
                media.starts_with(t.as_str())
            } else {
                media == *t
            }
        })
    {
        return true;
    }
    let disposition = headers
        .get(header::CONTENT_DISPOSITION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if s.attachments
        && disposition
            .trim_start()
            .get(..10)
            .is_some_and(|p| p.eq_ignore_ascii_case("attachment"))
    {
        return true;
    }
    let name =
        disposition_filename(disposition).unwrap_or_else(|| path.rsplit('/').next().unwrap_or(""));
    match name.rsplit_once('.') {
        Some((_, ext)) if !ext.is_empty() => {
            let ext = ext.to_ascii_lowercase();
            s.extensions.contains(&ext)
        }
        _ => false,
    }
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// The `filename=` of a `Content-Disposition` value (quoted or not; `filename*` not
/// decoded, its raw value is enough for the extension).
fn disposition_filename(v: &str) -> Option<&str> {
    v.split(';').find_map(|p| {
        let (k, val) = p.split_once('=')?;
        let k = k.trim();
        (k.eq_ignore_ascii_case("filename") || k.eq_ignore_ascii_case("filename*"))
            .then(|| val.trim().trim_matches('"'))
    })
}

/// What a file verdict makes of a download.
#[derive(Debug, Clone)]
pub struct FileDecision {
    pub action: Action,
    /// Bytes hashed.
    pub size: u64,
    pub sha256: String,
    pub answer: Option<FileAnswer>,
    pub cache: CacheState,
    pub source: Option<Arc<str>>,
}

impl FileDecision {
    /// `malicious file "Name" (SHA-256 ...)` for pages and logs.
    pub fn describe(&self) -> String {
        let verdict = match self.answer.as_ref().and_then(|a| a.verdict) {
            Some(v) => v.as_str(),
            None if self.answer.is_none() => "unchecked (reputation unavailable)",
            None => "unknown",
        };
        match self.answer.as_ref().and_then(|a| a.name.as_deref()) {
            Some(n) => format!("{verdict} file \"{n}\" (SHA-256 {})", self.sha256),
            None => format!("{verdict} file (SHA-256 {})", self.sha256),
        }
    }
}

/// Looks up `sha256` and applies the policy's file actions.
pub async fn decide(rep: &Reputation, s: &FileSettings, sha256: String) -> FileDecision {
    let l = rep.lookup_file(&sha256).await;
    let action = match &l.answer {
        None => s.unavailable,
        Some(a) => match a.verdict {
            Some(FileVerdict::Malicious) => s.malicious,
            Some(FileVerdict::Suspicious) => s.suspicious,
            _ => Action::Allow,
        },
    };
    FileDecision {
        action,
        size: 0,
        sha256,
        answer: l.answer,
        cache: l.cache,
        source: l.source,
    }
}

/// SHA-256 of a body, computed beside the forwarding: frames are queued (as `Bytes`
/// handles, no copy) and, once [`Sha256Pipeline::JOB_BYTES`] are waiting, hashed by a job on
/// the runtime's blocking pool while the proxy goes on moving bytes; the job hands the
/// hasher back when done. A body shorter than that is hashed inline at the end, so small
/// downloads pay no thread hand-off. At most [`Sha256Pipeline::MAX_QUEUED`] bytes wait
/// behind a running job; beyond that the body is not read further until the job is done
/// (backpressure, bounded memory).
pub struct Sha256Pipeline {
    /// Hash each frame as it is pushed, on this thread (see [`Sha256Pipeline::inline`]).
    inline: bool,
    /// The hasher, when no job has it.
    idle: Option<sha2::Sha256>,
    job: Option<tokio::task::JoinHandle<sha2::Sha256>>,
    queued: Vec<Bytes>,
    queued_bytes: usize,
}

impl Default for Sha256Pipeline {
    fn default() -> Self {
        Sha256Pipeline {
            inline: false,
            idle: Some(sha2::Sha256::new()),
            job: None,
            queued: Vec::new(),
            queued_bytes: 0,
        }
    }
}

impl Sha256Pipeline {
    /// Bytes that make a job worth a thread hand-off (about 130 µs of hashing).
    pub const JOB_BYTES: usize = 256 * 1024;
    /// Most bytes queued behind a running job.
    pub const MAX_QUEUED: usize = 2 << 20;
    /// Least bytes for a job started while the upstream is idle ([`Self::upstream_idle`]).
    pub const IDLE_JOB_BYTES: usize = 32 * 1024;

    /// A pipeline that hashes every frame at once on the calling thread, while the frame is
    /// still in the CPU's cache, and never hands off to the blocking pool. Cheaper in CPU
    /// than jobs (no thread hand-off, no second trip through memory); slower for one
    /// download only when a core would otherwise be free to hash beside it.
    pub fn inline() -> Self {
        Sha256Pipeline {
            inline: true,
            ..Sha256Pipeline::default()
        }
    }

    /// Queues `data` for hashing (or hashes it now, inline).
    pub fn push(&mut self, data: &Bytes) {
        if self.inline
            && let Some(hasher) = self.idle.as_mut()
        {
            hasher.update(data);
            return;
        }
        if !data.is_empty() {
            self.queued_bytes += data.len();
            self.queued.push(data.clone());
        }
    }

    /// Reaps a finished job and starts the next one when enough is queued. `Pending` only
    /// while a job runs and more than [`Self::MAX_QUEUED`] bytes wait (the waker is then
    /// registered with the job).
    ///
    /// # Errors
    /// The job panicked or its runtime is shutting down.
    pub fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if let Some(job) = &mut self.job {
            match Pin::new(job).poll(cx) {
                Poll::Ready(r) => {
                    self.job = None;
                    self.idle = Some(r.map_err(|e| format!("hashing failed: {e}"))?);
                }
                Poll::Pending if self.queued_bytes > Self::MAX_QUEUED => return Poll::Pending,
                Poll::Pending => return Poll::Ready(Ok(())),
            }
        }
        if self.queued_bytes >= Self::JOB_BYTES {
            self.start_job();
        }
        Poll::Ready(Ok(()))
    }

    /// Hands what is queued to a job on the blocking pool, unless one runs already.
    fn start_job(&mut self) {
        if let Some(mut hasher) = self.idle.take() {
            let frames = std::mem::take(&mut self.queued);
            self.queued_bytes = 0;
            self.job = Some(tokio::task::spawn_blocking(move || {
                for f in &frames {
                    hasher.update(f);
                }
                hasher
            }));
        }
    }

    /// Called when the upstream has no bytes for now: the worker would wait anyway, so a
    /// job starts for what is queued (at least [`Self::IDLE_JOB_BYTES`]) instead of waiting
    /// for [`Self::JOB_BYTES`]. A download slower than hashing then ends with at most its
    /// last frames to hash, not a whole job's worth.
    pub fn upstream_idle(&mut self) {
        if !self.inline && self.job.is_none() && self.queued_bytes >= Self::IDLE_JOB_BYTES {
            self.start_job();
        }
    }

    /// Waits for a running job, hashes what is left inline, and returns the lower-case hex
    /// digest.
    ///
    /// # Errors
    /// As [`Self::poll_ready`].
    pub fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<Result<String, BoxError>> {
        if let Some(job) = &mut self.job {
            let r = std::task::ready!(Pin::new(job).poll(cx));
            self.job = None;
            self.idle = Some(r.map_err(|e| format!("hashing failed: {e}"))?);
        }
        let mut hasher = self.idle.take().unwrap_or_default();
        for f in self.queued.drain(..) {
            hasher.update(&f);
        }
        self.queued_bytes = 0;
        Poll::Ready(Ok(hex::encode(hasher.finalize())))
    }
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

/// A streamed download counted as in flight (see [`FileScanner::stream_hasher`]) until
/// dropped.
pub struct Streaming(Arc<AtomicUsize>);

impl Drop for Streaming {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

type Deciding = Pin<Box<dyn Future<Output = FileDecision> + Send>>;
type OnDecision = Box<dyn FnOnce(&FileDecision) + Send>;

/// A streamed download: hashes every frame, holds the latest back, and releases it only
/// when the verdict allows (see the module docs).
pub struct ScanBody {
    inner: Incoming,
    /// `None` once the hash is known.
    hasher: Option<Sha256Pipeline>,
    /// Counts this download in flight while it lives.
    _streaming: Streaming,
    held: Option<Frame<Bytes>>,
    /// Starts the lookup once the hash is known.
    decide: Option<Box<dyn FnOnce(String) -> Deciding + Send>>,
    deciding: Option<Deciding>,
    /// Bytes hashed so far.
    size: u64,
    /// Called with the decision (logging, counters).
    on_decision: Option<OnDecision>,
    /// The upstream body has ended: the hash is being finished.
    finishing: bool,
    done: bool,
}

impl ScanBody {
    pub fn new(
        inner: Incoming,
        (hasher, streaming): (Sha256Pipeline, Streaming),
        decide: impl FnOnce(String) -> Deciding + Send + 'static,
        on_decision: impl FnOnce(&FileDecision) + Send + 'static,
    ) -> ScanBody {
        ScanBody {
            inner,
            hasher: Some(hasher),
            _streaming: streaming,
            held: None,
            decide: Some(Box::new(decide)),
            deciding: None,
            size: 0,
            on_decision: Some(Box::new(on_decision)),
            finishing: false,
            done: false,
        }
    }
}

impl Body for ScanBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if let Some(fut) = &mut this.deciding {
                let mut d = std::task::ready!(fut.as_mut().poll(cx));
                d.size = this.size;
                this.deciding = None;
                if let Some(f) = this.on_decision.take() {
                    f(&d);
                }
                if d.action == Action::Block {
                    this.done = true;
                    this.held = None;
                    return Poll::Ready(Some(
                        Err(format!("download cut: {}", d.describe()).into()),
                    ));
                }
                match this.held.take() {
                    Some(f) => return Poll::Ready(Some(Ok(f))),
                    None => {
                        this.done = true;
                        return Poll::Ready(None);
                    }
                }
            }
            let Some(hasher) = this.hasher.as_mut() else {
                // Decided and the held frame released.
                this.done = true;
                return Poll::Ready(None);
            };
            if this.finishing {
                let hash = match std::task::ready!(hasher.poll_finish(cx)) {
                    Ok(h) => h,
                    Err(e) => {
                        this.done = true;
                        return Poll::Ready(Some(Err(e)));
                    }
                };
                this.hasher = None;
                match this.decide.take() {
                    Some(start) => {
                        this.deciding = Some(start(hash));
                        continue;
                    }
                    None => {
                        this.done = true;
                        return Poll::Ready(None);
                    }
                }
            }
            if let Err(e) = std::task::ready!(hasher.poll_ready(cx)) {
                this.done = true;
                return Poll::Ready(Some(Err(e)));
            }
            let Poll::Ready(next) = Pin::new(&mut this.inner).poll_frame(cx) else {
                hasher.upstream_idle();
                return Poll::Pending;
            };
            match next {
                Some(Ok(frame)) => {
                    if let Some(d) = frame.data_ref() {
                        hasher.push(d);
                        this.size += d.len() as u64;
                    }
                    if let Some(prev) = this.held.replace(frame) {
                        return Poll::Ready(Some(Ok(prev)));
                    }
                }
                Some(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
                None => this.finishing = true,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[tokio::test]
    async fn the_pipelined_hash_equals_the_one_shot_hash() {
        // Sizes around the job threshold, frames of uneven sizes, and more queued than
        // MAX_QUEUED at once (the backpressure path).
        for (total, frame) in [
            (0usize, 1usize),
            (1, 1),
            (Sha256Pipeline::JOB_BYTES - 1, 7_000),
            (Sha256Pipeline::JOB_BYTES, 65_536),
            (3 << 20, 100_003),
            (5 << 20, 3 << 20),
        ] {
            let data: Vec<u8> = (0..total).map(|i| (i * 31 % 251) as u8).collect();
            for (mut p, idle) in [
                (Sha256Pipeline::default(), false),
                (Sha256Pipeline::default(), true),
                (Sha256Pipeline::inline(), true),
            ] {
                for chunk in data.chunks(frame) {
                    p.push(&Bytes::copy_from_slice(chunk));
                    std::future::poll_fn(|cx| p.poll_ready(cx)).await.unwrap();
                    if idle {
                        // The upstream had nothing more for now after each frame.
                        p.upstream_idle();
                    }
                }
                assert!(p.job.is_none() || !p.inline, "inline never starts a job");
                let got = std::future::poll_fn(|cx| p.poll_finish(cx)).await.unwrap();
                assert_eq!(
                    got,
                    hex::encode(sha2::Sha256::digest(&data)),
                    "{total} bytes"
                );
            }
        }
    }

    #[tokio::test]
    async fn an_idle_upstream_starts_a_job_for_what_waits() {
        let mut p = Sha256Pipeline::default();
        p.push(&Bytes::from(vec![1u8; Sha256Pipeline::IDLE_JOB_BYTES - 1]));
        p.upstream_idle();
        assert!(p.job.is_none(), "too little to be worth a job");
        p.push(&Bytes::from_static(b"x"));
        p.upstream_idle();
        assert!(p.job.is_some(), "the worker would wait anyway: hash now");
        assert_eq!(p.queued_bytes, 0);
        // One job at a time: more bytes wait behind it.
        p.push(&Bytes::from(vec![2u8; Sha256Pipeline::IDLE_JOB_BYTES]));
        p.upstream_idle();
        assert_eq!(p.queued_bytes, Sha256Pipeline::IDLE_JOB_BYTES);
        let mut want = sha2::Sha256::new();
        want.update(vec![1u8; Sha256Pipeline::IDLE_JOB_BYTES - 1]);
        want.update(b"x");
        want.update(vec![2u8; Sha256Pipeline::IDLE_JOB_BYTES]);
        let got = std::future::poll_fn(|cx| p.poll_finish(cx)).await.unwrap();
        assert_eq!(got, hex::encode(want.finalize()));
        // Inline hashes as frames come: nothing ever waits for a job.
        let mut p = Sha256Pipeline::inline();
        p.push(&Bytes::from(vec![1u8; 2 * Sha256Pipeline::IDLE_JOB_BYTES]));
        p.upstream_idle();
        assert!(p.job.is_none() && p.queued_bytes == 0);
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

    #[test]
    fn hex_is_lower_case() {
        assert_eq!(hex::encode([0x00, 0xab, 0x7f]), "00ab7f");
        let h = hex::encode(sha2::Sha256::digest(b"abc"));
        assert_eq!(
            h,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
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
