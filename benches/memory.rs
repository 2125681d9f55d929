//! The proxy's memory under many connections: resident set size (VmRSS of the real `webrep`
//! binary, read from /proc) idle, with 2,000 quiet CONNECT tunnels, with 10,000 silent client
//! connections, and around waves of 10,000 keep-alive connections (one request each, all
//! open at once, then all closed). Run it through `bench/memory.sh`, which raises the file
//! descriptor limit first; the figures and what they mean are in `docs/performance.md`.
//!
//! Loopback only: the proxy listens on 127.0.0.1, the origin (this binary run again with
//! `--origin`, so that its sockets do not count against this process's descriptor limit)
//! too, and clients connect from 127.0.0.10 to 127.0.0.49, so that `max_connections_per_client`
//! keeps its default (`max_connections` is raised to 20,000: the limits are not what this
//! measures). Every step is bounded in count and time.
//!
//! Knobs (environment): `WEBREP_BIN` (the binary to measure; `bench/memory.sh` builds it
//! with the bench profile; default this build's),
//! `WEBREP_ENV` (`NAME=VALUE` pairs for the proxy, space-separated, e.g.
//! `MALLOC_ARENA_MAX=2`), `TUNNELS` (2000), `CONNS` (10000), `WAVES` (5), `QUIET_S` (60: long
//! enough for a tunnel to give its buffers back and the allocator to return the pages),
//! `SETTLE_S` (15: wait after each step; the allocator purges over about 10 s), `STEPS`
//! (`tunnels,silent,waves`; also `upstream`: `UPSTREAMS` (3000) upstream connections to as
//! many host names kept idle in the pool, each answering one body of `UPSTREAM_BODY` bytes
//! (5), and `keepalive`: `KEEPALIVE` (18000) idle
//! keep-alive client connections, each figure with the memory per connection),
//! `PROXY_EXTRA` (YAML lines added to the proxy's `proxy:` section; the default makes room
//! in the upstream pool for the `upstream` step: see [`DEFAULT_PROXY_EXTRA`]).

use std::io::{BufRead as _, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Client source addresses: 127.0.0.10 .. 127.0.0.49.
const SOURCES: u8 = 40;
/// Connections opened at once.
const BATCH: usize = 250;
/// Any one network wait of the bench.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if std::env::args().any(|a| a == "--origin") {
        return origin();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

/// The origin: answers `GET` with `hello` and echoes anything else (tunnel bytes).
fn origin() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("origin bind");
        println!("{}", listener.local_addr().expect("origin addr"));
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    let n = match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    let sized;
                    let reply: &[u8] = if buf.starts_with(b"GET /b") {
                        sized = sized_reply(&buf[6..n]);
                        &sized
                    } else if buf.starts_with(b"GET ") {
                        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"
                    } else {
                        &buf[..n]
                    };
                    if s.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
}

/// The answer to `GET /b{n}`: a body of `n` bytes (at most 16 MiB) ending in `hello`.
fn sized_reply(rest: &[u8]) -> Vec<u8> {
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let n: usize = std::str::from_utf8(&rest[..digits])
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(5)
        .clamp(5, 16 << 20);
    let mut out = format!("HTTP/1.1 200 OK\r\ncontent-length: {n}\r\n\r\n").into_bytes();
    out.resize(out.len() + n - 5, b'x');
    out.extend_from_slice(b"hello");
    out
}

/// A child process, killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The resident set of `pid`, in MB (10^6 bytes).
fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024.0 / 1e6
}

fn start_origin() -> (Proc, SocketAddr) {
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .arg("--origin")
        .stdout(Stdio::piped())
        .spawn()
        .expect("origin starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("origin address");
    (Proc(child), line.trim().parse().expect("origin address"))
}

fn start_proxy(dir: &std::path::Path, origin: SocketAddr) -> (Proc, SocketAddr) {
    let cfg = dir.join("webrep.yaml");
    std::fs::write(
        &cfg,
        format!(
            "proxy:\n  listen: [\"127.0.0.1:0\"]\n  max_connections: 20000\n  connect_ports: [{}]\n  destinations:\n    allow_internal: true\n  hosts: {{\"*\": [\"127.0.0.1\"]}}\n{}access_log:\n  path: {:?}\nlog:\n  level: info\npolicy:\n  builtin: default\nreputation:\n  embedded_sample: true\n",
            origin.port(),
            std::env::var("PROXY_EXTRA").unwrap_or_else(|_| DEFAULT_PROXY_EXTRA.to_owned()),
            dir.join("access.log").display().to_string()
        ),
    )
    .expect("config");
    let bin = std::env::var("WEBREP_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_webrep").into());
    let mut cmd = Command::new(&bin);
    cmd.args(["proxy", "--config"])
        .arg(&cfg)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for pair in std::env::var("WEBREP_ENV")
        .unwrap_or_default()
        .split_whitespace()
    {
        if let Some((k, v)) = pair.split_once('=') {
            cmd.env(k, v);
        }
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{bin}: {e}"));
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the proxy starts")
            .expect("proxy stderr");
        if let Some(rest) = line.split("listen.addr=").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .and_then(|a| a.parse().ok())
                .expect("listen address");
        }
    };
    // Keep reading its log so that it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (Proc(child), addr)
}

/// A connection to `proxy` from the `i`th client source address.
async fn connect(proxy: SocketAddr, i: usize) -> TcpStream {
    let src = Ipv4Addr::new(127, 0, 0, 10 + (i % usize::from(SOURCES)) as u8);
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(IpAddr::V4(src), 0))
        .expect("bind a loopback source");
    tokio::time::timeout(STEP_TIMEOUT, socket.connect(proxy))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// Reads until `needle` has been seen (bounded in time).
async fn read_until(s: &mut TcpStream, needle: &[u8]) {
    // What was read last, with the bytes before it that could start `needle`.
    let mut got = Vec::new();
    let mut buf = [0u8; 16384];
    while !got.windows(needle.len()).any(|w| w == needle) {
        let n = tokio::time::timeout(STEP_TIMEOUT, s.read(&mut buf))
            .await
            .expect("answer in time")
            .expect("read");
        assert!(n > 0, "closed before {:?}", String::from_utf8_lossy(needle));
        got.drain(..got.len().saturating_sub(needle.len() - 1));
        got.extend_from_slice(&buf[..n]);
    }
}

/// Opens `n` connections, `BATCH` at a time, each prepared by `prepare`.
async fn open_many<F, Fut>(proxy: SocketAddr, n: usize, prepare: F) -> Vec<TcpStream>
where
    F: Fn(TcpStream) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = TcpStream> + Send,
{
    let mut all = Vec::with_capacity(n);
    for start in (0..n).step_by(BATCH) {
        let mut set = tokio::task::JoinSet::new();
        for i in start..(start + BATCH).min(n) {
            let prepare = prepare.clone();
            set.spawn(async move { prepare(connect(proxy, i).await).await });
        }
        while let Some(s) = set.join_next().await {
            all.push(s.expect("connection task"));
        }
    }
    all
}

/// What the `upstream` step needs beside the defaults: room in the pool for every upstream
/// connection it makes, kept for the whole step.
const DEFAULT_PROXY_EXTRA: &str = "  upstream_max_idle: 1000000\n  upstream_max_idle_per_host: 4\n  upstream_idle_timeout_ms: 600000\n";

/// The anonymous memory of `pid` (heap and thread stacks, what connections cost), in MB.
fn anon_mb(pid: u32) -> f64 {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let kib: f64 = rollup
        .lines()
        .find_map(|l| l.strip_prefix("Anonymous:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib * 1024.0 / 1e6
}

/// The `upstream` step: `n` upstream connections to `n` distinct host names (`u{i}.mem.test`,
/// all on the origin), made by 50 keep-alive client connections one request at a time and
/// then kept idle in the proxy's pool; the memory each one costs.
async fn upstream_step(proxy: SocketAddr, origin: SocketAddr, pid: u32, n: usize, wait: u64) {
    const CLIENTS: usize = 50;
    let body = env_num("UPSTREAM_BODY", 5);
    let (rss0, anon0) = (rss_mb(pid), anon_mb(pid));
    let mut set = tokio::task::JoinSet::new();
    for c in 0..CLIENTS {
        set.spawn(async move {
            let mut s = connect(proxy, c).await;
            for i in (c..n).step_by(CLIENTS) {
                let host = format!("u{i}.mem.test:{}", origin.port());
                let get = format!("GET http://{host}/b{body} HTTP/1.1\r\nHost: {host}\r\n\r\n");
                s.write_all(get.as_bytes()).await.expect("write");
                read_until(&mut s, b"hello").await;
            }
            s
        });
    }
    let mut clients = Vec::new();
    while let Some(s) = set.join_next().await {
        clients.push(s.expect("client task"));
    }
    let per = |before: f64, after: f64| (after - before) * 1e6 / n as f64 / 1e3;
    let (rss1, anon1) = (rss_mb(pid), anon_mb(pid));
    println!(
        "{:<48} {rss1:>7.1} MB  ({:.1} KB RSS, {:.1} KB anonymous per upstream connection)",
        format!("{n} idle upstream connections, just used"),
        per(rss0, rss1),
        per(anon0, anon1)
    );
    settle(wait).await;
    let (rss2, anon2) = (rss_mb(pid), anon_mb(pid));
    println!(
        "{:<48} {rss2:>7.1} MB  ({:.1} KB RSS, {:.1} KB anonymous per upstream connection)",
        format!("{n} idle upstream connections, settled"),
        per(rss0, rss2),
        per(anon0, anon2)
    );
    drop(clients);
}

/// The `keepalive` step: `n` client connections that each made one request and stay open,
/// idle, held by the proxy; the memory each one costs.
async fn keepalive_step(proxy: SocketAddr, get: &'static [u8], pid: u32, n: usize, wait: u64) {
    let (rss0, anon0) = (rss_mb(pid), anon_mb(pid));
    let open = open_many(proxy, n, move |mut s| async move {
        s.write_all(get).await.expect("write");
        read_until(&mut s, b"hello").await;
        s
    })
    .await;
    settle(wait).await;
    let (rss1, anon1) = (rss_mb(pid), anon_mb(pid));
    let per = |before: f64, after: f64| (after - before) * 1e6 / n as f64 / 1e3;
    println!(
        "{:<48} {rss1:>7.1} MB  ({:.1} KB RSS, {:.1} KB anonymous per client connection)",
        format!("{n} idle keep-alive client connections"),
        per(rss0, rss1),
        per(anon0, anon1)
    );
    drop(open);
    settle(wait).await;
    println!(
        "{:<48} {:>7.1} MB",
        "keep-alive connections closed",
        rss_mb(pid)
    );
}

async fn settle(secs: u64) {
    tokio::time::sleep(Duration::from_secs(secs)).await;
}

async fn run() {
    let tunnels = env_num("TUNNELS", 2000) as usize;
    let conns = env_num("CONNS", 10_000) as usize;
    let waves = env_num("WAVES", 5);
    let quiet = env_num("QUIET_S", 60);
    let wait = env_num("SETTLE_S", 15);
    let dir = tempfile::tempdir().expect("tempdir");
    let (_origin, origin) = start_origin();
    let (proxy_proc, proxy) = start_proxy(dir.path(), origin);
    let pid = proxy_proc.0.id();
    let report = |step: &str| println!("{step:<48} {:>7.1} MB", rss_mb(pid));

    let get = format!("GET http://{origin}/ HTTP/1.1\r\nHost: {origin}\r\n\r\n");
    let get: &'static [u8] = Box::leak(get.into_bytes().into_boxed_slice());
    let mut warm = connect(proxy, 0).await;
    warm.write_all(get).await.expect("write");
    read_until(&mut warm, b"hello").await;
    drop(warm);
    settle(wait).await;
    report("idle (after one request)");

    let steps = std::env::var("STEPS").unwrap_or_else(|_| "tunnels,silent,waves".into());
    let step = |name: &str| steps.split(',').any(|s| s.trim() == name);
    if step("upstream") {
        let n = env_num("UPSTREAMS", 3000) as usize;
        upstream_step(proxy, origin, pid, n, wait).await;
        settle(wait).await;
        report("upstream step over (clients closed)");
    }
    if step("keepalive") {
        keepalive_step(proxy, get, pid, env_num("KEEPALIVE", 18_000) as usize, wait).await;
    }
    if step("tunnels") {
        tunnels_step(proxy, origin, pid, tunnels, quiet, wait).await;
    }
    if step("silent") {
        let open = open_many(proxy, conns, |s| async move { s }).await;
        settle(wait).await;
        report(&format!("{conns} silent connections"));
        drop(open);
        settle(wait).await;
        report("silent connections closed");
    }
    if step("waves") {
        waves_step(proxy, get, pid, conns, waves, wait).await;
    }
}

/// 2,000 quiet CONNECT tunnels, just used, quiet, closed.
async fn tunnels_step(
    proxy: SocketAddr,
    origin: SocketAddr,
    pid: u32,
    tunnels: usize,
    quiet: u64,
    wait: u64,
) {
    let report = |step: &str| println!("{step:<48} {:>7.1} MB", rss_mb(pid));
    let connect_req = format!("CONNECT {origin} HTTP/1.1\r\nHost: {origin}\r\n\r\n");
    let connect_req: &'static [u8] = Box::leak(connect_req.into_bytes().into_boxed_slice());
    let open = open_many(proxy, tunnels, move |mut s| async move {
        s.write_all(connect_req).await.expect("write");
        read_until(&mut s, b"\r\n\r\n").await;
        // Some traffic both ways, as a TLS handshake would: the buffers come into use.
        s.write_all(&[b'x'; 1024]).await.expect("write");
        let mut back = [0u8; 1024];
        tokio::time::timeout(STEP_TIMEOUT, s.read_exact(&mut back))
            .await
            .expect("echo in time")
            .expect("echo");
        s
    })
    .await;
    report(&format!("{tunnels} tunnels, just used"));
    settle(quiet).await;
    report(&format!("{tunnels} tunnels, quiet for {quiet} s"));
    drop(open);
    settle(wait).await;
    report("tunnels closed");
}

/// Waves of `conns` keep-alive connections (one request each, all open at once, then all
/// closed).
async fn waves_step(
    proxy: SocketAddr,
    get: &'static [u8],
    pid: u32,
    conns: usize,
    waves: u64,
    wait: u64,
) {
    let report = |step: &str| println!("{step:<48} {:>7.1} MB", rss_mb(pid));
    for wave in 1..=waves {
        let open = open_many(proxy, conns, move |mut s| async move {
            s.write_all(get).await.expect("write");
            read_until(&mut s, b"hello").await;
            s
        })
        .await;
        settle(wait).await;
        report(&format!("wave {wave}: {conns} idle keep-alive connections"));
        drop(open);
        settle(wait).await;
        report(&format!("wave {wave}: closed"));
    }
}
