//! The HTTP surface: route table and server start-up.

pub mod admin;
mod after_send;
pub mod body;
mod body_scan;
pub mod error;
pub mod exchange;
pub mod header_names;
pub mod health;
pub mod metrics_endpoint;
pub mod proxy;
mod ratelimit_headers;
pub mod relay;
mod server;
mod shutdown;
mod string_scan;

pub use server::serve;

use actix_web::guard::{Guard, GuardContext};
use actix_web::http::Method;
use actix_web::{web, HttpResponse};
use error::{error_body, ApiError};

/// Matches one method and nothing else. actix's own method guards also note every method
/// they were asked about in the request's extensions (three allocations and a hash map per
/// request, for an `Allow` header); `endpoint` already names the allowed methods itself.
struct MethodIs(Method);

impl Guard for MethodIs {
    fn check(&self, ctx: &GuardContext<'_>) -> bool {
        ctx.head().method == self.0
    }
}

fn post() -> actix_web::Route {
    web::route().guard(MethodIs(Method::POST))
}

fn get() -> actix_web::Route {
    web::route().guard(MethodIs(Method::GET))
}

fn delete() -> actix_web::Route {
    web::route().guard(MethodIs(Method::DELETE))
}

async fn not_found(req: actix_web::HttpRequest) -> HttpResponse {
    HttpResponse::NotFound().json(error_body(
        "not_found_error",
        &format!(
            "{} {} is not an endpoint of this proxy",
            req.method(),
            req.path()
        ),
    ))
}

/// A path that exists, asked with a method it does not take: 405, naming the ones it does.
fn endpoint(path: &'static str, allowed: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move |req: actix_web::HttpRequest| async move {
        HttpResponse::MethodNotAllowed()
            .insert_header((actix_web::http::header::ALLOW, allowed))
            .json(error_body(
                "invalid_request_error",
                &format!(
                    "{} is not allowed on {}; use {allowed}",
                    req.method(),
                    req.path()
                ),
            ))
    }))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::QueryConfig::default()
            .error_handler(|e, _| ApiError::BadRequest(format!("bad query string: {e}")).into()),
    )
    .service(endpoint("/v1/messages", "POST").route(post().to(proxy::messages)))
    .service(endpoint("/v1/messages/count_tokens", "POST").route(post().to(proxy::count_tokens)))
    .service(endpoint("/v1/models", "GET").route(get().to(proxy::models)))
    .service(endpoint("/v1/models/{id}", "GET").route(get().to(proxy::models)))
    .service(endpoint("/api/event_logging/batch", "POST").route(post().to(proxy::telemetry)))
    .service(endpoint("/api/event_logging/v2/batch", "POST").route(post().to(proxy::telemetry)))
    .service(endpoint("/healthz", "GET").route(get().to(health::healthz)))
    .service(endpoint("/readyz", "GET").route(get().to(health::readyz)))
    .service(endpoint("/metrics", "GET").route(get().to(metrics_endpoint::metrics_text)))
    .service(
        endpoint("/admin/keys", "GET, POST")
            .route(post().to(admin::create_key))
            .route(get().to(admin::list_keys)),
    )
    .service(
        endpoint("/admin/keys/{id}", "GET, DELETE")
            .route(get().to(admin::show_key))
            .route(delete().to(admin::revoke_key)),
    )
    .service(endpoint("/admin/pool", "GET").route(get().to(admin::pool)))
    .service(endpoint("/admin/recover", "POST").route(post().to(admin::recover)))
    .service(endpoint("/admin/sync", "POST").route(post().to(admin::sync)))
    .service(endpoint("/admin/status", "GET").route(get().to(admin::status)))
    .default_service(web::to(not_found));
}
