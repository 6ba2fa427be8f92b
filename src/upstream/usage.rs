//! Reads token usage from an answer as it streams by, without holding any byte back:
//! `message_start` + `message_delta` events of a stream (cumulative), `usage` of a JSON body.

use super::json_scan::{fields, top_level_field};
use crate::store::Usage;
use bytes::Bytes;

/// A line longer than this cannot be a usage event; it is skipped, not buffered.
const MAX_EVENT_LINE: usize = 256 * 1024;
/// JSON answers larger than this are not parsed for usage.
const MAX_JSON_BODY: usize = 8 * 1024 * 1024;

#[derive(Default)]
struct UsageFields {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
}

/// A JSON answer as it arrived: its chunks (shared, not copied) and their total length.
#[derive(Default)]
pub struct JsonBody {
    /// Most answers arrive in one chunk, kept without allocating a list.
    first: Option<Bytes>,
    more: Vec<Bytes>,
    len: usize,
    overflowed: bool,
}

impl JsonBody {
    fn push(&mut self, chunk: &Bytes) {
        self.len += chunk.len();
        if self.len > MAX_JSON_BODY {
            self.overflowed = true;
            self.first = None;
            self.more = Vec::new();
        } else if self.first.is_none() {
            self.first = Some(chunk.clone());
        } else {
            self.more.push(chunk.clone());
        }
    }

    fn usage(&self) -> Option<UsageFields> {
        if self.overflowed {
            return None;
        }
        let first = self.first.as_deref().unwrap_or_default();
        let mut joined = Vec::new();
        let body: &[u8] = if self.more.is_empty() {
            first
        } else {
            joined.reserve(self.len);
            joined.extend_from_slice(first);
            for chunk in &self.more {
                joined.extend_from_slice(chunk);
            }
            &joined
        };
        top_level_field(body, "usage").map(usage_fields)
    }
}

/// The four counts of a `usage` object's raw text (a count that is not a number is absent).
fn usage_fields(usage: &[u8]) -> UsageFields {
    let mut counts = UsageFields::default();
    for (name, value) in fields(usage) {
        let n = count(value);
        match name {
            b"input_tokens" => counts.input_tokens = n,
            b"output_tokens" => counts.output_tokens = n,
            b"cache_creation_input_tokens" => counts.cache_creation_input_tokens = n,
            b"cache_read_input_tokens" => counts.cache_read_input_tokens = n,
            _ => {}
        }
    }
    counts
}

/// A token count: plain decimal digits that fit a u64 (a JSON fraction, exponent or sign is
/// not a count).
fn count(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
            .flatten()
    })
}

fn overlay(total: &mut Usage, u: &UsageFields) {
    // Stream counts are cumulative: the latest value of each field is the total.
    if let Some(n) = u.input_tokens {
        total.input_tokens = n;
    }
    if let Some(n) = u.output_tokens {
        total.output_tokens = n;
    }
    if let Some(n) = u.cache_creation_input_tokens {
        total.cache_creation_input_tokens = n;
    }
    if let Some(n) = u.cache_read_input_tokens {
        total.cache_read_input_tokens = n;
    }
}

pub enum UsageReader {
    Sse {
        line: Vec<u8>,
        skipping: bool,
        total: Usage,
    },
    Json(JsonBody),
    Ignore,
}

impl UsageReader {
    pub fn for_content_type(content_type: Option<&str>) -> UsageReader {
        match content_type {
            Some(ct) if ct.starts_with("text/event-stream") => UsageReader::Sse {
                line: Vec::new(),
                skipping: false,
                total: Usage::default(),
            },
            Some(ct) if ct.starts_with("application/json") => {
                UsageReader::Json(JsonBody::default())
            }
            _ => UsageReader::Ignore,
        }
    }

    pub fn feed(&mut self, chunk: &Bytes) {
        match self {
            UsageReader::Sse {
                line,
                skipping,
                total,
            } => feed_sse(line, skipping, total, chunk),
            UsageReader::Json(body) => body.push(chunk),
            UsageReader::Ignore => {}
        }
    }

    pub fn finish(&mut self) -> Usage {
        match self {
            UsageReader::Sse {
                line,
                skipping,
                total,
            } => {
                if !*skipping && !line.is_empty() {
                    read_event_line(line, total);
                }
                *total
            }
            UsageReader::Json(body) => {
                let mut total = Usage::default();
                if let Some(u) = body.usage() {
                    overlay(&mut total, &u);
                }
                total
            }
            UsageReader::Ignore => Usage::default(),
        }
    }
}

fn feed_sse(line: &mut Vec<u8>, skipping: &mut bool, total: &mut Usage, mut chunk: &[u8]) {
    while let Some(end) = memchr::memchr(b'\n', chunk) {
        if !*skipping {
            if line.is_empty() {
                // The whole line is in this chunk (the usual case): read it where it is.
                read_event_line(&chunk[..end], total);
            } else {
                line.extend_from_slice(&chunk[..end]);
                read_event_line(line, total);
            }
        }
        line.clear();
        *skipping = false;
        chunk = &chunk[end + 1..];
    }
    if !*skipping {
        line.extend_from_slice(chunk);
        if line.len() > MAX_EVENT_LINE {
            line.clear();
            *skipping = true;
        }
    }
}

/// The two events that carry usage; every other event is passed by unread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UsageEvent {
    MessageStart,
    MessageDelta,
}

/// Which usage event an event's data is, if any. Claude writes `{"type":"…"` first: that is
/// read in place (a few compares per event, most of a stream's events being deltas); data
/// written any other way is read field by field.
fn usage_event(data: &[u8]) -> Option<UsageEvent> {
    const START: &[u8] = b"message_start\"";
    const DELTA: &[u8] = b"message_delta\"";
    let data = data.strip_prefix(b" ").unwrap_or(data);
    // The name and its closing quote: `"message_start"`, never a longer name.
    let kind = match data.strip_prefix(br#"{"type":""#) {
        Some(rest) => rest.get(..START.len())?,
        None => top_level_field(data, "type")?.strip_prefix(b"\"")?,
    };
    match kind {
        START => Some(UsageEvent::MessageStart),
        DELTA => Some(UsageEvent::MessageDelta),
        _ => None,
    }
}

fn read_event_line(line: &[u8], total: &mut Usage) {
    let Some(data) = line.strip_prefix(b"data:") else {
        return;
    };
    let usage = match usage_event(data) {
        None => return,
        Some(UsageEvent::MessageStart) => {
            top_level_field(data, "message").and_then(|m| top_level_field(m, "usage"))
        }
        Some(UsageEvent::MessageDelta) => top_level_field(data, "usage"),
    };
    if let Some(usage) = usage {
        overlay(total, &usage_fields(usage));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":4,\"cache_read_input_tokens\":7,\"output_tokens\":1}}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"message_delta in text\"}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n";

    fn expected() -> Usage {
        Usage {
            requests: 0,
            input_tokens: 25,
            output_tokens: 15,
            cache_creation_input_tokens: 4,
            cache_read_input_tokens: 7,
        }
    }

    #[test]
    fn reads_a_stream_whole() {
        let mut r = UsageReader::for_content_type(Some("text/event-stream; charset=utf-8"));
        r.feed(&Bytes::from_static(STREAM.as_bytes()));
        assert_eq!(r.finish(), expected());
    }

    #[test]
    fn reads_a_stream_split_at_every_byte() {
        let mut r = UsageReader::for_content_type(Some("text/event-stream"));
        for b in STREAM.as_bytes() {
            r.feed(&Bytes::copy_from_slice(std::slice::from_ref(b)));
        }
        assert_eq!(r.finish(), expected());
    }

    #[test]
    fn counts_are_plain_digits_that_fit() {
        assert_eq!(count(b"0"), Some(0));
        assert_eq!(count(b"18446744073709551615"), Some(u64::MAX));
        for not_a_count in [
            &b""[..],
            b"18446744073709551616",
            b"-1",
            b"+1",
            b"1.0",
            b"1e3",
            b"x",
        ] {
            assert_eq!(
                count(not_a_count),
                None,
                "{}",
                String::from_utf8_lossy(not_a_count)
            );
        }
    }

    #[test]
    fn reads_json_usage_in_one_chunk_or_many() {
        let body: &[u8] = br#"{"id":"m","usage":{"input_tokens":3,"output_tokens":9}}"#;
        let splits: [&[usize]; 4] = [&[], &[24], &[10, 30], &[1, 2, 3, 40, 55]];
        for cuts in splits {
            let mut r = UsageReader::for_content_type(Some("application/json"));
            let mut from = 0;
            for &cut in cuts.iter().chain([&body.len()]) {
                r.feed(&Bytes::copy_from_slice(&body[from..cut]));
                from = cut;
            }
            let u = r.finish();
            assert_eq!((u.input_tokens, u.output_tokens), (3, 9), "cut at {cuts:?}");
        }
    }

    #[test]
    fn finds_usage_events_whatever_their_field_order() {
        let mut r = UsageReader::for_content_type(Some("text/event-stream"));
        r.feed(&Bytes::from_static(
            b"data: {\"message\":{\"usage\":{\"input_tokens\":5}},\"type\":\"message_start\"}\n\n\
              data:{\"type\":\"content_block_delta\",\"usage\":{\"output_tokens\":99}}\n\n\
              data: {\"type\": \"message_delta\", \"usage\":{\"output_tokens\":3}}\n\n",
        ));
        let u = r.finish();
        assert_eq!((u.input_tokens, u.output_tokens), (5, 3));
    }

    #[test]
    fn garbage_gives_zero_not_a_panic() {
        let mut r = UsageReader::for_content_type(Some("text/event-stream"));
        r.feed(&Bytes::from_static(
            b"data: {\"type\":\"message_start\",broken\n\n",
        ));
        r.feed(&Bytes::from(vec![b'x'; MAX_EVENT_LINE + 10]));
        r.feed(&Bytes::from_static(
            b"\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":2}}\n",
        ));
        assert_eq!(r.finish().output_tokens, 2);
    }

    /// One event's data line, its fields in the given order, `gap` after each `:` and `,`.
    fn event_line(parts: &[(String, String)], gap: &str) -> String {
        let body: Vec<String> = parts
            .iter()
            .map(|(k, v)| format!("{}:{gap}{v}", serde_json::to_string(k).unwrap()))
            .collect();
        format!("data: {{{}}}\n\n", body.join(&format!(",{gap}")))
    }

    proptest::proptest! {
        /// Whatever else an event holds and wherever `type` stands, the counts read are
        /// the ones a full parse of the event finds.
        #[test]
        fn usage_events_read_as_a_full_parse_does(
            counts in proptest::array::uniform4(proptest::option::of(0u64..u64::MAX)),
            decoys in proptest::collection::vec(
                ("x_[a-z]{0,8}", crate::upstream::json_scan::tests::any_json()), 0..4),
            start in proptest::bool::ANY,
            type_first in proptest::bool::ANY,
            spaced in proptest::bool::ANY,
        ) {
            let names = ["input_tokens", "output_tokens", "cache_creation_input_tokens",
                "cache_read_input_tokens"];
            let usage: serde_json::Map<String, serde_json::Value> = names
                .iter()
                .zip(counts)
                .filter_map(|(n, c)| Some((n.to_string(), c?.into())))
                .collect();
            let usage = serde_json::Value::Object(usage).to_string();
            let mut parts: Vec<(String, String)> = decoys
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect();
            let (kind, carrier) = if start {
                parts.push(("usage".into(), usage));
                let message = event_line(&parts, "");
                let message = message["data: ".len()..].trim_end().to_string();
                ("message_start", vec![("message".to_string(), message)])
            } else {
                parts.push(("usage".into(), usage));
                ("message_delta", parts)
            };
            let mut event = carrier;
            let kind = ("type".to_string(), format!("\"{kind}\""));
            if type_first { event.insert(0, kind) } else { event.push(kind) }
            let line = event_line(&event, if spaced { " " } else { "" });

            let mut r = UsageReader::for_content_type(Some("text/event-stream"));
            r.feed(&Bytes::from(line.clone()));
            let read = r.finish();
            let parsed: serde_json::Value = serde_json::from_str(&line["data: ".len()..]).unwrap();
            let usage = if start { &parsed["message"]["usage"] } else { &parsed["usage"] };
            let want = |n: &str| usage[n].as_u64().unwrap_or(0);
            proptest::prop_assert_eq!(
                (read.input_tokens, read.output_tokens,
                 read.cache_creation_input_tokens, read.cache_read_input_tokens),
                (want(names[0]), want(names[1]), want(names[2]), want(names[3])),
                "{}", line
            );
        }
    }
}
