//! Reference programs for the benchmarks (`cargo xtask bench`), loaded from the same object
//! as `ps_xdp` but never attached by the agent: `ps_floor` only returns `XDP_PASS` (the
//! floor a per-packet cost is measured against), `ps_drop` only returns `XDP_DROP` (the
//! XDP_DROP-only receiver of the flood test), and `ps_tx` redirects every frame into the
//! interface in `PS_TX[0]` (the flood generator: run with BPF_PROG_TEST_RUN in live-frames
//! mode, it sends frames out of a veth the way a NIC delivers them to its peer).

use aya_ebpf::{bindings::xdp_action, macros::map, macros::xdp, maps::DevMap, programs::XdpContext};

/// Where `ps_tx` sends frames (set by the benchmark).
#[map]
static PS_TX: DevMap = DevMap::with_max_entries(1, 0);

#[xdp]
pub fn ps_floor(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[xdp]
pub fn ps_drop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

#[xdp]
pub fn ps_tx(_ctx: XdpContext) -> u32 {
    PS_TX.redirect(0, 0).unwrap_or(xdp_action::XDP_ABORTED)
}
