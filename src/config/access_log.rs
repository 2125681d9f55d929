//! The validated `access_log:` section: whether, where and how one line per request and per
//! tunnel is written.
//!
//! Read by the access log writer. Fails on a buffer under 4 KiB and on an empty path (`-` is
//! standard output).

use std::path::PathBuf;

use super::check::InvalidValue;
use super::raw::{AccessLogFormat, RawAccessLogConfig};

/// Validated `access_log:` section.
#[derive(Debug, Clone)]
pub struct AccessLogConfig {
    pub enabled: bool,
    /// `None` is standard output.
    pub path: Option<PathBuf>,
    pub format: AccessLogFormat,
    pub buffer_bytes: usize,
}

impl TryFrom<RawAccessLogConfig> for AccessLogConfig {
    type Error = InvalidValue;

    fn try_from(l: RawAccessLogConfig) -> Result<Self, InvalidValue> {
        if l.buffer_bytes < 4096 {
            return Err(InvalidValue::new(
                "access_log.buffer_bytes",
                format!("{} is below the minimum of 4096", l.buffer_bytes),
            ));
        }
        if l.path.is_empty() {
            return Err(InvalidValue::new(
                "access_log.path",
                "empty; use \"-\" for standard output",
            ));
        }
        Ok(AccessLogConfig {
            enabled: l.enabled,
            path: (l.path != "-").then(|| PathBuf::from(&l.path)),
            format: l.format,
            buffer_bytes: l.buffer_bytes,
        })
    }
}
