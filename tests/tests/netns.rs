//! Namespace tests: real packets over veth pairs into a "ps" namespace where ps-agent
//! enforces the shipped PS 8.1.2 matrix on eth0 (management) and eth1.

use std::time::Duration;

use ps_agent::{dataplane::AttachMode, policy::compile::RuleKind, policy::config::Mode};
use ps_common::reason::{DropReason, PassReason};
use ps_tests::*;

const OPEN: Duration = Duration::from_secs(3);
const DROP: Duration = Duration::from_millis(800);

#[test]
fn enforce_shipped_matrix_ipv4() {
    let lab = Lab::new("e4");
    let mut agent = Agent::start(&lab.ps, "e4", &[]);
    assert!(xdp_attached(&lab.ps, "eth0") && xdp_attached(&lab.ps, "eth1"), "default interfaces are eth0 and eth1");

    // Inbound matrix ports pass: an open port connects, a closed one answers RST.
    let _l443 = Listener::tcp(&lab.ps, 443);
    assert_eq!(tcp_probe(&lab.a, PS_ETH0_V4, 443, OPEN), Probe::Open, "tcp/443 on eth0 (ps-01)");
    assert_eq!(tcp_probe(&lab.b, PS_ETH1_V4, 443, OPEN), Probe::Open, "tcp/443 on eth1 (ps-01)");
    assert_eq!(tcp_probe(&lab.a, PS_ETH0_V4, 5222, OPEN), Probe::Refused, "tcp/5222 (ps-10) passes, closed port");
    assert_eq!(tcp_probe(&lab.a, PS_ETH0_V4, 7150, OPEN), Probe::Refused, "tcp/7001-7199 on the management interface");
    assert_eq!(tcp_probe(&lab.a, PS_ETH0_V4, 22, OPEN), Probe::Refused, "failsafe ssh");
    // Not in the matrix: dropped.
    assert_eq!(tcp_probe(&lab.a, PS_ETH0_V4, 8080, DROP), Probe::TimedOut, "tcp/8080 is not in the matrix");
    assert_eq!(
        tcp_probe(&lab.a, PS_ETH0_V4, 5063, DROP),
        Probe::TimedOut,
        "ps-07/08 are optional and closed by default"
    );
    // Management-only rows do not apply on eth1.
    assert_eq!(
        tcp_probe(&lab.b, PS_ETH1_V4, 7000, DROP),
        Probe::TimedOut,
        "tcp/7000 is bound to the management interface"
    );

    // Outbound rows: replies pass (stateless: ACK from the row's port to an ephemeral port).
    let _sm = Listener::tcp(&lab.a, 5062);
    assert_eq!(tcp_probe(&lab.ps, A_V4, 5062, OPEN), Probe::Open, "PS -> SM 5062 (ps-04)");
    let other = Listener::tcp(&lab.a, 6000);
    assert_eq!(tcp_probe(&lab.ps, A_V4, 6000, DROP), Probe::TimedOut, "no row for remote port 6000: SYN-ACK dropped");
    // Its SYN-ACK retransmissions would be counted as no_rule drops below.
    drop(other);
    let _dns = UdpEcho::start(&lab.a, 53);
    assert_eq!(udp_probe(&lab.ps, 0, A_V4, 53, OPEN), Probe::Open, "DNS reply (failsafe)");
    let _mdns = UdpEcho::start(&lab.a, 5353);
    assert_eq!(udp_probe(&lab.ps, 0, A_V4, 5353, DROP), Probe::TimedOut, "udp reply from 5353 is not admitted");

    // Counters: exact for UDP, which sends one packet per probe.
    let before = agent.report();
    for _ in 0..5 {
        assert_eq!(udp_probe(&lab.a, 0, PS_ETH0_V4, 9999, Duration::from_millis(200)), Probe::TimedOut);
    }
    let after = agent.report();
    let no_rule = |s: &ps_agent::observe::stats::StatsReport| s.drop_count(DropReason::NoRule);
    assert_eq!(no_rule(&after) - no_rule(&before), 5, "5 UDP datagrams to 9999, 5 no_rule drops");

    let s = after;
    assert_eq!(s.mode, Mode::Enforce);
    assert_eq!(s.interfaces.len(), 2);
    let https = rule(&s, "ps-01+ps-02", RuleKind::Inbound);
    assert!(https.packets >= 6, "two connections on 443: {https:?}");
    assert!(rule(&s, "ps-04", RuleKind::Reply).packets >= 2, "SYN-ACK and more from 5062");
    assert!(rule(&s, "failsafe-dns", RuleKind::Reply).packets >= 1);
    assert!(s.drop_count(DropReason::Interface) >= 1, "7000 on eth1");
    assert!(s.drop_count(DropReason::NoRule) >= 5 + 3, "8080, 5063, 6000 and the UDP probes");
    let per_if = &https.per_interface;
    assert!(per_if["eth0"].packets >= 3 && per_if["eth1"].packets >= 3, "{per_if:?}");
    assert!(s.pass_count(PassReason::Arp) >= 1, "ARP passes");
    let t = &s.totals;
    assert_eq!(t.packets, t.by_rule + t.passed_other + t.dropped + t.would_drop);
    assert_eq!(t.would_drop, 0);

    // Clean exit: detached, unpinned, no state file.
    assert_eq!(agent.stop(), Some(0), "{}", agent.log_text());
    assert!(!xdp_attached(&lab.ps, "eth0") && !xdp_attached(&lab.ps, "eth1"));
    assert!(!agent.pin_dir.join("PS_PORTS").exists(), "policy pins removed");
    assert!(agent.pin_dir.join("PS_RULE_CNT").exists(), "counter pins stay for the next start");
    assert!(!agent.state_dir.join("state.json").exists());
    assert_eq!(tcp_probe(&lab.a, PS_ETH0_V4, 8080, OPEN), Probe::Refused, "after exit nothing is filtered");
}

#[test]
fn enforce_shipped_matrix_ipv6() {
    let lab = Lab::new("e6");
    let agent = Agent::start(&lab.ps, "e6", &["--iface", "eth0", "--iface", "eth1"]);
    let _l = Listener::tcp(&lab.ps, 18443);
    assert_eq!(tcp_probe(&lab.a, PS_ETH0_V6, 18443, OPEN), Probe::Open, "ps-22 over IPv6 (and NDP passes)");
    assert_eq!(tcp_probe(&lab.a, PS_ETH0_V6, 443, OPEN), Probe::Refused);
    assert_eq!(tcp_probe(&lab.a, PS_ETH0_V6, 8080, DROP), Probe::TimedOut);
    let before = agent.report();
    for _ in 0..3 {
        assert_eq!(udp_probe(&lab.a, 0, PS_ETH0_V6, 9999, Duration::from_millis(200)), Probe::TimedOut);
    }
    let _dns = UdpEcho::start(&lab.a, 53);
    assert_eq!(udp_probe(&lab.ps, 0, A_V6, 53, OPEN), Probe::Open, "DNS reply over IPv6");
    let s = agent.report();
    assert_eq!(s.drop_count(DropReason::NoRule) - before.drop_count(DropReason::NoRule), 3);
    assert!(rule(&s, "ps-22", RuleKind::Inbound).packets >= 3);
    assert!(s.pass_count(PassReason::Ndp) >= 1, "neighbour discovery passes: {:?}", s.passed);
}

#[test]
fn dry_run_passes_everything_and_counts_would_drops() {
    let lab = Lab::new("dry");
    let agent = Agent::start(&lab.ps, "dry", &["--dry-run", "--xdp-mode", "skb"]);
    let out =
        std::process::Command::new("ip").args(["-n", &lab.ps, "-d", "link", "show", "dev", "eth0"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("xdpgeneric"), "--xdp-mode skb attaches in generic mode");
    assert_eq!(tcp_probe(&lab.a, PS_ETH0_V4, 8080, OPEN), Probe::Refused, "dry-run: 8080 gets through (RST)");
    assert_eq!(tcp_probe(&lab.b, PS_ETH1_V4, 7000, OPEN), Probe::Refused, "dry-run: 7000 on eth1 gets through");
    assert_eq!(udp_probe(&lab.a, 0, PS_ETH0_V4, 9999, OPEN), Probe::Refused, "dry-run: port unreachable comes back");
    let s = agent.report();
    assert_eq!(s.mode, Mode::DryRun);
    assert_eq!(s.interfaces[0].xdp_mode, AttachMode::Skb);
    assert!(s.would_drop_count(DropReason::NoRule) >= 2, "{:?}", s.would_drop);
    assert!(s.would_drop_count(DropReason::Interface) >= 1, "{:?}", s.would_drop);
    assert_eq!(s.totals.dropped, 0, "nothing is dropped in dry-run");
    // The would-drops are logged (rate-limited) as events from the ring buffer, in fixed
    // key=value fields; `rule` names the management-only row 7000 belongs to.
    let lines = [
        "action=would_drop src=198.18.0.2 dst=198.18.0.1 proto=tcp sport=",
        " dport=8080 iface=eth0 reason=no_rule rule=- len=",
        "action=would_drop src=198.18.1.2 dst=198.18.1.1 proto=tcp sport=",
        " dport=7000 iface=eth1 reason=interface rule=ps-13",
    ];
    let t0 = std::time::Instant::now();
    while !lines.iter().all(|l| agent.log_text().contains(l)) && t0.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(100));
    }
    for l in lines {
        assert!(agent.log_text().contains(l), "no `{l}` in the log:\n{}", agent.log_text());
    }
}

#[test]
fn dry_run_log_is_rate_limited() {
    let lab = Lab::new("rl");
    let agent = Agent::start(&lab.ps, "rl", &["--dry-run", "--iface", "eth0"]);
    for i in 0..60 {
        assert_eq!(udp_probe(&lab.a, 0, PS_ETH0_V4, 9999, Duration::from_millis(300)), Probe::Refused, "probe {i}");
    }
    std::thread::sleep(Duration::from_millis(600));
    let s = agent.report();
    let logged = agent.log_text().matches("action=would_drop ").count() as u64;
    assert!(s.would_drop_count(DropReason::NoRule) >= 60);
    assert!(logged <= 30, "60 would-drops in well under 4 s logged {logged} lines");
    assert!(s.log_suppressed >= 60 - logged - 5, "suppressed lines are counted: {}", s.log_suppressed);
    // Every would-drop is either logged as an event, or counted as suppressed or lost.
    let (suppressed, lost) = (s.events.suppressed, s.events.lost);
    assert_eq!(logged + suppressed + lost, s.totals.would_drop, "{}", agent.log_text());
}

#[test]
fn startup_errors_say_what_is_wrong_and_leave_nothing_behind() {
    let lab = Lab::new("err");
    // A missing interface.
    let (mut a, ok) = Agent::spawn(&lab.ps, "err1", &["--iface", "eth0", "--iface", "nope0"], Duration::from_secs(20));
    assert!(!ok);
    assert_eq!(a.stop(), Some(1));
    assert!(
        a.log_text().contains("interface `nope0` does not exist; interfaces here: eth0, eth1, lo"),
        "{}",
        a.log_text()
    );
    assert!(!xdp_attached(&lab.ps, "eth0"));

    // A bad config names file, line and field.
    let cfg = std::env::temp_dir().join("pst-err-bad.toml");
    std::fs::write(&cfg, "interfaces = [\"eth0\"]\n[ports]\nps-10 = \"5222x\"\n").unwrap();
    let (mut a, ok) = Agent::spawn(&lab.ps, "err2", &["--config", cfg.to_str().unwrap()], Duration::from_secs(20));
    assert!(!ok);
    assert_eq!(a.stop(), Some(1));
    assert!(
        a.log_text().contains(&format!("{}:3: field `ports.ps-10`: invalid port `5222x`", cfg.display())),
        "{}",
        a.log_text()
    );

    // eth1 is taken by another XDP program: the agent must not stay attached to eth0.
    let holder = Agent::start(&lab.ps, "err3", &["--iface", "eth1"]);
    let (mut a, ok) = Agent::spawn(&lab.ps, "err4", &[], Duration::from_secs(20));
    assert!(!ok);
    assert_eq!(a.stop(), Some(1));
    // Refused before anything is attached, with the owner named.
    let log = a.log_text();
    assert!(log.contains("another XDP program is attached to `eth1`: program id "), "{log}");
    assert!(log.contains("`ps_xdp` (native mode, bpf_link id ") && log.contains(", a ps-agent)"), "{log}");
    assert!(log.contains("it is another ps-agent: stop it"), "{log}");
    assert!(!xdp_attached(&lab.ps, "eth0"), "eth0 was never attached");
    assert!(!a.pin_dir.exists());
    assert!(xdp_attached(&lab.ps, "eth1"), "the other program is untouched");
    drop(holder);

    // A second agent on the same state directory is refused.
    let first = Agent::start(&lab.ps, "err5", &["--iface", "eth0"]);
    let (mut second, ok) = Agent::spawn(&lab.ps, "err5", &["--iface", "eth1"], Duration::from_secs(20));
    assert!(!ok);
    assert_eq!(second.stop(), Some(1));
    assert!(second.log_text().contains("another ps-agent (pid"), "{}", second.log_text());
    assert_eq!(first.report().mode, Mode::Enforce, "the first agent keeps running");
}

#[test]
fn bound_systems_admit_only_their_addresses() {
    let lab = Lab::new("src");
    let cfg = std::env::temp_dir().join("pst-src.toml");
    std::fs::write(&cfg, "[systems]\n\"Session Manager\" = [\"198.18.0.2/32\", \"fd00:0::2/128\"]\n").unwrap();
    let agent = Agent::start(&lab.ps, "src", &["--config", cfg.to_str().unwrap()]);
    assert_eq!(tcp_probe(&lab.a, PS_ETH0_V4, 5061, OPEN), Probe::Refused, "SM's address reaches 5061 (ps-05)");
    assert_eq!(tcp_probe(&lab.a, PS_ETH0_V6, 5061, OPEN), Probe::Refused, "and over IPv6");
    assert_eq!(tcp_probe(&lab.b, PS_ETH1_V4, 5061, DROP), Probe::TimedOut, "another address does not");
    assert_eq!(tcp_probe(&lab.b, PS_ETH1_V4, 443, OPEN), Probe::Refused, "unbound rows stay port-only");
    let s = agent.report();
    assert!(s.drop_count(DropReason::Source) >= 1, "{:?}", s.drops);
    let r = rule(&s, "ps-05", RuleKind::Inbound);
    assert_eq!(r.rule.system.as_deref(), Some("Session Manager"));
    assert!(r.packets >= 2);
}
