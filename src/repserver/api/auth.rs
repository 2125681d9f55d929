//! Bearer tokens and roles: client tokens may look up and follow changes, admin tokens may
//! also write. 401 without a token, 403 for an unknown one or a client token where admin is
//! needed; a refused request's body is drained first so that the client sees the answer, not
//! a broken pipe.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;

use super::Shared;
use super::reply::{ApiError, read_body};

/// What a token may do.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Client,
    Admin,
}

/// The body of a request `role` may send.
pub(super) async fn authorized_body(
    shared: &Shared,
    req: Request<Incoming>,
    role: Role,
) -> Result<Bytes, ApiError> {
    let req = authorize_or_drain(shared, req, role).await?;
    read_body(shared, req).await
}

/// The token of an `Authorization: Bearer ...` value.
fn bearer_value(value: &http::HeaderValue) -> Option<&str> {
    value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

/// The request's bearer token, if it has one.
pub(super) fn bearer_token(req: &Request<Incoming>) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(bearer_value)
}

/// Checks the bearer token: 401 without one, 403 for an unknown one or a client token where
/// admin is needed.
pub(super) fn authorize(
    shared: &Shared,
    req: &Request<Incoming>,
    need: Role,
) -> Result<(), ApiError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing bearer token",
        ));
    };
    let token = bearer_value(value).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Authorization is not a bearer token",
        )
    })?;
    let known = |list: &[String]| {
        list.iter()
            .fold(false, |acc, t| acc | crate::secrets::token_eq(token, t))
    };
    let tokens = shared.tokens.load();
    let role = if known(&tokens.admin) {
        Role::Admin
    } else if known(&tokens.client) {
        Role::Client
    } else {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "unknown token"));
    };
    if need == Role::Admin && role != Role::Admin {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "this token may not write",
        ));
    }
    Ok(())
}

/// [`authorize`], and on refusal reads (and drops) what the client is still sending, up to
/// [`ApiConfig::max_body`] bytes within a few seconds, before the error goes out: a client
/// that is writing its body when we close would otherwise see a broken pipe instead of the
/// 401/403.
pub(super) async fn authorize_or_drain(
    shared: &Shared,
    req: Request<Incoming>,
    need: Role,
) -> Result<Request<Incoming>, ApiError> {
    match authorize(shared, &req, need) {
        Ok(()) => Ok(req),
        Err(e) => {
            let limit = shared.config.max_body;
            let drain = async {
                let mut body = req.into_body();
                let mut seen = 0usize;
                while seen <= limit {
                    match body.frame().await {
                        Some(Ok(f)) => seen += f.data_ref().map_or(0, |d| d.len()),
                        _ => break,
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
            Err(e)
        }
    }
}
