//! Map keys, values and index arithmetic, `#[repr(C)]` with explicit padding.
//!
//! The layout anticipates hitless reload: every policy table exists twice (two
//! generations) and [`State::generation`] says which one the program reads, so the agent
//! fills the idle generation and flips one word. Counters are not generation-bound: a
//! compiled rule keeps its counter slot across reloads.
//!
//! ```text
//! PS_STATE[0]                       -> Control: everything read before the packet, in one
//!                                      value (one lookup instead of three):
//!   .state                          -> State { generation, mode }
//!   .policy[generation]             -> Policy { ephemeral range, flags, rules_cap, timeouts }
//!   .ifaces[ifindex]                -> IfaceInfo { slot }
//! PS_PORTS[port_index(gen,l4,port)] -> PortEntry { inbound, reply (heads into PS_RULES),
//!                                      summary of both lists (classify::quick) }
//! PS_RULES[head..]                  -> RuleEntry, a candidate list ended by ENTRY_LAST
//! PS_RULE_CNT[slot * rules_cap + counter]   per-CPU Counter
//! PS_STAT_CNT[slot * STAT_STRIDE + bucket]  per-CPU Counter (pass/drop/would-drop reasons)
//! PS_ERULE_CNT / PS_ESTAT_CNT               the same two, for egress (TC)
//! PS_FLOWS[FlowKey]                          LRU hash: outbound flows of matrix rows
//! PS_FLOW_CNT[FLOW_CNT_*]                    per-CPU Counter: flows created / expired / ...
//! ```

use crate::reason::{DropReason, PassReason};

/// Policy generations (double buffering for atomic reload).
pub const GENERATIONS: u32 = 2;
/// Transport slots in the port table.
pub const L4_SLOTS: u32 = 2;
/// Port-table entries per generation.
pub const PORTS_PER_GEN: u32 = L4_SLOTS * 65536;
/// Size of `PS_PORTS`.
pub const PORTS_ENTRIES: u32 = GENERATIONS * PORTS_PER_GEN;
/// Interfaces with an ifindex below this can be enforced (`Control::ifaces` is indexed
/// directly).
pub const MAX_IFINDEX: u32 = 4096;
/// Interface slots; slot 0 stands for "an interface the agent did not configure".
pub const MAX_IFACES: u32 = 16;
// `PortEntry` keeps interface slots in 16-bit masks.
const _: () = assert!(MAX_IFACES <= 16);
/// Longest candidate list the program walks for one port.
pub const MAX_CHAIN: u32 = 4;
/// Default number of counter slots (compiled rules) and of rule entries per generation.
pub const DEFAULT_RULES_CAP: u32 = 1024;
/// Buckets per interface in `PS_STAT_CNT`.
pub const STAT_STRIDE: u32 = 64;
/// First pass-reason bucket.
pub const STAT_PASS_BASE: u32 = 0;
/// First drop-reason bucket.
pub const STAT_DROP_BASE: u32 = 16;
/// First would-drop bucket (dry-run).
pub const STAT_WOULD_DROP_BASE: u32 = 32;
/// Dry-run log lines suppressed by the rate limiter (not a packet bucket).
pub const STAT_LOG_SUPPRESSED: u32 = 63;

/// `State::mode`: drop what the policy does not allow.
pub const MODE_ENFORCE: u32 = 0;
/// `State::mode`: pass everything, count and log what would have been dropped.
pub const MODE_DRY_RUN: u32 = 1;

/// The `State::mode` word for enforcing (`false`) or dry-run (`true`): the one mapping
/// between the agent's mode and the word the programs read.
pub const fn mode_word(dry_run: bool) -> u32 {
    if dry_run { MODE_DRY_RUN } else { MODE_ENFORCE }
}

/// Whether a `State::mode` word means dry-run (anything else enforces).
pub const fn is_dry_run(word: u32) -> bool {
    word == MODE_DRY_RUN
}

/// `Policy::flags`: let ICMP/ICMPv6 echo requests (ping) in.
pub const POLICY_ALLOW_ECHO: u32 = 1 << 0;
/// `Policy::flags`: stateful reply admission — a reply passes only if its flow is tracked.
pub const POLICY_STATEFUL: u32 = 1 << 1;
/// `Policy::flags`: drop egress packets no row allows (default: count them).
pub const POLICY_EGRESS_ENFORCE: u32 = 1 << 2;
/// `Policy::flags`: some rule admits only the sources of bound systems; look the source
/// address up in `PS_SRC` (one longest-prefix match per packet).
pub const POLICY_SOURCE_SETS: u32 = 1 << 3;

/// Systems that can be bound to addresses (bits of `RuleEntry::systems`).
pub const MAX_SYSTEMS: usize = 64;
/// Bits of a `PS_SRC` key before the address: generation, family, padding.
pub const SRC_KEY_HEADER_BITS: u32 = 32;
/// Default entries of `PS_SRC` (both generations); resized at load.
pub const DEFAULT_SRC_ENTRIES: u32 = 1024;

/// `PS_SRC` key data: `[generation, family, 0, 0, address (16 bytes, IPv4 in the first 4)]`,
/// matched over `SRC_KEY_HEADER_BITS + prefix` bits.
#[inline(always)]
pub fn src_key_data(generation: u32, family: u8, addr: &[u8; 16]) -> [u8; 20] {
    let mut d = [0u8; 20];
    d[0] = (generation & 1) as u8;
    d[1] = family;
    d[4..].copy_from_slice(addr);
    d
}

/// Default size of the flow table.
pub const DEFAULT_FLOW_TABLE_SIZE: u32 = 65536;

/// `PS_FLOW_CNT` index: flows created by the egress program.
pub const FLOW_CNT_CREATED: u32 = 0;
/// `PS_FLOW_CNT` index: idle flows removed when a packet found them expired.
pub const FLOW_CNT_EXPIRED: u32 = 1;
/// `PS_FLOW_CNT` index: flow inserts that failed.
pub const FLOW_CNT_INSERT_FAILED: u32 = 2;
/// `PS_FLOW_CNT` index: flows seeded by the agent from the kernel's sockets at start.
pub const FLOW_CNT_SEEDED: u32 = 3;
/// `PS_FLOW_CNT` index: TCP flows removed at a RST (the host's, or an exact one from the
/// remote end: `crate::track`).
pub const FLOW_CNT_CLOSED: u32 = 4;
/// Entries of `PS_FLOW_CNT`.
pub const FLOW_CNT_ENTRIES: u32 = 5;

/// `FlowState::state`: TCP, the host sent a SYN.
pub const FLOW_TCP_SYN_SENT: u32 = 1;
/// `FlowState::state`: TCP, established (SYN-ACK seen, or picked up mid-stream).
pub const FLOW_TCP_ESTABLISHED: u32 = 2;
/// `FlowState::state`: TCP, a FIN was seen (either way).
pub const FLOW_TCP_CLOSING: u32 = 3;
/// `FlowState::state`: UDP.
pub const FLOW_UDP: u32 = 4;

/// `RuleEntry::flags`: last candidate of its list.
pub const ENTRY_LAST: u32 = 1 << 0;
/// `RuleEntry::flags`: reply admission; the local (destination) port must be in the
/// policy's ephemeral range or in `local_lo..=local_hi`.
pub const ENTRY_REPLY: u32 = 1 << 1;
/// `RuleEntry::flags`: with `ENTRY_REPLY`, the ephemeral range counts as local ports.
pub const ENTRY_EPHEMERAL: u32 = 1 << 2;

/// TCP flag bits.
pub const TCP_FIN: u8 = 0x01;
/// TCP SYN.
pub const TCP_SYN: u8 = 0x02;
/// TCP RST.
pub const TCP_RST: u8 = 0x04;
/// TCP ACK.
pub const TCP_ACK: u8 = 0x10;

/// Transport slot in the port table.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum L4 {
    /// TCP (IP protocol 6).
    Tcp = 0,
    /// UDP (IP protocol 17).
    Udp = 1,
}

impl L4 {
    /// Lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

/// `PS_STATE[0]`, the one value the programs read before looking at a packet: mode and
/// active generation, both generations' policy settings, and the interface slots.
///
/// One value, because every lookup on the per-packet path costs (one array lookup is ~4 ns
/// in the benchmark's harness). The agent writes it whole, and readers may see a write half
/// done, so it writes in an order that makes every half-done state safe: the idle
/// generation's policy first, then (a second write) the generation word; the rewritten
/// bytes in between are the values they already held. The words that do change (the
/// generation and mode, 0 or 1; an interface slot, 0..16) differ in their low byte only.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Control {
    /// Generation and mode.
    pub state: State,
    /// Policy settings of each generation.
    pub policy: [Policy; GENERATIONS as usize],
    /// Interface slots by ifindex.
    pub ifaces: [IfaceInfo; MAX_IFINDEX as usize],
    /// A bit per (generation, transport, list kind, port): whether the port's `PS_PORTS`
    /// entry has an inbound list, or a reply list ([`port_bit`], [`write_port_bits`]).
    /// 8 KiB per table, 64 KiB in all: where the port table takes one 24-byte entry per
    /// port (1.5 MiB per transport and generation), a packet to or from a port no rule
    /// names is answered from a few cache lines that stay hot, whatever port it picks —
    /// under a flood over random ports the difference between a cache-resident answer and
    /// a miss (and a TLB miss) per packet.
    pub port_bits: [u64; PORT_BITS_WORDS],
}

/// Words of one table of [`Control::port_bits`] (65,536 ports).
pub const PORT_BITS_TABLE_WORDS: usize = 65536 / 64;
/// Words of [`Control::port_bits`]: generations × transports × {inbound, reply}.
pub const PORT_BITS_WORDS: usize = GENERATIONS as usize * 2 * 2 * PORT_BITS_TABLE_WORDS;

impl Default for Control {
    fn default() -> Self {
        Self {
            state: State::default(),
            policy: [Policy::default(); GENERATIONS as usize],
            ifaces: [IfaceInfo::default(); MAX_IFINDEX as usize],
            port_bits: [0; PORT_BITS_WORDS],
        }
    }
}

/// `Control::state`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Active generation, `0` or `1`.
    pub generation: u32,
    /// [`MODE_ENFORCE`] or [`MODE_DRY_RUN`].
    pub mode: u32,
}

/// `Control::policy[generation]`: scalar policy settings.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// `POLICY_*` bits.
    pub flags: u32,
    /// Stride of `PS_RULE_CNT` per interface slot (the counter capacity).
    pub rules_cap: u32,
    /// Local ephemeral port range (`net.ipv4.ip_local_port_range`), inclusive.
    pub ephemeral_lo: u16,
    /// Upper end of the ephemeral range.
    pub ephemeral_hi: u16,
    /// Explicit padding.
    pub _pad: u32,
    /// Idle timeout of a TCP flow whose SYN got no answer, seconds.
    pub tcp_syn_timeout_s: u32,
    /// Idle timeout of an established TCP flow, seconds.
    pub tcp_established_timeout_s: u32,
    /// Idle timeout of a TCP flow after FIN or RST, seconds.
    pub tcp_closing_timeout_s: u32,
    /// Idle timeout of a UDP flow, seconds.
    pub udp_timeout_s: u32,
}

/// `PS_FLOWS` key: one flow, oriented from this host (local) to the remote end. The
/// egress program builds it from (src, dst, sport, dport); the ingress program from the
/// reversed reply tuple, so both find the same entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// Remote address (IPv4: first 4 bytes, rest zero).
    pub remote: [u8; 16],
    /// Local address.
    pub local: [u8; 16],
    /// Remote (service) port.
    pub remote_port: u16,
    /// Local port.
    pub local_port: u16,
    /// IP protocol.
    pub proto: u8,
    /// 4 or 6.
    pub family: u8,
    /// Explicit padding.
    pub _pad: [u8; 2],
}

/// `PS_FLOWS` value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowState {
    /// `FLOW_*`.
    pub state: u32,
    /// Counter slot of the rule that allowed the flow.
    pub counter: u32,
    /// Created, `bpf_ktime_get_coarse_ns` (CLOCK_MONOTONIC_COARSE: CLOCK_MONOTONIC, a
    /// tick's resolution).
    pub created_ns: u64,
    /// Last packet that refreshed the flow (`crate::track` says which do).
    pub last_ns: u64,
    /// Packets from the host.
    pub packets_out: u32,
    /// Replies admitted.
    pub packets_in: u32,
    /// TCP: what the host sent (its sequence space, windows and options).
    pub local: TcpDir,
    /// TCP: what the remote end sent.
    pub remote: TcpDir,
}

/// One direction of a TCP flow, as its sender sent it: conntrack's `ip_ct_tcp_state`, the
/// state of Guido van Rooij's "Real Stateful TCP Packet Filtering in IP Filter". All zero
/// until the sender's first segment; `crate::track` keeps it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpDir {
    /// Highest sequence number sent, plus that segment's length (`td_end`): the next byte.
    pub end: u32,
    /// Highest sequence number this side may send: the other side's highest
    /// acknowledgement plus its window (`td_maxend`).
    pub maxend: u32,
    /// Largest window this side advertised, scaled (`td_maxwin`); 0: nothing seen yet.
    pub maxwin: u32,
    /// Highest acknowledgement number this side sent (`td_maxack`; valid with [`DIR_MAXACK`]).
    pub maxack: u32,
    /// Window scale shift from this side's SYN (`td_scale`; 0 unless both sides sent one).
    pub scale: u8,
    /// `DIR_*` bits.
    pub flags: u8,
    /// Explicit padding.
    pub _pad: [u8; 2],
}

/// [`TcpDir::flags`]: the side's SYN carried the window scale option.
pub const DIR_WSCALE: u8 = 1 << 0;
/// [`TcpDir::flags`]: the side's SYN permitted SACK (its peer may send SACK blocks).
pub const DIR_SACK_PERM: u8 = 1 << 1;
/// [`TcpDir::flags`]: the side sent a FIN.
pub const DIR_FIN: u8 = 1 << 2;
/// [`TcpDir::flags`]: [`TcpDir::maxack`] holds an acknowledgement the side sent.
pub const DIR_MAXACK: u8 = 1 << 3;
/// [`TcpDir::flags`]: the windows are not known (the flow was picked up mid-stream, or a
/// SYN's options could not all be read): segments are followed, not checked.
pub const DIR_LIBERAL: u8 = 1 << 4;

/// Idle timeout of a flow in its state, nanoseconds. Two forms of one choice, by what the
/// verifier allows (`var_stack`: a read from the stack at a variable offset, after 5.4; the
/// program passes its load-time switch, the host `true`):
/// - an array of the four timeouts on the stack, indexed by state - 1, masked: LLVM turns a
///   `match` into an indexed load from the policy struct whose bound the 6.1 verifier cannot
///   see; the mask is a bound it can;
/// - without variable stack reads (5.4 refuses "variable stack access"), two choices of a
///   bit each, the index behind `black_box` so that LLVM folds them into neither of the
///   above. Same value, more verifier work (+90k instructions on 6.18), hence not everywhere.
#[inline(always)]
pub fn flow_timeout_ns(policy: &Policy, state: u32, var_stack: bool) -> u64 {
    let s = if var_stack {
        let by_state = [
            policy.tcp_syn_timeout_s,
            policy.tcp_established_timeout_s,
            policy.tcp_closing_timeout_s,
            policy.udp_timeout_s,
        ];
        by_state[(state.wrapping_sub(1) & 3) as usize]
    } else {
        let i = core::hint::black_box(state.wrapping_sub(1)) & 3;
        if i & 2 == 0 {
            if i & 1 == 0 { policy.tcp_syn_timeout_s } else { policy.tcp_established_timeout_s }
        } else if i & 1 == 0 {
            policy.tcp_closing_timeout_s
        } else {
            policy.udp_timeout_s
        }
    };
    s as u64 * 1_000_000_000
}

/// Whether `f` has been idle longer than its state allows at `now_ns` (`var_stack`: see
/// [`flow_timeout_ns`]).
#[inline(always)]
pub fn flow_expired(policy: &Policy, f: &FlowState, now_ns: u64, var_stack: bool) -> bool {
    now_ns.saturating_sub(f.last_ns) > flow_timeout_ns(policy, f.state, var_stack)
}

/// `Control::ifaces[ifindex]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceInfo {
    /// Interface slot, `1..MAX_IFACES`; `0` = not configured.
    pub slot: u32,
    /// Reserved.
    pub flags: u32,
}

/// `PS_PORTS[port_index(..)]`: heads of the candidate lists for one protocol and port
/// (`0` means no list: entry 0 of `PS_RULES` is never used), and a summary of the inbound
/// list and of the reply list's first candidate, from which the classifier answers most
/// packets without reading `PS_RULES` (`classify::quick`). Build it with [`PortEntry::new`], never field by field: the
/// summary must describe the list exactly as `classify` walks it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortEntry {
    /// Candidates when this port is the destination port (inbound rules).
    pub inbound: u32,
    /// Candidates when this port is the source port (replies to outbound rows).
    pub reply: u32,
    /// Counter slot of the first inbound candidate (meaningful where `first_slots` is set).
    pub first_counter: u32,
    /// Interface slots (bit n = slot n) on which the first inbound candidate admits every
    /// packet to this port: it applies there and is bound to no systems.
    pub first_slots: u16,
    /// Interface slots on which some inbound candidate applies. On the others every
    /// candidate fails with `DropReason::Interface` (or there is none: `NoRule`).
    pub inbound_slots: u16,
    /// Counter slot of the first reply candidate (meaningful where `reply_slots` is set).
    pub reply_counter: u32,
    /// Interface slots on which the first reply candidate applies and is bound to no
    /// systems.
    pub reply_slots: u16,
    /// `REPLY_EPHEMERAL_ONLY` if the first reply candidate's local ports are the ephemeral
    /// range and nothing else (the stateless check needs no more than the policy's range).
    pub reply_flags: u16,
}

/// [`PortEntry::reply_flags`]: the first reply candidate admits the ephemeral range only.
pub const REPLY_EPHEMERAL_ONLY: u16 = 1 << 0;

impl PortEntry {
    /// A port no rule uses.
    pub const EMPTY: Self = Self {
        inbound: 0,
        reply: 0,
        first_counter: 0,
        first_slots: 0,
        inbound_slots: 0,
        reply_counter: 0,
        reply_slots: 0,
        reply_flags: 0,
    };

    /// The entry for candidate lists at `inbound` and `reply` in `rules` (`PS_RULES`),
    /// with the summary of the inbound list (its candidates as `classify` visits them: at
    /// most [`MAX_CHAIN`], up to the one marked [`ENTRY_LAST`]) and of the reply list's
    /// first candidate.
    pub fn new(inbound: u32, reply: u32, rules: &[RuleEntry]) -> Self {
        let mut e = Self { inbound, reply, ..Self::default() };
        if reply != 0
            && let Some(r) = rules.get(reply as usize)
            && r.systems == 0
        {
            e.reply_slots = r.iface_mask as u16;
            e.reply_counter = r.counter;
            if r.flags & ENTRY_EPHEMERAL != 0 && r.local_hi == 0 {
                e.reply_flags = REPLY_EPHEMERAL_ONLY;
            }
        }
        if inbound == 0 {
            return e;
        }
        let mut visited = 0;
        for i in 0..MAX_CHAIN {
            let Some(r) = rules.get((inbound + i) as usize) else { break };
            let slots = r.iface_mask as u16;
            if i == 0 && r.systems == 0 {
                e.first_slots = slots;
                e.first_counter = r.counter;
            }
            e.inbound_slots |= slots;
            visited += 1;
            if r.flags & ENTRY_LAST != 0 {
                break;
            }
        }
        if visited == 0 {
            // A head outside the table: the classifier's walk finds nothing and says
            // `NoRule`, not `Interface`; let it walk.
            e.inbound_slots = u16::MAX;
        }
        e
    }
}

/// `PS_RULES[i]`: one candidate rule for a port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleEntry {
    /// `ENTRY_*` bits.
    pub flags: u32,
    /// Counter slot of the compiled rule.
    pub counter: u32,
    /// Interface slots the rule applies on (bit n = slot n).
    pub iface_mask: u32,
    /// Reply rules: extra local ports admitted, inclusive (`0..=0` = none).
    pub local_lo: u16,
    /// Upper end of the local ports.
    pub local_hi: u16,
    /// Bound systems (bit n = system n) whose addresses may send this; 0 = any source.
    pub systems: u64,
}

/// A packet and byte counter.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    /// Packets.
    pub packets: u64,
    /// Bytes (whole frames, as the program sees them).
    pub bytes: u64,
}

/// Token bucket for rate-limited logging, one per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenBucket {
    /// Tokens left.
    pub tokens: u64,
    /// Last refill, `bpf_ktime_get_ns`.
    pub last_ns: u64,
    /// Kernel tick (`bpf_jiffies64`) of the last clock read: see [`TokenBucket::exhausted_at`].
    pub tick: u64,
}

impl TokenBucket {
    /// Whether the bucket is empty and the kernel tick has not moved since the clock was
    /// last read: then no token can be due yet (give or take one tick), and the caller
    /// skips the clock. The tick counter is a load (the kernel inlines `bpf_jiffies64`),
    /// the clock a helper call; under a flood this is the whole cost of the limiter.
    #[inline(always)]
    pub const fn exhausted_at(&self, tick: u64) -> bool {
        self.tokens == 0 && self.tick == tick
    }
}

/// Dry-run log lines per second per CPU.
pub const LOG_RATE_PER_SEC: u64 = 5;
/// Dry-run log burst per CPU.
pub const LOG_BURST: u64 = 10;

/// Take one dry-run log token (see [`take_token_rate`]).
#[inline(always)]
pub fn take_token(b: &mut TokenBucket, now_ns: u64) -> bool {
    take_token_rate(b, now_ns, LOG_RATE_PER_SEC, LOG_BURST)
}

/// Take one token from `b`; refill at `rate` per second up to `burst`.
///
/// Runs on every drop of a flood, with the bucket empty: the common case is one
/// comparison. The division (64-bit, tens of cycles) happens only when a refill is due.
#[inline(always)]
pub fn take_token_rate(b: &mut TokenBucket, now_ns: u64, rate: u64, burst: u64) -> bool {
    let interval = 1_000_000_000 / rate;
    let elapsed = now_ns.wrapping_sub(b.last_ns);
    if elapsed >= interval {
        let t = b.tokens.saturating_add(elapsed / interval);
        b.tokens = if t > burst { burst } else { t };
        b.last_ns = now_ns;
    }
    if b.tokens > 0 {
        b.tokens -= 1;
        true
    } else {
        false
    }
}

/// Index into `PS_PORTS`.
#[inline(always)]
pub const fn port_index(generation: u32, l4: L4, port: u16) -> u32 {
    (generation & 1) * PORTS_PER_GEN + (l4 as u32) * 65536 + port as u32
}

/// Where the bit of (`generation`, `l4`, list kind, `port`) lives in [`Control::port_bits`]:
/// (word, bit). `reply`: the reply-list bit, else the inbound-list bit. (In the program the
/// word index also needs a mask the verifier can see: `ps-ebpf/src/maps.rs`, `port_listed`.)
#[inline(always)]
pub const fn port_bit(generation: u32, l4: L4, reply: bool, port: u16) -> (usize, u32) {
    let table = ((generation & 1) * 4 + (l4 as u32) * 2 + reply as u32) as usize;
    (table * PORT_BITS_TABLE_WORDS + (port >> 6) as usize, (port & 63) as u32)
}

/// Write `generation`'s part of [`Control::port_bits`] from its port table, given as
/// (transport, port, entry) with list heads as [`PortEntry`] holds them (0: no list): a
/// port's inbound bit is set when it has an inbound list, its reply bit when it has a reply
/// list. The other generation's bits are left alone.
pub fn write_port_bits<'a>(
    bits: &mut [u64; PORT_BITS_WORDS],
    generation: u32,
    ports: impl IntoIterator<Item = (L4, u16, &'a PortEntry)>,
) {
    for l4 in [L4::Tcp, L4::Udp] {
        for reply in [false, true] {
            let (w, _) = port_bit(generation, l4, reply, 0);
            bits[w..w + PORT_BITS_TABLE_WORDS].fill(0);
        }
    }
    for (l4, port, e) in ports {
        for (reply, head) in [(false, e.inbound), (true, e.reply)] {
            if head != 0 {
                let (w, b) = port_bit(generation, l4, reply, port);
                bits[w] |= 1 << b;
            }
        }
    }
}

/// Index into `PS_RULE_CNT`.
#[inline(always)]
pub const fn rule_counter_index(slot: u32, rules_cap: u32, counter: u32) -> u32 {
    slot * rules_cap + counter
}

/// Index into `PS_STAT_CNT` for a pass reason.
#[inline(always)]
pub const fn stat_pass_index(slot: u32, r: PassReason) -> u32 {
    slot * STAT_STRIDE + STAT_PASS_BASE + r as u32
}

/// Index into `PS_STAT_CNT` for a drop reason; `dry_run` selects the would-drop bucket.
#[inline(always)]
pub const fn stat_drop_index(slot: u32, r: DropReason, dry_run: bool) -> u32 {
    let base = if dry_run { STAT_WOULD_DROP_BASE } else { STAT_DROP_BASE };
    slot * STAT_STRIDE + base + r as u32
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are #[repr(C)], contain only integers, and have no implicit
    // padding (the field sizes add up to the struct size; see the layout tests).
    unsafe impl aya::Pod for State {}
    // SAFETY: as above (arrays of the structs above, no padding between them).
    unsafe impl aya::Pod for Control {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Policy {}
    // SAFETY: as above.
    unsafe impl aya::Pod for IfaceInfo {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PortEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for RuleEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Counter {}
    // SAFETY: as above.
    unsafe impl aya::Pod for TokenBucket {}
    // SAFETY: as above (the padding is an explicit field).
    unsafe impl aya::Pod for FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FlowState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for TcpDir {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn no_hidden_padding() {
        assert_eq!(size_of::<State>(), 8);
        assert_eq!(size_of::<Control>(), 8 + 2 * size_of::<Policy>() + MAX_IFINDEX as usize * 8 + PORT_BITS_WORDS * 8);
        assert_eq!(size_of::<Policy>(), 4 + 4 + 2 + 2 + 4 + 4 * 4);
        assert_eq!(size_of::<FlowKey>(), 16 + 16 + 2 + 2 + 1 + 1 + 2);
        assert_eq!(size_of::<TcpDir>(), 4 * 4 + 1 + 1 + 2);
        assert_eq!(size_of::<FlowState>(), 4 + 4 + 8 + 8 + 4 + 4 + 2 * size_of::<TcpDir>());
        assert_eq!(size_of::<IfaceInfo>(), 8);
        assert_eq!(size_of::<PortEntry>(), 4 + 4 + 4 + 2 + 2 + 4 + 2 + 2);
        assert_eq!(size_of::<RuleEntry>(), 4 + 4 + 4 + 2 + 2 + 8);
        assert_eq!(size_of::<Counter>(), 16);
        assert_eq!(size_of::<TokenBucket>(), 24);
    }

    #[test]
    fn indices_do_not_overlap() {
        assert_eq!(port_index(0, L4::Tcp, 0), 0);
        assert_eq!(port_index(0, L4::Udp, 0), 65536);
        assert_eq!(port_index(1, L4::Tcp, 0), PORTS_PER_GEN);
        assert_eq!(port_index(1, L4::Udp, 65535), PORTS_ENTRIES - 1);
        assert!(STAT_DROP_BASE as usize >= PassReason::COUNT);
        assert!((STAT_WOULD_DROP_BASE - STAT_DROP_BASE) as usize >= DropReason::COUNT);
        assert!(STAT_WOULD_DROP_BASE as usize + DropReason::COUNT <= STAT_LOG_SUPPRESSED as usize);
    }

    /// A policy with the default timeouts.
    fn timeouts() -> Policy {
        Policy {
            tcp_syn_timeout_s: 30,
            tcp_established_timeout_s: 3600,
            tcp_closing_timeout_s: 10,
            udp_timeout_s: 120,
            ..Policy::default()
        }
    }

    /// The two forms of the timeout choice (see `flow_timeout_ns`) agree on every state,
    /// including the ones no flow has (masked into range).
    #[test]
    fn flow_timeout_forms_agree() {
        let p = timeouts();
        let want = [(FLOW_TCP_SYN_SENT, 30), (FLOW_TCP_ESTABLISHED, 3600), (FLOW_TCP_CLOSING, 10), (FLOW_UDP, 120)];
        for (state, secs) in want {
            assert_eq!(flow_timeout_ns(&p, state, true), secs * 1_000_000_000, "state {state}");
        }
        for state in 0..16 {
            assert_eq!(flow_timeout_ns(&p, state, false), flow_timeout_ns(&p, state, true), "state {state}");
        }
    }

    #[test]
    fn token_bucket_limits_and_refills() {
        let mut b = TokenBucket { tokens: LOG_BURST, last_ns: 0, tick: 7 };
        let taken = (0..100).filter(|_| take_token(&mut b, 1)).count();
        assert_eq!(taken as u64, LOG_BURST);
        assert!(b.exhausted_at(7) && !b.exhausted_at(8), "empty: exhausted until the tick moves");
        // One second later: LOG_RATE_PER_SEC new tokens.
        let taken = (0..100).filter(|_| take_token(&mut b, 1_000_000_001)).count();
        assert_eq!(taken as u64, LOG_RATE_PER_SEC);
    }
}
