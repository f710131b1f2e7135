//! The command line as an operator meets it: `check` and `stats` output and exit codes.

use std::process::Command;

use ps_tests::agent_bin;

fn agent(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(agent_bin()).args(args).output().expect("run ps-agent");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn check_prints_the_compiled_matrix() {
    let (code, out, err) = agent(&["check", "--config", "/dev/null"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Avaya Aura Presence Services 8.1.2"));
    assert!(out.contains("ps-14+ps-21            tcp   7001-7199            inbound  eth0"), "{out}");
    assert!(out.contains("ps-06    optional and closed by default"), "{out}");
    assert!(out.contains("27 rules"), "{out}");

    let (code, out, _) = agent(&["check", "--config", "/dev/null", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["rules"].as_array().unwrap().len(), 27);
    assert_eq!(v["skipped"].as_array().unwrap().len(), 5);
}

#[test]
fn check_fails_on_a_bad_config_with_file_line_and_field() {
    let dir = std::env::temp_dir().join("pst-cli");
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("site.toml");
    std::fs::write(&cfg, "mode = \"enforce\"\n\n[rows]\nenable = [\"ps-6\"]\n").unwrap();
    let (code, _, err) = agent(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("{}:4: field `rows.enable`: no row `ps-6`", cfg.display())), "{err}");

    std::fs::write(&cfg, "[[rule]]\nid = \"x\"\ntransport = \"sctp\"\nports = \"1\"\ndirection = \"inbound\"\n")
        .unwrap();
    let (code, _, err) = agent(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("site.toml:3:13: unknown variant `sctp`, expected `tcp` or `udp`"), "{err}");

    let (code, _, err) = agent(&["check", "--config", dir.join("missing.toml").to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("failed to read config") && err.contains("missing.toml"), "{err}");
}

#[test]
fn stats_without_an_agent_says_so() {
    let (code, _, err) = agent(&["--state-dir", "/tmp/pst-nothing-here", "stats"]);
    assert_eq!(code, 1);
    assert!(err.contains("ps-agent is not running"), "{err}");
}

#[test]
fn site_config_example_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../policy/site-example.toml");
    let (code, out, err) = agent(&["check", "--config", example]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\nps-07 ") && out.contains("\nps-08 "), "the example enables MS federation: {out}");
    assert!(out.contains("from Session Manager"), "and binds Session Manager: {out}");
}
