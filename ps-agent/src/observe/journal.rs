//! Where log lines go and how they look. Under systemd, stderr is a stream to journald,
//! and systemd names it in `JOURNAL_STREAM` as `DEVICE:INODE` (systemd.exec(5)): each line
//! then starts with its syslog priority, `<3>` error, `<4>` warning, `<6>` info, `<7>`
//! debug (the `SD_ERR`... prefixes of sd-daemon(3)), so `journalctl -p warning -u ps-agent`
//! finds warnings and errors, and carries no timestamp, since journald stamps every entry.
//! Elsewhere (a terminal, a file, a test harness) lines keep env_logger's format.
//!
//! The variable alone is not enough: a child whose stderr was redirected inherits it, so
//! the stream counts only when stderr is that very file, as systemd.exec(5) advises.

use std::{io::Write as _, os::fd::AsRawFd as _, sync::OnceLock};

use log::Level;

/// Where stderr goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sink {
    /// journald's stream: priority prefixes, no timestamps.
    Journal,
    /// Anything else: env_logger's format.
    Plain,
}

/// The sink of this process's stderr (decided once).
pub fn sink() -> Sink {
    static SINK: OnceLock<Sink> = OnceLock::new();
    *SINK.get_or_init(|| {
        let stream = std::env::var("JOURNAL_STREAM").ok();
        let ours = stream.as_deref().and_then(parse_stream).is_some_and(|s| Some(s) == stderr_identity());
        if ours { Sink::Journal } else { Sink::Plain }
    })
}

/// `DEVICE:INODE`, both decimal, as systemd formats `JOURNAL_STREAM`.
fn parse_stream(value: &str) -> Option<(u64, u64)> {
    let (dev, ino) = value.split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

/// Device and inode of the file open as stderr.
fn stderr_identity() -> Option<(u64, u64)> {
    // SAFETY: all-zero is a valid `stat`; fstat writes it for a valid fd (2 may be closed:
    // then it fails and nothing is read).
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let rc = unsafe { libc::fstat(std::io::stderr().as_raw_fd(), &mut st) };
    (rc == 0).then_some((st.st_dev, st.st_ino))
}

/// The syslog priority of `level` (syslog(3): LOG_ERR 3, LOG_WARNING 4, LOG_INFO 6,
/// LOG_DEBUG 7).
pub const fn priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// The text to put before a line of `level` written to stderr outside the logger (the
/// final error of a command): `<3>` and the like under journald, nothing elsewhere.
pub fn prefix(level: Level) -> String {
    match sink() {
        Sink::Journal => format!("<{}>", priority(level)),
        Sink::Plain => String::new(),
    }
}

/// `message` as journald lines: every line with the priority prefix (journald reads each
/// line of the stream as an entry of its own).
pub fn journal_lines(level: Level, message: &str) -> String {
    let p = priority(level);
    message.lines().map(|l| format!("<{p}>{l}\n")).collect()
}

/// Install the logger: `RUST_LOG` filters (default `info`); the format follows [`sink`].
pub fn init() {
    let mut b = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    match sink() {
        Sink::Journal => {
            b.format(|buf, record| buf.write_all(journal_lines(record.level(), &record.args().to_string()).as_bytes()));
        }
        Sink::Plain => {
            b.format_target(false);
        }
    }
    b.init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_and_lines() {
        assert_eq!([Level::Error, Level::Warn, Level::Info, Level::Debug, Level::Trace].map(priority), [3, 4, 6, 7, 7]);
        assert_eq!(journal_lines(Level::Warn, "one\ntwo"), "<4>one\n<4>two\n");
        assert_eq!(journal_lines(Level::Info, "drop src=1"), "<6>drop src=1\n");
    }

    #[test]
    fn stream_values() {
        assert_eq!(parse_stream("2049:123456"), Some((2049, 123456)));
        for bad in ["", "2049", "a:1", "1:b", "1:2:3"] {
            assert_eq!(parse_stream(bad), None, "{bad}");
        }
    }
}
