//! Feedback flows up: real reputation servers in-process on 127.0.0.1, a site server
//! forwarding the events it stores to an upper server (`server.upstream.feedback`), each
//! event once, through outages and restarts, anonymized by default; escalation at the top
//! counting the clients of several sites, its entry coming back down to each by delta sync.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use crate::harness::*;
use webrep::api::events::Kind;
use webrep::client::RepClient;
use webrep::config::{
    Disclosure, EscalationRule, FeedbackOptions, Retention, UpstreamFeedback, UrlDisclosure,
};
use webrep::model::{Category, Score};
use webrep::repserver::events::reporter_id;
use webrep::repserver::forward::ForwardOptions;
use webrep::repserver::metrics::Forwarded;

/// Client tokens the upper server gives its sites, one each.
const SITE: [&str; 3] = [
    "site-a-token-0123456789",
    "site-b-token-0123456789",
    "site-c-token-0123456789",
];

/// Forwarding to the server at `base` with `token`, under `privacy`.
fn forward_to(base: &str, token: &str, privacy: UpstreamFeedback) -> ForwardOptions {
    ForwardOptions {
        client: RepClient::new(base, token, None).unwrap(),
        privacy,
    }
}

/// A user report about `host` from `client` (user `alice`, with a comment and a query).
fn report(id: &str, client: &str, host: &str) -> Value {
    json!({
        "v": 1, "id": id, "kind": "user_report", "proxy": "gw",
        "time": webrep::clock::unix_millis(),
        "client": client, "user": "alice", "host": host,
        "url": format!("http://{host}/login?mail=alice@example.com"),
        "ticket": "00000000000000aa", "comment": "I am Alice, call me",
    })
}

/// Posts `events` to `server` as a proxy would; all must be accepted or duplicates.
async fn post_events(server: &RepServer, events: Vec<Value>) {
    let (status, v) = server
        .post("/v1/events", Some(CLIENT), &json!({ "events": events }))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["rejected"], 0, "{v}");
}

/// Waits until `server` stores exactly `n` events (never more), and returns them.
async fn wait_stored(server: &RepServer, n: usize) -> Vec<Value> {
    let events = server.wait_events("", |e| e.len() >= n).await;
    assert_eq!(events.len(), n, "{events:#?}");
    let ids: BTreeSet<(&str, &str)> = events
        .iter()
        .map(|e| (e["proxy"].as_str().unwrap(), e["id"].as_str().unwrap()))
        .collect();
    assert_eq!(ids.len(), n, "each event once");
    events
}

#[tokio::test]
async fn feedback_goes_up_once_anonymized_by_default_and_kept_when_configured() {
    let top = RepServer::builder().clients(&SITE[..2]).start().await;
    let anonymizing = RepServer::builder()
        .forward(forward_to(&top.base, SITE[0], UpstreamFeedback::default()))
        .start()
        .await;
    let keeping = UpstreamFeedback {
        client: Disclosure::Keep,
        user: Disclosure::Keep,
        comment: Retention::Keep,
        url: UrlDisclosure::Keep,
        ..UpstreamFeedback::default()
    };
    let keeper = RepServer::builder()
        .forward(forward_to(&top.base, SITE[1], keeping))
        .start()
        .await;

    let started = Instant::now();
    let batch = vec![
        report("a1", "10.0.0.1", "x.test"),
        report("a2", "10.0.0.1", "x.test"),
        report("a3", "10.0.0.2", "x.test"),
    ];
    post_events(&anonymizing, batch.clone()).await;
    post_events(&keeper, vec![report("k1", "10.0.0.1", "x.test")]).await;
    wait_stored(&top, 4).await;
    eprintln!("4 events reached the upper tier in {:?}", started.elapsed());
    // A proxy's replay is a duplicate at the site: nothing more goes up.
    post_events(&anonymizing, batch).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = wait_stored(&top, 4).await;
    assert_eq!(anonymizing.stats.forwarded(Forwarded::forwarded), 3);
    assert_eq!(keeper.stats.forwarded(Forwarded::forwarded), 1);

    let by_id = |id: &str| events.iter().find(|e| e["id"] == id).unwrap().clone();
    let (a1, a2, a3, k1) = (by_id("a1"), by_id("a2"), by_id("a3"), by_id("k1"));
    // Anonymized: a stable pseudonym per client, distinct clients distinct; the user
    // likewise; the comment dropped; the URL without its query; the rest as sent.
    let client = a1["client"].as_str().unwrap();
    assert!(
        client.starts_with("anon:") && !client.contains("10.0.0"),
        "{a1}"
    );
    assert_eq!(a2["client"], a1["client"]);
    assert_ne!(a3["client"], a1["client"]);
    assert!(a1["user"].as_str().unwrap().starts_with("anon:"), "{a1}");
    assert_eq!(a1.get("comment"), None, "{a1}");
    assert_eq!(a1["url"], "http://x.test/login");
    assert_eq!(
        (&a1["proxy"], &a1["host"], &a1["ticket"], &a1["kind"]),
        (
            &json!("gw"),
            &json!("x.test"),
            &json!("00000000000000aa"),
            &json!("user_report")
        )
    );
    // The reporter at the top is the site's token.
    assert_eq!(a1["reporter"], reporter_id(SITE[0]));
    // Kept when configured.
    assert_eq!(
        (&k1["client"], &k1["user"], &k1["comment"], &k1["url"]),
        (
            &json!("10.0.0.1"),
            &json!("alice"),
            &json!("I am Alice, call me"),
            &json!("http://x.test/login?mail=alice@example.com")
        )
    );
    assert_eq!(k1["reporter"], reporter_id(SITE[1]));
    assert_eq!(anonymizing.stats.forward_lag(), 0);
}

#[tokio::test]
async fn feedback_goes_up_a_chain_of_three_tiers() {
    let top = RepServer::builder().clients(&SITE[..1]).start().await;
    let middle = RepServer::builder()
        .forward(forward_to(&top.base, SITE[0], UpstreamFeedback::default()))
        .start()
        .await;
    let site = RepServer::builder()
        .forward(forward_to(
            &middle.base,
            CLIENT,
            UpstreamFeedback::default(),
        ))
        .start()
        .await;
    post_events(&site, vec![report("c1", "10.0.0.1", "chain.test")]).await;
    let at_top = wait_stored(&top, 1).await;
    let at_middle = wait_stored(&middle, 1).await;
    // Each tier anonymizes again with its own key: still one stable pseudonym per client.
    assert_ne!(at_top[0]["client"], at_middle[0]["client"]);
    assert_eq!(at_top[0]["reporter"], reporter_id(SITE[0]));
    assert_eq!(
        (&at_top[0]["id"], &at_top[0]["proxy"]),
        (&json!("c1"), &json!("gw"))
    );
}

#[tokio::test]
async fn feedback_forwarding_survives_an_upstream_outage_and_a_site_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut top = RepServer::builder()
        .file(&dir.path().join("top.db"))
        .clients(&SITE[..1])
        .start()
        .await;
    let mut site = RepServer::builder()
        .file(&dir.path().join("site.db"))
        .forward(forward_to(&top.base, SITE[0], UpstreamFeedback::default()))
        .start()
        .await;
    let batch = |from: usize, n: usize| {
        (from..from + n)
            .map(|i| report(&format!("e{i:03}"), &format!("10.0.1.{i}"), "o.test"))
            .collect::<Vec<_>>()
    };
    post_events(&site, batch(0, 5)).await;
    wait_stored(&top, 5).await;

    // The upper tier goes away; events keep arriving at the site and wait in its store.
    top.kill().await;
    post_events(&site, batch(5, 5)).await;
    post_events(&site, batch(10, 5)).await;
    eventually("the site tried and failed", BOUND, || async {
        site.stats.forward_failures() > 0
    })
    .await;
    // The site restarts meanwhile: its cursor is in its store.
    site.kill().await;
    site.restart().await;
    post_events(&site, batch(15, 5)).await;
    eventually("the site counts what waits", BOUND, || async {
        site.stats.forward_lag() == 15
    })
    .await;

    top.restart().await;
    let events = wait_stored(&top, 20).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(wait_stored(&top, 20).await.len(), events.len());
    // Counted once each: nothing delivered before the restart was sent again.
    assert_eq!(site.stats.forwarded(Forwarded::forwarded), 20);
    assert_eq!(site.stats.forwarded(Forwarded::lost), 0);
    assert_eq!(site.stats.forward_lag(), 0);
    let (_, health) = site.get("/healthz", None).await;
    assert_eq!(health["forward_behind"], 0, "{health}");
    let (_, health) = top.get("/healthz", None).await;
    assert_eq!(health.get("forward_behind"), None, "{health}");
}

#[tokio::test]
async fn escalation_at_the_top_counts_clients_of_several_sites() {
    let rule = EscalationRule {
        kinds: vec![Kind::UserReport],
        distinct_clients: 3,
        distinct_reporters: 3,
        window_secs: 3600,
        score: Score::new(70).unwrap(),
        category: Some(Category::parse("malware").unwrap()),
    };
    let rules = FeedbackOptions {
        escalation: vec![rule],
        ..FeedbackOptions::default()
    };
    let top = RepServer::builder()
        .clients(&SITE)
        .feedback(rules.clone())
        .start()
        .await;
    let mut sites = Vec::new();
    for token in SITE {
        // The same rule at each site: one client there is far below it. Each site follows
        // the top's table too, so what the top escalates comes back down.
        let follow = webrep::repserver::follow::Follow::everything(
            RepClient::new(&top.base, token, None).unwrap(),
        );
        let site = RepServer::builder()
            .feedback(rules.clone())
            .forward(forward_to(&top.base, token, UpstreamFeedback::default()))
            .follow(follow, Default::default())
            .start()
            .await;
        sites.push(site);
    }
    let (_, changes) = top.get("/v1/changes?since=0", Some(CLIENT)).await;
    let since = changes["seq"].as_u64().unwrap();
    // The same proxy name and client address at every site: different people, and their
    // pseudonyms (keyed per site) keep them apart at the top.
    for (i, site) in sites.iter().enumerate() {
        post_events(site, vec![report(&format!("r{i}"), "10.0.0.7", "bad.test")]).await;
        wait_stored(&top, i + 1).await;
        let (_, v) = site.get("/v1/escalations", Some(ADMIN)).await;
        assert_eq!(v["escalations"], json!([]), "no site escalates alone: {v}");
    }
    // The escalated entry comes back down to every site by delta sync.
    let reached_top = Instant::now();
    for site in &sites {
        eventually("the escalation reaches the site", BOUND, || async {
            site.lookup("http://bad.test/").await["risk"] == "suspicious"
        })
        .await;
    }
    eprintln!(
        "escalated entry at all three sites {:?} after the last report reached the top",
        reached_top.elapsed()
    );
    let v = top.lookup("http://bad.test/").await;
    assert_eq!(
        (&v["score"], &v["risk"]),
        (&json!(70), &json!("suspicious")),
        "{v}"
    );
    let (_, v) = top.get("/v1/escalations", Some(ADMIN)).await;
    assert_eq!(v["escalations"][0]["key"], "bad.test/", "{v}");
    assert_eq!(v["escalations"][0]["clients"], 3, "{v}");
    let (_, c) = top
        .get(&format!("/v1/changes?since={since}"), Some(CLIENT))
        .await;
    assert!(
        c["keys"].as_array().unwrap().contains(&json!("bad.test/")),
        "{c}"
    );
}

/// An upstream that is not a reputation server: it answers the `n`-th request with
/// `answers[n]` (the last one from then on), closing each connection, and counts requests.
async fn stub_upstream(
    answers: &'static [&'static str],
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::Ordering::SeqCst;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let head = read_head(&mut s).await.to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            let mut body = vec![0u8; len];
            let _ = s.read_exact(&mut body).await;
            let n = count.fetch_add(1, SeqCst);
            let answer = answers[n.min(answers.len() - 1)];
            let _ = s.write_all(answer.as_bytes()).await;
        }
    });
    (base, seen)
}

#[tokio::test]
async fn feedback_forwarding_outlasts_garbage_and_passes_what_the_upstream_refuses() {
    const GARBAGE: &str =
        "HTTP/1.1 200 OK\r\ncontent-length: 9\r\nconnection: close\r\n\r\nnot json!";
    const DOWN: &str = "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 17\r\nconnection: close\r\n\r\n{\"error\":\"busy\"}\n";
    const REFUSED: &str = "HTTP/1.1 400 Bad Request\r\ncontent-length: 17\r\nconnection: close\r\n\r\n{\"error\":\"nope\"}\n";
    let (base, seen) = stub_upstream(&[GARBAGE, DOWN, REFUSED]).await;
    let site = RepServer::builder()
        .forward(forward_to(&base, CLIENT, UpstreamFeedback::default()))
        .start()
        .await;
    post_events(
        &site,
        vec![
            report("g1", "10.0.0.1", "g.test"),
            report("g2", "10.0.0.2", "g.test"),
        ],
    )
    .await;
    // Garbage and a 503 are failed rounds, tried again; a 400 for the batch is narrowed down
    // to each event alone, refused, and passed: the queue moves on.
    eventually("both events refused and passed", BOUND, || async {
        site.stats.forwarded(Forwarded::refused) == 2
    })
    .await;
    assert_eq!(site.stats.forward_failures(), 2);
    assert_eq!(site.stats.forwarded(Forwarded::forwarded), 0);
    assert_eq!(site.stats.forward_lag(), 0);
    // The batch of two, then each alone.
    let before = seen.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(before, 2 + 3);
    // Nothing is sent again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), before);
}

#[tokio::test]
async fn the_server_binary_forwards_to_its_configured_upstream() {
    let top = RepServer::builder().clients(&SITE[..1]).start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("webrep.yaml");
    std::fs::write(
        &cfg,
        format!(
            "server:\n  listen: \"127.0.0.1:0\"\n  store: {:?}\n  client_tokens: [{CLIENT:?}]\n  upstream:\n    url: {:?}\n    token: {:?}\n    feedback:\n      user: drop\nlog:\n  level: info\n",
            dir.path().join("site.db").display().to_string(),
            top.base,
            SITE[0],
        ),
    )
    .unwrap();
    let mut cmd = webrep(["server", "--config"]);
    cmd.arg(&cfg);
    let mut site = Webrep::spawn(cmd);
    let listen = site
        .wait_field(&["listen="])
        .await
        .expect("server is running");
    let status = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("http://{listen}/v1/events"))
        .bearer_auth(CLIENT)
        .header("content-type", "application/json")
        .body(json!({ "events": [report("b1", "10.0.0.1", "bin.test")] }).to_string())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    let events = wait_stored(&top, 1).await;
    assert!(events[0]["client"].as_str().unwrap().starts_with("anon:"));
    assert_eq!(events[0].get("user"), None, "{}", events[0]);
    site.wait_logged("forwarding feedback events upstream")
        .await;
    assert_eq!(site.terminate().await, Some(0));
}

#[tokio::test]
async fn events_pruned_before_they_went_up_are_counted_lost() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("site.db");
    {
        // Two events received long before the retention, while the upstream was away.
        let mut store = webrep::repserver::store::Store::open(&db).unwrap();
        let old: Vec<webrep::api::events::Event> = ["o1", "o2"]
            .iter()
            .map(|id| serde_json::from_value(report(id, "10.0.0.1", "old.test")).unwrap())
            .collect();
        store.ingest_events(&old, 1, &[]).unwrap();
    }
    let nowhere = format!("http://127.0.0.1:{}", closed_port().await);
    let site = RepServer::builder()
        .file(&db)
        .forward(forward_to(&nowhere, SITE[0], UpstreamFeedback::default()))
        .start()
        .await;
    eventually("the pruned events are counted lost", BOUND, || async {
        site.stats.forwarded(Forwarded::lost) == 2
    })
    .await;
    assert!(site.events("").await.is_empty());
    assert_eq!(site.stats.forwarded(Forwarded::forwarded), 0);
}
