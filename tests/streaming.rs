//! SPEC §7: streams are relayed event by event, and a client that leaves cancels upstream.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::time::Duration;

fn stream_request() -> serde_json::Value {
    let mut body = message_request(SONNET);
    body["stream"] = serde_json::json!(true);
    body
}

fn serve() -> (MockUpstream, TestServer, String) {
    let (mock, env) = setup("");
    env.add_account("trial", "a1");
    let (key, _) = keygen_offline(&env, "trial", &[]);
    (mock, TestServer::start(env), key)
}

#[actix_rt::test]
async fn stream_is_relayed_as_it_arrives() {
    let (mock, server, key) = serve();
    mock.set_stream(5, Duration::from_millis(300));
    let res = server.post_stream(&key, &stream_request(), None).await;
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.bytes()));
    assert!(
        res.header("content-type")
            .is_some_and(|c| c.starts_with("text/event-stream")),
        "content-type: {:?}",
        res.header("content-type")
    );

    let streams = mock.streams();
    assert_eq!(streams.len(), 1, "one upstream stream");
    let upstream = &streams[0];
    assert!(upstream.finished, "the mock sent the whole stream");
    assert_eq!(
        String::from_utf8_lossy(&res.bytes()),
        String::from_utf8_lossy(&upstream.bytes()),
        "client bytes == upstream bytes"
    );

    let (first_at, first) = &res.chunks[0];
    assert!(
        first.starts_with(b"event: message_start"),
        "first chunk: {}",
        String::from_utf8_lossy(first)
    );
    let (last_sent_at, _) = upstream.sent.last().expect("events sent");
    assert!(
        first_at < last_sent_at,
        "the client got its first bytes {:?} after the mock sent its last event: the stream was buffered",
        first_at.duration_since(*last_sent_at)
    );
    // The deltas were 300 ms apart upstream: the client saw them spread out too.
    let (last_at, _) = res.chunks.last().expect("chunks");
    assert!(
        last_at.duration_since(*first_at) >= Duration::from_millis(1000),
        "chunks arrived within {:?}: buffered",
        last_at.duration_since(*first_at)
    );
}

#[actix_rt::test]
async fn client_disconnect_cancels_the_upstream_stream() {
    let (mock, server, key) = serve();
    mock.set_stream(30, Duration::from_millis(200));
    let res = server.post_stream(&key, &stream_request(), Some(1)).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.chunks.len(), 1);
    // The response (and its connection) is dropped by now.
    let cancelled = poll_async(Duration::from_secs(3), || async {
        mock.stream_cancelled().then_some(())
    })
    .await;
    assert!(
        cancelled.is_some(),
        "the upstream stream kept running after the client left: {:?}",
        mock.streams()
    );
    assert!(!mock.streams()[0].finished);
}

#[actix_rt::test]
async fn stream_errors_before_headers_pass_through() {
    let (mock, server, key) = serve();
    let body = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    mock.push_answer(Answer::new(529, body));
    let res = server.post_stream(&key, &stream_request(), None).await;
    assert_eq!(res.status, 529);
    assert_eq!(String::from_utf8_lossy(&res.bytes()), body);
}
