//! The composition root: the only part of the crate that sees both the proxy side and the
//! reputation server, and the only one that wires parts together. Nothing below imports it.
//!
//! - [`proxy`]: `webrep proxy`, built ([`proxy::ProxyApp::start`]) and run beside its
//!   background tasks, stopped in one sequence.
//! - [`run_proxy`] and [`run_server`]: what the binary runs for `webrep proxy` and
//!   `webrep server`, with the process's signal handlers installed once
//!   ([`crate::shutdown::Signals`]).
//! - [`check`]: `webrep config check`, the config and the files it names checked as the
//!   proxy and the server would use them.
//! - [`reload`]: what SIGHUP does to a running proxy (the config file read again, live
//!   settings applied, the rest named as needing a restart).
//! - [`commands`]: the command-line commands that talk to a server or open a store
//!   (`webrep import`, `lookup`, `feedback`).
//! - [`generate`]: the manual pages and shell completions (`webrep generate`).

pub mod check;
pub mod commands;
pub mod generate;
pub mod passwd;
pub mod proxy;
pub mod reload;

use std::path::Path;
use std::sync::Arc;

use crate::config::Config;
use crate::shutdown::Signals;

/// `webrep proxy`: opens the access log, builds and binds the proxy, runs it until SIGTERM
/// or SIGINT (reloading `config_file` on SIGHUP, reopening the access log on SIGUSR1), then
/// drains and stops.
///
/// # Errors
/// Anything [`proxy::ProxyApp::start`] refuses; an access log that cannot be opened.
pub async fn run_proxy(config: Config, config_file: Option<&Path>) -> anyhow::Result<()> {
    let access_log = Arc::new(
        crate::accesslog::AccessLog::open(&config.access_log).map_err(|e| {
            anyhow::Error::new(e).context(crate::exit::Misconfigured(
                "access_log.path cannot be opened".into(),
            ))
        })?,
    );
    let signals = Signals::install()?;
    let app = proxy::ProxyApp::start(&config, access_log)
        .await?
        .with_config_file(&config, config_file)
        .with_reopens(signals.reopens());
    app.run(signals.shutdown(), signals.reloads()).await;
    Ok(())
}

/// `webrep server`: runs the reputation server of `config` until SIGTERM or SIGINT; SIGHUP
/// reads `config_file` again for its tokens and escalation rules.
///
/// # Errors
/// See [`crate::repserver::server::run`].
pub async fn run_server(config: &Config, config_file: Option<&Path>) -> anyhow::Result<()> {
    let signals = Signals::install()?;
    crate::repserver::server::run(
        &config.server,
        config_file,
        &config.raw,
        signals.shutdown(),
        signals.reloads(),
    )
    .await
}
