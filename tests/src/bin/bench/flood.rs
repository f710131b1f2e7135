//! The flood part of `cargo xtask bench`: frames delivered the way a NIC delivers them.
//!
//! In peer namespace `a`, `ps_tx` (an XDP program that redirects every frame into a devmap
//! holding `veth0`) runs under BPF_PROG_TEST_RUN in live-frames mode: each repeat is a real
//! `xdp_frame` sent out of veth0, and the ps namespace's eth0 receives it in its NAPI poll,
//! on the same CPU, through whatever XDP program eth0 has (without one, veth has no XDP rx
//! path and the frames vanish, so the nftables receivers get `ps_floor`, XDP_PASS only).
//! Receivers: `ps_drop` (XDP_DROP only), `ps_xdp` (the PS matrix, enforce), nftables input
//! chain, nftables netdev ingress chain, both with the matrix's ports in sets and a drop for
//! other TCP/UDP. Floods: UDP to a port no row names, TCP SYN likewise. Each receiver and
//! flood is measured in every round, interleaved; figures are medians.

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    time::Instant,
};

use ps_agent::{
    compile::RuleSet,
    config::{Mode, XdpModeName},
    load::{LoadOptions, Loaded, xdp_md_ctx},
};
use ps_common::{
    layout::{STAT_DROP_BASE, TCP_SYN},
    reason::DropReason,
};
use ps_tests::{Lab, in_netns};

/// One receiver's results for one flood.
pub struct FloodResult {
    /// Receiver.
    pub receiver: &'static str,
    /// Flood.
    pub flood: &'static str,
    /// Frames per round.
    pub frames: u64,
    /// Per round: wall seconds, generator-thread CPU seconds, frames the receiver counted
    /// (`None`: it has no counter).
    pub rounds: Vec<(f64, f64, Option<u64>)>,
}

const RECEIVERS: [&str; 4] = ["XDP_DROP only", "ps-agent", "nftables input", "nftables netdev ingress"];

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

/// A minimal IPv4 frame from a's veth0 to ps eth0 with a valid IP header checksum (the
/// stack drops bad ones before netfilter's input hook), UDP or TCP SYN to `dport`.
fn flood_frame(dst: [u8; 6], src: [u8; 6], tcp: bool, dport: u16) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    let l4: Vec<u8> = if tcp {
        let mut t = vec![0u8; 20];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&dport.to_be_bytes());
        t[12] = 0x50;
        t[13] = TCP_SYN;
        t[14..16].copy_from_slice(&64240u16.to_be_bytes());
        t
    } else {
        let mut u = vec![0u8; 8 + 18];
        u[0..2].copy_from_slice(&40000u16.to_be_bytes());
        u[2..4].copy_from_slice(&dport.to_be_bytes());
        u[4..6].copy_from_slice(&26u16.to_be_bytes());
        u
    };
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, if tcp { 6 } else { 17 }, 0, 0, 198, 18, 0, 2, 198, 18, 0, 1];
    ip[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    let c = csum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&l4);
    f
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

fn nft(ns: &str, script: &str) {
    let path = format!("/tmp/pst-p7b-nft-{}.nft", std::process::id());
    std::fs::write(&path, script).unwrap();
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{ns}"))
        .args(["nft", "-f", &path])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success(), "nft -f: {}", String::from_utf8_lossy(&out.stderr));
}

fn nft_counter(ns: &str, family: &str, table: &str) -> u64 {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{ns}"))
        .args(["nft", "list", "table", family, table])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("counter packets ").nth(1).and_then(|s| s.split_whitespace().next()?.parse().ok()).unwrap_or(0)
}

/// Thread CPU time, seconds.
fn cpu_s() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into ts.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Live-frames test run of `fd`: (wall s, CPU s).
fn live(fd: i32, frame: &[u8], ifindex: u32, repeat: u32) -> (f64, f64) {
    let ctx = xdp_md_ctx(ifindex, frame.len() as u32);
    let mut attr = [0u64; 16];
    attr[0] = fd as u32 as u64;
    attr[1] = frame.len() as u64;
    attr[2] = frame.as_ptr() as u64;
    attr[4] = repeat as u64;
    attr[5] = ctx.len() as u64;
    attr[6] = ctx.as_ptr() as u64;
    attr[8] = 1 << 1; // BPF_F_TEST_XDP_LIVE_FRAMES
    attr[9] = 64; // batch_size
    let (t0, c0) = (Instant::now(), cpu_s());
    // SAFETY: as in the bench's `bpf`: a zeroed 128-byte bpf_attr.
    let r = unsafe { libc::syscall(libc::SYS_bpf, 10 as libc::c_long, attr.as_mut_ptr(), 128usize) };
    assert!(r == 0, "live-frames test run: {}", std::io::Error::last_os_error());
    (t0.elapsed().as_secs_f64(), cpu_s() - c0)
}

/// Run the flood benchmark.
pub fn flood(lab: &Lab, set: &RuleSet, rounds: usize, frames: u32) -> Vec<FloodResult> {
    let eth0_mac = mac(&lab.ps, "eth0");
    let veth_mac = mac(&lab.a, "veth0");
    let floods = [
        ("UDP, no rule", flood_frame(eth0_mac, veth_mac, false, 7200)),
        ("TCP SYN, no rule", flood_frame(eth0_mac, veth_mac, true, 7200)),
    ];
    // Receiver side: ps_xdp with the matrix on eth0, and the reference programs.
    let rx_set = set.clone();
    let mut rx = in_netns(&lab.ps, move || {
        let eth0 = ps_agent::load::ifindex("eth0").unwrap();
        let mut l = Loaded::load(&rx_set, &[("eth0".into(), eth0)], &LoadOptions::new(Mode::Enforce)).unwrap();
        for name in ["ps_drop", "ps_floor"] {
            let x: &mut aya::programs::Xdp = l.ebpf_mut().program_mut(name).unwrap().try_into().unwrap();
            x.load().unwrap();
        }
        (l, eth0)
    });
    // Generator: ps_tx in namespace a, redirecting into veth0.
    let gen_set = set.clone();
    let (generator, veth0, gen_fd) = in_netns(&lab.a, move || {
        let veth0 = ps_agent::load::ifindex("veth0").unwrap();
        let mut l = Loaded::load(&gen_set, &[], &LoadOptions::new(Mode::Enforce)).unwrap();
        {
            let x: &mut aya::programs::Xdp = l.ebpf_mut().program_mut("ps_tx").unwrap().try_into().unwrap();
            x.load().unwrap();
        }
        let mut m: aya::maps::DevMap<_> = aya::maps::DevMap::try_from(l.ebpf_mut().map_mut("PS_TX").unwrap()).unwrap();
        m.set(0, veth0, None, 0).unwrap();
        let fd = l.ebpf().program("ps_tx").unwrap().fd().unwrap().as_fd().as_raw_fd();
        (l, veth0, fd)
    });
    let sets = nft_sets(set);
    let mut results: Vec<FloodResult> = Vec::new();
    for receiver in RECEIVERS {
        for &(flood, _) in &floods {
            results.push(FloodResult { receiver, flood, frames: frames as u64, rounds: vec![] });
        }
    }
    for round in 0..rounds {
        for ri in 0..RECEIVERS.len() {
            // Set the receiver up.
            let ns = lab.ps.clone();
            let (l, eth0) = rx;
            let (l, link) = in_netns(&lab.ps, move || {
                let mut l = l;
                let link = match ri {
                    0 | 2 | 3 => {
                        let name = if ri == 0 { "ps_drop" } else { "ps_floor" };
                        let x: &mut aya::programs::Xdp = l.ebpf_mut().program_mut(name).unwrap().try_into().unwrap();
                        Some((name, x.attach("eth0", aya::programs::XdpMode::Driver).unwrap()))
                    }
                    _ => {
                        l.attach(&[("eth0".into(), eth0)], XdpModeName::Native).unwrap();
                        None
                    }
                };
                (l, link)
            });
            rx = (l, eth0);
            match ri {
                2 => nft(
                    &ns,
                    &format!(
                        "table inet p7flood {{\n {sets} chain input {{ type filter hook input priority 0; policy accept;\n  tcp dport @tcpin accept\n  udp dport @udpin accept\n  meta l4proto {{ tcp, udp }} counter drop\n }}\n}}\n"
                    ),
                ),
                3 => nft(
                    &ns,
                    &format!(
                        "table netdev p7flood {{\n {sets} chain ingress {{ type filter hook ingress device \"eth0\" priority 0; policy accept;\n  tcp dport @tcpin accept\n  udp dport @udpin accept\n  meta l4proto {{ tcp, udp }} counter drop\n }}\n}}\n"
                    ),
                ),
                _ => {}
            }
            for (fi, (_, frame)) in floods.iter().enumerate() {
                let count = |rx: &(Loaded, u32)| -> Option<u64> {
                    match ri {
                        1 => Some(
                            rx.0.counters().unwrap().stats[1][(STAT_DROP_BASE + DropReason::NoRule as u32) as usize]
                                .packets,
                        ),
                        2 => Some(nft_counter(&lab.ps, "inet", "p7flood")),
                        3 => Some(nft_counter(&lab.ps, "netdev", "p7flood")),
                        _ => None,
                    }
                };
                let before = count(&rx);
                let frame = frame.clone();
                let (wall, cpu) = in_netns(&lab.a, move || live(gen_fd, &frame, veth0, frames));
                let after = count(&rx);
                let got = match (before, after) {
                    (Some(b), Some(a)) => Some(a - b),
                    _ => None,
                };
                results[ri * floods.len() + fi].rounds.push((wall, cpu, got));
            }
            // Tear it down.
            match ri {
                2 => nft(&ns, "delete table inet p7flood\n"),
                3 => nft(&ns, "delete table netdev p7flood\n"),
                _ => {}
            }
            let (l, eth0) = rx;
            let l = in_netns(&lab.ps, move || {
                let mut l = l;
                match link {
                    Some((name, id)) => {
                        let x: &mut aya::programs::Xdp = l.ebpf_mut().program_mut(name).unwrap().try_into().unwrap();
                        x.detach(id).unwrap();
                    }
                    None => l.detach_all(),
                }
                l
            });
            rx = (l, eth0);
        }
        eprintln!("flood round {}/{rounds} done", round + 1);
    }
    drop(generator);
    drop(rx);
    results
}
