//! Operations: `doctor` in a lab namespace, coexistence with other XDP programs
//! (`run --force`), `install` / `uninstall` into a staging root, and `unload` of what a
//! killed agent left behind.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use ps_tests::*;

/// Run the agent binary with `args` inside namespace `ns` (or the caller's when `None`).
fn agent_in(ns: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut c = match ns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/var/run/netns/{ns}")).arg(agent_bin());
            c
        }
        None => Command::new(agent_bin()),
    };
    let out = c.args(args).output().expect("run ps-agent");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// The doctor line for `check`.
fn line<'a>(out: &'a str, check: &str) -> &'a str {
    out.lines()
        .find(|l| l.get(6..).is_some_and(|rest| rest.get(..24).unwrap_or(rest).trim_end() == check))
        .unwrap_or_else(|| panic!("no `{check}` line in:\n{out}"))
}

/// Compile tests/data/xdp_pass.ll into an XDP object with llc (no clang needed).
fn pass_object(tag: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/xdp_pass.ll");
    let dir = PathBuf::from(format!("/tmp/pst-{tag}"));
    fs::create_dir_all(&dir).unwrap();
    let obj = dir.join("xdp_pass.o");
    let llc = ["/usr/lib/llvm-22/bin/llc", "llc-22", "llc"]
        .into_iter()
        .find(|l| Command::new(l).arg("--version").output().is_ok_and(|o| o.status.success()))
        .expect("llc (Debian llvm-22, installed by xtask/setup.sh)");
    sh(&format!("{llc} -march=bpfel -filetype=obj {} -o {}", src.display(), obj.display()));
    obj
}

fn xdp_prog_name(ns: &str, dev: &str) -> Option<String> {
    let out = Command::new("ip").args(["-n", ns, "-d", "-j", "link", "show", "dev", dev]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0]["xdp"]["prog"]["name"].as_str().map(String::from)
}

#[test]
fn doctor_checks_interfaces_drivers_and_other_programs() {
    let lab = Lab::new("od1");
    let (code, out, err) = agent_in(Some(&lab.ps), &["doctor"]);
    assert!(!out.contains("\nfail ") && !out.starts_with("fail "), "nothing fails in the lab:\n{out}{err}");
    assert!(code == 0 || code == 2, "exit 0 (all pass) or 2 (warnings only), got {code}:\n{out}");
    assert_eq!(code == 2, out.lines().any(|l| l.starts_with("warn ")), "exit code 2 exactly when a check warns");
    assert!(line(&out, "kernel").starts_with("pass"), "{out}");
    assert!(line(&out, "bpffs").starts_with("pass"), "{out}");
    assert!(line(&out, "privileges").starts_with("pass"), "tests run as root:\n{out}");
    // The verifier's own answer: the object loads here, with its instruction counts.
    let program = line(&out, "program");
    assert!(
        program.starts_with("pass") && program.contains("`ps_xdp` (") && program.contains("instructions)"),
        "{program}"
    );
    for dev in ["eth0", "eth1"] {
        assert!(line(&out, dev).starts_with("pass  eth"), "{out}");
        assert!(line(&out, &format!("{dev} driver")).contains("pass  ") && out.contains("veth: native XDP"), "{out}");
        assert_eq!(
            line(&out, &format!("{dev} xdp")),
            format!("pass  {dev} xdp{}no XDP program attached", " ".repeat(24 - 8 + 2))
        );
    }

    // Another agent (a bpf_link) on eth1: doctor names it and fails.
    let holder = Agent::start(&lab.ps, "od1h", &["--iface", "eth1"]);
    let (code, out, _) = agent_in(Some(&lab.ps), &["doctor"]);
    assert_eq!(code, 1, "{out}");
    let l = line(&out, "eth1 xdp");
    assert!(l.starts_with("fail"), "{l}");
    assert!(
        l.contains("another XDP program is attached: program id ") && l.contains("`ps_xdp` (native mode, bpf_link id "),
        "{l}"
    );
    assert!(l.contains("a bpf_link cannot be replaced without its link"), "{l}");
    assert!(line(&out, "eth0 xdp").starts_with("pass"), "{out}");
    // --json carries the same verdicts.
    let (code, json, _) = agent_in(Some(&lab.ps), &["doctor", "--json", "-i", "eth1"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["exit_code"], 1);
    let c = v["checks"].as_array().unwrap().iter().find(|c| c["check"] == "eth1 xdp").unwrap();
    assert_eq!(c["status"], "fail");
    drop(holder);

    // A missing interface fails and lists what exists.
    let (code, out, _) = agent_in(Some(&lab.ps), &["doctor", "--iface", "nope0"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        line(&out, "nope0").starts_with("fail  nope0")
            && out.contains("interface `nope0` does not exist; interfaces here: eth0, eth1, lo"),
        "{out}"
    );
}

#[test]
fn force_replaces_a_netlink_program_but_not_a_bpf_link() {
    let lab = Lab::new("of1");
    let obj = pass_object("of1");
    sh(&format!("ip -n {} link set dev eth1 xdpgeneric obj {} sec xdp", lab.ps, obj.display()));
    assert_eq!(xdp_prog_name(&lab.ps, "eth1").as_deref(), Some("other_xdp"));

    // Without --force: refused before anything is attached, the owner named.
    let (mut a, ok) = Agent::spawn(&lab.ps, "of1a", &[], Duration::from_secs(20));
    assert!(!ok);
    assert_eq!(a.stop(), Some(1));
    let log = a.log_text();
    assert!(log.contains("another XDP program is attached to `eth1`: program id "), "{log}");
    assert!(log.contains("`other_xdp` (generic mode, netlink attachment)"), "{log}");
    assert!(log.contains("replace it with `ps-agent run --force`"), "{log}");
    assert!(!xdp_attached(&lab.ps, "eth0"), "nothing attached to eth0");
    assert_eq!(xdp_prog_name(&lab.ps, "eth1").as_deref(), Some("other_xdp"), "the other program is untouched");

    // With --force: replaced, and ps-agent enforces on eth1.
    let mut agent = Agent::start(&lab.ps, "of1b", &["--force"]);
    assert!(agent.log_text().contains("--force: detached program id "), "{}", agent.log_text());
    assert_eq!(xdp_prog_name(&lab.ps, "eth1").as_deref(), Some("ps_xdp"));
    assert_eq!(xdp_prog_name(&lab.ps, "eth0").as_deref(), Some("ps_xdp"));
    assert_eq!(tcp_probe(&lab.b, PS_ETH1_V4, 8080, Duration::from_millis(800)), Probe::TimedOut, "eth1 enforced");
    assert_eq!(tcp_probe(&lab.b, PS_ETH1_V4, 443, Duration::from_secs(3)), Probe::Refused, "443 passes");

    // A bpf_link (this agent) cannot be replaced, even with --force.
    let (mut c, ok) = Agent::spawn(&lab.ps, "of1c", &["--force", "--iface", "eth1"], Duration::from_secs(20));
    assert!(!ok);
    assert_eq!(c.stop(), Some(1));
    let log = c.log_text();
    assert!(
        log.contains("--force replaces only netlink attachments; a bpf_link cannot be replaced without its link"),
        "{log}"
    );
    assert!(log.contains("(native mode, bpf_link id "), "{log}");
    assert_eq!(tcp_probe(&lab.b, PS_ETH1_V4, 8080, Duration::from_millis(800)), Probe::TimedOut, "still enforced");

    assert_eq!(agent.stop(), Some(0));
    assert!(!xdp_attached(&lab.ps, "eth1"), "ps-agent detached on exit (the replaced program is gone for good)");
}

#[test]
fn install_uninstall_into_a_staging_root() {
    let root = PathBuf::from("/tmp/pst-oi1-root");
    let _ = fs::remove_dir_all(&root);
    let r = root.to_str().unwrap();
    let (code, out, err) = agent_in(None, &["install", "--root", r]);
    assert_eq!(code, 0, "{out}{err}");
    let bin = root.join("usr/local/sbin/ps-agent");
    let cfg = root.join("etc/ps-agent/config.toml");
    let unit = root.join("etc/systemd/system/ps-agent.service");
    let wants = root.join("etc/systemd/system/multi-user.target.wants/ps-agent.service");
    assert_eq!(fs::read(&bin).unwrap(), fs::read(agent_bin()).unwrap(), "the binary is a copy of the running one");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(fs::metadata(&bin).unwrap().permissions().mode() & 0o777, 0o755);
    assert_eq!(fs::read_link(&wants).unwrap(), Path::new("/etc/systemd/system/ps-agent.service"), "enabled");
    assert!(out.contains("systemd is not running here (or --root was given)"), "{out}");

    // The default config is valid, dry-run, and the shipped matrix with its defaults.
    let (code, check, err) = agent_in(None, &["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(check.contains("mode:       dry-run"), "{check}");
    assert!(check.contains("27 rules") && !check.contains("site-snmp"), "example rules stay commented out: {check}");

    let u = fs::read_to_string(&unit).unwrap();
    assert!(u.contains("ExecStart=/usr/local/sbin/ps-agent run --config /etc/ps-agent/config.toml\n"), "{u}");
    for k in [
        "Type=simple",
        "Restart=on-failure",
        "CapabilityBoundingSet=CAP_BPF CAP_NET_ADMIN CAP_PERFMON\n",
        "ProtectSystem=strict",
        "ReadWritePaths=/sys/fs/bpf",
        "RuntimeDirectory=ps-agent",
        "NoNewPrivileges=yes",
        "RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6",
        "MemoryDenyWriteExecute=yes",
    ] {
        assert!(u.contains(k), "unit lacks {k}:\n{u}");
    }

    // systemd-analyze verifies the unit; the paths are relocated into the staging root so
    // the ExecStart binary exists (the content is otherwise the same).
    let vdir = root.join("verify");
    fs::create_dir_all(&vdir).unwrap();
    let relocated = u
        .replace("/usr/local/sbin/ps-agent", bin.to_str().unwrap())
        .replace("/etc/ps-agent/config.toml", cfg.to_str().unwrap());
    fs::write(vdir.join("ps-agent.service"), relocated).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(vdir.join("ps-agent.service")).output();
    match out {
        Ok(o) => {
            let e = String::from_utf8_lossy(&o.stderr);
            assert!(o.status.success() && !e.contains("ps-agent.service"), "systemd-analyze verify: {e}");
            let sec = Command::new("systemd-analyze")
                .args(["security", "--offline=true", "--threshold=45"])
                .arg(vdir.join("ps-agent.service"))
                .output()
                .unwrap();
            assert!(sec.status.success(), "exposure above 4.5:\n{}", String::from_utf8_lossy(&sec.stdout));
        }
        Err(e) => panic!("systemd-analyze is missing ({e}): xtask/setup.sh installs the `systemd` package"),
    }

    // An existing config is never overwritten.
    fs::write(&cfg, "mode = \"enforce\"\n# mine\n").unwrap();
    let (code, out, _) = agent_in(None, &["install", "--root", r, "--no-enable"]);
    assert_eq!(code, 0);
    assert!(out.contains("kept the existing config"), "{out}");
    assert_eq!(fs::read_to_string(&cfg).unwrap(), "mode = \"enforce\"\n# mine\n");

    // Uninstall: binary, unit, enable link, stale pins and state go; the config stays.
    let pins = root.join("sys/fs/bpf/ps-agent");
    fs::create_dir_all(&pins).unwrap();
    fs::write(pins.join("PS_STATE"), "").unwrap();
    fs::create_dir_all(root.join("run/ps-agent")).unwrap();
    fs::write(root.join("run/ps-agent/state.json"), stale_state(&pins)).unwrap();
    let (code, out, err) = agent_in(None, &["uninstall", "--root", r]);
    assert_eq!(code, 0, "{out}{err}");
    for p in [&bin, &unit, &wants, &pins, &root.join("run/ps-agent/state.json")] {
        assert!(!p.exists() && !p.is_symlink(), "{} not removed:\n{out}", p.display());
    }
    assert!(cfg.exists() && out.contains("(remove it with --purge)"), "{out}");
    let (code, _, _) = agent_in(None, &["uninstall", "--root", r, "--purge"]);
    assert_eq!(code, 0);
    assert!(!root.join("etc/ps-agent").exists());
    let _ = fs::remove_dir_all(&root);
}

/// A state file of an agent that is not running (pid 0 is never alive).
fn stale_state(pin_dir: &Path) -> String {
    serde_json::json!({
        "version": "0.1.0", "pid": 0, "started_unix": 0, "pin_dir": pin_dir, "product": "x",
        "policy": "x", "fingerprint": "x", "rules_cap": 64, "management_interface": "eth0",
        "interfaces": [], "rules": []
    })
    .to_string()
}

#[test]
fn unload_removes_what_a_killed_agent_left() {
    let lab = Lab::new("ou1");
    let agent = Agent::start(&lab.ps, "ou1", &["--iface", "eth0"]);
    let pin = agent.pin_dir.to_str().unwrap().to_string();
    let state = agent.state_dir.to_str().unwrap().to_string();
    let dirs = ["--pin-dir", &pin, "--state-dir", &state];

    // While the agent runs, unload refuses.
    let (code, _, err) = agent_in(Some(&lab.ps), &[&dirs[..], &["unload"]].concat());
    assert_eq!(code, 1);
    assert!(err.contains("is still running") && err.contains("--force"), "{err}");
    assert!(agent.pin_dir.join("PS_STATE").exists());

    // SIGKILL: no clean-up. The bpf_link dies with the process; pins and state stay.
    let v: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(agent.state_dir.join("state.json")).unwrap()).unwrap();
    let pid = v["pid"].as_i64().unwrap() as i32;
    // SAFETY: killing the agent this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(500));
    assert!(!xdp_attached(&lab.ps, "eth0"), "bpf_link detached with the process");
    assert!(agent.pin_dir.join("PS_RULE_CNT").exists() && agent.state_dir.join("state.json").exists());

    let (code, out, err) = agent_in(Some(&lab.ps), &[&dirs[..], &["unload"]].concat());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("unpinned {pin}/PS_RULE_CNT")), "{out}");
    assert!(!agent.pin_dir.exists(), "pin dir removed");
    assert!(!agent.state_dir.join("state.json").exists(), "state removed");
    let (code, out, _) = agent_in(Some(&lab.ps), &[&dirs[..], &["unload"]].concat());
    assert_eq!(code, 0);
    assert!(out.contains("nothing to unload"), "{out}");

    // Never the whole bpffs.
    let (code, _, err) =
        agent_in(Some(&lab.ps), &["--pin-dir", "/sys/fs/bpf", "--state-dir", &state, "unload", "--force"]);
    assert_eq!(code, 1);
    assert!(err.contains("refusing to empty a top-level directory"), "{err}");
}
