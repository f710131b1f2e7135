//! The dry-run report: "what breaks if I enforce now?". Reads the would-drop table the XDP
//! program fills in dry-run (`PS_WDROP`: source, protocol, destination port, interface →
//! packets, bytes, first/last seen), groups it by what would be cut (protocol, port,
//! interface), sorts it by volume, and names the nearest matrix row where one is close
//! ([`crate::policy::nearest`]). Pure: the row hints are published by `run` in the state
//! file, the table is read from the pins by the caller.

use std::collections::BTreeMap;

use ps_common::{
    observe::{DropKey, DropVal},
    reason::DropReason,
};
use serde::{Deserialize, Serialize};

use super::{
    format::{addr, proto_name},
    state::AgentState,
};
use crate::policy::{
    config::Mode,
    nearest::{Nearest, nearest},
};

/// One source of a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// Source address.
    pub src: String,
    /// Source port of its last packet.
    pub last_sport: u16,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
    /// Seconds since its first packet.
    pub first_seen_s_ago: u64,
    /// Seconds since its last packet.
    pub last_seen_s_ago: u64,
    /// Its first packet, Unix time.
    pub first_seen_unix: u64,
    /// Its last packet, Unix time.
    pub last_seen_unix: u64,
}

/// What enforcing would cut: one protocol, port and interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// `tcp`, `udp`, `icmp`, ... or the IP protocol number.
    pub proto: String,
    /// Destination port (0 for protocols without ports).
    pub dport: u16,
    /// Interface.
    pub iface: String,
    /// Drop reason (of the most recent packet).
    pub reason: String,
    /// Packets, all sources.
    pub packets: u64,
    /// Bytes, all sources.
    pub bytes: u64,
    /// First packet of any source, Unix time.
    pub first_seen_unix: u64,
    /// Last packet of any source, Unix time.
    pub last_seen_unix: u64,
    /// Sources, busiest first.
    pub sources: Vec<Source>,
    /// The nearest matrix row, if one is close.
    pub nearest: Option<Nearest>,
}

/// The report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DryRunReport {
    /// The mode in force (the table only fills in dry-run).
    pub mode: Mode,
    /// Groups, busiest first.
    pub groups: Vec<Group>,
    /// Would-dropped packets in the table (the table holds the most recent flows: see
    /// `would_drop` in `stats` for every packet).
    pub packets: u64,
    /// Distinct flows (source, protocol, port, interface) in the table.
    pub flows: usize,
}

/// Build the report (pure: `now_ns` is CLOCK_MONOTONIC, the clock of the table, and
/// `now_unix` the wall clock at the same instant).
pub fn build(state: &AgentState, mode: Mode, table: &[(DropKey, DropVal)], now_ns: u64, now_unix: u64) -> DryRunReport {
    let iface_of = |slot: u32| {
        state.interfaces.iter().find(|a| a.slot == slot).map_or_else(|| format!("slot{slot}"), |a| a.name.clone())
    };
    let mut groups: BTreeMap<(String, u16, String), Group> = BTreeMap::new();
    for (k, v) in table {
        let proto = proto_name(k.proto);
        let iface = iface_of(k.slot);
        let g = groups.entry((proto.clone(), k.dport, iface.clone())).or_insert_with(|| Group {
            proto: proto.clone(),
            dport: k.dport,
            iface: iface.clone(),
            reason: String::new(),
            packets: 0,
            bytes: 0,
            first_seen_unix: u64::MAX,
            last_seen_unix: 0,
            sources: vec![],
            nearest: None,
        });
        g.packets += v.packets;
        g.bytes += v.bytes;
        let newest = g.sources.iter().map(|s| s.last_seen_s_ago).min().unwrap_or(u64::MAX);
        let ago = |t: u64| now_ns.saturating_sub(t) / 1_000_000_000;
        if ago(v.last_ns) <= newest || g.reason.is_empty() {
            g.reason = DropReason::from_u32(v.reason).map_or_else(|| v.reason.to_string(), |r| r.as_str().into());
            g.nearest = nearest(&state.rows, &state.management_interface, &proto, k.dport, &iface, v.sport);
        }
        let (first_unix, last_unix) =
            (now_unix.saturating_sub(ago(v.first_ns)), now_unix.saturating_sub(ago(v.last_ns)));
        g.first_seen_unix = g.first_seen_unix.min(first_unix);
        g.last_seen_unix = g.last_seen_unix.max(last_unix);
        g.sources.push(Source {
            src: addr(k.family, &k.src),
            last_sport: v.sport,
            packets: v.packets,
            bytes: v.bytes,
            first_seen_s_ago: ago(v.first_ns),
            last_seen_s_ago: ago(v.last_ns),
            first_seen_unix: first_unix,
            last_seen_unix: last_unix,
        });
    }
    let mut groups: Vec<Group> = groups.into_values().collect();
    for g in &mut groups {
        g.sources.sort_by(|a, b| b.packets.cmp(&a.packets).then_with(|| a.src.cmp(&b.src)));
    }
    groups.sort_by(|a, b| {
        b.packets.cmp(&a.packets).then_with(|| (a.dport, &a.proto, &a.iface).cmp(&(b.dport, &b.proto, &b.iface)))
    });
    DryRunReport { mode, packets: groups.iter().map(|g| g.packets).sum(), flows: table.len(), groups }
}

/// The report as text for a console (fits 80 columns; long "why"s wrap below their line).
pub fn render(r: &DryRunReport) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    if r.mode != Mode::DryRun {
        let _ = writeln!(o, "note: the agent enforces; the table only fills in dry-run (what is shown is older)");
    }
    if r.groups.is_empty() {
        let _ = writeln!(o, "nothing would be dropped (no would-drop recorded)");
        return o;
    }
    let _ = writeln!(o, "If enforced now, these would be dropped (busiest first):");
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{:<6} {:>5} {:<8} {:>8} {:>7} {:<12} NEAREST ROW",
        "PROTO", "PORT", "IFACE", "PACKETS", "SOURCES", "REASON"
    );
    for g in &r.groups {
        let near = g.nearest.as_ref().map_or("-".to_string(), |n| n.rows.join(","));
        let mut iface = g.iface.clone();
        iface.truncate(8);
        let mut reason = g.reason.clone();
        reason.truncate(12);
        let mut line = format!(
            "{:<6} {:>5} {:<8} {:>8} {:>7} {:<12} {near}",
            g.proto,
            g.dport,
            iface,
            super::format::human(g.packets),
            g.sources.len(),
            reason
        );
        super::format::clip(&mut line, 80);
        let _ = writeln!(o, "{line}");
        if let Some(n) = &g.nearest {
            for l in wrap(&n.why, 70) {
                let _ = writeln!(o, "       {l}");
            }
        }
        for s in g.sources.iter().take(3) {
            let mut l = format!(
                "       from {} (last sport {}): {} pkts, last {}s ago",
                s.src, s.last_sport, s.packets, s.last_seen_s_ago
            );
            super::format::clip(&mut l, 80);
            let _ = writeln!(o, "{l}");
        }
        if g.sources.len() > 3 {
            let _ = writeln!(o, "       ... and {} more source(s)", g.sources.len() - 3);
        }
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "{} packet(s) in {} flow(s)", r.packets, r.flows);
    o
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut out = vec![];
    let mut cur = String::new();
    for w in text.split_whitespace() {
        if !cur.is_empty() && cur.len() + 1 + w.len() > width {
            out.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(w);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        dataplane::{AttachMode, Attached},
        policy::{
            compile::{HostFacts, compile},
            nearest::tests::hints,
        },
    };

    #[test]
    fn groups_sorted_by_volume() {
        let (cfg, rows) = hints("");
        let set = compile(&cfg, &HostFacts::typical()).unwrap();
        let ifaces = vec![
            Attached { name: "eth0".into(), ifindex: 2, slot: 1, xdp_mode: AttachMode::Native },
            Attached { name: "eth1".into(), ifindex: 3, slot: 2, xdp_mode: AttachMode::Native },
        ];
        let mut state = AgentState::new(
            crate::policy::config::ReplyTracking::Stateful,
            &set,
            "PS",
            "p",
            "eth0",
            std::path::Path::new("/x"),
            1024,
            ifaces,
        );
        state.rows = rows;
        let s = 1_000_000_000u64;
        let k = |src: u8, proto: u8, dport: u16, slot: u32| DropKey {
            src: [198, 18, 0, src, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            dport,
            proto,
            family: 4,
            slot,
        };
        let v = |packets: u64, reason: DropReason| DropVal {
            packets,
            bytes: packets * 60,
            first_ns: 10 * s,
            last_ns: 20 * s,
            reason: reason as u32,
            sport: 40000,
            _pad: 0,
        };
        let table = vec![
            (k(2, 17, 9999, 1), v(5, DropReason::NoRule)),
            (k(3, 17, 9999, 1), v(2, DropReason::NoRule)),
            (k(2, 6, 5063, 1), v(3, DropReason::NoRule)),
            (k(2, 6, 7000, 2), v(9, DropReason::Interface)),
        ];
        let r = build(&state, Mode::DryRun, &table, 30 * s, 1_700_000_000);
        let key: Vec<(&str, u16, &str, u64)> =
            r.groups.iter().map(|g| (g.proto.as_str(), g.dport, g.iface.as_str(), g.packets)).collect();
        assert_eq!(key, vec![("tcp", 7000, "eth1", 9), ("udp", 9999, "eth0", 7), ("tcp", 5063, "eth0", 3)]);
        assert_eq!(r.groups[0].reason, "interface");
        assert_eq!(r.groups[0].nearest.as_ref().unwrap().rows, vec!["ps-13".to_string(), "ps-20".to_string()]);
        assert_eq!(r.groups[1].sources.iter().map(|s| s.packets).collect::<Vec<_>>(), vec![5, 2]);
        assert_eq!(r.groups[1].sources[0].src, "198.18.0.2");
        assert_eq!((r.groups[1].sources[0].first_seen_s_ago, r.groups[1].sources[0].last_seen_s_ago), (20, 10));
        assert_eq!((r.groups[1].first_seen_unix, r.groups[1].last_seen_unix), (1_699_999_980, 1_699_999_990));
        assert!(r.groups[1].nearest.is_none());
        assert_eq!((r.packets, r.flows), (19, 4));
        let text = render(&r);
        assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
        assert!(text.contains("ps-13") && text.contains("management interface"), "{text}");
    }
}
