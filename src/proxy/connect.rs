//! `CONNECT host:port`: tunnels to allowed ports.
//!
//! [`handle`] runs the phases in order: `check_target` (the port is checked first,
//! `proxy.connect_ports`, 443 by default), `filter` (the filter decides by host,
//! `https://host/`, the decision is recorded once, and the policy picks interception), the
//! dial, then `relay_tunnel`. The upstream is dialled (DNS, destination check,
//! connect deadline) *before* the `200` is sent, so a failure reaches the client as a
//! 502/504 with `Proxy-Status` instead of a reset tunnel. After the `200`, hyper hands over
//! the client connection and the bytes are relayed both ways with the tunnel idle timeout,
//! or, when the policy intercepts the host, the tunnel is served by [`super::intercept`];
//! the access log line is written when the tunnel closes, with the bytes moved each way.
//!
//! Bump-to-block: a refused host whose CONNECT the policy would intercept (for this client)
//! is answered `200` *without* any upstream connection and intercepted, so the browser
//! shows the block (or warn) page instead of a bare connection error; each inner request
//! goes through the filter by its full URL, so it gets the page (a warn page's "continue"
//! works as for plain HTTP). Without interception a refused CONNECT is a 403 with the
//! reason.

use std::sync::Arc;

use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tracing::Instrument as _;

use super::ProxyState;
use super::body::ProxyBody;
use super::ctx::RequestCtx;
use super::error::ProxyError;
use super::forward::log_relay;
use super::headers::has_our_via;
use super::service::Handled;
use super::tunnel::{RelayStats, TcpEnds, relay, relay_tcp};
use crate::accesslog::RecordKind;
use crate::config::NonTlsAction;

/// Opens one tunnel, phase by phase: check the target, let the filter decide by host (and
/// record the decision) and the policy pick interception, dial the upstream (unless a refused
/// host is intercepted only to show its page), then answer `200` and relay or intercept in a
/// tracked task.
pub async fn handle(
    state: &Arc<ProxyState>,
    ctx: &mut RequestCtx,
    mut req: Request<Incoming>,
) -> Result<Handled, ProxyError> {
    let authority = check_target(state, &req)?;
    let plan = filter(state, ctx, &req, &authority).await?;
    let upstream = if plan.bump {
        tracing::info!(id = %ctx.id, client.addr = %ctx.client, target = %authority,
            "refused host intercepted to show the block page (no upstream connection)");
        None
    } else {
        let port = authority.port_u16().unwrap_or(443);
        Some(state.dialer.dial(authority.host(), port).await?)
    };
    let upstream_addr = upstream.as_ref().and_then(|u| u.peer_addr().ok());
    let on_upgrade = hyper::upgrade::on(&mut req);
    relay_tunnel(state, ctx, on_upgrade, authority, upstream, plan);
    Ok(Handled {
        response: Response::new(ProxyBody::empty()),
        kind: RecordKind::Tunnel,
        upstream: upstream_addr,
        log_now: false,
    })
}

/// Phase "check target": `host:port` with an allowed port, and no forwarding loop.
fn check_target(state: &ProxyState, req: &Request<Incoming>) -> Result<Authority, ProxyError> {
    let authority = req
        .uri()
        .authority()
        .cloned()
        .ok_or(ProxyError::BadRequest("CONNECT needs a host:port target"))?;
    let port = authority
        .port_u16()
        .ok_or(ProxyError::BadRequest("CONNECT target has no port"))?;
    if authority.host().is_empty() || authority.as_str().contains('@') {
        return Err(ProxyError::BadRequest("CONNECT target is not host:port"));
    }
    if !state.config().connect_ports.contains(&port) {
        return Err(ProxyError::PortNotAllowed(port));
    }
    if has_our_via(req.headers(), &state.config().via_name) {
        return Err(ProxyError::Loop(state.config().via_name.clone()));
    }
    Ok(authority)
}

/// What happens inside the tunnel.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// Decrypt and serve the inner requests (else relay the bytes untouched).
    intercept: bool,
    /// Bytes that are neither TLS nor HTTP.
    non_tls: NonTlsAction,
    /// A refused host intercepted only to show its page: no upstream connection.
    bump: bool,
}

/// Phase "filter": by host, before any upstream byte (the CONNECT stands for
/// `https://host/`); the decision is recorded once. A refused host the policy would intercept
/// for this client is bumped; one it would not is refused here with 403.
async fn filter(
    state: &ProxyState,
    ctx: &mut RequestCtx,
    req: &Request<Incoming>,
    authority: &Authority,
) -> Result<Plan, ProxyError> {
    let mut plan = Plan {
        intercept: state.interceptor.is_some(),
        non_tls: state
            .interceptor
            .as_ref()
            .map_or(NonTlsAction::Refuse, |i| i.non_tls),
        bump: false,
    };
    let Some(filter) = &state.filter else {
        return Ok(plan);
    };
    let url = format!("https://{}/", authority.host());
    let client = ctx.client.ip();
    let decision = Box::pin(filter.decide(&url, client, ctx.user.as_ref())).await?;
    let format = super::filter::PageFormat::from_headers(req.headers());
    let (canonical, verdict, refused) = match filter.record(decision, ctx.id, format) {
        Ok(allowed) => {
            ctx.decision = Some(allowed.decided.clone());
            (allowed.canonical, allowed.verdict, None)
        }
        Err(r) if plan.intercept => {
            ctx.decision = Some(Arc::new(r.decided()));
            (r.canonical.clone(), r.verdict.clone(), Some(r))
        }
        Err(r) => return Err(ProxyError::Filtered(r)),
    };
    if plan.intercept {
        let i = filter.interception(&canonical, verdict.as_ref(), client, ctx.user.as_deref());
        plan.intercept = i.intercept;
        plan.non_tls = i.non_tls;
    }
    if let Some(r) = refused {
        if !plan.intercept {
            // Not intercepted for this client: the plain 403 with the reason.
            return Err(ProxyError::Filtered(r));
        }
        plan.bump = true;
    }
    Ok(plan)
}

/// Phase "relay": after the `200`, a tracked task takes the client connection over (and its
/// place under the limits) and intercepts or relays it, logging the tunnel when it closes.
fn relay_tunnel(
    state: &Arc<ProxyState>,
    ctx: &RequestCtx,
    on_upgrade: hyper::upgrade::OnUpgrade,
    authority: Authority,
    upstream: Option<tokio::net::TcpStream>,
    plan: Plan,
) {
    let upstream_addr = upstream.as_ref().and_then(|u| u.peer_addr().ok());
    let state2 = state.clone();
    let ctx2 = ctx.clone();
    let target = authority.as_str().to_owned();
    let slot = super::ctx::take_slot(&ctx.slot);
    state.tracker.spawn(
        async move {
            let _slot = slot;
            let client = match on_upgrade.await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "CONNECT upgrade failed");
                    return;
                }
            };
            let open = state2.traffic.tunnel_open();
            let (kind, stats) = if plan.intercept {
                state2.tunnels[1].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // Boxed: interception's state (kilobytes) would otherwise be part of
                // every plain tunnel's task too, for as long as the tunnel stays open.
                let stats = Box::pin(super::intercept::serve_tunnel(
                    state2.clone(),
                    ctx2.clone(),
                    client,
                    authority,
                    upstream,
                    plan.non_tls,
                ))
                .await;
                (RecordKind::Intercepted, stats)
            } else {
                let Some(upstream) = upstream else {
                    return;
                };
                state2.tunnels[0].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                (
                    RecordKind::Tunnel,
                    relay_plain(&state2, client, upstream).await,
                )
            };
            log_relay(
                &state2,
                &ctx2,
                "CONNECT",
                &target,
                kind,
                200,
                upstream_addr,
                stats,
            );
            drop(open);
        }
        .in_current_span(),
    );
}

/// Relays a tunnel that is not intercepted: spliced when the client's side is the plain TCP
/// connection it came on (with whatever hyper and the connection had read beyond the
/// `CONNECT` head sent on first), else copied.
async fn relay_plain(
    state: &ProxyState,
    client: hyper::upgrade::Upgraded,
    upstream: tokio::net::TcpStream,
) -> RelayStats {
    let (idle, splice) = {
        let cfg = state.config();
        (cfg.tunnel_idle_timeout, cfg.splice)
    };
    match client_tcp(client) {
        Ok((client, client_read)) => {
            let ends = TcpEnds {
                client,
                client_read,
                upstream,
                upstream_read: bytes::Bytes::new(),
            };
            relay_tcp(ends, idle, splice, &state.relayed_bytes).await
        }
        Err(client) => {
            let stats = relay(TokioIo::new(client), upstream, idle).await;
            let moved = stats.up + stats.down;
            state.relayed_bytes[0].fetch_add(moved, std::sync::atomic::Ordering::Relaxed);
            stats
        }
    }
}

/// The client's TCP connection under an upgraded HTTP/1 connection, with the bytes read from
/// it and not yet parsed (hyper's read buffer, then what the connection carried over from a
/// parked HTTP connection); the connection back when it is something else.
pub(crate) fn client_tcp(
    client: hyper::upgrade::Upgraded,
) -> Result<(tokio::net::TcpStream, bytes::Bytes), hyper::upgrade::Upgraded> {
    let parts = client.downcast::<TokioIo<super::conn::ClientIo>>()?;
    let (carry, tcp) = parts.io.into_inner().into_parts();
    let read = if carry.is_empty() {
        parts.read_buf
    } else {
        let mut b = bytes::BytesMut::from(&parts.read_buf[..]);
        b.extend_from_slice(&carry);
        b.freeze()
    };
    Ok((tcp, read))
}
