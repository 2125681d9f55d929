//! Checks the configuration sections share: positive durations and counts, `ip:port`
//! addresses, networks, bearer tokens, and the error a section reports.
//!
//! Sits below every section file of `config`; imports nothing of the crate. A failed check is
//! an [`InvalidValue`] naming the key and the reason; [`super::Config::from_raw`] adds the
//! file it came from.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;

/// A value of one section that does not validate: which key, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value for key `{key}`: {reason}")]
pub struct InvalidValue {
    /// The dotted key, e.g. `proxy.listen`.
    pub key: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl InvalidValue {
    pub(super) fn new(key: &'static str, reason: impl Into<String>) -> Self {
        Self {
            key,
            reason: reason.into(),
        }
    }
}

/// Milliseconds that must not be zero.
pub(super) fn millis(key: &'static str, v: u64) -> Result<Duration, InvalidValue> {
    positive(key, v).map(Duration::from_millis)
}

/// A number that must not be zero.
pub(super) fn positive(key: &'static str, v: u64) -> Result<u64, InvalidValue> {
    if v == 0 {
        Err(InvalidValue::new(key, "must be greater than 0"))
    } else {
        Ok(v)
    }
}

/// A count that must not be zero.
pub(super) fn count(key: &'static str, v: usize) -> Result<usize, InvalidValue> {
    positive(key, v as u64).map(|_| v)
}

/// An `ip:port` address.
pub(super) fn socket_addr(key: &'static str, s: &str) -> Result<SocketAddr, InvalidValue> {
    s.parse::<SocketAddr>()
        .map_err(|e| InvalidValue::new(key, format!("{s:?}: {e} (expected ip:port)")))
}

/// An optional `ip:port` address.
pub(super) fn opt_socket_addr(
    key: &'static str,
    s: Option<&str>,
) -> Result<Option<SocketAddr>, InvalidValue> {
    s.map(|s| socket_addr(key, s)).transpose()
}

/// Networks in CIDR notation, or single addresses (host networks); host bits are cleared.
pub(super) fn parse_nets(items: &[String]) -> Result<Vec<IpNet>, String> {
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

/// Why `t` is not a [`valid_token`](crate::secrets::valid_token); it names the length only, never the token.
pub(super) fn bad_token(t: &str) -> String {
    format!(
        "a token of {} characters: tokens are 16 to 256 visible ASCII characters",
        t.len()
    )
}

/// Why converting the serde mirror's defaults cannot fail: they are valid by construction,
/// and `defaults_are_loopback_only_and_sane` checks that they are.
pub(super) const DEFAULTS_ARE_VALID: &str = "the built-in defaults are valid";
