//! ps-agent's XDP ingress program. Thin by design: parsing and matching are
//! `ps_common::decide`; this file owns the maps, the counters and the dry-run log.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_ktime_get_ns,
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};
use aya_log_ebpf::info;
use ps_common::{
    DEFAULT_RULES_CAP, GENERATIONS, MAX_IFACES, MAX_IFINDEX, MODE_DRY_RUN, PORTS_ENTRIES, STAT_LOG_SUPPRESSED,
    STAT_STRIDE,
    classify::{Decision, Tables, Verdict, decide},
    layout::{
        Counter, IfaceInfo, Policy, PortEntry, RuleEntry, State, TokenBucket, rule_counter_index, stat_drop_index,
        stat_pass_index, take_token,
    },
};

#[map]
static PS_STATE: Array<State> = Array::with_max_entries(1, 0);
#[map]
static PS_POLICY: Array<Policy> = Array::with_max_entries(GENERATIONS, 0);
#[map]
static PS_IFACES: Array<IfaceInfo> = Array::with_max_entries(MAX_IFINDEX, 0);
#[map]
static PS_PORTS: Array<PortEntry> = Array::with_max_entries(PORTS_ENTRIES, 0);
/// Resized by the agent at load time (`GENERATIONS * rules_cap`).
#[map]
static PS_RULES: Array<RuleEntry> = Array::with_max_entries(GENERATIONS * DEFAULT_RULES_CAP, 0);
/// Resized by the agent at load time (`MAX_IFACES * rules_cap`).
#[map]
static PS_RULE_CNT: PerCpuArray<Counter> = PerCpuArray::with_max_entries(MAX_IFACES * DEFAULT_RULES_CAP, 0);
#[map]
static PS_STAT_CNT: PerCpuArray<Counter> = PerCpuArray::with_max_entries(MAX_IFACES * STAT_STRIDE, 0);
#[map]
static PS_LOG_RL: PerCpuArray<TokenBucket> = PerCpuArray::with_max_entries(1, 0);

/// The maps, as `ps_common::Tables`.
struct Maps;

impl Tables for Maps {
    #[inline(always)]
    fn state(&self) -> Option<State> {
        PS_STATE.get(0).copied()
    }
    #[inline(always)]
    fn policy(&self, generation: u32) -> Option<Policy> {
        PS_POLICY.get(generation).copied()
    }
    #[inline(always)]
    fn iface(&self, ifindex: u32) -> Option<IfaceInfo> {
        PS_IFACES.get(ifindex).copied()
    }
    #[inline(always)]
    fn port(&self, index: u32) -> Option<PortEntry> {
        PS_PORTS.get(index).copied()
    }
    #[inline(always)]
    fn rule(&self, index: u32) -> Option<RuleEntry> {
        PS_RULES.get(index).copied()
    }
}

#[xdp]
pub fn ps_xdp(ctx: XdpContext) -> u32 {
    try_ps_xdp(&ctx).unwrap_or(xdp_action::XDP_ABORTED)
}

#[inline(always)]
fn count(map: &PerCpuArray<Counter>, index: u32, bytes: u64) {
    if let Some(c) = map.get_ptr_mut(index) {
        // SAFETY: per-CPU value, only this CPU writes it while the program runs.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}

#[inline(always)]
fn try_ps_xdp(ctx: &XdpContext) -> Option<u32> {
    let (start, end) = (ctx.data(), ctx.data_end());
    // SAFETY: [data, data_end) is the frame.
    let d = unsafe { decide(start, end, ctx.ingress_ifindex() as u32, &Maps) }?;
    let bytes = (end - start) as u64;
    let dry_run = d.mode == MODE_DRY_RUN;
    match d.verdict {
        Verdict::Rule(counter) => {
            count(&PS_RULE_CNT, rule_counter_index(d.slot, d.rules_cap, counter), bytes);
            Some(xdp_action::XDP_PASS)
        }
        Verdict::Pass(r) => {
            count(&PS_STAT_CNT, stat_pass_index(d.slot, r), bytes);
            Some(xdp_action::XDP_PASS)
        }
        Verdict::Drop(r) => {
            count(&PS_STAT_CNT, stat_drop_index(d.slot, r, dry_run), bytes);
            if dry_run {
                log_would_drop(ctx, &d);
                Some(xdp_action::XDP_PASS)
            } else {
                Some(xdp_action::XDP_DROP)
            }
        }
    }
}

/// Log a would-drop, at most `LOG_BURST` lines then `LOG_RATE_PER_SEC` per CPU.
#[inline(never)]
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
    info!(
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
