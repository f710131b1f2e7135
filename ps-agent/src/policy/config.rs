//! Configuration: the port matrix (policy file) and the site config on top of it.
//!
//! Pure: reads text, validates, and returns typed values. Every error names the file, the
//! line and the field. The shipped PS 8.1.2 matrix is embedded in the binary, so the agent
//! works with no file at all.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use toml::Spanned;

use crate::policy::portspec::{PortSpec, parse_ranges};

/// The shipped Presence Services 8.1.2 matrix.
pub const SHIPPED_MATRIX: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../policy/ps-8.1.2.toml"));
/// How the shipped matrix is named in messages.
pub const SHIPPED_MATRIX_NAME: &str = "<built-in policy/ps-8.1.2.toml>";
/// Where an operator who upgraded the matrix finds what changed.
const UPGRADE_HINT: &str =
    "if the policy was upgraded, `ps-agent matrix diff OLD NEW` shows the rows added, removed and renumbered";
/// Default site config path.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ps-agent/config.toml";

/// A configuration error, for a person at a console.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("failed to read config `{path}`: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Not a file a config can be read from.
    #[error("refusing to read config `{}`: {why}", path.display())]
    NotAConfigFile {
        /// File.
        path: PathBuf,
        /// What it is instead.
        why: String,
    },
    /// TOML syntax or type error.
    #[error("{file}:{line}:{col}: {msg}")]
    Syntax {
        /// File.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        col: usize,
        /// What the TOML parser said.
        msg: String,
    },
    /// A field with an invalid value.
    #[error("{file}:{line}: field `{field}`: {msg}")]
    Field {
        /// File.
        file: String,
        /// 1-based line.
        line: usize,
        /// Field path, e.g. `row[3].destination_port`.
        field: String,
        /// What is wrong and what to do.
        msg: String,
    },
}

/// The largest config or policy file read: the shipped matrix is 15 KB, a site config with
/// 100,000 rules about 9 MB.
pub const MAX_CONFIG_BYTES: u64 = 32 << 20;

/// The text of a config or policy file: a regular file (not a FIFO or a device, which
/// could block a reload or feed it forever) of at most [`MAX_CONFIG_BYTES`]; `/dev/null`
/// reads as the empty config (every default).
pub fn read_config_file(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read as _;
    let read_err = |source| ConfigError::Read { path: path.to_path_buf(), source };
    if std::fs::canonicalize(path).is_ok_and(|p| p == Path::new("/dev/null")) {
        return Ok(String::new());
    }
    let meta = std::fs::metadata(path).map_err(read_err)?;
    let too_big = || ConfigError::NotAConfigFile {
        path: path.to_path_buf(),
        why: format!("larger than {} MiB", MAX_CONFIG_BYTES >> 20),
    };
    if !meta.is_file() {
        let kind = if meta.is_dir() { "a directory" } else { "a FIFO, socket or device" };
        return Err(ConfigError::NotAConfigFile {
            path: path.to_path_buf(),
            why: format!("not a regular file but {kind}"),
        });
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(too_big());
    }
    let mut text = String::new();
    std::fs::File::open(path).and_then(|f| f.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text)).map_err(read_err)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(too_big());
    }
    Ok(text)
}

/// 1-based line and column of byte offset `pos` in `text`.
pub fn line_col(text: &str, pos: usize) -> (usize, usize) {
    let before = &text[..pos.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn syntax(file: &str, text: &str, e: toml::de::Error) -> ConfigError {
    let (line, col) = e.span().map_or((0, 0), |s| line_col(text, s.start));
    ConfigError::Syntax { file: file.to_string(), line, col, msg: e.message().trim().to_string() }
}

fn field<T>(file: &str, text: &str, at: &Spanned<T>, name: impl Into<String>, msg: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        file: file.to_string(),
        line: line_col(text, at.span().start).0,
        field: name.into(),
        msg: msg.into(),
    }
}

/// Transport protocol of a row or rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Transport {
    /// The port-table slot.
    pub fn l4(self) -> ps_common::layout::L4 {
        match self {
            Self::Tcp => ps_common::layout::L4::Tcp,
            Self::Udp => ps_common::layout::L4::Udp,
        }
    }
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        self.l4().as_str()
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Default port state as the matrix gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultState {
    /// Open.
    Open,
    /// Closed (listed because it can be enabled).
    Closed,
    /// Filtered.
    Filtered,
    /// Not given.
    #[serde(rename = "n/a")]
    NotApplicable,
}

/// One row of a port matrix, as the policy file holds it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowFile {
    id: Spanned<String>,
    source_system: String,
    source_port: Spanned<String>,
    destination_system: String,
    destination_port: Spanned<String>,
    #[serde(default)]
    protocol: String,
    transports: Spanned<Vec<Transport>>,
    #[serde(default)]
    application: String,
    optional: bool,
    default_state: DefaultState,
    #[serde(default)]
    management_only: bool,
    #[serde(default)]
    site_ports: Option<Spanned<String>>,
    description: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MatrixFile {
    product: String,
    host_system: String,
    #[serde(default, rename = "row")]
    rows: Vec<RowFile>,
}

/// A validated matrix row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// Stable id, e.g. `ps-04`.
    pub id: String,
    /// Initiating system.
    pub source_system: String,
    /// Source port column.
    pub source_port: PortSpec,
    /// Receiving system.
    pub destination_system: String,
    /// Destination port column.
    pub destination_port: PortSpec,
    /// Protocol column as written (e.g. `TCP/SIP`).
    pub protocol: String,
    /// Transports.
    pub transports: Vec<Transport>,
    /// Application protocol (e.g. `SIP`).
    pub application: String,
    /// The site may enable/disable it.
    pub optional: bool,
    /// Default state.
    pub default_state: DefaultState,
    /// Bound to the management IP: applies on the management interface only.
    pub management_only: bool,
    /// Default ports for a site-supplied destination port.
    pub site_ports: Option<Vec<(u16, u16)>>,
    /// Description.
    pub description: String,
    /// Line in the policy file.
    pub line: usize,
}

impl Row {
    /// Whether the row is on when the site says nothing: optional rows whose default
    /// state is closed are off; everything else is on.
    pub fn on_by_default(&self) -> bool {
        !(self.optional && self.default_state == DefaultState::Closed)
    }
}

/// A validated port matrix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Matrix {
    /// Product name.
    pub product: String,
    /// The system this host is (rows to/from it are enforced).
    pub host_system: String,
    /// Rows in document order.
    pub rows: Vec<Row>,
    /// Where it was read from.
    pub origin: String,
}

impl Matrix {
    /// The shipped Presence Services 8.1.2 matrix.
    pub fn shipped() -> Self {
        Self::parse(SHIPPED_MATRIX, SHIPPED_MATRIX_NAME).expect("the shipped matrix is valid")
    }

    /// Read and validate a policy file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(&read_config_file(path)?, &path.display().to_string())
    }

    /// Validate policy-file text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let m: MatrixFile = toml::from_str(text).map_err(|e| syntax(file, text, e))?;
        if m.rows.is_empty() {
            return Err(ConfigError::Field {
                file: file.into(),
                line: 1,
                field: "row".into(),
                msg: "no rows: a policy must list the flows it admits ([[row]] tables)".into(),
            });
        }
        let mut rows = Vec::with_capacity(m.rows.len());
        let mut seen = BTreeMap::new();
        for (i, r) in m.rows.into_iter().enumerate() {
            let at = |f: &str| format!("row[{i}].{f}");
            if let Some(prev) = seen.insert(r.id.get_ref().clone(), i) {
                return Err(field(
                    file,
                    text,
                    &r.id,
                    at("id"),
                    format!("duplicate id `{}` (also row[{prev}])", r.id.get_ref()),
                ));
            }
            let spec = |s: &Spanned<String>, name: &str| {
                PortSpec::parse(s.get_ref()).map_err(|e| field(file, text, s, at(name), e.to_string()))
            };
            let source_port = spec(&r.source_port, "source_port")?;
            let destination_port = spec(&r.destination_port, "destination_port")?;
            if r.transports.get_ref().is_empty() {
                return Err(field(file, text, &r.transports, at("transports"), "at least one of \"tcp\", \"udp\""));
            }
            let site_ports = match &r.site_ports {
                Some(s) => Some(parse_ranges(s.get_ref()).map_err(|(tok, why)| {
                    field(file, text, s, at("site_ports"), format!("invalid port `{tok}`: {why}"))
                })?),
                None => None,
            };
            rows.push(Row {
                line: line_col(text, r.id.span().start).0,
                id: r.id.into_inner(),
                source_system: r.source_system,
                source_port,
                destination_system: r.destination_system,
                destination_port,
                protocol: r.protocol,
                transports: r.transports.into_inner(),
                application: r.application,
                optional: r.optional,
                default_state: r.default_state,
                management_only: r.management_only,
                site_ports,
                description: r.description,
            });
        }
        Ok(Self { product: m.product, host_system: m.host_system, rows, origin: file.to_string() })
    }

    /// The row with this id.
    pub fn row(&self, id: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.id == id)
    }
}

/// Enforcement mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Drop what the matrix does not allow.
    #[default]
    Enforce,
    /// Pass everything; count and log what would be dropped.
    DryRun,
}

impl Mode {
    /// `enforce` or `dry-run`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::DryRun => "dry-run",
        }
    }

    /// The word the programs read (`State::mode`).
    pub fn word(self) -> u32 {
        ps_common::layout::mode_word(self == Self::DryRun)
    }

    /// The mode a `State::mode` word means.
    pub fn from_word(word: u32) -> Self {
        if ps_common::layout::is_dry_run(word) { Self::DryRun } else { Self::Enforce }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Direction of a site rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Remote systems connect to this host's port.
    Inbound,
    /// This host connects to a remote port; its replies are admitted.
    Outbound,
}

impl Direction {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}

/// Lock-out protection.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Failsafe {
    /// On by default; switching it off must be explicit.
    pub enabled: bool,
    /// Inbound SSH ports.
    pub ssh_ports: Vec<u16>,
}

impl Default for Failsafe {
    fn default() -> Self {
        Self { enabled: true, ssh_ports: vec![22] }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RowsFile {
    #[serde(default)]
    enable: Vec<Spanned<String>>,
    #[serde(default)]
    disable: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SiteRuleFile {
    id: Spanned<String>,
    transport: Transport,
    ports: Spanned<String>,
    direction: Direction,
    #[serde(default)]
    interfaces: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    description: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SiteFile {
    policy: Option<PathBuf>,
    interfaces: Option<Spanned<Vec<String>>>,
    management_interface: Option<String>,
    mode: Option<Mode>,
    xdp_mode: Option<XdpModeName>,
    #[serde(default)]
    allow_ping: bool,
    failsafe: Option<Spanned<Failsafe>>,
    #[serde(default)]
    rows: RowsFile,
    #[serde(default)]
    ports: BTreeMap<String, Spanned<String>>,
    #[serde(default, rename = "rule")]
    rules: Vec<SiteRuleFile>,
    reply_tracking: Option<ReplyTracking>,
    egress: Option<EgressMode>,
    flow_table_size: Option<Spanned<u32>>,
    timeouts: Option<Spanned<Timeouts>>,
    metrics: Option<Spanned<String>>,
    metrics_web_config: Option<PathBuf>,
    on_exit: Option<OnExit>,
    #[serde(default)]
    systems: BTreeMap<String, Spanned<Vec<Spanned<String>>>>,
}

/// An address prefix (IPv4 or IPv6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    /// 4 or 6.
    pub family: u8,
    /// Address (IPv4 in the first 4 bytes), host bits zero.
    pub addr: [u8; 16],
    /// Prefix length.
    pub len: u8,
}

impl Cidr {
    /// Parse `a.b.c.d/n`, `x::y/n`, or a bare address (a host prefix).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (a, l) = match text.trim().split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text.trim(), None),
        };
        let ip: std::net::IpAddr =
            a.parse().map_err(|_| format!("`{text}` is not an IPv4 or IPv6 address or prefix"))?;
        let (family, max, bytes) = match ip {
            std::net::IpAddr::V4(v) => {
                let mut b = [0u8; 16];
                b[..4].copy_from_slice(&v.octets());
                (4u8, 32u8, b)
            }
            std::net::IpAddr::V6(v) => (6, 128, v.octets()),
        };
        let len = match l {
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(|| format!("`{text}`: prefix length must be 0..={max}"))?,
            None => max,
        };
        let c = Self { family, addr: bytes, len };
        if c.masked() != c {
            let m = c.masked();
            return Err(format!("`{text}` has host bits set; did you mean {m}?"));
        }
        Ok(c)
    }

    /// The prefix with host bits cleared.
    pub fn masked(&self) -> Self {
        let mut addr = self.addr;
        for (i, b) in addr.iter_mut().enumerate() {
            let keep = (self.len as usize).saturating_sub(i * 8).min(8);
            *b &= if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
        }
        Self { addr, ..*self }
    }

    /// Whether `other` lies inside this prefix.
    pub fn contains(&self, other: &Cidr) -> bool {
        self.family == other.family && other.len >= self.len && Cidr { len: self.len, ..*other }.masked() == *self
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.family == 4 {
            let a = std::net::Ipv4Addr::new(self.addr[0], self.addr[1], self.addr[2], self.addr[3]);
            write!(f, "{a}/{}", self.len)
        } else {
            write!(f, "{}/{}", std::net::Ipv6Addr::from(self.addr), self.len)
        }
    }
}

/// What happens to the programs when the agent exits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnExit {
    /// Detach: nothing is filtered while no agent runs.
    #[default]
    Detach,
    /// Keep enforcing: the links stay pinned, and the next agent takes them over atomically.
    Keep,
}

/// How replies to outbound rows are admitted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ReplyTracking {
    /// Only replies to flows the host opened (TC egress records them in a flow table).
    #[default]
    Stateful,
    /// Any packet from the row's remote port to the ephemeral range (TCP with ACK).
    Stateless,
}

impl ReplyTracking {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stateful => "stateful",
            Self::Stateless => "stateless",
        }
    }
}

impl std::fmt::Display for ReplyTracking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// What happens to egress traffic no row allows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EgressMode {
    /// Count it.
    #[default]
    Count,
    /// Drop it.
    Enforce,
}

/// Flow idle timeouts, seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// A TCP SYN without answer.
    pub tcp_syn: u32,
    /// An established TCP connection.
    pub tcp_established: u32,
    /// After a FIN (a RST ends the flow at once).
    pub tcp_closing: u32,
    /// UDP.
    pub udp: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self { tcp_syn: 30, tcp_established: 4 * 3600, tcp_closing: 30, udp: 120 }
    }
}

/// XDP attach mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum XdpModeName {
    /// Native (driver) mode, falling back to generic where the driver has no XDP.
    #[default]
    Native,
    /// Generic (skb) mode.
    Skb,
}

/// A site-specific extra rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteRule {
    /// Id, unique among rows and rules.
    pub id: String,
    /// Transport.
    pub transport: Transport,
    /// Ports (remote service ports for outbound rules).
    pub ports: Vec<(u16, u16)>,
    /// Direction.
    pub direction: Direction,
    /// Interfaces it applies on (`None` = every enforced interface).
    pub interfaces: Option<Vec<String>>,
    /// Description.
    pub description: String,
}

/// The site config, validated against the matrix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Site {
    /// Policy file, if not the shipped matrix.
    pub policy: Option<PathBuf>,
    /// Interfaces to enforce on (`None`: eth0 and eth1 where present).
    pub interfaces: Option<Vec<String>>,
    /// The management interface (rows bound to the management IP apply only there).
    pub management_interface: String,
    /// Mode.
    pub mode: Mode,
    /// XDP attach mode.
    pub xdp_mode: XdpModeName,
    /// Let ICMP echo requests in.
    pub allow_ping: bool,
    /// Failsafe.
    pub failsafe: Failsafe,
    /// Optional rows switched on.
    pub enable: Vec<String>,
    /// Rows switched off.
    pub disable: Vec<String>,
    /// Port overrides by row id.
    pub ports: BTreeMap<String, Vec<(u16, u16)>>,
    /// Extra rules.
    pub rules: Vec<SiteRule>,
    /// Reply admission.
    pub reply_tracking: ReplyTracking,
    /// Egress policy.
    pub egress: EgressMode,
    /// Flow table entries.
    pub flow_table_size: u32,
    /// Flow timeouts.
    pub timeouts: Timeouts,
    /// What happens to the programs when the agent exits.
    pub on_exit: OnExit,
    /// Systems bound to addresses (name as in the matrix → prefixes).
    pub systems: BTreeMap<String, Vec<Cidr>>,
    /// Where it was read from.
    pub origin: String,
    /// Things the operator should clean up (e.g. a disabled row the matrix no longer has).
    pub warnings: Vec<String>,
    /// Serve OpenMetrics here (`ps-agent run --metrics` overrides it).
    pub metrics: Option<std::net::SocketAddr>,
    /// TLS and basic auth of the metrics endpoint (`crate::observe::metrics::web_config`; relative
    /// to the site config once loaded).
    pub metrics_web_config: Option<PathBuf>,
}

impl Default for Site {
    fn default() -> Self {
        Self {
            policy: None,
            interfaces: None,
            management_interface: "eth0".into(),
            mode: Mode::Enforce,
            xdp_mode: XdpModeName::Native,
            allow_ping: false,
            failsafe: Failsafe::default(),
            enable: vec![],
            disable: vec![],
            ports: BTreeMap::new(),
            rules: vec![],
            reply_tracking: ReplyTracking::default(),
            egress: EgressMode::default(),
            flow_table_size: ps_common::layout::DEFAULT_FLOW_TABLE_SIZE,
            timeouts: Timeouts::default(),
            on_exit: OnExit::default(),
            systems: BTreeMap::new(),
            origin: "<defaults>".into(),
            warnings: vec![],
            metrics: None,
            metrics_web_config: None,
        }
    }
}

/// Site config and the matrix it applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The matrix.
    pub matrix: Matrix,
    /// The site's choices.
    pub site: Site,
}

impl Config {
    /// Defaults: the shipped matrix, no site config.
    pub fn shipped() -> Self {
        Self { matrix: Matrix::shipped(), site: Site::default() }
    }

    /// Load a site config (and the policy it names). `None`: the default path if it
    /// exists, else the shipped defaults.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => PathBuf::from(DEFAULT_CONFIG_PATH),
            None => return Ok(Self::shipped()),
        };
        let text = read_config_file(&path)?;
        let file = path.display().to_string();
        let policy_path = peek_policy(&text, &file)?.map(|p| match p.is_relative() {
            true => path.parent().unwrap_or(Path::new(".")).join(p),
            false => p,
        });
        let matrix = match &policy_path {
            Some(p) => Matrix::load(p)?,
            None => Matrix::shipped(),
        };
        let mut site = Site::parse(&text, &file, &matrix)?;
        site.policy = policy_path;
        let dir = path.parent().unwrap_or(Path::new("."));
        site.metrics_web_config = site.metrics_web_config.map(|p| if p.is_relative() { dir.join(p) } else { p });
        Ok(Self { matrix, site })
    }
}

/// What the command line overrides in a config (`run`, `check`, `export`, `explain`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// Interfaces (replace the config's; empty: keep them).
    pub ifaces: Vec<String>,
    /// Force dry-run.
    pub dry_run: bool,
    /// Force an XDP mode.
    pub xdp_mode: Option<XdpModeName>,
}

impl Config {
    /// [`Config::load`], then the command line's overrides applied.
    pub fn load_with(path: Option<&Path>, o: &Overrides) -> Result<Self, ConfigError> {
        let mut cfg = Self::load(path)?;
        if !o.ifaces.is_empty() {
            cfg.site.interfaces = Some(o.ifaces.clone());
        }
        if o.dry_run {
            cfg.site.mode = Mode::DryRun;
        }
        if let Some(m) = o.xdp_mode {
            cfg.site.xdp_mode = m;
        }
        Ok(cfg)
    }
}

fn peek_policy(text: &str, file: &str) -> Result<Option<PathBuf>, ConfigError> {
    let f: SiteFile = toml::from_str(text).map_err(|e| syntax(file, text, e))?;
    Ok(f.policy)
}

impl Site {
    /// Validate site-config text against `matrix`.
    pub fn parse(text: &str, file: &str, matrix: &Matrix) -> Result<Self, ConfigError> {
        let f: SiteFile = toml::from_str(text).map_err(|e| syntax(file, text, e))?;
        let p = SiteParser { file, text, matrix };
        let RowChoice { enable, disable, warnings } = p.rows(&f.rows)?;
        Ok(Self {
            on_exit: f.on_exit.unwrap_or_default(),
            systems: p.systems(&f.systems)?,
            metrics: p.metrics(f.metrics.as_ref())?,
            metrics_web_config: f.metrics_web_config,
            reply_tracking: f.reply_tracking.unwrap_or_default(),
            egress: f.egress.unwrap_or_default(),
            flow_table_size: p.flow_table_size(f.flow_table_size)?,
            timeouts: p.timeouts(f.timeouts)?,
            policy: f.policy,
            interfaces: p.interfaces(f.interfaces)?,
            management_interface: f.management_interface.unwrap_or_else(|| "eth0".into()),
            mode: f.mode.unwrap_or_default(),
            xdp_mode: f.xdp_mode.unwrap_or_default(),
            allow_ping: f.allow_ping,
            failsafe: p.failsafe(f.failsafe)?,
            enable,
            disable,
            ports: p.ports(&f.ports)?,
            rules: p.rules(&f.rules)?,
            origin: file.to_string(),
            warnings,
        })
    }
}

/// `[rows]` as read: rows enabled, rows disabled, and warnings about it.
struct RowChoice {
    enable: Vec<String>,
    disable: Vec<String>,
    warnings: Vec<String>,
}

/// Reads the parts of a site config file against the matrix it configures; every error
/// names the file, the line and the field.
struct SiteParser<'a> {
    file: &'a str,
    text: &'a str,
    matrix: &'a Matrix,
}

impl SiteParser<'_> {
    fn field<T>(&self, at: &Spanned<T>, name: impl Into<String>, msg: impl Into<String>) -> ConfigError {
        field(self.file, self.text, at, name, msg)
    }

    /// "no row `id` in ... (ids run ..)".
    fn missing(&self, id: &str) -> String {
        let m = self.matrix;
        format!(
            "no row `{id}` in {} (ids run {}..{})",
            m.origin,
            m.rows.first().map_or("", |r| r.id.as_str()),
            m.rows.last().map_or("", |r| r.id.as_str()),
        )
    }

    /// `[rows]`: enable and disable lists, and warnings for disabled rows the matrix lacks.
    fn rows(&self, rows: &RowsFile) -> Result<RowChoice, ConfigError> {
        let mut enable = Vec::new();
        for id in &rows.enable {
            if self.matrix.row(id.get_ref()).is_none() {
                let msg = format!("{}; {UPGRADE_HINT}", self.missing(id.get_ref()));
                return Err(self.field(id, "rows.enable", msg));
            }
            if rows.disable.iter().any(|d| d.get_ref() == id.get_ref()) {
                return Err(self.field(id, "rows.enable", format!("`{}` is both enabled and disabled", id.get_ref())));
            }
            enable.push(id.get_ref().clone());
        }
        // Disabling a row the matrix no longer has is moot (nothing to close): after an
        // upgrade it must not stop the agent, but the operator should clean it up.
        let (mut disable, mut warnings) = (Vec::new(), Vec::new());
        for id in &rows.disable {
            if self.matrix.row(id.get_ref()).is_some() {
                disable.push(id.get_ref().clone());
                continue;
            }
            warnings.push(format!(
                "{}:{}: field `rows.disable`: {}; ignored (nothing to close) — remove it, or check that the row was not renumbered: {UPGRADE_HINT}",
                self.file,
                line_col(self.text, id.span().start).0,
                self.missing(id.get_ref())
            ));
        }
        Ok(RowChoice { enable, disable, warnings })
    }

    /// `[ports]`: only configurable `(C)` and site-supplied ports can be set.
    fn ports(
        &self,
        ports: &BTreeMap<String, Spanned<String>>,
    ) -> Result<BTreeMap<String, Vec<(u16, u16)>>, ConfigError> {
        let mut out = BTreeMap::new();
        for (id, spec) in ports {
            let name = format!("ports.{id}");
            let Some(row) = self.matrix.row(id) else {
                return Err(self.field(spec, name, format!("{}; {UPGRADE_HINT}", self.missing(id))));
            };
            let overridable =
                matches!(row.destination_port, PortSpec::Ports { configurable: true, .. } | PortSpec::SiteSupplied(_));
            if !overridable {
                let msg = format!(
                    "row `{id}` has a fixed port ({}); only configurable `(C)` and site-supplied ports can be overridden — add a [[rule]] instead",
                    row.destination_port
                );
                return Err(self.field(spec, name, msg));
            }
            let ranges = parse_ranges(spec.get_ref())
                .map_err(|(tok, why)| self.field(spec, &name, format!("invalid port `{tok}`: {why}")))?;
            out.insert(id.clone(), ranges);
        }
        Ok(out)
    }

    /// `[[rule]]`: ids unique (and not a row's), ports valid, interfaces not empty.
    fn rules(&self, rules: &[SiteRuleFile]) -> Result<Vec<SiteRule>, ConfigError> {
        let mut out = Vec::new();
        // A set, not a scan of the rules before: sites with 100,000 rules parse in
        // milliseconds, not minutes.
        let mut seen = std::collections::HashSet::new();
        for (i, r) in rules.iter().enumerate() {
            let id = r.id.get_ref();
            if self.matrix.row(id).is_some() || !seen.insert(id.as_str()) {
                return Err(self.field(&r.id, format!("rule[{i}].id"), format!("duplicate id `{id}`")));
            }
            let ports = parse_ranges(r.ports.get_ref()).map_err(|(tok, why)| {
                self.field(&r.ports, format!("rule[{i}].ports"), format!("invalid port `{tok}`: {why}"))
            })?;
            if let Some(ifs) = &r.interfaces
                && ifs.get_ref().is_empty()
            {
                let msg = "empty list; omit the field to mean every interface";
                return Err(self.field(ifs, format!("rule[{i}].interfaces"), msg));
            }
            out.push(SiteRule {
                id: id.clone(),
                transport: r.transport,
                ports,
                direction: r.direction,
                interfaces: r.interfaces.as_ref().map(|s| s.get_ref().clone()),
                description: r.description.clone(),
            });
        }
        Ok(out)
    }

    fn interfaces(&self, ifs: Option<Spanned<Vec<String>>>) -> Result<Option<Vec<String>>, ConfigError> {
        match ifs {
            Some(ifs) if ifs.get_ref().is_empty() => {
                Err(self.field(&ifs, "interfaces", "empty list; omit the field to mean eth0 and eth1"))
            }
            ifs => Ok(ifs.map(Spanned::into_inner)),
        }
    }

    /// `[failsafe]`: when on, it must admit SSH on real ports.
    fn failsafe(&self, f: Option<Spanned<Failsafe>>) -> Result<Failsafe, ConfigError> {
        let Some(f) = f else { return Ok(Failsafe::default()) };
        let ports = &f.get_ref().ssh_ports;
        if f.get_ref().enabled && ports.is_empty() {
            let msg =
                "empty: the failsafe would admit no SSH; list your SSH ports (default [22]) or set enabled = false";
            return Err(self.field(&f, "failsafe.ssh_ports", msg));
        }
        if f.get_ref().enabled && ports.contains(&0) {
            return Err(self.field(&f, "failsafe.ssh_ports", "port 0 is no port; list your SSH ports (default [22])"));
        }
        Ok(f.into_inner())
    }

    /// `[timeouts]`: every flow must expire.
    fn timeouts(&self, t: Option<Spanned<Timeouts>>) -> Result<Timeouts, ConfigError> {
        let Some(t) = t else { return Ok(Timeouts::default()) };
        let v = t.get_ref();
        for (name, secs) in [
            ("tcp_syn", v.tcp_syn),
            ("tcp_established", v.tcp_established),
            ("tcp_closing", v.tcp_closing),
            ("udp", v.udp),
        ] {
            if secs == 0 {
                let msg = "0 seconds: a flow would never be admitted (or never expire); give at least 1";
                return Err(self.field(&t, format!("timeouts.{name}"), msg));
            }
        }
        Ok(t.into_inner())
    }

    fn flow_table_size(&self, n: Option<Spanned<u32>>) -> Result<u32, ConfigError> {
        match n {
            Some(n) if *n.get_ref() < 1024 || *n.get_ref() > 1 << 24 => {
                Err(self.field(&n, "flow_table_size", "must be between 1024 and 16777216 entries"))
            }
            Some(n) => Ok(n.into_inner()),
            None => Ok(ps_common::layout::DEFAULT_FLOW_TABLE_SIZE),
        }
    }

    /// `[systems]`: remote systems of the matrix bound to address prefixes.
    fn systems(
        &self,
        systems: &BTreeMap<String, Spanned<Vec<Spanned<String>>>>,
    ) -> Result<BTreeMap<String, Vec<Cidr>>, ConfigError> {
        if let Some((_, first)) = systems.iter().next()
            && systems.len() > ps_common::layout::MAX_SYSTEMS
        {
            let msg = format!("at most {} systems can be bound", ps_common::layout::MAX_SYSTEMS);
            return Err(self.field(first, "systems", msg));
        }
        let mut out = BTreeMap::new();
        for (name, list) in systems {
            let fname = format!("systems.\"{name}\"");
            self.remote_system(name, list, &fname)?;
            if list.get_ref().is_empty() {
                return Err(self.field(list, fname, "empty list; remove the entry to leave the system unbound"));
            }
            let cidrs = list
                .get_ref()
                .iter()
                .map(|c| Cidr::parse(c.get_ref()).map_err(|msg| self.field(c, fname.clone(), msg)))
                .collect::<Result<Vec<_>, _>>()?;
            out.insert(name.clone(), cidrs);
        }
        Ok(out)
    }

    /// `name` must be a remote system of the matrix, or the host system itself where the
    /// matrix has host-to-host rows: there it names the cluster peers.
    fn remote_system<T>(&self, name: &str, at: &Spanned<T>, fname: &str) -> Result<(), ConfigError> {
        let m = self.matrix;
        let is_host = |n: &str| n.eq_ignore_ascii_case(&m.host_system);
        let has_peers = m.rows.iter().any(|r| is_host(&r.source_system) && is_host(&r.destination_system));
        let known = m
            .rows
            .iter()
            .any(|r| r.source_system.eq_ignore_ascii_case(name) || r.destination_system.eq_ignore_ascii_case(name));
        if known && (!is_host(name) || has_peers) {
            return Ok(());
        }
        let mut names: Vec<String> = m
            .rows
            .iter()
            .flat_map(|r| [r.source_system.as_str(), r.destination_system.as_str()])
            .filter(|n| !is_host(n))
            .map(str::to_string)
            .collect();
        if has_peers {
            names.push(format!("{} (the cluster peers)", m.host_system));
        }
        names.sort();
        names.dedup();
        let msg = format!("no remote system `{name}` in {}; systems: {}", m.origin, names.join(", "));
        Err(self.field(at, fname, msg))
    }

    fn metrics(&self, m: Option<&Spanned<String>>) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        let Some(m) = m else { return Ok(None) };
        let addr = m.get_ref().parse::<std::net::SocketAddr>().map_err(|e| {
            let msg = format!("invalid address `{}`: {e}; write IP:PORT, e.g. \"127.0.0.1:9487\"", m.get_ref());
            self.field(m, "metrics", msg)
        })?;
        Ok(Some(addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_matrix_has_all_27_rows() {
        let m = Matrix::shipped();
        assert_eq!(m.rows.len(), 27);
        assert_eq!(m.rows[0].id, "ps-01");
        assert_eq!(m.rows[26].id, "ps-27");
        assert_eq!(m.host_system, "Presence Services");
        let closed: Vec<_> = m.rows.iter().filter(|r| !r.on_by_default()).map(|r| r.id.as_str()).collect();
        assert_eq!(closed, ["ps-06", "ps-07", "ps-08", "ps-09", "ps-18"]);
        let mgmt: Vec<_> = m.rows.iter().filter(|r| r.management_only).map(|r| r.id.as_str()).collect();
        assert_eq!(mgmt, ["ps-13", "ps-14", "ps-19", "ps-20", "ps-21"]);
        assert_eq!(
            m.row("ps-26").unwrap().site_ports.as_deref(),
            Some(&[(389, 389), (636, 636), (3268, 3268), (3269, 3269)][..])
        );
    }

    #[test]
    fn site_errors_name_file_line_and_field() {
        let m = Matrix::shipped();
        let text = "interfaces = [\"eth0\"]\n\n[ports]\nps-10 = \"52x22\"\n";
        let e = Site::parse(text, "site.toml", &m).unwrap_err().to_string();
        assert_eq!(e, "site.toml:4: field `ports.ps-10`: invalid port `52x22`: not a number");

        let text = "[rows]\nenable = [\"ps-99\"]\n";
        let e = Site::parse(text, "site.toml", &m).unwrap_err().to_string();
        assert!(e.starts_with("site.toml:2: field `rows.enable`: no row `ps-99`"), "{e}");

        let text = "[ports]\nps-01 = \"8443\"\n";
        let e = Site::parse(text, "site.toml", &m).unwrap_err().to_string();
        assert!(e.contains("fixed port (443)"), "{e}");

        let text = "mode = \"sometimes\"\n";
        let e = Site::parse(text, "site.toml", &m).unwrap_err().to_string();
        assert!(e.starts_with("site.toml:1:8: unknown variant `sometimes`"), "{e}");

        let text = "interfaces = [\"eth0\"]\nbogus = 1\n";
        let e = Site::parse(text, "site.toml", &m).unwrap_err().to_string();
        assert!(e.starts_with("site.toml:2:1: unknown field `bogus`"), "{e}");
    }

    #[test]
    fn settings_that_admit_nothing_or_never_time_out_are_refused() {
        let m = Matrix::shipped();
        let err = |text: &str| Site::parse(text, "site.toml", &m).unwrap_err().to_string();
        let e = err("[failsafe]\nssh_ports = []\n");
        assert!(e.starts_with("site.toml:1: field `failsafe.ssh_ports`: empty"), "{e}");
        let e = err("[failsafe]\nssh_ports = [22, 0]\n");
        assert!(e.starts_with("site.toml:1: field `failsafe.ssh_ports`: port 0"), "{e}");
        // Off, the list does not matter.
        assert!(Site::parse("[failsafe]\nenabled = false\nssh_ports = []\n", "site.toml", &m).is_ok());
        let e = err("[timeouts]\ntcp_established = 0\n");
        assert!(e.starts_with("site.toml:1: field `timeouts.tcp_established`: 0"), "{e}");
        let e = Matrix::parse("product = \"P\"\nhost_system = \"H\"\n", "p.toml").unwrap_err().to_string();
        assert!(e.starts_with("p.toml:1: field `row`: no rows"), "{e}");
    }

    #[test]
    fn configs_come_from_regular_files_of_bounded_size() {
        let e = read_config_file(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(e.contains("not a regular file but a FIFO, socket or device"), "{e}");
        assert_eq!(read_config_file(Path::new("/dev/null")).unwrap(), "", "the empty config");
        let dir = std::env::temp_dir().join(format!("ps-agent-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo.toml");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid path; a FIFO nobody writes would block a reader forever.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = Config::load(Some(&fifo)).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let link = dir.join("zero.toml");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert!(Config::load(Some(&link)).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unknown_row_ids_after_an_upgrade() {
        let m = Matrix::shipped();
        // Disabling a row that is gone: a warning naming the row, not an error.
        let s = Site::parse("[rows]\ndisable = [\"ps-27\", \"ps-28\"]\n", "site.toml", &m).unwrap();
        assert_eq!(s.disable, ["ps-27"]);
        assert_eq!(s.warnings.len(), 1);
        assert!(s.warnings[0].starts_with("site.toml:2: field `rows.disable`: no row `ps-28`"), "{}", s.warnings[0]);
        assert!(s.warnings[0].contains("matrix diff"));
        // Enabling or overriding one stays an error: a flow the site needs would be missing.
        let e = Site::parse("[ports]\nps-28 = \"5223\"\n", "site.toml", &m).unwrap_err().to_string();
        assert!(e.starts_with("site.toml:2: field `ports.ps-28`: no row `ps-28`") && e.contains("matrix diff"), "{e}");
    }

    #[test]
    fn matrix_errors_name_row_field() {
        let text = SHIPPED_MATRIX.replacen("destination_port = \"5062\"", "destination_port = \"50620000\"", 1);
        let e = Matrix::parse(&text, "m.toml").unwrap_err().to_string();
        assert!(e.contains("field `row[3].destination_port`: invalid port `50620000`"), "{e}");
        let line = e.split(':').nth(1).unwrap().parse::<usize>().unwrap();
        assert_eq!(text.lines().nth(line - 1).unwrap(), "destination_port = \"50620000\"");
    }

    #[test]
    fn systems_bind_addresses() {
        let m = Matrix::shipped();
        let text = "[systems]\n\"Session Manager\" = [\"198.18.0.2/32\", \"fd00::/64\"]\n\"aes\" = [\"10.0.0.0/8\"]\n";
        let s = Site::parse(text, "s.toml", &m).unwrap();
        assert_eq!(s.systems["Session Manager"].len(), 2);
        assert_eq!(s.systems["Session Manager"][1].to_string(), "fd00::/64");
        let e =
            Site::parse("[systems]\n\"Sesion Manager\" = [\"198.18.0.2\"]\n", "s.toml", &m).unwrap_err().to_string();
        assert!(
            e.starts_with("s.toml:2: field `systems.\"Sesion Manager\"`: no remote system `Sesion Manager`"),
            "{e}"
        );
        let e = Site::parse("[systems]\nAES = [\"10.1.2.3/8\"]\n", "s.toml", &m).unwrap_err().to_string();
        assert!(e.contains("has host bits set; did you mean 10.0.0.0/8?"), "{e}");
        let e = Site::parse("[systems]\nAES = [\"10.0.0.0/33\"]\n", "s.toml", &m).unwrap_err().to_string();
        assert!(e.contains("prefix length must be 0..=32"), "{e}");
        let a = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(a.contains(&Cidr::parse("10.1.0.0/16").unwrap()) && !a.contains(&Cidr::parse("11.0.0.0/16").unwrap()));
    }

    #[test]
    fn systems_bind_cluster_peers() {
        // The matrix's host system names the cluster peers in its host-to-host rows
        // (ps-20..23); binding it restricts those rows to the cluster's addresses.
        let m = Matrix::shipped();
        let text = "[systems]\n\"Presence Services\" = [\"198.18.10.11/32\", \"198.18.10.12/32\"]\n";
        let s = Site::parse(text, "s.toml", &m).unwrap();
        assert_eq!(s.systems["Presence Services"].len(), 2);
        let e = Site::parse("[systems]\nNobody = [\"198.18.0.2\"]\n", "s.toml", &m).unwrap_err().to_string();
        assert!(e.contains("systems: AES, ") && e.contains("Presence Services (the cluster peers)"), "{e}");
    }

    #[test]
    fn tracking_options() {
        let m = Matrix::shipped();
        let text =
            "reply_tracking = \"stateless\"\negress = \"enforce\"\nflow_table_size = 4096\n[timeouts]\nudp = 30\n";
        let s = Site::parse(text, "s.toml", &m).unwrap();
        assert_eq!(
            (s.reply_tracking, s.egress, s.flow_table_size),
            (ReplyTracking::Stateless, EgressMode::Enforce, 4096)
        );
        assert_eq!(s.timeouts, Timeouts { udp: 30, ..Timeouts::default() });
        let e = Site::parse("flow_table_size = 10\n", "s.toml", &m).unwrap_err().to_string();
        assert_eq!(e, "s.toml:1: field `flow_table_size`: must be between 1024 and 16777216 entries");
    }

    #[test]
    fn full_site_config_parses() {
        let m = Matrix::shipped();
        let text = r#"
interfaces = ["eth0", "eth1"]
management_interface = "eth1"
mode = "dry-run"
allow_ping = true
[failsafe]
enabled = false
[rows]
enable = ["ps-06"]
disable = ["ps-27"]
[ports]
ps-10 = "5223"
ps-26 = "636, 3269"
[[rule]]
id = "site-snmp"
transport = "udp"
ports = "161"
direction = "inbound"
interfaces = ["eth0"]
description = "SNMP from the NMS"
"#;
        let s = Site::parse(text, "s.toml", &m).unwrap();
        assert_eq!(s.reply_tracking, ReplyTracking::Stateful, "the default");
        assert_eq!(s.timeouts, Timeouts::default());
        assert_eq!(s.mode, Mode::DryRun);
        assert_eq!(s.management_interface, "eth1");
        assert!(!s.failsafe.enabled);
        assert_eq!(s.ports["ps-26"], vec![(636, 636), (3269, 3269)]);
        assert_eq!(s.rules[0].ports, vec![(161, 161)]);
    }
}
