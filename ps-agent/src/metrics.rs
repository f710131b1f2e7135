//! The metrics endpoint: `ps-agent run --metrics [ADDR]` serves OpenMetrics text on
//! `GET /metrics`, encoded by the official `prometheus-client` crate. Every scrape reads
//! the pinned maps, as `ps-agent stats` does (no state is kept between scrapes).
//!
//! `--metrics` alone listens on `127.0.0.1:9487`; another address must be given
//! explicitly (and a non-loopback one is logged with a warning: the endpoint has no
//! authentication). The responder is a minimal HTTP/1.1 server on tokio: one request per
//! connection, `Connection: close`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use log::{debug, warn};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, info::Info},
    registry::Registry,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

use crate::observe::{AgentState, StatsReport};

/// Default address of `--metrics` without a value.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9487";

/// `Content-Type` of the answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

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

/// Encode `r` (and `state`) as OpenMetrics text (pure).
pub fn encode_metrics(state: &AgentState, r: &StatsReport) -> String {
    let mut reg = Registry::default();
    let rule_packets = counter_family::<RuleLabels>(&mut reg, "ps_agent_rule_packets", "Packets admitted by a rule");
    let rule_bytes = counter_family::<RuleLabels>(&mut reg, "ps_agent_rule_bytes", "Bytes admitted by a rule");
    for rule in &r.rules {
        for (iface, pb) in &rule.per_interface {
            let l = RuleLabels {
                rule: rule.id.clone(),
                proto: rule.proto.clone(),
                ports: rule.ports.clone(),
                direction: rule.direction.clone(),
                interface: iface.clone(),
                verdict: "pass".into(),
            };
            rule_packets.get_or_create(&l).inc_by(pb.packets);
            rule_bytes.get_or_create(&l).inc_by(pb.bytes);
        }
    }
    let eg_packets = counter_family::<EgressRuleLabels>(
        &mut reg,
        "ps_agent_egress_rule_packets",
        "Packets the host sent under a rule (replies to inbound rules, outbound flows)",
    );
    let eg_bytes =
        counter_family::<EgressRuleLabels>(&mut reg, "ps_agent_egress_rule_bytes", "Bytes the host sent under a rule");
    for rule in &r.rules {
        let l = EgressRuleLabels {
            rule: rule.id.clone(),
            proto: rule.proto.clone(),
            ports: rule.ports.clone(),
            direction: rule.direction.clone(),
        };
        eg_packets.get_or_create(&l).inc_by(rule.egress_packets);
        eg_bytes.get_or_create(&l).inc_by(rule.egress_bytes);
    }
    let drops = counter_family::<ReasonLabels>(&mut reg, "ps_agent_drops", "Packets dropped, by reason and interface");
    let would = counter_family::<ReasonLabels>(
        &mut reg,
        "ps_agent_would_drops",
        "Packets dry-run let through that enforcing would drop, by reason and interface",
    );
    let iface_packets = counter_family::<ReasonLabels>(
        &mut reg,
        "ps_agent_interface_packets",
        "Every packet the XDP program saw, by interface (reason: rule, passed, dropped, would_drop)",
    );
    let iface_bytes =
        counter_family::<ReasonLabels>(&mut reg, "ps_agent_interface_bytes", "Bytes, as ps_agent_interface_packets");
    for (iface, f) in &r.per_interface {
        for (reason, n) in &f.drops {
            drops.get_or_create(&ReasonLabels { reason: reason.clone(), interface: iface.clone() }).inc_by(*n);
        }
        for (reason, n) in &f.would_drops {
            would.get_or_create(&ReasonLabels { reason: reason.clone(), interface: iface.clone() }).inc_by(*n);
        }
        for (what, pb) in
            [("rule", f.by_rule), ("passed", f.passed), ("dropped", f.dropped), ("would_drop", f.would_drop)]
        {
            let l = ReasonLabels { reason: what.into(), interface: iface.clone() };
            iface_packets.get_or_create(&l).inc_by(pb.packets);
            iface_bytes.get_or_create(&l).inc_by(pb.bytes);
        }
    }
    let egress = counter_family::<EgressLabels>(
        &mut reg,
        "ps_agent_egress_unmatched_packets",
        "Packets the host sent that no row allows (action: counted = let out, dropped = egress enforce)",
    );
    for (reason, n) in &r.egress.unmatched {
        egress.get_or_create(&EgressLabels { reason: reason.clone(), action: "counted".into() }).inc_by(*n);
    }
    for (reason, n) in &r.egress.dropped {
        egress.get_or_create(&EgressLabels { reason: reason.clone(), action: "dropped".into() }).inc_by(*n);
    }
    let tracked = Gauge::<i64>::default();
    tracked.set(r.flows.tracked as i64);
    reg.register("ps_agent_tracked_flows", "Outbound flows in the flow table now", tracked);
    let capacity = Gauge::<i64>::default();
    capacity.set(r.flows.capacity as i64);
    reg.register("ps_agent_flow_table_capacity", "Entries the flow table holds at most", capacity);
    let flows = counter_family::<FlowLabels>(&mut reg, "ps_agent_flows", "Flow table events");
    for (ev, n) in [
        ("created", r.flows.created),
        ("seeded", r.flows.seeded),
        ("expired", r.flows.expired),
        ("evicted", r.flows.evicted),
        ("insert_failed", r.flows.insert_failed),
    ] {
        flows.get_or_create(&FlowLabels { event: ev.into() }).inc_by(n);
    }
    let suppressed = Counter::<u64>::default();
    suppressed.inc_by(r.events.suppressed);
    reg.register(
        "ps_agent_events_suppressed",
        "Drop events the program's rate limit suppressed (not logged)",
        suppressed,
    );
    let lost = Counter::<u64>::default();
    lost.inc_by(r.events.lost);
    reg.register("ps_agent_events_lost", "Drop events lost to a full ring buffer", lost);
    let log_suppressed = Counter::<u64>::default();
    log_suppressed.inc_by(r.log_suppressed);
    reg.register(
        "ps_agent_debug_log_suppressed",
        "aya-log debug lines the program's rate limit suppressed",
        log_suppressed,
    );
    let mut modes: Vec<&str> = r.interfaces.iter().map(|a| a.xdp_mode.as_str()).collect();
    modes.dedup();
    reg.register(
        "ps_agent",
        "The running agent",
        Info::new(AgentLabels {
            version: state.version.clone(),
            mode: r.mode.clone(),
            product: r.product.clone(),
            policy_fingerprint: r.fingerprint.clone(),
            kernel: state.kernel.clone(),
            xdp_mode: modes.join(","),
            reply_tracking: r.reply_tracking.clone(),
        }),
    );
    let load = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    load.set(state.policy_load_ms as f64 / 1000.0);
    reg.register("ps_agent_policy_load_seconds", "Time from reading the config to the last interface attached", load);
    let since = Gauge::<i64>::default();
    since.set(r.since_unix as i64);
    reg.register(
        "ps_agent_counters_since_seconds",
        "Since when the counters count (Unix time; survives restarts)",
        since,
    );
    let started = Gauge::<i64>::default();
    started.set(state.started_unix as i64);
    reg.register("ps_agent_start_time_seconds", "When the agent started (Unix time)", started);
    let mut out = String::new();
    encode(&mut out, &reg).expect("writing to a String cannot fail");
    out
}

/// Bind the endpoint (before anything is attached, so that a taken port fails start-up).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    if !addr.ip().is_loopback() {
        warn!("metrics on {addr}: reachable from the network, without authentication");
    }
    TcpListener::bind(addr).await
}

/// Serve `GET /metrics` for the agent whose state is in `state_dir`, until aborted.
pub async fn serve(listener: TcpListener, state_dir: PathBuf) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!("metrics: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let dir = state_dir.clone();
        tokio::spawn(async move {
            if let Err(e) = tokio::time::timeout(Duration::from_secs(10), answer(stream, &dir)).await {
                debug!("metrics: {peer}: {e}");
            }
        });
    }
}

/// Status line and body for a request head.
pub fn route(head: &str, body: impl FnOnce() -> Result<String, String>) -> (&'static str, &'static str, String) {
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => match body() {
            Ok(b) => ("200 OK", CONTENT_TYPE, b),
            Err(e) => ("503 Service Unavailable", "text/plain; charset=utf-8", format!("{e}\n")),
        },
        ("GET", "/") => ("200 OK", "text/plain; charset=utf-8", "ps-agent: metrics at /metrics\n".into()),
        ("GET", _) => ("404 Not Found", "text/plain; charset=utf-8", "not found: try /metrics\n".into()),
        _ => ("405 Method Not Allowed", "text/plain; charset=utf-8", "only GET\n".into()),
    }
}

async fn answer(mut s: TcpStream, state_dir: &Path) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let dir = state_dir.to_path_buf();
    let wants = head.starts_with("GET /metrics");
    // Reading the maps is blocking (thousands of lookups): off the runtime's threads.
    let scraped = if wants {
        Some(
            tokio::task::spawn_blocking(move || {
                crate::pinned::snapshot(&dir).map(|(state, r)| encode_metrics(&state, &r)).map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string())),
        )
    } else {
        None
    };
    let (status, ctype, body) = route(&head, || scraped.unwrap_or_else(|| Err("not scraped".into())));
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(resp.as_bytes()).await?;
    s.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        compile::{HostFacts, compile},
        config::{Config, ReplyTracking},
        load::{Attached, Counters},
        observe::report,
    };
    use ps_common::layout::{Counter, STAT_DROP_BASE, STAT_WOULD_DROP_BASE};

    #[test]
    fn text_has_labels_and_values() {
        let set = compile(&Config::shipped(), &HostFacts::typical()).unwrap();
        let ifaces = vec![
            Attached { name: "eth0".into(), ifindex: 2, slot: 1, xdp_mode: "native".into() },
            Attached { name: "eth1".into(), ifindex: 3, slot: 2, xdp_mode: "native".into() },
        ];
        let mut state =
            AgentState::new(ReplyTracking::Stateful, &set, "PS 8.1.2", "p", "eth0", Path::new("/x"), 64, ifaces);
        state.kernel = "6.18.0".into();
        state.policy_load_ms = 1250;
        let zero = || vec![vec![Counter::default(); 64]; 16];
        let mut c =
            Counters { rules: zero(), stats: zero(), egress_rules: zero(), egress_stats: zero(), flows: vec![0; 4] };
        let ps14 =
            set.rules.iter().find(|r| r.id == "ps-14+ps-21" && r.kind.as_str() == "inbound").unwrap().counter as usize;
        c.rules[1][ps14] = Counter { packets: 7, bytes: 700 };
        c.stats[2][STAT_DROP_BASE as usize] = Counter { packets: 5, bytes: 300 };
        c.stats[1][STAT_WOULD_DROP_BASE as usize + 1] = Counter { packets: 2, bytes: 120 };
        let r = report(&state, &c, crate::config::Mode::Enforce, 3, 65536);
        let text = encode_metrics(&state, &r);
        let has = |l: &str| assert!(text.lines().any(|x| x == l), "missing `{l}` in\n{text}");
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
    }

    #[test]
    fn grafana_dashboard_queries_only_metrics_we_serve() {
        let set = compile(&Config::shipped(), &HostFacts::typical()).unwrap();
        let ifaces = vec![Attached { name: "eth0".into(), ifindex: 2, slot: 1, xdp_mode: "native".into() }];
        let state = AgentState::new(ReplyTracking::Stateful, &set, "PS", "p", "eth0", Path::new("/x"), 64, ifaces);
        let zero = || vec![vec![Counter::default(); 64]; 16];
        let c =
            Counters { rules: zero(), stats: zero(), egress_rules: zero(), egress_stats: zero(), flows: vec![0; 4] };
        let text = encode_metrics(&state, &report(&state, &c, crate::config::Mode::Enforce, 0, 1));
        let served: std::collections::BTreeSet<&str> =
            text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split(['{', ' ']).next()).collect();
        let dash: serde_json::Value = serde_json::from_str(include_str!("../grafana/ps-agent.json")).unwrap();
        let mut used = 0;
        for p in dash["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().unwrap() {
                let expr = t["expr"].as_str().unwrap();
                for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                    if word.starts_with("ps_agent_") {
                        assert!(served.contains(word), "panel `{}` queries `{word}`, which is not served", p["title"]);
                        used += 1;
                    }
                }
            }
        }
        assert!(used >= 15, "{used}");
    }

    #[test]
    fn site_config_names_the_address() {
        let m = crate::config::Matrix::shipped();
        let site = crate::config::Site::parse("metrics = \"127.0.0.1:9500\"\n", "site.toml", &m).unwrap();
        assert_eq!(site.metrics, Some("127.0.0.1:9500".parse().unwrap()));
        assert_eq!(crate::config::Site::parse("", "site.toml", &m).unwrap().metrics, None, "off unless asked");
        let e = crate::config::Site::parse("mode = \"enforce\"\nmetrics = \"9487\"\n", "site.toml", &m).unwrap_err();
        assert!(e.to_string().starts_with("site.toml:2: field `metrics`: invalid address `9487`"), "{e}");
    }

    #[test]
    fn routes() {
        assert_eq!(route("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", || Ok("m".into())).0, "200 OK");
        assert_eq!(route("GET /metrics?x=1 HTTP/1.1\r\n\r\n", || Ok("m".into())).2, "m");
        assert_eq!(route("GET /nope HTTP/1.1\r\n\r\n", || Ok("m".into())).0, "404 Not Found");
        assert_eq!(route("POST /metrics HTTP/1.1\r\n\r\n", || Ok("m".into())).0, "405 Method Not Allowed");
        assert_eq!(route("GET /metrics HTTP/1.1\r\n\r\n", || Err("down".into())).0, "503 Service Unavailable");
    }
}
