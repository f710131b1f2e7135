//! `ps-agent doctor`: checks this host before anything is loaded — kernel version and
//! config, BTF, bpffs, memlock, privileges, and for each interface its driver, whether the
//! driver has native XDP, and other XDP programs already attached.
//!
//! Every check is a pure function of its inputs (kernel release string, config text,
//! `/proc/self/status`, driver name, ...) so it is unit-tested on the host; [`diagnose`]
//! gathers the inputs from the running system. Exit code: 0 all pass, 3 warnings only,
//! 1 any failure.

use std::{fmt, fs, path::Path, process::Command};

use serde::Serialize;

use crate::{
    dataplane::{LoadOptions, Loaded, host, probe},
    ops::coexist,
};

/// Outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Pass,
    /// ps-agent works, with a limitation the detail names.
    Warn,
    /// ps-agent cannot work (or `run` will refuse) until this is fixed.
    Fail,
}

impl Status {
    /// `pass`, `warn`, `fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Warn => "warn",
            Self::Fail => "fail",
        }
    }
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Outcome.
    pub status: Status,
    /// What was checked, e.g. `kernel` or `eth1 driver`.
    pub check: String,
    /// What was found and what to do.
    pub detail: String,
}

impl Check {
    fn new(status: Status, check: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { status, check: check.into(), detail: detail.into() }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}  {:<24}  {}", self.status.as_str(), self.check, self.detail)
    }
}

/// Exit code for a report: 0 all pass, 3 warnings only, 1 any failure.
pub fn exit_code(checks: &[Check]) -> i32 {
    match worst(checks) {
        Status::Fail => 1,
        Status::Warn => EXIT_WARNINGS,
        Status::Pass => 0,
    }
}

/// The exit code of a command that did its work with warnings (`doctor`: warnings only);
/// 2 is a usage error, 1 a failure.
pub const EXIT_WARNINGS: i32 = 3;

/// The worst status among `checks` (pass when there are none).
pub fn worst(checks: &[Check]) -> Status {
    checks.iter().map(|c| c.status).max().unwrap_or(Status::Pass)
}

/// The report as text, one line per check and a summary.
pub fn render(checks: &[Check]) -> String {
    let mut s = String::new();
    for c in checks {
        s.push_str(&c.to_string());
        s.push('\n');
    }
    let n = |st| checks.iter().filter(|c| c.status == st).count();
    s.push_str(&format!("{} pass, {} warn, {} fail\n", n(Status::Pass), n(Status::Warn), n(Status::Fail)));
    s
}

/// The report as JSON: `{checks: [{status, check, detail}], pass, warn, fail, exit_code}`.
pub fn to_json(checks: &[Check]) -> serde_json::Value {
    let n = |st| checks.iter().filter(|c| c.status == st).count();
    serde_json::json!({
        "checks": checks,
        "pass": n(Status::Pass),
        "warn": n(Status::Warn),
        "fail": n(Status::Fail),
        "exit_code": exit_code(checks),
    })
}

/// Enterprise distribution kernels whose version number says little about their BPF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Distro {
    /// RHEL / CentOS 7 (3.10): no XDP at all.
    El7,
    /// RHEL 8 (4.18 with BPF backported from 5.x).
    El8,
    /// RHEL 9 (5.14 with backports).
    El9,
}

/// A parsed `uname -r`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kernel {
    /// (major, minor, patch).
    pub version: (u32, u32, u32),
    /// Enterprise kernel, from the `.elN` tag.
    pub distro: Option<Distro>,
}

impl Kernel {
    /// Parse a kernel release such as `6.18.44-fc-v782` or `4.18.0-305.el8.x86_64`.
    pub fn parse(release: &str) -> Option<Self> {
        let head = release.split(['-', '+', '_']).next()?;
        let mut it = head.split('.').map(|p| p.parse::<u32>());
        let major = it.next()?.ok()?;
        let minor = it.next()?.ok()?;
        let patch = it.next().and_then(Result::ok).unwrap_or(0);
        let tags: Vec<&str> = release.split(['.', '-', '_']).collect();
        let distro = if tags.iter().any(|t| t.starts_with("el7")) {
            Some(Distro::El7)
        } else if tags.iter().any(|t| t.starts_with("el8")) {
            Some(Distro::El8)
        } else if tags.iter().any(|t| t.starts_with("el9")) {
            Some(Distro::El9)
        } else {
            None
        };
        Some(Self { version: (major, minor, patch), distro })
    }

    /// At least `major.minor`?
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.version.0, self.version.1) >= (major, minor)
    }
}

const EXPORT_HINT: &str =
    "enforce the same rule set with netfilter instead: `ps-agent export --format nftables|iptables`";

/// The kernel check: XDP at all (`xdp`: the kernel loads an XDP program, probed; never
/// before 4.8 or on a RHEL 7 kernel), and whether this kernel is one the matrix measured. What
/// the kernel offers beyond XDP is probed, not read off the version: [`feature_checks`].
pub fn kernel_checks(release: &str, xdp: bool) -> Vec<Check> {
    let (min_ma, min_mi) = ps_common::MIN_KERNEL;
    let Some(k) = Kernel::parse(release) else {
        return vec![Check::new(
            Status::Warn,
            "kernel",
            format!("cannot parse kernel release `{release}`; features probed below, the `program` check decides"),
        )];
    };
    if !xdp || k.distro == Some(Distro::El7) || !k.at_least(4, 8) {
        let what = if k.distro == Some(Distro::El7) {
            "a RHEL/CentOS 7 kernel: eBPF there is tracing-only, it has no XDP"
        } else if !k.at_least(4, 8) {
            "older than 4.8, which introduced XDP"
        } else {
            "without XDP: it refuses an XDP program (probed)"
        };
        return vec![Check::new(Status::Fail, "kernel", format!("{release} is {what}; {EXPORT_HINT}"))];
    }
    let check = match k.distro {
        // Version numbers of enterprise kernels say little: the probes and the verifier decide.
        Some(Distro::El8) => Check::new(
            Status::Warn,
            "kernel",
            format!(
                "{release}: RHEL 8 kernel (XDP, BPF backported from 5.x), not tested here: its features are \
                probed below and the `program` check is its verifier's answer; if that refuses, {EXPORT_HINT}"
            ),
        ),
        Some(Distro::El9) => Check::new(
            Status::Pass,
            "kernel",
            format!("{release}: RHEL 9 kernel (5.14 with BPF backports); upstream 5.14 passes (measured)"),
        ),
        _ if !k.at_least(min_ma, min_mi) => Check::new(
            Status::Warn,
            "kernel",
            format!(
                "{release} is older than {min_ma}.{min_mi}, the oldest kernel tested: the `program` check is its \
                verifier's answer"
            ),
        ),
        _ => Check::new(Status::Pass, "kernel", format!("{release} ({min_ma}.{min_mi}+: tested)")),
    };
    vec![check]
}

/// One check per probed kernel feature ([`probe`]): `present`, or `degraded` with
/// what runs instead (a warning where an operator notices: no drop events or dry-run log,
/// netlink attachment), or `missing` (the program tests, which only the test suite needs).
/// A probe that failed is a warning of its own.
pub fn feature_checks(probed: &probe::Probed) -> Vec<Check> {
    let f = &probed.features;
    let mut out: Vec<Check> = probe::Feature::ALL
        .into_iter()
        .map(|x| {
            let status = f.status(x);
            let noticed = matches!(x, probe::Feature::Ringbuf | probe::Feature::BpfLink);
            let detail = match status {
                probe::Status::Present => format!("present: {}", x.what()),
                _ => format!("{}: no {}; {}", status.as_str(), x.what(), x.fallback()),
            };
            let level = if status != probe::Status::Present && noticed { Status::Warn } else { Status::Pass };
            Check::new(level, format!("feature {}", x.name()), detail)
        })
        .collect();
    for e in &probed.errors {
        out.push(Check::new(Status::Warn, "feature probes", e.to_string()));
    }
    out
}

/// The value of `CONFIG_X` in kernel config text (`y`, `m`, a string), `None` if unset.
pub fn config_value<'a>(config: &'a str, key: &str) -> Option<&'a str> {
    config.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('=')).map(str::trim)
}

/// Kernel config checks; `config` is `None` when neither /proc/config.gz nor
/// /boot/config-$(uname -r) could be read. (CONFIG_XDP_SOCKETS is not needed: ps-agent
/// uses no AF_XDP.)
pub fn config_checks(config: Option<(&str, &str)>) -> Vec<Check> {
    let Some((source, text)) = config else {
        return vec![Check::new(
            Status::Warn,
            "kernel config",
            "neither /proc/config.gz nor /boot/config-$(uname -r) is readable: cannot check CONFIG_BPF_SYSCALL, CONFIG_BPF_JIT, CONFIG_DEBUG_INFO_BTF, CONFIG_NET_CLS_ACT (try `modprobe configs`)",
        )];
    };
    let on = |k| matches!(config_value(text, k), Some("y"));
    let on_or_module = |k| matches!(config_value(text, k), Some("y" | "m"));
    let mut out = vec![];
    out.push(if on("CONFIG_BPF_SYSCALL") {
        Check::new(Status::Pass, "CONFIG_BPF_SYSCALL", format!("y ({source})"))
    } else {
        Check::new(
            Status::Fail,
            "CONFIG_BPF_SYSCALL",
            format!("not set in {source}: this kernel has no bpf() system call; {EXPORT_HINT}"),
        )
    });
    out.push(if on("CONFIG_BPF_JIT") {
        Check::new(Status::Pass, "CONFIG_BPF_JIT", "y")
    } else {
        Check::new(
            Status::Warn,
            "CONFIG_BPF_JIT",
            "not set: the program runs in the BPF interpreter, several times slower per packet",
        )
    });
    out.push(if on("CONFIG_DEBUG_INFO_BTF") {
        Check::new(Status::Pass, "CONFIG_DEBUG_INFO_BTF", "y")
    } else {
        Check::new(
            Status::Warn,
            "CONFIG_DEBUG_INFO_BTF",
            "not set: no kernel BTF; ps-agent works, but verifier messages and bpftool output are less helpful",
        )
    });
    out.push(if on("CONFIG_NET_CLS_ACT") && on_or_module("CONFIG_NET_SCH_INGRESS") {
        Check::new(Status::Pass, "clsact", "CONFIG_NET_CLS_ACT and CONFIG_NET_SCH_INGRESS (clsact qdisc for TC programs)")
    } else {
        Check::new(
            Status::Warn,
            "clsact",
            "CONFIG_NET_CLS_ACT or CONFIG_NET_SCH_INGRESS not set: no clsact qdisc; XDP works, but the TC egress program may not attach, and reply admission then falls back to stateless (`reply_tracking`)",
        )
    });
    out
}

/// BTF check.
pub fn btf_check(vmlinux_btf: bool) -> Check {
    if vmlinux_btf {
        Check::new(Status::Pass, "btf", "/sys/kernel/btf/vmlinux")
    } else {
        Check::new(
            Status::Warn,
            "btf",
            "no /sys/kernel/btf/vmlinux (CONFIG_DEBUG_INFO_BTF): ps-agent works, but inspection tools have less to show",
        )
    }
}

/// bpffs check.
/// bpffs check: mounted, and not writable by every user (`mode` of /sys/fs/bpf): on a
/// world-writable mount (1777, what a plain `mount -t bpf` gives) any local user can create
/// directories there; ps-agent refuses a pin directory it did not make, but a private
/// mount closes the door.
pub fn bpffs_check(mounted: bool, mode: Option<u32>) -> Check {
    if !mounted {
        return Check::new(
            Status::Fail,
            "bpffs",
            "no BPF filesystem on /sys/fs/bpf: mount it with `mount -t bpf -o mode=0700 bpf /sys/fs/bpf` (and add it to /etc/fstab)",
        );
    }
    match mode {
        Some(m) if m & 0o002 != 0 => Check::new(
            Status::Warn,
            "bpffs",
            format!(
                "mounted on /sys/fs/bpf with mode {:04o}: any local user can create directories there; remount it private: `mount -o remount,mode=0700 /sys/fs/bpf`",
                m & 0o7777
            ),
        ),
        _ => Check::new(Status::Pass, "bpffs", "mounted on /sys/fs/bpf"),
    }
}

/// memlock check: before 5.11 BPF maps and programs are charged to RLIMIT_MEMLOCK (kernel
/// commit 3ac1f01b43b6 moved them to memcg accounting). `soft` is the soft limit in bytes,
/// `None` for unlimited.
pub fn memlock_check(kernel: Option<&Kernel>, soft: Option<u64>) -> Check {
    const ENOUGH: u64 = 64 << 20;
    let shown = soft.map_or("unlimited".to_string(), |b| format!("{} KiB", b / 1024));
    if kernel.is_some_and(|k| k.at_least(5, 11)) {
        return Check::new(
            Status::Pass,
            "memlock",
            format!("{shown}; not used: kernel 5.11+ charges BPF memory to the cgroup"),
        );
    }
    match soft {
        Some(b) if b < ENOUGH => Check::new(
            Status::Warn,
            "memlock",
            format!(
                "{shown}: kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK and loading may fail; raise it (`ulimit -l unlimited`, LimitMEMLOCK=infinity in the unit)"
            ),
        ),
        _ => Check::new(Status::Pass, "memlock", format!("{shown} (kernel before 5.11 charges BPF maps to it)")),
    }
}

/// `CapEff` from /proc/self/status text.
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    status.lines().find_map(|l| l.strip_prefix("CapEff:")).and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Privilege check from the effective uid and capability set. CAP_BPF and CAP_PERFMON
/// exist from 5.8 (commit a17b53c4a4b5); before that, BPF needs CAP_SYS_ADMIN.
pub fn privilege_check(kernel: Option<&Kernel>, euid: u32, cap_eff: Option<u64>) -> Check {
    let has = |c: u32| cap_eff.is_some_and(|m| m & (1u64 << c) != 0);
    let split_caps = kernel.is_none_or(|k| k.at_least(5, 8));
    let needed: &[(u32, &str)] = if split_caps {
        &[(CAP_BPF, "CAP_BPF"), (CAP_NET_ADMIN, "CAP_NET_ADMIN"), (CAP_PERFMON, "CAP_PERFMON")]
    } else {
        &[(CAP_SYS_ADMIN, "CAP_SYS_ADMIN"), (CAP_NET_ADMIN, "CAP_NET_ADMIN")]
    };
    let missing: Vec<&str> = needed.iter().filter(|(c, _)| !has(*c)).map(|(_, n)| *n).collect();
    let who = if euid == 0 { "root".to_string() } else { format!("uid {euid}") };
    if !missing.is_empty() {
        return Check::new(
            Status::Fail,
            "privileges",
            format!(
                "{who} without {}: run ps-agent as root (the systemd unit grants exactly these)",
                missing.join(", ")
            ),
        );
    }
    let names: Vec<&str> = needed.iter().map(|(_, n)| *n).collect();
    if !has(CAP_SYS_ADMIN) {
        return Check::new(
            Status::Warn,
            "privileges",
            format!(
                "{who} with {}; without CAP_SYS_ADMIN other XDP programs can be seen but not told apart (bpf_link or netlink)",
                names.join(", ")
            ),
        );
    }
    Check::new(Status::Pass, "privileges", format!("{who} with {}", names.join(", ")))
}

/// Native XDP support of a driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support {
    /// Native XDP since this kernel version.
    Native(u32, u32),
    /// Generic (skb) mode only.
    Generic,
    /// Not in the table.
    Unknown,
}

/// Drivers with native XDP and the upstream kernel that added it (driver names as
/// `ethtool -i` prints them). From the kernel's driver sources and the XDP driver list
/// the xdp-project keeps; enterprise kernels may have it earlier (backports).
pub const NATIVE_XDP_DRIVERS: &[(&str, (u32, u32))] = &[
    ("mlx4_en", (4, 8)),
    ("mlx5_core", (4, 9)),
    ("virtio_net", (4, 10)),
    ("nfp", (4, 10)),
    ("qede", (4, 10)),
    ("bnxt_en", (4, 11)),
    ("ixgbe", (4, 12)),
    ("nicvf", (4, 12)),
    ("i40e", (4, 13)),
    ("tun", (4, 14)),
    ("ixgbevf", (4, 17)),
    ("veth", (4, 19)),
    ("netdevsim", (4, 19)),
    ("ena", (5, 5)),
    ("ice", (5, 5)),
    ("sfc", (5, 5)),
    ("mvneta", (5, 5)),
    ("hv_netvsc", (5, 6)),
    ("vif", (5, 9)),
    ("mvpp2", (5, 9)),
    ("igb", (5, 10)),
    ("igc", (5, 13)),
    ("st_gmac", (5, 13)),
    ("bonding", (5, 15)),
    ("fec", (6, 2)),
    ("gve", (6, 4)),
    ("vmxnet3", (6, 6)),
];

/// Drivers known to have no native XDP: generic (skb) mode only.
pub const GENERIC_ONLY_DRIVERS: &[&str] = &["e1000", "e1000e", "r8169", "tg3", "bridge", "8021q", "macvlan"];

/// Native XDP support of `driver`.
pub fn xdp_support(driver: &str) -> Support {
    if let Some((_, (a, b))) = NATIVE_XDP_DRIVERS.iter().find(|(d, _)| *d == driver) {
        Support::Native(*a, *b)
    } else if GENERIC_ONLY_DRIVERS.contains(&driver) {
        Support::Generic
    } else {
        Support::Unknown
    }
}

/// Driver check for interface `iface`.
pub fn driver_check(iface: &str, driver: Option<&str>, kernel: Option<&Kernel>) -> Check {
    let name = format!("{iface} driver");
    let Some(driver) = driver else {
        return Check::new(
            Status::Warn,
            name,
            "driver unknown (no ethtool driver info): `run` tries native XDP and falls back to generic (skb) mode",
        );
    };
    let fallback = "`run` falls back to generic (skb) mode by itself, which costs more CPU per packet";
    match xdp_support(driver) {
        Support::Native(..) if driver == "vmxnet3" && kernel.is_some_and(|k| k.distro == Some(Distro::El8)) => {
            Check::new(Status::Warn, name, format!("vmxnet3: generic XDP only on RHEL 8 kernels; {fallback}"))
        }
        Support::Native(a, b) if kernel.is_none_or(|k| k.at_least(a, b)) => {
            Check::new(Status::Pass, name, format!("{driver}: native XDP (since {a}.{b})"))
        }
        Support::Native(a, b) => Check::new(
            Status::Warn,
            name,
            format!("{driver}: native XDP only from kernel {a}.{b} (unless backported); {fallback}"),
        ),
        Support::Generic => Check::new(Status::Warn, name, format!("{driver}: no native XDP; {fallback}")),
        Support::Unknown => Check::new(
            Status::Warn,
            name,
            format!(
                "{driver}: not in ps-agent's table of native XDP drivers; `run` tries native and falls back to generic"
            ),
        ),
    }
}

/// The check line for the XDP programs already attached to `iface`.
pub fn other_programs_check(iface: &str, found: &Result<Vec<coexist::XdpProgram>, coexist::CoexistError>) -> Check {
    let name = format!("{iface} xdp");
    match found {
        Err(e) => Check::new(Status::Warn, name, format!("cannot tell which XDP programs are attached: {e}")),
        Ok(p) if p.is_empty() => Check::new(Status::Pass, name, "no XDP program attached"),
        Ok(p) => {
            let owners: Vec<String> = p.iter().map(|p| p.to_string()).collect();
            Check::new(
                Status::Fail,
                name,
                format!("another XDP program is attached: {}; `run` refuses: {}", owners.join(", "), p[0].hint(iface)),
            )
        }
    }
}

/// Driver of `iface` through the SIOCETHTOOL ioctl (ETHTOOL_GDRVINFO). Unlike
/// /sys/class/net/IF/device/driver, this asks the kernel in the caller's network namespace.
pub fn ethtool_driver(iface: &str) -> Option<String> {
    const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        version: [u8; 32],
        fw_version: [u8; 32],
        bus_info: [u8; 32],
        erom_version: [u8; 32],
        reserved2: [u8; 12],
        n_priv_flags: u32,
        n_stats: u32,
        testinfo_len: u32,
        eedump_len: u32,
        regdump_len: u32,
    }
    if iface.len() >= libc::IFNAMSIZ {
        return None;
    }
    // SAFETY: all-zero is valid for these plain C structs.
    let mut info: DrvInfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    // SAFETY: as above.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(iface.bytes()) {
        *d = s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = (&raw mut info).cast();
    // SAFETY: a datagram socket only for the ioctl, closed below; the ioctl writes into
    // `info`, which outlives the call, and reads the NUL-terminated name in `ifr`.
    let ok = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return None;
        }
        // The request's type differs by libc (glibc: c_ulong, musl: c_int).
        let rc = libc::ioctl(fd, libc::SIOCETHTOOL as _, &mut ifr);
        libc::close(fd);
        rc == 0
    };
    if !ok {
        return None;
    }
    let end = info.driver.iter().position(|&b| b == 0).unwrap_or(info.driver.len());
    let d = String::from_utf8_lossy(&info.driver[..end]).into_owned();
    (!d.is_empty()).then_some(d)
}

/// `uname -r` of the running kernel.
pub fn kernel_release() -> String {
    // SAFETY: uname fills the zeroed struct.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: as above; release is NUL-terminated by the kernel.
    if unsafe { libc::uname(&mut u) } != 0 {
        return String::new();
    }
    // SAFETY: release is NUL-terminated.
    unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) }.to_string_lossy().into_owned()
}

fn kernel_config(release: &str) -> Option<(String, String)> {
    if let Ok(out) = Command::new("gzip").args(["-dc", "/proc/config.gz"]).output()
        && out.status.success()
        && !out.stdout.is_empty()
    {
        return Some(("/proc/config.gz".into(), String::from_utf8_lossy(&out.stdout).into_owned()));
    }
    let boot = format!("/boot/config-{release}");
    fs::read_to_string(&boot).ok().map(|t| (boot, t))
}

fn memlock_soft() -> Option<u64> {
    // SAFETY: getrlimit fills the zeroed struct.
    let mut r: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) } != 0 || r.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    Some(r.rlim_cur)
}

/// Load the object with the shipped matrix (nothing attached, nothing pinned) and unload
/// it: the verifier's own answer, for kernels whose version number says little (RHEL).
/// Per program the instructions it verified (`None`: not reported, before 5.16).
fn try_load() -> Result<Vec<(&'static str, Option<u32>)>, String> {
    use crate::{
        policy::compile::{HostFacts, compile},
        policy::config::{Config, Mode},
    };
    let set = compile(&Config::shipped(), &HostFacts::typical()).map_err(|e| format!("the shipped matrix: {e}"))?;
    let loaded = Loaded::load(&set, &[], &LoadOptions::new(Mode::DryRun)).map_err(|e| e.to_string())?;
    Ok(loaded.verified_instructions())
}

/// The `program` check from what loading the object told ([`try_load`]).
pub fn program_check(loaded: Result<Vec<(&'static str, Option<u32>)>, String>) -> Check {
    match loaded {
        Ok(programs) => {
            let counts: Vec<String> = programs
                .iter()
                .map(|(name, n)| match n {
                    Some(n) => format!("`{name}` ({n} instructions)"),
                    None => format!("`{name}`"),
                })
                .collect();
            let unreported =
                if programs.iter().any(|(_, n)| n.is_none()) { "; counts not reported before 5.16" } else { "" };
            Check::new(
                Status::Pass,
                "program",
                format!(
                    "this kernel's verifier accepts {}{unreported} (loaded with the shipped matrix and the probed \
                     features, not attached, unloaded)",
                    counts.join(" and ")
                ),
            )
        }
        Err(e) => Check::new(Status::Fail, "program", format!("loading the object failed: {}", one_line(&e))),
    }
}

/// A multi-line message on one line.
fn one_line(text: &str) -> String {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" / ")
}

/// Run every check on this host for `ifaces` (default: eth0 and eth1 where present).
pub fn diagnose(ifaces: &[String]) -> Vec<Check> {
    let release = kernel_release();
    let kernel = Kernel::parse(&release);
    let xdp = aya::sys::is_program_supported(aya::programs::ProgramType::Xdp).unwrap_or(true);
    let mut out = kernel_checks(&release, xdp);
    out.extend(feature_checks(probe::host()));
    let cfg = kernel_config(&release);
    out.extend(config_checks(cfg.as_ref().map(|(s, t)| (s.as_str(), t.as_str()))));
    out.push(btf_check(Path::new("/sys/kernel/btf/vmlinux").exists()));
    let bpffs_mode =
        fs::metadata("/sys/fs/bpf").ok().map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()));
    out.push(bpffs_check(host::is_bpffs(Path::new("/sys/fs/bpf")), bpffs_mode));
    out.push(memlock_check(kernel.as_ref(), memlock_soft()));
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let cap_eff = fs::read_to_string("/proc/self/status").ok().and_then(|s| parse_cap_eff(&s));
    out.push(privilege_check(kernel.as_ref(), euid, cap_eff));
    out.push(program_check(try_load()));

    let names: Vec<String> = if ifaces.is_empty() {
        let present: Vec<String> =
            ["eth0", "eth1"].into_iter().filter(|n| host::ifindex(n).is_some()).map(String::from).collect();
        if present.is_empty() {
            out.push(Check::new(
                Status::Fail,
                "interfaces",
                format!(
                    "neither eth0 nor eth1 exists (interfaces here: {}); name them with --iface here and `interfaces` in the config",
                    host::available_interfaces()
                ),
            ));
        }
        present
    } else {
        ifaces.to_vec()
    };
    let links = host::xdp_link_ids().ok();
    for iface in &names {
        let Some(ifindex) = host::ifindex(iface) else {
            out.push(Check::new(
                Status::Fail,
                iface.clone(),
                format!("interface `{iface}` does not exist; interfaces here: {}", host::available_interfaces()),
            ));
            continue;
        };
        out.push(if ifindex < ps_common::MAX_IFINDEX {
            Check::new(Status::Pass, iface.clone(), format!("exists, ifindex {ifindex}"))
        } else {
            Check::new(
                Status::Fail,
                iface.clone(),
                format!("ifindex {ifindex}: ps-agent supports ifindex below {}", ps_common::MAX_IFINDEX),
            )
        });
        out.push(driver_check(iface, ethtool_driver(iface).as_deref(), kernel.as_ref()));
        out.push(other_programs_check(iface, &coexist::detect_with(iface, links.as_ref())));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worst(c: &[Check]) -> Status {
        c.iter().map(|c| c.status).max().unwrap()
    }

    #[test]
    fn parses_kernel_releases() {
        assert_eq!(Kernel::parse("6.18.44-fc-v782").unwrap().version, (6, 18, 44));
        let k = Kernel::parse("3.10.0-862.el7.x86_64").unwrap();
        assert_eq!((k.version, k.distro), ((3, 10, 0), Some(Distro::El7)));
        assert_eq!(Kernel::parse("4.18.0-305.el8.x86_64").unwrap().distro, Some(Distro::El8));
        assert_eq!(Kernel::parse("5.14.0-427.13.1.el9_4.x86_64").unwrap().distro, Some(Distro::El9));
        assert_eq!(Kernel::parse("6.1").unwrap().version, (6, 1, 0));
        assert!(Kernel::parse("garbage").is_none());
    }

    #[test]
    fn rhel7_fails_and_points_to_export() {
        let c = kernel_checks("3.10.0-862.el7.x86_64", true);
        assert_eq!(worst(&c), Status::Fail);
        assert!(c[0].detail.contains("no XDP"), "{c:?}");
        assert!(c[0].detail.contains("ps-agent export --format nftables|iptables"), "{c:?}");
        let c = kernel_checks("4.4.0-210-generic", true);
        assert_eq!(worst(&c), Status::Fail);
        assert!(c[0].detail.contains("older than 4.8"), "{c:?}");
    }

    #[test]
    fn rhel8_warns() {
        let c = kernel_checks("4.18.0-305.el8.x86_64", true);
        assert_eq!(c[0].status, Status::Warn, "{c:?}");
        assert!(c[0].detail.contains("probed") && c[0].detail.contains("ps-agent export"), "{c:?}");
        assert_eq!(exit_code(&c), EXIT_WARNINGS);
    }

    #[test]
    fn kernel_check_follows_the_probes_and_the_matrix() {
        for release in ["6.18.0", "6.1.0-56-amd64", "5.10.0-32-amd64", "5.4.0-216-generic"] {
            let c = kernel_checks(release, true);
            assert_eq!((c.len(), exit_code(&c)), (1, 0), "{c:?}");
        }
        // Older than the matrix: the verifier decides (a warning, not a failure).
        let c = kernel_checks("4.19.0-27-amd64", true);
        assert_eq!(c[0].status, Status::Warn, "{c:?}");
        // No XDP, by the probe whatever the version says.
        let c = kernel_checks("5.10.0-32-amd64", false);
        assert_eq!(c[0].status, Status::Fail, "{c:?}");
        assert!(c[0].detail.contains("refuses an XDP program") && c[0].detail.contains("ps-agent export"), "{c:?}");
        assert_eq!(kernel_checks("4.4.0-210-generic", true)[0].status, Status::Fail);
        assert_eq!(kernel_checks("5.14.0-427.13.1.el9_4.x86_64", true)[0].status, Status::Pass);
        assert_eq!(kernel_checks("weird", true)[0].status, Status::Warn);
    }

    /// A 5.4-like kernel's probes: no coarse clock, no ring buffer, no XDP link, no TCX, no
    /// test-run context, no variable stack reads; jiffies present.
    #[test]
    fn feature_checks_report_each_probe() {
        let features = probe::Features {
            coarse_clock: false,
            jiffies: true,
            ringbuf: false,
            bpf_link: false,
            tcx: false,
            test_run_ctx: false,
            var_stack: false,
        };
        let c = feature_checks(&probe::Probed { features, errors: vec![] });
        let line = |name: &str| c.iter().find(|c| c.check == format!("feature {name}")).unwrap().clone();
        assert_eq!(c.len(), probe::Feature::ALL.len());
        assert_eq!(line("jiffies").status, Status::Pass);
        assert!(line("jiffies").detail.starts_with("present: bpf_jiffies64"), "{c:?}");
        assert_eq!(line("coarse_clock").status, Status::Pass, "a few ns, nothing an operator notices");
        assert!(line("coarse_clock").detail.starts_with("degraded: no bpf_ktime_get_coarse_ns (5.11)"), "{c:?}");
        assert_eq!(line("ringbuf").status, Status::Warn);
        assert!(line("ringbuf").detail.contains("counted") && line("ringbuf").detail.contains("not logged"), "{c:?}");
        assert_eq!(line("bpf_link").status, Status::Warn);
        assert!(line("bpf_link").detail.contains("netlink"), "{c:?}");
        assert!(line("tcx").detail.contains("clsact"), "{c:?}");
        assert!(line("test_run_ctx").detail.starts_with("missing:"), "{c:?}");
        assert_eq!(exit_code(&c), EXIT_WARNINGS);
        let all = feature_checks(&probe::Probed { features: probe::Features::ALL, errors: vec![] });
        assert_eq!(exit_code(&all), 0, "{all:?}");
    }

    #[test]
    fn program_check_reports_the_verifier() {
        let c = program_check(Ok(vec![("ps_xdp", Some(202_807)), ("ps_tc_egress", Some(26_598))]));
        assert_eq!(c.status, Status::Pass);
        assert!(c.detail.contains("`ps_xdp` (202807 instructions) and `ps_tc_egress` (26598 instructions)"), "{c:?}");
        let c = program_check(Ok(vec![("ps_xdp", None), ("ps_tc_egress", None)]));
        assert!(c.detail.contains("not reported before 5.16"), "{c:?}");
        // 5.10's rejection, as the loader reports it: one line, with what to do.
        let e = crate::dataplane::DataplaneError::Verifier {
            program: "ps_xdp",
            summary: "Permission denied (os error 13); invalid func unknown#160".into(),
            log: "/tmp/verifier-ps_xdp.log".into(),
            hint: crate::dataplane::error::verifier_hint("invalid func unknown#160"),
        };
        let c = program_check(Err(e.to_string()));
        assert_eq!(c.status, Status::Fail);
        assert!(!c.detail.contains('\n'), "{c:?}");
        assert!(
            c.detail.contains("unknown#160") && c.detail.contains("probe") && c.detail.contains("ps-agent export"),
            "{c:?}"
        );
    }

    #[test]
    fn kernel_config_options() {
        let good = "# comment\nCONFIG_BPF_SYSCALL=y\nCONFIG_BPF_JIT=y\nCONFIG_DEBUG_INFO_BTF=y\nCONFIG_NET_CLS_ACT=y\nCONFIG_NET_SCH_INGRESS=m\n";
        let c = config_checks(Some(("/proc/config.gz", good)));
        assert!(c.iter().all(|c| c.status == Status::Pass), "{c:?}");
        let bad = "# CONFIG_BPF_SYSCALL is not set\nCONFIG_BPF_JIT=y\n";
        let c = config_checks(Some(("/boot/config-x", bad)));
        let sys = c.iter().find(|c| c.check == "CONFIG_BPF_SYSCALL").unwrap();
        assert_eq!(sys.status, Status::Fail);
        assert!(sys.detail.contains("/boot/config-x") && sys.detail.contains("ps-agent export"));
        assert_eq!(c.iter().find(|c| c.check == "CONFIG_DEBUG_INFO_BTF").unwrap().status, Status::Warn);
        let clsact = c.iter().find(|c| c.check == "clsact").unwrap();
        assert_eq!(clsact.status, Status::Warn);
        assert!(
            clsact.detail.contains("egress program") && clsact.detail.contains("stateless"),
            "the warning names what stops working: {}",
            clsact.detail
        );
        assert_eq!(config_checks(None)[0].status, Status::Warn);
        assert_eq!(config_value("CONFIG_BPF_JIT_ALWAYS_ON=y\nCONFIG_BPF_JIT=m", "CONFIG_BPF_JIT"), Some("m"));
    }

    #[test]
    fn memlock_matters_only_before_5_11() {
        let old = Kernel::parse("5.4.0").unwrap();
        let new = Kernel::parse("6.1.0").unwrap();
        assert_eq!(memlock_check(Some(&old), Some(64 * 1024)).status, Status::Warn);
        assert!(memlock_check(Some(&old), Some(64 * 1024)).detail.contains("LimitMEMLOCK=infinity"));
        assert_eq!(memlock_check(Some(&old), None).status, Status::Pass);
        assert_eq!(memlock_check(Some(&new), Some(64 * 1024)).status, Status::Pass);
    }

    #[test]
    fn privileges_from_capabilities() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001fffeffffff\n";
        assert_eq!(parse_cap_eff(status), Some(0x1fffeffffff));
        let k = Kernel::parse("6.18.0").unwrap();
        assert_eq!(privilege_check(Some(&k), 0, Some(0x1fffeffffff)).status, Status::Pass);
        let unit_caps = (1 << CAP_BPF) | (1 << CAP_NET_ADMIN) | (1 << CAP_PERFMON);
        assert_eq!(privilege_check(Some(&k), 0, Some(unit_caps)).status, Status::Warn);
        let c = privilege_check(Some(&k), 1000, Some(1 << CAP_NET_ADMIN));
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("uid 1000 without CAP_BPF, CAP_PERFMON"), "{c:?}");
        // Before 5.8 there is no CAP_BPF: CAP_SYS_ADMIN is what counts.
        let old = Kernel::parse("4.18.0-305.el8.x86_64").unwrap();
        let c = privilege_check(Some(&old), 0, Some((1 << CAP_SYS_ADMIN) | (1 << CAP_NET_ADMIN)));
        assert_eq!(c.status, Status::Pass, "{c:?}");
    }

    #[test]
    fn drivers() {
        let k = Kernel::parse("6.18.0").unwrap();
        let el8 = Kernel::parse("4.18.0-305.el8.x86_64").unwrap();
        assert_eq!(driver_check("eth0", Some("veth"), Some(&k)).status, Status::Pass);
        assert_eq!(driver_check("eth0", Some("vmxnet3"), Some(&k)).status, Status::Pass);
        let c = driver_check("eth0", Some("vmxnet3"), Some(&el8));
        assert_eq!(c.status, Status::Warn);
        assert!(c.detail.contains("generic XDP only on RHEL 8"), "{c:?}");
        assert_eq!(driver_check("eth0", Some("e1000"), Some(&k)).status, Status::Warn);
        assert_eq!(driver_check("eth0", Some("mystery"), Some(&k)).status, Status::Warn);
        assert_eq!(driver_check("eth0", None, Some(&k)).status, Status::Warn);
        assert_eq!(xdp_support("mlx5_core"), Support::Native(4, 9));
    }

    #[test]
    fn world_writable_bpffs_warns() {
        assert_eq!(bpffs_check(true, Some(0o40700)).status, Status::Pass);
        let c = bpffs_check(true, Some(0o41777));
        assert_eq!(c.status, Status::Warn);
        assert!(c.detail.contains("1777") && c.detail.contains("mode=0700"), "{}", c.detail);
        assert_eq!(bpffs_check(false, None).status, Status::Fail);
    }

    #[test]
    fn report_format_and_exit_codes() {
        let c = vec![Check::new(Status::Pass, "kernel", "6.18.0"), Check::new(Status::Warn, "btf", "none")];
        assert_eq!(exit_code(&c), EXIT_WARNINGS);
        let text = render(&c);
        assert!(text.starts_with("pass  kernel                    6.18.0\nwarn  btf"), "{text}");
        assert!(text.ends_with("1 pass, 1 warn, 0 fail\n"));
        assert_eq!(exit_code(&c[..1]), 0);
        let j = to_json(&[Check::new(Status::Fail, "x", "y")]);
        assert_eq!(j["exit_code"], 1);
        assert_eq!(j["checks"][0]["status"], "fail");
        assert_eq!(exit_code(&[]), 0);
    }
}
