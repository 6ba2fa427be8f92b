//! The identity line put into a request body without parsing the whole body: only the
//! `system` value is parsed and rewritten, the rest (the conversation, often hundreds of KB)
//! is copied as it came. Parsing and re-serialising all of it cost ~0.5 ms per 100 KB.

use super::identity::insert_identity;
use crate::upstream::json_scan::{fields, offset_in};
use serde_json::{Map, Value};

pub enum Spliced {
    /// `system` already starts with the identity (or is not ours to change).
    Unchanged,
    Changed(Vec<u8>),
    /// A shape the splice does not handle (a repeated or escaped `system` name, no fields):
    /// the caller rewrites the parsed body instead.
    NeedsFullRewrite,
}

/// `body` is a request already checked to be a JSON object.
pub fn splice_identity(body: &[u8]) -> Spliced {
    let mut system = None;
    let mut first_field = None;
    for (name, value) in fields(body) {
        first_field.get_or_insert(offset_in(body, name) - 1);
        if name.contains(&b'\\') || (name == b"system" && system.is_some()) {
            return Spliced::NeedsFullRewrite;
        }
        if name == b"system" {
            system = Some(value);
        }
    }
    let Some(first_field) = first_field else {
        return Spliced::NeedsFullRewrite;
    };
    let mut one = Map::new();
    let (start, end) = match system {
        Some(raw) => {
            let Ok(value) = serde_json::from_slice::<Value>(raw) else {
                return Spliced::NeedsFullRewrite;
            };
            one.insert("system".into(), value);
            let start = offset_in(body, raw);
            (start, start + raw.len())
        }
        // No `system`: a new first field.
        None => (first_field, first_field),
    };
    if !insert_identity(&mut one) {
        return Spliced::Unchanged;
    }
    let Ok(new_system) = serde_json::to_vec(&one["system"]) else {
        return Spliced::NeedsFullRewrite;
    };
    let mut out = Vec::with_capacity(body.len() + new_system.len() + 12);
    out.extend_from_slice(&body[..start]);
    if system.is_none() {
        out.extend_from_slice(b"\"system\":");
    }
    out.extend_from_slice(&new_system);
    if system.is_none() {
        out.push(b',');
    }
    out.extend_from_slice(&body[end..]);
    Spliced::Changed(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::json_scan::tests::any_json;
    use proptest::prelude::*;
    use serde_json::json;

    /// What the whole-body rewrite makes of `body` (None: unchanged).
    fn full_rewrite(body: &[u8]) -> Option<Value> {
        let mut map: Map<String, Value> = serde_json::from_slice(body).expect("an object");
        insert_identity(&mut map).then_some(Value::Object(map))
    }

    fn assert_same_as_full_rewrite(body: &str) {
        let expected = full_rewrite(body.as_bytes());
        match splice_identity(body.as_bytes()) {
            Spliced::Changed(out) => {
                let got: Value = serde_json::from_slice(&out)
                    .unwrap_or_else(|e| panic!("spliced body is not JSON ({e}): {body}"));
                assert_eq!(Some(got), expected, "{body}");
            }
            Spliced::Unchanged => assert_eq!(expected, None, "{body}"),
            Spliced::NeedsFullRewrite => panic!("splice gave up on {body}"),
        }
    }

    #[test]
    fn agrees_with_the_whole_body_rewrite() {
        let identity = super::super::identity::IDENTITY_LINE;
        let bodies = [
            r#"{"model":"m","messages":[{"role":"user","content":"hi \"system\": no"}]}"#.to_string(),
            r#" { "model" : "m" , "system" : "Be brief." , "max_tokens" : 5 } "#.into(),
            r#"{"system":"","model":"m"}"#.into(),
            r#"{"model":"m","system":null}"#.into(),
            r#"{"model":"m","system":[{"type":"text","text":"x"}],"stream":true}"#.into(),
            r#"{"model":"m","system":[]}"#.into(),
            r#"{"model":"m","system":42}"#.into(),
            r#"{"model":"m","metadata":{"system":"nested, not ours"}}"#.into(),
            json!({"model":"m","system":format!("{identity} More.")}).to_string(),
            json!({"model":"m","system":[{"type":"text","text":"x"},{"type":"text","text":identity}]})
                .to_string(),
            json!({"model":"m","system":"tab\t, quote \", unicode é \u{1F600}"}).to_string(),
            // A float whose last digit serde_json's fast parser moved: it must come back exact.
            r#"{"system":[{"usage":-1.0303115523514998e303}],"model":"m"}"#.into(),
        ];
        for body in &bodies {
            assert_same_as_full_rewrite(body);
        }
    }

    #[test]
    fn numbers_in_the_clients_system_reach_claude_unchanged() {
        let body = br#"{"system":[{"type":"text","text":"x","n":-1.0303115523514998e303}]}"#;
        let Spliced::Changed(out) = splice_identity(body) else {
            panic!("the identity was not put in");
        };
        let sent: Value = serde_json::from_slice(&out).expect("JSON");
        assert_eq!(
            sent["system"][1]["n"].as_f64(),
            Some(-1.0303115523514998e303)
        );
    }

    #[test]
    fn leaves_shapes_it_cannot_splice_to_the_whole_body_rewrite() {
        for body in [
            r#"{"system":"a","model":"m","system":"b"}"#,
            r#"{"model":"m","sys\u0074em":"a"}"#,
            r#"{}"#,
        ] {
            assert!(
                matches!(splice_identity(body.as_bytes()), Spliced::NeedsFullRewrite),
                "{body}"
            );
        }
    }

    proptest! {
        #[test]
        fn agrees_with_the_whole_body_rewrite_on_any_object(
            fields in prop::collection::btree_map("(system|model|[a-z]{1,5})", any_json(), 1..6),
            pretty in any::<bool>(),
        ) {
            let object = Value::Object(fields.into_iter().collect());
            let text = if pretty {
                serde_json::to_string_pretty(&object)
            } else {
                serde_json::to_string(&object)
            };
            assert_same_as_full_rewrite(&text.expect("serialize"));
        }
    }
}
