//! Library target so that `ps-agent` can name this crate as a build dependency; the
//! programs are in the `ps-ebpf` binary target, built for `bpfel-unknown-none`.
#![no_std]
