//! SPEC §4, §13: keygen output, `keys list|show|revoke`, keys stored only as digests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::Value;

fn is_key(k: &str) -> bool {
    k.len() == 42
        && k.starts_with("sk-cli-v1-")
        && k["sk-cli-v1-".len()..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric())
}

fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && parts
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn prefix(key: &str) -> &str {
    &key[..14]
}

#[test]
fn keygen_prints_a_fresh_key_and_its_id() {
    let (_mock, env) = setup("");
    env.add_account("trial", "a1");
    let out = run_cli(&env, &["keygen", "trial", "--note", "for bob"]);
    out.assert_ok();
    let key = out.api_key();
    assert!(is_key(&key), "bad key format: {key}");
    let id = out.key_id();
    assert!(is_uuid(&id), "Key ID is not a uuid: {id}");
    let (key2, id2) = keygen_offline(&env, "trial", &[]);
    assert_ne!(key, key2);
    assert_ne!(id, id2);

    let out = run_cli(&env, &["keygen", "no-such-tier"]);
    assert!(!out.success(), "unknown tier accepted:\n{}", out.all());
    assert!(!out.stdout.contains("sk-cli-v1-"));
}

#[test]
fn keys_list_shows_prefixes_never_keys() {
    let (_mock, env) = setup("");
    env.add_account("trial", "a1");
    let (k1, id1) = keygen_offline(&env, "trial", &["--note", "alice"]);
    let (k2, id2) = keygen_offline(&env, "high", &[]);

    let out = run_cli(&env, &["keys", "list"]);
    out.assert_ok();
    for (key, id) in [(&k1, &id1), (&k2, &id2)] {
        assert!(
            out.stdout.contains(prefix(key)),
            "prefix missing:\n{}",
            out.stdout
        );
        assert!(
            out.stdout.contains(id.as_str()),
            "id missing:\n{}",
            out.stdout
        );
        assert!(
            !out.all().contains(key.as_str()),
            "full key printed:\n{}",
            out.all()
        );
    }

    let out = run_cli(&env, &["keys", "list", "--json"]);
    out.assert_ok();
    let items = parse_json_objects(&out.stdout);
    assert_eq!(items.len(), 2, "{}", out.stdout);
    let one = items
        .iter()
        .find(|i| i["id"] == id1.as_str())
        .unwrap_or_else(|| panic!("{id1} not listed: {}", out.stdout));
    for field in [
        "id", "prefix", "tier", "status", "created", "expires", "account", "note",
    ] {
        assert!(one.get(field).is_some(), "field {field} missing: {one}");
    }
    assert_eq!(one["prefix"], prefix(&k1));
    assert_eq!(one["tier"], "trial");
    assert_eq!(one["status"], "active");
    assert_eq!(one["note"], "alice");
    assert!(!out.all().contains(k1.as_str()) && !out.all().contains(k2.as_str()));
}

#[test]
fn keys_show_and_offline_revoke() {
    let (_mock, env) = setup("");
    env.add_account("trial", "a1");
    let (key, id) = keygen_offline(&env, "trial", &["--account", "a1"]);

    let out = run_cli(&env, &["keys", "show", &id]);
    out.assert_ok();
    assert!(out.stdout.contains(prefix(&key)), "{}", out.stdout);
    assert!(out.stdout.contains("trial"), "{}", out.stdout);
    assert!(!out.all().contains(key.as_str()), "full key printed");

    let show = |env: &TestEnv| -> Value {
        let out = run_cli(env, &["keys", "show", &id, "--json"]);
        out.assert_ok();
        assert!(!out.all().contains(key.as_str()), "full key printed");
        parse_json_objects(&out.stdout).remove(0)
    };
    let v = show(&env);
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["prefix"], prefix(&key));
    assert_eq!(v["status"], "active");
    assert_eq!(v["account"], "a1");

    run_cli(&env, &["keys", "revoke", &id]).assert_ok();
    assert_eq!(show(&env)["status"], "revoked");

    let out = run_cli(
        &env,
        &["keys", "show", "00000000-0000-4000-8000-000000000000"],
    );
    assert!(
        !out.success(),
        "showing an unknown id succeeded:\n{}",
        out.all()
    );
}

#[actix_rt::test]
async fn revocation_offline_is_seen_by_the_next_server() {
    let (_mock, env) = setup("");
    env.add_account("trial", "a1");
    let (key, id) = keygen_offline(&env, "trial", &[]);
    run_cli(&env, &["keys", "revoke", &id]).assert_ok();
    let server = TestServer::start(env);
    server
        .post_messages(Some(&key), &message_request(SONNET), &[])
        .await
        .assert_error(401, "authentication_error", "API key has been revoked");
}

#[actix_rt::test]
async fn cli_changes_reach_a_running_server_at_once() {
    let (mock, env) = setup("");
    env.add_account("trial", "a1");
    let server = TestServer::start(env);
    let (key, id) = server.keygen("trial", &[]);
    let res = server
        .post_messages(Some(&key), &message_request(SONNET), &[])
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    server.cli(&["keys", "revoke", &id]).assert_ok();
    server
        .post_messages(Some(&key), &message_request(SONNET), &[])
        .await
        .assert_error(401, "authentication_error", "API key has been revoked");
    assert_eq!(mock.messages_requests().len(), 1);

    let out = server.cli(&["keys", "show", &id, "--json"]);
    out.assert_ok();
    assert_eq!(parse_json_objects(&out.stdout)[0]["status"], "revoked");
}

#[actix_rt::test]
async fn store_files_never_hold_the_key() {
    let (_mock, env) = setup("");
    env.add_account("trial", "a1");
    let (offline_key, _) = keygen_offline(&env, "trial", &["--note", "n"]);
    let server = TestServer::start(env);
    let (online_key, _) = server.keygen("trial", &[]);
    let res = server
        .post_messages(Some(&online_key), &message_request(SONNET), &[])
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let product = server.env.path().join("product");
    let mut checked = 0;
    for entry in std::fs::read_dir(&product).expect("product dir") {
        let path = entry.expect("entry").path();
        let bytes = std::fs::read(&path).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        for key in [&offline_key, &online_key] {
            let secret = &key["sk-cli-v1-".len()..];
            assert!(
                !text.contains(secret),
                "{} holds the key {key}",
                path.display()
            );
        }
        checked += 1;
    }
    assert!(
        server.env.db_path().exists(),
        "no store at {}",
        server.env.db_path().display()
    );
    assert!(checked >= 1);
    for line in server.logs() {
        for key in [&offline_key, &online_key] {
            assert!(!line.contains(key.as_str()), "key logged: {line}");
        }
    }
}

/// SPEC §3: `keygen --days N` overrides the tier's lifetime (trial: 1 day), `--days 0`
/// never expires.
#[test]
fn keygen_days_sets_the_lifetime_and_zero_never_expires() {
    let (_mock, env) = setup("");
    env.add_account("trial", "a1");
    let show = |args: &[&str]| -> Value {
        let (_, id) = keygen_offline(&env, "trial", args);
        let out = run_cli(&env, &["keys", "show", &id, "--json"]);
        out.assert_ok();
        parse_json_objects(&out.stdout).remove(0)
    };
    let lifetime = |v: &Value| {
        let at = |field: &str| chrono::DateTime::parse_from_rfc3339(v[field].as_str().unwrap());
        (at("expires").unwrap() - at("created").unwrap()).num_seconds()
    };
    assert_eq!(lifetime(&show(&[])), 86_400, "trial's default lifetime");
    assert_eq!(lifetime(&show(&["--days", "3"])), 3 * 86_400);
    let never = show(&["--days", "0"]);
    assert!(
        never["expires"].is_null(),
        "--days 0 never expires: {never}"
    );
}

/// SPEC §13: a running server never acts on a stale copy of a key. When the CLI cannot reach
/// the server that serves the store (here: a wrong admin address), it refuses to change the
/// store behind its back instead of writing a change the server would never see.
#[actix_rt::test]
async fn the_cli_does_not_write_a_store_a_server_it_cannot_reach_serves() {
    let (_mock, env) = setup("");
    env.add_account("trial", "a1");
    let server = TestServer::start(env);
    let (key, id) = server.keygen("trial", &[]);
    let nowhere = Some("http://127.0.0.1:9");
    for args in [vec!["keys", "revoke", id.as_str()], vec!["keygen", "trial"]] {
        let out = run_cli_with(&server.env, nowhere, &args);
        assert!(
            !out.success(),
            "{args:?} wrote a served store:\n{}",
            out.all()
        );
        assert!(
            out.stderr.contains("serves this store") && out.stderr.contains("--admin-url"),
            "{args:?}: {}",
            out.stderr
        );
    }
    let res = server
        .post_messages(Some(&key), &message_request(SONNET), &[])
        .await;
    assert_eq!(
        res.status,
        200,
        "the key was revoked behind the server: {}",
        res.text()
    );
    // Reading needs no server's consent.
    run_cli_with(&server.env, nowhere, &["keys", "show", &id]).assert_ok();
}

/// A second server on a store another one serves refuses to start, naming the first.
#[actix_rt::test]
async fn a_second_server_on_the_same_store_refuses_to_start() {
    let (_mock, env) = setup("");
    env.add_account("trial", "a1");
    let server = TestServer::start(env);
    let config = server.env.config_path.to_string_lossy().into_owned();
    let out = run_raw(
        server.env.path(),
        &["--config", &config, "serve"],
        std::time::Duration::from_secs(10),
    );
    assert!(!out.success(), "a second server started:\n{}", out.all());
    assert!(
        out.stderr.contains("in use by another claude-route"),
        "{}",
        out.stderr
    );
}
