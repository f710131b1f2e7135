//! The flood part of `cargo xtask bench`: frames delivered the way a NIC delivers them.
//!
//! In peer namespace `a`, `ps_tx` (an XDP program that redirects every frame into a devmap
//! holding `veth0`) runs under BPF_PROG_TEST_RUN in live-frames mode: each repeat is a real
//! `xdp_frame` sent out of veth0, and the ps namespace's eth0 receives it in its NAPI poll,
//! on the same CPU, through whatever XDP program eth0 has (without one, veth has no XDP rx
//! path and the frames vanish, so the nftables receivers get `ps_floor`, XDP_PASS only).
//! Receivers: `ps_drop` (XDP_DROP only), `ps_xdp` (the PS matrix, enforce), the nftables
//! and iptables/ip6tables rule sets `ps-agent export` writes for the same compiled matrix
//! (input chain, conntrack for replies, policy drop; a counted last rule added here so the
//! drops can be counted), and an nftables netdev ingress chain (the export has none: the
//! matrix's inbound ports in sets, a counted drop for other TCP/UDP). Floods: UDP to a port
//! no row names, TCP SYN likewise, both over IPv4 and IPv6, and the IPv4 ones over random
//! ports (`ps_tx_spray`). Each receiver and flood is measured in every round, interleaved;
//! figures are medians.
//!
//! Then a legitimate TCP flow (peer `a` → ps 198.18.0.1:443, ps-01) runs alone and under the
//! UDP and the TCP SYN flood, through each receiver that lets it in (not XDP_DROP only), and
//! its throughput is compared.

use std::time::Instant;

use ps_agent::{
    dataplane::{LoadOptions, Loaded, loaded::xdp_md_ctx},
    policy::compile::RuleSet,
    policy::config::{Mode, XdpModeName},
};
use ps_common::{
    layout::{STAT_DROP_BASE, TCP_SYN},
    reason::DropReason,
};
use ps_tests::{
    Lab,
    bench_object::{BenchObject, MAP_TX, PROG_BARE, PROG_DROP, PROG_FLOOR, PROG_TX, PROG_TX_SPRAY},
    enter_netns, in_netns, net_sysfs_write,
};

use crate::{
    measure::{BPF_PROG_TEST_RUN, bpf, test_run_attr, thread_cpu_ns},
    results::{
        FLOW_FLOODS, Flood, FloodKind, FloodRound, FloodScale, Flow, FlowRound, Receiver, ScalePoint, Threaded,
        ThreadedRound, UnderFlood,
    },
};

fn mac(ns: &str, dev: &str) -> [u8; 6] {
    let out = std::process::Command::new("ip").args(["-n", ns, "-j", "link", "show", "dev", dev]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = v[0]["address"].as_str().unwrap().to_string();
    let b: Vec<u8> = s.split(':').map(|x| u8::from_str_radix(x, 16).unwrap()).collect();
    b.try_into().unwrap()
}

fn csum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in data.chunks(2) {
        sum += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A frame from a's veth0 to ps eth0 (IPv4, or IPv6 with `v6`: the lab's addresses, which
/// are `ps_common::frames`' too), UDP or TCP SYN to `dport` from port 40000, built by
/// `ps_common::frames` with the lab's MAC addresses and valid IP and L4 checksums: the stack
/// drops a bad IPv4 checksum before netfilter's input hook, and conntrack marks a bad L4
/// checksum invalid without tracking it (cheaper than a real flood's frames, which it must
/// track).
fn flood_frame(dst: [u8; 6], src: [u8; 6], tcp: bool, v6: bool, dport: u16) -> Vec<u8> {
    use ps_common::frames;
    let (l4, payload) = if tcp { (frames::tcp(40000, dport, TCP_SYN), 0) } else { (frames::udp(40000, dport), 18) };
    let mut f = frames::frame(&[], &if v6 { frames::v6() } else { frames::v4() }, &l4, payload);
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    if !v6 {
        let c = csum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
    }
    let at = l4_offsets(&f).2 + if tcp { 16 } else { 6 };
    let c = match csum(&l4_csum_input(&f)) {
        // UDP: 0 means "no checksum"; a computed 0 is sent as 0xffff.
        0 if !tcp => 0xffff,
        c => c,
    };
    f[at..at + 2].copy_from_slice(&c.to_be_bytes());
    f
}

/// In a frame without VLAN tags, IPv4 options or IPv6 extension headers: where the source
/// and destination addresses are, their length, and where the L4 header starts.
fn l4_offsets(f: &[u8]) -> (usize, usize, usize) {
    if f[12..14] == [0x86, 0xdd] { (22, 16, 54) } else { (26, 4, 34) }
}

/// What the L4 checksum sums: the pseudo-header (addresses, protocol, L4 length; IPv4 and
/// IPv6 sum to the same with these fields) and the segment, its checksum field included.
fn l4_csum_input(f: &[u8]) -> Vec<u8> {
    let (addrs, len, l4) = l4_offsets(f);
    let proto = if l4 == 54 { f[20] } else { f[23] };
    let mut v = f[addrs..addrs + 2 * len].to_vec();
    v.extend_from_slice(&[0, proto]);
    v.extend_from_slice(&((f.len() - l4) as u16).to_be_bytes());
    v.extend_from_slice(&f[l4..]);
    v
}

/// Whether the L4 checksum of a [`flood_frame`]-shaped frame is valid: the one's-complement
/// sum over pseudo-header and segment is 0xffff.
fn l4_csum_ok(f: &[u8]) -> bool {
    csum(&l4_csum_input(f)) == 0
}

fn nft_sets(set: &RuleSet) -> String {
    let (mut tcp, mut udp) = (Vec::new(), Vec::new());
    for (&(l4, port), e) in &set.ports {
        if e.inbound != 0 {
            match l4 {
                ps_common::layout::L4::Tcp => tcp.push(port.to_string()),
                ps_common::layout::L4::Udp => udp.push(port.to_string()),
            }
        }
    }
    let set = |name: &str, ports: &[String]| {
        if ports.is_empty() {
            format!("set {name} {{ type inet_service; }}\n")
        } else {
            format!("set {name} {{ type inet_service; elements = {{ {} }} }}\n", ports.join(", "))
        }
    };
    format!("{} {}", set("tcpin", &tcp), set("udpin", &udp))
}

fn in_ns(ns: &str, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write as _;
    let mut child = std::process::Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{ns}"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Load an nftables script into `ns`.
fn nft(ns: &str, script: &str) {
    in_ns(ns, &["nft", "-f", "-"], Some(script));
}

/// Packets the INPUT chain's policy dropped (`cmd`: iptables or ip6tables).
fn iptables_policy_drops(ns: &str, cmd: &str) -> u64 {
    let text = in_ns(ns, &[cmd, "-L", "INPUT", "-v", "-x", "-n"], None);
    // "Chain INPUT (policy DROP 1234 packets, 5678 bytes)"
    text.split("policy DROP ").nth(1).and_then(|s| s.split_whitespace().next()?.parse().ok()).unwrap_or(0)
}

const IPTABLES_OPEN: &str = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";

fn nft_counter(ns: &str, family: &str, table: &str) -> u64 {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{ns}"))
        .args(["nft", "list", "table", family, table])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("counter packets ").nth(1).and_then(|s| s.split_whitespace().next()?.parse().ok()).unwrap_or(0)
}

/// Live-frames test run of `fd`: (wall s, CPU s).
fn live(fd: i32, frame: &[u8], ifindex: u32, repeat: u32) -> (f64, f64) {
    let ctx = xdp_md_ctx(ifindex, frame.len() as u32);
    let mut attr = test_run_attr(fd, frame, &ctx, repeat);
    attr[8] = 1 << 1; // flags: BPF_F_TEST_XDP_LIVE_FRAMES
    attr[9] = 64; // batch_size
    let (t0, c0) = (Instant::now(), thread_cpu_ns());
    bpf(BPF_PROG_TEST_RUN, &mut attr).unwrap_or_else(|e| panic!("live-frames test run: {e}"));
    (t0.elapsed().as_secs_f64(), (thread_cpu_ns() - c0) as f64 * 1e-9)
}

/// Run this thread on `cpu` only.
fn pin_to_cpu(cpu: usize) {
    pin_thread(0, cpu);
}

/// Run thread `tid` (0: this one) on `cpu` only.
fn pin_thread(tid: i32, cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one bit set, for the thread `tid`.
    let r = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    assert!(r == 0, "pin thread {tid} to CPU {cpu}: {}", std::io::Error::last_os_error());
}

/// Frames `dev`'s XDP program has seen on every receive queue (veth's `ethtool -S`
/// counters `rx_queue_N_xdp_packets`).
fn xdp_packets(ns: &str, dev: &str) -> u64 {
    in_ns(ns, &["ethtool", "-S", dev], None)
        .lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once(':')?;
            if k.starts_with("rx_queue_") && k.ends_with("_xdp_packets") { v.trim().parse::<u64>().ok() } else { None }
        })
        .sum()
}

/// Pids of the kernel's NAPI threads for devices named `dev` (any namespace).
fn napi_threads(dev: &str) -> Vec<i32> {
    let prefix = format!("napi/{dev}-");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            comm.starts_with(&prefix).then_some(pid)
        })
        .collect()
}

/// Move eth0's NAPI in namespace `ns` onto kernel threads pinned to `cpu`, or (`None`) back
/// into softirq context. The sysfs file is written through `ip netns exec` (which mounts
/// the namespace's own /sys; under `nsenter` /sys/class/net is the host's). veth has NAPI
/// instances only while an XDP program is attached: call it after the attach.
fn threaded_napi(ns: &str, cpu: Option<usize>) {
    let before = napi_threads("eth0");
    net_sysfs_write(ns, "eth0/threaded", if cpu.is_some() { "1" } else { "0" });
    let Some(cpu) = cpu else { return };
    let new: Vec<i32> = napi_threads("eth0").into_iter().filter(|p| !before.contains(p)).collect();
    assert!(!new.is_empty(), "no NAPI thread appeared for eth0 in {ns}");
    for pid in new {
        pin_thread(pid, cpu);
    }
}

/// Seconds each legitimate-flow measurement lasts.
const FLOW_SECS: f64 = 1.5;

/// A TCP flow from peer `a` to ps 198.18.0.1:443 (ps-01) for [`FLOW_SECS`]: Gbit/s, flood
/// frames sent meanwhile and the seconds measured. With `flood`, a generator thread in `a`
/// floods eth0 with live frames the whole time.
fn legit_flow(lab: &Lab, flood: Option<(i32, Vec<u8>, u32)>) -> UnderFlood {
    use std::{
        io::{Read as _, Write as _},
        net::{TcpListener, TcpStream},
        sync::{
            Arc,
            atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        },
        time::Duration,
    };
    let listener = in_netns(&lab.ps, || TcpListener::bind("198.18.0.1:443").expect("listen on ps 443"));
    lab.steer_tx(&lab.a, "veth0", 2);
    let mut client = in_netns(&lab.a, || TcpStream::connect("198.18.0.1:443").expect("connect to ps 443"));
    let (mut server, _) = listener.accept().unwrap();
    let (stop, got, sent) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut threads = Vec::new();
    let st = stop.clone();
    threads.push(std::thread::spawn(move || {
        pin_to_cpu(1);
        let buf = vec![0x5a; 64 * 1024];
        while !st.load(Relaxed) && client.write_all(&buf).is_ok() {}
    }));
    let (st, g) = (stop.clone(), got.clone());
    threads.push(std::thread::spawn(move || {
        pin_to_cpu(1);
        let _ = server.set_read_timeout(Some(Duration::from_millis(200)));
        let mut buf = vec![0; 256 * 1024];
        while !st.load(Relaxed) {
            match server.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    g.fetch_add(n as u64, Relaxed);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => break,
            }
        }
    }));
    if let Some((fd, frame, veth0)) = flood {
        let (st, n, ns) = (stop.clone(), sent.clone(), lab.a.clone());
        threads.push(std::thread::spawn(move || {
            enter_netns(&ns);
            pin_to_cpu(0);
            while !st.load(Relaxed) {
                live(fd, &frame, veth0, 200_000);
                n.fetch_add(200_000, Relaxed);
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(300));
    let (b0, s0, t0) = (got.load(Relaxed), sent.load(Relaxed), Instant::now());
    std::thread::sleep(Duration::from_secs_f64(FLOW_SECS));
    let (b1, s1, secs) = (got.load(Relaxed), sent.load(Relaxed), t0.elapsed().as_secs_f64());
    stop.store(true, Relaxed);
    drop(listener);
    for t in threads {
        t.join().unwrap();
    }
    UnderFlood { gbps: (b1 - b0) as f64 * 8.0 / secs / 1e9, flood_frames: s1 - s0, secs }
}

/// The flood generator in namespace a: `ps_tx` and `ps_tx_spray` redirecting into veth0.
struct Generator {
    /// An agent object loaded with the receiver's rule set, whose policy maps the bench
    /// object reads (`ps_tx_spray` reads the port bits); kept for as long as the programs.
    _policy: Loaded,
    _object: BenchObject,
    /// veth0's ifindex.
    veth0: u32,
    /// `ps_tx`, for live-frames test runs.
    tx: i32,
    /// `ps_tx_spray`, likewise.
    spray: i32,
}

fn generator(lab: &Lab, set: &RuleSet) -> Generator {
    let set = set.clone();
    in_netns(&lab.a, move || {
        let veth0 = ps_agent::dataplane::host::ifindex("veth0").unwrap();
        let policy = Loaded::load(&set, &[], &LoadOptions::new(Mode::Enforce)).unwrap();
        let mut object = BenchObject::load(&policy);
        let mut m: aya::maps::DevMap<_> =
            aya::maps::DevMap::try_from(object.ebpf_mut().map_mut(MAP_TX).unwrap()).unwrap();
        m.set(0, veth0, None, 0).unwrap();
        let (tx, spray) = (object.fd(PROG_TX), object.fd(PROG_TX_SPRAY));
        Generator { _policy: policy, _object: object, veth0, tx, spray }
    })
}

/// The receiving end on eth0 of the ps namespace: `ps_xdp` with the rule set, and the
/// bench's reference programs sharing its maps (`ps_bare` reads its port table).
struct Rx {
    policy: Loaded,
    object: BenchObject,
    eth0: u32,
}

impl Rx {
    /// `ps_xdp`'s `no_rule` drops on eth0 (interface slot 1) so far.
    fn no_rule_drops(&self) -> u64 {
        self.policy.counters().unwrap().stats[1][(STAT_DROP_BASE + DropReason::NoRule as u32) as usize].packets
    }
}

/// Check `ps_tx_spray` on `frame` before it floods anything: over 2,000 runs (BPF_PROG_TEST_RUN,
/// not live: the frame comes back) it redirects, keeps the L4 checksum valid, spreads the
/// ports (at least 1,900 distinct destination ports), and every frame it makes is one the
/// receiver's policy drops as `no_rule` on eth0 (the host classifier says so).
fn check_spray(fd: i32, frame: &[u8], set: &RuleSet) {
    const XDP_REDIRECT: u32 = 4;
    let model = ps_agent::policy::model::Model::new(set, Mode::Enforce);
    let mut dports = std::collections::BTreeSet::new();
    for _ in 0..2000 {
        let mut out = vec![0u8; frame.len()];
        let mut attr = [0u64; 16];
        attr[0] = fd as u32 as u64;
        attr[1] = frame.len() as u64 | (out.len() as u64) << 32;
        attr[2] = frame.as_ptr() as u64;
        attr[3] = out.as_mut_ptr() as u64;
        attr[4] = 1;
        // (The buffers outlive the call.)
        bpf(BPF_PROG_TEST_RUN, &mut attr).unwrap_or_else(|e| panic!("test run of ps_tx_spray: {e}"));
        assert_eq!(attr[0] >> 32, XDP_REDIRECT as u64, "ps_tx_spray must redirect");
        assert!(l4_csum_ok(&out), "ps_tx_spray broke the L4 checksum: {out:02x?}");
        let d = model.decide(&out, 1);
        assert_eq!(
            d.verdict,
            ps_common::classify::Verdict::Drop(DropReason::NoRule),
            "a sprayed frame the policy does not drop as no_rule: {out:02x?}"
        );
        dports.insert(u16::from_be_bytes([out[36], out[37]]));
    }
    assert!(dports.len() >= 1900, "ps_tx_spray used only {} destination ports", dports.len());
}

/// The program on eth0 for `receiver`: `None` for ps-agent (its own attach); the netfilter
/// receivers get `ps_floor`, XDP_PASS, since veth has no XDP receive path without one.
fn xdp_program(receiver: Receiver) -> Option<&'static str> {
    match receiver {
        Receiver::XdpDropOnly => Some(PROG_DROP),
        Receiver::PsAgent => None,
        Receiver::NftablesInput | Receiver::NftablesNetdev | Receiver::Iptables => Some(PROG_FLOOR),
        Receiver::Bare => Some(PROG_BARE),
    }
}

/// The rule sets of the netfilter receivers, in the form their tools load.
struct Netfilter {
    nft_export: String,
    ipt_export: String,
    ip6t_export: String,
    /// The nftables sets of the matrix's inbound ports (the netdev chain's).
    sets: String,
}

impl Netfilter {
    fn new(set: &RuleSet) -> Self {
        let meta = ps_agent::policy::export::ExportMeta { product: "PS 8.1.2".into(), policy: "shipped".into() };
        Self {
            nft_export: ps_agent::policy::export::nftables(set, &meta).unwrap(),
            ipt_export: ps_agent::policy::export::iptables(set, &meta, false).unwrap(),
            ip6t_export: ps_agent::policy::export::iptables(set, &meta, true).unwrap(),
            sets: nft_sets(set),
        }
    }

    /// Load `receiver`'s rule set into namespace `ns` (nothing for the XDP receivers).
    fn up(&self, ns: &str, receiver: Receiver) {
        match receiver {
            Receiver::NftablesInput => {
                nft(ns, &self.nft_export);
                nft(ns, "add rule inet ps_agent input counter drop\n");
            }
            Receiver::NftablesNetdev => nft(
                ns,
                &format!(
                    "table netdev p7flood {{\n {} chain ingress {{ type filter hook ingress device \"eth0\" priority 0; policy accept;\n  tcp dport @tcpin accept\n  udp dport @udpin accept\n  meta l4proto {{ tcp, udp }} counter drop\n }}\n}}\n",
                    self.sets
                ),
            ),
            Receiver::Iptables => {
                in_ns(ns, &["iptables-restore"], Some(&self.ipt_export));
                in_ns(ns, &["ip6tables-restore"], Some(&self.ip6t_export));
            }
            _ => {}
        }
    }

    /// Remove what [`Self::up`] loaded.
    fn down(ns: &str, receiver: Receiver) {
        match receiver {
            Receiver::NftablesInput => nft(ns, "delete table inet ps_agent\n"),
            Receiver::NftablesNetdev => nft(ns, "delete table netdev p7flood\n"),
            Receiver::Iptables => {
                in_ns(ns, &["iptables-restore"], Some(IPTABLES_OPEN));
                in_ns(ns, &["ip6tables-restore"], Some(IPTABLES_OPEN));
            }
            _ => {}
        }
    }

    /// The drops `receiver`'s own counter has seen (`None`: it has none).
    fn counted(ns: &str, rx: &Rx, receiver: Receiver) -> Option<u64> {
        match receiver {
            Receiver::PsAgent => Some(rx.no_rule_drops()),
            Receiver::NftablesInput => Some(nft_counter(ns, "inet", "ps_agent")),
            Receiver::NftablesNetdev => Some(nft_counter(ns, "netdev", "p7flood")),
            Receiver::Iptables => Some(iptables_policy_drops(ns, "iptables") + iptables_policy_drops(ns, "ip6tables")),
            Receiver::XdpDropOnly | Receiver::Bare => None,
        }
    }
}

/// Attach `receiver`'s XDP program on eth0 (in the ps namespace); returns what to detach.
fn attach(lab: &Lab, rx: Rx, receiver: Receiver) -> (Rx, Option<(&'static str, aya::programs::xdp::XdpLinkId)>) {
    in_netns(&lab.ps, move || {
        let mut r = rx;
        let link = match xdp_program(receiver) {
            Some(name) => {
                Some((name, r.object.program_mut(name).attach("eth0", aya::programs::XdpMode::Driver).unwrap()))
            }
            None => {
                r.policy.attach(&[("eth0".into(), r.eth0)], XdpModeName::Native).unwrap();
                None
            }
        };
        (r, link)
    })
}

/// Undo [`attach`].
fn detach(lab: &Lab, rx: Rx, link: Option<(&'static str, aya::programs::xdp::XdpLinkId)>) -> Rx {
    in_netns(&lab.ps, move || {
        let mut r = rx;
        match link {
            Some((name, id)) => r.object.program_mut(name).detach(id).unwrap(),
            None => r.policy.detach_all(),
        }
        r
    })
}

/// The floods the threaded section runs (the first of [`FloodKind::ALL`]).
const THREADED: usize = 2;

/// Run the flood benchmark: (floods, legitimate flows, floods with a threaded receiver).
pub fn flood(lab: &Lab, set: &RuleSet, rounds: usize, frames: u32) -> (Vec<Flood>, Vec<Flow>, Vec<Threaded>) {
    let netfilter = Netfilter::new(set);
    let eth0_mac = mac(&lab.ps, "eth0");
    let veth_mac = mac(&lab.a, "veth0");
    let frame = |tcp, v6| flood_frame(eth0_mac, veth_mac, tcp, v6, 7200);
    let (udp, syn, udp6, syn6) = (frame(false, false), frame(true, false), frame(false, true), frame(true, true));
    assert!([&udp, &syn, &udp6, &syn6].iter().all(|f| l4_csum_ok(f)), "flood frames with bad L4 checksums");
    // Receiver side: ps_xdp with the matrix on eth0, and the reference programs.
    let rx_set = set.clone();
    let mut rx = in_netns(&lab.ps, move || {
        let eth0 = ps_agent::dataplane::host::ifindex("eth0").unwrap();
        let policy = Loaded::load(&rx_set, &[("eth0".into(), eth0)], &LoadOptions::new(Mode::Enforce)).unwrap();
        let object = BenchObject::load(&policy);
        Rx { policy, object, eth0 }
    });
    let generator = generator(lab, set);
    let (veth0, tx_fd, spray_fd) = (generator.veth0, generator.tx, generator.spray);
    // (Not live: the namespace does not matter.)
    check_spray(spray_fd, &udp, set);
    check_spray(spray_fd, &syn, set);
    // (frame, generator program) of each of FloodKind::ALL.
    let floods =
        [(udp.clone(), tx_fd), (syn.clone(), tx_fd), (udp, spray_fd), (syn, spray_fd), (udp6, tx_fd), (syn6, tx_fd)];
    let kinds = FloodKind::ALL;
    let mut results: Vec<Flood> = Vec::new();
    let mut threaded: Vec<Threaded> = Vec::new();
    for receiver in Receiver::ALL {
        for (fi, flood) in kinds.into_iter().enumerate() {
            results.push(Flood { receiver, flood, frames: frames as u64, rounds: vec![] });
            if fi < THREADED {
                threaded.push(Threaded { receiver, flood, frames: frames as u64, rounds: vec![] });
            }
        }
    }
    // The legitimate flow, through every receiver that admits it.
    let mut flows: Vec<Flow> = Receiver::ALL
        .into_iter()
        .filter(|&r| r != Receiver::XdpDropOnly)
        .map(|receiver| Flow { receiver, rounds: vec![] })
        .collect();
    let ns = lab.ps.clone();
    for round in 0..rounds {
        for (ri, receiver) in Receiver::ALL.into_iter().enumerate() {
            let (r, link) = attach(lab, rx, receiver);
            rx = r;
            netfilter.up(&ns, receiver);
            for (fi, (frame, gen_fd)) in floods.iter().enumerate() {
                let before = Netfilter::counted(&ns, &rx, receiver);
                let (frame, gen_fd) = (frame.clone(), *gen_fd);
                let (wall_s, cpu_s) = in_netns(&lab.a, move || live(gen_fd, &frame, veth0, frames));
                let after = Netfilter::counted(&ns, &rx, receiver);
                let counted = before.zip(after).map(|(b, a)| a - b);
                results[ri * floods.len() + fi].rounds.push(FloodRound { wall_s, cpu_s, counted });
            }
            // The same floods with eth0's NAPI on a thread of its own on CPU 1, the generator
            // on CPU 0: the receiver's own rate, no longer sharing a CPU with the sender.
            threaded_napi(&lab.ps, Some(1));
            for (fi, (frame, gen_fd)) in floods.iter().take(THREADED).enumerate() {
                let count = |rx: &Rx| (receiver == Receiver::PsAgent).then(|| rx.no_rule_drops());
                let (seen0, before) = (xdp_packets(&lab.ps, "eth0"), count(&rx));
                let (frame, gen_fd) = (frame.clone(), *gen_fd);
                let (wall_s, _) = in_netns(&lab.a, move || {
                    pin_to_cpu(0);
                    live(gen_fd, &frame, veth0, frames)
                });
                // Let the NAPI thread empty the ring.
                std::thread::sleep(std::time::Duration::from_millis(50));
                let (seen1, after) = (xdp_packets(&lab.ps, "eth0"), count(&rx));
                let counted = before.zip(after).map(|(b, a)| a - b);
                threaded[ri * THREADED + fi].rounds.push(ThreadedRound { wall_s, seen: seen1 - seen0, counted });
            }
            threaded_napi(&lab.ps, None);
            if let Some(flow) = flows.iter_mut().find(|f| f.receiver == receiver) {
                let alone_gbps = legit_flow(lab, None).gbps;
                let under = FLOW_FLOODS
                    .iter()
                    .map(|k| {
                        let (frame, gen_fd) = &floods[kinds.iter().position(|x| x == k).unwrap()];
                        legit_flow(lab, Some((*gen_fd, frame.clone(), veth0)))
                    })
                    .collect();
                flow.rounds.push(FlowRound { alone_gbps, under });
            }
            Netfilter::down(&ns, receiver);
            rx = detach(lab, rx, link);
        }
        eprintln!("flood round {}/{rounds} done", round + 1);
    }
    drop(generator);
    drop(rx);
    (results, flows, threaded)
}

/// The UDP flood (to a port no rule names) at each rule count: ps-agent with the compiled
/// set, and the nftables and iptables rule sets `ps-agent export` writes for it. Frames per
/// run shrink as the rule count grows (`frames` at the smallest set, then in proportion):
/// a linear rule walk makes each frame slower.
pub fn flood_scale(lab: &Lab, sets: &[(usize, RuleSet)], frames: u32) -> Vec<FloodScale> {
    let eth0_mac = mac(&lab.ps, "eth0");
    let veth_mac = mac(&lab.a, "veth0");
    let frame = flood_frame(eth0_mac, veth_mac, false, false, 65001);
    let generator = generator(lab, &sets[0].1);
    let (veth0, gen_fd) = (generator.veth0, generator.tx);
    let meta = ps_agent::policy::export::ExportMeta { product: "scale".into(), policy: "scale".into() };
    let mut out: Vec<FloodScale> = [Receiver::PsAgent, Receiver::NftablesInput, Receiver::Iptables]
        .into_iter()
        .map(|receiver| FloodScale { receiver, points: vec![] })
        .collect();
    for (n, set) in sets {
        let frames = (frames as u64 * 30 / (*n as u64).max(30)).max(20_000) as u32;
        let mut run = |ri: usize, count: &dyn Fn() -> u64| {
            let before = count();
            let f = frame.clone();
            let (_, cpu_s) = in_netns(&lab.a, move || live(gen_fd, &f, veth0, frames));
            let counted = count() - before;
            out[ri].points.push(ScalePoint { rules: *n, frames: frames as u64, cpu_s, counted });
        };
        // ps-agent.
        let rx_set = set.clone();
        let rx = in_netns(&lab.ps, move || {
            let eth0 = ps_agent::dataplane::host::ifindex("eth0").unwrap();
            let mut policy = Loaded::load(&rx_set, &[("eth0".into(), eth0)], &LoadOptions::new(Mode::Enforce)).unwrap();
            policy.attach(&[("eth0".into(), eth0)], XdpModeName::Native).unwrap();
            let object = BenchObject::load(&policy);
            Rx { policy, object, eth0 }
        });
        run(0, &|| rx.no_rule_drops());
        // The netfilter receivers behind an XDP_PASS program (veth needs one, see above).
        let (rx, link) = in_netns(&lab.ps, move || {
            let mut r = rx;
            r.policy.detach_all();
            let link = r.object.program_mut(PROG_FLOOR).attach("eth0", aya::programs::XdpMode::Driver).unwrap();
            (r, link)
        });
        nft(&lab.ps, &ps_agent::policy::export::nftables(set, &meta).unwrap());
        nft(&lab.ps, "add rule inet ps_agent input counter drop\n");
        run(1, &|| nft_counter(&lab.ps, "inet", "ps_agent"));
        nft(&lab.ps, "delete table inet ps_agent\n");
        in_ns(&lab.ps, &["iptables-restore"], Some(&ps_agent::policy::export::iptables(set, &meta, false).unwrap()));
        run(2, &|| iptables_policy_drops(&lab.ps, "iptables"));
        in_ns(&lab.ps, &["iptables-restore"], Some(IPTABLES_OPEN));
        in_netns(&lab.ps, move || {
            let mut r = rx;
            r.object.program_mut(PROG_FLOOR).detach(link).unwrap();
        });
        eprintln!("flood at {n} rules done");
    }
    drop(generator);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checksums of the four flood frames, as an independent implementation (Python,
    /// RFC 1071 over the RFC 768/793 and RFC 8200 pseudo-headers) computed them.
    #[test]
    fn flood_frames_carry_valid_checksums() {
        for (tcp, v6, l4_csum, ip_csum) in [
            (false, false, [0xbb, 0x31], Some([0xee, 0x96])),
            (true, false, [0x6b, 0x59], Some([0xee, 0xa7])),
            (false, true, [0x4d, 0x55], None),
            (true, true, [0xfd, 0x7c], None),
        ] {
            let f = flood_frame([2; 6], [4; 6], tcp, v6, 7200);
            let at = l4_offsets(&f).2 + if tcp { 16 } else { 6 };
            assert_eq!(f[at..at + 2], l4_csum, "tcp {tcp} v6 {v6}: {f:02x?}");
            if let Some(c) = ip_csum {
                assert_eq!(f[24..26], c, "IPv4 header checksum: {f:02x?}");
            }
            assert!(l4_csum_ok(&f));
            assert!(!l4_csum_ok(&[&f[..f.len() - 1], &[f[f.len() - 1] ^ 1]].concat()), "a flipped bit must show");
        }
    }
}
