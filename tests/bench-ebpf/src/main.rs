//! The benchmark's eBPF object (`cargo xtask bench`): reference programs to measure
//! `ps_xdp` against, and the flood generators. Apart from the shipped object (`ps-ebpf`),
//! which holds only the enforcement programs. The policy maps the programs read are
//! `ps_ebpf::maps`' declarations; the bench loads this object with those maps taken from a
//! loaded agent object (`ps_tests::bench_object`), so the programs see its policy.
#![no_std]
#![no_main]

mod floor;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
