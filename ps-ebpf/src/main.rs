//! ps-agent's eBPF programs. Thin by design: parsing and matching are ps-common's; these
//! files own the maps, the counters, the flow table and the dry-run log.
//!
//! - `xdp.rs`: ingress enforcement (`ps_xdp`);
//! - `tc.rs`: egress accounting and flow tracking (`ps_tc_egress`);
//! - `observe.rs`: the drop path's would-drop table and events (`ps_xdp`);
//! - `maps.rs`: the maps both share;
//! - `floor.rs`: reference programs for the benchmarks (`ps_floor`, `ps_drop`, `ps_tx`).
#![no_std]
#![no_main]

mod floor;
mod maps;
mod observe;
mod tc;
mod xdp;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
