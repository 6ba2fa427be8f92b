//! SPEC §6: a request counts when admitted and is given back when Claude never served it
//! (connect error, 5xx, 529, upstream 429, a proxy-side failure before upstream); a client
//! that leaves mid-stream has been served.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;

const HIGH_LIMIT_2: &str = "[tiers.high]\nlimits = { sonnet = 2, opus = 3 }\nwindow = \"1m\"\n";

fn serve_high(tier_toml: &str) -> (MockUpstream, TestServer, String) {
    let (mock, env) = setup(tier_toml);
    env.add_account("high", "h1");
    let (key, _) = keygen_offline(&env, "high", &[]);
    (mock, TestServer::start(env), key)
}

fn assert_window_full(res: &Resp) {
    res.assert_error(429, "rate_limit_error", "Rate limit exceeded for Sonnet");
}

/// With a limit of 2: `failures` failing answers, then two successes, then the proxy's 429.
async fn failures_are_refunded(failing: Answer) {
    let (mock, server, key) = serve_high(HIGH_LIMIT_2);
    for _ in 0..3 {
        mock.push_answer(failing.clone());
    }
    for i in 0..3 {
        let res = server.send_model(&key, SONNET).await;
        assert_eq!(
            res.status,
            failing.status,
            "failing request {}: {}",
            i + 1,
            res.text()
        );
        assert_eq!(res.body.as_ref(), failing.body.as_slice(), "passed through");
    }
    for i in 0..2 {
        let res = server.send_model(&key, SONNET).await;
        assert_eq!(
            res.status,
            200,
            "success {} after {} refunded failures: {}",
            i + 1,
            3,
            res.text()
        );
    }
    assert_window_full(&server.send_model(&key, SONNET).await);
    assert_eq!(mock.messages_requests().len(), 5);
}

#[actix_rt::test]
async fn upstream_500_is_refunded() {
    failures_are_refunded(Answer::error(500, "api_error", "Internal server error")).await;
}

#[actix_rt::test]
async fn upstream_529_is_refunded() {
    failures_are_refunded(Answer::error(529, "overloaded_error", "Overloaded")).await;
}

#[actix_rt::test]
async fn upstream_429_is_refunded() {
    failures_are_refunded(Answer::error(
        429,
        "rate_limit_error",
        "This request would exceed your account's rate limit. Please try again later.",
    ))
    .await;
}

#[actix_rt::test]
async fn upstream_5xx_streams_are_refunded() {
    let (mock, server, key) = serve_high(HIGH_LIMIT_2);
    let mut body = message_request(SONNET);
    body["stream"] = json!(true);
    for _ in 0..3 {
        mock.push_answer(Answer::error(529, "overloaded_error", "Overloaded"));
    }
    for _ in 0..3 {
        let res = server.post_stream(&key, &body, None).await;
        assert_eq!(res.status, 529);
    }
    for _ in 0..2 {
        let res = server.post_stream(&key, &body, None).await;
        assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.bytes()));
    }
    assert_window_full(&server.send_model(&key, SONNET).await);
}

#[actix_rt::test]
async fn connect_error_is_502_and_refunded() {
    // Port 1 on loopback: nothing listens there, the connection is refused.
    let env = TestEnv::new("http://127.0.0.1:1", HIGH_LIMIT_2);
    env.add_account("high", "h1");
    let (key, _) = keygen_offline(&env, "high", &[]);
    let mut server = TestServer::start(env);
    for i in 0..3 {
        let res = server.send_model(&key, SONNET).await;
        res.assert_error(502, "api_error", "");
        assert_ne!(res.status, 429, "connect error {} counted", i + 1);
    }
    // Same store, upstream reachable now: the window is still untouched.
    let mock = MockUpstream::start();
    let status = server.stop();
    assert!(status.success(), "graceful stop: {status}");
    server.env.config["upstream"]["base_url"] = toml::Value::String(mock.url());
    server.env.write_config();
    server.start_again();
    server.assert_sonnet_requests_left(&key, 2).await;
    assert_eq!(mock.messages_requests().len(), 2);
}

#[actix_rt::test]
async fn locally_expired_token_is_503_and_refunded() {
    let (mock, env) = setup(HIGH_LIMIT_2);
    // Expired a minute ago and no refresh token: the proxy can't use it and can't fix it.
    let expired = json!({"claudeAiOauth": {
        "accessToken": access_token("h1"),
        "expiresAt": now_ms() - 60_000,
        "scopes": ["user:inference"],
        "subscriptionType": "max"
    }});
    env.write_account_file("high", "h1.json", expired.to_string().as_bytes());
    let (key, _) = keygen_offline(&env, "high", &[]);
    let server = TestServer::start(env);
    for _ in 0..3 {
        let res = server.send_model(&key, SONNET).await;
        res.assert_error(503, "api_error", "OAuth token has expired");
        assert!(
            res.header("retry-after").is_some(),
            "503 token expired without retry-after: {:?}",
            res.headers
        );
    }
    assert!(
        mock.messages_requests().is_empty(),
        "an expired token was sent upstream"
    );
    // The operator drops in a fresh credential and syncs.
    server.env.add_account("high", "h1");
    server.admin_sync().await;
    server.assert_sonnet_requests_left(&key, 2).await;
}

#[actix_rt::test]
async fn client_leaving_mid_stream_is_counted() {
    let (mock, server, key) =
        serve_high("[tiers.high]\nlimits = { sonnet = 1 }\nwindow = \"1m\"\n");
    mock.set_stream(30, Duration::from_millis(100));
    let mut body = message_request(SONNET);
    body["stream"] = json!(true);
    let res = server.post_stream(&key, &body, Some(2)).await;
    assert_eq!(res.status, 200);
    let cancelled = poll_async(Duration::from_secs(3), || async {
        mock.stream_cancelled().then_some(())
    })
    .await;
    assert!(cancelled.is_some(), "the upstream stream was not cancelled");
    // Give a (wrong) refund time to land.
    sleep(Duration::from_millis(300)).await;
    assert_window_full(&server.send_model(&key, SONNET).await);
    assert_window_full(&as_resp(server.post_stream(&key, &body, None).await));
}

fn as_resp(s: StreamResp) -> Resp {
    Resp {
        status: s.status,
        body: s.bytes().into(),
        headers: s.headers,
    }
}

#[actix_rt::test]
async fn an_error_answer_that_cannot_be_read_is_502_and_refunded() {
    let (mock, server, key) = serve_high(HIGH_LIMIT_2);
    // A 400 is read whole to see what it does to the account; this one is too large to read.
    let huge = vec![b'x'; 5 * 1024 * 1024];
    for _ in 0..2 {
        mock.push_answer(Answer::new(400, huge.clone()));
    }
    for i in 0..2 {
        let res = server.send_model(&key, SONNET).await;
        res.assert_error(502, "api_error", "");
        assert!(
            res.text().contains("reading Claude's answer"),
            "unreadable answer {}: {}",
            i + 1,
            res.text()
        );
    }
    server.assert_sonnet_requests_left(&key, 2).await;
}

/// The embedded store refuses the new binding's write (a trigger stands in for a full disk):
/// the client gets 503, its request is not counted, and the binding is not kept in memory
/// only: the next request binds again and that binding reaches the disk.
#[actix_rt::test]
async fn a_binding_the_store_refuses_is_503_and_refunded() {
    let (_mock, server, key) = serve_high(HIGH_LIMIT_2);
    let db = rusqlite::Connection::open(server.env.db_path()).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db.execute_batch(
        "CREATE TRIGGER refuse_bindings BEFORE INSERT ON bindings \
         BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
    )
    .unwrap();
    let res = server.send_model(&key, SONNET).await;
    res.assert_error(503, "api_error", "store unavailable");
    let message = res.json()["error"]["message"].as_str().unwrap().to_string();
    assert_eq!(message.matches("store unavailable").count(), 1, "{message}");
    assert!(message.ends_with("retry in a few seconds"), "{message}");
    db.execute_batch("DROP TRIGGER refuse_bindings;").unwrap();
    server.assert_sonnet_requests_left(&key, 2).await;
    let bound: i64 = db
        .query_row("SELECT COUNT(*) FROM bindings", [], |row| row.get(0))
        .unwrap();
    assert_eq!(bound, 1, "the key's binding is on disk once it is served");
}
