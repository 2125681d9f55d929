//! Plain-HTTP forwarding of absolute-form requests (`GET http://host/path`).
//!
//! [`handle`] runs the phases in order, each a function of its own:
//! 1. `check_target`: scheme, host, forwarding loop;
//! 2. own pages ([`super::own`]): the proxy's listen addresses, `Max-Forwards: 0`, continue
//!    and report links are answered here;
//! 3. `filter`: the filter decides and the decision is recorded, once; a refusal ends here;
//! 4. `prepare_upstream`: hop-by-hop headers out, `Host` from the target, our `Via` in;
//! 5. `send` over the pooled keep-alive client, then `response_head`;
//! 6. `relay_upgrade` for an accepted WebSocket, or `scan_response` for everything else.
//!
//! The access log line is written when the response body is done
//! ([`super::body::ResponseGuard`]). The request body streams to the upstream as the client
//! sends it and the response body streams back, never collected. the request body streams to the upstream as the client sends it and the
//! response body streams back, never collected. A failure to read the client's body on the
//! way is the client's (400); a response the proxy cannot relay as it is (a `101` nobody
//! asked for, a transfer coding other than `chunked`) is the upstream's (502). A WebSocket
//! upgrade keeps its `Upgrade` headers, and on `101` both sides are joined by a relay. The
//! client connects through [`super::dial::Connector`], so refused destinations are stopped
//! after DNS.
//!
//! Deadlines: the connect (inside the connector) and the response headers
//! (`proxy.upstream_response_timeout_ms`, connect included); the body has no deadline of its
//! own, which is what long downloads need.

use std::sync::Arc;

use http::uri::{Authority, Uri};
use http::{HeaderValue, Request, StatusCode, Version, header};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpInfo;
use hyper_util::rt::TokioIo;
use tokio_util::either::Either;
use tracing::Instrument as _;

use super::ProxyState;
use super::body::{ProxyBody, UpstreamBody};
use super::ctx::RequestCtx;
use super::dial::DialError;
use super::error::ProxyError;
use super::headers::{
    MaxForwards, append_via, check_transfer_codings, has_our_via, has_token, is_websocket_upgrade,
    max_forwards, strip_hop_by_hop,
};
use super::own;
use super::service::Handled;
use super::tap::Prefixed;
use super::tunnel::{RelayEnd, RelayStats, TcpEnds, relay, relay_tcp};
use crate::accesslog::{AccessRecord, RecordKind};

/// Forwards one absolute-form request, phase by phase: check the target, answer it here if
/// it is one of the proxy's own pages, let the filter decide (and record the decision), prepare
/// the head for the upstream, send it, then either join a WebSocket upgrade or relay the
/// response (its body scanned when the policy asks).
pub async fn handle(
    state: &Arc<ProxyState>,
    ctx: &mut RequestCtx,
    mut req: Request<Incoming>,
) -> Result<Handled, ProxyError> {
    let target = check_target(state, ctx, &req)?;
    if let Some(page) = own::own_page(state, &req)? {
        return Ok(own::serve(state, ctx, page, req).await);
    }
    let scan = filter(state, ctx, &req).await?;
    let prepared = prepare_upstream(state, &mut req, &target)?;
    let resp = send(state, ctx.worker, prepared.pool, req, prepared.websocket).await?;
    let relayed = response_head(state, resp, prepared.websocket);
    let upstream = relayed.upstream;
    if let (Some((client, url)), Some(up)) = (prepared.client_upgrade, relayed.upgrade) {
        relay_upgrade(state, ctx, url, client, up, upstream);
        return Ok(Handled {
            response: http::Response::from_parts(relayed.parts, ProxyBody::upstream(relayed.body)),
            kind: RecordKind::Websocket,
            upstream,
            log_now: false,
        });
    }
    let body = scan_response(state, ctx, scan, &relayed.parts, relayed.body).await?;
    let body = match relayed.pool {
        Some(h) => body.with_pool(h),
        None => body,
    };
    Ok(Handled {
        response: http::Response::from_parts(relayed.parts, body),
        kind: RecordKind::Http,
        upstream,
        log_now: true,
    })
}

/// Where an absolute-form request goes.
struct Target {
    authority: Authority,
    /// Over verified TLS (a request decrypted from an intercepted tunnel).
    https: bool,
}

/// Phase "check target": a scheme this path serves, a host, and no forwarding loop.
fn check_target(
    state: &ProxyState,
    ctx: &RequestCtx,
    req: &Request<Incoming>,
) -> Result<Target, ProxyError> {
    // `https` only for requests decrypted from an intercepted tunnel; a client asks for
    // https URLs with CONNECT.
    let https = match req.uri().scheme_str() {
        Some("http") => false,
        Some("https") if ctx.inner && !state.https_clients.is_empty() => true,
        Some(other) => return Err(ProxyError::UnsupportedScheme(other.to_owned())),
        None => return Err(ProxyError::BadRequest("request target has no scheme")),
    };
    let authority = req
        .uri()
        .authority()
        .cloned()
        .ok_or(ProxyError::BadRequest("absolute-form URL without a host"))?;
    if authority.host().is_empty() {
        return Err(ProxyError::BadRequest(
            "absolute-form URL with an empty host",
        ));
    }
    if has_our_via(req.headers(), &state.config().via_name) {
        return Err(ProxyError::Loop(state.config().via_name.clone()));
    }
    Ok(Target { authority, https })
}

/// Phase "filter": the filter decides and the decision is recorded, once; a refusal ends the
/// request. Returns what scanning the response needs when the policy's `files:` may select
/// it.
async fn filter(
    state: &ProxyState,
    ctx: &mut RequestCtx,
    req: &Request<Incoming>,
) -> Result<Option<FileScan>, ProxyError> {
    let Some(filter) = &state.filter else {
        return Ok(None);
    };
    let url = req.uri().to_string();
    // Boxed: the lookup's future (moka, the reputation client) is kilobytes, and only
    // filtering proxies need it.
    let decision = Box::pin(filter.decide(&url, ctx.client.ip(), ctx.user.as_ref())).await?;
    let format = super::filter::PageFormat::from_headers(req.headers());
    let allowed = filter
        .record(decision, ctx.id, format)
        .map_err(ProxyError::Filtered)?;
    ctx.decision = Some(allowed.decided);
    if state.scanner.is_none() || req.method() != http::Method::GET || !allowed.files.scan {
        return Ok(None);
    }
    Ok(Some(FileScan {
        settings: allowed.files,
        anonymize: allowed.anonymize,
        canonical: allowed.canonical,
        url,
        path: req.uri().path().to_owned(),
        format,
    }))
}

/// A head ready for the upstream, and how it goes there.
struct Prepared {
    pool: Pool,
    websocket: bool,
    /// The client side of a WebSocket upgrade, and the URL for the relay's log line.
    client_upgrade: Option<(hyper::upgrade::OnUpgrade, String)>,
}

/// Phase "prepare upstream": `Max-Forwards` counted down, userinfo out of the URL, hop-by-hop
/// headers out (the `Upgrade` ones kept for a WebSocket), `Host` from the target, our `Via`
/// in, HTTP/1.1 towards the pool that fits.
fn prepare_upstream(
    state: &ProxyState,
    req: &mut Request<Incoming>,
    target: &Target,
) -> Result<Prepared, ProxyError> {
    if matches!(*req.method(), http::Method::OPTIONS | http::Method::TRACE)
        && let MaxForwards::Forward(n) =
            max_forwards(req.headers()).map_err(ProxyError::BadRequest)?
    {
        req.headers_mut()
            .insert(header::MAX_FORWARDS, HeaderValue::from(n));
    }
    let websocket = is_websocket_upgrade(req.headers());
    let host_port = strip_userinfo(&target.authority);
    // The authority becomes the upstream pool's key, kept as long as the host has pooled
    // connections: a copy of its own, not a slice that would keep the client connection's
    // whole read buffer alive. Userinfo never goes upstream (nor into the key).
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    parts.authority = Some(
        Authority::from_maybe_shared(bytes::Bytes::copy_from_slice(host_port.as_bytes()))
            .map_err(|_| ProxyError::BadRequest("malformed host"))?,
    );
    *req.uri_mut() = Uri::from_parts(parts).map_err(|_| ProxyError::BadRequest("malformed URL"))?;
    let host_value =
        HeaderValue::from_str(host_port).map_err(|_| ProxyError::BadRequest("malformed host"))?;
    let via = state.via_for(req.version());
    {
        let h = req.headers_mut();
        strip_hop_by_hop(h, websocket);
        h.insert(header::HOST, host_value);
        append_via(h, via);
    }
    let client_h2 = req.version() == Version::HTTP_2;
    *req.version_mut() = Version::HTTP_11;
    let pool = match (target.https, client_h2 && !websocket) {
        (false, _) => Pool::Plain,
        (true, false) => Pool::Https1,
        (true, true) => Pool::Https2,
    };
    Ok(Prepared {
        pool,
        websocket,
        client_upgrade: websocket.then(|| (hyper::upgrade::on(&mut *req), req.uri().to_string())),
    })
}

/// The upstream's response head, rewritten for the client.
struct Relayed {
    parts: http::response::Parts,
    body: Incoming,
    upstream: Option<std::net::SocketAddr>,
    /// The upstream side of an accepted WebSocket upgrade.
    upgrade: Option<hyper::upgrade::OnUpgrade>,
    /// The HTTP/1 connection the response came on, idle again once its body is done (none
    /// for HTTP/2 and upgrades: see [`super::pool`]).
    pool: Option<super::pool::PoolHandle>,
}

/// Rewrites the response head for the client: hop-by-hop headers out (the `Upgrade` ones kept
/// for an accepted WebSocket), our `Via` in, HTTP/1.1, and the upstream's header spelling
/// dropped unless `proxy.preserve_header_case`.
fn response_head(
    state: &ProxyState,
    mut resp: http::Response<Incoming>,
    websocket: bool,
) -> Relayed {
    let upstream = resp.extensions().get::<HttpInfo>().map(|i| i.remote_addr());
    let switched = websocket && resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    let upgrade = switched.then(|| hyper::upgrade::on(&mut resp));
    let pool = resp.extensions_mut().remove::<super::pool::PoolHandle>();
    let pool = pool.filter(|_| !switched && resp.version() != Version::HTTP_2);
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, switched);
    append_via(&mut parts.headers, state.via_for(parts.version));
    parts.version = Version::HTTP_11;
    if !state.config().preserve_header_case {
        // hyper keeps the upstream's header-name spelling (and reason phrase) here and
        // writes the response with it only if these extensions stay.
        parts.extensions = http::Extensions::new();
    }
    Relayed {
        parts,
        body,
        upstream,
        upgrade,
        pool,
    }
}

/// Phase "relay upgrade": once both sides have switched protocols, a tracked task relays the
/// WebSocket both ways and logs it when it closes; it takes over the connection's place
/// under the limits.
fn relay_upgrade(
    state: &Arc<ProxyState>,
    ctx: &RequestCtx,
    url: String,
    client_up: hyper::upgrade::OnUpgrade,
    upstream_up: hyper::upgrade::OnUpgrade,
    upstream: Option<std::net::SocketAddr>,
) {
    let state2 = state.clone();
    let ctx2 = ctx.clone();
    let slot = super::ctx::take_slot(&ctx.slot);
    state.tracker.spawn(
        async move {
            let _slot = slot;
            let (c, u) = tokio::join!(client_up, upstream_up);
            let (c, u) = match (c, u) {
                (Ok(c), Ok(u)) => (c, u),
                (c, u) => {
                    tracing::debug!(
                        client_ok = c.is_ok(),
                        upstream_ok = u.is_ok(),
                        "websocket upgrade failed"
                    );
                    return;
                }
            };
            let stats = relay_websocket(&state2, c, u).await;
            log_relay(
                &state2,
                &ctx2,
                "GET",
                &url,
                RecordKind::Websocket,
                101,
                upstream,
                stats,
            );
        }
        .in_current_span(),
    );
}

/// Relays an upgraded WebSocket: spliced when both sides are plain TCP (a `ws://` origin over
/// the plain pool, a client on its own connection), each with the bytes its HTTP connection
/// had read past the upgrade sent on first; else copied.
async fn relay_websocket(
    state: &ProxyState,
    client: hyper::upgrade::Upgraded,
    upstream: hyper::upgrade::Upgraded,
) -> RelayStats {
    let (idle, splice) = {
        let cfg = state.config();
        (cfg.tunnel_idle_timeout, cfg.splice)
    };
    let client = super::connect::client_tcp(client);
    let upstream = upstream.downcast::<super::pool::Tracked>();
    match (client, upstream) {
        (Ok((client, client_read)), Ok(up)) => {
            let ends = TcpEnds {
                client,
                client_read,
                upstream: up.io.into_tcp(),
                upstream_read: up.read_buf,
            };
            relay_tcp(ends, idle, splice, &state.relayed_bytes).await
        }
        // One side is not plain TCP (or both): copy, with what the downcasts took apart
        // put back together.
        (client, upstream) => {
            let client = match client {
                Ok((tcp, read)) => Either::Left(Prefixed::new(read, tcp)),
                Err(c) => Either::Right(TokioIo::new(c)),
            };
            let upstream = match upstream {
                Ok(up) => Either::Left(Prefixed::new(up.read_buf, up.io.into_tcp())),
                Err(u) => Either::Right(TokioIo::new(u)),
            };
            let stats = relay(client, upstream, idle).await;
            let moved = stats.up + stats.down;
            state.relayed_bytes[0].fetch_add(moved, std::sync::atomic::Ordering::Relaxed);
            stats
        }
    }
}

/// Phase "scan response": a download the policy's `files:` selects is hashed and judged
/// ([`scan_download`]); anything else streams back untouched.
async fn scan_response(
    state: &Arc<ProxyState>,
    ctx: &RequestCtx,
    scan: Option<FileScan>,
    parts: &http::response::Parts,
    body: Incoming,
) -> Result<ProxyBody, ProxyError> {
    match scan {
        Some(scan)
            if super::filescan::select(
                &scan.settings,
                &http::Method::GET,
                &scan.path,
                parts.status,
                &parts.headers,
            ) =>
        {
            Box::pin(scan_download(state, ctx, scan, &parts.headers, body)).await
        }
        _ => Ok(ProxyBody::upstream(body)),
    }
}

/// Which upstream pool a request goes over.
#[derive(Clone, Copy)]
enum Pool {
    Plain,
    /// Verified TLS, HTTP/1.1 only.
    Https1,
    /// Verified TLS, `h2` or HTTP/1.1 as the origin picks.
    Https2,
}

/// Sends the request over `pool` within the response-header deadline and checks what comes
/// back can be relayed: a `101` only for the WebSocket upgrade the client asked for, and a
/// body framed by `chunked` alone or by nothing (see [`check_transfer_codings`]). A failure
/// while the client's body was being read is the client's (400), not the upstream's.
async fn send(
    state: &ProxyState,
    worker: usize,
    pool: Pool,
    req: Request<Incoming>,
    websocket: bool,
) -> Result<http::Response<Incoming>, ProxyError> {
    let (parts, body) = req.into_parts();
    let (body, failed) = UpstreamBody::new(body, &state.traffic);
    let req = Request::from_parts(parts, body);
    let timeout = state.config().upstream_response_timeout;
    let sent = match pool {
        Pool::Plain => tokio::time::timeout(timeout, state.clients[worker].request(req))
            .await
            .map(|r| r.map_err(boxed)),
        Pool::Https1 => tokio::time::timeout(timeout, state.https_clients[worker].h1.request(req))
            .await
            .map(|r| r.map_err(boxed)),
        Pool::Https2 => tokio::time::timeout(timeout, state.https_clients[worker].h2.request(req))
            .await
            .map(|r| r.map_err(boxed)),
    };
    let resp = match sent {
        Err(_) => return Err(ProxyError::UpstreamTimeout(timeout)),
        Ok(Err(e)) if failed.is_some_and(|f| f.load(std::sync::atomic::Ordering::Relaxed)) => {
            return Err(ProxyError::ClientBody(innermost(&*e)));
        }
        Ok(Err(e)) => return Err(map_client_error(&*e)),
        Ok(Ok(r)) => r,
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS
        && !(websocket && has_token(resp.headers(), &header::UPGRADE, "websocket"))
    {
        return Err(ProxyError::Upstream(
            "101 Switching Protocols to a request that asked for no such upgrade".to_owned(),
        ));
    }
    check_transfer_codings(resp.headers()).map_err(|codings| {
        ProxyError::Upstream(format!(
            "response transfer coding {codings:?} cannot be forwarded (only chunked)"
        ))
    })?;
    Ok(resp)
}

/// The message of the innermost error in `e`'s source chain.
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e;
    while let Some(s) = last.source() {
        last = s;
    }
    last.to_string()
}

/// `user:pass@host:port` → `host:port`.
fn strip_userinfo(a: &Authority) -> &str {
    match a.as_str().rsplit_once('@') {
        Some((_, hp)) => hp,
        None => a.as_str(),
    }
}

/// A pool's error, whichever pool, for [`map_client_error`] and [`innermost`].
fn boxed(
    e: impl std::error::Error + Send + Sync + 'static,
) -> Box<dyn std::error::Error + Send + Sync> {
    Box::new(e)
}

/// Turns a pooled-client error into a [`ProxyError`], finding our [`DialError`] in the chain.
fn map_client_error(e: &(dyn std::error::Error + 'static)) -> ProxyError {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    let mut innermost = None;
    while let Some(s) = src {
        if let Some(d) = s.downcast_ref::<DialError>() {
            return ProxyError::Dial(d.clone());
        }
        if let Some(t) = as_rustls(s) {
            return match t {
                rustls::Error::InvalidCertificate(c) => {
                    ProxyError::UpstreamCertificate(certificate_error_text(c))
                }
                other => ProxyError::Upstream(format!("TLS: {other}")),
            };
        }
        innermost = Some(s);
        src = s.source();
    }
    let detail = innermost.map_or_else(|| e.to_string(), |s| s.to_string());
    ProxyError::Upstream(detail)
}

/// The rustls error in `e`, looking inside `io::Error` and boxed errors (whose `source()`
/// skips the error they wrap, so a plain source walk never sees it).
fn as_rustls<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(t) = e.downcast_ref::<rustls::Error>() {
        return Some(t);
    }
    if let Some(inner) = e
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        return as_rustls(inner);
    }
    None
}

/// Plain words for an upstream certificate failure, for the error page.
fn certificate_error_text(e: &rustls::CertificateError) -> String {
    use rustls::CertificateError as C;
    match e {
        C::Expired | C::ExpiredContext { .. } => "the server's certificate has expired".into(),
        C::NotValidYet | C::NotValidYetContext { .. } => {
            "the server's certificate is not valid yet".into()
        }
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            "the server's certificate is for another name".into()
        }
        C::UnknownIssuer => {
            "the server's certificate is from an unknown issuer (or self-signed)".into()
        }
        C::Revoked => "the server's certificate is revoked".into(),
        C::BadSignature => "the server's certificate has a bad signature".into(),
        other => format!("the server's certificate is invalid: {other:?}"),
    }
}

/// A GET whose response the policy's `files:` settings may select for hashing.
struct FileScan {
    settings: Arc<crate::policy::FileSettings>,
    /// The policy's `feedback.anonymize_clients` and `anonymize_users` for the request.
    anonymize: (bool, bool),
    canonical: crate::canon::CanonicalUrl,
    url: String,
    path: String,
    format: super::filter::PageFormat,
}

/// Hashes a selected download and applies its verdict ([`super::filescan`]): held back
/// whole and replaced by the block page, or streamed and cut before its last frame.
async fn scan_download(
    state: &Arc<ProxyState>,
    ctx: &RequestCtx,
    scan: FileScan,
    headers: &http::HeaderMap,
    body: Incoming,
) -> Result<ProxyBody, ProxyError> {
    use super::filescan::{FileDecision, Mode, ScanBody, decide};
    let (Some(scanner), Some(filter)) = (&state.scanner, &state.filter) else {
        return Ok(ProxyBody::upstream(body));
    };
    let record = {
        let state = state.clone();
        let (id, client, url) = (ctx.id, ctx.client, scan.url.clone());
        let user = ctx.user.clone();
        let anonymize = scan.anonymize;
        let host = scan.canonical.host().to_owned();
        let content_type = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        move |d: &FileDecision| {
            let Some(scanner) = &state.scanner else {
                return;
            };
            let counter = match d.action {
                crate::policy::Action::Block => &scanner.stats.blocked,
                crate::policy::Action::Monitor => &scanner.stats.monitored,
                _ if d.answer.is_none() => &scanner.stats.unavailable,
                _ => return,
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(%id, client.addr = %client, url = %url, action = d.action.as_str(),
                file = %d.describe(), "file verdict");
            // A file verdict event, so the neighbourhood watch can escalate the host.
            if let Some(fb) = state.filter.as_ref().and_then(|f| f.feedback.as_ref()) {
                use crate::api::events::{FileFacts, Kind};
                // Its own id: the request's id already names the URL decision's event.
                let mut e = fb.event(format!("{id}.file"), Kind::FileVerdict);
                e.client = Some(fb.pseudonym(&client.ip().to_string(), anonymize.0));
                e.user = user.as_deref().map(|u| fb.pseudonym(u, anonymize.1));
                e.url = Some(url.clone());
                e.host = Some(host.clone());
                e.action = Some(d.action.as_str().to_owned());
                e.reason = Some("file".to_owned());
                e.cache = Some(d.cache.as_str().to_owned());
                e.source = d.source.as_deref().map(str::to_owned);
                e.file = Some(FileFacts {
                    sha256: d.sha256.clone(),
                    size: d.size,
                    content_type: content_type.clone(),
                    verdict: d
                        .answer
                        .as_ref()
                        .map(|a| a.verdict.map_or("unknown", |v| v.as_str()).to_owned()),
                });
                fb.emit(e);
            }
        }
    };
    let (mode, permit) = scanner.mode(headers);
    match mode {
        Mode::Hold(len) => {
            let (frames, size, sha) = scanner
                .hold(body, len)
                .await
                .map_err(|e| ProxyError::Upstream(format!("download failed: {e}")))?;
            let mut d = decide(&filter.reputation, &scan.settings, sha).await;
            d.size = size;
            record(&d);
            if d.action == crate::policy::Action::Block {
                return Err(ProxyError::Filtered(Box::new(
                    super::filter::Refusal::for_file(scan.canonical, scan.url, &d, scan.format),
                )));
            }
            Ok(ProxyBody::boxed(HeldBody {
                frames: frames.into_iter(),
                _permit: permit,
            }))
        }
        Mode::Stream => {
            scanner
                .stats
                .scanned
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let rep = filter.reputation.clone();
            let settings = scan.settings.clone();
            Ok(ProxyBody::boxed(ScanBody::new(
                body,
                scanner.stream_hasher(),
                move |sha| Box::pin(async move { decide(&rep, &settings, sha).await }),
                record,
            )))
        }
    }
}

/// A held-back download released after its verdict, keeping its share of
/// `files.hold_back_total_bytes` until it has been sent.
struct HeldBody {
    frames: std::vec::IntoIter<bytes::Bytes>,
    _permit: Option<super::filescan::Held>,
}

impl http_body::Body for HeldBody {
    type Data = bytes::Bytes;
    type Error = super::body::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.frames.next().map(|b| Ok(http_body::Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.frames.len() == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.frames.as_slice().iter().map(|b| b.len() as u64).sum())
    }
}

/// Writes the access log line of a finished tunnel or WebSocket relay.
#[allow(clippy::too_many_arguments)]
pub(crate) fn log_relay(
    state: &ProxyState,
    ctx: &RequestCtx,
    method: &str,
    url: &str,
    kind: RecordKind,
    status: u16,
    upstream: Option<std::net::SocketAddr>,
    stats: super::tunnel::RelayStats,
) {
    // An intercepted tunnel's requests count their own bodies.
    if kind != RecordKind::Intercepted {
        let t = &state.traffic;
        t.bytes_in
            .fetch_add(stats.up, std::sync::atomic::Ordering::Relaxed);
        t.bytes_out
            .fetch_add(stats.down, std::sync::atomic::Ordering::Relaxed);
    }
    let error = match stats.end {
        RelayEnd::Closed => None,
        RelayEnd::Idle => Some("connection_read_timeout"),
        RelayEnd::Error => Some("connection_terminated"),
    };
    state.access_log.record(&AccessRecord {
        start: ctx.start,
        duration: ctx.started.elapsed(),
        id: ctx.id,
        client: ctx.client,
        user: ctx.user.as_deref(),
        method,
        url,
        status,
        bytes_out: stats.down,
        bytes_in: Some(stats.up),
        kind,
        upstream,
        error,
        content_type: None,
        decision: ctx.decision.as_deref(),
    });
}
