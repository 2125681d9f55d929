//! A client of the reputation API: JSON requests with a bearer token over pooled HTTP/1.1
//! keep-alive connections, `http://` or `https://` (rustls, web PKI roots plus an optional
//! admin CA file).
//!
//! # Where it sits
//! Below both sides: the proxy's reputation sources ([`crate::reputation`]), a server asking
//! its upstream tier ([`crate::repserver::upstream`]) and the `webrep lookup`, `import` and
//! `feedback` commands use it. It does no caching and no retries: callers decide both.
//!
//! # What it costs
//! One pooled connection per concurrent request (idle ones kept 90 s); answers are read
//! whole, up to [`MAX_ANSWER_BYTES`] (or a caller's own bound). Request bodies may stream ([`RepClient::post_body`]), so an
//! import upload is never held in memory.
//!
//! # How it fails
//! Every failure is a [`ClientError`]: the connection (refused, reset, TLS), a timeout (the
//! caller's deadline covers connect, request and the whole answer), an answer that is not
//! JSON, or a non-2xx status with the server's `error` message.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// The largest answer read, in bytes.
pub const MAX_ANSWER_BYTES: usize = 64 << 20;

/// A request body: whole JSON, or a stream (an import upload).
pub type ClientBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// Why a request to the reputation API failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The client could not be built (bad base URL, unreadable CA file).
    #[error("{0}")]
    Setup(String),
    /// Connecting, sending or receiving failed.
    #[error("{0}")]
    Transport(String),
    /// The deadline passed.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The server answered with an error status.
    #[error("{status}: {message}")]
    Status {
        /// The status.
        status: StatusCode,
        /// The server's `error` text, or the start of the body.
        message: String,
    },
    /// The answer was not JSON.
    #[error("answer is not JSON: {0}")]
    Json(String),
}

impl ClientError {
    /// Whether the server refused the request itself as bad input (a 4xx other than 401,
    /// 403, 404, 408 and 429): sending it again unchanged gets the same answer. Every other
    /// failure (transport, timeout, 5xx, a missing or refused token, a path the server does
    /// not have, throttling, an answer that is not JSON) may pass.
    pub fn is_refusal(&self) -> bool {
        matches!(self, ClientError::Status { status, .. }
            if status.is_client_error() && !matches!(status.as_u16(), 401 | 403 | 404 | 408 | 429))
    }
}

/// A reputation API client for one server.
#[derive(Clone, Debug)]
pub struct RepClient {
    base: String,
    auth: http::HeaderValue,
    http: Client<HttpsConnector<HttpConnector>, ClientBody>,
}

impl RepClient {
    /// A client for the server at `base` (`http://host:port` or `https://host:port`),
    /// authenticating with `token`; `ca_file` adds PEM CA certificates to the web PKI roots.
    ///
    /// # Errors
    /// [`ClientError::Setup`] for a bad URL or token, an unreadable or empty CA file.
    pub fn new(base: &str, token: &str, ca_file: Option<&Path>) -> Result<RepClient, ClientError> {
        let base = base.trim_end_matches('/');
        let uri: http::Uri = base
            .parse()
            .map_err(|e| ClientError::Setup(format!("bad server URL {base:?}: {e}")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(ClientError::Setup(format!(
                "bad server URL {base:?}: expected http://host:port or https://host:port"
            )));
        }
        let auth = http::HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            ClientError::Setup("the token has characters a header cannot carry".into())
        })?;
        let tls = crate::tls::client_config(ca_file)
            .map_err(|e| ClientError::Setup(format!("CA file {e}")))?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Ok(RepClient {
            base: base.to_owned(),
            auth,
            http,
        })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET base + path_and_query`, within `timeout`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn get(&self, path_and_query: &str, timeout: Duration) -> Result<Value, ClientError> {
        self.send(Method::GET, path_and_query, None, empty(), timeout)
            .await
    }

    /// `POST` `body` as JSON (a typed request of [`crate::api`], or a `Value`), within
    /// `timeout`.
    ///
    /// # Errors
    /// [`ClientError`]; [`ClientError::Json`] when `body` cannot be written as JSON.
    pub async fn post_json<B: serde::Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<Value, ClientError> {
        let bytes =
            Bytes::from(serde_json::to_vec(body).map_err(|e| ClientError::Json(e.to_string()))?);
        let body = Full::new(bytes)
            .map_err(|never| match never {})
            .boxed_unsync();
        self.send(Method::POST, path, Some("application/json"), body, timeout)
            .await
    }

    /// `POST` a streamed body of the given content type, within `timeout`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn post_body(
        &self,
        path: &str,
        content_type: &'static str,
        body: ClientBody,
        timeout: Duration,
    ) -> Result<Value, ClientError> {
        self.send(Method::POST, path, Some(content_type), body, timeout)
            .await
    }

    /// `GET base + path_and_query` within `timeout`: the answer's body, unparsed (a caller
    /// that reads it as a typed answer, or counts its bytes).
    ///
    /// # Errors
    /// [`ClientError`]: a status other than 2xx carries the answer's `error` message.
    pub async fn get_bytes(
        &self,
        path_and_query: &str,
        timeout: Duration,
    ) -> Result<Bytes, ClientError> {
        self.get_bytes_within(path_and_query, timeout, MAX_ANSWER_BYTES)
            .await
    }

    /// [`get_bytes`](Self::get_bytes) with another bound than [`MAX_ANSWER_BYTES`] on the
    /// answer (a longer one is a [`ClientError::Transport`]).
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn get_bytes_within(
        &self,
        path_and_query: &str,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<Bytes, ClientError> {
        self.exchange(
            Method::GET,
            path_and_query,
            None,
            empty(),
            timeout,
            max_bytes,
        )
        .await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&'static str>,
        body: ClientBody,
        timeout: Duration,
    ) -> Result<Value, ClientError> {
        let bytes = self
            .exchange(method, path, content_type, body, timeout, MAX_ANSWER_BYTES)
            .await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Json(e.to_string()))
    }

    /// One request: the body of a 2xx answer (at most `max_bytes`), else the answer's error.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&'static str>,
        body: ClientBody,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<Bytes, ClientError> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(header::AUTHORIZATION, self.auth.clone())
            .header(header::ACCEPT, "application/json");
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let req = req
            .body(body)
            .map_err(|e| ClientError::Setup(format!("bad request: {e}")))?;
        let exchange = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| ClientError::Transport(chain(&e)))?;
            let status = resp.status();
            let bytes = Limited::new(resp.into_body(), max_bytes)
                .collect()
                .await
                .map_err(|e| ClientError::Transport(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok::<_, ClientError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout(timeout))??;
        if !status.is_success() {
            let message = match serde_json::from_slice::<Value>(&bytes) {
                Ok(v) => v
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("no message")
                    .to_owned(),
                Err(_) => String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
            };
            return Err(ClientError::Status { status, message });
        }
        Ok(bytes)
    }
}

fn empty() -> ClientBody {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An error with its sources, `a: b: c` (hyper's top-level messages alone say little).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

/// A follower's wait after a failed poll (a proxy following its server's change stream, a
/// server following its upstream tier): `first` after the first failure, doubling
/// with each further one up to `max`, every wait drawn at random from its upper half (so that
/// followers that lost the same server do not come back in step). A poll that succeeds starts
/// the schedule again. With the defaults (50 ms, 1 s) a change written on a server that is
/// back reaches the cache within about a second, and a server that stays down gets one poll a
/// second at most from each proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowRetry {
    /// The wait after the first failure.
    pub first: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl FollowRetry {
    /// The upper bound of the wait after `failures` failures in a row (at least 1):
    /// `first * 2^(failures - 1)`, at most `max`.
    pub fn ceiling(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.first.saturating_mul(1 << doublings).min(self.max)
    }

    /// The wait after `failures` failures in a row: at random within the upper half of
    /// [`ceiling`](Self::ceiling).
    pub fn wait(&self, failures: u32) -> Duration {
        use rand::Rng as _;
        let ceiling = self.ceiling(failures);
        let half = ceiling / 2;
        half + rand::rng().random_range(Duration::ZERO..=ceiling - half)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_4xx_about_the_request_itself_is_a_refusal() {
        let status = |code: u16| ClientError::Status {
            status: StatusCode::from_u16(code).unwrap(),
            message: String::new(),
        };
        for code in [400, 413, 422] {
            assert!(status(code).is_refusal(), "{code}");
        }
        for code in [401, 403, 404, 408, 429, 500, 503] {
            assert!(!status(code).is_refusal(), "{code}");
        }
        assert!(!ClientError::Timeout(Duration::from_secs(1)).is_refusal());
        assert!(!ClientError::Json("x".into()).is_refusal());
        assert!(!ClientError::Transport("reset".into()).is_refusal());
    }
}
