//! Observability tests (issue 5), each in its own lab (`pst-m5*`): the metrics endpoint
//! against the traffic sent, the drop event log, the dry-run report's nearest rows,
//! counters that survive a restart, and the watch view's exits.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use ps_agent::{
    observe::{
        report::{DryRunReport, Group},
        stats::StatsReport,
    },
    policy::{compile::RuleKind, config::Mode, nearest::NearestKind},
};
use ps_common::{names, reason::DropReason};
use ps_tests::*;

const OPEN: Duration = Duration::from_secs(3);
const SHORT: Duration = Duration::from_millis(300);

/// `GET path` on `addr` from inside namespace `ns`, asking for OpenMetrics as Prometheus
/// does: (status line, body).
fn http_get(ns: &str, addr: &'static str, path: &'static str) -> (String, String) {
    in_netns(ns, move || {
        let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/openmetrics-text\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
        (head.lines().next().unwrap_or("").to_string(), body.to_string())
    })
}

/// The value of the sample `name{labels}` (labels exactly as encoded), 0 if absent.
fn sample(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .map_or(0, |v| v.trim().parse::<f64>().unwrap_or_else(|_| panic!("value of {series}: {v}")) as u64)
}

fn ps_agent(args: &[&str]) -> std::process::Output {
    Command::new(agent_bin()).args(args).output().expect("run ps-agent")
}

#[test]
fn metrics_match_the_traffic_and_drops_are_logged() {
    let lab = Lab::new("m5m");
    let agent = Agent::start(&lab.ps, "m5m", &["--metrics", "127.0.0.1:9487"]);
    let (status, before) = http_get(&lab.ps, "127.0.0.1:9487", "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(before.ends_with("# EOF\n"), "OpenMetrics text ends with # EOF:\n{before}");
    let info = before.lines().find(|l| l.starts_with("ps_agent_info{")).expect("agent info");
    for want in ["mode=\"enforce\"", "xdp_mode=\"native\"", "reply_tracking=\"stateful\"", "version=\"0.1.0\""] {
        assert!(info.contains(want), "{info}");
    }
    assert!(sample(&before, "ps_agent_policy_load_seconds") < 30);
    assert_eq!(http_get(&lab.ps, "127.0.0.1:9487", "/nope").0, "HTTP/1.1 404 Not Found");

    // Known traffic: 5 datagrams to 9999 on eth0, 3 on eth1 (UDP: one packet each), and
    // one connection to 443 on eth0.
    for _ in 0..5 {
        assert_eq!(udp_probe(&lab.a, 0, PS_ETH0_V4, 9999, SHORT), Probe::TimedOut);
    }
    for _ in 0..3 {
        assert_eq!(udp_probe(&lab.b, 0, PS_ETH1_V4, 9999, SHORT), Probe::TimedOut);
    }
    let _l = Listener::tcp(&lab.ps, 443);
    assert_eq!(tcp_probe(&lab.a, PS_ETH0_V4, 443, OPEN), Probe::Open);
    std::thread::sleep(Duration::from_millis(200));

    let (_, after) = http_get(&lab.ps, "127.0.0.1:9487", "/metrics");
    let d = |iface: &str| {
        let s = format!("ps_agent_drops_total{{reason=\"no_rule\",interface=\"{iface}\"}}");
        sample(&after, &s) - sample(&before, &s)
    };
    assert_eq!((d("eth0"), d("eth1")), (5, 3), "exact UDP drops per interface");
    let r443 = "ps_agent_rule_packets_total{rule=\"ps-01+ps-02\",proto=\"tcp\",ports=\"443\",direction=\"inbound\",interface=\"eth0\",verdict=\"pass\"}";
    assert!(sample(&after, r443) - sample(&before, r443) >= 3, "SYN, ACK, ... of the 443 connection:\n{after}");
    // The same numbers as `stats --json`.
    let s = agent.report();
    let total = s.totals.dropped;
    let (_, now) = http_get(&lab.ps, "127.0.0.1:9487", "/metrics");
    let scraped: u64 = ["eth0", "eth1"]
        .iter()
        .map(|i| sample(&now, &format!("ps_agent_interface_packets_total{{reason=\"dropped\",interface=\"{i}\"}}")))
        .sum();
    assert_eq!(scraped, total, "metrics and stats agree on drops");
    assert_eq!(
        sample(
            &now,
            "ps_agent_rule_packets_total{rule=\"ps-01+ps-02\",proto=\"tcp\",ports=\"443\",direction=\"inbound\",interface=\"eth0\",verdict=\"pass\"}"
        ),
        rule(&s, "ps-01+ps-02", RuleKind::Inbound).per_interface["eth0"].packets
    );
    assert_eq!(sample(&now, "ps_agent_tracked_flows"), s.flows.tracked);

    // Events: each drop is logged (one line), or counted as suppressed or lost.
    let events = |log: &str, from: &str, iface: &str| {
        let head = format!("action=drop src={from} dst=");
        let tail = format!(" dport=9999 iface={iface} reason=no_rule rule=- len=");
        log.lines().filter(|l| l.contains(&head) && l.contains(" proto=udp ") && l.contains(&tail)).count()
    };
    let t0 = Instant::now();
    while events(&agent.log_text(), "198.18.0.2", "eth0") < 5 && t0.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = agent.log_text();
    assert_eq!(events(&log, "198.18.0.2", "eth0"), 5, "one line per datagram (under the burst):\n{log}");
    assert_eq!(events(&log, "198.18.1.2", "eth1"), 3, "{log}");
    // A flood: the rate limit suppresses, and counts what it suppresses.
    in_netns(&lab.a, || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..200 {
            s.send_to(b"flood", (PS_ETH0_V4, 9998)).unwrap();
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let s = agent.report();
    let logged = agent.log_text().lines().filter(|l| l.contains("action=drop ")).count() as u64;
    let (suppressed, lost) = (s.events.suppressed, s.events.lost);
    assert!(suppressed >= 100, "200 drops in a burst of 10 per CPU: {suppressed} suppressed");
    let total = s.totals.dropped;
    assert_eq!(logged + suppressed + lost, total, "every drop is logged, suppressed or lost");
    let (_, m) = http_get(&lab.ps, "127.0.0.1:9487", "/metrics");
    assert!(sample(&m, "ps_agent_events_suppressed_total") >= suppressed);
}

#[test]
fn metrics_port_taken_fails_start_up() {
    let lab = Lab::new("m5p");
    let _holder = in_netns(&lab.ps, || std::net::TcpListener::bind("127.0.0.1:9487").unwrap());
    let (agent, ok) = Agent::spawn(&lab.ps, "m5p", &["--metrics"], Duration::from_secs(15));
    assert!(!ok, "a taken metrics port stops start-up");
    let log = agent.log_text();
    assert!(log.contains("failed to listen for metrics on 127.0.0.1:9487"), "{log}");
    assert!(!xdp_attached(&lab.ps, "eth0"), "nothing attached");
}

fn group<'a>(r: &'a DryRunReport, proto: &str, dport: u16, iface: &str) -> &'a Group {
    r.groups
        .iter()
        .find(|g| g.proto == proto && g.dport == dport && g.iface == iface)
        .unwrap_or_else(|| panic!("no group {proto}/{dport} on {iface} in {r:#?}"))
}

/// The rows `g`'s nearest hint names, and what kind of near miss it is.
fn nearest(g: &Group) -> Option<(NearestKind, Vec<&str>)> {
    g.nearest.as_ref().map(|n| (n.kind, n.rows.iter().map(String::as_str).collect()))
}

#[test]
fn dry_run_report_lists_what_would_break() {
    let lab = Lab::new("m5d");
    let agent = Agent::start(&lab.ps, "m5d", &["--dry-run"]);
    let sd = agent.state_dir.to_str().unwrap().to_string();
    // Everything passes in dry-run: closed ports answer RST / port unreachable.
    assert_eq!(tcp_probe(&lab.a, PS_ETH0_V4, 5063, OPEN), Probe::Refused, "ps-07/08: optional, closed");
    assert_eq!(tcp_probe(&lab.b, PS_ETH1_V4, 7000, OPEN), Probe::Refused, "ps-13/20: management only");
    for _ in 0..4 {
        assert_eq!(udp_probe(&lab.a, 0, PS_ETH0_V4, 9999, OPEN), Probe::Refused);
    }
    for _ in 0..2 {
        assert_eq!(tcp_probe(&lab.a, PS_ETH0_V4, 9999, OPEN), Probe::Refused);
    }
    assert_eq!(udp_probe(&lab.b, 0, PS_ETH1_V4, 5222, OPEN), Probe::Refused, "ps-10 is tcp");
    for _ in 0..3 {
        assert_eq!(udp_probe(&lab.a, 0, PS_ETH0_V6, 9997, OPEN), Probe::Refused, "IPv6");
    }

    let out = ps_agent(&["--state-dir", &sd, "report", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: DryRunReport = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("`report --json` is not a DryRunReport: {e}\n{}", String::from_utf8_lossy(&out.stdout))
    });
    assert_eq!(r.mode, Mode::DryRun);
    let g = group(&r, "udp", 9999, "eth0");
    assert_eq!((g.packets, g.reason.as_str()), (4, DropReason::NoRule.as_str()), "{g:?}");
    assert_eq!(g.sources[0].src, A_V4);
    assert_eq!(nearest(g), None, "nothing near udp/9999: {g:?}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let last = g.last_seen_unix;
    assert!(last <= now && now - last < 30, "last seen {last}, now {now}");
    assert!(g.first_seen_unix <= last);
    let g = group(&r, "tcp", 9999, "eth0");
    assert_eq!(g.packets, 2, "two SYNs: {g:?}");
    assert_eq!(nearest(g), None);
    let g = group(&r, "tcp", 5063, "eth0");
    assert_eq!(g.packets, 1, "{g:?}");
    assert_eq!(nearest(g), Some((NearestKind::Disabled, vec!["ps-07", "ps-08"])), "{g:?}");
    let g = group(&r, "tcp", 7000, "eth1");
    assert_eq!((g.packets, g.reason.as_str()), (1, DropReason::Interface.as_str()), "{g:?}");
    assert_eq!(nearest(g), Some((NearestKind::Interface, vec!["ps-13", "ps-20"])));
    let g = group(&r, "udp", 5222, "eth1");
    assert_eq!(nearest(g), Some((NearestKind::OtherProtocol, vec!["ps-10"])), "{g:?}");
    let g = group(&r, "udp", 9997, "eth0");
    assert_eq!((g.packets, g.sources[0].src.as_str()), (3, "fd00::2"), "IPv6 source: {g:?}");
    // Busiest first.
    let volumes: Vec<u64> = r.groups.iter().map(|g| g.packets).collect();
    assert!(volumes.windows(2).all(|w| w[0] >= w[1]), "{volumes:?}");
    assert_eq!(volumes[0], 4, "udp/9999 is the busiest: {r:#?}");

    let out = ps_agent(&["--state-dir", &sd, "report"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
    assert!(text.contains("ps-07,ps-08") && text.contains("management interface"), "{text}");
}

fn drops_no_rule(s: &StatsReport) -> u64 {
    s.drop_count(DropReason::NoRule)
}

#[test]
fn counters_survive_a_restart() {
    let lab = Lab::new("m5r");
    let mut agent = Agent::start(&lab.ps, "m5r", &[]);
    let pins = agent.pin_dir.clone();
    let sd = agent.state_dir.to_str().unwrap().to_string();
    let pd = pins.to_str().unwrap().to_string();
    for _ in 0..3 {
        assert_eq!(udp_probe(&lab.a, 0, PS_ETH0_V4, 9999, SHORT), Probe::TimedOut);
    }
    let s1 = agent.report();
    assert_eq!(drops_no_rule(&s1), 3);
    let since = s1.since_unix;
    assert_eq!(agent.stop(), Some(0));
    assert!(
        pins.join(names::MAP_RULE_CNT).exists() && pins.join(names::MAP_EPOCH).exists(),
        "counter maps stay pinned"
    );
    assert!(!pins.join(names::MAP_PORTS).exists() && !pins.join(names::MAP_STATE).exists(), "policy maps do not");

    std::thread::sleep(Duration::from_millis(1100));
    let mut agent = Agent::start(&lab.ps, "m5r", &[]);
    let s2 = agent.report();
    assert_eq!(drops_no_rule(&s2), 3, "the counters went on");
    assert_eq!(s2.since_unix, since, "and say since when");
    assert!(s2.started_unix > since);
    assert!(agent.log_text().contains("reusing the pinned counters"), "{}", agent.log_text());
    for _ in 0..2 {
        assert_eq!(udp_probe(&lab.a, 0, PS_ETH0_V4, 9999, SHORT), Probe::TimedOut);
    }
    assert_eq!(drops_no_rule(&agent.report()), 5);
    let out = ps_agent(&["--state-dir", &sd, "stats"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("counting since "), "{text}");
    assert_eq!(agent.stop(), Some(0));

    // Another interface set: other counter slots, so the counters start again.
    std::thread::sleep(Duration::from_millis(1100));
    let mut agent = Agent::start(&lab.ps, "m5r", &["--iface", "eth0"]);
    let s3 = agent.report();
    assert_eq!(drops_no_rule(&s3), 0, "not reused for another layout");
    assert!(s3.since_unix > since);
    assert!(agent.log_text().contains("are not reused"), "{}", agent.log_text());
    assert_eq!(agent.stop(), Some(0));

    // unload removes everything, counters included.
    let out = ps_agent(&["--pin-dir", &pd, "--state-dir", &sd, "unload"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!pins.exists(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn watch_quits_on_q_and_on_signals() {
    let lab = Lab::new("m5w");
    let agent = Agent::start(&lab.ps, "m5w", &["--dry-run"]);
    let sd = agent.state_dir.to_str().unwrap().to_string();
    assert_eq!(udp_probe(&lab.a, 0, PS_ETH0_V4, 9999, OPEN), Probe::Refused);
    let spawn = || {
        Command::new(agent_bin())
            .args(["--state-dir", &sd, "stats", "--watch", "--interval", "0.3"])
            .env_remove("NO_COLOR")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let wait = |c: &mut std::process::Child| {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        panic!("stats --watch did not exit");
    };
    // q on a non-terminal stdin.
    let mut c = spawn();
    std::thread::sleep(Duration::from_millis(1000));
    c.stdin.as_mut().unwrap().write_all(b"q").unwrap();
    let st = wait(&mut c);
    let mut out = String::new();
    c.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(st.success(), "{st:?}");
    assert!(out.matches("---\n").count() >= 2, "frames separated by ---:\n{out}");
    assert!(!out.contains('\x1b'), "no escape codes without a terminal");
    let frame = out.split("---\n").nth(1).unwrap();
    assert!(frame.lines().all(|l| l.chars().count() <= 80), "{frame}");
    assert!(frame.contains("IFACE") && frame.contains("would drop no_rule"), "{frame}");
    assert!(frame.contains("ENFORCING WOULD CUT") && frame.contains("udp/9999 on eth0"), "dry-run: {frame}");
    // SIGINT and SIGTERM end it cleanly too.
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let mut c = spawn();
        std::thread::sleep(Duration::from_millis(700));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(c.id() as i32, sig) };
        assert!(wait(&mut c).success(), "signal {sig}");
    }
}

#[test]
fn watch_on_a_terminal_restores_it() {
    let lab = Lab::new("m5t");
    let agent = Agent::start(&lab.ps, "m5t", &[]);
    let sd = agent.state_dir.to_str().unwrap().to_string();
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty fills two fds we own.
    let rc =
        unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: valid fds from openpty, each owned once.
    let (master, slave) = unsafe {
        use std::os::fd::FromRawFd as _;
        (std::fs::File::from_raw_fd(master), std::os::fd::OwnedFd::from_raw_fd(slave))
    };
    let mut c = Command::new(agent_bin())
        .args(["--state-dir", &sd, "stats", "--watch", "--interval", "0.3"])
        .env_remove("NO_COLOR")
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave.try_clone().unwrap()))
        .spawn()
        .unwrap();
    let reader = {
        let mut m = master.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut all = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = m.read(&mut buf) {
                if n == 0 {
                    break;
                }
                all.extend_from_slice(&buf[..n]);
            }
            all
        })
    };
    std::thread::sleep(Duration::from_millis(1000));
    let mut w = master.try_clone().unwrap();
    w.write_all(b"q").unwrap();
    let t0 = Instant::now();
    let st = loop {
        if let Some(st) = c.try_wait().unwrap() {
            break st;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "q did not quit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(st.success(), "{st:?}");
    // Terminal mode restored: canonical input and echo again.
    // SAFETY: tcgetattr on the slave fd we own.
    let lflag = unsafe {
        use std::os::fd::AsRawFd as _;
        let mut t: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(slave.as_raw_fd(), &mut t), 0);
        t.c_lflag
    };
    assert!(lflag & libc::ICANON != 0 && lflag & libc::ECHO != 0, "terminal restored");
    drop(slave);
    drop(w);
    drop(master);
    let out = String::from_utf8_lossy(&reader.join().unwrap()).into_owned();
    assert!(out.contains("\x1b[?1049h") && out.contains("\x1b[?1049l"), "alternate screen entered and left");
    assert!(out.contains("\x1b[1;7m"), "colour on a terminal");
    assert!(out.contains("RULE"), "{out}");
}
