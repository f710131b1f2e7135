//! The pin directory and the state directory of one agent: the agent creates its pin
//! directory itself (on bpffs, root's, mode 0700), refuses one somebody else made, and
//! holds an exclusive `flock` on both directories for its whole life, so that a second
//! agent with either directory is refused (the kernel drops the lock with the process:
//! no pid file to go stale, no pid to be reused). Only the names ps-agent pins are ever
//! removed from it ([`is_ours`]).

use std::{
    ffi::CString,
    fs,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _},
    },
    path::{Path, PathBuf},
};

use ps_common::names;

use super::{DataplaneError, host::is_bpffs};

/// A directory this agent holds locked: released (and so free for the next agent) when the
/// value is dropped or the process dies.
#[derive(Debug)]
pub struct Claim {
    path: PathBuf,
    _lock: OwnedFd,
}

impl Claim {
    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn refuse(path: &Path, why: impl Into<String>) -> DataplaneError {
    DataplaneError::PinDir { path: path.into(), why: why.into() }
}

/// Check that `path` may be this agent's pin directory without changing anything: on
/// bpffs, and, if it exists, a directory (not a symlink) owned by this user that no one
/// else may write or read.
///
/// # Errors
/// [`DataplaneError::PinDir`], saying why and what to do.
pub fn check(path: &Path) -> Result<(), DataplaneError> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    let on_bpffs = if path.exists() { is_bpffs(path) } else { parent.is_some_and(is_bpffs) };
    if !on_bpffs || parent.is_none() {
        return Err(refuse(path, "it is not a directory on a BPF filesystem (bpffs, e.g. under /sys/fs/bpf)"));
    }
    if is_bpffs(path) && parent.is_some_and(|p| !is_bpffs(p)) {
        return Err(refuse(path, "it is the root of the BPF filesystem; name a directory below it"));
    }
    private_dir(path)
}

/// `path`, if it exists, is a directory owned by this user that no one else can write. One
/// that others can read (what `mkdir` gives under the usual umask) is not a takeover risk:
/// [`claim_pin_dir`] narrows it to 0700.
fn private_dir(path: &Path) -> Result<(), DataplaneError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(refuse(path, format!("it cannot be inspected: {e}"))),
    };
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let mode = meta.mode() & 0o7777;
    if !meta.file_type().is_dir() {
        return Err(refuse(path, "it is not a directory (a symlink or a file)"));
    }
    if meta.uid() != me || mode & 0o022 != 0 {
        return Err(refuse(
            path,
            format!(
                "it is owned by uid {} with mode {mode:04o}; ps-agent creates its own, owned by uid {me} with mode 0700 \
                 (another user may have made this one: check it, remove it with `rm -r {}`, and start again)",
                meta.uid(),
                path.display()
            ),
        ));
    }
    Ok(())
}

/// Create (mode 0700) or check `path` as this agent's pin directory and lock it.
///
/// # Errors
/// [`DataplaneError::PinDir`] when it may not be used, [`DataplaneError::Claimed`] when
/// another agent holds it.
pub fn claim_pin_dir(path: &Path) -> Result<Claim, DataplaneError> {
    check(path)?;
    if !path.exists() {
        fs::DirBuilder::new().mode(0o700).create(path).map_err(|e| refuse(path, format!("mkdir failed: {e}")))?;
    }
    let claim = lock(path)?;
    // Exactly 0700, whatever the umask or an earlier version left.
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
        .map_err(|e| refuse(path, format!("chmod failed: {e}")))?;
    Ok(claim)
}

/// Create (mode 0700) or check `path` as this agent's state directory and lock it: an
/// existing one must be this user's and writable by no one else.
///
/// # Errors
/// As [`claim_pin_dir`].
pub fn claim_state_dir(path: &Path) -> Result<Claim, DataplaneError> {
    if !path.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|e| refuse(path, format!("mkdir failed: {e}")))?;
    }
    let meta = fs::symlink_metadata(path).map_err(|e| refuse(path, format!("it cannot be inspected: {e}")))?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if !meta.file_type().is_dir() || meta.uid() != me || meta.mode() & 0o022 != 0 {
        return Err(refuse(
            path,
            format!(
                "a state directory must be a directory of uid {me} that no one else can write (it is uid {}, mode {:04o})",
                meta.uid(),
                meta.mode() & 0o7777
            ),
        ));
    }
    lock(path)
}

/// Take the exclusive lock of directory `path`.
fn lock(path: &Path) -> Result<Claim, DataplaneError> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| refuse(path, "a NUL in the path"))?;
    // SAFETY: open with a valid C string; the result is checked.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(refuse(path, format!("open failed: {}", std::io::Error::last_os_error())));
    }
    // SAFETY: fd was just opened and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(DataplaneError::Claimed { path: path.into(), holder: holder(path) });
    }
    Ok(Claim { path: path.into(), _lock: fd })
}

/// Whether another process holds the lock of `path` (a running agent).
pub fn locked(path: &Path) -> bool {
    match lock(path) {
        Ok(_) => false,
        Err(e) => matches!(e, DataplaneError::Claimed { .. }),
    }
}

/// The pid holding the `flock` of `path`, from `/proc/locks`.
pub fn holder(path: &Path) -> Option<u32> {
    let meta = fs::metadata(path).ok()?;
    let (major, minor) = (libc::major(meta.dev()), libc::minor(meta.dev()));
    let want = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    fs::read_to_string("/proc/locks").ok()?.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&"FLOCK") && f.get(5) == Some(&want.as_str())).then(|| f.get(4)?.parse().ok()).flatten()
    })
}

/// Whether `name`, an entry of a pin directory, is one ps-agent pins there: a map it pins,
/// or the folder of kept links.
pub fn is_ours(name: &str) -> bool {
    names::PINNED_MAPS.contains(&name) || names::COUNTER_MAPS.contains(&name) || name == names::LINKS_DIR
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bpffs_directories_below_its_root() {
        // /tmp is not bpffs: neither it nor anything below it is a pin directory.
        for p in ["/tmp", "/tmp/ps-agent-x", "/", "/etc/passwd"] {
            let e = check(Path::new(p)).unwrap_err().to_string();
            assert!(e.contains("not a directory on a BPF filesystem"), "{p}: {e}");
        }
    }

    #[test]
    fn what_ps_agent_pins() {
        assert!(is_ours(names::MAP_STATE) && is_ours(names::MAP_RULE_CNT) && is_ours("links"));
        assert!(!is_ours("passwd") && !is_ours("other_tool_map"));
    }
}
