//! Continue tokens: the signed "continue anyway" link of a warn page, and the request that
//! follows it.
//!
//! A token names the client, the host, the URL warned about and an expiry, signed with the
//! filter's per-process secret (HMAC-SHA-256), so a restart invalidates open warn pages. A
//! valid token, followed by the client it was made for, lets that client past warnings on
//! the host until the token's time ([`super::Filter::continues`]) and reports a `continued`
//! event. Served for [`CONTINUE_PATH`] on any host, before the filter decides; costs one
//! HMAC. Anything that does not verify is a 403 with the reason, and nothing is remembered.

use std::net::IpAddr;

use http::{HeaderValue, Response, StatusCode, header};

use super::Filter;
use crate::accesslog::RequestId;
use crate::proxy::body::ProxyBody;

/// The path, on any host, that a warn page's "continue" link points at.
pub const CONTINUE_PATH: &str = "/.webrep/continue";

impl Filter {
    fn sign(&self, payload: &str) -> String {
        use base64::Engine as _;
        use hmac::Mac as _;
        let mac = self.mac(payload).finalize().into_bytes();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac)
    }

    /// Whether `sig` is [`Self::sign`]'s for `payload`, checked by hmac in constant time.
    fn verify(&self, payload: &str, sig: &str) -> bool {
        use base64::Engine as _;
        use hmac::Mac as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sig)
            .is_ok_and(|sig| self.mac(payload).verify_slice(&sig).is_ok())
    }

    fn mac(&self, payload: &str) -> hmac::Hmac<sha2::Sha256> {
        use hmac::{KeyInit as _, Mac as _};
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(payload.as_bytes());
        mac
    }

    /// A continue token for `client` on `host`, valid for `valid`, returning to `url`.
    pub(super) fn continue_token(
        &self,
        client: IpAddr,
        host: &str,
        url: &str,
        valid: std::time::Duration,
    ) -> String {
        use base64::Engine as _;
        let until =
            crate::clock::since_epoch(std::time::SystemTime::now()).as_secs() + valid.as_secs();
        let payload = format!("{until}|{client}|{host}|{url}");
        let sig = self.sign(&payload);
        format!(
            "{}.{sig}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload)
        )
    }

    /// Handles a request for [`CONTINUE_PATH`] on `host`: a valid token (signed by us, for
    /// this client and host, not expired) lets the client past warn pages on the host until
    /// the token's time and answers 303 to the URL it was warned about; anything else is 403.
    /// The `continued` event carries `id`, this request's id.
    pub fn continue_request(
        &self,
        query: Option<&str>,
        client: IpAddr,
        host: &str,
        id: RequestId,
    ) -> Response<ProxyBody> {
        use base64::Engine as _;
        let refused = |why: &'static str| {
            let mut r = Response::new(ProxyBody::full(format!("webrep: {why}\n")));
            *r.status_mut() = StatusCode::FORBIDDEN;
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            r
        };
        let Some(token) = query
            .unwrap_or("")
            .split('&')
            .find_map(|kv| kv.strip_prefix("token="))
        else {
            return refused("no continue token");
        };
        let Some((payload64, sig)) = token.split_once('.') else {
            return refused("malformed continue token");
        };
        let Some(payload) = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload64)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
        else {
            return refused("malformed continue token");
        };
        if !self.verify(&payload, sig) {
            return refused("invalid continue token");
        }
        let mut parts = payload.splitn(4, '|');
        let (Some(until), Some(who), Some(for_host), Some(url)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return refused("malformed continue token");
        };
        let now = crate::clock::since_epoch(std::time::SystemTime::now()).as_secs();
        let Ok(until) = until.parse::<u64>() else {
            return refused("malformed continue token");
        };
        if until <= now {
            return refused("this continue link has expired; reload the page");
        }
        if who != client.to_string() || !for_host.eq_ignore_ascii_case(host) {
            return refused("this continue link is for another client or site");
        }
        self.continues.insert(
            (client, for_host.to_owned()),
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(until),
        );
        tracing::info!(client.addr = %client, host = for_host, "continued after a warn page");
        self.report_continue(client, url, id);
        let mut r = Response::new(ProxyBody::empty());
        *r.status_mut() = StatusCode::SEE_OTHER;
        if let Ok(v) = HeaderValue::from_str(url) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }
}
