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

use ps_common::names;

use crate::{coexist, observe::AgentState};

/// The systemd unit name.
pub const UNIT_NAME: &str = "ps-agent.service";

/// The example site config the default config is made from.
const SITE_EXAMPLE: &str = include_str!("../../policy/site-example.toml");

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
    /// The agent that owns the pins is still running.
    #[error(
        "failed to unload `{pin_dir}`: the ps-agent that owns it (pid {pid}, state {state}) is still running; stop it (`systemctl stop ps-agent` or `kill {pid}`), or pass --force to remove its pins anyway"
    )]
    AgentAlive {
        /// Its pid.
        pid: u32,
        /// Its state file.
        state: PathBuf,
        /// The pin directory.
        pin_dir: PathBuf,
    },
    /// A pin directory that would take other programs' pins with it.
    #[error(
        "failed to unload `{path}`: refusing to empty a top-level directory that holds other programs' pins; give ps-agent's own pin directory (default {})",
        names::PIN_DIR
    )]
    UnsafePinDir {
        /// The directory.
        path: PathBuf,
    },
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
/// chooses to.
pub fn default_config() -> String {
    let mut s = String::from(
        "# ps-agent site config, written by `ps-agent install` (never overwritten by it).\n\
         #\n\
         # ps-agent starts in DRY-RUN: every packet passes, and what the matrix would drop is\n\
         # counted (`ps-agent stats`) and logged (`journalctl -u ps-agent`). Read the counters,\n\
         # make sure your own management access is admitted, then set mode = \"enforce\" and\n\
         # `systemctl restart ps-agent`. Check the result with `ps-agent check --config FILE`.\n\
         #\n\
         # Everything below is commented out: the shipped Presence Services 8.1.2 matrix with\n\
         # its defaults applies. Uncomment what your site needs.\n\n",
    );
    for line in SITE_EXAMPLE.lines() {
        let t = line.trim_start();
        if t.starts_with("mode") && t.contains('=') {
            s.push_str("mode = \"dry-run\"                   # \"enforce\" once `ps-agent stats` looks right\n");
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

/// The systemd unit. `legacy_caps`: the kernel predates CAP_BPF/CAP_PERFMON (5.8), so BPF
/// needs CAP_SYS_ADMIN.
pub fn unit_file(binary: &Path, config: &Path, legacy_caps: bool) -> String {
    let caps = if legacy_caps { "CAP_SYS_ADMIN CAP_NET_ADMIN" } else { "CAP_BPF CAP_NET_ADMIN CAP_PERFMON" };
    format!(
        "# Written by `ps-agent install`; `ps-agent uninstall` removes it.
[Unit]
Description=ps-agent: Avaya port matrix enforcement with XDP
# Up before the network is configured, like other host firewalls; interfaces that are not
# there yet make the start fail and Restart= tries again.
Wants=network-pre.target
Before=network-pre.target
After=local-fs.target

[Service]
Type=simple
ExecStart={bin} run --config {config}
Restart=on-failure
RestartSec=5s
# SIGTERM detaches the XDP program and removes the pins and the state file.
KillSignal=SIGTERM
TimeoutStopSec=30s
Environment=RUST_LOG=info

# Privileges: load programs and maps (CAP_BPF; CAP_PERFMON, without which the verifier
# applies its unprivileged pointer rules), attach XDP and detach other netlink XDP
# programs with --force (CAP_NET_ADMIN). No CAP_SYS_RESOURCE: the agent raises no rlimit
# (kernels before 5.11 get LimitMEMLOCK below instead). No CAP_SYS_ADMIN: without it the
# agent still sees other XDP programs, it only cannot tell a bpf_link from netlink.
CapabilityBoundingSet={caps}
LimitMEMLOCK=infinity
NoNewPrivileges=yes

# Filesystem: read-only except the pins and the state directory (/run/ps-agent).
ProtectSystem=strict
ReadWritePaths=/sys/fs/bpf
RuntimeDirectory=ps-agent
RuntimeDirectoryMode=0755
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
UMask=0022

# Kernel and process sandbox.
ProtectKernelModules=yes
ProtectKernelTunables=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native

[Install]
WantedBy=multi-user.target
",
        bin = binary.display(),
        config = config.display(),
    )
}

/// Options of `install`.
#[derive(Clone, Debug)]
pub struct InstallOptions {
    /// Where things go.
    pub layout: Layout,
    /// Enable the unit (start at boot).
    pub enable: bool,
    /// The kernel predates CAP_BPF (5.8): grant CAP_SYS_ADMIN instead.
    pub legacy_caps: bool,
}

/// Copy `binary` into place, write the default config (never over an existing one) and the
/// unit, reload systemd and enable the unit. Returns what was done, one line each.
pub fn install(opts: &InstallOptions, binary: &Path) -> Result<Vec<String>, InstallError> {
    let l = &opts.layout;
    let mut done = Vec::new();

    let bin = rooted(&l.root, &l.binary());
    let dir = bin.parent().expect("binary path has a parent");
    fs::create_dir_all(dir).map_err(io_err("create directory", dir, ""))?;
    // Copy next to the target and rename: replacing a running binary in place fails with
    // ETXTBSY, a rename does not.
    let tmp = bin.with_extension("new");
    fs::copy(binary, &tmp).map_err(io_err("copy the ps-agent binary to", &tmp, " (is the prefix writable?)"))?;
    set_mode(&tmp, 0o755)?;
    fs::rename(&tmp, &bin).map_err(io_err("install the binary as", &bin, ""))?;
    done.push(format!("installed {}", bin.display()));

    let cfg = rooted(&l.root, &l.config());
    let cfg_dir = cfg.parent().expect("config path has a parent");
    fs::create_dir_all(cfg_dir).map_err(io_err("create directory", cfg_dir, ""))?;
    if cfg.exists() {
        done.push(format!("kept the existing config {}", cfg.display()));
    } else {
        fs::write(&cfg, default_config()).map_err(io_err("write config", &cfg, ""))?;
        set_mode(&cfg, 0o644)?;
        done.push(format!(
            "wrote {} (mode = \"dry-run\": nothing is dropped until you choose to enforce)",
            cfg.display()
        ));
    }

    let unit = rooted(&l.root, &l.unit());
    let unit_dir = unit.parent().expect("unit path has a parent");
    fs::create_dir_all(unit_dir).map_err(io_err("create directory", unit_dir, ""))?;
    fs::write(&unit, unit_file(&l.binary(), &l.config(), opts.legacy_caps)).map_err(io_err(
        "write unit file",
        &unit,
        "",
    ))?;
    set_mode(&unit, 0o644)?;
    done.push(format!("wrote {}", unit.display()));

    if systemd_running(&l.root) {
        systemctl(&["daemon-reload"])?;
        done.push("systemctl daemon-reload".into());
        if opts.enable {
            systemctl(&["enable", UNIT_NAME])?;
            done.push(format!(
                "enabled {UNIT_NAME} (start it with `systemctl start ps-agent` after `ps-agent doctor`)"
            ));
        }
    } else {
        done.push("systemd is not running here (or --root was given): skipped `systemctl daemon-reload`".into());
        if opts.enable {
            // What `systemctl enable` does for WantedBy=multi-user.target.
            let link = rooted(&l.root, &l.wants_link());
            let wants = link.parent().expect("wants link has a parent");
            fs::create_dir_all(wants).map_err(io_err("create directory", wants, ""))?;
            let _ = fs::remove_file(&link);
            std::os::unix::fs::symlink(l.unit(), &link).map_err(io_err("create symlink", &link, ""))?;
            done.push(format!("enabled {UNIT_NAME}: {} -> {}", link.display(), l.unit().display()));
        }
    }
    Ok(done)
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
pub fn uninstall(opts: &UninstallOptions) -> Result<Vec<String>, InstallError> {
    let l = &opts.layout;
    let mut done = Vec::new();
    let systemd = systemd_running(&l.root);
    if systemd && rooted(&l.root, &l.unit()).exists() {
        systemctl(&["disable", "--now", UNIT_NAME])?;
        done.push(format!("stopped and disabled {UNIT_NAME}"));
    }
    done.extend(unload(&rooted(&l.root, &opts.pin_dir), &rooted(&l.root, &opts.state_dir), false)?);
    for p in [l.wants_link(), l.unit(), l.binary()] {
        let p = rooted(&l.root, &p);
        match fs::remove_file(&p) {
            Ok(()) => done.push(format!("removed {}", p.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", &p, "")(e)),
        }
    }
    if systemd {
        systemctl(&["daemon-reload"])?;
        done.push("systemctl daemon-reload".into());
    }
    let cfg_dir = rooted(&l.root, &l.config_dir);
    if opts.purge {
        match fs::remove_dir_all(&cfg_dir) {
            Ok(()) => done.push(format!("removed {}", cfg_dir.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", &cfg_dir, "")(e)),
        }
    } else if cfg_dir.exists() {
        done.push(format!("kept {} (remove it with --purge)", cfg_dir.display()));
    }
    Ok(done)
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

/// Refuse directories whose emptying would take other programs' pins along.
fn check_pin_dir(dir: &Path) -> Result<(), InstallError> {
    let canon = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let top = ["/", "/sys", "/sys/fs", "/sys/fs/bpf"];
    if top.iter().any(|t| canon == Path::new(t)) || canon.parent().is_none() {
        return Err(InstallError::UnsafePinDir { path: dir.into() });
    }
    Ok(())
}

/// Remove everything under `dir` (pinned maps, links, programs; bpffs allows only
/// unlinking), then `dir`. Returns what was removed.
fn remove_pins(dir: &Path, done: &mut Vec<String>) -> Result<(), InstallError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("read pin directory", dir, "")(e)),
    };
    for e in entries {
        let e = e.map_err(io_err("read pin directory", dir, ""))?;
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_pins(&p, done)?;
        } else {
            fs::remove_file(&p).map_err(io_err("unpin", &p, ""))?;
            done.push(format!("unpinned {}", p.display()));
        }
    }
    fs::remove_dir(dir).map_err(io_err("remove pin directory", dir, ""))?;
    done.push(format!("removed {}", dir.display()));
    Ok(())
}

/// `ps-agent unload`: remove what a (possibly crashed) agent left — its pins under
/// `pin_dir` (and under the pin directory its state file names), netlink-attached ps-agent
/// programs on the interfaces the state file lists (kernels before 5.9 attach that way and
/// keep them after a crash), and the state file. Refuses while the agent in the state file
/// is alive, unless `force`.
pub fn unload(pin_dir: &Path, state_dir: &Path, force: bool) -> Result<Vec<String>, InstallError> {
    let mut done = Vec::new();
    check_pin_dir(pin_dir)?;
    let state_path = AgentState::path(state_dir);
    let state = fs::read_to_string(&state_path).ok().and_then(|t| serde_json::from_str::<AgentState>(&t).ok());
    let mut pin_dirs = vec![pin_dir.to_path_buf()];
    if let Some(s) = &state {
        if pid_alive(s.pid) {
            if !force {
                return Err(InstallError::AgentAlive { pid: s.pid, state: state_path, pin_dir: pin_dir.into() });
            }
            done.push(format!(
                "--force: ps-agent pid {} is still running; its XDP links go away only when it exits",
                s.pid
            ));
        }
        if s.pin_dir != pin_dir {
            check_pin_dir(&s.pin_dir)?;
            pin_dirs.push(s.pin_dir.clone());
        }
        for a in &s.interfaces {
            for p in coexist::detect(&a.name).unwrap_or_default() {
                if p.is_ps_agent() && p.replaceable() {
                    match coexist::detach_netlink(&a.name, &p) {
                        Ok(()) => done.push(format!("detached {p} from `{}`", a.name)),
                        Err(e) => done.push(format!("could not detach {p} from `{}`: {e}", a.name)),
                    }
                }
            }
        }
    }
    for d in &pin_dirs {
        remove_pins(d, &mut done)?;
    }
    for p in [state_path.clone(), state_path.with_extension("json.tmp")] {
        match fs::remove_file(&p) {
            Ok(()) => done.push(format!("removed {}", p.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", &p, "")(e)),
        }
    }
    if done.is_empty() {
        done.push(format!(
            "nothing to unload: no pins under {} and no state file {}",
            pin_dir.display(),
            state_path.display()
        ));
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_dry_run_and_otherwise_commented() {
        let c = default_config();
        let active: Vec<&str> = c.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
        assert_eq!(active.len(), 1, "{active:?}");
        assert!(active[0].starts_with("mode = \"dry-run\""));
        assert!(c.contains("# [failsafe]") && c.contains("# enable = [\"ps-06\""), "{c}");
        let v: toml::Table = toml::from_str(&c).expect("valid TOML");
        assert_eq!(v["mode"].as_str(), Some("dry-run"));
    }

    #[test]
    fn unit_is_hardened_and_names_the_paths() {
        let u = unit_file(Path::new("/usr/local/sbin/ps-agent"), Path::new("/etc/ps-agent/config.toml"), false);
        assert!(u.contains("ExecStart=/usr/local/sbin/ps-agent run --config /etc/ps-agent/config.toml\n"));
        assert!(u.contains("CapabilityBoundingSet=CAP_BPF CAP_NET_ADMIN CAP_PERFMON\n"));
        for k in
            ["ProtectSystem=strict", "ReadWritePaths=/sys/fs/bpf", "RuntimeDirectory=ps-agent", "NoNewPrivileges=yes"]
        {
            assert!(u.contains(k), "{k}");
        }
        assert!(!u.contains("CAP_SYS_ADMIN\n") && !u.contains("CAP_SYS_RESOURCE\n"));
        let old = unit_file(Path::new("/b"), Path::new("/c"), true);
        assert!(old.contains("CapabilityBoundingSet=CAP_SYS_ADMIN CAP_NET_ADMIN\n"));
    }

    #[test]
    fn rooted_paths() {
        assert_eq!(rooted(Path::new("/tmp/r"), Path::new("/etc/ps-agent")), Path::new("/tmp/r/etc/ps-agent"));
        assert_eq!(rooted(Path::new("/"), Path::new("/etc/ps-agent")), Path::new("/etc/ps-agent"));
    }

    #[test]
    fn refuses_top_level_pin_dirs() {
        for d in ["/sys/fs/bpf", "/sys/fs/bpf/", "/"] {
            assert!(matches!(check_pin_dir(Path::new(d)), Err(InstallError::UnsafePinDir { .. })), "{d}");
        }
        assert!(check_pin_dir(Path::new("/sys/fs/bpf/ps-agent")).is_ok());
    }
}
