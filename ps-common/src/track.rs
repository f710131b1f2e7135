//! Stateful reply admission: what one packet does to its flow in `PS_FLOWS`.
//!
//! The egress program follows every segment the host sends ([`flow_new`], [`flow_sent`]);
//! the XDP program judges every reply against its flow ([`flow_reply`]). TCP is followed
//! as conntrack's `tcp_in_window` follows it (Guido van Rooij, "Real Stateful TCP Packet
//! Filtering in IP Filter"): per direction the highest sequence sent (`end`), the highest
//! sequence the other side allows (`maxend`), the largest window (`maxwin`) and the window
//! scale from the SYN ([`TcpDir`]). A reply passes only if
//!
//! - I: its sequence does not pass what the host's window allows (`seq <= remote.maxend`),
//! - II: it ends no more than one host window below what the remote end already sent,
//! - III: it acknowledges (SACK right edges included) nothing the host has not sent,
//! - IV: it acknowledges no less than one window below what the host sent,
//!
//! and is [`DropReason::OutOfWindow`] otherwise. The host's own segments are trusted: they
//! only teach the windows. Beyond the window:
//!
//! - a TCP reply must carry ACK (or RST); before the SYN-ACK only a SYN-ACK or a RST is a
//!   reply ([`DropReason::ReplyCheck`]);
//! - a RST ends the flow at once when it is exact (its sequence is the next one the host
//!   expects: RFC 5961); an in-window RST that is not exact passes, so the host can send
//!   its challenge ACK, and leaves the flow as it was; the host's own RST ends the flow;
//! - once FINs went both ways, replies no longer refresh the flow: only the host does;
//! - a flow picked up mid-stream (seeded from the kernel's sockets, or first seen on a
//!   segment other than a SYN) has no window scale (it travels only in the SYN): it is
//!   followed but not checked ([`DIR_LIBERAL`]), as conntrack does with such connections.
//!
//! Pure functions over the flow state and a [`Segment`]; the unit tests (`track/tests.rs`),
//! the program tests and the differential test run them.

use crate::{
    layout::*,
    parse::{IPPROTO_TCP, Packet, bytes_at, copy_words, l4_span, ptr_at},
    reason::DropReason,
};

/// A TCP segment, as the window checks need it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// The highest SACK right edge, or `ack` where none is above it (SACK blocks read only
    /// where asked: [`tcp_segment`]).
    pub sack: u32,
    /// `seq` plus the payload length, plus one for SYN and one for FIN.
    pub end: u32,
    /// Window field (unscaled).
    pub win: u16,
    /// TCP flags.
    pub flags: u8,
    /// Window scale shift from the window scale option, or [`NO_WSCALE`].
    pub wscale: u8,
    /// `SEG_*` bits.
    pub opts: u8,
}

/// [`Segment::wscale`]: no window scale option.
pub const NO_WSCALE: u8 = 0xff;
/// [`Segment::opts`]: SACK permitted.
pub const SEG_SACK_PERM: u8 = 1 << 0;
/// [`Segment::opts`]: the options were not all read (more than [`MAX_TCP_OPTIONS`]).
pub const SEG_OPTS_UNREAD: u8 = 1 << 1;
/// [`Segment::opts`]: only the flags were read (the segment lies behind IPv6 extension
/// headers: `parse::l4_span`); its numbers are not known. It leaves a flow unchecked when
/// the host sends it, and is out of the window when it replies to a checked flow.
pub const SEG_UNREAD: u8 = 1 << 2;

/// TCP options read per segment (a NOP counts): Linux sends 5 in a SYN and 6 with SACK
/// blocks, Windows 6 in a SYN, macOS its window scale third; a SYN whose window scale lies
/// beyond them leaves its flow unchecked. Each one more is verified in both programs (ten:
/// 1.7k more for `ps_xdp` and 0.8k for `ps_tc_egress` on 6.18; on 5.19 `ps_tc_egress` has
/// 6k left of its budget).
pub const MAX_TCP_OPTIONS: usize = 6;
/// The largest window scale shift (RFC 7323).
pub const MAX_WSCALE: u8 = 14;
/// conntrack's `MAXACKWINDOW` floor: how far below the sent data an ACK may lie when the
/// peer's window is smaller.
pub const MIN_ACK_WINDOW: u32 = 66_000;

/// `a` comes before `b` in sequence space (wraps at 2^32).
#[inline(always)]
pub const fn seq_before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// `a` comes after `b` in sequence space.
#[inline(always)]
pub const fn seq_after(a: u32, b: u32) -> bool {
    seq_before(b, a)
}

/// Where [`tcp_segment_into`] copies a segment's options to walk them.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptBuf {
    /// The 40 option bytes a TCP header can hold, and room for reads at a masked index up
    /// to 63 (plus 3) without a bounds check.
    pub bytes: [u8; 72],
    /// Where the walk's position makes a round trip (see [`OptBuf::hide`]).
    pub slot: u64,
}

impl Default for OptBuf {
    fn default() -> Self {
        Self { bytes: [0; 72], slot: 0 }
    }
}

impl OptBuf {
    /// `v`, written to [`OptBuf::slot`] and read back. In the programs the buffer is map
    /// memory, and the verifier knows nothing of a value loaded from there: an index
    /// derived from it needs no exact range, so the walk's states merge at every option
    /// instead of splitting on each position (used as an index straight away, the
    /// position took the egress program past 400,000 verified instructions).
    #[inline(always)]
    fn hide(&mut self, v: usize) -> usize {
        // SAFETY: a field of `self`; volatile, so the round trip stays.
        unsafe {
            core::ptr::write_volatile(&mut self.slot, v as u64);
            core::ptr::read_volatile(&self.slot) as usize
        }
    }
}

/// Read the TCP segment of `p` from its frame; `sack`: also read SACK blocks (options are
/// otherwise read only in a SYN). `None` if the header is not in `[start, end)`.
///
/// # Safety
/// `[start, end)` must be the readable frame `p` was parsed from (TCP).
#[inline(always)]
pub unsafe fn tcp_segment(start: usize, end: usize, p: &Packet, sack: bool) -> Option<Segment> {
    let mut seg = Segment::default();
    let mut buf = OptBuf::default();
    // SAFETY: forwarded.
    unsafe { tcp_segment_into(start, end, p, sack, &mut seg, &mut buf) }.then_some(seg)
}

/// [`tcp_segment`] written into `seg`, with `buf` to copy the options into: the programs
/// keep both in a per-CPU scratch value, because the verifier follows values on the stack
/// (every constant there splits its states) and not in maps. `false` if the header is not
/// in `[start, end)`.
///
/// # Safety
/// As [`tcp_segment`].
#[inline(always)]
pub unsafe fn tcp_segment_into(
    start: usize,
    end: usize,
    p: &Packet,
    sack: bool,
    seg: &mut Segment,
    buf: &mut OptBuf,
) -> bool {
    // SAFETY: forwarded.
    let Some((off, l4_len)) = (unsafe { l4_span(start, end, p) }) else {
        // Behind IPv6 extension headers: the flags (the parser's), nothing else.
        seg.flags = p.tcp_flags;
        seg.wscale = NO_WSCALE;
        seg.opts = SEG_UNREAD;
        return true;
    };
    // A bound the verifier can see; the parser's offsets are far below it.
    let off = off & 0x3fff;
    // SAFETY: forwarded.
    let Some(h) = (unsafe { bytes_at::<20>(start, end, off) }) else { return false };
    let be32 = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let flags = h[13];
    let doff = ((h[12] >> 4) as u32) * 4;
    let payload = l4_len.wrapping_sub(doff);
    seg.seq = be32(4);
    seg.ack = be32(8);
    seg.sack = seg.ack;
    let syn_fin = (flags & TCP_SYN != 0) as u32 + (flags & TCP_FIN != 0) as u32;
    seg.end = seg.seq.wrapping_add(payload).wrapping_add(syn_fin);
    seg.win = u16::from_be_bytes([h[14], h[15]]);
    seg.flags = flags;
    seg.wscale = NO_WSCALE;
    seg.opts = 0;
    if doff > 20 && (flags & TCP_SYN != 0 || sack) {
        // SAFETY: forwarded; the options lie inside the header the parser checked.
        let len = (doff - 20) as usize;
        if unsafe { copy_options(start, end, off + 20, len, buf) } {
            tcp_options(buf, len, sack, seg);
        }
    }
    true
}

/// Copy the `len` option bytes at `off` into `buf` (options fill whole words: `len` is 4,
/// 8, ... 40); `false` if they are not in the frame. One bounds check of the whole length:
/// checked word by word, every outcome left the verifier a different packet range, and its
/// states doubled at every word.
///
/// # Safety
/// `[start, end)` must be readable.
#[inline(always)]
unsafe fn copy_options(start: usize, end: usize, off: usize, len: usize, buf: &mut OptBuf) -> bool {
    /// The first `N` bytes (`W` words: `copy_words`, for a byte copy would be a call).
    ///
    /// # Safety
    /// As `copy_options`.
    #[inline(always)]
    unsafe fn first<const N: usize, const W: usize>(start: usize, end: usize, off: usize, buf: &mut OptBuf) -> bool {
        let Some(p) = ptr_at::<N>(start, end, off) else { return false };
        // SAFETY: `N` bytes checked at `p`; the buffer holds 72.
        unsafe { copy_words::<W>(p, buf.bytes.as_mut_ptr()) };
        true
    }
    // SAFETY (every arm): forwarded.
    unsafe {
        match len {
            4 => first::<4, 1>(start, end, off, buf),
            8 => first::<8, 2>(start, end, off, buf),
            12 => first::<12, 3>(start, end, off, buf),
            16 => first::<16, 4>(start, end, off, buf),
            20 => first::<20, 5>(start, end, off, buf),
            24 => first::<24, 6>(start, end, off, buf),
            28 => first::<28, 7>(start, end, off, buf),
            32 => first::<32, 8>(start, end, off, buf),
            36 => first::<36, 9>(start, end, off, buf),
            40 => first::<40, 10>(start, end, off, buf),
            _ => false,
        }
    }
}

/// Walk the option bytes in `buf` (`len` of them, at most 40): window scale and SACK
/// permitted, and (`sack`) the highest SACK right edge above `seg.ack`. Every index is
/// masked into the buffer, and the position is hidden from the verifier ([`OptBuf::hide`]).
#[inline(always)]
fn tcp_options(buf: &mut OptBuf, len: usize, sack: bool, seg: &mut Segment) {
    let mut i = 0usize;
    let mut n = 0;
    while n < MAX_TCP_OPTIONS {
        if i >= len {
            return;
        }
        let at = buf.hide(i) & 63;
        let b = &buf.bytes;
        let kind = b[at];
        if kind == 0 {
            return;
        }
        n += 1;
        if kind == 1 {
            i += 1;
            continue;
        }
        let olen = b[at + 1] as usize;
        if olen < 2 || i + olen > len {
            return;
        }
        if kind == 3 && olen == 3 {
            let shift = b[at + 2];
            seg.wscale = if shift > MAX_WSCALE { MAX_WSCALE } else { shift };
        } else if kind == 4 && olen == 2 {
            seg.opts |= SEG_SACK_PERM;
        } else if kind == 5 && sack {
            sack_edges(b, at, olen, seg);
        }
        i += olen;
    }
    if i < len {
        seg.opts |= SEG_OPTS_UNREAD;
    }
}

/// The highest right edge of the SACK option at `b[at]` (`olen` bytes: up to 4 blocks).
#[inline(always)]
fn sack_edges(b: &[u8; 72], at: usize, olen: usize, seg: &mut Segment) {
    let mut k = 0;
    while k < 4 {
        // Block k: left edge at 2 + 8k, right edge at 6 + 8k.
        if 10 + 8 * k > olen {
            return;
        }
        let r = (at + 6 + 8 * k) & 63;
        let e = u32::from_be_bytes([b[r], b[r + 1], b[r + 2], b[r + 3]]);
        if seq_after(e, seg.sack) {
            seg.sack = e;
        }
        k += 1;
    }
}

/// A new flow for a packet the host sends under the rule `counter`. TCP: a SYN opens it;
/// any other segment but a RST picks up a connection already under way (followed, not
/// checked: [`DIR_LIBERAL`]); a RST creates nothing. `seg` is `None` for UDP.
#[inline(always)]
pub fn flow_new(proto: u8, seg: Option<&Segment>, counter: u32, now_ns: u64) -> Option<FlowState> {
    let mut f = FlowState::default();
    flow_new_into(proto, seg, counter, now_ns, &mut f).then_some(f)
}

/// [`flow_new`] written into `f` (in the egress program, a per-CPU scratch value);
/// `false`: no flow.
#[inline(always)]
pub fn flow_new_into(proto: u8, seg: Option<&Segment>, counter: u32, now_ns: u64, f: &mut FlowState) -> bool {
    f.state = FLOW_UDP;
    f.counter = counter;
    f.created_ns = now_ns;
    f.last_ns = now_ns;
    f.packets_out = 1;
    // Volatile, one word at a time: zeroed as a whole, the rest became a `memset` call
    // (see `parse::copy_words` for what such a call costs the verifier).
    // SAFETY: fields of `f`.
    unsafe { core::ptr::write_volatile(&mut f.packets_in, 0) };
    clear(&mut f.local);
    clear(&mut f.remote);
    if proto != IPPROTO_TCP {
        return true;
    }
    let Some(s) = seg else { return false };
    if s.flags & TCP_RST != 0 {
        return false;
    }
    if s.opts & SEG_UNREAD != 0 {
        f.state = if s.flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
            FLOW_TCP_SYN_SENT
        } else if s.flags & TCP_FIN != 0 {
            FLOW_TCP_CLOSING
        } else {
            FLOW_TCP_ESTABLISHED
        };
        f.local.flags = DIR_LIBERAL;
        f.remote.flags = DIR_LIBERAL;
        return true;
    }
    if s.flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
        f.state = FLOW_TCP_SYN_SENT;
        f.local.end = s.end;
        f.local.maxend = s.end;
        f.local.maxwin = if s.win == 0 { 1 } else { s.win as u32 };
        syn_options(&mut f.local, s);
        return true;
    }
    f.state = if s.flags & TCP_FIN != 0 { FLOW_TCP_CLOSING } else { FLOW_TCP_ESTABLISHED };
    f.local.flags = DIR_LIBERAL;
    f.remote.flags = DIR_LIBERAL;
    learn(&mut f.local, &mut f.remote, s);
    if s.flags & TCP_FIN != 0 {
        f.local.flags |= DIR_FIN;
    }
    true
}

/// Zero a direction one word at a time, volatile (see [`flow_new_into`]).
#[inline(always)]
fn clear(d: &mut TcpDir) {
    let words = d as *mut TcpDir as *mut u32;
    let mut i = 0;
    while i < core::mem::size_of::<TcpDir>() / 4 {
        // SAFETY: `TcpDir` is `repr(C)`, 4-aligned, a whole number of words.
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
        i += 1;
    }
}

/// A flow the agent seeds from a socket of the kernel's (state `FLOW_*`): nothing is known
/// of its windows, so it is followed, not checked.
pub fn flow_seeded(state: u32, counter: u32, now_ns: u64) -> FlowState {
    let liberal = TcpDir { flags: DIR_LIBERAL, ..TcpDir::default() };
    FlowState {
        state,
        counter,
        created_ns: now_ns,
        last_ns: now_ns,
        local: liberal,
        remote: liberal,
        ..FlowState::default()
    }
}

/// What a packet of the host did to its flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// The flow goes on.
    Keep,
    /// The host reset the connection: remove the flow.
    Close,
}

/// Follow a tracked flow through a packet the host sends under the rule `counter`.
#[inline(always)]
pub fn flow_sent(f: &mut FlowState, proto: u8, seg: Option<&Segment>, counter: u32, now_ns: u64) -> Sent {
    f.counter = counter;
    f.packets_out = f.packets_out.wrapping_add(1);
    f.last_ns = now_ns;
    let Some(s) = seg.filter(|_| proto == IPPROTO_TCP) else { return Sent::Keep };
    if s.flags & TCP_RST != 0 {
        return Sent::Close;
    }
    if s.flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
        // A retransmitted SYN, or a new connection on the tuple: start over.
        flow_new_into(proto, Some(s), counter, now_ns, f);
        return Sent::Keep;
    }
    if s.opts & SEG_UNREAD != 0 {
        // The host's numbers are not known from here on: follow, do not check.
        f.local.flags |= DIR_LIBERAL;
        f.remote.flags |= DIR_LIBERAL;
    } else {
        learn(&mut f.local, &mut f.remote, s);
    }
    if s.flags & TCP_FIN != 0 {
        f.local.flags |= DIR_FIN;
        f.state = FLOW_TCP_CLOSING;
    }
    Sent::Keep
}

/// What a reply did to its flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Admitted.
    Pass,
    /// Admitted, and the flow ends with it (an exact RST): remove the flow.
    Close,
    /// The flow was idle past its timeout: remove it; the reply is [`DropReason::Untracked`].
    Expired,
    /// Dropped; the flow is unchanged.
    Drop(DropReason),
}

/// Judge a reply (`seg`: its TCP segment, `None` for UDP) against its flow, and follow the
/// flow through it (`var_stack`: the timeout's form, see [`flow_timeout_ns`]).
#[inline(always)]
pub fn flow_reply(
    f: &mut FlowState,
    policy: &Policy,
    proto: u8,
    seg: Option<&Segment>,
    now_ns: u64,
    var_stack: bool,
) -> Reply {
    if flow_expired(policy, f, now_ns, var_stack) {
        return Reply::Expired;
    }
    if proto != IPPROTO_TCP {
        f.packets_in = f.packets_in.wrapping_add(1);
        f.last_ns = now_ns;
        return Reply::Pass;
    }
    let Some(s) = seg else { return Reply::Drop(DropReason::Truncated) };
    let expected = if f.state == FLOW_TCP_SYN_SENT { TCP_SYN | TCP_ACK } else { TCP_ACK };
    if s.flags & TCP_RST == 0 && s.flags & expected != expected {
        return Reply::Drop(DropReason::ReplyCheck);
    }
    // Checked before anything is written: a segment that fails leaves the flow as it was,
    // even the first one from the remote end (whose direction it would initialize).
    let (n, b) = bounds(&f.remote, &f.local, s);
    let unread = s.opts & SEG_UNREAD != 0;
    if (f.remote.flags | f.local.flags) & DIR_LIBERAL == 0 && (unread || !in_window(&b, &n)) {
        return Reply::Drop(DropReason::OutOfWindow);
    }
    let exact = !unread && exact_rst(f, s);
    if !unread {
        // Taken in field by field: the egress program may be writing the host's direction.
        normalize(&mut f.remote, &mut f.local, s);
        update(&mut f.remote, &mut f.local, s, &n);
    }
    f.packets_in = f.packets_in.wrapping_add(1);
    if s.flags & TCP_RST != 0 {
        return if exact { Reply::Close } else { Reply::Pass };
    }
    if s.flags & TCP_FIN != 0 {
        f.remote.flags |= DIR_FIN;
        f.state = FLOW_TCP_CLOSING;
    } else if f.state == FLOW_TCP_SYN_SENT {
        f.state = FLOW_TCP_ESTABLISHED;
    }
    if f.local.flags & f.remote.flags & DIR_FIN == 0 {
        f.last_ns = now_ns;
    }
    Reply::Pass
}

/// RFC 5961: only the exact RST resets: its sequence is the next one the host expects (what
/// the remote end sent, or what the host acknowledged; before the remote end has sent
/// anything, only the RST that acknowledges the host's SYN). The host challenges others.
#[inline(always)]
fn exact_rst(f: &FlowState, s: &Segment) -> bool {
    if f.remote.maxwin == 0 {
        f.state == FLOW_TCP_SYN_SENT && s.flags & TCP_ACK != 0 && s.ack == f.local.end
    } else {
        s.seq == f.remote.end || (f.local.flags & DIR_MAXACK != 0 && s.seq == f.local.maxack)
    }
}

/// A segment's numbers as the checks use them.
#[derive(Clone, Copy)]
struct Norm {
    seq: u32,
    end: u32,
    ack: u32,
    sack: u32,
}

/// What the checks read of the two directions: the sender's `end`, `maxend` and `maxwin`,
/// the receiver's `end` and `maxwin`.
#[derive(Clone, Copy)]
struct Bounds {
    end: u32,
    maxend: u32,
    maxwin: u32,
    rcv_end: u32,
    rcv_maxwin: u32,
}

/// The bounds a segment from `snd` to `rcv` is checked against, and its numbers as checked.
/// The sender's first segment initializes its direction (from a SYN, or mid-stream: then
/// also the receiver's, if it has sent nothing either), as [`normalize`] writes it; a
/// segment without ACK counts as acknowledging what the receiver sent, and one without
/// data is checked by its acknowledgement alone (a RST by its sequence too).
#[inline(always)]
fn bounds(snd: &TcpDir, rcv: &TcpDir, s: &Segment) -> (Norm, Bounds) {
    let mut b =
        Bounds { end: snd.end, maxend: snd.maxend, maxwin: snd.maxwin, rcv_end: rcv.end, rcv_maxwin: rcv.maxwin };
    if snd.maxwin == 0 {
        b.end = s.end;
        if s.flags & TCP_SYN != 0 {
            b.maxend = s.end;
            b.maxwin = if s.win == 0 { 1 } else { s.win as u32 };
        } else {
            let win = (s.win as u32) << (snd.scale & 15);
            b.maxwin = if win == 0 { 1 } else { win };
            b.maxend = s.end.wrapping_add(b.maxwin);
            if rcv.maxwin == 0 {
                b.rcv_end = s.sack;
            }
        }
    }
    let mut n = Norm { seq: s.seq, end: s.end, ack: s.ack, sack: s.sack };
    if s.flags & TCP_ACK == 0 || (s.flags & TCP_RST != 0 && s.ack == 0) {
        n.ack = b.rcv_end;
        n.sack = b.rcv_end;
    }
    if s.seq == s.end && s.flags & TCP_RST == 0 {
        n.seq = b.end;
        n.end = b.end;
    }
    (n, b)
}

/// Write what the sender's first segment initializes ([`bounds`]); return the segment's
/// numbers.
#[inline(always)]
fn normalize(snd: &mut TcpDir, rcv: &mut TcpDir, s: &Segment) -> Norm {
    let (n, b) = bounds(snd, rcv, s);
    if snd.maxwin == 0 {
        snd.end = b.end;
        snd.maxend = b.maxend;
        snd.maxwin = b.maxwin;
        if s.flags & TCP_SYN != 0 {
            syn_options(snd, s);
            // RFC 7323: windows are scaled only if both SYNs carried the option.
            if snd.flags & rcv.flags & DIR_WSCALE == 0 {
                snd.scale = 0;
                rcv.scale = 0;
            }
        } else if rcv.maxwin == 0 {
            rcv.end = b.rcv_end;
            rcv.maxend = b.rcv_end;
        }
    }
    n
}

/// conntrack's four bounds (see the module docs).
#[inline(always)]
fn in_window(b: &Bounds, n: &Norm) -> bool {
    let ack_window = if b.maxwin > MIN_ACK_WINDOW { b.maxwin } else { MIN_ACK_WINDOW };
    !seq_after(n.seq, b.maxend)
        && !seq_before(n.end, b.end.wrapping_sub(b.rcv_maxwin))
        && !seq_after(n.sack, b.rcv_end)
        && !seq_before(n.sack, b.rcv_end.wrapping_sub(ack_window))
}

/// Take a segment from `snd` to `rcv` into both directions' state, unchecked.
#[inline(always)]
fn learn(snd: &mut TcpDir, rcv: &mut TcpDir, s: &Segment) {
    let n = normalize(snd, rcv, s);
    update(snd, rcv, s, &n);
}

/// conntrack's update after the checks: the sender's end, largest window and highest
/// acknowledgement; the receiver's upper bound (`maxend`).
#[inline(always)]
fn update(snd: &mut TcpDir, rcv: &mut TcpDir, s: &Segment, n: &Norm) {
    let win = if s.flags & TCP_SYN != 0 { s.win as u32 } else { (s.win as u32) << (snd.scale & 15) };
    let swin = win.wrapping_add(n.sack.wrapping_sub(n.ack));
    if snd.maxwin < swin {
        snd.maxwin = swin;
    }
    if seq_after(n.end, snd.end) {
        snd.end = n.end;
    }
    if s.flags & TCP_ACK != 0 && (snd.flags & DIR_MAXACK == 0 || seq_after(n.ack, snd.maxack)) {
        snd.maxack = n.ack;
        snd.flags |= DIR_MAXACK;
    }
    if rcv.maxwin != 0 && seq_after(n.end, snd.maxend) {
        rcv.maxwin = rcv.maxwin.wrapping_add(n.end.wrapping_sub(snd.maxend));
    }
    let edge = n.sack.wrapping_add(win);
    if seq_after(edge, rcv.maxend.wrapping_sub(1)) {
        rcv.maxend = if win == 0 { edge.wrapping_add(1) } else { edge };
    }
}

/// Window scale and SACK permission from a SYN; a SYN whose options were not all read,
/// and no window scale among those that were, leaves the flow unchecked (its scale may be
/// among the rest).
#[inline(always)]
fn syn_options(d: &mut TcpDir, s: &Segment) {
    if s.wscale != NO_WSCALE {
        d.flags |= DIR_WSCALE;
        d.scale = s.wscale;
    } else if s.opts & SEG_OPTS_UNREAD != 0 {
        d.flags |= DIR_LIBERAL;
    }
    if s.opts & SEG_SACK_PERM != 0 {
        d.flags |= DIR_SACK_PERM;
    }
}

#[cfg(test)]
mod tests;
