//! CONNECT tunnels: TLS to a test-CA origin with reqwest and curl, refused ports, failures
//! answered with Proxy-Status.

use std::sync::atomic::Ordering;

use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use crate::harness::*;

#[tokio::test]
async fn connect_to_a_tls_origin_with_a_rust_client() {
    let ca = TestCa::new();
    let origin = Origin::https(&ca).await;
    let proxy =
        TestProxy::start_with(|c| c.proxy.connect_ports = vec![443, origin.addr.port()]).await;
    let client = proxy.client(Some(&ca));
    let url = format!("https://127.0.0.1:{}/bytes/100000", origin.addr.port());
    for _ in 0..3 {
        let r = client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().len(), 100_000);
    }
    // Keep-alive inside the tunnel: one tunnel, one TLS connection at the origin.
    assert_eq!(origin.stats.connections.load(Ordering::SeqCst), 1);
    drop(client);
    let line = proxy.wait_log(|v| v["kind"] == "tunnel").await;
    assert_eq!(line["method"], "CONNECT");
    assert_eq!(line["url"], format!("127.0.0.1:{}", origin.addr.port()));
    assert_eq!(line["status"], 200);
    assert!(line["bytes_out"].as_u64().unwrap() > 300_000, "{line}");
    proxy.stop().await;
}

#[tokio::test]
async fn connect_to_a_tls_origin_with_curl() {
    let ca = TestCa::new();
    let origin = Origin::https(&ca).await;
    let proxy =
        TestProxy::start_with(|c| c.proxy.connect_ports = vec![443, origin.addr.port()]).await;
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--noproxy", "", "--max-time", "30", "-x"])
        .arg(proxy.url())
        .arg("--cacert")
        .arg(&ca.ca_path)
        .arg(format!("https://localhost:{}/", origin.addr.port()))
        .output()
        .await
        .expect("curl runs");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello");
    proxy.stop().await;
}

#[tokio::test]
async fn connect_to_a_port_not_allowed_is_403() {
    let origin = Origin::http().await;
    let proxy = TestProxy::start_default().await;
    let head = raw_exchange(
        proxy.addr,
        format!("CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n\r\n", origin.addr).as_bytes(),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(
        head.contains("proxy-status: webrep-test; error=http_request_denied"),
        "{head}"
    );
    assert_eq!(origin.stats.connections.load(Ordering::SeqCst), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn connect_to_an_unreachable_upstream_is_502_with_proxy_status() {
    let port = closed_port().await;
    let proxy = TestProxy::start_with(|c| c.proxy.connect_ports = vec![443, port]).await;
    let head = raw_exchange(
        proxy.addr,
        format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    assert!(
        head.contains("proxy-status: webrep-test; error=connection_refused"),
        "{head}"
    );
    // And with curl, which reports the proxy's answer instead of a reset.
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--noproxy", "", "--max-time", "30", "-x"])
        .arg(proxy.url())
        .arg(format!("https://127.0.0.1:{port}/"))
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("502"), "curl said: {err}");
    proxy.stop().await;
}

#[tokio::test]
async fn plain_http_to_an_unreachable_upstream_is_502_with_proxy_status() {
    let port = closed_port().await;
    let proxy = TestProxy::start_default().await;
    let r = proxy
        .client(None)
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let ps = r.headers()["proxy-status"].to_str().unwrap().to_owned();
    assert!(
        ps.starts_with("webrep-test; error=connection_refused; details="),
        "{ps}"
    );
    let line = proxy.wait_log(|v| v["status"] == 502).await;
    assert_eq!(line["error"], "connection_refused");
    proxy.stop().await;
}

#[tokio::test]
async fn an_unresolvable_host_is_502_dns_error() {
    let proxy = TestProxy::start_default().await;
    // A label longer than 63 bytes cannot be put in a DNS query: the resolver fails without
    // sending anything (a `.invalid` name would still be sent to the configured server).
    let r = proxy
        .client(None)
        .get(format!("http://{}.invalid/", "a".repeat(64)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert!(
        r.headers()["proxy-status"]
            .to_str()
            .unwrap()
            .contains("error=dns_error")
    );
    // The failure is remembered: asking again does not call the resolver again.
    let again = plain_get_via(&proxy, &format!("http://{}.invalid/x", "a".repeat(64))).await;
    assert_eq!(again, 502);
    let dns = &proxy_stats(&proxy).await["dns"];
    assert_eq!(dns["failed"], 1, "{dns}");
    assert_eq!(dns["cached"], 1, "{dns}");
    proxy.stop().await;
}

async fn plain_get_via(proxy: &TestProxy, url: &str) -> u16 {
    proxy
        .client(None)
        .get(url)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// CONNECT to `host:port` on a new connection; the proxy's status line.
async fn connect_status(proxy: &TestProxy, authority: &str) -> String {
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    read_head(&mut s)
        .await
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn names_are_resolved_once_per_dns_cache_ttl() {
    let origin = Origin::http().await;
    let port = origin.addr.port();
    // "localhost" comes from /etc/hosts (nsswitch "files" first): no DNS query leaves.
    let authority = format!("localhost:{port}");
    let proxy = TestProxy::start_with(|c| c.proxy.connect_ports = vec![443, port]).await;
    for _ in 0..3 {
        assert!(connect_status(&proxy, &authority).await.contains(" 200 "));
    }
    let dns = &proxy_stats(&proxy).await["dns"];
    assert_eq!(dns["resolved"], 1, "{dns}");
    assert_eq!(dns["cached"], 2, "{dns}");
    proxy.stop().await;

    // With the cache off, every tunnel asks the resolver.
    let proxy = TestProxy::start_with(|c| {
        c.proxy.connect_ports = vec![443, port];
        c.proxy.dns_cache_ttl_ms = 0;
    })
    .await;
    for _ in 0..3 {
        assert!(connect_status(&proxy, &authority).await.contains(" 200 "));
    }
    let dns = &proxy_stats(&proxy).await["dns"];
    assert_eq!(dns["resolved"], 3, "{dns}");
    assert_eq!(dns["cached"], 0, "{dns}");
    proxy.stop().await;
}

#[tokio::test]
async fn tunnel_closes_after_the_idle_timeout() {
    let ca = TestCa::new();
    let origin = Origin::https(&ca).await;
    let proxy = TestProxy::start_with(|c| {
        c.proxy.connect_ports = vec![443, origin.addr.port()];
        c.proxy.tunnel_idle_timeout_ms = 200;
    })
    .await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(format!("CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n\r\n", origin.addr).as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Send nothing: the proxy must close the tunnel by itself.
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        tokio::io::AsyncReadExt::read(&mut s, &mut buf),
    )
    .await
    .expect("tunnel closed by the proxy")
    .unwrap_or(0);
    assert_eq!(n, 0);
    let line = proxy.wait_log(|v| v["kind"] == "tunnel").await;
    assert_eq!(line["error"], "connection_read_timeout");
    proxy.stop().await;
}

#[tokio::test]
async fn an_upstream_that_sends_no_headers_in_time_is_504() {
    let origin = Origin::http().await;
    let proxy = TestProxy::start_with(|c| c.proxy.upstream_response_timeout_ms = 300).await;
    let r = proxy
        .client(None)
        .get(origin.url("/hang"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    let ps = r.headers()["proxy-status"].to_str().unwrap().to_owned();
    assert!(ps.contains("error=http_response_timeout"), "{ps}");
    assert_eq!(origin.stats.requests.load(Ordering::SeqCst), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn an_upstream_that_vanishes_mid_body_is_an_incomplete_response_not_a_hang() {
    // A raw origin: promises 1000 bytes, sends 5, closes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let _ = read_head(&mut s).await;
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nshort")
            .await
            .unwrap();
    });
    let proxy = TestProxy::start_default().await;
    let r = proxy
        .client(None)
        .get(format!("http://{addr}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.bytes().await.is_err(),
        "the client must see the truncation"
    );
    let line = proxy.wait_log(|v| v["status"] == 200).await;
    assert_eq!(line["error"], "http_response_incomplete", "{line}");
    proxy.stop().await;
}

/// A listener on 127.0.0.2:`port` whose accept queue is full: the kernel drops further SYNs,
/// so a connect to it hangs like one to a black-holed route. Keep the pair alive.
async fn black_hole(port: u16) -> (tokio::net::TcpListener, TcpStream) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(format!("127.0.0.2:{port}").parse().unwrap())
        .unwrap();
    let listener = socket.listen(0).unwrap();
    let filler = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    (listener, filler)
}

#[tokio::test]
async fn an_address_that_never_answers_costs_the_happy_eyeballs_delay_not_the_timeout() {
    let origin = Origin::http().await;
    let port = origin.addr.port();
    let _hole = black_hole(port).await;
    // The first address of the name never answers; the second is the origin. With the
    // addresses tried one after the other, every request would wait out the 20 s connect
    // timeout and get 504.
    let proxy = TestProxy::start_with(|c| {
        c.proxy.connect_ports = vec![443, port];
        c.proxy.upstream_connect_timeout_ms = 20_000;
        c.proxy.happy_eyeballs_delay_ms = 50;
        c.proxy.hosts = [(
            "dual.test".to_owned(),
            vec!["127.0.0.2".to_owned(), "127.0.0.1".to_owned()],
        )]
        .into();
    })
    .await;
    let client = proxy.client(None);
    for path in ["/a", "/b"] {
        let r = client
            .get(format!("http://dual.test:{port}{path}"))
            .header("connection", "close")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    assert!(
        connect_status(&proxy, &format!("dual.test:{port}"))
            .await
            .contains(" 200 ")
    );
    proxy.stop().await;
}
