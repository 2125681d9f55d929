//! The validated `reputation:` section: the reputation servers the proxy asks, in order,
//! and its answer cache, failover and change-stream follower settings.
//!
//! Read by the proxy's reputation client. Fails on a source URL that is not
//! `http(s)://host[:port]`, a source without exactly one of `token` and `token_file`, zero
//! timeouts, a follower whose longest retry wait is shorter than its first, and a key
//! summary bound under 4096 bytes, and sources given together with `embedded_sample`.

use std::path::PathBuf;
use std::time::Duration;

use super::check::{DEFAULTS_ARE_VALID, InvalidValue, millis};
use super::raw::{RawReputationConfig, RawReputationSource};

/// Validated `reputation:` section. Field meanings are documented on
/// [`RawReputationConfig`].
#[derive(Debug, Clone)]
pub struct ReputationSettings {
    pub sources: Vec<ReputationSource>,
    /// `reputation.embedded_sample`: the in-process sample server instead of `sources`.
    pub embedded_sample: bool,
    pub cache_entries: u64,
    pub max_stale: Duration,
    pub retry_after: Duration,
    pub follow_changes: bool,
    pub follow_retry_first: Duration,
    pub follow_retry_max: Duration,
    /// The key summary's largest host list in bytes; `None`: no key summary.
    pub key_summary_max_bytes: Option<usize>,
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

impl TryFrom<RawReputationSource> for ReputationSource {
    type Error = InvalidValue;

    fn try_from(src: RawReputationSource) -> Result<Self, InvalidValue> {
        let url = src.url.trim_end_matches('/');
        if !(url.starts_with("http://") || url.starts_with("https://"))
            || url
                .parse::<http::Uri>()
                .map_or(true, |u| u.host().is_none())
        {
            return Err(InvalidValue::new(
                "reputation.sources.url",
                format!(
                    "{:?}: expected http://host:port or https://host:port",
                    src.url
                ),
            ));
        }
        if src.token.is_some() == src.token_file.is_some() {
            return Err(InvalidValue::new(
                "reputation.sources.token",
                format!("{url}: give exactly one of token and token_file"),
            ));
        }
        Ok(ReputationSource {
            name: src.name.unwrap_or_else(|| url.to_owned()),
            url: url.to_owned(),
            token: src.token,
            token_file: src.token_file,
            ca_file: src.ca_file,
            timeout: millis("reputation.sources.timeout_ms", src.timeout_ms)?,
        })
    }
}

/// The settings of the built-in `reputation:` defaults.
impl Default for ReputationSettings {
    fn default() -> Self {
        Self::try_from(RawReputationConfig::default()).expect(DEFAULTS_ARE_VALID)
    }
}

impl TryFrom<RawReputationConfig> for ReputationSettings {
    type Error = InvalidValue;

    fn try_from(r: RawReputationConfig) -> Result<Self, InvalidValue> {
        let sources = r
            .sources
            .into_iter()
            .map(ReputationSource::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        if r.embedded_sample && !sources.is_empty() {
            return Err(InvalidValue::new(
                "reputation.embedded_sample",
                "give reputation.sources or embedded_sample: true, not both",
            ));
        }
        let reputation = ReputationSettings {
            sources,
            embedded_sample: r.embedded_sample,
            cache_entries: r.cache_entries.max(1),
            max_stale: Duration::from_secs(r.max_stale_secs),
            retry_after: millis("reputation.retry_after_ms", r.retry_after_ms)?,
            follow_changes: r.follow_changes,
            follow_retry_first: millis(
                "reputation.follow_retry_first_ms",
                r.follow_retry_first_ms,
            )?,
            follow_retry_max: millis("reputation.follow_retry_max_ms", r.follow_retry_max_ms)?,
            key_summary_max_bytes: (r.key_summary && r.follow_changes)
                .then(|| usize::try_from(r.key_summary_max_bytes).unwrap_or(usize::MAX)),
        };
        if r.key_summary && r.key_summary_max_bytes < 4096 {
            return Err(InvalidValue::new(
                "reputation.key_summary_max_bytes",
                format!("{} is less than 4096", r.key_summary_max_bytes),
            ));
        }
        if reputation.follow_retry_max < reputation.follow_retry_first {
            return Err(InvalidValue::new(
                "reputation.follow_retry_max_ms",
                format!(
                    "{} is less than follow_retry_first_ms ({})",
                    r.follow_retry_max_ms, r.follow_retry_first_ms
                ),
            ));
        }
        Ok(reputation)
    }
}
