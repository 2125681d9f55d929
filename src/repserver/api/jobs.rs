//! The store's threads and the jobs they run: one writer thread owns the [`Store`] and runs
//! writes, imports and pruning in order; reader threads with read-only connections answer
//! lookups and change queries. Handlers hand a job over a bounded queue and await a oneshot
//! reply, so no tokio worker ever blocks on SQLite; a full queue is a 503 (load shedding),
//! a queue whose thread is gone a 503 too. Also here: waking the change followers after a
//! commit, and the background pruning of the change log and of old feedback events.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use tokio::sync::{oneshot, watch};

use super::reply::ApiError;
use super::{PRUNE_INTERVAL, Shared};
use crate::clock::unix_secs;
use crate::repserver::metrics::Forwarded;
use crate::repserver::store::Store;

/// Work for a store thread: runs with the thread's store and sends its own reply.
pub(super) type Job = Box<dyn FnOnce(&mut Store) + Send>;

impl Shared {
    /// Runs `f` on the store thread (the one writer) and awaits its result.
    pub(super) async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        self.run_on(&self.jobs, f).await
    }

    /// Runs a read-only `f` on a reader thread, or on the store thread when there are none.
    pub(super) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        self.run_on(
            self.reads.as_ref().unwrap_or(&self.jobs),
            move |s: &mut Store| f(s),
        )
        .await
    }

    async fn run_on<T: Send + 'static>(
        &self,
        queue: &std::sync::mpsc::SyncSender<Job>,
        f: impl FnOnce(&mut Store) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |store| {
            let _ = tx.send(f(store));
        });
        let gone = || ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store unavailable");
        queue.try_send(job).map_err(|e| match e {
            std::sync::mpsc::TrySendError::Full(_) => {
                self.stats.busy();
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server busy, retry later")
            }
            std::sync::mpsc::TrySendError::Disconnected(_) => gone(),
        })?;
        rx.await.map_err(|_| gone())
    }
}

/// The store's threads: one writer that runs jobs in order, and readers with read-only
/// connections (none for an in-memory store, whose lookups go to the writer).
pub(super) struct StoreThreads {
    pub(super) jobs: std::sync::mpsc::SyncSender<Job>,
    pub(super) reads: Option<std::sync::mpsc::SyncSender<Job>>,
    pub(super) threads: Vec<std::thread::JoinHandle<()>>,
}

impl StoreThreads {
    /// Opens `read_threads` readers on `store`'s file and starts every thread, each with a
    /// queue of `queue` jobs.
    pub(super) fn start(
        store: Store,
        read_threads: usize,
        queue: usize,
    ) -> std::io::Result<StoreThreads> {
        let mut readers = Vec::new();
        for _ in 0..read_threads {
            match store.reader() {
                Ok(Some(r)) => readers.push(r),
                Ok(None) => break,
                Err(e) => return Err(std::io::Error::other(e)),
            }
        }
        let mut threads = Vec::new();
        let reads = if readers.is_empty() {
            None
        } else {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(queue);
            let rx = Arc::new(std::sync::Mutex::new(rx));
            for (i, reader) in readers.into_iter().enumerate() {
                let rx = rx.clone();
                threads.push(
                    std::thread::Builder::new()
                        .name(format!("webrep-read-{i}"))
                        .spawn(move || run_reader(reader, &rx))?,
                );
            }
            Some(tx)
        };
        let (jobs, job_rx) = std::sync::mpsc::sync_channel::<Job>(queue);
        threads.push(
            std::thread::Builder::new()
                .name("webrep-store".to_owned())
                .spawn(move || {
                    let mut store = store;
                    while let Ok(job) = job_rx.recv() {
                        job(&mut store);
                    }
                })?,
        );
        Ok(StoreThreads {
            jobs,
            reads,
            threads,
        })
    }
}

/// Waits for the store's threads, once every sender is gone (their queues then end).
pub(super) async fn join_threads(threads: Vec<std::thread::JoinHandle<()>>) {
    let _ = tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    })
    .await;
}

/// A reader thread: jobs from the shared queue until it closes.
fn run_reader(mut reader: Store, rx: &std::sync::Mutex<std::sync::mpsc::Receiver<Job>>) {
    loop {
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        match job {
            Ok(job) => job(&mut reader),
            Err(_) => return,
        }
    }
}

/// Wakes the followers with a new sequence number. Called on the store thread right after
/// the commit: followers are woken even when the writer's connection is gone before its
/// answer.
pub(super) fn publish(seq_tx: &watch::Sender<u64>, seq: u64) {
    seq_tx.send_if_modified(|cur| {
        let newer = seq > *cur;
        if newer {
            *cur = seq;
        }
        newer
    });
}

/// Prunes the change log to `keep` rows every [`PRUNE_INTERVAL`] until shutdown.
pub(super) async fn prune_loop(shared: Arc<Shared>, keep: u64) {
    let mut tick = tokio::time::interval(PRUNE_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shared.shutdown.cancelled() => return,
        }
        match shared.call(move |store| store.prune_changes(keep)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(rows = n, "pruned the change log"),
            Ok(Err(e)) => tracing::warn!(error = %e, "pruning the change log failed"),
            Err(e) => tracing::debug!(error = e.message, "pruning skipped"),
        }
    }
}

/// Deletes feedback events older than `retention` every [`PRUNE_INTERVAL`] until shutdown;
/// those the forwarder had not sent upstream yet are counted lost and logged.
pub(super) async fn prune_events_loop(shared: Arc<Shared>, retention: Duration) {
    let mut tick = tokio::time::interval(PRUNE_INTERVAL);
    let keep = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shared.shutdown.cancelled() => return,
        }
        let before = unix_secs().saturating_sub(keep);
        let forwarding = shared.forwarding;
        let pruned = shared
            .call(move |store| store.prune_events_forwarded(before, forwarding))
            .await;
        match pruned {
            Ok(Ok(p)) if p.unforwarded > 0 => {
                shared.stats.forward(Forwarded::lost, p.unforwarded);
                tracing::warn!(
                    events = p.deleted,
                    lost = p.unforwarded,
                    "pruned old feedback events, some never forwarded upstream (lost)"
                );
            }
            Ok(Ok(p)) if p.deleted == 0 => {}
            Ok(Ok(p)) => tracing::info!(events = p.deleted, "pruned old feedback events"),
            Ok(Err(e)) => tracing::warn!(error = %e, "pruning feedback events failed"),
            Err(e) => tracing::debug!(error = e.message, "event pruning skipped"),
        }
    }
}
