//! Observe: what a running agent publishes (its state file) and how it is read and shown:
//! `stats`, `watch`, `flows`, the dry-run report, the metrics endpoint, drop events, and
//! the log lines' format under journald.

use std::path::PathBuf;

pub mod events;
pub mod flows;
pub mod format;
pub mod journal;
pub mod metrics;
pub mod report;
pub mod state;
pub mod stats;
pub mod watch;

/// Why the running agent could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// No state file.
    #[error("ps-agent is not running: no state file at {} (start it with `ps-agent run`)", path.display())]
    NotRunning {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The state file does not parse.
    #[error("failed to parse state file {}: {source}", path.display())]
    Parse {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// Reading the pinned maps failed.
    #[error(transparent)]
    Dataplane(#[from] crate::dataplane::DataplaneError),
}
