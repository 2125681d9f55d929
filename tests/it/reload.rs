//! The real `webrep proxy` binary on signals: SIGHUP reads the config file again (live
//! settings apply at once, the others are named as needing a restart, a broken file is
//! refused whole), SIGUSR1 reopens the access log after a rotation, and the access log goes
//! to syslog (RFC 5424) over UDP or a Unix datagram socket.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::binary::{NotifySocket, ProxyProcess};
use crate::harness::*;

/// [`BASE`] with the access log at `log` in `format`, the diagnostic log as text, and `extra`.
fn config(log: &Path, format: &str, extra: &str) -> String {
    format!(
        "{BASE}{extra}access_log:\n  path: {:?}\n  format: {format}\nlog:\n  level: info\n  format: text\n",
        log.display().to_string()
    )
}

/// The access log lines in `path` (none when it does not exist).
fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The `url` of each JSON line.
fn urls(path: &Path) -> Vec<String> {
    lines(path)
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["url"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// Waits until `path` holds `n` lines.
async fn wait_lines(path: &Path, n: usize) {
    eventually(&format!("{n} lines in {}", path.display()), BOUND, || {
        std::future::ready(lines(path).len() >= n)
    })
    .await;
}

async fn get_ok(client: &reqwest::Client, url: &str) {
    let r = client.get(url).send().await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    r.bytes().await.unwrap();
}

#[tokio::test]
async fn sigusr1_reopens_the_access_log_after_a_rename_in_order_losing_nothing() {
    let origin = Origin::http().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let rotated = dir.path().join("access.log.1");
    let mut proxy = ProxyProcess::start_yaml(dir, &config(&log, "json", ""), &[]).await;
    let client = proxy.client();
    for i in 0..10 {
        get_ok(&client, &origin.url(&format!("/before/{i}"))).await;
    }
    wait_lines(&log, 10).await;

    // logrotate: rename, then SIGUSR1; the proxy still writes to the renamed file until it
    // reopens, and to a new access.log after.
    std::fs::rename(&log, &rotated).unwrap();
    proxy.signal("USR1");
    proxy.wait_for_line("access log reopened").await;
    for i in 0..10 {
        get_ok(&client, &origin.url(&format!("/after/{i}"))).await;
    }
    wait_lines(&log, 10).await;
    let old = urls(&rotated);
    assert_eq!(old.len(), 10, "{old:#?}");
    assert!(old.iter().all(|u| u.contains("/before/")), "{old:#?}");
    let new = urls(&log);
    assert_eq!(new.len(), 10, "{new:#?}");
    assert!(new.iter().all(|u| u.contains("/after/")), "{new:#?}");

    // Under load: requests run while the file is renamed and the signal arrives; every
    // request is in exactly one of the two files.
    let (rotated, first) = (dir_of(&log).join("access.log.2"), rotated);
    std::fs::rename(&log, &rotated).unwrap();
    let sender = {
        let (client, origin_url) = (client.clone(), origin.url("/during/"));
        tokio::spawn(async move {
            for i in 0..200 {
                get_ok(&client, &format!("{origin_url}{i}")).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    proxy.signal("USR1");
    proxy.wait_for_line("access log reopened").await;
    sender.await.unwrap();
    let count = || urls(&rotated).len() + urls(&log).len();
    eventually("all 210 lines written", BOUND, || {
        std::future::ready(count() >= 210)
    })
    .await;
    assert_eq!(
        urls(&first).len(),
        10,
        "the first rotation's file is done with"
    );
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for u in urls(&rotated).into_iter().chain(urls(&log)) {
        *seen.entry(u).or_default() += 1;
    }
    let during: Vec<_> = seen
        .iter()
        .filter(|(u, _)| u.contains("/during/"))
        .collect();
    assert_eq!(during.len(), 200, "every request logged");
    assert!(seen.values().all(|&n| n == 1), "none logged twice");
    // Lines keep their order: in each file the /during/ requests are in sending order.
    for file in [&rotated, &log] {
        let nums: Vec<u32> = urls(file)
            .iter()
            .filter_map(|u| u.split("/during/").nth(1)?.parse().ok())
            .collect();
        assert!(nums.windows(2).all(|w| w[0] < w[1]), "{nums:?}");
    }
    assert_eq!(proxy.terminate().await, Some(0));
}

fn dir_of(p: &Path) -> PathBuf {
    p.parent().unwrap().to_owned()
}

/// Rewrites the config file of `proxy` by `edit`.
fn edit_config(proxy: &ProxyProcess, edit: impl FnOnce(String) -> String) -> PathBuf {
    let path = proxy.dir.path().join("webrep.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    // Replaced by rename, as editors and configuration management do.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, edit(text)).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

/// The first line of the response to `CONNECT authority` sent over a raw socket.
async fn connect_status(proxy: &ProxyProcess, authority: &str) -> String {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut line = String::new();
    tokio::io::BufReader::new(s)
        .read_line(&mut line)
        .await
        .unwrap();
    line.trim_end().to_owned()
}

#[tokio::test]
async fn sighup_applies_live_settings_names_restart_ones_and_refuses_a_broken_file() {
    let systemd = NotifySocket::new();
    let path = systemd.path();
    let origin = Origin::http().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let mut proxy = ProxyProcess::start_yaml(
        dir,
        &config(&log, "json", ""),
        &[("NOTIFY_SOCKET", path.as_os_str())],
    )
    .await;
    assert!(systemd.next().await.starts_with("READY=1"));
    let target = origin.addr.to_string();
    assert!(
        connect_status(&proxy, &target).await.contains(" 403"),
        "the origin's port is not in proxy.connect_ports yet"
    );

    assert!(
        !proxy.lines().iter().any(|l| l.contains("request refused")),
        "a refused CONNECT is logged at debug, and log.level is info"
    );
    // Live: the CONNECT ports, the access log format, the log level. Restart: the listen
    // address.
    edit_config(&proxy, |t| {
        t.replace(
            "  listen: [\"127.0.0.1:0\"]\n",
            &format!(
                "  listen: [\"127.0.0.1:1\"]\n  connect_ports: [443, {}]\n",
                origin.addr.port()
            ),
        )
        .replace("format: json", "format: squid")
        .replace("level: info", "level: debug")
    });
    proxy.signal("HUP");
    assert!(systemd.next().await.starts_with("RELOADING=1"));
    assert_eq!(
        systemd.next().await,
        "READY=1\nSTATUS=policy generation 2 loaded; needs a restart: proxy.listen\n"
    );
    proxy
        .wait_for_line("proxy.listen changed: needs a restart")
        .await;
    proxy
        .wait_logged("proxy.connect_ports changed: applied")
        .await;
    assert!(
        connect_status(&proxy, &target).await.contains(" 200"),
        "the new proxy.connect_ports apply"
    );
    let client = proxy.client();
    get_ok(&client, &origin.url("/squid")).await;
    assert!(connect_status(&proxy, "127.0.0.1:9").await.contains(" 403"));
    proxy.wait_logged("request refused").await;
    eventually("a Squid-format line", BOUND, || {
        std::future::ready(
            lines(&log)
                .iter()
                .any(|l| l.contains(" GET ") && l.contains("/squid") && !l.starts_with('{')),
        )
    })
    .await;

    // A broken file: refused whole (its valid changes too), the error with its place.
    let cfg = edit_config(&proxy, |t| {
        t.replace("format: squid", "format: json")
            .replace("  via_name:", "  not_a_key: 1\n  via_name:")
    });
    proxy.signal("HUP");
    assert!(systemd.next().await.starts_with("RELOADING=1"));
    let status = systemd.next().await;
    assert!(
        status.starts_with(
            "READY=1\nSTATUS=policy generation 3 loaded; config refused, running config kept: "
        ) && status.contains("not_a_key"),
        "{status}"
    );
    let refused = proxy.wait_for_line("config reload refused").await;
    let place = format!("{}:4:3: ", cfg.display());
    assert!(
        refused.contains("not_a_key") && refused.contains(&place),
        "file:line:column ({place}) in {refused}"
    );
    get_ok(&client, &origin.url("/still-squid")).await;
    eventually("the running (Squid) format kept", BOUND, || {
        std::future::ready(
            lines(&log)
                .iter()
                .any(|l| l.contains("/still-squid") && !l.starts_with('{')),
        )
    })
    .await;
    assert!(connect_status(&proxy, &target).await.contains(" 200"));
    assert_eq!(proxy.terminate().await, Some(0));
}

/// Splits an RFC 5424 message into its header fields (PRI+VERSION, TIMESTAMP, HOSTNAME,
/// APP-NAME, PROCID, MSGID), its structured data and its message (after the BOM).
fn rfc5424(frame: &[u8]) -> (Vec<String>, String, serde_json::Value) {
    let bom = frame
        .windows(3)
        .position(|w| w == b"\xEF\xBB\xBF")
        .expect("a BOM before the message");
    let head = std::str::from_utf8(&frame[..bom]).unwrap();
    let mut fields: Vec<String> = head.splitn(7, ' ').map(str::to_owned).collect();
    let sd = fields.pop().unwrap();
    let msg = serde_json::from_slice(&frame[bom + 3..]).unwrap();
    (fields, sd, msg)
}

fn check_frame(frame: &[u8], url: &str, pid: u32) {
    let (f, sd, msg) = rfc5424(frame);
    assert_eq!(f[0], "<134>1", "local0.info, version 1");
    let ts: jiff::Timestamp = f[1].parse().unwrap();
    assert!(f[1].ends_with('Z') && ts > jiff::Timestamp::UNIX_EPOCH);
    assert!(!f[2].is_empty() && !f[2].contains(' '));
    assert_eq!(f[3], "webrep");
    assert_eq!(f[4], pid.to_string());
    assert_eq!(f[5], "access");
    assert!(
        sd.starts_with("[origin software=\"webrep\" swVersion=\"") && sd.ends_with("\"] "),
        "{sd}"
    );
    assert_eq!(msg["url"], url);
    assert_eq!(msg["status"], 200);
}

#[tokio::test]
async fn the_access_log_goes_to_syslog_over_udp_and_a_reload_moves_it_to_a_unix_socket() {
    let origin = Origin::http().await;
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let unix_path = dir.path().join("dev-log");
    let unix = tokio::net::UnixDatagram::bind(&unix_path).unwrap();
    let log = dir.path().join("access.log");
    let syslog = format!(
        "  syslog:\n    enabled: true\n    address: \"{}\"\n",
        udp.local_addr().unwrap()
    );
    let yaml =
        config(&log, "json", "").replace("  format: json\n", &format!("  format: json\n{syslog}"));
    let mut proxy = ProxyProcess::start_yaml(dir, &yaml, &[]).await;
    let pid = proxy.pid();
    let client = proxy.client();
    let mut buf = vec![0u8; 65536];
    get_ok(&client, &origin.url("/over-udp")).await;
    let n = tokio::time::timeout(BOUND, udp.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    check_frame(&buf[..n], &origin.url("/over-udp"), pid);
    assert!(lines(&log).is_empty(), "syslog instead of the file");

    edit_config(&proxy, |t| {
        t.replace(
            &udp.local_addr().unwrap().to_string(),
            &unix_path.display().to_string(),
        )
    });
    proxy.signal("HUP");
    proxy.wait_for_line("access log reopened").await;
    get_ok(&client, &origin.url("/over-unix")).await;
    let n = tokio::time::timeout(BOUND, unix.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    check_frame(&buf[..n], &origin.url("/over-unix"), pid);
    assert_eq!(proxy.terminate().await, Some(0));
}

/// The keys of the table rows (`| \`key\` | ... |`) in `text`.
fn table_keys(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("| `")?.split('`').next().map(str::to_owned))
        .collect()
}

#[test]
fn the_docs_list_the_live_settings_the_code_applies() {
    use webrep::config::live::{PROXY_LIVE, SERVER_LIVE};
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))
        .unwrap();
    let (proxy, server) = doc
        .split_once("`webrep server` (")
        .expect("a section for the server");
    let keys = |t: &[webrep::config::live::LiveKey]| -> Vec<String> {
        t.iter().map(|l| l.key.to_owned()).collect()
    };
    assert_eq!(table_keys(proxy), keys(PROXY_LIVE));
    assert_eq!(table_keys(server), keys(SERVER_LIVE));
}
