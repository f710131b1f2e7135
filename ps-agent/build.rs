//! Builds the eBPF object (ps-ebpf, for bpfel-unknown-none with the nightly toolchain)
//! into OUT_DIR; `src/load.rs` embeds it. `AYA_BUILD_SKIP=1` skips the build (the
//! agent then embeds an empty object and says so when asked to load it).
use std::{env, fs, path::PathBuf};

fn main() -> anyhow::Result<()> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root_dir = manifest.join("../ps-ebpf").canonicalize()?;
    let root_dir = root_dir.to_str().expect("utf-8 path");
    aya_build::build_ebpf(
        [aya_build::Package { name: "ps-ebpf", root_dir, ..Default::default() }],
        aya_build::Toolchain::default(),
    )?;
    // With AYA_BUILD_SKIP nothing was built: leave an empty object so the crate compiles.
    let obj = PathBuf::from(env::var("OUT_DIR")?).join("ps-ebpf");
    if !obj.exists() {
        fs::write(&obj, [])?;
    }
    Ok(())
}
