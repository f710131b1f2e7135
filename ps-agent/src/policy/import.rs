//! Import: an Avaya port matrix, as text, → a policy file.
//!
//! Avaya publishes a port matrix for every product in one layout. Copying its tables out
//! of the PDF/DOCX gives tab-separated rows between page furniture: repeated
//! "Avaya – Proprietary" footers, repeated two-line table headers, table titles, section
//! headings, notes, and an often empty "Port Changes" table. This module finds every port
//! table, keeps rows that continue across page breaks, and reads each row the way
//! [`crate::policy::config`] wants it. Pure: text in, [`Import`] out; `main.rs` does the file I/O.
//!
//! Nothing is dropped silently: a row that cannot be interpreted becomes a [`Problem`]
//! with its line number and text (and keeps its row number, so the ids of the rows after
//! it do not move), and everything that was joined or set aside is listed in
//! [`Import::notes`].

use std::fmt::Write as _;

use serde::Serialize;

use crate::{
    policy::config::{DefaultState, Transport},
    policy::portspec::{PortSpec, render_ranges},
};

/// Options of `ps-agent matrix import`.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Product name (default: from the document's title page).
    pub product: Option<String>,
    /// Row id prefix (default: the initials of the host system, e.g. `ps`).
    pub id_prefix: Option<String>,
}

/// A document that is not a port matrix at all.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// No table header was found.
    #[error(
        "no port table found in `{file}`: expected a header line starting `Source<TAB><TAB>Destination` (copy the tables out of the PDF/DOCX with their tabs)"
    )]
    NoTable {
        /// Input name.
        file: String,
    },
    /// The host system could not be determined.
    #[error(
        "could not tell which system this host is in `{file}`: no \"Components\" table and no \"Ports for ...\" table title"
    )]
    NoHostSystem {
        /// Input name.
        file: String,
    },
}

/// A row that could not be interpreted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// 1-based line in the input.
    pub line: usize,
    /// The row id it would have had, if it was a row.
    pub id: Option<String>,
    /// The line as read.
    pub text: String,
    /// What is wrong.
    pub why: String,
}

/// Whether a table lists ports or changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    /// A port table: its rows become policy rows.
    Ports,
    /// A "Port Changes from X to Y" table: informational.
    Changes,
}

/// A table found in the document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TableInfo {
    /// Its number (`1` in "Table 1. Ports for ..."), if titled.
    pub number: Option<String>,
    /// Its title (`Ports for Presence Services`), if titled.
    pub title: Option<String>,
    /// Line of the title (or first header).
    pub line: usize,
    /// Ports or changes.
    pub kind: TableKind,
    /// Rows read from it (including problem rows).
    pub rows: usize,
}

/// One imported row: the policy-file fields plus where it was read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ImportedRow {
    /// Row id (`ps-01`).
    pub id: String,
    /// Source system.
    pub source_system: String,
    /// Source port, as the document writes it (normalized).
    pub source_port: String,
    /// Destination system.
    pub destination_system: String,
    /// Destination port, as the document writes it (normalized).
    pub destination_port: String,
    /// Protocol column.
    pub protocol: String,
    /// Transports.
    pub transports: Vec<Transport>,
    /// Application protocol.
    pub application: String,
    /// Destination ports as inclusive ranges (empty for Ephemeral / site-supplied).
    pub ports: Vec<(u16, u16)>,
    /// Marked `(C)`.
    pub configurable: bool,
    /// Optionally enabled / disabled.
    pub optional: bool,
    /// Default state.
    pub default_state: DefaultState,
    /// Bound to the management IP.
    pub management_only: bool,
    /// Example ports for a site-supplied destination port.
    pub site_ports: Option<String>,
    /// Description.
    pub description: String,
    /// 1-based line in the input where the row starts.
    pub line: usize,
}

/// What the document says about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DocInfo {
    /// Title lines after "Avaya Port Matrix:" (`Avaya Aura`, `Presence Services 8.1.2`).
    pub title: Vec<String>,
    /// `Issue 1.0`.
    pub issue: Option<String>,
    /// `March 06, 2020`.
    pub date: Option<String>,
}

/// The result of an import.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Import {
    /// Product name.
    pub product: String,
    /// The system this host is.
    pub host_system: String,
    /// Title page.
    pub document: DocInfo,
    /// Tables found.
    pub tables: Vec<TableInfo>,
    /// Rows, in document order.
    pub rows: Vec<ImportedRow>,
    /// Rows that could not be interpreted.
    pub problems: Vec<Problem>,
    /// Things done that a reviewer should know about.
    pub notes: Vec<String>,
}

/// Column names, for messages.
const COLUMNS: [&str; 8] = [
    "source system",
    "source port",
    "destination system",
    "destination port",
    "protocol",
    "optionally enabled",
    "default state",
    "description",
];

/// A row as read, before interpretation.
struct RawRow {
    line: usize,
    table: usize,
    text: String,
    cells: Vec<String>,
}

/// Normalize a line: non-breaking spaces, markdown bold from converters, surrounding space.
fn clean(raw: &str) -> String {
    let s = raw.replace(['\u{a0}', '\u{2007}', '\u{202f}'], " ").replace('\r', "");
    let s = s.trim_matches(|c: char| c == ' ' || c == '\u{feff}');
    let s = s.trim_start_matches("**").trim_end_matches("**");
    s.trim_matches(' ').to_string()
}

/// A cell: whitespace runs collapsed, dashes made ASCII.
fn cell(s: &str) -> String {
    s.replace(['\u{2013}', '\u{2014}', '\u{2212}'], "-").split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Page furniture: footers, the confidentiality line, page numbers.
fn is_furniture(l: &str) -> bool {
    let lower = l.to_lowercase();
    let no_tabs = !l.contains('\t');
    l.trim().is_empty()
        || (no_tabs && lower.starts_with("avaya") && lower.contains("proprietary"))
        || (no_tabs && lower.starts_with("use pursuant to the terms"))
        || (no_tabs && lower.starts_with("page ") && lower[5..].trim().chars().all(|c| c.is_ascii_digit() || c == ' '))
        || (no_tabs && l.trim().chars().all(|c| c.is_ascii_digit()))
        || (no_tabs && lower.starts_with("avaya port matrix"))
}

/// `Table 1. Ports for Presence Services` → (`1`, `Ports for Presence Services`).
fn table_title(l: &str) -> Option<(String, String)> {
    if l.contains('\t') {
        return None;
    }
    let rest = l.strip_prefix("Table ").or_else(|| l.strip_prefix("TABLE "))?;
    let num: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-').collect();
    let num = num.trim_end_matches('.').to_string();
    if num.is_empty() || !num.chars().next().is_some_and(|c| c.is_ascii_digit()) {
        return None;
    }
    let title = rest[num.len()..].trim_start_matches(['.', ':', ' ']).trim().to_string();
    Some((num, title))
}

/// The two header lines of a port table.
fn is_header(cells: &[String]) -> bool {
    let first = cells.first().map(|c| c.to_lowercase()).unwrap_or_default();
    let rest = cells[1..].join(" ").to_lowercase();
    (first == "source" && rest.contains("destination")) || (first == "system" && rest.contains("port"))
}

/// A numbered section heading (`2.3 Port Table Changes`) or the notes after a table.
fn ends_table(l: &str) -> bool {
    if l.contains('\t') {
        return false;
    }
    let lower = l.to_lowercase();
    if lower.starts_with("notes") || lower.starts_with("note:") || lower.starts_with("appendix") {
        return true;
    }
    let mut chars = l.chars().peekable();
    let mut digits = 0;
    while let Some(c) = chars.peek() {
        if c.is_ascii_digit() || *c == '.' {
            digits += c.is_ascii_digit() as usize;
            chars.next();
        } else {
            break;
        }
    }
    let rest: String = chars.collect();
    // "2.3 Port Table Changes", "3. Port Usage Diagram"; not "1. Some description 1." (a note).
    digits > 0 && l.contains('.') && rest.starts_with(' ') && {
        let words: Vec<&str> = rest.split_whitespace().collect();
        !words.is_empty() && words.len() <= 8 && !rest.trim_end().ends_with('.')
    }
}

/// Split a line into cells: tabs; lines without tabs on runs of 2+ spaces.
fn split_cells(l: &str) -> Vec<String> {
    if l.contains('\t') {
        let mut cells: Vec<String> = l.split('\t').map(cell).collect();
        while cells.len() > 1 && cells.last().is_some_and(|c| c.is_empty()) {
            cells.pop();
        }
        cells
    } else {
        let mut cells = Vec::new();
        let mut cur = String::new();
        let mut spaces = 0;
        for c in l.chars() {
            if c == ' ' {
                spaces += 1;
                continue;
            }
            if spaces >= 2 && !cur.is_empty() {
                cells.push(cell(&cur));
                cur.clear();
            } else if spaces == 1 {
                cur.push(' ');
            }
            spaces = 0;
            cur.push(c);
        }
        if !cur.is_empty() {
            cells.push(cell(&cur));
        }
        cells
    }
}

/// Parse a port-matrix document.
///
/// # Errors
/// Only when the text has no port table, or no way to tell the host system; rows that
/// cannot be read are [`Import::problems`].
pub fn import(text: &str, file: &str, opts: &ImportOptions) -> Result<Import, ImportError> {
    let lines: Vec<(usize, String)> = text.lines().enumerate().map(|(i, l)| (i + 1, clean(l))).collect();
    let document = doc_info(&lines);
    let mut scan = Scan::default();
    for (line, l) in &lines {
        scan.line(*line, l);
    }
    let Scan { mut tables, raws, mut problems, mut notes, components, .. } = scan;
    if tables.is_empty() {
        return Err(ImportError::NoTable { file: file.to_string() });
    }
    // Rows of change tables are information, not policy.
    for (i, t) in tables.iter_mut().enumerate() {
        t.rows = raws.iter().filter(|r| r.table == i).count();
        if t.kind == TableKind::Changes && t.rows > 0 {
            notes.push(format!(
                "{} lists {} changed rows: not imported (compare two policies with `ps-agent matrix diff`)",
                table_name(t),
                t.rows
            ));
        }
    }
    let port_rows: Vec<&RawRow> = raws.iter().filter(|r| tables[r.table].kind == TableKind::Ports).collect();
    let host_system = host_system(&components, &tables, &port_rows)
        .ok_or_else(|| ImportError::NoHostSystem { file: file.to_string() })?;
    let prefix = opts.id_prefix.clone().unwrap_or_else(|| initials(&host_system));
    let width = if port_rows.len() > 99 { 3 } else { 2 };
    let mut rows = Vec::new();
    for (n, raw) in port_rows.iter().enumerate() {
        let id = format!("{prefix}-{:0width$}", n + 1);
        match interpret(raw, &id) {
            Ok((row, mut row_notes)) => {
                rows.push(row);
                notes.append(&mut row_notes);
            }
            Err(why) => problems.push(Problem { line: raw.line, id: Some(id), text: raw.text.clone(), why }),
        }
    }
    problems.sort_by_key(|p| p.line);
    let product = opts.product.clone().unwrap_or_else(|| {
        if document.title.is_empty() { format!("Avaya {host_system}") } else { document.title.join(" ") }
    });
    Ok(Import { product, host_system, document, tables, rows, problems, notes })
}

/// The document read line by line: tables, their raw rows, the components list, and what
/// could not be placed.
#[derive(Default)]
struct Scan {
    tables: Vec<TableInfo>,
    /// The table the current line belongs to.
    in_table: Option<usize>,
    /// A table title waiting for its header: (line, number, title).
    pending_title: Option<(usize, String, String)>,
    raws: Vec<RawRow>,
    problems: Vec<Problem>,
    notes: Vec<String>,
    components: Vec<String>,
    in_components: bool,
}

impl Scan {
    fn line(&mut self, line: usize, l: &str) {
        if is_furniture(l) {
            return;
        }
        let cells = split_cells(l);
        if self.component(l, &cells) {
            return;
        }
        if let Some((num, title)) = table_title(l) {
            self.pending_title = Some((line, num, title));
            self.in_table = None;
        } else if l.contains('\t') && is_header(&cells) {
            self.header(line);
        } else if ends_table(l) {
            self.in_table = None;
        } else if let Some(t) = self.in_table {
            self.table_line(t, line, l, cells);
        } else if l.contains('\t') && cells.len() >= 7 {
            let why = "looks like a port-table row, but no table header precedes it".into();
            self.problems.push(Problem { line, id: None, text: l.to_string(), why });
        }
    }

    /// The document's components table (its first column names the host system); `true`
    /// when the line belongs to it.
    fn component(&mut self, l: &str, cells: &[String]) -> bool {
        if cells.len() >= 2 && cells[0].eq_ignore_ascii_case("component") && l.contains('\t') {
            self.in_components = true;
            self.in_table = None;
            return true;
        }
        if self.in_components {
            if l.contains('\t') && !cells[0].is_empty() {
                self.components.push(cells[0].clone());
                return true;
            }
            self.in_components = false;
        }
        false
    }

    /// A table header: a new table, unless it repeats the current one's after a page break.
    fn header(&mut self, line: usize) {
        let continuing = self.in_table.is_some() && self.pending_title.is_none();
        if continuing {
            return;
        }
        let (tline, number, title) = match self.pending_title.take() {
            Some((tl, n, t)) => (tl, Some(n), Some(t)),
            None => (line, None, None),
        };
        let changes = title.as_deref().is_some_and(|t| t.to_lowercase().contains("change"));
        let kind = if changes { TableKind::Changes } else { TableKind::Ports };
        self.tables.push(TableInfo { number, title, line: tline, kind, rows: 0 });
        self.in_table = Some(self.tables.len() - 1);
    }

    /// A line inside table `t`: a row, the rest of a row broken by a page, or the wrapped
    /// description of the row before.
    fn table_line(&mut self, t: usize, line: usize, l: &str, cells: Vec<String>) {
        let last_in_table = self.raws.last_mut().filter(|r| r.table == t);
        match last_in_table {
            // A row broken across a page: the next part starts with an empty first cell.
            Some(prev) if l.contains('\t') && cells[0].is_empty() => {
                for (i, c) in cells.iter().enumerate().filter(|(_, c)| !c.is_empty()) {
                    while prev.cells.len() <= i {
                        prev.cells.push(String::new());
                    }
                    let p = &mut prev.cells[i];
                    if !p.is_empty() {
                        p.push(' ');
                    }
                    p.push_str(c);
                }
                prev.text.push_str(" ⏎ ");
                prev.text.push_str(l);
                self.notes.push(format!("line {line}: continues the row of line {} (page break)", prev.line));
            }
            _ if l.contains('\t') => self.raws.push(RawRow { line, table: t, text: l.to_string(), cells }),
            _ if cells.len() >= 8 => {
                self.notes.push(format!("line {line}: no tabs; columns split on runs of spaces"));
                self.raws.push(RawRow { line, table: t, text: l.to_string(), cells });
            }
            // Free text inside a table: the description of the previous row, wrapped.
            Some(prev) => {
                let last = prev.cells.last_mut().expect("a row has cells");
                last.push(' ');
                last.push_str(&cell(l));
                prev.text.push_str(" ⏎ ");
                prev.text.push_str(l);
                self.notes.push(format!("line {line}: text without columns joined to the row of line {}", prev.line));
            }
            None => {
                let why = "text inside a table that is neither a row nor page furniture".into();
                self.problems.push(Problem { line, id: None, text: l.to_string(), why });
            }
        }
    }
}

fn table_name(t: &TableInfo) -> String {
    match (&t.number, &t.title) {
        (Some(n), Some(title)) => format!("Table {n} (\"{title}\")"),
        _ => format!("the table at line {}", t.line),
    }
}

/// Title block: the lines after "Avaya Port Matrix:" up to "Issue ...", then the date.
fn doc_info(lines: &[(usize, String)]) -> DocInfo {
    let mut info = DocInfo::default();
    let Some(start) = lines.iter().position(|(_, l)| l.to_lowercase().starts_with("avaya port matrix")) else {
        return info;
    };
    let after_colon = lines[start].1.split_once(':').map(|(_, r)| r.trim().to_string()).unwrap_or_default();
    if !after_colon.is_empty() {
        info.title.push(strip_marks(&after_colon));
    }
    let mut it = lines[start + 1..].iter().filter(|(_, l)| !l.is_empty());
    for (_, l) in it.by_ref().take(6) {
        if l.starts_with("Issue") {
            info.issue = Some(l.clone());
            break;
        }
        if is_furniture(l) || l.contains('\t') {
            break;
        }
        info.title.push(strip_marks(l));
    }
    if info.issue.is_some()
        && let Some((_, d)) = it.next()
        && d.split_whitespace().any(|w| w.len() == 4 && w.chars().all(|c| c.is_ascii_digit()))
    {
        info.date = Some(d.clone());
    }
    info
}

fn strip_marks(s: &str) -> String {
    // Converters write the registered mark as `[®]`.
    cell(&s.replace(['®', '™', '©'], "").replace("[]", ""))
}

/// The host system: the document's first component, else the subject of "Ports for X",
/// else the system most rows name.
fn host_system(components: &[String], tables: &[TableInfo], rows: &[&RawRow]) -> Option<String> {
    let named = |s: &str| {
        rows.iter().any(|r| {
            r.cells.first().is_some_and(|c| c.eq_ignore_ascii_case(s))
                || r.cells.get(2).is_some_and(|c| c.eq_ignore_ascii_case(s))
        })
    };
    if let Some(c) = components.first()
        && named(c)
    {
        return Some(c.clone());
    }
    for t in tables.iter().filter(|t| t.kind == TableKind::Ports) {
        if let Some(x) = t.title.as_deref().and_then(|t| t.split_once("Ports for ").map(|(_, x)| x.trim().to_string()))
            && named(&x)
        {
            return Some(x);
        }
    }
    let mut counts: Vec<(String, usize)> = Vec::new();
    for r in rows {
        for i in [0, 2] {
            if let Some(s) = r.cells.get(i).filter(|s| !s.is_empty()) {
                match counts.iter_mut().find(|(n, _)| n == s) {
                    Some((_, c)) => *c += 1,
                    None => counts.push((s.clone(), 1)),
                }
            }
        }
    }
    counts.into_iter().max_by_key(|(_, c)| *c).filter(|(_, c)| *c >= 2).map(|(n, _)| n)
}

/// `Presence Services` → `ps`.
fn initials(s: &str) -> String {
    let i: String = s
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter_map(|w| w.chars().next())
        .filter(|c| c.is_ascii_alphabetic())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if i.is_empty() { "row".into() } else { i }
}

/// Read one row; `Err` says why it cannot be.
fn interpret(raw: &RawRow, id: &str) -> Result<(ImportedRow, Vec<String>), String> {
    let cells = eight_cells(&raw.cells)?;
    for (i, name) in [(0, "source system"), (2, "destination system")] {
        if cells[i].is_empty() {
            return Err(format!("empty {name}"));
        }
    }
    let (transports_p, application) = protocol(&cells[4])?;
    let (source_port, src_t) = port_column(&cells[1]).map_err(|e| format!("source port: {e}"))?;
    let (destination_port, dst_t) = port_column(&cells[3]).map_err(|e| format!("destination port: {e}"))?;
    let spec = PortSpec::parse(&destination_port).map_err(|e| format!("destination port: {e}"))?;
    PortSpec::parse(&source_port).map_err(|e| format!("source port: {e}"))?;
    if matches!(&spec, PortSpec::SiteSupplied(t) if is_blank_port(t)) {
        return Err(format!("destination port `{}` names no port", cells[3]));
    }
    let mut transports: Vec<Transport> = src_t.into_iter().chain(dst_t).chain(transports_p).collect();
    transports.sort();
    transports.dedup();
    if transports.is_empty() {
        return Err(format!("protocol `{}` names no transport (TCP or UDP)", cells[4]));
    }
    let description = cells[7].clone();
    let lower = description.to_lowercase();
    let management_only = lower.contains("bound to management")
        || lower.contains("management ip")
        || lower.contains("management interface");
    let (site_ports, notes) = site_ports(&spec, &description, id);
    let (ports, configurable) = match &spec {
        PortSpec::Ports { ranges, configurable } => (ranges.clone(), *configurable),
        _ => (vec![], false),
    };
    let row = ImportedRow {
        id: id.to_string(),
        source_system: cells[0].clone(),
        source_port,
        destination_system: cells[2].clone(),
        destination_port,
        protocol: cells[4].clone(),
        transports,
        application,
        ports,
        configurable,
        optional: optional(&cells[5])?,
        default_state: default_state(&cells[6])?,
        management_only,
        site_ports,
        description,
        line: raw.line,
    };
    Ok((row, notes))
}

/// The eight columns of a row; a row with empty cells between them (a table copied with
/// merged cells) is taken when exactly eight are filled.
fn eight_cells(cells: &[String]) -> Result<Vec<String>, String> {
    if cells.len() == 8 {
        return Ok(cells.to_vec());
    }
    let filled: Vec<String> = cells.iter().filter(|c| !c.is_empty()).cloned().collect();
    match cells.len() {
        _ if filled.len() == 8 => Ok(filled),
        n if n < 8 => Err(format!("{n} columns, expected 8; missing: {}", COLUMNS[n..].join(", "))),
        n => Err(format!("{n} columns, expected 8 ({})", COLUMNS.join(", "))),
    }
}

fn optional(cell: &str) -> Result<bool, String> {
    match cell.to_lowercase().as_str() {
        "yes" | "y" => Ok(true),
        "no" | "n" => Ok(false),
        other => Err(format!("optionally enabled is `{other}`; expected Yes or No")),
    }
}

fn default_state(cell: &str) -> Result<DefaultState, String> {
    match cell.to_lowercase().replace(' ', "").as_str() {
        "open" => Ok(DefaultState::Open),
        "closed" => Ok(DefaultState::Closed),
        "filtered" => Ok(DefaultState::Filtered),
        "n/a" | "na" | "-" | "" => Ok(DefaultState::NotApplicable),
        other => Err(format!("default state `{other}`; expected Open, Closed, Filtered or N/A")),
    }
}

/// A site-supplied destination port: the example ports its description names, if any (a
/// note says to set it in the site config when there are none).
fn site_ports(spec: &PortSpec, description: &str, id: &str) -> (Option<String>, Vec<String>) {
    let PortSpec::SiteSupplied(text) = spec else { return (None, vec![]) };
    let found = example_ports(description);
    if found.is_empty() {
        let note = format!(
            "{id}: destination port `{text}` is site-supplied and the description names no example port: set [ports] {id} in the site config"
        );
        return (None, vec![note]);
    }
    (Some(render_ranges(&found)), vec![])
}

fn is_blank_port(t: &str) -> bool {
    matches!(t.to_lowercase().as_str(), "" | "n/a" | "na" | "-" | "none" | "tbd")
}

/// Application protocols by their usual transport, for protocol columns that name none.
const TCP_APPS: &[&str] = &[
    "HTTP",
    "HTTPS",
    "SSH",
    "SFTP",
    "SCP",
    "FTP",
    "FTPS",
    "TELNET",
    "SMTP",
    "SMTPS",
    "LDAP",
    "LDAPS",
    "XMPP",
    "RMI",
    "JMX",
    "JDBC",
    "IMAP",
    "IMAPS",
    "POP3",
    "POP3S",
    "WSS",
    "WEBSOCKET",
    "RDP",
    "BGP",
    "H.225",
    "H.245",
    "JTAPI",
    "TSAPI",
    "DMCC",
    "CTI",
    "POSTGRESQL",
    "MYSQL",
    "ORACLE",
    "REST",
    "SOAP",
    "TLS",
];
const UDP_APPS: &[&str] =
    &["SNMP", "SNMPTRAP", "NTP", "TFTP", "RTP", "SRTP", "RTCP", "DHCP", "RADIUS", "H.248", "DTLS"];

/// The protocol column → transports and application: `TCP/HTTPS` → tcp + `HTTPS`,
/// `TLS/SIP` → tcp + `SIP` (TLS rides on TCP), `UDP/SNMP` → udp + `SNMP`, `TCP/TLS` → tcp +
/// `TLS`, `DNS` → tcp and udp.
fn protocol(col: &str) -> Result<(Vec<Transport>, String), String> {
    let tokens: Vec<&str> =
        col.split(['/', ',', '&', '+', ' ']).map(str::trim).filter(|t| !t.is_empty() && *t != "and").collect();
    if tokens.is_empty() {
        return Err("empty protocol column".into());
    }
    let mut transports = Vec::new();
    let mut apps: Vec<&str> = Vec::new();
    for t in &tokens {
        match t.to_uppercase().as_str() {
            "TCP" => transports.push(Transport::Tcp),
            "UDP" => transports.push(Transport::Udp),
            "ICMP" | "ICMPV6" | "PING" => {
                return Err(format!(
                    "protocol `{col}` has no ports: ps-agent always admits ICMP errors and echo replies, and echo requests with `allow_ping = true`"
                ));
            }
            "SCTP" | "ESP" | "GRE" | "AH" | "VRRP" => {
                return Err(format!("protocol `{col}`: only TCP and UDP ports can be enforced"));
            }
            _ => apps.push(t),
        }
    }
    // TLS / DTLS in front of an application is its security layer, not the application.
    if apps.len() > 1 {
        match apps[0].to_uppercase().as_str() {
            "TLS" | "SSL" => {
                transports.push(Transport::Tcp);
                apps.remove(0);
            }
            "DTLS" => {
                transports.push(Transport::Udp);
                apps.remove(0);
            }
            _ => {}
        }
    }
    if transports.is_empty() {
        for a in &apps {
            let up = a.to_uppercase();
            if up == "DNS" {
                transports.extend([Transport::Tcp, Transport::Udp]);
            } else if TCP_APPS.contains(&up.as_str()) {
                transports.push(Transport::Tcp);
            } else if UDP_APPS.contains(&up.as_str()) {
                transports.push(Transport::Udp);
            }
        }
    }
    if transports.is_empty() {
        return Err(format!(
            "protocol `{col}` names no transport and `{}` runs over more than one: write TCP/{0} or UDP/{0}",
            apps.join("/")
        ));
    }
    transports.sort();
    transports.dedup();
    Ok((transports, apps.join("/")))
}

/// A port column with transports in it (`53/UDP, 53/TCP`, `TCP 22`) → the ports and the
/// transports it names. Pieces that give different ports to different transports cannot be
/// one row.
fn port_column(col: &str) -> Result<(String, Vec<Transport>), String> {
    let mut all = transports_named(col);
    if all.is_empty() {
        return Ok((col.to_string(), vec![]));
    }
    // Each comma-separated piece: the transports it names, and its ports without them.
    let pieces: Vec<(Vec<Transport>, String)> = col
        .split(',')
        .map(|piece| (transports_named(piece), without_transports(piece)))
        .filter(|(_, p)| !p.is_empty())
        .collect();
    let mut ports: Vec<String> = Vec::new();
    for (_, p) in &pieces {
        if !ports.contains(p) {
            ports.push(p.clone());
        }
    }
    if ports.len() > 1 && ports_differ_by_transport(&pieces) {
        // `TCP 5060, UDP 5061`: the row would claim both ports on both transports.
        return Err(format!("`{col}` gives different ports to TCP and UDP: split it into one row per transport"));
    }
    all.sort();
    all.dedup();
    Ok((ports.join(", "), all))
}

/// The transports `s` names as words (`TCP`, `udp`), in order, repeats kept.
fn transports_named(s: &str) -> Vec<Transport> {
    s.split(|c: char| !c.is_ascii_alphanumeric())
        .filter_map(|w| match w.to_uppercase().as_str() {
            "TCP" => Some(Transport::Tcp),
            "UDP" => Some(Transport::Udp),
            _ => None,
        })
        .collect()
}

/// `s` without the transport names (`53/UDP` → `53`, `TCP 22` → `22`), trimmed of commas.
fn without_transports(s: &str) -> String {
    let mut out = String::new();
    for w in s.split(' ') {
        let mut w = w.to_string();
        for t in ["/TCP", "/UDP", "/tcp", "/udp", "TCP/", "UDP/", "tcp/", "udp/", "TCP:", "UDP:"] {
            w = w.replace(t, "");
        }
        if matches!(w.to_uppercase().as_str(), "TCP" | "UDP") {
            continue;
        }
        if !out.is_empty() && !w.is_empty() {
            out.push(' ');
        }
        out.push_str(&w);
    }
    out.trim_matches([',', ' ']).to_string()
}

/// Whether the pieces that name a transport give different ports to different transports.
fn ports_differ_by_transport(pieces: &[(Vec<Transport>, String)]) -> bool {
    let tagged: Vec<&(Vec<Transport>, String)> = pieces.iter().filter(|(t, _)| !t.is_empty()).collect();
    let Some((first_ts, first_ports)) = tagged.first() else { return false };
    tagged.len() > 1 && tagged.iter().any(|(_, p)| p != first_ports) && tagged.iter().any(|(t, _)| t != first_ts)
}

/// Port numbers given as examples in a description: `(e.g. 389 is default, 636 secure)`.
/// Version-like numbers (`8.1.2`) are not ports.
fn example_ports(desc: &str) -> Vec<(u16, u16)> {
    let mut out: Vec<(u16, u16)> = Vec::new();
    let b = desc.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let before_dot = start > 0 && b[start - 1] == b'.';
            let after_dot = i + 1 < b.len() && b[i] == b'.' && b[i + 1].is_ascii_digit();
            let glued = start > 0 && b[start - 1].is_ascii_alphabetic();
            if !before_dot
                && !after_dot
                && !glued
                && let Ok(n) = desc[start..i].parse::<u32>()
                && (1..=65535).contains(&n)
                && !out.contains(&(n as u16, n as u16))
            {
                out.push((n as u16, n as u16));
            }
        } else {
            i += 1;
        }
    }
    out
}

/// TOML basic string.
fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Greedy word wrap into `# ` comment lines of at most `width` characters.
fn comment_wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::from("#");
    for w in text.split(' ') {
        if line.len() > 1 && line.chars().count() + 1 + w.chars().count() > width {
            out.push_str(&line);
            out.push('\n');
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(w);
    }
    out.push_str(&line);
    out.push('\n');
    out
}

impl Import {
    /// Whether every row was read.
    pub fn complete(&self) -> bool {
        self.problems.is_empty()
    }

    /// "Table 1 (\"Ports for Presence Services\")" or "Tables 1, 2 (...)".
    fn tables_phrase(&self) -> String {
        let ports: Vec<&TableInfo> = self.tables.iter().filter(|t| t.kind == TableKind::Ports).collect();
        let nums: Vec<String> =
            ports.iter().map(|t| t.number.clone().unwrap_or_else(|| format!("at line {}", t.line))).collect();
        let titles: Vec<String> = ports.iter().filter_map(|t| t.title.as_ref()).map(|t| format!("\"{t}\"")).collect();
        let word = if ports.len() == 1 { "Table" } else { "Tables" };
        if titles.is_empty() {
            format!("{word} {}", nums.join(", "))
        } else {
            format!("{word} {} ({})", nums.join(", "), titles.join(", "))
        }
    }

    /// The policy file, in the layout of `policy/ps-8.1.2.toml`.
    pub fn to_toml(&self) -> String {
        let mut source = String::from("Avaya Port Matrix");
        if let Some(t) = self.document.title.last() {
            source.push_str(", ");
            source.push_str(t);
        }
        for extra in [&self.document.issue, &self.document.date].into_iter().flatten() {
            source.push_str(", ");
            source.push_str(extra);
        }
        let intro = format!(
            "{} port matrix, {}, one [[row]] per table row, in document order. Source: {source}. `ps-agent matrix import` writes this format.",
            self.product,
            self.tables_phrase()
        );
        let mut out = comment_wrap(&intro, 92);
        out.push_str(
            "#\n\
             # `destination_port` / `source_port` keep the document's text; ps-agent parses it\n\
             # (443, \"5222 (C)\", 7001-7199, \"1050-1065, 1066-1081\", \"25 or 587\", Ephemeral,\n\
             # \"Depends on Enterprise\" with `site_ports` as the default list the site may override).\n",
        );
        if !self.problems.is_empty() {
            out.push_str("#\n# INCOMPLETE: these rows of the document could not be read and are not below:\n");
            for p in &self.problems {
                let _ = writeln!(out, "#   line {} ({}): {}", p.line, p.id.as_deref().unwrap_or("-"), p.why);
            }
        }
        let _ = write!(out, "\nproduct = {}\nhost_system = {}\n", toml_str(&self.product), toml_str(&self.host_system));
        for r in &self.rows {
            out.push_str("\n[[row]]\n");
            let kv = |out: &mut String, k: &str, v: &str| {
                let _ = writeln!(out, "{k} = {}", toml_str(v));
            };
            kv(&mut out, "id", &r.id);
            kv(&mut out, "source_system", &r.source_system);
            kv(&mut out, "source_port", &r.source_port);
            kv(&mut out, "destination_system", &r.destination_system);
            kv(&mut out, "destination_port", &r.destination_port);
            kv(&mut out, "protocol", &r.protocol);
            let ts: Vec<String> = r.transports.iter().map(|t| toml_str(t.as_str())).collect();
            let _ = writeln!(out, "transports = [{}]", ts.join(", "));
            kv(&mut out, "application", &r.application);
            let _ = writeln!(out, "optional = {}", r.optional);
            kv(&mut out, "default_state", state_str(r.default_state));
            if r.management_only {
                out.push_str("management_only = true\n");
            }
            if let Some(sp) = &r.site_ports {
                kv(&mut out, "site_ports", sp);
            }
            kv(&mut out, "description", &r.description);
        }
        out
    }

    /// `{"rows": [...], ...}` for `--format json`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "product": self.product,
            "host_system": self.host_system,
            "document": self.document,
            "tables": self.tables,
            "rows": self.rows,
            "problems": self.problems,
            "notes": self.notes,
        })
    }

    /// A human-readable list of the problems: `line N (id): why`, then the text.
    pub fn problem_report(&self) -> String {
        let mut out = String::new();
        for p in &self.problems {
            let id = p.id.as_deref().map_or(String::new(), |i| format!(" ({i})"));
            let _ = writeln!(out, "line {}{id}: {}\n    {}", p.line, p.why, p.text.replace('\t', " | "));
        }
        out
    }
}

/// `open`, `closed`, `filtered`, `n/a`.
pub fn state_str(s: DefaultState) -> &'static str {
    match s {
        DefaultState::Open => "open",
        DefaultState::Closed => "closed",
        DefaultState::Filtered => "filtered",
        DefaultState::NotApplicable => "n/a",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::config::Matrix;

    const SEED: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../policy/testdata/ps-8.1.2-matrix.txt"));

    #[test]
    fn seed_round_trips_to_the_shipped_policy_byte_for_byte() {
        let imp = import(SEED, "seed", &ImportOptions::default()).unwrap();
        assert!(imp.problems.is_empty(), "{:?}", imp.problems);
        assert_eq!(imp.host_system, "Presence Services");
        assert_eq!(imp.rows.len(), 27);
        let toml = imp.to_toml();
        let shipped = crate::policy::config::SHIPPED_MATRIX;
        if toml != shipped {
            for (i, (a, b)) in toml.lines().zip(shipped.lines()).enumerate() {
                assert_eq!(a, b, "line {}", i + 1);
            }
            assert_eq!(toml.len(), shipped.len());
        }
        assert_eq!(Matrix::parse(&toml, "imported").unwrap(), Matrix::parse(shipped, "imported").unwrap());
    }

    #[test]
    fn seed_tables_and_lines() {
        let imp = import(SEED, "seed", &ImportOptions::default()).unwrap();
        let kinds: Vec<_> = imp.tables.iter().map(|t| (t.number.as_deref(), t.kind, t.rows)).collect();
        assert_eq!(kinds, [(Some("1"), TableKind::Ports, 27), (Some("3"), TableKind::Changes, 0)]);
        assert_eq!(imp.rows[0].line, 73);
        assert_eq!(imp.rows[10].line, 89, "first row after the page break");
        assert_eq!(imp.rows[26].line, 111);
        assert_eq!(imp.rows[17].ports, vec![(1050, 1065), (1066, 1081)]);
        assert!(imp.rows[9].configurable);
        assert!(imp.rows[25].ports.is_empty());
        let j = imp.to_json();
        assert_eq!(j["rows"][0]["transports"], serde_json::json!(["tcp"]));
        assert_eq!(j["rows"][0]["ports"], serde_json::json!([[443, 443]]));
        assert_eq!(j["rows"][2]["ports"], serde_json::json!([]));
        assert_eq!(j["rows"][5]["default_state"], "closed");
        assert_eq!(j["rows"][5]["line"], 78);
        let opts = ImportOptions { product: Some("PS".into()), id_prefix: Some("pres".into()) };
        let imp = import(SEED, "seed", &opts).unwrap();
        assert_eq!((imp.product.as_str(), imp.rows[0].id.as_str()), ("PS", "pres-01"));
    }

    /// (id, source, sport, destination, dport, transports, optional, state, mgmt, line)
    type Want<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str, &'a str, bool, &'a str, bool, usize);

    fn check_rows(imp: &Import, want: &[Want]) {
        let got: Vec<String> = imp
            .rows
            .iter()
            .map(|r| {
                let ts: Vec<&str> = r.transports.iter().map(|t| t.as_str()).collect();
                format!(
                    "{:?}",
                    (
                        r.id.as_str(),
                        r.source_system.as_str(),
                        r.source_port.as_str(),
                        r.destination_system.as_str(),
                        r.destination_port.as_str(),
                        ts.join("+"),
                        r.optional,
                        state_str(r.default_state),
                        r.management_only,
                        r.line
                    )
                )
            })
            .collect();
        let want: Vec<String> = want
            .iter()
            .map(|w| format!("{:?}", (w.0, w.1, w.2, w.3, w.4, w.5.to_string(), w.6, w.7, w.8, w.9)))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn session_manager_like_matrix() {
        let text = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../policy/testdata/sm-like.txt"));
        let imp = import(text, "sm-like.txt", &ImportOptions::default()).unwrap();
        assert!(imp.problems.is_empty(), "{}", imp.problem_report());
        assert_eq!(imp.product, "Avaya Aura Session Manager 10.1");
        assert_eq!(imp.host_system, "Session Manager");
        check_rows(
            &imp,
            &[
                ("sm-01", "SIP Endpoint", "Ephemeral", "Session Manager", "5060", "udp", false, "open", false, 31),
                ("sm-02", "SIP Endpoint", "Ephemeral", "Session Manager", "5061 (C)", "tcp", false, "open", false, 32),
                ("sm-03", "SIP Trunk", "Ephemeral", "Session Manager", "5060", "tcp", false, "open", false, 33),
                ("sm-04", "Session Manager", "Ephemeral", "DNS Server", "53", "tcp+udp", false, "n/a", false, 34),
                ("sm-05", "Administrator", "Ephemeral", "Session Manager", "22", "tcp", false, "open", true, 35),
                ("sm-06", "Session Manager", "Ephemeral", "Syslog Server", "514", "udp", true, "closed", false, 36),
                ("sm-07", "Media Server", "Ephemeral", "Session Manager", "8902- 8913", "udp", true, "n/a", false, 45),
                (
                    "sm-08",
                    "Session Manager",
                    "Ephemeral",
                    "Avaya Aura Media Server",
                    "1050-1065, 1066-1081",
                    "tcp",
                    true,
                    "closed",
                    false,
                    46,
                ),
                ("sm-09", "NMS", "Ephemeral", "Session Manager", "161", "udp", true, "open", true, 54),
                ("sm-10", "Session Manager", "162", "NMS", "Ephemeral", "udp", false, "filtered", false, 55),
                ("sm-11", "System Manager", "Ephemeral", "Session Manager", "443", "tcp", false, "open", false, 56),
            ],
        );
        assert_eq!(imp.rows[6].ports, vec![(8902, 8913)]);
        assert_eq!(imp.rows[7].description, "Media server control links to the media servers (second range)");
        assert_eq!(
            imp.rows[10].description,
            "Administration web services from System Manager; the certificate is enrolled from System Manager's CA"
        );
        assert_eq!(imp.rows[2].description, "SIP trunk over TCP", "odd spacing collapsed");
        assert!(imp.notes.iter().any(|n| n.contains("lists 1 changed rows: not imported")), "{:?}", imp.notes);
        // The policy it writes is valid and compiles for a Session Manager host.
        let m = Matrix::parse(&imp.to_toml(), "sm.toml").unwrap();
        let cfg = crate::policy::config::Config { matrix: m, site: Default::default() };
        let set = crate::policy::compile::compile(&cfg, &crate::policy::compile::HostFacts::typical()).unwrap();
        let udp_in: Vec<&str> = set
            .rules
            .iter()
            .filter(|r| r.transport == Transport::Udp && r.kind == crate::policy::compile::RuleKind::Inbound)
            .map(|r| r.ports_text.as_str())
            .collect();
        assert_eq!(udp_in, ["5060", "8902-8913", "161", "162"], "sm-10 (SM 162 → NMS Ephemeral) is inbound on 162");
    }

    #[test]
    fn aes_like_matrix_reports_what_it_cannot_read() {
        let text = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../policy/testdata/aes-like.txt"));
        let imp = import(text, "aes-like.txt", &ImportOptions::default()).unwrap();
        assert_eq!(imp.product, "Avaya Aura Application Enablement Services 10.1");
        assert_eq!(imp.document.issue.as_deref(), Some("Issue 1"));
        assert_eq!(imp.host_system, "Application Enablement Services");
        let probs: Vec<(usize, Option<&str>)> = imp.problems.iter().map(|p| (p.line, p.id.as_deref())).collect();
        assert_eq!(probs, [(23, Some("aes-04")), (39, Some("aes-09"))]);
        assert!(imp.problems[0].why.contains("ICMP"));
        assert!(imp.problems[1].why.contains("`maybe`"));
        let aes = "Application Enablement Services";
        check_rows(
            &imp,
            &[
                ("aes-01", "CTI Application", "Ephemeral", aes, "450", "tcp", false, "open", false, 20),
                ("aes-02", "CTI Application", "Ephemeral", aes, "4721-4722", "tcp", false, "open", false, 21),
                ("aes-03", "Communication Manager", "Ephemeral", aes, "8765", "udp", true, "n/a", false, 22),
                ("aes-05", aes, "Ephemeral", "LDAP Server", "Depends on Enterprise", "tcp", true, "open", false, 30),
                ("aes-06", aes, "Ephemeral", "NTP Server", "123", "udp", false, "n/a", false, 31),
                ("aes-07", aes, "Ephemeral", "Communication Manager", "8765", "udp", false, "open", false, 32),
                ("aes-08", "Administrator", "Ephemeral", aes, "443", "tcp", false, "open", true, 38),
            ],
        );
        assert_eq!(imp.rows[3].site_ports.as_deref(), Some("389, 636"));
        assert_eq!(imp.tables.iter().filter(|t| t.kind == TableKind::Ports).count(), 2);
        let toml = imp.to_toml();
        assert!(toml.contains("# INCOMPLETE") && toml.contains("#   line 23 (aes-04)"), "{toml}");
        assert!(toml.starts_with("# Avaya Aura Application Enablement Services 10.1 port matrix, Tables 1, 2 ("));
        Matrix::parse(&toml, "aes.toml").unwrap();
    }

    #[test]
    fn not_a_matrix() {
        let e = import("hello\nworld\n", "x.txt", &ImportOptions::default()).unwrap_err().to_string();
        assert!(e.starts_with("no port table found in `x.txt`"), "{e}");
    }

    #[test]
    fn protocol_column() {
        use Transport::*;
        let p = |s: &str| protocol(s).unwrap();
        assert_eq!(p("TCP/HTTPS"), (vec![Tcp], "HTTPS".into()));
        assert_eq!(p("TLS/SIP"), (vec![Tcp], "SIP".into()));
        assert_eq!(p("TCP/TLS"), (vec![Tcp], "TLS".into()));
        assert_eq!(p("UDP/SNMP"), (vec![Udp], "SNMP".into()));
        assert_eq!(p("TCP"), (vec![Tcp], "".into()));
        assert_eq!(p("TCP/UDP/DNS"), (vec![Tcp, Udp], "DNS".into()));
        assert_eq!(p("DNS"), (vec![Tcp, Udp], "DNS".into()));
        assert_eq!(p("HTTPS"), (vec![Tcp], "HTTPS".into()));
        assert_eq!(p("UDP / Syslog"), (vec![Udp], "Syslog".into()));
        assert_eq!(p("DTLS/SRTP"), (vec![Udp], "SRTP".into()));
        assert!(protocol("SIP").unwrap_err().contains("TCP/SIP or UDP/SIP"));
        assert!(protocol("ICMP").unwrap_err().contains("allow_ping"));
    }

    #[test]
    fn port_column_variants() {
        use Transport::*;
        assert_eq!(port_column("443").unwrap(), ("443".into(), vec![]));
        assert_eq!(port_column("53/UDP, 53/TCP").unwrap(), ("53".into(), vec![Tcp, Udp]));
        assert_eq!(port_column("TCP 22").unwrap(), ("22".into(), vec![Tcp]));
        assert_eq!(port_column("5061/TCP (C)").unwrap(), ("5061 (C)".into(), vec![Tcp]));
        assert!(port_column("TCP 5060, UDP 5061").is_err());
        assert_eq!(example_ports("Release 8.1.2 (e.g. 389, 636; v3)"), vec![(389, 389), (636, 636)]);
    }

    #[test]
    fn furniture_and_headings() {
        assert!(is_furniture("Avaya – Proprietary"));
        assert!(is_furniture(&clean("**Avaya – Proprietary")));
        assert!(is_furniture(&clean("Use pursuant to the terms of your signed agreement or Avaya policy.**")));
        assert!(is_furniture("Page 12"));
        assert!(ends_table("2.3 Port Table Changes"));
        assert!(ends_table("NOTES:"));
        assert!(!ends_table("1. Some description 1."));
        assert_eq!(table_title("Table 1. Ports for X"), Some(("1".into(), "Ports for X".into())));
        assert_eq!(table_title("Table 2-1: Ports for Y"), Some(("2-1".into(), "Ports for Y".into())));
        assert_eq!(initials("Application Enablement Services"), "aes");
    }
}
