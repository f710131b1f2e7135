//! The running agent: it waits for signals (SIGHUP reloads, SIGINT/SIGTERM stop) and, once
//! a second, settles a commit-confirm whose deadline passed and re-attaches interfaces that
//! came back.

use std::{
    fs,
    time::{Duration, Instant},
};

use log::{error, info, warn};
use tokio::task::JoinHandle;

use super::{
    RunError, RunOptions, notify,
    reload::{RELOAD_LIMIT, prepare},
    startup::Started,
};
use crate::{
    clock,
    dataplane::{Loaded, host},
    observe::{
        events::Rows,
        state::{AgentState, PendingConfirm, ReloadOutcome},
    },
    policy::{
        compile::RuleSet,
        config::{Config, Mode, XdpModeName},
    },
};

/// The running agent: what it loaded, and what it does on signals and every second.
pub(super) struct Daemon<'a> {
    pub(super) opts: &'a RunOptions,
    pub(super) loaded: Loaded,
    pub(super) set: RuleSet,
    pub(super) state: AgentState,
    xdp_mode: XdpModeName,
    /// When the last generation flip happened: the next write into the other generation
    /// waits a grace period, so no packet still reading it sees it change.
    pub(super) last_flip: Option<std::time::Instant>,
    /// The rows the drop-event lines name (`rule=`), replaced on reload.
    pub(super) rows: Rows,
    /// The locked state and pin directories: held until the daemon is gone.
    _claims: super::claim::Claims,
    /// The commit-confirm deadline last read (seconds since the epoch).
    confirm_deadline: Option<u64>,
}

/// A reload being read and compiled on a blocking thread.
struct Reloading {
    since: Instant,
    task: JoinHandle<Result<(Config, RuleSet), RunError>>,
}

/// The result of the reload in progress; never ready when there is none.
async fn wait(r: &mut Option<Reloading>) -> Result<(Config, RuleSet), RunError> {
    match r {
        Some(r) => {
            (&mut r.task).await.unwrap_or_else(|e| Err(RunError::Reload(format!("the reload's thread failed: {e}"))))
        }
        None => std::future::pending().await,
    }
}

/// How long a packet may still be reading the previous generation after a flip (XDP runs
/// under RCU; a packet's whole run is microseconds).
const FLIP_GRACE: Duration = Duration::from_millis(20);

impl<'a> Daemon<'a> {
    /// The daemon, and the background tasks to stop when it is done.
    pub(super) fn new(opts: &'a RunOptions, s: Started) -> (Self, Vec<Option<JoinHandle<()>>>) {
        let d = Self {
            opts,
            loaded: s.loaded,
            set: s.set,
            state: s.state,
            xdp_mode: s.cfg.site.xdp_mode,
            last_flip: None,
            rows: s.rows,
            _claims: s.claims,
            confirm_deadline: None,
        };
        (d, s.tasks)
    }

    /// What shutdown needs; the claims go last, when shutdown is done with the directories.
    pub(super) fn into_parts(self) -> (Loaded, AgentState, super::claim::Claims) {
        (self.loaded, self.state, self._claims)
    }

    /// Serve until SIGINT or SIGTERM.
    pub(super) async fn serve(&mut self) -> Result<(), RunError> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).map_err(RunError::Signal)?;
        let mut int = signal(SignalKind::interrupt()).map_err(RunError::Signal)?;
        let mut hup = signal(SignalKind::hangup()).map_err(RunError::Signal)?;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut reloading: Option<Reloading> = None;
        loop {
            tokio::select! {
                _ = term.recv() => { notify::stopping(); info!("SIGTERM: detaching"); break; }
                _ = int.recv() => { notify::stopping(); info!("SIGINT: detaching"); break; }
                _ = hup.recv() => {
                    if reloading.is_some() {
                        warn!("SIGHUP while a reload is running: ignored; send it again when that one is done");
                    } else {
                        reloading = Some(self.start_reload());
                    }
                }
                done = wait(&mut reloading) => {
                    reloading = None;
                    self.finish_reload(done).await;
                }
                _ = tick.tick() => {
                    self.check_confirm();
                    self.watch_links();
                    if reloading.as_ref().is_some_and(|r| r.since.elapsed() > RELOAD_LIMIT) {
                        reloading = None;
                        let why = format!("reading and compiling the config took over {} s; check its file system", RELOAD_LIMIT.as_secs());
                        self.record_reload(Err(RunError::Reload(why)));
                    }
                }
            }
        }
        Ok(())
    }

    /// Read and compile the config on a blocking thread.
    fn start_reload(&self) -> Reloading {
        notify::reloading();
        let (opts, running) = (self.opts.clone(), self.running());
        Reloading { since: Instant::now(), task: tokio::task::spawn_blocking(move || prepare(&opts, &running)) }
    }

    /// Apply what the reload prepared (after the grace period of the last flip).
    async fn finish_reload(&mut self, prepared: Result<(Config, RuleSet), RunError>) {
        if let Some(t) = self.last_flip
            && t.elapsed() < FLIP_GRACE
        {
            tokio::time::sleep(FLIP_GRACE - t.elapsed()).await;
        }
        let outcome = prepared.and_then(|(cfg, set)| self.apply(cfg, set));
        self.record_reload(outcome);
    }

    /// Log how a reload ended and record it in the state file.
    fn record_reload(&mut self, outcome: Result<(), RunError>) {
        let status = match outcome {
            Ok(()) => {
                self.state.reloads += 1;
                self.state.last_reload = Some(ReloadOutcome::Applied);
                info!(
                    "reloaded: {} rules, generation {}, fingerprint {}",
                    self.set.rules.len(),
                    self.state.generation,
                    self.state.fingerprint
                );
                format!("reloaded: {} rules, generation {}", self.set.rules.len(), self.state.generation)
            }
            Err(e) => {
                error!("reload rejected, the running policy stays: {e}");
                self.state.last_reload = Some(ReloadOutcome::Rejected(e.to_string()));
                "reload rejected, the running policy stays (see the log)".to_string()
            }
        };
        self.save();
        notify::ready(&status);
    }

    pub(super) fn save(&self) {
        if let Err(e) = self.state.write(&self.opts.state_dir) {
            warn!("failed to write the state file in {}: {e}", self.opts.state_dir.display());
        }
    }

    /// Commit-confirm: back to dry-run when the deadline passes unconfirmed. The deadline
    /// last read is kept, so a confirm file that cannot be read (no file descriptors left,
    /// garbage written into it) cannot make the check skip; with none known yet, such a
    /// file reverts at once: an enforce nobody can confirm must not lock anyone out.
    fn check_confirm(&mut self) {
        let path = PendingConfirm::path(&self.opts.state_dir);
        match fs::read(&path).map(|b| serde_json::from_slice::<PendingConfirm>(&b)) {
            Ok(Ok(p)) => self.confirm_deadline = Some(p.deadline_unix),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.confirm_deadline = None,
            Ok(Err(e)) => self.unreadable_confirm(&path, &e.to_string()),
            Err(e) => self.unreadable_confirm(&path, &e.to_string()),
        }
        let Some(deadline) = self.confirm_deadline else { return };
        if clock::unix_now() < deadline {
            return;
        }
        match self.loaded.set_mode(Mode::DryRun) {
            Ok(()) => {
                let _ = fs::remove_file(&path);
                self.confirm_deadline = None;
                warn!("enforcement was not confirmed in time: back to dry-run (nothing is dropped)");
            }
            Err(e) => error!("failed to revert to dry-run after an unconfirmed enforce: {e}"),
        }
    }

    fn unreadable_confirm(&mut self, path: &std::path::Path, why: &str) {
        error!("cannot read the pending confirm {}: {why}", path.display());
        if self.confirm_deadline.is_none() {
            self.confirm_deadline = Some(0);
        }
    }

    /// Interfaces that disappear are reported; when they come back (a new ifindex), the
    /// programs are attached again.
    fn watch_links(&mut self) {
        for i in 0..self.state.interfaces.len() {
            let a = self.state.interfaces[i].clone();
            match host::ifindex(&a.name) {
                None if a.ifindex != 0 => {
                    warn!("interface `{}` disappeared; ps-agent attaches again when it returns", a.name);
                    self.state.interfaces[i].ifindex = 0;
                    self.state.link_events += 1;
                    self.save();
                }
                Some(idx) if idx != a.ifindex => match self.loaded.reattach(&a.name, idx, a.slot, self.xdp_mode) {
                    Ok(now) => {
                        info!("interface `{}` is back (ifindex {idx}): attached again ({})", a.name, now.xdp_mode);
                        self.state.interfaces[i] = now;
                        self.state.link_events += 1;
                        self.save();
                    }
                    Err(e) => warn!("interface `{}` is back, but attaching failed (will retry): {e}", a.name),
                },
                _ => {}
            }
        }
    }
}
