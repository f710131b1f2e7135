//! Tests of the shipped Grafana dashboard (`ps-agent/grafana/ps-agent.json`) against the
//! encoder: every metric a query names is served, and no aggregation sums away `instance`,
//! so a dashboard over several hosts still shows which host drops. (That every query
//! parses, and returns series with `instance`, is checked with a real Prometheus in
//! `tests/tests/prometheus.rs`.)

use std::{collections::BTreeSet, path::Path};

use super::encode::{Live, encode_metrics};
use crate::{
    dataplane::{AttachMode, Attached, Counters},
    observe::{state::AgentState, stats::report},
    policy::{
        compile::{HostFacts, compile},
        config::{Config, Mode, ReplyTracking},
    },
};

const DASHBOARD: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/grafana/ps-agent.json"));

/// Aggregations that drop every label they are not grouped by.
const AGGREGATIONS: [&str; 10] =
    ["sum", "avg", "min", "max", "count", "group", "stddev", "stdvar", "quantile", "count_values"];

fn served() -> BTreeSet<String> {
    let set = compile(&Config::shipped(), &HostFacts::typical()).unwrap();
    let ifaces = vec![Attached { name: "eth0".into(), ifindex: 2, slot: 1, xdp_mode: AttachMode::Native }];
    let state = AgentState::new(ReplyTracking::Stateful, &set, "PS", "p", "eth0", Path::new("/x"), 64, ifaces);
    let zero = || vec![vec![ps_common::layout::Counter::default(); 64]; 16];
    let c = Counters {
        rules: zero(),
        stats: zero(),
        egress_rules: zero(),
        egress_stats: zero(),
        flows: vec![0; ps_common::layout::FLOW_CNT_ENTRIES as usize],
    };
    let text = encode_metrics(&state, &report(&state, &c, Mode::Enforce, 0, 1), &Live::default());
    text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split(['{', ' ']).next()).map(String::from).collect()
}

/// Every `(panel title, expression)` of the dashboard.
pub fn queries() -> Vec<(String, String)> {
    let dash: serde_json::Value = serde_json::from_str(DASHBOARD).unwrap();
    let mut out = vec![];
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            out.push((p["title"].as_str().unwrap().to_string(), t["expr"].as_str().unwrap().to_string()));
        }
    }
    out
}

/// The text between the parenthesis at `open` and its match.
fn group(expr: &str, open: usize) -> (&str, usize) {
    let mut depth = 0;
    for (i, c) in expr[open..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return (&expr[open + 1..open + i], open + i + 1);
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced parentheses in `{expr}`");
}

/// The aggregations of `expr` that lose `instance`, as written.
fn instance_dropped(expr: &str) -> Vec<String> {
    let mut bad = vec![];
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut words = vec![];
    let mut start = None;
    for (i, c) in expr.char_indices().chain([(expr.len(), ' ')]) {
        match (is_word(c), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                words.push((s, &expr[s..i]));
                start = None;
            }
            _ => {}
        }
    }
    for &(at, w) in &words {
        if !AGGREGATIONS.contains(&w) {
            continue;
        }
        let rest = expr[at + w.len()..].trim_start();
        let grouping = |clause: &str| -> Option<(bool, String)> {
            let kw = ["by", "without"]
                .into_iter()
                .find(|k| clause.starts_with(k) && clause[k.len()..].trim_start().starts_with('('))?;
            let open = clause.find('(').unwrap();
            let labels = group(clause, open).0.to_string();
            Some((kw == "by", labels))
        };
        let g = grouping(rest).or_else(|| {
            let open = rest.find('(')?;
            let after = rest[group(rest, open).1..].trim_start();
            grouping(after)
        });
        let keeps = match g {
            Some((true, labels)) => labels.split(',').any(|l| l.trim() == "instance"),
            Some((false, labels)) => !labels.split(',').any(|l| l.trim() == "instance"),
            None => false,
        };
        if !keeps {
            bad.push(format!("`{w}` at byte {at}"));
        }
    }
    bad
}

#[test]
fn queries_name_only_served_metrics() {
    let served = served();
    let mut used = BTreeSet::new();
    for (title, expr) in queries() {
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("ps_agent_") {
                assert!(served.contains(word), "panel `{title}` queries `{word}`, which is not served");
                used.insert(word.to_string());
            }
        }
    }
    assert!(used.len() >= 18, "{used:?}");
    for health in ["ps_agent_interface_attached", "ps_agent_feature_degraded"] {
        assert!(used.contains(health), "no panel shows {health}");
    }
}

#[test]
fn no_panel_sums_away_the_host() {
    for (title, expr) in queries() {
        let bad = instance_dropped(&expr);
        assert!(bad.is_empty(), "panel `{title}`: {} drop `instance` in `{expr}`", bad.join(", "));
        assert!(expr.contains("instance=~\"$instance\""), "panel `{title}` ignores the host picker: `{expr}`");
    }
    let dash: serde_json::Value = serde_json::from_str(DASHBOARD).unwrap();
    assert!(dash.get("__inputs").is_none(), "no input that no panel uses");
}

#[test]
fn the_instance_check_can_fail() {
    assert_eq!(instance_dropped("sum by (reason, interface) (rate(x[5m]))").len(), 1);
    assert_eq!(instance_dropped("sum(rate(x[5m])) by (reason)").len(), 1);
    assert_eq!(instance_dropped("8 * sum(rate(x[5m]))").len(), 1);
    assert_eq!(instance_dropped("sum without (instance) (x)").len(), 1);
    assert!(instance_dropped("sum(rate(x[5m])) by (instance, reason)").is_empty());
    assert!(instance_dropped("topk(10, sum by (instance, rule) (rate(x[5m])))").is_empty());
    assert!(instance_dropped("sum without (interface) (x)").is_empty());
    assert!(instance_dropped("rate(ps_agent_sum_total[5m])").is_empty(), "a metric name is not an aggregation");
}
