//! Commands around the agent on a host: `doctor`, `install`, `uninstall`, `unload`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use ps_agent::ops::{Done, doctor, install, unload};
use serde::Serialize;

use super::{Exit, Outcome, args::LayoutArgs, output::emit};

/// What `install`, `uninstall` and `unload --json` print.
#[derive(Serialize)]
struct Actions<'a> {
    changed: bool,
    actions: Vec<&'a str>,
}

/// One line per action, or `{changed, actions}` as JSON.
fn report(done: &[Done], json: bool) -> Outcome {
    let actions =
        Actions { changed: done.iter().any(|d| d.changed), actions: done.iter().map(|d| d.what.as_str()).collect() };
    emit(json, &actions, || done.iter().map(|d| format!("{d}\n")).collect())?;
    Ok(Exit::Success)
}

pub fn doctor(ifaces: &[String], json: bool) -> Outcome {
    let checks = doctor::diagnose(ifaces);
    emit(json, &doctor::to_json(&checks), || doctor::render(&checks))?;
    Ok(match doctor::worst(&checks) {
        doctor::Status::Pass => Exit::Success,
        doctor::Status::Warn => Exit::Warnings,
        doctor::Status::Fail => Exit::Failure,
    })
}

pub fn install(layout: LayoutArgs, no_enable: bool, json: bool) -> Outcome {
    let exe = std::env::current_exe().context("failed to find the running ps-agent binary")?;
    let opts = install::InstallOptions { layout: layout.layout(), enable: !no_enable };
    report(&install::install(&opts, &exe)?, json)
}

pub fn uninstall(layout: LayoutArgs, purge: bool, pin_dir: PathBuf, state_dir: PathBuf, json: bool) -> Outcome {
    let opts = install::UninstallOptions { layout: layout.layout(), pin_dir, state_dir, purge };
    report(&install::uninstall(&opts)?, json)
}

pub fn unload(pin_dir: &Path, state_dir: &Path, force: bool, json: bool) -> Outcome {
    report(&unload::unload(pin_dir, state_dir, force)?, json)
}
