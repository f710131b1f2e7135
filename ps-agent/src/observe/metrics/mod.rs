//! The metrics endpoint: `ps-agent run --metrics [ADDR]` serves the counters on
//! `GET /metrics` (and `HEAD`), OpenMetrics or the classic text format by `Accept`, gzipped
//! when asked. Every scrape reads the pinned maps, as `ps-agent stats` does.
//!
//! `--metrics` alone listens on `127.0.0.1:9487`. For any other address, a web config in the
//! exporter-toolkit format (`metrics_web_config` in the site config, or
//! `--metrics-web-config`) adds TLS and basic authentication; a non-loopback address served
//! without them is logged with a warning at start.
//!
//! - [`encode`]: the text (pure);
//! - [`web_config`]: the web config, and the TLS config built from it;
//! - `auth`: basic authentication; `negotiate`: format and gzip by the request's headers;
//! - `scrape`: one map read shared by concurrent scrapes;
//! - `server`: the HTTP server and its bounds.

mod auth;
#[cfg(test)]
mod dashboard;
pub mod encode;
mod negotiate;
mod scrape;
mod server;
#[cfg(test)]
mod tests;
pub mod web_config;

use std::path::PathBuf;

pub use encode::{Feature, Live, encode_metrics, to_classic};
pub use negotiate::Format;
pub use scrape::Reader;
pub use server::{
    Endpoint, HANDSHAKE_TIMEOUT, HEADER_TIMEOUT, MAX_CONNECTIONS, MetricsError, REQUEST_TIMEOUT, bind, serve,
};

/// Default address of `--metrics` without a value.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9487";

/// What the running agent serves: its pinned maps and state file (in `state_dir`), and
/// where its XDP program is attached now (`attached(interface)`, a kernel query the caller
/// provides); `asked` says what the site asked for.
pub fn agent_reader(state_dir: PathBuf, asked: Live, attached: fn(&str) -> bool) -> Reader {
    std::sync::Arc::new(move || {
        let (state, report) = crate::observe::stats::snapshot(&state_dir).map_err(|e| e.to_string())?;
        let attached = report.interfaces.iter().filter(|a| attached(&a.name)).map(|a| a.name.clone()).collect();
        Ok(encode_metrics(&state, &report, &Live { attached, ..asked.clone() }))
    })
}
