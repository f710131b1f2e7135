//! Program tests: crafted frames through the loaded XDP program with BPF_PROG_TEST_RUN,
//! table-driven: frame, ingress interface, expected verdict, expected counter delta. The
//! ingress ifindex in the test-run context is a real interface of the lab namespace, so
//! interface-bound rules are exercised. Every case is also run through the host classifier
//! (the same ps-common code) and the two must agree. VLAN and QinQ are proven here: this
//! kernel has no 802.1Q module, so no VLAN devices.

use ps_agent::{
    dataplane::{Counters, LoadOptions, Loaded},
    policy::compile::{HostFacts, RuleKind, RuleSet, compile},
    policy::config::{Config, Mode, ReplyTracking},
    policy::model::Model,
};
use ps_common::{
    classify::Verdict,
    frames::*,
    layout::*,
    observe::STAT_EVENT_SENT,
    parse::ETH_P_8021Q,
    parse::Parsed,
    reason::{DropReason, PassReason},
};
use ps_tests::{Lab, in_netns};

const XDP_ABORTED: u32 = 0;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum If {
    Eth0,
    Eth1,
    /// An interface the agent did not configure (lo).
    Other,
}

#[derive(Clone, Copy, Debug)]
enum Want {
    Rule(&'static str, RuleKind),
    Pass(PassReason),
    Drop(DropReason),
}

struct Case {
    name: &'static str,
    frame: Vec<u8>,
    iface: If,
    want: Want,
}

fn case(name: &'static str, frame: Vec<u8>, iface: If, want: Want) -> Case {
    Case { name, frame, iface, want }
}

fn cases() -> Vec<Case> {
    use If::*;
    use Want::*;
    let syn = TCP_SYN;
    let synack = TCP_SYN | TCP_ACK;
    let eph = 45000;
    let frag_later = Net::V4 { src: V4_SRC, dst: V4_DST, options: vec![], frag: 0x2000 | 100 };
    let v4opts = Net::V4 { src: V4_SRC, dst: V4_DST, options: vec![1; 12], frag: 0 };
    let v6ext = Net::V6 { src: V6_SRC, dst: V6_DST, ext: vec![0, 43, 60], frag_offset: 0 };
    let v6frag_later = Net::V6 { src: V6_SRC, dst: V6_DST, ext: vec![44], frag_offset: 10 };
    let mut truncated = frame(&[], &v4(), &tcp(1, 443, syn), 0);
    truncated.truncate(14 + 20 + 10);
    let mut bad_ihl = frame(&[], &v4(), &tcp(1, 443, syn), 0);
    bad_ihl[14] = 0x43;
    vec![
        case(
            "tcp/443 v4 eth0",
            frame(&[], &v4(), &tcp(50000, 443, syn), 0),
            Eth0,
            Rule("ps-01+ps-02", RuleKind::Inbound),
        ),
        case(
            "tcp/443 v6 eth1",
            frame(&[], &v6(), &tcp(50000, 443, syn), 0),
            Eth1,
            Rule("ps-01+ps-02", RuleKind::Inbound),
        ),
        case(
            "tcp/443 802.1Q",
            frame(&DOT1Q, &v4(), &tcp(50000, 443, syn), 0),
            Eth1,
            Rule("ps-01+ps-02", RuleKind::Inbound),
        ),
        case(
            "tcp/443 QinQ v6",
            frame(&QINQ, &v6(), &tcp(50000, 443, syn), 0),
            Eth0,
            Rule("ps-01+ps-02", RuleKind::Inbound),
        ),
        case("tcp/5061 SM", frame(&[], &v4(), &tcp(50000, 5061, syn), 0), Eth1, Rule("ps-05", RuleKind::Inbound)),
        case("tcp/5222 XMPP", frame(&[], &v4opts, &tcp(50000, 5222, syn), 64), Eth0, Rule("ps-10", RuleKind::Inbound)),
        case(
            "tcp/5269 XMPP s2s in",
            frame(&[], &v6ext, &tcp(50000, 5269, syn), 0),
            Eth0,
            Rule("ps-11", RuleKind::Inbound),
        ),
        case(
            "tcp/7000 mgmt",
            frame(&[], &v4(), &tcp(50000, 7000, syn), 0),
            Eth0,
            Rule("ps-13+ps-20", RuleKind::Inbound),
        ),
        case("tcp/7000 not mgmt", frame(&[], &v4(), &tcp(50000, 7000, syn), 0), Eth1, Drop(DropReason::Interface)),
        case(
            "tcp/7000 QinQ not mgmt",
            frame(&QINQ, &v4(), &tcp(50000, 7000, syn), 0),
            Eth1,
            Drop(DropReason::Interface),
        ),
        case(
            "tcp/7199 mgmt",
            frame(&[], &v6(), &tcp(50000, 7199, syn), 0),
            Eth0,
            Rule("ps-14+ps-21", RuleKind::Inbound),
        ),
        case("tcp/7200 not in matrix", frame(&[], &v4(), &tcp(50000, 7200, syn), 0), Eth0, Drop(DropReason::NoRule)),
        case("tcp/18445 AWS", frame(&[], &v4(), &tcp(50000, 18445, syn), 0), Eth1, Rule("ps-24", RuleKind::Inbound)),
        case(
            "tcp/5063 closed by default",
            frame(&[], &v4(), &tcp(50000, 5063, syn), 0),
            Eth0,
            Drop(DropReason::NoRule),
        ),
        case(
            "tcp/22 failsafe",
            frame(&[], &v4(), &tcp(50000, 22, syn), 0),
            Eth1,
            Rule("failsafe-ssh", RuleKind::Inbound),
        ),
        case("udp/443 wrong transport", frame(&[], &v4(), &udp(50000, 443), 0), Eth0, Drop(DropReason::NoRule)),
        case("reply from SM 5062", frame(&[], &v4(), &tcp(5062, eph, synack), 0), Eth1, Rule("ps-04", RuleKind::Reply)),
        case(
            "reply from SM 5062 QinQ",
            frame(&QINQ, &v6(), &tcp(5062, eph, TCP_ACK), 100),
            Eth1,
            Rule("ps-04", RuleKind::Reply),
        ),
        case(
            "reply from 443",
            frame(&[], &v6(), &tcp(443, eph, TCP_ACK), 0),
            Eth0,
            Rule("ps-03+ps-16+ps-25", RuleKind::Reply),
        ),
        case("forged SYN from 5062", frame(&[], &v4(), &tcp(5062, eph, syn), 0), Eth0, Drop(DropReason::ReplyCheck)),
        case(
            "reply to a non-ephemeral port",
            frame(&[], &v4(), &tcp(5062, 8080, TCP_ACK), 0),
            Eth0,
            Drop(DropReason::ReplyCheck),
        ),
        case(
            "reply from LDAP 636",
            frame(&[], &v4(), &tcp(636, eph, TCP_ACK), 0),
            Eth0,
            Rule("ps-26", RuleKind::Reply),
        ),
        case(
            "reply from websphere mgmt",
            frame(&[], &v4(), &tcp(2809, eph, TCP_ACK), 0),
            Eth0,
            Rule("ps-19", RuleKind::Reply),
        ),
        case(
            "reply from websphere not mgmt",
            frame(&[], &v4(), &tcp(2809, eph, TCP_ACK), 0),
            Eth1,
            Drop(DropReason::Interface),
        ),
        case("DNS reply", frame(&[], &v4(), &udp(53, eph), 40), Eth1, Rule("failsafe-dns", RuleKind::Reply)),
        case("DHCP offer", frame(&[], &v4(), &udp(67, 68), 300), Eth0, Rule("failsafe-dhcp", RuleKind::Reply)),
        case("NTP to 123", frame(&[], &v6(), &udp(123, 123), 48), Eth0, Rule("failsafe-ntp", RuleKind::Reply)),
        case(
            "unconfigured iface, all-iface rule",
            frame(&[], &v4(), &tcp(50000, 443, syn), 0),
            Other,
            Rule("ps-01+ps-02", RuleKind::Inbound),
        ),
        case(
            "unconfigured iface, mgmt rule",
            frame(&[], &v4(), &tcp(50000, 7000, syn), 0),
            Other,
            Drop(DropReason::Interface),
        ),
        case("ARP", frame(&[], &Net::Arp, &tcp(0, 0, 0), 0), Eth0, Pass(PassReason::Arp)),
        case("ARP in 802.1Q", frame(&DOT1Q, &Net::Arp, &tcp(0, 0, 0), 0), Eth0, Pass(PassReason::Arp)),
        case(
            "NDP neighbour solicitation",
            frame(&[], &v6(), &Transport::Icmp { ty: 135, code: 0 }, 16),
            Eth0,
            Pass(PassReason::Ndp),
        ),
        case(
            "ICMPv6 packet too big",
            frame(&[], &v6(), &Transport::Icmp { ty: 2, code: 0 }, 48),
            Eth1,
            Pass(PassReason::IcmpError),
        ),
        case(
            "ICMP frag needed",
            frame(&[], &v4(), &Transport::Icmp { ty: 3, code: 4 }, 28),
            Eth0,
            Pass(PassReason::IcmpError),
        ),
        case(
            "ICMP echo request",
            frame(&[], &v4(), &Transport::Icmp { ty: 8, code: 0 }, 56),
            Eth0,
            Drop(DropReason::Icmp),
        ),
        case("ICMP redirect", frame(&[], &v4(), &Transport::Icmp { ty: 5, code: 0 }, 28), Eth0, Drop(DropReason::Icmp)),
        case("non-first v4 fragment", frame(&[], &frag_later, &udp(53, eph), 64), Eth0, Drop(DropReason::Fragment)),
        case("non-first v6 fragment", frame(&[], &v6frag_later, &udp(53, eph), 64), Eth0, Drop(DropReason::Fragment)),
        case("LLDP", frame(&[], &Net::Other(0x88cc, 46), &tcp(0, 0, 0), 0), Eth0, Drop(DropReason::EtherType)),
        case(
            "three VLAN tags",
            frame(&[ETH_P_8021Q; 3], &v4(), &tcp(1, 443, syn), 0),
            Eth0,
            Drop(DropReason::VlanDepth),
        ),
        case("GRE", frame(&[], &v4(), &Transport::Raw(47, vec![0; 8]), 0), Eth0, Drop(DropReason::IpProto)),
        case("truncated TCP", truncated, Eth0, Drop(DropReason::Truncated)),
        case("IHL 3", bad_ihl, Eth0, Drop(DropReason::Malformed)),
        case(
            "seven v6 ext headers",
            frame(&[], &Net::V6 { src: V6_SRC, dst: V6_DST, ext: vec![60; 7], frag_offset: 0 }, &tcp(1, 443, syn), 0),
            Eth0,
            Drop(DropReason::ExtHeaders),
        ),
    ]
}

/// Non-zero counter deltas: (is_rule, slot, index, packets, bytes).
fn deltas(before: &Counters, after: &Counters) -> Vec<(bool, usize, usize, u64, u64)> {
    let mut out = Vec::new();
    for (is_rule, b, a) in [(true, &before.rules, &after.rules), (false, &before.stats, &after.stats)] {
        for (slot, (bs, as_)) in b.iter().zip(a.iter()).enumerate() {
            for (i, (x, y)) in bs.iter().zip(as_.iter()).enumerate() {
                if x != y {
                    out.push((is_rule, slot, i, y.packets - x.packets, y.bytes - x.bytes));
                }
            }
        }
    }
    out
}

/// The deltas of one dropped packet without its event: a drop sends one event if the rate
/// limiter has a token (`STAT_EVENT_SENT` + 1 packet, 0 bytes, on the packet's slot), or
/// none. Anything else stays, to be compared.
fn without_event(mut d: Vec<(bool, usize, usize, u64, u64)>, slot: usize) -> Vec<(bool, usize, usize, u64, u64)> {
    if let Some(i) = d.iter().position(|x| *x == (false, slot, STAT_EVENT_SENT as usize, 1, 0)) {
        d.remove(i);
    }
    d
}

fn expected_bucket(set: &RuleSet, want: Want, dry_run: bool) -> (bool, usize) {
    match want {
        Want::Rule(id, kind) => {
            let r = set
                .rules
                .iter()
                .find(|r| r.id == id && r.kind == kind)
                .unwrap_or_else(|| panic!("no rule {id} {kind:?}"));
            (true, r.counter as usize)
        }
        Want::Pass(p) => (false, (STAT_PASS_BASE + p as u32) as usize),
        Want::Drop(d) => (false, ((if dry_run { STAT_WOULD_DROP_BASE } else { STAT_DROP_BASE }) + d as u32) as usize),
    }
}

fn check_all(mode: Mode, tag: &'static str) {
    let lab = Lab::new(tag);
    let failures = in_netns(&lab.ps, move || {
        let eth0 = ps_agent::dataplane::host::ifindex("eth0").unwrap();
        let eth1 = ps_agent::dataplane::host::ifindex("eth1").unwrap();
        let lo = ps_agent::dataplane::host::ifindex("lo").unwrap();
        let ifaces = vec![("eth0".to_string(), eth0), ("eth1".to_string(), eth1)];
        let host = HostFacts { ephemeral: (32768, 60999), interfaces: vec!["eth0".into(), "eth1".into()] };
        // Stateless replies here; stateful admission has its own test below.
        let mut cfg = Config::shipped();
        cfg.site.reply_tracking = ReplyTracking::Stateless;
        let set = compile(&cfg, &host).unwrap();
        let loaded = Loaded::load(&set, &ifaces, &LoadOptions::new(mode)).unwrap_or_else(|e| panic!("load: {e}"));
        let model = Model::new(&set, mode);
        let dry = mode == Mode::DryRun;
        let mut failures = Vec::new();
        for c in cases() {
            let (ifindex, slot) = match c.iface {
                If::Eth0 => (eth0, 1),
                If::Eth1 => (eth1, 2),
                If::Other => (lo, 0),
            };
            let before = loaded.counters().unwrap();
            let (action, _) = loaded.test_run(&c.frame, ifindex, 1).unwrap();
            let after = loaded.counters().unwrap();
            let want_action = match c.want {
                Want::Drop(_) if !dry => XDP_DROP,
                _ => XDP_PASS,
            };
            let (is_rule, index) = expected_bucket(&set, c.want, dry);
            let want_delta = vec![(is_rule, slot, index, 1, c.frame.len() as u64)];
            let got_delta = match c.want {
                Want::Drop(_) => without_event(deltas(&before, &after), slot),
                _ => deltas(&before, &after),
            };
            // The host classifier on the same frame.
            let host = model.decide(&c.frame, slot as u32);
            let host_action = if host.passes() { XDP_PASS } else { XDP_DROP };
            let host_ok = match (host.verdict, c.want) {
                (Verdict::Rule(n), Want::Rule(..)) => n as usize == index,
                (Verdict::Pass(p), Want::Pass(q)) => p == q,
                (Verdict::Drop(p), Want::Drop(q)) => p == q,
                _ => false,
            };
            if action != want_action
                || got_delta != want_delta
                || host_action != action
                || !host_ok
                || action == XDP_ABORTED
            {
                failures.push(format!(
                    "{}: action {action} (want {want_action}, host {host_action}), counters {got_delta:?} (want {want_delta:?}), host verdict {:?} (want {:?})",
                    c.name, host.verdict, c.want
                ));
            }
        }
        failures
    });
    assert!(failures.is_empty(), "{} case(s) failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn enforce_verdicts_and_counters() {
    check_all(Mode::Enforce, "pe");
}

#[test]
fn dry_run_verdicts_and_counters() {
    check_all(Mode::DryRun, "pd");
}

#[test]
fn generations_switch_atomically() {
    // Write a policy into the idle generation and flip: the program follows the flip.
    let lab = Lab::new("pg");
    in_netns(&lab.ps, || {
        let eth0 = ps_agent::dataplane::host::ifindex("eth0").unwrap();
        let ifaces = vec![("eth0".to_string(), eth0)];
        let host = HostFacts { ephemeral: (32768, 60999), interfaces: vec!["eth0".into()] };
        let shipped = compile(&Config::shipped(), &host).unwrap();
        let mut cfg = Config::shipped();
        cfg.site.enable.push("ps-07".into());
        let with_5063 = compile(&cfg, &host).unwrap();
        let mut loaded = Loaded::load(&shipped, &ifaces, &LoadOptions::new(Mode::Enforce)).unwrap();
        let f = frame(&[], &v4(), &tcp(50000, 5063, TCP_SYN), 0);
        assert_eq!(loaded.test_run(&f, eth0, 1).unwrap().0, XDP_DROP);
        loaded.write_policy(&with_5063, 1, Mode::Enforce).unwrap();
        assert_eq!(loaded.test_run(&f, eth0, 1).unwrap().0, XDP_PASS, "generation 1 enables ps-07");
        loaded.write_policy(&shipped, 0, Mode::Enforce).unwrap();
        assert_eq!(loaded.test_run(&f, eth0, 1).unwrap().0, XDP_DROP, "back on generation 0");
    });
}

#[test]
fn stateful_replies_need_a_tracked_flow() {
    let lab = Lab::new("ps");
    in_netns(&lab.ps, || {
        let eth0 = ps_agent::dataplane::host::ifindex("eth0").unwrap();
        let ifaces = vec![("eth0".to_string(), eth0)];
        let host = HostFacts { ephemeral: (32768, 60999), interfaces: vec!["eth0".into()] };
        let set = compile(&Config::shipped(), &host).unwrap();
        assert!(set.policy.flags & POLICY_STATEFUL != 0, "stateful is the default");
        let mut loaded = Loaded::load(&set, &ifaces, &LoadOptions::new(Mode::Enforce)).unwrap();
        let ps04 = set.rules.iter().find(|r| r.id == "ps-04").unwrap().counter;
        let reply = frame(&[], &v4(), &tcp(5062, 45000, TCP_SYN | TCP_ACK), 0);
        let untracked =
            (false, 1usize, (STAT_DROP_BASE + DropReason::Untracked as u32) as usize, 1u64, reply.len() as u64);

        // No flow: the forged (or stray) reply is dropped as untracked.
        let before = loaded.counters().unwrap();
        assert_eq!(loaded.test_run(&reply, eth0, 1).unwrap().0, XDP_DROP);
        assert_eq!(without_event(deltas(&before, &loaded.counters().unwrap()), 1), vec![untracked]);

        // The host opened 198.18.0.1:45000 -> 198.18.0.2:5062: its reply passes, counted on ps-04.
        let key = v4_reply_flow(5062, 45000, 6);
        let now = ps_agent::clock::monotonic_ns();
        let flow = FlowState {
            state: FLOW_TCP_SYN_SENT,
            counter: ps04,
            created_ns: now,
            last_ns: now,
            packets_out: 1,
            packets_in: 0,
            ..FlowState::default()
        };
        loaded.flows().unwrap().insert(key, flow, 0).unwrap();
        let before = loaded.counters().unwrap();
        assert_eq!(loaded.test_run(&reply, eth0, 1).unwrap().0, XDP_PASS);
        assert_eq!(deltas(&before, &loaded.counters().unwrap()), vec![(true, 1, ps04 as usize, 1, reply.len() as u64)]);
        let f = loaded.flows().unwrap().get(&key, 0).unwrap();
        assert_eq!((f.state, f.packets_in), (FLOW_TCP_ESTABLISHED, 1), "the SYN-ACK established it");

        // Another source port, or another peer, is not the tracked flow.
        let other = frame(&[], &v4(), &tcp(5062, 45001, TCP_ACK), 0);
        assert_eq!(loaded.test_run(&other, eth0, 1).unwrap().0, XDP_DROP);

        // An idle flow expires: the next reply is dropped and the entry removed.
        // A SYN unanswered for 60 s (the SYN timeout is 30 s).
        let stale = FlowState { state: FLOW_TCP_SYN_SENT, last_ns: now.saturating_sub(60_000_000_000), ..flow };
        loaded.flows().unwrap().insert(key, stale, 0).unwrap();
        assert_eq!(loaded.test_run(&reply, eth0, 1).unwrap().0, XDP_DROP);
        assert!(loaded.flows().unwrap().get(&key, 0).is_err(), "expired entry removed");
        assert_eq!(loaded.counters().unwrap().flows[FLOW_CNT_EXPIRED as usize], 1);
    });
}

/// The flow of 198.18.0.1:45000 -> 198.18.0.2:5062 after its handshake, as the programs
/// build it (`ps_common::track`): ISNs 1000 (host) and 5,000,000 (SM), window scale 7 both
/// ways, SACK permitted; the host's last ACK advertises 502 (64256 bytes).
fn handshaken(counter: u32, now: u64) -> FlowState {
    use ps_common::track::*;
    let syn = Segment {
        seq: 1000,
        end: 1001,
        win: 64240,
        flags: TCP_SYN,
        wscale: 7,
        opts: SEG_SACK_PERM,
        ..Segment::default()
    };
    let mut f = flow_new(6, Some(&syn), counter, now).unwrap();
    let synack =
        Segment { seq: 5_000_000, ack: 1001, sack: 1001, end: 5_000_001, win: 65160, flags: TCP_SYN | TCP_ACK, ..syn };
    let p = Policy { tcp_syn_timeout_s: 30, ..Policy::default() };
    assert_eq!(flow_reply(&mut f, &p, 6, Some(&synack), now, true), Reply::Pass);
    let ack = Segment {
        seq: 1001,
        ack: 5_000_001,
        sack: 5_000_001,
        end: 1001,
        win: 502,
        flags: TCP_ACK,
        wscale: NO_WSCALE,
        opts: 0,
    };
    flow_sent(&mut f, 6, Some(&ack), counter, now);
    f
}

#[test]
fn stateful_replies_are_checked_against_the_flows_windows() {
    let lab = Lab::new("pw");
    in_netns(&lab.ps, || {
        use ps_common::track::{Reply, flow_reply, tcp_segment};
        let eth0 = ps_agent::dataplane::host::ifindex("eth0").unwrap();
        let host = HostFacts { ephemeral: (32768, 60999), interfaces: vec!["eth0".into()] };
        let set = compile(&Config::shipped(), &host).unwrap();
        let mut loaded = Loaded::load(&set, &[("eth0".into(), eth0)], &LoadOptions::new(Mode::Enforce)).unwrap();
        let counter = |id: &str| set.rules.iter().find(|r| r.id == id).unwrap().counter as usize;
        let ps04 = counter("ps-04");
        let key = v4_reply_flow(5062, 45000, 6);
        let now = ps_agent::clock::monotonic_ns();
        let drop_bucket = |r: DropReason| (false, 1usize, (STAT_DROP_BASE + r as u32) as usize);
        // One reply: the verdict and counter the kernel gives, and the flow it leaves equal
        // to what the host's `flow_reply` makes of the same flow and frame (but the time).
        let run = |loaded: &mut Loaded, flow: FlowState, f: &[u8], want: (u32, (bool, usize, usize))| {
            loaded.flows().unwrap().insert(key, flow, 0).unwrap();
            let before = loaded.counters().unwrap();
            assert_eq!(loaded.test_run(f, eth0, 1).unwrap().0, want.0, "{f:02x?}");
            let (rule, slot, index) = want.1;
            let d = without_event(deltas(&before, &loaded.counters().unwrap()), 1);
            assert_eq!(
                d.iter().filter(|x| x.3 == 1).map(|x| (x.0, x.1, x.2)).collect::<Vec<_>>(),
                vec![(rule, slot, index)]
            );
            let Parsed::Ip(p) = ps_common::parse::parse_slice(f) else { panic!("parses") };
            let start = f.as_ptr() as usize;
            // SAFETY: the frame is a live slice.
            let seg = unsafe { tcp_segment(start, start + f.len(), &p, true) };
            let mut host = flow;
            let r = flow_reply(&mut host, &set.policy, 6, seg.as_ref(), ps_agent::clock::monotonic_ns(), true);
            let kernel = loaded.flows().unwrap().get(&key, 0).ok();
            match (r, kernel) {
                (Reply::Close, k) => assert!(k.is_none(), "a closing RST removes the flow"),
                (_, Some(k)) => assert_eq!(FlowState { last_ns: 0, ..k }, FlowState { last_ns: 0, ..host }),
                (r, None) => panic!("{r:?}: the flow is gone"),
            }
            kernel
        };
        let flow = handshaken(ps04 as u32, now);
        let from_sm = |flags, seq, ack, len| frame(&[], &v4(), &tcp_full(5062, 45000, flags, seq, ack, 500, &[]), len);
        // Data in the window, with ACK: passes, on ps-04, and teaches the flow.
        let k = run(&mut loaded, flow, &from_sm(TCP_ACK, 5_000_001, 1001, 100), (XDP_PASS, (true, 1, ps04))).unwrap();
        assert_eq!(k.remote.end, 5_000_101);
        // A blind ACK with the right 4-tuple and random numbers: out of the window.
        let blind = from_sm(TCP_ACK, 0x1234_5678, 0x0bad_cafe, 0);
        run(&mut loaded, flow, &blind, (XDP_DROP, drop_bucket(DropReason::OutOfWindow)));
        // ... and with SACK blocks beyond the data sent (NOP, NOP, one block).
        let sack = [1, 1, 5, 10, 0, 0, 0x03, 0xe9, 0, 0, 0x07, 0xd0];
        let f = frame(&[], &v4(), &tcp_full(5062, 45000, TCP_ACK, 5_000_001, 1001, 500, &sack), 0);
        run(&mut loaded, flow, &f, (XDP_DROP, drop_bucket(DropReason::OutOfWindow)));
        // A SYN from the SM port to an established flow.
        run(&mut loaded, flow, &from_sm(TCP_SYN, 5_000_001, 0, 0), (XDP_DROP, drop_bucket(DropReason::ReplyCheck)));
        // After FIN both ways, a valid ACK passes but refreshes nothing.
        let mut closing = flow;
        closing.state = FLOW_TCP_CLOSING;
        closing.local.flags |= DIR_FIN;
        closing.remote.flags |= DIR_FIN;
        closing.last_ns = now.saturating_sub(20_000_000_000);
        let k = run(&mut loaded, closing, &from_sm(TCP_ACK, 5_000_001, 1001, 0), (XDP_PASS, (true, 1, ps04))).unwrap();
        assert_eq!(k.last_ns, closing.last_ns, "the remote end does not refresh a closed flow");
        // An exact RST: passes, and the flow is gone at once.
        let closed = loaded.counters().unwrap().flows[FLOW_CNT_CLOSED as usize];
        assert!(run(&mut loaded, flow, &from_sm(TCP_RST, 5_000_001, 0, 0), (XDP_PASS, (true, 1, ps04))).is_none());
        assert_eq!(loaded.counters().unwrap().flows[FLOW_CNT_CLOSED as usize], closed + 1);
    });
}

/// The failsafe's DHCP, DHCPv6 and NTP answers under stateful admission, with an empty flow
/// table: the requests went to broadcast or multicast addresses (or the answer comes from
/// another address), so no flow could match; their fixed port pairs are admitted by the
/// rule. A reply from 123 to the ephemeral range still needs its flow.
#[test]
fn failsafe_port_pairs_need_no_flow() {
    let lab = Lab::new("pf");
    in_netns(&lab.ps, || {
        let eth0 = ps_agent::dataplane::host::ifindex("eth0").unwrap();
        let host = HostFacts { ephemeral: (32768, 60999), interfaces: vec!["eth0".into()] };
        let set = compile(&Config::shipped(), &host).unwrap();
        assert!(set.policy.flags & POLICY_STATEFUL != 0, "stateful is the default");
        let loaded = Loaded::load(&set, &[("eth0".into(), eth0)], &LoadOptions::new(Mode::Enforce)).unwrap();
        let counter = |id: &str| set.rules.iter().find(|r| r.id == id).unwrap().counter as usize;
        let broadcast = Net::V4 { src: V4_SRC, dst: [255; 4], options: vec![], frag: 0 };
        for (f, id) in [
            (frame(&[], &broadcast, &udp(67, 68), 300), "failsafe-dhcp"),
            (frame(&[], &v4(), &udp(67, 68), 300), "failsafe-dhcp"),
            (frame(&[], &v6(), &udp(547, 546), 100), "failsafe-dhcpv6"),
            (frame(&[], &v4(), &udp(123, 123), 48), "failsafe-ntp"),
        ] {
            let before = loaded.counters().unwrap();
            assert_eq!(loaded.test_run(&f, eth0, 1).unwrap().0, XDP_PASS, "{id}");
            assert_eq!(deltas(&before, &loaded.counters().unwrap()), vec![(true, 1, counter(id), 1, f.len() as u64)]);
        }
        let f = frame(&[], &v4(), &udp(123, 40000), 48);
        let before = loaded.counters().unwrap();
        assert_eq!(loaded.test_run(&f, eth0, 1).unwrap().0, XDP_DROP, "NTP to the ephemeral range needs its flow");
        let untracked = (false, 1usize, (STAT_DROP_BASE + DropReason::Untracked as u32) as usize, 1u64, f.len() as u64);
        assert_eq!(without_event(deltas(&before, &loaded.counters().unwrap()), 1), vec![untracked]);
    });
}

/// The verifier's work per program, held under a budget (the kernel's limit is 1M
/// processed instructions; a program that grows towards it will fail on some kernel).
/// Measured (`cargo xtask vm-test`, see docs/dev/kernel-matrix.md), with the TCP window
/// checks: ps_xdp 61k on 6.18, 109k on 6.1 and 270k on 5.19, the most (its verifier prunes
/// least: docs/dev/verifier-notes.md); ps_tc_egress 19k on 6.18, 41k on 6.1 and 44k on
/// 5.19. The one source of the budgets: `cargo xtask vm-test` reads them from what this
/// test prints on each kernel.
const VERIFIER_BUDGET: [(&str, u32); 2] = [("ps_xdp", 300_000), ("ps_tc_egress", 50_000)];

#[test]
fn verifier_cost_stays_within_budget() {
    let lab = Lab::new("pv");
    let counts = in_netns(&lab.ps, || {
        let eth0 = ps_agent::dataplane::host::ifindex("eth0").unwrap();
        let host = HostFacts { ephemeral: (32768, 60999), interfaces: vec!["eth0".into()] };
        let set = compile(&Config::shipped(), &host).unwrap();
        // `cargo xtask vm-test` reads this message (Display, one line) off kernels that
        // reject the object; it runs this test alone on kernels too old for the others.
        let loaded = Loaded::load(&set, &[("eth0".into(), eth0)], &LoadOptions::new(Mode::Enforce))
            .unwrap_or_else(|e| panic!("the object did not load: {e}"));
        loaded.verified_instructions()
    });
    // `cargo xtask vm-test` reads these lines (count and budget) off each kernel's console:
    // every program's, before any is judged.
    let mut over = Vec::new();
    for ((name, n), (bname, budget)) in counts.iter().zip(VERIFIER_BUDGET) {
        assert_eq!(*name, bname);
        // Kernels before 5.16 have no `verified_insns` in bpf_prog_info (commit aba64c7da983).
        let Some(n) = *n else {
            println!("{name}: verified instructions not reported (budget {budget}; kernel before 5.16)");
            continue;
        };
        println!("{name}: {n} instructions verified (budget {budget})");
        if n > budget {
            over.push(format!("{name}: the verifier processed {n} instructions, over the budget of {budget}"));
        }
    }
    assert!(over.is_empty(), "{}", over.join("; "));
}

#[test]
fn source_sets_in_the_kernel() {
    let lab = Lab::new("pss");
    in_netns(&lab.ps, || {
        let eth0 = ps_agent::dataplane::host::ifindex("eth0").unwrap();
        let host = HostFacts { ephemeral: (32768, 60999), interfaces: vec!["eth0".into()] };
        let mut cfg = Config::shipped();
        let c = |t: &str| ps_agent::policy::config::Cidr::parse(t).unwrap();
        cfg.site.systems.insert("Session Manager".into(), vec![c("198.18.0.0/24"), c("fd00::/64")]);
        cfg.site.systems.insert("Zang".into(), vec![c("198.18.0.2/32")]);
        cfg.site.reply_tracking = ReplyTracking::Stateless;
        let set = compile(&cfg, &host).unwrap();
        let loaded = Loaded::load(&set, &[("eth0".into(), eth0)], &LoadOptions::new(Mode::Enforce)).unwrap();
        let model = Model::new(&set, Mode::Enforce);
        let from4 = |a: [u8; 4]| Net::V4 { src: a, dst: V4_DST, options: vec![], frag: 0 };
        let from6 = |last: u8, net: u8| {
            let mut a = V6_SRC;
            a[1] = net;
            a[15] = last;
            Net::V6 { src: a, dst: V6_DST, ext: vec![], frag_offset: 0 }
        };
        let counter = |id: &str| Verdict::Rule(set.rules.iter().find(|r| r.id == id).unwrap().counter);
        let cases = [
            (frame(&[], &from4([198, 18, 0, 7]), &tcp(50000, 5061, TCP_SYN), 0), counter("ps-05")),
            (frame(&QINQ, &from6(9, 0), &tcp(50000, 5061, TCP_SYN), 0), counter("ps-05")),
            (frame(&[], &from4([198, 18, 1, 7]), &tcp(50000, 5061, TCP_SYN), 0), Verdict::Drop(DropReason::Source)),
            (frame(&[], &from6(9, 1), &tcp(50000, 5061, TCP_SYN), 0), Verdict::Drop(DropReason::Source)),
            // Zang's /32 lies inside SM's /24: it is both, and its 443 goes to ps-02.
            (frame(&[], &from4([198, 18, 0, 2]), &tcp(50000, 443, TCP_SYN), 0), counter("ps-02")),
            (frame(&[], &from4([198, 18, 0, 2]), &tcp(50000, 5061, TCP_SYN), 0), counter("ps-05")),
            (frame(&[], &from4([198, 18, 0, 3]), &tcp(50000, 443, TCP_SYN), 0), counter("ps-01")),
            (frame(&[], &from4([198, 18, 0, 2]), &tcp(443, 45000, TCP_ACK), 0), counter("ps-03")),
            (frame(&[], &from4([198, 18, 9, 9]), &tcp(5062, 45000, TCP_ACK), 0), Verdict::Drop(DropReason::Source)),
        ];
        for (i, (f, want)) in cases.iter().enumerate() {
            let host = model.decide(f, 1).verdict;
            assert_eq!(host, *want, "case {i}: host");
            let (action, _) = loaded.test_run(f, eth0, 1).unwrap();
            let want_action = if matches!(want, Verdict::Drop(_)) { XDP_DROP } else { XDP_PASS };
            assert_eq!(action, want_action, "case {i}: kernel");
        }
    });
}

/// The shipped object holds the enforcement programs and nothing else; the benchmark's
/// programs are in the bench's object, which reads the agent object's maps: `ps_bare`
/// passes a port the loaded rule set lists (its own, empty, port table would drop it) and
/// counts it in the agent's rule counters.
#[test]
fn shipped_object_holds_only_the_enforcement_programs() {
    use aya::programs::{TestRun as _, TestRunOptions};
    use ps_tests::bench_object::{BenchObject, PROG_BARE, PROGRAMS};
    let host = HostFacts { ephemeral: (32768, 60999), interfaces: vec!["eth0".into()] };
    let set = compile(&Config::shipped(), &host).unwrap();
    let loaded = Loaded::load(&set, &[], &LoadOptions::new(Mode::Enforce)).unwrap();
    let mut shipped: Vec<&str> = loaded.ebpf().programs().map(|(name, _)| name).collect();
    shipped.sort();
    let mut want = ps_common::names::PROGRAMS.to_vec();
    want.sort();
    assert_eq!(shipped, want, "the shipped object's programs");

    let mut bench = BenchObject::load(&loaded);
    let mut want: Vec<String> = PROGRAMS.iter().map(|p| p.to_string()).collect();
    want.sort();
    assert_eq!(bench.program_names(), want, "the bench object's programs");
    let counted = |l: &Loaded| -> u64 { l.counters().unwrap().rules.iter().flatten().map(|c| c.packets).sum() };
    let before = counted(&loaded);
    // TCP/443 is ps-01's; UDP/65001 no rule's.
    for (frame, want) in [
        (frame(&[], &v4(), &tcp(50000, 443, TCP_SYN), 0), XDP_PASS),
        (frame(&[], &v4(), &udp(50000, 65001), 0), XDP_DROP),
    ] {
        let run =
            bench.program_mut(PROG_BARE).test_run(TestRunOptions { data_in: Some(&frame), ..TestRunOptions::new() });
        assert_eq!(run.unwrap().return_value, want, "ps_bare on {frame:02x?}");
    }
    assert_eq!(counted(&loaded), before + 1, "ps_bare counts into the agent's rule counters");
}
