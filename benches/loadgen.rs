//! The load generator of the realistic workload (`benches/realistic/run.sh`): office-like
//! traffic through a forward proxy, plain HTTP and HTTPS through `CONNECT`, over keep-alive
//! connections of varying length. wrk cannot speak `CONNECT` + TLS, hence this program.
//!
//! ```sh
//! cargo bench --bench loadgen -- --proxy 127.0.0.1:3128 --hosts 100000 --duration 10 \
//!     --ca /tmp/webrep-realistic-data/pki/origin-ca.pem --ca certs/ca.pem
//! ```
//!
//! Each of `--conns` tasks opens one connection after the other until the deadline. Per
//! connection it draws the scheme (`--https` percent HTTPS) and the number of requests (a
//! geometric distribution with mean `--rpc-mean`, cut to 1..=`--rpc-max`):
//!
//! - plain HTTP: absolute-form `GET http://h<N>.bench.test:PORT/p<k>` to the proxy, a new
//!   host per request (Zipf over `--hosts` names), as a browser shares its proxy connection;
//! - HTTPS: `CONNECT h<N>.bench.test:PORT`, then TLS (trusting every `--ca`: the origin's test
//!   CA and the proxies' interception CAs), then origin-form GETs to that one host. Whether
//!   the proxy intercepts or tunnels is its policy's choice; the harness's policies intercept
//!   the hosts with an even N, and the counters here split HTTPS requests by that parity.
//!
//! With `--direct` the same traffic goes straight to the origin (no proxy, no `CONNECT`).
//! A `403` answer (to a request or to the `CONNECT`) is a block and counted apart from errors.
//! The latency of a request runs from writing it to the end of its body; the first request
//! of a connection includes the connect, `CONNECT` and TLS handshake. At the end one line
//! `LOADGEN key=value ...` (latencies in microseconds) goes to standard output.
//!
//! Cost: one thread (tokio's current-thread runtime) by default, with hand-written HTTP/1.1
//! over `httparse`; the latency samples are kept (4 bytes each) and sorted at the end.
//! Without `--proxy` or `--direct` (as under `cargo bench` or `cargo test --benches`) it
//! prints a note and exits 0.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject as _};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[derive(Parser, Debug, Clone)]
#[command(about = "Office-like HTTP + HTTPS load through a forward proxy")]
struct Args {
    /// The proxy, ip:port.
    #[arg(long)]
    proxy: Option<SocketAddr>,
    /// No proxy: straight to the origin's ports on 127.0.0.1.
    #[arg(long)]
    direct: bool,
    /// Concurrent connections.
    #[arg(long, default_value_t = 32)]
    conns: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Distinct host names h1..hN.bench.test, drawn from Zipf(--zipf-s) by rank.
    #[arg(long, default_value_t = 100_000)]
    hosts: u32,
    #[arg(long, default_value_t = 1.0)]
    zipf_s: f64,
    /// Host name suffix after h<N>.
    #[arg(long, default_value = "bench.test")]
    domain: String,
    /// Percent of connections (and so of requests) that are HTTPS.
    #[arg(long, default_value_t = 70.0)]
    https: f64,
    /// Mean requests per connection (geometric distribution).
    #[arg(long, default_value_t = 10.0)]
    rpc_mean: f64,
    /// Most requests per connection.
    #[arg(long, default_value_t = 100)]
    rpc_max: u32,
    /// Origin's plain HTTP port.
    #[arg(long, default_value_t = 18080)]
    http_port: u16,
    /// Origin's TLS port (the CONNECT target port).
    #[arg(long, default_value_t = 18443)]
    https_port: u16,
    /// `1k` (/p<k>) or `lognormal` (/p<k>/b<i>, i uniform in 1..=--nq).
    #[arg(long, default_value = "1k")]
    body: String,
    #[arg(long, default_value_t = 1024)]
    nq: u32,
    /// PEM CA files to trust (repeat).
    #[arg(long)]
    ca: Vec<String>,
    #[arg(long, default_value_t = 12345)]
    seed: u64,
    /// Seconds one request (or one connection set-up) may take.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Runtime threads (1: current-thread runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// What `cargo bench` passes to every bench target (ignored).
    #[arg(long, hide = true)]
    bench: bool,
    /// Bench name filters `cargo bench -- FILTER` passes on (ignored).
    #[arg(hide = true)]
    filters: Vec<String>,
}

/// Zipf(s) over ranks 1..=n by inverse CDF (binary search in the cumulative weights).
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: u32, s: f64) -> Self {
        let mut acc = 0.0;
        let cdf = (1..=n)
            .map(|r| {
                acc += 1.0 / f64::from(r).powf(s);
                acc
            })
            .collect();
        Self { cdf }
    }

    fn sample(&self, rng: &mut SmallRng) -> u32 {
        let total = self.cdf.last().copied().unwrap_or(1.0);
        let u = rng.random::<f64>() * total;
        let i = self.cdf.partition_point(|&c| c < u);
        u32::try_from(i.min(self.cdf.len() - 1) + 1).unwrap_or(u32::MAX)
    }
}

/// The request classes reported apart: plain HTTP, HTTPS to hosts the harness's policies
/// intercept (even N) and to hosts they tunnel (odd N).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Http,
    HttpsEven,
    HttpsOdd,
}

/// What went wrong, by kind.
#[derive(Clone, Copy, Debug)]
enum Fail {
    Connect,
    /// The proxy answered the CONNECT with something other than 200 or 403.
    ConnectStatus,
    Tls,
    /// Read/write failure, or the connection closed mid-answer.
    Io,
    /// An answer that is not HTTP/1.1.
    Parse,
    Timeout,
}

#[derive(Default)]
struct Stats {
    requests: u64,
    ok: u64,
    /// 403 answers to requests.
    blocked: u64,
    /// 403 answers to CONNECT.
    blocked_connect: u64,
    /// Other non-2xx answers.
    status_other: u64,
    bytes: u64,
    conns: u64,
    /// Connections the server closed before their planned requests were done.
    early_close: u64,
    fails: [u64; 6],
    by_class: [u64; 3],
    lat: [Vec<u32>; 3],
}

impl Stats {
    fn fail(&mut self, f: Fail) {
        self.fails[f as usize] += 1;
    }

    fn merge(&mut self, o: Stats) {
        self.requests += o.requests;
        self.ok += o.ok;
        self.blocked += o.blocked;
        self.blocked_connect += o.blocked_connect;
        self.status_other += o.status_other;
        self.bytes += o.bytes;
        self.conns += o.conns;
        self.early_close += o.early_close;
        for i in 0..6 {
            self.fails[i] += o.fails[i];
        }
        for (i, v) in o.lat.into_iter().enumerate() {
            self.by_class[i] += o.by_class[i];
            self.lat[i].extend(v);
        }
    }

    fn record(&mut self, class: Class, status: u16, bytes: u64, started: Instant) {
        self.requests += 1;
        self.bytes += bytes;
        match status {
            200..=299 => self.ok += 1,
            403 => self.blocked += 1,
            _ => self.status_other += 1,
        }
        let us = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
        self.by_class[class as usize] += 1;
        self.lat[class as usize].push(us);
    }
}

/// A response head and how much body went by.
struct Answer {
    status: u16,
    /// The server will close the connection after this answer.
    close: bool,
    bytes: u64,
}

/// Reads HTTP/1.1 answers from one connection; bytes past an answer stay for the next.
struct Reader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

const HEAD_MAX: usize = 65536;

impl Reader {
    fn new() -> Self {
        Self {
            buf: vec![0; HEAD_MAX],
            start: 0,
            end: 0,
        }
    }

    async fn fill<S: AsyncRead + Unpin>(&mut self, s: &mut S) -> Result<usize, Fail> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        if self.end == self.buf.len() {
            return Err(Fail::Parse);
        }
        let n = s
            .read(&mut self.buf[self.end..])
            .await
            .map_err(|_| Fail::Io)?;
        self.end += n;
        Ok(n)
    }

    /// Reads one answer; `head_only` for a CONNECT's `200` (no body follows it).
    async fn answer<S: AsyncRead + Unpin>(
        &mut self,
        s: &mut S,
        head_only: bool,
    ) -> Result<Answer, Fail> {
        let (status, close, len, chunked, head_len) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Response::new(&mut headers);
            match r.parse(&self.buf[self.start..self.end]) {
                Ok(httparse::Status::Complete(n)) => break head_fields(&r, n)?,
                Ok(httparse::Status::Partial) => {}
                Err(_) => return Err(Fail::Parse),
            }
            if self.fill(s).await? == 0 {
                return Err(Fail::Io);
            }
        };
        self.start += head_len;
        let no_body = (head_only && status == 200) || status == 204 || status == 304;
        let bytes = match (no_body, chunked, len) {
            (true, _, _) => 0,
            (false, true, _) => self.chunked(s).await?,
            (false, false, Some(n)) => self.skip(s, n).await?,
            (false, false, None) => self.until_eof(s).await?,
        };
        Ok(Answer {
            status,
            close: close || (!no_body && !chunked && len.is_none()),
            bytes,
        })
    }

    /// Consumes `n` body bytes.
    async fn skip<S: AsyncRead + Unpin>(&mut self, s: &mut S, n: u64) -> Result<u64, Fail> {
        let mut left = n;
        while left > 0 {
            if self.start == self.end && self.fill(s).await? == 0 {
                return Err(Fail::Io);
            }
            let take = left.min((self.end - self.start) as u64);
            self.start += usize::try_from(take).unwrap_or(0);
            left -= take;
        }
        Ok(n)
    }

    async fn until_eof<S: AsyncRead + Unpin>(&mut self, s: &mut S) -> Result<u64, Fail> {
        let mut n = (self.end - self.start) as u64;
        (self.start, self.end) = (0, 0);
        while self.fill(s).await? > 0 {
            n += (self.end - self.start) as u64;
            (self.start, self.end) = (0, 0);
        }
        Ok(n)
    }

    /// One CRLF-terminated line (a chunk size or a trailer).
    async fn line<S: AsyncRead + Unpin>(&mut self, s: &mut S) -> Result<String, Fail> {
        loop {
            let pending = &self.buf[self.start..self.end];
            if let Some(i) = pending.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&pending[..i]).into_owned();
                self.start += i + 2;
                return Ok(line);
            }
            if self.fill(s).await? == 0 {
                return Err(Fail::Io);
            }
        }
    }

    async fn chunked<S: AsyncRead + Unpin>(&mut self, s: &mut S) -> Result<u64, Fail> {
        let mut total = 0;
        loop {
            let line = self.line(s).await?;
            let size = line.split(';').next().unwrap_or("").trim();
            let n = u64::from_str_radix(size, 16).map_err(|_| Fail::Parse)?;
            if n == 0 {
                while !self.line(s).await?.is_empty() {}
                return Ok(total);
            }
            total += self.skip(s, n).await?;
            if !self.line(s).await?.is_empty() {
                return Err(Fail::Parse);
            }
        }
    }
}

/// Status, `Connection: close`, `Content-Length`, chunked, head length.
fn head_fields(
    r: &httparse::Response<'_, '_>,
    head_len: usize,
) -> Result<(u16, bool, Option<u64>, bool, usize), Fail> {
    let status = r.code.ok_or(Fail::Parse)?;
    let (mut close, mut len, mut chunked) = (r.version == Some(0), None, false);
    for h in r.headers.iter() {
        let v = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            len = Some(v.parse::<u64>().map_err(|_| Fail::Parse)?);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = v.to_ascii_lowercase().contains("chunked");
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = v.eq_ignore_ascii_case("close");
        }
    }
    Ok((status, close, len, chunked, head_len))
}

/// What every task shares.
struct Shared {
    args: Args,
    zipf: Zipf,
    tls: TlsConnector,
    deadline: tokio::time::Instant,
    timeout: Duration,
}

impl Shared {
    fn host(&self, rng: &mut SmallRng) -> u32 {
        self.zipf.sample(rng)
    }

    fn path(&self, rng: &mut SmallRng, out: &mut String) {
        let k = rng.random_range(1..=20);
        if self.args.body == "lognormal" {
            let _ = write!(out, "/p{k}/b{}", rng.random_range(1..=self.args.nq));
        } else {
            let _ = write!(out, "/p{k}");
        }
    }

    /// Requests for the next connection: geometric with the configured mean, 1..=max.
    fn requests_per_conn(&self, rng: &mut SmallRng) -> u32 {
        let p = 1.0 / self.args.rpc_mean.max(1.0);
        let u: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
        let n = 1.0 + (u.ln() / (1.0 - p).ln()).floor();
        if n.is_finite() {
            (n as u32).clamp(1, self.args.rpc_max.max(1))
        } else {
            1
        }
    }

    fn target(&self, port: u16) -> SocketAddr {
        self.args
            .proxy
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], port)))
    }
}

async fn with_timeout<T>(d: Duration, f: impl Future<Output = Result<T, Fail>>) -> Result<T, Fail> {
    tokio::time::timeout(d, f)
        .await
        .unwrap_or(Err(Fail::Timeout))
}

/// One plain-HTTP connection: `n` requests, a new host each.
async fn http_conn(sh: &Shared, rng: &mut SmallRng, st: &mut Stats, n: u32) -> Result<(), Fail> {
    let started = Instant::now();
    let mut s = with_timeout(sh.timeout, async {
        TcpStream::connect(sh.target(sh.args.http_port))
            .await
            .map_err(|_| Fail::Connect)
    })
    .await?;
    let _ = s.set_nodelay(true);
    st.conns += 1;
    let (mut rd, mut req, mut path) = (Reader::new(), String::new(), String::new());
    for i in 0..n {
        let t0 = if i == 0 { started } else { Instant::now() };
        let (h, port) = (sh.host(rng), sh.args.http_port);
        path.clear();
        sh.path(rng, &mut path);
        req.clear();
        let dom = &sh.args.domain;
        if sh.args.direct {
            let _ = write!(req, "GET {path} HTTP/1.1\r\nHost: h{h}.{dom}:{port}\r\n");
        } else {
            let _ = write!(
                req,
                "GET http://h{h}.{dom}:{port}{path} HTTP/1.1\r\nHost: h{h}.{dom}:{port}\r\n"
            );
        }
        req.push_str("User-Agent: loadgen\r\nAccept: */*\r\n\r\n");
        let a = with_timeout(sh.timeout, async {
            s.write_all(req.as_bytes()).await.map_err(|_| Fail::Io)?;
            rd.answer(&mut s, false).await
        })
        .await?;
        st.record(Class::Http, a.status, a.bytes, t0);
        if a.close {
            if i + 1 < n {
                st.early_close += 1;
            }
            break;
        }
    }
    Ok(())
}

/// `CONNECT host:port` on `s`; `Ok(false)` when the proxy refused it with 403 (counted).
async fn connect_tunnel(
    s: &mut TcpStream,
    rd: &mut Reader,
    authority: &str,
    st: &mut Stats,
    class: Class,
    t0: Instant,
) -> Result<bool, Fail> {
    let req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    s.write_all(req.as_bytes()).await.map_err(|_| Fail::Io)?;
    let a = rd.answer(s, true).await?;
    match a.status {
        200 => Ok(true),
        403 => {
            st.blocked_connect += 1;
            st.record(class, 403, a.bytes, t0);
            Ok(false)
        }
        _ => Err(Fail::ConnectStatus),
    }
}

/// One HTTPS connection: CONNECT (unless direct), TLS, then `n` GETs to one host.
async fn https_conn(sh: &Shared, rng: &mut SmallRng, st: &mut Stats, n: u32) -> Result<(), Fail> {
    let t0 = Instant::now();
    let h = sh.host(rng);
    let class = if h.is_multiple_of(2) {
        Class::HttpsEven
    } else {
        Class::HttpsOdd
    };
    let host = format!("h{h}.{}", sh.args.domain);
    let authority = format!("{host}:{}", sh.args.https_port);
    let setup = async {
        let mut s = TcpStream::connect(sh.target(sh.args.https_port))
            .await
            .map_err(|_| Fail::Connect)?;
        let _ = s.set_nodelay(true);
        st.conns += 1;
        if !sh.args.direct {
            let mut rd = Reader::new();
            if !connect_tunnel(&mut s, &mut rd, &authority, st, class, t0).await? {
                return Ok(None);
            }
        }
        let name = ServerName::try_from(host.clone()).map_err(|_| Fail::Tls)?;
        let tls = sh.tls.connect(name, s).await.map_err(|_| Fail::Tls)?;
        Ok(Some(tls))
    };
    let Some(mut tls) = with_timeout(sh.timeout, setup).await? else {
        return Ok(());
    };
    let (mut rd, mut req, mut path) = (Reader::new(), String::new(), String::new());
    for i in 0..n {
        let t = if i == 0 { t0 } else { Instant::now() };
        path.clear();
        sh.path(rng, &mut path);
        req.clear();
        let _ = write!(
            req,
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: loadgen\r\nAccept: */*\r\n\r\n"
        );
        let a = with_timeout(sh.timeout, async {
            tls.write_all(req.as_bytes()).await.map_err(|_| Fail::Io)?;
            rd.answer(&mut tls, false).await
        })
        .await?;
        st.record(class, a.status, a.bytes, t);
        if a.close {
            if i + 1 < n {
                st.early_close += 1;
            }
            break;
        }
    }
    Ok(())
}

/// One task: connections one after the other until the deadline.
async fn worker(sh: Arc<Shared>, seed: u64) -> Stats {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut st = Stats::default();
    loop {
        let n = sh.requests_per_conn(&mut rng);
        let https = rng.random::<f64>() * 100.0 < sh.args.https;
        let one = async {
            if https {
                https_conn(&sh, &mut rng, &mut st, n).await
            } else {
                http_conn(&sh, &mut rng, &mut st, n).await
            }
        };
        match tokio::time::timeout_at(sh.deadline, one).await {
            Err(_) => return st,
            Ok(Ok(())) => {}
            Ok(Err(f)) => {
                st.fail(f);
                // A refused connect would otherwise spin.
                if matches!(f, Fail::Connect) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}

fn tls_connector(files: &[String]) -> Result<TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    for f in files {
        for c in CertificateDer::pem_file_iter(f).map_err(|e| format!("{f}: {e}"))? {
            roots
                .add(c.map_err(|e| format!("{f}: {e}"))?)
                .map_err(|e| format!("{f}: {e}"))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(cfg)))
}

fn pct(v: &[u32], p: f64) -> u32 {
    if v.is_empty() {
        return 0;
    }
    let i = ((v.len() as f64 - 1.0) * p / 100.0).round() as usize;
    v[i.min(v.len() - 1)]
}

/// The one result line.
fn report(mut st: Stats, secs: f64) -> String {
    let mut all: Vec<u32> = st.lat.iter().flatten().copied().collect();
    all.sort_unstable();
    for v in &mut st.lat {
        v.sort_unstable();
    }
    let mean = all.iter().map(|&x| f64::from(x)).sum::<f64>() / all.len().max(1) as f64;
    let f = st.fails;
    let mut out = format!(
        "LOADGEN requests={} duration_us={:.0} bytes={} ok={} blocked={} blocked_connect={} \
         status_other={} conns_opened={} early_close={} err_connect={} err_connect_status={} \
         err_tls={} err_io={} err_parse={} err_timeout={} p50_us={} p90_us={} p99_us={} \
         p999_us={} mean_us={mean:.0} max_us={}",
        st.requests,
        secs * 1e6,
        st.bytes,
        st.ok,
        st.blocked,
        st.blocked_connect,
        st.status_other,
        st.conns,
        st.early_close,
        f[0],
        f[1],
        f[2],
        f[3],
        f[4],
        f[5],
        pct(&all, 50.0),
        pct(&all, 90.0),
        pct(&all, 99.0),
        pct(&all, 99.9),
        all.last().copied().unwrap_or(0),
    );
    for (i, name) in ["http", "https_even", "https_odd"].iter().enumerate() {
        let v = &st.lat[i];
        let _ = write!(
            out,
            " {name}_requests={} {name}_p50_us={} {name}_p99_us={}",
            st.by_class[i],
            pct(v, 50.0),
            pct(v, 99.0)
        );
    }
    out
}

fn main() {
    let args = Args::parse();
    if args.proxy.is_none() && !args.direct {
        println!("loadgen: give --proxy ADDR or --direct (see benches/realistic/README.md)");
        return;
    }
    let tls = match tls_connector(&args.ca) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(2);
        }
    };
    let mut rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(args.threads);
        b
    };
    let rt = rt.enable_all().build().expect("tokio runtime");
    let st = rt.block_on(async {
        let zipf = Zipf::new(args.hosts.max(1), args.zipf_s);
        let secs = Duration::from_secs_f64(args.duration.max(0.1));
        let sh = Arc::new(Shared {
            timeout: Duration::from_secs_f64(args.timeout.max(0.1)),
            deadline: tokio::time::Instant::now() + secs,
            zipf,
            tls,
            args: args.clone(),
        });
        let start = Instant::now();
        let tasks: Vec<_> = (0..args.conns)
            .map(|i| tokio::spawn(worker(sh.clone(), args.seed.wrapping_add(7919 * i as u64))))
            .collect();
        let mut total = Stats::default();
        for t in tasks {
            if let Ok(s) = t.await {
                total.merge(s);
            }
        }
        (total, start.elapsed().as_secs_f64())
    });
    println!("{}", report(st.0, st.1));
}
