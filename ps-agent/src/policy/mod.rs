//! The policy side: a port matrix and a site config in, a compiled rule set out, and the
//! tools around it (import, diff, explain, export). Nothing here touches the kernel.

pub mod capture;
pub mod compile;
pub mod config;
pub mod diff;
pub mod explain;
pub mod export;
pub mod import;
pub mod model;
pub mod nearest;
pub mod portspec;
