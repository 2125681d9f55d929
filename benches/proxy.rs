//! Hot-path benches of the proxy core: the per-hop header rewrite on a realistic browser
//! request, and a whole keep-alive round trip client → proxy → origin on loopback.
//!
//! Run: `cargo bench --bench proxy`. The load comparison against Squid and a direct
//! connection is ../shared/bench (see README.md, "Benchmarks").

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Version};
use http_body_util::{BodyExt as _, Empty, Full};
use hyper_util::rt::TokioIo;
use webrep::proxy::headers::{append_via, has_our_via, strip_hop_by_hop, via_value};

fn browser_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "www.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        ),
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        ("accept-language", "en-US,en;q=0.5"),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        ("proxy-connection", "keep-alive"),
        ("connection", "keep-alive"),
        (
            "cookie",
            "session=0123456789abcdef; theme=dark; consent=yes",
        ),
        ("upgrade-insecure-requests", "1"),
        ("priority", "u=0, i"),
    ] {
        h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    h
}

fn headers(c: &mut Criterion) {
    let template = browser_headers();
    let via = via_value(Version::HTTP_11, "webrep-bench").unwrap();
    c.bench_function("headers/prepare_upstream_request", |b| {
        b.iter_batched_ref(
            || template.clone(),
            |h| {
                let looped = has_our_via(h, "webrep-bench");
                strip_hop_by_hop(h, false);
                append_via(h, &via);
                looped
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

fn round_trip(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (proxy_addr, origin_addr, _token) = rt.block_on(async {
        // Origin: a minimal hyper server answering 1 KiB.
        let origin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin_addr = origin.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = origin.accept().await else { continue };
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|_req| async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(vec![b'x'; 1024]))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        let config = webrep::config::Config::from_yaml(
            "proxy:\n  listen: [\"127.0.0.1:0\"]\n  destinations:\n    allow_internal: true\naccess_log:\n  enabled: false\n",
            "bench",
        )
        .unwrap();
        let log = Arc::new(webrep::accesslog::AccessLog::disabled());
        let proxy = webrep::proxy::Proxy::bind(&config, log).await.unwrap();
        let addr = proxy.local_addrs()[0];
        let token = tokio_util::sync::CancellationToken::new();
        tokio::spawn(proxy.run(token.clone()));
        (addr, origin_addr, token)
    });
    let mut sender = rt.block_on(async {
        let s = tokio::net::TcpStream::connect(proxy_addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
            .await
            .unwrap();
        tokio::spawn(conn);
        sender
    });
    let uri = format!("http://{origin_addr}/1k");
    c.bench_function("proxy/keepalive_get_1k_round_trip", |b| {
        b.iter(|| {
            rt.block_on(async {
                let req = Request::get(&uri)
                    .header("host", origin_addr.to_string())
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                sender.ready().await.unwrap();
                let resp = sender.send_request(req).await.unwrap();
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(body.len(), 1024);
            })
        })
    });
}

criterion_group!(benches, headers, round_trip);
criterion_main!(benches);
