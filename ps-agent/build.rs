//! Builds the eBPF object (ps-ebpf, for bpfel-unknown-none with the nightly toolchain)
//! into OUT_DIR; `src/load.rs` embeds it. `AYA_BUILD_SKIP=1` skips the build (the
//! agent then embeds an empty object and says so when asked to load it).
//!
//! Also names what is built, for `ps-agent --version` (`src/build_info.rs`):
//! `PS_AGENT_GIT_COMMIT`, the short hash of the checked-out commit ("unknown" outside a
//! git checkout), and `PS_AGENT_EBPF_SHA256`, the first 12 hex digits of the SHA-256 of
//! the embedded object ("none" when it is empty).
use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use sha2::{Digest as _, Sha256};

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
    let object = fs::read(&obj)?;
    let ebpf = if object.is_empty() { "none".to_string() } else { hex12(&Sha256::digest(&object)) };
    println!("cargo:rustc-env=PS_AGENT_EBPF_SHA256={ebpf}");
    println!("cargo:rustc-env=PS_AGENT_GIT_COMMIT={}", git_commit(&manifest));
    Ok(())
}

fn hex12(digest: &[u8]) -> String {
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// The short hash of HEAD, and a rerun whenever HEAD moves (the HEAD file, the branch it
/// names, packed refs); "unknown" outside a git checkout or without git.
fn git_commit(dir: &Path) -> String {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").args(args).current_dir(dir).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".into();
    };
    let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(branch);
    }
    for w in watched {
        // A path that does not exist would make cargo rerun this script on every build.
        if let Some(p) = git(&["rev-parse", "--path-format=absolute", "--git-path", &w])
            && Path::new(&p).exists()
        {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    commit
}
