//! The floor of claude-route's HTTP stack, for `make bench`: actix-web in front, the
//! project's own HTTP/1.1 client (`upstream::h1`, pooled per worker) behind, every
//! request forwarded to the upstream as it came and the answer
//! streamed back — no keys, no accounting, no logging. What this adds over the mock is what
//! the stack costs by itself; what claude-route adds over this is its own work. It uses the
//! same allocator as claude-route (mimalloc, set by the library it links), so the allocator
//! is part of the floor.
//!
//! Usage: `stack_floor --upstream http://ADDR [--listen 127.0.0.1:0] [--workers N]`; prints
//! `stack_floor listening on http://ADDR` on stdout once bound.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "shared/server_args.rs"]
mod server_args;

use actix_web::body::{BodyStream, SizedStream};
use actix_web::http::header;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use claude_route::upstream::h1::{self, Answer, Connection, Endpoint, Timeouts};
use claude_route::upstream::request::{end_head, put_header, start_head};
use std::io::Write;
use std::time::Duration;

const TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(10),
    answer: Duration::from_secs(600),
};

fn hop_by_hop(name: &[u8]) -> bool {
    [
        &b"host"[..],
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"content-length",
        b"te",
    ]
    .iter()
    .any(|hop| name.eq_ignore_ascii_case(hop))
}

async fn forward(
    req: HttpRequest,
    body: web::Bytes,
    upstream: web::Data<Endpoint>,
) -> HttpResponse {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut head = start_head(&upstream, req.method(), path);
    for (name, value) in req.headers() {
        if !hop_by_hop(name.as_str().as_bytes()) {
            put_header(&mut head, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    let head = end_head(head, Some(body.len()));
    let mut sent = h1::send(&upstream, &head, &body, TIMEOUTS, Connection::Pooled).await;
    if sent.as_ref().is_err_and(|e| e.closed_before_answer()) {
        sent = h1::send(&upstream, &head, &body, TIMEOUTS, Connection::Fresh).await;
    }
    let Answer {
        status,
        headers,
        body,
    } = match sent {
        Ok(answer) => answer,
        Err(e) => return HttpResponse::BadGateway().body(e.to_string()),
    };
    let mut response = HttpResponse::build(status);
    for (name, value) in headers.iter() {
        if !hop_by_hop(name) {
            response.append_header((
                header::HeaderName::from_bytes(name).unwrap(),
                header::HeaderValue::from_bytes(value).unwrap(),
            ));
        }
    }
    let length = headers
        .get_str("content-length")
        .and_then(|v| v.parse::<u64>().ok());
    match length {
        Some(length) => response.body(SizedStream::new(length, body)),
        None => response.body(BodyStream::new(body)),
    }
}

fn main() -> std::io::Result<()> {
    let upstream = server_args::arg("--upstream").expect("--upstream http://ADDR");
    let (listen, workers) = server_args::listen_and_workers();
    actix_web::rt::System::new().block_on(async move {
        let upstream = web::Data::new(Endpoint::parse(&upstream).expect("--upstream http://ADDR"));
        let server = HttpServer::new(move || {
            h1::start_reaper();
            App::new()
                .app_data(upstream.clone())
                .app_data(web::PayloadConfig::new(64 * 1024 * 1024))
                .default_service(web::to(forward))
        })
        .workers(workers)
        .tcp_nodelay(true)
        .keep_alive(server_args::KEEP_ALIVE)
        .backlog(8192)
        .max_connections(100_000)
        .bind(&listen)?;
        for addr in server.addrs() {
            println!("stack_floor listening on http://{addr}");
        }
        std::io::stdout().flush()?;
        server.run().await
    })
}
