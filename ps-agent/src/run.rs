//! The `run` daemon: config → compile → load → attach → pin → publish, then wait for a
//! signal and undo all of it. Any failure before the end of start-up undoes what was done,
//! so nothing is left half-attached.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use log::{error, info, warn};
use ps_common::names;

use crate::{
    coexist::{self, CoexistError, XdpProgram},
    compile::{CompileError, HostFacts, RuleSet, compile},
    config::{Config, ConfigError, Mode, OnExit, ReplyTracking, XdpModeName},
    load::{self, LoadError, LoadOptions, Loaded},
    observe::{AgentState, PendingConfirm, now_unix},
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
    /// A reload that cannot be applied in place.
    #[error("{0}")]
    Reload(String),
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

/// Remove the pins of a run (all but the counters, see below); never the bpffs root.
fn unpin(pin_dir: &Path) {
    if pin_dir == Path::new("/sys/fs/bpf") || pin_dir.parent().is_none() {
        return;
    }
    // The counter maps stay pinned: the next start reuses them (`crate::pinned`);
    // `ps-agent unload` removes them. Everything else goes, pins an older version left too.
    if let Ok(entries) = fs::read_dir(pin_dir) {
        for e in entries.flatten() {
            let keep = e.file_name().to_str().is_some_and(|n| names::COUNTER_MAPS.contains(&n));
            if !keep {
                let _ = fs::remove_file(e.path());
            }
        }
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
    for w in cfg.site.warnings.iter().chain(&set.warnings) {
        warn!("{w}");
    }
    claim(&opts.state_dir, &opts.pin_dir)?;
    // Programs a previous agent kept attached (`on_exit = "keep"`) are ours to take over,
    // not other tools' to refuse.
    let links_dir = opts.pin_dir.join("links");
    let kept: Vec<String> =
        ifaces.iter().filter(|(n, _)| links_dir.join(format!("xdp-{n}")).exists()).map(|(n, _)| n.clone()).collect();
    let fresh: Vec<(String, u32)> = ifaces.iter().filter(|(n, _)| !kept.contains(n)).cloned().collect();
    make_room(&fresh, opts.force)?;
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
    if let Err(e) = loaded.attach_egress(&fresh) {
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
    // Take over the kept interfaces first (an atomic program replacement each), then attach
    // to the others.
    let adopted = loaded.adopt(&links_dir, &ifaces)?;
    if !adopted.is_empty() {
        info!("took over the programs a previous agent kept on {} (replaced atomically)", adopted.join(", "));
    }
    let attached = loaded.attach_except(&ifaces, &adopted, cfg.site.xdp_mode)?;
    let load_ms = t0.elapsed().as_millis() as u64;
    // From here on, undo on failure: drop detaches, unpin removes the pins.
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
    state.config = (cfg.site.origin != "<defaults>").then(|| PathBuf::from(&cfg.site.origin));
    observe_state(&mut state, &cfg, &set, &opts, load_ms);
    let publish = |loaded: &Loaded, state: &AgentState| -> Result<(), RunError> {
        loaded.pin(&opts.pin_dir)?;
        fs::create_dir_all(&opts.state_dir).map_err(|source| RunError::Io {
            action: "create",
            path: opts.state_dir.clone(),
            source,
        })?;
        state.write(&opts.state_dir).map_err(|source| RunError::Io {
            action: "write",
            path: AgentState::path(&opts.state_dir),
            source,
        })
    };
    if let Err(e) = publish(&loaded, &state) {
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

    let mut daemon = Daemon { opts: &opts, loaded, set, state, xdp_mode: cfg.site.xdp_mode, last_flip: None };
    let result = daemon.serve(logger).await;
    for t in [events, metrics].into_iter().flatten() {
        t.abort();
    }
    let Daemon { mut loaded, state, .. } = daemon;
    let names: Vec<&str> = state.interfaces.iter().map(|a| a.name.as_str()).collect();
    let kept = match cfg.site.on_exit {
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
    unpin(&opts.pin_dir);
    let _ = fs::remove_file(AgentState::path(&opts.state_dir));
    let _ = fs::remove_file(PendingConfirm::path(&opts.state_dir));
    if kept {
        info!(
            "exiting; the programs keep enforcing on {} (on_exit = \"keep\"); the next ps-agent takes them over, `ps-agent unload` removes them",
            names.join(", ")
        );
    } else {
        info!("detached from {}; maps unpinned", names.join(", "));
    }
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

/// The running agent: what it loaded, and what it does on signals and every second.
struct Daemon<'a> {
    opts: &'a RunOptions,
    loaded: Loaded,
    set: RuleSet,
    state: AgentState,
    xdp_mode: XdpModeName,
    /// When the last generation flip happened: the next write into the other generation
    /// waits a grace period, so no packet still reading it sees it change.
    last_flip: Option<std::time::Instant>,
}

/// How long a packet may still be reading the previous generation after a flip (XDP runs
/// under RCU; a packet's whole run is microseconds).
const FLIP_GRACE: Duration = Duration::from_millis(20);

impl Daemon<'_> {
    async fn serve(&mut self, logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>) -> Result<(), RunError> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).map_err(RunError::Signal)?;
        let mut int = signal(SignalKind::interrupt()).map_err(RunError::Signal)?;
        let mut hup = signal(SignalKind::hangup()).map_err(RunError::Signal)?;
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
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = term.recv() => { info!("SIGTERM: detaching"); break; }
                _ = int.recv() => { info!("SIGINT: detaching"); break; }
                _ = hup.recv() => {
                    if let Some(t) = self.last_flip && t.elapsed() < FLIP_GRACE {
                        tokio::time::sleep(FLIP_GRACE - t.elapsed()).await;
                    }
                    match self.reload() {
                        Ok(()) => {
                            self.state.reloads += 1;
                            self.state.last_reload = Some("ok".into());
                            info!("reloaded: {} rules, generation {}, fingerprint {}",
                                self.set.rules.len(), self.state.generation, self.state.fingerprint);
                        }
                        Err(e) => {
                            error!("reload rejected, the running policy stays: {e}");
                            self.state.last_reload = Some(e.to_string());
                        }
                    }
                    self.save();
                }
                _ = tick.tick() => {
                    self.check_confirm();
                    self.watch_links();
                }
            }
        }
        if let Some(t) = log_task {
            t.abort();
        }
        Ok(())
    }

    fn save(&self) {
        if let Err(e) = self.state.write(&self.opts.state_dir) {
            warn!("failed to write the state file in {}: {e}", self.opts.state_dir.display());
        }
    }

    /// Recompile the config and swap the policy atomically: write the idle generation,
    /// then flip `PS_STATE.generation` (one word). Rules keep their counter slots.
    fn reload(&mut self) -> Result<(), RunError> {
        let o = self.opts;
        let cfg = prepare(o.config.as_deref(), &o.ifaces, o.dry_run, o.xdp_mode)?;
        let names: Vec<String> = self.state.interfaces.iter().map(|a| a.name.clone()).collect();
        let wanted = cfg.site.interfaces.clone().unwrap_or_else(|| names.clone());
        if wanted != names {
            return Err(RunError::Reload(format!(
                "the interfaces changed ({} → {}); that needs a restart",
                names.join(", "),
                wanted.join(", ")
            )));
        }
        let host = HostFacts { ephemeral: load::ephemeral_range(), interfaces: names };
        let mut set = compile(&cfg, &host)?.keep_counters(&self.set);
        if self.state.reply_tracking != cfg.site.reply_tracking.as_str() {
            return Err(RunError::Reload(format!(
                "reply_tracking changed ({} → {}); that needs a restart",
                self.state.reply_tracking,
                cfg.site.reply_tracking.as_str()
            )));
        }
        if !self.loaded.egress_attached() {
            set.policy.flags &= !ps_common::layout::POLICY_STATEFUL;
        }
        for w in cfg.site.warnings.iter().chain(&set.warnings) {
            warn!("{w}");
        }
        let g = 1 - self.loaded.generation();
        // The mode in force stays (a commit-confirm may have changed it), unless the config
        // or the command line says dry-run.
        let mode = if cfg.site.mode == Mode::DryRun { Mode::DryRun } else { load::read_mode(&self.loaded)? };
        self.loaded.write_policy(&set, g, mode)?;
        self.last_flip = Some(std::time::Instant::now());
        self.state.generation = g;
        self.state.fingerprint = set.fingerprint();
        self.state.rules = set.rules.iter().map(crate::observe::RuleMeta::from).collect();
        self.state.product = cfg.matrix.product.clone();
        self.state.policy = cfg.matrix.origin.clone();
        self.state.rows = crate::report::row_hints(&cfg, &set);
        self.set = set;
        Ok(())
    }

    /// Commit-confirm: back to dry-run when the deadline passes unconfirmed.
    fn check_confirm(&mut self) {
        let path = PendingConfirm::path(&self.opts.state_dir);
        let Ok(text) = fs::read_to_string(&path) else { return };
        let Ok(p) = serde_json::from_str::<PendingConfirm>(&text) else { return };
        if now_unix() < p.deadline_unix {
            return;
        }
        match self.loaded.set_mode(Mode::DryRun) {
            Ok(()) => {
                let _ = fs::remove_file(&path);
                warn!("enforcement was not confirmed in time: back to dry-run (nothing is dropped)");
            }
            Err(e) => error!("failed to revert to dry-run after an unconfirmed enforce: {e}"),
        }
    }

    /// Interfaces that disappear are reported; when they come back (a new ifindex), the
    /// programs are attached again.
    fn watch_links(&mut self) {
        for i in 0..self.state.interfaces.len() {
            let a = self.state.interfaces[i].clone();
            match load::ifindex(&a.name) {
                None if a.ifindex != 0 => {
                    warn!("interface `{}` disappeared; ps-agent attaches again when it returns", a.name);
                    self.state.interfaces[i].ifindex = 0;
                    self.state.link_events += 1;
                    self.save();
                }
                Some(idx) if idx != a.ifindex => match self.loaded.reattach(&a.name, idx, a.slot, self.xdp_mode) {
                    Ok(now) => {
                        info!("interface `{}` is back (ifindex {idx}): attached again ({})", a.name, now.xdp_mode);
                        self.state.interfaces[i] = now;
                        self.state.link_events += 1;
                        self.save();
                    }
                    Err(e) => warn!("interface `{}` is back, but attaching failed (will retry): {e}", a.name),
                },
                _ => {}
            }
        }
    }
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
