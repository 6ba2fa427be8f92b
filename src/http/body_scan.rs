//! The `model` of a request body, read while checking that the body is JSON, in one pass
//! whose string skipping looks at 16 bytes at a time (`string_scan`). serde does the same job
//! at ~1.5 GB/s, and Claude Code bodies are 50–200 KB of conversation, so that check was the
//! largest cost of a real request.
//!
//! The scan only ever says "valid, and this is the model" for bodies serde accepts with the
//! same model; anything it does not handle exactly (a duplicate or escaped key, a model with
//! escapes, an array at the top, deep nesting, any error) is left to serde, which then also
//! writes the error message.

use super::string_scan::string_end;

/// Deeper than this is left to serde (whose own limit is 128).
const MAX_DEPTH: usize = 100;

/// `Some(model)` when the body is a JSON object serde would read the same `model` from
/// (`None` inside: it has no `model`, or `model` is null); `None` when serde must decide.
pub fn scan_model(body: &[u8]) -> Option<Option<&str>> {
    let mut scan = Scan { json: body, at: 0 };
    let model = scan.top_object()?;
    scan.skip_ws();
    (scan.at == body.len()).then_some(model)
}

struct Scan<'a> {
    json: &'a [u8],
    at: usize,
}

impl<'a> Scan<'a> {
    fn peek(&self) -> Option<u8> {
        self.json.get(self.at).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        self.skip_ws();
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// The top-level object's fields; returns its `model`.
    fn top_object(&mut self) -> Option<Option<&'a str>> {
        self.eat(b'{')?;
        let mut model = None;
        let mut seen_model = false;
        self.skip_ws();
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(None);
        }
        loop {
            self.skip_ws();
            let key = self.string()?;
            // serde decodes and checks top-level keys: leave escaped or non-UTF-8 ones to it.
            let plain =
                !key.contains(&b'\\') && (key.is_ascii() || std::str::from_utf8(key).is_ok());
            if !plain {
                return None;
            }
            self.eat(b':')?;
            self.skip_ws();
            if key == b"model" {
                if seen_model {
                    return None; // serde: "duplicate field"
                }
                seen_model = true;
                model = self.model_value()?;
            } else {
                self.value(1)?;
            }
            self.skip_ws();
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Some(model);
                }
                _ => return None,
            }
        }
    }

    /// `null`, or a string without escapes (serde would have to unescape it).
    fn model_value(&mut self) -> Option<Option<&'a str>> {
        if self.peek()? == b'"' {
            let raw = self.string()?;
            if raw.contains(&b'\\') {
                return None;
            }
            return std::str::from_utf8(raw).ok().map(Some);
        }
        self.literal(b"null")?;
        Some(None)
    }

    /// Any value (checked, not kept).
    fn value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => self.container(depth + 1, b'}'),
            b'[' => self.container(depth + 1, b']'),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    /// An object (`close` is `}`) or an array (`]`) at `self.at`.
    fn container(&mut self, depth: usize, close: u8) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.at += 1; // the opening bracket
        self.skip_ws();
        if self.peek()? == close {
            self.at += 1;
            return Some(());
        }
        loop {
            self.skip_ws();
            if close == b'}' {
                self.string()?;
                self.eat(b':')?;
                self.skip_ws();
            }
            self.value(depth)?;
            self.skip_ws();
            match self.peek()? {
                b',' => self.at += 1,
                end if end == close => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A string at `self.at`; returns its raw contents (between the quotes, escapes kept).
    fn string(&mut self) -> Option<&'a [u8]> {
        if self.peek()? != b'"' {
            return None;
        }
        let start = self.at + 1;
        let end = string_end(self.json, start)?;
        self.at = end + 1;
        Some(&self.json[start..end])
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at + word.len();
        (self.json.get(self.at..end)? == word).then(|| self.at = end)
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek()? {
            b'0' => self.at += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.at_least_one_digit()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            self.at_least_one_digit()?;
        }
        Some(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
    }

    fn at_least_one_digit(&mut self) -> Option<()> {
        let before = self.at;
        self.digits();
        (self.at > before).then_some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::json_scan::tests::any_json;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    /// What the proxy reads with serde alone.
    fn serde_model(body: &[u8]) -> Option<Option<String>> {
        super::super::body::serde_model(body)
            .ok()
            .map(|model| model.map(|m| m.into_owned()))
    }

    /// The safety rule: whatever the scan accepts, serde accepts with the same model.
    fn assert_never_disagrees(body: &[u8]) {
        if let Some(model) = scan_model(body) {
            assert_eq!(
                serde_model(body),
                Some(model.map(str::to_string)),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn reads_the_model_of_ordinary_requests() {
        let body = json!({"model":"claude-sonnet-4-5","max_tokens":5,"system":"a \"b\"\n\u{1}",
            "messages":[{"role":"user","content":[{"type":"text","text":"hi é 😀 \\ and a long run of text past one block"}]}],
            "temperature":0.5,"stop":null,"stream":true,"metadata":{"model":"not this"}});
        for text in [
            body.to_string(),
            serde_json::to_string_pretty(&body).unwrap_or_default(),
        ] {
            assert_eq!(scan_model(text.as_bytes()), Some(Some("claude-sonnet-4-5")));
        }
        assert_eq!(scan_model(br#"{"model":null}"#), Some(None));
        assert_eq!(scan_model(br#" {} "#), Some(None));
    }

    #[test]
    fn leaves_what_it_does_not_handle_to_serde() {
        for body in [
            &br#"{"model":"a","model":"b"}"#[..],
            br#"{"mod\u0065l":"a"}"#,
            br#"{"model":"cl\u0061ude"}"#,
            br#"["claude"]"#,
            br#"{"model":5}"#,
            br#"{"model":"a"} x"#,
            br#"{"model":"a",}"#,
            br#"{"model":"a","x":[1,]}"#,
            br#"{"model":"a","x":01}"#,
            br#"{"model":"a","x":1.}"#,
            br#"{"model":"a","x":"\q"}"#,
            br#"{"model":"a","x":"\u12g4"}"#,
            b"{\"model\":\"a\",\"x\":\"tab\there\"}",
            b"{\"model\":\"a\",\"x\":\"a control byte \x01 after sixteen bytes\"}",
            br#"{"model":"a","x":tru}"#,
            br#"{"model":"a""#,
            br#"{"model":"a","x":"no end, and more than sixteen bytes of it"#,
        ] {
            assert_eq!(scan_model(body), None, "{}", String::from_utf8_lossy(body));
        }
        let deep = format!(
            "{{\"model\":\"a\",\"x\":{}{}}}",
            "[".repeat(150),
            "]".repeat(150)
        );
        assert_eq!(scan_model(deep.as_bytes()), None);
    }

    proptest! {
        #[test]
        fn agrees_with_serde_on_any_object(
            fields in prop::collection::btree_map("(model|[a-z]{1,5})", any_json(), 0..6),
            model in prop::option::of("[a-z0-9.-]{0,12}"),
            pretty in any::<bool>(),
        ) {
            let mut object: serde_json::Map<String, Value> = fields.into_iter().collect();
            let plain_model = model.is_some() || !object.contains_key("model");
            if let Some(m) = model {
                object.insert("model".into(), Value::String(m));
            }
            let object = Value::Object(object);
            let text = if pretty {
                serde_json::to_vec_pretty(&object)
            } else {
                serde_json::to_vec(&object)
            }
            .expect("serialize");
            assert_never_disagrees(&text);
            // An object whose model is absent or a plain name is read by the scan itself.
            if plain_model {
                prop_assert!(scan_model(&text).is_some(), "{}", String::from_utf8_lossy(&text));
            }
        }

        #[test]
        fn never_accepts_what_serde_refuses(
            fields in prop::collection::btree_map("(model|[a-z]{1,3})", any_json(), 1..4),
            at in any::<prop::sample::Index>(),
            edit in 0..3u8,
            byte in prop::sample::select(b"\"\\{}[],: \x01\x1fa0e.-+tnu\xc3\xff".to_vec()),
        ) {
            let mut text = serde_json::to_vec(&Value::Object(fields.into_iter().collect()))
                .expect("serialize");
            let i = at.index(text.len());
            match edit {
                0 => { text.remove(i); }
                1 => text.insert(i, byte),
                _ => text[i] = byte,
            }
            assert_never_disagrees(&text);
        }
    }
}
