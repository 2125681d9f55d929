//! Header rules for every hop: hop-by-hop stripping (RFC 9110 §7.6.1), `Via` (§7.6.3) and
//! loop detection, WebSocket upgrade detection.
//!
//! Runs on every forwarded request and response. Costs a scan of the header map; it
//! allocates only when a `Connection` header nominates non-standard header names.

use http::Version;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// `Proxy-Connection`: not standard, but sent by many clients to proxies.
pub static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
/// `Keep-Alive` (RFC 2068).
pub static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
/// `Proxy-Status` (RFC 9209).
pub static PROXY_STATUS: HeaderName = HeaderName::from_static("proxy-status");

/// Headers that never cross a hop, besides those `Connection` nominates.
fn fixed_hop_by_hop() -> [&'static HeaderName; 9] {
    [
        &header::CONNECTION,
        &PROXY_CONNECTION,
        &KEEP_ALIVE,
        &header::PROXY_AUTHORIZATION,
        &header::PROXY_AUTHENTICATE,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
    ]
}

/// Is this a WebSocket upgrade request (`Connection: upgrade` + `Upgrade: websocket`)?
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    has_token(headers, &header::CONNECTION, "upgrade")
        && has_token(headers, &header::UPGRADE, "websocket")
}

/// Does any value of `name` hold `token` in its comma-separated list (case-insensitive)?
pub fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// Removes hop-by-hop headers: `Connection` and every header it names, `Proxy-Connection`,
/// `Keep-Alive`, `Proxy-Authorization`, `Proxy-Authenticate`, `TE`, `Trailer`,
/// `Transfer-Encoding` (hyper re-frames the body) and `Upgrade`. With `websocket` set, the
/// upgrade survives as exactly `Connection: upgrade` + `Upgrade: websocket`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, websocket: bool) {
    if headers.contains_key(header::CONNECTION) {
        // Collect first: the nominated names borrow from the map we are about to change.
        let nominated: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|s| s.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in nominated {
            headers.remove(&name);
        }
    }
    for name in fixed_hop_by_hop() {
        headers.remove(name);
    }
    if websocket {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
}

/// The `Via` value this proxy appends: `1.1 <name>` (protocol of the message received).
pub fn via_value(version: Version, name: &str) -> Option<HeaderValue> {
    let proto = match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    };
    HeaderValue::from_str(&format!("{proto} {name}")).ok()
}

/// Appends our `Via` entry after any existing ones.
pub fn append_via(headers: &mut HeaderMap, via: &HeaderValue) {
    headers.append(header::VIA, via.clone());
}

/// Does the message already carry our `Via` name (a forwarding loop)?
pub fn has_our_via(headers: &HeaderMap, name: &str) -> bool {
    headers.get_all(header::VIA).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',').any(|entry| {
                // entry = received-protocol SP received-by [ SP comment ]
                let mut parts = entry.split_whitespace();
                let _proto = parts.next();
                parts.next().is_some_and(|by| by.eq_ignore_ascii_case(name))
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    #[test]
    fn strips_connection_and_what_it_names() {
        let mut h = map(&[
            ("connection", "X-Secret, keep-alive"),
            ("connection", "x-other"),
            ("x-secret", "1"),
            ("x-other", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("te", "trailers"),
            ("trailer", "x-t"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("x-kept", "yes"),
            ("host", "example.com"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["x-kept", "host"]);
    }

    #[test]
    fn websocket_upgrade_survives_as_canonical_headers() {
        let mut h = map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
            ("sec-websocket-key", "abc"),
        ]);
        assert!(is_websocket_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["sec-websocket-key"], "abc");
    }

    #[test]
    fn detects_our_via_among_others() {
        let h = map(&[
            ("via", "1.0 fred, 1.1 webrep-a (webrep)"),
            ("via", "1.1 squid"),
        ]);
        assert!(has_our_via(&h, "webrep-a"));
        assert!(has_our_via(&h, "WEBREP-A"));
        assert!(!has_our_via(&h, "webrep"));
        assert!(!has_our_via(&map(&[]), "webrep-a"));
    }

    #[test]
    fn via_names_the_received_protocol() {
        assert_eq!(via_value(Version::HTTP_10, "p").unwrap(), "1.0 p");
        assert_eq!(via_value(Version::HTTP_11, "p").unwrap(), "1.1 p");
    }
}
