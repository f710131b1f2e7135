//! Host unit tests of parsing and matching: the same functions the kernel runs.

use alloc::{vec, vec::Vec};

use crate::{
    classify::{
        Egress, Tables, Verdict, classify, classify_egress, decide_quick, decide_slice, decide_walk, flow_key, quick,
    },
    frames::*,
    layout::*,
    parse::{ETH_P_8021Q, Packet, Parsed, l4_span, parse_sized, parse_slice},
    reason::{DropReason, PassReason},
};

fn ip(p: Parsed) -> Packet {
    match p {
        Parsed::Ip(p) => p,
        other => panic!("expected an IP packet, got {other:?}"),
    }
}

fn drop_reason(p: Parsed) -> DropReason {
    match p {
        Parsed::Drop(r) => r,
        other => panic!("expected a drop, got {other:?}"),
    }
}

#[test]
fn every_header_combination_parses() {
    let nets = [v4(), v6()];
    let vlan_stacks: [&[u16]; 3] = [&[], &DOT1Q, &QINQ];
    for net in &nets {
        for vlans in vlan_stacks {
            let vlan_len = 4 * vlans.len() as u32;
            let p = ip(parse_slice(&frame(vlans, net, &tcp(40000, 443, TCP_SYN), 0)));
            assert_eq!((p.proto, p.sport, p.dport, p.tcp_flags), (6, 40000, 443, TCP_SYN));
            assert_eq!(p.l3_off, 14 + vlan_len);
            let p = ip(parse_slice(&frame(vlans, net, &udp(53, 40000), 10)));
            assert_eq!((p.proto, p.sport, p.dport), (17, 53, 40000));
            let p = ip(parse_slice(&frame(vlans, net, &Transport::Icmp { ty: 3, code: 4 }, 28)));
            assert_eq!(p.icmp_type, 3);
            assert_eq!(p.ip_version, if matches!(net, Net::V4 { .. }) { 4 } else { 6 });
        }
    }
}

#[test]
fn a_packet_longer_than_its_linear_part_parses_by_its_length() {
    // At TC a segment's headers are in the linear part and its payload in pages: the IP
    // length is checked against the packet's length, the headers read from what is there.
    let v6_ext = Net::V6 { src: V6_SRC, dst: V6_DST, ext: vec![0, 60], frag_offset: 0 };
    for (net, span) in [(v4(), Some((34, 20 + 1400))), (v6(), Some((54, 20 + 1400))), (v6_ext, None)] {
        let f = frame(&[], &net, &tcp(45000, 5062, TCP_ACK), 1400);
        let start = f.as_ptr() as usize;
        let linear = start + f.len() - 1400;
        // SAFETY (all): the frame is a live slice; the readable part is shorter still.
        let p = unsafe { parse_sized(start, linear, f.len(), |v| v) };
        assert_eq!(p, parse_slice(&f));
        // The transport header and its payload; not behind IPv6 extension headers.
        assert_eq!(unsafe { l4_span(start, linear, &ip(p)) }, span);
        let short = unsafe { parse_sized(start, linear, f.len() - 1, |v| v) };
        assert_eq!(short, Parsed::Drop(DropReason::Truncated), "a packet shorter than its IP length");
    }
}

#[test]
fn ipv4_options_are_skipped() {
    for words in 1..=10usize {
        let net = Net::V4 { src: V4_SRC, dst: V4_DST, options: vec![1; words * 4], frag: 0 };
        let p = ip(parse_slice(&frame(&[], &net, &tcp(1, 5222, TCP_SYN), 0)));
        assert_eq!(p.dport, 5222, "{words} option words");
    }
}

#[test]
fn ipv6_extension_chains_are_walked() {
    for ext in [vec![0], vec![0, 60], vec![0, 43, 60], vec![44], vec![51], vec![0, 43, 44, 51, 60, 60]] {
        let net = Net::V6 { src: V6_SRC, dst: V6_DST, ext: ext.clone(), frag_offset: 0 };
        let p = ip(parse_slice(&frame(&[], &net, &tcp(1, 443, TCP_SYN), 0)));
        assert_eq!((p.proto, p.dport), (6, 443), "{ext:?}");
    }
    let too_many = Net::V6 { src: V6_SRC, dst: V6_DST, ext: vec![60; 7], frag_offset: 0 };
    assert_eq!(drop_reason(parse_slice(&frame(&[], &too_many, &tcp(1, 443, 2), 0))), DropReason::ExtHeaders);
}

#[test]
fn fragments() {
    // First fragment (MF set, offset 0) carries the ports: classified.
    let first = Net::V4 { src: V4_SRC, dst: V4_DST, options: vec![], frag: 0x2000 };
    assert_eq!(ip(parse_slice(&frame(&[], &first, &udp(53, 40000), 100))).dport, 40000);
    let later = Net::V4 { src: V4_SRC, dst: V4_DST, options: vec![], frag: 0x2000 | 185 };
    assert_eq!(drop_reason(parse_slice(&frame(&[], &later, &udp(53, 40000), 100))), DropReason::Fragment);
    let last = Net::V4 { src: V4_SRC, dst: V4_DST, options: vec![], frag: 185 };
    assert_eq!(drop_reason(parse_slice(&frame(&[], &last, &udp(53, 40000), 100))), DropReason::Fragment);
    let v6_first = Net::V6 { src: V6_SRC, dst: V6_DST, ext: vec![44], frag_offset: 0 };
    assert_eq!(ip(parse_slice(&frame(&[], &v6_first, &udp(53, 40000), 100))).dport, 40000);
    let v6_later = Net::V6 { src: V6_SRC, dst: V6_DST, ext: vec![44], frag_offset: 181 };
    assert_eq!(drop_reason(parse_slice(&frame(&[], &v6_later, &udp(53, 40000), 100))), DropReason::Fragment);
}

#[test]
fn non_ip() {
    assert_eq!(parse_slice(&frame(&[], &Net::Arp, &tcp(0, 0, 0), 0)), Parsed::Arp);
    assert_eq!(parse_slice(&frame(&DOT1Q, &Net::Arp, &tcp(0, 0, 0), 0)), Parsed::Arp);
    assert_eq!(drop_reason(parse_slice(&frame(&[], &Net::Other(0x88cc, 40), &tcp(0, 0, 0), 0))), DropReason::EtherType);
    let three = [ETH_P_8021Q; 3];
    assert_eq!(drop_reason(parse_slice(&frame(&three, &v4(), &tcp(1, 443, 2), 0))), DropReason::VlanDepth);
    let gre = Transport::Raw(47, vec![0; 8]);
    assert_eq!(drop_reason(parse_slice(&frame(&[], &v4(), &gre, 0))), DropReason::IpProto);
    // ICMP (v4) inside IPv6 is not ICMPv6.
    let icmp4_in_v6 = Transport::Raw(1, vec![8, 0, 0, 0]);
    assert_eq!(drop_reason(parse_slice(&frame(&[], &v6(), &icmp4_in_v6, 0))), DropReason::IpProto);
    let esp = Transport::Raw(50, vec![0; 16]);
    assert_eq!(drop_reason(parse_slice(&frame(&[], &v6(), &esp, 0))), DropReason::IpProto);
}

#[test]
fn truncated_at_every_byte() {
    let frames: Vec<Vec<u8>> = vec![
        frame(&QINQ, &v4(), &tcp(1, 443, TCP_SYN), 0),
        frame(&[], &Net::V4 { src: V4_SRC, dst: V4_DST, options: vec![1; 8], frag: 0 }, &udp(1, 53), 0),
        frame(&DOT1Q, &Net::V6 { src: V6_SRC, dst: V6_DST, ext: vec![0, 44, 60], frag_offset: 0 }, &tcp(1, 443, 2), 0),
        frame(&[], &v6(), &Transport::Icmp { ty: 135, code: 0 }, 0),
    ];
    for f in &frames {
        assert!(matches!(parse_slice(f), Parsed::Ip(_)));
        for cut in 0..f.len() {
            let r = drop_reason(parse_slice(&f[..cut]));
            assert_eq!(r, DropReason::Truncated, "cut at {cut} of {}", f.len());
        }
    }
}

#[test]
fn malformed_headers() {
    let base = frame(&[], &v4(), &tcp(1, 443, TCP_SYN), 0);
    let with = |i: usize, v: u8| {
        let mut f = base.clone();
        f[i] = v;
        f
    };
    assert_eq!(drop_reason(parse_slice(&with(14, 0x44))), DropReason::Malformed, "IHL 4");
    assert_eq!(drop_reason(parse_slice(&with(14, 0x65))), DropReason::Malformed, "version 6 in an IPv4 frame");
    assert_eq!(drop_reason(parse_slice(&with(17, 10))), DropReason::Malformed, "total length < IHL");
    assert_eq!(drop_reason(parse_slice(&with(17, 30))), DropReason::Malformed, "TCP header beyond total length");
    assert_eq!(drop_reason(parse_slice(&with(17, 200))), DropReason::Truncated, "total length beyond frame");
    assert_eq!(drop_reason(parse_slice(&with(14 + 20 + 12, 0x40))), DropReason::Malformed, "TCP data offset 4");
    assert_eq!(drop_reason(parse_slice(&with(14 + 20 + 12, 0xf0))), DropReason::Malformed, "TCP options beyond packet");
    let u = frame(&[], &v4(), &udp(1, 53), 0);
    let mut bad = u.clone();
    bad[14 + 20 + 5] = 4;
    assert_eq!(drop_reason(parse_slice(&bad)), DropReason::Malformed, "UDP length 4");
    let v6f = frame(&[], &v6(), &tcp(1, 443, 2), 0);
    let mut jumbo = v6f.clone();
    jumbo[18] = 0;
    jumbo[19] = 0;
    assert_eq!(drop_reason(parse_slice(&jumbo)), DropReason::Malformed, "payload length 0");
    let mut v4in6 = v6f.clone();
    v4in6[14] = 0x45;
    assert_eq!(drop_reason(parse_slice(&v4in6)), DropReason::Malformed, "version 4 in an IPv6 frame");
    // Ethernet padding after a short IP packet is fine.
    let mut padded = frame(&[], &v4(), &tcp(1, 443, 2), 0);
    padded.extend_from_slice(&[0; 6]);
    assert_eq!(ip(parse_slice(&padded)).dport, 443);
}

/// A tiny table: tcp/443 inbound on all interfaces (counter 0), tcp/7000 inbound on slot 1
/// only (counter 1), replies from tcp/5062 and udp/53 to the ephemeral range (counters 2
/// and 3), and udp/123 replies to 123 or ephemeral (counter 4).
struct Mini {
    state: State,
    policy: Policy,
    ifaces: [IfaceInfo; 3],
    ports: [(u32, PortEntry); 9],
    port_bits: alloc::boxed::Box<[u64; PORT_BITS_WORDS]>,
}

const MINI_RULES: [RuleEntry; 10] = {
    const ALL: u32 = u32::MAX;
    const REPLY: u32 = ENTRY_LAST | ENTRY_REPLY | ENTRY_EPHEMERAL;
    const fn r(flags: u32, counter: u32, iface_mask: u32, local_lo: u16, local_hi: u16, systems: u64) -> RuleEntry {
        RuleEntry { flags, counter, iface_mask, local_lo, local_hi, systems }
    }
    [
        r(0, 0, 0, 0, 0, 0),
        r(ENTRY_LAST, 0, ALL, 0, 0, 0),
        r(ENTRY_LAST, 1, 1 << 1, 0, 0, 0),
        r(REPLY, 2, ALL, 0, 0, 0),
        r(REPLY, 3, ALL, 0, 0, 0),
        r(REPLY, 4, ALL, 123, 123, 0),
        // tcp/5061: only from system 0.
        r(ENTRY_LAST, 5, ALL, 0, 0, 1),
        // Replies from udp/514, on slot 1 only; from tcp/5063, only from system 0.
        r(REPLY, 6, 1 << 1, 0, 0, 0),
        r(REPLY, 7, ALL, 0, 0, 1),
        // Replies from tcp/5064 to local port 5070 only (not the ephemeral range).
        r(ENTRY_LAST | ENTRY_REPLY, 8, ALL, 5070, 5070, 0),
    ]
};

impl Mini {
    fn new(mode: u32, flags: u32) -> Self {
        let ifaces = [0, 1, 2].map(|slot| IfaceInfo { slot, flags: 0 });
        let table = [
            (L4::Tcp, 443, 1, 0),
            (L4::Tcp, 7000, 2, 0),
            (L4::Tcp, 5062, 0, 3),
            (L4::Udp, 53, 0, 4),
            (L4::Udp, 123, 0, 5),
            (L4::Tcp, 5061, 6, 0),
            (L4::Udp, 514, 0, 7),
            (L4::Tcp, 5063, 0, 8),
            (L4::Tcp, 5064, 0, 9),
        ];
        let ports = table.map(|(l4, port, inbound, reply)| {
            (l4, port, port_index(1, l4, port), PortEntry::new(inbound, reply, &MINI_RULES))
        });
        let policy = Policy { flags, rules_cap: 9, ephemeral_lo: 32768, ephemeral_hi: 60999, ..Policy::default() };
        // The port bits as the agent writes them (into generation 1, the active one).
        let mut port_bits = alloc::boxed::Box::new([0u64; PORT_BITS_WORDS]);
        write_port_bits(&mut port_bits, 1, ports.iter().map(|(l4, port, _, e)| (*l4, *port, e)));
        let ports = ports.map(|(_, _, i, e)| (i, e));
        Self { state: State { generation: 1, mode }, policy, ifaces, ports, port_bits }
    }
}

impl Tables for Mini {
    fn state(&self) -> Option<&State> {
        Some(&self.state)
    }
    fn policy(&self, generation: u32) -> Option<&Policy> {
        assert_eq!(generation, 1);
        Some(&self.policy)
    }
    fn iface(&self, ifindex: u32) -> Option<&IfaceInfo> {
        Some(self.ifaces.get(ifindex as usize).unwrap_or(&self.ifaces[0]))
    }
    fn port(&self, index: u32) -> Option<&PortEntry> {
        Some(self.ports.iter().find(|(i, _)| *i == index).map_or(&PortEntry::EMPTY, |(_, e)| e))
    }
    fn port_listed(&self, generation: u32, l4: L4, port: u16, reply: bool) -> bool {
        let (w, b) = port_bit(generation, l4, reply, port);
        self.port_bits[w] >> b & 1 != 0
    }
    fn src_systems(&self, key: &[u8; 20]) -> u64 {
        // 198.18.0.2 and fd00::2 are system 0 ("SM"); everything else none.
        let sm4 = src_key_data(key[0] as u32, 4, &[198, 18, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let sm6 = src_key_data(key[0] as u32, 6, &V6_SRC);
        if *key == sm4 || *key == sm6 { 1 } else { 0 }
    }
    fn rule(&self, index: u32) -> Option<&RuleEntry> {
        Some(MINI_RULES.get(index as usize).unwrap_or(&MINI_RULES[0]))
    }
}

fn verdict(f: &[u8], ifindex: u32) -> Verdict {
    decide_slice(f, ifindex, &Mini::new(MODE_ENFORCE, 0)).unwrap().verdict
}

#[test]
fn matching() {
    use Verdict::*;
    for net in [v4(), v6()] {
        assert_eq!(verdict(&frame(&[], &net, &tcp(40000, 443, TCP_SYN), 0), 1), Rule(0));
        assert_eq!(verdict(&frame(&QINQ, &net, &tcp(40000, 443, TCP_SYN), 0), 2), Rule(0));
        assert_eq!(verdict(&frame(&[], &net, &tcp(40000, 8443, TCP_SYN), 0), 1), Drop(DropReason::NoRule));
        assert_eq!(verdict(&frame(&[], &net, &udp(40000, 443), 0), 1), Drop(DropReason::NoRule));
        // Management-only port.
        assert_eq!(verdict(&frame(&[], &net, &tcp(40000, 7000, TCP_SYN), 0), 1), Rule(1));
        assert_eq!(verdict(&frame(&[], &net, &tcp(40000, 7000, TCP_SYN), 0), 2), Drop(DropReason::Interface));
        // Stateless replies: ACK required, local port in the ephemeral range.
        assert_eq!(verdict(&frame(&[], &net, &tcp(5062, 40000, TCP_SYN | TCP_ACK), 0), 1), Rule(2));
        assert_eq!(verdict(&frame(&[], &net, &tcp(5062, 40000, TCP_ACK), 0), 1), Rule(2));
        assert_eq!(verdict(&frame(&[], &net, &tcp(5062, 40000, TCP_SYN), 0), 1), Drop(DropReason::ReplyCheck));
        assert_eq!(verdict(&frame(&[], &net, &tcp(5062, 22, TCP_ACK), 0), 1), Drop(DropReason::ReplyCheck));
        assert_eq!(verdict(&frame(&[], &net, &udp(53, 40000), 0), 1), Rule(3));
        assert_eq!(verdict(&frame(&[], &net, &udp(53, 1000), 0), 1), Drop(DropReason::ReplyCheck));
        assert_eq!(verdict(&frame(&[], &net, &udp(123, 123), 0), 1), Rule(4));
        assert_eq!(verdict(&frame(&[], &net, &udp(123, 50000), 0), 1), Rule(4));
        assert_eq!(verdict(&frame(&[], &net, &udp(123, 124), 0), 1), Drop(DropReason::ReplyCheck));
    }
}

#[test]
fn icmp_policy() {
    use Verdict::*;
    let icmp = |net: &Net, ty| frame(&[], net, &Transport::Icmp { ty, code: 0 }, 8);
    for (ty, want) in [
        (3, Pass(PassReason::IcmpError)),
        (11, Pass(PassReason::IcmpError)),
        (12, Pass(PassReason::IcmpError)),
        (0, Pass(PassReason::IcmpEcho)),
        (8, Drop(DropReason::Icmp)),
        (5, Drop(DropReason::Icmp)),
        (13, Drop(DropReason::Icmp)),
    ] {
        assert_eq!(verdict(&icmp(&v4(), ty), 1), want, "ICMPv4 type {ty}");
    }
    for (ty, want) in [
        (1, Pass(PassReason::IcmpError)),
        (2, Pass(PassReason::IcmpError)),
        (3, Pass(PassReason::IcmpError)),
        (4, Pass(PassReason::IcmpError)),
        (129, Pass(PassReason::IcmpEcho)),
        (128, Drop(DropReason::Icmp)),
        (133, Pass(PassReason::Ndp)),
        (135, Pass(PassReason::Ndp)),
        (136, Pass(PassReason::Ndp)),
        (143, Pass(PassReason::Ndp)),
        (137, Drop(DropReason::Icmp)),
        (200, Drop(DropReason::Icmp)),
    ] {
        assert_eq!(verdict(&icmp(&v6(), ty), 1), want, "ICMPv6 type {ty}");
    }
    let allow = Mini::new(MODE_ENFORCE, POLICY_ALLOW_ECHO);
    assert_eq!(decide_slice(&icmp(&v4(), 8), 1, &allow).unwrap().verdict, Pass(PassReason::IcmpEcho));
    assert_eq!(decide_slice(&icmp(&v6(), 128), 1, &allow).unwrap().verdict, Pass(PassReason::IcmpEcho));
}

#[test]
fn dry_run_passes_what_it_would_drop() {
    let f = frame(&[], &v4(), &tcp(1, 9999, TCP_SYN), 0);
    let enforce = decide_slice(&f, 1, &Mini::new(MODE_ENFORCE, 0)).unwrap();
    let dry = decide_slice(&f, 1, &Mini::new(MODE_DRY_RUN, 0)).unwrap();
    assert_eq!(enforce.verdict, dry.verdict);
    assert!(!enforce.passes());
    assert!(dry.passes());
}

#[test]
fn stateful_replies_need_a_tracked_flow() {
    use Verdict::*;
    let t = Mini::new(MODE_ENFORCE, POLICY_STATEFUL);
    let v = |f: &[u8], i| decide_slice(f, i, &t).unwrap().verdict;
    for net in [v4(), v6()] {
        assert_eq!(v(&frame(&[], &net, &tcp(5062, 40000, TCP_SYN | TCP_ACK), 0), 1), Tracked(2));
        // The flow table decides, not the stateless checks.
        assert_eq!(v(&frame(&[], &net, &tcp(5062, 22, TCP_ACK), 0), 1), Tracked(2));
        assert_eq!(v(&frame(&[], &net, &udp(53, 40000), 0), 2), Tracked(3));
        // Inbound rules are unchanged.
        assert_eq!(v(&frame(&[], &net, &tcp(40000, 443, TCP_SYN), 0), 1), Rule(0));
        assert_eq!(v(&frame(&[], &net, &tcp(6000, 40000, TCP_ACK), 0), 1), Drop(DropReason::NoRule));
        // A reply to the rule's explicit local ports needs no flow (DHCP 67 -> 68 and NTP
        // 123 -> 123 answer requests sent to broadcast and multicast addresses, which no
        // flow matches); to the ephemeral range it does. TCP still needs ACK for it.
        assert_eq!(v(&frame(&[], &net, &udp(123, 123), 0), 1), Rule(4));
        assert_eq!(v(&frame(&[], &net, &udp(123, 40000), 0), 1), Tracked(4));
        assert_eq!(v(&frame(&[], &net, &tcp(5064, 5070, TCP_ACK), 0), 2), Rule(8));
        assert_eq!(v(&frame(&[], &net, &tcp(5064, 5070, TCP_SYN), 0), 2), Tracked(8));
        assert_eq!(v(&frame(&[], &net, &tcp(5064, 40000, TCP_ACK), 0), 2), Tracked(8));
    }
}

fn egress(f: &[u8], slot: u32) -> Egress {
    let t = Mini::new(MODE_ENFORCE, POLICY_STATEFUL);
    classify_egress(&parse_slice(f), &t.policy, 1, slot, &t)
}

#[test]
fn egress_classification() {
    for net in [v4(), v6()] {
        assert_eq!(egress(&frame(&[], &net, &tcp(443, 50000, TCP_SYN | TCP_ACK), 0), 1), Egress::InboundReply(0));
        assert_eq!(egress(&frame(&[], &net, &tcp(50000, 5062, TCP_SYN), 0), 1), Egress::Outbound(2));
        assert_eq!(egress(&frame(&[], &net, &tcp(22, 5062, TCP_SYN), 0), 1), Egress::Unmatched(DropReason::ReplyCheck));
        assert_eq!(egress(&frame(&[], &net, &tcp(50000, 9999, TCP_SYN), 0), 1), Egress::Unmatched(DropReason::NoRule));
        assert_eq!(egress(&frame(&[], &net, &udp(50000, 53), 0), 2), Egress::Outbound(3));
        assert_eq!(egress(&frame(&[], &net, &udp(123, 123), 0), 2), Egress::Outbound(4));
        // 7000 replies from the host go out only where the inbound rule applies (slot 1).
        assert_eq!(egress(&frame(&[], &net, &tcp(7000, 50000, TCP_ACK), 0), 1), Egress::InboundReply(1));
        assert_eq!(egress(&frame(&[], &net, &tcp(7000, 50000, TCP_ACK), 0), 2), Egress::Unmatched(DropReason::NoRule));
        assert!(matches!(egress(&frame(&[], &net, &Transport::Icmp { ty: 128, code: 0 }, 8), 1), Egress::Pass(_)));
    }
    assert_eq!(egress(&frame(&[], &Net::Arp, &tcp(0, 0, 0), 0), 1), Egress::Pass(PassReason::Arp));
}

#[test]
fn flow_keys_match_across_directions() {
    for (out_net, in_net) in [
        (v4(), Net::V4 { src: V4_DST, dst: V4_SRC, options: vec![], frag: 0 }),
        (v6(), Net::V6 { src: V6_DST, dst: V6_SRC, ext: vec![], frag_offset: 0 }),
    ] {
        let out = frame(&DOT1Q, &out_net, &tcp(50000, 5062, TCP_SYN), 0);
        let back = frame(&[], &in_net, &tcp(5062, 50000, TCP_SYN | TCP_ACK), 0);
        let (po, pi) = (ip(parse_slice(&out)), ip(parse_slice(&back)));
        // SAFETY: both frames are live slices.
        let ko = unsafe { flow_key(out.as_ptr() as usize, out.as_ptr() as usize + out.len(), &po, false) }.unwrap();
        let ki = unsafe { flow_key(back.as_ptr() as usize, back.as_ptr() as usize + back.len(), &pi, true) }.unwrap();
        assert_eq!(ko, ki);
        assert_eq!((ko.local_port, ko.remote_port, ko.proto), (50000, 5062, 6));
        let local: &[u8] = if ko.family == 4 { &V4_SRC } else { &V6_SRC };
        assert_eq!(&ko.local[..local.len()], local);
    }
    // The key the tests seed is the one the ingress program derives from the reply.
    let reply = frame(&[], &v4(), &tcp(5062, 45000, TCP_SYN | TCP_ACK), 0);
    let p = ip(parse_slice(&reply));
    // SAFETY: the frame is a live slice.
    let k = unsafe { flow_key(reply.as_ptr() as usize, reply.as_ptr() as usize + reply.len(), &p, true) };
    assert_eq!(k, Some(v4_reply_flow(5062, 45000, 6)));
}

#[test]
fn source_sets() {
    use Verdict::*;
    let t = Mini::new(MODE_ENFORCE, POLICY_SOURCE_SETS);
    let v = |f: &[u8]| decide_slice(f, 1, &t).unwrap().verdict;
    let from = |src: [u8; 4]| Net::V4 { src, dst: V4_DST, options: vec![], frag: 0 };
    assert_eq!(v(&frame(&[], &from([198, 18, 0, 2]), &tcp(40000, 5061, TCP_SYN), 0)), Rule(5));
    assert_eq!(v(&frame(&[], &from([198, 18, 0, 3]), &tcp(40000, 5061, TCP_SYN), 0)), Drop(DropReason::Source));
    assert_eq!(v(&frame(&[], &v6(), &tcp(40000, 5061, TCP_SYN), 0)), Rule(5), "fd00::2 is bound too");
    // Unbound rules admit any source.
    assert_eq!(v(&frame(&[], &from([203, 0, 113, 9]), &tcp(40000, 443, TCP_SYN), 0)), Rule(0));
    // Without the policy flag no lookup is made: the bound rule sees no systems.
    let off = Mini::new(MODE_ENFORCE, 0);
    assert_eq!(
        decide_slice(&frame(&[], &from([198, 18, 0, 2]), &tcp(1, 5061, 2), 0), 1, &off).unwrap().verdict,
        Drop(DropReason::Source)
    );
}

/// `parse_fast` is a shortcut, never a second opinion: wherever it returns a packet, the
/// general parser returns the same one. Checked on every frame shape, truncated at every
/// byte, and with every byte of the headers changed in turn.
#[test]
fn fast_path_agrees_with_the_general_parser() {
    use crate::parse::{parse_fast, parse_with};
    let check = |f: &[u8]| -> bool {
        let start = f.as_ptr() as usize;
        // SAFETY: the slice is readable for the duration of the calls.
        let (fast, slow) = unsafe { (parse_fast(start, start + f.len()), parse_with(start, start + f.len(), |v| v)) };
        if let Some(p) = fast {
            assert_eq!(Parsed::Ip(p), slow, "fast path disagrees on {f:02x?}");
        }
        fast.is_some()
    };
    let options = Net::V4 { src: V4_SRC, dst: V4_DST, options: vec![1, 1, 1, 1], frag: 0 };
    let ext = Net::V6 { src: V6_SRC, dst: V6_DST, ext: vec![60], frag_offset: 0 };
    let mut taken = 0;
    for net in [v4(), v6(), options, ext] {
        for vlans in [&[][..], &DOT1Q, &QINQ] {
            for l4 in [tcp(40000, 443, TCP_SYN | TCP_ACK), udp(53, 40000), Transport::Icmp { ty: 8, code: 0 }] {
                let f = frame(vlans, &net, &l4, 6);
                for len in 0..=f.len() {
                    taken += check(&f[..len]) as usize;
                }
                for i in 0..f.len().min(80) {
                    for x in [0x01, 0x0f, 0x10, 0x40, 0x80, 0xff] {
                        let mut g = f.clone();
                        g[i] ^= x;
                        taken += check(&g) as usize;
                    }
                }
            }
        }
    }
    // The shortcut is taken where it should be: plain frames, and mutations of fields it
    // does not judge (addresses, ports, checksums, payload).
    assert!(taken > 1000, "fast path taken {taken} times");
    for net in [v4(), v6()] {
        assert!(check(&frame(&[], &net, &tcp(1, 2, 0), 0)) && check(&frame(&[], &net, &udp(1, 2), 0)));
        assert!(!check(&frame(&DOT1Q, &net, &tcp(1, 2, 0), 0)), "tagged frames take the general path");
    }
}

#[test]
fn quick_agrees_with_the_walk() {
    use Verdict::*;
    let ports = [
        0u16, 22, 53, 123, 124, 443, 514, 515, 5061, 5062, 5063, 5064, 5070, 7000, 8443, 32767, 32768, 40000, 60999,
        61000,
    ];
    let mut answered = 0;
    for flags in [0, POLICY_STATEFUL, POLICY_SOURCE_SETS, POLICY_STATEFUL | POLICY_SOURCE_SETS] {
        let t = Mini::new(MODE_ENFORCE, flags);
        for slot in 0..3 {
            for &sport in &ports {
                for &dport in &ports {
                    for l4 in [tcp(sport, dport, TCP_SYN), tcp(sport, dport, TCP_ACK), udp(sport, dport)] {
                        let Parsed::Ip(p) = parse_slice(&frame(&[], &v4(), &l4, 0)) else { panic!("parses") };
                        let Some(q) = quick(&p, &t.policy, 1, slot, &t) else { continue };
                        answered += 1;
                        // Whatever the source address belongs to.
                        for src in [0, 1, u64::MAX] {
                            let walked = classify(&p, &t.policy, 1, slot, src, &t);
                            assert_eq!(q, walked, "flags {flags:#x} slot {slot} src {src} {p:?}");
                        }
                    }
                }
            }
        }
    }
    assert!(answered > 1000, "quick answered {answered} times");
    // And whole frames: where the short way answers, the whole way says the same.
    let mut quick_frames = 0;
    for flags in [0, POLICY_STATEFUL, POLICY_SOURCE_SETS] {
        let t = Mini::new(MODE_ENFORCE, flags);
        let sm = Net::V4 { src: [198, 18, 0, 2], dst: V4_DST, options: vec![], frag: 0 };
        for net in [v4(), v6(), sm] {
            for vlans in [&[][..], &DOT1Q] {
                for &sport in &ports {
                    for &dport in &ports {
                        for l4 in [tcp(sport, dport, TCP_ACK), udp(sport, dport)] {
                            let f = frame(vlans, &net, &l4, 0);
                            let start = f.as_ptr() as usize;
                            for ifindex in 0..3 {
                                // SAFETY: the frame is a live slice.
                                let (q, w) = unsafe {
                                    (
                                        decide_quick(start, start + f.len(), ifindex, &t),
                                        decide_walk(start, start + f.len(), ifindex, &t),
                                    )
                                };
                                if let Some(q) = q {
                                    quick_frames += 1;
                                    assert_eq!(Some(q), w, "flags {flags:#x} ifindex {ifindex} {f:02x?}");
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(quick_frames > 1000, "decide_quick answered {quick_frames} frames");
    // The common packets take it: an admitted port, an unknown one, a reply.
    let t = Mini::new(MODE_ENFORCE, 0);
    let q = |l4: Transport, slot| {
        let Parsed::Ip(p) = parse_slice(&frame(&[], &v4(), &l4, 0)) else { panic!("parses") };
        quick(&p, &t.policy, 1, slot, &t)
    };
    assert_eq!(q(tcp(40000, 443, TCP_SYN), 1), Some(Rule(0)));
    assert_eq!(q(tcp(40000, 8443, TCP_SYN), 1), Some(Drop(DropReason::NoRule)));
    assert_eq!(q(tcp(40000, 7000, TCP_SYN), 2), Some(Drop(DropReason::Interface)));
    assert_eq!(q(tcp(5062, 40000, TCP_ACK), 1), Some(Rule(2)));
    // Explicit and ephemeral local ports: both from the rule.
    assert_eq!(q(udp(123, 50000), 1), Some(Rule(4)));
    assert_eq!(q(udp(123, 123), 1), Some(Rule(4)));
    let entry = |port| PortEntry::new(0, port, &MINI_RULES).reply_flags;
    assert_eq!((entry(3), entry(5), entry(9)), (REPLY_EPHEMERAL_ONLY, 0, 0));
    // Explicit only: the rule admits its port, and the walk refuses the ephemeral range.
    assert_eq!(q(tcp(5064, 5070, TCP_ACK), 1), Some(Rule(8)));
    // Stateful: explicit local ports from the rule too, the rest to the flow table.
    let st = Mini::new(MODE_ENFORCE, POLICY_STATEFUL);
    let qs = |l4: Transport| {
        let Parsed::Ip(p) = parse_slice(&frame(&[], &v6(), &l4, 0)) else { panic!("parses") };
        quick(&p, &st.policy, 1, 1, &st)
    };
    assert_eq!(qs(udp(123, 123)), Some(Rule(4)));
    assert_eq!(qs(udp(123, 50000)), Some(Tracked(4)));
    assert_eq!(qs(udp(53, 50000)), Some(Tracked(3)));
    assert_eq!(q(tcp(5064, 40000, TCP_ACK), 1), None);
    assert_eq!(q(udp(514, 50000), 1), Some(Rule(6)));
    // A reply rule on another interface, or bound to systems: the walk's.
    assert_eq!(q(udp(514, 50000), 2), None);
    assert_eq!(q(tcp(5063, 50000, TCP_ACK), 1), None);
    // Bound rules and failed reply checks are the walk's.
    assert_eq!(q(tcp(40000, 5061, TCP_SYN), 1), None);
    assert_eq!(q(tcp(5062, 40000, TCP_SYN), 1), None);
}
