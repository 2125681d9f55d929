//! Connecting to upstreams: DNS resolution, the destination check, the connect deadline.
//!
//! Used by both the pooled HTTP client (through [`Connector`], a hyper-util `Connect`
//! service) and CONNECT tunnels. Every resolved address is checked against the
//! [`DestinationPolicy`] before a single packet is sent to it; addresses are tried in the
//! order the resolver returns them, all within one deadline
//! (`proxy.upstream_connect_timeout_ms`). Name resolution uses the system resolver on
//! tokio's blocking pool.
//!
//! Failures are typed ([`DialError`]) so the proxy can answer 403 for a refused destination,
//! 502 for DNS or connection errors and 504 for the deadline, each with its RFC 9209
//! `Proxy-Status` error type.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Uri;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::acl::{DestinationPolicy, Refusal, ip_literal};

/// Why no upstream connection could be made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DialError {
    #[error("destination {addr} refused: {}", .reason.as_str())]
    Refused { addr: SocketAddr, reason: Refusal },
    #[error("cannot resolve {host}")]
    Dns {
        host: String,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("{host} resolves to no address")]
    NoAddress { host: String },
    #[error("no connection to {host} within {timeout:?}")]
    Timeout { host: String, timeout: Duration },
    #[error("connection to {addr} failed")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("request URI has no host")]
    NoHost,
}

impl DialError {
    /// The RFC 9209 error type for `Proxy-Status`.
    pub fn proxy_status(&self) -> &'static str {
        match self {
            DialError::Refused { .. } => "destination_ip_prohibited",
            DialError::Dns { .. } | DialError::NoAddress { .. } => "dns_error",
            DialError::Timeout { .. } => "connection_timeout",
            DialError::Connect { source, .. } => match source.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection_refused",
                _ => "destination_unavailable",
            },
            DialError::NoHost => "http_request_error",
        }
    }
}

/// Resolves, checks and connects.
#[derive(Debug, Clone)]
pub struct Dialer {
    policy: Arc<DestinationPolicy>,
    timeout: Duration,
}

impl Dialer {
    pub fn new(policy: Arc<DestinationPolicy>, timeout: Duration) -> Self {
        Self { policy, timeout }
    }

    pub fn policy(&self) -> &DestinationPolicy {
        &self.policy
    }

    /// Connects to `host:port` (host may be a bracketed IPv6 literal) within the deadline.
    pub async fn dial(&self, host: &str, port: u16) -> Result<TcpStream, DialError> {
        match tokio::time::timeout(self.timeout, self.dial_inner(host, port)).await {
            Ok(r) => r,
            Err(_) => Err(DialError::Timeout {
                host: host.to_owned(),
                timeout: self.timeout,
            }),
        }
    }

    async fn dial_inner(&self, host: &str, port: u16) -> Result<TcpStream, DialError> {
        if host.is_empty() {
            return Err(DialError::NoHost);
        }
        let addrs: Vec<SocketAddr> = match ip_literal(host) {
            Some(ip) => vec![SocketAddr::new(ip, port)],
            None => tokio::net::lookup_host((host, port))
                .await
                .map_err(|source| DialError::Dns {
                    host: host.to_owned(),
                    source: Arc::new(source),
                })?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(DialError::NoAddress {
                host: host.to_owned(),
            });
        }
        // Refuse the whole host if any of its addresses is refused: a name that mixes a
        // public and an internal address is a rebinding attempt, not a fallback.
        for &addr in &addrs {
            self.policy
                .check(addr)
                .map_err(|reason| DialError::Refused { addr, reason })?;
        }
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Err(source) => {
                    last = Some(DialError::Connect {
                        addr,
                        source: Arc::new(source),
                    })
                }
            }
        }
        Err(last.unwrap_or(DialError::NoAddress {
            host: host.to_owned(),
        }))
    }
}

/// The hyper-util `Connect` service for the pooled upstream client.
#[derive(Debug, Clone)]
pub struct Connector {
    dialer: Dialer,
}

impl Connector {
    pub fn new(dialer: Dialer) -> Self {
        Self { dialer }
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = DialError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, DialError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let dialer = self.dialer.clone();
        Box::pin(async move {
            let host = uri.host().ok_or(DialError::NoHost)?;
            let default = if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            };
            let port = uri.port_u16().unwrap_or(default);
            dialer.dial(host, port).await.map(TokioIo::new)
        })
    }
}
