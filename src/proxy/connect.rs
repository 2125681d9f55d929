//! `CONNECT host:port`: tunnels to allowed ports.
//!
//! The port is checked first (`proxy.connect_ports`, 443 by default), then the filter
//! decides by host (`https://host/`), then the upstream is dialled (DNS, destination check,
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
    let mut non_tls = state.interceptor.as_ref().map(|i| i.non_tls);
    let mut bump = false;
    if let Some(filter) = &state.filter {
        // By host, before any upstream byte: the CONNECT stands for `https://host/`.
        let url = format!("https://{host}/");
        let (client, user) = (ctx.client.ip(), ctx.user.as_deref());
        let decision = Box::pin(filter.decide(&url, client, ctx.user.as_ref())).await?;
        let format = super::filter::PageFormat::from_headers(req.headers());
        let (canonical, verdict, refused) = match filter.record(decision, ctx.id, format) {
            Ok(allowed) => {
                ctx.decision = Some(allowed.decided.clone());
                (allowed.canonical, allowed.verdict, None)
            }
            Err(r) if intercept => {
                ctx.decision = Some(Arc::new(r.decided()));
                (r.canonical.clone(), r.verdict.clone(), Some(r))
            }
            Err(r) => return Err(ProxyError::Filtered(r)),
        };
        if intercept {
            let i = filter.interception(&canonical, verdict.as_ref(), client, user);
            intercept = i.intercept;
            non_tls = Some(i.non_tls);
        }
        if let Some(r) = refused {
            if !intercept {
                // Not intercepted for this client: the plain 403 with the reason.
                return Err(ProxyError::Filtered(r));
            }
            bump = true;
        }
    }
    let upstream = if bump {
        tracing::info!(id = %ctx.id, client.addr = %ctx.client, target = %authority,
            "refused host intercepted to show the block page (no upstream connection)");
        None
    } else {
        Some(state.dialer.dial(host, port).await?)
    };
    let upstream_addr = upstream.as_ref().and_then(|u| u.peer_addr().ok());
    let non_tls = non_tls.unwrap_or(crate::config::NonTlsAction::Refuse);
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
                    state2.tunnels[1].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    // Boxed: interception's state (kilobytes) would otherwise be part of
                    // every plain tunnel's task too, for as long as the tunnel stays open.
                    let stats = Box::pin(super::intercept::serve_tunnel(
                        state2.clone(),
                        ctx2.clone(),
                        client,
                        authority,
                        upstream,
                        non_tls,
                    ))
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
                    let Some(upstream) = upstream else {
                        return;
                    };
                    state2.tunnels[0].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
