//! Reading and checking a client's request body.

use super::body_scan::scan_model;
use super::error::ApiError;
use actix_web::web;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde::Deserialize;
use std::borrow::Cow;

/// Reads the whole body, refusing it as soon as it passes `limit`.
pub async fn read_limited(
    req: &actix_web::HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::TooLarge { limit });
    }
    let mut body = BytesMut::with_capacity(declared.unwrap_or(8 * 1024).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::BadRequest(format!("the request body could not be read: {e}"))
        })?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
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
pub fn model_of(body: &[u8]) -> Result<String, ApiError> {
    if body.is_empty() {
        return Err(ApiError::BadRequest(
            "The request body is empty; send a JSON object with a `model` field".into(),
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
        Some(m) if !m.trim().is_empty() => Ok(m.into_owned()),
        _ => Err(ApiError::BadRequest(
            "The request body has no `model`; name the model to use, e.g. \"claude-sonnet-4-5\""
                .into(),
        )),
    }
}
