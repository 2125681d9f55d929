//! The streamed download's body: frames go to the client as they are hashed, the last one
//! held back until the verdict; a blocked file ends in an error so the client is left with a
//! failed, truncated download.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::{FileDecision, Sha256Pipeline};
use crate::policy::Action;
use crate::proxy::body::BoxError;

/// A streamed download counted as in flight until dropped (see
/// [`FileScanner::stream_hasher`](super::FileScanner::stream_hasher)).
pub struct Streaming(pub(super) Arc<AtomicUsize>);

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
