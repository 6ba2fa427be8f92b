//! SPEC §10, §13, §14: the SyncActor — on demand (`POST /admin/sync`, CLI `sync`) and on its
//! interval — adds new account files, takes newer files (and a setup token put in place of
//! another credential), keeps the store's newer credential over an older file, removes
//! accounts whose files are gone, skips malformed files (see also sync_malformed_files.rs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::env::refresh_token;
use common::refresh_support::*;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const TIER: &str = "supreme";

fn last_bearer(mock: &MockUpstream) -> String {
    mock.last().bearer().unwrap_or_default().to_string()
}

async fn send_ok(server: &TestServer, key: &str) {
    let res = server.send_model(key, SONNET).await;
    assert_eq!(res.status, 200, "{}", res.text());
}

fn assert_counts(answer: &Value, want: [u64; 4]) {
    assert_eq!(
        sync_counts(answer),
        want,
        "sync answer (added, updated, removed, skipped): {answer}"
    );
    let finished = answer["finished_at"]
        .as_i64()
        .unwrap_or_else(|| panic!("no finished_at (ms) in {answer}"));
    assert!(
        (now_ms() - finished).abs() < 10_000,
        "finished_at {finished} is not about now: {answer}"
    );
}

/// A file added while the server runs: `POST /admin/sync` → added=1, a key binds to the new
/// account, and it is scheduled for refresh.
#[actix_rt::test]
async fn new_file_is_added_bindable_and_scheduled() {
    let (mock, env) = setup(&refresh_toml("500ms", "300ms", "400ms", 3));
    env.add_account(TIER, "a1");
    let server = TestServer::start(env);
    server.wait_startup_sync();
    // Fill a1 (supreme: 2 slots).
    for _ in 0..2 {
        let (key, _) = server.admin_create_key(&json!({"tier": TIER})).await;
        send_ok(&server, &key).await;
        assert_eq!(last_bearer(&mock), access_token("a1"));
    }

    write_expiring(&server.env, TIER, "a2", now_ms() + 2_500);
    let answer = server.sync_now().await;
    assert_counts(&answer, [1, 0, 0, 0]);
    assert!(
        server
            .wait_for_log(
                "sync finished: added=1 updated=0 removed=0 skipped=0",
                Duration::from_secs(1)
            )
            .is_some(),
        "no `sync finished: added=1 …` log line"
    );
    let acc = server.pool_account(TIER, "a2").await;
    assert_eq!(acc["status"], "active", "{acc}");

    let (key, _) = server.admin_create_key(&json!({"tier": TIER})).await;
    send_ok(&server, &key).await;
    assert_eq!(
        last_bearer(&mock),
        access_token("a2"),
        "the third key binds to a2"
    );

    // Scheduled for refresh: refreshed before its token expires.
    let calls = wait_oauth_calls(&mock, 1, Duration::from_secs(4)).expect("a2 refreshed");
    assert_eq!(call_refresh_token(&calls[0]), refresh_token("a2"));
    assert!(
        wait_file_access_token(
            &server.env,
            TIER,
            "a2",
            "sk-ant-oat01-new-1",
            Duration::from_secs(2)
        )
        .is_some(),
        "a2's file holds the refreshed token"
    );
}

/// A file replaced with a newer credential → updated=1 and upstream sees the new token.
#[actix_rt::test]
async fn newer_file_is_taken() {
    let (mock, env) = setup("");
    env.add_account(TIER, "a1");
    let server = TestServer::start(env);
    server.wait_startup_sync();
    let (key, _) = server.admin_create_key(&json!({"tier": TIER})).await;
    send_ok(&server, &key).await;
    assert_eq!(last_bearer(&mock), access_token("a1"));

    let newer = claude_code_with(
        "sk-ant-oat01-a1-v2",
        "sk-ant-ort01-a1-v2",
        now_ms() + 7_200_000,
    );
    replace_json(&server.env, TIER, "a1", &newer);
    let answer = server.sync_now().await;
    assert_counts(&answer, [0, 1, 0, 0]);
    send_ok(&server, &key).await;
    assert_eq!(
        last_bearer(&mock),
        "sk-ant-oat01-a1-v2",
        "upstream uses the newer token"
    );
    assert_eq!(
        read_account(&server.env, TIER, "a1"),
        newer,
        "the file is left as written"
    );
    let acc = server.pool_account(TIER, "a1").await;
    let exp = acc["token_expires_at"].as_i64().unwrap_or_default();
    assert!(
        exp > now_ms() + 7_000_000,
        "pool shows the newer expiry: {acc}"
    );
    assert!(mock.oauth_calls().is_empty());
}

/// A file edited by hand back to an OLDER credential than the store holds (after a
/// refresh rotated it): sync keeps the newer one and rewrites the file with it.
#[actix_rt::test]
async fn older_file_is_overwritten_by_the_store() {
    let (mock, env) = setup(&refresh_toml("1s", "300ms", "400ms", 3));
    let original = write_expiring(&env, TIER, "a1", now_ms() + 1_500);
    let server = TestServer::start(env);
    server.wait_startup_sync();
    assert!(
        wait_file_access_token(
            &server.env,
            TIER,
            "a1",
            "sk-ant-oat01-new-1",
            Duration::from_secs(4)
        )
        .is_some(),
        "a1 was not refreshed"
    );
    // The pool takes the new pair last (store, file, then pool).
    server
        .wait_pool_expiry_after(TIER, "a1", now_ms() + 3_000_000)
        .await;
    let (key, _) = server.admin_create_key(&json!({"tier": TIER})).await;
    send_ok(&server, &key).await;
    assert_eq!(last_bearer(&mock), "sk-ant-oat01-new-1");

    replace_json(&server.env, TIER, "a1", &original);
    let answer = server.sync_now().await;
    assert_counts(&answer, [0, 1, 0, 0]);
    let file = wait_file_access_token(
        &server.env,
        TIER,
        "a1",
        "sk-ant-oat01-new-1",
        Duration::from_secs(2),
    );
    let file = file.unwrap_or_else(|| {
        panic!(
            "the file was not rewritten with the store's newer credential: {}",
            read_account(&server.env, TIER, "a1")
        )
    });
    assert_eq!(
        oauth_part(&file)["refreshToken"],
        "sk-ant-ort01-new-1",
        "{file}"
    );
    assert_eq!(file["operatorNote"], "keep-me", "{file}");
    send_ok(&server, &key).await;
    assert_eq!(
        last_bearer(&mock),
        "sk-ant-oat01-new-1",
        "upstream keeps the newer token"
    );
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        mock.oauth_calls().len(),
        1,
        "the spent refresh token is never used"
    );
}

/// A setup token (no `expiresAt`, no refresh token) put over an account's OAuth file: the
/// operator's new credential wins over the store's — served at once, the file left as
/// written, and stored, so a restart serves it too.
#[actix_rt::test]
async fn setup_token_file_replaces_the_stored_credential() {
    let (mock, env) = setup("");
    env.add_account(TIER, "a1");
    let mut server = TestServer::start(env);
    server.wait_startup_sync();
    let (key, _) = server.admin_create_key(&json!({"tier": TIER})).await;
    send_ok(&server, &key).await;
    assert_eq!(last_bearer(&mock), access_token("a1"));

    let setup_token = br#"{"accessToken":"sk-ant-oat01-a1-setup"}"#;
    let path = server.env.write_account_file(TIER, "a1.json", setup_token);
    let answer = server.sync_now().await;
    assert_counts(&answer, [0, 1, 0, 0]);
    send_ok(&server, &key).await;
    assert_eq!(last_bearer(&mock), "sk-ant-oat01-a1-setup");
    let acc = server.pool_account(TIER, "a1").await;
    assert_eq!(acc["token_expires_at"], Value::Null, "{acc}");
    assert_eq!(acc["refreshable"], false, "{acc}");

    server.stop();
    let stored = claude_route::store::SqliteStore::open(&server.env.db_path())
        .and_then(|s| s.load_all())
        .unwrap();
    let held = &stored.credentials[&(TIER.to_string(), "a1".to_string())];
    assert_eq!(
        held.access_token, "sk-ant-oat01-a1-setup",
        "the store took it"
    );
    server.start_again();
    server.wait_startup_sync();
    send_ok(&server, &key).await;
    assert_eq!(last_bearer(&mock), "sk-ant-oat01-a1-setup");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        setup_token.to_vec(),
        "the setup-token file is never rewritten"
    );
    assert!(
        mock.oauth_calls().is_empty(),
        "a setup token is never refreshed"
    );
}

/// A file removed → removed=1, the account leaves the pool, its keys re-bind on their next
/// request.
#[actix_rt::test]
async fn removed_file_drops_the_account_and_rebinds_keys() {
    let (mock, env) = setup("");
    env.add_account(TIER, "a1");
    env.add_account(TIER, "a2");
    let server = TestServer::start(env);
    server.wait_startup_sync();
    let (key, _) = server.admin_create_key(&json!({"tier": TIER})).await;
    send_ok(&server, &key).await;
    let bound = last_bearer(&mock);
    let (gone, other) = if bound == access_token("a1") {
        ("a1", "a2")
    } else {
        assert_eq!(bound, access_token("a2"));
        ("a2", "a1")
    };

    std::fs::remove_file(server.env.account_path(TIER, gone)).unwrap();
    let answer = server.sync_now().await;
    assert_counts(&answer, [0, 0, 1, 0]);
    assert!(
        server.pool_account_opt(TIER, gone).await.is_none(),
        "{gone} still in the pool: {}",
        server.pool_view().await
    );
    send_ok(&server, &key).await;
    assert_eq!(
        last_bearer(&mock),
        access_token(other),
        "the key re-bound to {other}"
    );
    send_ok(&server, &key).await;
    assert_eq!(last_bearer(&mock), access_token(other), "and stays there");
    let acc = server.pool_account(TIER, other).await;
    assert_eq!(acc["slots_used"], 1, "{acc}");
}

/// A malformed file → skipped=1; it is neither deleted nor rewritten; the server keeps
/// serving.
#[actix_rt::test]
async fn malformed_file_is_skipped() {
    let (_mock, env) = setup("");
    env.add_account(TIER, "a1");
    let server = TestServer::start(env);
    server.wait_startup_sync();
    let bad = server
        .env
        .write_account_file(TIER, "broken.json", b"{\"claudeAiOauth\": {not json");
    let answer = server.sync_now().await;
    assert_counts(&answer, [0, 0, 0, 1]);
    assert_eq!(
        std::fs::read(&bad).unwrap(),
        b"{\"claudeAiOauth\": {not json".to_vec(),
        "a malformed file is never rewritten"
    );
    assert!(server.pool_account_opt(TIER, "broken").await.is_none());
    let (key, _) = server.admin_create_key(&json!({"tier": TIER})).await;
    send_ok(&server, &key).await;
    assert!(
        server
            .wait_for_log(
                "sync finished: added=0 updated=0 removed=0 skipped=1",
                Duration::from_secs(1)
            )
            .is_some(),
        "no `sync finished: … skipped=1` log line"
    );
}

/// CLI `sync` prints the counts (readable and `--json`), and the server logs them.
#[actix_rt::test]
async fn cli_sync_prints_and_logs_the_counts() {
    let (_mock, env) = setup("");
    env.add_account(TIER, "a1");
    let server = TestServer::start(env);
    server.wait_startup_sync();
    server.env.add_account(TIER, "a2");
    let out = server.cli(&["sync"]);
    out.assert_ok();
    assert!(
        out.stdout
            .contains("sync finished: added=1 updated=0 removed=0 skipped=0"),
        "CLI output: {}",
        out.all()
    );
    assert!(
        server
            .wait_for_log(
                "sync finished: added=1 updated=0 removed=0 skipped=0",
                Duration::from_secs(1)
            )
            .is_some(),
        "server log has no `sync finished: added=1 …`"
    );
    assert!(server.pool_account_opt(TIER, "a2").await.is_some());

    server.env.add_account(TIER, "a3");
    let out = server.cli(&["sync", "--json"]);
    out.assert_ok();
    let objs = parse_json_objects(&out.stdout);
    assert_eq!(objs.len(), 1, "one JSON object: {}", out.stdout);
    assert_eq!(sync_counts(&objs[0]), [1, 0, 0, 0], "{}", objs[0]);
}

/// `[sync] interval`: a new file is picked up without any sync call.
#[actix_rt::test]
async fn interval_sync_picks_up_new_files() {
    let (_mock, env) = setup("[sync]\ninterval = \"500ms\"\n");
    env.add_account(TIER, "a1");
    let server = TestServer::start(env);
    server.wait_startup_sync();
    server.env.add_account(TIER, "a2");
    let found = poll_async(Duration::from_secs(3), || {
        server.pool_account_opt(TIER, "a2")
    })
    .await;
    assert!(found.is_some(), "a2 not picked up by the interval sync");
    assert!(
        server
            .wait_for_log("sync finished: added=1", Duration::from_secs(1))
            .is_some(),
        "no `sync finished: added=1` log line from the interval sync"
    );
}
