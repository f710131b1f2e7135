//! The one place that chooses between JSON and text, and reads and writes the files and
//! streams commands take.

use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;

/// Print `value` as pretty JSON, or `text()` as it is.
pub fn emit<T: Serialize + ?Sized>(json: bool, value: &T, text: impl FnOnce() -> String) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print!("{}", text());
    }
    Ok(())
}

/// Print each line.
pub fn print_lines(lines: Vec<String>) {
    for l in lines {
        println!("{l}");
    }
}

/// A file's text (`-`: stdin); not UTF-8 is replaced, not refused.
pub fn read_input(path: &Path) -> anyhow::Result<String> {
    if path == Path::new("-") {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).context("failed to read stdin")?;
        return Ok(s);
    }
    let bytes = std::fs::read(path).with_context(|| format!("failed to read `{}`", path.display()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Write `text` to `output`, or to stdout.
pub fn write_output(output: Option<&Path>, text: &str) -> anyhow::Result<()> {
    match output {
        Some(p) => std::fs::write(p, text).with_context(|| format!("failed to write `{}`", p.display())),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}
