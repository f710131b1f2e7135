//! The command line as an operator meets it: `check` and `stats` output and exit codes.

use std::process::Command;

use ps_tests::{agent_bin, prefix, scratch};

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
    let (code, _, err) = agent(&["--state-dir", scratch("nothing-here").to_str().unwrap(), "stats"]);
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

/// Run `ps-agent ARGS` with stdout a pipe whose reader is already gone (`ps-agent check |
/// true`, `... | head -1`): the output ends quietly, without a panic.
fn with_closed_stdout(args: &[&str]) -> (Option<i32>, String) {
    use std::os::fd::{FromRawFd as _, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: pipe writes two new descriptors into `fds`.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors are ours; the read end is closed at once.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    let out = Command::new(agent_bin()).args(args).stdout(write).output().expect("run ps-agent");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    for args in [&["check", "--config", "/dev/null"][..], &["check", "--config", "/dev/null", "--json"], &["--help"]] {
        let (code, err) = with_closed_stdout(args);
        assert!(!err.contains("panicked") && code != Some(101), "{args:?}: exit {code:?}: {err}");
    }
}

#[test]
fn version_names_the_commit_and_the_embedded_object() {
    let (code, out, _) = agent(&["--version"]);
    assert_eq!(code, 0);
    // `ps-agent 0.1.0 (commit 0123456789ab, ebpf 0123456789ab)`
    let rest = out
        .trim()
        .strip_prefix(concat!("ps-agent ", env!("CARGO_PKG_VERSION"), " (commit "))
        .unwrap_or_else(|| panic!("`{out}` does not start with the name and version"));
    let (commit, ebpf) = rest.strip_suffix(')').and_then(|r| r.split_once(", ebpf ")).expect("commit and ebpf");
    let git = Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output();
    let head = match git {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => "unknown".to_string(),
    };
    assert_eq!(commit, head, "the commit of this checkout (a stale binary? `cargo build -p ps-agent`)");
    assert!(ebpf.len() == 12 && ebpf.bytes().all(|b| b.is_ascii_hexdigit()), "a hash of the object: `{ebpf}`");
}

/// Run the agent with stderr into `file`, and `JOURNAL_STREAM` set to `stream` (or to the
/// file's own device and inode, as systemd sets it, when `None`); returns stderr.
fn stderr_with_journal_stream(args: &[&str], file: &std::path::Path, stream: Option<&str>) -> String {
    use std::os::unix::fs::MetadataExt as _;
    let f = std::fs::File::create(file).unwrap();
    let meta = f.metadata().unwrap();
    let ours = format!("{}:{}", meta.dev(), meta.ino());
    let status = Command::new(agent_bin())
        .args(args)
        .env("JOURNAL_STREAM", stream.unwrap_or(&ours))
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(f)
        .status()
        .expect("run ps-agent");
    assert!(status.code().is_some());
    std::fs::read_to_string(file).unwrap()
}

#[test]
fn under_journald_lines_carry_priorities_and_no_timestamp() {
    let dir = scratch("journal");
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("stderr");
    let aes = concat!(env!("CARGO_MANIFEST_DIR"), "/../policy/testdata/aes-like.txt");

    // A warning and info lines (`--allow-partial` leaves two rows out).
    let err = stderr_with_journal_stream(&["matrix", "import", aes, "--allow-partial"], &log, None);
    let warn = err.lines().find(|l| l.contains("--allow-partial: 2 rows left out")).unwrap_or_else(|| panic!("{err}"));
    assert!(warn.starts_with("<4>--allow-partial"), "{warn}");
    let info = err.lines().find(|l| l.contains("rows from")).unwrap_or_else(|| panic!("{err}"));
    assert!(info.starts_with("<6>"), "{info}");
    // journald stamps entries itself: no `[2026-... INFO ]` header.
    assert!(!err.contains(" INFO ") && !err.contains(" WARN "), "{err}");

    // The final error of a failed command.
    let missing = dir.join("missing.toml");
    let err = stderr_with_journal_stream(&["check", "--config", missing.to_str().unwrap()], &log, None);
    assert!(err.lines().next().is_some_and(|l| l.starts_with("<3>error: failed to read config")), "{err}");
    assert!(err.lines().skip(1).all(|l| l.starts_with("<3>")), "every line of the error: {err}");

    // JOURNAL_STREAM inherited, but stderr is another file: the usual format.
    let err = stderr_with_journal_stream(&["matrix", "import", aes, "--allow-partial"], &log, Some("1:1"));
    assert!(err.lines().any(|l| l.contains(" WARN ") && l.contains("--allow-partial")), "{err}");
    assert!(!err.contains("<4>") && !err.contains("<6>"), "{err}");
}

/// The exit codes, as the README documents them: 0 done, 1 failed, 2 usage error,
/// 3 done with warnings.
#[test]
fn exit_codes_tell_usage_errors_failures_and_warnings_apart() {
    assert_eq!(agent(&["check", "--config", "/dev/null"]).0, 0, "done");
    assert_eq!(agent(&["stats", "--bogus"]).0, 2, "a usage error");
    assert_eq!(agent(&["enforce", "--confirm-within", "soon"]).0, 2, "a value the flag does not take");
    let (code, _, err) = agent(&["--state-dir", scratch("exit-codes").to_str().unwrap(), "stats"]);
    assert_eq!(code, 1, "a failure: {err}");
    // Warnings only: `lo` has no driver ethtool can name; in a namespace of its own,
    // nothing else about it can fail.
    let ns = format!("{}-exit", prefix());
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    assert!(Command::new("ip").args(["netns", "add", &ns]).status().unwrap().success());
    let out = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{ns}"))
        .arg(agent_bin())
        .args(["doctor", "--iface", "lo"])
        .output()
        .unwrap();
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.lines().any(|l| l.starts_with("fail ")), "{text}");
    assert_eq!(out.status.code(), Some(3), "warnings only:\n{text}");
}
