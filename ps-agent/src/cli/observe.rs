//! Commands that read a running agent: `stats` (once or `--watch`), `flows`, `report`.

use std::path::Path;

use ps_agent::{
    clock,
    dataplane::pins,
    observe::{
        flows::{census, flow_reports, render_flows},
        report::{self, DryRunReport},
        state::{AgentState, read_state},
        stats::{StatsReport, render_table, snapshot},
        watch,
    },
    ops,
    policy::config::Mode,
};

use super::{Exit, Outcome, output::emit};

/// The state of the agent running with `state_dir`; an error that says so, and what the
/// gone agent left attached, when its process is not running (a crash leaves the state
/// file behind).
fn running(state_dir: &Path) -> anyhow::Result<AgentState> {
    let state = read_state(state_dir)?;
    if state.agent_alive() {
        return Ok(state);
    }
    let ours: Vec<&str> = state
        .interfaces
        .iter()
        .filter(|a| ops::coexist::detect(&a.name).is_ok_and(|found| found.iter().any(|p| p.is_ps_agent())))
        .map(|a| a.name.as_str())
        .collect();
    let left = if ours.is_empty() {
        "nothing of it is attached: the host is not filtered".to_string()
    } else {
        format!("its programs are still attached to {} and enforce the last policy", ours.join(", "))
    };
    anyhow::bail!(
        "ps-agent is not running: pid {} (state in {}) is gone; {left}. Start it again (`systemctl start ps-agent` or \
         `ps-agent run`), or remove what it left with `ps-agent unload`",
        state.pid,
        AgentState::path(state_dir).display()
    )
}

pub fn stats(state_dir: &Path, json: bool, watch: bool, interval: f64) -> Outcome {
    running(state_dir)?;
    if !watch {
        let (_, r) = snapshot(state_dir)?;
        emit(json, &r, || render_table(&r, None))?;
        return Ok(Exit::Success);
    }
    let frame = || -> anyhow::Result<(StatsReport, Option<DryRunReport>)> {
        let (state, r) = snapshot(state_dir)?;
        // What enforcing would cut, from the would-drop table (dry-run only).
        let cut = if r.mode == Mode::DryRun {
            let table = pins::read_wdrop(&state.pin_dir)?;
            Some(report::build(&state, r.mode, &table, clock::monotonic_ns(), clock::unix_now()))
        } else {
            None
        };
        Ok((r, cut))
    };
    watch::run(frame, interval, json)?;
    Ok(Exit::Success)
}

pub fn flows(state_dir: &Path, json: bool) -> Outcome {
    let state = running(state_dir)?;
    let flows = census(&state.pin_dir)?.live;
    let reports = flow_reports(&state, &flows, clock::monotonic_ns());
    emit(json, &reports, || render_flows(&reports))?;
    Ok(Exit::Success)
}

pub fn report(state_dir: &Path, json: bool) -> Outcome {
    let state = running(state_dir)?;
    let mode = pins::read_mode(&state.pin_dir)?;
    let table = pins::read_wdrop(&state.pin_dir)?;
    let r = report::build(&state, mode, &table, clock::monotonic_ns(), clock::unix_now());
    emit(json, &r, || report::render(&r))?;
    Ok(Exit::Success)
}
