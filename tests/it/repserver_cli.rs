//! The real `webrep server`, `webrep import` and `webrep lookup` binaries talking to each
//! other on 127.0.0.1.

use std::time::Duration;

use crate::harness::{ADMIN, BOUND, CLIENT, Webrep, eventually, run_to_end, webrep};

struct ServerProcess {
    process: Webrep,
    base: String,
    /// `server.metrics_listen`'s address, from the log.
    metrics: String,
    /// Where the server sends its systemd notifications (`NOTIFY_SOCKET`).
    notify: tokio::net::UnixDatagram,
    /// The config, tokens and store (`state/reputation.db`); servers may share one.
    dir: std::sync::Arc<tempfile::TempDir>,
    /// Holds the notification socket.
    _notify_dir: tempfile::TempDir,
    /// What it logged up to `ready`.
    startup: Vec<String>,
}

impl ServerProcess {
    async fn start() -> ServerProcess {
        Self::start_in(std::sync::Arc::new(tempfile::tempdir().unwrap())).await
    }

    /// A server whose tokens file has permissions `mode`.
    async fn start_with_tokens_mode(mode: u32) -> ServerProcess {
        let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
        Self::start_in_with_tokens_mode(dir, mode).await
    }

    /// A server with its config, tokens and store in `dir`.
    async fn start_in(dir: std::sync::Arc<tempfile::TempDir>) -> ServerProcess {
        Self::start_in_with_tokens_mode(dir, 0o600).await
    }

    async fn start_in_with_tokens_mode(
        dir: std::sync::Arc<tempfile::TempDir>,
        mode: u32,
    ) -> ServerProcess {
        use std::os::unix::fs::PermissionsExt as _;
        let tokens = dir.path().join("tokens");
        std::fs::write(
            &tokens,
            format!("# test tokens\nclient {CLIENT}\nadmin {ADMIN}\n"),
        )
        .unwrap();
        std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(mode)).unwrap();
        let cfg = dir.path().join("webrep.yaml");
        std::fs::write(
            &cfg,
            format!(
                "server:\n  listen: \"127.0.0.1:0\"\n  metrics_listen: \"127.0.0.1:0\"\n  store: {:?}\n  tokens_file: {:?}\n  sample_data: true\nlog:\n  level: info\n",
                dir.path().join("state/reputation.db").display().to_string(),
                tokens.display().to_string()
            ),
        )
        .unwrap();
        let notify_dir = tempfile::tempdir().unwrap();
        let notify_path = notify_dir.path().join("notify");
        let notify = tokio::net::UnixDatagram::bind(&notify_path).unwrap();
        let mut cmd = webrep(["server", "--config"]);
        cmd.arg(&cfg).env("NOTIFY_SOCKET", &notify_path);
        let mut process = Webrep::spawn(cmd);
        let listen = process
            .wait_field(&["listen="])
            .await
            .expect("server is running");
        let metrics = process.seen_field("metrics listener", "addr=");
        let startup = process.lines_seen();
        ServerProcess {
            process,
            base: format!("http://{listen}"),
            metrics: metrics.expect("the metrics listener is logged before `ready`"),
            notify,
            dir,
            _notify_dir: notify_dir,
            startup,
        }
    }

    /// The next systemd notification the server sent.
    async fn notification(&self) -> String {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(30), self.notify.recv(&mut buf))
            .await
            .expect("a notification")
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Runs a client command against the server; (exit code, stdout, stderr).
    async fn run(&self, token: &str, args: &[&str]) -> (i32, String, String) {
        let mut cmd = webrep(args);
        cmd.env("WEBREP_SERVER", &self.base)
            .env("WEBREP_TOKEN", token);
        let out = run_to_end(cmd).await;
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    async fn signal(&self, sig: &str) {
        self.process.signal(sig);
    }

    async fn stop(mut self) {
        self.process.signal("TERM");
        assert_eq!(self.notification().await, "STOPPING=1\n");
        let status = self.process.exit_status("server exits on SIGTERM").await;
        assert!(status.success(), "{status}");
    }
}

#[tokio::test]
async fn server_import_and_lookup_commands() {
    let s = ServerProcess::start().await;
    // systemd (Type=notify) learns that it is ready, and where it listens.
    let ready = s.notification().await;
    assert!(
        ready.starts_with("READY=1\nSTATUS=reputation server on "),
        "{ready}"
    );
    assert!(
        ready.contains(s.base.trim_start_matches("http://")),
        "{ready}"
    );

    // The sample data is there: the explain form for one URL.
    let (code, out, err) = s
        .run(CLIENT, &["lookup", "http://files.test/uploads/evil/a.exe"])
        .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("dangerous score=3 categories=malware"),
        "{out}"
    );
    assert!(out.contains("matched files.test/uploads/evil/"), "{out}");

    // Import a domain list with a bad line through the running server.
    let feed = s.dir.path().join("gambling.domains");
    std::fs::write(&feed, "roulette.test\nnot a domain\nslots.test\n").unwrap();
    let feed = feed.to_str().unwrap();
    let (code, _, err) = s
        .run(
            CLIENT,
            &[
                "import",
                "--format",
                "domains",
                "--category",
                "gambling",
                feed,
            ],
        )
        .await;
    assert_eq!(code, 77, "a client token may not import: {err}");
    let (code, out, err) = s
        .run(
            ADMIN,
            &[
                "import",
                "--format",
                "domains",
                "--category",
                "gambling",
                "--score",
                "85",
                "--feed",
                "ut1",
                feed,
            ],
        )
        .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2 entries imported"), "{out}");
    assert!(
        err.contains(":2: "),
        "bad line reported with its number: {err}"
    );

    // Hosts in a batch, as JSON.
    let (code, out, err) = s
        .run(
            CLIENT,
            &[
                "lookup",
                "--host",
                "--json",
                "www.slots.test",
                "unknown.test",
            ],
        )
        .await;
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["hosts"][0]["categories"],
        serde_json::json!(["gambling"]),
        "{v}"
    );
    assert_eq!(v["hosts"][1]["risk"], "untested", "{v}");

    // Wrong format: refused, exit 65 (bad input data), nothing written.
    let (code, _, err) = s.run(ADMIN, &["import", "--format", "urlhaus", feed]).await;
    assert_eq!(code, 65, "{err}");
    assert!(err.contains("not a urlhaus file"), "{err}");
    // No token: a usage error.
    let (code, _, err) = s.run("", &["lookup", "http://a.test/"]).await;
    assert_eq!(code, 64, "{err}");

    // The metrics listener counted all that.
    webrep::tls::install_default();
    let text = reqwest::get(format!("http://{}/metrics", s.metrics))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let sample = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
    };
    assert_eq!(
        sample(r#"webrep_server_lookup_items_total{kind="url",answer="listed"}"#),
        1.0
    );
    assert_eq!(
        sample(r#"webrep_server_lookup_items_total{kind="host",answer="listed"}"#),
        1.0
    );
    assert_eq!(
        sample(r#"webrep_server_lookup_items_total{kind="host",answer="untested"}"#),
        1.0
    );
    assert_eq!(
        sample(r#"webrep_server_requests_total{route="import",status="2xx"}"#),
        1.0
    );
    assert!(sample(r#"webrep_server_requests_total{route="import",status="4xx"}"#) >= 2.0);
    let sample_entries = sample("webrep_server_entries");
    assert!(sample_entries > 2.0, "the sample data plus 2 imported");

    // `systemctl reload`: the config file and the tokens file are read again. The old client
    // token is revoked, a new one added, an escalation rule appears.
    let post_report = |token: &'static str, id: &'static str, client: &'static str| {
        let base = s.base.clone();
        async move {
            let now = webrep::clock::unix_millis();
            let body = serde_json::json!({ "events": [{ "v": 1, "id": id, "kind": "user_report",
                "time": now, "proxy": "p1", "client": client, "host": "rule.test" }] });
            let r = reqwest::Client::builder()
                .no_proxy()
                .build()
                .unwrap()
                .post(format!("{base}/v1/events"))
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            serde_json::from_str::<serde_json::Value>(&r.text().await.unwrap()).unwrap()
        }
    };
    assert_eq!(
        post_report(CLIENT, "e1", "10.0.0.1").await["escalated"],
        serde_json::json!([])
    );
    const NEW_CLIENT: &str = "client-token-rotated-0123456789";
    std::fs::write(
        s.dir.path().join("tokens"),
        format!("client {NEW_CLIENT}\nadmin {ADMIN}\n"),
    )
    .unwrap();
    let cfg = s.dir.path().join("webrep.yaml");
    let yaml = std::fs::read_to_string(&cfg).unwrap().replace(
        "server:\n",
        "server:\n  max_connections: 5000\n  escalation:\n    - kinds: [user_report]\n      distinct_clients: 1\n      score: 70\n",
    );
    std::fs::write(&cfg, yaml).unwrap();
    s.signal("HUP").await;
    assert!(s.notification().await.starts_with("RELOADING=1\n"));
    assert_eq!(
        s.notification().await,
        "READY=1\nSTATUS=tokens reloaded: 1 client, 1 admin; 1 escalation rules; \
         needs a restart: server.max_connections\n"
    );
    let (code, _, err) = s.run(CLIENT, &["lookup", "http://a.test/"]).await;
    assert_ne!(code, 0, "the revoked token is refused: {err}");
    assert!(
        err.contains("403") || err.contains("unknown token"),
        "{err}"
    );
    let (code, _, err) = s.run(NEW_CLIENT, &["lookup", "http://a.test/"]).await;
    assert_eq!(code, 0, "{err}");
    // The new rule counts: one more client's report escalates the host.
    assert_eq!(
        post_report(NEW_CLIENT, "e2", "10.0.0.2").await["escalated"],
        serde_json::json!(["rule.test/"])
    );
    // A broken file keeps the running tokens.
    std::fs::write(s.dir.path().join("tokens"), "client short\n").unwrap();
    s.signal("HUP").await;
    assert!(s.notification().await.starts_with("RELOADING=1\n"));
    let ready = s.notification().await;
    assert!(
        ready.starts_with("READY=1\nSTATUS=reload failed, running tokens, rules and config kept"),
        "{ready}"
    );
    let (code, _, err) = s.run(NEW_CLIENT, &["lookup", "http://a.test/"]).await;
    assert_eq!(code, 0, "{err}");
    s.stop().await;
}

#[tokio::test]
async fn server_without_tokens_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("webrep.yaml");
    std::fs::write(
        &cfg,
        format!(
            "server:\n  listen: \"127.0.0.1:0\"\n  store: {:?}\n",
            dir.path().join("r.db").display().to_string()
        ),
    )
    .unwrap();
    let mut cmd = webrep(["server", "--config"]);
    cmd.arg(&cfg);
    let out = run_to_end(cmd).await;
    // A configuration problem: 78, which the unit's RestartPreventExitStatus= names.
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no API tokens"), "{err}");
    // `config check` finds it too, at the `server` key, without starting anything.
    let mut cmd = webrep(["config", "check"]);
    cmd.arg(&cfg);
    let out = run_to_end(cmd).await;
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:1:1: server: no API tokens", cfg.display())),
        "{err}"
    );
}

#[tokio::test]
async fn import_straight_into_a_store_file() {
    let dir = tempfile::tempdir().unwrap();
    let feed = dir.path().join("feed.jsonl");
    std::fs::write(&feed, "{\"key\":\"x.test/\",\"score\":5,\"categories\":[\"phishing\"]}\n{\"key\":\"y.test/\",\"score\":500}\n").unwrap();
    let db = dir.path().join("r.db");
    let mut cmd = webrep(["import", "--format", "jsonl", "--store"]);
    cmd.arg(&db).arg(&feed);
    let out = run_to_end(cmd).await;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stdout.contains("1 entry imported, 0 lines skipped, 1 bad line "),
        "{stdout}"
    );
    assert!(stderr.contains(":2: "), "{stderr}");
    let store = webrep::repserver::store::Store::open(&db).unwrap();
    assert_eq!(store.len().unwrap(), 1);
}

/// The `.webrep-import-*` upload files beside the store in `dir`.
fn uploads(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("state"))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .filter(|n| n.starts_with(".webrep-import-"))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_killed_servers_upload_is_removed_at_the_next_start_and_a_live_one_never() {
    use tokio::io::AsyncWriteExt as _;
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let mut a = ServerProcess::start_in(dir.clone()).await;
    // An import whose upload stalls after its first lines: spooled beside the store.
    let addr = a.base.trim_start_matches("http://").to_owned();
    let mut upload = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/import?format=domains&feed=stalled HTTP/1.1\r\nhost: {addr}\r\n\
         authorization: Bearer {ADMIN}\r\ncontent-length: 20000000\r\n\r\n"
    );
    upload.write_all(head.as_bytes()).await.unwrap();
    upload
        .write_all("stalled.example\n".repeat(4096).as_bytes())
        .await
        .unwrap();
    eventually("an upload file", BOUND, || async {
        !uploads(dir.path()).is_empty()
    })
    .await;
    let live = uploads(dir.path());
    assert_eq!(live.len(), 1, "{live:?}");

    // A second server started on the same store leaves the first one's live upload alone.
    let b = ServerProcess::start_in(dir.clone()).await;
    assert!(b.notification().await.starts_with("READY=1\n"));
    assert_eq!(uploads(dir.path()), live);
    b.stop().await;

    // Killed in the middle of the upload: the file stays behind...
    a.signal("KILL").await;
    a.process.exit_status("killed").await;
    drop(upload);
    assert_eq!(uploads(dir.path()), live);
    // ...until the next start removes it, and says which.
    let c = ServerProcess::start_in(dir.clone()).await;
    assert!(c.notification().await.starts_with("READY=1\n"));
    assert_eq!(uploads(dir.path()), Vec::<String>::new());
    assert!(
        c.startup
            .iter()
            .any(|l| l.contains("removed an import upload") && l.contains(&live[0])),
        "{:#?}",
        c.startup
    );
    c.stop().await;
}

/// The README's first tokens file was written with the default umask (0644): every local user
/// could read the admin token. The server says so at start; the CLI does for `--token-file`.
#[tokio::test]
async fn a_tokens_file_other_users_can_read_is_warned_about() {
    use std::os::unix::fs::PermissionsExt as _;
    let open = ServerProcess::start_with_tokens_mode(0o644).await;
    assert!(open.notification().await.starts_with("READY=1"));
    let warning = open
        .startup
        .iter()
        .find(|l| l.contains("server.tokens_file") && l.contains("chmod o-rwx"))
        .unwrap_or_else(|| panic!("no warning in {:#?}", open.startup));
    assert!(
        warning.contains("WARN") && warning.contains("mode 644"),
        "{warning}"
    );
    let token_file = open.dir.path().join("client-token");
    std::fs::write(&token_file, format!("{CLIENT}\n")).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let lookup = || {
        let mut cmd = webrep(["lookup", "--server", &open.base, "--token-file"]);
        cmd.arg(&token_file)
            .arg("http://malware.example/")
            .env_remove("WEBREP_TOKEN");
        run_to_end(cmd)
    };
    let out = lookup().await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("warning: --token-file"), "{stderr}");
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = lookup().await;
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    open.stop().await;
    // Readable by the service's group only (the packaged layout): no warning.
    let grouped = ServerProcess::start_with_tokens_mode(0o640).await;
    assert!(grouped.notification().await.starts_with("READY=1"));
    assert!(
        !grouped.startup.iter().any(|l| l.contains("chmod o-rwx")),
        "{:#?}",
        grouped.startup
    );
    grouped.stop().await;
}
