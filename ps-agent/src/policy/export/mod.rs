//! Export: the compiled rule set as nftables, iptables-restore or firewalld files, for
//! hosts without XDP (Breeze 3.x and PS 8.1.x run on RHEL 7, kernel 3.10).
//!
//! Pure rendering of a [`RuleSet`]: the same rows, merges, interfaces and failsafe as the
//! XDP program enforces, translated to a stateful firewall:
//!
//! - **inbound** rules accept their protocol and destination ports (management-only rows
//!   with `iifname`/`-i`);
//! - **outbound** rows (the XDP program's stateless *reply* rules) become rules of the
//!   **output** chain that let this host open connections to the row's remote ports;
//!   their replies come back as conntrack `established,related`, which replaces the
//!   stateless ACK/ephemeral check. New connections to any other remote port are refused
//!   locally (`connect()` fails with EPERM) instead of having their replies dropped;
//! - reply rules with an explicit local port (DHCP 67→68, DHCPv6 547→546, NTP 123→123)
//!   also get a stateless input rule, as broadcasts and symmetric NTP are not tracked;
//! - ICMP errors, echo replies, neighbour discovery and MLD are accepted, echo requests
//!   only with `allow_ping`; ARP is not filtered by these tables at all;
//! - loopback is accepted; everything else on **every** interface is dropped (the XDP
//!   program filters only the interfaces it is attached to).
//!
//! firewalld has no output filtering in a zone: its export is inbound only (replies are
//! admitted by firewalld's own `established,related` rule).
//!
//! One file per format: [`nftables`], [`iptables`], [`firewalld`]; what they share is here.

use std::fmt::Write as _;

use crate::policy::compile::{CompiledRule, RuleSet};

mod firewalld;
mod iptables;
mod nftables;

pub use firewalld::{firewalld, firewalld_service_name, firewalld_zone_name};
pub use iptables::iptables;
pub use nftables::nftables;

/// An export error.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// An interface name the target firewall cannot take.
    #[error("interface name `{name}` cannot be exported: names are 1-15 characters of A-Z a-z 0-9 . _ - :")]
    BadInterface {
        /// The name.
        name: String,
    },
}

/// What the export says about where it comes from.
#[derive(Clone, Debug)]
pub struct ExportMeta {
    /// Product of the policy.
    pub product: String,
    /// Where the policy was read from.
    pub policy: String,
}

/// One output file (firewalld writes several).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportFile {
    /// Path relative to the output directory (`zones/ps-eth0.xml`).
    pub path: String,
    /// Contents.
    pub content: String,
}

/// ICMPv4 types always accepted (errors PMTU discovery needs) and echo reply.
pub(super) const ICMP4_PASS: [u8; 4] = [0, 3, 11, 12];
/// ICMPv6: errors, echo reply, MLD and neighbour discovery.
pub(super) const ICMP6_PASS: [u8; 13] = [1, 2, 3, 4, 129, 130, 131, 132, 133, 134, 135, 136, 143];

fn check_iface(name: &str) -> Result<(), ExportError> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'));
    if ok { Ok(()) } else { Err(ExportError::BadInterface { name: name.to_string() }) }
}

pub(super) fn check_ifaces(set: &RuleSet) -> Result<(), ExportError> {
    for r in &set.rules {
        for i in r.interfaces.iter().flatten() {
            check_iface(i)?;
        }
    }
    set.interfaces.iter().try_for_each(|i| check_iface(i))
}

/// Sorted, overlapping ranges merged (nft rejects overlapping set elements).
pub(super) fn merged(ranges: &[(u16, u16)]) -> Vec<(u16, u16)> {
    let mut v = ranges.to_vec();
    v.sort();
    let mut out: Vec<(u16, u16)> = Vec::new();
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// A comment: printable ASCII-safe, no double quotes, at most `max` bytes.
pub(super) fn comment(r: &CompiledRule, max: usize) -> String {
    let text = format!("{}: {}", r.id, r.description);
    let mut s: String = text
        .chars()
        .map(|c| {
            if c == '"' || c == '\\' {
                '\''
            } else if c.is_control() {
                ' '
            } else {
                c
            }
        })
        .collect();
    if s.len() > max {
        let mut cut = max - 3;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

pub(super) fn header(out: &mut String, what: &str, set: &RuleSet, meta: &ExportMeta, prefix: &str) {
    let _ = writeln!(out, "{prefix} ps-agent export ({what}): {} ({})", meta.product, meta.policy);
    let _ = writeln!(
        out,
        "{prefix} {} compiled rules, fingerprint {}; ICMP echo requests {}.",
        set.rules.len(),
        set.fingerprint(),
        if set.policy.flags & ps_common::layout::POLICY_ALLOW_ECHO != 0 { "accepted" } else { "dropped" }
    );
    let _ = writeln!(
        out,
        "{prefix} Inbound rows accept their ports; outbound rows may open connections to their remote ports\n\
         {prefix} (output chain) and their replies return as conntrack established,related."
    );
}

/// Whether the policy lets echo requests (ping) in.
pub(super) fn allows_ping(set: &RuleSet) -> bool {
    set.policy.flags & ps_common::layout::POLICY_ALLOW_ECHO != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{
        compile::{HostFacts, RuleKind, compile},
        config::Config,
    };

    fn shipped() -> (RuleSet, ExportMeta) {
        let cfg = Config::shipped();
        let set = compile(&cfg, &HostFacts::typical()).unwrap();
        (set, ExportMeta { product: cfg.matrix.product.clone(), policy: cfg.matrix.origin.clone() })
    }

    #[test]
    fn nftables_rules() {
        let (set, meta) = shipped();
        let nft = nftables(&set, &meta).unwrap();
        for line in [
            "\t\ttype filter hook input priority filter; policy drop;",
            "\t\ttcp dport 443 accept comment \"ps-01+ps-02: Multimedia Messaging service for clients | Messaging incoming from Zang.io\"",
            "\t\tiifname \"eth0\" tcp dport 7001-7199 accept comment \"ps-14+ps-21: Gigaspaces communication bound to management IP\"",
            "\t\ttcp dport 22 accept comment \"failsafe-ssh: SSH to this host (lock-out failsafe)\"",
            "\t\tudp sport 67 udp dport 68 accept comment \"failsafe-dhcp: DHCPv4 server replies (lock-out failsafe)\"",
            "\t\ttcp dport 5062 accept comment \"ps-04: SIP connection to SM\"",
            "\t\ttcp dport { 389, 636, 3268, 3269 } accept comment \"ps-26: LDAP port for the Enterprise, depending on their configuration (e.g. 389 is default unsecure, 636 secure, 3268...\"",
            "\t\toifname \"eth0\" tcp dport 2809 accept comment \"ps-19: Operational metrics collection bound to management IP\"",
            "\t\ticmp type { 0, 3, 11, 12 } accept comment \"ICMP errors, echo reply\"",
        ] {
            assert!(nft.lines().any(|l| l == line), "missing {line:?} in\n{nft}");
        }
        assert!(!nft.contains("5063"), "optional closed rows are not exported");
        // Every compiled rule is named in a comment.
        for r in &set.rules {
            assert!(nft.contains(&format!("comment \"{}:", r.id)), "{}", r.id);
        }
        let mut cfg = Config::shipped();
        cfg.site.allow_ping = true;
        let set = compile(&cfg, &HostFacts::typical()).unwrap();
        assert!(nftables(&set, &meta).unwrap().contains("icmp type { 0, 3, 11, 12, 8 } accept"));
    }

    #[test]
    fn iptables_rules() {
        let (set, meta) = shipped();
        let v4 = iptables(&set, &meta, false).unwrap();
        assert!(v4.starts_with("# ps-agent export (iptables-restore, IPv4)"));
        assert!(v4.contains("\n*filter\n:INPUT DROP [0:0]\n"));
        assert!(v4.ends_with("COMMIT\n"));
        assert!(v4.contains("-A INPUT -i eth0 -p tcp -m tcp --dport 7001:7199 -m comment --comment \"ps-14+ps-21:"));
        assert!(!v4.contains("--dport 1050"), "ps-18 is closed by default");
        assert!(v4.contains("-A OUTPUT -p tcp -m tcp --dport 3268 -m comment --comment \"ps-26:"));
        assert!(v4.contains("-A INPUT -p icmp -m icmp --icmp-type 3 -j ACCEPT"));
        let v6 = iptables(&set, &meta, true).unwrap();
        assert!(v6.contains("-A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 135 -j ACCEPT"));
        assert!(!v6.contains("icmp-type"));
    }

    /// Minimal XML well-formedness: declaration, balanced tags, quoted attributes, entities.
    fn well_formed(xml: &str) -> Result<(), String> {
        let body = xml.strip_prefix("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n").ok_or("no declaration")?;
        let mut stack: Vec<String> = Vec::new();
        let mut rest = body;
        let mut roots = 0;
        while let Some(i) = rest.find(['<', '&']) {
            let text = &rest[..i];
            if text.contains('>') {
                return Err(format!("stray > in {text:?}"));
            }
            rest = &rest[i..];
            if rest.starts_with('&') {
                let end = rest.find(';').ok_or("unterminated entity")?;
                if !["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].contains(&&rest[..=end]) {
                    return Err(format!("bad entity {}", &rest[..=end]));
                }
                rest = &rest[end + 1..];
                continue;
            }
            let end = rest.find('>').ok_or("unterminated tag")?;
            let tag = &rest[1..end];
            rest = &rest[end + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                if stack.pop().as_deref() != Some(name) {
                    return Err(format!("unbalanced </{name}>"));
                }
                continue;
            }
            let self_closing = tag.ends_with('/');
            let tag = tag.trim_end_matches('/');
            let name = tag.split_whitespace().next().ok_or("empty tag")?;
            let attrs = tag[name.len()..].trim();
            if attrs.matches('"').count() % 2 != 0 || attrs.contains('<') {
                return Err(format!("bad attributes in <{tag}>"));
            }
            if stack.is_empty() {
                roots += 1;
            }
            if !self_closing {
                stack.push(name.to_string());
            }
        }
        if !stack.is_empty() || roots != 1 || !rest.trim().is_empty() {
            return Err(format!("unclosed {stack:?} or {roots} roots"));
        }
        Ok(())
    }

    #[test]
    fn firewalld_files_are_well_formed_and_cover_every_port() {
        let (set, meta) = shipped();
        let files = firewalld(&set, &meta).unwrap();
        for f in &files {
            well_formed(&f.content).unwrap_or_else(|e| panic!("{}: {e}\n{}", f.path, f.content));
        }
        assert!(well_formed("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<a><b></a></b>\n").is_err());
        let all: String = files.iter().map(|f| f.content.as_str()).collect();
        for r in set.rules.iter().filter(|r| r.kind == RuleKind::Inbound) {
            for (a, b) in merged(&r.ports) {
                let p = if a == b { a.to_string() } else { format!("{a}-{b}") };
                assert!(all.contains(&format!("<port protocol=\"{}\" port=\"{p}\"/>", r.transport.as_str())), "{p}");
            }
        }
        let eth0 = &files.iter().find(|f| f.path == "zones/ps-eth0.xml").unwrap().content;
        let eth1 = &files.iter().find(|f| f.path == "zones/ps-eth1.xml").unwrap().content;
        assert!(
            eth0.contains("<service name=\"ps-agent-ps-13_ps-20\"/>") && eth0.contains("<interface name=\"eth0\"/>")
        );
        assert!(!eth1.contains("ps-13_ps-20"), "management-only rows only in the management zone");
        assert!(eth1.contains("<service name=\"ps-agent-ps-01_ps-02\"/>"));
        assert!(files.iter().any(|f| f.path == "services/ps-agent-failsafe-dhcp.xml"
            && f.content.contains("<port protocol=\"udp\" port=\"68\"/>")));
        assert!(!eth0.contains("echo-request"));
    }

    #[test]
    fn bound_systems_restrict_addresses_in_every_format() {
        let mut cfg = Config::shipped();
        let c = |t: &str| crate::policy::config::Cidr::parse(t).unwrap();
        cfg.site.systems.insert("Session Manager".into(), vec![c("198.18.0.0/24"), c("198.18.0.2/32"), c("fd00::/64")]);
        let set = compile(&cfg, &HostFacts::typical()).unwrap();
        let meta = ExportMeta { product: "p".into(), policy: "x".into() };
        let nft = nftables(&set, &meta).unwrap();
        assert!(nft.contains("\t\tip saddr { 198.18.0.0/24 } tcp dport 5061 accept comment \"ps-05:"), "{nft}");
        assert!(nft.contains("\t\tip6 saddr { fd00::/64 } tcp dport 5061 accept"), "{nft}");
        assert!(nft.contains("\t\tip daddr { 198.18.0.0/24 } tcp dport 5062 accept comment \"ps-04:"), "{nft}");
        let v4 = iptables(&set, &meta, false).unwrap();
        assert!(v4.contains("-A INPUT -s 198.18.0.0/24 -p tcp -m tcp --dport 5061 "), "{v4}");
        assert!(v4.contains("-A OUTPUT -d 198.18.0.0/24 -p tcp -m tcp --dport 5062 "), "{v4}");
        let v6 = iptables(&set, &meta, true).unwrap();
        assert!(v6.contains("-A INPUT -s fd00::/64 -p tcp -m tcp --dport 5061 "), "{v6}");
        let fw = firewalld(&set, &meta).unwrap();
        let zone = &fw.iter().find(|f| f.path == "zones/ps-eth0.xml").unwrap().content;
        assert!(zone.contains("<rule family=\"ipv4\"><source address=\"198.18.0.0/24\"/><service name=\"ps-agent-ps-05\"/><accept/></rule>"), "{zone}");
    }

    #[test]
    fn bad_interface_names_are_refused() {
        let mut cfg = Config::shipped();
        cfg.site.management_interface = "eth0\"; flush".into();
        let host = HostFacts { ephemeral: (32768, 60999), interfaces: vec!["eth0\"; flush".into()] };
        let set = compile(&cfg, &host).unwrap();
        let meta = ExportMeta { product: "x".into(), policy: "y".into() };
        assert!(nftables(&set, &meta).unwrap_err().to_string().contains("cannot be exported"));
    }
}
