//! Stateful reply admission in namespaces: only replies to flows the host opened pass.

use std::{io::Read as _, time::Duration};

use ps_tests::*;

const OPEN: Duration = Duration::from_secs(3);

fn stat(s: &serde_json::Value, path: &[&str]) -> u64 {
    let mut v = s;
    for p in path {
        v = &v[*p];
    }
    v.as_u64().unwrap_or_else(|| panic!("no {path:?} in {s}"))
}

/// Forged ACKs from the SM port 5062 to an open ephemeral port of the host. Returns the
/// (ps-04 packets, untracked drops) deltas.
fn forge_acks(lab: &Lab, agent: &Agent, n: u64) -> (u64, u64) {
    let _victim = Listener::tcp(&lab.ps, 45000);
    let before = agent.stats();
    for _ in 0..n {
        send_raw_tcp(&lab.a, A_V4, 5062, PS_ETH0_V4, 45000, 0x10);
    }
    std::thread::sleep(Duration::from_millis(200));
    let after = agent.stats();
    (
        rule_packets(&after, "ps-04", "reply") - rule_packets(&before, "ps-04", "reply"),
        stat(&after, &["drops", "untracked"]) - stat(&before, &["drops", "untracked"]),
    )
}

#[test]
fn forged_replies_pass_stateless_but_not_stateful() {
    let lab = Lab::new("sf");
    // Stateless: an ACK from port 5062 to the ephemeral range is taken for a reply.
    let cfg = std::env::temp_dir().join("pst-sf-stateless.toml");
    std::fs::write(&cfg, "reply_tracking = \"stateless\"\n").unwrap();
    let mut agent = Agent::start(&lab.ps, "sf", &["--config", cfg.to_str().unwrap()]);
    assert_eq!(agent.stats()["reply_tracking"], "stateless");
    assert_eq!(forge_acks(&lab, &agent, 5), (5, 0), "stateless admits forged ACKs");
    agent.stop();

    // Stateful (the default): no flow, no entry.
    let agent = Agent::start(&lab.ps, "sf", &[]);
    assert_eq!(agent.stats()["reply_tracking"], "stateful");
    assert_eq!(forge_acks(&lab, &agent, 5), (0, 5), "stateful drops forged ACKs as untracked");

    // A real outbound connection to SM's 5062 works, and is listed as a flow.
    let _sm = Listener::tcp(&lab.a, 5062);
    assert_eq!(tcp_probe(&lab.ps, A_V4, 5062, OPEN), Probe::Open, "PS -> SM 5062 (ps-04)");
    let _dns = UdpEcho::start(&lab.a, 53);
    assert_eq!(udp_probe(&lab.ps, 0, A_V4, 53, OPEN), Probe::Open, "DNS (failsafe) over UDP");
    let s = agent.stats();
    assert!(stat(&s, &["flows", "created"]) >= 2, "{s}");
    assert!(rule_packets(&s, "ps-04", "reply") >= 1);
    let out = std::process::Command::new(agent_bin())
        .arg("--state-dir")
        .arg(&agent.state_dir)
        .args(["flows"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("src=198.18.0.1 dst=198.18.0.2") && text.contains("dport=5062 rule=ps-04"), "{text}");
    assert!(text.contains("udp UDP") && text.contains("dport=53 rule=failsafe-dns"), "{text}");
    // A connection to a port no row allows gets no flow: its SYN-ACK is dropped.
    let _other = Listener::tcp(&lab.a, 6000);
    assert_eq!(tcp_probe(&lab.ps, A_V4, 6000, Duration::from_millis(800)), Probe::TimedOut);
    let s = agent.stats();
    assert!(stat(&s, &["egress", "unmatched", "no_rule"]) >= 1, "egress to 6000 is counted as unmatched: {s}");
}

#[test]
fn established_connection_survives_agent_restart() {
    let lab = Lab::new("sr");
    let push = push_server(&lab.a, 5062);
    let mut agent = Agent::start(&lab.ps, "sr", &[]);
    let mut conn = tcp_connect(&lab.ps, A_V4, 5062).expect("connect to SM");
    conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 5];
    push.send(Some(b"one..".to_vec())).unwrap();
    conn.read_exact(&mut buf).expect("first message");

    // Restart: the new agent seeds the flow from the kernel's sockets, so a message the
    // peer sends first (no packet from the host since the restart) still arrives.
    agent.stop();
    let agent = Agent::start(&lab.ps, "sr", &[]);
    let s = agent.stats();
    assert!(stat(&s, &["flows", "seeded"]) >= 1, "the live connection was seeded: {s}");
    push.send(Some(b"two..".to_vec())).unwrap();
    conn.read_exact(&mut buf).expect("message after the restart");
    assert_eq!(&buf, b"two..");
    assert_eq!(stat(&agent.stats(), &["drops", "untracked"]), 0);
    push.send(None).unwrap();
}

#[test]
fn full_table_evicts_least_recently_used_and_forged_floods_insert_nothing() {
    let lab = Lab::new("st");
    let cfg = std::env::temp_dir().join("pst-st.toml");
    std::fs::write(&cfg, "flow_table_size = 1024\n").unwrap();
    let agent = Agent::start(&lab.ps, "st", &["--config", cfg.to_str().unwrap(), "--iface", "eth0"]);
    let _dns = UdpEcho::start(&lab.a, 53);
    // 1500 DNS queries from 1500 source ports: more flows than the table holds.
    for _ in 0..1500 {
        assert_eq!(udp_probe(&lab.ps, 0, A_V4, 53, OPEN), Probe::Open);
    }
    let s = agent.stats();
    assert_eq!(stat(&s, &["flows", "capacity"]), 1024);
    assert!(stat(&s, &["flows", "tracked"]) <= 1024, "{s}");
    assert!(stat(&s, &["flows", "evicted"]) >= 1500 - 1024, "evictions are counted: {}", s["flows"]);
    // The newest flows still work.
    assert_eq!(udp_probe(&lab.ps, 0, A_V4, 53, OPEN), Probe::Open);

    // A flood of forged replies creates no entries (only the egress program inserts), so it
    // cannot evict real flows.
    let tracked = stat(&agent.stats(), &["flows", "tracked"]);
    let created = stat(&agent.stats(), &["flows", "created"]);
    let before = stat(&agent.stats(), &["drops", "untracked"]);
    for i in 0..300u16 {
        send_raw_tcp(&lab.a, A_V4, 5062, PS_ETH0_V4, 40000 + i, 0x10);
    }
    std::thread::sleep(Duration::from_millis(200));
    let s = agent.stats();
    assert_eq!(stat(&s, &["drops", "untracked"]) - before, 300);
    assert_eq!(stat(&s, &["flows", "created"]), created);
    assert_eq!(stat(&s, &["flows", "tracked"]), tracked);
}

#[test]
fn egress_enforce_drops_what_no_row_allows() {
    let lab = Lab::new("se");
    let cfg = std::env::temp_dir().join("pst-se.toml");
    std::fs::write(&cfg, "egress = \"enforce\"\n").unwrap();
    let agent = Agent::start(&lab.ps, "se", &["--config", cfg.to_str().unwrap()]);
    let _other = Listener::tcp(&lab.a, 6000);
    let _sm = Listener::tcp(&lab.a, 5062);
    assert_eq!(
        tcp_probe(&lab.ps, A_V4, 6000, Duration::from_millis(800)),
        Probe::TimedOut,
        "SYN to 6000 dropped on egress"
    );
    assert_eq!(tcp_probe(&lab.ps, A_V4, 5062, OPEN), Probe::Open, "ps-04 is allowed out");
    let _l = Listener::tcp(&lab.ps, 443);
    assert_eq!(tcp_probe(&lab.a, PS_ETH0_V4, 443, OPEN), Probe::Open, "replies to inbound rules go out");
    assert_eq!(tcp_probe(&lab.a, PS_ETH0_V4, 5222, OPEN), Probe::Refused, "RST from a matrix port goes out");
    let s = agent.stats();
    assert!(stat(&s, &["egress", "dropped", "no_rule"]) >= 1, "{}", s["egress"]);
    assert_eq!(stat(&s, &["egress", "unmatched", "no_rule"]), 0);
    let out = s["rules"].as_array().unwrap().iter().find(|r| r["id"] == "ps-01+ps-02").unwrap()["egress_packets"]
        .as_u64()
        .unwrap();
    assert!(out >= 2, "SYN-ACK and more counted out on the 443 rule");
}
