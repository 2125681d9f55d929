//! The proxy in hostile surroundings: configured paths that are FIFOs, devices or huge files;
//! standard output and error that are closed or never read; leftovers of a failed start; log
//! filters that would silence everything.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::binary::{NotifySocket, ProxyProcess};
use crate::harness::*;
use webrep::fsread;

fn mkfifo(path: &Path) {
    let made = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(made.success());
}

/// A sparse file of `len` bytes (no disk used).
fn sparse(path: &Path, len: u64) {
    std::fs::File::create(path).unwrap().set_len(len).unwrap();
}

/// Runs `f` on a thread of its own: a loader that blocks (a FIFO opened without
/// `O_NONBLOCK`) fails the test after 30 s instead of hanging it.
fn within_30s<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("{what}: still reading after 30 s"))
}

/// A CA directory whose certificate file is a link to `target`, loaded.
fn ca_with_cert_at(target: &Path) -> Result<(), String> {
    use webrep::intercept::ca;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    ca::init(dir.path(), &ca::InitOptions::default()).map_err(|e| e.to_string())?;
    let cert = dir.path().join(ca::CERT_FILE);
    std::fs::remove_file(&cert).map_err(|e| e.to_string())?;
    std::os::unix::fs::symlink(target, &cert).map_err(|e| e.to_string())?;
    ca::load(dir.path()).map(drop).map_err(|e| e.to_string())
}

type Loader = fn(&Path) -> Result<(), String>;

/// Every loader of a configured file: (what, its size cap, the loader).
fn loaders() -> Vec<(&'static str, u64, Loader)> {
    vec![
        ("config file", fsread::CONFIG_MAX, |p| {
            webrep::config::Config::load(Some(p))
                .map(drop)
                .map_err(|e| webrep::client::chain(&e))
        }),
        ("policy file", fsread::POLICY_MAX, |p| {
            webrep::policyfile::load_file(p)
                .map(drop)
                .map_err(|e| e.to_string())
        }),
        ("users file", fsread::USERS_MAX, |p| {
            use webrep::proxy::auth::{Authenticator, PasswordChecks};
            let config = webrep::config::Config::from_raw(Default::default(), "t")
                .unwrap()
                .auth;
            let checks = std::sync::Arc::new(PasswordChecks::new(&config).unwrap());
            Authenticator::load(p, &config, checks)
                .map(drop)
                .map_err(|e| e.to_string())
        }),
        ("groups file", fsread::GROUPS_MAX, |p| {
            webrep::proxy::auth::load_groups(p)
                .map(drop)
                .map_err(|e| format!("{e:#}"))
        }),
        ("tokens file", fsread::TOKENS_MAX, |p| {
            let mut tokens = webrep::repserver::api::Tokens::default();
            webrep::repserver::server::read_tokens_file(p, &mut tokens)
                .map_err(|e| format!("{e:#}"))
        }),
        ("CA bundle", fsread::PEM_MAX, |p| {
            webrep::client::RepClient::new("http://127.0.0.1:9", "client-token-0123456789", Some(p))
                .map(drop)
                .map_err(|e| e.to_string())
        }),
        (
            "interception CA certificate",
            fsread::PEM_MAX,
            ca_with_cert_at,
        ),
    ]
}

#[test]
fn every_configured_file_refuses_fifos_devices_directories_and_oversized_files() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    for (what, cap, load) in loaders() {
        let over = dir.path().join(format!("over-{cap}"));
        sparse(&over, cap + 1);
        // The FIFO first: a loader that waits for a writer fails here, before it could
        // read gigabytes from /dev/zero.
        for (path, says) in [
            (
                fifo.clone(),
                "is a FIFO (named pipe), not a regular file".to_owned(),
            ),
            (
                "/dev/zero".into(),
                "is a character device, not a regular file".to_owned(),
            ),
            (
                dir.path().to_owned(),
                "is a directory, not a regular file".to_owned(),
            ),
            (
                over.clone(),
                format!("larger than the limit of {cap} bytes"),
            ),
        ] {
            let p = path.clone();
            let err = within_30s(what, move || load(&p))
                .expect_err(&format!("{what} {}: refused", path.display()));
            assert!(err.contains(&says), "{what} {}: {err}", path.display());
            // The message names the file (the CA's names its link in the CA directory).
            let named = path.display().to_string();
            assert!(
                err.contains(&named) || err.contains(webrep::intercept::ca::CERT_FILE),
                "{what}: {err}"
            );
        }
    }
}

/// Runs the binary (killed if it runs 30 s); (exit code, stderr).
async fn run_binary(args: &[&str], cfg: Option<&Path>, env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = webrep(args);
    cmd.envs(env.iter().copied());
    if let Some(cfg) = cfg {
        cmd.arg(cfg);
    }
    let out = run_to_end(cmd).await;
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_fifo_as_config_or_policy_file_is_a_clear_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("policy.yaml");
    mkfifo(&fifo);
    // Named on the command line and unreadable: 66.
    let (code, err) = run_binary(&["config", "check"], Some(&fifo), &[]).await;
    assert_eq!(code, 66, "{err}");
    assert!(err.contains("is a FIFO (named pipe)"), "{err}");
    let (code, err) = run_binary(&["policy", "check"], Some(&fifo), &[]).await;
    assert_eq!(code, 66, "{err}");
    assert!(err.contains("is a FIFO (named pipe)"), "{err}");
    let cfg = dir.path().join("webrep.yaml");
    std::fs::write(
        &cfg,
        crate::harness::with_choices(&format!(
            "{BASE}policy:\n  file: {:?}\n",
            fifo.display().to_string()
        )),
    )
    .unwrap();
    // Named by the config: a configuration problem at start, 78.
    let (code, err) = run_binary(&["proxy", "--config"], Some(&cfg), &[]).await;
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains(&format!("{}: is a FIFO (named pipe)", fifo.display())),
        "{err}"
    );
}

/// Polls `/stats` (up to 30 s) until `ok` holds for it.
async fn stats_until(
    addr: std::net::SocketAddr,
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    eventually_ok(what, BOUND, || async {
        let v = stats_at(addr).await;
        if ok(&v) { Ok(v) } else { Err(v) }
    })
    .await
}

#[tokio::test]
async fn a_policy_swapped_for_a_fifo_keeps_the_running_one_and_reloads_and_signals_still_work() {
    let origin = Origin::http().await;
    let files = tempfile::tempdir().unwrap();
    let policy = files.path().join("policy.yaml");
    std::fs::write(&policy, "security_level: medium\n").unwrap();
    let token = "admin-token-0123456789";
    let token_file = files.path().join("admin-token");
    std::fs::write(&token_file, token).unwrap();
    let mut proxy = ProxyProcess::start(&format!(
        "policy:\n  file: {:?}\nadmin:\n  listen: \"127.0.0.1:0\"\n  token_file: {:?}\n",
        policy.display().to_string(),
        token_file.display().to_string()
    ))
    .await;
    let admin = proxy
        .startup
        .iter()
        .find(|l| l.contains("admin listener"))
        .and_then(|l| l.split("addr=").nth(1))
        .and_then(|a| a.split_whitespace().next())
        .expect("the admin listener is logged")
        .to_owned();
    assert_eq!(stats_at(proxy.admin.unwrap()).await["policy_generation"], 1);

    // The policy file becomes a FIFO (renamed into place, as editors replace files).
    let fifo = files.path().join("new-policy");
    mkfifo(&fifo);
    std::fs::rename(&fifo, &policy).unwrap();
    proxy.signal("HUP");
    let line = proxy.wait_for_line("reload failed").await;
    assert!(line.contains("FIFO (named pipe)"), "{line}");
    let r = reqwest::Client::new()
        .post(format!("http://{admin}/v1/reload"))
        .bearer_auth(token)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("the admin API answers a reload");
    let (status, body) = status_and_json(r).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["errors"][0].as_str().unwrap_or("").contains("FIFO"),
        "{body}"
    );
    // The running policy stays, and the proxy serves.
    assert_eq!(stats_at(proxy.admin.unwrap()).await["policy_generation"], 1);
    let r = proxy.client().get(origin.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // A regular file again: SIGHUP loads it.
    std::fs::remove_file(&policy).unwrap();
    std::fs::write(&policy, "security_level: high\n").unwrap();
    proxy.signal("HUP");
    stats_until(proxy.admin.unwrap(), "the new policy is loaded", |v| {
        v["policy_generation"].as_u64() >= Some(2)
    })
    .await;
    proxy.signal("TERM");
    assert_eq!(proxy.exit_code("exits on SIGTERM").await, Some(0));
}

/// A `webrep proxy` whose standard output (the access log) and error (diagnostics at
/// `debug`, so every request logs) are `stdout` and `stderr`; its address from its systemd
/// notification.
async fn proxy_with_streams(
    stdout: impl Into<Stdio>,
    stderr: impl Into<Stdio>,
    systemd: &NotifySocket,
) -> (
    Webrep,
    std::net::SocketAddr,
    std::net::SocketAddr,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("webrep.yaml");
    std::fs::write(
        &cfg,
        crate::harness::with_choices(&format!(
            "{BASE}access_log:\n  path: \"-\"\nlog:\n  level: debug\nadmin:\n  listen: \"127.0.0.1:0\"\n"
        )),
    )
    .unwrap();
    let mut cmd = webrep(["proxy", "--config"]);
    cmd.arg(&cfg)
        .env("NOTIFY_SOCKET", systemd.path())
        .stdout(stdout)
        .stderr(stderr);
    let child = Webrep::spawn_uncaptured(cmd);
    let ready = systemd.next().await;
    let (addr, admin) = ready
        .strip_prefix("READY=1\nSTATUS=proxy listening on ")
        .and_then(|s| s.lines().next()?.split_once("; admin on "))
        .unwrap_or_else(|| panic!("not a readiness notification: {ready:?}"));
    (child, addr.parse().unwrap(), admin.parse().unwrap(), dir)
}

/// Ten requests through the proxy, each answered.
async fn ten_requests(addr: std::net::SocketAddr, origin: &Origin) {
    init_crypto();
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(format!("http://{addr}")).unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    for i in 0..10 {
        let r = client
            .get(origin.url(&format!("/?n={i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}

#[tokio::test]
async fn closed_stdout_and_stderr_neither_kill_nor_stop_the_proxy() {
    let origin = Origin::http().await;
    let systemd = NotifySocket::new();
    // Pipes whose reading ends are closed: every write gets EPIPE.
    let (out_r, out_w) = std::io::pipe().unwrap();
    let (err_r, err_w) = std::io::pipe().unwrap();
    drop((out_r, err_r));
    let (mut child, addr, admin, _dir) = proxy_with_streams(out_w, err_w, &systemd).await;
    ten_requests(addr, &origin).await;
    // What could not be written is counted.
    let v = stats_until(admin, "losses counted", |v| {
        v["access_log_write_failed"].as_u64() >= Some(10) && v["log_dropped"].as_u64() > Some(0)
    })
    .await;
    assert!(v["log_dropped"].as_u64() > Some(0), "{v}");
    assert_eq!(child.terminate().await, Some(0));
}

/// A pipe already full (its reader never reads): the writing end, and the reader to keep.
async fn full_pipe() -> (std::os::fd::OwnedFd, tokio::net::unix::pipe::Receiver) {
    let (tx, rx) = tokio::net::unix::pipe::pipe().unwrap();
    let chunk = [b'x'; 4096];
    // Writes until the kernel says the pipe is full (`writable` makes `try_write` ask it).
    tx.writable().await.unwrap();
    let mut written = 0;
    loop {
        match tx.try_write(&chunk) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(written >= 4096, "the pipe took {written} bytes");
    (tx.into_blocking_fd().unwrap(), rx)
}

#[tokio::test]
async fn stdout_and_stderr_that_are_never_read_hold_up_neither_requests_nor_shutdown() {
    let origin = Origin::http().await;
    let systemd = NotifySocket::new();
    let (out_w, _out_reader) = full_pipe().await;
    let (err_w, _err_reader) = full_pipe().await;
    let (mut child, addr, _admin, _dir) = proxy_with_streams(out_w, err_w, &systemd).await;
    ten_requests(addr, &origin).await;
    assert_eq!(child.terminate().await, Some(0));
}

#[tokio::test]
async fn commands_writing_to_closed_pipes_exit_cleanly_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "proxy:\n  lisen: 1\n").unwrap();
    let policy = concat!(env!("CARGO_MANIFEST_DIR"), "/policies/default.yaml");
    let bad = bad.to_str().unwrap();
    for (args, code) in [
        (&["config", "print-default"][..], 0),
        (&["url", "http://Example.COM/a/../b"][..], 0),
        (&["policy", "check", policy][..], 0),
        (&["config", "check", bad][..], 78),
    ] {
        let (out_r, out_w) = std::io::pipe().unwrap();
        let (err_r, err_w) = std::io::pipe().unwrap();
        drop((out_r, err_r));
        let status = webrep(args)
            .stdout(out_w)
            .stderr(err_w)
            .status()
            .await
            .unwrap();
        assert_eq!(status.code(), Some(code), "webrep {args:?}: {status}");
    }
    // With stderr readable, it says nothing of a panic.
    let (out_r, out_w) = std::io::pipe().unwrap();
    drop(out_r);
    let out = webrep(["config", "print-default"])
        .stdout(out_w)
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
}

#[tokio::test]
async fn an_invalid_log_level_or_rust_log_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("verbose.yaml");
    std::fs::write(&cfg, "log:\n  level: verbose\n").unwrap();
    let (code, err) = run_binary(&["config", "check"], Some(&cfg), &[]).await;
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("verbose.yaml")
            && err.contains("log.level")
            && err.contains("\"verbose\" is not a level"),
        "{err}"
    );
    let cfg = dir.path().join("webrep.yaml");
    std::fs::write(&cfg, BASE).unwrap();
    let (code, err) = run_binary(&["proxy", "--config"], Some(&cfg), &[("RUST_LOG", "inf")]).await;
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("RUST_LOG=\"inf\"") && err.contains("\"inf\" is not a level"),
        "{err}"
    );
}

#[tokio::test]
async fn a_key_file_a_failed_start_left_in_the_spool_is_removed_at_start() {
    // The key exists (an earlier start made it); a later start died writing a new one.
    let spool = tempfile::tempdir().unwrap();
    let key = "ab".repeat(32);
    std::fs::write(spool.path().join("anonymize-key"), &key).unwrap();
    let leftover = spool.path().join("anonymize-key.tmp");
    std::fs::write(&leftover, "0123").unwrap();
    let proxy = TestProxy::start_with(|c| {
        c.feedback.enabled = Some(true);
        c.feedback.spool_dir = spool.path().to_owned();
    })
    .await;
    assert!(!leftover.exists());
    assert_eq!(
        std::fs::read_to_string(spool.path().join("anonymize-key")).unwrap(),
        key
    );
    proxy.stop().await;
}
