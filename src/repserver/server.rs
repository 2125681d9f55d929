//! `webrep server`: turns the validated `server:` configuration into a running API.
//!
//! # What it does
//! Reads the bearer tokens (inline and from `tokens_file`; files through [`crate::fsread`]),
//! removes the import uploads a killed server left beside the store ([`super::upload`]),
//! opens (or creates) the store,
//! loads the shipped sample data when asked, builds the TLS acceptor and the upstream tier
//! (with the feedback forwarder, [`super::forward`], unless `server.upstream.feedback.forward`
//! is off),
//! binds the listener (and `server.metrics_listen`'s), tells systemd it is ready, and runs
//! [`api::serve_with`] until the shutdown token is cancelled. SIGHUP reads the config file
//! again and applies its tokens (inline and `tokens_file`, [`load_tokens`]) and its
//! `server.escalation` rules; a config or tokens file that fails to load keeps the running
//! tokens and rules, and other changed settings are reported as waiting for a restart.
//!
//! # How it fails
//! Everything that can be checked is checked before the port is bound, each with a message
//! that names the file or key: no tokens at all, an unreadable or malformed tokens file, a
//! store that cannot be opened (or is from a newer webrep), unreadable TLS files, a bad
//! upstream token file or CA file, a port in use.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::api::{self, ServeOptions, Tokens};
use super::follow::Follow;
use super::import::{self, Format, ImportOptions};
use super::store::Store;
use super::upstream::Upstream;
use crate::client::RepClient;
use crate::config::ServerConfig;
use crate::exit::Misconfigured;
use crate::secrets::valid_token;
use crate::shutdown::{Reloads, Tasks};

/// How long the background tasks get to stop once the API has stopped.
const BACKGROUND_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// The shipped sample data (webrep JSON-lines): reserved names only (`.example`, `.test`,
/// `.invalid`), every risk level and several categories.
pub const SAMPLE_DATA: &str = include_str!("../../data/sample.jsonl");

/// The feed name the sample data is recorded under.
pub const SAMPLE_FEED: &str = "webrep-sample";

/// Loads [`SAMPLE_DATA`] into `store` in one transaction (entries already there are
/// replaced by the sample's). Returns the number of entries.
///
/// # Errors
/// A store failure.
pub fn load_sample(store: &mut Store, now: i64) -> anyhow::Result<u64> {
    let opts = ImportOptions::new(Format::JsonLines, SAMPLE_FEED, now);
    let report =
        import::import(store, SAMPLE_DATA.as_bytes(), &opts).context("loading the sample data")?;
    if report.bad_total > 0 {
        bail!("the shipped sample data has {} bad lines", report.bad_total);
    }
    Ok(report.imported)
}

/// Reads a tokens file: `client TOKEN` or `admin TOKEN` per line, `#` comments.
///
/// # Errors
/// An unreadable file, or a line that is not `client|admin TOKEN` with a valid token (the
/// message names the line, never the token).
pub fn read_tokens_file(path: &Path, into: &mut Tokens) -> anyhow::Result<()> {
    let text =
        crate::secrets::read_to_string(path, crate::fsread::TOKENS_MAX, "server.tokens_file")
            .context("cannot read tokens file")?;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (role, token) = (parts.next(), parts.next());
        let bad = || {
            anyhow::anyhow!(
                "{}:{}: expected `client TOKEN` or `admin TOKEN` (tokens are 16 to 256 visible \
                 ASCII characters)",
                path.display(),
                i + 1
            )
        };
        let token = token
            .filter(|t| valid_token(t) && parts.next().is_none())
            .ok_or_else(bad)?;
        match role {
            Some("client") => into.client.push(token.to_owned()),
            Some("admin") => into.admin.push(token.to_owned()),
            _ => return Err(bad()),
        }
    }
    Ok(())
}

fn tls_acceptor(cert: &Path, key: &Path) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls_pki_types::PrivateKeyDer;
    use rustls_pki_types::pem::PemObject as _;
    let certs =
        crate::fsread::pem_certs(cert).map_err(|e| anyhow::anyhow!("server.tls.cert {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(
        crate::secrets::read_to_string(key, crate::fsread::PEM_MAX, "server.tls.key")
            .context("server.tls.key")?
            .as_bytes(),
    )
    .with_context(|| format!("server.tls.key {}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("server.tls: certificate and key do not fit together")?;
    let mut config = config;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The TLS acceptor of `server.tls`, if configured.
///
/// # Errors
/// Unreadable or mismatched certificate and key files.
pub fn tls_acceptor_for(
    config: &ServerConfig,
) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
    config
        .tls
        .as_ref()
        .map(|t| tls_acceptor(&t.cert, &t.key))
        .transpose()
}

/// What [`run`] reads from the files the config names: the tokens, the TLS acceptor and the
/// upstream tier. A failure is a configuration problem ([`Misconfigured`]: exit 78).
#[allow(clippy::type_complexity)]
fn named_files(
    config: &ServerConfig,
) -> anyhow::Result<(
    Tokens,
    Option<tokio_rustls::TlsAcceptor>,
    (Option<Arc<Upstream>>, Option<Follow>),
)> {
    let misconfigured = |what: &str| Misconfigured(format!("{what} cannot be used"));
    let tokens = load_tokens(config).context(misconfigured("the server's API tokens"))?;
    let tls = tls_acceptor_for(config).context(misconfigured("server.tls"))?;
    let upstream = match &config.upstream {
        Some(u) => upstream(u).context(misconfigured("server.upstream"))?,
        None => (None, None),
    };
    Ok((tokens, tls, upstream))
}

/// The upstream tier of `server.upstream`: the ask-on-miss cache (when `ask_on_miss`) and
/// the follower (when `follow`), over one client.
///
/// # Errors
/// An unreadable token or CA file; no token.
pub fn upstream(
    config: &crate::config::UpstreamConfig,
) -> anyhow::Result<(Option<Arc<Upstream>>, Option<Follow>)> {
    let token = match (&config.token, &config.token_file) {
        (Some(t), _) => t.clone(),
        (None, Some(path)) => crate::secrets::read_token_file(path, "server.upstream.token_file")?,
        (None, None) => bail!("server.upstream: no token"),
    };
    let client = RepClient::new(&config.url, &token, config.ca_file.as_deref())
        .context("server.upstream")?;
    let follow = config.follow.as_ref().map(|sub| Follow {
        subscription: sub.clone(),
        page: config.sync_page,
        ..Follow::everything(client.clone())
    });
    // Asked on a miss when `ask_on_miss`; a follower that does not ask still asks until its
    // first snapshot is complete (an upstream too old for delta sync is then asked for good).
    let ask = (config.ask_on_miss || follow.is_some()).then(|| {
        Arc::new(Upstream::new(
            client,
            config.timeout,
            config.batch,
            config.cache_entries,
        ))
    });
    Ok((ask, follow))
}

/// The API tokens: `server.client_tokens`, `server.admin_tokens` and `server.tokens_file`.
///
/// # Errors
/// An unreadable or malformed tokens file; no token at all.
pub fn load_tokens(config: &ServerConfig) -> anyhow::Result<Tokens> {
    let mut tokens = Tokens {
        client: config.client_tokens.clone(),
        admin: config.admin_tokens.clone(),
    };
    if let Some(path) = &config.tokens_file {
        read_tokens_file(path, &mut tokens)?;
    }
    if tokens.client.is_empty() && tokens.admin.is_empty() {
        bail!(
            "no API tokens: set server.tokens_file (lines `client TOKEN` / `admin TOKEN`) or \
             server.client_tokens / server.admin_tokens"
        );
    }
    Ok(tokens)
}

/// Where a reload puts what it read (empty until the first tokens are stored).
#[derive(Clone, Default)]
struct ReloadTargets {
    tokens: Arc<arc_swap::ArcSwap<Tokens>>,
    escalation: Arc<arc_swap::ArcSwap<Vec<crate::config::EscalationRule>>>,
}

/// What SIGHUP applies: the tokens, and (with a config file) the escalation rules and the
/// log filter; every other changed setting the server reads is named as needing a restart
/// (compared with `started`, the file it started with). The answer is the status line for
/// systemd and the log.
fn reload(
    config_file: Option<&Path>,
    running: &ServerConfig,
    started: &crate::config::RawConfig,
    to: &ReloadTargets,
) -> String {
    let read = || -> anyhow::Result<(Option<crate::config::Config>, Tokens)> {
        let config = match config_file {
            Some(path) => Some(crate::config::Config::load(Some(path))?),
            None => None,
        };
        let tokens = load_tokens(config.as_ref().map_or(running, |c| &c.server))?;
        Ok((config, tokens))
    };
    match read() {
        Ok((config, tokens)) => {
            let server = config.as_ref().map_or(running, |c| &c.server);
            let mut status = format!(
                "tokens reloaded: {} client, {} admin; {} escalation rules",
                tokens.client.len(),
                tokens.admin.len(),
                server.feedback.escalation.len()
            );
            to.tokens.store(Arc::new(tokens));
            to.escalation
                .store(Arc::new(server.feedback.escalation.clone()));
            if let Some(c) = &config {
                status.push_str(&apply_config(c, started));
            }
            tracing::info!("{status}");
            status
        }
        Err(e) => {
            tracing::warn!(
                error = format!("{e:#}"),
                "reload failed; the running tokens, rules and config are kept"
            );
            format!("reload failed, running tokens, rules and config kept: {e:#}")
        }
    }
}

/// Applies the log filter of a reloaded `config` and names the settings that need a
/// restart; what to add to the status line.
fn apply_config(config: &crate::config::Config, started: &crate::config::RawConfig) -> String {
    use crate::config::live::{Role, changes};
    if let Err(e) = crate::telemetry::set_level(&config.log.level) {
        tracing::warn!(error = %e, "log.level not applied");
    }
    let restart = changes(Role::Server, started, &config.raw).restart;
    for key in &restart {
        tracing::warn!("{key} changed: needs a restart");
    }
    if restart.is_empty() {
        String::new()
    } else {
        format!("; needs a restart: {}", restart.join(", "))
    }
}

/// Reloads on every one of `reloads` (SIGHUP, `systemctl reload`) until `stop`: a token
/// taken out of the file is refused from the next request on; a file that fails to load
/// keeps the running tokens, rules and config. Tells systemd (`RELOADING=1`, then
/// `READY=1` with the status line).
async fn reload_on_signal(
    config: ServerConfig,
    started: crate::config::RawConfig,
    config_file: Option<std::path::PathBuf>,
    to: ReloadTargets,
    mut reloads: Reloads,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            more = reloads.next() => if !more { return },
        }
        crate::shutdown::notify_reloading();
        let (config, config_file, to) = (config.clone(), config_file.clone(), to.clone());
        let started = started.clone();
        // Files are read on the blocking pool, never on the event loop.
        let reloading = tokio::task::spawn_blocking(move || {
            reload(config_file.as_deref(), &config, &started, &to)
        });
        // A reload never holds up shutdown, whatever it is waiting for.
        let status = tokio::select! {
            () = stop.cancelled() => return,
            r = reloading => match r {
                Ok(s) => s,
                Err(e) => format!("reload failed: {e}"),
            },
        };
        crate::shutdown::notify_ready(&status);
    }
}

/// Runs the server until `shutdown` is cancelled.
///
/// # Errors
/// Any setup failure (see the module docs); a failure of the store thread at start.
/// `config_file` is where `config` came from (`None`: the embedded default), `started` the
/// file as it was read; each of `reloads` (SIGHUP) reads it again.
pub async fn run(
    config: &ServerConfig,
    config_file: Option<&Path>,
    started: &crate::config::RawConfig,
    shutdown: CancellationToken,
    reloads: Reloads,
) -> anyhow::Result<()> {
    let (tokens, tls, (upstream, follow)) = named_files(config)?;
    let (path, sample) = (config.store.clone(), config.sample_data);
    let store = tokio::task::spawn_blocking(move || open_store(&path, sample))
        .await?
        .context(Misconfigured("server.store cannot be used".into()))?;
    let entries = store.len().unwrap_or(0);
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (server.listen)", config.listen))?;
    let metrics = match config.metrics_listen {
        None => None,
        Some(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (server.metrics_listen)"))?;
            tracing::info!(addr = %l.local_addr()?, "metrics listener (/metrics)");
            Some(l)
        }
    };
    tracing::info!(
        listen = %listener.local_addr()?,
        tls = tls.is_some(),
        store = %config.store.display(),
        entries,
        upstream = config.upstream.as_ref().map(|u| u.url.as_str()),
        "reputation server ready"
    );
    let tasks = Tasks::new();
    let targets = ReloadTargets::default();
    let reload = reload_on_signal(
        config.clone(),
        started.clone(),
        config_file.map(Path::to_path_buf),
        targets.clone(),
        reloads,
        tasks.stopping(),
    );
    tasks.spawn("reload on SIGHUP", reload);
    crate::shutdown::notify_ready(&format!(
        "reputation server on {}, {entries} entries",
        listener.local_addr()?
    ));
    if let Some(w) = crate::shutdown::Watchdog::start(1) {
        let stop = tasks.stopping();
        tasks.spawn("watchdog heartbeat", async move {
            tokio::select! {
                () = w.heartbeat(0) => {}
                () = stop.cancelled() => {}
            }
        });
    }
    let spool_dir = store_dir(&config.store);
    let options = ServeOptions {
        tls,
        upstream,
        ask_until_mirrored: config
            .upstream
            .as_ref()
            .is_some_and(|u| u.follow.is_some() && !u.ask_on_miss),
        follow,
        follow_status: None,
        max_connections: config.max_connections,
        max_connections_per_client: config.max_connections_per_client,
        change_log_rows: config.change_log_rows,
        spool_dir: Some(spool_dir),
        read_threads: config.read_threads,
        feedback: config.feedback.clone(),
        stats: None,
        metrics,
        tokens_handle: Some(targets.tokens),
        escalation_handle: Some(targets.escalation),
        forward: super::forward::ForwardOptions::for_config(config.upstream.as_ref())?,
    };
    api::serve_with(
        listener,
        store,
        tokens,
        config.api.clone(),
        options,
        shutdown,
    )
    .await
    .context("reputation API")?;
    tasks.stop(BACKGROUND_GRACE).await;
    tracing::info!("reputation server stopped");
    Ok(())
}

/// Opens (or creates) the store at `path`, after removing the import uploads a killed server
/// left beside it; loads the sample data into it when asked. Blocking: run it off the event
/// loop.
fn open_store(path: &Path, sample: bool) -> anyhow::Result<Store> {
    let dir = store_dir(path);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the store directory {}", dir.display()))?;
    remove_stale_uploads(&dir);
    let mut store =
        Store::open(path).with_context(|| format!("cannot open the store {}", path.display()))?;
    if sample {
        let n = load_sample(&mut store, crate::clock::unix_secs())?;
        tracing::info!(entries = n, "sample data loaded");
    }
    Ok(store)
}

/// The directory of the store file, where import uploads are spooled.
fn store_dir(store: &Path) -> std::path::PathBuf {
    store
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(|| std::path::PathBuf::from("."), Path::to_path_buf)
}

/// Removes the import uploads a killed server left beside the store, saying which.
fn remove_stale_uploads(dir: &Path) {
    match super::upload::remove_stale(dir) {
        Ok(removed) => {
            for path in &removed {
                tracing::info!(file = %path.display(), "removed an import upload a stopped server left");
            }
        }
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot look for leftover import uploads");
        }
    }
}
