//! Export tests: `ps-agent export` output loaded into the "ps" namespace of a lab with
//! `nft -f` / `iptables-restore` / `ip6tables-restore`, then real traffic from the peers.
//! The verdicts are those tests/netns.rs asserts for XDP, except for outbound flows, which
//! the export translates statefully (docs/export.md): PS → a non-matrix remote port is
//! stopped by the output chain on its way out (a TCP connect times out, as under XDP; a
//! UDP send fails with EPERM) rather than having its reply dropped on the way in.

use std::{
    io::ErrorKind,
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    process::Command,
    time::Duration,
};

use ps_tests::*;

const OPEN: Duration = Duration::from_secs(3);
const DROP: Duration = Duration::from_millis(800);

/// What a connection attempt saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    /// Connected / answered.
    Open,
    /// RST / port unreachable: the packet reached the host's stack.
    Refused,
    /// No answer: dropped on the way in (or its answer on the way out).
    TimedOut,
    /// The sender's own firewall refused to send it (EPERM from the output chain).
    Blocked,
}

fn kind(e: &std::io::Error) -> Seen {
    match e.kind() {
        ErrorKind::ConnectionRefused => Seen::Refused,
        ErrorKind::TimedOut | ErrorKind::WouldBlock => Seen::TimedOut,
        ErrorKind::PermissionDenied => Seen::Blocked,
        _ => panic!("unexpected error: {e}"),
    }
}

fn tcp(ns: &str, addr: &str, port: u16, timeout: Duration) -> Seen {
    let sa = SocketAddr::new(addr.parse::<IpAddr>().unwrap(), port);
    in_netns(ns, move || match TcpStream::connect_timeout(&sa, timeout) {
        Ok(_) => Seen::Open,
        Err(e) => kind(&e),
    })
}

fn udp(ns: &str, addr: &str, port: u16, timeout: Duration) -> Seen {
    let ip = addr.parse::<IpAddr>().unwrap();
    in_netns(ns, move || {
        let bind: SocketAddr =
            if ip.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
        let s = UdpSocket::bind(bind).unwrap();
        s.connect(SocketAddr::new(ip, port)).unwrap();
        s.set_read_timeout(Some(timeout)).unwrap();
        if let Err(e) = s.send(b"ps-agent export probe") {
            return kind(&e);
        }
        match s.recv(&mut [0u8; 64]) {
            Ok(_) => Seen::Open,
            Err(e) => kind(&e),
        }
    })
}

/// `ps-agent export --format FORMAT --config /dev/null` (the shipped matrix, defaults).
fn export(format: &str) -> String {
    let out = Command::new(agent_bin())
        .args(["export", "--format", format, "--config", "/dev/null"])
        .output()
        .expect("run ps-agent export");
    assert!(out.status.success(), "export failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Load `text` into `ns` with `cmd` (reading a file argument or stdin).
fn load(ns: &str, tag: &str, name: &str, text: &str, cmd: &str) {
    let dir = std::env::temp_dir().join(format!("pst-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    sh(&format!("nsenter --net=/var/run/netns/{ns} {cmd} {}", file.display()));
}

/// The verdicts of tests/netns.rs, through a stateful firewall.
fn same_verdicts_as_xdp(lab: &Lab) {
    let _l443 = Listener::tcp(&lab.ps, 443);
    assert_eq!(tcp(&lab.a, PS_ETH0_V4, 443, OPEN), Seen::Open, "tcp/443 on eth0 (ps-01)");
    assert_eq!(tcp(&lab.b, PS_ETH1_V4, 443, OPEN), Seen::Open, "tcp/443 on eth1 (ps-01)");
    assert_eq!(tcp(&lab.a, PS_ETH0_V4, 5222, OPEN), Seen::Refused, "tcp/5222 (ps-10) passes, closed port");
    assert_eq!(tcp(&lab.a, PS_ETH0_V4, 7150, OPEN), Seen::Refused, "tcp/7001-7199 on the management interface");
    assert_eq!(tcp(&lab.a, PS_ETH0_V4, 22, OPEN), Seen::Refused, "failsafe ssh");
    assert_eq!(tcp(&lab.a, PS_ETH0_V4, 8080, DROP), Seen::TimedOut, "tcp/8080 is not in the matrix");
    assert_eq!(tcp(&lab.a, PS_ETH0_V4, 5063, DROP), Seen::TimedOut, "ps-07/08 are closed by default");
    assert_eq!(tcp(&lab.b, PS_ETH1_V4, 7000, DROP), Seen::TimedOut, "tcp/7000 only on the management interface");
    assert_eq!(udp(&lab.a, PS_ETH0_V4, 9999, DROP), Seen::TimedOut, "udp/9999 is not in the matrix");

    // Outbound rows: the connection is opened and its replies pass (conntrack).
    let _sm = Listener::tcp(&lab.a, 5062);
    assert_eq!(tcp(&lab.ps, A_V4, 5062, OPEN), Seen::Open, "PS -> SM 5062 (ps-04)");
    let _dns = UdpEcho::start(&lab.a, 53);
    assert_eq!(udp(&lab.ps, A_V4, 53, OPEN), Seen::Open, "DNS reply (failsafe)");
    // Not a matrix flow: XDP drops the reply; the export does not let it start.
    let _other = Listener::tcp(&lab.a, 6000);
    // TCP: the SYN is dropped by the output chain, connect() times out as under XDP.
    assert_eq!(tcp(&lab.ps, A_V4, 6000, DROP), Seen::TimedOut, "PS -> 6000 is no row: SYN dropped on the way out");
    let _mdns = UdpEcho::start(&lab.a, 5353);
    // UDP: send() fails with EPERM at once (under XDP the datagram leaves, its reply is dropped).
    assert_eq!(udp(&lab.ps, A_V4, 5353, DROP), Seen::Blocked, "PS -> udp/5353 is no row: refused by the output chain");
    // IPv6: neighbour discovery passes, the matrix applies.
    let _l18443 = Listener::tcp(&lab.ps, 18443);
    assert_eq!(tcp(&lab.a, PS_ETH0_V6, 18443, OPEN), Seen::Open, "ps-22 over IPv6 (and NDP passes)");
    assert_eq!(tcp(&lab.a, PS_ETH0_V6, 8080, DROP), Seen::TimedOut, "tcp/8080 over IPv6");
    assert_eq!(tcp(&lab.b, PS_ETH1_V6, 7000, DROP), Seen::TimedOut, "tcp/7000 over IPv6 on eth1");
}

#[test]
fn nftables_export_enforces_the_matrix() {
    let lab = Lab::new("xn4");
    let nft = export("nftables");
    load(&lab.ps, "xn4", "ps.nft", &nft, "nft -f");
    // Loading twice replaces the table (idempotent).
    load(&lab.ps, "xn4", "ps.nft", &nft, "nft -f");
    let out = Command::new("nsenter")
        .args([&format!("--net=/var/run/netns/{}", lab.ps), "nft", "list", "table", "inet", "ps_agent"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("comment \"ps-04: SIP connection to SM\""), "{listed}");
    same_verdicts_as_xdp(&lab);
    // The counters of the drop policy are not exported; the rules carry their rows.
    assert!(listed.matches("comment \"ps-").count() >= 15, "{listed}");
}

#[test]
fn iptables_export_enforces_the_matrix() {
    let lab = Lab::new("xi4");
    load(&lab.ps, "xi4", "ps.v4", &export("iptables"), "iptables-restore");
    load(&lab.ps, "xi4", "ps.v6", &export("ip6tables"), "ip6tables-restore");
    same_verdicts_as_xdp(&lab);
}

/// `ps-agent export --format FORMAT --config FILE`.
fn export_with(format: &str, config: &std::path::Path) -> String {
    let out = Command::new(agent_bin())
        .args(["export", "--format", format, "--config"])
        .arg(config)
        .output()
        .expect("run ps-agent export");
    assert!(out.status.success(), "export failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn exports_honour_bound_systems() {
    let cfg = std::env::temp_dir().join("pst-xs-site.toml");
    std::fs::write(&cfg, "[systems]\n\"Session Manager\" = [\"198.18.0.2/32\", \"fd00:0::2/128\"]\n").unwrap();
    for (tag, loads) in [
        ("xsn", vec![("ps.nft", "nftables", "nft -f")]),
        ("xsi", vec![("ps.v4", "iptables", "iptables-restore"), ("ps.v6", "ip6tables", "ip6tables-restore")]),
    ] {
        let lab = Lab::new(tag);
        for (file, format, cmd) in loads {
            load(&lab.ps, tag, file, &export_with(format, &cfg), cmd);
        }
        assert_eq!(tcp(&lab.a, PS_ETH0_V4, 5061, OPEN), Seen::Refused, "{tag}: SM's address reaches 5061 (ps-05)");
        assert_eq!(tcp(&lab.a, PS_ETH0_V6, 5061, OPEN), Seen::Refused, "{tag}: and over IPv6");
        assert_eq!(tcp(&lab.b, PS_ETH1_V4, 5061, DROP), Seen::TimedOut, "{tag}: another address does not");
        assert_eq!(tcp(&lab.b, PS_ETH1_V4, 443, OPEN), Seen::Refused, "{tag}: unbound rows stay port-only");
        // Outbound to SM's 5062 only towards SM's addresses.
        let _sm_b = Listener::tcp(&lab.b, 5062);
        assert_eq!(tcp(&lab.ps, B_V4, 5062, DROP), Seen::TimedOut, "{tag}: 5062 on another host is not SM");
    }
}
