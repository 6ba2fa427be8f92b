//! The HTTP surface: route table and server start-up.

pub mod admin;
pub mod body;
mod body_scan;
pub mod error;
pub mod exchange;
pub mod header_names;
pub mod health;
pub mod metrics_endpoint;
pub mod proxy;
pub mod relay;
mod server;
mod string_scan;

pub use server::serve;

use actix_web::{web, HttpResponse};
use error::{error_body, ApiError};

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

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::QueryConfig::default()
            .error_handler(|e, _| ApiError::BadRequest(format!("bad query string: {e}")).into()),
    )
    .route("/v1/messages", web::post().to(proxy::messages))
    .route(
        "/v1/messages/count_tokens",
        web::post().to(proxy::count_tokens),
    )
    .route("/v1/models", web::get().to(proxy::models))
    .route("/v1/models/{id}", web::get().to(proxy::models))
    .route("/api/event_logging/batch", web::post().to(proxy::telemetry))
    .route(
        "/api/event_logging/v2/batch",
        web::post().to(proxy::telemetry),
    )
    .route("/healthz", web::get().to(health::healthz))
    .route("/readyz", web::get().to(health::readyz))
    .route("/metrics", web::get().to(metrics_endpoint::metrics_text))
    .route("/admin/keys", web::post().to(admin::create_key))
    .route("/admin/keys", web::get().to(admin::list_keys))
    .route("/admin/keys/{id}", web::get().to(admin::show_key))
    .route("/admin/keys/{id}", web::delete().to(admin::revoke_key))
    .route("/admin/pool", web::get().to(admin::pool))
    .route("/admin/recover", web::post().to(admin::recover))
    .route("/admin/sync", web::post().to(admin::sync))
    .route("/admin/status", web::get().to(admin::status))
    .default_service(web::to(not_found));
}
