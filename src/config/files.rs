//! The validated `files:` section: how much memory file reputation may use to hold downloads
//! back until their hash verdict is in (which downloads are scanned is the policy's
//! `files:`).
//!
//! Read by the proxy's file scanner. Fails when the total budget is below one download's
//! hold-back size or above 1 TiB.

use super::check::{DEFAULTS_ARE_VALID, InvalidValue};
use super::raw::RawFilesConfig;

/// Validated `files:` section. Field meanings are documented on [`RawFilesConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesConfig {
    /// Downloads of at most this many bytes are held back whole; 0 streams all.
    pub hold_back_bytes: u64,
    /// The most bytes held back across all connections.
    pub hold_back_total_bytes: u64,
}

impl TryFrom<RawFilesConfig> for FilesConfig {
    type Error = InvalidValue;

    fn try_from(f: RawFilesConfig) -> Result<Self, InvalidValue> {
        if f.hold_back_total_bytes < f.hold_back_bytes {
            return Err(InvalidValue::new(
                "files.hold_back_total_bytes",
                format!(
                    "{} is less than files.hold_back_bytes ({})",
                    f.hold_back_total_bytes, f.hold_back_bytes
                ),
            ));
        }
        if f.hold_back_total_bytes > 1 << 40 {
            return Err(InvalidValue::new(
                "files.hold_back_total_bytes",
                "more than 1 TiB",
            ));
        }
        Ok(FilesConfig {
            hold_back_bytes: f.hold_back_bytes,
            hold_back_total_bytes: f.hold_back_total_bytes,
        })
    }
}

/// The built-in `files:` defaults.
impl Default for FilesConfig {
    fn default() -> Self {
        Self::try_from(RawFilesConfig::default()).expect(DEFAULTS_ARE_VALID)
    }
}
