//! Smart feedback, the proxy's side: decisions the policy asks to report, and users' "report a
//! mistake" clicks, sent as [`events::Event`]s to the reputation server.
//!
//! # Where it sits
//! At the end of a decision in [`crate::proxy::filter`] (blocked, warned, monitored,
//! untested, reputation unavailable, allowed when asked), at a warn page's continue link
//! (continued) and at the `/.webrep/report` link of block and warn pages (user report). The
//! request path calls [`Feedback::emit`], which fits the event to the schema's limits
//! ([`events::Event::fit`]) and appends it to the disk spool ([`spool`], the write-ahead log)
//! before the response goes out. One task ([`Feedback::start`], [`send`]) reads the spool in
//! batches (up to `feedback.batch_events`, or what arrived within
//! `feedback.batch_interval_ms` of the first event, at most [`events::MAX_BATCH_BYTES`]) and
//! posts each to the first healthy reputation source (`POST /v1/events`, failover and health
//! shared with lookups, [`crate::reputation::Reputation::post_events`]); the spool's cursor
//! moves past what the server acknowledged. Another fsyncs the spool every
//! `feedback.spool_fsync_ms`. Events of the high-volume kinds in `feedback.aggregate_kinds`
//! (untested above all) are first folded per kind and host ([`aggregate`]) and spooled as one
//! event each `feedback.aggregate_secs` (by a third task), and at [`Feedback::close`].
//!
//! # What it costs
//! On the request path: building one event (a few short strings; a keyed hash when the policy
//! anonymizes), one JSON encode and one append (a short mutex and a `write(2)` to the page
//! cache; no fsync, no waiting for the server). Block and warn decisions also remember their
//! ticket in a bounded cache ([`TICKETS`] entries, a day) so that a report can name what was
//! blocked. A folded event costs a mutex and a hash lookup instead of the encode and the
//! append. Off the request path: one spool read, one round trip and one cursor write per
//! batch.
//!
//! # How it fails
//! An event that has been emitted survives a `kill -9` of the proxy (it is in the spool);
//! a power loss may lose the last `spool_fsync_ms`. While no source answers, events wait in
//! the spool and are offered again every `feedback.retry_interval_ms`, oldest first. Event ids
//! (the request id, which is the ticket on the pages) make a replay harmless: the server keeps
//! one event per token, `proxy` and `id`. Every loss is counted and logged, each cause with
//! its own rate limit ([`Cause`]): a full spool (`spool_max_bytes` undelivered) drops the
//! event; a spool that cannot be written keeps it in a bounded memory queue
//! (`feedback.queue_events`, sent but not crash-safe) and a full one drops it; an event the
//! server refuses, or that [`events::Event::validate`] refuses before sending, is dropped
//! rather than retried, never holding up the others; spool lines damaged by a power loss are
//! skipped. Folded events wait in memory for their interval (a crash loses them; at the host
//! cap what is held is spooled early, nothing dropped). At shutdown ([`Feedback::close`]) the
//! aggregates are spooled, then what is unsent is delivered within
//! `feedback.shutdown_flush_ms`; the rest stays in the spool for the next start. The spool
//! directory also keeps this proxy's generated id (when there is no host name) and the key of
//! the anonymizing hash, so both survive restarts.

pub mod aggregate;
mod report;
pub use report::{REPORTS_PER_TICKET, ReportRefusal};
pub mod send;
pub mod spool;

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::api::events::{self, Event, Kind};
use crate::config::FeedbackConfig;
use crate::reputation::Reputation;
use aggregate::Aggregator;
use spool::{Spool, SpoolError};

/// The path, on any host, of the "report a mistake" link of block and warn pages.
pub const REPORT_PATH: &str = "/.webrep/report";

/// Block and warn tickets remembered for reports.
pub const TICKETS: u64 = 100_000;

/// Counters: served on `/metrics` and `/stats`.
#[derive(Debug, Default)]
pub struct FeedbackStats {
    /// Events emitted: in the spool, or in the memory queue while the spool cannot be
    /// written.
    pub queued: AtomicU64,
    /// Occurrences folded into an aggregate instead of sent on their own (each aggregate
    /// then counts once in `queued`).
    pub folded: AtomicU64,
    /// Intervals cut short: a new host beyond `aggregate_max_hosts` spooled what was held.
    pub aggregate_flushed_early: AtomicU64,
    /// Events a source took (accepted or already known).
    pub sent: AtomicU64,
    /// Of those, events the server already had (replays).
    pub duplicates: AtomicU64,
    /// Events appended to the spool.
    pub spooled: AtomicU64,
    /// Events delivered late: left by an earlier run, or waiting while no source answered.
    pub replayed: AtomicU64,
    /// Lost: the memory queue (used while the spool cannot be written) was full.
    pub dropped_queue: AtomicU64,
    /// Lost: the spool held `spool_max_bytes` of undelivered events.
    pub dropped_spool: AtomicU64,
    /// Lost: spool lines that were not events any more (damaged, cut short by a power loss).
    pub dropped_damaged: AtomicU64,
    /// Lost: events a source refused, or that did not validate before sending.
    pub rejected: AtomicU64,
    /// Events the spool could not take (a write error): kept in the memory queue instead.
    pub spool_write_failed: AtomicU64,
    /// One log rate limit per [`Cause`].
    limits: [crate::telemetry::LogLimiter; Cause::ALL.len()],
}

/// Why events were dropped (or, for [`Cause::SpoolWriteFailed`], kept in memory instead of
/// the spool): each cause has its own counter and its own log rate limit, so a noisy one
/// never hides another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The memory queue was full.
    QueueFull,
    /// The spool was full.
    SpoolFull,
    /// The spool could not be written.
    SpoolWriteFailed,
    /// Spool lines were damaged.
    Damaged,
    /// Refused by the server or by the proxy's own check.
    Rejected,
}

/// At most one warning per cause this often.
const LOG_EVERY: Duration = Duration::from_secs(10);

impl Cause {
    /// Every cause, in a stable order.
    pub const ALL: [Cause; 5] = [
        Cause::QueueFull,
        Cause::SpoolFull,
        Cause::SpoolWriteFailed,
        Cause::Damaged,
        Cause::Rejected,
    ];

    fn message(self) -> &'static str {
        match self {
            Cause::QueueFull => {
                "feedback memory queue full (the spool cannot be written): events dropped"
            }
            Cause::SpoolFull => "feedback spool full: events dropped",
            Cause::SpoolWriteFailed => {
                "feedback spool not writable: events kept in memory only (lost if the proxy dies)"
            }
            Cause::Damaged => "damaged lines in the feedback spool skipped: events lost",
            Cause::Rejected => "feedback event refused; dropped (the others are delivered)",
        }
    }
}

impl FeedbackStats {
    fn counter(&self, cause: Cause) -> &AtomicU64 {
        match cause {
            Cause::QueueFull => &self.dropped_queue,
            Cause::SpoolFull => &self.dropped_spool,
            Cause::SpoolWriteFailed => &self.spool_write_failed,
            Cause::Damaged => &self.dropped_damaged,
            Cause::Rejected => &self.rejected,
        }
    }

    /// Counts `n` events lost (or kept in memory) for `cause`, and logs a warning naming
    /// `detail` and the running total unless this cause logged one within `LOG_EVERY`.
    pub fn lose(&self, cause: Cause, n: u64, detail: &dyn std::fmt::Display) {
        let total = self.counter(cause).fetch_add(n, Ordering::Relaxed) + n;
        if self.limits[cause as usize].allow(LOG_EVERY) {
            tracing::warn!(error = %detail, total, "{}", cause.message());
        }
    }

    /// Every counter by its name on `/metrics` (outcome) and `/stats`.
    pub fn counters(&self) -> [(&'static str, u64); 12] {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("queued", n(&self.queued)),
            ("folded", n(&self.folded)),
            ("aggregate_flushed_early", n(&self.aggregate_flushed_early)),
            ("sent", n(&self.sent)),
            ("duplicate", n(&self.duplicates)),
            ("spooled", n(&self.spooled)),
            ("replayed", n(&self.replayed)),
            ("dropped_queue", n(&self.dropped_queue)),
            ("dropped_spool", n(&self.dropped_spool)),
            ("dropped_damaged", n(&self.dropped_damaged)),
            ("rejected", n(&self.rejected)),
            ("spool_write_failed", n(&self.spool_write_failed)),
        ]
    }
}

/// What a block or warn decision left for a later report.
#[derive(Debug)]
struct Ticket {
    client: IpAddr,
    event: Event,
    reports: AtomicU32,
}

/// The proxy's feedback sender. Share it in an `Arc`.
pub struct Feedback {
    spool: Arc<Spool>,
    /// Events the spool could not take, for the sender (bounded by `queue_events`).
    memory: mpsc::Sender<Vec<u8>>,
    rx: std::sync::Mutex<Option<mpsc::Receiver<Vec<u8>>>>,
    /// The counters.
    pub stats: Arc<FeedbackStats>,
    proxy_id: Arc<str>,
    key: [u8; 32],
    tickets: moka::sync::Cache<String, Arc<Ticket>>,
    stop: CancellationToken,
    tasks: tokio_util::task::TaskTracker,
    config: FeedbackConfig,
    /// With `feedback.aggregate_secs` above 0: the current interval's aggregates.
    aggregator: Option<Arc<Aggregator>>,
    /// Set by [`Feedback::close`]: later events are spooled on their own.
    closed: AtomicBool,
}

impl std::fmt::Debug for Feedback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feedback")
            .field("proxy_id", &self.proxy_id)
            .finish_non_exhaustive()
    }
}

/// Reads `dir/name`, or creates it with `make()` (mode 0600), through `dir/name.tmp` renamed
/// into place. A `name.tmp` found at start is what a start that died before the rename left
/// (a spool directory belongs to one proxy, so no one else is writing it): it is removed,
/// and so is the temporary file of a write that fails.
fn persistent(dir: &Path, name: &str, make: impl FnOnce() -> String) -> anyhow::Result<String> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    match std::fs::remove_file(&tmp) {
        Ok(()) => tracing::info!(file = %tmp.display(), "removed a leftover temporary file"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(anyhow::Error::new(e).context(format!("{}", tmp.display()))),
    }
    match crate::fsread::read_to_string(&path, crate::fsread::STATE_MAX) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e.into()),
    }
    let value = make();
    let write = || -> std::io::Result<()> {
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
        std::fs::rename(&tmp, &path)
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(anyhow::Error::new(e).context(format!("{}", path.display())));
    }
    Ok(value)
}

fn random_hex(bytes: usize) -> String {
    use rand::RngCore as _;
    let mut raw = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut raw);
    hex::encode(raw)
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| {
            !h.is_empty() && h.len() <= events::MAX_IDENT && h.bytes().all(|b| b.is_ascii_graphic())
        })
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
        hex::decode_to_slice(&key_hex, &mut key).map_err(|_| {
            anyhow::anyhow!(
                "feedback.spool_dir {}: anonymize-key is not 64 hex digits (remove it to make a \
                 new key; pseudonyms made with the old one then change)",
                dir.display()
            )
        })?;
        let spool = Spool::open(dir, config.spool_max_bytes)
            .with_context(|| format!("feedback.spool_dir {}", dir.display()))?;
        if !spool.is_empty() {
            tracing::info!(
                events = spool.events(),
                bytes = spool.bytes(),
                "feedback spool holds undelivered events; they are sent first"
            );
        }
        let (memory, rx) = mpsc::channel(config.queue_events);
        Ok(Feedback {
            spool: Arc::new(spool),
            memory,
            rx: std::sync::Mutex::new(Some(rx)),
            stats: Arc::new(FeedbackStats::default()),
            proxy_id: proxy_id.into(),
            key,
            tickets: moka::sync::Cache::builder()
                .max_capacity(TICKETS)
                .time_to_live(Duration::from_secs(86_400))
                .build(),
            stop: CancellationToken::new(),
            tasks: tokio_util::task::TaskTracker::new(),
            config: config.clone(),
            aggregator: config.aggregate.map(|_| {
                Arc::new(Aggregator::new(
                    config.aggregate_kinds.clone(),
                    config.aggregate_max_hosts,
                ))
            }),
            closed: AtomicBool::new(false),
        })
    }

    /// This proxy's id in events.
    pub fn proxy_id(&self) -> &str {
        &self.proxy_id
    }

    /// Starts the sender over `reputation`'s sources, and the spool's fsync timer (on the
    /// current runtime). What the spool holds from an earlier run goes first.
    ///
    /// # Errors
    /// The sender runs already.
    pub fn start(self: &Arc<Self>, reputation: Arc<Reputation>) -> anyhow::Result<()> {
        let Some(rx) = self
            .rx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        else {
            anyhow::bail!("the feedback sender is already running");
        };
        let sender = send::Sender::new(
            reputation,
            self.spool.clone(),
            rx,
            self.stats.clone(),
            self.config.clone(),
        );
        self.tasks.spawn(sender.run(self.stop.clone()));
        self.tasks.spawn(sync_spool(
            self.spool.clone(),
            self.config.spool_fsync,
            self.stop.clone(),
        ));
        if let Some(every) = self.config.aggregate {
            self.tasks
                .spawn(flush_every(Arc::downgrade(self), every, self.stop.clone()));
        }
        Ok(())
    }

    /// Spools every aggregate held, each as one event (the interval's end).
    pub fn flush_aggregates(&self) {
        if let Some(a) = &self.aggregator {
            for e in a.take() {
                self.spool_event(e);
            }
        }
    }

    /// Stops the sender: what is unsent is delivered within `feedback.shutdown_flush_ms`, the
    /// rest stays in the spool, which is fsynced. Returns when both tasks have finished (or a
    /// little after the deadline).
    pub async fn close(&self) {
        // The interval's aggregates first, so that the sender's last flush includes them;
        // events emitted from now on are spooled on their own.
        self.closed.store(true, Ordering::Relaxed);
        self.flush_aggregates();
        self.stop.cancel();
        self.tasks.close();
        let limit = self.config.shutdown_flush + Duration::from_secs(5);
        if tokio::time::timeout(limit, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("feedback sender did not finish in time");
        }
    }

    /// Events waiting in the memory queue now (only while the spool cannot be written).
    pub fn queue_len(&self) -> usize {
        self.memory.max_capacity() - self.memory.capacity()
    }

    /// Events in the spool not yet acknowledged by a server.
    pub fn spool_events(&self) -> u64 {
        self.spool.events()
    }

    /// Bytes of those events.
    pub fn spool_bytes(&self) -> u64 {
        self.spool.bytes()
    }

    /// Emits an event: folds it into its interval's aggregate when its kind is aggregated
    /// ([`aggregate`]), or else spools it: fits it to the schema's limits and appends it to
    /// the spool before it returns (see `spool_event`).
    pub fn emit(&self, event: Event) {
        let Some(a) = self
            .aggregator
            .as_ref()
            .filter(|_| !self.closed.load(Ordering::Relaxed))
        else {
            return self.spool_event(event);
        };
        if !a.folds(&event) {
            return self.spool_event(event);
        }
        self.stats.folded.fetch_add(1, Ordering::Relaxed);
        if let Some(events) = a.fold(event) {
            self.stats
                .aggregate_flushed_early
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                events = events.len(),
                "feedback aggregates flushed early: feedback.aggregate_max_hosts reached"
            );
            for e in events {
                self.spool_event(e);
            }
        }
    }

    /// (kind, host) pairs folded in the current interval.
    pub fn aggregates_held(&self) -> usize {
        self.aggregator.as_ref().map_or(0, |a| a.held())
    }

    /// Spools an event: fits it to the schema's limits and appends it to the spool, so that
    /// it survives a crash of the proxy from now on. Never waits for the server. An event
    /// that still does not validate is refused, a full spool drops it, and a spool that
    /// cannot be written hands it to the memory queue instead (dropped when that is full);
    /// each counted and logged per [`Cause`].
    fn spool_event(&self, mut event: Event) {
        event.fit();
        if let Err(e) = event.validate() {
            let id = &event.id;
            self.stats.lose(
                Cause::Rejected,
                1,
                &format_args!("event {id} not sent: {e}"),
            );
            return;
        }
        let mut line = Vec::with_capacity(512);
        if let Err(e) = serde_json::to_writer(&mut line, &event) {
            self.stats.lose(Cause::Rejected, 1, &e);
            return;
        }
        line.push(b'\n');
        match self.spool.append(&line) {
            Ok(()) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
                self.stats.spooled.fetch_add(1, Ordering::Relaxed);
            }
            Err(e @ SpoolError::Full { .. }) => self.stats.lose(Cause::SpoolFull, 1, &e),
            Err(e @ SpoolError::Io(_)) => {
                self.stats.lose(Cause::SpoolWriteFailed, 1, &e);
                line.pop();
                match self.memory.try_send(line) {
                    Ok(()) => {
                        self.stats.queued.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => self.stats.lose(
                        Cause::QueueFull,
                        1,
                        &format_args!("{} events waiting", self.config.queue_events),
                    ),
                }
            }
        }
    }

    /// A new event of `kind` with `id` (the request's id, which is the ticket on its page),
    /// now, from this proxy.
    pub fn event(&self, id: String, kind: Kind) -> Event {
        Event::new(
            id,
            kind,
            crate::clock::unix_millis(),
            self.proxy_id.to_string(),
        )
    }

    /// `value`, or `anon:` and a keyed hash of it (stable for this proxy) when `anonymize`.
    pub fn pseudonym(&self, value: &str, anonymize: bool) -> String {
        if !anonymize {
            return value.to_owned();
        }
        events::pseudonym(&self.key, value)
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

/// Spools `fb`'s aggregates every `every` until `stop` (the last ones are spooled by
/// [`Feedback::close`]).
async fn flush_every(fb: std::sync::Weak<Feedback>, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match fb.upgrade() {
            Some(fb) => fb.flush_aggregates(),
            None => return,
        }
    }
}

/// Fsyncs the spool every `every` until `stop`, and once more then.
async fn sync_spool(spool: Arc<Spool>, every: Duration, stop: CancellationToken) {
    static FAILED: crate::telemetry::LogLimiter = crate::telemetry::LogLimiter::new();
    loop {
        let stopped = tokio::select! {
            _ = stop.cancelled() => true,
            _ = tokio::time::sleep(every) => false,
        };
        let s = spool.clone();
        match tokio::task::spawn_blocking(move || s.sync()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) if FAILED.allow(LOG_EVERY) => {
                tracing::warn!(error = %e, "feedback spool fsync failed: a power loss could lose events");
            }
            _ => {}
        }
        if stopped {
            return;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::accesslog::RequestId;

    /// A fresh event id for events made outside any request.
    pub(crate) fn test_id() -> String {
        random_hex(8)
    }

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
            spool_fsync: Duration::from_secs(1),
            shutdown_flush: Duration::from_secs(1),
            aggregate: None,
            aggregate_kinds: vec![Kind::Untested],
            aggregate_max_hosts: 10,
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
    fn a_damaged_anonymize_key_is_refused_not_zeroed() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["+1".repeat(32), "ab".repeat(31), "zz".repeat(32)] {
            std::fs::write(dir.path().join("anonymize-key"), &bad).unwrap();
            let err = Feedback::new(&config(dir.path()))
                .expect_err(&bad)
                .to_string();
            assert!(err.contains("anonymize-key is not 64 hex digits"), "{err}");
        }
        std::fs::write(dir.path().join("anonymize-key"), "AB".repeat(32)).unwrap();
        Feedback::new(&config(dir.path())).unwrap();
    }

    #[test]
    fn feedback_emit_appends_to_the_spool_before_it_returns() {
        let dir = tempfile::tempdir().unwrap();
        let f = Feedback::new(&config(dir.path())).unwrap();
        for _ in 0..4 {
            f.emit(f.event(test_id(), Kind::Untested));
        }
        // Longer than the server takes: cut to fit, spooled all the same.
        let mut long = f.event(test_id(), Kind::Untested);
        long.url = Some(format!("http://a.test/{}", "x".repeat(10_000)));
        f.emit(long);
        assert_eq!(f.stats.spooled.load(Ordering::Relaxed), 5);
        // No sender ran and nothing was closed: a process that died now leaves them all.
        drop(f);
        let again = Feedback::new(&config(dir.path())).unwrap();
        assert_eq!(again.spool_events(), 5);
        let chunk = again.spool.read(10, 1 << 20).unwrap();
        let last: Event = serde_json::from_slice(chunk.text(&chunk.lines[4])).unwrap();
        last.validate().unwrap();
        assert!(last.url.unwrap().contains(events::CUT_MARKER));
    }

    #[test]
    fn feedback_losses_are_counted_per_cause() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        let f = Feedback::new(&FeedbackConfig {
            spool_max_bytes: 1000,
            ..config(&spool)
        })
        .unwrap();
        // Refused before sending: an id the server would refuse.
        let mut bad = f.event(test_id(), Kind::Blocked);
        bad.id = String::new();
        f.emit(bad);
        assert_eq!(f.stats.rejected.load(Ordering::Relaxed), 1);
        // The spool full.
        for _ in 0..10 {
            f.emit(f.event(test_id(), Kind::Untested));
        }
        let spooled = f.stats.spooled.load(Ordering::Relaxed);
        assert!(spooled > 0 && f.spool_bytes() <= 1000);
        assert_eq!(f.stats.dropped_spool.load(Ordering::Relaxed), 10 - spooled);
        // Delivered (the segment is finished and deleted), then the directory is replaced
        // by a file: new segments cannot be created. Events go to memory, then are dropped.
        let chunk = f.spool.read(100, 1 << 20).unwrap();
        let (to, n) = chunk.prefix_end(chunk.lines.len()).unwrap();
        f.spool.advance(to, n).unwrap();
        std::fs::rename(&spool, dir.path().join("moved")).unwrap();
        std::fs::write(&spool, "").unwrap();
        for _ in 0..3 {
            f.emit(f.event(test_id(), Kind::Untested));
        }
        assert_eq!(f.stats.spool_write_failed.load(Ordering::Relaxed), 3);
        assert_eq!(f.queue_len(), 2);
        assert_eq!(f.stats.dropped_queue.load(Ordering::Relaxed), 1);
    }

    fn untested(f: &Feedback, host: &str, client: &str) -> Event {
        let mut e = f.event(test_id(), Kind::Untested);
        e.host = Some(host.into());
        e.client = Some(client.into());
        e
    }

    fn spooled(f: &Feedback) -> Vec<Event> {
        let chunk = f.spool.read(1000, 1 << 20).unwrap();
        chunk
            .lines
            .iter()
            .map(|l| serde_json::from_slice(chunk.text(l)).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn feedback_aggregates_are_spooled_each_interval_and_at_close() {
        let dir = tempfile::tempdir().unwrap();
        let f = Arc::new(
            Feedback::new(&FeedbackConfig {
                aggregate: Some(Duration::from_millis(50)),
                ..config(dir.path())
            })
            .unwrap(),
        );
        let stop = CancellationToken::new();
        let ticker = tokio::spawn(flush_every(
            Arc::downgrade(&f),
            Duration::from_millis(50),
            stop.clone(),
        ));
        for c in ["c1", "c2", "c1"] {
            f.emit(untested(&f, "a.test", c));
        }
        // A block is never folded: in the spool at once.
        f.emit(f.event(test_id(), Kind::Blocked));
        assert_eq!(f.spool_events(), 1);
        assert_eq!(f.aggregates_held(), 1);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while f.spool_events() < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "no flush at the interval"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let events = spooled(&f);
        assert_eq!(events[1].count, 3);
        assert_eq!(events[1].clients, ["c1", "c2"]);
        assert_eq!(f.stats.folded.load(Ordering::Relaxed), 3);
        stop.cancel();
        ticker.await.unwrap();
        // Held at shutdown: spooled by close, before the sender's last flush; after close,
        // events are spooled on their own.
        f.emit(untested(&f, "b.test", "c1"));
        f.emit(untested(&f, "b.test", "c2"));
        assert_eq!(f.spool_events(), 2);
        f.close().await;
        assert_eq!(f.spool_events(), 3);
        assert_eq!(spooled(&f)[2].count, 2);
        f.emit(untested(&f, "b.test", "c3"));
        assert_eq!(f.spool_events(), 4);
        assert_eq!(f.aggregates_held(), 0);
    }

    #[test]
    fn feedback_aggregates_flush_early_at_the_host_cap_and_drop_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let f = Feedback::new(&FeedbackConfig {
            aggregate: Some(Duration::from_secs(3600)),
            aggregate_max_hosts: 3,
            ..config(dir.path())
        })
        .unwrap();
        for i in 0..10 {
            f.emit(untested(&f, &format!("h{i}.test"), "c1"));
            f.emit(untested(&f, &format!("h{i}.test"), "c2"));
        }
        // Hosts 0..3, 3..6 and 6..9 went out early; host 9 is held.
        assert_eq!(f.stats.aggregate_flushed_early.load(Ordering::Relaxed), 3);
        assert_eq!(f.spool_events(), 9);
        assert_eq!(f.aggregates_held(), 1);
        f.flush_aggregates();
        let events = spooled(&f);
        assert_eq!(events.len(), 10);
        assert!(
            events
                .iter()
                .all(|e| e.count == 2 && e.clients == ["c1", "c2"])
        );
        assert_eq!(events.iter().map(|e| e.count).sum::<u64>(), 20);
    }

    #[tokio::test]
    async fn feedback_events_carry_the_request_id() {
        let dir = tempfile::tempdir().unwrap();
        let f = Feedback::new(&config(dir.path())).unwrap();
        let e = f.event(RequestId(0xab).to_string(), Kind::Blocked);
        assert_eq!(e.id, "00000000000000ab");
        assert_eq!(e.proxy, f.proxy_id());
    }
}
