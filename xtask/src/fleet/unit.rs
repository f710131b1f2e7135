//! The systemd unit under a real systemd (node n1): a `Type=notify` start returns only
//! once the agent answers, `systemctl reload` swaps the policy, the bounding set is all the
//! agent runs with and enough to enforce, and after `kill -9` systemd restarts the agent
//! while the kept programs go on dropping (a forbidden port never answers in the gap).

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context as _, bail, ensure};

use super::{Checks, agent_state, lab::Lab, probe::Prober};

const NODE: &str = "n1";

/// A unit property (`systemctl show -p P --value`).
fn prop(lab: &Lab, p: &str) -> anyhow::Result<String> {
    Ok(lab.exec_ok(NODE, &format!("systemctl show -p {p} --value ps-agent"))?.trim().to_string())
}

/// The unit checks, in order.
pub fn checks(c: &mut Checks, lab: &Lab) {
    c.run("unit: Type=notify start returns once the agent answers", || notify_start(lab));
    c.run("unit: systemctl reload swaps the policy", || reload(lab));
    c.run("unit: the capability bounding set is what the agent runs with", || capabilities(lab));
    c.run("unit: without CAP_SYS_ADMIN the agent still enforces (kernel 5.8+)", || without_sys_admin(lab));
    c.run("unit: kill -9 → systemd restarts the agent", || kill_restart(lab));
}

fn notify_start(lab: &Lab) -> anyhow::Result<String> {
    let ty = prop(lab, "Type")?;
    // Right after `systemctl restart` returns, the agent must already answer: with
    // Type=notify systemd waits for READY=1, sent once every interface is attached.
    let out = lab.exec(NODE, "systemctl restart ps-agent && ps-agent stats --json >/dev/null")?;
    let answered = out.status.success();
    ensure!(ty == "notify", "Type={ty} (the agent answered at once after restart: {answered})");
    ensure!(
        answered,
        "Type=notify, but stats failed right after the restart: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok("Type=notify; stats answers the moment the restart returns".into())
}

/// The reload counter of the agent's state file.
fn reloads(lab: &Lab) -> anyhow::Result<u64> {
    let v: serde_json::Value = serde_json::from_str(&lab.exec_ok(NODE, "cat /run/ps-agent/state.json")?)?;
    v["reloads"].as_u64().context("state.json has no `reloads`")
}

fn reload(lab: &Lab) -> anyhow::Result<String> {
    let exec = prop(lab, "ExecReload")?;
    ensure!(!exec.is_empty(), "the unit has no ExecReload=");
    let before = reloads(lab)?;
    lab.exec_ok(NODE, "systemctl reload ps-agent")?;
    let after = reloads(lab)?;
    ensure!(after == before + 1, "reloads {before} → {after}");
    Ok(format!("reloads {before} → {after}"))
}

/// Capability names of a mask, as systemd prints them.
fn cap_names(mask: u64) -> Vec<String> {
    let known = [(12, "cap_net_admin"), (21, "cap_sys_admin"), (38, "cap_perfmon"), (39, "cap_bpf")];
    (0..64)
        .filter(|b| mask & (1 << b) != 0)
        .map(|b| known.iter().find(|(k, _)| *k == b).map_or(format!("cap_{b}"), |(_, n)| n.to_string()))
        .collect()
}

fn capabilities(lab: &Lab) -> anyhow::Result<String> {
    // Read once the agent answers: before its exec, the forked child still holds the
    // service manager's full set.
    wait_restarted(lab, "", 30)?;
    let pid = prop(lab, "MainPID")?;
    let status = lab.exec_ok(NODE, &format!("cat /proc/{pid}/status"))?;
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .context("no CapEff")?;
    let mut running = cap_names(eff);
    let mut bounding: Vec<String> =
        prop(lab, "CapabilityBoundingSet")?.split_whitespace().map(str::to_string).collect();
    running.sort();
    bounding.sort();
    ensure!(running == bounding, "the agent runs with {running:?}, the unit bounds {bounding:?}");
    let s = agent_state(lab, NODE)?;
    ensure!(s.mode == "enforce", "the agent runs, but in {}", s.mode);
    Ok(format!("{} and enforcing", running.join(" ")))
}

/// The unit grants CAP_SYS_ADMIN for kernels without CAP_BPF; on this one the agent must
/// load, attach and enforce without it. A runtime drop-in narrows the set for one start.
fn without_sys_admin(lab: &Lab) -> anyhow::Result<String> {
    let dir = "/run/systemd/system/ps-agent.service.d";
    let narrow = "[Service]\\nCapabilityBoundingSet=\\nCapabilityBoundingSet=CAP_BPF CAP_PERFMON CAP_NET_ADMIN\\n";
    lab.exec_ok(
        NODE,
        &format!("mkdir -p {dir} && printf '{narrow}' > {dir}/fleet-lab.conf && systemctl daemon-reload && systemctl restart ps-agent"),
    )?;
    let seen = capabilities(lab).and_then(|r| {
        ensure!(!r.contains("cap_sys_admin"), "{r}");
        Ok(r)
    });
    lab.exec_ok(NODE, &format!("rm -f {dir}/fleet-lab.conf && systemctl daemon-reload && systemctl restart ps-agent"))?;
    wait_restarted(lab, "", 30)?;
    seen
}

/// `kill -9` the agent while probing a forbidden port and, as a control, an allowed one;
/// systemd must restart it, and the forbidden port must stay silent throughout. The agent
/// attaches afresh first: a graceful stop with `on_exit = "keep"` leaves its links pinned
/// for the next agent, which would hide whether an agent's own attachment survives.
fn kill_restart(lab: &Lab) -> anyhow::Result<String> {
    lab.exec_ok(NODE, "systemctl stop ps-agent && ps-agent unload && systemctl start ps-agent")?;
    wait_restarted(lab, "", 30)?;
    ensure!(agent_state(lab, NODE)?.mode == "enforce", "the fresh agent does not enforce");
    let (pid, restarts) = (prop(lab, "MainPID")?, prop(lab, "NRestarts")?);
    let addr = lab.node(NODE).addr;
    let forbidden = Prober::start(&lab.sm(), SocketAddr::from((addr, 8080)));
    let allowed = Prober::start(&lab.sm(), SocketAddr::from((addr, 443)));
    std::thread::sleep(Duration::from_secs(1));
    lab.exec_ok(NODE, &format!("kill -9 {pid}"))?;
    let back = wait_restarted(lab, &pid, 60);
    std::thread::sleep(Duration::from_secs(2));
    let (f, a) = (forbidden.finish(), allowed.finish());
    let secs = back?;
    let now = prop(lab, "NRestarts")?;
    ensure!(now != restarts, "NRestarts stayed {restarts}");
    ensure!(
        f.errors == 0 && a.errors == 0 && a.answered > 0,
        "the probes proved nothing: forbidden {f:?}, allowed {a:?}"
    );
    if f.answered > 0 {
        bail!(
            "systemd restarted the agent in {secs:.1} s, but {} of {} probes of forbidden port 8080 were answered in the gap: enforcement stopped",
            f.answered,
            f.sent
        );
    }
    Ok(format!(
        "restarted in {secs:.1} s (NRestarts {restarts} → {now}); forbidden 8080: 0 of {} answered; allowed 443: {} of {}",
        f.sent, a.answered, a.sent
    ))
}

/// Seconds until a new agent (not `old_pid`) answers `stats`.
fn wait_restarted(lab: &Lab, old_pid: &str, secs: u64) -> anyhow::Result<f64> {
    let t0 = std::time::Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        let pid = prop(lab, "MainPID")?;
        if pid != "0" && pid != old_pid && agent_state(lab, NODE).is_ok() {
            return Ok(t0.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("no new agent within {secs} s after kill -9 (MainPID {})", prop(lab, "MainPID")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_masks_read_as_systemd_names() {
        assert_eq!(cap_names(0x000000c000001000), ["cap_net_admin", "cap_perfmon", "cap_bpf"]);
        assert_eq!(cap_names(1 << 21 | 1), ["cap_0", "cap_sys_admin"]);
    }
}
