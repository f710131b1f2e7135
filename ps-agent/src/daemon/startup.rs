//! Start-up, in order: config and compile, claim the pin and state directories, make room
//! on the interfaces, load, attach egress (or fall back to stateless replies), take over
//! kept links and attach, then publish pins and the state file. A failure at any step
//! undoes the steps before it: [`Loaded`] detaches when dropped, and the pins are removed.

use std::{collections::BTreeMap, fs, path::PathBuf, time::Instant};

use log::{info, warn};
use tokio::task::JoinHandle;

use super::{RunError, RunOptions, claim};
use crate::{
    dataplane::{Attached, LoadOptions, Loaded, host},
    observe::{
        events::{Rows, format_event},
        metrics::{self, Endpoint},
        state::AgentState,
    },
    ops::coexist::detect_with,
    policy::{
        compile::{HostFacts, RuleSet, compile},
        config::{Config, Mode, OnExit, ReplyTracking, XdpModeName},
        nearest::row_hints,
    },
};

/// What start-up hands to the serving loop.
pub(super) struct Started {
    /// The config in force.
    pub cfg: Config,
    /// Its compiled rule set.
    pub set: RuleSet,
    /// The loaded, attached object.
    pub loaded: Loaded,
    /// The published state.
    pub state: AgentState,
    /// Background tasks: the dry-run log, drop events, the metrics endpoint.
    pub tasks: Vec<Option<JoinHandle<()>>>,
    /// The rows the drop-event lines name (`rule=`), replaced on reload.
    pub rows: Rows,
    /// The locked state and pin directories.
    pub claims: claim::Claims,
}

/// Everything up to "enforcing": see the module doc.
pub(super) async fn start(opts: &RunOptions) -> Result<Started, RunError> {
    let t0 = Instant::now();
    let cfg = Config::load_with(opts.config.as_deref(), &opts.overrides)?;
    host::preflight()?;
    let ifaces = host::resolve_interfaces(cfg.site.interfaces.as_deref())?;
    let set = compile_for(&cfg, &ifaces)?;
    // Programs a previous agent kept attached (`on_exit = "keep"`) are ours to take over,
    // not other tools' to refuse.
    let links_dir = opts.links_dir();
    let fresh: Vec<(String, u32)> =
        ifaces.iter().filter(|(n, _)| !crate::dataplane::links::kept(&links_dir, n)).cloned().collect();
    claim::make_room(&fresh, opts.force)?;
    let claims = claim::claim(&opts.state_dir, &opts.pin_dir)?;
    let metrics = bind_metrics(opts, &cfg).await?;
    let mut loaded = Loaded::load(&set, &ifaces, &load_options(opts, &cfg))?;
    info!("kernel features: {}", crate::dataplane::probe::summary(loaded.features()));
    let tracking = attach_egress(&mut loaded, &set, &fresh, cfg.site.reply_tracking)?;
    let rows = Rows::new(row_hints(&cfg, &set), &cfg.site.management_interface);
    let mut tasks = vec![loaded.spawn_dry_run_log(), spawn_events(&mut loaded, &ifaces, rows.clone())];
    // Take over the kept interfaces first (an atomic program replacement each), then attach
    // to the others.
    let adopted = loaded.adopt(&links_dir, &ifaces)?;
    if !adopted.is_empty() {
        info!("took over the programs a previous agent kept on {} (replaced atomically)", adopted.join(", "));
    }
    let attached = loaded.attach_except(&ifaces, &adopted, cfg.site.xdp_mode).map_err(claim::name_the_holder)?;
    let load_ms = t0.elapsed().as_millis() as u64;
    let state = new_state(opts, &cfg, &set, &loaded, tracking, attached, load_ms);
    if let Err(e) = publish(opts, &loaded, &state) {
        claim::unpin(&opts.pin_dir);
        return Err(e);
    }
    announce(&set, &cfg, &state.interfaces);
    tasks.push(metrics.map(|ep| serve_metrics(ep, opts, &cfg)));
    let names: Vec<&str> = state.interfaces.iter().map(|a| a.name.as_str()).collect();
    super::notify::ready(&format!("{}: {} rules on {}", cfg.site.mode, set.rules.len(), names.join(", ")));
    Ok(Started { cfg, set, loaded, state, tasks, rows, claims })
}

/// The rule set for this host: its ephemeral range and the interfaces found.
pub(super) fn compile_for(cfg: &Config, ifaces: &[(String, u32)]) -> Result<RuleSet, RunError> {
    let interfaces = ifaces.iter().map(|(n, _)| n.clone()).collect();
    let set = compile(cfg, &HostFacts { ephemeral: host::ephemeral_range(), interfaces })?;
    for w in cfg.site.warnings.iter().chain(&set.warnings) {
        warn!("{w}");
    }
    Ok(set)
}

fn load_options(opts: &RunOptions, cfg: &Config) -> LoadOptions {
    LoadOptions {
        mode: cfg.site.mode,
        flow_table_size: cfg.site.flow_table_size,
        verifier_log_dir: opts.state_dir.clone(),
        counters_pin_dir: Some(opts.pin_dir.clone()),
        keep_links: (cfg.site.on_exit == OnExit::Keep).then(|| opts.links_dir()),
        features: crate::dataplane::probe::host().features,
    }
}

async fn bind_metrics(opts: &RunOptions, cfg: &Config) -> Result<Option<Endpoint>, RunError> {
    let Some(addr) = opts.metrics.or(cfg.site.metrics) else { return Ok(None) };
    let web = opts.metrics_web_config.as_deref().or(cfg.site.metrics_web_config.as_deref());
    Ok(Some(metrics::bind(addr, web).await?))
}

fn serve_metrics(ep: Endpoint, opts: &RunOptions, cfg: &Config) -> JoinHandle<()> {
    let asked = metrics::Live {
        asked_native_xdp: cfg.site.xdp_mode == XdpModeName::Native,
        asked_stateful_replies: cfg.site.reply_tracking == ReplyTracking::Stateful,
        ..Default::default()
    };
    let attached = |iface: &str| detect_with(iface, None).is_ok_and(|progs| progs.iter().any(|p| p.is_ps_agent()));
    tokio::spawn(metrics::serve(ep, metrics::agent_reader(opts.state_dir.clone(), asked, attached)))
}

/// Egress first, so flows are tracked before replies are filtered; seed the flows the host
/// already has, so that a (re)start does not cut a live connection. Returns the reply
/// admission in force: stateful needs the egress program, and falls back to stateless.
fn attach_egress(
    loaded: &mut Loaded,
    set: &RuleSet,
    fresh: &[(String, u32)],
    wanted: ReplyTracking,
) -> Result<ReplyTracking, RunError> {
    let mut tracking = wanted;
    if let Err(e) = loaded.attach_egress(fresh) {
        if tracking == ReplyTracking::Stateful {
            warn!("{e}; reply admission falls back to stateless (ACK from the row's port to the ephemeral range)");
            loaded.make_stateless()?;
            tracking = ReplyTracking::Stateless;
        } else {
            warn!("{e}; egress traffic is not counted");
        }
    }
    if tracking == ReplyTracking::Stateful {
        let n = loaded.seed_flows(set)?;
        info!("reply admission: stateful; seeded {n} flow(s) from the kernel's sockets");
    } else {
        info!("reply admission: stateless");
    }
    Ok(tracking)
}

/// Log each drop event with the interface's name and the nearest rows of `rows`.
fn spawn_events(loaded: &mut Loaded, ifaces: &[(String, u32)], rows: Rows) -> Option<JoinHandle<()>> {
    let names: BTreeMap<u32, String> = ifaces.iter().map(|(n, i)| (*i, n.clone())).collect();
    loaded.spawn_events(move |e| {
        let iface = names.get(&e.ifindex).cloned().unwrap_or_else(|| format!("ifindex {}", e.ifindex));
        info!("{}", format_event(&e, &iface, &rows.nearest(&e, &iface)));
    })
}

fn new_state(
    opts: &RunOptions,
    cfg: &Config,
    set: &RuleSet,
    loaded: &Loaded,
    tracking: ReplyTracking,
    attached: Vec<Attached>,
    load_ms: u64,
) -> AgentState {
    let mut state = AgentState::new(
        tracking,
        set,
        &cfg.matrix.product,
        &cfg.matrix.origin,
        &cfg.site.management_interface,
        &opts.pin_dir,
        loaded.rules_cap,
        attached,
    );
    state.config = (cfg.site.origin != "<defaults>").then(|| PathBuf::from(&cfg.site.origin));
    state.counters_since_unix =
        crate::dataplane::pins::read_epoch(&opts.pin_dir).map_or(0, |e| e.since_unix_ns / 1_000_000_000);
    state.policy_load_ms = load_ms;
    state.kernel = crate::ops::doctor::kernel_release();
    state.metrics = opts.metrics.or(cfg.site.metrics).map(|a| a.to_string());
    state.rows = row_hints(cfg, set);
    state.features = Some(*loaded.features());
    state
}

/// Pin the maps and write the state file: from here on `stats` sees the agent.
fn publish(opts: &RunOptions, loaded: &Loaded, state: &AgentState) -> Result<(), RunError> {
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
}

fn announce(set: &RuleSet, cfg: &Config, attached: &[Attached]) {
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
        info!("  {:<22} {}/{:<12} {:<7}{scope}  {}", r.id, r.transport, r.ports_text, r.kind, r.description);
    }
    if !cfg.site.failsafe.enabled {
        warn!("failsafe is OFF: make sure this policy admits your own management access");
    }
}
