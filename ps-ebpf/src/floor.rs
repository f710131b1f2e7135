//! Reference programs for the benchmarks (`cargo xtask bench`), loaded from the same object
//! as `ps_xdp` but never attached by the agent: `ps_floor` only returns `XDP_PASS` (the
//! floor a per-packet cost is measured against), `ps_bare` does the least an allow-list
//! can do (one port lookup, one counter), `ps_drop` only returns `XDP_DROP` (the
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

/// `ps_bare`: the least an allow-list can do per packet, for the benchmark's reference
/// row: a plain IPv4/IPv6 TCP/UDP frame at fixed offsets, one port-table lookup, one
/// per-CPU counter. No interface, state or policy lookup, no VLAN, options or extension
/// headers, no checks beyond the bounds: not a firewall, a yardstick.
#[xdp]
pub fn ps_bare(ctx: XdpContext) -> u32 {
    use ps_common::layout::{L4, port_index};
    let (start, end) = (ctx.data(), ctx.data_end());
    // The shortest frame it reads: IPv4 and the ports. (A 74-byte bound here once sent
    // every IPv4 frame of the benchmark out at the first check, and made this row look
    // free: the bench checks below that it reaches the port table.)
    if start + 38 > end {
        return xdp_action::XDP_PASS;
    }
    // SAFETY (all reads): inside the bytes checked before them.
    let (proto, l4) = match unsafe { *((start + 12) as *const u16) } {
        0x0008 => (unsafe { *((start + 23) as *const u8) }, 34),
        0xdd86 => (unsafe { *((start + 20) as *const u8) }, 54),
        _ => return xdp_action::XDP_PASS,
    };
    if start + l4 + 4 > end {
        return xdp_action::XDP_PASS;
    }
    let l4_slot = match proto {
        6 => L4::Tcp,
        17 => L4::Udp,
        _ => return xdp_action::XDP_PASS,
    };
    let dport = u16::from_be(unsafe { *((start + l4 + 2) as *const u16) });
    match crate::maps::PS_PORTS.get(port_index(0, l4_slot, dport)) {
        Some(e) if e.inbound != 0 => {
            crate::maps::count(&crate::maps::PS_RULE_CNT, e.inbound, (end - start) as u64);
            xdp_action::XDP_PASS
        }
        _ => xdp_action::XDP_DROP,
    }
}
