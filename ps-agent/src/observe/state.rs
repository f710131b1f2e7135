//! The state file: what `run` publishes in its state directory for the other commands
//! (`stats`, `flows`, `report`, `reload`, `enforce`, the metrics endpoint), and the pending
//! commit-confirm beside it.

use std::{
    fs,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::ObserveError;
use crate::{
    dataplane::Attached,
    policy::{
        compile::{CompiledRule, Origin, RuleKind, RuleSet},
        config::{ReplyTracking, Transport},
    },
};

/// Default directory for the state file.
pub const DEFAULT_STATE_DIR: &str = "/run/ps-agent";

/// A rule as the state file records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleMeta {
    /// Rule id.
    pub id: String,
    /// Rows it stands for.
    pub rows: Vec<String>,
    /// Where the rule comes from.
    pub origin: Origin,
    /// Transport.
    pub proto: Transport,
    /// Ports as the matrix writes them.
    pub ports: String,
    /// Inbound rule or reply rule.
    pub direction: RuleKind,
    /// Interfaces it is limited to (`None`: all).
    pub interfaces: Option<Vec<String>>,
    /// Description.
    pub description: String,
    /// Counter slot.
    pub counter: u32,
    /// Bound system whose addresses may send this (`None`: any source).
    #[serde(default)]
    pub system: Option<String>,
}

impl From<&CompiledRule> for RuleMeta {
    fn from(r: &CompiledRule) -> Self {
        Self {
            id: r.id.clone(),
            rows: r.rows.clone(),
            origin: r.origin,
            proto: r.transport,
            ports: r.ports_text.clone(),
            direction: r.kind,
            interfaces: r.interfaces.clone(),
            description: r.description.clone(),
            counter: r.counter,
            system: r.system.clone(),
        }
    }
}

/// What `run` publishes for `stats`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    /// Agent version.
    pub version: String,
    /// Agent pid.
    pub pid: u32,
    /// Start time, seconds since the epoch.
    pub started_unix: u64,
    /// Where the maps are pinned.
    pub pin_dir: PathBuf,
    /// Product of the matrix.
    pub product: String,
    /// Policy file.
    pub policy: String,
    /// Fingerprint of the compiled tables.
    pub fingerprint: String,
    /// Counter stride.
    pub rules_cap: u32,
    /// Management interface.
    pub management_interface: String,
    /// Attached interfaces.
    pub interfaces: Vec<Attached>,
    /// Rules in counter order.
    pub rules: Vec<RuleMeta>,
    /// Reply admission in force, after any fallback.
    pub reply_tracking: ReplyTracking,
    /// The site config the agent reads on reload (`None`: defaults).
    #[serde(default)]
    pub config: Option<PathBuf>,
    /// Active policy generation.
    #[serde(default)]
    pub generation: u32,
    /// Successful reloads.
    #[serde(default)]
    pub reloads: u64,
    /// Outcome of the last reload.
    #[serde(default)]
    pub last_reload: Option<ReloadOutcome>,
    /// Interface disappearances and re-attachments seen.
    #[serde(default)]
    pub link_events: u64,
    /// Since when the pinned counters count (seconds since the epoch; 0: unknown, use
    /// `started_unix`). They survive restarts (`crate::dataplane::pins`).
    #[serde(default)]
    pub counters_since_unix: u64,
    /// Time from reading the config to the last interface attached, milliseconds.
    #[serde(default)]
    pub policy_load_ms: u64,
    /// Kernel release (`uname -r`).
    #[serde(default)]
    pub kernel: String,
    /// The metrics endpoint, if any.
    #[serde(default)]
    pub metrics: Option<String>,
    /// The matrix rows, for the dry-run report's nearest-row hints.
    #[serde(default)]
    pub rows: Vec<crate::policy::nearest::RowHint>,
    /// The kernel features the program was loaded for (`crate::dataplane::probe`).
    #[serde(default)]
    pub features: Option<crate::dataplane::probe::Features>,
}

/// How the last reload ended; in the state file `"ok"` or the error message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum ReloadOutcome {
    /// The new policy is in force.
    Applied,
    /// Rejected, and why: the running policy stayed.
    Rejected(String),
}

impl From<String> for ReloadOutcome {
    fn from(s: String) -> Self {
        if s == "ok" { Self::Applied } else { Self::Rejected(s) }
    }
}

impl From<ReloadOutcome> for String {
    fn from(o: ReloadOutcome) -> Self {
        match o {
            ReloadOutcome::Applied => "ok".into(),
            ReloadOutcome::Rejected(why) => why,
        }
    }
}

/// A pending commit-confirm: enforce now, back to dry-run at the deadline unless
/// `ps-agent confirm` removes this file first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingConfirm {
    /// Seconds since the epoch.
    pub deadline_unix: u64,
}

impl PendingConfirm {
    /// Path in the state directory.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("confirm.json")
    }
}

impl AgentState {
    /// Build from a compiled rule set.
    #[expect(clippy::too_many_arguments, reason = "one field each, all required")]
    pub fn new(
        reply_tracking: ReplyTracking,
        set: &RuleSet,
        product: &str,
        policy: &str,
        mgmt: &str,
        pin_dir: &Path,
        rules_cap: u32,
        interfaces: Vec<Attached>,
    ) -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            started_unix: crate::clock::unix_now(),
            pin_dir: pin_dir.into(),
            product: product.into(),
            policy: policy.into(),
            fingerprint: set.fingerprint(),
            rules_cap,
            management_interface: mgmt.into(),
            interfaces,
            rules: set.rules.iter().map(RuleMeta::from).collect(),
            reply_tracking,
            config: None,
            generation: 0,
            reloads: 0,
            last_reload: None,
            link_events: 0,
            counters_since_unix: 0,
            policy_load_ms: 0,
            kernel: String::new(),
            metrics: None,
            rows: vec![],
            features: None,
        }
    }

    /// Write to `dir/state.json` atomically (temporary file, rename), readable by its
    /// owner only (the rule set, counters' layout and kernel are root's to read).
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        write_private(&Self::path(dir), &serde_json::to_vec_pretty(self).expect("serializable"))
    }

    /// Whether the agent that wrote this state is still running.
    pub fn agent_alive(&self) -> bool {
        pid_alive(self.pid)
    }

    /// Path of the state file in `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("state.json")
    }
}

/// Is process `pid` alive (and not this process)? A zombie — dead, not yet reaped by its
/// parent — is not: it holds no BPF objects any more.
pub fn pid_alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence.
    if pid == 0 || pid == std::process::id() || unsafe { libc::kill(pid as i32, 0) } != 0 {
        return false;
    }
    // /proc/PID/stat: "pid (comm) S ...", the state after the last ')'.
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
}

/// Write `bytes` to `path` atomically, mode 0600: a temporary file beside it, created anew
/// (never through a planted symlink), then renamed over it.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let mut f =
        fs::OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(&tmp)?;
    f.write_all(bytes)?;
    fs::rename(&tmp, path)
}

/// The state file of the agent running with `state_dir`.
pub fn read_state(state_dir: &Path) -> Result<AgentState, ObserveError> {
    let path = AgentState::path(state_dir);
    let text = fs::read_to_string(&path).map_err(|_| ObserveError::NotRunning { path: path.clone() })?;
    serde_json::from_str(&text).map_err(|source| ObserveError::Parse { path, source })
}
