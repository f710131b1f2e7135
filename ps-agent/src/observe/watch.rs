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

use super::{
    format::{clip, fit, human, human_f},
    report::DryRunReport,
    stats::{Pb, RuleReport, StatsReport},
};
use crate::policy::config::ReplyTracking;

/// How to draw.
#[derive(Clone, Debug)]
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
    /// The time zone times are shown in.
    pub tz: jiff::tz::TimeZone,
}

impl Default for View {
    fn default() -> Self {
        Self {
            width: 80,
            max_rules: 20,
            color: false,
            interval: 1.0,
            now_unix: 0,
            max_cut: 5,
            tz: jiff::tz::TimeZone::UTC,
        }
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
    cut: Option<&crate::observe::report::DryRunReport>,
    v: &View,
) -> String {
    let mut lines = header(r, v);
    lines.extend(interfaces(r, prev, v.color));
    lines.extend(rules(r, prev, v));
    lines.extend(drops(r, prev, v.color));
    if let Some(cut) = cut.filter(|c| !c.groups.is_empty()) {
        lines.extend(would_cut(cut, v));
    }
    lines.extend(totals(r));
    let mut o = String::new();
    for mut l in lines {
        if !v.color {
            clip(&mut l, v.width.max(40));
        }
        let _ = writeln!(o, "{}", l.trim_end());
    }
    o
}

/// Mode, pid, product, clock; counting since.
fn header(r: &StatsReport, v: &View) -> Vec<String> {
    let clock = crate::clock::fmt_in(v.now_unix, &v.tz);
    let clock = clock.get(11..19).unwrap_or("");
    let title = format!("ps-agent  {}  replies {}  pid {}  {}  {clock}", r.mode, r.reply_tracking, r.pid, r.product);
    let up = v.now_unix.saturating_sub(r.since_unix);
    vec![
        paint(v.color, "1", title),
        format!(
            "counting since {} ({}h{:02}m)  every {:.1}s  q quits",
            crate::clock::fmt_in(r.since_unix, &v.tz),
            up / 3600,
            up / 60 % 60,
            v.interval
        ),
        String::new(),
    ]
}

/// One line per interface, busiest first.
fn interfaces(r: &StatsReport, prev: Option<(&StatsReport, f64)>, c: bool) -> Vec<String> {
    let secs = prev.map_or(1.0, |p| p.1);
    let mut lines = vec![paint(
        c,
        "1;7",
        format!(
            "{:<9} {:<6} {:>8} {:>7} {:>7} {:>7} {:>8} {:>8} {:>8}",
            "IFACE", "XDP", "PACKETS", "PPS", "BYTES", "BPS", "BY RULE", "DROPPED", "WOULD"
        ),
    )];
    let mut ifs: Vec<(&String, Rated, &crate::observe::stats::IfaceReport)> = r
        .per_interface
        .iter()
        .map(|(name, f)| {
            let p = prev.and_then(|(p, _)| p.per_interface.get(name));
            let pb = Pb { packets: f.packets, bytes: f.bytes };
            (name, rated(pb, p.map(|p| Pb { packets: p.packets, bytes: p.bytes }), secs), f)
        })
        .collect();
    ifs.sort_by(|a, b| busiest(&b.1, &a.1).then_with(|| a.0.cmp(b.0)));
    for (name, x, f) in &ifs {
        let mode = r.interfaces.iter().find(|a| &a.name == *name).map_or("", |a| a.xdp_mode.as_str());
        let mgmt = if **name == r.management_interface { "*" } else { "" };
        let (dropped, would) = (f.dropped.packets, f.would_drop.packets);
        lines.push(format!(
            "{:<9} {:<6} {:>8} {:>7} {:>7} {:>7} {:>8} {} {}",
            fit(&format!("{name}{mgmt}"), 9),
            fit(mode, 6),
            human(x.pb.packets),
            r_or_dash(x.pps),
            human(x.pb.bytes),
            r_or_dash(x.bps),
            human(f.by_rule.packets),
            paint(c && dropped > 0, "31", format!("{:>8}", human(dropped))),
            paint(c && would > 0, "33", format!("{:>8}", human(would))),
        ));
    }
    lines.push(String::new());
    lines
}

/// The active rules, busiest first, at most `v.max_rules`.
fn rules(r: &StatsReport, prev: Option<(&StatsReport, f64)>, v: &View) -> Vec<String> {
    let secs = prev.map_or(1.0, |p| p.1);
    let mut lines = vec![paint(
        v.color,
        "1;7",
        format!(
            "{:<20} {:<5} {:<11} {:<7} {:>8} {:>6} {:>7} {:>7}",
            "RULE", "PROTO", "PORTS", "DIR", "PACKETS", "PPS", "BYTES", "BPS"
        ),
    )];
    let key = |x: &RuleReport| (x.rule.id.clone(), x.rule.proto, x.rule.direction);
    let before: BTreeMap<_, Pb> = prev
        .map(|(p, _)| p.rules.iter().map(|x| (key(x), Pb { packets: x.packets, bytes: x.bytes })).collect())
        .unwrap_or_default();
    let mut rules: Vec<(&RuleReport, Rated)> = r
        .rules
        .iter()
        .map(|x| {
            let p = prev.map(|_| before.get(&key(x)).copied().unwrap_or_default());
            (x, rated(Pb { packets: x.packets, bytes: x.bytes }, p, secs))
        })
        .collect();
    rules.sort_by(|a, b| busiest(&b.1, &a.1).then_with(|| a.0.rule.id.cmp(&b.0.rule.id)));
    let active = rules.iter().filter(|(_, x)| x.pb.packets > 0).count();
    for (x, rt) in rules.iter().filter(|(_, x)| x.pb.packets > 0).take(v.max_rules) {
        lines.push(format!(
            "{:<20} {:<5} {:<11} {:<7} {:>8} {:>6} {:>7} {:>7}",
            fit(&x.rule.id, 20),
            fit(x.rule.proto.as_str(), 5),
            fit(&x.rule.ports, 11),
            fit(x.rule.direction.as_str(), 7),
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
    lines
}

/// Drops and would-drops by reason, busiest first.
fn drops(r: &StatsReport, prev: Option<(&StatsReport, f64)>, c: bool) -> Vec<String> {
    let secs = prev.map_or(1.0, |p| p.1);
    let mut lines = vec![paint(c, "1;7", format!("{:<32} {:>10} {:>8}", "DROPS BY REASON", "PACKETS", "PPS"))];
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
    lines
}

/// What enforcing would cut (dry-run): the busiest groups and their nearest rows.
fn would_cut(cut: &crate::observe::report::DryRunReport, v: &View) -> Vec<String> {
    let mut lines = vec![paint(
        v.color,
        "1;7",
        format!("{:<26} {:>8} {:>7}  {}", "ENFORCING WOULD CUT", "PACKETS", "SOURCES", "NEAREST ROW (ps-agent report)"),
    )];
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
    lines
}

/// Totals, the flow table, events and egress.
fn totals(r: &StatsReport) -> Vec<String> {
    let t = &r.totals;
    let mut lines = vec![format!(
        "total {} = {} by rule + {} other + {} dropped + {} would drop",
        human(t.packets),
        human(t.by_rule),
        human(t.passed_other),
        human(t.dropped),
        human(t.would_drop)
    )];
    let f = &r.flows;
    if r.reply_tracking == ReplyTracking::Stateful {
        lines.push(format!(
            "flows {} tracked of {} (created {}, seeded {}, expired {}, closed {}, evicted {})",
            human(f.tracked),
            human(f.capacity),
            human(f.created),
            human(f.seeded),
            human(f.expired),
            human(f.closed),
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
    lines
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

/// What a snapshot gives: the report, and the dry-run report when there is one to show.
type Snapshot<E> = Result<(StatsReport, Option<DryRunReport>), E>;

/// Refresh `snapshot` every `interval` seconds until q / Ctrl-C / a signal. `json`
/// prints one JSON object per line instead of the view.
/// `snapshot` also returns the dry-run report, when there is one to show.
pub fn run<E: std::fmt::Display>(
    snapshot: impl FnMut() -> Snapshot<E>,
    interval: f64,
    json: bool,
) -> Result<(), WatchError> {
    if !(interval > 0.0 && interval.is_finite()) {
        return Err(WatchError::Interval(interval));
    }
    let stdin_tty = std::io::stdin().is_terminal();
    let tty = std::io::stdout().is_terminal() && !json;
    let color = tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let output = Output { json, tty, color, interval };
    STOP.store(false, Ordering::Relaxed);
    route_quit_signals(on_signal as *const () as libc::sighandler_t);
    let term = Term::enter(stdin_tty, tty);
    let result = refresh(snapshot, &output);
    drop(term);
    route_quit_signals(libc::SIG_DFL);
    result
}

/// Send SIGINT, SIGTERM and SIGHUP to `handler`: [`on_signal`] while watching, the default
/// disposition after.
fn route_quit_signals(handler: libc::sighandler_t) {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: `handler` is `on_signal`, which only stores to an atomic, or SIG_DFL.
        unsafe { libc::signal(sig, handler) };
    }
}

/// The loop of [`run`]: a frame per snapshot, then a wait for the interval or a quit key.
fn refresh<E: std::fmt::Display>(mut snapshot: impl FnMut() -> Snapshot<E>, output: &Output) -> Result<(), WatchError> {
    let mut stdin_open = true;
    let mut prev: Option<(StatsReport, Instant)> = None;
    loop {
        let (r, cut) = snapshot().map_err(|e| WatchError::Snapshot(e.to_string()))?;
        let now = Instant::now();
        let elapsed = prev.as_ref().map(|(p, t)| (p, now.duration_since(*t).as_secs_f64()));
        output.write(&r, elapsed, cut.as_ref())?;
        prev = Some((r, now));
        if wait_key(Duration::from_secs_f64(output.interval), &mut stdin_open) {
            return Ok(());
        }
    }
}

/// Where the frames go: JSON lines, the terminal's alternate screen, or plain frames
/// separated by `---`.
struct Output {
    /// One JSON object per line.
    json: bool,
    /// stdout is a terminal (and not `json`).
    tty: bool,
    /// ANSI colour.
    color: bool,
    /// Refresh interval, seconds.
    interval: f64,
}

impl Output {
    /// Write the frame of `r` (with the dry-run report `cut`); `elapsed` is the previous
    /// report and the seconds since it, for rates.
    fn write(
        &self,
        r: &StatsReport,
        elapsed: Option<(&StatsReport, f64)>,
        cut: Option<&DryRunReport>,
    ) -> Result<(), WatchError> {
        let mut out = std::io::stdout().lock();
        if self.json {
            writeln!(out, "{}", serde_json::to_string(r).expect("serializable"))?;
        } else if self.tty {
            write!(out, "\x1b[H\x1b[2J{}", self.view(r, elapsed, cut).replace('\n', "\r\n"))?;
        } else {
            writeln!(out, "{}---", self.view(r, elapsed, cut))?;
        }
        out.flush()?;
        Ok(())
    }

    /// The view as text, to the terminal's width; on a short terminal with fewer rules
    /// rather than a scrolled-off header.
    fn view(&self, r: &StatsReport, elapsed: Option<(&StatsReport, f64)>, cut: Option<&DryRunReport>) -> String {
        let (cols, rows) = term_size().unwrap_or((80, 24));
        let mut view = View {
            width: if self.tty { cols.max(40) } else { 80 },
            max_rules: 20,
            color: self.color,
            interval: self.interval,
            now_unix: crate::clock::unix_now(),
            max_cut: 5,
            tz: jiff::tz::TimeZone::try_system().unwrap_or(jiff::tz::TimeZone::UTC),
        };
        let mut text = render_with_cut(r, elapsed, cut, &view);
        let over = text.lines().count().saturating_sub(rows.saturating_sub(1));
        if self.tty && over > 0 && view.max_rules > 3 {
            view.max_rules = view.max_rules.saturating_sub(over).max(3);
            text = render_with_cut(r, elapsed, cut, &view);
        }
        text
    }
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
    use crate::{
        observe::{
            state::RuleMeta,
            stats::{IfaceReport, RuleReport},
        },
        policy::{
            compile::{Origin, RuleKind},
            config::Transport,
        },
    };

    fn rule(id: &str, packets: u64, bytes: u64) -> RuleReport {
        RuleReport {
            rule: RuleMeta {
                id: id.into(),
                rows: vec![id.into()],
                origin: Origin::Matrix,
                proto: Transport::Tcp,
                ports: "7001-7199".into(),
                direction: RuleKind::Inbound,
                interfaces: None,
                description: "a very long description that must never reach the view".into(),
                counter: 0,
                system: None,
            },
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
        let cut: crate::observe::report::DryRunReport = serde_json::from_value(serde_json::json!({
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
