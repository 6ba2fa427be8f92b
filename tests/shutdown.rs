//! SPEC §15: SIGTERM/SIGINT stop accepting, let in-flight streams finish within the grace
//! period, flush the store and exit 0; a refresh in flight is finished and saved (§9); and
//! the shipped systemd unit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::admin_support::call_with_token;
use common::refresh_support::{
    oauth_part, read_account, refresh_toml, wait_oauth_calls, write_expiring,
};
use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

/// The harness configures `[server] shutdown_grace = "3s"`.
const GRACE: Duration = Duration::from_secs(3);

async fn create_key(proc: &ServeProc, tier: &str) -> (String, String) {
    let body = json!({"tier": tier}).to_string();
    let res = call_with_token(
        &proc.base_url(),
        "POST",
        "/admin/keys",
        Some(ADMIN_TOKEN),
        Some(body.as_bytes()),
    )
    .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let v = res.json();
    (
        v["key"].as_str().expect("key").to_string(),
        v["id"].as_str().expect("id").to_string(),
    )
}

/// Starts a streaming request in the background; returns its handle.
fn spawn_stream(url: String, key: String) -> actix_rt::task::JoinHandle<StreamResp> {
    actix_rt::spawn(async move {
        let mut body = message_request(SONNET);
        body["stream"] = json!(true);
        request_stream(
            &url,
            &[("content-type", "application/json"), ("x-api-key", &key)],
            body.to_string().into_bytes(),
            None,
        )
        .await
    })
}

/// Waits until the mock has sent at least `n` events of its first stream.
async fn wait_stream_started(mock: &MockUpstream, n: usize) {
    let started = poll_async(Duration::from_secs(5), || {
        let sent = mock.streams().first().map_or(0, |s| s.sent.len());
        async move { (sent >= n).then_some(()) }
    })
    .await;
    assert!(started.is_some(), "the upstream stream never started");
}

fn refused(addr: &str) -> bool {
    std::net::TcpStream::connect_timeout(
        &addr.parse().expect("socket address"),
        Duration::from_millis(200),
    )
    .is_err()
}

#[actix_rt::test]
async fn sigterm_lets_a_stream_finish_refuses_new_connections_and_flushes() {
    let (mock, env) = setup("");
    env.add_account("trial", "a1");
    // 10 deltas × 200 ms: about 2 s, inside the 3 s grace.
    mock.set_stream(10, Duration::from_millis(200));
    let mut proc = ServeProc::start(env, &[], &[], &[]);
    let (key, id) = create_key(&proc, "trial").await;

    let stream = spawn_stream(proc.url("/v1/messages"), key.clone());
    wait_stream_started(&mock, 3).await;
    let sigterm_at = Instant::now();
    proc.signal("TERM");

    // New connections are refused while the stream still runs.
    let addr = proc.addr.clone();
    let refused_in_time = poll_async(Duration::from_secs(1), || {
        let a = addr.clone();
        async move { refused(&a).then_some(()) }
    })
    .await;
    let still_streaming = !mock.streams()[0].finished;
    assert!(
        refused_in_time.is_some(),
        "a new connection was still accepted 1 s after SIGTERM"
    );
    assert!(
        still_streaming,
        "test too slow: the stream ended before new connections were checked"
    );

    // The stream arrives whole.
    let got = stream.await.expect("stream task");
    assert_eq!(got.status, 200);
    let record = mock
        .streams()
        .first()
        .cloned()
        .expect("the mock served a stream");
    assert!(
        record.finished,
        "the upstream stream was cut off: {record:?}"
    );
    let bytes = got.bytes();
    assert_eq!(
        String::from_utf8_lossy(&bytes),
        String::from_utf8_lossy(&record.bytes()),
        "the client did not get every byte upstream sent"
    );
    assert!(
        String::from_utf8_lossy(&bytes)
            .trim_end()
            .ends_with(r#"data: {"type":"message_stop"}"#),
        "the stream does not end with message_stop"
    );

    // Exit 0 within the grace period.
    let status = proc
        .wait_exit_async(GRACE + Duration::from_secs(2))
        .await
        .unwrap_or_else(|| panic!("still running {:?} after SIGTERM", sigterm_at.elapsed()));
    let took = sigterm_at.elapsed();
    assert!(status.success(), "SIGTERM exit status {status}");
    assert!(
        took <= GRACE + Duration::from_millis(1500),
        "exit took {took:?} after SIGTERM (grace {GRACE:?})"
    );
    assert!(
        proc.stderr_lines()
            .iter()
            .any(|l| l.contains("store flushed") || l.contains("flushed")),
        "no log line says the store was flushed"
    );

    // The stream's usage was flushed to the store.
    let env = proc.into_env();
    let server = TestServer::start(env);
    let usage = server
        .wait_key_usage(&id, &usage_json(1, 10, 5, 2, 3))
        .await;
    assert_eq!(usage, usage_json(1, 10, 5, 2, 3), "usage after restart");
    let view = server.key_view(&id).await;
    assert_eq!(view["account"], "a1", "binding after restart: {view}");
}

#[actix_rt::test]
async fn sigint_stops_gracefully_too() {
    let (mock, env) = setup("");
    env.add_account("trial", "a1");
    mock.set_stream(5, Duration::from_millis(150));
    let mut proc = ServeProc::start(env, &[], &[], &[]);
    let (key, id) = create_key(&proc, "trial").await;
    let stream = spawn_stream(proc.url("/v1/messages"), key);
    wait_stream_started(&mock, 2).await;
    proc.signal("INT");
    let got = stream.await.expect("stream task");
    assert!(
        String::from_utf8_lossy(&got.bytes()).contains("message_stop"),
        "the stream was cut by SIGINT"
    );
    let status = proc
        .wait_exit_async(GRACE + Duration::from_secs(2))
        .await
        .expect("still running after SIGINT");
    assert!(status.success(), "SIGINT exit status {status}");
    let server = TestServer::start(proc.into_env());
    server
        .wait_key_usage(&id, &usage_json(1, 10, 5, 2, 3))
        .await;
    assert_eq!(
        server.key_view(&id).await["usage"],
        usage_json(1, 10, 5, 2, 3)
    );
}

#[actix_rt::test]
async fn the_grace_period_bounds_the_wait() {
    let (mock, env) = setup("");
    env.add_account("trial", "a1");
    // 10 × 600 ms: longer than the 3 s grace.
    mock.set_stream(10, Duration::from_millis(600));
    let mut proc = ServeProc::start(env, &[], &[], &[]);
    let (key, _) = create_key(&proc, "trial").await;
    let stream = spawn_stream(proc.url("/v1/messages"), key);
    wait_stream_started(&mock, 2).await;
    let sigterm_at = Instant::now();
    proc.signal("TERM");
    let status = proc
        .wait_exit_async(GRACE + Duration::from_secs(3))
        .await
        .unwrap_or_else(|| panic!("still running {:?} after SIGTERM", sigterm_at.elapsed()));
    let took = sigterm_at.elapsed();
    assert!(
        took <= GRACE + Duration::from_millis(1500),
        "exit took {took:?}, grace is {GRACE:?}"
    );
    assert!(
        took >= GRACE - Duration::from_millis(500),
        "exit after {took:?}: the in-flight stream was not given the grace period"
    );
    assert!(status.success(), "exit status {status}");
    // The client's stream ends (cut), it does not hang.
    let _ = stream.await;
}

/// A grace that is not whole seconds is not cut short: with 1800 ms, a stream that needs
/// ~1.5 s after the signal arrives whole (actix's shutdown takes whole seconds).
#[actix_rt::test]
async fn a_grace_in_milliseconds_is_not_cut_short() {
    let (mock, env) = setup("[server]\nshutdown_grace = \"1800ms\"\n");
    env.add_account("trial", "a1");
    mock.set_stream(7, Duration::from_millis(250));
    let mut proc = ServeProc::start(env, &[], &[], &[]);
    let (key, _) = create_key(&proc, "trial").await;
    let stream = spawn_stream(proc.url("/v1/messages"), key);
    wait_stream_started(&mock, 2).await;
    proc.signal("TERM");
    let got = stream.await.expect("stream task");
    assert_eq!(got.status, 200);
    assert!(
        String::from_utf8_lossy(&got.bytes())
            .trim_end()
            .ends_with(r#"data: {"type":"message_stop"}"#),
        "the stream was cut before the grace ended"
    );
    let status = proc.wait_exit_async(Duration::from_secs(5)).await;
    assert!(status.is_some_and(|s| s.success()), "exit: {status:?}");
}

#[actix_rt::test]
async fn an_idle_server_stops_at_once() {
    let (_mock, env) = setup("");
    env.add_account("trial", "a1");
    let mut proc = ServeProc::start(env, &[], &[], &[]);
    let start = Instant::now();
    proc.signal("TERM");
    let status = proc
        .wait_exit_async(GRACE + Duration::from_secs(2))
        .await
        .expect("still running after SIGTERM");
    assert!(status.success(), "{status}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "an idle server took {:?} to stop",
        start.elapsed()
    );
}

/// SIGTERM while the token endpoint is still answering a refresh: the endpoint has spent the
/// old refresh token, so the process waits for the answer and saves the rotated pair to the
/// account file and the store before it exits.
#[actix_rt::test]
async fn sigterm_during_a_refresh_saves_the_rotated_tokens() {
    let (mock, env) = setup(&refresh_toml("2s", "300ms", "400ms", 3));
    let slow_answer = Duration::from_millis(1_500);
    mock.set_oauth_delay(slow_answer);
    // Inside the 2 s lead: refreshed at start-up.
    write_expiring(&env, "supreme", "a1", now_ms() + 1_000);
    let mut proc = ServeProc::start(env, &[], &[], &[]);
    let asked = poll_async(Duration::from_secs(5), || {
        let n = mock.oauth_calls().len();
        async move { (n >= 1).then_some(()) }
    })
    .await;
    assert!(asked.is_some(), "no refresh started");
    let sigterm_at = Instant::now();
    proc.signal("TERM");

    let status = proc
        .wait_exit_async(GRACE + Duration::from_secs(2))
        .await
        .unwrap_or_else(|| panic!("still running {:?} after SIGTERM", sigterm_at.elapsed()));
    assert!(status.success(), "SIGTERM exit status {status}");
    assert!(
        sigterm_at.elapsed() <= GRACE + Duration::from_millis(1500),
        "exit took {:?} (grace {GRACE:?})",
        sigterm_at.elapsed()
    );
    assert!(
        wait_oauth_calls(&mock, 2, Duration::ZERO).is_none(),
        "one refresh only"
    );

    let env = proc.into_env();
    let file = read_account(&env, "supreme", "a1");
    let o = oauth_part(&file);
    assert_eq!(o["accessToken"], "sk-ant-oat01-new-1", "file: {file}");
    assert_eq!(o["refreshToken"], "sk-ant-ort01-new-1", "file: {file}");
    let stored = claude_route::store::SqliteStore::open(&env.db_path())
        .and_then(|s| s.load_all())
        .expect("read the store");
    let cred = stored
        .credentials
        .get(&("supreme".to_string(), "a1".to_string()))
        .expect("the store holds a1's credential");
    assert_eq!(cred.access_token, "sk-ant-oat01-new-1", "store");
    assert_eq!(
        cred.refresh_token.as_deref(),
        Some("sk-ant-ort01-new-1"),
        "store"
    );
}

#[test]
fn the_systemd_unit_runs_serve_and_restarts_on_failure() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join("claude-route.service");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut section = String::new();
    let mut service: Vec<(String, String)> = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            section = line.to_string();
            continue;
        }
        if section == "[Service]" {
            let (k, v) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("not key=value in [Service]: {line}"));
            service.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let get = |k: &str| -> Vec<&str> {
        service
            .iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(get("Restart"), vec!["on-failure"], "{text}");
    assert_eq!(get("KillSignal"), vec!["SIGTERM"], "{text}");
    let exec = get("ExecStart");
    assert_eq!(exec.len(), 1, "one ExecStart: {text}");
    let words: Vec<&str> = exec[0].split_whitespace().collect();
    assert!(
        words.first().is_some_and(|w| w.ends_with("claude-route")),
        "ExecStart runs claude-route: {}",
        exec[0]
    );
    assert!(
        words.contains(&"serve"),
        "ExecStart runs `serve`: {}",
        exec[0]
    );
    assert!(
        text.contains("[Unit]") && text.contains("[Install]"),
        "{text}"
    );
}
