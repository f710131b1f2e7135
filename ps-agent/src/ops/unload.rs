//! `ps-agent unload`: remove what a (possibly crashed) agent left — its pins (maps, kept
//! links, recorded egress filters) under its pin directory and under the one its state
//! file names, netlink-attached ps-agent programs on the interfaces the state file lists
//! (kernels before 5.9 attach that way and keep them after a crash), and the state file.
//!
//! It acts only on what ps-agent makes: a pin directory must be a private directory on
//! bpffs ([`pindir::check`]), only the names ps-agent pins are removed from it, and every
//! field of the state file is checked before anything is done with it.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use crate::{
    dataplane::{DataplaneError, links, pindir},
    observe::state::AgentState,
    ops::{Done, coexist},
};

/// Why `unload` refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum UnloadError {
    /// Not a directory ps-agent would pin into.
    #[error("failed to unload: {0}")]
    PinDir(#[source] DataplaneError),
    /// The agent that owns the pins is still running.
    #[error(
        "failed to unload `{}`: the ps-agent that owns it{} is still running; stop it (`systemctl stop ps-agent`), or pass --force to remove its pins anyway",
        pin_dir.display(),
        pid.map_or(String::new(), |p| format!(" (pid {p})"))
    )]
    AgentAlive {
        /// Its pid, if known.
        pid: Option<u32>,
        /// The pin directory.
        pin_dir: PathBuf,
    },
    /// A file could not be removed.
    #[error("failed to remove `{}`: {source}", path.display())]
    Remove {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

/// See the module doc. Refuses while an agent holds `pin_dir` or `state_dir`, unless `force`.
pub fn unload(pin_dir: &Path, state_dir: &Path, force: bool) -> Result<Vec<Done>, UnloadError> {
    let mut done = Vec::new();
    pindir::check(pin_dir).map_err(UnloadError::PinDir)?;
    let running = [pin_dir, state_dir].into_iter().find(|d| d.exists() && pindir::locked(d));
    if let Some(dir) = running {
        let pid = pindir::holder(dir);
        if !force {
            return Err(UnloadError::AgentAlive { pid, pin_dir: pin_dir.into() });
        }
        let who = pid.map_or("the agent".into(), |p| format!("ps-agent pid {p}"));
        done.push(Done::found(format!("--force: {who} is still running; its XDP links go away only when it exits")));
    }
    let state_path = AgentState::path(state_dir);
    let state = fs::read_to_string(&state_path).ok().and_then(|t| serde_json::from_str::<AgentState>(&t).ok());
    let mut pin_dirs = vec![pin_dir.to_path_buf()];
    if let Some(s) = &state {
        if s.pin_dir != pin_dir {
            match pindir::check(&s.pin_dir) {
                Ok(()) => pin_dirs.push(s.pin_dir.clone()),
                Err(e) => {
                    done.push(Done::found(format!("ignored the pin directory {} names: {e}", state_path.display())))
                }
            }
        }
        detach_netlink(s, &mut done);
    }
    for d in &pin_dirs {
        for iface in links::remove_recorded_filters(&links::links_dir(d)) {
            done.push(Done::did(format!("detached the egress filter a kept agent left on `{iface}`")));
        }
        remove_ours(d, &mut done)?;
    }
    remove_state(&state_path, &mut done)?;
    if done.is_empty() {
        done.push(Done::found(format!(
            "nothing to unload: no pins under {} and no state file {}",
            pin_dir.display(),
            state_path.display()
        )));
    }
    Ok(done)
}

/// Netlink-attached ps-agent programs on the interfaces the state file lists (their names
/// checked to be interface names first).
fn detach_netlink(s: &AgentState, done: &mut Vec<Done>) {
    for a in &s.interfaces {
        let name = a.name.as_str();
        if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '\t', '\n']) {
            done.push(Done::found(format!("ignored interface `{name}` of the state file: not an interface name")));
            continue;
        }
        for p in coexist::detect(name).unwrap_or_default() {
            if p.is_ps_agent() && p.replaceable() {
                match coexist::detach_netlink(name, &p) {
                    Ok(()) => done.push(Done::did(format!("detached {p} from `{name}`"))),
                    Err(e) => done.push(Done::found(format!("could not detach {p} from `{name}`: {e}"))),
                }
            }
        }
    }
}

/// Remove from `dir` what ps-agent pins there (maps, kept links) and `dir` itself if that
/// empties it; anything else stays, and is named.
fn remove_ours(dir: &Path, done: &mut Vec<Done>) -> Result<(), UnloadError> {
    let Ok(entries) = fs::read_dir(dir) else { return Ok(()) };
    for e in entries.flatten() {
        let (path, name) = (e.path(), e.file_name().to_string_lossy().into_owned());
        if !pindir::is_ours(&name) {
            done.push(Done::found(format!("left {}: not ps-agent's", path.display())));
        } else if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_links(&path, done)?;
        } else {
            fs::remove_file(&path).map_err(|source| UnloadError::Remove { path: path.clone(), source })?;
            done.push(Done::did(format!("unpinned {}", path.display())));
        }
    }
    if fs::remove_dir(dir).is_ok() {
        done.push(Done::did(format!("removed {}", dir.display())));
    }
    Ok(())
}

/// The kept links under `dir` (`xdp-IFACE`, `tc-IFACE`): unpinned, they detach.
fn remove_links(dir: &Path, done: &mut Vec<Done>) -> Result<(), UnloadError> {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let (path, name) = (e.path(), e.file_name().to_string_lossy().into_owned());
        if !(name.starts_with("xdp-") || name.starts_with("tc-")) {
            done.push(Done::found(format!("left {}: not ps-agent's", path.display())));
            continue;
        }
        let removed =
            if e.file_type().is_ok_and(|t| t.is_dir()) { fs::remove_dir(&path) } else { fs::remove_file(&path) };
        removed.map_err(|source| UnloadError::Remove { path: path.clone(), source })?;
        done.push(Done::did(format!("unpinned {}", path.display())));
    }
    if fs::remove_dir(dir).is_ok() {
        done.push(Done::did(format!("removed {}", dir.display())));
    }
    Ok(())
}

fn remove_state(state_path: &Path, done: &mut Vec<Done>) -> Result<(), UnloadError> {
    for p in [state_path.to_path_buf(), state_path.with_extension("json.tmp")] {
        match fs::remove_file(&p) {
            Ok(()) => done.push(Done::did(format!("removed {}", p.display()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(UnloadError::Remove { path: p, source }),
        }
    }
    Ok(())
}
