//! `cargo xtask fleet-test`: the cluster on real hosts. Three Debian 12 hosts booted with
//! their own systemd (nspawn containers, see [`lab`]) on a private bridge, the ps_agent
//! Ansible role rolled out to them over SSH from the operator's station, and Prometheus
//! scraping them with the shipped rules. Each step is a named check; the run goes on after
//! a failed check where the next steps still mean something, and fails at the end with
//! the list. docs/dev/fleet-lab.md describes the lab; docs/cluster.md is the operator's
//! side of the same steps.

mod ansible;
mod lab;
mod probe;
mod prom;
mod rollout;
mod unit;
mod view;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};

pub use lab::teardown;

/// Options of the task.
pub struct Opts {
    /// Leave the lab running at the end (`--down` removes it).
    pub keep: bool,
    /// Only remove a lab left running.
    pub down: bool,
    /// Install this .deb instead of building one with `cargo xtask dist`.
    pub package: Option<PathBuf>,
    /// Install the bare release binary (through `ps-agent install`) instead of a package.
    pub binary: bool,
}

/// Named pass/fail results, printed as they come and summed up at the end.
#[derive(Default)]
pub struct Checks {
    results: Vec<(String, Result<String, String>)>,
}

impl Checks {
    /// Run check `name`; `Ok` carries what was seen. Returns whether it passed.
    pub fn run(&mut self, name: &str, f: impl FnOnce() -> anyhow::Result<String>) -> bool {
        let r = f().map_err(|e| format!("{e:#}"));
        match &r {
            Ok(seen) => eprintln!("[fleet] PASS {name}: {seen}"),
            Err(e) => eprintln!("[fleet] FAIL {name}: {e}"),
        }
        let ok = r.is_ok();
        self.results.push((name.to_string(), r));
        ok
    }

    /// Print the summary; an error naming the failed checks, if any.
    fn finish(&self, secs: f64) -> anyhow::Result<()> {
        println!("fleet-test: {} checks in {secs:.0} s", self.results.len());
        for (name, r) in &self.results {
            match r {
                Ok(seen) => println!("  pass  {name}: {seen}"),
                Err(e) => println!("  FAIL  {name}: {e}"),
            }
        }
        let failed: Vec<&str> = self.results.iter().filter(|(_, r)| r.is_err()).map(|(n, _)| n.as_str()).collect();
        if !failed.is_empty() {
            bail!("{} of {} fleet checks failed: {}", failed.len(), self.results.len(), failed.join(", "));
        }
        Ok(())
    }
}

/// What the agent on a node says about itself (`ps-agent stats --json`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentState {
    /// `enforce` or `dry-run`.
    pub mode: String,
    /// The policy fingerprint.
    pub fingerprint: String,
}

/// The state of the agent on `node`.
pub fn agent_state(lab: &lab::Lab, node: &str) -> anyhow::Result<AgentState> {
    let out = lab.exec_ok(node, "ps-agent stats --json")?;
    let v: serde_json::Value = serde_json::from_str(&out).context("stats --json printed no JSON")?;
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    Ok(AgentState { mode: s("mode"), fingerprint: s("fingerprint") })
}

/// The lab's steps, in order.
pub fn fleet_test(root: &Path, cargo: fn() -> Command, opts: &Opts) -> anyhow::Result<()> {
    if opts.down {
        return teardown(&lab::base_name());
    }
    crate::run(Command::new("bash").arg(root.join("xtask/fleet-setup.sh")))?;
    let install = install(root, cargo, opts)?;
    let t0 = Instant::now();
    let mut lab = lab::Lab::up(&root.join("target/fleet/rootfs"), 3, opts.keep)?;
    let mut c = Checks::default();
    c.run("hosts boot", || boot_report(&lab));
    view::start(&mut c, root, &mut lab);
    let ctx = rollout::Ctx::new(root, &lab, install);
    rollout::lint(&mut c, &ctx);
    if !rollout::first(&mut c, &ctx) {
        return c.finish(t0.elapsed().as_secs_f64());
    }
    rollout::matrix(&mut c, &ctx);
    rollout::idempotent(&mut c, &ctx, "second");
    view::fleet(&mut c, &lab);
    unit::checks(&mut c, &lab);
    view::agent_down(&mut c, &lab);
    view::drift(&mut c, &ctx);
    rollout::broken_variable(&mut c, &ctx);
    rollout::lock_out(&mut c, &ctx);
    rollout::converge(&mut c, &ctx);
    c.run("hosts' memory after the run", || boot_report(&lab));
    let result = c.finish(t0.elapsed().as_secs_f64());
    lab.passed = result.is_ok();
    result
}

/// What the role installs: the given .deb, the bare release binary, or the .deb that
/// `cargo xtask dist` builds.
fn install(root: &Path, cargo: fn() -> Command, opts: &Opts) -> anyhow::Result<ansible::Install> {
    if opts.binary {
        crate::run(cargo().args(["build", "--release", "--package", "ps-agent"]))?;
        return Ok(ansible::Install::Binary(root.join("target/release/ps-agent")));
    }
    if let Some(deb) = &opts.package {
        return Ok(ansible::Install::Package(
            deb.canonicalize().with_context(|| format!("no package {}", deb.display()))?,
        ));
    }
    crate::dist::dist(root, cargo)?;
    let dir = root.join("target/dist");
    let deb = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .with_context(|| format!("`cargo xtask dist` left no .deb in {}", dir.display()))?;
    Ok(ansible::Install::Package(deb))
}

/// Boot time and memory of each host.
fn boot_report(lab: &lab::Lab) -> anyhow::Result<String> {
    let mut parts = Vec::new();
    for n in &lab.nodes {
        parts.push(format!("{} up in {:.1} s, {} MiB PSS", n.name, n.boot_secs, n.pss_bytes()? >> 20));
    }
    Ok(parts.join("; "))
}
