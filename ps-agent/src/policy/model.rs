//! The compiled rule set as `ps_common::Tables`, so the host runs the kernel's own
//! classifier on it (program tests compare the two; `explain` builds on it).
//!
//! Interface slots stand in for ifindexes here: ifindex `n` is slot `n` (1 = the first
//! enforced interface); any other ifindex is slot 0, an unconfigured interface.

use ps_common::{
    Tables,
    classify::{Decision, decide_quick, decide_slice, decide_walk},
    layout::{IfaceInfo, L4, PORTS_PER_GEN, Policy, PortEntry, RuleEntry, State},
};

use crate::{
    policy::compile::RuleSet,
    policy::config::{Cidr, Mode},
};

/// A rule set with a mode, readable as the program reads its maps.
pub struct Model<'a> {
    set: &'a RuleSet,
    state: State,
    /// Indexed by ifindex: slot n at ifindex n.
    ifaces: Vec<IfaceInfo>,
}

/// What `PS_PORTS` holds for a port no rule uses.
const NO_PORT: PortEntry = PortEntry::EMPTY;

impl<'a> Model<'a> {
    /// Wrap `set`.
    pub fn new(set: &'a RuleSet, mode: Mode) -> Self {
        let mode = mode.word();
        let ifaces = (0..=set.interfaces.len() as u32).map(|slot| IfaceInfo { slot, flags: 0 }).collect();
        Self { set, state: State { generation: 0, mode }, ifaces }
    }

    /// Classify `frame` as arriving on interface slot `slot`.
    pub fn decide(&self, frame: &[u8], slot: u32) -> Decision {
        decide_slice(frame, slot, self).expect("host tables always answer")
    }

    /// The two steps of [`Model::decide`] apart: what `decide_quick` says (`None`: it
    /// declines) and what `decide_walk` says. Tests assert that the first, where it
    /// answers, is the second.
    pub fn decide_steps(&self, frame: &[u8], slot: u32) -> (Option<Decision>, Decision) {
        let start = frame.as_ptr() as usize;
        let end = start + frame.len();
        // SAFETY: the slice is readable for the duration of the calls.
        unsafe {
            (
                decide_quick(start, end, slot, self),
                decide_walk(start, end, slot, self).expect("host tables always answer"),
            )
        }
    }
}

impl Tables for Model<'_> {
    fn state(&self) -> Option<&State> {
        Some(&self.state)
    }
    fn policy(&self, _generation: u32) -> Option<&Policy> {
        Some(&self.set.policy)
    }
    fn iface(&self, ifindex: u32) -> Option<&IfaceInfo> {
        // Any other ifindex: slot 0, an unconfigured interface.
        Some(self.ifaces.get(ifindex as usize).unwrap_or(&self.ifaces[0]))
    }
    fn port(&self, index: u32) -> Option<&PortEntry> {
        if index >= PORTS_PER_GEN {
            return Some(&NO_PORT);
        }
        let l4 = if index / 65536 == 0 { L4::Tcp } else { L4::Udp };
        Some(self.set.ports.get(&(l4, (index % 65536) as u16)).unwrap_or(&NO_PORT))
    }
    fn port_listed(&self, _generation: u32, l4: L4, port: u16, reply: bool) -> bool {
        self.set.ports.get(&(l4, port)).is_some_and(|e| if reply { e.reply != 0 } else { e.inbound != 0 })
    }
    fn rule(&self, index: u32) -> Option<&RuleEntry> {
        self.set.entries.get(index as usize)
    }
    fn src_systems(&self, key: &[u8; 20]) -> u64 {
        // Longest prefix containing the address (the key's header: generation, family).
        let mut addr = [0u8; 16];
        addr.copy_from_slice(&key[4..]);
        let len = if key[1] == 4 { 32 } else { 128 };
        let host = Cidr { family: key[1], addr, len };
        self.set
            .src_prefixes
            .iter()
            .filter(|(c, _)| c.contains(&host))
            .max_by_key(|(c, _)| c.len)
            .map_or(0, |(_, m)| *m)
    }
}
