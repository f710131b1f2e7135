//! Feature switches: `.rodata` globals the agent sets at load time from its kernel probes
//! (names: `ps_common::names::GLOBAL_*`). Read with a volatile load (`Global::load`), so
//! LLVM keeps both branches; the kernel knows a frozen read-only map's contents (5.2,
//! commit a23740ec43ba "bpf: Track contents of read-only maps as scalars") and never
//! verifies the branch a kernel cannot run, so one object loads everywhere. Defaults:
//! every feature on.

use aya_ebpf::{
    Global,
    helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns, bpf_ktime_get_ns},
};

/// `bpf_ktime_get_coarse_ns` (kernel 5.11).
#[unsafe(no_mangle)]
static PS_F_COARSE: Global<u32> = Global::new(1);
/// `bpf_jiffies64` (kernel 5.5).
#[unsafe(no_mangle)]
static PS_F_JIFFIES: Global<u32> = Global::new(1);
/// `BPF_MAP_TYPE_RINGBUF` (kernel 5.8): `PS_EVENTS` and aya-log's map are real ring buffers.
#[unsafe(no_mangle)]
static PS_F_RINGBUF: Global<u32> = Global::new(1);

/// Variable-offset stack reads in the verifier for a privileged program (refused by 5.4,
/// accepted by 5.10: measured).
#[unsafe(no_mangle)]
static PS_F_VARSTACK: Global<u32> = Global::new(1);

/// Whether the verifier allows reading the stack at a variable offset.
#[inline(always)]
pub fn var_stack() -> bool {
    PS_F_VARSTACK.load() != 0
}

/// Whether drop events and the dry-run log have a ring buffer to go to.
#[inline(always)]
pub fn ringbuf() -> bool {
    PS_F_RINGBUF.load() != 0
}

/// The clock of flow timestamps: the coarse clock (CLOCK_MONOTONIC_COARSE, a tick's
/// resolution, plenty for timeouts in seconds, and a fraction of `bpf_ktime_get_ns`'s cost
/// on a path every tracked packet takes) where the kernel has it, else the fine one. Both
/// count from boot, so flows of either compare (the agent reads `CLOCK_MONOTONIC`).
#[inline(always)]
pub fn flow_now() -> u64 {
    if PS_F_COARSE.load() != 0 {
        // SAFETY: no preconditions.
        unsafe { bpf_ktime_get_coarse_ns() }
    } else {
        // SAFETY: no preconditions.
        unsafe { bpf_ktime_get_ns() }
    }
}

/// The kernel tick (`bpf_jiffies64`), or `None` where the kernel lacks it.
#[inline(always)]
pub fn tick() -> Option<u64> {
    // SAFETY: no preconditions.
    (PS_F_JIFFIES.load() != 0).then(|| unsafe { bpf_jiffies64() })
}
