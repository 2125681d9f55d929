//! `CONNECT host:port`: tunnels to allowed ports.
//!
//! The port is checked first (`proxy.connect_ports`, 443 by default), then the upstream is
//! dialled (DNS, destination check, connect deadline) *before* the `200` is sent, so a
//! failure reaches the client as a 502/504 with `Proxy-Status` instead of a reset tunnel.
//! After the `200`, hyper hands over the client connection and the bytes are relayed both
//! ways with the tunnel idle timeout; the access log line is written when the tunnel closes,
//! with the bytes moved each way. Interception (issue 7) will hook in between the `200` and
//! the relay.

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tracing::Instrument as _;

use super::ProxyState;
use super::body::ProxyBody;
use super::error::ProxyError;
use super::forward::log_relay;
use super::headers::has_our_via;
use super::service::{Handled, RequestCtx};
use super::tunnel::relay;
use crate::accesslog::RecordKind;

pub async fn handle(
    state: &Arc<ProxyState>,
    ctx: &mut RequestCtx,
    mut req: Request<Incoming>,
) -> Result<Handled, ProxyError> {
    let authority = req
        .uri()
        .authority()
        .cloned()
        .ok_or(ProxyError::BadRequest("CONNECT needs a host:port target"))?;
    let port = authority
        .port_u16()
        .ok_or(ProxyError::BadRequest("CONNECT target has no port"))?;
    let host = authority.host();
    if host.is_empty() || authority.as_str().contains('@') {
        return Err(ProxyError::BadRequest("CONNECT target is not host:port"));
    }
    if !state.config.connect_ports.contains(&port) {
        return Err(ProxyError::PortNotAllowed(port));
    }
    if has_our_via(req.headers(), &state.config.via_name) {
        return Err(ProxyError::Loop(state.config.via_name.clone()));
    }
    let mut intercept = state.interceptor.is_some();
    if let Some(filter) = &state.filter {
        // By host, before any upstream byte: the CONNECT stands for `https://host/`.
        let url = format!("https://{host}/");
        let allowed = filter
            .check(&url, ctx.client.ip(), ctx.user.as_deref(), req.headers())
            .await?;
        intercept = intercept && filter.intercepts(&allowed, ctx.client.ip(), ctx.user.as_deref());
        ctx.decision = Some(allowed.decided.clone());
    }
    let upstream = state.dialer.dial(host, port).await?;
    let upstream_addr = upstream.peer_addr().ok();
    let on_upgrade = hyper::upgrade::on(&mut req);
    let state2 = state.clone();
    let ctx2 = ctx.clone();
    let target = authority.as_str().to_owned();
    let slot = super::service::take_slot(&ctx.slot);
    state.tracker.spawn(
        async move {
            let _slot = slot;
            match on_upgrade.await {
                Ok(client) if intercept => {
                    let stats = super::intercept::serve_tunnel(
                        state2.clone(),
                        ctx2.clone(),
                        client,
                        authority,
                        upstream,
                    )
                    .await;
                    log_relay(
                        &state2,
                        &ctx2,
                        "CONNECT",
                        &target,
                        RecordKind::Intercepted,
                        200,
                        upstream_addr,
                        stats,
                    );
                }
                Ok(client) => {
                    let stats = relay(
                        TokioIo::new(client),
                        upstream,
                        state2.config.tunnel_idle_timeout,
                    )
                    .await;
                    log_relay(
                        &state2,
                        &ctx2,
                        "CONNECT",
                        &target,
                        RecordKind::Tunnel,
                        200,
                        upstream_addr,
                        stats,
                    );
                }
                Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
            }
        }
        .in_current_span(),
    );
    Ok(Handled {
        response: Response::new(ProxyBody::empty()),
        kind: RecordKind::Tunnel,
        upstream: upstream_addr,
        log_now: false,
    })
}
