//! `webrep policy check` through the real binary: every shipped policy passes, and an
//! invalid one fails with `file:line:column: message` lines.

use std::path::PathBuf;

use crate::harness::{run_to_end, webrep};

fn shipped_policies() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn every_file_under_policies_passes_policy_check() {
    let files = shipped_policies();
    let names: Vec<String> = files
        .iter()
        .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
        .collect();
    for required in ["default.yaml", "strict.yaml", "example.yaml"] {
        assert!(
            names.iter().any(|n| n == required),
            "{required} missing: {names:?}"
        );
    }
    for file in &files {
        let mut cmd = webrep(["policy", "check"]);
        cmd.arg(file);
        let out = run_to_end(cmd).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}: {}{stdout}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(": ok: security_level"), "{stdout}");
    }
}

#[tokio::test]
async fn invalid_policy_exits_1_with_positions() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&good, "security_level: low\n").unwrap();
    std::fs::write(
        &bad,
        "lists:\n  blocked: [\"example.*\"]\nrules:\n  - id: r1\n    match:\n      clients: [\"10.0.0.0/40\"]\n",
    )
    .unwrap();
    let mut cmd = webrep(["policy", "check"]);
    cmd.arg(&good);
    cmd.arg(&bad);
    let out = run_to_end(cmd).await;
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("good.yaml: ok: security_level low"),
        "{stdout}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    let b = bad.display().to_string();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with(&format!("{b}:2:13: lists.blocked: `example.*`")),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with(&format!("{b}:6:17: rule `r1`: match.clients:")),
        "{stderr}"
    );
    // A missing file is an error too, and the usage needs at least one file.
    let mut cmd = webrep(["policy", "check"]);
    cmd.arg(dir.path().join("missing.yaml"));
    let out = run_to_end(cmd).await;
    assert_eq!(out.status.code(), Some(1));
    let out = run_to_end(webrep(["policy", "check"])).await;
    assert!(!out.status.success());
}
