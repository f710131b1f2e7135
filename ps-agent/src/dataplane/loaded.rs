//! The loaded object: the eBPF programs and maps of one agent, sized for its rule set.
//! [`Loaded::load`] loads and verifies; the sibling modules attach ([`super::attach`]),
//! write policies ([`super::write`]), keep links ([`super::links`]) and seed flows
//! ([`super::flows`]).

use std::{
    fs,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::{
        ProgramError, SchedClassifier, TestRun as _, TestRunOptions, Xdp, tc::SchedClassifierLinkId, xdp::XdpLinkId,
    },
};
use ps_common::{
    GENERATIONS, MAX_IFACES,
    layout::{DEFAULT_SRC_ENTRIES, FlowKey, FlowState},
    names,
};

use super::probe::Features;
use super::{
    Counters, DataplaneError, counter_pins,
    error::{load_error, map_err, missing_map},
};
use crate::policy::{compile::RuleSet, config::Mode};

/// The eBPF object built by `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ps-ebpf"));

/// The loaded program and its maps.
pub struct Loaded {
    pub(super) ebpf: Ebpf,
    /// XDP links by interface.
    pub(super) links: Vec<(String, XdpLinkId)>,
    /// Egress links by interface.
    pub(super) tc_links: Vec<(String, SchedClassifierLinkId)>,
    /// Port-table entries written into each generation (to clear on the next write).
    pub(super) written: [std::collections::BTreeSet<(ps_common::layout::L4, u16)>; 2],
    /// The active generation.
    pub(super) generation: u32,
    /// Counter capacity the maps were sized for.
    pub rules_cap: u32,
    /// The policy in force: rule set, generation, mode.
    pub(super) policy: Option<(RuleSet, u32, Mode)>,
    /// Where links are pinned as they are attached (`on_exit = "keep"`), if they are.
    pub(super) keep: Option<PathBuf>,
    /// The links held outside the programs so that they outlive the process.
    pub(super) kept: Vec<super::links::Kept>,
    /// The kernel features the program was loaded for.
    pub(super) features: Features,
}

/// Load-time choices.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Initial mode.
    pub mode: Mode,
    /// Entries of the flow table.
    pub flow_table_size: u32,
    /// Where a rejected program's verifier log goes.
    pub verifier_log_dir: PathBuf,
    /// Pin (and reuse) the counter maps here, so that they survive a restart
    /// (`crate::dataplane::counter_pins`); `None`: fresh, unpinned counters (program tests).
    pub counters_pin_dir: Option<PathBuf>,
    /// Pin every link here as it is attached (`on_exit = "keep"`), so that enforcement
    /// outlives a crash (`crate::dataplane::links`); `None`: links go with the process.
    pub keep_links: Option<PathBuf>,
    /// The kernel features to use ([`super::probe`]): the program's switches and the
    /// egress attachment follow them.
    pub features: Features,
}

impl LoadOptions {
    /// Defaults for `mode`: the default flow table size, logs to the temp directory.
    pub fn new(mode: Mode) -> Self {
        Self {
            mode,
            flow_table_size: ps_common::layout::DEFAULT_FLOW_TABLE_SIZE,
            verifier_log_dir: std::env::temp_dir(),
            counters_pin_dir: None,
            keep_links: None,
            features: super::probe::host().features,
        }
    }
}

impl Loaded {
    /// Load the object and the program, sized for `set`, and write `set` into generation 0
    /// with `ifaces` (name, ifindex) in slot order. Nothing is attached yet.
    pub fn load(set: &RuleSet, ifaces: &[(String, u32)], opts: &LoadOptions) -> Result<Self, DataplaneError> {
        if OBJECT.is_empty() {
            return Err(DataplaneError::NoObject);
        }
        let cap = set.policy.rules_cap;
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(names::MAP_RULES, GENERATIONS * cap)
            .map_max_entries(names::MAP_RULE_CNT, MAX_IFACES * cap)
            .map_max_entries(names::MAP_ERULE_CNT, MAX_IFACES * cap)
            .map_max_entries(names::MAP_FLOWS, opts.flow_table_size)
            .map_max_entries(
                names::MAP_SRC,
                GENERATIONS * (set.src_prefixes.len() as u32).max(DEFAULT_SRC_ENTRIES / 2),
            );
        let layout = counter_pins::layout_hash(set, ifaces, cap);
        if let Some(dir) = &opts.counters_pin_dir {
            for (name, path) in counter_pins::prepare(dir, cap, layout)? {
                loader.map_pin_path(name, path);
            }
        }
        // Kept until the programs are loaded: the pins of the placeholder maps.
        let _placeholders =
            super::probe::configure(&mut loader, &opts.features).map_err(|source| DataplaneError::Io {
                action: "create a placeholder map (no BPF ring buffer) under",
                path: "/sys/fs/bpf".into(),
                source,
            })?;
        let (major, minor) = ps_common::MIN_KERNEL;
        let ebpf = loader.load(OBJECT).map_err(|source| DataplaneError::Object {
            source: Box::new(source),
            hint: format!(" (is this kernel {major}.{minor} or newer with CONFIG_BPF_SYSCALL? run `ps-agent doctor`)"),
        })?;
        let mut me = Self {
            ebpf,
            links: vec![],
            tc_links: vec![],
            written: Default::default(),
            generation: 0,
            rules_cap: cap,
            policy: None,
            keep: opts.keep_links.clone(),
            kept: Vec::new(),
            features: opts.features,
        };
        if opts.counters_pin_dir.is_some() {
            let m = me.map_mut(names::MAP_EPOCH)?;
            counter_pins::init_epoch(m, layout).map_err(map_err("write", names::MAP_EPOCH))?;
        }
        me.write_policy(set, 0, opts.mode)?;
        me.write_ifaces(ifaces, 1)?;
        let log_dir = &opts.verifier_log_dir;
        let r = me.xdp_mut()?.load();
        r.map_err(|e| load_error(names::PROG_XDP, e, log_dir))?;
        let r = me.tc_mut()?.load();
        r.map_err(|e| load_error(names::PROG_TC_EGRESS, e, log_dir))?;
        Ok(me)
    }

    pub(super) fn map(&self, name: &'static str) -> Result<&aya::maps::Map, DataplaneError> {
        self.ebpf.map(name).ok_or_else(|| missing_map(name))
    }

    pub(super) fn map_mut(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, DataplaneError> {
        self.ebpf.map_mut(name).ok_or_else(|| missing_map(name))
    }

    /// The program `name` as its aya type (`Xdp`, `SchedClassifier`).
    fn program_mut<'a, P>(&'a mut self, name: &'static str) -> Result<&'a mut P, DataplaneError>
    where
        &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
    {
        let find = |source| DataplaneError::Program { action: "find", program: name, source: Box::new(source) };
        let p = self.ebpf.program_mut(name).ok_or_else(|| find(ProgramError::NotLoaded))?;
        p.try_into().map_err(find)
    }

    pub(super) fn tc_mut(&mut self) -> Result<&mut SchedClassifier, DataplaneError> {
        self.program_mut(names::PROG_TC_EGRESS)
    }

    /// The kernel features the program was loaded for.
    pub fn features(&self) -> &Features {
        &self.features
    }

    /// The active generation.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    pub(super) fn xdp_mut(&mut self) -> Result<&mut Xdp, DataplaneError> {
        self.program_mut(names::PROG_XDP)
    }

    /// The XDP program (for test runs).
    pub fn xdp(&self) -> &Xdp {
        self.ebpf.program(names::PROG_XDP).and_then(|p| p.try_into().ok()).expect("loaded")
    }

    pub(super) fn array<V: aya::Pod>(&mut self, name: &'static str) -> Result<Array<&mut MapData, V>, DataplaneError> {
        let map = self.map_mut(name)?;
        Array::try_from(map).map_err(map_err("open", name))
    }

    /// Pin every map under `dir` (created; stale pins replaced).
    pub fn pin(&self, dir: &Path) -> Result<(), DataplaneError> {
        fs::create_dir_all(dir).map_err(|source| DataplaneError::Io {
            action: "create pin directory",
            path: dir.into(),
            source,
        })?;
        for name in names::PINNED_MAPS {
            let path = dir.join(name);
            let _ = fs::remove_file(&path);
            let map = self.map(name)?;
            map.pin(&path).map_err(|source| DataplaneError::Pin { map: name, path, source: Box::new(source) })?;
        }
        Ok(())
    }

    /// The aya `Ebpf` (for the log reader).
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// The aya `Ebpf`, shared (tests and benchmarks read single counters through it).
    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    /// Run the program once on `frame` as if it arrived on `ifindex` (BPF_PROG_TEST_RUN).
    /// Returns the XDP action.
    pub fn test_run(
        &self,
        frame: &[u8],
        ifindex: u32,
        repeat: u32,
    ) -> Result<(u32, std::time::Duration), DataplaneError> {
        let ctx = xdp_md_ctx(ifindex, frame.len() as u32);
        let r = self
            .xdp()
            .test_run(TestRunOptions { data_in: Some(frame), ctx_in: Some(&ctx), repeat, ..TestRunOptions::new() })
            .map_err(|source| DataplaneError::Program {
                action: "test-run",
                program: names::PROG_XDP,
                source: Box::new(source),
            })?;
        Ok((r.return_value, r.duration))
    }

    /// Counters, summed over CPUs (see [`Counters`]).
    pub fn counters(&self) -> Result<Counters, DataplaneError> {
        Counters::read(|name| PerCpuArray::try_from(self.map(name)?).map_err(map_err("open", name)), self.rules_cap)
    }

    /// Instructions the verifier processed for each program (kernel 5.16+; `None` before):
    /// the measure of verification cost the tests hold under a budget.
    pub fn verified_instructions(&self) -> Vec<(&'static str, Option<u32>)> {
        names::PROGRAMS
            .into_iter()
            .map(|n| (n, self.ebpf.program(n).and_then(|p| p.info().ok()).and_then(|i| i.verified_instruction_count())))
            .collect()
    }

    /// The flow table (for tests: insert and inspect flows).
    pub fn flows(&mut self) -> Result<HashMap<&mut MapData, FlowKey, FlowState>, DataplaneError> {
        let m = self.map_mut(names::MAP_FLOWS)?;
        HashMap::try_from(m).map_err(map_err("open", names::MAP_FLOWS))
    }
}

/// `struct xdp_md` for BPF_PROG_TEST_RUN: `data` 0, `data_end` the frame length (the
/// kernel insists), `ingress_ifindex` a real interface of the caller's namespace.
pub fn xdp_md_ctx(ifindex: u32, len: u32) -> [u8; 24] {
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&len.to_ne_bytes());
    ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    ctx
}
