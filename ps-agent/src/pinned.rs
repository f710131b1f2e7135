//! Pinned observability maps (issue 5), next to `load`, and like it calling aya: the
//! counter maps that survive an agent restart (reuse, layout check, epoch), and the
//! readers of the would-drop table and of the counters epoch for `stats`, `report` and
//! the metrics endpoint.
//!
//! `run` makes every policy map fresh at each start, but the maps of
//! [`names::COUNTER_MAPS`] are pinned under the pin directory at load time
//! (`EbpfLoader::map_pin_path`: an existing pin is opened and reused). Before that, each
//! pinned counter map is checked against what this binary and policy need (map type, key
//! and value size, entries) and against the layout hash in `PS_EPOCH` (rule ids in counter
//! order, interfaces in slot order, counter stride): if anything differs, all counter pins
//! are removed with a warning and the counters start again from zero, with a new epoch.

use std::{
    fs,
    path::{Path, PathBuf},
};

use aya::maps::{Array, Map, MapData, MapType, PerCpuHashMap};
use log::{info, warn};
use ps_common::{
    MAX_IFACES, STAT_STRIDE,
    layout::Counter,
    names,
    observe::{DropKey, DropVal, Epoch, WDROP_ENTRIES},
};

use crate::compile::RuleSet;

/// Why a pinned map could not be read or prepared.
#[derive(Debug, thiserror::Error)]
pub enum PinnedError {
    /// A map operation failed.
    #[error("failed to {action} pinned map {path}: {source}")]
    Map {
        /// What was being done.
        action: &'static str,
        /// Pin path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// A stale pin could not be removed.
    #[error("failed to remove stale pin {path}: {source}; remove it by hand or run `ps-agent unload`")]
    Remove {
        /// Pin path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

fn map_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(aya::maps::MapError) -> PinnedError + 'a {
    move |source| PinnedError::Map { action, path: path.into(), source: Box::new(source) }
}

/// Hash of the counter layout: which rule each counter slot counts, which interface each
/// slot is, and the stride (FNV-1a, stable across builds).
pub fn layout_hash(set: &RuleSet, ifaces: &[(String, u32)], rules_cap: u32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |b: &[u8]| {
        for &x in b {
            h ^= x as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    };
    feed(&rules_cap.to_le_bytes());
    for r in &set.rules {
        feed(format!("{}/{}/{}/{}", r.counter, r.id, r.transport.as_str(), r.kind.as_str()).as_bytes());
    }
    feed(b"--");
    for (name, _) in ifaces {
        feed(name.as_bytes());
    }
    h
}

/// What a counter map must look like: (type, key size, value size, entries).
pub fn expected_shape(name: &str, rules_cap: u32) -> Option<(MapType, u32, u32, u32)> {
    let c = size_of::<Counter>() as u32;
    Some(match name {
        n if n == names::MAP_RULE_CNT || n == names::MAP_ERULE_CNT => {
            (MapType::PerCpuArray, 4, c, MAX_IFACES * rules_cap)
        }
        n if n == names::MAP_STAT_CNT || n == names::MAP_ESTAT_CNT => {
            (MapType::PerCpuArray, 4, c, MAX_IFACES * STAT_STRIDE)
        }
        n if n == names::MAP_WDROP => {
            (MapType::LruPerCpuHash, size_of::<DropKey>() as u32, size_of::<DropVal>() as u32, WDROP_ENTRIES)
        }
        n if n == names::MAP_EPOCH => (MapType::Array, 4, size_of::<Epoch>() as u32, 1),
        _ => return None,
    })
}

/// What [`prepare_counter_pins`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CounterPins {
    /// No counter pins: the counters start now.
    Fresh,
    /// Every counter map is pinned and fits: the counters go on.
    Reused,
    /// Pins were there but did not fit (the reason); removed, the counters start now.
    Reset(String),
}

/// Why the pinned counters under `dir` cannot be reused, if they cannot (`None`: they
/// fit, or there are none).
fn incompatibility(dir: &Path, rules_cap: u32, layout: u64) -> Option<String> {
    let present: Vec<&str> = names::COUNTER_MAPS.into_iter().filter(|n| dir.join(n).exists()).collect();
    if present.is_empty() {
        return None;
    }
    if present.len() != names::COUNTER_MAPS.len() {
        return Some(format!("only {} of the {} counter maps are pinned", present.len(), names::COUNTER_MAPS.len()));
    }
    for name in names::COUNTER_MAPS {
        let path = dir.join(name);
        let want = expected_shape(name, rules_cap)?;
        let info = match MapData::from_pin(&path).and_then(|d| d.info()) {
            Ok(i) => i,
            Err(e) => return Some(format!("{name}: cannot open the pin: {e}")),
        };
        let got = (info.map_type().ok(), info.key_size(), info.value_size(), info.max_entries());
        if got != (Some(want.0), want.1, want.2, want.3) {
            return Some(format!(
                "{name}: pinned as {:?} key {} value {} entries {}, this agent needs {:?} key {} value {} entries {}",
                got.0, got.1, got.2, got.3, want.0, want.1, want.2, want.3
            ));
        }
    }
    match read_epoch(dir) {
        Ok(e) if e.layout == layout => None,
        Ok(e) if e.since_unix_ns == 0 => Some("no counters epoch".into()),
        Ok(_) => Some("the rules or interfaces changed: counter slots would count other rules".into()),
        Err(e) => Some(e.to_string()),
    }
}

/// Before load: keep the counter pins under `dir` if they fit this policy, else remove
/// them all (with a warning) so that load creates them anew.
pub fn prepare_counter_pins(dir: &Path, rules_cap: u32, layout: u64) -> Result<CounterPins, PinnedError> {
    let any = names::COUNTER_MAPS.into_iter().any(|n| dir.join(n).exists());
    let Some(why) = incompatibility(dir, rules_cap, layout) else {
        return Ok(if any { CounterPins::Reused } else { CounterPins::Fresh });
    };
    warn!("pinned counters under {} are not reused ({why}); counting starts from zero", dir.display());
    for name in names::COUNTER_MAPS {
        let path = dir.join(name);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(PinnedError::Remove { path, source }),
        }
    }
    Ok(CounterPins::Reset(why))
}

/// Wall clock, nanoseconds since the Unix epoch.
pub fn unix_now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// After load: start the epoch if the counters are new (an empty `PS_EPOCH`); return
/// since when the counters count (nanoseconds since the Unix epoch).
pub fn init_epoch(map: &mut Map, layout: u64) -> Result<u64, aya::maps::MapError> {
    let mut a: Array<&mut MapData, Epoch> = Array::try_from(map)?;
    let e = a.get(&0, 0)?;
    if e.since_unix_ns != 0 && e.layout == layout {
        info!("counters: reusing the pinned counters, counting since {}", fmt_unix(e.since_unix_ns / 1_000_000_000));
        return Ok(e.since_unix_ns);
    }
    let e = Epoch { since_unix_ns: unix_now_ns(), layout };
    a.set(0, e, 0)?;
    Ok(e.since_unix_ns)
}

fn open_pinned(path: &Path) -> Result<Map, PinnedError> {
    let data = MapData::from_pin(path).map_err(map_err("open", path))?;
    Map::from_map_data(data).map_err(map_err("open", path))
}

/// `PS_EPOCH` pinned under `dir`.
pub fn read_epoch(dir: &Path) -> Result<Epoch, PinnedError> {
    let path = dir.join(names::MAP_EPOCH);
    let a: Array<MapData, Epoch> = Array::try_from(open_pinned(&path)?).map_err(map_err("open", &path))?;
    a.get(&0, 0).map_err(map_err("read", &path))
}

/// The would-drop table pinned under `dir`, the CPUs' values merged.
pub fn read_wdrop(dir: &Path) -> Result<Vec<(DropKey, DropVal)>, PinnedError> {
    let path = dir.join(names::MAP_WDROP);
    let h: PerCpuHashMap<MapData, DropKey, DropVal> =
        PerCpuHashMap::try_from(open_pinned(&path)?).map_err(map_err("open", &path))?;
    let mut out = Vec::new();
    for kv in h.iter() {
        match kv {
            Ok((k, v)) => out.push((k, merge_cpus(v.iter()))),
            // Evicted while we iterate.
            Err(aya::maps::MapError::KeyNotFound) => continue,
            Err(e) => return Err(map_err("read", &path)(e)),
        }
    }
    Ok(out)
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

/// Why a snapshot of the running agent could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// No state file.
    #[error("ps-agent is not running: no state file at {} (start it with `ps-agent run`)", path.display())]
    NotRunning {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The state file does not parse.
    #[error("failed to parse state file {}: {source}", path.display())]
    Parse {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// Reading the maps failed.
    #[error(transparent)]
    Load(#[from] crate::load::LoadError),
    /// Reading an observability map failed.
    #[error(transparent)]
    Pinned(#[from] PinnedError),
}

/// The state file of the agent running with `state_dir`.
pub fn read_state(state_dir: &Path) -> Result<crate::observe::AgentState, SnapshotError> {
    let path = crate::observe::AgentState::path(state_dir);
    let text = fs::read_to_string(&path).map_err(|_| SnapshotError::NotRunning { path: path.clone() })?;
    serde_json::from_str(&text).map_err(|source| SnapshotError::Parse { path, source })
}

/// The state and the `stats` report of the agent running with `state_dir`, read from its
/// pinned maps now.
pub fn snapshot(state_dir: &Path) -> Result<(crate::observe::AgentState, crate::observe::StatsReport), SnapshotError> {
    use crate::load;
    let state = read_state(state_dir)?;
    let counters = load::Counters::read_pinned(&state.pin_dir, state.rules_cap)?;
    let mode = load::read_pinned_mode(&state.pin_dir)?;
    let tracked = load::read_pinned_flows(&state.pin_dir)?.len() as u64;
    let capacity = load::pinned_flow_capacity(&state.pin_dir)? as u64;
    let report = crate::observe::report(&state, &counters, mode, tracked, capacity);
    Ok((state, report))
}

/// `YYYY-MM-DD HH:MM:SS UTC` for seconds since the Unix epoch (no time-zone database).
pub fn fmt_unix(secs: u64) -> String {
    let days = secs / 86_400;
    let s = secs % 86_400;
    // Civil from days (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", s / 3600, s / 60 % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        compile::{HostFacts, compile},
        config::Config,
    };

    #[test]
    fn dates() {
        assert_eq!(fmt_unix(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(fmt_unix(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(fmt_unix(951_782_400), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn layout_hash_follows_rules_and_interfaces() {
        let set = compile(&Config::shipped(), &HostFacts::typical()).unwrap();
        let ifs = vec![("eth0".to_string(), 2), ("eth1".to_string(), 3)];
        let h = layout_hash(&set, &ifs, 1024);
        assert_eq!(h, layout_hash(&set, &[("eth0".into(), 9), ("eth1".into(), 10)], 1024), "ifindex is not layout");
        assert_ne!(h, layout_hash(&set, &ifs[..1], 1024));
        assert_ne!(h, layout_hash(&set, &[ifs[1].clone(), ifs[0].clone()], 1024));
        assert_ne!(h, layout_hash(&set, &ifs, 2048));
        let mut fewer = set.clone();
        fewer.rules.pop();
        assert_ne!(h, layout_hash(&fewer, &ifs, 1024));
    }

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

    #[test]
    fn every_counter_map_has_a_shape() {
        for n in names::COUNTER_MAPS {
            assert!(expected_shape(n, 1024).is_some(), "{n}");
        }
        assert!(expected_shape(names::MAP_PORTS, 1024).is_none());
    }
}
