//! `cargo xtask demo`: a lab of namespaces, ps-agent enforcing the PS 8.1.2 matrix in the
//! "ps" namespace, allowed and forbidden traffic from the peers, live counters.

use std::{
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use ps_tests::*;

/// A named probe and the verdict it should get.
type NamedProbe = (&'static str, Box<dyn Fn() -> Probe + Send + Sync>, Probe);

fn main() {
    let seconds: u64 =
        std::env::args().skip_while(|a| a != "--seconds").nth(1).and_then(|s| s.parse().ok()).unwrap_or(8);
    let lab = Lab::new("demo");
    println!("== lab: namespace {} (eth0 198.18.0.1 = management, eth1 198.18.1.1)", lab.ps);
    println!("         peers {} (198.18.0.2, behind eth0) and {} (198.18.1.2, behind eth1)", lab.a, lab.b);
    let (ps, a, b) = (lab.ps.clone(), lab.a.clone(), lab.b.clone());
    let agent = Agent::start(&lab.ps, "demo", &[]);
    println!("== ps-agent is enforcing the shipped Presence Services 8.1.2 matrix on eth0 and eth1\n");
    let _https = Listener::tcp(&lab.ps, 443);
    let _xmpp = Listener::tcp(&lab.ps, 5222);
    let _sm = Listener::tcp(&lab.a, 5062);

    let probes: Vec<NamedProbe> = vec![
        (
            "Equinox client -> PS tcp/443 (ps-01)",
            Box::new({
                let ns = a.clone();
                move || tcp_probe(&ns, PS_ETH0_V4, 443, Duration::from_secs(2))
            }),
            Probe::Open,
        ),
        (
            "Endpoint -> PS tcp/5222 XMPP (ps-10), IPv6",
            Box::new({
                let ns = a.clone();
                move || tcp_probe(&ns, PS_ETH0_V6, 5222, Duration::from_secs(2))
            }),
            Probe::Open,
        ),
        (
            "PS -> Session Manager tcp/5062 (ps-04, reply admitted)",
            Box::new({
                let ns = ps.clone();
                move || tcp_probe(&ns, A_V4, 5062, Duration::from_secs(2))
            }),
            Probe::Open,
        ),
        (
            "SDK -> PS tcp/7000 on eth1 (management-only row)",
            Box::new({
                let ns = b.clone();
                move || tcp_probe(&ns, PS_ETH1_V4, 7000, Duration::from_millis(500))
            }),
            Probe::TimedOut,
        ),
        (
            "anyone -> PS tcp/8080 (not in the matrix)",
            Box::new({
                let ns = b.clone();
                move || tcp_probe(&ns, PS_ETH1_V4, 8080, Duration::from_millis(500))
            }),
            Probe::TimedOut,
        ),
        (
            "anyone -> PS udp/161 (not in the matrix)",
            Box::new({
                let ns = a.clone();
                move || udp_probe(&ns, 0, PS_ETH0_V4, 161, Duration::from_millis(300))
            }),
            Probe::TimedOut,
        ),
    ];
    println!("== one probe each:");
    let mut ok = true;
    for (name, probe, want) in &probes {
        let got = probe();
        let verdict = if got == Probe::TimedOut { "DROPPED" } else { "passed " };
        let mark = if got == *want { "ok" } else { "UNEXPECTED" };
        ok &= got == *want;
        println!("   {verdict}  {name:<58} [{mark}]");
    }

    println!("\n== {seconds} s of mixed traffic; live counters (ps-agent stats):");
    let stop = Arc::new(AtomicBool::new(false));
    let probes = Arc::new(probes);
    let traffic = {
        let (stop, probes) = (stop.clone(), probes.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for (_, p, _) in probes.iter() {
                    p();
                }
            }
        })
    };
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_secs(2));
        let out =
            Command::new(agent_bin()).arg("--state-dir").arg(&agent.state_dir).arg("stats").output().expect("stats");
        println!(
            "\n--- t = {:>2} s ---------------------------------------------------------------",
            t0.elapsed().as_secs()
        );
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = traffic.join();
    drop(agent);
    drop(lab);
    println!("\n== agent stopped (detached, maps unpinned), lab removed");
    if !ok {
        eprintln!("some probes did not get the expected verdict");
        std::process::exit(1);
    }
}
