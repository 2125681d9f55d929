//! The validated `log:` section: the diagnostic log's filter and format, and the strict
//! filter parser that `RUST_LOG` goes through too.
//!
//! Read by the telemetry setup at start. Fails on a filter with a directive that is not a
//! level or `target=level`: tracing would take a bare word for a target name and log nothing
//! else, so such a filter is refused with what is wrong.

use super::check::InvalidValue;
use super::raw::{LogFormat, RawLogConfig};

/// Validated `log:` section. Field meanings are documented on [`RawLogConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A filter that [`parse_log_filter`] accepts.
    pub level: String,
    pub format: LogFormat,
}

impl TryFrom<RawLogConfig> for LogConfig {
    type Error = InvalidValue;

    fn try_from(l: RawLogConfig) -> Result<Self, InvalidValue> {
        parse_log_filter(&l.level).map_err(|r| InvalidValue::new("log.level", r))?;
        Ok(LogConfig {
            level: l.level,
            format: l.format,
        })
    }
}

/// Parses a `tracing` filter (`log.level`, `RUST_LOG`) strictly: comma-separated directives,
/// each a level (`trace`, `debug`, `info`, `warn`, `error`, `off`) or `target=level`, with
/// tracing's optional `target[span{field=value}]=level` selectors. A bare word that is not a
/// level is refused: tracing would take it for a target name and log nothing else at all.
///
/// # Errors
/// What is wrong with which directive.
pub fn parse_log_filter(text: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    use std::str::FromStr as _;
    use tracing_subscriber::filter::LevelFilter;
    const LEVELS: &str = "trace, debug, info, warn, error or off";
    let directives: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    if directives.is_empty() {
        return Err("empty; try \"info\"".into());
    }
    for d in &directives {
        // The level follows the last `=` outside span and field selectors.
        let selectors_end = d.rfind(']').map_or(0, |i| i + 1);
        let (target, level) = match d[selectors_end..].rsplit_once('=') {
            Some((t, l)) => (Some(&d[..selectors_end + t.len()]), Some(l.trim())),
            None if selectors_end > 0 => (Some(*d), None),
            None => (None, Some(*d)),
        };
        match (target, level) {
            (_, Some("")) => return Err(format!("{d:?}: no level after `=` (use {LEVELS})")),
            (Some(""), _) => return Err(format!("{d:?}: no target before `=`")),
            (_, Some(l)) if LevelFilter::from_str(l).is_err() => {
                let hint = if target.is_none() {
                    "; for one target only write target=level, e.g. webrep=debug"
                } else {
                    ""
                };
                return Err(format!("{l:?} is not a level (use {LEVELS}){hint}"));
            }
            _ => {}
        }
    }
    tracing_subscriber::EnvFilter::try_new(directives.join(","))
        .map_err(|e| format!("{text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_filters_are_levels_or_target_level_directives() {
        for ok in [
            "info",
            "WARN",
            "off",
            "webrep=debug,hyper=info",
            "info,webrep::proxy=trace",
            "webrep[conn]=debug",
            "webrep[conn{client.addr=127.0.0.1}]=trace",
            "debug,",
        ] {
            parse_log_filter(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
        for (bad, says) in [
            ("verbose", "\"verbose\" is not a level"),
            ("inf", "webrep=debug"),
            ("webrep=loud", "\"loud\" is not a level"),
            ("webrep=", "no level"),
            ("=info", "no target"),
            (" , ", "empty"),
            ("info,webrep", "\"webrep\" is not a level"),
        ] {
            let e = parse_log_filter(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?} gave {e}");
        }
    }
}
