//! Observability layout (issue 5): the dry-run would-drop table, drop events sent to the
//! agent through a ring buffer, and the epoch of the counters that survive restarts.
//!
//! ```text
//! PS_WDROP{DropKey}      per-CPU LRU hash, dry-run only: would-dropped flows -> DropVal
//! PS_EVENTS              ring buffer of Event (drops and would-drops), rate-limited per CPU
//! PS_EVENT_RL[0]         per-CPU TokenBucket of the events (separate from the aya-log one)
//! PS_DSCRATCH[0]         per-CPU DropScratch: the drop path builds key, value and event
//!                        here, not on the (nearly full) stack
//! PS_EPOCH[0]            Epoch: since when the pinned counters count (written by the agent)
//! PS_STAT_CNT[slot * STAT_STRIDE + STAT_EVENT_SENT / STAT_EVENT_LOST]
//! ```

pub use crate::layout::take_token_rate;

/// Entries of the would-drop table.
pub const WDROP_ENTRIES: u32 = 4096;
/// Size of the event ring buffer, bytes (a power of two, a multiple of the page size).
pub const EVENTS_BYTES: u32 = 256 * 1024;
/// Events per second per CPU (as the old dry-run log: a flood cannot flood the log).
pub const EVENT_RATE_PER_SEC: u64 = 5;
/// Event burst per CPU.
pub const EVENT_BURST: u64 = 10;
/// `PS_STAT_CNT` bucket (not a packet bucket): events sent to the ring buffer.
///
/// What the rate limiter suppresses is not counted in the kernel: that would be a second
/// counter update on every dropped packet of a flood. Every drop (and would-drop) asks for
/// an event exactly once, so the agent derives it: suppressed = drops − sent − lost.
/// (Bucket 62 counted suppressed events before; it is unused now, and counts pinned by
/// an older agent there are ignored.)
pub const STAT_EVENT_SENT: u32 = 60;
/// `PS_STAT_CNT` bucket (not a packet bucket): events lost because the ring was full.
pub const STAT_EVENT_LOST: u32 = 61;
/// `Event::flags`: dry-run (the packet passed; it would have been dropped).
pub const EVENT_DRY_RUN: u8 = 1;

/// `PS_WDROP` key: who sent what where.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DropKey {
    /// Source address (IPv4: first 4 bytes, rest zero).
    pub src: [u8; 16],
    /// Destination port.
    pub dport: u16,
    /// IP protocol.
    pub proto: u8,
    /// 4 or 6.
    pub family: u8,
    /// Interface slot.
    pub slot: u32,
}

/// `PS_WDROP` value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropVal {
    /// Packets.
    pub packets: u64,
    /// Bytes (whole frames).
    pub bytes: u64,
    /// First seen, `bpf_ktime_get_ns`.
    pub first_ns: u64,
    /// Last seen.
    pub last_ns: u64,
    /// `DropReason` of the last packet.
    pub reason: u32,
    /// Source port of the last packet.
    pub sport: u16,
    /// Explicit padding.
    pub _pad: u16,
}

/// One drop or would-drop, as the agent receives it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// `bpf_ktime_get_ns`.
    pub ts_ns: u64,
    /// Source address.
    pub src: [u8; 16],
    /// Destination address.
    pub dst: [u8; 16],
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// IP protocol (0: not IP).
    pub proto: u8,
    /// 4, 6, or 0 (not IP).
    pub family: u8,
    /// `DropReason`.
    pub reason: u8,
    /// `EVENT_*` bits.
    pub flags: u8,
    /// Ingress ifindex.
    pub ifindex: u32,
    /// Frame length.
    pub len: u32,
}

/// Per-CPU scratch of the drop path.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropScratch {
    /// Key being built.
    pub key: DropKey,
    /// Value being built.
    pub val: DropVal,
    /// Event being built.
    pub event: Event,
    /// Staged by the caller: IP version of the packet (0: not IP).
    pub ip_version: u32,
    /// Staged: offset of the IP header.
    pub l3_off: u32,
    /// Staged: interface slot.
    pub slot: u32,
    /// Staged: 1 if the event got a token from the rate limiter.
    pub token: u32,
}

/// `PS_EPOCH[0]`: since when the counters count, and the counter layout they were made for.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Epoch {
    /// Wall clock when the counters were created, nanoseconds since the Unix epoch.
    pub since_unix_ns: u64,
    /// Hash of the counter layout (rule ids in counter order, interfaces in slot order,
    /// stride): counters made for another layout are not reused.
    pub layout: u64,
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: #[repr(C)], integers only, no implicit padding (see the size test).
    unsafe impl aya::Pod for DropKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for DropVal {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Event {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Epoch {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{STAT_LOG_SUPPRESSED, STAT_STRIDE, STAT_WOULD_DROP_BASE, TokenBucket};
    use core::mem::size_of;

    #[test]
    fn no_hidden_padding() {
        assert_eq!(size_of::<DropKey>(), 16 + 2 + 1 + 1 + 4);
        assert_eq!(size_of::<DropVal>(), 8 * 4 + 4 + 2 + 2);
        assert_eq!(size_of::<Event>(), 8 + 32 + 2 + 2 + 4 + 4 + 4);
        assert_eq!(size_of::<DropScratch>(), 24 + 40 + 56 + 16);
        assert_eq!(size_of::<Epoch>(), 16);
    }

    // The event buckets sit between the would-drop buckets and the log bucket.
    const _: () = {
        let first_free = STAT_WOULD_DROP_BASE as usize + crate::DropReason::COUNT;
        assert!(STAT_EVENT_LOST as usize >= first_free && STAT_EVENT_SENT as usize >= first_free);
        assert!(STAT_EVENT_SENT < STAT_LOG_SUPPRESSED && STAT_EVENT_LOST < STAT_STRIDE);
        assert!(STAT_EVENT_LOST != STAT_EVENT_SENT);
    };

    #[test]
    fn event_bucket_refills_at_its_own_rate() {
        let mut b = TokenBucket { tokens: EVENT_BURST, last_ns: 0, tick: 0 };
        assert_eq!(
            (0..1000).filter(|_| take_token_rate(&mut b, 1, EVENT_RATE_PER_SEC, EVENT_BURST)).count() as u64,
            EVENT_BURST
        );
        let n = (0..1000).filter(|_| take_token_rate(&mut b, 1_000_000_001, EVENT_RATE_PER_SEC, EVENT_BURST)).count();
        assert_eq!(n as u64, EVENT_RATE_PER_SEC);
    }
}
