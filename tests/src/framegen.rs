//! Deterministic frame generator for the differential test (`tests/tests/differential.rs`)
//! and the fuzz seeds: valid, edge-case and malformed frames from a seeded PRNG
//! (SplitMix64, no dependency), so a failure reproduces from its seed and index.
//!
//! What it produces, by family (see [`Family`]):
//! - every prefix of a handful of base frames (truncated at every byte, 0 included);
//! - well-formed TCP/UDP over IPv4 (with options) and IPv6 (with extension chains),
//!   0–2 VLAN tags, to ports the rule set names (inbound and reply side) or random ones,
//!   random TCP flags;
//! - ICMP/ICMPv6 of every type; ARP; other EtherTypes; other IP protocols;
//! - first and later fragments (IPv4 offset / MF, IPv6 fragment header);
//! - IPv6 extension chains of 0–9 headers (more than the program walks);
//! - three or more VLAN tags, odd TPIDs;
//! - length fields set to 0, 1, small, exact, +1 and 0xffff (IPv4 total, IHL, IPv6
//!   payload, UDP length, TCP data offset, extension header lengths);
//! - random byte flips in valid frames, and random bytes behind a random EtherType.

use ps_common::{
    frames::{Net, Transport, V4_DST, V4_SRC, V6_DST, V6_SRC, frame, tcp, tcp_full, udp},
    parse::{ETH_P_8021AD, ETH_P_8021Q},
};

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, full 64-bit period, good enough to
/// pick test cases.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; the modulo bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    /// One element of `xs` (non-empty).
    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }

    /// A random byte.
    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }
}

/// The families of generated frames (for statistics and failure messages).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// A prefix of a base frame (the deterministic sweep).
    Prefix,
    /// Well-formed TCP or UDP.
    Valid,
    /// ICMP / ICMPv6.
    Icmp,
    /// ARP or another EtherType, or another IP protocol.
    Other,
    /// IPv4 or IPv6 fragments.
    Fragment,
    /// IPv6 extension header chains, up to 9 long.
    ExtChain,
    /// Three or more VLAN tags, odd TPIDs.
    Vlan,
    /// A length field set to an edge value.
    Lengths,
    /// A valid frame with random bytes changed.
    Flipped,
    /// A valid frame cut at a random byte.
    Truncated,
    /// Random bytes behind a random or IP EtherType.
    Random,
}

/// Ports worth hitting: the rule set's inbound (destination) and reply (source) ports.
#[derive(Clone, Debug, Default)]
pub struct Ports {
    /// TCP ports some rule admits as destination.
    pub tcp_in: Vec<u16>,
    /// UDP ports some rule admits as destination.
    pub udp_in: Vec<u16>,
    /// TCP ports replies come from.
    pub tcp_reply: Vec<u16>,
    /// UDP ports replies come from.
    pub udp_reply: Vec<u16>,
}

/// The generator: a PRNG, the ports worth hitting, and the deterministic prefix sweep.
pub struct FrameGen {
    rng: Rng,
    ports: Ports,
    sweep: Vec<Vec<u8>>,
}

const EXT_TYPES: [u8; 5] = [0, 43, 44, 60, 51];
const TPIDS: [u16; 4] = [ETH_P_8021Q, ETH_P_8021AD, 0x9100, 0x8100];

impl FrameGen {
    /// A generator from `seed`, aiming at `ports`. The first frames it returns are every
    /// prefix (lengths 0 to full) of a few base frames.
    pub fn new(seed: u64, ports: Ports) -> Self {
        let bases = [
            frame(&[], &v4_opts(8), &tcp(50000, 443, 0x02), 4),
            frame(&[ETH_P_8021Q], &v6_ext(&[0, 60]), &udp(53, 40000), 4),
            frame(&[ETH_P_8021AD, ETH_P_8021Q], &ps_common::frames::v6(), &Transport::Icmp { ty: 2, code: 0 }, 8),
            frame(&[], &v6_ext(&[44]), &tcp(5062, 45000, 0x12), 0),
            frame(&[ETH_P_8021Q], &ps_common::frames::v4(), &udp(123, 123), 8),
            frame(&[], &Net::Arp, &Transport::Raw(0, vec![]), 0),
        ];
        let mut sweep = Vec::new();
        for b in bases.iter() {
            for n in 0..=b.len() {
                sweep.push(b[..n].to_vec());
            }
        }
        sweep.reverse();
        Self { rng: Rng::new(seed), ports, sweep }
    }

    /// Number of frames of the deterministic prefix sweep still to come.
    pub fn sweep_left(&self) -> usize {
        self.sweep.len()
    }

    /// The next frame and its family.
    pub fn next_frame(&mut self) -> (Vec<u8>, Family) {
        if let Some(f) = self.sweep.pop() {
            return (f, Family::Prefix);
        }
        let r = &mut self.rng;
        match r.below(100) {
            0..=34 => (self.valid(), Family::Valid),
            35..=42 => (self.icmp(), Family::Icmp),
            43..=48 => (self.other(), Family::Other),
            49..=55 => (self.fragment(), Family::Fragment),
            56..=61 => (self.ext_chain(), Family::ExtChain),
            62..=65 => (self.vlan(), Family::Vlan),
            66..=77 => (self.lengths(), Family::Lengths),
            78..=87 => (self.flipped(), Family::Flipped),
            88..=94 => {
                let mut f = self.valid();
                let n = self.rng.below(f.len() as u64 + 1) as usize;
                f.truncate(n);
                (f, Family::Truncated)
            }
            _ => (self.random(), Family::Random),
        }
    }

    fn vlans(&mut self) -> Vec<u16> {
        let n = self.rng.pick(&[0, 0, 0, 1, 2]);
        (0..n).map(|_| self.rng.pick(&[ETH_P_8021Q, ETH_P_8021AD])).collect()
    }

    fn net(&mut self) -> Net {
        if self.rng.chance(1, 2) {
            let opts = if self.rng.chance(1, 4) { self.rng.range(1, 10) as usize * 4 } else { 0 };
            v4_opts(opts)
        } else {
            let n = if self.rng.chance(1, 4) { self.rng.range(1, 3) as usize } else { 0 };
            let ext: Vec<u8> = (0..n).map(|_| self.rng.pick(&[0, 43, 60, 51])).collect();
            v6_ext(&ext)
        }
    }

    fn port_pair(&mut self, is_tcp: bool) -> (u16, u16) {
        let (inb, rep) = if is_tcp {
            (&self.ports.tcp_in, &self.ports.tcp_reply)
        } else {
            (&self.ports.udp_in, &self.ports.udp_reply)
        };
        let any = |r: &mut Rng| r.next_u64() as u16;
        let local = |r: &mut Rng| match r.below(4) {
            0 => r.range(32768, 60999) as u16,
            1 => r.pick(&[0, 1, 22, 68, 123, 546, 1023, 32767, 32768, 60999, 61000, 65535]),
            _ => r.range(1024, 65535) as u16,
        };
        match self.rng.below(5) {
            0 | 1 if !inb.is_empty() => {
                let d = self.rng.pick(inb);
                (any(&mut self.rng), d.wrapping_add(self.rng.pick(&[0, 0, 0, 0, 1, u16::MAX])))
            }
            2 | 3 if !rep.is_empty() => {
                let s = self.rng.pick(rep);
                (s, local(&mut self.rng))
            }
            _ => (any(&mut self.rng), any(&mut self.rng)),
        }
    }

    fn transport(&mut self) -> Transport {
        let is_tcp = self.rng.chance(1, 2);
        let (s, d) = self.port_pair(is_tcp);
        if is_tcp {
            let flags = match self.rng.below(6) {
                0 => 0x02,
                1 => 0x12,
                2 => 0x10,
                3 => 0x18,
                4 => self.rng.pick(&[0x00, 0x01, 0x04, 0x11, 0x14, 0x03, 0xff]),
                _ => self.rng.byte(),
            };
            if self.rng.chance(1, 2) {
                tcp(s, d, flags)
            } else {
                let (seq, ack, win) =
                    (self.rng.next_u64() as u32, self.rng.next_u64() as u32, self.rng.next_u64() as u16);
                let opts = self.tcp_options();
                tcp_full(s, d, flags, seq, ack, win, &opts)
            }
        } else {
            udp(s, d)
        }
    }

    /// TCP options: none, a Linux SYN's, timestamps, SACK blocks, NOP runs, window scales
    /// out of range, or random bytes (the option walk of the stateful checks reads them).
    fn tcp_options(&mut self) -> Vec<u8> {
        let r = &mut self.rng;
        let word = |r: &mut Rng| (r.next_u64() as u32).to_be_bytes();
        match r.below(7) {
            0 => vec![],
            1 => vec![2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, r.pick(&[0, 7, 14, 15, 255])],
            2 => [vec![1, 1, 8, 10], word(r).to_vec(), word(r).to_vec()].concat(),
            3 => {
                let blocks = r.range(1, 4) as usize;
                let mut o = vec![1, 1, 5, 2 + 8 * blocks as u8];
                for _ in 0..2 * blocks {
                    o.extend_from_slice(&word(r));
                }
                o
            }
            4 => vec![1; r.range(1, 40) as usize],
            _ => (0..r.range(1, 40)).map(|_| r.byte()).collect(),
        }
    }

    fn payload(&mut self) -> usize {
        match self.rng.below(10) {
            0 => self.rng.range(1000, 3000) as usize,
            1..=3 => 0,
            _ => self.rng.below(200) as usize,
        }
    }

    fn valid(&mut self) -> Vec<u8> {
        let v = self.vlans();
        let n = self.net();
        let t = self.transport();
        let p = self.payload();
        frame(&v, &n, &t, p)
    }

    fn icmp(&mut self) -> Vec<u8> {
        let v = self.vlans();
        let n = self.net();
        let ty = match self.rng.below(3) {
            0 => self.rng.byte(),
            _ => self.rng.pick(&[0, 3, 5, 8, 11, 12, 13, 1, 2, 4, 128, 129, 130, 133, 134, 135, 136, 137, 143, 144]),
        };
        let code = self.rng.below(5) as u8;
        let p = self.rng.below(64) as usize;
        let mut f = frame(&v, &n, &Transport::Icmp { ty, code }, p);
        if self.rng.chance(1, 8) {
            // ICMPv6 inside IPv4 or ICMP inside IPv6: a protocol no rule admits there.
            if let Some(proto) = ip_proto_byte(&f, v.len()) {
                f[proto] = if f[proto] == 1 { 58 } else { 1 };
            }
        }
        f
    }

    fn other(&mut self) -> Vec<u8> {
        let v = self.vlans();
        match self.rng.below(4) {
            0 => frame(&v, &Net::Arp, &Transport::Raw(0, vec![]), 0),
            1 => {
                let et = self.rng.pick(&[0x88cc, 0x8847, 0x8863, 0x88e5, 0x0842, 0x0000, 0x05dc, 0xffff, 0x86dc]);
                let n = self.rng.below(80) as usize;
                frame(&v, &Net::Other(et, n), &Transport::Raw(0, vec![]), 0)
            }
            _ => {
                let n = self.net();
                let proto = self.rng.pick(&[0, 2, 4, 41, 47, 50, 51, 59, 89, 112, 132, 136, 255, 1, 58, 6, 17]);
                let len = self.rng.below(40) as usize;
                let bytes: Vec<u8> = (0..len).map(|_| self.rng.byte()).collect();
                frame(&v, &n, &Transport::Raw(proto, bytes), 0)
            }
        }
    }

    fn fragment(&mut self) -> Vec<u8> {
        let v = self.vlans();
        let t = self.transport();
        let p = self.payload();
        if self.rng.chance(1, 2) {
            // MF with offset 0 (first), offset > 0 with or without MF (later), DF.
            let frag = match self.rng.below(5) {
                0 => 0x2000,
                1 => 0x4000,
                2 => self.rng.range(1, 0x1fff) as u16,
                3 => 0x2000 | self.rng.range(1, 0x1fff) as u16,
                _ => self.rng.next_u64() as u16,
            };
            frame(&v, &Net::V4 { src: V4_SRC, dst: V4_DST, options: vec![], frag }, &t, p)
        } else {
            let off = if self.rng.chance(1, 2) { 0 } else { self.rng.range(1, 0x1fff) as u16 };
            let mut ext = vec![44];
            if self.rng.chance(1, 3) {
                ext.insert(0, 0);
            }
            if self.rng.chance(1, 3) {
                ext.push(60);
            }
            frame(&v, &Net::V6 { src: V6_SRC, dst: V6_DST, ext, frag_offset: off }, &t, p)
        }
    }

    fn ext_chain(&mut self) -> Vec<u8> {
        let v = self.vlans();
        let n = self.rng.below(10) as usize;
        let ext: Vec<u8> = (0..n).map(|_| self.rng.pick(&EXT_TYPES)).collect();
        let off = if self.rng.chance(1, 4) { 1 } else { 0 };
        let t = if self.rng.chance(1, 5) { Transport::Icmp { ty: 135, code: 0 } } else { self.transport() };
        frame(&v, &Net::V6 { src: V6_SRC, dst: V6_DST, ext, frag_offset: off }, &t, 8)
    }

    fn vlan(&mut self) -> Vec<u8> {
        let n = self.rng.range(1, 5) as usize;
        let v: Vec<u16> = (0..n).map(|_| self.rng.pick(&TPIDS)).collect();
        let net = self.net();
        let t = self.transport();
        frame(&v, &net, &t, 4)
    }

    /// A valid frame with one length field set to an edge value.
    fn lengths(&mut self) -> Vec<u8> {
        let v = self.vlans();
        let n = self.net();
        let t = self.transport();
        let p = self.payload();
        let mut f = frame(&v, &n, &t, p);
        let l3 = 14 + 4 * v.len();
        let edge16 = |r: &mut Rng, exact: usize| -> u16 {
            let e = exact as i64;
            let x = r.pick(&[0i64, 1, 7, 8, 19, 20, 39, 40, e - 1, e, e + 1, 0xffff]);
            x.clamp(0, 0xffff) as u16
        };
        let is_v4 = f.get(l3).is_some_and(|b| b >> 4 == 4);
        let l4 = if is_v4 { l3 + ((f[l3] & 0x0f) as usize) * 4 } else { l4_offset_v6(&f, l3) };
        match self.rng.below(5) {
            0 if is_v4 => {
                let total = f.len() - l3;
                let x = edge16(&mut self.rng, total);
                f[l3 + 2..l3 + 4].copy_from_slice(&x.to_be_bytes());
            }
            1 if is_v4 => {
                // IHL 0..15 and the version nibble.
                f[l3] = self.rng.pick(&[0x40, 0x44, 0x45, 0x46, 0x4f, 0x35, 0x65, 0x05]);
            }
            0 | 1 => {
                let payload = f.len() - l3 - 40;
                let x = edge16(&mut self.rng, payload);
                f[l3 + 4..l3 + 6].copy_from_slice(&x.to_be_bytes());
                if self.rng.chance(1, 4) {
                    f[l3] = self.rng.pick(&[0x40, 0x70, 0x00, 0x6f]);
                }
            }
            2 if f.len() > l4 + 13 && matches!(t, Transport::Tcp { .. }) => {
                // TCP data offset 0..15.
                f[l4 + 12] = (self.rng.below(16) as u8) << 4;
            }
            2 | 3 if f.len() > l4 + 5 && matches!(t, Transport::Udp { .. }) => {
                let x = edge16(&mut self.rng, f.len() - l4);
                f[l4 + 4..l4 + 6].copy_from_slice(&x.to_be_bytes());
            }
            _ if !is_v4 && f.len() > l3 + 41 && ps_common::parse::IPPROTO_TCP != f[l3 + 6] => {
                // The first extension header's length byte.
                f[l3 + 41] = self.rng.byte();
            }
            _ => {
                // Pad the frame beyond the IP length (Ethernet padding).
                let pad = self.rng.range(1, 64) as usize;
                f.resize(f.len() + pad, 0xee);
            }
        }
        f
    }

    fn flipped(&mut self) -> Vec<u8> {
        let mut f = self.valid();
        let flips = self.rng.range(1, 4);
        for _ in 0..flips {
            // Mostly inside the headers, where the parser looks.
            let lim = f.len().min(if self.rng.chance(3, 4) { 80 } else { usize::MAX });
            let i = self.rng.below(lim as u64) as usize;
            f[i] = if self.rng.chance(1, 2) { self.rng.byte() } else { f[i] ^ (1 << self.rng.below(8)) };
        }
        f
    }

    fn random(&mut self) -> Vec<u8> {
        let len = match self.rng.below(4) {
            0 => self.rng.below(14) as usize,
            1 => self.rng.below(64) as usize,
            _ => self.rng.below(600) as usize,
        };
        let mut f: Vec<u8> = (0..len).map(|_| self.rng.byte()).collect();
        if f.len() >= 15 && self.rng.chance(2, 3) {
            let et: u16 = self.rng.pick(&[0x0800, 0x86dd, 0x8100, 0x88a8, 0x0806]);
            f[12..14].copy_from_slice(&et.to_be_bytes());
            if self.rng.chance(1, 2) {
                f[14] = if et == 0x86dd { 0x60 } else { 0x45 };
            }
        }
        f
    }
}

fn v4_opts(n: usize) -> Net {
    Net::V4 { src: V4_SRC, dst: V4_DST, options: vec![1; n], frag: 0 }
}

fn v6_ext(ext: &[u8]) -> Net {
    Net::V6 { src: V6_SRC, dst: V6_DST, ext: ext.to_vec(), frag_offset: 0 }
}

/// Offset of the IP protocol byte of a frame the builder made with `vlans` tags.
fn ip_proto_byte(f: &[u8], vlans: usize) -> Option<usize> {
    let l3 = 14 + 4 * vlans;
    match f.get(l3)? >> 4 {
        4 => Some(l3 + 9),
        6 if f[l3 + 6] == 58 => Some(l3 + 6),
        _ => None,
    }
}

/// Where the transport header of a builder-made IPv6 frame starts (the builder's
/// extension headers are 8 bytes, AH 16).
fn l4_offset_v6(f: &[u8], l3: usize) -> usize {
    let mut nh = f.get(l3 + 6).copied().unwrap_or(59);
    let mut off = l3 + 40;
    for _ in 0..12 {
        if !EXT_TYPES.contains(&nh) || off + 2 > f.len() {
            break;
        }
        let len = if nh == 51 { (f[off + 1] as usize + 2) * 4 } else { 8 };
        nh = f[off];
        off += len;
    }
    off
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_varied() {
        let ports = Ports { tcp_in: vec![443], udp_in: vec![5060], tcp_reply: vec![5062], udp_reply: vec![53] };
        let a: Vec<_> = {
            let mut g = FrameGen::new(7, ports.clone());
            (0..3000).map(|_| g.next_frame()).collect()
        };
        let mut g = FrameGen::new(7, ports);
        let b: Vec<_> = (0..3000).map(|_| g.next_frame()).collect();
        assert_eq!(a, b, "same seed, same frames");
        let families: std::collections::BTreeSet<_> = a.iter().map(|(_, f)| *f).collect();
        assert_eq!(families.len(), 11, "every family appears: {families:?}");
        assert!(a.iter().any(|(f, _)| f.is_empty()), "the sweep starts at length 0");
    }
}
