//! The lock-out failsafe's DHCP and DHCPv6 under the default stateful reply admission: real
//! lease exchanges through the enforcing agent. dnsmasq serves in the peer namespace;
//! busybox's udhcpc (IPv4) and dhclient -6 (IPv6; Debian's busybox has no udhcpc6) ask from
//! the agent's. Their requests go to broadcast and multicast addresses (255.255.255.255:67,
//! ff02::1:2:547) and the answers come from the server's own, so no flow can match them:
//! the failsafe's port pairs (67 → 68, 547 → 546) are admitted as the stateless checks
//! admit them (`ps_common::classify`). Needs Debian's dnsmasq-base, busybox and
//! isc-dhcp-client (`xtask/setup.sh`).

use std::{
    fs,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use ps_agent::policy::{
    compile::RuleKind,
    config::{Mode, ReplyTracking},
};
use ps_common::reason::DropReason;
use ps_tests::*;

/// A child killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Wait until `dev` in `ns` has an IPv6 link-local address past duplicate address detection
/// (DHCPv6 runs between link-local addresses).
fn link_local_ready(ns: &str, dev: &str) {
    let t0 = Instant::now();
    loop {
        let out =
            Command::new("ip").args(["-n", ns, "-6", "addr", "show", "dev", dev, "scope", "link"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains("fe80::") && !text.contains("tentative") {
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "no link-local address on {dev} in {ns}: {text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn dnsmasq(ns: &str, dir: &Path) -> Killed {
    let log = fs::File::create(dir.join("dnsmasq.log")).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", ns, "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0", "--user=root"])
        .args(["--interface=veth0", "--bind-interfaces", "--log-dhcp"])
        .args(["--dhcp-range=198.18.0.50,198.18.0.60,255.255.255.0,2m", "--dhcp-range=fd00::100,fd00::1ff,64,2m"])
        .arg(format!("--dhcp-leasefile={}", dir.join("dnsmasq.leases").display()))
        .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("run dnsmasq (Debian package dnsmasq-base, see xtask/setup.sh)");
    Killed(child)
}

#[test]
fn dhcp_and_dhcpv6_leases_through_the_enforcing_agent() {
    let lab = Lab::new("dh");
    let dir = scratch("dh-dhcp");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    link_local_ready(&lab.a, "veth0");
    link_local_ready(&lab.ps, "eth0");
    let _server = dnsmasq(&lab.a, &dir);
    let agent = Agent::start(&lab.ps, "dh", &[]);
    let r = agent.report();
    assert_eq!((r.reply_tracking, r.mode), (ReplyTracking::Stateful, Mode::Enforce));

    // IPv4: DISCOVER from 0.0.0.0:68 to 255.255.255.255:67; OFFER and ACK from the server.
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.ps, "busybox", "udhcpc", "-i", "eth0", "-f", "-q", "-n"])
        .args(["-t", "5", "-T", "1", "-s", "/bin/true"])
        .output()
        .expect("run udhcpc (Debian package busybox, see xtask/setup.sh)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let server_log = || fs::read_to_string(dir.join("dnsmasq.log")).unwrap_or_default();
    assert!(
        out.status.success() && text.contains("lease of 198.18.0.") && text.contains("obtained"),
        "no DHCP lease through the agent: {text}\ndnsmasq: {}\nagent: {:?}",
        server_log(),
        agent.report().drops
    );

    // IPv6: SOLICIT from fe80::…:546 to ff02::1:2:547; ADVERTISE and REPLY from the server's
    // link-local address.
    fs::write(dir.join("dhclient6.conf"), "timeout 15;\ninitial-interval 1;\n").unwrap();
    let lease6 = dir.join("dhclient6.leases");
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.ps, "dhclient", "-6", "-1", "-v", "-sf", "/bin/true"])
        .arg("-cf")
        .arg(dir.join("dhclient6.conf"))
        .arg("-lf")
        .arg(&lease6)
        .arg("-pf")
        .arg(dir.join("dhclient6.pid"))
        .arg("eth0")
        .output()
        .expect("run dhclient (Debian package isc-dhcp-client, see xtask/setup.sh)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let leases = fs::read_to_string(&lease6).unwrap_or_default();
    assert!(
        out.status.success() && leases.contains("iaaddr fd00::1"),
        "no DHCPv6 lease through the agent: {text}\nleases: {leases}\ndnsmasq: {}\nagent: {:?}",
        server_log(),
        agent.report().drops
    );
    // dhclient -1 leaves its daemon running once it has a lease.
    if let Ok(pid) = fs::read_to_string(dir.join("dhclient6.pid")) {
        sh_ok(&format!("kill {}", pid.trim()));
    }

    let s = agent.report();
    assert!(rule(&s, "failsafe-dhcp", RuleKind::Reply).packets >= 2, "OFFER and ACK counted");
    assert!(rule(&s, "failsafe-dhcpv6", RuleKind::Reply).packets >= 2, "ADVERTISE and REPLY counted");
    assert_eq!(s.drop_count(DropReason::Untracked), 0, "{:?}", s.drops);
}
