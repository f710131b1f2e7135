//! The bench's results file, `tests/bench/results.json`: the run (machine, kernel, date,
//! parameters) and every number measured, per round. BENCHMARKS.md and the plots are
//! generated from it (`report`, `plot`); the summaries they print (medians, rates) are the
//! methods here, so a table and a plot cannot compute one figure two ways.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// One bench run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Results {
    pub run: Run,
    /// Per-packet cost, BPF_PROG_TEST_RUN.
    pub per_packet: Vec<Case>,
    /// Compile, load and reload times.
    pub control: Vec<Control>,
    /// Instructions the verifier processed, per program of the shipped object.
    pub verified: Vec<Verified>,
    /// The agent's resident memory.
    pub rss: Vec<Rss>,
    /// How xdp-filter was set up (none: not measured).
    pub xdp_filter: Option<XdpFilterSetup>,
    /// Live-frames floods, generator and receiver on one CPU.
    pub floods: Vec<Flood>,
    /// The same floods with the receiver on a CPU of its own.
    pub threaded: Vec<Threaded>,
    /// A legitimate flow alone and under the floods.
    pub flows: Vec<Flow>,
    /// The UDP flood at several rule counts.
    pub flood_scale: Vec<FloodScale>,
}

/// Where, when and how the numbers were taken.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Run {
    /// When the run ended, `YYYY-MM-DD HH:MM:SS UTC`.
    pub date: String,
    /// The commit measured (`git describe --always --dirty`), if known.
    pub commit: Option<String>,
    pub cpu: String,
    pub nproc: u32,
    pub kernel: String,
    /// Debian's xdp-tools version (xdp-filter).
    pub xdp_tools: String,
    /// Interleaved rounds of the per-packet cost (each figure is the median).
    pub rounds: usize,
    /// Repeats per test run.
    pub repeat: u32,
    /// Rounds of the floods.
    pub flood_rounds: usize,
    /// Frames per flood run.
    pub flood_frames: u32,
    /// Said at the top of BENCHMARKS.md (how the file was made, when it was not a run).
    pub note: Option<String>,
}

/// What ran in a per-packet case.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Program {
    /// `ps_floor`: XDP_PASS only.
    Floor,
    /// `ps_bare`: one port lookup, one counter.
    Bare,
    /// `ps_xdp`.
    PsAgent,
    /// xdp-filter attached directly.
    XdpFilter,
    /// xdp-filter behind libxdp's dispatcher.
    XdpFilterDispatcher,
    /// Another program of the bench's object (`PS_BENCH_EXTRA`).
    Extra(String),
}

/// The rule set a case, a load or a flood ran with.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// The PS 8.1.2 matrix.
    Matrix,
    /// The matrix plus generated rules, this many in all (the scale series).
    Rules(usize),
    /// The matrix with one system bound to this many source prefixes.
    SourcePrefixes(usize),
}

impl Policy {
    /// As the tables name it.
    pub fn label(self) -> String {
        match self {
            Self::Matrix => "PS 8.1.2 matrix".into(),
            Self::Rules(n) => format!("{} rules", thousands(n as u64)),
            Self::SourcePrefixes(n) => format!("PS matrix + {} source prefixes", thousands(n as u64)),
        }
    }
}

/// The test frames of the per-packet cases.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Frame {
    Ipv4Allowed,
    Ipv4Dropped,
    Ipv6Allowed,
    Ipv6Dropped,
    ReplyStateless,
    ReplyTracked,
    ForgedReply,
}

impl Frame {
    /// The matrix's frames, in table order.
    pub const ALL: [Frame; 7] = [
        Self::Ipv4Allowed,
        Self::Ipv4Dropped,
        Self::Ipv6Allowed,
        Self::Ipv6Dropped,
        Self::ReplyStateless,
        Self::ReplyTracked,
        Self::ForgedReply,
    ];
    /// The scale series' frames.
    pub const SCALE: [Frame; 3] = [Self::Ipv4Allowed, Self::Ipv4Dropped, Self::Ipv6Allowed];

    pub fn label(self) -> &'static str {
        match self {
            Self::Ipv4Allowed => "IPv4 allowed",
            Self::Ipv4Dropped => "IPv4 dropped",
            Self::Ipv6Allowed => "IPv6 allowed",
            Self::Ipv6Dropped => "IPv6 dropped",
            Self::ReplyStateless => "reply (stateless)",
            Self::ReplyTracked => "reply (stateful, tracked)",
            Self::ForgedReply => "forged reply (stateful)",
        }
    }

    /// Needs the stateful rule set and a tracked flow (only ps-agent runs it).
    pub fn stateful(self) -> bool {
        matches!(self, Self::ReplyTracked | Self::ForgedReply)
    }

    /// The issue's target for ps-agent against the floor, if it sets one.
    pub fn floor_target(self) -> Option<f64> {
        match self {
            Self::Ipv4Allowed | Self::Ipv4Dropped => Some(1.5),
            Self::Ipv6Allowed | Self::Ipv6Dropped => Some(2.0),
            _ => None,
        }
    }
}

/// One per-packet case: a program, its rule set, a frame, and what each round measured.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Case {
    pub program: Program,
    pub policy: Policy,
    pub frame: Frame,
    /// Per round: the thread's CPU time of one test run divided by its repeats, ns.
    pub cpu_ns: Vec<f64>,
    /// Per round: the kernel's own `duration` per repeat, whole ns.
    pub kernel_ns: Vec<f64>,
}

impl Case {
    /// The figure the tables print: the median over the rounds.
    pub fn median_ns(&self) -> f64 {
        median(&self.cpu_ns)
    }
}

/// Compile, load and reload of one rule set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Control {
    pub policy: Policy,
    pub rules: usize,
    pub parse_compile_ms: f64,
    /// Maps, verifier and policy.
    pub load_ms: f64,
    /// Writing the idle generation.
    pub reload_ms: f64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Verified {
    pub program: String,
    pub instructions: u32,
}

/// `VmRSS` of `ps-agent run` with a rule set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Rss {
    pub policy: Policy,
    pub kib: u64,
}

/// xdp-filter's port table in the runs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct XdpFilterSetup {
    /// Destination-port entries written for the matrix (`xdp-filter port P -m dst`).
    pub dst_entries: usize,
    /// Source-port entries (`-m src`).
    pub src_entries: usize,
    /// Seconds the CLI took to add them.
    pub add_s: f64,
    /// Port entries at each rule count of the scale series (one per port: a TCP and a UDP
    /// rule on one port share it).
    pub scale_entries: Vec<(usize, usize)>,
}

/// The receivers of the floods.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Receiver {
    /// `ps_drop`.
    XdpDropOnly,
    /// `ps_xdp` enforcing the matrix.
    PsAgent,
    /// The nftables rule set `ps-agent export` writes (input chain).
    NftablesInput,
    /// An nftables netdev ingress chain with the matrix's inbound ports.
    NftablesNetdev,
    /// The iptables and ip6tables rule sets `ps-agent export` writes.
    Iptables,
    /// `ps_bare`.
    Bare,
}

impl Receiver {
    /// Every receiver, in the order they run.
    pub const ALL: [Receiver; 6] =
        [Self::XdpDropOnly, Self::PsAgent, Self::NftablesInput, Self::NftablesNetdev, Self::Iptables, Self::Bare];

    pub fn label(self) -> &'static str {
        match self {
            Self::XdpDropOnly => "XDP_DROP only",
            Self::PsAgent => "ps-agent",
            Self::NftablesInput => "nftables input (export)",
            Self::NftablesNetdev => "nftables netdev ingress",
            Self::Iptables => "iptables (export)",
            Self::Bare => "bare (port lookup + counter)",
        }
    }
}

/// The floods.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum FloodKind {
    UdpNoRule,
    SynNoRule,
    UdpRandomPorts,
    SynRandomPorts,
    Udp6NoRule,
    Syn6NoRule,
}

impl FloodKind {
    /// Every flood, in the order they run.
    pub const ALL: [FloodKind; 6] = [
        Self::UdpNoRule,
        Self::SynNoRule,
        Self::UdpRandomPorts,
        Self::SynRandomPorts,
        Self::Udp6NoRule,
        Self::Syn6NoRule,
    ];

    /// As a column names the flood the legitimate flow runs under.
    pub fn short_label(self) -> &'static str {
        match self {
            Self::UdpNoRule => "UDP",
            Self::SynNoRule => "TCP SYN",
            _ => self.label(),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::UdpNoRule => "UDP, no rule",
            Self::SynNoRule => "TCP SYN, no rule",
            Self::UdpRandomPorts => "UDP, random ports",
            Self::SynRandomPorts => "TCP SYN, random ports",
            Self::Udp6NoRule => "UDP over IPv6, no rule",
            Self::Syn6NoRule => "TCP SYN over IPv6, no rule",
        }
    }
}

/// One receiver under one flood, generator and receiver on one CPU.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Flood {
    pub receiver: Receiver,
    pub flood: FloodKind,
    /// Frames per round.
    pub frames: u64,
    pub rounds: Vec<FloodRound>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct FloodRound {
    pub wall_s: f64,
    /// The generator thread's CPU time (with the receive processing in its softirq).
    pub cpu_s: f64,
    /// Frames the receiver's own counter saw (`None`: it has none).
    pub counted: Option<u64>,
}

impl Flood {
    /// Median Mpps by the generator thread's CPU time.
    pub fn mpps_cpu(&self) -> f64 {
        median(&self.rounds.iter().map(|r| self.frames as f64 / r.cpu_s / 1e6).collect::<Vec<_>>())
    }

    /// Median Mpps by wall time.
    pub fn mpps_wall(&self) -> f64 {
        median(&self.rounds.iter().map(|r| self.frames as f64 / r.wall_s / 1e6).collect::<Vec<_>>())
    }

    /// Frames counted over frames sent, all rounds (`None`: no counter).
    pub fn counted_ratio(&self) -> Option<f64> {
        if self.rounds.iter().all(|r| r.counted.is_none()) {
            return None;
        }
        let counted: u64 = self.rounds.iter().filter_map(|r| r.counted).sum();
        Some(counted as f64 / (self.frames * self.rounds.len() as u64) as f64)
    }
}

/// One receiver under one flood, the receiver's NAPI on a CPU of its own.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Threaded {
    pub receiver: Receiver,
    pub flood: FloodKind,
    /// Frames sent per round.
    pub frames: u64,
    pub rounds: Vec<ThreadedRound>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct ThreadedRound {
    pub wall_s: f64,
    /// Frames eth0's XDP program saw (the rest were lost in the veth ring).
    pub seen: u64,
    /// Frames the receiver's own counter saw.
    pub counted: Option<u64>,
}

impl Threaded {
    /// Median Mpps eth0's program received.
    pub fn received_mpps(&self) -> f64 {
        median(&self.rounds.iter().map(|r| r.seen as f64 / r.wall_s / 1e6).collect::<Vec<_>>())
    }

    /// Median Mpps the generator sent.
    pub fn sent_mpps(&self) -> f64 {
        median(&self.rounds.iter().map(|r| self.frames as f64 / r.wall_s / 1e6).collect::<Vec<_>>())
    }

    /// Median of counted over seen (`None`: no counter).
    pub fn counted_ratio(&self) -> Option<f64> {
        let v: Vec<f64> =
            self.rounds.iter().filter_map(|r| r.counted.map(|c| c as f64 / r.seen.max(1) as f64)).collect();
        (!v.is_empty()).then(|| median(&v))
    }
}

/// A legitimate TCP flow through one receiver.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Flow {
    pub receiver: Receiver,
    pub rounds: Vec<FlowRound>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct FlowRound {
    /// Gbit/s with no flood.
    pub alone_gbps: f64,
    /// Under each flood of [`FLOW_FLOODS`], in that order.
    pub under: Vec<UnderFlood>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct UnderFlood {
    pub gbps: f64,
    /// Flood frames sent during the measurement.
    pub flood_frames: u64,
    /// How long the measurement lasted, s.
    pub secs: f64,
}

/// The floods the legitimate flow runs under.
pub const FLOW_FLOODS: [FloodKind; 2] = [FloodKind::UdpNoRule, FloodKind::SynNoRule];

impl Flow {
    /// Median Gbit/s alone.
    pub fn alone_gbps(&self) -> f64 {
        median(&self.rounds.iter().map(|r| r.alone_gbps).collect::<Vec<_>>())
    }

    /// Median Gbit/s and flood Mpps under flood `i` of [`FLOW_FLOODS`].
    pub fn under(&self, i: usize) -> (f64, f64) {
        let gbps = median(&self.rounds.iter().map(|r| r.under[i].gbps).collect::<Vec<_>>());
        let mpps = median(
            &self.rounds.iter().map(|r| r.under[i].flood_frames as f64 / r.under[i].secs / 1e6).collect::<Vec<_>>(),
        );
        (gbps, mpps)
    }
}

/// One receiver's UDP flood (to a port no rule names) at each rule count.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct FloodScale {
    pub receiver: Receiver,
    pub points: Vec<ScalePoint>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct ScalePoint {
    pub rules: usize,
    pub frames: u64,
    pub cpu_s: f64,
    pub counted: u64,
}

impl ScalePoint {
    /// Mpps by the generator thread's CPU time.
    pub fn mpps(&self) -> f64 {
        self.frames as f64 / self.cpu_s / 1e6
    }

    pub fn counted_ratio(&self) -> f64 {
        self.counted as f64 / self.frames as f64
    }
}

impl Results {
    /// The per-packet case of `program` with `policy` on `frame`. (xdp-filter and the floor
    /// at a rule count of the scale series are those of xdp-filter's rounds.)
    pub fn case(&self, program: &Program, policy: Policy, frame: Frame) -> Option<&Case> {
        self.per_packet.iter().find(|c| &c.program == program && c.policy == policy && c.frame == frame)
    }

    /// Its median, ns.
    pub fn ns(&self, program: &Program, policy: Policy, frame: Frame) -> Option<f64> {
        self.case(program, policy, frame).map(Case::median_ns)
    }

    /// The flood result of `receiver` under `flood`.
    pub fn flood(&self, receiver: Receiver, flood: FloodKind) -> Option<&Flood> {
        self.floods.iter().find(|f| f.receiver == receiver && f.flood == flood)
    }

    /// The threaded flood result of `receiver` under `flood`.
    pub fn threaded(&self, receiver: Receiver, flood: FloodKind) -> Option<&Threaded> {
        self.threaded.iter().find(|f| f.receiver == receiver && f.flood == flood)
    }

    /// The rule counts of the scale series, ascending.
    pub fn scale_sizes(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .per_packet
            .iter()
            .filter_map(|c| match c.policy {
                Policy::Rules(n) => Some(n),
                _ => None,
            })
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Read a results file.
    pub fn read(path: &Path) -> Self {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("failed to read {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("failed to parse {}: {e}", path.display()))
    }

    /// Write it (pretty, one field a line, so a rerun diffs by number).
    pub fn write(&self, path: &Path) {
        let text = serde_json::to_string_pretty(self).expect("results serialize");
        std::fs::write(path, text + "\n").unwrap_or_else(|e| panic!("failed to write {}: {e}", path.display()));
    }
}

/// The median (NaN for none).
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `n` with a comma every three digits.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_separators() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(thousands(100_000), "100,000");
        assert_eq!(thousands(30), "30");
        assert_eq!(thousands(1_000), "1,000");
    }

    #[test]
    fn a_policy_reads_back_as_written() {
        for p in [Policy::Matrix, Policy::Rules(1_000), Policy::SourcePrefixes(10_000)] {
            let text = serde_json::to_string(&p).unwrap();
            assert_eq!(serde_json::from_str::<Policy>(&text).unwrap(), p, "{text}");
        }
        assert_eq!(serde_json::to_string(&Policy::Rules(30)).unwrap(), r#"{"rules":30}"#);
        assert_eq!(serde_json::to_string(&Frame::ReplyTracked).unwrap(), r#""reply-tracked""#);
    }
}
