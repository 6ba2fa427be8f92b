//! SPEC §12: the admin API — authentication, key management, pool, recover, sync, status —
//! and the health endpoints.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::admin_support::call_with_token;
use common::*;
use serde_json::{json, Value};

const WRONG: &str = "not-the-admin-token";

fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && parts
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn is_key(k: &str) -> bool {
    k.len() == 42
        && k.starts_with("sk-cli-v1-")
        && k["sk-cli-v1-".len()..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric())
}

/// Asserts that `text` holds none of `secrets`.
fn assert_no_secret(what: &str, text: &str, secrets: &[String]) {
    for s in secrets {
        assert!(
            !text.contains(s.as_str()),
            "{what} reveals the secret `{s}`:\n{text}"
        );
    }
}

async fn call(server: &TestServer, method: &str, path: &str, body: Option<Value>) -> Resp {
    let bytes = body.map(|b| b.to_string().into_bytes());
    call_with_token(
        &server.base_url(),
        method,
        path,
        Some(ADMIN_TOKEN),
        bytes.as_deref(),
    )
    .await
}

async fn keys_list(server: &TestServer, query: &str) -> Vec<Value> {
    let res = call(server, "GET", &format!("/admin/keys{query}"), None).await;
    assert_eq!(res.status, 200, "GET /admin/keys{query}: {}", res.text());
    res.json()["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("GET /admin/keys{query}: no `keys` array: {}", res.text()))
        .clone()
}

#[actix_rt::test]
async fn every_admin_endpoint_refuses_a_missing_or_wrong_token() {
    let (_mock, server) = start_with_accounts("", &[("trial", "a1")]);
    let (_key, created) = server.admin_create_key(&json!({"tier": "trial"})).await;
    let id = created["id"].as_str().expect("id").to_string();
    let key_path = format!("/admin/keys/{id}");
    let calls: Vec<(&str, &str, Option<Value>)> = vec![
        ("GET", "/admin/pool", None),
        ("POST", "/admin/recover", Some(json!({"account": "a1"}))),
        ("POST", "/admin/sync", Some(json!({}))),
        ("GET", "/admin/status", None),
        ("POST", "/admin/keys", Some(json!({"tier": "trial"}))),
        ("GET", "/admin/keys", None),
        ("GET", "/admin/keys?tier=trial", None),
        ("GET", &key_path, None),
        ("DELETE", &key_path, None),
        ("GET", "/metrics", None),
    ];
    let client_key = _key.clone();
    for (method, path, body) in &calls {
        let bytes = body.as_ref().map(|b| b.to_string().into_bytes());
        for token in [None, Some(WRONG), Some(""), Some(client_key.as_str())] {
            let res =
                call_with_token(&server.base_url(), method, path, token, bytes.as_deref()).await;
            res.assert_error(401, "authentication_error", "");
            assert_no_secret(
                &format!("{method} {path} refusal"),
                &res.text(),
                &[ADMIN_TOKEN.to_string(), client_key.clone()],
            );
        }
        // The admin token in the wrong header is no admin token.
        let res = request(
            method,
            &server.url(path),
            &[
                ("x-api-key", ADMIN_TOKEN),
                ("content-type", "application/json"),
            ],
            bytes.clone().unwrap_or_default(),
        )
        .await;
        res.assert_error(401, "authentication_error", "");
        // Not the Bearer scheme.
        let res = request(
            method,
            &server.url(path),
            &[
                ("authorization", &format!("Basic {ADMIN_TOKEN}")),
                ("content-type", "application/json"),
            ],
            bytes.unwrap_or_default(),
        )
        .await;
        res.assert_error(401, "authentication_error", "");
    }
    // Nothing happened: still one key, still active.
    let keys = keys_list(&server, "").await;
    assert_eq!(keys.len(), 1, "a refused call created a key: {keys:?}");
    assert_eq!(
        keys[0]["status"], "active",
        "a refused DELETE revoked: {keys:?}"
    );
}

#[actix_rt::test]
async fn refused_calls_change_nothing() {
    let (mock, server) = start_with_accounts("", &[("trial", "a1"), ("trial", "a2")]);
    let base = server.base_url();

    // POST /admin/keys with a wrong token creates no key.
    let body = json!({"tier": "trial", "note": "sneaky"}).to_string();
    let res = call_with_token(
        &base,
        "POST",
        "/admin/keys",
        Some(WRONG),
        Some(body.as_bytes()),
    )
    .await;
    res.assert_error(401, "authentication_error", "");
    assert!(!res.text().contains("sk-cli-v1-"), "{}", res.text());
    assert!(keys_list(&server, "").await.is_empty());

    // DELETE with a wrong token does not revoke; the key keeps working.
    let (key, created) = server.admin_create_key(&json!({"tier": "trial"})).await;
    let id = created["id"].as_str().unwrap();
    let res = call_with_token(
        &base,
        "DELETE",
        &format!("/admin/keys/{id}"),
        Some(WRONG),
        None,
    )
    .await;
    res.assert_error(401, "authentication_error", "");
    assert_eq!(server.key_view(id).await["status"], "active");
    let res = server.send_model(&key, SONNET).await;
    assert_eq!(res.status, 200, "{}", res.text());

    // POST /admin/recover with a wrong token does not lift a blacklist.
    server.blacklist_via_401(&mock, "trial", "a2").await;
    let body = json!({"account": "a2"}).to_string();
    let res = call_with_token(
        &base,
        "POST",
        "/admin/recover",
        Some(WRONG),
        Some(body.as_bytes()),
    )
    .await;
    res.assert_error(401, "authentication_error", "");
    assert_eq!(
        server.pool_account("trial", "a2").await["status"],
        "blacklisted"
    );

    // POST /admin/sync with a wrong token does not pick up a new account file.
    server.wait_startup_sync_done().await;
    server.env.add_account("trial", "a3");
    let res = call_with_token(&base, "POST", "/admin/sync", Some(WRONG), Some(b"{}")).await;
    res.assert_error(401, "authentication_error", "");
    assert!(
        find_pool_account(&server.pool_view().await, "trial", "a3").is_none(),
        "a refused sync ran"
    );
}

#[actix_rt::test]
async fn create_key_answers_201_with_the_key_once() {
    let (_mock, server) = start_with_accounts("", &[("high", "h1")]);
    let before = now_ms();
    let res = call(
        &server,
        "POST",
        "/admin/keys",
        Some(json!({"tier": "high", "note": "for alice"})),
    )
    .await;
    assert_eq!(res.status, 201, "POST /admin/keys: {}", res.text());
    let v = res.json();
    let key = v["key"].as_str().unwrap_or_else(|| panic!("no `key`: {v}"));
    assert!(is_key(key), "bad key format: {key}");
    let id = v["id"].as_str().unwrap_or_else(|| panic!("no `id`: {v}"));
    assert!(is_uuid(id), "id is not a uuid: {id}");
    assert_eq!(v["prefix"], &key[..14], "{v}");
    assert_eq!(v["tier"], "high");
    assert_eq!(v["status"], "active");
    assert_eq!(v["note"], "for alice");
    // Default lifetime of high: 30 days.
    let expires = rfc3339_ms(v["expires"].as_str().unwrap_or_else(|| panic!("{v}")));
    let want = before + 30 * 86_400_000;
    assert!(
        (expires - want).abs() < 120_000,
        "expires {} is not 30 days out: {v}",
        v["expires"]
    );
    rfc3339_ms(v["created"].as_str().unwrap_or_else(|| panic!("{v}")));

    // The key works.
    let res = server.send_model(key, SONNET).await;
    assert_eq!(res.status, 200, "{}", res.text());

    // It is never shown again.
    let secret = &key["sk-cli-v1-".len()..];
    let shown = call(&server, "GET", &format!("/admin/keys/{id}"), None).await;
    assert_eq!(shown.status, 200);
    assert!(!shown.text().contains(secret), "{}", shown.text());
    assert!(shown.json().get("key").is_none_or(Value::is_null));
    assert_eq!(shown.json()["prefix"], &key[..14]);

    // `days` and a fixed account.
    let res = call(
        &server,
        "POST",
        "/admin/keys",
        Some(json!({"tier": "high", "account": "h1", "days": 2})),
    )
    .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let v = res.json();
    assert_eq!(v["account"], "h1", "{v}");
    assert_eq!(v["fixed"], true, "{v}");
    let expires = rfc3339_ms(v["expires"].as_str().unwrap_or_else(|| panic!("{v}")));
    assert!(
        (expires - (now_ms() + 2 * 86_400_000)).abs() < 120_000,
        "{v}"
    );
    // A fixed key takes its slot at once.
    let h1 = server.pool_account("high", "h1").await;
    assert_eq!(h1["slots_used"], 2, "{h1}");

    // `days: 0` never expires.
    let res = call(
        &server,
        "POST",
        "/admin/keys",
        Some(json!({"tier": "high", "days": 0})),
    )
    .await;
    assert_eq!(res.status, 201, "{}", res.text());
    assert!(res.json()["expires"].is_null(), "{}", res.text());
}

#[actix_rt::test]
async fn create_key_rejects_bad_input_clearly() {
    let (_mock, server) = start_with_accounts("[tiers.supreme]\nslots = 1\n", &[("supreme", "s1")]);
    let base = server.base_url();
    let bad: Vec<(&[u8], u16, &str)> = vec![
        (b"{not json", 400, "invalid_request_error"),
        (b"", 400, "invalid_request_error"),
        (b"[]", 400, "invalid_request_error"),
        (br#"{"note":"no tier"}"#, 400, "invalid_request_error"),
        (br#"{"tier":"platinum"}"#, 400, "invalid_request_error"),
        (br#"{"tier":7}"#, 400, "invalid_request_error"),
        (
            br#"{"tier":"supreme","days":-1}"#,
            400,
            "invalid_request_error",
        ),
        (
            br#"{"tier":"supreme","account":"../x"}"#,
            400,
            "invalid_request_error",
        ),
        (
            br#"{"tier":"supreme","account":"nobody"}"#,
            404,
            "not_found_error",
        ),
    ];
    for (body, status, kind) in bad {
        let res =
            call_with_token(&base, "POST", "/admin/keys", Some(ADMIN_TOKEN), Some(body)).await;
        res.assert_error(status, kind, "");
        let message = res.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert!(
            message.len() > 10,
            "POST /admin/keys {}: message not helpful: {message}",
            String::from_utf8_lossy(body)
        );
        assert!(!res.text().contains("sk-cli-v1-"), "{}", res.text());
    }
    // The unknown tier is named.
    let res = call_with_token(
        &base,
        "POST",
        "/admin/keys",
        Some(ADMIN_TOKEN),
        Some(br#"{"tier":"platinum"}"#),
    )
    .await;
    assert!(res.text().contains("platinum"), "{}", res.text());
    // The unknown account is named.
    let res = call_with_token(
        &base,
        "POST",
        "/admin/keys",
        Some(ADMIN_TOKEN),
        Some(br#"{"tier":"supreme","account":"nobody"}"#),
    )
    .await;
    assert!(res.text().contains("nobody"), "{}", res.text());

    // A full account refuses a fixed key, without handing one out.
    let (_k, _) = server
        .admin_create_key(&json!({"tier": "supreme", "account": "s1"}))
        .await;
    let res = call_with_token(
        &base,
        "POST",
        "/admin/keys",
        Some(ADMIN_TOKEN),
        Some(br#"{"tier":"supreme","account":"s1"}"#),
    )
    .await;
    assert!(
        (400..500).contains(&res.status),
        "a fixed key on a full account: {} {}",
        res.status,
        res.text()
    );
    assert!(!res.text().contains("sk-cli-v1-"), "{}", res.text());
    assert_eq!(keys_list(&server, "").await.len(), 1);
}

/// A fixed key whose slot the store refuses to write (a trigger stands in for a full disk)
/// is not created, and its slot is not held in memory: once the disk takes writes again the
/// same account takes the key.
#[actix_rt::test]
async fn a_fixed_key_the_store_refuses_keeps_no_slot() {
    let (_mock, server) = start_with_accounts("[tiers.supreme]\nslots = 1\n", &[("supreme", "s1")]);
    let db = rusqlite::Connection::open(server.env.db_path()).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    db.execute_batch(
        "CREATE TRIGGER refuse_bindings BEFORE INSERT ON bindings \
         BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
    )
    .unwrap();
    let body = json!({"tier": "supreme", "account": "s1"});
    let res = call(&server, "POST", "/admin/keys", Some(body.clone())).await;
    res.assert_error(503, "api_error", "store unavailable");
    assert_eq!(server.pool_account("supreme", "s1").await["slots_used"], 0);
    assert!(keys_list(&server, "").await.is_empty());

    db.execute_batch("DROP TRIGGER refuse_bindings;").unwrap();
    let res = call(&server, "POST", "/admin/keys", Some(body)).await;
    assert_eq!(res.status, 201, "{}", res.text());
    assert_eq!(server.pool_account("supreme", "s1").await["slots_used"], 1);
}

#[actix_rt::test]
async fn list_show_and_revoke_keys() {
    let (_mock, server) = start_with_accounts("", &[("trial", "a1"), ("high", "h1")]);
    let (k1, v1) = server
        .admin_create_key(&json!({"tier": "trial", "note": "one"}))
        .await;
    let (_k2, v2) = server.admin_create_key(&json!({"tier": "high"})).await;
    let (_k3, v3) = server.admin_create_key(&json!({"tier": "high"})).await;
    let id1 = v1["id"].as_str().unwrap().to_string();
    let id2 = v2["id"].as_str().unwrap().to_string();
    let id3 = v3["id"].as_str().unwrap().to_string();

    let ids = |keys: &[Value]| -> Vec<String> {
        let mut v: Vec<String> = keys
            .iter()
            .map(|k| k["id"].as_str().unwrap_or("").to_string())
            .collect();
        v.sort();
        v
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        ids(&keys_list(&server, "").await),
        sorted(vec![id1.clone(), id2.clone(), id3.clone()])
    );
    assert_eq!(
        ids(&keys_list(&server, "?tier=trial").await),
        vec![id1.clone()]
    );
    assert_eq!(
        ids(&keys_list(&server, "?tier=high").await),
        sorted(vec![id2.clone(), id3.clone()])
    );
    assert!(keys_list(&server, "?tier=supreme").await.is_empty());

    // Bind k1, then show it: binding and usage are visible.
    let res = server.send_model(&k1, SONNET).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let usage = server
        .wait_key_usage(&id1, &usage_json(1, 10, 5, 2, 3))
        .await;
    assert_eq!(usage, usage_json(1, 10, 5, 2, 3));
    let shown = server.key_view(&id1).await;
    assert_eq!(shown["id"], id1.as_str());
    assert_eq!(shown["tier"], "trial");
    assert_eq!(shown["account"], "a1", "{shown}");
    assert_eq!(shown["note"], "one");
    assert_eq!(shown["status"], "active");
    assert_eq!(server.pool_account("trial", "a1").await["slots_used"], 1);

    // Revoke: the answer shows it revoked, the slot is freed, the key stops working.
    let res = call(&server, "DELETE", &format!("/admin/keys/{id1}"), None).await;
    assert_eq!(res.status, 200, "DELETE: {}", res.text());
    assert_eq!(res.json()["status"], "revoked", "{}", res.text());
    assert_eq!(server.key_view(&id1).await["status"], "revoked");
    assert_eq!(server.pool_account("trial", "a1").await["slots_used"], 0);
    server.send_model(&k1, SONNET).await.assert_error(
        401,
        "authentication_error",
        "API key has been revoked",
    );

    assert_eq!(
        ids(&keys_list(&server, "?status=revoked").await),
        vec![id1.clone()]
    );
    assert_eq!(
        ids(&keys_list(&server, "?status=active").await),
        sorted(vec![id2.clone(), id3.clone()])
    );
    assert!(keys_list(&server, "?tier=trial&status=active")
        .await
        .is_empty());

    // Unknown ids.
    let unknown = "00000000-0000-4000-8000-000000000000";
    for method in ["GET", "DELETE"] {
        let res = call(&server, method, &format!("/admin/keys/{unknown}"), None).await;
        res.assert_error(404, "not_found_error", "");
    }
}

#[actix_rt::test]
async fn pool_shows_slots_status_expiry_and_usage() {
    let (mock, server) =
        start_with_accounts("", &[("trial", "a1"), ("trial", "a2"), ("high", "h1")]);
    let (k, v) = server.admin_create_key(&json!({"tier": "trial"})).await;
    let res = server.send_model(&k, SONNET).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let id = v["id"].as_str().unwrap();
    server.wait_key_usage(id, &usage_json(1, 10, 5, 2, 3)).await;
    let a1 = server
        .wait_account_usage("trial", "a1", &usage_json(1, 10, 5, 2, 3))
        .await;
    assert_eq!(a1, usage_json(1, 10, 5, 2, 3));

    // h1 is rate limited upstream until a known time.
    let (hk, _) = server.admin_create_key(&json!({"tier": "high"})).await;
    let reset_secs = now_ms() / 1000 + 3600;
    mock.push_answer(
        Answer::error(
            429,
            "rate_limit_error",
            "Number of requests has exceeded your rate limit",
        )
        .header("anthropic-ratelimit-unified-reset", &reset_secs.to_string()),
    );
    let res = server.send_model(&hk, SONNET).await;
    assert_eq!(res.status, 429, "{}", res.text());

    // a2 blacklisted.
    server.blacklist_via_401(&mock, "trial", "a2").await;

    let view = server.pool_view().await;
    let tiers = view["tiers"].as_array().expect("tiers array");
    let trial = tiers
        .iter()
        .find(|t| t["tier"] == "trial")
        .expect("trial tier");
    // a1: the pool key; a2: the fixed key made by `blacklist`.
    assert_eq!(trial["slots_used"], 2, "{trial}");
    assert_eq!(trial["capacity"], 14, "{trial}");
    let a1 = find_pool_account(&view, "trial", "a1").expect("a1");
    assert_eq!(a1["slots_used"], 1, "{a1}");
    assert_eq!(a1["slots"], 7, "{a1}");
    assert_eq!(a1["status"], "active", "{a1}");
    let exp = a1["token_expires_at"]
        .as_i64()
        .unwrap_or_else(|| panic!("{a1}"));
    assert!((exp - (now_ms() + 3_600_000)).abs() < 60_000, "{a1}");
    let a2 = find_pool_account(&view, "trial", "a2").expect("a2");
    assert_eq!(a2["status"], "blacklisted", "{a2}");
    let reason = a2["blacklist_reason"]
        .as_str()
        .unwrap_or_else(|| panic!("{a2}"));
    assert!(reason.contains("Invalid bearer token"), "{a2}");
    let since = a2["blacklisted_since"]
        .as_i64()
        .unwrap_or_else(|| panic!("{a2}"));
    assert!((now_ms() - since).abs() < 60_000, "{a2}");
    let h1 = find_pool_account(&view, "high", "h1").expect("h1");
    assert_eq!(h1["status"], "limited", "{h1}");
    assert_eq!(h1["limited_until"], reset_secs * 1000, "{h1}");
    assert!(
        h1.get("refresh").is_some(),
        "no refresh state beside the account: {h1}"
    );

    let text = view.to_string();
    assert_no_secret(
        "GET /admin/pool",
        &text,
        &[
            k.clone(),
            hk.clone(),
            access_token("a1"),
            access_token("a2"),
            access_token("h1"),
            "sk-ant-ort01-a1".into(),
            "sk-ant-ort01-h1".into(),
            ADMIN_TOKEN.into(),
        ],
    );
}

#[actix_rt::test]
async fn recover_lifts_a_blacklist_and_checks_the_name() {
    let (mock, server) = start_with_accounts("", &[("trial", "a1")]);
    let key = server.blacklist_via_401(&mock, "trial", "a1").await;
    let res = server.send_model(&key, SONNET).await;
    res.assert_error(
        503,
        "api_error",
        "The account `a1` this key is fixed to is unavailable",
    );
    assert!(
        res.text()
            .contains("ask the operator to recover the account"),
        "a fixed key on a blacklisted account: {}",
        res.text()
    );

    let res = call(
        &server,
        "POST",
        "/admin/recover",
        Some(json!({"account": "a1"})),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let a1 = server.pool_account("trial", "a1").await;
    assert_eq!(a1["status"], "active", "{a1}");
    assert!(a1["blacklist_reason"].is_null(), "{a1}");
    let res = server.send_model(&key, SONNET).await;
    assert_eq!(res.status, 200, "after recover: {}", res.text());

    let base = server.base_url();
    let bad: Vec<(&[u8], u16, &str)> = vec![
        (br#"{"account":"../x"}"#, 400, "invalid_request_error"),
        (br#"{"account":"a/b"}"#, 400, "invalid_request_error"),
        (br#"{"account":""}"#, 400, "invalid_request_error"),
        (br#"{"account":"nobody"}"#, 404, "not_found_error"),
        (b"not json", 400, "invalid_request_error"),
        (b"{}", 400, "invalid_request_error"),
    ];
    for (body, status, kind) in bad {
        let res = call_with_token(
            &base,
            "POST",
            "/admin/recover",
            Some(ADMIN_TOKEN),
            Some(body),
        )
        .await;
        res.assert_error(status, kind, "");
    }
    let res = call_with_token(
        &base,
        "POST",
        "/admin/recover",
        Some(ADMIN_TOKEN),
        Some(br#"{"account":"nobody"}"#),
    )
    .await;
    assert!(res.text().contains("nobody"), "{}", res.text());
}

#[actix_rt::test]
async fn sync_returns_the_counts() {
    let (_mock, server) = start_with_accounts("", &[("trial", "a1"), ("trial", "a2")]);
    server.wait_startup_sync_done().await;
    server.env.add_account("trial", "a3");
    server.env.add_account("high", "h1");
    std::fs::remove_file(server.env.account_path("trial", "a2")).expect("rm a2");
    server
        .env
        .write_account_file("trial", "bad name!.json", b"{}");
    let res = call(&server, "POST", "/admin/sync", Some(json!({}))).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let v = res.json();
    assert_eq!(v["added"], 2, "{v}");
    assert_eq!(v["removed"], 1, "{v}");
    assert_eq!(v["updated"], 0, "{v}");
    assert!(v["skipped"].as_u64().is_some_and(|n| n >= 1), "{v}");
    let view = server.pool_view().await;
    assert!(find_pool_account(&view, "trial", "a3").is_some(), "{view}");
    assert!(find_pool_account(&view, "high", "h1").is_some(), "{view}");
    assert!(find_pool_account(&view, "trial", "a2").is_none(), "{view}");

    // The status shows this sync as the last one.
    let status = call(&server, "GET", "/admin/status", None).await.json();
    assert_eq!(status["last_sync"]["added"], 2, "{status}");
}

#[actix_rt::test]
async fn status_reports_version_uptime_store_refresh_and_sync() {
    let (_mock, server) = start_with_accounts("", &[("trial", "a1")]);
    let res = call(&server, "GET", "/admin/status", None).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let s = res.json();
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"), "{s}");
    assert!(s["uptime_secs"].as_u64().is_some(), "{s}");
    assert_eq!(s["store"]["healthy"], true, "{s}");
    assert!(
        s["store"]["backend"]
            .as_str()
            .is_some_and(|b| b.contains("sqlite")),
        "{s}"
    );
    let refresh = &s["refresh"];
    assert!(
        refresh["timers"].as_u64().is_some(),
        "no refresh timer count: {s}"
    );
    assert!(refresh.get("next_account").is_some(), "{s}");
    assert!(
        refresh.get("lock_until").is_some(),
        "no global lock state: {s}"
    );
    // The start-up sync is the last sync so far: its counts and time are shown.
    for field in ["added", "updated", "removed", "skipped", "finished_at"] {
        assert!(
            s["last_sync"][field].as_u64().is_some(),
            "last_sync.{field} missing: {s}"
        );
    }
    assert_no_secret(
        "GET /admin/status",
        &res.text(),
        &[
            access_token("a1"),
            "sk-ant-ort01-a1".into(),
            ADMIN_TOKEN.into(),
        ],
    );
}

#[actix_rt::test]
async fn no_admin_answer_reveals_a_secret_even_after_a_refresh() {
    let (mock, server) =
        start_with_accounts("[refresh]\nsuccess_lock = \"100ms\"\n", &[("trial", "a1")]);
    let (key, created) = server
        .admin_create_key(&json!({"tier": "trial", "note": "n"}))
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    // An expired token: refreshed through the mock (new tokens), request retried.
    mock.push_answer(Answer::error(
        401,
        "authentication_error",
        "OAuth token has expired",
    ));
    let res = server.send_model(&key, SONNET).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(!mock.oauth_calls().is_empty(), "no refresh happened");
    let secrets = vec![
        key.clone(),
        key["sk-cli-v1-".len()..].to_string(),
        ADMIN_TOKEN.to_string(),
        access_token("a1"),
        "sk-ant-ort01-a1".to_string(),
        "sk-ant-oat01-new-1".to_string(),
        "sk-ant-ort01-new-1".to_string(),
    ];
    let mut answers = vec![];
    for (method, path, body) in [
        ("GET", "/admin/pool".to_string(), None),
        ("GET", "/admin/status".to_string(), None),
        ("GET", "/admin/keys".to_string(), None),
        ("GET", format!("/admin/keys/{id}"), None),
        ("POST", "/admin/sync".to_string(), Some(json!({}))),
        (
            "POST",
            "/admin/recover".to_string(),
            Some(json!({"account": "a1"})),
        ),
        ("GET", "/metrics".to_string(), None),
        ("DELETE", format!("/admin/keys/{id}"), None),
        ("GET", "/healthz".to_string(), None),
        ("GET", "/readyz".to_string(), None),
    ] {
        let res = call(&server, method, &path, body).await;
        assert!(
            res.status < 500,
            "{method} {path}: {} {}",
            res.status,
            res.text()
        );
        answers.push((format!("{method} {path}"), res));
    }
    for (what, res) in &answers {
        assert_no_secret(what, &res.text(), &secrets);
        for (name, value) in &res.headers {
            assert_no_secret(&format!("{what} header {name}"), value, &secrets);
        }
    }
}

#[actix_rt::test]
async fn healthz_and_readyz() {
    let (_mock, server) = start_with_accounts("", &[("trial", "a1")]);
    let res = server.get("/healthz", None, &[]).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let res = server.get("/readyz", None, &[]).await;
    assert_eq!(res.status, 200, "{}", res.text());

    let (_mock2, env) = setup("");
    let empty = TestServer::start(env);
    let res = empty.get("/healthz", None, &[]).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let res = empty.get("/readyz", None, &[]).await;
    assert_eq!(res.status, 503, "no accounts: readyz {}", res.text());
}

#[actix_rt::test]
async fn readyz_follows_the_accounts_a_sync_loads() {
    let (_mock, env) = setup("");
    let server = TestServer::start(env);
    assert_eq!(server.get("/readyz", None, &[]).await.status, 503);
    server.wait_startup_sync_done().await;
    server.env.add_account("trial", "a1");
    let v = server.admin_sync().await.json();
    assert_eq!(v["added"], 1, "{v}");
    let res = server.get("/readyz", None, &[]).await;
    assert_eq!(
        res.status,
        200,
        "an account is loaded after sync, readyz says: {}",
        res.text()
    );
    std::fs::remove_file(server.env.account_path("trial", "a1")).expect("rm a1");
    let v = server.admin_sync().await.json();
    assert_eq!(v["removed"], 1, "{v}");
    let res = server.get("/readyz", None, &[]).await;
    assert_eq!(
        res.status,
        503,
        "no account is left after sync, readyz says: {}",
        res.text()
    );
}

#[actix_rt::test]
async fn unknown_admin_paths_and_methods_are_not_served() {
    let (_mock, server) = start_with_accounts("", &[("trial", "a1")]);
    let res = call(&server, "GET", "/admin/nothing", None).await;
    assert_eq!(res.status, 404, "{}", res.text());
    let res = call(&server, "PUT", "/admin/keys", None).await;
    assert!(
        (400..500).contains(&res.status),
        "PUT /admin/keys: {} {}",
        res.status,
        res.text()
    );
}
