//! SPEC §2, §9, §11: rotated refresh tokens are never lost — the store is written first,
//! then the file (atomically, mode 0600, format and unknown fields kept); a crash between
//! the two writes loses nothing; an older credential never overwrites a newer one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::refresh_support::*;
use common::*;
use serde_json::json;
use std::time::Duration;

const TIER: &str = "supreme";
const FRESH_ACCESS: &str = "sk-ant-oat01-fresh-a1";
const FRESH_REFRESH: &str = "sk-ant-ort01-fresh-a1";

/// `kill -9` right after the store write, before the file write: on restart the store's
/// newer credential wins — used upstream and written back to the file — without another
/// refresh.
#[actix_rt::test]
async fn crash_between_store_and_file_write_loses_no_token() {
    let (mock, env) = setup(&refresh_toml("1s", "300ms", "400ms", 3));
    mock.set_oauth_fixed_answer(Some(oauth_ok(FRESH_ACCESS, FRESH_REFRESH, 36_000)));
    let original = write_expiring(&env, TIER, "a1", now_ms() + 1_500);
    let (key, _) = keygen_offline(&env, TIER, &[]);

    let mut run = ServeProc::start(
        env,
        &[],
        &[],
        &[("CLAUDE_ROUTE_FAILPOINT", "after-credential-store-write")],
    );
    let status = run.wait_exit(Duration::from_secs(6));
    let status = status.unwrap_or_else(|| {
        panic!(
            "the server did not die at the failpoint; {} OAuth calls; log:\n{}",
            mock.oauth_calls().len(),
            run.stderr_lines().join("\n")
        )
    });
    assert!(
        !status.success(),
        "the failpoint aborts the process: {status}"
    );
    assert_eq!(mock.oauth_calls().len(), 1, "one refresh before the crash");
    let env = run.into_env();
    assert_eq!(
        read_account(&env, TIER, "a1"),
        original,
        "the crash happened before the file write, so the file still holds the old pair"
    );

    let server = TestServer::start(env);
    let file = wait_file_access_token(
        &server.env,
        TIER,
        "a1",
        FRESH_ACCESS,
        Duration::from_secs(3),
    );
    let file = file.unwrap_or_else(|| {
        panic!(
            "start-up sync did not rewrite the file with the store's newer credential: {}",
            read_account(&server.env, TIER, "a1")
        )
    });
    let o = oauth_part(&file);
    assert_eq!(o["refreshToken"], FRESH_REFRESH, "{file}");
    assert!(
        o["expiresAt"]
            .as_i64()
            .is_some_and(|e| e > now_ms() + 35_000_000),
        "{file}"
    );
    assert_eq!(o["subscriptionType"], "max", "format kept: {file}");
    assert_eq!(
        file["operatorNote"], "keep-me",
        "unknown fields kept: {file}"
    );
    assert_eq!(file_mode(&server.env.account_path(TIER, "a1")), 0o600);

    let res = server.send_model(&key, SONNET).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(
        mock.last().bearer(),
        Some(FRESH_ACCESS),
        "upstream gets the new token"
    );

    let acc = server.pool_account(TIER, "a1").await;
    let exp = acc["token_expires_at"].as_i64().unwrap_or_default();
    assert!(
        exp > now_ms() + 35_000_000,
        "pool expiry is the new one: {acc}"
    );
    std::thread::sleep(Duration::from_millis(1_000));
    assert_eq!(
        mock.oauth_calls().len(),
        1,
        "no second refresh (the old refresh token was already used)"
    );
}

/// Stopped server, file put back to the old pair by hand: the next start keeps the store's
/// newer credential, rewrites the file and never uses the spent refresh token.
#[actix_rt::test]
async fn older_file_at_start_up_does_not_overwrite_newer_store_credential() {
    let (mock, env) = setup(&refresh_toml("1s", "300ms", "400ms", 3));
    mock.set_oauth_fixed_answer(Some(oauth_ok(FRESH_ACCESS, FRESH_REFRESH, 36_000)));
    let original = write_expiring(&env, TIER, "a1", now_ms() + 1_500);
    let mut server = TestServer::start(env);
    assert!(
        wait_file_access_token(
            &server.env,
            TIER,
            "a1",
            FRESH_ACCESS,
            Duration::from_secs(4)
        )
        .is_some(),
        "a1 was not refreshed"
    );
    let status = server.stop();
    assert!(status.success(), "graceful stop: {status}");

    write_json(&server.env, TIER, "a1", &original);
    server.start_again();
    assert!(
        wait_file_access_token(
            &server.env,
            TIER,
            "a1",
            FRESH_ACCESS,
            Duration::from_secs(3)
        )
        .is_some(),
        "the older file was taken over the store's newer credential: {}",
        read_account(&server.env, TIER, "a1")
    );
    let (key, _) = server.admin_create_key(&json!({"tier": TIER})).await;
    let res = server.send_model(&key, SONNET).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(mock.last().bearer(), Some(FRESH_ACCESS));
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        mock.oauth_calls().len(),
        1,
        "the spent refresh token is never used again"
    );
}

/// A flat-format file is written back flat, with its unknown fields, mode 0600, atomically
/// (no temp file left behind).
#[actix_rt::test]
async fn flat_file_written_back_flat_with_unknown_fields() {
    use std::os::unix::fs::PermissionsExt;
    let (mock, env) = setup(&refresh_toml("1s", "300ms", "400ms", 3));
    let cred = json!({
        "accessToken": access_token("flat1"),
        "refreshToken": common::env::refresh_token("flat1"),
        "expiresAt": now_ms() + 1_500,
        "label": "team-a",
        "nested": {"x": [1, 2, 3]}
    });
    write_json(&env, TIER, "flat1", &cred);
    let path = env.account_path(TIER, "flat1");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let server = TestServer::start(env);

    let v = wait_until(Duration::from_secs(4), || {
        let v = read_account(&server.env, TIER, "flat1");
        (v["accessToken"] == "sk-ant-oat01-new-1").then_some(v)
    });
    let v = v.unwrap_or_else(|| {
        panic!(
            "flat1 not refreshed: {} OAuth calls, file {}",
            mock.oauth_calls().len(),
            read_account(&server.env, TIER, "flat1")
        )
    });
    assert_eq!(v["refreshToken"], "sk-ant-ort01-new-1", "{v}");
    assert!(
        v["expiresAt"]
            .as_i64()
            .is_some_and(|e| e > now_ms() + 3_500_000),
        "{v}"
    );
    assert!(v.get("claudeAiOauth").is_none(), "flat stays flat: {v}");
    assert_eq!(v["label"], "team-a", "{v}");
    assert_eq!(v["nested"], json!({"x": [1, 2, 3]}), "{v}");
    assert_eq!(file_mode(&path), 0o600, "mode after write-back");
    let names: Vec<String> = std::fs::read_dir(server.env.account_dir(TIER))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec!["flat1.json".to_string()],
        "no temp file left behind"
    );
}
