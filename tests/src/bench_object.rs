//! The benchmark's eBPF object (`tests/bench-ebpf`, built by `tests/build.rs`): reference
//! programs and flood generators, apart from the shipped object. Its programs that read a
//! policy (`ps_bare`, `ps_tx_spray`) read the policy maps of a loaded agent object.
//!
//! The object declares every map of `ps_ebpf::maps` (rustc keeps each exported map static of
//! a dependency, used or not), and is loaded with the agent object's maps in their place
//! (aya reuses a map pinned where the loader is told to look: they are pinned for the load
//! and unpinned at once). So it reads the agent's policy, counts into its counters, and
//! creates no maps but its own two ([`MAP_TX`], `PS_TX_SEQ`).

use std::{
    fs,
    os::fd::{AsFd as _, AsRawFd as _, RawFd},
    path::PathBuf,
};

use aya::{Ebpf, EbpfLoader, programs::Xdp};
use ps_agent::dataplane::Loaded;
use ps_common::names;

/// The object `tests/build.rs` built (empty under `AYA_BUILD_SKIP=1`).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ps-bench-ebpf"));

/// Returns `XDP_PASS`: the floor a per-packet cost is measured against.
pub const PROG_FLOOR: &str = "ps_floor";
/// One port lookup and one counter: the least an allow-list can do.
pub const PROG_BARE: &str = "ps_bare";
/// Returns `XDP_DROP`: the XDP_DROP-only receiver of the floods.
pub const PROG_DROP: &str = "ps_drop";
/// Redirects every frame into the interface in [`MAP_TX`]: the flood generator.
pub const PROG_TX: &str = "ps_tx";
/// [`PROG_TX`] over many ports, each frame rewritten to ports the policy drops.
pub const PROG_TX_SPRAY: &str = "ps_tx_spray";
/// Every program of the object.
pub const PROGRAMS: [&str; 5] = [PROG_FLOOR, PROG_BARE, PROG_DROP, PROG_TX, PROG_TX_SPRAY];
/// `DevMap`, one entry: where [`PROG_TX`] and [`PROG_TX_SPRAY`] send.
pub const MAP_TX: &str = "PS_TX";
/// The agent's maps the bench programs read (`ps_bare`, `ps_tx_spray`) or count into
/// (`ps_bare`); every other map the two objects have in common is shared too.
pub const POLICY_MAPS: [&str; 3] = [names::MAP_STATE, names::MAP_PORTS, names::MAP_RULE_CNT];

/// The loaded bench object, every program loaded (none attached).
pub struct BenchObject {
    ebpf: Ebpf,
}

impl BenchObject {
    /// Load the object and all its programs with `policy`'s maps: `ps_bare` and
    /// `ps_tx_spray` then see the rule set `policy` holds (`ps_bare` in generation 0 of the
    /// port table, `ps_tx_spray` in the active one), and `ps_bare` counts into its rule
    /// counters. Needs bpffs on /sys/fs/bpf.
    pub fn load(policy: &Loaded) -> Self {
        assert!(
            !OBJECT.is_empty(),
            "the bench's eBPF object is empty: it was built with AYA_BUILD_SKIP=1; rebuild without it"
        );
        for name in POLICY_MAPS {
            assert!(policy.ebpf().map(name).is_some(), "the agent's object has no map `{name}`");
        }
        crate::ensure_bpffs();
        let dir = PathBuf::from(format!("/sys/fs/bpf/{}-bench-{}", crate::prefix(), std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("failed to create pin directory {}: {e}", dir.display()));
        let mut loader = EbpfLoader::new();
        // Every map but the data sections (`.rodata`, `.bss`: each object's own); the loader
        // ignores names its object does not declare.
        let shared: Vec<(&str, PathBuf)> = policy
            .ebpf()
            .maps()
            .filter(|(name, _)| !name.starts_with('.'))
            .map(|(name, map)| {
                let path = dir.join(name);
                map.pin(&path).unwrap_or_else(|e| panic!("failed to pin `{name}` at {}: {e}", path.display()));
                (name, path)
            })
            .collect();
        for (name, path) in &shared {
            loader.map_pin_path(name, path.as_path());
        }
        let loaded = loader.load(OBJECT);
        // The maps live on through the descriptors: the pins were only for the load.
        let _ = fs::remove_dir_all(&dir);
        let mut ebpf = loaded.unwrap_or_else(|e| panic!("failed to load the bench's eBPF object: {e}"));
        for (name, program) in ebpf.programs_mut() {
            let xdp: &mut Xdp = program.try_into().unwrap_or_else(|e| panic!("`{name}` is not XDP: {e}"));
            xdp.load().unwrap_or_else(|e| panic!("failed to load `{name}` of the bench's object: {e}"));
        }
        Self { ebpf }
    }

    /// The program `name` (one of [`PROGRAMS`], or a variant added to the object for a try).
    pub fn program_mut(&mut self, name: &str) -> &mut Xdp {
        let p = self.ebpf.program_mut(name).unwrap_or_else(|| panic!("no program `{name}` in the bench's object"));
        p.try_into().unwrap_or_else(|e| panic!("`{name}` is not XDP: {e}"))
    }

    /// The descriptor of the program `name`, for test runs (valid while `self` lives).
    pub fn fd(&self, name: &str) -> RawFd {
        let p = self.ebpf.program(name).unwrap_or_else(|| panic!("no program `{name}` in the bench's object"));
        p.fd().unwrap_or_else(|e| panic!("`{name}` is not loaded: {e}")).as_fd().as_raw_fd()
    }

    /// The aya object (maps such as [`MAP_TX`]).
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// Names of the object's programs, sorted.
    pub fn program_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.ebpf.programs().map(|(n, _)| n.to_string()).collect();
        v.sort();
        v
    }
}
