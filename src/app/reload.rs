//! What SIGHUP does to a running `webrep proxy`: read the config file again and apply what
//! can change live, then read the files it names (policy, users, groups, admin token) again.
//!
//! The new file is read and validated whole on the blocking pool. A file that fails (syntax,
//! an unknown key, a bad value) is refused as a whole: the running config stays, the error
//! is logged with where it is, and the status line says so; the named files are still read
//! again, as SIGHUP did before there was a config to reload. A valid file is compared with
//! the running one ([`crate::config::live`]): live settings are applied at once (the proxy's
//! [`ProxyState::apply_live`], the log filter, the access log's destination and format),
//! and every changed setting that needs a restart is named in the log
//! (`proxy.listen changed: needs a restart`) and in the status line for systemd. The access
//! log is reopened on every reload, so a rotation with SIGHUP works as with SIGUSR1.
//!
//! Nothing here is on the request path; a reload costs a file read and parse.

use std::path::{Path, PathBuf};

use crate::config::live::{self, Role};
use crate::config::{Config, RawConfig};
use crate::proxy::{ProxyState, Reloaded};

/// The config a proxy runs with, and where to read it again.
pub struct ProxyReloader {
    /// `None`: the built-in defaults; a reload reads the named files only.
    file: Option<PathBuf>,
    /// The file the proxy started with: settings that need a restart still have these values.
    started: RawConfig,
    /// The file last applied.
    running: RawConfig,
}

impl ProxyReloader {
    /// For a proxy started with `config`, read from `file`.
    pub fn new(config: &Config, file: Option<&Path>) -> Self {
        Self {
            file: file.map(Path::to_path_buf),
            started: config.raw.clone(),
            running: config.raw.clone(),
        }
    }

    /// One reload (see the module docs); returns the status line for systemd.
    pub async fn reload(&mut self, state: &ProxyState) -> String {
        let mut notes = Vec::new();
        match self.read().await {
            None => state.access_log.reopen(None),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "config reload refused; the running config is kept");
                state.access_log.reopen(None);
                notes.push(format!("config refused, running config kept: {e}"));
            }
            Some(Ok(config)) => notes.extend(self.apply(state, &config)),
        }
        let files = state.reload().await;
        notes.insert(0, files_status(&files));
        notes.join("; ")
    }

    /// The config file read and validated again (`None` without one), or why it was refused.
    async fn read(&self) -> Option<Result<Config, String>> {
        let path = self.file.clone()?;
        let read = tokio::task::spawn_blocking(move || Config::load(Some(&path)))
            .await
            .map_err(|e| e.to_string());
        Some(match read {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(crate::client::chain(&e)),
            Err(e) => Err(e),
        })
    }

    /// Applies the live settings of `config` and names what needs a restart; the note for
    /// the status line, if any.
    fn apply(&mut self, state: &ProxyState, config: &Config) -> Option<String> {
        let applied = live::changes(Role::Proxy, &self.running, &config.raw).live;
        let restart = live::changes(Role::Proxy, &self.started, &config.raw).restart;
        state.apply_live(config);
        match crate::telemetry::set_level(&config.log.level) {
            Ok(true) => {}
            Ok(false) if applied.iter().any(|k| k == "log.level") => {
                tracing::warn!("log.level changed but RUST_LOG is set and wins");
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "log.level not applied"),
        }
        state.access_log.reopen(Some(&config.access_log));
        for key in &applied {
            tracing::info!("{key} changed: applied");
        }
        for key in &restart {
            tracing::warn!("{key} changed: needs a restart");
        }
        self.running = config.raw.clone();
        (!restart.is_empty()).then(|| format!("needs a restart: {}", restart.join(", ")))
    }
}

/// The status of the file reads: the policy generation, or what failed.
fn files_status(r: &Reloaded) -> String {
    match (r.errors.is_empty(), r.generation) {
        (true, Some(g)) => format!("policy generation {g} loaded"),
        (true, None) => "reloaded".to_owned(),
        (false, _) => format!(
            "reload failed, running version kept: {}",
            r.errors.join("; ")
        ),
    }
}
