//! Test harness shared by the integration tests and `cargo xtask demo`: network
//! namespaces joined by veth pairs, the agent running inside one, and probes that send real
//! packets from the others.
//!
//! Every lab gets its own namespace names (from a tag), so tests run in parallel without
//! colliding; addresses live only inside those namespaces (198.18.0.0/15, fd00::/8).

pub mod bench_object;
pub mod framegen;
pub mod pki;

use std::{
    fs,
    io::{ErrorKind, Read as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use ps_agent::{
    observe::{
        state::{AgentState, read_state},
        stats::{RuleReport, StatsReport},
    },
    policy::compile::RuleKind,
};

/// Run `cmd` and panic with its output if it fails.
pub fn sh(cmd: &str) {
    let out = Command::new("sh").arg("-c").arg(cmd).output().expect("spawn sh");
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Write `value` to `/sys/class/net/{path}` of namespace `ns`, through `ip netns exec`,
/// which mounts the namespace's own /sys (under `nsenter --net` /sys/class/net is the
/// host's).
pub fn net_sysfs_write(ns: &str, path: &str, value: &str) {
    sh(&format!("ip netns exec {ns} sh -c 'echo {value} > /sys/class/net/{path}'"));
}

/// Run `cmd`, ignore failure.
pub fn sh_ok(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Make sure bpffs is mounted (tests run as root).
pub fn ensure_bpffs() {
    if !sh_ok("mount | grep -q ' /sys/fs/bpf type bpf'") {
        sh("mount -t bpf -o mode=0700 bpf /sys/fs/bpf");
    }
}

/// Move the calling thread into network namespace `ns` (sockets it creates from then on
/// live there). Only for threads made for that purpose: see [`in_netns`].
pub fn enter_netns(ns: &str) {
    let path = format!("/var/run/netns/{ns}");
    let file = fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: setns on this thread only; the fd is valid for the call.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

/// Run `f` on a thread that has entered network namespace `ns`.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        enter_netns(&ns);
        f()
    })
    .join()
    .expect("netns thread panicked")
}

/// The lab: a "ps" namespace with eth0 and eth1, each a veth to a peer namespace
/// ("a" behind eth0, "b" behind eth1).
///
/// | where     | IPv4           | IPv6        |
/// |-----------|----------------|-------------|
/// | ps eth0   | 198.18.0.1/24  | fd00:0::1   |
/// | a veth0   | 198.18.0.2/24  | fd00:0::2   |
/// | ps eth1   | 198.18.1.1/24  | fd00:1::1   |
/// | b veth0   | 198.18.1.2/24  | fd00:1::2   |
pub struct Lab {
    /// Namespace of the protected host.
    pub ps: String,
    /// Peer behind eth0.
    pub a: String,
    /// Peer behind eth1.
    pub b: String,
}

/// The prefix of every name a test gives a shared resource: namespaces, pin directories,
/// scratch directories (`PS_TEST_PREFIX`, default `pst`), so two suites can run on one machine.
pub fn prefix() -> String {
    std::env::var("PS_TEST_PREFIX").unwrap_or_else(|_| "pst".into())
}

/// A scratch directory for `tag` under the temp directory (`TMPDIR`), named with [`prefix`].
pub fn scratch(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{}-{tag}", prefix()))
}

/// ps's eth0 address.
pub const PS_ETH0_V4: &str = "198.18.0.1";
/// ps's eth1 address.
pub const PS_ETH1_V4: &str = "198.18.1.1";
/// Peer a.
pub const A_V4: &str = "198.18.0.2";
/// Peer b.
pub const B_V4: &str = "198.18.1.2";
/// ps's eth0 IPv6 address.
pub const PS_ETH0_V6: &str = "fd00:0::1";
/// ps's eth1 IPv6 address.
pub const PS_ETH1_V6: &str = "fd00:1::1";
/// Peer a IPv6.
pub const A_V6: &str = "fd00:0::2";

impl Lab {
    /// Create the lab for `tag` (short: namespace names are `{prefix}-{tag}-ps` etc., see
    /// [`prefix`]), replacing any leftover of the same tag.
    pub fn new(tag: &str) -> Self {
        Self::with_queues(tag, 1)
    }

    /// [`Lab::new`] with `queues` rx and tx queues on every veth (a multi-queue NIC's
    /// receive side, for the flood benchmark: see `Lab::steer_tx`).
    pub fn with_queues(tag: &str, queues: u32) -> Self {
        let p = prefix();
        let lab = Self { ps: format!("{p}-{tag}-ps"), a: format!("{p}-{tag}-a"), b: format!("{p}-{tag}-b") };
        lab.destroy();
        for ns in [&lab.ps, &lab.a, &lab.b] {
            sh(&format!("ip netns add {ns}"));
            sh(&format!("ip -n {ns} link set lo up"));
            // Answer every probe: no ICMP error rate limit inside the lab. `-e`: on older
            // kernels icmp_msgs_per_sec and icmp_msgs_burst are global, absent from a
            // namespace's /proc/sys (5.10, `cargo xtask vm-test`); the global limit holds there.
            sh(&format!(
                "nsenter --net=/var/run/netns/{ns} sysctl -e -qw net.ipv4.icmp_ratelimit=0 net.ipv6.icmp.ratelimit=0 net.ipv4.icmp_msgs_per_sec=100000 net.ipv4.icmp_msgs_burst=10000"
            ));
        }
        for (i, peer) in [(0, &lab.a), (1, &lab.b)] {
            let q = format!("numtxqueues {queues} numrxqueues {queues}");
            sh(&format!("ip -n {} link add eth{i} {q} type veth peer name veth0 {q} netns {peer}", lab.ps));
            sh(&format!("ip -n {} addr add 198.18.{i}.1/24 dev eth{i}", lab.ps));
            sh(&format!("ip -n {} addr add fd00:{i}::1/64 dev eth{i} nodad", lab.ps));
            sh(&format!("ip -n {peer} addr add 198.18.{i}.2/24 dev veth0"));
            sh(&format!("ip -n {peer} addr add fd00:{i}::2/64 dev veth0 nodad"));
            sh(&format!("ip -n {} link set eth{i} up", lab.ps));
            sh(&format!("ip -n {peer} link set veth0 up"));
        }
        lab
    }

    /// Make what `cpu` sends out of `dev` in `ns` use tx queue `cpu` (XPS), so that on a
    /// multi-queue veth each sending CPU has its own queue, and the peer's receive path its
    /// own ring and NAPI instance per CPU, as RSS gives a NIC.
    pub fn steer_tx(&self, ns: &str, dev: &str, cpus: u32) {
        for cpu in 0..cpus {
            net_sysfs_write(ns, &format!("{dev}/queues/tx-{cpu}/xps_cpus"), &format!("{:x}", 1u32 << cpu));
        }
    }

    /// Remove the namespaces (and so the veths), and the pins of an agent of the same tag
    /// (counter maps outlive the agent: a rerun must not start from old counts).
    pub fn destroy(&self) {
        for ns in [&self.ps, &self.a, &self.b] {
            sh_ok(&format!("ip netns del {ns}"));
        }
        // Pins of the agents run in this lab: their tags start with the lab's (`err` → `err3`),
        // so no test leaves counter maps pinned behind it.
        let p = format!("{}-", prefix());
        if let Some(tag) = self.ps.strip_prefix(&p).and_then(|t| t.strip_suffix("-ps")) {
            let prefix = format!("{p}{tag}");
            for e in fs::read_dir("/sys/fs/bpf").into_iter().flatten().flatten() {
                if e.file_name().to_str().is_some_and(|n| n.starts_with(&prefix)) {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.destroy();
    }
}

/// What a probe saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// The connection was established (TCP) or the datagram was answered.
    Open,
    /// The host answered with a RST / port unreachable: the packet got through XDP.
    Refused,
    /// No answer: dropped.
    TimedOut,
}

/// Connect from namespace `ns` to `addr:port` over TCP.
pub fn tcp_probe(ns: &str, addr: &str, port: u16, timeout: Duration) -> Probe {
    let sa = SocketAddr::new(addr.parse::<IpAddr>().expect("address"), port);
    in_netns(ns, move || match TcpStream::connect_timeout(&sa, timeout) {
        Ok(_) => Probe::Open,
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => Probe::Refused,
        Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => Probe::TimedOut,
        Err(e) => panic!("connect {sa} from {}: {e}", "netns"),
    })
}

/// Send one UDP datagram from `ns` (bound to `sport`, 0 = any) to `addr:port` and wait
/// for an answer (an echo, or an ICMP port unreachable).
pub fn udp_probe(ns: &str, sport: u16, addr: &str, port: u16, timeout: Duration) -> Probe {
    let ip = addr.parse::<IpAddr>().expect("address");
    let sa = SocketAddr::new(ip, port);
    in_netns(ns, move || {
        let bind: SocketAddr =
            if ip.is_ipv4() { ([0, 0, 0, 0], sport).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, sport).into() };
        let s = UdpSocket::bind(bind).expect("bind udp");
        s.connect(sa).expect("connect udp");
        s.set_read_timeout(Some(timeout)).unwrap();
        s.send(b"ps-agent probe").expect("send");
        let mut buf = [0u8; 64];
        match s.recv(&mut buf) {
            Ok(_) => Probe::Open,
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => Probe::Refused,
            Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => Probe::TimedOut,
            Err(e) => panic!("udp recv from {sa}: {e}"),
        }
    })
}

/// A TCP listener inside `ns` that accepts (and closes) connections until dropped.
pub struct Listener {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The bound port.
    pub port: u16,
}

impl Listener {
    /// Listen on `[::]:port` in `ns` (dual-stack).
    pub fn tcp(ns: &str, port: u16) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let ns = ns.to_string();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            enter_netns(&ns);
            let l = TcpListener::bind(("::", port)).expect("bind listener");
            l.set_nonblocking(true).unwrap();
            tx.send(l.local_addr().unwrap().port()).unwrap();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
                        let _ = s.read(&mut [0u8; 16]);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        let port = rx.recv().expect("listener started");
        Self { stop, port }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Echo UDP datagrams in `ns` on `port` until dropped.
pub struct UdpEcho {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl UdpEcho {
    /// Start.
    pub fn start(ns: &str, port: u16) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let ns = ns.to_string();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            enter_netns(&ns);
            let s = UdpSocket::bind(("::", port)).expect("bind udp echo");
            s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            tx.send(()).unwrap();
            let mut buf = [0u8; 2048];
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    let _ = s.send_to(&buf[..n], from);
                }
            }
        });
        rx.recv().expect("udp echo started");
        Self { stop }
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The ps-agent binary: `$PS_AGENT_BIN`, else `target/{debug,release}/ps-agent` of this
/// workspace (`cargo xtask test` builds it first).
pub fn agent_bin() -> PathBuf {
    if let Ok(p) = std::env::var("PS_AGENT_BIN") {
        return p.into();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join("target");
    for profile in ["debug", "release"] {
        let p = root.join(profile).join("ps-agent");
        if p.exists() {
            return p;
        }
    }
    panic!("ps-agent binary not found under {}: run `cargo build -p ps-agent` (or `cargo xtask test`)", root.display());
}

/// A running `ps-agent run` inside a namespace, with its own pin and state directories.
pub struct Agent {
    child: Option<Child>,
    /// Pin directory.
    pub pin_dir: PathBuf,
    /// State directory.
    pub state_dir: PathBuf,
    /// Log file (stderr of the agent).
    pub log: PathBuf,
}

impl Agent {
    /// Start `ps-agent run ARGS` in `ns` and wait until it has published its state.
    pub fn start(ns: &str, tag: &str, args: &[&str]) -> Self {
        let (agent, ok) = Self::spawn(ns, tag, args, Duration::from_secs(30));
        assert!(ok, "ps-agent did not start; its log:\n{}", agent.log_text());
        agent
    }

    /// Start and wait; `false` if it exited or timed out before publishing its state.
    pub fn spawn(ns: &str, tag: &str, args: &[&str], wait: Duration) -> (Self, bool) {
        Self::spawn_with_env(ns, tag, args, &[], wait)
    }

    /// [`Agent::spawn`] with extra environment variables (`NOTIFY_SOCKET`, ...).
    pub fn spawn_with_env(ns: &str, tag: &str, args: &[&str], env: &[(&str, &str)], wait: Duration) -> (Self, bool) {
        ensure_bpffs();
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/{}-{tag}", prefix()));
        let state_dir = scratch(tag);
        let _ = fs::create_dir_all(&state_dir);
        let log = state_dir.join("agent.log");
        let logf = fs::File::create(&log).expect("log file");
        let child = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{ns}"))
            .arg(agent_bin())
            .arg("--pin-dir")
            .arg(&pin_dir)
            .arg("--state-dir")
            .arg(&state_dir)
            .arg("run")
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .expect("spawn ps-agent");
        let mut agent = Self { child: Some(child), pin_dir, state_dir, log };
        let t0 = Instant::now();
        while t0.elapsed() < wait {
            // Started when its own state file (with its pid; nsenter execs the agent) is there.
            let pid = agent.child.as_ref().map_or(0, |c| c.id() as u64);
            if read_state(&agent.state_dir).is_ok_and(|s| u64::from(s.pid) == pid) {
                return (agent, true);
            }
            if let Some(c) = agent.child.as_mut()
                && c.try_wait().ok().flatten().is_some()
            {
                return (agent, false);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        (agent, false)
    }

    /// The agent's log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `ps-agent stats --json`, read as the agent's own report type: a field the tests use
    /// and the agent renamed fails to compile, and one that does not parse fails here.
    pub fn report(&self) -> StatsReport {
        let json = self.stats_json();
        serde_json::from_slice(&json).unwrap_or_else(|e| {
            panic!(
                "`stats --json` of {} is not a StatsReport: {e}\n{}",
                self.state_dir.display(),
                String::from_utf8_lossy(&json)
            )
        })
    }

    /// The output of `ps-agent stats --json`; panics with its stderr if it fails.
    fn stats_json(&self) -> Vec<u8> {
        let out = Command::new(agent_bin())
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(["stats", "--json"])
            .output()
            .expect("run stats");
        assert!(out.status.success(), "stats failed: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }

    /// The agent's state file, as the agent reads it.
    pub fn state(&self) -> AgentState {
        read_state(&self.state_dir).unwrap_or_else(|e| panic!("{e}"))
    }

    /// SIGKILL (what a crash or the OOM killer does: no clean-up runs) and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait; returns the exit status code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(st)) = c.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        c.wait().ok().and_then(|s| s.code())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The rule `id` of kind `kind` (inbound or reply) in `report`; panics naming the rules there are.
pub fn rule<'a>(report: &'a StatsReport, id: &str, kind: RuleKind) -> &'a RuleReport {
    report.rules.iter().find(|r| r.rule.id == id && r.rule.direction == kind).unwrap_or_else(|| {
        let have: Vec<String> = report.rules.iter().map(|r| format!("{}/{}", r.rule.id, r.rule.direction)).collect();
        panic!("no rule {id}/{kind} in the report; it has {}", have.join(", "))
    })
}

/// Is an XDP program attached to `dev` in `ns`?
pub fn xdp_attached(ns: &str, dev: &str) -> bool {
    let out = Command::new("ip").args(["-n", ns, "-d", "link", "show", "dev", dev]).output().expect("ip link");
    String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
}

fn csum(data: &[u8], mut sum: u32) -> u16 {
    for c in data.chunks(2) {
        sum += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Send one hand-made IPv4 TCP segment from namespace `ns` (a raw socket; the kernel adds
/// the IP header): for forged replies that no socket of the sender would produce.
pub fn send_raw_tcp(ns: &str, src: &str, sport: u16, dst: &str, dport: u16, flags: u8) {
    send_raw_tcp_seq(ns, src, sport, dst, dport, flags, 0x1234_5678, 0x0bad_cafe);
}

/// [`send_raw_tcp`] with these sequence and acknowledgement numbers.
#[expect(clippy::too_many_arguments, reason = "a segment's fields, in the order they go on the wire")]
pub fn send_raw_tcp_seq(ns: &str, src: &str, sport: u16, dst: &str, dport: u16, flags: u8, seq: u32, ack: u32) {
    let (src, dst): (std::net::Ipv4Addr, std::net::Ipv4Addr) = (src.parse().unwrap(), dst.parse().unwrap());
    in_netns(ns, move || {
        let mut seg = [0u8; 20];
        seg[0..2].copy_from_slice(&sport.to_be_bytes());
        seg[2..4].copy_from_slice(&dport.to_be_bytes());
        seg[4..8].copy_from_slice(&seq.to_be_bytes());
        seg[8..12].copy_from_slice(&ack.to_be_bytes());
        seg[12] = 0x50;
        seg[13] = flags;
        seg[14..16].copy_from_slice(&64240u16.to_be_bytes());
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&src.octets());
        pseudo.extend_from_slice(&dst.octets());
        pseudo.extend_from_slice(&[0, 6, 0, 20]);
        pseudo.extend_from_slice(&seg);
        let c = csum(&pseudo, 0);
        seg[16..18].copy_from_slice(&c.to_be_bytes());
        // SAFETY: plain socket calls on a fd we own and close.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_TCP);
            assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
            let mut sin: libc::sockaddr_in = std::mem::zeroed();
            sin.sin_family = libc::AF_INET as u16;
            sin.sin_addr.s_addr = u32::from_ne_bytes(dst.octets());
            let n = libc::sendto(
                fd,
                seg.as_ptr().cast(),
                seg.len(),
                0,
                (&sin as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            );
            libc::close(fd);
            assert_eq!(n, 20, "sendto: {}", std::io::Error::last_os_error());
        }
    })
}

/// A TCP server in `ns` that accepts one connection and then writes whatever is sent on
/// the returned channel to it (`None` closes).
pub fn push_server(ns: &str, port: u16) -> std::sync::mpsc::Sender<Option<Vec<u8>>> {
    use std::io::Write as _;
    let ns = ns.to_string();
    let (tx, rx) = std::sync::mpsc::channel::<Option<Vec<u8>>>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        enter_netns(&ns);
        let l = TcpListener::bind(("::", port)).expect("bind push server");
        ready_tx.send(()).unwrap();
        let (mut s, _) = l.accept().expect("accept");
        while let Ok(Some(msg)) = rx.recv() {
            if s.write_all(&msg).is_err() {
                break;
            }
        }
    });
    ready_rx.recv().unwrap();
    tx
}

/// A TCP client connection made from inside a namespace (the socket keeps its namespace).
pub fn tcp_connect(ns: &str, addr: &str, port: u16) -> std::io::Result<TcpStream> {
    let sa = SocketAddr::new(addr.parse::<IpAddr>().expect("address"), port);
    in_netns(ns, move || TcpStream::connect_timeout(&sa, Duration::from_secs(3)))
}
