//! SPEC §7 (usage) and §11: input, output, cache-creation and cache-read tokens from JSON
//! answers and streams are added to the key's and the account's totals — without touching a
//! byte of the stream — and survive restarts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

/// Triggers that make the store refuse every usage write, as a full disk would.
const REFUSE_USAGE: &str = "
    CREATE TRIGGER refuse_key_usage BEFORE INSERT ON key_usage
        BEGIN SELECT RAISE(ABORT, 'disk full'); END;
    CREATE TRIGGER refuse_key_usage_update BEFORE UPDATE ON key_usage
        BEGIN SELECT RAISE(ABORT, 'disk full'); END;
    CREATE TRIGGER refuse_account_usage BEFORE INSERT ON account_usage
        BEGIN SELECT RAISE(ABORT, 'disk full'); END;
    CREATE TRIGGER refuse_account_usage_update BEFORE UPDATE ON account_usage
        BEGIN SELECT RAISE(ABORT, 'disk full'); END;";

const ALLOW_USAGE: &str = "
    DROP TRIGGER refuse_key_usage; DROP TRIGGER refuse_key_usage_update;
    DROP TRIGGER refuse_account_usage; DROP TRIGGER refuse_account_usage_update;";

fn serve() -> (MockUpstream, TestServer, String, String) {
    let (mock, env) = setup("[tiers.high]\nlimits = { sonnet = 50, opus = 10 }\n");
    env.add_account("high", "h1");
    let (key, id) = keygen_offline(&env, "high", &[]);
    (mock, TestServer::start(env), key, id)
}

fn stream_request(model: &str) -> Value {
    let mut body = message_request(model);
    body["stream"] = json!(true);
    body
}

async fn assert_totals(server: &TestServer, key_id: &str, want: &Value) {
    let got = server.wait_key_usage(key_id, want).await;
    assert_eq!(&got, want, "the key's usage totals");
    let got = server.wait_account_usage("high", "h1", want).await;
    assert_eq!(&got, want, "the account's usage totals");
    let view = server.pool_view().await;
    let tier = view["tiers"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["tier"] == "high"))
        .cloned()
        .unwrap_or_else(|| panic!("no high tier in {view}"));
    assert_eq!(&tier["usage"], want, "the tier's usage totals: {tier}");
}

/// What a restarted server read back from the store: the key's and the account's totals.
async fn assert_usage_after_restart(server: &TestServer, key_id: &str, want: &Value) {
    assert_eq!(
        &server.key_view(key_id).await["usage"],
        want,
        "key usage after restart"
    );
    assert_eq!(
        &server.pool_account("high", "h1").await["usage"],
        want,
        "account usage after restart"
    );
}

#[actix_rt::test]
async fn json_answers_add_their_usage() {
    let (_mock, server, key, id) = serve();
    for model in [SONNET, OPUS, HAIKU] {
        let res = server.send_model(&key, model).await;
        assert_eq!(res.status, 200, "{}", res.text());
    }
    // The mock's answer: input 10, output 5, cache creation 2, cache read 3.
    assert_totals(&server, &id, &usage_json(3, 30, 15, 6, 9)).await;
}

/// A JSON answer too large to come with its head is passed on as it arrives: byte for byte,
/// with its content-length, and counted at its end (a small one goes out in one piece).
#[actix_rt::test]
async fn a_json_answer_larger_than_a_read_is_relayed_whole_and_counted() {
    let (mock, server, key, id) = serve();
    let mut answer = common::mock_routes::message_body(SONNET);
    answer["content"][0]["text"] = json!("many words ".repeat(30_000));
    let answer = answer.to_string();
    mock.set_fixed_answer(Some(Answer::new(200, answer.clone())));
    let res = server.send_model(&key, SONNET).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.body.len(), answer.len());
    assert!(
        res.body == answer.as_bytes(),
        "the answer changed on its way"
    );
    assert_eq!(
        res.header("content-length"),
        Some(answer.len().to_string().as_str())
    );
    assert_eq!(res.header("transfer-encoding"), None);
    assert_totals(&server, &id, &usage_json(1, 10, 5, 2, 3)).await;
}

#[actix_rt::test]
async fn a_long_stream_is_relayed_byte_for_byte_and_its_usage_counted() {
    let (mock, server, key, id) = serve();
    mock.set_stream(200, Duration::from_millis(1));
    let res = server
        .post_stream(&key, &stream_request(SONNET), None)
        .await;
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.bytes()));
    let streams = mock.streams();
    assert_eq!(streams.len(), 1);
    assert!(streams[0].finished, "the mock sent the whole stream");
    assert_eq!(streams[0].sent.len(), 200 + 5, "every event was sent");
    let got = res.bytes();
    let sent = streams[0].bytes();
    assert_eq!(
        got.len(),
        sent.len(),
        "client got as many bytes as the mock sent"
    );
    assert!(got == sent, "client bytes differ from the mock's bytes");
    // Headers of a streamed answer are filtered like any other.
    assert_eq!(res.header("request-id"), Some("req_mock"));
    assert_eq!(
        res.header("anthropic-ratelimit-unified-status"),
        Some("allowed")
    );
    assert_eq!(res.header("anthropic-organization-id"), None);
    assert!(res.header("x-ratelimit-remaining-requests").is_some());

    // message_start: input 10, cache 2 + 3, output 1; message_delta: output 5 (cumulative).
    assert_totals(&server, &id, &usage_json(1, 10, 5, 2, 3)).await;

    let res = server.post_stream(&key, &stream_request(OPUS), None).await;
    assert_eq!(res.status, 200);
    assert_totals(&server, &id, &usage_json(2, 20, 10, 4, 6)).await;
}

fn sse(event: &str, data: Value) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

#[actix_rt::test]
async fn message_delta_usage_is_cumulative_not_added_twice() {
    let (mock, server, key, id) = serve();
    // Newer API versions repeat the input and cache counts in message_delta, cumulatively.
    let body = [
        sse(
            "message_start",
            json!({"type":"message_start","message":{"id":"msg_2","type":"message",
                "role":"assistant","model":SONNET,"content":[],"stop_reason":null,
                "stop_sequence":null,"usage":{"input_tokens":100,
                "cache_creation_input_tokens":20,"cache_read_input_tokens":30,
                "output_tokens":1}}}),
        ),
        sse(
            "content_block_start",
            json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
        ),
        sse("ping", json!({"type":"ping"})),
        sse(
            "content_block_delta",
            json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}),
        ),
        sse(
            "content_block_stop",
            json!({"type":"content_block_stop","index":0}),
        ),
        sse(
            "message_delta",
            json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},
                "usage":{"input_tokens":100,"cache_creation_input_tokens":20,
                "cache_read_input_tokens":30,"output_tokens":57}}),
        ),
        sse("message_stop", json!({"type":"message_stop"})),
    ]
    .concat();
    mock.push_answer(Answer::new(200, body.clone()).header("content-type", "text/event-stream"));
    let res = server
        .post_stream(&key, &stream_request(SONNET), None)
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(String::from_utf8_lossy(&res.bytes()), body);
    assert_totals(&server, &id, &usage_json(1, 100, 57, 20, 30)).await;
}

#[actix_rt::test]
async fn usage_survives_a_graceful_restart() {
    let (mock, mut server, key, id) = serve();
    assert_eq!(server.send_model(&key, SONNET).await.status, 200);
    let res = server
        .post_stream(&key, &stream_request(SONNET), None)
        .await;
    assert_eq!(res.status, 200);
    let want = usage_json(2, 20, 10, 4, 6);
    assert_totals(&server, &id, &want).await;
    server.restart();
    assert_usage_after_restart(&server, &id, &want).await;
    // And keeps adding up.
    assert_eq!(server.send_model(&key, SONNET).await.status, 200);
    assert_totals(&server, &id, &usage_json(3, 30, 15, 6, 9)).await;
    assert_eq!(mock.messages_requests().len(), 3);
}

#[actix_rt::test]
async fn usage_survives_kill_9() {
    let (_mock, mut server, key, id) = serve();
    for _ in 0..2 {
        assert_eq!(server.send_model(&key, SONNET).await.status, 200);
    }
    let want = usage_json(2, 20, 10, 4, 6);
    assert_totals(&server, &id, &want).await;
    // Well past the few milliseconds the store may lose.
    sleep(Duration::from_millis(200)).await;
    server.kill9();
    server.start_again();
    assert_eq!(
        server.key_view(&id).await["usage"],
        want,
        "key usage after kill -9"
    );
    assert_eq!(
        server.pool_account("high", "h1").await["usage"],
        want,
        "account usage after kill -9"
    );
}

/// Usage the counter log holds and SQLite does not yet (its fold an hour away) survives a
/// kill -9: the next start takes it back from the log, and it is counted once.
#[actix_rt::test]
async fn usage_only_in_the_counter_log_survives_kill_9_and_counts_once() {
    let (_mock, env) = setup(
        "[tiers.high]\nlimits = { sonnet = 50, opus = 10 }\n\
         [store]\nfold_counters_every = \"1h\"\n",
    );
    env.add_account("high", "h1");
    let (key, id) = keygen_offline(&env, "high", &[]);
    let mut server = TestServer::start(env);
    for _ in 0..2 {
        assert_eq!(server.send_model(&key, SONNET).await.status, 200);
    }
    let want = usage_json(2, 20, 10, 4, 6);
    assert_totals(&server, &id, &want).await;
    let log = claude_route::store::counter_log::path_for(&server.env.db_path());
    let appended = wait_until(Duration::from_secs(5), || {
        std::fs::metadata(&log).ok().filter(|m| m.len() > 0)
    });
    assert!(appended.is_some(), "nothing appended to {}", log.display());
    let db = rusqlite::Connection::open(server.env.db_path()).unwrap();
    let on_disk = |db: &rusqlite::Connection| {
        db.query_row(
            "SELECT requests FROM key_usage WHERE key_id = ?1",
            [&id],
            |r| r.get::<_, i64>(0),
        )
        .ok()
    };
    assert_eq!(on_disk(&db), None, "the usage waits in the counter log");
    server.kill9();
    // With no server, the CLI reads the store itself, the log's usage included.
    let out = run_cli(&server.env, &["keys", "show", &id, "--json"]);
    out.assert_ok();
    assert_eq!(
        parse_json_objects(&out.stdout)[0]["usage"],
        want,
        "offline view"
    );
    server.start_again();
    assert_usage_after_restart(&server, &id, &want).await;
    assert!(server
        .wait_for_log("counter log:", Duration::from_secs(5))
        .is_some());
    // A graceful stop folds it into SQLite; the next start does not count it again.
    server.restart();
    assert_usage_after_restart(&server, &id, &want).await;
    assert_eq!(on_disk(&db), Some(2));
}

#[actix_rt::test]
async fn usage_served_while_the_store_refuses_it_is_stored_once_it_takes_writes_again() {
    let (_mock, mut server, key, id) = serve();
    let db = rusqlite::Connection::open(server.env.db_path()).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db.execute_batch(REFUSE_USAGE).unwrap();
    for _ in 0..3 {
        assert_eq!(server.send_model(&key, SONNET).await.status, 200);
    }
    let want = usage_json(3, 30, 15, 6, 9);
    assert_totals(&server, &id, &want).await;
    assert!(
        server
            .wait_for_log("store write of", Duration::from_secs(5))
            .is_some(),
        "the store never refused the usage"
    );
    // Long enough for the writer to try again a few times.
    sleep(Duration::from_millis(400)).await;
    db.execute_batch(ALLOW_USAGE).unwrap();
    // The writer tries the held usage again by itself (its wait is at most a few seconds).
    let stored = wait_until(Duration::from_secs(10), || {
        db.query_row(
            "SELECT requests FROM key_usage WHERE key_id = ?1",
            [&id],
            |r| r.get::<_, i64>(0),
        )
        .ok()
    });
    assert_eq!(
        stored,
        Some(3),
        "the usage on disk once the store takes writes"
    );
    assert!(server
        .wait_for_log("store writes succeed again", Duration::from_secs(5))
        .is_some());
    let refusals = server
        .logs()
        .iter()
        .filter(|l| l.contains("write-behind changes to retry"))
        .count();
    assert_eq!(refusals, 1, "one error line per outage, not per attempt");
    // On disk by itself: a kill -9 loses none of it.
    server.kill9();
    server.start_again();
    assert_usage_after_restart(&server, &id, &want).await;
}
