//! The exposition text (pure): a report and the live facts of a scrape encoded as
//! OpenMetrics by the official `prometheus-client` crate, and the same text converted to the
//! classic Prometheus text format for scrapers that do not ask for OpenMetrics.

use std::collections::BTreeSet;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, info::Info},
    registry::Registry,
};

use crate::{
    dataplane::AttachMode,
    observe::{state::AgentState, stats::StatsReport},
    policy::config::ReplyTracking,
};

/// What a scrape adds to the report: what the kernel says now, and what the site asked for
/// (to tell a feature that runs degraded from one the site turned off).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Live {
    /// Interfaces where the agent's XDP program is attached now.
    pub attached: BTreeSet<String>,
    /// The site asked for native XDP (`xdp_mode = "native"`).
    pub asked_native_xdp: bool,
    /// The site asked for stateful reply admission.
    pub asked_stateful_replies: bool,
}

/// A feature that can run degraded, as `ps_agent_feature_degraded{feature}` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    /// Native (driver) XDP; degraded: an interface fell back to generic (skb) mode.
    NativeXdp,
    /// Stateful reply admission; degraded: the egress program could not attach, replies
    /// are admitted statelessly.
    StatefulReplies,
}

impl Feature {
    /// Every feature.
    pub const ALL: [Feature; 2] = [Self::NativeXdp, Self::StatefulReplies];

    /// The `feature` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NativeXdp => "native_xdp",
            Self::StatefulReplies => "stateful_replies",
        }
    }

    /// Is it running degraded?
    pub fn degraded(self, r: &StatsReport, live: &Live) -> bool {
        match self {
            Self::NativeXdp => live.asked_native_xdp && r.interfaces.iter().any(|a| a.xdp_mode == AttachMode::Skb),
            Self::StatefulReplies => live.asked_stateful_replies && r.reply_tracking != ReplyTracking::Stateful,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    rule: String,
    proto: String,
    ports: String,
    direction: String,
    interface: String,
    verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EgressRuleLabels {
    rule: String,
    proto: String,
    ports: String,
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
    interface: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EgressLabels {
    reason: String,
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FlowLabels {
    event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FeatureLabels {
    feature: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentLabels {
    version: String,
    mode: String,
    product: String,
    policy_fingerprint: String,
    kernel: String,
    xdp_mode: String,
    reply_tracking: String,
}

fn counter_family<S>(reg: &mut Registry, name: &str, help: &str) -> Family<S, Counter>
where
    S: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    let f = Family::<S, Counter>::default();
    reg.register(name, help, f.clone());
    f
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InterfaceLabels {
    interface: String,
}

/// Encode `r` (and `state`, and the scrape's `live` facts) as OpenMetrics text (pure).
pub fn encode_metrics(state: &AgentState, r: &StatsReport, live: &Live) -> String {
    let mut reg = Registry::default();
    encode_rules(&mut reg, r);
    encode_interfaces(&mut reg, r);
    encode_flows(&mut reg, r);
    encode_events(&mut reg, r);
    encode_agent(&mut reg, state, r, live);
    encode_health(&mut reg, r, live);
    let mut out = String::new();
    encode(&mut out, &reg).expect("writing to a String cannot fail");
    out
}

/// Ingress and egress counters per rule.
fn encode_rules(reg: &mut Registry, r: &StatsReport) {
    let rule_packets = counter_family::<RuleLabels>(reg, "ps_agent_rule_packets", "Packets admitted by a rule");
    let rule_bytes = counter_family::<RuleLabels>(reg, "ps_agent_rule_bytes", "Bytes admitted by a rule");
    let eg_packets = counter_family::<EgressRuleLabels>(
        reg,
        "ps_agent_egress_rule_packets",
        "Packets the host sent under a rule (replies to inbound rules, outbound flows)",
    );
    let eg_bytes =
        counter_family::<EgressRuleLabels>(reg, "ps_agent_egress_rule_bytes", "Bytes the host sent under a rule");
    for rule in &r.rules {
        let m = &rule.rule;
        for (iface, pb) in &rule.per_interface {
            let l = RuleLabels {
                rule: m.id.clone(),
                proto: m.proto.to_string(),
                ports: m.ports.clone(),
                direction: m.direction.to_string(),
                interface: iface.clone(),
                verdict: "pass".into(),
            };
            rule_packets.get_or_create(&l).inc_by(pb.packets);
            rule_bytes.get_or_create(&l).inc_by(pb.bytes);
        }
        let l = EgressRuleLabels {
            rule: m.id.clone(),
            proto: m.proto.to_string(),
            ports: m.ports.clone(),
            direction: m.direction.to_string(),
        };
        eg_packets.get_or_create(&l).inc_by(rule.egress_packets);
        eg_bytes.get_or_create(&l).inc_by(rule.egress_bytes);
    }
}

/// Drops, would-drops and every packet per interface; unmatched egress.
fn encode_interfaces(reg: &mut Registry, r: &StatsReport) {
    let drops = counter_family::<ReasonLabels>(reg, "ps_agent_drops", "Packets dropped, by reason and interface");
    let would = counter_family::<ReasonLabels>(
        reg,
        "ps_agent_would_drops",
        "Packets dry-run let through that enforcing would drop, by reason and interface",
    );
    let iface_packets = counter_family::<ReasonLabels>(
        reg,
        "ps_agent_interface_packets",
        "Every packet the XDP program saw, by interface (reason: rule, passed, dropped, would_drop)",
    );
    let iface_bytes =
        counter_family::<ReasonLabels>(reg, "ps_agent_interface_bytes", "Bytes, as ps_agent_interface_packets");
    for (iface, f) in &r.per_interface {
        let at = |reason: &str| ReasonLabels { reason: reason.into(), interface: iface.clone() };
        for (reason, n) in &f.drops {
            drops.get_or_create(&at(reason)).inc_by(*n);
        }
        for (reason, n) in &f.would_drops {
            would.get_or_create(&at(reason)).inc_by(*n);
        }
        for (what, pb) in
            [("rule", f.by_rule), ("passed", f.passed), ("dropped", f.dropped), ("would_drop", f.would_drop)]
        {
            iface_packets.get_or_create(&at(what)).inc_by(pb.packets);
            iface_bytes.get_or_create(&at(what)).inc_by(pb.bytes);
        }
    }
    let egress = counter_family::<EgressLabels>(
        reg,
        "ps_agent_egress_unmatched_packets",
        "Packets the host sent that no row allows (action: counted = let out, dropped = egress enforce)",
    );
    for (action, by_reason) in [("counted", &r.egress.unmatched), ("dropped", &r.egress.dropped)] {
        for (reason, n) in by_reason {
            egress.get_or_create(&EgressLabels { reason: reason.clone(), action: action.into() }).inc_by(*n);
        }
    }
}

/// The flow table: fill, capacity, events.
fn encode_flows(reg: &mut Registry, r: &StatsReport) {
    let tracked = Gauge::<i64>::default();
    tracked.set(r.flows.tracked as i64);
    reg.register("ps_agent_tracked_flows", "Outbound flows in the flow table now", tracked);
    let capacity = Gauge::<i64>::default();
    capacity.set(r.flows.capacity as i64);
    reg.register("ps_agent_flow_table_capacity", "Entries the flow table holds at most", capacity);
    let flows = counter_family::<FlowLabels>(reg, "ps_agent_flows", "Flow table events");
    for (ev, n) in [
        ("created", r.flows.created),
        ("seeded", r.flows.seeded),
        ("expired", r.flows.expired),
        ("closed", r.flows.closed),
        ("evicted", r.flows.evicted),
        ("insert_failed", r.flows.insert_failed),
    ] {
        flows.get_or_create(&FlowLabels { event: ev.into() }).inc_by(n);
    }
}

/// Drop events and log lines not logged.
fn encode_events(reg: &mut Registry, r: &StatsReport) {
    let counter = |n: u64| {
        let c = Counter::<u64>::default();
        c.inc_by(n);
        c
    };
    reg.register(
        "ps_agent_events_suppressed",
        "Drop events the program's rate limit suppressed (not logged)",
        counter(r.events.suppressed),
    );
    reg.register("ps_agent_events_lost", "Drop events lost to a full ring buffer", counter(r.events.lost));
    reg.register(
        "ps_agent_debug_log_suppressed",
        "aya-log debug lines the program's rate limit suppressed",
        counter(r.log_suppressed),
    );
}

/// The agent itself: its info (with the policy fingerprint), degraded features, load time,
/// since when it counts and when it started.
fn encode_agent(reg: &mut Registry, state: &AgentState, r: &StatsReport, live: &Live) {
    let mut modes: Vec<&str> = r.interfaces.iter().map(|a| a.xdp_mode.as_str()).collect();
    modes.dedup();
    reg.register(
        "ps_agent",
        "The running agent",
        Info::new(AgentLabels {
            version: state.version.clone(),
            mode: r.mode.to_string(),
            product: r.product.clone(),
            policy_fingerprint: r.fingerprint.clone(),
            kernel: state.kernel.clone(),
            xdp_mode: modes.join(","),
            reply_tracking: r.reply_tracking.to_string(),
        }),
    );
    let degraded = Family::<FeatureLabels, Gauge>::default();
    reg.register(
        "ps_agent_feature_degraded",
        "1 where the kernel lacks the feature and the agent runs its fallback (or without it), or the agent fell back from what the site asked (native_xdp, stateful_replies); 0 where present",
        degraded.clone(),
    );
    for (feature, status) in &r.features {
        let present = *status == crate::dataplane::probe::Status::Present;
        degraded.get_or_create(&FeatureLabels { feature: feature.clone() }).set(i64::from(!present));
    }
    // Beside the kernel's features, the agent's own fallbacks from what the site asked.
    for f in Feature::ALL {
        degraded.get_or_create(&FeatureLabels { feature: f.as_str().into() }).set(i64::from(f.degraded(r, live)));
    }
    let load = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    load.set(state.policy_load_ms as f64 / 1000.0);
    reg.register("ps_agent_policy_load_seconds", "Time from reading the config to the last interface attached", load);
    let gauge = |v: u64| {
        let g = Gauge::<i64>::default();
        g.set(v as i64);
        g
    };
    reg.register(
        "ps_agent_counters_since_seconds",
        "Since when the counters count (Unix time; survives restarts)",
        gauge(r.since_unix),
    );
    reg.register("ps_agent_start_time_seconds", "When the agent started (Unix time)", gauge(state.started_unix));
}

/// Whether enforcement is attached where it should be.
fn encode_health(reg: &mut Registry, r: &StatsReport, live: &Live) {
    let attached = Family::<InterfaceLabels, Gauge>::default();
    for a in &r.interfaces {
        let up = live.attached.contains(&a.name);
        attached.get_or_create(&InterfaceLabels { interface: a.name.clone() }).set(i64::from(up));
    }
    reg.register(
        "ps_agent_interface_attached",
        "1 when the agent's XDP program is attached to an interface it enforces on, 0 when it is not",
        attached,
    );
}

/// The classic Prometheus text format (0.0.4) of OpenMetrics text from [`encode_metrics`]:
/// counter families are named with their `_total` suffix, info families with `_info` and
/// typed as gauges, and `# UNIT` and `# EOF` go (the samples are the same).
pub fn to_classic(openmetrics: &str) -> String {
    let mut renamed = std::collections::HashMap::new();
    for l in openmetrics.lines() {
        if let Some((name, kind)) = l.strip_prefix("# TYPE ").and_then(|t| t.split_once(' ')) {
            match kind {
                "counter" => renamed.insert(name, (format!("{name}_total"), "counter")),
                "info" => renamed.insert(name, (format!("{name}_info"), "gauge")),
                _ => None,
            };
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for l in openmetrics.lines() {
        if l == "# EOF" || l.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# TYPE ", "# HELP "].into_iter().find_map(|p| l.strip_prefix(p).map(|rest| (p, rest)));
        match meta.and_then(|(p, rest)| rest.split_once(' ').map(|(name, tail)| (p, name, tail))) {
            Some((p, name, tail)) if renamed.contains_key(name) => {
                let (new, kind) = &renamed[name];
                let tail = if p == "# TYPE " { kind } else { tail };
                out.push_str(&format!("{p}{new} {tail}\n"));
            }
            _ => {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::{
        dataplane::{Attached, Counters},
        observe::stats::report,
        policy::compile::{HostFacts, compile},
        policy::config::{Config, ReplyTracking},
    };
    use ps_common::layout::{Counter, FLOW_CNT_CLOSED, FLOW_CNT_ENTRIES, STAT_DROP_BASE, STAT_WOULD_DROP_BASE};

    #[test]
    fn text_has_labels_and_values() {
        let set = compile(&Config::shipped(), &HostFacts::typical()).unwrap();
        let ifaces = vec![
            Attached { name: "eth0".into(), ifindex: 2, slot: 1, xdp_mode: AttachMode::Native },
            Attached { name: "eth1".into(), ifindex: 3, slot: 2, xdp_mode: AttachMode::Native },
        ];
        let mut state =
            AgentState::new(ReplyTracking::Stateful, &set, "PS 8.1.2", "p", "eth0", Path::new("/x"), 64, ifaces);
        state.kernel = "6.18.0".into();
        state.policy_load_ms = 1250;
        let zero = || vec![vec![Counter::default(); 64]; 16];
        let flows = vec![0; FLOW_CNT_ENTRIES as usize];
        let mut c = Counters { rules: zero(), stats: zero(), egress_rules: zero(), egress_stats: zero(), flows };
        c.flows[FLOW_CNT_CLOSED as usize] = 2;
        let ps14 =
            set.rules.iter().find(|r| r.id == "ps-14+ps-21" && r.kind.as_str() == "inbound").unwrap().counter as usize;
        c.rules[1][ps14] = Counter { packets: 7, bytes: 700 };
        c.stats[2][STAT_DROP_BASE as usize] = Counter { packets: 5, bytes: 300 };
        c.stats[1][STAT_WOULD_DROP_BASE as usize + 1] = Counter { packets: 2, bytes: 120 };
        let r = report(&state, &c, crate::policy::config::Mode::Enforce, 3, 65536);
        let live = Live {
            attached: BTreeSet::from(["eth1".to_string()]),
            asked_native_xdp: true,
            asked_stateful_replies: true,
        };
        let text = encode_metrics(&state, &r, &live);
        let has = |l: &str| assert!(text.lines().any(|x| x == l), "missing `{l}` in\n{text}");
        has(r#"ps_agent_flows_total{event="closed"} 2"#);
        has(r#"ps_agent_drops_total{reason="out_of_window",interface="eth0"} 0"#);
        has(
            r#"ps_agent_rule_packets_total{rule="ps-14+ps-21",proto="tcp",ports="7001-7199",direction="inbound",interface="eth0",verdict="pass"} 7"#,
        );
        has(
            r#"ps_agent_rule_bytes_total{rule="ps-14+ps-21",proto="tcp",ports="7001-7199",direction="inbound",interface="eth0",verdict="pass"} 700"#,
        );
        has(r#"ps_agent_drops_total{reason="no_rule",interface="eth1"} 5"#);
        has(r#"ps_agent_drops_total{reason="no_rule",interface="eth0"} 0"#);
        has(r#"ps_agent_would_drops_total{reason="interface",interface="eth0"} 2"#);
        has(r#"ps_agent_interface_packets_total{reason="dropped",interface="eth1"} 5"#);
        has("ps_agent_tracked_flows 3");
        has("ps_agent_policy_load_seconds 1.25");
        has(r#"ps_agent_interface_attached{interface="eth0"} 0"#);
        has(r#"ps_agent_interface_attached{interface="eth1"} 1"#);
        has(r#"ps_agent_feature_degraded{feature="native_xdp"} 0"#);
        has(r#"ps_agent_feature_degraded{feature="stateful_replies"} 0"#);
        assert!(text.contains("# TYPE ps_agent_rule_packets counter"));
        let info = text.lines().find(|l| l.starts_with("ps_agent_info{")).expect("info");
        for want in [
            "mode=\"enforce\"",
            "kernel=\"6.18.0\"",
            "xdp_mode=\"native\"",
            &format!("policy_fingerprint=\"{}\"", set.fingerprint()),
        ] {
            assert!(info.contains(want), "{info} lacks {want}");
        }
        assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
        assert!(
            !text.contains(r#"ps_agent_feature_degraded{feature="ringbuf"}"#),
            "no kernel features recorded, no kernel feature series: {text}"
        );
    }

    /// 5.4's features: the gauge is 1 for each feature the kernel lacks, 0 for the others;
    /// without a ring buffer no event counts as suppressed.
    #[test]
    fn degraded_features_are_gauges() {
        let set = compile(&Config::shipped(), &HostFacts::typical()).unwrap();
        let ifaces = vec![Attached { name: "eth0".into(), ifindex: 2, slot: 1, xdp_mode: AttachMode::Skb }];
        let mut state =
            AgentState::new(ReplyTracking::Stateful, &set, "PS 8.1.2", "p", "eth0", Path::new("/x"), 64, ifaces);
        let mut f = crate::dataplane::probe::Features::ALL;
        f.disable("coarse_clock,ringbuf,tcx").unwrap();
        (f.bpf_link, f.test_run_ctx) = (false, false);
        state.features = Some(f);
        let zero = || vec![vec![Counter::default(); 64]; 16];
        let mut c = Counters {
            rules: zero(),
            stats: zero(),
            egress_rules: zero(),
            egress_stats: zero(),
            flows: vec![0; FLOW_CNT_ENTRIES as usize],
        };
        c.stats[1][STAT_DROP_BASE as usize] = Counter { packets: 5, bytes: 300 };
        let r = report(&state, &c, crate::policy::config::Mode::Enforce, 0, 65536);
        assert_eq!(r.features["ringbuf"], crate::dataplane::probe::Status::Degraded);
        assert_eq!(r.features["test_run_ctx"], crate::dataplane::probe::Status::Missing);
        assert_eq!(r.features["jiffies"], crate::dataplane::probe::Status::Present);
        assert_eq!(r.events.suppressed, 0, "no ring buffer: no event asked for, none suppressed");
        let text = encode_metrics(&state, &r, &Live::default());
        let has = |l: &str| assert!(text.lines().any(|x| x == l), "missing `{l}` in\n{text}");
        for lacking in ["coarse_clock", "ringbuf", "tcx", "bpf_link", "test_run_ctx"] {
            has(&format!(r#"ps_agent_feature_degraded{{feature="{lacking}"}} 1"#));
        }
        has(r#"ps_agent_feature_degraded{feature="jiffies"} 0"#);
        assert!(
            crate::observe::stats::render_table(&r, None)
                .contains("kernel features degraded or missing: bpf_link, coarse_clock")
        );
    }

    #[test]
    fn site_config_names_the_address() {
        let m = crate::policy::config::Matrix::shipped();
        let site = crate::policy::config::Site::parse("metrics = \"127.0.0.1:9500\"\n", "site.toml", &m).unwrap();
        assert_eq!(site.metrics, Some("127.0.0.1:9500".parse().unwrap()));
        assert_eq!(crate::policy::config::Site::parse("", "site.toml", &m).unwrap().metrics, None, "off unless asked");
        let e = crate::policy::config::Site::parse("mode = \"enforce\"\nmetrics = \"9487\"\n", "site.toml", &m)
            .unwrap_err();
        assert!(e.to_string().starts_with("site.toml:2: field `metrics`: invalid address `9487`"), "{e}");
    }
}
