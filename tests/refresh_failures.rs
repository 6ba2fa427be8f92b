//! SPEC §9, §12, §14: failed refreshes (cooldown, cap per window), a rate-limited token
//! endpoint (global pause, not charged), `invalid_grant` (blacklist), and the answer a client
//! gets while its account's token is expired.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::env::refresh_token;
use common::refresh_support::*;
use common::*;
use serde_json::json;
use std::time::Duration;

const TIER: &str = "supreme";

/// A token endpoint that always answers 500: exactly `max_failures` attempts per account,
/// each a cooldown after the previous one, then none; the pool and status show the count
/// and the last error.
#[actix_rt::test]
async fn failing_endpoint_gets_max_failures_attempts_per_account() {
    let cooldown = Duration::from_millis(400);
    let (mock, env) = setup(&refresh_toml("500ms", "300ms", "400ms", 3));
    mock.set_oauth_fixed_answer(Some(oauth_server_error()));
    let expires_at = now_ms() + 2_000;
    write_expiring(&env, TIER, "f1", expires_at);
    write_expiring(&env, TIER, "f2", expires_at);
    let server = TestServer::start(env);

    let got = wait_oauth_calls(&mock, 6, Duration::from_secs(8));
    assert!(
        got.is_some(),
        "expected 3 attempts for each of 2 accounts, saw {} OAuth calls",
        mock.oauth_calls().len()
    );
    // A few cooldowns more: no further attempt.
    std::thread::sleep(cooldown * 4);
    assert_eq!(
        mock.oauth_calls().len(),
        6,
        "attempts beyond max_failures = 3 per account"
    );

    let view = server.pool_view().await;
    let status = server.status_view().await;
    for name in ["f1", "f2"] {
        let calls = calls_for(&mock, name);
        assert_eq!(calls.len(), 3, "{name}: attempts");
        for pair in calls.windows(2) {
            let gap = pair[1].at.duration_since(pair[0].at);
            assert!(
                gap >= cooldown,
                "{name}: retried {} ms after a failure (cooldown {} ms)",
                gap.as_millis(),
                cooldown.as_millis()
            );
        }
        let acc = find_pool_account(&view, TIER, name)
            .unwrap_or_else(|| panic!("{name} missing from the pool: {view}"));
        assert_eq!(acc["refresh"]["failures_in_window"], 3, "{acc}");
        let err = acc["refresh"]["last_error"].as_str().unwrap_or_default();
        assert!(!err.is_empty(), "pool shows no last_error: {acc}");
        let st = status_refresh_account(&status, name)
            .unwrap_or_else(|| panic!("{name} missing from status.refresh.accounts: {status}"));
        assert_eq!(st["tier"], TIER, "{st}");
        assert_eq!(st["failures_in_window"], 3, "{st}");
        assert!(
            st["last_error"].as_str().is_some_and(|e| !e.is_empty()),
            "status shows no last_error: {st}"
        );
        assert!(
            server
                .wait_for_log(&format!("refresh failed: {name}: "), Duration::from_secs(1))
                .is_some(),
            "no `refresh failed: {name}: …` in the log"
        );
        assert!(
            server
                .wait_for_log(&format!("refresh cooldown: {name}"), Duration::from_secs(1))
                .is_some(),
            "no `refresh cooldown: {name}` in the log"
        );
    }
}

/// A 429 from the token endpoint with `retry-after: 1` pauses every refresh for a second,
/// then refreshing resumes; the 429 is no failure (with max_failures = 1 the account would
/// otherwise never be tried again).
#[actix_rt::test]
async fn rate_limited_token_endpoint_pauses_everyone_uncharged() {
    let (mock, env) = setup(&refresh_toml("1s", "100ms", "400ms", 1));
    mock.push_oauth_answer(
        Answer::new(429, json!({"error": "rate_limited"}).to_string()).header("retry-after", "1"),
    );
    let expires_at = now_ms() + 2_000;
    write_expiring(&env, TIER, "r1", expires_at);
    write_expiring(&env, TIER, "r2", expires_at);
    let server = TestServer::start(env);

    let first = wait_oauth_calls(&mock, 1, Duration::from_secs(4)).expect("a first refresh");
    let limited = call_refresh_token(&first[0]);
    let limited_name = if limited == refresh_token("r1") {
        "r1"
    } else {
        "r2"
    };
    std::thread::sleep(Duration::from_millis(300));
    // During the pause: nothing charged, the pause visible.
    let status = server.status_view().await;
    let paused = status["refresh"]["paused_until"].as_i64();
    assert!(
        paused.is_some_and(|t| t > now_ms()),
        "status shows no pause after a 429: {status}"
    );
    let acc = server.pool_account(TIER, limited_name).await;
    assert_eq!(
        acc["refresh"]["failures_in_window"], 0,
        "429 charged: {acc}"
    );
    assert!(
        acc["refresh"]["cooldown_until"].is_null(),
        "429 put the account in cooldown: {acc}"
    );

    let calls = wait_oauth_calls(&mock, 3, Duration::from_secs(5));
    let calls = calls.unwrap_or_else(|| {
        panic!(
            "refreshing did not resume after the pause: {} OAuth calls",
            mock.oauth_calls().len()
        )
    });
    let gap = calls[1].at.duration_since(calls[0].at);
    assert!(
        gap >= Duration::from_millis(1_000),
        "an OAuth call {} ms after the 429 (retry-after: 1)",
        gap.as_millis()
    );
    for name in ["r1", "r2"] {
        let v = wait_until(Duration::from_secs(3), || {
            let v = read_account(&server.env, TIER, name);
            oauth_part(&v)["accessToken"]
                .as_str()
                .is_some_and(|t| t.starts_with("sk-ant-oat01-new-"))
                .then_some(v)
        });
        assert!(v.is_some(), "{name} was not refreshed after the pause");
        let acc = server.pool_account(TIER, name).await;
        assert_eq!(acc["refresh"]["failures_in_window"], 0, "{acc}");
        assert_ne!(acc["status"], "blacklisted", "{acc}");
    }
    assert_eq!(
        calls_for(&mock, limited_name).len(),
        2,
        "{limited_name}: the 429'd attempt and one successful retry"
    );
}

/// `invalid_grant`: the account is blacklisted with reason `refresh token rejected` and not
/// tried again; other accounts are unaffected.
#[actix_rt::test]
async fn invalid_grant_blacklists_the_account() {
    let (mock, env) = setup(&refresh_toml("1s", "300ms", "400ms", 3));
    mock.set_oauth_fixed_answer(Some(oauth_invalid_grant()));
    write_expiring(&env, TIER, "b1", now_ms() + 1_500);
    env.add_account(TIER, "ok1");
    let server = TestServer::start(env);

    let acc = poll_async(Duration::from_secs(5), || {
        let fut = server.pool_account(TIER, "b1");
        async {
            let acc = fut.await;
            (acc["status"] == "blacklisted").then_some(acc)
        }
    })
    .await;
    let acc = match acc {
        Some(a) => a,
        None => panic!(
            "b1 not blacklisted after invalid_grant: {}",
            server.pool_account(TIER, "b1").await
        ),
    };
    assert_eq!(acc["blacklist_reason"], "refresh token rejected", "{acc}");
    assert!(
        server
            .wait_for_log(
                "Adding b1 to blacklist: refresh token rejected",
                Duration::from_secs(1)
            )
            .is_some(),
        "no `Adding b1 to blacklist: refresh token rejected` in the log"
    );
    std::thread::sleep(Duration::from_millis(1_500));
    assert_eq!(
        calls_for(&mock, "b1").len(),
        1,
        "a rejected refresh token is not tried again"
    );
    let other = server.pool_account(TIER, "ok1").await;
    assert_eq!(other["status"], "active", "{other}");
}

/// A request whose account's token has expired locally (refresh failing, attempts left):
/// 503 `OAuth token has expired` with a retry-after, and nothing goes upstream.
#[actix_rt::test]
async fn expired_token_gets_503_with_retry_after() {
    let (mock, env) = setup(&refresh_toml("500ms", "300ms", "2s", 3));
    mock.set_oauth_fixed_answer(Some(oauth_server_error()));
    write_expiring(&env, TIER, "x1", now_ms() - 1_000);
    let server = TestServer::start(env);
    assert!(
        wait_oauth_calls(&mock, 1, Duration::from_secs(3)).is_some(),
        "an expired account is refreshed at once"
    );
    let (key, _) = server.admin_create_key(&json!({"tier": TIER})).await;
    let res = server.send_model(&key, SONNET).await;
    res.assert_error(503, "api_error", "OAuth token has expired");
    let retry = res
        .header("retry-after")
        .unwrap_or_else(|| panic!("no retry-after on the expired-token 503: {:?}", res.headers));
    let secs: u64 = retry
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("retry-after `{retry}` is not seconds: {e}"));
    assert!(
        (1..=3).contains(&secs),
        "retry-after {secs} s; the next attempt is within the 2 s cooldown"
    );
    assert!(
        mock.messages_requests().is_empty(),
        "an expired token was sent upstream"
    );
}

/// Waits (up to 2 s) until the pool shows `n` failed refreshes of `name` in the window.
async fn wait_failures_in_window(server: &TestServer, name: &str, n: u64) {
    let shown = poll_async(Duration::from_secs(2), || {
        let fut = server.pool_account(TIER, name);
        async move { (fut.await["refresh"]["failures_in_window"] == n).then_some(()) }
    })
    .await;
    assert!(
        shown.is_some(),
        "not {n} failures: {}",
        server.pool_account(TIER, name).await
    );
}

/// SPEC §9: "success resets the account's count" — a failed attempt is counted, and the
/// success after its cooldown puts the count back to zero.
#[actix_rt::test]
async fn a_success_resets_the_failure_count() {
    let (mock, env) = setup(&refresh_toml("1s", "100ms", "300ms", 3));
    mock.push_oauth_answer(oauth_server_error());
    write_expiring(&env, TIER, "s1", now_ms() + 1_500);
    let server = TestServer::start(env);

    wait_oauth_calls(&mock, 1, Duration::from_secs(4)).expect("a first refresh");
    wait_failures_in_window(&server, "s1", 1).await;

    wait_oauth_calls(&mock, 2, Duration::from_secs(4)).expect("a retry after the cooldown");
    wait_failures_in_window(&server, "s1", 0).await;
}

/// SPEC §9: a token endpoint 429 without `retry-after` pauses every refresh for 60 s.
#[actix_rt::test]
async fn a_429_without_retry_after_pauses_a_minute() {
    let (mock, env) = setup(&refresh_toml("1s", "100ms", "300ms", 3));
    mock.push_oauth_answer(Answer::new(
        429,
        json!({"error": "rate_limited"}).to_string(),
    ));
    write_expiring(&env, TIER, "p1", now_ms() + 1_500);
    let server = TestServer::start(env);

    wait_oauth_calls(&mock, 1, Duration::from_secs(4)).expect("a first refresh");
    let answered = now_ms();
    let paused = poll_async(Duration::from_secs(2), || {
        let fut = server.status_view();
        async { fut.await["refresh"]["paused_until"].as_i64() }
    })
    .await
    .expect("status shows no pause after a 429");
    let pause = paused - answered;
    assert!(
        (55_000..=61_000).contains(&pause),
        "paused for {pause} ms, not a minute"
    );
}
