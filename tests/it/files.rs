//! File reputation end to end: the real proxy and reputation server, downloads from an
//! in-process origin, file verdicts written over the server's API.

use serde_json::{Value, json};
use sha2::Digest as _;

use crate::harness::*;
use webrep::config::raw::{RawFilesConfig, RawReputationSource};

fn sha256(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

/// Listed: seed 1 (malicious) and seed 2 (suspicious), at both sizes used.
async fn server_with_listed_files() -> RepServer {
    let server =
        RepServer::serving(json!({ "upsert": [{ "key": "unrelated.test/", "score": 90 }] })).await;
    let mut upsert = Vec::new();
    for n in [10_000usize, 300_000] {
        upsert.push(json!({ "sha256": sha256(&download_bytes(n, 1)), "verdict": "malicious", "name": "Test.Dropper" }));
        upsert.push(json!({ "sha256": sha256(&download_bytes(n, 2)), "verdict": "suspicious" }));
    }
    server
        .admin
        .post_json(
            "/v1/files",
            &json!({ "upsert": upsert }),
            std::time::Duration::from_secs(10),
        )
        .await
        .unwrap();
    server
}

async fn proxy_for(
    servers: &[&str],
    policy: &str,
    files: RawFilesConfig,
) -> (TestProxy, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, policy).unwrap();
    let proxy = TestProxy::start_with(|c| {
        c.policy.file = Some(file);
        c.files = files;
        c.reputation.retry_after_ms = 60_000;
        c.reputation.sources = servers
            .iter()
            .map(|s| RawReputationSource {
                timeout_ms: 1000,
                ..source(s)
            })
            .collect();
    })
    .await;
    (proxy, dir)
}

const HOLD: RawFilesConfig = RawFilesConfig {
    hold_back_bytes: 65536,
    hold_back_total_bytes: 131072,
};

/// Status and body bytes, or the bytes read before the body failed.
async fn fetch(client: &reqwest::Client, url: &str) -> (u16, Vec<u8>, bool) {
    let mut r = client
        .get(url)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let mut body = Vec::new();
    loop {
        match r.chunk().await {
            Ok(Some(c)) => body.extend_from_slice(&c),
            Ok(None) => return (status, body, true),
            Err(_) => return (status, body, false),
        }
    }
}

#[tokio::test]
async fn listed_downloads_are_blocked_or_cut_and_others_arrive_whole() {
    let origin = Origin::http().await;
    let server = server_with_listed_files().await;
    let (proxy, _dir) = proxy_for(&[&server.base], "security_level: medium\n", HOLD).await;
    let client = proxy.client(None);

    // Under the hold-back size: the block page instead of the file, naming the verdict.
    let (status, body, _) = fetch(&client, &origin.url("/download/10000/1")).await;
    assert_eq!(status, 403);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (v["action"].as_str(), v["reason"].as_str()),
        (Some("block"), Some("file"))
    );
    let explanation = v["explanation"].as_str().unwrap();
    assert!(
        explanation.contains("malicious") && explanation.contains("Test.Dropper"),
        "{v}"
    );

    // Over it, with a length and unsized: it streams, and is cut before its last byte.
    for path in ["/download/300000/1", "/download-chunked/300000/1"] {
        let (status, body, complete) = fetch(&client, &origin.url(path)).await;
        assert_eq!(status, 200, "{path}");
        assert!(!complete, "{path}: the download must fail");
        assert!(body.len() < 300_000, "{path}: {} bytes arrived", body.len());
        assert_eq!(body[..], download_bytes(300_000, 1)[..body.len()], "{path}");
    }
    // curl sees a failed transfer too.
    let out = tokio::process::Command::new("curl")
        .args([
            "-s",
            "--noproxy",
            "",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            "-x",
        ])
        .arg(proxy.url())
        .arg(origin.url("/download/300000/1"))
        .output()
        .await
        .unwrap();
    assert!(!out.status.success(), "curl must report a failed download");
    let got: usize = String::from_utf8_lossy(&out.stdout).parse().unwrap();
    assert!(got < 300_000, "{got}");

    // Suspicious is monitored (the default), unknown files pass: byte for byte.
    for (path, n, seed) in [
        ("/download/10000/2", 10_000, 2),
        ("/download/300000/2", 300_000, 2),
        ("/download/10000/3", 10_000, 3),
        ("/download/300000/3", 300_000, 3),
        ("/download-chunked/300000/3", 300_000, 3),
    ] {
        let (status, body, complete) = fetch(&client, &origin.url(path)).await;
        assert_eq!((status, complete), (200, true), "{path}");
        assert!(body == download_bytes(n, seed), "{path}: the bytes differ");
    }
    let stats: Value = proxy_stats(&proxy).await;
    assert_eq!(stats["files"]["blocked"], 4, "{stats}");
    assert_eq!(stats["files"]["monitored"], 2, "{stats}");
    // Each verdict reaches the server as a file_verdict feedback event with the file's facts.
    let events = server
        .wait_events("kind=file_verdict", |ev| ev.len() >= 6)
        .await;
    assert_eq!(events.len(), 6, "{events:?}");
    let small = sha256(&download_bytes(10_000, 1));
    let e = events
        .iter()
        .find(|e| e["file"]["sha256"] == small.as_str())
        .unwrap_or_else(|| panic!("no event for {small}: {events:?}"));
    assert_eq!(e["action"], "block");
    assert_eq!(e["file"]["size"], 10_000);
    assert_eq!(e["file"]["verdict"], "malicious");
    assert_eq!(e["file"]["content_type"], "application/octet-stream");
    assert_eq!(e["host"], "127.0.0.1");
    proxy.stop().await;
}

#[tokio::test]
async fn a_dead_or_silent_server_follows_the_file_fail_mode() {
    let origin = Origin::http().await;
    let base = format!("http://127.0.0.1:{}", closed_port().await);
    // URLs pass while reputation is unavailable; files follow files.unavailable.
    let (proxy, _dir) = proxy_for(
        &[&base],
        "security_level: medium\nfiles:\n  unavailable: block\n",
        HOLD,
    )
    .await;
    let client = proxy.client(None);
    let (status, body, _) = fetch(&client, &origin.url("/download/10000/3")).await;
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["reason"], "reputation_unavailable");
    let (_, _, complete) = fetch(&client, &origin.url("/download/300000/3")).await;
    assert!(
        !complete,
        "unchecked large download cut under unavailable: block"
    );
    proxy.stop().await;
    // A server that accepts and never answers: the same, once its deadline (1 s) passes.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_base = format!("http://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            conns.push(c);
        }
    });
    let (proxy, _dir) = proxy_for(
        &[&silent_base],
        "security_level: medium\nfiles:\n  unavailable: block\n",
        HOLD,
    )
    .await;
    let (status, body, _) = fetch(&proxy.client(None), &origin.url("/download/10000/3")).await;
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    proxy.stop().await;
    held.abort();
    // The default (allow) lets them through whole.
    let (proxy, _dir) = proxy_for(&[&base], "security_level: medium\n", HOLD).await;
    let (status, body, complete) =
        fetch(&proxy.client(None), &origin.url("/download/300000/3")).await;
    assert_eq!((status, complete), (200, true));
    assert!(body == download_bytes(300_000, 3));
    proxy.stop().await;
}

#[tokio::test]
async fn parallel_downloads_share_a_bounded_hold_back_budget() {
    let origin = Origin::http().await;
    let server = server_with_listed_files().await;
    let (proxy, _dir) = proxy_for(&[&server.base], "security_level: medium\n", HOLD).await;
    let client = proxy.client(None);
    // 24 downloads of 60 KB at once against a budget of 128 KiB: at most two are held whole
    // at a time, the rest stream; every one arrives intact.
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let client = client.clone();
            let url = origin.url(&format!("/download/60000/{}", 10 + i));
            tokio::spawn(async move { (i, fetch(&client, &url).await) })
        })
        .collect();
    for t in tasks {
        let (i, (status, body, complete)) = t.await.unwrap();
        assert_eq!((status, complete), (200, true));
        assert!(body == download_bytes(60_000, 10 + i as u8));
    }
    let stats: Value = proxy_stats(&proxy).await;
    assert_eq!(stats["files"]["scanned"], 24, "{stats}");
    proxy.stop().await;
}

#[tokio::test]
async fn listed_downloads_are_stopped_inside_intercepted_https_too() {
    let origin_ca = TestCa::new();
    let origin = Origin::https(&origin_ca).await;
    let port = origin.addr.port();
    let server = server_with_listed_files().await;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "security_level: medium\n").unwrap();
    let ca_dir = dir.path().join("certs");
    let proxy = TestProxy::start_with(|c| {
        c.proxy.connect_ports = vec![port];
        c.intercept.enabled = true;
        c.intercept.create_ca = true;
        c.intercept.ca_dir = ca_dir.clone();
        c.intercept.upstream_ca_file = Some(origin_ca.ca_path.clone());
        c.policy.file = Some(policy);
        c.files = HOLD;
        c.reputation.sources = vec![source(&server.base)];
    })
    .await;
    let ca = std::fs::read_to_string(ca_dir.join("ca.pem")).unwrap();
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(proxy.url()).unwrap())
        .tls_certs_only([reqwest::Certificate::from_pem(ca.as_bytes()).unwrap()])
        .build()
        .unwrap();
    let url = |p: &str| format!("https://127.0.0.1:{port}{p}");
    let (status, body, _) = fetch(&client, &url("/download/10000/1")).await;
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    let (status, body, complete) = fetch(&client, &url("/download/300000/1")).await;
    assert_eq!(status, 200);
    assert!(
        !complete && body.len() < 300_000,
        "{} bytes, complete {complete}",
        body.len()
    );
    let (status, body, complete) = fetch(&client, &url("/download/300000/3")).await;
    assert_eq!((status, complete), (200, true));
    assert!(body == download_bytes(300_000, 3));
    proxy.stop().await;
}
