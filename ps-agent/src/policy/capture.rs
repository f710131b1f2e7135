//! Frames out of a packet capture, for `explain --pcap`: classic pcap (either byte order,
//! micro- or nanosecond timestamps) and pcapng (every section, every interface, each with
//! its own link type and timestamp resolution), read as a stream through `pcap-parser`'s
//! buffered readers, so memory stays constant whatever the file's size.
//!
//! Each frame comes out as the XDP program would see it, an Ethernet frame: Ethernet
//! captures as they are; raw IP and Linux cooked (SLL, SLL2: what `tcpdump -i any`
//! writes) with a made-up Ethernet header in front of the network layer. Where the
//! capture says which way a frame went (the SLL packet type, the pcapng EPB flags) the
//! frame carries it as a [`Direction`], so the host's own packets can be told apart
//! without `--local`. Pure: a reader in, frames out.

use std::{
    io::{self, Cursor, Read},
    time::Duration,
};

use pcap_parser::{
    Block, EnhancedPacketBlock, LegacyPcapBlock, LegacyPcapReader, Linktype, PcapBlockOwned, PcapError, PcapHeader,
    PcapNGReader, SimplePacketBlock, traits::PcapReaderIterator,
};
use ps_common::parse::{ETH_P_IP, ETH_P_IPV6};

/// The reader's buffer to start with: a few full-size frames.
const BUFFER: usize = 1 << 20;
/// The largest block read (the buffer grows to it): pcapng blocks carry one frame each,
/// and no capture tool writes frames larger than 256 KiB.
const MAX_BUFFER: usize = 64 << 20;
/// The pcapng section header block type: the file's first four bytes.
const PCAPNG_MAGIC: u32 = 0x0a0d_0d0a;
/// Classic pcap magics as read little-endian (micro- and nanosecond, either byte order,
/// and the "modified" format of old Red Hat tcpdumps).
const PCAP_MAGICS: [u32; 5] = [0xa1b2_c3d4, 0xd4c3_b2a1, 0xa1b2_3c4d, 0x4d3c_b2a1, 0xa1b2_cd34];
/// The pcapng EPB option that holds the flags word (direction in its two low bits).
const EPB_FLAGS: u16 = 2;
/// The SLL packet type of a frame the host sent (`PACKET_OUTGOING`).
const PACKET_OUTGOING: u16 = 4;
/// The highest SLL packet type of a received frame (host, broadcast, multicast, other host).
const PACKET_OTHERHOST: u16 = 3;
/// The source MAC, destination MAC of the Ethernet header put in front of a frame
/// captured without one (the classifier does not read them).
const MACS: [u8; 12] = [0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];

/// A capture error.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// Neither pcap nor pcapng.
    #[error(
        "not a pcap or pcapng file (first bytes {magic:#010x}): write it with `tcpdump -w`, `dumpcap -w` or Wireshark's File > Save"
    )]
    Magic {
        /// The first four bytes, read little-endian (0 for a shorter file).
        magic: u32,
    },
    /// An interface whose link layer explain cannot take apart.
    #[error(
        "capture interface {interface} has link type {linktype}, which explain does not read (Ethernet 1, raw IP 101, 228, 229, Linux cooked 113, 276 are): capture on an Ethernet interface or with `-i any`"
    )]
    LinkType {
        /// Interface number in its pcapng section (0 in a classic pcap).
        interface: u32,
        /// The link type.
        linktype: i32,
    },
    /// An EPB names an interface its section does not describe.
    #[error(
        "frame {index} names capture interface {interface}, but its section describes {described}: the pcapng file is damaged"
    )]
    Interface {
        /// Frame number (0-based).
        index: u64,
        /// The interface it names.
        interface: u32,
        /// How many the section describes.
        described: usize,
    },
    /// The file ends inside a block.
    #[error(
        "capture truncated: the block after frame {index} (byte {offset}) runs past the end of the file; a capture still being written, or cut short"
    )]
    Truncated {
        /// Frames read before it.
        index: u64,
        /// Offset of the block.
        offset: usize,
    },
    /// A block too large to be a frame.
    #[error("capture block at byte {offset} is larger than {max} bytes: the file is damaged")]
    TooLarge {
        /// Offset of the block.
        offset: usize,
        /// The limit.
        max: usize,
    },
    /// A block the parser rejects, or a failed read.
    #[error("failed to read the capture at byte {offset} (after frame {index}): {detail}")]
    Read {
        /// Frames read before it.
        index: u64,
        /// Offset of the block.
        offset: usize,
        /// What the parser says.
        detail: String,
    },
}

/// Which way a frame went, as the capture records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The capture does not say (Ethernet and raw IP pcap, pcapng without EPB flags).
    Unknown,
    /// Received by the capturing host.
    Inbound,
    /// Sent by the capturing host.
    Outbound,
}

/// One frame of a capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The frame as Ethernet (see the module doc).
    pub data: Vec<u8>,
    /// Which way it went.
    pub direction: Direction,
    /// When it was captured, since the Unix epoch.
    pub time: Duration,
}

/// The link layers explain reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    Ethernet,
    /// IPv4 or IPv6 by the version nibble (101), or one of them (228, 229).
    RawIp,
    /// Linux cooked v1: 16-byte header.
    Sll,
    /// Linux cooked v2: 20-byte header.
    Sll2,
}

impl Link {
    fn of(linktype: Linktype, interface: u32) -> Result<Self, CaptureError> {
        // The upper bits of a pcap header's link type field say whether frames end in an FCS.
        match linktype.0 & 0xffff {
            1 => Ok(Link::Ethernet),
            101 | 228 | 229 => Ok(Link::RawIp),
            113 => Ok(Link::Sll),
            276 => Ok(Link::Sll2),
            _ => Err(CaptureError::LinkType { interface, linktype: linktype.0 }),
        }
    }

    /// The frame as Ethernet, and the direction its link header records.
    fn to_ethernet(self, data: &[u8]) -> (Vec<u8>, Direction) {
        let (ethertype, l3, packet_type) = match self {
            Link::Ethernet => return (data.to_vec(), Direction::Unknown),
            Link::RawIp => {
                let v6 = data.first().is_some_and(|b| b >> 4 == 6);
                (if v6 { ETH_P_IPV6 } else { ETH_P_IP }.to_be_bytes(), data, None)
            }
            Link::Sll => (pair(data, 14), data.get(16..).unwrap_or(&[]), Some(u16::from_be_bytes(pair(data, 0)))),
            Link::Sll2 => (pair(data, 0), data.get(20..).unwrap_or(&[]), data.get(10).map(|&t| u16::from(t))),
        };
        let mut frame = Vec::with_capacity(14 + l3.len());
        frame.extend_from_slice(&MACS);
        frame.extend_from_slice(&ethertype);
        frame.extend_from_slice(l3);
        let direction = match packet_type {
            Some(PACKET_OUTGOING) => Direction::Outbound,
            Some(t) if t <= PACKET_OTHERHOST => Direction::Inbound,
            _ => Direction::Unknown,
        };
        (frame, direction)
    }
}

/// Two bytes at `at` (zero where the frame is shorter: the classifier then drops it).
fn pair(data: &[u8], at: usize) -> [u8; 2] {
    data.get(at..at + 2).map_or([0, 0], |b| [b[0], b[1]])
}

/// A pcapng interface, as its description block sets it up.
#[derive(Clone, Copy, Debug)]
struct Interface {
    /// Its link layer, or the link type explain does not read.
    link: Result<Link, i32>,
    /// Timestamp units per second.
    units: u64,
    /// Seconds added to every timestamp.
    offset: i64,
    /// The longest frame captured (an SPB's data is this or its original length).
    snaplen: u32,
}

/// What the blocks read so far say about the ones to come.
#[derive(Debug, Default)]
struct Section {
    /// Classic pcap: the link layer and whether timestamps are in nanoseconds.
    legacy: Option<(Link, bool)>,
    /// pcapng: the current section's interfaces, in order.
    interfaces: Vec<Interface>,
    /// pcapng: the current section is big-endian.
    big_endian: bool,
    /// Frames returned.
    frames: u64,
}

/// The frames of a capture, in file order.
pub struct Capture<'r> {
    reader: Box<dyn PcapReaderIterator + 'r>,
    /// The reader's buffer size.
    capacity: usize,
    section: Section,
    /// Set after an error: nothing more is read.
    failed: bool,
}

impl<'r> Capture<'r> {
    /// Open a capture on `input`: pcap or pcapng, told apart by the first bytes.
    ///
    /// # Errors
    /// [`CaptureError::Magic`] for anything else; [`CaptureError::Read`] for a damaged header.
    pub fn new(input: impl Read + 'r) -> Result<Self, CaptureError> {
        let mut input = Full(input);
        let mut head = [0u8; 4];
        let n = input.read(&mut head).unwrap_or(0);
        let magic = if n == 4 { u32::from_le_bytes(head) } else { 0 };
        let input = Full(Cursor::new(head).take(n as u64).chain(input));
        let open = |e: PcapError<&[u8]>| read_error(0, 0, &e);
        let reader: Box<dyn PcapReaderIterator + 'r> = if magic == PCAPNG_MAGIC {
            Box::new(PcapNGReader::new(BUFFER, input).map_err(open)?)
        } else if PCAP_MAGICS.contains(&magic) {
            Box::new(LegacyPcapReader::new(BUFFER, input).map_err(open)?)
        } else {
            return Err(CaptureError::Magic { magic });
        };
        Ok(Self { reader, capacity: BUFFER, section: Section::default(), failed: false })
    }

    /// The next block's result: a frame, nothing (a block without one), or the end.
    fn step(&mut self) -> Option<Result<Option<Frame>, CaptureError>> {
        let index = self.section.frames;
        let offset = self.reader.consumed();
        match self.reader.next() {
            Ok((len, block)) => {
                let frame = self.section.frame(block);
                self.reader.consume(len);
                Some(frame)
            }
            Err(PcapError::Eof) => None,
            Err(PcapError::Incomplete(_)) => {
                let held = self.reader.data().len();
                if let Err(e) = self.reader.refill() {
                    return Some(Err(read_error(index, offset, &e)));
                }
                // A full buffer that still holds no whole block: make room.
                let stuck = self.reader.data().len() == held && !self.reader.reader_exhausted();
                Some(if stuck { self.grow(offset) } else { Ok(None) })
            }
            Err(PcapError::BufferTooSmall) => Some(self.grow(offset)),
            Err(PcapError::UnexpectedEof) => Some(Err(CaptureError::Truncated { index, offset })),
            Err(e) => Some(Err(read_error(index, offset, &e))),
        }
    }
}

impl Capture<'_> {
    /// Double the buffer, up to [`MAX_BUFFER`], for the block at `offset`.
    fn grow(&mut self, offset: usize) -> Result<Option<Frame>, CaptureError> {
        let size = self.capacity * 2;
        if size > MAX_BUFFER || !self.reader.grow(size) {
            return Err(CaptureError::TooLarge { offset, max: MAX_BUFFER });
        }
        self.capacity = size;
        Ok(None)
    }
}

impl Iterator for Capture<'_> {
    type Item = Result<Frame, CaptureError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.failed {
            match self.step()? {
                Ok(None) => {}
                Ok(Some(frame)) => return Some(Ok(frame)),
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
        None
    }
}

/// A reader whose reads fill the buffer unless the input ends: pcap-parser's readers
/// check the file header in their first read, and a pipe may hand out a few bytes at a time.
struct Full<R>(R);

impl<R: Read> Read for Full<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match self.0.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The bytes read so far first; the error comes again on the next read.
                Err(_) if n > 0 => break,
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }
}

fn read_error(index: u64, offset: usize, e: &PcapError<&[u8]>) -> CaptureError {
    let detail = match e {
        PcapError::ReadError => "the file could not be read".to_string(),
        PcapError::NomError(_, kind) | PcapError::OwnedNomError(_, kind) => {
            format!("a block does not parse ({kind:?}): the file is damaged")
        }
        other => format!("{other:?}"),
    };
    CaptureError::Read { index, offset, detail }
}

impl Section {
    /// What a block adds: the frame it holds, if any.
    fn frame(&mut self, block: PcapBlockOwned<'_>) -> Result<Option<Frame>, CaptureError> {
        let frame = match block {
            PcapBlockOwned::LegacyHeader(h) => {
                self.legacy = Some((Link::of(h.network, 0)?, PcapHeader::is_nanosecond_precision(&h)));
                return Ok(None);
            }
            PcapBlockOwned::Legacy(b) => self.legacy_frame(&b),
            PcapBlockOwned::NG(Block::SectionHeader(shb)) => {
                self.interfaces.clear();
                self.big_endian = shb.big_endian();
                return Ok(None);
            }
            PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                self.interfaces.push(Interface {
                    link: Link::of(idb.linktype, self.interfaces.len() as u32).map_err(|_| idb.linktype.0),
                    units: units_per_second(idb.if_tsresol),
                    offset: idb.ts_offset(),
                    snaplen: idb.snaplen,
                });
                return Ok(None);
            }
            PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => self.enhanced_frame(&epb)?,
            PcapBlockOwned::NG(Block::SimplePacket(spb)) => self.simple_frame(&spb)?,
            PcapBlockOwned::NG(_) => return Ok(None),
        };
        self.frames += 1;
        Ok(Some(frame))
    }

    fn legacy_frame(&self, b: &LegacyPcapBlock<'_>) -> Frame {
        let (link, nanos) = self.legacy.expect("the pcap reader returns the header first");
        let data = b.data.get(..b.caplen as usize).unwrap_or(b.data);
        let (data, direction) = link.to_ethernet(data);
        let frac = if nanos { b.ts_usec } else { b.ts_usec.saturating_mul(1000) };
        Frame { data, direction, time: Duration::new(b.ts_sec.into(), 0) + Duration::from_nanos(frac.into()) }
    }

    fn interface(&self, id: u32) -> Result<(Interface, Link), CaptureError> {
        let described = self.interfaces.len();
        let i = *self.interfaces.get(id as usize).ok_or(CaptureError::Interface {
            index: self.frames,
            interface: id,
            described,
        })?;
        let link = i.link.map_err(|linktype| CaptureError::LinkType { interface: id, linktype })?;
        Ok((i, link))
    }

    fn enhanced_frame(&self, epb: &EnhancedPacketBlock<'_>) -> Result<Frame, CaptureError> {
        let (iface, link) = self.interface(epb.if_id)?;
        let data = epb.data.get(..epb.caplen as usize).unwrap_or(epb.data);
        let (data, from_link) = link.to_ethernet(data);
        let direction = match self.epb_direction(epb) {
            Direction::Unknown => from_link,
            d => d,
        };
        let ts = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
        Ok(Frame { data, direction, time: iface.time(ts) })
    }

    /// The direction bits of the EPB flags option, in the section's byte order.
    fn epb_direction(&self, epb: &EnhancedPacketBlock<'_>) -> Direction {
        let Some(flags) = epb.options.iter().find(|o| o.code.0 == EPB_FLAGS && o.len == 4) else {
            return Direction::Unknown;
        };
        let Some(Ok(word)) = flags.value().get(..4).map(<[u8; 4]>::try_from) else { return Direction::Unknown };
        let word = if self.big_endian { u32::from_be_bytes(word) } else { u32::from_le_bytes(word) };
        match word & 0b11 {
            1 => Direction::Inbound,
            2 => Direction::Outbound,
            _ => Direction::Unknown,
        }
    }

    fn simple_frame(&self, spb: &SimplePacketBlock<'_>) -> Result<Frame, CaptureError> {
        // An SPB belongs to the section's first interface and has neither length nor time
        // of its own beyond the original length.
        let (iface, link) = self.interface(0)?;
        let len = if iface.snaplen == 0 { spb.origlen } else { spb.origlen.min(iface.snaplen) };
        let data = spb.data.get(..len as usize).unwrap_or(spb.data);
        let (data, direction) = link.to_ethernet(data);
        Ok(Frame { data, direction, time: Duration::ZERO })
    }
}

/// The `if_tsresol` option as units per second: 10^n, or 2^n with the top bit set
/// (pcap-parser's own conversion rejects every binary resolution). One beyond `u64`
/// falls back to the default, microseconds.
fn units_per_second(tsresol: u8) -> u64 {
    let n = u32::from(tsresol & 0x7f);
    let units = if tsresol & 0x80 == 0 { 10u64.checked_pow(n) } else { 1u64.checked_shl(n) };
    units.unwrap_or(1_000_000)
}

impl Interface {
    /// A pcapng timestamp (`units` per second since the epoch, plus `offset` seconds).
    fn time(&self, ts: u64) -> Duration {
        let secs = (ts / self.units).saturating_add_signed(self.offset);
        let nanos = u128::from(ts % self.units) * 1_000_000_000 / u128::from(self.units);
        Duration::new(secs, nanos as u32)
    }
}

#[cfg(test)]
mod tests {
    use ps_common::{
        frames,
        parse::{Parsed, parse_slice},
    };

    use super::*;

    /// Byte order of a file or section being written.
    #[derive(Clone, Copy)]
    enum Order {
        Le,
        Be,
    }

    impl Order {
        fn u16(self, v: u16) -> [u8; 2] {
            match self {
                Order::Le => v.to_le_bytes(),
                Order::Be => v.to_be_bytes(),
            }
        }
        fn u32(self, v: u32) -> [u8; 4] {
            match self {
                Order::Le => v.to_le_bytes(),
                Order::Be => v.to_be_bytes(),
            }
        }
    }

    /// A classic pcap: `magic` written in `o`'s order; records `(seconds, fraction, data)`.
    fn pcap(o: Order, magic: u32, linktype: u32, records: &[(u32, u32, &[u8])]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(o.u32(magic));
        b.extend(o.u16(2));
        b.extend(o.u16(4));
        b.extend([0; 8]);
        b.extend(o.u32(65535));
        b.extend(o.u32(linktype));
        for &(sec, frac, data) in records {
            b.extend(o.u32(sec));
            b.extend(o.u32(frac));
            b.extend(o.u32(data.len() as u32));
            b.extend(o.u32(data.len() as u32));
            b.extend(data);
        }
        b
    }

    /// A pcapng block: type, body (padded to 32 bits), lengths.
    fn block(o: Order, ty: u32, body: &[u8]) -> Vec<u8> {
        let mut body = body.to_vec();
        body.resize(body.len().div_ceil(4) * 4, 0);
        let len = body.len() as u32 + 12;
        let mut b = Vec::new();
        b.extend(o.u32(ty));
        b.extend(o.u32(len));
        b.extend(body);
        b.extend(o.u32(len));
        b
    }

    /// A pcapng option (padded), then the end-of-options.
    fn options(o: Order, code: u16, value: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(o.u16(code));
        b.extend(o.u16(value.len() as u16));
        b.extend(value);
        b.resize(b.len().div_ceil(4) * 4, 0);
        b.extend([0; 4]);
        b
    }

    fn shb(o: Order) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend(o.u32(0x1a2b_3c4d));
        body.extend(o.u16(1));
        body.extend(o.u16(0));
        body.extend([0xff; 8]);
        block(o, PCAPNG_MAGIC, &body)
    }

    /// An IDB; `tsresol` as the option (None: the default, microseconds).
    fn idb(o: Order, linktype: u16, tsresol: Option<u8>) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend(o.u16(linktype));
        body.extend([0, 0]);
        body.extend(o.u32(262_144));
        if let Some(r) = tsresol {
            body.extend(options(o, 9, &[r]));
        }
        block(o, 1, &body)
    }

    /// An EPB on interface `id` at `ts` (interface units); `flags`: the EPB flags option.
    fn epb(o: Order, id: u32, ts: u64, data: &[u8], flags: Option<u32>) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend(o.u32(id));
        body.extend(o.u32((ts >> 32) as u32));
        body.extend(o.u32(ts as u32));
        body.extend(o.u32(data.len() as u32));
        body.extend(o.u32(data.len() as u32));
        body.extend(data);
        body.resize(body.len().div_ceil(4) * 4, 0);
        if let Some(f) = flags {
            body.extend(options(o, EPB_FLAGS, &o.u32(f)));
        }
        block(o, 6, &body)
    }

    fn spb(o: Order, data: &[u8]) -> Vec<u8> {
        let mut body = o.u32(data.len() as u32).to_vec();
        body.extend(data);
        block(o, 3, &body)
    }

    /// A reader that hands out at most 7 bytes per read, as a slow pipe would.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(7).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<Frame>, CaptureError> {
        let fast: Vec<Frame> = Capture::new(bytes)?.collect::<Result<_, _>>()?;
        let slow: Vec<Frame> = Capture::new(Trickle(bytes))?.collect::<Result<_, _>>()?;
        assert_eq!(fast, slow, "the same frames whatever the reads return");
        Ok(fast)
    }

    fn tcp4() -> Vec<u8> {
        frames::frame(&[], &frames::v4(), &frames::tcp(50000, 443, 0x02), 10)
    }

    fn udp6() -> Vec<u8> {
        frames::frame(&[], &frames::v6(), &frames::udp(40000, 5060), 3)
    }

    /// A frame's network layer with a Linux cooked v1 header (`packet_type`) in front.
    fn sll(packet_type: u16, eth: &[u8]) -> Vec<u8> {
        let mut b = packet_type.to_be_bytes().to_vec();
        b.extend([0, 1, 0, 6, 2, 0, 0, 0, 0, 2, 0, 0]);
        b.extend(&eth[12..]);
        b
    }

    /// The same with a Linux cooked v2 header.
    fn sll2(packet_type: u8, eth: &[u8]) -> Vec<u8> {
        let mut b = eth[12..14].to_vec();
        b.extend([0, 0, 0, 0, 0, 7, 0, 1, packet_type, 6, 2, 0, 0, 0, 0, 2, 0, 0]);
        b.extend(&eth[14..]);
        b
    }

    fn with_macs(eth: &[u8]) -> Vec<u8> {
        [&MACS[..], &eth[12..]].concat()
    }

    #[test]
    fn classic_pcap_either_order_and_precision() {
        let (t, u) = (tcp4(), udp6());
        let micro = pcap(Order::Le, 0xa1b2_c3d4, 1, &[(1_700_000_000, 250_000, &t), (1_700_000_001, 7, &u)]);
        let f = read_all(&micro).unwrap();
        assert_eq!((f[0].data.as_slice(), f[1].data.as_slice()), (t.as_slice(), u.as_slice()));
        assert_eq!(f[0].time, Duration::new(1_700_000_000, 250_000_000));
        assert_eq!(f[1].time, Duration::new(1_700_000_001, 7_000));
        assert!(f.iter().all(|f| f.direction == Direction::Unknown), "Ethernet says no direction");
        let nano = pcap(Order::Be, 0xa1b2_3c4d, 1, &[(1_700_000_000, 123_456_789, &t)]);
        let f = read_all(&nano).unwrap();
        assert_eq!((f[0].data.as_slice(), f[0].time), (t.as_slice(), Duration::new(1_700_000_000, 123_456_789)));
    }

    #[test]
    fn raw_ip_and_linux_cooked_become_ethernet_with_a_direction() {
        let (t, u) = (tcp4(), udp6());
        for linktype in [101, 228, 229] {
            let f = read_all(&pcap(Order::Le, 0xa1b2_c3d4, linktype, &[(0, 0, &t[14..]), (0, 0, &u[14..])])).unwrap();
            assert_eq!((f[0].data.clone(), f[1].data.clone()), (with_macs(&t), with_macs(&u)), "link type {linktype}");
        }
        let records = [(0, 0, &sll(4, &t)[..]), (0, 0, &sll(0, &u)[..]), (0, 0, &sll(3, &t)[..])];
        let f = read_all(&pcap(Order::Le, 0xa1b2_c3d4, 113, &records)).unwrap();
        let dirs: Vec<Direction> = f.iter().map(|f| f.direction).collect();
        assert_eq!(dirs, [Direction::Outbound, Direction::Inbound, Direction::Inbound]);
        assert_eq!((f[0].data.clone(), f[1].data.clone()), (with_macs(&t), with_macs(&u)));
        let records = [(0, 0, &sll2(4, &t)[..]), (0, 0, &sll2(0, &u)[..])];
        let f = read_all(&pcap(Order::Be, 0xa1b2_c3d4, 276, &records)).unwrap();
        assert_eq!((f[0].direction, f[1].direction), (Direction::Outbound, Direction::Inbound));
        assert_eq!((f[0].data.clone(), f[1].data.clone()), (with_macs(&t), with_macs(&u)));
        assert!(matches!(parse_slice(&f[1].data), Parsed::Ip(p) if p.dport == 5060), "the classifier reads it");
        // A cooked header cut short: a frame the classifier drops, not a panic.
        let f = read_all(&pcap(Order::Le, 0xa1b2_c3d4, 276, &[(0, 0, &[0x08][..])])).unwrap();
        assert_eq!(f[0].data, MACS.iter().copied().chain([0, 0]).collect::<Vec<u8>>());
    }

    #[test]
    fn pcapng_every_section_and_interface() {
        let (t, u) = (tcp4(), udp6());
        let (le, be) = (Order::Le, Order::Be);
        let mut b = shb(le);
        b.extend(idb(le, 1, Some(9)));
        b.extend(idb(le, 276, None));
        b.extend(epb(le, 0, 1_700_000_000_123_456_789, &t, Some(1)));
        b.extend(epb(le, 1, 1_700_000_000_000_001, &sll2(4, &u), None));
        b.extend(epb(le, 0, 0, &t, Some(2)));
        b.extend(epb(le, 0, 0, &u, Some(0b1_0000)));
        b.extend(spb(le, &u));
        // A second section, big-endian, whose interface 0 is raw IP.
        b.extend(shb(be));
        b.extend(idb(be, 101, Some(0x80 | 10)));
        b.extend(epb(be, 0, 3 * 1024 + 512, &t[14..], Some(2)));
        let f = read_all(&b).unwrap();
        let got: Vec<(Vec<u8>, Direction)> = f.iter().map(|f| (f.data.clone(), f.direction)).collect();
        assert_eq!(
            got,
            [
                (t.clone(), Direction::Inbound),
                (with_macs(&u), Direction::Outbound),
                (t.clone(), Direction::Outbound),
                (u.clone(), Direction::Unknown),
                (u.clone(), Direction::Unknown),
                (with_macs(&t), Direction::Outbound),
            ]
        );
        assert_eq!(f[0].time, Duration::new(1_700_000_000, 123_456_789), "nanosecond resolution");
        assert_eq!(f[1].time, Duration::new(1_700_000_000, 1_000), "default: microseconds");
        assert_eq!(f[5].time, Duration::new(3, 500_000_000), "binary resolution, 2^-10 s");
    }

    #[test]
    fn large_blocks_grow_the_buffer() {
        let big = frames::frame(&[], &frames::v4(), &frames::udp(1, 2), 3 << 20);
        let mut b = shb(Order::Le);
        b.extend(idb(Order::Le, 1, None));
        b.extend(epb(Order::Le, 0, 0, &big, None));
        b.extend(epb(Order::Le, 0, 0, &tcp4(), None));
        let f: Vec<Frame> = Capture::new(&b[..]).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!((f[0].data.len(), f[1].data.as_slice()), (big.len(), tcp4().as_slice()));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let err = |b: &[u8]| read_all(b).unwrap_err();
        assert!(matches!(err(b"GET / HTTP/1.1\r\n"), CaptureError::Magic { magic: 0x2054_4547 }));
        assert!(matches!(err(b"\xd4\xc3"), CaptureError::Magic { magic: 0 }));
        let wifi = pcap(Order::Le, 0xa1b2_c3d4, 105, &[]);
        assert!(matches!(err(&wifi), CaptureError::LinkType { interface: 0, linktype: 105 }));
        let t = tcp4();
        let whole = pcap(Order::Le, 0xa1b2_c3d4, 1, &[(0, 0, &t), (0, 0, &t)]);
        let e = err(&whole[..whole.len() - 3]);
        assert!(matches!(e, CaptureError::Truncated { index: 1, offset: 104 }), "{e:?}");
        assert!(e.to_string().contains("the block after frame 1 (byte 104) runs past the end"), "{e}");
        // pcapng: an interface explain cannot read fails at its first frame, not before.
        let mut b = shb(Order::Le);
        b.extend(idb(Order::Le, 1, None));
        b.extend(idb(Order::Le, 147, None));
        b.extend(epb(Order::Le, 0, 0, &t, None));
        assert_eq!(read_all(&b).unwrap().len(), 1);
        b.extend(epb(Order::Le, 1, 0, &t, None));
        assert!(matches!(err(&b), CaptureError::LinkType { interface: 1, linktype: 147 }));
        let mut b = shb(Order::Le);
        b.extend(idb(Order::Le, 1, None));
        b.extend(epb(Order::Le, 2, 0, &t, None));
        let e = err(&b);
        assert!(matches!(e, CaptureError::Interface { index: 0, interface: 2, described: 1 }), "{e:?}");
    }
}
