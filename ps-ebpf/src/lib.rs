//! What the programs of more than one object share: the maps (`maps`), so that a map is
//! declared once whether `ps-ebpf` (the shipped programs) or the benchmark's object
//! (`ps-bench-ebpf`, which reuses the loaded policy maps) names it. The programs are in
//! the `ps-ebpf` binary target, built for `bpfel-unknown-none`; this library is also what
//! `ps-agent` names as a build dependency.
#![no_std]

pub mod maps;
