//! Exit statuses of the real binary, one class at a time (`webrep::exit::Exit` holds the
//! table): each command ends with the sysexits status of what went wrong, and `--help` lists
//! them.

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::harness::{run_to_end, webrep};

/// Runs `webrep ARGS`; (status, stdout, stderr).
async fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = webrep(args);
    cmd.envs(env.iter().copied());
    let out = run_to_end(cmd).await;
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A one-shot HTTP server on 127.0.0.1:0 that answers every request with `response`.
async fn answering(response: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(response.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn usage_errors_exit_64_and_help_lists_every_status() {
    let (code, out, _) = run(&["--help"], &[]).await;
    assert_eq!(code, 0);
    for line in [
        "64  bad command line",
        "65  bad input data",
        "78  bad configuration",
    ] {
        assert!(out.contains(line), "{line}: {out}");
    }
    let (code, _, err) = run(&["proxy", "--no-such-option"], &[]).await;
    assert_eq!(code, 64, "clap's own usage error, not its 2: {err}");
    let (code, _, err) = run(&["lookup"], &[]).await;
    assert_eq!(code, 64, "{err}");
    let (code, _, err) = run(&["lookup", "http://a.test/"], &[("WEBREP_TOKEN", "")]).await;
    assert_eq!(code, 64, "no token: {err}");
}

#[tokio::test]
async fn bad_input_exits_65_and_an_unreadable_input_file_66() {
    let (code, _, err) = run(&["url", "mailto:someone@example.com"], &[]).await;
    assert_eq!(code, 65, "{err}");
    let (code, _, err) = run(&["policy", "check", "/nonexistent/policy.yaml"], &[]).await;
    assert_eq!(code, 66, "{err}");
    let (code, _, err) = run(&["config", "check", "/nonexistent/webrep.yaml"], &[]).await;
    assert_eq!(code, 66, "{err}");
    let (code, _, err) = run(
        &[
            "lookup",
            "--token-file",
            "/nonexistent/token",
            "http://a.test/",
        ],
        &[],
    )
    .await;
    assert_eq!(code, 66, "{err}");
}

#[tokio::test]
async fn server_failures_exit_69_76_and_77() {
    let token = [("WEBREP_TOKEN", "client-token-0123456789")];
    // Nothing listens on port 1.
    let (code, _, err) = run(
        &["lookup", "--server", "http://127.0.0.1:1", "http://a.test/"],
        &token,
    )
    .await;
    assert_eq!(code, 69, "unreachable: {err}");
    let failing = answering("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n").await;
    let (code, _, err) = run(&["lookup", "--server", &failing, "http://a.test/"], &token).await;
    assert_eq!(code, 69, "5xx: {err}");
    let html =
        answering("HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 6\r\n\r\n<html>")
            .await;
    let (code, _, err) = run(&["lookup", "--server", &html, "http://a.test/"], &token).await;
    assert_eq!(code, 76, "not the API: {err}");
    let refused = answering(
        "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: 17\r\n\r\n{\"error\":\"token\"}",
    )
    .await;
    let (code, _, err) = run(&["lookup", "--server", &refused, "http://a.test/"], &token).await;
    assert_eq!(code, 77, "token refused: {err}");
}

#[tokio::test]
async fn an_output_that_cannot_be_created_exits_73_and_a_bad_config_78() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let under_a_file = file.join("ca").display().to_string();
    let (code, _, err) = run(&["ca", "init", "--dir", &under_a_file], &[]).await;
    assert_eq!(code, 73, "{err}");
    let cfg = dir.path().join("webrep.yaml");
    std::fs::write(&cfg, "proxy:\n  listen: [\"nonsense\"]\n").unwrap();
    let c = cfg.display().to_string();
    for args in [
        &["config", "check", &c][..],
        &["proxy", "--config", &c][..],
        &["server", "--config", &c][..],
    ] {
        let (code, _, err) = run(args, &[]).await;
        assert_eq!(code, 78, "{args:?}: {err}");
        assert!(
            err.contains(&format!("{c}:2:3: proxy.listen: ")),
            "{args:?}: {err}"
        );
    }
}

/// A server that cannot be reached is named in the error (exit 69).
#[tokio::test]
async fn an_unreachable_server_is_named() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let token = ("WEBREP_TOKEN", "client-token-0123456789");
    for args in [
        &["lookup", "--server", &url, "http://a.test/"][..],
        &[
            "lookup",
            "--server",
            &url,
            "http://a.test/",
            "http://b.test/",
        ],
        &["feedback", "escalations", "--server", &url],
    ] {
        let (code, _, err) = run(args, &[token]).await;
        assert_eq!(code, 69, "{args:?}: {err}");
        assert!(
            err.contains(&format!("error: cannot reach the server {url}: ")),
            "{args:?}: {err}"
        );
    }
}

/// `webrep url` takes an argument that is not UTF-8 (the Safe Browsing case) and standard
/// input, one URL per line; a line that is not a URL exits 65.
#[tokio::test]
async fn url_takes_raw_bytes_from_arguments_and_standard_input() {
    use std::os::unix::ffi::OsStrExt as _;
    let arg = std::ffi::OsStr::from_bytes(b"http://\x01\x80.com/");
    let out = run_to_end(webrep([std::ffi::OsStr::new("url"), arg])).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stdout.starts_with(b"http://%01%80.com/\n"), "{out:?}");
    for args in [&["url"][..], &["url", "-"]] {
        let mut child = webrep(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"http://\x01\x80.com/\nHTTP://A.test/\n")
            .await
            .unwrap();
        drop(stdin);
        let out = child.wait_with_output().await.unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "http://%01%80.com/\n%01%80.com/\n\nhttp://a.test/\na.test/\n"
        );
        let mut child = webrep(args)
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"http://a.test/\nnot a url\n")
            .await
            .unwrap();
        drop(stdin);
        let out = child.wait_with_output().await.unwrap();
        assert_eq!(out.status.code(), Some(65), "{out:?}");
        assert!(
            out.stderr.starts_with(b"error: line 2: not a url"),
            "{out:?}"
        );
    }
}
