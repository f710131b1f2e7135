//! Load: the only module that touches the kernel. Loads the XDP object, writes a compiled
//! rule set into one generation of the maps, attaches to interfaces (all or nothing), pins
//! the maps for `stats`, and runs BPF_PROG_TEST_RUN for the program tests.

use std::{
    ffi::CString,
    fs, io,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray, PerCpuValues, lpm_trie::Key as LpmKey},
    programs::{
        ProgramError, SchedClassifier, TcAttachType, TestRun as _, TestRunOptions, Xdp, XdpMode,
        tc::SchedClassifierLinkId, xdp::XdpLinkId,
    },
};
use log::warn;
use ps_common::{
    GENERATIONS, MAX_IFACES, MAX_IFINDEX,
    layout::{
        Control, Counter, DEFAULT_SRC_ENTRIES, FLOW_CNT_ENTRIES, FLOW_CNT_SEEDED, FLOW_TCP_CLOSING,
        FLOW_TCP_ESTABLISHED, FLOW_TCP_SYN_SENT, FLOW_UDP, FlowKey, FlowState, IfaceInfo, MODE_DRY_RUN, MODE_ENFORCE,
        POLICY_STATEFUL, Policy, PortEntry, RuleEntry, SRC_KEY_HEADER_BITS, STAT_STRIDE, State, port_index,
        src_key_data, write_port_bits,
    },
    names,
};

use crate::{
    compile::{RuleKind, RuleSet},
    config::{Mode, XdpModeName},
};

/// The eBPF object built by `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ps-ebpf"));

/// A load error, for a person at a console.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Not root.
    #[error("ps-agent must run as root (or with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON): effective uid is {uid}")]
    NotRoot {
        /// Effective uid.
        uid: u32,
    },
    /// No bpffs.
    #[error("no BPF filesystem at /sys/fs/bpf: mount it with `mount -t bpf bpf /sys/fs/bpf`")]
    NoBpffs,
    /// An interface does not exist.
    #[error("interface `{name}` does not exist; interfaces here: {available}")]
    NoInterface {
        /// Name.
        name: String,
        /// What exists.
        available: String,
    },
    /// The ifindex is outside the interface table.
    #[error("interface `{name}` has ifindex {ifindex}; ps-agent supports ifindex below {MAX_IFINDEX}")]
    IfindexTooLarge {
        /// Name.
        name: String,
        /// Index.
        ifindex: u32,
    },
    /// No interface to enforce on.
    #[error(
        "no interface to enforce on: neither eth0 nor eth1 exists; name them with --iface or `interfaces` in the config"
    )]
    NoInterfaces,
    /// The binary was built without the eBPF object.
    #[error("this ps-agent binary was built with AYA_BUILD_SKIP and has no XDP program; rebuild without it")]
    NoObject,
    /// The object could not be loaded.
    #[error("failed to load the BPF object: {source}{hint}")]
    Object {
        /// Cause.
        #[source]
        source: Box<aya::EbpfError>,
        /// Hint.
        hint: &'static str,
    },
    /// The verifier rejected the program.
    #[error("the kernel verifier rejected program `{program}`: {summary}\nfull verifier log: {log}\n{hint}")]
    Verifier {
        /// Program.
        program: &'static str,
        /// Last lines of the log.
        summary: String,
        /// Where the whole log is.
        log: String,
        /// What to do ([`verifier_hint`]).
        hint: &'static str,
    },
    /// Another program operation failed.
    #[error("failed to {action} program `{program}`: {source}")]
    Program {
        /// What was being done.
        action: &'static str,
        /// Program.
        program: &'static str,
        /// Cause.
        #[source]
        source: Box<ProgramError>,
    },
    /// Attaching failed.
    #[error("failed to attach XDP to `{iface}` in {mode} mode: {source}{hint}")]
    Attach {
        /// Interface.
        iface: String,
        /// Mode.
        mode: &'static str,
        /// Cause.
        #[source]
        source: Box<ProgramError>,
        /// Hint.
        hint: String,
    },
    /// A link could not be kept or taken over.
    #[error("failed to keep or take over the link on `{iface}`: {why}")]
    KeepLink {
        /// Interface.
        iface: String,
        /// What went wrong.
        why: String,
    },
    /// Attaching the egress program failed.
    #[error("failed to attach the egress program to `{iface}`: {source}")]
    AttachEgress {
        /// Interface.
        iface: String,
        /// Cause.
        #[source]
        source: Box<ProgramError>,
    },
    /// A map operation failed.
    #[error("failed to {action} map `{map}`: {source}")]
    Map {
        /// What was being done.
        action: &'static str,
        /// Map.
        map: &'static str,
        /// Cause.
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// Pinning failed.
    #[error("failed to pin map `{map}` at {path}: {source}")]
    Pin {
        /// Map.
        map: &'static str,
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: Box<aya::pin::PinError>,
    },
    /// Filesystem error on a path.
    #[error("failed to {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The pinned counter maps could not be checked or cleared.
    #[error("failed to prepare the pinned counters in {}: {source}", dir.display())]
    CounterPins {
        /// Pin directory.
        dir: PathBuf,
        /// Cause.
        #[source]
        source: crate::pinned::PinnedError,
    },
    /// The policy does not fit the maps.
    #[error("the compiled policy has {needed} {what}; the maps hold {cap}")]
    TooBig {
        /// What.
        what: &'static str,
        /// Needed.
        needed: usize,
        /// Capacity.
        cap: u32,
    },
}

/// Refuse to go on without root and bpffs, with a message that says what to do.
pub fn preflight() -> Result<(), LoadError> {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if uid != 0 {
        return Err(LoadError::NotRoot { uid });
    }
    if !is_bpffs(Path::new("/sys/fs/bpf")) {
        return Err(LoadError::NoBpffs);
    }
    Ok(())
}

/// Is `p` on a BPF filesystem?
pub fn is_bpffs(p: &Path) -> bool {
    const BPF_FS_MAGIC: i64 = 0xcafe4a11;
    let Ok(c) = CString::new(p.as_os_str().as_encoded_bytes()) else { return false };
    // SAFETY: statfs writes into the zeroed struct we pass.
    unsafe {
        let mut s: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut s) == 0 && s.f_type as i64 == BPF_FS_MAGIC
    }
}

/// ifindex of `name` in this network namespace.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: c is a valid C string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// Interface names in this network namespace (if_nameindex asks the kernel, so it is
/// right inside `nsenter --net`, where /sys/class/net still shows the host's).
pub fn available_interfaces() -> String {
    let mut v = Vec::new();
    // SAFETY: if_nameindex returns an array terminated by a zero entry, freed below.
    unsafe {
        let list = libc::if_nameindex();
        if !list.is_null() {
            let mut p = list;
            while (*p).if_index != 0 {
                v.push(std::ffi::CStr::from_ptr((*p).if_name).to_string_lossy().into_owned());
                p = p.add(1);
            }
            libc::if_freenameindex(list);
        }
    }
    v.sort();
    v.join(", ")
}

/// Interfaces to enforce on: the given names (each must exist), or eth0 and eth1 where
/// present.
pub fn resolve_interfaces(names: Option<&[String]>) -> Result<Vec<(String, u32)>, LoadError> {
    let mut out = Vec::new();
    match names {
        Some(names) => {
            for n in names {
                let i = ifindex(n)
                    .ok_or_else(|| LoadError::NoInterface { name: n.clone(), available: available_interfaces() })?;
                out.push((n.clone(), i));
            }
        }
        None => {
            for n in ["eth0", "eth1"] {
                if let Some(i) = ifindex(n) {
                    out.push((n.to_string(), i));
                }
            }
            if out.is_empty() {
                return Err(LoadError::NoInterfaces);
            }
        }
    }
    for (name, i) in &out {
        if *i >= MAX_IFINDEX {
            return Err(LoadError::IfindexTooLarge { name: name.clone(), ifindex: *i });
        }
    }
    Ok(out)
}

/// XDP `bpf_link`s in the kernel: program id → link id.
///
/// # Errors
/// Enumerating links (`BPF_LINK_GET_NEXT_ID`) needs CAP_SYS_ADMIN.
///
/// # Minimum kernel version
/// 5.9 (`BPF_LINK_TYPE_XDP`, kernel commit aa8d3a716b59); older kernels have no XDP links, and
/// enumeration (5.8) fails there, which callers treat as "unknown".
pub fn xdp_link_ids() -> Result<std::collections::BTreeMap<u32, u32>, aya::programs::links::LinkError> {
    let mut out = std::collections::BTreeMap::new();
    let mut seen = false;
    for info in aya::programs::loaded_links() {
        // A link can go away between listing its id and opening it: skip it, but report a
        // failure to list anything at all (no CAP_SYS_ADMIN).
        let info = match info {
            Ok(i) => i,
            Err(e) if !seen => return Err(e),
            Err(_) => continue,
        };
        seen = true;
        if matches!(info.link_type(), Ok(aya::programs::links::LinkType::Xdp)) {
            out.insert(info.program_id(), info.id());
        }
    }
    Ok(out)
}

/// `net.ipv4.ip_local_port_range` (it governs IPv6 too), or Linux's default.
pub fn ephemeral_range() -> (u16, u16) {
    fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|x| x.parse::<u16>());
            Some((it.next()?.ok()?, it.next()?.ok()?))
        })
        .unwrap_or((32768, 60999))
}

/// How an interface ended up attached.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Attached {
    /// Name.
    pub name: String,
    /// ifindex.
    pub ifindex: u32,
    /// Slot in the counters.
    pub slot: u32,
    /// `native` or `skb`.
    pub xdp_mode: String,
}

/// The loaded program and its maps.
pub struct Loaded {
    ebpf: Ebpf,
    links: Vec<(String, XdpLinkId)>,
    tc_links: Vec<(String, SchedClassifierLinkId)>,
    /// Port-table entries written into each generation (to clear on the next write).
    written: [std::collections::BTreeSet<(ps_common::layout::L4, u16)>; 2],
    /// The active generation.
    generation: u32,
    /// Counter capacity the maps were sized for.
    pub rules_cap: u32,
    policy: Option<(RuleSet, u32, Mode)>,
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
    /// (`crate::pinned`); `None`: fresh, unpinned counters (program tests).
    pub counters_pin_dir: Option<PathBuf>,
}

impl LoadOptions {
    /// Defaults for `mode`: the default flow table size, logs to the temp directory.
    pub fn new(mode: Mode) -> Self {
        Self {
            mode,
            flow_table_size: ps_common::layout::DEFAULT_FLOW_TABLE_SIZE,
            verifier_log_dir: std::env::temp_dir(),
            counters_pin_dir: None,
        }
    }
}

fn map_err(action: &'static str, map: &'static str) -> impl FnOnce(aya::maps::MapError) -> LoadError {
    move |source| LoadError::Map { action, map, source: Box::new(source) }
}

impl Loaded {
    /// Load the object and the program, sized for `set`, and write `set` into generation 0
    /// with `ifaces` (name, ifindex) in slot order. Nothing is attached yet.
    pub fn load(set: &RuleSet, ifaces: &[(String, u32)], opts: &LoadOptions) -> Result<Self, LoadError> {
        if OBJECT.is_empty() {
            return Err(LoadError::NoObject);
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
        // Counters that survive a restart (issue 5): reuse the pins if they fit.
        let layout = crate::pinned::layout_hash(set, ifaces, cap);
        let counter_pins: Vec<(&'static str, PathBuf)> = match &opts.counters_pin_dir {
            Some(dir) => {
                fs::create_dir_all(dir).map_err(|source| LoadError::Io {
                    action: "create pin directory",
                    path: dir.clone(),
                    source,
                })?;
                crate::pinned::prepare_counter_pins(dir, cap, layout)
                    .map_err(|source| LoadError::CounterPins { dir: dir.clone(), source })?;
                names::COUNTER_MAPS.into_iter().map(|n| (n, dir.join(n))).collect()
            }
            None => vec![],
        };
        for (name, path) in &counter_pins {
            loader.map_pin_path(name, path.as_path());
        }
        let ebpf = loader.load(OBJECT).map_err(|source| LoadError::Object {
            source: Box::new(source),
            hint: " (is this kernel 5.10 or newer with CONFIG_BPF_SYSCALL? run `ps-agent doctor`)",
        })?;
        let mut me = Self {
            ebpf,
            links: vec![],
            tc_links: vec![],
            written: Default::default(),
            generation: 0,
            rules_cap: cap,
            policy: None,
        };
        if opts.counters_pin_dir.is_some() {
            let m = me.map_mut(names::MAP_EPOCH)?;
            crate::pinned::init_epoch(m, layout).map_err(map_err("write", names::MAP_EPOCH))?;
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

    fn map(&self, name: &'static str) -> Result<&aya::maps::Map, LoadError> {
        self.ebpf.map(name).ok_or_else(|| missing_map(name))
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, LoadError> {
        self.ebpf.map_mut(name).ok_or_else(|| missing_map(name))
    }

    fn tc_mut(&mut self) -> Result<&mut SchedClassifier, LoadError> {
        let p = self.ebpf.program_mut(names::PROG_TC_EGRESS).ok_or(LoadError::Program {
            action: "find",
            program: names::PROG_TC_EGRESS,
            source: Box::new(ProgramError::NotLoaded),
        })?;
        p.try_into().map_err(|source| LoadError::Program {
            action: "find",
            program: names::PROG_TC_EGRESS,
            source: Box::new(source),
        })
    }

    /// Attach the egress program to every interface, all or nothing (TCX on 6.6+, a
    /// clsact qdisc before).
    pub fn attach_egress(&mut self, ifaces: &[(String, u32)]) -> Result<(), LoadError> {
        for (name, _) in ifaces {
            if let Err(e) = self.attach_egress_one(name) {
                self.detach_egress();
                return Err(e);
            }
        }
        Ok(())
    }

    fn attach_egress_one(&mut self, name: &str) -> Result<(), LoadError> {
        // Before 6.6 the program hangs off a clsact qdisc; it may exist already.
        let tcx = aya::util::KernelVersion::current().is_ok_and(|v| v >= aya::util::KernelVersion::new(6, 6, 0));
        if !tcx {
            let _ = aya::programs::tc::qdisc_add_clsact(name);
        }
        let id = self
            .tc_mut()?
            .attach(name, TcAttachType::Egress)
            .map_err(|source| LoadError::AttachEgress { iface: name.into(), source: Box::new(source) })?;
        self.tc_links.push((name.into(), id));
        Ok(())
    }

    /// Detach the egress program everywhere.
    pub fn detach_egress(&mut self) {
        let links = std::mem::take(&mut self.tc_links);
        if let Ok(prog) = self.tc_mut() {
            for (_, l) in links {
                let _ = prog.detach(l);
            }
        }
    }

    /// Whether the egress program is attached anywhere.
    pub fn egress_attached(&self) -> bool {
        !self.tc_links.is_empty()
    }

    /// Attach again to an interface that disappeared and came back (a new ifindex): forget
    /// the links to the old device, point the interface table at the new one, attach the
    /// egress program (if it runs elsewhere) and XDP.
    pub fn reattach(&mut self, name: &str, ifindex: u32, slot: u32, mode: XdpModeName) -> Result<Attached, LoadError> {
        let stale: Vec<XdpLinkId> = extract(&mut self.links, name);
        if let Ok(prog) = self.xdp_mut() {
            for l in stale {
                let _ = prog.detach(l);
            }
        }
        let stale_tc = extract(&mut self.tc_links, name);
        let egress = !stale_tc.is_empty();
        if let Ok(prog) = self.tc_mut() {
            for l in stale_tc {
                let _ = prog.detach(l);
            }
        }
        if ifindex >= MAX_IFINDEX {
            return Err(LoadError::IfindexTooLarge { name: name.into(), ifindex });
        }
        self.write_ifaces(&[(name.into(), ifindex)], slot)?;
        if egress {
            self.attach_egress_one(name)?;
        }
        let (id, used) = self.attach_one(name, ifindex, mode)?;
        self.links.push((name.into(), id));
        Ok(Attached { name: name.into(), ifindex, slot, xdp_mode: used.into() })
    }

    /// On exit with `on_exit = "keep"`: pin every link under `dir` (`xdp-IFACE`,
    /// `tc-IFACE`), so the programs stay attached and keep enforcing after the process is
    /// gone; the next agent takes them over with [`Loaded::adopt`].
    pub fn keep_links(&mut self, dir: &Path) -> Result<usize, LoadError> {
        fs::create_dir_all(dir).map_err(|source| LoadError::Io { action: "create", path: dir.into(), source })?;
        let mut n = 0;
        for (name, id) in std::mem::take(&mut self.links) {
            let link = self.xdp_mut()?.take_link(id).map_err(|source| LoadError::Program {
                action: "take the link of",
                program: names::PROG_XDP,
                source: Box::new(source),
            })?;
            let fd: aya::programs::links::FdLink =
                link.try_into().map_err(|e| LoadError::KeepLink { iface: name.clone(), why: format!("{e}") })?;
            let path = dir.join(format!("xdp-{name}"));
            let _ = fs::remove_file(&path);
            fd.pin(&path).map_err(|e| LoadError::KeepLink { iface: name.clone(), why: e.to_string() })?;
            n += 1;
        }
        for (name, id) in std::mem::take(&mut self.tc_links) {
            let link = self.tc_mut()?.take_link(id).map_err(|source| LoadError::Program {
                action: "take the link of",
                program: names::PROG_TC_EGRESS,
                source: Box::new(source),
            })?;
            let fd: aya::programs::links::FdLink =
                link.try_into().map_err(|e| LoadError::KeepLink { iface: name.clone(), why: format!("{e}") })?;
            let path = dir.join(format!("tc-{name}"));
            let _ = fs::remove_file(&path);
            fd.pin(&path).map_err(|e| LoadError::KeepLink { iface: name.clone(), why: e.to_string() })?;
            n += 1;
        }
        Ok(n)
    }

    /// Take over the links a previous agent kept under `dir` for `ifaces`: replace their
    /// programs with this agent's atomically (`bpf_link_update`: there is no moment with
    /// no program, nor two). Returns the interfaces adopted; the pins are removed (this
    /// agent now holds the links).
    pub fn adopt(&mut self, dir: &Path, ifaces: &[(String, u32)]) -> Result<Vec<String>, LoadError> {
        use aya::programs::links::{FdLink, PinnedLink};
        let mut adopted = Vec::new();
        for (name, _) in ifaces {
            let xdp_pin = dir.join(format!("xdp-{name}"));
            let Ok(pinned) = PinnedLink::from_pin(&xdp_pin) else { continue };
            let link = aya::programs::xdp::XdpLink::try_from(FdLink::from(pinned))
                .map_err(|e| LoadError::KeepLink { iface: name.clone(), why: e.to_string() })?;
            let id = self.xdp_mut()?.attach_to_link(link).map_err(|source| LoadError::Program {
                action: "replace through its link",
                program: names::PROG_XDP,
                source: Box::new(source),
            })?;
            self.links.push((name.clone(), id));
            let _ = fs::remove_file(&xdp_pin);
            let tc_pin = dir.join(format!("tc-{name}"));
            if let Ok(pinned) = PinnedLink::from_pin(&tc_pin) {
                let link = aya::programs::tc::SchedClassifierLink::try_from(FdLink::from(pinned))
                    .map_err(|e| LoadError::KeepLink { iface: name.clone(), why: e.to_string() })?;
                let id = self.tc_mut()?.attach_to_link(link).map_err(|source| LoadError::Program {
                    action: "replace through its link",
                    program: names::PROG_TC_EGRESS,
                    source: Box::new(source),
                })?;
                self.tc_links.push((name.clone(), id));
                let _ = fs::remove_file(&tc_pin);
            }
            adopted.push(name.clone());
        }
        Ok(adopted)
    }

    /// The active generation.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Fill the flow table with the outbound flows the kernel's sockets already have
    /// (read from /proc/net of this namespace), so that an agent (re)start does not cut
    /// a live connection. Returns how many flows were seeded.
    pub fn seed_flows(&mut self, set: &RuleSet) -> Result<usize, LoadError> {
        let now = monotonic_ns();
        let mut sockets = Vec::new();
        for (file, proto, v6) in [("tcp", 6u8, false), ("tcp6", 6, true), ("udp", 17, false), ("udp6", 17, true)] {
            if let Ok(text) = fs::read_to_string(Path::new("/proc/net").join(file)) {
                sockets.extend(parse_proc_net(&text, proto, v6));
            }
        }
        let mut map: HashMap<&mut MapData, FlowKey, FlowState> = {
            let m = self.map_mut(names::MAP_FLOWS)?;
            HashMap::try_from(m).map_err(map_err("open", names::MAP_FLOWS))?
        };
        let entries = seed_entries(set, &sockets);
        for &((key, counter), state) in &entries {
            let v = FlowState { state, counter, created_ns: now, last_ns: now, packets_out: 0, packets_in: 0 };
            map.insert(key, v, 0).map_err(map_err("write", names::MAP_FLOWS))?;
        }
        let n = entries.len();
        if n > 0 {
            // Count them in CPU 0's slot of FLOW_CNT_SEEDED.
            let m = self.map_mut(names::MAP_FLOW_CNT)?;
            let mut c: PerCpuArray<&mut MapData, Counter> =
                PerCpuArray::try_from(m).map_err(map_err("open", names::MAP_FLOW_CNT))?;
            let mut vals: Vec<Counter> =
                c.get(&FLOW_CNT_SEEDED, 0).map_err(map_err("read", names::MAP_FLOW_CNT))?.iter().copied().collect();
            vals[0].packets += n as u64;
            let vals = PerCpuValues::try_from(vals).map_err(|source| LoadError::Io {
                action: "build per-CPU values for",
                path: names::MAP_FLOW_CNT.into(),
                source,
            })?;
            c.set(FLOW_CNT_SEEDED, vals, 0).map_err(map_err("write", names::MAP_FLOW_CNT))?;
        }
        Ok(n)
    }

    /// Turn stateful reply admission off in the active policy (the fallback when the
    /// egress program cannot be attached).
    pub fn make_stateless(&mut self) -> Result<(), LoadError> {
        let Some((mut set, g, mode)) = self.policy.clone() else { return Ok(()) };
        set.policy.flags &= !POLICY_STATEFUL;
        self.write_policy(&set, g, mode)
    }

    fn xdp_mut(&mut self) -> Result<&mut Xdp, LoadError> {
        let p = self.ebpf.program_mut(names::PROG_XDP).ok_or(LoadError::Program {
            action: "find",
            program: names::PROG_XDP,
            source: Box::new(ProgramError::NotLoaded),
        })?;
        p.try_into().map_err(|source| LoadError::Program {
            action: "find",
            program: names::PROG_XDP,
            source: Box::new(source),
        })
    }

    /// The XDP program (for test runs).
    pub fn xdp(&self) -> &Xdp {
        self.ebpf.program(names::PROG_XDP).and_then(|p| p.try_into().ok()).expect("loaded")
    }

    /// Write `set` into `generation` and make it active with `mode`.
    pub fn write_policy(&mut self, set: &RuleSet, generation: u32, mode: Mode) -> Result<(), LoadError> {
        let g = generation & 1;
        self.policy = Some((set.clone(), g, mode));
        let cap = self.rules_cap;
        if set.entries.len() as u32 > cap {
            return Err(LoadError::TooBig { what: "rule entries", needed: set.entries.len(), cap });
        }
        if set.counters_used() > cap {
            return Err(LoadError::TooBig { what: "counter slots", needed: set.counters_used() as usize, cap });
        }
        let policy = Policy { rules_cap: cap, ..set.policy };
        // The idle generation's settings and port bits; the flip is a second write (see
        // `Control`).
        self.update_control(|c| {
            c.policy[g as usize] = policy;
            write_port_bits(&mut c.port_bits, g, set.ports.iter().map(|(&(l4, port), e)| (l4, port, e)));
        })?;
        {
            let mut m: Array<_, RuleEntry> = self.array(names::MAP_RULES)?;
            for (i, e) in set.entries.iter().enumerate().skip(1) {
                m.set(g * cap + i as u32, e, 0).map_err(map_err("write", names::MAP_RULES))?;
            }
        }
        {
            let stale: Vec<_> =
                self.written[g as usize].iter().filter(|k| !set.ports.contains_key(k)).copied().collect();
            let mut m: Array<_, PortEntry> = self.array(names::MAP_PORTS)?;
            for (l4, port) in stale {
                m.set(port_index(g, l4, port), PortEntry::default(), 0).map_err(map_err("clear", names::MAP_PORTS))?;
            }
            for (&(l4, port), e) in &set.ports {
                let abs = |h: u32| if h == 0 { 0 } else { g * cap + h };
                let v = PortEntry { inbound: abs(e.inbound), reply: abs(e.reply), ..*e };
                m.set(port_index(g, l4, port), v, 0).map_err(map_err("write", names::MAP_PORTS))?;
            }
        }
        self.written[g as usize] = set.ports.keys().copied().collect();
        self.write_sources(set, g)?;
        self.set_state(State { generation: g, mode: mode_word(mode) })?;
        self.generation = g;
        Ok(())
    }

    /// Replace generation `g`'s source prefixes in `PS_SRC`.
    fn write_sources(&mut self, set: &RuleSet, g: u32) -> Result<(), LoadError> {
        let mut m: LpmTrie<&mut MapData, [u8; 20], u64> =
            LpmTrie::try_from(self.map_mut(names::MAP_SRC)?).map_err(map_err("open", names::MAP_SRC))?;
        let stale: Vec<LpmKey<[u8; 20]>> = m.keys().filter_map(Result::ok).filter(|k| k.data()[0] == g as u8).collect();
        for k in stale {
            m.remove(&k).map_err(map_err("clear", names::MAP_SRC))?;
        }
        for (c, mask) in &set.src_prefixes {
            let key = LpmKey::new(SRC_KEY_HEADER_BITS + c.len as u32, src_key_data(g, c.family, &c.addr));
            m.insert(&key, *mask, 0).map_err(map_err("write", names::MAP_SRC))?;
        }
        Ok(())
    }

    /// Interface `i` of `ifaces` gets slot `first_slot + i`.
    /// (Ifindexes were checked against `MAX_IFINDEX` before: `LoadError::IfindexTooLarge`.)
    fn write_ifaces(&mut self, ifaces: &[(String, u32)], first_slot: u32) -> Result<(), LoadError> {
        self.update_control(|c| {
            for (i, (_, ifindex)) in ifaces.iter().enumerate() {
                if let Some(e) = c.ifaces.get_mut(*ifindex as usize) {
                    *e = IfaceInfo { slot: first_slot + i as u32, flags: 0 };
                }
            }
        })
    }

    fn set_state(&mut self, s: State) -> Result<(), LoadError> {
        self.update_control(|c| c.state = s)
    }

    /// Change `PS_STATE[0]` with one write of the whole value (`Control` says why every
    /// half-done write is safe for the programs reading it meanwhile).
    fn update_control(&mut self, change: impl FnOnce(&mut Control)) -> Result<(), LoadError> {
        let mut m: Array<_, Control> = self.array(names::MAP_STATE)?;
        let mut c = m.get(&0, 0).map_err(map_err("read", names::MAP_STATE))?;
        change(&mut c);
        m.set(0, c, 0).map_err(map_err("write", names::MAP_STATE))
    }

    fn array<V: aya::Pod>(&mut self, name: &'static str) -> Result<Array<&mut MapData, V>, LoadError> {
        let map = self.map_mut(name)?;
        Array::try_from(map).map_err(map_err("open", name))
    }

    /// Attach to every interface, all or nothing: if one fails, the ones already attached
    /// are detached before the error is returned.
    pub fn attach(&mut self, ifaces: &[(String, u32)], mode: XdpModeName) -> Result<Vec<Attached>, LoadError> {
        self.attach_except(ifaces, &[], mode)
    }

    /// [`Loaded::attach`], but the interfaces in `adopted` already run this program (taken
    /// over from a previous agent); they keep their slots.
    pub fn attach_except(
        &mut self,
        ifaces: &[(String, u32)],
        adopted: &[String],
        mode: XdpModeName,
    ) -> Result<Vec<Attached>, LoadError> {
        let mut done = Vec::new();
        for (slot, (name, ifindex)) in ifaces.iter().enumerate() {
            if adopted.contains(name) {
                done.push(Attached {
                    name: name.clone(),
                    ifindex: *ifindex,
                    slot: slot as u32 + 1,
                    xdp_mode: "kept".into(),
                });
                continue;
            }
            match self.attach_one(name, *ifindex, mode) {
                Ok((id, used)) => {
                    self.links.push((name.clone(), id));
                    done.push(Attached {
                        name: name.clone(),
                        ifindex: *ifindex,
                        slot: slot as u32 + 1,
                        xdp_mode: used.into(),
                    });
                }
                Err(e) => {
                    self.detach_all();
                    return Err(e);
                }
            }
        }
        Ok(done)
    }

    fn attach_one(
        &mut self,
        name: &str,
        ifindex: u32,
        mode: XdpModeName,
    ) -> Result<(XdpLinkId, &'static str), LoadError> {
        let prog = self.xdp_mut()?;
        let first = match mode {
            XdpModeName::Native => XdpMode::Driver,
            XdpModeName::Skb => XdpMode::Skb,
        };
        match prog.attach_to_if_index(ifindex, first) {
            Ok(id) => Ok((id, if first == XdpMode::Driver { "native" } else { "skb" })),
            Err(e) if first == XdpMode::Driver && errno(&e) == Some(libc::EOPNOTSUPP) => {
                warn!(
                    "interface `{name}`: the driver has no native XDP; falling back to generic (skb) mode, which is slower"
                );
                prog.attach_to_if_index(ifindex, XdpMode::Skb)
                    .map(|id| (id, "skb"))
                    .map_err(|source| attach_error(name, "skb", source))
            }
            Err(source) => Err(attach_error(name, if first == XdpMode::Driver { "native" } else { "skb" }, source)),
        }
    }

    /// Detach from every interface (XDP and egress).
    pub fn detach_all(&mut self) {
        let links = std::mem::take(&mut self.links);
        if let Ok(prog) = self.xdp_mut() {
            for (_, l) in links {
                let _ = prog.detach(l);
            }
        }
        self.detach_egress();
    }

    /// Pin every map under `dir` (created; stale pins replaced).
    pub fn pin(&self, dir: &Path) -> Result<(), LoadError> {
        fs::create_dir_all(dir).map_err(|source| LoadError::Io {
            action: "create pin directory",
            path: dir.into(),
            source,
        })?;
        for name in names::PINNED_MAPS {
            let path = dir.join(name);
            let _ = fs::remove_file(&path);
            let map = self.map(name)?;
            map.pin(&path).map_err(|source| LoadError::Pin { map: name, path, source: Box::new(source) })?;
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

    /// Switch mode without touching the policy.
    pub fn set_mode(&mut self, mode: Mode) -> Result<(), LoadError> {
        self.update_control(|c| c.state.mode = mode_word(mode))
    }

    /// Run the program once on `frame` as if it arrived on `ifindex` (BPF_PROG_TEST_RUN).
    /// Returns the XDP action.
    pub fn test_run(&self, frame: &[u8], ifindex: u32, repeat: u32) -> Result<(u32, std::time::Duration), LoadError> {
        let ctx = xdp_md_ctx(ifindex, frame.len() as u32);
        let r = self
            .xdp()
            .test_run(TestRunOptions { data_in: Some(frame), ctx_in: Some(&ctx), repeat, ..TestRunOptions::new() })
            .map_err(|source| LoadError::Program {
                action: "test-run",
                program: names::PROG_XDP,
                source: Box::new(source),
            })?;
        Ok((r.return_value, r.duration))
    }

    /// Counters, summed over CPUs (see [`Counters`]).
    pub fn counters(&self) -> Result<Counters, LoadError> {
        Counters::read(|name| PerCpuArray::try_from(self.map(name)?).map_err(map_err("open", name)), self.rules_cap)
    }

    /// Instructions the verifier processed for each program (kernel 5.16+; `None` before):
    /// the measure of verification cost the tests hold under a budget.
    pub fn verified_instructions(&self) -> Vec<(&'static str, Option<u32>)> {
        [names::PROG_XDP, names::PROG_TC_EGRESS]
            .into_iter()
            .map(|n| (n, self.ebpf.program(n).and_then(|p| p.info().ok()).and_then(|i| i.verified_instruction_count())))
            .collect()
    }

    /// The flow table (for tests: insert and inspect flows).
    pub fn flows(&mut self) -> Result<HashMap<&mut MapData, FlowKey, FlowState>, LoadError> {
        let m = self.map_mut(names::MAP_FLOWS)?;
        HashMap::try_from(m).map_err(map_err("open", names::MAP_FLOWS))
    }
}

/// Remove and return the links of interface `name`.
fn extract<T>(links: &mut Vec<(String, T)>, name: &str) -> Vec<T> {
    let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(links).into_iter().partition(|(n, _)| n == name);
    *links = rest;
    mine.into_iter().map(|(_, l)| l).collect()
}

fn missing_map(name: &'static str) -> LoadError {
    LoadError::Map {
        action: "find",
        map: name,
        source: Box::new(aya::maps::MapError::InvalidName { name: name.into() }),
    }
}

/// What an operator can do about a verifier rejection, from its log.
pub fn verifier_hint(log: &str) -> &'static str {
    if log.contains("invalid func unknown#") || log.contains("unknown func") {
        "this kernel lacks a BPF helper the program calls (it needs 5.11 or newer; 5.10 rejects it \
         this way): `ps-agent doctor` checks the kernel; until it is upgraded, enforce the same rule \
         set with netfilter: `ps-agent export --format nftables|iptables`"
    } else {
        "`ps-agent doctor` checks the kernel (the program is tested on 5.15 and newer); until the \
         program loads, enforce the same rule set with netfilter: `ps-agent export --format \
         nftables|iptables`"
    }
}

fn load_error(program: &'static str, e: ProgramError, log_dir: &Path) -> LoadError {
    match e {
        ProgramError::LoadError { io_error, verifier_log } => {
            let text = verifier_log.to_string();
            let _ = fs::create_dir_all(log_dir);
            let path = log_dir.join(format!("verifier-{program}.log"));
            let saved = fs::write(&path, &text)
                .map(|()| path.display().to_string())
                .unwrap_or_else(|e| format!("(could not write {}: {e})", path.display()));
            let tail: Vec<&str> = text.lines().rev().take(6).collect();
            let summary = format!("{io_error}; {}", tail.into_iter().rev().collect::<Vec<_>>().join(" / "));
            LoadError::Verifier { program, summary, log: saved, hint: verifier_hint(&text) }
        }
        source => LoadError::Program { action: "load", program, source: Box::new(source) },
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into ts.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A socket from /proc/net/{tcp,tcp6,udp,udp6}.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Socket {
    /// IP protocol.
    pub proto: u8,
    /// 4 or 6 (IPv4-mapped IPv6 sockets are 4: that is what the wire carries).
    pub family: u8,
    /// Local address (IPv4 in the first 4 bytes).
    pub local: [u8; 16],
    /// Local port.
    pub local_port: u16,
    /// Remote address.
    pub remote: [u8; 16],
    /// Remote port.
    pub remote_port: u16,
    /// Kernel socket state (`TCP_ESTABLISHED` = 1, ...).
    pub state: u8,
}

fn proc_addr(hex: &str, v6: bool) -> Option<(u8, [u8; 16])> {
    let mut out = [0u8; 16];
    if !v6 {
        let v = u32::from_str_radix(hex, 16).ok()?;
        out[..4].copy_from_slice(&v.to_ne_bytes());
        return Some((4, out));
    }
    if hex.len() != 32 {
        return None;
    }
    for i in 0..4 {
        let v = u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16).ok()?;
        out[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
    }
    if out[..10].iter().all(|&b| b == 0) && out[10] == 0xff && out[11] == 0xff {
        let mut v4 = [0u8; 16];
        v4[..4].copy_from_slice(&out[12..]);
        return Some((4, v4));
    }
    Some((6, out))
}

/// Parse /proc/net/{tcp,udp}[6] text.
pub fn parse_proc_net(text: &str, proto: u8, v6: bool) -> Vec<Socket> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 {
            continue;
        }
        let (Some((l, lp)), Some((r, rp))) = (f[1].split_once(':'), f[2].split_once(':')) else { continue };
        let (Some((fam, local)), Some((_, remote))) = (proc_addr(l, v6), proc_addr(r, v6)) else { continue };
        let (Ok(local_port), Ok(remote_port), Ok(state)) =
            (u16::from_str_radix(lp, 16), u16::from_str_radix(rp, 16), u8::from_str_radix(f[3], 16))
        else {
            continue;
        };
        out.push(Socket { proto, family: fam, local, local_port, remote, remote_port, state });
    }
    out
}

/// The flows to seed: sockets connected to a remote port that a reply rule of `set`
/// admits, from a local port that rule allows. Returns (key, counter) and the flow state.
pub fn seed_entries(set: &RuleSet, sockets: &[Socket]) -> Vec<((FlowKey, u32), u32)> {
    let (eph_lo, eph_hi) = (set.policy.ephemeral_lo, set.policy.ephemeral_hi);
    let mut out = Vec::new();
    for s in sockets {
        let state = match (s.proto, s.state) {
            (6, 1) => FLOW_TCP_ESTABLISHED,
            (6, 2) => FLOW_TCP_SYN_SENT,
            (6, 4 | 5 | 8 | 9 | 11) => FLOW_TCP_CLOSING,
            (17, 1) => FLOW_UDP,
            _ => continue,
        };
        if s.remote_port == 0 {
            continue;
        }
        let transport = if s.proto == 6 { "tcp" } else { "udp" };
        let rule = set.rules.iter().find(|r| {
            r.kind == RuleKind::Reply
                && r.transport.as_str() == transport
                && r.ports.iter().any(|&(a, b)| (a..=b).contains(&s.remote_port))
                && r.local.is_some_and(|l| {
                    (l.ephemeral && (eph_lo..=eph_hi).contains(&s.local_port))
                        || l.explicit.is_some_and(|(a, b)| (a..=b).contains(&s.local_port))
                })
        });
        let Some(rule) = rule else { continue };
        let key = FlowKey {
            remote: s.remote,
            local: s.local,
            remote_port: s.remote_port,
            local_port: s.local_port,
            proto: s.proto,
            family: s.family,
            _pad: [0; 2],
        };
        out.push(((key, rule.counter), state));
    }
    out
}

fn mode_word(mode: Mode) -> u32 {
    match mode {
        Mode::Enforce => MODE_ENFORCE,
        Mode::DryRun => MODE_DRY_RUN,
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

fn errno(e: &ProgramError) -> Option<i32> {
    match e {
        ProgramError::SyscallError(s) => s.io_error.raw_os_error(),
        _ => None,
    }
}

fn attach_error(iface: &str, mode: &'static str, source: ProgramError) -> LoadError {
    let hint = match errno(&source) {
        Some(libc::EBUSY) | Some(libc::EEXIST) => format!(
            " (another XDP program is attached to `{iface}`: see `ip link show dev {iface}`; detach it with `ip link set dev {iface} xdp off` or `xdp-loader unload {iface} --all`)"
        ),
        Some(libc::EOPNOTSUPP) => " (the driver supports no XDP in this mode; try --xdp-mode skb)".into(),
        Some(libc::EPERM) => " (permission denied: run as root)".into(),
        _ => String::new(),
    };
    LoadError::Attach { iface: iface.into(), mode, source: Box::new(source), hint }
}

/// Counters summed over CPUs: per slot (0..MAX_IFACES), per counter or bucket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Ingress rule counters.
    pub rules: Vec<Vec<Counter>>,
    /// Ingress pass/drop/would-drop buckets (STAT_STRIDE per slot).
    pub stats: Vec<Vec<Counter>>,
    /// Egress rule counters.
    pub egress_rules: Vec<Vec<Counter>>,
    /// Egress buckets.
    pub egress_stats: Vec<Vec<Counter>>,
    /// Flow-table counters (`FLOW_CNT_*`), packets field.
    pub flows: Vec<u64>,
}

fn sum(v: &PerCpuValues<Counter>) -> Counter {
    v.iter().fold(Counter::default(), |a, c| Counter { packets: a.packets + c.packets, bytes: a.bytes + c.bytes })
}

fn grid<T: std::borrow::Borrow<MapData>>(
    m: &PerCpuArray<T, Counter>,
    name: &'static str,
    stride: u32,
) -> Result<Vec<Vec<Counter>>, LoadError> {
    let mut out = Vec::with_capacity(MAX_IFACES as usize);
    for slot in 0..MAX_IFACES {
        let mut r = Vec::with_capacity(stride as usize);
        for c in 0..stride {
            let v = m.get(&(slot * stride + c), 0).map_err(map_err("read", name))?;
            r.push(sum(&v));
        }
        out.push(r);
    }
    Ok(out)
}

impl Counters {
    fn read<T: std::borrow::Borrow<MapData>>(
        open: impl Fn(&'static str) -> Result<PerCpuArray<T, Counter>, LoadError>,
        rules_cap: u32,
    ) -> Result<Self, LoadError> {
        let flows_map = open(names::MAP_FLOW_CNT)?;
        let mut flows = Vec::new();
        for i in 0..FLOW_CNT_ENTRIES {
            flows.push(sum(&flows_map.get(&i, 0).map_err(map_err("read", names::MAP_FLOW_CNT))?).packets);
        }
        Ok(Counters {
            rules: grid(&open(names::MAP_RULE_CNT)?, names::MAP_RULE_CNT, rules_cap)?,
            stats: grid(&open(names::MAP_STAT_CNT)?, names::MAP_STAT_CNT, STAT_STRIDE)?,
            egress_rules: grid(&open(names::MAP_ERULE_CNT)?, names::MAP_ERULE_CNT, rules_cap)?,
            egress_stats: grid(&open(names::MAP_ESTAT_CNT)?, names::MAP_ESTAT_CNT, STAT_STRIDE)?,
            flows,
        })
    }

    /// Read the counters pinned under `dir` by a running agent.
    pub fn read_pinned(dir: &Path, rules_cap: u32) -> Result<Self, LoadError> {
        Self::read(
            |name| {
                let data = MapData::from_pin(dir.join(name)).map_err(map_err("open pinned", name))?;
                let map = aya::maps::Map::from_map_data(data).map_err(map_err("open pinned", name))?;
                PerCpuArray::try_from(map).map_err(map_err("open pinned", name))
            },
            rules_cap,
        )
    }
}

/// The flows pinned under `dir` by a running agent.
pub fn read_pinned_flows(dir: &Path) -> Result<Vec<(FlowKey, FlowState)>, LoadError> {
    let data = MapData::from_pin(dir.join(names::MAP_FLOWS)).map_err(map_err("open pinned", names::MAP_FLOWS))?;
    let map = aya::maps::Map::from_map_data(data).map_err(map_err("open pinned", names::MAP_FLOWS))?;
    let h: HashMap<MapData, FlowKey, FlowState> =
        HashMap::try_from(map).map_err(map_err("open pinned", names::MAP_FLOWS))?;
    let mut out = Vec::new();
    for kv in h.iter() {
        match kv {
            Ok(kv) => out.push(kv),
            // An entry evicted while we iterate: skip it.
            Err(aya::maps::MapError::KeyNotFound) => continue,
            Err(e) => return Err(map_err("read", names::MAP_FLOWS)(e)),
        }
    }
    Ok(out)
}

/// Entries the flow table holds at most, as pinned under `dir`.
pub fn pinned_flow_capacity(dir: &Path) -> Result<u32, LoadError> {
    let data = MapData::from_pin(dir.join(names::MAP_FLOWS)).map_err(map_err("open pinned", names::MAP_FLOWS))?;
    let info = data.info().map_err(map_err("inspect", names::MAP_FLOWS))?;
    Ok(info.max_entries())
}

/// The mode in force in a loaded program.
pub fn read_mode(loaded: &Loaded) -> Result<Mode, LoadError> {
    let m: Array<_, Control> =
        Array::try_from(loaded.map(names::MAP_STATE)?).map_err(map_err("open", names::MAP_STATE))?;
    let c = m.get(&0, 0).map_err(map_err("read", names::MAP_STATE))?;
    Ok(if c.state.mode == MODE_DRY_RUN { Mode::DryRun } else { Mode::Enforce })
}

/// Mode of the agent whose maps are pinned under `dir`.
pub fn read_pinned_mode(dir: &Path) -> Result<Mode, LoadError> {
    let data = MapData::from_pin(dir.join(names::MAP_STATE)).map_err(map_err("open pinned", names::MAP_STATE))?;
    let map = aya::maps::Map::from_map_data(data).map_err(map_err("open pinned", names::MAP_STATE))?;
    let a: Array<MapData, Control> = Array::try_from(map).map_err(map_err("open pinned", names::MAP_STATE))?;
    let c = a.get(&0, 0).map_err(map_err("read", names::MAP_STATE))?;
    Ok(if c.state.mode == MODE_DRY_RUN { Mode::DryRun } else { Mode::Enforce })
}

/// Set the mode of the agent whose maps are pinned under `dir` (used by tests and, later,
/// commit-confirm).
pub fn write_pinned_mode(dir: &Path, mode: Mode) -> Result<(), LoadError> {
    let data = MapData::from_pin(dir.join(names::MAP_STATE)).map_err(map_err("open pinned", names::MAP_STATE))?;
    let map = aya::maps::Map::from_map_data(data).map_err(map_err("open pinned", names::MAP_STATE))?;
    let mut a: Array<MapData, Control> = Array::try_from(map).map_err(map_err("open pinned", names::MAP_STATE))?;
    let mut c = a.get(&0, 0).map_err(map_err("read", names::MAP_STATE))?;
    c.state.mode = mode_word(mode);
    a.set(0, c, 0).map_err(map_err("write", names::MAP_STATE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        compile::{HostFacts, compile},
        config::Config,
    };

    #[test]
    fn verifier_rejections_say_what_to_do() {
        // 5.10's answer to `bpf_ktime_get_coarse_ns` (cargo xtask vm-test).
        let old = "7460: (85) call unknown#160\ninvalid func unknown#160\nprocessed 7460 insns";
        assert!(verifier_hint(old).contains("5.11"), "{}", verifier_hint(old));
        let other = "R1 offset is outside of the packet";
        for log in [old, other] {
            let h = verifier_hint(log);
            assert!(h.contains("ps-agent doctor") && h.contains("ps-agent export --format"), "{h}");
        }
        let e = LoadError::Verifier {
            program: "ps_xdp",
            summary: "x".into(),
            log: "/tmp/l".into(),
            hint: verifier_hint(old),
        };
        assert!(e.to_string().ends_with(verifier_hint(old)), "{e}");
    }

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100C6C6:AFC8 0200C6C6:13C6 01 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100C6C6:AFC9 0200C6C6:1770 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 100 0 0 10 0
   2: 00000000:01BB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 100 0 0 10 0
   3: 0100C6C6:01BB 0200C6C6:AFCA 01 00000000:00000000 00:00000000 00000000     0        0 4 1 0000000000000000 100 0 0 10 0
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st
   0: 000000FD000000000000000001000000:AFCB 000000FD000000000000000002000000:0050 02 0
   1: 0000000000000000FFFF00000100C6C6:AFCC 0000000000000000FFFF00000200C6C6:01BB 01 0
";

    #[test]
    fn proc_net_parses_v4_v6_and_mapped() {
        let v4 = parse_proc_net(TCP, 6, false);
        assert_eq!(v4.len(), 4);
        assert_eq!((v4[0].local_port, v4[0].remote_port, v4[0].state), (45000, 5062, 1));
        assert_eq!(&v4[0].local[..4], &[198, 198, 0, 1]);
        assert_eq!(&v4[0].remote[..4], &[198, 198, 0, 2]);
        let v6 = parse_proc_net(TCP6, 6, true);
        assert_eq!(v6[0].family, 6);
        assert_eq!(v6[0].local[0], 0xfd);
        assert_eq!(v6[0].local[15], 1);
        assert_eq!((v6[0].remote_port, v6[0].state), (80, 2));
        assert_eq!(v6[1].family, 4, "IPv4-mapped sockets carry IPv4 on the wire");
        assert_eq!(&v6[1].remote[..4], &[198, 198, 0, 2]);
    }

    #[test]
    fn seeding_keeps_only_outbound_matrix_flows() {
        let set = compile(&Config::shipped(), &HostFacts::typical()).unwrap();
        let mut sockets = parse_proc_net(TCP, 6, false);
        sockets.extend(parse_proc_net(TCP6, 6, true));
        let seeded = seed_entries(&set, &sockets);
        let ports: Vec<(u16, u16, u32)> =
            seeded.iter().map(|((k, _), st)| (k.local_port, k.remote_port, *st)).collect();
        // To SM 5062 (ps-04), to Domino 80 (ps-15, SYN sent), to 443 (ps-03+16+25).
        // Not: to 6000 (no row), the 443 listener, the accepted connection on 443.
        assert_eq!(
            ports,
            vec![
                (45000, 5062, FLOW_TCP_ESTABLISHED),
                (45003, 80, FLOW_TCP_SYN_SENT),
                (45004, 443, FLOW_TCP_ESTABLISHED)
            ]
        );
        let ps04 = set.rules.iter().find(|r| r.id == "ps-04").unwrap().counter;
        assert_eq!(seeded[0].0.1, ps04);
    }
}
