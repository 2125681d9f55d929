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
//! proxy, the reputation server, feedback and the CLI import their settings from here.
//! Errors ([`ConfigError`]) are [`Problem`]s, `file:line:column: message` as `webrep policy
//! check` prints them: every YAML error the parser can get past, and the first bad value of
//! each section at the position of its key. A config remembers where each key was
//! ([`Origin`]), so that what checks it later (the files it names, in `crate::app`) reports
//! at the key too.

mod access_log;
mod admin;
mod auth;
mod check;
mod dns;
mod escalation;
mod feedback;
mod files;
mod intercept;
pub mod live;
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
pub use policy::{PolicyConfig, PolicySource};
pub use proxy::ProxyConfig;
pub use raw::{AccessLogFormat, BuiltinPolicy, LogFormat, NonTlsAction, RawConfig};
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
    /// Every problem found, in line order; never empty.
    #[error("{}", lines(.0))]
    Invalid(Vec<Problem>),
}

fn lines(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// One problem in a file, at a position: shown as `file:line:column: message`, the format
/// of `webrep policy check` (line and column are 1-based, 0 when there is no position: a
/// key that the file does not spell out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: u32,
    pub column: u32,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Where a config came from: its file (or other origin) and the position of each key it
/// spells out, so that a problem found later (a file it names that is missing) is reported
/// at the key that names it.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    file: String,
    keys: Vec<(String, u32, u32)>,
}

impl Origin {
    /// The origin of YAML `text` read from `file`.
    pub fn of_text(file: &str, text: &str) -> Self {
        Self {
            file: file.to_owned(),
            keys: crate::yaml::key_positions(text),
        }
    }

    /// The file (or other origin) the config came from.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// A problem with the dotted `key` (`reputation.sources[0].token_file`, or without the
    /// index), at the key's position, or at its closest enclosing key that the file spells
    /// out (0:0 when none).
    pub fn problem(&self, key: &str, message: impl Into<String>) -> Problem {
        let (line, column) = self.position(key);
        Problem {
            file: self.file.clone(),
            line,
            column,
            message: message.into(),
        }
    }

    fn position(&self, key: &str) -> (u32, u32) {
        let mut key = key;
        loop {
            let found = self
                .keys
                .iter()
                .find(|(k, _, _)| k == key)
                .or_else(|| self.keys.iter().find(|(k, _, _)| without_index(k) == key));
            if let Some(&(_, line, column)) = found {
                return (line, column);
            }
            match key.rfind(['.', '[']) {
                Some(i) => key = &key[..i],
                None => return (0, 0),
            }
        }
    }
}

/// `a[0].b[1]` as `a.b`.
fn without_index(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut depth = 0;
    for c in key.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            c if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
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
    /// Where it came from, with the position of each key.
    pub origin: Origin,
    /// The file as written (defaults filled in): what a reload compares the new file with
    /// ([`live`]).
    pub raw: RawConfig,
}

/// The policy file the quick start (no config file) uses when it is there.
pub const QUICK_START_POLICY: &str = "policies/default.yaml";

impl Config {
    /// Loads and validates a config file; `None` gives the quick start: the built-in
    /// defaults with `policies/default.yaml` when it is in the working directory (else the
    /// built-in default policy) and the in-process sample reputation server.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        match path {
            None => Self::from_raw(Self::quick_start(), "<defaults>"),
            Some(path) => {
                let text = crate::fsread::read_to_string(path, crate::fsread::CONFIG_MAX)
                    .map_err(ConfigError::Read)?;
                Self::from_yaml(&text, &path.display().to_string())
            }
        }
    }

    /// The raw config of the quick start (see [`load`](Self::load)).
    fn quick_start() -> RawConfig {
        let mut raw = RawConfig::default();
        let file = std::path::PathBuf::from(QUICK_START_POLICY);
        if file.is_file() {
            raw.policy.file = Some(file);
        } else {
            raw.policy.builtin = Some(BuiltinPolicy::Default);
        }
        raw.reputation.embedded_sample = true;
        raw
    }

    /// Parses and validates YAML text; `origin` names it in errors (usually the file path).
    /// Every problem is reported: each YAML error the parser can get past, and the first bad
    /// value of each section.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let positions = Origin::of_text(origin, text);
        // An empty file (or one holding only comments) means "all defaults".
        let raw: RawConfig = if text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            RawConfig::default()
        } else {
            crate::yaml::from_yaml_str_all(text).map_err(|errors| {
                ConfigError::Invalid(
                    errors
                        .into_iter()
                        .map(|e| Problem {
                            file: origin.to_owned(),
                            line: e.line,
                            column: e.column,
                            message: e.message,
                        })
                        .collect(),
                )
            })?
        };
        Self::validate(raw, positions)
    }

    /// Validates each section of a raw config; `origin` names it in errors. Sections are
    /// checked in this order, and the first bad value of each is reported: `proxy` (with
    /// `pac`), `auth`, `access_log`, `log`, `server`, `intercept`, `reputation`, `feedback`
    /// (which needs to know whether reputation sources exist), `policy`, `files`, `admin`.
    pub fn from_raw(raw: RawConfig, origin: &str) -> Result<Self, ConfigError> {
        Self::validate(
            raw,
            Origin {
                file: origin.to_owned(),
                keys: Vec::new(),
            },
        )
    }

    fn validate(raw: RawConfig, origin: Origin) -> Result<Self, ConfigError> {
        match Self::sections(raw) {
            Ok(mut c) => {
                c.origin = origin;
                Ok(c)
            }
            Err(errors) => {
                let mut problems: Vec<Problem> = errors
                    .into_iter()
                    .map(|e| origin.problem(e.key, format!("{}: {}", e.key, e.reason)))
                    .collect();
                problems.sort_by_key(|p| (p.line, p.column));
                Err(ConfigError::Invalid(problems))
            }
        }
    }

    fn sections(raw: RawConfig) -> Result<Self, Vec<InvalidValue>> {
        let copy = raw.clone();
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
        let mut errors = Vec::new();
        let proxy = ok_or_push(ProxyConfig::validate(proxy, pac), &mut errors);
        let auth = ok_or_push(AuthConfig::try_from(auth), &mut errors);
        let access_log = ok_or_push(AccessLogConfig::try_from(access_log), &mut errors);
        let log = ok_or_push(LogConfig::try_from(log), &mut errors);
        let server = ok_or_push(ServerConfig::try_from(server), &mut errors);
        let intercept = ok_or_push(InterceptConfig::try_from(intercept), &mut errors);
        let reputation = ok_or_push(ReputationSettings::try_from(reputation), &mut errors);
        let has_sources = reputation.as_ref().is_some_and(|r| !r.sources.is_empty());
        let feedback = ok_or_push(FeedbackConfig::validate(feedback, has_sources), &mut errors);
        let policy = ok_or_push(PolicyConfig::try_from(policy), &mut errors);
        let files = ok_or_push(FilesConfig::try_from(files), &mut errors);
        let admin = ok_or_push(AdminConfig::try_from(admin), &mut errors);
        let (
            Some(proxy),
            Some(auth),
            Some(access_log),
            Some(log),
            Some(server),
            Some(intercept),
            Some(reputation),
            Some(feedback),
            Some(policy),
            Some(files),
            Some(admin),
        ) = (
            proxy, auth, access_log, log, server, intercept, reputation, feedback, policy, files,
            admin,
        )
        else {
            return Err(errors);
        };
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
            origin: Origin::default(),
            raw: copy,
        })
    }

    /// What `webrep proxy` needs beyond valid sections: with filtering on, a config names
    /// its policy (`policy.file` or `policy.builtin`) and where reputation comes from
    /// (`reputation.sources`, or `reputation.embedded_sample`), so that a production proxy
    /// never falls back to a policy or a reputation table nobody chose. Each problem is at
    /// the key concerned. Empty when nothing is missing.
    pub fn proxy_problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        if !self.policy.enabled {
            return out;
        }
        if self.policy.source.is_none() {
            out.push(self.origin.problem(
                "policy.file",
                "policy.file: no policy named: set policy.file (for example \
                 /etc/webrep/policy.yaml), or policy.builtin: default for the policy built into \
                 the binary (or policy.enabled: false for a plain forward proxy)",
            ));
        }
        if self.reputation.sources.is_empty() && !self.reputation.embedded_sample {
            out.push(self.origin.problem(
                "reputation.sources",
                "reputation.sources: no reputation source: list your reputation servers, or \
                 set reputation.embedded_sample: true for a server in the proxy holding only \
                 the sample data (for trying webrep out)",
            ));
        }
        out
    }
}

/// `r`'s value, or `None` with its error added to `errors`.
fn ok_or_push<T>(r: Result<T, InvalidValue>, errors: &mut Vec<InvalidValue>) -> Option<T> {
    r.map_err(|e| errors.push(e)).ok()
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
