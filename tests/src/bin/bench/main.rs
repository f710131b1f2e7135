//! `cargo xtask bench` (`ps-bench`): measures `ps_xdp` against reference programs,
//! xdp-filter and netfilter (per-packet cost, scale, control plane, memory, floods), writes
//! every number to `tests/bench/results.json`, and generates BENCHMARKS.md (tables) and the
//! plots from that file. docs/dev/benchmarks.md says what is measured and how to read it.
//!
//! - `measure`: the per-packet part, control plane, memory;
//! - `flood`: the floods, delivered like a NIC delivers frames;
//! - `results`: the results file and the summaries of its numbers;
//! - `report` and `plot`: BENCHMARKS.md and the PNGs, from a results file only.
//!
//! Modes: (none) measure everything and write; `--no-write` print only; `--quick` the
//! matrix's per-packet cost against the floor, printed; `--flood-only` the floods, printed;
//! `--from-json` regenerate BENCHMARKS.md and the plots from the results file, measuring
//! nothing.

mod flood;
mod measure;
mod plot;
mod report;
mod results;

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use ps_tests::Lab;
use results::{Program, Results};

/// The command line.
struct Args {
    rounds: usize,
    repeat: u32,
    flood_rounds: usize,
    flood_frames: u32,
    quick: bool,
    flood_only: bool,
    from_json: bool,
    write: bool,
    /// The results file to write, or with `--from-json` to read.
    results: PathBuf,
}

impl Args {
    fn parse() -> Self {
        let args: Vec<String> = std::env::args().collect();
        let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
        let flag = |name: &str| args.iter().any(|a| a == name);
        let num = |name: &str, default: u64| -> u64 {
            arg(name).map_or(default, |v| v.parse().unwrap_or_else(|_| panic!("{name} takes a number, not `{v}`")))
        };
        let quick = flag("--quick");
        Self {
            rounds: num("--rounds", 11) as usize,
            repeat: num("--repeat", 1_000_000) as u32,
            flood_rounds: if quick { 0 } else { num("--flood-rounds", 5) as usize },
            flood_frames: num("--flood-frames", 2_000_000) as u32,
            quick,
            flood_only: flag("--flood-only"),
            from_json: flag("--from-json"),
            write: !quick && !flag("--flood-only") && !flag("--no-write"),
            results: arg("--results").map_or_else(|| root().join("tests/bench/results.json"), PathBuf::from),
        }
    }
}

/// The repository root (BENCHMARKS.md and the plots' paths are relative to it).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn main() {
    let args = Args::parse();
    if args.from_json {
        publish(&Results::read(&args.results), args.write);
        return;
    }
    // Two queues per veth: in the flood test, the generator's CPU and the legitimate flow's
    // CPU each get their own receive queue (see `flood::legit_flow`).
    let lab = Lab::with_queues("p7b", 2);
    let mut r = Results {
        run: measure::run_info(args.rounds, args.repeat, args.flood_rounds, args.flood_frames),
        ..Results::default()
    };
    if args.flood_only {
        (r.floods, r.flows, r.threaded) =
            flood::flood(&lab, &measure::shipped_stateless(), args.flood_rounds, args.flood_frames);
        println!("{}", report::markdown(&r));
        return;
    }
    let pp = measure::per_packet(&lab, args.rounds, args.repeat, args.quick);
    (r.per_packet, r.control, r.verified, r.rss, r.xdp_filter) =
        (pp.cases, pp.control, pp.verified, pp.rss, pp.xdp_filter);
    print_cases(&r);
    if args.quick {
        // PS_BENCH_HOLD=<s>: keep the programs loaded a while (for `bpftool prog dump`).
        if let Some(s) = std::env::var("PS_BENCH_HOLD").ok().and_then(|v| v.parse().ok()) {
            std::thread::sleep(Duration::from_secs(s));
        }
        return;
    }
    if args.flood_rounds > 0 {
        let shipped = measure::shipped_stateless();
        (r.floods, r.flows, r.threaded) = flood::flood(&lab, &shipped, args.flood_rounds, args.flood_frames);
        // The flood at 30, 1,000 and 10,000 rules (the scale series' configs), against the
        // exported netfilter rule sets.
        let sets = measure::scale_sets(&measure::SCALE_SIZES[..3], &shipped);
        r.flood_scale = flood::flood_scale(&lab, &sets, args.flood_frames);
    }
    r.run.date = ps_agent::clock::fmt_unix(ps_agent::clock::unix_now());
    if args.write {
        r.write(&args.results);
        eprintln!("wrote {}", args.results.display());
    }
    publish(&r, args.write);
}

/// Every per-packet case on the console: median, min, kernel ns; and ps-agent over the floor.
fn print_cases(r: &Results) {
    println!(
        "{:<24} {:<20} {:<28} {:>9} {:>9} {:>9}",
        "program", "policy", "frame", "median ns", "min ns", "kernel ns"
    );
    for c in &r.per_packet {
        let min = c.cpu_ns.iter().copied().fold(f64::INFINITY, f64::min);
        println!(
            "{:<24} {:<20} {:<28} {:>9.2} {:>9.2} {:>9.1}",
            format!("{:?}", c.program),
            c.policy.label(),
            c.frame.label(),
            c.median_ns(),
            min,
            results::median(&c.kernel_ns)
        );
    }
    for f in results::Frame::ALL {
        let m = results::Policy::Matrix;
        if let (Some(p), Some(fl)) = (r.ns(&Program::PsAgent, m, f), r.ns(&Program::Floor, m, f)) {
            println!("{:<28} {:>6.1} ns over the floor, {:.2}x", f.label(), p - fl, p / fl);
        }
    }
}

/// BENCHMARKS.md and the plots from `r`: written (with `write`), and the page printed.
fn publish(r: &Results, write: bool) {
    let md = report::markdown(r);
    if write {
        let root = root();
        let _ = fs::create_dir_all(root.join("tests/bench"));
        let mut written = vec!["BENCHMARKS.md"];
        for (path, chart) in [(report::COST_PLOT, plot::cost_chart(r)), (report::FLOOD_PLOT, plot::flood_chart(r))] {
            if !chart.series.is_empty() {
                let png = plot::render_png(&chart);
                fs::write(root.join(path), png).unwrap_or_else(|e| panic!("failed to write {path}: {e}"));
                written.push(path);
            }
        }
        fs::write(root.join("BENCHMARKS.md"), &md).unwrap_or_else(|e| panic!("failed to write BENCHMARKS.md: {e}"));
        eprintln!("wrote {}", written.join(", "));
    }
    println!("\n{md}");
}
