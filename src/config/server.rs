//! The validated `server:` section (`webrep server`): the API listener and its TLS, the
//! store, the tokens, the API's limits and answer TTLs ([`ApiConfig`]), connection limits,
//! reader threads, the optional upstream tier ([`UpstreamConfig`]) and the feedback settings
//! ([`super::FeedbackOptions`]).
//!
//! Read by the reputation server at start and on reload. Fails on addresses that are not
//! `ip:port`, an empty store path, malformed tokens (the message gives a token's length,
//! never the token), zero limits and TTLs, more than 64 reader threads, and an upstream
//! without a usable URL or with not exactly one of `token` and `token_file`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::check::{
    DEFAULTS_ARE_VALID, InvalidValue, bad_token, count, opt_socket_addr, positive, socket_addr,
};
use super::escalation::FeedbackOptions;
use super::raw::{RawServerConfig, RawTlsServerConfig, RawUpstreamConfig};
use crate::api::sync::{MAX_PAGE, Subscription};
use crate::model::{Category, Source};
use crate::secrets::valid_token;

/// Validated `server:` section. Field meanings are documented on [`RawServerConfig`].
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// `server.metrics_listen`: Prometheus `/metrics`.
    pub metrics_listen: Option<SocketAddr>,
    pub store: PathBuf,
    pub tokens_file: Option<PathBuf>,
    pub client_tokens: Vec<String>,
    pub admin_tokens: Vec<String>,
    pub tls: Option<TlsServerConfig>,
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
    pub feedback: FeedbackOptions,
}

/// Validated `server.tls:` section: the files are read when the server starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsServerConfig {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// The API's limits and answer TTLs (`server.ttl_secs`, `server.max_batch`, ...).
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// `ttl_secs` of an answer backed by at least one entry.
    pub ttl_secs: u64,
    /// `ttl_secs` of an untested answer (shorter: the table may learn the URL soon).
    pub untested_ttl_secs: u64,
    /// Largest request body accepted, bytes; larger is 413.
    pub max_body: usize,
    /// Largest feed upload to `POST /v1/import`, bytes; larger is 413.
    pub max_import_bytes: u64,
    /// Most items (URLs plus hosts, or upserts plus deletes) in one batch.
    pub max_batch: usize,
    /// Most path-level entries returned with a host answer.
    pub host_path_limit: usize,
    /// Longest `wait_ms` honoured by `/v1/changes`.
    pub max_wait_ms: u64,
    /// Most keys returned by one `/v1/changes` answer (beyond: `truncated`).
    pub max_change_keys: usize,
    /// Most store jobs waiting for the store thread; a request beyond that is a 503.
    pub max_queued_jobs: usize,
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
    /// What the mirror follows; `None`: not following.
    pub follow: Option<Subscription>,
    /// Ask the upstream about misses.
    pub ask_on_miss: bool,
    /// Entries per sync page.
    pub sync_page: usize,
    /// `server.upstream.feedback`: forwarding feedback events, and what of them leaves.
    pub feedback: super::UpstreamFeedback,
}

impl TryFrom<RawServerConfig> for ServerConfig {
    type Error = InvalidValue;

    fn try_from(mut s: RawServerConfig) -> Result<Self, InvalidValue> {
        let listen = socket_addr("server.listen", &s.listen)?;
        if s.store.as_os_str().is_empty() {
            return Err(InvalidValue::new("server.store", "empty path"));
        }
        for (key, list) in [
            ("server.client_tokens", &s.client_tokens),
            ("server.admin_tokens", &s.admin_tokens),
        ] {
            if let Some(t) = list.iter().find(|t| !valid_token(t)) {
                return Err(InvalidValue::new(key, bad_token(t)));
            }
        }
        let api = ApiConfig::try_from(&s)?;
        let upstream = s
            .upstream
            .take()
            .map(UpstreamConfig::try_from)
            .transpose()?;
        let feedback = FeedbackOptions::try_from(&s)?;
        let metrics_listen = opt_socket_addr("server.metrics_listen", s.metrics_listen.as_deref())?;
        let change_log_rows = positive("server.change_log_rows", s.change_log_rows)?;
        let max_connections = count("server.max_connections", s.max_connections)?;
        if s.read_threads > 64 {
            return Err(InvalidValue::new(
                "server.read_threads",
                format!("{} is more than 64", s.read_threads),
            ));
        }
        Ok(ServerConfig {
            feedback,
            listen,
            metrics_listen,
            store: s.store,
            tokens_file: s.tokens_file,
            client_tokens: s.client_tokens,
            admin_tokens: s.admin_tokens,
            tls: s.tls.map(TlsServerConfig::from),
            sample_data: s.sample_data,
            api,
            change_log_rows,
            max_connections,
            max_connections_per_client: s.max_connections_per_client,
            read_threads: s.read_threads,
            upstream,
        })
    }
}

impl From<RawTlsServerConfig> for TlsServerConfig {
    fn from(t: RawTlsServerConfig) -> Self {
        TlsServerConfig {
            cert: t.cert,
            key: t.key,
        }
    }
}

impl TryFrom<&RawServerConfig> for ApiConfig {
    type Error = InvalidValue;

    fn try_from(s: &RawServerConfig) -> Result<Self, InvalidValue> {
        Ok(ApiConfig {
            ttl_secs: positive("server.ttl_secs", s.ttl_secs)?,
            untested_ttl_secs: positive("server.untested_ttl_secs", s.untested_ttl_secs)?,
            max_body: count("server.max_body_bytes", s.max_body_bytes)?,
            max_import_bytes: positive("server.max_import_bytes", s.max_import_bytes)?,
            max_batch: count("server.max_batch", s.max_batch)?,
            host_path_limit: s.host_path_limit,
            max_wait_ms: s.max_wait_ms,
            max_change_keys: count("server.max_change_keys", s.max_change_keys)?,
            max_queued_jobs: count("server.max_queued_jobs", s.max_queued_jobs)?,
        })
    }
}

/// The built-in `server:` defaults.
impl Default for ApiConfig {
    fn default() -> Self {
        Self::try_from(&RawServerConfig::default()).expect(DEFAULTS_ARE_VALID)
    }
}

impl TryFrom<RawUpstreamConfig> for UpstreamConfig {
    type Error = InvalidValue;

    fn try_from(u: RawUpstreamConfig) -> Result<Self, InvalidValue> {
        let url = u.url.trim_end_matches('/');
        let ok = (url.starts_with("http://") || url.starts_with("https://"))
            && url.parse::<http::Uri>().is_ok_and(|uri| {
                uri.host().is_some_and(|h| !h.is_empty()) && uri.query().is_none()
            });
        if !ok {
            return Err(InvalidValue::new(
                "server.upstream.url",
                format!(
                    "{:?}: expected http://host:port or https://host:port",
                    u.url
                ),
            ));
        }
        let key = "server.upstream.token";
        match (&u.token, &u.token_file) {
            (Some(_), Some(_)) => {
                return Err(InvalidValue::new(key, "give token or token_file, not both"));
            }
            (None, None) => {
                return Err(InvalidValue::new(
                    key,
                    "a client token of the upstream server is needed (token or token_file)",
                ));
            }
            (Some(t), None) if !valid_token(t) => return Err(InvalidValue::new(key, bad_token(t))),
            _ => {}
        }
        let follow = u.follow.then(|| Subscription {
            sources: u.follow_sources.clone(),
            categories: u.follow_categories.clone(),
        });
        if let Some(bad) = u
            .follow_sources
            .iter()
            .find(|s| Source::from_stored(s).is_none())
        {
            return Err(InvalidValue::new(
                "server.upstream.follow_sources",
                format!("{bad:?}: expected feed:NAME, manual or escalation"),
            ));
        }
        if let Some(bad) = u
            .follow_categories
            .iter()
            .find(|c| Category::parse(c).is_err())
        {
            return Err(InvalidValue::new(
                "server.upstream.follow_categories",
                format!("{bad:?} is not a category name"),
            ));
        }
        let everything = follow.as_ref().is_some_and(Subscription::is_everything);
        let ask_on_miss = u.ask_on_miss.unwrap_or(!everything);
        if follow.is_none() && !ask_on_miss {
            return Err(InvalidValue::new(
                "server.upstream",
                "follow and ask_on_miss are both off: the upstream would never be used",
            ));
        }
        let sync_page = count("server.upstream.sync_page", u.sync_page)?;
        if sync_page > MAX_PAGE {
            return Err(InvalidValue::new(
                "server.upstream.sync_page",
                format!("{sync_page} is more than {MAX_PAGE}"),
            ));
        }
        Ok(UpstreamConfig {
            url: url.to_owned(),
            token: u.token,
            token_file: u.token_file,
            ca_file: u.ca_file,
            timeout: Duration::from_millis(positive("server.upstream.timeout_ms", u.timeout_ms)?),
            batch: count("server.upstream.batch", u.batch)?,
            cache_entries: u.cache_entries,
            follow,
            ask_on_miss,
            sync_page,
            feedback: u.feedback,
        })
    }
}
