//! Rate-limit headers: the reset time of our own `x-ratelimit-*` set, and the reset time
//! Claude gives for an account in `anthropic-ratelimit-unified-reset`.

use crate::clock::rfc3339_ms;
use crate::domain::Millis;
use crate::upstream::h1::Fields;
use actix_web::http::header::HeaderValue;
use std::cell::RefCell;

thread_local! {
    /// The last `x-ratelimit-reset-requests` value: a window's reset time is the same for
    /// every request in it, so it is formatted once per window, not per request.
    static RESET_VALUE: RefCell<Option<(Millis, HeaderValue)>> =
        const { RefCell::new(None) };
}

/// `resets_at` as the RFC 3339 header value.
pub fn reset_value(resets_at: Millis) -> HeaderValue {
    RESET_VALUE.with(|kept| {
        let mut kept = kept.borrow_mut();
        match kept.as_ref() {
            Some((at, value)) if *at == resets_at => value.clone(),
            _ => {
                // RFC 3339 text is visible ASCII: always a valid value.
                let value = HeaderValue::from_str(&rfc3339_ms(resets_at))
                    .unwrap_or_else(|_| HeaderValue::from_static(""));
                *kept = Some((resets_at, value.clone()));
                value
            }
        }
    })
}

/// `anthropic-ratelimit-unified-reset`: epoch seconds, or RFC 3339.
pub fn unified_reset_ms(answer_headers: &Fields) -> Option<i64> {
    let raw = answer_headers.get_str("anthropic-ratelimit-unified-reset")?;
    if let Ok(secs) = raw.parse::<i64>() {
        return Some(secs.saturating_mul(1000));
    }
    chrono::DateTime::parse_from_rfc3339(raw)
        .ok()
        .map(|t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::h1::Field;
    use bytes::Bytes;

    #[test]
    fn the_reset_value_follows_the_window() {
        assert_eq!(reset_value(1_776_752_345_678), "2026-04-21T06:19:05.678Z");
        assert_eq!(reset_value(1_776_752_345_678), "2026-04-21T06:19:05.678Z");
        assert_eq!(reset_value(0), "1970-01-01T00:00:00.000Z");
    }

    fn reset_field(value: &str) -> Fields {
        let name = "Anthropic-RateLimit-Unified-Reset";
        let head = format!("{name}: {value}");
        Fields::new(
            Bytes::from(head),
            vec![Field {
                name: 0..name.len(),
                value: name.len() + 2..name.len() + 2 + value.len(),
            }],
        )
    }

    #[test]
    fn claudes_reset_reads_as_seconds_or_rfc3339() {
        assert_eq!(
            unified_reset_ms(&reset_field("1776752345")),
            Some(1_776_752_345_000)
        );
        assert_eq!(
            unified_reset_ms(&reset_field("2026-04-21T06:19:05.678Z")),
            Some(1_776_752_345_678)
        );
        assert_eq!(unified_reset_ms(&reset_field("soon")), None);
        assert_eq!(unified_reset_ms(&Fields::default()), None);
    }
}
