//! Commands that change a running agent: `reload`, `enforce`, `confirm`, `dry-run`.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use ps_agent::{
    clock,
    dataplane::{host, pins},
    observe::state::{PendingConfirm, ReloadOutcome, read_state, write_private},
    policy::{
        compile::{HostFacts, compile},
        config::{Config, Mode},
    },
};

use super::{Exit, Outcome, output::emit};

/// What `enforce`, `confirm` and `dry-run --json` print.
#[derive(serde::Serialize)]
struct ModeChange {
    /// Whether the mode or a pending confirm changed.
    changed: bool,
    /// The mode in force now.
    mode: Mode,
    /// A pending confirm's deadline (RFC 3339, UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    confirm_deadline: Option<String>,
}

/// The deadline of a pending confirm, if one is pending.
fn pending(state_dir: &Path) -> Option<u64> {
    let text = std::fs::read(PendingConfirm::path(state_dir)).ok()?;
    serde_json::from_slice::<PendingConfirm>(&text).ok().map(|p| p.deadline_unix)
}

pub fn reload(state_dir: &Path, timeout: f64, json: bool) -> Outcome {
    let before = read_state(state_dir)?;
    // Validate here first, so a bad config is reported at once.
    let cfg = Config::load(before.config.as_deref())?;
    let host = HostFacts {
        ephemeral: host::ephemeral_range(),
        interfaces: before.interfaces.iter().map(|a| a.name.clone()).collect(),
    };
    let set = compile(&cfg, &host).context("failed to compile the policy; the running policy stays")?;
    let needed = set.counters_used().max(set.entries.len() as u32);
    if needed > before.rules_cap {
        bail!(
            "the policy needs {needed} counter slots; the running agent's maps hold {}: restart the agent to load it \
             (`systemctl restart ps-agent`); the running policy stays",
            before.rules_cap
        );
    }
    // SAFETY: sending SIGHUP to the agent's pid.
    if unsafe { libc::kill(before.pid as i32, libc::SIGHUP) } != 0 {
        bail!("failed to signal ps-agent pid {}: {}", before.pid, std::io::Error::last_os_error());
    }
    let t0 = Instant::now();
    while t0.elapsed().as_secs_f64() < timeout {
        std::thread::sleep(Duration::from_millis(50));
        let now = read_state(state_dir)?;
        if (now.reloads, &now.last_reload) == (before.reloads, &before.last_reload) && now.reloads <= before.reloads {
            continue;
        }
        return match now.last_reload {
            Some(ReloadOutcome::Applied) => {
                let (n, g, f) = (now.rules.len(), now.generation, &now.fingerprint);
                let changed = now.fingerprint != before.fingerprint;
                let v = serde_json::json!({"changed": changed, "fingerprint": f, "generation": g, "rules": n});
                emit(json, &v, || format!("reloaded: {n} rules, generation {g}, fingerprint {f}\n"))?;
                Ok(Exit::Success)
            }
            Some(ReloadOutcome::Rejected(why)) => {
                bail!("the agent rejected the reload, the running policy stays: {why}")
            }
            None => bail!("the agent rejected the reload, the running policy stays: ?"),
        };
    }
    bail!("ps-agent pid {} did not answer the reload within {timeout} s", before.pid)
}

pub fn enforce(state_dir: &Path, confirm_within: Option<Duration>, json: bool) -> Outcome {
    let state = read_state(state_dir)?;
    let (before, was_pending) = (pins::read_mode(&state.pin_dir)?, pending(state_dir));
    let path = PendingConfirm::path(state_dir);
    let deadline = confirm_within.map(|d| clock::unix_now() + d.as_secs());
    match deadline {
        Some(deadline_unix) => write_private(&path, &serde_json::to_vec(&PendingConfirm { deadline_unix })?)
            .with_context(|| format!("failed to write {}", path.display()))?,
        None => {
            let _ = std::fs::remove_file(&path);
        }
    }
    pins::write_mode(&state.pin_dir, Mode::Enforce)?;
    let changed = before != Mode::Enforce || deadline.is_some() || was_pending.is_some();
    let out = ModeChange { changed, mode: Mode::Enforce, confirm_deadline: deadline.map(clock::rfc3339) };
    emit(json, &out, || match (confirm_within, deadline) {
        (Some(d), Some(at)) => format!(
            "enforcing; run `ps-agent confirm` within {} s (by {}) or the agent goes back to dry-run\n",
            d.as_secs(),
            clock::fmt_unix(at)
        ),
        _ => "enforcing\n".into(),
    })?;
    Ok(Exit::Success)
}

/// Settle a pending confirm; with none pending, nothing to do when the agent enforces
/// already, and an error when it does not (the deadline passed: it went back to dry-run).
pub fn confirm(state_dir: &Path, json: bool) -> Outcome {
    let state = read_state(state_dir)?;
    let path = PendingConfirm::path(state_dir);
    let changed = match pending(state_dir) {
        Some(deadline) if clock::unix_now() >= deadline => {
            bail!("too late: the deadline passed and the agent went (or is going) back to dry-run; enforce again")
        }
        Some(_) => {
            std::fs::remove_file(&path).with_context(|| format!("failed to remove {}", path.display()))?;
            true
        }
        None if pins::read_mode(&state.pin_dir)? == Mode::Enforce => false,
        None => {
            bail!("nothing to confirm: no `ps-agent enforce --confirm-within` is pending, and the agent is in dry-run")
        }
    };
    let out = ModeChange { changed, mode: Mode::Enforce, confirm_deadline: None };
    emit(json, &out, || {
        if changed { "confirmed: enforcing\n".into() } else { "enforcing already: nothing to confirm\n".into() }
    })?;
    Ok(Exit::Success)
}

pub fn dry_run(state_dir: &Path, json: bool) -> Outcome {
    let state = read_state(state_dir)?;
    let (before, was_pending) = (pins::read_mode(&state.pin_dir)?, pending(state_dir));
    pins::write_mode(&state.pin_dir, Mode::DryRun)?;
    let _ = std::fs::remove_file(PendingConfirm::path(state_dir));
    let out = ModeChange {
        changed: before != Mode::DryRun || was_pending.is_some(),
        mode: Mode::DryRun,
        confirm_deadline: None,
    };
    emit(json, &out, || "dry-run: nothing is dropped; would-drops are counted\n".into())?;
    Ok(Exit::Success)
}
