//! Every map of the programs (names: `ps_common::names`; layout: `ps_common::layout`).

use aya_ebpf::{
    macros::map,
    maps::{Array, LpmTrie, LruHashMap, LruPerCpuHashMap, PerCpuArray, RingBuf, lpm_trie::Key},
};
use ps_common::{
    DEFAULT_RULES_CAP, GENERATIONS, MAX_IFACES, PORTS_ENTRIES, STAT_STRIDE,
    classify::Tables,
    layout::{
        Control, Counter, DEFAULT_FLOW_TABLE_SIZE, DEFAULT_SRC_ENTRIES, FLOW_CNT_ENTRIES, FlowKey, FlowState,
        IfaceInfo, L4, PORT_BITS_WORDS, Policy, PortEntry, RuleEntry, State, TokenBucket, port_bit,
    },
    observe::{DropKey, DropScratch, DropVal, EVENTS_BYTES, Epoch, WDROP_ENTRIES},
};

#[map]
pub static PS_STATE: Array<Control> = Array::with_max_entries(1, 0);
#[map]
pub static PS_PORTS: Array<PortEntry> = Array::with_max_entries(PORTS_ENTRIES, 0);
/// Resized by the agent at load time (`GENERATIONS * rules_cap`).
#[map]
pub static PS_RULES: Array<RuleEntry> = Array::with_max_entries(GENERATIONS * DEFAULT_RULES_CAP, 0);
/// Resized by the agent at load time (`MAX_IFACES * rules_cap`).
#[map]
pub static PS_RULE_CNT: PerCpuArray<Counter> = PerCpuArray::with_max_entries(MAX_IFACES * DEFAULT_RULES_CAP, 0);
#[map]
pub static PS_STAT_CNT: PerCpuArray<Counter> = PerCpuArray::with_max_entries(MAX_IFACES * STAT_STRIDE, 0);
/// Egress twin of `PS_RULE_CNT`.
#[map]
pub static PS_ERULE_CNT: PerCpuArray<Counter> = PerCpuArray::with_max_entries(MAX_IFACES * DEFAULT_RULES_CAP, 0);
/// Egress twin of `PS_STAT_CNT`.
#[map]
pub static PS_ESTAT_CNT: PerCpuArray<Counter> = PerCpuArray::with_max_entries(MAX_IFACES * STAT_STRIDE, 0);
#[map]
pub static PS_LOG_RL: PerCpuArray<TokenBucket> = PerCpuArray::with_max_entries(1, 0);
/// Resized by the agent at load time (`flow_table_size`).
#[map]
pub static PS_FLOWS: LruHashMap<FlowKey, FlowState> = LruHashMap::with_max_entries(DEFAULT_FLOW_TABLE_SIZE, 0);
#[map]
pub static PS_FLOW_CNT: PerCpuArray<Counter> = PerCpuArray::with_max_entries(FLOW_CNT_ENTRIES, 0);

/// Source-address sets: prefix → bound systems (both generations in the key). Resized by
/// the agent at load time.
#[map]
pub static PS_SRC: LpmTrie<[u8; 20], u64> = LpmTrie::with_max_entries(DEFAULT_SRC_ENTRIES, 0);

/// One per-CPU word to hide values from the verifier (see `Tables::launder`).
#[map]
pub static PS_SCRATCH: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The policy maps, as `ps_common::Tables`: `PS_STATE[0]` looked up once per packet.
pub struct Maps {
    ctl: &'static Control,
}

impl Maps {
    /// `None` if `PS_STATE` cannot be read (the programs abort, or fail open on egress).
    #[inline(always)]
    pub fn get() -> Option<Self> {
        PS_STATE.get(0).map(|ctl| Self { ctl })
    }
}

impl Tables for Maps {
    #[inline(always)]
    fn state(&self) -> Option<&State> {
        Some(&self.ctl.state)
    }
    #[inline(always)]
    fn policy(&self, generation: u32) -> Option<&Policy> {
        Some(&self.ctl.policy[(generation & 1) as usize])
    }
    #[inline(always)]
    fn iface(&self, ifindex: u32) -> Option<&IfaceInfo> {
        self.ctl.ifaces.get(ifindex as usize)
    }
    #[inline(always)]
    fn port(&self, index: u32) -> Option<&PortEntry> {
        PS_PORTS.get(index)
    }
    #[inline(always)]
    fn port_listed(&self, generation: u32, l4: L4, port: u16, reply: bool) -> bool {
        let (w, b) = port_bit(generation, l4, reply, port);
        // The word index is an OR of unknown values (table and port, the port out of a
        // byte swap), and 6.1's verifier keeps no range across either: hidden from LLVM,
        // the mask below survives, and gives the verifier its bound (LLVM would drop it
        // as redundant).
        let w = core::hint::black_box(w) & (PORT_BITS_WORDS - 1);
        // (Out of range cannot happen; "listed" would send the packet to the port table.)
        self.ctl.port_bits.get(w).is_none_or(|x| x >> b & 1 != 0)
    }
    #[inline(always)]
    fn rule(&self, index: u32) -> Option<&RuleEntry> {
        PS_RULES.get(index)
    }
    #[inline(always)]
    fn src_systems(&self, key: &[u8; 20]) -> u64 {
        let k = Key::new(ps_common::layout::SRC_KEY_HEADER_BITS + 128, *key);
        PS_SRC.get(&k).copied().unwrap_or(0)
    }
    #[inline(always)]
    fn launder(&self, v: usize) -> usize {
        match PS_SCRATCH.get_ptr_mut(0) {
            // SAFETY: per-CPU word; volatile so the compiler keeps the round trip.
            Some(p) => unsafe {
                core::ptr::write_volatile(p, v as u64);
                core::ptr::read_volatile(p) as usize
            },
            None => v,
        }
    }
}

/// Add one packet of `bytes` to `map[index]`.
#[inline(always)]
pub fn count(map: &PerCpuArray<Counter>, index: u32, bytes: u64) {
    if let Some(c) = map.get_ptr_mut(index) {
        // SAFETY: per-CPU value, only this CPU writes it while the program runs.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}

// Observability (issue 5): see `ps_common::observe`.

/// Flows dry-run would have dropped (per CPU: exact counts without atomics; the agent sums).
#[map]
pub static PS_WDROP: LruPerCpuHashMap<DropKey, DropVal> = LruPerCpuHashMap::with_max_entries(WDROP_ENTRIES, 0);
/// Drop and would-drop events for the agent.
#[map]
pub static PS_EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);
/// The events' rate limiter (the aya-log one is `PS_LOG_RL`).
#[map]
pub static PS_EVENT_RL: PerCpuArray<TokenBucket> = PerCpuArray::with_max_entries(1, 0);
/// Where the drop path builds key, value and event (the stack is nearly full).
#[map]
pub static PS_DSCRATCH: PerCpuArray<DropScratch> = PerCpuArray::with_max_entries(1, 0);
/// Where `ps_xdp` leaves a stateful reply's decision for its flow check (`xdp::tracked`).
#[map]
pub static PS_TSCRATCH: PerCpuArray<TrackScratch> = PerCpuArray::with_max_entries(1, 0);

/// `PS_TSCRATCH`'s value: kernel-only, never read by the agent.
pub struct TrackScratch {
    /// The reply's decision: `Verdict::Tracked` going in, what the flow check made of it
    /// coming out.
    pub decision: ps_common::classify::Decision,
    /// The reply's flow key.
    pub key: FlowKey,
    /// The reply's TCP segment.
    pub seg: ps_common::track::Segment,
    /// Its options.
    pub opts: ps_common::track::OptBuf,
}

/// Where `ps_tc_egress` leaves an outbound packet for its flow (`tc::track`).
#[map]
pub static PS_ESCRATCH: PerCpuArray<EgressScratch> = PerCpuArray::with_max_entries(1, 0);

/// `PS_ESCRATCH`'s value: kernel-only, never read by the agent.
pub struct EgressScratch {
    /// The packet.
    pub p: ps_common::Packet,
    /// Counter slot of the rule that allows it.
    pub counter: u32,
    /// Its flow key.
    pub key: FlowKey,
    /// Its TCP segment.
    pub seg: ps_common::track::Segment,
    /// Its options.
    pub opts: ps_common::track::OptBuf,
    /// A new flow, before it is inserted.
    pub flow: FlowState,
}

/// Since when the counters count: written by the agent, never by the programs.
#[map]
pub static PS_EPOCH: Array<Epoch> = Array::with_max_entries(1, 0);
