//! SPEC §7: what the proxy sends upstream and what it passes back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::json;

/// A server with one trial account `a1` and one high account `h1`; a key for each.
fn serve() -> (MockUpstream, TestServer, String, String) {
    let (mock, env) = setup("");
    env.add_account("trial", "a1");
    env.add_account("high", "h1");
    let (trial, _) = keygen_offline(&env, "trial", &[]);
    let (high, _) = keygen_offline(&env, "high", &[]);
    (mock, TestServer::start(env), trial, high)
}

/// Every comma-separated value of every `anthropic-beta` header.
fn betas(r: &Recorded) -> Vec<String> {
    r.header_all("anthropic-beta")
        .iter()
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[actix_rt::test]
async fn upstream_gets_the_account_token_and_never_the_client_key() {
    let (mock, server, key, _) = serve();
    let res = server
        .post_messages(Some(&key), &message_request(SONNET), &[])
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let up = mock.last();
    assert_eq!(up.path, "/v1/messages");
    assert_eq!(up.header("authorization"), Some("Bearer sk-ant-oat01-a1"));
    assert_eq!(up.header_all("authorization").len(), 1);
    assert_eq!(
        up.header("x-api-key"),
        None,
        "x-api-key must not go upstream"
    );
    for (name, value) in &up.headers {
        assert!(
            !value.contains(&key),
            "client key leaked upstream in {name}"
        );
    }
    assert!(
        !String::from_utf8_lossy(&up.body).contains(&key),
        "client key leaked in body"
    );
    // The answer passes through unchanged.
    assert_eq!(
        res.json(),
        common::mock_routes::message_body(SONNET),
        "body passes through"
    );
}

#[actix_rt::test]
async fn bearer_style_client_key_works() {
    let (mock, server, key, _) = serve();
    let auth = format!("Bearer {key}");
    let res = server
        .post_messages(None, &message_request(SONNET), &[("authorization", &auth)])
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let up = mock.last();
    assert_eq!(
        up.header_all("authorization"),
        vec!["Bearer sk-ant-oat01-a1"]
    );
    for (name, value) in &up.headers {
        assert!(
            !value.contains(&key),
            "client key leaked upstream in {name}"
        );
    }
}

/// An SDK with both `ANTHROPIC_API_KEY` (stale) and `ANTHROPIC_AUTH_TOKEN` (the proxy key)
/// sends both headers; neither the stale key nor the proxy key goes upstream.
#[actix_rt::test]
async fn a_stale_x_api_key_beside_a_bearer_proxy_key_is_ignored() {
    let (mock, server, key, _) = serve();
    let auth = format!("BEARER {key}");
    let stale = "sk-ant-api03-stale-anthropic-key";
    let res = server
        .post_messages(
            None,
            &message_request(SONNET),
            &[("authorization", &auth), ("x-api-key", stale)],
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let up = mock.last();
    for (name, value) in &up.headers {
        assert!(
            !value.contains(&key) && !value.contains(stale),
            "a client key leaked upstream in {name}"
        );
    }
}

#[actix_rt::test]
async fn anthropic_beta_gets_oauth_once() {
    let (mock, server, key, _) = serve();
    let cases: [(Option<&str>, &[&str]); 4] = [
        (None, &["oauth-2025-04-20"]),
        (Some("foo"), &["foo", "oauth-2025-04-20"]),
        (
            Some("oauth-2025-04-20,prompt-caching-2024-07-31"),
            &["oauth-2025-04-20", "prompt-caching-2024-07-31"],
        ),
        (
            Some("prompt-caching-2024-07-31, oauth-2025-04-20"),
            &["oauth-2025-04-20", "prompt-caching-2024-07-31"],
        ),
    ];
    for (sent, expected) in cases {
        let extra: Vec<(&str, &str)> = sent.map(|s| ("anthropic-beta", s)).into_iter().collect();
        let res = server
            .post_messages(Some(&key), &message_request(SONNET), &extra)
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
        let got = sorted(betas(&mock.last()));
        let want = sorted(expected.iter().map(|s| s.to_string()).collect());
        assert_eq!(got, want, "anthropic-beta for client value {sent:?}");
    }
}

#[actix_rt::test]
async fn anthropic_version_added_when_absent_and_kept_when_sent() {
    let (mock, server, key, _) = serve();
    let res = server
        .post_messages(Some(&key), &message_request(SONNET), &[])
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(
        mock.last().header_all("anthropic-version"),
        vec!["2023-06-01"]
    );

    let res = server
        .post_messages(
            Some(&key),
            &message_request(SONNET),
            &[("anthropic-version", "2024-10-22")],
        )
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(
        mock.last().header_all("anthropic-version"),
        vec!["2024-10-22"]
    );
}

#[actix_rt::test]
async fn end_to_end_headers_forwarded_private_ones_dropped() {
    let (mock, server, key, _) = serve();
    let sent = [
        ("user-agent", "claude-cli/2.0.14 (external, cli)"),
        ("x-app", "cli"),
        ("x-stainless-lang", "js"),
        ("x-stainless-package-version", "0.60.0"),
        ("x-claude-code-session-id", "sess-123"),
        ("anthropic-dangerous-direct-browser-access", "true"),
        ("accept", "application/json"),
        ("cookie", "session=abc"),
        ("x-forwarded-for", "10.1.2.3"),
        ("x-forwarded-proto", "https"),
        ("x-real-ip", "10.1.2.3"),
        ("accept-encoding", "gzip, br"),
    ];
    let res = server
        .post_messages(Some(&key), &message_request(SONNET), &sent)
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let up = mock.last();
    for name in [
        "user-agent",
        "x-app",
        "x-stainless-lang",
        "x-stainless-package-version",
        "x-claude-code-session-id",
        "anthropic-dangerous-direct-browser-access",
        "accept",
    ] {
        let want = sent.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
        assert_eq!(up.header(name), want, "header {name} must be forwarded");
    }
    assert_eq!(up.header("content-type"), Some("application/json"));
    for name in [
        "cookie",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-real-ip",
    ] {
        assert_eq!(up.header(name), None, "header {name} must be dropped");
    }
    assert_eq!(up.header_all("accept-encoding"), vec!["identity"]);
    if let Some(host) = up.header("host") {
        assert!(
            !host.contains(&server.addr),
            "host header must be the upstream's, not the proxy's: {host}"
        );
    }
}

#[actix_rt::test]
async fn query_string_passes_through() {
    let (mock, server, key, _) = serve();
    let body = message_request(SONNET).to_string().into_bytes();
    let res = server
        .post_raw("/v1/messages?beta=true", Some(&key), body, &[])
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(mock.last().path, "/v1/messages?beta=true");
}

#[actix_rt::test]
async fn claude_code_body_is_forwarded_byte_for_byte() {
    let (mock, server, key, _) = serve();
    // Odd spacing, key order and escapes: any re-serialisation would change the bytes.
    let raw = "{ \"max_tokens\" :16,\"model\":\"claude-sonnet-4-5\",  \"system\":\"Be terse.\",\n\"messages\":[{\"role\":\"user\",\"content\":\"h\\u00e9llo \\/ 1.0e0\"}] }";
    for ua in ["claude-cli/1.0.0", "claude-code/1.2.3"] {
        let res = server
            .post_raw(
                "/v1/messages",
                Some(&key),
                raw.as_bytes().to_vec(),
                &[("user-agent", ua)],
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(
            String::from_utf8_lossy(&mock.last().body),
            raw,
            "body must be byte for byte for user-agent {ua}"
        );
    }
}

#[actix_rt::test]
async fn answer_headers_filtered_status_and_body_pass_through() {
    let (mock, server, key, _) = serve();
    let res = server
        .post_messages(Some(&key), &message_request(SONNET), &[])
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("request-id"), Some("req_mock"));
    assert_eq!(
        res.header("anthropic-ratelimit-unified-status"),
        Some("allowed")
    );
    assert_eq!(res.header("anthropic-organization-id"), None);
    assert!(
        res.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "content-type: {:?}",
        res.header("content-type")
    );

    // An upstream error: status, body bytes and allowed headers pass; cookies do not.
    let body = r#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: must be positive"}}"#;
    mock.push_answer(
        Answer::new(400, body)
            .header("request-id", "req_err")
            .header("anthropic-ratelimit-requests-remaining", "7")
            .header("anthropic-organization-id", "org-secret")
            .header("set-cookie", "a=b"),
    );
    let res = server
        .post_messages(Some(&key), &message_request(SONNET), &[])
        .await;
    assert_eq!(res.status, 400);
    assert_eq!(res.text(), body);
    assert_eq!(res.header("request-id"), Some("req_err"));
    assert_eq!(
        res.header("anthropic-ratelimit-requests-remaining"),
        Some("7")
    );
    assert_eq!(res.header("anthropic-organization-id"), None);
    assert_eq!(res.header("set-cookie"), None);

    // An overloaded answer passes through too.
    let body = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    mock.push_answer(Answer::new(529, body));
    let res = server
        .post_messages(Some(&key), &message_request(SONNET), &[])
        .await;
    assert_eq!(res.status, 529);
    assert_eq!(res.text(), body);
}

#[actix_rt::test]
async fn count_tokens_and_models_are_proxied() {
    let (mock, server, key, _) = serve();
    // count_tokens is never model-restricted: a trial key may count Opus tokens.
    let res = server
        .post_raw(
            "/v1/messages/count_tokens",
            Some(&key),
            message_request(OPUS).to_string().into_bytes(),
            &[],
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json(), json!({"input_tokens": 42}));
    let up = mock.last();
    assert_eq!(up.path, "/v1/messages/count_tokens");
    assert_eq!(up.header("authorization"), Some("Bearer sk-ant-oat01-a1"));

    let res = server.get("/v1/models", Some(&key), &[]).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["data"][0]["id"], "claude-sonnet-4-5");
    assert_eq!(mock.last().path, "/v1/models");
    assert_eq!(mock.last().method, "GET");

    let res = server
        .get("/v1/models/claude-opus-4-1?beta=true", Some(&key), &[])
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["id"], "claude-opus-4-1");
    assert_eq!(mock.last().path, "/v1/models/claude-opus-4-1?beta=true");
    assert_eq!(
        mock.last().header("authorization"),
        Some("Bearer sk-ant-oat01-a1")
    );
}

#[actix_rt::test]
async fn telemetry_is_answered_locally() {
    let (mock, server, key, _) = serve();
    for path in ["/api/event_logging/batch", "/api/event_logging/v2/batch"] {
        let res = server
            .post_raw(path, Some(&key), br#"{"events":[{"x":1}]}"#.to_vec(), &[])
            .await;
        assert_eq!(res.status, 200, "{path}: {}", res.text());
        assert_eq!(res.json(), json!({}), "{path}");
    }
    assert!(
        mock.requests().is_empty(),
        "telemetry must never reach upstream: {:?}",
        mock.requests()
    );
}
