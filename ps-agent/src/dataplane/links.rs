//! Links that outlive the agent (`on_exit = "keep"`). With keep, every link is pinned under
//! the pin directory's `links/` as soon as it is attached, so a crash (SIGKILL, a panic,
//! the OOM killer) leaves the last policy enforcing; the next agent takes the links over
//! ([`Loaded::adopt`]) by replacing their programs atomically. A clean stop without keep
//! unpins and detaches them.
//!
//! A `bpf_link` (XDP from 5.9, TCX egress from 6.6) is pinned. Before 6.6 the egress
//! program is a netlink clsact filter, which no pin holds and which stays attached when
//! its process dies: its priority and handle are recorded as the name of an empty
//! directory, `tcf-IFACE-PRIORITY-HANDLE` (bpffs holds no regular files), so that the next
//! agent (or `unload`) can remove it.
//!
//! bpffs refuses names with a dot, which interface names may have (`eth0.100`): in pin
//! names a dot is written `%2e` and a percent sign `%25`.

use std::{
    fs,
    path::{Path, PathBuf},
};

use aya::programs::{
    TcAttachType,
    links::{FdLink, PinnedLink},
    tc::{SchedClassifierLink, SchedClassifierLinkId, TcHandle},
    xdp::XdpLinkId,
};
use log::warn;
use ps_common::names;

use super::{DataplaneError, Loaded, host};

/// Where the links of an agent with pin directory `pin_dir` are kept.
pub fn links_dir(pin_dir: &Path) -> PathBuf {
    pin_dir.join(names::LINKS_DIR)
}

/// The program a kept link attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// `ps_xdp` on the interface's XDP hook.
    Xdp,
    /// `ps_tc_egress` on the interface's egress.
    TcEgress,
}

/// The pin of the link of `hook` on `iface` under `dir` ([`links_dir`]).
pub fn link_pin(dir: &Path, hook: Hook, iface: &str) -> PathBuf {
    let prefix = match hook {
        Hook::Xdp => "xdp",
        Hook::TcEgress => "tc",
    };
    dir.join(format!("{prefix}-{}", pin_name(iface)))
}

/// `iface` as a bpffs name: no dot.
fn pin_name(iface: &str) -> String {
    iface.replace('%', "%25").replace('.', "%2e")
}

/// Prefix of a netlink egress filter's record.
const FILTER: &str = "tcf-";

/// The record of a netlink egress filter on `iface` under `dir`.
fn filter_record(dir: &Path, iface: &str, priority: u16, handle: u32) -> PathBuf {
    dir.join(format!("{FILTER}{}-{priority}-{handle}", pin_name(iface)))
}

/// The recorded filters under `dir`: (record, interface, priority, handle).
fn filter_records(dir: &Path) -> Vec<(PathBuf, String, u16, u32)> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(FILTER) else { continue };
        let mut parts = rest.rsplitn(3, '-');
        let (Some(handle), Some(prio), Some(iface)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let (Ok(handle), Ok(prio)) = (handle.parse(), prio.parse()) else { continue };
        out.push((e.path(), iface.replace("%2e", ".").replace("%25", "%"), prio, handle));
    }
    out
}

/// Whether a previous agent kept its XDP link on `iface` under `dir`.
pub fn kept(dir: &Path, iface: &str) -> bool {
    link_pin(dir, Hook::Xdp, iface).exists()
}

/// A link this agent holds outside its programs' link maps, so that it outlives the
/// process.
pub(super) struct Kept {
    iface: String,
    hook: Hook,
    link: KeptLink,
}

enum KeptLink {
    /// A `bpf_link`, pinned.
    Pinned(PinnedLink),
    /// A netlink egress filter, recorded in its `.filter` file.
    Filter(SchedClassifierLink),
}

impl Loaded {
    /// Hold the XDP link just attached on `iface`: pinned if keeping and it is a
    /// `bpf_link`, else in the program's link map (it goes away with the process).
    pub(super) fn hold_xdp(&mut self, iface: &str, id: XdpLinkId) -> Result<(), DataplaneError> {
        let Some(dir) = self.keep.clone() else {
            self.links.push((iface.into(), id));
            return Ok(());
        };
        // Only a bpf_link can be pinned; a netlink attachment (kernels without XDP links)
        // must stay in the program's hands, where it can still be detached.
        if !host::xdp_links() {
            warn!(
                "`{iface}`: XDP is attached through netlink, not a bpf_link (5.9+); a crash of the agent detaches it"
            );
            self.links.push((iface.into(), id));
            return Ok(());
        }
        let link = self.xdp_mut()?.take_link(id).map_err(take_err(names::PROG_XDP))?;
        let pinned = pin_link(link.try_into(), &link_pin(&dir, Hook::Xdp, iface), iface)?;
        self.kept.push(Kept { iface: iface.into(), hook: Hook::Xdp, link: KeptLink::Pinned(pinned) });
        Ok(())
    }

    /// Hold the egress link just attached on `iface`: pinned (TCX) or recorded (a netlink
    /// filter) if keeping, else in the program's link map.
    pub(super) fn hold_tc(&mut self, iface: &str, id: SchedClassifierLinkId) -> Result<(), DataplaneError> {
        let Some(dir) = self.keep.clone() else {
            self.tc_links.push((iface.into(), id));
            return Ok(());
        };
        let link = self.tc_mut()?.take_link(id).map_err(take_err(names::PROG_TC_EGRESS))?;
        let link = match (link.priority(), link.handle()) {
            (Ok(prio), Ok(handle)) => {
                let record = filter_record(&dir, iface, prio, u32::from(handle));
                fs::create_dir_all(&record).map_err(|source| DataplaneError::Io {
                    action: "record the egress filter in",
                    path: record,
                    source,
                })?;
                KeptLink::Filter(link)
            }
            _ => KeptLink::Pinned(pin_link(link.try_into(), &link_pin(&dir, Hook::TcEgress, iface), iface)?),
        };
        self.kept.push(Kept { iface: iface.into(), hook: Hook::TcEgress, link });
        Ok(())
    }

    /// Whether a held link attaches `hook` on some interface.
    pub(super) fn holds(&self, hook: Hook, iface: Option<&str>) -> bool {
        self.kept.iter().any(|k| k.hook == hook && iface.is_none_or(|i| k.iface == i))
    }

    /// Unpin (or forget the record of) the held links of `iface` and `hook` (`None`: any)
    /// and detach them.
    pub(super) fn detach_kept(&mut self, iface: Option<&str>, hook: Option<Hook>) {
        let dir = self.keep.clone();
        let (gone, stay): (Vec<Kept>, Vec<Kept>) = std::mem::take(&mut self.kept)
            .into_iter()
            .partition(|k| iface.is_none_or(|i| k.iface == i) && hook.is_none_or(|h| k.hook == h));
        self.kept = stay;
        for k in gone {
            match k.link {
                // Unpinned, the link's last reference is its fd: dropping it detaches.
                KeptLink::Pinned(p) => drop(p.unpin()),
                KeptLink::Filter(link) => {
                    if let (Some(dir), Ok(prio), Ok(handle)) = (&dir, link.priority(), link.handle()) {
                        let _ = fs::remove_dir(filter_record(dir, &k.iface, prio, u32::from(handle)));
                    }
                    drop(link);
                }
            }
        }
    }

    /// On a clean exit with `on_exit = "keep"`: let go of the held links without detaching
    /// them (the pins and filter records stay for the next agent). Links that could not be
    /// kept (netlink XDP) go away with the process.
    pub fn release_kept(&mut self) -> usize {
        let n = self.kept.len();
        for k in std::mem::take(&mut self.kept) {
            match k.link {
                KeptLink::Pinned(p) => drop(p),
                // A taken netlink link detaches when dropped; forgotten, the filter stays.
                KeptLink::Filter(link) => std::mem::forget(link),
            }
        }
        n
    }

    /// Take over the links a previous agent kept under `dir` for `ifaces`: replace their
    /// programs with this agent's atomically (`bpf_link_update`: there is no moment with
    /// no program, nor two), then hold them as [`Loaded::hold_xdp`] does. Returns the
    /// interfaces adopted.
    pub fn adopt(&mut self, dir: &Path, ifaces: &[(String, u32)]) -> Result<Vec<String>, DataplaneError> {
        let mut adopted = Vec::new();
        for (name, _) in ifaces {
            let xdp_pin = link_pin(dir, Hook::Xdp, name);
            let Ok(pinned) = PinnedLink::from_pin(&xdp_pin) else { continue };
            let link = aya::programs::xdp::XdpLink::try_from(FdLink::from(pinned))
                .map_err(|e| DataplaneError::KeepLink { iface: name.clone(), why: e.to_string() })?;
            let id = self.xdp_mut()?.attach_to_link(link).map_err(replace_err(names::PROG_XDP))?;
            if self.keep.is_none() {
                let _ = fs::remove_file(&xdp_pin);
            }
            self.hold_xdp(name, id)?;
            self.adopt_egress(dir, name)?;
            adopted.push(name.clone());
        }
        Ok(adopted)
    }

    /// The egress half of [`Loaded::adopt`]: a pinned TCX link is replaced in place; a
    /// recorded netlink filter is replaced by a new one (attached first, so that no packet
    /// goes uncounted) and then removed.
    fn adopt_egress(&mut self, dir: &Path, name: &str) -> Result<(), DataplaneError> {
        let tc_pin = link_pin(dir, Hook::TcEgress, name);
        if let Ok(pinned) = PinnedLink::from_pin(&tc_pin) {
            let link = SchedClassifierLink::try_from(FdLink::from(pinned))
                .map_err(|e| DataplaneError::KeepLink { iface: name.into(), why: e.to_string() })?;
            let id = self.tc_mut()?.attach_to_link(link).map_err(replace_err(names::PROG_TC_EGRESS))?;
            if self.keep.is_none() {
                let _ = fs::remove_file(&tc_pin);
            }
            return self.hold_tc(name, id);
        }
        let Some(old) = read_filter(dir, name) else { return Ok(()) };
        self.attach_egress_one(name)?;
        drop(old);
        Ok(())
    }
}

/// The netlink egress filter a previous agent recorded for `iface` under `dir`, as a link
/// that detaches the filter when dropped; the record is removed.
fn read_filter(dir: &Path, iface: &str) -> Option<SchedClassifierLink> {
    let (record, _, prio, handle) = filter_records(dir).into_iter().find(|(_, i, _, _)| i == iface)?;
    let _ = fs::remove_dir(&record);
    SchedClassifierLink::attached(iface, TcAttachType::Egress, prio, TcHandle::from(handle), None)
        .map_err(|e| warn!("cannot take over the old egress filter on `{iface}`: {e}"))
        .ok()
}

/// Detach the netlink egress filters recorded under `dir` (`ps-agent unload`); returns the
/// interfaces.
pub fn remove_recorded_filters(dir: &Path) -> Vec<String> {
    let mut done = Vec::new();
    for (_, iface, _, _) in filter_records(dir) {
        if let Some(link) = read_filter(dir, &iface) {
            drop(link);
            done.push(iface);
        }
    }
    done
}

impl Loaded {
    /// On exit with `on_exit = "keep"`, for links not held since attach (kept at load was
    /// off): pin each under `dir` so the programs stay attached after the process is gone.
    pub fn keep_links(&mut self, dir: &Path) -> Result<usize, DataplaneError> {
        fs::create_dir_all(dir).map_err(|source| DataplaneError::Io { action: "create", path: dir.into(), source })?;
        let mut n = 0;
        for (name, id) in std::mem::take(&mut self.links) {
            let link = self.xdp_mut()?.take_link(id).map_err(take_err(names::PROG_XDP))?;
            drop(pin_link(link.try_into(), &link_pin(dir, Hook::Xdp, &name), &name)?);
            n += 1;
        }
        for (name, id) in std::mem::take(&mut self.tc_links) {
            let link = self.tc_mut()?.take_link(id).map_err(take_err(names::PROG_TC_EGRESS))?;
            drop(pin_link(link.try_into(), &link_pin(dir, Hook::TcEgress, &name), &name)?);
            n += 1;
        }
        Ok(n + self.release_kept())
    }
}

fn take_err(program: &'static str) -> impl FnOnce(aya::programs::ProgramError) -> DataplaneError {
    move |source| DataplaneError::Program { action: "take the link of", program, source: Box::new(source) }
}

fn replace_err(program: &'static str) -> impl FnOnce(aya::programs::ProgramError) -> DataplaneError {
    move |source| DataplaneError::Program { action: "replace through its link", program, source: Box::new(source) }
}

/// Pin `link` at `path` (replacing a stale pin): the link, and so the program on `iface`,
/// then outlives this process.
fn pin_link(
    link: Result<FdLink, aya::programs::links::LinkError>,
    path: &Path,
    iface: &str,
) -> Result<PinnedLink, DataplaneError> {
    let keep = |why: String| DataplaneError::KeepLink { iface: iface.into(), why };
    let fd = link.map_err(|e| keep(e.to_string()))?;
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| keep(e.to_string()))?;
    }
    let _ = fs::remove_file(path);
    fd.pin(path).map_err(|e| keep(e.to_string()))
}

/// A loaded object that goes away without [`Loaded::release_kept`] (a failed start-up,
/// a detaching stop) detaches the links it pinned: only a crash leaves them.
impl Drop for Loaded {
    fn drop(&mut self) {
        self.detach_kept(None, None);
    }
}
