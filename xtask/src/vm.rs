//! `cargo xtask vm-test`: the kernel matrix. Boots each kernel that `xtask/vm-setup.sh`
//! fetched (Debian and Ubuntu packages, under `target/vm/kernels/`) under QEMU with a small
//! initramfs built here — busybox, the program tests, the smoke test's binaries, `ip`,
//! `nsenter` and `sysctl`, with their shared libraries, the static agent `cargo xtask dist`
//! builds (with none: each run checks it runs alone), and the lab's modules — and runs
//! there the program tests (BPF_PROG_TEST_RUN), `ps-agent doctor` (the features it probes,
//! and its exit code: 0 all pass, 3 warnings only, both a pass) and the live smoke test
//! ([`SMOKE`]: the agent enforcing the shipped matrix on real traffic), reading the results
//! and the verifier's instruction counts off the serial console. The running kernel gets
//! the same natively, as one more row. Kernels too old for the program tests (below
//! [`MIN_KERNEL`]) run only the one that loads the object, then the smoke test: the row says
//! whether the kernel accepts the program (and if not, the verifier's reason) and whether
//! the agent enforces there.
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
/// [`COST_TEST`], which loads the object without running it ([`Scope::LoadOnly`]).
/// docs/dev/kernel-matrix.md documents the same floor.
const MIN_KERNEL: (u32, u32) = (5, 15);

/// `bpf_prog_info.verified_insns` exists from 5.16 (commit aba64c7da983 "bpf: Add
/// verified_insns to bpf_prog_info and fdinfo"): from there on a missing count is a failure.
const VERIFIED_INSNS_KERNEL: (u32, u32) = (5, 16);

/// The test that prints the verifier's work per program, run with `--nocapture`.
const COST_TEST: &str = "verifier_cost_stays_within_budget";

/// The live smoke test, run on every kernel (it needs no test-run context): the agent
/// itself (`ps-agent run`) enforcing the shipped matrix in a namespace lab, with real
/// traffic over veth pairs: open and closed matrix ports answered, others dropped, the
/// counters read through `stats --json`, an outbound connection's reply admitted through
/// the flow table; then forged replies dropped under stateful admission. (test binary,
/// test name).
const SMOKE: [(&str, &str); 2] =
    [("netns", "enforce_shipped_matrix_ipv4"), ("stateful", "forged_replies_pass_stateless_but_not_stateful")];

/// Modules a guest loads (in this order) where its kernel builds them as modules: veth for
/// the lab; sch_ingress (clsact) and cls_bpf for the egress program before TCX (6.6).
/// `xtask/vm-setup.sh` fetches the same list.
const MODULES: [&str; 3] = ["veth", "sch_ingress", "cls_bpf"];

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
    /// Below [`MIN_KERNEL`]: of the program tests only [`COST_TEST`], which loads the
    /// object without running it (and the smoke test, which needs no test-run context).
    LoadOnly,
}

impl Scope {
    fn of(release: (u32, u32)) -> Self {
        if release < MIN_KERNEL { Scope::LoadOnly } else { Scope::Full }
    }

    /// Test runs, each closing with a libtest summary.
    fn runs(self) -> usize {
        SMOKE.len()
            + match self {
                Scope::Full => 2,
                Scope::LoadOnly => 1,
            }
    }
}

/// Options of the task.
pub struct Opts {
    /// Extra kernel images (bzImage) to boot; they need veth (and before 6.6 sch_ingress and
    /// cls_bpf) built in, or their modules next to them (`veth.ko`, ...).
    pub kernels: Vec<PathBuf>,
    /// Skip the native run on the running kernel.
    pub no_host: bool,
    /// Seconds one VM may take before it is killed and counted as failed.
    pub timeout: u64,
    /// Boot only the kernels whose package name or path contains this.
    pub only: Option<String>,
}

/// A kernel to boot.
struct Kernel {
    /// The package's name (or the `--kernel` path).
    name: String,
    /// The bzImage.
    image: PathBuf,
    /// Of [`MODULES`], those the kernel builds as modules.
    modules: Vec<PathBuf>,
    /// The kernel's config, which the guest gets as `/boot/config-<release>` for
    /// `ps-agent doctor`'s config checks (none for a `--kernel` image).
    config: Option<PathBuf>,
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
    /// The kernel features `ps-agent doctor` probed there: name → present, degraded or
    /// missing.
    features: BTreeMap<String, String>,
    /// What `ps-agent doctor` answered as a whole.
    doctor: Doctor,
    /// The agent binary that ran, as the run saw it.
    agent: Option<GuestAgent>,
    /// The kernel has no BTF of its own (`/sys/kernel/btf/vmlinux`, CONFIG_DEBUG_INFO_BTF):
    /// Ubuntu's OEM 5.14 is built so. Not a failure: the object carries its own BTF and needs
    /// no CO-RE relocation, so whether it loads is what the tests say (`ps-agent doctor`
    /// warns, no more).
    no_btf: bool,
    log: PathBuf,
}

/// `ps-agent doctor`'s answer in a run: its exit code (0 all pass, [`DOCTOR_WARNINGS`]
/// warnings only, 1 a failure) and the checks that warned or failed.
#[derive(Default)]
struct Doctor {
    exit: Option<i32>,
    warned: Vec<String>,
    failed: Vec<String>,
}

impl Doctor {
    /// Take one of doctor's lines (`warn  kernel config   neither ...`: status, the check
    /// padded, detail); the feature's name and status word when it is a feature line.
    fn line(&mut self, line: &str) -> Option<(String, String)> {
        let mut cols = line.splitn(3, "  ");
        let (status, check) = (cols.next()?, cols.next()?.trim().to_string());
        let detail = cols.next().unwrap_or("").trim();
        match status {
            "warn" => self.warned.push(check.clone()),
            "fail" => self.failed.push(check.clone()),
            "pass" => {}
            _ => return None,
        }
        let feature = check.strip_prefix("feature ")?.to_string();
        Some((feature, detail.split_whitespace().next()?.trim_end_matches(':').to_string()))
    }

    /// The doctor column: `pass`, `warn` (warnings only: a pass), `FAIL`, `-` (no exit code).
    fn column(&self) -> &'static str {
        match self.exit {
            Some(0) => "pass",
            Some(DOCTOR_WARNINGS) => "warn",
            Some(_) => "FAIL",
            None => "-",
        }
    }

    /// Why the doctor's answer fails the row, if it does: a failed check (exit 1), an exit
    /// code doctor does not use, or none at all.
    fn problem(&self) -> Option<String> {
        match self.exit {
            Some(0 | DOCTOR_WARNINGS) => None,
            Some(1) => Some(format!("`ps-agent doctor` failed (exit 1): {}", self.failed.join(", "))),
            Some(n) => Some(format!("`ps-agent doctor` exited {n}: 0, {DOCTOR_WARNINGS} (warnings) or 1 expected")),
            None => Some("no exit code from `ps-agent doctor`".into()),
        }
    }
}

/// The agent binary a run used, from its [`AGENT`] line.
struct GuestAgent {
    /// Its SHA-256, computed where it ran.
    sha256: String,
    /// `Ok`: it ran alone in an empty root (static); `Err`: why it did not.
    standalone: Result<(), String>,
}

impl GuestAgent {
    /// `<sha256> static` or `<sha256> not static: <why>`.
    fn parse(rest: &str) -> Option<Self> {
        let (sha256, how) = rest.trim().split_once(' ')?;
        let standalone = match how.strip_prefix("not static:") {
            Some(why) => Err(why.trim().to_string()),
            None if how == "static" => Ok(()),
            None => return None,
        };
        Some(Self { sha256: sha256.to_string(), standalone })
    }

    /// Why it fails the row: it is not static, or not the binary built for the run.
    fn problems(&self, built: &str) -> Vec<String> {
        let mut out = Vec::new();
        if let Err(why) = &self.standalone {
            out.push(format!("the agent is not static: it does not run in an empty root ({why})"));
        }
        if self.sha256 != built {
            out.push(format!("the agent that ran (sha256 {}) is not the static build ({built})", self.sha256));
        }
        out
    }

    /// `static`, or `DYNAMIC` when it did not run alone.
    fn kind(&self) -> &'static str {
        if self.standalone.is_ok() { "static" } else { "DYNAMIC" }
    }

    /// The agent column: `static <sha256 prefix>`, or `DYNAMIC <prefix>`.
    fn column(&self) -> String {
        format!("{} {}", self.kind(), &self.sha256[..self.sha256.len().min(12)])
    }
}

impl std::fmt::Display for Doctor {
    /// `pass (exit 0)`, `pass with warnings (exit 3): btf, feature ringbuf`, `FAIL (exit 1):
    /// program`, `no exit code`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.exit {
            None => write!(f, "no exit code"),
            Some(0) => write!(f, "pass (exit 0)"),
            Some(DOCTOR_WARNINGS) => {
                write!(f, "pass with warnings (exit {DOCTOR_WARNINGS}): {}", self.warned.join(", "))
            }
            Some(n) if self.failed.is_empty() => write!(f, "FAIL (exit {n})"),
            Some(n) => write!(f, "FAIL (exit {n}): {}", self.failed.join(", ")),
        }
    }
}

impl Report {
    /// Whether the row counts as passed: every test that ran passed (the smoke test
    /// included), nothing broke. A rejection fails a row on any kernel: the documented
    /// minimum is the oldest kernel of the matrix.
    fn ok(&self) -> bool {
        self.failed.is_empty() && self.problems.is_empty() && !self.passed.is_empty() && self.rejected.is_empty()
    }

    /// The smoke test's column: `pass`, `FAIL`, or `-` (it did not run).
    fn smoke(&self) -> &'static str {
        let ran = |v: &[String]| SMOKE.iter().any(|(_, t)| v.iter().any(|n| n == t));
        if ran(&self.failed) {
            "FAIL"
        } else if SMOKE.iter().all(|(_, t)| self.passed.iter().any(|n| n == t)) {
            "pass"
        } else {
            "-"
        }
    }

    /// The features the kernel lacks, comma-separated (`-`: none; `?`: not probed).
    fn degraded(&self) -> String {
        if self.features.is_empty() {
            return "?".into();
        }
        let lacking: Vec<&str> =
            self.features.iter().filter(|(_, s)| *s != "present").map(|(n, _)| n.as_str()).collect();
        if lacking.is_empty() { "-".into() } else { lacking.join(",") }
    }

    /// The result column: `pass` (and below the program tests' floor, that they did not
    /// run), or `FAIL` with the verifier's reason where it rejected the object.
    fn verdict(&self) -> String {
        let verdict = match (self.ok(), self.scope) {
            (true, Scope::Full) => "pass".to_string(),
            (true, Scope::LoadOnly) => {
                format!("pass (load and live smoke; no program tests before {}.{})", MIN_KERNEL.0, MIN_KERNEL.1)
            }
            (false, _) if self.rejected.is_empty() => "FAIL".into(),
            (false, _) => format!("FAIL, rejected: {}", self.rejected.join("; ")),
        };
        if self.no_btf { format!("{verdict} (no kernel BTF)") } else { verdict }
    }
}

/// Run the matrix. `root` is the workspace root, `cargo` a `cargo` command factory.
pub fn vm_test(root: &Path, cargo: impl Fn() -> Command, opts: &Opts) -> anyhow::Result<()> {
    let vm = root.join("target/vm");
    crate::run(Command::new("bash").arg(root.join("xtask/vm-setup.sh")))?;
    let bins = build_tests(root, &cargo)?.strip(&vm)?;
    let sha = crate::dist::sha256_hex(&bins.agent)?;
    eprintln!("[xtask] the agent every row runs: {} (static, sha256 {sha})", bins.agent.display());

    let mut outcomes = Vec::new();
    if !opts.no_host {
        outcomes.push(host_run(&bins, &vm, &sha)?);
    }
    let mut kernels: Vec<Kernel> = Vec::new();
    let mut dirs: Vec<_> = fs::read_dir(vm.join("kernels"))
        .context("failed to read target/vm/kernels")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join(".complete").exists())
        .collect();
    dirs.sort();
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let image = find_file(&dir.join("boot"), "vmlinuz-").with_context(|| format!("no vmlinuz in {dir:?}"))?;
        let modules = MODULES.iter().filter_map(|m| find_named(&dir, &format!("{m}.ko"))).collect();
        let config = find_file(&dir.join("boot"), "config-");
        kernels.push(Kernel { name, image, modules, config });
    }
    for k in &opts.kernels {
        let modules =
            MODULES.iter().filter_map(|m| k.parent().map(|d| d.join(format!("{m}.ko")))).filter(|m| m.exists());
        kernels.push(Kernel {
            name: k.display().to_string(),
            image: k.clone(),
            modules: modules.collect(),
            config: None,
        });
    }
    kernels.retain(|k| opts.only.as_ref().is_none_or(|o| k.name.contains(o.as_str())));
    let base = initramfs_base(&vm, &bins)?;
    for k in &kernels {
        outcomes.push(boot(&vm, k, &base, opts.timeout, &sha)?);
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

/// What runs in a guest: the program tests, the smoke test's binaries (glibc, with their
/// libraries), the agent (static: no libc in the guest is its).
struct Bins {
    program: PathBuf,
    netns: PathBuf,
    stateful: PathBuf,
    agent: PathBuf,
}

impl Bins {
    /// The tests as copies without debug information under `vm` (named as in the guest's
    /// `/ps`); the agent as `dist` built it, so the guests run the file it packages.
    fn strip(self, vm: &Path) -> anyhow::Result<Self> {
        let strip = |bin: &Path, name: &str| -> anyhow::Result<PathBuf> {
            let out = vm.join(name);
            crate::run(Command::new("objcopy").arg("--strip-debug").arg(bin).arg(&out))?;
            Ok(out)
        };
        Ok(Self {
            program: strip(&self.program, "program")?,
            netns: strip(&self.netns, "netns")?,
            stateful: strip(&self.stateful, "stateful")?,
            agent: self.agent,
        })
    }

    /// The files in `/ps` of the guest, where [`Bins::strip`] names them.
    fn guest() -> Self {
        let at = |n: &str| PathBuf::from("/ps").join(n);
        Self { program: at("program"), netns: at("netns"), stateful: at("stateful"), agent: at("ps-agent") }
    }
}

/// Build with `args` and `--message-format=json`; the executable of each target named in
/// `names`, in that order.
fn build(root: &Path, cargo: &impl Fn() -> Command, args: &[&str], names: &[&str]) -> anyhow::Result<Vec<PathBuf>> {
    let mut cmd = cargo();
    cmd.args(args).arg("--message-format=json");
    eprintln!("[xtask] {}", format!("{cmd:?}").replace('"', ""));
    let out = cmd.current_dir(root).stderr(Stdio::inherit()).output().context("failed to start cargo")?;
    if !out.status.success() {
        bail!("failed to build {}: {}", names.join(", "), out.status);
    }
    let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
    for line in out.stdout.split(|&b| b == b'\n') {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else { continue };
        if v["reason"] == "compiler-artifact"
            && let (Some(name), Some(exe)) = (v["target"]["name"].as_str(), v["executable"].as_str())
        {
            found.insert(name.into(), exe.into());
        }
    }
    names
        .iter()
        .map(|n| found.remove(*n).with_context(|| format!("cargo did not name the executable of `{n}`")))
        .collect()
}

/// The program tests and the smoke test's binaries (`cargo test -p ps-tests --no-run`),
/// and the agent: `dist`'s static build ([`crate::dist::build_static`]).
fn build_tests(root: &Path, cargo: impl Fn() -> Command) -> anyhow::Result<Bins> {
    let tests = ["program", SMOKE[0].0, SMOKE[1].0];
    let mut args = vec!["test", "-p", "ps-tests", "--no-run"];
    for t in tests {
        args.extend(["--test", t]);
    }
    let mut t = build(root, &cargo, &args, &tests)?.into_iter();
    let agent = crate::dist::build_static(root, &cargo)?;
    let mut next = || t.next().expect("one per name");
    Ok(Bins { program: next(), netns: next(), stateful: next(), agent })
}

/// The same tests on the running kernel, outside any VM, in a private mount namespace with
/// its own `/run/netns`, so its lab namespaces cannot collide with a suite running beside it.
fn host_run(bins: &Bins, vm: &Path, agent_sha256: &str) -> anyhow::Result<Outcome> {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    let scope = version(&release).map_or(Scope::Full, Scope::of);
    let script = format!(
        "set -u; mkdir -p /run/netns && mount -t tmpfs ps-vm-test /run/netns || exit 1\n{}",
        test_script(bins, scope)
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script]);
    let log = vm.join(format!("host-{release}.log"));
    eprintln!("[xtask] the program and smoke tests on the running kernel {release} (log: {})", log.display());
    let timeout = Duration::from_secs(300);
    let (lines, hung) = capture(cmd, &log, timeout, timeout)?;
    let mut r = parse(&lines, hung != Hung::No, &release, scope, agent_sha256);
    if hung != Hung::No {
        r.problems.push(format!("timed out after {} s", timeout.as_secs()));
    }
    r.log = log;
    Ok(Outcome { kernel: release, how: "host, no VM".into(), result: Ok(r) })
}

/// What runs the tests, in the VM's /init and on the host: the cost test alone with
/// `--nocapture` (its counts, or the loader's error), the other program tests captured
/// (none below [`MIN_KERNEL`]), the agent's check ([`AGENT`]), `ps-agent doctor` (its
/// lines, marked, and its exit code), and the smoke test.
fn test_script(bins: &Bins, scope: Scope) -> String {
    let (program, agent) = (bins.program.display(), bins.agent.display());
    let others = match scope {
        Scope::Full => format!("\"{program}\" --test-threads=1 --skip {COST_TEST}\necho \"{MARK} exit $?\"\n"),
        Scope::LoadOnly => String::new(),
    };
    let smoke: String = SMOKE
        .iter()
        .map(|(bin, test)| {
            let path = if *bin == "netns" { &bins.netns } else { &bins.stateful };
            format!(
                "PS_AGENT_BIN=\"{agent}\" \"{}\" --test-threads=1 --exact {test}\necho \"{MARK} exit $?\"\n",
                path.display()
            )
        })
        .collect();
    format!(
        r#"echo "{MARK} kernel $(uname -r)"
echo "{MARK} btf $([ -e /sys/kernel/btf/vmlinux ] && echo yes || echo no)"
{others}"{program}" --test-threads=1 --exact {COST_TEST} --nocapture
echo "{MARK} exit $?"
# Static: it runs in a root that holds nothing else (no loader, no libc).
bare=$(mktemp -d) && cp "{agent}" "$bare/ps-agent" && v=$(chroot "$bare" /ps-agent --version 2>&1) \
  && how=static || how="not static: $(printf '%s' "$v" | tr '\n' ' ')"
rm -rf "$bare"
echo "{MARK} {AGENT}$(sha256sum "{agent}" | cut -d' ' -f1) $how"
out=$("{agent}" doctor 2>&1); rc=$?
printf '%s\n' "$out" | sed 's/^/{MARK} {DOCTOR}/'
echo "{MARK} doctor exit $rc"
{smoke}echo "{MARK} done"
"#
    )
}

/// What marks `ps-agent doctor`'s lines in the output.
const DOCTOR: &str = "doctor: ";

/// What marks the agent's line: `agent <sha256> static`, or `agent <sha256> not static:
/// <why>` when it did not run alone in an empty root (`chroot`), as a binary that needs a
/// program interpreter and a libc cannot.
const AGENT: &str = "agent ";

/// `ps-agent doctor`'s exit code for warnings only (`ops::doctor::EXIT_WARNINGS`; xtask
/// depends on nothing of the project): a pass with warnings. 0 is a pass, 1 a failure.
const DOCTOR_WARNINGS: i32 = 3;

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
mount -t bpf -o mode=0700 bpf /sys/fs/bpf
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
ulimit -l unlimited
for m in {modules}; do [ -e /lib/modules/$m.ko ] && insmod /lib/modules/$m.ko; done
# `ps-agent doctor` checks eth0 and eth1; the guest has no NIC (-nic none): a veth pair
# (iproute2's `ip`: this shell runs busybox's applet for a bare `ip`, which has no `peer`).
/usr/bin/ip link add eth0 type veth peer name eth1 && /usr/bin/ip link set eth0 up && /usr/bin/ip link set eth1 up
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
        test_script(&Bins::guest(), scope),
        modules = MODULES.join(" "),
    )
}

/// The files every kernel's initramfs shares (its `/init` is added per kernel, see
/// [`init_script`]): (path in the image, mode, contents).
type Entry = (String, u32, Vec<u8>);

fn initramfs_base(vm: &Path, bins: &Bins) -> anyhow::Result<Vec<Entry>> {
    let mut files: Vec<Entry> = Vec::new();
    let mut add = |dest: &str, src: &Path| -> anyhow::Result<()> {
        let data = fs::read(src).with_context(|| format!("failed to read {}", src.display()))?;
        files.push((dest.to_string(), 0o755, data));
        Ok(())
    };
    add("bin/busybox", &vm.join("busybox"))?;
    let mut libs = std::collections::BTreeSet::new();
    for (src, dest) in [(&bins.program, "program"), (&bins.netns, "netns"), (&bins.stateful, "stateful")] {
        add(&format!("ps/{dest}"), src)?;
        libs.extend(shared_libs(src)?);
    }
    // Static: no library joins it (the tests' glibc is there, so the guest checks it runs
    // without: [`test_script`]).
    add("ps/ps-agent", &bins.agent)?;
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

fn boot(vm: &Path, kernel: &Kernel, base: &[Entry], timeout: u64, agent_sha256: &str) -> anyhow::Result<Outcome> {
    let (name, image) = (kernel.name.as_str(), kernel.image.as_path());
    let release = bzimage_release(image).unwrap_or_else(|| "unknown".into());
    let kvm = fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok();
    let Some(scope) = version(&release).map(Scope::of) else {
        let reason = format!("{name}: cannot read the kernel release from {}", image.display());
        return Ok(Outcome { kernel: release, how: "QEMU".into(), result: Err(reason) });
    };
    if scope == Scope::LoadOnly {
        eprintln!(
            "[xtask] {release} is below {}.{} (BPF_PROG_TEST_RUN takes no xdp_md context, ingress_ifindex, \
             before 5.15): of the program tests only {COST_TEST} runs there (it loads the object), then the \
             live smoke test",
            MIN_KERNEL.0, MIN_KERNEL.1
        );
    }
    let mut files = base.to_vec();
    files.push(("init".into(), 0o755, init_script(scope).into_bytes()));
    for m in &kernel.modules {
        let data = fs::read(m).with_context(|| format!("failed to read {} (rerun xtask/vm-setup.sh)", m.display()))?;
        let name = m.file_name().expect("a module file").to_string_lossy();
        files.push((format!("lib/modules/{name}"), 0o644, data));
    }
    if let Some(config) = &kernel.config {
        let data = fs::read(config).with_context(|| format!("failed to read {}", config.display()))?;
        files.push((format!("boot/config-{release}"), 0o644, data));
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
            .args(["-append", "console=ttyS0 panic=-1 quiet loglevel=1 no_timer_check rdinit=/init"]);
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
    let mut r = parse(&lines, hung != Hung::No, &release, scope, agent_sha256);
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
fn parse(lines: &[String], timed_out: bool, release: &str, scope: Scope, agent_sha256: &str) -> Report {
    let mut r = Report {
        release: release.to_string(),
        scope,
        passed: vec![],
        failed: vec![],
        verified: BTreeMap::new(),
        rejected: vec![],
        problems: vec![],
        features: BTreeMap::new(),
        doctor: Doctor::default(),
        agent: None,
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
        // `PS-VM doctor: warn  feature ringbuf   degraded: no BPF ring buffer (5.8); ...`
        if let Some(rest) = line.strip_prefix(&format!("{MARK} {DOCTOR}")) {
            if let Some((name, status)) = r.doctor.line(rest) {
                r.features.insert(name, status);
            }
            continue;
        }
        if let Some(code) = line.strip_prefix(&format!("{MARK} doctor exit ")) {
            r.doctor.exit = code.trim().parse().ok();
        }
        if let Some(rest) = line.strip_prefix(&format!("{MARK} {AGENT}")) {
            r.agent = GuestAgent::parse(rest);
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
    if r.rejected.is_empty() && r.failed.iter().any(|f| f == COST_TEST) {
        r.problems.push(format!("{COST_TEST} failed, but not in loading the object (see the log)"));
    }
    if r.features.is_empty() && !timed_out {
        r.problems.push("no feature lines from `ps-agent doctor`".into());
    }
    if let Some(problem) = r.doctor.problem().filter(|_| r.doctor.exit.is_some() || !timed_out) {
        r.problems.push(problem);
    }
    match &r.agent {
        None if !timed_out => r.problems.push("no agent line: the run did not check the agent binary".into()),
        None => {}
        Some(a) => r.problems.extend(a.problems(agent_sha256)),
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
                    "   below {}.{} (the program tests' floor): of the program tests only {COST_TEST} ran",
                    MIN_KERNEL.0, MIN_KERNEL.1
                );
            }
            println!("   tests: {} passed, {} failed; live smoke test: {}", r.passed.len(), r.failed.len(), r.smoke());
            let features: Vec<String> = r.features.iter().map(|(n, s)| format!("{n} {s}")).collect();
            println!("   features: {}", if features.is_empty() { "not probed".into() } else { features.join(", ") });
            println!("   doctor: {}", r.doctor);
            match &r.agent {
                Some(a) => println!("   agent: {}, sha256 {}", a.kind(), a.sha256),
                None => println!("   agent: not checked"),
            }
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
    println!(
        "{:<28} {:<20} {:<20} {:>7} {:>6} {:>6} {:>10} {:>13}  {:<32} result",
        "kernel", "how", "agent", "tests", "smoke", "doctor", "ps_xdp", "ps_tc_egress", "degraded features"
    );
    for o in outcomes {
        match &o.result {
            Err(reason) => println!(
                "{:<28} {:<20} {:<20} {:>7} {:>6} {:>6} {:>10} {:>13}  {:<32} skipped: {reason}",
                o.kernel, o.how, "-", "-", "-", "-", "-", "-", "-"
            ),
            Ok(r) => {
                let count = |p: &str| {
                    r.verified.get(p).map_or("-".to_string(), |(n, _)| n.map_or("n/a".into(), |n| n.to_string()))
                };
                let program: Vec<&String> =
                    r.passed.iter().chain(&r.failed).filter(|n| SMOKE.iter().all(|(_, t)| t != n)).collect();
                let passed = program.iter().filter(|n| r.passed.contains(n)).count();
                let tests = match r.scope {
                    Scope::Full => format!("{passed}/{}", program.len()),
                    Scope::LoadOnly => "load".into(),
                };
                println!(
                    "{:<28} {:<20} {:<20} {:>7} {:>6} {:>6} {:>10} {:>13}  {:<32} {}",
                    r.release,
                    o.how,
                    r.agent.as_ref().map_or("-".into(), GuestAgent::column),
                    tests,
                    r.smoke(),
                    r.doctor.column(),
                    count("ps_xdp"),
                    count("ps_tc_egress"),
                    r.degraded(),
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

    /// The SHA-256 of the agent the runs below report.
    const SHA: &str = "5f207f943c2dbfe8baa6073a0d9d44b153ca6ddb5f207f943c2dbfe8baa6073a";

    /// What 5.10 printed before the feature switches (cut): the cost test fails, the
    /// verifier log names the helper. A rejection fails the row.
    #[test]
    fn rejected_fails_with_the_verifiers_reason() {
        let out = lines(
            "PS-VM kernel 5.10.0-32-amd64\nPS-VM btf yes\nrunning 1 test\n\
             test verifier_cost_stays_within_budget ... \n\
             thread '<unnamed>' (142) panicked at tests/tests/program.rs:451:33:\n\
             the object did not load: the kernel verifier rejected program `ps_xdp`: Invalid argument\n\
             FAILED\ntest result: FAILED. 0 passed; 1 failed\nPS-VM exit 101\n\
             PS-VM agent 5f207f943c2dbfe8baa6073a0d9d44b153ca6ddb5f207f943c2dbfe8baa6073a static\n\
             PS-VM doctor: pass  feature coarse_clock  present: bpf_ktime_get_coarse_ns (5.11)\n\
             PS-VM doctor: fail  program                   loading the object failed: ...\n\
             PS-VM doctor exit 1\n\
             test enforce_shipped_matrix_ipv4 ... FAILED\ntest result: FAILED. 0 passed; 1 failed\nPS-VM exit 101\n\
             test forged_replies_pass_stateless_but_not_stateful ... FAILED\ntest result: FAILED. 0 passed; 1 failed\n\
             PS-VM exit 101\nPS-VM done\n\
             PS-VM verifier log /tmp/verifier-ps_xdp.log (last 80 lines)\n; fun()\n\
             2749: (85) call unknown#160\ninvalid func unknown#160\nverification time 1167015 usec\n\
             stack depth 368+24+32+0+0\nprocessed 7460 insns (limit 1000000) max_states_per_insn 5\n\
             PS-VM end\n[   14.782051] reboot: Power down",
        );
        let r = parse(&out, false, "5.10.0-32-amd64", Scope::LoadOnly, SHA);
        assert!(!r.ok());
        assert_eq!(r.problems, ["`ps-agent doctor` failed (exit 1): program"]);
        assert_eq!(r.smoke(), "FAIL");
        assert_eq!(r.verdict(), "FAIL, rejected: ps_xdp: invalid func unknown#160");
    }

    /// What 5.4 prints: the object accepted, the smoke test passing, features degraded.
    #[test]
    fn accepted_with_smoke_and_features() {
        let out = lines(
            "PS-VM kernel 5.4.0-216-generic\nrunning 1 test\ntest verifier_cost_stays_within_budget ... \n\
             ps_xdp: verified instructions not reported (budget 300000; kernel before 5.16)\n\
             ps_tc_egress: verified instructions not reported (budget 50000; kernel before 5.16)\n\
             ok\ntest result: ok. 1 passed\nPS-VM exit 0\n\
             PS-VM agent 5f207f943c2dbfe8baa6073a0d9d44b153ca6ddb5f207f943c2dbfe8baa6073a static\n\
             PS-VM doctor: pass  feature coarse_clock  degraded: no bpf_ktime_get_coarse_ns (5.11); flow ...\n\
             PS-VM doctor: pass  feature jiffies  present: bpf_jiffies64 (5.5)\n\
             PS-VM doctor: warn  feature ringbuf  degraded: no BPF ring buffer (5.8); drop events ...\n\
             PS-VM doctor: pass  feature test_run_ctx  missing: no xdp_md context\n\
             PS-VM doctor: 9 pass, 1 warn, 0 fail\nPS-VM doctor exit 3\n\
             running 1 test\ntest enforce_shipped_matrix_ipv4 ... ok\ntest result: ok. 1 passed\nPS-VM exit 0\n\
             running 1 test\ntest forged_replies_pass_stateless_but_not_stateful ... ok\ntest result: ok. 1 passed\n\
             PS-VM exit 0\nPS-VM done\nPS-VM end",
        );
        let r = parse(&out, false, "5.4.0-216-generic", Scope::LoadOnly, SHA);
        assert!(r.ok(), "{:?}", r.problems);
        assert_eq!(r.smoke(), "pass");
        assert_eq!(r.degraded(), "coarse_clock,ringbuf,test_run_ctx");
        assert_eq!(r.verdict(), "pass (load and live smoke; no program tests before 5.15)");
        assert_eq!(r.verified["ps_xdp"], (None, Some(300_000)));
        assert_eq!(
            (r.doctor.column(), r.doctor.to_string().as_str()),
            ("warn", "pass with warnings (exit 3): feature ringbuf")
        );
        // A broken smoke run fails the row.
        let broken = out
            .iter()
            .map(|l| l.replace("enforce_shipped_matrix_ipv4 ... ok", "enforce_shipped_matrix_ipv4 ... FAILED"))
            .collect::<Vec<_>>();
        let r = parse(&broken, false, "5.4.0-216-generic", Scope::LoadOnly, SHA);
        assert!(!r.ok());
        assert_eq!((r.smoke(), r.verdict().as_str()), ("FAIL", "FAIL"));
        // A failure before the load (the lab, here) is no finding about the kernel.
        let lab = lines(
            "PS-VM kernel 5.10.0\ntest verifier_cost_stays_within_budget ... \n\
             thread 'x' panicked at tests/src/lib.rs:24:5:\n`sysctl` failed\nFAILED\n\
             test result: FAILED. 0 passed; 1 failed\nPS-VM exit 101\nPS-VM done\nPS-VM end",
        );
        let r = parse(&lab, false, "5.10.0", Scope::LoadOnly, SHA);
        assert!(!r.ok() && r.problems.iter().any(|p| p.contains("not in loading")), "{:?}", r.problems);
    }

    /// `ps-agent doctor` exits 0 (all pass), 3 (warnings only: a pass) or 1 (a failure,
    /// which fails the row, naming the checks); any other code, or none, is a problem too.
    #[test]
    fn doctor_exit_codes() {
        let run = |doctor: &str| {
            let out = lines(&format!(
                "PS-VM kernel 6.12.117+deb13-amd64\nrunning 1 test\ntest verifier_cost_stays_within_budget ... \n\
                 ps_xdp: 70188 instructions verified (budget 300000)\nok\ntest result: ok. 1 passed\n\
                 test result: ok. 5 passed\nPS-VM agent {SHA} static\n\
                 PS-VM doctor: pass  kernel                    6.12.117+deb13-amd64 (5.4+: tested)\n\
                 PS-VM doctor: pass  feature ringbuf           present: BPF ring buffer (5.8)\n{doctor}\
                 test enforce_shipped_matrix_ipv4 ... ok\ntest result: ok. 1 passed\n\
                 test forged_replies_pass_stateless_but_not_stateful ... ok\ntest result: ok. 1 passed\n\
                 PS-VM done\nPS-VM end"
            ));
            parse(&out, false, "6.12.117+deb13-amd64", Scope::Full, SHA)
        };
        let r = run("PS-VM doctor exit 0\n");
        assert!(r.ok(), "{:?}", r.problems);
        assert_eq!((r.doctor.column(), r.doctor.to_string().as_str()), ("pass", "pass (exit 0)"));
        assert_eq!(r.features["ringbuf"], "present");

        let r = run("PS-VM doctor: warn  btf                       no /sys/kernel/btf/vmlinux\n\
             PS-VM doctor: warn  eth0 driver               driver unknown\nPS-VM doctor exit 3\n");
        assert!(r.ok(), "warnings only are a pass: {:?}", r.problems);
        assert_eq!(r.doctor.to_string(), "pass with warnings (exit 3): btf, eth0 driver");

        let r = run("PS-VM doctor: warn  btf                       no /sys/kernel/btf/vmlinux\n\
             PS-VM doctor: fail  interfaces                neither eth0 nor eth1 exists\nPS-VM doctor exit 1\n");
        assert!(!r.ok());
        assert_eq!((r.doctor.column(), r.verdict().as_str()), ("FAIL", "FAIL"));
        assert_eq!(r.problems, ["`ps-agent doctor` failed (exit 1): interfaces"]);

        let r = run("PS-VM doctor exit 2\n");
        assert_eq!(r.problems, ["`ps-agent doctor` exited 2: 0, 3 (warnings) or 1 expected"]);
        assert_eq!(r.doctor.to_string(), "FAIL (exit 2)");
        let r = run("");
        assert_eq!(r.problems, ["no exit code from `ps-agent doctor`"]);
        assert_eq!(r.doctor.column(), "-");
    }

    /// Every run says which agent ran: the static build (its SHA-256 prefix in the matrix). A
    /// binary that does not run alone in an empty root (a glibc build needs its loader and
    /// libc), another binary than the one built, or no agent line fails the row.
    #[test]
    fn the_agent_must_be_the_static_build() {
        let run = |agent: &str| {
            let out = lines(&format!(
                "PS-VM kernel 5.4.0-216-generic\nrunning 1 test\ntest verifier_cost_stays_within_budget ... \n\
                 ps_xdp: verified instructions not reported (budget 300000; kernel before 5.16)\n\
                 ok\ntest result: ok. 1 passed\nPS-VM exit 0\n{agent}\
                 PS-VM doctor: warn  feature ringbuf           degraded: no BPF ring buffer (5.8)\n\
                 PS-VM doctor exit 3\n\
                 test enforce_shipped_matrix_ipv4 ... ok\ntest result: ok. 1 passed\n\
                 test forged_replies_pass_stateless_but_not_stateful ... ok\ntest result: ok. 1 passed\n\
                 PS-VM done\nPS-VM end"
            ));
            parse(&out, false, "5.4.0-216-generic", Scope::LoadOnly, SHA)
        };
        let r = run(&format!("PS-VM agent {SHA} static\n"));
        assert!(r.ok(), "{:?}", r.problems);
        assert_eq!(r.agent.as_ref().unwrap().column(), "static 5f207f943c2d");

        // What the init script prints for a glibc binary: chroot finds no interpreter.
        let r = run(&format!(
            "PS-VM agent {SHA} not static: chroot: can't execute '/ps-agent': No such file or directory\n"
        ));
        assert!(!r.ok());
        assert_eq!(r.agent.as_ref().unwrap().column(), "DYNAMIC 5f207f943c2d");
        assert_eq!(
            r.problems,
            ["the agent is not static: it does not run in an empty root \
              (chroot: can't execute '/ps-agent': No such file or directory)"]
        );

        let other = "0".repeat(64);
        let r = run(&format!("PS-VM agent {other} static\n"));
        assert!(!r.ok());
        assert!(r.problems[0].starts_with(&format!("the agent that ran (sha256 {other}) is not the static build")));

        let r = run("");
        assert_eq!(r.problems, ["no agent line: the run did not check the agent binary"]);
        assert!(run("PS-VM agent garbage\n").agent.is_none());
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
