//! ps-agent command line.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use ps_agent::{
    compile::{HostFacts, compile},
    config::XdpModeName,
    doctor, install,
    load::{self, Counters},
    observe::{self, AgentState, DEFAULT_STATE_DIR},
    run::{self, RunOptions},
};
use ps_common::names::PIN_DIR;

/// Enforce an Avaya port matrix on this host with XDP.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Where `run` pins its maps (and `stats` finds them).
    #[arg(long, global = true, default_value = PIN_DIR, env = "PS_AGENT_PIN_DIR")]
    pin_dir: PathBuf,
    /// Where `run` writes its state file (and `stats` reads it).
    #[arg(long, global = true, default_value = DEFAULT_STATE_DIR, env = "PS_AGENT_STATE_DIR")]
    state_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Load, attach and enforce until SIGINT/SIGTERM, then detach.
    Run {
        /// Site config (default: /etc/ps-agent/config.toml if present, else the shipped
        /// PS 8.1.2 matrix with its defaults).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Interface to enforce on (repeat; default: eth0 and eth1 where present).
        #[arg(long = "iface", short = 'i')]
        ifaces: Vec<String>,
        /// Pass everything; count and log what would be dropped.
        #[arg(long)]
        dry_run: bool,
        /// XDP attach mode (native falls back to skb where the driver has no XDP).
        #[arg(long, value_enum)]
        xdp_mode: Option<XdpModeName>,
        /// Replace XDP programs other tools attached through netlink (a bpf_link cannot be).
        #[arg(long)]
        force: bool,
        /// Serve OpenMetrics on GET /metrics; alone: 127.0.0.1:9487 (give an address to
        /// listen elsewhere).
        #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = ps_agent::metrics::DEFAULT_ADDR)]
        metrics: Option<std::net::SocketAddr>,
    },
    /// What enforcing would cut now: the flows dry-run would have dropped, busiest first,
    /// with the nearest matrix row.
    Report {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Show the counters of the running agent.
    Stats {
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Refresh until interrupted.
        #[arg(long)]
        watch: bool,
        /// Refresh interval in seconds (with --watch).
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
    },
    /// List the tracked outbound flows (like `conntrack -L`).
    Flows {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Validate the config and print the compiled rule set; exit 1 on error.
    Check {
        /// Site config.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Interface (repeat; default: eth0, eth1).
        #[arg(long = "iface", short = 'i')]
        ifaces: Vec<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Check this host before loading anything; exit 0 all pass, 2 warnings only, 1 a failure.
    Doctor {
        /// Interface to check (repeat; default: eth0 and eth1 where present).
        #[arg(long = "iface", short = 'i')]
        ifaces: Vec<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Install the binary, a default (dry-run) config and the systemd unit.
    Install {
        #[command(flatten)]
        layout: LayoutArgs,
        /// Do not enable the unit.
        #[arg(long)]
        no_enable: bool,
    },
    /// Stop and remove the service, binary, unit, pins and state (the config stays).
    Uninstall {
        #[command(flatten)]
        layout: LayoutArgs,
        /// Also remove the config directory.
        #[arg(long)]
        purge: bool,
    },
    /// Remove what a (crashed) agent left: pins under --pin-dir and the state file.
    Unload {
        /// Even if the agent in the state file is still running.
        #[arg(long)]
        force: bool,
    },
}

/// Paths of `install` / `uninstall`.
#[derive(clap::Args, Debug)]
struct LayoutArgs {
    /// Staging root prefixed to every path (packaging, tests).
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// The binary goes to PREFIX/sbin/ps-agent.
    #[arg(long, default_value = "/usr/local")]
    prefix: PathBuf,
    /// Where config.toml lives.
    #[arg(long, default_value = "/etc/ps-agent")]
    config_dir: PathBuf,
    /// Where the systemd unit goes.
    #[arg(long, default_value = "/etc/systemd/system")]
    unit_dir: PathBuf,
}

impl LayoutArgs {
    fn layout(self) -> install::Layout {
        install::Layout { root: self.root, prefix: self.prefix, config_dir: self.config_dir, unit_dir: self.unit_dir }
    }
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).format_target(false).init();
    let cli = Cli::parse();
    if let Err(e) = dispatch(cli) {
        eprintln!("error: {e}");
        let mut src = e.source();
        while let Some(s) = src {
            eprintln!("  caused by: {s}");
            src = s.source();
        }
        std::process::exit(1);
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { config, ifaces, dry_run, xdp_mode, force, metrics } => {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
            rt.block_on(run::run(RunOptions {
                config,
                ifaces,
                dry_run,
                xdp_mode,
                pin_dir: cli.pin_dir,
                state_dir: cli.state_dir,
                force,
                metrics,
            }))?;
            Ok(())
        }
        Command::Doctor { ifaces, json } => {
            let checks = doctor::diagnose(&ifaces);
            if json {
                println!("{}", serde_json::to_string_pretty(&doctor::to_json(&checks))?);
            } else {
                print!("{}", doctor::render(&checks));
            }
            std::process::exit(doctor::exit_code(&checks));
        }
        Command::Install { layout, no_enable } => {
            let exe = std::env::current_exe().context("failed to find the running ps-agent binary")?;
            let legacy_caps = doctor::Kernel::parse(&doctor::kernel_release()).is_some_and(|k| !k.at_least(5, 8));
            let opts = install::InstallOptions { layout: layout.layout(), enable: !no_enable, legacy_caps };
            print_lines(install::install(&opts, &exe)?);
            Ok(())
        }
        Command::Uninstall { layout, purge } => {
            let opts = install::UninstallOptions {
                layout: layout.layout(),
                pin_dir: cli.pin_dir,
                state_dir: cli.state_dir,
                purge,
            };
            print_lines(install::uninstall(&opts)?);
            Ok(())
        }
        Command::Unload { force } => {
            print_lines(install::unload(&cli.pin_dir, &cli.state_dir, force)?);
            Ok(())
        }
        Command::Stats { json, watch, interval } => stats(&cli.state_dir, json, watch, interval),
        Command::Check { config, ifaces, json } => check(config.as_deref(), &ifaces, json),
        Command::Flows { json } => flows(&cli.state_dir, json),
        Command::Report { json } => report(&cli.state_dir, json),
    }
}

fn print_lines(lines: Vec<String>) {
    for l in lines {
        println!("{l}");
    }
}

fn read_state(state_dir: &Path) -> anyhow::Result<AgentState> {
    let path = AgentState::path(state_dir);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!("ps-agent is not running: no state file at {} (start it with `ps-agent run`)", path.display())
    })?;
    serde_json::from_str(&text).with_context(|| format!("failed to parse state file {}", path.display()))
}

fn snapshot(state_dir: &Path) -> anyhow::Result<observe::StatsReport> {
    let state = read_state(state_dir)?;
    let counters = Counters::read_pinned(&state.pin_dir, state.rules_cap)?;
    let mode = load::read_pinned_mode(&state.pin_dir)?;
    let tracked = load::read_pinned_flows(&state.pin_dir)?.len() as u64;
    let capacity = load::pinned_flow_capacity(&state.pin_dir)? as u64;
    Ok(observe::report(&state, &counters, mode, tracked, capacity))
}

fn flows(state_dir: &Path, json: bool) -> anyhow::Result<()> {
    let state = read_state(state_dir)?;
    let flows = load::read_pinned_flows(&state.pin_dir)?;
    let reports = observe::flow_reports(&state, &flows, load::monotonic_ns());
    if json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        print!("{}", observe::render_flows(&reports));
    }
    Ok(())
}

fn stats(state_dir: &Path, json: bool, watch: bool, interval: f64) -> anyhow::Result<()> {
    if !watch {
        let r = snapshot(state_dir)?;
        if json {
            println!("{}", serde_json::to_string_pretty(&r)?);
        } else {
            print!("{}", observe::render_table(&r, None));
        }
        return Ok(());
    }
    let frame = || -> anyhow::Result<(observe::StatsReport, Option<ps_agent::report::DryRunReport>)> {
        let (state, r) = ps_agent::pinned::snapshot(state_dir)?;
        // What enforcing would cut, from the would-drop table (dry-run only).
        let cut = if r.mode == "dry-run" {
            let table = ps_agent::pinned::read_wdrop(&state.pin_dir)?;
            let now_unix = ps_agent::pinned::unix_now_ns() / 1_000_000_000;
            Some(ps_agent::report::build(&state, &r.mode, &table, load::monotonic_ns(), now_unix))
        } else {
            None
        };
        Ok((r, cut))
    };
    Ok(ps_agent::watch::run(frame, interval, json)?)
}

fn report(state_dir: &Path, json: bool) -> anyhow::Result<()> {
    let state = ps_agent::pinned::read_state(state_dir)?;
    let mode = load::read_pinned_mode(&state.pin_dir)?;
    let table = ps_agent::pinned::read_wdrop(&state.pin_dir)?;
    let now_unix = ps_agent::pinned::unix_now_ns() / 1_000_000_000;
    let r = ps_agent::report::build(&state, mode.as_str(), &table, load::monotonic_ns(), now_unix);
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", ps_agent::report::render(&r));
    }
    Ok(())
}

fn check(config: Option<&Path>, ifaces: &[String], json: bool) -> anyhow::Result<()> {
    let cfg = run::prepare(config, ifaces, false, None)?;
    let interfaces = cfg.site.interfaces.clone().unwrap_or_else(|| HostFacts::typical().interfaces);
    let host = HostFacts { ephemeral: load::ephemeral_range(), interfaces };
    let set = compile(&cfg, &host).context("failed to compile the policy")?;
    if json {
        let v = serde_json::json!({
            "product": cfg.matrix.product,
            "policy": cfg.matrix.origin,
            "mode": cfg.site.mode.as_str(),
            "interfaces": set.interfaces,
            "management_interface": cfg.site.management_interface,
            "ephemeral": [set.policy.ephemeral_lo, set.policy.ephemeral_hi],
            "fingerprint": set.fingerprint(),
            "rules": set.rules,
            "skipped": set.skipped,
            "warnings": set.warnings,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("policy:     {} ({})", cfg.matrix.product, cfg.matrix.origin);
    println!("config:     {}", cfg.site.origin);
    println!("mode:       {}", cfg.site.mode.as_str());
    println!("interfaces: {} (management: {})", set.interfaces.join(", "), cfg.site.management_interface);
    println!("ephemeral:  {}-{}", set.policy.ephemeral_lo, set.policy.ephemeral_hi);
    println!("failsafe:   {}", if cfg.site.failsafe.enabled { "on" } else { "OFF" });
    println!("replies:    {} (egress: {:?})", cfg.site.reply_tracking.as_str(), cfg.site.egress);
    println!();
    println!("{:<22} {:<5} {:<20} {:<8} {:<6} DESCRIPTION", "RULE", "PROTO", "PORTS", "DIR", "IFACE");
    for r in &set.rules {
        let scope = r.interfaces.as_ref().map_or("all".to_string(), |i| i.join(","));
        println!(
            "{:<22} {:<5} {:<20} {:<8} {:<6} {}",
            r.id,
            r.transport.as_str(),
            r.ports_text,
            r.kind.as_str(),
            scope,
            r.description
        );
    }
    if !set.skipped.is_empty() {
        println!();
        println!("not enforced:");
        for s in &set.skipped {
            println!("  {:<8} {}", s.row, s.why);
        }
    }
    for w in &set.warnings {
        println!("warning: {w}");
    }
    println!();
    println!("{} rules, {} port entries, fingerprint {}", set.rules.len(), set.ports.len(), set.fingerprint());
    Ok(())
}
