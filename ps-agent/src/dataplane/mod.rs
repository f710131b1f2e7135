//! The data plane: the only code that calls aya. It loads the eBPF object, writes compiled
//! rule sets into its maps, attaches and detaches the programs, keeps links across
//! restarts, and reads the maps a running agent pins for the other commands.
//!
//! [`Loaded`] is one agent's loaded object; its methods live in the module of their concern:
//! [`loaded`] (load, test runs), [`write`] (policies and mode), [`attach`], [`links`]
//! (`on_exit = "keep"`), [`flows`] (seeding), [`events`] (the drop-event ring).

pub mod attach;
pub mod counter_pins;
pub mod counters;
pub mod error;
pub mod events;
pub mod flows;
pub mod host;
pub mod links;
pub mod loaded;
pub mod pindir;
pub mod pins;
pub mod probe;
pub mod write;

pub use attach::{AttachMode, Attached};
pub use counters::Counters;
pub use error::DataplaneError;
pub use loaded::{LoadOptions, Loaded};
