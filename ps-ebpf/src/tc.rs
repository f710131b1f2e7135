//! Egress (TC, clsact or TCX): count what the host sends per rule, and record each
//! outbound flow a matrix row allows in the flow table, so that stateful reply admission
//! can let exactly its replies in. Packets no row allows are counted, and dropped only
//! with `egress = "enforce"`.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use ps_common::{
    MAX_IFACES, MODE_DRY_RUN,
    classify::{Egress, Tables, classify_egress, flow_key_into},
    layout::{
        FLOW_CNT_CLOSED, FLOW_CNT_CREATED, FLOW_CNT_INSERT_FAILED, POLICY_EGRESS_ENFORCE, POLICY_STATEFUL,
        rule_counter_index, stat_drop_index, stat_pass_index,
    },
    parse::{IPPROTO_TCP, Parsed, parse_sized},
    reason::DropReason,
    track::{Sent, flow_new_into, flow_sent, tcp_segment_into},
};

use ps_ebpf::maps::*;

use crate::features;

#[classifier]
pub fn ps_tc_egress(ctx: TcContext) -> i32 {
    // Egress fails open: an internal error must not cut the host off.
    try_ps_tc_egress(&ctx).unwrap_or(TC_ACT_OK)
}

/// Bytes of headers the parser may need (Ethernet, two VLAN tags, IPv6 with extension
/// headers, TCP).
const HEADERS: u32 = 256;

#[inline(always)]
fn try_ps_tc_egress(ctx: &TcContext) -> Option<i32> {
    let maps = Maps::get()?;
    let state = maps.state()?;
    let policy = maps.policy(state.generation & 1)?;
    // SAFETY: skb is the context the kernel passed.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // `classify::iface_slot`, spelled out: calling it doubles this program's verifier work.
    let slot = match maps.iface(ifindex) {
        Some(i) if i.slot < MAX_IFACES => i.slot,
        _ => 0,
    };
    // The IP lengths are checked against the whole packet: a segment's payload is
    // usually in pages, beyond the linear part.
    let len = ctx.len() as usize;
    // SAFETY: [data, data_end) is the linear part of the packet, of `len` bytes in all.
    let mut parsed = unsafe { parse_sized(ctx.data(), ctx.data_end(), len, |v| maps.launder(v)) };
    if parsed == Parsed::Drop(DropReason::Truncated) && ctx.len() > (ctx.data_end() - ctx.data()) as u32 {
        // Headers in the non-linear part: pull them in and parse again.
        let want = if ctx.len() < HEADERS { ctx.len() } else { HEADERS };
        ctx.pull_data(want).ok()?;
        // SAFETY: as above, after the pull.
        parsed = unsafe { parse_sized(ctx.data(), ctx.data_end(), len, |v| maps.launder(v)) };
    }
    let bytes = ctx.len() as u64;
    match classify_egress(&parsed, policy, state.generation & 1, slot, &maps) {
        Egress::InboundReply(counter) => {
            count(&PS_ERULE_CNT, rule_counter_index(slot, policy.rules_cap, counter), bytes);
        }
        Egress::Outbound(counter) => {
            count(&PS_ERULE_CNT, rule_counter_index(slot, policy.rules_cap, counter), bytes);
            if policy.flags & POLICY_STATEFUL != 0
                && let Parsed::Ip(p) = parsed
                && let Some(s) = PS_ESCRATCH.get_ptr_mut(0)
            {
                // SAFETY: per-CPU value; only this CPU touches it while the program runs.
                unsafe {
                    (*s).p = p;
                    (*s).counter = counter;
                }
                track(ctx);
            }
        }
        Egress::Pass(r) => count(&PS_ESTAT_CNT, stat_pass_index(slot, r), bytes),
        Egress::Unmatched(r) => {
            let enforce = policy.flags & POLICY_EGRESS_ENFORCE != 0 && state.mode != MODE_DRY_RUN;
            let drop = enforce && r == DropReason::NoRule;
            count(&PS_ESTAT_CNT, stat_drop_index(slot, r, !drop), bytes);
            if drop {
                return Some(TC_ACT_SHOT);
            }
        }
    }
    Some(TC_ACT_OK)
}

/// Create or follow the flow of the outbound packet the caller left in `PS_ESCRATCH`
/// (`ps_common::track`). Key, segment and new flow are built there too, not on the stack.
///
/// Inlined, not a BPF-to-BPF call: this program has no other call, and before 6.2 the
/// verifier marks every value precise when it traces one back across a call (as a
/// subprogram, 5.19 verified `ps_tc_egress` in 66,950 instructions; inlined, 43,996). The
/// egress classifier has few paths to verify it on (6.18: 21,158 against 21,527).
#[inline(always)]
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "by reference, the helpers get pointers into the per-CPU scratch value; by value, copies on the stack"
)]
fn track(ctx: &TcContext) {
    let Some(s) = PS_ESCRATCH.get_ptr_mut(0) else { return };
    // SAFETY: per-CPU value; only this CPU touches it while the program runs.
    let s = unsafe { &mut *s };
    let (start, end) = (ctx.data(), ctx.data_end());
    // SAFETY (both): the frame `s.p` was parsed from. No SACK blocks: the host's own
    // segments are not checked.
    if !unsafe { flow_key_into(start, end, &s.p, false, &mut s.key) } {
        return;
    }
    let tcp = s.p.proto == IPPROTO_TCP;
    if tcp && !unsafe { tcp_segment_into(start, end, &s.p, false, &mut s.seg, &mut s.opts) } {
        return;
    }
    let seg = if tcp { Some(&s.seg) } else { None };
    let now = features::flow_now();
    if let Some(f) = PS_FLOWS.get_ptr_mut(&s.key) {
        // SAFETY: the value lives as long as the entry; the ingress program may update the
        // remote direction meanwhile (see `ps_common::track::flow_reply`).
        if flow_sent(unsafe { &mut *f }, s.p.proto, seg, s.counter, now) == Sent::Close {
            let _ = PS_FLOWS.remove(&s.key);
            count(&PS_FLOW_CNT, FLOW_CNT_CLOSED, 0);
        }
        return;
    }
    if flow_new_into(s.p.proto, seg, s.counter, now, &mut s.flow) {
        if PS_FLOWS.insert(&s.key, &s.flow, 0).is_ok() {
            count(&PS_FLOW_CNT, FLOW_CNT_CREATED, 0);
        } else {
            count(&PS_FLOW_CNT, FLOW_CNT_INSERT_FAILED, 0);
        }
    }
}
