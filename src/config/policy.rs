//! The validated `policy:` section: whether the proxy filters, and the policy file it
//! filters by.
//!
//! Read by the proxy, which loads and watches the file (the file's own checks are the
//! policy compiler's). Nothing here can fail: any path is accepted, and a missing file is
//! reported when the proxy loads it.

use std::path::PathBuf;

use super::raw::RawPolicyConfig;

/// Validated `policy:` section. Field meanings are documented on [`RawPolicyConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyConfig {
    pub enabled: bool,
    pub file: PathBuf,
}

impl From<RawPolicyConfig> for PolicyConfig {
    fn from(p: RawPolicyConfig) -> Self {
        PolicyConfig {
            enabled: p.enabled,
            file: p.file,
        }
    }
}

impl PolicyConfig {
    /// Whether `file` is the built-in default path, for which the proxy falls back to the
    /// copy built into the binary when the file is missing.
    pub fn is_default_file(&self) -> bool {
        self.file == RawPolicyConfig::default().file
    }
}
