//! The clocks: CLOCK_MONOTONIC (the programs' `bpf_ktime_get_ns`, which stamps flows and
//! would-drops) and the wall clock (state file, counters epoch, reports), and how times are
//! shown.

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into ts.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Wall clock, seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    unix_now_ns() / 1_000_000_000
}

/// Wall clock, nanoseconds since the Unix epoch.
pub fn unix_now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// A time for a person: `YYYY-MM-DD HH:MM:SS ZONE` in the host's time zone (`TZ`, else
/// `/etc/localtime`; UTC when neither says). JSON carries times as Unix seconds or RFC 3339
/// in UTC ([`rfc3339`]).
pub fn fmt_unix(secs: u64) -> String {
    fmt_in(secs, &jiff::tz::TimeZone::try_system().unwrap_or(jiff::tz::TimeZone::UTC))
}

/// [`fmt_unix`] in the time zone `tz`.
pub fn fmt_in(secs: u64, tz: &jiff::tz::TimeZone) -> String {
    let t = jiff::Timestamp::from_second(secs as i64).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    t.to_zoned_datetime(tz.clone()).strftime("%Y-%m-%d %H:%M:%S %Z").to_string()
}

/// RFC 3339 in UTC (`2026-12-03T10:00:00Z`), for JSON.
pub fn rfc3339(secs: u64) -> String {
    jiff::Timestamp::from_second(secs as i64).unwrap_or(jiff::Timestamp::UNIX_EPOCH).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        let utc = jiff::tz::TimeZone::UTC;
        assert_eq!(fmt_in(0, &utc), "1970-01-01 00:00:00 UTC");
        assert_eq!(fmt_in(1_700_000_000, &utc), "2023-11-14 22:13:20 UTC");
        assert_eq!(fmt_in(951_782_400, &utc), "2000-02-29 00:00:00 UTC");
        let east = jiff::tz::TimeZone::fixed(jiff::tz::Offset::constant(2));
        assert_eq!(fmt_in(1_700_000_000, &east), "2023-11-15 00:13:20 +02");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
