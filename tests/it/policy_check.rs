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
async fn invalid_policy_exits_78_with_positions() {
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
    assert_eq!(out.status.code(), Some(78));
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
    // A missing file is an error too (66: named on the command line, cannot be read), and
    // the usage needs at least one file (64).
    let mut cmd = webrep(["policy", "check"]);
    cmd.arg(dir.path().join("missing.yaml"));
    let out = run_to_end(cmd).await;
    assert_eq!(out.status.code(), Some(66));
    let out = run_to_end(webrep(["policy", "check"])).await;
    assert_eq!(out.status.code(), Some(64));
}

/// Several YAML errors, each a different kind the parser can get past, and a syntax error
/// after them that ends the parse: every one is reported, in line order, in words about the
/// file (no advice about the YAML crate's options).
const MANY_ERRORS: &str = "\
security_level: hihg
untested: allow
rules:
  - id: r1
    action: blok
    match:
      usr: [bob]
      clients: [\"10.0.0.0/8\"]
  - id: r2
    action: block
lists:
  blockd: [\"a.example\"]
rules:
  - id: r3
";

#[tokio::test]
async fn policy_check_reports_every_yaml_error_in_line_order_for_admins() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, MANY_ERRORS).unwrap();
    let mut cmd = webrep(["policy", "check"]);
    cmd.arg(&bad);
    let out = run_to_end(cmd).await;
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let b = bad.display().to_string();
    let want = [
        format!(
            "{b}:1:17: `security_level`: unknown value `hihg`; expected one of high, medium, low"
        ),
        format!(
            "{b}:5:13: `rules[0].action`: unknown value `blok`; expected one of allow, monitor, warn, block"
        ),
        format!("{b}:7:7: unknown key `usr` in `rules[0].match`; did you mean `users`?"),
        format!("{b}:12:3: unknown key `blockd` in `lists`; did you mean `blocked`?"),
        format!("{b}:13:1: duplicate key `rules`, first at line 3"),
    ];
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines, want, "{stderr}");
    assert!(!stderr.contains("DuplicateKeyPolicy"), "{stderr}");

    // A syntax error ends the parse: what came before it is reported, then the syntax error.
    std::fs::write(
        &bad,
        "security_level: hihg\nuntested: [allow\nlists:\n  blockd: []\n",
    )
    .unwrap();
    let mut cmd = webrep(["policy", "check"]);
    cmd.arg(&bad);
    let out = run_to_end(cmd).await;
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(lines[0].starts_with(&format!("{b}:1:17: ")), "{stderr}");
    assert!(lines[1].contains("YAML syntax"), "{stderr}");
}
