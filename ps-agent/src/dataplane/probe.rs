//! Probe: what this kernel's BPF subsystem offers, asked of the kernel itself (never read
//! off the version number: enterprise kernels backport features). The answers choose the
//! program's load-time switches (`ps_common::names::GLOBAL_*`, `.rodata` globals: the
//! verifier prunes the branch a kernel cannot run, so one object loads everywhere) and the
//! attachment (TCX or clsact); `doctor`, `stats` and the metrics report them.
//!
//! Helpers and map types are probed with aya's probes (a two-instruction program calling
//! the helper, a one-entry map of the type), the verifier's variable stack reads with a
//! ten-instruction program, the attachments with a two-instruction program and errors that
//! tell (see `sys::attach_probes`): nothing on the host is attached or changed.

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::PathBuf,
    sync::OnceLock,
};

use aya::{
    EbpfLoader,
    maps::MapType,
    programs::ProgramType,
    sys::{BpfHelper, is_helper_supported, is_map_supported},
};
use ps_common::names;

/// A kernel feature the agent adapts to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Feature {
    /// `bpf_ktime_get_coarse_ns` (5.11, commit d05512618056 "bpf: Add
    /// bpf_ktime_get_coarse_ns helper").
    CoarseClock,
    /// `bpf_jiffies64` (5.5, commit 5576b991e9c1 "bpf: Add BPF_FUNC_jiffies64").
    Jiffies,
    /// `BPF_MAP_TYPE_RINGBUF` (5.8, commit 457f44363a88 "bpf: Implement BPF ring buffer and
    /// verifier support for it").
    Ringbuf,
    /// XDP attached through a `bpf_link` (5.9, commit aa8d3a716b59 "bpf, xdp: Add
    /// bpf_link-based XDP attachment API").
    BpfLink,
    /// TC programs attached as TCX links (6.6, commit e420bed02507 "bpf: Add fd-based tcx
    /// multi-prog infra with link support").
    Tcx,
    /// BPF_PROG_TEST_RUN with an `xdp_md` context (5.15, commit 47316f4a3053 "bpf: Support
    /// input xdp_md context in BPF_PROG_TEST_RUN"): the program tests only.
    TestRunCtx,
    /// Stack reads at a variable offset, for a privileged program, in the verifier: 5.4
    /// refuses them, 5.10 accepts them (measured with `cargo xtask vm-test`; 5.12 opened
    /// them to every program, commit 01f810ace9ed "bpf: Allow variable-offset stack access").
    VarStack,
}

/// How a feature stands on this kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The kernel has it.
    Present,
    /// The kernel lacks it; the agent runs a fallback (named by [`Feature::fallback`]).
    Degraded,
    /// The kernel lacks it and nothing replaces it (the program tests cannot run).
    Missing,
}

impl Status {
    /// `present`, `degraded`, `missing`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Present => "present",
            Status::Degraded => "degraded",
            Status::Missing => "missing",
        }
    }
}

impl Feature {
    /// Every feature, in report order.
    pub const ALL: [Feature; 7] = [
        Feature::CoarseClock,
        Feature::Jiffies,
        Feature::Ringbuf,
        Feature::BpfLink,
        Feature::Tcx,
        Feature::VarStack,
        Feature::TestRunCtx,
    ];

    /// The name in `doctor`, `stats --json` and the `feature` label of
    /// `ps_agent_feature_degraded`.
    pub fn name(self) -> &'static str {
        match self {
            Feature::CoarseClock => "coarse_clock",
            Feature::Jiffies => "jiffies",
            Feature::Ringbuf => "ringbuf",
            Feature::BpfLink => "bpf_link",
            Feature::Tcx => "tcx",
            Feature::TestRunCtx => "test_run_ctx",
            Feature::VarStack => "var_stack",
        }
    }

    /// The feature from its [`Feature::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    /// What the kernel offers with it, and the upstream release that added it.
    pub fn what(self) -> &'static str {
        match self {
            Feature::CoarseClock => "bpf_ktime_get_coarse_ns (5.11)",
            Feature::Jiffies => "bpf_jiffies64 (5.5)",
            Feature::Ringbuf => "BPF ring buffer (5.8)",
            Feature::BpfLink => "bpf_link for XDP (5.9)",
            Feature::Tcx => "TCX links (6.6)",
            Feature::TestRunCtx => "xdp_md context in BPF_PROG_TEST_RUN (5.15)",
            Feature::VarStack => "variable-offset stack reads in the verifier (after 5.4)",
        }
    }

    /// What runs where the kernel lacks it.
    pub fn fallback(self) -> &'static str {
        match self {
            Feature::CoarseClock => "flow timestamps read bpf_ktime_get_ns (a few ns more per tracked packet)",
            Feature::Jiffies => "the event rate limiter reads the clock on every drop (a few ns more per drop)",
            Feature::Ringbuf => {
                "drop events and the dry-run log are not sent: drops are counted (`stats`) and \
                 dry-run would-drops recorded (`report`), not logged"
            }
            Feature::BpfLink => {
                "XDP attached through netlink: it survives a crashed agent (`ps-agent unload`, \
                 `ip link set dev IF xdp off`)"
            }
            Feature::Tcx => "the egress program hangs off a clsact qdisc (netlink)",
            Feature::TestRunCtx => "the program tests (BPF_PROG_TEST_RUN with an ingress ifindex) cannot run here",
            Feature::VarStack => "flow timeouts are chosen by branches (the same verdicts; more verifier work)",
        }
    }

    /// Whether the agent replaces it when the kernel lacks it.
    fn has_fallback(self) -> bool {
        self != Feature::TestRunCtx
    }
}

/// What the kernel offers, one flag per [`Feature`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Features {
    /// [`Feature::CoarseClock`].
    pub coarse_clock: bool,
    /// [`Feature::Jiffies`].
    pub jiffies: bool,
    /// [`Feature::Ringbuf`].
    pub ringbuf: bool,
    /// [`Feature::BpfLink`].
    pub bpf_link: bool,
    /// [`Feature::Tcx`].
    pub tcx: bool,
    /// [`Feature::TestRunCtx`].
    pub test_run_ctx: bool,
    /// [`Feature::VarStack`].
    #[serde(default)]
    pub var_stack: bool,
}

/// Features that `PS_AGENT_DISABLE_FEATURES` may switch off (the others are aya's choice or
/// the tests' alone).
pub const DISABLE_ENV: &str = "PS_AGENT_DISABLE_FEATURES";

impl Features {
    /// Everything present (the object's defaults).
    pub const ALL: Features = Features {
        coarse_clock: true,
        jiffies: true,
        ringbuf: true,
        bpf_link: true,
        tcx: true,
        test_run_ctx: true,
        var_stack: true,
    };

    /// Whether the kernel has `f`.
    pub fn has(&self, f: Feature) -> bool {
        match f {
            Feature::CoarseClock => self.coarse_clock,
            Feature::Jiffies => self.jiffies,
            Feature::Ringbuf => self.ringbuf,
            Feature::BpfLink => self.bpf_link,
            Feature::Tcx => self.tcx,
            Feature::TestRunCtx => self.test_run_ctx,
            Feature::VarStack => self.var_stack,
        }
    }

    fn set(&mut self, f: Feature, on: bool) {
        match f {
            Feature::CoarseClock => self.coarse_clock = on,
            Feature::Jiffies => self.jiffies = on,
            Feature::Ringbuf => self.ringbuf = on,
            Feature::BpfLink => self.bpf_link = on,
            Feature::Tcx => self.tcx = on,
            Feature::TestRunCtx => self.test_run_ctx = on,
            Feature::VarStack => self.var_stack = on,
        }
    }

    /// How `f` stands.
    pub fn status(&self, f: Feature) -> Status {
        match (self.has(f), f.has_fallback()) {
            (true, _) => Status::Present,
            (false, true) => Status::Degraded,
            (false, false) => Status::Missing,
        }
    }

    /// The features this kernel lacks (degraded or missing).
    pub fn lacking(&self) -> Vec<Feature> {
        Feature::ALL.into_iter().filter(|f| !self.has(*f)).collect()
    }

    /// Switch off the features named in `list` (comma-separated [`Feature::name`]s; only
    /// the load-time switches and TCX, which the agent chooses). For testing the fallbacks
    /// on a kernel that has everything.
    ///
    /// # Errors
    ///
    /// A name that is not such a feature.
    pub fn disable(&mut self, list: &str) -> Result<(), ProbeError> {
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match Feature::from_name(name) {
                Some(
                    f @ (Feature::CoarseClock | Feature::Jiffies | Feature::Ringbuf | Feature::Tcx | Feature::VarStack),
                ) => self.set(f, false),
                _ => return Err(ProbeError::Disable { name: name.into() }),
            }
        }
        Ok(())
    }
}

/// A probe that could not answer.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// A helper or map probe failed in an unexpected way.
    #[error("failed to probe {what}: {detail}; assuming the kernel lacks it")]
    Probe {
        /// The feature.
        what: &'static str,
        /// aya's error.
        detail: String,
    },
    /// A syscall of the attachment probes failed.
    #[error("failed to {action} for the attachment probes: {source}; assuming the kernel lacks bpf_link and TCX")]
    Syscall {
        /// What was tried.
        action: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// `PS_AGENT_DISABLE_FEATURES` names something that cannot be switched off.
    #[error(
        "`{name}` in {DISABLE_ENV} is not a feature the agent can switch off (coarse_clock, jiffies, ringbuf, tcx, var_stack)"
    )]
    Disable {
        /// The name given.
        name: String,
    },
}

/// The probes' answer, with what could not be asked.
#[derive(Debug)]
pub struct Probed {
    /// What the kernel offers (with `PS_AGENT_DISABLE_FEATURES` applied).
    pub features: Features,
    /// Probes that failed (their feature counts as absent).
    pub errors: Vec<ProbeError>,
}

/// Probe the running kernel once per process (see [`probe`]).
pub fn host() -> &'static Probed {
    static PROBED: OnceLock<Probed> = OnceLock::new();
    PROBED.get_or_init(probe)
}

/// Probe the running kernel, then apply `PS_AGENT_DISABLE_FEATURES`.
pub fn probe() -> Probed {
    let mut errors = Vec::new();
    let mut ask = |what: &'static str, r: Result<bool, String>| {
        r.unwrap_or_else(|detail| {
            errors.push(ProbeError::Probe { what, detail });
            false
        })
    };
    let helper = |h: BpfHelper| is_helper_supported(ProgramType::Xdp, h).map_err(|e| e.to_string());
    let mut features = Features {
        coarse_clock: ask(Feature::CoarseClock.what(), helper(BpfHelper::BPF_FUNC_ktime_get_coarse_ns)),
        jiffies: ask(Feature::Jiffies.what(), helper(BpfHelper::BPF_FUNC_jiffies64)),
        ringbuf: ask(Feature::Ringbuf.what(), is_map_supported(MapType::RingBuf).map_err(|e| e.to_string())),
        var_stack: sys::var_stack_probe(),
        ..Features::default()
    };
    match sys::attach_probes() {
        Ok((bpf_link, tcx, test_run_ctx)) => {
            features.bpf_link = bpf_link;
            features.tcx = tcx;
            features.test_run_ctx = test_run_ctx;
        }
        Err(e) => errors.push(e),
    }
    if let Ok(list) = std::env::var(DISABLE_ENV)
        && let Err(e) = features.disable(&list)
    {
        errors.push(e);
    }
    Probed { features, errors }
}

/// Set the program's switches for `f` on `loader`, and stand in for the maps the kernel
/// cannot create: without a ring buffer, `PS_EVENTS` and aya-log's `AYA_LOGS` become
/// one-entry arrays (pinned for the load, see [`Placeholders`]), which only the pruned
/// branches name. Keep the returned value until the programs are loaded.
///
/// # Errors
///
/// A placeholder map could not be created or pinned.
pub fn configure<'a>(loader: &mut EbpfLoader<'a>, f: &Features) -> Result<Placeholders, io::Error> {
    let flag = |on: bool| -> &'static u32 { if on { &1 } else { &0 } };
    loader
        .override_global(names::GLOBAL_COARSE_CLOCK, flag(f.coarse_clock), true)
        .override_global(names::GLOBAL_JIFFIES, flag(f.jiffies), true)
        .override_global(names::GLOBAL_RINGBUF, flag(f.ringbuf), true)
        .override_global(names::GLOBAL_VAR_STACK, flag(f.var_stack), true);
    let mut placeholders = Placeholders(Vec::new());
    if !f.ringbuf {
        // aya-log's macros test the level first: 0 prunes every log statement.
        loader.override_global(aya_log::LEVEL, &0u8, true);
        for name in [names::MAP_EVENTS, names::MAP_AYA_LOGS] {
            let path = placeholders.add(name)?;
            loader.map_pin_path(name, path);
        }
    }
    Ok(placeholders)
}

/// Pins of the placeholder maps, removed on drop (the loaded programs keep the maps).
#[derive(Debug)]
pub struct Placeholders(Vec<PathBuf>);

impl Placeholders {
    fn add(&mut self, name: &str) -> Result<PathBuf, io::Error> {
        // Unique per load (loads may run side by side in one process); bpffs refuses dots.
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = PathBuf::from(format!("/sys/fs/bpf/ps-agent-placeholder-{}-{seq}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let map = sys::placeholder_map()?;
        sys::pin(&map, &path)?;
        self.0.push(path.clone());
        Ok(path)
    }
}

impl Drop for Placeholders {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// One line for a log or `doctor`: the features this kernel lacks and what runs instead.
pub fn summary(f: &Features) -> String {
    let lacking: Vec<String> = f
        .lacking()
        .into_iter()
        .filter(|x| *x != Feature::TestRunCtx)
        .map(|x| format!("{} missing: {}", x.what(), x.fallback()))
        .collect();
    if lacking.is_empty() { "every kernel feature present".into() } else { lacking.join("; ") }
}

/// The raw `bpf(2)` calls of the attachment probes and the placeholders (aya has no public
/// call for them).
mod sys {
    use super::*;

    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_OBJ_PIN: libc::c_long = 6;
    const BPF_PROG_TEST_RUN: libc::c_long = 10;
    const BPF_LINK_CREATE: libc::c_long = 28;
    const BPF_MAP_TYPE_ARRAY: u64 = 2;
    const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
    const BPF_PROG_TYPE_XDP: u32 = 6;
    const BPF_XDP: u64 = 37;
    const BPF_TCX_EGRESS: u64 = 47;
    const XDP_FLAGS_SKB_MODE: u64 = 1 << 1;

    /// `bpf(cmd, attr)` for a command that returns a new file descriptor (map create,
    /// program load, link create): `attr` is `union bpf_attr` as 16 words, zero where unused.
    fn bpf(cmd: libc::c_long, attr: &mut [u64; 16]) -> io::Result<OwnedFd> {
        // SAFETY: `attr` is a 128-byte, 8-aligned `union bpf_attr` the kernel reads and may
        // write within its size; every pointer in it outlives the call.
        let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), 128usize) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: these commands return a new descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
    }

    /// `bpf(cmd, attr)` for the commands that return 0 on success.
    fn status(cmd: libc::c_long, attr: &mut [u64; 16]) -> io::Result<()> {
        // SAFETY: as in `bpf`.
        let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), 128usize) };
        if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    /// A program of `prog_type` that returns 0: `r0 = 0; exit`.
    fn trivial_program(prog_type: u32) -> io::Result<OwnedFd> {
        program(prog_type, &[0xb7, 0x95])
    }

    /// One instruction: `code`, registers, offset, immediate.
    const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
        code as u64 | ((dst | src << 4) as u64) << 8 | (off as u16 as u64) << 16 | (imm as u32 as u64) << 32
    }

    /// Whether the verifier accepts a read of 4 initialised stack bytes at a random
    /// offset (0, 4, 8 or 12 from fp-16). Any error means no.
    pub fn var_stack_probe() -> bool {
        let insns = [
            insn(0x85, 0, 0, 0, 7),    // call bpf_get_prandom_u32
            insn(0x57, 0, 0, 0, 12),   // r0 &= 12
            insn(0x7a, 10, 0, -16, 0), // *(u64 *)(r10 - 16) = 0
            insn(0x7a, 10, 0, -8, 0),  // *(u64 *)(r10 - 8) = 0
            insn(0xbf, 1, 10, 0, 0),   // r1 = r10
            insn(0x07, 1, 0, 0, -16),  // r1 += -16
            insn(0x0f, 1, 0, 0, 0),    // r1 += r0
            insn(0x61, 0, 1, 0, 0),    // r0 = *(u32 *)(r1 + 0)
            insn(0xb7, 0, 0, 0, 2),    // r0 = XDP_PASS
            insn(0x95, 0, 0, 0, 0),    // exit
        ];
        program(BPF_PROG_TYPE_XDP, &insns).is_ok()
    }

    /// Load `insns` as a program of `prog_type`.
    fn program(prog_type: u32, insns: &[u64]) -> io::Result<OwnedFd> {
        let license = c"GPL";
        let mut attr = [0u64; 16];
        attr[0] = prog_type as u64 | (insns.len() as u64) << 32;
        attr[1] = insns.as_ptr() as u64;
        attr[2] = license.as_ptr() as u64;
        bpf(BPF_PROG_LOAD, &mut attr)
    }

    /// `BPF_LINK_CREATE` of `prog` on `ifindex`.
    fn link_create(prog: &OwnedFd, ifindex: u32, attach_type: u64, flags: u64) -> io::Result<OwnedFd> {
        let mut attr = [0u64; 16];
        attr[0] = prog.as_raw_fd() as u64 | (ifindex as u64) << 32;
        attr[1] = attach_type | flags << 32;
        bpf(BPF_LINK_CREATE, &mut attr)
    }

    /// BPF_PROG_TEST_RUN of `prog` on a zeroed 64-byte frame with an `xdp_md` naming
    /// `ifindex`.
    fn test_run_ctx(prog: &OwnedFd, ifindex: u32) -> io::Result<()> {
        let frame = [0u8; 64];
        let ctx = super::super::loaded::xdp_md_ctx(ifindex, frame.len() as u32);
        let mut attr = [0u64; 16];
        attr[0] = prog.as_raw_fd() as u64;
        attr[1] = frame.len() as u64;
        attr[2] = frame.as_ptr() as u64;
        attr[5] = ctx.len() as u64;
        attr[6] = ctx.as_ptr() as u64;
        status(BPF_PROG_TEST_RUN, &mut attr)
    }

    /// Whether an XDP `bpf_link`, a TCX link and a test run with an `xdp_md` context work:
    /// (bpf_link, tcx, test_run_ctx). Nothing is attached outside a private network
    /// namespace, and nothing on the host changes:
    /// - TCX: a link to a device that does not exist fails with ENODEV where the kernel has
    ///   TCX (the attach type is known and the device looked up), EINVAL before;
    /// - test run: on loopback, ifindex 1 in every namespace;
    /// - XDP link: attached to the loopback device of a private network namespace, made on a
    ///   thread of its own and gone with it (a missing device gives EINVAL either way). Where
    ///   no namespace can be made (no CAP_SYS_ADMIN, as under the systemd unit, or
    ///   `RestrictNamespaces`), whether the kernel has `bpf_xdp_link_attach`
    ///   (`/proc/kallsyms`).
    pub fn attach_probes() -> Result<(bool, bool, bool), ProbeError> {
        let xdp = trivial_program(BPF_PROG_TYPE_XDP)
            .map_err(|source| ProbeError::Syscall { action: "load an XDP probe program", source })?;
        let cls = trivial_program(BPF_PROG_TYPE_SCHED_CLS)
            .map_err(|source| ProbeError::Syscall { action: "load a TC probe program", source })?;
        let tcx =
            link_create(&cls, u32::MAX, BPF_TCX_EGRESS, 0).err().and_then(|e| e.raw_os_error()) == Some(libc::ENODEV);
        let test_run = test_run_ctx(&xdp, 1).is_ok();
        let link = std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: moves this thread, and only it, into a new network namespace,
                // which goes away with the thread.
                if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                    return None;
                }
                Some(link_create(&xdp, 1, BPF_XDP, XDP_FLAGS_SKB_MODE).is_ok())
            })
            .join()
            .ok()
            .flatten()
        });
        let link = link.unwrap_or_else(|| {
            std::fs::read_to_string("/proc/kallsyms")
                .is_ok_and(|k| k.lines().any(|l| l.split_whitespace().nth(2) == Some("bpf_xdp_link_attach")))
        });
        Ok((link, tcx, test_run))
    }

    /// A one-entry `u32` array, the stand-in for a map type the kernel lacks.
    pub fn placeholder_map() -> io::Result<OwnedFd> {
        let mut attr = [0u64; 16];
        attr[0] = BPF_MAP_TYPE_ARRAY | 4 << 32;
        attr[1] = 4 | 1 << 32;
        bpf(BPF_MAP_CREATE, &mut attr)
    }

    /// Pin `fd` at `path` (on bpffs).
    pub fn pin(fd: &OwnedFd, path: &std::path::Path) -> io::Result<()> {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
        let mut attr = [0u64; 16];
        attr[0] = c.as_ptr() as u64;
        attr[1] = fd.as_raw_fd() as u64;
        status(BPF_OBJ_PIN, &mut attr).map_err(|e| {
            io::Error::new(e.kind(), format!("failed to pin a placeholder map at {}: {e}", path.display()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_statuses() {
        for f in Feature::ALL {
            assert_eq!(Feature::from_name(f.name()), Some(f));
        }
        let mut f = Features::ALL;
        assert!(f.lacking().is_empty());
        assert_eq!(summary(&f), "every kernel feature present");
        f.disable("ringbuf, coarse_clock").unwrap();
        assert_eq!(f.lacking(), vec![Feature::CoarseClock, Feature::Ringbuf]);
        assert_eq!(f.status(Feature::Ringbuf), Status::Degraded);
        f.test_run_ctx = false;
        assert_eq!(f.status(Feature::TestRunCtx), Status::Missing);
        assert!(summary(&f).starts_with("bpf_ktime_get_coarse_ns (5.11) missing: flow timestamps"), "{}", summary(&f));
        assert!(f.disable("bpf_link").is_err(), "aya chooses the XDP attachment");
        assert!(f.disable("nope").is_err());
    }
}
