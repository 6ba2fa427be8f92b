//! SPEC §11: keys, bindings, slots and revocations survive a restart and a `kill -9`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

async fn send(server: &TestServer, key: &str) -> Resp {
    server
        .post_messages(Some(key), &message_request(SONNET), &[])
        .await
}

/// Sends with `key` and returns the account token used upstream.
async fn account_of(server: &TestServer, mock: &MockUpstream, key: &str) -> String {
    let res = send(server, key).await;
    assert_eq!(res.status, 200, "{}", res.text());
    mock.last().bearer().unwrap_or_default().to_string()
}

/// Two accounts with `slots` each; k1 → a1, k2 → a2 bound by requests.
async fn bound_pair(slots: u32) -> (MockUpstream, TestServer, String, String) {
    let (mock, env) = setup(&format!("[tiers.trial]\nslots = {slots}\n"));
    env.add_account("trial", "a1");
    env.add_account("trial", "a2");
    let (k1, _) = keygen_offline(&env, "trial", &[]);
    let server = TestServer::start(env);
    // A key made through the running server must survive as well.
    let (k2, _) = server.keygen("trial", &[]);
    assert_eq!(account_of(&server, &mock, &k1).await, access_token("a1"));
    assert_eq!(account_of(&server, &mock, &k2).await, access_token("a2"));
    (mock, server, k1, k2)
}

#[actix_rt::test]
async fn graceful_restart_keeps_keys_and_bindings() {
    let (mock, mut server, k1, k2) = bound_pair(2).await;
    server.restart();
    // Were the bindings lost, k2 (asked first) would land on a1, the least-loaded first name.
    assert_eq!(account_of(&server, &mock, &k2).await, access_token("a2"));
    assert_eq!(account_of(&server, &mock, &k1).await, access_token("a1"));
}

#[actix_rt::test]
async fn kill9_keeps_keys_bindings_slots_and_revocations() {
    let (mock, mut server, k1, k2) = bound_pair(1).await;
    let (k3, k3_id) = server.keygen("trial", &[]);
    send(&server, &k3)
        .await
        .assert_error(503, "api_error", "All Trial accounts are at capacity");
    server.cli(&["keys", "revoke", &k3_id]).assert_ok();
    send(&server, &k3)
        .await
        .assert_error(401, "authentication_error", "API key has been revoked");
    let (k4, _) = server.keygen("trial", &[]);

    server.kill9();
    server.start_again();

    assert_eq!(account_of(&server, &mock, &k2).await, access_token("a2"));
    assert_eq!(account_of(&server, &mock, &k1).await, access_token("a1"));
    send(&server, &k3)
        .await
        .assert_error(401, "authentication_error", "API key has been revoked");
    // Both accounts are still full.
    send(&server, &k4)
        .await
        .assert_error(503, "api_error", "All Trial accounts are at capacity");
}

#[actix_rt::test]
async fn graceful_stop_exits_zero() {
    let (_mock, env) = setup("");
    env.add_account("trial", "a1");
    let mut server = TestServer::start(env);
    let status = server.stop();
    assert!(
        status.success(),
        "SIGTERM should end with exit 0, got {status}"
    );
}

/// SPEC §10: an account file removed while the proxy is stopped is forgotten at the next
/// start, as a running sync would forget it: put back later, the account starts clean
/// instead of coming back with its old blacklist entry.
#[actix_rt::test]
async fn an_account_removed_while_stopped_is_forgotten_at_start() {
    let (mock, env) = setup("");
    env.add_account("trial", "a1");
    let mut server = TestServer::start(env);
    server.blacklist_via_401(&mock, "trial", "a1").await;

    server.stop();
    std::fs::remove_file(server.env.account_path("trial", "a1")).unwrap();
    server.start_again();
    assert!(
        server
            .logs_since_start()
            .iter()
            .any(|l| l.contains("removed account: a1 (trial)")),
        "{:#?}",
        server.logs_since_start()
    );

    // Put back; the graceful stop has written the forgetting.
    server.env.add_account("trial", "a1");
    server.restart();
    let a1 = server.pool_account("trial", "a1").await;
    assert_eq!(a1["status"], "active", "{a1}");
    assert!(a1["blacklist_reason"].is_null(), "{a1}");
}
