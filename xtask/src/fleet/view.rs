//! The fleet view: Prometheus scrapes every node with the shipped rules; a stopped agent
//! fires the agent-down alert, one node's changed policy fires the drift alert (read
//! through Prometheus' HTTP API), and the role's next run repairs the drift.

use std::{path::Path, time::Duration};

use anyhow::{Context as _, ensure};
use serde_json::Value;

use super::{Checks, agent_state, lab::Lab, prom, rollout::Ctx};

/// The alert of the shipped rules that fires when a node's agent stops answering.
pub const AGENT_DOWN: &str = "PsAgentDown";
/// The alert of the shipped rules that fires when a cluster's nodes run different policies.
pub const POLICY_DRIFT: &str = "PsAgentPolicyDrift";

/// The rules the lab loads: PS_FLEET_RULES if set, else the shipped file.
fn rules(root: &Path) -> std::path::PathBuf {
    std::env::var_os("PS_FLEET_RULES").map_or_else(|| prom::rules_file(root), Into::into)
}

/// Start Prometheus on the operator's station.
pub fn start(c: &mut Checks, root: &Path, lab: &mut Lab) {
    let bin = root.join("target/fleet/prometheus/usr/bin/prometheus");
    let mut child = None;
    c.run("Prometheus starts with the shipped rules", || {
        let r = rules(root);
        child = Some(prom::start(lab, &bin, &r)?);
        Ok(format!("{} on {}", r.display(), prom::listen()))
    });
    lab.prometheus = child;
}

/// Whether `alerts` has `name` for node `node`.
fn has(alerts: &[(String, Value)], name: &str, node: &str) -> bool {
    alerts
        .iter()
        .any(|(n, l)| n == name && (l["node"] == node || l["instance"].as_str().is_some_and(|i| i.contains(node))))
}

/// Every node is scraped, and all report one policy fingerprint.
pub fn fleet(c: &mut Checks, lab: &Lab) {
    c.run("Prometheus scrapes every node", || {
        let t0 = std::time::Instant::now();
        loop {
            let up = prom::query(lab, "up{job=\"ps-agent\"} == 1")?;
            if up.len() == lab.nodes.len() {
                return Ok(format!("{} targets up", up.len()));
            }
            ensure!(t0.elapsed() < Duration::from_secs(30), "up: {up:?}");
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    c.run("one policy fingerprint across the cluster (ps_agent_info)", || {
        let fps = prom::query(lab, "count by (policy_fingerprint) (ps_agent_info)")?;
        ensure!(fps.len() == 1 && fps[0].1 == lab.nodes.len() as f64, "{fps:?}");
        Ok(format!("{} on {} nodes", fps[0].0["policy_fingerprint"], fps[0].1))
    });
}

/// Stop n3's agent: the agent-down alert fires for n3 and clears once it runs again.
pub fn agent_down(c: &mut Checks, lab: &Lab) {
    c.run("a stopped agent fires the agent-down alert", || {
        lab.exec_ok("n3", "systemctl stop ps-agent")?;
        let fired = prom::wait_alerts(lab, 60, |a| has(a, AGENT_DOWN, "n3"));
        lab.exec_ok("n3", "systemctl start ps-agent")?;
        let (ok, seen) = fired?;
        ensure!(ok, "no {AGENT_DOWN} for n3 within 60 s; firing: {seen:?}");
        let (cleared, seen) = prom::wait_alerts(lab, 60, |a| !has(a, AGENT_DOWN, "n3"))?;
        ensure!(cleared, "{AGENT_DOWN} still firing after the restart: {seen:?}");
        Ok(format!("{AGENT_DOWN} fired for n3 and cleared after the start"))
    });
}

/// Change n3's policy by hand: the drift alert fires and the drift check names n3; the
/// role's next run puts n3 back and the alert clears.
pub fn drift(c: &mut Checks, ctx: &Ctx) {
    let lab = ctx.lab;
    c.run("one node's changed policy fires the drift alert", || {
        lab.exec_ok(
            "n3",
            "printf '\\n[[rule]]\\nid = \"local-hack\"\\ntransport = \"tcp\"\\nports = \"8443\"\\ndirection = \"inbound\"\\n' >> /etc/ps-agent/config.toml && ps-agent reload",
        )?;
        let (ok, seen) = prom::wait_alerts(lab, 60, |a| a.iter().any(|(n, _)| n == POLICY_DRIFT))?;
        ensure!(ok, "no {POLICY_DRIFT} within 60 s; firing: {seen:?}");
        Ok(format!("{POLICY_DRIFT} fired ({} alerts)", seen.len()))
    });
    c.run("the drift check names the node that drifted", || {
        let run = ctx.play("drift-hack", "drift.yml", &ctx.vars, &[], &[])?;
        ensure!(!run.success, "the drift check passed with n3 changed by hand");
        let msg = run.failed.join("; ");
        ensure!(msg.contains("n3 runs"), "{msg}");
        Ok("drift.yml failed naming each node's fingerprint".into())
    });
    c.run("the role repairs the drift and the alert clears", || {
        let run = ctx.play("drift-repair", "rollout.yml", &ctx.vars, &[], &[])?;
        ensure!(run.success, "{}", run.failed.join("; "));
        ensure!(run.changed_hosts() == ["n3"], "changed: {:?}", run.changed_hosts());
        let fps: Vec<String> =
            lab.nodes.iter().map(|n| agent_state(lab, &n.name).map(|s| s.fingerprint)).collect::<Result<_, _>>()?;
        ensure!(fps.windows(2).all(|w| w[0] == w[1]), "fingerprints {fps:?}");
        let (cleared, seen) =
            prom::wait_alerts(lab, 60, |a| !a.iter().any(|(n, _)| n == POLICY_DRIFT)).context("reading the alerts")?;
        ensure!(cleared, "{POLICY_DRIFT} still firing: {seen:?}");
        Ok("only n3 changed; one fingerprint again; alert cleared".into())
    });
}
