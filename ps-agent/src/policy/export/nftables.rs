//! One `table inet ps_agent` for `nft -f`: an input chain with the inbound rules (and the
//! stateless input side of replies with an explicit local port), an output chain with the
//! outbound rows.

use std::fmt::Write as _;

use super::{ExportError, ICMP4_PASS, ICMP6_PASS, allows_ping, check_ifaces, comment, header, merged};
use crate::policy::compile::{CompiledRule, RuleKind, RuleSet};

/// The `nft -f` file: it replaces `table inet ps_agent` and touches nothing else.
///
/// # Errors
/// An interface name nftables cannot take.
pub fn nftables(set: &RuleSet, meta: &super::ExportMeta) -> Result<String, ExportError> {
    check_ifaces(set)?;
    let mut out = String::from("#!/usr/sbin/nft -f\n");
    header(&mut out, "nftables", set, meta, "#");
    out.push_str("# Load: nft -f FILE (replaces table inet ps_agent, touches nothing else).\n\n");
    out.push_str("table inet ps_agent\ndelete table inet ps_agent\n\ntable inet ps_agent {\n");
    input_chain(&mut out, set);
    output_chain(&mut out, set);
    out.push_str("}\n");
    Ok(out)
}

fn input_chain(out: &mut String, set: &RuleSet) {
    out.push_str("\tchain input {\n\t\ttype filter hook input priority filter; policy drop;\n");
    out.push_str("\t\tiifname \"lo\" accept comment \"loopback\"\n");
    out.push_str(
        "\t\tct state established,related accept comment \"replies to admitted connections (outbound rows, failsafe)\"\n",
    );
    let echo = allows_ping(set);
    let mut v4: Vec<String> = ICMP4_PASS.iter().map(u8::to_string).collect();
    let mut v6: Vec<String> = ICMP6_PASS.iter().map(u8::to_string).collect();
    if echo {
        v4.push("8".into());
        v6.push("128".into());
    }
    let ping = if echo { ", echo request (allow_ping)" } else { "" };
    let _ = writeln!(out, "\t\ticmp type {{ {} }} accept comment \"ICMP errors, echo reply{ping}\"", v4.join(", "));
    let _ = writeln!(
        out,
        "\t\ticmpv6 type {{ {} }} accept comment \"ICMPv6 errors, echo reply, neighbour discovery, MLD{ping}\"",
        v6.join(", ")
    );
    for r in set.rules.iter().filter(|r| r.kind == RuleKind::Inbound) {
        for addrs in addrs(set, r, "saddr") {
            let (ifs, t) = (ifaces("iifname", &r.interfaces), r.transport);
            let _ =
                writeln!(out, "\t\t{ifs}{addrs}{t} dport {} accept comment \"{}\"", ports(&r.ports), comment(r, 120));
        }
    }
    for r in set.rules.iter().filter(|r| r.kind == RuleKind::Reply) {
        let Some((a, b)) = r.local.and_then(|l| l.explicit) else { continue };
        for addrs in addrs(set, r, "saddr") {
            let (ifs, t) = (ifaces("iifname", &r.interfaces), r.transport);
            let _ = writeln!(
                out,
                "\t\t{ifs}{addrs}{t} sport {} {t} dport {} accept comment \"{}\"",
                ports(&r.ports),
                ports(&[(a, b)]),
                comment(r, 120)
            );
        }
    }
    out.push_str("\t}\n\n");
}

fn output_chain(out: &mut String, set: &RuleSet) {
    out.push_str("\tchain output {\n\t\ttype filter hook output priority filter; policy drop;\n");
    out.push_str("\t\toifname \"lo\" accept comment \"loopback\"\n");
    out.push_str("\t\tct state established,related accept comment \"replies of admitted inbound connections\"\n");
    out.push_str(
        "\t\tmeta l4proto { icmp, ipv6-icmp } accept comment \"ICMP out: echo, errors, neighbour discovery\"\n",
    );
    for r in set.rules.iter().filter(|r| r.kind == RuleKind::Reply) {
        for addrs in addrs(set, r, "daddr") {
            let (ifs, t) = (ifaces("oifname", &r.interfaces), r.transport);
            let _ =
                writeln!(out, "\t\t{ifs}{addrs}{t} dport {} accept comment \"{}\"", ports(&r.ports), comment(r, 120));
        }
    }
    out.push_str("\t}\n");
}

fn ports(ranges: &[(u16, u16)]) -> String {
    let parts: Vec<String> =
        merged(ranges).iter().map(|&(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect();
    if parts.len() == 1 { parts[0].clone() } else { format!("{{ {} }}", parts.join(", ")) }
}

fn ifaces(kw: &str, ifaces: &Option<Vec<String>>) -> String {
    match ifaces {
        None => String::new(),
        Some(list) if list.len() == 1 => format!("{kw} \"{}\" ", list[0]),
        Some(list) => {
            format!("{kw} {{ {} }} ", list.iter().map(|i| format!("\"{i}\"")).collect::<Vec<_>>().join(", "))
        }
    }
}

/// The address matches a rule needs: `[""]` for an unbound rule (any address), else one
/// `ip saddr { .. } ` / `ip6 saddr { .. } ` per family that has prefixes (`dir`: saddr or
/// daddr).
fn addrs(set: &RuleSet, r: &CompiledRule, dir: &str) -> Vec<String> {
    if r.system_mask == 0 {
        return vec![String::new()];
    }
    let p = set.prefixes_of(r);
    let mut out = Vec::new();
    for (fam, kw) in [(4u8, "ip"), (6, "ip6")] {
        let list: Vec<String> = p.iter().filter(|c| c.family == fam).map(|c| c.to_string()).collect();
        if !list.is_empty() {
            out.push(format!("{kw} {dir} {{ {} }} ", list.join(", ")));
        }
    }
    out
}
