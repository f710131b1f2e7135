//! The command line's definition: every subcommand and flag (clap derive). `cli::run`
//! dispatches them; the man pages and the README check read them from here.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};
use ps_agent::{
    observe::state::DEFAULT_STATE_DIR,
    ops::install,
    policy::{config::XdpModeName, explain::Proto},
};
use ps_common::names::PIN_DIR;

/// Enforce an Avaya port matrix on this host with XDP.
#[derive(Parser, Debug)]
#[command(version = ps_agent::build_info::LONG_VERSION, about)]
pub struct Cli {
    /// Where `run` pins its maps (and `stats` finds them).
    #[arg(long, global = true, default_value = PIN_DIR, env = "PS_AGENT_PIN_DIR")]
    pub pin_dir: PathBuf,
    /// Where `run` writes its state file (and `stats` reads it).
    #[arg(long, global = true, default_value = DEFAULT_STATE_DIR, env = "PS_AGENT_STATE_DIR")]
    pub state_dir: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Load, attach and enforce until SIGINT/SIGTERM, then detach.
    Run(RunArgs),
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
        /// JSON output: what was done and whether anything changed.
        #[arg(long)]
        json: bool,
    },
    /// Switch the running agent to enforce. With --confirm-within it goes back to dry-run
    /// unless `ps-agent confirm` arrives in time (so a lock-out undoes itself).
    Enforce {
        /// E.g. 300s, 5m.
        #[arg(long, value_parser = parse_duration)]
        confirm_within: Option<Duration>,
        /// JSON output: what was done and whether anything changed.
        #[arg(long)]
        json: bool,
    },
    /// Confirm a pending `enforce --confirm-within` (nothing to do if already enforcing).
    Confirm {
        /// JSON output: what was done and whether anything changed.
        #[arg(long)]
        json: bool,
    },
    /// Switch the running agent to dry-run (and cancel a pending confirm).
    DryRun {
        /// JSON output: what was done and whether anything changed.
        #[arg(long)]
        json: bool,
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
    /// Check this host before loading anything; exit 0 all pass, 3 warnings only, 1 a failure.
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
        /// JSON output: what was done and whether anything changed.
        #[arg(long)]
        json: bool,
    },
    /// Stop and remove the service, binary, unit, pins and state (the config stays).
    Uninstall {
        #[command(flatten)]
        layout: LayoutArgs,
        /// Also remove the config directory.
        #[arg(long)]
        purge: bool,
        /// JSON output: what was done and whether anything changed.
        #[arg(long)]
        json: bool,
    },
    /// Remove what a (crashed) agent left: pins under --pin-dir and the state file.
    Unload {
        /// Even if the agent in the state file is still running.
        #[arg(long)]
        force: bool,
        /// JSON output: what was done and whether anything changed.
        #[arg(long)]
        json: bool,
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
    /// The verdict the compiled policy gives a packet (or every frame of a capture), with the
    /// rule and matrix rows or the drop reason — computed by the kernel's own classifier.
    Explain(ExplainArgs),
    /// Port-matrix documents and policy files: import, diff.
    Matrix {
        #[command(subcommand)]
        command: MatrixCommand,
    },
    /// Shell completions on stdout (the packages install them).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: super::generate::Shell,
    },
    /// Write the man pages, completions and default config the packages ship, under DIR
    /// (`ps-agent generate --out packaging` in the source tree).
    #[command(hide = true)]
    Generate {
        /// The packaging directory.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum MatrixCommand {
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
pub enum ExportFormat {
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
pub enum ImportFormat {
    Toml,
    Json,
}

/// Paths of `install` / `uninstall`.
#[derive(clap::Args, Debug)]
pub struct LayoutArgs {
    /// Staging root prefixed to every path (packaging, tests).
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// The binary goes to PREFIX/sbin/ps-agent.
    #[arg(long, default_value = "/usr/local")]
    pub prefix: PathBuf,
    /// Where config.toml lives.
    #[arg(long, default_value = "/etc/ps-agent")]
    pub config_dir: PathBuf,
    /// Where the systemd unit goes.
    #[arg(long, default_value = "/etc/systemd/system")]
    pub unit_dir: PathBuf,
}

impl LayoutArgs {
    /// The paths as `install` takes them.
    pub fn layout(self) -> install::Layout {
        install::Layout { root: self.root, prefix: self.prefix, config_dir: self.config_dir, unit_dir: self.unit_dir }
    }
}

/// `ps-agent run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Site config (default: /etc/ps-agent/config.toml if present, else the shipped
    /// PS 8.1.2 matrix with its defaults).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Interface to enforce on (repeat; default: eth0 and eth1 where present).
    #[arg(long = "iface", short = 'i')]
    pub ifaces: Vec<String>,
    /// Pass everything; count and log what would be dropped.
    #[arg(long)]
    pub dry_run: bool,
    /// XDP attach mode (native falls back to skb where the driver has no XDP).
    #[arg(long, value_enum)]
    pub xdp_mode: Option<XdpModeName>,
    /// Replace XDP programs other tools attached through netlink (a bpf_link cannot be).
    #[arg(long)]
    pub force: bool,
    /// Serve OpenMetrics on GET /metrics; alone: 127.0.0.1:9487 (give an address to
    /// listen elsewhere).
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = ps_agent::observe::metrics::DEFAULT_ADDR)]
    pub metrics: Option<std::net::SocketAddr>,
    /// TLS and basic auth of the metrics endpoint: a web config in the exporter-toolkit
    /// format (overrides the site config's `metrics_web_config`; docs/metrics.md).
    #[arg(long, value_name = "FILE")]
    pub metrics_web_config: Option<PathBuf>,
}

/// `ps-agent explain`.
#[derive(clap::Args, Debug)]
pub struct ExplainArgs {
    /// Transport.
    #[arg(long, value_enum, required_unless_present = "pcap")]
    pub proto: Option<Proto>,
    /// Destination port (TCP/UDP).
    #[arg(long, required_if_eq_any = [("proto", "tcp"), ("proto", "udp")])]
    pub dport: Option<u16>,
    /// Source port.
    #[arg(long, default_value_t = 50000)]
    pub sport: u16,
    /// ICMP/ICMPv6 type (with --proto icmp).
    #[arg(long, default_value_t = 8)]
    pub icmp_type: u8,
    /// Source address (IPv6 makes an IPv6 packet).
    #[arg(long, default_value = "192.0.2.10")]
    pub src: IpAddr,
    /// Destination address.
    #[arg(long)]
    pub dst: Option<IpAddr>,
    /// Arrival interface (default: the first enforced interface).
    #[arg(long)]
    pub iface: Option<String>,
    /// TCP flags, e.g. S, SA, A, FA (default S).
    #[arg(long)]
    pub flags: Option<String>,
    /// Site config.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Replay a pcap or pcapng capture (Ethernet, raw IP, Linux cooked v1/v2) and summarize
    /// per flow; frames the capture marks as sent by this host are skipped.
    #[arg(long, conflicts_with_all = ["proto", "dport"])]
    pub pcap: Option<PathBuf>,
    /// This host's own address: its frames in a two-way capture without direction
    /// (Ethernet) are skipped (repeat).
    #[arg(long)]
    pub local: Vec<IpAddr>,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// `300`, `300s`, `5m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().map_err(|_| format!("`{s}`: expected a number of seconds, e.g. 300s or 5m"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("`{s}`: unit must be s, m or h")),
    };
    if n == 0 {
        return Err("the duration must be positive".into());
    }
    // The deadline is a wall-clock time: now plus this must fit a time_t.
    let fits = n
        .checked_mul(scale)
        .filter(|secs| ps_agent::clock::unix_now().checked_add(*secs).is_some_and(|d| d <= i64::MAX as u64));
    fits.map(Duration::from_secs).ok_or_else(|| format!("`{s}` is too long: the deadline would not fit the clock"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_the_clock_cannot_hold_are_refused() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("18446744073709551615s").unwrap_err().contains("too long"));
        assert!(parse_duration("307445734561825861m").unwrap_err().contains("too long"));
        assert!(parse_duration("0s").is_err());
    }
}
