//! What the Debian package and the README's Install rely on, run through the real binary:
//! which configuration file `webrep proxy` reads when none is named (`--config`, then
//! `WEBREP_CONFIG`, then `/etc/webrep/webrep.yaml` when it exists, here redirected with
//! `WEBREP_DEFAULT_CONFIG_DIR`, then the built-in defaults) and that it logs it; and the
//! manual pages and shell completions `webrep generate` writes for the package.

use std::path::Path;

use crate::harness::*;

/// A config file in `dir` that the proxy can run with (a free port, text logs, the policy
/// and reputation source chosen as the harness does).
fn write_config(dir: &Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        with_choices(&format!("{BASE}log:\n  level: info\n  format: text\n")),
    )
    .unwrap();
    path
}

/// `webrep proxy` without --config, looking for its default file in `dir`.
fn proxy_with_default_dir(dir: &Path) -> tokio::process::Command {
    let mut cmd = webrep(["proxy"]);
    cmd.env("WEBREP_DEFAULT_CONFIG_DIR", dir).current_dir(dir);
    cmd
}

#[tokio::test]
async fn without_config_the_default_file_is_read_when_it_exists_and_logged() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(dir.path(), "webrep.yaml");
    let mut proxy = Webrep::spawn(proxy_with_default_dir(dir.path()));
    let read = proxy
        .next_line_where("the configuration it read", |l| {
            l.contains("configuration read")
        })
        .await
        .expect("the proxy logs which configuration it read");
    assert!(read.contains(&file.display().to_string()), "{read}");
    // The file's `listen: 127.0.0.1:0` applies, not the built-in 127.0.0.1:3128.
    let listen = proxy.wait_field(&["listen.addr="]).await.expect("running");
    assert!(!listen.ends_with(":3128"), "{listen}");
}

#[tokio::test]
async fn a_broken_default_file_is_an_error_naming_it_not_a_silent_fallback() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("webrep.yaml"), "proxy:\n  lisen: oops\n").unwrap();
    let out = run_to_end(proxy_with_default_dir(dir.path())).await;
    assert_eq!(out.status.code(), Some(78), "a configuration problem");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("webrep.yaml") && err.contains("lisen"),
        "{err}"
    );
}

#[tokio::test]
async fn config_and_webrep_config_win_over_the_default_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("webrep.yaml"), "proxy:\n  lisen: default\n").unwrap();
    let named = dir.path().join("named.yaml");
    std::fs::write(&named, "proxy:\n  lisn: named\n").unwrap();

    let mut cmd = proxy_with_default_dir(dir.path());
    cmd.arg("--config").arg(&named);
    let out = run_to_end(cmd).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("named.yaml") && err.contains("lisn"), "{err}");

    let mut cmd = proxy_with_default_dir(dir.path());
    cmd.env("WEBREP_CONFIG", &named);
    let out = run_to_end(cmd).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("named.yaml") && err.contains("lisn"), "{err}");
}

#[tokio::test]
async fn without_any_file_the_built_in_defaults_apply_and_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = proxy_with_default_dir(&dir.path().join("absent"));
    cmd.current_dir(dir.path());
    let mut proxy = Webrep::spawn(cmd);
    let line = proxy
        .next_line_where("the defaults line", |l| {
            l.contains("configuration read") || l.contains("built-in defaults")
        })
        .await
        .expect("the proxy says what it runs on");
    assert!(line.contains("built-in defaults"), "{line}");
}

#[tokio::test]
async fn generate_man_writes_roff_pages_for_the_visible_commands() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = webrep(["generate", "man"]);
    cmd.arg(dir.path().join("man1"));
    let out = run_to_end(cmd).await;
    assert!(out.status.success(), "{out:?}");
    let page = std::fs::read_to_string(dir.path().join("man1/webrep.1")).unwrap();
    assert!(page.contains(".TH webrep 1"), "{page}");
    assert!(page.contains("/etc/webrep/webrep.yaml"), "{page}");
    let proxy = std::fs::read_to_string(dir.path().join("man1/webrep-proxy.1")).unwrap();
    assert!(proxy.contains("\\-\\-config"), "{proxy}");
    assert!(!dir.path().join("man1/webrep-generate.1").exists());
    // The help that lists the commands does not show the packaging helper.
    let out = run_to_end(webrep(["--help"])).await;
    assert!(!String::from_utf8_lossy(&out.stdout).contains("generate"));
}

#[tokio::test]
async fn generate_completions_gives_a_script_bash_loads() {
    let out = run_to_end(webrep(["generate", "completions", "bash"])).await;
    assert!(out.status.success(), "{out:?}");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("webrep.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    let loaded = std::process::Command::new("bash")
        .arg("-c")
        .arg(r#"source "$1" && complete -p webrep"#)
        .arg("bash")
        .arg(&script)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&loaded.stdout);
    assert!(
        loaded.status.success() && said.contains("_webrep"),
        "{loaded:?}"
    );
    let out = run_to_end(webrep(["generate", "completions", "no-such-shell"])).await;
    assert_eq!(out.status.code(), Some(64), "a usage error: {out:?}");
}
