//! Configuration: the YAML file, validated into an immutable [`Config`] before any port is
//! bound.
//!
//! Three stages (as pingora and g3 do it): [`raw::RawConfig`] is the serde mirror of the file
//! with `deny_unknown_fields` and the only home of the defaults; each section is then
//! converted to typed values (socket addresses, networks, durations) and checked in its own
//! file, with the cross-field rules it needs ([`Config::from_raw`] lists them); the result is
//! shared read-only. With no file, the built-in defaults apply.
//!
//! A leaf below everything that runs: it imports only the pure vocabulary ([`crate::model`]),
//! the wire protocol's types ([`crate::api`]) and bounded file reads ([`crate::fsread`]); the
//! proxy, the reputation server, feedback and the CLI import their settings from here. Errors ([`ConfigError`]) name the file, and for
//! YAML errors the line and column, or the offending key for a bad value.

mod access_log;
mod admin;
mod auth;
mod check;
mod dns;
mod escalation;
mod feedback;
mod files;
mod intercept;
mod location;
mod log;
mod pac;
mod policy;
mod proxy;
pub mod raw;
mod reputation;
mod server;

use std::path::Path;

pub use access_log::AccessLogConfig;
pub use admin::AdminConfig;
pub use auth::AuthConfig;
pub use check::InvalidValue;
pub use dns::{DnsCacheConfig, ResolverKind, StaticHosts};
pub use escalation::{EscalationRule, FeedbackOptions};
pub use feedback::FeedbackConfig;
pub use files::FilesConfig;
pub use intercept::InterceptConfig;
pub use location::{
    DEFAULT_CONFIG_DIR, DEFAULT_CONFIG_DIR_ENV, DEFAULT_CONFIG_FILE, config_file_to_read,
    default_config_file,
};
pub use log::{LogConfig, parse_log_filter};
pub use pac::{Bypass, PacConfig};
pub use policy::PolicyConfig;
pub use proxy::ProxyConfig;
pub use raw::{AccessLogFormat, LogFormat, NonTlsAction, RawConfig};
/// `server.upstream.feedback`: every value of it is valid, so the raw section is the
/// validated one.
pub use raw::{Disclosure, RawUpstreamFeedback as UpstreamFeedback, Retention, UrlDisclosure};
pub use reputation::{ReputationSettings, ReputationSource};
pub use server::{ApiConfig, ServerConfig, TlsServerConfig, UpstreamConfig};

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file")]
    Read(#[source] crate::fsread::ReadError),
    #[error("{path}: {message}")]
    Syntax { path: String, message: String },
    #[error("{path}: invalid value for key `{key}`: {reason}")]
    Invalid {
        path: String,
        key: &'static str,
        reason: String,
    },
}

impl InvalidValue {
    /// This error in the file (or other origin) `path`.
    fn at(self, path: &str) -> ConfigError {
        ConfigError::Invalid {
            path: path.to_owned(),
            key: self.key,
            reason: self.reason,
        }
    }
}

/// The validated configuration: one validated section per top-level key of the file.
#[derive(Debug, Clone)]
pub struct Config {
    pub proxy: ProxyConfig,
    pub auth: AuthConfig,
    pub access_log: AccessLogConfig,
    pub log: LogConfig,
    pub intercept: InterceptConfig,
    pub policy: PolicyConfig,
    pub files: FilesConfig,
    pub admin: AdminConfig,
    pub reputation: ReputationSettings,
    pub server: ServerConfig,
    pub feedback: FeedbackConfig,
}

impl Config {
    /// Loads and validates a config file; `None` gives the built-in defaults.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        match path {
            None => Self::from_raw(RawConfig::default(), "<defaults>"),
            Some(path) => {
                let text = crate::fsread::read_to_string(path, crate::fsread::CONFIG_MAX)
                    .map_err(ConfigError::Read)?;
                Self::from_yaml(&text, &path.display().to_string())
            }
        }
    }

    /// Parses and validates YAML text; `origin` names it in errors (usually the file path).
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        // An empty file (or one holding only comments) means "all defaults".
        let raw: RawConfig = if text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            RawConfig::default()
        } else {
            crate::yaml::from_yaml_str(text).map_err(|message| ConfigError::Syntax {
                path: origin.to_owned(),
                message,
            })?
        };
        Self::from_raw(raw, origin)
    }

    /// Validates each section of a raw config; `origin` names it in errors. Sections are
    /// checked in this order, so that of several bad values the first reported stays the
    /// same: `proxy` (with `pac`), `auth`, `access_log`, `log`, `server`, `intercept`,
    /// `reputation`, `feedback` (which needs to know whether reputation sources exist),
    /// `policy`, `files`, `admin`.
    pub fn from_raw(raw: RawConfig, origin: &str) -> Result<Self, ConfigError> {
        Self::sections(raw).map_err(|e| e.at(origin))
    }

    fn sections(raw: RawConfig) -> Result<Self, InvalidValue> {
        let RawConfig {
            proxy,
            auth,
            access_log,
            log,
            intercept,
            policy,
            files,
            reputation,
            server,
            feedback,
            pac,
            admin,
        } = raw;
        let proxy = ProxyConfig::validate(proxy, pac)?;
        let auth = AuthConfig::try_from(auth)?;
        let access_log = AccessLogConfig::try_from(access_log)?;
        let log = LogConfig::try_from(log)?;
        let server = ServerConfig::try_from(server)?;
        let intercept = InterceptConfig::try_from(intercept)?;
        let reputation = ReputationSettings::try_from(reputation)?;
        let feedback = FeedbackConfig::validate(feedback, !reputation.sources.is_empty())?;
        let policy = PolicyConfig::from(policy);
        let files = FilesConfig::try_from(files)?;
        let admin = AdminConfig::try_from(admin)?;
        Ok(Self {
            proxy,
            auth,
            access_log,
            log,
            intercept,
            policy,
            files,
            admin,
            reputation,
            server,
            feedback,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ipnet::IpNet;

    use super::*;

    #[test]
    fn defaults_are_loopback_only_and_sane() {
        let c = Config::load(None).unwrap();
        assert_eq!(c.proxy.listen, vec!["127.0.0.1:3128".parse().unwrap()]);
        assert_eq!(
            c.proxy.allowed_clients,
            vec![
                "127.0.0.0/8".parse::<IpNet>().unwrap(),
                "::1/128".parse().unwrap()
            ]
        );
        assert_eq!(c.proxy.connect_ports, vec![443]);
        assert!(!c.proxy.allow_internal_destinations);
        assert_eq!(c.proxy.max_header_bytes, 65_536);
        assert_eq!(c.proxy.max_header_lines, 100);
        assert!(c.auth.users_file.is_none());
        assert!(c.access_log.enabled && c.access_log.path.is_none());
        assert!(c.proxy.via_name.starts_with("webrep"));
        assert_eq!(c.proxy.dns_cache, DnsCacheConfig::default());
        assert_eq!(c.proxy.dns_cache.resolver, ResolverKind::Hickory);
        assert!(c.proxy.dns_cache.nameservers.is_empty());
        assert_eq!(c.proxy.dns_cache.max_bytes, 64 * 1024 * 1024);
        assert_eq!(c.proxy.dns_cache.min_ttl, Duration::from_secs(1));
        assert_eq!(c.proxy.dns_cache.max_ttl, Duration::from_secs(3600));
        assert_eq!(c.proxy.dns_cache.negative_max_ttl, Duration::from_secs(300));
        assert_eq!(c.proxy.dns_cache.negative_ttl, Duration::from_secs(5));
        // The runtime's defaults are these sections' defaults, converted.
        assert_eq!(c.files, FilesConfig::default());
        assert_eq!(c.server.api.ttl_secs, ApiConfig::default().ttl_secs);
        assert_eq!(
            c.server.feedback.retention,
            FeedbackOptions::default().retention
        );
    }

    #[test]
    fn unknown_key_is_an_error_naming_key_and_line() {
        let err = Config::from_yaml(
            "proxy:\n  listen: [\"127.0.0.1:1\"]\n  max_conections: 5\n",
            "t.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("max_conections"), "{err}");
        assert!(err.contains("t.yaml"), "{err}");
        assert!(err.contains('3'), "line number missing: {err}");
    }

    #[test]
    fn bad_values_name_the_key() {
        for (yaml, key) in [
            ("proxy:\n  listen: [\"nonsense\"]\n", "proxy.listen"),
            (
                "proxy:\n  allowed_clients: [\"10.0.0.0/33\"]\n",
                "proxy.allowed_clients",
            ),
            ("proxy:\n  max_header_bytes: 10\n", "proxy.max_header_bytes"),
            ("proxy:\n  max_header_lines: 5\n", "proxy.max_header_lines"),
            (
                "proxy:\n  max_header_lines: 10001\n",
                "proxy.max_header_lines",
            ),
            ("proxy:\n  connect_ports: [0]\n", "proxy.connect_ports"),
            (
                "proxy:\n  tunnel_idle_timeout_ms: 0\n",
                "proxy.tunnel_idle_timeout_ms",
            ),
            ("proxy:\n  via_name: \"a b\"\n", "proxy.via_name"),
            ("proxy:\n  dns_cache_bytes: 0\n", "proxy.dns_cache_bytes"),
            ("proxy:\n  dns_resolver: bind\n", "proxy.dns_resolver"),
            (
                "proxy:\n  dns_nameservers: [\"ns.example\"]\n",
                "proxy.dns_nameservers",
            ),
            (
                "proxy:\n  dns_resolver: system\n  dns_nameservers: [\"127.0.0.1\"]\n",
                "proxy.dns_nameservers",
            ),
            (
                "proxy:\n  dns_min_ttl_ms: 10\n  dns_max_ttl_ms: 5\n",
                "proxy.dns_min_ttl_ms",
            ),
            ("proxy:\n  dns_attempts: 11\n", "proxy.dns_attempts"),
            (
                "proxy:\n  happy_eyeballs_delay_ms: 0\n",
                "proxy.happy_eyeballs_delay_ms",
            ),
            ("auth:\n  realm: 'a\"b'\n", "auth.realm"),
            ("log:\n  level: verbose\n", "log.level"),
        ] {
            let err = Config::from_yaml(yaml, "t.yaml").unwrap_err().to_string();
            assert!(err.contains(key), "{yaml:?} gave {err}");
        }
    }

    #[test]
    fn upstream_follows_everything_by_default_and_asks_only_about_a_partial_mirror() {
        let base = "server:\n  upstream:\n    url: \"http://192.0.2.1:8480\"\n    token: \"upstream-token-0123456789\"\n";
        let u = Config::from_yaml(base, "t")
            .unwrap()
            .server
            .upstream
            .unwrap();
        assert_eq!(u.follow, Some(crate::api::sync::Subscription::default()));
        assert!(
            !u.ask_on_miss,
            "a whole mirror: a miss here is a miss there"
        );
        assert_eq!(u.sync_page, 5000);
        let partial = format!("{base}    follow_sources: [\"feed:urlhaus\", escalation]\n");
        let u = Config::from_yaml(&partial, "t")
            .unwrap()
            .server
            .upstream
            .unwrap();
        assert!(u.ask_on_miss);
        assert_eq!(u.follow.unwrap().sources, ["feed:urlhaus", "escalation"]);
        let ask = format!("{base}    follow: false\n");
        let u = Config::from_yaml(&ask, "t")
            .unwrap()
            .server
            .upstream
            .unwrap();
        assert_eq!((u.follow, u.ask_on_miss), (None, true));
        for (bad, key) in [
            ("follow: false\n    ask_on_miss: false", "server.upstream"),
            ("follow_sources: [\"urlhaus\"]", "follow_sources"),
            (
                "follow_categories: [\"Not A Category\"]",
                "follow_categories",
            ),
            ("sync_page: 20000", "sync_page"),
            ("sync_page: 0", "sync_page"),
        ] {
            let yaml = format!("{base}    {bad}\n");
            let e = Config::from_yaml(&yaml, "t").unwrap_err().to_string();
            assert!(e.contains(key), "{bad}: {e}");
        }
    }

    #[test]
    fn upstream_feedback_defaults_to_forwarding_anonymized_and_reads_every_value() {
        let base = "server:\n  upstream:\n    url: \"http://192.0.2.1:8480\"\n    token: \"upstream-token-0123456789\"\n";
        let c = Config::from_yaml(base, "t").unwrap();
        let f = c.server.upstream.unwrap().feedback;
        assert!(f.forward);
        assert_eq!(
            (f.client, f.user),
            (Disclosure::Anonymize, Disclosure::Anonymize)
        );
        assert_eq!(
            (f.comment, f.url),
            (Retention::Drop, UrlDisclosure::StripQuery)
        );
        let yaml = format!(
            "{base}    feedback:\n      forward: false\n      client: keep\n      user: drop\n      comment: keep\n      url: keep\n"
        );
        let f = Config::from_yaml(&yaml, "t")
            .unwrap()
            .server
            .upstream
            .unwrap()
            .feedback;
        assert!(!f.forward);
        assert_eq!((f.client, f.user), (Disclosure::Keep, Disclosure::Drop));
        assert_eq!((f.comment, f.url), (Retention::Keep, UrlDisclosure::Keep));
        for bad in ["client: hash", "comment: anonymize", "users: keep"] {
            let yaml = format!("{base}    feedback:\n      {bad}\n");
            assert!(Config::from_yaml(&yaml, "t").is_err(), "{bad}");
        }
    }

    #[test]
    fn feedback_aggregation_defaults_to_a_minute_of_high_volume_kinds_and_refuses_blocks() {
        use crate::api::events::Kind;
        let f = Config::from_yaml("", "t").unwrap().feedback;
        assert_eq!(f.aggregate, Some(std::time::Duration::from_secs(60)));
        assert_eq!(
            f.aggregate_kinds,
            [Kind::Untested, Kind::Allowed, Kind::ReputationUnavailable]
        );
        assert_eq!(f.aggregate_max_hosts, 100_000);
        let f = Config::from_yaml(
            "feedback:
  aggregate_secs: 0
",
            "t",
        )
        .unwrap()
        .feedback;
        assert_eq!(f.aggregate, None, "0 sends every event on its own");
        let ok = "feedback:
  aggregate_kinds: [untested, monitored]
";
        assert_eq!(
            Config::from_yaml(ok, "t").unwrap().feedback.aggregate_kinds,
            [Kind::Untested, Kind::Monitored]
        );
        for kind in [
            "blocked",
            "warned",
            "continued",
            "user_report",
            "file_verdict",
        ] {
            let yaml = format!("feedback:\n  aggregate_kinds: [untested, {kind}]\n");
            let e = Config::from_yaml(&yaml, "t").unwrap_err().to_string();
            assert!(
                e.contains("feedback.aggregate_kinds") && e.contains("one event each"),
                "{kind}: {e}"
            );
        }
        let e = Config::from_yaml(
            "feedback:
  aggregate_max_hosts: 0
",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("feedback.aggregate_max_hosts"), "{e}");
    }

    #[test]
    fn empty_file_means_defaults() {
        let c = Config::from_yaml("# nothing here\n\n", "t.yaml").unwrap();
        assert_eq!(c.proxy.connect_ports, vec![443]);
    }

    #[test]
    fn a_bare_address_is_a_host_network() {
        let c = Config::from_yaml("proxy:\n  allowed_clients: [\"192.0.2.7\"]\n", "t").unwrap();
        assert_eq!(
            c.proxy.allowed_clients,
            vec!["192.0.2.7/32".parse::<IpNet>().unwrap()]
        );
    }
}
