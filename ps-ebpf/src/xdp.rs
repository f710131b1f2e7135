//! Ingress: enforce the policy on every packet (`ps_common::classify::decide`), resolve
//! stateful replies against the flow table, count, and log would-drops in dry-run.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns},
    macros::xdp,
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use ps_common::{
    MODE_DRY_RUN, STAT_LOG_SUPPRESSED, STAT_STRIDE,
    classify::{Decision, Tables, Verdict, decide, flow_key},
    layout::{
        FLOW_CNT_EXPIRED, flow_expired, flow_update, rule_counter_index, stat_drop_index, stat_pass_index, take_token,
    },
    reason::DropReason,
};

use crate::{maps::*, observe};

#[xdp]
pub fn ps_xdp(ctx: XdpContext) -> u32 {
    try_ps_xdp(&ctx).unwrap_or(xdp_action::XDP_ABORTED)
}

#[inline(always)]
fn try_ps_xdp(ctx: &XdpContext) -> Option<u32> {
    let (start, end) = (ctx.data(), ctx.data_end());
    let maps = Maps::get()?;
    // SAFETY: [data, data_end) is the frame.
    let mut d = unsafe { decide(start, end, ctx.ingress_ifindex() as u32, &maps) }?;
    if let Verdict::Tracked(counter) = d.verdict {
        d.verdict = track_reply(start, end, &d, &maps, counter);
    }
    let bytes = (end - start) as u64;
    let dry_run = d.mode == MODE_DRY_RUN;
    match d.verdict {
        Verdict::Rule(counter) | Verdict::Tracked(counter) => {
            count(&PS_RULE_CNT, rule_counter_index(d.slot, d.rules_cap, counter), bytes);
            Some(xdp_action::XDP_PASS)
        }
        Verdict::Pass(r) => {
            count(&PS_STAT_CNT, stat_pass_index(d.slot, r), bytes);
            Some(xdp_action::XDP_PASS)
        }
        Verdict::Drop(r) => {
            count(&PS_STAT_CNT, stat_drop_index(d.slot, r, dry_run), bytes);
            observe::drop(ctx, &d, r, dry_run);
            if dry_run {
                log_would_drop(ctx, &d);
                Some(xdp_action::XDP_PASS)
            } else {
                Some(xdp_action::XDP_DROP)
            }
        }
    }
}

/// A reply under stateful admission: it passes only if the host opened its flow, and the
/// flow has not been idle past its timeout.
#[inline(always)]
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "by value, the 40-byte key is copied onto the stack again; the verifier allows 512 bytes"
)]
fn track_reply(start: usize, end: usize, d: &Decision, maps: &Maps, counter: u32) -> Verdict {
    // SAFETY: the frame `d.packet` was parsed from.
    let Some(key) = (unsafe { flow_key(start, end, &d.packet, true) }) else {
        return Verdict::Drop(DropReason::Truncated);
    };
    let Some(f) = PS_FLOWS.get_ptr_mut(&key) else {
        return Verdict::Drop(DropReason::Untracked);
    };
    // SAFETY: no preconditions. The coarse clock (CLOCK_MONOTONIC_COARSE, a tick's
    // resolution) is plenty for timeouts in seconds, and costs a fraction of
    // `bpf_ktime_get_ns` on a path every tracked packet takes.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    // SAFETY: the value lives as long as the entry; concurrent updates are benign
    // (timestamps and counters of display value).
    let f = unsafe { &mut *f };
    let Some(policy) = maps.policy(d.generation) else {
        return Verdict::Drop(DropReason::Untracked);
    };
    if flow_expired(policy, f, now) {
        let _ = PS_FLOWS.remove(&key);
        count(&PS_FLOW_CNT, FLOW_CNT_EXPIRED, 0);
        return Verdict::Drop(DropReason::Untracked);
    }
    flow_update(f, d.packet.proto, d.packet.tcp_flags, true, now);
    Verdict::Rule(counter)
}

/// Log a would-drop (debug level: the agent logs every drop from `PS_EVENTS`), at most
/// `LOG_BURST` lines then `LOG_RATE_PER_SEC` per CPU.
///
/// Inlined: as a subprogram it made a chain ps_xdp → log_would_drop → memcpy (aya-log
/// copying the reason string), which the 6.1 verifier sums to 448 + 64 + 32 = 544 bytes of
/// stack (over 512: it rounds every frame up to 32 bytes; later kernels round JITed frames
/// to 16). Inlined, the main frame even shrinks (432 → 384 bytes: its slots are reused).
#[inline(always)]
fn log_would_drop(ctx: &XdpContext, d: &Decision) {
    let Some(bucket) = PS_LOG_RL.get_ptr_mut(0) else { return };
    // SAFETY: per-CPU value.
    let allowed = take_token(unsafe { &mut *bucket }, unsafe { bpf_ktime_get_ns() });
    if !allowed {
        count(&PS_STAT_CNT, d.slot * STAT_STRIDE + STAT_LOG_SUPPRESSED, 0);
        return;
    }
    let Verdict::Drop(reason) = d.verdict else { return };
    let p = &d.packet;
    debug!(
        ctx,
        "would drop: reason={} ifindex={} ipv{} proto={} sport={} dport={}",
        reason.as_str(),
        ctx.ingress_ifindex(),
        p.ip_version,
        p.proto,
        p.sport,
        p.dport
    );
}
