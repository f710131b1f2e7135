//! `ps-agent stats`: the report computed by a pure function from the state file and the
//! counters, and its table.

use std::{collections::BTreeMap, path::Path};

use ps_common::{
    layout::{
        Counter, FLOW_CNT_CLOSED, FLOW_CNT_CREATED, FLOW_CNT_EXPIRED, FLOW_CNT_INSERT_FAILED, FLOW_CNT_SEEDED,
        STAT_DROP_BASE, STAT_LOG_SUPPRESSED, STAT_PASS_BASE, STAT_WOULD_DROP_BASE,
    },
    reason::{DropReason, PassReason},
};
use serde::{Deserialize, Serialize};

use super::{
    ObserveError,
    format::{fit, human},
    state::{AgentState, RuleMeta, read_state},
};
use crate::{
    dataplane::{Attached, Counters, pins},
    policy::config::{Mode, ReplyTracking},
};

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
    /// The rule, as the state file records it.
    #[serde(flatten)]
    pub rule: RuleMeta,
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
    /// Flows idle past their timeout: removed when a reply found them, or still in the
    /// table (never listed or counted as tracked).
    pub expired: u64,
    /// TCP flows a RST ended (the host's, or an exact one from the remote end).
    #[serde(default)]
    pub closed: u64,
    /// Inserts that failed.
    pub insert_failed: u64,
    /// Flows the LRU evicted to make room: created + seeded − expired − closed − tracked.
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

impl EgressReport {
    /// Outgoing packets no row allows that were let out (`egress = "count"`) for `reason`.
    pub fn unmatched_count(&self, reason: DropReason) -> u64 {
        self.unmatched.get(reason.as_str()).copied().unwrap_or(0)
    }

    /// Outgoing packets no row allows that were dropped (`egress = "enforce"`) for `reason`.
    pub fn dropped_count(&self, reason: DropReason) -> u64 {
        self.dropped.get(reason.as_str()).copied().unwrap_or(0)
    }
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
    /// The mode in force.
    pub mode: Mode,
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
    /// Reply admission in force.
    pub reply_tracking: ReplyTracking,
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
    /// Each probed kernel feature (`crate::dataplane::probe::Feature::name`) → `present`, `degraded`
    /// or `missing`; empty for an agent that did not record them.
    #[serde(default)]
    pub features: BTreeMap<String, crate::dataplane::probe::Status>,
}

/// The per-reason tables are keyed by the reason's `as_str()` (the JSON's keys); these
/// read them by the reason itself.
impl StatsReport {
    /// Packets dropped for `reason`, all interfaces.
    pub fn drop_count(&self, reason: DropReason) -> u64 {
        self.drops.get(reason.as_str()).copied().unwrap_or(0)
    }

    /// Packets that would have been dropped for `reason` (dry-run), all interfaces.
    pub fn would_drop_count(&self, reason: DropReason) -> u64 {
        self.would_drop.get(reason.as_str()).copied().unwrap_or(0)
    }

    /// Packets passed without a rule for `reason`, all interfaces.
    pub fn pass_count(&self, reason: PassReason) -> u64 {
        self.passed.get(reason.as_str()).copied().unwrap_or(0)
    }

    /// How `feature` stands, if the agent recorded its features.
    pub fn feature(&self, feature: crate::dataplane::probe::Feature) -> Option<crate::dataplane::probe::Status> {
        self.features.get(feature.name()).copied()
    }
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
    let rules: Vec<RuleReport> = state.rules.iter().map(|r| rule_report(state, counters, r)).collect();
    let bucket = |b: u32| -> u64 { counters.stats.iter().map(|s| s.get(b as usize).map_or(0, |c| c.packets)).sum() };
    let drops = by_reason(DropReason::ALL.map(|r| (r.as_str(), bucket(STAT_DROP_BASE + r as u32))));
    let would_drop = by_reason(DropReason::ALL.map(|r| (r.as_str(), bucket(STAT_WOULD_DROP_BASE + r as u32))));
    let passed = by_reason(PassReason::ALL.map(|r| (r.as_str(), bucket(STAT_PASS_BASE + r as u32))));
    let mut totals = Totals {
        by_rule: rules.iter().map(|r| r.packets).sum(),
        passed_other: passed.values().sum(),
        dropped: drops.values().sum(),
        would_drop: would_drop.values().sum(),
        packets: 0,
    };
    totals.packets = totals.by_rule + totals.passed_other + totals.dropped + totals.would_drop;
    let ring = state.features.is_none_or(|f| f.ringbuf);
    let events = EventCounts {
        // Every drop and would-drop asks for one event: what was neither sent nor lost was
        // suppressed (see `STAT_EVENT_SENT`). Without a ring buffer none is asked for.
        suppressed: if ring { totals.dropped + totals.would_drop } else { 0 }
            .saturating_sub(bucket(ps_common::observe::STAT_EVENT_SENT) + bucket(ps_common::observe::STAT_EVENT_LOST)),
        lost: bucket(ps_common::observe::STAT_EVENT_LOST),
    };
    StatsReport {
        started_unix: state.started_unix,
        per_interface: per_interface(state, counters, &rules),
        events,
        features: features(state),
        mode,
        product: state.product.clone(),
        fingerprint: state.fingerprint.clone(),
        pid: state.pid,
        since_unix: if state.counters_since_unix > 0 { state.counters_since_unix } else { state.started_unix },
        interfaces: state.interfaces.clone(),
        management_interface: state.management_interface.clone(),
        egress: egress(counters, &rules),
        rules,
        drops,
        would_drop,
        passed,
        log_suppressed: bucket(STAT_LOG_SUPPRESSED),
        totals,
        reply_tracking: state.reply_tracking,
        flows: flow_summary(counters, tracked, capacity),
    }
}

/// Each probed kernel feature and how it stands (empty for a state file without them).
fn features(state: &AgentState) -> BTreeMap<String, crate::dataplane::probe::Status> {
    let Some(f) = state.features else { return BTreeMap::new() };
    crate::dataplane::probe::Feature::ALL.iter().map(|x| (x.name().into(), f.status(*x))).collect()
}

fn by_reason<const N: usize>(counts: [(&str, u64); N]) -> BTreeMap<String, u64> {
    counts.into_iter().map(|(r, n)| (r.to_string(), n)).collect()
}

/// One rule's ingress counters per interface and in all, and its egress counters.
fn rule_report(state: &AgentState, counters: &Counters, r: &RuleMeta) -> RuleReport {
    let at = |slot: &Vec<Counter>| slot.get(r.counter as usize).copied().unwrap_or_default();
    let (mut all, mut per) = (Pb::default(), BTreeMap::new());
    for a in &state.interfaces {
        let c = counters.rules.get(a.slot as usize).map(at).unwrap_or_default();
        let mut pb = Pb::default();
        pb.add(&c);
        all.add(&c);
        per.insert(a.name.clone(), pb);
    }
    // Slot 0 (an unconfigured interface) cannot occur on attached interfaces, but count it
    // so the totals still add up.
    if let Some(c) = counters.rules.first() {
        all.add(&at(c));
    }
    let mut eg = Pb::default();
    for slot in &counters.egress_rules {
        eg.add(&at(slot));
    }
    RuleReport {
        rule: r.clone(),
        packets: all.packets,
        bytes: all.bytes,
        per_interface: per,
        egress_packets: eg.packets,
        egress_bytes: eg.bytes,
    }
}

/// What the host sent: by rule, and without one by reason.
fn egress(counters: &Counters, rules: &[RuleReport]) -> EgressReport {
    let bucket =
        |b: u32| -> u64 { counters.egress_stats.iter().map(|s| s.get(b as usize).map_or(0, |c| c.packets)).sum() };
    EgressReport {
        by_rule: rules.iter().map(|r| r.egress_packets).sum(),
        passed: by_reason(PassReason::ALL.map(|r| (r.as_str(), bucket(STAT_PASS_BASE + r as u32)))),
        unmatched: by_reason(DropReason::ALL.map(|r| (r.as_str(), bucket(STAT_WOULD_DROP_BASE + r as u32)))),
        dropped: by_reason(DropReason::ALL.map(|r| (r.as_str(), bucket(STAT_DROP_BASE + r as u32)))),
    }
}

fn flow_summary(counters: &Counters, tracked: u64, capacity: u64) -> FlowSummary {
    let fc = |i: u32| counters.flows.get(i as usize).copied().unwrap_or(0);
    let mut flows = FlowSummary {
        tracked,
        capacity,
        created: fc(FLOW_CNT_CREATED),
        seeded: fc(FLOW_CNT_SEEDED),
        expired: fc(FLOW_CNT_EXPIRED),
        closed: fc(FLOW_CNT_CLOSED),
        insert_failed: fc(FLOW_CNT_INSERT_FAILED),
        evicted: 0,
    };
    flows.evicted = (flows.created + flows.seeded).saturating_sub(flows.expired + flows.closed + flows.tracked);
    flows
}

/// Ingress of each attached interface: totals, drops and would-drops by reason.
fn per_interface(state: &AgentState, counters: &Counters, rules: &[RuleReport]) -> BTreeMap<String, IfaceReport> {
    let mut out = BTreeMap::new();
    for a in &state.interfaces {
        let Some(st) = counters.stats.get(a.slot as usize) else { continue };
        let mut f = IfaceReport::default();
        for r in rules {
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
        out.insert(a.name.clone(), f);
    }
    out
}

/// Render the report as an aligned table that fits 80 columns. `prev` and `secs` give
/// rates (packets/s) when watching.
pub fn render_table(r: &StatsReport, prev: Option<(&StatsReport, f64)>) -> String {
    let mut o = table_header(r);
    o.push_str(&rule_table(r, prev));
    o.push_str(&table_totals(r));
    o
}

/// Mode, interfaces, degraded features, since when.
fn table_header(r: &StatsReport) -> String {
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
    let present = crate::dataplane::probe::Status::Present;
    let lacking: Vec<&str> = r.features.iter().filter(|(_, v)| **v != present).map(|(k, _)| k.as_str()).collect();
    if !lacking.is_empty() {
        let _ = writeln!(
            o,
            "kernel features degraded or missing: {} (`ps-agent doctor` says what runs instead)",
            lacking.join(", ")
        );
    }
    let (since, started) = (crate::clock::fmt_unix(r.since_unix), crate::clock::fmt_unix(r.started_unix));
    let _ = writeln!(o, "counting since {since} (agent started {started})\n");
    o
}

/// One line per rule, with its rate when `prev` gives one.
fn rule_table(r: &StatsReport, prev: Option<(&StatsReport, f64)>) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let rate_hdr = if prev.is_some() { "     PPS" } else { "" };
    let _ = writeln!(
        o,
        "{:<20} {:<5} {:<11} {:<7} {:>8} {:>7} {:>8}{rate_hdr}",
        "RULE", "PROTO", "PORTS", "DIR", "IN PKTS", "BYTES", "OUT PKTS"
    );
    let same = |a: &RuleMeta, b: &RuleMeta| a.id == b.id && a.proto == b.proto && a.direction == b.direction;
    for rule in &r.rules {
        let rate = prev.map_or(String::new(), |(p, secs)| {
            let before = p.rules.iter().find(|x| same(&x.rule, &rule.rule)).map_or(0, |x| x.packets);
            format!(" {:>7.0}", rule.packets.saturating_sub(before) as f64 / secs.max(0.001))
        });
        let _ = writeln!(
            o,
            "{:<20} {:<5} {:<11} {:<7} {:>8} {:>7} {:>8}{rate}",
            fit(&rule.rule.id, 20),
            rule.rule.proto,
            fit(&rule.rule.ports, 11),
            rule.rule.direction,
            human(rule.packets),
            human(rule.bytes),
            human(rule.egress_packets)
        );
    }
    o.push('\n');
    o
}

/// Passes and drops by reason, the totals, egress and the flow table.
fn table_totals(r: &StatsReport) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let nonzero = |m: &BTreeMap<String, u64>| -> String {
        let v: Vec<String> = m.iter().filter(|(_, n)| **n > 0).map(|(k, n)| format!("{k} {}", human(*n))).collect();
        if v.is_empty() { "-".into() } else { v.join(", ") }
    };
    let _ = writeln!(o, "passed without rule: {}", nonzero(&r.passed));
    let _ = writeln!(o, "dropped:             {}", nonzero(&r.drops));
    if r.mode == Mode::DryRun || r.totals.would_drop > 0 {
        let _ = writeln!(o, "would drop:          {}", nonzero(&r.would_drop));
    }
    let t = &r.totals;
    let _ = writeln!(
        o,
        "total: {} packets = {} by rule + {} other passes + {} dropped + {} would drop",
        t.packets, t.by_rule, t.passed_other, t.dropped, t.would_drop
    );
    let e = &r.egress;
    let (unmatched, dropped) = (e.unmatched.values().sum::<u64>(), e.dropped.values().sum::<u64>());
    let _ = writeln!(o, "egress: {} by rule, {unmatched} unmatched let out, {dropped} unmatched dropped", e.by_rule);
    let f = &r.flows;
    if r.reply_tracking == ReplyTracking::Stateful {
        let _ = writeln!(
            o,
            "flows: {} tracked of {} (created {}, seeded {}, expired {}, closed {}, evicted {})",
            f.tracked, f.capacity, f.created, f.seeded, f.expired, f.closed, f.evicted
        );
    }
    o
}

/// The state and the `stats` report of the agent running with `state_dir`, read from its
/// pinned maps now.
pub fn snapshot(state_dir: &Path) -> Result<(AgentState, StatsReport), ObserveError> {
    let state = read_state(state_dir)?;
    let mut counters = Counters::read_pinned(&state.pin_dir, state.rules_cap)?;
    let mode = pins::read_mode(&state.pin_dir)?;
    let flows = super::flows::census(&state.pin_dir)?;
    flows.count_expired(&mut counters);
    let capacity = pins::flow_capacity(&state.pin_dir)? as u64;
    let report = report(&state, &counters, mode, flows.tracked(), capacity);
    Ok((state, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_and_non_ascii_ids_are_clipped_by_characters() {
        let mut r: StatsReport = serde_json::from_value(serde_json::json!({
            "mode": "enforce", "product": "P", "fingerprint": "f", "pid": 1, "since_unix": 0,
            "interfaces": [], "management_interface": "eth0", "rules": [], "drops": {},
            "would_drop": {}, "passed": {}, "log_suppressed": 0,
            "totals": {"packets": 0, "by_rule": 0, "passed_other": 0, "dropped": 0, "would_drop": 0},
            "reply_tracking": "stateful",
            "flows": {"tracked": 0, "capacity": 0, "created": 0, "seeded": 0, "expired": 0, "insert_failed": 0, "evicted": 0},
            "egress": {"by_rule": 0, "passed": {}, "unmatched": {}, "dropped": {}}
        }))
        .unwrap();
        r.rules =
            vec![serde_json::from_value(serde_json::json!({
            "id": "site-snmp-monitorsüng", "rows": [], "origin": "site", "proto": "udp", "ports": "161-162,1161ü",
            "direction": "inbound", "interfaces": null, "description": "", "counter": 0,
            "packets": 1, "bytes": 1, "per_interface": {}, "egress_packets": 0, "egress_bytes": 0
        }))
        .unwrap()];
        let text = render_table(&r, None);
        assert!(text.contains("site-snmp-monitorsü~"), "{text}");
    }

    /// Each reason's count is read back by the reason, from the bucket the program counts it in.
    #[test]
    fn counts_are_read_by_reason() {
        use std::path::Path;

        use ps_common::layout::Counter;

        use crate::{
            dataplane::{
                AttachMode,
                probe::{Feature, Features, Status},
            },
            policy::compile::{HostFacts, compile},
            policy::config::Config,
        };
        let set = compile(&Config::shipped(), &HostFacts::typical()).unwrap();
        let ifaces = vec![Attached { name: "eth0".into(), ifindex: 2, slot: 1, xdp_mode: AttachMode::Native }];
        let mut state =
            AgentState::new(ReplyTracking::Stateful, &set, "PS 8.1.2", "p", "eth0", Path::new("/x"), 64, ifaces);
        let mut features = Features::ALL;
        features.disable("ringbuf").unwrap();
        state.features = Some(features);
        let zero = || vec![vec![Counter::default(); 64]; 16];
        let mut c =
            Counters { rules: zero(), stats: zero(), egress_rules: zero(), egress_stats: zero(), flows: vec![0; 4] };
        let at = |base: u32, r: u32| (base + r) as usize;
        c.stats[1][at(STAT_DROP_BASE, DropReason::Source as u32)] = Counter { packets: 5, bytes: 300 };
        c.stats[1][at(STAT_WOULD_DROP_BASE, DropReason::Interface as u32)] = Counter { packets: 2, bytes: 120 };
        c.stats[1][at(STAT_PASS_BASE, PassReason::Ndp as u32)] = Counter { packets: 3, bytes: 200 };
        let r = report(&state, &c, Mode::Enforce, 0, 64);
        assert_eq!((r.drop_count(DropReason::Source), r.drop_count(DropReason::NoRule)), (5, 0));
        assert_eq!((r.would_drop_count(DropReason::Interface), r.would_drop_count(DropReason::Source)), (2, 0));
        assert_eq!((r.pass_count(PassReason::Ndp), r.pass_count(PassReason::Arp)), (3, 0));
        assert_eq!(r.feature(Feature::Ringbuf), Some(Status::Degraded));
        assert_eq!(r.feature(Feature::Jiffies), Some(Status::Present));
    }
}
