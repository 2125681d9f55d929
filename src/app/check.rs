//! `webrep config check FILE`: the config file, and what it points at, checked the way
//! `webrep proxy` and `webrep server` would use them at start, without starting anything.
//!
//! Reports every problem as `file:line:column: message`, the format of `webrep policy
//! check`: the config file's own (every YAML error the parser gets past, the first bad value
//! of each section), then for each file it names, in the order of the keys that name them,
//! either the problem at that key's position (missing, unreadable, not what it should be) or
//! the named file's own problems at their own positions (a policy's errors, a users file's
//! bad line). Checked for the proxy: the policy and reputation choice (no silent fallback),
//! `policy.file` (parsed and compiled), the interception CA when `intercept.enabled` (both
//! files, readable, a CA, the key matching: a test certificate is minted) and its
//! `upstream_ca_file`, `auth.users_file`,
//! `auth.groups_file`, `admin.token_file`, each source's `token_file` and `ca_file`; for the
//! server: its tokens (inline and `server.tokens_file`), `server.tls`, `server.upstream`'s
//! token and CA files.
//!
//! Which of the two is checked: `--for proxy|server`, else what the file configures (a
//! `server:` section means the server; any other section, or none, the proxy). The composition
//! root, because it reads what both sides read. Costs what loading those files costs (a big
//! policy compiles in a fraction of a second).

use std::path::Path;

pub use crate::cli::Service;
use crate::config::{Config, ConfigError, PolicySource, Problem};
use crate::policy::Policy;

/// The outcome of checking a config that could be read.
#[derive(Debug)]
pub struct Report {
    /// What it was checked for.
    pub services: Vec<Service>,
    /// Every problem, as `file:line:column: message`; empty when the config is good.
    pub problems: Vec<Problem>,
}

/// Checks the config file `path` (and what it names) for `only`, or for what it configures.
///
/// # Errors
/// The config file itself cannot be read.
pub fn check_config(
    path: &Path,
    only: Option<Service>,
) -> Result<Report, crate::fsread::ReadError> {
    let text = crate::fsread::read_to_string(path, crate::fsread::CONFIG_MAX)?;
    let origin = path.display().to_string();
    let services = match only {
        Some(s) => vec![s],
        None => services_of(&text),
    };
    let config = match Config::from_yaml(&text, &origin) {
        Ok(c) => c,
        Err(ConfigError::Invalid(problems)) => return Ok(Report { services, problems }),
        Err(ConfigError::Read(e)) => return Err(e),
    };
    let mut found: Vec<Found> = Vec::new();
    if services.contains(&Service::Proxy) {
        proxy_files(&config, &mut found);
    }
    if services.contains(&Service::Server) {
        server_files(&config, &mut found);
    }
    // In the order of the keys that name the files, each file's own problems kept together.
    found.sort_by_key(|f| f.at);
    let problems = found.into_iter().map(|f| f.problem).collect();
    Ok(Report { services, problems })
}

/// A problem, with the position of the config key it comes from (for the order).
struct Found {
    at: (u32, u32),
    problem: Problem,
}

/// Collects problems at or under one config key.
struct Collector<'a> {
    config: &'a Config,
    found: &'a mut Vec<Found>,
}

impl Collector<'_> {
    /// A problem at `key` of the config file.
    fn at(&mut self, key: &str, message: impl Into<String>) {
        let problem = self.config.origin.problem(key, message);
        self.found.push(Found {
            at: (problem.line, problem.column),
            problem,
        });
    }

    /// A problem in the file that `key` names, at its own position.
    fn inside(&mut self, key: &str, problem: Problem) {
        let p = self.config.origin.problem(key, "");
        self.found.push(Found {
            at: (p.line, p.column),
            problem,
        });
    }
}

/// What `webrep proxy` reads at start.
fn proxy_files(config: &Config, found: &mut Vec<Found>) {
    let mut c = Collector { config, found };
    for p in config.proxy_problems() {
        let at = (p.line, p.column);
        c.found.push(Found { at, problem: p });
    }
    if config.policy.enabled
        && let Some(PolicySource::File(file)) = &config.policy.source
    {
        policy_file(&mut c, file);
    }
    if config.intercept.enabled {
        ca_dir(&mut c);
        if let Some(path) = &config.intercept.upstream_ca_file
            && let Err(e) = crate::tls::client_config(Some(path))
        {
            c.at(
                "intercept.upstream_ca_file",
                format!("intercept.upstream_ca_file {e}"),
            );
        }
    }
    if let Some(path) = &config.auth.users_file {
        users_file(&mut c, path);
    }
    if let Some(path) = &config.auth.groups_file {
        groups_file(&mut c, path);
    }
    if let Some(path) = &config.admin.token_file {
        token_file(&mut c, "admin.token_file", path);
    }
    for (i, s) in config.reputation.sources.iter().enumerate() {
        let key = format!("reputation.sources[{i}]");
        let token = match (&s.token, &s.token_file) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(path)) => token_file(&mut c, &format!("{key}.token_file"), path),
            (None, None) => None,
        };
        if let (Some(ca), Some(token)) = (&s.ca_file, token)
            && let Err(e) = crate::client::RepClient::new(&s.url, &token, Some(ca))
        {
            c.at(
                &format!("{key}.ca_file"),
                format!("{key}.ca_file {}: {e}", ca.display()),
            );
        }
    }
}

fn policy_file(c: &mut Collector<'_>, file: &Path) {
    let text = match crate::fsread::read_to_string(file, crate::fsread::POLICY_MAX) {
        Ok(t) => t,
        Err(e) => return c.at("policy.file", format!("policy.file: {e}")),
    };
    if let Err(errors) = Policy::from_yaml(&text, &file.display().to_string()) {
        for e in errors.errors {
            let message = match &e.rule_id {
                Some(id) => format!("rule `{id}`: {}", e.message),
                None => e.message.clone(),
            };
            c.inside(
                "policy.file",
                Problem {
                    file: e.origin.clone(),
                    line: e.line,
                    column: e.column,
                    message,
                },
            );
        }
    }
}

/// The interception CA, as the proxy loads and tests it (a missing CA is fine with
/// `intercept.create_ca`: the proxy makes one).
fn ca_dir(c: &mut Collector<'_>) {
    use crate::intercept::{ca, mint::Minter};
    let ic = &c.config.intercept;
    let dir = ic.ca_dir.display().to_string();
    let loaded = match ca::load(&ic.ca_dir) {
        Ok(ca) => ca,
        Err(ca::CaError::Missing { .. }) if ic.create_ca => return,
        Err(e) => return c.at("intercept.ca_dir", format!("intercept.ca_dir {dir}: {e}")),
    };
    let minter = Minter::new(
        std::sync::Arc::new(loaded),
        ic.leaf_validity,
        ic.cert_cache_entries,
    );
    if let Err(e) = minter.self_test() {
        c.at(
            "intercept.ca_dir",
            format!("intercept.ca_dir {dir}: the CA cannot sign certificates clients accept: {e}"),
        );
    }
}

fn users_file(c: &mut Collector<'_>, path: &Path) {
    use crate::proxy::auth::{AuthError, count_users};
    let origin = path.display().to_string();
    let text =
        match crate::secrets::read_to_string(path, crate::fsread::USERS_MAX, "auth.users_file") {
            Ok(t) => t,
            Err(e) => return c.at("auth.users_file", format!("auth.users_file: {e}")),
        };
    match count_users(&text, &origin) {
        Ok(_) => {}
        Err(AuthError::Line { line, reason, .. }) => c.inside(
            "auth.users_file",
            Problem {
                file: origin,
                line: u32::try_from(line).unwrap_or(u32::MAX),
                column: 1,
                message: reason,
            },
        ),
        Err(e) => c.at("auth.users_file", format!("auth.users_file: {e}")),
    }
}

fn groups_file(c: &mut Collector<'_>, path: &Path) {
    let text = match crate::fsread::read_to_string(path, crate::fsread::GROUPS_MAX) {
        Ok(t) => t,
        Err(e) => return c.at("auth.groups_file", format!("auth.groups_file: {e}")),
    };
    if let Err(e) = crate::proxy::auth::parse_groups(&text) {
        c.inside(
            "auth.groups_file",
            Problem {
                file: path.display().to_string(),
                line: u32::try_from(e.line).unwrap_or(u32::MAX),
                column: 1,
                message: e.reason,
            },
        );
    }
}

/// Reads a token file as the service would; the token, or `None` with the problem noted.
fn token_file(c: &mut Collector<'_>, key: &str, path: &Path) -> Option<String> {
    match crate::secrets::read_token_file(path, key) {
        Ok(t) => Some(t),
        Err(e) => {
            c.at(key, e.to_string());
            None
        }
    }
}

/// What `webrep server` reads at start.
fn server_files(config: &Config, found: &mut Vec<Found>) {
    use crate::repserver::server;
    let mut c = Collector { config, found };
    let s = &config.server;
    if let Err(e) = server::load_tokens(s) {
        let key = if s.tokens_file.is_some() {
            "server.tokens_file"
        } else {
            "server"
        };
        c.at(key, format!("{key}: {e:#}"));
    }
    if let Err(e) = server::tls_acceptor_for(s) {
        c.at("server.tls", format!("server.tls: {e:#}"));
    }
    if let Some(u) = &s.upstream
        && let Err(e) = server::upstream(u)
    {
        c.at("server.upstream", format!("server.upstream: {e:#}"));
    }
}

/// The services a config configures: a `server:` section, the server; any other section,
/// or none, the proxy.
fn services_of(text: &str) -> Vec<Service> {
    let mut top: Vec<String> = crate::yaml::key_positions(text)
        .into_iter()
        .filter(|(k, _, _)| !k.contains(['.', '[']))
        .map(|(k, _, _)| k)
        .collect();
    top.dedup();
    let server = top.iter().any(|k| k == "server");
    let proxy = top.iter().any(|k| k != "server" && k != "log") || !server;
    let mut out = Vec::new();
    if proxy {
        out.push(Service::Proxy);
    }
    if server {
        out.push(Service::Server);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sections_say_which_service_a_file_is_for() {
        assert_eq!(services_of("server:\n  listen: x\n"), [Service::Server]);
        assert_eq!(
            services_of("server:\n  listen: x\nlog:\n  level: info\n"),
            [Service::Server]
        );
        assert_eq!(
            services_of("proxy:\n  listen: []\nserver: {}\n"),
            [Service::Proxy, Service::Server]
        );
        assert_eq!(services_of("# nothing\n"), [Service::Proxy]);
        assert_eq!(
            services_of("policy:\n  builtin: default\n"),
            [Service::Proxy]
        );
    }
}
