//! Self-checks of the mock upstream, so the other tests' assertions can actually fail:
//! talked to directly, the mock streams in real time, notices a client leaving, and
//! follows its script.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::time::Duration;

fn stream_body() -> Vec<u8> {
    let mut body = message_request(SONNET);
    body["stream"] = serde_json::json!(true);
    body.to_string().into_bytes()
}

#[actix_rt::test]
async fn mock_streams_in_real_time() {
    let mock = MockUpstream::start();
    mock.set_stream(3, Duration::from_millis(200));
    let url = format!("{}/v1/messages", mock.url());
    let res = request_stream(
        &url,
        &[("content-type", "application/json")],
        stream_body(),
        None,
    )
    .await;
    assert_eq!(res.status, 200);
    let stream = &mock.streams()[0];
    assert!(stream.finished);
    assert_eq!(res.bytes(), stream.bytes());
    assert!(res.chunks[0].0 < stream.sent.last().expect("sent").0);
    let text = String::from_utf8_lossy(&res.bytes()).into_owned();
    let events: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(
        events,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
}

#[actix_rt::test]
async fn mock_notices_a_client_leaving() {
    let mock = MockUpstream::start();
    mock.set_stream(30, Duration::from_millis(100));
    let url = format!("{}/v1/messages", mock.url());
    let res = request_stream(
        &url,
        &[("content-type", "application/json")],
        stream_body(),
        Some(1),
    )
    .await;
    assert_eq!(res.chunks.len(), 1);
    let cancelled = poll_async(Duration::from_secs(3), || async {
        mock.stream_cancelled().then_some(())
    })
    .await;
    assert!(cancelled.is_some(), "{:?}", mock.streams());
}

#[actix_rt::test]
async fn mock_follows_its_script() {
    let mock = MockUpstream::start();
    let url = format!("{}/v1/messages?beta=true", mock.url());
    let body = message_request(SONNET).to_string().into_bytes();
    mock.push_answer(
        Answer::error(429, "rate_limit_error", "slow down").header("retry-after", "7"),
    );
    let res = request("POST", &url, &[("x-test", "1")], body.clone()).await;
    assert_eq!(res.status, 429);
    assert_eq!(res.header("retry-after"), Some("7"));
    let res = request("POST", &url, &[], body.clone()).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json()["model"], SONNET);
    assert_eq!(res.header("anthropic-organization-id"), Some("org-secret"));
    let first = &mock.requests()[0];
    assert_eq!(first.path, "/v1/messages?beta=true");
    assert_eq!(first.header("x-test"), Some("1"));
    assert_eq!(first.body, body);

    let token_url = format!("{}/v1/oauth/token", mock.url());
    let res = request("POST", &token_url, &[], b"{}".to_vec()).await;
    assert_eq!(res.json()["access_token"], "sk-ant-oat01-new-1");
    assert_eq!(mock.oauth_calls().len(), 1);
    assert_eq!(mock.api_requests().len(), 2);
}
