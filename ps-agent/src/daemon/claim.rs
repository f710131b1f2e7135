//! Claiming what an agent owns before it loads anything: its state and pin directories,
//! and the interfaces (no other XDP program may hold them, unless `--force` may replace it).

use std::{fs, path::Path};

use log::warn;
use ps_common::names;

use super::RunError;
use crate::{
    dataplane::pindir::{self, Claim},
    observe::state::AgentState,
    ops::coexist,
};

/// This agent's directories, locked until it exits.
pub(super) struct Claims {
    /// The state directory.
    pub _state: Claim,
    /// The pin directory.
    pub _pins: Claim,
}

/// Take `state_dir` and `pin_dir` for this agent (created private, or checked, and locked:
/// a second agent with either is refused, naming the first); then clear what a stopped
/// agent left there: its state file and its pins but the counters.
pub(super) fn claim(state_dir: &Path, pin_dir: &Path) -> Result<Claims, RunError> {
    let state = pindir::claim_state_dir(state_dir)?;
    let pins = pindir::claim_pin_dir(pin_dir)?;
    let path = AgentState::path(state_dir);
    if let Ok(text) = fs::read_to_string(&path)
        && let Ok(s) = serde_json::from_str::<AgentState>(&text)
    {
        warn!("removing the state of ps-agent pid {}, which is not running", s.pid);
    }
    let _ = fs::remove_file(&path);
    unpin(pin_dir);
    Ok(Claims { _state: state, _pins: pins })
}

/// Remove the pins of a run but the counters (the next start reuses them:
/// `crate::dataplane::counter_pins`; `ps-agent unload` removes them) and the kept links:
/// only names ps-agent pins, never anything else that may be there.
pub(super) fn unpin(pin_dir: &Path) {
    if pindir::check(pin_dir).is_err() {
        return;
    }
    for name in names::PINNED_MAPS.into_iter().filter(|n| !names::COUNTER_MAPS.contains(n)) {
        let _ = fs::remove_file(pin_dir.join(name));
    }
}

/// Before anything is attached: refuse if another XDP program holds one of `ifaces`, naming
/// it. With `force`, detach the netlink-attached ones — but only once every interface has
/// been checked, so a `bpf_link` on the last interface still leaves the others untouched.
pub(super) fn make_room(ifaces: &[(String, u32)], force: bool) -> Result<(), RunError> {
    let mut replace = Vec::new();
    for (iface, _) in ifaces {
        // Without `ip` the kernel still refuses a second program (EBUSY, with a hint), so a
        // failed look is a warning, not a reason not to start.
        let found = coexist::detect(iface).unwrap_or_else(|e| {
            warn!("cannot check `{iface}` for other XDP programs: {e}; attaching anyway");
            vec![]
        });
        for owner in found {
            if force && owner.replaceable() {
                replace.push((iface, owner));
                continue;
            }
            let hint = if force {
                format!("--force replaces only netlink attachments; {}", owner.hint(iface))
            } else {
                owner.hint(iface)
            };
            return Err(RunError::Occupied { iface: iface.clone(), owner, hint });
        }
    }
    for (iface, owner) in replace {
        coexist::detach_netlink(iface, &owner).map_err(|source| RunError::Coexist { iface: iface.clone(), source })?;
        warn!("--force: detached {owner} from `{iface}` to replace it");
    }
    Ok(())
}

/// An attach the kernel refused because a program is there already (a race with
/// [`make_room`], or no `ip` to look with): name that program and what to do about it.
pub(super) fn name_the_holder(e: crate::dataplane::DataplaneError) -> RunError {
    let Some(iface) = e.busy_interface().map(String::from) else { return e.into() };
    match coexist::detect(&iface).ok().and_then(|found| found.into_iter().next()) {
        Some(owner) => {
            let hint = owner.hint(&iface);
            RunError::Occupied { iface, owner, hint }
        }
        None => e.into(),
    }
}
