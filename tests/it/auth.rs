//! Proxy authentication under wrong passwords: the cache of wrong credentials, the failure
//! budget per client address, the bounded password-check pool, and valid users getting in
//! through all of it.

use std::net::IpAddr;
use std::time::Duration;

use crate::harness::*;
use webrep::config::raw::RawAuthConfig;

/// An argon2id hash that is quick to check (tests of everything but the hashing cost).
fn cheap_hash(password: &str) -> String {
    let params = argon2::Params::new(64, 1, 1, None).unwrap();
    webrep::proxy::auth::hash_password_with(password, params).unwrap()
}

/// A proxy with `users` as its users file, an admin listener and the `auth:` settings
/// `auth` makes.
async fn proxy_with_users(
    users: &str,
    auth: impl FnOnce(&mut RawAuthConfig),
) -> (TestProxy, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users");
    std::fs::write(&path, users).unwrap();
    let proxy = TestProxy::start_with(|c| {
        c.auth.users_file = Some(path);
        auth(&mut c.auth);
        c.admin.listen = Some("127.0.0.1:0".into());
    })
    .await;
    (proxy, dir)
}

/// A client of `proxy` connecting from `local` (any 127.0.0.0/8 address), sending `user` and
/// `password`.
fn client_as(proxy: &TestProxy, local: [u8; 4], user: &str, password: &str) -> reqwest::Client {
    init_crypto();
    reqwest::Client::builder()
        .proxy(
            reqwest::Proxy::all(proxy.url())
                .unwrap()
                .basic_auth(user, password),
        )
        .local_address(IpAddr::from(local))
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

async fn status(client: &reqwest::Client, url: &str) -> u16 {
    client.get(url).send().await.unwrap().status().as_u16()
}

/// `webrep_auth_checks_total{result=...}` on the proxy's admin listener.
async fn checks(proxy: &TestProxy, result: &str) -> f64 {
    let text = scrape(proxy.admin.expect("admin listener")).await;
    sample(
        &text,
        &format!("webrep_auth_checks_total{{result=\"{result}\"}}"),
    )
}

#[tokio::test]
async fn a_repeated_wrong_credential_is_answered_without_hashing_again() {
    let origin = Origin::http().await;
    let users = format!("alice:{}\n", cheap_hash("right"));
    let (proxy, _dir) = proxy_with_users(&users, |_| {}).await;
    let wrong = client_as(&proxy, [127, 0, 0, 1], "alice", "wrong");
    for _ in 0..3 {
        assert_eq!(status(&wrong, &origin.url("/")).await, 407);
    }
    assert_eq!(checks(&proxy, "wrong_hashed").await, 1.0, "one hash only");
    assert_eq!(checks(&proxy, "wrong_cached").await, 2.0);
    // Another wrong password is another credential: hashed.
    let other = client_as(&proxy, [127, 0, 0, 1], "alice", "wrong too");
    assert_eq!(status(&other, &origin.url("/")).await, 407);
    assert_eq!(checks(&proxy, "wrong_hashed").await, 2.0);
    // The right one still works.
    let right = client_as(&proxy, [127, 0, 0, 1], "alice", "right");
    assert_eq!(status(&right, &origin.url("/")).await, 200);
    proxy.stop().await;
}

/// With the default budget (20 wrong credentials per address per minute): a flood from one
/// address is answered 429 without checks once its budget is spent, while a user at another
/// address logs in, and a user already logged in at the flooding address stays in.
#[tokio::test]
async fn an_address_over_its_failure_budget_gets_429_and_other_users_still_get_in() {
    let origin = Origin::http().await;
    let users = format!(
        "alice:{}\nbob:{}\n",
        cheap_hash("alice's"),
        cheap_hash("bob's")
    );
    let (proxy, _dir) = proxy_with_users(&users, |_| {}).await;
    let url = origin.url("/");
    // Bob logs in from the address that will flood, before it does.
    let bob_there = client_as(&proxy, [127, 0, 0, 2], "bob", "bob's");
    assert_eq!(status(&bob_there, &url).await, 200);
    // The flood: concurrent wrong passwords, each different, from 127.0.0.2 until refused
    // with 429.
    let mut flood = tokio::task::JoinSet::new();
    for task in 0..8 {
        let (proxy_url, url) = (proxy.url(), url.clone());
        flood.spawn(async move {
            for i in 0.. {
                let c = reqwest::Client::builder()
                    .proxy(
                        reqwest::Proxy::all(&proxy_url)
                            .unwrap()
                            .basic_auth("alice", &format!("guess-{task}-{i}")),
                    )
                    .local_address(IpAddr::from([127, 0, 0, 2]))
                    .timeout(Duration::from_secs(60))
                    .build()
                    .unwrap();
                let r = c.get(&url).send().await.unwrap();
                match r.status().as_u16() {
                    407 if i < 100 => continue,
                    429 => return r.headers().get("retry-after").cloned(),
                    s => panic!("flood request {i} answered {s}"),
                }
            }
            unreachable!()
        });
    }
    while let Some(done) = flood.join_next().await {
        let retry_after = done.unwrap().expect("429 carries Retry-After");
        let secs: u64 = retry_after.to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&secs), "Retry-After {secs}");
    }
    // From there even the right password is not checked now, but bob's remembered login is
    // still accepted.
    let alice_there = client_as(&proxy, [127, 0, 0, 2], "alice", "alice's");
    assert_eq!(status(&alice_there, &url).await, 429);
    assert_eq!(status(&bob_there, &url).await, 200);
    // Alice, from her own address, logs in (a fresh check) and browses.
    let alice = client_as(&proxy, [127, 0, 0, 1], "alice", "alice's");
    assert_eq!(status(&alice, &url).await, 200);
    assert_eq!(status(&alice, &url).await, 200);
    proxy.stop().await;
}

/// One password-check thread and room for one waiting check: of six concurrent checks of a
/// slow (default-cost argon2) hash, those that find both taken are answered 503 instead of
/// waiting for a thread, and the pool serves again afterwards. (No failure budget here: the
/// valid user below polls through 503s while the pool finishes.)
#[tokio::test]
async fn password_checks_beyond_the_pool_and_its_queue_are_refused_not_queued() {
    let origin = Origin::http().await;
    let slow = webrep::proxy::auth::hash_password("slow to check").unwrap();
    let users = format!("carol:{slow}\nalice:{}\n", cheap_hash("alice's"));
    let (proxy, _dir) = proxy_with_users(&users, |a| {
        a.hash_threads = 1;
        a.hash_queue = 1;
        a.failures_per_client = 0;
        a.failure_delay_ms = 100;
    })
    .await;
    let url = origin.url("/");
    let mut checks_in_flight = tokio::task::JoinSet::new();
    for i in 0..6u8 {
        // Each from its own address and with its own password: neither the failure budget
        // nor the cache of wrong credentials answers them.
        let c = client_as(&proxy, [127, 0, 1, i + 1], "carol", &format!("guess {i}"));
        let url = url.clone();
        checks_in_flight.spawn(async move { status(&c, &url).await });
    }
    let mut answers = Vec::new();
    while let Some(s) = checks_in_flight.join_next().await {
        answers.push(s.unwrap());
    }
    answers.sort_unstable();
    assert!(
        answers.iter().all(|s| *s == 407 || *s == 503),
        "{answers:?}"
    );
    assert!(answers.contains(&503), "no check was refused: {answers:?}");
    assert_eq!(
        checks(&proxy, "busy").await,
        answers.iter().filter(|s| **s == 503).count() as f64
    );
    // The queue is bounded: never more than one waiting check.
    let text = scrape(proxy.admin.unwrap()).await;
    assert!(sample(&text, "webrep_auth_hash_queue") <= 1.0);
    // Once the pool is free, a valid user gets in (503 while it is still busy).
    let alice = client_as(&proxy, [127, 0, 0, 1], "alice", "alice's");
    eventually_ok("alice gets in", Duration::from_secs(120), || async {
        match status(&alice, &url).await {
            200 => Ok(()),
            503 => Err(503),
            s => panic!("alice got {s}"),
        }
    })
    .await;
    proxy.stop().await;
}

/// With authentication on, what the proxy port serves without credentials shows nothing
/// about traffic: the counters (and the hosts with failed handshakes) are on the admin
/// listener only.
#[tokio::test]
async fn the_proxy_port_shows_no_counters_without_credentials() {
    let users = format!("alice:{}\n", cheap_hash("alice's"));
    let (proxy, _dir) = proxy_with_users(&users, |_| {}).await;
    let r = plain_get(format!("{}/stats", proxy.url())).await.unwrap();
    assert_eq!(r.status(), 404);
    let body = r.text().await.unwrap();
    assert!(body.contains("admin listener"), "{body}");
    let index = plain_text(format!("{}/", proxy.url())).await;
    assert!(!index.contains("/stats"), "{index}");
    // The admin listener has them, the password checks included.
    let stats = proxy_stats(&proxy).await;
    assert!(stats["dns"].is_object(), "{stats}");
    assert_eq!(stats["auth"]["wrong_hashed"], 0, "{stats}");
    proxy.stop().await;
}
