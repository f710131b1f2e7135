//! Counter maps that survive an agent restart. `run` makes every policy map fresh at each
//! start, but the maps of [`names::COUNTER_MAPS`] are pinned under the pin directory at load
//! time (`EbpfLoader::map_pin_path`: an existing pin is opened and reused). Before that,
//! each pinned counter map is checked against what this binary and policy need (map type,
//! key and value size, entries) and against the layout hash in `PS_EPOCH` (rule ids in
//! counter order, interfaces in slot order, counter stride): if anything differs, all
//! counter pins are removed with a warning and the counters start again from zero, with a
//! new epoch.

use std::{
    fs,
    path::{Path, PathBuf},
};

use aya::maps::{Array, Map, MapData, MapType};
use log::{info, warn};
use ps_common::{
    MAX_IFACES, STAT_STRIDE,
    layout::Counter,
    names,
    observe::{DropKey, DropVal, Epoch, WDROP_ENTRIES},
};

use super::{DataplaneError, pins::read_epoch};
use crate::{clock, policy::compile::RuleSet};

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

/// Before load: create `dir`, keep the counter pins under it if they fit this policy (else
/// remove them, see [`reuse_or_reset`]), and return the pin path of every counter map for
/// `EbpfLoader::map_pin_path`.
pub fn prepare(dir: &Path, rules_cap: u32, layout: u64) -> Result<Vec<(&'static str, PathBuf)>, DataplaneError> {
    fs::create_dir_all(dir).map_err(|source| DataplaneError::Io {
        action: "create pin directory",
        path: dir.into(),
        source,
    })?;
    reuse_or_reset(dir, rules_cap, layout)?;
    Ok(names::COUNTER_MAPS.into_iter().map(|n| (n, dir.join(n))).collect())
}

/// Keep the counter pins under `dir` if they fit this policy, else remove them all (with a
/// warning) so that load creates them anew.
pub fn reuse_or_reset(dir: &Path, rules_cap: u32, layout: u64) -> Result<CounterPins, DataplaneError> {
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
            Err(source) => return Err(DataplaneError::StalePin { path, source }),
        }
    }
    Ok(CounterPins::Reset(why))
}

/// After load: start the epoch if the counters are new (an empty `PS_EPOCH`); return
/// since when the counters count (nanoseconds since the Unix epoch).
pub fn init_epoch(map: &mut Map, layout: u64) -> Result<u64, aya::maps::MapError> {
    let mut a: Array<&mut MapData, Epoch> = Array::try_from(map)?;
    let e = a.get(&0, 0)?;
    if e.since_unix_ns != 0 && e.layout == layout {
        info!(
            "counters: reusing the pinned counters, counting since {}",
            clock::fmt_unix(e.since_unix_ns / 1_000_000_000)
        );
        return Ok(e.since_unix_ns);
    }
    let e = Epoch { since_unix_ns: clock::unix_now_ns(), layout };
    a.set(0, e, 0)?;
    Ok(e.since_unix_ns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{
        compile::{HostFacts, compile},
        config::Config,
    };

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
    fn every_counter_map_has_a_shape() {
        for n in names::COUNTER_MAPS {
            assert!(expected_shape(n, 1024).is_some(), "{n}");
        }
        assert!(expected_shape(names::MAP_PORTS, 1024).is_none());
    }
}
