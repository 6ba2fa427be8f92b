//! SPEC §7: the Claude Code identity line is inserted for other clients, and only then.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};

const IDENTITY: &str = "You are Claude Code, Anthropic's official CLI for Claude.";

/// A server with one trial account `a1` and one high account `h1`; a key for each.
fn serve() -> (MockUpstream, TestServer, String, String) {
    let (mock, env) = setup("");
    env.add_account("trial", "a1");
    env.add_account("high", "h1");
    let (trial, _) = keygen_offline(&env, "trial", &[]);
    let (high, _) = keygen_offline(&env, "high", &[]);
    (mock, TestServer::start(env), trial, high)
}

fn system_texts(body: &Value) -> Vec<String> {
    body["system"]
        .as_array()
        .unwrap_or_else(|| panic!("system should be an array of blocks: {body}"))
        .iter()
        .map(|b| b["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[actix_rt::test]
async fn identity_prompt_inserted_for_other_clients() {
    let (mock, server, key, _) = serve();
    let curl = [("user-agent", "curl/8.5.0")];

    // `system` as a string.
    let mut body = message_request(SONNET);
    body["system"] = json!("Be terse.");
    assert_eq!(
        server.post_messages(Some(&key), &body, &curl).await.status,
        200
    );
    let up = mock.last().json();
    assert_eq!(system_texts(&up), vec![IDENTITY, "Be terse."]);
    assert_eq!(up["system"][0]["type"], "text");
    assert_eq!(up["messages"], body["messages"]);
    assert_eq!(up["model"], SONNET);
    assert_eq!(up["max_tokens"], 16);

    // `system` as blocks: the client's blocks follow, unchanged.
    let mut body = message_request(SONNET);
    let block = json!({"type":"text","text":"A","cache_control":{"type":"ephemeral"}});
    body["system"] = json!([block.clone()]);
    assert_eq!(
        server.post_messages(Some(&key), &body, &curl).await.status,
        200
    );
    let up = mock.last().json();
    assert_eq!(system_texts(&up), vec![IDENTITY, "A"]);
    assert_eq!(up["system"][1], block);

    // No `system` at all.
    let body = message_request(SONNET);
    assert_eq!(
        server.post_messages(Some(&key), &body, &curl).await.status,
        200
    );
    let up = mock.last().json();
    assert_eq!(system_texts(&up), vec![IDENTITY]);
    assert_eq!(up["messages"], body["messages"]);
}

#[actix_rt::test]
async fn identity_prompt_not_inserted_for_haiku_or_when_present() {
    let (mock, server, trial, high) = serve();
    let curl = [("user-agent", "curl/8.5.0")];

    // A Haiku model (high tier may use it): body untouched.
    let raw = json!({"model":HAIKU,"max_tokens":16,"system":"Be terse.",
                     "messages":[{"role":"user","content":"hello"}]})
    .to_string();
    let res = server
        .post_raw("/v1/messages", Some(&high), raw.clone().into_bytes(), &curl)
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(
        String::from_utf8_lossy(&mock.last().body),
        raw,
        "haiku body"
    );

    // Already present in the second block, in the first block, or as the system string.
    let systems = [
        json!([{"type":"text","text":"x-anthropic-billing-header: cc"},
               {"type":"text","text":format!("{IDENTITY}\nMore.")}]),
        json!([{"type":"text","text":IDENTITY}, {"type":"text","text":"Be terse."}]),
        json!(format!("{IDENTITY} Be terse.")),
    ];
    for system in systems {
        let raw = json!({"model":SONNET,"max_tokens":16,"system":system,
                         "messages":[{"role":"user","content":"hello"}]})
        .to_string();
        let res = server
            .post_raw(
                "/v1/messages",
                Some(&trial),
                raw.clone().into_bytes(),
                &curl,
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(
            String::from_utf8_lossy(&mock.last().body),
            raw,
            "identity already present: body must be untouched"
        );
    }
}
