//! Who may use the proxy, where it may go, and what happens to bad or slow clients.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::harness::*;

#[tokio::test]
async fn a_client_outside_the_allowed_networks_gets_403_and_nothing_is_forwarded() {
    let origin = Origin::http().await;
    // Only a documentation network is allowed: our 127.0.0.1 client is outside it.
    let proxy =
        TestProxy::start_with(|c| c.proxy.allowed_clients = vec!["192.0.2.0/24".into()]).await;
    let r = proxy
        .client(None)
        .get(origin.url("/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["connection"], "close");
    assert!(r.text().await.unwrap().contains("not allowed"));
    assert_eq!(origin.stats.connections.load(Ordering::SeqCst), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn internal_destinations_are_refused_by_default() {
    let origin = Origin::http().await;
    // The default: no allow_internal switch.
    let proxy = TestProxy::start_with(|c| c.proxy.destinations.allow_internal = false).await;
    let client = proxy.client(None);
    for url in [
        origin.url("/"),
        format!("http://localhost:{}/", origin.addr.port()),
        "http://169.254.169.254/latest/meta-data/".to_string(),
    ] {
        let r = client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 403, "{url}");
        let ps = r.headers()["proxy-status"].to_str().unwrap().to_owned();
        assert!(
            ps.contains("error=destination_ip_prohibited"),
            "{url}: {ps}"
        );
    }
    let head = raw_exchange(
        proxy.addr,
        b"CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert_eq!(origin.stats.connections.load(Ordering::SeqCst), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn configured_destination_networks_are_refused() {
    let origin = Origin::http().await;
    let proxy = TestProxy::start_with(|c| {
        c.proxy.destinations.allow_internal = true;
        c.proxy.destinations.refuse = vec!["127.0.0.0/8".into()];
    })
    .await;
    let r = proxy
        .client(None)
        .get(origin.url("/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        r.headers()["proxy-status"]
            .to_str()
            .unwrap()
            .contains("destination_ip_prohibited")
    );
    assert_eq!(origin.stats.connections.load(Ordering::SeqCst), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn oversize_headers_get_431() {
    let origin = Origin::http().await;
    let proxy = TestProxy::start_with(|c| c.proxy.max_header_bytes = 4096).await;
    let big = "x".repeat(8000);
    let head = raw_exchange(
        proxy.addr,
        format!(
            "GET {} HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n",
            origin.url("/")
        )
        .as_bytes(),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 431"), "{head}");
    // A request just under the limit still works.
    let ok = "x".repeat(3000);
    let head = raw_exchange(
        proxy.addr,
        format!(
            "GET {} HTTP/1.1\r\nHost: a\r\nConnection: close\r\nX-Big: {ok}\r\n\r\n",
            origin.url("/")
        )
        .as_bytes(),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    proxy.stop().await;
}

#[tokio::test]
async fn garbage_and_malformed_requests_get_400() {
    let proxy = TestProxy::start_default().await;
    let head = raw_exchange(proxy.addr, b"\x16\x03\x01garbage garbage\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head:?}");
    let head = raw_exchange(proxy.addr, b"GET /x HTTP/1.1\r\nHost: example.com\r\n\r\n").await;
    assert!(
        head.starts_with("HTTP/1.1 400"),
        "origin-form for another host: {head}"
    );
    let head = raw_exchange(
        proxy.addr,
        b"GET ftp://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    let head = raw_exchange(
        proxy.addr,
        b"CONNECT example.com HTTP/1.1\r\nHost: example.com\r\n\r\n",
    )
    .await;
    assert!(
        head.starts_with("HTTP/1.1 400"),
        "CONNECT without a port: {head}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn origin_form_requests_to_the_proxy_get_its_own_pages() {
    let proxy = TestProxy::start_default().await;
    let r = plain_get(format!("{}/healthz", proxy.url())).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok\n");
    let r = plain_get(format!("{}/", proxy.url())).await.unwrap();
    assert!(r.text().await.unwrap().contains("webrep"));
    let r = plain_get(format!("{}/nope", proxy.url())).await.unwrap();
    assert_eq!(r.status(), 404);
    proxy.stop().await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_closed() {
    // Long idle timeout, short header timeout: the close proves the header timer fired.
    let proxy = TestProxy::start_with(|c| {
        c.proxy.header_read_timeout_ms = 300;
        c.proxy.client_idle_timeout_ms = 600_000;
    })
    .await;
    unfinished_head_is_closed_without_an_answer(&proxy).await;
    proxy.stop().await;
}

/// Sends half a request head and waits (bounded) for the proxy to close the connection,
/// which it must do without sending anything.
async fn unfinished_head_is_closed_without_an_answer(proxy: &TestProxy) {
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET http://example.com/ HTTP/1.1\r\nHost: exa")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf))
        .await
        .expect("the proxy closes the connection")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without a response");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let origin = Origin::http().await;
    let proxy = TestProxy::start_with(|c| {
        c.proxy.header_read_timeout_ms = 600_000;
        c.proxy.client_idle_timeout_ms = 300;
    })
    .await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    // One complete request, then silence.
    s.write_all(format!("GET {} HTTP/1.1\r\nHost: a\r\n\r\n", origin.url("/")).as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut body = [0u8; 5];
    s.read_exact(&mut body).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf))
        .await
        .expect("idle connection closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    proxy.stop().await;
}

#[tokio::test]
async fn proxy_auth_407_without_and_success_with_credentials() {
    let origin = Origin::http().await;
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    let hash = webrep::proxy::auth::hash_password("correct horse").unwrap();
    std::fs::write(&users, format!("# test users\nalice:{hash}\n")).unwrap();
    let proxy = TestProxy::start_with(|c| {
        c.auth.users_file = Some(users.clone());
        c.auth.realm = "test realm".into();
    })
    .await;
    let r = proxy
        .client(None)
        .get(origin.url("/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 407);
    assert_eq!(
        r.headers()["proxy-authenticate"],
        "Basic realm=\"test realm\", charset=\"UTF-8\""
    );
    // CONNECT needs credentials too.
    let head = raw_exchange(
        proxy.addr,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 407"), "{head}");
    // Wrong password.
    let bad = reqwest::Client::builder()
        .proxy(
            reqwest::Proxy::all(proxy.url())
                .unwrap()
                .basic_auth("alice", "wrong"),
        )
        .build()
        .unwrap();
    assert_eq!(bad.get(origin.url("/")).send().await.unwrap().status(), 407);
    assert_eq!(origin.stats.requests.load(Ordering::SeqCst), 0);
    // Right password.
    let good = reqwest::Client::builder()
        .proxy(
            reqwest::Proxy::all(proxy.url())
                .unwrap()
                .basic_auth("alice", "correct horse"),
        )
        .build()
        .unwrap();
    let r = good.get(origin.url("/headers")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let seen: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert!(
        seen["headers"].get("proxy-authorization").is_none(),
        "credentials leaked upstream"
    );
    let line = proxy.wait_log(|v| v["status"] == 200).await;
    assert_eq!(line["user"], "alice");
    // The health page needs no credentials.
    let r = plain_get(format!("{}/healthz", proxy.url())).await.unwrap();
    assert_eq!(r.status(), 200);
    proxy.stop().await;
}

#[tokio::test]
async fn max_connections_holds_further_clients_until_a_slot_frees_up() {
    let ca = TestCa::new();
    let origin = Origin::https(&ca).await;
    let proxy = TestProxy::start_with(|c| {
        c.proxy.max_connections = 1;
        c.proxy.workers = 1;
        c.proxy.connect_ports = vec![origin.addr.port()];
    })
    .await;
    // Client A holds the only slot with a tunnel (the slot moves to the tunnel).
    let mut a = TcpStream::connect(proxy.addr).await.unwrap();
    a.write_all(format!("CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n\r\n", origin.addr).as_bytes())
        .await
        .unwrap();
    assert!(read_head(&mut a).await.starts_with("HTTP/1.1 200"));
    // Client B waits in the backlog: no answer while A's tunnel is open. (A bounded look:
    // if the limit were not enforced, the answer would come within microseconds.)
    let mut b = TcpStream::connect(proxy.addr).await.unwrap();
    b.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", proxy.addr).as_bytes())
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(300), b.peek(&mut byte)).await;
    assert!(
        early.is_err(),
        "client B was served while the limit was reached"
    );
    drop(a);
    let head = read_head(&mut b).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    proxy.stop().await;
}

#[tokio::test]
async fn ipv6_forms_of_internal_addresses_and_metadata_addresses_are_refused() {
    let origin = Origin::http().await;
    let port = origin.addr.port();
    let proxy = TestProxy::start_with(|c| {
        c.proxy.destinations.allow_internal = false;
        c.proxy.connect_ports = vec![80, 443, port];
    })
    .await;
    for authority in [
        // 127.0.0.1 as IPv4-compatible, NAT64, 6to4 and Teredo (client) IPv6 addresses.
        format!("[::127.0.0.1]:{port}"),
        format!("[64:ff9b::127.0.0.1]:{port}"),
        format!("[2002:7f00:1::1]:{port}"),
        format!("[2001:0:c000:201::80ff:fffe]:{port}"),
        // The local-use NAT64 prefix, and cloud metadata outside link-local.
        format!("[64:ff9b:1::7f00:1]:{port}"),
        "[fd00:ec2::254]:80".to_owned(),
        "100.100.100.200:80".to_owned(),
        "168.63.129.16:80".to_owned(),
    ] {
        assert_destination_refused(&proxy, &authority).await;
    }
    assert_eq!(origin.stats.connections.load(Ordering::SeqCst), 0);
    proxy.stop().await;
}

/// A port on 127.0.0.1 held (bound with `SO_REUSEPORT`, not listening) by the returned
/// socket, so a proxy configured with it can bind it too and nothing else takes it first.
fn held_port() -> (socket2::Socket, u16) {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    s.set_reuse_address(true).unwrap();
    s.set_reuse_port(true).unwrap();
    s.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    let port = s.local_addr().unwrap().as_socket().unwrap().port();
    (s, port)
}

#[tokio::test]
async fn the_proxy_never_connects_to_its_own_ports_at_any_local_address() {
    let (held, port) = held_port();
    // Internal destinations allowed, and CONNECT to the proxy's own port allowed.
    let proxy = TestProxy::start_with(|c| {
        c.proxy.listen = vec![format!("127.0.0.1:{port}")];
        c.proxy.connect_ports = vec![port];
        c.proxy.destinations.allow_internal = true;
        c.admin.listen = Some("127.0.0.1:0".into());
    })
    .await;
    drop(held);
    // The wildcard address and "0" reach every listener of this host; another loopback
    // address, the IPv4-mapped and NAT64 forms and "localhost" are this host too.
    for target in [
        format!("0.0.0.0:{port}"),
        format!("0:{port}"),
        format!("127.0.0.2:{port}"),
        format!("[::ffff:127.0.0.1]:{port}"),
        format!("[64:ff9b::127.0.0.1]:{port}"),
        format!("localhost:{port}"),
    ] {
        let head = raw_exchange(
            proxy.addr,
            format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 403"), "CONNECT {target}: {head}");
        assert!(head.contains("error=destination_ip_prohibited"), "{head}");
    }
    assert_eq!(
        proxy.state.tunnels[0].load(Ordering::Relaxed),
        0,
        "no tunnel into itself"
    );
    // The admin listener is refused as a destination, under any local address.
    let admin = proxy.admin.unwrap().port();
    for authority in [format!("127.0.0.1:{admin}"), format!("0.0.0.0:{admin}")] {
        let r = proxy
            .client(None)
            .get(format!("http://{authority}/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{authority}");
    }
    // A plain request to the proxy's own port at the wildcard address gets its own pages.
    let r = proxy
        .client(None)
        .get(format!("http://0.0.0.0:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok\n");
    proxy.stop().await;
}

/// A request head with `n` short header lines (about 12 bytes each) for `url`.
fn many_headers(url: &str, n: usize) -> String {
    let mut req = format!("GET {url} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n");
    for i in 0..n {
        req.push_str(&format!("X-H{i}: 1\r\n"));
    }
    req.push_str("\r\n");
    req
}

#[tokio::test]
async fn the_header_line_limit_is_configurable() {
    let origin = Origin::http().await;
    let proxy = TestProxy::start_default().await;
    // 150 lines of ~2 KiB in all: over the default of 100 lines, far under the byte limit.
    let head = raw_exchange(proxy.addr, many_headers(&origin.url("/"), 150).as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 431"), "{head}");
    proxy.stop().await;
    let proxy = TestProxy::start_with(|c| c.proxy.max_header_lines = 200).await;
    // An origin that takes any number of lines.
    let (raw, mut seen) =
        raw_origin(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").await;
    let head = raw_exchange(
        proxy.addr,
        many_headers(&format!("http://{raw}/"), 150).as_bytes(),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(seen.recv().await.unwrap().contains("\r\nx-h149: 1\r\n"));
    let head = raw_exchange(proxy.addr, many_headers(&origin.url("/"), 250).as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 431"), "{head}");
    proxy.stop().await;
}

#[tokio::test]
async fn request_heads_refused_before_parsing_are_logged_and_counted() {
    let origin = Origin::http().await;
    let proxy = TestProxy::start_with(|c| {
        c.proxy.max_header_bytes = 4096;
        c.proxy.header_read_timeout_ms = 300;
        c.proxy.client_idle_timeout_ms = 600_000;
        c.admin.listen = Some("127.0.0.1:0".into());
    })
    .await;
    // hyper answers these itself; each gets an access-log line of kind "rejected".
    let head = raw_exchange(
        proxy.addr,
        b"GET http://a.example/ HTTP/1.1\r\nBad Header: x\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    let big = format!(
        "GET {} HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        origin.url("/"),
        "x".repeat(8000)
    );
    let head = raw_exchange(proxy.addr, big.as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 431"), "{head}");
    let head = raw_exchange(proxy.addr, many_headers(&origin.url("/"), 150).as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 431"), "{head}");
    // A head that never ends: closed without an answer, logged as 408.
    unfinished_head_is_closed_without_an_answer(&proxy).await;
    for (status, error) in [
        (400, "invalid_header"),
        (431, "header_too_large"),
        (408, "header_timeout"),
    ] {
        let line = proxy
            .wait_log(|v| v["kind"] == "rejected" && v["status"] == status)
            .await;
        assert_eq!(line["error"], error, "{line}");
        assert_eq!(line["method"], "-", "{line}");
        assert!(
            line["client"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{line}"
        );
    }
    let stats = proxy_stats(&proxy).await;
    assert_eq!(
        stats["rejected_requests"],
        serde_json::json!({ "malformed": 1, "too_large": 2, "header_timeout": 1 })
    );
    let text = scrape(proxy.admin.unwrap()).await;
    assert_eq!(
        sample(&text, "webrep_rejected_requests_total{class=\"too_large\"}"),
        2.0
    );
    assert_eq!(
        sample(&text, "webrep_rejected_requests_total{class=\"malformed\"}"),
        1.0
    );
    assert_eq!(origin.stats.requests.load(Ordering::SeqCst), 0);
}

/// A proxy client bound to `local` (another address of 127.0.0.0/8: another client).
fn client_from(proxy: &TestProxy, local: &str) -> reqwest::Client {
    init_crypto();
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(proxy.url()).unwrap())
        .local_address(local.parse::<std::net::IpAddr>().unwrap())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

#[tokio::test]
async fn one_client_address_with_many_connections_does_not_lock_out_another() {
    let origin = Origin::http().await;
    let proxy = TestProxy::start_with(|c| {
        c.proxy.max_connections = 8;
        c.proxy.max_connections_per_client = 4;
        c.proxy.workers = 1;
        c.proxy.header_read_timeout_ms = 600_000;
    })
    .await;
    // Client 127.0.0.1 opens 10 connections, each half-way through a request head (so none
    // is idle and none may be closed to make room).
    let mut held = Vec::new();
    for _ in 0..10 {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        let _ = s
            .write_all(b"GET http://example.com/ HTTP/1.1\r\nHost: exa")
            .await;
        held.push(s);
    }
    // Beyond its 4, it is answered 429 and closed.
    let mut answer = String::new();
    tokio::time::timeout(
        Duration::from_secs(20),
        held.last_mut().unwrap().read_to_string(&mut answer),
    )
    .await
    .expect("a refused connection is answered and closed")
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(answer.contains("too many connections"), "{answer}");
    // Another client address is served.
    let other = client_from(&proxy, "127.0.0.2");
    let r = other
        .get(origin.url("/"))
        .send()
        .await
        .expect("another client is served while one holds its limit");
    assert_eq!(r.status(), 200);
    let conns = proxy.state.conns.to_json();
    assert_eq!(conns["refused_per_client"], 6, "{conns}");
    // `/stats` on the admin listener says so.
    let stats = proxy_stats(&proxy).await;
    assert_eq!(stats["connections"]["refused_per_client"], 6, "{stats}");
    drop(held);
    proxy.stop().await;
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_to_make_room_for_a_new_client() {
    let origin = Origin::http().await;
    let proxy = TestProxy::start_with(|c| {
        c.proxy.max_connections = 2;
        c.proxy.workers = 1;
        c.proxy.client_idle_timeout_ms = 600_000;
        c.proxy.header_read_timeout_ms = 600_000;
    })
    .await;
    // Two keep-alive connections take both places: one request each, then idle.
    let mut idle = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(format!("GET {} HTTP/1.1\r\nHost: a\r\n\r\n", origin.url("/")).as_bytes())
            .await
            .unwrap();
        let head = read_head(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let mut body = [0u8; 5];
        s.read_exact(&mut body).await.unwrap();
        idle.push(s);
    }
    // A new client is served now, not after the idle timeout.
    let r = client_from(&proxy, "127.0.0.2")
        .get(origin.url("/"))
        .send()
        .await
        .expect("a new client is served at the limit");
    assert_eq!(r.status(), 200);
    // The connection idle for longest made room; the other is still open.
    let mut byte = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(20), idle[0].read(&mut byte))
        .await
        .expect("the idlest connection is closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    let still_open = idle[1].try_read(&mut byte);
    assert!(
        matches!(&still_open, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "{still_open:?}"
    );
    assert_eq!(proxy.state.conns.to_json()["closed_idle"], 1);
    drop(idle);
    proxy.stop().await;
}

/// Reads one response with a `Content-Length` body from `s`: its head and its body.
async fn read_sized_response(s: &mut TcpStream) -> (String, String) {
    let head = read_head(s).await;
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no content-length: {head}"));
    let mut body = vec![0u8; len];
    tokio::time::timeout(Duration::from_secs(20), s.read_exact(&mut body))
        .await
        .expect("the body arrives")
        .unwrap();
    (head, String::from_utf8_lossy(&body).into_owned())
}

/// Waits (bounded) until the proxy has parked `n` connections in all.
async fn parked_at_least(proxy: &TestProxy, n: u64) {
    eventually_ok("connections are parked", BOUND, || {
        let parked = proxy.state.conns.stats.parked.load(Ordering::Relaxed) >= n;
        std::future::ready(if parked {
            Ok(())
        } else {
            Err(proxy.state.conns.to_json())
        })
    })
    .await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_gives_back_its_buffers_and_serves_its_next_request() {
    let origin = Origin::http().await;
    let proxy = TestProxy::start_with(|c| {
        c.proxy.client_park_after_ms = 50;
        c.proxy.workers = 1;
    })
    .await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let get = |path: &str| format!("GET {} HTTP/1.1\r\nHost: a\r\n\r\n", origin.url(path));
    // One request, then the start of the next one in the same write (pipelined): the part
    // already read when the connection is parked must not be lost.
    let second = get("/headers?second");
    let (start, rest) = second.split_at(20);
    s.write_all(format!("{}{start}", get("/headers?first")).as_bytes())
        .await
        .unwrap();
    let (head, body) = read_sized_response(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.contains("/headers?first"), "{body}");
    parked_at_least(&proxy, 1).await;
    s.write_all(rest.as_bytes()).await.unwrap();
    let (head, body) = read_sized_response(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.contains("/headers?second"), "{body}");
    // Parked again once idle, and a third request on the same socket is served too.
    parked_at_least(&proxy, 2).await;
    s.write_all(get("/headers?third").as_bytes()).await.unwrap();
    let (head, body) = read_sized_response(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.contains("/headers?third"), "{body}");
    assert_eq!(origin.stats.requests.load(Ordering::SeqCst), 3);
    assert_eq!(proxy.state.conns.open(), 1, "one connection all along");
    let stats = proxy_stats(&proxy).await;
    assert!(
        stats["connections"]["parked"].as_u64().unwrap() >= 2,
        "{stats}"
    );
    proxy.stop().await;
}

/// A POST to `target` whose body is sent only in part: the head and the body's first bytes,
/// and the rest of the body, which is a whole request for the origin's `/headers?smuggled`.
fn post_hiding_a_request(origin: &Origin, target: &str, host: &str) -> (String, String) {
    let smuggled = format!(
        "GET {} HTTP/1.1\r\nHost: a\r\n\r\n",
        origin.url("/headers?smuggled")
    );
    let first = "0123456789";
    let post = format!(
        "POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n{first}",
        first.len() + smuggled.len()
    );
    (post, smuggled)
}

#[tokio::test]
async fn a_request_body_left_unread_is_never_read_as_the_next_request_after_a_park() {
    let origin = Origin::http().await;
    let proxy = TestProxy::start_with(|c| {
        c.proxy.client_park_after_ms = 50;
        c.proxy.workers = 1;
    })
    .await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    // A request the proxy answers itself (origin-form, to the proxy) with a body it has no
    // use for, of which only a part is sent before the answer; the rest is a whole request.
    let (post, smuggled) = post_hiding_a_request(&origin, "/nothing-here", "proxy");
    s.write_all(post.as_bytes()).await.unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 "), "{head}");
    // Long enough for the park time to pass many times over.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = s.write_all(smuggled.as_bytes()).await;
    // Whatever the proxy did with the rest of the body (read it as body, or closed the
    // connection), it never answered it as a request.
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut rest)).await;
    let rest = String::from_utf8_lossy(&rest);
    assert!(!rest.contains("smuggled"), "{rest}");
    assert_eq!(origin.stats.requests.load(Ordering::SeqCst), 0, "{rest}");
    proxy.stop().await;
}

#[tokio::test]
async fn a_connection_still_writing_when_its_park_time_comes_is_not_served_again_mid_stream() {
    let origin = Origin::http().await;
    let proxy = TestProxy::start_with(|c| {
        c.proxy.client_park_after_ms = 50;
        c.proxy.workers = 1;
    })
    .await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    // A large answer the client does not read for a while (the proxy's writes block with the
    // whole body handed over), to a request whose body is only partly sent; the rest of that
    // body is a whole request.
    let (post, smuggled) = post_hiding_a_request(&origin, &origin.url("/bytes/8000000"), "a");
    s.write_all(post.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = s.write_all(smuggled.as_bytes()).await;
    let mut all = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut all)).await;
    let text = String::from_utf8_lossy(&all);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "{}",
        &text[..text.len().min(200)]
    );
    assert!(!text.contains("smuggled"), "answered as a request");
    assert_eq!(origin.stats.requests.load(Ordering::SeqCst), 1);
    proxy.stop().await;
}
