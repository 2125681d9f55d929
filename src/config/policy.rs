//! The validated `policy:` section: whether the proxy filters, and the policy it filters by:
//! a file, or one built into the binary.
//!
//! Read by the proxy, which loads and watches the file (the file's own checks are the
//! policy compiler's). Fails when both a file and a built-in policy are named; naming
//! neither is refused by [`super::Config::proxy_problems`] (a config file must say which
//! policy it wants; only the quick start without one picks for itself).

use std::path::PathBuf;

use super::check::InvalidValue;
use super::raw::{BuiltinPolicy, RawPolicyConfig};

/// Validated `policy:` section. Field meanings are documented on [`RawPolicyConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyConfig {
    pub enabled: bool,
    /// `None` when the config names no policy.
    pub source: Option<PolicySource>,
}

/// Where the policy comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    /// `policy.file`.
    File(PathBuf),
    /// `policy.builtin`.
    Builtin(BuiltinPolicy),
}

impl TryFrom<RawPolicyConfig> for PolicyConfig {
    type Error = InvalidValue;

    fn try_from(p: RawPolicyConfig) -> Result<Self, InvalidValue> {
        let source = match (p.file, p.builtin) {
            (Some(_), Some(_)) => {
                return Err(InvalidValue::new(
                    "policy.builtin",
                    "give policy.file or policy.builtin, not both",
                ));
            }
            (Some(f), None) if f.as_os_str().is_empty() => {
                return Err(InvalidValue::new("policy.file", "empty path"));
            }
            (Some(f), None) => Some(PolicySource::File(f)),
            (None, Some(b)) => Some(PolicySource::Builtin(b)),
            (None, None) => None,
        };
        Ok(PolicyConfig {
            enabled: p.enabled,
            source,
        })
    }
}

impl PolicyConfig {
    /// The policy file, when the policy comes from one.
    pub fn file(&self) -> Option<&std::path::Path> {
        match &self.source {
            Some(PolicySource::File(f)) => Some(f),
            _ => None,
        }
    }
}
