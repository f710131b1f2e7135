//! Observe: what a running agent publishes (its state file) and how `stats` reads and
//! shows it. The report is computed by a pure function from the state and the counters.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use ps_common::{
    layout::{
        Counter, FLOW_CNT_CREATED, FLOW_CNT_EXPIRED, FLOW_CNT_INSERT_FAILED, FLOW_CNT_SEEDED, FlowKey, FlowState,
        STAT_DROP_BASE, STAT_LOG_SUPPRESSED, STAT_PASS_BASE, STAT_WOULD_DROP_BASE,
    },
    reason::{DropReason, PassReason},
};
use serde::{Deserialize, Serialize};

use crate::{
    compile::{CompiledRule, RuleSet},
    config::{Mode, ReplyTracking},
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
    /// Bound system whose addresses may send this (`None`: any source).
    #[serde(default)]
    pub system: Option<String>,
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
            system: r.system.clone(),
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
    /// `stateful` or `stateless` (what is in force, after any fallback).
    pub reply_tracking: String,
    /// The site config the agent reads on reload (`None`: defaults).
    #[serde(default)]
    pub config: Option<PathBuf>,
    /// Active policy generation.
    #[serde(default)]
    pub generation: u32,
    /// Successful reloads.
    #[serde(default)]
    pub reloads: u64,
    /// Outcome of the last reload: `ok`, or the error (the running policy stayed).
    #[serde(default)]
    pub last_reload: Option<String>,
    /// Interface disappearances and re-attachments seen.
    #[serde(default)]
    pub link_events: u64,
    /// Since when the pinned counters count (seconds since the epoch; 0: unknown, use
    /// `started_unix`). They survive restarts (`crate::pinned`).
    #[serde(default)]
    pub counters_since_unix: u64,
    /// Time from reading the config to the last interface attached, milliseconds.
    #[serde(default)]
    pub policy_load_ms: u64,
    /// Kernel release (`uname -r`).
    #[serde(default)]
    pub kernel: String,
    /// The metrics endpoint, if any.
    #[serde(default)]
    pub metrics: Option<String>,
    /// The matrix rows, for the dry-run report's nearest-row hints.
    #[serde(default)]
    pub rows: Vec<crate::report::RowHint>,
}

/// A pending commit-confirm: enforce now, back to dry-run at the deadline unless
/// `ps-agent confirm` removes this file first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingConfirm {
    /// Seconds since the epoch.
    pub deadline_unix: u64,
}

impl PendingConfirm {
    /// Path in the state directory.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("confirm.json")
    }
}

/// Seconds since the epoch.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl AgentState {
    /// Build from a compiled rule set.
    #[expect(clippy::too_many_arguments, reason = "one field each, all required")]
    pub fn new(
        reply_tracking: ReplyTracking,
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
            reply_tracking: reply_tracking.as_str().into(),
            config: None,
            generation: 0,
            reloads: 0,
            last_reload: None,
            link_events: 0,
            counters_since_unix: 0,
            policy_load_ms: 0,
            kernel: String::new(),
            metrics: None,
            rows: vec![],
        }
    }

    /// Write to `dir/state.json` atomically (temporary file, rename).
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let path = Self::path(dir);
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self).expect("serializable"))?;
        std::fs::rename(&tmp, &path)
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
    /// Bound system whose addresses may send this.
    pub system: Option<String>,
    /// Description.
    pub description: String,
    /// Packets admitted, all interfaces.
    pub packets: u64,
    /// Bytes admitted, all interfaces.
    pub bytes: u64,
    /// Per interface name.
    pub per_interface: BTreeMap<String, Pb>,
    /// Packets the host sent under this rule (replies to inbound rules, outbound flows).
    pub egress_packets: u64,
    /// Bytes the host sent under this rule.
    pub egress_bytes: u64,
}

/// The flow table (stateful reply admission).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowSummary {
    /// Flows in the table now.
    pub tracked: u64,
    /// Table capacity.
    pub capacity: u64,
    /// Flows the egress program created.
    pub created: u64,
    /// Flows the agent seeded from the kernel's sockets at start.
    pub seeded: u64,
    /// Idle flows removed when a reply found them expired.
    pub expired: u64,
    /// Inserts that failed.
    pub insert_failed: u64,
    /// Flows the LRU evicted to make room: created + seeded − expired − tracked.
    pub evicted: u64,
}

/// Egress totals.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressReport {
    /// Sent under a rule.
    pub by_rule: u64,
    /// Sent without a rule (ARP, ICMP, NDP), per reason.
    pub passed: BTreeMap<String, u64>,
    /// No row allows it, and it was let out (`egress = "count"`), per reason.
    pub unmatched: BTreeMap<String, u64>,
    /// No row allows it, and it was dropped (`egress = "enforce"`), per reason.
    pub dropped: BTreeMap<String, u64>,
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
    /// `stateful` or `stateless`.
    pub reply_tracking: String,
    /// The flow table.
    pub flows: FlowSummary,
    /// What the host sent.
    pub egress: EgressReport,
    /// When the agent started (seconds since the epoch); `since_unix` is when the
    /// counters started, which survives restarts.
    #[serde(default)]
    pub started_unix: u64,
    /// Ingress per interface: totals, drops and would-drops by reason.
    #[serde(default)]
    pub per_interface: BTreeMap<String, IfaceReport>,
    /// Drop events: how many the program's rate limiter suppressed and how many a full
    /// ring buffer lost (the rest reached the agent's log).
    #[serde(default)]
    pub events: EventCounts,
}

/// Ingress of one interface.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IfaceReport {
    /// Every packet the program saw here.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Admitted by a rule.
    pub by_rule: Pb,
    /// Passed without a rule.
    pub passed: Pb,
    /// Dropped.
    pub dropped: Pb,
    /// Would have been dropped.
    pub would_drop: Pb,
    /// Dropped packets per reason (every reason).
    pub drops: BTreeMap<String, u64>,
    /// Would-drop packets per reason (every reason).
    pub would_drops: BTreeMap<String, u64>,
}

/// Drop events not logged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventCounts {
    /// Suppressed by the per-CPU token bucket.
    pub suppressed: u64,
    /// Lost: the ring buffer was full.
    pub lost: u64,
}

/// Build the report (pure). `tracked` and `capacity` describe the flow table now.
pub fn report(state: &AgentState, counters: &Counters, mode: Mode, tracked: u64, capacity: u64) -> StatsReport {
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
        let mut eg = Pb::default();
        for slot in &counters.egress_rules {
            if let Some(c) = slot.get(r.counter as usize) {
                eg.add(c);
            }
        }
        rules.push(RuleReport {
            egress_packets: eg.packets,
            egress_bytes: eg.bytes,
            id: r.id.clone(),
            rows: r.rows.clone(),
            origin: r.origin.clone(),
            proto: r.proto.clone(),
            ports: r.ports.clone(),
            direction: r.direction.clone(),
            interfaces: r.interfaces.clone(),
            system: r.system.clone(),
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
    let ebucket =
        |b: u32| -> u64 { counters.egress_stats.iter().map(|s| s.get(b as usize).map_or(0, |c| c.packets)).sum() };
    let mut egress = EgressReport { by_rule: rules.iter().map(|r| r.egress_packets).sum(), ..Default::default() };
    for r in PassReason::ALL {
        egress.passed.insert(r.as_str().into(), ebucket(STAT_PASS_BASE + r as u32));
    }
    for r in DropReason::ALL {
        egress.unmatched.insert(r.as_str().into(), ebucket(STAT_WOULD_DROP_BASE + r as u32));
        egress.dropped.insert(r.as_str().into(), ebucket(STAT_DROP_BASE + r as u32));
    }
    let fc = |i: u32| counters.flows.get(i as usize).copied().unwrap_or(0);
    let mut flows = FlowSummary {
        tracked,
        capacity,
        created: fc(FLOW_CNT_CREATED),
        seeded: fc(FLOW_CNT_SEEDED),
        expired: fc(FLOW_CNT_EXPIRED),
        insert_failed: fc(FLOW_CNT_INSERT_FAILED),
        evicted: 0,
    };
    flows.evicted = (flows.created + flows.seeded).saturating_sub(flows.expired + flows.tracked);
    let mut per_interface = BTreeMap::new();
    for a in &state.interfaces {
        let Some(st) = counters.stats.get(a.slot as usize) else { continue };
        let mut f = IfaceReport::default();
        for r in &rules {
            if let Some(pb) = r.per_interface.get(&a.name) {
                f.by_rule.packets += pb.packets;
                f.by_rule.bytes += pb.bytes;
            }
        }
        let at = |b: u32| st.get(b as usize).copied().unwrap_or_default();
        for r in PassReason::ALL {
            f.passed.add(&at(STAT_PASS_BASE + r as u32));
        }
        for r in DropReason::ALL {
            let (d, w) = (at(STAT_DROP_BASE + r as u32), at(STAT_WOULD_DROP_BASE + r as u32));
            f.dropped.add(&d);
            f.would_drop.add(&w);
            f.drops.insert(r.as_str().into(), d.packets);
            f.would_drops.insert(r.as_str().into(), w.packets);
        }
        f.packets = f.by_rule.packets + f.passed.packets + f.dropped.packets + f.would_drop.packets;
        f.bytes = f.by_rule.bytes + f.passed.bytes + f.dropped.bytes + f.would_drop.bytes;
        per_interface.insert(a.name.clone(), f);
    }
    let events = EventCounts {
        // Every drop and would-drop asks for one event: what was neither sent nor lost was
        // suppressed (see `STAT_EVENT_SENT`).
        suppressed: (totals.dropped + totals.would_drop)
            .saturating_sub(bucket(ps_common::observe::STAT_EVENT_SENT) + bucket(ps_common::observe::STAT_EVENT_LOST)),
        lost: bucket(ps_common::observe::STAT_EVENT_LOST),
    };
    StatsReport {
        started_unix: state.started_unix,
        per_interface,
        events,
        mode: mode.as_str().into(),
        product: state.product.clone(),
        fingerprint: state.fingerprint.clone(),
        pid: state.pid,
        since_unix: if state.counters_since_unix > 0 { state.counters_since_unix } else { state.started_unix },
        interfaces: state.interfaces.clone(),
        management_interface: state.management_interface.clone(),
        rules,
        drops,
        would_drop,
        passed,
        log_suppressed: bucket(STAT_LOG_SUPPRESSED),
        totals,
        reply_tracking: state.reply_tracking.clone(),
        flows,
        egress,
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
    let _ =
        writeln!(o, "ps-agent  mode: {}  replies: {}  pid: {}  policy: {}", r.mode, r.reply_tracking, r.pid, r.product);
    let _ = writeln!(o, "interfaces: {}", ifs.join(", "));
    let _ = writeln!(
        o,
        "counting since {} (agent started {})",
        crate::pinned::fmt_unix(r.since_unix),
        crate::pinned::fmt_unix(r.started_unix)
    );
    let _ = writeln!(o);
    let rate_hdr = if prev.is_some() { "     PPS" } else { "" };
    let _ = writeln!(
        o,
        "{:<20} {:<5} {:<11} {:<7} {:>8} {:>7} {:>8}{rate_hdr}",
        "RULE", "PROTO", "PORTS", "DIR", "IN PKTS", "BYTES", "OUT PKTS"
    );
    for rule in &r.rules {
        let mut id = rule.id.clone();
        if id.len() > 20 {
            id.truncate(19);
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
            "{:<20} {:<5} {:<11} {:<7} {:>8} {:>7} {:>8}{rate}",
            id,
            rule.proto,
            ports,
            rule.direction,
            human(rule.packets),
            human(rule.bytes),
            human(rule.egress_packets)
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
    let e = &r.egress;
    let _ = writeln!(
        o,
        "egress: {} by rule, {} unmatched let out, {} unmatched dropped",
        e.by_rule,
        e.unmatched.values().sum::<u64>(),
        e.dropped.values().sum::<u64>()
    );
    let f = &r.flows;
    if r.reply_tracking == "stateful" {
        let _ = writeln!(
            o,
            "flows: {} tracked of {} (created {}, seeded {}, expired {}, evicted {})",
            f.tracked, f.capacity, f.created, f.seeded, f.expired, f.evicted
        );
    }
    o
}

/// One tracked flow, for `ps-agent flows`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowReport {
    /// `tcp` / `udp`.
    pub proto: String,
    /// `SYN_SENT`, `ESTABLISHED`, `CLOSING`, `UDP`.
    pub state: String,
    /// Local address.
    pub local: String,
    /// Local port.
    pub local_port: u16,
    /// Remote address.
    pub remote: String,
    /// Remote port.
    pub remote_port: u16,
    /// Rule that allowed it.
    pub rule: String,
    /// Seconds since created.
    pub age_s: u64,
    /// Seconds since the last packet.
    pub idle_s: u64,
    /// Packets from the host.
    pub packets_out: u32,
    /// Replies admitted.
    pub packets_in: u32,
}

fn addr(family: u8, a: &[u8; 16]) -> String {
    if family == 4 {
        std::net::Ipv4Addr::new(a[0], a[1], a[2], a[3]).to_string()
    } else {
        std::net::Ipv6Addr::from(*a).to_string()
    }
}

/// The flows as `ps-agent flows` lists them, oldest first (pure: `now_ns` is
/// CLOCK_MONOTONIC).
pub fn flow_reports(state: &AgentState, flows: &[(FlowKey, FlowState)], now_ns: u64) -> Vec<FlowReport> {
    let mut v: Vec<FlowReport> = flows
        .iter()
        .map(|(k, f)| FlowReport {
            proto: if k.proto == 6 { "tcp".into() } else { "udp".into() },
            state: match f.state {
                ps_common::layout::FLOW_TCP_SYN_SENT => "SYN_SENT",
                ps_common::layout::FLOW_TCP_ESTABLISHED => "ESTABLISHED",
                ps_common::layout::FLOW_TCP_CLOSING => "CLOSING",
                _ => "UDP",
            }
            .into(),
            local: addr(k.family, &k.local),
            local_port: k.local_port,
            remote: addr(k.family, &k.remote),
            remote_port: k.remote_port,
            rule: state
                .rules
                .iter()
                .find(|r| r.counter == f.counter)
                .map_or_else(|| format!("#{}", f.counter), |r| r.id.clone()),
            age_s: now_ns.saturating_sub(f.created_ns) / 1_000_000_000,
            idle_s: now_ns.saturating_sub(f.last_ns) / 1_000_000_000,
            packets_out: f.packets_out,
            packets_in: f.packets_in,
        })
        .collect();
    v.sort_by(|a, b| b.age_s.cmp(&a.age_s).then(a.remote_port.cmp(&b.remote_port)));
    v
}

/// Render flows like `conntrack -L`.
pub fn render_flows(flows: &[FlowReport]) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    for f in flows {
        let _ = writeln!(
            o,
            "{} {} src={} dst={} sport={} dport={} rule={} age={}s idle={}s out={} in={}",
            f.proto,
            f.state,
            f.local,
            f.remote,
            f.local_port,
            f.remote_port,
            f.rule,
            f.age_s,
            f.idle_s,
            f.packets_out,
            f.packets_in
        );
    }
    let _ = writeln!(o, "{} flow(s)", flows.len());
    o
}
