//! The floor of claude-route's HTTP stack, for `make bench`: actix-web in front, one awc
//! client per worker behind, every request forwarded to the upstream as it came and the answer
//! streamed back — no keys, no accounting, no logging. What this adds over the mock is what
//! the stack costs by itself; what claude-route adds over this is its own work. It uses the
//! same allocator as claude-route (mimalloc), so the allocator is part of the floor.
//!
//! Usage: `stack_floor --upstream http://ADDR [--listen 127.0.0.1:0] [--workers N]`; prints
//! `stack_floor listening on http://ADDR` on stdout once bound.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "shared/server_args.rs"]
mod server_args;

use actix_web::http::header;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use std::cell::RefCell;
use std::io::Write;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

thread_local! {
    static CLIENT: RefCell<Option<awc::Client>> = const { RefCell::new(None) };
}

fn client() -> awc::Client {
    CLIENT.with(|c| {
        c.borrow_mut()
            .get_or_insert_with(|| {
                // Like claude-route: no cap on concurrent upstream connections (awc's
                // default of 100 per worker would hold long streams back).
                awc::Client::builder()
                    .connector(awc::Connector::new().limit(0))
                    .disable_timeout()
                    .no_default_headers()
                    .finish()
            })
            .clone()
    })
}

fn hop_by_hop(name: &header::HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host" | "connection" | "keep-alive" | "transfer-encoding" | "content-length" | "te"
    )
}

async fn forward(req: HttpRequest, body: web::Bytes, upstream: web::Data<String>) -> HttpResponse {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{path}", upstream.get_ref());
    let mut out = client().request(req.method().clone(), url);
    for (name, value) in req.headers() {
        if !hop_by_hop(name) {
            out = out.append_header((name.clone(), value.clone()));
        }
    }
    let answer = match out.send_body(body).await {
        Ok(answer) => answer,
        Err(e) => return HttpResponse::BadGateway().body(e.to_string()),
    };
    let mut response = HttpResponse::build(answer.status());
    for (name, value) in answer.headers() {
        if !hop_by_hop(name) {
            response.append_header((name.clone(), value.clone()));
        }
    }
    let length = answer
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let Some(length) = length {
        response.no_chunking(length);
    }
    response.streaming(answer)
}

fn main() -> std::io::Result<()> {
    let upstream = server_args::arg("--upstream").expect("--upstream http://ADDR");
    let (listen, workers) = server_args::listen_and_workers();
    actix_web::rt::System::new().block_on(async move {
        let upstream = web::Data::new(upstream.trim_end_matches('/').to_string());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(upstream.clone())
                .app_data(web::PayloadConfig::new(64 * 1024 * 1024))
                .default_service(web::to(forward))
        })
        .workers(workers)
        .tcp_nodelay(true)
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
