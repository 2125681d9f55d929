//! HTTPS interception: the real proxy with its own CA, in-process TLS origins with theirs
//! (trusted through `intercept.upstream_ca_file`), reqwest, curl and raw sockets.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::harness::*;
use webrep::config::{Config, RawConfig};

struct Intercepting {
    proxy: TestProxy,
    ca_pem: String,
    ca_path: PathBuf,
    _dir: tempfile::TempDir,
}

async fn intercepting(
    origin_ca: &TestCa,
    origin_port: u16,
    extra: impl FnOnce(&mut RawConfig),
) -> Intercepting {
    intercepting_trusting(&origin_ca.ca_path, origin_port, extra).await
}

/// An intercepting proxy that trusts the CA file `trusted` upstream, with the further
/// settings `extra` makes.
async fn intercepting_trusting(
    trusted: &Path,
    origin_port: u16,
    extra: impl FnOnce(&mut RawConfig),
) -> Intercepting {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("certs");
    let proxy = TestProxy::start_with(|c| {
        c.proxy.connect_ports = vec![443, origin_port];
        c.intercept.enabled = true;
        c.intercept.create_ca = true;
        c.intercept.ca_dir = ca_dir.clone();
        c.intercept.upstream_ca_file = Some(trusted.to_owned());
        extra(c);
    })
    .await;
    let ca_path = ca_dir.join("ca.pem");
    Intercepting {
        proxy,
        ca_pem: std::fs::read_to_string(&ca_path).unwrap(),
        ca_path,
        _dir: dir,
    }
}

impl Intercepting {
    fn client(&self, http1_only: bool) -> reqwest::Client {
        init_crypto();
        let mut b = reqwest::Client::builder()
            .proxy(reqwest::Proxy::all(self.proxy.url()).unwrap())
            .tls_certs_only([reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap()]);
        if http1_only {
            b = b.http1_only();
        }
        b.build().unwrap()
    }
}

/// `curl` through the proxy to `https://localhost:port/`, trusting only `cacert`.
async fn curl_https(proxy: &TestProxy, cacert: &Path, port: u16) -> std::process::Output {
    tokio::process::Command::new("curl")
        .args(["-sS", "--noproxy", "", "--max-time", "30", "-x"])
        .arg(proxy.url())
        .arg("--cacert")
        .arg(cacert)
        .arg(format!("https://localhost:{port}/"))
        .output()
        .await
        .expect("curl runs")
}

/// A TLS client over a hand-made CONNECT, trusting only `ca_pem`, with `sni` (None: no SNI).
async fn tls_through(
    proxy: &TestProxy,
    port: u16,
    ca_pem: &str,
    sni: Option<&str>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    init_crypto();
    let s = raw_connect(proxy, port).await;
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject as _;
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(webrep::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.enable_sni = sni.is_some();
    let name: rustls::pki_types::ServerName<'static> = match sni {
        Some(n) => n.to_owned().try_into().unwrap(),
        None => {
            rustls::pki_types::ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into())
        }
    };
    tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, s)
        .await
        .expect("handshake with the minted certificate")
}

/// Issuer and SANs of the leaf the proxy presented.
fn leaf_names(tls: &tokio_rustls::client::TlsStream<TcpStream>) -> (String, Vec<String>) {
    let der = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let (_, c) = x509_parser::parse_x509_certificate(&der).unwrap();
    let sans = c
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| format!("{n}"))
        .collect();
    (c.issuer().to_string(), sans)
}

#[tokio::test]
async fn minted_leaves_name_the_host_and_come_from_our_ca() {
    let origin_ca = TestCa::new();
    let origin = Origin::https(&origin_ca).await;
    let port = origin.addr.port();
    let i = intercepting(&origin_ca, port, |_| {}).await;
    // SNI present: a DNS SAN for it; none (an IP literal target): an IP SAN.
    let tls = tls_through(&i.proxy, port, &i.ca_pem, Some("localhost")).await;
    let (issuer, sans) = leaf_names(&tls);
    assert!(issuer.contains("webrep interception CA"), "{issuer}");
    assert_eq!(sans, vec!["DNSName(localhost)".to_owned()]);
    let tls = tls_through(&i.proxy, port, &i.ca_pem, None).await;
    let (_, sans) = leaf_names(&tls);
    assert_eq!(sans.len(), 1);
    assert!(sans[0].starts_with("IPAddress("), "{sans:?}");
    drop(tls);
    i.proxy.stop().await;
}

#[tokio::test]
async fn https_is_decrypted_over_http1_and_http2() {
    let origin_ca = TestCa::new();
    let origin = Origin::https(&origin_ca).await;
    let port = origin.addr.port();
    let i = intercepting(&origin_ca, port, |_| {}).await;
    for http1 in [true, false] {
        let client = i.client(http1);
        let url = format!("https://127.0.0.1:{port}/bytes/100000");
        let r = client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.version(),
            if http1 {
                http::Version::HTTP_11
            } else {
                http::Version::HTTP_2
            }
        );
        let body = r.bytes().await.unwrap();
        assert_eq!(body.len(), 100_000);
        assert!(body.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
        // A POST body streams through the decrypted connection too.
        let r = client
            .post(format!("https://127.0.0.1:{port}/upload"))
            .body(pattern_upload(300_000, 16 * 1024))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "300000 ok");
    }
    // Every inner request has its own access-log line with the full https URL.
    let line = i
        .proxy
        .wait_log(|v| v["url"] == format!("https://127.0.0.1:{port}/bytes/100000"))
        .await;
    assert_eq!(line["status"], 200);
    assert_eq!(line["method"], "GET");
    assert!(origin.stats.requests.load(Ordering::SeqCst) >= 4);
    i.proxy.stop().await;
}

#[tokio::test]
async fn curl_through_interception_with_the_proxy_ca() {
    let origin_ca = TestCa::new();
    let origin = Origin::https(&origin_ca).await;
    let port = origin.addr.port();
    let i = intercepting(&origin_ca, port, |_| {}).await;
    let out = curl_https(&i.proxy, &i.ca_path, port).await;
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello");
    // Trusting only the origin's CA fails: the client sees our certificate, and the proxy
    // counts the failed handshake for the host (a pinned app would show up the same way).
    let out = curl_https(&i.proxy, &origin_ca.ca_path, port).await;
    assert!(!out.status.success());
    // curl may exit before the proxy has read its alert: wait (bounded) for the count.
    let icpt = i.proxy.state.interceptor.as_ref().unwrap();
    let failures = eventually_ok("the failed handshake is counted", BOUND, || {
        let failures = icpt.failed_handshakes();
        std::future::ready(if failures.is_empty() {
            Err(failures)
        } else {
            Ok(failures)
        })
    })
    .await;
    assert_eq!(failures, vec![("localhost".to_owned(), 1)]);
    // Listed for the admin on the /stats page of the admin listener.
    let stats: serde_json::Value = proxy_stats(&i.proxy).await;
    assert_eq!(
        stats["failed_handshakes"],
        serde_json::json!([{ "host": "localhost", "count": 1 }])
    );
    i.proxy.stop().await;
}

async fn upstream_failure(origin_ca: &TestCa, trusted: &Path, host: &str) -> (u16, String, String) {
    let origin = Origin::https(origin_ca).await;
    let port = origin.addr.port();
    let i = intercepting_trusting(trusted, port, |_| {}).await;
    let proxy = i.proxy;
    init_crypto();
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(proxy.url()).unwrap())
        .tls_certs_only([reqwest::Certificate::from_pem(i.ca_pem.as_bytes()).unwrap()])
        .resolve(host, std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .build()
        .unwrap();
    let r = client
        .get(format!("https://{host}:{port}/"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let ps = r
        .headers()
        .get("proxy-status")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = r.text().await.unwrap();
    assert_eq!(
        origin.stats.requests.load(Ordering::SeqCst),
        0,
        "no request reached it"
    );
    proxy.stop().await;
    (status, ps, body)
}

#[tokio::test]
async fn upstream_certificate_failures_are_named_never_passed() {
    // Unknown issuer: the proxy trusts an unrelated CA (another name), not the origin's.
    let origin_ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let unrelated = dir.path().join("unrelated.pem");
    {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "unrelated CA");
        let ca = p.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap();
        std::fs::write(&unrelated, ca.pem()).unwrap();
    }
    let (status, ps, body) = upstream_failure(&origin_ca, &unrelated, "localhost").await;
    assert_eq!(status, 502);
    assert!(ps.contains("error=tls_certificate_error"), "{ps}");
    assert!(body.contains("unknown issuer"), "{body}");
    // Wrong name: the certificate is for other.test.
    let other = TestCa::custom(&["other.test"], false);
    let (status, _, body) = upstream_failure(&other, &other.ca_path, "localhost").await;
    assert_eq!(status, 502);
    assert!(body.contains("for another name"), "{body}");
    // Expired.
    let expired = TestCa::custom(&["localhost"], true);
    let (status, _, body) = upstream_failure(&expired, &expired.ca_path, "localhost").await;
    assert_eq!(status, 502);
    assert!(body.contains("expired"), "{body}");
}

/// CONNECT by hand; returns the stream after the 200.
async fn raw_connect(proxy: &TestProxy, port: u16) -> TcpStream {
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(
        format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s
}

async fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .expect("the proxy closes the tunnel")
        .ok();
    out
}

#[tokio::test]
async fn non_tls_bytes_bad_hellos_and_plain_http_in_a_tunnel() {
    let origin_ca = TestCa::new();
    let origin = Origin::https(&origin_ca).await;
    let plain = Origin::http().await;
    let i = intercepting(&origin_ca, origin.addr.port(), |_| {}).await;
    // Neither TLS nor HTTP: refused (closed without a byte).
    let mut s = raw_connect(&i.proxy, origin.addr.port()).await;
    s.write_all(b"\x00\x01\x02binary protocol").await.unwrap();
    assert!(read_to_close(&mut s).await.is_empty());
    // A malformed ClientHello, and a huge one: closed, the proxy lives on.
    let mut s = raw_connect(&i.proxy, origin.addr.port()).await;
    s.write_all(b"\x16\x03\x01\x00\x05garbage-not-a-hello")
        .await
        .unwrap();
    let _ = read_to_close(&mut s).await;
    let mut s = raw_connect(&i.proxy, origin.addr.port()).await;
    let mut huge = vec![0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0x00, 0xff, 0xfb];
    huge.extend(std::iter::repeat_n(0x41u8, 70_000));
    let _ = s.write_all(&huge).await;
    let _ = read_to_close(&mut s).await;
    // Plain HTTP inside a tunnel (to a plain origin on an allowed port) is served as HTTP.
    let proxy2 = TestProxy::start_with(|c| {
        c.proxy.connect_ports = vec![plain.addr.port()];
        c.intercept.enabled = true;
        c.intercept.create_ca = true;
        c.intercept.ca_dir = i._dir.path().join("certs");
    })
    .await;
    let mut s = raw_connect(&proxy2, plain.addr.port()).await;
    s.write_all(
        format!(
            "GET / HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            plain.addr.port()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let text = String::from_utf8(read_to_close(&mut s).await).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("hello"), "{text}");
    // Still serving after all that.
    let r = i
        .client(true)
        .get(format!("https://127.0.0.1:{}/", origin.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "hello");
    proxy2.stop().await;
    i.proxy.stop().await;
}

#[tokio::test]
async fn secure_websocket_echo_through_interception() {
    let origin_ca = TestCa::new();
    let origin = Origin::https(&origin_ca).await;
    let port = origin.addr.port();
    let i = intercepting(&origin_ca, port, |_| {}).await;
    // The tunnel is to 127.0.0.1 (SNI localhost): the request names the tunnel's origin.
    let tls = tls_through(&i.proxy, port, &i.ca_pem, Some("localhost")).await;
    let (mut ws, resp) = tokio_tungstenite::client_async(format!("wss://127.0.0.1:{port}/ws"), tls)
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    use tokio_tungstenite::tungstenite::Message;
    for n in 0..3 {
        ws.send(Message::text(format!("secure {n}"))).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text(format!("secure {n}"))
        );
    }
    ws.close(None).await.unwrap();
    i.proxy.stop().await;
}

/// The base config with interception on and the CA in `ca_dir` (not created when missing).
fn intercepting_config(ca_dir: &Path) -> Config {
    let mut c = base_config();
    c.intercept.enabled = true;
    c.intercept.ca_dir = ca_dir.to_owned();
    choose_defaults(&mut c);
    Config::from_raw(c, "test config").unwrap()
}

#[tokio::test]
async fn the_ca_page_and_a_missing_or_expired_ca() {
    let origin_ca = TestCa::new();
    let i = intercepting(&origin_ca, 443, |c| {
        c.admin.listen = Some("127.0.0.1:0".into());
    })
    .await;
    let r = plain_get(format!("{}/ca", i.proxy.url())).await.unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    use rustls::pki_types::pem::PemObject as _;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(i.ca_pem.as_bytes()).unwrap();
    assert!(
        page.contains(&webrep::intercept::ca::fingerprint(&der)),
        "{page}"
    );
    assert!(
        page.contains("/ca.pem") && page.contains("Firefox"),
        "{page}"
    );
    let r = plain_get(format!("{}/ca.pem", i.proxy.url()))
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "application/x-pem-file");
    assert_eq!(r.text().await.unwrap(), i.ca_pem);
    // When the CA's validity ends, for alerting: /metrics and /stats.
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let not_after = cert.validity().not_after.timestamp();
    let metrics = scrape(i.proxy.admin.unwrap()).await;
    assert_eq!(
        sample(&metrics, "webrep_intercept_ca_expiry_timestamp_seconds"),
        not_after as f64
    );
    let stats = proxy_stats(&i.proxy).await;
    assert_eq!(stats["intercept_ca"]["not_after"], not_after, "{stats}");
    assert_eq!(
        stats["intercept_ca"]["fingerprint"],
        webrep::intercept::ca::fingerprint(&der)
    );
    assert!(stats["intercept_ca"]["problem"].is_null(), "{stats}");
    i.proxy.stop().await;

    // Interception on, no CA, not allowed to create one: the proxy does not start, and says why.
    let dir = tempfile::tempdir().unwrap();
    let config = intercepting_config(&dir.path().join("none"));
    let log = Arc::new(webrep::accesslog::AccessLog::with_writer(
        Box::new(std::io::sink()),
        webrep::config::AccessLogFormat::Json,
        1 << 16,
    ));
    let err = match webrep::app::proxy::ProxyApp::start(&config, log.clone()).await {
        Ok(_) => panic!("started without a CA"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("webrep ca init"), "{err}");

    // A CA that expired yesterday: its key matches, but clients would reject every leaf, so
    // the start-up self-test refuses it and says why.
    let expired = dir.path().join("expired");
    write_ca(
        &expired,
        time::OffsetDateTime::now_utc() - time::Duration::days(1),
    );
    let config = intercepting_config(&expired);
    let err = match webrep::app::proxy::ProxyApp::start(&config, log).await {
        Ok(_) => panic!("started with an expired CA"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("cannot sign certificates clients accept") && err.contains("not valid now"),
        "{err}"
    );
}

#[tokio::test]
async fn hosts_the_policy_tunnels_are_not_decrypted() {
    let origin_ca = TestCa::new();
    let origin = Origin::https(&origin_ca).await;
    let port = origin.addr.port();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "security_level: medium\ninterception:\n  default: intercept\n  tunnel_hosts: [localhost]\n",
    )
    .unwrap();
    let i = intercepting(&origin_ca, port, |c| c.policy.file = Some(policy)).await;
    // Tunnelled: the client sees the origin's own certificate (it trusts only the origin CA).
    let out = curl_https(&i.proxy, &origin_ca.ca_path, port).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello");
    let line = i.proxy.wait_log(|v| v["method"] == "CONNECT").await;
    assert_eq!(line["kind"], "tunnel", "{line}");
    // Another host on the same origin is decrypted.
    let tls = tls_through(&i.proxy, port, &i.ca_pem, None).await;
    assert!(leaf_names(&tls).0.contains("webrep interception CA"));
    drop(tls);
    i.proxy.stop().await;
}

/// The sample data's names resolve to 127.0.0.1 (no DNS).
fn sample_hosts() -> std::collections::BTreeMap<String, Vec<String>> {
    ["*.test", "*.example"]
        .map(|name| (name.to_owned(), vec!["127.0.0.1".to_owned()]))
        .into()
}

/// Blocks malware and phishing; intercepts everything but phishing.example.
const FILTER_POLICY: &str = "security_level: medium\nuntested: allow\ncategories:\n  actions:\n    malware: block\n    phishing: block\ninterception:\n  default: intercept\n  tunnel_hosts: [phishing.example]\n";

/// An intercepting, filtering proxy on the embedded default (the sample data) with
/// [`FILTER_POLICY`], and an HTTPS origin whose certificate covers the sample names used.
async fn filtering_interceptor() -> (Intercepting, Origin, tempfile::TempDir) {
    let origin_ca = TestCa::custom(
        &[
            "files.test",
            "malware.example",
            "news.example",
            "localhost",
            "127.0.0.1",
        ],
        false,
    );
    let origin = Origin::https(&origin_ca).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, FILTER_POLICY).unwrap();
    let i = intercepting(&origin_ca, origin.addr.port(), |c| {
        c.proxy.hosts = sample_hosts();
        c.policy.file = Some(file);
    })
    .await;
    (i, origin, dir)
}

#[tokio::test]
async fn a_blocked_path_on_an_allowed_https_host_gets_the_block_page() {
    let (i, origin, _dir) = filtering_interceptor().await;
    let port = origin.addr.port();
    let client = i.client(false);
    // files.test is safe; files.test/uploads/evil/ is dangerous (sample data).
    let r = client
        .get(format!("https://files.test:{port}/index.html"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.text().await.unwrap(), "hello");
    let seen = origin.stats.requests.load(Ordering::SeqCst);
    let r = client
        .get(format!("https://files.test:{port}/uploads/evil/tool.exe"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(
        (v["action"].as_str(), v["reason"].as_str()),
        (Some("block"), Some("risk"))
    );
    assert_eq!(v["category"], "malware");
    assert_eq!(
        origin.stats.requests.load(Ordering::SeqCst),
        seen,
        "the blocked path never reached the origin"
    );
    let ticket = v["ticket"].as_str().unwrap().to_owned();
    let line = i.proxy.wait_log(|l| l["id"] == ticket.as_str()).await;
    assert_eq!(
        line["url"],
        format!("https://files.test:{port}/uploads/evil/tool.exe")
    );
    assert_eq!(line["decision"]["action"], "block");
    i.proxy.stop().await;
}

#[tokio::test]
async fn bump_to_block_shows_the_page_without_an_upstream_connection() {
    let (i, origin, _dir) = filtering_interceptor().await;
    let port = origin.addr.port();
    // malware.example is refused and intercepted: the browser gets our certificate and the
    // block page over TLS; nothing connects to the origin.
    let r = i
        .client(false)
        .get(format!("https://malware.example:{port}/download"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let page = r.text().await.unwrap();
    assert!(
        page.contains("This site is blocked") && page.contains("malware"),
        "{page}"
    );
    assert!(
        page.contains(&format!("https://malware.example:{port}/download")),
        "{page}"
    );
    let connect = i
        .proxy
        .wait_log(|l| l["method"] == "CONNECT" && l["url"].as_str().unwrap().starts_with("malware"))
        .await;
    assert_eq!(connect["kind"], "intercepted", "{connect}");
    assert_eq!(connect["decision"]["action"], "block", "{connect}");
    assert!(connect["upstream"].is_null(), "{connect}");
    // Curl sees the same, trusting our CA.
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--noproxy", "", "--max-time", "30", "-x"])
        .arg(i.proxy.url())
        .arg("--cacert")
        .arg(&i.ca_path)
        .arg(format!("https://malware.example:{port}/"))
        .output()
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("webrep blocked this request"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // phishing.example is refused but not intercepted (tunnel_hosts): a plain 403.
    let reply = raw_exchange(
        i.proxy.addr,
        format!(
            "CONNECT phishing.example:{port} HTTP/1.1\r\nHost: phishing.example:{port}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
    assert!(reply.contains("block by policy: risk"), "{reply}");
    assert_eq!(
        origin.stats.connections.load(Ordering::SeqCst),
        0,
        "no upstream connection for refused hosts"
    );
    i.proxy.stop().await;
}

#[tokio::test]
async fn an_sni_naming_a_refused_host_is_not_served() {
    let (i, origin, _dir) = filtering_interceptor().await;
    let port = origin.addr.port();
    // CONNECT to an allowed target (127.0.0.1 is untested: allowed), SNI of a blocked host:
    // no certificate for it, the tunnel closes.
    let s = raw_connect(&i.proxy, port).await;
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject as _;
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(i.ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(webrep::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let r = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect("malware.example".try_into().unwrap(), s)
        .await;
    assert!(r.is_err(), "no handshake for a refused SNI");
    // An allowed SNI that differs from the CONNECT host is served (and logged).
    let tls = tls_through(&i.proxy, port, &i.ca_pem, Some("news.example")).await;
    assert!(
        leaf_names(&tls)
            .1
            .iter()
            .any(|n| n.contains("news.example"))
    );
    drop(tls);
    i.proxy.stop().await;
}

#[tokio::test]
async fn the_upstream_protocol_follows_what_the_client_speaks() {
    let origin_ca = TestCa::new();
    let origin = Origin::https_h2(&origin_ca).await;
    let port = origin.addr.port();
    let i = intercepting(&origin_ca, port, |_| {}).await;
    let url = format!("https://127.0.0.1:{port}/headers");
    for (http1_only, client_version, origin_version) in [
        (false, reqwest::Version::HTTP_2, "HTTP/2.0"),
        (true, reqwest::Version::HTTP_11, "HTTP/1.1"),
    ] {
        let r = i.client(http1_only).get(&url).send().await.unwrap();
        assert_eq!(r.version(), client_version);
        let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(v["version"], origin_version, "{v}");
    }
    i.proxy.stop().await;
}

#[tokio::test]
async fn the_upstream_handshake_starts_early_over_the_connection_the_connect_dialled() {
    let origin_ca = TestCa::new();
    let origin = Origin::https_h2(&origin_ca).await;
    let port = origin.addr.port();
    let url = format!("https://127.0.0.1:{port}/headers");
    // One worker: pools (and what is warm) are per worker.
    let i = intercepting(&origin_ca, port, |c| c.proxy.workers = 1).await;
    // Each client is a new tunnel. Its CONNECT dials the origin (before the 200); that very
    // connection carries the tunnel's first request, with the ALPN of the pool it went to:
    // one origin connection per tunnel.
    for (n, (http1_only, origin_version)) in [(true, "HTTP/1.1"), (false, "HTTP/2.0")]
        .into_iter()
        .enumerate()
    {
        let r = i.client(http1_only).get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(v["version"], origin_version, "{v}");
        assert_eq!(origin.stats.connections.load(Ordering::SeqCst), n + 1);
    }
    let stats = proxy_stats(&i.proxy).await;
    assert_eq!(
        stats["early_upstream"],
        serde_json::json!({ "started": 2, "used": 2, "kept": 0 })
    );
    // A third tunnel goes to a warm server: the pool holds a connection, so no early
    // handshake is started (it would be wasted). The CONNECT's own dial is closed unused
    // and the request takes the pooled connection (3 origin connections, not 4).
    let r = i.client(true).get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(origin.stats.connections.load(Ordering::SeqCst), 3);
    assert_eq!(proxy_stats(&i.proxy).await["early_upstream"]["started"], 2);
    i.proxy.stop().await;

    // Off: the CONNECT's connection is closed unused and the request dials its own.
    let origin = Origin::https_h2(&origin_ca).await;
    let port = origin.addr.port();
    let i = intercepting(&origin_ca, port, |c| c.intercept.early_upstream_ms = 0).await;
    let r = i
        .client(true)
        .get(format!("https://127.0.0.1:{port}/headers"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(origin.stats.connections.load(Ordering::SeqCst), 2);
    assert!(proxy_stats(&i.proxy).await["early_upstream"].is_null());
    i.proxy.stop().await;

    // A tunnel that never sends a request: its early connection is let go after the keep time.
    let i = intercepting(&origin_ca, port, |c| c.intercept.early_upstream_ms = 100).await;
    let tls = tls_through(&i.proxy, port, &i.ca_pem, None).await;
    let stats = eventually_ok("the early connection is let go", BOUND, || async {
        let stats = proxy_stats(&i.proxy).await;
        if stats["early_upstream"]["kept"] == 0 {
            Ok(stats)
        } else {
            Err(stats)
        }
    })
    .await;
    assert_eq!(
        stats["early_upstream"],
        serde_json::json!({ "started": 1, "used": 0, "kept": 0 })
    );
    drop(tls);
    i.proxy.stop().await;
}

/// `curl` through the proxy to `url` with `args` (HTTP/1.1 or 2), trusting `cacert`: the
/// status line, headers and body.
async fn curl_inner(proxy: &TestProxy, cacert: &Path, url: &str, args: &[&str]) -> String {
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "-i",
            "--suppress-connect-headers",
            "--noproxy",
            "",
            "--max-time",
            "30",
        ])
        .arg("-x")
        .arg(proxy.url())
        .arg("--cacert")
        .arg(cacert)
        .args(args)
        .arg(url)
        .output()
        .await
        .expect("curl runs");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn inner_requests_reach_the_origin_with_the_authority_the_client_wrote() {
    let origin_ca = TestCa::new();
    let origin = Origin::https(&origin_ca).await;
    let port = origin.addr.port();
    let i = intercepting(&origin_ca, port, |_| {}).await;
    // The tunnel is to localhost:PORT; the client names it in its own spelling, as HTTP/1.1
    // Host and as HTTP/2 :authority. The origin gets it as written (a signature over the
    // Host header stays valid), not the tunnel's spelling.
    let written = format!("LocalHost:{port}");
    for version in ["--http1.1", "--http2"] {
        let out = curl_inner(
            &i.proxy,
            &i.ca_path,
            &format!("https://localhost:{port}/headers"),
            &[version, "-H", &format!("Host: {written}")],
        )
        .await;
        assert!(out.starts_with("HTTP/"), "{out}");
        let body = &out[out.find("\r\n\r\n").unwrap() + 4..];
        let seen: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            seen["headers"]["host"],
            serde_json::json!([written]),
            "{version}"
        );
    }
    // Without a Host of its own spelling the client's authority is the URL's.
    let r = i
        .client(false)
        .get(format!("https://localhost:{port}/headers"))
        .send()
        .await
        .unwrap();
    let seen: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(
        seen["headers"]["host"],
        serde_json::json!([format!("localhost:{port}")])
    );
    i.proxy.stop().await;
}

#[tokio::test]
async fn a_request_for_another_origin_inside_a_tunnel_is_421() {
    let origin_ca = TestCa::new();
    let origin = Origin::https(&origin_ca).await;
    let port = origin.addr.port();
    let i = intercepting(&origin_ca, port, |_| {}).await;
    let before = origin.stats.requests.load(Ordering::SeqCst);
    for args in [
        vec!["--http1.1", "-H", "Host: other.example"],
        vec!["--http2", "-H", "Host: other.example"],
        // The tunnel's host on another port is another origin.
        vec!["--http1.1", "-H", "Host: localhost:1"],
        // An absolute-form target inside the tunnel.
        vec!["--http1.1", "--request-target", "https://other.example/"],
    ] {
        let url = format!("https://localhost:{port}/");
        let out = curl_inner(&i.proxy, &i.ca_path, &url, &args).await;
        let status = out.split(' ').nth(1).unwrap_or_default();
        assert_eq!(status, "421", "{args:?}: {out}");
    }
    assert_eq!(
        origin.stats.requests.load(Ordering::SeqCst),
        before,
        "nothing went to the tunnel's origin"
    );
    i.proxy.stop().await;
}

#[tokio::test]
async fn the_filter_judges_the_other_origin_a_request_inside_a_tunnel_names() {
    let (i, origin, _dir) = filtering_interceptor().await;
    let port = origin.addr.port();
    // A tunnel to files.test (allowed) carrying a request for malware.example: its page; for
    // news.example (allowed): 421, so the browser asks for it on its own connection.
    let url = format!("https://files.test:{port}/");
    for (other, status) in [("malware.example", "403"), ("news.example", "421")] {
        let host = format!("Host: {other}:{port}");
        let out = curl_inner(&i.proxy, &i.ca_path, &url, &["-H", &host]).await;
        assert_eq!(out.split(' ').nth(1), Some(status), "{other}: {out}");
    }
    let line = i
        .proxy
        .wait_log(|l| l["url"] == format!("https://malware.example:{port}/"))
        .await;
    assert_eq!(line["decision"]["action"], "block", "{line}");
    assert_eq!(origin.stats.requests.load(Ordering::SeqCst), 0);
    i.proxy.stop().await;
}

#[tokio::test]
async fn squid_lines_tell_warn_from_block_and_log_local_pages_with_absolute_urls() {
    let origin_ca = TestCa::custom(&["malware.example", "news.example"], false);
    let origin = Origin::https(&origin_ca).await;
    let port = origin.addr.port();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    let policy = FILTER_POLICY.replace(
        "    malware: block\n",
        "    malware: block\n    news: warn\n",
    );
    std::fs::write(&file, policy).unwrap();
    let i = intercepting(&origin_ca, port, |c| {
        c.proxy.hosts = sample_hosts();
        c.policy.file = Some(file);
        c.access_log.format = webrep::config::AccessLogFormat::Squid;
    })
    .await;
    // Each client is dropped after its request: that closes its tunnel, whose line is written
    // when it closes.
    // malware.example: refused, intercepted only to show the block page.
    let client = i.client(false);
    let r = client
        .get(format!("https://malware.example:{port}/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    drop((r, client));
    let connect = i
        .proxy
        .wait_squid_line(|f| f.get(5) == Some(&"CONNECT") && f[6].starts_with("malware"))
        .await;
    assert_eq!(connect[3], "TCP_DENIED/200", "{connect:?}");
    let inner = i
        .proxy
        .wait_squid_line(|f| {
            f.get(6) == Some(&format!("https://malware.example:{port}/x").as_str())
        })
        .await;
    assert_eq!(inner[3], "TCP_DENIED/403", "{inner:?}");
    // news.example: warned; the warn page is not a block.
    let client = i.client(false);
    let r = client
        .get(format!("https://news.example:{port}/y"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    drop((r, client));
    let warned = i
        .proxy
        .wait_squid_line(|f| f.get(6) == Some(&format!("https://news.example:{port}/y").as_str()))
        .await;
    assert_eq!(warned[3], "TCP_DENIED_WARN/403", "{warned:?}");
    let connect = i
        .proxy
        .wait_squid_line(|f| f.get(5) == Some(&"CONNECT") && f[6].starts_with("news"))
        .await;
    assert_eq!(connect[3], "TCP_DENIED_WARN/200", "{connect:?}");
    // Local pages asked of the proxy directly log as absolute URLs.
    for path in ["/proxy.pac", "/ca"] {
        let r = plain_get(format!("{}{path}", i.proxy.url())).await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let want = format!("{}{path}", i.proxy.url());
        let line = i
            .proxy
            .wait_squid_line(|f| f.get(6) == Some(&want.as_str()))
            .await;
        assert_eq!(line[3], "NONE_NONE/200", "{line:?}");
    }
    i.proxy.stop().await;
}
