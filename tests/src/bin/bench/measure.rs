//! The per-packet part of the bench: `ps_xdp` with BPF_PROG_TEST_RUN against the floor
//! (`ps_floor`), `ps_bare` and Debian's xdp-filter in deny mode with the same ports, at 30
//! to 100,000 rules and with 10,000 source prefixes; control-plane times; the agent's
//! resident memory.
//!
//! Every program runs in the lab namespace with the real ifindex of eth0/eth1 in the
//! test-run context. All cases are measured in the same rounds, interleaved (case 1, case
//! 2, ..., case n, then again); each round records the thread's CPU time for one test-run
//! call divided by its repeat count (the kernel's own `duration` is whole nanoseconds, too
//! coarse for programs of ~10 ns; wall-clock time counts other processes' time slices on
//! this shared machine).

use std::{
    fmt::Write as _,
    fs,
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use ps_agent::{
    dataplane::{LoadOptions, Loaded, loaded::xdp_md_ctx},
    policy::compile::{HostFacts, RuleSet, compile},
    policy::config::{Config, Matrix, Mode, ReplyTracking, Site},
};
use ps_common::{
    frames::*,
    layout::{FLOW_TCP_ESTABLISHED, FlowState, TCP_ACK, TCP_SYN},
};
use ps_tests::{
    Agent, Lab,
    bench_object::{BenchObject, PROG_BARE, PROG_FLOOR},
    in_netns, scratch,
};

use crate::results::{Case, Control, Frame, Policy, Program, Rss, Run, Verified, XdpFilterSetup};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;

/// Rule counts of the scale series.
pub const SCALE_SIZES: [usize; 4] = [30, 1_000, 10_000, 100_000];
/// Source prefixes bound in the prefix case.
const PREFIXES: usize = 10_000;

pub fn bpf(cmd: libc::c_long, attr: &mut [u64; 16]) -> std::io::Result<i64> {
    // SAFETY: `attr` is a zeroed, 128-byte, 8-aligned `union bpf_attr` the kernel reads
    // (and for test runs writes) within that size.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), 128usize) };
    if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(r) }
}

fn prog_fd_by_id(id: u32) -> OwnedFd {
    let mut attr = [0u64; 16];
    attr[0] = id as u64;
    let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut attr).unwrap_or_else(|e| panic!("open program id {id}: {e}"));
    // SAFETY: a new descriptor the kernel just gave us.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

/// CPU time of this thread (user + system), ns: unlike wall-clock time it leaves out the
/// time the thread waits for a CPU while other processes run (the test-run loop yields
/// whenever the scheduler asks).
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into ts.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The `union bpf_attr` of a BPF_PROG_TEST_RUN of `fd` on `frame` with the context `ctx`,
/// `repeat` times; `frame` and `ctx` must outlive the call. The fields, 64-bit words:
/// struct { prog_fd, retval, data_size_in, data_size_out, data_in, data_out, repeat,
///          duration, ctx_size_in, ctx_size_out, ctx_in, ctx_out, flags, cpu, batch }
pub fn test_run_attr(fd: RawFd, frame: &[u8], ctx: &[u8], repeat: u32) -> [u64; 16] {
    let mut attr = [0u64; 16];
    attr[0] = fd as u32 as u64;
    attr[1] = frame.len() as u64;
    attr[2] = frame.as_ptr() as u64;
    attr[4] = repeat as u64;
    attr[5] = ctx.len() as u64;
    attr[6] = ctx.as_ptr() as u64;
    attr
}

/// One BPF_PROG_TEST_RUN: (XDP action, CPU ns per repeat, kernel ns per repeat).
fn test_run(fd: RawFd, frame: &[u8], ifindex: u32, repeat: u32) -> (u32, f64, u32) {
    let ctx = xdp_md_ctx(ifindex, frame.len() as u32);
    let mut attr = test_run_attr(fd, frame, &ctx, repeat);
    let t0 = thread_cpu_ns();
    bpf(BPF_PROG_TEST_RUN, &mut attr).unwrap_or_else(|e| panic!("test run: {e}"));
    let cpu = (thread_cpu_ns() - t0) as f64 / repeat as f64;
    ((attr[0] >> 32) as u32, cpu, (attr[4] >> 32) as u32)
}

fn sh_out(cmd: &str) -> (bool, String) {
    let out = Command::new("sh").arg("-c").arg(cmd).output().expect("spawn sh");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn sh(cmd: &str) -> String {
    let (ok, out) = sh_out(cmd);
    assert!(ok, "`{cmd}` failed: {out}");
    out
}

/// The host facts of every rule set here: the lab's two interfaces.
pub fn host() -> HostFacts {
    HostFacts { ephemeral: (32768, 60999), interfaces: vec!["eth0".into(), "eth1".into()] }
}

/// The matrix, stateless (the scale series and the floods use it).
pub fn shipped_stateless() -> RuleSet {
    let mut cfg = Config::shipped();
    cfg.site.reply_tracking = ReplyTracking::Stateless;
    compile(&cfg, &host()).unwrap()
}

/// A site config with `extra` more rules on distinct (transport, port) pairs the matrix
/// does not use: TCP from port 1 up, then UDP from port 1 up, keeping UDP 60000+ free (the
/// dropped test frames go there).
fn scale_config(extra: usize, used: &RuleSet) -> String {
    let mut text = String::from("reply_tracking = \"stateless\"\n");
    let mut n = 0;
    'outer: for (udp, proto) in [(false, "tcp"), (true, "udp")] {
        for port in 1..60000u16 {
            if n == extra {
                break 'outer;
            }
            let l4 = if udp { ps_common::layout::L4::Udp } else { ps_common::layout::L4::Tcp };
            if used.ports.contains_key(&(l4, port)) {
                continue;
            }
            let _ = writeln!(
                text,
                "[[rule]]\nid = \"scale-{n}\"\ntransport = \"{proto}\"\nports = \"{port}\"\ndirection = \"inbound\"\n"
            );
            n += 1;
        }
    }
    assert_eq!(n, extra, "not enough free ports for {extra} rules");
    text
}

/// The scale series' rule sets at `sizes`: the matrix plus generated rules.
pub fn scale_sets(sizes: &[usize], shipped: &RuleSet) -> Vec<(usize, RuleSet)> {
    sizes.iter().map(|&total| (total, compile_scale(&scale_config(total - shipped.rules.len(), shipped)))).collect()
}

/// Compile a generated scale config (`scale_config`'s text).
fn compile_scale(text: &str) -> RuleSet {
    let matrix = Matrix::shipped();
    let site = Site::parse(text, "scale.toml", &matrix).unwrap();
    compile(&Config { matrix, site }, &host()).unwrap()
}

/// A case being measured: its key and rounds in the results, and how to run it.
struct Probe {
    case: Case,
    fd: RawFd,
    frame: Vec<u8>,
    ifindex: u32,
    /// The XDP action it must answer (0: not checked).
    expect: u32,
}

impl Probe {
    fn new(program: Program, policy: Policy, frame: Frame, run: (RawFd, Vec<u8>, u32, u32)) -> Self {
        let (fd, bytes, ifindex, expect) = run;
        let case = Case { program, policy, frame, cpu_ns: vec![], kernel_ns: vec![] };
        Self { case, fd, frame: bytes, ifindex, expect }
    }

    fn check(&self) {
        let (action, _, _) = test_run(self.fd, &self.frame, self.ifindex, 1);
        let c = &self.case;
        assert!(
            self.expect == 0 || action == self.expect,
            "{:?} / {:?} / {}: action {action}, expected {}",
            c.program,
            c.policy,
            c.frame.label(),
            self.expect
        );
    }

    fn round(&mut self, repeat: u32) {
        let (_, cpu, kns) = test_run(self.fd, &self.frame, self.ifindex, repeat);
        self.case.cpu_ns.push(cpu);
        self.case.kernel_ns.push(kns as f64);
    }
}

/// Check every probe's verdict once, then measure them in `rounds` interleaved rounds.
fn measure(probes: &mut [Probe], rounds: usize, repeat: u32, what: &str) {
    for p in probes.iter() {
        p.check();
    }
    for r in 0..rounds {
        for p in probes.iter_mut() {
            p.round(repeat);
        }
        eprintln!("{what}: round {}/{rounds} done", r + 1);
    }
}

/// The benchmark frames: (frame, bytes, expected action under the matrix).
fn frames() -> Vec<(Frame, Vec<u8>, u32)> {
    vec![
        (Frame::Ipv4Allowed, frame(&[], &v4(), &tcp(50000, 443, TCP_SYN), 0), XDP_PASS),
        (Frame::Ipv4Dropped, frame(&[], &v4(), &tcp(50000, 7200, TCP_SYN), 0), XDP_DROP),
        (Frame::Ipv6Allowed, frame(&[], &v6(), &tcp(50000, 443, TCP_SYN), 0), XDP_PASS),
        (Frame::Ipv6Dropped, frame(&[], &v6(), &tcp(50000, 7200, TCP_SYN), 0), XDP_DROP),
        (Frame::ReplyStateless, frame(&[], &v4(), &tcp(5062, 45000, TCP_ACK), 0), XDP_PASS),
        (Frame::ReplyTracked, frame(&[], &v4(), &tcp(5062, 45000, TCP_ACK), 0), XDP_PASS),
        (Frame::ForgedReply, frame(&[], &v4(), &tcp(5062, 45001, TCP_ACK), 0), XDP_DROP),
    ]
}

/// Frames for the scale series: the same at every size.
fn scale_frames() -> Vec<(Frame, Vec<u8>, u32)> {
    vec![
        (Frame::Ipv4Allowed, frame(&[], &v4(), &tcp(50000, 443, TCP_SYN), 0), XDP_PASS),
        (Frame::Ipv4Dropped, frame(&[], &v4(), &udp(50000, 65001), 0), XDP_DROP),
        (Frame::Ipv6Allowed, frame(&[], &v6(), &tcp(50000, 443, TCP_SYN), 0), XDP_PASS),
    ]
}

/// Drops arrive on eth1 (not the management interface), the rest on eth0.
fn ingress(expect: u32, (eth0, eth1): (u32, u32)) -> u32 {
    if expect == XDP_DROP { eth1 } else { eth0 }
}

/// What [`per_packet`] measured.
pub struct PerPacket {
    pub cases: Vec<Case>,
    pub control: Vec<Control>,
    pub verified: Vec<Verified>,
    pub rss: Vec<Rss>,
    pub xdp_filter: Option<XdpFilterSetup>,
}

/// The per-packet part of a run (`quick`: the matrix against the floor only).
pub fn per_packet(lab: &Lab, rounds: usize, repeat: u32, quick: bool) -> PerPacket {
    let t0 = Instant::now();
    let shipped = shipped_stateless();
    let shipped_compile = t0.elapsed();
    // Agent memory first, before xdp-filter takes the interfaces.
    let big_text = scale_config(100_000 - shipped.rules.len(), &shipped);
    let rss = if quick { vec![] } else { agent_rss(lab, &big_text) };
    let ps = lab.ps.clone();
    let shipped2 = shipped.clone();
    let (mut probes, verified, control) =
        in_netns(&ps, move || setup_ps(shipped2, shipped_compile, big_text, quick, Extra::from_env(quick)));
    // xdp-filter in deny mode with the matrix's ports, on eth0 through libxdp's dispatcher
    // and on eth1 directly (LIBXDP_SKIP_DISPATCHER).
    let mut xdp_filter = (!quick).then(|| setup_xdp_filter(lab, &shipped));
    let ifs = in_netns(&lab.ps, || {
        (ps_agent::dataplane::host::ifindex("eth0").unwrap(), ps_agent::dataplane::host::ifindex("eth1").unwrap())
    });
    let progs = in_netns(&lab.ps, || {
        let p0 = ps_agent::ops::coexist::detect("eth0").unwrap();
        let p1 = ps_agent::ops::coexist::detect("eth1").unwrap();
        (p0.first().map(|p| (p.id, p.name.clone())), p1.first().map(|p| (p.id, p.name.clone())))
    });
    let direct_id = progs.1.as_ref().map(|p| p.0);
    let mut fds = Vec::new();
    for (program, prog, ifindex) in
        [(Program::XdpFilter, progs.1, ifs.1), (Program::XdpFilterDispatcher, progs.0, ifs.0)]
    {
        let Some((id, name)) = prog else {
            if !quick {
                eprintln!("warning: no xdp-filter program found for {program:?}");
            }
            continue;
        };
        eprintln!("{program:?}: program id {id} `{name}`");
        let fd = prog_fd_by_id(id);
        for (f, bytes, expect) in frames().into_iter().filter(|(f, _, _)| !f.stateful()) {
            probes.push(Probe::new(program.clone(), Policy::Matrix, f, (fd.as_raw_fd(), bytes, ifindex, expect)));
        }
        fds.push(fd);
    }
    let mut probes = in_netns(&lab.ps, move || {
        let mut probes = probes;
        measure(&mut probes, rounds, repeat, "per packet");
        probes
    });
    // xdp-filter at each rule count of the scale series: its port table refilled with each
    // set's ports, measured against the floor in rounds of their own.
    if !quick && let (Some(id), Some(setup)) = (direct_id, xdp_filter.as_mut()) {
        let sets = scale_sets(&SCALE_SIZES, &shipped);
        let floor = probes.iter().find(|p| p.case.program == Program::Floor).map(|p| p.fd).unwrap();
        let shipped = shipped.clone();
        let (more, entries) =
            in_netns(&lab.ps, move || xdp_filter_scale(id, &shipped, &sets, floor, ifs, rounds, repeat));
        probes.extend(more);
        setup.scale_entries = entries;
    }
    drop(fds);
    teardown_xdp_filter(lab);
    PerPacket { cases: probes.into_iter().map(|p| p.case).collect(), control, verified, rss, xdp_filter }
}

/// Other programs of the bench's object to measure beside the floor (`PS_BENCH_EXTRA`,
/// `--quick` only).
struct Extra(Vec<String>);

impl Extra {
    fn from_env(quick: bool) -> Self {
        let v = std::env::var("PS_BENCH_EXTRA").unwrap_or_default();
        Self(if quick { v.split(',').filter(|p| !p.is_empty()).map(String::from).collect() } else { vec![] })
    }
}

/// Inside the lab namespace: load ps_xdp for every rule set and the bench's object; the
/// probes, the verifier's counts and the control-plane times.
fn setup_ps(
    shipped: RuleSet,
    shipped_compile: Duration,
    big_text: String,
    quick: bool,
    extra: Extra,
) -> (Vec<Probe>, Vec<Verified>, Vec<Control>) {
    let eth0 = ps_agent::dataplane::host::ifindex("eth0").unwrap();
    let eth1 = ps_agent::dataplane::host::ifindex("eth1").unwrap();
    let ifaces = vec![("eth0".to_string(), eth0), ("eth1".to_string(), eth1)];
    let ifs = (eth0, eth1);
    let opts = LoadOptions::new(Mode::Enforce);
    let mut probes = Vec::new();
    // The matrix, stateless and stateful; control-plane times for it.
    let (a, c) = load_timed(&shipped, Policy::Matrix, shipped_compile, &ifaces);
    let mut control = vec![c];
    let verified = a
        .verified_instructions()
        .into_iter()
        .map(|(n, c)| Verified { program: n.to_string(), instructions: c.unwrap_or(0) })
        .collect();
    let stateful = compile(&Config::shipped(), &host()).unwrap();
    let mut b = Loaded::load(&stateful, &ifaces, &opts).unwrap();
    track_reply(&mut b, &stateful);
    // The reference programs, from the bench's object: the floor with `a`'s maps, `ps_bare`
    // with `b`'s (it reads generation 0 of the port table; `a` was just reloaded into 1).
    let (bench_a, bench_b) = (BenchObject::load(&a), BenchObject::load(&b));
    let fd_of = |l: &Loaded| l.xdp().fd().unwrap().as_fd().as_raw_fd();
    let (floor, bare) = (bench_a.fd(PROG_FLOOR), bench_b.fd(PROG_BARE));
    // The yardstick must do its work on both families: a port no rule names is dropped (so
    // the frame reached the port table, not an early exit).
    for net in [v4(), v6()] {
        let (action, _, _) = test_run(bare, &frame(&[], &net, &udp(50000, 65001), 0), eth0, 1);
        assert_eq!(action, XDP_DROP, "ps_bare must reach the port table");
    }
    let (xa, xb) = (fd_of(&a), fd_of(&b));
    for (f, bytes, expect) in frames() {
        let ifindex = ingress(expect, ifs);
        let run = |fd, expect| (fd, bytes.clone(), ifindex, expect);
        probes.push(Probe::new(Program::Floor, Policy::Matrix, f, run(floor, XDP_PASS)));
        if !f.stateful() {
            // Checked where bare can agree: it knows no interfaces, replies or drop reasons.
            let bare_expect = if matches!(f, Frame::Ipv4Allowed | Frame::Ipv6Allowed) { expect } else { 0 };
            probes.push(Probe::new(Program::Bare, Policy::Matrix, f, run(bare, bare_expect)));
        }
        for p in &extra.0 {
            let e = if matches!(f, Frame::Ipv4Allowed | Frame::Ipv6Allowed) { expect } else { 0 };
            probes.push(Probe::new(Program::Extra(p.clone()), Policy::Matrix, f, run(bench_a.fd(p), e)));
        }
        let fd = if f.stateful() { xb } else { xa };
        probes.push(Probe::new(Program::PsAgent, Policy::Matrix, f, run(fd, expect)));
    }
    let mut keep: Vec<Loaded> = vec![a, b];
    // Scale: the matrix plus generated rules on distinct ports.
    let totals: &[usize] = if quick { &[] } else { &SCALE_SIZES };
    for &total in totals {
        let text =
            if total == 100_000 { big_text.clone() } else { scale_config(total - shipped.rules.len(), &shipped) };
        let t0 = Instant::now();
        let set = compile_scale(&text);
        let pc = t0.elapsed();
        assert_eq!(set.rules.len(), total, "rules compiled for {total}");
        let (l, c) = load_timed(&set, Policy::Rules(total), pc, &ifaces);
        control.push(c);
        for (f, bytes, expect) in scale_frames() {
            let run = (fd_of(&l), bytes, ingress(expect, ifs), expect);
            probes.push(Probe::new(Program::PsAgent, Policy::Rules(total), f, run));
        }
        keep.push(l);
    }
    if !quick {
        let l = load_prefixes(&ifaces);
        for (f, bytes, expect) in scale_frames() {
            let run = (fd_of(&l), bytes, ingress(expect, ifs), expect);
            probes.push(Probe::new(Program::PsAgent, Policy::SourcePrefixes(PREFIXES), f, run));
        }
        keep.push(l);
    }
    // The loaded objects must outlive the measurement: leak them (the process ends soon).
    std::mem::forget(keep);
    std::mem::forget([bench_a, bench_b]);
    (probes, verified, control)
}

/// Load `set` and write it again into the idle generation, timed.
fn load_timed(set: &RuleSet, policy: Policy, parse_compile: Duration, ifaces: &[(String, u32)]) -> (Loaded, Control) {
    let t0 = Instant::now();
    let mut l = Loaded::load(set, ifaces, &LoadOptions::new(Mode::Enforce)).unwrap();
    let load = t0.elapsed();
    let t0 = Instant::now();
    l.write_policy(set, 1, Mode::Enforce).unwrap();
    let reload = t0.elapsed();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let c = Control {
        policy,
        rules: set.rules.len(),
        parse_compile_ms: ms(parse_compile),
        load_ms: ms(load),
        reload_ms: ms(reload),
    };
    (l, c)
}

/// The flow the tracked reply frame answers: ps-04's, established.
fn track_reply(b: &mut Loaded, stateful: &RuleSet) {
    let ps04 = stateful.rules.iter().find(|r| r.id == "ps-04").unwrap().counter;
    let now = ps_agent::clock::monotonic_ns();
    let key = v4_reply_flow(5062, 45000, 6);
    let flow = FlowState {
        state: FLOW_TCP_ESTABLISHED,
        counter: ps04,
        created_ns: now,
        last_ns: now,
        packets_out: 1,
        packets_in: 0,
        // Windows not learned yet and checked (not liberal): the reply takes every check.
        ..FlowState::default()
    };
    b.flows().unwrap().insert(key, flow, 0).unwrap();
}

/// Source-address sets: Zang (ps-02, tcp/443) bound to 10,000 prefixes, the test frames'
/// sources among them; every TCP/UDP packet then pays one LPM lookup.
fn load_prefixes(ifaces: &[(String, u32)]) -> Loaded {
    let mut text = String::from("reply_tracking = \"stateless\"\n[systems]\n\"Zang\" = [");
    for i in 0..(PREFIXES as u32 - 2) {
        let _ = write!(text, "\"10.{}.{}.0/24\", ", i / 256, i % 256);
    }
    text.push_str("\"198.18.0.2/32\", \"fd00::2/128\"]\n");
    let matrix = Matrix::shipped();
    let site = Site::parse(&text, "prefixes.toml", &matrix).unwrap();
    let set = compile(&Config { matrix, site }, &host()).unwrap();
    assert_eq!(set.src_prefixes.len(), PREFIXES, "prefixes compiled");
    Loaded::load(&set, ifaces, &LoadOptions::new(Mode::Enforce)).unwrap()
}

fn vmrss_kib(pid: u64) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// `VmRSS` of `ps-agent run` on eth0 and eth1, 2 s after start: with the matrix, and with
/// `big_text`'s 100,000 rules.
fn agent_rss(lab: &Lab, big_text: &str) -> Vec<Rss> {
    let dir = scratch("p7b-config");
    let _ = fs::create_dir_all(&dir);
    let big = dir.join("rules-100k.toml");
    fs::write(&big, format!("interfaces = [\"eth0\", \"eth1\"]\n{big_text}")).unwrap();
    let rss =
        vec![(Policy::Matrix, agent_rss_with(lab, None)), (Policy::Rules(100_000), agent_rss_with(lab, Some(&big)))];
    let _ = fs::remove_dir_all(&dir);
    let _ = fs::remove_dir_all(scratch("p7b-rss"));
    rss.into_iter().map(|(policy, kib)| Rss { policy, kib }).collect()
}

fn agent_rss_with(lab: &Lab, config: Option<&Path>) -> u64 {
    let mut args = vec!["--iface", "eth0", "--iface", "eth1"];
    let cfg;
    if let Some(p) = config {
        cfg = p.display().to_string();
        args.extend(["--config", &cfg]);
    }
    let mut agent = Agent::start(&lab.ps, "p7b-rss", &args);
    std::thread::sleep(Duration::from_secs(2));
    let state: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(agent.state_dir.join("state.json")).unwrap()).unwrap();
    let rss = vmrss_kib(state["pid"].as_u64().unwrap());
    agent.stop();
    rss
}

/// Where xdp-filter pins its maps: a private bpffs, so nothing collides with other users.
fn xdp_filter_bpffs() -> String {
    format!("/run/{}-p7b-bpffs", ps_tests::prefix())
}

fn xdp_filter(lab: &Lab, env: &str, args: &str) -> (bool, String) {
    sh_out(&format!(
        "nsenter --net=/var/run/netns/{} env LIBXDP_BPFFS={} {env} xdp-filter {args}",
        lab.ps,
        xdp_filter_bpffs()
    ))
}

fn setup_xdp_filter(lab: &Lab, set: &RuleSet) -> XdpFilterSetup {
    let bpffs = xdp_filter_bpffs();
    let _ = fs::create_dir_all(&bpffs);
    if !sh_out(&format!("mount | grep -q ' {bpffs} type bpf'")).0 {
        sh(&format!("mount -t bpf bpf {bpffs}"));
    }
    for (iface, env) in [("eth0", ""), ("eth1", "LIBXDP_SKIP_DISPATCHER=1")] {
        let (ok, out) = xdp_filter(lab, env, &format!("load -p deny {iface}"));
        if !ok {
            let (ok, out2) = xdp_filter(lab, env, &format!("load -p deny -m skb {iface}"));
            assert!(ok, "xdp-filter load {iface}: {out} / {out2}");
        }
    }
    // The same ports: inbound rules by destination port, replies by source port.
    let (mut dst_entries, mut src_entries) = (0, 0);
    let t0 = Instant::now();
    for (&(l4, port), e) in &set.ports {
        if e.inbound != 0 {
            let (ok, out) = xdp_filter(lab, "", &format!("port {port} -m dst -p {}", l4.as_str()));
            assert!(ok, "xdp-filter port {port}: {out}");
            dst_entries += 1;
        }
        if e.reply != 0 {
            let (ok, out) = xdp_filter(lab, "", &format!("port {port} -m src -p {}", l4.as_str()));
            assert!(ok, "xdp-filter port {port}: {out}");
            src_entries += 1;
        }
    }
    XdpFilterSetup { dst_entries, src_entries, add_s: t0.elapsed().as_secs_f64(), scale_entries: vec![] }
}

fn teardown_xdp_filter(lab: &Lab) {
    for iface in ["eth0", "eth1"] {
        let _ = xdp_filter(lab, "", &format!("unload {iface}"));
    }
    let bpffs = xdp_filter_bpffs();
    let _ = sh_out(&format!("umount {bpffs}"));
    let _ = fs::remove_dir(&bpffs);
}

/// xdp-filter's flags for port entries (xdp-tools' `common_kern_user.h`).
const XF_SRC: u64 = 1 << 0;
const XF_DST: u64 = 1 << 1;
const XF_TCP: u64 = 1 << 2;
const XF_UDP: u64 = 1 << 3;
/// Where xdp-filter's hit counter starts in a port word.
const XF_COUNTER_SHIFT: u32 = 6;

/// The port table (`filter_ports`: a per-CPU array of 65,536 words, indexed by the port in
/// network byte order, flags in the low bits and a hit counter above `XF_COUNTER_SHIFT`) of
/// the xdp-filter program `prog_id`.
fn xdp_filter_ports(prog_id: u32) -> aya::maps::PerCpuArray<aya::maps::MapData, u64> {
    let info = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == prog_id)
        .unwrap_or_else(|| panic!("xdp-filter program {prog_id} is gone"));
    let map = info
        .map_ids()
        .unwrap()
        .unwrap_or_default()
        .into_iter()
        .map(|id| aya::maps::MapData::from_id(id).unwrap())
        .find(|m| m.info().ok().and_then(|i| i.name_as_str().map(|n| n == "filter_ports")).unwrap_or(false))
        .expect("xdp-filter's filter_ports map");
    aya::maps::PerCpuArray::try_from(aya::maps::Map::PerCpuArray(map)).unwrap()
}

/// The flags `setup_xdp_filter` gives each port for `set` (`xdp-filter port P -m dst|src
/// -p tcp|udp`, one call per list), indexed by port.
fn xdp_filter_flags(set: &RuleSet) -> Vec<u64> {
    let mut flags = vec![0u64; 65_536];
    for (&(l4, port), e) in &set.ports {
        let proto = match l4 {
            ps_common::layout::L4::Tcp => XF_TCP,
            ps_common::layout::L4::Udp => XF_UDP,
        };
        let f = &mut flags[port as usize];
        if e.inbound != 0 {
            *f |= XF_DST | proto;
        }
        if e.reply != 0 {
            *f |= XF_SRC | proto;
        }
    }
    flags
}

/// Fill xdp-filter's port table with `set`'s ports: what the CLI writes, without a process
/// per port. Every index is written, so the previous set's ports go. Returns the number of
/// ports with an entry.
fn fill_xdp_filter_ports(prog_id: u32, set: &RuleSet) -> usize {
    let mut ports = xdp_filter_ports(prog_id);
    let flags = xdp_filter_flags(set);
    let cpus = aya::util::nr_cpus().unwrap();
    for (port, &f) in flags.iter().enumerate() {
        let values = aya::maps::PerCpuValues::try_from(vec![f; cpus]).unwrap();
        ports.set((port as u16).to_be() as u32, values, 0).unwrap();
    }
    flags.iter().filter(|&&f| f != 0).count()
}

/// Check that the table the CLI wrote for `set` is what [`fill_xdp_filter_ports`] would
/// write (flags only: the counters above them have counted the main rounds).
fn check_xdp_filter_flags(prog_id: u32, set: &RuleSet) {
    let ports = xdp_filter_ports(prog_id);
    for (port, &f) in xdp_filter_flags(set).iter().enumerate() {
        let got = ports.get(&((port as u16).to_be() as u32), 0).unwrap();
        for v in got.iter() {
            assert_eq!(v & ((1 << XF_COUNTER_SHIFT) - 1), f, "xdp-filter's flags for port {port}");
        }
    }
}

/// xdp-filter (program `prog_id`, directly attached: eth1's) with each scale set's ports,
/// on the scale frames, interleaved with the floor in every round. Runs inside the lab
/// namespace. Also says how many port entries each set took. First checks that the CLI
/// wrote `shipped`'s ports (the main rounds) the way the table is filled here.
fn xdp_filter_scale(
    prog_id: u32,
    shipped: &RuleSet,
    sets: &[(usize, RuleSet)],
    floor: RawFd,
    ifs: (u32, u32),
    rounds: usize,
    repeat: u32,
) -> (Vec<Probe>, Vec<(usize, usize)>) {
    let fd = prog_fd_by_id(prog_id);
    check_xdp_filter_flags(prog_id, shipped);
    let (mut out, mut entries_per_set) = (Vec::new(), Vec::new());
    for (total, set) in sets {
        let entries = fill_xdp_filter_ports(prog_id, set);
        let mut probes = Vec::new();
        for (f, bytes, expect) in scale_frames() {
            let ifindex = ingress(expect, ifs);
            for (program, fd, expect) in
                [(Program::Floor, floor, XDP_PASS), (Program::XdpFilter, fd.as_raw_fd(), expect)]
            {
                probes.push(Probe::new(program, Policy::Rules(*total), f, (fd, bytes.clone(), ifindex, expect)));
            }
        }
        measure(&mut probes, rounds, repeat, &format!("xdp-filter with {total} rules' ports ({entries} port entries)"));
        entries_per_set.push((*total, entries));
        out.extend(probes);
    }
    (out, entries_per_set)
}

/// The machine and the parameters of a run.
pub fn run_info(rounds: usize, repeat: u32, flood_rounds: usize, flood_frames: u32) -> Run {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let (ok, commit) = sh_out("git describe --always --dirty 2>/dev/null");
    Run {
        date: ps_agent::clock::fmt_unix(ps_agent::clock::unix_now()),
        commit: ok.then(|| commit.trim().to_string()),
        cpu,
        nproc: std::thread::available_parallelism().map_or(0, |n| n.get() as u32),
        kernel: sh("uname -r").trim().to_string(),
        xdp_tools: sh_out("dpkg-query -W -f '${Version}' xdp-tools").1,
        rounds,
        repeat,
        flood_rounds,
        flood_frames,
        note: None,
    }
}
