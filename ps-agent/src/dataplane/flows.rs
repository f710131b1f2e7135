//! Flows the host already has when the agent starts: read from /proc/net and seeded into
//! the flow table, so that a (re)start does not cut a live connection.

use std::{fs, path::Path};

use aya::maps::{HashMap, MapData, PerCpuArray, PerCpuValues};
use ps_common::{
    layout::{
        Counter, FLOW_CNT_SEEDED, FLOW_TCP_CLOSING, FLOW_TCP_ESTABLISHED, FLOW_TCP_SYN_SENT, FLOW_UDP, FlowKey,
        FlowState,
    },
    names,
};

use super::{DataplaneError, Loaded, error::map_err};
use crate::policy::compile::{RuleKind, RuleSet};

impl Loaded {
    /// Fill the flow table with the outbound flows the kernel's sockets already have
    /// (read from /proc/net of this namespace), so that an agent (re)start does not cut
    /// a live connection. Returns how many flows were seeded.
    pub fn seed_flows(&mut self, set: &RuleSet) -> Result<usize, DataplaneError> {
        let now = crate::clock::monotonic_ns();
        let mut sockets = Vec::new();
        for (file, proto, v6) in [("tcp", 6u8, false), ("tcp6", 6, true), ("udp", 17, false), ("udp6", 17, true)] {
            if let Ok(text) = fs::read_to_string(Path::new("/proc/net").join(file)) {
                sockets.extend(parse_proc_net(&text, proto, v6));
            }
        }
        let mut map: HashMap<&mut MapData, FlowKey, FlowState> = {
            let m = self.map_mut(names::MAP_FLOWS)?;
            HashMap::try_from(m).map_err(map_err("open", names::MAP_FLOWS))?
        };
        let entries = seed_entries(set, &sockets);
        for &((key, counter), state) in &entries {
            let v = ps_common::track::flow_seeded(state, counter, now);
            map.insert(key, v, 0).map_err(map_err("write", names::MAP_FLOWS))?;
        }
        let n = entries.len();
        if n > 0 {
            // Count them in CPU 0's slot of FLOW_CNT_SEEDED.
            let m = self.map_mut(names::MAP_FLOW_CNT)?;
            let mut c: PerCpuArray<&mut MapData, Counter> =
                PerCpuArray::try_from(m).map_err(map_err("open", names::MAP_FLOW_CNT))?;
            let mut vals: Vec<Counter> =
                c.get(&FLOW_CNT_SEEDED, 0).map_err(map_err("read", names::MAP_FLOW_CNT))?.iter().copied().collect();
            vals[0].packets += n as u64;
            let vals = PerCpuValues::try_from(vals).map_err(|source| DataplaneError::Io {
                action: "build per-CPU values for",
                path: names::MAP_FLOW_CNT.into(),
                source,
            })?;
            c.set(FLOW_CNT_SEEDED, vals, 0).map_err(map_err("write", names::MAP_FLOW_CNT))?;
        }
        Ok(n)
    }
}

/// A socket from /proc/net/{tcp,tcp6,udp,udp6}.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Socket {
    /// IP protocol.
    pub proto: u8,
    /// 4 or 6 (IPv4-mapped IPv6 sockets are 4: that is what the wire carries).
    pub family: u8,
    /// Local address (IPv4 in the first 4 bytes).
    pub local: [u8; 16],
    /// Local port.
    pub local_port: u16,
    /// Remote address.
    pub remote: [u8; 16],
    /// Remote port.
    pub remote_port: u16,
    /// Kernel socket state (`TCP_ESTABLISHED` = 1, ...).
    pub state: u8,
}

fn proc_addr(hex: &str, v6: bool) -> Option<(u8, [u8; 16])> {
    let mut out = [0u8; 16];
    if !v6 {
        let v = u32::from_str_radix(hex, 16).ok()?;
        out[..4].copy_from_slice(&v.to_ne_bytes());
        return Some((4, out));
    }
    if hex.len() != 32 {
        return None;
    }
    for i in 0..4 {
        let v = u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16).ok()?;
        out[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
    }
    if out[..10].iter().all(|&b| b == 0) && out[10] == 0xff && out[11] == 0xff {
        let mut v4 = [0u8; 16];
        v4[..4].copy_from_slice(&out[12..]);
        return Some((4, v4));
    }
    Some((6, out))
}

/// Parse /proc/net/{tcp,udp}[6] text.
pub fn parse_proc_net(text: &str, proto: u8, v6: bool) -> Vec<Socket> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 {
            continue;
        }
        let (Some((l, lp)), Some((r, rp))) = (f[1].split_once(':'), f[2].split_once(':')) else { continue };
        let (Some((fam, local)), Some((_, remote))) = (proc_addr(l, v6), proc_addr(r, v6)) else { continue };
        let (Ok(local_port), Ok(remote_port), Ok(state)) =
            (u16::from_str_radix(lp, 16), u16::from_str_radix(rp, 16), u8::from_str_radix(f[3], 16))
        else {
            continue;
        };
        out.push(Socket { proto, family: fam, local, local_port, remote, remote_port, state });
    }
    out
}

/// The flows to seed: sockets connected to a remote port that a reply rule of `set`
/// admits, from a local port that rule allows. Returns (key, counter) and the flow state.
pub fn seed_entries(set: &RuleSet, sockets: &[Socket]) -> Vec<((FlowKey, u32), u32)> {
    let (eph_lo, eph_hi) = (set.policy.ephemeral_lo, set.policy.ephemeral_hi);
    let mut out = Vec::new();
    for s in sockets {
        let state = match (s.proto, s.state) {
            (6, 1) => FLOW_TCP_ESTABLISHED,
            (6, 2) => FLOW_TCP_SYN_SENT,
            (6, 4 | 5 | 8 | 9 | 11) => FLOW_TCP_CLOSING,
            (17, 1) => FLOW_UDP,
            _ => continue,
        };
        if s.remote_port == 0 {
            continue;
        }
        let transport = if s.proto == 6 { "tcp" } else { "udp" };
        let rule = set.rules.iter().find(|r| {
            r.kind == RuleKind::Reply
                && r.transport.as_str() == transport
                && r.ports.iter().any(|&(a, b)| (a..=b).contains(&s.remote_port))
                && r.local.is_some_and(|l| {
                    (l.ephemeral && (eph_lo..=eph_hi).contains(&s.local_port))
                        || l.explicit.is_some_and(|(a, b)| (a..=b).contains(&s.local_port))
                })
        });
        let Some(rule) = rule else { continue };
        let key = FlowKey {
            remote: s.remote,
            local: s.local,
            remote_port: s.remote_port,
            local_port: s.local_port,
            proto: s.proto,
            family: s.family,
            _pad: [0; 2],
        };
        out.push(((key, rule.counter), state));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{
        compile::{HostFacts, compile},
        config::Config,
    };

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100C6C6:AFC8 0200C6C6:13C6 01 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100C6C6:AFC9 0200C6C6:1770 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 100 0 0 10 0
   2: 00000000:01BB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 100 0 0 10 0
   3: 0100C6C6:01BB 0200C6C6:AFCA 01 00000000:00000000 00:00000000 00000000     0        0 4 1 0000000000000000 100 0 0 10 0
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st
   0: 000000FD000000000000000001000000:AFCB 000000FD000000000000000002000000:0050 02 0
   1: 0000000000000000FFFF00000100C6C6:AFCC 0000000000000000FFFF00000200C6C6:01BB 01 0
";

    #[test]
    fn proc_net_parses_v4_v6_and_mapped() {
        let v4 = parse_proc_net(TCP, 6, false);
        assert_eq!(v4.len(), 4);
        assert_eq!((v4[0].local_port, v4[0].remote_port, v4[0].state), (45000, 5062, 1));
        assert_eq!(&v4[0].local[..4], &[198, 198, 0, 1]);
        assert_eq!(&v4[0].remote[..4], &[198, 198, 0, 2]);
        let v6 = parse_proc_net(TCP6, 6, true);
        assert_eq!(v6[0].family, 6);
        assert_eq!(v6[0].local[0], 0xfd);
        assert_eq!(v6[0].local[15], 1);
        assert_eq!((v6[0].remote_port, v6[0].state), (80, 2));
        assert_eq!(v6[1].family, 4, "IPv4-mapped sockets carry IPv4 on the wire");
        assert_eq!(&v6[1].remote[..4], &[198, 198, 0, 2]);
    }

    #[test]
    fn seeding_keeps_only_outbound_matrix_flows() {
        let set = compile(&Config::shipped(), &HostFacts::typical()).unwrap();
        let mut sockets = parse_proc_net(TCP, 6, false);
        sockets.extend(parse_proc_net(TCP6, 6, true));
        let seeded = seed_entries(&set, &sockets);
        let ports: Vec<(u16, u16, u32)> =
            seeded.iter().map(|((k, _), st)| (k.local_port, k.remote_port, *st)).collect();
        // To SM 5062 (ps-04), to Domino 80 (ps-15, SYN sent), to 443 (ps-03+16+25).
        // Not: to 6000 (no row), the 443 listener, the accepted connection on 443.
        assert_eq!(
            ports,
            vec![
                (45000, 5062, FLOW_TCP_ESTABLISHED),
                (45003, 80, FLOW_TCP_SYN_SENT),
                (45004, 443, FLOW_TCP_ESTABLISHED)
            ]
        );
        let ps04 = set.rules.iter().find(|r| r.id == "ps-04").unwrap().counter;
        assert_eq!(seeded[0].0.1, ps04);
    }
}
