//! Observe: what a running agent publishes (its state file) and how `stats` reads and
//! shows it. The report is computed by a pure function from the state and the counters.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use ps_common::{
    layout::{Counter, STAT_DROP_BASE, STAT_LOG_SUPPRESSED, STAT_PASS_BASE, STAT_WOULD_DROP_BASE},
    reason::{DropReason, PassReason},
};
use serde::{Deserialize, Serialize};

use crate::{
    compile::{CompiledRule, RuleSet},
    config::Mode,
    load::{Attached, Counters},
};

/// Default directory for the state file.
pub const DEFAULT_STATE_DIR: &str = "/run/ps-agent";

/// A rule as the state file records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleMeta {
    /// Rule id.
    pub id: String,
    /// Rows it stands for.
    pub rows: Vec<String>,
    /// `matrix`, `site` or `failsafe`.
    pub origin: String,
    /// `tcp` / `udp`.
    pub proto: String,
    /// Ports as the matrix writes them.
    pub ports: String,
    /// `inbound` or `reply`.
    pub direction: String,
    /// Interfaces it is limited to (`None`: all).
    pub interfaces: Option<Vec<String>>,
    /// Description.
    pub description: String,
    /// Counter slot.
    pub counter: u32,
}

impl From<&CompiledRule> for RuleMeta {
    fn from(r: &CompiledRule) -> Self {
        Self {
            id: r.id.clone(),
            rows: r.rows.clone(),
            origin: format!("{:?}", r.origin).to_lowercase(),
            proto: r.transport.as_str().into(),
            ports: r.ports_text.clone(),
            direction: r.kind.as_str().into(),
            interfaces: r.interfaces.clone(),
            description: r.description.clone(),
            counter: r.counter,
        }
    }
}

/// What `run` publishes for `stats`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    /// Agent version.
    pub version: String,
    /// Agent pid.
    pub pid: u32,
    /// Start time, seconds since the epoch.
    pub started_unix: u64,
    /// Where the maps are pinned.
    pub pin_dir: PathBuf,
    /// Product of the matrix.
    pub product: String,
    /// Policy file.
    pub policy: String,
    /// Fingerprint of the compiled tables.
    pub fingerprint: String,
    /// Counter stride.
    pub rules_cap: u32,
    /// Management interface.
    pub management_interface: String,
    /// Attached interfaces.
    pub interfaces: Vec<Attached>,
    /// Rules in counter order.
    pub rules: Vec<RuleMeta>,
}

impl AgentState {
    /// Build from a compiled rule set.
    pub fn new(
        set: &RuleSet,
        product: &str,
        policy: &str,
        mgmt: &str,
        pin_dir: &Path,
        rules_cap: u32,
        interfaces: Vec<Attached>,
    ) -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            started_unix: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            pin_dir: pin_dir.into(),
            product: product.into(),
            policy: policy.into(),
            fingerprint: set.fingerprint(),
            rules_cap,
            management_interface: mgmt.into(),
            interfaces,
            rules: set.rules.iter().map(RuleMeta::from).collect(),
        }
    }

    /// Path of the state file in `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("state.json")
    }
}

/// Packets and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pb {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

impl Pb {
    fn add(&mut self, c: &Counter) {
        self.packets += c.packets;
        self.bytes += c.bytes;
    }
}

/// One rule in the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleReport {
    /// Rule id.
    pub id: String,
    /// Rows.
    pub rows: Vec<String>,
    /// Origin.
    pub origin: String,
    /// Protocol.
    pub proto: String,
    /// Ports text.
    pub ports: String,
    /// Direction.
    pub direction: String,
    /// Interfaces it is limited to.
    pub interfaces: Option<Vec<String>>,
    /// Description.
    pub description: String,
    /// Packets admitted, all interfaces.
    pub packets: u64,
    /// Bytes admitted, all interfaces.
    pub bytes: u64,
    /// Per interface name.
    pub per_interface: BTreeMap<String, Pb>,
}

/// Totals; `packets` = `by_rule` + `passed_other` + `dropped` + `would_drop`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Every packet the program saw.
    pub packets: u64,
    /// Admitted by a rule.
    pub by_rule: u64,
    /// Passed without a rule (ARP, NDP, ICMP errors/echo).
    pub passed_other: u64,
    /// Dropped.
    pub dropped: u64,
    /// Would have been dropped (dry-run).
    pub would_drop: u64,
}

/// The `stats` report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReport {
    /// `enforce` or `dry-run`.
    pub mode: String,
    /// Product.
    pub product: String,
    /// Policy fingerprint.
    pub fingerprint: String,
    /// Agent pid.
    pub pid: u32,
    /// Counting since (seconds since the epoch).
    pub since_unix: u64,
    /// Interfaces.
    pub interfaces: Vec<Attached>,
    /// Management interface.
    pub management_interface: String,
    /// Rules.
    pub rules: Vec<RuleReport>,
    /// Dropped packets per reason (every reason listed).
    pub drops: BTreeMap<String, u64>,
    /// Would-drop packets per reason (dry-run; every reason listed).
    pub would_drop: BTreeMap<String, u64>,
    /// Packets passed without a rule, per reason.
    pub passed: BTreeMap<String, u64>,
    /// Dry-run log lines suppressed by the rate limiter.
    pub log_suppressed: u64,
    /// Totals.
    pub totals: Totals,
}

/// Build the report (pure).
pub fn report(state: &AgentState, counters: &Counters, mode: Mode) -> StatsReport {
    let slots: Vec<(u32, &str)> = state.interfaces.iter().map(|a| (a.slot, a.name.as_str())).collect();
    let mut totals = Totals::default();
    let mut rules = Vec::new();
    for r in &state.rules {
        let mut all = Pb::default();
        let mut per = BTreeMap::new();
        for &(slot, name) in &slots {
            let c =
                counters.rules.get(slot as usize).and_then(|v| v.get(r.counter as usize)).copied().unwrap_or_default();
            let mut pb = Pb::default();
            pb.add(&c);
            all.add(&c);
            per.insert(name.to_string(), pb);
        }
        // Slot 0 (an unconfigured interface) cannot occur on attached interfaces, but
        // count it so the totals still add up.
        if let Some(c) = counters.rules.first().and_then(|v| v.get(r.counter as usize)) {
            all.add(c);
        }
        totals.by_rule += all.packets;
        rules.push(RuleReport {
            id: r.id.clone(),
            rows: r.rows.clone(),
            origin: r.origin.clone(),
            proto: r.proto.clone(),
            ports: r.ports.clone(),
            direction: r.direction.clone(),
            interfaces: r.interfaces.clone(),
            description: r.description.clone(),
            packets: all.packets,
            bytes: all.bytes,
            per_interface: per,
        });
    }
    let bucket = |b: u32| -> u64 { counters.stats.iter().map(|s| s.get(b as usize).map_or(0, |c| c.packets)).sum() };
    let mut drops = BTreeMap::new();
    let mut would_drop = BTreeMap::new();
    for r in DropReason::ALL {
        let d = bucket(STAT_DROP_BASE + r as u32);
        let w = bucket(STAT_WOULD_DROP_BASE + r as u32);
        totals.dropped += d;
        totals.would_drop += w;
        drops.insert(r.as_str().to_string(), d);
        would_drop.insert(r.as_str().to_string(), w);
    }
    let mut passed = BTreeMap::new();
    for r in PassReason::ALL {
        let p = bucket(STAT_PASS_BASE + r as u32);
        totals.passed_other += p;
        passed.insert(r.as_str().to_string(), p);
    }
    totals.packets = totals.by_rule + totals.passed_other + totals.dropped + totals.would_drop;
    StatsReport {
        mode: mode.as_str().into(),
        product: state.product.clone(),
        fingerprint: state.fingerprint.clone(),
        pid: state.pid,
        since_unix: state.started_unix,
        interfaces: state.interfaces.clone(),
        management_interface: state.management_interface.clone(),
        rules,
        drops,
        would_drop,
        passed,
        log_suppressed: bucket(STAT_LOG_SUPPRESSED),
        totals,
    }
}

fn human(n: u64) -> String {
    const U: [&str; 5] = ["", "K", "M", "G", "T"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i < U.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 { n.to_string() } else { format!("{v:.1}{}", U[i]) }
}

/// Render the report as an aligned table that fits 80 columns. `prev` and `secs` give
/// rates (packets/s) when watching.
pub fn render_table(r: &StatsReport, prev: Option<(&StatsReport, f64)>) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let ifs: Vec<String> = r
        .interfaces
        .iter()
        .map(|a| {
            let m = if a.name == r.management_interface { ", mgmt" } else { "" };
            format!("{} ({}{m})", a.name, a.xdp_mode)
        })
        .collect();
    let _ = writeln!(o, "ps-agent  mode: {}  pid: {}  policy: {}", r.mode, r.pid, r.product);
    let _ = writeln!(o, "interfaces: {}", ifs.join(", "));
    let _ = writeln!(o);
    let rate_hdr = if prev.is_some() { "     PPS" } else { "" };
    let _ = writeln!(
        o,
        "{:<22} {:<5} {:<11} {:<7} {:>9} {:>8}{rate_hdr}",
        "RULE", "PROTO", "PORTS", "DIR", "PACKETS", "BYTES"
    );
    for rule in &r.rules {
        let mut id = rule.id.clone();
        if id.len() > 22 {
            id.truncate(21);
            id.push('~');
        }
        let mut ports = rule.ports.clone();
        if ports.len() > 11 {
            ports.truncate(10);
            ports.push('~');
        }
        let rate = match prev {
            Some((p, secs)) => {
                let before = p
                    .rules
                    .iter()
                    .find(|x| x.id == rule.id && x.proto == rule.proto && x.direction == rule.direction)
                    .map_or(0, |x| x.packets);
                format!(" {:>7.0}", rule.packets.saturating_sub(before) as f64 / secs.max(0.001))
            }
            None => String::new(),
        };
        let _ = writeln!(
            o,
            "{:<22} {:<5} {:<11} {:<7} {:>9} {:>8}{rate}",
            id,
            rule.proto,
            ports,
            rule.direction,
            human(rule.packets),
            human(rule.bytes)
        );
    }
    let _ = writeln!(o);
    let nonzero = |m: &BTreeMap<String, u64>| -> String {
        let v: Vec<String> = m.iter().filter(|(_, n)| **n > 0).map(|(k, n)| format!("{k} {}", human(*n))).collect();
        if v.is_empty() { "-".into() } else { v.join(", ") }
    };
    let _ = writeln!(o, "passed without rule: {}", nonzero(&r.passed));
    let _ = writeln!(o, "dropped:             {}", nonzero(&r.drops));
    if r.mode == "dry-run" || r.totals.would_drop > 0 {
        let _ = writeln!(o, "would drop:          {}", nonzero(&r.would_drop));
    }
    let t = &r.totals;
    let _ = writeln!(
        o,
        "total: {} packets = {} by rule + {} other passes + {} dropped + {} would drop",
        t.packets, t.by_rule, t.passed_other, t.dropped, t.would_drop
    );
    o
}
