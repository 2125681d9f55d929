//! The proxy's own pages, served to origin-form requests addressed to the proxy (and to
//! absolute-form requests naming one of its listen addresses): `/` (an index) and `/healthz`
//! (a liveness check for load balancers and monitoring). No authentication is needed for
//! them. Later issues add the CA download and metrics here.

use http::{HeaderValue, Method, Response, StatusCode, header};

use super::body::ProxyBody;

/// Answers a request for one of the proxy's own pages.
pub fn serve(method: &Method, path: &str) -> Response<ProxyBody> {
    if method != Method::GET && method != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let head = method == Method::HEAD;
    let mut resp = match path {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/" => {
            let mut r = Response::new(ProxyBody::full(INDEX));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            r
        }
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

const INDEX: &str = "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>webrep proxy</title></head>\n<body><h1>webrep</h1>\n<p>This is a webrep forward proxy. Configure your browser to use this address as its HTTP and HTTPS proxy.</p>\n<ul><li><a href=\"/healthz\">/healthz</a>: health check</li></ul>\n</body></html>\n";
