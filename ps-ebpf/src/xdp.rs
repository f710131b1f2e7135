//! Ingress: enforce the policy on every packet (`ps_common::classify::decide`), resolve
//! stateful replies against the flow table, count, and log would-drops in dry-run.

use aya_ebpf::{bindings::xdp_action, helpers::bpf_ktime_get_ns, macros::xdp, programs::XdpContext};
use aya_log_ebpf::debug;
use ps_common::{
    MODE_DRY_RUN, STAT_LOG_SUPPRESSED, STAT_STRIDE,
    classify::{Decision, Tables, Verdict, decide, flow_key_into},
    layout::{FLOW_CNT_CLOSED, FLOW_CNT_EXPIRED, rule_counter_index, stat_drop_index, stat_pass_index, take_token},
    parse::IPPROTO_TCP,
    reason::DropReason,
    track::{Reply, flow_reply, tcp_segment_into},
};

use ps_ebpf::maps::*;

use crate::{features, observe};

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
    if let Verdict::Tracked(_) = d.verdict {
        let s = PS_TSCRATCH.get_ptr_mut(0)?;
        // SAFETY: per-CPU value; only this CPU touches it while the program runs.
        unsafe { (*s).decision = d };
        tracked(ctx);
        // The whole decision is read back from the map, not kept across the call: before
        // 6.2 the verifier marks every value precise when it traces one back across a
        // call into a subprogram (5.19 went past 1M instructions, 6.1 to 772k), and a value
        // loaded from a map ends the trace. Nothing of the caller's stack is then live
        // across the call, so the call is verified once, not once per classifier path.
        // SAFETY: as above.
        d = unsafe { core::ptr::read_volatile(&(*s).decision) };
    }
    Some(act(ctx, &d))
}

/// Count the decision, observe a drop, and answer with the XDP action.
#[inline(always)]
fn act(ctx: &XdpContext, d: &Decision) -> u32 {
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    let dry_run = d.mode == MODE_DRY_RUN;
    match d.verdict {
        Verdict::Rule(counter) | Verdict::Tracked(counter) => {
            count(&PS_RULE_CNT, rule_counter_index(d.slot, d.rules_cap, counter), bytes);
            xdp_action::XDP_PASS
        }
        Verdict::Pass(r) => {
            count(&PS_STAT_CNT, stat_pass_index(d.slot, r), bytes);
            xdp_action::XDP_PASS
        }
        Verdict::Drop(r) => {
            count(&PS_STAT_CNT, stat_drop_index(d.slot, r, dry_run), bytes);
            observe::drop(ctx, d, r, dry_run);
            if dry_run {
                if features::ringbuf() {
                    log_would_drop(ctx, d);
                }
                xdp_action::XDP_PASS
            } else {
                xdp_action::XDP_DROP
            }
        }
    }
}

/// Judge a stateful reply (`Verdict::Tracked`), whose decision the caller left in
/// `PS_TSCRATCH`, against its flow, and leave the verdict there: the rule's counter, or
/// the reason for the drop.
///
/// A BPF-to-BPF call that takes only the context, like `observe::observe_drop`: the flow
/// and window checks are verified once, not once per classifier path that ends in a
/// tracked reply (inlined, they took the program past the verifier's million
/// instructions).
#[inline(never)]
fn tracked(ctx: &XdpContext) {
    let Some(s) = PS_TSCRATCH.get_ptr_mut(0) else { return };
    // SAFETY: per-CPU value; only this CPU touches it while the program runs.
    let s = unsafe { &mut *s };
    let Verdict::Tracked(counter) = s.decision.verdict else { return };
    let verdict = match Maps::get() {
        Some(maps) => match track_reply(ctx.data(), ctx.data_end(), s, &maps) {
            Ok(()) => Verdict::Rule(counter),
            Err(r) => Verdict::Drop(r),
        },
        None => Verdict::Drop(DropReason::Untracked),
    };
    s.decision.verdict = verdict;
}

/// A reply under stateful admission: it passes only if the host opened its flow, the flow
/// has not been idle past its timeout, and (TCP) the segment lies in the flow's windows
/// (`ps_common::track::flow_reply`). The key and the segment are built in `s`, not on the
/// stack.
#[inline(always)]
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "by reference, the helpers get pointers into the per-CPU scratch value; by value, copies on the stack"
)]
fn track_reply(start: usize, end: usize, s: &mut TrackScratch, maps: &Maps) -> Result<(), DropReason> {
    let p = &s.decision.packet;
    // SAFETY: the frame `p` was parsed from.
    if !unsafe { flow_key_into(start, end, p, true, &mut s.key) } {
        return Err(DropReason::Truncated);
    }
    let f = PS_FLOWS.get_ptr_mut(&s.key).ok_or(DropReason::Untracked)?;
    // SAFETY: the value lives as long as the entry; the egress program may update the
    // host's direction meanwhile (`flow_reply` writes field by field).
    let f = unsafe { &mut *f };
    let policy = maps.policy(s.decision.generation).ok_or(DropReason::Untracked)?;
    let tcp = p.proto == IPPROTO_TCP;
    // SAFETY: as above. SACK blocks always count: a peer the host did not permit SACK
    // sends none, and one forged beyond the data sent is out of the window anyway.
    if tcp && !unsafe { tcp_segment_into(start, end, p, true, &mut s.seg, &mut s.opts) } {
        return Err(DropReason::Truncated);
    }
    let now = features::flow_now();
    let seg = if tcp { Some(&s.seg) } else { None };
    match flow_reply(f, policy, p.proto, seg, now, features::var_stack()) {
        Reply::Pass => Ok(()),
        Reply::Close => {
            let _ = PS_FLOWS.remove(&s.key);
            count(&PS_FLOW_CNT, FLOW_CNT_CLOSED, 0);
            Ok(())
        }
        Reply::Expired => {
            let _ = PS_FLOWS.remove(&s.key);
            count(&PS_FLOW_CNT, FLOW_CNT_EXPIRED, 0);
            Err(DropReason::Untracked)
        }
        Reply::Drop(r) => Err(r),
    }
}

/// Log a would-drop (debug level: the agent logs every drop from `PS_EVENTS`, the reason
/// by name), at most `LOG_BURST` lines then `LOG_RATE_PER_SEC` per CPU.
///
/// The reason is logged by number (`DropReason as u32`): formatted by name, a string of
/// its own length per reason, every drop path took the verifier through aya-log's copy
/// once per reason it could carry (`ps_xdp` on 6.18: 153k verified instructions by number,
/// 190k by name).
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
        reason as u32,
        ctx.ingress_ifindex(),
        p.ip_version,
        p.proto,
        p.sport,
        p.dport
    );
}
