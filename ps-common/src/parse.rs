//! Header parsing: Ethernet, up to two VLAN tags (802.1Q / 802.1ad), IPv4 with options,
//! IPv6 with a bounded walk of extension headers, TCP, UDP, ICMP and ICMPv6.
//!
//! Every read is bounds-checked against the end of the frame right before it happens,
//! in the shape the verifier accepts (`start + off + N > end`). The same code runs in the
//! kernel and on the host; host callers use [`parse_slice`].
//!
//! What the parser decides on its own (the drop reasons are listed for operators in
//! docs/observability.md):
//! - a header that does not fit in the frame: [`DropReason::Truncated`];
//! - impossible fields (IP version, IHL < 5, total/payload length shorter than the header
//!   or longer than the frame says, TCP data offset < 5, UDP length < 8, an L4 header that
//!   does not fit in the IP packet): [`DropReason::Malformed`] — except a frame shorter
//!   than the IP length, which is `Truncated`;
//! - non-first fragments (IPv4 offset > 0, IPv6 fragment header offset > 0): they carry no
//!   ports, so [`DropReason::Fragment`]; a first fragment is classified by its ports;
//! - EtherTypes other than IPv4, IPv6, ARP: [`DropReason::EtherType`]; ARP: passes;
//! - a third VLAN tag: [`DropReason::VlanDepth`]; more than [`MAX_EXT_HEADERS`] IPv6
//!   extension headers: [`DropReason::ExtHeaders`]; ESP, "no next header" and any
//!   protocol other than TCP/UDP/ICMP(v6): [`DropReason::IpProto`].

use crate::reason::DropReason;

/// EtherType IPv4.
pub const ETH_P_IP: u16 = 0x0800;
/// EtherType IPv6.
pub const ETH_P_IPV6: u16 = 0x86DD;
/// EtherType ARP.
pub const ETH_P_ARP: u16 = 0x0806;
/// EtherType 802.1Q VLAN tag.
pub const ETH_P_8021Q: u16 = 0x8100;
/// EtherType 802.1ad service tag (QinQ outer tag).
pub const ETH_P_8021AD: u16 = 0x88A8;

/// IP protocol numbers.
pub const IPPROTO_ICMP: u8 = 1;
/// TCP.
pub const IPPROTO_TCP: u8 = 6;
/// UDP.
pub const IPPROTO_UDP: u8 = 17;
/// ICMPv6.
pub const IPPROTO_ICMPV6: u8 = 58;

/// IPv6 extension headers walked before giving up.
pub const MAX_EXT_HEADERS: usize = 6;

/// What the classifier needs to know about an IP packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Packet {
    /// 4 or 6.
    pub ip_version: u8,
    /// IP protocol of the transport header (after IPv6 extension headers).
    pub proto: u8,
    /// TCP flags (TCP only).
    pub tcp_flags: u8,
    /// ICMP/ICMPv6 type (ICMP only).
    pub icmp_type: u8,
    /// Source port (TCP/UDP).
    pub sport: u16,
    /// Destination port (TCP/UDP).
    pub dport: u16,
    /// Offset of the IP header from the start of the frame.
    pub l3_off: u32,
}

impl Packet {
    /// Offset of the source address from the start of the frame. Masked to a byte (a
    /// no-op: the parser puts the IP header within the first 22 bytes), which is a bound
    /// the 5.4 verifier can see: it loses the offset's range where LLVM packs `Packet`'s
    /// fields into one register ("R1 offset is outside of the packet", "math between pkt
    /// pointer and register with unbounded min value"). Behind `black_box`, since LLVM
    /// knows the range and would drop the mask.
    #[inline(always)]
    pub fn src_addr_off(&self) -> u32 {
        let off = if self.ip_version == 4 { self.l3_off + 12 } else { self.l3_off + 8 };
        core::hint::black_box(off) & 0xff
    }
}

/// Result of parsing one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// An IPv4/IPv6 packet with a transport header the classifier understands.
    Ip(Packet),
    /// ARP.
    Arp,
    /// Dropped by the parser.
    Drop(DropReason),
}

/// Pointer to `N` bytes at `off`, if they lie inside the frame.
#[inline(always)]
fn hdr<const N: usize>(start: usize, end: usize, off: usize) -> Option<*const [u8; N]> {
    if start + off + N > end { None } else { Some((start + off) as *const [u8; N]) }
}

/// [`hdr`] at an offset computed from the frame (transport and extension headers),
/// masked below 32 KiB: a no-op (IPv6 extension headers end within 16 KiB), and a bound
/// the 5.4 verifier can see where it has none. It forgets a scalar's range when LLVM
/// spills it to the stack and loads it back ("math between pkt pointer and register with
/// unbounded min value"); later kernels track spilled scalars. Behind `black_box`, since
/// LLVM knows the range and would drop the mask. Below 32 KiB, the offset plus the
/// header stays within the 64 KiB the verifier allows a packet range.
#[inline(always)]
fn hdr_at<const N: usize>(start: usize, end: usize, off: usize) -> Option<(*const [u8; N], usize)> {
    let off = core::hint::black_box(off) & 0x7fff;
    hdr::<N>(start, end, off).map(|h| (h, off))
}

/// Pointer to `N` bytes at `off` from `start`, if they lie inside the frame: for readers
/// that get their offsets from memory (a map value) rather than from the parser.
///
/// The offset is masked below 32 KiB as in [`hdr_at`] (5.4 forgets the range of a spilled
/// offset: "math between pkt pointer and register with unbounded min value"), and the
/// pointer goes through `black_box`: LLVM would otherwise recompute it from its parts for
/// the load, and the verifier knows nothing of the range of a recomputed pointer ("invalid
/// access to packet": it happened in the TCP option walk).
#[inline(always)]
pub(crate) fn ptr_at<const N: usize>(start: usize, end: usize, off: usize) -> Option<*const u8> {
    let off = core::hint::black_box(off) & 0x7fff;
    let p = core::hint::black_box(start + off);
    if p + N > end { None } else { Some(p as *const u8) }
}

/// `N` bytes at `off` from `start`, copied out, if they lie inside the frame (see
/// [`ptr_at`]).
///
/// # Safety
/// `[start, end)` must be readable.
#[inline(always)]
pub(crate) unsafe fn bytes_at<const N: usize>(start: usize, end: usize, off: usize) -> Option<[u8; N]> {
    let p = ptr_at::<N>(start, end, off)?;
    // SAFETY: checked by `ptr_at`.
    Some(unsafe { *(p as *const [u8; N]) })
}

/// Copy `W` 4-byte words from `src` to `dst`, as loads and stores the verifier sees. A
/// plain copy of a byte array becomes a call to `memcpy` or `memset` (a BPF-to-BPF call),
/// and before 6.2 the verifier marks every value precise when it traces one back across
/// a call: in the flow checks that took 6.1 to 772k verified instructions and 5.19 past a
/// million. The stores are volatile, so LLVM cannot turn them back into such a call.
///
/// # Safety
/// `src` must be readable and `dst` writable for `4 * W` bytes.
#[inline(always)]
pub(crate) unsafe fn copy_words<const W: usize>(src: *const u8, dst: *mut u8) {
    let mut i = 0;
    while i < W {
        // SAFETY: inside both ranges (the caller's contract); byte arrays: no alignment.
        unsafe {
            let w = core::ptr::read_unaligned(src.add(4 * i) as *const [u8; 4]);
            core::ptr::write_volatile(dst.add(4 * i) as *mut [u8; 4], w);
        }
        i += 1;
    }
}

#[inline(always)]
fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

#[inline(always)]
const fn is_vlan(ethertype: u16) -> bool {
    ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD
}

/// Parse a frame held in a host buffer.
pub fn parse_slice(frame: &[u8]) -> Parsed {
    let start = frame.as_ptr() as usize;
    // SAFETY: [start, start + len) is the slice, readable for the duration of the call.
    unsafe { parse(start, start + frame.len()) }
}

/// Parse the frame in `[start, end)`.
///
/// # Safety
/// `[start, end)` must be readable memory (an XDP frame, or a live byte slice).
#[inline(always)]
pub unsafe fn parse(start: usize, end: usize) -> Parsed {
    // SAFETY: forwarded.
    unsafe { parse_with(start, end, |v| v) }
}

/// A 16-bit field at `p`, as stored (network order).
///
/// In the kernel one 16-bit load: every 16-bit field the parsers read lies at an even
/// offset from the frame start (14-byte Ethernet, 4-byte tags, IPv4 headers in 4-byte
/// words, IPv6 extension headers in 8-byte units), and XDP frames start 2-byte aligned,
/// so the load is aligned; the verifier allows packet loads of any alignment on x86 and
/// arm64 anyway. A byte-wise read (what `u16::from_be_bytes([b[i], b[i + 1]])` compiles
/// to) is four instructions. The host reads unaligned: its frames are byte slices.
///
/// # Safety
/// Two readable bytes at `p`.
#[inline(always)]
unsafe fn raw16(p: usize) -> u16 {
    #[cfg(target_arch = "bpf")]
    // SAFETY: forwarded; see above for the alignment.
    return unsafe { core::ptr::read(p as *const u16) };
    #[cfg(not(target_arch = "bpf"))]
    // SAFETY: forwarded.
    return unsafe { core::ptr::read_unaligned(p as *const u16) };
}

/// The common frame, read the short way: untagged Ethernet; IPv4 without options and not
/// a non-first fragment, or IPv6 without extension headers; TCP or UDP; every length
/// consistent. `None` for anything else (tags, options, extension headers, ICMP, ARP,
/// every malformed or truncated frame): [`parse_with`] judges those.
///
/// Where it returns a packet, it is exactly the one [`parse_with`] returns: the same
/// checks pass, the same fields are read (the unit tests and the differential test assert
/// it on every frame they build). It exists for speed: constant offsets, no VLAN walk, no
/// round trip through `launder`, 16-bit loads — about half the instructions of the general
/// path, on the frames a host mostly sees.
///
/// # Safety
/// As [`parse`].
#[inline(always)]
pub unsafe fn parse_fast(start: usize, end: usize) -> Option<Packet> {
    const V4_L4: usize = 14 + 20;
    const V6_L4: usize = 14 + 40;
    hdr::<V4_L4>(start, end, 0)?;
    // SAFETY (every read below): inside the bytes `hdr` checked just before.
    let ethertype = unsafe { raw16(start + 12) };
    let (ip_version, proto, l4, ip_end) = if ethertype == ETH_P_IP.to_be() {
        // Version 4, IHL 5: no options.
        if unsafe { *((start + 14) as *const u8) } != 0x45 {
            return None;
        }
        if unsafe { raw16(start + 20) } & 0x1fffu16.to_be() != 0 {
            return None;
        }
        let total = u16::from_be(unsafe { raw16(start + 16) }) as usize;
        // Lengths are compared with the frame's length, never added to the packet pointer:
        // the 6.1 verifier knows nothing of a byte-swapped value's range and rejects it as
        // a pointer offset (6.18 tracks it; `cargo xtask vm-test` found this). Every read
        // below is at a constant offset, checked by `hdr`.
        if total < 20 || 14 + total > end - start {
            return None;
        }
        (4, unsafe { *((start + 23) as *const u8) }, V4_L4, 14 + total)
    } else if ethertype == ETH_P_IPV6.to_be() {
        hdr::<V6_L4>(start, end, 0)?;
        if unsafe { *((start + 14) as *const u8) } >> 4 != 6 {
            return None;
        }
        let payload = u16::from_be(unsafe { raw16(start + 18) }) as usize;
        if payload == 0 || V6_L4 + payload > end - start {
            return None;
        }
        (6, unsafe { *((start + 20) as *const u8) }, V6_L4, V6_L4 + payload)
    } else {
        return None;
    };
    let mut pkt = Packet { ip_version, proto, l3_off: 14, ..Packet::default() };
    if proto == IPPROTO_TCP {
        hdr::<20>(start, end, l4)?;
        let b = unsafe { *((start + l4 + 12) as *const u8) };
        let doff = ((b >> 4) as usize) * 4;
        if doff < 20 || l4 + doff > ip_end {
            return None;
        }
        pkt.tcp_flags = unsafe { *((start + l4 + 13) as *const u8) };
    } else if proto == IPPROTO_UDP {
        hdr::<8>(start, end, l4)?;
        let len = u16::from_be(unsafe { raw16(start + l4 + 4) }) as usize;
        if len < 8 || l4 + len > ip_end {
            return None;
        }
    } else {
        return None;
    }
    pkt.sport = u16::from_be(unsafe { raw16(start + l4) });
    pkt.dport = u16::from_be(unsafe { raw16(start + l4 + 2) });
    Some(pkt)
}

/// [`parse`], passing the L3 offset through `launder` once the VLAN tags are behind it.
///
/// The kernel passes a function that hides the value from the verifier (a round trip
/// through a per-CPU map), so that the zero-, one- and two-tag paths, which differ only in
/// that constant, merge into one verifier state instead of tripling everything after them.
/// The host passes the identity.
///
/// # Safety
/// As [`parse`].
#[inline(always)]
pub unsafe fn parse_with(start: usize, end: usize, launder: impl Fn(usize) -> usize) -> Parsed {
    // As a pointer comparison: the verifier learns the packet's range from it (compared as
    // numbers, `ps_xdp` took 11k more verified instructions on 6.18).
    // SAFETY: forwarded.
    unsafe { parse_ip(start, end, |ip_end| start + ip_end <= end, launder) }
}

/// [`parse_with`] for a packet of `len` bytes of which only `[start, end)` is readable: a
/// socket buffer at TC, whose linear part holds the headers and whose pages hold the
/// payload (every TCP segment the host sends with data). Headers are read from
/// `[start, end)`; the IP length fields are checked against `len`.
///
/// # Safety
/// As [`parse`]; `len >= end - start`.
#[inline(always)]
pub unsafe fn parse_sized(start: usize, end: usize, len: usize, launder: impl Fn(usize) -> usize) -> Parsed {
    // SAFETY: forwarded.
    unsafe { parse_ip(start, end, |ip_end| ip_end <= len, launder) }
}

/// [`parse_with`] and [`parse_sized`]: `fits(n)` says whether the packet holds `n` bytes
/// from `start` (the end of the IP packet by its length field).
///
/// # Safety
/// As [`parse`].
#[inline(always)]
unsafe fn parse_ip(start: usize, end: usize, fits: impl Fn(usize) -> bool, launder: impl Fn(usize) -> usize) -> Parsed {
    let Some(eth) = hdr::<14>(start, end, 0) else {
        return Parsed::Drop(DropReason::Truncated);
    };
    // SAFETY: `hdr` checked the 14 bytes lie inside the frame.
    let mut ethertype = be16(unsafe { &*eth }, 12);
    let mut off = 14usize;
    if is_vlan(ethertype) {
        let Some(tag) = hdr::<4>(start, end, off) else {
            return Parsed::Drop(DropReason::Truncated);
        };
        // SAFETY: checked by `hdr`.
        ethertype = be16(unsafe { &*tag }, 2);
        off += 4;
        if is_vlan(ethertype) {
            let Some(tag) = hdr::<4>(start, end, off) else {
                return Parsed::Drop(DropReason::Truncated);
            };
            // SAFETY: checked by `hdr`.
            ethertype = be16(unsafe { &*tag }, 2);
            off += 4;
            if is_vlan(ethertype) {
                return Parsed::Drop(DropReason::VlanDepth);
            }
        }
    }
    // 14, 18 or 22: laundered in parse_ipv4/6, together with the IP length.
    match ethertype {
        ETH_P_IP => parse_ipv4(start, end, fits, off, launder),
        ETH_P_IPV6 => parse_ipv6(start, end, fits, off, launder),
        ETH_P_ARP => Parsed::Arp,
        _ => Parsed::Drop(DropReason::EtherType),
    }
}

/// The L3 offset (14, 18 or 22) and the IP header's 16-bit length, through `launder` in
/// one round trip. The offset is hidden so that the zero-, one- and two-tag paths merge
/// (see [`parse_with`]); the masks are the bounds the verifier needs afterwards. The
/// length needs one too: LLVM builds it from two bytes with an OR and a byte swap, and the
/// 6.1 verifier marks the result of either unknown (an unbounded length added to the
/// packet pointer is rejected there; 6.18 tracks it). `cargo xtask vm-test` found this.
#[inline(always)]
fn launder_len(launder: &impl Fn(usize) -> usize, off: usize, len: u16) -> (usize, usize) {
    let v = launder(off | ((len as usize) << 5));
    (v & 0x1f, (v >> 5) & 0xffff)
}

/// Every header field is read before the round trip: after it, nothing may hold the
/// pre-launder header pointer, or the verifier states of the VLAN paths would not merge.
#[inline(always)]
fn parse_ipv4(
    start: usize,
    end: usize,
    fits: impl Fn(usize) -> bool,
    off: usize,
    launder: impl Fn(usize) -> usize,
) -> Parsed {
    let Some(ip) = hdr::<20>(start, end, off) else {
        return Parsed::Drop(DropReason::Truncated);
    };
    // SAFETY: checked by `hdr`.
    let ip = unsafe { &*ip };
    if ip[0] >> 4 != 4 {
        return Parsed::Drop(DropReason::Malformed);
    }
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    if ihl < 20 {
        return Parsed::Drop(DropReason::Malformed);
    }
    let fragment = be16(ip, 6) & 0x1fff != 0;
    let proto = ip[9];
    let (off, total) = launder_len(&launder, off, be16(ip, 2));
    if total < ihl {
        return Parsed::Drop(DropReason::Malformed);
    }
    if !fits(off + total) {
        return Parsed::Drop(DropReason::Truncated);
    }
    if fragment {
        return Parsed::Drop(DropReason::Fragment);
    }
    let pkt = Packet { ip_version: 4, proto, l3_off: off as u32, ..Packet::default() };
    match proto {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMP => parse_l4(start, end, off + ihl, off + total, pkt),
        _ => Parsed::Drop(DropReason::IpProto),
    }
}

#[inline(always)]
const fn is_ipv6_ext(nh: u8) -> bool {
    // Hop-by-hop, routing, fragment, destination options, authentication header.
    matches!(nh, 0 | 43 | 44 | 60 | 51)
}

/// As [`parse_ipv4`]: the header is read before the round trip.
#[inline(always)]
fn parse_ipv6(
    start: usize,
    end: usize,
    fits: impl Fn(usize) -> bool,
    off: usize,
    launder: impl Fn(usize) -> usize,
) -> Parsed {
    let Some(ip) = hdr::<40>(start, end, off) else {
        return Parsed::Drop(DropReason::Truncated);
    };
    // SAFETY: checked by `hdr`.
    let ip = unsafe { &*ip };
    if ip[0] >> 4 != 6 {
        return Parsed::Drop(DropReason::Malformed);
    }
    let mut nh = ip[6];
    let (off, payload) = launder_len(&launder, off, be16(ip, 4));
    if payload == 0 {
        // Jumbograms (RFC 2675) are not supported.
        return Parsed::Drop(DropReason::Malformed);
    }
    let ip_end = off + 40 + payload;
    if !fits(ip_end) {
        return Parsed::Drop(DropReason::Truncated);
    }
    let mut l4 = off + 40;
    let mut i = 0;
    while i < MAX_EXT_HEADERS && is_ipv6_ext(nh) {
        let Some((ext, at)) = hdr_at::<8>(start, end, l4) else {
            return Parsed::Drop(DropReason::Truncated);
        };
        l4 = at;
        // SAFETY: checked by `hdr`.
        let ext = unsafe { &*ext };
        let len = match nh {
            44 => {
                if be16(ext, 2) & 0xfff8 != 0 {
                    return Parsed::Drop(DropReason::Fragment);
                }
                8
            }
            51 => (ext[1] as usize + 2) * 4,
            _ => (ext[1] as usize + 1) * 8,
        };
        nh = ext[0];
        l4 += len;
        if l4 > ip_end {
            return Parsed::Drop(DropReason::Malformed);
        }
        i += 1;
    }
    if is_ipv6_ext(nh) {
        return Parsed::Drop(DropReason::ExtHeaders);
    }
    let pkt = Packet { ip_version: 6, proto: nh, l3_off: off as u32, ..Packet::default() };
    match nh {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMPV6 => parse_l4(start, end, l4, ip_end, pkt),
        _ => Parsed::Drop(DropReason::IpProto),
    }
}

/// The transport header of `p`: its offset, and the bytes from there to the end of the IP
/// packet (header and payload, by the IP length field the parser checked), read again from
/// the frame; `None` behind IPv6 extension headers, which are not walked again. Only the
/// TCP window checks need them. Carried in every `Packet`, the offset took `ps_xdp` from
/// 274k to 619k verified instructions on 5.19 (491k packed into the same 12 bytes); walked
/// again here, the extension headers cost `ps_tc_egress` 28k more on 6.18 and 111k in all
/// on 5.19.
///
/// # Safety
/// `[start, end)` must be the readable frame `p` was parsed from.
#[inline(always)]
pub unsafe fn l4_span(start: usize, end: usize, p: &Packet) -> Option<(usize, u32)> {
    // The parser puts the IP header within the first 64 bytes (a bound the verifier sees
    // where the packet comes from memory).
    let l3 = (p.l3_off & 0x3f) as usize;
    // SAFETY: forwarded.
    let [vihl, _, a, b, c, d, nh] = unsafe { bytes_at::<7>(start, end, l3) }?;
    if p.ip_version == 4 {
        let ihl = ((vihl & 0x0f) as usize) * 4;
        Some((l3 + ihl, (u16::from_be_bytes([a, b]) as usize).wrapping_sub(ihl) as u32))
    } else if nh == p.proto {
        Some((l3 + 40, u16::from_be_bytes([c, d]) as u32))
    } else {
        None
    }
}

/// Parse the transport header at `off`; `ip_end` is where the IP packet ends by its own
/// length field.
#[inline(always)]
fn parse_l4(start: usize, end: usize, off: usize, ip_end: usize, mut pkt: Packet) -> Parsed {
    match pkt.proto {
        IPPROTO_TCP => {
            let Some((tcp, off)) = hdr_at::<20>(start, end, off) else {
                return Parsed::Drop(DropReason::Truncated);
            };
            // SAFETY: checked by `hdr`.
            let tcp = unsafe { &*tcp };
            let doff = ((tcp[12] >> 4) as usize) * 4;
            if doff < 20 || off + doff > ip_end {
                return Parsed::Drop(DropReason::Malformed);
            }
            pkt.sport = be16(tcp, 0);
            pkt.dport = be16(tcp, 2);
            pkt.tcp_flags = tcp[13];
        }
        IPPROTO_UDP => {
            let Some((udp, off)) = hdr_at::<8>(start, end, off) else {
                return Parsed::Drop(DropReason::Truncated);
            };
            // SAFETY: checked by `hdr`.
            let udp = unsafe { &*udp };
            let len = be16(udp, 4) as usize;
            if len < 8 || off + len > ip_end {
                return Parsed::Drop(DropReason::Malformed);
            }
            pkt.sport = be16(udp, 0);
            pkt.dport = be16(udp, 2);
        }
        _ => {
            let Some((icmp, off)) = hdr_at::<4>(start, end, off) else {
                return Parsed::Drop(DropReason::Truncated);
            };
            if off + 4 > ip_end {
                return Parsed::Drop(DropReason::Malformed);
            }
            // SAFETY: checked by `hdr`.
            pkt.icmp_type = unsafe { (*icmp)[0] };
        }
    }
    Parsed::Ip(pkt)
}
