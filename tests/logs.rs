//! SPEC §14: the log — operator lines on stderr and, with `--log-file`, the same lines appended
//! to the file; never a token, a key or a request body.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::admin_support::call_with_token;
use common::cli::run_raw_env;
use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const MARKER: &str = "BODY-MARKER-5c1e9a";
const NEW_ACCESS: &str = "sk-ant-oat01-rotated-access-77";
const NEW_REFRESH: &str = "sk-ant-ort01-rotated-refresh-77";

fn body(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "max_tokens": 16,
        "stream": stream,
        "messages": [{"role": "user", "content": format!("please echo {MARKER}")}]
    })
}

async fn admin(proc: &ServeProc, method: &str, path: &str, body: Option<Value>) -> Resp {
    let bytes = body.map(|b| b.to_string().into_bytes());
    call_with_token(
        &proc.base_url(),
        method,
        path,
        Some(ADMIN_TOKEN),
        bytes.as_deref(),
    )
    .await
}

async fn send(proc: &ServeProc, key: &str, body: &Value) -> Resp {
    request(
        "POST",
        &proc.url("/v1/messages"),
        &[("content-type", "application/json"), ("x-api-key", key)],
        body.to_string().into_bytes(),
    )
    .await
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .lines()
        .map(str::to_string)
        .collect()
}

#[actix_rt::test]
async fn a_full_cycle_logs_operator_lines_and_no_secret() {
    let (mock, env) = setup("[refresh]\nsuccess_lock = \"100ms\"\n");
    env.add_account("high", "acct-one");
    let log_file = env.path().join("logs").join("claude-route.log");
    let log_arg = log_file.to_string_lossy().into_owned();
    // The flag after the subcommand; the directory does not exist yet.
    let mut proc = ServeProc::start(env, &[], &["--log-file", &log_arg], &[]);

    // Key creation through the admin API.
    let res = admin(&proc, "POST", "/admin/keys", Some(json!({"tier": "high"}))).await;
    assert_eq!(res.status, 201, "{}", res.text());
    let created = res.json();
    let key = created["key"].as_str().expect("key").to_string();
    let id = created["id"].as_str().expect("id").to_string();
    let (key2, _) = {
        let res = admin(&proc, "POST", "/admin/keys", Some(json!({"tier": "high"}))).await;
        assert_eq!(res.status, 201, "{}", res.text());
        let v = res.json();
        (v["key"].as_str().expect("key").to_string(), v)
    };

    // JSON and stream requests.
    let res = send(&proc, &key, &body(SONNET, false)).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let s = request_stream(
        &proc.url("/v1/messages"),
        &[("content-type", "application/json"), ("x-api-key", &key)],
        body(OPUS, true).to_string().into_bytes(),
        None,
    )
    .await;
    assert_eq!(s.status, 200);
    assert!(String::from_utf8_lossy(&s.bytes()).contains("message_stop"));

    // An upstream error.
    mock.push_answer(Answer::error(500, "api_error", "Internal server error"));
    let res = send(&proc, &key, &body(SONNET, false)).await;
    assert_eq!(res.status, 500, "{}", res.text());

    // An expired token: refreshed through the mock's token endpoint, request retried.
    mock.push_oauth_answer(Answer::new(
        200,
        json!({
            "access_token": NEW_ACCESS,
            "refresh_token": NEW_REFRESH,
            "expires_in": 3600,
            "token_type": "Bearer"
        })
        .to_string(),
    ));
    mock.push_answer(Answer::error(
        401,
        "authentication_error",
        "OAuth token has expired",
    ));
    let res = send(&proc, &key, &body(SONNET, false)).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(mock.oauth_calls().len(), 1, "one refresh");
    assert_eq!(
        mock.last().bearer(),
        Some(NEW_ACCESS),
        "retried with the new token"
    );
    assert!(
        proc.wait_for_log("refresh succeeded:", Duration::from_secs(3))
            .is_some(),
        "no `refresh succeeded:` line"
    );

    // A second key, revoked, then used.
    let res = send(&proc, &key2, &body(SONNET, false)).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let id2 = {
        let res = admin(&proc, "GET", "/admin/keys?status=active", None).await;
        res.json()["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| k["id"].as_str().unwrap_or("").to_string())
            .find(|k| *k != id)
            .expect("second key")
    };
    let res = admin(&proc, "DELETE", &format!("/admin/keys/{id2}"), None).await;
    assert_eq!(res.status, 200, "{}", res.text());
    send(&proc, &key2, &body(SONNET, false)).await.assert_error(
        401,
        "authentication_error",
        "API key has been revoked",
    );
    // A request with no valid key at all.
    send(
        &proc,
        "sk-cli-v1-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        &body(SONNET, false),
    )
    .await
    .assert_error(401, "authentication_error", "Unauthorized API key");

    // Let the usage settle, stop gracefully so everything is written.
    sleep(Duration::from_millis(300)).await;
    proc.signal("TERM");
    let status = proc
        .wait_exit_async(Duration::from_secs(10))
        .await
        .expect("serve did not stop after SIGTERM");
    assert!(status.success(), "exit status {status}");
    sleep(Duration::from_millis(100)).await;

    let stderr = proc.stderr_lines();
    let stdout = proc.stdout_lines();
    let file = read_lines(&log_file);
    assert!(!file.is_empty(), "log file {} is empty", log_file.display());

    let secrets: Vec<String> = vec![
        key.clone(),
        key["sk-cli-v1-".len()..].to_string(),
        key2.clone(),
        key2["sk-cli-v1-".len()..].to_string(),
        access_token("acct-one"),
        "sk-ant-ort01-acct-one".to_string(),
        NEW_ACCESS.to_string(),
        NEW_REFRESH.to_string(),
        ADMIN_TOKEN.to_string(),
        MARKER.to_string(),
    ];
    for (what, lines) in [
        ("stderr", &stderr),
        ("stdout", &stdout),
        ("log file", &file),
    ] {
        for line in lines {
            for s in &secrets {
                assert!(!line.contains(s.as_str()), "{what} holds `{s}`: {line}");
            }
        }
    }

    let has = |needle: &str| file.iter().any(|l| l.contains(needle));
    for needle in [
        "listening on http://",
        "assigned to account: acct-one (slots: 1/3)",
        "assigned to account: acct-one (slots: 2/3)",
        "using assigned account: acct-one",
        "rate limit check passed:",
        "refresh succeeded: acct-one",
        "sync finished: added=",
    ] {
        assert!(
            has(needle),
            "the log file lacks `{needle}`:\n{}",
            file.join("\n")
        );
    }
    // Keys appear by prefix only.
    assert!(
        file.iter().any(|l| l.contains(&key[..14])),
        "no line names the key's prefix {}",
        &key[..14]
    );

    // The same lines go to stderr and to the file.
    assert_eq!(
        file,
        stderr,
        "the log file and stderr differ\nfile:\n{}\nstderr:\n{}",
        file.join("\n"),
        stderr.join("\n")
    );
}

#[actix_rt::test]
async fn the_log_file_flag_goes_before_the_subcommand_and_appends() {
    let (_mock, env) = setup("");
    env.add_account("trial", "a1");
    let log_file = env.path().join("ops.log");
    std::fs::write(&log_file, "an older line\n").expect("seed log");
    let arg = log_file.to_string_lossy().into_owned();
    let mut proc = ServeProc::start(env, &["--log-file", &arg], &[], &[]);
    proc.signal("TERM");
    let status = proc
        .wait_exit_async(Duration::from_secs(10))
        .await
        .expect("serve did not stop");
    assert!(status.success(), "{status}");
    let env = proc.into_env();
    let first = read_lines(&log_file);
    assert_eq!(first[0], "an older line", "the file was truncated");
    assert!(
        first.iter().any(|l| l.contains("listening on http://")),
        "{first:?}"
    );

    // A second run appends.
    let mut proc = ServeProc::start(env, &[], &["--log-file", &arg], &[]);
    proc.signal("TERM");
    proc.wait_exit_async(Duration::from_secs(10))
        .await
        .expect("serve did not stop");
    let second = read_lines(&log_file);
    assert_eq!(
        &second[..first.len()],
        &first[..],
        "the first run's lines changed"
    );
    assert!(
        second[first.len()..]
            .iter()
            .any(|l| l.contains("listening on http://")),
        "the second run did not append: {second:?}"
    );
}

#[test]
fn rust_log_sets_the_level() {
    let (_mock, env) = setup("");
    env.add_account("trial", "a1");
    // At `error`, start-up logs nothing (the address then comes from a known port).
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let listen = format!("127.0.0.1:{port}");
    let config = env.config_path.to_string_lossy().into_owned();
    let quiet = env.path().join("error-level.log");
    let quiet_arg = quiet.to_string_lossy().into_owned();
    let mut cmd = std::process::Command::new(common::cli::BIN);
    cmd.args([
        "--config",
        &config,
        "--listen",
        &listen,
        "--log-file",
        &quiet_arg,
        "serve",
    ])
    .current_dir(env.path())
    .env("RUST_LOG", "error")
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    common::cli::clean_env(&mut cmd);
    let mut child = cmd.spawn().expect("spawn");
    let up = wait_until(Duration::from_secs(15), || {
        std::net::TcpStream::connect(&listen).ok()
    });
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = wait_until(Duration::from_secs(10), || child.try_wait().ok().flatten());
    let _ = child.kill();
    let _ = child.wait();
    assert!(up.is_some(), "the server did not come up at {listen}");
    let text = std::fs::read_to_string(&quiet).unwrap_or_default();
    assert!(
        !text.contains("listening on"),
        "RUST_LOG=error still logs info lines:\n{text}"
    );

    // The operator commands take the flag as well (and do not fail because of it).
    let cli_log = env.path().join("cli.log");
    let cli_arg = cli_log.to_string_lossy().into_owned();
    let out = run_raw_env(
        env.path(),
        &["--config", &config, "keys", "list", "--log-file", &cli_arg],
        &[],
    );
    out.assert_ok();
    assert!(
        cli_log.exists(),
        "`--log-file` after `keys list` made no file"
    );
}
