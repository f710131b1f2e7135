//! Reference programs for the benchmarks (`cargo xtask bench`): `ps_floor` only returns `XDP_PASS` (the
//! floor a per-packet cost is measured against), `ps_bare` does the least an allow-list
//! can do (one port lookup, one counter), `ps_drop` only returns `XDP_DROP` (the
//! XDP_DROP-only receiver of the flood test), and `ps_tx` redirects every frame into the
//! interface in `PS_TX[0]` (the flood generator: run with BPF_PROG_TEST_RUN in live-frames
//! mode, it sends frames out of a veth the way a NIC delivers them to its peer), and
//! `ps_tx_spray` does the same over many ports.

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{DevMap, PerCpuArray},
    programs::XdpContext,
};

/// Where `ps_tx` and `ps_tx_spray` send frames (set by the benchmark).
#[map]
static PS_TX: DevMap = DevMap::with_max_entries(1, 0);

/// `ps_tx_spray`'s frame sequence number, per CPU.
#[map]
static PS_TX_SEQ: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

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

/// `ps_tx_spray`: `ps_tx` for a flood over many ports. Before it sends a frame (IPv4
/// without options, TCP or UDP at byte 34) it rewrites the frame's ports to a pseudo-random
/// pair that the policy maps drop as `no_rule` — no inbound list for the destination port,
/// no reply list for the source port, as `ps_xdp` reads them (the port bits; the bench
/// gives the generator policy maps holding the receiver's rule set) — and patches the L4
/// checksum (RFC 1624), so every receiver sees valid frames spread over the whole port
/// table. The rewrite persists in the live-frames page, and the next send of that page
/// rewrites it again. (Up to four draws per frame; after four misses the frame goes out as
/// it is.)
#[xdp]
pub fn ps_tx_spray(ctx: XdpContext) -> u32 {
    use ps_common::{classify::Tables, layout::L4};
    let (start, end) = (ctx.data(), ctx.data_end());
    let send = || PS_TX.redirect(0, 0).unwrap_or(xdp_action::XDP_ABORTED);
    if start + 54 > end {
        return send();
    }
    // SAFETY (all frame accesses): inside the 54 bytes checked above.
    let (l4, csum_at) = match unsafe { *((start + 23) as *const u8) } {
        6 => (L4::Tcp, start + 34 + 16),
        17 => (L4::Udp, start + 34 + 6),
        _ => return send(),
    };
    let (Some(seq), Some(maps)) = (PS_TX_SEQ.get_ptr_mut(0), ps_ebpf::maps::Maps::get()) else {
        return send();
    };
    let Some(generation) = maps.state().map(|s| s.generation & 1) else { return send() };
    // SAFETY: per-CPU value.
    let seq = unsafe { &mut *seq };
    for _ in 0..4 {
        *seq = seq.wrapping_add(1);
        // A multiplicative hash of the sequence number: every port, in no cache-friendly order.
        let x = seq.wrapping_mul(0x9e37_79b1);
        let (sport, dport) = ((x >> 16) as u16, x as u16);
        if sport == 0
            || dport == 0
            || maps.port_listed(generation, l4, dport, false)
            || maps.port_listed(generation, l4, sport, true)
        {
            continue;
        }
        let ports = (start + 34) as *mut [u16; 2];
        let csum = csum_at as *mut u16;
        // SAFETY: as above; the ports and the checksum are in the frame.
        unsafe {
            let [old_s, old_d] = *ports;
            let (new_s, new_d) = (sport.to_be(), dport.to_be());
            *ports = [new_s, new_d];
            // One's-complement sum: HC' = ~(~HC + ~m + m') for each changed word.
            let mut sum = !*csum as u32 + !old_s as u32 + new_s as u32 + !old_d as u32 + new_d as u32;
            sum = (sum & 0xffff) + (sum >> 16);
            sum = (sum & 0xffff) + (sum >> 16);
            let c = !(sum as u16);
            // UDP: 0 means "no checksum"; a computed 0 is sent as 0xffff.
            *csum = if c == 0 && l4 == L4::Udp { 0xffff } else { c };
        }
        break;
    }
    send()
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
    match ps_ebpf::maps::PS_PORTS.get(port_index(0, l4_slot, dport)) {
        Some(e) if e.inbound != 0 => {
            ps_ebpf::maps::count(&ps_ebpf::maps::PS_RULE_CNT, e.inbound, (end - start) as u64);
            xdp_action::XDP_PASS
        }
        _ => xdp_action::XDP_DROP,
    }
}
