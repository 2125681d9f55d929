//! The validated `intercept:` section: HTTPS interception with the local CA, minted leaf
//! certificates, the client handshake deadline, upstream trust and early upstream TLS.
//!
//! Read by the proxy's interceptor and CONNECT path. Fails on a leaf validity browsers would
//! refuse (over 397 days) or of zero hours, an empty CA directory, a zero handshake timeout,
//! and an early-upstream hold over a minute.

use std::path::PathBuf;
use std::time::Duration;

use super::check::{InvalidValue, millis};
use super::raw::{NonTlsAction, RawInterceptConfig};

/// Validated `intercept:` section. Field meanings are documented on [`RawInterceptConfig`].
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

impl TryFrom<RawInterceptConfig> for InterceptConfig {
    type Error = InvalidValue;

    fn try_from(i: RawInterceptConfig) -> Result<Self, InvalidValue> {
        if !(1..=24 * 397).contains(&i.leaf_validity_hours) {
            return Err(InvalidValue::new(
                "intercept.leaf_validity_hours",
                format!(
                    "{} is outside 1..=9528 (browsers refuse leaves valid over 398 days)",
                    i.leaf_validity_hours
                ),
            ));
        }
        if i.ca_dir.as_os_str().is_empty() {
            return Err(InvalidValue::new("intercept.ca_dir", "empty path"));
        }
        if i.early_upstream_ms > 60_000 {
            return Err(InvalidValue::new(
                "intercept.early_upstream_ms",
                format!(
                    "{} is above 60000 (an unused early connection is held that long)",
                    i.early_upstream_ms
                ),
            ));
        }
        Ok(InterceptConfig {
            enabled: i.enabled,
            ca_dir: i.ca_dir,
            create_ca: i.create_ca,
            leaf_validity: Duration::from_secs(i.leaf_validity_hours * 3600),
            cert_cache_entries: i.cert_cache_entries,
            handshake_timeout: millis("intercept.handshake_timeout_ms", i.handshake_timeout_ms)?,
            upstream_ca_file: i.upstream_ca_file,
            non_tls: i.non_tls,
            early_upstream: (i.early_upstream_ms > 0)
                .then(|| Duration::from_millis(i.early_upstream_ms)),
        })
    }
}
