//! Egress (TC, clsact or TCX): count what the host sends per rule, and record each
//! outbound flow a matrix row allows in the flow table, so that stateful reply admission
//! can let exactly its replies in. Packets no row allows are counted, and dropped only
//! with `egress = "enforce"`.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    helpers::bpf_ktime_get_coarse_ns,
    macros::classifier,
    programs::TcContext,
};
use ps_common::{
    MAX_IFACES, MODE_DRY_RUN,
    classify::{Egress, Tables, classify_egress, flow_key},
    layout::{
        FLOW_CNT_CREATED, FLOW_CNT_INSERT_FAILED, POLICY_EGRESS_ENFORCE, POLICY_STATEFUL, flow_new, flow_update,
        rule_counter_index, stat_drop_index, stat_pass_index,
    },
    parse::{Parsed, parse_with},
    reason::DropReason,
};

use crate::maps::*;

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
    // SAFETY: [data, data_end) is the linear part of the packet.
    let mut parsed = unsafe { parse_with(ctx.data(), ctx.data_end(), |v| maps.launder(v)) };
    if parsed == Parsed::Drop(DropReason::Truncated) && ctx.len() > (ctx.data_end() - ctx.data()) as u32 {
        // Headers in the non-linear part: pull them in and parse again.
        let want = if ctx.len() < HEADERS { ctx.len() } else { HEADERS };
        ctx.pull_data(want).ok()?;
        // SAFETY: as above, after the pull.
        parsed = unsafe { parse_with(ctx.data(), ctx.data_end(), |v| maps.launder(v)) };
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
            {
                track(ctx, &p, counter);
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

/// Create or refresh the flow of an outbound packet.
#[inline(always)]
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "by value, the 40-byte key is copied onto the stack again; the verifier allows 512 bytes"
)]
fn track(ctx: &TcContext, p: &ps_common::Packet, counter: u32) {
    // SAFETY: the frame `p` was parsed from.
    let Some(key) = (unsafe { flow_key(ctx.data(), ctx.data_end(), p, false) }) else { return };
    // SAFETY: no preconditions. The coarse clock (CLOCK_MONOTONIC_COARSE, a tick's
    // resolution) is plenty for timeouts in seconds, and costs a fraction of
    // `bpf_ktime_get_ns` on a path every tracked packet takes.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if let Some(f) = PS_FLOWS.get_ptr_mut(&key) {
        // SAFETY: the value lives as long as the entry.
        let f = unsafe { &mut *f };
        f.counter = counter;
        flow_update(f, p.proto, p.tcp_flags, false, now);
        return;
    }
    if let Some(f) = flow_new(p.proto, p.tcp_flags, counter, now) {
        if PS_FLOWS.insert(&key, &f, 0).is_ok() {
            count(&PS_FLOW_CNT, FLOW_CNT_CREATED, 0);
        } else {
            count(&PS_FLOW_CNT, FLOW_CNT_INSERT_FAILED, 0);
        }
    }
}
