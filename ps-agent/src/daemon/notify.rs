//! Telling systemd where the daemon is (sd_notify(3), `Type=notify`): `READY=1` once every
//! interface is attached and the state is published, so a start that fails before that
//! fails `systemctl start`; `RELOADING=1` and `READY=1` around a reload; `STOPPING=1` at
//! shutdown. systemd 239 (RHEL 8) knows all three (src/core/service.c,
//! `service_notify_message`). Outside systemd (`NOTIFY_SOCKET` unset) every call does
//! nothing.

use log::warn;
use sd_notify::NotifyState;

fn send(what: &str, states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!("failed to tell systemd {what} (sd_notify): {e}");
    }
}

/// Start-up is done; `status` is what `systemctl status` shows.
pub fn ready(status: &str) {
    send("the agent is ready", &[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload begins. `MONOTONIC_USEC` goes with it: systemd 253 and newer expect it with
/// `RELOADING=1`, older ones ignore it. [`ready`] ends the reload, applied or rejected.
pub fn reloading() {
    let mut states = vec![NotifyState::Reloading];
    match NotifyState::monotonic_usec_now() {
        Ok(now) => states.push(now),
        Err(e) => warn!("failed to read CLOCK_MONOTONIC for sd_notify: {e}"),
    }
    send("a reload begins", &states);
}

/// Shutdown begins.
pub fn stopping() {
    send("the agent is stopping", &[NotifyState::Stopping]);
}
