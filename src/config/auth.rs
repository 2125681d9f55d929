//! The validated `auth:` section: proxy authentication (HTTP Basic against a users file),
//! the credential caches, the password-check threads and the per-client failure budget.
//!
//! Read by the proxy's authenticator. Fails on a realm that cannot go into a
//! `Proxy-Authenticate` header as written, more than 1024 hash threads, a failure delay over
//! a minute, and a failure budget without a window.

use std::path::PathBuf;
use std::time::Duration;

use super::check::InvalidValue;
use super::raw::RawAuthConfig;

/// Validated `auth:` section. Field meanings are documented on [`RawAuthConfig`].
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

impl TryFrom<RawAuthConfig> for AuthConfig {
    type Error = InvalidValue;

    fn try_from(a: RawAuthConfig) -> Result<Self, InvalidValue> {
        if a.realm.is_empty()
            || a.realm
                .bytes()
                .any(|b| b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b))
        {
            return Err(InvalidValue::new(
                "auth.realm",
                format!(
                    "{:?}: printable ASCII without quotes or backslashes",
                    a.realm
                ),
            ));
        }
        if a.hash_threads > 1024 {
            return Err(InvalidValue::new(
                "auth.hash_threads",
                format!("{} is more than 1024", a.hash_threads),
            ));
        }
        if a.failure_delay_ms > 60_000 {
            return Err(InvalidValue::new(
                "auth.failure_delay_ms",
                format!("{} is more than 60000", a.failure_delay_ms),
            ));
        }
        if a.failures_per_client > 0 && a.failure_window_seconds == 0 {
            return Err(InvalidValue::new(
                "auth.failure_window_seconds",
                "must be greater than 0 while failures_per_client is set",
            ));
        }
        Ok(AuthConfig {
            users_file: a.users_file,
            groups_file: a.groups_file,
            realm: a.realm,
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
}
