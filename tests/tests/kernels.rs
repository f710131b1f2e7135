//! Kernel features: the fallbacks the agent runs where the kernel lacks a feature
//! (`ps-agent`'s `probe` module), on a kernel that has them all, by switching them off with
//! `PS_AGENT_DISABLE_FEATURES`: the same enforcement, and `doctor`, `stats` and the log
//! saying what is degraded. The older kernels themselves: `cargo xtask vm-test`.

use std::{fs, process::Command, time::Duration};

use ps_agent::{
    dataplane::probe::{Feature, Status},
    policy::{compile::RuleKind, config::ReplyTracking},
};
use ps_common::reason::DropReason;
use ps_tests::*;

const OPEN: Duration = Duration::from_secs(3);
const DROP: Duration = Duration::from_millis(800);

/// What 5.4 lacks of what the agent can switch off.
const OFF: [Feature; 5] = [Feature::CoarseClock, Feature::Jiffies, Feature::Ringbuf, Feature::Tcx, Feature::VarStack];

#[test]
fn fallbacks_enforce_and_report_degraded_features() {
    // SAFETY: the only test of this binary sets it before any thread reads the environment;
    // the agents it starts inherit it.
    unsafe { std::env::set_var("PS_AGENT_DISABLE_FEATURES", OFF.map(Feature::name).join(",")) };
    let lab = Lab::new("kf");
    let agent = Agent::start(&lab.ps, "kf", &[]);

    // Enforcement as with every feature: an open matrix port, a port outside the matrix,
    // and the reply to an outbound connection, admitted through the flow table that the
    // egress program (on clsact, not TCX) fills with the fine clock.
    let _l443 = Listener::tcp(&lab.ps, 443);
    assert_eq!(tcp_probe(&lab.a, PS_ETH0_V4, 443, OPEN), Probe::Open, "tcp/443 (ps-01)");
    assert_eq!(tcp_probe(&lab.a, PS_ETH0_V4, 8080, DROP), Probe::TimedOut, "tcp/8080 is not in the matrix");
    let _sm = Listener::tcp(&lab.a, 5062);
    assert_eq!(tcp_probe(&lab.ps, A_V4, 5062, OPEN), Probe::Open, "PS -> SM 5062 (ps-04), reply tracked");
    let s = agent.report();
    assert_eq!(s.reply_tracking, ReplyTracking::Stateful, "the egress program attached through clsact");
    assert!(s.flows.created >= 1, "the outbound flow was tracked: {:?}", s.flows);
    assert!(rule(&s, "ps-04", RuleKind::Reply).packets >= 1);
    assert!(s.drop_count(DropReason::NoRule) >= 1, "{:?}", s.drops);
    assert_eq!(s.events.suppressed, 0, "no ring buffer: no event asked for: {:?}", s.events);
    for f in OFF {
        assert_eq!(s.feature(f), Some(Status::Degraded), "{}: {:?}", f.name(), s.features);
    }
    assert_eq!(s.feature(Feature::BpfLink), Some(Status::Present), "{:?}", s.features);
    let qdisc = Command::new("tc").args(["-n", &lab.ps, "qdisc", "show", "dev", "eth0"]).output().unwrap();
    assert!(String::from_utf8_lossy(&qdisc.stdout).contains("clsact"), "egress on a clsact qdisc");

    let log = agent.log_text();
    assert!(log.contains("kernel features: ") && log.contains("BPF ring buffer (5.8) missing: drop events"), "{log}");
    // The placeholder maps' pins are gone once the programs are loaded.
    let pid = s.pid;
    let left: Vec<String> = fs::read_dir("/sys/fs/bpf")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("ps-agent-placeholder-{pid}-")))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // doctor probes the same and loads the object with the same switches.
    let out = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", lab.ps))
        .arg(agent_bin())
        .arg("doctor")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    let line = |check: &str| {
        out.lines()
            .find(|l| l.get(6..).is_some_and(|rest| rest.starts_with(&format!("{check} "))))
            .unwrap_or_else(|| panic!("no `{check}` line in:\n{out}"))
            .to_string()
    };
    assert!(line("feature ringbuf").starts_with("warn") && line("feature ringbuf").contains("degraded:"), "{out}");
    assert!(line("feature coarse_clock").starts_with("pass") && line("feature coarse_clock").contains("degraded:"));
    assert!(line("feature bpf_link").contains("present:"), "{out}");
    assert!(line("program").starts_with("pass") && line("program").contains("probed features"), "{out}");
}
