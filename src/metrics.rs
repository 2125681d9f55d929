//! What the proxy's and the reputation server's admin listeners share: building a
//! Prometheus registry from counters kept elsewhere, and the small HTTP/1.1 accept loop
//! that serves it.
//!
//! # Where it sits
//! Outside every request path. The proxy ([`crate::proxy::metrics`]) and the server
//! ([`crate::repserver::metrics`]) keep relaxed atomics where the work happens; a scrape
//! copies them into a fresh `prometheus-client` registry with these helpers and encodes it
//! in the OpenMetrics text format.
//!
//! # What it costs
//! Nothing per request; a scrape allocates a registry of a few dozen samples.
//!
//! # How it fails
//! [`serve`] logs a failed accept and goes on; a connection that breaks is dropped alone.

use std::convert::Infallible;
use std::future::Future;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Label sets: names are static, values come from closed sets.
pub type Labels = Vec<(&'static str, String)>;

/// The Content-Type of a scrape answer.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Registers a counter family with one label, one sample per `(value, count)`.
pub fn counter_family(
    registry: &mut Registry,
    name: &str,
    help: &str,
    label: &'static str,
    values: impl IntoIterator<Item = (String, u64)>,
) {
    let family = Family::<Labels, Counter>::default();
    for (v, n) in values {
        family.get_or_create(&vec![(label, v)]).inc_by(n);
    }
    registry.register(name, help, family);
}

/// Registers a counter with the value `n`.
pub fn counter(registry: &mut Registry, name: &str, help: &str, n: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(n);
    registry.register(name, help, c);
}

/// Registers a gauge with the value `n`.
pub fn gauge(registry: &mut Registry, name: &str, help: &str, n: i64) {
    let g = Gauge::<i64>::default();
    g.set(n);
    registry.register(name, help, g);
}

/// A response with a fixed Content-Type.
pub fn reply(status: StatusCode, ctype: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

/// The answer to `GET /metrics` from an encoded registry (or its encoding error).
pub fn scrape_answer(
    method: &http::Method,
    text: Result<String, std::fmt::Error>,
) -> Response<Full<Bytes>> {
    match (method == http::Method::GET, text) {
        (true, Ok(text)) => reply(StatusCode::OK, OPENMETRICS, text),
        (true, Err(_)) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            "metrics encoding failed\n".into(),
        ),
        (false, _) => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        ),
    }
}

/// A client that sends no complete request head within this is disconnected.
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves HTTP/1.1 on `listener` with `handler` until `shutdown` is cancelled.
pub async fn serve<F, Fut>(listener: TcpListener, shutdown: CancellationToken, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    loop {
        let tcp = tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    tracing::warn!(error = %e, "admin listener accept failed");
                    // Out of file descriptors and the like: do not spin.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => return,
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let fut = handler(req);
                async move { Ok::<_, Infallible>(fut.await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

/// The connection-limit families of one listener set ([`crate::conns::ConnLimits`]): a gauge
/// of open connections and the counters of refused and idle-closed ones, under `names`
/// (gauge, refused, closed idle); `limit_keys` names the two config keys in the help texts.
pub fn conn_limits(
    registry: &mut Registry,
    names: [&str; 3],
    what: &str,
    limit_keys: [&str; 2],
    conns: &crate::conns::ConnLimits,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let [open, refused, closed] = names;
    let [per_client, total] = limit_keys;
    gauge(
        registry,
        open,
        &format!("{what} connections open"),
        i64::try_from(conns.open()).unwrap_or(i64::MAX),
    );
    counter(
        registry,
        refused,
        &format!(
            "{what} connections refused (429) because their client address had {per_client} open"
        ),
        conns.stats.refused_per_client.load(Relaxed),
    );
    counter(
        registry,
        closed,
        &format!("Idle {what} connections closed to make room for a new client at {total}"),
        conns.stats.closed_idle.load(Relaxed),
    );
}
