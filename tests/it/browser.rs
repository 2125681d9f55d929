//! A real browser end to end: headless Chromium (Debian's package) through the real `webrep`
//! binary with interception on and the proxy's CA trusted (by its key's SPKI hash), loading
//! an allowed page, a blocked page and a warn page with its "Continue anyway" link, over HTTP
//! and intercepted HTTPS, from in-process origins. Every name resolves to 127.0.0.1 through
//! `proxy.hosts` (`*`), Chromium's own resolver answers nothing (`--host-resolver-rules`), and
//! the proxy refuses every other destination, so nothing leaves loopback. A second profile finds the proxy through its `/proxy.pac` only.
//! Screenshots go to `target/browser-artifacts/`.
//!
//! Skipped, saying so, only when Chromium is not installed and `WEBREP_REQUIRE_BROWSER` is
//! unset; `.ci/run` installs Chromium and sets it, so CI never skips.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::harness::*;

/// How long one Chromium run may take before it is killed.
const CHROMIUM_DEADLINE: Duration = Duration::from_secs(90);
/// The text every origin page shows (with the scheme and host it was asked for).
const MARKER: &str = "webrep-origin-page";

/// The Chromium binary, or `None` (after saying so) when it is missing and not required.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("WEBREP_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("WEBREP_REQUIRE_BROWSER").is_none(),
        "{} is missing but WEBREP_REQUIRE_BROWSER is set (Debian: apt-get install chromium)",
        path.display()
    );
    eprintln!(
        "SKIPPED: Chromium is not installed at {} (Debian: apt-get install chromium; \
         set WEBREP_REQUIRE_BROWSER=1 to make this a failure)",
        path.display()
    );
    None
}

/// An HTML origin on 127.0.0.1:0, plain or TLS: every page names its scheme and host.
struct HtmlOrigin {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl Drop for HtmlOrigin {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl HtmlOrigin {
    async fn start(tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let st = stop.clone();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
                    _ = st.cancelled() => return,
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<_>| {
                        let host = req
                            .headers()
                            .get("host")
                            .and_then(|h| h.to_str().ok())
                            .unwrap_or("-")
                            .split(':')
                            .next()
                            .unwrap_or("-")
                            .to_owned();
                        async move {
                            let body = format!(
                                "<!doctype html><html><head><title>origin {host}</title></head>\
                                 <body><h1 id=\"marker\">{MARKER} {scheme}://{host}</h1></body></html>"
                            );
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .header("content-type", "text/html; charset=utf-8")
                                    .body(Full::new(Bytes::from(body)))
                                    .unwrap(),
                            )
                        }
                    });
                    let b = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        None => {
                            let _ = b.serve_connection(TokioIo::new(tcp), svc).await;
                        }
                        Some(a) => {
                            if let Ok(t) = a.accept(tcp).await {
                                let _ = b.serve_connection(TokioIo::new(t), svc).await;
                            }
                        }
                    }
                });
            }
        });
        Self { addr, stop }
    }
}

/// The real `webrep proxy` binary.
struct Proxy {
    _child: Webrep,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Proxy {
    async fn start(upstream_ca: &Path, https_port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("policy.yaml");
        // Low security level: Dangerous is blocked; the Suspicious and Highly Suspicious
        // samples pass the level and get a warn page by their categories.
        std::fs::write(
            &policy,
            "description: \"browser test: block dangerous, warn on suspicious categories\"\n\
             security_level: low\n\
             untested: allow\n\
             categories:\n  actions:\n    malware: block\n    newly-observed: warn\n    potentially-unwanted: warn\n\
             interception:\n  default: intercept\n",
        )
        .unwrap();
        let q = |p: &Path| format!("{:?}", p.display().to_string());
        // Every name resolves to 127.0.0.1 (`*`: no DNS query for Chromium's own background
        // requests through the proxy) and every destination but loopback is refused.
        let cfg = format!(
            "proxy:\n  listen: [\"127.0.0.1:0\"]\n  via_name: webrep-browser-test\n  \
             connect_ports: [443, {https_port}]\n  \
             hosts: {{ \"*\": [\"127.0.0.1\"] }}\n  \
             destinations:\n    allow_internal: true\n    refuse: [\"0.0.0.0/2\", \"64.0.0.0/3\", \"96.0.0.0/4\", \"112.0.0.0/5\", \"120.0.0.0/6\", \"124.0.0.0/7\", \"126.0.0.0/8\", \"128.0.0.0/1\", \"::/0\"]\n\
             policy:\n  enabled: true\n  file: {policy}\n\
             intercept:\n  enabled: true\n  create_ca: true\n  ca_dir: {ca}\n  upstream_ca_file: {up}\n\
             access_log:\n  path: {log}\n  format: json\n\
             log:\n  level: info\n  format: text\n",
            policy = q(&policy),
            ca = q(&dir.path().join("ca")),
            up = q(upstream_ca),
            log = q(&dir.path().join("access.log")),
        );
        let cfg_path = dir.path().join("webrep.yaml");
        std::fs::write(&cfg_path, crate::harness::with_choices(&cfg)).unwrap();
        let mut cmd = webrep(["proxy", "--config"]);
        cmd.arg(&cfg_path);
        let mut child = Webrep::spawn(cmd);
        let addr = child
            .wait_field(&["listen.addr="])
            .await
            .unwrap_or_else(|| panic!("proxy exited:\n{}", child.lines().join("\n")))
            .parse()
            .unwrap();
        Self {
            _child: child,
            addr,
            dir,
        }
    }

    /// The base64 SHA-256 of the CA's SubjectPublicKeyInfo, as
    /// `--ignore-certificate-errors-spki-list` wants it.
    fn ca_spki_sha256(&self) -> String {
        use base64::Engine as _;
        use sha2::Digest as _;
        let pem = std::fs::read(self.dir.path().join("ca").join("ca.pem")).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
        let cert = pem.parse_x509().unwrap();
        let spki = cert.tbs_certificate.subject_pki.raw;
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(spki))
    }

    /// The access-log line whose id is `id` (polled: the writer flushes every 100 ms).
    async fn log_line(&self, id: &str) -> serde_json::Value {
        let path = self.dir.path().join("access.log");
        let what = format!("an access log line with id {id}");
        eventually_ok(&what, BOUND, || {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let found = text
                .lines()
                .map(|line| {
                    serde_json::from_str::<serde_json::Value>(line).expect("log line is JSON")
                })
                .find(|v| v["id"] == id);
            std::future::ready(found.ok_or(text))
        })
        .await
    }
}

/// One headless Chromium with its own profile, going through the proxy.
struct Browser {
    bin: PathBuf,
    profile: tempfile::TempDir,
    /// Chromium's standard error of each run, kept for failure messages.
    logs: tempfile::TempDir,
    runs: std::sync::atomic::AtomicUsize,
    /// How it finds the proxy: `--proxy-server`, or `--proxy-pac-url`.
    proxy_args: Vec<String>,
    spki: String,
    artifacts: PathBuf,
}

/// What one Chromium run printed.
struct Run {
    stdout: String,
    stderr: String,
}

impl Run {
    /// Panics with `what`, the page and Chromium's standard error unless `ok`.
    fn check(&self, ok: bool, what: &str) {
        assert!(
            ok,
            "{what}\npage:\n{}\nchromium stderr:\n{}",
            self.stdout, self.stderr
        );
    }
}

impl Browser {
    async fn run(&self, extra: &[String], url: &str) -> Run {
        let n = self.runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let err_path = self.logs.path().join(format!("chromium-{n}.stderr"));
        let err_file = std::fs::File::create(&err_path).unwrap();
        let mut cmd = Command::new(&self.bin);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-features=HttpsUpgrades,HttpsFirstBalancedModeAutoEnable",
            // Chromium's own background services (account and update checks) resolve
            // Google's names itself, outside the proxy: no name resolves here, so nothing
            // leaves loopback. Pages go through the proxy (an address), which resolves
            // their names from `proxy.hosts`.
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        ])
        .arg(format!("--user-data-dir={}", self.profile.path().display()))
        .args(&self.proxy_args)
        .arg(format!(
            "--ignore-certificate-errors-spki-list={}",
            self.spki
        ))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(err_file))
        .kill_on_drop(true);
        let child = cmd.spawn().expect("chromium starts");
        // On timeout the future is dropped, and with it the child, which kills it.
        let out = tokio::time::timeout(CHROMIUM_DEADLINE, child.wait_with_output()).await;
        let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
        let out = match out {
            Ok(r) => r.unwrap(),
            Err(_) => panic!(
                "chromium did not finish {url} within {CHROMIUM_DEADLINE:?} and was killed\n\
                 chromium stderr:\n{stderr}"
            ),
        };
        let run = Run {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr,
        };
        run.check(
            out.status.success(),
            &format!("chromium failed on {url}: {}", out.status),
        );
        run
    }

    /// The page's DOM after load.
    async fn dump_dom(&self, url: &str) -> Run {
        self.run(&["--dump-dom".to_owned()], url).await
    }

    /// Saves a screenshot of `url` as `{artifacts}/{name}.png`.
    async fn screenshot(&self, url: &str, name: &str) {
        let path = self.artifacts.join(format!("{name}.png"));
        let _ = std::fs::remove_file(&path);
        let run = self
            .run(
                &[
                    format!("--screenshot={}", path.display()),
                    "--window-size=1024,768".to_owned(),
                    "--hide-scrollbars".to_owned(),
                ],
                url,
            )
            .await;
        let size = std::fs::metadata(&path).map_or(0, |m| m.len());
        run.check(
            size > 0,
            &format!("no screenshot of {url} at {}", path.display()),
        );
    }
}

/// The ticket id shown on a block or warn page.
fn ticket(page: &Run) -> String {
    let re = regex::Regex::new(r"<th>Ticket</th><td>([0-9a-f]+)</td>").unwrap();
    let m = re.captures(&page.stdout).map(|c| c[1].to_owned());
    page.check(m.is_some(), "no ticket on the page");
    m.unwrap_or_default()
}

/// The "Continue anyway" link of a warn page (a path on the warned site).
fn continue_link(page: &Run) -> String {
    let re =
        regex::Regex::new(r#"<a href="(/\.webrep/continue\?token=[^"]+)">Continue anyway</a>"#)
            .unwrap();
    let m = re
        .captures(&page.stdout)
        .map(|c| c[1].replace("&amp;", "&"));
    page.check(m.is_some(), "no continue link on the warn page");
    m.unwrap_or_default()
}

fn assert_origin_page(page: &Run, scheme: &str, host: &str) {
    let want = format!("{MARKER} {scheme}://{host}");
    page.check(
        page.stdout.contains(&want),
        &format!("the origin's page ({want}) is not shown"),
    );
}

async fn assert_blocked(browser: &Browser, proxy: &Proxy, url: &str, name: &str) {
    let page = browser.dump_dom(url).await;
    page.check(
        page.stdout.contains("This site is blocked"),
        &format!("{url}: no block page"),
    );
    page.check(
        !page.stdout.contains(MARKER),
        &format!("{url} reached the origin"),
    );
    let id = ticket(&page);
    let line = proxy.log_line(&id).await;
    assert_eq!(line["decision"]["action"], "block", "{line}");
    assert!(
        line["url"]
            .as_str()
            .is_some_and(|u| u.contains("malware.example")),
        "{line}"
    );
    browser.screenshot(url, name).await;
}

async fn assert_warn_then_continue(
    browser: &Browser,
    proxy: &Proxy,
    scheme: &str,
    host: &str,
    port: u16,
    name: &str,
) {
    let base = format!("{scheme}://{host}:{port}");
    let url = format!("{base}/");
    let page = browser.dump_dom(&url).await;
    page.check(
        page.stdout.contains("Warning: this site may be unsafe"),
        &format!("{url}: no warn page"),
    );
    page.check(
        !page.stdout.contains(MARKER),
        &format!("{url} reached the origin"),
    );
    let id = ticket(&page);
    let line = proxy.log_line(&id).await;
    assert_eq!(line["decision"]["action"], "warn", "{line}");
    browser.screenshot(&url, &format!("{name}-warn")).await;
    // Follow "Continue anyway" in the same profile: a 303 back to the page, which now loads.
    let link = format!("{base}{}", continue_link(&page));
    let page = browser.dump_dom(&link).await;
    assert_origin_page(&page, scheme, host);
    browser.screenshot(&url, &format!("{name}-continued")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_shows_allowed_blocked_and_warned_pages_over_http_and_https() {
    let Some(bin) = chromium() else { return };
    init_crypto();
    let names = [
        "safe.example",
        "suspicious.example",
        "suspicious-high.example",
        "malware.example",
    ];
    let ca = TestCa::custom(&names, false);
    let http = HtmlOrigin::start(None).await;
    let https = HtmlOrigin::start(Some(ca.server_config())).await;
    let proxy = Proxy::start(&ca.ca_path, https.addr.port()).await;
    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("browser-artifacts");
    let artifacts = std::env::var_os("CARGO_TARGET_DIR")
        .map(|d| PathBuf::from(d).join("browser-artifacts"))
        .unwrap_or(artifacts);
    std::fs::create_dir_all(&artifacts).unwrap();
    let browser = Browser {
        bin,
        profile: tempfile::tempdir().unwrap(),
        logs: tempfile::tempdir().unwrap(),
        runs: Default::default(),
        proxy_args: vec![
            format!("--proxy-server=http://{}", proxy.addr),
            "--proxy-bypass-list=<-loopback>".to_owned(),
        ],
        spki: proxy.ca_spki_sha256(),
        artifacts,
    };
    let (hp, sp) = (http.addr.port(), https.addr.port());

    // Allowed, over HTTP and intercepted HTTPS: the origin's content is shown.
    for (scheme, port) in [("http", hp), ("https", sp)] {
        let url = format!("{scheme}://safe.example:{port}/");
        let page = browser.dump_dom(&url).await;
        assert_origin_page(&page, scheme, "safe.example");
        browser.screenshot(&url, &format!("allowed-{scheme}")).await;
    }

    // Blocked: the block page with its ticket, which is the access log line's id.
    assert_blocked(
        &browser,
        &proxy,
        &format!("http://malware.example:{hp}/"),
        "blocked-http",
    )
    .await;
    // Over HTTPS by bump-to-block: intercepted only to show the page.
    assert_blocked(
        &browser,
        &proxy,
        &format!("https://malware.example:{sp}/"),
        "blocked-https",
    )
    .await;

    // Warned, then continued: over HTTP on one host, over HTTPS on another (a continue
    // holds for its host).
    assert_warn_then_continue(
        &browser,
        &proxy,
        "http",
        "suspicious.example",
        hp,
        "warn-http",
    )
    .await;
    assert_warn_then_continue(
        &browser,
        &proxy,
        "https",
        "suspicious-high.example",
        sp,
        "warn-https",
    )
    .await;

    // A browser that finds the proxy through its PAC file only: pages still go through it.
    let pac_browser = Browser {
        profile: tempfile::tempdir().unwrap(),
        proxy_args: vec![format!("--proxy-pac-url=http://{}/proxy.pac", proxy.addr)],
        ..browser
    };
    let page = pac_browser
        .dump_dom(&format!("https://safe.example:{sp}/"))
        .await;
    assert_origin_page(&page, "https", "safe.example");
    assert_blocked(
        &pac_browser,
        &proxy,
        &format!("http://malware.example:{hp}/"),
        "blocked-via-pac",
    )
    .await;
}
