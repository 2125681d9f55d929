//! The proxy's own pages, served to origin-form requests addressed to the proxy (and to
//! absolute-form requests naming one of its listen addresses): `/` (an index) and `/healthz`
//! (a liveness check for load balancers and monitoring), `/ca` (the interception CA's
//! fingerprint and how to trust it), `/ca.pem` (the CA certificate), `/stats` (decision
//! counters as JSON) and `/proxy.pac` = `/wpad.dat` (proxy auto-config for browsers, see
//! [`super::pac`]). No authentication is needed for them (only allowed clients reach the
//! proxy at all). Prometheus metrics come with the admin listener.

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
        "/stats" => stats(state),
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

/// `/stats`: filtering decisions by action and cache state, reputation changes applied,
/// the policy generation, feedback events by outcome (losses by cause) and the spool,
/// access-log lines lost, request heads refused by class, client connections (open, refused
/// for their address, idle ones closed to make room), and the hosts with failed client
/// handshakes after interception, as JSON.
fn stats(state: &ProxyState) -> Response<ProxyBody> {
    use std::sync::atomic::Ordering::Relaxed;
    let mut v = match &state.filter {
        Some(f) => serde_json::json!({
            "filter": f.stats.to_json(),
            "reputation_changes_applied": f.reputation.changes_applied.load(Relaxed),
            "reputation_cache_drops": f.reputation.cache_drops.load(Relaxed),
            "policy_generation": f.policy.generation(),
        }),
        None => serde_json::json!({ "filter": null }),
    };
    v["feedback"] = match state.filter.as_ref().and_then(|f| f.feedback.as_ref()) {
        Some(fb) => {
            let mut o: serde_json::Map<String, serde_json::Value> = fb
                .stats
                .counters()
                .into_iter()
                .map(|(k, n)| (k.to_owned(), n.into()))
                .collect();
            o.insert("queue_events".into(), fb.queue_len().into());
            o.insert("spool_events".into(), fb.spool_events().into());
            o.insert("spool_bytes".into(), fb.spool_bytes().into());
            o.into()
        }
        None => serde_json::Value::Null,
    };
    v["access_log_dropped"] = state.access_log.dropped().into();
    // Request heads refused before the service saw them, by class.
    v["rejected_requests"] = state
        .rejected
        .counts()
        .iter()
        .map(|(k, n)| ((*k).to_owned(), serde_json::Value::from(*n)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    v["log_dropped"] = crate::telemetry::dropped_lines().into();
    v["connections"] = state.conns.to_json();
    v["access_log_write_failed"] = state.access_log.write_failed().into();
    let resolver = state.dialer.resolver();
    v["dns"] = resolver.stats.to_json();
    v["dns"]["cached_names"] = resolver.cached_names().into();
    v["files"] = state
        .scanner
        .as_ref()
        .map_or(serde_json::Value::Null, |s| s.stats.to_json());
    // Hosts whose clients failed the TLS handshake after interception (pinned apps, clients
    // without the CA): candidates for the policy's tunnel_hosts. The 100 with most failures.
    v["failed_handshakes"] = match &state.interceptor {
        Some(i) => i
            .failed_handshakes()
            .into_iter()
            .take(100)
            .map(|(host, n)| serde_json::json!({ "host": host, "count": n }))
            .collect(),
        None => serde_json::Value::Null,
    };
    // The interception CA: which one, and until when clients accept what it signs.
    v["intercept_ca"] = match &state.interceptor {
        Some(i) => {
            let ca = i.minter.ca();
            serde_json::json!({
                "fingerprint": ca.fingerprint(),
                "not_after": ca.not_after.unix_timestamp(),
                "problem": ca.expiry_problem().map(|p| p.to_string()),
            })
        }
        None => serde_json::Value::Null,
    };
    // Early upstream handshakes (intercept.early_upstream_ms): started, taken by a request,
    // kept now.
    v["early_upstream"] = match state.interceptor.as_ref().and_then(|i| i.early.as_ref()) {
        Some(e) => serde_json::json!({
            "started": e.started.load(Relaxed),
            "used": e.used.load(Relaxed),
            "kept": e.kept(),
        }),
        None => serde_json::Value::Null,
    };
    let mut r = Response::new(ProxyBody::full(format!("{v}\n")));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// `/proxy.pac` and `/wpad.dat`: the proxy auto-config file from the `pac:` section.
fn pac_file(state: &ProxyState, host: Option<&str>) -> Response<ProxyBody> {
    let pac = &state.config.pac;
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

const INDEX: &str = "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>webrep proxy</title></head>\n<body><h1>webrep</h1>\n<p>This is a webrep forward proxy. Configure your browser to use this address as its HTTP and HTTPS proxy.</p>\n<ul><li><a href=\"/healthz\">/healthz</a>: health check</li><li><a href=\"/ca\">/ca</a>: the certificate authority to trust for HTTPS inspection</li><li><a href=\"/stats\">/stats</a>: decision counters (JSON)</li><li><a href=\"/proxy.pac\">/proxy.pac</a>: proxy auto-config for browsers (also <a href=\"/wpad.dat\">/wpad.dat</a> for WPAD)</li></ul>\n</body></html>\n";
