//! env_logger's default line, so operators' greps and parsers keep working:
//! `[<UTC time, seconds> <LEVEL padded to 5> <module path>] <message>`.

use log::Record;
use std::cell::RefCell;
use std::io::Write;

thread_local! {
    /// The current second, formatted once per second per thread.
    static STAMP: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

fn formatted(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

fn stamp_into(out: &mut Vec<u8>) {
    let secs = crate::clock::coarse_unix_secs();
    let cached = STAMP
        .try_with(|cell| {
            let Ok(mut stamp) = cell.try_borrow_mut() else {
                return false;
            };
            if stamp.0 != secs {
                *stamp = (secs, formatted(secs));
            }
            out.extend_from_slice(stamp.1.as_bytes());
            true
        })
        .unwrap_or(false);
    if !cached {
        out.extend_from_slice(formatted(secs).as_bytes());
    }
}

/// The level as env_logger pads it (to five columns).
fn padded(level: log::Level) -> &'static str {
    match level {
        log::Level::Error => "ERROR",
        log::Level::Warn => "WARN ",
        log::Level::Info => "INFO ",
        log::Level::Debug => "DEBUG",
        log::Level::Trace => "TRACE",
    }
}

/// Appends one formatted line, newline included. Put together by hand up to the message:
/// the formatting machinery cost more than the request line it wrote.
pub fn line(out: &mut Vec<u8>, record: &Record<'_>) {
    out.push(b'[');
    stamp_into(out);
    out.push(b' ');
    out.extend_from_slice(padded(record.level()).as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        record
            .module_path()
            .unwrap_or_else(|| record.target())
            .as_bytes(),
    );
    out.extend_from_slice(b"] ");
    match record.args().as_str() {
        Some(text) => out.extend_from_slice(text.as_bytes()),
        None => {
            let _ = out.write_fmt(*record.args());
        }
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_env_loggers_default_line() {
        let mut out = Vec::new();
        line(
            &mut out,
            &Record::builder()
                .level(log::Level::Info)
                .module_path(Some("claude_route::http::proxy"))
                .args(format_args!(
                    "key {} using account: {}",
                    "sk-cli-v1-ab", "a1"
                ))
                .build(),
        );
        let text = String::from_utf8(out).expect("utf-8");
        let (stamp, rest) = text[1..].split_once(' ').expect("a space after the time");
        assert!(
            chrono::DateTime::parse_from_rfc3339(stamp).is_ok(),
            "{text}"
        );
        assert!(stamp.ends_with('Z'), "{text}");
        assert_eq!(
            rest,
            "INFO  claude_route::http::proxy] key sk-cli-v1-ab using account: a1\n"
        );
    }

    #[test]
    fn longer_levels_are_not_padded() {
        let mut out = Vec::new();
        line(
            &mut out,
            &Record::builder()
                .level(log::Level::Error)
                .target("x")
                .args(format_args!("boom"))
                .build(),
        );
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.ends_with(" ERROR x] boom\n"), "{text}");
    }

    #[test]
    fn every_level_takes_five_columns_like_env_logger() {
        for (level, shown) in [
            (log::Level::Warn, "WARN "),
            (log::Level::Info, "INFO "),
            (log::Level::Debug, "DEBUG"),
            (log::Level::Trace, "TRACE"),
        ] {
            let mut out = Vec::new();
            let count = 3;
            line(
                &mut out,
                &Record::builder()
                    .level(level)
                    .target("t")
                    .args(format_args!("{count} left"))
                    .build(),
            );
            let text = String::from_utf8(out).expect("utf-8");
            assert!(text.ends_with(&format!(" {shown} t] 3 left\n")), "{text}");
        }
    }
}
