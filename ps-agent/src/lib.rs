//! ps-agent: enforce an Avaya port matrix with XDP.
//!
//! The pipeline, one module per stage: [`config`] (read and validate) → [`compile`]
//! (pure, deterministic rule set) → [`load`] (the only module that calls aya) →
//! [`observe`] (state file, counters, reports). [`run`] drives the daemon.

pub mod coexist;
pub mod compile;
pub mod config;
pub mod diff;
pub mod doctor;
pub mod events;
pub mod explain;
pub mod export;
pub mod import;
pub mod install;
pub mod load;
pub mod metrics;
pub mod model;
pub mod observe;
pub mod pinned;
pub mod portspec;
pub mod report;
pub mod run;
pub mod watch;
