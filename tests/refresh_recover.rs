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

/// Two instances on one Redis, one attempt allowed: the instance that made the failed attempt
/// (A) remembers it. The operator recovers through the other (B), which refreshes; then B goes
/// away. The next refresh is A's to make: the recover, done elsewhere, freed the account for
/// every instance.
#[actix_rt::test]
async fn a_recover_through_another_instance_frees_the_account_here_too() {
    use common::redis_instances::*;
    let redis = RedisServer::start();
    let mock = MockUpstream::start();
    mock.set_oauth_fixed_answer(Some(oauth_server_error()));
    let accounts = SharedAccounts::new();
    accounts.add_expiring(TIER, "s1", now_ms() + 1_500);
    let extra = format!(
        "{}[sync]\ninterval = \"300ms\"\n",
        refresh_toml("2s", "100ms", "200ms", 1)
    );
    let mut servers = start_instances(2, &mock, &redis, &accounts, &extra);
    let failed = wait_until(Duration::from_secs(5), || {
        servers
            .iter()
            .position(|s| !s.log_lines_with("refresh failed: s1: ").is_empty())
    })
    .expect("no instance made the failed attempt");
    let a = servers.remove(failed);
    let mut b = servers.remove(0);

    // Fresh tokens now, each good for 3 s: with a 2 s lead the next refresh is due 1 s later.
    mock.set_oauth_fixed_answer(Some(oauth_ok(
        "sk-ant-oat01-fresh",
        "sk-ant-ort01-fresh",
        3,
    )));
    let res = b.recover("s1").await;
    assert_eq!(res.status, 200, "recover: {}", res.text());
    assert!(
        b.wait_for_log("refresh succeeded: s1", Duration::from_secs(5))
            .is_some(),
        "B did not refresh after the recover; {} OAuth calls",
        mock.oauth_calls().len()
    );
    b.stop();
    let calls = mock.oauth_calls().len();

    assert!(
        a.wait_for_log("refresh succeeded: s1", Duration::from_secs(6))
            .is_some(),
        "A never refreshed the recovered account ({} OAuth calls since B stopped): {}",
        mock.oauth_calls().len() - calls,
        a.pool_account(TIER, "s1").await
    );
}
