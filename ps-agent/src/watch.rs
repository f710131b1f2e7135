//! `ps-agent stats --watch`: a live view of the counters, refreshed every interval.
//!
//! [`render`] is pure (report, previous report, elapsed seconds → text at most `width`
//! columns), so layout, sorting and rates are unit-tested. [`run`] is the loop: on a
//! terminal it switches to the alternate screen and puts stdin in non-canonical mode
//! (no echo, no line buffering, Ctrl-C read as a key) so that `q` or Ctrl-C quit at once,
//! and it restores the terminal on every way out (q, Ctrl-C, SIGINT/SIGTERM/SIGHUP, an
//! error). Without a terminal it prints one frame after another, separated by `---`,
//! and still quits on `q` read from stdin or on a signal. Colour only when stdout is a
//! terminal and `NO_COLOR` is not set; plain ASCII otherwise, so it works over any SSH.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{IsTerminal as _, Read as _, Write as _},
    os::fd::AsRawFd as _,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use crate::observe::{Pb, StatsReport};

/// `1234` → `1234`, `12345` → `12.3K`, ... (SI, three significant digits).
pub fn human(n: u64) -> String {
    human_f(n as f64)
}

/// As [`human`], for rates.
pub fn human_f(v: f64) -> String {
    const U: [&str; 5] = ["", "K", "M", "G", "T"];
    let mut v = v.max(0.0);
    let mut i = 0;
    while (v >= 10_000.0 || (i > 0 && v >= 1000.0)) && i < U.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        if v.fract() == 0.0 || v >= 100.0 { format!("{v:.0}") } else { format!("{v:.1}") }
    } else {
        format!("{v:.1}{}", U[i])
    }
}

/// Cut `s` to `width` characters (marking the cut with `~`).
pub fn clip(s: &mut String, width: usize) {
    if s.chars().count() > width {
        let keep: String = s.chars().take(width.saturating_sub(1)).collect();
        *s = keep + "~";
    }
}

fn fit(s: &str, width: usize) -> String {
    let mut s = s.to_string();
    clip(&mut s, width);
    s
}

/// How to draw.
#[derive(Clone, Copy, Debug)]
pub struct View {
    /// Columns.
    pub width: usize,
    /// Rules shown at most (the busiest).
    pub max_rules: usize,
    /// ANSI colour.
    pub color: bool,
    /// Refresh interval, seconds (shown in the header).
    pub interval: f64,
    /// Wall clock now, seconds since the epoch (shown in the header).
    pub now_unix: u64,
    /// Groups of the dry-run report shown at most ("what enforcing would cut").
    pub max_cut: usize,
}

impl Default for View {
    fn default() -> Self {
        Self { width: 80, max_rules: 20, color: false, interval: 1.0, now_unix: 0, max_cut: 5 }
    }
}

fn paint(on: bool, code: &str, s: String) -> String {
    if on && !s.trim().is_empty() { format!("\x1b[{code}m{s}\x1b[0m") } else { s }
}

/// Per-second rate of `now - before` over `secs`.
fn rate(now: u64, before: u64, secs: f64) -> f64 {
    now.saturating_sub(before) as f64 / secs.max(0.001)
}

/// A row of the view with its rates.
struct Rated {
    pb: Pb,
    pps: Option<f64>,
    bps: Option<f64>,
}

fn rated(pb: Pb, prev: Option<Pb>, secs: f64) -> Rated {
    Rated {
        pb,
        pps: prev.map(|p| rate(pb.packets, p.packets, secs)),
        bps: prev.map(|p| rate(pb.bytes, p.bytes, secs) * 8.0),
    }
}

fn r_or_dash(v: Option<f64>) -> String {
    v.map_or("-".into(), human_f)
}

/// The live view (pure). `prev` is the previous report and the seconds since it.
pub fn render(r: &StatsReport, prev: Option<(&StatsReport, f64)>, v: &View) -> String {
    render_with_cut(r, prev, None, v)
}

/// [`render`], plus the busiest groups of the dry-run report (`ps-agent report`): what
/// enforcing would cut now.
pub fn render_with_cut(
    r: &StatsReport,
    prev: Option<(&StatsReport, f64)>,
    cut: Option<&crate::report::DryRunReport>,
    v: &View,
) -> String {
    let w = v.width.max(40);
    let c = v.color;
    let mut lines: Vec<String> = Vec::new();
    let secs = prev.map_or(1.0, |p| p.1);
    let clock = crate::pinned::fmt_unix(v.now_unix);
    let clock = clock.get(11..19).unwrap_or("");
    lines.push(paint(
        c,
        "1",
        format!("ps-agent  {}  replies {}  pid {}  {}  {clock}", r.mode, r.reply_tracking, r.pid, r.product),
    ));
    let up = v.now_unix.saturating_sub(r.since_unix);
    lines.push(format!(
        "counting since {} ({}h{:02}m)  every {:.1}s  q quits",
        crate::pinned::fmt_unix(r.since_unix),
        up / 3600,
        up / 60 % 60,
        v.interval
    ));
    lines.push(String::new());

    // Interfaces.
    lines.push(paint(
        c,
        "1;7",
        format!(
            "{:<9} {:<6} {:>8} {:>7} {:>7} {:>7} {:>8} {:>8} {:>8}",
            "IFACE", "XDP", "PACKETS", "PPS", "BYTES", "BPS", "BY RULE", "DROPPED", "WOULD"
        ),
    ));
    let mut ifs: Vec<(&String, Rated, u64, u64, u64)> = r
        .per_interface
        .iter()
        .map(|(name, f)| {
            let p = prev.and_then(|(p, _)| p.per_interface.get(name));
            let pb = Pb { packets: f.packets, bytes: f.bytes };
            (
                name,
                rated(pb, p.map(|p| Pb { packets: p.packets, bytes: p.bytes }), secs),
                f.by_rule.packets,
                f.dropped.packets,
                f.would_drop.packets,
            )
        })
        .collect();
    ifs.sort_by(|a, b| busiest(&b.1, &a.1).then_with(|| a.0.cmp(b.0)));
    for (name, x, by_rule, dropped, would) in &ifs {
        let mode = r.interfaces.iter().find(|a| &a.name == *name).map_or("", |a| a.xdp_mode.as_str());
        let mgmt = if **name == r.management_interface { "*" } else { "" };
        lines.push(format!(
            "{:<9} {:<6} {:>8} {:>7} {:>7} {:>7} {:>8} {} {}",
            fit(&format!("{name}{mgmt}"), 9),
            fit(mode, 6),
            human(x.pb.packets),
            r_or_dash(x.pps),
            human(x.pb.bytes),
            r_or_dash(x.bps),
            human(*by_rule),
            paint(c && *dropped > 0, "31", format!("{:>8}", human(*dropped))),
            paint(c && *would > 0, "33", format!("{:>8}", human(*would))),
        ));
    }
    lines.push(String::new());

    // Rules, busiest first.
    lines.push(paint(
        c,
        "1;7",
        format!(
            "{:<20} {:<5} {:<11} {:<7} {:>8} {:>6} {:>7} {:>7}",
            "RULE", "PROTO", "PORTS", "DIR", "PACKETS", "PPS", "BYTES", "BPS"
        ),
    ));
    let before: BTreeMap<(&str, &str, &str), Pb> = prev
        .map(|(p, _)| {
            p.rules
                .iter()
                .map(|x| {
                    ((x.id.as_str(), x.proto.as_str(), x.direction.as_str()), Pb { packets: x.packets, bytes: x.bytes })
                })
                .collect()
        })
        .unwrap_or_default();
    let mut rules: Vec<(&crate::observe::RuleReport, Rated)> = r
        .rules
        .iter()
        .map(|x| {
            let p = prev.map(|_| {
                before.get(&(x.id.as_str(), x.proto.as_str(), x.direction.as_str())).copied().unwrap_or_default()
            });
            (x, rated(Pb { packets: x.packets, bytes: x.bytes }, p, secs))
        })
        .collect();
    rules.sort_by(|a, b| busiest(&b.1, &a.1).then_with(|| a.0.id.cmp(&b.0.id)));
    let active = rules.iter().filter(|(_, x)| x.pb.packets > 0).count();
    for (x, rt) in rules.iter().filter(|(_, x)| x.pb.packets > 0).take(v.max_rules) {
        lines.push(format!(
            "{:<20} {:<5} {:<11} {:<7} {:>8} {:>6} {:>7} {:>7}",
            fit(&x.id, 20),
            fit(&x.proto, 5),
            fit(&x.ports, 11),
            fit(&x.direction, 7),
            human(rt.pb.packets),
            r_or_dash(rt.pps),
            human(rt.pb.bytes),
            r_or_dash(rt.bps),
        ));
    }
    let hidden = active.saturating_sub(v.max_rules);
    let idle = rules.len() - active;
    if hidden > 0 || idle > 0 {
        lines.push(format!("  ({hidden} more active, {idle} idle rule(s) not shown)"));
    }
    lines.push(String::new());

    // Drops and would-drops by reason, busiest first.
    lines.push(paint(c, "1;7", format!("{:<32} {:>10} {:>8}", "DROPS BY REASON", "PACKETS", "PPS")));
    let mut drops: Vec<(String, u64, Option<f64>, &str)> = Vec::new();
    for (kind, now, then, color) in [
        ("dropped", &r.drops, prev.map(|(p, _)| &p.drops), "31"),
        ("would drop", &r.would_drop, prev.map(|(p, _)| &p.would_drop), "33"),
    ] {
        for (reason, n) in now.iter().filter(|(_, n)| **n > 0) {
            let pps = then.map(|t| rate(*n, t.get(reason).copied().unwrap_or(0), secs));
            drops.push((format!("{kind} {reason}"), *n, pps, color));
        }
    }
    drops.sort_by(|a, b| {
        b.2.unwrap_or(0.0).total_cmp(&a.2.unwrap_or(0.0)).then(b.1.cmp(&a.1)).then_with(|| a.0.cmp(&b.0))
    });
    if drops.is_empty() {
        lines.push("  none".into());
    }
    for (what, n, pps, color) in &drops {
        lines.push(paint(c, color, format!("{:<32} {:>10} {:>8}", fit(what, 32), human(*n), r_or_dash(*pps))));
    }
    lines.push(String::new());
    if let Some(cut) = cut.filter(|c| !c.groups.is_empty()) {
        lines.push(paint(
            c,
            "1;7",
            format!(
                "{:<26} {:>8} {:>7}  {}",
                "ENFORCING WOULD CUT", "PACKETS", "SOURCES", "NEAREST ROW (ps-agent report)"
            ),
        ));
        for g in cut.groups.iter().take(v.max_cut) {
            let near = g.nearest.as_ref().map_or("-".to_string(), |n| format!("{} ({})", n.rows.join(","), n.kind));
            lines.push(format!(
                "{:<26} {:>8} {:>7}  {near}",
                fit(&format!("{}/{} on {}", g.proto, g.dport, g.iface), 26),
                human(g.packets),
                g.sources.len()
            ));
        }
        if cut.groups.len() > v.max_cut {
            lines.push(format!("  ({} more: ps-agent report)", cut.groups.len() - v.max_cut));
        }
        lines.push(String::new());
    }
    let t = &r.totals;
    lines.push(format!(
        "total {} = {} by rule + {} other + {} dropped + {} would drop",
        human(t.packets),
        human(t.by_rule),
        human(t.passed_other),
        human(t.dropped),
        human(t.would_drop)
    ));
    let f = &r.flows;
    if r.reply_tracking == "stateful" {
        lines.push(format!(
            "flows {} tracked of {} (created {}, seeded {}, expired {}, evicted {})",
            human(f.tracked),
            human(f.capacity),
            human(f.created),
            human(f.seeded),
            human(f.expired),
            human(f.evicted)
        ));
    }
    lines.push(format!(
        "events: {} suppressed by the rate limit, {} lost; egress {} by rule, {} unmatched",
        human(r.events.suppressed),
        human(r.events.lost),
        human(r.egress.by_rule),
        human(r.egress.unmatched.values().sum::<u64>() + r.egress.dropped.values().sum::<u64>())
    ));
    let mut o = String::new();
    for mut l in lines {
        if !c {
            clip(&mut l, w);
        }
        let _ = writeln!(o, "{}", l.trim_end());
    }
    o
}

/// Busiest first: by packet rate when known, then by packets.
fn busiest(a: &Rated, b: &Rated) -> std::cmp::Ordering {
    a.pps.unwrap_or(0.0).total_cmp(&b.pps.unwrap_or(0.0)).then(a.pb.packets.cmp(&b.pb.packets))
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Terminal state to restore.
struct Term {
    saved: Option<libc::termios>,
    screen: bool,
}

impl Term {
    fn enter(stdin_tty: bool, stdout_tty: bool) -> Self {
        let mut saved = None;
        if stdin_tty {
            // SAFETY: termios calls on fd 0 with a zeroed struct they fill.
            unsafe {
                let mut t: libc::termios = std::mem::zeroed();
                if libc::tcgetattr(0, &mut t) == 0 {
                    saved = Some(t);
                    let mut raw = t;
                    raw.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG);
                    raw.c_cc[libc::VMIN] = 0;
                    raw.c_cc[libc::VTIME] = 0;
                    libc::tcsetattr(0, libc::TCSANOW, &raw);
                }
            }
        }
        if stdout_tty {
            // Alternate screen, cursor hidden.
            print!("\x1b[?1049h\x1b[?25l");
            let _ = std::io::stdout().flush();
        }
        Self { saved, screen: stdout_tty }
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        if self.screen {
            print!("\x1b[?25h\x1b[?1049l");
            let _ = std::io::stdout().flush();
        }
        if let Some(t) = self.saved {
            // SAFETY: restores the attributes read in `enter`.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
        }
    }
}

/// Wait up to `d` for a quit key on stdin (or a signal). `stdin_open` is cleared at EOF.
fn wait_key(d: Duration, stdin_open: &mut bool) -> bool {
    let until = Instant::now() + d;
    loop {
        if STOP.load(Ordering::Relaxed) {
            return true;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let slice = left.min(Duration::from_millis(100));
        if !*stdin_open {
            std::thread::sleep(slice);
            continue;
        }
        let mut fds = libc::pollfd { fd: std::io::stdin().as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut fds, 1, slice.as_millis() as i32) };
        if n > 0 {
            let mut buf = [0u8; 64];
            match std::io::stdin().lock().read(&mut buf) {
                Ok(0) | Err(_) => *stdin_open = false,
                Ok(k) => {
                    if buf[..k].iter().any(|&b| matches!(b, b'q' | b'Q' | 3 | 4)) {
                        return true;
                    }
                }
            }
        }
    }
}

/// Why the watch loop stopped early.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// A snapshot failed.
    #[error("{0}")]
    Snapshot(String),
    /// Writing failed.
    #[error("failed to write the view: {0}")]
    Io(#[from] std::io::Error),
    /// Bad interval.
    #[error("--interval must be a positive number of seconds, not {0}")]
    Interval(f64),
}

/// Refresh `snapshot` every `interval` seconds until q / Ctrl-C / a signal. `json`
/// prints one JSON object per line instead of the view.
/// `snapshot` also returns the dry-run report, when there is one to show.
pub fn run<E: std::fmt::Display>(
    mut snapshot: impl FnMut() -> Result<(StatsReport, Option<crate::report::DryRunReport>), E>,
    interval: f64,
    json: bool,
) -> Result<(), WatchError> {
    if !(interval > 0.0 && interval.is_finite()) {
        return Err(WatchError::Interval(interval));
    }
    let stdin_tty = std::io::stdin().is_terminal();
    let stdout_tty = std::io::stdout().is_terminal() && !json;
    let color = stdout_tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    STOP.store(false, Ordering::Relaxed);
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    let term = Term::enter(stdin_tty, stdout_tty);
    let mut stdin_open = true;
    let mut prev: Option<(StatsReport, Instant)> = None;
    let result = loop {
        let (r, cut) = match snapshot() {
            Ok(x) => x,
            Err(e) => break Err(WatchError::Snapshot(e.to_string())),
        };
        let now = Instant::now();
        let mut out = std::io::stdout().lock();
        if json {
            writeln!(out, "{}", serde_json::to_string(&r).expect("serializable"))?;
        } else {
            let (cols, rows) = term_size().unwrap_or((80, 24));
            let mut view = View {
                width: if stdout_tty { cols.max(40) } else { 80 },
                max_rules: 20,
                color,
                interval,
                now_unix: crate::pinned::unix_now_ns() / 1_000_000_000,
                max_cut: 5,
            };
            let elapsed = prev.as_ref().map(|(p, t)| (p, now.duration_since(*t).as_secs_f64()));
            let mut text = render_with_cut(&r, elapsed, cut.as_ref(), &view);
            // On a short terminal, fewer rules rather than a scrolled-off header.
            let over = text.lines().count().saturating_sub(rows.saturating_sub(1));
            if stdout_tty && over > 0 && view.max_rules > 3 {
                view.max_rules = view.max_rules.saturating_sub(over).max(3);
                text = render_with_cut(&r, elapsed, cut.as_ref(), &view);
            }
            if stdout_tty {
                write!(out, "\x1b[H\x1b[2J{}", text.replace('\n', "\r\n"))?;
            } else {
                writeln!(out, "{text}---")?;
            }
        }
        out.flush()?;
        drop(out);
        prev = Some((r, now));
        if wait_key(Duration::from_secs_f64(interval), &mut stdin_open) {
            break Ok(());
        }
    };
    drop(term);
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: back to the default disposition.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    result
}

/// Columns and rows of the terminal on stdout.
fn term_size() -> Option<(usize, usize)> {
    // SAFETY: TIOCGWINSZ fills the zeroed winsize.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        (libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) == 0 && ws.ws_col > 0)
            .then_some((ws.ws_col as usize, ws.ws_row as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::{IfaceReport, RuleReport};

    fn rule(id: &str, packets: u64, bytes: u64) -> RuleReport {
        RuleReport {
            id: id.into(),
            rows: vec![id.into()],
            origin: "matrix".into(),
            proto: "tcp".into(),
            ports: "7001-7199".into(),
            direction: "inbound".into(),
            interfaces: None,
            system: None,
            description: "a very long description that must never reach the view".into(),
            packets,
            bytes,
            per_interface: BTreeMap::new(),
            egress_packets: 0,
            egress_bytes: 0,
        }
    }

    fn report(a: u64, b: u64, drops: u64) -> StatsReport {
        let mut r: StatsReport = serde_json::from_value(serde_json::json!({
            "mode": "dry-run", "product": "Avaya Aura Presence Services 8.1.2", "fingerprint": "f", "pid": 42,
            "since_unix": 1_700_000_000u64, "interfaces": [
                {"name": "eth0", "ifindex": 2, "slot": 1, "xdp_mode": "native"},
                {"name": "eth1", "ifindex": 3, "slot": 2, "xdp_mode": "skb"}],
            "management_interface": "eth0", "rules": [], "drops": {}, "would_drop": {}, "passed": {},
            "log_suppressed": 0, "totals": {"packets": 0, "by_rule": 0, "passed_other": 0, "dropped": 0, "would_drop": 0},
            "reply_tracking": "stateful",
            "flows": {"tracked": 3, "capacity": 65536, "created": 5, "seeded": 0, "expired": 1, "insert_failed": 0, "evicted": 1},
            "egress": {"by_rule": 0, "passed": {}, "unmatched": {}, "dropped": {}}
        }))
        .unwrap();
        r.rules =
            vec![rule("ps-01+ps-02+ps-03+ps-16+ps-25", a, a * 100), rule("ps-14", b, b * 1000), rule("ps-22", 0, 0)];
        r.would_drop.insert("no_rule".into(), drops);
        r.would_drop.insert("interface".into(), 0);
        let f = |p: u64| IfaceReport { packets: p, bytes: p * 100, ..Default::default() };
        r.per_interface.insert("eth0".into(), f(a + b));
        r.per_interface.insert("eth1".into(), f(10 * (a + b)));
        r
    }

    #[test]
    fn fits_80_columns_sorted_with_rates() {
        let before = report(100, 1000, 10);
        let now = report(400, 1100, 30);
        let text = render(&now, Some((&before, 2.0)), &View { now_unix: 1_700_000_600, ..View::default() });
        for l in text.lines() {
            assert!(l.chars().count() <= 80, "{} columns: {l}", l.chars().count());
        }
        let lines: Vec<&str> = text.lines().collect();
        // ps-01.. went up by 300 in 2 s (150 pps) and ps-14 by 100 (50 pps): busier first,
        // although ps-14 has more packets in all.
        let i01 = lines.iter().position(|l| l.starts_with("ps-01+ps-02+ps-03+p~")).expect(&text);
        let i14 = lines.iter().position(|l| l.starts_with("ps-14 ")).expect(&text);
        assert!(i01 < i14, "{text}");
        let cols: Vec<&str> = lines[i01].split_whitespace().collect();
        // id proto ports dir packets pps bytes bps: 300 packets * 100 bytes * 8 bits / 2 s.
        assert_eq!(&cols[4..], &["400", "150", "40.0K", "120.0K"], "{}", lines[i01]);
        let cols: Vec<&str> = lines[i14].split_whitespace().collect();
        assert_eq!(&cols[4..], &["1100", "50", "1.1M", "400.0K"], "{}", lines[i14]);
        assert!(!text.contains("ps-22"), "idle rules are not listed");
        assert!(text.contains("1 idle rule(s) not shown"));
        // Interfaces busiest first: eth1 carries ten times eth0.
        let e0 = lines.iter().position(|l| l.starts_with("eth0*")).expect(&text);
        let e1 = lines.iter().position(|l| l.starts_with("eth1 ")).expect(&text);
        assert!(e1 < e0);
        // would-drop no_rule: 20 in 2 s.
        let wd = lines.iter().find(|l| l.starts_with("would drop no_rule")).expect(&text);
        assert_eq!(wd.split_whitespace().collect::<Vec<_>>()[3..], ["30", "10"]);
        assert!(!text.contains("would drop interface"), "zero reasons are not listed");
        assert!(text.contains("counting since 2023-11-14 22:13:20 UTC (0h10m)"), "{text}");
        assert!(text.contains("flows 3 tracked of 65.5K"), "{text}");
        assert!(!text.contains('\x1b'), "no colour unless asked");
    }

    #[test]
    fn first_frame_has_no_rates_and_colour_is_optional() {
        let r = report(5, 0, 1);
        let text = render(&r, None, &View::default());
        let l = text.lines().find(|l| l.starts_with("ps-01")).unwrap();
        assert_eq!(l.split_whitespace().nth(5), Some("-"));
        let coloured = render(&r, None, &View { color: true, ..View::default() });
        assert!(coloured.contains("\x1b[33m"), "would-drops in yellow");
        let narrow = render(&r, None, &View { width: 60, ..View::default() });
        assert!(narrow.lines().all(|l| l.chars().count() <= 60));
    }

    #[test]
    fn shows_what_enforcing_would_cut() {
        let r = report(5, 0, 7);
        let cut: crate::report::DryRunReport = serde_json::from_value(serde_json::json!({
            "mode": "dry-run", "packets": 7, "flows": 2, "groups": [
              {"proto": "udp", "dport": 9999, "iface": "eth0", "reason": "no_rule", "packets": 6, "bytes": 360,
               "first_seen_unix": 0, "last_seen_unix": 0, "sources": [], "nearest": null},
              {"proto": "tcp", "dport": 5063, "iface": "eth0", "reason": "no_rule", "packets": 1, "bytes": 74,
               "first_seen_unix": 0, "last_seen_unix": 0, "sources": [],
               "nearest": {"kind": "disabled", "rows": ["ps-07", "ps-08"], "why": "optional"}}]
        }))
        .unwrap();
        let text = render_with_cut(&r, None, Some(&cut), &View { max_cut: 1, ..View::default() });
        assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
        let i = text.lines().position(|l| l.starts_with("ENFORCING WOULD CUT")).expect(&text);
        let l: Vec<&str> = text.lines().collect();
        assert_eq!(l[i + 1].split_whitespace().collect::<Vec<_>>(), ["udp/9999", "on", "eth0", "6", "0", "-"]);
        assert_eq!(l[i + 2], "  (1 more: ps-agent report)");
        let all = render_with_cut(&r, None, Some(&cut), &View::default());
        assert!(all.contains("ps-07,ps-08 (disabled)"), "{all}");
        assert!(!render(&r, None, &View::default()).contains("ENFORCING"));
    }

    #[test]
    fn human_numbers() {
        assert_eq!(human(0), "0");
        assert_eq!(human(9999), "9999");
        assert_eq!(human(12_345), "12.3K");
        assert_eq!(human(65_536), "65.5K");
        assert_eq!(human_f(2.5), "2.5");
        assert_eq!(human_f(150.0), "150");
        assert_eq!(human_f(3_000_000.0), "3.0M");
    }
}
