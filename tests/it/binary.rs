//! The real `webrep` binary: graceful shutdown on SIGTERM, flat memory while streaming,
//! configuration errors.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use crate::harness::*;

/// A `webrep proxy` child process, its address and what it logged before it listened.
pub(crate) struct ProxyProcess {
    pub(crate) process: Webrep,
    pub(crate) addr: SocketAddr,
    /// The admin listener, when the config has one.
    pub(crate) admin: Option<SocketAddr>,
    /// What it logged before it listened.
    pub(crate) startup: Vec<String>,
    pub(crate) dir: tempfile::TempDir,
}

impl std::ops::Deref for ProxyProcess {
    type Target = Webrep;
    fn deref(&self) -> &Webrep {
        &self.process
    }
}

impl std::ops::DerefMut for ProxyProcess {
    fn deref_mut(&mut self) -> &mut Webrep {
        &mut self.process
    }
}

impl ProxyProcess {
    pub(crate) async fn start(extra: &str) -> Self {
        Self::start_with(extra, "json").await
    }

    async fn start_with(extra: &str, log_format: &str) -> Self {
        Self::start_env(extra, log_format, &[]).await
    }

    pub(crate) async fn start_env(
        extra: &str,
        log_format: &str,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!(
            "{BASE}{extra}access_log:\n  path: {:?}\n  format: {log_format}\nlog:\n  level: info\n  format: text\n",
            dir.path().join("access.log").display().to_string()
        );
        Self::start_yaml(dir, &yaml, env).await
    }

    /// `webrep proxy` on `yaml`, written to `dir/webrep.yaml`, with `env`.
    pub(crate) async fn start_yaml(
        dir: tempfile::TempDir,
        yaml: &str,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Self {
        let cfg = dir.path().join("webrep.yaml");
        std::fs::write(&cfg, with_choices(yaml)).unwrap();
        let mut cmd = webrep(["proxy", "--config"]);
        cmd.arg(&cfg).envs(env.iter().copied());
        let mut process = Webrep::spawn(cmd);
        let listen = process
            .wait_field(&["listen.addr="])
            .await
            .expect("proxy is running");
        let admin = process.seen_field("admin listener", " addr=");
        Self {
            addr: listen.parse().unwrap(),
            admin: admin.map(|a| a.parse().unwrap()),
            startup: process.lines_seen(),
            process,
            dir,
        }
    }

    /// Peak resident memory so far (VmHWM), in KiB.
    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .unwrap()
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap()
    }

    pub(crate) fn client(&self) -> reqwest::Client {
        init_crypto();
        reqwest::Client::builder()
            .proxy(reqwest::Proxy::all(format!("http://{}", self.addr)).unwrap())
            .build()
            .unwrap()
    }
}

/// systemd's side of `Type=notify`: a datagram socket named by NOTIFY_SOCKET.
pub(crate) struct NotifySocket {
    dir: tempfile::TempDir,
    socket: tokio::net::UnixDatagram,
}

impl NotifySocket {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = tokio::net::UnixDatagram::bind(dir.path().join("notify")).unwrap();
        Self { dir, socket }
    }

    pub(crate) fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("notify")
    }

    /// The next notification (waits up to 30 s).
    pub(crate) async fn next(&self) -> String {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(30), self.socket.recv(&mut buf))
            .await
            .expect("a notification")
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

#[tokio::test]
async fn tells_systemd_when_it_is_ready_reloading_and_stopping() {
    let systemd = NotifySocket::new();
    let path = systemd.path();
    let next = || systemd.next();
    let origin = Origin::http().await;
    let mut proxy =
        ProxyProcess::start_env("", "json", &[("NOTIFY_SOCKET", path.as_os_str())]).await;
    assert_eq!(
        next().await,
        format!("READY=1\nSTATUS=proxy listening on {}\n", proxy.addr)
    );
    // Ready means serving.
    let r = proxy.client().get(origin.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // `systemctl reload`: RELOADING=1 with the time, then READY=1 with the new policy.
    proxy.signal("HUP");
    let reloading = next().await;
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    assert_eq!(next().await, "READY=1\nSTATUS=policy generation 2 loaded\n");

    // `systemctl stop`.
    proxy.signal("TERM");
    assert_eq!(next().await, "STOPPING=1\n");
    proxy.wait_for_line("shutting down").await;
    assert_eq!(proxy.exit_code("exits").await, Some(0));
}

#[tokio::test]
async fn pings_the_systemd_watchdog_while_its_event_loops_run() {
    let systemd = NotifySocket::new();
    let path = systemd.path();
    let next = || systemd.next();
    // What systemd sets for `WatchdogSec=0.3`: pings every 150 ms.
    let mut proxy = ProxyProcess::start_env(
        "  workers: 2\n",
        "json",
        &[
            ("NOTIFY_SOCKET", path.as_os_str()),
            ("WATCHDOG_USEC", std::ffi::OsStr::new("300000")),
        ],
    )
    .await;
    assert!(next().await.starts_with("READY=1\n"));
    for _ in 0..3 {
        assert_eq!(next().await, "WATCHDOG=1\n");
    }
    proxy.signal("TERM");
    // Pings may go on while it drains; STOPPING comes among them.
    let mut stopping = false;
    for _ in 0..20 {
        let m = next().await;
        if m == "STOPPING=1\n" {
            stopping = true;
            break;
        }
        assert_eq!(m, "WATCHDOG=1\n");
    }
    assert!(stopping);
    assert_eq!(proxy.exit_code("exits").await, Some(0));
}

#[tokio::test]
async fn sigterm_finishes_an_in_flight_slow_response_then_exits_0() {
    let origin = Origin::http().await;
    let mut proxy = ProxyProcess::start_with("", "squid").await;
    let client = proxy.client();
    let mut resp = client.get(origin.url("/slow")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let first = resp.chunk().await.unwrap().unwrap();
    assert_eq!(&first[..], b"first;");
    // Make sure the origin is parked on its gate before we signal.
    origin.stats.slow_started.notified().await;

    // SIGHUP does not stop it.
    proxy.signal("HUP");
    proxy.wait_for_line("SIGHUP").await;

    proxy.signal("TERM");
    proxy.wait_for_line("shutting down").await;
    // The listener is closed: new clients are refused.
    assert!(tokio::net::TcpStream::connect(proxy.addr).await.is_err());
    // The response in flight still completes.
    origin.stats.gate.notify_one();
    let rest = resp.chunk().await.unwrap().unwrap();
    assert_eq!(&rest[..], b"second");
    assert!(resp.chunk().await.unwrap().is_none());
    assert_eq!(proxy.exit_code("exits after draining").await, Some(0));
    // The access log was flushed on the way out, in Squid's native format.
    let log = std::fs::read_to_string(proxy.dir.path().join("access.log")).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("/slow"))
        .unwrap_or_else(|| panic!("no line for /slow in {log:?}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields.len(), 11, "{line}");
    assert_eq!(fields[2], "127.0.0.1");
    assert_eq!(fields[3], "TCP_MISS/200");
    assert_eq!(fields[4], "12", "body bytes: first;second");
    assert_eq!(fields[5], "GET");
    assert_eq!(fields[6], origin.url("/slow"));
    assert_eq!(fields[8], format!("HIER_DIRECT/{}", origin.addr.ip()));
    assert_eq!(fields[10].len(), 16, "request id");
}

#[tokio::test]
async fn streaming_64_mib_keeps_memory_flat() {
    let origin = Origin::http().await;
    let proxy = ProxyProcess::start("").await;
    let client = proxy.client();
    // Warm up: allocate what a normal request allocates.
    let r = client
        .get(origin.url("/bytes/1048576"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().len(), 1 << 20);
    let before = proxy.peak_rss_kib();

    let n = 64usize << 20;
    let mut r = client
        .get(origin.url(&format!("/bytes/{n}")))
        .send()
        .await
        .unwrap();
    let mut got = 0usize;
    while let Some(c) = r.chunk().await.unwrap() {
        got += c.len();
    }
    assert_eq!(got, n);
    // Upload: a streamed (chunked) body of n bytes.
    let r = client
        .post(origin.url("/upload"))
        .body(pattern_upload(n, 256 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), format!("{n} ok"));
    let after = proxy.peak_rss_kib();
    // 128 MiB moved; the proxy's peak may grow by buffers, never by the body.
    assert!(
        after.saturating_sub(before) < 16 * 1024,
        "peak RSS grew from {before} KiB to {after} KiB"
    );
}

#[tokio::test]
async fn many_parallel_scanned_downloads_stay_within_the_hold_back_budget() {
    // 32 downloads of 3 MiB at once, each under hold_back_bytes (so each would be held whole
    // while its hash is looked up), against a total budget of 8 MiB: at most two are held at
    // a time, the others stream with their hash computed on the way. Held all at once they
    // would be 96 MiB of the proxy's memory.
    let origin = Origin::http().await;
    let proxy = ProxyProcess::start(
        "files:\n  hold_back_bytes: 4194304\n  hold_back_total_bytes: 8388608\nadmin:\n  listen: \"127.0.0.1:0\"\n",
    )
    .await;
    let client = proxy.client();
    const N: usize = 3 << 20;
    let fetch = |seed: u8| {
        let (client, url) = (client.clone(), origin.url(&format!("/download/{N}/{seed}")));
        async move {
            let r = client.get(url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let body = r.bytes().await.unwrap();
            assert!(body == download_bytes(N, seed), "download {seed} intact");
        }
    };
    // Warm up: what one scanned download allocates.
    fetch(1).await;
    let before = proxy.peak_rss_kib();
    let tasks: Vec<_> = (0..32u8).map(|i| tokio::spawn(fetch(10 + i))).collect();
    for t in tasks {
        t.await.unwrap();
    }
    let after = proxy.peak_rss_kib();
    let stats: serde_json::Value = serde_json::from_str(
        &plain_get(format!("http://{}/stats", proxy.admin.unwrap()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(stats["files"]["scanned"], 33, "{stats}");
    let held = stats["files"]["held"].as_u64().unwrap();
    assert!(held < 33, "some downloads streamed: {stats}");
    assert!(
        after.saturating_sub(before) < 40 * 1024,
        "peak RSS grew from {before} KiB to {after} KiB with 32 parallel downloads"
    );
    eprintln!(
        "32 parallel 3 MiB scanned downloads: peak RSS {before} KiB -> {after} KiB, {held} held"
    );
}

#[tokio::test]
async fn a_bad_config_file_exits_78_naming_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.yaml");
    std::fs::write(&cfg, "proxy:\n  listen: [\"127.0.0.1:0\"]\n  lisen: oops\n").unwrap();
    let mut cmd = webrep(["proxy", "--config"]);
    cmd.arg(&cfg);
    let out = run_to_end(cmd).await;
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:3:3: unknown key `lisen` in `proxy`; did you mean `listen`?",
            cfg.display()
        )),
        "{err}"
    );
    let mut cmd = webrep(["config", "check"]);
    cmd.arg(&cfg);
    let out = run_to_end(cmd).await;
    assert_eq!(out.status.code(), Some(78));
}

#[tokio::test]
async fn a_second_proxy_on_the_same_port_exits_with_address_in_use() {
    let origin = Origin::http().await;
    let mut first = ProxyProcess::start(
        "  workers: 2
",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("second.yaml");
    std::fs::write(
        &cfg,
        with_choices(&BASE.replace("127.0.0.1:0", &first.addr.to_string())),
    )
    .unwrap();
    let mut second = webrep(["proxy", "--config"]);
    second.arg(&cfg);
    // Bounded: the second proxy exits instead of serving.
    let out = run_to_end(second).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code().is_some_and(|c| c != 0),
        "{:?}: {err}",
        out.status
    );
    assert!(
        err.to_lowercase().contains("address already in use"),
        "{err}"
    );
    // Every request still goes through the first one.
    let client = first.client();
    for _ in 0..12 {
        let r = client.get(origin.url("/")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    first.signal("TERM");
    assert_eq!(first.exit_code("exits").await, Some(0));
}

#[tokio::test]
async fn passwd_prints_a_users_file_line_the_proxy_accepts() {
    let mut child = webrep(["passwd", "bob"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use tokio::io::AsyncWriteExt as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"pa55word\n")
        .await
        .unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap();
    assert!(line.starts_with("bob:$argon2id$"), "{line}");
    use webrep::proxy::auth::{Authenticator, PasswordChecks};
    let config = webrep::config::Config::from_raw(Default::default(), "t")
        .unwrap()
        .auth;
    let checks = std::sync::Arc::new(PasswordChecks::new(&config).unwrap());
    let auth = Authenticator::from_text(&line, "users", &config, checks).unwrap();
    let v = http::HeaderValue::from_static("Basic Ym9iOnBhNTV3b3Jk"); // bob:pa55word
    let outcome = std::sync::Arc::new(auth)
        .check(Some(&v), [127, 0, 0, 1].into())
        .await;
    assert_eq!(
        outcome,
        webrep::proxy::auth::AuthOutcome::User("bob".into())
    );
}

#[tokio::test]
async fn the_embedded_default_filters_with_the_sample_data() {
    // No policy and no reputation keys: policies/default.yaml and an in-process reputation
    // server on the shipped sample data. Sample names map to a local origin, not to DNS.
    let origin = Origin::http().await;
    let proxy = ProxyProcess::start("  hosts: { \"*.example\": [\"127.0.0.1\"] }\n").await;
    let client = proxy.client();
    let r = client
        .get("http://malware.example/download.exe")
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(v["reason"], "risk", "{v}");
    assert_eq!(v["category"], "malware", "{v}");
    // A safe sample host reaches the origin.
    let r = client
        .get(format!("http://safe.example:{}/", origin.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "hello");
}

#[tokio::test]
async fn an_interception_ca_that_expires_soon_is_warned_about_at_start_and_on_stats() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    write_ca(
        &ca_dir,
        time::OffsetDateTime::now_utc() + time::Duration::hours(10 * 24 + 1),
    );
    let proxy = ProxyProcess::start(&format!(
        "intercept:\n  enabled: true\n  ca_dir: {:?}\nadmin:\n  listen: \"127.0.0.1:0\"\n",
        ca_dir.display().to_string()
    ))
    .await;
    let warning = proxy
        .startup
        .iter()
        .find(|l| l.contains("the interception CA expires in 10 days"))
        .unwrap_or_else(|| panic!("no warning in {:#?}", proxy.startup));
    assert!(warning.contains("WARN"), "{warning}");
    let stats = plain_get(format!("http://{}/stats", proxy.admin.unwrap()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    let problem = stats["intercept_ca"]["problem"]
        .as_str()
        .unwrap_or_default();
    assert!(problem.starts_with("expires in 10 days"), "{stats}");
}

/// A users file and an admin token file that every local user can read start the proxy with
/// a warning naming each; readable by the owner and group only, without one.
#[tokio::test]
async fn secrets_files_other_users_can_read_are_warned_about() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let (users, token) = (dir.path().join("users"), dir.path().join("admin-token"));
    let hash =
        webrep::proxy::auth::hash_password_with("pw", argon2::Params::new(64, 1, 1, None).unwrap())
            .unwrap();
    std::fs::write(&users, format!("alice:{hash}\n")).unwrap();
    std::fs::write(&token, "admin-token-0123456789\n").unwrap();
    let config = format!(
        "auth:\n  users_file: {:?}\nadmin:\n  listen: \"127.0.0.1:0\"\n  token_file: {:?}\n",
        users.display().to_string(),
        token.display().to_string()
    );
    let warned = |startup: &[String], key: &str| {
        startup
            .iter()
            .any(|l| l.contains("WARN") && l.contains(key) && l.contains("chmod o-rwx"))
    };
    for (mode, expected) in [(0o644, true), (0o640, false)] {
        for f in [&users, &token] {
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let proxy = ProxyProcess::start(&config).await;
        for key in ["auth.users_file", "admin.token_file"] {
            assert_eq!(
                warned(&proxy.startup, key),
                expected,
                "mode {mode:o}, {key}: {:#?}",
                proxy.startup
            );
        }
    }
}

/// Without a terminal: the first line of standard input; a password under 8 characters, or
/// none at all, is refused with the status for bad input.
#[tokio::test]
async fn passwd_from_a_pipe_refuses_short_or_missing_passwords() {
    for (input, code, says) in [
        (
            &b"short77\n"[..],
            65,
            "too short (7 characters); at least 8",
        ),
        (b"", 66, "no password"),
        (b"long enough\n", 0, ""),
    ] {
        let mut child = webrep(["passwd", "bob"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use tokio::io::AsyncWriteExt as _;
        child.stdin.take().unwrap().write_all(input).await.unwrap();
        let out = child.wait_with_output().await.unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{input:?}: {err}");
        assert!(err.contains(says), "{input:?}: {err}");
        assert_eq!(out.stdout.starts_with(b"bob:$argon2id$"), code == 0);
    }
}

/// On a terminal (a pseudo-terminal from util-linux `script`, part of every Debian system):
/// two prompts, and the password typed is never echoed; different passwords are refused.
#[tokio::test]
async fn passwd_on_a_terminal_asks_twice_without_echo() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    for (second, code) in [("tty-secret-1", 0), ("tty-secret-2", 65)] {
        let mut child = tokio::process::Command::new("script")
            .args(["-qec", &format!("{BIN} passwd bob"), "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("`script` (util-linux, Debian package bsdutils) is needed");
        let mut stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut seen = Vec::new();
        for (prompt, answer) in [("Password for bob: ", "tty-secret-1"), ("Again: ", second)] {
            tokio::time::timeout(Duration::from_secs(20), async {
                while !String::from_utf8_lossy(&seen).contains(prompt) {
                    let mut buf = [0u8; 512];
                    let n = stdout.read(&mut buf).await.unwrap();
                    assert!(
                        n > 0,
                        "ended before {prompt:?}: {:?}",
                        String::from_utf8_lossy(&seen)
                    );
                    seen.extend_from_slice(&buf[..n]);
                }
            })
            .await
            .expect("prompt");
            stdin
                .write_all(format!("{answer}\n").as_bytes())
                .await
                .unwrap();
        }
        let status = tokio::time::timeout(Duration::from_secs(30), async {
            stdout.read_to_end(&mut seen).await.unwrap();
            child.wait().await.unwrap()
        })
        .await
        .expect("webrep passwd ends");
        drop(stdin);
        let seen = String::from_utf8_lossy(&seen);
        assert_eq!(status.code(), Some(code), "{seen}");
        assert!(
            !seen.contains("tty-secret"),
            "the password was echoed: {seen}"
        );
        if code == 0 {
            assert!(seen.contains("bob:$argon2id$"), "{seen}");
        } else {
            assert!(seen.contains("the two passwords differ"), "{seen}");
        }
    }
}
