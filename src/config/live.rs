//! Which settings a reload (SIGHUP) applies while the process runs, and which need a
//! restart: the one table of them ([`PROXY_LIVE`], [`SERVER_LIVE`]), and the comparison of
//! the running file with the new one ([`changes`]).
//!
//! Where it sits: the proxy's and the server's reload read the config file again, validate
//! it whole (a file that fails is refused and nothing of it applies), then ask [`changes`]
//! what differs from the running one. The live settings are applied by the runtime that owns
//! them; every other changed setting is named in the log and in the unit's status line as
//! needing a restart. docs/operations.md shows the same table; a test keeps the two in step.
//!
//! Settings are compared as the file's keys (`proxy.listen`, `access_log.syslog.address`),
//! defaults filled in, so that writing a default out or leaving it away is no change. Keys
//! of sections a process does not read are not its concern (the proxy ignores `server:`, the
//! server reads `server:` and `log:` only). Pure: two values in, key lists out.

use super::raw::RawConfig;

/// Which process is reloading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Proxy,
    Server,
}

/// A setting (a key, or a section: every key under it) that a reload applies at once.
#[derive(Debug, Clone, Copy)]
pub struct LiveKey {
    pub key: &'static str,
    /// Live only while it is set both before and after: switching it on or off needs a
    /// restart (the proxy builds authentication at start).
    pub while_set: bool,
    /// What applying it does, for the docs.
    pub applies: &'static str,
}

const fn live(key: &'static str, applies: &'static str) -> LiveKey {
    LiveKey {
        key,
        while_set: false,
        applies,
    }
}

/// What `webrep proxy` applies on reload.
pub const PROXY_LIVE: &[LiveKey] = &[
    live(
        "log.level",
        "the diagnostic log's filter (RUST_LOG, when set, still wins)",
    ),
    live(
        "policy.file",
        "the policy is read from the new file, and the file watch moves there",
    ),
    live(
        "access_log.path",
        "the access log is reopened at the new path",
    ),
    live(
        "access_log.format",
        "lines written after the reload use the new format",
    ),
    live(
        "access_log.syslog",
        "the access log switches to or from syslog",
    ),
    LiveKey {
        key: "auth.users_file",
        while_set: true,
        applies: "the users are read from the new file",
    },
    live(
        "auth.groups_file",
        "the groups are read from the new file (none: no groups)",
    ),
    live(
        "admin.token_file",
        "the admin API's token is read from the new file (none: API off)",
    ),
    live("proxy.connect_ports", "for CONNECTs from then on"),
    live("proxy.header_read_timeout_ms", "for requests from then on"),
    live(
        "proxy.client_idle_timeout_ms",
        "for idle waits from then on",
    ),
    live(
        "proxy.upstream_response_timeout_ms",
        "for requests from then on",
    ),
    live(
        "proxy.tunnel_idle_timeout_ms",
        "for tunnels opened from then on",
    ),
    live("proxy.splice", "for tunnels opened from then on"),
    live("proxy.shutdown_grace_period_ms", "for the next shutdown"),
    live("pac", "the next /proxy.pac and /wpad.dat answers"),
];

/// What `webrep server` applies on reload.
pub const SERVER_LIVE: &[LiveKey] = &[
    live(
        "log.level",
        "the diagnostic log's filter (RUST_LOG, when set, still wins)",
    ),
    live(
        "server.tokens_file",
        "tokens are read again; a removed one is refused at once",
    ),
    live("server.client_tokens", "tokens from then on"),
    live("server.admin_tokens", "tokens from then on"),
    live("server.escalation", "the escalation rules from then on"),
];

/// The table of `role`.
pub fn table(role: Role) -> &'static [LiveKey] {
    match role {
        Role::Proxy => PROXY_LIVE,
        Role::Server => SERVER_LIVE,
    }
}

/// Whether `role` reads the top-level section `section` at all.
fn reads(role: Role, section: &str) -> bool {
    match role {
        Role::Proxy => section != "server",
        Role::Server => matches!(section, "server" | "log"),
    }
}

/// What differs between two files, for one process: keys sorted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Changed keys the reload applies.
    pub live: Vec<String>,
    /// Changed keys that apply only after a restart.
    pub restart: Vec<String>,
}

/// Compares the settings `role` reads in `old` and `new` (see the module docs).
pub fn changes(role: Role, old: &RawConfig, new: &RawConfig) -> Changes {
    let (a, b) = (to_value(old), to_value(new));
    let mut changed = Vec::new();
    diff("", &a, &b, &mut changed);
    let mut out = Changes::default();
    for (key, was_set, is_set) in changed {
        let section = key.split('.').next().unwrap_or_default();
        if !reads(role, section) {
            continue;
        }
        let entry = table(role)
            .iter()
            .find(|l| key == l.key || key.starts_with(&format!("{}.", l.key)));
        match entry {
            Some(l) if !l.while_set || (was_set && is_set) => out.live.push(key),
            _ => out.restart.push(key),
        }
    }
    out
}

fn to_value(c: &RawConfig) -> serde_json::Value {
    // Plain data with string keys: serializing it cannot fail.
    serde_json::to_value(c).unwrap_or(serde_json::Value::Null)
}

/// Pushes `(key, set before, set after)` for every leaf that differs. Lists are compared
/// whole; a map whose keys are data (`proxy.hosts`: host names) is one setting.
fn diff(
    prefix: &str,
    a: &serde_json::Value,
    b: &serde_json::Value,
    out: &mut Vec<(String, bool, bool)>,
) {
    use serde_json::Value::Object;
    match (a, b) {
        (Object(x), Object(y)) if is_section(x) && is_section(y) => {
            let only_in_y = y.keys().filter(|k| !x.contains_key(*k));
            for k in x.keys().chain(only_in_y) {
                let null = serde_json::Value::Null;
                let (va, vb) = (x.get(k).unwrap_or(&null), y.get(k).unwrap_or(&null));
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                diff(&key, va, vb, out);
            }
        }
        _ if a != b => out.push((prefix.to_owned(), !a.is_null(), !b.is_null())),
        _ => {}
    }
}

/// A section of the file (its keys are setting names), not a map of data.
fn is_section(m: &serde_json::Map<String, serde_json::Value>) -> bool {
    m.keys()
        .all(|k| k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(yaml: &str) -> RawConfig {
        crate::yaml::from_yaml_str(yaml).unwrap()
    }

    #[test]
    fn live_and_restart_keys_are_told_apart_per_role() {
        let old = raw("proxy:\n  listen: [\"127.0.0.1:3128\"]\n");
        let new = raw(concat!(
            "proxy:\n  listen: [\"127.0.0.1:3129\"]\n  upstream_response_timeout_ms: 5000\n",
            "log:\n  level: debug\n",
            "access_log:\n  syslog:\n    enabled: true\n",
            "server:\n  ttl_secs: 60\n  client_tokens: [\"0123456789abcdef\"]\n",
            "intercept:\n  ca_dir: /elsewhere\n",
        ));
        let p = changes(Role::Proxy, &old, &new);
        assert_eq!(
            p.live,
            [
                "access_log.syslog.enabled",
                "log.level",
                "proxy.upstream_response_timeout_ms",
            ]
        );
        assert_eq!(p.restart, ["intercept.ca_dir", "proxy.listen"]);
        let s = changes(Role::Server, &old, &new);
        assert_eq!(s.live, ["log.level", "server.client_tokens"]);
        assert_eq!(s.restart, ["server.ttl_secs"]);
        assert_eq!(changes(Role::Proxy, &new, &new), Changes::default());
    }

    #[test]
    fn a_default_written_out_is_no_change_and_maps_of_data_are_one_setting() {
        let a = raw("");
        let b = raw("proxy:\n  listen: [\"127.0.0.1:3128\"]\n");
        assert_eq!(changes(Role::Proxy, &a, &b), Changes::default());
        let c = raw("proxy:\n  hosts:\n    intranet.example: [\"192.0.2.1\"]\n");
        assert_eq!(changes(Role::Proxy, &a, &c).restart, ["proxy.hosts"]);
    }

    #[test]
    fn a_new_policy_file_is_live_switching_filtering_is_not() {
        let a = raw("policy:\n  file: /etc/webrep/a.yaml\n");
        let b = raw("policy:\n  file: /etc/webrep/b.yaml\n  enabled: false\n");
        let c = changes(Role::Proxy, &a, &b);
        assert_eq!(
            (c.live, c.restart),
            (
                vec!["policy.file".to_owned()],
                vec!["policy.enabled".to_owned()]
            )
        );
    }

    #[test]
    fn switching_authentication_on_needs_a_restart_changing_its_file_does_not() {
        let none = raw("");
        let one = raw("auth:\n  users_file: /etc/webrep/users\n");
        let two = raw("auth:\n  users_file: /etc/webrep/users2\n");
        assert_eq!(
            changes(Role::Proxy, &none, &one).restart,
            ["auth.users_file"]
        );
        assert_eq!(changes(Role::Proxy, &one, &two).live, ["auth.users_file"]);
        assert_eq!(
            changes(Role::Proxy, &one, &none).restart,
            ["auth.users_file"]
        );
    }

    /// Every key of `v`, sections included.
    fn keys(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
        if let serde_json::Value::Object(m) = v {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.push(key.clone());
                keys(&key, v, out);
            }
        }
    }

    #[test]
    fn every_live_key_is_a_key_of_the_file() {
        let mut all = Vec::new();
        keys("", &to_value(&RawConfig::default()), &mut all);
        for l in PROXY_LIVE.iter().chain(SERVER_LIVE) {
            assert!(
                all.iter().any(|k| k == l.key),
                "{} is not a key of the config file",
                l.key
            );
        }
    }
}

#[cfg(test)]
mod proxy_section_tests {
    use super::*;
    use crate::config::Config;

    /// Every live `proxy.*` and `pac` key, changed from its default.
    const LIVE_CHANGED: &str = "proxy:
  connect_ports: [443, 8443]
  header_read_timeout_ms: 1234
  client_idle_timeout_ms: 2345
  upstream_response_timeout_ms: 3456
  tunnel_idle_timeout_ms: 4567
  splice: false
  shutdown_grace_period_ms: 5678
pac:
  direct_fallback: true
";

    const RESTART_CHANGED: &str = "proxy:
  listen: [\"127.0.0.1:1\"]
  max_connections: 7
  workers: 3
  upstream_connect_timeout_ms: 999
  via_name: other
";

    fn config(yaml: &str) -> Config {
        Config::from_yaml(yaml, "t").unwrap()
    }

    #[test]
    fn a_reload_takes_exactly_the_live_proxy_settings() {
        let old = config("");
        let live = config(LIVE_CHANGED);
        let c = changes(Role::Proxy, &old.raw, &live.raw);
        let mut want: Vec<&str> = PROXY_LIVE
            .iter()
            .map(|l| l.key)
            .filter(|k| k.starts_with("proxy.") || *k == "pac")
            .collect();
        want.sort_unstable();
        let got: Vec<&str> = c
            .live
            .iter()
            .map(|k| {
                if k.starts_with("pac.") {
                    "pac"
                } else {
                    k.as_str()
                }
            })
            .collect();
        assert_eq!(got, want, "the test changes every live proxy key");
        assert!(c.restart.is_empty(), "{:?}", c.restart);
        assert_eq!(
            format!("{:?}", old.proxy.with_live(&live.proxy)),
            format!("{:?}", live.proxy)
        );
        let restart = config(RESTART_CHANGED);
        assert_eq!(
            format!("{:?}", old.proxy.with_live(&restart.proxy)),
            format!("{:?}", old.proxy)
        );
        assert_eq!(changes(Role::Proxy, &old.raw, &restart.raw).live.len(), 0);
    }
}
