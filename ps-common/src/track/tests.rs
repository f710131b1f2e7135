//! The window checks, table-driven: a connection is set up through `flow_new`,
//! `flow_sent` and `flow_reply` as the programs call them, then each row sends one reply.

use alloc::{vec, vec::Vec};

use super::*;
use crate::{frames::*, parse::parse_slice};

const S: u64 = 1_000_000_000;
const SYN: u8 = TCP_SYN;
const ACK: u8 = TCP_ACK;
const FIN: u8 = TCP_FIN;
const RST: u8 = TCP_RST;

fn policy() -> Policy {
    Policy {
        tcp_syn_timeout_s: 30,
        tcp_established_timeout_s: 3600,
        tcp_closing_timeout_s: 30,
        udp_timeout_s: 120,
        ..Policy::default()
    }
}

/// A segment with `len` bytes of payload.
fn seg(flags: u8, seq: u32, ack: u32, len: u32, win: u16) -> Segment {
    let end = seq.wrapping_add(len).wrapping_add((flags & SYN != 0) as u32 + (flags & FIN != 0) as u32);
    Segment { seq, ack, sack: ack, end, win, flags, wscale: NO_WSCALE, opts: 0 }
}

/// A SYN (or SYN-ACK) with SACK permitted and, if given, a window scale option.
fn syn(flags: u8, seq: u32, ack: u32, win: u16, wscale: Option<u8>) -> Segment {
    Segment { wscale: wscale.unwrap_or(NO_WSCALE), opts: SEG_SACK_PERM, ..seg(flags, seq, ack, 0, win) }
}

/// The two ends of a connection: initial sequence numbers and window scale options.
#[derive(Clone, Copy)]
struct Conn {
    isn_l: u32,
    isn_r: u32,
    scale_l: Option<u8>,
    scale_r: Option<u8>,
}

impl Conn {
    const PLAIN: Self = Self { isn_l: 1000, isn_r: 5_000_000, scale_l: Some(7), scale_r: Some(7) };

    /// The flow after the three-way handshake (the host's last ACK advertises 502, which
    /// is 64256 bytes at scale 7).
    fn established(self) -> FlowState {
        let mut f = flow_new(6, Some(&syn(SYN, self.isn_l, 0, 64240, self.scale_l)), 3, 0).unwrap();
        let synack = syn(SYN | ACK, self.isn_r, self.isn_l.wrapping_add(1), 65160, self.scale_r);
        assert_eq!(flow_reply(&mut f, &policy(), 6, Some(&synack), S, true), Reply::Pass);
        let ack = seg(ACK, self.isn_l.wrapping_add(1), self.isn_r.wrapping_add(1), 0, 502);
        assert_eq!(flow_sent(&mut f, 6, Some(&ack), 3, S), Sent::Keep);
        assert_eq!(f.state, FLOW_TCP_ESTABLISHED);
        f
    }

    /// The host's next sequence number after the handshake, plus `n`.
    fn l(self, n: u32) -> u32 {
        self.isn_l.wrapping_add(1).wrapping_add(n)
    }

    /// The remote end's, plus `n`.
    fn r(self, n: u32) -> u32 {
        self.isn_r.wrapping_add(1).wrapping_add(n)
    }
}

#[test]
fn handshake_learns_both_directions() {
    let c = Conn::PLAIN;
    let f = c.established();
    assert_eq!((f.local.scale, f.remote.scale), (7, 7));
    assert_eq!((f.local.end, f.remote.end), (c.l(0), c.r(0)));
    assert_eq!(f.local.maxwin, 502 << 7, "the host's largest window, scaled");
    assert_eq!(f.remote.maxend, c.r(502 << 7), "the remote end may send one host window");
    assert_eq!(f.remote.maxwin, 65160, "a SYN's window is never scaled");
    assert!(f.local.flags & DIR_SACK_PERM != 0 && f.remote.flags & DIR_SACK_PERM != 0);
    assert_eq!((f.local.flags | f.remote.flags) & DIR_LIBERAL, 0);
    assert_eq!((f.packets_out, f.packets_in), (2, 1));
}

/// One reply to an established flow after the host sent `sent` bytes (acknowledged up to
/// `acked` by the remote end beforehand).
struct Row {
    name: &'static str,
    conn: Conn,
    sent: u32,
    reply: fn(Conn) -> Segment,
    want: Reply,
}

fn rows() -> Vec<Row> {
    let c = Conn::PLAIN;
    // The ISNs just below the wrap: every number below crosses 2^32.
    let wrap = Conn { isn_l: u32::MAX - 100, isn_r: u32::MAX - 10, ..c };
    let no_scale = Conn { scale_r: None, ..c };
    vec![
        Row {
            name: "data in the window",
            conn: c,
            sent: 0,
            reply: |c| seg(ACK, c.r(0), c.l(0), 1000, 500),
            want: Reply::Pass,
        },
        Row {
            name: "pure ACK of all sent",
            conn: c,
            sent: 3000,
            reply: |c| seg(ACK, c.r(0), c.l(3000), 0, 500),
            want: Reply::Pass,
        },
        Row {
            name: "ACK of data never sent (III)",
            conn: c,
            sent: 3000,
            reply: |c| seg(ACK, c.r(0), c.l(3001), 0, 500),
            want: Reply::Drop(DropReason::OutOfWindow),
        },
        Row {
            name: "ACK at the lower bound (IV: 66000 below what was sent)",
            conn: c,
            sent: 60_000,
            reply: |c| seg(ACK, c.r(0), c.l(0).wrapping_sub(6000), 0, 500),
            want: Reply::Pass,
        },
        Row {
            name: "ACK one below the lower bound (IV)",
            conn: c,
            sent: 60_000,
            reply: |c| seg(ACK, c.r(0), c.l(0).wrapping_sub(6001), 0, 500),
            want: Reply::Drop(DropReason::OutOfWindow),
        },
        Row {
            name: "data up to the host's window (I)",
            conn: c,
            sent: 0,
            reply: |c| seg(ACK, c.r((502 << 7) - 1000), c.l(0), 1000, 500),
            want: Reply::Pass,
        },
        Row {
            name: "data beyond the host's window (I)",
            conn: c,
            sent: 0,
            reply: |c| seg(ACK, c.r((502 << 7) + 1), c.l(0), 1000, 500),
            want: Reply::Drop(DropReason::OutOfWindow),
        },
        Row {
            name: "data a window below what was sent (II)",
            conn: c,
            sent: 0,
            reply: |c| seg(ACK, c.r(0).wrapping_sub((502 << 7) + 2000), c.l(0), 1000, 500),
            want: Reply::Drop(DropReason::OutOfWindow),
        },
        Row {
            name: "blind ACK, random numbers",
            conn: c,
            sent: 3000,
            reply: |_| seg(ACK | 0x08, 0x1234_5678, 0x0bad_cafe, 100, 500),
            want: Reply::Drop(DropReason::OutOfWindow),
        },
        Row {
            name: "wrap: ACK across 2^32",
            conn: wrap,
            sent: 1000,
            reply: |c| seg(ACK, c.r(0), c.l(1000), 0, 500),
            want: Reply::Pass,
        },
        Row {
            name: "wrap: data across 2^32",
            conn: wrap,
            sent: 0,
            reply: |c| seg(ACK, c.r(0), c.l(0), 1400, 500),
            want: Reply::Pass,
        },
        Row {
            name: "wrap: ACK past what was sent",
            conn: wrap,
            sent: 1000,
            reply: |c| seg(ACK, c.r(0), c.l(1001), 0, 500),
            want: Reply::Drop(DropReason::OutOfWindow),
        },
        Row {
            name: "no scale: data from beyond 502 bytes (I)",
            conn: no_scale,
            sent: 0,
            reply: |c| seg(ACK, c.r(503), c.l(0), 100, 500),
            want: Reply::Drop(DropReason::OutOfWindow),
        },
        Row {
            name: "SYN from the remote end",
            conn: c,
            sent: 0,
            reply: |c| seg(SYN, c.r(0), 0, 0, 500),
            want: Reply::Drop(DropReason::ReplyCheck),
        },
        Row {
            name: "bare FIN without ACK",
            conn: c,
            sent: 0,
            reply: |c| seg(FIN, c.r(0), 0, 0, 500),
            want: Reply::Drop(DropReason::ReplyCheck),
        },
        Row { name: "exact RST", conn: c, sent: 3000, reply: |c| seg(RST, c.r(0), 0, 0, 0), want: Reply::Close },
        Row {
            name: "exact RST at the host's last ACK",
            conn: c,
            sent: 0,
            reply: |c| seg(RST | ACK, c.r(0), c.l(0), 0, 0),
            want: Reply::Close,
        },
        Row {
            name: "in-window RST, not exact (RFC 5961: challenged)",
            conn: c,
            sent: 0,
            reply: |c| seg(RST, c.r(5000), 0, 0, 0),
            want: Reply::Pass,
        },
        Row {
            name: "RST out of the window",
            conn: c,
            sent: 0,
            reply: |c| seg(RST, c.r(0x4000_0000), 0, 0, 0),
            want: Reply::Drop(DropReason::OutOfWindow),
        },
    ]
}

#[test]
fn replies_are_checked_against_the_windows() {
    let mut failures = Vec::new();
    for row in rows() {
        let c = row.conn;
        let mut f = c.established();
        if row.sent > 0 {
            // The host sends `sent` bytes and the remote end acknowledges the first one.
            flow_sent(&mut f, 6, Some(&seg(ACK, c.l(0), c.r(0), row.sent, 502)), 3, 2 * S);
            assert_eq!(
                flow_reply(&mut f, &policy(), 6, Some(&seg(ACK, c.r(0), c.l(1), 0, 500)), 2 * S, true),
                Reply::Pass
            );
        }
        let before = f;
        let got = flow_reply(&mut f, &policy(), 6, Some(&(row.reply)(c)), 3 * S, true);
        if got != row.want {
            failures.push(alloc::format!("{}: {got:?}, want {:?}", row.name, row.want));
        }
        if matches!(got, Reply::Drop(_)) && f != before {
            failures.push(alloc::format!("{}: a dropped reply changed the flow", row.name));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn window_scale_comes_from_the_syn_options() {
    // The host advertises 502 after the handshake: 64256 bytes at its scale of 7, if both
    // SYNs carried the option; data from 60000 bytes on lies inside that window only.
    for (scale_l, scale_r, want) in [
        (Some(7), Some(9), Reply::Pass),
        (Some(7), None, Reply::Drop(DropReason::OutOfWindow)),
        (None, Some(9), Reply::Drop(DropReason::OutOfWindow)),
    ] {
        let c = Conn { scale_l, scale_r, ..Conn::PLAIN };
        let mut f = c.established();
        let scales = if scale_l.is_some() && scale_r.is_some() { (7, 9) } else { (0, 0) };
        assert_eq!((f.local.scale, f.remote.scale), scales);
        let got = flow_reply(&mut f, &policy(), 6, Some(&seg(ACK, c.r(60_000), c.l(0), 100, 2000)), 2 * S, true);
        assert_eq!(got, want, "window scale options {scale_l:?} {scale_r:?}");
    }
}

#[test]
fn sack_edges_count_as_acknowledgements() {
    let c = Conn::PLAIN;
    let mut f = c.established();
    flow_sent(&mut f, 6, Some(&seg(ACK, c.l(0), c.r(0), 10_000, 502)), 3, 2 * S);
    let sacked = |edge: u32| Segment { sack: edge, ..seg(ACK, c.r(0), c.l(1000), 0, 500) };
    assert_eq!(flow_reply(&mut f, &policy(), 6, Some(&sacked(c.l(10_000))), 3 * S, true), Reply::Pass);
    assert_eq!(
        flow_reply(&mut f, &policy(), 6, Some(&sacked(c.l(10_001))), 3 * S, true),
        Reply::Drop(DropReason::OutOfWindow),
        "a SACK block beyond the data sent"
    );
}

#[test]
fn closing_flows_are_refreshed_by_the_host_only() {
    let c = Conn::PLAIN;
    let p = policy();
    let mut f = c.established();
    // The host closes first; the remote end acknowledges and closes too.
    flow_sent(&mut f, 6, Some(&seg(FIN | ACK, c.l(0), c.r(0), 0, 502)), 3, 10 * S);
    assert_eq!(f.state, FLOW_TCP_CLOSING);
    assert_eq!(flow_reply(&mut f, &p, 6, Some(&seg(FIN | ACK, c.r(0), c.l(1), 0, 500)), 11 * S, true), Reply::Pass);
    assert_eq!(f.last_ns, 10 * S, "the remote end's FIN after the host's does not refresh");
    flow_sent(&mut f, 6, Some(&seg(ACK, c.l(1), c.r(1), 0, 502)), 3, 12 * S);
    assert_eq!(f.last_ns, 12 * S, "the host's last ACK does");
    // Valid-looking ACKs from the remote end every 18 s keep nothing alive.
    for k in 1..=6u64 {
        let now = 12 * S + k * 18 * S;
        let r = flow_reply(&mut f, &p, 6, Some(&seg(ACK, c.r(1), c.l(1), 0, 500)), now, true);
        if k == 1 {
            assert_eq!(r, Reply::Pass);
        } else {
            assert_eq!(r, Reply::Expired, "ACK {k} at {}s: closing timeout 30 s after the host's last ACK", now / S);
        }
    }
    // A half-closed flow is still refreshed by the side that goes on sending.
    let mut f = c.established();
    flow_sent(&mut f, 6, Some(&seg(FIN | ACK, c.l(0), c.r(0), 0, 502)), 3, 10 * S);
    assert_eq!(flow_reply(&mut f, &p, 6, Some(&seg(ACK, c.r(0), c.l(1), 1000, 500)), 20 * S, true), Reply::Pass);
    assert_eq!(f.last_ns, 20 * S);
}

#[test]
fn resets_end_flows() {
    let c = Conn::PLAIN;
    let mut f = c.established();
    assert_eq!(flow_sent(&mut f, 6, Some(&seg(RST, c.l(0), 0, 0, 0)), 3, 2 * S), Sent::Close, "the host's RST");
    // A RST that answers the host's SYN: sequence 0, acknowledging the SYN.
    let mut f = flow_new(6, Some(&syn(SYN, 77, 0, 64240, Some(7))), 3, 0).unwrap();
    assert_eq!(flow_reply(&mut f, &policy(), 6, Some(&seg(RST | ACK, 0, 78, 0, 0)), S, true), Reply::Close);
    // An in-window RST that is not exact leaves the flow as it was, unrefreshed.
    let mut f = c.established();
    let before = f;
    assert_eq!(flow_reply(&mut f, &policy(), 6, Some(&seg(RST, c.r(10), 0, 0, 0)), 9 * S, true), Reply::Pass);
    assert_eq!((f.state, f.last_ns), (before.state, before.last_ns));
    assert!(flow_new(6, Some(&seg(RST, 1, 0, 0, 0)), 3, 0).is_none(), "a RST creates nothing");
    // Before the remote end has sent anything, a RST that does not acknowledge the host's SYN
    // is not exact, nor is any RST to a flow picked up mid-stream.
    let mut f = flow_new(6, Some(&syn(SYN, 77, 0, 64240, Some(7))), 3, 0).unwrap();
    assert_eq!(flow_reply(&mut f, &policy(), 6, Some(&seg(RST | ACK, 0, 70, 0, 0)), S, true), Reply::Pass);
    let mut f = flow_seeded(FLOW_TCP_ESTABLISHED, 3, 0);
    assert_eq!(flow_reply(&mut f, &policy(), 6, Some(&seg(RST, 5000, 0, 0, 0)), S, true), Reply::Pass);
}

#[test]
fn syn_sent_admits_only_a_syn_ack_or_a_rst() {
    let mut f = flow_new(6, Some(&syn(SYN, 77, 0, 64240, Some(7))), 3, 0).unwrap();
    assert_eq!(f.state, FLOW_TCP_SYN_SENT);
    let p = policy();
    assert_eq!(
        flow_reply(&mut f, &p, 6, Some(&seg(ACK, 500, 78, 0, 500)), S, true),
        Reply::Drop(DropReason::ReplyCheck)
    );
    // A SYN-ACK acknowledging something else than the SYN.
    let wrong = syn(SYN | ACK, 500, 79, 65160, Some(7));
    assert_eq!(flow_reply(&mut f, &p, 6, Some(&wrong), S, true), Reply::Drop(DropReason::OutOfWindow));
    assert_eq!(f.remote, TcpDir::default(), "a refused SYN-ACK teaches nothing");
    assert_eq!(flow_reply(&mut f, &p, 6, Some(&syn(SYN | ACK, 500, 78, 65160, Some(7))), S, true), Reply::Pass);
    assert_eq!(f.state, FLOW_TCP_ESTABLISHED);
    // A new SYN on the tuple starts over.
    flow_sent(&mut f, 6, Some(&syn(SYN, 9000, 0, 64240, None)), 3, 2 * S);
    assert_eq!((f.state, f.local.end, f.remote), (FLOW_TCP_SYN_SENT, 9001, TcpDir::default()));
}

#[test]
fn flows_picked_up_mid_stream_are_followed_not_checked() {
    let p = policy();
    for mut f in
        [flow_seeded(FLOW_TCP_ESTABLISHED, 3, 0), flow_new(6, Some(&seg(ACK, 1000, 9000, 100, 300)), 3, 0).unwrap()]
    {
        assert_eq!(f.state, FLOW_TCP_ESTABLISHED);
        // No scale is known: any numbers pass, and teach the flow.
        assert_eq!(flow_reply(&mut f, &p, 6, Some(&seg(ACK, 0x1234_5678, 0x0bad_cafe, 0, 1)), S, true), Reply::Pass);
        assert_eq!(flow_reply(&mut f, &p, 6, Some(&seg(ACK, 9000, 1100, 500, 300)), S, true), Reply::Pass);
        // The flags and the closing rules still hold.
        assert_eq!(
            flow_reply(&mut f, &p, 6, Some(&seg(SYN, 9000, 0, 0, 300)), S, true),
            Reply::Drop(DropReason::ReplyCheck)
        );
        flow_sent(&mut f, 6, Some(&seg(ACK, 1100, 9500, 0, 300)), 3, 2 * S);
        assert_eq!(flow_reply(&mut f, &p, 6, Some(&seg(RST, 9500, 0, 0, 0)), 3 * S, true), Reply::Close, "exact RST");
    }
    // A SYN whose options were not all read leaves the flow unchecked, unless its window
    // scale was among those read.
    let mut s = syn(SYN, 77, 0, 64240, None);
    s.opts |= SEG_OPTS_UNREAD;
    assert!(flow_new(6, Some(&s), 3, 0).unwrap().local.flags & DIR_LIBERAL != 0);
    s.wscale = 7;
    assert_eq!(flow_new(6, Some(&s), 3, 0).unwrap().local.flags & DIR_LIBERAL, 0);
}

/// A segment behind IPv6 extension headers: only its flags are known.
fn unread(flags: u8) -> Segment {
    Segment { flags, wscale: NO_WSCALE, opts: SEG_UNREAD, ..Segment::default() }
}

#[test]
fn segments_behind_extension_headers_are_not_checked_but_never_pass_a_check() {
    let p = policy();
    // From the remote end, to a checked flow: out of the window, whatever its flags.
    let mut f = Conn::PLAIN.established();
    let before = f;
    for flags in [ACK, ACK | 0x08, RST, FIN | ACK] {
        assert_eq!(flow_reply(&mut f, &p, 6, Some(&unread(flags)), 2 * S, true), Reply::Drop(DropReason::OutOfWindow));
        assert_eq!(f, before, "a dropped reply leaves the flow as it was");
    }
    // From the host: the flow goes on unchecked, and its replies pass (a RST is never exact).
    assert_eq!(flow_sent(&mut f, 6, Some(&unread(ACK)), 3, 2 * S), Sent::Keep);
    assert!(f.local.flags & f.remote.flags & DIR_LIBERAL != 0);
    assert_eq!(flow_reply(&mut f, &p, 6, Some(&seg(ACK, 1, 2, 0, 500)), 3 * S, true), Reply::Pass);
    assert_eq!(flow_reply(&mut f, &p, 6, Some(&unread(RST)), 3 * S, true), Reply::Pass);
    assert_eq!(flow_reply(&mut f, &p, 6, Some(&unread(FIN | ACK)), 3 * S, true), Reply::Pass);
    assert_eq!(f.state, FLOW_TCP_CLOSING);
    // The host's RST still ends the flow; its SYN opens one, unchecked.
    assert_eq!(flow_sent(&mut f, 6, Some(&unread(RST)), 3, 4 * S), Sent::Close);
    let n = flow_new(6, Some(&unread(SYN)), 3, 0).unwrap();
    assert_eq!((n.state, n.local.flags & n.remote.flags & DIR_LIBERAL), (FLOW_TCP_SYN_SENT, DIR_LIBERAL));
    assert!(flow_new(6, Some(&unread(RST)), 3, 0).is_none());
}

#[test]
fn udp_flows_and_expiry() {
    let p = policy();
    let mut u = flow_new(17, None, 1, 0).unwrap();
    assert_eq!(u.state, FLOW_UDP);
    assert_eq!(flow_reply(&mut u, &p, 17, None, 100 * S, true), Reply::Pass);
    assert_eq!(flow_reply(&mut u, &p, 17, None, 221 * S, true), Reply::Expired);
    let mut f = flow_new(6, Some(&syn(SYN, 1, 0, 1000, None)), 1, 0).unwrap();
    assert_eq!(flow_reply(&mut f, &p, 6, Some(&syn(SYN | ACK, 9, 2, 1000, None)), 31 * S, true), Reply::Expired);
    assert_eq!(flow_reply(&mut f, &p, 6, None, S, true), Reply::Drop(DropReason::Truncated));
}

/// Options of a Linux SYN: MSS, SACK permitted, timestamps, NOP, window scale 7.
const LINUX_SYN_OPTS: [u8; 20] = [2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7];

fn segment_of(frame: &[u8], sack: bool) -> Segment {
    let Parsed::Ip(p) = parse_slice(frame) else { panic!("not IP") };
    let start = frame.as_ptr() as usize;
    // SAFETY: the frame is readable for the duration of the call.
    unsafe { tcp_segment(start, start + frame.len(), &p, sack) }.expect("TCP header in the frame")
}

use crate::parse::Parsed;

#[test]
fn segments_are_read_from_frames() {
    for net in [v4(), v6()] {
        for vlans in [&[][..], &QINQ[..]] {
            let f = frame(vlans, &net, &tcp_full(5062, 45000, ACK | 0x08, 0xffff_fff0, 77, 501, &[]), 100);
            let s = segment_of(&f, true);
            assert_eq!((s.seq, s.ack, s.sack, s.win, s.end), (0xffff_fff0, 77, 77, 501, 0x54), "data wraps");
            let f = frame(vlans, &net, &tcp_full(45000, 5062, SYN, 9, 0, 64240, &LINUX_SYN_OPTS), 0);
            let s = segment_of(&f, false);
            assert_eq!((s.end, s.wscale, s.opts), (10, 7, SEG_SACK_PERM));
        }
    }
    // SACK blocks (NOP, NOP, SACK with two blocks): the highest right edge, only when asked.
    let sack_opts = [1, 1, 5, 18, 0, 0, 0, 10, 0, 0, 0, 20, 0, 0, 0, 30, 0, 0, 0, 40];
    let f = frame(&[], &v4(), &tcp_full(5062, 45000, ACK, 100, 5, 300, &sack_opts), 0);
    assert_eq!(segment_of(&f, true).sack, 40);
    assert_eq!(segment_of(&f, false).sack, 5);
    // A FIN counts one; a window scale above 14 is taken as 14.
    let f = frame(&[], &v6(), &tcp_full(45000, 5062, SYN, 9, 0, 1, &[3, 3, 20]), 0);
    assert_eq!(segment_of(&f, false).wscale, MAX_WSCALE);
    let f = frame(&[], &v4(), &tcp_full(45000, 5062, FIN | ACK, 9, 0, 1, &[]), 10);
    assert_eq!(segment_of(&f, false).end, 20);
    // Too many options to read: the SYN says so. macOS's SYN has its window scale third
    // of eight (MSS, NOP, WS, NOP, NOP, TS, SACKOK, EOL): read.
    let f = frame(&[], &v4(), &tcp_full(45000, 5062, SYN, 9, 0, 1, &[1; 16]), 0);
    assert!(segment_of(&f, false).opts & SEG_OPTS_UNREAD != 0);
    let macos = [2, 4, 5, 0xb4, 1, 3, 3, 6, 1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 4, 2, 0, 0];
    let s = segment_of(&frame(&[], &v4(), &tcp_full(45000, 5062, SYN, 9, 0, 1, &macos), 0), false);
    assert_eq!((s.wscale, s.opts & SEG_OPTS_UNREAD), (6, SEG_OPTS_UNREAD));
    // Behind IPv6 extension headers: the flags only.
    let ext = Net::V6 { src: V6_SRC, dst: V6_DST, ext: vec![60], frag_offset: 0 };
    let f = frame(&[], &ext, &tcp_full(5062, 45000, ACK | 0x08, 1, 2, 3, &[]), 100);
    assert_eq!(segment_of(&f, true), unread(ACK | 0x08));
    // A malformed option length ends the walk.
    let f = frame(&[], &v4(), &tcp_full(45000, 5062, SYN, 9, 0, 1, &[3, 1, 7, 3, 3, 7]), 0);
    assert_eq!(segment_of(&f, false).wscale, NO_WSCALE);
}
