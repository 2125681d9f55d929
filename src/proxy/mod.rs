//! The forward proxy: listeners, the accept loop, one task per client connection.
//!
//! [`Proxy::bind`] binds every configured listener (port 0 works, for tests) and builds the
//! shared [`ProxyState`]; [`Proxy::run`] accepts until the shutdown token is cancelled, then
//! drains: listeners close at once, each connection finishes its in-flight request and
//! closes, tunnels run on, and after `proxy.shutdown_grace_period_ms` whatever remains is
//! abandoned. Concurrent connections are bounded by a semaphore
//! (`proxy.max_connections`); beyond it clients wait in the kernel backlog.
//!
//! Request path: [`service`] dispatches to [`forward`] (absolute-form HTTP), [`connect`]
//! (tunnels) or [`local`] (the proxy's own pages); [`dial`] connects upstream behind the
//! [`acl`] destination check; [`headers`] rewrites each hop; [`body`] streams and logs.

pub mod acl;
pub mod auth;
pub mod body;
pub mod conn;
pub mod connect;
pub mod dial;
pub mod error;
pub mod forward;
pub mod headers;
pub mod local;
pub mod service;
pub mod tunnel;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use http::{HeaderValue, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::accesslog::{AccessLog, RequestIds};
use crate::config::{Config, ProxyConfig};
use acl::{ClientAcl, DestinationPolicy};
use auth::Authenticator;
use conn::{ActivityIo, ConnActivity, Expiry, watchdog};
use dial::{Connector, Dialer};
use service::ProxyService;

/// Everything the request path shares, behind one `Arc`.
pub struct ProxyState {
    pub config: ProxyConfig,
    pub client: Client<Connector, Incoming>,
    pub dialer: Dialer,
    pub acl: ClientAcl,
    pub auth: Option<Arc<Authenticator>>,
    pub access_log: Arc<AccessLog>,
    pub ids: RequestIds,
    pub tracker: TaskTracker,
    pub local_addrs: Vec<SocketAddr>,
    via_10: HeaderValue,
    via_11: HeaderValue,
}

impl ProxyState {
    /// Our `Via` entry for a message received with `version`.
    pub fn via_for(&self, version: Version) -> &HeaderValue {
        if version == Version::HTTP_10 {
            &self.via_10
        } else {
            &self.via_11
        }
    }
}

/// A bound, not yet running proxy.
pub struct Proxy {
    listeners: Vec<TcpListener>,
    state: Arc<ProxyState>,
}

impl Proxy {
    /// Binds the listeners and builds the shared state. Fails on a busy port or a bad users
    /// file, before anything is served.
    pub async fn bind(config: &Config, access_log: Arc<AccessLog>) -> anyhow::Result<Self> {
        let cfg = config.proxy.clone();
        let mut listeners = Vec::with_capacity(cfg.listen.len());
        for addr in &cfg.listen {
            let l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            listeners.push(l);
        }
        let local_addrs = listeners
            .iter()
            .map(|l| l.local_addr())
            .collect::<Result<Vec<_>, _>>()?;
        let auth = match &config.auth.users_file {
            Some(path) => Some(Arc::new(Authenticator::load(
                path,
                &config.auth.realm,
                config.auth.credentials_cache_ttl,
            )?)),
            None => None,
        };
        let policy = Arc::new(DestinationPolicy::new(
            local_addrs.clone(),
            cfg.allow_internal_destinations,
            cfg.refused_destinations.clone(),
        ));
        let dialer = Dialer::new(policy, cfg.upstream_connect_timeout);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(cfg.upstream_idle_timeout)
            .pool_max_idle_per_host(cfg.upstream_max_idle_per_host)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .set_host(false)
            .build(Connector::new(dialer.clone()));
        let via_name = cfg.via_name.clone();
        let via =
            |v| headers::via_value(v, &via_name).context("via_name is not a valid header value");
        let state = ProxyState {
            via_10: via(Version::HTTP_10)?,
            via_11: via(Version::HTTP_11)?,
            acl: ClientAcl::new(cfg.allowed_clients.clone()),
            client,
            dialer,
            auth,
            access_log,
            ids: RequestIds::new(),
            tracker: TaskTracker::new(),
            local_addrs,
            config: cfg,
        };
        Ok(Self {
            listeners,
            state: Arc::new(state),
        })
    }

    /// The bound addresses (with the real port when 0 was configured).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.state.local_addrs
    }

    /// Serves until `shutdown` is cancelled, then drains for the grace period.
    pub async fn run(self, shutdown: CancellationToken) {
        let state = self.state;
        let permits = Arc::new(Semaphore::new(state.config.max_connections));
        let accept_tracker = TaskTracker::new();
        for listener in self.listeners {
            let addr = listener.local_addr().ok();
            if let Some(addr) = addr {
                tracing::info!(listen.addr = %addr, "proxy listening");
            }
            accept_tracker.spawn(accept_loop(
                listener,
                state.clone(),
                permits.clone(),
                shutdown.clone(),
            ));
        }
        shutdown.cancelled().await;
        accept_tracker.close();
        accept_tracker.wait().await;
        let grace = state.config.shutdown_grace_period;
        tracing::info!(
            connections = state.tracker.len(),
            grace_ms = grace.as_millis() as u64,
            "shutting down: listeners closed, draining"
        );
        state.tracker.close();
        if tokio::time::timeout(grace, state.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = state.tracker.len(),
                "grace period over; abandoning remaining connections and tunnels"
            );
        } else {
            tracing::info!("drained");
        }
        state.access_log.flush(std::time::Duration::from_secs(2));
    }
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<ProxyState>,
    permits: Arc<Semaphore>,
    shutdown: CancellationToken,
) {
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = shutdown.cancelled() => return,
        };
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let span = tracing::debug_span!("conn", client.addr = %peer);
                state.tracker.spawn(
                    serve_connection(state.clone(), stream, peer, permit, shutdown.clone())
                        .instrument(span),
                );
            }
            Err(e) => {
                // EMFILE and friends: back off a little instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_connection(
    state: Arc<ProxyState>,
    stream: TcpStream,
    peer: SocketAddr,
    _permit: OwnedSemaphorePermit,
    shutdown: CancellationToken,
) {
    let allowed = state.acl.allows(peer.ip());
    if !allowed {
        tracing::info!(client.addr = %peer, "client not in allowed networks");
    }
    let activity = Arc::new(ConnActivity::new());
    let io = TokioIo::new(ActivityIo::new(stream, activity.clone()));
    let svc = ProxyService {
        state: state.clone(),
        client: peer,
        allowed,
        activity: activity.clone(),
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_header_size(state.config.max_header_bytes)
        .keep_alive(allowed);
    let conn = builder.serve_connection(io, svc).with_upgrades();
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "client connection ended with an error");
                }
                return;
            }
            _ = shutdown.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            e = watchdog(&activity, state.config.client_idle_timeout, state.config.header_read_timeout), if !draining => {
                match e {
                    Expiry::Idle => {
                        draining = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    Expiry::HeaderTimeout => {
                        tracing::debug!("client did not finish its request head in time; closing");
                        return;
                    }
                }
            }
        }
    }
}
