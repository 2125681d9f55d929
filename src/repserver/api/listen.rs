//! Connections: the accept loop (connection limits, 429 for a client over its share), the
//! optional TLS handshake, and HTTP/1.1 on each connection until it closes, the server shuts
//! down (graceful) or the limits close it to make room. A client that sends no complete
//! request head (or TLS handshake) within [`HEADER_READ_TIMEOUT`] is disconnected.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Shared;
use super::routes::handle;
use crate::conns::{Admitted, ConnActivity};

/// A client that does not finish sending a request head (or a TLS handshake) within this is
/// disconnected.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts clients until shutdown: each admitted one is served on `tracker`; one over its
/// address's limit is refused with 429.
pub(super) async fn accept_loop(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) {
    let serve = |conn: Admitted| serve_client(conn, tls.clone(), shared.clone());
    crate::conns::accept_loop(listener, &shared.conns, tracker, shutdown, serve).await;
}

async fn serve_client(conn: Admitted, tls: Option<tokio_rustls::TlsAcceptor>, shared: Arc<Shared>) {
    let Admitted {
        stream,
        activity,
        permit: _permit,
        ..
    } = conn;
    match tls {
        None => serve_connection(stream, shared, activity).await,
        Some(acceptor) => {
            let handshake = tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream));
            let handshake = tokio::select! {
                h = handshake => h,
                () = activity.close_asked() => return,
            };
            match handshake {
                Ok(Ok(tls)) => serve_connection(tls, shared, activity).await,
                Ok(Err(e)) => tracing::debug!(error = %e, "api TLS handshake failed"),
                Err(_) => tracing::debug!("api TLS handshake timed out"),
            }
        }
    }
}

/// HTTP/1.1 on one connection until it closes, the server shuts down (gracefully: the
/// request in progress is answered) or the limits ask it to make room.
async fn serve_connection<I>(io: I, shared: Arc<Shared>, activity: Arc<ConnActivity>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let shutdown = shared.shutdown.clone();
    let act = activity.clone();
    let svc = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        let in_flight = act.start_request();
        async move {
            let response = handle(&shared, req).await;
            // The request is in progress until its body is done (an event stream's too).
            Ok::<_, Infallible>(response.map(|body| {
                body.map_frame(move |frame| {
                    let _ = &in_flight;
                    frame
                })
                .boxed_unsync()
            }))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r { tracing::debug!(error = %e, "api connection"); }
            return;
        }
        _ = shutdown.cancelled() => conn.as_mut().graceful_shutdown(),
        // Closed to make room for a new client (the limit is reached and this one is idle):
        // at once when no request is in progress (hyper's graceful shutdown would wait for a
        // half-sent head), else after the request in progress.
        () = activity.close_asked() => {
            if activity.idle_since().is_some() {
                return;
            }
            conn.as_mut().graceful_shutdown();
        }
    }
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "api connection");
    }
}
