//! `cargo xtask dist`: the release artifacts, in one command. Builds the static
//! `x86_64-unknown-linux-musl` ps-agent with its eBPF object embedded (it stays at
//! `target/x86_64-unknown-linux-musl/release/ps-agent`, where `vm-test` takes it for
//! guests without a libc), checks that the man pages, completions and default config
//! committed under `packaging/` are what it generates, and writes into `target/dist/`:
//!
//! - `ps-agent_VERSION-1_amd64.deb` (cargo-deb, `[package.metadata.deb]`),
//! - `ps-agent-VERSION-1.x86_64.rpm` (cargo-generate-rpm, `[package.metadata.generate-rpm]`,
//!   xz payload, which the rpm of RHEL 8 reads),
//! - `ps-agent-VERSION-x86_64-linux-musl.tar.gz` (binary, unit, config, preset, man pages,
//!   completions, docs, the Prometheus rules and Grafana dashboard, and a SHA256SUMS of them),
//! - `SHA256SUMS` of the three,
//!
//! and prints their paths and digests. File times are the last commit's
//! (`SOURCE_DATE_EPOCH`), so a rebuild of the same commit gives the same archives' contents.

use std::{
    ffi::OsStr,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use sha2::{Digest as _, Sha256};

/// The release target: a static binary runs on RHEL 8 (glibc 2.28) and anything newer.
pub const TARGET: &str = "x86_64-unknown-linux-musl";

/// A tool `dist` needs, and how to get it.
#[derive(Debug, PartialEq, Eq)]
pub struct Tool {
    /// What is missing.
    pub name: &'static str,
    /// What installs it (`xtask/setup.sh` does all of it).
    pub how: &'static str,
}

/// The programs `dist` runs besides cargo: each an executable looked up in PATH.
const PROGRAMS: [Tool; 5] = [
    Tool { name: "cargo-deb", how: "cargo install --locked cargo-deb" },
    Tool { name: "cargo-generate-rpm", how: "cargo install --locked cargo-generate-rpm" },
    Tool { name: "rpm", how: "apt-get install rpm (Debian's rpm, to check the .rpm)" },
    Tool { name: "dpkg-deb", how: "apt-get install dpkg" },
    Tool { name: "gzip", how: "apt-get install gzip" },
];

/// The musl target's standard library, as rustup installs it.
const MUSL_TARGET: Tool =
    Tool { name: "the x86_64-unknown-linux-musl target", how: "rustup target add x86_64-unknown-linux-musl" };

/// What is missing: programs not found in `path` (a PATH value), and the musl target when
/// `sysroot` (rustc's) has no standard library for it.
pub fn missing_tools(path: &OsStr, sysroot: &Path) -> Vec<&'static Tool> {
    let found = |name: &str| std::env::split_paths(path).any(|d| d.join(name).is_file());
    let mut missing: Vec<&'static Tool> = PROGRAMS.iter().filter(|t| !found(t.name)).collect();
    if !sysroot.join("lib/rustlib").join(TARGET).join("lib").is_dir() {
        missing.push(&MUSL_TARGET);
    }
    missing
}

/// Fail, naming each missing tool and what installs it, unless everything is there.
fn check_tools() -> anyhow::Result<()> {
    let mut path = std::env::var_os("PATH").unwrap_or_default();
    // cargo finds its subcommands in $CARGO_HOME/bin too.
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")));
    if let Some(bin) = cargo_home.map(|h| h.join("bin")) {
        path = std::env::join_paths(std::env::split_paths(&path).chain([bin]))?;
    }
    let sysroot = match Command::new("rustc").args(["--print", "sysroot"]).output() {
        Ok(o) if o.status.success() => PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()),
        _ => bail!("failed to run `rustc --print sysroot`: is the Rust toolchain installed?"),
    };
    let missing = missing_tools(&path, &sysroot);
    if missing.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = missing.iter().map(|t| format!("  {} ({})", t.name, t.how)).collect();
    bail!(
        "cargo xtask dist needs tools this machine lacks:\n{}\n`bash xtask/setup.sh` installs all of them",
        list.join("\n")
    )
}

/// Does this ELF file need no program interpreter (no `PT_INTERP`): is it static?
pub fn is_static_elf(elf: &[u8]) -> anyhow::Result<bool> {
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        bail!("not a 64-bit little-endian ELF file");
    }
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into()?) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    const PT_INTERP: u32 = 3;
    for i in 0..phnum {
        let off = phoff + i * phentsize;
        let p_type = elf.get(off..off + 4).context("truncated program header table")?;
        if u32::from_le_bytes(p_type.try_into()?) == PT_INTERP {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The file's SHA-256, in hex.
pub fn sha256_hex(path: &Path) -> anyhow::Result<String> {
    let bytes = fs::read(path).with_context(|| format!("failed to read `{}`", path.display()))?;
    Ok(Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect())
}

/// `sha256sum` lines for `files`, named relative to `base`.
fn sums(base: &Path, files: &[PathBuf]) -> anyhow::Result<String> {
    let mut s = String::new();
    for f in files {
        s.push_str(&format!("{}  {}\n", sha256_hex(f)?, f.strip_prefix(base)?.display()));
    }
    Ok(s)
}

/// The last commit's time (seconds since the epoch), for `SOURCE_DATE_EPOCH`; now outside
/// a git checkout.
fn source_date_epoch(root: &Path) -> String {
    let out = Command::new("git").args(["log", "-1", "--format=%ct"]).current_dir(root).output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or_else(|_| "0".into(), |d| d.as_secs().to_string()),
    }
}

/// Fail unless the files the binary generates (man pages, completions, config) are the
/// ones committed under `packaging/`, which the packages take: an artifact is made of
/// committed files only.
fn check_generated(root: &Path, bin: &Path, out: &Path) -> anyhow::Result<()> {
    let fresh = out.join("generated");
    crate::output(Command::new(bin).arg("generate").arg("--out").arg(&fresh))?;
    let committed = root.join("packaging");
    let mut stale = Vec::new();
    for sub in ["man", "completions"] {
        let names = |d: &Path| -> anyhow::Result<std::collections::BTreeSet<std::ffi::OsString>> {
            Ok(fs::read_dir(d)
                .with_context(|| format!("failed to read `{}`", d.display()))?
                .flatten()
                .map(|e| e.file_name())
                .collect())
        };
        for name in names(&fresh.join(sub))?.union(&names(&committed.join(sub))?) {
            let rel = Path::new(sub).join(name);
            if fs::read(fresh.join(&rel)).ok() != fs::read(committed.join(&rel)).ok() {
                stale.push(rel);
            }
        }
    }
    if fs::read(fresh.join("config.toml"))? != fs::read(committed.join("config.toml"))? {
        stale.push("config.toml".into());
    }
    fs::remove_dir_all(&fresh)?;
    if !stale.is_empty() {
        bail!(
            "packaging/ is stale: the binary generates other {stale:?}; run `{} generate --out packaging` and commit the result",
            bin.display()
        );
    }
    Ok(())
}

/// The man pages gzipped (`gzip -9n`: no name, no time stamp) into `out/man/`, where the
/// rpm metadata takes them from.
fn gzip_man_pages(root: &Path, out: &Path) -> anyhow::Result<()> {
    let dir = out.join("man");
    fs::create_dir_all(&dir)?;
    for e in fs::read_dir(root.join("packaging/man"))? {
        let src = e?.path();
        let name = src.file_name().context("a file name")?.to_string_lossy().to_string();
        let o = Command::new("gzip").arg("-9nc").arg(&src).output().context("failed to run gzip")?;
        if !o.status.success() {
            bail!("gzip `{}` failed: {}", src.display(), String::from_utf8_lossy(&o.stderr));
        }
        fs::write(dir.join(format!("{name}.gz")), o.stdout)?;
    }
    Ok(())
}

/// The tarball: `ps-agent-VERSION/` with the binary, the unit, config and preset, man
/// pages, completions, docs and their SHA256SUMS, owned by root, files stamped `epoch`.
fn tarball(root: &Path, out: &Path, bin: &Path, version: &str, epoch: &str) -> anyhow::Result<PathBuf> {
    let name = format!("ps-agent-{version}");
    let stage = out.join("stage").join(&name);
    let _ = fs::remove_dir_all(&stage);
    let p = root.join("packaging");
    let mut files: Vec<(PathBuf, PathBuf)> = vec![
        (bin.to_path_buf(), "ps-agent".into()),
        (p.join("ps-agent.service"), "ps-agent.service".into()),
        (p.join("config.toml"), "config.toml".into()),
        (p.join("80-ps-agent.preset"), "80-ps-agent.preset".into()),
        (root.join("docs/install.md"), "install.md".into()),
        (p.join("prometheus/ps-agent.rules.yml"), "prometheus/ps-agent.rules.yml".into()),
        (root.join("ps-agent/grafana/ps-agent.json"), "grafana/ps-agent.json".into()),
        (root.join("LICENSE"), "LICENSE".into()),
    ];
    for sub in ["man", "completions"] {
        for e in fs::read_dir(p.join(sub))? {
            let src = e?.path();
            let rel = Path::new(sub).join(src.file_name().context("a file name")?);
            files.push((src, rel));
        }
    }
    files.sort_by(|a, b| a.1.cmp(&b.1));
    let mut staged = Vec::new();
    for (src, rel) in files {
        let dst = stage.join(&rel);
        fs::create_dir_all(dst.parent().context("a parent")?)?;
        fs::copy(&src, &dst).with_context(|| format!("failed to copy `{}`", src.display()))?;
        staged.push(dst);
    }
    fs::write(stage.join("SHA256SUMS"), sums(&stage, &staged)?)?;
    let tgz = out.join(format!("ps-agent-{version}-x86_64-linux-musl.tar.gz"));
    let script = format!(
        "tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@{epoch} -C {} -cf - {name} | gzip -9n > {}",
        out.join("stage").display(),
        tgz.display()
    );
    crate::run(Command::new("bash").args(["-o", "pipefail", "-c", &script]))?;
    Ok(tgz)
}

/// Build the static release binary (eBPF object embedded) and check that it needs no
/// program interpreter; its path. `dist` packages this file and `vm-test` boots it.
pub fn build_static(root: &Path, cargo: impl Fn() -> Command) -> anyhow::Result<PathBuf> {
    crate::run(cargo().args(["build", "--release", "--target", TARGET, "--package", "ps-agent"]))?;
    let bin = root.join("target").join(TARGET).join("release/ps-agent");
    let elf = fs::read(&bin).with_context(|| format!("failed to read `{}`", bin.display()))?;
    if !is_static_elf(&elf)? {
        bail!("`{}` is not static (it has a program interpreter): check the {TARGET} linker set-up", bin.display());
    }
    Ok(bin)
}

/// `cargo xtask dist`.
pub fn dist(root: &Path, cargo: fn() -> Command) -> anyhow::Result<()> {
    check_tools()?;
    let bin = build_static(root, cargo)?;
    let version_line = crate::output(Command::new(&bin).arg("--version"))?;
    let version = version_line.split_whitespace().nth(1).context("`ps-agent --version` names no version")?.to_string();
    let out = root.join("target/dist");
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out)?;
    check_generated(root, &bin, &out)?;
    gzip_man_pages(root, &out)?;
    let epoch = source_date_epoch(root);
    // The binary as built (symbols kept, so a panic's backtrace names functions): the same
    // file in all three artifacts.
    let packagers: [&[&str]; 2] = [&["deb", "--no-build", "--no-strip"], &["generate-rpm", "--payload-compress", "xz"]];
    for args in packagers {
        crate::run(
            cargo()
                .args(args)
                .args(["--package", "ps-agent", "--target", TARGET, "--output"])
                .arg(&out)
                .env("SOURCE_DATE_EPOCH", &epoch),
        )?;
    }
    let tgz = tarball(root, &out, &bin, &version, &epoch)?;

    let one = |ext: &str| -> anyhow::Result<PathBuf> {
        let found: Vec<PathBuf> = fs::read_dir(&out)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == ext))
            .collect();
        match &found[..] {
            [p] => Ok(p.clone()),
            _ => bail!("expected one .{ext} in `{}`, found {found:?}", out.display()),
        }
    };
    let artifacts = [one("deb")?, one("rpm")?, tgz];
    // Both packages must read back.
    crate::output(Command::new("dpkg-deb").arg("--info").arg(&artifacts[0]))?;
    crate::output(Command::new("rpm").args(["-qp", "--info"]).arg(&artifacts[1]))?;
    let text = sums(&out, &artifacts)?;
    fs::write(out.join("SHA256SUMS"), &text)?;
    println!("{version_line}");
    println!("static binary: {}", bin.display());
    for (line, path) in text.lines().zip(&artifacts) {
        println!("{}  {}", &line[..64], path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tools_are_named_with_what_installs_them() {
        let dir = std::env::temp_dir().join(format!("xtask-dist-{}", std::process::id()));
        let bin = dir.join("bin");
        fs::create_dir_all(&bin).unwrap();
        for t in ["cargo-deb", "rpm", "dpkg-deb", "gzip"] {
            fs::write(bin.join(t), "").unwrap();
        }
        let sysroot = dir.join("sysroot");
        let missing = missing_tools(bin.as_os_str(), &sysroot);
        let names: Vec<&str> = missing.iter().map(|t| t.name).collect();
        assert_eq!(names, ["cargo-generate-rpm", "the x86_64-unknown-linux-musl target"]);
        assert!(missing[0].how.contains("cargo install") && missing[1].how.contains("rustup target add"));

        fs::write(bin.join("cargo-generate-rpm"), "").unwrap();
        fs::create_dir_all(sysroot.join("lib/rustlib").join(TARGET).join("lib")).unwrap();
        assert!(missing_tools(bin.as_os_str(), &sysroot).is_empty());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_dynamic_executable_is_not_static() {
        // This test binary is linked against the host's glibc.
        let me = fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(!is_static_elf(&me).unwrap());
        // An ELF header without program headers (no interpreter) is.
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        assert!(is_static_elf(&elf).unwrap());
        assert!(is_static_elf(b"#!/bin/sh\n").is_err());
    }
}
