//! Writing a compiled rule set into the maps: one generation at a time, then one word
//! flips the programs over to it (`Control` says why every half-done write is safe).

use aya::maps::{Array, LpmTrie, MapData, lpm_trie::Key as LpmKey};
use ps_common::layout::{
    Control, IfaceInfo, POLICY_STATEFUL, Policy, PortEntry, RuleEntry, SRC_KEY_HEADER_BITS, State, port_index,
    src_key_data, write_port_bits,
};
use ps_common::names;

use super::{DataplaneError, Loaded, error::map_err};
use crate::policy::{compile::RuleSet, config::Mode};

impl Loaded {
    /// Turn stateful reply admission off in the active policy (the fallback when the
    /// egress program cannot be attached).
    pub fn make_stateless(&mut self) -> Result<(), DataplaneError> {
        let Some((mut set, g, mode)) = self.policy.clone() else { return Ok(()) };
        set.policy.flags &= !POLICY_STATEFUL;
        self.write_policy(&set, g, mode)
    }

    /// Write `set` into `generation` and make it active with `mode`.
    pub fn write_policy(&mut self, set: &RuleSet, generation: u32, mode: Mode) -> Result<(), DataplaneError> {
        let g = generation & 1;
        self.policy = Some((set.clone(), g, mode));
        let cap = self.rules_cap;
        if set.entries.len() as u32 > cap {
            return Err(DataplaneError::TooBig { what: "rule entries", needed: set.entries.len(), cap });
        }
        if set.counters_used() > cap {
            return Err(DataplaneError::TooBig { what: "counter slots", needed: set.counters_used() as usize, cap });
        }
        let policy = Policy { rules_cap: cap, ..set.policy };
        // The idle generation's settings and port bits; the flip is a second write (see
        // `Control`).
        self.update_control(|c| {
            c.policy[g as usize] = policy;
            write_port_bits(&mut c.port_bits, g, set.ports.iter().map(|(&(l4, port), e)| (l4, port, e)));
        })?;
        {
            let mut m: Array<_, RuleEntry> = self.array(names::MAP_RULES)?;
            for (i, e) in set.entries.iter().enumerate().skip(1) {
                m.set(g * cap + i as u32, e, 0).map_err(map_err("write", names::MAP_RULES))?;
            }
        }
        {
            let stale: Vec<_> =
                self.written[g as usize].iter().filter(|k| !set.ports.contains_key(k)).copied().collect();
            let mut m: Array<_, PortEntry> = self.array(names::MAP_PORTS)?;
            for (l4, port) in stale {
                m.set(port_index(g, l4, port), PortEntry::default(), 0).map_err(map_err("clear", names::MAP_PORTS))?;
            }
            for (&(l4, port), e) in &set.ports {
                let abs = |h: u32| if h == 0 { 0 } else { g * cap + h };
                let v = PortEntry { inbound: abs(e.inbound), reply: abs(e.reply), ..*e };
                m.set(port_index(g, l4, port), v, 0).map_err(map_err("write", names::MAP_PORTS))?;
            }
        }
        self.written[g as usize] = set.ports.keys().copied().collect();
        self.write_sources(set, g)?;
        self.set_state(State { generation: g, mode: mode.word() })?;
        self.generation = g;
        Ok(())
    }

    /// Replace generation `g`'s source prefixes in `PS_SRC`.
    pub(super) fn write_sources(&mut self, set: &RuleSet, g: u32) -> Result<(), DataplaneError> {
        let mut m: LpmTrie<&mut MapData, [u8; 20], u64> =
            LpmTrie::try_from(self.map_mut(names::MAP_SRC)?).map_err(map_err("open", names::MAP_SRC))?;
        let stale: Vec<LpmKey<[u8; 20]>> = m.keys().filter_map(Result::ok).filter(|k| k.data()[0] == g as u8).collect();
        for k in stale {
            m.remove(&k).map_err(map_err("clear", names::MAP_SRC))?;
        }
        for (c, mask) in &set.src_prefixes {
            let key = LpmKey::new(SRC_KEY_HEADER_BITS + c.len as u32, src_key_data(g, c.family, &c.addr));
            m.insert(&key, *mask, 0).map_err(map_err("write", names::MAP_SRC))?;
        }
        Ok(())
    }

    /// Interface `i` of `ifaces` gets slot `first_slot + i`.
    /// (Ifindexes were checked against `MAX_IFINDEX` before: `DataplaneError::IfindexTooLarge`.)
    pub(super) fn write_ifaces(&mut self, ifaces: &[(String, u32)], first_slot: u32) -> Result<(), DataplaneError> {
        self.update_control(|c| {
            for (i, (_, ifindex)) in ifaces.iter().enumerate() {
                if let Some(e) = c.ifaces.get_mut(*ifindex as usize) {
                    *e = IfaceInfo { slot: first_slot + i as u32, flags: 0 };
                }
            }
        })
    }

    pub(super) fn set_state(&mut self, s: State) -> Result<(), DataplaneError> {
        self.update_control(|c| c.state = s)
    }

    /// Change `PS_STATE[0]` with one write of the whole value (`Control` says why every
    /// half-done write is safe for the programs reading it meanwhile).
    pub(super) fn update_control(&mut self, change: impl FnOnce(&mut Control)) -> Result<(), DataplaneError> {
        let mut m: Array<_, Control> = self.array(names::MAP_STATE)?;
        let mut c = m.get(&0, 0).map_err(map_err("read", names::MAP_STATE))?;
        change(&mut c);
        m.set(0, c, 0).map_err(map_err("write", names::MAP_STATE))
    }

    /// Switch mode without touching the policy.
    pub fn set_mode(&mut self, mode: Mode) -> Result<(), DataplaneError> {
        self.update_control(|c| c.state.mode = mode.word())
    }

    /// The mode in force.
    pub fn mode(&self) -> Result<Mode, DataplaneError> {
        let m: Array<_, Control> =
            Array::try_from(self.map(names::MAP_STATE)?).map_err(map_err("open", names::MAP_STATE))?;
        let c = m.get(&0, 0).map_err(map_err("read", names::MAP_STATE))?;
        Ok(Mode::from_word(c.state.mode))
    }
}
