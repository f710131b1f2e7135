//! `ps-agent run`: config → compile → load → attach → pin → publish ([`startup`]), then
//! serve signals and the once-a-second checks ([`serve`]) until SIGINT/SIGTERM, then undo
//! it all ([`shutdown`]). Any failure before the end of start-up undoes what was done, so
//! nothing is left half-attached.

mod claim;
pub mod notify;
mod reload;
mod serve;
mod startup;

use std::{
    fs,
    path::{Path, PathBuf},
};

use log::{error, info};

use crate::{
    dataplane::{DataplaneError, Loaded},
    observe::state::{AgentState, PendingConfirm},
    ops::coexist::{CoexistError, XdpProgram},
    policy::{
        compile::CompileError,
        config::{ConfigError, OnExit, Overrides},
    },
};

/// Options of `ps-agent run`.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Site config.
    pub config: Option<PathBuf>,
    /// What the command line overrides in it.
    pub overrides: Overrides,
    /// Pin directory.
    pub pin_dir: PathBuf,
    /// State directory.
    pub state_dir: PathBuf,
    /// Replace XDP programs other tools attached through netlink.
    pub force: bool,
    /// Serve OpenMetrics on this address (`crate::observe::metrics`).
    pub metrics: Option<std::net::SocketAddr>,
    /// TLS and basic auth of the metrics endpoint (overrides the site config's).
    pub metrics_web_config: Option<PathBuf>,
}

impl RunOptions {
    /// Where links kept with `on_exit = "keep"` are pinned.
    fn links_dir(&self) -> PathBuf {
        crate::dataplane::links::links_dir(&self.pin_dir)
    }
}

/// Why `run` stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Config.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Compile.
    #[error("failed to compile the policy: {0}")]
    Compile(#[from] CompileError),
    /// Kernel side.
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    /// File system.
    #[error("failed to {action} {path}: {source}")]
    Io {
        /// What.
        action: &'static str,
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A reload that cannot be applied in place.
    #[error("{0}")]
    Reload(String),
    /// Signal handling.
    #[error("failed to install signal handlers: {0}")]
    Signal(#[source] std::io::Error),
    /// The metrics endpoint could not start.
    #[error(transparent)]
    Metrics(#[from] crate::observe::metrics::MetricsError),
    /// Another XDP program holds an interface.
    #[error("failed to attach to `{iface}`: another XDP program is attached to `{iface}`: {owner}; {hint}")]
    Occupied {
        /// Interface.
        iface: String,
        /// The program, its id, name and attachment.
        owner: XdpProgram,
        /// What to do.
        hint: String,
    },
    /// Replacing another XDP program failed.
    #[error("failed to replace the XDP program on `{iface}`: {source}")]
    Coexist {
        /// Interface.
        iface: String,
        /// Cause.
        #[source]
        source: CoexistError,
    },
}

/// Run until SIGINT/SIGTERM.
pub async fn run(opts: RunOptions) -> Result<(), RunError> {
    let started = startup::start(&opts).await?;
    let on_exit = started.cfg.site.on_exit;
    let (mut daemon, tasks) = serve::Daemon::new(&opts, started);
    let result = daemon.serve().await;
    for t in tasks.into_iter().flatten() {
        t.abort();
    }
    shutdown(&opts, daemon.into_parts(), on_exit);
    result
}

/// Detach (or keep the links, `on_exit = "keep"`), unpin, remove the state files.
fn shutdown(opts: &RunOptions, (mut loaded, state, claims): (Loaded, AgentState, claim::Claims), on_exit: OnExit) {
    let names: Vec<&str> = state.interfaces.iter().map(|a| a.name.as_str()).collect();
    let links_dir = opts.links_dir();
    let kept = match on_exit {
        OnExit::Keep => match loaded.keep_links(&links_dir) {
            Ok(_) => true,
            Err(e) => {
                error!("on_exit = \"keep\" failed, detaching instead: {e}");
                false
            }
        },
        OnExit::Detach => false,
    };
    if !kept {
        loaded.detach_all();
        let _ = fs::remove_dir_all(&links_dir);
    }
    claim::unpin(&opts.pin_dir);
    remove_state(&opts.state_dir);
    if kept {
        info!(
            "exiting; the programs keep enforcing on {} (on_exit = \"keep\"); the next ps-agent takes them over, `ps-agent unload` removes them",
            names.join(", ")
        );
    } else {
        info!("detached from {}; maps unpinned", names.join(", "));
    }
    drop(loaded);
    drop(claims);
}

fn remove_state(state_dir: &Path) {
    let _ = fs::remove_file(AgentState::path(state_dir));
    let _ = fs::remove_file(PendingConfirm::path(state_dir));
}
