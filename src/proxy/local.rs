//! The proxy's own pages, served to origin-form requests addressed to the proxy (and to
//! absolute-form requests naming one of its listen addresses): `/` (an index) and `/healthz`
//! (a liveness check for load balancers and monitoring), `/ca` (the interception CA's
//! fingerprint and how to trust it), `/ca.pem` (the CA certificate) and `/proxy.pac` =
//! `/wpad.dat` (proxy auto-config for browsers, see [`super::pac`]).
//!
//! Every allowed client reaches these without credentials, even with proxy authentication
//! on (a browser fetches the PAC file and the CA before it has any), so they show nothing
//! about traffic: no counters, no host names, no users. Counters (`/stats`, `/metrics`) are
//! on the admin listener ([`super::metrics`]).

use http::{HeaderValue, Method, Response, StatusCode, header};

use super::ProxyState;
use super::body::ProxyBody;

/// Answers `req`, addressed to the proxy itself, with one of its own pages.
pub fn serve_request<B>(state: &ProxyState, req: &http::Request<B>) -> Response<ProxyBody> {
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers().get(header::HOST)?.to_str().ok());
    serve_for(state, req.method(), req.uri().path(), host)
}

/// Answers a request for one of the proxy's own pages.
pub fn serve(state: &ProxyState, method: &Method, path: &str) -> Response<ProxyBody> {
    serve_for(state, method, path, None)
}

/// [`serve`] for a request that reached the proxy as `host` (its `Host` header or
/// absolute-form authority): the PAC file may name it.
pub fn serve_for(
    state: &ProxyState,
    method: &Method,
    path: &str,
    host: Option<&str>,
) -> Response<ProxyBody> {
    if method != Method::GET && method != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let head = method == Method::HEAD;
    let mut resp = match path {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/stats" => text(
            StatusCode::NOT_FOUND,
            "not found: counters are on the admin listener (admin.listen)\n",
        ),
        "/ca" => html(ca_page(state)),
        "/ca.pem" => match &state.interceptor {
            Some(i) => {
                let mut r = Response::new(ProxyBody::full(i.minter.ca().cert_pem.clone()));
                let h = r.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/x-pem-file"),
                );
                h.insert(
                    header::CONTENT_DISPOSITION,
                    HeaderValue::from_static("attachment; filename=\"webrep-ca.pem\""),
                );
                r
            }
            None => text(StatusCode::NOT_FOUND, "HTTPS interception is off: no CA\n"),
        },
        "/proxy.pac" | "/wpad.dat" => pac_file(state, host),
        "/" => html(INDEX.to_owned()),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    };
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if head {
        let len = resp.headers().get(header::CONTENT_LENGTH).cloned();
        let (parts, _) = resp.into_parts();
        let mut r = Response::from_parts(parts, ProxyBody::empty());
        if let Some(l) = len {
            r.headers_mut().insert(header::CONTENT_LENGTH, l);
        }
        return r;
    }
    resp
}

/// `/proxy.pac` and `/wpad.dat`: the proxy auto-config file from the `pac:` section.
fn pac_file(state: &ProxyState, host: Option<&str>) -> Response<ProxyBody> {
    let cfg = state.config();
    let pac = &cfg.pac;
    let Some(proxy) = pac.proxy_for(&state.local_addrs, host) else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the proxy listens on every address and this request named none it can use: set pac.proxy\n",
        );
    };
    let mut r = Response::new(ProxyBody::full(pac.render(&proxy)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ns-proxy-autoconfig"),
    );
    r
}

fn html(body: String) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::full(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

fn ca_page(state: &ProxyState) -> String {
    let Some(i) = &state.interceptor else {
        return "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>webrep CA</title></head>\n<body><h1>webrep CA</h1>\n<p>HTTPS interception is off on this proxy: there is no certificate to install.</p></body></html>\n".to_owned();
    };
    let ca = i.minter.ca();
    let steps = crate::intercept::ca::trust_instructions("webrep-ca.pem");
    let items: String = steps
        .lines()
        .map(|l| format!("<li>{}</li>\n", escape_html(l)))
        .collect();
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>webrep CA</title></head>\n<body><h1>Trust this proxy's certificate authority</h1>\n<p>This proxy inspects HTTPS traffic for your organisation. To browse without certificate warnings, install its CA certificate: <a href=\"/ca.pem\">download webrep-ca.pem</a>.</p>\n<p>SHA-256 fingerprint: <code>{}</code></p>\n<ul>\n{items}</ul>\n</body></html>\n",
        escape_html(&ca.fingerprint())
    )
}

/// Escapes text for HTML element content and attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A short plain-text response.
pub fn text(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

const INDEX: &str = "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>webrep proxy</title></head>\n<body><h1>webrep</h1>\n<p>This is a webrep forward proxy. Configure your browser to use this address as its HTTP and HTTPS proxy.</p>\n<ul><li><a href=\"/healthz\">/healthz</a>: health check</li><li><a href=\"/ca\">/ca</a>: the certificate authority to trust for HTTPS inspection</li><li><a href=\"/proxy.pac\">/proxy.pac</a>: proxy auto-config for browsers (also <a href=\"/wpad.dat\">/wpad.dat</a> for WPAD)</li></ul>\n</body></html>\n";
