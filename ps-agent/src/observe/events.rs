//! Drop events: the XDP program sends each drop (and, in dry-run, each would-drop) to the
//! `PS_EVENTS` ring buffer, rate-limited per CPU in the program (`PS_EVENT_RL`; what the
//! limiter suppresses and what a full ring loses are counted in `PS_STAT_CNT` and shown by
//! `stats` and the metrics). The agent logs one line per event with its own logger, in
//! fixed `key=value` fields, ASCII only, always all of them in this order (`-` where a
//! field does not apply), so fail2ban filters and SIEM parsers can rely on them:
//!
//! ```text
//! action=would_drop src=198.18.0.2 dst=198.18.0.1 proto=udp sport=40000 dport=9999 iface=eth0 reason=no_rule rule=- len=60
//! action=drop src=198.18.1.2 dst=198.18.1.1 proto=tcp sport=41234 dport=7000 iface=eth1 reason=interface rule=ps-13,ps-20 len=74
//! ```
//!
//! `action` is `drop` or `would_drop` (dry-run); `reason` a [`DropReason`] name; `rule` the
//! nearest matrix rows of the policy in force ([`nearest`], comma-separated), the rows
//! that would have admitted the packet on another interface, protocol or port. Reading
//! the ring is `dataplane::events`'.

use std::sync::{Arc, RwLock};

use ps_common::{
    observe::{EVENT_DRY_RUN, Event},
    reason::DropReason,
};

use crate::{
    observe::format::{addr, proto_name},
    policy::nearest::{RowHint, nearest},
};

/// The rows `rule=` is chosen from, and the management interface; shared with the daemon,
/// which replaces them when a reload changes the policy.
#[derive(Clone, Debug, Default)]
pub struct Rows(Arc<RwLock<(Vec<RowHint>, String)>>);

impl Rows {
    /// `rows` of the policy in force, with its management interface.
    pub fn new(rows: Vec<RowHint>, mgmt: &str) -> Self {
        Self(Arc::new(RwLock::new((rows, mgmt.to_string()))))
    }

    /// Replace them (after a reload).
    pub fn set(&self, rows: Vec<RowHint>, mgmt: &str) {
        if let Ok(mut g) = self.0.write() {
            *g = (rows, mgmt.to_string());
        }
    }

    /// The nearest rows to a TCP/UDP packet, comma-separated, or `-`.
    pub fn nearest(&self, e: &Event, iface: &str) -> String {
        let Ok(g) = self.0.read() else { return "-".into() };
        let (rows, mgmt) = &*g;
        if !matches!(e.proto, 6 | 17) {
            return "-".into();
        }
        nearest(rows, mgmt, &proto_name(e.proto), e.dport, iface, e.sport)
            .map_or_else(|| "-".into(), |n| n.rows.join(","))
    }
}

/// `v` as a field value: printable ASCII without spaces, `=` or quotes (anything else
/// becomes `_`), `-` if empty.
fn field(v: &str) -> String {
    if v.is_empty() {
        return "-".into();
    }
    v.chars().map(|c| if c.is_ascii_graphic() && !matches!(c, '=' | '"' | '\'') { c } else { '_' }).collect()
}

/// One log line for `e`, which arrived on `iface`; `rule` names the nearest rows (`-`).
pub fn format_event(e: &Event, iface: &str, rule: &str) -> String {
    let action = if e.flags & EVENT_DRY_RUN != 0 { "would_drop" } else { "drop" };
    let reason =
        DropReason::from_u32(e.reason as u32).map_or_else(|| format!("reason{}", e.reason), |r| r.as_str().into());
    let ip = e.family != 0;
    let (src, dst, proto) = if ip {
        (addr(e.family, &e.src), addr(e.family, &e.dst), proto_name(e.proto))
    } else {
        ("-".into(), "-".into(), "-".into())
    };
    let ports = ip && matches!(e.proto, 6 | 17);
    let port = |p: u16| if ports { p.to_string() } else { "-".into() };
    format!(
        "action={action} src={src} dst={dst} proto={proto} sport={} dport={} iface={} reason={reason} rule={} len={}",
        port(e.sport),
        port(e.dport),
        field(iface),
        field(rule),
        e.len
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let mut e = Event {
            src: [198, 18, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            dst: [198, 18, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            sport: 40000,
            dport: 9999,
            proto: 17,
            family: 4,
            reason: DropReason::NoRule as u8,
            flags: EVENT_DRY_RUN,
            ifindex: 2,
            len: 60,
            ..Event::default()
        };
        assert_eq!(
            format_event(&e, "eth0", "-"),
            "action=would_drop src=198.18.0.2 dst=198.18.0.1 proto=udp sport=40000 dport=9999 iface=eth0 reason=no_rule rule=- len=60"
        );
        e.flags = 0;
        e.reason = DropReason::Interface as u8;
        e.proto = 6;
        e.family = 6;
        e.src = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        e.dst = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(
            format_event(&e, "eth1", "ps-06"),
            "action=drop src=fd00:1::2 dst=fd00:1::1 proto=tcp sport=40000 dport=9999 iface=eth1 reason=interface rule=ps-06 len=60"
        );
        e.proto = 58;
        e.reason = DropReason::Icmp as u8;
        assert!(format_event(&e, "eth1", "-").contains(" proto=icmpv6 sport=- dport=- iface=eth1 reason=icmp "));
        e.family = 0;
        e.reason = DropReason::EtherType as u8;
        assert_eq!(
            format_event(&e, "eth1", "-"),
            "action=drop src=- dst=- proto=- sport=- dport=- iface=eth1 reason=ethertype rule=- len=60"
        );
        // Whatever the names, the line stays ASCII key=value pairs separated by single spaces.
        let odd = format_event(&e, "bänd 0", "a=b c");
        assert!(odd.is_ascii() && odd.contains(" iface=b_nd_0 ") && odd.contains(" rule=a_b_c "), "{odd}");
        let keys: Vec<&str> = odd.split(' ').map(|kv| kv.split_once('=').expect("key=value").0).collect();
        assert_eq!(keys, ["action", "src", "dst", "proto", "sport", "dport", "iface", "reason", "rule", "len"]);
        let bytes: Vec<u8> = {
            // SAFETY: Event is plain old data.
            unsafe { std::slice::from_raw_parts((&e as *const Event).cast::<u8>(), size_of::<Event>()) }.to_vec()
        };
        assert_eq!(crate::dataplane::events::decode(&bytes), Some(e));
        assert_eq!(crate::dataplane::events::decode(&bytes[1..]), None);
    }
}
