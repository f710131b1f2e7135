//! What the packages ship: the generated files committed under `packaging/` are what the
//! binary generates now; the artifacts of `cargo xtask dist` list exactly the expected
//! files, scriptlets and dependencies; the .deb installs on this machine, its binary runs
//! `check` and `doctor`, and a purge leaves nothing behind. These tests install and purge
//! the real package with dpkg: they need root and a machine without ps-agent installed.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use ps_tests::{agent_bin, scratch};

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// Every file under `dir`, by path relative to it.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())).flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(p.strip_prefix(root).unwrap().to_path_buf(), fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

#[test]
fn committed_man_pages_completions_and_config_are_current() {
    let out = scratch("generated");
    let _ = fs::remove_dir_all(&out);
    let st = Command::new(agent_bin()).args(["generate", "--out"]).arg(&out).output().unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let fresh = tree(&out);
    let mut committed = tree(&repo("packaging"));
    committed.retain(|p, _| fresh.contains_key(p) || p.starts_with("man") || p.starts_with("completions"));
    let paths: std::collections::BTreeSet<&PathBuf> = committed.keys().chain(fresh.keys()).collect();
    let stale: Vec<String> =
        paths.into_iter().filter(|p| committed.get(*p) != fresh.get(*p)).map(|p| p.display().to_string()).collect();
    assert!(
        stale.is_empty(),
        "stale under packaging/: {stale:?}; regenerate with `cargo build -p ps-agent && target/debug/ps-agent generate --out packaging` and commit"
    );
    assert!(fresh.contains_key(Path::new("man/ps-agent-run.8")) && fresh.len() > 20, "{:?}", fresh.keys());

    // `ps-agent completions SHELL` prints what the packages ship.
    for (shell, file) in [("bash", "ps-agent.bash"), ("zsh", "_ps-agent"), ("fish", "ps-agent.fish")] {
        let o = Command::new(agent_bin()).args(["completions", shell]).output().unwrap();
        assert!(o.status.success());
        assert_eq!(o.stdout, fresh[&Path::new("completions").join(file)], "{shell}");
    }
    let _ = fs::remove_dir_all(&out);
}

/// The artifacts of `cargo xtask dist`: `PS_DIST_DIR`, else `target/dist` of this
/// workspace (`cargo xtask test` builds them first).
struct Dist {
    deb: PathBuf,
    rpm: PathBuf,
    tgz: PathBuf,
    /// The static binary they were made from.
    bin: PathBuf,
}

fn dist() -> Dist {
    let dir = std::env::var_os("PS_DIST_DIR").map_or_else(|| repo("target/dist"), PathBuf::from);
    let one = |ext: &str| -> PathBuf {
        let found: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("no {}: {e}; run `cargo xtask dist` first", dir.display()))
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with(ext))
            .collect();
        assert_eq!(found.len(), 1, "one *{ext} in {}: {found:?} (run `cargo xtask dist`)", dir.display());
        found[0].clone()
    };
    Dist {
        deb: one(".deb"),
        rpm: one(".rpm"),
        tgz: one(".tar.gz"),
        bin: repo("target/x86_64-unknown-linux-musl/release/ps-agent"),
    }
}

/// Run `cmd` with `args`; panic with its output unless it succeeds; return stdout.
fn run(cmd: &str, args: &[&str]) -> String {
    let o = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        o.status.success(),
        "{cmd} {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn sha256(path: &Path) -> String {
    run("sha256sum", &[path.to_str().unwrap()]).split_whitespace().next().unwrap().to_string()
}

/// The man pages as packaging/ has them (one per visible command).
fn man_pages() -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(repo("packaging/man"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    assert!(v.len() >= 20, "{v:?}");
    v
}

/// What both packages install, but the zsh completion, whose directory differs, and the
/// preset (the .rpm's `%post` applies it; Debian enables with deb-systemd-helper).
fn common_files() -> Vec<String> {
    let mut v: Vec<String> = [
        "/etc/ps-agent/config.toml",
        "/usr/lib/systemd/system/ps-agent.service",
        "/usr/sbin/ps-agent",
        "/usr/share/bash-completion/completions/ps-agent",
        "/usr/share/doc/ps-agent/install.md",
        "/usr/share/fish/vendor_completions.d/ps-agent.fish",
        "/usr/share/ps-agent/grafana/ps-agent.json",
        "/usr/share/ps-agent/prometheus/ps-agent.rules.yml",
    ]
    .map(String::from)
    .to_vec();
    v.extend(man_pages().iter().map(|m| format!("/usr/share/man/man8/{m}.gz")));
    v
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn rpm_has_exactly_the_files_scriptlets_and_requirements() {
    let d = dist();
    let rpm = d.rpm.to_str().unwrap();
    let files: Vec<String> = run("rpm", &["-qlp", rpm]).lines().map(String::from).collect();
    let mut want = common_files();
    want.push("/usr/share/zsh/site-functions/_ps-agent".into());
    want.push("/usr/share/licenses/ps-agent/LICENSE".into());
    want.push("/usr/lib/systemd/system-preset/80-ps-agent.preset".into());
    assert_eq!(sorted(files), sorted(want));

    let info = run("rpm", &["-qip", rpm]);
    assert!(info.contains("Name        : ps-agent") && info.contains("Architecture: x86_64"), "{info}");
    // xz: what rpm 4.14 (RHEL 8) reads.
    assert_eq!(run("rpm", &["-qp", "--qf", "%{PAYLOADCOMPRESSOR}", rpm]), "xz");
    // The config is %config(noreplace); the rest is not config.
    let flags = run("rpm", &["-qp", "--qf", "[%{FILEFLAGS:fflags} %{FILENAMES}\\n]", rpm]);
    let config: Vec<&str> = flags.lines().filter(|l| l.split(' ').next().is_some_and(|f| f.contains('c'))).collect();
    assert_eq!(config, ["cn /etc/ps-agent/config.toml"], "{flags}");
    let requires = run("rpm", &["-qp", "--requires", rpm]);
    for r in ["/bin/sh", "iproute", "gzip", "systemd"] {
        assert!(requires.lines().any(|l| l.trim() == r), "requires {r}: {requires}");
    }
    // Scriptlets as %systemd_post / %systemd_preun / %systemd_postun_with_restart behave.
    let scripts = run("rpm", &["-qp", "--scripts", rpm]);
    let part = |from: &str| -> String {
        let s = &scripts[scripts.find(from).unwrap_or_else(|| panic!("no {from} in {scripts}"))..];
        s[from.len()..].split("scriptlet").next().unwrap().to_string()
    };
    let post = part("postinstall scriptlet");
    assert!(
        post.contains("if [ $1 -eq 1 ]; then") && post.contains("systemctl --no-reload preset ps-agent.service"),
        "{post}"
    );
    let preun = part("preuninstall scriptlet");
    assert!(preun.contains("if [ $1 -eq 0 ]; then"), "{preun}");
    assert!(preun.contains("systemctl --no-reload disable --now ps-agent.service"), "{preun}");
    assert!(preun.contains("/usr/sbin/ps-agent unload"), "{preun}");
    let postun = part("postuninstall scriptlet");
    assert!(
        postun.contains("if [ $1 -ge 1 ]; then") && postun.contains("systemctl try-restart ps-agent.service"),
        "{postun}"
    );
    assert!(!scripts.contains("pretrans") && !scripts.contains("preinstall scriptlet"), "{scripts}");

    // The binary is the static one dist built.
    let digests = run("rpm", &["-qp", "--qf", "[%{FILEDIGESTS} %{FILENAMES}\\n]", rpm]);
    assert!(digests.contains(&format!("{} /usr/sbin/ps-agent\n", sha256(&d.bin))), "{digests}");
}

#[test]
fn deb_has_exactly_the_files_scripts_and_depends() {
    let d = dist();
    let deb = d.deb.to_str().unwrap();
    let files: Vec<String> = run("dpkg-deb", &["-c", deb])
        .lines()
        .filter(|l| !l.starts_with('d'))
        .map(|l| l.rsplit(' ').next().unwrap().trim_start_matches('.').to_string())
        .collect();
    let mut want = common_files();
    want.push("/usr/share/zsh/vendor-completions/_ps-agent".into());
    want.push("/usr/share/doc/ps-agent/copyright".into());
    assert_eq!(sorted(files), sorted(want));
    assert!(run("dpkg-deb", &["-c", deb]).contains("-rwxr-xr-x 0/0 "), "root-owned");

    assert_eq!(run("dpkg-deb", &["-f", deb, "Package", "Architecture"]), "Package: ps-agent\nArchitecture: amd64\n");
    assert_eq!(run("dpkg-deb", &["-f", deb, "Depends"]).trim(), "init-system-helpers, iproute2");
    let info = run("dpkg-deb", &["-I", deb]);
    for s in ["conffiles", "postinst", "prerm", "postrm"] {
        assert!(info.contains(&format!(" {s} ")), "{s}: {info}");
    }
    let ctl = scratch("deb-control");
    let _ = fs::remove_dir_all(&ctl);
    run("dpkg-deb", &["-e", deb, ctl.to_str().unwrap()]);
    let read = |f: &str| fs::read_to_string(ctl.join(f)).unwrap();
    assert_eq!(read("conffiles"), "/etc/ps-agent/config.toml\n");
    let postinst = read("postinst");
    assert!(postinst.contains("deb-systemd-helper enable ps-agent.service"), "enabled on install: {postinst}");
    assert!(postinst.contains("deb-systemd-invoke try-restart ps-agent.service"), "restarted on upgrade: {postinst}");
    assert!(!postinst.contains("deb-systemd-invoke start"), "not started on install: {postinst}");
    let prerm = read("prerm");
    assert!(!prerm.contains("#DEBHELPER#") && prerm.contains("deb-systemd-invoke stop ps-agent.service"), "{prerm}");
    assert!(
        prerm.find("deb-systemd-invoke stop").unwrap() < prerm.find("/usr/sbin/ps-agent unload").unwrap(),
        "{prerm}"
    );
    assert!(read("postrm").contains("deb-systemd-helper purge ps-agent.service"));
    let _ = fs::remove_dir_all(&ctl);

    let x = scratch("deb-data");
    let _ = fs::remove_dir_all(&x);
    run("dpkg-deb", &["-x", deb, x.to_str().unwrap()]);
    assert_eq!(sha256(&x.join("usr/sbin/ps-agent")), sha256(&d.bin), "the static binary dist built");
    let _ = fs::remove_dir_all(&x);
}

#[test]
fn tarball_has_the_files_and_their_sums() {
    let d = dist();
    let x = scratch("tgz");
    let _ = fs::remove_dir_all(&x);
    fs::create_dir_all(&x).unwrap();
    run("tar", &["-xzf", d.tgz.to_str().unwrap(), "-C", x.to_str().unwrap()]);
    let top: Vec<PathBuf> = fs::read_dir(&x).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(top.len(), 1, "one directory: {top:?}");
    let root = &top[0];
    assert!(root.file_name().unwrap().to_string_lossy().starts_with("ps-agent-"));
    let files: Vec<String> = tree(root).keys().map(|p| p.display().to_string()).collect();
    let mut want: Vec<String> =
        ["80-ps-agent.preset", "LICENSE", "SHA256SUMS", "config.toml", "install.md", "ps-agent", "ps-agent.service"]
            .map(String::from)
            .to_vec();
    want.extend(man_pages().iter().map(|m| format!("man/{m}")));
    want.extend(["completions/_ps-agent", "completions/ps-agent.bash", "completions/ps-agent.fish"].map(String::from));
    want.extend(["grafana/ps-agent.json", "prometheus/ps-agent.rules.yml"].map(String::from));
    let n = want.len();
    assert_eq!(sorted(files), sorted(want));
    let check =
        Command::new("sha256sum").args(["--check", "--strict", "SHA256SUMS"]).current_dir(root).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    let sums = fs::read_to_string(root.join("SHA256SUMS")).unwrap();
    assert_eq!(sums.lines().count(), n - 1, "every file but itself: {sums}");
    assert_eq!(fs::read(root.join("ps-agent.service")).unwrap(), fs::read(repo("packaging/ps-agent.service")).unwrap());
    assert_eq!(sha256(&root.join("ps-agent")), sha256(&d.bin));
    // SHA256SUMS beside the artifacts names all three.
    let outer = fs::read_to_string(d.deb.parent().unwrap().join("SHA256SUMS")).unwrap();
    for a in [&d.deb, &d.rpm, &d.tgz] {
        let name = a.file_name().unwrap().to_string_lossy();
        assert!(outer.contains(&format!("{}  {name}\n", sha256(a))), "{name}: {outer}");
    }
    let _ = fs::remove_dir_all(&x);
}

/// `dpkg ARGS`, retried while another dpkg or apt holds the lock; returns the output.
fn dpkg(args: &[&str]) -> std::process::Output {
    let t0 = std::time::Instant::now();
    loop {
        let o = Command::new("dpkg").args(args).env("DEBIAN_FRONTEND", "noninteractive").output().expect("dpkg");
        let err = String::from_utf8_lossy(&o.stderr);
        if o.status.success() || !err.contains("lock") || t0.elapsed() > std::time::Duration::from_secs(120) {
            return o;
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
}

/// Does dpkg know the package (installed, or removed with its conffiles left)?
fn installed() -> bool {
    Command::new("dpkg-query").args(["-W", "ps-agent"]).output().is_ok_and(|o| o.status.success())
}

/// Purges the package if a test leaves it installed.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        if installed() {
            let _ = dpkg(&["--purge", "ps-agent"]);
        }
    }
}

/// What systemd and deb-systemd-helper keep about enabled and masked units.
fn unit_state() -> Vec<String> {
    let mut v = Vec::new();
    for dir in [
        "/etc/systemd/system",
        "/var/lib/systemd/deb-systemd-helper-enabled",
        "/var/lib/systemd/deb-systemd-helper-masked",
    ] {
        let out = Command::new("find").arg(dir).output().unwrap();
        v.extend(String::from_utf8_lossy(&out.stdout).lines().map(String::from));
    }
    v.sort();
    v
}

#[test]
fn deb_installs_runs_check_and_doctor_and_purges_clean() {
    let d = dist();
    assert!(!installed(), "ps-agent is installed on this machine already: `dpkg --purge ps-agent` first");
    let before = unit_state();
    let _purge = Purge;
    let o = dpkg(&["-i", d.deb.to_str().unwrap()]);
    assert!(
        o.status.success(),
        "dpkg -i: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );

    // The files are in place.
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(fs::metadata("/usr/sbin/ps-agent").unwrap().permissions().mode() & 0o7777, 0o755);
    assert_eq!(
        fs::read("/usr/lib/systemd/system/ps-agent.service").unwrap(),
        fs::read(repo("packaging/ps-agent.service")).unwrap()
    );
    assert_eq!(fs::read("/etc/ps-agent/config.toml").unwrap(), fs::read(repo("packaging/config.toml")).unwrap());
    for m in man_pages() {
        assert!(Path::new("/usr/share/man/man8").join(format!("{m}.gz")).exists(), "{m}");
    }
    // Enabled, not started: deb-systemd-helper made the link although systemd is not running.
    let wants = Path::new("/etc/systemd/system/multi-user.target.wants/ps-agent.service");
    assert!(fs::read_link(wants).is_ok_and(|t| t.ends_with("systemd/system/ps-agent.service")), "enabled");
    // With the man pages installed, the unit verifies as it stands (no --man=no).
    let v =
        Command::new("systemd-analyze").args(["verify", "/usr/lib/systemd/system/ps-agent.service"]).output().unwrap();
    assert!(v.status.success() && v.stderr.is_empty(), "{}", String::from_utf8_lossy(&v.stderr));

    // The installed binary: its version, check with the shipped config, doctor in a lab.
    assert_eq!(run("/usr/sbin/ps-agent", &["--version"]), run(d.bin.to_str().unwrap(), &["--version"]));
    let check = run("/usr/sbin/ps-agent", &["check"]);
    assert!(
        check.contains("config:     /etc/ps-agent/config.toml") && check.contains("mode:       dry-run"),
        "{check}"
    );
    assert!(check.contains("27 rules"), "{check}");
    let lab = ps_tests::Lab::new("pk1");
    let doc = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", lab.ps))
        .args(["/usr/sbin/ps-agent", "doctor"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&doc.stdout);
    assert!(matches!(doc.status.code(), Some(0 | 3)), "doctor exits 0 or 3 (warnings only):\n{text}");
    assert!(text.lines().any(|l| l.starts_with("pass  program")), "the embedded object loads:\n{text}");
    drop(lab);

    // Remove: the binary and unit go, the conffile stays (Debian policy), the unit is
    // masked until purge; nothing was left attached or pinned to unload.
    let o = dpkg(&["-r", "ps-agent"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("nothing to unload"), "{}", String::from_utf8_lossy(&o.stdout));
    assert!(
        !Path::new("/usr/sbin/ps-agent").exists() && !Path::new("/usr/lib/systemd/system/ps-agent.service").exists()
    );
    assert!(Path::new("/etc/ps-agent/config.toml").exists(), "conffiles stay until purge");

    // Purge: nothing left, and the systemd state is as before the install.
    let o = dpkg(&["--purge", "ps-agent"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!installed());
    for f in common_files().iter().chain(["/usr/share/zsh/vendor-completions/_ps-agent".to_string()].iter()) {
        assert!(!Path::new(f).exists(), "{f} left behind");
    }
    assert!(!Path::new("/etc/ps-agent").exists() && !Path::new("/usr/share/doc/ps-agent").exists());
    assert_eq!(unit_state(), before, "enable links, masks and deb-systemd-helper state are gone");
}
