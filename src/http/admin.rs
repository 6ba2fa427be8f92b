//! The admin API. Every call needs the admin token; no answer ever carries a secret except
//! the new key in the answer that creates it.

use super::body::{read_limited, BodyRules};
use super::error::ApiError;
use crate::actors::keys::{CreateKey, RevokeKey};
use crate::actors::pool::{KeyDetails, RecoverAccount};
use crate::actors::refresh::{Recovered, ViewRefresh};
use crate::actors::supervisor::Services;
use crate::actors::sync::{LastSync, SyncNow};
use crate::clock::{now_ms, rfc3339};
use crate::domain::api_key::{bearer_token, digest_hex};
use crate::domain::valid_account_name;
use crate::store::{Backend, KeyRecord, Usage};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Compares digests so neither length nor content leaks through timing.
pub fn require_admin(req: &HttpRequest, svc: &Services) -> Result<(), ApiError> {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| bearer_token(v).ok())
        .ok_or(ApiError::AdminUnauthorized)?;
    let a = digest_hex(presented.trim().as_bytes());
    let b = digest_hex(svc.admin_token.as_bytes());
    if bool::from(a.as_bytes().ct_eq(b.as_bytes())) && !svc.admin_token.is_empty() {
        Ok(())
    } else {
        Err(ApiError::AdminUnauthorized)
    }
}

#[derive(Serialize)]
pub struct KeyView {
    pub id: String,
    pub prefix: String,
    pub tier: String,
    pub status: &'static str,
    pub created: String,
    pub expires: Option<String>,
    pub account: Option<String>,
    pub fixed: bool,
    pub note: String,
    pub usage: Usage,
}

pub fn key_view(record: &KeyRecord, account: Option<String>, usage: Usage) -> KeyView {
    KeyView {
        id: record.id.clone(),
        prefix: record.prefix.clone(),
        tier: record.tier.clone(),
        status: record.status_at(now_ms()).as_str(),
        created: rfc3339(record.created),
        expires: record.expires.map(rfc3339),
        account: account.or_else(|| record.fixed_account.clone()),
        fixed: record.fixed_account.is_some(),
        note: record.note.clone(),
        usage,
    }
}

/// Views of some keys, with their binding and usage from their pools.
async fn views(svc: &Services, records: Vec<Arc<KeyRecord>>) -> Vec<KeyView> {
    // One KeyDetails message per tier, not per key.
    let mut by_tier: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, record) in records.iter().enumerate() {
        by_tier.entry(record.tier.as_str()).or_default().push(i);
    }
    let mut details: Vec<(Option<String>, Usage)> = vec![Default::default(); records.len()];
    for (tier, positions) in by_tier {
        let Some(pool) = svc.pools.get(tier) else {
            continue;
        };
        let key_ids = positions.iter().map(|&i| records[i].id.clone()).collect();
        if let Ok(found) = pool.addr().send(KeyDetails { key_ids }).await {
            for (i, detail) in positions.into_iter().zip(found) {
                details[i] = detail;
            }
        }
    }
    records
        .iter()
        .zip(details)
        .map(|(record, (account, usage))| key_view(record, account, usage))
        .collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyBody {
    tier: String,
    account: Option<String>,
    days: Option<u32>,
    /// An exact lifetime such as "2h" or "90s", overriding `days`.
    ttl: Option<crate::config::HumanDuration>,
    note: Option<String>,
}

pub async fn create_key(
    req: HttpRequest,
    svc: web::Data<Services>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &svc)?;
    let body = read_limited(&req, payload, BodyRules::admin(&svc.config.server)).await?;
    let body: CreateKeyBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "expected {{\"tier\": …, \"account\"?: …, \"days\"?: …, \"ttl\"?: \"2h\", \"note\"?: …}} ({e})"
        ))
    })?;
    let created = svc
        .registry
        .addr()
        .send(CreateKey {
            tier: body.tier,
            account: body.account,
            days: body.days,
            ttl: body.ttl.map(|t| t.get()),
            note: body.note.unwrap_or_default(),
        })
        .await
        .map_err(|e| ApiError::Internal(format!("key registry: {e}")))??;
    let mut view = serde_json::to_value(key_view(
        &created.record,
        created.record.fixed_account.clone(),
        Usage::default(),
    ))
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    view["key"] = serde_json::Value::String(created.key.secret().to_string());
    Ok(HttpResponse::Created().json(view))
}

#[derive(Deserialize)]
pub struct KeyFilter {
    tier: Option<String>,
    status: Option<String>,
}

pub async fn list_keys(
    req: HttpRequest,
    svc: web::Data<Services>,
    filter: web::Query<KeyFilter>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &svc)?;
    check_filter(&svc, &filter)?;
    let now = now_ms();
    let records: Vec<Arc<KeyRecord>> = all_keys(&svc)
        .await?
        .into_iter()
        .filter(|r| filter.tier.as_ref().is_none_or(|t| &r.tier == t))
        .filter(|r| {
            filter
                .status
                .as_ref()
                .is_none_or(|s| r.status_at(now).as_str() == s)
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({"keys": views(&svc, records).await})))
}

/// A filter naming no tier or status would list nothing, silently: say what exists.
fn check_filter(svc: &Services, filter: &KeyFilter) -> Result<(), ApiError> {
    if let Some(tier) = filter.tier.as_deref() {
        if !svc.tiers.contains_key(tier) {
            let mut names: Vec<&str> = svc.tiers.keys().map(String::as_str).collect();
            names.sort_unstable();
            return Err(ApiError::BadRequest(format!(
                "no tier named `{tier}`; the tiers are {}",
                names.join(", ")
            )));
        }
    }
    if let Some(status) = filter.status.as_deref() {
        if crate::store::KeyStatus::parse(status).is_none() {
            return Err(ApiError::BadRequest(format!(
                "`{status}` is not a key status; use active, expired or revoked"
            )));
        }
    }
    Ok(())
}

fn store_error(e: crate::store::StoreError) -> ApiError {
    ApiError::Pool(e.into())
}

/// Every key: this instance's cache, or Redis, which every instance shares.
async fn all_keys(svc: &Services) -> Result<Vec<Arc<KeyRecord>>, ApiError> {
    match &svc.backend {
        Backend::Embedded(_) => Ok(svc.keys.all()),
        Backend::Redis(store) => Ok(store
            .list_keys()
            .await
            .map_err(store_error)?
            .into_iter()
            .map(Arc::new)
            .collect()),
    }
}

async fn find_key(svc: &Services, id: &str) -> Result<Arc<KeyRecord>, ApiError> {
    let found = match &svc.backend {
        Backend::Embedded(_) => svc.keys.find_id(id),
        Backend::Redis(store) => store
            .key_by_id(id)
            .await
            .map_err(store_error)?
            .map(Arc::new),
    };
    found.ok_or_else(|| {
        ApiError::NotFound(format!("no key with id `{id}`; `keys list` shows the ids"))
    })
}

pub async fn show_key(
    req: HttpRequest,
    svc: web::Data<Services>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &svc)?;
    let record = find_key(&svc, &id).await?;
    let mut views = views(&svc, vec![record]).await;
    Ok(HttpResponse::Ok().json(views.pop()))
}

pub async fn revoke_key(
    req: HttpRequest,
    svc: web::Data<Services>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &svc)?;
    find_key(&svc, &id).await?;
    let record = svc
        .registry
        .addr()
        .send(RevokeKey {
            id: id.into_inner(),
        })
        .await
        .map_err(|e| ApiError::Internal(format!("key registry: {e}")))??;
    let mut views = views(&svc, vec![record]).await;
    Ok(HttpResponse::Ok().json(views.pop()))
}

pub async fn pool(req: HttpRequest, svc: web::Data<Services>) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &svc)?;
    let refresh = svc
        .refresher
        .addr()
        .send(ViewRefresh)
        .await
        .map_err(|e| ApiError::Internal(format!("refresh coordinator: {e}")))?;
    let mut tiers = Vec::new();
    for view in svc.pool_views().await {
        let view = view?;
        let name = view.tier.clone();
        let mut view = serde_json::to_value(view).map_err(|e| ApiError::Internal(e.to_string()))?;
        // Each account's refresh state sits beside its slots and status.
        if let Some(accounts) = view["accounts"].as_array_mut() {
            for account in accounts {
                let state = refresh.accounts.iter().find(|r| {
                    r.tier == name && account["name"].as_str() == Some(r.account.as_str())
                });
                account["refresh"] = serde_json::to_value(state).unwrap_or_default();
            }
        }
        tiers.push(view);
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({"tiers": tiers})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoverBody {
    account: String,
}

pub async fn recover(
    req: HttpRequest,
    svc: web::Data<Services>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &svc)?;
    let body = read_limited(&req, payload, BodyRules::admin(&svc.config.server)).await?;
    let body: RecoverBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("expected {{\"account\": \"name\"}} ({e})")))?;
    if !valid_account_name(&body.account) {
        return Err(ApiError::BadRequest(format!(
            "`{}` is not a valid account name (letters, digits, '.', '_', '-')",
            body.account
        )));
    }
    let mut recovered = Vec::new();
    for (tier, pool) in svc.pools.iter() {
        let done = pool
            .addr()
            .send(RecoverAccount {
                account: body.account.clone(),
            })
            .await
            .unwrap_or(false);
        if done {
            recovered.push(tier.clone());
        }
    }
    for tier in &recovered {
        svc.refresher.addr().do_send(Recovered {
            tier: tier.clone(),
            account: body.account.clone(),
        });
    }
    if recovered.is_empty() {
        return Err(ApiError::NotFound(format!(
            "no account named `{}`; `pool` lists the accounts",
            body.account
        )));
    }
    Ok(HttpResponse::Ok()
        .json(serde_json::json!({"account": body.account, "recovered": true, "tiers": recovered})))
}

pub async fn sync(req: HttpRequest, svc: web::Data<Services>) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &svc)?;
    let report = svc
        .syncer
        .addr()
        .send(SyncNow)
        .await
        .map_err(|e| ApiError::Internal(format!("sync: {e}")))?
        .map_err(ApiError::Internal)?;
    Ok(HttpResponse::Ok().json(report))
}

pub async fn status(req: HttpRequest, svc: web::Data<Services>) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &svc)?;
    let refresh = svc
        .refresher
        .addr()
        .send(ViewRefresh)
        .await
        .map_err(|e| ApiError::Internal(format!("refresh coordinator: {e}")))?;
    let last_sync = svc.syncer.addr().send(LastSync).await.ok().flatten();
    let store_ok = svc.backend.healthy().await;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": svc.started.elapsed().as_secs(),
        "store": {"backend": svc.backend.name(), "url": crate::store::redacted_url(&svc.config.store.url), "healthy": store_ok},
        "refresh": refresh,
        "last_sync": last_sync,
    })))
}
