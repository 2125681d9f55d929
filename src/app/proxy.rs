//! `webrep proxy` put together: everything the forward proxy needs besides its request path,
//! built in order, run as background tasks beside it, and stopped in one sequence.
//!
//! [`ProxyApp::start`] loads and checks everything that can fail before anything is served:
//! that the config names a policy and a reputation source (`Config::proxy_problems`), the
//! admin listener, the policy (a file and its watch, or the built-in one) the reputation
//! sources (or, with `reputation.embedded_sample`, a reputation server in this process on
//! the sample data), feedback, the groups file, the interception CA; then it binds the
//! proxy's listeners ([`Proxy::bind`]). Nothing runs yet, so a failed start leaves nothing
//! behind; what failed because of the configuration carries
//! [`Misconfigured`](crate::exit::Misconfigured), so that the process exits 78.
//!
//! [`ProxyApp::run`] starts the background tasks on one [`Tasks`] tracker (the embedded
//! server, the change-stream follower, the policy watcher, the admin listener, the reload on
//! SIGHUP ([`super::reload`]), the access log reopen on SIGUSR1, the CA expiry check), tells
//! systemd it is ready and runs the proxy. Shutdown is
//! one sequence: the proxy stops accepting and drains its connections for
//! `proxy.shutdown_grace_period_ms` (the reputation server and the admin listener still
//! answer meanwhile); queued feedback is delivered or spooled; the background tasks stop;
//! the access log is flushed.
//!
//! Nothing here is on the request path; it costs what it starts.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::accesslog::AccessLog;
use crate::client::FollowRetry;
use crate::client::RepClient;
use crate::config::{ApiConfig, BuiltinPolicy, Config, PolicySource};
use crate::exit::Misconfigured;
use crate::feedback::Feedback;
use crate::intercept::{ca, mint::Minter};
use crate::policyfile::PolicyHandle;
use crate::proxy::{Parts, Proxy, ProxyState, auth, filter::Filter};
use crate::reputation::{Reputation, ReputationConfig, SourceConfig};
use crate::shutdown::{Reloads, Tasks};

/// `policies/default.yaml` as shipped, for a proxy started away from the source tree.
const DEFAULT_POLICY: &str = include_str!("../../policies/default.yaml");

/// How long the policy file must be quiet after a change before it is reloaded.
const POLICY_DEBOUNCE: Duration = Duration::from_millis(300);

/// How long the background tasks get to stop once the proxy has drained.
const BACKGROUND_GRACE: Duration = Duration::from_secs(2);

/// How long the access log's writer gets to write what is queued, at the end.
const ACCESS_LOG_FLUSH: Duration = Duration::from_secs(2);

/// A background task built at start, spawned by [`ProxyApp::run`].
type Pending = (&'static str, Pin<Box<dyn Future<Output = ()> + Send>>);

/// A proxy built and bound, with what runs beside it; nothing is running yet.
pub struct ProxyApp {
    proxy: Proxy,
    /// `admin.listen`: `/metrics` and the admin API.
    admin: Option<std::net::TcpListener>,
    /// The interception CA, checked for expiry while the proxy runs.
    ca: Option<Arc<ca::Ca>>,
    tasks: Tasks,
    pending: Vec<Pending>,
    /// What SIGHUP reads again.
    reloader: super::reload::ProxyReloader,
    /// SIGUSR1: reopen the access log.
    reopens: Reloads,
}

impl ProxyApp {
    /// Builds and binds everything (see the module docs).
    ///
    /// # Errors
    /// A busy port, an unusable policy, CA, users, groups or token file, a bad reputation
    /// source: anything that would make the proxy run other than configured.
    pub async fn start(config: &Config, access_log: Arc<AccessLog>) -> anyhow::Result<Self> {
        let missing = config.proxy_problems();
        if !missing.is_empty() {
            let lines: Vec<String> = missing.iter().map(ToString::to_string).collect();
            return Err(anyhow::Error::new(Misconfigured(lines.join("\n"))));
        }
        let tasks = Tasks::new();
        let mut pending = Vec::new();
        let admin = bind_admin(config.admin.listen)?;
        let mut other_listeners = Vec::new();
        if let Some(l) = &admin {
            other_listeners.push(l.local_addr()?);
        }
        let minter = if config.intercept.enabled {
            Some(load_ca(config)?)
        } else {
            None
        };
        let ca = minter.as_ref().map(|m| m.ca().clone());
        let filter = if config.policy.enabled {
            let (filter, embedded) = filter_setup(config, &tasks, &mut pending).await?;
            other_listeners.extend(embedded);
            Some(filter)
        } else {
            None
        };
        let parts = Parts {
            access_log,
            filter,
            minter,
            other_listeners,
        };
        let proxy = Proxy::bind(config, parts)?;
        Ok(Self {
            proxy,
            admin,
            ca,
            tasks,
            pending,
            reloader: super::reload::ProxyReloader::new(config, None),
            reopens: Reloads::none(),
        })
    }

    /// The file the config came from: each reload reads it again (without one, a reload
    /// reads the policy, users, groups and token files only).
    pub fn with_config_file(mut self, config: &Config, file: Option<&std::path::Path>) -> Self {
        self.reloader = super::reload::ProxyReloader::new(config, file);
        self
    }

    /// Reopens the access log on each of `reopens` (SIGUSR1).
    pub fn with_reopens(mut self, reopens: Reloads) -> Self {
        self.reopens = reopens;
        self
    }

    /// The admin listener's address, when `admin.listen` is set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The proxy's shared state (counters, the interceptor): for tests and benchmarks.
    pub fn state(&self) -> Arc<ProxyState> {
        self.proxy.state()
    }

    /// The proxy's bound addresses (with the real port when 0 was configured).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        self.proxy.local_addrs()
    }

    /// Runs until `shutdown` is cancelled, reloading on each of `reloads`, then stops in
    /// the order of the module docs.
    pub async fn run(self, shutdown: CancellationToken, reloads: Reloads) {
        let state = self.proxy.state();
        let admin_addr = self.admin_addr();
        let Self {
            proxy,
            admin,
            ca,
            tasks,
            pending,
            reloader,
            reopens,
        } = self;
        for (name, task) in pending {
            tasks.spawn(name, task);
        }
        start_background(&tasks, &state, admin, ca, (reloader, reloads));
        tasks.spawn(
            "reopen the access log on SIGUSR1",
            reopen_on_signal(state.clone(), reopens, tasks.stopping()),
        );
        let addrs: Vec<String> = state.local_addrs.iter().map(ToString::to_string).collect();
        let admin = admin_addr.map_or(String::new(), |a| format!("; admin on {a}"));
        // Every listener is bound (connections wait in the backlog until the workers
        // accept): ready for systemd.
        crate::shutdown::notify_ready(&format!("proxy listening on {}{admin}", addrs.join(", ")));
        proxy.run(shutdown).await;
        // Queued feedback goes out (or to the spool) once no request can add more.
        if let Some(feedback) = state.filter.as_ref().and_then(|f| f.feedback.as_ref()) {
            feedback.close().await;
        }
        tasks.stop(BACKGROUND_GRACE).await;
        state.access_log.flush(ACCESS_LOG_FLUSH);
    }
}

/// Starts feedback and the tasks that serve and watch the running proxy.
fn start_background(
    tasks: &Tasks,
    state: &Arc<ProxyState>,
    admin: Option<std::net::TcpListener>,
    ca: Option<Arc<ca::Ca>>,
    (reloader, reloads): (super::reload::ProxyReloader, Reloads),
) {
    if let Some(f) = &state.filter
        && let Some(feedback) = &f.feedback
        && let Err(e) = feedback.start(f.reputation.clone())
    {
        tracing::error!(error = %e, "feedback sender not started");
    }
    if let Some(admin) = admin {
        match tokio::net::TcpListener::from_std(admin) {
            Ok(l) => tasks.spawn(
                "admin listener",
                crate::proxy::admin::serve_admin(l, state.clone(), tasks.stopping()),
            ),
            Err(e) => tracing::error!(error = %e, "admin listener unusable"),
        }
    }
    tasks.spawn(
        "reload on SIGHUP",
        reload_on_signal(state.clone(), reloader, reloads, tasks.stopping()),
    );
    if let Some(ca) = ca {
        tasks.spawn(
            "interception CA expiry check",
            ca::watch_expiry(ca, tasks.stopping()),
        );
    }
}

/// Reloads on every SIGHUP until `stop` ([`super::reload`]), telling systemd
/// (`RELOADING=1`, then `READY=1` with what was loaded, what failed and what needs a
/// restart).
async fn reload_on_signal(
    state: Arc<ProxyState>,
    mut reloader: super::reload::ProxyReloader,
    mut reloads: Reloads,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            more = reloads.next() => if !more { return },
        }
        tracing::info!(
            "SIGHUP: reloading the config and the policy, users, groups and admin token files"
        );
        crate::shutdown::notify_reloading();
        // A reload never holds up shutdown, whatever it is waiting for.
        let status = tokio::select! {
            () = stop.cancelled() => return,
            s = reloader.reload(&state) => s,
        };
        crate::shutdown::notify_ready(&status);
    }
}

/// Reopens the access log on every SIGUSR1 until `stop` (after a rotation renamed it).
async fn reopen_on_signal(state: Arc<ProxyState>, mut reopens: Reloads, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            more = reopens.next() => if !more { return },
        }
        tracing::info!("SIGUSR1: reopening the access log");
        state.access_log.reopen(None);
    }
}

/// Binds `admin.listen`, when set.
fn bind_admin(listen: Option<SocketAddr>) -> anyhow::Result<Option<std::net::TcpListener>> {
    let Some(addr) = listen else {
        return Ok(None);
    };
    let l = std::net::TcpListener::bind(addr)
        .with_context(|| format!("admin.listen {addr}: cannot listen"))?;
    l.set_nonblocking(true)?;
    tracing::info!(addr = %l.local_addr()?, "admin listener (/metrics, /stats)");
    Ok(Some(l))
}

/// Loads (or, with `intercept.create_ca`, creates) the interception CA and checks that it
/// can sign certificates clients accept.
fn load_ca(config: &Config) -> anyhow::Result<Minter> {
    let ic = &config.intercept;
    let ca = match ca::load(&ic.ca_dir) {
        Ok(ca) => ca,
        Err(ca::CaError::Missing { .. }) if ic.create_ca => {
            let ca = ca::init(&ic.ca_dir, &ca::InitOptions::default())?;
            tracing::warn!(dir = %ic.ca_dir.display(), fingerprint = %ca.fingerprint(),
                "created a new interception CA; clients must trust it (see /ca on the proxy)");
            ca
        }
        Err(e) => {
            return Err(anyhow::Error::new(e).context(Misconfigured(
                "intercept.enabled is true but the interception CA cannot be used".into(),
            )));
        }
    };
    tracing::info!(dir = %ic.ca_dir.display(), fingerprint = %ca.fingerprint(), "interception CA loaded");
    let minter = Minter::new(Arc::new(ca), ic.leaf_validity, ic.cert_cache_entries);
    minter.self_test().with_context(|| {
        Misconfigured(format!(
            "intercept.enabled is true but the interception CA in {} cannot sign certificates clients accept",
            ic.ca_dir.display()
        ))
    })?;
    if let Some(problem) = minter.ca().expiry_problem() {
        ca::log_problem(minter.ca(), problem);
    }
    Ok(minter)
}

/// The filter: the policy (and its file watch), the reputation client over the configured
/// sources (or an embedded server), its change-stream follower, the groups and feedback.
/// Returns the embedded server's address too, when there is one.
async fn filter_setup(
    config: &Config,
    tasks: &Tasks,
    pending: &mut Vec<Pending>,
) -> anyhow::Result<(Filter, Option<SocketAddr>)> {
    let policy = load_policy(config)?;
    if !policy.is_builtin() {
        match policy.watcher(POLICY_DEBOUNCE, tasks.stopping()) {
            Ok(w) => pending.push(("policy file watch", Box::pin(w))),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the policy file; it reloads on SIGHUP only");
            }
        }
    }
    // A built-in policy has no file to watch.
    let mut sources = sources(config)?;
    let mut embedded = None;
    if config.reputation.embedded_sample {
        let (source, addr, server) = embedded_server(tasks).await?;
        sources.push(source);
        pending.push(("embedded reputation server", server));
        embedded = Some(addr);
    }
    let r = &config.reputation;
    let reputation = Arc::new(Reputation::new(ReputationConfig {
        sources,
        cache_entries: r.cache_entries,
        max_stale: r.max_stale,
        retry_after: r.retry_after,
        follow_retry: FollowRetry::from(r),
        key_summary_max_bytes: r.key_summary_max_bytes,
    }));
    if r.follow_changes {
        let follow = reputation.clone().follow_changes(tasks.stopping());
        pending.push(("reputation change stream", Box::pin(follow)));
    }
    let mut filter = Filter::new(reputation, policy);
    if let Some(path) = &config.auth.groups_file {
        let groups = auth::load_groups(path)
            .context(Misconfigured("auth.groups_file cannot be used".into()))?;
        tracing::info!(file = %path.display(), users = groups.len(), "groups loaded");
        filter.groups.store(Arc::new(groups));
    }
    if config.feedback.enabled {
        let feedback = Arc::new(
            Feedback::new(&config.feedback)
                .context(Misconfigured("feedback.spool_dir cannot be used".into()))?,
        );
        tracing::info!(proxy_id = feedback.proxy_id(), spool = %config.feedback.spool_dir.display(),
            "feedback events on");
        filter.feedback = Some(feedback);
    }
    Ok((filter, embedded))
}

/// The policy the config names: `policy.file`, or the one built into the binary.
fn load_policy(config: &Config) -> anyhow::Result<Arc<PolicyHandle>> {
    match &config.policy.source {
        Some(PolicySource::File(file)) => {
            let p = PolicyHandle::load(file).map_err(|e| {
                anyhow::Error::new(e).context(Misconfigured(format!(
                    "policy.file {} cannot be used",
                    file.display()
                )))
            })?;
            tracing::info!(file = %file.display(), "policy loaded");
            Ok(p)
        }
        Some(PolicySource::Builtin(BuiltinPolicy::Default)) => {
            let p = PolicyHandle::builtin("built-in policies/default.yaml", DEFAULT_POLICY)
                .map_err(|e| anyhow::anyhow!("the built-in default policy is invalid: {e}"))?;
            tracing::info!("policy: the built-in default policy (policy.builtin: default)");
            Ok(p)
        }
        // Refused before anything starts (`Config::proxy_problems`).
        None => Err(anyhow::Error::new(Misconfigured(
            "policy.file: no policy named".to_owned(),
        ))),
    }
}

/// The configured reputation sources, each with its token read.
fn sources(config: &Config) -> anyhow::Result<Vec<SourceConfig>> {
    let mut sources = Vec::new();
    for s in &config.reputation.sources {
        let token = match (&s.token, &s.token_file) {
            (Some(t), _) => t.clone(),
            (None, Some(path)) => {
                crate::secrets::read_token_file(path, "reputation.sources token_file")
                    .context(Misconfigured(format!("reputation source {}", s.name)))?
            }
            (None, None) => {
                return Err(anyhow::Error::new(Misconfigured(format!(
                    "reputation source {}: no token",
                    s.name
                ))));
            }
        };
        sources.push(SourceConfig {
            name: s.name.clone(),
            client: RepClient::new(&s.url, &token, s.ca_file.as_deref())
                .context(Misconfigured(format!("reputation source {}", s.name)))?,
            timeout: s.timeout,
        });
    }
    Ok(sources)
}

/// The embedded default: a reputation server in this process, in memory, on the shipped
/// sample data, on a loopback port of its own with a random token. Returns the source that
/// asks it, its address and the server task (bound, not yet serving), which stops with
/// `tasks`.
async fn embedded_server(
    tasks: &Tasks,
) -> anyhow::Result<(
    SourceConfig,
    SocketAddr,
    Pin<Box<dyn Future<Output = ()> + Send>>,
)> {
    use crate::repserver::{api, server, store::Store};
    use rand::RngCore as _;
    let mut store = Store::open_in_memory()?;
    let n = server::load_sample(&mut store, crate::clock::unix_secs())?;
    let mut raw = [0u8; 24];
    rand::rng().fill_bytes(&mut raw);
    let token = hex::encode(raw);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let tokens = api::Tokens {
        client: vec![token.clone()],
        admin: Vec::new(),
    };
    let stop = tasks.stopping();
    let serve = async move {
        if let Err(e) = api::serve(listener, store, tokens, ApiConfig::default(), stop).await {
            tracing::error!(error = %e, "the embedded reputation server stopped");
        }
    };
    tracing::warn!(%addr, entries = n,
        "reputation.embedded_sample: using an in-process reputation server with the sample data only");
    let source = SourceConfig {
        name: "embedded".into(),
        client: RepClient::new(&format!("http://{addr}"), &token, None)?,
        timeout: Duration::from_secs(2),
    };
    Ok((source, addr, Box::pin(serve)))
}
