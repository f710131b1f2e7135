//! `ps-agent run`: the daemon, on a one-worker tokio runtime.

use std::path::PathBuf;

use ps_agent::{
    daemon::{self, RunOptions},
    policy::config::Overrides,
};

use super::{Exit, Outcome, args::RunArgs};

pub fn run(a: RunArgs, pin_dir: PathBuf, state_dir: PathBuf) -> Outcome {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let overrides = Overrides { ifaces: a.ifaces, dry_run: a.dry_run, xdp_mode: a.xdp_mode };
    let opts = RunOptions {
        config: a.config,
        overrides,
        pin_dir,
        state_dir,
        force: a.force,
        metrics: a.metrics,
        metrics_web_config: a.metrics_web_config,
    };
    rt.block_on(daemon::run(opts))?;
    Ok(Exit::Success)
}
