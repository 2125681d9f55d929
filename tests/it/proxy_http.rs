//! Plain-HTTP forwarding: bodies, streaming, keep-alive, headers, Via, loops, WebSocket.

use std::sync::atomic::Ordering;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use crate::harness::*;

#[tokio::test]
async fn get_and_post_bodies_of_every_size_stream_through() {
    let origin = Origin::http().await;
    let proxy = TestProxy::start_default().await;
    let client = proxy.client(None);
    for n in [1usize, 1000, 65_537, 1 << 20, 64 << 20] {
        // Download: count and check bytes as they arrive, never holding the whole body.
        let mut resp = client
            .get(origin.url(&format!("/bytes/{n}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut got = 0usize;
        while let Some(chunk) = resp.chunk().await.unwrap() {
            for (j, b) in chunk.iter().enumerate() {
                assert_eq!(*b, pattern_byte(got + j), "byte {} of {n}", got + j);
            }
            got += chunk.len();
        }
        assert_eq!(got, n);

        // Upload: a streamed (chunked) body of n bytes.
        let resp = client
            .post(origin.url("/upload"))
            .body(pattern_upload(n, 64 * 1024))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), format!("{n} ok"));
    }
    proxy.stop().await;
}

#[tokio::test]
async fn content_length_and_chunked_requests_are_framed_correctly() {
    let origin = Origin::http().await;
    let proxy = TestProxy::start_default().await;
    let body: Vec<u8> = (0..3000).map(pattern_byte).collect();
    // Chunked request body, two chunks, from a raw socket.
    let mut req = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        origin.url("/upload"),
        origin.addr
    )
    .into_bytes();
    req.extend_from_slice(format!("{:x}\r\n", 1000).as_bytes());
    req.extend_from_slice(&body[..1000]);
    req.extend_from_slice(format!("\r\n{:x}\r\n", 2000).as_bytes());
    req.extend_from_slice(&body[1000..]);
    req.extend_from_slice(b"\r\n0\r\n\r\n");
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&req).await.unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Content-Length request body.
    let resp = proxy
        .client(None)
        .post(origin.url("/upload"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "3000 ok");
    proxy.stop().await;
}

#[tokio::test]
async fn upstream_connections_are_pooled_and_reused() {
    let origin = Origin::http().await;
    // One worker: one upstream pool (each worker keeps its own).
    let proxy = TestProxy::start_with(|c| c.proxy.workers = 1).await;
    for _ in 0..3 {
        // A fresh client each time: a new client connection, but the same upstream one.
        let client = proxy.client(None);
        for _ in 0..5 {
            let r = client.get(origin.url("/")).send().await.unwrap();
            assert_eq!(r.text().await.unwrap(), "hello");
        }
    }
    assert_eq!(origin.stats.requests.load(Ordering::SeqCst), 15);
    assert_eq!(origin.stats.connections.load(Ordering::SeqCst), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_and_via_added_both_ways() {
    let origin = Origin::http().await;
    let proxy = TestProxy::start_default().await;
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: wrong.example\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n\
         Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\n\
         TE: trailers\r\nTrailer: X-T\r\nUpgrade: h2c\r\nX-Kept: yes\r\nVia: 1.0 other-proxy\r\n\r\n",
        origin.url("/headers")
    );
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut body = vec![0u8; len];
    tokio::io::AsyncReadExt::read_exact(&mut s, &mut body)
        .await
        .unwrap();
    let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let h = &seen["headers"];
    for gone in [
        "connection",
        "x-secret",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
        "trailer",
        "upgrade",
    ] {
        assert!(h.get(gone).is_none(), "{gone} reached the origin: {h}");
    }
    assert_eq!(h["x-kept"][0], "yes");
    assert_eq!(
        h["host"][0],
        origin.addr.to_string(),
        "Host comes from the target"
    );
    assert_eq!(
        h["via"],
        serde_json::json!(["1.0 other-proxy", "1.1 webrep-test"])
    );
    assert_eq!(seen["uri"], "/headers", "origin-form upstream");
    assert!(
        head.to_ascii_lowercase().contains("via: 1.1 webrep-test"),
        "{head}"
    );

    // Response direction.
    let r = proxy
        .client(None)
        .get(origin.url("/hop"))
        .send()
        .await
        .unwrap();
    let rh = r.headers();
    assert!(rh.get("x-resp-secret").is_none());
    assert!(rh.get("keep-alive").is_none());
    assert!(rh.get("proxy-authenticate").is_none());
    assert_eq!(rh["x-resp-kept"], "yes");
    assert_eq!(rh["via"], "1.1 webrep-test");
    proxy.stop().await;
}

#[tokio::test]
async fn a_request_carrying_our_via_is_a_loop() {
    let origin = Origin::http().await;
    let proxy = TestProxy::start_default().await;
    let r = proxy
        .client(None)
        .get(origin.url("/"))
        .header("via", "1.1 somebody, 1.1 webrep-test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 508);
    let ps = r.headers()["proxy-status"].to_str().unwrap().to_owned();
    assert!(
        ps.starts_with("webrep-test; error=proxy_loop_detected"),
        "{ps}"
    );
    assert_eq!(origin.stats.requests.load(Ordering::SeqCst), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn max_forwards_zero_on_options_and_trace_is_answered_by_the_proxy() {
    let origin = Origin::http().await;
    let proxy = TestProxy::start_default().await;
    let client = proxy.client(None);
    let url = origin.url("/headers");

    let r = client
        .request(reqwest::Method::OPTIONS, &url)
        .header("max-forwards", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["allow"].to_str().unwrap().contains("CONNECT"));

    // TRACE with curl: the request comes back as message/http, without its credentials.
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--noproxy", "", "-x", &proxy.url(), "-X", "TRACE"])
        .args(["-H", "Max-Forwards: 0", "-H", "Cookie: session=secret"])
        .args(["-H", "X-Probe: 1", "-D", "-", &url])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(out.status.success(), "{text}");
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("content-type: message/http"), "{text}");
    assert!(
        text.contains(&format!("trace {url} http/1.1\r\n")),
        "{text}"
    );
    assert!(text.contains("x-probe: 1\r\n"), "{text}");
    assert!(!text.contains("secret"), "{text}");

    let r = client
        .request(reqwest::Method::TRACE, &url)
        .header("max-forwards", "ten")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(origin.stats.requests.load(Ordering::SeqCst), 0);

    // Above zero it is counted down on the way; other methods carry it untouched.
    for (method, sent, seen) in [
        (reqwest::Method::OPTIONS, "3", "2"),
        (reqwest::Method::TRACE, "1", "0"),
        (reqwest::Method::GET, "0", "0"),
    ] {
        let r = client
            .request(method.clone(), &url)
            .header("max-forwards", sent)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{method}");
        let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(v["method"], method.as_str());
        assert_eq!(
            v["headers"]["max-forwards"],
            serde_json::json!([seen]),
            "{method}"
        );
    }
    assert_eq!(origin.stats.requests.load(Ordering::SeqCst), 3);
    proxy.stop().await;
}

const PLAIN_OK: &[u8] = b"HTTP/1.1 200 OK\r\nX-Answer-Case: Kept\r\nContent-Length: 2\r\n\r\nok";

#[tokio::test]
async fn header_name_case_is_kept_both_ways_when_configured() {
    let (origin, mut seen) = raw_origin(PLAIN_OK).await;
    for kept in [false, true] {
        let proxy = TestProxy::start_with(|c| c.proxy.preserve_header_case = kept).await;
        let head = raw_exchange(
            proxy.addr,
            format!(
                "GET http://{origin}/ HTTP/1.1\r\nHost: {origin}\r\nX-Request-Case: Kept\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
        let upstream = seen.recv().await.unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(head.contains("\r\nX-Answer-Case: Kept\r\n"), kept, "{head}");
        assert_eq!(
            upstream.contains("\r\nX-Request-Case: Kept\r\n"),
            kept,
            "{upstream}"
        );
        // Either way the header arrives, only the spelling of its name differs.
        assert!(
            head.to_lowercase().contains("x-answer-case: kept"),
            "{head}"
        );
        assert!(upstream.to_lowercase().contains("x-request-case: kept"));
        proxy.stop().await;
    }
}

#[tokio::test]
async fn absolute_form_to_our_own_listener_serves_our_pages() {
    // Two names for the same proxy: through a chain the second hop sees its own Via.
    let proxy = TestProxy::start_default().await;
    let r = proxy
        .client(None)
        .get(format!("http://{}/healthz", proxy.addr))
        .send()
        .await
        .unwrap();
    // Absolute-form to our own listener gets our own page, never a forward to ourselves.
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok\n");
    proxy.stop().await;
}

#[tokio::test]
async fn websocket_echo_through_the_proxy() {
    let origin = Origin::http().await;
    let proxy = TestProxy::start_default().await;
    let (head, mut ws) = websocket_through(proxy.addr, &origin).await;
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    use tokio_tungstenite::tungstenite::Message;
    for i in 0..3 {
        ws.send(Message::text(format!("ping {i}"))).await.unwrap();
        let back = ws.next().await.unwrap().unwrap();
        assert_eq!(back, Message::text(format!("ping {i}")));
    }
    ws.send(Message::binary(vec![7u8; 100_000])).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![7u8; 100_000])
    );
    ws.close(None).await.unwrap();
    drop(ws);
    let line = proxy.wait_log(|v| v["kind"] == "websocket").await;
    assert_eq!(line["status"], 101);
    assert!(line["bytes_in"].as_u64().unwrap() > 100_000);
    proxy.stop().await;
}

#[tokio::test]
async fn access_log_has_a_line_per_request_with_an_id() {
    let origin = Origin::http().await;
    let proxy = TestProxy::start_default().await;
    let r = proxy
        .client(None)
        .get(origin.url("/bytes/777"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().len(), 777);
    let line = proxy
        .wait_log(|v| v["url"] == origin.url("/bytes/777"))
        .await;
    assert_eq!(line["status"], 200);
    assert_eq!(line["bytes_out"], 777);
    assert_eq!(line["method"], "GET");
    assert_eq!(line["kind"], "http");
    assert_eq!(line["upstream"], origin.addr.to_string());
    assert_eq!(line["id"].as_str().unwrap().len(), 16);
    assert!(line["error"].is_null());
    proxy.stop().await;
}

#[tokio::test]
async fn an_http_1_0_client_is_served_and_named_in_via() {
    let origin = Origin::http().await;
    let proxy = TestProxy::start_default().await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(format!("GET {} HTTP/1.0\r\n\r\n", origin.url("/headers")).as_bytes())
        .await
        .unwrap();
    // HTTP/1.0 without keep-alive: the proxy answers and closes, so read to the end.
    let mut all = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut s, &mut all)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.0 200"), "{text}");
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    let seen: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(seen["headers"]["via"][0], "1.0 webrep-test");
    assert_eq!(seen["version"], "HTTP/1.1", "upstream always gets HTTP/1.1");
    proxy.stop().await;
}

#[tokio::test]
async fn head_requests_are_logged_as_complete() {
    let origin = Origin::http().await;
    let proxy = TestProxy::start_default().await;
    let r = proxy
        .client(None)
        .head(origin.url("/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let line = proxy.wait_log(|v| v["method"] == "HEAD").await;
    assert!(line["error"].is_null(), "{line}");
    proxy.stop().await;
}

/// Reads one chunked body from `s` (after its head) and returns its content.
async fn read_chunked(s: &mut TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt as _;
    let mut body = Vec::new();
    loop {
        let size_line = read_head_line(s).await;
        let size = usize::from_str_radix(size_line.trim(), 16).expect("a chunk size");
        let mut chunk = vec![0u8; size + 2];
        s.read_exact(&mut chunk).await.unwrap();
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&chunk[..size]);
    }
}

/// One CRLF-terminated line from `s`.
async fn read_head_line(s: &mut TcpStream) -> String {
    use tokio::io::AsyncReadExt as _;
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        s.read_exact(&mut b).await.unwrap();
        line.push(b[0]);
    }
    String::from_utf8(line).unwrap()
}

#[tokio::test]
async fn a_malformed_chunk_in_the_clients_body_is_the_clients_fault() {
    let origin = Origin::http().await;
    let proxy = TestProxy::start_default().await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(
        format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n\
             5\r\nhello\r\nzz-not-a-size\r\n",
            origin.url("/upload"),
            origin.addr
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert!(
        head.contains("error=http_request_error"),
        "the client's fault, not the upstream's: {head}"
    );
    let line = proxy.wait_log(|v| v["status"] == 400).await;
    assert_eq!(line["error"], "http_request_error");
    proxy.stop().await;
}

#[tokio::test]
async fn duplicate_or_invalid_host_fields_are_400_even_with_an_absolute_target() {
    let origin = Origin::http().await;
    let proxy = TestProxy::start_with(|c| c.proxy.connect_ports = vec![origin.addr.port()]).await;
    for host in [
        "Host: a b\r\n".to_owned(),
        "Host: @@@\r\n".to_owned(),
        "Host: [::1\r\n".to_owned(),
        "Host: \r\n".to_owned(),
        "Host: user@a.example\r\n".to_owned(),
        format!("Host: {0}\r\nHost: {0}\r\n", origin.addr),
    ] {
        let head = raw_exchange(
            proxy.addr,
            format!("GET {} HTTP/1.1\r\n{host}\r\n", origin.url("/")).as_bytes(),
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 400"), "{host:?}: {head}");
        assert!(head.contains("Host header field"), "{host:?}: {head}");
        let head = raw_exchange(
            proxy.addr,
            format!("CONNECT {0} HTTP/1.1\r\n{host}\r\n", origin.addr).as_bytes(),
        )
        .await;
        assert!(
            head.starts_with("HTTP/1.1 400"),
            "CONNECT, {host:?}: {head}"
        );
    }
    assert_eq!(origin.stats.connections.load(Ordering::SeqCst), 0);
    // One valid Host naming another host is ignored for the target's (RFC 9112 §3.2.2).
    let head = raw_exchange(
        proxy.addr,
        format!(
            "GET {} HTTP/1.1\r\nHost: elsewhere.example:81\r\nConnection: close\r\n\r\n",
            origin.url("/")
        )
        .as_bytes(),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    proxy.stop().await;
}

#[tokio::test]
async fn transfer_codings_other_than_chunked_are_refused_both_ways() {
    let origin = Origin::http().await;
    let proxy = TestProxy::start_default().await;
    // gzip is applied to the body, chunked frames it: the proxy cannot pass gzip on.
    for te in ["gzip, chunked", "x-custom, chunked", "chunked, chunked"] {
        let head = raw_exchange(
            proxy.addr,
            format!(
                "POST {} HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: {te}\r\n\r\n\
                 3\r\nabc\r\n0\r\n\r\n",
                origin.url("/upload"),
                origin.addr
            )
            .as_bytes(),
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 501"), "{te}: {head}");
    }
    assert_eq!(origin.stats.requests.load(Ordering::SeqCst), 0);
    // A response so coded is not relayed as if it were plain.
    let (raw, _seen) = raw_origin(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    let r = proxy
        .client(None)
        .get(format!("http://{raw}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert!(
        r.headers()["proxy-status"]
            .to_str()
            .unwrap()
            .contains("error=http_protocol_error")
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_response_with_length_and_chunked_loses_the_length_and_the_connection_stays_usable() {
    let (origin, _seen) = raw_origin(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    let proxy = TestProxy::start_default().await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    for round in 0..2 {
        s.write_all(
            format!("GET http://{origin}/{round} HTTP/1.1\r\nHost: {origin}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let head = read_head(&mut s).await.to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "round {round}: {head}");
        assert!(!head.contains("content-length"), "round {round}: {head}");
        assert!(
            head.contains("transfer-encoding: chunked"),
            "round {round}: {head}"
        );
        assert_eq!(read_chunked(&mut s).await, b"hello", "round {round}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn an_unrequested_101_from_the_origin_is_502() {
    let (origin, _seen) = raw_origin(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n",
    )
    .await;
    let proxy = TestProxy::start_default().await;
    let head = raw_exchange(
        proxy.addr,
        format!("GET http://{origin}/ HTTP/1.1\r\nHost: {origin}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    assert!(head.contains("error=http_protocol_error"), "{head}");
    proxy.stop().await;
}

#[tokio::test]
async fn metrics_count_requests_bytes_tunnels_and_the_process() {
    use tokio::io::AsyncReadExt as _;
    let origin = Origin::http().await;
    let proxy = TestProxy::start_with(|c| c.proxy.connect_ports = vec![origin.addr.port()]).await;
    let admin = proxy.admin.expect("admin listener");
    let client = proxy.client(None);
    for _ in 0..2 {
        let r = client.get(origin.url("/bytes/1000")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().len(), 1000);
    }
    let r = client
        .post(origin.url("/upload"))
        .body(vec![0u8; 5000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer = r.text().await.unwrap();
    // A CONNECT to a port not allowed: 403.
    let reply = raw_exchange(
        proxy.addr,
        b"CONNECT 127.0.0.1:25 HTTP/1.1\r\nHost: 127.0.0.1:25\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
    // A tunnel held open while the proxy is scraped.
    let mut tunnel = TcpStream::connect(proxy.addr).await.unwrap();
    let target = origin.addr;
    tunnel
        .write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 64];
    let n = tunnel.read(&mut head).await.unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &head[..n]);
    let text = eventually_ok("the tunnel counted open", BOUND, || async {
        let text = scrape(admin).await;
        if sample(&text, "webrep_open_tunnels") == 1.0 {
            Ok(text)
        } else {
            Err(text)
        }
    })
    .await;
    let count = |method: &str, class: &str| {
        sample(
            &text,
            &format!("webrep_requests_total{{method=\"{method}\",class=\"{class}\"}}"),
        )
    };
    assert_eq!(count("GET", "2xx"), 2.0, "{text}");
    assert_eq!(count("POST", "2xx"), 1.0, "{text}");
    assert_eq!(count("CONNECT", "4xx"), 1.0, "{text}");
    assert_eq!(count("CONNECT", "2xx"), 1.0, "{text}");
    assert!(
        !text.contains("method=\"PUT\""),
        "only counts above zero: {text}"
    );
    let bytes = |d: &str| {
        sample(
            &text,
            &format!("webrep_client_bytes_total{{direction=\"{d}\"}}"),
        )
    };
    assert_eq!(bytes("in"), 5000.0, "{text}");
    // The proxy's own 403 page adds to the bodies sent.
    assert!(bytes("out") > (2000 + answer.len()) as f64, "{text}");
    assert_eq!(
        sample(
            &text,
            &format!(
                "webrep_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0
    );
    assert!(
        sample(&text, "process_resident_memory_bytes") > 1e6,
        "{text}"
    );
    assert!(sample(&text, "process_open_fds") >= 3.0, "{text}");
    assert!(sample(&text, "process_cpu_seconds_total") > 0.0, "{text}");
    assert!(
        sample(&text, "process_start_time_seconds") > 1.7e9,
        "{text}"
    );
    let stats = stats_at(admin).await;
    assert_eq!(stats["traffic"]["requests"]["GET"]["2xx"], 2, "{stats}");
    assert_eq!(stats["traffic"]["bytes_in"], 5000, "{stats}");
    assert_eq!(stats["traffic"]["open_tunnels"], 1, "{stats}");
    // Closed: no longer open.
    drop(tunnel);
    eventually_ok("the tunnel counted closed", BOUND, || async {
        let text = scrape(admin).await;
        if sample(&text, "webrep_open_tunnels") == 0.0 {
            Ok(())
        } else {
            Err(text)
        }
    })
    .await;
    proxy.stop().await;
}

#[tokio::test]
async fn json_lines_name_the_proxys_own_pages_by_absolute_url() {
    let proxy = TestProxy::start_default().await;
    let r = plain_get(format!("{}/healthz", proxy.url())).await.unwrap();
    assert_eq!(r.status(), 200);
    let want = format!("{}/healthz", proxy.url());
    let line = proxy.wait_log(|l| l["kind"] == "local").await;
    assert_eq!(line["url"], want.as_str(), "{line}");
    proxy.stop().await;
}
