//! The access log: one line per request and per tunnel, JSON lines or Squid's native format.
//!
//! Where it sits: the proxy builds an [`AccessRecord`] when a response body finishes (or is
//! dropped) and when a tunnel closes, and calls [`AccessLog::record`]. That formats the line
//! on the calling task and appends it to a bounded in-memory buffer; a dedicated writer
//! thread wakes every 100 ms (or once 64 KiB are waiting), swaps the buffer out and writes it
//! in one call, so neither disk latency nor a thread wake-up per line reaches the request
//! path. Lines reach the file within about 100 ms; shutdown flushes them.
//!
//! Destinations: a file (appended to), standard output, or syslog ([`crate::syslog`], RFC
//! 5424, one datagram per line). [`AccessLog::reopen`] (SIGUSR1 after a rotation, and every
//! reload) has the writer close its destination and open it again, or switch to a new one,
//! in order: lines recorded before the call go to the old file, lines after it to the new.
//!
//! Cost: one small `String` and a short mutex-protected append per request. Failure: when
//! `access_log.buffer_bytes` are waiting (the disk is slower than the traffic, or a reader of
//! standard output stopped reading) further lines are dropped and counted
//! ([`AccessLog::dropped`]); when the destination refuses a write (a full disk, a closed
//! standard output) that batch's lines are lost and counted ([`AccessLog::write_failed`]).
//! Each cause logs a warning with its totals, at most every ten seconds per cause. Neither
//! ever fails or delays a request, and a writer stuck on a stream no one reads does not keep
//! the process from exiting: closing the log waits [`CLOSE_WAIT`] for it at most.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use crate::config::{AccessLogConfig, AccessLogFormat};

/// A process-unique request id, shown as 16 hex digits. The high half is random per process
/// start, so ids from different runs do not collide in a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId(pub u64);

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Hands out [`RequestId`]s.
#[derive(Debug)]
pub struct RequestIds(AtomicU64);

impl RequestIds {
    pub fn new() -> Self {
        Self(AtomicU64::new(u64::from(rand::random::<u32>()) << 32))
    }
    pub fn next(&self) -> RequestId {
        RequestId(self.0.fetch_add(1, Ordering::Relaxed))
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

/// What kind of exchange a line describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// A request forwarded upstream (or refused before it got there).
    Http,
    /// A CONNECT tunnel, logged when it closes.
    Tunnel,
    /// A WebSocket upgrade relayed through the proxy, logged when it closes.
    Websocket,
    /// A CONNECT tunnel that was intercepted (its inner requests have lines of their own),
    /// logged when it closes.
    Intercepted,
    /// A request for the proxy's own pages.
    Local,
    /// A request head refused before it was parsed whole (malformed, too large, not finished
    /// in time); `error` says which.
    Rejected,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Http => "http",
            RecordKind::Tunnel => "tunnel",
            RecordKind::Websocket => "websocket",
            RecordKind::Intercepted => "intercepted",
            RecordKind::Local => "local",
            RecordKind::Rejected => "rejected",
        }
    }
}

/// What filtering decided for a request or tunnel: logged as the `decision` object of a
/// JSON line (the Squid format has no room for it; its 11th field, the request id, joins
/// the two). Built once per filtered request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    /// The policy action: `allow`, `monitor`, `warn`, `block` (a warned request let through
    /// by a "continue" logs `continue`).
    pub action: &'static str,
    /// Why (the policy's reason names: `risk`, `blocked`, `untested`, ...).
    pub reason: &'static str,
    pub rule: Option<Box<str>>,
    /// The reputation cache: `hit`, `miss`, `stale` or `unavailable`; `none` when no lookup
    /// was made (a list or rule decided).
    pub cache: &'static str,
    /// The reputation source that answered.
    pub source: Option<std::sync::Arc<str>>,
    pub risk: Option<&'static str>,
    pub score: Option<u8>,
}

impl Decided {
    fn push_json(&self, s: &mut String) {
        s.push_str("{\"action\":\"");
        s.push_str(self.action);
        s.push_str("\",\"reason\":\"");
        s.push_str(self.reason);
        s.push_str("\",\"rule\":");
        push_json_opt(s, self.rule.as_deref());
        s.push_str(",\"cache\":\"");
        s.push_str(self.cache);
        s.push_str("\",\"source\":");
        push_json_opt(s, self.source.as_deref());
        s.push_str(",\"risk\":");
        push_json_opt(s, self.risk);
        s.push_str(",\"score\":");
        match self.score {
            Some(n) => {
                let _ = write!(s, "{n}");
            }
            None => s.push_str("null"),
        }
        s.push('}');
    }
}

/// One access log line, borrowed from the request's state.
#[derive(Debug, Clone)]
pub struct AccessRecord<'a> {
    pub start: SystemTime,
    pub duration: Duration,
    pub id: RequestId,
    pub client: SocketAddr,
    pub user: Option<&'a str>,
    pub method: &'a str,
    /// The request URL (absolute), or `host:port` for a tunnel.
    pub url: &'a str,
    pub status: u16,
    /// Body bytes sent to the client (for a tunnel: all bytes sent to the client).
    pub bytes_out: u64,
    /// Bytes received from the client, where counted (tunnels and WebSockets).
    pub bytes_in: Option<u64>,
    pub kind: RecordKind,
    /// The upstream address actually connected to, when there was one.
    pub upstream: Option<SocketAddr>,
    /// The RFC 9209 error type when the proxy itself answered with an error; for a
    /// [`RecordKind::Rejected`] head, what was wrong with it (`invalid_header`,
    /// `header_too_large`, `header_timeout`, ...).
    pub error: Option<&'a str>,
    pub content_type: Option<&'a str>,
    /// The filtering decision, when filtering is on and got as far as deciding.
    pub decision: Option<&'a Decided>,
}

impl AccessRecord<'_> {
    /// Formats the record as one line (with the trailing newline) in `format`.
    pub fn to_line(&self, format: AccessLogFormat) -> String {
        match format {
            AccessLogFormat::Json => self.json_line(),
            AccessLogFormat::Squid => self.squid_line(),
        }
    }

    /// One JSON object. Written by hand (field order fixed, strings escaped per RFC 8259):
    /// serde's derive with a flattened struct cost more than the rest of the request path.
    fn json_line(&self) -> String {
        let mut s = String::with_capacity(320 + self.url.len());
        s.push_str("{\"ts\":\"");
        push_rfc3339(&mut s, self.start);
        let micros = self.duration.as_micros();
        let _ = write!(
            s,
            "\",\"duration_ms\":{}.{:03},\"id\":\"{}\",\"client\":\"{}\",\"user\":",
            micros / 1000,
            micros % 1000,
            self.id,
            self.client
        );
        push_json_opt(&mut s, self.user);
        s.push_str(",\"method\":");
        push_json_str(&mut s, self.method);
        s.push_str(",\"url\":");
        push_json_str(&mut s, self.url);
        let _ = write!(
            s,
            ",\"status\":{},\"bytes_out\":{},\"bytes_in\":",
            self.status, self.bytes_out
        );
        match self.bytes_in {
            Some(n) => {
                let _ = write!(s, "{n}");
            }
            None => s.push_str("null"),
        }
        s.push_str(",\"kind\":\"");
        s.push_str(self.kind.as_str());
        s.push_str("\",\"upstream\":");
        match self.upstream {
            Some(a) => {
                let _ = write!(s, "\"{a}\"");
            }
            None => s.push_str("null"),
        }
        s.push_str(",\"error\":");
        push_json_opt(&mut s, self.error);
        s.push_str(",\"content_type\":");
        push_json_opt(&mut s, self.content_type);
        s.push_str(",\"decision\":");
        match self.decision {
            Some(d) => d.push_json(&mut s),
            None => s.push_str("null"),
        }
        s.push_str("}\n");
        s
    }

    /// Squid's result code for this line: what the policy decided comes first (a block is
    /// `TCP_DENIED`, a warn page `TCP_DENIED_WARN`, also for a CONNECT intercepted only to
    /// show that page, which was answered `200`), then the status and the kind.
    fn squid_code(&self) -> &'static str {
        match (self.kind, self.status, self.decision.map(|d| d.action)) {
            (_, _, Some("block")) => "TCP_DENIED",
            (_, _, Some("warn")) => "TCP_DENIED_WARN",
            (RecordKind::Tunnel, 200, _) => "TCP_TUNNEL",
            (_, 403 | 407, _) => "TCP_DENIED",
            (RecordKind::Local, _, _) => "NONE_NONE",
            _ if self.error.is_some() => "NONE_NONE",
            _ => "TCP_MISS",
        }
    }

    /// Squid's native format:
    /// `time elapsed client code/status bytes method URL user hierarchy/peer type`, plus the
    /// request id as an 11th field.
    fn squid_line(&self) -> String {
        let since = crate::clock::since_epoch(self.start);
        let code = self.squid_code();
        let mut s = String::with_capacity(160);
        let _ = write!(
            s,
            "{}.{:03} {:>6} {} {}/{:03} {} {} {} {} ",
            since.as_secs(),
            since.subsec_millis(),
            self.duration.as_millis(),
            self.client.ip(),
            code,
            self.status,
            self.bytes_out,
            self.method,
            squid_field(self.url),
            self.user.map(squid_field).unwrap_or("-".into()),
        );
        match self.upstream {
            Some(a) => {
                let _ = write!(s, "HIER_DIRECT/{}", a.ip());
            }
            None => s.push_str("HIER_NONE/-"),
        }
        let _ = writeln!(
            s,
            " {} {}",
            self.content_type.map(squid_field).unwrap_or("-".into()),
            self.id
        );
        s
    }
}

/// `2026-11-28T18:52:50.294Z` (UTC, milliseconds, truncated).
fn push_rfc3339(s: &mut String, t: SystemTime) {
    let t = jiff::Timestamp::try_from(t)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .max(jiff::Timestamp::UNIX_EPOCH);
    let _ = write!(s, "{t:.3}");
}

/// A JSON string literal (RFC 8259 escaping).
fn push_json_str(s: &mut String, v: &str) {
    s.push('"');
    let mut start = 0;
    for (i, b) in v.bytes().enumerate() {
        let esc = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f | 0x7f => "",
            _ => continue,
        };
        s.push_str(&v[start..i]);
        if esc.is_empty() {
            let _ = write!(s, "\\u{b:04x}");
        } else {
            s.push_str(esc);
        }
        start = i + 1;
    }
    s.push_str(&v[start..]);
    s.push('"');
}

fn push_json_opt(s: &mut String, v: Option<&str>) {
    match v {
        Some(v) => push_json_str(s, v),
        None => s.push_str("null"),
    }
}

/// What a Squid field percent-encodes besides non-ASCII bytes: controls and the space that
/// separates fields, so every byte written is a visible character.
const SQUID_ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b' ');

/// Squid fields are separated by spaces: escape anything that is not a visible character
/// (`-` for an empty field).
fn squid_field(v: &str) -> std::borrow::Cow<'_, str> {
    if v.is_empty() {
        return "-".into();
    }
    percent_encoding::utf8_percent_encode(v, SQUID_ESCAPED).into()
}

/// Where the lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Stdout,
    /// A file, appended to (created when missing).
    File(PathBuf),
    /// Syslog messages (RFC 5424), one per line.
    Syslog(crate::syslog::Settings),
}

impl Destination {
    /// The destination `cfg` names.
    pub fn of(cfg: &AccessLogConfig) -> Self {
        match (&cfg.syslog, &cfg.path) {
            (Some(s), _) => Destination::Syslog(s.clone()),
            (None, Some(p)) => Destination::File(p.clone()),
            (None, None) => Destination::Stdout,
        }
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Stdout => f.write_str("standard output"),
            Destination::File(p) => write!(f, "{}", p.display()),
            Destination::Syslog(s) => write!(f, "syslog {}", s.target),
        }
    }
}

/// The writer thread's open destination.
enum Sink {
    Stream(Box<dyn std::io::Write + Send>),
    Syslog(crate::syslog::Sender),
}

impl Sink {
    fn open(d: &Destination) -> std::io::Result<Self> {
        Ok(match d {
            Destination::Stdout => Sink::Stream(Box::new(std::io::stdout())),
            Destination::File(p) => Sink::Stream(Box::new(open_append(p)?)),
            Destination::Syslog(s) => Sink::Syslog(crate::syslog::Sender::new(s).map_err(|e| {
                std::io::Error::new(e.kind(), format!("access log to syslog {}: {e}", s.target))
            })?),
        })
    }

    /// Writes whole lines; on failure, the error and how many lines were lost.
    fn write_lines(&mut self, batch: &[u8]) -> Result<(), (std::io::Error, u64)> {
        match self {
            Sink::Stream(out) => out
                .write_all(batch)
                .and_then(|()| out.flush())
                .map_err(|e| {
                    let lines = batch.iter().filter(|&&b| b == b'\n').count() as u64;
                    (e, lines)
                }),
            Sink::Syslog(s) => {
                let (mut lost, mut first) = (0u64, None);
                for line in batch.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                    if let Err(e) = s.send(line) {
                        lost += 1;
                        first.get_or_insert(e);
                    }
                }
                first.map_or(Ok(()), |e| Err((e, lost)))
            }
        }
    }
}

/// A reopen asked for and not yet done.
#[derive(Debug)]
struct Reopen {
    /// Bytes of the buffer recorded before it was asked for: they go to the old destination.
    at: usize,
    /// The new destination; `None`: the same one again (a rotated file is created anew).
    to: Option<Destination>,
}

/// Lines waiting for the writer thread, and flush bookkeeping.
#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    flush_requested: u64,
    flushed: u64,
    closed: bool,
    /// The writer thread has ended.
    exited: bool,
    reopen: Option<Reopen>,
    /// The format of the lines in `buf` from now on (see [`AccessLog::reopen`]).
    format: AccessLogFormat,
}

struct Shared {
    pending: Mutex<Pending>,
    /// `pending.format`, readable without the lock (0 JSON, 1 Squid).
    format: std::sync::atomic::AtomicU8,
    /// Wakes the writer (enough bytes waiting, a flush request, a reopen, or close).
    wake: Condvar,
    /// Wakes flush callers once their lines are written.
    done: Condvar,
    /// Lines refused because `max_bytes` were waiting.
    dropped: AtomicU64,
    /// Lines lost because the destination refused a write.
    write_failed: AtomicU64,
    /// Reopens done (whether the new destination opened or not).
    reopens: AtomicU64,
    max_bytes: usize,
}

fn format_code(f: AccessLogFormat) -> u8 {
    match f {
        AccessLogFormat::Json => 0,
        AccessLogFormat::Squid => 1,
    }
}

impl Shared {
    fn format(&self) -> AccessLogFormat {
        match self.format.load(Ordering::Relaxed) {
            0 => AccessLogFormat::Json,
            _ => AccessLogFormat::Squid,
        }
    }
}

/// The writer wakes at least this often when lines are waiting.
const WRITE_INTERVAL: Duration = Duration::from_millis(100);
/// ...or as soon as this many bytes are waiting.
const WRITE_BATCH: usize = 64 * 1024;
/// Closing the log waits this long at most for the writer to write what is buffered.
pub const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Handle to the access log; cheap to share in an `Arc`.
pub struct AccessLog {
    shared: Option<Arc<Shared>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("format", &self.shared.as_ref().map(|s| s.format()))
            .field("enabled", &self.shared.is_some())
            .finish()
    }
}

impl AccessLog {
    /// A log that writes nothing.
    pub fn disabled() -> Self {
        Self {
            shared: None,
            thread: Mutex::new(None),
        }
    }

    /// Opens the configured destination and starts the writer thread.
    ///
    /// # Errors
    /// When the file cannot be opened for appending (or, with syslog over UDP, no socket).
    pub fn open(cfg: &AccessLogConfig) -> std::io::Result<Self> {
        if !cfg.enabled {
            return Ok(Self::disabled());
        }
        let to = Destination::of(cfg);
        let sink = Sink::open(&to)?;
        Ok(Self::start(sink, Some(to), cfg.format, cfg.buffer_bytes))
    }

    /// Starts a writer thread over any `Write` (tests use a file); at most `max_bytes` of
    /// lines wait for it. A [`reopen`](Self::reopen) without a new destination keeps it.
    pub fn with_writer(
        out: Box<dyn std::io::Write + Send>,
        format: AccessLogFormat,
        max_bytes: usize,
    ) -> Self {
        Self::start(Sink::Stream(out), None, format, max_bytes)
    }

    fn start(
        sink: Sink,
        to: Option<Destination>,
        format: AccessLogFormat,
        max_bytes: usize,
    ) -> Self {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                format,
                ..Pending::default()
            }),
            format: std::sync::atomic::AtomicU8::new(format_code(format)),
            wake: Condvar::new(),
            done: Condvar::new(),
            dropped: AtomicU64::new(0),
            write_failed: AtomicU64::new(0),
            reopens: AtomicU64::new(0),
            max_bytes: max_bytes.max(1),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer_loop(&s, sink, to))
            .ok();
        Self {
            shared: thread.is_some().then_some(shared),
            thread: Mutex::new(thread),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.shared.is_some()
    }

    /// Queues one record; never blocks on I/O (only on a short in-memory append).
    pub fn record(&self, rec: &AccessRecord<'_>) {
        let Some(shared) = &self.shared else { return };
        let format = shared.format();
        let mut line = rec.to_line(format);
        let Ok(mut p) = shared.pending.lock() else {
            return;
        };
        // A reopen changed the format since: the line follows the reopen, so it takes the
        // new one.
        if p.format != format {
            line = rec.to_line(p.format);
        }
        if p.closed || p.buf.len() + line.len() > shared.max_bytes {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // The writer sleeps while nothing is waiting: wake it for the first line (it then
        // writes within WRITE_INTERVAL) and for a full batch.
        let was_empty = p.buf.is_empty();
        p.buf.extend_from_slice(line.as_bytes());
        if was_empty || p.buf.len() >= WRITE_BATCH {
            shared.wake.notify_one();
        }
    }

    /// Asks the writer to close its destination and open it again (SIGUSR1, after a log
    /// rotation renamed the file), or to switch to the destination and format of `to` (a
    /// reload). In order: every line recorded before this call goes to the old destination,
    /// every line after it to the new one. The writer does it within about 100 ms; when the
    /// new destination cannot be opened it logs why and keeps writing to the old one.
    /// Nothing happens for a disabled log.
    pub fn reopen(&self, to: Option<&AccessLogConfig>) {
        let Some(shared) = &self.shared else { return };
        let Ok(mut p) = shared.pending.lock() else {
            return;
        };
        let dest = to.map(Destination::of);
        let at = p.buf.len();
        let r = p.reopen.get_or_insert(Reopen { at, to: None });
        if dest.is_some() {
            r.to = dest;
        }
        if let Some(cfg) = to {
            p.format = cfg.format;
            shared
                .format
                .store(format_code(cfg.format), Ordering::Relaxed);
        }
        shared.wake.notify_one();
    }

    /// Reopens done so far.
    pub fn reopens(&self) -> u64 {
        self.shared
            .as_ref()
            .map_or(0, |s| s.reopens.load(Ordering::Relaxed))
    }

    /// Lines dropped so far because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.shared
            .as_ref()
            .map_or(0, |s| s.dropped.load(Ordering::Relaxed))
    }

    /// Lines lost so far because the destination refused a write.
    pub fn write_failed(&self) -> u64 {
        self.shared
            .as_ref()
            .map_or(0, |s| s.write_failed.load(Ordering::Relaxed))
    }

    /// Waits (up to `deadline`) until every line recorded so far has been written and
    /// flushed. Returns false on timeout.
    pub fn flush(&self, deadline: Duration) -> bool {
        let Some(shared) = &self.shared else {
            return true;
        };
        let Ok(mut p) = shared.pending.lock() else {
            return false;
        };
        p.flush_requested += 1;
        let want = p.flush_requested;
        shared.wake.notify_one();
        let end = std::time::Instant::now() + deadline;
        while p.flushed < want && !p.closed {
            let left = end.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            p = match shared.done.wait_timeout(p, left) {
                Ok((g, _)) => g,
                Err(_) => return false,
            };
        }
        true
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        // The writer writes what is buffered, then ends; one stuck on a stream no one reads
        // is left behind after CLOSE_WAIT (the process is on its way out).
        let mut exited = true;
        if let Some(shared) = &self.shared
            && let Ok(mut p) = shared.pending.lock()
        {
            p.closed = true;
            shared.wake.notify_one();
            let end = std::time::Instant::now() + CLOSE_WAIT;
            while !p.exited {
                let left = end.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                p = match shared.done.wait_timeout(p, left) {
                    Ok((g, _)) => g,
                    Err(_) => return,
                };
            }
            exited = p.exited;
        }
        if let Some(t) = self.thread.lock().ok().and_then(|mut t| t.take())
            && exited
        {
            let _ = t.join();
        }
    }
}

fn open_append(p: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .map_err(|e| std::io::Error::new(e.kind(), format!("access log {}: {e}", p.display())))
}

fn writer_loop(shared: &Shared, sink: Sink, to: Option<Destination>) {
    write_batches(shared, sink, to);
    if let Ok(mut p) = shared.pending.lock() {
        p.exited = true;
        shared.done.notify_all();
    }
}

/// What the writer takes from [`Pending`] in one go.
struct Batch {
    bytes: Vec<u8>,
    /// The flush request it answers.
    flush_to: u64,
    closed: bool,
    reopen: Option<Reopen>,
}

/// The next batch to write (taking `spare` as the new buffer). `None` when the lock is
/// poisoned.
fn next_batch(shared: &Shared, spare: &mut Vec<u8>) -> Option<Batch> {
    let mut p = shared.pending.lock().ok()?;
    loop {
        if p.closed
            || p.flush_requested > p.flushed
            || p.reopen.is_some()
            || p.buf.len() >= WRITE_BATCH
        {
            break;
        }
        let wait = if p.buf.is_empty() {
            Duration::from_secs(3600)
        } else {
            WRITE_INTERVAL
        };
        let (g, t) = shared.wake.wait_timeout(p, wait).ok()?;
        p = g;
        if t.timed_out() && !p.buf.is_empty() {
            break;
        }
    }
    spare.clear();
    std::mem::swap(&mut p.buf, spare);
    Some(Batch {
        bytes: std::mem::take(spare),
        flush_to: p.flush_requested,
        closed: p.closed,
        reopen: p.reopen.take(),
    })
}

/// At most one warning per cause (buffer full, write failed) this often.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The writer thread's state besides the buffer: where it writes, and its log limiters.
struct Writer<'a> {
    shared: &'a Shared,
    sink: Sink,
    /// What `sink` was opened from; `None` for a writer the caller gave.
    to: Option<Destination>,
    failed_log: crate::telemetry::LogLimiter,
}

impl Writer<'_> {
    fn write(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if let Err((e, lines)) = self.sink.write_lines(bytes) {
            let total = self.shared.write_failed.fetch_add(lines, Ordering::Relaxed) + lines;
            if self.failed_log.allow(LOG_EVERY) {
                tracing::error!(error = %e, lines, total, "access log write failed; lines lost");
            }
        }
    }

    /// Closes the destination and opens `to` (or the same one again); keeps the old one when
    /// the new one cannot be opened.
    fn reopen(&mut self, to: Option<Destination>) {
        if let Some(d) = to.or_else(|| self.to.clone()) {
            match Sink::open(&d) {
                Ok(sink) => {
                    // The old sink is dropped (and its file closed) here.
                    self.sink = sink;
                    tracing::info!(to = %d, "access log reopened");
                    self.to = Some(d);
                }
                Err(e) => tracing::error!(
                    error = %e,
                    "cannot reopen the access log; still writing to the previous destination"
                ),
            }
        }
        self.shared.reopens.fetch_add(1, Ordering::Relaxed);
    }
}

fn write_batches(shared: &Shared, sink: Sink, to: Option<Destination>) {
    let full_log = crate::telemetry::LogLimiter::new();
    let mut w = Writer {
        shared,
        sink,
        to,
        failed_log: crate::telemetry::LogLimiter::new(),
    };
    let mut spare = Vec::new();
    let mut reported_drops = 0u64;
    loop {
        let Some(batch) = next_batch(shared, &mut spare) else {
            return;
        };
        match batch.reopen {
            None => w.write(&batch.bytes),
            Some(r) => {
                let at = r.at.min(batch.bytes.len());
                w.write(&batch.bytes[..at]);
                w.reopen(r.to);
                w.write(&batch.bytes[at..]);
            }
        }
        spare = batch.bytes;
        if let Ok(mut p) = shared.pending.lock() {
            p.flushed = p.flushed.max(batch.flush_to);
            shared.done.notify_all();
        }
        let d = shared.dropped.load(Ordering::Relaxed);
        if d > reported_drops && full_log.allow(LOG_EVERY) {
            tracing::warn!(
                dropped = d - reported_drops,
                total = d,
                "access log buffer full; lines dropped"
            );
            reported_drops = d;
        }
        if batch.closed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn rec() -> AccessRecord<'static> {
        AccessRecord {
            start: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            duration: Duration::from_micros(45_600),
            id: RequestId(0xab),
            client: "127.0.0.1:5000".parse().unwrap(),
            user: None,
            method: "GET",
            url: "http://example.com/a b",
            status: 200,
            bytes_out: 1234,
            bytes_in: None,
            kind: RecordKind::Http,
            upstream: Some("192.0.2.1:80".parse().unwrap()),
            error: None,
            content_type: Some("text/html"),
            decision: None,
        }
    }

    #[test]
    fn squid_line_has_the_native_fields() {
        let line = rec().to_line(AccessLogFormat::Squid);
        assert_eq!(
            line,
            "1700000000.123     45 127.0.0.1 TCP_MISS/200 1234 GET http://example.com/a%20b - HIER_DIRECT/192.0.2.1 text/html 00000000000000ab\n"
        );
    }

    #[test]
    fn squid_codes_tell_a_warn_page_and_a_bumped_block_from_the_rest() {
        let decided = |action| Decided {
            action,
            reason: "risk",
            rule: None,
            cache: "hit",
            source: None,
            risk: None,
            score: None,
        };
        let (block, warn, allow) = (decided("block"), decided("warn"), decided("allow"));
        let code = |kind, status, d: Option<&Decided>| {
            let mut r = rec();
            (r.kind, r.status, r.decision) = (kind, status, d);
            r.squid_code()
        };
        assert_eq!(code(RecordKind::Http, 403, Some(&block)), "TCP_DENIED");
        assert_eq!(code(RecordKind::Http, 403, Some(&warn)), "TCP_DENIED_WARN");
        assert_eq!(
            code(RecordKind::Intercepted, 200, Some(&block)),
            "TCP_DENIED"
        );
        assert_eq!(
            code(RecordKind::Intercepted, 200, Some(&warn)),
            "TCP_DENIED_WARN"
        );
        assert_eq!(code(RecordKind::Intercepted, 200, Some(&allow)), "TCP_MISS");
        assert_eq!(code(RecordKind::Tunnel, 200, Some(&allow)), "TCP_TUNNEL");
        assert_eq!(code(RecordKind::Http, 407, None), "TCP_DENIED");
        assert_eq!(code(RecordKind::Local, 200, None), "NONE_NONE");
    }

    #[test]
    fn squid_fields_escape_what_is_not_visible() {
        assert_eq!(squid_field(""), "-");
        assert_eq!(squid_field("http://a/b?c=%41"), "http://a/b?c=%41");
        assert_eq!(squid_field("a b\t\u{1}\u{7f}é"), "a%20b%09%01%7F%C3%A9");
        assert!(matches!(squid_field("x"), std::borrow::Cow::Borrowed("x")));
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut r = rec();
        let url = "http://x/\"q\\\u{1}\u{7f}é\n";
        r.url = url;
        r.user = Some("a\"b");
        let line = r.to_line(AccessLogFormat::Json);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["url"], url);
        assert_eq!(v["user"], "a\"b");
    }

    #[test]
    fn json_line_carries_the_decision() {
        let d = Decided {
            action: "block",
            reason: "risk",
            rule: Some("r\"1".into()),
            cache: "miss",
            source: Some("local".into()),
            risk: Some("dangerous"),
            score: Some(7),
        };
        let mut r = rec();
        r.decision = Some(&d);
        let v: serde_json::Value = serde_json::from_str(&r.to_line(AccessLogFormat::Json)).unwrap();
        assert_eq!(
            v["decision"],
            serde_json::json!({"action": "block", "reason": "risk", "rule": "r\"1",
                "cache": "miss", "source": "local", "risk": "dangerous",
                "score": 7})
        );
        let v: serde_json::Value =
            serde_json::from_str(&rec().to_line(AccessLogFormat::Json)).unwrap();
        assert!(v["decision"].is_null());
    }

    #[test]
    fn json_line_is_one_object() {
        let line = rec().to_line(AccessLogFormat::Json);
        assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["id"], "00000000000000ab");
        assert_eq!(v["status"], 200);
        assert_eq!(v["url"], "http://example.com/a b");
        assert_eq!(v["duration_ms"], 45.6);
        assert_eq!(v["ts"], "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn timestamps_have_three_truncated_fraction_digits() {
        let text = |t: SystemTime| {
            let mut s = String::new();
            push_rfc3339(&mut s, t);
            s
        };
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(text(t), "2023-11-14T22:13:20.000Z");
        assert_eq!(
            text(t + Duration::from_nanos(999_999_999)),
            "2023-11-14T22:13:20.999Z"
        );
        assert_eq!(text(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }

    /// A writer whose every write waits until its sender sends or is dropped.
    struct Gate(std::sync::mpsc::Receiver<()>);

    impl std::io::Write for Gate {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.recv();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn full_buffer_drops_and_counts_instead_of_blocking() {
        // A writer that blocks until released, and room for about two lines.
        let (release, gate) = std::sync::mpsc::channel();
        let len = rec().to_line(AccessLogFormat::Json).len();
        let log = AccessLog::with_writer(Box::new(Gate(gate)), AccessLogFormat::Json, 2 * len + 1);
        for _ in 0..10 {
            log.record(&rec());
        }
        // The writer takes at most one batch (about two lines) and then blocks in `write`;
        // about two more fit the buffer; the rest are dropped.
        assert!(log.dropped() >= 6, "dropped {}", log.dropped());
        drop(release);
    }

    #[test]
    fn lines_a_destination_refuses_are_counted() {
        // A real file opened read-only: every write fails, whoever runs the test.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, "").unwrap();
        let log = AccessLog::with_writer(
            Box::new(std::fs::File::open(&path).unwrap()),
            AccessLogFormat::Json,
            1 << 20,
        );
        for _ in 0..3 {
            log.record(&rec());
        }
        assert!(log.flush(Duration::from_secs(10)));
        log.record(&rec());
        assert!(log.flush(Duration::from_secs(10)));
        assert_eq!(log.write_failed(), 4, "every line lost is counted");
        assert_eq!(log.dropped(), 0);
    }

    #[test]
    fn a_writer_stuck_for_good_does_not_hold_up_closing() {
        // `_never` stays alive, so the writer never returns from its first write.
        let (_never, stuck) = std::sync::mpsc::channel();
        let log = AccessLog::with_writer(Box::new(Gate(stuck)), AccessLogFormat::Json, 1 << 20);
        log.record(&rec());
        let (done, closed) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            assert!(!log.flush(Duration::from_millis(50)));
            drop(log);
            let _ = done.send(());
        });
        closed
            .recv_timeout(Duration::from_secs(30))
            .expect("closing gives up on a stuck writer");
    }

    #[test]
    fn a_line_reaches_the_file_without_a_flush() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let log = AccessLog::with_writer(
            Box::new(std::fs::File::create(&path).unwrap()),
            AccessLogFormat::Json,
            1 << 20,
        );
        log.record(&rec());
        // Polled with a generous deadline: the writer wakes for the first line and writes it
        // within about WRITE_INTERVAL, not when the next flush or shutdown comes.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::fs::read_to_string(&path).unwrap().lines().count() < 1 {
            assert!(std::time::Instant::now() < deadline, "line not written");
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(log);
    }

    #[test]
    fn flush_writes_everything_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let log = AccessLog::with_writer(
            Box::new(std::fs::File::create(&path).unwrap()),
            AccessLogFormat::Squid,
            1 << 20,
        );
        for _ in 0..100 {
            log.record(&rec());
        }
        assert!(log.flush(Duration::from_secs(10)));
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 100);
        log.record(&rec());
        drop(log);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 101);
    }

    fn file_config(path: &Path, format: AccessLogFormat) -> AccessLogConfig {
        AccessLogConfig {
            enabled: true,
            path: Some(path.to_owned()),
            format,
            buffer_bytes: 1 << 20,
            syslog: None,
        }
    }

    fn count(path: &Path) -> usize {
        std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
    }

    #[test]
    fn a_reopen_after_a_rename_splits_the_lines_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (path, rotated) = (dir.path().join("a.log"), dir.path().join("a.log.1"));
        let log = AccessLog::open(&file_config(&path, AccessLogFormat::Json)).unwrap();
        // Recorded before the reopen but maybe not yet written: they belong to the old file.
        for _ in 0..3 {
            log.record(&rec());
        }
        std::fs::rename(&path, &rotated).unwrap();
        log.reopen(None);
        for _ in 0..2 {
            log.record(&rec());
        }
        assert!(log.flush(Duration::from_secs(10)));
        assert_eq!((count(&rotated), count(&path)), (3, 2));
        assert_eq!(log.reopens(), 1);
    }

    #[test]
    fn a_reopen_with_new_settings_moves_to_the_new_path_and_format() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.log"), dir.path().join("b.log"));
        let log = AccessLog::open(&file_config(&a, AccessLogFormat::Json)).unwrap();
        log.record(&rec());
        log.reopen(Some(&file_config(&b, AccessLogFormat::Squid)));
        log.record(&rec());
        assert!(log.flush(Duration::from_secs(10)));
        assert!(std::fs::read_to_string(&a).unwrap().starts_with('{'));
        let squid = std::fs::read_to_string(&b).unwrap();
        assert!(squid.contains(" TCP_MISS/200 "), "{squid}");
    }

    #[test]
    fn a_destination_that_cannot_be_opened_keeps_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.log");
        let log = AccessLog::open(&file_config(&a, AccessLogFormat::Json)).unwrap();
        let nowhere = dir.path().join("missing-dir").join("b.log");
        log.reopen(Some(&file_config(&nowhere, AccessLogFormat::Json)));
        log.record(&rec());
        assert!(log.flush(Duration::from_secs(10)));
        assert_eq!(count(&a), 1);
        assert_eq!(log.write_failed(), 0);
    }
}
