//! SPEC §9, §12: `recover` gives an account whose refreshes failed a clean slate — its failure
//! count, cooldown and rejection are reset, so its next refresh is tried at once — on SQLite
//! and on Redis alike (Redis keeps the count shared by every instance).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::redis_server::RedisServer;
use common::refresh_support::*;
use common::*;
use std::time::Duration;

const TIER: &str = "supreme";

/// One failed refresh, then `invalid_grant`: with `max_failures = 2` the account is
/// blacklisted and out of attempts. The operator recovers it; the next refresh is made and
/// its new pair saved.
async fn recover_allows_the_next_refresh(store_toml: &str) {
    let extra = format!("{store_toml}{}", refresh_toml("1s", "300ms", "400ms", 2));
    let (mock, env) = setup(&extra);
    mock.push_oauth_answer(oauth_server_error());
    mock.set_oauth_fixed_answer(Some(oauth_invalid_grant()));
    write_expiring(&env, TIER, "a1", now_ms() + 1_500);
    let server = TestServer::start(env);

    let refused = poll_async(Duration::from_secs(5), || {
        let fut = server.pool_account(TIER, "a1");
        async {
            let acc = fut.await;
            (acc["status"] == "blacklisted" && acc["refresh"]["failures_in_window"] == 2)
                .then_some(acc)
        }
    })
    .await;
    assert!(
        refused.is_some(),
        "a1 never ran out of attempts: {}",
        server.pool_account(TIER, "a1").await
    );
    assert_eq!(mock.oauth_calls().len(), 2, "two failed attempts");

    mock.set_oauth_fixed_answer(None);
    let res = server.recover("a1").await;
    assert_eq!(res.status, 200, "recover: {}", res.text());

    let file = wait_file_access_token(
        &server.env,
        TIER,
        "a1",
        "sk-ant-oat01-new-3",
        Duration::from_secs(3),
    );
    assert!(
        file.is_some(),
        "no refresh after recover; {} OAuth calls; a1: {}",
        mock.oauth_calls().len(),
        server.pool_account(TIER, "a1").await
    );
    let acc = server.pool_account(TIER, "a1").await;
    assert_eq!(acc["status"], "active", "{acc}");
    assert_eq!(acc["refresh"]["failures_in_window"], 0, "{acc}");
}

#[actix_rt::test]
async fn recover_resets_refresh_failures_on_sqlite() {
    recover_allows_the_next_refresh("").await;
}

#[actix_rt::test]
async fn recover_resets_refresh_failures_on_redis() {
    let redis = RedisServer::start();
    recover_allows_the_next_refresh(&redis.store_toml()).await;
}
