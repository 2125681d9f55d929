//! The proxy's DNS resolver against a real name server: a dnsmasq on 127.0.0.1 that each
//! test starts (the proxy is told to ask it, `proxy.dns_nameservers`), with `--log-queries`
//! so the tests count what reached it. Nothing leaves loopback. dnsmasq must be installed
//! (package dnsmasq-base; `.ci/run` installs it): without it these tests fail, they do not skip.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use crate::harness::*;

/// A dnsmasq answering only what its arguments say, on a UDP and TCP port of 127.0.0.1.
struct Dnsmasq {
    port: u16,
    dir: tempfile::TempDir,
    child: Child,
    /// Each start logs to a new file; earlier files are kept for the counts.
    logs: Vec<PathBuf>,
}

impl Dnsmasq {
    /// Starts dnsmasq with `args` (records: `--address`, `--host-record`, an auth zone) on a
    /// free port, and waits until it answers.
    fn start(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("queries-0.log");
        // dnsmasq listens on UDP and TCP: a port free for one may be taken for the other by
        // a concurrent test, and then dnsmasq exits; try another.
        for _ in 0..10 {
            let Some(port) = free_udp_and_tcp_port() else {
                continue;
            };
            let mut child = spawn(&dir, port, &log, args);
            if wait_ready(&mut child, port) {
                return Self {
                    port,
                    dir,
                    child,
                    logs: vec![log],
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("dnsmasq did not start on any of ten ports (installed? see the module docs)");
    }

    /// Stops this dnsmasq and starts another on the same port with `args`.
    fn restart(&mut self, args: &[&str]) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log = self
            .dir
            .path()
            .join(format!("queries-{}.log", self.logs.len()));
        self.child = spawn(&self.dir, self.port, &log, args);
        self.logs.push(log);
        assert!(
            wait_ready(&mut self.child, self.port),
            "dnsmasq could not listen on its port again"
        );
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Queries for `name` of type `qtype` ("A", "AAAA") received, over all starts.
    fn queries(&self, qtype: &str, name: &str) -> usize {
        let needle = format!("query[{qtype}] {name} from");
        let auth = format!("auth[{qtype}] {name} from");
        self.logs
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .map(|t| {
                t.lines()
                    .filter(|l| l.contains(&needle) || l.contains(&auth))
                    .count()
            })
            .sum()
    }
}

/// A port of 127.0.0.1 that was free for both UDP and TCP a moment ago.
fn free_udp_and_tcp_port() -> Option<u16> {
    let udp = UdpSocket::bind("127.0.0.1:0").ok()?;
    let port = udp.local_addr().ok()?.port();
    let _tcp = std::net::TcpListener::bind(("127.0.0.1", port)).ok()?;
    Some(port)
}

/// Polls with a DNS query until dnsmasq answers on `port` (it binds before it logs, but the
/// test should not depend on that); false if it exited first (its port was taken).
fn wait_ready(child: &mut Child, port: u16) -> bool {
    // A query for "ready.invalid", type A, class IN.
    let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["ready", "invalid"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + BOUND;
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return false;
        }
        let _ = s.send_to(&q, ("127.0.0.1", port));
        if s.recv(&mut buf).is_ok() {
            return true;
        }
    }
    panic!("dnsmasq on port {port} never answered");
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(dir: &tempfile::TempDir, port: u16, log: &std::path::Path, args: &[&str]) -> Child {
    // Debian puts it in /usr/sbin, which a non-root PATH may lack.
    let bin = ["/usr/sbin/dnsmasq", "/usr/local/sbin/dnsmasq"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("dnsmasq");
    let mut cmd = Command::new(bin);
    cmd.args([
        "--no-daemon",
        "--no-resolv",
        "--no-hosts",
        "--conf-file=/dev/null",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--log-queries",
        // Answers come from the arguments; dnsmasq's own cache is not in the way.
        "--cache-size=0",
    ])
    .arg(format!("--port={port}"))
    .arg(format!("--log-facility={}", log.display()))
    .arg(format!("--pid-file={}", dir.path().join("pid").display()))
    .args(args)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    // As root dnsmasq would switch to "nobody", who cannot write the log in our temp dir.
    if unsafe_free_is_root() {
        cmd.arg("--user=root");
    }
    cmd.spawn()
        .expect("dnsmasq is installed (apt-get install dnsmasq-base; .ci/run does it)")
}

/// Whether the tests run as root (read from /proc, no libc call).
fn unsafe_free_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        .unwrap_or(false)
}

/// An HTTP origin at `addr` whose every answer is `body` (to tell two origins apart).
async fn named_origin(addr: SocketAddr, body: &'static str) {
    let listener = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(answer.as_bytes()).await;
            });
        }
    });
}

/// A proxy that asks `dns` and nothing else, keeps records for their TTL from 0 up, and
/// remembers failures without a TTL for `negative_ttl_ms`.
async fn proxy_asking(dns: &Dnsmasq, negative_ttl_ms: u64, port: u16) -> TestProxy {
    let ns = dns.addr();
    TestProxy::start_with(move |c| {
        c.proxy.connect_ports = vec![443, port];
        c.proxy.dns_nameservers = vec![ns];
        c.proxy.dns_min_ttl_ms = 0;
        c.proxy.dns_negative_ttl_ms = negative_ttl_ms;
    })
    .await
}

async fn body_via(proxy: &TestProxy, url: &str) -> String {
    let r = proxy.client(None).get(url).send().await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    r.text().await.unwrap()
}

#[tokio::test]
async fn a_name_resolves_through_the_configured_name_server() {
    let port = closed_port().await;
    named_origin(SocketAddr::from(([127, 0, 0, 1], port)), "one").await;
    // Local answers have a TTL of 0 unless told (and would not be kept).
    let dns = Dnsmasq::start(&["--address=/name.test/127.0.0.1", "--local-ttl=600"]);
    let proxy = proxy_asking(&dns, 5_000, port).await;
    for _ in 0..3 {
        assert_eq!(
            body_via(&proxy, &format!("http://www.name.test:{port}/")).await,
            "one"
        );
    }
    assert_eq!(
        dns.queries("A", "www.name.test"),
        1,
        "one query, then the cache"
    );
    let stats = &proxy_stats(&proxy).await["dns"];
    assert_eq!(stats["resolved"], 1, "{stats}");
    assert_eq!(stats["cached"], 2, "{stats}");
    // A CONNECT resolves the same way, from the cache.
    let head = raw_exchange(
        proxy.addr,
        format!("CONNECT www.name.test:{port} HTTP/1.1\r\nHost: www.name.test:{port}\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(dns.queries("A", "www.name.test"), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn answers_are_kept_for_their_record_ttl_and_then_asked_again() {
    let port = closed_port().await;
    named_origin(SocketAddr::from(([127, 0, 0, 1], port)), "one").await;
    named_origin(SocketAddr::from(([127, 0, 0, 2], port)), "two").await;
    let mut dns = Dnsmasq::start(&[
        "--host-record=long.test,127.0.0.1,3600",
        "--host-record=short.test,127.0.0.1,1",
    ]);
    let proxy = proxy_asking(&dns, 5_000, port).await;
    let long = format!("http://long.test:{port}/");
    let short = format!("http://short.test:{port}/");
    assert_eq!(body_via(&proxy, &long).await, "one");
    assert_eq!(body_via(&proxy, &short).await, "one");

    // Both names now point elsewhere.
    dns.restart(&[
        "--host-record=long.test,127.0.0.2,3600",
        "--host-record=short.test,127.0.0.2,1",
    ]);
    // The one-second record is asked again once its TTL has run out, and followed.
    eventually("short.test follows the new answer", BOUND, || async {
        body_via(&proxy, &short).await == "two"
    })
    .await;
    assert!(dns.queries("A", "short.test") >= 2);
    // The hour-long record is still served from the cache: not asked again, not followed.
    assert_eq!(body_via(&proxy, &long).await, "one");
    assert_eq!(dns.queries("A", "long.test"), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn no_such_name_is_remembered_for_the_soa_ttl_and_then_asked_again() {
    // An authoritative zone: its NXDOMAIN carries an SOA whose TTL and minimum are 2 s.
    let dns = Dnsmasq::start(&[
        "--auth-server=ns.neg.test,127.0.0.1",
        "--auth-zone=neg.test",
        "--auth-ttl=2",
        "--auth-soa=1,hostmaster.neg.test,1200,120,1209600",
    ]);
    // Failures without a TTL would be kept for an hour: only the SOA can make it expire.
    let proxy = proxy_asking(&dns, 3_600_000, 443).await;
    let url = "http://gone.neg.test/";
    let started = Instant::now();
    for _ in 0..3 {
        let r = proxy.client(None).get(url).send().await.unwrap();
        assert_eq!(r.status(), 502);
        let ps = r.headers()["proxy-status"].to_str().unwrap().to_owned();
        assert!(ps.contains("error=dns_error"), "{ps}");
    }
    if started.elapsed() < Duration::from_secs(2) {
        assert_eq!(
            dns.queries("A", "gone.neg.test"),
            1,
            "the NXDOMAIN is cached"
        );
    }
    let stats = &proxy_stats(&proxy).await["dns"];
    assert_eq!(
        stats["failed"].as_u64().unwrap() + stats["cached"].as_u64().unwrap(),
        3
    );
    // After the SOA's TTL the name is asked again.
    eventually("the negative answer expires", BOUND, || async {
        let _ = proxy.client(None).get(url).send().await;
        dns.queries("A", "gone.neg.test") >= 2
    })
    .await;
    proxy.stop().await;
}

#[tokio::test]
async fn no_such_name_without_soa_is_remembered_for_the_negative_ttl() {
    let dns = Dnsmasq::start(&["--address=/nx.test/"]);
    let proxy = proxy_asking(&dns, 3_600_000, 443).await;
    for _ in 0..5 {
        let r = proxy
            .client(None)
            .get("http://a.nx.test/")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 502);
    }
    assert_eq!(
        dns.queries("A", "a.nx.test"),
        1,
        "kept for dns_negative_ttl_ms"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn internal_addresses_in_dns_answers_are_refused() {
    let origin = Origin::http().await;
    let port = origin.addr.port();
    let dns = Dnsmasq::start(&[
        "--address=/loop.test/127.0.0.1",
        "--address=/meta.test/169.254.169.254",
        "--address=/mixed.test/192.0.2.1",
        "--address=/mixed.test/127.0.0.1",
    ]);
    let ns = dns.addr();
    let proxy = TestProxy::start_with(move |c| {
        c.proxy.dns_nameservers = vec![ns];
        c.proxy.destinations.allow_internal = false;
        c.proxy.connect_ports = vec![80, 443, port];
    })
    .await;
    for authority in [
        format!("loop.test:{port}"),
        "meta.test:80".to_owned(),
        format!("mixed.test:{port}"),
    ] {
        assert_destination_refused(&proxy, &authority).await;
    }
    assert!(
        dns.queries("A", "loop.test") >= 1,
        "the answer came from DNS"
    );
    assert_eq!(origin.stats.connections.load(Ordering::SeqCst), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn a_silent_name_server_is_a_dns_error() {
    // A UDP port nobody answers on: every query times out.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let ns = silent.local_addr().unwrap().to_string();
    let proxy = TestProxy::start_with(move |c| {
        c.proxy.dns_nameservers = vec![ns];
        c.proxy.dns_timeout_ms = 100;
        c.proxy.dns_attempts = 1;
    })
    .await;
    let r = proxy
        .client(None)
        .get("http://quiet.test/")
        .send()
        .await
        .unwrap();
    assert!(r.status() == 502 || r.status() == 504, "{}", r.status());
    let ps = r.headers()["proxy-status"].to_str().unwrap().to_owned();
    assert!(
        ps.contains("error=dns_error") || ps.contains("error=connection_timeout"),
        "{ps}"
    );
    drop(silent);
    proxy.stop().await;
}
