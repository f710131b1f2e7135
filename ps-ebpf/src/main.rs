//! ps-agent's eBPF programs, the shipped object. Thin by design: parsing and matching are
//! ps-common's, the maps are this crate's library's (`ps_ebpf::maps`); these files own the
//! counting, the flow tracking and the dry-run log.
//!
//! - `xdp.rs`: ingress enforcement (`ps_xdp`);
//! - `tc.rs`: egress accounting and flow tracking (`ps_tc_egress`);
//! - `observe.rs`: the drop path's would-drop table and events (`ps_xdp`);
//! - `features.rs`: the feature switches the agent sets from its kernel probes.
//!
//! Nothing else: the benchmark's reference programs build into an object of their own
//! (`tests/bench-ebpf`).
#![no_std]
#![no_main]

mod features;
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
