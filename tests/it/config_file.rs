//! The annotated example config documents every key with its default value; `webrep config
//! check` reports every problem of a config and of the files it names; a config file must name
//! its policy and its reputation source.

use webrep::config::RawConfig;

fn key_paths(v: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
    if let serde_json::Value::Object(m) = v {
        for (k, v) in m {
            let p = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            out.push(p.clone());
            key_paths(v, &p, out);
        }
    }
}

#[test]
fn example_config_has_every_key_with_its_default() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/webrep.example.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    // It parses (unknown keys would fail) and equals the built-in defaults...
    let parsed: RawConfig = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(
        parsed,
        RawConfig::default(),
        "example and defaults disagree"
    );
    // ...and spells out every key, so nothing is undocumented.
    let as_value: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    let mut have = Vec::new();
    key_paths(&as_value, "", &mut have);
    let mut want = Vec::new();
    key_paths(
        &serde_json::to_value(RawConfig::default()).unwrap(),
        "",
        &mut want,
    );
    let missing: Vec<_> = want.iter().filter(|k| !have.contains(k)).collect();
    assert!(
        missing.is_empty(),
        "keys missing from the example: {missing:?}"
    );
    webrep::config::Config::load(Some(std::path::Path::new(path))).unwrap();
}

/// `webrep config check FILE` through the real binary: (exit status, stdout, stderr lines).
async fn config_check(args: &[&str], file: &std::path::Path) -> (i32, String, Vec<String>) {
    let mut cmd = crate::harness::webrep(["config", "check"]);
    cmd.args(args).arg(file);
    let out = crate::harness::run_to_end(cmd).await;
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .map(str::to_owned)
            .collect(),
    )
}

#[tokio::test]
async fn config_check_reports_every_problem_of_the_files_the_config_names() {
    use webrep::intercept::ca;
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).display().to_string();
    std::fs::write(
        d("policy.yaml"),
        "security_level: hihg\nlists:\n  blockd: []\n",
    )
    .unwrap();
    std::fs::write(d("users"), "# users\nalice:not-a-hash\n").unwrap();
    std::fs::write(d("groups"), "staff: alice\nfinance bob\n").unwrap();
    // A CA whose key is another CA's: both files there and readable, but they do not match.
    ca::init(&dir.path().join("ca"), &ca::InitOptions::default()).unwrap();
    ca::init(&dir.path().join("other"), &ca::InitOptions::default()).unwrap();
    std::fs::copy(
        dir.path().join("other").join(ca::KEY_FILE),
        dir.path().join("ca").join(ca::KEY_FILE),
    )
    .unwrap();
    let cfg = dir.path().join("webrep.yaml");
    std::fs::write(
        &cfg,
        format!(
            "proxy:\n  listen: [\"127.0.0.1:0\"]\n\
             policy:\n  file: {policy:?}\n\
             auth:\n  users_file: {users:?}\n  groups_file: {groups:?}\n\
             intercept:\n  enabled: true\n  ca_dir: {ca:?}\n  upstream_ca_file: {upca:?}\n\
             admin:\n  token_file: {token:?}\n\
             reputation:\n  sources:\n    - url: \"http://127.0.0.1:8480\"\n      token_file: {token:?}\n",
            policy = d("policy.yaml"),
            users = d("users"),
            groups = d("groups"),
            ca = d("ca"),
            upca = d("missing-ca.pem"),
            token = d("missing-token"),
        ),
    )
    .unwrap();
    let (code, _, lines) = config_check(&[], &cfg).await;
    assert_eq!(code, 78, "{lines:#?}");
    let c = cfg.display().to_string();
    // In the order of the keys that name the files; each file's own problems at their own
    // positions, the others at the key's.
    let want_starts = [
        format!(
            "{}:1:17: `security_level`: unknown value `hihg`",
            d("policy.yaml")
        ),
        format!(
            "{}:3:3: unknown key `blockd` in `lists`; did you mean `blocked`?",
            d("policy.yaml")
        ),
        format!("{}:2:1: ", d("users")),
        format!("{}:2:1: expected `group: user user ...`", d("groups")),
        format!("{c}:10:3: intercept.ca_dir {}: ", d("ca")),
        format!("{c}:11:3: intercept.upstream_ca_file "),
        format!(
            "{c}:13:3: cannot read admin.token_file {}",
            d("missing-token")
        ),
        format!(
            "{c}:17:7: cannot read reputation.sources[0].token_file {}",
            d("missing-token")
        ),
    ];
    assert_eq!(lines.len(), want_starts.len(), "{lines:#?}");
    for (line, want) in lines.iter().zip(&want_starts) {
        assert!(line.starts_with(want.as_str()), "{line}\n  wanted {want}");
    }
    assert!(lines[4].contains("does not belong to"), "{}", lines[4]);

    // Fixed, it is fine; `--for server` checks what the server reads instead.
    std::fs::write(d("policy.yaml"), "security_level: high\n").unwrap();
    std::fs::remove_file(d("users")).unwrap();
    let fixed = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(&format!("  users_file: {:?}\n", d("users")), "")
        .replace(
            &format!("  upstream_ca_file: {:?}\n", d("missing-ca.pem")),
            "",
        )
        .replace("finance bob", "finance: bob");
    std::fs::write(d("groups"), "staff: alice\nfinance: bob\n").unwrap();
    std::fs::write(d("missing-token"), "client-token-0123456789\n").unwrap();
    ca::init(
        &dir.path().join("ca"),
        &ca::InitOptions {
            force: true,
            ..Default::default()
        },
    )
    .unwrap();
    std::fs::write(&cfg, fixed).unwrap();
    let (code, out, lines) = config_check(&[], &cfg).await;
    assert_eq!(
        (code, out.trim()),
        (0, format!("{c}: ok (checked for webrep proxy)").as_str()),
        "{lines:#?}"
    );
    let (code, _, lines) = config_check(&["--for", "server"], &cfg).await;
    assert_eq!(code, 78, "{lines:#?}");
    assert!(lines[0].contains("server: no API tokens"), "{lines:#?}");
}

#[tokio::test]
async fn a_config_file_must_name_its_policy_and_reputation_source() {
    // The shipped example names neither: the check and the proxy both refuse it, at the keys.
    let example = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/webrep.example.yaml"
    ));
    let text = std::fs::read_to_string(example).unwrap();
    let line_of = |key: &str| {
        1 + text
            .lines()
            .position(|l| l.trim_start().starts_with(key))
            .unwrap()
    };
    let (code, _, lines) = config_check(&["--for", "proxy"], example).await;
    assert_eq!(code, 78, "{lines:#?}");
    let e = example.display().to_string();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(
        lines[0].starts_with(&format!(
            "{e}:{}:3: policy.file: no policy named",
            line_of("file: null")
        )),
        "{lines:#?}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "{e}:{}:3: reputation.sources: no reputation source",
            line_of("sources: []")
        )),
        "{lines:#?}"
    );
    let mut cmd = crate::harness::webrep(["proxy", "--config"]);
    cmd.arg(example);
    let out = crate::harness::run_to_end(cmd).await;
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("policy.file: no policy named")
            && err.contains("reputation.sources: no reputation source"),
        "{err}"
    );

    // Saying so explicitly is enough; saying both is a contradiction.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("webrep.yaml");
    std::fs::write(
        &cfg,
        "policy:\n  builtin: default\nreputation:\n  embedded_sample: true\n",
    )
    .unwrap();
    let (code, _, lines) = config_check(&[], &cfg).await;
    assert_eq!(code, 0, "{lines:#?}");
    std::fs::write(
        &cfg,
        "policy:\n  file: p.yaml\n  builtin: default\nreputation:\n  embedded_sample: true\n  sources: [{ url: \"http://127.0.0.1:1\", token: \"client-token-0123456789\" }]\n",
    )
    .unwrap();
    let (code, _, lines) = config_check(&[], &cfg).await;
    assert_eq!(code, 78, "{lines:#?}");
    let c = cfg.display().to_string();
    assert_eq!(
        lines,
        [
            format!("{c}:3:3: policy.builtin: give policy.file or policy.builtin, not both"),
            format!(
                "{c}:5:3: reputation.embedded_sample: give reputation.sources or embedded_sample: true, not both"
            ),
        ],
    );
    // A plain forward proxy needs neither.
    std::fs::write(&cfg, "policy:\n  enabled: false\n").unwrap();
    let (code, _, lines) = config_check(&[], &cfg).await;
    assert_eq!(code, 0, "{lines:#?}");
}

#[test]
fn without_a_config_file_the_quick_start_picks_the_shipped_policy_and_the_sample_server() {
    // The tests run in the source tree, where policies/default.yaml is.
    let c = webrep::config::Config::load(None).unwrap();
    assert_eq!(
        c.policy.source,
        Some(webrep::config::PolicySource::File(
            webrep::config::QUICK_START_POLICY.into()
        ))
    );
    assert!(c.reputation.embedded_sample && c.reputation.sources.is_empty());
    assert!(c.proxy_problems().is_empty());
    // The same defaults from a file are refused: a config file must choose.
    let from_file = webrep::config::Config::from_yaml("", "empty.yaml").unwrap();
    let problems: Vec<String> = from_file
        .proxy_problems()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].starts_with("empty.yaml:0:0: policy.file: no policy named"),
        "{problems:?}"
    );
}
