//! `explain --pcap` on captures written by the real tools while the agent enforces: tcpdump
//! (Ethernet pcap, and `-i any`: Linux cooked v2 with the packet direction), dumpcap (pcapng
//! over two Ethernet interfaces, and `-i any`: pcapng with Linux cooked v1) and editcap
//! (pcap to pcapng). For each capture, the verdicts explain gives every rule and drop reason
//! must add up to what the kernel counted over the same traffic.
//!
//! Where each capture sees the traffic: XDP drops a frame before any capture on the host
//! sees it, so the host's own captures hold what passed (and, in dry-run, everything), and
//! the capture on the peer's side of the veth holds every frame sent to the host.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use ps_agent::{
    observe::stats::StatsReport,
    policy::explain::{ExplainVerdict, Replay},
};
use ps_common::reason::DropReason;
use ps_tests::*;

const OPEN: Duration = Duration::from_secs(3);
const DROP: Duration = Duration::from_millis(800);

/// A capture tool running in a namespace until [`Sniffer::stop`].
struct Sniffer {
    child: Child,
    file: PathBuf,
    /// The tool's stderr: its readiness line, and at the end what it dropped.
    err: PathBuf,
}

impl Sniffer {
    /// Run `tool ARGS -w FILE` in `ns` and wait until it says it captures (`ready` on stderr).
    fn start(ns: &str, tool: &str, args: &[&str], file: PathBuf, ready: &str) -> Self {
        let err = PathBuf::from(format!("{}.stderr", file.display()));
        let child = Command::new("ip")
            .args(["netns", "exec", ns, tool])
            .args(args)
            .arg("-w")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&err).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("run {tool}: {e}; `bash xtask/setup.sh` installs tcpdump and wireshark-common"));
        let t0 = Instant::now();
        while !fs::read_to_string(&err).unwrap_or_default().contains(ready) {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "{tool} did not start: {}",
                fs::read_to_string(&err).unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, file, err }
    }

    /// SIGINT (both tools then write out what they hold) and wait; the capture file.
    fn stop(mut self) -> PathBuf {
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self.child.wait().unwrap();
        let err = fs::read_to_string(&self.err).unwrap();
        assert!(status.success(), "{}: {status}: {err}", self.file.display());
        assert!(!lost(&err), "{} lost packets, its verdicts would fall short: {err}", self.file.display());
        assert!(self.file.exists(), "{} not written", self.file.display());
        self.file.clone()
    }
}

/// Whether a tool's closing lines count lost packets: tcpdump's `N packets dropped by
/// kernel`, dumpcap's `Packets received/dropped on interface 'x': R/D (...)`.
fn lost(stderr: &str) -> bool {
    stderr.lines().any(|l| {
        let tcpdump = l.contains("dropped by kernel") && !l.starts_with("0 ");
        let dumpcap = l.contains("received/dropped")
            && l.rsplit(": ").next().and_then(|rd| rd.split('/').nth(1)).is_some_and(|d| !d.starts_with("0 "));
        tcpdump || dumpcap
    })
}

/// `ps-agent explain --pcap FILE --json ARGS`, read as the agent's own type.
fn explain(file: &Path, args: &[&str]) -> Replay {
    let out = Command::new(agent_bin())
        .args(["explain", "--config", "/dev/null", "--iface", "eth0", "--json", "--pcap"])
        .arg(file)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "explain {}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("`explain --json` of {} is not a Replay: {e}\n{}", file.display(), String::from_utf8_lossy(&out.stdout))
    })
}

/// Packets per rule (`rule ID`) and per drop reason (`drop REASON`), as explain gives them:
/// a rule admits `accept` and `accept if tracked` (the replies here are to flows the host
/// opened, so the kernel admits them too).
fn explained(v: &Replay) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for f in &v.flows {
        let key = match f.verdict {
            ExplainVerdict::Accept | ExplainVerdict::AcceptIfTracked => format!("rule {}", f.why),
            ExplainVerdict::Drop | ExplainVerdict::WouldDrop => format!("drop {}", f.why),
            // ARP, NDP, ICMP errors: also sent by the host itself, not counted per rule.
            ExplainVerdict::Pass => continue,
        };
        *m.entry(key).or_default() += f.packets;
    }
    m
}

/// The same from the kernel's counters: what changed between `before` and `after`.
/// Drops are `drops` when enforcing, `would_drop` in dry-run.
fn counted(before: &StatsReport, after: &StatsReport) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for r in &after.rules {
        let n = r.packets - rule(before, &r.rule.id, r.rule.direction).packets;
        if n > 0 {
            *m.entry(format!("rule {}", r.rule.id)).or_default() += n;
        }
    }
    for reason in DropReason::ALL {
        let grew = |count: fn(&StatsReport, DropReason) -> u64| count(after, reason) - count(before, reason);
        let n = grew(StatsReport::drop_count) + grew(StatsReport::would_drop_count);
        if n > 0 {
            *m.entry(format!("drop {}", reason.as_str())).or_default() += n;
        }
    }
    m
}

/// Traffic to ps's eth0 from peer a, and from ps to a: admitted flows (IPv4 and IPv6), a
/// reply to a flow ps opened, and flows the matrix drops.
fn traffic(lab: &Lab, dry_run: bool) {
    let _l443 = Listener::tcp(&lab.ps, 443);
    let _l18443 = Listener::tcp(&lab.ps, 18443);
    let _sm = Listener::tcp(&lab.a, 5062);
    assert_eq!(tcp_probe(&lab.a, PS_ETH0_V4, 443, OPEN), Probe::Open, "ps-01");
    assert_eq!(tcp_probe(&lab.a, PS_ETH0_V6, 18443, OPEN), Probe::Open, "ps-22");
    assert_eq!(tcp_probe(&lab.a, PS_ETH0_V4, 5222, OPEN), Probe::Refused, "ps-10, closed port");
    assert_eq!(tcp_probe(&lab.ps, A_V4, 5062, OPEN), Probe::Open, "ps-04 reply");
    let (dropped, timeout) = if dry_run { (Probe::Refused, OPEN) } else { (Probe::TimedOut, DROP) };
    assert_eq!(tcp_probe(&lab.a, PS_ETH0_V4, 8080, timeout), dropped, "not in the matrix");
    for port in [9999, 161, 9999] {
        assert_eq!(udp_probe(&lab.a, 0, PS_ETH0_V4, port, timeout), dropped, "udp/{port}");
    }
    // Let the last FINs and ACKs arrive before the counters are read.
    std::thread::sleep(Duration::from_millis(500));
}

/// Run the traffic under the captures, with the agent enforcing or in dry-run. The two
/// tests' tags are not prefixes of each other: a lab removes the pins of every tag that
/// starts with its own.
fn replay_real_captures(tag: &str, dry_run: bool) {
    for tool in ["tcpdump", "dumpcap", "editcap"] {
        assert!(sh_ok(&format!("command -v {tool}")), "{tool} missing: `bash xtask/setup.sh` installs it");
    }
    let lab = Lab::new(tag);
    let agent = Agent::start(&lab.ps, tag, if dry_run { &["--dry-run"] } else { &[] });
    let dir = scratch(&format!("{tag}-captures"));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let f = |name: &str| dir.join(name);
    let tcpdump = |ns: &str, iface: &str, file| {
        // Immediate mode (each packet written as it comes) takes TPACKET_V2, whose ring has
        // one 256 KiB slot per packet at the default snapshot length: 2 MiB (`-B`, KiB) held
        // 8 packets, and a loaded machine lost some.
        let args = ["-i", iface, "-Z", "root", "-U", "--immediate-mode", "-B", "32768"];
        Sniffer::start(ns, "tcpdump", &args, f(file), "listening on")
    };
    let dumpcap = |args: &[&str], file| Sniffer::start(&lab.ps, "dumpcap", args, f(file), "Capturing on");
    let sniffers = [
        tcpdump(&lab.a, "veth0", "peer.pcap"),
        tcpdump(&lab.ps, "any", "any.pcap"),
        dumpcap(&["-i", "any"], "any.pcapng"),
        dumpcap(&["-i", "eth0", "-i", "eth1"], "eths.pcapng"),
    ];
    std::thread::sleep(Duration::from_millis(300));
    let before = agent.report();
    traffic(&lab, dry_run);
    let after = agent.report();
    // What the tools still hold in their kernel buffers reaches the files before they stop.
    std::thread::sleep(Duration::from_secs(1));
    let [peer, any, any_ng, eths] = sniffers.map(Sniffer::stop);
    let peer_ng = f("peer.pcapng");
    sh(&format!("editcap -F pcapng {} {}", peer.display(), peer_ng.display()));

    let kernel = counted(&before, &after);
    for key in ["rule ps-01+ps-02", "rule ps-22", "rule ps-10", "rule ps-04", "drop no_rule"] {
        assert!(kernel.contains_key(key), "the traffic reaches {key}: {kernel:?}");
    }
    // The peer's side of the link: every frame ps received, no direction; ps's own by --local.
    let local = ["--local", PS_ETH0_V4, "--local", PS_ETH0_V6];
    let v = explain(&peer, &local);
    assert_eq!(explained(&v), kernel, "tcpdump -w on the peer (Ethernet pcap): {v:?}");
    assert!(v.skipped_local > 0 && v.skipped_outgoing == 0, "{v:?}");
    assert_eq!(explain(&peer_ng, &local), v, "editcap -F pcapng: the same frames, the same answer");

    // ps's side: what passed XDP (in dry-run: everything), ps's own frames marked outgoing.
    let passed: BTreeMap<String, u64> =
        kernel.iter().filter(|(k, _)| dry_run || k.starts_with("rule")).map(|(k, v)| (k.clone(), *v)).collect();
    for (name, file) in [("tcpdump -i any (Linux cooked v2)", &any), ("dumpcap -i any (pcapng, cooked v1)", &any_ng)] {
        let v = explain(file, &[]);
        assert_eq!(explained(&v), passed, "{name}");
        assert!(v.skipped_outgoing > 0 && v.skipped_local == 0, "{name}: {v:?}");
    }
    let all_local = ["--local", PS_ETH0_V4, "--local", PS_ETH0_V6, "--local", PS_ETH1_V4, "--local", PS_ETH1_V6];
    assert_eq!(explained(&explain(&eths, &all_local)), passed, "dumpcap -i eth0 -i eth1 (pcapng, two interfaces)");

    let text = Command::new(agent_bin())
        .args(["explain", "--config", "/dev/null", "--iface", "eth0", "--pcap"])
        .arg(&any)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("frames the capture marks as sent by this host skipped"), "{text}");
    drop(agent);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn real_captures_replay_with_the_kernels_verdicts() {
    replay_real_captures("cpe", false);
}

#[test]
fn real_captures_replay_with_the_kernels_verdicts_dry_run() {
    replay_real_captures("cpd", true);
}
