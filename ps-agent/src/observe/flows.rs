//! `ps-agent flows`: the flow table as `conntrack -L` lists it, and as `stats` counts it.
//!
//! The XDP program removes an expired flow only when a reply finds it, and the LRU only
//! when it needs the room, so the table holds entries idle past their timeout. Such an
//! entry admits nothing: it is never listed or counted as tracked, but counted with the
//! expired flows ([`FlowCensus`]).

use std::path::Path;

use ps_common::layout::{FLOW_CNT_EXPIRED, FlowKey, FlowState, Policy, flow_expired};
use serde::{Deserialize, Serialize};

use super::{ObserveError, format::addr, state::AgentState};
use crate::{
    clock,
    dataplane::{Counters, pins},
};

/// The flow table at one moment, judged by the active policy's timeouts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowCensus {
    /// Flows within their timeout.
    pub live: Vec<(FlowKey, FlowState)>,
    /// Entries idle past their timeout, still in the table.
    pub expired: u64,
}

impl FlowCensus {
    /// Split `entries` by `policy`'s timeouts at `now_ns` (CLOCK_MONOTONIC), with the
    /// programs' own test (`flow_expired`).
    pub fn of(entries: Vec<(FlowKey, FlowState)>, policy: &Policy, now_ns: u64) -> Self {
        let (live, expired): (Vec<_>, Vec<_>) =
            entries.into_iter().partition(|(_, f)| !flow_expired(policy, f, now_ns, true));
        Self { live, expired: expired.len() as u64 }
    }

    /// Flows in the table that admit replies.
    pub fn tracked(&self) -> u64 {
        self.live.len() as u64
    }

    /// Count the expired entries still in the table with the expired flows of `counters`
    /// (`FLOW_CNT_EXPIRED` counts those a reply removed).
    pub fn count_expired(&self, counters: &mut Counters) {
        if let Some(n) = counters.flows.get_mut(FLOW_CNT_EXPIRED as usize) {
            *n += self.expired;
        }
    }
}

/// The flow table pinned under `dir` by a running agent, judged by its active policy now.
///
/// # Errors
/// The pinned flow table or state map cannot be opened or read.
pub fn census(dir: &Path) -> Result<FlowCensus, ObserveError> {
    let entries = pins::read_flows(dir)?;
    let policy = pins::read_policy(dir)?;
    Ok(FlowCensus::of(entries, &policy, clock::monotonic_ns()))
}

/// One tracked flow, for `ps-agent flows`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowReport {
    /// `tcp` / `udp`.
    pub proto: String,
    /// `SYN_SENT`, `ESTABLISHED`, `CLOSING`, `UDP`.
    pub state: String,
    /// Local address.
    pub local: String,
    /// Local port.
    pub local_port: u16,
    /// Remote address.
    pub remote: String,
    /// Remote port.
    pub remote_port: u16,
    /// Rule that allowed it.
    pub rule: String,
    /// Seconds since created.
    pub age_s: u64,
    /// Seconds since the last packet.
    pub idle_s: u64,
    /// Packets from the host.
    pub packets_out: u32,
    /// Replies admitted.
    pub packets_in: u32,
}

/// The flows as `ps-agent flows` lists them, oldest first (pure: `now_ns` is
/// CLOCK_MONOTONIC).
pub fn flow_reports(state: &AgentState, flows: &[(FlowKey, FlowState)], now_ns: u64) -> Vec<FlowReport> {
    let mut v: Vec<FlowReport> = flows
        .iter()
        .map(|(k, f)| FlowReport {
            proto: if k.proto == 6 { "tcp".into() } else { "udp".into() },
            state: match f.state {
                ps_common::layout::FLOW_TCP_SYN_SENT => "SYN_SENT",
                ps_common::layout::FLOW_TCP_ESTABLISHED => "ESTABLISHED",
                ps_common::layout::FLOW_TCP_CLOSING => "CLOSING",
                _ => "UDP",
            }
            .into(),
            local: addr(k.family, &k.local),
            local_port: k.local_port,
            remote: addr(k.family, &k.remote),
            remote_port: k.remote_port,
            rule: state
                .rules
                .iter()
                .find(|r| r.counter == f.counter)
                .map_or_else(|| format!("#{}", f.counter), |r| r.id.clone()),
            age_s: now_ns.saturating_sub(f.created_ns) / 1_000_000_000,
            idle_s: now_ns.saturating_sub(f.last_ns) / 1_000_000_000,
            packets_out: f.packets_out,
            packets_in: f.packets_in,
        })
        .collect();
    v.sort_by(|a, b| b.age_s.cmp(&a.age_s).then(a.remote_port.cmp(&b.remote_port)));
    v
}

/// Render flows like `conntrack -L`.
pub fn render_flows(flows: &[FlowReport]) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    for f in flows {
        let _ = writeln!(
            o,
            "{} {} src={} dst={} sport={} dport={} rule={} age={}s idle={}s out={} in={}",
            f.proto,
            f.state,
            f.local,
            f.remote,
            f.local_port,
            f.remote_port,
            f.rule,
            f.age_s,
            f.idle_s,
            f.packets_out,
            f.packets_in
        );
    }
    let _ = writeln!(o, "{} flow(s)", flows.len());
    o
}

#[cfg(test)]
mod tests {
    use ps_common::layout::{FLOW_CNT_ENTRIES, FLOW_TCP_CLOSING, FLOW_TCP_ESTABLISHED, FLOW_UDP};

    use super::*;

    #[test]
    fn expired_entries_are_not_tracked_but_expired() {
        let policy = Policy {
            tcp_syn_timeout_s: 30,
            tcp_established_timeout_s: 3600,
            tcp_closing_timeout_s: 30,
            udp_timeout_s: 120,
            ..Policy::default()
        };
        let s = 1_000_000_000u64;
        let flow = |state, idle_s: u64, port| {
            let k = FlowKey { local_port: port, ..FlowKey::default() };
            (k, FlowState { state, last_ns: 1000 * s - idle_s * s, ..FlowState::default() })
        };
        let census = FlowCensus::of(
            vec![
                flow(FLOW_TCP_ESTABLISHED, 100, 1),
                flow(FLOW_TCP_CLOSING, 31, 2),
                flow(FLOW_TCP_CLOSING, 29, 3),
                flow(FLOW_UDP, 121, 4),
            ],
            &policy,
            1000 * s,
        );
        let ports: Vec<u16> = census.live.iter().map(|(k, _)| k.local_port).collect();
        assert_eq!((ports, census.tracked(), census.expired), (vec![1, 3], 2, 2));
        let mut flows = vec![0; FLOW_CNT_ENTRIES as usize];
        flows[FLOW_CNT_EXPIRED as usize] = 5;
        let mut counters = Counters { rules: vec![], stats: vec![], egress_rules: vec![], egress_stats: vec![], flows };
        census.count_expired(&mut counters);
        assert_eq!(counters.flows[FLOW_CNT_EXPIRED as usize], 7);
    }
}
