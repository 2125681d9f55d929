//! Requests in, answers out: the error every handler returns ([`ApiError`], answered as
//! `{"error": "..."}` with its status and, for a 405, `Allow`), JSON and uncached answers,
//! bounded body reading ([`super::ApiConfig::max_body`], 413 beyond), JSON bodies and query
//! parameters (a malformed one is a 400 naming it), and the batch size check.

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};

use super::Shared;
use crate::api::admin::ErrorAnswer;
use crate::repserver::store::StoreError;

/// An answer body. A streamed one that fails part-way ends with an error, which makes hyper
/// cut the connection: the client sees an incomplete answer, never a short one.
pub(super) type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

/// An error answer: status and message.
#[derive(Debug)]
pub(super) struct ApiError {
    pub(super) status: StatusCode,
    pub(super) message: String,
    /// The `Allow` header of a 405.
    pub(super) allow: Option<&'static str>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            allow: None,
        }
    }

    pub(super) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Category(_) | StoreError::Key(_) => ApiError::bad_request(e.to_string()),
            _ => {
                tracing::error!(error = %e, "reputation store failed");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "store failure")
            }
        }
    }
}

/// The answer to a refused request: `{"error": "..."}` with the error's status, and its
/// `Allow` header for a 405.
pub(super) fn error_response(e: &ApiError) -> Response<Body> {
    let answer = ErrorAnswer {
        error: e.message.clone(),
    };
    let mut r = json_response(e.status, &answer);
    if let Some(allow) = e.allow {
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    r
}

/// A 200 answer of `v` as JSON.
pub(super) fn ok<T: Serialize>(v: &T) -> Response<Body> {
    json_response(StatusCode::OK, v)
}

/// An answer of `v` as JSON, uncached. The answers are plain data, which always encodes; if
/// one ever did not, the client gets a 500 rather than a partial body.
fn json_response<T: Serialize>(status: StatusCode, v: &T) -> Response<Body> {
    let (status, json) = match serde_json::to_vec(v) {
        Ok(json) => (status, json),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode an answer");
            let error = br#"{"error":"cannot encode the answer"}"#;
            (StatusCode::INTERNAL_SERVER_ERROR, error.to_vec())
        }
    };
    let body = Full::new(Bytes::from(json))
        .map_err(|never: Infallible| -> std::io::Error { match never {} });
    uncached(status, "application/json", body.boxed_unsync())
}

/// A response of `content_type` that no cache keeps (`Cache-Control: no-store`).
pub(super) fn uncached(
    status: StatusCode,
    content_type: &'static str,
    body: Body,
) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The whole body, at most `max_body` bytes: 413 beyond, 400 when reading it fails.
pub(super) async fn read_body(shared: &Shared, req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let limit = shared.config.max_body;
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body larger than {limit} bytes"),
        )),
        Err(e) => Err(ApiError::bad_request(format!("reading body: {e}"))),
    }
}

/// A JSON body as `T`; a 400 naming the problem when it is not one.
pub(super) fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("bad JSON: {e}")))
}

/// The decoded value of the first `name=` parameter of a query string.
pub(super) fn query_param(query: Option<&str>, name: &str) -> Result<Option<String>, ApiError> {
    crate::urlenc::query_param(query, name)
        .map_err(|_| ApiError::bad_request(format!("bad encoding in `{name}`")))
}

/// A numeric query parameter with a default and a maximum.
pub(super) fn number_param(
    query: Option<&str>,
    name: &str,
    default: u64,
    max: u64,
) -> Result<u64, ApiError> {
    match query_param(query, name)? {
        None => Ok(default),
        Some(v) => v
            .parse::<u64>()
            .map(|n| n.min(max))
            .map_err(|_| ApiError::bad_request(format!("`{name}` must be a number"))),
    }
}

/// A 400 for a batch of `n` items over `max_batch`.
pub(super) fn check_batch(shared: &Shared, n: usize) -> Result<(), ApiError> {
    if n > shared.config.max_batch {
        return Err(ApiError::bad_request(format!(
            "{n} items in one batch; at most {}",
            shared.config.max_batch
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decoding itself is [`crate::urlenc`]'s (tested there); a value that does not decode is
    /// a 400 naming the parameter.
    #[test]
    fn query_parameters() {
        let q = Some("url=http%3A%2F%2Fa.test%2F");
        assert_eq!(
            query_param(q, "url").unwrap().as_deref(),
            Some("http://a.test/")
        );
        let e = query_param(Some("url=%zz"), "url").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.message, "bad encoding in `url`");
    }
}
