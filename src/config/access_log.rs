//! The validated `access_log:` section: whether, where and how one line per request and per
//! tunnel is written (a file, standard output, or syslog).
//!
//! Read by the access log writer, at start and again on reload (`path`, `format` and
//! `syslog` apply on reload; `enabled` and `buffer_bytes` at start only). Fails on a buffer
//! under 4 KiB, an empty path (`-` is standard output), and with syslog on, an address that
//! is neither an absolute path nor `ip:port`, an unknown facility or an APP-NAME syslog
//! cannot carry.

use std::path::PathBuf;

use super::check::InvalidValue;
use super::raw::{AccessLogFormat, RawAccessLogConfig, RawSyslogConfig};

/// Validated `access_log:` section.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessLogConfig {
    pub enabled: bool,
    /// `None` is standard output.
    pub path: Option<PathBuf>,
    pub format: AccessLogFormat,
    pub buffer_bytes: usize,
    /// With `access_log.syslog.enabled`: lines go there instead of `path`.
    pub syslog: Option<crate::syslog::Settings>,
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
            syslog: syslog(&l.syslog)?,
        })
    }
}

/// `access_log.syslog`, when enabled.
fn syslog(s: &RawSyslogConfig) -> Result<Option<crate::syslog::Settings>, InvalidValue> {
    if !s.enabled {
        return Ok(None);
    }
    let target = crate::syslog::Target::parse(&s.address)
        .map_err(|r| InvalidValue::new("access_log.syslog.address", r))?;
    let facility = crate::syslog::facility(&s.facility).ok_or_else(|| {
        InvalidValue::new(
            "access_log.syslog.facility",
            format!(
                "{:?}: use user, daemon, auth, authpriv or local0 to local7",
                s.facility
            ),
        )
    })?;
    if !crate::syslog::is_app_name(&s.app_name) {
        return Err(InvalidValue::new(
            "access_log.syslog.app_name",
            format!(
                "{:?}: 1 to 48 printable ASCII characters, no spaces",
                s.app_name
            ),
        ));
    }
    Ok(Some(crate::syslog::Settings {
        target,
        facility,
        app_name: s.app_name.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syslog_is_off_by_default_and_checked_when_on() {
        let off = AccessLogConfig::try_from(RawAccessLogConfig::default()).unwrap();
        assert_eq!(off.syslog, None);
        let mut raw = RawAccessLogConfig::default();
        raw.syslog.enabled = true;
        let on = AccessLogConfig::try_from(raw.clone()).unwrap();
        assert_eq!(
            on.syslog,
            Some(crate::syslog::Settings {
                target: crate::syslog::Target::Unix("/dev/log".into()),
                facility: 16,
                app_name: "webrep".into(),
            })
        );
        for (key, bad) in [
            ("access_log.syslog.address", "loghost:514"),
            ("access_log.syslog.facility", "kern"),
            ("access_log.syslog.app_name", "web rep"),
        ] {
            let mut r = raw.clone();
            match key {
                "access_log.syslog.address" => r.syslog.address = bad.into(),
                "access_log.syslog.facility" => r.syslog.facility = bad.into(),
                _ => r.syslog.app_name = bad.into(),
            }
            let e = AccessLogConfig::try_from(r).unwrap_err();
            assert_eq!(e.key, key);
        }
    }
}
