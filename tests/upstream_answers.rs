//! SPEC §8: what Claude's answers do to the account that got them — blacklist (and one
//! retry on the key's new account), urgent refresh (and one retry), limited, proxy fault,
//! pass-through — and SPEC §14: none of it puts a secret in the log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::env::refresh_token;
use common::mock_routes::message_body;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const CONFIG: &str = r#"
[tiers.high]
limits = { sonnet = 2, opus = 3 }
window = "1m"
[refresh]
success_lock = "100ms"
cooldown = "200ms"
"#;

const CLIENT_ID: &str = "9d1c250a-e61b-44d9-88ed-5944d1962f5e";
const EXPIRED: &str =
    "OAuth token has expired. Please obtain a new token or refresh your existing token.";

/// A server with the given `high` accounts and one pool key (key, id).
fn serve(accounts: &[&str]) -> (MockUpstream, TestServer, String, String) {
    let (mock, env) = setup(CONFIG);
    for name in accounts {
        env.add_account("high", name);
    }
    let (key, id) = keygen_offline(&env, "high", &[]);
    (mock, TestServer::start(env), key, id)
}

fn bearers(mock: &MockUpstream) -> Vec<String> {
    mock.messages_requests()
        .iter()
        .map(|r| r.bearer().unwrap_or_default().to_string())
        .collect()
}

fn assert_window_full(res: &Resp) {
    res.assert_error(429, "rate_limit_error", "Rate limit exceeded for Sonnet");
}

/// The client hears "expired, retry after N s": N, in seconds.
fn assert_expired_with_retry_after(res: &Resp) -> i64 {
    res.assert_error(503, "api_error", "OAuth token has expired");
    res.header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric retry-after: {:?}", res.headers))
}

fn assert_untouched(account: &Value) {
    assert_eq!(account["status"], "active", "account touched: {account}");
    assert!(
        account["blacklist_reason"].is_null(),
        "account blacklisted: {account}"
    );
}

fn assert_blacklisted(account: &Value, message: &str, since_from: i64) {
    assert_eq!(account["status"], "blacklisted", "{account}");
    let reason = account["blacklist_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(message),
        "blacklist_reason should contain `{message}`: {account}"
    );
    let since = account["blacklisted_since"]
        .as_i64()
        .unwrap_or_else(|| panic!("blacklisted_since is not a ms timestamp: {account}"));
    assert!(
        since >= since_from - 1000 && since <= now_ms() + 1000,
        "blacklisted_since {since} is not now ({since_from}…{})",
        now_ms()
    );
}

/// Two accounts: the answer blacklists h1, the same request is retried on h2 and succeeds.
async fn blacklists_and_retries_on_the_new_account(status: u16, kind: &str, message: &str) {
    let (mock, server, key, _) = serve(&["h1", "h2"]);
    mock.push_answer(Answer::error(status, kind, message).header("request-id", "req_dead"));
    let before = now_ms();
    let res = server.send_model(&key, SONNET).await;
    assert_eq!(res.status, 200, "the retry should succeed: {}", res.text());
    assert_eq!(res.json(), message_body(SONNET));
    assert_eq!(
        bearers(&mock),
        vec![access_token("h1"), access_token("h2")],
        "the same request, once on h1 and once on h2"
    );
    let reqs = mock.messages_requests();
    assert_eq!(reqs[0].body, reqs[1].body, "the retry sends the same body");

    let h1 = server.pool_account("high", "h1").await;
    assert_blacklisted(&h1, message, before);
    assert_eq!(h1["slots_used"], 0, "the key left h1: {h1}");
    let h2 = server.pool_account("high", "h2").await;
    assert_untouched(&h2);
    assert_eq!(h2["slots_used"], 1, "the key is bound to h2: {h2}");
    assert!(
        server
            .wait_for_log_all(
                &["Adding h1 to blacklist: ", message],
                Duration::from_secs(2)
            )
            .is_some(),
        "no `Adding h1 to blacklist: …{message}` log line"
    );

    // Later requests stay on h2; the retried request counted once.
    let res = server.send_model(&key, SONNET).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(bearers(&mock).last(), Some(&access_token("h2")));
    assert_window_full(&server.send_model(&key, SONNET).await);

    // Recovery lifts the blacklist; the binding stays where it is.
    server.recover("h1").await;
    let h1 = server.pool_account("high", "h1").await;
    assert_untouched(&h1);
    let res = server.send_model(&key, OPUS).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(bearers(&mock).last(), Some(&access_token("h2")));
}

/// One account: the answer blacklists it, the client gets 503 and the request is not counted.
async fn blacklists_the_only_account(status: u16, kind: &str, message: &str) {
    let (mock, server, key, _) = serve(&["h1"]);
    mock.push_answer(Answer::error(status, kind, message));
    let before = now_ms();
    let res = server.send_model(&key, SONNET).await;
    res.assert_error(503, "api_error", "No High accounts available in pool");
    assert_blacklisted(&server.pool_account("high", "h1").await, message, before);
    server.send_model(&key, SONNET).await.assert_error(
        503,
        "api_error",
        "No High accounts available in pool",
    );
    assert_eq!(
        mock.messages_requests().len(),
        1,
        "a blacklisted account is not used"
    );

    server.recover("h1").await;
    assert_untouched(&server.pool_account("high", "h1").await);
    server.assert_sonnet_requests_left(&key, 2).await;
    assert_eq!(bearers(&mock).last(), Some(&access_token("h1")));
}

/// The retry on the key's new account is refused too: both accounts are blacklisted and the
/// client hears a 503 telling it to retry, not Claude's 401 about a token it never sent
/// (which Claude Code would read as its own key being bad); the request is not counted and
/// the next one goes to a third account.
#[actix_rt::test]
async fn a_retry_refused_too_is_503_not_claudes_401() {
    let (mock, server, key, _) = serve(&["h1", "h2", "h3"]);
    for _ in 0..2 {
        mock.push_answer(Answer::error(
            401,
            "authentication_error",
            "Invalid bearer token",
        ));
    }
    let res = server.send_model(&key, SONNET).await;
    res.assert_error(503, "api_error", "Claude refused this request's account");
    assert!(res.text().contains("retry"), "{}", res.text());
    assert_eq!(res.header("retry-after"), Some("1"), "{:?}", res.headers);
    assert_eq!(
        bearers(&mock),
        vec![access_token("h1"), access_token("h2")],
        "sent once on h1 and once on h2"
    );
    for name in ["h1", "h2"] {
        let account = server.pool_account("high", name).await;
        assert_eq!(account["status"], "blacklisted", "{account}");
    }
    server.assert_sonnet_requests_left(&key, 2).await;
    assert_eq!(bearers(&mock).last(), Some(&access_token("h3")));
}

async fn blacklist_row(status: u16, kind: &str, message: &str) {
    blacklists_and_retries_on_the_new_account(status, kind, message).await;
    blacklists_the_only_account(status, kind, message).await;
}

#[actix_rt::test]
async fn forbidden_revoked_token_blacklists() {
    blacklist_row(
        403,
        "permission_error",
        "OAuth token has been revoked. Please obtain a new token.",
    )
    .await;
}

#[actix_rt::test]
async fn unauthorized_revoked_token_blacklists() {
    blacklist_row(
        401,
        "authentication_error",
        "OAuth token has been revoked. Please obtain a new token.",
    )
    .await;
}

#[actix_rt::test]
async fn invalid_bearer_token_blacklists() {
    blacklist_row(401, "authentication_error", "Invalid bearer token").await;
}

#[actix_rt::test]
async fn invalid_authentication_credentials_blacklists() {
    blacklist_row(
        401,
        "authentication_error",
        "Invalid authentication credentials",
    )
    .await;
}

#[actix_rt::test]
async fn oauth_not_allowed_for_organization_blacklists() {
    blacklist_row(
        403,
        "permission_error",
        "OAuth authentication is not allowed for this organization.",
    )
    .await;
}

#[actix_rt::test]
async fn disabled_organization_blacklists() {
    blacklist_row(
        400,
        "invalid_request_error",
        "This organization has been disabled.",
    )
    .await;
}

fn read_json(path: &std::path::Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("read account file")).expect("JSON")
}

/// Asserts the one OAuth call refreshed `name` the way SPEC §9 says.
fn assert_refresh_call(mock: &MockUpstream, name: &str) {
    let calls = mock.oauth_calls();
    assert_eq!(calls.len(), 1, "one refresh: {calls:?}");
    assert_eq!(calls[0].method, "POST");
    let body = calls[0].json();
    assert_eq!(body["grant_type"], "refresh_token", "{body}");
    assert_eq!(body["refresh_token"], refresh_token(name), "{body}");
    assert_eq!(body["client_id"], CLIENT_ID, "{body}");
}

#[actix_rt::test]
async fn expired_token_is_refreshed_and_the_request_retried() {
    let (mock, server, key, _) = serve(&["h1"]);
    mock.push_answer(Answer::error(401, "authentication_error", EXPIRED));
    let res = server.send_model(&key, SONNET).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json(), message_body(SONNET));
    assert_refresh_call(&mock, "h1");
    assert_eq!(
        bearers(&mock),
        vec![access_token("h1"), "sk-ant-oat01-new-1".to_string()],
        "retried once with the refreshed token"
    );

    // The new pair is on disk, in Claude Code's format, unknown fields kept.
    let file = read_json(&server.env.account_path("high", "h1"));
    let oauth = &file["claudeAiOauth"];
    assert_eq!(oauth["accessToken"], "sk-ant-oat01-new-1", "{file}");
    assert_eq!(oauth["refreshToken"], "sk-ant-ort01-new-1", "{file}");
    assert_eq!(oauth["subscriptionType"], "max", "{file}");
    assert_eq!(oauth["scopes"], json!(["user:inference"]), "{file}");
    let expires = oauth["expiresAt"].as_i64().expect("expiresAt ms");
    assert!(
        (expires - (now_ms() + 3_600_000)).abs() < 60_000,
        "expiresAt {expires} is not ~1 h from now"
    );
    assert!(
        server
            .wait_for_log("refresh succeeded: h1", Duration::from_secs(2))
            .is_some(),
        "no `refresh succeeded: h1` log line"
    );
    assert_untouched(&server.pool_account("high", "h1").await);

    // Later requests use the new token; the retried request counted once.
    let res = server.send_model(&key, SONNET).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(bearers(&mock).last().unwrap(), "sk-ant-oat01-new-1");
    assert_window_full(&server.send_model(&key, SONNET).await);
}

#[actix_rt::test]
async fn expired_token_refresh_keeps_the_flat_format() {
    let (mock, env) = setup(CONFIG);
    let mut cred = common::env::flat_credential("h1", now_ms() + 3_600_000);
    cred["label"] = json!("operator note");
    env.write_account_file("high", "h1.json", cred.to_string().as_bytes());
    let (key, _) = keygen_offline(&env, "high", &[]);
    let server = TestServer::start(env);
    mock.push_answer(Answer::error(401, "authentication_error", EXPIRED));
    let res = server.send_model(&key, SONNET).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let file = read_json(&server.env.account_path("high", "h1"));
    assert_eq!(file["accessToken"], "sk-ant-oat01-new-1", "{file}");
    assert_eq!(file["refreshToken"], "sk-ant-ort01-new-1", "{file}");
    assert_eq!(file["label"], "operator note", "{file}");
    assert!(
        file.get("claudeAiOauth").is_none(),
        "format changed: {file}"
    );
}

#[actix_rt::test]
async fn failed_refresh_blacklists_and_retries_on_the_new_account() {
    let (mock, server, key, _) = serve(&["h1", "h2"]);
    mock.set_oauth_fixed_answer(Some(Answer::new(
        400,
        r#"{"error":"invalid_grant","error_description":"Refresh token not found or invalid"}"#,
    )));
    mock.push_answer(Answer::error(401, "authentication_error", EXPIRED));
    let before = now_ms();
    let res = server.send_model(&key, SONNET).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(!mock.oauth_calls().is_empty(), "no refresh attempted");
    assert_eq!(
        mock.oauth_calls()[0].json()["refresh_token"],
        refresh_token("h1")
    );
    assert_eq!(
        bearers(&mock),
        vec![access_token("h1"), access_token("h2")],
        "retried once on h2"
    );
    let h1 = server.pool_account("high", "h1").await;
    assert_blacklisted(&h1, "", before);
    assert!(
        server
            .wait_for_log("Adding h1 to blacklist: ", Duration::from_secs(2))
            .is_some(),
        "no `Adding h1 to blacklist:` log line"
    );
    // The failed refresh wrote nothing.
    let file = read_json(&server.env.account_path("high", "h1"));
    assert_eq!(file["claudeAiOauth"]["accessToken"], access_token("h1"));
    assert_eq!(file["claudeAiOauth"]["refreshToken"], refresh_token("h1"));
    let res = server.send_model(&key, SONNET).await;
    assert_eq!(res.status, 200);
    assert_eq!(bearers(&mock).last(), Some(&access_token("h2")));
}

/// The token endpoint answers 429 to the urgent refresh: every refresh pauses, which is not
/// the account's failure — it is not blacklisted, the client hears "expired, retry after the
/// pause" and its request is not counted.
#[actix_rt::test]
async fn a_rate_limited_urgent_refresh_is_503_and_keeps_the_account() {
    let (mock, server, key, _) = serve(&["h1"]);
    mock.push_oauth_answer(
        Answer::new(429, r#"{"error":"rate_limited"}"#).header("retry-after", "30"),
    );
    mock.push_answer(Answer::error(401, "authentication_error", EXPIRED));
    let res = server.send_model(&key, SONNET).await;
    let retry_after = assert_expired_with_retry_after(&res);
    assert!(
        (25..=30).contains(&retry_after),
        "retry-after {retry_after} is not the token endpoint's pause"
    );
    assert_eq!(mock.oauth_calls().len(), 1, "one refresh attempt");
    assert_untouched(&server.pool_account("high", "h1").await);
    server.assert_sonnet_requests_left(&key, 2).await;
}

/// An urgent refresh the rules hold back (here the global lock after another account's
/// refresh) does not hold the client for the lock's minute: after `urgent_wait` it hears
/// "expired, retry after" the lock, its request is not counted, the account is kept, and no
/// refresh breaks the lock.
#[actix_rt::test]
async fn an_urgent_refresh_held_back_by_the_lock_is_503_at_once() {
    let (mock, env) = setup(
        "[tiers.high]\nlimits = { sonnet = 2 }\n[refresh]\nsuccess_lock = \"1m\"\n\
         urgent_wait = \"300ms\"\n",
    );
    env.add_account("high", "h1");
    env.add_account("high", "h2");
    let (key1, _) = keygen_offline(&env, "high", &[]);
    let (key2, _) = keygen_offline(&env, "high", &[]);
    let server = TestServer::start(env);

    // h1's token expires: refreshed at once, the request retried; the lock now holds.
    mock.push_answer(Answer::error(401, "authentication_error", EXPIRED));
    let res = server.send_model(&key1, SONNET).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_refresh_call(&mock, "h1");

    mock.push_answer(Answer::error(401, "authentication_error", EXPIRED));
    let res = server.send_model(&key2, SONNET).await;
    let retry_after = assert_expired_with_retry_after(&res);
    assert!(
        (50..=60).contains(&retry_after),
        "retry-after {retry_after} is not the end of the lock"
    );
    assert_eq!(bearers(&mock)[2], access_token("h2"), "key2 is on h2");
    assert_eq!(mock.oauth_calls().len(), 1, "the lock was kept");
    assert_untouched(&server.pool_account("high", "h2").await);
    server.assert_sonnet_requests_left(&key2, 2).await;
}

/// h1 is revoked, the retry on h2 finds h2's token expired: no third try, so the client
/// hears "expired, retry shortly" (not Claude's 401, which Claude Code reads as a bad key)
/// and its request is not counted; the next request refreshes h2.
#[actix_rt::test]
async fn an_expired_token_on_the_retry_is_503_and_refunded() {
    let (mock, server, key, _) = serve(&["h1", "h2"]);
    mock.push_answer(Answer::error(
        403,
        "permission_error",
        "OAuth token has been revoked",
    ));
    mock.push_answer(Answer::error(401, "authentication_error", EXPIRED));
    let res = server.send_model(&key, SONNET).await;
    res.assert_error(503, "api_error", "OAuth token has expired");
    assert!(res.header("retry-after").is_some(), "{:?}", res.headers);
    assert_eq!(
        bearers(&mock),
        vec![access_token("h1"), access_token("h2")],
        "sent once on h1 and once on h2"
    );
    assert_untouched(&server.pool_account("high", "h2").await);
    mock.push_answer(Answer::error(401, "authentication_error", EXPIRED));
    let res = server.send_model(&key, SONNET).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_refresh_call(&mock, "h2");
    let res = server.send_model(&key, SONNET).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_window_full(&server.send_model(&key, SONNET).await);
}

#[actix_rt::test]
async fn upstream_429_marks_the_account_limited() {
    let (mock, server, key, _) = serve(&["h1"]);
    let reset_s = now_ms() / 1000 + 3600;
    let body = r#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of requests has exceeded your rate limit. Please try again later."}}"#;
    mock.push_answer(
        Answer::new(429, body)
            .header("anthropic-ratelimit-unified-reset", &reset_s.to_string())
            .header("anthropic-ratelimit-unified-status", "rejected")
            .header("request-id", "req_limited"),
    );
    let res = server.send_model(&key, SONNET).await;
    assert_eq!(res.status, 429);
    assert_eq!(res.text(), body, "the body passes through");
    assert_eq!(res.header("request-id"), Some("req_limited"));
    assert_eq!(
        res.header("anthropic-ratelimit-unified-reset"),
        Some(reset_s.to_string().as_str())
    );
    let retry: i64 = res
        .header("retry-after")
        .unwrap_or_else(|| panic!("429 without retry-after: {:?}", res.headers))
        .parse()
        .expect("retry-after seconds");
    assert!(
        (3500..=3700).contains(&retry),
        "retry-after {retry} should point at the reset in ~3600 s"
    );
    let h1 = server.pool_account("high", "h1").await;
    assert_eq!(h1["status"], "limited", "{h1}");
    let until = h1["limited_until"].as_i64().expect("limited_until ms");
    assert!(
        (until - reset_s * 1000).abs() <= 1000,
        "limited_until {until} should be the reset {}",
        reset_s * 1000
    );
    assert!(h1["blacklist_reason"].is_null(), "not blacklisted: {h1}");
    assert_eq!(mock.messages_requests().len(), 1, "no retry");
}

#[actix_rt::test]
async fn oauth_not_supported_is_a_proxy_fault() {
    let (mock, server, key, _) = serve(&["h1", "h2"]);
    let body = r#"{"type":"error","error":{"type":"authentication_error","message":"OAuth authentication is currently not supported."}}"#;
    mock.push_answer(Answer::new(401, body));
    let res = server.send_model(&key, SONNET).await;
    assert_eq!(res.status, 401);
    assert_eq!(res.text(), body);
    assert_eq!(
        bearers(&mock),
        vec![access_token("h1")],
        "no retry elsewhere"
    );
    assert!(mock.oauth_calls().is_empty(), "no refresh");
    assert_untouched(&server.pool_account("high", "h1").await);
    let line = wait_until(Duration::from_secs(2), || {
        server.logs().into_iter().find(|l| l.contains("ERROR"))
    });
    assert!(
        line.is_some(),
        "no error-level log line:\n{}",
        server.logs().join("\n")
    );
    let res = server.send_model(&key, SONNET).await;
    assert_eq!(res.status, 200);
    assert_eq!(bearers(&mock).last(), Some(&access_token("h1")));
}

async fn passes_through_untouched(status: u16, kind: &str, message: &str) {
    let (mock, server, key, _) = serve(&["h1", "h2"]);
    let answer = Answer::error(status, kind, message).header("request-id", "req_fail");
    mock.push_answer(answer.clone());
    let res = server.send_model(&key, SONNET).await;
    assert_eq!(res.status, status);
    assert_eq!(res.body.as_ref(), answer.body.as_slice());
    assert_eq!(res.header("request-id"), Some("req_fail"));
    assert_eq!(bearers(&mock), vec![access_token("h1")], "no retry");
    assert!(mock.oauth_calls().is_empty(), "no refresh");
    assert_untouched(&server.pool_account("high", "h1").await);
    let res = server.send_model(&key, SONNET).await;
    assert_eq!(res.status, 200);
    assert_eq!(bearers(&mock).last(), Some(&access_token("h1")));
}

#[actix_rt::test]
async fn upstream_500_passes_through_account_untouched() {
    passes_through_untouched(500, "api_error", "Internal server error").await;
}

#[actix_rt::test]
async fn upstream_529_passes_through_account_untouched() {
    passes_through_untouched(529, "overloaded_error", "Overloaded").await;
}

#[actix_rt::test]
async fn no_key_or_token_is_ever_logged() {
    let (mock, server, key, _) = serve(&["h1", "h2"]);
    let mut stream_body = message_request(SONNET);
    stream_body["stream"] = json!(true);
    // Served, refreshed and retried, failed upstream, streamed.
    assert_eq!(server.send_model(&key, SONNET).await.status, 200);
    mock.push_answer(Answer::error(401, "authentication_error", EXPIRED));
    assert_eq!(server.send_model(&key, OPUS).await.status, 200);
    assert!(server
        .wait_for_log("refresh succeeded: h1", Duration::from_secs(2))
        .is_some());
    mock.push_answer(Answer::error(500, "api_error", "Internal server error"));
    assert_eq!(server.send_model(&key, OPUS).await.status, 500);
    assert_eq!(
        server.post_stream(&key, &stream_body, None).await.status,
        200
    );
    // Blacklisted and moved to h2, then h2's refresh is rejected: nothing left.
    mock.push_answer(Answer::error(
        403,
        "permission_error",
        "OAuth token has been revoked. Please obtain a new token.",
    ));
    assert_eq!(server.send_model(&key, OPUS).await.status, 200);
    mock.set_oauth_fixed_answer(Some(Answer::new(400, r#"{"error":"invalid_grant"}"#)));
    mock.push_answer(Answer::error(401, "authentication_error", EXPIRED));
    server.send_model(&key, HAIKU).await.assert_error(
        503,
        "api_error",
        "No High accounts available in pool",
    );
    // Unknown and malformed keys.
    let other = format!("sk-cli-v1-{}", "Zz09".repeat(8));
    assert_eq!(server.send_model(&other, SONNET).await.status, 401);
    assert!(server
        .wait_for_log("Adding h2 to blacklist", Duration::from_secs(2))
        .is_some());
    assert!(server
        .wait_for_log(
            "rate limit check passed: 1/2 requests",
            Duration::from_secs(2)
        )
        .is_some());

    let logs = server.logs().join("\n");
    let secrets = [
        key.clone(),
        key["sk-cli-v1-".len()..].to_string(),
        other["sk-cli-v1-".len()..].to_string(),
        access_token("h1"),
        access_token("h2"),
        refresh_token("h1"),
        refresh_token("h2"),
        "sk-ant-oat01-new-1".to_string(),
        "sk-ant-ort01-new-1".to_string(),
        ADMIN_TOKEN.to_string(),
    ];
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "the log contains the secret `{secret}`:\n{logs}"
        );
    }
    // The key's display prefix is fine and is what identifies the key.
    assert!(logs.contains(&key[.."sk-cli-v1-".len() + 4]), "{logs}");
}
