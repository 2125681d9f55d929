//! The reputation server's HTTP API against the real server on 127.0.0.1:0 with real
//! clients: lookups, batches, explain, auth, input errors, the change stream, durability.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use webrep::repserver::api::{self, ApiConfig, Tokens};
use webrep::repserver::store::Store;

const CLIENT: &str = "client-token-1";
const ADMIN: &str = "admin-token-1";

fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

struct Server {
    base: String,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
    http: reqwest::Client,
}

impl Server {
    async fn start(store: Store) -> Server {
        Server::start_with(store, ApiConfig::default()).await
    }

    async fn start_with(store: Store, config: ApiConfig) -> Server {
        init_crypto();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let tokens = Tokens {
            client: vec![CLIENT.to_owned()],
            admin: vec![ADMIN.to_owned()],
        };
        let task = tokio::spawn(api::serve(
            listener,
            store,
            tokens,
            config,
            shutdown.clone(),
        ));
        Server {
            base: format!("http://{addr}"),
            shutdown,
            task,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server stops")
            .unwrap()
            .unwrap();
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
        (status, v)
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, token, None).await
    }

    async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, token, Some(body.to_string()))
            .await
    }

    async fn lookup(&self, url: &str) -> Value {
        let (status, v) = self
            .get(&format!("/v1/lookup?url={}", encode(url)), Some(CLIENT))
            .await;
        assert_eq!(status, 200, "{v}");
        v
    }

    async fn write(&self, body: &Value) -> u64 {
        let (status, v) = self.post("/v1/entries", Some(ADMIN), body).await;
        assert_eq!(status, 200, "{v}");
        v["seq"].as_u64().unwrap()
    }
}

/// Percent-encodes everything but unreserved characters.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

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
    let s = Server::start(Store::open_in_memory().unwrap()).await;
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
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
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
    let s = Server::start(Store::open_in_memory().unwrap()).await;
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

#[tokio::test]
async fn host_answer_is_truncated_beyond_the_path_limit() {
    let config = ApiConfig {
        host_path_limit: 2,
        ..ApiConfig::default()
    };
    let s = Server::start_with(Store::open_in_memory().unwrap(), config).await;
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
    let s = Server::start(Store::open_in_memory().unwrap()).await;
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
    let s = Server::start_with(Store::open_in_memory().unwrap(), config).await;
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
    let (status, _) = s.get("/v1/changes?since=abc", Some(CLIENT)).await;
    assert_eq!(status, 400);
    s.stop().await;
}

#[tokio::test]
async fn change_stream_delivers_a_write_to_a_waiting_follower() {
    let s = Server::start(Store::open_in_memory().unwrap()).await;
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
    let s = Server::start(Store::open(path).unwrap()).await;
    let seq = s.write(&sample()).await;
    s.stop().await;

    let s = Server::start(Store::open(path).unwrap()).await;
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
