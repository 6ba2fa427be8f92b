//! SPEC §12, §13: the operator's commands against a running server — `pool`, `recover`,
//! `sync`, `status` (tables and `--json`) — what they say when no server runs or the admin
//! token is wrong, and the admin token generated into its file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::admin_support::{call_with_token, dead_url};
use common::cli::run_cli_env;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const WRONG_TOKEN: (&str, &str) = ("CLAUDE_ROUTE_ADMIN__TOKEN", "wrong");

/// The stdout line that names `account` (as a whole word), whitespace collapsed.
fn line_of(out: &CliOutput, account: &str) -> String {
    out.stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .find(|l| l.split_whitespace().any(|w| w == account))
        .unwrap_or_else(|| panic!("no line for {account} in `pool`:\n{}", out.stdout))
}

fn assert_fails_with(out: &CliOutput, what: &str, any_of: &[&str]) {
    assert!(!out.success(), "{what} succeeded:\n{}", out.all());
    let all = out.all();
    assert!(
        any_of.iter().any(|n| all.contains(n)),
        "{what}: the message should mention one of {any_of:?}:\n{all}"
    );
    assert!(!all.contains("panicked"), "{what} panicked:\n{all}");
}

#[actix_rt::test]
async fn pool_prints_slots_status_expiry_refresh_failures_and_usage() {
    let (mock, env) = setup("");
    env.add_account("trial", "a1");
    env.add_account("trial", "a2");
    env.add_account("high", "h1");
    // m1's token is inside the refresh lead, and the token endpoint fails: one failed attempt.
    let cred = serde_json::json!({"claudeAiOauth": {
        "accessToken": access_token("m1"),
        "refreshToken": "sk-ant-ort01-m1",
        "expiresAt": now_ms() + 30_000,
        "scopes": ["user:inference"],
        "subscriptionType": "max"
    }});
    env.write_account_file("medium", "m1.json", cred.to_string().as_bytes());
    mock.set_oauth_fixed_answer(Some(Answer::new(
        500,
        json!({"error": "server_error"}).to_string(),
    )));
    let server = TestServer::start(env);

    // a1: one pool key, one request.
    let (key, _) = server.admin_create_key(&json!({"tier": "trial"})).await;
    let res = server.send_model(&key, SONNET).await;
    assert_eq!(res.status, 200, "{}", res.text());
    server
        .wait_account_usage("trial", "a1", &usage_json(1, 10, 5, 2, 3))
        .await;
    // a2: blacklisted.
    server.blacklist_via_401(&mock, "trial", "a2").await;
    // h1: limited by upstream until a known time.
    let (hk, _) = server.admin_create_key(&json!({"tier": "high"})).await;
    let reset_secs = now_ms() / 1000 + 7200;
    mock.push_answer(
        Answer::error(429, "rate_limit_error", "rate limited")
            .header("anthropic-ratelimit-unified-reset", &reset_secs.to_string()),
    );
    assert_eq!(server.send_model(&hk, SONNET).await.status, 429);
    // m1: wait for its failed refresh.
    let failed = poll_async(Duration::from_secs(5), || {
        let fut = server.pool_account("medium", "m1");
        async {
            let a = fut.await;
            (a["refresh"]["failures_in_window"].as_u64().unwrap_or(0) >= 1).then_some(a)
        }
    })
    .await;
    assert!(failed.is_some(), "m1's refresh never failed");

    let out = server.cli(&["pool"]);
    out.assert_ok();
    let a1 = line_of(&out, "a1");
    assert!(a1.contains("1/7"), "a1 slots: {a1}");
    assert!(a1.contains("in 59m"), "a1 token expiry: {a1}");
    assert!(a1.contains("1 req"), "a1 usage: {a1}");
    assert!(a1.contains("active"), "a1 status: {a1}");
    let a2 = line_of(&out, "a2");
    assert!(a2.contains("1/7"), "a2 slots (its fixed key): {a2}");
    assert!(a2.contains("blacklisted"), "a2 status: {a2}");
    assert!(a2.contains("Invalid bearer token"), "a2 reason: {a2}");
    let h1 = line_of(&out, "h1");
    assert!(h1.contains("1/3"), "h1 slots: {h1}");
    assert!(h1.contains("limited until"), "h1 status: {h1}");
    let until = chrono::DateTime::from_timestamp(reset_secs, 0)
        .expect("time")
        .format("%Y-%m-%dT%H:%M")
        .to_string();
    assert!(h1.contains(&until), "h1 limited until {until}: {h1}");
    let m1 = line_of(&out, "m1");
    assert!(m1.contains("0/7"), "m1 slots: {m1}");
    assert!(
        m1.contains("refresh failures 1"),
        "m1 refresh failures: {m1}"
    );
    for tier in ["trial", "medium", "high"] {
        assert!(
            out.stdout.lines().any(|l| l.starts_with(tier)),
            "no header line for tier {tier}:\n{}",
            out.stdout
        );
    }
    for secret in [
        key.as_str(),
        hk.as_str(),
        &access_token("a1"),
        "sk-ant-ort01-a1",
        ADMIN_TOKEN,
    ] {
        assert!(!out.all().contains(secret), "`pool` shows {secret}");
    }
}

/// The pool view without the refresh planning, which moves with the clock.
fn stable(mut v: Value) -> Value {
    for tier in v["tiers"].as_array_mut().into_iter().flatten() {
        for a in tier["accounts"].as_array_mut().into_iter().flatten() {
            if let Some(o) = a.as_object_mut() {
                o.remove("refresh");
            }
        }
    }
    v
}

#[actix_rt::test]
async fn json_output_is_the_admin_api_answer() {
    let (_mock, server) = start_with_accounts("", &[("trial", "a1"), ("high", "h1")]);
    let (key, _) = server.admin_create_key(&json!({"tier": "trial"})).await;
    assert_eq!(server.send_model(&key, SONNET).await.status, 200);
    server
        .wait_account_usage("trial", "a1", &usage_json(1, 10, 5, 2, 3))
        .await;

    let out = server.cli(&["pool", "--json"]);
    out.assert_ok();
    let cli: Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("`pool --json` is not JSON ({e}):\n{}", out.stdout));
    assert_eq!(stable(cli), stable(server.pool_view().await));

    let out = server.cli(&["status", "--json"]);
    out.assert_ok();
    let cli: Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("`status --json` is not JSON ({e}):\n{}", out.stdout));
    let api = server.admin_get("/admin/status").await.json();
    assert_eq!(cli["version"], api["version"]);
    assert_eq!(cli["store"], api["store"]);
    assert_eq!(cli["last_sync"], api["last_sync"]);

    server.wait_startup_sync_done().await;
    server.env.add_account("trial", "a2");
    let out = server.cli(&["sync", "--json"]);
    out.assert_ok();
    let cli: Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("`sync --json` is not JSON ({e}):\n{}", out.stdout));
    assert_eq!(cli["added"], 1, "{cli}");
    assert_eq!(cli["removed"], 0, "{cli}");
}

#[actix_rt::test]
async fn recover_sync_and_status_print_readable_answers() {
    let (mock, server) = start_with_accounts("", &[("trial", "a1"), ("trial", "a2")]);
    server.blacklist_via_401(&mock, "trial", "a1").await;

    let out = server.cli(&["recover", "a1"]);
    out.assert_ok();
    assert!(out.stdout.contains("a1"), "{}", out.stdout);
    assert_eq!(server.pool_account("trial", "a1").await["status"], "active");

    let out = server.cli(&["recover", "../x"]);
    assert_fails_with(&out, "recover ../x", &["../x"]);
    assert!(
        out.all().contains("valid account name") || out.all().contains("invalid"),
        "{}",
        out.all()
    );
    let out = server.cli(&["recover", "nobody"]);
    assert_fails_with(&out, "recover nobody", &["nobody"]);

    server.wait_startup_sync_done().await;
    server.env.add_account("trial", "a3");
    std::fs::remove_file(server.env.account_path("trial", "a2")).expect("rm a2");
    let out = server.cli(&["sync"]);
    out.assert_ok();
    for want in ["added=1", "removed=1", "updated=0"] {
        assert!(
            out.stdout.contains(want),
            "`sync` lacks {want}:\n{}",
            out.stdout
        );
    }
    let view = server.pool_view().await;
    assert!(find_pool_account(&view, "trial", "a3").is_some(), "{view}");

    let out = server.cli(&["status"]);
    out.assert_ok();
    assert!(
        out.stdout.contains(env!("CARGO_PKG_VERSION")),
        "`status` lacks the version:\n{}",
        out.stdout
    );
    assert!(out.stdout.contains("healthy"), "{}", out.stdout);
    assert!(out.stdout.contains("added=1"), "last sync:\n{}", out.stdout);
    assert!(!out.all().contains(ADMIN_TOKEN), "{}", out.all());
}

/// `recover --json` prints the admin API's answer, with `--json` before or after the
/// subcommand; `--json` where it means nothing is refused.
#[actix_rt::test]
async fn recover_json_prints_the_admin_api_answer() {
    let (mock, server) = start_with_accounts("", &[("trial", "a1")]);
    for args in [
        &["recover", "a1", "--json"][..],
        &["recover", "--json", "a1"],
        &["--json", "recover", "a1"],
    ] {
        server.blacklist_via_401(&mock, "trial", "a1").await;
        let out = server.cli(args);
        out.assert_ok();
        let cli: Value = serde_json::from_str(out.stdout.trim())
            .unwrap_or_else(|e| panic!("`{args:?}` is not JSON ({e}):\n{}", out.stdout));
        assert_eq!(
            cli,
            json!({"account": "a1", "recovered": true, "tiers": ["trial"]}),
            "{args:?}"
        );
        assert_eq!(server.pool_account("trial", "a1").await["status"], "active");
    }
    let out = server.cli(&["--json", "pool"]);
    out.assert_ok();
    let cli: Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("`--json pool` is not JSON ({e}):\n{}", out.stdout));
    assert!(cli["tiers"].is_array(), "{cli}");
    let out = server.cli(&["keygen", "trial", "--json"]);
    assert_fails_with(&out, "keygen --json", &["--json"]);
}

#[test]
fn commands_say_so_when_no_server_runs() {
    let (_mock, mut env) = setup("");
    env.add_account("trial", "a1");
    // The configured listen address is where the CLI looks by default; nothing runs there.
    let dead = dead_url();
    let listen = dead.trim_start_matches("http://").to_string();
    env.config["server"]
        .as_table_mut()
        .expect("[server]")
        .insert("listen".into(), toml::Value::String(listen));
    env.write_config();
    let other_dead = dead_url();
    for args in [
        &["pool"][..],
        &["pool", "--json"],
        &["recover", "a1"],
        &["sync"],
        &["status"],
        &["status", "--json"],
    ] {
        for admin_url in [None, Some(other_dead.as_str())] {
            let out = run_cli_with(&env, admin_url, args);
            assert_fails_with(
                &out,
                &format!("{args:?} (admin url {admin_url:?}) without a server"),
                &["not running", "make run"],
            );
        }
    }
}

#[actix_rt::test]
async fn a_wrong_admin_token_is_explained_and_changes_nothing() {
    let (mock, server) = start_with_accounts("", &[("trial", "a1")]);
    server.blacklist_via_401(&mock, "trial", "a1").await;
    server.wait_startup_sync_done().await;
    server.env.add_account("trial", "a2");
    let url = server.base_url();
    for args in [
        &["pool"][..],
        &["pool", "--json"],
        &["recover", "a1"],
        &["sync"],
        &["status"],
    ] {
        let out = run_cli_env(&server.env, Some(&url), args, &[WRONG_TOKEN]);
        assert_fails_with(
            &out,
            &format!("{args:?} with a wrong token"),
            &["admin token"],
        );
        assert!(!out.all().contains(ADMIN_TOKEN), "{}", out.all());
    }
    // Neither the recover nor the sync happened.
    assert_eq!(
        server.pool_account("trial", "a1").await["status"],
        "blacklisted"
    );
    assert!(find_pool_account(&server.pool_view().await, "trial", "a2").is_none());

    // Nor may keygen fall back to the store behind the running server's back.
    let keys_before = server.admin_get("/admin/keys").await.json()["keys"]
        .as_array()
        .map(Vec::len);
    let out = run_cli_env(
        &server.env,
        Some(&url),
        &["keygen", "trial"],
        &[WRONG_TOKEN],
    );
    assert_fails_with(&out, "keygen with a wrong token", &["admin token"]);
    assert!(!out.stdout.contains("sk-cli-v1-"), "{}", out.stdout);
    let keys_after = server.admin_get("/admin/keys").await.json()["keys"]
        .as_array()
        .map(Vec::len);
    assert_eq!(keys_before, keys_after);
}

#[actix_rt::test]
async fn the_admin_token_is_generated_into_its_file() {
    let (_mock, mut env) = setup("");
    env.add_account("trial", "a1");
    env.config["admin"]
        .as_table_mut()
        .expect("[admin]")
        .remove("token");
    env.write_config();
    let token_file = env.path().join("product").join("admin.token");
    assert!(!token_file.exists());
    let mut server = TestServer::start(env);

    assert!(
        token_file.is_file(),
        "no token file at {}",
        token_file.display()
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&token_file)
        .expect("stat")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "token file mode {mode:o}");
    let token = std::fs::read_to_string(&token_file)
        .expect("read token")
        .trim()
        .to_string();
    assert!(token.len() >= 20, "a weak token: {token:?}");
    assert_ne!(token, ADMIN_TOKEN);
    assert!(
        server
            .logs()
            .iter()
            .any(|l| l.contains(&token_file.display().to_string())),
        "the start-up log should name the token file"
    );
    for line in server.logs() {
        assert!(!line.contains(&token), "token logged: {line}");
    }

    // The API takes the file's token, and only it.
    let base = server.base_url();
    let res = call_with_token(&base, "GET", "/admin/pool", Some(&token), None).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let res = call_with_token(&base, "GET", "/admin/pool", Some(ADMIN_TOKEN), None).await;
    res.assert_error(401, "authentication_error", "");
    assert!(!res.text().contains(&token));

    // The CLI (no token configured) reads the file.
    let out = server.cli(&["pool"]);
    out.assert_ok();
    assert!(out.stdout.contains("a1"), "{}", out.stdout);
    assert!(!out.all().contains(&token), "`pool` printed the token");
    server.cli(&["status"]).assert_ok();

    // A restart keeps the token.
    server.restart();
    let after = std::fs::read_to_string(&token_file).expect("read token");
    assert_eq!(after.trim(), token);
    let res = call_with_token(
        &server.base_url(),
        "GET",
        "/admin/status",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    server.cli(&["pool"]).assert_ok();
}
