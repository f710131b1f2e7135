//! Builds the benchmark's eBPF object (`tests/bench-ebpf`, for bpfel-unknown-none with the
//! nightly toolchain) into OUT_DIR; `src/bench_object.rs` embeds it. The agent never does:
//! its object (ps-agent's build) holds only the enforcement programs. `AYA_BUILD_SKIP=1`
//! skips the build (an empty object is embedded, and loading it says so).
use std::{env, fs, path::PathBuf};

fn main() -> anyhow::Result<()> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root_dir = manifest.join("bench-ebpf").canonicalize()?;
    let root_dir = root_dir.to_str().expect("utf-8 path");
    aya_build::build_ebpf(
        [aya_build::Package { name: "ps-bench-ebpf", root_dir, ..Default::default() }],
        aya_build::Toolchain::default(),
    )?;
    // With AYA_BUILD_SKIP nothing was built: leave an empty object so the crate compiles.
    let obj = PathBuf::from(env::var("OUT_DIR")?).join("ps-bench-ebpf");
    if !obj.exists() {
        fs::write(&obj, [])?;
    }
    Ok(())
}
