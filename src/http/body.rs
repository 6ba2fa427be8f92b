//! Reading and checking a client's request body.

use super::body_scan::scan_model;
use super::error::ApiError;
use crate::config::ServerConfig;
use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::web;
use bytes::{Bytes, BytesMut};
use futures_util::future::poll_immediate;
use futures_util::StreamExt;
use serde::Deserialize;
use std::borrow::Cow;

/// How a request body may arrive.
#[derive(Clone, Copy)]
pub struct BodyRules {
    /// Largest body accepted, in bytes.
    pub limit: usize,
    /// Longest wait for the body's next bytes.
    pub idle: std::time::Duration,
}

/// Admin calls carry a few small fields.
const ADMIN_BODY_LIMIT: usize = 64 * 1024;

impl BodyRules {
    /// A client's request to be forwarded.
    pub fn client(server: &ServerConfig) -> BodyRules {
        BodyRules {
            limit: server.body_limit,
            idle: server.body_timeout.get(),
        }
    }

    /// An admin call's body, read only once the caller has shown the admin token.
    pub fn admin(server: &ServerConfig) -> BodyRules {
        BodyRules {
            limit: ADMIN_BODY_LIMIT.min(server.body_limit),
            idle: server.body_timeout.get(),
        }
    }
}

/// Reads the whole body, refusing it as soon as it passes the limit, when it stops arriving,
/// or when it is compressed (it is read for its model and forwarded as it is).
pub async fn read_limited(
    req: &actix_web::HttpRequest,
    mut payload: web::Payload,
    rules: BodyRules,
) -> Result<Bytes, ApiError> {
    refuse_encoded(req)?;
    let limit = rules.limit;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::TooLarge { limit });
    }
    let expected = declared.unwrap_or(8 * 1024).min(limit);
    let mut body = Collected::default();
    loop {
        let chunk = match next_chunk(&mut payload, rules.idle).await {
            Err(_) => return Err(ApiError::BodyTimeout(rules.idle)),
            Ok(None) => break,
            Ok(Some(chunk)) => chunk.map_err(|e| unreadable(&e, limit))?,
        };
        if body.len() + chunk.len() > limit {
            return Err(ApiError::TooLarge { limit });
        }
        body.push(chunk, expected);
    }
    Ok(body.into_bytes())
}

/// A body's chunks: a body that came in one chunk (most do, with their headers) is kept as
/// it came, without a copy; a second chunk starts a buffer for the whole.
#[derive(Default)]
struct Collected {
    first: Bytes,
    joined: Option<BytesMut>,
}

impl Collected {
    fn len(&self) -> usize {
        self.joined.as_ref().map_or(self.first.len(), BytesMut::len)
    }

    /// `capacity`: what the whole is expected to take.
    fn push(&mut self, chunk: Bytes, capacity: usize) {
        match &mut self.joined {
            Some(joined) => joined.extend_from_slice(&chunk),
            None if self.first.is_empty() => self.first = chunk,
            None => {
                let first = std::mem::take(&mut self.first);
                let mut joined = BytesMut::with_capacity(capacity.max(first.len() + chunk.len()));
                joined.extend_from_slice(&first);
                joined.extend_from_slice(&chunk);
                self.joined = Some(joined);
            }
        }
    }

    fn into_bytes(self) -> Bytes {
        self.joined.map_or(self.first, BytesMut::freeze)
    }
}

/// The body's next chunk, or Elapsed when none comes within `idle`. A chunk already read
/// (most bodies arrive with their headers) is taken without arming a timer.
async fn next_chunk(
    payload: &mut web::Payload,
    idle: std::time::Duration,
) -> Result<Option<Result<Bytes, PayloadError>>, tokio::time::error::Elapsed> {
    // `next()` is cancel-safe: dropping a pending one loses nothing.
    if let Some(ready) = poll_immediate(payload.next()).await {
        return Ok(ready);
    }
    actix_rt::time::timeout(idle, payload.next()).await
}

/// A body in any coding but identity: its model cannot be read, and Claude takes plain JSON.
fn refuse_encoded(req: &actix_web::HttpRequest) -> Result<(), ApiError> {
    for value in req.headers().get_all(header::CONTENT_ENCODING) {
        let coding = String::from_utf8_lossy(value.as_bytes());
        for coding in coding.split(',').map(str::trim) {
            if !(coding.is_empty() || coding.eq_ignore_ascii_case("identity")) {
                return Err(ApiError::UnsupportedEncoding(
                    coding.chars().take(40).collect(),
                ));
            }
        }
    }
    Ok(())
}

/// Why a body could not be read, worded for the client.
fn unreadable(error: &PayloadError, limit: usize) -> ApiError {
    let why = match error {
        PayloadError::Overflow => return ApiError::TooLarge { limit },
        PayloadError::Incomplete(_) => {
            "The request body ended before the length it declared; send the whole body"
        }
        PayloadError::EncodingCorrupted => {
            "The request body's transfer coding is corrupt; send the body again"
        }
        PayloadError::UnknownLength => {
            "The request body has no length; send Content-Length or chunked encoding"
        }
        _ => "The request body could not be read from the connection; send it again",
    };
    ApiError::BadRequest(why.into())
}

/// The fields the proxy needs from a Messages request; the rest is skipped unparsed.
#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
}

/// The `model` as serde reads it (the whole body checked on the way).
pub(super) fn serde_model(body: &[u8]) -> serde_json::Result<Option<Cow<'_, str>>> {
    serde_json::from_slice::<Probe<'_>>(body).map(|probe| probe.model)
}

/// The request's model, or a 400 that says what is missing.
pub fn model_of(body: &[u8]) -> Result<Cow<'_, str>, ApiError> {
    if body.is_empty() {
        return Err(ApiError::BadRequest(
            "The request body is empty; send a JSON object with a `model` field".into(),
        ));
    }
    if body.starts_with(b"\xEF\xBB\xBF") {
        return Err(ApiError::BadRequest(
            "The request body starts with a byte-order mark; send the JSON without it".into(),
        ));
    }
    // serde would also read a struct from an array (`["claude-…"]`): only objects are requests.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::BadRequest(
            "The request body is not a JSON object; send a JSON object with a `model` field".into(),
        ));
    }
    // The fast scan reads most bodies; serde decides (and words the error) for the rest.
    let model = match scan_model(body) {
        Some(model) => model.map(Cow::Borrowed),
        None => serde_model(body).map_err(|e| {
            ApiError::BadRequest(format!(
                "The request body is not valid JSON ({e}); send a JSON object"
            ))
        })?,
    };
    match model {
        Some(m) if !m.trim().is_empty() => Ok(m),
        _ => Err(ApiError::BadRequest(
            "The request body has no `model`; name the model to use, e.g. \"claude-sonnet-4-5\""
                .into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_in_one_chunk_is_kept_without_a_copy() {
        let chunk = Bytes::from_static(b"{\"model\":\"claude-sonnet-4-5\"}");
        let mut body = Collected::default();
        body.push(chunk.clone(), 64);
        assert_eq!(body.len(), chunk.len());
        let whole = body.into_bytes();
        assert_eq!(whole, chunk);
        assert_eq!(
            whole.as_ptr(),
            chunk.as_ptr(),
            "the chunk itself, not a copy"
        );
    }

    #[test]
    fn a_body_in_many_chunks_is_joined_in_order() {
        let mut body = Collected::default();
        for part in ["{\"model\":", "\"claude", "-sonnet-4-5\"", "}"] {
            body.push(Bytes::from(part), 4);
        }
        assert_eq!(body.len(), 29);
        assert_eq!(body.into_bytes(), "{\"model\":\"claude-sonnet-4-5\"}");
    }

    #[test]
    fn no_chunk_is_an_empty_body() {
        assert!(Collected::default().into_bytes().is_empty());
    }
}
