//! The docs check: README.md, CONTRIBUTING.md, tests/README.md and docs/**/*.md stay true
//! to the repository and to the command line.
//!
//! - Every relative link resolves to a file of the repository, and every `#anchor` to a
//!   heading of the Markdown file it names, by GitHub's slug rules (lower case, punctuation
//!   dropped, spaces to `-`, `-1`, `-2` for repeats). The pages other branches are writing
//!   are accepted while they do not exist: [`PENDING`].
//! - Every `ps-agent ...` and `cargo xtask ...` command in a fenced code block or an inline
//!   code span names a subcommand and flags the built binary has: the tree of subcommands
//!   and flags comes from the binaries' own `-h` output (`target/debug/ps-agent` or
//!   `PS_AGENT_BIN`, and `target/debug/xtask`), so the check needs no code in the agent.
//!
//! No root, no namespaces: it reads files and runs `-h`.

use std::{
    collections::{BTreeMap, HashSet},
    fs,
    path::{Component, Path, PathBuf},
    process::Command,
};

use ps_tests::{agent_bin, scratch};

/// Pages other branches are adding; links to them pass until they land (then remove them
/// here, so that a link to a page that never came fails again).
const PENDING: [&str; 0] = [];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// A Markdown file: its path relative to the root, and its text.
struct Doc {
    rel: PathBuf,
    text: String,
}

/// README.md, CONTRIBUTING.md, tests/README.md and every `.md` under docs/.
fn docs(root: &Path) -> Vec<Doc> {
    let mut rels: Vec<PathBuf> =
        ["README.md", "CONTRIBUTING.md", "tests/README.md"].iter().map(PathBuf::from).collect();
    let mut dirs = vec![root.join("docs")];
    while let Some(dir) = dirs.pop() {
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "md") {
                rels.push(p.strip_prefix(root).expect("under the root").to_path_buf());
            }
        }
    }
    rels.sort();
    rels.into_iter()
        .map(|rel| {
            let text = fs::read_to_string(root.join(&rel)).unwrap_or_else(|e| panic!("read {}: {e}", rel.display()));
            Doc { rel, text }
        })
        .collect()
}

/// One line of a Markdown file, split the way the checks need it.
enum Line<'a> {
    /// Inside a fenced code block.
    Code(&'a str),
    /// Outside one.
    Prose(&'a str),
}

/// The lines of `text`, numbered from 1, marked as code (fenced with ``` or ~~~) or prose.
fn lines(text: &str) -> Vec<(usize, Line<'_>)> {
    let mut fence: Option<&str> = None;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        let marker = ["```", "~~~"].into_iter().find(|m| t.starts_with(m));
        match (fence, marker) {
            (None, Some(m)) => fence = Some(m),
            (Some(f), Some(m)) if f == m && t.trim_end() == m => fence = None,
            (Some(_), _) => out.push((i + 1, Line::Code(line))),
            (None, None) => out.push((i + 1, Line::Prose(line))),
        }
    }
    out
}

/// The inline code spans of a prose line, and the line with them blanked out.
fn code_spans(line: &str) -> (Vec<&str>, String) {
    let mut spans = Vec::new();
    let mut rest = String::new();
    let mut i = 0;
    while let Some(start) = line[i..].find('`').map(|s| s + i) {
        let ticks = line[start..].chars().take_while(|&c| c == '`').count();
        let delim = &line[start..start + ticks];
        let Some(end) = line[start + ticks..].find(delim).map(|e| e + start + ticks) else { break };
        rest.push_str(&line[i..start]);
        spans.push(line[start + ticks..end].trim());
        i = end + ticks;
    }
    rest.push_str(&line[i..]);
    (spans, rest)
}

/// Link targets of a prose line (inline code already removed): `[text](target)`,
/// `![alt](target)` and reference definitions `[label]: target`.
fn links(prose: &str) -> Vec<String> {
    let mut out = Vec::new();
    let t = prose.trim_start();
    if t.starts_with('[')
        && let Some(pos) = t.find("]: ")
    {
        out.push(t[pos + 3..].split_whitespace().next().unwrap_or("").to_string());
    }
    let mut i = 0;
    while let Some(pos) = prose[i..].find("](").map(|p| p + i + 2) {
        let mut depth = 1;
        let end = prose[pos..]
            .char_indices()
            .find(|&(_, c)| {
                depth += match c {
                    '(' => 1,
                    ')' => -1,
                    _ => 0,
                };
                depth == 0
            })
            .map_or(prose.len(), |(e, _)| pos + e);
        let target = prose[pos..end].trim();
        let target = target.strip_prefix('<').and_then(|t| t.split('>').next()).unwrap_or(target);
        out.push(target.split_whitespace().next().unwrap_or("").to_string());
        i = end;
    }
    out
}

/// GitHub's anchor for a heading's text: inline code and link text kept, link targets and
/// punctuation dropped, lower case, each space a `-`.
fn slug(heading: &str) -> String {
    let mut plain = String::new();
    let mut rest = heading;
    while let Some(open) = rest.find("](") {
        plain.push_str(&rest[..open]);
        rest = rest[open..].find(')').map_or("", |c| &rest[open + c + 1..]);
    }
    plain.push_str(rest);
    plain
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Every anchor a Markdown text offers: its ATX headings' slugs, repeats numbered.
fn anchors(text: &str) -> HashSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = HashSet::new();
    for (_, line) in lines(text) {
        let Line::Prose(line) = line else { continue };
        let t = line.trim_start();
        let hashes = t.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&hashes) || !t[hashes..].starts_with([' ', '\t']) {
            continue;
        }
        let base = slug(t[hashes..].trim().trim_end_matches('#').trim_end());
        let n = seen.entry(base.clone()).or_insert(0);
        out.insert(if *n == 0 { base.clone() } else { format!("{base}-{n}") });
        *n += 1;
    }
    out
}

/// Problems with the links of `docs` (paths relative to `root`).
fn check_links(root: &Path, docs: &[Doc], pending: &[&str]) -> (usize, Vec<String>) {
    let (mut checked, mut errors) = (0, Vec::new());
    for doc in docs {
        for (n, line) in lines(&doc.text) {
            let Line::Prose(line) = line else { continue };
            for target in links(&code_spans(line).1) {
                checked += 1;
                if let Err(e) = check_link(root, doc, &target, pending) {
                    errors.push(format!("{}:{n}: link `{target}`: {e}", doc.rel.display()));
                }
            }
        }
    }
    (checked, errors)
}

/// Whether `target`, written in `doc`, resolves.
fn check_link(root: &Path, doc: &Doc, target: &str, pending: &[&str]) -> Result<(), String> {
    let scheme = target.split_once(':').is_some_and(|(s, _)| {
        !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c)) && !s.contains('/')
    });
    if scheme {
        return Ok(());
    }
    if target.is_empty() || target.starts_with('/') {
        return Err("empty or absolute; write a path relative to this file".into());
    }
    let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
    let file = if path.is_empty() { doc.rel.clone() } else { normalize(&doc.rel.parent().unwrap().join(path))? };
    if !root.join(&file).exists() {
        return if pending.iter().any(|p| Path::new(p) == file) {
            Ok(())
        } else {
            Err(format!("`{}` does not exist", file.display()))
        };
    }
    if anchor.is_empty() {
        return Ok(());
    }
    if file.extension().is_none_or(|x| x != "md") {
        return Err(format!("an anchor into `{}`, which is not Markdown", file.display()));
    }
    let text = fs::read_to_string(root.join(&file)).map_err(|e| e.to_string())?;
    if anchors(&text).contains(anchor) {
        Ok(())
    } else {
        Err(format!("`{}` has no heading whose anchor is `#{anchor}`", file.display()))
    }
}

/// `a/b/../c` → `a/c`; an error if the path leaves the repository.
fn normalize(p: &Path) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir if !out.pop() => return Err("leaves the repository".into()),
            Component::ParentDir | Component::CurDir => {}
            c => out.push(c),
        }
    }
    Ok(out)
}

/// A command's subcommands and flags, as its `-h` lists them.
#[derive(Default, Debug)]
struct Cli {
    subs: BTreeMap<String, Cli>,
    /// Flag → whether it takes a value (`<V>`: always; `[<V>]`: optionally).
    flags: BTreeMap<String, Value>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Value {
    None,
    Required,
    Optional,
}

/// The whole tree of `bin`, from `bin [path] -h`.
fn cli_tree(bin: &Path, path: &[String]) -> Cli {
    let out = Command::new(bin).args(path).arg("-h").output().unwrap_or_else(|e| panic!("run {}: {e}", bin.display()));
    assert!(
        out.status.success(),
        "`{} {} -h` failed: {}",
        bin.display(),
        path.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut cli = Cli::default();
    let mut section = "";
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        if indent == 0 {
            section = line.split(':').next().unwrap_or("");
            continue;
        }
        let t = line.trim_start();
        match section {
            "Commands" if indent == 2 => {
                let name = t.split_whitespace().next().unwrap_or("").to_string();
                let mut sub_path = path.to_vec();
                sub_path.push(name.clone());
                let sub = if name == "help" { Cli::default() } else { cli_tree(bin, &sub_path) };
                cli.subs.insert(name, sub);
            }
            "Options" if indent <= 6 && t.starts_with('-') => parse_flags(t, &mut cli.flags),
            _ => {}
        }
    }
    cli
}

/// `-c, --config <CONFIG>   Site config` → `-c`, `--config`, both taking a value.
fn parse_flags(line: &str, flags: &mut BTreeMap<String, Value>) {
    let mut names = Vec::new();
    let mut value = Value::None;
    for tok in line.split_whitespace() {
        let tok = tok.trim_end_matches(',');
        if tok.starts_with('-') && tok.len() > 1 {
            names.push(tok.to_string());
        } else {
            value = match tok {
                t if t.starts_with("[<") => Value::Optional,
                t if t.starts_with('<') => Value::Required,
                _ => Value::None,
            };
            break;
        }
    }
    for n in names {
        flags.insert(n, value);
    }
}

/// The two command lines the docs talk about.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Program {
    Agent,
    Xtask,
}

impl Program {
    /// How the docs spell it.
    fn name(self) -> &'static str {
        match self {
            Program::Agent => "ps-agent",
            Program::Xtask => "cargo xtask",
        }
    }
}

/// A command found in the docs: which program, and its arguments.
#[derive(Debug, PartialEq)]
struct Found {
    program: Program,
    args: Vec<String>,
}

/// The `ps-agent ...` and `cargo xtask ...` commands in a piece of code. A command is
/// looked for at the start of each shell segment (after `|`, `&&`, `;`, a `$` prompt,
/// `sudo`, environment assignments and `nsenter` with its options); arguments end at a
/// comment or a redirection. Output and messages that start with the program's name are
/// not commands: their first word after it does not start with a letter or `-`
/// (`ps-agent 0.1.0`), or one of their words ends in `:` (`ps-agent  mode: dry-run`,
/// `ps-agent is not running: ...`).
fn commands(code: &str) -> Vec<Found> {
    let mut out = Vec::new();
    let toks: Vec<&str> = code.split_whitespace().collect();
    for seg in toks.split(|t| ["|", "||", "&&", ";"].contains(t)) {
        let mut seg = seg.iter().map(|t| t.trim_start_matches(['(', '$', '`', '"', '\''])).peekable();
        while let Some(t) = seg.next_if(|t| is_wrapper(t)) {
            if t == "nsenter" {
                while seg.next_if(|t| t.starts_with('-')).is_some() {}
            }
        }
        let Some(first) = seg.next() else { continue };
        let program = if first.rsplit('/').next() == Some("ps-agent") {
            Program::Agent
        } else if first == "cargo" && seg.next_if_eq(&"xtask").is_some() {
            Program::Xtask
        } else {
            continue;
        };
        let args: Vec<String> = seg
            .take_while(|t| !t.starts_with(['#', '>', '<']) && !t.starts_with("2>"))
            .map(clean)
            .filter(|t| !t.is_empty())
            .collect();
        let output = args.first().is_some_and(|a| !a.starts_with(|c: char| c.is_ascii_lowercase() || c == '-'))
            || args.iter().any(|a| a.ends_with(':'));
        if !output {
            out.push(Found { program, args });
        }
    }
    out
}

/// Words that may stand before the command itself.
fn is_wrapper(t: &str) -> bool {
    let assignment = t.split_once('=').is_some_and(|(k, _)| {
        !k.is_empty() && k.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    });
    t.is_empty() || assignment || ["sudo", "env", "exec", "nsenter"].contains(&t)
}

/// Usage punctuation off a token: `[--config` → `--config`, `IF]...` → `IF`.
fn clean(t: &str) -> String {
    t.trim_matches(|c| "[]()`'\",".contains(c)).trim_end_matches("...").trim_end_matches(['`', ']', ')']).to_string()
}

/// Whether `args` names subcommands and flags `cli` has.
fn check_command(cli: &Cli, program: Program, args: &[String]) -> Result<(), String> {
    let (mut node, mut path) = (cli, vec![program.name().to_string()]);
    let mut positional = false;
    let mut it = args.iter().peekable();
    while let Some(a) = it.next() {
        if a == "--" {
            return Ok(());
        }
        if a.starts_with('-') && a.len() > 1 && !a[1..].starts_with(|c: char| c.is_ascii_digit()) {
            let name = a.split('=').next().unwrap_or(a);
            match node.flags.get(name) {
                None => return Err(format!("`{}` has no flag `{name}`", path.join(" "))),
                Some(Value::Required) if !a.contains('=') => _ = it.next(),
                Some(Value::Optional) if !a.contains('=') => _ = it.next_if(|n| !n.starts_with('-')),
                Some(_) => {}
            }
            if ["-h", "--help", "-V", "--version"].contains(&name) {
                return Ok(());
            }
        } else if !node.subs.is_empty() && !positional {
            node = node.subs.get(a.as_str()).ok_or_else(|| format!("`{}` has no subcommand `{a}`", path.join(" ")))?;
            path.push(a.clone());
        } else {
            positional = true;
        }
    }
    if node.subs.is_empty() { Ok(()) } else { Err(format!("`{}` needs a subcommand", path.join(" "))) }
}

/// Every code snippet of `doc`: fenced lines (and the backticked parts inside them) and
/// inline code spans, with their line numbers.
fn snippets(doc: &Doc) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in lines(&doc.text) {
        match line {
            Line::Code(l) => {
                out.push((n, l.to_string()));
                out.extend(l.split('`').skip(1).step_by(2).map(|s| (n, s.to_string())));
            }
            Line::Prose(l) => out.extend(code_spans(l).0.into_iter().map(|s| (n, s.to_string()))),
        }
    }
    out
}

/// Problems with the commands of `docs`, against the two command lines.
fn check_commands(docs: &[Doc], agent: &Cli, xtask: &Cli) -> (usize, Vec<String>) {
    let (mut checked, mut errors) = (0, Vec::new());
    for doc in docs {
        for (n, code) in snippets(doc) {
            for f in commands(&code) {
                if f.args.is_empty() {
                    continue;
                }
                checked += 1;
                let cli = match f.program {
                    Program::Agent => agent,
                    Program::Xtask => xtask,
                };
                if let Err(e) = check_command(cli, f.program, &f.args) {
                    errors.push(format!("{}:{n}: `{}`: {e}", doc.rel.display(), code.trim()));
                }
            }
        }
    }
    (checked, errors)
}

fn xtask_bin() -> PathBuf {
    let p = repo().join("target/debug/xtask");
    assert!(p.exists(), "{} not found: build it with `cargo build -p xtask` (`cargo xtask test` does)", p.display());
    p
}

#[test]
fn doc_links_resolve() {
    let root = repo();
    let (checked, errors) = check_links(&root, &docs(&root), &PENDING);
    println!("{checked} links checked");
    assert!(errors.is_empty(), "{} broken link(s):\n{}", errors.len(), errors.join("\n"));
    assert!(checked > 50, "only {checked} links found: is the link parser still finding them?");
}

#[test]
fn doc_commands_exist_in_the_cli() {
    let (agent, xtask) = (cli_tree(&agent_bin(), &[]), cli_tree(&xtask_bin(), &[]));
    let (checked, errors) = check_commands(&docs(&repo()), &agent, &xtask);
    println!("{checked} commands checked");
    assert!(errors.is_empty(), "{} command(s) the CLI does not have:\n{}", errors.len(), errors.join("\n"));
    assert!(checked > 50, "only {checked} commands found: is the command finder still finding them?");
}

#[test]
fn planted_broken_links_are_reported() {
    let root = scratch("docs-check");
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(root.join("docs")).unwrap();
    fs::write(root.join("docs/b.md"), "# Real heading: `x_y`\n\n## Twice\n\n## Twice\n").unwrap();
    let a = "[ok](docs/b.md#real-heading-x_y) [ok](docs/b.md#twice-1) [pending](docs/cluster.md)\n\
             [gone](docs/missing.md) [no anchor](docs/b.md#nope) `[in code](nowhere.md)`\n\
             ```\n[in a block](nowhere.md)\n```\n[up](../../outside.md) [web](https://example.com/x)\n";
    fs::write(root.join("README.md"), a).unwrap();
    let docs = vec![Doc { rel: "README.md".into(), text: a.into() }];
    let (checked, errors) = check_links(&root, &docs, &["docs/cluster.md"]);
    assert_eq!(checked, 7, "{errors:?}");
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(
        errors[0].starts_with("README.md:2: link `docs/missing.md`: `docs/missing.md` does not exist"),
        "{errors:?}"
    );
    assert!(errors[1].contains("`docs/b.md` has no heading whose anchor is `#nope`"), "{errors:?}");
    assert!(errors[2].starts_with("README.md:6: link `../../outside.md`: leaves the repository"), "{errors:?}");
    let _ = fs::remove_dir_all(&root);
}

#[test]
fn planted_unknown_commands_and_flags_are_reported() {
    let (agent, xtask) = (cli_tree(&agent_bin(), &[]), cli_tree(&xtask_bin(), &[]));
    let text = "```sh\n\
                ps-agent run --dry-run --metrics          # fine\n\
                $ ps-agent run --dry-runn\n\
                PS_AGENT_STATE_DIR=/tmp/x ps-agent frobnicate\n\
                ps-agent matrix import F -o out.toml && cargo xtask bench --flood-rounds 2\n\
                systemctl start ps-agent; journalctl -u ps-agent -f\n\
                ```\n\
                Then `target/release/ps-agent stats --watch --intervall 2` and `ps-agent matrix`.\n\
                Output is no command: `ps-agent 0.1.0`, `ps-agent is not running: no state file`.\n\
                ```\nps-agent  mode: dry-run  replies: stateful\n```\n";
    let docs = vec![Doc { rel: "x.md".into(), text: text.into() }];
    let (checked, errors) = check_commands(&docs, &agent, &xtask);
    let want = [
        "x.md:3: `$ ps-agent run --dry-runn`: `ps-agent run` has no flag `--dry-runn`",
        "x.md:4: `PS_AGENT_STATE_DIR=/tmp/x ps-agent frobnicate`: `ps-agent` has no subcommand `frobnicate`",
        "`cargo xtask bench` has no flag `--flood-rounds`",
        "x.md:8: `target/release/ps-agent stats --watch --intervall 2`: `ps-agent stats` has no flag `--intervall`",
        "x.md:8: `ps-agent matrix`: `ps-agent matrix` needs a subcommand",
    ];
    assert_eq!(checked, 7, "{errors:#?}");
    assert_eq!(errors.len(), want.len(), "{errors:#?}");
    for (e, w) in errors.iter().zip(want) {
        assert!(e.contains(w), "expected `{w}` in `{e}`");
    }
}

#[test]
fn anchors_follow_githubs_slugs() {
    let text = "# ps-agent\n## Kernel matrix: `cargo xtask vm-test`\n## Export: nftables, iptables, firewalld\n\
                ## ⚠ Lock-out warning\n## `PS_FLOWS` and [links](x.md)\n## Twice\n## Twice\n```\n# not a heading\n```\n";
    let got = anchors(text);
    for want in [
        "ps-agent",
        "kernel-matrix-cargo-xtask-vm-test",
        "export-nftables-iptables-firewalld",
        "-lock-out-warning",
        "ps_flows-and-links",
        "twice",
        "twice-1",
    ] {
        assert!(got.contains(want), "no `{want}` in {got:?}");
    }
    assert!(!got.contains("not-a-heading"), "{got:?}");
}
