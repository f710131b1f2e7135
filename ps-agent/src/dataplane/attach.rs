//! Attaching and detaching: XDP on every interface (native, falling back to generic),
//! the egress program (TCX on 6.6+, clsact before), all or nothing.

use aya::programs::{
    LinkOrder, TcAttachType, XdpMode,
    tc::{NlOptions, TcAttachOptions},
    xdp::XdpLinkId,
};
use log::warn;
use ps_common::MAX_IFINDEX;

use super::{
    DataplaneError, Loaded,
    error::{attach_error, errno},
    links::Hook,
};
use crate::policy::config::XdpModeName;

/// How an interface ended up attached.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Attached {
    /// Name.
    pub name: String,
    /// ifindex.
    pub ifindex: u32,
    /// Slot in the counters.
    pub slot: u32,
    /// The XDP mode it runs in.
    pub xdp_mode: AttachMode,
}

/// The XDP mode an interface runs in: what was asked for, or generic where the driver has
/// no native XDP; or the program a previous agent kept there, taken over as it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// Native (driver) XDP.
    Native,
    /// Generic (skb) XDP.
    Skb,
    /// A kept program taken over from a previous agent.
    Kept,
}

impl AttachMode {
    /// `native`, `skb` or `kept`: in the state file, `stats`, the log and the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Skb => "skb",
            Self::Kept => "kept",
        }
    }
}

impl std::fmt::Display for AttachMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl Loaded {
    /// Attach the egress program to every interface, all or nothing (TCX on 6.6+, a
    /// clsact qdisc before).
    pub fn attach_egress(&mut self, ifaces: &[(String, u32)]) -> Result<(), DataplaneError> {
        for (name, _) in ifaces {
            if let Err(e) = self.attach_egress_one(name) {
                self.detach_egress();
                return Err(e);
            }
        }
        Ok(())
    }

    pub(super) fn attach_egress_one(&mut self, name: &str) -> Result<(), DataplaneError> {
        // Without TCX (probed) the program hangs off a clsact qdisc; it may exist already.
        let how = if self.features.tcx {
            TcAttachOptions::TcxOrder(LinkOrder::default())
        } else {
            let _ = aya::programs::tc::qdisc_add_clsact(name);
            TcAttachOptions::Netlink(NlOptions::default())
        };
        let id = self
            .tc_mut()?
            .attach_with_options(name, TcAttachType::Egress, how)
            .map_err(|source| DataplaneError::AttachEgress { iface: name.into(), source: Box::new(source) })?;
        self.hold_tc(name, id)
    }

    /// Detach the egress program everywhere.
    pub fn detach_egress(&mut self) {
        self.detach_kept(None, Some(Hook::TcEgress));
        let links = std::mem::take(&mut self.tc_links);
        if let Ok(prog) = self.tc_mut() {
            for (_, l) in links {
                let _ = prog.detach(l);
            }
        }
    }

    /// Whether the egress program is attached anywhere.
    pub fn egress_attached(&self) -> bool {
        !self.tc_links.is_empty() || self.holds(Hook::TcEgress, None)
    }

    /// Attach again to an interface that disappeared and came back (a new ifindex): forget
    /// the links to the old device, point the interface table at the new one, attach the
    /// egress program (if it runs elsewhere) and XDP.
    pub fn reattach(
        &mut self,
        name: &str,
        ifindex: u32,
        slot: u32,
        mode: XdpModeName,
    ) -> Result<Attached, DataplaneError> {
        let stale: Vec<XdpLinkId> = extract(&mut self.links, name);
        if let Ok(prog) = self.xdp_mut() {
            for l in stale {
                let _ = prog.detach(l);
            }
        }
        let stale_tc = extract(&mut self.tc_links, name);
        let egress = !stale_tc.is_empty() || self.holds(Hook::TcEgress, Some(name));
        // The kept links of the old device went with it.
        self.detach_kept(Some(name), None);
        if let Ok(prog) = self.tc_mut() {
            for l in stale_tc {
                let _ = prog.detach(l);
            }
        }
        if ifindex >= MAX_IFINDEX {
            return Err(DataplaneError::IfindexTooLarge { name: name.into(), ifindex });
        }
        self.write_ifaces(&[(name.into(), ifindex)], slot)?;
        if egress {
            self.attach_egress_one(name)?;
        }
        let (id, used) = self.attach_one(name, ifindex, mode)?;
        self.hold_xdp(name, id)?;
        Ok(Attached { name: name.into(), ifindex, slot, xdp_mode: used })
    }

    /// Attach to every interface, all or nothing: if one fails, the ones already attached
    /// are detached before the error is returned.
    pub fn attach(&mut self, ifaces: &[(String, u32)], mode: XdpModeName) -> Result<Vec<Attached>, DataplaneError> {
        self.attach_except(ifaces, &[], mode)
    }

    /// [`Loaded::attach`], but the interfaces in `adopted` already run this program (taken
    /// over from a previous agent); they keep their slots.
    pub fn attach_except(
        &mut self,
        ifaces: &[(String, u32)],
        adopted: &[String],
        mode: XdpModeName,
    ) -> Result<Vec<Attached>, DataplaneError> {
        let mut done = Vec::new();
        for (slot, (name, ifindex)) in ifaces.iter().enumerate() {
            if adopted.contains(name) {
                done.push(Attached {
                    name: name.clone(),
                    ifindex: *ifindex,
                    slot: slot as u32 + 1,
                    xdp_mode: AttachMode::Kept,
                });
                continue;
            }
            match self.attach_one(name, *ifindex, mode) {
                Ok((id, used)) => {
                    if let Err(e) = self.hold_xdp(name, id) {
                        self.detach_all();
                        return Err(e);
                    }
                    done.push(Attached {
                        name: name.clone(),
                        ifindex: *ifindex,
                        slot: slot as u32 + 1,
                        xdp_mode: used,
                    });
                }
                Err(e) => {
                    self.detach_all();
                    return Err(e);
                }
            }
        }
        Ok(done)
    }

    fn attach_one(
        &mut self,
        name: &str,
        ifindex: u32,
        mode: XdpModeName,
    ) -> Result<(XdpLinkId, AttachMode), DataplaneError> {
        let prog = self.xdp_mut()?;
        let (first, used) = match mode {
            XdpModeName::Native => (XdpMode::Driver, AttachMode::Native),
            XdpModeName::Skb => (XdpMode::Skb, AttachMode::Skb),
        };
        match prog.attach_to_if_index(ifindex, first) {
            Ok(id) => Ok((id, used)),
            Err(e) if first == XdpMode::Driver && errno(&e) == Some(libc::EOPNOTSUPP) => {
                warn!(
                    "interface `{name}`: the driver has no native XDP; falling back to generic (skb) mode, which is slower"
                );
                prog.attach_to_if_index(ifindex, XdpMode::Skb)
                    .map(|id| (id, AttachMode::Skb))
                    .map_err(|source| attach_error(name, AttachMode::Skb.as_str(), source))
            }
            Err(source) => Err(attach_error(name, used.as_str(), source)),
        }
    }

    /// Detach from every interface (XDP and egress).
    pub fn detach_all(&mut self) {
        self.detach_kept(None, None);
        let links = std::mem::take(&mut self.links);
        if let Ok(prog) = self.xdp_mut() {
            for (_, l) in links {
                let _ = prog.detach(l);
            }
        }
        self.detach_egress();
    }
}

/// Remove and return the links of interface `name`.
fn extract<T>(links: &mut Vec<(String, T)>, name: &str) -> Vec<T> {
    let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(links).into_iter().partition(|(n, _)| n == name);
    *links = rest;
    mine.into_iter().map(|(_, l)| l).collect()
}

#[cfg(test)]
mod tests {
    use super::AttachMode;

    /// The state file and `stats --json` carry the mode's name: the words the state files of
    /// running agents hold must still read back.
    #[test]
    fn attach_modes_are_written_by_name() {
        for (mode, word) in [(AttachMode::Native, "native"), (AttachMode::Skb, "skb"), (AttachMode::Kept, "kept")] {
            assert_eq!(serde_json::to_string(&mode).unwrap(), format!("\"{word}\""));
            assert_eq!(serde_json::from_str::<AttachMode>(&format!("\"{word}\"")).unwrap(), mode);
            assert_eq!(mode.to_string(), word);
        }
    }
}
