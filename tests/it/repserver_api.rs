//! The reputation server's HTTP API against the real server on 127.0.0.1:0 with real
//! clients: lookups, batches, explain, auth, input errors, the change stream, durability.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::net::TcpListener;

use webrep::config::ApiConfig;
use webrep::repserver::api::ServeOptions;
use webrep::repserver::store::Store;

use crate::harness::{ADMIN, CLIENT, RepServer, init_crypto};

fn sample() -> Value {
    json!({ "upsert": [
        { "key": "danger.test/", "score": 10, "categories": ["malware"] },
        { "key": "hs.test/", "score": 60, "categories": ["phishing"] },
        { "key": "susp.test/", "score": 75, "categories": ["spam"] },
        { "key": "safe.test/", "score": 95, "categories": ["news"] },
        { "key": "shop.example/", "score": 90, "categories": ["shopping"], "note": "a shop" },
        { "key": "shop.example/dl/", "score": 20, "categories": ["malware"] },
    ]})
}

#[tokio::test]
async fn every_risk_level_and_the_combination_rule() {
    let s = RepServer::start().await;
    s.write(&sample()).await;
    for (url, risk, score, cat) in [
        ("http://danger.test/a", "dangerous", 10, "malware"),
        ("http://www.hs.test/", "highly_suspicious", 60, "phishing"),
        ("https://susp.test/x?y=1", "suspicious", 75, "spam"),
        ("http://safe.test/", "safe", 95, "news"),
    ] {
        let v = s.lookup(url).await;
        assert_eq!(v["risk"], risk, "{url}: {v}");
        assert_eq!(v["score"], score, "{url}");
        assert_eq!(v["categories"], json!([cat]), "{url}");
        assert_eq!(v["ttl_secs"], 300, "{url}");
    }
    let v = s.lookup("http://nothing.invalid/page").await;
    assert_eq!(v["risk"], "untested");
    assert_eq!(v["score"], Value::Null);
    assert_eq!(v["ttl_secs"], 60);
    assert_eq!(v["explain"]["matched"], json!([]));

    // Worst score wins, categories from the most specific match, both explained.
    let v = s.lookup("http://shop.example/dl/setup.exe").await;
    assert_eq!(v["risk"], "dangerous");
    assert_eq!(v["score"], 20);
    assert_eq!(v["categories"], json!(["malware"]));
    assert_eq!(v["canonical"], "http://shop.example/dl/setup.exe");
    let matched = v["explain"]["matched"].as_array().unwrap();
    assert_eq!(matched.len(), 2, "{v}");
    assert_eq!(matched[0]["key"], "shop.example/dl/");
    assert_eq!(matched[0]["score"], 20);
    assert_eq!(matched[0]["categories"], json!(["malware"]));
    assert_eq!(matched[1]["key"], "shop.example/");
    assert_eq!(matched[1]["score"], 90);
    assert_eq!(matched[1]["risk"], "safe");
    assert_eq!(matched[1]["source"], "manual");
    assert_eq!(matched[1]["note"], "a shop");
    assert_eq!(v["explain"]["risk"], "dangerous");
    assert_eq!(v["explain"]["score"], 20);
    assert_eq!(v["explain"]["categories"], json!(["malware"]));

    let v = s.lookup("http://shop.example/about").await;
    assert_eq!(v["risk"], "safe");
    assert_eq!(v["categories"], json!(["shopping"]));

    // An answer resting on an expiring entry is not cached past the expiry.
    let now = webrep::clock::unix_secs();
    s.write(&json!({ "upsert": [
        { "key": "brief.test/", "score": 40, "expires": now + 30 },
    ]}))
    .await;
    let ttl = s.lookup("http://brief.test/").await["ttl_secs"]
        .as_u64()
        .unwrap();
    assert!(ttl <= 30 && ttl > 0, "{ttl}");

    // A delete takes the path entry away.
    s.write(&json!({ "delete": ["shop.example/dl/"] })).await;
    assert_eq!(
        s.lookup("http://shop.example/dl/setup.exe").await["score"],
        90
    );

    let (status, v) = s.get("/v1/lookup?url=%3A%3Anot+a+url", Some(CLIENT)).await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("not a URL"));
    let (status, _) = s.get("/v1/lookup", Some(CLIENT)).await;
    assert_eq!(status, 400);
    s.stop().await;
}

#[tokio::test]
async fn batch_lookup_answers_each_item_and_errors_per_item() {
    let s = RepServer::start().await;
    s.write(&sample()).await;
    let (status, v) = s
        .post(
            "/v1/lookup",
            Some(CLIENT),
            &json!({
                "urls": ["http://danger.test/", "::not a url::", "http://nothing.invalid/"],
                "hosts": ["shop.example", "", "www.safe.test"],
            }),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let urls = v["urls"].as_array().unwrap();
    assert_eq!(urls.len(), 3);
    assert_eq!(urls[0]["risk"], "dangerous");
    assert!(urls[1]["error"].is_string(), "{}", urls[1]);
    assert_eq!(urls[1]["url"], "::not a url::");
    assert_eq!(urls[2]["risk"], "untested");
    assert_eq!(urls[2]["ttl_secs"], 60);
    let hosts = v["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 3);
    assert_eq!(hosts[0]["risk"], "safe");
    assert_eq!(hosts[0]["matched"], json!(["shop.example/"]));
    assert_eq!(hosts[0]["truncated"], false);
    let paths = hosts[0]["paths"].as_array().unwrap();
    assert_eq!(paths.len(), 1);
    assert_eq!(paths[0]["key"], "shop.example/dl/");
    assert_eq!(paths[0]["score"], 20);
    assert!(hosts[1]["error"].is_string(), "{}", hosts[1]);
    assert_eq!(hosts[2]["risk"], "safe");
    assert_eq!(hosts[2]["canonical"], "www.safe.test");

    // Too many items is refused whole.
    let many: Vec<String> = (0..1001).map(|i| format!("http://h{i}.test/")).collect();
    let (status, v) = s
        .post("/v1/lookup", Some(CLIENT), &json!({ "urls": many }))
        .await;
    assert_eq!(status, 400, "{v}");
    s.stop().await;
}

/// A batch many pieces long (the server answers `POST /v1/lookup` 1000 items at a time) with
/// distinct, repeated and bad items throughout, on the boundaries between pieces too: each
/// item's answer is the one asked alone, in the order asked. The answer is streamed (chunked,
/// no `Content-Length`): the server holds one piece of it at a time, not the whole.
#[tokio::test]
async fn a_batch_of_many_pieces_is_answered_in_order_and_streamed() {
    let dir = tempfile::tempdir().unwrap();
    let config = ApiConfig {
        max_batch: 5000,
        max_body: 4 << 20,
        ..ApiConfig::default()
    };
    let options = ServeOptions {
        read_threads: 2,
        ..ServeOptions::default()
    };
    let s = RepServer::builder()
        .store(Store::open(&dir.path().join("rep.db")).unwrap())
        .config(config)
        .options(options)
        .start()
        .await;
    s.write(&sample()).await;
    let boundary = |i: usize| matches!(i % 1000, 0 | 999);
    // (input, expected risk; None: an error for the item)
    let url = |i: usize| match i % 5 {
        _ if boundary(i) => (format!("::bad {i}::"), None),
        0 => (format!("http://danger.test/p{i}"), Some("dangerous")),
        1 => (
            "http://shop.example/dl/setup.exe".to_owned(),
            Some("dangerous"),
        ),
        2 => ("http://www.safe.test/".to_owned(), Some("safe")),
        _ => (format!("http://u{i}.invalid/x"), Some("untested")),
    };
    let host = |i: usize| match i % 4 {
        _ if boundary(i) => (String::new(), None),
        0 => ("hs.test".to_owned(), Some("highly_suspicious")),
        1 => (format!("h{i}.susp.test"), Some("suspicious")),
        2 => ("shop.example".to_owned(), Some("safe")),
        _ => (format!("h{i}.invalid"), Some("untested")),
    };
    let (urls, hosts): (Vec<_>, Vec<_>) =
        ((0..2600).map(url).collect(), (0..1400).map(host).collect());
    let body = json!({
        "urls": urls.iter().map(|u| &u.0).collect::<Vec<_>>(),
        "hosts": hosts.iter().map(|h| &h.0).collect::<Vec<_>>(),
    });
    let resp = s
        .http
        .post(format!("{}/v1/lookup", s.base))
        .bearer_auth(CLIENT)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("content-length").is_none(), "{resp:?}");
    assert_eq!(resp.headers()["transfer-encoding"], "chunked");
    let v: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    for (list, field, asked) in [("urls", "url", &urls), ("hosts", "host", &hosts)] {
        let answers = v[list].as_array().unwrap();
        assert_eq!(answers.len(), asked.len(), "{list}");
        for (i, ((input, risk), a)) in asked.iter().zip(answers).enumerate() {
            assert_eq!(a[field], input.as_str(), "{list}[{i}]: {a}");
            match risk {
                Some(risk) => assert_eq!(a["risk"], *risk, "{list}[{i}]: {a}"),
                None => assert!(a["error"].is_string(), "{list}[{i}]: {a}"),
            }
        }
    }
    // Whole answers are those of a lookup alone.
    for i in [1, 2, 3, 1001, 2598] {
        assert_eq!(v["urls"][i], s.lookup(&urls[i].0).await, "urls[{i}]");
    }
    s.stop().await;
}

#[tokio::test]
async fn host_answer_is_truncated_beyond_the_path_limit() {
    let config = ApiConfig {
        host_path_limit: 2,
        ..ApiConfig::default()
    };
    let s = RepServer::builder().config(config).start().await;
    s.write(&json!({ "upsert": [
        { "key": "many.test/a/", "score": 10 },
        { "key": "many.test/b/", "score": 10 },
        { "key": "many.test/c/", "score": 10 },
    ]}))
    .await;
    let (status, v) = s
        .post(
            "/v1/lookup",
            Some(CLIENT),
            &json!({ "hosts": ["many.test"] }),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["hosts"][0]["truncated"], true);
    assert_eq!(v["hosts"][0]["paths"].as_array().unwrap().len(), 2);
    assert_eq!(v["hosts"][0]["risk"], "untested");
    s.stop().await;
}

#[tokio::test]
async fn tokens_are_required_and_checked() {
    let s = RepServer::start().await;
    let lookup = "/v1/lookup?url=http%3A%2F%2Fa.test%2F";
    let (status, v) = s.get(lookup, None).await;
    assert_eq!(status, 401);
    assert!(v["error"].is_string());
    let (status, v) = s.get(lookup, Some("wrong-token")).await;
    assert_eq!(status, 403);
    assert!(v["error"].is_string());
    assert_eq!(s.get(lookup, Some(CLIENT)).await.0, 200);
    assert_eq!(s.get(lookup, Some(ADMIN)).await.0, 200);
    assert_eq!(s.get("/v1/changes?since=0", None).await.0, 401);

    let write = json!({ "upsert": [{ "key": "a.test/", "score": 5 }] });
    let (status, v) = s.post("/v1/entries", Some(CLIENT), &write).await;
    assert_eq!(status, 403, "{v}");
    assert!(v["error"].as_str().unwrap().contains("may not write"));
    assert_eq!(s.post("/v1/entries", None, &write).await.0, 401);
    assert_eq!(s.post("/v1/entries", Some("nope"), &write).await.0, 403);
    // Nothing was written by the refused requests.
    assert_eq!(s.lookup("http://a.test/").await["risk"], "untested");
    assert_eq!(s.post("/v1/entries", Some(ADMIN), &write).await.0, 200);
    assert_eq!(s.lookup("http://a.test/").await["risk"], "dangerous");

    let (status, v) = s.get("/healthz", None).await;
    assert_eq!(status, 200);
    assert_eq!(v["status"], "ok");
    s.stop().await;
}

#[tokio::test]
async fn bad_input_is_refused_with_a_message() {
    let config = ApiConfig {
        max_body: 64 * 1024,
        ..ApiConfig::default()
    };
    let s = RepServer::builder().config(config).start().await;
    let post_raw = |body: String| {
        s.send(
            reqwest::Method::POST,
            "/v1/entries",
            Some(ADMIN),
            Some(body),
        )
    };
    let (status, v) = post_raw("{\"upsert\": [".to_owned()).await;
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("bad JSON"), "{v}");
    let (status, v) = post_raw("{\"bogus\": 1}".to_owned()).await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = s
        .send(
            reqwest::Method::POST,
            "/v1/lookup",
            Some(CLIENT),
            Some("not json".to_owned()),
        )
        .await;
    assert_eq!(status, 400, "{v}");

    // A bad item refuses the whole write.
    let (status, v) = s
        .post(
            "/v1/entries",
            Some(ADMIN),
            &json!({ "upsert": [
                { "key": "ok.test/", "score": 5 },
                { "key": "cat.test/", "score": 5, "categories": ["no-such-category"] },
            ]}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("upsert[1]"), "{v}");
    let (status, v) = s
        .post(
            "/v1/entries",
            Some(ADMIN),
            &json!({ "upsert": [{ "key": "ok.test/", "score": 101 }] }),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    let (status, _) = s
        .post(
            "/v1/entries",
            Some(ADMIN),
            &json!({ "upsert": [{ "key": "ok.test/", "score": 5 }], "delete": ["::bad"] }),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(s.lookup("http://ok.test/").await["risk"], "untested");
    // A key whose host no URL can name is refused, not stored as a host.
    let (status, v) = s
        .post(
            "/v1/entries",
            Some(ADMIN),
            &json!({ "upsert": [{ "key": "not a url", "score": 5 }] }),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("not a url"), "{v}");

    let (status, v) = post_raw(format!("{{\"delete\": [\"{}\"]}}", "x".repeat(70 * 1024))).await;
    assert_eq!(status, 413, "{v}");
    assert!(v["error"].is_string());

    let (status, v) = s.get("/v2/nothing", Some(CLIENT)).await;
    assert_eq!(status, 404);
    assert!(v["error"].is_string());
    let (status, v) = s.get("/v1/entries", Some(ADMIN)).await;
    assert_eq!(status, 405, "{v}");
    let (status, _) = s
        .send(reqwest::Method::DELETE, "/v1/lookup", Some(CLIENT), None)
        .await;
    assert_eq!(status, 405);
    let r = s
        .http
        .put(format!("{}/v1/entries", s.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    // Two paths of one route: each keeps its own method.
    let (status, v) = s.get("/v1/escalations/revert", Some(ADMIN)).await;
    assert_eq!(status, 405);
    assert_eq!(v["error"], "method GET not allowed; allowed: POST", "{v}");
    let (status, v) = s
        .send(reqwest::Method::POST, "/v1/escalations", Some(ADMIN), None)
        .await;
    assert_eq!(status, 405);
    assert_eq!(v["error"], "method POST not allowed; allowed: GET", "{v}");
    let (status, _) = s.get("/v1/changes?since=abc", Some(CLIENT)).await;
    assert_eq!(status, 400);
    s.stop().await;
}

#[tokio::test]
async fn change_stream_delivers_a_write_to_a_waiting_follower() {
    let s = RepServer::start().await;
    let seq = s.write(&sample()).await;
    let (status, v) = s.get("/v1/changes?since=0", Some(CLIENT)).await;
    assert_eq!(status, 200);
    assert_eq!(v["seq"], seq);
    assert_eq!(v["keys"].as_array().unwrap().len(), 6);
    assert_eq!(v["truncated"], false);

    // Nothing newer: the timeout answers empty.
    let (status, v) = s
        .get(
            &format!("/v1/changes?since={seq}&wait_ms=100"),
            Some(CLIENT),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(v["keys"], json!([]));
    assert_eq!(v["seq"], seq);

    // A follower waiting (up to 30 s) gets the write as soon as it is committed.
    let started = Instant::now();
    let follower = {
        let http = s.http.clone();
        let url = format!("{}/v1/changes?since={seq}&wait_ms=30000", s.base);
        tokio::spawn(async move {
            let r = http.get(url).bearer_auth(CLIENT).send().await.unwrap();
            assert_eq!(r.status(), 200);
            serde_json::from_slice::<Value>(&r.bytes().await.unwrap()).unwrap()
        })
    };
    let new_seq = s
        .write(&json!({ "upsert": [{ "key": "fresh.test/", "score": 3 }] }))
        .await;
    let v = tokio::time::timeout(Duration::from_secs(10), follower)
        .await
        .expect("follower woken")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(v["seq"], new_seq);
    assert_eq!(v["keys"], json!(["fresh.test/"]));

    // A follower ahead of this store (the server came back on another or an older store) is
    // told `truncated` at once, not after its 30 s wait, so it drops its cache now.
    let ahead = {
        let http = s.http.clone();
        let url = format!(
            "{}/v1/changes?since={}&wait_ms=30000",
            s.base,
            new_seq + 100
        );
        tokio::spawn(async move {
            let r = http.get(url).bearer_auth(CLIENT).send().await.unwrap();
            serde_json::from_slice::<Value>(&r.bytes().await.unwrap()).unwrap()
        })
    };
    let v = tokio::time::timeout(Duration::from_secs(10), ahead)
        .await
        .expect("a follower ahead of the store is answered at once")
        .unwrap();
    assert_eq!(
        (v["seq"].as_u64(), v["truncated"].as_bool()),
        (Some(new_seq), Some(true))
    );

    // A follower still waiting at shutdown gets an empty answer, and the server stops.
    let pending = {
        let http = s.http.clone();
        let url = format!("{}/v1/changes?since={new_seq}&wait_ms=30000", s.base);
        tokio::spawn(async move { http.get(url).bearer_auth(CLIENT).send().await })
    };
    s.stop().await;
    // Either the empty answer or a closed connection, but never a 30 s hang.
    let _ = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("pending follower released");
}

#[tokio::test]
async fn entries_survive_a_restart_on_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let path: &Path = &dir.path().join("rep.db");
    let s = RepServer::builder()
        .store(Store::open(path).unwrap())
        .start()
        .await;
    let seq = s.write(&sample()).await;
    s.stop().await;

    let s = RepServer::builder()
        .store(Store::open(path).unwrap())
        .start()
        .await;
    let v = s.lookup("http://shop.example/dl/x").await;
    assert_eq!(v["score"], 20);
    assert_eq!(v["explain"]["matched"].as_array().unwrap().len(), 2);
    let (_, v) = s.get("/v1/changes?since=0", Some(CLIENT)).await;
    assert_eq!(v["seq"], seq);
    assert_eq!(v["keys"].as_array().unwrap().len(), 6);
    let next = s.write(&json!({ "delete": ["danger.test/"] })).await;
    assert_eq!(next, seq + 1);
    s.stop().await;
}

#[tokio::test]
async fn reader_threads_see_every_write_and_wake_followers() {
    let dir = tempfile::tempdir().unwrap();
    let options = ServeOptions {
        read_threads: 3,
        ..ServeOptions::default()
    };
    let s = RepServer::builder()
        .store(Store::open(&dir.path().join("rep.db")).unwrap())
        .options(options)
        .start()
        .await;
    // A follower waits (on a reader thread) while writes happen.
    let follower = {
        let (http, base) = (s.http.clone(), s.base.clone());
        tokio::spawn(async move {
            let r = http
                .get(format!("{base}/v1/changes?since=0&wait_ms=20000"))
                .bearer_auth(CLIENT)
                .send()
                .await
                .unwrap();
            serde_json::from_slice::<Value>(&r.bytes().await.unwrap()).unwrap()
        })
    };
    for i in 0..20u8 {
        let key = format!("h{i}.test/");
        s.write(&json!({ "upsert": [{ "key": key, "score": i, "categories": ["spam"] }] }))
            .await;
        // Each write is visible to the very next lookup, whichever reader answers it.
        let v = s.lookup(&format!("http://h{i}.test/")).await;
        assert_eq!(v["score"], i, "{v}");
    }
    let v = follower.await.unwrap();
    assert!(v["seq"].as_u64().unwrap() >= 1, "{v}");
    assert!(!v["keys"].as_array().unwrap().is_empty(), "{v}");
    s.stop().await;
}

#[tokio::test]
async fn change_stream_as_server_sent_events() {
    let s = RepServer::start().await;
    let first = s.write(&sample()).await;
    let resp = s
        .http
        .get(format!("{}/v1/changes/stream?since={first}", s.base))
        .bearer_auth(CLIENT)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.bytes_stream();
    use futures_util::StreamExt as _;
    let mut next_event = async || -> String {
        let mut text = String::new();
        while !text.ends_with("\n\n") {
            let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
                .await
                .expect("an event within 10 s")
                .expect("stream open")
                .unwrap();
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        text
    };
    assert!(next_event().await.starts_with(": open"));
    let seq = s
        .write(&json!({ "upsert": [{ "key": "new.test/", "score": 1 }], "delete": ["safe.test/"] }))
        .await;
    let event = next_event().await;
    assert!(
        event.starts_with(&format!("id: {seq}\nevent: changes\ndata: ")),
        "{event}"
    );
    let data: Value = serde_json::from_str(
        event
            .lines()
            .nth(2)
            .unwrap()
            .strip_prefix("data: ")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(data["keys"], json!(["new.test/", "safe.test/"]), "{data}");
    // A client token is needed; a stream ahead of the store is told to start over.
    let (status, _) = s.get("/v1/changes/stream", None).await;
    assert_eq!(status, 401);
    let (_, v) = s.get("/v1/changes?since=999", Some(CLIENT)).await;
    assert_eq!(v["truncated"], true, "{v}");
    // Shutdown ends the open stream instead of waiting for it.
    s.stop().await;
}

/// A server whose upstream tier is `upstream_base`.
async fn with_upstream(upstream_base: &str, timeout: Duration) -> RepServer {
    let client = webrep::client::RepClient::new(upstream_base, CLIENT, None).unwrap();
    let upstream = webrep::repserver::upstream::Upstream::new(client, timeout, 2, 1000);
    let options = ServeOptions {
        upstream: Some(std::sync::Arc::new(upstream)),
        ..ServeOptions::default()
    };
    RepServer::builder().options(options).start().await
}

#[tokio::test]
async fn upstream_answers_what_the_local_table_lacks_and_is_cached() {
    let global = RepServer::start().await;
    global
        .write(&json!({ "upsert": [
            { "key": "global-bad.test/", "score": 5, "categories": ["phishing"] },
            { "key": "http://global-path.test/x?y=1", "score": 60, "categories": ["spam"] },
        ]}))
        .await;
    let local = with_upstream(&global.base, Duration::from_secs(5)).await;
    local
        .write(&json!({ "upsert": [
            { "key": "local.test/", "score": 90, "categories": ["news"] },
        ]}))
        .await;

    // A local entry is answered locally, without asking upstream.
    let v = local.lookup("http://local.test/").await;
    assert_eq!(
        (v["risk"].as_str(), v["tier"].as_str()),
        (Some("safe"), Some("local")),
        "{v}"
    );

    // What only the global tier knows comes from there: single, and batched (several
    // upstream batches of 2, since the batch size is 2).
    let v = local.lookup("http://www.global-bad.test/page").await;
    assert_eq!(v["risk"], "dangerous", "{v}");
    assert_eq!(v["tier"], "upstream", "{v}");
    assert_eq!(v["url"], "http://www.global-bad.test/page", "{v}");
    assert_eq!(v["categories"], json!(["phishing"]));
    let (status, b) = local
        .post(
            "/v1/lookup",
            Some(CLIENT),
            &json!({
                "urls": ["http://global-path.test/x?y=1", "http://nobody.test/", "http://local.test/a"],
                "hosts": ["global-bad.test", "elsewhere.test"],
            }),
        )
        .await;
    assert_eq!(status, 200, "{b}");
    let tiers: Vec<(&str, &str)> = b["urls"]
        .as_array()
        .unwrap()
        .iter()
        .chain(b["hosts"].as_array().unwrap())
        .map(|x| (x["risk"].as_str().unwrap(), x["tier"].as_str().unwrap()))
        .collect();
    assert_eq!(
        tiers,
        vec![
            ("highly_suspicious", "upstream"),
            ("untested", "upstream"),
            ("safe", "local"),
            ("dangerous", "upstream"),
            ("untested", "upstream"),
        ],
        "{b}"
    );
    // An untested upstream answer keeps the untested TTL.
    assert_eq!(b["urls"][1]["ttl_secs"], 60, "{b}");

    // The global tier goes away: answers it gave are served from the cache for their TTL.
    global.stop().await;
    let v = local.lookup("http://www.global-bad.test/page").await;
    assert_eq!(
        (v["risk"].as_str(), v["tier"].as_str()),
        (Some("dangerous"), Some("upstream")),
        "{v}"
    );
    assert_eq!(v["cached"], true, "{v}");
    // Something never asked before is untested now, and says why.
    let v = local.lookup("http://never-asked.test/").await;
    assert_eq!(v["risk"], "untested", "{v}");
    assert_eq!(v["upstream"], "unavailable", "{v}");
    local.stop().await;
}

/// The entries of the tiers of `jl-mixed.test`: the upstream lists the host as dangerous,
/// the local table has only a path entry under it (and one key both have).
async fn mixed_tiers(global: &RepServer, local: &RepServer) {
    global
        .write(&json!({ "upsert": [
            { "key": "jl-mixed.test/", "score": 5, "categories": ["malware"] },
            { "key": "jl-mixed.test/login/", "score": 90, "categories": ["news"] },
            { "key": "jl-mixed.test/dl/", "score": 40, "categories": ["spam"] },
        ]}))
        .await;
    local
        .write(&json!({ "upsert": [
            { "key": "jl-mixed.test/login/", "score": 60, "categories": ["phishing"] },
        ]}))
        .await;
}

/// `(risk, score, categories)` of a verdict as the wire shows it.
fn risk_score_categories(v: &Value) -> (String, Option<u64>, Value) {
    (
        v["risk"].as_str().unwrap().to_owned(),
        v["score"].as_u64(),
        v["categories"].clone(),
    )
}

#[tokio::test]
async fn a_host_answer_and_its_url_answers_combine_both_tiers_alike() {
    let global = RepServer::start().await;
    let local = with_upstream(&global.base, Duration::from_secs(5)).await;
    mixed_tiers(&global, &local).await;

    // The host answer: the upstream's host verdict, the path entries of both tiers, the local
    // one winning for the key both have.
    let (status, b) = local
        .post(
            "/v1/lookup",
            Some(CLIENT),
            &json!({ "hosts": ["jl-mixed.test"] }),
        )
        .await;
    assert_eq!(status, 200, "{b}");
    let host = &b["hosts"][0];
    assert_eq!(
        (
            host["risk"].as_str(),
            host["score"].as_u64(),
            host["tier"].as_str()
        ),
        (Some("dangerous"), Some(5), Some("upstream")),
        "{host}"
    );
    assert_eq!(host["matched"], json!(["jl-mixed.test/"]), "{host}");
    assert!(host.get("upstream").is_none(), "{host}");
    let paths: Vec<(&str, u64, Option<u64>)> = host["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["key"].as_str().unwrap(),
                p["score"].as_u64().unwrap(),
                p["tier"].as_u64(),
            )
        })
        .collect();
    assert_eq!(
        paths,
        [
            ("jl-mixed.test/login/", 60, None),
            ("jl-mixed.test/dl/", 40, Some(1))
        ],
        "{host}"
    );

    // Every URL: the server's URL answer (single and batched) is what the proxy computes
    // from the host answer.
    let item: webrep::api::lookup::HostItem = serde_json::from_value(host.clone()).unwrap();
    let now = webrep::clock::unix_secs();
    let proxy_side = webrep::reputation::answer::HostAnswer::from_item(&item, now).unwrap();
    assert!(proxy_side.complete());
    let urls = [
        "http://jl-mixed.test/other3",
        "http://jl-mixed.test/login/x",
        "http://jl-mixed.test/login/",
        "http://jl-mixed.test/dl/a.exe",
        "http://jl-mixed.test/",
    ];
    let (status, batch) = local
        .post("/v1/lookup", Some(CLIENT), &json!({ "urls": urls }))
        .await;
    assert_eq!(status, 200, "{batch}");
    for (i, u) in urls.iter().enumerate() {
        let single = local.lookup(u).await;
        let batched = &batch["urls"][i];
        assert_eq!(
            risk_score_categories(&single),
            risk_score_categories(batched),
            "{u}"
        );
        assert_eq!(single["tier"], "upstream", "{single}");
        let v = proxy_side.verdict(&webrep::canon::canonicalize(u).unwrap(), now);
        let proxy = (
            v.risk.as_str().to_owned(),
            v.score.map(|s| u64::from(s.get())),
            json!(v.categories.iter().map(|c| c.as_str()).collect::<Vec<_>>()),
        );
        assert_eq!(risk_score_categories(&single), proxy, "{u}: {single}");
        assert_eq!(single["explain"]["score"], single["score"], "{single}");
    }
    // The bug this guards against: a URL with no path entry, on a host the upstream lists as
    // dangerous, and one under the local path entry.
    let other = local.lookup("http://jl-mixed.test/other3").await;
    assert_eq!(
        risk_score_categories(&other),
        ("dangerous".to_owned(), Some(5), json!(["malware"]))
    );
    let login = local.lookup("http://jl-mixed.test/login/x").await;
    assert_eq!(
        risk_score_categories(&login),
        ("dangerous".to_owned(), Some(5), json!(["phishing"])),
        "worst score of both tiers, categories of the most specific (local) entry: {login}"
    );
    let matched: Vec<(&str, Option<u64>)> = login["explain"]["matched"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["key"].as_str().unwrap(), e["tier"].as_u64()))
        .collect();
    assert_eq!(
        matched,
        [("jl-mixed.test/login/", None), ("jl-mixed.test/", Some(1))]
    );

    // With the upstream gone, a fresh server (nothing cached) cannot answer from its path
    // entry alone: the host and the URLs say the upstream was unavailable.
    let base = global.base.clone();
    global.stop().await;
    local.stop().await;
    let local = with_upstream(&base, Duration::from_secs(5)).await;
    local
        .write(&json!({ "upsert": [
            { "key": "jl-mixed.test/login/", "score": 60, "categories": ["phishing"] },
        ]}))
        .await;
    let (status, b) = local
        .post(
            "/v1/lookup",
            Some(CLIENT),
            &json!({ "urls": ["http://jl-mixed.test/login/x"], "hosts": ["jl-mixed.test"] }),
        )
        .await;
    assert_eq!(status, 200, "{b}");
    for item in [&b["urls"][0], &b["hosts"][0]] {
        assert_eq!(item["upstream"], "unavailable", "{item}");
    }
    assert_eq!(
        b["hosts"][0]["paths"][0]["key"], "jl-mixed.test/login/",
        "{b}"
    );
    local.stop().await;
}

#[tokio::test]
async fn an_upstream_that_is_down_or_silent_answers_untested_not_an_error() {
    // Down: nothing listens on the port.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let local = with_upstream(&dead, Duration::from_secs(5)).await;
    let v = local.lookup("http://unknown.test/").await;
    assert_eq!(v["risk"], "untested", "{v}");
    assert_eq!(v["upstream"], "unavailable", "{v}");
    assert_eq!(v["ttl_secs"], 60, "{v}");
    local.stop().await;

    // Silent: accepts and never answers; the deadline answers untested.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_base = format!("http://{}", silent.local_addr().unwrap());
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let local = with_upstream(&silent_base, Duration::from_millis(300)).await;
    let (status, b) = local
        .post(
            "/v1/lookup",
            Some(CLIENT),
            &json!({ "hosts": ["quiet.test"] }),
        )
        .await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["hosts"][0]["risk"], "untested", "{b}");
    assert_eq!(b["hosts"][0]["upstream"], "unavailable", "{b}");
    local.stop().await;
    hold.abort();
}

#[tokio::test]
async fn feeds_are_imported_over_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let config = ApiConfig {
        max_import_bytes: 4096,
        ..ApiConfig::default()
    };
    let options = ServeOptions {
        spool_dir: Some(dir.path().to_owned()),
        ..ServeOptions::default()
    };
    let s = RepServer::builder()
        .config(config)
        .options(options)
        .start()
        .await;
    let upload = |path: &str, token: &str, body: &'static str| {
        let req = s
            .http
            .post(format!("{}{path}", s.base))
            .bearer_auth(token)
            .body(body);
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (
                status,
                serde_json::from_slice::<Value>(&r.bytes().await.unwrap()).unwrap(),
            )
        }
    };
    let list = "# gambling sites\ncasino.test\n\nbad line with spaces\npoker.test\n";
    let (status, v) = upload(
        "/v1/import?format=domains&feed=ut1&category=gambling&score=70",
        ADMIN,
        list,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["imported"], 2, "{v}");
    assert_eq!(v["bad_total"], 1, "{v}");
    assert_eq!(v["bad"][0]["line"], 4, "{v}");
    let l = s.lookup("http://www.poker.test/").await;
    assert_eq!(l["categories"], json!(["gambling"]), "{l}");
    assert_eq!(l["score"], 70, "{l}");
    assert_eq!(l["explain"]["matched"][0]["source"], "feed:ut1", "{l}");

    // The wrong format writes nothing and says so.
    let (status, v) = upload("/v1/import?format=urlhaus", ADMIN, "just text\nmore text\n").await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("not a urlhaus file"),
        "{v}"
    );
    // A client token may not import; an unknown format or category is refused.
    let (status, _) = upload("/v1/import?format=domains&category=gambling", CLIENT, list).await;
    assert_eq!(status, 403);
    let (status, v) = upload("/v1/import?format=csv", ADMIN, list).await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = upload("/v1/import?format=domains&category=nope", ADMIN, list).await;
    assert_eq!(status, 400, "{v}");
    // Beyond max_import_bytes: 413, and the spool directory is left empty.
    let big: &'static str = Box::leak("x.test\n".repeat(1000).into_boxed_str());
    let (status, v) = upload("/v1/import?format=domains&category=gambling", ADMIN, big).await;
    assert_eq!(status, 413, "{v}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "spool files left behind"
    );
    s.stop().await;
}

#[tokio::test]
async fn file_hashes_and_admin_categories() {
    let s = RepServer::start().await;
    let bad = "a".repeat(64);
    let (status, v) = s
        .post(
            "/v1/files",
            Some(ADMIN),
            &json!({ "upsert": [{ "sha256": bad.to_uppercase(), "verdict": "malicious", "name": "Emotet" }] }),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = s
        .get(&format!("/v1/files?sha256={bad}"), Some(CLIENT))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["verdict"].as_str(), v["name"].as_str()),
        (Some("malicious"), Some("Emotet"))
    );
    let (status, v) = s
        .post(
            "/v1/files/lookup",
            Some(CLIENT),
            &json!({ "sha256": [bad, "b".repeat(64), "xyz"] }),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["files"][0]["verdict"], "malicious");
    assert_eq!(v["files"][1]["verdict"], "unknown");
    assert!(v["files"][2]["error"].is_string(), "{v}");
    let (status, _) = s
        .post(
            "/v1/files",
            Some(CLIENT),
            &json!({ "upsert": [{ "sha256": "c".repeat(64), "verdict": "clean" }] }),
        )
        .await;
    assert_eq!(status, 403);
    let (status, v) = s
        .post(
            "/v1/files",
            Some(ADMIN),
            &json!({ "upsert": [{ "sha256": "c".repeat(64), "verdict": "evil" }] }),
        )
        .await;
    assert_eq!(status, 400, "{v}");

    // An admin-defined category can be used by entries once defined.
    let entry = json!({ "upsert": [{ "key": "intra.test/", "score": 90, "categories": ["partner-sites"] }] });
    let (status, _) = s.post("/v1/entries", Some(ADMIN), &entry).await;
    assert_eq!(status, 400);
    let (status, v) = s
        .post(
            "/v1/categories",
            Some(ADMIN),
            &json!({ "define": ["partner-sites"] }),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["custom"], json!(["partner-sites"]));
    s.write(&entry).await;
    let (status, v) = s.get("/v1/categories", Some(CLIENT)).await;
    assert_eq!(status, 200);
    assert_eq!(v["builtin"].as_array().unwrap().len(), 26, "{v}");
    let (status, _) = s
        .post(
            "/v1/categories",
            Some(ADMIN),
            &json!({ "define": ["malware"] }),
        )
        .await;
    assert_eq!(status, 400, "a built-in name cannot be redefined");
    s.stop().await;
}

#[tokio::test]
async fn the_api_over_tls() {
    init_crypto();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, leaf.pem()).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();

    // The server's own TLS setup, through the config path of `webrep server`.
    let mut raw = webrep::config::RawConfig::default();
    raw.server.listen = "127.0.0.1:0".into();
    raw.server.admin_tokens = vec![format!("{ADMIN}-long-enough")];
    raw.server.tls = Some(webrep::config::raw::RawTlsServerConfig { cert, key });
    let config = webrep::config::Config::from_raw(raw, "test config").unwrap();
    assert!(config.server.tls.is_some());
    let acceptor = webrep::repserver::server::tls_acceptor_for(&config.server)
        .unwrap()
        .unwrap();
    let options = ServeOptions {
        tls: Some(acceptor),
        ..ServeOptions::default()
    };
    let mut s = RepServer::builder().options(options).start().await;
    assert!(s.base.starts_with("https://"));
    s.http = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap()])
        .build()
        .unwrap();
    s.write(&sample()).await;
    assert_eq!(s.lookup("https://danger.test/").await["risk"], "dangerous");
    // Our own client, trusting the CA through a CA file.
    let client = webrep::client::RepClient::new(&s.base, CLIENT, Some(&ca_file)).unwrap();
    let v = client
        .get(
            "/v1/lookup?url=http%3A%2F%2Fsafe.test%2F",
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(v["risk"], "safe");
    // Without the CA the handshake fails: never a silent fallback to plain text.
    let untrusting = webrep::client::RepClient::new(&s.base, CLIENT, None).unwrap();
    let e = untrusting
        .get("/healthz", Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    s.stop().await;
}

#[tokio::test]
async fn shipped_sample_data_covers_every_risk_level() {
    let mut store = Store::open_in_memory().unwrap();
    let n = webrep::repserver::server::load_sample(&mut store, 1_700_000_000).unwrap();
    assert!(n >= 20, "{n}");
    let s = RepServer::builder().store(store).start().await;
    for (url, risk, category) in [
        ("http://malware.example/x", "dangerous", "malware"),
        (
            "http://suspicious-high.example/",
            "highly_suspicious",
            "potentially-unwanted",
        ),
        ("http://suspicious.example/", "suspicious", "newly-observed"),
        ("http://safe.example/", "safe", "technology"),
        ("http://unlisted.example/", "untested", ""),
        (
            "http://files.test/uploads/evil/x.exe",
            "dangerous",
            "malware",
        ),
        (
            "http://mixed.example/checkout/pay",
            "suspicious",
            "phishing",
        ),
        ("http://www.compromised.test/", "dangerous", "news"),
    ] {
        let v = s.lookup(url).await;
        assert_eq!(v["risk"], risk, "{url}: {v}");
        let cats: Vec<&str> = v["categories"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(cats.first().copied().unwrap_or(""), category, "{url}: {v}");
    }
    s.stop().await;
}

/// A client bound to `local` (another address of 127.0.0.0/8: another client to the server).
fn client_from(local: &str) -> reqwest::Client {
    init_crypto();
    reqwest::Client::builder()
        .no_proxy()
        .local_address(local.parse::<std::net::IpAddr>().unwrap())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// A server on an empty store with these connection limits, and its `host:port`.
async fn limited_server(max: usize, per_client: usize) -> (RepServer, String) {
    let options = ServeOptions {
        max_connections: max,
        max_connections_per_client: per_client,
        ..ServeOptions::default()
    };
    let server = RepServer::builder().options(options).start().await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    (server, addr)
}

/// `n` connections from 127.0.0.1, each with half a request head sent.
async fn half_sent(addr: &str, n: usize) -> Vec<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt as _;
    let mut held = Vec::new();
    for _ in 0..n {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        // A refused one may be closed already: what it was sent does not matter.
        let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHo").await;
        held.push(s);
    }
    held
}

#[tokio::test]
async fn healthz_stays_reachable_under_half_sent_connections_from_one_address() {
    use tokio::io::AsyncReadExt as _;
    // A small server: 20 connections, 5 per client address.
    let (server, addr) = limited_server(20, 5).await;
    let mut held = half_sent(&addr, 30).await;
    // The last ones were refused with 429 and closed.
    let mut answer = String::new();
    let last = held.last_mut().unwrap();
    tokio::time::timeout(Duration::from_secs(20), last.read_to_string(&mut answer))
        .await
        .expect("a refused connection is answered and closed")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(answer.contains("too many connections"), "{answer}");
    // Another address is served at once, not after the 30 s the half-sent heads may take.
    let r = client_from("127.0.0.2")
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .expect("healthz answers while one address holds half-sent connections");
    assert_eq!(r.status(), 200);
    drop(held);
    server.stop().await;

    // With no per-client limit, one address fills every place; the half-sent connections are
    // not requests in progress, so the one waiting longest is closed to make room.
    let (server, addr) = limited_server(20, 0).await;
    let mut held = half_sent(&addr, 20).await;
    let r = client_from("127.0.0.2")
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .expect("healthz answers while every place holds a half-sent connection");
    assert_eq!(r.status(), 200);
    let mut byte = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(20), held[0].read(&mut byte))
        .await
        .expect("the oldest half-sent connection is closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    drop(held);
    server.stop().await;
}
