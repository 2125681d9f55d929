//! The forward proxy: workers, listeners, the accept loop, one task per client connection.
//!
//! Thread per core: `proxy.workers` threads each run a single-threaded tokio runtime with its
//! own pooled upstream client, so a request is served start to finish on one thread with no
//! cross-thread wake-ups. Each listen address has one listening socket, bound without
//! `SO_REUSEPORT`: every worker registers its own duplicate of it (`dup`) and the worker that
//! accepts first takes a new connection. So no other process can bind the port while the
//! proxy runs: a second instance fails with "address already in use" instead of taking part
//! of the traffic unfiltered. Read-only state (config, ACLs, access log, authentication) is
//! shared.
//!
//! [`Proxy::bind`] binds every configured listener (port 0 works, for tests) and builds the
//! shared [`ProxyState`] from the [`Parts`] the composition root (`crate::app`) built: the
//! filter, the interception CA's minter, the access log. [`Proxy::run`] accepts until the shutdown token is cancelled, then
//! drains: listeners close at once, each connection finishes its in-flight request and
//! closes, tunnels run on, and after `proxy.shutdown_grace_period_ms` whatever remains is
//! abandoned. Connections are admitted by [`crate::conns::ConnLimits`]
//! (`proxy.max_connections`, `proxy.max_connections_per_client`): a client over its own
//! limit gets 429, and at the total limit the connection idle for longest is closed to make
//! room. A connection costs no HTTP buffers until its first bytes arrive.
//!
//! Request path: [`service`] dispatches to [`forward`] (absolute-form HTTP), [`connect`]
//! (tunnels) or [`own`] (the proxy's own pages, one router); [`dial`] connects upstream behind the
//! [`acl`] destination check, and [`pool`] bounds the upstream connections left idle; [`headers`] rewrites each hop; [`body`] streams and logs.

pub mod acl;
pub mod admin;
pub mod auth;
pub mod body;
pub mod conn;
pub mod connect;
pub mod ctx;
pub mod dial;
pub mod dns;
pub mod early;
pub mod error;
pub mod filescan;
pub mod filter;
pub mod forward;
pub mod h1pool;
pub mod headers;
pub mod intercept;
pub mod live;
pub mod local;
pub mod metrics;
pub mod own;
pub mod pac;
pub mod pool;
pub mod report;
pub mod service;
#[cfg(target_os = "linux")]
pub mod splice;
pub mod tap;
pub mod traffic;
pub mod tunnel;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use http::{HeaderValue, Version};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::accesslog::{AccessLog, RequestIds};
use crate::config::{Config, ProxyConfig};
use crate::conns::ConnLimits;
use crate::conns::{Admitted, ConnActivity};
use crate::intercept::mint::Minter;
use acl::{ClientAcl, DestinationPolicy};
use auth::Authenticator;
use conn::{ClientIo, Expiry, watchdog};
use dial::{Connector, Dialer};
use service::ProxyService;

/// The most a client connection's read buffer grows to (request heads and uploads); at least
/// the header limit plus room. hyper's default (~400 KiB) would let every connection grow.
pub(crate) const CLIENT_READ_BUFFER_MAX: usize = 64 * 1024;

/// Blocking threads per worker runtime: DNS lookups (the system resolver) run there. Beyond
/// this, further lookups queue instead of spawning threads, so a flood of slow names cannot
/// exhaust the process. (Password hashing has its own fixed pool: [`auth`].)
pub const MAX_BLOCKING_THREADS: usize = 64;

/// Everything the request path shares, behind one `Arc`.
pub struct ProxyState {
    /// The `proxy:` section; a reload swaps in its live settings only
    /// ([`ProxyState::apply_live`]). Read it with [`ProxyState::config`].
    config: arc_swap::ArcSwap<ProxyConfig>,
    /// One pool of plain upstream connections per worker (index = worker number).
    pub clients: Vec<h1pool::H1Pool<Connector>>,
    /// With interception on: pooled HTTPS clients per worker (verified upstream TLS).
    pub https_clients: Vec<HttpsClients>,
    /// Each worker's bound on idle upstream connections (`proxy.upstream_max_idle`), over
    /// its plain and HTTPS pools.
    pub upstream_bounds: Vec<Arc<pool::IdleBound>>,
    /// With interception on: the minter and its settings.
    pub interceptor: Option<intercept::Interceptor>,
    /// With `policy.enabled`: reputation and policy.
    pub filter: Option<filter::Filter>,
    /// CONNECT tunnels opened: relayed untouched, intercepted (for metrics).
    pub tunnels: [std::sync::atomic::AtomicU64; 2],
    /// Bytes relayed by plain TCP tunnels and WebSockets (both ways): copied, spliced.
    pub relayed_bytes: [std::sync::atomic::AtomicU64; 2],
    /// Client-side traffic: requests by method and status class, bytes, open tunnels.
    pub traffic: Arc<traffic::Traffic>,
    /// With filtering on: file reputation for downloads.
    pub scanner: Option<filescan::FileScanner>,
    pub dialer: Dialer,
    pub acl: ClientAcl,
    /// With `auth.users_file`: swapped whole by [`ProxyState::reload`].
    pub auth: Option<arc_swap::ArcSwap<Authenticator>>,
    /// The files [`ProxyState::reload`] reads again besides the policy (their paths are
    /// live settings).
    pub auth_config: arc_swap::ArcSwap<crate::config::AuthConfig>,
    /// `admin.token_file`'s token (the admin API is off without one); swapped by
    /// [`ProxyState::reload`].
    pub admin_token: arc_swap::ArcSwapOption<String>,
    admin_token_file: arc_swap::ArcSwapOption<std::path::PathBuf>,
    pub access_log: Arc<AccessLog>,
    pub ids: RequestIds,
    pub tracker: TaskTracker,
    /// Client connections open, in all and per client (`proxy.max_connections`,
    /// `proxy.max_connections_per_client`).
    pub conns: Arc<ConnLimits>,
    /// Cancelled when shutdown begins: connections inside intercepted tunnels finish their
    /// in-flight requests and close.
    pub draining: CancellationToken,
    pub local_addrs: Vec<SocketAddr>,
    /// Request heads refused before the service saw them.
    pub rejected: conn::Rejected,
    via_10: HeaderValue,
    via_11: HeaderValue,
}

impl ProxyState {
    /// What `systemctl reload` (SIGHUP) and the admin API's `POST /v1/reload` do: read the
    /// policy file, `auth.groups_file`, `auth.users_file` and `admin.token_file` again. Each
    /// that fails to load keeps its running version (and says why, in the log and in the
    /// answer); requests in flight finish with what they started with.
    pub async fn reload(&self) -> Reloaded {
        let mut out = Reloaded::default();
        let errors = &mut out.errors;
        if let Some(f) = &self.filter {
            match f.policy.reload_async().await {
                Ok(generation) => out.generation = Some(generation),
                Err(e) => errors.push(format!("policy: {e}")),
            }
        }
        let auth_config = self.auth_config.load_full();
        if let Some(f) = &self.filter {
            let path = auth_config.groups_file.clone();
            let load = move || match path {
                Some(path) => auth::load_groups(&path),
                // No groups file (any more): nobody is in a group.
                None => Ok(Default::default()),
            };
            match tokio::task::spawn_blocking(load).await {
                Ok(Ok(groups)) => {
                    out.groups = auth_config.groups_file.is_some().then_some(groups.len());
                    f.groups.store(Arc::new(groups));
                }
                Ok(Err(e)) => errors.push(format!("{e:#}")),
                Err(e) => errors.push(format!("groups reload: {e}")),
            }
        }
        if let (Some(current), Some(path)) = (&self.auth, auth_config.users_file.clone()) {
            let config = (*auth_config).clone();
            let checks = current.load().checks().clone();
            match tokio::task::spawn_blocking(move || Authenticator::load(&path, &config, checks))
                .await
            {
                Ok(Ok(a)) => {
                    out.users = Some(a.len());
                    // Fresh credential caches: a removed user or a changed password is
                    // refused from now on, a new password accepted.
                    current.store(Arc::new(a));
                }
                Ok(Err(e)) => errors.push(format!("auth.users_file: {e}")),
                Err(e) => errors.push(format!("users reload: {e}")),
            }
        }
        match self.admin_token_file.load_full() {
            Some(path) => {
                match tokio::task::spawn_blocking(move || read_admin_token(&path)).await {
                    Ok(Ok(t)) => self.admin_token.store(Some(Arc::new(t))),
                    Ok(Err(e)) => errors.push(format!("{e:#}")),
                    Err(e) => errors.push(format!("admin token reload: {e}")),
                }
            }
            // `admin.token_file` taken out of the config: the admin API is off.
            None => self.admin_token.store(None),
        }
        for e in &out.errors {
            tracing::warn!(error = %e, "reload failed; the running version is kept");
        }
        out
    }

    /// The `proxy:` section as it runs now: hold the guard for a statement or a short
    /// synchronous step, never across an await (copy the value out instead).
    pub fn config(&self) -> arc_swap::Guard<Arc<ProxyConfig>> {
        self.config.load()
    }

    /// Our `Via` entry for a message received with `version`.
    pub fn via_for(&self, version: Version) -> &HeaderValue {
        if version == Version::HTTP_10 {
            &self.via_10
        } else {
            &self.via_11
        }
    }
}

/// What [`ProxyState::reload`] loaded (`None`: not configured, or failed) and what failed;
/// the admin API answers it as JSON.
#[derive(Debug, Default, serde::Serialize)]
pub struct Reloaded {
    /// The policy generation now running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// Users with groups in the new groups file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<usize>,
    /// Users in the new users file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users: Option<usize>,
    /// One message per file that failed to load (its running version stays).
    pub errors: Vec<String>,
}

/// The first line of `admin.token_file`, checked.
fn read_admin_token(path: &std::path::Path) -> anyhow::Result<String> {
    Ok(crate::secrets::read_token_file(path, "admin.token_file")?)
}

/// A bound, not yet running proxy.
pub struct Proxy {
    /// `listeners[worker]`: that worker's sockets, one per listen address.
    listeners: Vec<Vec<std::net::TcpListener>>,
    state: Arc<ProxyState>,
}

/// The settings of the HTTP/1.1 pools ([`h1pool`]): idle timeout, idle connections per host,
/// read buffer, header limits. The total of idle connections is bounded by
/// [`pool::IdleBound`].
fn h1_settings(cfg: &ProxyConfig) -> h1pool::Settings {
    let mut builder = hyper::client::conn::http1::Builder::new();
    builder
        .max_buf_size(cfg.upstream_read_buffer_bytes)
        .max_headers(cfg.max_header_lines)
        .preserve_header_case(cfg.preserve_header_case);
    h1pool::Settings {
        builder,
        max_idle_per_host: cfg.upstream_max_idle_per_host,
        idle_timeout: cfg.upstream_idle_timeout,
    }
}

/// The settings of the pools that may speak HTTP/2 upstream (hyper-util's, for decrypted
/// requests of HTTP/2 clients), as [`h1_settings`], `Host` left as we set it.
fn upstream_pool(cfg: &ProxyConfig) -> hyper_util::client::legacy::Builder {
    let mut b = Client::builder(TokioExecutor::new());
    b.pool_idle_timeout(cfg.upstream_idle_timeout)
        .pool_max_idle_per_host(cfg.upstream_max_idle_per_host)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .http1_max_buf_size(cfg.upstream_read_buffer_bytes)
        .http1_max_headers(cfg.max_header_lines)
        .http1_preserve_header_case(cfg.preserve_header_case)
        .set_host(false);
    b
}

/// The connector of the pools for decrypted requests: verified TLS over our [`Connector`],
/// taking a connection [`early::EarlyConns`] started for the host first.
pub type HttpsConnector = early::EarlyConnector<hyper_rustls::HttpsConnector<Connector>>;

/// The pooled upstream client for decrypted requests of HTTP/2 clients.
pub type HttpsClient = Client<HttpsConnector, body::UpstreamBody>;

/// A worker's upstream HTTPS pools for intercepted requests: ALPN matched to the client.
/// A client that speaks HTTP/2 to the proxy is sent upstream over a pool that offers `h2`
/// and `http/1.1` (whichever the origin picks); an HTTP/1.1 client (and every WebSocket
/// upgrade) over one that offers `http/1.1` only.
pub struct HttpsClients {
    pub h1: h1pool::H1Pool<HttpsConnector>,
    pub h2: HttpsClient,
}

/// The interceptor around the CA's `minter`, and the per-worker HTTPS clients, verifying
/// upstream certificates against the web PKI roots plus `intercept.upstream_ca_file`.
fn intercept_setup(
    config: &Config,
    minter: Minter,
    dialer: &Dialer,
    bounds: &[Arc<pool::IdleBound>],
) -> anyhow::Result<(intercept::Interceptor, Vec<HttpsClients>)> {
    let (ic, cfg) = (&config.intercept, &config.proxy);
    let tls = crate::tls::client_config(ic.upstream_ca_file.as_deref()).map_err(|e| {
        anyhow::Error::new(crate::exit::Misconfigured(format!(
            "intercept.upstream_ca_file {e}"
        )))
    })?;
    // What hyper-rustls sets on the two pools' configs (no ALPN for HTTP/1.1 only), for the
    // early connections that stand in for theirs.
    let early = ic.early_upstream.map(|keep| {
        let mut h2 = tls.clone();
        h2.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        early::EarlyConns::new(
            keep,
            cfg.upstream_connect_timeout,
            cfg.upstream_idle_timeout,
            Arc::new(tls.clone()),
            Arc::new(h2),
        )
    });
    let clients = (0..cfg.workers)
        .map(|worker| {
            let h1 = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls.clone())
                .https_only()
                .enable_http1()
                .wrap_connector(Connector::for_tls(dialer.clone(), bounds[worker].clone()));
            let h2 = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls.clone())
                .https_only()
                .enable_all_versions()
                .wrap_connector(Connector::for_tls(dialer.clone(), bounds[worker].clone()));
            HttpsClients {
                h1: h1pool::H1Pool::new(
                    early::EarlyConnector::new(h1, early.clone(), worker, false),
                    h1_settings(cfg),
                ),
                h2: upstream_pool(cfg).build(early::EarlyConnector::new(
                    h2,
                    early.clone(),
                    worker,
                    true,
                )),
            }
        })
        .collect();
    Ok((
        intercept::Interceptor {
            minter,
            handshake_timeout: ic.handshake_timeout,
            non_tls: ic.non_tls,
            handshake_failures: moka::sync::Cache::new(intercept::HANDSHAKE_FAILURE_HOSTS),
            early,
        },
        clients,
    ))
}

/// Binds a listening socket that no other socket may share (`SO_REUSEADDR` only, for a quick
/// restart over connections in `TIME_WAIT`; never `SO_REUSEPORT`, which would let another
/// process listen on the same port and take part of the connections).
fn bind_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Listening sockets per worker, and the bound addresses: one socket per address, the other
/// workers get duplicates of it (no `SO_REUSEPORT`, so a second instance cannot share the
/// port).
fn bind_worker_listeners(
    listen: &[SocketAddr],
    workers: usize,
) -> anyhow::Result<(Vec<Vec<std::net::TcpListener>>, Vec<SocketAddr>)> {
    let mut listeners: Vec<Vec<std::net::TcpListener>> = (0..workers).map(|_| Vec::new()).collect();
    let mut local_addrs = Vec::with_capacity(listen.len());
    for addr in listen {
        let socket = bind_listener(*addr).with_context(|| format!("cannot listen on {addr}"))?;
        let bound = socket.local_addr()?;
        for w in listeners.iter_mut().skip(1) {
            w.push(
                socket
                    .try_clone()
                    .with_context(|| format!("cannot share the listener on {bound}"))?,
            );
        }
        listeners[0].push(socket);
        local_addrs.push(bound);
    }
    Ok((listeners, local_addrs))
}

/// The authenticator when `auth.users_file` is set: its users file read and its password
/// check pool started.
fn auth_setup(
    config: &crate::config::AuthConfig,
) -> anyhow::Result<Option<arc_swap::ArcSwap<Authenticator>>> {
    let Some(path) = &config.users_file else {
        return Ok(None);
    };
    let checks = Arc::new(auth::PasswordChecks::new(config)?);
    let authenticator = Authenticator::load(path, config, checks).map_err(|e| {
        anyhow::Error::new(e).context(crate::exit::Misconfigured(
            "auth.users_file cannot be used".into(),
        ))
    })?;
    Ok(Some(arc_swap::ArcSwap::from_pointee(authenticator)))
}

/// What the composition root built for the proxy before it binds.
pub struct Parts {
    pub access_log: Arc<AccessLog>,
    /// With `policy.enabled`: the policy, the reputation client and feedback.
    pub filter: Option<filter::Filter>,
    /// With `intercept.enabled`: the checked CA's certificate minter.
    pub minter: Option<Minter>,
    /// The process's other listeners (the admin API, an embedded reputation server): the
    /// destination check refuses them like the proxy's own.
    pub other_listeners: Vec<SocketAddr>,
}

impl Proxy {
    /// Binds the listeners and builds the shared state. Fails on a busy port or a bad users
    /// file, before anything is served.
    pub fn bind(config: &Config, parts: Parts) -> anyhow::Result<Self> {
        let cfg = config.proxy.clone();
        let workers = cfg.workers;
        let (listeners, local_addrs) = bind_worker_listeners(&cfg.listen, workers)?;
        let auth = auth_setup(&config.auth)?;
        let policy = Arc::new(DestinationPolicy::new(
            local_addrs.clone(),
            parts.other_listeners,
            cfg.allow_internal_destinations,
            cfg.refused_destinations.clone(),
        ));
        if cfg.dns_cache.sets_max_names {
            tracing::warn!(
                "proxy.dns_cache_max_names is deprecated and ignored: the DNS cache is bounded by proxy.dns_cache_bytes"
            );
        }
        let dialer = Dialer::new(policy, cfg.upstream_connect_timeout)
            .with_static_hosts(cfg.static_hosts.clone())
            .with_resolver(
                dial::Resolver::new(cfg.dns_cache.clone()).context("starting the DNS resolver")?,
            )
            .with_attempt_delay(cfg.happy_eyeballs_delay);
        let upstream_bounds = pool::IdleBound::per_worker(cfg.upstream_max_idle, workers);
        let clients = upstream_bounds
            .iter()
            .map(|b| {
                h1pool::H1Pool::new(Connector::new(dialer.clone(), b.clone()), h1_settings(&cfg))
            })
            .collect();
        let (interceptor, https_clients) = match parts.minter {
            Some(minter) => {
                let (i, c) = intercept_setup(config, minter, &dialer, &upstream_bounds)?;
                (Some(i), c)
            }
            None => (None, Vec::new()),
        };
        let via_name = cfg.via_name.clone();
        let via =
            |v| headers::via_value(v, &via_name).context("via_name is not a valid header value");
        let filter = parts.filter;
        let state = ProxyState {
            via_10: via(Version::HTTP_10)?,
            via_11: via(Version::HTTP_11)?,
            acl: ClientAcl::new(cfg.allowed_clients.clone()),
            clients,
            https_clients,
            upstream_bounds,
            interceptor,
            tunnels: Default::default(),
            relayed_bytes: Default::default(),
            traffic: Default::default(),
            scanner: filter
                .as_ref()
                .map(|_| filescan::FileScanner::new(&config.files, cfg.workers)),
            filter,
            dialer,
            auth,
            auth_config: arc_swap::ArcSwap::from_pointee(config.auth.clone()),
            admin_token: arc_swap::ArcSwapOption::from(match &config.admin.token_file {
                None => None,
                Some(path) => Some(Arc::new(read_admin_token(path).context(
                    crate::exit::Misconfigured("admin.token_file cannot be used".into()),
                )?)),
            }),
            admin_token_file: arc_swap::ArcSwapOption::from(
                config.admin.token_file.clone().map(Arc::new),
            ),
            access_log: parts.access_log,
            ids: RequestIds::new(),
            tracker: TaskTracker::new(),
            conns: ConnLimits::new(
                cfg.max_connections,
                cfg.max_connections_per_client,
                "text/plain; charset=utf-8",
                "webrep: too many connections from your address\n",
            ),
            draining: CancellationToken::new(),
            local_addrs,
            rejected: conn::Rejected::default(),
            config: arc_swap::ArcSwap::from_pointee(cfg),
        };
        Ok(Self {
            listeners,
            state: Arc::new(state),
        })
    }

    /// The shared state (for tests and the admin side: counters, the interceptor).
    pub fn state(&self) -> Arc<ProxyState> {
        self.state.clone()
    }

    /// The bound addresses (with the real port when 0 was configured).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.state.local_addrs
    }

    /// Serves until `shutdown` is cancelled, then drains for the grace period. Worker 0 runs
    /// on the caller's runtime; the others get their own threads and runtimes. Returns once
    /// every worker has drained.
    pub async fn run(self, shutdown: CancellationToken) {
        let state = self.state;
        let watchdog = crate::shutdown::Watchdog::start(self.listeners.len());
        let listening = Arc::new(std::sync::atomic::AtomicUsize::new(self.listeners.len()));
        let mut threads = Vec::new();
        let mut own = Vec::new();
        for (worker, listeners) in self.listeners.into_iter().enumerate() {
            if worker == 0 {
                own = listeners;
                continue;
            }
            let (state, shutdown, listening, watchdog) = (
                state.clone(),
                shutdown.clone(),
                listening.clone(),
                watchdog.clone(),
            );
            let spawned = std::thread::Builder::new()
                .name(format!("webrep-worker-{worker}"))
                .spawn(move || {
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .max_blocking_threads(crate::proxy::MAX_BLOCKING_THREADS)
                        .build()
                    {
                        Ok(rt) => {
                            rt.block_on(run_worker(
                                worker, listeners, state, shutdown, listening, watchdog,
                            ));
                            rt.shutdown_timeout(crate::shutdown::BLOCKING_TASKS_GRACE);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, worker, "cannot start worker runtime")
                        }
                    }
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => tracing::error!(error = %e, worker, "cannot start worker thread"),
            }
        }
        run_worker(0, own, state, shutdown, listening, watchdog).await;
        // Other workers finish their drain within the same grace period.
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

/// One worker: accept loops on its listeners; after shutdown, drain (shared tracker) for the
/// grace period, keeping this runtime alive so its connections can finish.
async fn run_worker(
    worker: usize,
    listeners: Vec<std::net::TcpListener>,
    state: Arc<ProxyState>,
    shutdown: CancellationToken,
    listening: Arc<std::sync::atomic::AtomicUsize>,
    watchdog: Option<Arc<crate::shutdown::Watchdog>>,
) {
    // The systemd watchdog hears from this event loop for as long as it runs tasks.
    if let Some(w) = watchdog {
        tokio::spawn(w.heartbeat(worker));
    }
    if let Some(b) = state.upstream_bounds.get(worker) {
        tokio::spawn(b.clone().sweep_fresh(shutdown.clone()));
    }
    let accept_tracker = TaskTracker::new();
    for listener in listeners {
        let listener = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, worker, "cannot register listener");
                continue;
            }
        };
        if worker == 0
            && let Ok(addr) = listener.local_addr()
        {
            tracing::info!(listen.addr = %addr, workers = state.clients.len(), "proxy listening");
        }
        let (state, shutdown) = (state.clone(), shutdown.clone());
        accept_tracker.spawn(async move {
            let serve = |conn: Admitted| {
                let span = tracing::debug_span!("conn", client.addr = %conn.peer);
                serve_connection(worker, state.clone(), conn, shutdown.clone()).instrument(span)
            };
            crate::conns::accept_loop(&listener, &state.conns, &state.tracker, &shutdown, serve)
                .await;
        });
    }
    shutdown.cancelled().await;
    // Connections inside intercepted tunnels finish their in-flight requests and close.
    state.draining.cancel();
    accept_tracker.close();
    accept_tracker.wait().await;
    let grace = state.config().shutdown_grace_period;
    // The last worker to close its listeners says so: from here on, new clients are refused.
    if listening.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
        tracing::info!(
            connections = state.tracker.len(),
            grace_ms = grace.as_millis() as u64,
            "shutting down: listeners closed, draining"
        );
    }
    state.tracker.close();
    if tokio::time::timeout(grace, state.tracker.wait())
        .await
        .is_err()
    {
        if worker == 0 {
            tracing::warn!(
                remaining = state.tracker.len(),
                "grace period over; abandoning remaining connections and tunnels"
            );
        }
    } else if worker == 0 {
        tracing::info!("drained");
    }
}

/// Waits for a connection's next bytes without HTTP buffers (hyper allocates its read and
/// write buffers when it starts serving): a new connection's first request, or the next
/// request of a parked keep-alive one, so that many silent connections stay cheap. False
/// when it should close instead: shutdown, asked to make room, idle timeout.
async fn next_bytes(
    stream: &TcpStream,
    activity: &ConnActivity,
    state: &ProxyState,
    shutdown: &CancellationToken,
) -> bool {
    let (idle, header) = {
        let cfg = state.config();
        (cfg.client_idle_timeout, cfg.header_read_timeout)
    };
    tokio::select! {
        r = stream.readable() => r.is_ok(),
        _ = shutdown.cancelled() => false,
        _ = activity.close_asked() => false,
        _ = watchdog(activity, idle, header, None) => false,
    }
}

/// Serves an admitted connection: waits for bytes with no HTTP state, serves HTTP/1.1 until
/// the connection has been idle for `proxy.client_park_after_ms`, puts the HTTP connection
/// aside (its buffers freed, the socket and any bytes read but not parsed kept) and waits
/// again, until the connection closes.
async fn serve_connection(
    worker: usize,
    state: Arc<ProxyState>,
    conn: Admitted,
    shutdown: CancellationToken,
) {
    let Admitted {
        stream,
        peer,
        permit,
        activity,
    } = conn;
    let allowed = state.acl.allows(peer.ip());
    if !allowed {
        tracing::info!(client.addr = %peer, "client not in allowed networks");
    }
    let mut svc = ProxyService {
        state: state.clone(),
        client: peer,
        worker,
        slot: Arc::new(std::sync::Mutex::new(Some(permit))),
        allowed,
        activity: activity.clone(),
        tunnel: None,
    };
    let mut io = ClientIo::new(bytes::Bytes::new(), stream, activity.clone());
    loop {
        let (carry, stream) = io.into_parts();
        if carry.is_empty() {
            if !next_bytes(&stream, &activity, &state, &shutdown).await {
                return;
            }
        } else {
            // Part of the next request head is already here: its header timer runs.
            activity.bytes_read();
        }
        io = ClientIo::new(carry, stream, activity.clone());
        // Boxed: while a connection waits for bytes, its task holds only this function's
        // small state, not the kilobytes of hyper's connection future.
        match Box::pin(serve_http(&state, io, svc, &shutdown)).await {
            Some((i, s)) => (io, svc) = (i, s),
            None => return,
        }
    }
}

/// Serves HTTP/1.1 on a connection until it closes, is idle for too long, is asked to make
/// room, or shutdown drains it (`None`), or until it has been idle for the park time: then
/// the socket and the service come back, for [`serve_connection`] to wait with.
async fn serve_http(
    state: &ProxyState,
    io: ClientIo,
    svc: ProxyService,
    shutdown: &CancellationToken,
) -> Option<(ClientIo, ProxyService)> {
    let (peer, activity, allowed) = (svc.client, svc.activity.clone(), svc.allowed);
    let cfg = state.config.load_full();
    let park = cfg.client_park_after.filter(|_| allowed);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_header_size(cfg.max_header_bytes)
        .max_headers(cfg.max_header_lines)
        .max_buf_size(CLIENT_READ_BUFFER_MAX.max(cfg.max_header_bytes + 8192))
        .preserve_header_case(cfg.preserve_header_case)
        .keep_alive(allowed);
    let mut conn = builder
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    let (mut draining, mut parking) = (false, false);
    loop {
        tokio::select! {
            r = &mut conn => {
                if let Err(e) = r {
                    activity.end_park();
                    match conn::head_refusal(&e) {
                        Some(refused) => conn::record_rejected(state, peer, refused),
                        None => tracing::debug!(error = %e, "client connection ended with an error"),
                    }
                    return None;
                }
                return if parking { unpark(state, &activity, conn).await } else { None };
            }
            _ = shutdown.cancelled(), if !draining && !parking => {
                draining = true;
                Pin::new(&mut conn).graceful_shutdown();
            }
            // Closed to make room for a new client (the limit is reached and this one is idle).
            _ = activity.close_asked(), if !draining && !parking => {
                draining = true;
                Pin::new(&mut conn).graceful_shutdown();
            }
            e = watchdog(&activity, cfg.client_idle_timeout, cfg.header_read_timeout, park), if !draining && !parking => {
                match e {
                    Expiry::Idle => {
                        draining = true;
                        Pin::new(&mut conn).graceful_shutdown();
                    }
                    Expiry::HeaderTimeout => {
                        conn::record_rejected(state, peer, conn::HEADER_TIMEOUT);
                        return None;
                    }
                    // An idle HTTP/1 connection ends at once on a graceful shutdown, without
                    // a byte read or written; the socket's shutdown is skipped meanwhile.
                    Expiry::Park => {
                        parking = true;
                        activity.begin_park();
                        Pin::new(&mut conn).graceful_shutdown();
                    }
                }
            }
        }
    }
}

/// The socket and service of an HTTP connection that ended for a park. When bytes moved
/// after the park began, the connection was not idle (hyper finished a response or read a
/// request instead, and may have dropped a request body unread): it is shut down and
/// closed, as hyper would have done, rather than served again from a position in the
/// stream that is not the start of a request.
async fn unpark(
    state: &ProxyState,
    activity: &Arc<ConnActivity>,
    conn: hyper::server::conn::http1::UpgradeableConnection<TokioIo<ClientIo>, ProxyService>,
) -> Option<(ClientIo, ProxyService)> {
    let idle = activity.end_park();
    let parts = conn.into_parts()?;
    let (carry, stream) = parts.io.into_inner().into_parts();
    let activity = activity.clone();
    if !idle {
        let mut io = ClientIo::new(carry, stream, activity);
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut io).await;
        return None;
    }
    // What hyper had read and not parsed comes first, then what the replay had left. Copied:
    // hyper's slice, even an empty one, would keep its whole read buffer alive.
    let carry = if parts.read_buf.is_empty() && carry.is_empty() {
        bytes::Bytes::new()
    } else {
        [&parts.read_buf[..], &carry[..]].concat().into()
    };
    state
        .conns
        .stats
        .parked
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Some((ClientIo::new(carry, stream, activity), parts.service))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `f` returns, without calling it.
    fn future_size<A, F>(_: impl Fn(A) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// A connection that has sent nothing yet costs its task's future: it stays small (the
    /// HTTP part, kilobytes, is boxed once bytes arrive), so many silent connections are
    /// cheap.
    #[test]
    fn a_silent_connection_waits_in_a_small_task() {
        type Args = (usize, Arc<ProxyState>, Admitted, CancellationToken);
        let waiting = future_size(|(w, s, c, t): Args| serve_connection(w, s, c, t));
        type Serving = (
            &'static ProxyState,
            ClientIo,
            ProxyService,
            &'static CancellationToken,
        );
        let serving = future_size(|(s, i, v, t): Serving| serve_http(s, i, v, t));
        assert!(
            waiting <= 1024,
            "a waiting connection's task is {waiting} bytes"
        );
        assert!(serving > waiting, "{serving} <= {waiting}");
    }
}
