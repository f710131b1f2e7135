//! What this binary is: its version, the commit it was built from and the eBPF object it
//! embeds (both named by `build.rs`), as `ps-agent --version` prints them.

/// `0.1.0 (commit 6f11ca2c1a2b, ebpf 3f2a9c0d1e4b)`: the crate version, the short hash
/// of the git commit ("unknown" outside a git checkout) and the first 12 hex digits of
/// the SHA-256 of the embedded eBPF object ("none" when built with `AYA_BUILD_SKIP=1`).
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("PS_AGENT_GIT_COMMIT"),
    ", ebpf ",
    env!("PS_AGENT_EBPF_SHA256"),
    ")"
);
