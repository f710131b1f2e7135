//! Operations around the agent on a host: `doctor`, `install`/`uninstall`, `unload`, and
//! coexistence with other XDP programs.

pub mod coexist;
pub mod doctor;
pub mod install;
pub mod unload;

/// One thing a command did, or found already done: `--json` reports whether anything
/// `changed`, so that a playbook can tell "changed" from "already so".
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Done {
    /// Did it change the host?
    pub changed: bool,
    /// What, for a person.
    pub what: String,
}

impl Done {
    /// A change.
    pub fn did(what: impl Into<String>) -> Self {
        Self { changed: true, what: what.into() }
    }

    /// Found so already, or left alone.
    pub fn found(what: impl Into<String>) -> Self {
        Self { changed: false, what: what.into() }
    }
}

impl std::fmt::Display for Done {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.what)
    }
}
