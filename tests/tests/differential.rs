//! Differential test: the loaded XDP program (BPF_PROG_TEST_RUN) against the host
//! classifier (`ps_agent::model::Model`, the same ps-common code over the compiled rule
//! set in memory), frame by frame, on generated frames (`ps_tests::framegen`: valid,
//! edge-case and malformed).
//!
//! For every frame, on eth0, eth1 (real ifindexes of the lab namespace) and an
//! unconfigured interface (lo), in four variants — enforce and dry-run, stateless and
//! stateful reply admission (the flow table stays empty, so a reply the host model calls
//! `Tracked` must come out `untracked`) — it checks:
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
    compile::{HostFacts, RuleSet, compile},
    config::{Config, Mode, ReplyTracking},
    load::{LoadOptions, Loaded},
    model::Model,
};
use ps_common::{
    classify::Verdict,
    layout::{
        Counter, L4, MAX_IFACES, STAT_LOG_SUPPRESSED, STAT_STRIDE, rule_counter_index, stat_drop_index, stat_pass_index,
    },
    names,
    observe::{STAT_EVENT_LOST, STAT_EVENT_SENT},
    parse::{Parsed, parse_fast, parse_slice},
    reason::DropReason,
};
use ps_tests::{
    Lab,
    framegen::{FrameGen, Ports},
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
}

fn run(frames: usize, seed: u64) -> Report {
    let eth0 = ps_agent::load::ifindex("eth0").unwrap();
    let eth1 = ps_agent::load::ifindex("eth1").unwrap();
    let lo = ps_agent::load::ifindex("lo").unwrap();
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
    let (mut failures, mut failed, mut runs, mut fast, mut quick_n) = (Vec::new(), 0usize, 0u64, 0usize, 0usize);
    let mut families = BTreeMap::new();
    let mut verdicts = BTreeMap::new();
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
                // The flow table is empty: a reply that needs a tracked flow is untracked.
                let verdict = match d.verdict {
                    Verdict::Tracked(_) => Verdict::Drop(DropReason::Untracked),
                    v => v,
                };
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
    Report { frames, runs, failures, failed, families, verdicts, secs, fast, quick: quick_n }
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
    assert!(r.fast > 0 && r.fast < r.frames, "both parsers exercised: fast path {} of {}", r.fast, r.frames);
    assert!(
        r.quick > 0 && r.quick < r.fast * 12,
        "both decide steps exercised: quick {} of {}",
        r.quick,
        r.frames * 12
    );
}
