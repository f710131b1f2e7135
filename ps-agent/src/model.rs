//! The compiled rule set as `ps_common::Tables`, so the host runs the kernel's own
//! classifier on it (program tests compare the two; `explain` builds on it).
//!
//! Interface slots stand in for ifindexes here: ifindex `n` is slot `n` (1 = the first
//! enforced interface); any other ifindex is slot 0, an unconfigured interface.

use ps_common::{
    Tables,
    classify::{Decision, decide_slice},
    layout::{IfaceInfo, L4, MODE_DRY_RUN, MODE_ENFORCE, PORTS_PER_GEN, Policy, PortEntry, RuleEntry, State},
};

use crate::{
    compile::RuleSet,
    config::{Cidr, Mode},
};

/// A rule set with a mode, readable as the program reads its maps.
pub struct Model<'a> {
    set: &'a RuleSet,
    mode: u32,
}

impl<'a> Model<'a> {
    /// Wrap `set`.
    pub fn new(set: &'a RuleSet, mode: Mode) -> Self {
        Self { set, mode: if mode == Mode::DryRun { MODE_DRY_RUN } else { MODE_ENFORCE } }
    }

    /// Classify `frame` as arriving on interface slot `slot`.
    pub fn decide(&self, frame: &[u8], slot: u32) -> Decision {
        decide_slice(frame, slot, self).expect("host tables always answer")
    }
}

impl Tables for Model<'_> {
    fn state(&self) -> Option<State> {
        Some(State { generation: 0, mode: self.mode })
    }
    fn policy(&self, _generation: u32) -> Option<Policy> {
        Some(self.set.policy)
    }
    fn iface(&self, ifindex: u32) -> Option<IfaceInfo> {
        let slot = if ifindex >= 1 && (ifindex as usize) <= self.set.interfaces.len() { ifindex } else { 0 };
        Some(IfaceInfo { slot, flags: 0 })
    }
    fn port(&self, index: u32) -> Option<PortEntry> {
        if index >= PORTS_PER_GEN {
            return Some(PortEntry::default());
        }
        let l4 = if index / 65536 == 0 { L4::Tcp } else { L4::Udp };
        Some(self.set.ports.get(&(l4, (index % 65536) as u16)).copied().unwrap_or_default())
    }
    fn rule(&self, index: u32) -> Option<RuleEntry> {
        self.set.entries.get(index as usize).copied()
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
