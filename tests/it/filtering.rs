//! Filtering end to end: the real proxy, the real reputation server (in-process, on
//! 127.0.0.1:0), a policy file, in-process origins, reqwest, curl and raw sockets.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::harness::*;
use webrep::repserver::api::{self, ApiConfig, Tokens};
use webrep::repserver::client::RepClient;
use webrep::repserver::store::Store;

const CLIENT: &str = "client-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";

struct RepServer {
    base: String,
    admin: RepClient,
    stop: CancellationToken,
}

impl RepServer {
    async fn start(entries: Value) -> RepServer {
        init_crypto();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        tokio::spawn(api::serve(
            listener,
            Store::open_in_memory().unwrap(),
            Tokens {
                client: vec![CLIENT.into()],
                admin: vec![ADMIN.into()],
            },
            ApiConfig::default(),
            stop.clone(),
        ));
        let s = RepServer {
            admin: RepClient::new(&base, ADMIN, None).unwrap(),
            base,
            stop,
        };
        s.admin
            .post_json("/v1/entries", &entries, Duration::from_secs(10))
            .await
            .unwrap();
        s
    }

    async fn lookups(&self) -> u64 {
        let v = self
            .admin
            .get("/healthz", Duration::from_secs(10))
            .await
            .unwrap();
        v["lookups"].as_u64().unwrap()
    }
}

impl Drop for RepServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A filtering proxy: `policy` is the policy file's text; sources are the given servers.
async fn filtering_proxy(policy: &str, servers: &[&str], dir: &std::path::Path) -> TestProxy {
    let file = dir.join("policy.yaml");
    std::fs::write(&file, policy).unwrap();
    let sources: String = servers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            format!("    - {{ name: s{i}, url: \"{s}\", token: \"{CLIENT}\", timeout_ms: 1000 }}\n")
        })
        .collect();
    TestProxy::start(
        "",
        &format!(
            "policy:\n  enabled: true\n  file: {:?}\nreputation:\n  retry_after_ms: 60000\n  sources:\n{sources}",
            file.display().to_string()
        ),
    )
    .await
}

const POLICY: &str = "security_level: medium\nuntested: allow\nlists:\n  blocked:\n    - listed-bad.test\n    - 127.0.0.1/private/\n  approved:\n    - approved.test\n";

fn entries() -> Value {
    json!({ "upsert": [
        { "key": "127.0.0.1/", "score": 95, "categories": ["technology"] },
        { "key": "127.0.0.1/dl/", "score": 4, "categories": ["malware"] },
        { "key": "danger.test/", "score": 10, "categories": ["malware"] },
        { "key": "hs.test/", "score": 60, "categories": ["phishing"] },
        { "key": "susp.test/", "score": 75, "categories": ["spam"] },
        { "key": "safe.test/", "score": 95, "categories": ["news"] },
        { "key": "approved.test/", "score": 1, "categories": ["malware"] },
    ]})
}

/// The JSON form of the page for `url`, which must be a 403.
async fn json_page(client: &reqwest::Client, url: &str) -> Value {
    let r = client
        .get(url)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "{url}");
    serde_json::from_str(&r.text().await.unwrap()).unwrap()
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, String) {
    let r = client
        .get(url)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn requests_are_decided_by_reputation_lists_and_paths() {
    let origin = Origin::http().await;
    let server = RepServer::start(entries()).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = filtering_proxy(POLICY, &[&server.base], dir.path()).await;
    let client = proxy.client(None);

    // A safe host is forwarded; a dangerous path on it is blocked before the origin sees it.
    let (status, body) = get(&client, &origin.url("/index.html")).await;
    assert_eq!((status, body.as_str()), (200, "hello"));
    let before = origin.stats.requests.load(Ordering::SeqCst);
    let (status, page) = get(&client, &origin.url("/dl/tool.exe")).await;
    assert_eq!(status, 403, "{page}");
    assert!(
        page.contains("dangerous") && page.contains("malware"),
        "{page}"
    );
    assert!(page.contains("Ticket"), "{page}");
    // Blocked by the list, no lookup needed.
    let (status, page) = get(&client, &origin.url("/private/x")).await;
    assert_eq!(status, 403);
    assert!(page.contains("blocked list"), "{page}");
    assert_eq!(
        origin.stats.requests.load(Ordering::SeqCst),
        before,
        "nothing reached the origin"
    );

    // Risk levels under the medium level: dangerous and highly suspicious are blocked;
    // suspicious, safe and untested pass the filter (and then fail DNS: 502, not 403).
    for (url, blocked) in [
        ("http://danger.test/", true),
        ("http://hs.test/a", true),
        ("http://susp.test/", false),
        ("http://safe.test/", false),
        ("http://nobody-knows.test/", false),
    ] {
        let (status, page) = get(&client, url).await;
        assert_eq!(status == 403, blocked, "{url}: {status} {page}");
    }
    // Lists win without asking the server.
    let lookups = server.lookups().await;
    let (status, _) = get(&client, "http://www.listed-bad.test/").await;
    assert_eq!(status, 403);
    let (status, _) = get(&client, "http://approved.test/").await;
    assert_ne!(status, 403, "approved beats a dangerous reputation");
    assert_eq!(server.lookups().await, lookups, "no lookup for list hits");

    // Many spellings of one blocked URL.
    for url in [
        "http://DANGER.TEST/",
        "http://danger.test./",
        "http://danger.test/a/../",
        "http://danger.test/%2e/x",
        "http://user:pw@danger.test:80/",
        "http://www.danger.test/",
        "http://danger.test/?q=%41",
    ] {
        let (status, _) = get(&client, url).await;
        assert_eq!(status, 403, "{url}");
    }

    // The page: JSON and plain text for non-browsers, nothing echoed unescaped.
    let r = client
        .get("http://danger.test/<script>alert(1)</script>")
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    let html = r.text().await.unwrap();
    assert!(!html.contains("<script>"), "{html}");
    let v = json_page(&client, "http://danger.test/").await;
    assert_eq!(
        (v["action"].as_str(), v["reason"].as_str()),
        (Some("block"), Some("risk"))
    );
    let ticket = v["ticket"].as_str().unwrap().to_owned();
    // The ticket is the request id of the access-log line.
    let line = proxy.wait_log(|l| l["id"] == ticket.as_str()).await;
    assert_eq!(line["status"], 403);
    let out = tokio::process::Command::new("curl")
        .args(["-s", "--noproxy", "", "-x"])
        .arg(proxy.url())
        .arg("http://danger.test/")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("webrep blocked this request"), "{text}");
    proxy.stop().await;
}

#[tokio::test]
async fn a_blocked_host_over_connect_is_refused_before_any_upstream_connection() {
    let server = RepServer::start(json!({ "upsert": [
        { "key": "127.0.0.1/", "score": 3, "categories": ["malware"] },
    ]}))
    .await;
    let ca = TestCa::new();
    let origin = Origin::https(&ca).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, POLICY).unwrap();
    let proxy = TestProxy::start(
        &format!("  connect_ports: [{}]\n", origin.addr.port()),
        &format!(
            "policy:\n  enabled: true\n  file: {:?}\nreputation:\n  sources:\n    - {{ url: \"{}\", token: \"{CLIENT}\" }}\n",
            file.display().to_string(),
            server.base
        ),
    )
    .await;
    let reply = raw_exchange(
        proxy.addr,
        format!(
            "CONNECT 127.0.0.1:{0} HTTP/1.1\r\nHost: 127.0.0.1:{0}\r\n\r\n",
            origin.addr.port()
        )
        .as_bytes(),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
    assert!(reply.contains("http_request_denied"), "{reply}");
    assert_eq!(
        origin.stats.connections.load(Ordering::SeqCst),
        0,
        "no upstream connection"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn no_reputation_follows_the_fail_mode_and_says_so() {
    // Nothing listens there: no source answers.
    let base = format!("http://127.0.0.1:{}", closed_port().await);
    let dir = tempfile::tempdir().unwrap();
    let strict = "security_level: medium\nreputation_unavailable:\n  action: block\n";
    let proxy = filtering_proxy(strict, &[&base], dir.path()).await;
    let client = proxy.client(None);
    let (status, page) = get(&client, "http://anything.test/").await;
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("could not be reached"), "{page}");
    proxy.stop().await;
    // The default fail mode (allow) lets it through the filter.
    let proxy = filtering_proxy("security_level: medium\n", &[&base], dir.path()).await;
    let (status, _) = get(&proxy.client(None), "http://anything.test/").await;
    assert_ne!(status, 403);
    proxy.stop().await;
}

#[tokio::test]
async fn warn_then_continue_then_the_token_expires() {
    let origin = Origin::http().await;
    let server = RepServer::start(json!({ "upsert": [{ "key": "x.test/", "score": 90 }] })).await;
    let dir = tempfile::tempdir().unwrap();
    // The origin (127.0.0.1) is untested: warned; a continue lasts 2 s.
    let policy = "untested: warn\nwarn:\n  continue_seconds: 2\n";
    let proxy = filtering_proxy(policy, &[&server.base], dir.path()).await;
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(proxy.url()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = origin.url("/page");
    let v = json_page(&client, &url).await;
    assert_eq!(
        (v["action"].as_str(), v["reason"].as_str()),
        (Some("warn"), Some("untested"))
    );
    let link = v["continue"].as_str().unwrap().to_owned();
    // The HTML page carries the same kind of link.
    let (_, html) = get(&client, &url).await;
    assert!(
        html.contains("Continue anyway") && html.contains("/.webrep/continue?token="),
        "{html}"
    );
    // A forged token is refused; the real one redirects back and lets the client through.
    let forged = format!("{}/.webrep/continue?token=AAAA.BBBB", origin.url(""));
    assert_eq!(client.get(&forged).send().await.unwrap().status(), 403);
    let r = client
        .get(format!("{}{link}", origin.url("")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], url.as_str());
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(
        (r.status().as_u16(), r.text().await.unwrap().as_str()),
        (200, "hello")
    );
    // Another client address is still warned (the continue is scoped to the client).
    let other = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(proxy.url()).unwrap())
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    assert_eq!(other.get(&url).send().await.unwrap().status(), 403);
    let r = other
        .get(format!("{}{link}", origin.url("")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "the link is for another client");
    // The continue expires with its token (2 s): the warning comes back.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = client.get(&url).send().await.unwrap().status();
        if status == 403 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the continue never expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxy.stop().await;
}
