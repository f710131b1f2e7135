//! The rollout checks: the role lints clean, a first rollout brings every node to enforce
//! with one policy, the nodes answer the matrix's ports from the right peers and drop the
//! rest, a second run changes nothing, a broken host variable stops the rollout with the
//! other nodes untouched, a node that locks the controller out goes back to dry-run by
//! itself, and a fixed inventory converges again.

use std::{collections::BTreeMap, net::SocketAddr, path::Path, process::Command, time::Duration};

use anyhow::{Context as _, bail, ensure};
use serde_json::{Value, json};

use super::{
    AgentState, Checks, agent_state,
    ansible::{self, Install, Run},
    lab::{self, Lab},
    probe::{self, Answer},
};

/// What every scenario needs.
pub struct Ctx<'a> {
    /// The repository.
    pub root: &'a Path,
    /// The running lab.
    pub lab: &'a Lab,
    /// The cluster's variables.
    pub vars: Value,
}

impl<'a> Ctx<'a> {
    /// The lab's inventory variables for `install`.
    pub fn new(root: &'a Path, lab: &'a Lab, install: Install) -> Self {
        Ctx { root, lab, vars: ansible::group_vars(lab, &install) }
    }

    /// Write inventory `name` with `vars` and host variables, run `playbook` with it.
    pub fn play(
        &self,
        name: &str,
        playbook: &str,
        vars: &Value,
        hosts: &[(&str, Value)],
        extra: &[&str],
    ) -> anyhow::Result<Run> {
        let host_vars: BTreeMap<&str, Value> = hosts.iter().cloned().collect();
        let inv = ansible::inventory(self.lab, name, vars, &host_vars)?;
        ansible::playbook(self.root, self.lab, name, playbook, &inv, extra)
    }

    /// The cluster's variables with a site rule added: a new policy for every node.
    pub fn vars_v2(&self) -> Value {
        let mut v = self.vars.clone();
        v["ps_agent_site_rules"] = json!([{
            "id": "site-snmp", "transport": "udp", "ports": "161", "direction": "inbound",
            "description": "SNMP polling from the NMS"
        }]);
        v
    }

    /// Every node's agent state.
    pub fn states(&self) -> anyhow::Result<BTreeMap<String, AgentState>> {
        self.lab.nodes.iter().map(|n| Ok((n.name.clone(), agent_state(self.lab, &n.name)?))).collect()
    }

    /// sha256 of a node's site config.
    pub fn config_hash(&self, node: &str) -> anyhow::Result<String> {
        Ok(self.lab.exec_ok(node, "sha256sum /etc/ps-agent/config.toml | cut -c1-16")?.trim().to_string())
    }
}

/// The run succeeded with no failed task and every node in the recap.
fn clean(run: &Run, lab: &Lab) -> anyhow::Result<()> {
    ensure!(run.success && run.failed.is_empty(), "the rollout failed: {}", run.failed.join("; "));
    for n in &lab.nodes {
        ensure!(run.stats.contains_key(&n.name), "{} is missing from the recap", n.name);
    }
    Ok(())
}

/// Every node enforces one and the same policy; that fingerprint.
fn one_policy(ctx: &Ctx) -> anyhow::Result<String> {
    let states = ctx.states()?;
    for (n, s) in &states {
        ensure!(s.mode == "enforce", "{n} is in {}", s.mode);
    }
    let mut fps: Vec<&str> = states.values().map(|s| s.fingerprint.as_str()).collect();
    fps.dedup();
    ensure!(fps.len() == 1, "fingerprints differ: {states:?}");
    Ok(fps[0].to_string())
}

/// ansible-lint (production profile) over the role and playbooks.
pub fn lint(c: &mut Checks, ctx: &Ctx) {
    c.run("ansible-lint", || {
        let dir = ansible::role_dir(ctx.root);
        let out = Command::new(ctx.root.join("target/fleet/venv/bin/ansible-lint"))
            .args(["--profile", "production", "--nocolor"])
            .env("ANSIBLE_ROLES_PATH", dir.join("roles"))
            .current_dir(&dir)
            .output()
            .context("failed to start ansible-lint")?;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        ensure!(out.status.success(), "{}", text.trim());
        Ok(text.lines().rfind(|l| l.starts_with("Passed")).unwrap_or("passed").to_string())
    });
}

/// The first rollout: every node installed, started in dry-run, enforced and confirmed;
/// before it, a --check --diff run shows what it would do and does nothing.
pub fn first(c: &mut Checks, ctx: &Ctx) -> bool {
    c.run("--check --diff on fresh hosts changes nothing", || {
        let run = ctx.play("fresh-check", "rollout.yml", &ctx.vars, &[], &["--check", "--diff"])?;
        clean(&run, ctx.lab)?;
        ensure!(run.changed_hosts().len() == ctx.lab.nodes.len(), "would change only {:?}", run.changed_hosts());
        for n in &ctx.lab.nodes {
            let out = ctx.lab.exec(&n.name, "test -e /usr/local/sbin/ps-agent || test -e /usr/sbin/ps-agent")?;
            ensure!(!out.status.success(), "{} has ps-agent after a --check run", n.name);
        }
        Ok(format!("{} changes shown, none made", run.changes.len()))
    });
    c.run("first rollout converges", || {
        let run = ctx.play("first", "rollout.yml", &ctx.vars, &[], &[])?;
        clean(&run, ctx.lab)?;
        let fp = one_policy(ctx)?;
        let untouched: Vec<&str> =
            ctx.lab.nodes.iter().map(|n| n.name.as_str()).filter(|n| !run.changed_hosts().contains(n)).collect();
        ensure!(untouched.is_empty(), "nothing changed on {untouched:?}");
        Ok(format!("3 nodes enforce policy {fp}"))
    }) && c.run("config binds the cluster peers and Session Manager", || {
        let cfg = ctx.lab.exec_ok("n2", "cat /etc/ps-agent/config.toml")?;
        let peers =
            format!("\"Presence Services\" = [\"{}\", \"{}\", \"{}\"]", lab::addr(11), lab::addr(12), lab::addr(13));
        let sm = format!("\"Session Manager\" = [\"{}\"]", lab::addr(lab::SM));
        ensure!(cfg.contains(&peers) && cfg.contains(&sm), "n2's config lacks `{peers}` or `{sm}`:\n{cfg}");
        ensure!(cfg.contains("mode = \"enforce\""), "the config does not persist enforce:\n{cfg}");
        Ok("[systems] from the inventory; mode = \"enforce\" persisted after the confirm".into())
    })
}

/// (source namespace, label, port, expected) per probe of every node.
fn expectations(lab: &Lab) -> Vec<(String, &'static str, u16, Answer)> {
    use Answer::*;
    let (sm, cl) = (lab.sm(), lab.client());
    vec![
        (sm.clone(), "SM → SIP TLS 5061 (ps-05, bound to SM)", 5061, Answered),
        (sm.clone(), "SM → HTTPS 443 (ps-01)", 443, Answered),
        (sm.clone(), "SM → XMPP 5222 (ps-10)", 5222, Answered),
        (sm.clone(), "SM → SSH 22 (failsafe)", 22, Answered),
        (sm.clone(), "SM → metrics 9487 (site rule)", 9487, Answered),
        (sm.clone(), "SM → cluster 18443 (ps-22, peers only)", 18443, Silent),
        (sm.clone(), "SM → telnet 23 (no row)", 23, Silent),
        (sm.clone(), "SM → 8080 (no row)", 8080, Silent),
        (sm.clone(), "SM → 5063 (ps-07, closed optional row)", 5063, Silent),
        (cl.clone(), "client → SIP TLS 5061 (SM only)", 5061, Silent),
        (cl.clone(), "client → HTTPS 443", 443, Answered),
        (cl, "client → 3306 (no row)", 3306, Silent),
    ]
}

/// From SM and a client, every node answers the matrix's ports and drops the rest; a
/// cluster peer reaches the cluster port that SM cannot (18443: only the host-to-host row
/// ps-22 names it; 7000 is also ps-13's, from the unbound local SDK).
pub fn matrix(c: &mut Checks, ctx: &Ctx) {
    for n in &ctx.lab.nodes {
        c.run(&format!("{} answers the matrix's ports and drops the rest", n.name), || {
            let exp = expectations(ctx.lab);
            let mut wrong = Vec::new();
            for (ns, label, port, want) in &exp {
                let got = probe::tcp(ns, vec![SocketAddr::from((n.addr, *port))])?[0];
                if got != *want {
                    wrong.push(format!("{label}: {got:?}, expected {want:?}"));
                }
            }
            ensure!(wrong.is_empty(), "{}", wrong.join("; "));
            Ok(format!("{} probes as expected", exp.len()))
        });
    }
    c.run("a cluster peer reaches the cluster port", || {
        let got = probe::tcp(&ctx.lab.node("n2").machine, vec![SocketAddr::from((ctx.lab.node("n1").addr, 18443))])?;
        ensure!(got == [Answer::Answered], "n2 → n1:18443 (ps-22): {got:?}");
        Ok("n2 → n1:18443 answered (SM's SYN to it is dropped)".into())
    });
}

/// A run over a converged cluster changes nothing, and neither does a --check --diff run.
pub fn idempotent(c: &mut Checks, ctx: &Ctx, label: &str) {
    idempotent_with(c, ctx, label, &ctx.vars);
}

fn idempotent_with(c: &mut Checks, ctx: &Ctx, label: &str, vars: &Value) {
    c.run(&format!("{label} run changes nothing (changed=0)"), || {
        let run = ctx.play(label, "rollout.yml", vars, &[], &[])?;
        clean(&run, ctx.lab)?;
        ensure!(run.changes.is_empty(), "changed: {}", run.changes.join("; "));
        let ok: u64 = run.stats.values().map(|s| s.ok).sum();
        Ok(format!("recap: changed=0 on every node ({ok} tasks ok)"))
    });
    c.run(&format!("{label} --check --diff reports nothing to change"), || {
        let run = ctx.play(&format!("{label}-check"), "rollout.yml", vars, &[], &["--check", "--diff"])?;
        clean(&run, ctx.lab)?;
        ensure!(run.changes.is_empty(), "would change: {}", run.changes.join("; "));
        Ok("changed=0".into())
    });
    c.run(&format!("{label}: drift check passes"), || {
        let run = ctx.play(&format!("{label}-drift"), "drift.yml", vars, &[], &[])?;
        clean(&run, ctx.lab)?;
        Ok("one fingerprint".into())
    });
}

/// A new policy for all, and n2 with an address that is not one: the rollout changes n1,
/// fails on n2 before writing its config, and never reaches n3.
pub fn broken_variable(c: &mut Checks, ctx: &Ctx) {
    c.run("a broken host variable stops the rollout, the others untouched", || {
        let before = ctx.states()?;
        let (h2, h3) = (ctx.config_hash("n2")?, ctx.config_hash("n3")?);
        let bad = json!({"ps_agent_session_managers": ["198.18.10.300"]});
        let run = ctx.play("broken", "rollout.yml", &ctx.vars_v2(), &[("n2", bad)], &[])?;
        ensure!(!run.success, "the rollout passed with a broken variable");
        ensure!(
            run.failed.iter().any(|f| f.starts_with("n2:") && f.contains("198.18.10.300")),
            "n2 failed otherwise: {:?}",
            run.failed
        );
        ensure!(!run.stats.contains_key("n3"), "the rollout went on to n3: {:?}", run.stats);
        let after = ctx.states()?;
        ensure!(after["n1"].fingerprint != before["n1"].fingerprint, "n1 did not get the new policy");
        ensure!(after["n2"] == before["n2"] && after["n3"] == before["n3"], "n2 or n3 changed: {before:?} → {after:?}");
        ensure!(ctx.config_hash("n2")? == h2 && ctx.config_hash("n3")? == h3, "n2's or n3's config file changed");
        Ok(format!("n1 runs {}, n2 failed validation, n3 not reached", after["n1"].fingerprint))
    });
    c.run("the drift check names the nodes that differ", || {
        let run = ctx.play("broken-drift", "drift.yml", &ctx.vars_v2(), &[], &[])?;
        ensure!(!run.success, "the drift check passed on a split cluster");
        let msg = run.failed.join("; ");
        ensure!(msg.contains("policy drift") && msg.contains("n1 runs") && msg.contains("n3 runs"), "{msg}");
        Ok(msg.chars().take(160).collect())
    });
}

/// n2's inventory closes its SSH port: n2 cuts the controller off, the fresh connection
/// fails, the rollout stops there, and n2 goes back to dry-run at the deadline.
pub fn lock_out(c: &mut Checks, ctx: &Ctx) {
    c.run("a node that locks the controller out stops the rollout and reverts", || {
        let n3 = agent_state(ctx.lab, "n3")?;
        let cut = json!({"ps_agent_failsafe_ssh_ports": [2222]});
        let run = ctx.play("lock-out", "rollout.yml", &ctx.vars_v2(), &[("n2", cut)], &[])?;
        ensure!(!run.success, "the rollout passed although n2 cut SSH");
        ensure!(run.failed.iter().any(|f| f.starts_with("n2:")), "n2 did not fail: {:?}", run.failed);
        ensure!(!run.stats.contains_key("n3") && agent_state(ctx.lab, "n3")? == n3, "n3 was touched");
        let mode = wait_mode(ctx.lab, "n2", "dry-run", ansible::CONFIRM_WITHIN + 30)?;
        lab::wait_tcp(&ctx.lab.lan(), SocketAddr::from((ctx.lab.node("n2").addr, 22)), 10)
            .context("n2's SSH did not come back after the revert")?;
        Ok(format!("n2 went back to {mode} by itself; SSH answers again; n3 untouched"))
    });
}

/// Wait until `node`'s agent is in `mode`.
fn wait_mode(lab: &Lab, node: &str, mode: &str, secs: u64) -> anyhow::Result<String> {
    let t0 = std::time::Instant::now();
    loop {
        let s = agent_state(lab, node)?;
        if s.mode == mode {
            return Ok(format!("{mode} after {} s", t0.elapsed().as_secs()));
        }
        if t0.elapsed() > Duration::from_secs(secs) {
            bail!("{node} still in {} after {secs} s", s.mode);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The fixed inventory: every node on the new policy, then nothing left to change.
pub fn converge(c: &mut Checks, ctx: &Ctx) {
    let v2 = ctx.vars_v2();
    c.run("the fixed inventory converges", || {
        let run = ctx.play("converge", "rollout.yml", &v2, &[], &[])?;
        clean(&run, ctx.lab)?;
        let fp = one_policy(ctx)?;
        Ok(format!("3 nodes enforce policy {fp}; changed on {:?}", run.changed_hosts()))
    });
    idempotent_with(c, ctx, "final", &v2);
}
