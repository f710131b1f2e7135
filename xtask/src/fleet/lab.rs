//! The fleet lab's hosts and network: three Debian 12 hosts booted by `systemd-nspawn
//! --boot` (their own systemd as PID 1, sshd, python3), each in a network namespace of its
//! own with `eth0` on a bridge, and the namespaces around them — the bridge's own (the
//! operator's station: Ansible and Prometheus), Session Manager's, and a client's.
//!
//! Every name starts with `<PS_TEST_PREFIX>-fleet` (default `ps-fleet`), so labs of
//! several users do not collide, and [`teardown`] finds what a killed run left by name.

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr, TcpStream},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// The lab's subnet: the bridge (operator's station) is `.1`, Session Manager `.2`, the
/// client `.50`, node `i` is `.10 + i`.
const SUBNET: [u8; 3] = [198, 18, 10];

/// Seconds a host gets to boot until its sshd answers.
const BOOT_SECS: u64 = 90;

/// An address of the lab's subnet.
pub fn addr(host: u8) -> Ipv4Addr {
    Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], host)
}

/// The operator's station: Ansible's controller and Prometheus.
pub const OPS: u8 = 1;
/// Session Manager.
pub const SM: u8 = 2;
/// A client that no `[systems]` entry names.
pub const CLIENT: u8 = 50;

/// One booted host.
pub struct Node {
    /// Inventory name: `n1`, `n2`, `n3`.
    pub name: String,
    /// Its address on the bridge.
    pub addr: Ipv4Addr,
    /// Machine and network namespace name, `<base>-n1`.
    pub machine: String,
    nspawn: Child,
    /// Seconds from starting nspawn until sshd answered.
    pub boot_secs: f64,
}

/// The running lab; dropping it tears everything down unless `keep` is set.
pub struct Lab {
    /// `<PS_TEST_PREFIX>-fleet`.
    pub base: String,
    /// Scratch directory: keys, inventories, logs, Prometheus' data.
    pub dir: PathBuf,
    /// The hosts, in inventory order.
    pub nodes: Vec<Node>,
    /// Leave everything running at the end (for debugging; `--down` removes it).
    pub keep: bool,
    /// Prometheus, once started.
    pub prometheus: Option<Child>,
    /// Every check passed: the scratch directory goes too (otherwise it stays, for the
    /// logs).
    pub passed: bool,
}

/// `<PS_TEST_PREFIX>-fleet`.
pub fn base_name() -> String {
    format!("{}-fleet", std::env::var("PS_TEST_PREFIX").unwrap_or_else(|_| "ps".into()))
}

/// The lab's scratch directory under TMPDIR.
pub fn scratch_dir(base: &str) -> PathBuf {
    std::env::temp_dir().join(base)
}

fn sh(cmd: &mut Command) -> anyhow::Result<Output> {
    let out = cmd.output().with_context(|| format!("failed to start {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out)
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    sh(Command::new("ip").args(args)).map(drop)
}

/// The namespaces of the lab other than the nodes': the bridge's, SM's, the client's.
fn side_namespaces(base: &str) -> [(String, u8); 3] {
    [(format!("{base}-lan"), OPS), (format!("{base}-sm"), SM), (format!("{base}-cl"), CLIENT)]
}

impl Lab {
    /// Build the network, boot `n` hosts from `rootfs`, wait for their sshd.
    pub fn up(rootfs: &Path, n: u8, keep: bool) -> anyhow::Result<Self> {
        let base = base_name();
        teardown(&base)?;
        let dir = scratch_dir(&base);
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("failed to clear {}", dir.display()))?;
        }
        fs::create_dir_all(&dir).with_context(|| format!("failed to create {}", dir.display()))?;
        let mut lab = Lab { base, dir, nodes: Vec::new(), keep, prometheus: None, passed: false };
        lab.network(n)?;
        lab.ssh_key()?;
        // One after the other, so each boot time is the host's own.
        for i in 1..=n {
            let t0 = Instant::now();
            lab.boot(rootfs, i)?;
            let node = lab.nodes.last_mut().expect("just booted");
            let console = lab.dir.join(format!("{}.log", node.machine));
            wait_tcp(&format!("{}-lan", lab.base), SocketAddr::from((node.addr, 22)), BOOT_SECS)
                .with_context(|| format!("host {} did not boot (its console: {})", node.name, console.display()))?;
            node.boot_secs = t0.elapsed().as_secs_f64();
        }
        Ok(lab)
    }

    /// The bridge with the operator's station on it, SM's and the client's namespaces, and
    /// one namespace per node, each joined to the bridge by a veth pair.
    fn network(&self, n: u8) -> anyhow::Result<()> {
        let lan = format!("{}-lan", self.base);
        for (ns, _) in side_namespaces(&self.base) {
            ip(&["netns", "add", &ns])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        ip(&["-n", &lan, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &lan, "addr", "add", &format!("{}/24", addr(OPS)), "dev", "br0"])?;
        ip(&["-n", &lan, "link", "set", "br0", "up"])?;
        for (ns, host) in side_namespaces(&self.base).into_iter().skip(1) {
            self.join(&ns, &format!("p{host}"), addr(host))?;
        }
        for i in 1..=n {
            let ns = format!("{}-n{i}", self.base);
            ip(&["netns", "add", &ns])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            self.join(&ns, &format!("n{i}"), addr(10 + i))?;
        }
        Ok(())
    }

    /// A veth pair: `eth0` with `address` in `ns`, `port` on the bridge.
    fn join(&self, ns: &str, port: &str, address: Ipv4Addr) -> anyhow::Result<()> {
        let lan = format!("{}-lan", self.base);
        ip(&["-n", &lan, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns])?;
        ip(&["-n", &lan, "link", "set", port, "master", "br0", "up"])?;
        ip(&["-n", ns, "addr", "add", &format!("{address}/24"), "dev", "eth0"])?;
        ip(&["-n", ns, "link", "set", "eth0", "up"])
    }

    /// The controller's key; the hosts get its public half as root's authorized_keys.
    fn ssh_key(&self) -> anyhow::Result<()> {
        let key = self.dir.join("id_ed25519");
        sh(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", &self.base, "-f"]).arg(&key))?;
        Ok(())
    }

    /// The controller's private key.
    pub fn key(&self) -> PathBuf {
        self.dir.join("id_ed25519")
    }

    /// Start node `i`: the shared root file system under a tmpfs overlay (nothing it writes
    /// reaches the cache), its own network namespace and its own directory of bpffs as
    /// /sys/fs/bpf, the capabilities and system calls the agent needs.
    fn boot(&mut self, rootfs: &Path, i: u8) -> anyhow::Result<()> {
        let name = format!("n{i}");
        let machine = format!("{}-{name}", self.base);
        let pins = Path::new("/sys/fs/bpf").join(&machine);
        fs::create_dir_all(&pins)
            .with_context(|| format!("failed to create {} (is bpffs mounted?)", pins.display()))?;
        let log = fs::File::create(self.dir.join(format!("{machine}.log")))?;
        let nspawn = Command::new("systemd-nspawn")
            .args(["--quiet", "--boot", "--register=no", "--keep-unit", "--volatile=overlay", "--console=passive"])
            .arg("--directory")
            .arg(rootfs)
            .arg(format!("--machine={machine}"))
            .arg(format!("--hostname={name}"))
            .arg(format!("--network-namespace-path=/var/run/netns/{machine}"))
            .args(["--capability=CAP_BPF,CAP_PERFMON,CAP_NET_ADMIN", "--system-call-filter=bpf perf_event_open"])
            .arg(format!("--bind={}:/sys/fs/bpf", pins.display()))
            .arg(format!("--bind-ro={}.pub:/root/.ssh/authorized_keys", self.key().display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("failed to start systemd-nspawn (xtask/fleet-setup.sh installs systemd-container)")?;
        let addr = addr(10 + i);
        self.nodes.push(Node { name, addr, machine, nspawn, boot_secs: 0.0 });
        Ok(())
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> &Node {
        self.nodes.iter().find(|n| n.name == name).unwrap_or_else(|| panic!("no node {name}"))
    }

    /// Run `script` with `sh -c` inside node `name` (all its namespaces, as root).
    pub fn exec(&self, name: &str, script: &str) -> anyhow::Result<Output> {
        let node = self.node(name);
        let leader = node.leader()?;
        Command::new("nsenter")
            .args(["-t", &leader.to_string(), "-m", "-u", "-i", "-n", "-p", "--", "sh", "-c", script])
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .output()
            .with_context(|| format!("failed to enter {}", node.machine))
    }

    /// As [`Lab::exec`], failing on a non-zero exit; returns stdout.
    pub fn exec_ok(&self, name: &str, script: &str) -> anyhow::Result<String> {
        let out = self.exec(name, script)?;
        if !out.status.success() {
            bail!("`{script}` on {name} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The namespace of the bridge (the operator's station).
    pub fn lan(&self) -> String {
        format!("{}-lan", self.base)
    }

    /// Session Manager's namespace.
    pub fn sm(&self) -> String {
        format!("{}-sm", self.base)
    }

    /// The client's namespace.
    pub fn client(&self) -> String {
        format!("{}-cl", self.base)
    }
}

impl Node {
    /// The container's PID 1 (its systemd), as the host sees it.
    pub fn leader(&self) -> anyhow::Result<u32> {
        let pid = self.nspawn.id();
        let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .with_context(|| format!("systemd-nspawn of {} (pid {pid}) is gone", self.machine))?;
        children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("systemd-nspawn of {} has no container process", self.machine))
    }

    /// Proportional set size of every process of the host, in bytes (shared pages split
    /// between their users, so the hosts' figures add up).
    pub fn pss_bytes(&self) -> anyhow::Result<u64> {
        let ns = fs::read_link(format!("/proc/{}/ns/pid", self.leader()?))?;
        let mut total = 0;
        for e in fs::read_dir("/proc")?.flatten() {
            let p = e.path();
            if fs::read_link(p.join("ns/pid")).ok().as_ref() != Some(&ns) {
                continue;
            }
            let rollup = fs::read_to_string(p.join("smaps_rollup")).unwrap_or_default();
            let kb: u64 = rollup
                .lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0);
            total += kb * 1024;
        }
        Ok(total)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("[fleet] --keep: the lab stays up; `cargo xtask fleet-test --down` removes it");
            return;
        }
        if let Some(p) = &mut self.prometheus {
            stop(p);
        }
        for n in &mut self.nodes {
            stop(&mut n.nspawn);
        }
        if let Err(e) = teardown(&self.base) {
            eprintln!("[fleet] teardown: {e:#}");
        }
        if self.passed {
            let _ = fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("[fleet] logs (consoles, playbook runs, Prometheus): {}", self.dir.display());
        }
    }
}

/// SIGTERM (an orderly shutdown, for nspawn), SIGKILL after 30 s.
fn stop(child: &mut Child) {
    // SAFETY: signalling a child this process started and has not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(30) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Remove what a lab called `base` left, running or not: its processes (found by their
/// command lines, which name the lab), pins, namespaces. Idempotent.
pub fn teardown(base: &str) -> anyhow::Result<()> {
    let scratch = scratch_dir(base);
    for pid in lab_processes(base, &scratch) {
        // SAFETY: signalling a process whose command line names this lab.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    let t0 = Instant::now();
    while !lab_processes(base, &scratch).is_empty() && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(200));
    }
    for pid in lab_processes(base, &scratch) {
        // SAFETY: as above; it ignored SIGTERM for 30 s.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    for e in fs::read_dir("/sys/fs/bpf").into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with(&format!("{base}-")) {
            fs::remove_dir_all(e.path()).with_context(|| format!("failed to remove {}", e.path().display()))?;
        }
    }
    for e in fs::read_dir("/var/run/netns").into_iter().flatten().flatten() {
        let ns = e.file_name().to_string_lossy().into_owned();
        if ns.starts_with(&format!("{base}-")) {
            ip(&["netns", "del", &ns])?;
        }
    }
    Ok(())
}

/// Processes whose command line names the lab's machines or its scratch directory:
/// the containers, Prometheus, and Ansible's runs and SSH masters.
fn lab_processes(base: &str, scratch: &Path) -> Vec<u32> {
    let machine = format!("--machine={base}-");
    let dir = scratch.to_string_lossy().into_owned();
    let me = std::process::id();
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            (cmd.starts_with("systemd-nspawn") && cmd.contains(&machine)) || cmd.contains(&dir)
        })
        .collect()
}

/// Run `f` on a thread inside network namespace `ns`.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
    let path = Path::new("/var/run/netns").join(ns);
    std::thread::spawn(move || -> anyhow::Result<T> {
        let fd = fs::File::open(&path).with_context(|| format!("failed to open {}", path.display()))?;
        // SAFETY: setns(2) on a namespace file this thread opened; it changes only this
        // thread's network namespace, and the thread ends with `f`.
        if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("failed to enter {}: {}", path.display(), std::io::Error::last_os_error());
        }
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("a thread in {ns} panicked"))?
}

/// Wait until `to` accepts a TCP connection from namespace `ns`.
pub fn wait_tcp(ns: &str, to: SocketAddr, secs: u64) -> anyhow::Result<()> {
    let ok = in_ns(ns, move || {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(secs) {
            if TcpStream::connect_timeout(&to, Duration::from_millis(500)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    })?;
    if !ok {
        bail!("{to} did not accept a connection within {secs} s");
    }
    Ok(())
}
