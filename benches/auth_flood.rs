//! A wrong-password flood against the real `webrep` binary with a users file, while a
//! logged-in user browses: the proxy's memory and threads, and the user's latency.
//!
//! ```sh
//! cargo bench --bench auth_flood                          # this tree's binary (bench profile)
//! WEBREP_BIN=/tmp/webrep-old cargo bench --bench auth_flood
//! bench/auth-flood.sh                                     # both, the old one built from 7e9a6e8
//! ```
//!
//! Knobs (environment): `WEBREP_BIN` (default: this package's binary), `CONNS` (flooding
//! connections, 128), `ADDRS` (`spread`: each connection from its own 127.0.1.x address, so
//! no per-address budget stops the flood; `one`: all from 127.0.0.2), `SECONDS` (15),
//! `PASSWORDS` (`random`: a new wrong password every request; `same`: one wrong password),
//! `RSS_LIMIT_MB` (8192: the proxy is killed, and the run reported as such, beyond it).
//!
//! The proxy runs with its defaults (workers and password threads one per CPU) and filtering
//! off; the origin is in this process on 127.0.0.1. The user logs in (one password check)
//! before the flood starts and then sends a request every 10 ms over one keep-alive
//! connection from 127.0.0.1; its latencies are what the proxy adds to an origin that answers
//! at once. After the flood the flooding connections close and the proxy's memory is read
//! again 15 s later. Only loopback traffic.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::net::{TcpListener, TcpSocket};

const USER: (&str, &str) = ("alice", "the right passphrase");

/// When the memory the proxy keeps is read after the flood: longer than the password
/// threads keep their memory without work (10 s).
const AFTER: Duration = Duration::from_secs(15);

struct Settings {
    bin: String,
    conns: usize,
    spread: bool,
    seconds: u64,
    random: bool,
    rss_limit_kib: u64,
}

impl Settings {
    fn from_env() -> Self {
        let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
        let num = |k: &str, d: u64| var(k, &d.to_string()).parse::<u64>().expect(k);
        Self {
            bin: var("WEBREP_BIN", env!("CARGO_BIN_EXE_webrep")),
            conns: usize::try_from(num("CONNS", 128)).expect("CONNS"),
            spread: var("ADDRS", "spread") == "spread",
            seconds: num("SECONDS", 15),
            random: var("PASSWORDS", "random") == "random",
            rss_limit_kib: num("RSS_LIMIT_MB", 8192) * 1024,
        }
    }
}

/// What `/proc/PID/status` says: resident KiB, peak resident KiB, threads.
fn proc_status(pid: u32) -> Option<(u64, u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].split_whitespace().next()?.parse().ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?, field("Threads:")?))
}

fn basic(user: &str, password: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {b64}")
}

/// An origin that answers every request with `ok`.
async fn origin() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from("ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// Starts the proxy with a users file in `dir`; its process and listening address.
async fn start_proxy(bin: &str, dir: &std::path::Path) -> (tokio::process::Child, SocketAddr) {
    let hash = webrep::proxy::auth::hash_password(USER.1).unwrap();
    let users = dir.join("users");
    std::fs::write(&users, format!("{}:{hash}\n", USER.0)).unwrap();
    let cfg = dir.join("webrep.yaml");
    std::fs::write(
        &cfg,
        format!(
            "proxy:\n  listen: [\"127.0.0.1:0\"]\n  destinations:\n    allow_internal: true\n\
             auth:\n  users_file: {:?}\npolicy:\n  enabled: false\naccess_log:\n  enabled: false\n\
             log:\n  level: info\n  format: text\n",
            users.display().to_string()
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(bin)
        .args(["proxy", "--config"])
        .arg(&cfg)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the webrep binary runs");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let l = lines.next_line().await.unwrap().expect("the proxy starts");
        if let Some(rest) = l.split("listen.addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// A keep-alive HTTP/1.1 connection to `proxy` from `local`.
async fn connect(proxy: SocketAddr, local: IpAddr) -> std::io::Result<Sender> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(local, 0))?;
    let stream = socket.connect(proxy).await?;
    stream.set_nodelay(true)?;
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    Ok(tx)
}

/// Sends one GET for `url` with `auth`; the status (0: the connection failed).
async fn get(tx: &mut Sender, url: &str, auth: &str) -> u16 {
    let req = Request::get(url)
        .header(
            "host",
            url.trim_start_matches("http://").trim_end_matches('/'),
        )
        .header("proxy-authorization", auth)
        .body(Empty::new())
        .unwrap();
    if tx.ready().await.is_err() {
        return 0;
    }
    match tx.send_request(req).await {
        Ok(r) => {
            let status = r.status().as_u16();
            let _ = r.into_body().collect().await;
            status
        }
        Err(_) => 0,
    }
}

/// Flood answers by status: 407, 429, 503, anything else.
#[derive(Default)]
struct Tally([AtomicU64; 4]);

impl Tally {
    fn count(&self, status: u16) {
        let i = match status {
            407 => 0,
            429 => 1,
            503 => 2,
            _ => 3,
        };
        self.0[i].fetch_add(1, Relaxed);
    }
}

/// One flooding connection: wrong passwords until `stop`, reconnecting when the proxy closes.
async fn flood(
    n: usize,
    s: Arc<Settings>,
    proxy: SocketAddr,
    url: String,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
) {
    let local = if s.spread {
        IpAddr::from([
            127,
            0,
            1 + u8::try_from(n / 250).unwrap_or(0),
            1 + (n % 250) as u8,
        ])
    } else {
        IpAddr::from([127, 0, 0, 2])
    };
    let mut tx = None;
    let mut i = 0u64;
    while !stop.load(Relaxed) {
        let c = match tx.as_mut() {
            Some(c) => c,
            None => match connect(proxy, local).await {
                Ok(c) => tx.insert(c),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let password = if s.random {
            format!("guess-{n}-{i}")
        } else {
            "guess".to_owned()
        };
        let status = get(c, &url, &basic(USER.0, &password)).await;
        i += 1;
        if status == 0 || c.is_closed() {
            tx = None;
        }
        if status != 0 {
            tally.count(status);
        }
    }
}

/// The logged-in user: a request every 10 ms until `stop`; latencies of the 200s and the
/// count of anything else.
async fn browse(proxy: SocketAddr, url: String, stop: Arc<AtomicBool>) -> (Vec<Duration>, u64) {
    let auth = basic(USER.0, USER.1);
    let mut tx = connect(proxy, IpAddr::from([127, 0, 0, 1])).await.unwrap();
    let (mut times, mut errors) = (Vec::new(), 0);
    while !stop.load(Relaxed) {
        let t = Instant::now();
        match get(&mut tx, &url, &auth).await {
            200 => times.push(t.elapsed()),
            0 => {
                errors += 1;
                match connect(proxy, IpAddr::from([127, 0, 0, 1])).await {
                    Ok(c) => tx = c,
                    Err(_) => break,
                }
            }
            _ => errors += 1,
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (times, errors)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let s = Arc::new(Settings::from_env());
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://{}/", origin().await);
    let (mut child, proxy) = start_proxy(&s.bin, dir.path()).await;
    let pid = child.id().unwrap();
    // The user logs in before the flood: one password check, then remembered.
    let mut login = connect(proxy, IpAddr::from([127, 0, 0, 1])).await.unwrap();
    assert_eq!(
        get(&mut login, &url, &basic(USER.0, USER.1)).await,
        200,
        "login"
    );
    let (rss_before, _, _) = proc_status(pid).unwrap();
    let (stop, tally) = (Arc::new(AtomicBool::new(false)), Arc::new(Tally::default()));
    let user = tokio::spawn(browse(proxy, url.clone(), stop.clone()));
    let mut flooding = tokio::task::JoinSet::new();
    for n in 0..s.conns {
        flooding.spawn(flood(
            n,
            s.clone(),
            proxy,
            url.clone(),
            tally.clone(),
            stop.clone(),
        ));
    }
    let (mut rss_max, mut threads_max, mut killed) = (0, 0, false);
    let end = Instant::now() + Duration::from_secs(s.seconds);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let Some((rss, _, threads)) = proc_status(pid) else {
            break;
        };
        (rss_max, threads_max) = (rss_max.max(rss), threads_max.max(threads));
        if rss > s.rss_limit_kib {
            killed = true;
            let _ = child.start_kill();
            break;
        }
    }
    stop.store(true, Relaxed);
    // The attacker leaves: its connections close, answered or not.
    flooding.abort_all();
    let (mut times, errors) = user.await.unwrap();
    times.sort_unstable();
    // Memory a while after the attack: what the proxy keeps.
    tokio::time::sleep(AFTER).await;
    let after = proc_status(pid);
    let c: Vec<u64> = tally.0.iter().map(|a| a.load(Relaxed)).collect();
    let total: u64 = c.iter().sum();
    println!(
        "auth_flood: {} conns from {}, {}, {} s, binary {}",
        s.conns,
        if s.spread {
            "one address each"
        } else {
            "one address"
        },
        if s.random {
            "a new wrong password per request"
        } else {
            "one wrong password"
        },
        s.seconds,
        s.bin
    );
    println!(
        "  flood: {total} answers ({:.0}/s): 407 {}, 429 {}, 503 {}, other {}",
        total as f64 / s.seconds as f64,
        c[0],
        c[1],
        c[2],
        c[3]
    );
    let mb = |kib: u64| kib as f64 / 1024.0;
    let peak = after.map_or(rss_max, |a| a.1.max(rss_max));
    println!(
        "  proxy: RSS {:.1} MB before, peak {:.1} MB, {} {} s after; threads up to {threads_max}{}",
        mb(rss_before),
        mb(peak),
        after.map_or("gone".to_owned(), |a| format!("{:.1} MB", mb(a.0))),
        AFTER.as_secs(),
        if killed {
            " (KILLED at RSS_LIMIT_MB)"
        } else {
            ""
        }
    );
    println!(
        "  user: {} requests, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {errors} not 200",
        times.len(),
        percentile(&times, 0.50),
        percentile(&times, 0.99),
        times.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    );
}
