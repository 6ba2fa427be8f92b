//! Finds one field of a JSON object without parsing the rest: the usage of an answer sits
//! beside the whole generated message, and parsing all of it for four numbers was one of the
//! larger costs of a request. Strings are skipped with memchr, nesting by counting brackets.

use memchr::memchr2;

fn skip_ws(json: &[u8], mut i: usize) -> usize {
    while json.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    i
}

/// `json[start]` is an opening quote; the index just past the closing one.
fn string_end(json: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        i += memchr2(b'"', b'\\', json.get(i..)?)?;
        if json[i] == b'\\' {
            i += 2;
        } else {
            return Some(i + 1);
        }
    }
}

/// The index just past the JSON value starting at `start`.
fn value_end(json: &[u8], start: usize) -> Option<usize> {
    match json.get(start)? {
        b'"' => string_end(json, start),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = start;
            loop {
                match json.get(i)? {
                    b'"' => {
                        i = string_end(json, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            let rest = &json[start..];
            let len = rest
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace())
                .unwrap_or(rest.len());
            (len > 0).then_some(start + len)
        }
    }
}

/// The fields of the object `json` holds, as raw (name, value) text, in order; stops at the
/// first thing that is not well formed.
pub fn fields(json: &[u8]) -> Fields<'_> {
    let start = skip_ws(json, 0);
    let open = json.get(start) == Some(&b'{');
    Fields {
        json,
        at: start + 1,
        done: !open,
    }
}

pub struct Fields<'a> {
    json: &'a [u8],
    at: usize,
    done: bool,
}

impl<'a> Fields<'a> {
    fn next_field(&mut self) -> Option<(&'a [u8], &'a [u8])> {
        let json = self.json;
        let mut i = skip_ws(json, self.at);
        if json.get(i) != Some(&b'"') {
            return None;
        }
        let name_end = string_end(json, i)?;
        let name = &json[i + 1..name_end - 1];
        i = skip_ws(json, name_end);
        if json.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(json, i + 1);
        let end = value_end(json, i)?;
        let value = &json[i..end];
        let after = skip_ws(json, end);
        match json.get(after) {
            Some(b',') => self.at = after + 1,
            _ => self.done = true,
        }
        Some((name, value))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let field = self.next_field();
        if field.is_none() {
            self.done = true;
        }
        field
    }
}

/// Where `part` (a slice `fields` handed out) sits in `json`.
pub fn offset_in(json: &[u8], part: &[u8]) -> usize {
    part.as_ptr() as usize - json.as_ptr() as usize
}

/// The raw text of `key`'s value in the top-level object of `json`, if it has one. Claude
/// writes `usage` last, after the whole message: read from the end first, which walks only
/// the usage object, and from the start when the last field is another one.
pub fn top_level_field<'a>(json: &'a [u8], key: &str) -> Option<&'a [u8]> {
    match super::json_scan_back::last_field(json) {
        Some((name, value)) if name == key.as_bytes() => Some(value),
        _ => fields(json)
            .find(|(name, _)| *name == key.as_bytes())
            .map(|(_, value)| value),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn field(v: &Value, key: &str) -> Option<Value> {
        let text = serde_json::to_vec(v).expect("serialize");
        top_level_field(&text, key).map(|raw| serde_json::from_slice(raw).expect("a JSON value"))
    }

    #[test]
    fn finds_usage_after_a_message_full_of_decoys() {
        let answer = json!({
            "id": "msg_1",
            "content": [{"type": "text", "text": "\"usage\": {\"input_tokens\": 999} \\ }]"},
                        {"type": "tool_use", "input": {"usage": {"input_tokens": 5}}}],
            "stop_reason": null,
            "usage": {"input_tokens": 12, "output_tokens": 8}
        });
        assert_eq!(
            field(&answer, "usage"),
            Some(json!({"input_tokens": 12, "output_tokens": 8}))
        );
    }

    #[test]
    fn pretty_printed_and_missing() {
        let text = b" {\n  \"a\" : 1 ,\n  \"usage\" : { \"output_tokens\" : 3 }\n}\n";
        assert_eq!(
            top_level_field(text, "usage"),
            Some(&b"{ \"output_tokens\" : 3 }"[..])
        );
        assert_eq!(top_level_field(br#"{"a":1}"#, "usage"), None);
    }

    #[test]
    fn lists_fields_in_order_and_stops_at_garbage() {
        let listed: Vec<(&[u8], &[u8])> =
            fields(br#"{"a":1, "b" : {"c":[1,"]"]}, "d":"x\"y"}"#).collect();
        assert_eq!(
            listed,
            vec![
                (&b"a"[..], &b"1"[..]),
                (&b"b"[..], &br#"{"c":[1,"]"]}"#[..]),
                (&b"d"[..], &br#""x\"y""#[..]),
            ]
        );
        assert_eq!(fields(br#"{"a":1,"b" 2}"#).count(), 1);
        assert_eq!(fields(b"[1,2]").count(), 0);
        assert_eq!(fields(b"{}").count(), 0);
    }

    #[test]
    fn broken_input_gives_none_not_a_panic() {
        for text in [
            &b""[..],
            b"[",
            b"{",
            b"{\"usage\"",
            b"{\"usage\":",
            b"{\"usage\":{\"a\":\"",
            b"{\"x\":\"\\",
            b"}}}}",
            b"{\"a\":]",
        ] {
            assert_eq!(top_level_field(text, "usage"), None, "{text:?}");
        }
    }

    /// Any JSON value, with strings full of quotes, backslashes and brackets.
    pub(crate) fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".*".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                prop::collection::btree_map("(usage|[a-z\"\\\\{}]{0,6})", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn agrees_with_a_full_parse_pretty_printed(
            fields in prop::collection::btree_map("(usage|[a-z\"\\\\{}]{0,6})", any_json(), 0..8)
        ) {
            let object = Value::Object(fields.into_iter().collect());
            let text = serde_json::to_vec_pretty(&object).expect("serialize");
            let want = object.get("usage").cloned();
            let got = top_level_field(&text, "usage")
                .map(|raw| serde_json::from_slice::<Value>(raw).expect("a JSON value"));
            prop_assert_eq!(got, want);
        }

        #[test]
        fn agrees_with_a_full_parse(
            fields in prop::collection::btree_map("(usage|[a-z\"\\\\{}]{0,6})", any_json(), 0..8)
        ) {
            // Compared as text: the value is written the same inside the object and alone.
            let object = Value::Object(fields.into_iter().collect());
            let text = serde_json::to_vec(&object).expect("serialize");
            let want = object.get("usage").map(|v| serde_json::to_vec(v).expect("serialize"));
            prop_assert_eq!(top_level_field(&text, "usage").map(<[u8]>::to_vec), want);
        }
    }
}
