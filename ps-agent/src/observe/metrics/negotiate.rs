//! Content negotiation of a scrape: the exposition format by `Accept` (OpenMetrics when the
//! scraper prefers it, as Prometheus does; the classic text format otherwise, as the Go
//! client library decides), and gzip by `Accept-Encoding`.

/// An exposition format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text.
    OpenMetrics,
    /// The classic Prometheus text format 0.0.4.
    Classic,
}

impl Format {
    /// `Content-Type` of the answer.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::Classic => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// Items of a header list: (value without parameters, lowercased; its q, 1 when absent).
fn items(header: &str) -> impl Iterator<Item = (String, f32)> + '_ {
    header.split(',').filter_map(|item| {
        let mut parts = item.split(';');
        let value = parts.next()?.trim().to_ascii_lowercase();
        if value.is_empty() {
            return None;
        }
        let q = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .map_or(1.0, |(_, v)| v.trim().parse::<f32>().unwrap_or(0.0));
        Some((value, q))
    })
}

/// The format for an `Accept` header: OpenMetrics when it is accepted at least as much as
/// the classic text format.
pub fn format(accept: Option<&str>) -> Format {
    let (mut om, mut text) = (0.0f32, 0.0f32);
    for (value, q) in items(accept.unwrap_or("")) {
        match value.as_str() {
            "application/openmetrics-text" => om = om.max(q),
            "text/plain" | "text/*" | "*/*" => text = text.max(q),
            _ => {}
        }
    }
    if om > 0.0 && om >= text { Format::OpenMetrics } else { Format::Classic }
}

/// Does `Accept-Encoding` ask for gzip (named, or `*`, with q > 0)?
pub fn gzip(accept_encoding: Option<&str>) -> bool {
    let mut named = None;
    let mut any = 0.0f32;
    for (value, q) in items(accept_encoding.unwrap_or("")) {
        match value.as_str() {
            "gzip" | "x-gzip" => named = Some(q),
            "*" => any = q,
            _ => {}
        }
    }
    named.unwrap_or(any) > 0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_gets_openmetrics() {
        // What Prometheus 2.x sends.
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(format(Some(prom)), Format::OpenMetrics);
        assert_eq!(format(Some("application/openmetrics-text")), Format::OpenMetrics);
    }

    #[test]
    fn others_get_the_classic_text() {
        assert_eq!(format(None), Format::Classic, "curl sends */*, or nothing");
        assert_eq!(format(Some("*/*")), Format::Classic);
        assert_eq!(format(Some("text/plain;version=0.0.4")), Format::Classic);
        assert_eq!(format(Some("text/plain, application/openmetrics-text;q=0.5")), Format::Classic);
        assert_eq!(format(Some("application/openmetrics-text;q=0")), Format::Classic, "q=0: not acceptable");
    }

    #[test]
    fn gzip_when_asked() {
        assert!(gzip(Some("gzip")));
        assert!(gzip(Some("deflate, gzip;q=0.5")));
        assert!(gzip(Some("*")));
        assert!(!gzip(None));
        assert!(!gzip(Some("identity")));
        assert!(!gzip(Some("gzip;q=0")));
        assert!(!gzip(Some("*, gzip;q=0")), "named beats *");
    }
}
