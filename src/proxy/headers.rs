//! Header rules for every hop: hop-by-hop stripping (RFC 9110 §7.6.1), `Via` (§7.6.3) and
//! loop detection, `Max-Forwards` on OPTIONS and TRACE (§7.6.2), WebSocket upgrade
//! detection, the `Host` field's validity (RFC 9112 §3.2) and the transfer codings the
//! proxy can forward (§6.1).
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
/// `Transfer-Encoding` (hyper re-frames the body) and `Upgrade`. A message that came with a
/// `Transfer-Encoding` loses its `Content-Length` too: the coding overrode it, the body
/// was decoded by it, and the length no longer describes what is sent on (RFC 9112 §6.3).
/// With `websocket` set, the upgrade survives as exactly `Connection: upgrade` +
/// `Upgrade: websocket`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, websocket: bool) {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        headers.remove(header::CONTENT_LENGTH);
    }
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

/// Checks a message's `Transfer-Encoding`: the proxy forwards bodies framed by `chunked`
/// alone (or by nothing). hyper takes `chunked` off and the next hop gets the body
/// re-framed, so any other coding (`gzip, chunked`) would reach it still applied and no
/// longer declared.
///
/// # Errors
/// The codings as received, when there is anything but one `chunked`.
pub fn check_transfer_codings(headers: &HeaderMap) -> Result<(), String> {
    let mut codings = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|c| !c.is_empty());
    match (codings.next(), codings.next()) {
        (None, _) => Ok(()),
        (Some(c), None) if c.eq_ignore_ascii_case(b"chunked") => Ok(()),
        _ => Err(headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(", ")),
    }
}

/// Checks a request's `Host` field (RFC 9112 §3.2): at most one line, and its value
/// `uri-host [ ":" port ]` with a host (no user information, no empty host). A request
/// without one is let through: the proxy takes the authority from the target.
///
/// # Errors
/// What is wrong, for the 400.
pub fn check_host(headers: &HeaderMap) -> Result<(), &'static str> {
    let mut values = headers.get_all(header::HOST).iter();
    let Some(v) = values.next() else {
        return Ok(());
    };
    if values.next().is_some() {
        return Err("more than one Host header field");
    }
    let valid = http::uri::Authority::try_from(v.as_bytes()).is_ok_and(|a| {
        let (host, all) = (a.host(), a.as_str());
        // No user information: the host starts the value; after it only `:` and digits.
        !host.is_empty()
            && all.starts_with(host)
            && all[host.len()..]
                .strip_prefix(':')
                .map_or(all.len() == host.len(), |port| {
                    port.bytes().all(|b| b.is_ascii_digit())
                })
    });
    if valid {
        Ok(())
    } else {
        Err("invalid Host header field")
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

/// What `Max-Forwards` (RFC 9110 §7.6.2) asks of a proxy receiving OPTIONS or TRACE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxForwards {
    /// No `Max-Forwards`: forward as usual.
    Absent,
    /// Zero: this proxy is the final recipient and answers itself.
    AnswerHere,
    /// More than zero: forward with this (decremented) value.
    Forward(u64),
}

/// Reads `Max-Forwards` (`1*DIGIT`; values beyond `u64` count as `u64::MAX`).
///
/// # Errors
/// More than one value, or one that is not all digits.
pub fn max_forwards(headers: &HeaderMap) -> Result<MaxForwards, &'static str> {
    let mut values = headers.get_all(header::MAX_FORWARDS).iter();
    let Some(v) = values.next() else {
        return Ok(MaxForwards::Absent);
    };
    if values.next().is_some() {
        return Err("more than one Max-Forwards");
    }
    let digits = v.as_bytes().trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err("malformed Max-Forwards");
    }
    let n = digits.iter().fold(0u64, |n, d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    });
    Ok(match n {
        0 => MaxForwards::AnswerHere,
        n => MaxForwards::Forward(n - 1),
    })
}

/// The content of a TRACE answer (RFC 9110 §9.3.8): the request as received, request line
/// and header fields, without those likely to hold credentials.
pub fn trace_echo(method: &str, target: &str, version: Version, headers: &HeaderMap) -> String {
    let mut out = format!("{method} {target} {version:?}\r\n");
    for (name, value) in headers {
        if [
            &header::AUTHORIZATION,
            &header::PROXY_AUTHORIZATION,
            &header::COOKIE,
        ]
        .contains(&name)
        {
            continue;
        }
        out.push_str(name.as_str());
        out.push_str(": ");
        out.push_str(&String::from_utf8_lossy(value.as_bytes()));
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_forwards_is_counted_down_and_zero_means_answer_here() {
        assert_eq!(max_forwards(&map(&[])), Ok(MaxForwards::Absent));
        assert_eq!(
            max_forwards(&map(&[("max-forwards", "0")])),
            Ok(MaxForwards::AnswerHere)
        );
        assert_eq!(
            max_forwards(&map(&[("max-forwards", " 10 ")])),
            Ok(MaxForwards::Forward(9))
        );
        assert_eq!(
            max_forwards(&map(&[("max-forwards", "99999999999999999999999")])),
            Ok(MaxForwards::Forward(u64::MAX - 1))
        );
        for bad in ["", "-1", "1.5", "0x10", "ten"] {
            assert!(
                max_forwards(&map(&[("max-forwards", bad)])).is_err(),
                "{bad:?}"
            );
        }
        assert!(max_forwards(&map(&[("max-forwards", "1"), ("max-forwards", "2")])).is_err());
    }

    #[test]
    fn a_trace_echo_leaves_out_credentials() {
        let echo = trace_echo(
            "TRACE",
            "http://example.org/a",
            Version::HTTP_11,
            &map(&[
                ("host", "example.org"),
                ("cookie", "session=secret"),
                ("authorization", "Basic c2VjcmV0"),
                ("proxy-authorization", "Basic c2VjcmV0"),
                ("x-probe", "1"),
            ]),
        );
        assert!(
            echo.starts_with("TRACE http://example.org/a HTTP/1.1\r\n"),
            "{echo}"
        );
        assert!(echo.contains("x-probe: 1\r\n") && echo.contains("host: example.org\r\n"));
        assert!(
            !echo.contains("secret") && !echo.contains("c2VjcmV0"),
            "{echo}"
        );
        assert!(echo.ends_with("\r\n\r\n"));
    }

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
    fn host_must_be_one_valid_authority() {
        for ok in [
            "example.com",
            "example.com:8080",
            "[::1]:80",
            "192.0.2.1",
            "a:",
        ] {
            assert_eq!(check_host(&map(&[("host", ok)])), Ok(()), "{ok:?}");
        }
        assert_eq!(check_host(&map(&[])), Ok(()));
        for bad in [
            "a b",
            "@@@",
            "[::1",
            "",
            "user@example.com",
            ":80",
            "a:b",
            "a/b",
        ] {
            assert_eq!(
                check_host(&map(&[("host", bad)])),
                Err("invalid Host header field"),
                "{bad:?}"
            );
        }
        assert_eq!(
            check_host(&map(&[("host", "a.example"), ("host", "a.example")])),
            Err("more than one Host header field")
        );
    }

    #[test]
    fn only_chunked_alone_is_a_forwardable_transfer_coding() {
        assert_eq!(check_transfer_codings(&map(&[])), Ok(()));
        assert_eq!(
            check_transfer_codings(&map(&[("transfer-encoding", " Chunked ")])),
            Ok(())
        );
        for bad in [
            &[("transfer-encoding", "gzip, chunked")][..],
            &[
                ("transfer-encoding", "gzip"),
                ("transfer-encoding", "chunked"),
            ][..],
            &[("transfer-encoding", "chunked, chunked")][..],
            &[("transfer-encoding", "gzip")][..],
            &[("transfer-encoding", "identity")][..],
        ] {
            assert!(check_transfer_codings(&map(bad)).is_err(), "{bad:?}");
        }
        assert_eq!(
            check_transfer_codings(&map(&[("transfer-encoding", "gzip, chunked")])),
            Err("gzip, chunked".to_owned())
        );
    }

    #[test]
    fn a_transfer_coded_message_loses_its_content_length() {
        let mut h = map(&[("content-length", "100"), ("transfer-encoding", "chunked")]);
        strip_hop_by_hop(&mut h, false);
        assert!(h.is_empty(), "{h:?}");
        let mut h = map(&[("content-length", "100")]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h["content-length"], "100");
    }

    #[test]
    fn via_names_the_received_protocol() {
        assert_eq!(via_value(Version::HTTP_10, "p").unwrap(), "1.0 p");
        assert_eq!(via_value(Version::HTTP_11, "p").unwrap(), "1.1 p");
    }
}
