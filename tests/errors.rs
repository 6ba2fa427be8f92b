//! SPEC §12: client errors, each in Anthropic's error shape, none reaching upstream.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::json;

fn serve(extra: &str) -> (MockUpstream, TestServer, String) {
    let (mock, env) = setup(extra);
    env.add_account("trial", "a1");
    let (key, _) = keygen_offline(&env, "trial", &[]);
    (mock, TestServer::start(env), key)
}

fn assert_nothing_upstream(mock: &MockUpstream) {
    assert!(
        mock.api_requests().is_empty(),
        "a refused request reached upstream: {:?}",
        mock.api_requests()
    );
}

#[actix_rt::test]
async fn missing_or_unknown_key_is_unauthorized() {
    let (mock, server, _) = serve("");
    let body = message_request(SONNET);
    server.post_messages(None, &body, &[]).await.assert_error(
        401,
        "authentication_error",
        "Unauthorized API key",
    );

    let unknown = format!("sk-cli-v1-{}", "A1b2C3d4".repeat(4));
    server
        .post_messages(Some(&unknown), &body, &[])
        .await
        .assert_error(401, "authentication_error", "Unauthorized API key");
    let bearer = format!("Bearer {unknown}");
    server
        .post_messages(None, &body, &[("authorization", &bearer)])
        .await
        .assert_error(401, "authentication_error", "Unauthorized API key");

    // Other endpoints are authenticated too.
    server.get("/v1/models", None, &[]).await.assert_error(
        401,
        "authentication_error",
        "Unauthorized API key",
    );
    assert_nothing_upstream(&mock);
}

#[actix_rt::test]
async fn malformed_keys_are_invalid_format() {
    let (mock, server, key) = serve("");
    let body = message_request(SONNET);
    let malformed = [
        "sk-cli-v1-short".to_string(),
        format!("sk-cli-v1-{}!", &"a".repeat(31)),
        format!("{key}x"),
        "sk-ant-oat01-abcdefghijklmnopqrstuvwxyz0123456789".to_string(),
        "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789".to_string(),
    ];
    for bad in &malformed {
        server
            .post_messages(Some(bad), &body, &[])
            .await
            .assert_error(401, "authentication_error", "Invalid API key format");
    }
    // A raw subscription token presented as a bearer token.
    server
        .post_messages(
            None,
            &body,
            &[(
                "authorization",
                "Bearer sk-ant-oat01-abcdefghijklmnopqrstuvwxyz",
            )],
        )
        .await
        .assert_error(401, "authentication_error", "Invalid API key format");
    assert_nothing_upstream(&mock);
}

#[actix_rt::test]
async fn bad_bodies_are_invalid_requests() {
    let (mock, server, key) = serve("");
    // serde reads a one-field struct from a one-element array: still not a request.
    let array = br#"["claude-sonnet-4-5"]"#;
    let scalar = br#""claude-sonnet-4-5""#;
    for raw in [&b"not json at all"[..], b"{\"model\":", b"", array, scalar] {
        let res = server
            .post_raw("/v1/messages", Some(&key), raw.to_vec(), &[])
            .await;
        res.assert_error(400, "invalid_request_error", "");
        assert!(
            !res.json()["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .is_empty(),
            "the message names the problem: {}",
            res.text()
        );
    }
    let mut with_bom = b"\xEF\xBB\xBF".to_vec();
    with_bom.extend_from_slice(message_request(SONNET).to_string().as_bytes());
    server
        .post_raw("/v1/messages", Some(&key), with_bom, &[])
        .await
        .assert_error(
            400,
            "invalid_request_error",
            "The request body starts with a byte-order mark",
        );
    let res = server
        .post_messages(
            Some(&key),
            &json!({"max_tokens":16,"messages":[{"role":"user","content":"hi"}]}),
            &[],
        )
        .await;
    res.assert_error(400, "invalid_request_error", "");
    assert!(
        res.text().contains("model"),
        "the message should name `model`: {}",
        res.text()
    );
    assert_nothing_upstream(&mock);
}

#[actix_rt::test]
async fn body_over_the_limit_is_413() {
    let (mock, server, key) = serve("[server]\nbody_limit = 1024\n");
    let mut body = message_request(SONNET);
    body["messages"][0]["content"] = json!("x".repeat(2000));
    let res = server.post_messages(Some(&key), &body, &[]).await;
    assert_eq!(res.status, 413, "{}", res.text());
    let err = res.json();
    assert_eq!(err["type"], "error", "{err}");
    assert_eq!(err["error"]["type"], "request_too_large", "{err}");
    assert!(err["error"]["message"].is_string(), "{err}");
    // Under the limit still works.
    let res = server
        .post_messages(Some(&key), &message_request(SONNET), &[])
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(mock.api_requests().len(), 1);
}

#[actix_rt::test]
async fn tier_without_accounts_is_unavailable() {
    let (mock, env) = setup("");
    env.add_account("trial", "a1");
    let (key, _) = keygen_offline(&env, "medium", &[]);
    let server = TestServer::start(env);
    let res = server
        .post_messages(Some(&key), &message_request(SONNET), &[])
        .await;
    res.assert_error(503, "api_error", "No Medium accounts available in pool");
    assert_nothing_upstream(&mock);
}

#[actix_rt::test]
async fn error_answers_are_json() {
    let (_mock, server, _) = serve("");
    let res = server
        .post_messages(None, &message_request(SONNET), &[])
        .await;
    assert_eq!(res.status, 401);
    assert!(
        res.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "content-type: {:?}",
        res.header("content-type")
    );
}

#[actix_rt::test]
async fn unknown_paths_are_404_and_wrong_methods_405() {
    let (mock, server, key) = serve("");
    let auth = [("x-api-key", key.as_str())];
    let res = request("GET", &server.url("/v2/messages"), &auth, vec![]).await;
    res.assert_error(
        404,
        "not_found_error",
        "GET /v2/messages is not an endpoint",
    );
    for (method, path, allowed) in [
        ("GET", "/v1/messages", "POST"),
        ("PUT", "/v1/messages/count_tokens", "POST"),
        ("POST", "/v1/models", "GET"),
        ("DELETE", "/v1/models/claude-sonnet-4-5", "GET"),
        ("PATCH", "/admin/keys", "GET, POST"),
    ] {
        let res = request(method, &server.url(path), &auth, vec![]).await;
        res.assert_error(
            405,
            "invalid_request_error",
            &format!("{method} is not allowed on {path}; use {allowed}"),
        );
        assert_eq!(res.header("allow"), Some(allowed), "{method} {path}");
    }
    assert_nothing_upstream(&mock);
}
