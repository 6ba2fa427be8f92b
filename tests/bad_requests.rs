//! Bad input at the HTTP level (SPEC §12; "bad input gets a clear error and loses nothing"):
//! bodies that stop arriving or end early, compressed bodies, HTTP/1.0, hop-by-hop headers a
//! client names, model ids that are not ids, and admin calls that would make the proxy read a
//! body for an unauthenticated caller. Each is refused in Anthropic's error shape, nothing of it
//! reaches Claude, and nothing is counted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::raw_http::{exchange, post_head, RawAnswer};
use common::*;
use serde_json::json;
use std::time::Duration;

const NO_PAUSE: Duration = Duration::ZERO;

/// A high-tier key with a window of two Sonnet requests, so "nothing counted" can be seen.
fn serve(extra: &str) -> (MockUpstream, TestServer, String) {
    let (mock, env) = setup(&format!(
        "[tiers.high]\nlimits = {{ sonnet = 2 }}\nwindow = \"1m\"\n{extra}"
    ));
    env.add_account("high", "a1");
    let (key, _) = keygen_offline(&env, "high", &[]);
    (mock, TestServer::start(env), key)
}

fn assert_nothing_upstream(mock: &MockUpstream) {
    let seen = mock.api_requests();
    assert!(
        seen.is_empty(),
        "a refused request reached upstream: {seen:?}"
    );
}

fn assert_closed(answer: &RawAnswer) {
    assert!(
        answer.closed,
        "the proxy kept the connection open after: {}",
        answer.head
    );
}

#[actix_rt::test]
async fn a_body_that_stops_arriving_is_408_and_not_counted() {
    let (mock, server, key) = serve("[server]\nbody_timeout = \"300ms\"\n");
    let head = post_head(
        "/v1/messages",
        &[("x-api-key", &key), ("content-type", "application/json")],
        1000,
    );
    let answer = exchange(
        &server.addr,
        &[&head, br#"{"model":"claude-sonnet-4-5","#],
        NO_PAUSE,
        Duration::from_secs(10),
    );
    answer.assert_error(408, "timeout_error", "The request body stopped arriving");
    assert_closed(&answer);
    assert_nothing_upstream(&mock);
    server.assert_sonnet_requests_left(&key, 2).await;
}

#[actix_rt::test]
async fn a_slow_body_that_keeps_arriving_is_served() {
    let (mock, server, key) = serve("[server]\nbody_timeout = \"400ms\"\n");
    let body = message_request(SONNET).to_string().into_bytes();
    let head = post_head(
        "/v1/messages",
        &[("x-api-key", &key), ("content-type", "application/json")],
        body.len(),
    );
    // Each pause is shorter than the timeout, all of them together longer.
    let mut parts: Vec<&[u8]> = vec![&head];
    parts.extend(body.chunks(body.len() / 4 + 1));
    let answer = exchange(
        &server.addr,
        &parts,
        Duration::from_millis(200),
        Duration::from_secs(2),
    );
    assert_eq!(answer.status, 200, "{}", answer.head);
    assert_eq!(mock.messages_requests().len(), 1);
}

#[actix_rt::test]
async fn a_body_that_ends_early_is_400_and_not_counted() {
    let (mock, server, key) = serve("");
    let head = post_head(
        "/v1/messages",
        &[("x-api-key", &key), ("content-type", "application/json")],
        1000,
    );
    let mut stream = std::net::TcpStream::connect(&server.addr).unwrap();
    use std::io::{Read, Write};
    stream.write_all(&head).unwrap();
    stream
        .write_all(br#"{"model":"claude-sonnet-4-5"}"#)
        .unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = Vec::new();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    // A half-closed client still reads a clear 400; nothing went upstream or was counted.
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(
        text.contains("The request body ended before the length it declared; send the whole body"),
        "{text}"
    );
    assert_nothing_upstream(&mock);
    server.assert_sonnet_requests_left(&key, 2).await;
}

#[actix_rt::test]
async fn a_compressed_body_is_415_and_content_encoding_never_goes_upstream() {
    let (mock, server, key) = serve("");
    let body = message_request(SONNET).to_string().into_bytes();
    // `identity` is no coding at all: served, and the header stays here.
    let res = server
        .post_raw(
            "/v1/messages",
            Some(&key),
            body.clone(),
            &[("content-encoding", "identity")],
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(mock.last().header("content-encoding"), None);
    mock.clear();

    for coding in ["gzip", "br", "identity, deflate"] {
        server
            .post_raw(
                "/v1/messages",
                Some(&key),
                body.clone(),
                &[("content-encoding", coding)],
            )
            .await
            .assert_error(415, "invalid_request_error", "Content-Encoding `");
    }
    assert_nothing_upstream(&mock);
    server.assert_sonnet_requests_left(&key, 1).await;
}

#[actix_rt::test]
async fn headers_the_client_names_in_connection_stay_here() {
    let (mock, server, key) = serve("");
    // Written by hand: HTTP client libraries set Connection themselves.
    let body = message_request(SONNET).to_string();
    let head = post_head(
        "/v1/messages",
        &[
            ("x-api-key", &key),
            ("content-type", "application/json"),
            ("Connection", "keep-alive, X-Trace-Hop"),
            ("X-Trace-Hop", "secret-hop-value"),
            ("x-app", "cli"),
        ],
        body.len(),
    );
    let answer = exchange(
        &server.addr,
        &[&head, body.as_bytes()],
        NO_PAUSE,
        Duration::from_secs(1),
    );
    assert_eq!(answer.status, 200, "{}", answer.head);
    let seen = mock.last();
    assert_eq!(seen.header("x-trace-hop"), None);
    assert_eq!(seen.header("x-app"), Some("cli"));
}

#[actix_rt::test]
async fn an_http_1_0_stream_is_not_chunked_and_ends_with_the_connection() {
    let (mock, server, key) = serve("");
    mock.set_stream(3, Duration::from_millis(5));
    let mut body = message_request(SONNET);
    body["stream"] = json!(true);
    let body = body.to_string();
    let request = format!(
        "POST /v1/messages HTTP/1.0\r\nx-api-key: {key}\r\ncontent-type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let answer = exchange(
        &server.addr,
        &[request.as_bytes()],
        NO_PAUSE,
        Duration::from_secs(10),
    );
    assert_eq!(answer.status, 200, "{}", answer.head);
    assert!(answer.head.starts_with("HTTP/1.0 200"), "{}", answer.head);
    assert_eq!(answer.header("transfer-encoding"), None, "{}", answer.head);
    assert_closed(&answer);
    let text = String::from_utf8_lossy(&answer.body);
    // The events themselves, not chunk sizes between them.
    assert!(text.starts_with("event: message_start"), "{text}");
    assert!(
        text.trim_end()
            .ends_with("data: {\"type\":\"message_stop\"}"),
        "{text}"
    );
}

#[actix_rt::test]
async fn model_ids_that_are_not_ids_never_reach_claude() {
    let (mock, server, key) = serve("");
    for bad in ["..", "..%2f..%2fv1%2foauth", "x%00y", ".env"] {
        server
            .get(&format!("/v1/models/{bad}"), Some(&key), &[])
            .await
            .assert_error(
                400,
                "invalid_request_error",
                &format!("`{bad}` is not a model id"),
            );
    }
    assert_nothing_upstream(&mock);
    let res = server
        .get("/v1/models/claude-sonnet-4-5-20250929", Some(&key), &[])
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(
        mock.last().path,
        "/v1/models/claude-sonnet-4-5-20250929",
        "the id reaches Claude as sent"
    );
}

#[actix_rt::test]
async fn admin_calls_are_refused_before_their_body_is_read() {
    let (_mock, server, _key) = serve("[server]\nbody_timeout = \"30s\"\n");
    // A body declared and never sent: without the token the answer comes at once.
    let head = post_head("/admin/keys", &[("content-type", "application/json")], 5000);
    let answer = exchange(&server.addr, &[&head], NO_PAUSE, Duration::from_secs(3));
    answer.assert_error(401, "authentication_error", "Admin token missing or wrong");

    // With the token, a body far larger than any admin call is a JSON 413.
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let huge = vec![b' '; 200 * 1024];
    let head = post_head(
        "/admin/recover",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        huge.len(),
    );
    let answer = exchange(
        &server.addr,
        &[&head, &huge],
        NO_PAUSE,
        Duration::from_secs(3),
    );
    answer.assert_error(413, "request_too_large", "Request body is larger than");
}

#[actix_rt::test]
async fn admin_filters_and_lifetimes_that_mean_nothing_are_400() {
    let (_mock, server, _key) = serve("");
    server
        .admin_get("/admin/keys?tier=platinum")
        .await
        .assert_error(
            400,
            "invalid_request_error",
            "no tier named `platinum`; the tiers are",
        );
    server
        .admin_get("/admin/keys?status=sleeping")
        .await
        .assert_error(
            400,
            "invalid_request_error",
            "`sleeping` is not a key status",
        );
    let res = server
        .admin_get("/admin/keys?tier=high&status=active")
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["keys"].as_array().unwrap().len(), 1);

    server
        .admin_post("/admin/keys", &json!({"tier": "high", "days": 1_000_000}))
        .await
        .assert_error(
            400,
            "invalid_request_error",
            "a key may live at most 36500 days",
        );
    server
        .admin_post("/admin/keys", &json!({"tier": "high", "ttl": "1000000h"}))
        .await
        .assert_error(
            400,
            "invalid_request_error",
            "a key may live at most 36500 days",
        );
    let keys = server.admin_get("/admin/keys").await.json();
    assert_eq!(
        keys["keys"].as_array().unwrap().len(),
        1,
        "nothing was written"
    );

    // The Bearer scheme is case-insensitive here too.
    let lower = format!("bearer {ADMIN_TOKEN}");
    let res = common::admin_support::call_with_token(
        &server.base_url(),
        "GET",
        "/admin/status",
        None,
        None,
    )
    .await;
    assert_eq!(res.status, 401);
    let res = request(
        "GET",
        &server.url("/admin/status"),
        &[("authorization", &lower)],
        vec![],
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
}

#[actix_rt::test]
async fn malformed_http_is_refused_without_error_lines_in_the_log() {
    let (_mock, server, _key) = serve("");
    for garbage in [
        &b"POST /v1/messages HTTP/1.1\r\nContent-Length: abc\r\n\r\n"[..],
        b"POST /v1/messages HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"GET /v1/models HTTP/1.1\r\nno colon here\r\n\r\n",
    ] {
        let answer = exchange(&server.addr, &[garbage], NO_PAUSE, Duration::from_secs(3));
        assert_eq!(answer.status, 400, "{}", answer.head);
    }
    // The proxy still answers, and said nothing alarming about strangers' bytes.
    let res = server.get("/healthz", None, &[]).await;
    assert_eq!(res.status, 200);
    let errors: Vec<String> = server
        .logs_since_start()
        .into_iter()
        .filter(|l| l.contains(" ERROR "))
        .collect();
    assert!(
        errors.is_empty(),
        "error lines for a client's bad HTTP: {errors:?}"
    );
}
