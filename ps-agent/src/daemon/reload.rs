//! Reload (SIGHUP, `ps-agent reload`): recompile the config and swap the policy atomically:
//! write the idle generation, then flip `PS_STATE.generation` (one word). Rules keep their
//! counter slots; what needs a restart (interfaces, reply tracking) is refused and the
//! running policy stays.
//!
//! Reading and compiling the config ([`prepare`]) runs on a blocking thread, away from the
//! serving loop, under [`RELOAD_LIMIT`]: a config on a stalled file system cannot hold up
//! SIGTERM or a commit-confirm deadline. Only writing the maps ([`Daemon::apply`]) runs on
//! the loop, and it only touches memory.

use std::time::Duration;

use super::{RunError, RunOptions, serve::Daemon, startup::compile_for};
use crate::{
    observe::state::RuleMeta,
    policy::{
        compile::RuleSet,
        config::{Config, Mode, ReplyTracking},
        nearest::row_hints,
    },
};

/// How long reading and compiling a config may take before the reload is given up.
pub(super) const RELOAD_LIMIT: Duration = Duration::from_secs(30);

/// What the running agent is, as a reload needs to know it.
pub(super) struct Running {
    /// Interfaces and ifindexes, in slot order.
    pub ifaces: Vec<(String, u32)>,
    /// Reply admission in force.
    pub reply_tracking: ReplyTracking,
    /// The rule set in force (the new one keeps its counter slots).
    pub set: RuleSet,
}

/// Read and compile the config for the running agent; refuse what needs a restart.
pub(super) fn prepare(opts: &RunOptions, running: &Running) -> Result<(Config, RuleSet), RunError> {
    let cfg = Config::load_with(opts.config.as_deref(), &opts.overrides)?;
    let names: Vec<String> = running.ifaces.iter().map(|(n, _)| n.clone()).collect();
    let wanted = cfg.site.interfaces.clone().unwrap_or_else(|| names.clone());
    if wanted != names {
        return Err(RunError::Reload(format!(
            "the interfaces changed ({} → {}); that needs a restart",
            names.join(", "),
            wanted.join(", ")
        )));
    }
    if running.reply_tracking != cfg.site.reply_tracking {
        return Err(RunError::Reload(format!(
            "reply_tracking changed ({} → {}); that needs a restart",
            running.reply_tracking, cfg.site.reply_tracking
        )));
    }
    let set = compile_for(&cfg, &running.ifaces)?.keep_counters(&running.set);
    Ok((cfg, set))
}

impl Daemon<'_> {
    /// What [`prepare`] needs of the running agent.
    pub(super) fn running(&self) -> Running {
        Running {
            ifaces: self.state.interfaces.iter().map(|a| (a.name.clone(), a.ifindex)).collect(),
            reply_tracking: self.state.reply_tracking,
            set: self.set.clone(),
        }
    }

    /// Write a prepared policy into the idle generation and flip to it.
    pub(super) fn apply(&mut self, cfg: Config, mut set: RuleSet) -> Result<(), RunError> {
        if set.counters_used() > self.loaded.rules_cap || set.entries.len() as u32 > self.loaded.rules_cap {
            return Err(RunError::Reload(format!(
                "the policy needs {} counter slots; the running agent's maps hold {}: restart the agent to load it",
                set.counters_used().max(set.entries.len() as u32),
                self.loaded.rules_cap
            )));
        }
        if !self.loaded.egress_attached() {
            set.policy.flags &= !ps_common::layout::POLICY_STATEFUL;
        }
        let g = 1 - self.loaded.generation();
        // The mode in force stays (a commit-confirm may have changed it), unless the config
        // or the command line says dry-run.
        let mode = if cfg.site.mode == Mode::DryRun { Mode::DryRun } else { self.loaded.mode()? };
        self.loaded.write_policy(&set, g, mode)?;
        self.last_flip = Some(std::time::Instant::now());
        self.state.generation = g;
        self.state.fingerprint = set.fingerprint();
        self.state.rules = set.rules.iter().map(RuleMeta::from).collect();
        self.state.product = cfg.matrix.product.clone();
        self.state.policy = cfg.matrix.origin.clone();
        self.state.rows = row_hints(&cfg, &set);
        self.rows.set(self.state.rows.clone(), &cfg.site.management_interface);
        self.set = set;
        Ok(())
    }
}
