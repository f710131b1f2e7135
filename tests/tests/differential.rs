//! Differential test: the loaded XDP program (BPF_PROG_TEST_RUN) against the host
//! classifier (`ps_agent::policy::model::Model`, the same ps-common code over the compiled rule
//! set in memory), frame by frame, on generated frames (`ps_tests::framegen`: valid,
//! edge-case and malformed).
//!
//! For every frame, on eth0, eth1 (real ifindexes of the lab namespace) and an
//! unconfigured interface (lo), in four variants — enforce and dry-run, stateless and
//! stateful reply admission — it checks the following. Under stateful admission, a reply
//! the host model calls `Tracked` finds no flow half of the time (it must come out
//! `untracked`); the other half the test first puts a flow for it in the table (a
//! handshake with numbers near the frame's or anywhere, data sent, FINs, picked up
//! mid-stream, idle past its timeout: `flow_for`), and the verdict and the flow the kernel
//! leaves must be what `ps_common::track::flow_reply` makes of the same flow on the host.
//! - the XDP action equals the host's (`XDP_DROP` for a drop in enforce, else `XDP_PASS`;
//!   never `XDP_ABORTED`); frames shorter than an Ethernet header are refused by the
//!   kernel's test run, and the host must call them `truncated`;
//! - the counter bucket the host names (a rule counter, or a pass / drop / would-drop
//!   bucket of that interface slot) went up by exactly one packet and the frame's length,
//!   by reading that bucket and comparing it with a running host-side tally;
//! - every `BATCH` frames and at the end, every counter of the used slots equals the
//!   tally (so no other bucket moved), and at the end every other slot is zero.
//!
//! `PS_DIFF_FRAMES` sets the count (default 5,000; `cargo xtask verify` runs 100,000),
//! `PS_DIFF_SEED` the seed. A mismatch prints the frame as hex and both verdicts.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::Instant,
};

use aya::maps::PerCpuArray;
use ps_agent::{
    dataplane::{LoadOptions, Loaded},
    policy::compile::{HostFacts, RuleSet, compile},
    policy::config::{Config, Mode, ReplyTracking},
    policy::model::Model,
};
use ps_common::{
    classify::{Verdict, flow_key},
    layout::{
        Counter, DIR_FIN, FLOW_TCP_CLOSING, FLOW_TCP_ESTABLISHED, FlowKey, FlowState, L4, MAX_IFACES, Policy,
        STAT_LOG_SUPPRESSED, STAT_STRIDE, flow_timeout_ns, rule_counter_index, stat_drop_index, stat_pass_index,
    },
    names,
    observe::{STAT_EVENT_LOST, STAT_EVENT_SENT},
    parse::{Parsed, parse_fast, parse_slice},
    reason::DropReason,
    track::{NO_WSCALE, Reply, SEG_SACK_PERM, Segment, flow_new, flow_reply, flow_seeded, flow_sent, tcp_segment},
};
use ps_tests::{
    Lab,
    framegen::{FrameGen, Ports, Rng},
    in_netns,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
/// Frames between two full counter comparisons.
const BATCH: usize = 1000;
/// Detailed failures kept for the report.
const MAX_REPORTED: usize = 20;
const DEFAULT_FRAMES: usize = 5_000;
const DEFAULT_SEED: u64 = 0x7053_2d61_6765_6e74;

/// A counter bucket: (rule counter?, index in its map).
type Bucket = (bool, u32);

struct Variant {
    name: &'static str,
    mode: Mode,
    set: RuleSet,
    loaded: Loaded,
    /// What every touched bucket should hold.
    tally: HashMap<Bucket, Counter>,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.replace('_', "").parse().ok()).unwrap_or(default)
}

fn hex(f: &[u8]) -> String {
    f.iter().map(|b| format!("{b:02x}")).collect()
}

fn sum(v: &aya::maps::PerCpuValues<Counter>) -> Counter {
    v.iter().fold(Counter::default(), |a, c| Counter { packets: a.packets + c.packets, bytes: a.bytes + c.bytes })
}

fn read(loaded: &Loaded, (rule, index): Bucket) -> Counter {
    let name = if rule { names::MAP_RULE_CNT } else { names::MAP_STAT_CNT };
    let map = loaded.ebpf().map(name).expect("counter map");
    let arr: PerCpuArray<_, Counter> = PerCpuArray::try_from(map).expect("per-CPU array");
    sum(&arr.get(&index, 0).expect("read counter"))
}

/// Compare every counter of `slots` with the tally; mismatches as text.
fn full_check(v: &Variant, slots: &[u32]) -> Vec<String> {
    let cap = v.set.policy.rules_cap;
    let mut out = Vec::new();
    let rules: PerCpuArray<_, Counter> =
        PerCpuArray::try_from(v.loaded.ebpf().map(names::MAP_RULE_CNT).unwrap()).unwrap();
    let stats: PerCpuArray<_, Counter> =
        PerCpuArray::try_from(v.loaded.ebpf().map(names::MAP_STAT_CNT).unwrap()).unwrap();
    for &slot in slots {
        for c in 0..cap {
            let i = rule_counter_index(slot, cap, c);
            let got = sum(&rules.get(&i, 0).unwrap());
            let want = v.tally.get(&(true, i)).copied().unwrap_or_default();
            if got != want {
                out.push(format!("{}: slot {slot} rule counter {c}: kernel {got:?}, host {want:?}", v.name));
            }
        }
        for b in 0..STAT_STRIDE {
            if b == STAT_LOG_SUPPRESSED || b == STAT_EVENT_SENT || b == STAT_EVENT_LOST {
                // Not packet buckets: the log and event rate limiters depend on time.
                continue;
            }
            let i = slot * STAT_STRIDE + b;
            let got = sum(&stats.get(&i, 0).unwrap());
            let want = v.tally.get(&(false, i)).copied().unwrap_or_default();
            if got != want {
                out.push(format!("{}: slot {slot} stat bucket {b}: kernel {got:?}, host {want:?}", v.name));
            }
        }
    }
    out
}

fn ports_of(set: &RuleSet) -> Ports {
    let mut p = Ports::default();
    for (&(l4, port), e) in &set.ports {
        let (inb, rep) = match l4 {
            L4::Tcp => (&mut p.tcp_in, &mut p.tcp_reply),
            L4::Udp => (&mut p.udp_in, &mut p.udp_reply),
        };
        if e.inbound != 0 {
            inb.push(port);
        }
        if e.reply != 0 {
            rep.push(port);
        }
    }
    p
}

/// A flow for the tracked reply `frame` (rule counter `c`) as the egress program could have
/// left it, its key, and the reply's segment and protocol; `None` where the frame has no
/// readable addresses.
fn tracked_flow(
    frame: &[u8],
    c: u32,
    set: &RuleSet,
    rng: &mut Rng,
) -> Option<(FlowKey, FlowState, Option<Segment>, u8)> {
    let Parsed::Ip(p) = parse_slice(frame) else { return None };
    let start = frame.as_ptr() as usize;
    // SAFETY (both): the frame is readable for the duration of the calls.
    let key = unsafe { flow_key(start, start + frame.len(), &p, true) }?;
    let seg = if p.proto == 6 { unsafe { tcp_segment(start, start + frame.len(), &p, true) } } else { None };
    let flow = flow_for(rng, p.proto, seg.as_ref(), c, &set.policy, ps_agent::clock::monotonic_ns());
    Some((key, flow, seg, p.proto))
}

/// A flow for a reply (TCP: with segment `seg`, numbers near its own three times in four):
/// a UDP flow; or a TCP handshake with random windows and scales, then data from the host,
/// sometimes FINs; or a SYN without answer; or a flow picked up mid-stream. One in ten has
/// been idle past its timeout.
fn flow_for(rng: &mut Rng, proto: u8, seg: Option<&Segment>, c: u32, policy: &Policy, now: u64) -> FlowState {
    let mut f = match (proto, seg) {
        (6, Some(s)) => tcp_flow_for(rng, s, c, policy, now),
        (6, None) => flow_seeded(FLOW_TCP_ESTABLISHED, c, now),
        _ => flow_new(proto, None, c, now).expect("a UDP flow"),
    };
    if rng.chance(1, 10) {
        f.last_ns = now.saturating_sub(flow_timeout_ns(policy, f.state, true) + 1_000_000_000);
    }
    f
}

fn tcp_flow_for(rng: &mut Rng, s: &Segment, c: u32, policy: &Policy, now: u64) -> FlowState {
    let near = rng.chance(3, 4);
    let mut isn = |x: u32| if near { x.wrapping_sub(1 + rng.below(3000) as u32) } else { rng.next_u64() as u32 };
    let (isn_l, isn_r) = (isn(s.sack), isn(s.seq));
    let mut wscale = || if rng.chance(3, 4) { rng.below(15) as u8 } else { NO_WSCALE };
    let (scale_l, scale_r) = (wscale(), wscale());
    let mut win = || rng.next_u64() as u16 | 1;
    let (win_l, win_r, win_a) = (win(), win(), win());
    let syn = Segment {
        seq: isn_l,
        end: isn_l.wrapping_add(1),
        win: win_l,
        flags: 0x02,
        wscale: scale_l,
        opts: SEG_SACK_PERM,
        ..Segment::default()
    };
    let mut f = flow_new(6, Some(&syn), c, now).expect("a SYN opens a flow");
    match rng.below(8) {
        0 => return flow_seeded(FLOW_TCP_ESTABLISHED, c, now),
        1 => return f,
        _ => {}
    }
    let ack_l = isn_l.wrapping_add(1);
    let synack = Segment {
        seq: isn_r,
        ack: ack_l,
        sack: ack_l,
        end: isn_r.wrapping_add(1),
        win: win_r,
        flags: 0x12,
        wscale: scale_r,
        opts: SEG_SACK_PERM,
    };
    assert_eq!(flow_reply(&mut f, policy, 6, Some(&synack), now, true), Reply::Pass, "the SYN-ACK of the flow");
    let sent = rng.below(5000) as u32;
    let data = Segment {
        seq: ack_l,
        ack: isn_r.wrapping_add(1),
        sack: isn_r.wrapping_add(1),
        end: ack_l.wrapping_add(sent),
        win: win_a,
        flags: 0x10,
        wscale: NO_WSCALE,
        opts: 0,
    };
    flow_sent(&mut f, 6, Some(&data), c, now);
    match rng.below(6) {
        0 => {
            f.state = FLOW_TCP_CLOSING;
            f.local.flags |= DIR_FIN;
        }
        1 => {
            f.state = FLOW_TCP_CLOSING;
            f.local.flags |= DIR_FIN;
            f.remote.flags |= DIR_FIN;
        }
        _ => {}
    }
    f
}

/// A verdict as a short label, for coverage.
fn label(v: Verdict) -> String {
    match v {
        Verdict::Rule(_) => "rule".into(),
        Verdict::Tracked(_) => "tracked".into(),
        Verdict::Pass(r) => format!("pass:{}", r.as_str()),
        Verdict::Drop(r) => format!("drop:{}", r.as_str()),
    }
}

struct Report {
    frames: usize,
    runs: u64,
    failures: Vec<String>,
    failed: usize,
    families: BTreeMap<String, usize>,
    verdicts: BTreeMap<String, u64>,
    secs: f64,
    /// Frames `parse_fast` took.
    fast: usize,
    /// (Frame, variant, interface) cases `decide_quick` answered.
    quick: usize,
    /// Tracked replies given a flow, by what the flow check said.
    flows: BTreeMap<String, u64>,
}

fn run(frames: usize, seed: u64) -> Report {
    let eth0 = ps_agent::dataplane::host::ifindex("eth0").unwrap();
    let eth1 = ps_agent::dataplane::host::ifindex("eth1").unwrap();
    let lo = ps_agent::dataplane::host::ifindex("lo").unwrap();
    let ifaces = vec![("eth0".to_string(), eth0), ("eth1".to_string(), eth1)];
    let host = HostFacts { ephemeral: (32768, 60999), interfaces: vec!["eth0".into(), "eth1".into()] };
    let mut variants = Vec::new();
    for (name, mode, tracking, ping) in [
        ("enforce/stateless", Mode::Enforce, ReplyTracking::Stateless, false),
        ("dry-run/stateless", Mode::DryRun, ReplyTracking::Stateless, false),
        ("enforce/stateful+ping", Mode::Enforce, ReplyTracking::Stateful, true),
        ("dry-run/stateful+ping", Mode::DryRun, ReplyTracking::Stateful, true),
    ] {
        let mut cfg = Config::shipped();
        cfg.site.reply_tracking = tracking;
        cfg.site.allow_ping = ping;
        let set = compile(&cfg, &host).unwrap();
        let loaded = Loaded::load(&set, &ifaces, &LoadOptions::new(mode)).unwrap_or_else(|e| panic!("load: {e}"));
        variants.push(Variant { name, mode, set, loaded, tally: HashMap::new() });
    }
    let mut g = FrameGen::new(seed, ports_of(&variants[0].set));
    let mut flow_rng = Rng::new(seed ^ 0x666c_6f77);
    let (mut failures, mut failed, mut runs, mut fast, mut quick_n) = (Vec::new(), 0usize, 0u64, 0usize, 0usize);
    let mut families = BTreeMap::new();
    let mut verdicts = BTreeMap::new();
    let mut flows = BTreeMap::new();
    let t0 = Instant::now();
    let mut fail = |msg: String, failures: &mut Vec<String>| {
        failed += 1;
        if failures.len() < MAX_REPORTED {
            failures.push(msg);
        }
    };
    for n in 0..frames {
        let (frame, family) = g.next_frame();
        *families.entry(format!("{family:?}")).or_insert(0) += 1;
        // The fast path is a shortcut of the general parser, never a second opinion.
        let start = frame.as_ptr() as usize;
        // SAFETY: the frame is readable for the duration of the call.
        if let Some(p) = unsafe { parse_fast(start, start + frame.len()) } {
            fast += 1;
            if Parsed::Ip(p) != parse_slice(&frame) {
                let msg = format!(
                    "frame #{n}: parse_fast says {p:?}, parse says {:?}\n  {}",
                    parse_slice(&frame),
                    hex(&frame)
                );
                fail(msg, &mut failures);
            }
        }
        for v in variants.iter_mut() {
            let model = Model::new(&v.set, v.mode);
            let dry = v.mode == Mode::DryRun;
            for (ifindex, slot) in [(eth0, 1u32), (eth1, 2), (lo, 0)] {
                let d = model.decide(&frame, slot);
                // Nor is the port table's short answer (`decide_quick`).
                let (quick, walked) = model.decide_steps(&frame, slot);
                if let Some(q) = quick {
                    quick_n += 1;
                    if q != walked {
                        fail(
                            format!(
                                "frame #{n} on slot {slot} ({}): decide_quick says {q:?}, decide_walk says {walked:?}\n  {}",
                                v.name,
                                hex(&frame)
                            ),
                            &mut failures,
                        );
                    }
                }
                // A reply that needs a tracked flow: untracked with an empty table, or what
                // the flow put in for it says.
                let mut verdict = match d.verdict {
                    Verdict::Tracked(_) => Verdict::Drop(DropReason::Untracked),
                    v => v,
                };
                let mut put = None;
                if let Verdict::Tracked(c) = d.verdict
                    && flow_rng.chance(1, 2)
                    && let Some((key, flow, seg, proto)) = tracked_flow(&frame, c, &v.set, &mut flow_rng)
                {
                    v.loaded.flows().unwrap().insert(key, flow, 0).unwrap();
                    let mut host = flow;
                    let r = flow_reply(
                        &mut host,
                        &v.set.policy,
                        proto,
                        seg.as_ref(),
                        ps_agent::clock::monotonic_ns(),
                        true,
                    );
                    verdict = match r {
                        Reply::Pass | Reply::Close => Verdict::Rule(c),
                        Reply::Expired => Verdict::Drop(DropReason::Untracked),
                        Reply::Drop(r) => Verdict::Drop(r),
                    };
                    *flows.entry(format!("{r:?}")).or_insert(0u64) += 1;
                    put = Some((key, host, r));
                }
                *verdicts.entry(label(verdict)).or_insert(0) += 1;
                let ctx = |what: &str| {
                    format!(
                        "frame #{n} ({family:?}, {} bytes) on slot {slot} ({}): {what}; host verdict {:?}\n  {}",
                        frame.len(),
                        v.name,
                        d.verdict,
                        hex(&frame)
                    )
                };
                let result = v.loaded.test_run(&frame, ifindex, 1);
                runs += 1;
                if frame.len() < 14 {
                    // The kernel refuses a test run without a whole Ethernet header.
                    if result.is_ok() || verdict != Verdict::Drop(DropReason::Truncated) {
                        fail(ctx(&format!("short frame: kernel {result:?}")), &mut failures);
                    }
                    continue;
                }
                let action = match result {
                    Ok((a, _)) => a,
                    Err(e) => {
                        fail(ctx(&format!("test run failed: {e}")), &mut failures);
                        continue;
                    }
                };
                let want_action = if matches!(verdict, Verdict::Drop(_)) && !dry { XDP_DROP } else { XDP_PASS };
                if action != want_action {
                    fail(ctx(&format!("kernel action {action}, host action {want_action}")), &mut failures);
                }
                let bucket: Bucket = match verdict {
                    Verdict::Rule(c) | Verdict::Tracked(c) => (true, rule_counter_index(slot, d.rules_cap, c)),
                    Verdict::Pass(r) => (false, stat_pass_index(slot, r)),
                    Verdict::Drop(r) => (false, stat_drop_index(slot, r, dry)),
                };
                if let Some((key, host, r)) = put {
                    let kernel = v.loaded.flows().unwrap().get(&key, 0).ok();
                    let gone = matches!(r, Reply::Close | Reply::Expired);
                    let same = match kernel {
                        Some(k) => !gone && FlowState { last_ns: 0, ..k } == FlowState { last_ns: 0, ..host },
                        None => gone,
                    };
                    if !same {
                        fail(ctx(&format!("flow after {r:?}: kernel {kernel:?}, host {host:?}")), &mut failures);
                    }
                    let _ = v.loaded.flows().unwrap().remove(&key);
                }
                let want = v.tally.entry(bucket).or_default();
                want.packets += 1;
                want.bytes += frame.len() as u64;
                let want = *want;
                let got = read(&v.loaded, bucket);
                if got != want {
                    fail(ctx(&format!("bucket {bucket:?}: kernel {got:?}, host tally {want:?}")), &mut failures);
                    // Resynchronise, so one miscount is reported once.
                    v.tally.insert(bucket, got);
                }
            }
        }
        if (n + 1) % BATCH == 0 || n + 1 == frames {
            for v in variants.iter_mut() {
                for m in full_check(v, &[0, 1, 2]) {
                    fail(format!("after frame #{n}: {m}"), &mut failures);
                }
            }
        }
    }
    // Slots no interface uses stay untouched.
    let unused: Vec<u32> = (3..MAX_IFACES).collect();
    for v in &variants {
        for m in full_check(v, &unused) {
            fail(format!("at the end: {m}"), &mut failures);
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    Report { frames, runs, failures, failed, families, verdicts, secs, fast, quick: quick_n, flows }
}

#[test]
fn kernel_agrees_with_host_classifier() {
    let frames = env_or("PS_DIFF_FRAMES", DEFAULT_FRAMES);
    let seed = env_or("PS_DIFF_SEED", DEFAULT_SEED);
    let lab = Lab::new("p7d");
    let r = in_netns(&lab.ps, move || run(frames, seed));
    println!(
        "differential: {} frames (seed {seed:#x}), {} test runs in {:.1} s ({:.1} µs per run)",
        r.frames,
        r.runs,
        r.secs,
        r.secs * 1e6 / r.runs as f64
    );
    println!("  families: {:?}", r.families);
    println!("  verdicts: {:?}", r.verdicts);
    println!("  tracked replies given a flow: {:?}", r.flows);
    println!("  fast path taken by {} of {} frames (the rest: the general parser)", r.fast, r.frames);
    println!("  decide_quick answered {} of {} (frame, variant, interface) cases", r.quick, r.frames * 12);
    assert!(
        r.failed == 0,
        "{} mismatch(es) between the kernel and the host classifier (first {}):\n{}",
        r.failed,
        r.failures.len(),
        r.failures.join("\n")
    );
    // The generator must reach every outcome, or agreement proves little.
    let seen: BTreeSet<&str> = r.verdicts.keys().map(String::as_str).collect();
    let mut want: Vec<String> = vec!["rule".into()];
    want.extend(ps_common::reason::PassReason::ALL.iter().map(|p| format!("pass:{}", p.as_str())));
    want.extend(DropReason::ALL.iter().filter(|d| **d != DropReason::Source).map(|d| format!("drop:{}", d.as_str())));
    let missing: Vec<&String> = want.iter().filter(|w| !seen.contains(w.as_str())).collect();
    assert!(missing.is_empty(), "verdicts the generated frames never reached: {missing:?}");
    assert!(r.families.len() >= 11, "every frame family generated: {:?}", r.families);
    for outcome in ["Pass", "Expired", "Drop(OutOfWindow)", "Drop(ReplyCheck)"] {
        assert!(r.flows.contains_key(outcome), "no tracked reply with a flow came out {outcome}: {:?}", r.flows);
    }
    assert!(r.fast > 0 && r.fast < r.frames, "both parsers exercised: fast path {} of {}", r.fast, r.frames);
    assert!(
        r.quick > 0 && r.quick < r.fast * 12,
        "both decide steps exercised: quick {} of {}",
        r.quick,
        r.frames * 12
    );
}
