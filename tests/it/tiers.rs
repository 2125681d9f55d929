//! Tiers of reputation servers kept in step by delta sync: a following server mirrors its
//! upstream's table (snapshot pages, then the change log by cursor), serves it locally,
//! passes its changes to its own followers and proxies, resumes after restarts and outages,
//! takes a fresh snapshot when it must, and chains over three tiers (one of them a real
//! `webrep server` process killed with SIGKILL during the copy).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use webrep::client::RepClient;
use webrep::repserver::api::ServeOptions;
use webrep::repserver::follow::{Follow, FollowStatus};
use webrep::repserver::store::Store;

use crate::harness::{ADMIN, BOUND, CLIENT, RepServer, Webrep, eventually, init_crypto, webrep};

/// A follower of `upstream` (everything, pages of `page`), with its status.
fn following(upstream: &str, page: usize) -> (ServeOptions, Arc<FollowStatus>) {
    let client = RepClient::new(upstream, CLIENT, None).unwrap();
    let status = Arc::new(FollowStatus::default());
    let options = ServeOptions {
        follow: Some(Follow {
            page,
            ..Follow::everything(client)
        }),
        follow_status: Some(status.clone()),
        ..ServeOptions::default()
    };
    (options, status)
}

/// Waits (bounded) until `server` answers `url` with `risk`.
async fn until_risk(server: &RepServer, url: &str, risk: &str) -> Value {
    crate::harness::eventually_ok(
        &format!("{url} is {risk} at {}", server.base),
        BOUND,
        || async {
            let v = server.lookup(url).await;
            if v["risk"] == risk { Ok(v) } else { Err(v) }
        },
    )
    .await
}

/// The tier of the entry that decided a URL at `server` (its explain's first match).
async fn decided_by_tier(server: &RepServer, url: &str) -> u64 {
    let v = server.lookup(url).await;
    v["explain"]["matched"][0]["tier"].as_u64().unwrap_or(0)
}

async fn health(server: &RepServer) -> Value {
    server.get("/healthz", None).await.1
}

#[tokio::test]
async fn a_follower_mirrors_the_upstream_and_applies_its_changes() {
    let global = RepServer::serving(json!({ "upsert": [
        { "key": "g-bad.test/", "score": 5, "categories": ["malware"] },
        { "key": "g-mixed.test/dl/", "score": 20, "categories": ["malware"] },
        { "key": "g-safe.test/", "score": 95, "categories": ["news"] },
        { "key": "shared.test/", "score": 10, "categories": ["phishing"] },
    ]}))
    .await;
    let sha = "ab".repeat(32);
    global
        .admin
        .post_json(
            "/v1/files",
            &json!({ "upsert": [{ "sha256": sha, "verdict": "malicious", "name": "x" }] }),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    // Pages of 2: the snapshot takes several.
    let (options, status) = following(&global.base, 2);
    let site = RepServer::builder()
        .options(options)
        .metrics()
        .start()
        .await;
    // The site's own entry under a key the upstream also has wins.
    site.write(
        &json!({ "upsert": [{ "key": "shared.test/", "score": 90, "categories": ["news"] }] }),
    )
    .await;

    let v = until_risk(&site, "http://www.g-bad.test/x", "dangerous").await;
    // Answered from the site's own table (its mirror), no upstream round trip.
    assert_eq!(v["tier"], "local", "{v}");
    assert_eq!(decided_by_tier(&site, "http://g-bad.test/").await, 1);
    until_risk(&site, "http://g-mixed.test/dl/a.exe", "dangerous").await;
    until_risk(&site, "http://g-safe.test/", "safe").await;
    assert_eq!(site.lookup("http://shared.test/").await["risk"], "safe");
    let (_, f) = site
        .get(&format!("/v1/files?sha256={sha}"), Some(CLIENT))
        .await;
    assert_eq!(f["verdict"], "malicious", "{f}");
    eventually("the snapshot is complete", BOUND, || async {
        status.snapshot().complete
    })
    .await;
    let h = health(&site).await;
    assert_eq!(h["upstream"]["state"], "following", "{h}");
    assert_eq!(h["upstream"]["reachable"], true, "{h}");
    let text = crate::harness::scrape(site.metrics.unwrap()).await;
    for want in [
        "webrep_server_upstream_mirror_complete 1",
        "webrep_server_upstream_mirror_entries 4",
        "webrep_server_upstream_behind 0",
        "webrep_server_upstream_snapshots_total 1",
    ] {
        assert!(text.contains(want), "{want} missing from\n{text}");
    }

    // Changes at the upstream: a new entry, a changed one, a deleted one.
    let seq_before = site.get("/v1/changes?since=0", Some(CLIENT)).await.1["seq"]
        .as_u64()
        .unwrap();
    global
        .write(&json!({
            "upsert": [
                { "key": "g-new.test/", "score": 15, "categories": ["phishing"] },
                { "key": "g-safe.test/", "score": 30, "categories": ["malware"] },
            ],
            "delete": ["g-bad.test/"],
        }))
        .await;
    until_risk(&site, "http://g-new.test/", "dangerous").await;
    until_risk(&site, "http://g-safe.test/", "dangerous").await;
    until_risk(&site, "http://g-bad.test/", "untested").await;
    // The mirror's changes reach the site's own change stream (its proxies follow it).
    let (_, c) = site
        .get(&format!("/v1/changes?since={seq_before}"), Some(CLIENT))
        .await;
    let keys: Vec<&str> = c["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for k in ["g-new.test/", "g-safe.test/", "g-bad.test/"] {
        assert!(keys.contains(&k), "{k} not in {c}");
    }
    // Deleting the site's own entry uncovers the upstream's under the same key.
    site.write(&json!({ "delete": ["shared.test/"] })).await;
    until_risk(&site, "http://shared.test/", "dangerous").await;
    assert_eq!(decided_by_tier(&site, "http://shared.test/").await, 1);
    let h = health(&site).await;
    assert_eq!(h["upstream"]["behind"], 0, "{h}");
    site.stop().await;
    global.stop().await;
}

#[tokio::test]
async fn a_follower_resumes_by_cursor_and_serves_its_mirror_through_an_outage() {
    let dir = tempfile::tempdir().unwrap();
    let global_db = dir.path().join("global.db");
    let site_db = dir.path().join("site.db");
    let mut global = RepServer::builder().file(&global_db).start().await;
    global
        .write(
            &json!({ "upsert": [{ "key": "g-bad.test/", "score": 5, "categories": ["malware"] }] }),
        )
        .await;
    let (options, status) = following(&global.base, 100);
    let mut site = RepServer::builder()
        .file(&site_db)
        .options(options)
        .start()
        .await;
    until_risk(&site, "http://g-bad.test/", "dangerous").await;
    eventually("the snapshot is complete", BOUND, || async {
        status.snapshot().complete
    })
    .await;
    assert_eq!(status.snapshot().snapshots, 1);

    // The upstream goes away: the mirror keeps answering, and says the upstream is silent.
    global.kill().await;
    eventually("the follower notices", BOUND, || async {
        !status.snapshot().reachable
    })
    .await;
    assert_eq!(site.lookup("http://g-bad.test/").await["risk"], "dangerous");
    let h = health(&site).await;
    assert_eq!(h["upstream"]["reachable"], false, "{h}");

    // The site restarts during the outage (the mirror is in its file), then the upstream
    // comes back with a change: the site resumes by cursor, without a new snapshot.
    site.kill().await;
    let (options, status) = following(&global.base, 100);
    site.restart_with_options(Store::open(&site_db).unwrap(), options)
        .await;
    assert_eq!(site.lookup("http://g-bad.test/").await["risk"], "dangerous");
    global.restart().await;
    global
        .write(&json!({ "upsert": [{ "key": "g-later.test/", "score": 8, "categories": ["malware"] }] }))
        .await;
    until_risk(&site, "http://g-later.test/", "dangerous").await;
    assert_eq!(status.snapshot().snapshots, 0, "resumed without a snapshot");
    assert!(status.snapshot().change_bytes > 0);
    site.stop().await;
    global.stop().await;
}

#[tokio::test]
async fn a_replaced_or_pruned_upstream_makes_the_follower_copy_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let global_db = dir.path().join("global.db");
    let mut global = RepServer::builder().file(&global_db).start().await;
    global
        .write(&json!({ "upsert": [
            { "key": "old-a.test/", "score": 5, "categories": ["malware"] },
            { "key": "old-b.test/", "score": 6, "categories": ["malware"] },
        ]}))
        .await;
    let (options, status) = following(&global.base, 100);
    let site = RepServer::builder().options(options).start().await;
    until_risk(&site, "http://old-a.test/", "dangerous").await;

    // The change log is pruned past the follower's cursor while the upstream is down.
    global.kill().await;
    {
        let mut store = Store::open(&global_db).unwrap();
        store
            .upsert(&[webrep::model::Entry::new(
                webrep::model::Key::parse("pruned.test/").unwrap(),
                webrep::model::Score::new(9).unwrap(),
                vec![],
                webrep::model::Source::Manual,
                0,
            )])
            .unwrap();
        store.prune_changes(0).unwrap();
    }
    global.restart().await;
    until_risk(&site, "http://pruned.test/", "dangerous").await;
    eventually("a second snapshot", BOUND, || async {
        status.snapshot().snapshots == 2
    })
    .await;

    // The upstream's table is replaced by another one: what it no longer has goes.
    global.kill().await;
    global.restart_with(Store::open_in_memory().unwrap()).await;
    global
        .write(
            &json!({ "upsert": [{ "key": "new.test/", "score": 7, "categories": ["malware"] }] }),
        )
        .await;
    until_risk(&site, "http://new.test/", "dangerous").await;
    until_risk(&site, "http://old-a.test/", "untested").await;
    until_risk(&site, "http://pruned.test/", "untested").await;
    site.stop().await;
    global.stop().await;
}

#[tokio::test]
async fn a_follower_of_some_sources_asks_about_the_rest() {
    let global = RepServer::start().await;
    global
        .write(&json!({ "upsert": [{ "key": "manual.test/", "score": 5, "categories": ["malware"] }] }))
        .await;
    let r = global
        .http
        .post(format!(
            "{}/v1/import?format=domains&feed=blocklist&category=malware&score=10",
            global.base
        ))
        .bearer_auth(ADMIN)
        .body("feed-bad.test\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let client = RepClient::new(&global.base, CLIENT, None).unwrap();
    let status = Arc::new(FollowStatus::default());
    let options = ServeOptions {
        follow: Some(Follow {
            subscription: webrep::api::sync::Subscription {
                sources: vec!["feed:blocklist".into()],
                categories: vec![],
            },
            ..Follow::everything(client.clone())
        }),
        follow_status: Some(status.clone()),
        upstream: Some(Arc::new(webrep::repserver::upstream::Upstream::new(
            client,
            Duration::from_secs(2),
            100,
            1000,
        ))),
        ..ServeOptions::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let site_db = dir.path().join("site.db");
    let mut site = RepServer::builder()
        .file(&site_db)
        .options(options)
        .start()
        .await;
    eventually("the snapshot is complete", BOUND, || async {
        status.snapshot().complete
    })
    .await;
    let v = until_risk(&site, "http://feed-bad.test/", "dangerous").await;
    assert_eq!(v["tier"], "local", "mirrored: {v}");
    let v = site.lookup("http://manual.test/").await;
    assert_eq!(
        (v["risk"].as_str(), v["tier"].as_str()),
        (Some("dangerous"), Some("upstream")),
        "not mirrored, asked: {v}"
    );
    // Restarted to follow everything (and not ask): the mirror is copied again under the
    // new subscription.
    site.kill().await;
    let (options, status) = following(&global.base, 100);
    site.restart_with_options(Store::open(&site_db).unwrap(), options)
        .await;
    eventually("a fresh snapshot", BOUND, || async {
        status.snapshot().snapshots == 1
    })
    .await;
    let v = site.lookup("http://manual.test/").await;
    assert_eq!(
        (v["risk"].as_str(), v["tier"].as_str()),
        (Some("dangerous"), Some("local")),
        "mirrored now: {v}"
    );
    site.stop().await;
    global.stop().await;
}

#[tokio::test]
async fn a_follower_without_a_whole_copy_does_not_call_what_it_lacks_untested() {
    // The upstream never answers: nothing is copied.
    let dead = format!("http://127.0.0.1:{}", crate::harness::closed_port().await);
    let (options, _status) = following(&dead, 100);
    let site = RepServer::builder().options(options).start().await;
    site.write(&json!({ "upsert": [{ "key": "own.test/", "score": 90, "categories": ["news"] }] }))
        .await;
    let v = site.lookup("http://unknown.test/").await;
    assert_eq!(
        (v["risk"].as_str(), v["upstream"].as_str()),
        (Some("untested"), Some("unavailable")),
        "{v}"
    );
    // What the site's own table knows is answered as usual.
    let v = site.lookup("http://own.test/").await;
    assert_eq!(v["risk"], "safe", "{v}");
    assert!(v.get("upstream").is_none(), "{v}");
    site.stop().await;
}

#[tokio::test]
async fn a_follower_asks_on_a_miss_until_its_mirror_is_a_whole_copy() {
    // The upstream answers lookups, but its change stream cannot be followed (here: the
    // follower's sync goes to a closed port, as with an upstream too old for delta sync).
    let global = RepServer::serving(
        json!({ "upsert": [{ "key": "g-bad.test/", "score": 5, "categories": ["malware"] }] }),
    )
    .await;
    let dead = format!("http://127.0.0.1:{}", crate::harness::closed_port().await);
    let (mut options, status) = following(&dead, 100);
    options.upstream = Some(Arc::new(webrep::repserver::upstream::Upstream::new(
        RepClient::new(&global.base, CLIENT, None).unwrap(),
        Duration::from_secs(2),
        100,
        1000,
    )));
    options.ask_until_mirrored = true;
    let site = RepServer::builder().options(options).start().await;
    let v = site.lookup("http://g-bad.test/").await;
    assert_eq!(
        (v["risk"].as_str(), v["tier"].as_str()),
        (Some("dangerous"), Some("upstream")),
        "asked while there is no copy: {v}"
    );
    assert!(!status.snapshot().complete);
    site.stop().await;
    global.stop().await;
}

/// A `webrep server` process following `upstream`, on `port`, with its store in `dir`.
async fn server_process(dir: &std::path::Path, port: u16, upstream: &str) -> Webrep {
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, format!("client {CLIENT}\nadmin {ADMIN}\n")).unwrap();
    let cfg = dir.join("webrep.yaml");
    std::fs::write(
        &cfg,
        format!(
            "server:\n  listen: \"127.0.0.1:{port}\"\n  store: {:?}\n  tokens_file: {:?}\n  \
             upstream:\n    url: {upstream:?}\n    token: {CLIENT:?}\n    sync_page: 1\n\
             log:\n  level: info\n",
            dir.join("regional.db").display().to_string(),
            tokens.display().to_string()
        ),
    )
    .unwrap();
    let mut cmd = webrep(["server", "--config"]);
    cmd.arg(&cfg);
    let mut process = Webrep::spawn(cmd);
    process
        .wait_field(&["listen="])
        .await
        .expect("the regional server listens");
    process
}

#[tokio::test]
async fn three_tiers_stay_in_step_through_a_kill_9_of_the_middle_one() {
    init_crypto();
    // The global tier, with a table the middle tier copies one entry per page, so that the
    // copy is still running when it is killed.
    let global = RepServer::start().await;
    let bulk: Vec<Value> = (0..2000)
        .map(|i| json!({ "key": format!("bulk{i}.test/"), "score": 5, "categories": ["malware"] }))
        .collect();
    for chunk in bulk.chunks(1000) {
        global.write(&json!({ "upsert": chunk })).await;
    }

    // The regional tier: a real process, killed with SIGKILL during its snapshot.
    let dir = tempfile::tempdir().unwrap();
    let port = crate::harness::closed_port().await;
    let regional_base = format!("http://127.0.0.1:{port}");
    let mut regional = server_process(dir.path(), port, &global.base).await;
    regional.wait_for_line("taking a snapshot").await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    eventually(
        "the regional tier has committed snapshot pages",
        BOUND,
        || {
            let r = http.get(format!("{regional_base}/healthz")).send();
            async move {
                let h: Value =
                    serde_json::from_str(&r.await.unwrap().text().await.unwrap()).unwrap();
                h["upstream"]["state"] == "snapshot"
            }
        },
    )
    .await;
    regional.kill_9().await;
    let mut regional = server_process(dir.path(), port, &global.base).await;
    regional
        .wait_for_line("snapshot of the upstream complete")
        .await;
    assert!(
        !regional
            .lines()
            .iter()
            .any(|l| l.contains("taking a snapshot")),
        "the restarted tier resumed the copy instead of starting over"
    );

    // The site tier follows the regional one.
    let (options, status) = following(&regional_base, 1000);
    let site = RepServer::builder().options(options).start().await;
    for i in [0, 999, 1999] {
        until_risk(&site, &format!("http://bulk{i}.test/"), "dangerous").await;
    }
    assert_eq!(decided_by_tier(&site, "http://bulk1.test/").await, 2);

    // A change at the top reaches the bottom, and one made while the middle tier is down
    // arrives once it is back.
    global
        .write(
            &json!({ "upsert": [{ "key": "late.test/", "score": 3, "categories": ["phishing"] }] }),
        )
        .await;
    until_risk(&site, "http://late.test/", "dangerous").await;
    regional.kill_9().await;
    global.write(&json!({ "delete": ["bulk7.test/"] })).await;
    assert_eq!(site.lookup("http://bulk7.test/").await["risk"], "dangerous");
    let _regional = server_process(dir.path(), port, &global.base).await;
    until_risk(&site, "http://bulk7.test/", "untested").await;
    assert_eq!(status.snapshot().snapshots, 1);
    site.stop().await;
    global.stop().await;
}
