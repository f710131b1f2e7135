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
    maps::{Array, MapData, PerCpuArray, PerCpuValues},
    programs::{ProgramError, TestRun as _, TestRunOptions, Xdp, XdpMode, xdp::XdpLinkId},
};
use log::warn;
use ps_common::{
    GENERATIONS, MAX_IFACES, MAX_IFINDEX,
    layout::{
        Counter, IfaceInfo, MODE_DRY_RUN, MODE_ENFORCE, Policy, PortEntry, RuleEntry, STAT_STRIDE, State, port_index,
    },
    names,
};

use crate::{
    compile::RuleSet,
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
    #[error("the kernel verifier rejected program `{program}`: {summary}\nfull verifier log: {log}")]
    Verifier {
        /// Program.
        program: &'static str,
        /// Last lines of the log.
        summary: String,
        /// Where the whole log is.
        log: String,
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
    links: Vec<XdpLinkId>,
    /// Counter capacity the maps were sized for.
    pub rules_cap: u32,
}

fn map_err(action: &'static str, map: &'static str) -> impl FnOnce(aya::maps::MapError) -> LoadError {
    move |source| LoadError::Map { action, map, source: Box::new(source) }
}

impl Loaded {
    /// Load the object and the program, sized for `set`, and write `set` into generation 0
    /// with `ifaces` (name, ifindex) in slot order. Nothing is attached yet.
    pub fn load(
        set: &RuleSet,
        ifaces: &[(String, u32)],
        mode: Mode,
        verifier_log_dir: &Path,
    ) -> Result<Self, LoadError> {
        if OBJECT.is_empty() {
            return Err(LoadError::NoObject);
        }
        let cap = set.policy.rules_cap;
        let ebpf = EbpfLoader::new()
            .map_max_entries(names::MAP_RULES, GENERATIONS * cap)
            .map_max_entries(names::MAP_RULE_CNT, MAX_IFACES * cap)
            .load(OBJECT)
            .map_err(|source| LoadError::Object {
                source: Box::new(source),
                hint: " (is this kernel 5.10 or newer with CONFIG_BPF_SYSCALL? run `ps-agent doctor`)",
            })?;
        let mut me = Self { ebpf, links: vec![], rules_cap: cap };
        me.write_policy(set, 0, mode)?;
        me.write_ifaces(ifaces)?;
        let prog = me.xdp_mut()?;
        if let Err(e) = prog.load() {
            return Err(match e {
                ProgramError::LoadError { io_error, verifier_log } => {
                    let text = verifier_log.to_string();
                    let _ = fs::create_dir_all(verifier_log_dir);
                    let path = verifier_log_dir.join("verifier.log");
                    let saved = fs::write(&path, &text)
                        .map(|()| path.display().to_string())
                        .unwrap_or_else(|e| format!("(could not write {}: {e})", path.display()));
                    let tail: Vec<&str> = text.lines().rev().take(6).collect();
                    let summary = format!("{io_error}; {}", tail.into_iter().rev().collect::<Vec<_>>().join(" / "));
                    LoadError::Verifier { program: names::PROG_XDP, summary, log: saved }
                }
                source => LoadError::Program { action: "load", program: names::PROG_XDP, source: Box::new(source) },
            });
        }
        Ok(me)
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
        let cap = self.rules_cap;
        if set.entries.len() as u32 > cap {
            return Err(LoadError::TooBig { what: "rule entries", needed: set.entries.len(), cap });
        }
        if set.rules.len() as u32 > cap {
            return Err(LoadError::TooBig { what: "rules", needed: set.rules.len(), cap });
        }
        let policy = Policy { rules_cap: cap, ..set.policy };
        {
            let mut m: Array<_, Policy> = self.array(names::MAP_POLICY)?;
            m.set(g, policy, 0).map_err(map_err("write", names::MAP_POLICY))?;
        }
        {
            let mut m: Array<_, RuleEntry> = self.array(names::MAP_RULES)?;
            for (i, e) in set.entries.iter().enumerate().skip(1) {
                m.set(g * cap + i as u32, e, 0).map_err(map_err("write", names::MAP_RULES))?;
            }
        }
        {
            let mut m: Array<_, PortEntry> = self.array(names::MAP_PORTS)?;
            for (&(l4, port), e) in &set.ports {
                let abs = |h: u32| if h == 0 { 0 } else { g * cap + h };
                let v = PortEntry { inbound: abs(e.inbound), reply: abs(e.reply) };
                m.set(port_index(g, l4, port), v, 0).map_err(map_err("write", names::MAP_PORTS))?;
            }
        }
        self.set_state(State { generation: g, mode: mode_word(mode) })
    }

    fn write_ifaces(&mut self, ifaces: &[(String, u32)]) -> Result<(), LoadError> {
        let mut m: Array<_, IfaceInfo> = self.array(names::MAP_IFACES)?;
        for (slot, (_, ifindex)) in ifaces.iter().enumerate() {
            m.set(*ifindex, IfaceInfo { slot: slot as u32 + 1, flags: 0 }, 0)
                .map_err(map_err("write", names::MAP_IFACES))?;
        }
        Ok(())
    }

    fn set_state(&mut self, s: State) -> Result<(), LoadError> {
        let mut m: Array<_, State> = self.array(names::MAP_STATE)?;
        m.set(0, s, 0).map_err(map_err("write", names::MAP_STATE))
    }

    fn array<V: aya::Pod>(&mut self, name: &'static str) -> Result<Array<&mut MapData, V>, LoadError> {
        let map = self.ebpf.map_mut(name).ok_or(LoadError::Map {
            action: "find",
            map: name,
            source: Box::new(aya::maps::MapError::InvalidName { name: name.into() }),
        })?;
        Array::try_from(map).map_err(map_err("open", name))
    }

    /// Attach to every interface, all or nothing: if one fails, the ones already attached
    /// are detached before the error is returned.
    pub fn attach(&mut self, ifaces: &[(String, u32)], mode: XdpModeName) -> Result<Vec<Attached>, LoadError> {
        let mut done = Vec::new();
        for (slot, (name, ifindex)) in ifaces.iter().enumerate() {
            match self.attach_one(name, *ifindex, mode) {
                Ok((id, used)) => {
                    self.links.push(id);
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

    /// Detach from every interface.
    pub fn detach_all(&mut self) {
        let links = std::mem::take(&mut self.links);
        if let Ok(prog) = self.xdp_mut() {
            for l in links {
                let _ = prog.detach(l);
            }
        }
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
            let map = self.ebpf.map(name).ok_or(LoadError::Map {
                action: "find",
                map: name,
                source: Box::new(aya::maps::MapError::InvalidName { name: name.into() }),
            })?;
            map.pin(&path).map_err(|source| LoadError::Pin { map: name, path, source: Box::new(source) })?;
        }
        Ok(())
    }

    /// The aya `Ebpf` (for the log reader).
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// Switch mode without touching the policy.
    pub fn set_mode(&mut self, mode: Mode) -> Result<(), LoadError> {
        let m: Array<_, State> = self.array(names::MAP_STATE)?;
        let s = m.get(&0, 0).map_err(map_err("read", names::MAP_STATE))?;
        self.set_state(State { mode: mode_word(mode), ..s })
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
        Counters::read(
            self.ebpf.map(names::MAP_RULE_CNT).and_then(|m| m.try_into().ok()),
            self.ebpf.map(names::MAP_STAT_CNT).and_then(|m| m.try_into().ok()),
            self.rules_cap,
        )
    }
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

/// Counters summed over CPUs: `rules[slot][counter]` and `stats[slot][bucket]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Per slot (0..MAX_IFACES), per counter.
    pub rules: Vec<Vec<Counter>>,
    /// Per slot, per bucket (STAT_STRIDE).
    pub stats: Vec<Vec<Counter>>,
}

fn sum(v: &PerCpuValues<Counter>) -> Counter {
    v.iter().fold(Counter::default(), |a, c| Counter { packets: a.packets + c.packets, bytes: a.bytes + c.bytes })
}

impl Counters {
    fn read<T: std::borrow::Borrow<MapData>>(
        rules: Option<PerCpuArray<T, Counter>>,
        stats: Option<PerCpuArray<T, Counter>>,
        rules_cap: u32,
    ) -> Result<Self, LoadError> {
        let rules = rules.ok_or(LoadError::Map {
            action: "open",
            map: names::MAP_RULE_CNT,
            source: Box::new(aya::maps::MapError::InvalidName { name: names::MAP_RULE_CNT.into() }),
        })?;
        let stats = stats.ok_or(LoadError::Map {
            action: "open",
            map: names::MAP_STAT_CNT,
            source: Box::new(aya::maps::MapError::InvalidName { name: names::MAP_STAT_CNT.into() }),
        })?;
        let mut out = Counters::default();
        for slot in 0..MAX_IFACES {
            let mut r = Vec::with_capacity(rules_cap as usize);
            for c in 0..rules_cap {
                let v = rules.get(&(slot * rules_cap + c), 0).map_err(map_err("read", names::MAP_RULE_CNT))?;
                r.push(sum(&v));
            }
            out.rules.push(r);
            let mut s = Vec::with_capacity(STAT_STRIDE as usize);
            for b in 0..STAT_STRIDE {
                let v = stats.get(&(slot * STAT_STRIDE + b), 0).map_err(map_err("read", names::MAP_STAT_CNT))?;
                s.push(sum(&v));
            }
            out.stats.push(s);
        }
        Ok(out)
    }

    /// Read the counters pinned under `dir` by a running agent.
    pub fn read_pinned(dir: &Path, rules_cap: u32) -> Result<Self, LoadError> {
        let open = |name: &'static str| -> Result<PerCpuArray<MapData, Counter>, LoadError> {
            let data = MapData::from_pin(dir.join(name)).map_err(map_err("open pinned", name))?;
            let map = aya::maps::Map::from_map_data(data).map_err(map_err("open pinned", name))?;
            PerCpuArray::try_from(map).map_err(map_err("open pinned", name))
        };
        Self::read(Some(open(names::MAP_RULE_CNT)?), Some(open(names::MAP_STAT_CNT)?), rules_cap)
    }
}

/// Mode of the agent whose maps are pinned under `dir`.
pub fn read_pinned_mode(dir: &Path) -> Result<Mode, LoadError> {
    let data = MapData::from_pin(dir.join(names::MAP_STATE)).map_err(map_err("open pinned", names::MAP_STATE))?;
    let map = aya::maps::Map::from_map_data(data).map_err(map_err("open pinned", names::MAP_STATE))?;
    let a: Array<MapData, State> = Array::try_from(map).map_err(map_err("open pinned", names::MAP_STATE))?;
    let s = a.get(&0, 0).map_err(map_err("read", names::MAP_STATE))?;
    Ok(if s.mode == MODE_DRY_RUN { Mode::DryRun } else { Mode::Enforce })
}

/// Set the mode of the agent whose maps are pinned under `dir` (used by tests and, later,
/// commit-confirm).
pub fn write_pinned_mode(dir: &Path, mode: Mode) -> Result<(), LoadError> {
    let data = MapData::from_pin(dir.join(names::MAP_STATE)).map_err(map_err("open pinned", names::MAP_STATE))?;
    let map = aya::maps::Map::from_map_data(data).map_err(map_err("open pinned", names::MAP_STATE))?;
    let mut a: Array<MapData, State> = Array::try_from(map).map_err(map_err("open pinned", names::MAP_STATE))?;
    let s = a.get(&0, 0).map_err(map_err("read", names::MAP_STATE))?;
    a.set(0, State { mode: mode_word(mode), ..s }, 0).map_err(map_err("write", names::MAP_STATE))
}
