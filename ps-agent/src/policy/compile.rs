//! Compile: config → rule set. Pure and deterministic (the same config and host facts
//! always give the same tables, byte for byte); nothing here touches the kernel.
//!
//! How matrix rows become rules (for operators: docs/policy.md, "How the matrix is read"):
//! - a row whose destination is this host is an **inbound** rule on its destination port;
//! - a row whose source is this host is an **outbound** flow: a **reply** rule admits
//!   packets from the row's remote port to a local ephemeral port (TCP only with ACK);
//! - a row written from its reply side (`Zang 443 → PS Ephemeral`) is an outbound flow,
//!   and its mirror image (`PS 162 → NMS Ephemeral`) an inbound one;
//! - host → host rows (cluster peers) are both;
//! - rows bound to the management IP apply on the management interface only;
//! - optional rows that default to closed are off unless the site enables them.
//!
//! Rules with identical matches merge into one rule (and one counter) that lists its rows.

use std::collections::{BTreeMap, HashMap};

use ps_common::{
    MAX_CHAIN, MAX_IFACES,
    layout::{
        DEFAULT_RULES_CAP, ENTRY_EPHEMERAL, ENTRY_LAST, ENTRY_REPLY, L4, POLICY_ALLOW_ECHO, POLICY_EGRESS_ENFORCE,
        POLICY_SOURCE_SETS, POLICY_STATEFUL, Policy, PortEntry, RuleEntry,
    },
};
use serde::{Deserialize, Serialize};

use crate::{
    policy::config::{Cidr, Config, Direction, EgressMode, ReplyTracking, Row, Site, Transport},
    policy::portspec::{PortSpec, render_ranges},
};

/// Facts about the host the rule set is compiled for (read by `load`, passed in here).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostFacts {
    /// Local ephemeral port range (`net.ipv4.ip_local_port_range`).
    pub ephemeral: (u16, u16),
    /// Enforced interfaces; interface `i` gets slot `i + 1`.
    pub interfaces: Vec<String>,
}

impl HostFacts {
    /// Linux's default ephemeral range and `eth0`, `eth1`: for `check` and tests.
    pub fn typical() -> Self {
        Self { ephemeral: (32768, 60999), interfaces: vec!["eth0".into(), "eth1".into()] }
    }
}

/// A compile error.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// A site-supplied port list is missing.
    #[error(
        "row `{row}` ({description}): destination port is `{text}`; set it in the site config: [ports] {row} = \"389, 636\""
    )]
    NeedsPorts {
        /// Row id.
        row: String,
        /// Row description.
        description: String,
        /// The matrix text.
        text: String,
    },
    /// Too many candidates on one port.
    #[error(
        "{transport}/{port} has {n} rules that apply to it; at most {MAX_CHAIN} are supported: merge or narrow the site rules"
    )]
    ChainTooLong {
        /// Transport.
        transport: &'static str,
        /// Port.
        port: u16,
        /// Candidates.
        n: usize,
    },
    /// More interfaces than slots.
    #[error("{n} interfaces given; at most {} are supported", MAX_IFACES - 1)]
    TooManyInterfaces {
        /// Interfaces.
        n: usize,
    },
    /// A site rule names an interface that is not enforced.
    #[error(
        "rule `{rule}` names interface `{iface}`, which is not among the enforced interfaces ({enforced}); add it to `interfaces` or fix the rule"
    )]
    UnknownInterface {
        /// Rule id.
        rule: String,
        /// Interface.
        iface: String,
        /// Enforced interfaces.
        enforced: String,
    },
}

/// How a rule matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleKind {
    /// Destination port on this host.
    Inbound,
    /// Reply to an outbound flow: source port is the remote service port.
    Reply,
}

impl RuleKind {
    /// `inbound` or `reply`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Reply => "reply",
        }
    }
}

impl std::fmt::Display for RuleKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Where a rule comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The port matrix.
    Matrix,
    /// The site config's `[[rule]]`.
    Site,
    /// The lock-out failsafe.
    Failsafe,
}

/// Local ports a reply may arrive on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct LocalPorts {
    /// The ephemeral range.
    pub ephemeral: bool,
    /// Extra explicit range (`None`: only the ephemeral range).
    pub explicit: Option<(u16, u16)>,
}

/// One compiled rule: one counter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CompiledRule {
    /// `ps-01`, or `ps-01+ps-02` for merged rows.
    pub id: String,
    /// Matrix rows / rule ids it stands for.
    pub rows: Vec<String>,
    /// Origin.
    pub origin: Origin,
    /// Transport.
    pub transport: Transport,
    /// Inbound or reply.
    pub kind: RuleKind,
    /// Matched ports: local destination ports (inbound) or remote source ports (reply).
    pub ports: Vec<(u16, u16)>,
    /// `ports` as the matrix writes them.
    pub ports_text: String,
    /// Reply rules: local ports admitted.
    pub local: Option<LocalPorts>,
    /// Interfaces it applies on (`None`: all enforced interfaces).
    pub interfaces: Option<Vec<String>>,
    /// Description (merged rows: joined with " | ").
    pub description: String,
    /// Counter slot.
    pub counter: u32,
    /// The bound system whose addresses may send this (`None`: any source).
    pub system: Option<String>,
    /// Its bit in `RuleEntry::systems` (0 when unbound).
    pub system_mask: u64,
}

/// A row that compiles to nothing, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// Row id.
    pub row: String,
    /// Why.
    pub why: String,
}

/// The compiled policy: everything `load` writes into one generation of the maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSet {
    /// Rules, in counter order.
    pub rules: Vec<CompiledRule>,
    /// Scalar policy.
    pub policy: Policy,
    /// Port table: `(l4, port)` → heads into `entries` (0 = none).
    pub ports: BTreeMap<(L4, u16), PortEntry>,
    /// Candidate entries; `entries[0]` is unused.
    pub entries: Vec<RuleEntry>,
    /// Enforced interfaces (slot = index + 1).
    pub interfaces: Vec<String>,
    /// Rows that are off or do not concern this host.
    pub skipped: Vec<Skipped>,
    /// Things an operator should look at.
    pub warnings: Vec<String>,
    /// Source prefixes → the bound systems they belong to (every system with a prefix that
    /// contains them, so a longest-prefix match yields the whole set).
    pub src_prefixes: Vec<(Cidr, u64)>,
    /// First counter slot never used (grows across reloads, see [`RuleSet::keep_counters`]).
    pub next_counter: u32,
}

/// Bit of a bound system: systems are numbered in name order.
fn system_bit(site: &Site, name: &str) -> u64 {
    site.systems.keys().position(|k| k == name).map_or(0, |i| 1u64 << i)
}

/// Every configured prefix with the union of the systems whose prefixes contain it.
fn source_prefixes(site: &Site) -> Vec<(Cidr, u64)> {
    let all: Vec<(Cidr, u64)> = site
        .systems
        .iter()
        .enumerate()
        .flat_map(|(i, (_, cidrs))| cidrs.iter().map(move |c| (*c, 1u64 << i)))
        .collect();
    let mut out: BTreeMap<Cidr, u64> = BTreeMap::new();
    for (c, _) in &all {
        let mask = all.iter().filter(|(o, _)| o.contains(c)).fold(0, |m, (_, b)| m | b);
        out.insert(*c, mask);
    }
    out.into_iter().collect()
}

struct Draft {
    rows: Vec<String>,
    origin: Origin,
    transport: Transport,
    kind: RuleKind,
    ports: Vec<(u16, u16)>,
    local: Option<LocalPorts>,
    interfaces: Option<Vec<String>>,
    descriptions: Vec<String>,
    /// The bound system (site config `[systems]` key) whose addresses may send this.
    system: Option<String>,
}

type MergeKey = (Transport, RuleKind, Vec<(u16, u16)>, Option<LocalPorts>, Option<Vec<String>>, Origin, Option<String>);

/// Compile `config` for a host.
pub fn compile(config: &Config, host: &HostFacts) -> Result<RuleSet, CompileError> {
    let site = &config.site;
    if host.interfaces.len() >= MAX_IFACES as usize {
        return Err(CompileError::TooManyInterfaces { n: host.interfaces.len() });
    }
    let mut warnings = Vec::new();
    let mgmt = &site.management_interface;
    if !host.interfaces.contains(mgmt) {
        warnings.push(format!(
            "management interface `{mgmt}` is not enforced: rows bound to the management IP admit nothing"
        ));
    }
    let (mut drafts, skipped) = matrix_drafts(config)?;
    drafts.extend(site_drafts(site, host)?);
    if site.failsafe.enabled {
        drafts.extend(failsafe_drafts(&site.failsafe.ssh_ports));
    } else {
        warnings.push("failsafe is off: SSH, DNS, NTP and DHCP are admitted only if the policy says so".into());
    }
    let rules = number(merge(drafts), site);
    warnings.extend(unbound_systems(site, &rules));
    let (ports, entries) = build_tables(&rules, host)?;
    let needed = rules.len().max(entries.len()) as u32;
    let rules_cap = DEFAULT_RULES_CAP.max(needed.div_ceil(1024) * 1024);
    let policy = policy_header(site, host, &rules, rules_cap);
    Ok(RuleSet {
        next_counter: rules.len() as u32,
        rules,
        policy,
        ports,
        entries,
        interfaces: host.interfaces.clone(),
        skipped,
        warnings,
        src_prefixes: source_prefixes(site),
    })
}

/// The drafts of every enabled matrix row, and the rows not enforced with why.
fn matrix_drafts(config: &Config) -> Result<(Vec<Draft>, Vec<Skipped>), CompileError> {
    let (mut drafts, mut skipped) = (Vec::new(), Vec::new());
    for row in &config.matrix.rows {
        match row_drafts(config, row)? {
            Ok(d) => drafts.extend(d),
            Err(why) => skipped.push(Skipped { row: row.id.clone(), why }),
        }
    }
    Ok((drafts, skipped))
}

/// One row's drafts (see the module doc), or why it is not enforced.
fn row_drafts(config: &Config, row: &Row) -> Result<Result<Vec<Draft>, String>, CompileError> {
    let site = &config.site;
    if site.disable.contains(&row.id) {
        return Ok(Err("disabled by the site config".into()));
    }
    if !row.on_by_default() && !site.enable.contains(&row.id) {
        return Ok(Err("optional and closed by default; enable it with [rows] enable".into()));
    }
    let host_sys = &config.matrix.host_system;
    let dst_is_host = row.destination_system.eq_ignore_ascii_case(host_sys);
    let src_is_host = row.source_system.eq_ignore_ascii_case(host_sys);
    // The remote end, whatever the rule's direction: the row's other system (for host ↔
    // host rows, the cluster peers, the host system itself).
    let remote = if dst_is_host && !src_is_host {
        &row.source_system
    } else if src_is_host && !dst_is_host {
        &row.destination_system
    } else {
        host_sys
    };
    let system = site.systems.keys().find(|k| k.eq_ignore_ascii_case(remote)).cloned();
    let scope = row.management_only.then(|| vec![site.management_interface.clone()]);
    let drafts = |kind: RuleKind, ports: Vec<(u16, u16)>| -> Vec<Draft> {
        row.transports
            .iter()
            .map(|&transport| Draft {
                rows: vec![row.id.clone()],
                origin: Origin::Matrix,
                transport,
                kind,
                ports: ports.clone(),
                local: (kind == RuleKind::Reply).then_some(EPHEMERAL_REPLY),
                interfaces: scope.clone(),
                descriptions: vec![row.description.clone()],
                system: system.clone(),
            })
            .collect()
    };
    let remote_ephemeral =
        row.destination_port == PortSpec::Ephemeral && matches!(row.source_port, PortSpec::Ports { .. });
    if dst_is_host && remote_ephemeral {
        // Written from its reply side: host → remote's source port.
        return Ok(Ok(drafts(RuleKind::Reply, row.source_port.ranges().to_vec())));
    }
    if src_is_host && remote_ephemeral {
        // The mirror image: host port → remote Ephemeral is the reply side of an inbound
        // flow to the host's port.
        return Ok(Ok(drafts(RuleKind::Inbound, row.source_port.ranges().to_vec())));
    }
    if !dst_is_host && !src_is_host {
        return Ok(Err(format!("neither end is {host_sys}")));
    }
    let ports = resolve_ports(row, config)?;
    let mut out = Vec::new();
    if dst_is_host {
        out.extend(drafts(RuleKind::Inbound, ports.clone()));
    }
    if src_is_host {
        out.extend(drafts(RuleKind::Reply, ports));
    }
    Ok(Ok(out))
}

/// Replies to outbound rows arrive on the host's ephemeral ports.
const EPHEMERAL_REPLY: LocalPorts = LocalPorts { ephemeral: true, explicit: None };

/// The site config's `[[rule]]`s; their interfaces must be enforced ones.
fn site_drafts(site: &Site, host: &HostFacts) -> Result<Vec<Draft>, CompileError> {
    let mut drafts = Vec::new();
    for r in &site.rules {
        if let Some(i) = r.interfaces.iter().flatten().find(|i| !host.interfaces.contains(i)) {
            return Err(CompileError::UnknownInterface {
                rule: r.id.clone(),
                iface: i.clone(),
                enforced: host.interfaces.join(", "),
            });
        }
        let kind = match r.direction {
            Direction::Inbound => RuleKind::Inbound,
            Direction::Outbound => RuleKind::Reply,
        };
        drafts.push(Draft {
            rows: vec![r.id.clone()],
            origin: Origin::Site,
            transport: r.transport,
            kind,
            ports: r.ports.clone(),
            local: (kind == RuleKind::Reply).then_some(EPHEMERAL_REPLY),
            interfaces: r.interfaces.clone(),
            descriptions: vec![r.description.clone()],
            system: None,
        });
    }
    Ok(drafts)
}

/// Merge drafts with identical matches, keeping first-appearance order.
fn merge(drafts: Vec<Draft>) -> Vec<Draft> {
    let mut merged: Vec<Draft> = Vec::new();
    let mut by_key: HashMap<MergeKey, usize> = HashMap::new();
    for d in drafts {
        let key = (d.transport, d.kind, d.ports.clone(), d.local, d.interfaces.clone(), d.origin, d.system.clone());
        let Some(&i) = by_key.get(&key) else {
            by_key.insert(key, merged.len());
            merged.push(d);
            continue;
        };
        merged[i].rows.extend(d.rows);
        for desc in d.descriptions {
            if !merged[i].descriptions.contains(&desc) {
                merged[i].descriptions.push(desc);
            }
        }
    }
    merged
}

/// The merged drafts as rules, counter slots in order.
fn number(merged: Vec<Draft>, site: &Site) -> Vec<CompiledRule> {
    merged
        .into_iter()
        .enumerate()
        .map(|(i, d)| CompiledRule {
            id: d.rows.join("+"),
            rows: d.rows,
            origin: d.origin,
            transport: d.transport,
            kind: d.kind,
            ports_text: render_ranges(&d.ports),
            ports: d.ports,
            local: d.local,
            interfaces: d.interfaces,
            description: d.descriptions.join(" | "),
            counter: i as u32,
            system_mask: d.system.as_ref().map_or(0, |n| system_bit(site, n)),
            system: d.system,
        })
        .collect()
}

/// A warning for each bound system no enabled row uses.
fn unbound_systems(site: &Site, rules: &[CompiledRule]) -> Vec<String> {
    site.systems
        .keys()
        .filter(|name| !rules.iter().any(|r| r.system.as_deref() == Some(name.as_str())))
        .map(|name| format!("system `{name}` is bound to addresses, but no enabled row names it as its remote end"))
        .collect()
}

/// The policy's flags, sizes, ephemeral range and timeouts.
fn policy_header(site: &Site, host: &HostFacts, rules: &[CompiledRule], rules_cap: u32) -> Policy {
    let mut flags = 0;
    if site.allow_ping {
        flags |= POLICY_ALLOW_ECHO;
    }
    if site.reply_tracking == ReplyTracking::Stateful {
        flags |= POLICY_STATEFUL;
    }
    if site.egress == EgressMode::Enforce {
        flags |= POLICY_EGRESS_ENFORCE;
    }
    if rules.iter().any(|r| r.system_mask != 0) {
        flags |= POLICY_SOURCE_SETS;
    }
    let t = site.timeouts;
    Policy {
        flags,
        rules_cap,
        ephemeral_lo: host.ephemeral.0,
        ephemeral_hi: host.ephemeral.1,
        _pad: 0,
        tcp_syn_timeout_s: t.tcp_syn,
        tcp_established_timeout_s: t.tcp_established,
        tcp_closing_timeout_s: t.tcp_closing,
        udp_timeout_s: t.udp,
    }
}

fn resolve_ports(row: &Row, config: &Config) -> Result<Vec<(u16, u16)>, CompileError> {
    if let Some(p) = config.site.ports.get(&row.id) {
        return Ok(p.clone());
    }
    match &row.destination_port {
        PortSpec::Ports { ranges, .. } => Ok(ranges.clone()),
        PortSpec::SiteSupplied(text) => row.site_ports.clone().ok_or_else(|| CompileError::NeedsPorts {
            row: row.id.clone(),
            description: row.description.clone(),
            text: text.clone(),
        }),
        PortSpec::Ephemeral => Err(CompileError::NeedsPorts {
            row: row.id.clone(),
            description: row.description.clone(),
            text: "Ephemeral".into(),
        }),
    }
}

/// The lock-out failsafe: SSH in, and the replies DNS, NTP and DHCP need.
fn failsafe_drafts(ssh_ports: &[u16]) -> Vec<Draft> {
    let d = |id: &str, transport, kind, ports: Vec<(u16, u16)>, local, desc: &str| Draft {
        rows: vec![id.to_string()],
        origin: Origin::Failsafe,
        transport,
        kind,
        ports,
        local,
        interfaces: None,
        descriptions: vec![desc.to_string()],
        system: None,
    };
    let eph = Some(LocalPorts { ephemeral: true, explicit: None });
    let mut out = Vec::new();
    if !ssh_ports.is_empty() {
        let ports = ssh_ports.iter().map(|&p| (p, p)).collect();
        out.push(d(
            "failsafe-ssh",
            Transport::Tcp,
            RuleKind::Inbound,
            ports,
            None,
            "SSH to this host (lock-out failsafe)",
        ));
    }
    for t in [Transport::Udp, Transport::Tcp] {
        out.push(d("failsafe-dns", t, RuleKind::Reply, vec![(53, 53)], eph, "DNS replies (lock-out failsafe)"));
    }
    out.push(d(
        "failsafe-ntp",
        Transport::Udp,
        RuleKind::Reply,
        vec![(123, 123)],
        Some(LocalPorts { ephemeral: true, explicit: Some((123, 123)) }),
        "NTP replies (lock-out failsafe)",
    ));
    out.push(d(
        "failsafe-dhcp",
        Transport::Udp,
        RuleKind::Reply,
        vec![(67, 67)],
        Some(LocalPorts { ephemeral: false, explicit: Some((68, 68)) }),
        "DHCPv4 server replies (lock-out failsafe)",
    ));
    out.push(d(
        "failsafe-dhcpv6",
        Transport::Udp,
        RuleKind::Reply,
        vec![(547, 547)],
        Some(LocalPorts { ephemeral: false, explicit: Some((546, 546)) }),
        "DHCPv6 server replies (lock-out failsafe)",
    ));
    out
}

type Tables = (BTreeMap<(L4, u16), PortEntry>, Vec<RuleEntry>);

/// Port table and candidate lists. Identical candidate lists are stored once.
fn build_tables(rules: &[CompiledRule], host: &HostFacts) -> Result<Tables, CompileError> {
    let mut entries = vec![RuleEntry::default()];
    let mut interned: HashMap<Vec<usize>, u32> = HashMap::new();
    // (l4, port) → (inbound head, reply head).
    let mut heads: BTreeMap<(L4, u16), (u32, u32)> = BTreeMap::new();
    for ((l4, port, kind), mut list) in candidate_lists(rules) {
        // Rules bound to systems before unbound ones: a bound system's traffic is counted
        // on its own row even where an unbound row admits the same port.
        list.sort_by_key(|&i| rules[i].system_mask == 0);
        if list.len() > MAX_CHAIN as usize {
            return Err(CompileError::ChainTooLong { transport: l4.as_str(), port, n: list.len() });
        }
        let head = *interned.entry(list.clone()).or_insert_with(|| {
            let head = entries.len() as u32;
            let last = list.len() - 1;
            entries.extend(list.iter().enumerate().map(|(k, &ri)| rule_entry(&rules[ri], k == last, host)));
            head
        });
        let e = heads.entry((l4, port)).or_default();
        match kind {
            RuleKind::Inbound => e.0 = head,
            RuleKind::Reply => e.1 = head,
        }
    }
    let ports = heads.into_iter().map(|(k, (inbound, reply))| (k, PortEntry::new(inbound, reply, &entries))).collect();
    Ok((ports, entries))
}

/// (l4, port, kind) → the indices of the rules that admit it, in rule order.
fn candidate_lists(rules: &[CompiledRule]) -> BTreeMap<(L4, u16, RuleKind), Vec<usize>> {
    let mut lists: BTreeMap<(L4, u16, RuleKind), Vec<usize>> = BTreeMap::new();
    for (i, r) in rules.iter().enumerate() {
        for &(lo, hi) in &r.ports {
            for port in lo..=hi {
                let l = lists.entry((r.transport.l4(), port, r.kind)).or_default();
                if !l.contains(&i) {
                    l.push(i);
                }
            }
        }
    }
    lists
}

/// The candidate entry of rule `r`; `last` ends its list.
fn rule_entry(r: &CompiledRule, last: bool, host: &HostFacts) -> RuleEntry {
    let mut flags = if last { ENTRY_LAST } else { 0 };
    let (mut local_lo, mut local_hi) = (0, 0);
    if let Some(local) = r.local {
        flags |= ENTRY_REPLY;
        if local.ephemeral {
            flags |= ENTRY_EPHEMERAL;
        }
        if let Some((a, b)) = local.explicit {
            (local_lo, local_hi) = (a, b);
        }
    }
    RuleEntry { flags, counter: r.counter, iface_mask: iface_mask(r, host), local_lo, local_hi, systems: r.system_mask }
}

/// The interface slots `r` applies on: bit `pos + 1` for the host's interface `pos`
/// (slot 0 is an unconfigured interface), every bit for a rule on all interfaces.
fn iface_mask(r: &CompiledRule, host: &HostFacts) -> u32 {
    match &r.interfaces {
        None => u32::MAX,
        Some(ifs) => ifs
            .iter()
            .filter_map(|i| host.interfaces.iter().position(|h| h == i))
            .fold(0u32, |m, pos| m | 1 << (pos + 1)),
    }
}

impl RuleSet {
    /// The rule with this counter slot.
    pub fn rule_by_counter(&self, counter: u32) -> Option<&CompiledRule> {
        self.rules.iter().find(|r| r.counter == counter)
    }

    /// The same rule set with the counter slots of `prev` kept for the rules both have
    /// (same id, transport and direction), so a reload does not move counts between
    /// rules. New rules get slots no rule of `prev` used.
    pub fn keep_counters(mut self, prev: &RuleSet) -> RuleSet {
        let key = |r: &CompiledRule| (r.id.clone(), r.transport, r.kind);
        let old: HashMap<_, u32> = prev.rules.iter().map(|r| (key(r), r.counter)).collect();
        let mut next = prev.rules.iter().map(|r| r.counter + 1).max().unwrap_or(0).max(prev.next_counter);
        let mut remap: HashMap<u32, u32> = HashMap::new();
        for r in &mut self.rules {
            let slot = match old.get(&key(r)) {
                Some(&c) => c,
                None => {
                    next += 1;
                    next - 1
                }
            };
            remap.insert(r.counter, slot);
            r.counter = slot;
        }
        for e in self.entries.iter_mut().skip(1) {
            e.counter = remap[&e.counter];
        }
        // The port entries' summaries name counter slots too.
        for e in self.ports.values_mut() {
            *e = PortEntry::new(e.inbound, e.reply, &self.entries);
        }
        self.next_counter = next;
        self
    }

    /// The same rule set with counter slot `i` for the `i`-th rule.
    fn counters_in_rule_order(mut self) -> RuleSet {
        let remap: HashMap<u32, u32> = self.rules.iter().enumerate().map(|(i, r)| (r.counter, i as u32)).collect();
        for r in &mut self.rules {
            r.counter = remap[&r.counter];
        }
        for e in self.entries.iter_mut().skip(1) {
            e.counter = remap[&e.counter];
        }
        for e in self.ports.values_mut() {
            *e = PortEntry::new(e.inbound, e.reply, &self.entries);
        }
        self
    }

    /// The highest counter slot in use, plus one.
    pub fn counters_used(&self) -> u32 {
        self.rules.iter().map(|r| r.counter + 1).max().unwrap_or(0).max(self.next_counter)
    }

    /// The source prefixes a bound rule admits (none for an unbound rule), without
    /// prefixes that lie inside another one of the list (export formats want disjoint sets).
    pub fn prefixes_of(&self, r: &CompiledRule) -> Vec<Cidr> {
        let mine: Vec<Cidr> =
            self.src_prefixes.iter().filter(|(_, m)| m & r.system_mask != 0).map(|(c, _)| *c).collect();
        mine.iter().filter(|c| !mine.iter().any(|o| o != *c && o.contains(c))).copied().collect()
    }

    /// Slot of an interface name (1-based), if enforced.
    pub fn slot_of(&self, iface: &str) -> Option<u32> {
        self.interfaces.iter().position(|i| i == iface).map(|p| p as u32 + 1)
    }

    /// A stable hash of the compiled tables (FNV-1a over their debug form). It names the
    /// policy: two hosts with one config have one fingerprint (the fleet's drift check
    /// compares them), whatever reloads brought each there. Counter slots depend on that
    /// history ([`RuleSet::keep_counters`]), so they are numbered in rule order first.
    pub fn fingerprint(&self) -> String {
        let canon = self.clone().counters_in_rule_order();
        let text = format!("{:?}{:?}{:?}{:?}", canon.rules, canon.policy, canon.ports, canon.entries);
        let mut h: u64 = 0xcbf29ce484222325;
        for b in text.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
        format!("{h:016x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::config::{SiteRule, Transport::*};

    fn shipped() -> RuleSet {
        compile(&Config::shipped(), &HostFacts::typical()).unwrap()
    }

    /// (kind, transport, ports, interfaces) of a rule.
    type Shape = (RuleKind, Transport, String, Option<Vec<String>>);

    /// The shapes of every rule that row `id` is part of.
    fn rules_of(set: &RuleSet, id: &str) -> Vec<Shape> {
        set.rules
            .iter()
            .filter(|r| r.rows.iter().any(|x| x == id))
            .map(|r| (r.kind, r.transport, r.ports_text.clone(), r.interfaces.clone()))
            .collect()
    }

    #[test]
    fn every_row_of_table_1() {
        use RuleKind::*;
        let set = shipped();
        let all = None;
        let mgmt = Some(vec!["eth0".to_string()]);
        type Want<'a> = (&'a str, Vec<(RuleKind, Transport, &'a str, Option<Vec<String>>)>);
        let expect: [Want; 27] = [
            ("ps-01", vec![(Inbound, Tcp, "443", all.clone())]),
            ("ps-02", vec![(Inbound, Tcp, "443", all.clone())]),
            ("ps-03", vec![(Reply, Tcp, "443", all.clone())]),
            ("ps-04", vec![(Reply, Tcp, "5062", all.clone())]),
            ("ps-05", vec![(Inbound, Tcp, "5061", all.clone())]),
            ("ps-06", vec![]),
            ("ps-07", vec![]),
            ("ps-08", vec![]),
            ("ps-09", vec![]),
            ("ps-10", vec![(Inbound, Tcp, "5222", all.clone())]),
            ("ps-11", vec![(Inbound, Tcp, "5269", all.clone())]),
            ("ps-12", vec![(Reply, Tcp, "5269", all.clone())]),
            ("ps-13", vec![(Inbound, Tcp, "7000", mgmt.clone())]),
            ("ps-14", vec![(Inbound, Tcp, "7001-7199", mgmt.clone())]),
            ("ps-15", vec![(Reply, Tcp, "80", all.clone())]),
            ("ps-16", vec![(Reply, Tcp, "443", all.clone())]),
            ("ps-17", vec![(Reply, Tcp, "450", all.clone())]),
            ("ps-18", vec![]),
            ("ps-19", vec![(Reply, Tcp, "2809", mgmt.clone())]),
            ("ps-20", vec![(Inbound, Tcp, "7000", mgmt.clone()), (Reply, Tcp, "7000", mgmt.clone())]),
            ("ps-21", vec![(Inbound, Tcp, "7001-7199", mgmt.clone()), (Reply, Tcp, "7001-7199", mgmt.clone())]),
            ("ps-22", vec![(Inbound, Tcp, "18443", all.clone()), (Reply, Tcp, "18443", all.clone())]),
            ("ps-23", vec![(Inbound, Tcp, "18444", all.clone()), (Reply, Tcp, "18444", all.clone())]),
            ("ps-24", vec![(Inbound, Tcp, "18445", all.clone())]),
            ("ps-25", vec![(Reply, Tcp, "443", all.clone())]),
            ("ps-26", vec![(Reply, Tcp, "389, 636, 3268, 3269", all.clone())]),
            ("ps-27", vec![(Reply, Tcp, "25, 587", all.clone())]),
        ];
        for (id, want) in expect {
            let want: Vec<_> = want.into_iter().map(|(k, t, p, i)| (k, t, p.to_string(), i)).collect();
            assert_eq!(rules_of(&set, id), want, "row {id}");
        }
        let skipped: Vec<_> = set.skipped.iter().map(|s| s.row.as_str()).collect();
        assert_eq!(skipped, ["ps-06", "ps-07", "ps-08", "ps-09", "ps-18"]);
        // Identical matches merge into one rule with one counter.
        let ids: Vec<_> = set.rules.iter().filter(|r| r.origin == Origin::Matrix).map(|r| r.id.as_str()).collect();
        assert!(ids.contains(&"ps-01+ps-02") && ids.contains(&"ps-03+ps-16+ps-25") && ids.contains(&"ps-13+ps-20"));
        // Counters are dense and in rule order.
        assert!(set.rules.iter().enumerate().all(|(i, r)| r.counter == i as u32));
    }

    #[test]
    fn failsafe_rules_and_switch() {
        let set = shipped();
        let fs: Vec<_> = set
            .rules
            .iter()
            .filter(|r| r.origin == Origin::Failsafe)
            .map(|r| (r.id.as_str(), r.transport, r.kind, r.ports_text.as_str()))
            .collect();
        assert_eq!(
            fs,
            [
                ("failsafe-ssh", Tcp, RuleKind::Inbound, "22"),
                ("failsafe-dns", Udp, RuleKind::Reply, "53"),
                ("failsafe-dns", Tcp, RuleKind::Reply, "53"),
                ("failsafe-ntp", Udp, RuleKind::Reply, "123"),
                ("failsafe-dhcp", Udp, RuleKind::Reply, "67"),
                ("failsafe-dhcpv6", Udp, RuleKind::Reply, "547"),
            ]
        );
        let mut cfg = Config::shipped();
        cfg.site.failsafe.enabled = false;
        let off = compile(&cfg, &HostFacts::typical()).unwrap();
        assert!(off.rules.iter().all(|r| r.origin != Origin::Failsafe));
        assert!(off.warnings.iter().any(|w| w.contains("failsafe is off")));
    }

    #[test]
    fn tables_match_rules() {
        let set = shipped();
        // 443 inbound and reply both present; 7001-7199 one entry per port sharing one list.
        let e443 = set.ports[&(L4::Tcp, 443)];
        assert!(e443.inbound != 0 && e443.reply != 0);
        let heads: std::collections::BTreeSet<u32> = (7001..=7199).map(|p| set.ports[&(L4::Tcp, p)].inbound).collect();
        assert_eq!(heads.len(), 1, "identical candidate lists are stored once");
        let e = set.entries[set.ports[&(L4::Tcp, 7000)].inbound as usize];
        assert_eq!(e.iface_mask, 1 << 1, "management-only: slot 1 (eth0)");
        let r = set.entries[set.ports[&(L4::Tcp, 5062)].reply as usize];
        assert_eq!(r.flags, ENTRY_LAST | ENTRY_REPLY | ENTRY_EPHEMERAL);
        let dhcp = set.entries[set.ports[&(L4::Udp, 67)].reply as usize];
        assert_eq!((dhcp.flags & ENTRY_EPHEMERAL, dhcp.local_lo, dhcp.local_hi), (0, 68, 68));
        assert!(!set.ports.contains_key(&(L4::Tcp, 5063)), "optional closed rows have no entries");
    }

    #[test]
    fn reload_keeps_counter_slots() {
        let before = shipped();
        let mut cfg = Config::shipped();
        cfg.site.enable.push("ps-18".into()); // a new rule
        cfg.site.disable.push("ps-15".into()); // a removed one
        let after = compile(&cfg, &HostFacts::typical()).unwrap().keep_counters(&before);
        let slot = |s: &RuleSet, id: &str| s.rules.iter().find(|r| r.id == id).map(|r| r.counter);
        for id in ["ps-01+ps-02", "ps-04", "failsafe-ssh", "ps-27"] {
            assert_eq!(slot(&after, id), slot(&before, id), "{id} keeps its counter");
        }
        assert_eq!(slot(&after, "ps-15"), None);
        let new = slot(&after, "ps-18").unwrap();
        assert!(before.rules.iter().all(|r| r.counter != new), "a new rule gets an unused slot");
        // The tables point at the remapped slots.
        let e = after.entries[after.ports[&(L4::Tcp, 1050)].reply as usize];
        assert_eq!(e.counter, new);
        let e = after.entries[after.ports[&(L4::Tcp, 5062)].reply as usize];
        assert_eq!(Some(e.counter), slot(&before, "ps-04"));
        // And again: slots keep growing, never reused.
        let third = compile(&Config::shipped(), &HostFacts::typical()).unwrap().keep_counters(&after);
        assert_eq!(slot(&third, "ps-15").map(|c| c >= after.counters_used()), Some(true));
    }

    #[test]
    fn fingerprint_names_the_policy_not_the_reload_history() {
        // Two nodes with one config: one started with it, the other reloaded into it after
        // a rule that came and went took a counter slot. Their policies are the same.
        let with = |ids: &[&str]| {
            let mut cfg = Config::shipped();
            cfg.site.enable.extend(ids.iter().map(|id| id.to_string()));
            compile(&cfg, &HostFacts::typical()).unwrap()
        };
        let fresh = with(&["ps-18"]);
        let detour = with(&["ps-06"]).keep_counters(&shipped());
        let reloaded = with(&["ps-18"]).keep_counters(&detour);
        assert_ne!(
            reloaded.rules.iter().map(|r| r.counter).collect::<Vec<_>>(),
            fresh.rules.iter().map(|r| r.counter).collect::<Vec<_>>(),
            "the slots differ"
        );
        assert_eq!(reloaded.fingerprint(), fresh.fingerprint());
        assert_ne!(fresh.fingerprint(), shipped().fingerprint(), "another policy, another fingerprint");
    }

    #[test]
    fn deterministic() {
        let a = shipped();
        let b = shipped();
        assert_eq!(a, b);
        assert_eq!(a.fingerprint(), b.fingerprint());
    }

    #[test]
    fn site_choices() {
        let mut cfg = Config::shipped();
        cfg.site.enable = vec!["ps-07".into(), "ps-08".into(), "ps-18".into()];
        cfg.site.disable = vec!["ps-27".into()];
        cfg.site.ports.insert("ps-10".into(), vec![(5223, 5223)]);
        cfg.site.ports.insert("ps-26".into(), vec![(636, 636)]);
        cfg.site.management_interface = "eth1".into();
        cfg.site.rules.push(SiteRule {
            id: "site-snmp".into(),
            transport: Udp,
            ports: vec![(161, 161)],
            direction: Direction::Inbound,
            interfaces: Some(vec!["eth0".into()]),
            description: "SNMP".into(),
        });
        let set = compile(&cfg, &HostFacts::typical()).unwrap();
        assert_eq!(rules_of(&set, "ps-07"), vec![(RuleKind::Inbound, Tcp, "5063".into(), None)]);
        assert_eq!(set.rules.iter().find(|r| r.rows.contains(&"ps-07".into())).unwrap().id, "ps-07+ps-08");
        assert_eq!(rules_of(&set, "ps-18"), vec![(RuleKind::Reply, Tcp, "1050-1065, 1066-1081".into(), None)]);
        assert!(rules_of(&set, "ps-27").is_empty());
        assert_eq!(rules_of(&set, "ps-10")[0].2, "5223");
        assert_eq!(rules_of(&set, "ps-26")[0].2, "636");
        assert_eq!(rules_of(&set, "ps-13")[0].3, Some(vec!["eth1".into()]));
        assert_eq!(
            rules_of(&set, "site-snmp"),
            vec![(RuleKind::Inbound, Udp, "161".into(), Some(vec!["eth0".into()]))]
        );
        assert_eq!(set.entries[set.ports[&(L4::Tcp, 7000)].inbound as usize].iface_mask, 1 << 2);

        cfg.site.rules[0].interfaces = Some(vec!["eth9".into()]);
        let e = compile(&cfg, &HostFacts::typical()).unwrap_err().to_string();
        assert!(e.contains("names interface `eth9`"), "{e}");
    }

    #[test]
    fn bound_systems_restrict_sources() {
        let mut cfg = Config::shipped();
        let c = |t: &str| Cidr::parse(t).unwrap();
        cfg.site.systems.insert("Session Manager".into(), vec![c("198.18.0.0/24"), c("fd00::/64")]);
        cfg.site.systems.insert("Zang".into(), vec![c("198.18.0.2/32")]);
        let set = compile(&cfg, &HostFacts::typical()).unwrap();
        assert!(set.policy.flags & POLICY_SOURCE_SETS != 0);
        let rule = |id: &str| set.rules.iter().find(|r| r.id == id).unwrap_or_else(|| panic!("no {id}"));
        // Systems are numbered by name: "Session Manager" = bit 0, "Zang" = bit 1.
        assert_eq!((rule("ps-05").system.as_deref(), rule("ps-05").system_mask), (Some("Session Manager"), 1));
        assert_eq!(rule("ps-04").system_mask, 1, "replies from SM 5062 too (its destination system)");
        // ps-02 (Zang) no longer merges with ps-01 (Equinox, unbound); bound goes first.
        assert_eq!(rule("ps-02").system_mask, 2);
        assert_eq!(rule("ps-01").system_mask, 0);
        let head = set.ports[&(L4::Tcp, 443)].inbound as usize;
        assert_eq!((set.entries[head].systems, set.entries[head + 1].systems), (2, 0));
        assert_eq!(rule("ps-03").system_mask, 2, "reply side of Zang 443");
        // A /32 inside SM's /24 belongs to both systems.
        assert!(set.src_prefixes.contains(&(c("198.18.0.2/32"), 0b11)));
        assert!(set.src_prefixes.contains(&(c("198.18.0.0/24"), 0b01)));
        let none = compile(&Config::shipped(), &HostFacts::typical()).unwrap();
        assert_eq!(none.policy.flags & POLICY_SOURCE_SETS, 0, "no lookup when nothing is bound");
    }

    #[test]
    fn cluster_peers_bind_host_to_host_rows() {
        let mut cfg = Config::shipped();
        cfg.site.systems.insert("Presence Services".into(), vec![Cidr::parse("198.18.10.0/24").unwrap()]);
        let set = compile(&cfg, &HostFacts::typical()).unwrap();
        for r in set.rules.iter().filter(|r| r.rows.iter().any(|id| ["ps-20", "ps-22"].contains(&id.as_str()))) {
            assert_eq!((r.system.as_deref(), r.system_mask), (Some("Presence Services"), 1), "{}", r.id);
        }
        let client = set.rules.iter().find(|r| r.rows.iter().any(|id| id == "ps-01")).unwrap();
        assert_eq!(client.system_mask, 0, "rows of other systems stay port-only");
    }

    #[test]
    fn site_supplied_ports_without_default_need_config() {
        let text = crate::policy::config::SHIPPED_MATRIX.replace("site_ports = \"389, 636, 3268, 3269\"\n", "");
        let m = crate::policy::config::Matrix::parse(&text, "m.toml").unwrap();
        let cfg = Config { matrix: m, site: Default::default() };
        let e = compile(&cfg, &HostFacts::typical()).unwrap_err().to_string();
        assert!(e.starts_with("row `ps-26`") && e.contains("[ports] ps-26"), "{e}");
    }

    #[test]
    fn too_many_candidates_on_one_port() {
        let mut cfg = Config::shipped();
        for i in 0..9 {
            cfg.site.rules.push(SiteRule {
                id: format!("r{i}"),
                transport: Tcp,
                ports: vec![(9000, 9000 + i)],
                direction: Direction::Inbound,
                interfaces: None,
                description: String::new(),
            });
        }
        let e = compile(&cfg, &HostFacts::typical()).unwrap_err().to_string();
        assert!(e.starts_with("tcp/9000 has 9 rules"), "{e}");
    }
}
