//! The command line: [`args`] defines it, [`run`] dispatches each command to the function
//! of its group, and every command ends with an [`Exit`].
//!
//! - [`policy`]: check, export, explain, matrix import/diff (no running agent needed);
//! - [`agent`]: run (the daemon);
//! - [`control`]: reload, enforce, confirm, dry-run (change a running agent);
//! - [`observe`]: stats, flows, report (read a running agent);
//! - [`ops`]: doctor, install, uninstall, unload;
//! - [`generate`]: completions, and the hidden `generate` of the files the packages ship.

mod agent;
pub mod args;
mod control;
mod generate;
mod observe;
mod ops;
mod output;
mod policy;

use args::{Cli, Command};

/// How a command ended: its exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Done (0).
    Success,
    /// Done, with warnings the output names (3: `doctor`).
    Warnings,
    /// Not done, or not all of it (1).
    Failure,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> i32 {
        match self {
            Self::Success => 0,
            Self::Failure => 1,
            Self::Warnings => ps_agent::ops::doctor::EXIT_WARNINGS,
        }
    }
}

/// What a command function returns.
pub type Outcome = anyhow::Result<Exit>;

/// Run the command; an error is printed with its causes and ends in [`Exit::Failure`].
pub fn run(cli: Cli) -> Exit {
    match dispatch(cli) {
        Ok(exit) => exit,
        Err(e) => {
            let p = ps_agent::observe::journal::prefix(log::Level::Error);
            eprintln!("{p}error: {e}");
            let mut src = e.source();
            while let Some(s) = src {
                eprintln!("{p}  caused by: {s}");
                src = s.source();
            }
            Exit::Failure
        }
    }
}

fn dispatch(cli: Cli) -> Outcome {
    let (pins, state) = (cli.pin_dir, cli.state_dir);
    match cli.command {
        Command::Run(args) => agent::run(args, pins, state),
        Command::Check { config, ifaces, json } => policy::check(config.as_deref(), &ifaces, json),
        Command::Export { format, config, ifaces, output } => {
            policy::export(format, config.as_deref(), &ifaces, output.as_deref())
        }
        Command::Explain(args) => policy::explain(args),
        Command::Matrix { command } => policy::matrix(command),
        Command::Reload { timeout, json } => control::reload(&state, timeout, json),
        Command::Enforce { confirm_within, json } => control::enforce(&state, confirm_within, json),
        Command::Confirm { json } => control::confirm(&state, json),
        Command::DryRun { json } => control::dry_run(&state, json),
        Command::Stats { json, watch, interval } => observe::stats(&state, json, watch, interval),
        Command::Flows { json } => observe::flows(&state, json),
        Command::Report { json } => observe::report(&state, json),
        Command::Doctor { ifaces, json } => ops::doctor(&ifaces, json),
        Command::Install { layout, no_enable, json } => ops::install(layout, no_enable, json),
        Command::Uninstall { layout, purge, json } => ops::uninstall(layout, purge, pins, state, json),
        Command::Unload { force, json } => ops::unload(&pins, &state, force, json),
        Command::Completions { shell } => generate::completions(shell),
        Command::Generate { out } => generate::write(&out),
    }
}
