//! Inside a CONNECT tunnel when interception is on: classify the client's first bytes, then
//! decrypt TLS with a minted certificate and serve the requests inside like plain ones.
//!
//! # Where it sits
//! [`super::connect`] answers `200` after dialling the target, then hands the client
//! connection here instead of relaying it. The first bytes decide:
//! - a TLS record (`0x16`): the ClientHello is read with rustls' `LazyConfigAcceptor`, a leaf
//!   for its SNI (or the CONNECT host when there is none) comes from the [`Minter`], and the
//!   decrypted connection is served by hyper (HTTP/1.1 or HTTP/2, by ALPN) with the proxy's
//!   own [`ProxyService`]: each inner request is rewritten to its full `https://` URL (the
//!   CONNECT target, in the spelling the client wrote; a request naming another origin gets
//!   421) and goes through the same dispatch, logging and forwarding as a plain request,
//!   upstream over verified TLS;
//! - an HTTP method: the tunnel carries plain HTTP, served the same way with `http://` URLs;
//! - anything else: the policy's `interception.non_tls` for the host decides (block: close;
//!   allow: relay untouched); without filtering, the config's `intercept.non_tls`. A
//!   bump-to-block tunnel (a refused host, no upstream connection) never relays.
//!
//! An SNI that differs from the CONNECT host is logged and decided by the policy as a host
//! of its own, a decision only (the CONNECT was counted and reported already): a refused SNI
//! closes the tunnel before any certificate is minted for it; an
//! allowed one gets its certificate, and the upstream is still the CONNECT target (inner
//! requests are filtered by the CONNECT target's URL, which is where they go).
//!
//! # What it costs
//! One small read to classify; a TLS handshake with a cached certificate (a mint on the first
//! visit to a host, see [`crate::intercept::mint`]); then hyper per request, as for plain
//! HTTP, plus TLS on both sides. For TLS to a server the pools hold no connection to, the
//! CONNECT's dialled connection starts the upstream handshake at once, beside the client's
//! ([`super::early`]); otherwise (and for plain HTTP) it is closed, and inner requests use
//! the pooled clients' connections.
//!
//! # How it fails
//! A client that sends nothing or does not finish its handshake within
//! `intercept.handshake_timeout_ms` is closed; a handshake failure (a client that does not
//! trust the CA, a pinned app) is logged with the host and closes the tunnel. Upstream
//! certificate failures are answered with a 502 naming the error
//! ([`super::error::ProxyError::UpstreamCertificate`]); the connection is never completed as if valid.

use std::sync::Arc;

use bytes::Bytes;
use http::uri::Authority;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite};
use tokio::net::TcpStream;

use super::ProxyState;
use super::conn::{ActivityIo, Expiry, watchdog};
use super::ctx::RequestCtx;
use super::service::{ProxyService, TunnelCtx};
use super::tap::Prefixed;
use super::tunnel::{RelayEnd, RelayStats};
use crate::config::NonTlsAction;
use crate::conns::ConnActivity;
use crate::intercept::mint::Minter;

/// What interception needs at run time.
pub struct Interceptor {
    pub minter: Minter,
    pub handshake_timeout: std::time::Duration,
    pub non_tls: NonTlsAction,
    /// Client handshakes that failed after interception, per host (apps that pin their
    /// certificates, clients without the CA): candidates for the bypass list.
    pub handshake_failures: moka::sync::Cache<String, Arc<std::sync::atomic::AtomicU64>>,
    /// With `intercept.early_upstream_ms`: upstream handshakes started beside the client's.
    pub early: Option<Arc<super::early::EarlyConns>>,
}

/// Most hosts whose handshake failures are remembered.
pub const HANDSHAKE_FAILURE_HOSTS: u64 = 10_000;

impl Interceptor {
    /// Counts a failed client handshake for `host`.
    fn handshake_failed(&self, host: &str) {
        self.handshake_failures
            .get_with(host.to_ascii_lowercase(), Default::default)
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Hosts with failed client handshakes after interception, most failures first.
    pub fn failed_handshakes(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .handshake_failures
            .iter()
            .map(|(h, n)| ((*h).clone(), n.load(std::sync::atomic::Ordering::Relaxed)))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    }
}

/// Serves an upgraded CONNECT connection with interception (see the module docs). Returns
/// when the client connection ends, with how it ended (bytes are counted only for a relayed
/// non-TLS tunnel; inner requests log their own).
pub async fn serve_tunnel(
    state: Arc<ProxyState>,
    ctx: RequestCtx,
    client: hyper::upgrade::Upgraded,
    authority: Authority,
    upstream: Option<TcpStream>,
    non_tls: NonTlsAction,
) -> RelayStats {
    let mut stats = RelayStats {
        up: 0,
        down: 0,
        end: RelayEnd::Closed,
    };
    let Some(icpt) = state.interceptor.as_ref() else {
        return stats;
    };
    let mut client = TokioIo::new(client);
    let mut first = vec![0u8; 1];
    let n = match tokio::time::timeout(icpt.handshake_timeout, client.read(&mut first)).await {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "tunnel closed before its first byte");
            stats.end = RelayEnd::Error;
            return stats;
        }
        Err(_) => {
            tracing::debug!(target = %authority, "tunnel sent nothing in time; closing");
            stats.end = RelayEnd::Idle;
            return stats;
        }
    };
    if n == 0 {
        return stats;
    }
    let prefixed = Prefixed::new(Bytes::copy_from_slice(&first[..n]), client);
    match first[0] {
        0x16 => {
            serve_tls(state.clone(), ctx, prefixed, authority, upstream, icpt).await;
        }
        b'A'..=b'Z' => {
            drop(upstream);
            serve_inner(
                state.clone(),
                ctx,
                TokioIo::new(prefixed),
                authority,
                "http",
            )
            .await;
        }
        _ => match (non_tls, upstream) {
            (NonTlsAction::Refuse, _) | (_, None) => {
                tracing::info!(client.addr = %ctx.client, target = %authority,
                    "tunnel carries neither TLS nor HTTP; refused (non_tls)");
                stats.end = RelayEnd::Error;
            }
            (NonTlsAction::Tunnel, Some(upstream)) => {
                let idle = state.config().tunnel_idle_timeout;
                stats = super::tunnel::relay(prefixed, upstream, idle).await;
                stats.up += n as u64;
            }
        },
    }
    stats
}

async fn serve_tls(
    state: Arc<ProxyState>,
    ctx: RequestCtx,
    io: Prefixed<TokioIo<hyper::upgrade::Upgraded>>,
    authority: Authority,
    upstream: Option<TcpStream>,
    icpt: &Interceptor,
) {
    let deadline = tokio::time::Instant::now() + icpt.handshake_timeout;
    let acceptor = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
    let start = match tokio::time::timeout_at(deadline, acceptor).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::info!(client.addr = %ctx.client, target = %authority, error = %e,
                "not a usable TLS ClientHello; tunnel closed");
            return;
        }
        Err(_) => {
            tracing::debug!(target = %authority, "ClientHello not received in time");
            return;
        }
    };
    let sni = start.client_hello().server_name().map(str::to_owned);
    let connect_host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let cert_host = match &sni {
        Some(s) => {
            if !s.eq_ignore_ascii_case(connect_host) && !sni_allowed(&state, &ctx, s).await {
                tracing::info!(client.addr = %ctx.client, target = %authority, sni = %s,
                    "SNI names a host the policy refuses (CONNECT host differs); tunnel closed");
                return;
            }
            if !s.eq_ignore_ascii_case(connect_host) {
                tracing::info!(client.addr = %ctx.client, target = %authority, sni = %s,
                    "SNI differs from the CONNECT host; upstream stays the CONNECT target");
            }
            s.clone()
        }
        None => connect_host.to_owned(),
    };
    // The upstream handshake starts now, beside ours with the client, for the pool the
    // client's requests will use (the one offering h2 when the client offers it).
    let h2 = start
        .client_hello()
        .alpn()
        .is_some_and(|mut protocols| protocols.any(|p| p == b"h2"));
    let port = authority.port_u16().unwrap_or(443);
    if let (Some(early), Some(tcp)) = (&icpt.early, upstream) {
        let tcp = super::pool::Tracked::new(tcp, &state.upstream_bounds[ctx.worker]);
        early.start(ctx.worker, connect_host, port, h2, tcp);
    }
    // What `tunnel_ended` needs once the tunnel is over.
    let ended = icpt
        .early
        .as_ref()
        .map(|e| (e, ctx.worker, connect_host.to_owned()));
    let config = match icpt.minter.server_config(&cert_host).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(target = %authority, error = %e, "cannot mint a certificate");
            return;
        }
    };
    let tls = match tokio::time::timeout_at(deadline, start.into_stream(config)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            // Typically a client that does not trust our CA, or pins its certificates.
            tracing::info!(client.addr = %ctx.client, host = %cert_host, error = %e,
                "client TLS handshake failed after interception");
            icpt.handshake_failed(&cert_host);
            return;
        }
        Err(_) => {
            tracing::debug!(host = %cert_host, "client TLS handshake timed out");
            return;
        }
    };
    serve_inner(state, ctx, TokioIo::new(tls), authority, "https").await;
    if let Some((early, worker, host)) = ended {
        early.tunnel_ended(worker, &host, port, h2);
    }
}

/// Whether the policy allows `sni` (a name that differs from the CONNECT host) as a host:
/// the client believes it talks to that host, so a refused one must not get a certificate.
/// Only a decision: the CONNECT was counted and reported already, and each inner request
/// will be by its own URL.
async fn sni_allowed(state: &ProxyState, ctx: &RequestCtx, sni: &str) -> bool {
    let Some(filter) = &state.filter else {
        return true;
    };
    let url = format!("https://{sni}/");
    filter
        .decide(&url, ctx.client.ip(), ctx.user.as_ref())
        .await
        .is_ok_and(|d| d.forwards())
}

/// Serves HTTP/1.1 or HTTP/2 requests from a decrypted (or plain) tunnel with the proxy's
/// service, every request addressed to `scheme://authority`.
async fn serve_inner<I>(
    state: Arc<ProxyState>,
    ctx: RequestCtx,
    io: TokioIo<I>,
    authority: Authority,
    scheme: &'static str,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(ConnActivity::new());
    let io = ActivityIo {
        inner: io.into_inner(),
        observer: activity.clone(),
    };
    let svc = ProxyService {
        state: state.clone(),
        client: ctx.client,
        worker: ctx.worker,
        slot: ctx.slot.clone(),
        allowed: true,
        activity: activity.clone(),
        tunnel: Some(Arc::new(TunnelCtx {
            authority,
            scheme,
            user: ctx.user.clone(),
        })),
    };
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .preserve_header_case(state.config().preserve_header_case)
        .max_headers(state.config().max_header_lines)
        .max_buf_size(super::CLIENT_READ_BUFFER_MAX.max(state.config().max_header_bytes + 8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(state.config().max_header_bytes).unwrap_or(u32::MAX));
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    match e.downcast_ref::<hyper::Error>().and_then(super::conn::head_refusal) {
                        Some(refused) => super::conn::record_rejected(&state, ctx.client, refused),
                        None => tracing::debug!(error = %e, "intercepted connection ended with an error"),
                    }
                }
                return;
            }
            _ = state.draining.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            e = watchdog(&activity, state.config().client_idle_timeout, state.config().header_read_timeout, None), if !draining => {
                match e {
                    Expiry::Idle | Expiry::Park => {
                        draining = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    Expiry::HeaderTimeout => {
                        super::conn::record_rejected(&state, ctx.client, super::conn::HEADER_TIMEOUT);
                        return;
                    }
                }
            }
        }
    }
}
