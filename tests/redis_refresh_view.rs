//! SPEC §9, §11, §12: with Redis, every instance's admin views show the shared refresh state
//! — an account's failures, cooldown and last error, and the global success lock — however
//! many instances share the store and whichever of them refreshed; and a client's
//! `retry-after` for an expired token waits for that shared state too.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::redis_instances::*;
use common::redis_server::RedisServer;
use common::refresh_support::*;
use common::*;
use serde_json::Value;
use std::time::Duration;

const TIER: &str = "supreme";
const NAME: &str = "s1";
/// Long enough that no instance tries again during the test on its own.
const COOLDOWN_MS: i64 = 60_000;
const SUCCESS_LOCK_MS: i64 = 30_000;

/// `server`'s pool entry for the account, once `check` accepts its refresh state.
async fn wait_refresh_state(
    server: &TestServer,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let got = poll_async(Duration::from_secs(3), || {
        let fut = server.pool_account(TIER, NAME);
        async { Some(fut.await).filter(|acc| check(&acc["refresh"])) }
    })
    .await;
    match got {
        Some(acc) => acc,
        None => panic!(
            "/admin/pool never showed {what}: {}",
            server.pool_account(TIER, NAME).await
        ),
    }
}

/// Two instances, one account due at once, a token endpoint failing: one instance (A)
/// makes the one attempt, the other (B) only meets the cooldown in Redis. B's `/admin/pool`
/// and `/admin/status` show A's failure; after `recover` and A's successful refresh, B shows
/// the account clean and the global success lock.
#[actix_rt::test]
async fn every_instance_shows_the_refresh_state_another_instance_recorded() {
    let redis = RedisServer::start();
    let mock = MockUpstream::start();
    mock.set_oauth_fixed_answer(Some(oauth_server_error()));
    let accounts = SharedAccounts::new();
    accounts.add_expiring(TIER, NAME, now_ms() + 1_500);
    let refresh = refresh_toml("2s", &format!("{SUCCESS_LOCK_MS}ms"), "1m", 3);
    let servers = start_instances(2, &mock, &redis, &accounts, &refresh);

    // A is whichever instance won the shared mutex and called the token endpoint.
    let failed = wait_until(Duration::from_secs(5), || {
        servers.iter().position(|s| {
            !s.log_lines_with(&format!("refresh failed: {NAME}: "))
                .is_empty()
        })
    });
    let a = failed.unwrap_or_else(|| {
        panic!(
            "no instance logged a failed refresh; {} OAuth calls",
            mock.oauth_calls().len()
        )
    });
    let (a, b) = (&servers[a], &servers[1 - a]);

    let acc = wait_refresh_state(b, "the failure", |r| {
        r["failures_in_window"].as_u64().is_some_and(|n| n >= 1)
    })
    .await;
    let state = &acc["refresh"];
    let now = now_ms();
    let cooldown = state["cooldown_until"]
        .as_i64()
        .unwrap_or_else(|| panic!("B shows no cooldown_until: {acc}"));
    assert!(
        cooldown > now && cooldown <= now + COOLDOWN_MS,
        "B's cooldown_until {cooldown} is not within the 1 m cooldown from now {now}: {acc}"
    );
    let error = state["last_error"].as_str().unwrap_or_default();
    assert!(!error.is_empty(), "B shows no last_error: {acc}");
    let a_error = a.pool_account(TIER, NAME).await["refresh"]["last_error"].clone();
    assert_eq!(
        state["last_error"], a_error,
        "both instances show one error"
    );
    let status = b.status_view().await;
    let st = status_refresh_account(&status, NAME)
        .unwrap_or_else(|| panic!("{NAME} missing from B's status.refresh.accounts: {status}"));
    assert_eq!(
        st["failures_in_window"], state["failures_in_window"],
        "{st}"
    );
    assert_eq!(st["last_error"], state["last_error"], "{st}");
    assert_eq!(
        mock.oauth_calls().len(),
        1,
        "one attempt across both instances"
    );

    // The operator recovers through A; A refreshes at once and the endpoint now answers.
    mock.set_oauth_fixed_answer(None);
    let res = a.recover(NAME).await;
    assert_eq!(res.status, 200, "recover: {}", res.text());
    assert!(
        a.wait_for_log(
            &format!("refresh succeeded: {NAME}"),
            Duration::from_secs(5)
        )
        .is_some(),
        "A did not refresh after recover; {} OAuth calls",
        mock.oauth_calls().len()
    );
    let acc = wait_refresh_state(b, "the account cleared", |r| {
        r["failures_in_window"] == 0 && r["cooldown_until"].is_null() && r["last_error"].is_null()
    })
    .await;
    assert_eq!(acc["status"], "active", "{acc}");

    // The success lock A took holds every instance back, and B says so.
    let lock = poll_async(Duration::from_secs(3), || {
        let fut = b.status_view();
        async move {
            let status = fut.await;
            status["refresh"]["lock_until"].as_i64()
        }
    })
    .await;
    let now = now_ms();
    let lock = lock.unwrap_or_else(|| panic!("B's status shows no global lock after A's refresh"));
    assert!(
        lock > now && lock <= now + SUCCESS_LOCK_MS,
        "B's lock_until {lock} is not within the 30 s success lock from now {now}"
    );
}

/// Redis gone: `/admin/status` still answers, its refresh view from the instance's own
/// memory (the failure it recorded itself), and says the store is unhealthy.
#[actix_rt::test]
async fn without_redis_the_status_shows_this_instances_refresh_state() {
    let mut redis = RedisServer::own();
    let mock = MockUpstream::start();
    mock.set_oauth_fixed_answer(Some(oauth_server_error()));
    let accounts = SharedAccounts::new();
    accounts.add_expiring(TIER, NAME, now_ms() + 1_500);
    let refresh = refresh_toml("2s", "30s", "1m", 3);
    let server = start_instance(&mock, &redis, &accounts, &refresh);
    assert!(
        server
            .wait_for_log(&format!("refresh failed: {NAME}: "), Duration::from_secs(5))
            .is_some(),
        "no failed refresh logged"
    );
    wait_refresh_state(&server, "the failure", |r| r["failures_in_window"] == 1).await;

    redis.stop();
    let res = server.admin_get("/admin/status").await;
    assert_eq!(
        res.status,
        200,
        "GET /admin/status without Redis: {}",
        res.text()
    );
    let status = res.json();
    assert_eq!(status["store"]["healthy"], false, "{status}");
    let st = status_refresh_account(&status, NAME)
        .unwrap_or_else(|| panic!("{NAME} missing from status.refresh.accounts: {status}"));
    assert_eq!(st["failures_in_window"], 1, "{st}");
    assert!(
        st["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{st}"
    );
    assert!(
        server
            .wait_for_log(
                "refresh view shows this instance's state only",
                Duration::from_secs(1)
            )
            .is_some(),
        "the fallback is not logged"
    );
}

/// A failed refresh on A puts the account in a 1 m cooldown in Redis. B, started after it,
/// never tried the account itself; a client of B whose request meets the expired token is
/// told to come back when the shared cooldown ends, not in a second.
#[actix_rt::test]
async fn the_expired_token_retry_after_waits_for_another_instances_cooldown() {
    let redis = RedisServer::start();
    let mock = MockUpstream::start();
    mock.set_oauth_fixed_answer(Some(oauth_server_error()));
    let accounts = SharedAccounts::new();
    accounts.add_expiring(TIER, NAME, now_ms() - 1_000);
    let refresh = refresh_toml("500ms", "300ms", &format!("{COOLDOWN_MS}ms"), 3);
    let a = start_instance(&mock, &redis, &accounts, &refresh);
    assert!(
        a.wait_for_log(&format!("refresh failed: {NAME}: "), Duration::from_secs(5))
            .is_some(),
        "A made no failed attempt"
    );
    let b = start_instance(&mock, &redis, &accounts, &refresh);
    let (key, _) = b.admin_create_key(&serde_json::json!({"tier": TIER})).await;

    let res = b.send_model(&key, SONNET).await;
    res.assert_error(503, "api_error", "OAuth token has expired");
    let secs: i64 = res
        .header("retry-after")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no retry-after in seconds: {:?}", res.headers));
    assert!(
        secs > COOLDOWN_MS / 1000 - 10 && secs <= COOLDOWN_MS / 1000,
        "retry-after {secs} s; A's cooldown in Redis ends in about {} s",
        COOLDOWN_MS / 1000
    );
    assert_eq!(mock.oauth_calls().len(), 1, "only A's attempt");
    assert!(mock.messages_requests().is_empty());
}
