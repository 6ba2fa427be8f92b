//! `GET /metrics`: Prometheus text. Pool gauges are read from the pools at scrape time.

use super::admin::require_admin;
use super::error::ApiError;
use crate::actors::supervisor::Services;
use crate::metrics::{metrics, tier_label, AccountStatusLabels};
use actix_web::{web, HttpRequest, HttpResponse};

pub async fn metrics_text(
    req: HttpRequest,
    svc: web::Data<Services>,
) -> Result<HttpResponse, ApiError> {
    if !svc.config.admin.metrics_public {
        require_admin(&req, &svc)?;
    }
    let m = metrics();
    for view in svc.pool_views().await.into_iter().flatten() {
        let tier = &view.tier;
        m.slots_used
            .get_or_create(&tier_label(tier))
            .set(i64::from(view.slots_used));
        m.slots_capacity
            .get_or_create(&tier_label(tier))
            .set(i64::from(view.capacity));
        for status in ["active", "blacklisted", "limited"] {
            let n = view.accounts.iter().filter(|a| a.status == status).count();
            m.accounts
                .get_or_create(&AccountStatusLabels {
                    tier: tier.clone(),
                    status: status.to_string(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(m.encode()))
}
