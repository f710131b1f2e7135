//! Developer tasks: `cargo xtask setup | test | verify | bench | fuzz | demo | dist | vm-test |
//! fleet-test`.
//!
//! xtask itself depends on nothing of the project, so it compiles on a fresh machine
//! before the eBPF toolchain exists; every task first runs `xtask/setup.sh`, which
//! installs that toolchain idempotently.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

mod dist;
mod fleet;
mod vm;

#[derive(Parser)]
#[command(about = "ps-agent developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what a fresh machine lacks (Debian packages, nightly rust-src, bpf-linker),
    /// mount bpffs.
    Setup,
    /// The whole suite: fmt, clippy (host crates and the eBPF crate on its target), a short
    /// fuzz run of every target, `dist`, unit, program (BPF_PROG_TEST_RUN), namespace and
    /// package tests (the .deb is installed and purged with dpkg).
    Test {
        /// Skip fmt and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Seconds per fuzz target (0: no fuzzing; `cargo xtask fuzz` runs longer).
        #[arg(long, default_value_t = 20)]
        fuzz_seconds: u64,
        /// Extra arguments for `cargo test` (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// The differential test at full count: 100,000 generated frames through the loaded
    /// program and the host classifier (`cargo xtask test` runs 5,000).
    Verify {
        /// Frames to generate.
        #[arg(long, default_value_t = 100_000)]
        frames: u64,
        /// PRNG seed (default: the test's fixed seed).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Per-packet cost (BPF_PROG_TEST_RUN) against the floor and xdp-filter, scale to
    /// 100,000 rules, control-plane times, agent memory, floods; writes every number to
    /// tests/bench/results.json, and BENCHMARKS.md (tables) and the plots from it.
    Bench {
        /// Interleaved rounds (the median is reported).
        #[arg(long, default_value_t = 11)]
        rounds: u32,
        /// Repeats per test run.
        #[arg(long, default_value_t = 1_000_000)]
        repeat: u32,
        /// Print only; do not write the results file, BENCHMARKS.md and the plots.
        #[arg(long)]
        no_write: bool,
        /// Measure nothing: regenerate BENCHMARKS.md and the plots from
        /// tests/bench/results.json (needs neither root nor the eBPF toolchain).
        #[arg(long, conflicts_with_all = ["rounds", "repeat"])]
        from_json: bool,
    },
    /// Fuzz the parser/classifier, the config parsers and the capture reader (cargo-fuzz,
    /// nightly; installs cargo-fuzz if missing): each target for `--seconds`.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Targets (default: all).
        targets: Vec<String>,
    },
    /// Build everything, create a lab of namespaces, enforce the PS 8.1.2 matrix, send
    /// allowed and forbidden traffic and show live counters.
    Demo {
        /// Seconds of traffic.
        #[arg(long, default_value_t = 8)]
        seconds: u64,
    },
    /// Release artifacts into target/dist/: a static x86_64-unknown-linux-musl ps-agent
    /// (eBPF object embedded; left at target/x86_64-unknown-linux-musl/release/ps-agent),
    /// packaged as .deb, .rpm (el8/el9) and .tar.gz with SHA256SUMS. Fails if the man
    /// pages, completions or default config under packaging/ are stale. Needs cargo-deb,
    /// cargo-generate-rpm, rpm and the musl target (xtask/setup.sh installs them).
    Dist,
    /// The kernel matrix: boot Debian's kernels (the machine's own suite, 6.1 generic and
    /// cloud; other suites from VM_SUITES: 6.12, 7.x, 5.10) and Ubuntu's (VM_UBUNTU: 5.4, 5.11
    /// to 6.0, 6.8) under QEMU with a small initramfs; run the program tests, `ps-agent
    /// doctor` and a live smoke test (the agent enforcing over veth pairs) there and on the
    /// running kernel, with the static agent `dist` builds (checked static in each run);
    /// print results, the agent's sha256, degraded features and verified instructions per
    /// program per kernel; fail on a failed test, a rejected object, a program over its
    /// verifier budget, a doctor failure or an agent that is not the static build. Below 5.15 the program tests' test-run context is missing: only the
    /// load test runs of them. Not part of `test`. Installs QEMU and fetches the kernels
    /// itself (xtask/vm-setup.sh), under target/vm/.
    VmTest {
        /// Also boot this kernel image (bzImage; veth, and before 6.6 sch_ingress and cls_bpf, built
        /// in or as `.ko` files beside it).
        #[arg(long = "kernel")]
        kernels: Vec<PathBuf>,
        /// Do not run the tests on the running kernel.
        #[arg(long)]
        no_host: bool,
        /// Seconds one VM may run before it is killed and counted as failed (under TCG the
        /// 6.1 verifier takes about 10 s per load of ps_xdp, the whole run about 6 minutes).
        #[arg(long, default_value_t = 900)]
        timeout: u64,
        /// Boot only the kernels whose package name (or --kernel path) contains this.
        #[arg(long)]
        only: Option<String>,
    },
    /// The cluster on real hosts: three Debian 12 hosts with their own systemd (nspawn
    /// containers) on a private bridge, the Ansible role rolled out to them over SSH,
    /// Prometheus scraping them with the shipped rules; checks the rollout, the unit under
    /// systemd and the alerts (docs/dev/fleet-lab.md). Not part of `test`. Installs its
    /// tools and caches the hosts' root file system under target/fleet/
    /// (xtask/fleet-setup.sh).
    FleetTest {
        /// Leave the lab running at the end (for a look inside; `--down` removes it).
        #[arg(long)]
        keep: bool,
        /// Only remove a lab that is still up.
        #[arg(long)]
        down: bool,
        /// Install this .deb instead of building one with `cargo xtask dist`.
        #[arg(long, conflicts_with = "binary")]
        package: Option<PathBuf>,
        /// Install the bare release binary through `ps-agent install` instead of a package
        /// (quicker to rebuild while working on the agent).
        #[arg(long)]
        binary: bool,
    },
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("[xtask] {}", format!("{cmd:?}").replace('"', ""));
    let status = cmd.current_dir(root()).status().with_context(|| format!("failed to start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Run `cargo test`, stream its output, and close with one summary line over every test
/// binary (`tests: N passed, N failed, N skipped`), so the suite's last line speaks for all
/// of it rather than for the last binary.
fn test(cmd: &mut Command) -> anyhow::Result<()> {
    use std::io::{BufRead as _, BufReader};
    eprintln!("[xtask] {}", format!("{cmd:?}").replace('"', ""));
    let mut child =
        cmd.current_dir(root()).stdout(std::process::Stdio::piped()).spawn().context("failed to start cargo test")?;
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let num = |word: &str| -> u64 {
                rest.split(';')
                    .find_map(|p| p.trim().strip_suffix(word))
                    .and_then(|n| n.trim().rsplit(' ').next()?.parse().ok())
                    .unwrap_or(0)
            };
            passed += num("passed");
            failed += num("failed");
            ignored += num("ignored");
        }
    }
    let status = child.wait()?;
    println!("tests: {passed} passed, {failed} failed, {ignored} skipped");
    if !status.success() {
        bail!("cargo test failed: {status}");
    }
    Ok(())
}

/// Run `cmd` and return its stdout; fail with its stderr.
fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.current_dir(root()).output().with_context(|| format!("failed to start {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn setup() -> anyhow::Result<()> {
    run(Command::new("bash").arg(root().join("xtask/setup.sh")))
}

/// Run each fuzz target for `seconds` (installs cargo-fuzz if missing); all targets when
/// `targets` is empty. A crash fails with the input's path.
fn fuzz(seconds: u64, targets: Vec<String>) -> anyhow::Result<()> {
    let have = Command::new("cargo").args(["+nightly", "fuzz", "--version"]).output();
    if !have.is_ok_and(|o| o.status.success()) {
        run(cargo().args(["install", "cargo-fuzz", "--locked"]))?;
    }
    let targets = if targets.is_empty() {
        vec!["parse_decide".to_string(), "config".to_string(), "capture".to_string()]
    } else {
        targets
    };
    let dir = root().join("tests/fuzz");
    for t in targets {
        eprintln!("[xtask] fuzzing {t} for {seconds} s");
        // The fuzz crate links ps-agent for its model; the eBPF object is not needed.
        let corpus = format!("corpus/{t}");
        let _ = std::fs::create_dir_all(dir.join(&corpus));
        let mut args = vec!["+nightly".to_string(), "fuzz".into(), "run".into(), t.clone(), corpus];
        if t == "config" {
            // The shipped matrix and the example site config as seeds.
            args.push("../../policy".into());
        }
        args.extend(["--".into(), format!("-max_total_time={seconds}")]);
        let status = Command::new("cargo")
            .args(&args)
            .env("AYA_BUILD_SKIP", "1")
            .current_dir(&dir)
            .status()
            .context("failed to start cargo fuzz")?;
        if !status.success() {
            bail!("fuzz target {t} failed: {status} (the crashing input is under tests/fuzz/artifacts/{t}/)");
        }
    }
    Ok(())
}

/// Remove a build directory a later step does not reuse. The suite's disk peak is what a CI
/// machine must have free: lint and fuzz builds (about 2 GB) are gone before the test build.
fn drop_build_dir(dir: &Path) -> anyhow::Result<()> {
    eprintln!("[xtask] removing {} (not reused by the steps after it)", dir.display());
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("failed to remove {}", dir.display()))
        }
        _ => Ok(()),
    }
}

/// fmt, then clippy on the host crates and on the eBPF crates, each in a build directory of
/// its own that is removed once clippy passes.
fn lint() -> anyhow::Result<()> {
    run(cargo().args(["fmt", "--all", "--check"]))?;
    // Host crates; the eBPF object is not needed to lint them.
    let host = root().join("target/lint");
    run(cargo()
        .args(["clippy", "--all-targets", "--", "-D", "warnings"])
        .env("AYA_BUILD_SKIP", "1")
        .env("CARGO_TARGET_DIR", &host))?;
    drop_build_dir(&host)?;
    // The eBPF crates, on their own target, as aya-template's test.sh does.
    let ebpf = root().join("target/lint-ebpf");
    run(Command::new("rustup")
        .args(["run", "nightly", "cargo", "clippy", "--package", "ps-ebpf", "--package", "ps-bench-ebpf"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core", "--release", "--", "-D", "warnings"])
        .env("CARGO_TARGET_DIR", &ebpf))?;
    drop_build_dir(&ebpf)
}

/// `cargo xtask test`: lint, a short fuzz run, the debug build, `dist`, then every test.
fn test_all(no_lint: bool, fuzz_seconds: u64, args: &[String]) -> anyhow::Result<()> {
    setup()?;
    if !no_lint {
        lint()?;
    }
    if fuzz_seconds > 0 {
        fuzz(fuzz_seconds, vec![])?;
        // Sanitizer-instrumented: nothing after this reuses it (`cargo xtask fuzz` keeps it).
        drop_build_dir(&root().join("tests/fuzz/target"))?;
    }
    run(cargo().args(["build", "--package", "ps-agent"]))?;
    // The package tests (tests/tests/packaging.rs) check the release artifacts.
    dist::dist(&root(), cargo)?;
    let bin = root().join("target/debug/ps-agent");
    test(cargo().arg("test").args(args).env("PS_AGENT_BIN", &bin).env("PS_DIST_DIR", root().join("target/dist")))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.task {
        Task::Setup => setup(),
        Task::Test { no_lint, fuzz_seconds, args } => test_all(no_lint, fuzz_seconds, &args),
        Task::Verify { frames, seed } => {
            setup()?;
            run(cargo().args(["build", "--package", "ps-agent"]))?;
            let mut cmd = cargo();
            cmd.args(["test", "--package", "ps-tests", "--test", "differential", "--", "--nocapture"])
                .env("PS_DIFF_FRAMES", frames.to_string());
            if let Some(seed) = seed {
                cmd.env("PS_DIFF_SEED", seed.to_string());
            }
            test(&mut cmd)
        }
        Task::Bench { no_write, from_json: true, .. } => {
            // The tables and plots need no eBPF object: skip building one.
            run(cargo().args(["build", "--package", "ps-tests", "--bin", "ps-bench"]).env("AYA_BUILD_SKIP", "1"))?;
            let mut cmd = Command::new(root().join("target/debug/ps-bench"));
            cmd.arg("--from-json");
            if no_write {
                cmd.arg("--no-write");
            }
            run(&mut cmd)
        }
        Task::Bench { rounds, repeat, no_write, from_json: false } => {
            setup()?;
            run(cargo().args(["build", "--release", "--package", "ps-agent", "--package", "ps-tests"]))?;
            let bin = root().join("target/release/ps-agent");
            let mut cmd = Command::new(root().join("target/release/ps-bench"));
            cmd.args(["--rounds", &rounds.to_string(), "--repeat", &repeat.to_string()]).env("PS_AGENT_BIN", &bin);
            if no_write {
                cmd.arg("--no-write");
            }
            run(&mut cmd)
        }
        Task::Fuzz { seconds, targets } => {
            setup()?;
            fuzz(seconds, targets)
        }
        Task::Demo { seconds } => {
            setup()?;
            run(cargo().args(["build", "--release", "--package", "ps-agent", "--package", "ps-tests"]))?;
            let bin = root().join("target/release/ps-agent");
            run(Command::new(root().join("target/release/ps-demo"))
                .arg("--seconds")
                .arg(seconds.to_string())
                .env("PS_AGENT_BIN", &bin))
        }
        Task::Dist => dist::dist(&root(), cargo),
        Task::FleetTest { keep, down, package, binary } => {
            if !down {
                setup()?;
            }
            fleet::fleet_test(&root(), cargo, &fleet::Opts { keep, down, package, binary })
        }
        Task::VmTest { kernels, no_host, timeout, only } => {
            setup()?;
            vm::vm_test(&root(), cargo, &vm::Opts { kernels, no_host, timeout, only })
        }
    }
}
