//! Every error a client can cause, as Anthropic's error JSON, so SDKs show the message.

use super::header_names as names;
use crate::actors::keys::{AuthError, KeyError};
use crate::actors::pool::PoolError;
use crate::clock::{now_ms, rfc3339_ms};
use crate::domain::KeyParseError;
use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("Unauthorized API key: send a key issued by this proxy in x-api-key or Authorization: Bearer")]
    Unauthorized,
    #[error("Invalid API key format: keys look like sk-cli-v1- followed by 32 letters and digits (not an sk-ant- token)")]
    MalformedKey,
    #[error("API key has expired: ask the operator for a new key")]
    KeyExpired,
    #[error("API key has been revoked: ask the operator for a new key")]
    KeyRevoked,
    #[error("{0}")]
    Pool(PoolError),
    #[error("{0}")]
    BadRequest(String),
    #[error("Request body is larger than the {limit}-byte limit; send a smaller request")]
    TooLarge { limit: usize },
    #[error("The request body stopped arriving (nothing for {}s); send the whole body without pausing", .0.as_secs_f64())]
    BodyTimeout(std::time::Duration),
    #[error("Content-Encoding `{0}` is not supported; send the request body as uncompressed JSON")]
    UnsupportedEncoding(String),
    #[error("Could not reach Claude ({0}); try again shortly")]
    UpstreamUnreachable(String),
    #[error("Claude did not answer in time; try again")]
    UpstreamTimeout,
    /// The retry on a second account was refused too: Claude's own 401/403 would read to a
    /// client (Claude Code) as a bad key of its own.
    #[error("Claude refused this request's account and the one it was moved to (both are now set aside); retry: the next request goes to another account, if the pool has one")]
    AccountsRefused,
    #[error("Admin token missing or wrong: send Authorization: Bearer <admin token>")]
    AdminUnauthorized,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("Internal proxy error ({0}); try again")]
    Internal(String),
}

impl From<KeyParseError> for ApiError {
    fn from(e: KeyParseError) -> ApiError {
        match e {
            KeyParseError::Missing => ApiError::Unauthorized,
            KeyParseError::Malformed => ApiError::MalformedKey,
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        match e {
            AuthError::Unknown => ApiError::Unauthorized,
            AuthError::Expired => ApiError::KeyExpired,
            AuthError::Revoked => ApiError::KeyRevoked,
        }
    }
}

impl From<PoolError> for ApiError {
    fn from(e: PoolError) -> ApiError {
        match e {
            PoolError::KeyUnknown => ApiError::Unauthorized,
            PoolError::KeyRevoked => ApiError::KeyRevoked,
            PoolError::KeyExpired => ApiError::KeyExpired,
            other => ApiError::Pool(other),
        }
    }
}

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> ApiError {
        match e {
            KeyError::UnknownTier(_) | KeyError::Invalid(_) => ApiError::BadRequest(e.to_string()),
            KeyError::NotFound(_) => ApiError::NotFound(e.to_string()),
            KeyError::Pool(PoolError::UnknownAccount { .. }) => ApiError::NotFound(e.to_string()),
            KeyError::Pool(PoolError::AccountFull { .. }) => ApiError::Conflict(e.to_string()),
            KeyError::Pool(p) => ApiError::Pool(p),
        }
    }
}

fn retry_after_secs(at: i64) -> i64 {
    ((at - now_ms()) as f64 / 1000.0).ceil().max(1.0) as i64
}

impl ApiError {
    fn error_type(&self) -> &'static str {
        match self {
            ApiError::Unauthorized
            | ApiError::MalformedKey
            | ApiError::KeyExpired
            | ApiError::KeyRevoked
            | ApiError::AdminUnauthorized => "authentication_error",
            ApiError::BadRequest(_) | ApiError::Conflict(_) => "invalid_request_error",
            ApiError::TooLarge { .. } => "request_too_large",
            ApiError::BodyTimeout(_) => "timeout_error",
            ApiError::UnsupportedEncoding(_) => "invalid_request_error",
            ApiError::NotFound(_) => "not_found_error",
            ApiError::Pool(p) => match p {
                PoolError::FamilyNotAllowed { .. } => "permission_error",
                PoolError::RateLimited { .. } => "rate_limit_error",
                PoolError::UnknownAccount { .. } => "not_found_error",
                PoolError::KeyUnknown | PoolError::KeyRevoked | PoolError::KeyExpired => {
                    "authentication_error"
                }
                PoolError::AccountFull { .. } => "invalid_request_error",
                PoolError::NoAccounts { .. }
                | PoolError::AtCapacity { .. }
                | PoolError::TokenExpired { .. }
                | PoolError::FixedAccountUnavailable { .. }
                | PoolError::FixedAccountFull { .. }
                | PoolError::Store(_)
                | PoolError::Unavailable => "api_error",
            },
            ApiError::UpstreamUnreachable(_)
            | ApiError::UpstreamTimeout
            | ApiError::AccountsRefused
            | ApiError::Internal(_) => "api_error",
        }
    }

    fn message(&self) -> String {
        match self {
            ApiError::Pool(PoolError::RateLimited {
                family,
                limit,
                resets_at,
            }) => format!(
                "Rate limit exceeded for {}: {limit} requests per window; the window resets at {}",
                family.display(),
                rfc3339_ms(*resets_at)
            ),
            ApiError::Pool(PoolError::NoAccounts { .. }) => {
                format!("{self}; ask the operator to add accounts")
            }
            ApiError::Pool(PoolError::AtCapacity { .. }) => {
                format!("{self}; try again later or ask the operator for more accounts")
            }
            ApiError::Pool(PoolError::TokenExpired { .. }) => {
                format!("{self}; a refresh is pending, retry shortly")
            }
            ApiError::Pool(PoolError::Store(_) | PoolError::Unavailable) => {
                format!("{self}; retry in a few seconds")
            }
            ApiError::Pool(PoolError::FixedAccountUnavailable { .. }) => {
                format!("{self}; retry later, or ask the operator to recover the account")
            }
            ApiError::Pool(PoolError::FixedAccountFull { .. }) => {
                format!("{self}; retry when a key of it expires, or ask the operator to free one")
            }
            _ => self.to_string(),
        }
    }

    fn leaves_body_unread(&self) -> bool {
        matches!(
            self,
            ApiError::TooLarge { .. } | ApiError::BodyTimeout(_) | ApiError::UnsupportedEncoding(_)
        )
    }

    fn retry_after(&self) -> Option<i64> {
        match self {
            ApiError::Pool(PoolError::RateLimited { resets_at, .. }) => {
                Some(retry_after_secs(*resets_at))
            }
            ApiError::Pool(PoolError::TokenExpired { retry_at, .. }) => {
                Some(retry_at.map_or(60, retry_after_secs))
            }
            ApiError::AccountsRefused => Some(1),
            _ => None,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized
            | ApiError::MalformedKey
            | ApiError::KeyExpired
            | ApiError::KeyRevoked
            | ApiError::AdminUnauthorized => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::UpstreamUnreachable(_) => StatusCode::BAD_GATEWAY,
            ApiError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ApiError::AccountsRefused => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Pool(p) => match p {
                PoolError::FamilyNotAllowed { .. } => StatusCode::FORBIDDEN,
                PoolError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
                PoolError::UnknownAccount { .. } => StatusCode::NOT_FOUND,
                PoolError::KeyUnknown | PoolError::KeyRevoked | PoolError::KeyExpired => {
                    StatusCode::UNAUTHORIZED
                }
                PoolError::AccountFull { .. } => StatusCode::CONFLICT,
                PoolError::NoAccounts { .. }
                | PoolError::AtCapacity { .. }
                | PoolError::TokenExpired { .. }
                | PoolError::FixedAccountUnavailable { .. }
                | PoolError::FixedAccountFull { .. }
                | PoolError::Store(_)
                | PoolError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            },
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut builder = HttpResponse::build(self.status_code());
        if self.leaves_body_unread() {
            // The rest of the body would be read as the next request: end the connection.
            builder.force_close();
        }
        if let Some(secs) = self.retry_after() {
            builder.insert_header((header::RETRY_AFTER, secs));
        }
        if let ApiError::Pool(PoolError::RateLimited {
            limit, resets_at, ..
        }) = self
        {
            builder.insert_header((names::RATELIMIT_LIMIT, *limit));
            builder.insert_header((names::RATELIMIT_REMAINING, 0u32));
            builder.insert_header((names::RATELIMIT_RESET, rfc3339_ms(*resets_at)));
        }
        builder.json(error_body(self.error_type(), &self.message()))
    }
}

pub fn error_body(kind: &str, message: &str) -> serde_json::Value {
    serde_json::json!({"type": "error", "error": {"type": kind, "message": message}})
}
