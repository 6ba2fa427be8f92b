//! SPEC §9, §14: the RefreshCoordinator refreshes every account before its token expires,
//! one at a time, a success lock apart; nothing secret reaches the log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::env::refresh_token;
use common::refresh_support::*;
use common::*;
use serde_json::json;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const TIER: &str = "supreme";

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// `count` accounts (`<prefix>00`, `<prefix>01`, …) whose tokens all expire `in_ms` from now:
/// their names and the instant they expire.
fn expiring_together(
    env: &TestEnv,
    prefix: &str,
    count: usize,
    in_ms: i64,
) -> (Vec<String>, Instant) {
    let names: Vec<String> = (0..count).map(|i| format!("{prefix}{i:02}")).collect();
    let clock = Clock::now();
    let expires_at = now_ms() + in_ms;
    for name in &names {
        write_expiring(env, TIER, name, expires_at);
    }
    (names, clock.instant_of(expires_at))
}

/// Waits, at most until `deadline`, for every named account file to hold a new token.
fn all_refreshed_by(server: &TestServer, names: &[String], deadline: Instant) -> bool {
    wait_until(deadline.saturating_duration_since(Instant::now()), || {
        names
            .iter()
            .all(|n| {
                oauth_part(&read_account(&server.env, TIER, n))["accessToken"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("sk-ant-oat01-new-"))
            })
            .then_some(())
    })
    .is_some()
}

/// Ten accounts whose tokens expire together, 5 s from now: all are refreshed before expiry,
/// each with its own refresh token, successive refreshes at least one success lock apart;
/// the files hold the new pair in their original format and the pool shows the new expiry.
#[actix_rt::test]
async fn ten_accounts_expiring_together_are_all_refreshed_in_time() {
    let success_lock = Duration::from_millis(300);
    let (mock, env) = setup(&refresh_toml("500ms", "300ms", "400ms", 3));
    let (names, deadline) = expiring_together(&env, "acc", 10, 5_000);
    let server = TestServer::start(env);

    // Every file holds a new token before the old ones expire.
    let all_new = all_refreshed_by(&server, &names, deadline);
    let calls = mock.oauth_calls();
    assert!(
        all_new,
        "not every account file was refreshed before the tokens expired; {} OAuth calls so far",
        calls.len()
    );

    // No further refresh is needed for an hour.
    std::thread::sleep(Duration::from_millis(800));
    let calls = mock.oauth_calls();
    assert_eq!(calls.len(), 10, "exactly one refresh per account");

    // Each call carries one account's refresh token, the client id and the grant type.
    let mut seen = BTreeSet::new();
    let mut account_of_call = Vec::new();
    for call in &calls {
        assert_eq!(call.method, "POST");
        let body = call.json();
        assert_eq!(body["grant_type"], "refresh_token", "{body}");
        assert_eq!(body["client_id"], OAUTH_CLIENT_ID, "{body}");
        let rt = call_refresh_token(call);
        let name = names
            .iter()
            .find(|n| refresh_token(n) == rt)
            .unwrap_or_else(|| panic!("refresh call with an unknown refresh token: {rt}"))
            .clone();
        assert!(seen.insert(name.clone()), "{name} refreshed twice");
        assert!(
            call.at < deadline,
            "{name} refreshed after its token expired"
        );
        account_of_call.push(name);
    }

    // One at a time, each success followed by the success lock.
    for pair in calls.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(
            gap + Duration::from_millis(2) >= success_lock,
            "refreshes only {} ms apart (success lock {} ms); call times: {:?}",
            ms(gap),
            ms(success_lock),
            calls
                .windows(2)
                .map(|p| ms(p[1].at.duration_since(p[0].at)))
                .collect::<Vec<_>>()
        );
    }

    // The files: the pair the mock issued for that account's call, format and extras kept.
    let now = now_ms();
    let view = server.pool_view().await;
    for (i, name) in account_of_call.iter().enumerate() {
        let n = i + 1;
        let v = read_account(&server.env, TIER, name);
        let o = oauth_part(&v);
        assert_eq!(
            o["accessToken"],
            format!("sk-ant-oat01-new-{n}"),
            "{name}: {v}"
        );
        assert_eq!(
            o["refreshToken"],
            format!("sk-ant-ort01-new-{n}"),
            "{name}: {v}"
        );
        let exp = o["expiresAt"]
            .as_i64()
            .unwrap_or_else(|| panic!("{name}: {v}"));
        assert!(
            exp > now + 3_500_000 && exp <= now + 3_600_000,
            "{name}: expiresAt {exp} is not about an hour ahead of {now}"
        );
        assert_eq!(
            o["scopes"],
            json!(["user:inference", "user:profile"]),
            "{v}"
        );
        assert_eq!(o["subscriptionType"], "max", "{v}");
        assert_eq!(o["rateLimitTier"], "default_claude_max_20x", "{v}");
        assert_eq!(v["operatorNote"], "keep-me", "unknown fields kept: {v}");
        assert!(v.get("accessToken").is_none(), "format kept: {v}");
        let path = server.env.account_path(TIER, name);
        assert_eq!(file_mode(&path), 0o600, "{} mode", path.display());

        let acc = find_pool_account(&view, TIER, name)
            .unwrap_or_else(|| panic!("{name} missing from the pool: {view}"));
        let pool_exp = acc["token_expires_at"]
            .as_i64()
            .unwrap_or_else(|| panic!("token_expires_at is not ms: {acc}"));
        assert!(
            pool_exp > now + 3_500_000 && pool_exp <= now + 3_600_000,
            "{name}: token_expires_at {pool_exp} not moved ~1 h ahead of {now}: {acc}"
        );
        assert_eq!(acc["refresh"]["failures_in_window"], 0, "{acc}");
        assert!(
            server
                .log_lines_with(&format!("refresh succeeded: {name}"))
                .len()
                == 1,
            "log line `refresh succeeded: {name}` expected once"
        );
    }

    // The proxy uses the new token upstream.
    let (key, _) = server.admin_create_key(&json!({"tier": TIER})).await;
    let res = server.send_model(&key, SONNET).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let bearer = mock.last().bearer().unwrap_or_default().to_string();
    assert!(
        bearer.starts_with("sk-ant-oat01-new-"),
        "upstream still got an old token: {bearer}"
    );
}

/// A slow token endpoint (200 ms per answer) on top of a 300 ms success lock: six accounts
/// expiring together still all get their new tokens before expiry, because the plan leaves
/// room for each attempt's round trip and not just for the lock.
#[actix_rt::test]
async fn slow_token_endpoint_still_refreshes_everyone_in_time() {
    let answer_time = Duration::from_millis(200);
    let (mock, env) = setup(&refresh_toml("1s", "300ms", "400ms", 3));
    mock.set_oauth_delay(answer_time);
    let (names, deadline) = expiring_together(&env, "slow", 6, 5_000);
    let server = TestServer::start(env);

    let all_new = all_refreshed_by(&server, &names, deadline);
    let calls = mock.oauth_calls();
    assert!(
        all_new,
        "not every account was refreshed before its token expired; calls at {:?} ms before expiry",
        calls
            .iter()
            .map(|c| ms(deadline.saturating_duration_since(c.at)))
            .collect::<Vec<_>>()
    );
    assert_eq!(calls.len(), names.len(), "exactly one refresh per account");
    for pair in calls.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(
            gap + Duration::from_millis(2) >= answer_time + Duration::from_millis(300),
            "a refresh started {} ms after the previous one, inside its answer time plus the lock",
            ms(gap)
        );
    }
}

/// Two accounts due within the lock's reach (a 1 s success lock, tokens expiring 1.2 s from
/// now): the second refresh waits for the lock (and is not charged for it).
#[actix_rt::test]
async fn success_lock_spaces_refreshes() {
    let (mock, env) = setup(&refresh_toml("500ms", "1s", "400ms", 3));
    let expires_at = now_ms() + 1_200;
    write_expiring(&env, TIER, "a1", expires_at);
    write_expiring(&env, TIER, "a2", expires_at);
    let server = TestServer::start(env);

    let first = wait_oauth_calls(&mock, 1, Duration::from_secs(4)).expect("a first refresh");
    let first_at = first[0].at;
    // While the lock holds, the status shows it.
    assert!(
        server
            .wait_for_log("refresh succeeded:", Duration::from_millis(500))
            .is_some(),
        "first refresh did not succeed"
    );
    let status = server.status_view().await;
    let lock_until = status["refresh"]["lock_until"].as_i64();
    assert!(
        lock_until.is_some_and(|t| t > now_ms()),
        "status shows no global lock right after a success: {status}"
    );

    let calls = wait_oauth_calls(&mock, 2, Duration::from_secs(4)).expect("a second refresh");
    let gap = calls[1].at.duration_since(first_at);
    assert!(
        gap >= Duration::from_millis(1_000),
        "second refresh only {} ms after the first (lock 1 s)",
        gap.as_millis()
    );
    let tokens: BTreeSet<String> = calls.iter().map(call_refresh_token).collect();
    let want: BTreeSet<String> = [refresh_token("a1"), refresh_token("a2")].into();
    assert_eq!(tokens, want, "each account refreshed once");
    assert!(
        server
            .wait_for_log("refresh blocked by global lock", Duration::from_secs(1))
            .is_some(),
        "no `refresh blocked by global lock` in the log"
    );
    // Waiting for the lock is not charged.
    assert!(
        server
            .wait_for_log("refresh succeeded: a2", Duration::from_secs(1))
            .is_some()
            && server
                .wait_for_log("refresh succeeded: a1", Duration::from_secs(1))
                .is_some(),
        "both refreshes succeed"
    );
    for name in ["a1", "a2"] {
        let acc = server.pool_account(TIER, name).await;
        assert_eq!(acc["refresh"]["failures_in_window"], 0, "{acc}");
        assert!(acc["refresh"]["cooldown_until"].is_null(), "{acc}");
    }
    assert!(server.log_lines_with("refresh failed:").is_empty());
}

/// A refresh cycle (one failed attempt, then successes), requests through the proxy and a
/// sync: no token, old or new, and no full key ever appears in the log.
#[actix_rt::test]
async fn no_token_reaches_the_log() {
    let (mock, env) = setup(&refresh_toml("500ms", "200ms", "300ms", 3));
    let expires_at = now_ms() + 1_500;
    write_expiring(&env, TIER, "s1", expires_at);
    write_expiring(&env, TIER, "s2", expires_at);
    mock.push_oauth_answer(oauth_server_error());
    let server = TestServer::start(env);
    let (key, _) = server.admin_create_key(&json!({"tier": TIER})).await;
    assert_eq!(server.send_model(&key, SONNET).await.status, 200);

    for name in ["s1", "s2"] {
        assert!(
            server
                .wait_for_log(
                    &format!("refresh succeeded: {name}"),
                    Duration::from_secs(6)
                )
                .is_some(),
            "{name} was not refreshed"
        );
    }
    assert!(
        server
            .wait_for_log("refresh failed:", Duration::from_millis(100))
            .is_some(),
        "the first attempt failed"
    );
    assert_eq!(server.send_model(&key, SONNET).await.status, 200);
    server.sync_now().await;
    assert!(server
        .wait_for_log("sync finished:", Duration::from_secs(2))
        .is_some());

    let calls = mock.oauth_calls();
    let mut secrets = vec![
        access_token("s1"),
        access_token("s2"),
        refresh_token("s1"),
        refresh_token("s2"),
        key.clone(),
    ];
    for n in 1..=calls.len() {
        secrets.push(format!("sk-ant-oat01-new-{n}"));
        secrets.push(format!("sk-ant-ort01-new-{n}"));
    }
    let logs = server.logs();
    for line in &logs {
        for secret in &secrets {
            assert!(
                !line.contains(secret.as_str()),
                "log line leaks a secret ({secret}): {line}"
            );
        }
    }
}
