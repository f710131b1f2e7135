//! Install, uninstall and unload: putting ps-agent on a host as a systemd service and
//! taking it (and whatever a crashed agent left in bpffs) away again.
//!
//! Every path can be moved under a `root` directory, so the tests (and packagers) can
//! install into a staging tree; systemd is only asked to reload or enable units when it is
//! running (`/run/systemd/system` exists) and no staging root is given.

use std::{
    fs, io,
    path::{Path, PathBuf},
    process::Command,
};

use crate::ops::{
    Done,
    unload::{UnloadError, unload},
};

/// The systemd unit name.
pub const UNIT_NAME: &str = "ps-agent.service";

/// The example site config the default config is made from.
const SITE_EXAMPLE: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../policy/site-example.toml"));

/// The systemd unit the packages ship (`packaging/ps-agent.service`), with the package's
/// paths on its `Exec` lines.
pub const UNIT: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/ps-agent.service"));

/// The binary as [`UNIT`] names it.
const UNIT_BINARY: &str = "/usr/sbin/ps-agent";

/// The config as [`UNIT`] names it.
const UNIT_CONFIG: &str = "/etc/ps-agent/config.toml";

/// An install, uninstall or unload error.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// Filesystem error.
    #[error("failed to {action} `{path}`: {source}{hint}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
        /// What to do.
        hint: &'static str,
    },
    /// Unloading what the agent left failed.
    #[error(transparent)]
    Unload(#[from] crate::ops::unload::UnloadError),
    /// `systemctl` failed.
    #[error("failed to run `systemctl {args}`: {detail}")]
    Systemctl {
        /// Arguments.
        args: String,
        /// What it said.
        detail: String,
    },
}

fn io_err(action: &'static str, path: &Path, hint: &'static str) -> impl FnOnce(io::Error) -> InstallError {
    let path = path.to_path_buf();
    move |source| InstallError::Io { action, path, source, hint }
}

/// `path` under `root` (`/` leaves it as it is).
pub fn rooted(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// Is systemd the running init, and may we talk to it (no staging root)?
fn systemd_running(root: &Path) -> bool {
    root == Path::new("/") && Path::new("/run/systemd/system").exists()
}

fn systemctl(args: &[&str]) -> Result<(), InstallError> {
    let out = Command::new("systemctl")
        .args(args)
        .output()
        .map_err(|e| InstallError::Systemctl { args: args.join(" "), detail: e.to_string() })?;
    if !out.status.success() {
        return Err(InstallError::Systemctl {
            args: args.join(" "),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Where things go.
#[derive(Clone, Debug)]
pub struct Layout {
    /// Staging root prefixed to every path (`/` on a real install).
    pub root: PathBuf,
    /// Installation prefix; the binary goes to `PREFIX/sbin/ps-agent`.
    pub prefix: PathBuf,
    /// Config directory.
    pub config_dir: PathBuf,
    /// systemd unit directory.
    pub unit_dir: PathBuf,
}

impl Layout {
    /// The binary, as the unit names it (without the root).
    pub fn binary(&self) -> PathBuf {
        self.prefix.join("sbin/ps-agent")
    }

    /// The config file, as the unit names it.
    pub fn config(&self) -> PathBuf {
        self.config_dir.join("config.toml")
    }

    /// The unit file, as systemd names it.
    pub fn unit(&self) -> PathBuf {
        self.unit_dir.join(UNIT_NAME)
    }

    /// The `enable` symlink.
    pub fn wants_link(&self) -> PathBuf {
        self.unit_dir.join("multi-user.target.wants").join(UNIT_NAME)
    }
}

/// The default config: every line of the shipped example commented out, except
/// `mode = "dry-run"`, so a fresh install counts and enforces nothing until the operator
/// chooses to, and `on_exit = "keep"`, so the programs keep enforcing while the agent
/// restarts (a crash, an upgrade). The packages ship this text as
/// `packaging/config.toml` (a test keeps the two the same).
pub fn default_config() -> String {
    let mut s = String::from(
        "# ps-agent site config. `ps-agent install` and the ps-agent packages put it here and\n\
         # never overwrite it.\n\
         #\n\
         # ps-agent starts in DRY-RUN: every packet passes, and what the matrix would drop is\n\
         # counted (`ps-agent stats`) and logged (`journalctl -u ps-agent`). Read the counters,\n\
         # make sure your own management access is admitted, then set mode = \"enforce\" and\n\
         # `systemctl restart ps-agent`. Check the result with `ps-agent check --config FILE`.\n\
         #\n\
         # Everything else below is commented out: the shipped Presence Services 8.1.2 matrix\n\
         # with its defaults applies. Uncomment what your site needs.\n\n",
    );
    for line in SITE_EXAMPLE.lines() {
        let t = line.trim_start();
        if t.starts_with("mode") && t.contains('=') {
            s.push_str("mode = \"dry-run\"                   # \"enforce\" once `ps-agent stats` looks right\n");
        } else if t.starts_with("on_exit") && t.contains('=') {
            s.push_str("on_exit = \"keep\"                   # \"detach\": stop filtering when the agent exits;\n");
        } else if t.is_empty() || t.starts_with('#') {
            s.push_str(line);
            s.push('\n');
        } else {
            s.push_str("# ");
            s.push_str(line);
            s.push('\n');
        }
    }
    s
}

/// The systemd unit for `binary` and `config`: [`UNIT`] with these paths on its `Exec`
/// lines, the rest of the text as the packages ship it.
pub fn unit_file(binary: &Path, config: &Path) -> String {
    let (bin, cfg) = (binary.display().to_string(), config.display().to_string());
    UNIT.lines()
        .map(|l| {
            if l.starts_with("Exec") {
                format!("{}\n", l.replace(UNIT_BINARY, &bin).replace(UNIT_CONFIG, &cfg))
            } else {
                format!("{l}\n")
            }
        })
        .collect()
}

/// Options of `install`.
#[derive(Clone, Debug)]
pub struct InstallOptions {
    /// Where things go.
    pub layout: Layout,
    /// Enable the unit (start at boot).
    pub enable: bool,
}

/// Copy `binary` into place, write the default config (never over an existing one) and the
/// unit, reload systemd and enable the unit. Returns what was done, one line each.
pub fn install(opts: &InstallOptions, binary: &Path) -> Result<Vec<Done>, InstallError> {
    let l = &opts.layout;
    let mut done = Vec::new();
    let bin = rooted(&l.root, &l.binary());
    let bytes = fs::read(binary).map_err(io_err("read the running binary", binary, ""))?;
    done.push(match place(&l.root, &bin, &bytes, 0o755)? {
        true => Done::did(format!("installed {}", bin.display())),
        false => Done::found(format!("{} is this binary already", bin.display())),
    });

    let cfg = rooted(&l.root, &l.config());
    if fs::symlink_metadata(&cfg).is_ok() {
        done.push(Done::found(format!("kept the existing config {}", cfg.display())));
    } else {
        place(&l.root, &cfg, default_config().as_bytes(), 0o644)?;
        done.push(Done::did(format!(
            "wrote {} (mode = \"dry-run\": nothing is dropped until you choose to enforce)",
            cfg.display()
        )));
    }

    let unit = rooted(&l.root, &l.unit());
    let unit_changed = place(&l.root, &unit, unit_file(&l.binary(), &l.config()).as_bytes(), 0o644)?;
    done.push(match unit_changed {
        true => Done::did(format!("wrote {}", unit.display())),
        false => Done::found(format!("{} is up to date", unit.display())),
    });
    done.extend(enable(opts, unit_changed)?);
    Ok(done)
}

/// Reload systemd (when the unit changed) and enable the unit, or, with no systemd running
/// (a staging root), make the link `systemctl enable` would.
fn enable(opts: &InstallOptions, unit_changed: bool) -> Result<Vec<Done>, InstallError> {
    let l = &opts.layout;
    let mut done = Vec::new();
    if systemd_running(&l.root) {
        if unit_changed {
            systemctl(&["daemon-reload"])?;
            done.push(Done::did("systemctl daemon-reload"));
        }
        if opts.enable && systemctl(&["is-enabled", "--quiet", UNIT_NAME]).is_err() {
            systemctl(&["enable", UNIT_NAME])?;
            done.push(Done::did(format!(
                "enabled {UNIT_NAME} (start it with `systemctl start ps-agent` after `ps-agent doctor`)"
            )));
        }
        return Ok(done);
    }
    done.push(Done::found("systemd is not running here (or --root was given): skipped `systemctl daemon-reload`"));
    if opts.enable {
        // What `systemctl enable` does for WantedBy=multi-user.target.
        let link = rooted(&l.root, &l.wants_link());
        if fs::read_link(&link).is_ok_and(|to| to == l.unit()) {
            done.push(Done::found(format!("{UNIT_NAME} is enabled already")));
            return Ok(done);
        }
        make_dirs(&l.root, link.parent().expect("wants link has a parent"))?;
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(l.unit(), &link).map_err(io_err("create symlink", &link, ""))?;
        done.push(Done::did(format!("enabled {UNIT_NAME}: {} -> {}", link.display(), l.unit().display())));
    }
    Ok(done)
}

/// Create the directories of `dir` below `root`, refusing a symlink among them: a link
/// planted in a staging tree must not send the files somewhere else.
fn make_dirs(root: &Path, dir: &Path) -> Result<(), InstallError> {
    let rel = dir.strip_prefix(root).unwrap_or(dir);
    fs::create_dir_all(root).map_err(io_err("create directory", root, ""))?;
    let mut at = root.to_path_buf();
    for part in rel.components() {
        at.push(part);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(io_err("create directory", &at, " (it is a symlink; remove it)")(io::Error::from(
                    io::ErrorKind::AlreadyExists,
                )));
            }
            Ok(_) => {}
            Err(_) => fs::create_dir(&at).map_err(io_err("create directory", &at, ""))?,
        }
    }
    Ok(())
}

/// Put `bytes` at `path` with `mode`: written to a new file with a fresh name beside it
/// (`O_EXCL | O_NOFOLLOW`: never through a planted link), then renamed over `path`, which
/// replaces a symlink there rather than following it; a running binary is replaced the
/// same way (writing it in place fails with ETXTBSY). `false`: it was so already.
fn place(root: &Path, path: &Path, bytes: &[u8], mode: u32) -> Result<bool, InstallError> {
    use std::{
        io::Write as _,
        os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    };
    let dir = path.parent().expect("a file path has a parent");
    make_dirs(root, dir)?;
    let same = fs::symlink_metadata(path)
        .is_ok_and(|m| m.file_type().is_file() && m.permissions().mode() & 0o7777 == mode)
        && fs::read(path).is_ok_and(|b| b == bytes);
    if same {
        return Ok(false);
    }
    let nonce = crate::clock::unix_now_ns() ^ u64::from(std::process::id()) << 32;
    let tmp = dir.join(format!(".{}.{nonce:x}.new", path.file_name().and_then(|n| n.to_str()).unwrap_or("ps-agent")));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(io_err("create", &tmp, " (is the directory writable?)"))?;
    f.write_all(bytes).map_err(io_err("write", &tmp, ""))?;
    drop(f);
    set_mode(&tmp, mode)?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err("install", path, "")(e)
    })?;
    Ok(true)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), InstallError> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err("set permissions of", path, ""))
}

/// Options of `uninstall`.
#[derive(Clone, Debug)]
pub struct UninstallOptions {
    /// Where things are.
    pub layout: Layout,
    /// Pin directory (under the root).
    pub pin_dir: PathBuf,
    /// State directory (under the root).
    pub state_dir: PathBuf,
    /// Also remove the config directory.
    pub purge: bool,
}

/// Stop and disable the unit, remove the pins and the state, the binary and the unit, and
/// with `purge` the config directory. Returns what was done.
pub fn uninstall(opts: &UninstallOptions) -> Result<Vec<Done>, InstallError> {
    let l = &opts.layout;
    let mut done = Vec::new();
    let systemd = systemd_running(&l.root);
    if systemd && rooted(&l.root, &l.unit()).exists() {
        systemctl(&["disable", "--now", UNIT_NAME])?;
        done.push(Done::did(format!("stopped and disabled {UNIT_NAME}")));
    }
    match unload(&rooted(&l.root, &opts.pin_dir), &rooted(&l.root, &opts.state_dir), false) {
        Ok(lines) => done.extend(lines),
        // Not on bpffs (a staging root, bpffs not mounted): there are no pins to remove.
        Err(UnloadError::PinDir(e)) => done.push(Done::found(format!("left the pins: {e}"))),
        Err(e) => return Err(e.into()),
    }
    for p in [l.wants_link(), l.unit(), l.binary()] {
        let p = rooted(&l.root, &p);
        match fs::remove_file(&p) {
            Ok(()) => done.push(Done::did(format!("removed {}", p.display()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", &p, "")(e)),
        }
    }
    if systemd {
        systemctl(&["daemon-reload"])?;
        done.push(Done::did("systemctl daemon-reload"));
    }
    let cfg_dir = rooted(&l.root, &l.config_dir);
    if opts.purge {
        match fs::remove_dir_all(&cfg_dir) {
            Ok(()) => done.push(Done::did(format!("removed {}", cfg_dir.display()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", &cfg_dir, "")(e)),
        }
    } else if cfg_dir.exists() {
        done.push(Done::found(format!("kept {} (remove it with --purge)", cfg_dir.display())));
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_dry_run_keep_and_otherwise_commented() {
        let c = default_config();
        let active: Vec<&str> = c.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
        assert_eq!(active.len(), 2, "{active:?}");
        assert!(active[0].starts_with("mode = \"dry-run\""));
        assert!(active[1].starts_with("on_exit = \"keep\""));
        assert!(c.contains("# [failsafe]") && c.contains("# enable = [\"ps-06\""), "{c}");
        let v: toml::Table = toml::from_str(&c).expect("valid TOML");
        assert_eq!(v["mode"].as_str(), Some("dry-run"));
        assert_eq!(v["on_exit"].as_str(), Some("keep"));
        assert!(c.is_ascii(), "a config any editor shows as it is");
    }

    #[test]
    fn the_packaged_config_is_the_default_config() {
        assert_eq!(
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/config.toml")),
            default_config(),
            "packaging/config.toml is stale: regenerate it with `ps-agent generate --out packaging`"
        );
    }

    #[test]
    fn unit_is_the_packaged_one_with_the_layouts_paths() {
        let u = unit_file(Path::new("/usr/local/sbin/ps-agent"), Path::new("/opt/ps/config.toml"));
        assert!(u.contains("\nExecStart=/usr/local/sbin/ps-agent run --config /opt/ps/config.toml\n"), "{u}");
        assert!(u.contains("\nExecReload=/usr/local/sbin/ps-agent reload\n"), "{u}");
        assert_eq!(u.lines().count(), UNIT.lines().count());
        let differ: Vec<(&str, &str)> = UNIT.lines().zip(u.lines()).filter(|(a, b)| a != b).collect();
        assert_eq!(differ.len(), 2, "only the Exec lines change: {differ:?}");
        assert_eq!(unit_file(Path::new(UNIT_BINARY), Path::new(UNIT_CONFIG)), UNIT);
        for k in [
            "\nType=notify\n",
            "\nCapabilityBoundingSet=CAP_BPF CAP_PERFMON CAP_NET_ADMIN CAP_SYS_ADMIN\n",
            "\nLimitNOFILE=65536\n",
            "\nProtectSystem=strict\n",
            "\nReadWritePaths=/sys/fs/bpf\n",
            "\nRuntimeDirectory=ps-agent\n",
            "\nNoNewPrivileges=yes\n",
        ] {
            assert!(UNIT.contains(k), "{k}");
        }
        // It makes the pin directory read-only whatever ReadWritePaths= says (the fleet
        // lab's systemd 252 refused the first pin).
        assert!(!UNIT.lines().any(|l| l.starts_with("ProtectKernelTunables=")), "{UNIT}");
    }

    #[test]
    fn rooted_paths() {
        assert_eq!(rooted(Path::new("/tmp/r"), Path::new("/etc/ps-agent")), Path::new("/tmp/r/etc/ps-agent"));
        assert_eq!(rooted(Path::new("/"), Path::new("/etc/ps-agent")), Path::new("/etc/ps-agent"));
    }
}
