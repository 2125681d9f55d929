//! The password-check pool: a fixed set of threads that run password hashes, fed by a bounded
//! queue.
//!
//! Where it sits: [`super::Authenticator::check`] hands it the credentials that neither cache
//! answered. A check that finds every thread busy and the queue full is refused at once
//! ([`PoolBusy`]) instead of waiting or starting a thread, so a flood of wrong passwords costs
//! at most `auth.hash_threads` hashes at a time and `auth.hash_queue` waiting jobs, whatever
//! the number of clients.
//!
//! Cost: an argon2 check holds its memory cost (m, 19 MiB for `webrep passwd` hashes) while it
//! runs. Each thread keeps that memory between checks (no page faults or allocator churn per
//! check) and lets it go after [`IDLE_RELEASE`] without work, so the pool's memory is at most
//! threads × the largest m of the users file, and nothing once the pool is idle.
//!
//! Failure: a job whose requester went away before a thread took it is skipped; a panicking
//! job is caught (its requester sees the pool as gone) and the thread carries on. The threads
//! end when the pool is dropped.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

/// How long a thread keeps its hashing memory without work.
pub(super) const IDLE_RELEASE: Duration = Duration::from_secs(10);

/// Memory a pool thread lends to the jobs it runs: argon2's blocks, reused between checks.
#[derive(Default)]
pub(super) struct Scratch {
    blocks: Vec<argon2::Block>,
}

impl Scratch {
    /// `n` argon2 blocks (1 KiB each), grown when needed.
    pub(super) fn blocks(&mut self, n: usize) -> &mut [argon2::Block] {
        if self.blocks.len() < n {
            self.blocks.resize(n, argon2::Block::default());
        }
        &mut self.blocks[..n]
    }

    fn release(&mut self) {
        self.blocks = Vec::new();
    }
}

type Job = Box<dyn FnOnce(&mut Scratch) + Send>;

/// Why a job gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PoolError {
    /// Refused at once: every thread busy and the queue full.
    Busy,
    /// The job panicked (or the pool is shutting down).
    Gone,
}

/// A fixed pool of hashing threads with a bounded queue.
pub(super) struct HashPool {
    jobs: Sender<Job>,
    threads: usize,
}

impl std::fmt::Debug for HashPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashPool")
            .field("threads", &self.threads)
            .field("queued", &self.queued())
            .finish()
    }
}

impl HashPool {
    /// Starts `threads` threads (named `webrep-auth-N`) and a queue of `queue` waiting jobs
    /// (0: a job is taken only by an idle thread).
    ///
    /// # Errors
    /// The system refused a thread.
    pub(super) fn new(threads: usize, queue: usize) -> std::io::Result<Self> {
        let (jobs, rx) = crossbeam_channel::bounded::<Job>(queue);
        let threads = threads.max(1);
        for i in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("webrep-auth-{i}"))
                .spawn(move || work(&rx))?;
        }
        Ok(Self { jobs, threads })
    }

    /// Jobs waiting for a thread now.
    pub(super) fn queued(&self) -> usize {
        self.jobs.len()
    }

    /// Runs `f` on a pool thread and waits for its answer.
    ///
    /// # Errors
    /// [`PoolError::Busy`] at once when every thread is busy and the queue is full;
    /// [`PoolError::Gone`] when `f` panicked.
    pub(super) async fn run<T, F>(&self, f: F) -> Result<T, PoolError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Scratch) -> T + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |scratch| {
            // The requester gave up (its client left): no hash for nobody.
            if !tx.is_closed() {
                let _ = tx.send(f(scratch));
            }
        });
        self.jobs.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => PoolError::Busy,
            TrySendError::Disconnected(_) => PoolError::Gone,
        })?;
        rx.await.map_err(|_| PoolError::Gone)
    }
}

/// A pool thread: runs jobs until the pool is dropped, keeping its scratch memory while busy.
fn work(jobs: &Receiver<Job>) {
    let mut scratch = Scratch::default();
    loop {
        match jobs.recv_timeout(IDLE_RELEASE) {
            Ok(job) => {
                if std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut scratch))).is_err() {
                    tracing::error!("a password check panicked; its request is refused");
                    scratch = Scratch::default();
                }
            }
            Err(RecvTimeoutError::Timeout) => scratch.release(),
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    #[tokio::test]
    async fn a_full_pool_refuses_at_once_and_serves_again_when_free() {
        let pool = Arc::new(HashPool::new(1, 1).unwrap());
        // One job holds the only thread until released, a second waits in the queue.
        let (started, release) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
        let (s, r) = (started.clone(), release.clone());
        let p = pool.clone();
        let running = tokio::spawn(async move {
            p.run(move |_| {
                s.wait();
                r.wait();
                1
            })
            .await
        });
        tokio::task::spawn_blocking(move || started.wait())
            .await
            .unwrap();
        let p = pool.clone();
        let queued = tokio::spawn(async move { p.run(|_| 2).await });
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while pool.queued() == 0 {
            assert!(std::time::Instant::now() < deadline, "the job never queued");
            tokio::task::yield_now().await;
        }
        assert_eq!(pool.run(|_| 3).await, Err(PoolError::Busy));
        tokio::task::spawn_blocking(move || release.wait())
            .await
            .unwrap();
        assert_eq!(running.await.unwrap(), Ok(1));
        assert_eq!(queued.await.unwrap(), Ok(2));
        assert_eq!(pool.run(|_| 4).await, Ok(4));
    }

    #[tokio::test]
    async fn a_panicking_job_leaves_the_thread_working() {
        let pool = HashPool::new(1, 1).unwrap();
        assert_eq!(
            pool.run(|_| -> u8 { panic!("job panics on purpose") })
                .await,
            Err(PoolError::Gone)
        );
        // The one thread takes the next job once it has caught the panic.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            match pool.run(|s| s.blocks(8).len()).await {
                Ok(n) => break assert_eq!(n, 8),
                Err(PoolError::Busy) => {
                    assert!(std::time::Instant::now() < deadline, "the thread is gone");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(e) => panic!("{e:?}"),
            }
        }
    }
}
