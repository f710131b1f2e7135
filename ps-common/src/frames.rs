//! Frame builder for tests, program tests and fuzzing seeds (host only: feature `frames`).
//! Checksums are left zero: the classifier never reads them.

use alloc::vec::Vec;

use crate::{
    layout::FlowKey,
    parse::{ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6},
};

/// Network layer.
#[derive(Clone, Debug)]
pub enum Net {
    /// IPv4; `options` bytes (multiple of 4) follow the fixed header; `frag` is the
    /// flags+offset field.
    V4 {
        /// Source.
        src: [u8; 4],
        /// Destination.
        dst: [u8; 4],
        /// Options.
        options: Vec<u8>,
        /// Flags and fragment offset (host order).
        frag: u16,
    },
    /// IPv6 with extension headers `(type, length in bytes)`; a fragment header's
    /// length is always 8 and `frag_offset` is written into it.
    V6 {
        /// Source.
        src: [u8; 16],
        /// Destination.
        dst: [u8; 16],
        /// Extension headers.
        ext: Vec<u8>,
        /// Fragment offset (8-byte units) for a fragment header.
        frag_offset: u16,
    },
    /// ARP request.
    Arp,
    /// Another EtherType with this many payload bytes.
    Other(u16, usize),
}

/// Transport layer.
#[derive(Clone, Debug)]
pub enum Transport {
    /// TCP.
    Tcp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
        /// Flags.
        flags: u8,
    },
    /// UDP.
    Udp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
    },
    /// ICMP (v4 or v6 by the network layer).
    Icmp {
        /// Type.
        ty: u8,
        /// Code.
        code: u8,
    },
    /// Raw protocol number and bytes.
    Raw(u8, Vec<u8>),
}

/// IPv4 source used by the helpers.
pub const V4_SRC: [u8; 4] = [198, 18, 0, 2];
/// IPv4 destination used by the helpers.
pub const V4_DST: [u8; 4] = [198, 18, 0, 1];
/// IPv6 source used by the helpers.
pub const V6_SRC: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
/// IPv6 destination used by the helpers.
pub const V6_DST: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// Plain IPv4.
pub fn v4() -> Net {
    Net::V4 { src: V4_SRC, dst: V4_DST, options: Vec::new(), frag: 0 }
}

/// The `PS_FLOWS` key of the flow that a [`v4`] frame from `V4_SRC:remote_port` to
/// `V4_DST:local_port` replies to: the host (`V4_DST`) opened it. Tests seed it to send
/// the reply path a frame.
pub fn v4_reply_flow(remote_port: u16, local_port: u16, proto: u8) -> FlowKey {
    let mut key = FlowKey { remote_port, local_port, proto, family: 4, ..FlowKey::default() };
    key.remote[..4].copy_from_slice(&V4_SRC);
    key.local[..4].copy_from_slice(&V4_DST);
    key
}

/// Plain IPv6.
pub fn v6() -> Net {
    Net::V6 { src: V6_SRC, dst: V6_DST, ext: Vec::new(), frag_offset: 0 }
}

/// TCP.
pub fn tcp(sport: u16, dport: u16, flags: u8) -> Transport {
    Transport::Tcp { sport, dport, flags }
}

/// A whole TCP header: sequence and acknowledgement numbers, window, and `options` (padded
/// with end-of-options to a multiple of 4 bytes).
pub fn tcp_full(sport: u16, dport: u16, flags: u8, seq: u32, ack: u32, win: u16, options: &[u8]) -> Transport {
    let mut opts = options.to_vec();
    opts.resize(options.len().div_ceil(4) * 4, 0);
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&ack.to_be_bytes());
    t.push((((20 + opts.len()) / 4) << 4) as u8);
    t.push(flags);
    t.extend_from_slice(&win.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0]);
    t.extend_from_slice(&opts);
    Transport::Raw(6, t)
}

/// UDP.
pub fn udp(sport: u16, dport: u16) -> Transport {
    Transport::Udp { sport, dport }
}

/// Build a frame: Ethernet, `vlans` (TPIDs, outermost first), network, transport,
/// `payload` zero bytes.
pub fn frame(vlans: &[u16], net: &Net, l4: &Transport, payload: usize) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2]);
    for &tpid in vlans {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&[0x00, 0x64]); // TCI: VLAN 100
    }
    let l4_bytes = |proto_icmp: u8| -> (u8, Vec<u8>) {
        let mut t = Vec::new();
        let proto = match l4 {
            Transport::Tcp { sport, dport, flags } => {
                t.extend_from_slice(&sport.to_be_bytes());
                t.extend_from_slice(&dport.to_be_bytes());
                t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, *flags, 0xff, 0xff, 0, 0, 0, 0]);
                6
            }
            Transport::Udp { sport, dport } => {
                t.extend_from_slice(&sport.to_be_bytes());
                t.extend_from_slice(&dport.to_be_bytes());
                t.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
                t.extend_from_slice(&[0, 0]);
                17
            }
            Transport::Icmp { ty, code } => {
                t.extend_from_slice(&[*ty, *code, 0, 0, 0, 0, 0, 0]);
                proto_icmp
            }
            Transport::Raw(p, b) => {
                t.extend_from_slice(b);
                *p
            }
        };
        t.resize(t.len() + payload, 0);
        (proto, t)
    };
    match net {
        Net::V4 { src, dst, options, frag } => {
            f.extend_from_slice(&ETH_P_IP.to_be_bytes());
            let (proto, t) = l4_bytes(1);
            let ihl = 20 + options.len();
            let total = (ihl + t.len()) as u16;
            f.push(0x40 | (ihl / 4) as u8);
            f.push(0);
            f.extend_from_slice(&total.to_be_bytes());
            f.extend_from_slice(&[0, 1]);
            f.extend_from_slice(&frag.to_be_bytes());
            f.extend_from_slice(&[64, proto, 0, 0]);
            f.extend_from_slice(src);
            f.extend_from_slice(dst);
            f.extend_from_slice(options);
            f.extend_from_slice(&t);
        }
        Net::V6 { src, dst, ext, frag_offset } => {
            f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
            let (proto, t) = l4_bytes(58);
            let mut chain = Vec::new();
            for (i, &ty) in ext.iter().enumerate() {
                let next = ext.get(i + 1).copied().unwrap_or(proto);
                match ty {
                    44 => {
                        chain.push(next);
                        chain.push(0);
                        chain.extend_from_slice(&(frag_offset << 3).to_be_bytes());
                        chain.extend_from_slice(&[0, 0, 0, 1]);
                    }
                    51 => {
                        // AH: length in 4-byte units minus 2; 16 bytes here.
                        chain.push(next);
                        chain.push(2);
                        chain.resize(chain.len() + 14, 0);
                    }
                    _ => {
                        chain.push(next);
                        chain.push(0);
                        chain.resize(chain.len() + 6, 0);
                    }
                }
            }
            let first = ext.first().copied().unwrap_or(proto);
            let payload_len = (chain.len() + t.len()) as u16;
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&payload_len.to_be_bytes());
            f.push(first);
            f.push(64);
            f.extend_from_slice(src);
            f.extend_from_slice(dst);
            f.extend_from_slice(&chain);
            f.extend_from_slice(&t);
        }
        Net::Arp => {
            f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
            f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
            f.resize(f.len() + 20, 0);
        }
        Net::Other(ethertype, n) => {
            f.extend_from_slice(&ethertype.to_be_bytes());
            f.resize(f.len() + n, 0);
        }
    }
    f
}

/// QinQ: an 802.1ad outer tag and an 802.1Q inner tag.
pub const QINQ: [u16; 2] = [ETH_P_8021AD, ETH_P_8021Q];
/// One 802.1Q tag.
pub const DOT1Q: [u16; 1] = [ETH_P_8021Q];
