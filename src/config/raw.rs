//! The serde mirror of the YAML configuration file: plain data, defaults, no logic.
//!
//! Every field is documented here with its meaning, unit and default; the annotated example
//! `config/webrep.example.yaml` shows each key with its default value, and a test checks that
//! the example and these defaults agree key for key. Unknown keys are errors
//! (`deny_unknown_fields`): a misspelt security setting must never be silently ignored.
//!
//! Validation and conversion into typed values happen in [`super::Config::from_raw`].

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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
    /// Worker threads, each with its own event loop, listening socket (`SO_REUSEPORT`) and
    /// upstream connection pool. 0 means one per CPU the process may run on. Default 0.
    pub workers: usize,
    /// Maximum concurrent client connections; further clients wait in the kernel's accept
    /// backlog until one closes. Default 10000.
    pub max_connections: usize,
    /// Maximum size of a request's header section in bytes (request line plus headers);
    /// larger requests get 431. Default 65536. Minimum 1024.
    pub max_header_bytes: usize,
    /// Time a client has to send a complete request head once it has sent its first byte, in
    /// milliseconds; after that the connection is closed. Default 10000.
    pub header_read_timeout_ms: u64,
    /// Time an idle keep-alive client connection (no request in progress, no bytes sent) is
    /// kept open, in milliseconds. Default 60000.
    pub client_idle_timeout_ms: u64,
    /// Time to establish the TCP connection to an upstream (DNS included), in milliseconds;
    /// after that the client gets 504. Default 10000.
    pub upstream_connect_timeout_ms: u64,
    /// Time from sending a request upstream to receiving the response headers, in
    /// milliseconds; after that the client gets 504. Default 60000.
    pub upstream_response_timeout_ms: u64,
    /// How long an idle pooled upstream connection is kept for reuse, in milliseconds.
    /// Default 60000.
    pub upstream_idle_timeout_ms: u64,
    /// Maximum idle pooled connections kept per upstream host and worker. Default 256.
    pub upstream_max_idle_per_host: usize,
    /// The most an upstream connection's read buffer grows to, in bytes: each read from an
    /// upstream takes at most this much. Larger means fewer system calls for big downloads
    /// and more memory per busy connection (up to about twice this while a body streams).
    /// Measured on 2 cores with 128 clients fetching 1 MiB: 65536 → 0.51x direct throughput
    /// at 31 MB peak RSS; 131072 → 0.68x at 47 MB. Default 65536; 8192 to 16777216.
    pub upstream_read_buffer_bytes: usize,
    /// A tunnel (CONNECT or WebSocket) with no bytes in either direction for this long is
    /// closed, in milliseconds. Default 300000 (5 minutes).
    pub tunnel_idle_timeout_ms: u64,
    /// On SIGTERM/SIGINT, in-flight requests and tunnels get this long to finish before the
    /// process exits, in milliseconds. Default 30000.
    pub shutdown_grace_period_ms: u64,
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
    /// `fe80::/10`), unspecified (`0.0.0.0/8`, `::`) and multicast. Default `false`. The
    /// proxy's own listen addresses are refused even when this is `true`.
    pub allow_internal: bool,
    /// Further destination networks (CIDR) to refuse, checked against every address a host
    /// name resolves to. Default `[]`. Example: `["10.0.0.0/8"]`.
    pub refuse: Vec<String>,
}

/// `auth:` section.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAuthConfig {
    /// A users file: one `name:hash` per line, the hash an argon2 PHC string
    /// (`$argon2id$...`, as `webrep passwd NAME` prints) or bcrypt (`$2b$...`, as
    /// `htpasswd -B` writes). When set, every request needs `Proxy-Authorization: Basic`;
    /// without it the answer is 407. Default: none (no authentication).
    pub users_file: Option<PathBuf>,
    /// The realm shown in `Proxy-Authenticate`. Default `"webrep"`.
    pub realm: String,
    /// How long a verified credential is remembered so that password hashing does not run on
    /// every request, in seconds. Default 300. 0 verifies every request.
    pub credentials_cache_seconds: u64,
}

/// Access log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessLogFormat {
    /// One JSON object per line.
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
    /// A `tracing` filter such as `info` or `webrep=debug,hyper=info`. The `RUST_LOG`
    /// environment variable overrides it. Default `info`.
    pub level: String,
    /// `text` (default) or `json`.
    pub format: LogFormat,
}

impl Default for RawProxyConfig {
    fn default() -> Self {
        Self {
            listen: vec!["127.0.0.1:3128".into()],
            allowed_clients: vec!["127.0.0.0/8".into(), "::1/128".into()],
            connect_ports: vec![443],
            destinations: RawDestinationsConfig::default(),
            workers: 0,
            max_connections: 10_000,
            max_header_bytes: 65_536,
            header_read_timeout_ms: 10_000,
            client_idle_timeout_ms: 60_000,
            upstream_connect_timeout_ms: 10_000,
            upstream_response_timeout_ms: 60_000,
            upstream_idle_timeout_ms: 60_000,
            upstream_max_idle_per_host: 256,
            upstream_read_buffer_bytes: 65_536,
            tunnel_idle_timeout_ms: 300_000,
            shutdown_grace_period_ms: 30_000,
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

/// Parses YAML into `T`. The one place that names the YAML crate, so it can be swapped.
pub fn from_yaml_str<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_saphyr::from_str(text).map_err(|e| e.to_string())
}

/// Renders `T` as YAML (for `webrep config print-default`).
pub fn to_yaml_string<T: Serialize>(value: &T) -> Result<String, String> {
    serde_saphyr::to_string(value).map_err(|e| e.to_string())
}

/// A YAML error with the position it was found at (1-based; 0 when the parser gave none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    /// What is wrong, without the position and without a source snippet.
    pub message: String,
    /// 1-based line, 0 when unknown.
    pub line: u32,
    /// 1-based column, 0 when unknown.
    pub column: u32,
}

/// [`from_yaml_str`] for callers that report `file:line:column` themselves (policy files):
/// the error carries the position separately from the message.
pub fn from_yaml_str_located<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    serde_saphyr::from_str(text).map_err(|e| {
        let (line, column) = e
            .location()
            .map_or((0, 0), |l| (clamp_u32(l.line()), clamp_u32(l.column())));
        YamlError {
            message: strip_location(&e.without_snippet().to_string()).to_owned(),
            line,
            column,
        }
    })
}

/// A deserialized value with the line and column of the YAML node it came from, so that a
/// value that parses but does not validate (a bad CIDR, an unknown category) can still be
/// reported at its position. Wraps the YAML crate's span type so that only this file names
/// that crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located<T> {
    /// The value.
    pub value: T,
    /// 1-based line, 0 when unknown.
    pub line: u32,
    /// 1-based column, 0 when unknown.
    pub column: u32,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Located<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = serde_saphyr::Spanned::<T>::deserialize(deserializer)?;
        Ok(Located {
            value: spanned.value,
            line: clamp_u32(spanned.referenced.line()),
            column: clamp_u32(spanned.referenced.column()),
        })
    }
}

fn clamp_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// The YAML crate appends " at line L column C" to some messages; we report the position
/// ourselves.
fn strip_location(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(i) if message[i + 9..].contains("column") => &message[..i],
        _ => message,
    }
}
