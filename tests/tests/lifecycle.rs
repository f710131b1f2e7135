//! The agent's lifecycle in a lab: hitless reload under traffic, a rejected reload,
//! commit-confirm, and interfaces that disappear and come back.

use std::{
    net::UdpSocket,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use ps_agent::{
    dataplane::AttachMode,
    observe::state::ReloadOutcome,
    policy::{compile::RuleKind, config::Mode},
};
use ps_tests::*;

fn agent_cmd(agent: &Agent, args: &[&str]) -> (i32, String) {
    let out = Command::new(agent_bin()).arg("--state-dir").arg(&agent.state_dir).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

/// [`agent_cmd`] inside network namespace `ns`, where the agent's interfaces are.
fn agent_cmd_in(ns: &str, agent: &Agent, args: &[&str]) -> (i32, String) {
    let out = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{ns}"))
        .arg(agent_bin())
        .arg("--state-dir")
        .arg(&agent.state_dir)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

const SITE_A: &str = "[[rule]]\nid = \"site-echo\"\ntransport = \"udp\"\nports = \"9000\"\ndirection = \"inbound\"\n";

/// Send datagrams from `ns` to `port` one at a time until `stop`; count answered and lost.
fn pinger(
    ns: &str,
    port: u16,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    lost: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        enter_netns(&ns);
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.connect((PS_ETH0_V4, port)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let mut buf = [0u8; 64];
        let mut seq = 0u64;
        while !stop.load(Ordering::Relaxed) {
            seq += 1;
            s.send(&seq.to_be_bytes()).unwrap();
            // Wait for this datagram's echo (skip late echoes of earlier ones).
            loop {
                match s.recv(&mut buf) {
                    Ok(8) if buf[..8] == seq.to_be_bytes() => {
                        answered.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Ok(_) => continue,
                    Err(_) => {
                        lost.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
        }
    })
}

/// Continuous traffic from peer a: datagrams to 9000 (allowed: echoed) and to 9001
/// (forbidden: an echo server waits there, so any answer is a leak).
struct Traffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    lost: Arc<AtomicU64>,
    leaked: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(lab: &Lab) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, lost, leaked, blocked) = (Arc::default(), Arc::default(), Arc::default(), Arc::default());
        let threads = vec![
            pinger(&lab.a, 9000, stop.clone(), Arc::clone(&ok), Arc::clone(&lost)),
            pinger(&lab.a, 9001, stop.clone(), Arc::clone(&leaked), blocked),
        ];
        Self { stop, ok, lost, leaked, threads }
    }

    /// Stop; (answered on 9000, lost on 9000, answered on 9001).
    fn finish(self) -> (u64, u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        (self.ok.load(Ordering::Relaxed), self.lost.load(Ordering::Relaxed), self.leaked.load(Ordering::Relaxed))
    }
}

#[test]
fn hundred_reloads_under_traffic_lose_nothing_and_leak_nothing() {
    let lab = Lab::new("lr");
    let cfg = std::env::temp_dir().join("pst-lr.toml");
    std::fs::write(&cfg, SITE_A).unwrap();
    let agent = Agent::start(&lab.ps, "lr", &["--config", cfg.to_str().unwrap()]);
    let _allowed = UdpEcho::start(&lab.ps, 9000);
    let _forbidden = UdpEcho::start(&lab.ps, 9001);
    let traffic = Traffic::start(&lab);
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..100 {
        // Alternate between two policies that differ elsewhere (ps-18 on/off).
        let text = if i % 2 == 0 { format!("{SITE_A}[rows]\nenable = [\"ps-18\"]\n") } else { SITE_A.to_string() };
        std::fs::write(&cfg, text).unwrap();
        let (code, out) = agent_cmd(&agent, &["reload"]);
        assert_eq!(code, 0, "reload {i}: {out}");
    }
    std::thread::sleep(Duration::from_millis(300));
    let (ok, lost, leaked) = traffic.finish();
    assert!(ok > 100, "the allowed flow ran throughout: {ok} answered");
    assert_eq!(lost, 0, "allowed datagrams lost across 100 reloads");
    assert_eq!(leaked, 0, "forbidden datagrams answered across 100 reloads");
    let s = agent.report();
    assert_eq!(agent.state().reloads, 100);
    // The counter of the allowed rule kept counting across generations: every datagram
    // that reached the host is on it.
    assert_eq!(rule(&s, "site-echo", RuleKind::Inbound).packets, ok, "counters survive reloads");
}

#[test]
fn a_bad_reload_is_rejected_and_the_policy_stays() {
    let lab = Lab::new("lb");
    let cfg = std::env::temp_dir().join("pst-lb.toml");
    std::fs::write(&cfg, SITE_A).unwrap();
    let agent = Agent::start(&lab.ps, "lb", &["--config", cfg.to_str().unwrap()]);
    let _allowed = UdpEcho::start(&lab.ps, 9000);
    assert_eq!(udp_probe(&lab.a, 0, PS_ETH0_V4, 9000, Duration::from_secs(2)), Probe::Open);
    std::fs::write(
        &cfg,
        "[[rule]]\nid = \"site-echo\"\ntransport = \"udp\"\nports = \"90000\"\ndirection = \"inbound\"\n",
    )
    .unwrap();
    let (code, out) = agent_cmd(&agent, &["reload"]);
    assert_eq!(code, 1);
    assert!(out.contains("pst-lb.toml:4: field `rule[0].ports`: invalid port `90000`"), "{out}");
    // Behind the CLI's back: SIGHUP; the agent itself rejects it.
    // SAFETY: signalling the agent.
    unsafe { libc::kill(agent.report().pid as i32, libc::SIGHUP) };
    let last = rejected_within(&agent, Duration::from_secs(5));
    assert!(last.contains("invalid port `90000`"), "{last}");
    assert!(agent.log_text().contains("reload rejected, the running policy stays"));
    assert_eq!(udp_probe(&lab.a, 0, PS_ETH0_V4, 9000, Duration::from_secs(2)), Probe::Open, "still allowed");
    assert_eq!(udp_probe(&lab.a, 0, PS_ETH0_V4, 9001, Duration::from_millis(500)), Probe::TimedOut, "still enforced");
}

/// Poll the state file until it records a reload: why it was rejected, or what happened
/// instead (applied, or none recorded within `limit`).
fn rejected_within(agent: &Agent, limit: Duration) -> String {
    let t0 = Instant::now();
    loop {
        match agent.state().last_reload {
            Some(ReloadOutcome::Rejected(why)) => return why,
            Some(ReloadOutcome::Applied) => return "applied, not rejected".into(),
            None if t0.elapsed() > limit => return format!("no reload recorded within {limit:?}"),
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Poll `stats` until its mode is `want`; false after `limit`.
fn mode_within(agent: &Agent, want: Mode, limit: Duration) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if agent.report().mode == want {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn a_config_that_blocks_stalls_neither_reload_nor_confirm_nor_stop() {
    let lab = Lab::new("lf");
    let cfg = std::env::temp_dir().join("pst-lf.toml");
    let _ = std::fs::remove_file(&cfg);
    std::fs::write(&cfg, SITE_A).unwrap();
    let mut agent = Agent::start(&lab.ps, "lf", &["--dry-run", "--config", cfg.to_str().unwrap()]);
    // The config becomes a FIFO nobody writes: reading it would block for ever.
    std::fs::remove_file(&cfg).unwrap();
    let c = std::ffi::CString::new(cfg.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // SAFETY: signalling the agent this test started.
    unsafe { libc::kill(agent.report().pid as i32, libc::SIGHUP) };
    let (code, out) = agent_cmd(&agent, &["enforce", "--confirm-within", "2s"]);
    assert_eq!(code, 0, "{out}");
    assert!(mode_within(&agent, Mode::DryRun, Duration::from_secs(6)), "the confirm deadline fired on time");
    let last = agent.state().last_reload;
    assert!(matches!(&last, Some(ReloadOutcome::Rejected(why)) if why.contains("not a regular file")), "{last:?}");
    let t0 = Instant::now();
    assert_eq!(agent.stop(), Some(0), "SIGTERM is served");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    let _ = std::fs::remove_file(&cfg);
}

#[test]
fn a_reload_that_outgrows_the_maps_says_to_restart() {
    let lab = Lab::new("lm");
    let cfg = std::env::temp_dir().join("pst-lm.toml");
    std::fs::write(&cfg, SITE_A).unwrap();
    let agent = Agent::start(&lab.ps, "lm", &["--config", cfg.to_str().unwrap()]);
    // 3,027 site rules: more than the 1,024 counter slots the running agent's maps hold.
    let big: String = (0..3027)
        .map(|i| {
            format!(
                "[[rule]]\nid = \"site-{i}\"\ntransport = \"udp\"\nports = \"{}\"\ndirection = \"inbound\"\n",
                10000 + i
            )
        })
        .collect();
    std::fs::write(&cfg, big).unwrap();
    let (code, out) = agent_cmd(&agent, &["reload"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("the running agent's maps hold 1024: restart the agent"), "{out}");
    // The agent itself says the same when signalled directly.
    // SAFETY: signalling the agent this test started.
    unsafe { libc::kill(agent.report().pid as i32, libc::SIGHUP) };
    let last = rejected_within(&agent, Duration::from_secs(10));
    assert!(last.contains("restart the agent"), "{last}");
}

#[test]
fn a_garbled_confirm_file_still_reverts() {
    let lab = Lab::new("lg");
    let agent = Agent::start(&lab.ps, "lg", &["--dry-run"]);
    let (code, out) = agent_cmd(&agent, &["enforce", "--confirm-within", "3s"]);
    assert_eq!(code, 0, "{out}");
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::write(agent.state_dir.join("confirm.json"), "garbage").unwrap();
    assert!(mode_within(&agent, Mode::DryRun, Duration::from_secs(6)), "{}", agent.log_text());
    assert!(agent.log_text().contains("cannot read the pending confirm"), "{}", agent.log_text());
}

#[test]
fn commit_confirm_reverts_unless_confirmed() {
    let lab = Lab::new("lc");
    let agent = Agent::start(&lab.ps, "lc", &["--dry-run"]);
    assert_eq!(tcp_probe(&lab.a, PS_ETH0_V4, 8080, Duration::from_secs(2)), Probe::Refused, "dry-run");
    let (code, out) = agent_cmd(&agent, &["enforce", "--confirm-within", "2s"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(agent.report().mode, Mode::Enforce);
    assert_eq!(tcp_probe(&lab.a, PS_ETH0_V4, 8080, Duration::from_millis(500)), Probe::TimedOut, "enforcing");
    // Nobody confirms (the operator locked themselves out): back to dry-run.
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(agent.report().mode, Mode::DryRun);
    assert_eq!(tcp_probe(&lab.a, PS_ETH0_V4, 8080, Duration::from_secs(2)), Probe::Refused, "reverted");
    assert!(agent.log_text().contains("not confirmed in time: back to dry-run"));
    let (code, out) = agent_cmd(&agent, &["confirm"]);
    assert_eq!(code, 1, "nothing pending: {out}");
    // Confirmed in time: it stays.
    assert_eq!(agent_cmd(&agent, &["enforce", "--confirm-within", "2s"]).0, 0);
    let (code, out) = agent_cmd(&agent, &["confirm"]);
    assert_eq!(code, 0, "{out}");
    std::thread::sleep(Duration::from_millis(3000));
    assert_eq!(agent.report().mode, Mode::Enforce);
    assert_eq!(agent_cmd(&agent, &["dry-run"]).0, 0);
    assert_eq!(agent.report().mode, Mode::DryRun);

    // --json says what changed, so a playbook can tell "changed" from "already so".
    let json = |args: &[&str]| -> serde_json::Value {
        let out = Command::new(agent_bin()).arg("--state-dir").arg(&agent.state_dir).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let v = json(&["dry-run", "--json"]);
    assert_eq!((v["changed"].as_bool(), v["mode"].as_str()), (Some(false), Some(Mode::DryRun.as_str())), "{v}");
    let v = json(&["enforce", "--confirm-within", "60s", "--json"]);
    assert_eq!((v["changed"].as_bool(), v["mode"].as_str()), (Some(true), Some(Mode::Enforce.as_str())), "{v}");
    assert!(v["confirm_deadline"].as_str().is_some_and(|d| d.ends_with('Z')), "RFC 3339 in UTC: {v}");
    assert_eq!(json(&["confirm", "--json"])["changed"], true);
    assert_eq!(json(&["confirm", "--json"])["changed"], false, "enforcing already: nothing to confirm");
    assert_eq!(json(&["enforce", "--json"])["changed"], false);
    assert_eq!(json(&["dry-run", "--json"])["changed"], true);
}

#[test]
fn interfaces_that_come_back_are_attached_again() {
    let lab = Lab::new("li");
    let agent = Agent::start(&lab.ps, "li", &[]);
    // eth1 vanishes (VM NIC hot-unplug) and comes back with a new ifindex.
    sh(&format!("ip -n {} link del eth1", lab.ps));
    std::thread::sleep(Duration::from_millis(1500));
    sh(&format!("ip -n {} link add eth1 type veth peer name veth0 netns {}", lab.ps, lab.b));
    sh(&format!("ip -n {} addr add 198.18.1.1/24 dev eth1", lab.ps));
    sh(&format!("ip -n {} addr add 198.18.1.2/24 dev veth0", lab.b));
    sh(&format!("ip -n {} link set eth1 up", lab.ps));
    sh(&format!("ip -n {} link set veth0 up", lab.b));
    let t0 = Instant::now();
    while !xdp_attached(&lab.ps, "eth1") && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(xdp_attached(&lab.ps, "eth1"), "re-attached; log:\n{}", agent.log_text());
    assert_eq!(tcp_probe(&lab.b, PS_ETH1_V4, 8080, Duration::from_millis(800)), Probe::TimedOut, "enforced again");
    let _l = Listener::tcp(&lab.ps, 443);
    assert_eq!(tcp_probe(&lab.b, PS_ETH1_V4, 443, Duration::from_secs(3)), Probe::Open);
    let link_events = agent.state().link_events;
    assert!(link_events >= 2, "{link_events}");
    let per_if = rule(&agent.report(), "ps-01+ps-02", RuleKind::Inbound).per_interface.clone();
    assert!(per_if["eth1"].packets >= 3, "counted on eth1's slot: {per_if:?}");
    assert!(agent.log_text().contains("interface `eth1` disappeared"));
}

fn xdp_prog_id(ns: &str, dev: &str) -> Option<u64> {
    let out = Command::new("ip").args(["-n", ns, "-j", "-d", "link", "show", "dev", dev]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v[0]["xdp"]["prog"]["id"].as_u64().or_else(|| v[0]["xdp"]["attached"][0]["prog"]["id"].as_u64())
}

#[test]
fn restart_without_a_gap_when_programs_are_kept() {
    let lab = Lab::new("lk");
    let cfg = std::env::temp_dir().join("pst-lk.toml");
    std::fs::write(&cfg, format!("on_exit = \"keep\"\n{SITE_A}")).unwrap();
    let args = ["--config", cfg.to_str().unwrap()];
    let mut first = Agent::start(&lab.ps, "lk", &args);
    let before = xdp_prog_id(&lab.ps, "eth0").expect("attached");
    let _allowed = UdpEcho::start(&lab.ps, 9000);
    let _forbidden = UdpEcho::start(&lab.ps, 9001);
    let traffic = Traffic::start(&lab);
    std::thread::sleep(Duration::from_millis(300));

    // The agent exits: its programs keep enforcing.
    assert_eq!(first.stop(), Some(0));
    assert!(first.log_text().contains("keep enforcing on eth0, eth1"), "{}", first.log_text());
    assert_eq!(xdp_prog_id(&lab.ps, "eth0"), Some(before), "still attached with no agent running");
    std::thread::sleep(Duration::from_millis(500));
    // The next agent takes the links over: a new program, atomically.
    let second = Agent::start(&lab.ps, "lk", &args);
    assert!(
        second.log_text().contains("took over the programs a previous agent kept on eth0, eth1"),
        "{}",
        second.log_text()
    );
    let after = xdp_prog_id(&lab.ps, "eth0").expect("attached");
    assert_ne!(after, before, "the program was replaced");
    std::thread::sleep(Duration::from_millis(500));
    let (ok, lost, leaked) = traffic.finish();
    assert!(ok > 20, "{ok}");
    assert_eq!(lost, 0, "allowed datagrams lost across the restart");
    assert_eq!(leaked, 0, "forbidden datagrams answered across the restart");
    assert_eq!(second.report().interfaces[0].xdp_mode, AttachMode::Kept);

    // `unload` after the kept agent exits removes everything.
    let mut second = second;
    assert_eq!(second.stop(), Some(0));
    let out = Command::new(agent_bin())
        .arg("--pin-dir")
        .arg(&second.pin_dir)
        .arg("--state-dir")
        .arg(&second.state_dir)
        .arg("unload")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(detached_within(&lab, Duration::from_secs(5)), "unload detached the kept links");
}

/// Whether XDP leaves both interfaces within `limit`: an unpinned link is released after
/// an RCU grace period, not at once.
fn detached_within(lab: &Lab, limit: Duration) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if !xdp_attached(&lab.ps, "eth0") && !xdp_attached(&lab.ps, "eth1") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn kill_9_leaves_the_policy_enforcing_and_the_next_agent_adopts_it() {
    let lab = Lab::new("k9");
    let cfg = std::env::temp_dir().join("pst-k9.toml");
    std::fs::write(&cfg, format!("on_exit = \"keep\"\n{SITE_A}")).unwrap();
    let args = ["--config", cfg.to_str().unwrap()];
    let mut first = Agent::start(&lab.ps, "k9", &args);
    let before = xdp_prog_id(&lab.ps, "eth0").expect("attached");
    let _allowed = UdpEcho::start(&lab.ps, 9000);
    let _forbidden = UdpEcho::start(&lab.ps, 9001);
    let traffic = Traffic::start(&lab);
    std::thread::sleep(Duration::from_millis(300));

    // SIGKILL: no clean-up runs, yet the links were pinned when they were attached.
    first.kill();
    assert_eq!(xdp_prog_id(&lab.ps, "eth0"), Some(before), "still attached with no agent running");
    let (code, out) = agent_cmd_in(&lab.ps, &first, &["stats"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("is not running") && out.contains("still attached to eth0, eth1"), "{out}");
    std::thread::sleep(Duration::from_millis(800));
    let second = Agent::start(&lab.ps, "k9", &args);
    assert!(
        second.log_text().contains("took over the programs a previous agent kept on eth0, eth1"),
        "{}",
        second.log_text()
    );
    assert_ne!(xdp_prog_id(&lab.ps, "eth0"), Some(before), "the program was replaced");
    std::thread::sleep(Duration::from_millis(500));
    let (ok, lost, leaked) = traffic.finish();
    assert!(ok > 20, "{ok}");
    assert_eq!(lost, 0, "allowed datagrams lost across the kill and the restart");
    assert_eq!(leaked, 0, "forbidden datagrams answered while no agent ran");
    // The counters are pinned: the kept program counted into them while no agent ran.
    assert_eq!(rule(&second.report(), "site-echo", RuleKind::Inbound).packets, ok, "counters carry on across the kill");
}

#[test]
fn kill_9_with_detach_fails_open() {
    let lab = Lab::new("kd");
    let cfg = std::env::temp_dir().join("pst-kd.toml");
    std::fs::write(&cfg, format!("on_exit = \"detach\"\n{SITE_A}")).unwrap();
    let mut agent = Agent::start(&lab.ps, "kd", &["--config", cfg.to_str().unwrap()]);
    let _forbidden = UdpEcho::start(&lab.ps, 9001);
    assert_eq!(udp_probe(&lab.a, 0, PS_ETH0_V4, 9001, Duration::from_millis(500)), Probe::TimedOut, "enforced");
    agent.kill();
    // Nothing holds the links of a detaching agent: the host is unfiltered (documented).
    assert!(detached_within(&lab, Duration::from_secs(5)), "XDP left the interfaces with the process");
    let (code, out) = agent_cmd_in(&lab.ps, &agent, &["stats"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("is not running") && out.contains("the host is not filtered"), "{out}");
    assert_eq!(udp_probe(&lab.a, 0, PS_ETH0_V4, 9001, Duration::from_secs(2)), Probe::Open, "fail-open");
}
