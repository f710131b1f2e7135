//! Library target so that `ps-tests` can name this crate as a build dependency (and is
//! rebuilt when it or the maps it shares change); the programs are in the `ps-bench-ebpf`
//! binary target, built for `bpfel-unknown-none`.
#![no_std]
