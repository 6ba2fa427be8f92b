//! Subscription tokens only serve requests that present themselves as Claude Code.
//! For other clients the proxy puts Claude Code's identity line first in `system`.

use serde_json::{Map, Value};

pub const IDENTITY_LINE: &str = "You are Claude Code, Anthropic's official CLI for Claude.";

fn block_starts_with_identity(block: &Value) -> bool {
    match block {
        Value::String(s) => s.starts_with(IDENTITY_LINE),
        Value::Object(o) => o
            .get("text")
            .and_then(Value::as_str)
            .is_some_and(|t| t.starts_with(IDENTITY_LINE)),
        _ => false,
    }
}

fn identity_block() -> Value {
    let mut block = Map::new();
    block.insert("type".into(), Value::String("text".into()));
    block.insert("text".into(), Value::String(IDENTITY_LINE.into()));
    Value::Object(block)
}

/// Inserts the identity line as the first system block unless one of the first two blocks
/// already starts with it. Returns false when nothing had to change.
pub fn insert_identity(body: &mut Map<String, Value>) -> bool {
    let system = body.remove("system");
    let (new_system, changed) = match system {
        None | Some(Value::Null) => (Value::Array(vec![identity_block()]), true),
        Some(Value::String(text)) => {
            if text.starts_with(IDENTITY_LINE) {
                (Value::String(text), false)
            } else if text.is_empty() {
                (Value::Array(vec![identity_block()]), true)
            } else {
                let mut rest = Map::new();
                rest.insert("type".into(), Value::String("text".into()));
                rest.insert("text".into(), Value::String(text));
                (
                    Value::Array(vec![identity_block(), Value::Object(rest)]),
                    true,
                )
            }
        }
        Some(Value::Array(blocks)) => {
            if blocks.iter().take(2).any(block_starts_with_identity) {
                (Value::Array(blocks), false)
            } else {
                let mut with = Vec::with_capacity(blocks.len() + 1);
                with.push(identity_block());
                with.extend(blocks);
                (Value::Array(with), true)
            }
        }
        // Not ours to fix: Claude will answer with its own validation error.
        Some(other) => (other, false),
    };
    body.insert("system".into(), new_system);
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(v: Value) -> (Value, bool) {
        let Value::Object(mut m) = v else { panic!() };
        let changed = insert_identity(&mut m);
        (m.remove("system").unwrap(), changed)
    }

    #[test]
    fn inserts_first_for_absent_string_and_array() {
        let (s, c) = run(json!({"model":"m"}));
        assert!(c);
        assert_eq!(s[0]["text"], IDENTITY_LINE);
        let (s, _) = run(json!({"system":"Be brief."}));
        assert_eq!(s[0]["text"], IDENTITY_LINE);
        assert_eq!(s[1]["text"], "Be brief.");
        let (s, _) = run(json!({"system":[{"type":"text","text":"x"}]}));
        assert_eq!(s.as_array().unwrap().len(), 2);
        assert_eq!(s[0]["text"], IDENTITY_LINE);
    }

    #[test]
    fn leaves_present_identity_alone() {
        let (_, c) = run(
            json!({"system":[{"type":"text","text":"x"},{"type":"text","text":IDENTITY_LINE}]}),
        );
        assert!(!c);
        let (_, c) = run(json!({"system": format!("{IDENTITY_LINE} More.")}));
        assert!(!c);
    }
}
