//! The maps a running agent pins under its pin directory, read (and the mode written) by
//! other processes: `stats`, `flows`, `report`, `enforce`, the metrics endpoint. Every map
//! is opened through [`open`], the one place that turns a pin into a typed aya map.

use std::path::Path;

use aya::maps::{Array, HashMap, Map, MapData, MapError, PerCpuHashMap};
use ps_common::{
    layout::{Control, FlowKey, FlowState, Policy},
    names,
    observe::{DropKey, DropVal, Epoch},
};

use super::DataplaneError;
use crate::policy::config::Mode;

fn pinned_err(action: &'static str, dir: &Path, map: &'static str) -> impl FnOnce(MapError) -> DataplaneError {
    let path = dir.join(map);
    move |source| DataplaneError::Pinned { action, path, source: Box::new(source) }
}

/// The map `name` pinned under `dir`, as the aya map type `M` (`Array<MapData, V>`,
/// `HashMap<MapData, K, V>`, ...).
///
/// # Errors
/// [`DataplaneError::Pinned`] when the pin is missing or is not a map of that type.
pub fn open<M: TryFrom<Map, Error = MapError>>(dir: &Path, name: &'static str) -> Result<M, DataplaneError> {
    let data = MapData::from_pin(dir.join(name)).map_err(pinned_err("open", dir, name))?;
    let map = Map::from_map_data(data).map_err(pinned_err("open", dir, name))?;
    M::try_from(map).map_err(pinned_err("open", dir, name))
}

/// Every entry of a hash map, skipping entries evicted while it is read.
fn entries<K, V>(
    dir: &Path,
    name: &'static str,
    iter: impl Iterator<Item = Result<(K, V), MapError>>,
) -> Result<Vec<(K, V)>, DataplaneError> {
    let mut out = Vec::new();
    for kv in iter {
        match kv {
            Ok(kv) => out.push(kv),
            Err(MapError::KeyNotFound) => continue,
            Err(e) => return Err(pinned_err("read", dir, name)(e)),
        }
    }
    Ok(out)
}

/// `PS_EPOCH` pinned under `dir`.
pub fn read_epoch(dir: &Path) -> Result<Epoch, DataplaneError> {
    let a: Array<MapData, Epoch> = open(dir, names::MAP_EPOCH)?;
    a.get(&0, 0).map_err(pinned_err("read", dir, names::MAP_EPOCH))
}

/// The would-drop table pinned under `dir`, the CPUs' values merged.
pub fn read_wdrop(dir: &Path) -> Result<Vec<(DropKey, DropVal)>, DataplaneError> {
    let h: PerCpuHashMap<MapData, DropKey, DropVal> = open(dir, names::MAP_WDROP)?;
    let per_cpu = entries(dir, names::MAP_WDROP, h.iter())?;
    Ok(per_cpu.into_iter().map(|(k, v)| (k, merge_cpus(v.iter()))).collect())
}

/// One flow's per-CPU values as one: counts added, the earliest first packet, and the
/// last packet (with its reason and source port) of whichever CPU saw it last.
pub fn merge_cpus<'a>(values: impl Iterator<Item = &'a DropVal>) -> DropVal {
    let mut m = DropVal { first_ns: u64::MAX, ..DropVal::default() };
    for v in values.filter(|v| v.packets > 0) {
        m.packets += v.packets;
        m.bytes += v.bytes;
        m.first_ns = m.first_ns.min(v.first_ns);
        if v.last_ns >= m.last_ns {
            (m.last_ns, m.reason, m.sport) = (v.last_ns, v.reason, v.sport);
        }
    }
    if m.packets == 0 {
        m.first_ns = 0;
    }
    m
}

/// The flows pinned under `dir` by a running agent.
pub fn read_flows(dir: &Path) -> Result<Vec<(FlowKey, FlowState)>, DataplaneError> {
    let h: HashMap<MapData, FlowKey, FlowState> = open(dir, names::MAP_FLOWS)?;
    entries(dir, names::MAP_FLOWS, h.iter())
}

/// Entries the flow table holds at most, as pinned under `dir`.
pub fn flow_capacity(dir: &Path) -> Result<u32, DataplaneError> {
    let data = MapData::from_pin(dir.join(names::MAP_FLOWS)).map_err(pinned_err("open", dir, names::MAP_FLOWS))?;
    let info = data.info().map_err(pinned_err("inspect", dir, names::MAP_FLOWS))?;
    Ok(info.max_entries())
}

/// Mode of the agent whose maps are pinned under `dir`.
pub fn read_mode(dir: &Path) -> Result<Mode, DataplaneError> {
    let a: Array<MapData, Control> = open(dir, names::MAP_STATE)?;
    let c = a.get(&0, 0).map_err(pinned_err("read", dir, names::MAP_STATE))?;
    Ok(Mode::from_word(c.state.mode))
}

/// The active policy of the agent whose maps are pinned under `dir` (its flow timeouts).
pub fn read_policy(dir: &Path) -> Result<Policy, DataplaneError> {
    let a: Array<MapData, Control> = open(dir, names::MAP_STATE)?;
    let c = a.get(&0, 0).map_err(pinned_err("read", dir, names::MAP_STATE))?;
    Ok(c.policy[(c.state.generation & 1) as usize])
}

/// Set the mode of the agent whose maps are pinned under `dir` (`enforce`, `dry-run`).
pub fn write_mode(dir: &Path, mode: Mode) -> Result<(), DataplaneError> {
    let mut a: Array<MapData, Control> = open(dir, names::MAP_STATE)?;
    let mut c = a.get(&0, 0).map_err(pinned_err("read", dir, names::MAP_STATE))?;
    c.state.mode = mode.word();
    a.set(0, c, 0).map_err(pinned_err("write", dir, names::MAP_STATE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_merge() {
        let v = |packets, first_ns, last_ns, reason, sport| DropVal {
            packets,
            bytes: packets * 60,
            first_ns,
            last_ns,
            reason,
            sport,
            _pad: 0,
        };
        let m = merge_cpus([v(3, 10, 50, 0, 1000), v(0, 0, 0, 0, 0), v(2, 5, 70, 1, 2000)].iter());
        assert_eq!(m, v(5, 5, 70, 1, 2000));
        assert_eq!(merge_cpus([v(0, 0, 0, 0, 0)].iter()).packets, 0);
    }
}
