//! The systemd units pass `systemd-analyze verify` and rate at most 2.5 in
//! `systemd-analyze security` (`systemd/check.sh`, run against the freshly built binary), and
//! name the exit statuses of a bad configuration in `RestartPreventExitStatus=`.
//! Skipped, saying so, where systemd-analyze is not installed, unless `WEBREP_REQUIRE_SYSTEMD`
//! is set (as `.ci/run`, which installs it, does): then its absence is a failure.

use std::process::Command;

#[test]
fn units_verify_and_rate_ok_in_systemd_analyze_security() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("WEBREP_REQUIRE_SYSTEMD").is_none(),
            "systemd-analyze is missing but WEBREP_REQUIRE_SYSTEMD is set (Debian: apt-get install systemd)"
        );
        eprintln!("SKIPPED: systemd-analyze is not installed (Debian: apt-get install systemd)");
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/check.sh");
    let out = Command::new("sh")
        .arg(script)
        .arg(crate::harness::BIN)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd/check.sh failed:\n{stdout}\n{stderr}"
    );
    for unit in ["webrep-proxy.service", "webrep-server.service"] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(unit))
            .unwrap_or_else(|| panic!("no score for {unit}:\n{stdout}"));
        let score: f64 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
        assert!(score <= 2.5, "{line}");
    }
    eprintln!("{stdout}");
}

#[test]
fn units_do_not_restart_a_service_whose_configuration_is_wrong() {
    use webrep::exit::Exit;
    let want = format!(
        "RestartPreventExitStatus={} {} {}",
        Exit::Usage.code(),
        Exit::NoPerm.code(),
        Exit::Config.code()
    );
    for unit in ["webrep-proxy.service", "webrep-server.service"] {
        let path = format!("{}/systemd/{unit}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("RestartPreventExitStatus="))
            .collect();
        assert_eq!(lines, [want.as_str()], "{unit}");
    }
}
