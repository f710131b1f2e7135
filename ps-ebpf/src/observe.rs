//! The drop path of `ps_xdp`, and only it: record what dry-run would have dropped in the
//! would-drop table, and send a rate-limited event to the agent. Everything is built in
//! a per-CPU scratch value (`PS_DSCRATCH`): the main program's stack is nearly full.
//!
//! Verifier cost: [`drop`] and [`stage`] (inlined) copy what the drop path needs from the
//! caller's `Decision` into the scratch value, and [`observe_drop`] (a BPF-to-BPF call)
//! takes only the context. The call therefore reaches the verifier with the same live state from
//! every classifier path, and it prunes all but the first: the work below is verified
//! about once, not once per path that ends in a drop.

use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_ktime_get_ns, programs::XdpContext};
use ps_common::{
    STAT_STRIDE,
    classify::Decision,
    observe::{
        DropScratch, DropVal, EVENT_BURST, EVENT_DRY_RUN, EVENT_RATE_PER_SEC, Event, STAT_EVENT_LOST, STAT_EVENT_SENT,
        take_token_rate,
    },
    reason::DropReason,
};

use ps_ebpf::maps::*;

use crate::features;

/// The drop path: ask the event rate limiter first, so that a flood (the bucket empty)
/// costs a tick-counter load and two comparisons here; in dry-run also record the
/// would-drop flow (every packet, token or not). Without a ring buffer no event is sent
/// (no token is taken); without the tick counter the limiter reads the clock every time.
#[inline(always)]
pub fn drop(ctx: &XdpContext, d: &Decision, reason: DropReason, dry_run: bool) {
    let Some(b) = PS_EVENT_RL.get_ptr_mut(0) else { return };
    // SAFETY: per-CPU value; only this CPU touches it while the program runs.
    let b = unsafe { &mut *b };
    let ring = features::ringbuf();
    if !ring && !dry_run {
        return;
    }
    let tick = features::tick();
    let exhausted = tick.is_some_and(|t| b.exhausted_at(t));
    if exhausted && !dry_run {
        // Suppressed: not counted here (the agent derives it, see `STAT_EVENT_SENT`).
        return;
    }
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let token = ring && !exhausted && take_token_rate(b, now, EVENT_RATE_PER_SEC, EVENT_BURST);
    b.tick = tick.unwrap_or(0);
    if !token && !dry_run {
        return;
    }
    stage(d, reason, dry_run, token, now);
    observe_drop(ctx);
}

/// Copy what [`observe_drop`] needs into the per-CPU scratch value.
#[inline(always)]
fn stage(d: &Decision, reason: DropReason, dry_run: bool, token: bool, now: u64) {
    let Some(s) = PS_DSCRATCH.get_ptr_mut(0) else { return };
    // SAFETY: per-CPU value; only this CPU touches it while the program runs.
    let s = unsafe { &mut *s };
    let p = &d.packet;
    s.event.ts_ns = now;
    s.event.sport = p.sport;
    s.event.dport = p.dport;
    s.event.proto = p.proto;
    s.event.reason = reason as u8;
    s.event.flags = if dry_run { EVENT_DRY_RUN } else { 0 };
    s.ip_version = p.ip_version as u32;
    s.l3_off = p.l3_off;
    s.slot = d.slot;
    s.token = token as u32;
}

/// Record the drop (or would-drop) [`stage`] staged: its would-drop flow in dry-run, the
/// event if it got a token.
#[inline(never)]
fn observe_drop(ctx: &XdpContext) {
    let Some(s) = PS_DSCRATCH.get_ptr_mut(0) else { return };
    // SAFETY: as in `stage`.
    let s = unsafe { &mut *s };
    let (start, end) = (ctx.data(), ctx.data_end());
    let now = s.event.ts_ns;
    let e = &mut s.event;
    e.family = 0;
    e.ifindex = ctx.ingress_ifindex() as u32;
    e.len = (end - start) as u32;
    e.src = [0; 16];
    e.dst = [0; 16];
    // The parser puts the IP header within the first 22 bytes: the mask is a bound the
    // verifier can see.
    let l3 = (s.l3_off & 0xff) as usize;
    if s.ip_version == 4 && start + l3 + 20 <= end {
        // SAFETY: checked above: source and destination address inside the frame.
        let a = unsafe { &*((start + l3 + 12) as *const [u8; 8]) };
        e.src[..4].copy_from_slice(&a[..4]);
        e.dst[..4].copy_from_slice(&a[4..]);
        e.family = 4;
    } else if s.ip_version == 6 && start + l3 + 40 <= end {
        // SAFETY: as above.
        let a = unsafe { &*((start + l3 + 8) as *const [u8; 32]) };
        e.src.copy_from_slice(&a[..16]);
        e.dst.copy_from_slice(&a[16..]);
        e.family = 6;
    }
    let slot = s.slot & 0xf;
    if e.flags & EVENT_DRY_RUN != 0 && e.family != 0 {
        record(s, slot, now);
    }
    // The switch again: `token` comes from a map here, which the verifier cannot see
    // through, and `bpf_ringbuf_output` must not be verified where the kernel lacks it.
    if features::ringbuf() && s.token != 0 {
        let sent = PS_EVENTS.output::<Event>(&s.event, 0).is_ok();
        count(&PS_STAT_CNT, slot * STAT_STRIDE + if sent { STAT_EVENT_SENT } else { STAT_EVENT_LOST }, 0);
    }
}

/// Add the packet to its would-drop flow.
#[inline(always)]
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "by reference, the helpers get pointers into the per-CPU scratch value; by value, copies on the stack"
)]
fn record(s: &mut DropScratch, slot: u32, now: u64) {
    let e = &s.event;
    s.key.src = e.src;
    s.key.dport = e.dport;
    s.key.proto = e.proto;
    s.key.family = e.family;
    s.key.slot = slot;
    let (len, sport, reason) = (e.len as u64, e.sport, e.reason as u32);
    // Per-CPU values: this CPU's slot only, so no increment is lost. A slot other CPUs
    // created holds zeros here: its first packet on this CPU sets `first_ns`.
    for _ in 0..2 {
        if let Some(v) = PS_WDROP.get_ptr_mut(&s.key) {
            // SAFETY: this CPU's value, alive as long as the entry.
            unsafe {
                if (*v).packets == 0 {
                    (*v).first_ns = now;
                }
                (*v).packets += 1;
                (*v).bytes += len;
                (*v).last_ns = now;
                (*v).reason = reason;
                (*v).sport = sport;
            }
            return;
        }
        s.val = DropVal { packets: 1, bytes: len, first_ns: now, last_ns: now, reason, sport, _pad: 0 };
        // NOEXIST: if another CPU created the flow meanwhile, add to it (second round).
        if PS_WDROP.insert(&s.key, &s.val, BPF_NOEXIST as u64).is_ok() {
            return;
        }
    }
}
