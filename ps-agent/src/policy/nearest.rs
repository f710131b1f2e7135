//! The matrix rows nearest to a flow the policy does not admit: a management-only row on
//! another interface, an optional row that is off, the same port over the other protocol,
//! the default of a port the site configured elsewhere, or an outbound row whose replies
//! the flow looks like. `run` publishes the [`RowHint`]s in its state file; the dry-run
//! report asks [`nearest`] for each group it would cut.

use serde::{Deserialize, Serialize};

use super::{
    compile::{Origin, RuleKind, RuleSet},
    config::{Config, Transport},
    portspec::{PortSpec, render_ranges},
};

/// A matrix row as the report needs it (published in the state file by `run`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowHint {
    /// Row id.
    pub id: String,
    /// Transports.
    pub transports: Vec<Transport>,
    /// Ports PS listens on for this row (the site's, if it configured them).
    pub inbound_ports: Vec<(u16, u16)>,
    /// The document's ports, before any site override.
    pub default_ports: Vec<(u16, u16)>,
    /// Remote ports of an outbound row (its replies come from them).
    pub reply_ports: Vec<(u16, u16)>,
    /// Is it compiled into the running policy?
    pub enforced: bool,
    /// Why not, if not.
    pub why_not: Option<String>,
    /// Bound to the management interface.
    pub management_only: bool,
    /// Description.
    pub description: String,
}

/// The rows of `cfg`, as `set` compiled them.
pub fn row_hints(cfg: &Config, set: &RuleSet) -> Vec<RowHint> {
    let host = &cfg.matrix.host_system;
    let mut hints: Vec<RowHint> = cfg
        .matrix
        .rows
        .iter()
        .map(|row| {
            let dst_is_host = row.destination_system.eq_ignore_ascii_case(host);
            let src_is_host = row.source_system.eq_ignore_ascii_case(host);
            let default_ports = match &row.destination_port {
                PortSpec::Ports { ranges, .. } => ranges.clone(),
                PortSpec::SiteSupplied(_) => row.site_ports.clone().unwrap_or_default(),
                PortSpec::Ephemeral => vec![],
            };
            let effective = cfg.site.ports.get(&row.id).cloned().unwrap_or_else(|| default_ports.clone());
            let reply_side = dst_is_host && row.destination_port == PortSpec::Ephemeral;
            let (inbound_ports, reply_ports) = if reply_side {
                (vec![], row.source_port.ranges().to_vec())
            } else {
                (
                    if dst_is_host { effective.clone() } else { vec![] },
                    if src_is_host { effective.clone() } else { vec![] },
                )
            };
            let why_not = set.skipped.iter().find(|s| s.row == row.id).map(|s| s.why.clone());
            RowHint {
                id: row.id.clone(),
                transports: row.transports.clone(),
                inbound_ports,
                default_ports: if dst_is_host && !reply_side { default_ports } else { vec![] },
                reply_ports,
                enforced: why_not.is_none(),
                why_not,
                management_only: row.management_only,
                description: row.description.clone(),
            }
        })
        .collect();
    // Site rules and the failsafe are near too (SSH over UDP, a site port on another
    // interface).
    for r in set.rules.iter().filter(|r| r.origin != Origin::Matrix) {
        let inbound = r.kind == RuleKind::Inbound;
        hints.push(RowHint {
            id: r.id.clone(),
            transports: vec![r.transport],
            inbound_ports: if inbound { r.ports.clone() } else { vec![] },
            default_ports: vec![],
            reply_ports: if inbound { vec![] } else { r.ports.clone() },
            enforced: true,
            why_not: None,
            management_only: r
                .interfaces
                .as_ref()
                .is_some_and(|i| i.len() == 1 && i[0] == cfg.site.management_interface),
            description: r.description.clone(),
        });
    }
    hints
}

/// Why a row is near a flow it did not admit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NearestKind {
    /// The row admits it on the management interface only.
    Interface,
    /// The row is not enforced (optional and off, or skipped).
    Disabled,
    /// The row has the port over the other protocol.
    OtherProtocol,
    /// The port is the document's default; the site configured another.
    ConfiguredPort,
    /// It looks like a reply to this outbound row, but no flow waits for it.
    Reply,
}

impl NearestKind {
    /// Its name in JSON and text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Interface => "interface",
            Self::Disabled => "disabled",
            Self::OtherProtocol => "other_protocol",
            Self::ConfiguredPort => "configured_port",
            Self::Reply => "reply",
        }
    }
}

impl std::fmt::Display for NearestKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// The nearest matrix rows to a would-dropped flow, and why they did not admit it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nearest {
    /// How near.
    pub kind: NearestKind,
    /// Row ids.
    pub rows: Vec<String>,
    /// For a person.
    pub why: String,
}

fn has(ranges: &[(u16, u16)], port: u16) -> bool {
    ranges.iter().any(|&(a, b)| (a..=b).contains(&port))
}

/// Rows close to a flow of `proto` to `dport` on `iface` (from `sport`), best first.
pub fn nearest(rows: &[RowHint], mgmt: &str, proto: &str, dport: u16, iface: &str, sport: u16) -> Option<Nearest> {
    let pick = |kind: NearestKind, f: &dyn Fn(&RowHint) -> bool, why: &dyn Fn(&RowHint) -> String| -> Option<Nearest> {
        let hit: Vec<&RowHint> = rows.iter().filter(|r| f(r)).collect();
        let first = hit.first()?;
        Some(Nearest { kind, rows: hit.iter().map(|r| r.id.clone()).collect(), why: why(first) })
    };
    let proto_ok = |r: &RowHint| r.transports.iter().any(|t| t.as_str() == proto);
    pick(
        NearestKind::Interface,
        &|r| r.enforced && r.management_only && iface != mgmt && proto_ok(r) && has(&r.inbound_ports, dport),
        &|_| format!("bound to the management interface: admitted on {mgmt} only, not on {iface}"),
    )
    .or_else(|| {
        pick(NearestKind::Disabled, &|r| !r.enforced && proto_ok(r) && has(&r.inbound_ports, dport), &|r| {
            format!("not enforced: {}", r.why_not.clone().unwrap_or_default())
        })
    })
    .or_else(|| {
        pick(NearestKind::OtherProtocol, &|r| !proto_ok(r) && has(&r.inbound_ports, dport), &|r| {
            let state = if r.enforced { "" } else { " (and not enforced)" };
            format!(
                "the same port over {}{state}",
                r.transports.iter().map(|t| t.as_str()).collect::<Vec<_>>().join("/")
            )
        })
    })
    .or_else(|| {
        pick(
            NearestKind::ConfiguredPort,
            &|r| proto_ok(r) && has(&r.default_ports, dport) && !has(&r.inbound_ports, dport),
            &|r| format!("the document's default port; the site configured {}", render_ranges(&r.inbound_ports)),
        )
    })
    .or_else(|| {
        pick(NearestKind::Reply, &|r| r.enforced && proto_ok(r) && sport != 0 && has(&r.reply_ports, sport), &|_| {
            format!("from port {sport}: shaped like a reply to this outbound row, but not one the host is waiting for")
        })
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The shipped matrix with the site config `site`, and its row hints.
    pub(crate) fn hints(site: &str) -> (Config, Vec<RowHint>) {
        let matrix = crate::policy::config::Matrix::shipped();
        let site = crate::policy::config::Site::parse(site, "site.toml", &matrix).unwrap();
        let cfg = Config { matrix, site };
        let set = crate::policy::compile::compile(&cfg, &crate::policy::compile::HostFacts::typical()).unwrap();
        let h = row_hints(&cfg, &set);
        (cfg, h)
    }

    #[test]
    fn nearest_rows() {
        let (_, rows) = hints("[ports]\n\"ps-10\" = \"15222\"\n");
        let n = |proto, dport, iface, sport| nearest(&rows, "eth0", proto, dport, iface, sport);
        let x = n("tcp", 5063, "eth0", 40000).unwrap();
        assert_eq!((x.kind, x.rows.clone()), (NearestKind::Disabled, vec!["ps-07".into(), "ps-08".into()]));
        assert!(x.why.contains("optional and closed by default"), "{}", x.why);
        let x = n("tcp", 7000, "eth1", 40000).unwrap();
        assert_eq!((x.kind, x.rows.clone()), (NearestKind::Interface, vec!["ps-13".into(), "ps-20".into()]));
        assert!(n("tcp", 7000, "eth0", 40000).is_none_or(|x| x.kind != NearestKind::Interface));
        let x = n("udp", 443, "eth0", 40000).unwrap();
        assert_eq!(x.kind, NearestKind::OtherProtocol);
        assert!(x.rows.contains(&"ps-01".to_string()) && x.why.contains("tcp"), "{x:?}");
        let x = n("tcp", 5222, "eth0", 40000).unwrap();
        assert_eq!((x.kind, x.rows.clone()), (NearestKind::ConfiguredPort, vec!["ps-10".into()]));
        assert!(x.why.contains("15222"));
        let x = n("tcp", 45000, "eth0", 5062).unwrap();
        assert_eq!((x.kind, x.rows.clone()), (NearestKind::Reply, vec!["ps-04".into()]));
        assert!(n("udp", 9999, "eth0", 40000).is_none());
        let x = n("udp", 22, "eth0", 40000).unwrap();
        assert_eq!((x.kind, x.rows.clone()), (NearestKind::OtherProtocol, vec!["failsafe-ssh".into()]));
        assert!(n("tcp", 9999, "eth1", 40000).is_none());
    }
}
