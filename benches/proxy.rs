//! Hot-path benches of the proxy core: the per-hop header rewrite on a realistic browser
//! request, a whole keep-alive round trip client → proxy → origin on loopback, and the same
//! with filtering on for a cached host and for a new (cold) host each time (decided by the
//! key summary, and asked of the reputation server with the summary off), and a name
//! lookup with the DNS cache on and off.
//!
//! Run: `cargo bench --bench proxy`. The load comparison against Squid and a direct
//! connection is ../shared/bench (see README.md, "Benchmarks").

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use webrep::accesslog::RequestId;
use webrep::proxy::filter::PageFormat;
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

/// A 1 KiB origin and a proxy configured by `yaml`, on 127.0.0.1:0; a keep-alive client
/// connection to the proxy.
fn start(
    rt: &tokio::runtime::Runtime,
    yaml: &str,
) -> (
    hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    std::net::SocketAddr,
    tokio_util::sync::CancellationToken,
    Arc<webrep::proxy::ProxyState>,
) {
    let (proxy_addr, origin_addr, token, state) = rt.block_on(async {
        // Origin: a minimal hyper server answering 1 KiB.
        let origin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin_addr = origin.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = origin.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        |req: Request<hyper::body::Incoming>| async move {
                            if req.uri().path() == "/1m-paced" {
                                return Ok::<_, Infallible>(paced_download());
                            }
                            if req.uri().path() == "/1m" {
                                // A download: 1 MiB of octet-stream (selected for file scanning).
                                let mut r =
                                    Response::new(Full::new(Bytes::from(vec![7u8; 1 << 20])));
                                r.headers_mut().insert(
                                    "content-type",
                                    HeaderValue::from_static("application/octet-stream"),
                                );
                                return Ok::<_, Infallible>(r.map(BodyExt::boxed));
                            }
                            Ok::<_, Infallible>(
                                Response::new(Full::new(Bytes::from(vec![b'x'; 1024])))
                                    .map(BodyExt::boxed),
                            )
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        let config = webrep::config::Config::from_yaml(yaml, "bench").unwrap();
        let log = Arc::new(webrep::accesslog::AccessLog::disabled());
        let proxy = webrep::app::proxy::ProxyApp::start(&config, log)
            .await
            .unwrap();
        let addr = proxy.local_addrs()[0];
        let state = proxy.state();
        let token = tokio_util::sync::CancellationToken::new();
        tokio::spawn(proxy.run(token.clone(), webrep::shutdown::Reloads::none()));
        (addr, origin_addr, token, state)
    });
    let sender = rt.block_on(connect(proxy_addr));
    (sender, origin_addr, token, state)
}

/// Bytes per second of the paced download: 1 Gbit/s, a fast server on a fast link.
const PACED_RATE: u64 = 125_000_000;
/// The paced download's chunk: 128 KiB, one every 1.05 ms at [`PACED_RATE`] (tokio's timer
/// has millisecond resolution; deadlines count from the start, so the average holds).
const PACED_CHUNK: usize = 128 * 1024;

/// 1 MiB of octet-stream (with its `Content-Length`) sent at [`PACED_RATE`]: a download
/// from a server that is not on the same machine.
fn paced_download() -> Response<http_body_util::combinators::BoxBody<Bytes, Infallible>> {
    let chunk = Bytes::from(vec![7u8; PACED_CHUNK]);
    let start = tokio::time::Instant::now();
    let every = std::time::Duration::from_nanos(PACED_CHUNK as u64 * 1_000_000_000 / PACED_RATE);
    let chunks = futures_util::stream::unfold(0u32, move |i| {
        let chunk = chunk.clone();
        async move {
            if i as usize * PACED_CHUNK >= 1 << 20 {
                return None;
            }
            tokio::time::sleep_until(start + every * i).await;
            Some((Ok::<_, Infallible>(http_body::Frame::data(chunk)), i + 1))
        }
    });
    let mut r = Response::new(http_body_util::StreamBody::new(chunks).boxed());
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/octet-stream"),
    );
    r.headers_mut()
        .insert("content-length", HeaderValue::from(1u32 << 20));
    r
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A GET of `uri` through `sender` whose body must be `len` bytes.
async fn get_len(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    uri: &str,
    len: usize,
) {
    let host = uri.split('/').nth(2).unwrap().to_owned();
    let req = Request::get(uri)
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    sender.ready().await.unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        body.len(),
        len,
        "{uri}: {status} {}",
        String::from_utf8_lossy(&body[..body.len().min(200)])
    );
}

async fn get_1k(sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>, uri: &str) {
    get_len(sender, uri, 1024).await;
}

fn round_trip(c: &mut Criterion) {
    let rt = runtime();
    let (mut sender, origin_addr, _token, _state) = start(
        &rt,
        "proxy:\n  listen: [\"127.0.0.1:0\"]\n  destinations:\n    allow_internal: true\naccess_log:\n  enabled: false\npolicy:\n  builtin: default\nreputation:\n  embedded_sample: true\n",
    );
    let uri = format!("http://{origin_addr}/1k");
    c.bench_function("proxy/keepalive_get_1k_round_trip", |b| {
        b.iter(|| rt.block_on(get_1k(&mut sender, &uri)))
    });
}

/// Filtering on (the embedded default: an in-process reputation server on loopback with
/// the sample data, `policies/default.yaml`): a round trip for a host whose answer is
/// cached; then the filter's check alone for a cached host beside a new host each time (a
/// cold miss: one lookup round trip to the reputation server). The difference of the last
/// two is the latency a cold miss adds.
fn filtered_round_trip(c: &mut Criterion) {
    let rt = runtime();
    let (mut sender, origin_addr, _token, state) = start(
        &rt,
        "proxy:\n  listen: [\"127.0.0.1:0\"]\n  destinations:\n    allow_internal: true\n  hosts: { \"*.test\": [\"127.0.0.1\"] }\naccess_log:\n  enabled: false\npolicy:\n  enabled: true\n  builtin: default\nreputation:\n  embedded_sample: true\n",
    );
    let port = origin_addr.port();
    let warm = format!("http://warm.test:{port}/1k");
    c.bench_function("filter/warm_host_get_1k_round_trip", |b| {
        b.iter(|| rt.block_on(get_1k(&mut sender, &warm)))
    });
    // The filter alone, as the request path calls it: a cached host, and a new host each
    // time (its one lookup round trip to the reputation server). Distinct hosts are not
    // sent upstream here: each would keep a pooled connection of its own.
    let filter_state = state.clone();
    let client: std::net::IpAddr = [127, 0, 0, 1].into();
    c.bench_function("filter/check_warm_host", |b| {
        b.iter(|| {
            rt.block_on(async {
                let f = filter_state.filter.as_ref().unwrap();
                let d = f.decide(&warm, client, None).await.unwrap();
                f.record(d, RequestId(0), PageFormat::Text).unwrap();
            })
        })
    });
    let mut n = 0u64;
    // With the key summary loaded (the default), a host without keys is decided at once.
    eventually_summary(&rt, &filter_state);
    c.bench_function("filter/check_cold_host", |b| {
        b.iter(|| {
            n += 1;
            let uri = format!("http://cold{n}.test:{port}/1k");
            rt.block_on(async {
                let f = filter_state.filter.as_ref().unwrap();
                let d = f.decide(&uri, client, None).await.unwrap();
                f.record(d, RequestId(0), PageFormat::Text).unwrap();
            })
        })
    });
}

/// Waits until the filter's key summary is loaded (the change follower loads it at start).
fn eventually_summary(rt: &tokio::runtime::Runtime, state: &Arc<webrep::proxy::ProxyState>) {
    let rep = &state.filter.as_ref().unwrap().reputation;
    rt.block_on(async {
        while rep.summary_size().is_none() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    });
}

/// The filter's check for a new host each time with the key summary off: one lookup round
/// trip to the reputation server per check (what `filter/check_cold_host` costs without a
/// summary, or for a host that has keys).
fn filtered_cold_host_asked(c: &mut Criterion) {
    let rt = runtime();
    let (_sender, origin_addr, _token, state) = start(
        &rt,
        "proxy:\n  listen: [\"127.0.0.1:0\"]\n  destinations:\n    allow_internal: true\n  hosts: { \"*.test\": [\"127.0.0.1\"] }\naccess_log:\n  enabled: false\npolicy:\n  enabled: true\n  builtin: default\nreputation:\n  embedded_sample: true\n  key_summary: false\n",
    );
    let port = origin_addr.port();
    let client: std::net::IpAddr = [127, 0, 0, 1].into();
    let mut n = 0u64;
    c.bench_function("filter/check_cold_host_asked", |b| {
        b.iter(|| {
            n += 1;
            let uri = format!("http://cold{n}.test:{port}/1k");
            rt.block_on(async {
                let f = state.filter.as_ref().unwrap();
                let d = f.decide(&uri, client, None).await.unwrap();
                f.record(d, RequestId(0), PageFormat::Text).unwrap();
            })
        })
    });
}

/// A client connection to the proxy at `addr`.
async fn connect(
    addr: std::net::SocketAddr,
) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// File reputation: 1 MiB downloads through a filtering proxy with scanning off,
/// held back whole (under `files.hold_back_bytes`), and streamed with the last frame held
/// (`hold_back_bytes: 0`); the file's hash is looked up once, then cached. Group `files`:
/// one download at a time; `files_parallel16`: 16 at once on 16 connections, the aggregate
/// throughput when every core is busy and hashing takes CPU that forwarding would use.
///
/// Group `files_paced_1gbit`: one download at a time from an origin that sends at 1 Gbit/s
/// ([`paced_download`]), as a server elsewhere on a fast network would; the hashing then
/// runs while the proxy waits for bytes, and what is left is its tail (the last chunk's hash
/// and the lookup) and, held back, the proxy-to-client send after the verdict.
fn file_scanning(c: &mut Criterion) {
    scan_group(c, "files", 1, "/1m");
    scan_group(c, "files_parallel16", 16, "/1m");
    scan_group(c, "files_paced_1gbit", 1, "/1m-paced");
}

fn scan_group(c: &mut Criterion, group_name: &str, parallel: usize, path: &str) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let off = dir.path().join("off.yaml");
    std::fs::write(&off, "files:\n  scan: false\n").unwrap();
    let on = dir.path().join("on.yaml");
    std::fs::write(&on, "security_level: medium\n").unwrap();
    let mut group = c.benchmark_group(group_name);
    group.throughput(criterion::Throughput::Bytes((parallel as u64) << 20));
    if path == "/1m-paced" {
        // About 8 ms a download: flat sampling, so a run takes seconds, not minutes.
        group.sampling_mode(criterion::SamplingMode::Flat);
        group.sample_size(30);
    }
    for (name, policy, hold) in [
        ("scan_off", &off, 4 << 20),
        ("scan_held", &on, 4 << 20),
        ("scan_streamed", &on, 0),
    ] {
        let yaml = format!(
            "proxy:\n  listen: [\"127.0.0.1:0\"]\n  destinations:\n    allow_internal: true\naccess_log:\n  enabled: false\npolicy:\n  enabled: true\n  file: {:?}\nfiles:\n  hold_back_bytes: {hold}\nreputation:\n  embedded_sample: true\n",
            policy.display().to_string()
        );
        let (_sender, origin_addr, _token, state) = start(&rt, &yaml);
        let proxy_addr = state.local_addrs[0];
        let mut senders: Vec<_> = (0..parallel)
            .map(|_| rt.block_on(connect(proxy_addr)))
            .collect();
        let uri = format!("http://{origin_addr}{path}");
        group.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(futures_util::future::join_all(
                    senders.iter_mut().map(|s| get_len(s, &uri, 1 << 20)),
                ))
            })
        });
    }
    group.finish();
}

/// Feedback: the filtered round trip for a cached host with feedback off, on with
/// nothing to report, and on with every decision reported as an event (policy
/// `feedback.report` includes `allow`), in one run. The events go to the in-process
/// reputation server, whose ingest shares the machine's cores with everything else here.
fn feedback_round_trip(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let none = dir.path().join("report-none.yaml");
    std::fs::write(&none, "feedback:\n  report: []\n").unwrap();
    let all = dir.path().join("report-all.yaml");
    std::fs::write(
        &all,
        "feedback:\n  report: [allow, block, warn, continue, monitor, untested, reputation_unavailable]\n",
    )
    .unwrap();
    for (name, enabled, policy) in [
        ("off", false, &all),
        ("on_nothing_reported", true, &none),
        ("on_every_request_reported", true, &all),
    ] {
        let yaml = format!(
            "proxy:\n  listen: [\"127.0.0.1:0\"]\n  destinations:\n    allow_internal: true\n  hosts: {{ \"*.test\": [\"127.0.0.1\"] }}\naccess_log:\n  enabled: false\npolicy:\n  enabled: true\n  file: {:?}\nfeedback:\n  enabled: {enabled}\n  spool_dir: {:?}\nreputation:\n  embedded_sample: true\n",
            policy.display().to_string(),
            dir.path()
                .join(format!("spool-{name}"))
                .display()
                .to_string()
        );
        let (mut sender, origin_addr, _token, _state) = start(&rt, &yaml);
        let uri = format!("http://warm.test:{}/1k", origin_addr.port());
        c.bench_function(&format!("feedback/{name}_get_1k_round_trip"), |b| {
            b.iter(|| rt.block_on(get_1k(&mut sender, &uri)))
        });
    }
}

/// Host name resolution: "localhost" from /etc/hosts through getaddrinfo (the `system`
/// resolver) with the cache on (a hit) and off (a blocking-pool hop and a getaddrinfo call
/// each time); and a name from a dnsmasq on 127.0.0.1 through the `hickory` resolver, a hit
/// and a miss (a UDP round trip for A and AAAA each, in parallel). Nothing leaves loopback. The hickory
/// benches need dnsmasq (package dnsmasq-base) and are skipped without it.
fn dns(c: &mut Criterion) {
    use webrep::config::{DnsCacheConfig, ResolverKind};
    use webrep::proxy::dial::Resolver;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    for (name, ttl) in [("cached", 30_000), ("uncached", 0)] {
        let r = Resolver::system(DnsCacheConfig {
            ttl: std::time::Duration::from_millis(ttl),
            ..DnsCacheConfig::default()
        });
        c.bench_function(&format!("dns/system_localhost_{name}"), |b| {
            b.iter(|| rt.block_on(r.resolve("localhost")).unwrap())
        });
    }
    let Some((_dnsmasq, ns)) = bench_dnsmasq() else {
        eprintln!("dns/hickory_*: skipped, no dnsmasq");
        return;
    };
    for (name, ttl) in [("cached", 30_000), ("uncached", 0)] {
        let _enter = rt.enter();
        let r = Resolver::new(DnsCacheConfig {
            resolver: ResolverKind::Hickory,
            nameservers: vec![ns],
            ttl: std::time::Duration::from_millis(ttl),
            ..DnsCacheConfig::default()
        })
        .unwrap();
        c.bench_function(&format!("dns/hickory_dnsmasq_{name}"), |b| {
            b.iter(|| rt.block_on(r.resolve("www.bench.test")).unwrap())
        });
    }
}

/// A dnsmasq on a free port of 127.0.0.1 answering `*.bench.test` (A and AAAA) with a
/// one-hour TTL; killed when the guard drops.
fn bench_dnsmasq() -> Option<(KillOnDrop, std::net::SocketAddr)> {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let dir = tempfile::tempdir().ok()?;
    let child = std::process::Command::new("/usr/sbin/dnsmasq")
        .args([
            "--no-daemon",
            "--no-resolv",
            "--no-hosts",
            "--conf-file=/dev/null",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--user=root",
            "--local-ttl=3600",
            "--address=/bench.test/127.0.0.1",
            "--address=/bench.test/::1",
        ])
        .arg(format!("--port={port}"))
        .arg(format!("--pid-file={}", dir.path().join("pid").display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    std::thread::sleep(std::time::Duration::from_millis(500));
    Some((KillOnDrop(child, dir), ([127, 0, 0, 1], port).into()))
}

/// The process, and the directory of its pid file (removed after it).
struct KillOnDrop(std::process::Child, #[allow(dead_code)] tempfile::TempDir);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

criterion_group!(
    benches,
    headers,
    dns,
    round_trip,
    filtered_round_trip,
    filtered_cold_host_asked,
    file_scanning,
    feedback_round_trip
);
criterion_main!(benches);
