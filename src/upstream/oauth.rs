//! The OAuth token endpoint: trades a refresh token for a new pair. Refresh tokens are
//! single-use, so the caller must store the answer before anything else uses it.

use crate::clock::now_ms;
use crate::config::UpstreamConfig;
use crate::domain::Credential;
use crate::upstream::{h1, request};
use actix_web::http::Method;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefreshError {
    #[error("refresh token rejected (invalid_grant)")]
    InvalidGrant,
    #[error("token endpoint rate limited us; retry after {0:?}")]
    RateLimited(Duration),
    #[error("account has no refresh token")]
    NoRefreshToken,
    #[error("token endpoint unreachable: {0}")]
    Transport(String),
    #[error("token endpoint answered {0}")]
    BadResponse(String),
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    refresh_token: Option<String>,
    expires_in: Option<i64>,
}

pub async fn refresh(
    cfg: &UpstreamConfig,
    current: &Credential,
) -> Result<Credential, RefreshError> {
    let refresh_token = current
        .refresh_token
        .clone()
        .ok_or(RefreshError::NoRefreshToken)?;
    let body = serde_json::json!({
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "client_id": cfg.oauth_client_id,
    })
    .to_string();
    let endpoint = h1::Endpoint::parse(&cfg.oauth_token_url)
        .map_err(|e| RefreshError::Transport(format!("upstream.oauth_token_url: {e}")))?;
    // A new connection each time, closed after: a refresh token is single-use, so a
    // request is never sent again on a pooled connection that might have gone stale.
    let head = request::closing_head(
        &endpoint,
        &Method::POST,
        "",
        &[
            (b"user-agent", cfg.user_agent.as_bytes()),
            (b"content-type", b"application/json"),
            (b"accept", b"application/json"),
        ],
        Some(body.len()),
    );
    let timeouts = h1::Timeouts {
        connect: cfg.connect_timeout.get(),
        answer: cfg.connect_timeout.get().max(Duration::from_secs(30)),
    };
    let mut answer = h1::send(
        &endpoint,
        &head,
        body.as_bytes(),
        timeouts,
        h1::Connection::Once,
    )
    .await
    .map_err(|e| RefreshError::Transport(e.to_string()))?;
    let status = answer.status();
    let bytes = answer
        .read_body(1024 * 1024)
        .await
        .map_err(|e| RefreshError::Transport(e.to_string()))?;
    if status.as_u16() == 429 {
        let secs = answer
            .headers()
            .get_str("retry-after")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(60);
        return Err(RefreshError::RateLimited(Duration::from_secs(secs)));
    }
    let text = String::from_utf8_lossy(&bytes);
    if text.contains("invalid_grant") {
        return Err(RefreshError::InvalidGrant);
    }
    if !status.is_success() {
        let detail: String = crate::domain::upstream_answer::error_message(&bytes)
            .chars()
            .take(120)
            .collect();
        return Err(RefreshError::BadResponse(format!("{status}: {detail}")));
    }
    let parsed: TokenAnswer = serde_json::from_slice(&bytes).map_err(|e| {
        RefreshError::BadResponse(format!("{status} with an unreadable body ({e})"))
    })?;
    if parsed.access_token.trim().is_empty() {
        return Err(RefreshError::BadResponse("an empty access token".into()));
    }
    Ok(Credential {
        access_token: parsed.access_token,
        refresh_token: parsed.refresh_token.or(Some(refresh_token)),
        expires_at: Some(now_ms() + parsed.expires_in.unwrap_or(3600).max(0) * 1000),
    })
}
