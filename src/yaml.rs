//! YAML reading and writing for the configuration and the policy files: the one module that
//! names the YAML crate, so that it can be swapped. Values can carry the line and column of
//! the node they came from ([`Located`]), so that a value that parses but does not validate
//! is still reported at its position. Pure: text in, values or a positioned error out.

use serde::{Deserialize, Serialize};

/// Parses YAML into `T`. The one place that names the YAML crate, so it can be swapped.
pub fn from_yaml_str<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_saphyr::from_str(text).map_err(|e| e.to_string())
}

/// Renders `T` as YAML (for `webrep config print-default`).
pub fn to_yaml_string<T: Serialize>(value: &T) -> Result<String, String> {
    serde_saphyr::to_string(value).map_err(|e| e.to_string())
}

/// A YAML error with the position it was found at (1-based; 0 when the parser gave none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    /// What is wrong, without the position and without a source snippet.
    pub message: String,
    /// 1-based line, 0 when unknown.
    pub line: u32,
    /// 1-based column, 0 when unknown.
    pub column: u32,
}

/// [`from_yaml_str`] for callers that report `file:line:column` themselves (policy files):
/// the error carries the position separately from the message.
pub fn from_yaml_str_located<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    serde_saphyr::from_str(text).map_err(|e| {
        let (line, column) = e
            .location()
            .map_or((0, 0), |l| (clamp_u32(l.line()), clamp_u32(l.column())));
        YamlError {
            message: strip_location(&e.without_snippet().to_string()).to_owned(),
            line,
            column,
        }
    })
}

/// A deserialized value with the line and column of the YAML node it came from, so that a
/// value that parses but does not validate (a bad CIDR, an unknown category) can still be
/// reported at its position. Wraps the YAML crate's span type so that only this file names
/// that crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located<T> {
    /// The value.
    pub value: T,
    /// 1-based line, 0 when unknown.
    pub line: u32,
    /// 1-based column, 0 when unknown.
    pub column: u32,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Located<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = serde_saphyr::Spanned::<T>::deserialize(deserializer)?;
        Ok(Located {
            value: spanned.value,
            line: clamp_u32(spanned.referenced.line()),
            column: clamp_u32(spanned.referenced.column()),
        })
    }
}

fn clamp_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// The YAML crate appends " at line L column C" to some messages; we report the position
/// ourselves.
fn strip_location(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(i) if message[i + 9..].contains("column") => &message[..i],
        _ => message,
    }
}
