//! ps-agent command line.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use ps_agent::{
    compile::{HostFacts, RuleSet, compile},
    config::Matrix,
    config::{Config, Mode, XdpModeName},
    diff, doctor,
    explain::{self, Proto},
    export::{self, ExportMeta},
    import::{ImportOptions, import},
    install,
    load::{self, Counters},
    observe::{self, AgentState, DEFAULT_STATE_DIR, PendingConfirm},
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
    /// Recompile the running agent's config and swap its policy atomically (as SIGHUP);
    /// a bad config is rejected and the running policy stays. Exit 1 if rejected.
    Reload {
        /// Seconds to wait for the agent's answer.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
    },
    /// Switch the running agent to enforce. With --confirm-within it goes back to dry-run
    /// unless `ps-agent confirm` arrives in time (so a lock-out undoes itself).
    Enforce {
        /// E.g. 300s, 5m.
        #[arg(long, value_parser = parse_duration)]
        confirm_within: Option<Duration>,
    },
    /// Confirm a pending `enforce --confirm-within`.
    Confirm,
    /// Switch the running agent to dry-run (and cancel a pending confirm).
    DryRun,
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
    /// Render the compiled rule set for nftables, iptables or firewalld (hosts without XDP).
    Export {
        /// Target firewall.
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// Site config.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Interface (repeat; default: eth0, eth1).
        #[arg(long = "iface", short = 'i')]
        ifaces: Vec<String>,
        /// Write here instead of stdout (firewalld: a directory, gets services/ and zones/).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// The verdict the compiled policy gives a packet (or every frame of a pcap), with the
    /// rule and matrix rows or the drop reason — computed by the kernel's own classifier.
    Explain {
        /// Transport.
        #[arg(long, value_enum, required_unless_present = "pcap")]
        proto: Option<Proto>,
        /// Destination port (TCP/UDP).
        #[arg(long, required_if_eq_any = [("proto", "tcp"), ("proto", "udp")])]
        dport: Option<u16>,
        /// Source port.
        #[arg(long, default_value_t = 50000)]
        sport: u16,
        /// ICMP/ICMPv6 type (with --proto icmp).
        #[arg(long, default_value_t = 8)]
        icmp_type: u8,
        /// Source address (IPv6 makes an IPv6 packet).
        #[arg(long, default_value = "192.0.2.10")]
        src: IpAddr,
        /// Destination address.
        #[arg(long)]
        dst: Option<IpAddr>,
        /// Arrival interface (default: the first enforced interface).
        #[arg(long)]
        iface: Option<String>,
        /// TCP flags, e.g. S, SA, A, FA (default S).
        #[arg(long)]
        flags: Option<String>,
        /// Site config.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Replay a classic pcap (Ethernet, raw IP or Linux cooked) and summarize per flow.
        #[arg(long, conflicts_with_all = ["proto", "dport"])]
        pcap: Option<PathBuf>,
        /// This host's own address: its frames in a two-way capture are skipped (repeat).
        #[arg(long)]
        local: Vec<IpAddr>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Port-matrix documents and policy files: import, diff.
    Matrix {
        #[command(subcommand)]
        command: MatrixCommand,
    },
}

#[derive(Subcommand, Debug)]
enum MatrixCommand {
    /// Read an Avaya port matrix (tables copied out of the PDF/DOCX as tab-separated text)
    /// and write the policy file; exit 1 if a row cannot be read (unless --allow-partial).
    Import {
        /// The matrix as text (`-` for stdin).
        file: PathBuf,
        /// Product name (default: the document's title).
        #[arg(long)]
        product: Option<String>,
        /// Row id prefix (default: initials of the host system, e.g. `ps`).
        #[arg(long)]
        id_prefix: Option<String>,
        /// Write here instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ImportFormat::Toml)]
        format: ImportFormat,
        /// Write what could be read even if some rows could not (they are listed).
        #[arg(long)]
        allow_partial: bool,
    },
    /// Rows added, removed and changed between two matrices (policy files, or matrix
    /// documents as text, which are imported first).
    Diff {
        /// The old version.
        old: PathBuf,
        /// The new version.
        new: PathBuf,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum ExportFormat {
    /// One `table inet ps_agent` for `nft -f`.
    Nftables,
    /// IPv4 rules for `iptables-restore`.
    Iptables,
    /// IPv6 rules for `ip6tables-restore`.
    Ip6tables,
    /// Zone and service XML files.
    Firewalld,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum ImportFormat {
    Toml,
    Json,
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
        Command::Explain { proto, dport, sport, icmp_type, src, dst, iface, flags, config, pcap, local, json } => {
            let (cfg, set) = compiled(config.as_deref(), &[])?;
            let iface = iface.unwrap_or_else(|| set.interfaces[0].clone());
            let slot = set.slot_of(&iface).ok_or_else(|| explain::ExplainError::UnknownInterface {
                iface: iface.clone(),
                enforced: set.interfaces.join(", "),
            })?;
            if let Some(path) = pcap {
                let bytes = std::fs::read(&path).with_context(|| format!("failed to read `{}`", path.display()))?;
                let frames =
                    explain::read_pcap(&bytes).with_context(|| format!("failed to read `{}`", path.display()))?;
                let r = explain::replay(&set, cfg.site.mode, &frames, slot, &local);
                if json {
                    println!("{}", serde_json::to_string_pretty(&r)?);
                } else {
                    print!("{}", r.render());
                }
                return Ok(());
            }
            let proto = proto.context("--proto is required")?;
            let spec = explain::PacketSpec {
                proto,
                dport: if proto == Proto::Icmp { icmp_type as u16 } else { dport.context("--dport is required")? },
                sport,
                src,
                dst,
                flags: explain::parse_flags(flags.as_deref().unwrap_or("S"))?,
            };
            let e = explain::explain_frame(&set, &cfg.matrix, cfg.site.mode, &explain::build_frame(&spec)?, slot);
            if json {
                println!("{}", serde_json::to_string_pretty(&e)?);
            } else {
                let what = match proto {
                    Proto::Icmp => format!("icmp type {icmp_type} from {src} on {iface}"),
                    _ => format!(
                        "{} {src}:{sport} -> :{}{} on {iface}",
                        if proto == Proto::Tcp { "tcp" } else { "udp" },
                        spec.dport,
                        if proto == Proto::Tcp {
                            format!(" flags {}", flags.as_deref().unwrap_or("S"))
                        } else {
                            String::new()
                        }
                    ),
                };
                print!("{}", e.render(&what));
            }
            Ok(())
        }
        Command::Export { format, config, ifaces, output } => {
            export(format, config.as_deref(), &ifaces, output.as_deref())
        }
        Command::Matrix { command: MatrixCommand::Diff { old, new, json } } => {
            let d = diff::diff(&load_matrix(&old)?, &load_matrix(&new)?);
            if json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                print!("{}", d.render());
            }
            Ok(())
        }
        Command::Matrix {
            command: MatrixCommand::Import { file, product, id_prefix, output, format, allow_partial },
        } => matrix_import(&file, ImportOptions { product, id_prefix }, output.as_deref(), format, allow_partial),
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
        Command::Reload { timeout } => reload(&cli.state_dir, timeout),
        Command::Enforce { confirm_within } => enforce(&cli.state_dir, confirm_within),
        Command::Confirm => confirm(&cli.state_dir),
        Command::DryRun => {
            let state = read_state(&cli.state_dir)?;
            load::write_pinned_mode(&state.pin_dir, Mode::DryRun)?;
            let _ = std::fs::remove_file(PendingConfirm::path(&cli.state_dir));
            println!("dry-run: nothing is dropped; would-drops are counted");
            Ok(())
        }
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

/// `300`, `300s`, `5m`, `1h`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.trim().split_at(s.trim().find(|c: char| !c.is_ascii_digit()).unwrap_or(s.trim().len()));
    let n: u64 = n.parse().map_err(|_| format!("`{s}`: expected a number of seconds, e.g. 300s or 5m"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("`{s}`: unit must be s, m or h")),
    };
    if secs == 0 {
        return Err("the duration must be positive".into());
    }
    Ok(Duration::from_secs(secs))
}

fn reload(state_dir: &Path, timeout: f64) -> anyhow::Result<()> {
    let before = read_state(state_dir)?;
    // Validate here first, so a bad config is reported at once.
    let cfg = ps_agent::config::Config::load(before.config.as_deref())?;
    let host = HostFacts {
        ephemeral: load::ephemeral_range(),
        interfaces: before.interfaces.iter().map(|a| a.name.clone()).collect(),
    };
    compile(&cfg, &host).context("failed to compile the policy; the running policy stays")?;
    // SAFETY: sending SIGHUP to the agent's pid.
    if unsafe { libc::kill(before.pid as i32, libc::SIGHUP) } != 0 {
        bail!("failed to signal ps-agent pid {}: {}", before.pid, std::io::Error::last_os_error());
    }
    let t0 = Instant::now();
    while t0.elapsed().as_secs_f64() < timeout {
        std::thread::sleep(Duration::from_millis(50));
        let now = read_state(state_dir)?;
        if (now.reloads, &now.last_reload) != (before.reloads, &before.last_reload) || now.reloads > before.reloads {
            return match now.last_reload.as_deref() {
                Some("ok") => {
                    println!(
                        "reloaded: {} rules, generation {}, fingerprint {}",
                        now.rules.len(),
                        now.generation,
                        now.fingerprint
                    );
                    Ok(())
                }
                other => bail!("the agent rejected the reload, the running policy stays: {}", other.unwrap_or("?")),
            };
        }
    }
    bail!("ps-agent pid {} did not answer the reload within {timeout} s", before.pid)
}

fn enforce(state_dir: &Path, confirm_within: Option<Duration>) -> anyhow::Result<()> {
    let state = read_state(state_dir)?;
    if let Some(d) = confirm_within {
        let p = PendingConfirm { deadline_unix: observe::now_unix() + d.as_secs() };
        std::fs::write(PendingConfirm::path(state_dir), serde_json::to_vec(&p)?)
            .with_context(|| format!("failed to write {}", PendingConfirm::path(state_dir).display()))?;
    } else {
        let _ = std::fs::remove_file(PendingConfirm::path(state_dir));
    }
    load::write_pinned_mode(&state.pin_dir, Mode::Enforce)?;
    match confirm_within {
        Some(d) => {
            println!("enforcing; run `ps-agent confirm` within {} s or the agent goes back to dry-run", d.as_secs())
        }
        None => println!("enforcing"),
    }
    Ok(())
}

fn confirm(state_dir: &Path) -> anyhow::Result<()> {
    let path = PendingConfirm::path(state_dir);
    let text = std::fs::read_to_string(&path)
        .context("nothing to confirm: no `ps-agent enforce --confirm-within` is pending")?;
    let p: PendingConfirm = serde_json::from_str(&text)?;
    if observe::now_unix() >= p.deadline_unix {
        bail!("too late: the deadline passed and the agent went (or is going) back to dry-run; enforce again");
    }
    std::fs::remove_file(&path).with_context(|| format!("failed to remove {}", path.display()))?;
    println!("confirmed: enforcing");
    Ok(())
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

/// Config with CLI overrides, compiled for this host's ephemeral range.
fn compiled(config: Option<&Path>, ifaces: &[String]) -> anyhow::Result<(Config, RuleSet)> {
    let cfg = run::prepare(config, ifaces, false, None)?;
    let interfaces = cfg.site.interfaces.clone().unwrap_or_else(|| HostFacts::typical().interfaces);
    let host = HostFacts { ephemeral: load::ephemeral_range(), interfaces };
    let set = compile(&cfg, &host).context("failed to compile the policy")?;
    Ok((cfg, set))
}

fn export(format: ExportFormat, config: Option<&Path>, ifaces: &[String], output: Option<&Path>) -> anyhow::Result<()> {
    let (cfg, set) = compiled(config, ifaces)?;
    let meta = ExportMeta { product: cfg.matrix.product.clone(), policy: cfg.matrix.origin.clone() };
    let text = match format {
        ExportFormat::Nftables => export::nftables(&set, &meta)?,
        ExportFormat::Iptables => export::iptables(&set, &meta, false)?,
        ExportFormat::Ip6tables => export::iptables(&set, &meta, true)?,
        ExportFormat::Firewalld => {
            let files = export::firewalld(&set, &meta)?;
            match output {
                Some(dir) => {
                    for f in &files {
                        let p = dir.join(&f.path);
                        if let Some(parent) = p.parent() {
                            std::fs::create_dir_all(parent)
                                .with_context(|| format!("failed to create `{}`", parent.display()))?;
                        }
                        std::fs::write(&p, &f.content).with_context(|| format!("failed to write `{}`", p.display()))?;
                    }
                    log::info!(
                        "wrote {} files under {}; install: cp services/*.xml /etc/firewalld/services/ && cp zones/*.xml /etc/firewalld/zones/ && firewall-cmd --reload",
                        files.len(),
                        dir.display()
                    );
                }
                None => {
                    for f in &files {
                        println!("==> {} <==\n{}", f.path, f.content);
                    }
                }
            }
            return Ok(());
        }
    };
    for w in &set.warnings {
        log::warn!("{w}");
    }
    write_output(output, &text)
}

fn check(config: Option<&Path>, ifaces: &[String], json: bool) -> anyhow::Result<()> {
    let (cfg, set) = compiled(config, ifaces)?;
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
            "warnings": cfg.site.warnings.iter().chain(&set.warnings).collect::<Vec<_>>(),
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
        let mut scope = r.interfaces.as_ref().map_or("all".to_string(), |i| i.join(","));
        if let Some(sys) = &r.system {
            scope = format!("{scope}; from {sys}");
        }
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
    for w in cfg.site.warnings.iter().chain(&set.warnings) {
        println!("warning: {w}");
    }
    println!();
    println!("{} rules, {} port entries, fingerprint {}", set.rules.len(), set.ports.len(), set.fingerprint());
    Ok(())
}

fn read_input(path: &Path) -> anyhow::Result<String> {
    if path == Path::new("-") {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).context("failed to read stdin")?;
        return Ok(s);
    }
    let bytes = std::fs::read(path).with_context(|| format!("failed to read `{}`", path.display()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn write_output(output: Option<&Path>, text: &str) -> anyhow::Result<()> {
    match output {
        Some(p) => std::fs::write(p, text).with_context(|| format!("failed to write `{}`", p.display())),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

fn matrix_import(
    file: &Path,
    opts: ImportOptions,
    output: Option<&Path>,
    format: ImportFormat,
    allow_partial: bool,
) -> anyhow::Result<()> {
    let text = read_input(file)?;
    let imp = import(&text, &file.display().to_string(), &opts)?;
    for n in &imp.notes {
        log::info!("{n}");
    }
    if !imp.complete() {
        eprint!("{}", imp.problem_report());
        if !allow_partial {
            bail!(
                "{} of {} rows of `{}` could not be read (listed above); fix the text, or pass --allow-partial to write the {} that could",
                imp.problems.len(),
                imp.problems.len() + imp.rows.len(),
                file.display(),
                imp.rows.len()
            );
        }
        log::warn!("--allow-partial: {} rows left out (listed above)", imp.problems.len());
    }
    let out = match format {
        ImportFormat::Toml => imp.to_toml(),
        ImportFormat::Json => format!("{}\n", serde_json::to_string_pretty(&imp.to_json())?),
    };
    write_output(output, &out)?;
    log::info!(
        "{}: {} rows from {} table(s), host system `{}`",
        imp.product,
        imp.rows.len(),
        imp.tables.iter().filter(|t| t.kind == ps_agent::import::TableKind::Ports).count(),
        imp.host_system
    );
    Ok(())
}

/// A policy file, or a matrix document (imported; every row must be readable).
fn load_matrix(path: &Path) -> anyhow::Result<Matrix> {
    let text = read_input(path)?;
    let name = path.display().to_string();
    if path.extension().is_some_and(|e| e == "toml") || toml::from_str::<toml::Table>(&text).is_ok() {
        return Ok(Matrix::parse(&text, &name)?);
    }
    let imp = import(&text, &name, &ImportOptions::default())?;
    if !imp.complete() {
        eprint!("{}", imp.problem_report());
        bail!(
            "{} rows of `{name}` could not be read (listed above); import it, fix it, and diff the policy file",
            imp.problems.len()
        );
    }
    Ok(Matrix::parse(&imp.to_toml(), &name)?)
}
