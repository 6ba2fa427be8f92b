//! Reads token usage from an answer as it streams by, without holding any byte back:
//! `message_start` + `message_delta` events of a stream (cumulative), `usage` of a JSON body.

use super::json_scan::{fields, top_level_field};
use crate::store::Usage;
use bytes::Bytes;
use memchr::memmem;
use serde::Deserialize;
use std::sync::LazyLock;

/// A line longer than this cannot be a usage event; it is skipped, not buffered.
const MAX_EVENT_LINE: usize = 256 * 1024;
/// JSON answers larger than this are not parsed for usage.
const MAX_JSON_BODY: usize = 8 * 1024 * 1024;

#[derive(Deserialize, Default)]
struct UsageFields {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
}

/// A JSON answer as it arrived: its chunks (shared, not copied) and their total length.
#[derive(Default)]
pub struct JsonBody {
    chunks: Vec<Bytes>,
    len: usize,
    overflowed: bool,
}

impl JsonBody {
    fn usage(&self) -> Option<UsageFields> {
        if self.overflowed {
            return None;
        }
        let joined;
        let body: &[u8] = match self.chunks.as_slice() {
            [one] => one,
            many => {
                joined = many.concat();
                &joined
            }
        };
        let mut usage = UsageFields::default();
        for (name, value) in fields(top_level_field(body, "usage")?) {
            let n = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
            match name {
                b"input_tokens" => usage.input_tokens = n,
                b"output_tokens" => usage.output_tokens = n,
                b"cache_creation_input_tokens" => usage.cache_creation_input_tokens = n,
                b"cache_read_input_tokens" => usage.cache_read_input_tokens = n,
                _ => {}
            }
        }
        Some(usage)
    }
}

#[derive(Deserialize)]
struct MessageFields {
    usage: Option<UsageFields>,
}

#[derive(Deserialize)]
struct EventFields {
    #[serde(rename = "type")]
    kind: String,
    message: Option<MessageFields>,
    usage: Option<UsageFields>,
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
            UsageReader::Json(body) => {
                body.len += chunk.len();
                if body.len > MAX_JSON_BODY {
                    body.overflowed = true;
                    body.chunks.clear();
                } else {
                    body.chunks.push(chunk.clone());
                }
            }
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

/// Finders for the two usage events' names, built once (building one per line was the
/// largest per-event cost of a stream).
static USAGE_EVENTS: LazyLock<[memmem::Finder<'static>; 2]> = LazyLock::new(|| {
    [
        memmem::Finder::new(b"message_start"),
        memmem::Finder::new(b"message_delta"),
    ]
});

/// Whether an event's data may carry usage: read from its leading `"type"` field (where
/// Claude puts it), else from a search of its first bytes.
fn may_carry_usage(data: &[u8]) -> bool {
    match fields(data).next() {
        Some((b"type", kind)) => kind == b"\"message_start\"" || kind == b"\"message_delta\"",
        _ => {
            let head = &data[..data.len().min(64)];
            USAGE_EVENTS.iter().any(|f| f.find(head).is_some())
        }
    }
}

fn read_event_line(line: &[u8], total: &mut Usage) {
    let Some(data) = line.strip_prefix(b"data:") else {
        return;
    };
    if !may_carry_usage(data) {
        return;
    }
    let Ok(event) = serde_json::from_slice::<EventFields>(data) else {
        return;
    };
    let fields = match event.kind.as_str() {
        "message_start" => event.message.and_then(|m| m.usage),
        "message_delta" => event.usage,
        _ => None,
    };
    if let Some(u) = fields {
        overlay(total, &u);
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
    fn reads_json_usage() {
        let mut r = UsageReader::for_content_type(Some("application/json"));
        r.feed(&Bytes::from_static(
            br#"{"id":"m","usage":{"input_tokens":3,"#,
        ));
        r.feed(&Bytes::from_static(br#""output_tokens":9}}"#));
        let u = r.finish();
        assert_eq!((u.input_tokens, u.output_tokens), (3, 9));
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
}
