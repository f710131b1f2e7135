//! Coexistence: which XDP programs are already attached to an interface, who owns them,
//! and (with `run --force`) replacing a netlink-attached one.
//!
//! One detection serves `doctor` and `run`. The program is read from `ip -d -j link show
//! dev IF` (RTM_GETLINK's IFLA_XDP attributes, in JSON); whether it is held by a `bpf_link`
//! (kernel 5.9+, `BPF_LINK_TYPE_XDP`) or attached through netlink (the only way before
//! 5.9, and what `ip link set xdp` and libxdp's netlink mode do) is decided by looking for
//! a live XDP link that references the program's id ([`crate::dataplane::host::xdp_link_ids`]).
//! A netlink attachment can be removed by anyone with CAP_NET_ADMIN; a `bpf_link` only by
//! its holder (closing the link fd or unpinning it), so `--force` cannot replace it.

use std::{collections::BTreeMap, fmt, process::Command};

/// How a program is attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attachment {
    /// Through netlink (`IFLA_XDP_FD`): replaceable.
    Netlink,
    /// Held by a `bpf_link` with this id: only its owner can detach it.
    Link {
        /// The link id (`bpftool link show id N`).
        link_id: u32,
    },
    /// Could not tell: enumerating links needs CAP_SYS_ADMIN.
    Unknown,
}

/// The XDP attach mode the kernel reports (`XDP_ATTACHED_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// Native (driver) mode.
    Driver,
    /// Generic (skb) mode.
    Generic,
    /// Offloaded to the NIC.
    Offload,
}

impl AttachMode {
    fn from_kernel(mode: u64) -> Option<Self> {
        match mode {
            1 => Some(Self::Driver),
            2 => Some(Self::Generic),
            3 => Some(Self::Offload),
            _ => None,
        }
    }

    /// `ip link set dev IF <keyword> off` for this mode.
    pub fn ip_keyword(self) -> &'static str {
        match self {
            Self::Driver => "xdpdrv",
            Self::Generic => "xdpgeneric",
            Self::Offload => "xdpoffload",
        }
    }

    /// Human name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Driver => "native",
            Self::Generic => "generic",
            Self::Offload => "offload",
        }
    }
}

/// An XDP program attached to an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdpProgram {
    /// Program id (`bpftool prog show id N`).
    pub id: u32,
    /// Program name (at most 15 bytes; empty when the loader gave none).
    pub name: String,
    /// Attach mode.
    pub mode: AttachMode,
    /// Who holds it.
    pub attachment: Attachment,
}

impl XdpProgram {
    /// Is it ps-agent's own program (another agent, e.g. with a different `--pin-dir`)?
    pub fn is_ps_agent(&self) -> bool {
        self.name == ps_common::names::PROG_XDP
    }

    /// Can `run --force` replace it?
    pub fn replaceable(&self) -> bool {
        self.attachment == Attachment::Netlink
    }

    /// What the operator can do about it.
    pub fn hint(&self, iface: &str) -> String {
        if self.is_ps_agent() {
            return match self.attachment {
                Attachment::Netlink => format!(
                    "it is a ps-agent program left attached through netlink: `ps-agent unload` with its --pin-dir and --state-dir removes it, or `ip link set dev {iface} {} off`",
                    self.mode.ip_keyword()
                ),
                _ => "it is another ps-agent: stop it (`systemctl stop ps-agent`), or run this one with the same --pin-dir and --state-dir to take its kept links over".into(),
            };
        }
        match &self.attachment {
            Attachment::Netlink => format!(
                "stop its owner, detach it with `ip link set dev {iface} {} off`, or replace it with `ps-agent run --force`",
                self.mode.ip_keyword()
            ),
            Attachment::Link { link_id } => format!(
                "a bpf_link cannot be replaced without its link: stop the process that holds link {link_id} (`bpftool link show id {link_id}`)"
            ),
            Attachment::Unknown => format!(
                "stop its owner or detach it with `ip link set dev {iface} {} off` (run as root to tell a bpf_link from netlink)",
                self.mode.ip_keyword()
            ),
        }
    }
}

impl fmt::Display for XdpProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = if self.name.is_empty() { "(no name)" } else { self.name.as_str() };
        write!(f, "program id {} `{name}` ({} mode, ", self.id, self.mode.as_str())?;
        match &self.attachment {
            Attachment::Netlink => write!(f, "netlink attachment")?,
            Attachment::Link { link_id } => write!(f, "bpf_link id {link_id}")?,
            Attachment::Unknown => write!(f, "netlink or bpf_link")?,
        }
        if self.is_ps_agent() {
            write!(f, ", a ps-agent")?;
        }
        write!(f, ")")
    }
}

/// A coexistence error.
#[derive(Debug, thiserror::Error)]
pub enum CoexistError {
    /// `ip` could not be run or failed.
    #[error("failed to run `{command}`: {detail} (is iproute2 installed?)")]
    Ip {
        /// The command line.
        command: String,
        /// What went wrong.
        detail: String,
    },
    /// Its output was not what `ip -j` prints.
    #[error("failed to parse the output of `{command}`: {detail}")]
    Parse {
        /// The command line.
        command: String,
        /// What went wrong.
        detail: String,
    },
}

/// Programs listed in `ip -d -j link show dev IF` output, attachment not yet known.
///
/// With one program `xdp` is `{mode, prog: {id, name, ..}}`; with several (one per mode,
/// `XDP_ATTACHED_MULTI` = 4) they are listed under `xdp.attached`.
pub fn parse_ip_link(json: &str) -> Result<Vec<(u32, String, AttachMode)>, String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let link = v.as_array().and_then(|a| a.first()).ok_or("no link in the output")?;
    let Some(xdp) = link.get("xdp") else { return Ok(vec![]) };
    let one = |o: &serde_json::Value| -> Option<(u32, String, AttachMode)> {
        let mode = AttachMode::from_kernel(o.get("mode")?.as_u64()?)?;
        let prog = o.get("prog")?;
        let id = u32::try_from(prog.get("id")?.as_u64()?).ok()?;
        let name = prog.get("name").and_then(|n| n.as_str()).unwrap_or_default().to_string();
        Some((id, name, mode))
    };
    let mut out = Vec::new();
    match xdp.get("attached").and_then(|a| a.as_array()) {
        Some(list) => out.extend(list.iter().filter_map(one)),
        None => out.extend(one(xdp)),
    }
    Ok(out)
}

/// XDP programs attached to `iface` in this network namespace. `links` maps program ids to
/// the XDP `bpf_link` holding them (`None`: could not enumerate links).
pub fn detect_with(iface: &str, links: Option<&BTreeMap<u32, u32>>) -> Result<Vec<XdpProgram>, CoexistError> {
    let command = format!("ip -d -j link show dev {iface}");
    let out = Command::new("ip")
        .args(["-d", "-j", "link", "show", "dev", iface])
        .output()
        .map_err(|e| CoexistError::Ip { command: command.clone(), detail: e.to_string() })?;
    if !out.status.success() {
        return Err(CoexistError::Ip { command, detail: String::from_utf8_lossy(&out.stderr).trim().to_string() });
    }
    let progs = parse_ip_link(&String::from_utf8_lossy(&out.stdout))
        .map_err(|detail| CoexistError::Parse { command, detail })?;
    Ok(progs
        .into_iter()
        .map(|(id, name, mode)| {
            let attachment = match links {
                None => Attachment::Unknown,
                Some(l) => l.get(&id).map_or(Attachment::Netlink, |&link_id| Attachment::Link { link_id }),
            };
            XdpProgram { id, name, mode, attachment }
        })
        .collect())
}

/// XDP programs attached to `iface`, with their attachment looked up in the kernel.
pub fn detect(iface: &str) -> Result<Vec<XdpProgram>, CoexistError> {
    let links = crate::dataplane::host::xdp_link_ids().ok();
    detect_with(iface, links.as_ref())
}

/// Detach a netlink-attached program (`ip link set dev IF xdp<mode> off`).
pub fn detach_netlink(iface: &str, prog: &XdpProgram) -> Result<(), CoexistError> {
    let command = format!("ip link set dev {iface} {} off", prog.mode.ip_keyword());
    let out = Command::new("ip")
        .args(["link", "set", "dev", iface, prog.mode.ip_keyword(), "off"])
        .output()
        .map_err(|e| CoexistError::Ip { command: command.clone(), detail: e.to_string() })?;
    if !out.status.success() {
        return Err(CoexistError::Ip { command, detail: String::from_utf8_lossy(&out.stderr).trim().to_string() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_one_program() {
        let j = r#"[{"ifname":"eth1","xdp":{"mode":2,"prog":{"id":251,"name":"other_xdp","tag":"d4f8"},"attached":[{"mode":2,"prog":{"id":251,"name":"other_xdp"}}]}}]"#;
        assert_eq!(parse_ip_link(j).unwrap(), vec![(251, "other_xdp".to_string(), AttachMode::Generic)]);
        let j = r#"[{"ifname":"eth1","xdp":{"mode":1,"prog":{"id":7,"name":"ps_xdp"}}}]"#;
        assert_eq!(parse_ip_link(j).unwrap(), vec![(7, "ps_xdp".to_string(), AttachMode::Driver)]);
    }

    #[test]
    fn parses_several_and_none() {
        let j = r#"[{"xdp":{"mode":4,"attached":[{"mode":1,"prog":{"id":3,"name":"a"}},{"mode":2,"prog":{"id":4,"name":"b"}}]}}]"#;
        let p = parse_ip_link(j).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[1], (4, "b".to_string(), AttachMode::Generic));
        assert!(parse_ip_link(r#"[{"ifname":"eth0","mtu":1500}]"#).unwrap().is_empty());
        assert!(parse_ip_link("[]").is_err());
    }

    #[test]
    fn names_the_owner_and_what_to_do() {
        let p = XdpProgram { id: 9, name: "xdp_fw".into(), mode: AttachMode::Generic, attachment: Attachment::Netlink };
        assert_eq!(p.to_string(), "program id 9 `xdp_fw` (generic mode, netlink attachment)");
        assert!(p.replaceable());
        assert!(p.hint("eth1").contains("ip link set dev eth1 xdpgeneric off"));
        let l = XdpProgram { attachment: Attachment::Link { link_id: 4 }, name: "ps_xdp".into(), ..p };
        assert_eq!(l.to_string(), "program id 9 `ps_xdp` (generic mode, bpf_link id 4, a ps-agent)");
        assert!(!l.replaceable());
        assert!(l.hint("eth1").contains("it is another ps-agent: stop it") && !l.hint("eth1").contains("ip link"));
        let other = XdpProgram { name: "xdp_fw".into(), ..l };
        assert!(other.hint("eth1").contains("cannot be replaced without its link"));
    }
}
