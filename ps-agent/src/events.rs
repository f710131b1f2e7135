//! Drop events: the XDP program sends each drop (and, in dry-run, each would-drop) to the
//! `PS_EVENTS` ring buffer, rate-limited per CPU in the program (`PS_EVENT_RL`; what the
//! limiter suppresses and what a full ring loses are counted in `PS_STAT_CNT` and shown by
//! `stats` and the metrics). The agent logs one line per event with its own logger:
//!
//! ```text
//! would drop: no_rule on eth0 from 198.18.0.2 udp 40000→9999 (60 bytes)
//! drop: interface on eth1 from 198.18.1.2 tcp 41234→7000 (74 bytes)
//! ```
//!
//! aya-log stays for program-side debug logs.
//!
//! # Minimum kernel version
//! 5.8 (`BPF_MAP_TYPE_RINGBUF`).

use std::collections::BTreeMap;

use aya::maps::{MapData, RingBuf};
use log::{info, warn};
use ps_common::{
    names,
    observe::{EVENT_DRY_RUN, Event},
    reason::DropReason,
};
use tokio::io::unix::AsyncFd;

use crate::{
    load::Attached,
    report::{addr, proto_name},
};

/// One log line for `e`, which arrived on `iface`.
pub fn format_event(e: &Event, iface: &str) -> String {
    let what = if e.flags & EVENT_DRY_RUN != 0 { "would drop" } else { "drop" };
    let reason =
        DropReason::from_u32(e.reason as u32).map_or_else(|| format!("reason#{}", e.reason), |r| r.as_str().into());
    if e.family == 0 {
        return format!("{what}: {reason} on {iface} (not IP, {} bytes)", e.len);
    }
    let proto = proto_name(e.proto);
    let ports = if matches!(e.proto, 6 | 17) { format!(" {}→{}", e.sport, e.dport) } else { String::new() };
    format!("{what}: {reason} on {iface} from {} {proto}{ports} ({} bytes)", addr(e.family, &e.src), e.len)
}

/// Decode a ring buffer record.
pub fn decode(bytes: &[u8]) -> Option<Event> {
    (bytes.len() >= size_of::<Event>())
        // SAFETY: length checked; Event is plain old data, read unaligned.
        .then(|| unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Event>()) })
}

/// Take the event ring from the loaded object and log its events until the task is
/// aborted. `None` (with a warning) if the ring cannot be used (kernels before 5.8).
pub fn spawn(ebpf: &mut aya::Ebpf, attached: &[Attached]) -> Option<tokio::task::JoinHandle<()>> {
    let map = ebpf.take_map(names::MAP_EVENTS)?;
    let ring = match RingBuf::try_from(map) {
        Ok(r) => r,
        Err(e) => {
            warn!("drop events are unavailable (counted, not logged): {e}");
            return None;
        }
    };
    // SAFETY: the ring owns its map fd, which stays open and the same for as long as the
    // ring (moved into the AsyncFd) lives.
    let fd = match unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) } {
        Ok(fd) => fd,
        Err(e) => {
            warn!("drop events are unavailable (counted, not logged): {e}");
            return None;
        }
    };
    let names: BTreeMap<u32, String> = attached.iter().map(|a| (a.ifindex, a.name.clone())).collect();
    Some(tokio::spawn(drain(fd, names)))
}

async fn drain(mut fd: AsyncFd<RingBuf<MapData>>, names: BTreeMap<u32, String>) {
    loop {
        let mut guard = match fd.readable_mut().await {
            Ok(g) => g,
            Err(e) => {
                warn!("drop events: {e}; no more events are logged");
                return;
            }
        };
        let ring = guard.get_inner_mut();
        while let Some(item) = ring.next() {
            if let Some(e) = decode(&item) {
                let iface = names.get(&e.ifindex).cloned().unwrap_or_else(|| format!("ifindex {}", e.ifindex));
                info!("{}", format_event(&e, &iface));
            }
        }
        guard.clear_ready();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let mut e = Event {
            src: [198, 18, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
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
        assert_eq!(format_event(&e, "eth0"), "would drop: no_rule on eth0 from 198.18.0.2 udp 40000→9999 (60 bytes)");
        e.flags = 0;
        e.reason = DropReason::Interface as u8;
        e.proto = 6;
        e.family = 6;
        e.src = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        assert_eq!(format_event(&e, "eth1"), "drop: interface on eth1 from fd00:1::2 tcp 40000→9999 (60 bytes)");
        e.family = 0;
        e.reason = DropReason::EtherType as u8;
        assert_eq!(format_event(&e, "eth1"), "drop: ethertype on eth1 (not IP, 60 bytes)");
        let bytes: Vec<u8> = {
            // SAFETY: Event is plain old data.
            unsafe { std::slice::from_raw_parts((&e as *const Event).cast::<u8>(), size_of::<Event>()) }.to_vec()
        };
        assert_eq!(decode(&bytes), Some(e));
        assert_eq!(decode(&bytes[1..]), None);
    }
}
