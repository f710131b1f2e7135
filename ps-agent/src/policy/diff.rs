//! Diff: what changed between two versions of a port matrix, row by row id — the
//! document's own "Port Changes from X to Y" table, computed. Pure: two [`Matrix`] values
//! in, a [`MatrixDiff`] out.

use std::fmt::Write as _;

use serde::Serialize;

use crate::{
    policy::config::{Matrix, Row},
    policy::import::state_str,
    policy::portspec::render_ranges,
};

/// Added, removed or changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// Only in the new matrix.
    Added,
    /// Only in the old matrix.
    Removed,
    /// In both, with different fields.
    Changed,
}

impl Change {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "added",
            Self::Removed => "removed",
            Self::Changed => "changed",
        }
    }
}

/// One changed field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    /// Field name as in the policy file (`destination_port`, `default_state`, ...).
    pub field: &'static str,
    /// Old value, as text.
    pub old: String,
    /// New value, as text.
    pub new: String,
}

/// A row as the diff shows it (the policy file's fields, as text).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RowView {
    /// Source system.
    pub source_system: String,
    /// Source port.
    pub source_port: String,
    /// Destination system.
    pub destination_system: String,
    /// Destination port.
    pub destination_port: String,
    /// Protocol column.
    pub protocol: String,
    /// `tcp`, `udp`, `tcp+udp`.
    pub transports: String,
    /// Application.
    pub application: String,
    /// `yes` / `no`.
    pub optional: String,
    /// `open`, `closed`, `filtered`, `n/a`.
    pub default_state: String,
    /// `yes` / `no`.
    pub management_only: String,
    /// Site-supplied default ports.
    pub site_ports: String,
    /// Description.
    pub description: String,
}

fn yes(b: bool) -> String {
    if b { "yes".into() } else { "no".into() }
}

impl RowView {
    fn of(r: &Row) -> Self {
        Self {
            source_system: r.source_system.clone(),
            source_port: r.source_port.to_string(),
            destination_system: r.destination_system.clone(),
            destination_port: r.destination_port.to_string(),
            protocol: r.protocol.clone(),
            transports: r.transports.iter().map(|t| t.as_str()).collect::<Vec<_>>().join("+"),
            application: r.application.clone(),
            optional: yes(r.optional),
            default_state: state_str(r.default_state).into(),
            management_only: yes(r.management_only),
            site_ports: r.site_ports.as_deref().map(render_ranges).unwrap_or_default(),
            description: r.description.clone(),
        }
    }

    fn fields(&self) -> [(&'static str, &str); 12] {
        [
            ("source_system", &self.source_system),
            ("source_port", &self.source_port),
            ("destination_system", &self.destination_system),
            ("destination_port", &self.destination_port),
            ("protocol", &self.protocol),
            ("transports", &self.transports),
            ("application", &self.application),
            ("optional", &self.optional),
            ("default_state", &self.default_state),
            ("management_only", &self.management_only),
            ("site_ports", &self.site_ports),
            ("description", &self.description),
        ]
    }
}

/// One row of the diff.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RowDiff {
    /// What happened.
    pub change: Change,
    /// Row id.
    pub id: String,
    /// The old row (removed, changed).
    pub old: Option<RowView>,
    /// The new row (added, changed).
    pub new: Option<RowView>,
    /// Changed fields (changed rows only).
    pub fields: Vec<FieldChange>,
}

/// The diff of two matrices.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MatrixDiff {
    /// Old product.
    pub old_product: String,
    /// New product.
    pub new_product: String,
    /// Rows: removed and changed in old order, then added in new order.
    pub rows: Vec<RowDiff>,
}

/// Compare by row id.
pub fn diff(old: &Matrix, new: &Matrix) -> MatrixDiff {
    let mut rows = Vec::new();
    for o in &old.rows {
        let ov = RowView::of(o);
        match new.row(&o.id) {
            None => rows.push(RowDiff {
                change: Change::Removed,
                id: o.id.clone(),
                old: Some(ov),
                new: None,
                fields: vec![],
            }),
            Some(n) => {
                let nv = RowView::of(n);
                let fields: Vec<FieldChange> = ov
                    .fields()
                    .iter()
                    .zip(nv.fields().iter())
                    .filter(|(a, b)| a.1 != b.1)
                    .map(|(a, b)| FieldChange { field: a.0, old: a.1.to_string(), new: b.1.to_string() })
                    .collect();
                if !fields.is_empty() {
                    rows.push(RowDiff {
                        change: Change::Changed,
                        id: o.id.clone(),
                        old: Some(ov),
                        new: Some(nv),
                        fields,
                    });
                }
            }
        }
    }
    for n in new.rows.iter().filter(|n| old.row(&n.id).is_none()) {
        rows.push(RowDiff {
            change: Change::Added,
            id: n.id.clone(),
            old: None,
            new: Some(RowView::of(n)),
            fields: vec![],
        });
    }
    MatrixDiff { old_product: old.product.clone(), new_product: new.product.clone(), rows }
}

impl MatrixDiff {
    /// Whether the two matrices have the same rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The document's "Port Changes" layout: a tab-separated table with a Change and an Id
    /// column in front, then one indented `field: old → new` line per changed field.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "Port Changes from {} to {}\n", self.old_product, self.new_product);
        if self.rows.is_empty() {
            out.push_str("no rows added, removed or changed\n");
            return out;
        }
        out.push_str("Change\tId\tSource System\tSource Port\tDestination System\tDestination Port\tNetwork / Application Protocol\tOptionally Enabled / Disabled?\tDefault Port State\tDescription\n");
        for r in &self.rows {
            let v = r.new.as_ref().or(r.old.as_ref()).expect("a row has a side");
            let _ = writeln!(
                out,
                "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                r.change.as_str(),
                r.id,
                v.source_system,
                v.source_port,
                v.destination_system,
                v.destination_port,
                v.protocol,
                if v.optional == "yes" { "Yes" } else { "No" },
                v.default_state,
                v.description
            );
            for f in &r.fields {
                let _ = writeln!(out, "\t{}: {} → {}", f.field, show(&f.old), show(&f.new));
            }
        }
        let count = |c: Change| self.rows.iter().filter(|r| r.change == c).count();
        let _ = writeln!(
            out,
            "\n{} added, {} removed, {} changed",
            count(Change::Added),
            count(Change::Removed),
            count(Change::Changed)
        );
        out
    }
}

fn show(s: &str) -> String {
    if s.is_empty() { "(none)".into() } else { format!("`{s}`") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::config::SHIPPED_MATRIX;

    #[test]
    fn rows_added_removed_changed() {
        let new = Matrix::shipped();
        // An "8.1.1" made from 8.1.2: ps-10 on another port, ps-17 not optional, ps-27 absent,
        // ps-26 with other example ports, and a row 8.1.2 removed.
        let old_text = SHIPPED_MATRIX
            .replace("destination_port = \"5222 (C)\"", "destination_port = \"5223 (C)\"")
            .replace(
                "destination_port = \"450\"\nprotocol = \"TCP\"\ntransports = [\"tcp\"]\napplication = \"\"\noptional = true",
                "destination_port = \"450\"\nprotocol = \"TCP\"\ntransports = [\"tcp\"]\napplication = \"\"\noptional = false",
            )
            .replace("site_ports = \"389, 636, 3268, 3269\"", "site_ports = \"389\"")
            .replace("id = \"ps-27\"", "id = \"ps-99\"")
            .replace("product = \"Avaya Aura Presence Services 8.1.2\"", "product = \"PS 8.1.1\"");
        let old = Matrix::parse(&old_text, "old.toml").unwrap();
        let d = diff(&old, &new);
        let got: Vec<(Change, &str, Vec<&str>)> =
            d.rows.iter().map(|r| (r.change, r.id.as_str(), r.fields.iter().map(|f| f.field).collect())).collect();
        assert_eq!(
            got,
            [
                (Change::Changed, "ps-10", vec!["destination_port"]),
                (Change::Changed, "ps-17", vec!["optional"]),
                (Change::Changed, "ps-26", vec!["site_ports"]),
                (Change::Removed, "ps-99", vec![]),
                (Change::Added, "ps-27", vec![]),
            ]
        );
        assert_eq!(d.rows[0].fields[0].old, "5223 (C)");
        let text = d.render();
        assert!(text.starts_with("Port Changes from PS 8.1.1 to Avaya Aura Presence Services 8.1.2\n"), "{text}");
        assert!(text.contains("\tdestination_port: `5223 (C)` → `5222 (C)`\n"), "{text}");
        assert!(
            text.contains(
                "added\tps-27\tPresence Services\tEphemeral\tGlobalrelay.com\t25, 587\tTCP/SMTP\tYes\topen\t"
            )
        );
        assert!(text.ends_with("1 added, 1 removed, 3 changed\n"));
        let j = serde_json::to_value(&d).unwrap();
        assert_eq!(j["rows"][1]["fields"][0], serde_json::json!({"field": "optional", "old": "no", "new": "yes"}));
        assert!(diff(&new, &new).is_empty());
    }
}
