//! The client endpoints: authenticate, admit through the tier's pool, forward to Claude,
//! relay the answer as it arrives.

use super::body::{model_of, read_limited};
use super::error::ApiError;
use super::relay::{Relay, SettleTicket};
use crate::actors::pool::{Admission, Admit, Outcome, PoolError};
use crate::actors::supervisor::Services;
use crate::clock::{now_ms, rfc3339};
use crate::domain::headers::{is_claude_code, return_response_header};
use crate::domain::identity::insert_identity;
use crate::domain::{ApiKey, ModelFamily};
use crate::store::KeyRecord;
use crate::upstream::{client, request, usage::UsageReader};
use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use std::sync::Arc;

/// How an endpoint is accounted.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `/v1/messages`: model rules and windows apply.
    Messages,
    /// `count_tokens`: has a body and a model, never counted or restricted.
    CountTokens,
    /// `models`: no body.
    Models,
}

pub async fn messages(
    req: HttpRequest,
    payload: web::Payload,
    svc: web::Data<Services>,
) -> Result<HttpResponse, ApiError> {
    forward(req, Some(payload), svc, Kind::Messages).await
}

pub async fn count_tokens(
    req: HttpRequest,
    payload: web::Payload,
    svc: web::Data<Services>,
) -> Result<HttpResponse, ApiError> {
    forward(req, Some(payload), svc, Kind::CountTokens).await
}

pub async fn models(req: HttpRequest, svc: web::Data<Services>) -> Result<HttpResponse, ApiError> {
    forward(req, None, svc, Kind::Models).await
}

/// Claude Code's telemetry: answered here, never forwarded.
pub async fn telemetry() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({}))
}

fn authenticate(req: &HttpRequest, svc: &Services) -> Result<Arc<KeyRecord>, ApiError> {
    let headers = req.headers();
    let key = ApiKey::from_headers(
        headers.get("x-api-key").map(|v| v.as_bytes()),
        headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()),
    )?;
    Ok(svc.keys.authenticate(&key, now_ms())?)
}

/// Puts Claude Code's identity first in `system` when the client is not Claude Code.
fn with_identity(req: &HttpRequest, svc: &Services, model: &str, body: Bytes) -> Bytes {
    let ua = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    if !svc.config.upstream.identity_prompt
        || is_claude_code(ua)
        || model.to_ascii_lowercase().contains("haiku")
    {
        return body;
    }
    let Ok(mut map) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&body)
    else {
        return body;
    };
    if !insert_identity(&mut map) {
        return body;
    }
    serde_json::to_vec(&map).map(Bytes::from).unwrap_or(body)
}

fn log_admission(key: &KeyRecord, a: &Admission) {
    if a.newly_bound {
        log::info!(
            "key {} assigned to account: {} (slots: {}/{})",
            key.prefix,
            a.account,
            a.slots_used,
            a.slots
        );
    } else {
        log::info!(
            "key {} using assigned account: {} (slots: {}/{})",
            key.prefix,
            a.account,
            a.slots_used,
            a.slots
        );
    }
    if let Some(g) = &a.grant {
        log::info!(
            "key {} rate limit check passed: {}/{} requests",
            key.prefix,
            g.limit - g.remaining,
            g.limit
        );
    }
}

/// Upstream answers that mean "Claude did not serve this": the request is given back.
fn is_refunded(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

async fn forward(
    req: HttpRequest,
    payload: Option<web::Payload>,
    svc: web::Data<Services>,
    kind: Kind,
) -> Result<HttpResponse, ApiError> {
    let key = authenticate(&req, &svc)?;
    let (body, family) = match payload {
        Some(payload) => {
            let body = read_limited(&req, payload, svc.config.server.body_limit).await?;
            let model = model_of(&body)?;
            let family = (kind == Kind::Messages).then(|| ModelFamily::of_model(&model));
            (Some(with_identity(&req, &svc, &model, body)), family)
        }
        None => (None, None),
    };
    let pool = svc
        .pools
        .get(&key.tier)
        .ok_or_else(|| PoolError::NoAccounts {
            tier: crate::domain::tier::capitalize(&key.tier),
        })?
        .clone();
    let admission = pool
        .send(Admit {
            key: key.clone(),
            family,
        })
        .await
        .map_err(|e| ApiError::Internal(format!("pool: {e}")))??;
    log_admission(&key, &admission);
    let ticket = admission.family.map(|family| SettleTicket {
        pool: pool.clone(),
        key_id: key.id.clone(),
        account: admission.account.clone(),
        family,
        window_started: admission.grant.map(|g| g.started_at),
    });

    let path = req
        .uri()
        .path_and_query()
        .map_or(req.path(), |p| p.as_str());
    let method = if body.is_some() {
        Method::POST
    } else {
        Method::GET
    };
    let upstream = request::build(
        &client::client(&svc.config.upstream),
        &svc.config.upstream,
        method,
        path,
        req.headers(),
        &admission.credential.access_token,
    );
    let sent = match body {
        Some(body) => upstream.send_body(body).await,
        None => upstream.send().await,
    };
    let answer = match sent {
        Ok(answer) => answer,
        Err(e) => {
            if let Some(t) = ticket {
                t.settle(Outcome::Refund);
            }
            log::warn!(
                "upstream request for account {} failed: {e}",
                admission.account
            );
            return Err(match e {
                awc::error::SendRequestError::Timeout => ApiError::UpstreamTimeout,
                other => ApiError::UpstreamUnreachable(other.to_string()),
            });
        }
    };

    let status = answer.status();
    let mut response = HttpResponse::build(status);
    for (name, value) in answer.headers().iter() {
        if return_response_header(name.as_str()) {
            response.append_header((name.clone(), value.clone()));
        }
    }
    if status.is_success() {
        if let Some(g) = admission.grant {
            response.insert_header(("x-ratelimit-limit-requests", g.limit.to_string()));
            response.insert_header(("x-ratelimit-remaining-requests", g.remaining.to_string()));
            response.insert_header(("x-ratelimit-reset-requests", rfc3339(g.resets_at)));
        }
    }
    let ticket = match ticket {
        Some(t) if is_refunded(status) => {
            t.settle(Outcome::Refund);
            None
        }
        other => other,
    };
    let content_type = answer
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let usage = UsageReader::for_content_type(content_type);
    Ok(response.streaming(Relay::new(answer, usage, ticket)))
}
