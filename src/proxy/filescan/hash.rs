//! SHA-256 of a download while it streams: inline on the worker, or in jobs on the blocking
//! pool beside the forwarding, with bounded memory behind a running job (see the parent
//! module for when each is used and what it costs).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use sha2::Digest as _;

use crate::proxy::body::BoxError;

/// SHA-256 of a body, computed beside the forwarding: frames are queued (as `Bytes`
/// handles, no copy) and, once [`Sha256Pipeline::JOB_BYTES`] are waiting, hashed by a job on
/// the runtime's blocking pool while the proxy goes on moving bytes; the job hands the
/// hasher back when done. A body shorter than that is hashed inline at the end, so small
/// downloads pay no thread hand-off. At most [`Sha256Pipeline::MAX_QUEUED`] bytes wait
/// behind a running job; beyond that the body is not read further until the job is done
/// (backpressure, bounded memory).
pub struct Sha256Pipeline {
    /// Hash each frame as it is pushed, on this thread (see [`Sha256Pipeline::inline`]).
    pub(super) inline: bool,
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn hex_is_lower_case() {
        assert_eq!(hex::encode([0x00, 0xab, 0x7f]), "00ab7f");
        let h = hex::encode(sha2::Sha256::digest(b"abc"));
        assert_eq!(
            h,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
