use which::which;

/// Rebuild when bpf-linker changes (as aya-template does): the object depends on it.
fn main() {
    let bpf_linker =
        which("bpf-linker").expect("bpf-linker not found: run `bash xtask/setup.sh` (or `cargo install bpf-linker`)");
    println!("cargo:rerun-if-changed={}", bpf_linker.display());
}
