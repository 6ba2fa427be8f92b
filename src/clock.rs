//! The one clock: wall time in milliseconds. Tests scale durations through config instead
//! of faking time, so this stays a plain read of the system clock.

use crate::domain::Millis;

pub fn now_ms() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

/// RFC 3339 text of a millisecond timestamp, as headers and tables show it.
pub fn rfc3339(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// RFC 3339 with milliseconds, for reset times: a client that waits until then is never
/// early and never late by a rounding.
pub fn rfc3339_ms(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}
