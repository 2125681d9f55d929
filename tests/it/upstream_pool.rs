//! The bounds on pooled upstream connections, seen from a real origin that counts the
//! connections it holds open: the total of idle connections (`proxy.upstream_max_idle`,
//! least recently used closed first), idle connections per host, the idle lifetime, closed
//! connections leaving the pool without waiting for the lifetime, that closing idle
//! connections never breaks a request, and that a connection goes back to the pool only
//! when nothing of an answer is left on it (an abandoned body, stray bytes from the origin).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::harness::{BOUND, TestProxy, eventually, read_head, sample, scrape};

/// An HTTP/1.1 origin for every host name (the proxy maps them all to 127.0.0.1): counts the
/// connections open to it, answers `ok` on each, keep-alive. To a request for `/slow` it
/// sends the head and the first byte of the body, then waits for a permit of `slow` before
/// the last byte: the response is in flight meanwhile. After answering `/stray` it sends an
/// answer nobody asked for on the idle connection; `/close` is answered with `connection:
/// close`, and the connection closed 300 ms later.
struct CountingOrigin {
    port: u16,
    open: Arc<AtomicUsize>,
    /// Connections accepted in all.
    accepted: Arc<AtomicUsize>,
    /// Unasked answers sent.
    strays: Arc<AtomicUsize>,
    /// Request heads received (the client cannot see how many requests were retried).
    requests: Arc<AtomicUsize>,
    slow: Arc<Semaphore>,
}

impl CountingOrigin {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let strays = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let slow = Arc::new(Semaphore::new(0));
        let (o, r, s) = (open.clone(), requests.clone(), slow.clone());
        let (acc, st) = (accepted.clone(), strays.clone());
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let (open, requests, slow, strays) = (o.clone(), r.clone(), s.clone(), st.clone());
                open.fetch_add(1, SeqCst);
                acc.fetch_add(1, SeqCst);
                tokio::spawn(async move {
                    loop {
                        let head_text = read_head(&mut sock).await;
                        if head_text.is_empty() {
                            break;
                        }
                        requests.fetch_add(1, SeqCst);
                        if path_is(&head_text, "/close") {
                            // The origin says it closes, and does so a moment later, unread.
                            let close = "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok";
                            let _ = sock.write_all(close.as_bytes()).await;
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            break;
                        }
                        if path_is(&head_text, "/big") {
                            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {BIG}\r\n\r\n");
                            if sock.write_all(head.as_bytes()).await.is_err()
                                || sock.write_all(&vec![b'x'; BIG]).await.is_err()
                            {
                                break;
                            }
                            continue;
                        }
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        let (head, rest) = answer.split_at(answer.len() - 1);
                        if sock.write_all(head).await.is_err() {
                            break;
                        }
                        if path_is_slow(&head_text) {
                            let _ = slow.acquire().await.map(|p| p.forget());
                        }
                        if sock.write_all(rest).await.is_err() {
                            break;
                        }
                        if path_is(&head_text, "/stray") {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            let stray = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nstray";
                            let _ = sock.write_all(stray).await;
                            strays.fetch_add(1, SeqCst);
                        }
                    }
                    open.fetch_sub(1, SeqCst);
                });
            }
        });
        Self {
            port,
            open,
            accepted,
            strays,
            requests,
            slow,
        }
    }

    fn open(&self) -> usize {
        self.open.load(SeqCst)
    }

    fn accepted(&self) -> usize {
        self.accepted.load(SeqCst)
    }

    /// `http://{host}:{port}{path}` on this origin.
    fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.port)
    }
}

fn path_is_slow(head: &str) -> bool {
    path_is(head, "/slow")
}

fn path_is(head: &str, path: &str) -> bool {
    head.split(' ').nth(1).is_some_and(|p| p.contains(path))
}

/// The length of `/big`'s body: more than the proxy reads at once.
const BIG: usize = 512 * 1024;

/// A proxy with one worker (the bound is split among workers) mapping every name to
/// 127.0.0.1, with `edit` applied.
async fn proxy(edit: impl FnOnce(&mut webrep::config::RawConfig)) -> TestProxy {
    TestProxy::start_with(|c| {
        c.proxy.workers = 1;
        c.proxy.hosts = [("*".to_owned(), vec!["127.0.0.1".to_owned()])].into();
        edit(c);
    })
    .await
}

/// `GET url` through the proxy: its status and body.
async fn get(client: &reqwest::Client, url: String) -> (u16, String) {
    let r = client
        .get(&url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e:#}"));
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

async fn metric(proxy: &TestProxy, name: &str) -> f64 {
    sample(&scrape(proxy.admin.unwrap()).await, name)
}

#[tokio::test]
async fn idle_upstream_connections_beyond_the_total_are_closed_oldest_first() {
    let origin = CountingOrigin::start().await;
    let proxy = proxy(|c| c.proxy.upstream_max_idle = 3).await;
    let client = proxy.client(None);
    for i in 0..8 {
        let (status, body) = get(&client, origin.url(&format!("h{i}.pool.test"), "/")).await;
        assert_eq!((status, body.as_str()), (200, "ok"), "host {i}");
    }
    eventually("the origin holds 3 connections", BOUND, || async {
        origin.open() == 3
    })
    .await;
    assert_eq!(
        metric(&proxy, "webrep_upstream_idle_connections").await,
        3.0
    );
    assert_eq!(metric(&proxy, "webrep_upstream_connections").await, 3.0);
    assert_eq!(
        metric(&proxy, "webrep_upstream_pool_evictions_total").await,
        5.0
    );
    // The 3 kept are the last used: those hosts are served without a new connection.
    for i in 5..8 {
        let (status, _) = get(&client, origin.url(&format!("h{i}.pool.test"), "/")).await;
        assert_eq!(status, 200);
    }
    assert_eq!(origin.open(), 3, "a kept connection was reused");
    assert_eq!(
        metric(&proxy, "webrep_upstream_pool_evictions_total").await,
        5.0
    );
    proxy.stop().await;
}

#[tokio::test]
async fn idle_connections_per_host_are_bounded() {
    let origin = CountingOrigin::start().await;
    let proxy = proxy(|c| c.proxy.upstream_max_idle_per_host = 2).await;
    let client = proxy.client(None);
    // Five requests at once to one host: five connections, the origin holding the end of
    // every answer until all five have arrived.
    let all = (0..5).map(|_| {
        let (client, url) = (client.clone(), origin.url("one.pool.test", "/slow"));
        async move { get(&client, url).await }
    });
    let waiting = tokio::spawn(futures_util::future::join_all(all));
    eventually("five requests at the origin", BOUND, || async {
        origin.requests.load(SeqCst) == 5
    })
    .await;
    assert_eq!(origin.open(), 5);
    origin.slow.add_permits(5);
    for (status, body) in waiting.await.unwrap() {
        assert_eq!((status, body.as_str()), (200, "ok"));
    }
    eventually("two connections stay for the host", BOUND, || async {
        origin.open() == 2
    })
    .await;
    proxy.stop().await;
}

#[tokio::test]
async fn closed_idle_connections_leave_the_pool_within_a_second_or_so() {
    let origin = CountingOrigin::start().await;
    // A lifetime far beyond the test: only the pool's sweep can drop the closed entries.
    let proxy = proxy(|c| {
        c.proxy.upstream_max_idle = 2;
        c.proxy.upstream_idle_timeout_ms = 600_000;
    })
    .await;
    let client = proxy.client(None);
    for i in 0..10 {
        let (status, _) = get(&client, origin.url(&format!("c{i}.pool.test"), "/")).await;
        assert_eq!(status, 200);
    }
    eventually("the closed entries are dropped", BOUND, || async {
        metric(&proxy, "webrep_upstream_pool_entries").await == 2.0
    })
    .await;
    assert_eq!(origin.open(), 2);
    assert_eq!(
        metric(&proxy, "webrep_upstream_pool_evictions_total").await,
        8.0
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_response_the_client_abandoned_never_puts_its_connection_back() {
    let origin = CountingOrigin::start().await;
    let proxy = proxy(|_| {}).await;
    let client = proxy.client(None);
    // The head and the first byte of an answer, then the client goes: the rest of the body
    // is still to come on the upstream connection, which must not carry another request.
    let r = client
        .get(origin.url("gone.pool.test", "/slow"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(r);
    eventually(
        "the proxy closes the abandoned connection",
        BOUND,
        || async { metric(&proxy, "webrep_upstream_connections").await == 0.0 },
    )
    .await;
    origin.slow.add_permits(1);
    for _ in 0..3 {
        let (status, body) = get(&client, origin.url("gone.pool.test", "/")).await;
        assert_eq!((status, body.as_str()), (200, "ok"));
    }
    assert_eq!(
        origin.accepted(),
        2,
        "one new connection after the abandoned one"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn an_answer_that_closes_its_connection_leaves_it_out_of_the_pool() {
    let origin = CountingOrigin::start().await;
    let proxy = proxy(|_| {}).await;
    let client = proxy.client(None);
    let (status, body) = get(&client, origin.url("close.pool.test", "/close")).await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    // At once, while the origin still holds the connection open but reads nothing more.
    let (status, body) = get(&client, origin.url("close.pool.test", "/")).await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    assert_eq!(origin.accepted(), 2);
    proxy.stop().await;
}

#[tokio::test]
async fn bytes_an_origin_sends_on_an_idle_connection_keep_it_out_of_the_pool() {
    let origin = CountingOrigin::start().await;
    let proxy = proxy(|_| {}).await;
    let client = proxy.client(None);
    // `/stray` is answered, then an unasked answer follows on the idle connection.
    let (status, body) = get(&client, origin.url("stray.pool.test", "/stray")).await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    eventually("the stray answer is sent", BOUND, || async {
        origin.strays.load(SeqCst) == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, body) = get(&client, origin.url("stray.pool.test", "/")).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "ok"),
        "never the stray answer"
    );
    assert_eq!(
        origin.accepted(),
        2,
        "the connection with stray bytes was not reused"
    );
    // A connection left clean is reused.
    let (status, _) = get(&client, origin.url("stray.pool.test", "/")).await;
    assert_eq!(status, 200);
    assert_eq!(origin.accepted(), 2);
    proxy.stop().await;
}

#[tokio::test]
async fn idle_connections_close_after_the_idle_lifetime() {
    let origin = CountingOrigin::start().await;
    let proxy = proxy(|c| c.proxy.upstream_idle_timeout_ms = 100).await;
    let client = proxy.client(None);
    for i in 0..3 {
        let (status, _) = get(&client, origin.url(&format!("t{i}.pool.test"), "/")).await;
        assert_eq!(status, 200);
    }
    // Far below the default lifetime: only the configured one closes them this soon.
    eventually(
        "idle connections closed",
        Duration::from_secs(10),
        || async { origin.open() == 0 },
    )
    .await;
    eventually("the gauge follows", BOUND, || async {
        metric(&proxy, "webrep_upstream_connections").await == 0.0
    })
    .await;
    assert_eq!(
        metric(&proxy, "webrep_upstream_idle_connections").await,
        0.0
    );
    assert_eq!(
        metric(&proxy, "webrep_upstream_pool_evictions_total").await,
        0.0
    );
    proxy.stop().await;
}

#[tokio::test]
async fn evicting_idle_connections_never_breaks_a_request() {
    let origin = CountingOrigin::start().await;
    let proxy = proxy(|c| c.proxy.upstream_max_idle = 1).await;
    let client = proxy.client(None);
    // A request in flight, its response head relayed and its body not finished: its
    // connection is busy, whatever becomes idle meanwhile.
    let slow = tokio::spawn({
        let (client, url) = (client.clone(), origin.url("slow.pool.test", "/slow"));
        async move { get(&client, url).await }
    });
    eventually("the slow request at the origin", BOUND, || async {
        origin.requests.load(SeqCst) == 1
    })
    .await;
    for i in 0..4 {
        let (status, _) = get(&client, origin.url(&format!("e{i}.pool.test"), "/")).await;
        assert_eq!(status, 200);
    }
    eventually("3 evictions", BOUND, || async {
        metric(&proxy, "webrep_upstream_pool_evictions_total").await == 3.0
    })
    .await;
    origin.slow.add_permits(1);
    assert_eq!(slow.await.unwrap(), (200, "ok".to_owned()));
    // A host whose connection was evicted is served on a new one.
    let (status, body) = get(&client, origin.url("e0.pool.test", "/")).await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    // Many requests over a few hosts with room for one idle connection: evictions race
    // with requests taking connections from the pool, and every request succeeds.
    let tasks = (0..8).map(|t| {
        let (client, urls) = (
            client.clone(),
            (0..25)
                .map(|i| origin.url(&format!("r{}.pool.test", (t + i) % 5), "/"))
                .collect::<Vec<_>>(),
        );
        tokio::spawn(async move {
            for url in urls {
                assert_eq!(get(&client, url).await, (200, "ok".to_owned()));
            }
        })
    });
    for t in futures_util::future::join_all(tasks).await {
        t.unwrap();
    }
    eventually("one idle connection left", BOUND, || async {
        origin.open() == 1
    })
    .await;
    assert!(metric(&proxy, "webrep_upstream_pool_evictions_total").await > 3.0);
    proxy.stop().await;
}
