//! Filtering end to end: the real proxy, the real reputation server (in-process, on
//! 127.0.0.1:0), a policy file, in-process origins, reqwest, curl and raw sockets.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;
use webrep::config::ApiConfig;
use webrep::config::raw::{RawAdminConfig, RawReputationConfig, RawReputationSource};

/// Test host names (`*.test`) are answered from `proxy.hosts`: nothing goes to DNS.
fn test_hosts() -> std::collections::BTreeMap<String, Vec<String>> {
    [("*.test".to_owned(), vec!["127.0.0.1".to_owned()])].into()
}

/// A filtering proxy: `policy` is the policy file's text; sources are the given servers,
/// which answer. Returns once the change follower has applied its first answer, which drops
/// the cache ([`TestProxy::following_changes`]), so cache hits and lookup counts that a test
/// sees are not upset by that drop landing later.
async fn filtering_proxy(policy: &str, servers: &[&str], dir: &std::path::Path) -> TestProxy {
    let proxy = filtering_proxy_with(policy, servers, dir, |r| r.retry_after_ms = 60_000).await;
    proxy.following_changes().await;
    proxy
}

/// ... with the further `reputation:` settings `reputation` makes.
async fn filtering_proxy_with(
    policy: &str,
    servers: &[&str],
    dir: &std::path::Path,
    reputation: impl FnOnce(&mut RawReputationConfig),
) -> TestProxy {
    let file = dir.join("policy.yaml");
    std::fs::write(&file, policy).unwrap();
    TestProxy::start_with(|c| {
        c.proxy.hosts = test_hosts();
        c.policy.enabled = true;
        c.policy.file = Some(file);
        c.reputation.sources = servers
            .iter()
            .enumerate()
            .map(|(i, s)| RawReputationSource {
                name: Some(format!("s{i}")),
                timeout_ms: 1000,
                ..source(s)
            })
            .collect();
        reputation(&mut c.reputation);
    })
    .await
}

/// `http://host:port/path` on `origin`'s port (`host` is mapped to 127.0.0.1).
fn at(origin: &Origin, host: &str, path: &str) -> String {
    format!("http://{host}:{}{path}", origin.addr.port())
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

/// A GET of `url` asking for JSON (the proxy's pages answer in JSON then).
async fn get_json(client: &reqwest::Client, url: &str) -> reqwest::Response {
    client
        .get(url)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
}

/// The JSON form of the page for `url`, which must be a 403.
async fn json_page(client: &reqwest::Client, url: &str) -> Value {
    let r = get_json(client, url).await;
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
    let server = RepServer::serving(entries()).await;
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
    // suspicious, safe and untested reach the origin.
    for (host, blocked) in [
        ("danger.test", true),
        ("hs.test", true),
        ("susp.test", false),
        ("safe.test", false),
        ("nobody-knows.test", false),
    ] {
        let (status, page) = get(&client, &at(&origin, host, "/a")).await;
        let want = if blocked { 403 } else { 200 };
        assert_eq!(status, want, "{host}: {page}");
    }
    // Lists win without asking the server.
    let lookups = server.lookups().await;
    let (status, _) = get(&client, "http://www.listed-bad.test/").await;
    assert_eq!(status, 403);
    let (status, _) = get(&client, &at(&origin, "approved.test", "/")).await;
    assert_eq!(status, 200, "approved beats a dangerous reputation");
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
    // The decision is in the access log line and counted on /stats.
    assert_eq!(
        line["decision"],
        json!({ "action": "block", "reason": "risk", "rule": null, "cache": "hit",
            "source": "s0", "risk": "dangerous", "score": 10 })
    );
    let list_hit = json_page(&client, "http://www.listed-bad.test/").await;
    let ticket = list_hit["ticket"].as_str().unwrap().to_owned();
    let line = proxy.wait_log(|l| l["id"] == ticket.as_str()).await;
    // A list hit needs no lookup, so it has no cache state, source or risk.
    assert_eq!(
        line["decision"],
        json!({ "action": "block", "reason": "blocked", "rule": null, "cache": "none",
            "source": null, "risk": null, "score": null })
    );
    let stats: Value = proxy_stats(&proxy).await;
    let n = |k: &str, v: &str| stats["filter"][k][v].as_u64().unwrap();
    assert!(
        n("actions", "block") >= 15 && n("actions", "allow") >= 5,
        "{stats}"
    );
    assert!(
        n("cache", "miss") >= 1 && n("cache", "hit") >= 1 && n("cache", "none") >= 2,
        "{stats}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_blocked_host_over_connect_is_refused_before_any_upstream_connection() {
    let server = RepServer::serving(json!({ "upsert": [
        { "key": "127.0.0.1/", "score": 3, "categories": ["malware"] },
    ]}))
    .await;
    let ca = TestCa::new();
    let origin = Origin::https(&ca).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, POLICY).unwrap();
    let proxy = TestProxy::start_with(|c| {
        c.proxy.connect_ports = vec![origin.addr.port()];
        c.policy.enabled = true;
        c.policy.file = Some(file);
        c.reputation.sources = vec![source(&server.base)];
    })
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
    let quick = |r: &mut RawReputationConfig| r.retry_after_ms = 60_000;
    let proxy = filtering_proxy_with(strict, &[&base], dir.path(), quick).await;
    let client = proxy.client(None);
    let (status, page) = get(&client, "http://anything.test/").await;
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("could not be reached"), "{page}");
    proxy.stop().await;
    // The default fail mode (allow) lets it through the filter.
    let proxy = filtering_proxy_with("security_level: medium\n", &[&base], dir.path(), quick).await;
    let (status, _) = get(&proxy.client(None), "http://anything.test/").await;
    assert_ne!(status, 403);
    proxy.stop().await;
}

/// A reputation server whose upstream tier is the server at `upstream` (a base URL).
async fn server_with_upstream(upstream: &str) -> RepServer {
    let client = webrep::client::RepClient::new(upstream, CLIENT, None).unwrap();
    let upstream =
        webrep::repserver::upstream::Upstream::new(client, Duration::from_secs(2), 2, 1000);
    let options = webrep::repserver::api::ServeOptions {
        upstream: Some(std::sync::Arc::new(upstream)),
        ..Default::default()
    };
    RepServer::builder().options(options).start().await
}

/// The two tiers of `jl-mixed.test`: the upstream (`global`) lists the host as dangerous;
/// the local server has only a path entry under it, and lists `jl-safe.test` as safe.
async fn mixed_tiers(global: &RepServer, local: &RepServer) {
    global
        .write(json!({ "upsert": [
            { "key": "jl-mixed.test/", "score": 5, "categories": ["malware"] },
        ]}))
        .await;
    local
        .write(json!({ "upsert": [
            { "key": "jl-mixed.test/login/", "score": 60, "categories": ["phishing"] },
            { "key": "jl-safe.test/", "score": 95, "categories": ["news"] },
        ]}))
        .await;
}

#[tokio::test]
async fn a_host_the_upstream_lists_is_blocked_whatever_local_path_entries_it_has() {
    let origin = Origin::http().await;
    let global = RepServer::start().await;
    let local = server_with_upstream(&global.base).await;
    mixed_tiers(&global, &local).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = filtering_proxy(
        "security_level: medium\nuntested: allow\n",
        &[&local.base],
        dir.path(),
    )
    .await;
    let client = proxy.client(None);
    // The proxy decides from the host answer; it must agree with `webrep lookup URL`.
    let before = origin.stats.requests.load(Ordering::SeqCst);
    for path in ["/other3", "/login/x"] {
        let url = at(&origin, "jl-mixed.test", path);
        let (status, page) = get(&client, &url).await;
        assert_eq!(status, 403, "{path}: {page}");
        assert!(page.contains("dangerous"), "{path}: {page}");
        let told = local.lookup(&url).await;
        assert_eq!(told["risk"], "dangerous", "{told}");
    }
    assert_eq!(
        origin.stats.requests.load(Ordering::SeqCst),
        before,
        "nothing reached the origin"
    );
    // A host the local table lists as safe still reaches the origin.
    let (status, body) = get(&client, &at(&origin, "jl-safe.test", "/")).await;
    assert_eq!((status, body.as_str()), (200, "hello"));
    proxy.stop().await;
    local.stop().await;
    global.stop().await;
}

#[tokio::test]
async fn a_host_with_local_path_entries_whose_upstream_is_down_gets_the_fail_mode() {
    let origin = Origin::http().await;
    let global = RepServer::start().await;
    let local = server_with_upstream(&global.base).await;
    mixed_tiers(&global, &local).await;
    // The upstream stops before anything was asked of it: nothing is cached anywhere.
    global.stop().await;
    let dir = tempfile::tempdir().unwrap();
    let strict =
        "security_level: medium\nuntested: allow\nreputation_unavailable:\n  action: block\n";
    let proxy = filtering_proxy(strict, &[&local.base], dir.path()).await;
    let client = proxy.client(None);
    let before = origin.stats.requests.load(Ordering::SeqCst);
    // Neither the untested allow nor the local path entry alone decides: the fail mode does.
    for path in ["/other3", "/login/x"] {
        let (status, page) = get(&client, &at(&origin, "jl-mixed.test", path)).await;
        assert_eq!(status, 403, "{path}: {page}");
        assert!(page.contains("could not be reached"), "{path}: {page}");
    }
    assert_eq!(origin.stats.requests.load(Ordering::SeqCst), before);
    // What the local table decides by a `host/` entry needs no upstream.
    let (status, body) = get(&client, &at(&origin, "jl-safe.test", "/")).await;
    assert_eq!((status, body.as_str()), (200, "hello"));
    proxy.stop().await;
    local.stop().await;
}

#[tokio::test]
async fn a_server_whose_needed_upstream_is_down_is_no_answer_not_untested() {
    // The local server's upstream tier: nothing listens there.
    let dead = format!("http://127.0.0.1:{}", closed_port().await);
    let local = server_with_upstream(&dead).await;
    local
        .write(
            &json!({ "upsert": [{ "key": "known.test/", "score": 90, "categories": ["news"] }] }),
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    // Untested hosts are allowed: only the fail mode can block the unknown one.
    let strict =
        "security_level: medium\nuntested: allow\nreputation_unavailable:\n  action: block\n";
    let proxy = filtering_proxy(strict, &[&local.base], dir.path()).await;
    let client = proxy.client(None);
    let (status, page) = get(&client, "http://only-upstream-knows.test/").await;
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("could not be reached"), "{page}");
    // What the local table knows still decides without the upstream.
    let (status, page) = get(&client, "http://known.test/").await;
    assert_ne!(status, 403, "{page}");
    proxy.stop().await;
    local.stop().await;
}

#[tokio::test]
async fn a_site_that_follows_the_tier_above_blocks_what_it_lists_through_its_outage() {
    let global = RepServer::serving(
        json!({ "upsert": [{ "key": "global-bad.test/", "score": 5, "categories": ["malware"] }] }),
    )
    .await;
    let client = webrep::client::RepClient::new(&global.base, CLIENT, None).unwrap();
    let status = std::sync::Arc::new(webrep::repserver::follow::FollowStatus::default());
    let options = webrep::repserver::api::ServeOptions {
        follow: Some(webrep::repserver::follow::Follow::everything(client)),
        follow_status: Some(status.clone()),
        ..Default::default()
    };
    let site = RepServer::builder().options(options).start().await;
    eventually("the site has a whole copy", BOUND, || async {
        status.snapshot().complete
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    // Untested is allowed and an unavailable reputation too: only the mirrored verdict blocks.
    let lax = "security_level: medium\nuntested: allow\nreputation_unavailable:\n  action: allow\n";
    let proxy = filtering_proxy(lax, &[&site.base], dir.path()).await;
    let http = proxy.client(None);
    let (code, page) = get(&http, "http://global-bad.test/").await;
    assert_eq!(code, 403, "{page}");
    // A change at the top reaches the proxy's decision through the site's change stream.
    global
        .write(&json!({ "upsert": [{ "key": "later-bad.test/", "score": 8, "categories": ["phishing"] }] }))
        .await;
    eventually("the new verdict blocks at the proxy", BOUND, || async {
        get(&http, "http://later-bad.test/").await.0 == 403
    })
    .await;
    // The tier above goes away: the site serves its copy, nothing it listed is allowed.
    global.stop().await;
    eventually("the site notices", BOUND, || async {
        !status.snapshot().reachable
    })
    .await;
    for url in ["http://global-bad.test/x", "http://www.later-bad.test/"] {
        let (code, page) = get(&http, url).await;
        assert_eq!(code, 403, "{url}: {page}");
    }
    proxy.stop().await;
    site.stop().await;
}

#[tokio::test]
async fn warn_then_continue_then_the_token_expires() {
    let origin = Origin::http().await;
    let server = RepServer::serving(json!({ "upsert": [{ "key": "x.test/", "score": 90 }] })).await;
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
    eventually("the continue expires", BOUND, || async {
        client.get(&url).send().await.unwrap().status() == 403
    })
    .await;
    proxy.stop().await;
}

/// What the proxy did with `url`: `pass` (the origin answered), or the page's
/// `action:reason`.
async fn outcome(client: &reqwest::Client, url: &str) -> String {
    let r = get_json(client, url).await;
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    match status {
        200 if body == "hello" => "pass".to_owned(),
        403 => {
            let v: Value = serde_json::from_str(&body).unwrap();
            format!(
                "{}:{}",
                v["action"].as_str().unwrap(),
                v["reason"].as_str().unwrap()
            )
        }
        _ => panic!("{url}: {status} {body}"),
    }
}

#[tokio::test]
async fn each_security_level_blocks_its_risk_bands() {
    let origin = Origin::http().await;
    let server = RepServer::serving(entries()).await;
    let dir = tempfile::tempdir().unwrap();
    let hosts = [
        "danger.test",
        "hs.test",
        "susp.test",
        "safe.test",
        "nobody-knows.test",
    ];
    // (level, untested action, outcome for each of `hosts`)
    let cases = [
        (
            "low",
            "allow",
            ["block:risk", "pass", "pass", "pass", "pass"],
        ),
        (
            "medium",
            "warn",
            ["block:risk", "block:risk", "pass", "pass", "warn:untested"],
        ),
        (
            "high",
            "block",
            [
                "block:risk",
                "block:risk",
                "block:risk",
                "pass",
                "block:untested",
            ],
        ),
    ];
    for (level, untested, want) in cases {
        let policy = format!("security_level: {level}\nuntested: {untested}\n");
        let proxy = filtering_proxy(&policy, &[&server.base], dir.path()).await;
        let client = proxy.client(None);
        for (host, want) in hosts.iter().zip(want) {
            let got = outcome(&client, &at(&origin, host, "/x")).await;
            assert_eq!(got, want, "{host} under {level}");
        }
        proxy.stop().await;
    }
}

#[tokio::test]
async fn outage_stale_then_fail_mode_then_failover_then_the_server_back() {
    let origin = Origin::http().await;
    let dir = tempfile::tempdir().unwrap();
    // TTL 0: every answer is stale at once, so each request asks the servers again.
    let config = ApiConfig {
        ttl_secs: 0,
        untested_ttl_secs: 0,
        ..ApiConfig::default()
    };
    let store = dir.path().join("first.db");
    let mut first = RepServer::builder()
        .file(&store)
        .config(config.clone())
        .start()
        .await;
    first
        .write(json!({ "upsert": [
            { "key": "danger.test/", "score": 10, "categories": ["malware"] },
            { "key": "safe.test/", "score": 95 },
        ]}))
        .await;
    let second = RepServer::builder().config(config).start().await;
    second
        .write(json!({ "upsert": [{ "key": "only-second.test/", "score": 5 }] }))
        .await;
    let policy = "security_level: medium\nuntested: allow\nreputation_unavailable:\n  action: block\n  stale_seconds: 3600\n";
    // No change follower: its resynchronisation would drop the stale answers this test uses.
    let proxy = filtering_proxy_with(policy, &[&first.base, &second.base], dir.path(), |r| {
        r.retry_after_ms = 200;
        r.follow_changes = false;
    })
    .await;
    let client = proxy.client(None);
    let decision = |ticket: String| {
        let proxy = &proxy;
        async move { proxy.wait_log(|l| l["id"] == ticket.as_str()).await["decision"].clone() }
    };

    // Both up: the first source answers.
    let v = json_page(&client, &at(&origin, "danger.test", "/")).await;
    let d = decision(v["ticket"].as_str().unwrap().to_owned()).await;
    assert_eq!(
        (d["source"].as_str(), d["cache"].as_str()),
        (Some("s0"), Some("miss"))
    );
    assert_eq!(
        outcome(&client, &at(&origin, "safe.test", "/")).await,
        "pass"
    );

    // The first is gone: the second answers.
    first.kill().await;
    let v = json_page(&client, &at(&origin, "only-second.test", "/")).await;
    assert_eq!(v["reason"], "risk");
    let d = decision(v["ticket"].as_str().unwrap().to_owned()).await;
    assert_eq!(d["source"], "s1");

    // Both gone: what was cached is served stale; the rest gets the fail mode, which the
    // page explains.
    second.stop().await;
    let v = json_page(&client, &at(&origin, "danger.test", "/")).await;
    assert_eq!(v["reason"], "risk");
    let d = decision(v["ticket"].as_str().unwrap().to_owned()).await;
    assert_eq!(d["cache"], "stale");
    let (status, page) = get(&client, &at(&origin, "never-seen.test", "/")).await;
    assert_eq!(status, 403);
    assert!(page.contains("could not be reached"), "{page}");

    // The first is back on its address with its store: answers come from it again.
    first.restart().await;
    eventually("the server's return is noticed", BOUND, || async {
        outcome(&client, &at(&origin, "never-seen.test", "/")).await == "pass"
    })
    .await;
    let v = json_page(&client, &at(&origin, "danger.test", "/")).await;
    let d = decision(v["ticket"].as_str().unwrap().to_owned()).await;
    assert_eq!(
        (d["source"].as_str(), d["cache"].as_str()),
        (Some("s0"), Some("miss"))
    );
    proxy.stop().await;
    first.stop().await;
}

#[tokio::test]
async fn a_verdict_changed_on_the_server_reaches_the_proxy_before_its_ttl() {
    let origin = Origin::http().await;
    // TTL 300 s.
    let server =
        RepServer::serving(json!({ "upsert": [{ "key": "flip.test/", "score": 95 }] })).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = filtering_proxy(POLICY, &[&server.base], dir.path()).await;
    let client = proxy.client(None);
    let url = at(&origin, "flip.test", "/page");
    assert_eq!(outcome(&client, &url).await, "pass");
    let lookups = server.lookups().await;
    assert_eq!(outcome(&client, &url).await, "pass");
    assert_eq!(server.lookups().await, lookups, "a cache hit");
    server
        .write(
            json!({ "upsert": [{ "key": "flip.test/", "score": 4, "categories": ["malware"] }] }),
        )
        .await;
    eventually(
        "the change reaches the proxy",
        Duration::from_secs(60),
        || async { outcome(&client, &url).await == "block:risk" },
    )
    .await;
    proxy.stop().await;
}

#[tokio::test]
async fn a_policy_reload_changes_decisions_without_dropping_connections() {
    use http_body_util::{BodyExt as _, Empty};
    let origin = Origin::http().await;
    let server = RepServer::serving(entries()).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = filtering_proxy(POLICY, &[&server.base], dir.path()).await;
    // A slow response in flight on one connection...
    let slow = {
        let client = proxy.client(None);
        let url = at(&origin, "safe.test", "/slow");
        tokio::spawn(async move {
            let r = client.get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    };
    origin.stats.slow_started.notified().await;
    // ...and one keep-alive connection used before and after the reload.
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut status_of = async |url: String| {
        let req = http::Request::get(&url)
            .header("host", url.split('/').nth(2).unwrap())
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        let r = sender
            .send_request(req)
            .await
            .expect("the connection is kept");
        let status = r.status().as_u16();
        r.into_body().collect().await.unwrap();
        status
    };
    assert_eq!(status_of(at(&origin, "susp.test", "/")).await, 200);
    assert_eq!(status_of(at(&origin, "safe.test", "/")).await, 200);

    // The new policy: the high level (suspicious is blocked) and safe.test listed.
    let policy = proxy.state.filter.as_ref().unwrap().policy.clone();
    let generation = policy.generation();
    let file = dir.path().join("policy.yaml");
    let new = POLICY
        .replace("security_level: medium", "security_level: high")
        .replace(
            "    - listed-bad.test\n",
            "    - listed-bad.test\n    - safe.test\n",
        );
    std::fs::write(dir.path().join("policy.yaml.new"), new).unwrap();
    std::fs::rename(dir.path().join("policy.yaml.new"), &file).unwrap();
    eventually("the policy is reloaded", BOUND, || async {
        policy.generation() != generation
    })
    .await;
    assert_eq!(status_of(at(&origin, "susp.test", "/")).await, 403);
    assert_eq!(status_of(at(&origin, "safe.test", "/")).await, 403);
    assert_eq!(status_of(at(&origin, "nobody-knows.test", "/")).await, 200);

    // The response in flight since before the reload completes intact.
    origin.stats.gate.notify_one();
    assert_eq!(slow.await.unwrap(), (200, "first;second".to_owned()));
    proxy.stop().await;
}

#[tokio::test]
async fn a_thousand_concurrent_requests_for_a_cold_host_cost_one_lookup() {
    let server = RepServer::serving(entries()).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = filtering_proxy(POLICY, &[&server.base], dir.path()).await;
    let client = proxy.client(None);
    let before = server.lookups().await;
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .get(format!("http://danger.test/page/{i}"))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 403);
    }
    assert_eq!(
        server.lookups().await - before,
        1,
        "one lookup for 1,000 requests"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn rules_on_groups_apply_to_the_authenticated_users_groups_and_reload_with_them() {
    let origin = Origin::http().await;
    let server = RepServer::serving(entries()).await;
    let dir = tempfile::tempdir().unwrap();
    let hash = webrep::proxy::auth::hash_password("pw-for-tests").unwrap();
    let users = dir.path().join("users");
    std::fs::write(&users, format!("alice:{hash}\nbob:{hash}\n")).unwrap();
    let groups = dir.path().join("groups");
    std::fs::write(&groups, "# who is who\ninterns: alice, carol\n").unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "security_level: medium\nrules:\n  - id: interns-no-susp\n    match:\n      groups: [interns]\n    security_level: high\n",
    )
    .unwrap();
    let token = "admin-api-token-0123456789";
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let proxy = TestProxy::start_with(|c| {
        c.proxy.hosts = test_hosts();
        c.auth.users_file = Some(users.clone());
        c.auth.groups_file = Some(groups.clone());
        c.policy.file = Some(policy);
        c.reputation.sources = vec![source(&server.base)];
        c.admin.listen = Some("127.0.0.1:0".into());
        c.admin.token_file = Some(token_file.clone());
    })
    .await;
    let as_user = |name: &str| {
        reqwest::Client::builder()
            .proxy(
                reqwest::Proxy::all(proxy.url())
                    .unwrap()
                    .basic_auth(name, "pw-for-tests"),
            )
            .build()
            .unwrap()
    };
    // susp.test is Suspicious: blocked for the interns' rule (high level), not for others.
    let url = at(&origin, "susp.test", "/");
    let v = json_page(&as_user("alice"), &url).await;
    assert_eq!(
        (v["reason"].as_str(), v["rule"].as_str()),
        (Some("risk"), Some("interns-no-susp"))
    );
    assert_eq!(outcome(&as_user("bob"), &url).await, "pass");

    // The admin changes both files and reloads (what SIGHUP does too): bob is the intern
    // now, alice is gone, dave is new.
    std::fs::write(&groups, "interns: bob\n").unwrap();
    std::fs::write(&users, format!("bob:{hash}\ndave:{hash}\n")).unwrap();
    let admin = proxy.admin.expect("admin listener");
    let reload_with = |token: &'static str| async move {
        let r = reqwest::Client::new()
            .post(format!("http://{admin}/v1/reload"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        status_and_json(r).await
    };
    let reload = || reload_with(token);
    let (status, v) = reload().await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["groups"].as_u64(), v["users"].as_u64()),
        (Some(1), Some(2)),
        "{v}"
    );
    assert_eq!(v["generation"], 2, "{v}");
    let r = as_user("alice").get(&url).send().await.unwrap();
    assert_eq!(r.status(), 407, "alice's cached credentials went with her");
    let v = json_page(&as_user("bob"), &url).await;
    assert_eq!(v["rule"], "interns-no-susp", "{v}");
    assert_eq!(outcome(&as_user("dave"), &url).await, "pass");

    // A broken users file: refused, the running users stay.
    std::fs::write(&users, "# nobody\n").unwrap();
    let (status, v) = reload().await;
    assert_eq!(status, 422, "{v}");
    let errors = v["errors"].to_string();
    assert!(errors.contains("no users defined"), "{v}");
    assert_eq!(outcome(&as_user("dave"), &url).await, "pass");

    // The admin API's own token is read again too: the old one stops working.
    const ROTATED: &str = "admin-api-token-rotated-0123456789";
    std::fs::write(&token_file, format!("{ROTATED}\n")).unwrap();
    std::fs::write(&users, format!("dave:{hash}\n")).unwrap();
    assert_eq!(reload().await.0, 200);
    assert_eq!(reload().await.0, 401);
    assert_eq!(reload_with(ROTATED).await.0, 200);
    proxy.stop().await;
}

/// A filtering proxy with [`POLICY`] (in `dir/policy.yaml`), `server` as its one source
/// (named `local`), and an admin listener on 127.0.0.1:0 with the further `admin:` settings
/// `admin` makes.
async fn admin_proxy(
    server: &RepServer,
    dir: &std::path::Path,
    admin: impl FnOnce(&mut RawAdminConfig),
) -> TestProxy {
    let file = dir.join("policy.yaml");
    std::fs::write(&file, POLICY).unwrap();
    let proxy = TestProxy::start_with(|c| {
        c.proxy.hosts = test_hosts();
        c.admin.listen = Some("127.0.0.1:0".into());
        admin(&mut c.admin);
        c.policy.file = Some(file);
        c.reputation.sources = vec![RawReputationSource {
            name: Some("local".into()),
            ..source(&server.base)
        }];
    })
    .await;
    proxy.following_changes().await;
    proxy
}

#[tokio::test]
async fn a_host_without_keys_is_decided_from_the_key_summary_with_no_server_lookup() {
    let origin = Origin::http().await;
    let server = RepServer::serving(entries()).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = admin_proxy(&server, dir.path(), |_| {}).await;
    let admin = proxy.admin.expect("admin listener");
    eventually("the key summary is loaded", BOUND, || async {
        proxy_stats(&proxy).await["reputation_summary_hosts"] == 6
    })
    .await;
    let client = proxy.client(None);
    let before = server.lookups().await;
    let url = at(&origin, "www.nobody-here.test", "/x");
    assert_eq!(outcome(&client, &url).await, "pass");
    assert_eq!(outcome(&client, &url).await, "pass");
    assert_eq!(server.lookups().await, before, "no server lookup");
    let text = scrape(admin).await;
    assert_eq!(sample(&text, "webrep_reputation_summary_skips_total"), 2.0);
    assert_eq!(sample(&text, "webrep_reputation_summary_hosts"), 6.0);
    assert!(sample(&text, "webrep_reputation_summary_bytes") > 0.0);
    // Listed on the server later: the change stream adds it before dropping its answers.
    server
        .write(json!({ "upsert": [{ "key": "nobody-here.test/", "score": 4, "categories": ["malware"] }] }))
        .await;
    eventually("the new entry reaches the proxy", BOUND, || async {
        outcome(&client, &url).await == "block:risk"
    })
    .await;
    proxy.stop().await;
}

#[tokio::test]
async fn metrics_on_the_admin_listener_count_what_happened() {
    let origin = Origin::http().await;
    let server = RepServer::builder().metrics().start().await;
    server.write(entries()).await;
    let server_metrics = server.metrics.expect("a metrics listener");
    let dir = tempfile::tempdir().unwrap();
    let proxy = admin_proxy(&server, dir.path(), |_| {}).await;
    let client = proxy.client(None);
    assert_eq!(
        outcome(&client, &at(&origin, "safe.test", "/")).await,
        "pass"
    );
    assert_eq!(
        outcome(&client, &at(&origin, "safe.test", "/b")).await,
        "pass"
    );
    assert_eq!(
        outcome(&client, &at(&origin, "danger.test", "/")).await,
        "block:risk"
    );
    assert_eq!(
        outcome(&client, "http://listed-bad.test/").await,
        "block:blocked"
    );
    let admin = proxy.admin.expect("admin listener");
    let text = scrape(admin).await;
    let sample = |name: &str| sample(&text, name);
    assert_eq!(sample("webrep_decisions_total{action=\"allow\"}"), 2.0);
    assert_eq!(sample("webrep_decisions_total{action=\"block\"}"), 2.0);
    assert_eq!(
        sample("webrep_decision_reasons_total{reason=\"allowed\"}"),
        2.0
    );
    assert_eq!(
        sample("webrep_decision_reasons_total{reason=\"risk\"}"),
        1.0
    );
    assert_eq!(
        sample("webrep_decision_reasons_total{reason=\"blocked\"}"),
        1.0
    );
    assert_eq!(
        sample("webrep_decision_reasons_total{reason=\"reputation_unavailable\"}"),
        0.0,
        "no fail-mode decision while the server answers"
    );
    assert_eq!(
        sample("webrep_reputation_answers_total{cache=\"none\"}"),
        1.0
    );
    assert_eq!(
        sample("webrep_reputation_answers_total{cache=\"miss\"}")
            + sample("webrep_reputation_answers_total{cache=\"hit\"}"),
        3.0
    );
    assert_eq!(sample("webrep_reputation_source_up{source=\"local\"}"), 1.0);
    assert_eq!(
        sample("webrep_reputation_cache_drops_total"),
        1.0,
        "the change follower's first answer only"
    );
    assert_eq!(sample("webrep_policy_generation"), 1.0);
    assert_eq!(sample("webrep_policy_reload_failures_total"), 0.0);
    assert_eq!(
        sample("webrep_reputation_lookup_seconds_count"),
        sample("webrep_reputation_answers_total{cache=\"miss\"}"),
        "one round trip per miss"
    );
    assert_eq!(sample("webrep_tunnels_total{kind=\"tunnel\"}"), 0.0);
    // Every name came from proxy.hosts: the system resolver was never asked.
    for result in ["resolved", "failed", "cached"] {
        assert_eq!(
            sample(&format!("webrep_dns_lookups_total{{result=\"{result}\"}}")),
            0.0
        );
    }
    assert_eq!(sample("webrep_dns_cache_names"), 0.0);
    assert!(text.contains("# TYPE webrep_file_scans counter"), "{text}");
    assert_eq!(
        sample("webrep_feedback_events_total{outcome=\"spooled\"}"),
        2.0,
        "each block is in the spool before its page goes out"
    );
    assert!(sample("webrep_feedback_spool_events") <= 2.0);
    assert!(sample("webrep_feedback_queue_events") >= 0.0);

    // The reputation server's own metrics, after the same traffic.
    let text = scrape(server_metrics).await;
    let s = |name: &str| self::sample(&text, name);
    let asked = s("webrep_server_lookup_items_total{kind=\"host\",answer=\"listed\"}")
        + s("webrep_server_lookup_items_total{kind=\"url\",answer=\"listed\"}");
    assert_eq!(asked, 2.0, "safe.test and danger.test, each asked once");
    assert_eq!(
        s("webrep_server_requests_total{route=\"entries\",status=\"2xx\"}"),
        1.0,
        "the test's one write"
    );
    assert!(s("webrep_server_requests_total{route=\"lookup\",status=\"2xx\"}") >= 1.0);
    assert_eq!(
        s("webrep_server_request_seconds_count{route=\"lookup\"}"),
        s("webrep_server_requests_total{route=\"lookup\",status=\"2xx\"}")
    );
    assert_eq!(s("webrep_server_entries"), 7.0, "entries()");
    assert_eq!(s("webrep_server_change_seq"), 1.0);
    assert_eq!(s("webrep_server_busy_total"), 0.0);
    // The proxy follows the change stream by long-poll: 0 or 1 waiting at any moment.
    assert!(s("webrep_server_followers") <= 1.0);
    assert_eq!(s("webrep_server_events_total{outcome=\"accepted\"}"), 0.0);
    assert_eq!(
        plain_get(format!("http://{server_metrics}/other"))
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        plain_get(format!("http://{admin}/other"))
            .await
            .unwrap()
            .status(),
        404
    );
    proxy.stop().await;
}

#[tokio::test]
async fn the_admin_api_explains_the_decision_the_proxy_made_reloads_and_purges() {
    let origin = Origin::http().await;
    let server = RepServer::serving(entries()).await;
    let dir = tempfile::tempdir().unwrap();
    let token = "admin-api-token-0123456789";
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let proxy = admin_proxy(&server, dir.path(), |a| {
        a.token_file = Some(token_file.clone());
    })
    .await;
    let file = dir.path().join("policy.yaml");
    let admin = format!("http://{}", proxy.admin.unwrap());
    let api = reqwest::Client::builder().no_proxy().build().unwrap();
    let explain = |url: String| {
        let (api, admin) = (api.clone(), admin.clone());
        async move {
            let r = api
                .get(format!(
                    "{admin}/v1/explain?url={}&client=127.0.0.1",
                    webrep::urlenc::encode_query_value(&url)
                ))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            serde_json::from_str::<Value>(&r.text().await.unwrap()).unwrap()
        }
    };
    let client = proxy.client(None);
    // The proxy's decisions and the explanations agree.
    for (host, path) in [
        ("danger.test", "/"),
        ("safe.test", "/dl/x"),
        ("127.0.0.1", "/dl/tool.exe"),
        ("listed-bad.test", "/"),
        ("approved.test", "/"),
        ("nobody-knows.test", "/"),
    ] {
        let url = at(&origin, host, path);
        let r = get_json(&client, &url).await;
        let (status, body) = (r.status().as_u16(), r.text().await.unwrap());
        let e = explain(url.clone()).await;
        if status == 403 {
            let page: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(
                (&e["action"], &e["reason"], &e["rule"], &e["list_entry"]),
                (
                    &page["action"],
                    &page["reason"],
                    &page["rule"],
                    &page["list_entry"]
                ),
                "{url}: {e}"
            );
        } else {
            assert_eq!(status, 200, "{url}");
            assert_eq!(e["action"], "allow", "{url}: {e}");
        }
    }
    let e = explain(at(&origin, "danger.test", "/")).await;
    assert_eq!(
        (e["cache"].as_str(), e["source"].as_str()),
        (Some("hit"), Some("local"))
    );
    assert_eq!(e["risk"], "dangerous");
    assert_eq!(e["intercept"], true);
    // Without the token: 401; cache purge makes the next answer a miss, and is counted.
    let r = api.get(format!("{admin}/v1/cache")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let drops = || async { proxy_stats(&proxy).await["reputation_cache_drops"].as_u64() };
    let before = drops().await;
    let r = api
        .post(format!("{admin}/v1/cache/purge"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(drops().await, before.map(|n| n + 1));
    let e = explain(at(&origin, "danger.test", "/")).await;
    assert_eq!(e["cache"], "miss", "{e}");
    // Reload: a bad file is refused and the running policy kept; a good one goes live.
    std::fs::write(&file, "security_level: extreme\n").unwrap();
    let r = api
        .post(format!("{admin}/v1/reload"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    std::fs::write(&file, POLICY.replace("medium", "high")).unwrap();
    let r = api
        .post(format!("{admin}/v1/reload"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let e = explain(at(&origin, "susp.test", "/")).await;
    assert_eq!(
        (e["action"].as_str(), e["reason"].as_str()),
        (Some("block"), Some("risk")),
        "{e}"
    );
    // At another time: a rule with a schedule applies only then.
    std::fs::write(
        &file,
        "rules:\n  - id: nights\n    match:\n      schedule:\n        time_zone: UTC\n        windows:\n          - days: [mon-sun]\n            from: \"22:00\"\n            to: \"06:00\"\n    action: block\n",
    )
    .unwrap();
    let r = api
        .post(format!("{admin}/v1/reload"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let at_time = |t: &str| {
        let (api, admin) = (api.clone(), admin.clone());
        let url = format!(
            "{admin}/v1/explain?url={}&time={t}",
            webrep::urlenc::encode_query_value(&at(&origin, "safe.test", "/"))
        );
        async move {
            let r = api.get(url).bearer_auth(token).send().await.unwrap();
            serde_json::from_str::<Value>(&r.text().await.unwrap()).unwrap()
        }
    };
    let night = at_time("2026-03-04T23:30:00Z").await;
    assert_eq!(
        (night["action"].as_str(), night["rule"].as_str()),
        (Some("block"), Some("nights")),
        "{night}"
    );
    let day = at_time("2026-03-04T12:00:00Z").await;
    assert_eq!(day["action"], "allow", "{day}");
    proxy.stop().await;
}
