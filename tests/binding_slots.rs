//! SPEC §4–§5: keys bind to the least-loaded account of their tier, capacity is exact,
//! fixed keys, tier model rules, revocation frees a slot.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use futures_util::future::join_all;
use std::collections::BTreeMap;
use std::time::Duration;

async fn send(server: &TestServer, key: &str) -> Resp {
    server
        .post_messages(Some(key), &message_request(SONNET), &[])
        .await
}

/// The account bearer token of the last upstream request.
fn last_bearer(mock: &MockUpstream) -> String {
    mock.last().bearer().unwrap_or_default().to_string()
}

#[actix_rt::test]
async fn eighth_key_gets_capacity_error() {
    let (mock, env) = setup("");
    env.add_account("trial", "a1");
    let keys: Vec<String> = (0..8)
        .map(|_| keygen_offline(&env, "trial", &[]).0)
        .collect();
    let server = TestServer::start(env);
    for (i, key) in keys[..7].iter().enumerate() {
        let res = send(&server, key).await;
        assert_eq!(res.status, 200, "key {}: {}", i + 1, res.text());
        let line = format!("assigned to account: a1 (slots: {}/7)", i + 1);
        assert!(
            server.wait_for_log(&line, Duration::from_secs(2)).is_some(),
            "log line `{line}` missing"
        );
    }
    let res = send(&server, &keys[7]).await;
    res.assert_error(503, "api_error", "All Trial accounts are at capacity");
    assert_eq!(
        mock.messages_requests().len(),
        7,
        "the 8th never reached upstream"
    );
    // Bound keys keep working.
    assert_eq!(send(&server, &keys[0]).await.status, 200);
}

#[actix_rt::test]
async fn keys_spread_to_the_least_loaded_account() {
    let (mock, env) = setup("[tiers.trial]\nslots = 2\n");
    // Written in reverse order: ties go to the name, not the file order.
    env.add_account("trial", "b-acc");
    env.add_account("trial", "a-acc");
    let keys: Vec<String> = (0..5)
        .map(|_| keygen_offline(&env, "trial", &[]).0)
        .collect();
    let server = TestServer::start(env);
    let expected = ["a-acc", "b-acc", "a-acc", "b-acc"];
    for (key, account) in keys.iter().zip(expected) {
        let res = send(&server, key).await;
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(last_bearer(&mock), access_token(account));
    }
    send(&server, &keys[4]).await.assert_error(
        503,
        "api_error",
        "All Trial accounts are at capacity",
    );
    // Bindings are permanent.
    for (key, account) in keys.iter().zip(expected) {
        assert_eq!(send(&server, key).await.status, 200);
        assert_eq!(last_bearer(&mock), access_token(account));
    }
}

#[actix_rt::test]
async fn concurrent_first_requests_never_overfill_accounts() {
    let (mock, env) = setup("");
    env.add_account("trial", "a1");
    env.add_account("trial", "a2");
    let server = TestServer::start(env);
    let mut keys = Vec::new();
    for _ in 0..50 {
        let (key, _) = server
            .admin_create_key(&serde_json::json!({"tier": "trial"}))
            .await;
        keys.push(key);
    }
    let results = join_all(keys.iter().map(|k| send(&server, k))).await;
    let ok: Vec<usize> = (0..50).filter(|&i| results[i].status == 200).collect();
    assert_eq!(ok.len(), 14, "exactly 2 × 7 keys are served");
    for res in results.iter().filter(|r| r.status != 200) {
        res.assert_error(503, "api_error", "All Trial accounts are at capacity");
    }
    let mut per_account: BTreeMap<String, usize> = BTreeMap::new();
    for r in mock.messages_requests() {
        *per_account
            .entry(r.bearer().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    let want: BTreeMap<String, usize> = [(access_token("a1"), 7), (access_token("a2"), 7)]
        .into_iter()
        .collect();
    assert_eq!(per_account, want, "one request per key, 7 keys per account");

    // Again: every served key stays where it is, every refused key is still refused.
    mock.clear();
    let again = join_all(keys.iter().map(|k| send(&server, k))).await;
    for (i, res) in again.iter().enumerate() {
        let was_ok = ok.contains(&i);
        assert_eq!(res.status == 200, was_ok, "key {i}: {}", res.text());
    }
    let mut per_account: BTreeMap<String, usize> = BTreeMap::new();
    for r in mock.messages_requests() {
        *per_account
            .entry(r.bearer().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    assert_eq!(
        per_account, want,
        "second round: same accounts, same counts"
    );
}

#[actix_rt::test]
async fn fixed_key_occupies_its_slot_at_once() {
    let (mock, env) = setup("[tiers.trial]\nslots = 1\n");
    env.add_account("trial", "a1");
    env.add_account("trial", "a2");
    let (fixed, _) = keygen_offline(&env, "trial", &["--account", "a1"]);
    let (pool1, _) = keygen_offline(&env, "trial", &[]);
    let (pool2, _) = keygen_offline(&env, "trial", &[]);
    let server = TestServer::start(env);

    // The fixed key has not been used, yet a1 is full: the pool key goes to a2.
    assert_eq!(send(&server, &pool1).await.status, 200);
    assert_eq!(last_bearer(&mock), access_token("a2"));
    send(&server, &pool2).await.assert_error(
        503,
        "api_error",
        "All Trial accounts are at capacity",
    );
    assert_eq!(send(&server, &fixed).await.status, 200);
    assert_eq!(last_bearer(&mock), access_token("a1"));
}

#[actix_rt::test]
async fn keygen_refuses_unknown_full_or_unsafe_accounts() {
    let (_mock, env) = setup("[tiers.trial]\nslots = 1\n");
    env.add_account("trial", "a1");
    env.add_account("high", "h1");

    let out = run_cli(&env, &["keygen", "trial", "--account", "nope"]);
    assert!(!out.success(), "unknown account accepted:\n{}", out.all());
    assert!(
        out.all().contains("nope"),
        "message should name the account:\n{}",
        out.all()
    );
    assert!(!out.stdout.contains("sk-cli-v1-"), "no key on failure");

    // An account of another tier is not an account of this tier.
    let out = run_cli(&env, &["keygen", "trial", "--account", "h1"]);
    assert!(
        !out.success(),
        "account of another tier accepted:\n{}",
        out.all()
    );

    let out = run_cli(&env, &["keygen", "trial", "--account", "../high/h1"]);
    assert!(
        !out.success(),
        "path in account name accepted:\n{}",
        out.all()
    );
    assert!(!out.stdout.contains("sk-cli-v1-"));

    run_cli(&env, &["keygen", "trial", "--account", "a1"]).assert_ok();
    let out = run_cli(&env, &["keygen", "trial", "--account", "a1"]);
    assert!(!out.success(), "full account accepted:\n{}", out.all());
    let text = out.all().to_lowercase();
    assert!(
        text.contains("a1")
            && ["full", "capacity", "no free slot"]
                .iter()
                .any(|w| text.contains(w)),
        "message should say a1 is full:\n{}",
        out.all()
    );
    assert!(!out.stdout.contains("sk-cli-v1-"));
}

#[actix_rt::test]
async fn trial_tier_is_sonnet_only_high_tier_is_not() {
    let (mock, env) = setup("");
    env.add_account("trial", "a1");
    env.add_account("high", "h1");
    let (trial, _) = keygen_offline(&env, "trial", &[]);
    let (high, _) = keygen_offline(&env, "high", &[]);
    let server = TestServer::start(env);

    for model in [OPUS, HAIKU] {
        let res = server
            .post_messages(Some(&trial), &message_request(model), &[])
            .await;
        res.assert_error(
            403,
            "permission_error",
            "Trial tier can only use Sonnet models",
        );
    }
    assert!(
        mock.api_requests().is_empty(),
        "refused requests reached upstream"
    );

    let res = server
        .post_messages(Some(&high), &message_request(OPUS), &[])
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(last_bearer(&mock), access_token("h1"));
    assert_eq!(send(&server, &trial).await.status, 200);
}

#[actix_rt::test]
async fn revoked_key_is_refused_and_frees_its_slot() {
    let (mock, env) = setup("[tiers.trial]\nslots = 1\n");
    env.add_account("trial", "a1");
    let server = TestServer::start(env);
    let (first, first_id) = server.keygen("trial", &[]);
    let (second, _) = server.keygen("trial", &[]);
    assert_eq!(send(&server, &first).await.status, 200);
    send(&server, &second).await.assert_error(
        503,
        "api_error",
        "All Trial accounts are at capacity",
    );

    server.cli(&["keys", "revoke", &first_id]).assert_ok();
    send(&server, &first).await.assert_error(
        401,
        "authentication_error",
        "API key has been revoked",
    );

    let freed = poll_async(Duration::from_secs(3), || async {
        let res = send(&server, &second).await;
        (res.status == 200).then_some(res)
    })
    .await;
    assert!(
        freed.is_some(),
        "the revoked key's slot was not freed within 3 s"
    );
    assert_eq!(last_bearer(&mock), access_token("a1"));
    // Still revoked afterwards.
    send(&server, &first).await.assert_error(
        401,
        "authentication_error",
        "API key has been revoked",
    );
}
