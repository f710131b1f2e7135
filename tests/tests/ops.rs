//! Operations: `doctor` in a lab namespace, coexistence with other XDP programs
//! (`run --force`), `install` / `uninstall` into a staging root, and `unload` of what a
//! killed agent left behind.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use ps_agent::policy::config::Mode;
use ps_common::names;
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
    let dir = scratch(tag);
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
    assert!(code == 0 || code == 3, "exit 0 (all pass) or 3 (warnings only), got {code}:\n{out}");
    assert_eq!(code == 3, out.lines().any(|l| l.starts_with("warn ")), "exit code 3 exactly when a check warns");
    assert!(line(&out, "kernel").starts_with("pass"), "{out}");
    // A world-writable bpffs (a plain `mount -t bpf`) warns; setup.sh mounts it 0700.
    let open =
        std::os::unix::fs::PermissionsExt::mode(&fs::metadata("/sys/fs/bpf").unwrap().permissions()) & 0o002 != 0;
    assert!(line(&out, "bpffs").starts_with(if open { "warn" } else { "pass" }), "{out}");
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
    assert!(l.contains("it is another ps-agent: stop it"), "{l}");
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
    assert!(log.contains("--force replaces only netlink attachments; it is another ps-agent: stop it"), "{log}");
    assert!(log.contains("(native mode, bpf_link id "), "{log}");
    assert_eq!(tcp_probe(&lab.b, PS_ETH1_V4, 8080, Duration::from_millis(800)), Probe::TimedOut, "still enforced");

    assert_eq!(agent.stop(), Some(0));
    assert!(!xdp_attached(&lab.ps, "eth1"), "ps-agent detached on exit (the replaced program is gone for good)");
}

#[test]
fn install_uninstall_into_a_staging_root() {
    let root = scratch("oi1-root");
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
    assert_eq!(fs::read_to_string(&cfg).unwrap(), ps_agent::ops::install::default_config());

    // The committed unit, with the binary of this layout on the Exec lines.
    let u = fs::read_to_string(&unit).unwrap();
    let committed = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/ps-agent.service"))
        .unwrap()
        .replace("/usr/sbin/ps-agent", "/usr/local/sbin/ps-agent");
    assert_eq!(u, committed);
    assert!(u.contains("\nExecStart=/usr/local/sbin/ps-agent run --config /etc/ps-agent/config.toml\n"), "{u}");
    assert!(u.contains("\nExecReload=/usr/local/sbin/ps-agent reload\n"), "{u}");
    assert!(u.contains("\nType=notify\n"), "{u}");

    // systemd-analyze verifies the unit; the paths are relocated into the staging root so
    // the ExecStart binary exists (the content is otherwise the same).
    let vdir = root.join("verify");
    fs::create_dir_all(&vdir).unwrap();
    let relocated = u
        .replace("/usr/local/sbin/ps-agent", bin.to_str().unwrap())
        .replace("/etc/ps-agent/config.toml", cfg.to_str().unwrap());
    fs::write(vdir.join("ps-agent.service"), relocated).unwrap();
    // --man=no: the man pages the unit names are installed by the packages, not here.
    let out = Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(vdir.join("ps-agent.service")).output();
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

    // Uninstall: binary, unit and enable link go; the config stays. A staging root has
    // no bpffs: a directory there named like the pin directory is not ps-agent's to empty.
    let pins = root.join("sys/fs/bpf/ps-agent");
    fs::create_dir_all(&pins).unwrap();
    fs::write(pins.join(names::MAP_STATE), "").unwrap();
    let (code, out, err) = agent_in(None, &["uninstall", "--root", r]);
    assert_eq!(code, 0, "{out}{err}");
    for p in [&bin, &unit, &wants] {
        assert!(!p.exists() && !p.is_symlink(), "{} not removed:\n{out}", p.display());
    }
    assert!(pins.join(names::MAP_STATE).exists() && out.contains("left the pins"), "{out}");
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
        "interfaces": [], "rules": [], "reply_tracking": "stateful"
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
    assert!(agent.pin_dir.join(names::MAP_STATE).exists());

    // SIGKILL: no clean-up. The bpf_link dies with the process; pins and state stay.
    let pid = agent.state().pid as i32;
    // SAFETY: killing the agent this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(500));
    assert!(!xdp_attached(&lab.ps, "eth0"), "bpf_link detached with the process");
    assert!(agent.pin_dir.join(names::MAP_RULE_CNT).exists() && agent.state_dir.join("state.json").exists());

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
    assert!(err.contains("it is the root of the BPF filesystem"), "{err}");
}

fn chown_mode(p: &Path, uid: u32, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::os::unix::fs::chown(p, Some(uid), Some(uid)).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_pin_directory_another_user_made_is_refused() {
    use std::os::unix::fs::MetadataExt as _;
    let lab = Lab::new("pd1");
    let pins = PathBuf::from(format!("/sys/fs/bpf/{}-pd1", prefix()));
    let (p, s) = (pins.to_str().unwrap(), scratch("pd1"));
    // A local user pre-creates it (bpffs is often mounted 1777): nobody's, world-writable.
    fs::create_dir(&pins).unwrap();
    chown_mode(&pins, 65534, 0o777);
    let (code, _, err) =
        agent_in(Some(&lab.ps), &["--pin-dir", p, "--state-dir", s.to_str().unwrap(), "run", "--iface", "eth0"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("refusing") && err.contains("owned by uid 65534 with mode 0777"), "{err}");
    assert!(!xdp_attached(&lab.ps, "eth0"), "nothing attached");
    // root's and only readable by others (what mkdir under a 022 umask gives): taken, and
    // narrowed to 0700.
    chown_mode(&pins, 0, 0o755);
    let _agent = Agent::start(&lab.ps, "pd1", &["--iface", "eth0"]);
    assert_eq!(fs::metadata(&pins).unwrap().mode() & 0o7777, 0o700);
    let state = fs::metadata(scratch("pd1").join("state.json")).unwrap();
    assert_eq!(state.mode() & 0o777, 0o600, "the state file is root's to read");
}

#[test]
fn directories_off_bpffs_are_never_emptied() {
    let lab = Lab::new("pd2");
    let dir = scratch("pd2-precious");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("precious"), "keep me").unwrap();
    let d = dir.to_str().unwrap();
    let state = scratch("pd2");
    fs::create_dir_all(&state).unwrap();
    let st = state.to_str().unwrap();
    let (code, _, err) = agent_in(Some(&lab.ps), &["--pin-dir", d, "--state-dir", st, "run", "--iface", "eth0"]);
    assert_eq!(code, 1);
    assert!(err.contains("not a directory on a BPF filesystem"), "{err}");
    let (code, _, err) = agent_in(None, &["--pin-dir", d, "--state-dir", st, "unload", "--force"]);
    assert_eq!(code, 1);
    assert!(err.contains("not a directory on a BPF filesystem"), "{err}");
    // A tampered state file names it as the pin directory: unload checks the field first.
    fs::write(state.join("state.json"), stale_state(&dir)).unwrap();
    let pins = format!("/sys/fs/bpf/{}-pd2", prefix());
    let (code, out, err) = agent_in(None, &["--pin-dir", &pins, "--state-dir", st, "unload"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ignored the pin directory"), "{out}");
    assert_eq!(fs::read_to_string(dir.join("precious")).unwrap(), "keep me");
}

#[test]
fn one_agent_per_pin_and_state_directory() {
    let lab = Lab::new("oa1");
    let first = Agent::start(&lab.ps, "oa1", &["--iface", "eth0"]);
    let pid = first.report().pid;
    let other_state = scratch("oa1-b");
    let other_pins = format!("/sys/fs/bpf/{}-oa1-b", prefix());
    let (p, s) = (first.pin_dir.to_str().unwrap(), first.state_dir.to_str().unwrap());
    for (pins, state) in [(p, other_state.to_str().unwrap()), (other_pins.as_str(), s)] {
        let (code, _, err) =
            agent_in(Some(&lab.ps), &["--pin-dir", pins, "--state-dir", state, "run", "--iface", "eth1"]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains(&format!("in use by another ps-agent (pid {pid})")), "{err}");
    }
    assert!(!xdp_attached(&lab.ps, "eth1"), "the second agent attached nothing");
    assert_eq!(first.report().mode, Mode::Enforce, "the first agent runs on, untouched");
    let _ = fs::remove_dir_all(&other_pins);
}

#[test]
fn install_never_writes_through_a_planted_link() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _, symlink};
    let root = scratch("oi2-root");
    let victims = scratch("oi2-victims");
    for d in [&root, &victims] {
        let _ = fs::remove_dir_all(d);
        fs::create_dir_all(d).unwrap();
    }
    let victim = |name: &str| {
        let p = victims.join(name);
        fs::write(&p, "victim").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        p
    };
    let (v_bin, v_unit) = (victim("bin"), victim("unit"));
    fs::create_dir_all(root.join("usr/local/sbin")).unwrap();
    fs::create_dir_all(root.join("etc/systemd/system")).unwrap();
    symlink(&v_bin, root.join("usr/local/sbin/ps-agent")).unwrap();
    symlink(&v_unit, root.join("etc/systemd/system/ps-agent.service")).unwrap();
    let r = root.to_str().unwrap();
    let (code, out, err) = agent_in(None, &["install", "--root", r, "--no-enable"]);
    assert_eq!(code, 0, "{out}{err}");
    for v in [&v_bin, &v_unit] {
        assert_eq!(fs::read_to_string(v).unwrap(), "victim", "{} was written through the link", v.display());
        assert_eq!(fs::metadata(v).unwrap().mode() & 0o777, 0o600, "{} was chmodded through the link", v.display());
    }
    let bin = fs::symlink_metadata(root.join("usr/local/sbin/ps-agent")).unwrap();
    assert!(bin.file_type().is_file() && bin.mode() & 0o777 == 0o755, "the link was replaced by the binary");

    // A planted directory link is refused: nothing lands in the directory it points to.
    let _ = fs::remove_dir_all(root.join("etc/ps-agent"));
    symlink(&victims, root.join("etc/ps-agent")).unwrap();
    let (code, _, err) = agent_in(None, &["install", "--root", r, "--no-enable"]);
    assert_eq!(code, 1);
    assert!(err.contains("it is a symlink"), "{err}");
    assert!(!victims.join("config.toml").exists());
    let _ = fs::remove_dir_all(&root);
    let _ = fs::remove_dir_all(&victims);
}

/// The systemd unit gives the agent no CAP_SYS_ADMIN, so the probes cannot make their
/// private network namespace: they answer the same from errors and `/proc/kallsyms`.
#[test]
fn probes_answer_the_same_without_cap_sys_admin() {
    let features = |prefix: &[&str]| -> Vec<String> {
        let mut c = Command::new(prefix.first().copied().unwrap_or("env"));
        let out = c.args(prefix.iter().skip(1)).arg(agent_bin()).arg("doctor").output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let lines: Vec<String> = text.lines().filter(|l| l.contains("  feature ")).map(String::from).collect();
        assert!(!text.contains("feature probes"), "a probe failed:\n{text}");
        assert_eq!(lines.len(), 7, "{text}");
        lines
    };
    let root = features(&[]);
    let unit = features(&["setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin"]);
    assert_eq!(root, unit);
}

#[test]
fn install_and_unload_say_whether_anything_changed() {
    let root = scratch("oi3-root");
    let _ = fs::remove_dir_all(&root);
    let r = root.to_str().unwrap();
    let changed = |args: &[&str]| -> (bool, Vec<String>) {
        let (code, out, err) = agent_in(None, args);
        assert_eq!(code, 0, "{out}{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        let actions = v["actions"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect();
        (v["changed"].as_bool().unwrap(), actions)
    };
    let (first, actions) = changed(&["install", "--root", r, "--json"]);
    assert!(first && actions.iter().any(|a| a.starts_with("installed ")), "{actions:?}");
    let (second, actions) = changed(&["install", "--root", r, "--json"]);
    assert!(!second, "a second install changes nothing: {actions:?}");
    let pins = format!("/sys/fs/bpf/{}-oi3", prefix());
    let state = scratch("oi3-state");
    let (nothing, actions) = changed(&["--pin-dir", &pins, "--state-dir", state.to_str().unwrap(), "unload", "--json"]);
    assert!(!nothing && actions[0].starts_with("nothing to unload"), "{actions:?}");
    let _ = fs::remove_dir_all(&root);
}
