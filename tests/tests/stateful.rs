//! Stateful reply admission in namespaces: only replies to flows the host opened pass.

use std::{io::Read as _, time::Duration};

use ps_agent::{
    observe::stats::StatsReport,
    policy::{compile::RuleKind, config::ReplyTracking},
};
use ps_common::reason::DropReason;
use ps_tests::*;

const OPEN: Duration = Duration::from_secs(3);

/// Forged ACKs from the SM port 5062 to an open ephemeral port of the host. Returns the
/// (ps-04 packets, untracked drops) deltas.
fn forge_acks(lab: &Lab, agent: &Agent, n: u64) -> (u64, u64) {
    let _victim = Listener::tcp(&lab.ps, 45000);
    let before = agent.report();
    for _ in 0..n {
        send_raw_tcp(&lab.a, A_V4, 5062, PS_ETH0_V4, 45000, 0x10);
    }
    std::thread::sleep(Duration::from_millis(200));
    let after = agent.report();
    let untracked = |s: &StatsReport| s.drop_count(DropReason::Untracked);
    (
        rule(&after, "ps-04", RuleKind::Reply).packets - rule(&before, "ps-04", RuleKind::Reply).packets,
        untracked(&after) - untracked(&before),
    )
}

#[test]
fn forged_replies_pass_stateless_but_not_stateful() {
    let lab = Lab::new("sf");
    // Stateless: an ACK from port 5062 to the ephemeral range is taken for a reply.
    let cfg = std::env::temp_dir().join("pst-sf-stateless.toml");
    std::fs::write(&cfg, "reply_tracking = \"stateless\"\n").unwrap();
    let mut agent = Agent::start(&lab.ps, "sf", &["--config", cfg.to_str().unwrap()]);
    assert_eq!(agent.report().reply_tracking, ReplyTracking::Stateless);
    assert_eq!(forge_acks(&lab, &agent, 5), (5, 0), "stateless admits forged ACKs");
    agent.stop();

    // Stateful (the default): no flow, no entry.
    let agent = Agent::start(&lab.ps, "sf", &[]);
    assert_eq!(agent.report().reply_tracking, ReplyTracking::Stateful);
    assert_eq!(forge_acks(&lab, &agent, 5), (0, 5), "stateful drops forged ACKs as untracked");

    // A real outbound connection to SM's 5062 works, and is listed as a flow.
    let _sm = Listener::tcp(&lab.a, 5062);
    assert_eq!(tcp_probe(&lab.ps, A_V4, 5062, OPEN), Probe::Open, "PS -> SM 5062 (ps-04)");
    let _dns = UdpEcho::start(&lab.a, 53);
    assert_eq!(udp_probe(&lab.ps, 0, A_V4, 53, OPEN), Probe::Open, "DNS (failsafe) over UDP");
    let s = agent.report();
    assert!(s.flows.created >= 2, "{:?}", s.flows);
    assert!(rule(&s, "ps-04", RuleKind::Reply).packets >= 1);
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
    let s = agent.report();
    assert!(
        s.egress.unmatched_count(DropReason::NoRule) >= 1,
        "egress to 6000 is counted as unmatched: {:?}",
        s.egress
    );
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
    let s = agent.report();
    assert!(s.flows.seeded >= 1, "the live connection was seeded: {:?}", s.flows);
    push.send(Some(b"two..".to_vec())).unwrap();
    conn.read_exact(&mut buf).expect("message after the restart");
    assert_eq!(&buf, b"two..");
    assert_eq!(agent.report().drop_count(DropReason::Untracked), 0);
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
    let s = agent.report();
    assert_eq!(s.flows.capacity, 1024);
    assert!(s.flows.tracked <= 1024, "{:?}", s.flows);
    assert!(s.flows.evicted >= 1500 - 1024, "evictions are counted: {:?}", s.flows);
    // The newest flows still work.
    assert_eq!(udp_probe(&lab.ps, 0, A_V4, 53, OPEN), Probe::Open);

    // A flood of forged replies creates no entries (only the egress program inserts), so it
    // cannot evict real flows.
    let s0 = agent.report();
    let (tracked, created, before) = (s0.flows.tracked, s0.flows.created, s0.drop_count(DropReason::Untracked));
    for i in 0..300u16 {
        send_raw_tcp(&lab.a, A_V4, 5062, PS_ETH0_V4, 40000 + i, 0x10);
    }
    std::thread::sleep(Duration::from_millis(200));
    let s = agent.report();
    assert_eq!(s.drop_count(DropReason::Untracked) - before, 300);
    assert_eq!(s.flows.created, created);
    assert_eq!(s.flows.tracked, tracked);
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
    let s = agent.report();
    assert!(s.egress.dropped_count(DropReason::NoRule) >= 1, "{:?}", s.egress);
    assert_eq!(s.egress.unmatched_count(DropReason::NoRule), 0);
    let out = rule(&s, "ps-01+ps-02", RuleKind::Inbound).egress_packets;
    assert!(out >= 2, "SYN-ACK and more counted out on the 443 rule");
}

/// A connection from ps to SM's 5062 that SM closed first: FIN both ways, and the host's
/// socket gone (LAST_ACK, then closed: no TIME_WAIT on the host's side), so a segment for it
/// reaching the host is answered with a RST. Returns its local port.
fn closed_by_peer(lab: &Lab) -> u16 {
    let push = push_server(&lab.a, 5062);
    let mut conn = tcp_connect(&lab.ps, A_V4, 5062).expect("connect to SM");
    let port = conn.local_addr().unwrap().port();
    conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    push.send(Some(b"bye".to_vec())).unwrap();
    push.send(None).unwrap();
    let mut buf = Vec::new();
    conn.read_to_end(&mut buf).expect("the peer's data and FIN");
    assert_eq!(buf, b"bye");
    drop(conn);
    std::thread::sleep(Duration::from_millis(300));
    port
}

/// `ps-agent flows` as text.
fn flows_text(agent: &Agent) -> String {
    let out = std::process::Command::new(agent_bin())
        .arg("--state-dir")
        .arg(&agent.state_dir)
        .arg("flows")
        .output()
        .expect("run flows");
    assert!(out.status.success(), "flows failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn ack_scan_after_close_finds_nothing_unfiltered() {
    let lab = Lab::new("sn");
    let agent = Agent::start(&lab.ps, "sn", &[]);
    let port = closed_by_peer(&lab);
    assert!(
        flows_text(&agent).contains(&format!("sport={port} dport=5062")),
        "the closed flow is still in its closing timeout"
    );
    let before = agent.report();
    // nmap's ACK scan from SM's port: random sequence and acknowledgement numbers, to the
    // port of the closed connection and to its neighbour (no flow).
    let ports = format!("{port},{}", port + 1);
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.a, "nmap", "-n", "-Pn", "-sA", "-g", "5062", "--max-retries", "1"])
        .args(["-p", &ports, PS_ETH0_V4, "-oG", "-"])
        .output()
        .expect("run nmap (Debian package nmap, see xtask/setup.sh)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("Ports:"), "nmap: {text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains("/unfiltered/"), "the ACK scan reached the host: {text}");
    assert!(text.contains(&format!("{port}/filtered/")), "{text}");
    let after = agent.report();
    let oow = after.drop_count(DropReason::OutOfWindow) - before.drop_count(DropReason::OutOfWindow);
    assert!(oow >= 1, "the probe of the closed flow's port is out of its window: {:?}", after.drops);
}

/// A pseudo-random sequence of 32-bit numbers (xorshift), for forged segments.
fn numbers(mut x: u32) -> impl Iterator<Item = u32> {
    std::iter::from_fn(move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        Some(x)
    })
}

#[test]
fn blind_forged_acks_are_dropped_out_of_window() {
    let lab = Lab::new("sw");
    let agent = Agent::start(&lab.ps, "sw", &[]);
    let push = push_server(&lab.a, 5062);
    let mut conn = tcp_connect(&lab.ps, A_V4, 5062).expect("connect to SM");
    let port = conn.local_addr().unwrap().port();
    conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 5];
    push.send(Some(b"one..".to_vec())).unwrap();
    conn.read_exact(&mut buf).expect("first message");
    // The connection's 4-tuple, with random numbers: ACK, and PSH+ACK with no payload.
    let before = agent.report();
    let mut n = numbers(0x9e37_79b9);
    for i in 0..20 {
        let flags = if i % 2 == 0 { 0x10 } else { 0x18 };
        send_raw_tcp_seq(&lab.a, A_V4, 5062, PS_ETH0_V4, port, flags, n.next().unwrap(), n.next().unwrap());
    }
    // Until all 20 are counted (a loaded machine may take a while), at most 3 s.
    let oow = |r: &StatsReport| r.drop_count(DropReason::OutOfWindow) - before.drop_count(DropReason::OutOfWindow);
    let t0 = std::time::Instant::now();
    let after = loop {
        let r = agent.report();
        if oow(&r) >= 20 || t0.elapsed() > Duration::from_secs(3) {
            break r;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let ps04 = |r| rule(r, "ps-04", RuleKind::Reply).packets;
    assert_eq!(ps04(&after) - ps04(&before), 0, "forged ACKs admitted as replies");
    assert_eq!(oow(&after), 20, "{:?}", after.drops);
    // The connection itself goes on.
    push.send(Some(b"two..".to_vec())).unwrap();
    conn.read_exact(&mut buf).expect("a message after the forged ACKs");
    assert_eq!(&buf, b"two..");
    push.send(None).unwrap();
}

#[test]
fn a_reset_ends_the_flow_at_once() {
    let lab = Lab::new("sx");
    let agent = Agent::start(&lab.ps, "sx", &[]);
    // SM accepts, then aborts (SO_LINGER 0: a RST with the exact sequence number).
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    // Listening before the client connects (a socket stays in the namespace it was made in).
    let l = in_netns(&lab.a, || std::net::TcpListener::bind(("::", 5062)).expect("bind"));
    let server = std::thread::spawn(move || {
        let (s, _) = l.accept().expect("accept");
        rx.recv().unwrap();
        let linger = libc::linger { l_onoff: 1, l_linger: 0 };
        // SAFETY: setsockopt on a socket we own, with a live value of the right size.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&s),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as u32,
            )
        };
        assert_eq!(rc, 0, "SO_LINGER");
    });
    let mut conn = tcp_connect(&lab.ps, A_V4, 5062).expect("connect to SM");
    let port = conn.local_addr().unwrap().port();
    std::thread::sleep(Duration::from_millis(100));
    let listed = format!("sport={port} dport=5062");
    assert!(flows_text(&agent).contains(&listed), "{}", flows_text(&agent));
    tx.send(()).unwrap();
    server.join().unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let err = conn.read(&mut [0u8; 8]).expect_err("the RST reached the host");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    let text = flows_text(&agent);
    assert!(!text.contains(&listed), "a reset flow is gone at once: {text}");
    let f = agent.report().flows;
    assert_eq!((f.closed, f.tracked), (1, 0), "{f:?}");
}

#[test]
fn expired_flows_are_never_listed() {
    let lab = Lab::new("sy");
    let cfg = scratch("sy.toml");
    std::fs::write(&cfg, "[timeouts]\ntcp_closing = 2\n").unwrap();
    let agent = Agent::start(&lab.ps, "sy", &["--config", cfg.to_str().unwrap()]);
    let port = closed_by_peer(&lab);
    let listed = format!("sport={port} dport=5062");
    assert!(flows_text(&agent).contains(&listed));
    let before = agent.report().flows;
    // Nothing more from either side: idle past the closing timeout, it has expired, though
    // no packet has come to remove it.
    std::thread::sleep(Duration::from_secs(3));
    let text = flows_text(&agent);
    assert!(!text.contains(&listed), "an expired flow is listed: {text}");
    let f = agent.report().flows;
    assert_eq!((f.tracked, f.expired), (before.tracked - 1, before.expired + 1), "{f:?}");
}

/// `nstat` counter `name` in namespace `ns` (absolute, since the namespace was made).
fn nstat(ns: &str, name: &str) -> u64 {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "nstat", "-a", "-z", "-s", name])
        .output()
        .expect("run nstat");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.split_whitespace().next()?.parse().ok()))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// Byte `i` of the transfers' pattern.
fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(0x9e37_79b9) >> 13) as u8
}

/// Write `n` bytes of the pattern to `s`, then close it.
fn send_pattern(mut s: std::net::TcpStream, n: u64) {
    use std::io::Write as _;
    let mut buf = vec![0u8; 1 << 16];
    let mut i = 0u64;
    while i < n {
        let len = (n - i).min(buf.len() as u64) as usize;
        for (k, b) in buf[..len].iter_mut().enumerate() {
            *b = pattern(i + k as u64);
        }
        s.write_all(&buf[..len]).expect("send");
        i += len as u64;
    }
}

/// Read `s` to its end, checking every byte against the pattern; returns the bytes read.
fn check_pattern(mut s: std::net::TcpStream) -> u64 {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let mut i = 0u64;
    loop {
        let n = s.read(&mut buf).expect("receive");
        if n == 0 {
            return i;
        }
        for (k, &b) in buf[..n].iter().enumerate() {
            assert_eq!(b, pattern(i + k as u64), "byte {} of the transfer", i + k as u64);
        }
        i += n as u64;
    }
}

#[test]
fn long_transfers_with_window_scaling_and_sack_lose_nothing() {
    const BYTES: u64 = 192 << 20;
    let lab = Lab::new("si");
    let agent = Agent::start(&lab.ps, "si", &[]);
    // 1% loss each way, so receivers send SACK blocks and senders recover from them:
    // nftables' random numbers (this kernel has no netem) on the receiving side, where the
    // sender cannot see the drop — SM's input, and the host's prerouting, behind the agent.
    for (ns, port) in [(&lab.a, "dport"), (&lab.ps, "sport")] {
        let nft = |cmd: &str| sh(&format!("ip netns exec {ns} nft '{cmd}'"));
        nft("add table inet lossy");
        nft("add chain inet lossy lose { type filter hook prerouting priority -300; }");
        nft(&format!("add rule inet lossy lose tcp {port} 5062 numgen random mod 100 < 1 drop"));
    }
    // SM takes an upload (the host sends: SM's ACKs and SACKs are checked), then serves a
    // download (SM sends: its data and retransmissions are).
    let l = in_netns(&lab.a, || std::net::TcpListener::bind(("::", 5062)).expect("bind"));
    let sm = std::thread::spawn(move || {
        let (up, _) = l.accept().expect("accept the upload");
        let got = check_pattern(up);
        let (down, _) = l.accept().expect("accept the download");
        send_pattern(down, BYTES);
        got
    });
    let up = tcp_connect(&lab.ps, A_V4, 5062).expect("connect for the upload");
    send_pattern(up, BYTES);
    let down = tcp_connect(&lab.ps, A_V4, 5062).expect("connect for the download");
    let received = check_pattern(down);
    let uploaded = sm.join().expect("SM's side");
    assert_eq!((uploaded, received), (BYTES, BYTES), "every byte arrived, in order, both ways");
    // Both ends negotiated window scaling and SACK, and recovered from losses with SACK.
    assert!(nstat(&lab.ps, "TcpExtTCPSackRecovery") > 0, "the host recovered with the SACKs let in");
    assert!(nstat(&lab.a, "TcpExtTCPSackRecovery") > 0, "SM recovered with the host's SACKs");
    let s = agent.report();
    // The egress program read every segment the host sent, payload in pages or not.
    let truncated = s.egress.unmatched.get(DropReason::Truncated.as_str()).copied().unwrap_or(0);
    assert_eq!(truncated, 0, "{:?}", s.egress);
    assert_eq!(s.drop_count(DropReason::OutOfWindow), 0, "{:?}", s.drops);
    let replies = rule(&s, "ps-04", RuleKind::Reply).packets;
    assert!(replies > 10_000, "{replies} replies admitted");
    println!(
        "2 x {} MiB through the agent; {replies} replies admitted, none out of window; SACK recoveries: host {}, SM {}",
        BYTES >> 20,
        nstat(&lab.ps, "TcpExtTCPSackRecovery"),
        nstat(&lab.a, "TcpExtTCPSackRecovery")
    );
}
