//! The closed sets of verdict reasons, shared by kernel and user side.
//!
//! A packet is counted exactly once per interface: in a rule counter when a rule admits
//! it, otherwise in the bucket of its [`PassReason`] or [`DropReason`] (or the would-drop
//! bucket of its reason in dry-run). The sum of all buckets is the packet total.

/// Why a packet was (or, in dry-run, would have been) dropped.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// No rule admits this protocol and destination port (nor is it a reply to one).
    NoRule = 0,
    /// A rule matches the port, but not on this interface (management-only rows).
    Interface = 1,
    /// Shaped like a reply to an outbound row, but fails the reply checks (TCP without
    /// ACK, or a local port outside the ephemeral range).
    ReplyCheck = 2,
    /// A rule matches the port, but the source address is not in the row's system set.
    Source = 3,
    /// A reply for which no outbound flow is tracked (stateful reply admission).
    Untracked = 4,
    /// A non-first IP fragment: it carries no ports, so no rule can admit it.
    Fragment = 5,
    /// An EtherType other than IPv4, IPv6 and ARP.
    EtherType = 6,
    /// An IP protocol no rule can admit (not TCP, UDP, ICMP for IPv4, ICMPv6 for IPv6).
    IpProto = 7,
    /// An ICMP or ICMPv6 type that is not let through (echo request, redirect, ...).
    Icmp = 8,
    /// The frame ends before a header it announces.
    Truncated = 9,
    /// A header field is impossible: IP version, IHL < 5, lengths, TCP data offset < 5.
    Malformed = 10,
    /// More than two VLAN tags.
    VlanDepth = 11,
    /// More IPv6 extension headers than the program walks.
    ExtHeaders = 12,
    /// A TCP reply to a tracked flow whose sequence or acknowledgement number lies outside
    /// the flow's windows (stateful reply admission: `crate::track`).
    OutOfWindow = 13,
}

impl DropReason {
    /// Number of drop reasons.
    pub const COUNT: usize = 14;
    /// Every reason, in numeric order.
    pub const ALL: [DropReason; Self::COUNT] = [
        Self::NoRule,
        Self::Interface,
        Self::ReplyCheck,
        Self::Source,
        Self::Untracked,
        Self::Fragment,
        Self::EtherType,
        Self::IpProto,
        Self::Icmp,
        Self::Truncated,
        Self::Malformed,
        Self::VlanDepth,
        Self::ExtHeaders,
        Self::OutOfWindow,
    ];

    /// Stable snake_case name used in JSON, metrics and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NoRule => "no_rule",
            Self::Interface => "interface",
            Self::ReplyCheck => "reply_check",
            Self::Source => "source",
            Self::Untracked => "untracked",
            Self::Fragment => "fragment",
            Self::EtherType => "ethertype",
            Self::IpProto => "ip_proto",
            Self::Icmp => "icmp",
            Self::Truncated => "truncated",
            Self::Malformed => "malformed",
            Self::VlanDepth => "vlan_depth",
            Self::ExtHeaders => "ext_headers",
            Self::OutOfWindow => "out_of_window",
        }
    }

    /// The reason with this numeric value.
    pub const fn from_u32(v: u32) -> Option<Self> {
        if (v as usize) < Self::COUNT { Some(Self::ALL[v as usize]) } else { None }
    }
}

/// Why a packet that no rule counted passed.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PassReason {
    /// ARP (always passes: without it IPv4 stops working).
    Arp = 0,
    /// IPv6 neighbour discovery and MLD (always passes).
    Ndp = 1,
    /// ICMP/ICMPv6 errors: unreachable / packet too big, time exceeded, parameter problem
    /// (always pass: path MTU discovery needs them).
    IcmpError = 2,
    /// ICMP echo reply (replies to the host's own pings), and echo request where the
    /// policy allows it.
    IcmpEcho = 3,
}

impl PassReason {
    /// Number of pass reasons.
    pub const COUNT: usize = 4;
    /// Every reason, in numeric order.
    pub const ALL: [PassReason; Self::COUNT] = [Self::Arp, Self::Ndp, Self::IcmpError, Self::IcmpEcho];

    /// Stable snake_case name used in JSON, metrics and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Arp => "arp",
            Self::Ndp => "ndp",
            Self::IcmpError => "icmp_error",
            Self::IcmpEcho => "icmp_echo",
        }
    }
}
