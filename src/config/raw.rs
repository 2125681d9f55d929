//! The serde mirror of the YAML configuration file: plain data, defaults, no logic.
//!
//! Every field is documented here with its meaning, unit and default; the annotated example
//! `config/webrep.example.yaml` shows each key with its default value, and a test checks that
//! the example and these defaults agree key for key. Unknown keys are errors
//! (`deny_unknown_fields`): a misspelt security setting must never be silently ignored.
//!
//! Validation and conversion into typed values happen in the section files beside this one
//! (one per top-level key), in the order [`super::Config::from_raw`] lists.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::api::events::Kind;

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// The forward proxy: listeners, who may use it, where it may go, limits and timeouts.
    pub proxy: RawProxyConfig,
    /// Optional proxy authentication (HTTP Basic against a users file).
    pub auth: RawAuthConfig,
    /// One line per request and per tunnel.
    pub access_log: RawAccessLogConfig,
    /// Diagnostic logging (to standard error).
    pub log: RawLogConfig,
    /// HTTPS interception: the local CA, minted certificates, upstream verification.
    pub intercept: RawInterceptConfig,
    /// Filtering: the policy file the proxy decides by.
    pub policy: RawPolicyConfig,
    /// File reputation: memory for downloads held back until their hash verdict is in.
    pub files: RawFilesConfig,
    /// Where the proxy gets reputation: the servers, the cache, failover.
    pub reputation: RawReputationConfig,
    /// The reputation server (`webrep server`): its API listener, store, tokens, answer TTLs,
    /// limits and optional upstream tier.
    pub server: RawServerConfig,
    /// Feedback events from the proxy to its reputation sources (docs/feedback.md).
    pub feedback: RawFeedbackConfig,
    /// The proxy auto-config file (`/proxy.pac`, `/wpad.dat`) the proxy serves to browsers.
    pub pac: RawPacConfig,
    /// The admin listener: Prometheus `/metrics`, the counters as JSON (`/stats`), the admin
    /// API.
    pub admin: RawAdminConfig,
}

/// `feedback:` section (the proxy's side of feedback; the server's is under `server:`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawFeedbackConfig {
    /// Send feedback events (what the policy's `feedback.report` asks for, and user reports)
    /// to the first healthy reputation source. Default `null`: on when `reputation.sources`
    /// are configured, off with the in-process sample server.
    pub enabled: Option<bool>,
    /// This proxy's name in events (1 to 64 visible ASCII characters). Default `null`: the
    /// host name, or when there is none an id generated once and kept in `spool_dir`.
    pub proxy_id: Option<String>,
    /// Events held in memory for the sender while the spool cannot be written (a full disk,
    /// a read-only file system); when full, further events are dropped, counted and logged
    /// (the request path never waits). Default 10000.
    pub queue_events: usize,
    /// Most events in one `POST /v1/events` (at most the server's `max_batch`). Default 500.
    pub batch_events: usize,
    /// How long the first event of a batch waits for others before the batch is sent, in
    /// milliseconds. Default 1000.
    pub batch_interval_ms: u64,
    /// How long one `POST /v1/events` may take, in milliseconds; after that the batch is
    /// offered again later. Default 5000.
    pub send_timeout_ms: u64,
    /// While no source answers, how often delivery is tried again, in milliseconds.
    /// Default 5000.
    pub retry_interval_ms: u64,
    /// Directory of the on-disk spool: every event is appended here (JSON lines) before it
    /// counts as emitted, and delivered from here in order, so a crash of the proxy loses
    /// none. Created when missing. Default `feedback-spool`; under systemd,
    /// `/var/lib/webrep/feedback-spool`.
    pub spool_dir: PathBuf,
    /// Most bytes of undelivered events the spool may hold; an event that does not fit is
    /// dropped, counted and logged. Default 67108864 (64 MiB).
    pub spool_max_bytes: u64,
    /// How often what was appended to the spool is fsynced, in milliseconds: a power loss
    /// (not a crash of the proxy) may lose the events of the last interval. Default 1000.
    pub spool_fsync_ms: u64,
    /// On shutdown, how long unsent events may take to reach a source before they are left
    /// in the spool for the next start, in milliseconds. Default 5000.
    pub shutdown_flush_ms: u64,
    /// Fold repeated events of `aggregate_kinds` per kind and host over this many seconds
    /// into one event that carries their count and distinct clients and users (the server
    /// counts them as if sent one by one). The events of an interval reach the server at its
    /// end (and at shutdown). 0: every event is sent on its own. Default 60. An aggregate
    /// is refused by servers older than this field (docs/feedback.md): upgrade them first.
    pub aggregate_secs: u64,
    /// Which kinds are folded. Blocks, warnings, continues, user reports and file verdicts
    /// are refused here: they stay one event each. Default `[untested, allowed,
    /// reputation_unavailable]`.
    pub aggregate_kinds: Vec<Kind>,
    /// Most hosts folded at once; a new host beyond it sends what is held early (nothing is
    /// dropped). About 1 KB per host plus 64 bytes per distinct client (at most 64 listed).
    /// Default 100000.
    pub aggregate_max_hosts: usize,
}

impl Default for RawFeedbackConfig {
    fn default() -> Self {
        Self {
            enabled: None,
            proxy_id: None,
            queue_events: 10_000,
            batch_events: 500,
            batch_interval_ms: 1000,
            send_timeout_ms: 5000,
            retry_interval_ms: 5000,
            spool_dir: PathBuf::from("feedback-spool"),
            spool_max_bytes: 64 << 20,
            spool_fsync_ms: 1000,
            shutdown_flush_ms: 5000,
            aggregate_secs: 60,
            aggregate_kinds: vec![Kind::Untested, Kind::Allowed, Kind::ReputationUnavailable],
            aggregate_max_hosts: 100_000,
        }
    }
}

/// One `server.escalation` rule.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawEscalationRule {
    /// Event kinds counted, e.g. `[user_report, file_verdict]`.
    pub kinds: Vec<crate::api::events::Kind>,
    /// Distinct clients (proxy and client address together) needed within the window.
    pub distinct_clients: u32,
    /// Distinct reporters (the bearer tokens the events came with) needed within the window.
    /// Give each proxy its own client token and set 2 or more, and no single proxy (or
    /// stolen token) can escalate a host by claiming many clients. Default 1 (clients only).
    #[serde(default = "default_distinct_reporters")]
    pub distinct_reporters: u32,
    /// The window, seconds. Default 3600.
    #[serde(default = "default_window_secs")]
    pub window_secs: u64,
    /// Score of the entry written for the host (`66..=80` is Suspicious).
    pub score: u8,
    /// Category of the entry written. Default: none.
    #[serde(default)]
    pub category: Option<String>,
}

fn default_distinct_reporters() -> u32 {
    1
}

fn default_window_secs() -> u64 {
    3600
}

/// `admin:` section.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdminConfig {
    /// Address (`ip:port`) of the admin listener, which serves Prometheus `/metrics` and the
    /// same counters as JSON on `/stats` (these reveal traffic: the proxy port does not serve
    /// them). Keep it on loopback or a management network: those two have no
    /// authentication. It serves at most 64 connections at once, 16 from one address (429
    /// beyond), so a stuck scraper cannot hold the process's descriptors. Default `null`
    /// (off); for example `127.0.0.1:9129`.
    pub listen: Option<String>,
    /// A file holding the token of the admin API (`/v1/...` on the admin listener:
    /// explain, reload, cache stats and purge), sent as `Authorization: Bearer TOKEN`;
    /// 16 to 256 visible ASCII characters, on the file's first line. Read again on reload
    /// (SIGHUP, `POST /v1/reload`), so a token can be rotated without a restart. Default
    /// `null`: the admin API answers 403 (`/metrics` needs no token).
    pub token_file: Option<PathBuf>,
}

/// `proxy:` section.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawProxyConfig {
    /// Addresses to listen on, as `ip:port`. Default `["127.0.0.1:3128"]`.
    pub listen: Vec<String>,
    /// Client networks (CIDR) allowed to use the proxy; everyone else gets 403.
    /// Default: loopback only (`127.0.0.0/8`, `::1/128`), so a fresh install is never an
    /// open proxy. Example for an office LAN: `["10.20.0.0/16"]`.
    pub allowed_clients: Vec<String>,
    /// Ports that `CONNECT` may reach. Default `[443]`.
    pub connect_ports: Vec<u16>,
    /// Where the proxy refuses to connect to.
    pub destinations: RawDestinationsConfig,
    /// Static host names, consulted before the system resolver (like `/etc/hosts`, for the
    /// proxy only): name → addresses. A key `*.example.org` covers every name under
    /// `example.org` (not the bare domain); `*` alone covers every other name (a closed lab
    /// network: no name goes to DNS). Addresses found here are still checked against
    /// `destinations`. Default `{}`. Example: `{ "intranet.corp": ["10.1.2.3"] }`.
    pub hosts: std::collections::BTreeMap<String, Vec<String>>,
    /// Which resolver answers the names that `hosts` does not: `hickory` (default), an
    /// asynchronous DNS stub resolver that reads `/etc/resolv.conf` (name servers, search
    /// list, `ndots`) and `/etc/hosts`, asks for A and AAAA records in parallel and keeps each
    /// answer for its record TTL; or `system`, `getaddrinfo` on a blocking thread (so
    /// `nsswitch.conf` applies: LDAP, mDNS, systemd-resolved), whose answers carry no TTL and
    /// are kept for `dns_cache_ttl_ms`. Example: `system` on a host whose names come from NSS
    /// modules other than `files` and `dns`.
    pub dns_resolver: String,
    /// Name servers for `dns_resolver: hickory`, as `ip` or `ip:port` (port 53 by default),
    /// asked over UDP (TCP for truncated answers) in place of `/etc/resolv.conf`'s; `/etc/hosts`
    /// is then not read either. Default `[]`: the system's. Example: `["10.0.0.53"]`.
    pub dns_nameservers: Vec<String>,
    /// Memory the DNS cache may use, in bytes: each name counts its length plus 17 per
    /// address plus 450 of bookkeeping (about 510 for a typical name, which measured about
    /// 590 resident), so the default 67108864 (64 MiB) holds some 130,000 names. Must be
    /// greater than 0 (`dns_cache_ttl_ms: 0` turns the cache off).
    pub dns_cache_bytes: u64,
    /// Shortest time an answer or a failure is kept, in milliseconds: records with a shorter
    /// TTL (0 included) are kept this long, so a burst of connections to such a name makes
    /// one query. Default 1000.
    pub dns_min_ttl_ms: u64,
    /// Longest time an answer is kept, whatever its TTL, in milliseconds. Default 3600000
    /// (one hour).
    pub dns_max_ttl_ms: u64,
    /// Longest time a "no such name" or "no address" answer is kept, in milliseconds. Such an
    /// answer is kept for the TTL its SOA record gives (RFC 2308: the lesser of the SOA's TTL
    /// and its minimum field), clamped to `dns_min_ttl_ms` and this. Default 300000.
    pub dns_negative_max_ttl_ms: u64,
    /// How long one query to a name server may take, in milliseconds (`hickory` only).
    /// Default 5000 (glibc's). The whole of a lookup and the connection after it is still
    /// bounded by `upstream_connect_timeout_ms`.
    pub dns_timeout_ms: u64,
    /// How many times a query that timed out is sent again (`hickory` only), 0 to 10.
    /// Default 2 (glibc's).
    pub dns_attempts: usize,
    /// How long an answer of the `system` resolver is used, in milliseconds (getaddrinfo
    /// gives no TTL, so this is fixed); with `hickory` answers live for their TTL and this
    /// key only matters when 0. 0 turns the DNS cache off for either resolver. Concurrent
    /// lookups of one name always share one query when the cache is on. Default 30000.
    pub dns_cache_ttl_ms: u64,
    /// How long a failure that carries no TTL is remembered, in milliseconds: every failure
    /// of the `system` resolver; with `hickory`, a timeout, a server failure, or a negative
    /// answer without an SOA record. 0 retries every time. Default 5000.
    pub dns_negative_ttl_ms: u64,
    /// Deprecated and ignored: the cache is bounded by `dns_cache_bytes`. Still accepted so
    /// that older configs load. Default 10000.
    pub dns_cache_max_names: u64,
    /// Worker threads, each with its own event loop and upstream connection pool; they share
    /// one listening socket per address (no other process can listen on the port). 0 means
    /// one per CPU the process may run on. Default 0.
    pub workers: usize,
    /// Maximum concurrent client connections (tunnels and WebSockets included). At the limit
    /// a new client is served by closing the connection idle for longest (no request in
    /// progress); when none is idle, further clients wait in the kernel's accept backlog
    /// until one closes or becomes idle. Default 10000.
    pub max_connections: usize,
    /// Maximum concurrent connections from one client: an IPv4 address, or an IPv6 /64
    /// prefix. Beyond it a new connection gets 429 and is closed, whatever the total, so
    /// that one client cannot take every place of `max_connections`. 0 means no per-client
    /// limit. Default 1000 (a browser opens at most a few dozen; raise it for many users
    /// behind one NAT address).
    pub max_connections_per_client: usize,
    /// Maximum size of a request's header section in bytes (request line plus headers);
    /// larger requests get 431. Default 65536. Minimum 1024.
    pub max_header_bytes: usize,
    /// Most header field lines in a request head from a client (more: 431) and in a
    /// response head from an upstream (more: 502), whatever their size. Each head parsed
    /// reserves about 64 bytes per allowed line, on the stack up to 100. Default 100 (as
    /// Apache's `LimitRequestFields` and Envoy's `max_headers_count`); 8 to 10000.
    pub max_header_lines: usize,
    /// Time a client has to send a complete request head once it has sent its first byte, in
    /// milliseconds; after that the connection is closed. Default 10000.
    pub header_read_timeout_ms: u64,
    /// Time an idle keep-alive client connection (no request in progress, no bytes sent) is
    /// kept open, in milliseconds. Default 60000.
    pub client_idle_timeout_ms: u64,
    /// Time after which an idle keep-alive client connection gives back its HTTP buffers
    /// (about 9 KB) and waits for its next request the way a new connection waits for its
    /// first, in milliseconds; the next request then pays for new buffers (a few µs). 0
    /// keeps the buffers for the connection's life. Default 1000.
    pub client_park_after_ms: u64,
    /// Time to establish the TCP connection to an upstream (DNS included), in milliseconds;
    /// after that the client gets 504. Default 10000.
    pub upstream_connect_timeout_ms: u64,
    /// Happy Eyeballs (RFC 8305): when a name has several addresses, the next one is tried
    /// this many milliseconds after the previous attempt started if that one has not
    /// connected yet (earlier attempts keep running; the first to connect wins), so an
    /// unreachable address (say a broken IPv6 route) costs this delay, not the whole
    /// connect timeout. Default 250; 10 to 60000.
    pub happy_eyeballs_delay_ms: u64,
    /// Time from sending a request upstream to receiving the response headers, in
    /// milliseconds; after that the client gets 504. Default 60000.
    pub upstream_response_timeout_ms: u64,
    /// How long an idle pooled upstream connection is kept for reuse, in milliseconds (the
    /// HTTP/1.1 pool closes expired ones within a second; the HTTP/2 pool looks for them
    /// about this often, so one may stay up to twice as long there).
    /// Many origins close idle connections after 5 to 15 s themselves, and a connection to
    /// one of an office's many rarely visited hosts is seldom reused after that: a longer
    /// time mostly holds file descriptors and buffers. Default 15000.
    pub upstream_idle_timeout_ms: u64,
    /// Maximum idle pooled connections kept per upstream host and worker. Enough for the
    /// concurrent requests a busy host sees from an office; beyond it, connections are
    /// closed and reopened. Default 16.
    pub upstream_max_idle_per_host: usize,
    /// Maximum idle pooled upstream connections in the whole process, split evenly among
    /// the workers; when one more becomes idle, the one idle for longest is closed. Each
    /// holds a file descriptor and its buffers (see docs/performance.md), so this keeps the
    /// pool well inside the descriptor limit whatever the number of hosts. Default 2000; 1
    /// to 1000000.
    pub upstream_max_idle: usize,
    /// The most an upstream connection's read buffer grows to, in bytes: each read from an
    /// upstream takes at most this much. The buffer starts at 8 KiB and doubles while reads
    /// fill it, so only large downloads make it grow; larger means fewer system calls for
    /// them (1 MiB plain-HTTP responses at 128 connections: 0.56-0.60x the direct rate and
    /// 0.58-0.69 CPU-s/GiB at 262144, against 0.41-0.43x and 1.06 at 24576;
    /// docs/performance.md) and more memory for each connection carrying one, up to about
    /// twice this while a body streams (an idle HTTP/1.1 connection keeps no buffer).
    /// Default 262144; 8192 to 16777216.
    pub upstream_read_buffer_bytes: usize,
    /// A tunnel (CONNECT or WebSocket) with no bytes in either direction for this long is
    /// closed, in milliseconds. Default 300000 (5 minutes).
    pub tunnel_idle_timeout_ms: u64,
    /// Relay CONNECT tunnels that are not intercepted, and WebSockets whose both ends are
    /// plain TCP, with `splice(2)` through a pipe per direction (Linux only; elsewhere the
    /// bytes are copied whatever this says): the payload is not copied through the proxy's
    /// memory. A busy spliced tunnel holds four more file descriptors (its pipes). Default
    /// true.
    pub splice: bool,
    /// On SIGTERM/SIGINT, in-flight requests and tunnels get this long to finish before the
    /// process exits, in milliseconds. Default 30000.
    pub shutdown_grace_period_ms: u64,
    /// Forward HTTP/1 header names in the case they arrived in, both ways (`X-Custom-Id`
    /// instead of `x-custom-id`). HTTP says names are case-insensitive, but some old
    /// servers and clients compare them exactly. Costs a copy of the names per message.
    /// Default false.
    pub preserve_header_case: bool,
    /// The name this proxy uses in `Via` and `Proxy-Status` headers; a request that already
    /// carries it in `Via` is a forwarding loop (508). Default: `webrep-` plus the host name.
    /// Give each proxy in a chain its own name.
    pub via_name: Option<String>,
}

/// `proxy.destinations:` section.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDestinationsConfig {
    /// Allow destinations in the built-in internal set: loopback (`127.0.0.0/8`, `::1`),
    /// link-local (`169.254.0.0/16` including the cloud metadata address 169.254.169.254,
    /// `fe80::/10`), the cloud metadata addresses outside it (`fd00:ec2::254`,
    /// `100.100.100.200`, `168.63.129.16`, `192.0.0.192`), unspecified (`0.0.0.0/8`, `::`),
    /// the local-use NAT64 prefix `64:ff9b:1::/48`, broadcast and multicast. IPv6 addresses
    /// that carry an IPv4 address (IPv4-mapped and -compatible, NAT64 `64:ff9b::/96`, 6to4,
    /// Teredo) are checked as that IPv4 address too. Default `false`. The proxy's own
    /// listening ports (proxy, admin, embedded reputation server) at any address of this
    /// host are refused even when this is `true`.
    pub allow_internal: bool,
    /// Further destination networks (CIDR) to refuse, checked against every address a host
    /// name resolves to (and the IPv4 address an IPv6 one carries). Carrier-grade NAT space
    /// (`100.64.0.0/10`) is not refused by default. Default `[]`. Example: `["10.0.0.0/8"]`.
    pub refuse: Vec<String>,
}

/// `auth:` section.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAuthConfig {
    /// A users file: one `name:hash` per line, the hash an argon2 PHC string
    /// (`$argon2id$...`, as `webrep passwd NAME` prints) or bcrypt (`$2b$...`, as
    /// `htpasswd -B` writes). When set, every request needs `Proxy-Authorization: Basic`;
    /// without it the answer is 407. Read again on SIGHUP and `POST /v1/reload` (a file that
    /// fails to load keeps the running users; remembered credentials are dropped). Default:
    /// none (no authentication).
    pub users_file: Option<PathBuf>,
    /// The realm shown in `Proxy-Authenticate`. Default `"webrep"`.
    pub realm: String,
    /// How long a verified credential is remembered so that password hashing does not run on
    /// every request, in seconds. Default 300. 0 verifies every request.
    pub credentials_cache_seconds: u64,
    /// Threads that check passwords. An argon2 check holds the hash's memory cost (19 MiB for
    /// `webrep passwd` hashes) while it runs, so this bounds that memory too: threads × the
    /// largest memory cost in the users file. 0 means one per CPU the process may run on.
    /// Default 0.
    pub hash_threads: usize,
    /// Password checks that may wait for a thread. Beyond, a request whose credential needs
    /// checking is not queued: it is answered 503 (with `Retry-After`) after
    /// `failure_delay_ms`, and counts against its address's `failures_per_client`.
    /// Credentials already remembered are not affected. 0: a check runs only when a thread is
    /// idle. Default 32.
    pub hash_queue: usize,
    /// How long a wrong credential is remembered, in seconds, so that the same wrong
    /// credential again is answered 407 without hashing. Dropped on reload with the users
    /// file. 0: every wrong credential is hashed. Default 300.
    pub failed_credentials_cache_seconds: u64,
    /// Wrong credentials remembered at most (least used dropped first). Default 10000.
    pub failed_credentials_cache_entries: u64,
    /// Wrong credentials one client address (an IPv6 /64) may send within
    /// `failure_window_seconds` (malformed ones and those refused with 503 count too).
    /// Beyond, until its window ends, every request from it that needs a password check is
    /// answered 429 after `failure_delay_ms`, without one; credentials already remembered as
    /// valid still work from there. 0: no limit. Default 20.
    pub failures_per_client: u32,
    /// The window of `failures_per_client`, in seconds, from the address's first failure.
    /// Default 60.
    pub failure_window_seconds: u64,
    /// How long 429 (over the failure budget) and 503 (password-check queue full) answers
    /// are held back, in milliseconds (at most 60000), so that a client retrying at once
    /// does not spin. Default 1000.
    pub failure_delay_ms: u64,
    /// A groups file for policy rules that `match` on `groups`: one `group: user user ...`
    /// per line (members separated by spaces or commas), `#` comments. Read again on reload,
    /// like `users_file`.
    /// Default: none (users belong to no group).
    pub groups_file: Option<PathBuf>,
}

/// Access log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessLogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// Squid's native `access.log` format, with the request id appended as an 11th field.
    Squid,
}

/// `access_log:` section.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAccessLogConfig {
    /// Write an access log at all. Default `true`.
    pub enabled: bool,
    /// Where to write: a file path (appended to), or `-` for standard output. Default `-`.
    pub path: String,
    /// `json` (default) or `squid`.
    pub format: AccessLogFormat,
    /// Bytes of log lines held in memory for the writer thread (which writes every 100 ms).
    /// When the disk falls this far behind, further lines are dropped and counted (a warning
    /// says how many), so a slow disk never stalls traffic. Default 8388608 (8 MiB).
    pub buffer_bytes: usize,
    /// Send the lines to syslog (RFC 5424) instead of `path`. Off by default.
    pub syslog: RawSyslogConfig,
}

/// `access_log.syslog:` section: the access log as RFC 5424 syslog messages, one datagram
/// per line, the line (JSON or Squid) as the message.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSyslogConfig {
    /// Send to syslog instead of `access_log.path`. Default `false`.
    pub enabled: bool,
    /// Where: an absolute path is a Unix datagram socket (the local syslog daemon or
    /// journald listen on `/dev/log`); `host:port` is UDP (RFC 5426), an IP address, not a
    /// name. Default `/dev/log`.
    pub address: String,
    /// The syslog facility: `user`, `daemon`, `auth`, `authpriv`, `local0` ... `local7`.
    /// Messages have severity `info`. Default `local0`.
    pub facility: String,
    /// The APP-NAME field of each message. Default `webrep`.
    pub app_name: String,
}

/// Diagnostic log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// JSON lines.
    Json,
}

/// `log:` section.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLogConfig {
    /// A `tracing` filter such as `info` or `webrep=debug,hyper=info`: comma-separated
    /// levels (`trace`, `debug`, `info`, `warn`, `error`, `off`) and `target=level`
    /// directives; anything else is a configuration error. The `RUST_LOG` environment
    /// variable overrides it (checked the same way at start). Default `info`.
    pub level: String,
    /// `text` (default) or `json`.
    pub format: LogFormat,
}

/// `files:` section: the memory side of file reputation (which downloads are scanned and
/// what a verdict does is the policy's `files:`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawFilesConfig {
    /// A scanned download whose `Content-Length` is at most this many bytes is held back
    /// whole until its verdict is in (a bad one is replaced by the block page); a larger or
    /// unsized one streams, its last bytes held until the verdict (a bad one is cut, leaving
    /// the client a failed, truncated download). Default 4194304 (4 MiB); 0 streams all.
    pub hold_back_bytes: u64,
    /// The most bytes held back across all connections; a download that would go over
    /// streams instead. Default 67108864 (64 MiB).
    pub hold_back_total_bytes: u64,
}

impl Default for RawFilesConfig {
    fn default() -> Self {
        Self {
            hold_back_bytes: 4 << 20,
            hold_back_total_bytes: 64 << 20,
        }
    }
}

/// `policy:` section.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPolicyConfig {
    /// Filter requests by URL reputation and this policy (blocked and warned requests get a
    /// page instead of the site). Default `true`; `false` makes a plain forward proxy.
    pub enabled: bool,
    /// The YAML policy file (see docs/policy.md); reloaded when it changes and on SIGHUP.
    /// With `enabled`, a config file must name the policy: this key or `builtin` (not both);
    /// a file that is missing stops the proxy (exit 78), it never falls back to another
    /// policy. Default `null`. Example: `/etc/webrep/policy.yaml`.
    pub file: Option<PathBuf>,
    /// The policy built into the binary instead of a file: `default` (a copy of the shipped
    /// `policies/default.yaml`). Default `null`. Without a config file at all, the proxy
    /// uses `policies/default.yaml` from its working directory when it is there and this
    /// built-in copy otherwise.
    pub builtin: Option<BuiltinPolicy>,
}

/// A policy built into the binary (`policy.builtin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BuiltinPolicy {
    /// `policies/default.yaml` as shipped.
    Default,
}

impl Default for RawPolicyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            file: None,
            builtin: None,
        }
    }
}

/// One reputation server the proxy asks.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawReputationSource {
    /// A name for logs (default: the URL).
    #[serde(default)]
    pub name: Option<String>,
    /// Base URL, `http://host:port` or `https://host:port`.
    pub url: String,
    /// A client token of that server, or `token_file`.
    #[serde(default)]
    pub token: Option<String>,
    /// A file whose first line is the token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Extra PEM CAs for an `https://` server.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// How long one lookup may take before the next source is asked, in milliseconds.
    /// Default 500.
    #[serde(default = "default_source_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_source_timeout_ms() -> u64 {
    500
}

/// `reputation:` section.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawReputationConfig {
    /// Reputation servers in order (local first, then the global tier); the first healthy one
    /// is asked. With `policy.enabled`, a config file must give at least one, or say
    /// `embedded_sample: true`. Default `[]`.
    pub sources: Vec<RawReputationSource>,
    /// Instead of `sources`: a reputation server in this process, in memory, holding only
    /// the shipped sample data (reserved `.example`, `.test` and `.invalid` names), for trying
    /// webrep out; never for real traffic. Not with `sources`. Default `false`; without a
    /// config file at all, the proxy runs it.
    pub embedded_sample: bool,
    /// Answers kept in memory (one per host, or per URL for hosts with many path entries).
    /// Default 100000.
    pub cache_entries: u64,
    /// How long past its TTL a cached answer may still be served while no source answers, in
    /// seconds; the policy's `reputation_unavailable.stale_seconds` can shorten it.
    /// Default 3600.
    pub max_stale_secs: u64,
    /// How long a source that failed is skipped, in milliseconds. Default 10000.
    pub retry_after_ms: u64,
    /// Follow the first healthy source's change stream and drop changed keys at once.
    /// Default `true`.
    pub follow_changes: bool,
    /// After a failed poll of the change stream, the follower asks again after this many
    /// milliseconds, doubling with each further failure up to `follow_retry_max_ms` (each
    /// wait drawn from its upper half). Default 50.
    pub follow_retry_first_ms: u64,
    /// The longest wait between failed polls of the change stream, in milliseconds: a
    /// change written on a server that is back reaches the cache about this long after at
    /// worst, and a server that stays down gets one poll per this time from each proxy.
    /// Default 1000.
    pub follow_retry_max_ms: u64,
    /// Keep a summary of the hosts of the followed source's keys (`GET /v1/keys/hosts`,
    /// kept current by the change stream, so it needs `follow_changes`): a URL none of whose
    /// lookup hosts is listed is `untested` at once, with no round trip. Until it is loaded,
    /// or when the source does not offer one (an older server, or one that asks an upstream
    /// tier about misses), hosts are asked as without it. While the source cannot be reached
    /// its answers are stale, like cached ones (`max_stale_secs` and the policy's stale
    /// window apply). Default `true`.
    pub key_summary: bool,
    /// The largest host list loaded for the key summary, in bytes (about 25 bytes a host on
    /// the wire; 9 bytes a host in memory): a longer one is not loaded and hosts are asked.
    /// At least 4096. Default 268435456 (256 MiB, about 10 million hosts).
    pub key_summary_max_bytes: u64,
}

impl Default for RawReputationConfig {
    fn default() -> Self {
        Self {
            sources: Vec::new(),
            embedded_sample: false,
            cache_entries: 100_000,
            max_stale_secs: 3600,
            retry_after_ms: 10_000,
            follow_changes: true,
            follow_retry_first_ms: 50,
            follow_retry_max_ms: 1000,
            key_summary: true,
            key_summary_max_bytes: 256 << 20,
        }
    }
}

/// What to do with bytes in a CONNECT tunnel that are neither TLS nor HTTP (only looked at
/// when interception is on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NonTlsAction {
    /// Close the tunnel (and log why).
    Refuse,
    /// Relay the bytes untouched, as a plain tunnel would.
    Tunnel,
}

/// `intercept:` section.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawInterceptConfig {
    /// Decrypt HTTPS in CONNECT tunnels with certificates minted by the local CA, so that
    /// every request inside is seen (and, with policies, filtered) by its full URL. Clients
    /// must trust the CA (`webrep ca show`, or the proxy's `/ca` page). Default `false`:
    /// tunnels are relayed untouched.
    pub enabled: bool,
    /// Directory of the CA made by `webrep ca init` (`ca.pem`, `ca-key.pem`). Default `certs`.
    pub ca_dir: PathBuf,
    /// Create the CA in `ca_dir` at start when there is none (and log that it did). Default
    /// `false`: a missing CA stops the proxy with instructions.
    pub create_ca: bool,
    /// Lifetime of a minted leaf certificate, in hours (back-dated one hour more); a cached
    /// one is replaced after half of it. Default 168 (7 days).
    pub leaf_validity_hours: u64,
    /// Minted certificates kept in memory, one per host (a few KiB each); the same number of
    /// clients' TLS resumption sessions is kept in one store all hosts share. Default 10000.
    pub cert_cache_entries: u64,
    /// Time for a client to send its first bytes and finish the TLS handshake inside a
    /// tunnel, in milliseconds. Default 10000.
    pub handshake_timeout_ms: u64,
    /// PEM CA certificates trusted for upstream servers in addition to the built-in web PKI
    /// roots (an internal CA, say). Default: none.
    pub upstream_ca_file: Option<PathBuf>,
    /// Bytes that are neither TLS nor HTTP: `refuse` (default) or `tunnel`. Applies when
    /// filtering is off; with a policy, its `interception.non_tls` decides per host.
    pub non_tls: NonTlsAction,
    /// Early upstream TLS: as soon as a tunnel's ClientHello is read, the TLS handshake with
    /// the real server starts over the connection the CONNECT dialled, beside the client's
    /// handshake, and the result is kept this long (milliseconds) for the tunnel's first
    /// decrypted request, which then finds its upstream connection ready. `0`: off (that
    /// connection is closed, and the first request dials and handshakes after it arrives).
    /// Default 2000.
    pub early_upstream_ms: u64,
}

impl Default for RawInterceptConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            ca_dir: PathBuf::from("certs"),
            create_ca: false,
            leaf_validity_hours: 168,
            cert_cache_entries: 10_000,
            handshake_timeout_ms: 10_000,
            upstream_ca_file: None,
            non_tls: NonTlsAction::Refuse,
            early_upstream_ms: 2000,
        }
    }
}

/// `server:` section (`webrep server`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServerConfig {
    /// Address of the HTTP API, `ip:port`. Default `127.0.0.1:8480`.
    pub listen: String,
    /// Address (`ip:port`) of a second listener that serves Prometheus `GET /metrics`
    /// (no token: keep it on loopback or a management network; at most 64 connections at
    /// once, 16 from one address). Default: none (off).
    pub metrics_listen: Option<String>,
    /// The SQLite file holding the reputation table (created when missing; a `-wal` and a
    /// `-shm` file live beside it). Default `reputation.db` in the working directory; under
    /// systemd, `/var/lib/webrep/reputation.db`.
    pub store: PathBuf,
    /// A file of bearer tokens, one per line as `client TOKEN` or `admin TOKEN` (`#` starts a
    /// comment). Client tokens may look up and follow changes; admin tokens may also write
    /// and import. Keep it mode 0600. Default: none.
    pub tokens_file: Option<PathBuf>,
    /// Client tokens given inline (added to those of `tokens_file`). Default `[]`.
    pub client_tokens: Vec<String>,
    /// Admin tokens given inline (added to those of `tokens_file`). Default `[]`.
    /// At least one token of either kind must exist, or the server refuses to start.
    pub admin_tokens: Vec<String>,
    /// TLS for the API. Default: none (plain HTTP; fine on loopback).
    pub tls: Option<RawTlsServerConfig>,
    /// Load the shipped sample data (reserved `.example`, `.test` and `.invalid` names
    /// covering every risk level) into the store at start. Default `false`.
    pub sample_data: bool,
    /// `ttl_secs` of an answer backed by at least one entry, in seconds (never beyond the
    /// expiry of an entry the answer rests on). Default 300.
    pub ttl_secs: u64,
    /// `ttl_secs` of an untested answer, in seconds: shorter, because the table may learn
    /// the URL soon. Default 60.
    pub untested_ttl_secs: u64,
    /// Largest JSON request body, in bytes; larger gets 413. Default 1048576.
    pub max_body_bytes: usize,
    /// Largest feed upload to `POST /v1/import`, in bytes; larger gets 413. The upload is
    /// spooled to a temporary file beside the store, never held in memory.
    /// Default 1073741824 (1 GiB).
    pub max_import_bytes: u64,
    /// Most items (URLs plus hosts, upserts plus deletes, hashes) in one request.
    /// Default 1000.
    pub max_batch: usize,
    /// Most path-level entries sent with a host answer; beyond it the answer says
    /// `truncated` and the proxy asks per URL for that host. Default 100.
    pub host_path_limit: usize,
    /// Longest wait of a `/v1/changes` long-poll, in milliseconds. Default 30000.
    pub max_wait_ms: u64,
    /// Most changed keys in one `/v1/changes` answer (beyond: `truncated`). Default 10000.
    pub max_change_keys: usize,
    /// Change-log rows kept for followers; older rows are pruned every minute, and a follower
    /// further behind is told to drop its whole cache (`truncated`). Default 1000000.
    pub change_log_rows: u64,
    /// Most store jobs waiting for the store thread; beyond it a request gets 503 (load
    /// shedding, not an unbounded queue). Default 1024.
    pub max_queued_jobs: usize,
    /// Most concurrent API connections. At the limit a new client is served by closing the
    /// connection idle for longest (no request in progress, including one still sending its
    /// request head); when none is idle, further ones wait in the accept backlog.
    /// Default 1024.
    pub max_connections: usize,
    /// Most concurrent API connections from one client: an IPv4 address, or an IPv6 /64
    /// prefix. Beyond it a new connection gets 429 and is closed, so that one client cannot
    /// take every place of `max_connections` (`/healthz` stays reachable for the others).
    /// 0 means no per-client limit. Default 256.
    pub max_connections_per_client: usize,
    /// Threads answering lookups and change queries, each with its own read-only connection
    /// to the store: reads run in parallel with each other and go on during a long import.
    /// Writes and imports always run on one writer thread. 0 runs reads on the writer
    /// thread too. Each connection keeps up to 64 MiB of page cache. Default 2.
    pub read_threads: usize,
    /// The global tier: another `webrep server` asked about what this one has no entry for.
    /// Default: none.
    pub upstream: Option<RawUpstreamConfig>,
    /// Feedback events older than this many days are deleted (checked every minute).
    /// Default 30.
    pub event_retention_days: u64,
    /// Escalation rules over feedback events: when one fires for a host, the host gets an
    /// ordinary table entry (source `escalation`) that reaches every proxy through the change
    /// stream. An entry from an admin or a feed is never overwritten. Default `[]`.
    pub escalation: Vec<RawEscalationRule>,
}

/// `server.tls:` section.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTlsServerConfig {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// `server.upstream:` section.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawUpstreamConfig {
    /// Base URL of the upstream server, `http://` or `https://`. Required.
    pub url: String,
    /// Client token for it (or use `token_file`).
    pub token: Option<String>,
    /// A file whose first line is the token.
    pub token_file: Option<PathBuf>,
    /// PEM CA certificates trusted for an `https://` upstream, in addition to the built-in
    /// web PKI roots. Default: none.
    pub ca_file: Option<PathBuf>,
    /// How long one upstream batch may take, in milliseconds; after that the items are
    /// answered untested (with the untested TTL) and the upstream is not waited for.
    /// Default 2000.
    pub timeout_ms: u64,
    /// Most items asked in one upstream request. Default 500.
    pub batch: usize,
    /// Upstream answers kept in memory, each for its own TTL. Default 100000.
    pub cache_entries: u64,
    /// Follow the upstream: copy its table once (a snapshot, in pages), then apply its
    /// change stream to a local mirror as changes happen, resuming by cursor after restarts
    /// and outages. What it lists is then answered here, with no per-request round trip,
    /// and its changes reach this server's proxies within about a second; through an
    /// upstream outage the mirror keeps serving. `false`: ask only (see `ask_on_miss`).
    /// Default true.
    pub follow: bool,
    /// Mirror only the entries and file verdicts whose source is one of these (`feed:NAME`,
    /// `manual`, `escalation`) or, for entries, that have one of `follow_categories`. Both
    /// empty: everything. Default `[]`.
    pub follow_sources: Vec<String>,
    /// See `follow_sources`. Default `[]`.
    pub follow_categories: Vec<String>,
    /// Ask the upstream about URLs and hosts that neither this server's own table nor the
    /// mirror has an entry for (answers cached for their TTL). When it cannot be asked, the
    /// answer says `"upstream": "unavailable"` and proxies apply their
    /// `reputation_unavailable` fail mode. Default: on, unless `follow` mirrors everything
    /// (then a miss here is a miss there; the upstream is still asked until the first
    /// snapshot is complete).
    pub ask_on_miss: Option<bool>,
    /// Entries (or file verdicts) per snapshot and change page of `follow`, at most 10000.
    /// Default 5000.
    pub sync_page: usize,
    /// Feedback this server forwards to the upstream, and what of it leaves the site.
    /// Default: forwarded, clients and users anonymized, comments dropped, URLs without
    /// their query.
    pub feedback: RawUpstreamFeedback,
}

/// `server.upstream.feedback:` section: the feedback events this server stored (from its
/// proxies, or from servers below it) sent on to the upstream with its `token`, each once,
/// so that the upstream's escalation rules count every site. An event keeps its `id`, `kind`,
/// `time`, `proxy`, `host`, verdict fields (`action`, `reason`, `risk`, `score`,
/// `categories`, `rule`, `list_hit`, `cache`, `source`), `ticket` and `file`; what identifies
/// a person is governed by the keys below.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawUpstreamFeedback {
    /// Forward the events at all. Default `true`.
    pub forward: bool,
    /// The client address of an event: `anonymize` (`anon:` and a keyed hash: one stable
    /// pseudonym per address, which the upstream cannot reverse; the key is made once per
    /// site and kept in the store), `keep` (as stored), or `drop` (left out: the upstream's
    /// escalation rules then cannot count these clients). Default `anonymize`.
    pub client: Disclosure,
    /// The authenticated user name of an event: `anonymize`, `keep` or `drop`, as for
    /// `client`. Default `anonymize`.
    pub user: Disclosure,
    /// A user report's free-text comment, which may name anyone: `keep` or `drop`.
    /// Default `drop`.
    pub comment: Retention,
    /// The URL of an event: `keep`, `strip_query` (everything from the first `?` left out:
    /// queries carry searches, e-mail addresses and session tokens) or `drop` (the host stays).
    /// Default `strip_query`.
    pub url: UrlDisclosure,
}

impl Default for RawUpstreamFeedback {
    fn default() -> Self {
        Self {
            forward: true,
            client: Disclosure::Anonymize,
            user: Disclosure::Anonymize,
            comment: Retention::Drop,
            url: UrlDisclosure::StripQuery,
        }
    }
}

/// What of an identifying value leaves the site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Disclosure {
    /// A keyed pseudonym (`anon:` and 24 hex digits) instead of the value.
    Anonymize,
    /// The value as stored.
    Keep,
    /// Nothing.
    Drop,
}

/// Whether a value leaves the site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Retention {
    /// As stored.
    Keep,
    /// Left out.
    Drop,
}

/// What of an event's URL leaves the site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UrlDisclosure {
    /// The canonical URL as stored.
    Keep,
    /// The URL up to its query.
    StripQuery,
    /// Left out (the event's `host` stays).
    Drop,
}

impl Default for RawUpstreamConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            token: None,
            token_file: None,
            ca_file: None,
            timeout_ms: 2000,
            batch: 500,
            cache_entries: 100_000,
            follow: true,
            follow_sources: Vec::new(),
            follow_categories: Vec::new(),
            ask_on_miss: None,
            sync_page: 5_000,
            feedback: RawUpstreamFeedback::default(),
        }
    }
}

impl Default for RawServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8480".into(),
            metrics_listen: None,
            store: PathBuf::from("reputation.db"),
            tokens_file: None,
            client_tokens: Vec::new(),
            admin_tokens: Vec::new(),
            tls: None,
            sample_data: false,
            ttl_secs: 300,
            untested_ttl_secs: 60,
            max_body_bytes: 1 << 20,
            max_import_bytes: 1 << 30,
            max_batch: 1000,
            host_path_limit: 100,
            max_wait_ms: 30_000,
            max_change_keys: 10_000,
            change_log_rows: 1_000_000,
            max_queued_jobs: 1024,
            max_connections: 1024,
            max_connections_per_client: 256,
            read_threads: 2,
            upstream: None,
            event_retention_days: 30,
            escalation: Vec::new(),
        }
    }
}

impl Default for RawProxyConfig {
    fn default() -> Self {
        Self {
            listen: vec!["127.0.0.1:3128".into()],
            allowed_clients: vec!["127.0.0.0/8".into(), "::1/128".into()],
            connect_ports: vec![443],
            destinations: RawDestinationsConfig::default(),
            hosts: Default::default(),
            dns_resolver: "hickory".into(),
            dns_nameservers: Vec::new(),
            dns_cache_bytes: 64 * 1024 * 1024,
            dns_min_ttl_ms: 1_000,
            dns_max_ttl_ms: 3_600_000,
            dns_negative_max_ttl_ms: 300_000,
            dns_timeout_ms: 5_000,
            dns_attempts: 2,
            dns_cache_ttl_ms: 30_000,
            dns_negative_ttl_ms: 5_000,
            dns_cache_max_names: 10_000,
            workers: 0,
            max_connections: 10_000,
            max_connections_per_client: 1000,
            max_header_bytes: 65_536,
            max_header_lines: 100,
            header_read_timeout_ms: 10_000,
            client_idle_timeout_ms: 60_000,
            client_park_after_ms: 1_000,
            upstream_connect_timeout_ms: 10_000,
            happy_eyeballs_delay_ms: 250,
            upstream_response_timeout_ms: 60_000,
            upstream_idle_timeout_ms: 15_000,
            upstream_max_idle_per_host: 16,
            upstream_max_idle: 2000,
            upstream_read_buffer_bytes: 262_144,
            tunnel_idle_timeout_ms: 300_000,
            splice: true,
            shutdown_grace_period_ms: 30_000,
            preserve_header_case: false,
            via_name: None,
        }
    }
}

impl Default for RawAuthConfig {
    fn default() -> Self {
        Self {
            users_file: None,
            realm: "webrep".into(),
            credentials_cache_seconds: 300,
            hash_threads: 0,
            hash_queue: 32,
            failed_credentials_cache_seconds: 300,
            failed_credentials_cache_entries: 10_000,
            failures_per_client: 20,
            failure_window_seconds: 60,
            failure_delay_ms: 1000,
            groups_file: None,
        }
    }
}

impl Default for RawAccessLogConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path: "-".into(),
            format: AccessLogFormat::Json,
            buffer_bytes: 8 << 20,
            syslog: RawSyslogConfig::default(),
        }
    }
}

impl Default for RawSyslogConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            address: "/dev/log".into(),
            facility: "local0".into(),
            app_name: "webrep".into(),
        }
    }
}

impl Default for RawLogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// `pac:` section: the proxy auto-config file served at `/proxy.pac` and `/wpad.dat`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPacConfig {
    /// The proxy the file tells browsers to use, `host:port` (a host name, an IPv4 address
    /// or `[IPv6]`). Default: none, meaning the first `proxy.listen` address (when that is
    /// `0.0.0.0` or `[::]`: the host name the browser fetched the file from, with that port).
    pub proxy: Option<String>,
    /// What browsers reach `DIRECT`, not through the proxy: `intranet.corp` (that host),
    /// `.corp.example` (the domain and every name under it), `*.corp.example` (only the names
    /// under it), `<local>` (names without a dot), `10.0.0.0/8` (IPv4 literals in that
    /// network; no DNS lookup is made). Default `[]`.
    pub bypass: Vec<String>,
    /// Let browsers go direct while the proxy is unreachable (`PROXY host:port; DIRECT`):
    /// users keep browsing during an outage, unfiltered. Default `false`.
    pub direct_fallback: bool,
}
