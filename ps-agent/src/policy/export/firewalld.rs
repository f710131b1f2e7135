//! firewalld: one service per inbound rule (and per reply rule with an explicit local
//! port), one zone per enforced interface with `target="DROP"` listing the services that
//! apply there. firewalld has no output filtering in a zone, so this export is inbound only.

use std::fmt::Write as _;

use super::{ExportError, ExportFile, ExportMeta, allows_ping, check_ifaces, merged};
use crate::policy::compile::{CompiledRule, RuleKind, RuleSet};

/// The ICMP types a zone accepts (`icmp-block-inversion`), besides echo request.
const ICMP_ACCEPTED: [&str; 9] = [
    "destination-unreachable",
    "packet-too-big",
    "time-exceeded",
    "parameter-problem",
    "echo-reply",
    "neighbour-solicitation",
    "neighbour-advertisement",
    "router-solicitation",
    "router-advertisement",
];

/// firewalld's files. Install: `services/*.xml` into `/etc/firewalld/services/`,
/// `zones/*.xml` into `/etc/firewalld/zones/`, then `firewall-cmd --reload`.
///
/// # Errors
/// An interface name firewalld cannot take.
pub fn firewalld(set: &RuleSet, meta: &ExportMeta) -> Result<Vec<ExportFile>, ExportError> {
    check_ifaces(set)?;
    let served: Vec<&CompiledRule> = set
        .rules
        .iter()
        .filter(|r| r.kind == RuleKind::Inbound || r.local.is_some_and(|l| l.explicit.is_some()))
        .collect();
    let mut files = services(&served, meta);
    for iface in &set.interfaces {
        files.push(zone(set, &served, meta, iface));
    }
    Ok(files)
}

/// One service file per service name (the tcp and udp rules of one row share one).
fn services(served: &[&CompiledRule], meta: &ExportMeta) -> Vec<ExportFile> {
    let mut files = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for r in served {
        let name = firewalld_service_name(r);
        if names.contains(&name) {
            continue;
        }
        names.push(name.clone());
        let mut xml = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<service>\n");
        let _ = writeln!(xml, "  <short>{}</short>", xml_escape(&r.id));
        let _ = writeln!(
            xml,
            "  <description>{} (ps-agent export of {}, rows {})</description>",
            xml_escape(&r.description),
            xml_escape(&meta.product),
            xml_escape(&r.rows.join(", "))
        );
        for same in served.iter().filter(|o| firewalld_service_name(o) == name) {
            let ports = match (same.kind, same.local.and_then(|l| l.explicit)) {
                (RuleKind::Reply, Some(local)) => vec![local],
                _ => merged(&same.ports),
            };
            for (a, b) in ports {
                let p = if a == b { a.to_string() } else { format!("{a}-{b}") };
                let _ = writeln!(xml, "  <port protocol=\"{}\" port=\"{p}\"/>", same.transport);
            }
        }
        xml.push_str("</service>\n");
        files.push(ExportFile { path: format!("services/{name}.xml"), content: xml });
    }
    files
}

/// The zone of `iface`: its services (a bound system's only for its addresses) and ICMP.
fn zone(set: &RuleSet, served: &[&CompiledRule], meta: &ExportMeta, iface: &str) -> ExportFile {
    let zone = firewalld_zone_name(iface);
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<zone target=\"DROP\">\n");
    let _ = writeln!(xml, "  <short>{zone}</short>");
    let _ = writeln!(
        xml,
        "  <description>ps-agent export of {} ({}) for interface {}</description>",
        xml_escape(&meta.product),
        xml_escape(&meta.policy),
        xml_escape(iface)
    );
    let _ = writeln!(xml, "  <interface name=\"{}\"/>", xml_escape(iface));
    let mut listed: Vec<String> = Vec::new();
    for r in served {
        let name = firewalld_service_name(r);
        if !r.interfaces.as_ref().is_none_or(|l| l.iter().any(|i| i == iface)) || listed.contains(&name) {
            continue;
        }
        if r.system_mask == 0 {
            let _ = writeln!(xml, "  <service name=\"{name}\"/>");
        }
        for c in set.prefixes_of(r) {
            let fam = if c.family == 4 { "ipv4" } else { "ipv6" };
            let _ = writeln!(
                xml,
                "  <rule family=\"{fam}\"><source address=\"{c}\"/><service name=\"{name}\"/><accept/></rule>"
            );
        }
        listed.push(name);
    }
    // With icmp-block-inversion the listed types are the ones accepted.
    xml.push_str("  <icmp-block-inversion/>\n");
    for t in ICMP_ACCEPTED.into_iter().chain(allows_ping(set).then_some("echo-request")) {
        let _ = writeln!(xml, "  <icmp-block name=\"{t}\"/>");
    }
    xml.push_str("</zone>\n");
    ExportFile { path: format!("zones/{zone}.xml"), content: xml }
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// firewalld service name of a rule: `ps-agent-ps-01_ps-02`.
pub fn firewalld_service_name(r: &CompiledRule) -> String {
    let id: String = r.id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    format!("ps-agent-{id}")
}

/// firewalld zone name of an interface: `ps-eth0` (zone names are at most 17 characters).
pub fn firewalld_zone_name(iface: &str) -> String {
    let z = format!("ps-{iface}");
    z.chars().take(17).map(|c| if c == ':' { '_' } else { c }).collect()
}
