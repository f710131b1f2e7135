//! ps-agent's entry point: parse the command line, set up logging, run the command, exit
//! with its code. The commands are in [`cli`].

mod cli;

use clap::Parser as _;

fn main() {
    // A command whose reader went away (`ps-agent check | head -1`) ends quietly, as other
    // command-line tools do; the daemon ignores SIGPIPE (a scraper that hangs up must not
    // stop the firewall) and sees EPIPE instead.
    set_sigpipe(libc::SIG_DFL);
    let args = cli::args::Cli::parse();
    if matches!(args.command, cli::args::Command::Run(_)) {
        set_sigpipe(libc::SIG_IGN);
    }
    ps_agent::observe::journal::init();
    std::process::exit(cli::run(args).code());
}

fn set_sigpipe(action: libc::sighandler_t) {
    // SAFETY: setting the disposition of SIGPIPE to a default or ignore action, before any
    // thread is started.
    unsafe { libc::signal(libc::SIGPIPE, action) };
}
