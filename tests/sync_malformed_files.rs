//! SPEC §2, §10: a malformed file of an account the proxy already serves is skipped with a
//! warning — never taken for a removed file. The account keeps its keys, blacklist entry,
//! usage and the credential already held, and the file stays byte for byte as it is: after a
//! sync, after a restart, and with Redis as the store. Only a file that is gone removes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::redis_instances::{start_instance, wait_pool_accounts, SharedAccounts};
use common::redis_server::RedisServer;
use common::refresh_support::*;
use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

/// 2 slots per account.
const TIER: &str = "supreme";
/// Half a file, as an editor or a copy cut short leaves it.
const GARBAGE: &[u8] = b"{\"claudeAiOauth\": {\"accessToken\": \"sk-ant-oat01-cut";

async fn bearer_of(server: &TestServer, mock: &MockUpstream, key: &str) -> String {
    let res = server.send_model(key, SONNET).await;
    assert_eq!(res.status, 200, "{}", res.text());
    mock.last().bearer().unwrap_or_default().to_string()
}

fn assert_untouched(path: &Path) {
    assert_eq!(
        std::fs::read(path).unwrap(),
        GARBAGE,
        "{}: a malformed file is never rewritten",
        path.display()
    );
}

fn assert_skipped_only(answer: &Value) {
    assert_eq!(
        sync_counts(answer),
        [0, 0, 0, 1],
        "(added, updated, removed, skipped): {answer}"
    );
}

/// The start-up sync of the current process ended with `counts` (e.g. `removed=0 skipped=1`).
fn assert_startup_sync(server: &TestServer, counts: &str) {
    server.wait_startup_sync();
    let line = server
        .logs_since_start()
        .into_iter()
        .find(|l| l.contains("sync finished:"))
        .unwrap_or_default();
    assert!(line.contains(counts), "start-up sync: {line}");
}

/// a1 serves a key (its slot taken, usage counted); its file breaks; a sync skips the file
/// and the key keeps going to a1 — never re-bound to a2, the slot never freed.
#[actix_rt::test]
async fn sync_keeps_an_account_whose_file_broke() {
    let (mock, env) = setup("");
    env.add_account(TIER, "a1");
    env.add_account(TIER, "a2");
    let server = TestServer::start(env);
    server.wait_startup_sync();
    let (key, _) = server.admin_create_key(&json!({"tier": TIER})).await;
    assert_eq!(bearer_of(&server, &mock, &key).await, access_token("a1"));
    // Usage is settled as the answer ends, just after it was sent: wait until it is counted.
    let counted = usage_json(1, 10, 5, 2, 3);
    assert_eq!(
        server.wait_account_usage(TIER, "a1", &counted).await,
        counted
    );
    let before = server.pool_account(TIER, "a1").await;

    let path = server.env.write_account_file(TIER, "a1.json", GARBAGE);
    assert_skipped_only(&server.sync_now().await);
    assert!(
        server
            .wait_for_log("a1.json", Duration::from_secs(1))
            .is_some_and(|l| l.contains("skipping account file")),
        "no warning naming the file"
    );

    let after = server.pool_account(TIER, "a1").await;
    assert_eq!(after["slots_used"], 1, "the slot stays taken: {after}");
    assert_eq!(after["status"], "active", "{after}");
    assert_eq!(after["usage"], before["usage"], "usage kept: {after}");
    assert_eq!(
        bearer_of(&server, &mock, &key).await,
        access_token("a1"),
        "the key stays on a1 with the credential already held"
    );
    assert_eq!(server.pool_account(TIER, "a2").await["slots_used"], 0);
    assert_untouched(&path);
}

/// The same across a restart on the embedded store: the account is loaded with the stored
/// credential, its key stays bound and its blacklist entry stays.
#[actix_rt::test]
async fn restart_keeps_accounts_whose_files_broke() {
    let (mock, env) = setup("");
    env.add_account(TIER, "a1");
    env.add_account(TIER, "a2");
    env.add_account(TIER, "a3");
    let mut server = TestServer::start(env);
    server.wait_startup_sync();
    let (key, _) = server.admin_create_key(&json!({"tier": TIER})).await;
    assert_eq!(bearer_of(&server, &mock, &key).await, access_token("a1"));
    server.blacklist_via_401(&mock, TIER, "a2").await;

    let broken = [
        server.env.write_account_file(TIER, "a1.json", GARBAGE),
        server.env.write_account_file(TIER, "a2.json", GARBAGE),
    ];
    server.restart();
    assert_startup_sync(&server, "removed=0 skipped=2");

    let a1 = server.pool_account(TIER, "a1").await;
    assert_eq!(a1["slots_used"], 1, "the binding survived: {a1}");
    assert_eq!(
        bearer_of(&server, &mock, &key).await,
        access_token("a1"),
        "the key stays on a1, not re-bound to a3"
    );
    let a2 = server.pool_account(TIER, "a2").await;
    assert_eq!(a2["status"], "blacklisted", "blacklist kept: {a2}");
    assert_eq!(a2["slots_used"], 1, "its fixed key keeps the slot: {a2}");
    assert_eq!(server.pool_account(TIER, "a3").await["slots_used"], 0);
    for path in &broken {
        assert_untouched(path);
    }

    // Only a file that is really gone removes the account.
    std::fs::remove_file(&broken[0]).unwrap();
    let answer = server.sync_now().await;
    assert_eq!(sync_counts(&answer), [0, 0, 1, 1], "{answer}");
    assert!(server.pool_account_opt(TIER, "a1").await.is_none());
    assert_eq!(bearer_of(&server, &mock, &key).await, access_token("a3"));
}

/// Redis: a sync — and the sync of a restarted instance — keep the account and its key.
#[actix_rt::test]
async fn redis_keeps_an_account_whose_file_broke() {
    let redis = RedisServer::start();
    let mock = MockUpstream::start();
    let accounts = SharedAccounts::new();
    accounts.add_account(TIER, "a1");
    accounts.add_account(TIER, "a2");
    let mut server = start_instance(&mock, &redis, &accounts, "");
    assert!(wait_pool_accounts(&server, TIER, &["a1", "a2"], Duration::from_secs(10)).await);
    server.wait_startup_sync();
    let (key, _) = server.admin_create_key(&json!({"tier": TIER})).await;
    assert_eq!(bearer_of(&server, &mock, &key).await, access_token("a1"));

    let path = accounts.account_path(TIER, "a1");
    std::fs::write(&path, GARBAGE).unwrap();
    assert_skipped_only(&server.sync_now().await);
    let a1 = server.pool_account(TIER, "a1").await;
    assert_eq!(a1["slots_used"], 1, "the slot stays taken: {a1}");
    assert_eq!(bearer_of(&server, &mock, &key).await, access_token("a1"));

    server.restart();
    assert_startup_sync(&server, "removed=0 skipped=1");
    assert_eq!(server.pool_account(TIER, "a1").await["slots_used"], 1);
    assert_eq!(bearer_of(&server, &mock, &key).await, access_token("a1"));
    assert_untouched(&path);
}
