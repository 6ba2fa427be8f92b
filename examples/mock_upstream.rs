//! A fast stand-in for the Anthropic Messages API, for `make bench`.
//!
//! `POST /v1/messages` answers a fixed JSON message, or — when the body has `"stream":true` —
//! an SSE stream: `message_start`, `content_block_start`, N `content_block_delta` events one
//! interval apart, then `content_block_stop`, `message_delta`, `message_stop`.
//! N and the interval come from the `x-mock-deltas` / `x-mock-interval-ms` headers or the
//! `deltas` / `interval_ms` query parameters (defaults 64 and 20 ms).
//!
//! Usage: `mock_upstream [--listen 127.0.0.1:0] [--workers N]`; prints
//! `mock_upstream listening on http://ADDR` on stdout once bound.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "shared/server_args.rs"]
mod server_args;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use bytes::Bytes;
use std::convert::Infallible;
use std::io::Write;
use std::time::Duration;

const MESSAGE_JSON: &str = r#"{"id":"msg_bench_0001","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"Hello from the mock upstream."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":8}}"#;

const SSE_HEAD: &str = concat!(
    "event: message_start\n",
    r#"data: {"type":"message_start","message":{"id":"msg_bench_0001","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}}}"#,
    "\n\n",
    "event: content_block_start\n",
    r#"data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
    "\n\n",
);

const SSE_DELTA: &str = concat!(
    "event: content_block_delta\n",
    r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"token "}}"#,
    "\n\n",
);

const SSE_TAIL: &str = concat!(
    "event: content_block_stop\n",
    r#"data: {"type":"content_block_stop","index":0}"#,
    "\n\n",
    "event: message_delta\n",
    r#"data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":64}}"#,
    "\n\n",
    "event: message_stop\n",
    r#"data: {"type":"message_stop"}"#,
    "\n\n",
);

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn wants_stream(body: &[u8]) -> bool {
    contains(body, b"\"stream\":true") || contains(body, b"\"stream\": true")
}

/// A numeric setting from a header, else from the query string, else the default.
fn setting(req: &HttpRequest, header: &str, query_key: &str, default: u64) -> u64 {
    if let Some(v) = req.headers().get(header).and_then(|v| v.to_str().ok()) {
        if let Ok(n) = v.trim().parse() {
            return n;
        }
    }
    for pair in req.query_string().split('&') {
        if let Some((k, v)) = pair.split_once('=') {
            if k == query_key {
                if let Ok(n) = v.parse() {
                    return n;
                }
            }
        }
    }
    default
}

async fn messages(req: HttpRequest, body: web::Bytes) -> HttpResponse {
    if !wants_stream(&body) {
        return HttpResponse::Ok()
            .content_type("application/json")
            .insert_header(("request-id", "req_mock"))
            .body(MESSAGE_JSON);
    }
    let deltas = setting(&req, "x-mock-deltas", "deltas", 64);
    let interval = Duration::from_millis(setting(&req, "x-mock-interval-ms", "interval_ms", 20));
    let start = actix_rt::time::Instant::now();
    // Step k: 0 = head, 1..=deltas = delta k due at start + k·interval, deltas+1 = tail.
    // Deadlines are absolute, so a late tick never pushes the following ones back.
    let stream = futures_util::stream::unfold(0u64, move |k| async move {
        let chunk = if k == 0 {
            SSE_HEAD
        } else if k <= deltas {
            actix_rt::time::sleep_until(start + interval * k as u32).await;
            SSE_DELTA
        } else if k == deltas + 1 {
            SSE_TAIL
        } else {
            return None;
        };
        Some((
            Ok::<_, Infallible>(Bytes::from_static(chunk.as_bytes())),
            k + 1,
        ))
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("request-id", "req_mock"))
        .streaming(stream)
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound()
        .content_type("application/json")
        .body(r#"{"type":"error","error":{"type":"not_found_error","message":"mock: no such route"}}"#)
}

fn main() -> std::io::Result<()> {
    let (listen, workers) = server_args::listen_and_workers();
    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(|| {
            App::new()
                .app_data(web::PayloadConfig::new(64 * 1024 * 1024))
                .route("/v1/messages", web::post().to(messages))
                .default_service(web::to(not_found))
        })
        .workers(workers)
        .tcp_nodelay(true)
        .keep_alive(server_args::KEEP_ALIVE)
        .backlog(8192)
        .max_connections(100_000)
        .max_connection_rate(4096)
        .bind(&listen)?;
        for addr in server.addrs() {
            println!("mock_upstream listening on http://{addr}");
        }
        std::io::stdout().flush()?;
        server.run().await
    })
}
