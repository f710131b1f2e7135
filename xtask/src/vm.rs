//! `cargo xtask vm-test`: the kernel matrix. Boots each kernel that `xtask/vm-setup.sh`
//! fetched (Debian and Ubuntu packages, under `target/vm/kernels/`) under QEMU with a small
//! initramfs built here — busybox, the program-test binary, `ip`, `nsenter` and `sysctl` with
//! their shared libraries, the veth module — runs the program tests (BPF_PROG_TEST_RUN) there,
//! and reads the results and the verifier's instruction counts off the serial console.
//! The running kernel gets the same tests natively, as one more row. Kernels too old for
//! the program tests (below [`MIN_KERNEL`]) still boot, and run only the test that loads
//! the object: the row then says whether the kernel accepts the program, and if not, why.
//!
//! The budgets are not repeated here: `verifier_cost_stays_within_budget`
//! (tests/tests/program.rs) prints each program's count with its budget, and this task
//! checks the pair it printed.

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// The program tests need the `xdp_md` context in BPF_PROG_TEST_RUN, with
/// `ingress_ifindex` (kernel 5.15, commit 47316f4a3053 "bpf: Support input xdp_md context
/// in BPF_PROG_TEST_RUN"): below it every case fails with EINVAL, so such kernels run only
/// [`COST_TEST`], which loads the object without running it ([`Scope::LoadOnly`]). README,
/// "Prerequisites and kernels", documents the same floor.
const MIN_KERNEL: (u32, u32) = (5, 15);

/// `bpf_prog_info.verified_insns` exists from 5.16 (commit aba64c7da983 "bpf: Add
/// verified_insns to bpf_prog_info and fdinfo"): from there on a missing count is a failure.
const VERIFIED_INSNS_KERNEL: (u32, u32) = (5, 16);

/// The test that prints the verifier's work per program, run with `--nocapture`.
const COST_TEST: &str = "verifier_cost_stays_within_budget";

/// Seconds a kernel gets under KVM to reach init before TCG is tried instead.
const KVM_BOOT_SECS: u64 = 30;

/// Markers the init script and the host run print around the test output.
const MARK: &str = "PS-VM";

/// How [`COST_TEST`] begins its panic message when the object does not load (the
/// loader's error follows, on the same line): the reason a kernel rejected it, when no
/// verifier log names one (a map, BTF, or the object itself).
const LOAD_FAILED: &str = "the object did not load: ";

/// What runs on a kernel.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// All the program tests.
    Full,
    /// Below [`MIN_KERNEL`]: only [`COST_TEST`], to learn whether the kernel accepts the
    /// object. A rejection there is a finding, not a failure.
    LoadOnly,
}

impl Scope {
    fn of(release: (u32, u32)) -> Self {
        if release < MIN_KERNEL { Scope::LoadOnly } else { Scope::Full }
    }

    /// Test runs, each closing with a libtest summary.
    fn runs(self) -> usize {
        match self {
            Scope::Full => 2,
            Scope::LoadOnly => 1,
        }
    }
}

/// Options of the task.
pub struct Opts {
    /// Extra kernel images (bzImage) to boot; they need veth built in, or its module next
    /// to them as `veth.ko`.
    pub kernels: Vec<PathBuf>,
    /// Skip the native run on the running kernel.
    pub no_host: bool,
    /// Seconds one VM may take before it is killed and counted as failed.
    pub timeout: u64,
    /// Boot only the kernels whose package name or path contains this.
    pub only: Option<String>,
}

/// One kernel's result.
struct Outcome {
    kernel: String,
    how: String,
    /// `Err(reason)` when the kernel was skipped.
    result: Result<Report, String>,
}

struct Report {
    release: String,
    scope: Scope,
    passed: Vec<String>,
    failed: Vec<String>,
    /// Program → (verified instructions if reported, budget).
    verified: BTreeMap<String, (Option<u64>, Option<u64>)>,
    /// Why the object did not load: the verifier's error line per program (from the
    /// verifier logs the init script prints), else the loader's message.
    rejected: Vec<String>,
    /// Problems beyond failed tests (timeout, no summary, budget, missing count).
    problems: Vec<String>,
    /// The kernel has no BTF of its own (`/sys/kernel/btf/vmlinux`, CONFIG_DEBUG_INFO_BTF):
    /// Ubuntu's OEM 5.14 is built so. Not a failure: the object carries its own BTF and needs
    /// no CO-RE relocation, so whether it loads is what the tests say (`ps-agent doctor`
    /// warns, no more).
    no_btf: bool,
    log: PathBuf,
}

impl Report {
    /// Whether the row counts as passed. Below the minimum a rejection is what the row is
    /// there to record; only a broken run (timeout, crash, a failure that is no load error)
    /// fails it.
    fn ok(&self) -> bool {
        match self.scope {
            Scope::Full => self.failed.is_empty() && self.problems.is_empty() && !self.passed.is_empty(),
            Scope::LoadOnly => self.problems.is_empty() && (!self.passed.is_empty() || !self.rejected.is_empty()),
        }
    }

    /// The result column: `pass`, `FAIL`, or below the minimum whether the kernel accepted
    /// the object.
    fn verdict(&self) -> String {
        let rejected = || format!("rejected: {}", self.rejected.join("; "));
        let verdict = match (self.scope, self.ok()) {
            (Scope::Full, true) => "pass".into(),
            (Scope::Full, false) if self.rejected.is_empty() => "FAIL".into(),
            (Scope::Full, false) => format!("FAIL, {}", rejected()),
            (Scope::LoadOnly, false) => "FAIL (below the minimum: the load test did not run through)".into(),
            (Scope::LoadOnly, true) if self.rejected.is_empty() => "below the minimum: accepted".into(),
            (Scope::LoadOnly, true) => format!("below the minimum: {}", rejected()),
        };
        if self.no_btf { format!("{verdict} (no kernel BTF)") } else { verdict }
    }
}

/// Run the matrix. `root` is the workspace root, `cargo` a `cargo` command factory.
pub fn vm_test(root: &Path, cargo: impl Fn() -> Command, opts: &Opts) -> anyhow::Result<()> {
    let vm = root.join("target/vm");
    crate::run(Command::new("bash").arg(root.join("xtask/vm-setup.sh")))?;
    let bin = build_tests(root, &cargo)?;
    let stripped = vm.join("program");
    crate::run(Command::new("objcopy").arg("--strip-debug").arg(&bin).arg(&stripped))?;

    let mut outcomes = Vec::new();
    if !opts.no_host {
        outcomes.push(host_run(&stripped, &vm)?);
    }
    let mut kernels: Vec<(String, PathBuf, Option<PathBuf>)> = Vec::new();
    let mut dirs: Vec<_> = fs::read_dir(vm.join("kernels"))
        .context("failed to read target/vm/kernels")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join(".complete").exists())
        .collect();
    dirs.sort();
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let image = find_file(&dir.join("boot"), "vmlinuz-").with_context(|| format!("no vmlinuz in {dir:?}"))?;
        kernels.push((name, image, find_named(&dir, "veth.ko")));
    }
    for k in &opts.kernels {
        let module = k.parent().map(|d| d.join("veth.ko")).filter(|m| m.exists());
        kernels.push((k.display().to_string(), k.clone(), module));
    }
    kernels.retain(|(name, _, _)| opts.only.as_ref().is_none_or(|o| name.contains(o.as_str())));
    let base = initramfs_base(&vm, &stripped)?;
    for (name, image, module) in kernels {
        outcomes.push(boot(&vm, &name, &image, module.as_deref(), &base, opts.timeout)?);
    }

    let mut bad = Vec::new();
    println!();
    for o in &outcomes {
        print_outcome(o);
        if let Ok(r) = &o.result
            && !r.ok()
        {
            bad.push(o.kernel.clone());
        }
    }
    print_matrix(&outcomes);
    if outcomes.iter().all(|o| o.result.is_err()) {
        bail!("no kernel was tested");
    }
    if !bad.is_empty() {
        bail!("kernel matrix failed on: {}", bad.join(", "));
    }
    Ok(())
}

/// `cargo test -p ps-tests --test program --no-run`, returning the test executable.
fn build_tests(root: &Path, cargo: impl Fn() -> Command) -> anyhow::Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args(["test", "-p", "ps-tests", "--test", "program", "--no-run", "--message-format=json"]);
    eprintln!("[xtask] {}", format!("{cmd:?}").replace('"', ""));
    let out = cmd.current_dir(root).stderr(Stdio::inherit()).output().context("failed to start cargo test --no-run")?;
    if !out.status.success() {
        bail!("failed to build the program tests: {}", out.status);
    }
    for line in out.stdout.split(|&b| b == b'\n') {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else { continue };
        if v["reason"] == "compiler-artifact"
            && v["target"]["name"] == "program"
            && let Some(exe) = v["executable"].as_str()
        {
            return Ok(exe.into());
        }
    }
    bail!("cargo did not name the program-test executable")
}

/// The same tests on the running kernel, outside any VM, in a private mount namespace with
/// its own `/run/netns`, so its lab namespaces cannot collide with a suite running beside it.
fn host_run(bin: &Path, vm: &Path) -> anyhow::Result<Outcome> {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    let scope = version(&release).map_or(Scope::Full, Scope::of);
    let script = format!(
        "set -u; mkdir -p /run/netns && mount -t tmpfs ps-vm-test /run/netns || exit 1\n{}",
        test_script(&bin.display().to_string(), scope)
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script]);
    let log = vm.join(format!("host-{release}.log"));
    eprintln!("[xtask] the program tests on the running kernel {release} (log: {})", log.display());
    let timeout = Duration::from_secs(300);
    let (lines, hung) = capture(cmd, &log, timeout, timeout)?;
    let mut r = parse(&lines, hung != Hung::No, &release, scope);
    if hung != Hung::No {
        r.problems.push(format!("timed out after {} s", timeout.as_secs()));
    }
    r.log = log;
    Ok(Outcome { kernel: release, how: "host, no VM".into(), result: Ok(r) })
}

/// What runs the tests, in the VM's /init and on the host: the cost test alone with
/// `--nocapture` (its counts, or the loader's error), everything else captured, and below
/// the minimum nothing else.
fn test_script(bin: &str, scope: Scope) -> String {
    let others = match scope {
        Scope::Full => format!("\"{bin}\" --test-threads=1 --skip {COST_TEST}\necho \"{MARK} exit $?\"\n"),
        Scope::LoadOnly => String::new(),
    };
    format!(
        r#"echo "{MARK} kernel $(uname -r)"
echo "{MARK} btf $([ -e /sys/kernel/btf/vmlinux ] && echo yes || echo no)"
{others}"{bin}" --test-threads=1 --exact {COST_TEST} --nocapture
echo "{MARK} exit $?"
echo "{MARK} done"
"#
    )
}

/// The VM's /init.
fn init_script(scope: Scope) -> String {
    format!(
        r#"#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /run /tmp
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox --install -s /bin
export PATH=/usr/bin:/bin
mount -t tmpfs run /run
mount -t tmpfs tmp /tmp
mount -t bpf bpf /sys/fs/bpf
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
ulimit -l unlimited
[ -e /lib/modules/veth.ko ] && insmod /lib/modules/veth.ko
cd /tmp
{}
# A rejected program leaves the whole verifier log here: keep its end on the console.
for f in /tmp/verifier-*.log; do
  [ -e "$f" ] || continue
  echo "{MARK} verifier log $f (last 80 lines)"
  tail -n 80 "$f"
done
echo "{MARK} end"
poweroff -f
"#,
        test_script("/ps/program", scope)
    )
}

/// The files every kernel's initramfs shares (its `/init` is added per kernel, see
/// [`init_script`]): (path in the image, mode, contents).
type Entry = (String, u32, Vec<u8>);

fn initramfs_base(vm: &Path, bin: &Path) -> anyhow::Result<Vec<Entry>> {
    let mut files: Vec<Entry> = Vec::new();
    let mut add = |dest: &str, src: &Path| -> anyhow::Result<()> {
        let data = fs::read(src).with_context(|| format!("failed to read {}", src.display()))?;
        files.push((dest.to_string(), 0o755, data));
        Ok(())
    };
    add("bin/busybox", &vm.join("busybox"))?;
    add("ps/program", bin)?;
    let mut libs = std::collections::BTreeSet::new();
    libs.extend(shared_libs(bin)?);
    // Debian's busybox runs its own applets first (`ip` without `netns`), so the harness's
    // `sh -c "ip netns add ..."` gets the host's dash as /bin/sh, which searches PATH.
    for (tool, dest) in
        [("dash", "bin/sh"), ("ip", "usr/bin/ip"), ("nsenter", "usr/bin/nsenter"), ("sysctl", "usr/bin/sysctl")]
    {
        let path = which(tool).with_context(|| format!("`{tool}` not found (dash, iproute2, util-linux, procps)"))?;
        add(dest, &path)?;
        libs.extend(shared_libs(&path)?);
    }
    for lib in libs {
        add(lib.strip_prefix("/").unwrap_or(&lib).to_str().unwrap(), &lib)?;
    }
    Ok(files)
}

fn which(tool: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"].iter().map(|d| Path::new(d).join(tool)).find(|p| p.exists())
}

/// The shared libraries `ldd` names for `bin`, the dynamic loader included.
fn shared_libs(bin: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(bin).output().context("failed to run ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// A `newc` cpio archive (what the kernel unpacks as initramfs): parent directories first,
/// `/dev/console` so init has a console before devtmpfs is mounted, `/var/run` → `/run`.
fn write_cpio(path: &Path, files: &[Entry]) -> anyhow::Result<()> {
    let mut dirs = std::collections::BTreeSet::new();
    for (p, _, _) in files {
        let mut d = Path::new(p).parent();
        while let Some(x) = d.filter(|x| !x.as_os_str().is_empty()) {
            dirs.insert(x.to_string_lossy().into_owned());
            d = x.parent();
        }
    }
    for d in ["dev", "proc", "sys", "run", "tmp", "var", "lib/modules"] {
        dirs.insert(d.to_string());
    }
    let mut out = std::io::BufWriter::new(fs::File::create(path)?);
    let mut ino = 1u32;
    let mut entry = |out: &mut std::io::BufWriter<fs::File>, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]| {
        let header = format!(
            "070701{ino:08X}{mode:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0
        );
        ino += 1;
        let mut buf = header.into_bytes();
        buf.extend_from_slice(name.as_bytes());
        buf.push(0);
        buf.resize(buf.len().next_multiple_of(4), 0);
        buf.extend_from_slice(data);
        buf.resize(buf.len().next_multiple_of(4), 0);
        out.write_all(&buf)
    };
    for d in &dirs {
        entry(&mut out, d, 0o040755, (0, 0), &[])?;
    }
    entry(&mut out, "dev/console", 0o020600, (5, 1), &[])?;
    entry(&mut out, "var/run", 0o120777, (0, 0), b"/run")?;
    for (name, mode, data) in files {
        entry(&mut out, name, 0o100000 | mode, (0, 0), data)?;
    }
    entry(&mut out, "TRAILER!!!", 0, (0, 0), &[])?;
    out.flush()?;
    Ok(())
}

fn find_file(dir: &Path, prefix: &str) -> Option<PathBuf> {
    fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix)))
}

fn find_named(dir: &Path, name: &str) -> Option<PathBuf> {
    for e in fs::read_dir(dir).ok()?.filter_map(|e| e.ok()) {
        let p = e.path();
        if p.is_dir() {
            if let Some(found) = find_named(&p, name) {
                return Some(found);
            }
        } else if p.file_name().is_some_and(|n| n == name) {
            return Some(p);
        }
    }
    None
}

/// The release string a bzImage carries in its setup header (`kernel_version`, boot
/// protocol 2.00+: offset at 0x20e, relative to 0x200).
fn bzimage_release(image: &Path) -> Option<String> {
    let data = fs::read(image).ok()?;
    if data.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let off = u16::from_le_bytes([data[0x20e], data[0x20f]]) as usize + 0x200;
    let s = data.get(off..off + 256)?;
    let end = s.iter().position(|&b| b == 0 || b == b' ')?;
    Some(String::from_utf8_lossy(&s[..end]).into_owned())
}

fn version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

fn boot(
    vm: &Path,
    name: &str,
    image: &Path,
    module: Option<&Path>,
    base: &[Entry],
    timeout: u64,
) -> anyhow::Result<Outcome> {
    let release = bzimage_release(image).unwrap_or_else(|| "unknown".into());
    let kvm = fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok();
    let Some(scope) = version(&release).map(Scope::of) else {
        let reason = format!("{name}: cannot read the kernel release from {}", image.display());
        return Ok(Outcome { kernel: release, how: "QEMU".into(), result: Err(reason) });
    };
    if scope == Scope::LoadOnly {
        eprintln!(
            "[xtask] {release} is below {}.{} (BPF_PROG_TEST_RUN takes no xdp_md context, ingress_ifindex, \
             before 5.15): only {COST_TEST} runs there, to see whether the kernel accepts the object",
            MIN_KERNEL.0, MIN_KERNEL.1
        );
    }
    let mut files = base.to_vec();
    files.push(("init".into(), 0o755, init_script(scope).into_bytes()));
    if let Some(m) = module {
        let data = fs::read(m).with_context(|| format!("failed to read {} (rerun xtask/vm-setup.sh)", m.display()))?;
        files.push(("lib/modules/veth.ko".into(), 0o644, data));
    }
    let initrd = vm.join(format!("initramfs-{release}.cpio"));
    write_cpio(&initrd, &files)?;
    let log = vm.join(format!("{release}.log"));
    let qemu = |kvm: bool| {
        let mut cmd = Command::new("qemu-system-x86_64");
        if kvm {
            // IA32_ARCH_CAPABILITIES cannot be set in some nested setups (QEMU aborts).
            cmd.args(["-accel", "kvm", "-cpu", "host,-arch-capabilities"]);
        } else {
            cmd.args(["-accel", "tcg", "-cpu", "max"]);
        }
        cmd.args(["-m", "1024", "-smp", "2", "-nographic", "-no-reboot", "-nic", "none", "-kernel"])
            .arg(image)
            .arg("-initrd")
            .arg(&initrd)
            .args(["-append", "console=ttyS0 panic=-1 quiet loglevel=1 rdinit=/init"]);
        cmd
    };
    let t0 = Instant::now();
    let timeout = Duration::from_secs(timeout);
    let mut how = "QEMU/TCG".to_string();
    let mut attempt = None;
    if kvm {
        eprintln!("[xtask] booting {name} ({release}, QEMU/KVM; log: {})", log.display());
        // Under KVM the kernel reaches init in seconds; nested KVM can hang in the
        // decompressor instead, and then TCG (slower, but it boots) takes over.
        match capture(qemu(true), &log, timeout, Duration::from_secs(KVM_BOOT_SECS))? {
            (_, Hung::Boot) => {
                eprintln!("[xtask] {release}: no init under KVM after {KVM_BOOT_SECS} s: again with TCG");
                how = "QEMU/TCG (KVM hung)".into();
            }
            other => {
                how = "QEMU/KVM".into();
                attempt = Some(other);
            }
        }
    }
    let (lines, hung) = match attempt {
        Some(a) => a,
        None => {
            eprintln!("[xtask] booting {name} ({release}, {how}; log: {})", log.display());
            capture(qemu(false), &log, timeout, timeout)?
        }
    };
    eprintln!("[xtask] {release}: {:.1} s", t0.elapsed().as_secs_f64());
    let mut r = parse(&lines, hung != Hung::No, &release, scope);
    if hung != Hung::No {
        r.problems.push(format!("timed out after {} s", timeout.as_secs()));
    }
    r.log = log;
    Ok(Outcome { kernel: release, how, result: Ok(r) })
}

/// Run `cmd`, teeing its stdout to `log`, killing it after `timeout`, or after `boot` if
/// no line has carried the first marker by then (`Ok((lines, Hung::Boot))`).
fn capture(mut cmd: Command, log: &Path, timeout: Duration, boot: Duration) -> anyhow::Result<(Vec<String>, Hung)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("failed to start {cmd:?}"))?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n') {
            let Ok(line) = line else { break };
            let text = String::from_utf8_lossy(&line).trim_end_matches('\r').to_string();
            if tx.send(text).is_err() {
                break;
            }
        }
    });
    let mut logf = fs::File::create(log)?;
    let t0 = Instant::now();
    let mut lines = Vec::new();
    let mut hung = Hung::No;
    let mut booted = false;
    loop {
        let deadline = t0 + if booted { timeout } else { boot.min(timeout) };
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) => {
                writeln!(logf, "{l}")?;
                booted |= l.contains(MARK);
                lines.push(l);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                hung = if booted { Hung::Run } else { Hung::Boot };
                let _ = child.kill();
                break;
            }
        }
    }
    child.wait()?;
    Ok((lines, hung))
}

/// Whether (and where) a run was killed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hung {
    No,
    /// No marker before the boot deadline.
    Boot,
    /// Past the whole timeout.
    Run,
}

/// Read the libtest output: `test NAME ... ok|FAILED|ignored` (with `--nocapture` the
/// verdict may come on a later line, after the test's own output), the counts the cost
/// test prints, the markers, and when the object did not load, why: the verifier logs the
/// init script prints after the tests, else the loader's message (after [`LOAD_FAILED`]).
fn parse(lines: &[String], timed_out: bool, release: &str, scope: Scope) -> Report {
    let mut r = Report {
        release: release.to_string(),
        scope,
        passed: vec![],
        failed: vec![],
        verified: BTreeMap::new(),
        rejected: vec![],
        problems: vec![],
        no_btf: false,
        log: PathBuf::new(),
    };
    let mut pending: Option<String> = None;
    let mut summaries = 0;
    let mut done = false;
    // Program → the end of its verifier log; the program whose log is being read.
    let mut logs: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    let mut in_log: Option<String> = None;
    let mut load_failed: Option<String> = None;
    let verdict = |s: &str| matches!(s, "ok" | "FAILED" | "ignored");
    let record = |r: &mut Report, name: String, v: &str| match v {
        "ok" => r.passed.push(name),
        "FAILED" => r.failed.push(name),
        _ => {}
    };
    for line in lines {
        let line = line.trim();
        // `PS-VM verifier log /tmp/verifier-ps_xdp.log (last 80 lines)`, then the log up to
        // the next marker.
        if line.starts_with(MARK) {
            in_log = line
                .strip_prefix(&format!("{MARK} verifier log "))
                .and_then(|rest| rest.split_whitespace().next()?.rsplit('/').next()?.strip_prefix("verifier-"))
                .and_then(|f| f.strip_suffix(".log"))
                .map(str::to_string);
            if let Some(prog) = &in_log {
                logs.entry(prog.clone()).or_default();
                continue;
            }
        }
        if let Some(prog) = &in_log {
            logs.get_mut(prog).expect("entry made at the marker").push(line);
            continue;
        }
        if load_failed.is_none()
            && let Some(at) = line.find(LOAD_FAILED)
        {
            load_failed = Some(line[at + LOAD_FAILED.len()..].to_string());
        }
        if let Some(rest) = line.strip_prefix(&format!("{MARK} kernel ")) {
            r.release = rest.to_string();
        }
        if line == format!("{MARK} btf no") {
            r.no_btf = true;
        }
        if line == format!("{MARK} done") {
            done = true;
        }
        if line.starts_with("test result: ") {
            summaries += 1;
        }
        if let Some((prog, n, budget)) = verified_line(line) {
            r.verified.insert(prog, (n, budget));
        }
        if let Some(rest) = line.strip_prefix("test ")
            && let Some((name, tail)) = rest.split_once(" ...")
        {
            let tail = tail.trim();
            if verdict(tail) {
                record(&mut r, name.to_string(), tail);
            } else {
                pending = Some(name.to_string());
            }
            continue;
        }
        if verdict(line)
            && let Some(name) = pending.take()
        {
            record(&mut r, name, line);
        }
    }
    if !done && !timed_out {
        r.problems.push("the run ended before its last marker (crash or panic?)".into());
    }
    if summaries < scope.runs() && !timed_out {
        r.problems.push(format!("{summaries} of {} test summaries seen", scope.runs()));
    }
    for (prog, log) in &logs {
        if let Some(error) = verifier_error(log) {
            r.rejected.push(format!("{prog}: {error}"));
        }
    }
    if r.rejected.is_empty()
        && let Some(message) = load_failed
    {
        r.rejected.push(message);
    }
    if scope == Scope::LoadOnly && r.rejected.is_empty() && r.failed.iter().any(|f| f == COST_TEST) {
        r.problems.push(format!("{COST_TEST} failed, but not in loading the object (see the log)"));
    }
    let reports_count = version(&r.release).is_some_and(|v| v >= VERIFIED_INSNS_KERNEL);
    if r.verified.is_empty() && r.failed.iter().all(|f| f != COST_TEST) {
        r.problems.push("no verifier counts printed".into());
    }
    for (prog, (n, budget)) in &r.verified {
        match (n, budget) {
            (Some(n), Some(b)) if n > b => r.problems.push(format!("{prog}: {n} verified instructions > budget {b}")),
            (None, _) if reports_count => r.problems.push(format!(
                "{prog}: no verified-instruction count on {}, which should report it (5.16+)",
                r.release
            )),
            _ => {}
        }
    }
    r
}

/// Why the verifier stopped, from the end of its log: the line before its statistics
/// (`processed N insns ...`, after `verification time` and `stack depth` where the loader
/// asks for them, as aya does), which is where it prints the error (5.10: `invalid func
/// unknown#160`); without statistics the last line that is neither an instruction
/// (`123: (85) call ...`) nor a source or kernel message (`; ...`, `[ 12.3] ...`).
fn verifier_error(log: &[&str]) -> Option<String> {
    let end = log.iter().rposition(|l| l.starts_with("processed ")).unwrap_or(log.len());
    let noise = |l: &str| {
        l.is_empty()
            || l.starts_with("verification time")
            || l.starts_with("stack depth")
            || l.starts_with(';')
            || l.starts_with('[')
            || l.split_once(": ").is_some_and(|(n, _)| n.parse::<u32>().is_ok())
    };
    log[..end].iter().rev().find(|l| !noise(l)).map(|l| l.to_string())
}

/// `ps_xdp: 258000 instructions verified (budget 300000)` or
/// `ps_xdp: verified instructions not reported (budget 300000)`, anywhere in a line.
fn verified_line(line: &str) -> Option<(String, Option<u64>, Option<u64>)> {
    let budget = |s: &str| -> Option<u64> {
        let rest = s.split("(budget ").nth(1)?;
        rest[..rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len())].parse().ok()
    };
    for prog in ["ps_xdp", "ps_tc_egress"] {
        let Some(at) = line.find(&format!("{prog}: ")) else { continue };
        let rest = &line[at + prog.len() + 2..];
        if let Some((n, _)) = rest.split_once(" instructions verified") {
            return Some((prog.into(), n.trim().parse().ok(), budget(rest)));
        }
        if rest.starts_with("verified instructions not reported") {
            return Some((prog.into(), None, budget(rest)));
        }
    }
    None
}

fn print_outcome(o: &Outcome) {
    println!("== kernel {} ({})", o.kernel, o.how);
    match &o.result {
        Err(reason) => println!("   skipped: {reason}\n"),
        Ok(r) => {
            if r.scope == Scope::LoadOnly {
                println!(
                    "   below the minimum ({}.{}, the program tests' floor): only {COST_TEST} ran",
                    MIN_KERNEL.0, MIN_KERNEL.1
                );
            }
            println!("   tests: {} passed, {} failed", r.passed.len(), r.failed.len());
            for f in &r.failed {
                println!("   FAILED {f}");
            }
            for why in &r.rejected {
                println!("   rejected: {why}");
            }
            println!("   {:<14} {:>10} {:>10}", "program", "verified", "budget");
            for (prog, (n, b)) in &r.verified {
                let n = n.map_or("n/a".to_string(), |n| n.to_string());
                let b = b.map_or("?".to_string(), |b| b.to_string());
                println!("   {prog:<14} {n:>10} {b:>10}");
            }
            if r.no_btf {
                println!(
                    "   note: no /sys/kernel/btf/vmlinux (CONFIG_DEBUG_INFO_BTF off): the tests above ran without kernel BTF"
                );
            }
            for p in &r.problems {
                println!("   problem: {p}");
            }
            println!("   {} (log: {})\n", r.verdict(), r.log.display());
        }
    }
}

fn print_matrix(outcomes: &[Outcome]) {
    println!("{:<28} {:<20} {:>7} {:>10} {:>13}  result", "kernel", "how", "tests", "ps_xdp", "ps_tc_egress");
    for o in outcomes {
        match &o.result {
            Err(reason) => {
                println!("{:<28} {:<20} {:>7} {:>10} {:>13}  skipped: {reason}", o.kernel, o.how, "-", "-", "-")
            }
            Ok(r) => {
                let count = |p: &str| {
                    r.verified.get(p).map_or("-".to_string(), |(n, _)| n.map_or("n/a".into(), |n| n.to_string()))
                };
                let tests = match r.scope {
                    Scope::Full => format!("{}/{}", r.passed.len(), r.passed.len() + r.failed.len()),
                    Scope::LoadOnly => "load".into(),
                };
                println!(
                    "{:<28} {:<20} {:>7} {:>10} {:>13}  {}",
                    r.release,
                    o.how,
                    tests,
                    count("ps_xdp"),
                    count("ps_tc_egress"),
                    r.verdict()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_string).collect()
    }

    /// What 5.10 printed (cut): the cost test fails, the verifier log names the helper.
    #[test]
    fn below_the_minimum_rejected() {
        let out = lines(
            "PS-VM kernel 5.10.0-32-amd64\nPS-VM btf yes\nrunning 1 test\n\
             test verifier_cost_stays_within_budget ... \n\
             thread '<unnamed>' (142) panicked at tests/tests/program.rs:451:33:\n\
             the object did not load: the kernel verifier rejected program `ps_xdp`: Invalid argument\n\
             FAILED\ntest result: FAILED. 0 passed; 1 failed\nPS-VM exit 101\nPS-VM done\n\
             PS-VM verifier log /tmp/verifier-ps_xdp.log (last 80 lines)\n; fun()\n\
             2749: (85) call unknown#160\ninvalid func unknown#160\nverification time 1167015 usec\n\
             stack depth 368+24+32+0+0\nprocessed 7460 insns (limit 1000000) max_states_per_insn 5\n\
             PS-VM end\n[   14.782051] reboot: Power down",
        );
        let r = parse(&out, false, "5.10.0-32-amd64", Scope::LoadOnly);
        assert!(r.ok(), "{:?}", r.problems);
        assert_eq!(r.verdict(), "below the minimum: rejected: ps_xdp: invalid func unknown#160");
    }

    #[test]
    fn below_the_minimum_accepted_or_broken() {
        let accepted = lines(
            "PS-VM kernel 5.10.0\nrunning 1 test\ntest verifier_cost_stays_within_budget ... \n\
             ps_xdp: verified instructions not reported (budget 300000; kernel before 5.16)\n\
             ps_tc_egress: verified instructions not reported (budget 50000; kernel before 5.16)\n\
             ok\ntest result: ok. 1 passed\nPS-VM exit 0\nPS-VM done\nPS-VM end",
        );
        assert_eq!(parse(&accepted, false, "5.10.0", Scope::LoadOnly).verdict(), "below the minimum: accepted");
        // A failure before the load (the lab, here) is no finding about the kernel.
        let broken = lines(
            "PS-VM kernel 5.10.0\ntest verifier_cost_stays_within_budget ... \n\
             thread 'x' panicked at tests/src/lib.rs:24:5:\n`sysctl` failed\nFAILED\n\
             test result: FAILED. 0 passed; 1 failed\nPS-VM exit 101\nPS-VM done\nPS-VM end",
        );
        assert!(!parse(&broken, false, "5.10.0", Scope::LoadOnly).ok());
    }

    /// What Ubuntu's OEM 5.14 printed: no kernel BTF, both programs accepted, no counts.
    #[test]
    fn below_the_minimum_accepted_without_btf() {
        let out = lines(
            "PS-VM kernel 5.14.0-1059-oem\nPS-VM btf no\n\nrunning 1 test\n\
             test verifier_cost_stays_within_budget ... \
             ps_xdp: verified instructions not reported (budget 300000; kernel before 5.16)\n\
             ps_tc_egress: verified instructions not reported (budget 50000; kernel before 5.16)\nok\n\n\
             test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 5 filtered out; finished in 14.00s\n\n\
             PS-VM exit 0\nPS-VM done\nPS-VM end\n[   18.295720] reboot: Power down",
        );
        let r = parse(&out, false, "5.14.0-1059-oem", Scope::of((5, 14)));
        assert!(r.ok(), "{:?}", r.problems);
        assert_eq!(r.verdict(), "below the minimum: accepted (no kernel BTF)");
        assert_eq!(r.verified["ps_xdp"], (None, Some(300_000)));
        assert_eq!(r.verified["ps_tc_egress"], (None, Some(50_000)));
    }

    /// Release strings of the matrix's kernels, Debian's and Ubuntu's (ABI and flavour after
    /// the version), and the scope each gets.
    #[test]
    fn releases() {
        for (release, v, scope) in [
            ("5.10.0-32-amd64", (5, 10), Scope::LoadOnly),
            ("5.11.0-46-generic", (5, 11), Scope::LoadOnly),
            ("5.14.0-1059-oem", (5, 14), Scope::LoadOnly),
            ("5.15.0-204-generic", (5, 15), Scope::Full),
            ("6.0.0-1021-oem", (6, 0), Scope::Full),
            ("6.12.117+deb13-amd64", (6, 12), Scope::Full),
        ] {
            assert_eq!(version(release), Some(v), "{release}");
            assert!(Scope::of(v) == scope, "{release}");
        }
        assert_eq!(
            verified_line("ps_xdp: 73577 instructions verified (budget 300000)"),
            Some(("ps_xdp".into(), Some(73_577), Some(300_000)))
        );
    }
}
