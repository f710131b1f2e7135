//! Types and packet logic shared by the XDP program (`ps-ebpf`) and the agent (`ps-agent`).
//!
//! Everything the kernel decides is decided here, by pure functions over a byte range, so
//! that the agent's `explain`, the host unit tests and the differential tests run exactly
//! the code the kernel runs. The crate is `no_std`; the `user` feature adds the
//! `aya::Pod` impls the agent needs to read and write the maps.
#![no_std]

#[cfg(any(test, feature = "frames"))]
extern crate alloc;

pub mod classify;
#[cfg(any(test, feature = "frames"))]
pub mod frames;
pub mod layout;
pub mod names;
pub mod observe;
pub mod parse;
pub mod reason;
pub mod track;

/// The oldest kernel on which `cargo xtask vm-test` measured the programs loading (with the
/// switches the agent's probes set) and the agent enforcing (the live smoke test): Ubuntu
/// 20.04's 5.4. (major, minor). The agent's load error and `doctor` both name it.
pub const MIN_KERNEL: (u32, u32) = (5, 4);

/// The oldest kernel the program tests run on: BPF_PROG_TEST_RUN with an `xdp_md` context
/// (5.15).
pub const TESTED_KERNEL: (u32, u32) = (5, 15);

pub use classify::{Tables, Verdict, classify};
pub use layout::*;
pub use parse::{Packet, Parsed, parse};
pub use reason::{DropReason, PassReason};
#[cfg(test)]
mod tests;
