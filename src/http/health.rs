//! Liveness and readiness for load balancers and systemd.

use crate::actors::supervisor::Services;
use actix_web::{web, HttpResponse};

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Ready when the store answers and at least one account is loaded now.
pub async fn readyz(svc: web::Data<Services>) -> HttpResponse {
    let store_ok = svc.backend.healthy().await;
    let accounts: usize = svc
        .pool_views()
        .await
        .iter()
        .flatten()
        .map(|view| view.accounts.len())
        .sum();
    let body = serde_json::json!({"store": store_ok, "accounts": accounts});
    if store_ok && accounts > 0 {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
