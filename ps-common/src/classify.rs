//! Rule matching: from a parsed packet and the policy tables to a [`Verdict`].
//!
//! The tables are reached through the [`Tables`] trait: the XDP program implements it
//! over its BPF maps, the agent over the compiled rule set in memory (for `explain` and
//! the differential tests). Only array lookups are used; a packet costs at most one
//! port-table lookup per direction plus a walk of at most [`MAX_CHAIN`] candidates (one
//! in the common case).

use crate::{
    layout::*,
    parse::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, Packet, Parsed, parse},
    reason::{DropReason, PassReason},
};

/// The policy tables, as the classifier reads them.
pub trait Tables {
    /// `PS_STATE[0]`.
    fn state(&self) -> Option<State>;
    /// `PS_POLICY[generation]`.
    fn policy(&self, generation: u32) -> Option<Policy>;
    /// `PS_IFACES[ifindex]`, `None` outside the table.
    fn iface(&self, ifindex: u32) -> Option<IfaceInfo>;
    /// `PS_PORTS[index]`.
    fn port(&self, index: u32) -> Option<PortEntry>;
    /// `PS_RULES[index]`.
    fn rule(&self, index: u32) -> Option<RuleEntry>;
}

/// What happens to a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Admitted by the compiled rule with this counter slot.
    Rule(u32),
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
/// # Safety
/// `[start, end)` must be readable memory.
#[inline(always)]
pub unsafe fn decide<T: Tables>(start: usize, end: usize, ifindex: u32, t: &T) -> Option<Decision> {
    let state = t.state()?;
    let policy = t.policy(state.generation & 1)?;
    let slot = match t.iface(ifindex) {
        Some(i) if i.slot < MAX_IFACES => i.slot,
        _ => 0,
    };
    // SAFETY: forwarded from the caller.
    let parsed = unsafe { parse(start, end) };
    let (verdict, packet) = match parsed {
        Parsed::Arp => (Verdict::Pass(PassReason::Arp), Packet::default()),
        Parsed::Drop(r) => (Verdict::Drop(r), Packet::default()),
        Parsed::Ip(p) => (classify(&p, &policy, state.generation & 1, slot, t), p),
    };
    Some(Decision { verdict, slot, mode: state.mode, rules_cap: policy.rules_cap, packet })
}

/// Host wrapper of [`decide`] over a byte slice.
pub fn decide_slice<T: Tables>(frame: &[u8], ifindex: u32, t: &T) -> Option<Decision> {
    let start = frame.as_ptr() as usize;
    // SAFETY: the slice is readable for the duration of the call.
    unsafe { decide(start, start + frame.len(), ifindex, t) }
}

/// Classify a parsed IP packet.
#[inline(always)]
pub fn classify<T: Tables>(p: &Packet, policy: &Policy, generation: u32, slot: u32, t: &T) -> Verdict {
    let l4 = match p.proto {
        IPPROTO_TCP => L4::Tcp,
        IPPROTO_UDP => L4::Udp,
        IPPROTO_ICMP | IPPROTO_ICMPV6 => return classify_icmp(p, policy),
        _ => return Verdict::Drop(DropReason::IpProto),
    };
    let mut why = DropReason::NoRule;
    if let Some(e) = t.port(port_index(generation, l4, p.dport))
        && e.inbound != 0
    {
        match walk(e.inbound, p, policy, slot, t) {
            Ok(counter) => return Verdict::Rule(counter),
            Err(r) => why = r,
        }
    }
    if let Some(e) = t.port(port_index(generation, l4, p.sport))
        && e.reply != 0
    {
        match walk(e.reply, p, policy, slot, t) {
            Ok(counter) => return Verdict::Rule(counter),
            Err(r) => {
                if why == DropReason::NoRule {
                    why = r
                }
            }
        }
    }
    Verdict::Drop(why)
}

/// Walk the candidate list at `head`; the first candidate that admits the packet wins.
#[inline(always)]
fn walk<T: Tables>(head: u32, p: &Packet, policy: &Policy, slot: u32, t: &T) -> Result<u32, DropReason> {
    let mut why = DropReason::NoRule;
    let mut i = 0;
    while i < MAX_CHAIN {
        let Some(r) = t.rule(head + i) else { break };
        match admits(&r, p, policy, slot) {
            Ok(()) => return Ok(r.counter),
            Err(reason) => why = reason,
        }
        if r.flags & ENTRY_LAST != 0 {
            break;
        }
        i += 1;
    }
    Err(why)
}

#[inline(always)]
fn admits(r: &RuleEntry, p: &Packet, policy: &Policy, slot: u32) -> Result<(), DropReason> {
    if r.iface_mask & (1 << (slot & 31)) == 0 {
        return Err(DropReason::Interface);
    }
    if r.flags & ENTRY_REPLY != 0 {
        if p.proto == IPPROTO_TCP && p.tcp_flags & TCP_ACK == 0 {
            return Err(DropReason::ReplyCheck);
        }
        let local = p.dport;
        let explicit = local >= r.local_lo && local <= r.local_hi && r.local_hi != 0;
        let ephemeral = r.flags & ENTRY_EPHEMERAL != 0 && local >= policy.ephemeral_lo && local <= policy.ephemeral_hi;
        if !explicit && !ephemeral {
            return Err(DropReason::ReplyCheck);
        }
    }
    Ok(())
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
