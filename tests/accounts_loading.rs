//! SPEC §2: both account file formats load; bad files are skipped, named in a warning, and
//! left untouched.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;

async fn send(server: &TestServer, key: &str) -> Resp {
    server
        .post_messages(Some(key), &message_request(SONNET), &[])
        .await
}

#[actix_rt::test]
async fn both_file_formats_serve() {
    let (mock, env) = setup("[tiers.trial]\nslots = 1\n");
    env.add_account("trial", "cc");
    env.add_flat_account("trial", "flat");
    let (k1, _) = keygen_offline(&env, "trial", &[]);
    let (k2, _) = keygen_offline(&env, "trial", &[]);
    let server = TestServer::start(env);
    assert_eq!(send(&server, &k1).await.status, 200);
    assert_eq!(mock.last().bearer(), Some(access_token("cc").as_str()));
    assert_eq!(send(&server, &k2).await.status, 200);
    assert_eq!(mock.last().bearer(), Some(access_token("flat").as_str()));
}

#[actix_rt::test]
async fn account_without_refresh_token_serves() {
    let (mock, env) = setup("");
    let cred = json!({"accessToken": "sk-ant-oat01-setup", "expiresAt": now_ms() + 3_600_000});
    env.write_account_file("trial", "setup.json", cred.to_string().as_bytes());
    let (key, _) = keygen_offline(&env, "trial", &[]);
    let server = TestServer::start(env);
    let res = send(&server, &key).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(mock.last().bearer(), Some("sk-ant-oat01-setup"));
}

#[actix_rt::test]
async fn bad_files_are_skipped_with_a_warning_and_left_alone() {
    let (mock, env) = setup("[tiers.trial]\nslots = 1\n");
    env.add_account("trial", "good");
    let broken = br#"{"claudeAiOauth": {"accessToken": "sk-ant-oat01-broken", "#.to_vec();
    let no_access = json!({"claudeAiOauth": {"refreshToken": "sk-ant-ort01-x",
                                             "expiresAt": now_ms() + 3_600_000}})
    .to_string()
    .into_bytes();
    let bad_name =
        json!({"accessToken": "sk-ant-oat01-badname", "refreshToken": "sk-ant-ort01-badname",
                          "expiresAt": now_ms() + 3_600_000})
        .to_string()
        .into_bytes();
    let files = [
        ("broken.json", broken),
        ("noaccess.json", no_access),
        ("bad name!.json", bad_name),
    ];
    let paths: Vec<_> = files
        .iter()
        .map(|(name, bytes)| (env.write_account_file("trial", name, bytes), bytes.clone()))
        .collect();
    let (k1, _) = keygen_offline(&env, "trial", &[]);
    let (k2, _) = keygen_offline(&env, "trial", &[]);
    let server = TestServer::start(env);

    for stem in ["broken", "noaccess", "bad name!"] {
        let line = server.wait_for_log(stem, Duration::from_secs(2));
        let line = line.unwrap_or_else(|| panic!("no log line names `{stem}`"));
        assert!(
            line.contains("WARN") || line.to_lowercase().contains("warn"),
            "the line naming {stem} should be a warning: {line}"
        );
    }

    let res = send(&server, &k1).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(mock.last().bearer(), Some(access_token("good").as_str()));
    // Only `good` is an account: with one slot each, the second key finds no room.
    send(&server, &k2)
        .await
        .assert_error(503, "api_error", "All Trial accounts are at capacity");
    for r in mock.api_requests() {
        assert_eq!(r.bearer(), Some(access_token("good").as_str()));
    }

    for (path, bytes) in &paths {
        let now =
            std::fs::read(path).unwrap_or_else(|e| panic!("{} was removed: {e}", path.display()));
        assert_eq!(&now, bytes, "{} was rewritten", path.display());
    }
}
