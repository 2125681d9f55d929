//! Test harness: in-process origins (HTTP and TLS with a test CA) on 127.0.0.1:0 that count
//! what they see, the real proxy in-process, the real reputation server in-process
//! ([`RepServer`]), the real binary as a child process ([`Webrep`]), real clients, and bounded
//! polling ([`eventually`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt as _, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use webrep::accesslog::AccessLog;
use webrep::config::Config;
use webrep::config::RawConfig;
use webrep::config::raw::RawReputationSource;

mod poll;
mod process;
mod rep_server;

pub(crate) use poll::*;
pub(crate) use process::*;
pub(crate) use rep_server::*;

pub(crate) type TestBody = BoxBody<Bytes, Infallible>;

pub(crate) fn init_crypto() {
    webrep::tls::install_default();
}

/// A CA made for one test run, and a leaf for 127.0.0.1 / localhost.
pub(crate) struct TestCa {
    pub ca_pem: String,
    pub leaf_chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    pub leaf_key: rustls::pki_types::PrivateKeyDer<'static>,
    _dir: tempfile::TempDir,
    pub ca_path: PathBuf,
}

impl TestCa {
    pub(crate) fn new() -> Self {
        Self::custom(&["localhost", "127.0.0.1"], false)
    }

    /// A CA with a leaf for `names`, expired when `expired`.
    pub(crate) fn custom(names: &[&str], expired: bool) -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.distinguished_name
            .push(DnType::CommonName, "webrep test CA");
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap();
        let mut lp =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        lp.distinguished_name.push(DnType::CommonName, names[0]);
        if expired {
            let now = time::OffsetDateTime::now_utc();
            lp.not_before = now - time::Duration::days(30);
            lp.not_after = now - time::Duration::days(1);
        }
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = lp.signed_by(&leaf_key, &ca).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca.pem()).unwrap();
        Self {
            ca_pem: ca.pem(),
            leaf_chain: vec![leaf.der().clone(), ca.der().clone()],
            leaf_key: rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
            _dir: dir,
            ca_path,
        }
    }

    pub(crate) fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let provider = webrep::tls::provider();
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(self.leaf_chain.clone(), self.leaf_key.clone_key())
            .unwrap();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(cfg)
    }
}

/// What an origin has seen.
#[derive(Default)]
pub(crate) struct OriginStats {
    pub connections: AtomicUsize,
    pub requests: AtomicUsize,
    /// `/slow` waits on this before sending the rest of its body.
    pub gate: Notify,
    /// Signalled when `/slow` has sent its first chunk.
    pub slow_started: Notify,
}

/// An origin server on 127.0.0.1:0 (plain HTTP, or TLS with `ca`).
pub(crate) struct Origin {
    pub addr: SocketAddr,
    pub stats: Arc<OriginStats>,
    stop: CancellationToken,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Origin {
    pub(crate) async fn http() -> Self {
        Self::start(None).await
    }

    pub(crate) async fn https(ca: &TestCa) -> Self {
        Self::start(Some(tokio_rustls::TlsAcceptor::from(ca.server_config()))).await
    }

    /// A TLS origin that offers ALPN `h2` and `http/1.1` and serves either.
    pub(crate) async fn https_h2(ca: &TestCa) -> Self {
        let mut cfg = (*ca.server_config()).clone();
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Self::start(Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))).await
    }

    async fn start(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(OriginStats::default());
        let stop = CancellationToken::new();
        let (s, st) = (stats.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
                    _ = st.cancelled() => return,
                };
                s.connections.fetch_add(1, Ordering::SeqCst);
                let s = s.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| origin_handler(req, s.clone()));
                    let builder = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(tcp), svc)
                                .with_upgrades()
                                .await;
                        }
                        Some(acc) => {
                            let Ok(t) = acc.accept(tcp).await else { return };
                            if t.get_ref().1.alpn_protocol() == Some(b"h2") {
                                let _ = hyper::server::conn::http2::Builder::new(
                                    hyper_util::rt::TokioExecutor::new(),
                                )
                                .serve_connection(TokioIo::new(t), svc)
                                .await;
                            } else {
                                let _ = builder
                                    .serve_connection(TokioIo::new(t), svc)
                                    .with_upgrades()
                                    .await;
                            }
                        }
                    }
                });
            }
        });
        Self { addr, stats, stop }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

fn full(b: impl Into<Bytes>) -> TestBody {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

/// Streams `n` bytes of a repeating pattern in 64 KiB chunks (no Content-Length: chunked).
fn pattern_stream(n: usize) -> TestBody {
    let chunks = futures_util::stream::unfold(0usize, move |sent| async move {
        if sent >= n {
            return None;
        }
        let len = (n - sent).min(64 * 1024);
        let chunk: Vec<u8> = (sent..sent + len).map(|i| (i % 251) as u8).collect();
        Some((
            Ok::<_, Infallible>(Frame::data(Bytes::from(chunk))),
            sent + len,
        ))
    });
    http_body_util::BodyExt::boxed(StreamBody::new(chunks))
}

/// A streamed (chunked) request body of `n` pattern bytes in `chunk`-sized pieces, generated
/// as it is sent, never held whole.
pub(crate) fn pattern_upload(n: usize, chunk: usize) -> reqwest::Body {
    let chunks = futures_util::stream::iter((0..n).step_by(chunk).map(move |start| {
        let end = (start + chunk).min(n);
        Ok::<_, std::io::Error>((start..end).map(pattern_byte).collect::<Vec<u8>>())
    }));
    reqwest::Body::wrap_stream(chunks)
}

/// The bytes the origin serves at `/download/N/SEED`: distinct files for distinct seeds.
pub(crate) fn download_bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| pattern_byte(i) ^ seed).collect()
}

/// The byte at offset `i` of [`pattern_stream`].
pub(crate) fn pattern_byte(i: usize) -> u8 {
    (i % 251) as u8
}

async fn origin_handler(
    mut req: Request<Incoming>,
    stats: Arc<OriginStats>,
) -> Result<Response<TestBody>, Infallible> {
    stats.requests.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path().to_owned();
    let resp = if path == "/headers" {
        // Echo the request head as JSON.
        let mut h = serde_json::Map::new();
        for (k, v) in req.headers() {
            let entry = h
                .entry(k.as_str().to_owned())
                .or_insert_with(|| serde_json::Value::Array(vec![]));
            entry
                .as_array_mut()
                .unwrap()
                .push(String::from_utf8_lossy(v.as_bytes()).into());
        }
        let body = serde_json::json!({
            "method": req.method().as_str(),
            "uri": req.uri().to_string(),
            "version": format!("{:?}", req.version()),
            "headers": h,
        });
        Response::new(full(body.to_string()))
    } else if let Some(n) = path.strip_prefix("/bytes/") {
        let n: usize = n.parse().unwrap();
        Response::new(pattern_stream(n))
    } else if let Some(rest) = path.strip_prefix("/download/") {
        // `/download/N/SEED`: N bytes of [`download_bytes`], as an attachment, with a
        // Content-Length (`/download-chunked/...` below streams the same bytes unsized).
        let (n, seed) = rest.split_once('/').unwrap();
        let body = download_bytes(n.parse().unwrap(), seed.parse().unwrap());
        Response::builder()
            .header("content-type", "application/octet-stream")
            .header("content-disposition", "attachment; filename=\"f.bin\"")
            .body(full(body))
            .unwrap()
    } else if let Some(rest) = path.strip_prefix("/download-chunked/") {
        let (n, seed) = rest.split_once('/').unwrap();
        let (n, seed): (usize, u8) = (n.parse().unwrap(), seed.parse().unwrap());
        let chunks = futures_util::stream::iter(
            download_bytes(n, seed)
                .chunks(16 * 1024)
                .map(|c| Ok::<_, Infallible>(Frame::data(Bytes::copy_from_slice(c))))
                .collect::<Vec<_>>(),
        );
        Response::builder()
            .header("content-type", "application/octet-stream")
            .body(http_body_util::BodyExt::boxed(StreamBody::new(chunks)))
            .unwrap()
    } else if path == "/upload" {
        // Count the body and check it against the pattern, without collecting it.
        let mut body = req.into_body();
        let mut count = 0usize;
        let mut ok = true;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                ok = false;
                break;
            };
            if let Some(d) = frame.data_ref() {
                for (j, b) in d.iter().enumerate() {
                    if *b != pattern_byte(count + j) {
                        ok = false;
                    }
                }
                count += d.len();
            }
        }
        Response::new(full(format!(
            "{count} {}",
            if ok { "ok" } else { "corrupt" }
        )))
    } else if path == "/hop" {
        Response::builder()
            .header("connection", "x-resp-secret")
            .header("x-resp-secret", "1")
            .header("keep-alive", "timeout=5")
            .header("proxy-authenticate", "Basic realm=\"upstream\"")
            .header("x-resp-kept", "yes")
            .body(full("hop"))
            .unwrap()
    } else if path == "/slow" {
        let s = stats.clone();
        let chunks = futures_util::stream::unfold(0u8, move |state| {
            let s = s.clone();
            async move {
                match state {
                    0 => Some((
                        Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"first;"))),
                        1,
                    )),
                    1 => {
                        s.slow_started.notify_one();
                        s.gate.notified().await;
                        Some((Ok(Frame::data(Bytes::from_static(b"second"))), 2))
                    }
                    _ => None,
                }
            }
        });
        Response::new(http_body_util::BodyExt::boxed(StreamBody::new(chunks)))
    } else if path == "/hang" {
        // Never answers (until the test ends): for the response-header deadline.
        stats.gate.notified().await;
        Response::new(full("late"))
    } else if path == "/ws" {
        let key = req
            .headers()
            .get("sec-websocket-key")
            .map(|k| tokio_tungstenite::tungstenite::handshake::derive_accept_key(k.as_bytes()))
            .unwrap_or_default();
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on_upgrade.await {
                let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                    TokioIo::new(up),
                    tokio_tungstenite::tungstenite::protocol::Role::Server,
                    None,
                )
                .await;
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() || msg.is_binary() {
                        if ws.send(msg).await.is_err() {
                            break;
                        }
                    } else if msg.is_close() {
                        break;
                    }
                }
            }
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", key)
            .body(full(""))
            .unwrap()
    } else {
        Response::new(full("hello"))
    };
    Ok(resp)
}

/// The real proxy, in-process, on 127.0.0.1:0.
pub(crate) struct TestProxy {
    pub addr: SocketAddr,
    /// The admin listener (`/metrics`, `/stats`): on 127.0.0.1:0 unless the test turned it
    /// off or chose another address.
    pub admin: Option<SocketAddr>,
    pub state: Arc<webrep::proxy::ProxyState>,
    token: CancellationToken,
    handle: Option<tokio::task::JoinHandle<()>>,
    access_log: Arc<AccessLog>,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

/// The base config of test proxies as YAML, for tests that write a config file for the
/// binary: loopback origins are allowed (they are all we have). [`base_config`] is the same
/// as typed values.
pub(crate) const BASE: &str = "proxy:\n  listen: [\"127.0.0.1:0\"]\n  via_name: webrep-test\n  destinations:\n    allow_internal: true\n";

/// `yaml` with the built-in policy and the in-process sample reputation server named when it
/// names no `policy:` or no `reputation:` section: a config file must choose both (the proxy
/// refuses to start otherwise), and most tests want these two.
pub(crate) fn with_choices(yaml: &str) -> String {
    let mut out = yaml.to_owned();
    if !yaml.lines().any(|l| l.starts_with("policy:")) {
        out.push_str("policy:\n  builtin: default\n");
    }
    if !yaml.lines().any(|l| l.starts_with("reputation:")) {
        out.push_str("reputation:\n  embedded_sample: true\n");
    }
    out
}

/// [`with_choices`] for typed values: the built-in policy when `raw` names no policy file,
/// the sample server when it lists no reputation source.
pub(crate) fn choose_defaults(raw: &mut RawConfig) {
    if raw.policy.file.is_none() && raw.policy.builtin.is_none() {
        raw.policy.builtin = Some(webrep::config::BuiltinPolicy::Default);
    }
    if raw.reputation.sources.is_empty() {
        raw.reputation.embedded_sample = true;
    }
}

/// [`BASE`] as typed values: where the config of every in-process test proxy starts.
pub(crate) fn base_config() -> RawConfig {
    let mut c = RawConfig::default();
    c.proxy.listen = vec!["127.0.0.1:0".into()];
    c.proxy.via_name = Some("webrep-test".into());
    c.proxy.destinations.allow_internal = true;
    c
}

/// A reputation source at `url` with the [`CLIENT`] token; other keys at their defaults
/// (no name, a 500 ms timeout).
pub(crate) fn source(url: &str) -> RawReputationSource {
    RawReputationSource {
        name: None,
        url: url.to_owned(),
        token: Some(CLIENT.to_owned()),
        token_file: None,
        ca_file: None,
        timeout_ms: 500,
    }
}

impl TestProxy {
    /// Starts a proxy on [`base_config`] with what `start_with` adds, and nothing else.
    pub(crate) async fn start_default() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a proxy on [`base_config`] plus a feedback spool in the proxy's own temporary
    /// directory (never the working tree) and an admin listener on 127.0.0.1:0 for the
    /// counters (`/stats`, `/metrics`); then `edit` sets what the test needs, and may change
    /// those two as well.
    pub(crate) async fn start_with(edit: impl FnOnce(&mut RawConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut raw = base_config();
        raw.feedback.spool_dir = dir.path().join("feedback-spool");
        raw.admin.listen = Some("127.0.0.1:0".into());
        edit(&mut raw);
        choose_defaults(&mut raw);
        let format = raw.access_log.format;
        let config = Config::from_raw(raw, "test config").expect("test config is valid");
        let log_path = dir.path().join("access.log");
        let file = std::fs::File::create(&log_path).unwrap();
        let access_log = Arc::new(AccessLog::with_writer(Box::new(file), format, 1 << 20));
        let proxy = webrep::app::proxy::ProxyApp::start(&config, access_log.clone())
            .await
            .unwrap();
        let addr = proxy.local_addrs()[0];
        let admin = proxy.admin_addr();
        let state = proxy.state();
        let token = CancellationToken::new();
        let handle = tokio::spawn(proxy.run(token.clone(), webrep::shutdown::Reloads::none()));
        Self {
            addr,
            admin,
            state,
            token,
            handle: Some(handle),
            access_log,
            log_path,
            _dir: dir,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A reqwest client that uses this proxy for everything and trusts only `ca`.
    pub(crate) fn client(&self, ca: Option<&TestCa>) -> reqwest::Client {
        init_crypto();
        let mut b = reqwest::Client::builder()
            .proxy(reqwest::Proxy::all(self.url()).unwrap())
            .timeout(Duration::from_secs(60));
        if let Some(ca) = ca {
            b = b.tls_certs_only([reqwest::Certificate::from_pem(ca.ca_pem.as_bytes()).unwrap()]);
        }
        b.build().unwrap()
    }

    /// The access log so far.
    pub(crate) fn access_log_text(&self) -> String {
        self.access_log.flush(Duration::from_secs(5));
        std::fs::read_to_string(&self.log_path).unwrap()
    }

    /// Waits (bounded) until a Squid-format access-log line (the proxy was started with
    /// `access_log.format: squid`) satisfies `pred` on its fields, and returns the fields.
    pub(crate) async fn wait_squid_line(&self, pred: impl Fn(&[&str]) -> bool) -> Vec<String> {
        eventually_ok("a matching Squid access log line", BOUND, || {
            let text = self.access_log_text();
            let found = text
                .lines()
                .map(|line| {
                    line.split(' ')
                        .filter(|f| !f.is_empty())
                        .collect::<Vec<_>>()
                })
                .find(|f| pred(f))
                .map(|f| f.into_iter().map(str::to_owned).collect());
            std::future::ready(found.ok_or(text))
        })
        .await
    }

    /// Waits (bounded) until an access-log line satisfies `pred`, and returns it.
    pub(crate) async fn wait_log(
        &self,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        eventually_ok("a matching access log line", BOUND, || {
            let text = self.access_log_text();
            let found = text
                .lines()
                .map(|line| serde_json::from_str(line).expect("log line is JSON"))
                .find(|v| pred(v));
            std::future::ready(found.ok_or(text))
        })
        .await
    }

    /// Waits (bounded) until the reputation change follower has applied its first answer,
    /// which drops the whole cache (the follower's position is new; counted in
    /// `cache_drops`), so a test
    /// that relies on an answer staying cached, for example across a server outage, waits
    /// for it before its first request. Otherwise the drop can land after that request on a
    /// slow machine, and the "cached" host is looked up again while the server is down.
    pub(crate) async fn following_changes(&self) {
        let rep = &self
            .state
            .filter
            .as_ref()
            .expect("filtering is on")
            .reputation;
        eventually("the change follower applies an answer", BOUND, || async {
            rep.cache_drops.load(Ordering::Relaxed) > 0
        })
        .await;
    }

    pub(crate) async fn stop(mut self) {
        self.token.cancel();
        if let Some(h) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(30), h)
                .await
                .expect("proxy drains within 30 s")
                .unwrap();
        }
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// Sends raw bytes to `addr` and reads until the peer closes or `limit` bytes arrived.
pub(crate) async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    read_head(&mut s).await
}

/// A WebSocket upgrade of `origin`'s `/ws` through the proxy at `proxy` (absolute-form, with
/// the RFC 6455 sample key): the response head, which must be a 101, and the client's
/// WebSocket over that connection.
pub(crate) async fn websocket_through(
    proxy: SocketAddr,
    origin: &Origin,
) -> (String, tokio_tungstenite::WebSocketStream<TcpStream>) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        origin.url("/ws"),
        origin.addr
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        s,
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    (head, ws)
}

/// Reads one response head (up to the blank line) from `s`.
pub(crate) async fn read_head(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while let Ok(Ok(1)) = tokio::time::timeout(Duration::from_secs(30), s.read(&mut byte)).await {
        buf.push(byte[0]);
        if buf.ends_with(b"\r\n\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// An origin that answers every request (heads without bodies) of each connection with the
/// raw bytes `answer`, and hands each request head it read to the test: header case as it
/// came off the wire.
pub(crate) async fn raw_origin(
    answer: &'static [u8],
) -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                loop {
                    let head = read_head(&mut s).await;
                    if head.is_empty() {
                        return;
                    }
                    let _ = tx.send(head);
                    if s.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// The proxy's `/stats` page (on its admin listener).
pub(crate) async fn proxy_stats(proxy: &TestProxy) -> serde_json::Value {
    stats_at(proxy.admin.expect("the test proxy has an admin listener")).await
}

/// `/stats` of the admin listener at `admin`.
pub(crate) async fn stats_at(admin: std::net::SocketAddr) -> serde_json::Value {
    let text = plain_get(format!("http://{admin}/stats"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// `GET /metrics` on `addr`, checked to be OpenMetrics text.
pub(crate) async fn scrape(addr: std::net::SocketAddr) -> String {
    let r = plain_get(format!("http://{addr}/metrics")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = r.text().await.unwrap();
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    text
}

/// The value of the sample `name{labels}` in scraped `text`.
pub(crate) fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

/// Writes an interception CA into the new directory `dir` (`ca.pem`, `ca-key.pem` mode 600),
/// valid from 30 days ago until `not_after`.
pub(crate) fn write_ca(dir: &std::path::Path, not_after: time::OffsetDateTime) {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::create_dir(dir).unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "webrep test interception CA");
    p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    p.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(30);
    p.not_after = not_after;
    let key = rcgen::KeyPair::generate().unwrap();
    std::fs::write(dir.join("ca.pem"), p.self_signed(&key).unwrap().pem()).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dir.join("ca-key.pem"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, key.serialize_pem().as_bytes()))
        .unwrap();
}

/// A port on 127.0.0.1 where nothing listens.
pub(crate) async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

/// A GET without any proxy (for the proxy's own pages).
pub(crate) async fn plain_get(url: String) -> reqwest::Result<reqwest::Response> {
    init_crypto();
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(url)
        .send()
        .await
}

/// The body of a GET without any proxy.
pub(crate) async fn plain_text(url: String) -> String {
    plain_get(url).await.unwrap().text().await.unwrap()
}

/// A response's status and its body parsed as JSON.
pub(crate) async fn status_and_json(r: reqwest::Response) -> (u16, serde_json::Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, v)
}

#[test]
fn the_typed_base_config_is_the_yaml_one() {
    let yaml: RawConfig = webrep::yaml::from_yaml_str(BASE).unwrap();
    assert_eq!(yaml, base_config());
}

/// 403 with `destination_ip_prohibited`, for a plain request and a CONNECT to `authority`.
pub(crate) async fn assert_destination_refused(proxy: &TestProxy, authority: &str) {
    let r = proxy
        .client(None)
        .get(format!("http://{authority}/latest/meta-data/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "{authority}");
    let ps = r.headers()["proxy-status"].to_str().unwrap().to_owned();
    assert!(
        ps.contains("error=destination_ip_prohibited"),
        "{authority}: {ps}"
    );
    let head = raw_exchange(
        proxy.addr,
        format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(
        head.starts_with("HTTP/1.1 403"),
        "CONNECT {authority}: {head}"
    );
    assert!(
        head.contains("error=destination_ip_prohibited"),
        "CONNECT {authority}: {head}"
    );
}
