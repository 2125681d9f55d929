//! The per-request entry point: the hyper `Service` for a client connection.
//!
//! Dispatch order: client network check (403 and close) → the head's `Host` and
//! `Transfer-Encoding` (400, 501) → CONNECT, origin-form (the proxy's own pages) or
//! absolute-form forwarding; proxy authentication before anything leaves the proxy. Inside
//! an intercepted tunnel every request is addressed to the tunnel's target with the
//! authority the client wrote, or answered 421 when it names another origin. Every failure
//! becomes a response in one place ([`error_response`]) with its status, RFC 9209
//! `Proxy-Status` and a short plain-text reason, and every response carries the
//! [`ResponseGuard`] that writes the access log line when the body is done.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::{HeaderValue, Method, Request, Response, header};
use hyper::body::Incoming;

use super::ProxyState;
use super::auth::AuthOutcome;
use super::body::{PendingLog, ProxyBody, ResponseGuard};
use super::ctx::{ConnSlot, RequestCtx};
use super::error::{ProxyError, Side, proxy_status_value};
use super::headers::PROXY_STATUS;
use super::{connect, forward, own};
use crate::accesslog::RecordKind;
use crate::conns::ConnActivity;

/// The CONNECT tunnel an intercepted connection belongs to.
#[derive(Debug)]
pub struct TunnelCtx {
    /// The CONNECT target: every inner request goes there.
    pub authority: http::uri::Authority,
    /// `https` for decrypted TLS, `http` for plain HTTP inside the tunnel.
    pub scheme: &'static str,
    /// The user who authenticated the CONNECT.
    pub user: Option<Arc<str>>,
}

/// What a handler produced.
pub struct Handled {
    pub response: Response<ProxyBody>,
    pub kind: RecordKind,
    pub upstream: Option<SocketAddr>,
    /// False when the exchange is logged later (tunnels and WebSockets log when they close).
    pub log_now: bool,
}

/// The hyper service of one client connection.
#[derive(Clone)]
pub struct ProxyService {
    pub(crate) state: Arc<ProxyState>,
    pub(crate) client: SocketAddr,
    pub(crate) worker: usize,
    pub(crate) slot: ConnSlot,
    pub(crate) allowed: bool,
    pub(crate) activity: Arc<ConnActivity>,
    /// Set for the connection inside an intercepted tunnel.
    pub(crate) tunnel: Option<Arc<TunnelCtx>>,
}

impl hyper::service::Service<Request<Incoming>> for ProxyService {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let guard = ResponseGuard {
            in_flight: Some(self.activity.start_request()),
            log: None,
            traffic: self.state.traffic.clone(),
            bytes_out: 0,
        };
        let state = self.state.clone();
        let ctx = RequestCtx {
            id: state.ids.next(),
            start: SystemTime::now(),
            started: Instant::now(),
            client: self.client,
            worker: self.worker,
            slot: self.slot.clone(),
            user: self.tunnel.as_ref().and_then(|t| t.user.clone()),
            inner: self.tunnel.is_some(),
            decision: None,
        };
        let allowed = self.allowed;
        let req = match &self.tunnel {
            None => req,
            Some(t) => inner_request(t, req),
        };
        Box::pin(async move { Ok(dispatch(state, ctx, allowed, guard, req).await) })
    }
}

/// Marks a request inside a tunnel that names another origin than the tunnel's; its URI
/// is that origin's URL, and [`route`] answers it with 421 (after the filter has judged it).
#[derive(Debug, Clone)]
struct Misdirected(http::uri::Authority);

/// A request from inside an intercepted tunnel, addressed to the tunnel's target as
/// `scheme://authority/path?query`, where the authority is the one the client wrote (its
/// HTTP/2 `:authority` or absolute-form target, else its `Host`), so that what reaches the
/// origin is what the client signed and meant, or the tunnel's when it wrote none.
///
/// Every name the request carries must be the tunnel's origin: the same host (letter case
/// and a trailing dot aside) and the same port, an absent port meaning the scheme's default
/// (`https://good.example` is `good.example:443`, not `good.example:8443`). A request naming
/// another is [`Misdirected`]. A request whose target cannot be rebuilt keeps its URI and is
/// refused by the dispatch; an unparsable `Host` is refused there too.
fn inner_request(t: &TunnelCtx, mut req: Request<Incoming>) -> Request<Incoming> {
    if req.method() == Method::CONNECT {
        return req;
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok());
    let target = req.uri().authority().cloned();
    let foreign = target
        .iter()
        .chain(&host)
        .find(|a| !same_origin(a, &t.authority, t.scheme))
        .cloned();
    let authority = match &foreign {
        Some(other) => {
            tracing::info!(named = %other, target = %t.authority,
                "request inside a tunnel names another origin: 421");
            req.extensions_mut().insert(Misdirected(other.clone()));
            other.clone()
        }
        None => target.or(host).unwrap_or_else(|| t.authority.clone()),
    };
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    if let Ok(uri) = format!("{}://{authority}{pq}", t.scheme).parse::<http::Uri>() {
        *req.uri_mut() = uri;
    }
    req
}

/// Do two authorities name the same origin under `scheme` (see [`inner_request`])?
fn same_origin(a: &http::uri::Authority, b: &http::uri::Authority, scheme: &str) -> bool {
    let default = if scheme == "https" { 443 } else { 80 };
    let host = |x: &http::uri::Authority| {
        let h = x.host();
        let h = h.strip_suffix('.').unwrap_or(h);
        (super::acl::ip_literal(h), h.to_ascii_lowercase())
    };
    let (ha, hb) = (host(a), host(b));
    let same_host = match (ha.0, hb.0) {
        (Some(x), Some(y)) => x == y,
        _ => ha.1 == hb.1,
    };
    same_host && a.port_u16().unwrap_or(default) == b.port_u16().unwrap_or(default)
}

async fn dispatch(
    state: Arc<ProxyState>,
    mut ctx: RequestCtx,
    allowed: bool,
    mut guard: ResponseGuard,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let method = req.method().clone();
    // Only built when someone will read it.
    let url = state.access_log.is_enabled().then(|| log_url(&state, &req));
    let result = route(&state, &mut ctx, allowed, req).await;
    let (mut response, kind, upstream, error, log_now) = match result {
        Ok(h) => (h.response, h.kind, h.upstream, None, h.log_now),
        Err(e) => {
            if let ProxyError::Filtered(r) = &e {
                ctx.decision = Some(Arc::new(r.decided()));
            }
            let r = error_response(&state, &ctx, &e);
            (r, RecordKind::Http, None, Some(e.proxy_status()), true)
        }
    };
    state.traffic.request(&method, response.status());
    if !allowed {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if log_now && let Some(url) = url {
        let head_like = method == Method::HEAD
            || response.status().is_informational()
            || response.status() == http::StatusCode::NO_CONTENT
            || response.status() == http::StatusCode::NOT_MODIFIED;
        guard.log = Some(PendingLog {
            log: state.access_log.clone(),
            start: ctx.start,
            started: ctx.started,
            id: ctx.id,
            client: ctx.client,
            user: ctx.user.clone(),
            method,
            url,
            status: response.status().as_u16(),
            bytes_out: 0,
            kind,
            upstream,
            error,
            content_type: response.headers().get(header::CONTENT_TYPE).cloned(),
            complete: head_like,
            decision: ctx.decision.clone(),
        });
    }
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, body.with_guard(guard))
}

async fn route(
    state: &Arc<ProxyState>,
    ctx: &mut RequestCtx,
    allowed: bool,
    req: Request<Incoming>,
) -> Result<Handled, ProxyError> {
    if !allowed {
        return Err(ProxyError::ClientNotAllowed);
    }
    check_head(&req)?;
    let is_connect = req.method() == Method::CONNECT;
    if ctx.inner {
        // Inside a tunnel: authenticated with the CONNECT; no CONNECT within CONNECT.
        if is_connect {
            return Err(ProxyError::BadRequest("CONNECT inside a tunnel"));
        }
        if let Some(Misdirected(other)) = req.extensions().get::<Misdirected>() {
            return Err(misdirected(state, ctx, &req, other).await);
        }
        return Box::pin(forward::handle(state, ctx, req)).await;
    }
    // Origin-form: the proxy's own pages, served before authentication (see [`own`]).
    if !is_connect
        && req.uri().scheme().is_none()
        && req.uri().authority().is_none()
        && let Some(page) = own::own_page(state, &req)?
    {
        return Ok(Box::pin(own::serve(state, ctx, page, req)).await);
    }
    if let Some(auth) = &state.auth {
        let auth = auth.load_full();
        let header = req.headers().get(header::PROXY_AUTHORIZATION);
        match Box::pin(auth.check(header, ctx.client.ip())).await {
            AuthOutcome::User(u) => ctx.user = Some(u),
            AuthOutcome::Missing | AuthOutcome::Invalid => return Err(ProxyError::AuthRequired),
            AuthOutcome::Throttled { retry_after } => {
                return Err(ProxyError::AuthThrottled(retry_after));
            }
            AuthOutcome::Busy => return Err(ProxyError::AuthBusy),
        }
    }
    // Each way is boxed where it starts: the futures of the two differ in size by kilobytes
    // and are not laid over each other in this one's state, so unboxed they made every
    // request's future 14 KiB, copied several times on its way to the heap.
    if is_connect {
        Box::pin(connect::handle(state, ctx, req)).await
    } else {
        Box::pin(forward::handle(state, ctx, req)).await
    }
}

/// What every request head must satisfy before anything else looks at it: one valid `Host`
/// at most (RFC 9112 §3.2: 400), and a body framed by `chunked` alone or not at all (§6.1:
/// 501 for a coding the proxy cannot pass on).
fn check_head(req: &Request<Incoming>) -> Result<(), ProxyError> {
    super::headers::check_host(req.headers()).map_err(ProxyError::BadRequest)?;
    super::headers::check_transfer_codings(req.headers())
        .map_err(ProxyError::UnsupportedTransferCoding)
}

/// The answer to a request inside a tunnel that names `other`, another origin: the filter
/// judges that URL like any other (a refused one gets its page), and an allowed one gets
/// 421, on which browsers retry over a connection (a CONNECT) for that origin.
async fn misdirected(
    state: &ProxyState,
    ctx: &mut RequestCtx,
    req: &Request<Incoming>,
    other: &http::uri::Authority,
) -> ProxyError {
    if let Some(filter) = &state.filter {
        let url = req.uri().to_string();
        let decision = match Box::pin(filter.decide(&url, ctx.client.ip(), ctx.user.as_ref())).await
        {
            Ok(d) => d,
            Err(e) => return e,
        };
        let format = super::filter::PageFormat::from_headers(req.headers());
        match filter.record(decision, ctx.id, format) {
            Ok(allowed) => ctx.decision = Some(allowed.decided),
            Err(r) => return ProxyError::Filtered(r),
        }
    }
    ProxyError::Misdirected(other.to_string())
}

/// The URL as it goes into the access log.
fn log_url(state: &ProxyState, req: &Request<Incoming>) -> String {
    if req.method() == Method::CONNECT {
        req.uri()
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default()
    } else if req.uri().scheme().is_some() {
        req.uri().to_string()
    } else {
        origin_form_url(state, req)
    }
}

/// An origin-form request (one addressed to the proxy itself: its pages, the PAC file, the
/// CA) as an absolute URL, so that every log line names a full URL: its `Host` when that is
/// a valid authority, else the proxy's first listen address.
fn origin_form_url<B>(state: &ProxyState, req: &Request<B>) -> String {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok())
        .filter(|a| !a.as_str().contains('@'));
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    match (host, state.local_addrs.first()) {
        (Some(h), _) => format!("http://{h}{pq}"),
        (None, Some(a)) => format!("http://{a}{pq}"),
        (None, None) => pq.to_owned(),
    }
}

/// The one place where a [`ProxyError`] becomes a response.
pub fn error_response(state: &ProxyState, ctx: &RequestCtx, e: &ProxyError) -> Response<ProxyBody> {
    match e.side() {
        Side::Client => {
            tracing::debug!(id = %ctx.id, client.addr = %ctx.client, error = %e, "request refused")
        }
        Side::Upstream => {
            tracing::info!(id = %ctx.id, client.addr = %ctx.client, error = %e, "upstream failed")
        }
        Side::Proxy => {
            tracing::warn!(id = %ctx.id, client.addr = %ctx.client, error = %e, "proxy error")
        }
    }
    if let ProxyError::Filtered(r) = e {
        tracing::info!(id = %ctx.id, client.addr = %ctx.client, action = r.action.as_str(),
            reason = r.reason.as_str(), url = %r.url, "request refused by policy");
        let mut resp = super::filter::page(r, ctx.id);
        if let Ok(v) = HeaderValue::from_str(&proxy_status_value(
            &state.config().via_name,
            e.proxy_status(),
            &format!("{} by policy: {}", r.action.as_str(), r.reason.as_str()),
        )) {
            resp.headers_mut().insert(&PROXY_STATUS, v);
        }
        return resp;
    }
    let mut details = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        details.push_str(": ");
        details.push_str(&s.to_string());
        src = s.source();
    }
    let mut resp = Response::new(ProxyBody::full(format!(
        "webrep: {details}\nrequest id: {}\n",
        ctx.id
    )));
    *resp.status_mut() = e.status();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&proxy_status_value(
        &state.config().via_name,
        e.proxy_status(),
        &details,
    )) {
        h.insert(&PROXY_STATUS, v);
    }
    if matches!(e, ProxyError::AuthRequired)
        && let Some(auth) = &state.auth
    {
        h.insert(header::PROXY_AUTHENTICATE, auth.load().challenge().clone());
    }
    if let Some(after) = e.retry_after() {
        // Whole seconds, rounded up: a client told 0 would come straight back.
        h.insert(
            header::RETRY_AFTER,
            HeaderValue::from(after.as_secs().max(1)),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_origin_is_its_host_and_port_with_the_scheme_default_filled_in() {
        let a = |s: &str| s.parse::<http::uri::Authority>().unwrap();
        let tunnel = a("good.example:443");
        for same in [
            "good.example",
            "good.example:443",
            "GOOD.Example",
            "good.example.:443",
        ] {
            assert!(same_origin(&a(same), &tunnel, "https"), "{same}");
        }
        for other in ["bad.example", "good.example:8443", "good.example.bad:443"] {
            assert!(!same_origin(&a(other), &tunnel, "https"), "{other}");
        }
        // The default depends on the scheme: plain HTTP inside a tunnel is port 80.
        assert!(!same_origin(&a("good.example"), &tunnel, "http"));
        assert!(same_origin(
            &a("good.example"),
            &a("good.example:80"),
            "http"
        ));
        // A non-default tunnel port must be written.
        assert!(!same_origin(
            &a("good.example"),
            &a("good.example:8443"),
            "https"
        ));
        // IP literals compare as addresses.
        assert!(same_origin(&a("[::1]:443"), &a("[0:0::1]"), "https"));
        assert!(!same_origin(&a("127.0.0.1"), &a("[::1]"), "https"));
    }

    /// The size of the future `f` returns, without calling it.
    fn future_size<A, F>(_: impl Fn(A) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every request's future is moved into the heap by value; the big parts of it (the
    /// reputation lookup, file scanning, the CONNECT and forwarding paths) are boxed where
    /// they start so that this stays a copy of a few KiB, not of 14 KiB as it was.
    #[test]
    fn the_per_request_future_stays_small() {
        type Args = (
            &'static Arc<ProxyState>,
            &'static mut RequestCtx,
            Request<Incoming>,
        );
        let forward = future_size(|(s, c, r): Args| forward::handle(s, c, r));
        let connect = future_size(|(s, c, r): Args| connect::handle(s, c, r));
        let dispatch = future_size(
            |(s, c, a, g, r): (
                Arc<ProxyState>,
                RequestCtx,
                bool,
                ResponseGuard,
                Request<Incoming>,
            )| { dispatch(s, c, a, g, r) },
        );
        for (name, size) in [
            ("forward", forward),
            ("connect", connect),
            ("dispatch", dispatch),
        ] {
            assert!(size <= 4096, "the {name} future is {size} bytes");
        }
    }
}
