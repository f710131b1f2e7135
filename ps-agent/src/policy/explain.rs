//! Explain: which verdict the compiled policy gives a packet, and why — computed by
//! `ps_common::classify::decide`, the code the XDP program runs, over the compiled rule
//! set in memory ([`crate::policy::model::Model`]).
//!
//! Two inputs: one packet described on the command line (built with `ps_common::frames`),
//! or the frames of a capture ([`crate::policy::capture`]), replayed one by one and
//! summarized per flow so an operator sees, before enforcing, which flows the matrix would
//! cut. Pure: bytes in, reports out.

use std::{collections::BTreeMap, fmt::Write as _, net::IpAddr};

use ps_common::{
    DropReason, PassReason,
    classify::{Decision, Verdict},
    frames::{self, Net},
};
use serde::{Deserialize, Serialize};

use crate::{
    policy::capture::{Direction, Frame},
    policy::compile::{CompiledRule, Origin, RuleKind, RuleSet},
    policy::config::{Matrix, Mode, Transport},
    policy::model::Model,
    policy::portspec::PortSpec,
};

/// An explain error.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// `--iface` names an interface the rule set is not compiled for.
    #[error("interface `{iface}` is not enforced (enforced: {enforced}); pass one of those with --iface")]
    UnknownInterface {
        /// Given.
        iface: String,
        /// Enforced interfaces.
        enforced: String,
    },
    /// Bad `--flags`.
    #[error("invalid TCP flag `{flag}` in `{flags}`: use F S R P A U E C (e.g. SA for SYN+ACK)")]
    Flags {
        /// The whole argument.
        flags: String,
        /// The letter.
        flag: char,
    },
    /// Source and destination addresses of different families.
    #[error("--src {src} and --dst {dst} are not the same IP version")]
    Family {
        /// Source.
        src: IpAddr,
        /// Destination.
        dst: IpAddr,
    },
}

/// Transport of an explained packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP (ICMPv6 for an IPv6 source).
    Icmp,
}

/// A packet described on the command line.
#[derive(Clone, Debug)]
pub struct PacketSpec {
    /// Transport.
    pub proto: Proto,
    /// Destination port (ICMP: the type).
    pub dport: u16,
    /// Source port.
    pub sport: u16,
    /// Source address.
    pub src: IpAddr,
    /// Destination address (default: same family as `src`, 198.18.0.1 or fd00::1).
    pub dst: Option<IpAddr>,
    /// TCP flags.
    pub flags: u8,
}

/// `SA` → SYN|ACK.
pub fn parse_flags(s: &str) -> Result<u8, ExplainError> {
    let mut f = 0u8;
    for c in s.chars() {
        f |= match c.to_ascii_uppercase() {
            'F' => 0x01,
            'S' => 0x02,
            'R' => 0x04,
            'P' => 0x08,
            'A' => 0x10,
            'U' => 0x20,
            'E' => 0x40,
            'C' => 0x80,
            _ => return Err(ExplainError::Flags { flags: s.to_string(), flag: c }),
        };
    }
    Ok(f)
}

/// The frame for a packet spec.
pub fn build_frame(p: &PacketSpec) -> Result<Vec<u8>, ExplainError> {
    let net = match (p.src, p.dst) {
        (IpAddr::V4(s), None) => Net::V4 { src: s.octets(), dst: frames::V4_DST, options: vec![], frag: 0 },
        (IpAddr::V4(s), Some(IpAddr::V4(d))) => Net::V4 { src: s.octets(), dst: d.octets(), options: vec![], frag: 0 },
        (IpAddr::V6(s), None) => Net::V6 { src: s.octets(), dst: frames::V6_DST, ext: vec![], frag_offset: 0 },
        (IpAddr::V6(s), Some(IpAddr::V6(d))) => {
            Net::V6 { src: s.octets(), dst: d.octets(), ext: vec![], frag_offset: 0 }
        }
        (src, Some(dst)) => return Err(ExplainError::Family { src, dst }),
    };
    let l4 = match p.proto {
        Proto::Tcp => frames::tcp(p.sport, p.dport, p.flags),
        Proto::Udp => frames::udp(p.sport, p.dport),
        Proto::Icmp => frames::Transport::Icmp { ty: p.dport as u8, code: 0 },
    };
    Ok(frames::frame(&[], &net, &l4, 0))
}

/// What a drop reason means, for a person.
pub fn drop_text(r: DropReason) -> &'static str {
    match r {
        DropReason::NoRule => "no rule admits this protocol and destination port, and it is not a reply to one",
        DropReason::Interface => "a rule matches, but not on this interface (a row bound to the management IP)",
        DropReason::ReplyCheck => {
            "from a reply port, but TCP without ACK (before the SYN-ACK: without SYN and ACK) or to a local port outside the ephemeral range"
        }
        DropReason::Source => "a rule matches the port, but the source address is not in the row's system",
        DropReason::Untracked => "a reply for which no outbound flow is tracked",
        DropReason::Fragment => "a non-first IP fragment: it has no ports",
        DropReason::EtherType => "not IPv4, IPv6 or ARP",
        DropReason::IpProto => "not TCP, UDP, ICMP or ICMPv6",
        DropReason::Icmp => "an ICMP type that is not let through (echo request without allow_ping, redirect, ...)",
        DropReason::Truncated => "the frame ends inside a header",
        DropReason::Malformed => "impossible header fields",
        DropReason::VlanDepth => "more than two VLAN tags",
        DropReason::ExtHeaders => "too many IPv6 extension headers",
        DropReason::OutOfWindow => {
            "a TCP reply to a tracked flow whose sequence or acknowledgement number is outside the flow's windows"
        }
    }
}

fn pass_text(r: PassReason) -> &'static str {
    match r {
        PassReason::Arp => "ARP always passes",
        PassReason::Ndp => "IPv6 neighbour discovery and MLD always pass",
        PassReason::IcmpError => "ICMP errors always pass (path MTU discovery needs them)",
        PassReason::IcmpEcho => "ICMP echo replies pass; echo requests with allow_ping",
    }
}

/// A matrix row, as explain shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowNote {
    /// Row id.
    pub id: String,
    /// `Avaya Equinox Ephemeral → Presence Services 443 (TCP/HTTPS)`.
    pub flow: String,
    /// Description.
    pub description: String,
    /// Why it does not apply, if it does not (e.g. optional and closed by default).
    pub status: Option<String>,
}

/// What the policy does with a packet, as `explain` and `--json` name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ExplainVerdict {
    /// A rule admits it.
    #[serde(rename = "accept")]
    Accept,
    /// A reply rule admits it if this host opened the flow (stateful).
    #[serde(rename = "accept if tracked")]
    AcceptIfTracked,
    /// It passes without a rule (ARP, neighbour discovery, ICMP errors).
    #[serde(rename = "pass")]
    Pass,
    /// It is dropped.
    #[serde(rename = "drop")]
    Drop,
    /// Dry-run: it would be dropped; it passes, counted and logged.
    #[serde(rename = "would-drop")]
    WouldDrop,
}

impl ExplainVerdict {
    /// The classifier's verdict in `mode`.
    pub fn of(v: &Verdict, mode: Mode) -> Self {
        match v {
            Verdict::Rule(_) => Self::Accept,
            Verdict::Tracked(_) => Self::AcceptIfTracked,
            Verdict::Pass(_) => Self::Pass,
            Verdict::Drop(_) if mode == Mode::DryRun => Self::WouldDrop,
            Verdict::Drop(_) => Self::Drop,
        }
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accept => "accept",
            Self::AcceptIfTracked => "accept if tracked",
            Self::Pass => "pass",
            Self::Drop => "drop",
            Self::WouldDrop => "would-drop",
        }
    }

    /// Whether enforcing cuts what this verdict describes (it is not admitted for sure).
    pub fn cut(self) -> bool {
        !matches!(self, Self::Accept | Self::Pass)
    }
}

impl std::fmt::Display for ExplainVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// The answer for one packet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    /// What happens to the packet.
    pub verdict: ExplainVerdict,
    /// Whether the packet leaves the XDP program with XDP_PASS.
    pub passes: bool,
    /// The admitting rule's id.
    pub rule: Option<String>,
    /// The admitting rule's direction.
    pub direction: Option<RuleKind>,
    /// Drop or pass reason (`no_rule`, `icmp_error`, ...).
    pub reason: Option<String>,
    /// The reason in words.
    pub detail: String,
    /// Matrix rows behind the rule, or rows about this port that do not apply.
    pub rows: Vec<RowNote>,
}

fn row_note(m: &Matrix, id: &str, set: &RuleSet) -> Option<RowNote> {
    let r = m.row(id)?;
    let status = set.skipped.iter().find(|s| s.row == id).map(|s| s.why.clone());
    Some(RowNote {
        id: r.id.clone(),
        flow: format!(
            "{} {} → {} {} ({})",
            r.source_system, r.source_port, r.destination_system, r.destination_port, r.protocol
        ),
        description: r.description.clone(),
        status,
    })
}

fn rule_of(set: &RuleSet, counter: u32) -> Option<&CompiledRule> {
    set.rule_by_counter(counter)
}

/// Classify one frame and explain the verdict.
pub fn explain_frame(set: &RuleSet, matrix: &Matrix, mode: Mode, frame: &[u8], slot: u32) -> Explanation {
    let d = Model::new(set, mode).decide(frame, slot);
    explain_decision(set, matrix, mode, &d, frame)
}

fn explain_decision(set: &RuleSet, matrix: &Matrix, mode: Mode, d: &Decision, _frame: &[u8]) -> Explanation {
    let verdict = ExplainVerdict::of(&d.verdict, mode);
    let passes = d.passes();
    match d.verdict {
        Verdict::Rule(c) | Verdict::Tracked(c) => {
            let r = rule_of(set, c);
            let tracked = verdict == ExplainVerdict::AcceptIfTracked;
            Explanation {
                verdict,
                passes,
                rule: r.map(|r| r.id.clone()),
                direction: r.map(|r| r.kind),
                reason: None,
                detail: r.map_or(String::new(), |r| {
                    let scope = r.interfaces.as_ref().map_or(String::new(), |i| format!(" on {}", i.join(",")));
                    let state = if tracked { " — only if this host opened the flow (stateful)" } else { "" };
                    format!("{} rule {}/{}{scope}{state}", r.kind, r.transport, r.ports_text)
                }),
                rows: r.map(|r| rule_rows(set, matrix, r)).unwrap_or_default(),
            }
        }
        Verdict::Pass(p) => Explanation {
            verdict,
            passes,
            rule: None,
            direction: None,
            reason: Some(p.as_str().into()),
            detail: pass_text(p).into(),
            rows: vec![],
        },
        Verdict::Drop(r) => Explanation {
            verdict,
            passes,
            rule: None,
            direction: None,
            reason: Some(r.as_str().into()),
            detail: drop_text(r).into(),
            rows: rows_about_the_port(set, matrix, d),
        },
    }
}

/// The matrix rows behind an admitting rule (a site rule or the failsafe gets a note of its
/// own).
fn rule_rows(set: &RuleSet, matrix: &Matrix, r: &CompiledRule) -> Vec<RowNote> {
    r.rows
        .iter()
        .map(|id| {
            row_note(matrix, id, set).unwrap_or_else(|| RowNote {
                id: id.clone(),
                flow: match r.origin {
                    Origin::Failsafe => "lock-out failsafe".into(),
                    Origin::Site => "site config [[rule]]".into(),
                    Origin::Matrix => String::new(),
                },
                description: r.description.clone(),
                status: None,
            })
        })
        .collect()
}

/// For a dropped packet: the rows about its port that are off or apply elsewhere, the
/// likely fix.
fn rows_about_the_port(set: &RuleSet, matrix: &Matrix, d: &Decision) -> Vec<RowNote> {
    let t = match d.packet.proto {
        6 => Transport::Tcp,
        17 => Transport::Udp,
        _ => return vec![],
    };
    let mut rows = Vec::new();
    for row in matrix.rows.iter().filter(|row| row.transports.contains(&t)) {
        let ports: &[(u16, u16)] = match &row.destination_port {
            PortSpec::SiteSupplied(_) => row.site_ports.as_deref().unwrap_or(&[]),
            p => p.ranges(),
        };
        let hit = |port: u16| ports.iter().any(|&(a, b)| a <= port && port <= b);
        if !hit(d.packet.dport) && !hit(d.packet.sport) {
            continue;
        }
        rows.extend(row_note(matrix, &row.id, set).map(|mut n| {
            if n.status.is_none() && row.management_only {
                n.status = Some("bound to the management IP: applies on the management interface only".into());
            }
            n
        }));
    }
    rows
}

impl Explanation {
    /// Text for a console.
    pub fn render(&self, what: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "packet:  {what}");
        let head = match (&self.rule, &self.reason) {
            (Some(rule), _) => format!("{} by rule {rule} ({})", self.verdict.as_str().to_uppercase(), self.detail),
            (None, Some(reason)) => format!("{} ({reason}): {}", self.verdict.as_str().to_uppercase(), self.detail),
            _ => self.verdict.as_str().to_uppercase(),
        };
        let _ = writeln!(out, "verdict: {head}");
        if self.verdict == ExplainVerdict::WouldDrop {
            out.push_str("         dry-run: it passes, and is counted and logged as a would-drop\n");
        }
        if !self.rows.is_empty() {
            out.push_str(if self.rule.is_some() { "rows:\n" } else { "matrix rows about this port:\n" });
            for r in &self.rows {
                let _ = writeln!(out, "  {:<16} {}", r.id, r.flow);
                let _ = writeln!(out, "  {:<16} {}", "", r.description);
                if let Some(s) = &r.status {
                    let _ = writeln!(out, "  {:<16} off: {s}", "");
                }
            }
        }
        out
    }
}

/// One flow of a replayed capture.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    /// `tcp`, `udp`, `icmp`, `icmpv6`, or the drop reason for frames that did not parse.
    pub proto: String,
    /// Source address.
    pub src: String,
    /// Destination port (ICMP: type).
    pub dport: u16,
    /// What happens to the flow's packets.
    pub verdict: ExplainVerdict,
    /// Rule id or reason.
    pub why: String,
    /// Packets.
    pub packets: u64,
    /// Whether the matrix would cut it (dropped in enforce mode).
    pub cut: bool,
}

/// A replayed capture.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replay {
    /// Flows, most packets first.
    pub flows: Vec<Flow>,
    /// Frames classified.
    pub frames: u64,
    /// Frames skipped because they came from a `--local` address.
    pub skipped_local: u64,
    /// Frames skipped because the capture marks them as sent by the capturing host (SLL
    /// packet type outgoing, pcapng EPB flags outbound).
    pub skipped_outgoing: u64,
}

fn src_of(frame: &[u8], d: &Decision) -> Option<IpAddr> {
    let off = d.packet.src_addr_off() as usize;
    match d.packet.ip_version {
        4 => frame.get(off..off + 4).map(|b| IpAddr::from(<[u8; 4]>::try_from(b).expect("4"))),
        6 => frame.get(off..off + 16).map(|b| IpAddr::from(<[u8; 16]>::try_from(b).expect("16"))),
        _ => None,
    }
}

/// Classify every frame as arriving on `slot`, one at a time (memory does not grow with
/// the capture). The host's own packets in a two-way capture are skipped: those the
/// capture marks outbound, and, where it does not say, those from a `local` address.
///
/// # Errors
/// The first error `frames` yields.
pub fn replay<E>(
    set: &RuleSet,
    mode: Mode,
    frames: impl IntoIterator<Item = Result<Frame, E>>,
    slot: u32,
    local: &[IpAddr],
) -> Result<Replay, E> {
    let model = Model::new(set, mode);
    let mut flows: BTreeMap<(String, String, u16, ExplainVerdict, String), u64> = BTreeMap::new();
    let (mut skipped_local, mut skipped_outgoing) = (0, 0);
    let mut n = 0;
    for frame in frames {
        let Frame { data: f, direction, .. } = frame?;
        if direction == Direction::Outbound {
            skipped_outgoing += 1;
            continue;
        }
        let d = model.decide(&f, slot);
        let src = src_of(&f, &d);
        if direction == Direction::Unknown && src.is_some_and(|s| local.contains(&s)) {
            skipped_local += 1;
            continue;
        }
        n += 1;
        let proto = match (d.packet.ip_version, d.packet.proto) {
            (0, _) => "-".to_string(),
            (_, 6) => "tcp".into(),
            (_, 17) => "udp".into(),
            (_, 1) => "icmp".into(),
            (_, 58) => "icmpv6".into(),
            (_, p) => format!("ip/{p}"),
        };
        let dport = if matches!(d.packet.proto, 1 | 58) { d.packet.icmp_type as u16 } else { d.packet.dport };
        let verdict = ExplainVerdict::of(&d.verdict, mode);
        let why = match d.verdict {
            Verdict::Rule(c) | Verdict::Tracked(c) => set.rule_by_counter(c).map_or(c.to_string(), |r| r.id.clone()),
            Verdict::Pass(p) => p.as_str().into(),
            Verdict::Drop(r) => r.as_str().into(),
        };
        let src = src.map_or("-".to_string(), |s| s.to_string());
        *flows.entry((proto, src, dport, verdict, why)).or_default() += 1;
    }
    let mut flows: Vec<Flow> = flows
        .into_iter()
        .map(|((proto, src, dport, verdict, why), packets)| Flow {
            cut: verdict.cut(),
            proto,
            src,
            dport,
            verdict,
            why,
            packets,
        })
        .collect();
    flows.sort_by(|a, b| b.packets.cmp(&a.packets).then(b.cut.cmp(&a.cut)));
    Ok(Replay { flows, frames: n, skipped_local, skipped_outgoing })
}

impl Replay {
    /// Text for a console: one line per flow, `!` marks the flows the matrix would cut.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "  {:>8}  {:<6} {:<40} {:>5}  {:<10} RULE / REASON",
            "PACKETS", "PROTO", "SOURCE", "DPORT", "VERDICT"
        );
        for f in &self.flows {
            let _ = writeln!(
                out,
                "{} {:>8}  {:<6} {:<40} {:>5}  {:<10} {}",
                if f.cut { "!" } else { " " },
                f.packets,
                f.proto,
                f.src,
                f.dport,
                f.verdict,
                f.why
            );
        }
        let cut: Vec<&Flow> = self.flows.iter().filter(|f| f.cut).collect();
        let _ = writeln!(
            out,
            "\n{} frames in {} flows; {} flows ({} packets) would be cut by the matrix (marked !){}",
            self.frames,
            self.flows.len(),
            cut.len(),
            cut.iter().map(|f| f.packets).sum::<u64>(),
            self.skipped_text()
        );
        out
    }

    /// `; N frames the capture marks as sent by this host skipped; M frames from --local
    /// skipped`, for the counts that are not zero.
    fn skipped_text(&self) -> String {
        let mut out = String::new();
        if self.skipped_outgoing > 0 {
            let _ = write!(out, "; {} frames the capture marks as sent by this host skipped", self.skipped_outgoing);
        }
        if self.skipped_local > 0 {
            let _ = write!(out, "; {} frames from --local skipped", self.skipped_local);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        policy::compile::{HostFacts, compile},
        policy::config::Config,
    };

    fn spec(proto: Proto, sport: u16, dport: u16, flags: &str) -> PacketSpec {
        PacketSpec {
            proto,
            dport,
            sport,
            src: "198.18.0.2".parse().unwrap(),
            dst: None,
            flags: parse_flags(flags).unwrap(),
        }
    }

    fn explain(p: &PacketSpec, slot: u32) -> Explanation {
        let cfg = Config::shipped();
        let set = compile(&cfg, &HostFacts::typical()).unwrap();
        explain_frame(&set, &cfg.matrix, Mode::Enforce, &build_frame(p).unwrap(), slot)
    }

    #[test]
    fn verdicts_and_rows() {
        let e = explain(&spec(Proto::Tcp, 50000, 5222, "S"), 1);
        assert_eq!((e.verdict.as_str(), e.rule.as_deref()), ("accept", Some("ps-10")));
        assert_eq!(e.rows[0].description, "XMPP Client connection to PS");
        let e = explain(&spec(Proto::Tcp, 50000, 8080, "S"), 1);
        assert_eq!((e.verdict.as_str(), e.reason.as_deref()), ("drop", Some("no_rule")));
        assert!(e.rows.is_empty());
        let e = explain(&spec(Proto::Tcp, 50000, 5063, "S"), 1);
        assert_eq!(e.reason.as_deref(), Some("no_rule"));
        let ids: Vec<&str> = e.rows.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["ps-06", "ps-07", "ps-08"], "the closed rows about 5063 are named");
        assert!(e.render("x").contains("off: optional and closed by default"));
        let e = explain(&spec(Proto::Tcp, 50000, 7000, "S"), 2);
        assert_eq!(e.reason.as_deref(), Some("interface"));
        let e = explain(&spec(Proto::Tcp, 5062, 40000, "SA"), 1);
        assert_eq!((e.rule.as_deref(), e.direction), (Some("ps-04"), Some(RuleKind::Reply)));
        // Stateful (the default): a reply passes only if the host opened the flow.
        let e = explain(&spec(Proto::Tcp, 5062, 40000, "S"), 1);
        assert_eq!((e.verdict.as_str(), e.rule.as_deref()), ("accept if tracked", Some("ps-04")));
        assert!(e.detail.contains("only if this host opened the flow"), "{}", e.detail);
        // Stateless: a bare SYN from 5062 is no reply.
        let mut cfg = Config::shipped();
        cfg.site.reply_tracking = crate::policy::config::ReplyTracking::Stateless;
        let set = compile(&cfg, &HostFacts::typical()).unwrap();
        let f = build_frame(&spec(Proto::Tcp, 5062, 40000, "S")).unwrap();
        assert_eq!(explain_frame(&set, &cfg.matrix, Mode::Enforce, &f, 1).reason.as_deref(), Some("reply_check"));
        let e = explain(&spec(Proto::Icmp, 0, 3, ""), 1);
        assert_eq!((e.verdict.as_str(), e.reason.as_deref()), ("pass", Some("icmp_error")));
        let e = explain(&spec(Proto::Icmp, 0, 8, ""), 1);
        assert_eq!(e.reason.as_deref(), Some("icmp"));
        let e = explain(&spec(Proto::Tcp, 50000, 22, "S"), 1);
        assert_eq!(e.rows[0].flow, "lock-out failsafe");
        let mut v6 = spec(Proto::Udp, 53, 40000, "");
        v6.src = "fd00::2".parse().unwrap();
        assert_eq!(explain(&v6, 1).rule.as_deref(), Some("failsafe-dns"));
        assert!(parse_flags("SX").is_err());
        // Dry-run: the same verdict, but the packet passes.
        let cfg = Config::shipped();
        let set = compile(&cfg, &HostFacts::typical()).unwrap();
        let frame = build_frame(&spec(Proto::Udp, 50000, 9999, "")).unwrap();
        let e = explain_frame(&set, &cfg.matrix, Mode::DryRun, &frame, 1);
        assert_eq!((e.verdict.as_str(), e.passes), ("would-drop", true));
        assert!(e.render("x").contains("dry-run: it passes"));
        assert!(!explain_frame(&set, &cfg.matrix, Mode::Enforce, &frame, 1).passes);
    }

    #[test]
    fn pcap_replay_summarizes_flows() {
        let cfg = Config::shipped();
        let set = compile(&cfg, &HostFacts::typical()).unwrap();
        let f = |p: &PacketSpec| build_frame(p).unwrap();
        let mut frames = vec![];
        for _ in 0..5 {
            frames.push(f(&spec(Proto::Tcp, 50000, 443, "A")));
        }
        for _ in 0..3 {
            frames.push(f(&spec(Proto::Tcp, 50001, 8080, "S")));
        }
        frames.push(f(&spec(Proto::Udp, 50002, 161, "")));
        let mut own = spec(Proto::Tcp, 443, 50000, "A");
        own.src = "198.18.0.1".parse().unwrap();
        frames.push(f(&own));
        let mut read: Vec<Frame> = frames
            .into_iter()
            .map(|data| Frame { data, direction: Direction::Unknown, time: Default::default() })
            .collect();
        // Marked outbound by the capture: skipped whatever its source; marked inbound:
        // classified even from a --local address.
        read.push(Frame { direction: Direction::Outbound, ..read[0].clone() });
        read.push(Frame { direction: Direction::Inbound, ..read[9].clone() });
        let local = ["198.18.0.1".parse().unwrap()];
        let r = replay(&set, Mode::Enforce, read.into_iter().map(Ok::<_, ()>), 1, &local).unwrap();
        let got: Vec<(&str, u16, &str, &str, u64, bool)> = r
            .flows
            .iter()
            .map(|f| (f.proto.as_str(), f.dport, f.verdict.as_str(), f.why.as_str(), f.packets, f.cut))
            .collect();
        assert_eq!(
            got,
            [
                ("tcp", 443, "accept", "ps-01+ps-02", 5, false),
                ("tcp", 8080, "drop", "no_rule", 3, true),
                ("tcp", 50000, "accept if tracked", "ps-03+ps-16+ps-25", 1, true),
                ("udp", 161, "drop", "no_rule", 1, true)
            ]
        );
        assert_eq!((r.frames, r.skipped_local, r.skipped_outgoing), (10, 1, 1));
        let text = r.render();
        assert!(text.contains("3 flows (5 packets) would be cut"), "{text}");
        assert!(
            text.contains("; 1 frames the capture marks as sent by this host skipped; 1 frames from --local skipped"),
            "{text}"
        );
        // The reader's error ends the replay.
        let frames = [Ok(Frame { data: vec![], direction: Direction::Unknown, time: Default::default() }), Err("bad")];
        assert_eq!(replay(&set, Mode::Enforce, frames, 1, &[]).err(), Some("bad"));
    }
}
