//! Rule matching: from a parsed packet and the policy tables to a [`Verdict`].
//!
//! The tables are reached through the [`Tables`] trait: the XDP program implements it
//! over its BPF maps, the agent over the compiled rule set in memory (for `explain` and
//! the differential tests). Only array lookups are used; a packet costs at most one
//! port-table lookup per direction plus a walk of at most [`MAX_CHAIN`] candidates, and
//! most packets one or two port-table lookups and no walk ([`quick`]).

use crate::{
    layout::*,
    parse::{
        IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, Packet, Parsed, copy_words, parse_fast, parse_with,
        ptr_at,
    },
    reason::{DropReason, PassReason},
};

pub use crate::layout::FlowKey;

/// The policy tables, as the classifier reads them.
///
/// Entries are handed out by reference, and the classifier reads each field where it
/// uses it: in the kernel a reference is a pointer into the map value, and a field read
/// late is one load, where a copied struct is several loads up front and their values
/// spilled to the stack across every map lookup in between (BPF has four callee-saved
/// registers).
pub trait Tables {
    /// `PS_STATE[0].state`.
    fn state(&self) -> Option<&State>;
    /// `PS_STATE[0].policy[generation]`.
    fn policy(&self, generation: u32) -> Option<&Policy>;
    /// `PS_STATE[0].ifaces[ifindex]`, `None` outside the table.
    fn iface(&self, ifindex: u32) -> Option<&IfaceInfo>;
    /// `PS_PORTS[index]`.
    fn port(&self, index: u32) -> Option<&PortEntry>;
    /// Whether `port` has a list of this kind (`reply`: a reply list, else an inbound one)
    /// in `generation`'s port table: [`Control::port_bits`]. `false` means that head of its
    /// `PS_PORTS` entry is 0; [`quick`] asks this before it looks the port up.
    fn port_listed(&self, generation: u32, l4: L4, port: u16, reply: bool) -> bool;
    /// `PS_RULES[index]`.
    fn rule(&self, index: u32) -> Option<&RuleEntry>;
    /// `PS_SRC`: the systems the source address belongs to (longest-prefix match over
    /// `key`, built by [`crate::layout::src_key_data`]); 0 when it belongs to none.
    fn src_systems(&self, key: &[u8; 20]) -> u64;
    /// Return `v` unchanged, but (in the kernel) unknown to the verifier: see
    /// [`crate::parse::parse_with`].
    #[inline(always)]
    fn launder(&self, v: usize) -> usize {
        v
    }
}

/// What happens to a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Admitted by the compiled rule with this counter slot.
    Rule(u32),
    /// A reply to the outbound rule with this counter slot, under stateful reply
    /// admission: it passes only if its flow is tracked (the caller looks it up; see
    /// [`flow_key`]), otherwise it is [`DropReason::Untracked`].
    Tracked(u32),
    /// Passed without a rule.
    Pass(PassReason),
    /// Dropped (or, in dry-run, would have been).
    Drop(DropReason),
}

/// A verdict with everything needed to count and act on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The verdict.
    pub verdict: Verdict,
    /// Interface slot (0 = not configured).
    pub slot: u32,
    /// `MODE_*` of the active state.
    pub mode: u32,
    /// Counter stride of the active policy.
    pub rules_cap: u32,
    /// The active generation (`0` or `1`): where the stateful path finds the policy's
    /// flow timeouts. The policy itself is not carried: copying it through every path
    /// cost the program more than reading it twice on the one path that needs it.
    pub generation: u32,
    /// The parsed packet (default for non-IP frames).
    pub packet: Packet,
}

impl Decision {
    /// Whether the packet leaves the program with XDP_PASS.
    pub const fn passes(&self) -> bool {
        !matches!(self.verdict, Verdict::Drop(_)) || self.mode == MODE_DRY_RUN
    }
}

/// Classify the frame in `[start, end)` that arrived on `ifindex`. `None` only when the
/// state or policy tables cannot be read (the program aborts).
///
/// Two steps: the short way ([`decide_quick`]) answers the common frame from the port
/// table alone; the whole way ([`decide_walk`]) answers every frame. Here they share one
/// read of the state and one run of the fast parser.
///
/// # Safety
/// `[start, end)` must be readable memory.
#[inline(always)]
pub unsafe fn decide<T: Tables>(start: usize, end: usize, ifindex: u32, t: &T) -> Option<Decision> {
    let c = Context::read(ifindex, t)?;
    // SAFETY: forwarded from the caller.
    let fast = unsafe { parse_fast(start, end) };
    if let Some(d) = c.quick(fast, t) {
        return Some(d);
    }
    // SAFETY: forwarded from the caller.
    Some(unsafe { c.walk(start, end, fast, t) })
}

/// The short way alone, for the frames a host mostly sees: [`parse_fast`] and [`quick`].
/// `None` when either declines (or the tables cannot be read).
///
/// # Safety
/// `[start, end)` must be readable memory.
pub unsafe fn decide_quick<T: Tables>(start: usize, end: usize, ifindex: u32, t: &T) -> Option<Decision> {
    // SAFETY: forwarded from the caller.
    Context::read(ifindex, t)?.quick(unsafe { parse_fast(start, end) }, t)
}

/// The whole way alone: the parsers, the source-address lookup where some rule is bound
/// to systems, and [`classify`]. Answers every frame; for the frames [`decide_quick`]
/// answers it says the same (the unit, differential and fuzz tests assert it), only
/// slower.
///
/// # Safety
/// `[start, end)` must be readable memory.
pub unsafe fn decide_walk<T: Tables>(start: usize, end: usize, ifindex: u32, t: &T) -> Option<Decision> {
    let c = Context::read(ifindex, t)?;
    // SAFETY: forwarded from the caller.
    Some(unsafe { c.walk(start, end, parse_fast(start, end), t) })
}

/// What every frame's decision reads before the frame.
struct Context<'a> {
    state: &'a State,
    policy: &'a Policy,
    generation: u32,
    slot: u32,
}

impl<'a> Context<'a> {
    #[inline(always)]
    fn read<T: Tables>(ifindex: u32, t: &'a T) -> Option<Self> {
        let state = t.state()?;
        let generation = state.generation & 1;
        let policy = t.policy(generation)?;
        Some(Self { state, policy, generation, slot: iface_slot(ifindex, t) })
    }

    #[inline(always)]
    fn decision(&self, verdict: Verdict, packet: Packet) -> Decision {
        Decision {
            verdict,
            slot: self.slot,
            mode: self.state.mode,
            rules_cap: self.policy.rules_cap,
            generation: self.generation,
            packet,
        }
    }

    /// The short way, on what [`parse_fast`] made of the frame.
    #[inline(always)]
    fn quick<T: Tables>(&self, fast: Option<Packet>, t: &T) -> Option<Decision> {
        let p = fast?;
        let v = quick(&p, self.policy, self.generation, self.slot, t)?;
        Some(self.decision(v, p))
    }

    /// The whole way; `fast` is what [`parse_fast`] made of the frame (the general parser
    /// runs where it declined).
    ///
    /// # Safety
    /// `[start, end)` must be readable memory.
    #[inline(always)]
    unsafe fn walk<T: Tables>(&self, start: usize, end: usize, fast: Option<Packet>, t: &T) -> Decision {
        let parsed = match fast {
            Some(p) => Parsed::Ip(p),
            // SAFETY: forwarded from the caller.
            None => unsafe { parse_with(start, end, |v| t.launder(v)) },
        };
        let (verdict, packet) = match parsed {
            Parsed::Arp => (Verdict::Pass(PassReason::Arp), Packet::default()),
            Parsed::Drop(r) => (Verdict::Drop(r), Packet::default()),
            Parsed::Ip(p) => {
                // One longest-prefix match, only when some rule names bound systems.
                let src = if self.policy.flags & POLICY_SOURCE_SETS != 0 {
                    // SAFETY: forwarded from the caller.
                    unsafe { source_systems(start, end, &p, self.generation, t) }
                } else {
                    0
                };
                (classify(&p, self.policy, self.generation, self.slot, src, t), p)
            }
        };
        self.decision(verdict, packet)
    }
}

/// The interface slot of `ifindex` (0: an interface the agent did not configure).
///
/// (The egress program spells the same match out: called from there, the function doubled
/// `ps_tc_egress`'s verifier work, 27k → 52k instructions, over its budget.)
#[inline(always)]
fn iface_slot<T: Tables>(ifindex: u32, t: &T) -> u32 {
    match t.iface(ifindex) {
        Some(i) if i.slot < MAX_IFACES => i.slot,
        _ => 0,
    }
}

/// Host wrapper of [`decide`] over a byte slice.
pub fn decide_slice<T: Tables>(frame: &[u8], ifindex: u32, t: &T) -> Option<Decision> {
    let start = frame.as_ptr() as usize;
    // SAFETY: the slice is readable for the duration of the call.
    unsafe { decide(start, start + frame.len(), ifindex, t) }
}

/// The systems the packet's source address belongs to.
///
/// Not inlined: in the kernel a subprogram with its own stack frame, so the address and
/// key buffers do not outlive the call in the verifier's view of the caller.
///
/// # Safety
/// `[start, end)` must be the readable frame `p` was parsed from.
#[inline(never)]
unsafe fn source_systems<T: Tables>(start: usize, end: usize, p: &Packet, generation: u32, t: &T) -> u64 {
    let off = p.src_addr_off() as usize;
    // The key of `src_key_data`, built from whole words: a zeroed byte buffer becomes a
    // call to `memset` here, a third stack frame that the 6.1 verifier counts as 32 bytes
    // (combined stack over 512: `ps_xdp` rejected).
    let head = u32::from_ne_bytes([(generation & 1) as u8, p.ip_version, 0, 0]);
    let w = |a: &[u8], i: usize| u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
    let words: [u32; 5] = if p.ip_version == 4 {
        if start + off + 4 > end {
            return 0;
        }
        // SAFETY: checked above.
        let a = unsafe { &*((start + off) as *const [u8; 4]) };
        [head, w(a, 0), 0, 0, 0]
    } else {
        if start + off + 16 > end {
            return 0;
        }
        // SAFETY: checked above.
        let a = unsafe { &*((start + off) as *const [u8; 16]) };
        [head, w(a, 0), w(a, 4), w(a, 8), w(a, 12)]
    };
    // SAFETY: [u32; 5] and [u8; 20] have the same size; every bit pattern is valid.
    let key: [u8; 20] = unsafe { core::mem::transmute(words) };
    t.src_systems(&key)
}

/// The verdicts the port table gives without walking a candidate list, for the packets a
/// host mostly sees: `Some` is exactly what [`classify`] says (whatever the source
/// address), `None` means "ask it".
///
/// - the destination port's first inbound candidate admits everything on this interface
///   ([`PortEntry::first_slots`]): that rule;
/// - no inbound candidate applies on this interface and the source port has no reply
///   list: dropped, `NoRule` or `Interface` as the walk would say;
/// - no inbound candidate applies, and the source port's first reply candidate applies
///   on this interface, is bound to no systems and (stateless) passes the reply checks:
///   that rule (stateful: [`Verdict::Tracked`]).
///
/// A dropped packet whose ports no rule names needs no port-table lookup (two port bits);
/// an admitted packet one (no rule-table lookup, no source-address lookup where the rule is
/// unbound); a reply two (three for a stateless reply to explicit local ports: the rule
/// holds them).
#[inline(always)]
pub fn quick<T: Tables>(p: &Packet, policy: &Policy, generation: u32, slot: u32, t: &T) -> Option<Verdict> {
    let l4 = match p.proto {
        IPPROTO_TCP => L4::Tcp,
        IPPROTO_UDP => L4::Udp,
        _ => return None,
    };
    let bit = 1u16 << (slot & 15);
    // A port no rule names is answered from the port bits, not the port table.
    let why = if t.port_listed(generation, l4, p.dport, false) {
        let e = t.port(port_index(generation, l4, p.dport))?;
        if e.first_slots & bit != 0 {
            return Some(Verdict::Rule(e.first_counter));
        }
        if e.inbound_slots & bit != 0 {
            return None;
        }
        if e.inbound == 0 { DropReason::NoRule } else { DropReason::Interface }
    } else {
        DropReason::NoRule
    };
    if !t.port_listed(generation, l4, p.sport, true) {
        return Some(Verdict::Drop(why));
    }
    let s = t.port(port_index(generation, l4, p.sport))?;
    if s.reply == 0 {
        return Some(Verdict::Drop(why));
    }
    if s.reply_slots & bit == 0 {
        return None;
    }
    if policy.flags & POLICY_STATEFUL != 0 {
        if s.reply_flags & REPLY_EPHEMERAL_ONLY != 0 {
            return Some(Verdict::Tracked(s.reply_counter));
        }
        // Explicit local ports: the rule has them (`stateful_reply`).
        let r = t.rule(s.reply)?;
        return Some(stateful_reply(r, p));
    }
    if s.reply_flags & REPLY_EPHEMERAL_ONLY != 0 {
        // `reply_checks` for a candidate whose local ports are the ephemeral range.
        let ok = reply_flags_ok(p) && ephemeral(policy, p.dport);
        return if ok { Some(Verdict::Rule(s.reply_counter)) } else { None };
    }
    // Explicit local ports: the rule has them.
    let r = t.rule(s.reply)?;
    match reply_checks(r, p, policy, p.dport) {
        Ok(()) => Some(Verdict::Rule(r.counter)),
        Err(_) => None,
    }
}

/// Classify a parsed IP packet; `src` is the set of bound systems its source address
/// belongs to (see [`Tables::src_systems`]). [`decide`] asks [`quick`] first.
#[inline(always)]
pub fn classify<T: Tables>(p: &Packet, policy: &Policy, generation: u32, slot: u32, src: u64, t: &T) -> Verdict {
    let l4 = match p.proto {
        IPPROTO_TCP => L4::Tcp,
        IPPROTO_UDP => L4::Udp,
        IPPROTO_ICMP | IPPROTO_ICMPV6 => return classify_icmp(p, policy),
        _ => return Verdict::Drop(DropReason::IpProto),
    };
    let stateful = policy.flags & POLICY_STATEFUL != 0;
    let mut why = DropReason::NoRule;
    if let Some(e) = t.port(port_index(generation, l4, p.dport))
        && e.inbound != 0
    {
        match walk(e.inbound, slot, t, |r| source_ok(r, src).map(|()| r.counter)) {
            Ok(counter) => return Verdict::Rule(counter),
            Err(r) => why = r,
        }
    }
    if let Some(e) = t.port(port_index(generation, l4, p.sport))
        && e.reply != 0
    {
        // Stateful: the flow table decides (an exact tuple match is stronger than the
        // stateless checks), but for the rule's explicit local ports (`stateful_reply`).
        // Stateless: ACK for TCP, and a local port the host uses for outbound connections.
        let checks = |r: &RuleEntry| {
            source_ok(r, src)?;
            if stateful {
                Ok(stateful_reply(r, p))
            } else {
                reply_checks(r, p, policy, p.dport).map(|()| Verdict::Rule(r.counter))
            }
        };
        match walk(e.reply, slot, t, checks) {
            Ok(v) => return v,
            Err(r) => {
                if why == DropReason::NoRule {
                    why = r
                }
            }
        }
    }
    Verdict::Drop(why)
}

/// Walk the candidate list at `head`; the first candidate on this interface that passes
/// `check` wins, with what `check` made of it.
#[inline(always)]
fn walk<T: Tables, R>(
    head: u32,
    slot: u32,
    t: &T,
    check: impl Fn(&RuleEntry) -> Result<R, DropReason>,
) -> Result<R, DropReason> {
    let mut why = DropReason::NoRule;
    let mut i = 0;
    while i < MAX_CHAIN {
        let Some(r) = t.rule(head + i) else { break };
        let verdict = if r.iface_mask & (1 << (slot & 31)) == 0 { Err(DropReason::Interface) } else { check(r) };
        match verdict {
            Ok(v) => return Ok(v),
            Err(reason) => why = reason,
        }
        if r.flags & ENTRY_LAST != 0 {
            break;
        }
        i += 1;
    }
    Err(why)
}

/// A reply under stateful admission to the reply rule `r`: to one of the rule's explicit
/// local ports (DHCP 67 → 68, DHCPv6 547 → 546, NTP 123 → 123), admitted by the rule as
/// the stateless checks admit it, because no flow can match it: the request went to a
/// broadcast or multicast address (DHCPDISCOVER to 255.255.255.255, SOLICIT to ff02::1:2)
/// and the answer comes from the server's own; otherwise it needs its flow
/// ([`Verdict::Tracked`]). The netfilter exports admit the same pairs the same way.
#[inline(always)]
fn stateful_reply(r: &RuleEntry, p: &Packet) -> Verdict {
    if explicit_local(r, p.dport) && reply_flags_ok(p) { Verdict::Rule(r.counter) } else { Verdict::Tracked(r.counter) }
}

/// A rule bound to systems admits only their source addresses.
#[inline(always)]
fn source_ok(r: &RuleEntry, src: u64) -> Result<(), DropReason> {
    if r.systems != 0 && r.systems & src == 0 { Err(DropReason::Source) } else { Ok(()) }
}

/// Stateless reply checks: TCP must carry ACK; the local port must be in the ephemeral
/// range (where the entry says so) or the entry's explicit local ports.
#[inline(always)]
fn reply_checks(r: &RuleEntry, p: &Packet, policy: &Policy, local: u16) -> Result<(), DropReason> {
    if !reply_flags_ok(p) {
        return Err(DropReason::ReplyCheck);
    }
    local_port_ok(r, policy, local)
}

/// A TCP reply carries ACK (UDP has nothing to check).
#[inline(always)]
fn reply_flags_ok(p: &Packet) -> bool {
    p.proto != IPPROTO_TCP || p.tcp_flags & TCP_ACK != 0
}

/// The local port is in the host's ephemeral range.
#[inline(always)]
fn ephemeral(policy: &Policy, local: u16) -> bool {
    local >= policy.ephemeral_lo && local <= policy.ephemeral_hi
}

/// The local port is one of the reply rule's explicit local ports.
#[inline(always)]
fn explicit_local(r: &RuleEntry, local: u16) -> bool {
    local >= r.local_lo && local <= r.local_hi && r.local_hi != 0
}

#[inline(always)]
fn local_port_ok(r: &RuleEntry, policy: &Policy, local: u16) -> Result<(), DropReason> {
    let ephemeral = r.flags & ENTRY_EPHEMERAL != 0 && ephemeral(policy, local);
    if explicit_local(r, local) || ephemeral { Ok(()) } else { Err(DropReason::ReplyCheck) }
}

/// What the egress program does with a packet the host sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Egress {
    /// A reply from a port an inbound rule admits (the host answering a client).
    InboundReply(u32),
    /// An outbound flow the reply rule with this counter slot allows: track it.
    Outbound(u32),
    /// Passes without a rule (ARP, ICMP, neighbour discovery).
    Pass(PassReason),
    /// No row allows it (counted; dropped only with `egress = "enforce"`).
    Unmatched(DropReason),
}

/// Classify a packet the host sends on interface `slot`.
#[inline(always)]
pub fn classify_egress<T: Tables>(parsed: &Parsed, policy: &Policy, generation: u32, slot: u32, t: &T) -> Egress {
    let p = match parsed {
        Parsed::Arp => return Egress::Pass(PassReason::Arp),
        Parsed::Drop(r) => return Egress::Unmatched(*r),
        Parsed::Ip(p) => p,
    };
    let l4 = match p.proto {
        IPPROTO_TCP => L4::Tcp,
        IPPROTO_UDP => L4::Udp,
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            // The host's own ICMP (errors, echo, neighbour discovery) is not filtered.
            let everything = Policy { flags: policy.flags | POLICY_ALLOW_ECHO, ..*policy };
            return match classify_icmp(p, &everything) {
                Verdict::Pass(r) => Egress::Pass(r),
                _ => Egress::Pass(PassReason::IcmpEcho),
            };
        }
        _ => return Egress::Unmatched(DropReason::IpProto),
    };
    if let Some(e) = t.port(port_index(generation, l4, p.sport))
        && e.inbound != 0
        && let Ok(counter) = walk(e.inbound, slot, t, |r| Ok(r.counter))
    {
        return Egress::InboundReply(counter);
    }
    let mut why = DropReason::NoRule;
    if let Some(e) = t.port(port_index(generation, l4, p.dport))
        && e.reply != 0
    {
        match walk(e.reply, slot, t, |r| local_port_ok(r, policy, p.sport).map(|()| r.counter)) {
            Ok(counter) => return Egress::Outbound(counter),
            Err(r) => why = r,
        }
    }
    Egress::Unmatched(why)
}

/// The flow key of an IP packet: `ingress` packets are replies (remote = source),
/// egress packets leave the host (local = source).
///
/// # Safety
/// `[start, end)` must be the readable frame `p` was parsed from.
#[inline(always)]
pub unsafe fn flow_key(start: usize, end: usize, p: &Packet, ingress: bool) -> Option<FlowKey> {
    let mut k = FlowKey::default();
    // SAFETY: forwarded.
    unsafe { flow_key_into(start, end, p, ingress, &mut k) }.then_some(k)
}

/// [`flow_key`] written into `k` (the XDP program builds it in a per-CPU scratch value,
/// not on its stack); `false` if the addresses are not in the frame.
///
/// # Safety
/// As [`flow_key`].
#[inline(always)]
pub unsafe fn flow_key_into(start: usize, end: usize, p: &Packet, ingress: bool, k: &mut FlowKey) -> bool {
    // The parser puts the addresses within the first 64 bytes: a bound the verifier can see
    // where `p` comes from memory.
    let off = (p.src_addr_off() & 0x3f) as usize;
    let (src, dst) = if ingress { (&mut k.remote, &mut k.local) } else { (&mut k.local, &mut k.remote) };
    // Word by word (`copy_words`): copied as byte arrays, the addresses cost a `memset` call.
    const ZERO: [u8; 12] = [0; 12];
    if p.ip_version == 4 {
        let Some(a) = ptr_at::<8>(start, end, off) else { return false };
        // SAFETY: 8 bytes checked at `a`; each address holds 16.
        unsafe {
            copy_words::<1>(a, src.as_mut_ptr());
            copy_words::<3>(ZERO.as_ptr(), src.as_mut_ptr().add(4));
            copy_words::<1>(a.add(4), dst.as_mut_ptr());
            copy_words::<3>(ZERO.as_ptr(), dst.as_mut_ptr().add(4));
        }
    } else {
        let Some(a) = ptr_at::<32>(start, end, off) else { return false };
        // SAFETY: 32 bytes checked at `a`.
        unsafe {
            copy_words::<4>(a, src.as_mut_ptr());
            copy_words::<4>(a.add(16), dst.as_mut_ptr());
        }
    }
    k.proto = p.proto;
    k.family = p.ip_version;
    k._pad = [0; 2];
    if ingress {
        (k.remote_port, k.local_port) = (p.sport, p.dport);
    } else {
        (k.local_port, k.remote_port) = (p.sport, p.dport);
    }
    true
}

/// ICMP and ICMPv6 by type: errors, neighbour discovery and echo replies pass; echo
/// requests pass where the policy allows them; everything else (redirects, timestamps,
/// router renumbering, ...) is dropped.
#[inline(always)]
fn classify_icmp(p: &Packet, policy: &Policy) -> Verdict {
    let echo_ok = policy.flags & POLICY_ALLOW_ECHO != 0;
    if p.proto == IPPROTO_ICMP {
        match p.icmp_type {
            3 | 11 | 12 => Verdict::Pass(PassReason::IcmpError),
            0 => Verdict::Pass(PassReason::IcmpEcho),
            8 if echo_ok => Verdict::Pass(PassReason::IcmpEcho),
            _ => Verdict::Drop(DropReason::Icmp),
        }
    } else {
        match p.icmp_type {
            1..=4 => Verdict::Pass(PassReason::IcmpError),
            129 => Verdict::Pass(PassReason::IcmpEcho),
            128 if echo_ok => Verdict::Pass(PassReason::IcmpEcho),
            // MLD query/report/done, router/neighbour solicitation and advertisement, MLDv2.
            130..=136 | 143 => Verdict::Pass(PassReason::Ndp),
            _ => Verdict::Drop(DropReason::Icmp),
        }
    }
}
