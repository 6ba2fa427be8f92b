//! One request's trip to Claude and back, with what Claude's answer does to the account
//! (SPEC §8): an expired token is refreshed and the request retried once; a dead account is
//! blacklisted and the request retried once on the key's new account; a 429 marks the
//! account limited. Nothing has reached the client before that decision.

use super::error::ApiError;
use super::header_names as names;
use super::ratelimit_headers::{reset_value, unified_reset_ms};
use super::relay::{Relay, SettleTicket};
use crate::actors::pool::{
    Admission, BlacklistAccount, GetCredential, MarkLimited, Outcome, PoolError, PoolHandle,
};
use crate::actors::refresh::{next_attempt, RefreshNow};
use crate::actors::supervisor::Services;
use crate::clock::{now_ms, rfc3339};
use crate::domain::headers::return_response_header;
use crate::domain::upstream_answer::{classify, needs_body, AccountEffect};
use crate::domain::Credential;
use crate::metrics::tier_metrics;
use crate::store::KeyRecord;
use crate::upstream::h1::{self, Answer, Connection, Fields, SendError};
use crate::upstream::oauth::RefreshError;
use crate::upstream::{request, usage::UsageReader};
use actix_web::body::{BodyStream, SizedStream};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::{ConnectionType, Method, StatusCode, Version};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Instant;

/// The most of an error answer (400/401/403) read to classify it.
const MAX_ERROR_BODY: usize = 4 * 1024 * 1024;

pub struct Exchange<'a> {
    pub svc: &'a Services,
    pub req: &'a HttpRequest,
    pub key: &'a Arc<KeyRecord>,
    pub pool: &'a PoolHandle,
    pub body: Option<Bytes>,
    pub admission: Admission,
    pub ticket: Option<SettleTicket>,
    /// When the client's request arrived.
    pub started: Instant,
}

/// The name of a header passed on: the ones every answer has are made once, not parsed and
/// copied per answer.
fn header_name(name: &[u8]) -> Option<HeaderName> {
    if name.eq_ignore_ascii_case(b"content-type") {
        Some(header::CONTENT_TYPE)
    } else if name.eq_ignore_ascii_case(b"request-id") {
        Some(names::REQUEST_ID)
    } else {
        HeaderName::from_bytes(name).ok()
    }
}

/// Upstream answers that mean "Claude did not serve this": the request is given back.
fn is_refunded(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

impl Exchange<'_> {
    fn refund(&mut self) {
        if let Some(t) = self.ticket.take() {
            t.settle(Outcome::Refund);
        }
    }

    /// Sends the request; when Claude hangs up the connection before answering (typically a
    /// pooled one it had just timed out), once more on a new connection (the request cannot
    /// have been served: no answer began).
    async fn send(&self) -> Result<Answer, SendError> {
        let upstream = &self.svc.config.upstream;
        let endpoint = request::endpoint(&upstream.base_url)
            .map_err(|e| SendError::Io(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
        let path = self.req.uri().path_and_query().map_or("/", |p| p.as_str());
        let method = if self.body.is_some() {
            Method::POST
        } else {
            Method::GET
        };
        let head = request::head(
            &endpoint,
            upstream,
            &method,
            path,
            self.req.headers(),
            &self.admission.credential.access_token,
            self.body.as_ref().map(Bytes::len),
        );
        let body = self.body.as_deref().unwrap_or_default();
        let timeouts = request::timeouts(upstream);
        match h1::send(&endpoint, &head, body, timeouts, Connection::Pooled).await {
            Err(e) if e.closed_before_answer() => {
                log::info!(
                    "Claude closed the connection for account {} before answering ({e}); sending again on a new connection",
                    self.admission.account
                );
                h1::send(&endpoint, &head, body, timeouts, Connection::Fresh).await
            }
            sent => sent,
        }
    }

    /// Moves the key to a new account after its old one was blacklisted (uncounted).
    async fn rebind(&mut self) -> Result<(), ApiError> {
        let moved = self.pool.admit(self.key, None).await?;
        log::info!(
            "key {} assigned to account: {} (slots: {}/{})",
            self.key.prefix,
            moved.account,
            moved.slots_used,
            moved.slots
        );
        if let Some(t) = self.ticket.as_mut() {
            t.account = moved.account.clone();
        }
        self.admission.account = moved.account;
        self.admission.credential = moved.credential;
        Ok(())
    }

    /// A credential newer than the one Claude called expired: someone else's fresh one, or
    /// an urgent refresh through the coordinator (which keeps the lock and cooldown rules).
    /// `None`: the rules hold the refresh back longer than a client should wait
    /// (`[refresh] urgent_wait`); it still happens as soon as they allow.
    async fn fresh_credential(
        &self,
        account: &str,
    ) -> Result<Option<Arc<Credential>>, RefreshError> {
        let current = self
            .pool
            .addr()
            .send(GetCredential {
                account: account.to_string(),
            })
            .await
            .ok()
            .flatten();
        if let Some(current) = current.filter(|c| c.is_newer_than(&self.admission.credential)) {
            return Ok(Some(current));
        }
        let refreshed = self.svc.refresher.addr().send(RefreshNow {
            tier: self.key.tier.clone(),
            account: account.to_string(),
        });
        let patience = self.svc.config.refresh.urgent_wait.get();
        match tokio::time::timeout(patience, refreshed).await {
            Ok(answer) => answer
                .map_err(|e| RefreshError::BadResponse(format!("refresh coordinator: {e}")))?
                .map(Some),
            Err(_) => Ok(None),
        }
    }

    async fn blacklist(&self, reason: String) {
        let _ = self
            .pool
            .addr()
            .send(BlacklistAccount {
                account: self.admission.account.to_string(),
                reason,
            })
            .await;
    }

    /// What to do about an answer whose body was read; Ok(true) means "send again".
    async fn react(&mut self, effect: AccountEffect, retried: bool) -> Result<bool, ApiError> {
        match effect {
            AccountEffect::None => Ok(false),
            AccountEffect::ProxyFault => {
                log::error!(
                    "Claude refused OAuth for account {}: the proxy must send the oauth beta; account left untouched",
                    self.admission.account
                );
                Ok(false)
            }
            // Already sent twice: no third try. The client hears "expired, retry shortly"
            // (SDKs retry a 503), not Claude's 401, which Claude Code reads as a bad key.
            // Its next request refreshes the account at once (an urgent refresh, as here).
            AccountEffect::TokenExpired if retried => Err(self.token_expired(Some(now_ms()))),
            AccountEffect::TokenExpired => {
                let account = self.admission.account.to_string();
                match self.fresh_credential(&account).await {
                    Ok(Some(credential)) => {
                        self.admission.credential = credential;
                        Ok(!retried)
                    }
                    // Held back by the lock, a cooldown or a pause: not this account's failure.
                    Ok(None) => {
                        let retry_at =
                            next_attempt(&self.svc.refresher, &self.key.tier, &account).await;
                        Err(self.token_expired(retry_at))
                    }
                    // The token endpoint asked every refresh to wait: a pause, not a failure
                    // of this account (SPEC §9), so no blacklist.
                    Err(RefreshError::RateLimited(wait)) => {
                        let wait = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
                        Err(self.token_expired(Some(now_ms().saturating_add(wait))))
                    }
                    Err(e) => {
                        self.blacklist(format!("token expired and refresh failed: {e}"))
                            .await;
                        self.retry_elsewhere(retried).await
                    }
                }
            }
            AccountEffect::Blacklist(reason) => {
                self.blacklist(reason).await;
                self.retry_elsewhere(retried).await
            }
        }
    }

    /// The request ends with "OAuth token has expired" (503, retry-after): given back.
    fn token_expired(&mut self, retry_at: Option<crate::domain::Millis>) -> ApiError {
        self.refund();
        PoolError::TokenExpired {
            account: self.admission.account.to_string(),
            retry_at,
        }
        .into()
    }

    async fn retry_elsewhere(&mut self, retried: bool) -> Result<bool, ApiError> {
        if retried {
            return Ok(false);
        }
        match self.rebind().await {
            Ok(()) => Ok(true),
            Err(e) => {
                self.refund();
                Err(e)
            }
        }
    }

    pub async fn run(mut self) -> Result<HttpResponse, ApiError> {
        let mut retried = false;
        loop {
            let sending = Instant::now();
            let sent = if retried {
                Box::pin(self.send()).await
            } else {
                let admitted = super::proxy::log_admission(self.key, &self.admission);
                futures_util::future::join(self.send(), admitted).await.0
            };
            self.observe_timing(sending);
            let answer = match sent {
                Ok(answer) => answer,
                Err(e) => {
                    self.refund();
                    log::warn!(
                        "upstream request for account {} failed: {e}",
                        self.admission.account
                    );
                    return Err(match e {
                        SendError::Timeout(_) => ApiError::UpstreamTimeout,
                        hung_up if hung_up.closed_before_answer() => ApiError::UpstreamUnreachable(
                            "it closed the connection twice without answering".into(),
                        ),
                        other => ApiError::UpstreamUnreachable(other.to_string()),
                    });
                }
            };
            let status = answer.status();
            if status == StatusCode::TOO_MANY_REQUESTS {
                if let Some(until) = unified_reset_ms(answer.headers()) {
                    log::warn!(
                        "account {} rate limited by Claude until {}",
                        self.admission.account,
                        rfc3339(until)
                    );
                    self.pool.addr().do_send(MarkLimited {
                        account: self.admission.account.to_string(),
                        until,
                    });
                }
            }
            if !needs_body(status.as_u16()) {
                return Ok(self.relay(answer));
            }
            let mut answer = answer;
            // The rare paths are boxed: this future is copied onto the heap for every
            // request, and their state would make it several times the size of a plain one.
            let body = match Box::pin(answer.read_body(MAX_ERROR_BODY)).await {
                Ok(body) => body,
                Err(e) => {
                    // No usable answer reached the client: the request is given back.
                    self.refund();
                    return Err(ApiError::UpstreamUnreachable(format!(
                        "reading Claude's answer: {e}"
                    )));
                }
            };
            let effect = classify(status.as_u16(), &body);
            let touched_account =
                effect != AccountEffect::None && effect != AccountEffect::ProxyFault;
            let set_aside = matches!(effect, AccountEffect::Blacklist(_));
            if Box::pin(self.react(effect, retried)).await? {
                retried = true;
                continue;
            }
            if touched_account {
                // Our account failed the client, not the client's request.
                self.refund();
                if set_aside && retried {
                    return Err(ApiError::AccountsRefused);
                }
            }
            return Ok(self.buffered(&answer, status, body));
        }
    }

    /// Upstream latency, and the proxy's own share of the time so far.
    fn observe_timing(&self, sending: Instant) {
        let m = tier_metrics(&self.key.tier);
        m.upstream_latency.observe(sending.elapsed().as_secs_f64());
        m.proxy_overhead
            .observe(sending.duration_since(self.started).as_secs_f64());
    }

    fn head(&self, answer_headers: &Fields, status: StatusCode) -> HttpResponseBuilder {
        let mut response = HttpResponse::build(status);
        for (name, value) in answer_headers.shared(return_response_header) {
            // httparse checked both; a pair `http` still refuses is left out.
            if let (Some(name), Ok(value)) =
                (header_name(name), HeaderValue::from_maybe_shared(value))
            {
                response.append_header((name, value));
            }
        }
        if status.is_success() {
            // Appended: Claude's answer never carries them (only ours pass `return_response_header`).
            if let Some(g) = self.admission.grant {
                response.append_header((names::RATELIMIT_LIMIT, g.limit));
                response.append_header((names::RATELIMIT_REMAINING, g.remaining));
                response.append_header((names::RATELIMIT_RESET, reset_value(g.resets_at)));
            }
        }
        if status == StatusCode::TOO_MANY_REQUESTS && !answer_headers.contains("retry-after") {
            let secs = unified_reset_ms(answer_headers)
                .map_or(60, |until| ((until - now_ms()) / 1000).max(1));
            response.insert_header((header::RETRY_AFTER, secs));
        }
        response
    }

    /// An answer read whole (an error we had to look at); counted unless refunded above.
    fn buffered(mut self, answer: &Answer, status: StatusCode, body: Bytes) -> HttpResponse {
        let mut response = self.head(answer.headers(), status);
        if let Some(t) = self.ticket.take() {
            t.settle(Outcome::Served(Default::default()));
        }
        response.body(body)
    }

    /// An answer streamed through as it arrives.
    fn relay(mut self, answer: Answer) -> HttpResponse {
        let Answer {
            status,
            headers,
            mut body,
        } = answer;
        let mut response = self.head(&headers, status);
        if is_refunded(status) {
            self.refund();
        }
        let content_type = headers.get_str("content-type");
        let is_stream = content_type.is_some_and(|c| c.starts_with("text/event-stream"));
        let mut usage = UsageReader::for_content_type(content_type);
        if !is_stream {
            // An answer that is all here already goes out as one piece, not as a stream.
            if let Some(whole) = body.take_if_here() {
                if let Some(ticket) = self.ticket.take() {
                    usage.feed(&whole);
                    ticket.settle_after_send(usage);
                }
                return response.body(whole);
            }
        }
        let first_byte = is_stream.then(|| (self.started, self.key.clone()));
        // A sized answer keeps its length (no chunked framing the client never asked for).
        let length = headers
            .get_str("content-length")
            .and_then(|v| v.parse::<u64>().ok());
        // The sized body writes its own content-length: no header to insert and read back.
        let relay = Relay::new(body, usage, self.ticket.take(), first_byte);
        let mut response = match length {
            Some(length) => response.body(SizedStream::new(length, relay)),
            None => response.body(BodyStream::new(relay)),
        };
        if length.is_none() && self.req.version() < Version::HTTP_11 {
            // HTTP/1.0 has no chunked coding: the body runs until the connection closes.
            response.head_mut().no_chunking(true);
            response
                .head_mut()
                .set_connection_type(ConnectionType::Close);
        }
        response
    }
}
