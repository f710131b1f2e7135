//! Map keys, values and index arithmetic, `#[repr(C)]` with explicit padding.
//!
//! The layout anticipates hitless reload: every policy table exists twice (two
//! generations) and [`State::generation`] says which one the program reads, so the agent
//! fills the idle generation and flips one word. Counters are not generation-bound: a
//! compiled rule keeps its counter slot across reloads.
//!
//! ```text
//! PS_STATE[0]                       -> State { generation, mode }
//! PS_POLICY[generation]             -> Policy { ephemeral range, flags, rules_cap }
//! PS_IFACES[ifindex]                -> IfaceInfo { slot }
//! PS_PORTS[port_index(gen,l4,port)] -> PortEntry { inbound, reply }  (heads into PS_RULES)
//! PS_RULES[head..]                  -> RuleEntry, a candidate list ended by ENTRY_LAST
//! PS_RULE_CNT[slot * rules_cap + counter]   per-CPU Counter
//! PS_STAT_CNT[slot * STAT_STRIDE + bucket]  per-CPU Counter (pass/drop/would-drop reasons)
//! ```

use crate::reason::{DropReason, PassReason};

/// Policy generations (double buffering for atomic reload).
pub const GENERATIONS: u32 = 2;
/// Transport slots in the port table.
pub const L4_SLOTS: u32 = 2;
/// Port-table entries per generation.
pub const PORTS_PER_GEN: u32 = L4_SLOTS * 65536;
/// Size of `PS_PORTS`.
pub const PORTS_ENTRIES: u32 = GENERATIONS * PORTS_PER_GEN;
/// Interfaces with an ifindex below this can be enforced (`PS_IFACES` is indexed directly).
pub const MAX_IFINDEX: u32 = 4096;
/// Interface slots; slot 0 stands for "an interface the agent did not configure".
pub const MAX_IFACES: u32 = 16;
/// Longest candidate list the program walks for one port.
pub const MAX_CHAIN: u32 = 8;
/// Default number of counter slots (compiled rules) and of rule entries per generation.
pub const DEFAULT_RULES_CAP: u32 = 1024;
/// Buckets per interface in `PS_STAT_CNT`.
pub const STAT_STRIDE: u32 = 64;
/// First pass-reason bucket.
pub const STAT_PASS_BASE: u32 = 0;
/// First drop-reason bucket.
pub const STAT_DROP_BASE: u32 = 16;
/// First would-drop bucket (dry-run).
pub const STAT_WOULD_DROP_BASE: u32 = 32;
/// Dry-run log lines suppressed by the rate limiter (not a packet bucket).
pub const STAT_LOG_SUPPRESSED: u32 = 63;

/// `State::mode`: drop what the policy does not allow.
pub const MODE_ENFORCE: u32 = 0;
/// `State::mode`: pass everything, count and log what would have been dropped.
pub const MODE_DRY_RUN: u32 = 1;

/// `Policy::flags`: let ICMP/ICMPv6 echo requests (ping) in.
pub const POLICY_ALLOW_ECHO: u32 = 1 << 0;

/// `RuleEntry::flags`: last candidate of its list.
pub const ENTRY_LAST: u32 = 1 << 0;
/// `RuleEntry::flags`: reply admission; the local (destination) port must be in the
/// policy's ephemeral range or in `local_lo..=local_hi`.
pub const ENTRY_REPLY: u32 = 1 << 1;
/// `RuleEntry::flags`: with `ENTRY_REPLY`, the ephemeral range counts as local ports.
pub const ENTRY_EPHEMERAL: u32 = 1 << 2;

/// TCP flag bits.
pub const TCP_FIN: u8 = 0x01;
/// TCP SYN.
pub const TCP_SYN: u8 = 0x02;
/// TCP RST.
pub const TCP_RST: u8 = 0x04;
/// TCP ACK.
pub const TCP_ACK: u8 = 0x10;

/// Transport slot in the port table.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum L4 {
    /// TCP (IP protocol 6).
    Tcp = 0,
    /// UDP (IP protocol 17).
    Udp = 1,
}

impl L4 {
    /// Lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

/// `PS_STATE[0]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Active generation, `0` or `1`.
    pub generation: u32,
    /// [`MODE_ENFORCE`] or [`MODE_DRY_RUN`].
    pub mode: u32,
}

/// `PS_POLICY[generation]`: scalar policy settings.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// `POLICY_*` bits.
    pub flags: u32,
    /// Stride of `PS_RULE_CNT` per interface slot (the counter capacity).
    pub rules_cap: u32,
    /// Local ephemeral port range (`net.ipv4.ip_local_port_range`), inclusive.
    pub ephemeral_lo: u16,
    /// Upper end of the ephemeral range.
    pub ephemeral_hi: u16,
    /// Explicit padding.
    pub _pad: u32,
}

/// `PS_IFACES[ifindex]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceInfo {
    /// Interface slot, `1..MAX_IFACES`; `0` = not configured.
    pub slot: u32,
    /// Reserved.
    pub flags: u32,
}

/// `PS_PORTS[port_index(..)]`: heads of the candidate lists for one protocol and port.
/// `0` means no list (entry 0 of `PS_RULES` is never used).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortEntry {
    /// Candidates when this port is the destination port (inbound rules).
    pub inbound: u32,
    /// Candidates when this port is the source port (replies to outbound rows).
    pub reply: u32,
}

/// `PS_RULES[i]`: one candidate rule for a port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleEntry {
    /// `ENTRY_*` bits.
    pub flags: u32,
    /// Counter slot of the compiled rule.
    pub counter: u32,
    /// Interface slots the rule applies on (bit n = slot n).
    pub iface_mask: u32,
    /// Reply rules: extra local ports admitted, inclusive (`0..=0` = none).
    pub local_lo: u16,
    /// Upper end of the local ports.
    pub local_hi: u16,
}

/// A packet and byte counter.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    /// Packets.
    pub packets: u64,
    /// Bytes (whole frames, as the program sees them).
    pub bytes: u64,
}

/// Token bucket for rate-limited logging, one per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenBucket {
    /// Tokens left.
    pub tokens: u64,
    /// Last refill, `bpf_ktime_get_ns`.
    pub last_ns: u64,
}

/// Dry-run log lines per second per CPU.
pub const LOG_RATE_PER_SEC: u64 = 5;
/// Dry-run log burst per CPU.
pub const LOG_BURST: u64 = 10;

/// Take one token; refill at [`LOG_RATE_PER_SEC`] up to [`LOG_BURST`].
#[inline(always)]
pub fn take_token(b: &mut TokenBucket, now_ns: u64) -> bool {
    let elapsed = now_ns.wrapping_sub(b.last_ns);
    let refill = elapsed / (1_000_000_000 / LOG_RATE_PER_SEC);
    if refill > 0 {
        let t = b.tokens + refill;
        b.tokens = if t > LOG_BURST { LOG_BURST } else { t };
        b.last_ns = now_ns;
    }
    if b.tokens > 0 {
        b.tokens -= 1;
        true
    } else {
        false
    }
}

/// Index into `PS_PORTS`.
#[inline(always)]
pub const fn port_index(generation: u32, l4: L4, port: u16) -> u32 {
    (generation & 1) * PORTS_PER_GEN + (l4 as u32) * 65536 + port as u32
}

/// Index into `PS_RULE_CNT`.
#[inline(always)]
pub const fn rule_counter_index(slot: u32, rules_cap: u32, counter: u32) -> u32 {
    slot * rules_cap + counter
}

/// Index into `PS_STAT_CNT` for a pass reason.
#[inline(always)]
pub const fn stat_pass_index(slot: u32, r: PassReason) -> u32 {
    slot * STAT_STRIDE + STAT_PASS_BASE + r as u32
}

/// Index into `PS_STAT_CNT` for a drop reason; `dry_run` selects the would-drop bucket.
#[inline(always)]
pub const fn stat_drop_index(slot: u32, r: DropReason, dry_run: bool) -> u32 {
    let base = if dry_run { STAT_WOULD_DROP_BASE } else { STAT_DROP_BASE };
    slot * STAT_STRIDE + base + r as u32
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are #[repr(C)], contain only integers, and have no implicit
    // padding (the field sizes add up to the struct size; see the layout tests).
    unsafe impl aya::Pod for State {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Policy {}
    // SAFETY: as above.
    unsafe impl aya::Pod for IfaceInfo {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PortEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for RuleEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Counter {}
    // SAFETY: as above.
    unsafe impl aya::Pod for TokenBucket {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn no_hidden_padding() {
        assert_eq!(size_of::<State>(), 8);
        assert_eq!(size_of::<Policy>(), 4 + 4 + 2 + 2 + 4);
        assert_eq!(size_of::<IfaceInfo>(), 8);
        assert_eq!(size_of::<PortEntry>(), 8);
        assert_eq!(size_of::<RuleEntry>(), 4 + 4 + 4 + 2 + 2);
        assert_eq!(size_of::<Counter>(), 16);
        assert_eq!(size_of::<TokenBucket>(), 16);
    }

    #[test]
    fn indices_do_not_overlap() {
        assert_eq!(port_index(0, L4::Tcp, 0), 0);
        assert_eq!(port_index(0, L4::Udp, 0), 65536);
        assert_eq!(port_index(1, L4::Tcp, 0), PORTS_PER_GEN);
        assert_eq!(port_index(1, L4::Udp, 65535), PORTS_ENTRIES - 1);
        assert!(STAT_DROP_BASE as usize >= PassReason::COUNT);
        assert!((STAT_WOULD_DROP_BASE - STAT_DROP_BASE) as usize >= DropReason::COUNT);
        assert!(STAT_WOULD_DROP_BASE as usize + DropReason::COUNT <= STAT_LOG_SUPPRESSED as usize);
    }

    #[test]
    fn token_bucket_limits_and_refills() {
        let mut b = TokenBucket { tokens: LOG_BURST, last_ns: 0 };
        let taken = (0..100).filter(|_| take_token(&mut b, 1)).count();
        assert_eq!(taken as u64, LOG_BURST);
        // One second later: LOG_RATE_PER_SEC new tokens.
        let taken = (0..100).filter(|_| take_token(&mut b, 1_000_000_001)).count();
        assert_eq!(taken as u64, LOG_RATE_PER_SEC);
    }
}
