//! The feedback sender: one task that delivers the spool's events to the reputation server
//! and moves the spool's cursor past what the server acknowledged.
//!
//! # Where it sits
//! Started by [`super::Feedback::start`]; off the request path. It waits for appends (or the
//! memory queue), lets a batch gather (`batch_events`, or `batch_interval_ms` after the
//! first event), reads it from the spool on the blocking pool, posts it
//! ([`Reputation::post_events`]) and advances the cursor over the events that got a final
//! answer. While no source answers it tries again every `retry_interval_ms`.
//!
//! # What it costs
//! Per batch: one spool read (up to [`MAX_BATCH_BYTES`]), one JSON body made by joining the
//! spooled lines (no re-encoding), one round trip and one cursor write.
//!
//! # How it fails
//! Every event gets its own answer ([`IngestReply::results`]): accepted or duplicate is
//! delivered, rejected is dropped (counted and logged), and neither holds up the rest. A
//! server that refuses a whole batch with a 4xx (one without per-event results, or a body
//! over its `max_body_bytes`) gets it again in halves until the refused event is alone. An
//! unavailable server leaves the cursor where it is: nothing is lost, and what was delivered
//! before the failure is not sent again.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::spool::{Chunk, Pos, Spool};
use super::{Cause, FeedbackStats, LOG_EVERY};
use crate::api::events::{IngestReply, MAX_BATCH_BYTES, batch_body, batch_ranges};
use crate::config::FeedbackConfig;
use crate::reputation::{PostError, Reputation};
use crate::telemetry::LogLimiter;

/// What became of one event offered to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// No final answer yet (the server was unavailable): offered again later.
    Pending,
    /// Stored (or stored before).
    Taken,
    /// Refused, with the reason: dropped.
    Rejected(String),
}

/// The sender task's state.
pub struct Sender {
    reputation: Arc<Reputation>,
    spool: Arc<Spool>,
    /// Events the spool could not take.
    memory: mpsc::Receiver<Vec<u8>>,
    memory_open: bool,
    /// Taken from `memory`, not yet delivered.
    held: VecDeque<Vec<u8>>,
    stats: Arc<FeedbackStats>,
    config: FeedbackConfig,
    /// Spooled events before this place waited for a server (an earlier run's, or written
    /// while none answered): delivering them counts as a replay.
    late_until: Pos,
    unavailable: LogLimiter,
}

impl Sender {
    /// A sender over `spool` and the memory queue `memory`.
    pub fn new(
        reputation: Arc<Reputation>,
        spool: Arc<Spool>,
        memory: mpsc::Receiver<Vec<u8>>,
        stats: Arc<FeedbackStats>,
        config: FeedbackConfig,
    ) -> Sender {
        Sender {
            late_until: spool.end(),
            reputation,
            spool,
            memory,
            memory_open: true,
            held: VecDeque::new(),
            stats,
            config,
            unavailable: LogLimiter::new(),
        }
    }

    fn pending(&self) -> usize {
        usize::try_from(self.spool.events()).unwrap_or(usize::MAX) + self.held.len()
    }

    /// Delivers until `stop`, then what it can within `shutdown_flush`.
    pub async fn run(mut self, stop: CancellationToken) {
        while self.wait_for_events(&stop).await {
            self.gather(&stop).await;
            let timeout = self.config.send_timeout;
            // A stalled source holds the sender no longer than the shutdown: nothing is
            // advanced until an answer comes, so an interrupted round loses nothing.
            let delivered = tokio::select! {
                ok = self.send_round(timeout) => ok,
                _ = stop.cancelled() => break,
            };
            if !delivered {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(self.config.retry_interval) => {}
                }
            }
        }
        self.shutdown().await;
    }

    /// Waits until there is something to send; false once `stop` is cancelled.
    async fn wait_for_events(&mut self, stop: &CancellationToken) -> bool {
        while self.pending() == 0 {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return false,
                _ = self.spool.appended() => {}
                line = self.memory.recv(), if self.memory_open => match line {
                    Some(l) => self.held.push_back(l),
                    None => self.memory_open = false,
                },
            }
        }
        !stop.is_cancelled()
    }

    /// Lets a batch fill up: until `batch_events` wait, or `batch_interval` has passed.
    async fn gather(&mut self, stop: &CancellationToken) {
        let deadline = tokio::time::Instant::now() + self.config.batch_interval;
        while self.pending() < self.config.batch_events {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(deadline) => return,
                _ = self.spool.appended() => {}
                line = self.memory.recv(), if self.memory_open => match line {
                    Some(l) => self.held.push_back(l),
                    None => self.memory_open = false,
                },
            }
        }
    }

    /// Sends one batch: from the spool, or else from memory. False when no source took it
    /// (or the spool could not be read): try again after `retry_interval`.
    async fn send_round(&mut self, timeout: Duration) -> bool {
        if !self.spool.is_empty() {
            return self.send_spooled(timeout).await;
        }
        while self.held.len() < self.config.batch_events {
            match self.memory.try_recv() {
                Ok(l) => self.held.push_back(l),
                Err(_) => break,
            }
        }
        let n = self.held.len().min(self.config.batch_events);
        let lines: Vec<&[u8]> = self.held.iter().take(n).map(Vec::as_slice).collect();
        let outcomes = self.deliver(&lines, timeout).await;
        for (o, line) in outcomes.iter().zip(&lines) {
            self.record(o, line, false);
        }
        drop(lines);
        self.note_failure(&outcomes);
        let done = outcomes
            .iter()
            .take_while(|o| **o != Outcome::Pending)
            .count();
        self.held.drain(..done);
        done == n
    }

    /// Sends the next batch from the spool and advances the cursor over the events that got a
    /// final answer (and damaged lines, which are skipped).
    async fn send_spooled(&mut self, timeout: Duration) -> bool {
        static UNREADABLE: LogLimiter = LogLimiter::new();
        let spool = self.spool.clone();
        let max = self.config.batch_events;
        let chunk =
            match tokio::task::spawn_blocking(move || spool.read(max, MAX_BATCH_BYTES)).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    if UNREADABLE.allow(LOG_EVERY) {
                        tracing::warn!(error = %e, "cannot read the feedback spool; trying again");
                    }
                    return false;
                }
                Err(_) => return false,
            };
        let sendable: Vec<&[u8]> = chunk
            .lines
            .iter()
            .filter(|l| !l.damaged)
            .map(|l| chunk.text(l))
            .collect();
        let outcomes = self.deliver(&sendable, timeout).await;
        drop(sendable);
        self.note_failure(&outcomes);
        let (done, all) = self.account(&chunk, &outcomes);
        if let Some((to, events)) = chunk.prefix_end(done) {
            static NO_CURSOR: LogLimiter = LogLimiter::new();
            let spool = self.spool.clone();
            match tokio::task::spawn_blocking(move || spool.advance(to, events)).await {
                Ok(Ok(())) | Err(_) => {}
                Ok(Err(e)) if NO_CURSOR.allow(LOG_EVERY) => tracing::warn!(
                    error = %e,
                    "cannot write the feedback spool's cursor: delivered events may be sent again after a restart"
                ),
                Ok(Err(_)) => {}
            }
        }
        all
    }

    /// Counts the outcomes of `chunk`'s sendable lines and its damaged ones. Returns how many
    /// lines from the start are finished, and whether all are.
    fn account(&self, chunk: &Chunk, outcomes: &[Outcome]) -> (usize, bool) {
        let mut outcomes = outcomes.iter();
        let mut done = 0;
        for line in &chunk.lines {
            if line.damaged {
                // Before the first pending event: passed for good.
                self.stats.lose(
                    Cause::Damaged,
                    1,
                    &format_args!("spool line ending at {:?}", line.end),
                );
            } else {
                let o = outcomes.next().unwrap_or(&Outcome::Pending);
                self.record(o, chunk.text(line), line.end <= self.late_until);
                if *o == Outcome::Pending {
                    break;
                }
            }
            done += 1;
        }
        (done, done == chunk.lines.len())
    }

    /// After a round that left events pending (no source answered): everything spooled so
    /// far has waited, and counts as replayed when it is delivered.
    fn note_failure(&mut self, outcomes: &[Outcome]) {
        if outcomes.contains(&Outcome::Pending) {
            self.late_until = self.late_until.max(self.spool.end());
        }
    }

    /// Counts one event's outcome.
    fn record(&self, outcome: &Outcome, line: &[u8], late: bool) {
        match outcome {
            Outcome::Pending => {}
            Outcome::Taken => {
                self.stats.sent.fetch_add(1, Relaxed);
                if late {
                    self.stats.replayed.fetch_add(1, Relaxed);
                }
            }
            Outcome::Rejected(why) => {
                let id = serde_json::from_slice::<serde_json::Value>(line)
                    .ok()
                    .and_then(|v| v.get("id")?.as_str().map(str::to_owned))
                    .unwrap_or_default();
                self.stats
                    .lose(Cause::Rejected, 1, &format_args!("event {id}: {why}"));
            }
        }
    }

    /// Offers `lines` (each one event's JSON) in batches of at most [`MAX_BATCH_BYTES`],
    /// splitting a batch the server refuses whole until the refused event is alone. Stops at
    /// the first batch no source takes: that one and the rest stay [`Outcome::Pending`].
    async fn deliver(&self, lines: &[&[u8]], timeout: Duration) -> Vec<Outcome> {
        let mut out = vec![Outcome::Pending; lines.len()];
        let mut todo: VecDeque<std::ops::Range<usize>> = batch_ranges(lines).into();
        while let Some(r) = todo.pop_front() {
            let body = Bytes::from(batch_body(&lines[r.clone()]));
            match self.reputation.post_events(body, timeout).await {
                Ok((v, _)) => self.apply(v, r, &mut out),
                Err(PostError::Rejected(m)) if r.len() == 1 => out[r.start] = Outcome::Rejected(m),
                Err(PostError::Rejected(_)) => {
                    let mid = r.start + r.len() / 2;
                    todo.push_front(mid..r.end);
                    todo.push_front(r.start..mid);
                }
                Err(e @ PostError::Unavailable(_)) => {
                    if self.unavailable.allow(LOG_EVERY) {
                        tracing::warn!(error = %e, spool_events = self.spool.events(),
                            "feedback not delivered; kept in the spool and offered again");
                    }
                    break;
                }
            }
        }
        out
    }

    /// Applies a server's answer to the events of `r`: one result each, or (a server without
    /// per-event results) every event taken.
    fn apply(&self, answer: serde_json::Value, r: std::ops::Range<usize>, out: &mut [Outcome]) {
        let reply: IngestReply = serde_json::from_value(answer).unwrap_or_default();
        self.stats.duplicates.fetch_add(reply.duplicate, Relaxed);
        for (slot, refusal) in out[r.clone()].iter_mut().zip(reply.refusals(r.len())) {
            *slot = match refusal {
                Some(why) => Outcome::Rejected(why),
                None => Outcome::Taken,
            };
        }
    }

    /// After `stop`: delivers what it can within `shutdown_flush`; events held in memory go to
    /// the spool if it takes them now (else they are lost, counted); the spool is fsynced.
    async fn shutdown(mut self) {
        let deadline = Instant::now() + self.config.shutdown_flush;
        self.memory.close();
        while let Ok(l) = self.memory.try_recv() {
            self.held.push_back(l);
        }
        while self.pending() > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            let round = self.send_round(self.config.send_timeout.min(left));
            if left.is_zero() || !tokio::time::timeout(left, round).await.unwrap_or(false) {
                break;
            }
        }
        for mut line in std::mem::take(&mut self.held) {
            line.push(b'\n');
            match self.spool.append(&line) {
                Ok(()) => {
                    self.stats.spooled.fetch_add(1, Relaxed);
                }
                Err(e) => self.stats.lose(
                    Cause::QueueFull,
                    1,
                    &format_args!("held in memory at shutdown, and the spool refused it: {e}"),
                ),
            }
        }
        if !self.spool.is_empty() {
            tracing::info!(
                events = self.spool.events(),
                "feedback events left in the spool; they are sent at the next start"
            );
        }
    }
}
