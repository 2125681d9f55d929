//! Smart feedback, the proxy's side (issue 8): decisions the policy asks to report, and users'
//! "report a mistake" clicks, sent as [`event::Event`]s to the reputation server.
//!
//! # Where it sits
//! At the end of a decision in [`crate::proxy::filter`] (blocked, warned, monitored,
//! untested, reputation unavailable, allowed when asked), at a warn page's continue link
//! (continued) and at the `/.webrep/report` link of block and warn pages (user report). The
//! request path calls [`Feedback::emit`], which only `try_send`s to a bounded queue and never
//! waits. One task ([`Feedback::start`]) batches the queue (up to `feedback.batch_events`, or
//! what arrived within `feedback.batch_interval_ms` of the first event) and posts each batch
//! to the first healthy reputation source (`POST /v1/events`, failover and health shared with
//! lookups, [`crate::reputation::Reputation::post_events`]).
//!
//! # What it costs
//! On the request path: building one event (a few short strings; a keyed hash when the policy
//! anonymizes) and one `try_send`. Block and warn decisions also remember their ticket in a
//! bounded cache ([`TICKETS`] entries, a day) so that a report can name what was blocked. Off
//! the request path: one JSON encode and one round trip per batch.
//!
//! # How it fails
//! A full queue drops the event, counts it ([`FeedbackStats::dropped_queue`]) and logs at most
//! one warning per ten seconds. When no source takes a batch it goes to the disk spool
//! ([`spool`]); from then on new batches are appended behind it, and every
//! `feedback.retry_interval_ms` the oldest spooled batch is offered again, so events arrive in
//! order. A full spool drops the batch, counted ([`FeedbackStats::dropped_spool`]) and logged.
//! Event ids (the request id, which is the ticket on the pages) make a replay harmless: the
//! server keeps one event per token, `proxy` and `id`. A batch a source refuses as malformed is dropped
//! and counted ([`FeedbackStats::rejected`]) rather than retried forever. At shutdown
//! ([`Feedback::close`]) the queue is drained and sent within `feedback.shutdown_flush_ms`;
//! what is not delivered by then is spooled and replayed at the next start. The spool
//! directory also keeps this proxy's generated id (when there is no host name) and the key of
//! the anonymizing hash, so both survive restarts.

pub mod event;
mod report;
pub mod spool;

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::accesslog::RequestId;
use crate::config::FeedbackConfig;
use crate::reputation::{PostError, Reputation};
use event::{Event, Kind};
use spool::{Spool, SpoolError};

/// The path, on any host, of the "report a mistake" link of block and warn pages.
pub const REPORT_PATH: &str = "/.webrep/report";

/// Block and warn tickets remembered for reports.
pub const TICKETS: u64 = 100_000;

/// Counters, for logs now and metrics later.
#[derive(Debug, Default)]
pub struct FeedbackStats {
    /// Events handed to the queue.
    pub queued: AtomicU64,
    /// Events a source took (accepted or already known).
    pub sent: AtomicU64,
    /// Of those, events the server already had (replays).
    pub duplicates: AtomicU64,
    /// Events written to the spool.
    pub spooled: AtomicU64,
    /// Spooled events delivered later.
    pub replayed: AtomicU64,
    /// Events dropped because the queue was full.
    pub dropped_queue: AtomicU64,
    /// Events dropped because the spool was full or could not be written.
    pub dropped_spool: AtomicU64,
    /// Events a source refused as malformed (dropped).
    pub rejected: AtomicU64,
    /// Events held in the spool now.
    pub spool_events: AtomicU64,
    /// Bytes held in the spool now.
    pub spool_bytes: AtomicU64,
}

/// What a block or warn decision left for a later report.
#[derive(Debug)]
struct Ticket {
    client: IpAddr,
    event: Event,
    reports: AtomicU32,
}

tokio::task_local! {
    static REQUEST: RequestId;
}

/// Runs `f` with `id` as the current request's id (the proxy's dispatch does this for every
/// request), so that events made inside carry the ticket shown on the page.
pub async fn with_request_id<F: std::future::Future>(id: RequestId, f: F) -> F::Output {
    REQUEST.scope(id, f).await
}

/// The current request's id, when inside [`with_request_id`].
pub fn current_request_id() -> Option<RequestId> {
    REQUEST.try_with(|id| *id).ok()
}

/// The proxy's feedback sender. Share it in an `Arc`.
pub struct Feedback {
    tx: mpsc::Sender<Event>,
    rx: std::sync::Mutex<Option<mpsc::Receiver<Event>>>,
    /// The counters.
    pub stats: Arc<FeedbackStats>,
    proxy_id: Arc<str>,
    key: [u8; 32],
    tickets: moka::sync::Cache<String, Arc<Ticket>>,
    stop: CancellationToken,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    config: FeedbackConfig,
    epoch: Instant,
    last_drop_log: AtomicU64,
}

impl std::fmt::Debug for Feedback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feedback")
            .field("proxy_id", &self.proxy_id)
            .finish_non_exhaustive()
    }
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Reads `dir/name`, or creates it with `make()` (mode 0600).
fn persistent(dir: &Path, name: &str, make: impl FnOnce() -> String) -> std::io::Result<String> {
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let value = make();
    let tmp = dir.join(format!("{name}.tmp"));
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(value.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    Ok(value)
}

fn random_hex(bytes: usize) -> String {
    use rand::RngCore as _;
    let mut raw = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut raw);
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && h.len() <= 64 && h.bytes().all(|b| b.is_ascii_graphic()))
}

impl Feedback {
    /// Opens the spool directory (creating it, the anonymizing key and, without a configured
    /// id or host name, this proxy's id) and builds the queue. Nothing runs before
    /// [`Feedback::start`].
    ///
    /// # Errors
    /// The spool directory or its files cannot be created or read.
    pub fn new(config: &FeedbackConfig) -> anyhow::Result<Feedback> {
        use anyhow::Context as _;
        let dir = &config.spool_dir;
        std::fs::create_dir_all(dir)
            .with_context(|| format!("feedback.spool_dir {}", dir.display()))?;
        let proxy_id = match config.proxy_id.clone().or_else(hostname) {
            Some(id) => id,
            None => persistent(dir, "proxy-id", || format!("webrep-{}", random_hex(8)))
                .with_context(|| format!("feedback.spool_dir {}", dir.display()))?,
        };
        let key_hex = persistent(dir, "anonymize-key", || random_hex(32))
            .with_context(|| format!("feedback.spool_dir {}", dir.display()))?;
        crate::secrets::warn_if_open(
            &dir.join("anonymize-key"),
            "feedback.spool_dir's anonymize-key",
        );
        let mut key = [0u8; 32];
        for (i, k) in key.iter_mut().enumerate() {
            *k = key_hex
                .get(i * 2..i * 2 + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .unwrap_or(0);
        }
        let (tx, rx) = mpsc::channel(config.queue_events);
        Ok(Feedback {
            tx,
            rx: std::sync::Mutex::new(Some(rx)),
            stats: Arc::new(FeedbackStats::default()),
            proxy_id: proxy_id.into(),
            key,
            tickets: moka::sync::Cache::builder()
                .max_capacity(TICKETS)
                .time_to_live(Duration::from_secs(86_400))
                .build(),
            stop: CancellationToken::new(),
            task: std::sync::Mutex::new(None),
            config: config.clone(),
            epoch: Instant::now(),
            last_drop_log: AtomicU64::new(0),
        })
    }

    /// This proxy's id in events.
    pub fn proxy_id(&self) -> &str {
        &self.proxy_id
    }

    /// Starts the sender task over `reputation`'s sources (on the current runtime). Replays
    /// what an earlier run left in the spool first.
    ///
    /// # Errors
    /// The spool cannot be opened.
    pub fn start(self: &Arc<Self>, reputation: Arc<Reputation>) -> anyhow::Result<()> {
        use anyhow::Context as _;
        let spool = Spool::open(&self.config.spool_dir, self.config.spool_max_bytes)
            .with_context(|| format!("feedback.spool_dir {}", self.config.spool_dir.display()))?;
        if !spool.is_empty() {
            tracing::info!(
                events = spool.events(),
                bytes = spool.bytes(),
                "feedback spool holds events from an earlier run; replaying them"
            );
        }
        let Some(rx) = self.rx.lock().ok().and_then(|mut r| r.take()) else {
            anyhow::bail!("the feedback sender is already running");
        };
        let sender = Sender {
            reputation,
            spool,
            stats: self.stats.clone(),
            config: self.config.clone(),
            last_log: None,
        };
        let handle = tokio::spawn(sender.run(rx, self.stop.clone()));
        if let Ok(mut t) = self.task.lock() {
            *t = Some(handle);
        }
        Ok(())
    }

    /// Stops the sender: what is queued is sent within `feedback.shutdown_flush_ms`, the rest
    /// spooled. Returns when the task has finished (or a little after the deadline).
    pub async fn close(&self) {
        self.stop.cancel();
        let handle = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(h) = handle {
            let limit = self.config.shutdown_flush + Duration::from_secs(5);
            if tokio::time::timeout(limit, h).await.is_err() {
                tracing::warn!("feedback sender did not finish in time");
            }
        }
    }

    /// Events waiting in the queue now (not yet batched for sending).
    pub fn queue_len(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Hands an event to the sender without waiting; a full queue drops it (counted, logged
    /// at most every ten seconds).
    pub fn emit(&self, event: Event) {
        match self.tx.try_send(event) {
            Ok(()) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                let n = self.stats.dropped_queue.fetch_add(1, Ordering::Relaxed) + 1;
                let now = self.epoch.elapsed().as_millis() as u64 + 10_000;
                let last = self.last_drop_log.load(Ordering::Relaxed);
                if now >= last + 10_000
                    && self
                        .last_drop_log
                        .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    tracing::warn!(
                        dropped_total = n,
                        queue = self.config.queue_events,
                        "feedback queue full: events dropped"
                    );
                }
            }
        }
    }

    /// A new event of `kind` for the current request (its id; a fresh random one outside a
    /// request), now, from this proxy.
    pub fn event(&self, kind: Kind) -> Event {
        let id = current_request_id().map_or_else(|| random_hex(8), |id| id.to_string());
        Event::new(id, kind, unix_ms(), self.proxy_id.to_string())
    }

    /// `value`, or `anon:` and a keyed hash of it (stable for this proxy) when `anonymize`.
    pub fn pseudonym(&self, value: &str, anonymize: bool) -> String {
        if !anonymize {
            return value.to_owned();
        }
        use hmac::{KeyInit as _, Mac as _};
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(value.as_bytes());
        let digest = mac.finalize().into_bytes();
        let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        format!("anon:{hex}")
    }

    /// Remembers a block or warn decision's event under its ticket, for a report.
    pub fn remember_ticket(&self, client: IpAddr, event: &Event) {
        self.tickets.insert(
            event.id.clone(),
            Arc::new(Ticket {
                client,
                event: event.clone(),
                reports: AtomicU32::new(0),
            }),
        );
    }
}

/// The sender task's state.
struct Sender {
    reputation: Arc<Reputation>,
    spool: Spool,
    stats: Arc<FeedbackStats>,
    config: FeedbackConfig,
    /// When a delivery failure was last logged (rate limit).
    last_log: Option<Instant>,
}

enum Sent {
    Delivered,
    /// Refused as malformed: dropped.
    Rejected,
    Failed,
}

impl Sender {
    async fn run(mut self, mut rx: mpsc::Receiver<Event>, stop: CancellationToken) {
        self.publish_spool();
        let mut next_retry = Instant::now();
        let mut batch: Vec<Event> = Vec::with_capacity(self.config.batch_events);
        loop {
            let retry_at = tokio::time::Instant::from_std(next_retry);
            let spooled = !self.spool.is_empty();
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                ev = rx.recv() => match ev {
                    Some(e) => batch.push(e),
                    None => break,
                },
                _ = tokio::time::sleep_until(retry_at), if spooled => {
                    let timeout = self.config.send_timeout;
                    tokio::select! {
                        _ = self.replay(timeout) => {}
                        _ = stop.cancelled() => {}
                    }
                    next_retry = Instant::now() + self.config.retry_interval;
                    continue;
                }
            }
            let deadline = tokio::time::Instant::now() + self.config.batch_interval;
            while batch.len() < self.config.batch_events {
                tokio::select! {
                    biased;
                    ev = rx.recv() => match ev {
                        Some(e) => batch.push(e),
                        None => break,
                    },
                    // The shutdown path sends (or spools) the batch.
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            if stop.is_cancelled() {
                break;
            }
            let events = std::mem::take(&mut batch);
            // A stalled source holds the sender no longer than the shutdown: the batch in
            // flight is spooled (a duplicate if the source took it after all).
            let timeout = self.config.send_timeout;
            if !self.spool.is_empty() && Instant::now() >= next_retry {
                tokio::select! {
                    _ = self.replay(timeout) => {}
                    _ = stop.cancelled() => {}
                }
                next_retry = Instant::now() + self.config.retry_interval;
            }
            if self.spool.is_empty() {
                let sent = tokio::select! {
                    r = self.send(&events, timeout) => r,
                    _ = stop.cancelled() => Sent::Failed,
                };
                match sent {
                    Sent::Delivered | Sent::Rejected => continue,
                    Sent::Failed => next_retry = Instant::now() + self.config.retry_interval,
                }
            }
            self.spool_batch(&events);
        }
        // Shutdown: everything queued, sent while the deadline allows, else spooled.
        rx.close();
        while let Ok(e) = rx.try_recv() {
            batch.push(e);
        }
        let deadline = Instant::now() + self.config.shutdown_flush;
        let mut failed = !self.spool.is_empty();
        for chunk in batch.chunks(self.config.batch_events) {
            let left = deadline.saturating_duration_since(Instant::now());
            if !failed && !left.is_zero() {
                match self.send(chunk, self.config.send_timeout.min(left)).await {
                    Sent::Delivered | Sent::Rejected => continue,
                    Sent::Failed => failed = true,
                }
            }
            self.spool_batch(chunk);
        }
        if !self.spool.is_empty() {
            tracing::info!(
                events = self.spool.events(),
                "feedback events left in the spool; they are sent at the next start"
            );
        }
    }

    fn publish_spool(&self) {
        self.stats
            .spool_events
            .store(self.spool.events(), Ordering::Relaxed);
        self.stats
            .spool_bytes
            .store(self.spool.bytes(), Ordering::Relaxed);
    }

    fn log_failure(&mut self, what: &str, e: &dyn std::fmt::Display) {
        if self
            .last_log
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            self.last_log = Some(Instant::now());
            tracing::warn!(error = %e, spool_events = self.spool.events(), "{what}");
        }
    }

    async fn send(&mut self, events: &[Event], timeout: Duration) -> Sent {
        if events.is_empty() {
            return Sent::Delivered;
        }
        let body = json!({ "events": events });
        match self.reputation.post_events(&body, timeout).await {
            Ok((v, _)) => {
                self.stats
                    .sent
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
                let dup = v.get("duplicate").and_then(serde_json::Value::as_u64);
                self.stats
                    .duplicates
                    .fetch_add(dup.unwrap_or(0), Ordering::Relaxed);
                Sent::Delivered
            }
            Err(PostError::Rejected(m)) => {
                self.stats
                    .rejected
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
                tracing::warn!(error = %m, events = events.len(), "feedback batch refused by the server; dropped");
                Sent::Rejected
            }
            Err(e @ PostError::Unavailable(_)) => {
                self.log_failure("feedback not delivered; spooling", &e);
                Sent::Failed
            }
        }
    }

    fn spool_batch(&mut self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        match self.spool.append(events) {
            Ok(()) => {
                self.stats
                    .spooled
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                let n = self
                    .stats
                    .dropped_spool
                    .fetch_add(events.len() as u64, Ordering::Relaxed)
                    + events.len() as u64;
                let why = match &e {
                    SpoolError::Full { .. } => "feedback spool full: events dropped",
                    SpoolError::Io(_) => "feedback spool not writable: events dropped",
                };
                if self
                    .last_log
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
                {
                    self.last_log = Some(Instant::now());
                    tracing::warn!(error = %e, dropped_total = n, "{why}");
                }
            }
        }
        self.publish_spool();
    }

    /// Offers the spooled batches, oldest first, until one is not taken.
    async fn replay(&mut self, timeout: Duration) {
        while let Some(read) = self.spool.oldest() {
            let events = match read {
                Ok((events, bad)) => {
                    if bad > 0 {
                        tracing::warn!(lines = bad, "damaged lines in the feedback spool skipped");
                        self.stats.dropped_spool.fetch_add(bad, Ordering::Relaxed);
                    }
                    events
                }
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable feedback spool segment dropped");
                    Vec::new()
                }
            };
            let mut delivered = 0u64;
            for chunk in events.chunks(self.config.batch_events) {
                match self.send(chunk, timeout).await {
                    Sent::Delivered => delivered += chunk.len() as u64,
                    Sent::Rejected => {}
                    Sent::Failed => return,
                }
            }
            self.stats.replayed.fetch_add(delivered, Ordering::Relaxed);
            if let Err(e) = self.spool.pop_oldest() {
                tracing::warn!(error = %e, "cannot delete a delivered feedback spool segment");
            }
            self.publish_spool();
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn config(dir: &Path) -> FeedbackConfig {
        FeedbackConfig {
            enabled: true,
            proxy_id: None,
            queue_events: 2,
            batch_events: 10,
            batch_interval: Duration::from_millis(10),
            send_timeout: Duration::from_secs(1),
            retry_interval: Duration::from_secs(1),
            spool_dir: dir.to_owned(),
            spool_max_bytes: 1 << 20,
            shutdown_flush: Duration::from_secs(1),
        }
    }

    #[test]
    fn feedback_pseudonyms_are_keyed_and_stable_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let a = Feedback::new(&config(dir.path())).unwrap();
        let b = Feedback::new(&config(dir.path())).unwrap();
        assert_eq!(a.pseudonym("10.0.0.1", false), "10.0.0.1");
        let p = a.pseudonym("10.0.0.1", true);
        assert!(p.starts_with("anon:") && !p.contains("10.0.0.1"), "{p}");
        assert_eq!(p, b.pseudonym("10.0.0.1", true), "same key after a restart");
        assert_ne!(p, a.pseudonym("10.0.0.2", true));
        let other = tempfile::tempdir().unwrap();
        let c = Feedback::new(&config(other.path())).unwrap();
        assert_ne!(
            p,
            c.pseudonym("10.0.0.1", true),
            "another proxy, another key"
        );
    }

    #[test]
    fn feedback_full_queue_drops_and_counts_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let f = Feedback::new(&config(dir.path())).unwrap();
        for _ in 0..5 {
            f.emit(f.event(Kind::Untested));
        }
        assert_eq!(f.stats.queued.load(Ordering::Relaxed), 2);
        assert_eq!(f.stats.dropped_queue.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn feedback_events_carry_the_request_id() {
        let dir = tempfile::tempdir().unwrap();
        let f = Feedback::new(&config(dir.path())).unwrap();
        let e = with_request_id(RequestId(0xab), async { f.event(Kind::Blocked) }).await;
        assert_eq!(e.id, "00000000000000ab");
        assert_eq!(e.proxy, f.proxy_id());
        assert!(current_request_id().is_none());
    }
}
