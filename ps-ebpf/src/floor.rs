//! Reference programs for the benchmarks (`cargo xtask bench`), loaded from the same object
//! as `ps_xdp` but never attached by the agent: `ps_floor` only returns `XDP_PASS` (the
//! floor a per-packet cost is measured against) and `ps_drop` only returns `XDP_DROP` (the
//! XDP_DROP-only receiver of a flood test).

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

#[xdp]
pub fn ps_floor(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[xdp]
pub fn ps_drop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}
