//! Commands on the policy alone (no running agent): `check`, `export`, `explain`,
//! `matrix import`, `matrix diff`.

use std::{fmt::Write as _, path::Path};

use anyhow::{Context as _, bail};
use ps_agent::{
    dataplane::host,
    policy::{
        capture::Capture,
        compile::{HostFacts, RuleSet, compile},
        config::{Config, Matrix, Overrides},
        diff,
        explain::{self, Proto},
        export::{self, ExportMeta},
        import::{ImportOptions, TableKind, import},
    },
};
use serde::Serialize;

use super::{
    Exit, Outcome,
    args::{ExplainArgs, ExportFormat, ImportFormat, MatrixCommand},
    output::{emit, read_input, write_output},
};

/// Config with the command line's interfaces, compiled for this host's ephemeral range.
fn compiled(config: Option<&Path>, ifaces: &[String]) -> anyhow::Result<(Config, RuleSet)> {
    let cfg = Config::load_with(config, &Overrides { ifaces: ifaces.to_vec(), ..Overrides::default() })?;
    let interfaces = cfg.site.interfaces.clone().unwrap_or_else(|| HostFacts::typical().interfaces);
    let host = HostFacts { ephemeral: host::ephemeral_range(), interfaces };
    let set = compile(&cfg, &host).context("failed to compile the policy")?;
    Ok((cfg, set))
}

/// What `check --json` prints.
#[derive(Serialize)]
struct CheckReport<'a> {
    product: &'a str,
    policy: &'a str,
    mode: &'a str,
    interfaces: &'a [String],
    management_interface: &'a str,
    ephemeral: [u16; 2],
    fingerprint: String,
    rules: &'a [ps_agent::policy::compile::CompiledRule],
    skipped: &'a [ps_agent::policy::compile::Skipped],
    warnings: Vec<&'a String>,
}

pub fn check(config: Option<&Path>, ifaces: &[String], json: bool) -> Outcome {
    let (cfg, set) = compiled(config, ifaces)?;
    let report = CheckReport {
        product: &cfg.matrix.product,
        policy: &cfg.matrix.origin,
        mode: cfg.site.mode.as_str(),
        interfaces: &set.interfaces,
        management_interface: &cfg.site.management_interface,
        ephemeral: [set.policy.ephemeral_lo, set.policy.ephemeral_hi],
        fingerprint: set.fingerprint(),
        rules: &set.rules,
        skipped: &set.skipped,
        warnings: cfg.site.warnings.iter().chain(&set.warnings).collect(),
    };
    emit(json, &report, || render_check(&cfg, &set))?;
    Ok(Exit::Success)
}

fn render_check(cfg: &Config, set: &RuleSet) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "policy:     {} ({})", cfg.matrix.product, cfg.matrix.origin);
    let _ = writeln!(o, "config:     {}", cfg.site.origin);
    let _ = writeln!(o, "mode:       {}", cfg.site.mode);
    let _ = writeln!(o, "interfaces: {} (management: {})", set.interfaces.join(", "), cfg.site.management_interface);
    let _ = writeln!(o, "ephemeral:  {}-{}", set.policy.ephemeral_lo, set.policy.ephemeral_hi);
    let _ = writeln!(o, "failsafe:   {}", if cfg.site.failsafe.enabled { "on" } else { "OFF" });
    let _ = writeln!(o, "replies:    {} (egress: {:?})", cfg.site.reply_tracking, cfg.site.egress);
    let _ = writeln!(o);
    let _ = writeln!(o, "{:<22} {:<5} {:<20} {:<8} {:<6} DESCRIPTION", "RULE", "PROTO", "PORTS", "DIR", "IFACE");
    for r in &set.rules {
        let mut scope = r.interfaces.as_ref().map_or("all".to_string(), |i| i.join(","));
        if let Some(sys) = &r.system {
            scope = format!("{scope}; from {sys}");
        }
        let _ = writeln!(
            o,
            "{:<22} {:<5} {:<20} {:<8} {:<6} {}",
            r.id, r.transport, r.ports_text, r.kind, scope, r.description
        );
    }
    if !set.skipped.is_empty() {
        let _ = writeln!(o, "\nnot enforced:");
        for s in &set.skipped {
            let _ = writeln!(o, "  {:<8} {}", s.row, s.why);
        }
    }
    for w in cfg.site.warnings.iter().chain(&set.warnings) {
        let _ = writeln!(o, "warning: {w}");
    }
    let _ = writeln!(o);
    let _ =
        writeln!(o, "{} rules, {} port entries, fingerprint {}", set.rules.len(), set.ports.len(), set.fingerprint());
    o
}

pub fn export(format: ExportFormat, config: Option<&Path>, ifaces: &[String], output: Option<&Path>) -> Outcome {
    let (cfg, set) = compiled(config, ifaces)?;
    let meta = ExportMeta { product: cfg.matrix.product.clone(), policy: cfg.matrix.origin.clone() };
    let text = match format {
        ExportFormat::Nftables => export::nftables(&set, &meta)?,
        ExportFormat::Iptables => export::iptables(&set, &meta, false)?,
        ExportFormat::Ip6tables => export::iptables(&set, &meta, true)?,
        ExportFormat::Firewalld => {
            write_firewalld(&export::firewalld(&set, &meta)?, output)?;
            return Ok(Exit::Success);
        }
    };
    for w in &set.warnings {
        log::warn!("{w}");
    }
    write_output(output, &text)?;
    Ok(Exit::Success)
}

/// firewalld's files: under `dir` (services/ and zones/), or all to stdout with headers.
fn write_firewalld(files: &[export::ExportFile], dir: Option<&Path>) -> anyhow::Result<()> {
    let Some(dir) = dir else {
        for f in files {
            println!("==> {} <==\n{}", f.path, f.content);
        }
        return Ok(());
    };
    for f in files {
        let p = dir.join(&f.path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("failed to create `{}`", parent.display()))?;
        }
        std::fs::write(&p, &f.content).with_context(|| format!("failed to write `{}`", p.display()))?;
    }
    log::info!(
        "wrote {} files under {}; install: cp services/*.xml /etc/firewalld/services/ && cp zones/*.xml /etc/firewalld/zones/ && firewall-cmd --reload",
        files.len(),
        dir.display()
    );
    Ok(())
}

pub fn explain(a: ExplainArgs) -> Outcome {
    let (cfg, set) = compiled(a.config.as_deref(), &[])?;
    let iface = a.iface.clone().unwrap_or_else(|| set.interfaces[0].clone());
    let slot = set.slot_of(&iface).ok_or_else(|| explain::ExplainError::UnknownInterface {
        iface: iface.clone(),
        enforced: set.interfaces.join(", "),
    })?;
    if let Some(path) = &a.pcap {
        let read = || format!("failed to read `{}`", path.display());
        let file = std::fs::File::open(path).with_context(read)?;
        let frames = Capture::new(file).with_context(read)?;
        let r = explain::replay(&set, cfg.site.mode, frames, slot, &a.local).with_context(read)?;
        emit(a.json, &r, || r.render())?;
        return Ok(Exit::Success);
    }
    let proto = a.proto.context("--proto is required")?;
    let flags = a.flags.as_deref().unwrap_or("S");
    let spec = explain::PacketSpec {
        proto,
        dport: if proto == Proto::Icmp { a.icmp_type as u16 } else { a.dport.context("--dport is required")? },
        sport: a.sport,
        src: a.src,
        dst: a.dst,
        flags: explain::parse_flags(flags)?,
    };
    let e = explain::explain_frame(&set, &cfg.matrix, cfg.site.mode, &explain::build_frame(&spec)?, slot);
    let what = match proto {
        Proto::Icmp => format!("icmp type {} from {} on {iface}", a.icmp_type, a.src),
        Proto::Tcp => format!("tcp {}:{} -> :{} flags {flags} on {iface}", a.src, a.sport, spec.dport),
        Proto::Udp => format!("udp {}:{} -> :{} on {iface}", a.src, a.sport, spec.dport),
    };
    emit(a.json, &e, || e.render(&what))?;
    Ok(Exit::Success)
}

pub fn matrix(command: MatrixCommand) -> Outcome {
    match command {
        MatrixCommand::Diff { old, new, json } => {
            let d = diff::diff(&load_matrix(&old)?, &load_matrix(&new)?);
            emit(json, &d, || d.render())?;
            Ok(Exit::Success)
        }
        MatrixCommand::Import { file, product, id_prefix, output, format, allow_partial } => {
            matrix_import(&file, ImportOptions { product, id_prefix }, output.as_deref(), format, allow_partial)
        }
    }
}

fn matrix_import(
    file: &Path,
    opts: ImportOptions,
    output: Option<&Path>,
    format: ImportFormat,
    allow_partial: bool,
) -> Outcome {
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
    let tables = imp.tables.iter().filter(|t| t.kind == TableKind::Ports).count();
    log::info!("{}: {} rows from {tables} table(s), host system `{}`", imp.product, imp.rows.len(), imp.host_system);
    Ok(Exit::Success)
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
