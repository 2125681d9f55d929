//! The router for the proxy's own pages: which requests the proxy answers itself instead of
//! forwarding them, and the answer.
//!
//! [`own_page`] maps a request to an [`OwnPage`] or to `None` (forward it). It is the one place
//! that decides this; [`super::service`] asks it for origin-form requests before proxy
//! authentication (a browser fetches the PAC file and the CA before it has credentials), and
//! [`super::forward`] asks it for absolute-form requests once their target has been checked.
//! Picking costs a few comparisons on the head; answering is [`super::local`] (static pages),
//! a TRACE echo, a continue token check ([`super::filter`]) or a report form
//! ([`crate::feedback`]). A malformed `Max-Forwards` or an origin-form request for another
//! host is a 400.

use http::{HeaderValue, Method, Request, header};
use hyper::body::Incoming;

use super::ProxyState;
use super::acl::ip_literal;
use super::body::ProxyBody;
use super::ctx::RequestCtx;
use super::error::ProxyError;
use super::headers::{MaxForwards, max_forwards, trace_echo};
use super::local;
use super::service::Handled;
use crate::accesslog::RecordKind;

/// One of the pages the proxy answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnPage {
    /// The proxy's static pages ([`super::local`]): an origin-form request for one of our
    /// listen ports, or an absolute-form one naming one of our listen addresses.
    Local,
    /// OPTIONS or TRACE with `Max-Forwards: 0`: this proxy is the final recipient.
    AnswerHere,
    /// A warn page's continue link ([`super::filter::CONTINUE_PATH`], with filtering on).
    Continue,
    /// A block page's "report a mistake" link ([`crate::feedback::REPORT_PATH`], with
    /// feedback on).
    Report,
}

/// The own page `req` asks for, or `None` when it is to be forwarded.
///
/// # Errors
/// [`ProxyError::BadRequest`] for an origin-form request for another host, or a malformed
/// `Max-Forwards`.
pub fn own_page<B>(state: &ProxyState, req: &Request<B>) -> Result<Option<OwnPage>, ProxyError> {
    let uri = req.uri();
    let Some(authority) = uri.authority() else {
        return match addressed_to_us(state, req) {
            true => Ok(Some(OwnPage::Local)),
            false => Err(ProxyError::BadRequest(
                "origin-form request for another host: configure this address as a proxy",
            )),
        };
    };
    let default_port = if uri.scheme_str() == Some("https") {
        443
    } else {
        80
    };
    if let Some(ip) = ip_literal(authority.host())
        && state
            .dialer
            .policy()
            .is_own_listener(ip, authority.port_u16().unwrap_or(default_port))
    {
        return Ok(Some(OwnPage::Local));
    }
    if matches!(*req.method(), Method::OPTIONS | Method::TRACE)
        && matches!(
            max_forwards(req.headers()).map_err(ProxyError::BadRequest)?,
            MaxForwards::AnswerHere
        )
    {
        return Ok(Some(OwnPage::AnswerHere));
    }
    let Some(filter) = &state.filter else {
        return Ok(None);
    };
    if uri.path() == super::filter::CONTINUE_PATH {
        return Ok(Some(OwnPage::Continue));
    }
    if uri.path() == crate::feedback::REPORT_PATH && filter.feedback.is_some() {
        return Ok(Some(OwnPage::Report));
    }
    Ok(None)
}

/// Whether an origin-form request is for the proxy itself: no `Host`, or a `Host` naming one
/// of our listen ports.
fn addressed_to_us<B>(state: &ProxyState, req: &Request<B>) -> bool {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    match host {
        None => true,
        Some(h) => {
            let port = h
                .rsplit_once(':')
                .filter(|(_, p)| !p.contains(']'))
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .unwrap_or(80);
            state.local_addrs.iter().any(|a| a.port() == port)
        }
    }
}

/// Answers `req` with `page`.
pub async fn serve(
    state: &ProxyState,
    ctx: &RequestCtx,
    page: OwnPage,
    req: Request<Incoming>,
) -> Handled {
    let response = match page {
        OwnPage::Local => local::serve_request(state, &req),
        OwnPage::AnswerHere => answer_here(&req),
        OwnPage::Continue => continue_page(state, ctx, &req),
        OwnPage::Report => match state.filter.as_ref().and_then(|f| f.feedback.as_ref()) {
            Some(feedback) => super::report::serve(feedback, req, ctx.client.ip(), ctx.id).await,
            None => local::text(http::StatusCode::NOT_FOUND, "not found\n"),
        },
    };
    Handled {
        response,
        kind: RecordKind::Local,
        upstream: None,
        log_now: true,
    }
}

/// A continue link followed: the token decides ([`super::filter::Filter::continue_request`]).
fn continue_page(
    state: &ProxyState,
    ctx: &RequestCtx,
    req: &Request<Incoming>,
) -> http::Response<ProxyBody> {
    let Some(filter) = &state.filter else {
        return local::text(http::StatusCode::NOT_FOUND, "not found\n");
    };
    let host = crate::canon::canonicalize(&req.uri().to_string())
        .map(|u| u.host().to_owned())
        .unwrap_or_default();
    filter.continue_request(req.uri().query(), ctx.client.ip(), &host, ctx.id)
}

/// OPTIONS or TRACE with `Max-Forwards: 0`: this proxy is the final recipient (RFC 9110
/// §7.6.2). TRACE gets its request back as `message/http` (credentials left out); OPTIONS
/// gets the methods this proxy forwards.
fn answer_here(req: &Request<Incoming>) -> http::Response<ProxyBody> {
    if req.method() == Method::TRACE {
        let echo = trace_echo(
            req.method().as_str(),
            &req.uri().to_string(),
            req.version(),
            req.headers(),
        );
        let mut r = http::Response::new(ProxyBody::full(echo));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("message/http"),
        );
        r
    } else {
        let mut r = http::Response::new(ProxyBody::empty());
        r.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static(
                "OPTIONS, GET, HEAD, POST, PUT, DELETE, PATCH, TRACE, CONNECT",
            ),
        );
        r
    }
}
