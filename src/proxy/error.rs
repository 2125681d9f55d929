//! Why the proxy answered a request itself instead of relaying the upstream's answer, and the
//! one place where such a failure becomes a response: status, RFC 9209 `Proxy-Status`, short
//! plain-text body, and the log level by which side caused it.

use std::time::Duration;

use http::StatusCode;

use super::dial::DialError;

/// Which side caused a failure; sets the log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Upstream,
    Proxy,
}

/// A request the proxy could not (or would not) relay.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("{0}")]
    BadRequest(&'static str),
    /// The client's request body could not be read to its end (a malformed chunk, a
    /// connection that closed early) while it was being sent upstream.
    #[error("the request body could not be read from the client: {0}")]
    ClientBody(String),
    /// A `Transfer-Encoding` other than `chunked` alone (RFC 9112 §6.1: 501).
    #[error("transfer coding {0:?} is not supported (only chunked)")]
    UnsupportedTransferCoding(String),
    /// Inside an intercepted tunnel, a request for another origin than the tunnel's
    /// (RFC 9110 §15.5.20: the client retries on a connection for that origin).
    #[error("request for {0} inside a tunnel to another host; open a connection for it")]
    Misdirected(String),
    #[error("unsupported scheme {0:?} in an absolute-form request (use CONNECT for https)")]
    UnsupportedScheme(String),
    #[error("CONNECT to port {0} is not allowed")]
    PortNotAllowed(u16),
    #[error("client address is not allowed to use this proxy")]
    ClientNotAllowed,
    #[error("proxy authentication required")]
    AuthRequired,
    #[error("too many wrong credentials from this address; try again later")]
    AuthThrottled(Duration),
    #[error("too many password checks waiting; try again shortly")]
    AuthBusy,
    #[error("forwarding loop: the request already passed through {0}")]
    Loop(String),
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error("upstream sent no response headers within {0:?}")]
    UpstreamTimeout(Duration),
    #[error("upstream request failed: {0}")]
    Upstream(String),
    #[error("upstream TLS certificate rejected: {0}")]
    UpstreamCertificate(String),
    #[error("refused by policy ({}): {}", .0.reason.as_str(), .0.explanation())]
    Filtered(Box<super::filter::Refusal>),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::UnsupportedScheme(_) | Self::ClientBody(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::UnsupportedTransferCoding(_) => StatusCode::NOT_IMPLEMENTED,
            Self::Misdirected(_) => StatusCode::MISDIRECTED_REQUEST,
            Self::PortNotAllowed(_) | Self::ClientNotAllowed | Self::Filtered(_) => {
                StatusCode::FORBIDDEN
            }
            Self::AuthRequired => StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            Self::AuthThrottled(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::AuthBusy => StatusCode::SERVICE_UNAVAILABLE,
            Self::Loop(_) => StatusCode::LOOP_DETECTED,
            Self::Dial(DialError::Refused { .. }) => StatusCode::FORBIDDEN,
            Self::Dial(DialError::Timeout { .. }) | Self::UpstreamTimeout(_) => {
                StatusCode::GATEWAY_TIMEOUT
            }
            Self::Dial(DialError::NoHost) => StatusCode::BAD_REQUEST,
            Self::Dial(_) | Self::Upstream(_) | Self::UpstreamCertificate(_) => {
                StatusCode::BAD_GATEWAY
            }
        }
    }

    /// The RFC 9209 error type.
    pub fn proxy_status(&self) -> &'static str {
        match self {
            Self::BadRequest(_)
            | Self::UnsupportedScheme(_)
            | Self::ClientBody(_)
            | Self::UnsupportedTransferCoding(_)
            | Self::Misdirected(_) => "http_request_error",
            Self::PortNotAllowed(_)
            | Self::ClientNotAllowed
            | Self::AuthRequired
            | Self::AuthThrottled(_)
            | Self::Filtered(_) => "http_request_denied",
            Self::AuthBusy => "proxy_internal_response",
            Self::Loop(_) => "proxy_loop_detected",
            Self::Dial(d) => d.proxy_status(),
            Self::UpstreamTimeout(_) => "http_response_timeout",
            Self::Upstream(_) => "http_protocol_error",
            Self::UpstreamCertificate(_) => "tls_certificate_error",
        }
    }

    /// How long the client should wait before trying again (`Retry-After`), for refusals
    /// that end by themselves.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::AuthThrottled(d) => Some(*d),
            Self::AuthBusy => Some(Duration::from_secs(1)),
            _ => None,
        }
    }

    pub fn side(&self) -> Side {
        match self {
            Self::BadRequest(_)
            | Self::ClientBody(_)
            | Self::UnsupportedTransferCoding(_)
            | Self::Misdirected(_)
            | Self::UnsupportedScheme(_)
            | Self::PortNotAllowed(_)
            | Self::ClientNotAllowed
            | Self::AuthRequired
            | Self::AuthThrottled(_)
            | Self::Filtered(_)
            | Self::Loop(_) => Side::Client,
            // Logged per request at debug: a flood would otherwise flood the log too (the
            // admin sees it in webrep_auth_checks_total{result="busy"}).
            Self::AuthBusy => Side::Client,
            Self::Dial(DialError::Refused { .. }) | Self::Dial(DialError::NoHost) => Side::Client,
            Self::Dial(_)
            | Self::UpstreamTimeout(_)
            | Self::Upstream(_)
            | Self::UpstreamCertificate(_) => Side::Upstream,
        }
    }
}

/// Renders an RFC 9209 `Proxy-Status` value: `name; error=type; details="..."`.
pub fn proxy_status_value(proxy: &str, error: &str, details: &str) -> String {
    let mut s = String::with_capacity(proxy.len() + error.len() + details.len() + 24);
    s.push_str(proxy);
    s.push_str("; error=");
    s.push_str(error);
    s.push_str("; details=\"");
    for c in details.chars() {
        match c {
            '"' | '\\' => {
                s.push('\\');
                s.push(c);
            }
            ' '..='~' => s.push(c),
            _ => s.push('?'),
        }
    }
    s.push('"');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_status_is_a_valid_structured_field() {
        assert_eq!(
            proxy_status_value("webrep-a", "dns_error", "cannot resolve \"x\"\n"),
            "webrep-a; error=dns_error; details=\"cannot resolve \\\"x\\\"?\""
        );
    }
}
