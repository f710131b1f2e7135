//! ps-agent: enforce an Avaya port matrix with XDP.
//!
//! The folders are the pipeline, and imports run one way, down this list:
//! - [`policy`]: read, validate and compile a matrix and a site config into a rule set;
//!   import, diff, explain and export it. Pure: no kernel access.
//! - [`dataplane`]: the only code that touches the kernel's BPF side (aya): load the object,
//!   write a rule set into its maps, attach, pin, read pinned maps.
//! - [`observe`]: what a running agent publishes and how it is read: state file, stats,
//!   watch, dry-run report, metrics, drop events.
//! - [`ops`]: the host around the agent: doctor, install, coexistence with other XDP users.
//! - [`daemon`]: `ps-agent run`: the start-up sequence and the loop that serves signals.
//! - [`cli`]: the command line, one file per command group.

pub mod build_info;
pub mod clock;
pub mod daemon;
pub mod dataplane;
pub mod observe;
pub mod ops;
pub mod policy;
