//! Port specifications as port matrices write them.
//!
//! Forms: `443`, `5222 (C)` (configurable), `7001-7199`, `8902- 8913`,
//! `1050-1065, 1066-1081`, `25 or 587`, `Ephemeral`, and free text such as
//! `Depends on Enterprise` (a list the site must supply).

use std::fmt;

/// A parsed port column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortSpec {
    /// Concrete ports, as inclusive ranges in document order.
    Ports {
        /// Inclusive ranges.
        ranges: Vec<(u16, u16)>,
        /// Marked `(C)`: the site may configure another port.
        configurable: bool,
    },
    /// The ephemeral (dynamic) range of whichever side it describes.
    Ephemeral,
    /// Free text: the ports depend on the site (e.g. `Depends on Enterprise`).
    SiteSupplied(String),
}

/// Why a port spec could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid port `{token}` in `{text}`: {why}")]
pub struct PortSpecError {
    /// The whole spec.
    pub text: String,
    /// The offending piece.
    pub token: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl PortSpec {
    /// Parse a matrix port column. Text with no digit at all is site-supplied.
    pub fn parse(text: &str) -> Result<Self, PortSpecError> {
        let t = text.trim();
        if t.eq_ignore_ascii_case("ephemeral") {
            return Ok(Self::Ephemeral);
        }
        if !t.chars().any(|c| c.is_ascii_digit()) {
            return Ok(Self::SiteSupplied(t.to_string()));
        }
        let mut configurable = false;
        let mut body = t.to_string();
        if let Some(i) = body.find("(C)").or_else(|| body.find("(c)")) {
            configurable = true;
            body.replace_range(i..i + 3, "");
        }
        let ranges = parse_ranges(&body).map_err(|(token, why)| PortSpecError { text: t.to_string(), token, why })?;
        Ok(Self::Ports { ranges, configurable })
    }

    /// The concrete ranges, if any.
    pub fn ranges(&self) -> &[(u16, u16)] {
        match self {
            Self::Ports { ranges, .. } => ranges,
            _ => &[],
        }
    }
}

/// Parse `a`, `a-b`, separated by `,`, `or`, `and`, `/` or white space.
pub fn parse_ranges(text: &str) -> Result<Vec<(u16, u16)>, (String, &'static str)> {
    let normalized = text.replace(" or ", ",").replace(" and ", ",").replace(';', ",");
    let mut out = Vec::new();
    for piece in normalized.split(',') {
        let piece = piece.trim();
        if piece.is_empty() {
            continue;
        }
        let (lo, hi) = match piece.split_once('-') {
            Some((a, b)) => (port(a.trim())?, port(b.trim())?),
            None => {
                let p = port(piece)?;
                (p, p)
            }
        };
        if lo > hi {
            return Err((piece.to_string(), "range runs backwards"));
        }
        out.push((lo, hi));
    }
    if out.is_empty() {
        return Err((text.to_string(), "no port given"));
    }
    Ok(out)
}

fn port(s: &str) -> Result<u16, (String, &'static str)> {
    let n: u32 = s.parse().map_err(|_| (s.to_string(), "not a number"))?;
    if n == 0 || n > 65535 {
        return Err((s.to_string(), "ports are 1 to 65535"));
    }
    Ok(n as u16)
}

/// Render ranges as the matrix writes them: `443`, `7001-7199`, `1050-1065, 1066-1081`.
pub fn render_ranges(ranges: &[(u16, u16)]) -> String {
    let parts: Vec<String> =
        ranges.iter().map(|&(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect();
    parts.join(", ")
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ports { ranges, configurable } => {
                write!(f, "{}", render_ranges(ranges))?;
                if *configurable {
                    write!(f, " (C)")?;
                }
                Ok(())
            }
            Self::Ephemeral => write!(f, "Ephemeral"),
            Self::SiteSupplied(t) => write!(f, "{t}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports(ranges: &[(u16, u16)], configurable: bool) -> PortSpec {
        PortSpec::Ports { ranges: ranges.to_vec(), configurable }
    }

    #[test]
    fn every_form_in_the_ps_matrix() {
        assert_eq!(PortSpec::parse("443").unwrap(), ports(&[(443, 443)], false));
        assert_eq!(PortSpec::parse("5222 (C)").unwrap(), ports(&[(5222, 5222)], true));
        assert_eq!(PortSpec::parse("7001-7199").unwrap(), ports(&[(7001, 7199)], false));
        assert_eq!(PortSpec::parse("1050-1065, 1066-1081").unwrap(), ports(&[(1050, 1065), (1066, 1081)], false));
        assert_eq!(PortSpec::parse("25 or 587").unwrap(), ports(&[(25, 25), (587, 587)], false));
        assert_eq!(PortSpec::parse("Ephemeral").unwrap(), PortSpec::Ephemeral);
        assert_eq!(
            PortSpec::parse("Depends on Enterprise").unwrap(),
            PortSpec::SiteSupplied("Depends on Enterprise".into())
        );
    }

    #[test]
    fn tolerated_variants() {
        assert_eq!(PortSpec::parse("8902- 8913").unwrap(), ports(&[(8902, 8913)], false));
        assert_eq!(PortSpec::parse(" 22 ").unwrap(), ports(&[(22, 22)], false));
    }

    #[test]
    fn rejects_nonsense() {
        assert!(PortSpec::parse("0").is_err());
        assert!(PortSpec::parse("70000").is_err());
        assert!(PortSpec::parse("20-10").is_err());
        assert!(PortSpec::parse("44x3").is_err());
    }

    #[test]
    fn renders_back() {
        for t in ["443", "5222 (C)", "7001-7199", "1050-1065, 1066-1081", "Ephemeral"] {
            assert_eq!(PortSpec::parse(t).unwrap().to_string(), t);
        }
        assert_eq!(PortSpec::parse("25 or 587").unwrap().to_string(), "25, 587");
    }
}
