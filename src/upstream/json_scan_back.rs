//! The last field of a JSON object, read from the end: only that field's value is walked.
//! In valid JSON an object's closing brace is the document's last byte (past whitespace), so
//! the value just before it belongs to the top-level object. Anything unexpected gives None
//! and the caller reads from the start instead.

use memchr::memrchr;

/// Index just past the last non-whitespace byte of `json[..end]`.
fn back_over_ws(json: &[u8], mut end: usize) -> usize {
    while end > 0 && json[end - 1].is_ascii_whitespace() {
        end -= 1;
    }
    end
}

/// `json[close]` is a string's closing quote: the index of its opening quote (the nearest
/// quote before it that no backslash escapes).
fn string_start(json: &[u8], close: usize) -> Option<usize> {
    let mut end = close;
    loop {
        let quote = memrchr(b'"', &json[..end])?;
        let backslashes = json[..quote]
            .iter()
            .rev()
            .take_while(|&&b| b == b'\\')
            .count();
        if backslashes % 2 == 0 {
            return Some(quote);
        }
        end = quote;
    }
}

/// The index where the value ending just before `end` starts.
fn value_start(json: &[u8], end: usize) -> Option<usize> {
    match *json.get(end.checked_sub(1)?)? {
        b'"' => string_start(json, end - 1),
        b'}' | b']' => {
            let mut depth = 0usize;
            let mut i = end;
            while i > 0 {
                i -= 1;
                match json[i] {
                    b'"' => i = string_start(json, i)?,
                    b'}' | b']' => depth += 1,
                    b'{' | b'[' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i);
                        }
                    }
                    _ => {}
                }
            }
            None
        }
        // A number, true, false or null.
        _ => {
            let start = json[..end]
                .iter()
                .rposition(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')))
                .map_or(0, |i| i + 1);
            (start < end).then_some(start)
        }
    }
}

/// The (name, raw value) of the last field of the top-level object in `json`.
pub fn last_field(json: &[u8]) -> Option<(&[u8], &[u8])> {
    let close = back_over_ws(json, json.len()).checked_sub(1)?;
    if json[close] != b'}' {
        return None;
    }
    let value_end = back_over_ws(json, close);
    let value_at = value_start(json, value_end)?;
    let colon = back_over_ws(json, value_at).checked_sub(1)?;
    if json[colon] != b':' {
        return None;
    }
    let name_close = back_over_ws(json, colon).checked_sub(1)?;
    if json[name_close] != b'"' {
        return None;
    }
    let name_open = string_start(json, name_close)?;
    let before = back_over_ws(json, name_open).checked_sub(1)?;
    if !matches!(json[before], b',' | b'{') {
        return None;
    }
    Some((&json[name_open + 1..name_close], &json[value_at..value_end]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::json_scan::tests::any_json;
    use proptest::prelude::*;

    proptest! {
        /// Objects written by hand (any field order, any whitespace): the last field read
        /// from the end is the last one written.
        #[test]
        fn finds_the_last_field_written(
            fields in prop::collection::vec(("[a-z\"\\\\{}:, ]{0,6}", any_json()), 1..6),
            gap in "[ \n\t]{0,2}",
        ) {
            let written: Vec<(String, String)> = fields
                .iter()
                .map(|(k, v)| (serde_json::to_string(k).expect("key"), serde_json::to_string(v).expect("value")))
                .collect();
            let body: Vec<String> = written.iter().map(|(k, v)| format!("{gap}{k}{gap}:{gap}{v}{gap}")).collect();
            let text = format!("{gap}{{{}}}{gap}", body.join(","));
            let (key, value) = written.last().expect("one field");
            prop_assert_eq!(
                last_field(text.as_bytes()),
                Some((&key.as_bytes()[1..key.len() - 1], value.as_bytes()))
            );
        }
    }

    #[test]
    fn reads_the_last_field_of_an_answer() {
        let answer = br#"{"id":"m","content":[{"type":"text","text":"\"usage\":{\"x\":1} \\"}],
            "usage" : {"input_tokens":12,"cache_creation":{"a":1},"service_tier":"std\"x\\"} }
"#;
        let (name, value) = last_field(answer).expect("a last field");
        assert_eq!(name, b"usage");
        assert_eq!(
            value,
            &br#"{"input_tokens":12,"cache_creation":{"a":1},"service_tier":"std\"x\\"}"#[..]
        );
        assert_eq!(
            last_field(br#"{"a":1,"b":-2.5e3}"#),
            Some((&b"b"[..], &b"-2.5e3"[..]))
        );
        assert_eq!(
            last_field(br#"{"a":"x\\"}"#),
            Some((&b"a"[..], &br#""x\\""#[..]))
        );
    }

    #[test]
    fn anything_unexpected_is_none_not_a_panic() {
        for text in [
            &b""[..],
            b"}",
            b"{}",
            b" } ",
            b"[1]",
            b"\"a\":1}",
            b"{\"a\":}",
            b"{\"a\" 1}",
            b"{a:1}",
            b"{\"a\":1]}",
            b"{\"a\":\"unterminated}",
            b"1}",
            b"]]}",
            b"{\"a\":[}",
        ] {
            assert_eq!(
                last_field(text),
                None,
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
    }
}
