//! `iptables-restore` and `ip6tables-restore` files: the whole `filter` table, INPUT and
//! OUTPUT dropping by default, as `/etc/sysconfig/iptables` does on RHEL 7.

use std::fmt::Write as _;

use super::{ExportError, ExportMeta, ICMP4_PASS, ICMP6_PASS, allows_ping, check_ifaces, comment, header, merged};
use crate::policy::{
    compile::{CompiledRule, RuleKind, RuleSet},
    config::Transport,
};

/// An `iptables-restore` (`v6 = false`) or `ip6tables-restore` (`v6 = true`) file. It
/// replaces the whole `filter` table, as `/etc/sysconfig/iptables` does on RHEL 7.
///
/// # Errors
/// An interface name iptables cannot take.
pub fn iptables(set: &RuleSet, meta: &ExportMeta, v6: bool) -> Result<String, ExportError> {
    check_ifaces(set)?;
    let mut out = String::new();
    let (what, tool) = if v6 {
        ("ip6tables-restore, IPv6", "ip6tables-restore")
    } else {
        ("iptables-restore, IPv4", "iptables-restore")
    };
    header(&mut out, what, set, meta, "#");
    let _ = writeln!(out, "# Load: {tool} < FILE (replaces the filter table).\n");
    out.push_str("*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT DROP [0:0]\n");
    input_chain(&mut out, set, v6);
    output_chain(&mut out, set, v6);
    out.push_str("COMMIT\n");
    Ok(out)
}

fn input_chain(out: &mut String, set: &RuleSet, v6: bool) {
    out.push_str("-A INPUT -i lo -m comment --comment \"loopback\" -j ACCEPT\n");
    out.push_str("-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -m comment --comment \"replies to admitted connections (outbound rows, failsafe)\" -j ACCEPT\n");
    let echo = allows_ping(set);
    let (icmp, types): (&str, Vec<u8>) = if v6 {
        ("-p ipv6-icmp -m icmp6 --icmpv6-type", ICMP6_PASS.iter().copied().chain(echo.then_some(128)).collect())
    } else {
        ("-p icmp -m icmp --icmp-type", ICMP4_PASS.iter().copied().chain(echo.then_some(8)).collect())
    };
    for t in types {
        let _ = writeln!(out, "-A INPUT {icmp} {t} -j ACCEPT");
    }
    for r in set.rules.iter().filter(|r| r.kind == RuleKind::Inbound) {
        let Some(src) = addrs(set, r, "-s", v6) else { continue };
        for i in ifaces("-i", r) {
            for (a, b) in merged(&r.ports) {
                let (p, c) = (proto(r.transport), comment(r, 250));
                let _ =
                    writeln!(out, "-A INPUT {i}{src}{p} --dport {} -m comment --comment \"{c}\" -j ACCEPT", port(a, b));
            }
        }
    }
    for r in set.rules.iter().filter(|r| r.kind == RuleKind::Reply) {
        let Some((la, lb)) = r.local.and_then(|l| l.explicit) else { continue };
        let Some(src) = addrs(set, r, "-s", v6) else { continue };
        for i in ifaces("-i", r) {
            for (a, b) in merged(&r.ports) {
                let (p, c) = (proto(r.transport), comment(r, 250));
                let _ = writeln!(
                    out,
                    "-A INPUT {i}{src}{p} --sport {} --dport {} -m comment --comment \"{c}\" -j ACCEPT",
                    port(a, b),
                    port(la, lb)
                );
            }
        }
    }
}

fn output_chain(out: &mut String, set: &RuleSet, v6: bool) {
    out.push_str("-A OUTPUT -o lo -m comment --comment \"loopback\" -j ACCEPT\n");
    out.push_str("-A OUTPUT -m conntrack --ctstate ESTABLISHED,RELATED -m comment --comment \"replies of admitted inbound connections\" -j ACCEPT\n");
    let _ = writeln!(out, "-A OUTPUT -p {} -j ACCEPT", if v6 { "ipv6-icmp" } else { "icmp" });
    for r in set.rules.iter().filter(|r| r.kind == RuleKind::Reply) {
        let Some(dst) = addrs(set, r, "-d", v6) else { continue };
        for i in ifaces("-o", r) {
            for (a, b) in merged(&r.ports) {
                let (p, c) = (proto(r.transport), comment(r, 250));
                let _ = writeln!(
                    out,
                    "-A OUTPUT {i}{dst}{p} --dport {} -m comment --comment \"{c}\" -j ACCEPT",
                    port(a, b)
                );
            }
        }
    }
}

/// `-i IF ` per interface of the rule, or one empty match for all.
fn ifaces(flag: &str, r: &CompiledRule) -> Vec<String> {
    match &r.interfaces {
        None => vec![String::new()],
        Some(l) => l.iter().map(|i| format!("{flag} {i} ")).collect(),
    }
}

fn proto(t: Transport) -> String {
    format!("-p {0} -m {0}", t.as_str())
}

fn port(a: u16, b: u16) -> String {
    if a == b { a.to_string() } else { format!("{a}:{b}") }
}

/// `-s a,b ` / `-d a,b ` for the prefixes of a bound rule in one family; `Some("")` for an
/// unbound rule; `None` when the rule admits no address of this family.
fn addrs(set: &RuleSet, r: &CompiledRule, flag: &str, v6: bool) -> Option<String> {
    if r.system_mask == 0 {
        return Some(String::new());
    }
    let fam = if v6 { 6 } else { 4 };
    let list: Vec<String> = set.prefixes_of(r).iter().filter(|c| c.family == fam).map(|c| c.to_string()).collect();
    (!list.is_empty()).then(|| format!("{flag} {} ", list.join(",")))
}
