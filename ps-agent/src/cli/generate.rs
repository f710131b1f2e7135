//! The files the packages ship that are made from the code rather than written by hand:
//! man pages (clap_mangen) and shell completions (clap_complete) from the command-line
//! definition, and the default config (`ps_agent::ops::install::default_config`).
//! `ps-agent generate --out packaging` writes them where the packaging metadata takes
//! them from; the tests regenerate them and fail when the committed ones differ.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use clap::CommandFactory as _;

use super::{Exit, Outcome, args::Cli, output::print_lines};

/// A shell `ps-agent completions` writes for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    /// bash (bash-completion).
    Bash,
    /// zsh.
    Zsh,
    /// fish.
    Fish,
}

impl Shell {
    /// Every shell, in the order the packages list them.
    pub const ALL: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

    /// The file name the shell looks the completions up by (its directory is the
    /// package's business: see the packaging metadata).
    pub const fn file_name(self) -> &'static str {
        match self {
            Shell::Bash => "ps-agent.bash",
            Shell::Zsh => "_ps-agent",
            Shell::Fish => "ps-agent.fish",
        }
    }
}

/// A file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("failed to write `{path}`: {source} (is the directory writable?)")]
pub struct GenerateError {
    /// The file.
    path: PathBuf,
    /// Cause.
    #[source]
    source: io::Error,
}

/// The command as the generated files describe it: the crate version without the commit
/// and object hashes of `--version`, so the pages change only when the interface does.
fn stable(cmd: clap::Command) -> clap::Command {
    let mut cmd = cmd.version(env!("CARGO_PKG_VERSION")).disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// Man pages (section 8, system administration) for `cmd` and each visible subcommand,
/// nested ones included: `(file name, roff text)`, e.g. `ps-agent-matrix-import.8`.
pub fn man_pages(cmd: clap::Command) -> Vec<(String, Vec<u8>)> {
    fn walk(cmd: &clap::Command, out: &mut Vec<(String, Vec<u8>)>) {
        let man = clap_mangen::Man::new(cmd.clone())
            .section("8")
            .source(format!("ps-agent {}", env!("CARGO_PKG_VERSION")))
            .manual("ps-agent manual");
        let mut text = Vec::new();
        man.render(&mut text).expect("rendering into memory does not fail");
        out.push((man.get_filename(), text));
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub, out);
        }
    }
    let mut pages = Vec::new();
    walk(&stable(cmd), &mut pages);
    pages
}

/// The completion script of `cmd` for `shell`.
pub fn completion(cmd: clap::Command, shell: Shell) -> Vec<u8> {
    let mut cmd = stable(cmd);
    let mut out = Vec::new();
    let name = cmd.get_name().to_string();
    match shell {
        Shell::Bash => clap_complete::generate(clap_complete::Shell::Bash, &mut cmd, name, &mut out),
        Shell::Zsh => clap_complete::generate(clap_complete::Shell::Zsh, &mut cmd, name, &mut out),
        Shell::Fish => clap_complete::generate(clap_complete::Shell::Fish, &mut cmd, name, &mut out),
    }
    out
}

/// Every generated file, relative to the packaging directory: `man/*.8`,
/// `completions/*`, `config.toml`.
pub fn files(cmd: clap::Command) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<(PathBuf, Vec<u8>)> =
        man_pages(cmd.clone()).into_iter().map(|(name, text)| (Path::new("man").join(name), text)).collect();
    for shell in Shell::ALL {
        files.push((Path::new("completions").join(shell.file_name()), completion(cmd.clone(), shell)));
    }
    files.push(("config.toml".into(), ps_agent::ops::install::default_config().into_bytes()));
    files
}

/// Write [`files`] under `out`, replacing what the man directory held (a subcommand that
/// went away takes its page along). Returns one line per file written.
pub fn write_all(cmd: clap::Command, out: &Path) -> Result<Vec<String>, GenerateError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| GenerateError { path, source }
    };
    let man = out.join("man");
    if man.exists() {
        fs::remove_dir_all(&man).map_err(err(&man))?;
    }
    let mut done = Vec::new();
    for (rel, content) in files(cmd) {
        let path = out.join(rel);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(err(dir))?;
        }
        fs::write(&path, content).map_err(err(&path))?;
        done.push(format!("wrote {}", path.display()));
    }
    Ok(done)
}

/// `ps-agent completions SHELL`.
pub fn completions(shell: Shell) -> Outcome {
    io::Write::write_all(&mut io::stdout(), &completion(Cli::command(), shell))?;
    Ok(Exit::Success)
}

/// `ps-agent generate --out DIR`.
pub fn write(out: &Path) -> Outcome {
    print_lines(write_all(Cli::command(), out)?);
    Ok(Exit::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli() -> clap::Command {
        clap::Command::new("ps-agent")
            .version("9.9.9 (commit abc)")
            .about("Enforce.")
            .subcommand(clap::Command::new("run").about("Run."))
            .subcommand(clap::Command::new("matrix").subcommand(clap::Command::new("import").about("Import.")))
            .subcommand(clap::Command::new("generate").hide(true))
    }

    #[test]
    fn a_page_per_visible_command_in_section_8() {
        let pages = man_pages(cli());
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["ps-agent.8", "ps-agent-run.8", "ps-agent-matrix.8", "ps-agent-matrix-import.8"]);
        let top = String::from_utf8_lossy(&pages[0].1);
        assert!(top.contains(".TH ps-agent 8"), "{top}");
        assert!(!top.contains("commit abc"), "no build details in the pages: {top}");
    }

    #[test]
    fn completions_name_the_subcommands() {
        for shell in Shell::ALL {
            let text = String::from_utf8(completion(cli(), shell)).unwrap();
            assert!(text.contains("run") && text.contains("import"), "{shell:?}: {text}");
        }
    }
}
