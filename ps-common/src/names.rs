//! Every map and program name, spelled once. Kernel object names are at most 15 bytes.

/// The XDP ingress program.
pub const PROG_XDP: &str = "ps_xdp";

/// `Array<Control>`, one entry: generation, mode, both generations' policy settings,
/// interface slots.
pub const MAP_STATE: &str = "PS_STATE";
/// `Array<PortEntry>` indexed by [`crate::port_index`].
pub const MAP_PORTS: &str = "PS_PORTS";
/// `Array<RuleEntry>`: candidate lists, both generations.
pub const MAP_RULES: &str = "PS_RULES";
/// `PerCpuArray<Counter>` indexed by [`crate::rule_counter_index`].
pub const MAP_RULE_CNT: &str = "PS_RULE_CNT";
/// `PerCpuArray<Counter>` indexed by [`crate::stat_index`].
pub const MAP_STAT_CNT: &str = "PS_STAT_CNT";
/// `PerCpuArray<TokenBucket>`, one entry: the dry-run log rate limiter.
pub const MAP_LOG_RL: &str = "PS_LOG_RL";

/// Egress twin of [`MAP_RULE_CNT`].
pub const MAP_ERULE_CNT: &str = "PS_ERULE_CNT";
/// Egress twin of [`MAP_STAT_CNT`].
pub const MAP_ESTAT_CNT: &str = "PS_ESTAT_CNT";
/// `LruHashMap<FlowKey, FlowState>`: outbound flows of matrix rows.
pub const MAP_FLOWS: &str = "PS_FLOWS";
/// `PerCpuArray<Counter>` indexed by `FLOW_CNT_*`.
pub const MAP_FLOW_CNT: &str = "PS_FLOW_CNT";

/// `LpmTrie<[u8; 20], u64>`: source prefixes → bound systems.
pub const MAP_SRC: &str = "PS_SRC";

/// The TC egress program.
pub const PROG_TC_EGRESS: &str = "ps_tc_egress";

/// Every program of the shipped object: the enforcement programs, nothing else (the
/// benchmark's reference programs are in an object of their own).
pub const PROGRAMS: [&str; 2] = [PROG_XDP, PROG_TC_EGRESS];

/// All maps the agent pins, in a fixed order.
pub const PINNED_MAPS: [&str; 11] = [
    MAP_STATE,
    MAP_PORTS,
    MAP_RULES,
    MAP_RULE_CNT,
    MAP_STAT_CNT,
    MAP_LOG_RL,
    MAP_ERULE_CNT,
    MAP_ESTAT_CNT,
    MAP_FLOWS,
    MAP_FLOW_CNT,
    MAP_SRC,
];

/// Where `ps-agent run` pins its maps.
pub const PIN_DIR: &str = "/sys/fs/bpf/ps-agent";

/// `LruPerCpuHashMap<DropKey, DropVal>`: flows dry-run would have dropped (issue 5).
pub const MAP_WDROP: &str = "PS_WDROP";
/// Ring buffer of `Event`: drops and would-drops for the agent's log.
pub const MAP_EVENTS: &str = "PS_EVENTS";
/// `PerCpuArray<TokenBucket>`, one entry: the event rate limiter.
pub const MAP_EVENT_RL: &str = "PS_EVENT_RL";
/// `PerCpuArray<DropScratch>`, one entry: where the drop path builds what it records.
pub const MAP_DSCRATCH: &str = "PS_DSCRATCH";
/// `PerCpuArray`, one entry: where `ps_xdp` leaves a stateful reply's decision for its flow
/// check (kernel-only).
pub const MAP_TSCRATCH: &str = "PS_TSCRATCH";
/// `PerCpuArray`, one entry: where `ps_tc_egress` leaves an outbound packet for its flow
/// (kernel-only).
pub const MAP_ESCRATCH: &str = "PS_ESCRATCH";
/// `Array<Epoch>`, one entry: since when the counters count.
pub const MAP_EPOCH: &str = "PS_EPOCH";

/// Maps that survive an agent restart (pinned under the pin directory and reused while
/// their layout fits); the policy maps are made fresh at every start, and so are the flow
/// table and its counters (`PS_FLOW_CNT` describes the table now: created + seeded −
/// expired − closed − tracked = evicted).
pub const COUNTER_MAPS: [&str; 6] = [MAP_RULE_CNT, MAP_STAT_CNT, MAP_ERULE_CNT, MAP_ESTAT_CNT, MAP_WDROP, MAP_EPOCH];

/// The folder under the pin directory where links kept with `on_exit = "keep"` are pinned.
pub const LINKS_DIR: &str = "links";

/// Feature switches: `.rodata` globals (`u32`, 1 = use the feature) the agent sets at load
/// time from its kernel probes (`ps-agent`'s `probe` module), so that the verifier prunes
/// the branch a kernel cannot run. An object loaded without them uses every feature.
///
/// `bpf_ktime_get_coarse_ns` (5.11) for flow timestamps; 0: `bpf_ktime_get_ns`.
pub const GLOBAL_COARSE_CLOCK: &str = "PS_F_COARSE";
/// `bpf_jiffies64` (5.5) for the event rate limiter's shortcut; 0: the limiter reads the
/// clock on every drop.
pub const GLOBAL_JIFFIES: &str = "PS_F_JIFFIES";
/// `BPF_MAP_TYPE_RINGBUF` (5.8) for drop events (`PS_EVENTS`) and the dry-run log
/// (aya-log); 0: neither is sent (drops are still counted and would-drops recorded).
pub const GLOBAL_RINGBUF: &str = "PS_F_RINGBUF";
/// Variable-offset stack reads in the verifier (after 5.4): the flow timeout's cheap form
/// (`layout::flow_timeout_ns`); 0: the form 5.4 accepts.
pub const GLOBAL_VAR_STACK: &str = "PS_F_VARSTACK";
/// aya-log's ring buffer (`aya-log-ebpf`'s map; its level global is `aya_log::LEVEL`).
pub const MAP_AYA_LOGS: &str = "AYA_LOGS";
