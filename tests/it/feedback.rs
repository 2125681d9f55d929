//! Smart feedback end to end: the real proxy and the real reputation server
//! (in-process, file-backed store in a temporary directory, 127.0.0.1 ports), reqwest clients
//! on 127.0.0.1, .2 and .3.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::harness::*;
use webrep::api::events::Kind;
use webrep::client::RepClient;
use webrep::config::raw::RawReputationSource;
use webrep::config::{ApiConfig, EscalationRule, FeedbackOptions, RawConfig};
use webrep::feedback::FeedbackStats;
use webrep::model::{Category, Score};

const WAIT: Duration = Duration::from_secs(30);

/// A reputation server on a store file in `dir` (a restart opens it again), with the
/// escalation `rules`.
async fn feedback_server(dir: &Path, rules: Vec<EscalationRule>, api: ApiConfig) -> RepServer {
    RepServer::builder()
        .file(&dir.join("reputation.db"))
        .config(api)
        .feedback(FeedbackOptions {
            escalation: rules,
            ..FeedbackOptions::default()
        })
        .start()
        .await
}

/// A filtering proxy with feedback to `server` (id `proxy_id`, spool in `spool`); then
/// `extra` makes further settings (feedback keys, mostly).
async fn proxy(
    policy: &str,
    server: &str,
    dir: &Path,
    proxy_id: &str,
    spool: &Path,
    extra: impl FnOnce(&mut RawConfig),
) -> TestProxy {
    let file = dir.join(format!("{proxy_id}-policy.yaml"));
    std::fs::write(&file, policy).unwrap();
    TestProxy::start_with(|c| {
        c.policy.enabled = true;
        c.policy.file = Some(file);
        c.reputation.retry_after_ms = 200;
        c.reputation.sources = vec![RawReputationSource {
            name: Some("s0".into()),
            timeout_ms: 1000,
            ..source(server)
        }];
        c.feedback.proxy_id = Some(proxy_id.into());
        c.feedback.spool_dir = spool.to_owned();
        // Quick retries for tests, and every event on its own (sent at once, not at the end
        // of an aggregation interval), unless `extra` says otherwise.
        c.feedback.aggregate_secs = 0;
        c.feedback.batch_interval_ms = 20;
        c.feedback.retry_interval_ms = 100;
        c.feedback.send_timeout_ms = 2000;
        extra(c);
    })
    .await
}

fn feedback(p: &TestProxy) -> &webrep::feedback::Feedback {
    p.state
        .filter
        .as_ref()
        .and_then(|f| f.feedback.as_ref())
        .expect("feedback is on")
}

fn stats(p: &TestProxy) -> Arc<FeedbackStats> {
    feedback(p).stats.clone()
}

fn client_from(p: &TestProxy, local: [u8; 4]) -> reqwest::Client {
    init_crypto();
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(p.url()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .local_address(IpAddr::from(local))
        .timeout(WAIT)
        .build()
        .unwrap()
}

/// Follows a page's "report a mistake" `link` (a path, on `base`) as a browser does: the form
/// it shows, then that form posted with `comment`.
async fn report_mistake(
    client: &reqwest::Client,
    base: &str,
    link: &str,
    comment: &str,
) -> reqwest::Response {
    let form = client.get(format!("{base}{link}")).send().await.unwrap();
    assert_eq!(form.status(), 200);
    let html = form.text().await.unwrap();
    assert!(
        html.contains("<form method=\"post\" action=\"/.webrep/report\">"),
        "{html}"
    );
    let ticket = link
        .split("ticket=")
        .nth(1)
        .expect("the link names a ticket");
    client
        .post(format!("{base}/.webrep/report"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "ticket={ticket}&comment={}",
            comment.replace(' ', "+")
        ))
        .send()
        .await
        .unwrap()
}

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

fn by_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["kind"] == kind).collect()
}

#[tokio::test]
async fn feedback_events_of_every_kind_arrive_with_their_fields() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::http().await;
    let mut server = feedback_server(dir.path(), Vec::new(), ApiConfig::default()).await;
    server
        .write(json!({ "upsert": [
            { "key": "danger.test/", "score": 10, "categories": ["malware"] },
            { "key": "warn.test/", "score": 95, "categories": ["streaming"] },
            { "key": "127.0.0.1/mon/", "score": 95, "categories": ["gambling"] },
            // A host with a key, so that the proxy's key summary does not decide it.
            { "key": "127.0.0.2/listed/", "score": 95, "categories": ["news"] },
        ]}))
        .await;
    let policy = "security_level: medium\nuntested: allow\ncategories:\n  actions:\n    streaming: warn\n    gambling: monitor\n";
    let spool = dir.path().join("spool");
    let p = proxy(policy, &server.base, dir.path(), "p1", &spool, |_| {}).await;
    let client = client_from(&p, [127, 0, 0, 1]);

    // Blocked, with a ticket and a report link.
    let page = json_page(&client, "http://danger.test/").await;
    let ticket = page["ticket"].as_str().unwrap().to_owned();
    let report = page["report"].as_str().unwrap().to_owned();
    assert_eq!(report, format!("/.webrep/report?ticket={ticket}"));
    // The HTML page links to it too.
    let html = client
        .get("http://danger.test/")
        .header("accept", "text/html")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("/.webrep/report?ticket=") && html.contains("report it"),
        "{html}"
    );
    // Warned, then continued.
    let warn = json_page(&client, "http://warn.test/a").await;
    let cont = warn["continue"].as_str().unwrap();
    let r = client
        .get(format!("http://warn.test{cont}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    // Monitored and untested, both forwarded.
    for path in ["/mon/x", "/plain"] {
        let r = client.get(origin.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    // The user reports the block, with a comment: the link's form, posted.
    let r = report_mistake(&client, "http://danger.test", &report, "it is my bank").await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Thank you"));
    // The comment went in the body: the access log has the report's URL, not the comment.
    let line = p
        .wait_log(|v| v["method"] == "POST" && v["status"] == 200)
        .await;
    assert_eq!(line["url"], "http://danger.test/.webrep/report", "{line}");
    let log = p.access_log_text();
    assert!(!log.contains("bank"), "{log}");
    // A ticket of another client cannot be reported from here.
    let other = client_from(&p, [127, 0, 0, 2]);
    let r = other
        .get(format!("http://danger.test{report}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let events = server
        .wait_events("", |ev| {
            [
                "blocked",
                "warned",
                "continued",
                "monitored",
                "untested",
                "user_report",
            ]
            .iter()
            .all(|k| !by_kind(ev, k).is_empty())
        })
        .await;
    let blocked = by_kind(&events, "blocked");
    let b = blocked.iter().find(|e| e["id"] == ticket.as_str()).unwrap();
    for (field, want) in [
        ("v", json!(1)),
        ("proxy", json!("p1")),
        ("client", json!("127.0.0.1")),
        ("url", json!("http://danger.test/")),
        ("host", json!("danger.test")),
        ("action", json!("block")),
        ("reason", json!("risk")),
        ("risk", json!("dangerous")),
        ("score", json!(10)),
        ("categories", json!(["malware"])),
        ("source", json!("s0")),
    ] {
        assert_eq!(b[field], want, "{field} in {b}");
    }
    assert!(b["time"].as_i64().unwrap() > 1_600_000_000_000, "{b}");
    assert!(
        ["miss", "hit"].contains(&b["cache"].as_str().unwrap()),
        "{b}"
    );
    let w = by_kind(&events, "warned")[0];
    assert_eq!(
        (
            w["host"].as_str(),
            w["reason"].as_str(),
            w["categories"][0].as_str()
        ),
        (Some("warn.test"), Some("category"), Some("streaming"))
    );
    let c = by_kind(&events, "continued")[0];
    assert_eq!(c["url"], "http://warn.test/a");
    let m = by_kind(&events, "monitored")[0];
    assert_eq!(
        (m["action"].as_str(), m["categories"][0].as_str()),
        (Some("monitor"), Some("gambling"))
    );
    let u = by_kind(&events, "untested")[0];
    assert_eq!(
        (u["host"].as_str(), u["risk"].as_str(), u["url"].as_str()),
        (
            Some("127.0.0.1"),
            Some("untested"),
            Some("http://127.0.0.1/plain")
        )
    );
    let reports = by_kind(&events, "user_report");
    assert_eq!(reports.len(), 1, "{reports:?}");
    let rep = reports[0];
    assert_eq!(rep["ticket"], ticket.as_str());
    assert_ne!(rep["id"], ticket.as_str(), "a report has an id of its own");
    assert_eq!(
        (
            rep["comment"].as_str(),
            rep["host"].as_str(),
            rep["client"].as_str()
        ),
        (
            Some("it is my bank"),
            Some("danger.test"),
            Some("127.0.0.1")
        )
    );

    // No source answers about a host with keys and no cached answer: a
    // reputation_unavailable event, spooled, delivered when the server is back on the same
    // port.
    server.kill().await;
    let r = client.get("http://127.0.0.2:9/").send().await.unwrap();
    assert_ne!(r.status(), 403);
    eventually("the event is spooled", BOUND, || async {
        stats(&p).spooled.load(Ordering::Relaxed) > 0
    })
    .await;
    server.restart().await;
    let ev = server
        .wait_events("kind=reputation_unavailable", |ev| !ev.is_empty())
        .await;
    assert_eq!(
        (
            ev[0]["host"].as_str(),
            ev[0]["cache"].as_str(),
            ev[0]["action"].as_str()
        ),
        (Some("127.0.0.2"), Some("unavailable"), Some("allow"))
    );

    // File verdicts: the schema is accepted (the proxy does not send them yet).
    let client_api = RepClient::new(&server.base, CLIENT, None).unwrap();
    let a = client_api
        .post_json(
            "/v1/events",
            &json!({ "events": [{ "v": 1, "id": "f1", "kind": "file_verdict", "time": 1,
                "proxy": "p1", "host": "dl.test", "file": { "sha256": "ab".repeat(32),
                "size": 12, "content_type": "application/x-msdownload", "verdict": "malicious" } }] }),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(a["accepted"], 1);
    let f = server.events("kind=file_verdict").await;
    assert_eq!(f[0]["file"]["size"], 12);

    // The summary shows it all.
    let s = server
        .admin
        .get("/v1/feedback/summary?since_secs=100000000", WAIT)
        .await
        .unwrap();
    assert_eq!(s["user_reports"][0]["ticket"], ticket.as_str());
    assert_eq!(s["blocks_by_category"][0]["category"], "malware");
    assert_eq!(s["untested_hosts"][0]["host"], "127.0.0.1");
    p.stop().await;
}

#[tokio::test]
async fn feedback_survives_a_server_restart_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::http().await;
    let mut server = feedback_server(dir.path(), Vec::new(), ApiConfig::default()).await;
    let spool = dir.path().join("spool");
    let p = proxy(
        "untested: allow\n",
        &server.base,
        dir.path(),
        "p1",
        &spool,
        |_| {},
    )
    .await;
    p.following_changes().await;
    let st = stats(&p);
    // Traffic flows in a task while the server goes away and comes back.
    let done = Arc::new(AtomicU64::new(0));
    let stop_traffic = CancellationToken::new();
    let traffic = {
        let client = client_from(&p, [127, 0, 0, 1]);
        let (done, stop_traffic, url) = (done.clone(), stop_traffic.clone(), origin.url("/t"));
        tokio::spawn(async move {
            while !stop_traffic.is_cancelled() {
                let r = client.get(&url).send().await.unwrap();
                assert_eq!(r.status(), 200);
                done.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    eventually("traffic before the outage", BOUND, || async {
        done.load(Ordering::SeqCst) >= 30
    })
    .await;
    server.kill().await;
    let at_kill = done.load(Ordering::SeqCst);
    eventually("events spooled during the outage", BOUND, || async {
        st.spooled.load(Ordering::Relaxed) > 0 && done.load(Ordering::SeqCst) >= at_kill + 30
    })
    .await;
    server.restart().await;
    let at_restart = done.load(Ordering::SeqCst);
    eventually("traffic after the restart", BOUND, || async {
        done.load(Ordering::SeqCst) >= at_restart + 30
    })
    .await;
    stop_traffic.cancel();
    traffic.await.unwrap();
    let total = done.load(Ordering::SeqCst) as usize;
    let events = server
        .wait_events("kind=untested", |ev| ev.len() >= total)
        .await;
    let mut ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(events.len(), total, "one event per request");
    assert_eq!(ids.len(), total, "every id once");
    assert!(st.replayed.load(Ordering::Relaxed) > 0);
    assert_eq!(st.dropped_queue.load(Ordering::Relaxed), 0);
    assert_eq!(st.dropped_spool.load(Ordering::Relaxed), 0);
    println!(
        "requests {total}, spooled {}, replayed {}, duplicates seen by the server {}",
        st.spooled.load(Ordering::Relaxed),
        st.replayed.load(Ordering::Relaxed),
        st.duplicates.load(Ordering::Relaxed)
    );
    p.stop().await;
}

#[tokio::test]
async fn feedback_spool_is_replayed_by_the_next_proxy_run() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::http().await;
    let mut server = feedback_server(dir.path(), Vec::new(), ApiConfig::default()).await;
    let spool = dir.path().join("spool");
    let policy = "untested: allow\n";
    let p = proxy(policy, &server.base, dir.path(), "p1", &spool, |_| {}).await;
    p.following_changes().await;
    let client = client_from(&p, [127, 0, 0, 1]);
    // One request while the server is up (the host's answer is cached), then none answers.
    assert_eq!(
        client.get(origin.url("/a")).send().await.unwrap().status(),
        200
    );
    server
        .wait_events("kind=untested", |ev| ev.len() == 1)
        .await;
    server.kill().await;
    for i in 0..20 {
        let r = client
            .get(origin.url(&format!("/b{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    p.stop().await;
    let segments = std::fs::read_dir(&spool)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".jsonl")
        })
        .count();
    assert!(
        segments > 0,
        "the stopped proxy left its events in the spool"
    );
    // The server is back; a new proxy run on the same spool delivers them.
    server.restart().await;
    let p = proxy(policy, &server.base, dir.path(), "p1", &spool, |_| {}).await;
    let ev = server
        .wait_events("kind=untested", |ev| ev.len() >= 21)
        .await;
    assert_eq!(ev.len(), 21);
    let urls: Vec<&str> = ev.iter().map(|e| e["url"].as_str().unwrap()).collect();
    for i in 0..20 {
        // Canonical URLs leave the port out.
        let want = format!("http://127.0.0.1/b{i}");
        assert!(urls.contains(&want.as_str()), "{want} missing");
    }
    eventually("the spool is emptied", BOUND, || async {
        feedback(&p).spool_events() == 0
    })
    .await;
    p.stop().await;
}

#[tokio::test]
async fn feedback_full_spool_counts_drops() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::http().await;
    let server = feedback_server(dir.path(), Vec::new(), ApiConfig::default()).await;
    let spool = dir.path().join("spool");
    // Room for about one event.
    let p = proxy(
        "untested: allow\n",
        &server.base,
        dir.path(),
        "p1",
        &spool,
        |c| c.feedback.spool_max_bytes = 600,
    )
    .await;
    p.following_changes().await;
    let client = client_from(&p, [127, 0, 0, 1]);
    assert_eq!(
        client.get(origin.url("/a")).send().await.unwrap().status(),
        200
    );
    server
        .wait_events("kind=untested", |ev| ev.len() == 1)
        .await;
    let mut server = server;
    server.kill().await;
    let st = stats(&p);
    for i in 0..30 {
        let r = client
            .get(origin.url(&format!("/x{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "requests never fail because of feedback");
        // Spooled or dropped before the response came.
        assert_eq!(
            st.spooled.load(Ordering::Relaxed) + st.dropped_spool.load(Ordering::Relaxed),
            i + 2
        );
        if st.dropped_spool.load(Ordering::Relaxed) > 0 {
            break;
        }
    }
    assert!(
        st.dropped_spool.load(Ordering::Relaxed) > 0,
        "drops are counted"
    );
    assert!(feedback(&p).spool_bytes() <= 600);
    p.stop().await;
}

#[tokio::test]
async fn feedback_a_stalled_server_does_not_slow_requests() {
    // A "server" that accepts connections, reads requests and never answers; it counts
    // the event posts it holds.
    let stall = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", stall.local_addr().unwrap());
    let accepted = Arc::new(AtomicU64::new(0));
    let held = {
        let accepted = accepted.clone();
        tokio::spawn(async move {
            let tasks = tokio_util::task::TaskTracker::new();
            while let Ok((mut s, _)) = stall.accept().await {
                let accepted = accepted.clone();
                tasks.spawn(async move {
                    use tokio::io::AsyncReadExt as _;
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    let mut counted = false;
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        head.extend_from_slice(&buf[..n]);
                        if !counted && head.starts_with(b"POST /v1/events") {
                            counted = true;
                            accepted.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                });
            }
        })
    };
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    // The blocked list decides without any lookup; each block is an event.
    let policy = "lists:\n  blocked:\n    - blocked.test\n";
    let p = proxy(policy, &base, dir.path(), "p1", &spool, |c| {
        c.feedback.send_timeout_ms = 600_000;
        c.feedback.batch_events = 5;
    })
    .await;
    let st = stats(&p);
    let client = client_from(&p, [127, 0, 0, 1]);
    assert_eq!(
        client
            .get("http://blocked.test/0")
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    eventually("the sender is stuck in a POST", BOUND, || async {
        accepted.load(Ordering::SeqCst) > 0
    })
    .await;
    // While it is stuck, requests complete (concurrently, 200 of them).
    let mut tasks = Vec::new();
    for i in 0..200 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            client
                .get(format!("http://blocked.test/{i}"))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 403);
    }
    assert_eq!(st.sent.load(Ordering::Relaxed), 0, "nothing was delivered");
    assert!(
        st.queued.load(Ordering::Relaxed) + st.dropped_queue.load(Ordering::Relaxed) >= 201,
        "every decision was handed over without waiting"
    );
    // Shutdown does not hang on the stalled source: the events are spooled.
    p.stop().await;
    let spooled = webrep::feedback::spool::Spool::open(&spool, u64::MAX).unwrap();
    assert!(spooled.events() > 0, "the batch in flight was spooled");
    held.abort();
}

#[tokio::test]
async fn feedback_escalation_reaches_another_proxy_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::http().await;
    let rules = vec![EscalationRule {
        kinds: vec![Kind::UserReport, Kind::FileVerdict],
        distinct_clients: 3,
        distinct_reporters: 1,
        window_secs: 3600,
        score: Score::new(70).unwrap(),
        category: Some(Category::parse("spam").unwrap()),
    }];
    // Long TTLs: only the change stream can make the second proxy learn in time.
    let api = ApiConfig {
        ttl_secs: 3600,
        untested_ttl_secs: 3600,
        ..ApiConfig::default()
    };
    let server = feedback_server(dir.path(), rules, api).await;
    // The reporting proxy blocks untested sites; the other one (high security) allows them.
    let reporting = proxy(
        "untested: block\n",
        &server.base,
        dir.path(),
        "pa",
        &dir.path().join("spool-a"),
        |_| {},
    )
    .await;
    let high = proxy(
        "security_level: high\nuntested: allow\n",
        &server.base,
        dir.path(),
        "pb",
        &dir.path().join("spool-b"),
        |_| {},
    )
    .await;
    let url = origin.url("/page");
    let watcher = client_from(&high, [127, 0, 0, 1]);
    assert_eq!(watcher.get(&url).send().await.unwrap().status(), 200);

    let mut last_report = Instant::now();
    for (i, local) in [[127, 0, 0, 1], [127, 0, 0, 2], [127, 0, 0, 3]]
        .into_iter()
        .enumerate()
    {
        let c = client_from(&reporting, local);
        let page = json_page(&c, &url).await;
        let link = page["report"].as_str().unwrap();
        let r = report_mistake(&c, &origin.url(""), link, "").await;
        assert_eq!(r.status(), 200, "report {i}");
        last_report = Instant::now();
        if i < 2 {
            // Not yet: fewer than three distinct clients.
            server
                .wait_events("kind=user_report", |ev| ev.len() == i + 1)
                .await;
            assert_eq!(watcher.get(&url).send().await.unwrap().status(), 200);
        }
    }
    // The second proxy blocks the host, long before its cached answer's TTL (an hour).
    let page = eventually_ok("the escalation reaches the proxy", BOUND, || async {
        let r = watcher
            .get(&url)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            403 => Ok(serde_json::from_str::<Value>(&r.text().await.unwrap()).unwrap()),
            status => Err(status),
        }
    })
    .await;
    println!(
        "escalation: third report to block on the other proxy took {:?}",
        last_report.elapsed()
    );
    assert_eq!(
        (
            page["reason"].as_str(),
            page["risk"].as_str(),
            page["score"].as_u64()
        ),
        (Some("risk"), Some("suspicious"), Some(70))
    );
    // Listed, and reverted by an ordinary write: the proxy forgets it again.
    let list = server.admin.get("/v1/escalations", WAIT).await.unwrap();
    assert_eq!(list["escalations"][0]["key"], "127.0.0.1/");
    assert_eq!(list["escalations"][0]["clients"], 3);
    let r = server
        .admin
        .post_json(
            "/v1/escalations/revert",
            &json!({ "key": "127.0.0.1/" }),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(r["reverted"], "127.0.0.1/");
    eventually("the revert reaches the proxy", BOUND, || async {
        watcher.get(&url).send().await.unwrap().status() == 200
    })
    .await;
    reporting.stop().await;
    high.stop().await;
}

#[tokio::test]
async fn feedback_anonymized_clients_are_keyed_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let server = feedback_server(dir.path(), Vec::new(), ApiConfig::default()).await;
    server
        .write(json!({ "upsert": [{ "key": "danger.test/", "score": 5 }] }))
        .await;
    let p = proxy(
        "feedback:\n  anonymize_clients: true\n",
        &server.base,
        dir.path(),
        "p1",
        &dir.path().join("spool"),
        |_| {},
    )
    .await;
    for local in [[127, 0, 0, 1], [127, 0, 0, 1], [127, 0, 0, 2]] {
        json_page(&client_from(&p, local), "http://danger.test/").await;
    }
    let ev = server.wait_events("kind=blocked", |ev| ev.len() == 3).await;
    let clients: Vec<&str> = ev.iter().map(|e| e["client"].as_str().unwrap()).collect();
    assert!(
        clients
            .iter()
            .all(|c| c.starts_with("anon:") && !c.contains("127.")),
        "{clients:?}"
    );
    let mut distinct = clients.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 2, "one pseudonym per client: {clients:?}");
    p.stop().await;
}

#[tokio::test]
async fn feedback_a_10000_byte_url_costs_no_other_event() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::http().await;
    let server = feedback_server(dir.path(), Vec::new(), ApiConfig::default()).await;
    // A long batch window: the long URL's event and the others go out together.
    let p = proxy(
        "lists:\n  blocked:\n    - blocked.test\nuntested: allow\n",
        &server.base,
        dir.path(),
        "p1",
        &dir.path().join("spool"),
        |c| c.feedback.batch_interval_ms = 2000,
    )
    .await;
    p.following_changes().await;
    let long = origin.url(&format!("/{}", "x".repeat(10_000)));
    let r = client_from(&p, [127, 0, 0, 1])
        .get(&long)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Five other users' blocks, at the same time.
    let mut tasks = Vec::new();
    for i in 2..7u8 {
        let c = client_from(&p, [127, 0, 0, i]);
        tasks.push(tokio::spawn(async move {
            c.get(format!("http://blocked.test/u{i}"))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 403);
    }
    let blocked = server.wait_events("kind=blocked", |ev| ev.len() >= 5).await;
    let mut clients: Vec<&str> = blocked
        .iter()
        .map(|e| e["client"].as_str().unwrap())
        .collect();
    clients.sort_unstable();
    assert_eq!(
        clients,
        [
            "127.0.0.2",
            "127.0.0.3",
            "127.0.0.4",
            "127.0.0.5",
            "127.0.0.6"
        ]
    );
    let untested = server
        .wait_events("kind=untested", |ev| !ev.is_empty())
        .await;
    let url = untested[0]["url"].as_str().unwrap();
    assert!(url.len() <= webrep::api::events::MAX_URL, "{}", url.len());
    assert!(
        url.starts_with(&format!("http://127.0.0.1/{}", "x".repeat(100))),
        "{url}"
    );
    assert!(url.contains(webrep::api::events::CUT_MARKER), "{url}");
    assert_eq!(stats(&p).rejected.load(Ordering::Relaxed), 0);
    p.stop().await;
}

#[tokio::test]
async fn feedback_a_batch_refused_whole_is_split_until_the_refused_event_is_alone() {
    let dir = tempfile::tempdir().unwrap();
    // A server taking bodies of 8000 bytes at most: one event of a 6500-byte URL fits, two
    // do not, and one of a (cut) 8192-byte URL never does.
    let server = feedback_server(
        dir.path(),
        Vec::new(),
        ApiConfig {
            max_body: 8000,
            ..ApiConfig::default()
        },
    )
    .await;
    let p = proxy(
        "lists:\n  blocked:\n    - blocked.test\n",
        &server.base,
        dir.path(),
        "p1",
        &dir.path().join("spool"),
        |c| c.feedback.batch_interval_ms = 2000,
    )
    .await;
    let c = client_from(&p, [127, 0, 0, 1]);
    for i in 0..6 {
        let len = if i == 3 { 10_000 } else { 6500 };
        let url = format!("http://blocked.test/{i}{}", "y".repeat(len));
        assert_eq!(c.get(url).send().await.unwrap().status(), 403);
    }
    let st = stats(&p);
    eventually("the too large event is refused", BOUND, || async {
        st.rejected.load(Ordering::Relaxed) == 1
    })
    .await;
    let ev = server.wait_events("kind=blocked", |ev| ev.len() >= 5).await;
    let mut first: Vec<char> = ev
        .iter()
        .map(|e| e["url"].as_str().unwrap().chars().nth(20).unwrap())
        .collect();
    first.sort_unstable();
    assert_eq!(first, ['0', '1', '2', '4', '5']);
    p.stop().await;
}

#[tokio::test]
async fn feedback_api_refuses_bad_events_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let server = feedback_server(
        dir.path(),
        Vec::new(),
        ApiConfig {
            max_batch: 4,
            ..ApiConfig::default()
        },
    )
    .await;
    let http = reqwest::Client::new();
    let post = |body: String, token: &'static str| {
        let http = http.clone();
        let url = format!("{}/v1/events", server.base);
        async move {
            let r = http
                .post(url)
                .bearer_auth(token)
                .body(body)
                .send()
                .await
                .unwrap();
            status_and_json(r).await
        }
    };
    let ev = |id: &str| json!({ "v": 1, "id": id, "kind": "untested", "time": 1, "proxy": "p" });
    // Only a body that is not a batch is refused whole.
    let (s, v) = post("{not json".into(), CLIENT).await;
    assert_eq!(s, 400);
    assert!(v["error"].as_str().unwrap().contains("bad JSON"), "{v}");
    let (s, _) = post(
        json!({ "events": [ev("a"), ev("b"), ev("c"), ev("d"), ev("e")] }).to_string(),
        CLIENT,
    )
    .await;
    assert_eq!(s, 413);
    assert!(
        server.events("").await.is_empty(),
        "nothing stored from refused batches"
    );
    // Bad events between good ones: refused alone, the others stored.
    let mut long = ev("c");
    long["url"] = json!(format!("http://a.test/{}", "x".repeat(9000)));
    let (s, v) = post(
        json!({ "events": [ev("a"), { "v": 1, "id": "b", "kind": "bogus", "time": 1, "proxy": "p" }, long, ev("d")] })
            .to_string(),
        CLIENT,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (
            v["accepted"].as_u64(),
            v["duplicate"].as_u64(),
            v["rejected"].as_u64()
        ),
        (Some(2), Some(0), Some(2)),
        "{v}"
    );
    let results = v["results"].as_array().unwrap();
    let status: Vec<&str> = results
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(status, ["accepted", "rejected", "rejected", "accepted"]);
    let ids: Vec<&str> = results.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["a", "b", "c", "d"]);
    assert!(
        results[1]["error"]
            .as_str()
            .unwrap()
            .starts_with("events[1]: unknown variant")
    );
    assert!(
        results[2]["error"]
            .as_str()
            .unwrap()
            .contains("`url` longer than 8192 bytes")
    );
    assert!(results[0].get("error").is_none());
    let mut stored: Vec<String> = server
        .events("")
        .await
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    stored.sort();
    assert_eq!(stored, ["a", "d"]);
    // A replay: duplicates, per event.
    let (s, v) = post(json!({ "events": [ev("a"), ev("e")] }).to_string(), CLIENT).await;
    assert_eq!(
        (s, v["accepted"].as_u64(), v["duplicate"].as_u64()),
        (200, Some(1), Some(1))
    );
    assert_eq!(v["results"][0]["status"], "duplicate");
    assert_eq!(v["results"][1]["status"], "accepted");
    // Reading needs the admin token.
    let r = http
        .get(format!("{}/v1/events", server.base))
        .bearer_auth(CLIENT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http
        .post(format!("{}/v1/events", server.base))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = server
        .admin
        .post_json(
            "/v1/escalations/revert",
            &json!({ "key": "none.test/" }),
            WAIT,
        )
        .await;
    assert!(r.unwrap_err().to_string().contains("404"));
}

/// A `webrep` child process (`proxy` or `server`): its listen address, read from its log,
/// and every line it logs.
struct Process {
    process: Webrep,
    addr: std::net::SocketAddr,
    /// The admin listener, when the config has one (logged before the listen address).
    admin: Option<std::net::SocketAddr>,
}

impl Process {
    /// Runs `webrep <command> --config cfg` with `stdout`; `None` when it exits before it
    /// listens (a port not free yet).
    async fn start(command: &str, cfg: &Path, stdout: std::process::Stdio) -> Option<Process> {
        let mut cmd = webrep([command, "--config"]);
        cmd.arg(cfg).stdout(stdout);
        let mut process = Webrep::spawn(cmd);
        let listen = process.wait_field(&["listen.addr=", " listen="]).await?;
        let admin = process.seen_field("admin listener", "addr=");
        Some(Process {
            addr: listen.parse().unwrap(),
            admin: admin.and_then(|a| a.parse().ok()),
            process,
        })
    }

    /// Waits (bounded) until it has logged a line containing `needle`.
    async fn wait_logged(&self, needle: &str) {
        self.process.wait_logged(needle).await;
    }

    /// `kill -9`, and waits for the process to be gone.
    async fn kill_9(mut self) {
        self.process.kill_9().await;
    }

    /// Its `/stats` page (on its admin listener).
    async fn stats(&self) -> Value {
        let admin = self.admin.expect("the config has an admin listener");
        init_crypto();
        let r = reqwest::Client::builder()
            .no_proxy()
            .timeout(WAIT)
            .build()
            .unwrap()
            .get(format!("http://{admin}/stats"))
            .send()
            .await
            .unwrap();
        serde_json::from_str(&r.text().await.unwrap()).unwrap()
    }
}

/// Blocked requests through `proxy` (pages `{prefix}1`, `{prefix}2`...) until `done` holds
/// (bounded).
async fn block_until<F: std::future::Future<Output = bool>>(
    proxy: &Process,
    prefix: &str,
    what: &str,
    done: impl Fn() -> F,
) {
    let mut i = 0;
    eventually(what, BOUND, || {
        i += 1;
        let (name, done) = (format!("{prefix}{i}"), &done);
        async move {
            block(proxy, &name).await;
            done().await
        }
    })
    .await;
}

/// The `webrep proxy` binary with `cfg`.
async fn spawn_proxy(cfg: &Path) -> Process {
    Process::start("proxy", cfg, std::process::Stdio::null())
        .await
        .expect("the proxy starts")
}

/// Events in the spool's segment files (lines).
fn spool_lines(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".jsonl"))
                .map(|e| {
                    std::fs::read_to_string(e.path())
                        .unwrap_or_default()
                        .lines()
                        .count()
                })
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn feedback_spool_survives_kill_9_of_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::http().await;
    let mut server = feedback_server(dir.path(), Vec::new(), ApiConfig::default()).await;
    server.kill().await;
    let spool = dir.path().join("spool");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "untested: allow\n").unwrap();
    let cfg = dir.path().join("webrep.yaml");
    std::fs::write(
        &cfg,
        format!(
            "{BASE}admin:\n  listen: \"127.0.0.1:0\"\npolicy:\n  enabled: true\n  file: {:?}\nreputation:\n  sources:\n    - {{ name: s0, url: \"{}\", token: \"{CLIENT}\", timeout_ms: 500 }}\n\
             feedback:\n  proxy_id: pk\n  spool_dir: {:?}\n  batch_interval_ms: 20\n  retry_interval_ms: 100\n\
             \x20 aggregate_secs: 0\n\
             access_log:\n  enabled: false\nlog:\n  level: info\n  format: text\n",
            policy.display().to_string(),
            server.base,
            spool.display().to_string()
        ),
    )
    .unwrap();
    // Every event on its own (aggregates wait in memory for their interval, so a kill -9
    // loses them; that is documented, and not what this test is about).
    let child = spawn_proxy(&cfg).await;
    let addr = child.addr;
    init_crypto();
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(format!("http://{addr}")).unwrap())
        .timeout(WAIT)
        .build()
        .unwrap();
    for i in 0..10 {
        let r = client
            .get(origin.url(&format!("/k{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // Every event was in the spool before its response went out.
    assert_eq!(spool_lines(&spool), 10);
    child.kill_9().await;
    server.restart().await;
    let child = spawn_proxy(&cfg).await;
    let ev = server
        .wait_events("kind=reputation_unavailable", |ev| ev.len() >= 10)
        .await;
    assert_eq!(ev.len(), 10);
    assert!(ev.iter().all(|e| e["proxy"] == "pk"));
    eventually("the spool is emptied", BOUND, || async {
        spool_lines(&spool) == 0
    })
    .await;
    child.kill_9().await;
}

/// `webrep server` as a child process on a file-backed store, restarted on the same port.
struct ServerProcess {
    cfg: PathBuf,
    process: Option<Process>,
    admin: RepClient,
}

impl ServerProcess {
    async fn start(dir: &Path) -> ServerProcess {
        let cfg = dir.join("server.yaml");
        let write = |listen: &str| {
            std::fs::write(
                &cfg,
                format!(
                    "server:\n  listen: \"{listen}\"\n  store: {:?}\n  client_tokens: [\"{CLIENT}\"]\n  admin_tokens: [\"{ADMIN}\"]\n\
                     log:\n  level: info\n  format: text\n",
                    dir.join("server.db").display().to_string()
                ),
            )
            .unwrap();
        };
        write("127.0.0.1:0");
        let process = Process::start("server", &cfg, std::process::Stdio::null())
            .await
            .expect("the server starts");
        // Restarts listen where the proxy expects it.
        write(&process.addr.to_string());
        init_crypto();
        ServerProcess {
            admin: RepClient::new(&format!("http://{}", process.addr), ADMIN, None).unwrap(),
            cfg,
            process: Some(process),
        }
    }

    fn base(&self) -> &str {
        self.admin.base()
    }

    async fn kill_9(&mut self) {
        if let Some(p) = self.process.take() {
            p.kill_9().await;
        }
    }

    /// Starts it again on the same port (waiting for the port, bounded).
    async fn restart(&mut self) {
        let cfg = &self.cfg;
        let p = eventually_ok("the server starts again", BOUND, || async {
            Process::start("server", cfg, std::process::Stdio::null())
                .await
                .ok_or("it exited before it listened")
        })
        .await;
        self.process = Some(p);
    }

    /// The ids of the `blocked` events stored.
    async fn blocked_ids(&self) -> std::collections::HashSet<String> {
        let v = self
            .admin
            .get("/v1/events?kind=blocked&limit=100000", WAIT)
            .await
            .unwrap();
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// Four clients asking `proxy` for blocked URLs until it stops answering; the ticket of
/// every block page received goes into `answered`.
fn blocked_traffic(
    proxy: std::net::SocketAddr,
    round: usize,
    answered: &Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..4)
        .map(|t| {
            let client = reqwest::Client::builder()
                .proxy(reqwest::Proxy::all(format!("http://{proxy}")).unwrap())
                .timeout(WAIT)
                .build()
                .unwrap();
            let answered = answered.clone();
            tokio::spawn(async move {
                for i in 0.. {
                    let url = format!("http://blocked.test/r{round}/t{t}/{i}");
                    let sent = client.get(url).header("accept", "application/json").send();
                    let Ok(r) = sent.await else { return };
                    assert_eq!(r.status(), 403);
                    let Ok(text) = r.text().await else { return };
                    let page: Value = serde_json::from_str(&text).unwrap();
                    let ticket = page["ticket"].as_str().unwrap().to_owned();
                    answered.lock().unwrap().insert(ticket);
                }
            })
        })
        .collect()
}

/// Waits (bounded) until `answered` holds at least `n` tickets.
async fn answered_at_least(
    answered: &Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    n: usize,
) {
    eventually("requests go on being answered", BOUND, || async {
        answered.lock().unwrap().len() >= n
    })
    .await;
}

/// Every blocked request whose page a client received has its event stored at the server,
/// across `kill -9`s of the proxy while it serves, and one of the server mid-stream.
/// `WEBREP_KILL_ROUNDS` (default 3) sets how many times the proxy is killed.
#[tokio::test]
async fn feedback_kill_9_of_proxy_and_server_loses_no_event() {
    let rounds: usize = std::env::var("WEBREP_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path()).await;
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "lists:\n  blocked:\n    - blocked.test\n").unwrap();
    let cfg = dir.path().join("webrep.yaml");
    std::fs::write(
        &cfg,
        format!(
            "{BASE}admin:\n  listen: \"127.0.0.1:0\"\npolicy:\n  enabled: true\n  file: {:?}\nreputation:\n  sources:\n    - {{ name: s0, url: \"{}\", token: \"{CLIENT}\", timeout_ms: 1000 }}\n\
             feedback:\n  proxy_id: pk\n  spool_dir: {:?}\n  batch_interval_ms: 20\n  retry_interval_ms: 100\n\
             access_log:\n  enabled: false\nlog:\n  level: info\n  format: text\n",
            policy.display().to_string(),
            server.base(),
            dir.path().join("spool").display().to_string()
        ),
    )
    .unwrap();
    let answered = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    for round in 0..rounds {
        let proxy = spawn_proxy(&cfg).await;
        let traffic = blocked_traffic(proxy.addr, round, &answered);
        let start = answered.lock().unwrap().len();
        answered_at_least(&answered, start + 150).await;
        if round == 1 {
            server.kill_9().await;
            answered_at_least(&answered, start + 300).await;
            server.restart().await;
            answered_at_least(&answered, start + 450).await;
        }
        // Killed while it serves: some events delivered, some not yet.
        proxy.kill_9().await;
        for t in traffic {
            t.await.unwrap();
        }
    }
    // A new run on the same spool delivers the rest.
    let proxy = spawn_proxy(&cfg).await;
    let answered = answered.lock().unwrap().clone();
    let stored = eventually_ok(
        "every answered request's event is stored",
        BOUND,
        || async {
            let stored = server.blocked_ids().await;
            if answered.is_subset(&stored) {
                Ok(stored)
            } else {
                Err(answered.difference(&stored).cloned().collect::<Vec<_>>())
            }
        },
    )
    .await;
    let lost = answered.difference(&stored).count();
    println!(
        "kill -9: proxy {rounds} times, server once; block pages received {}, events stored {}, lost {lost}",
        answered.len(),
        stored.len()
    );
    assert_eq!(lost, 0, "events of answered requests lost");
    proxy.kill_9().await;
    server.kill_9().await;
}

/// Segment files in the spool directory.
fn segment_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".jsonl"))
                .count()
        })
        .unwrap_or(0)
}

/// A `webrep proxy` binary blocking `blocked.test`, reporting to `server`, its spool in
/// `dir/spool`, with `extra` in its `feedback:` section and `admin` as its `admin:` section.
async fn blocking_proxy(dir: &Path, server: &str, extra: &str, admin: &str) -> Process {
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, "lists:\n  blocked:\n    - blocked.test\n").unwrap();
    let cfg = dir.join("webrep.yaml");
    std::fs::write(
        &cfg,
        format!(
            "{BASE}admin:\n  listen: \"127.0.0.1:0\"\npolicy:\n  enabled: true\n  file: {:?}\nreputation:\n  sources:\n    - {{ name: s0, url: \"{server}\", token: \"{CLIENT}\", timeout_ms: 1000 }}\n\
             feedback:\n  proxy_id: pk\n  spool_dir: {:?}\n  batch_interval_ms: 20\n  retry_interval_ms: 100\n{extra}\
             {admin}access_log:\n  enabled: false\nlog:\n  level: info\n  format: text\n",
            policy.display().to_string(),
            dir.join("spool").display().to_string()
        ),
    )
    .unwrap();
    spawn_proxy(&cfg).await
}

/// Asks `proxy` for `http://blocked.test/{path}`: a block page.
async fn block(proxy: &Process, path: &str) {
    init_crypto();
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(format!("http://{}", proxy.addr)).unwrap())
        .timeout(WAIT)
        .build()
        .unwrap();
    let r = client
        .get(format!("http://blocked.test/{path}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "requests never fail because of feedback");
}

#[tokio::test]
async fn feedback_an_unwritable_spool_is_logged_and_counted_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = feedback_server(dir.path(), Vec::new(), ApiConfig::default()).await;
    let proxy = blocking_proxy(dir.path(), &server.base, "", "").await;
    let spool = dir.path().join("spool");
    block(&proxy, "a").await;
    server.wait_events("kind=blocked", |ev| ev.len() == 1).await;
    // Delivered: the spool holds no segment until the next event.
    eventually("the delivered segment goes", BOUND, || async {
        segment_files(&spool) == 0
    })
    .await;
    // The spool directory cannot be written any more (a regular file in its place; root or
    // not): logged and counted, and the event still goes out, from memory.
    let moved = dir.path().join("spool.moved");
    std::fs::rename(&spool, &moved).unwrap();
    std::fs::write(&spool, "").unwrap();
    block(&proxy, "b").await;
    proxy.wait_logged("feedback spool not writable").await;
    assert_eq!(proxy.stats().await["feedback"]["spool_write_failed"], 1);
    server.wait_events("kind=blocked", |ev| ev.len() == 2).await;
    // Writable again: events are spooled again (after a pause of a second at most).
    std::fs::remove_file(&spool).unwrap();
    std::fs::rename(&moved, &spool).unwrap();
    block_until(&proxy, "c", "the spool is used again", || async {
        proxy.stats().await["feedback"]["spooled"].as_u64() > Some(1)
    })
    .await;
    let st = proxy.stats().await;
    assert_eq!(st["feedback"]["dropped_queue"], 0, "{st}");
    proxy.kill_9().await;
}

#[tokio::test]
async fn feedback_a_full_spool_is_logged_while_delivery_failures_are_too() {
    let dir = tempfile::tempdir().unwrap();
    // No server: every delivery fails (and is logged).
    let mut server = feedback_server(dir.path(), Vec::new(), ApiConfig::default()).await;
    server.kill().await;
    let proxy = blocking_proxy(dir.path(), &server.base, "  spool_max_bytes: 3000\n", "").await;
    let admin = proxy.admin.expect("the proxy has an admin listener");
    // Requests until the first event is dropped for a full spool; then no more.
    block_until(&proxy, "f", "the spool fills up", || async {
        let text = scrape(admin).await;
        sample(
            &text,
            "webrep_feedback_events_total{outcome=\"dropped_spool\"}",
        ) > 0.0
    })
    .await;
    // That first drop is logged although the delivery failures were logged just before.
    proxy.wait_logged("feedback not delivered").await;
    proxy.wait_logged("feedback spool full").await;
    let st = proxy.stats().await;
    assert_eq!(st["feedback"]["dropped_spool"], 1, "{st}");
    assert!(
        st["feedback"]["spool_bytes"].as_u64().unwrap() <= 3000,
        "{st}"
    );
    proxy.kill_9().await;
}

#[tokio::test]
async fn access_log_lines_lost_on_a_closed_stdout_are_logged_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("webrep.yaml");
    std::fs::write(
        &cfg,
        crate::harness::with_choices(&format!("{BASE}admin:\n  listen: \"127.0.0.1:0\"\naccess_log:\n  path: \"-\"\nlog:\n  level: info\n  format: text\n")),
    )
    .unwrap();
    let mut proxy = Process::start("proxy", &cfg, std::process::Stdio::piped())
        .await
        .expect("the proxy starts");
    // Nobody reads the access log: its pipe is closed.
    drop(proxy.process.child.stdout.take());
    init_crypto();
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(WAIT)
        .build()
        .unwrap();
    eventually("lost access log lines are counted", BOUND, || async {
        let r = client
            .get(format!("http://{}/healthz", proxy.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        proxy.stats().await["access_log_write_failed"].as_u64() > Some(0)
    })
    .await;
    proxy.wait_logged("access log write failed").await;
    proxy.kill_9().await;
}

/// One rule on user reports: score 70 once `clients` distinct clients, sent with `reporters`
/// distinct tokens, reported a host within an hour.
fn report_rule(clients: u32, reporters: u32) -> Vec<EscalationRule> {
    vec![EscalationRule {
        kinds: vec![Kind::UserReport],
        distinct_clients: clients,
        distinct_reporters: reporters,
        window_secs: 3600,
        score: Score::new(70).unwrap(),
        category: None,
    }]
}

fn now_ms() -> i64 {
    webrep::clock::unix_millis()
}

#[tokio::test]
async fn feedback_cli_prints_the_summary_and_escalations() {
    let dir = tempfile::tempdir().unwrap();
    let server = feedback_server(dir.path(), report_rule(2, 1), ApiConfig::default()).await;
    let now = now_ms();
    let ev = |id: &str, client: &str| {
        json!({ "v": 1, "id": id, "kind": "user_report", "time": now, "proxy": "p1",
            "client": client, "host": "odd.test", "ticket": format!("t-{id}"), "comment": "looks fine" })
    };
    let mut blocked = ev("b1", "10.0.0.9");
    blocked["kind"] = json!("blocked");
    blocked["rule"] = json!("r-office");
    blocked["categories"] = json!(["gambling"]);
    RepClient::new(&server.base, CLIENT, None)
        .unwrap()
        .post_json(
            "/v1/events",
            &json!({ "events": [ev("a", "10.0.0.1"), ev("b", "10.0.0.2"), blocked] }),
            WAIT,
        )
        .await
        .unwrap();
    let token = dir.path().join("admin-token");
    std::fs::write(&token, format!("{ADMIN}\n")).unwrap();
    let run = |args: &'static [&'static str]| {
        let (base, token) = (server.base.clone(), token.clone());
        async move {
            let mut cmd = webrep(["feedback"]);
            cmd.args(args)
                .arg("--server")
                .arg(&base)
                .arg("--token-file")
                .arg(&token);
            let out = run_to_end(cmd).await;
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    let (code, text, err) = run(&["summary"]).await;
    assert_eq!(code, Some(0), "{err}");
    for want in [
        "user_report: 2",
        "t-a",
        "\"looks fine\"",
        "r-office 1",
        "gambling 1",
    ] {
        assert!(text.contains(want), "{want:?} missing in:\n{text}");
    }
    let (code, text, _) = run(&["escalations"]).await;
    assert_eq!(code, Some(0));
    assert!(
        text.contains("odd.test/ score=70") && text.contains("clients=2"),
        "{text}"
    );
    let (code, text, _) = run(&["revert", "odd.test/"]).await;
    assert_eq!(code, Some(0));
    assert!(text.contains("reverted odd.test/"), "{text}");
    let (code, _, err) = run(&["revert", "odd.test/"]).await;
    assert_eq!(code, Some(65), "a second revert is refused: {err}");
}

#[tokio::test]
async fn one_token_cannot_escalate_a_host_alone_when_rules_ask_for_two_reporters() {
    let dir = tempfile::tempdir().unwrap();
    let server = feedback_server(dir.path(), report_rule(3, 2), ApiConfig::default()).await;
    let now = now_ms();
    let ev = |i: u32| {
        json!({ "v": 1, "id": format!("e{i}"), "kind": "user_report", "time": now,
            "proxy": format!("p{i}"), "client": format!("10.0.0.{i}"), "host": "target.test" })
    };
    // One token claims three proxies and three clients: not enough on its own.
    let one = RepClient::new(&server.base, CLIENT, None).unwrap();
    let r = one
        .post_json(
            "/v1/events",
            &json!({ "events": [ev(1), ev(2), ev(3)] }),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(r["accepted"], 3);
    assert_eq!(r["escalated"], json!([]));
    // A second token (here the admin's) reports once: two reporters, four clients.
    let r = server
        .admin
        .post_json("/v1/events", &json!({ "events": [ev(4)] }), WAIT)
        .await
        .unwrap();
    assert_eq!(r["escalated"], json!(["target.test/"]));
    // Each stored event names the token it came with by a fingerprint, never the token.
    let events = server.events("host=target.test").await;
    let reporters: std::collections::BTreeSet<&str> = events
        .iter()
        .map(|e| e["reporter"].as_str().expect("a reporter"))
        .collect();
    assert_eq!(
        reporters,
        [
            webrep::repserver::events::reporter_id(CLIENT),
            webrep::repserver::events::reporter_id(ADMIN)
        ]
        .iter()
        .map(String::as_str)
        .collect()
    );
    assert!(reporters.iter().all(|r| r.len() == 16 && *r != CLIENT));
}

/// Interception asks the filter more than once per tunnel: the CONNECT, the SNI when it names
/// another host, and every request inside. Each request is counted and reported once, with
/// its own id; the SNI check only decides.
#[tokio::test]
async fn intercepted_requests_are_recorded_once_each_with_their_own_id() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::https(&TestCa::new()).await;
    let port = origin.addr.port();
    let server = feedback_server(dir.path(), Vec::new(), ApiConfig::default()).await;
    server
        .write(json!({ "upsert": [
            { "key": "danger.test/", "score": 10, "categories": ["malware"] },
        ]}))
        .await;
    let ca_dir = dir.path().join("certs");
    let p = proxy(
        "security_level: medium\nuntested: allow\n",
        &server.base,
        dir.path(),
        "p1",
        &dir.path().join("spool"),
        |c| {
            c.proxy.connect_ports = vec![port];
            c.intercept.enabled = true;
            c.intercept.create_ca = true;
            c.intercept.ca_dir = ca_dir.clone();
        },
    )
    .await;
    init_crypto();

    // An allowed CONNECT (127.0.0.1 is untested) whose ClientHello names a blocked host: the
    // tunnel closes, and only the CONNECT is recorded.
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(
        format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    assert!(read_head(&mut s).await.starts_with("HTTP/1.1 200"));
    let tls = rustls::ClientConfig::builder_with_provider(webrep::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let r = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect("danger.test".try_into().unwrap(), s)
        .await;
    assert!(r.is_err(), "no handshake for a refused SNI");
    let sni_connect = p
        .wait_log(|l| l["method"] == "CONNECT" && l["url"] == format!("127.0.0.1:{port}"))
        .await;

    // A blocked host, intercepted to show the page: the CONNECT and the request inside are
    // two requests, each recorded once.
    let ca_pem = std::fs::read(ca_dir.join("ca.pem")).unwrap();
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(p.url()).unwrap())
        .tls_certs_only([reqwest::Certificate::from_pem(&ca_pem).unwrap()])
        .timeout(WAIT)
        .build()
        .unwrap();
    let page = json_page(&client, &format!("https://danger.test:{port}/x")).await;
    let ticket = page["ticket"].as_str().unwrap().to_owned();
    drop(client);
    let bump_connect = p
        .wait_log(|l| l["method"] == "CONNECT" && l["url"] == format!("danger.test:{port}"))
        .await;

    let actions = p.state.filter.as_ref().unwrap().stats.to_json()["actions"].clone();
    assert_eq!(
        (actions["allow"].as_u64(), actions["block"].as_u64()),
        (Some(1), Some(2)),
        "one decision per request: {actions}"
    );
    assert_eq!(stats(&p).spooled.load(Ordering::Relaxed), 3);
    let events = server.wait_events("", |ev| ev.len() >= 3).await;
    let mut got: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e["kind"].as_str().unwrap(), e["id"].as_str().unwrap()))
        .collect();
    got.sort_unstable();
    let mut want = vec![
        ("untested", sni_connect["id"].as_str().unwrap()),
        ("blocked", bump_connect["id"].as_str().unwrap()),
        ("blocked", ticket.as_str()),
    ];
    want.sort_unstable();
    assert_eq!(got, want);
}

/// The server's feedback summary of the last hour, without its time.
async fn summary(s: &RepServer) -> Value {
    let (status, mut v) = s
        .get(
            "/v1/feedback/summary?since_secs=3600&limit=100",
            Some(ADMIN),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    v.as_object_mut().unwrap().remove("since_ms");
    v
}

/// The hosts the server escalated, with the distinct clients counted, by host.
async fn escalated(s: &RepServer) -> Vec<(String, i64)> {
    let (status, v) = s.get("/v1/escalations", Some(ADMIN)).await;
    assert_eq!(status, 200, "{v}");
    let mut hosts: Vec<(String, i64)> = v["escalations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let host = e["host"].as_str().unwrap().to_owned();
            (host, e["clients"].as_i64().unwrap())
        })
        .collect();
    hosts.sort();
    hosts
}

/// One proxy's share of the traffic of the aggregation test, through `p`: clients .1 and .2
/// ask each of `hosts` `rounds` times, then client .3 asks each host but the last once (so
/// an escalation, which needs three clients, fires only after a host's last request and
/// changes no later decision); each client asks the blocked host twice.
async fn untested_traffic(p: &TestProxy, port: u16, hosts: &[&str], rounds: usize) {
    let clients: Vec<reqwest::Client> = (1..=3).map(|i| client_from(p, [127, 0, 0, i])).collect();
    for c in &clients[..2] {
        for i in 0..rounds {
            for h in hosts {
                let r = c
                    .get(format!("http://{h}:{port}/p{i}"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "{h}");
            }
        }
    }
    for h in &hosts[..hosts.len() - 1] {
        let r = clients[2]
            .get(format!("http://{h}:{port}/last"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{h}");
    }
    for c in &clients {
        for _ in 0..2 {
            let r = c
                .get(format!("http://blocked.test:{port}/"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 403);
        }
    }
}

#[tokio::test]
async fn feedback_untested_traffic_is_aggregated_per_host_and_counted_as_sent_one_by_one() {
    let origin = Origin::http().await;
    let port: u16 = origin
        .url("/")
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.trim_end_matches('/').parse().ok())
        .unwrap();
    let hosts = ["h0.test", "h1.test", "h2.test", "solo.test"];
    let rounds = 10;
    let rules = vec![EscalationRule {
        kinds: vec![Kind::Untested],
        distinct_clients: 3,
        distinct_reporters: 1,
        window_secs: 3600,
        score: Score::new(70).unwrap(),
        category: None,
    }];
    let policy = "security_level: medium\nuntested: allow\n";
    // The same traffic through a proxy that aggregates (over an interval longer than the
    // test: what it holds goes out at its shutdown) and one that does not, each to its own
    // server.
    let mut runs = Vec::new();
    for (id, aggregate_secs) in [("agg", 3600), ("one", 0)] {
        let dir = tempfile::tempdir().unwrap();
        let server = feedback_server(dir.path(), rules.clone(), ApiConfig::default()).await;
        server
            .write(json!({ "upsert": [
                { "key": "blocked.test/", "score": 10, "categories": ["malware"] },
            ]}))
            .await;
        let spool = dir.path().join("spool");
        let p = proxy(policy, &server.base, dir.path(), id, &spool, |c| {
            c.feedback.aggregate_secs = aggregate_secs;
            c.proxy.hosts = [("*".to_owned(), vec!["127.0.0.1".to_owned()])].into();
        })
        .await;
        let stats = stats(&p);
        untested_traffic(&p, port, &hosts, rounds).await;
        p.stop().await;
        let queued = stats.queued.load(Ordering::Relaxed);
        let events = server.wait_events("", |ev| ev.len() as u64 == queued).await;
        runs.push((dir, server, stats, events));
    }
    let requests = 3 * (2 * rounds + 1) + 2 * rounds;
    let (_, agg, agg_stats, agg_events) = &runs[0];
    let (_, one, _, one_events) = &runs[1];
    // One event per host instead of one per request; blocks still one per request.
    assert_eq!(by_kind(one_events, "untested").len(), requests);
    let untested = by_kind(agg_events, "untested");
    assert_eq!(untested.len(), hosts.len(), "{untested:?}");
    assert_eq!(agg_stats.folded.load(Ordering::Relaxed), requests as u64);
    assert_eq!(by_kind(agg_events, "blocked").len(), 6);
    assert_eq!(by_kind(one_events, "blocked").len(), 6);
    assert!(
        by_kind(agg_events, "blocked")
            .iter()
            .all(|e| e.get("count").is_none())
    );
    let h0 = untested.iter().find(|e| e["host"] == "h0.test").unwrap();
    assert_eq!(h0["count"], 2 * rounds + 1);
    assert_eq!(
        h0["clients"],
        json!(["127.0.0.1", "127.0.0.2", "127.0.0.3"])
    );
    // The server's figures: the same either way.
    let (a, o) = (summary(agg).await, summary(one).await);
    assert_eq!(a, o);
    assert_eq!(a["kinds"]["untested"], requests);
    assert_eq!(a["kinds"]["blocked"], 6);
    assert_eq!(
        a["untested_hosts"][0],
        json!({ "host": "h0.test", "clients": 3, "proxies": 1, "events": 2 * rounds + 1 })
    );
    assert_eq!(
        a["untested_hosts"][3],
        json!({ "host": "solo.test", "clients": 2, "proxies": 1, "events": 2 * rounds })
    );
    // The escalation rule (three distinct clients) fires for the same hosts.
    let want: Vec<(String, i64)> = ["h0.test", "h1.test", "h2.test"]
        .iter()
        .map(|h| ((*h).to_owned(), 3))
        .collect();
    assert_eq!(escalated(agg).await, want);
    assert_eq!(escalated(one).await, want);
}

/// CPU seconds (user and system) `pid` has used so far, from `/proc/<pid>/stat`.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command (which may hold spaces), from field 3 on.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// Events posted and the reputation server's CPU per proxied request, with and without
/// aggregation: `WEBREP_MEASURE_REQUESTS` (default 10000) requests to
/// `WEBREP_MEASURE_HOSTS` (default 1000) untested hosts from four clients, through a real
/// proxy (in-process) to the real `webrep server` binary (its CPU read from `/proc`). The
/// numbers are printed; docs/performance.md ("Feedback in proportion") has them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run by hand"]
async fn feedback_measure_events_and_server_cpu_per_request() {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let requests = env("WEBREP_MEASURE_REQUESTS", 10_000);
    let hosts = env("WEBREP_MEASURE_HOSTS", 1000);
    let origin = Origin::http().await;
    let port: u16 = origin
        .url("/")
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.trim_end_matches('/').parse().ok())
        .unwrap();
    // Feedback off first: the server's CPU for the lookups alone (the same in every run).
    for (enabled, aggregate_secs) in [(false, 0), (true, 0), (true, 60)] {
        let dir = tempfile::tempdir().unwrap();
        let server = ServerProcess::start(dir.path()).await;
        let pid = server.process.as_ref().unwrap().process.pid();
        let p = proxy(
            "untested: allow\n",
            server.base(),
            dir.path(),
            "measure",
            &dir.path().join("spool"),
            |c| {
                c.feedback.enabled = Some(enabled);
                c.feedback.aggregate_secs = aggregate_secs;
                c.feedback.batch_interval_ms = 1000;
                c.proxy.hosts = [("*".to_owned(), vec!["127.0.0.1".to_owned()])].into();
            },
        )
        .await;
        let stats = match enabled {
            true => stats(&p),
            false => Arc::new(FeedbackStats::default()),
        };
        let cpu0 = cpu_secs(pid);
        let start = Instant::now();
        let tasks: Vec<_> = (1..=4u8)
            .map(|c| {
                let client = client_from(&p, [127, 0, 0, c]);
                tokio::spawn(async move {
                    for i in (usize::from(c) - 1..requests).step_by(4) {
                        let url = format!("http://h{}.test:{port}/p{i}", i % hosts);
                        let r = client.get(url).send().await.unwrap();
                        assert_eq!(r.status(), 200);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let took = start.elapsed();
        p.stop().await;
        let want = stats.queued.load(Ordering::Relaxed);
        let sent = eventually_ok(
            "the server has every event",
            Duration::from_secs(120),
            || {
                let stats = stats.clone();
                async move {
                    let n = stats.sent.load(Ordering::Relaxed);
                    if n >= want { Ok(n) } else { Err(n) }
                }
            },
        )
        .await;
        // The server's CPU after it has stored them all (the last batch's commit included).
        tokio::time::sleep(Duration::from_millis(500)).await;
        let cpu = cpu_secs(pid) - cpu0;
        let summary = server
            .admin
            .get("/v1/feedback/summary?since_secs=3600", WAIT)
            .await
            .unwrap();
        if enabled {
            assert_eq!(summary["kinds"]["untested"], requests, "{summary}");
        }
        println!(
            "feedback {}, aggregate_secs={aggregate_secs}: {requests} requests to {hosts} hosts in {:.1} s; \
             events posted {sent} ({:.3} per request); server CPU {cpu:.2} s ({:.0} us per request)",
            if enabled { "on" } else { "off" },
            took.as_secs_f64(),
            sent as f64 / requests as f64,
            cpu * 1e6 / requests as f64,
        );
    }
}
