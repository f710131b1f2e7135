//! The `run` daemon: config → compile → load → attach → pin → publish, then wait for a
//! signal and undo all of it. Any failure before the end of start-up undoes what was done,
//! so nothing is left half-attached.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use log::{info, warn};
use ps_common::names;

use crate::{
    coexist::{self, CoexistError, XdpProgram},
    compile::{CompileError, HostFacts, RuleSet, compile},
    config::{Config, ConfigError, Mode, ReplyTracking, XdpModeName},
    load::{self, LoadError, LoadOptions, Loaded},
    observe::AgentState,
};

/// Options of `ps-agent run`.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Site config.
    pub config: Option<PathBuf>,
    /// Interfaces (override the config).
    pub ifaces: Vec<String>,
    /// Force dry-run.
    pub dry_run: bool,
    /// Force an XDP mode.
    pub xdp_mode: Option<XdpModeName>,
    /// Pin directory.
    pub pin_dir: PathBuf,
    /// State directory.
    pub state_dir: PathBuf,
    /// Replace XDP programs other tools attached through netlink.
    pub force: bool,
    /// Serve OpenMetrics on this address (`crate::metrics`).
    pub metrics: Option<std::net::SocketAddr>,
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
    Load(#[from] LoadError),
    /// Another agent owns the pin directory.
    #[error(
        "another ps-agent (pid {pid}) is running with state in {state}; stop it first, or give this one its own --pin-dir and --state-dir"
    )]
    AlreadyRunning {
        /// Its pid.
        pid: u32,
        /// Its state file.
        state: PathBuf,
    },
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
    /// Signal handling.
    #[error("failed to install signal handlers: {0}")]
    Signal(#[source] std::io::Error),
    /// The metrics endpoint could not listen.
    #[error(
        "failed to listen for metrics on {addr}: {source} (is another agent or exporter on that port? pick another with --metrics ADDR)"
    )]
    Metrics {
        /// Address.
        addr: std::net::SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
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

/// Load config with the CLI overrides applied, and the facts of this host.
pub fn prepare(
    config: Option<&Path>,
    ifaces: &[String],
    dry_run: bool,
    xdp_mode: Option<XdpModeName>,
) -> Result<Config, RunError> {
    let mut cfg = Config::load(config)?;
    if !ifaces.is_empty() {
        cfg.site.interfaces = Some(ifaces.to_vec());
    }
    if dry_run {
        cfg.site.mode = Mode::DryRun;
    }
    if let Some(m) = xdp_mode {
        cfg.site.xdp_mode = m;
    }
    Ok(cfg)
}

fn pid_alive(pid: u32) -> bool {
    crate::install::pid_alive(pid)
}

/// Refuse if another live agent owns `state_dir`; otherwise clear stale pins and state.
fn claim(state_dir: &Path, pin_dir: &Path) -> Result<(), RunError> {
    let state = AgentState::path(state_dir);
    if let Ok(text) = fs::read_to_string(&state)
        && let Ok(s) = serde_json::from_str::<AgentState>(&text)
    {
        if pid_alive(s.pid) {
            return Err(RunError::AlreadyRunning { pid: s.pid, state });
        }
        warn!("removing stale state of ps-agent pid {} (not running)", s.pid);
    }
    let _ = fs::remove_file(&state);
    unpin(pin_dir);
    Ok(())
}

fn unpin(pin_dir: &Path) {
    // The counter maps stay pinned: the next start reuses them (`crate::pinned`);
    // `ps-agent unload` removes them.
    for name in names::PINNED_MAPS.into_iter().filter(|n| !names::COUNTER_MAPS.contains(n)) {
        let _ = fs::remove_file(pin_dir.join(name));
    }
    let _ = fs::remove_dir(pin_dir);
}

/// Before anything is attached: refuse if another XDP program holds one of `ifaces`, naming
/// it. With `force`, detach the netlink-attached ones — but only once every interface has
/// been checked, so a `bpf_link` on the last interface still leaves the others untouched.
fn make_room(ifaces: &[(String, u32)], force: bool) -> Result<(), RunError> {
    let mut replace = Vec::new();
    for (iface, _) in ifaces {
        // Without `ip` the kernel still refuses a second program (EBUSY, with a hint), so a
        // failed look is a warning, not a reason not to start.
        let found = coexist::detect(iface).unwrap_or_else(|e| {
            warn!("cannot check `{iface}` for other XDP programs: {e}; attaching anyway");
            vec![]
        });
        for owner in found {
            if force && owner.replaceable() {
                replace.push((iface, owner));
                continue;
            }
            let hint = if force {
                format!("--force replaces only netlink attachments; {}", owner.hint(iface))
            } else {
                owner.hint(iface)
            };
            return Err(RunError::Occupied { iface: iface.clone(), owner, hint });
        }
    }
    for (iface, owner) in replace {
        coexist::detach_netlink(iface, &owner).map_err(|source| RunError::Coexist { iface: iface.clone(), source })?;
        warn!("--force: detached {owner} from `{iface}` to replace it");
    }
    Ok(())
}

/// Run until SIGINT/SIGTERM.
pub async fn run(opts: RunOptions) -> Result<(), RunError> {
    let t0 = std::time::Instant::now();
    let cfg = prepare(opts.config.as_deref(), &opts.ifaces, opts.dry_run, opts.xdp_mode)?;
    load::preflight()?;
    let ifaces = load::resolve_interfaces(cfg.site.interfaces.as_deref())?;
    let host =
        HostFacts { ephemeral: load::ephemeral_range(), interfaces: ifaces.iter().map(|(n, _)| n.clone()).collect() };
    let set = compile(&cfg, &host)?;
    for w in &set.warnings {
        warn!("{w}");
    }
    claim(&opts.state_dir, &opts.pin_dir)?;
    make_room(&ifaces, opts.force)?;
    let metrics = match opts.metrics.or(cfg.site.metrics) {
        Some(addr) => Some(crate::metrics::bind(addr).await.map_err(|source| RunError::Metrics { addr, source })?),
        None => None,
    };

    let load_opts = LoadOptions {
        mode: cfg.site.mode,
        flow_table_size: cfg.site.flow_table_size,
        verifier_log_dir: opts.state_dir.clone(),
        counters_pin_dir: Some(opts.pin_dir.clone()),
    };
    let mut loaded = Loaded::load(&set, &ifaces, &load_opts)?;
    let mut tracking = cfg.site.reply_tracking;
    // Egress first, so flows are tracked before replies are filtered; seed the flows the
    // host already has, so that a (re)start does not cut a live connection.
    if let Err(e) = loaded.attach_egress(&ifaces) {
        if tracking == ReplyTracking::Stateful {
            warn!("{e}; reply admission falls back to stateless (ACK from the row's port to the ephemeral range)");
            loaded.make_stateless()?;
            tracking = ReplyTracking::Stateless;
        } else {
            warn!("{e}; egress traffic is not counted");
        }
    }
    if tracking == ReplyTracking::Stateful {
        let n = loaded.seed_flows(&set)?;
        info!("reply admission: stateful; seeded {n} flow(s) from the kernel's sockets");
    } else {
        info!("reply admission: stateless");
    }
    let logger = match aya_log::EbpfLogger::init(loaded.ebpf_mut()) {
        Ok(l) => Some(l),
        Err(e) => {
            warn!("dry-run log from the XDP program is unavailable: {e}");
            None
        }
    };
    let events = crate::events::spawn(loaded.ebpf_mut(), &ifaces_as_attached(&ifaces));
    let attached = loaded.attach(&ifaces, cfg.site.xdp_mode)?;
    let load_ms = t0.elapsed().as_millis() as u64;
    // From here on, undo on failure: drop detaches, unpin removes the pins.
    let publish = || -> Result<(), RunError> {
        loaded.pin(&opts.pin_dir)?;
        fs::create_dir_all(&opts.state_dir).map_err(|source| RunError::Io {
            action: "create",
            path: opts.state_dir.clone(),
            source,
        })?;
        let mut state = AgentState::new(
            tracking,
            &set,
            &cfg.matrix.product,
            &cfg.matrix.origin,
            &cfg.site.management_interface,
            &opts.pin_dir,
            loaded.rules_cap,
            attached.clone(),
        );
        observe_state(&mut state, &cfg, &set, &opts, load_ms);
        let path = AgentState::path(&opts.state_dir);
        let tmp = path.with_extension("json.tmp");
        fs::write(&tmp, serde_json::to_vec_pretty(&state).expect("serializable"))
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(|source| RunError::Io { action: "write", path, source })
    };
    if let Err(e) = publish() {
        unpin(&opts.pin_dir);
        return Err(e);
    }
    announce(&set, &cfg, &attached);
    let metrics = metrics.map(|l| {
        info!(
            "metrics: OpenMetrics on http://{}/metrics",
            l.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string())
        );
        tokio::spawn(crate::metrics::serve(l, opts.state_dir.clone()))
    });

    let result = wait(logger).await;
    for t in [events, metrics].into_iter().flatten() {
        t.abort();
    }
    loaded.detach_all();
    unpin(&opts.pin_dir);
    let _ = fs::remove_file(AgentState::path(&opts.state_dir));
    info!("detached from {}; maps unpinned", attached.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(", "));
    result
}

/// Interfaces by ifindex, for the event log (slots as `Loaded::attach` gives them).
fn ifaces_as_attached(ifaces: &[(String, u32)]) -> Vec<load::Attached> {
    ifaces
        .iter()
        .enumerate()
        .map(|(i, (name, ifindex))| load::Attached {
            name: name.clone(),
            ifindex: *ifindex,
            slot: i as u32 + 1,
            xdp_mode: String::new(),
        })
        .collect()
}

/// What `stats`, `report` and the metrics need besides the rules (issue 5).
fn observe_state(state: &mut AgentState, cfg: &Config, set: &RuleSet, opts: &RunOptions, load_ms: u64) {
    state.counters_since_unix = crate::pinned::read_epoch(&opts.pin_dir).map_or(0, |e| e.since_unix_ns / 1_000_000_000);
    state.policy_load_ms = load_ms;
    state.kernel = crate::doctor::kernel_release();
    state.metrics = opts.metrics.or(cfg.site.metrics).map(|a| a.to_string());
    state.rows = crate::report::row_hints(cfg, set);
}

fn announce(set: &RuleSet, cfg: &Config, attached: &[load::Attached]) {
    let ifs: Vec<String> = attached.iter().map(|a| format!("{} ({})", a.name, a.xdp_mode)).collect();
    info!(
        "{} {} rules from `{}` ({}) on {}",
        if cfg.site.mode == Mode::DryRun { "dry-run: counting (not dropping) what falls outside" } else { "enforcing" },
        set.rules.len(),
        cfg.matrix.product,
        cfg.matrix.origin,
        ifs.join(", ")
    );
    for r in &set.rules {
        let scope = r.interfaces.as_ref().map_or(String::new(), |i| format!(" on {}", i.join(",")));
        info!(
            "  {:<22} {}/{:<12} {:<7}{scope}  {}",
            r.id,
            r.transport.as_str(),
            r.ports_text,
            r.kind.as_str(),
            r.description
        );
    }
    if !cfg.site.failsafe.enabled {
        warn!("failsafe is OFF: make sure this policy admits your own management access");
    }
}

async fn wait(logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>) -> Result<(), RunError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(RunError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(RunError::Signal)?;
    // The dry-run log is rate-limited in the program; draining it a few times a second
    // is plenty.
    let log_task = logger.map(|mut l| {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                l.flush();
            }
        })
    });
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: detaching"),
        _ = int.recv() => info!("SIGINT: detaching"),
    }
    if let Some(t) = log_task {
        t.abort();
    }
    Ok(())
}
