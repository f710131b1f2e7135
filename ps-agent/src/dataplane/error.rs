//! Why something on the kernel side failed, for a person at a console: every variant
//! names the object and, where the cause is known, what to do.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use aya::programs::ProgramError;
use ps_common::MAX_IFINDEX;

/// A load error, for a person at a console.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// Not root.
    #[error("ps-agent must run as root (or with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON): effective uid is {uid}")]
    NotRoot {
        /// Effective uid.
        uid: u32,
    },
    /// No bpffs.
    #[error("no BPF filesystem at /sys/fs/bpf: mount it with `mount -t bpf -o mode=0700 bpf /sys/fs/bpf`")]
    NoBpffs,
    /// An interface does not exist.
    #[error("interface `{name}` does not exist; interfaces here: {available}")]
    NoInterface {
        /// Name.
        name: String,
        /// What exists.
        available: String,
    },
    /// The ifindex is outside the interface table.
    #[error("interface `{name}` has ifindex {ifindex}; ps-agent supports ifindex below {MAX_IFINDEX}")]
    IfindexTooLarge {
        /// Name.
        name: String,
        /// Index.
        ifindex: u32,
    },
    /// No interface to enforce on.
    #[error(
        "no interface to enforce on: neither eth0 nor eth1 exists; name them with --iface or `interfaces` in the config"
    )]
    NoInterfaces,
    /// The binary was built without the eBPF object.
    #[error("this ps-agent binary was built with AYA_BUILD_SKIP and has no XDP program; rebuild without it")]
    NoObject,
    /// The object could not be loaded.
    #[error("failed to load the BPF object: {source}{hint}")]
    Object {
        /// Cause.
        #[source]
        source: Box<aya::EbpfError>,
        /// Hint.
        hint: String,
    },
    /// The verifier rejected the program.
    #[error("the kernel verifier rejected program `{program}`: {summary}\nfull verifier log: {log}\n{hint}")]
    Verifier {
        /// Program.
        program: &'static str,
        /// Last lines of the log.
        summary: String,
        /// Where the whole log is.
        log: String,
        /// What to do ([`verifier_hint`]).
        hint: String,
    },
    /// Another program operation failed.
    #[error("failed to {action} program `{program}`: {source}")]
    Program {
        /// What was being done.
        action: &'static str,
        /// Program.
        program: &'static str,
        /// Cause.
        #[source]
        source: Box<ProgramError>,
    },
    /// Attaching failed.
    #[error("failed to attach XDP to `{iface}` in {mode} mode: {source}{hint}")]
    Attach {
        /// Interface.
        iface: String,
        /// Mode.
        mode: &'static str,
        /// Cause.
        #[source]
        source: Box<ProgramError>,
        /// Hint.
        hint: String,
    },
    /// A link could not be kept or taken over.
    #[error("failed to keep or take over the link on `{iface}`: {why}")]
    KeepLink {
        /// Interface.
        iface: String,
        /// What went wrong.
        why: String,
    },
    /// Attaching the egress program failed.
    #[error("failed to attach the egress program to `{iface}`: {source}")]
    AttachEgress {
        /// Interface.
        iface: String,
        /// Cause.
        #[source]
        source: Box<ProgramError>,
    },
    /// A map operation failed.
    #[error("failed to {action} map `{map}`: {source}")]
    Map {
        /// What was being done.
        action: &'static str,
        /// Map.
        map: &'static str,
        /// Cause.
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// Pinning failed.
    #[error("failed to pin map `{map}` at {path}: {source}")]
    Pin {
        /// Map.
        map: &'static str,
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: Box<aya::pin::PinError>,
    },
    /// Filesystem error on a path.
    #[error("failed to {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A pinned map could not be opened, read or written.
    #[error("failed to {action} pinned map {}: {source} (is the agent running with this --pin-dir?)", path.display())]
    Pinned {
        /// What was being done.
        action: &'static str,
        /// Pin path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// A counter pin that does not fit this agent could not be removed.
    #[error("failed to remove stale pin {}: {source}; remove it by hand or run `ps-agent unload`", path.display())]
    StalePin {
        /// Pin path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A directory that may not be this agent's pin or state directory.
    #[error("refusing {} as ps-agent's directory: {why}", path.display())]
    PinDir {
        /// The directory.
        path: PathBuf,
        /// Why, and what to do.
        why: String,
    },
    /// Another process (another agent) holds the directory's lock.
    #[error("{} is in use by another ps-agent{}; stop it first, or give this one its own --pin-dir and --state-dir", path.display(), holder.map_or(String::new(), |p| format!(" (pid {p})")))]
    Claimed {
        /// The directory.
        path: PathBuf,
        /// The pid holding the lock, if /proc/locks names it.
        holder: Option<u32>,
    },
    /// The policy does not fit the maps.
    #[error("the compiled policy has {needed} {what}; the maps hold {cap}")]
    TooBig {
        /// What.
        what: &'static str,
        /// Needed.
        needed: usize,
        /// Capacity.
        cap: u32,
    },
}

pub(crate) fn map_err(action: &'static str, map: &'static str) -> impl FnOnce(aya::maps::MapError) -> DataplaneError {
    move |source| DataplaneError::Map { action, map, source: Box::new(source) }
}

pub(crate) fn missing_map(name: &'static str) -> DataplaneError {
    DataplaneError::Map {
        action: "find",
        map: name,
        source: Box::new(aya::maps::MapError::InvalidName { name: name.into() }),
    }
}

impl DataplaneError {
    /// The interface, when this is an attach refused because a program is there already
    /// (EBUSY, EEXIST): the caller can name that program.
    pub fn busy_interface(&self) -> Option<&str> {
        match self {
            Self::Attach { iface, source, .. } if matches!(errno(source), Some(libc::EBUSY | libc::EEXIST)) => {
                Some(iface)
            }
            _ => None,
        }
    }
}

/// What an operator can do about a verifier rejection, from its log.
pub fn verifier_hint(log: &str) -> String {
    let (tested_major, tested_minor) = ps_common::MIN_KERNEL;
    if log.contains("invalid func unknown#") || log.contains("unknown func") {
        "this kernel's verifier checked a call to a BPF helper the kernel lacks: either the feature \
         probes found a helper that is not there (a partial backport?), or the verifier does not read \
         the program's load-time switches as constants (frozen read-only maps, upstream 5.5) and so \
         checks the branches they turn off (Ubuntu 18.04's 5.3 does this); `ps-agent doctor` lists \
         what was probed, and its output belongs in a bug report; until then, enforce the same rule \
         set with netfilter: `ps-agent export --format nftables|iptables`"
            .into()
    } else {
        format!(
            "`ps-agent doctor` checks the kernel (the program is tested on {tested_major}.{tested_minor} and \
             newer); until the program loads, enforce the same rule set with netfilter: `ps-agent export \
             --format nftables|iptables`"
        )
    }
}

pub(crate) fn load_error(program: &'static str, e: ProgramError, log_dir: &Path) -> DataplaneError {
    match e {
        ProgramError::LoadError { io_error, verifier_log } => {
            let text = verifier_log.to_string();
            let _ = fs::create_dir_all(log_dir);
            let path = log_dir.join(format!("verifier-{program}.log"));
            let saved = fs::write(&path, &text)
                .map(|()| path.display().to_string())
                .unwrap_or_else(|e| format!("(could not write {}: {e})", path.display()));
            let tail: Vec<&str> = text.lines().rev().take(6).collect();
            let summary = format!("{io_error}; {}", tail.into_iter().rev().collect::<Vec<_>>().join(" / "));
            DataplaneError::Verifier { program, summary, log: saved, hint: verifier_hint(&text) }
        }
        source => DataplaneError::Program { action: "load", program, source: Box::new(source) },
    }
}

pub(crate) fn errno(e: &ProgramError) -> Option<i32> {
    match e {
        ProgramError::SyscallError(s) => s.io_error.raw_os_error(),
        _ => None,
    }
}

pub(crate) fn attach_error(iface: &str, mode: &'static str, source: ProgramError) -> DataplaneError {
    let hint = match errno(&source) {
        Some(libc::EBUSY) | Some(libc::EEXIST) => format!(
            " (another XDP program is attached to `{iface}`: see `ip link show dev {iface}`; detach it with `ip link set dev {iface} xdp off` or `xdp-loader unload {iface} --all`)"
        ),
        Some(libc::EOPNOTSUPP) => " (the driver supports no XDP in this mode; try --xdp-mode skb)".into(),
        Some(libc::EPERM) => " (permission denied: run as root)".into(),
        _ => String::new(),
    };
    DataplaneError::Attach { iface: iface.into(), mode, source: Box::new(source), hint }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_rejections_say_what_to_do() {
        // 5.10's answer to `bpf_ktime_get_coarse_ns`, had the probes let it through.
        let old = "7460: (85) call unknown#160\ninvalid func unknown#160\nprocessed 7460 insns";
        assert!(verifier_hint(old).contains("feature probes"), "{}", verifier_hint(old));
        // 5.3's answer to `bpf_jiffies64` behind a switch it did not read as a constant.
        let unpruned = "661: (85) call unknown#118\ninvalid func unknown#118\nprocessed 188 insns";
        assert!(verifier_hint(unpruned).contains("load-time switches as constants"), "{}", verifier_hint(unpruned));
        let other = "R1 offset is outside of the packet";
        for log in [old, other] {
            let h = verifier_hint(log);
            assert!(h.contains("ps-agent doctor") && h.contains("ps-agent export --format"), "{h}");
        }
        let e = DataplaneError::Verifier {
            program: "ps_xdp",
            summary: "x".into(),
            log: "/tmp/l".into(),
            hint: verifier_hint(old),
        };
        assert!(e.to_string().ends_with(&verifier_hint(old)), "{e}");
    }
}
