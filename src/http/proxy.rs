//! The client endpoints: authenticate, admit through the tier's pool, forward to Claude,
//! relay the answer as it arrives.

use super::body::{model_of, read_limited, BodyRules};
use super::error::ApiError;
use super::exchange::Exchange;
use super::relay::SettleTicket;
use crate::actors::keys::AuthError;
use crate::actors::pool::{Admission, PoolError};
use crate::actors::refresh::next_attempt;
use crate::actors::supervisor::Services;
use crate::clock::now_ms;
use crate::domain::family::contains_ignoring_case;
use crate::domain::headers::is_claude_code;
use crate::domain::identity::insert_identity;
use crate::domain::identity_splice::{splice_identity, Spliced};
use crate::domain::window::WindowGrant;
use crate::domain::{ApiKey, ModelFamily};
use crate::metrics::{metrics, tier_metrics, TierFamily};
use crate::store::Backend;
use crate::store::KeyRecord;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Instant;

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
    measured(req, Some(payload), svc, Kind::Messages).await
}

pub async fn count_tokens(
    req: HttpRequest,
    payload: web::Payload,
    svc: web::Data<Services>,
) -> Result<HttpResponse, ApiError> {
    measured(req, Some(payload), svc, Kind::CountTokens).await
}

pub async fn models(req: HttpRequest, svc: web::Data<Services>) -> Result<HttpResponse, ApiError> {
    if let Some(id) = req.path().strip_prefix("/v1/models/") {
        check_model_id(id)?;
    }
    measured(req, None, svc, Kind::Models).await
}

/// A model id as Claude spells them (`claude-sonnet-4-5-20250929`): the id is forwarded in the
/// path with an account's token, so `..`, escapes and slashes never reach Claude.
fn check_model_id(raw: &str) -> Result<(), ApiError> {
    let well_formed = raw.len() <= 256
        && raw.starts_with(|c: char| c.is_ascii_alphanumeric())
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:@-".contains(&b));
    if well_formed {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "`{}` is not a model id; model ids are letters, digits and . _ : @ - (e.g. claude-sonnet-4-5)",
            raw.chars().take(80).collect::<String>()
        )))
    }
}

async fn measured(
    req: HttpRequest,
    payload: Option<web::Payload>,
    svc: web::Data<Services>,
    kind: Kind,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    crate::worker_memory::note_request();
    // What the request turned out to be, for its metrics; borrowed by `forward`, not copied.
    let mut family = None;
    let (key, result) = match authenticate(&req, &svc).await {
        Ok(key) => {
            let result = forward(&req, payload, &svc, kind, &key, started, &mut family).await;
            (Some(key), result)
        }
        Err(e) => (None, Err(e)),
    };
    let status = match &result {
        Ok(r) => r.status(),
        Err(e) => actix_web::ResponseError::status_code(e),
    };
    let tier = key.as_ref().map_or("none", |k| k.tier.as_str());
    let family = family.map_or("none", ModelFamily::as_str);
    tier_metrics(tier).count_request(family, status.as_u16());
    if let Err(ApiError::Pool(PoolError::RateLimited { .. })) = &result {
        metrics()
            .rate_limited
            .get_or_create(&TierFamily {
                tier: tier.to_string(),
                family: family.to_string(),
            })
            .inc();
    }
    result
}

/// Claude Code's telemetry: answered here, never forwarded.
pub async fn telemetry() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({}))
}

async fn authenticate(req: &HttpRequest, svc: &Services) -> Result<Arc<KeyRecord>, ApiError> {
    let headers = req.headers();
    let key = ApiKey::from_headers(
        headers
            .get(super::header_names::X_API_KEY)
            .map(|v| v.as_bytes()),
        headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()),
    )?;
    match (svc.keys.authenticate(&key, now_ms()), &svc.backend) {
        // A key made by another instance sharing Redis: learn it once. Its status is
        // checked again, atomically, by every admission in Redis.
        (Err(AuthError::Unknown), Backend::Redis(store)) => {
            let record = store
                .key_by_digest(&key.digest())
                .await
                .map_err(|e| ApiError::Pool(e.into()))?
                .ok_or(ApiError::Unauthorized)?;
            svc.keys.insert(record);
            Ok(svc.keys.authenticate(&key, now_ms())?)
        }
        (result, _) => Ok(result?),
    }
}

/// Puts Claude Code's identity first in `system` when the client is not Claude Code (and the
/// model is not a Haiku).
fn with_identity(req: &HttpRequest, svc: &Services, haiku: bool, body: Bytes) -> Bytes {
    let ua = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    if !svc.config.upstream.identity_prompt || is_claude_code(ua) || haiku {
        return body;
    }
    match splice_identity(&body) {
        Spliced::Unchanged => return body,
        Spliced::Changed(spliced) => return Bytes::from(spliced),
        Spliced::NeedsFullRewrite => {}
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

/// One line per request: the binding, and the window. Run beside the request's first send
/// (see `Exchange::run`), which is polled first: the line is formatted once the request is
/// on its way (written, or its connection opening) and waits for Claude, without a task of
/// its own.
pub(super) async fn log_admission(key: &KeyRecord, a: &Admission) {
    if !log::log_enabled!(log::Level::Info) {
        return;
    }
    let line = admission_line(
        &key.prefix,
        &a.account,
        a.newly_bound,
        a.slots_used,
        a.slots,
        a.grant,
    );
    log::info!("{line}");
}

/// The words operators grep for (SPEC §14), put together by hand: formatting them through
/// `format_args!` cost as much as the rest of the request's bookkeeping.
fn admission_line(
    prefix: &str,
    account: &str,
    newly_bound: bool,
    slots_used: u32,
    slots: u32,
    grant: Option<WindowGrant>,
) -> String {
    let mut number = itoa::Buffer::new();
    let mut line = String::with_capacity(128);
    line.push_str("key ");
    line.push_str(prefix);
    line.push_str(if newly_bound {
        " assigned to account: "
    } else {
        " using assigned account: "
    });
    line.push_str(account);
    line.push_str(" (slots: ");
    line.push_str(number.format(slots_used));
    line.push('/');
    line.push_str(number.format(slots));
    line.push(')');
    if let Some(g) = grant {
        line.push_str(", rate limit check passed: ");
        line.push_str(number.format(g.limit - g.remaining));
        line.push('/');
        line.push_str(number.format(g.limit));
        line.push_str(" requests");
    }
    line
}

/// `started`: when the request arrived; `seen_family` is filled in for its metrics.
async fn forward(
    req: &HttpRequest,
    payload: Option<web::Payload>,
    svc: &Services,
    kind: Kind,
    key: &Arc<KeyRecord>,
    started: Instant,
    seen_family: &mut Option<ModelFamily>,
) -> Result<HttpResponse, ApiError> {
    let (body, family) = match payload {
        Some(payload) => {
            let body = read_limited(req, payload, BodyRules::client(&svc.config.server)).await?;
            let model = model_of(&body)?;
            let family = (kind == Kind::Messages).then(|| ModelFamily::of_model(&model));
            let haiku = contains_ignoring_case(&model, "haiku");
            *seen_family = family;
            (Some(with_identity(req, svc, haiku, body)), family)
        }
        None => (None, None),
    };
    let pool = svc
        .pools
        .get(&key.tier)
        .ok_or_else(|| PoolError::NoAccounts {
            tier: crate::domain::tier::capitalize(&key.tier),
        })?;
    let admission = match pool.admit(key, family).await {
        Ok(a) => a,
        Err(PoolError::TokenExpired { account, .. }) => {
            // Tell the client when the coordinator will try next.
            let retry_at = next_attempt(&svc.refresher, &key.tier, &account).await;
            return Err(PoolError::TokenExpired { account, retry_at }.into());
        }
        Err(e) => return Err(e.into()),
    };
    let ticket = admission.family.map(|family| SettleTicket {
        pool: pool.clone(),
        key: key.clone(),
        account: admission.account.clone(),
        family,
        window_started: admission.grant.map(|g| g.started_at),
        count_id: admission.count_id.clone(),
    });
    Exchange {
        svc,
        req,
        key,
        pool,
        body,
        admission,
        ticket,
        started,
    }
    .run()
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ids_are_checked_before_they_reach_claude() {
        for good in ["claude-sonnet-4-5-20250929", "claude-3.5@v2", "a:b_c"] {
            assert!(check_model_id(good).is_ok(), "{good}");
        }
        for bad in ["", "..", ".hidden", "a%2fb", "a/b", "a b", &"x".repeat(257)] {
            assert!(check_model_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn admission_lines_keep_the_grepped_words() {
        let grant = WindowGrant {
            started_at: 0,
            limit: 75,
            remaining: 70,
            resets_at: 0,
        };
        assert_eq!(
            admission_line("sk-cli-v1-Ab12", "alice", true, 1, 2, Some(grant)),
            "key sk-cli-v1-Ab12 assigned to account: alice (slots: 1/2), rate limit check passed: 5/75 requests"
        );
        assert_eq!(
            admission_line("sk-cli-v1-Ab12", "bob", false, 2, 2, None),
            "key sk-cli-v1-Ab12 using assigned account: bob (slots: 2/2)"
        );
    }
}
