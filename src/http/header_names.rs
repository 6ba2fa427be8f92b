//! Header names the proxy writes, made once: a name given as text is parsed and copied on
//! every request.

use actix_web::http::header::HeaderName;

pub const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit-requests");
pub const RATELIMIT_REMAINING: HeaderName =
    HeaderName::from_static("x-ratelimit-remaining-requests");
pub const RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset-requests");
pub const ANTHROPIC_BETA: HeaderName = HeaderName::from_static("anthropic-beta");
pub const ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");
pub const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
pub const REQUEST_ID: HeaderName = HeaderName::from_static("request-id");
