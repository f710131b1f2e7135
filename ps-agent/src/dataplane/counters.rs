//! Counters summed over CPUs, read from a loaded object or from the pins of a running agent.

use std::path::Path;

use aya::maps::{MapData, PerCpuArray, PerCpuValues};
use ps_common::{
    MAX_IFACES, STAT_STRIDE,
    layout::{Counter, FLOW_CNT_ENTRIES},
    names,
};

use super::{DataplaneError, error::map_err};

/// Counters summed over CPUs: per slot (0..MAX_IFACES), per counter or bucket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Ingress rule counters.
    pub rules: Vec<Vec<Counter>>,
    /// Ingress pass/drop/would-drop buckets (STAT_STRIDE per slot).
    pub stats: Vec<Vec<Counter>>,
    /// Egress rule counters.
    pub egress_rules: Vec<Vec<Counter>>,
    /// Egress buckets.
    pub egress_stats: Vec<Vec<Counter>>,
    /// Flow-table counters (`FLOW_CNT_*`), packets field.
    pub flows: Vec<u64>,
}

fn sum(v: &PerCpuValues<Counter>) -> Counter {
    v.iter().fold(Counter::default(), |a, c| Counter { packets: a.packets + c.packets, bytes: a.bytes + c.bytes })
}

fn grid<T: std::borrow::Borrow<MapData>>(
    m: &PerCpuArray<T, Counter>,
    name: &'static str,
    stride: u32,
) -> Result<Vec<Vec<Counter>>, DataplaneError> {
    let mut out = Vec::with_capacity(MAX_IFACES as usize);
    for slot in 0..MAX_IFACES {
        let mut r = Vec::with_capacity(stride as usize);
        for c in 0..stride {
            let v = m.get(&(slot * stride + c), 0).map_err(map_err("read", name))?;
            r.push(sum(&v));
        }
        out.push(r);
    }
    Ok(out)
}

impl Counters {
    pub(super) fn read<T: std::borrow::Borrow<MapData>>(
        open: impl Fn(&'static str) -> Result<PerCpuArray<T, Counter>, DataplaneError>,
        rules_cap: u32,
    ) -> Result<Self, DataplaneError> {
        let flows_map = open(names::MAP_FLOW_CNT)?;
        let mut flows = Vec::new();
        for i in 0..FLOW_CNT_ENTRIES {
            flows.push(sum(&flows_map.get(&i, 0).map_err(map_err("read", names::MAP_FLOW_CNT))?).packets);
        }
        Ok(Counters {
            rules: grid(&open(names::MAP_RULE_CNT)?, names::MAP_RULE_CNT, rules_cap)?,
            stats: grid(&open(names::MAP_STAT_CNT)?, names::MAP_STAT_CNT, STAT_STRIDE)?,
            egress_rules: grid(&open(names::MAP_ERULE_CNT)?, names::MAP_ERULE_CNT, rules_cap)?,
            egress_stats: grid(&open(names::MAP_ESTAT_CNT)?, names::MAP_ESTAT_CNT, STAT_STRIDE)?,
            flows,
        })
    }

    /// Read the counters pinned under `dir` by a running agent.
    pub fn read_pinned(dir: &Path, rules_cap: u32) -> Result<Self, DataplaneError> {
        Self::read(|name| super::pins::open(dir, name), rules_cap)
    }
}
