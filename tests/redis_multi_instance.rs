//! SPEC §5, §6, §9, §11: several proxy instances sharing one Redis stay exact — binding and
//! slots, request windows, the global refresh lock, key revocation — as if they were one.
//! Three real `claude-route serve` processes, each with its own port, the same account
//! directory and the same `[store] url` + `prefix`, against one mock upstream.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::env::access_token;
use common::redis_instances::*;
use common::redis_server::RedisServer;
use common::refresh_support::{calls_for, oauth_part, refresh_toml, wait_oauth_calls};
use common::*;
use futures_util::future::join_all;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const READY: Duration = Duration::from_secs(10);

/// Redis, a mock upstream, shared accounts `(tier, name)` and three instances.
async fn three_instances(
    accounts_list: &[(&str, &str)],
    extra: &str,
) -> (RedisServer, MockUpstream, SharedAccounts, Vec<TestServer>) {
    let redis = RedisServer::start();
    let mock = MockUpstream::start();
    let accounts = SharedAccounts::new();
    for (tier, name) in accounts_list {
        accounts.add_account(tier, name);
    }
    let servers = start_instances(3, &mock, &redis, &accounts, extra);
    for (i, s) in servers.iter().enumerate() {
        for (tier, name) in accounts_list {
            assert!(
                wait_pool_accounts(s, tier, &[name], READY).await,
                "instance {i} never showed account {tier}/{name} in /admin/pool"
            );
        }
    }
    (redis, mock, accounts, servers)
}

async fn create_key(server: &TestServer, tier: &str) -> (String, String) {
    let (key, view) = server.admin_create_key(&json!({ "tier": tier })).await;
    let id = view["id"]
        .as_str()
        .unwrap_or_else(|| panic!("POST /admin/keys answer without id: {view}"))
        .to_string();
    (key, id)
}

/// The account whose access token a recorded upstream request carried.
fn account_of_bearer(bearer: &str, names: &[&str]) -> String {
    names
        .iter()
        .find(|n| access_token(n) == bearer)
        .unwrap_or_else(|| panic!("upstream request with an unknown bearer `{bearer}`"))
        .to_string()
}

/// §5: 300 simultaneous first requests for 60 keys, spread over three instances, against
/// 3 accounts × 7 slots: exactly 21 keys are ever served, no account passes 7 slots, every
/// served key always reaches the same account, every other request gets the capacity error.
#[actix_rt::test]
async fn concurrent_first_requests_across_instances_bind_every_key_once() {
    let names = ["t1", "t2", "t3"];
    let list: Vec<(&str, &str)> = names.iter().map(|n| ("trial", *n)).collect();
    let (redis, mock, _accounts, servers) =
        three_instances(&list, "[tiers.trial]\nslots = 7\n").await;

    let mut keys = Vec::new();
    for i in 0..60 {
        keys.push(create_key(&servers[i % 3], "trial").await);
    }
    mock.clear();

    // Request n: key n % 60, round n / 60; each key's five requests visit every instance.
    let calls = (0..300).map(|n| {
        let (k, round) = (n % 60, n / 60);
        let server = &servers[(k + round) % 3];
        let key = keys[k].0.clone();
        let base = server.base_url();
        async move { (k, try_message(&base, &key, &format!("key-{k}")).await) }
    });
    let results = join_all(calls).await;

    let mut statuses: BTreeMap<usize, Vec<u16>> = BTreeMap::new();
    for (k, r) in &results {
        let res = r.as_ref().unwrap_or_else(|e| panic!("key {k}: {e}"));
        if res.status != 200 {
            res.assert_error(503, "api_error", "All Trial accounts are at capacity");
        }
        statuses.entry(*k).or_default().push(res.status);
    }
    let served: BTreeSet<usize> = statuses
        .iter()
        .filter(|(_, s)| s.contains(&200))
        .map(|(k, _)| *k)
        .collect();
    for (k, s) in &statuses {
        assert!(
            s.iter().all(|st| *st == s[0]),
            "key {k}: a key is either served every time or never: {s:?}"
        );
    }
    assert_eq!(
        served.len(),
        21,
        "exactly 3 accounts × 7 slots keys are served; per key statuses: {statuses:?}"
    );

    // What reached Claude: each served key's five requests, all on one account; 7 keys per
    // account.
    let mut bearers_of_key: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    let mut requests_of_key: BTreeMap<usize, usize> = BTreeMap::new();
    for r in mock.messages_requests() {
        let marker = marker_of(&r);
        let k: usize = marker
            .strip_prefix("key-")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("upstream request with marker `{marker}`"));
        let account = account_of_bearer(r.bearer().unwrap_or_default(), &names);
        bearers_of_key.entry(k).or_default().insert(account);
        *requests_of_key.entry(k).or_default() += 1;
    }
    assert_eq!(
        bearers_of_key.keys().copied().collect::<BTreeSet<_>>(),
        served,
        "only served keys reach upstream"
    );
    let mut keys_per_account: BTreeMap<String, usize> = BTreeMap::new();
    for (k, accounts) in &bearers_of_key {
        assert_eq!(
            accounts.len(),
            1,
            "key {k} reached more than one account: {accounts:?}"
        );
        assert_eq!(
            requests_of_key[k], 5,
            "key {k}: every request forwarded once"
        );
        *keys_per_account
            .entry(accounts.iter().next().unwrap().clone())
            .or_default() += 1;
    }
    let want: BTreeMap<String, usize> = names.iter().map(|n| (n.to_string(), 7)).collect();
    assert_eq!(keys_per_account, want, "7 keys per account");

    // Every instance shows the same slots: 7/7 on each account.
    for (i, s) in servers.iter().enumerate() {
        let view = s.pool_view().await;
        for n in names {
            let acc = find_pool_account(&view, "trial", n)
                .unwrap_or_else(|| panic!("instance {i}: no trial/{n}: {view}"));
            assert_eq!(acc["slots_used"], 7, "instance {i}: {acc}");
            assert_eq!(acc["slots"], 7, "instance {i}: {acc}");
        }
    }
    // And the same bindings: the key view names the account its requests reached.
    for (k, (_, id)) in keys.iter().enumerate() {
        let view = servers[(k + 1) % 3].key_view(id).await;
        let want = bearers_of_key
            .get(&k)
            .map(|a| json!(a.iter().next().unwrap()))
            .unwrap_or(serde_json::Value::Null);
        assert_eq!(view["account"], want, "key {k}: {view}");
    }

    // §11: every key name the instances wrote lives under the configured prefix.
    if redis.is_own() {
        let all = redis.all_keys();
        let under = format!("{}:", redis.prefix());
        let stray: Vec<&String> = all.iter().filter(|k| !k.starts_with(&under)).collect();
        assert!(!all.is_empty(), "nothing in Redis?");
        assert!(stray.is_empty(), "Redis keys outside the prefix: {stray:?}");
    }
}

/// §6: 100 simultaneous requests of one key with 10 left, spread over three instances:
/// exactly 10 are admitted (and reach Claude), 90 get 429.
#[actix_rt::test]
async fn hundred_concurrent_requests_across_instances_admit_exactly_ten() {
    let (_redis, mock, _accounts, servers) = three_instances(
        &[("high", "h1")],
        "[tiers.high]\nslots = 3\n[tiers.high.limits]\nsonnet = 10\n",
    )
    .await;
    let (key, _) = create_key(&servers[1], "high").await;
    mock.clear();

    let calls = (0..100).map(|n| {
        let base = servers[n % 3].base_url();
        let key = key.clone();
        async move { try_message(&base, &key, &format!("req-{n}")).await }
    });
    let results = join_all(calls).await;
    let mut remaining = BTreeSet::new();
    let mut limited = 0;
    for r in &results {
        let res = r.as_ref().unwrap_or_else(|e| panic!("{e}"));
        if res.status == 200 {
            let left: u32 = res
                .header("x-ratelimit-remaining-requests")
                .unwrap_or_else(|| panic!("200 without x-ratelimit-remaining-requests"))
                .parse()
                .expect("remaining is a number");
            remaining.insert(left);
        } else {
            res.assert_error(429, "rate_limit_error", "Rate limit exceeded for Sonnet");
            limited += 1;
        }
    }
    assert_eq!(
        remaining,
        (0..10).collect::<BTreeSet<u32>>(),
        "exactly 10 admitted, each with its own count"
    );
    assert_eq!(limited, 90);
    assert_eq!(
        mock.messages_requests().len(),
        10,
        "the mock saw exactly 10"
    );
}

/// §9: five accounts expiring soon, three instances planning their refresh at once: the
/// token endpoint sees each account refreshed exactly once, successive calls at least one
/// success lock (400 ms) apart; the new pair reaches the files and every instance.
#[actix_rt::test]
async fn refresh_storm_across_instances_respects_the_global_lock() {
    let success_lock = Duration::from_millis(400);
    let redis = RedisServer::start();
    let mock = MockUpstream::start();
    let accounts = SharedAccounts::new();
    accounts.tier_dir("supreme");
    let servers = start_instances(
        3,
        &mock,
        &redis,
        &accounts,
        &refresh_toml("2s", "400ms", "3m", 3),
    );
    // All three are running before any account appears; then all three sync at once.
    let names: Vec<String> = (0..5).map(|i| format!("acc{i}")).collect();
    let expires_at = now_ms() + 3_500;
    for n in &names {
        accounts.add_expiring("supreme", n, expires_at);
    }
    let syncs = join_all(servers.iter().map(|s| s.admin_sync())).await;
    assert_eq!(syncs.len(), 3);

    if wait_oauth_calls(&mock, 5, Duration::from_secs(10)).is_none() {
        panic!(
            "fewer than 5 refreshes within 10 s: {} OAuth calls",
            mock.oauth_calls().len()
        );
    }
    // Nothing more is due (the new tokens live an hour): no second refresh anywhere.
    sleep(Duration::from_millis(1500)).await;
    let calls_after = mock.oauth_calls();
    assert_eq!(
        calls_after.len(),
        5,
        "exactly one refresh per account across all instances; bodies: {:?}",
        calls_after.iter().map(|c| c.json()).collect::<Vec<_>>()
    );
    for n in &names {
        assert_eq!(
            calls_for(&mock, n).len(),
            1,
            "{n} must be refreshed exactly once with its refresh token"
        );
    }
    let gaps: Vec<u128> = calls_after
        .windows(2)
        .map(|p| p[1].at.duration_since(p[0].at).as_millis())
        .collect();
    for pair in calls_after.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(
            gap + Duration::from_millis(2) >= success_lock,
            "two refreshes only {} ms apart (global success lock 400 ms); gaps: {gaps:?}",
            gap.as_millis()
        );
    }

    // The files hold the new tokens, and every instance shows the new expiry.
    let ok = wait_until(Duration::from_secs(3), || {
        names
            .iter()
            .all(|n| {
                oauth_part(&read_account_shared(&accounts, n))["accessToken"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("sk-ant-oat01-new-"))
            })
            .then_some(())
    });
    assert!(
        ok.is_some(),
        "not every account file holds its refreshed token: {:?}",
        names
            .iter()
            .map(|n| read_account_shared(&accounts, n))
            .collect::<Vec<_>>()
    );
    let now = now_ms();
    for (i, s) in servers.iter().enumerate() {
        let view = s.pool_view().await;
        for n in &names {
            let acc = find_pool_account(&view, "supreme", n)
                .unwrap_or_else(|| panic!("instance {i}: no supreme/{n}: {view}"));
            let exp = acc["token_expires_at"].as_i64().unwrap_or_default();
            assert!(
                exp > now + 3_000_000,
                "instance {i}: {n} still shows the old expiry: {acc}"
            );
        }
    }
}

fn read_account_shared(accounts: &SharedAccounts, name: &str) -> serde_json::Value {
    let path = accounts.account_path("supreme", name);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    serde_json::from_str(&text).unwrap_or_default()
}

/// §4, §11: a key revoked through one instance is refused by the others at once, although
/// they served it a moment before.
#[actix_rt::test]
async fn a_key_revoked_on_one_instance_is_refused_by_the_others_at_once() {
    let (_redis, _mock, _accounts, servers) = three_instances(&[("trial", "t1")], "").await;
    let (key, id) = create_key(&servers[0], "trial").await;
    for (i, s) in servers.iter().enumerate() {
        let res = s.send_model(&key, SONNET).await;
        assert_eq!(
            res.status,
            200,
            "instance {i} before the revocation: {}",
            res.text()
        );
    }
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let res = request(
        "DELETE",
        &servers[0].url(&format!("/admin/keys/{id}")),
        &[("authorization", auth.as_str())],
        Vec::new(),
    )
    .await;
    assert!(
        (200..300).contains(&res.status),
        "DELETE /admin/keys/{id}: {} {}",
        res.status,
        res.text()
    );
    // C and B first (they never saw the revocation), then A.
    for s in servers.iter().rev() {
        s.send_model(&key, SONNET).await.assert_error(
            401,
            "authentication_error",
            "API key has been revoked",
        );
    }
    // The slot is free on every instance.
    for (i, s) in servers.iter().enumerate() {
        assert_eq!(
            s.pool_account("trial", "t1").await["slots_used"],
            0,
            "instance {i}"
        );
    }
}
