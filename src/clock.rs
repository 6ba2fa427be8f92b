//! The clocks: wall time in milliseconds, and coarse clocks for what is measured in seconds.
//! Tests scale durations through config instead of faking time, so these stay plain reads of
//! the system's clocks.

use crate::domain::Millis;

pub fn now_ms() -> Millis {
    // Read straight from the system clock: chrono's `Utc::now` also works out the calendar
    // date, which nothing here needs and every request paid for.
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(since) => Millis::try_from(since.as_millis()).unwrap_or(Millis::MAX),
        Err(before) => -Millis::try_from(before.duration().as_millis()).unwrap_or(Millis::MAX),
    }
}

/// A clock the kernel keeps at its last tick (a few milliseconds behind at most), read
/// without asking the hardware: for what is measured in seconds — how long a connection sat
/// idle, a log line's stamp — where reading the exact clock was a measurable part of a
/// request on a virtual machine.
fn coarse(clock: libc::clockid_t) -> std::time::Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write; both clocks exist on every Linux since 2.6.32.
    if unsafe { libc::clock_gettime(clock, &mut now) } != 0 {
        return std::time::Duration::ZERO;
    }
    let secs = u64::try_from(now.tv_sec).unwrap_or(0);
    let nanos = u32::try_from(now.tv_nsec).unwrap_or(0);
    std::time::Duration::new(secs, nanos)
}

/// Time since some fixed point (boot), at tick precision; never goes back.
pub fn coarse_monotonic() -> std::time::Duration {
    coarse(libc::CLOCK_MONOTONIC_COARSE)
}

/// Seconds since the Unix epoch, at tick precision.
pub fn coarse_unix_secs() -> u64 {
    coarse(libc::CLOCK_REALTIME_COARSE).as_secs()
}

/// RFC 3339 text of a millisecond timestamp, as headers and tables show it.
pub fn rfc3339(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// RFC 3339 with milliseconds, for reset times: a client that waits until then is never
/// early and never late by a rounding. Written by hand: it goes on every limited answer,
/// and chrono's formatter costs more than the rest of the response head.
pub fn rfc3339_ms(ms: Millis) -> String {
    let (days, ms_of_day) = (ms.div_euclid(DAY_MS), ms.rem_euclid(DAY_MS));
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        return chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_default();
    }
    let (secs, milli) = (ms_of_day / 1000, ms_of_day % 1000);
    let mut out = *b"0000-00-00T00:00:00.000Z";
    let digits = |at: &mut [u8], mut value: i64| {
        for slot in at.iter_mut().rev() {
            *slot = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    digits(&mut out[0..4], year);
    digits(&mut out[5..7], month);
    digits(&mut out[8..10], day);
    digits(&mut out[11..13], secs / 3600);
    digits(&mut out[14..16], secs / 60 % 60);
    digits(&mut out[17..19], secs % 60);
    digits(&mut out[20..23], milli);
    String::from_utf8_lossy(&out).into_owned()
}

const DAY_MS: i64 = 86_400_000;

/// (year, month, day) of a count of days since 1970-01-01 (proleptic Gregorian; Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn by_chrono(ms: Millis) -> String {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_default()
    }

    #[test]
    fn the_coarse_clocks_follow_the_exact_ones() {
        let exact = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // A tick behind at most: the same second, or a neighbour when one began meanwhile.
        assert!((exact - 1..=exact + 1).contains(&coarse_unix_secs()));
        let first = coarse_monotonic();
        let later = coarse_monotonic();
        assert!(first > std::time::Duration::ZERO && later >= first);
    }

    #[test]
    fn now_is_the_system_clock_in_milliseconds() {
        let before = chrono::Utc::now().timestamp_millis();
        let now = now_ms();
        let after = chrono::Utc::now().timestamp_millis();
        assert!(
            (before..=after).contains(&now),
            "{before} <= {now} <= {after}"
        );
    }

    #[test]
    fn known_instants() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_776_752_345_678), "2026-04-21T06:19:05.678Z");
        assert_eq!(rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            rfc3339_ms(253_402_300_800_000),
            by_chrono(253_402_300_800_000)
        );
    }

    proptest! {
        #[test]
        fn agrees_with_chrono(ms in -62_167_219_200_000_i64..253_402_300_800_000) {
            prop_assert_eq!(rfc3339_ms(ms), by_chrono(ms));
        }
    }
}
