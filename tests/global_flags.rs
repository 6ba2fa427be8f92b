//! SPEC §13: the global flags `--store`, `--account-dir`, `--upstream` and
//! `--oauth-token-url` win over the config file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::refresh_support::*;
use common::*;
use serde_json::json;
use std::time::Duration;

#[actix_rt::test]
async fn global_flags_win_over_the_config_file() {
    // The config file names a dead upstream and token endpoint, and an empty account dir.
    let (mock, env) = setup(
        "[upstream]\nbase_url = \"http://127.0.0.1:9\"\n\
         oauth_token_url = \"http://127.0.0.1:9/v1/oauth/token\"\n",
    );
    // The flags' account dir holds one account whose token is inside the refresh lead.
    let flag_dir = env.path().join("flag-accounts");
    std::fs::create_dir_all(flag_dir.join("supreme")).unwrap();
    let credential = claude_code_with("sk-ant-oat01-f1", "sk-ant-ort01-f1", now_ms() + 30_000);
    std::fs::write(flag_dir.join("supreme/f1.json"), credential.to_string()).unwrap();
    let db = env.path().join("flag.db");
    let (store, dir) = (
        format!("sqlite:{}", db.display()),
        flag_dir.display().to_string(),
    );
    let (upstream, token_url) = (mock.url(), format!("{}/v1/oauth/token", mock.url()));
    let run = ServeProc::start(
        env,
        &[
            "--store",
            &store,
            "--account-dir",
            &dir,
            "--upstream",
            &upstream,
            "--oauth-token-url",
            &token_url,
        ],
        &[],
        &[],
    );
    assert!(db.exists(), "--store: no database at {}", db.display());

    let auth = format!("Bearer {ADMIN_TOKEN}");
    let created = request(
        "POST",
        &run.url("/admin/keys"),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        json!({"tier": "supreme"}).to_string().into_bytes(),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let key = created.json()["key"].as_str().unwrap().to_string();

    let res = request(
        "POST",
        &run.url("/v1/messages"),
        &[("x-api-key", &key), ("content-type", "application/json")],
        message_request(SONNET).to_string().into_bytes(),
    )
    .await;
    assert_eq!(
        res.status,
        200,
        "--upstream / --account-dir: {}",
        res.text()
    );
    assert_eq!(mock.messages_requests().len(), 1);
    assert!(
        wait_oauth_calls(&mock, 1, Duration::from_secs(5)).is_some(),
        "--oauth-token-url: the due refresh did not reach the mock"
    );
}
