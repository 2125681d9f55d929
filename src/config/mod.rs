//! Configuration: the YAML file, validated into an immutable [`Config`] before any port is
//! bound.
//!
//! Three stages (as pingora and g3 do it): [`raw::RawConfig`] is the serde mirror of the file
//! with defaults and `deny_unknown_fields`; [`Config::from_raw`] converts to typed values
//! (socket addresses, networks, durations) and checks cross-field rules; the result is shared
//! read-only. With no file, the built-in defaults apply. Errors name the file, and for YAML
//! errors the line and column, or the offending key for a bad value.

pub mod raw;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

pub use raw::{AccessLogFormat, LogFormat, NonTlsAction, RawConfig};

use crate::repserver::api::ApiConfig;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file")]
    Read(#[source] crate::fsread::ReadError),
    #[error("{path}: {message}")]
    Syntax { path: String, message: String },
    #[error("{path}: invalid value for key `{key}`: {reason}")]
    Invalid {
        path: String,
        key: &'static str,
        reason: String,
    },
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub proxy: ProxyConfig,
    pub auth: AuthConfig,
    pub access_log: AccessLogConfig,
    pub log: raw::RawLogConfig,
    pub intercept: InterceptConfig,
    pub policy: raw::RawPolicyConfig,
    pub files: raw::RawFilesConfig,
    pub admin: AdminConfig,
    pub reputation: ReputationSettings,
    pub server: ServerConfig,
    pub feedback: FeedbackConfig,
}

/// Validated `feedback:` section. Field meanings are documented on
/// [`raw::RawFeedbackConfig`].
#[derive(Debug, Clone)]
pub struct FeedbackConfig {
    /// Resolved: `enabled`, or whether reputation sources are configured.
    pub enabled: bool,
    pub proxy_id: Option<String>,
    pub queue_events: usize,
    pub batch_events: usize,
    pub batch_interval: Duration,
    pub send_timeout: Duration,
    pub retry_interval: Duration,
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
    pub spool_fsync: Duration,
    pub shutdown_flush: Duration,
}

/// Validated `admin:` section.
#[derive(Debug, Clone, Default)]
pub struct AdminConfig {
    pub listen: Option<SocketAddr>,
    pub token_file: Option<PathBuf>,
}

/// Validated `reputation:` section. Field meanings are documented on
/// [`raw::RawReputationConfig`].
#[derive(Debug, Clone)]
pub struct ReputationSettings {
    pub sources: Vec<ReputationSource>,
    pub cache_entries: u64,
    pub max_stale: Duration,
    pub retry_after: Duration,
    pub follow_changes: bool,
    pub follow_retry_first: Duration,
    pub follow_retry_max: Duration,
}

/// One validated reputation source.
#[derive(Debug, Clone)]
pub struct ReputationSource {
    pub name: String,
    pub url: String,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
}

/// Validated `intercept:` section. Field meanings are documented on
/// [`raw::RawInterceptConfig`].
#[derive(Debug, Clone)]
pub struct InterceptConfig {
    pub enabled: bool,
    pub ca_dir: PathBuf,
    pub create_ca: bool,
    pub leaf_validity: Duration,
    pub cert_cache_entries: u64,
    pub handshake_timeout: Duration,
    pub upstream_ca_file: Option<PathBuf>,
    pub non_tls: NonTlsAction,
    /// `intercept.early_upstream_ms`; `None` when 0 (off).
    pub early_upstream: Option<Duration>,
}

/// Validated `server:` section. Field meanings are documented on [`raw::RawServerConfig`].
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// `server.metrics_listen`: Prometheus `/metrics`.
    pub metrics_listen: Option<SocketAddr>,
    pub store: PathBuf,
    pub tokens_file: Option<PathBuf>,
    pub client_tokens: Vec<String>,
    pub admin_tokens: Vec<String>,
    pub tls: Option<raw::RawTlsServerConfig>,
    pub sample_data: bool,
    /// TTLs and limits of the API.
    pub api: ApiConfig,
    pub change_log_rows: u64,
    pub max_connections: usize,
    /// 0: no per-client limit.
    pub max_connections_per_client: usize,
    pub read_threads: usize,
    pub upstream: Option<UpstreamConfig>,
    /// Retention and escalation rules of feedback events.
    pub feedback: crate::repserver::api::FeedbackOptions,
}

/// Validated `server.upstream:` section.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Base URL without a trailing slash, `http://` or `https://`.
    pub url: String,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
    pub batch: usize,
    pub cache_entries: u64,
}

/// Validated `proxy:` section. Field meanings are documented on [`raw::RawProxyConfig`].
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub listen: Vec<SocketAddr>,
    pub allowed_clients: Vec<IpNet>,
    pub connect_ports: Vec<u16>,
    pub allow_internal_destinations: bool,
    pub refused_destinations: Vec<IpNet>,
    /// `proxy.hosts`, validated.
    pub static_hosts: crate::proxy::dial::StaticHosts,
    /// `proxy.dns_cache_ttl_ms`, `proxy.dns_negative_ttl_ms`, `proxy.dns_cache_max_names`.
    pub dns_cache: crate::proxy::dial::DnsCacheConfig,
    /// Resolved: never 0.
    pub workers: usize,
    pub max_connections: usize,
    /// 0: no per-client limit.
    pub max_connections_per_client: usize,
    pub max_header_bytes: usize,
    pub max_header_lines: usize,
    pub header_read_timeout: Duration,
    pub client_idle_timeout: Duration,
    /// `None`: idle keep-alive connections keep their HTTP buffers.
    pub client_park_after: Option<Duration>,
    pub upstream_connect_timeout: Duration,
    pub happy_eyeballs_delay: Duration,
    pub upstream_response_timeout: Duration,
    pub upstream_idle_timeout: Duration,
    pub upstream_max_idle_per_host: usize,
    pub upstream_read_buffer_bytes: usize,
    pub tunnel_idle_timeout: Duration,
    pub shutdown_grace_period: Duration,
    pub preserve_header_case: bool,
    pub via_name: String,
    /// The top-level `pac:` section, validated (served by the proxy's own pages).
    pub pac: crate::proxy::pac::PacConfig,
}

/// Validated `auth:` section.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub users_file: Option<PathBuf>,
    pub groups_file: Option<PathBuf>,
    pub realm: String,
    pub credentials_cache_ttl: Duration,
    /// Password-check threads (`hash_threads`, 0 resolved to the CPU count).
    pub hash_threads: usize,
    pub hash_queue: usize,
    /// Zero: wrong credentials are not remembered.
    pub failed_credentials_cache_ttl: Duration,
    pub failed_credentials_cache_entries: u64,
    /// Zero: no per-address limit.
    pub failures_per_client: u32,
    pub failure_window: Duration,
    pub failure_delay: Duration,
}

/// Validated `access_log:` section.
#[derive(Debug, Clone)]
pub struct AccessLogConfig {
    pub enabled: bool,
    /// `None` is standard output.
    pub path: Option<PathBuf>,
    pub format: AccessLogFormat,
    pub buffer_bytes: usize,
}

impl Config {
    /// Loads and validates a config file; `None` gives the built-in defaults.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        match path {
            None => Self::from_raw(RawConfig::default(), "<defaults>"),
            Some(path) => {
                let text = crate::fsread::read_to_string(path, crate::fsread::CONFIG_MAX)
                    .map_err(ConfigError::Read)?;
                Self::from_yaml(&text, &path.display().to_string())
            }
        }
    }

    /// Parses and validates YAML text; `origin` names it in errors (usually the file path).
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        // An empty file (or one holding only comments) means "all defaults".
        let raw: RawConfig = if text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            RawConfig::default()
        } else {
            raw::from_yaml_str(text).map_err(|message| ConfigError::Syntax {
                path: origin.to_owned(),
                message,
            })?
        };
        Self::from_raw(raw, origin)
    }

    /// Converts and checks a raw config.
    pub fn from_raw(raw: RawConfig, origin: &str) -> Result<Self, ConfigError> {
        let invalid = |key: &'static str, reason: String| ConfigError::Invalid {
            path: origin.to_owned(),
            key,
            reason,
        };
        let p = &raw.proxy;
        if p.listen.is_empty() {
            return Err(invalid(
                "proxy.listen",
                "at least one address is needed".into(),
            ));
        }
        let listen = p
            .listen
            .iter()
            .map(|s| {
                s.parse::<SocketAddr>()
                    .map_err(|e| invalid("proxy.listen", format!("{s:?}: {e} (expected ip:port)")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let allowed_clients =
            parse_nets(&p.allowed_clients).map_err(|r| invalid("proxy.allowed_clients", r))?;
        let refused_destinations = parse_nets(&p.destinations.refuse)
            .map_err(|r| invalid("proxy.destinations.refuse", r))?;
        let static_hosts = crate::proxy::dial::StaticHosts::parse(&p.hosts)
            .map_err(|r| invalid("proxy.hosts", r))?;
        if p.connect_ports.contains(&0) {
            return Err(invalid(
                "proxy.connect_ports",
                "port 0 is not a port".into(),
            ));
        }
        if p.max_connections == 0 {
            return Err(invalid(
                "proxy.max_connections",
                "must be at least 1".into(),
            ));
        }
        if p.max_header_bytes < 1024 {
            return Err(invalid(
                "proxy.max_header_bytes",
                format!("{} is below the minimum of 1024", p.max_header_bytes),
            ));
        }
        let ms = |key: &'static str, v: u64| {
            if v == 0 {
                Err(invalid(key, "must be greater than 0".into()))
            } else {
                Ok(Duration::from_millis(v))
            }
        };
        let via_name = match &p.via_name {
            Some(name) => {
                if name.is_empty()
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
                {
                    return Err(invalid(
                        "proxy.via_name",
                        format!("{name:?}: use letters, digits, '-', '.' and '_' only"),
                    ));
                }
                name.clone()
            }
            None => default_via_name(),
        };
        let proxy = ProxyConfig {
            listen,
            allowed_clients,
            connect_ports: p.connect_ports.clone(),
            allow_internal_destinations: p.destinations.allow_internal,
            refused_destinations,
            static_hosts,
            dns_cache: crate::proxy::dial::DnsCacheConfig {
                ttl: Duration::from_millis(p.dns_cache_ttl_ms),
                negative_ttl: Duration::from_millis(p.dns_negative_ttl_ms),
                max_names: match p.dns_cache_max_names {
                    0 => {
                        return Err(invalid(
                            "proxy.dns_cache_max_names",
                            "must be greater than 0 (dns_cache_ttl_ms: 0 turns the cache off)"
                                .into(),
                        ));
                    }
                    n => n,
                },
            },
            workers: match p.workers {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                n if n > 1024 => {
                    return Err(invalid("proxy.workers", format!("{n} is more than 1024")));
                }
                n => n,
            },
            max_connections: p.max_connections,
            max_connections_per_client: p.max_connections_per_client,
            max_header_bytes: p.max_header_bytes,
            max_header_lines: match p.max_header_lines {
                n @ 8..=10_000 => n,
                n => {
                    return Err(invalid(
                        "proxy.max_header_lines",
                        format!("{n} is outside 8 to 10000"),
                    ));
                }
            },
            header_read_timeout: ms("proxy.header_read_timeout_ms", p.header_read_timeout_ms)?,
            client_idle_timeout: ms("proxy.client_idle_timeout_ms", p.client_idle_timeout_ms)?,
            client_park_after: (p.client_park_after_ms > 0)
                .then(|| Duration::from_millis(p.client_park_after_ms)),
            upstream_connect_timeout: ms(
                "proxy.upstream_connect_timeout_ms",
                p.upstream_connect_timeout_ms,
            )?,
            happy_eyeballs_delay: match p.happy_eyeballs_delay_ms {
                n @ 10..=60_000 => Duration::from_millis(n),
                n => {
                    return Err(invalid(
                        "proxy.happy_eyeballs_delay_ms",
                        format!("{n} is outside 10..=60000"),
                    ));
                }
            },
            upstream_response_timeout: ms(
                "proxy.upstream_response_timeout_ms",
                p.upstream_response_timeout_ms,
            )?,
            upstream_idle_timeout: ms(
                "proxy.upstream_idle_timeout_ms",
                p.upstream_idle_timeout_ms,
            )?,
            upstream_max_idle_per_host: p.upstream_max_idle_per_host,
            upstream_read_buffer_bytes: match p.upstream_read_buffer_bytes {
                n @ 8192..=16_777_216 => n,
                n => {
                    return Err(invalid(
                        "proxy.upstream_read_buffer_bytes",
                        format!("{n} is outside 8192..=16777216"),
                    ));
                }
            },
            tunnel_idle_timeout: ms("proxy.tunnel_idle_timeout_ms", p.tunnel_idle_timeout_ms)?,
            shutdown_grace_period: Duration::from_millis(p.shutdown_grace_period_ms),
            preserve_header_case: p.preserve_header_case,
            via_name,
            pac: crate::proxy::pac::PacConfig::parse(
                raw.pac.proxy.as_deref(),
                &raw.pac.bypass,
                raw.pac.direct_fallback,
            )
            .map_err(|(key, r)| invalid(key, r))?,
        };
        let auth = auth_config(&raw.auth, &invalid)?;
        let l = &raw.access_log;
        if l.buffer_bytes < 4096 {
            return Err(invalid(
                "access_log.buffer_bytes",
                format!("{} is below the minimum of 4096", l.buffer_bytes),
            ));
        }
        if l.path.is_empty() {
            return Err(invalid(
                "access_log.path",
                "empty; use \"-\" for standard output".into(),
            ));
        }
        let access_log = AccessLogConfig {
            enabled: l.enabled,
            path: (l.path != "-").then(|| PathBuf::from(&l.path)),
            format: l.format,
            buffer_bytes: l.buffer_bytes,
        };
        parse_log_filter(&raw.log.level).map_err(|r| invalid("log.level", r))?;
        let server = server_config(&raw.server, &invalid)?;
        let i = &raw.intercept;
        if !(1..=24 * 397).contains(&i.leaf_validity_hours) {
            return Err(invalid(
                "intercept.leaf_validity_hours",
                format!(
                    "{} is outside 1..=9528 (browsers refuse leaves valid over 398 days)",
                    i.leaf_validity_hours
                ),
            ));
        }
        if i.ca_dir.as_os_str().is_empty() {
            return Err(invalid("intercept.ca_dir", "empty path".into()));
        }
        if i.early_upstream_ms > 60_000 {
            return Err(invalid(
                "intercept.early_upstream_ms",
                format!(
                    "{} is above 60000 (an unused early connection is held that long)",
                    i.early_upstream_ms
                ),
            ));
        }
        let intercept = InterceptConfig {
            enabled: i.enabled,
            ca_dir: i.ca_dir.clone(),
            create_ca: i.create_ca,
            leaf_validity: Duration::from_secs(i.leaf_validity_hours * 3600),
            cert_cache_entries: i.cert_cache_entries,
            handshake_timeout: ms("intercept.handshake_timeout_ms", i.handshake_timeout_ms)?,
            upstream_ca_file: i.upstream_ca_file.clone(),
            non_tls: i.non_tls,
            early_upstream: (i.early_upstream_ms > 0)
                .then(|| Duration::from_millis(i.early_upstream_ms)),
        };
        let r = &raw.reputation;
        let mut sources = Vec::with_capacity(r.sources.len());
        for src in &r.sources {
            let url = src.url.trim_end_matches('/');
            if !(url.starts_with("http://") || url.starts_with("https://"))
                || url
                    .parse::<http::Uri>()
                    .map_or(true, |u| u.host().is_none())
            {
                return Err(invalid(
                    "reputation.sources.url",
                    format!(
                        "{:?}: expected http://host:port or https://host:port",
                        src.url
                    ),
                ));
            }
            if src.token.is_some() == src.token_file.is_some() {
                return Err(invalid(
                    "reputation.sources.token",
                    format!("{url}: give exactly one of token and token_file"),
                ));
            }
            sources.push(ReputationSource {
                name: src.name.clone().unwrap_or_else(|| url.to_owned()),
                url: url.to_owned(),
                token: src.token.clone(),
                token_file: src.token_file.clone(),
                ca_file: src.ca_file.clone(),
                timeout: ms("reputation.sources.timeout_ms", src.timeout_ms)?,
            });
        }
        let reputation = ReputationSettings {
            sources,
            cache_entries: r.cache_entries.max(1),
            max_stale: Duration::from_secs(r.max_stale_secs),
            retry_after: ms("reputation.retry_after_ms", r.retry_after_ms)?,
            follow_changes: r.follow_changes,
            follow_retry_first: ms("reputation.follow_retry_first_ms", r.follow_retry_first_ms)?,
            follow_retry_max: ms("reputation.follow_retry_max_ms", r.follow_retry_max_ms)?,
        };
        if reputation.follow_retry_max < reputation.follow_retry_first {
            return Err(invalid(
                "reputation.follow_retry_max_ms",
                format!(
                    "{} is less than follow_retry_first_ms ({})",
                    r.follow_retry_max_ms, r.follow_retry_first_ms
                ),
            ));
        }
        let f = &raw.feedback;
        if let Some(id) = &f.proxy_id {
            use crate::api::events::MAX_IDENT;
            if id.is_empty() || id.len() > MAX_IDENT || !id.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(invalid(
                    "feedback.proxy_id",
                    format!("{id:?}: use 1 to {MAX_IDENT} visible ASCII characters"),
                ));
            }
        }
        if f.queue_events == 0 {
            return Err(invalid(
                "feedback.queue_events",
                "must be at least 1".into(),
            ));
        }
        if !(1..=10_000).contains(&f.batch_events) {
            return Err(invalid(
                "feedback.batch_events",
                format!("{} is outside 1..=10000", f.batch_events),
            ));
        }
        if f.spool_dir.as_os_str().is_empty() {
            return Err(invalid("feedback.spool_dir", "empty path".into()));
        }
        let feedback = FeedbackConfig {
            enabled: f.enabled.unwrap_or(!reputation.sources.is_empty()),
            proxy_id: f.proxy_id.clone(),
            queue_events: f.queue_events,
            batch_events: f.batch_events,
            batch_interval: ms("feedback.batch_interval_ms", f.batch_interval_ms)?,
            send_timeout: ms("feedback.send_timeout_ms", f.send_timeout_ms)?,
            retry_interval: ms("feedback.retry_interval_ms", f.retry_interval_ms)?,
            spool_dir: f.spool_dir.clone(),
            spool_max_bytes: f.spool_max_bytes,
            spool_fsync: ms("feedback.spool_fsync_ms", f.spool_fsync_ms)?,
            shutdown_flush: ms("feedback.shutdown_flush_ms", f.shutdown_flush_ms)?,
        };
        Ok(Self {
            proxy,
            auth,
            access_log,
            log: raw.log,
            intercept,
            policy: raw.policy.clone(),
            files: {
                if raw.files.hold_back_total_bytes < raw.files.hold_back_bytes {
                    return Err(invalid(
                        "files.hold_back_total_bytes",
                        format!(
                            "{} is less than files.hold_back_bytes ({})",
                            raw.files.hold_back_total_bytes, raw.files.hold_back_bytes
                        ),
                    ));
                }
                if raw.files.hold_back_total_bytes > 1 << 40 {
                    return Err(invalid(
                        "files.hold_back_total_bytes",
                        "more than 1 TiB".into(),
                    ));
                }
                raw.files.clone()
            },
            admin: AdminConfig {
                listen: match &raw.admin.listen {
                    None => None,
                    Some(a) => Some(a.parse::<SocketAddr>().map_err(|e| {
                        invalid("admin.listen", format!("{a:?}: {e} (expected ip:port)"))
                    })?),
                },
                token_file: raw.admin.token_file.clone(),
            },
            reputation,
            server,
            feedback,
        })
    }
}

/// The validated `auth:` section.
fn auth_config(
    a: &raw::RawAuthConfig,
    invalid: &dyn Fn(&'static str, String) -> ConfigError,
) -> Result<AuthConfig, ConfigError> {
    if a.realm.is_empty()
        || a.realm
            .bytes()
            .any(|b| b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b))
    {
        return Err(invalid(
            "auth.realm",
            format!(
                "{:?}: printable ASCII without quotes or backslashes",
                a.realm
            ),
        ));
    }
    if a.hash_threads > 1024 {
        return Err(invalid(
            "auth.hash_threads",
            format!("{} is more than 1024", a.hash_threads),
        ));
    }
    if a.failure_delay_ms > 60_000 {
        return Err(invalid(
            "auth.failure_delay_ms",
            format!("{} is more than 60000", a.failure_delay_ms),
        ));
    }
    if a.failures_per_client > 0 && a.failure_window_seconds == 0 {
        return Err(invalid(
            "auth.failure_window_seconds",
            "must be greater than 0 while failures_per_client is set".into(),
        ));
    }
    Ok(AuthConfig {
        users_file: a.users_file.clone(),
        groups_file: a.groups_file.clone(),
        realm: a.realm.clone(),
        credentials_cache_ttl: Duration::from_secs(a.credentials_cache_seconds),
        hash_threads: match a.hash_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        },
        hash_queue: a.hash_queue,
        failed_credentials_cache_ttl: Duration::from_secs(a.failed_credentials_cache_seconds),
        failed_credentials_cache_entries: a.failed_credentials_cache_entries,
        failures_per_client: a.failures_per_client,
        failure_window: Duration::from_secs(a.failure_window_seconds),
        failure_delay: Duration::from_millis(a.failure_delay_ms),
    })
}

fn server_config(
    s: &raw::RawServerConfig,
    invalid: &dyn Fn(&'static str, String) -> ConfigError,
) -> Result<ServerConfig, ConfigError> {
    let listen = s.listen.parse::<SocketAddr>().map_err(|e| {
        invalid(
            "server.listen",
            format!("{:?}: {e} (expected ip:port)", s.listen),
        )
    })?;
    if s.store.as_os_str().is_empty() {
        return Err(invalid("server.store", "empty path".into()));
    }
    for (key, list) in [
        ("server.client_tokens", &s.client_tokens),
        ("server.admin_tokens", &s.admin_tokens),
    ] {
        if let Some(t) = list.iter().find(|t| !valid_token(t)) {
            return Err(invalid(
                key,
                format!(
                    "a token of {} characters: tokens are 16 to 256 visible ASCII characters",
                    t.len()
                ),
            ));
        }
    }
    let positive = |key: &'static str, v: u64| {
        if v == 0 {
            Err(invalid(key, "must be greater than 0".into()))
        } else {
            Ok(v)
        }
    };
    let count = |key: &'static str, v: usize| positive(key, v as u64).map(|_| v);
    let api = ApiConfig {
        ttl_secs: positive("server.ttl_secs", s.ttl_secs)?,
        untested_ttl_secs: positive("server.untested_ttl_secs", s.untested_ttl_secs)?,
        max_body: count("server.max_body_bytes", s.max_body_bytes)?,
        max_import_bytes: positive("server.max_import_bytes", s.max_import_bytes)?,
        max_batch: count("server.max_batch", s.max_batch)?,
        host_path_limit: s.host_path_limit,
        max_wait_ms: s.max_wait_ms,
        max_change_keys: count("server.max_change_keys", s.max_change_keys)?,
        max_queued_jobs: count("server.max_queued_jobs", s.max_queued_jobs)?,
    };
    let upstream = match &s.upstream {
        None => None,
        Some(u) => {
            let url = u.url.trim_end_matches('/');
            let ok = (url.starts_with("http://") || url.starts_with("https://"))
                && url.parse::<http::Uri>().is_ok_and(|uri| {
                    uri.host().is_some_and(|h| !h.is_empty()) && uri.query().is_none()
                });
            if !ok {
                return Err(invalid(
                    "server.upstream.url",
                    format!(
                        "{:?}: expected http://host:port or https://host:port",
                        u.url
                    ),
                ));
            }
            if u.token.is_some() && u.token_file.is_some() {
                return Err(invalid(
                    "server.upstream.token",
                    "give token or token_file, not both".into(),
                ));
            }
            if u.token.is_none() && u.token_file.is_none() {
                return Err(invalid(
                    "server.upstream.token",
                    "a client token of the upstream server is needed (token or token_file)".into(),
                ));
            }
            if let Some(t) = u.token.as_ref().filter(|t| !valid_token(t)) {
                return Err(invalid(
                    "server.upstream.token",
                    format!(
                        "a token of {} characters: tokens are 16 to 256 visible ASCII characters",
                        t.len()
                    ),
                ));
            }
            Some(UpstreamConfig {
                url: url.to_owned(),
                token: u.token.clone(),
                token_file: u.token_file.clone(),
                ca_file: u.ca_file.clone(),
                timeout: Duration::from_millis(positive(
                    "server.upstream.timeout_ms",
                    u.timeout_ms,
                )?),
                batch: count("server.upstream.batch", u.batch)?,
                cache_entries: u.cache_entries,
            })
        }
    };
    let mut escalation = Vec::with_capacity(s.escalation.len());
    for (i, r) in s.escalation.iter().enumerate() {
        let bad = |why: String| invalid("server.escalation", format!("rule {i}: {why}"));
        if r.kinds.is_empty() {
            return Err(bad("`kinds` is empty".into()));
        }
        if r.distinct_clients == 0 {
            return Err(bad("`distinct_clients` must be at least 1".into()));
        }
        if r.distinct_reporters == 0 {
            return Err(bad("`distinct_reporters` must be at least 1".into()));
        }
        if r.window_secs == 0 {
            return Err(bad("`window_secs` must be greater than 0".into()));
        }
        let score = crate::model::Score::new(r.score)
            .ok_or_else(|| bad(format!("score {} is over 100", r.score)))?;
        let category = r
            .category
            .as_deref()
            .map(crate::model::Category::parse)
            .transpose()
            .map_err(|e| bad(e.to_string()))?;
        escalation.push(crate::repserver::events::EscalationRule {
            kinds: r.kinds.clone(),
            distinct_clients: r.distinct_clients,
            distinct_reporters: r.distinct_reporters,
            window_secs: r.window_secs,
            score,
            category,
        });
    }
    let feedback = crate::repserver::api::FeedbackOptions {
        retention: Duration::from_secs(
            positive("server.event_retention_days", s.event_retention_days)?.saturating_mul(86_400),
        ),
        escalation,
    };
    let metrics_listen = match &s.metrics_listen {
        None => None,
        Some(a) => Some(a.parse().map_err(|e| {
            invalid(
                "server.metrics_listen",
                format!("{a:?}: {e} (expected ip:port)"),
            )
        })?),
    };
    Ok(ServerConfig {
        feedback,
        listen,
        metrics_listen,
        store: s.store.clone(),
        tokens_file: s.tokens_file.clone(),
        client_tokens: s.client_tokens.clone(),
        admin_tokens: s.admin_tokens.clone(),
        tls: s.tls.clone(),
        sample_data: s.sample_data,
        api,
        change_log_rows: positive("server.change_log_rows", s.change_log_rows)?,
        max_connections: count("server.max_connections", s.max_connections)?,
        max_connections_per_client: s.max_connections_per_client,
        read_threads: if s.read_threads > 64 {
            return Err(invalid(
                "server.read_threads",
                format!("{} is more than 64", s.read_threads),
            ));
        } else {
            s.read_threads
        },
        upstream,
    })
}

/// Parses a `tracing` filter (`log.level`, `RUST_LOG`) strictly: comma-separated directives,
/// each a level (`trace`, `debug`, `info`, `warn`, `error`, `off`) or `target=level`, with
/// tracing's optional `target[span{field=value}]=level` selectors. A bare word that is not a
/// level is refused: tracing would take it for a target name and log nothing else at all.
///
/// # Errors
/// What is wrong with which directive.
pub fn parse_log_filter(text: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    use std::str::FromStr as _;
    use tracing_subscriber::filter::LevelFilter;
    const LEVELS: &str = "trace, debug, info, warn, error or off";
    let directives: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    if directives.is_empty() {
        return Err("empty; try \"info\"".into());
    }
    for d in &directives {
        // The level follows the last `=` outside span and field selectors.
        let selectors_end = d.rfind(']').map_or(0, |i| i + 1);
        let (target, level) = match d[selectors_end..].rsplit_once('=') {
            Some((t, l)) => (Some(&d[..selectors_end + t.len()]), Some(l.trim())),
            None if selectors_end > 0 => (Some(*d), None),
            None => (None, Some(*d)),
        };
        match (target, level) {
            (_, Some("")) => return Err(format!("{d:?}: no level after `=` (use {LEVELS})")),
            (Some(""), _) => return Err(format!("{d:?}: no target before `=`")),
            (_, Some(l)) if LevelFilter::from_str(l).is_err() => {
                let hint = if target.is_none() {
                    "; for one target only write target=level, e.g. webrep=debug"
                } else {
                    ""
                };
                return Err(format!("{l:?} is not a level (use {LEVELS}){hint}"));
            }
            _ => {}
        }
    }
    tracing_subscriber::EnvFilter::try_new(directives.join(","))
        .map_err(|e| format!("{text:?}: {e}"))
}

/// A bearer token we accept: 16 to 256 visible ASCII characters (no spaces), so that it fits
/// an `Authorization` header and is not trivially guessable.
pub fn valid_token(t: &str) -> bool {
    (16..=256).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_graphic())
}

fn parse_nets(items: &[String]) -> Result<Vec<IpNet>, String> {
    items
        .iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| {
                    format!(
                        "{s:?} is not a network (expected CIDR such as 10.0.0.0/8, or an address)"
                    )
                })
        })
        .collect()
}

/// `webrep-<hostname>`, or `webrep` when the host name is unknown or unusable.
fn default_via_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        });
    match host {
        Some(h) => format!("webrep-{h}"),
        None => "webrep".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_loopback_only_and_sane() {
        let c = Config::load(None).unwrap();
        assert_eq!(c.proxy.listen, vec!["127.0.0.1:3128".parse().unwrap()]);
        assert_eq!(
            c.proxy.allowed_clients,
            vec![
                "127.0.0.0/8".parse::<IpNet>().unwrap(),
                "::1/128".parse().unwrap()
            ]
        );
        assert_eq!(c.proxy.connect_ports, vec![443]);
        assert!(!c.proxy.allow_internal_destinations);
        assert_eq!(c.proxy.max_header_bytes, 65_536);
        assert_eq!(c.proxy.max_header_lines, 100);
        assert!(c.auth.users_file.is_none());
        assert!(c.access_log.enabled && c.access_log.path.is_none());
        assert!(c.proxy.via_name.starts_with("webrep"));
        assert_eq!(
            c.proxy.dns_cache,
            crate::proxy::dial::DnsCacheConfig::default()
        );
    }

    #[test]
    fn unknown_key_is_an_error_naming_key_and_line() {
        let err = Config::from_yaml(
            "proxy:\n  listen: [\"127.0.0.1:1\"]\n  max_conections: 5\n",
            "t.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("max_conections"), "{err}");
        assert!(err.contains("t.yaml"), "{err}");
        assert!(err.contains('3'), "line number missing: {err}");
    }

    #[test]
    fn bad_values_name_the_key() {
        for (yaml, key) in [
            ("proxy:\n  listen: [\"nonsense\"]\n", "proxy.listen"),
            (
                "proxy:\n  allowed_clients: [\"10.0.0.0/33\"]\n",
                "proxy.allowed_clients",
            ),
            ("proxy:\n  max_header_bytes: 10\n", "proxy.max_header_bytes"),
            ("proxy:\n  max_header_lines: 5\n", "proxy.max_header_lines"),
            (
                "proxy:\n  max_header_lines: 10001\n",
                "proxy.max_header_lines",
            ),
            ("proxy:\n  connect_ports: [0]\n", "proxy.connect_ports"),
            (
                "proxy:\n  tunnel_idle_timeout_ms: 0\n",
                "proxy.tunnel_idle_timeout_ms",
            ),
            ("proxy:\n  via_name: \"a b\"\n", "proxy.via_name"),
            (
                "proxy:\n  dns_cache_max_names: 0\n",
                "proxy.dns_cache_max_names",
            ),
            (
                "proxy:\n  happy_eyeballs_delay_ms: 0\n",
                "proxy.happy_eyeballs_delay_ms",
            ),
            ("auth:\n  realm: 'a\"b'\n", "auth.realm"),
            ("log:\n  level: verbose\n", "log.level"),
        ] {
            let err = Config::from_yaml(yaml, "t.yaml").unwrap_err().to_string();
            assert!(err.contains(key), "{yaml:?} gave {err}");
        }
    }

    #[test]
    fn log_filters_are_levels_or_target_level_directives() {
        for ok in [
            "info",
            "WARN",
            "off",
            "webrep=debug,hyper=info",
            "info,webrep::proxy=trace",
            "webrep[conn]=debug",
            "webrep[conn{client.addr=127.0.0.1}]=trace",
            "debug,",
        ] {
            parse_log_filter(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
        for (bad, says) in [
            ("verbose", "\"verbose\" is not a level"),
            ("inf", "webrep=debug"),
            ("webrep=loud", "\"loud\" is not a level"),
            ("webrep=", "no level"),
            ("=info", "no target"),
            (" , ", "empty"),
            ("info,webrep", "\"webrep\" is not a level"),
        ] {
            let e = parse_log_filter(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?} gave {e}");
        }
    }

    #[test]
    fn empty_file_means_defaults() {
        let c = Config::from_yaml("# nothing here\n\n", "t.yaml").unwrap();
        assert_eq!(c.proxy.connect_ports, vec![443]);
    }

    #[test]
    fn a_bare_address_is_a_host_network() {
        let c = Config::from_yaml("proxy:\n  allowed_clients: [\"192.0.2.7\"]\n", "t").unwrap();
        assert_eq!(
            c.proxy.allowed_clients,
            vec!["192.0.2.7/32".parse::<IpNet>().unwrap()]
        );
    }
}
