//! The mock upstream's answers: Messages API (JSON and SSE), models, count_tokens, OAuth.

use super::mock_upstream::{
    current_delay, current_oauth_delay, new_stream, record, respond, stream_end, stream_sent,
    stream_shape, take_answer, MockState,
};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

pub async fn handle(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<MockState>,
) -> HttpResponse {
    record(&state, &req, &body);
    let path = req.path().to_string();
    let method = req.method().as_str().to_string();

    if path == "/v1/oauth/token" {
        let delay = current_oauth_delay(&state);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        return oauth(&state);
    }

    let delay = current_delay(&state);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(answer) = take_answer(&state.queued, &state.fixed) {
        return respond(&answer);
    }

    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("claude-sonnet-4-5")
        .to_string();

    match (method.as_str(), path.as_str()) {
        ("POST", "/v1/messages") => {
            if request.get("stream").and_then(Value::as_bool) == Some(true) {
                stream(state.into_inner(), model)
            } else {
                message(&model)
            }
        }
        ("POST", "/v1/messages/count_tokens") => with_mock_headers(HttpResponse::Ok())
            .json(json!({"input_tokens": 42})),
        ("GET", "/v1/models") => with_mock_headers(HttpResponse::Ok()).json(json!({
            "data": [
                {"type":"model","id":"claude-sonnet-4-5","display_name":"Claude Sonnet 4.5","created_at":"2025-09-29T00:00:00Z"},
                {"type":"model","id":"claude-opus-4-1","display_name":"Claude Opus 4.1","created_at":"2025-08-05T00:00:00Z"}
            ],
            "has_more": false,
            "first_id": "claude-sonnet-4-5",
            "last_id": "claude-opus-4-1"
        })),
        ("GET", p) if p.starts_with("/v1/models/") => {
            let id = p.trim_start_matches("/v1/models/");
            with_mock_headers(HttpResponse::Ok()).json(json!({
                "type":"model","id":id,"display_name":id,"created_at":"2025-09-29T00:00:00Z"
            }))
        }
        _ => HttpResponse::NotFound().json(json!({
            "type":"error","error":{"type":"not_found_error","message":format!("mock: no route {method} {path}")}
        })),
    }
}

fn with_mock_headers(mut b: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    b.insert_header(("request-id", "req_mock"))
        .insert_header(("anthropic-ratelimit-unified-status", "allowed"))
        .insert_header(("anthropic-organization-id", "org-secret"));
    b
}

/// The JSON body of the default Messages answer.
pub fn message_body(model: &str) -> Value {
    json!({
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": "hi"}],
        "stop_reason": "end_turn",
        "stop_sequence": null,
        "usage": {
            "input_tokens": 10,
            "output_tokens": 5,
            "cache_creation_input_tokens": 2,
            "cache_read_input_tokens": 3
        }
    })
}

fn message(model: &str) -> HttpResponse {
    with_mock_headers(HttpResponse::Ok()).json(message_body(model))
}

fn sse(event: &str, data: Value) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

/// The events of one streamed answer, in order, with the pause before each.
pub fn stream_events(model: &str, deltas: usize, interval: Duration) -> Vec<(Duration, Bytes)> {
    let mut events = vec![
        (
            Duration::ZERO,
            sse(
                "message_start",
                json!({"type":"message_start","message":{
                    "id":"msg_1","type":"message","role":"assistant","model":model,
                    "content":[],"stop_reason":null,"stop_sequence":null,
                    "usage":{"input_tokens":10,"cache_creation_input_tokens":2,
                             "cache_read_input_tokens":3,"output_tokens":1}}}),
            ),
        ),
        (
            Duration::ZERO,
            sse(
                "content_block_start",
                json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
            ),
        ),
    ];
    for i in 0..deltas {
        events.push((
            interval,
            sse(
                "content_block_delta",
                json!({"type":"content_block_delta","index":0,
                       "delta":{"type":"text_delta","text":format!("part {i} ")}}),
            ),
        ));
    }
    events.push((
        Duration::ZERO,
        sse(
            "content_block_stop",
            json!({"type":"content_block_stop","index":0}),
        ),
    ));
    events.push((
        Duration::ZERO,
        sse(
            "message_delta",
            json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},
                   "usage":{"output_tokens":5}}),
        ),
    ));
    events.push((
        Duration::ZERO,
        sse("message_stop", json!({"type":"message_stop"})),
    ));
    events
}

fn stream(state: std::sync::Arc<MockState>, model: String) -> HttpResponse {
    let (deltas, interval) = stream_shape(&state);
    let events = stream_events(&model, deltas, interval);
    let index = new_stream(&state);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, actix_web::Error>>(64);
    actix_rt::spawn(async move {
        for (pause, event) in events {
            if !pause.is_zero() {
                tokio::select! {
                    _ = tx.closed() => {
                        stream_end(&state, index, true);
                        return;
                    }
                    _ = tokio::time::sleep(pause) => {}
                }
            }
            let at = Instant::now();
            if tx.send(Ok(event.clone())).await.is_err() {
                stream_end(&state, index, true);
                return;
            }
            stream_sent(&state, index, at, event);
        }
        stream_end(&state, index, false);
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    with_mock_headers(HttpResponse::Ok())
        .insert_header(("content-type", "text/event-stream"))
        .insert_header(("cache-control", "no-cache"))
        .streaming(body)
}

fn oauth(state: &MockState) -> HttpResponse {
    let n = state.oauth_count.fetch_add(1, Ordering::SeqCst) + 1;
    if let Some(answer) = take_answer(&state.oauth_queued, &state.oauth_fixed) {
        return respond(&answer);
    }
    HttpResponse::Ok().json(json!({
        "access_token": format!("sk-ant-oat01-new-{n}"),
        "refresh_token": format!("sk-ant-ort01-new-{n}"),
        "expires_in": 3600,
        "token_type": "Bearer"
    }))
}
