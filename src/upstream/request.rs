//! Turns a client's request into Claude's: the account's bearer token, the merged beta
//! list, the client's end-to-end headers and nothing of the client's credentials.

use crate::config::UpstreamConfig;
use crate::domain::headers::{
    connection_named, forward_request_header, merged_beta, DEFAULT_ANTHROPIC_VERSION, OAUTH_BETA,
};
use crate::http::header_names as names;
use actix_web::error::HttpError;
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::uri::{Authority, PathAndQuery, Scheme, Uri};
use actix_web::http::Method;
use std::cell::RefCell;

/// Bearer header values kept per worker, at most this many (one per account in use).
const BEARERS_KEPT: usize = 64;

/// Scheme and host of a base URL that has no path of its own.
type Origin = (Scheme, Authority);

thread_local! {
    /// The parsed `base_url` (per worker: the URL is parsed once, not per request).
    static BASE: RefCell<Option<(String, Option<Origin>)>> = const { RefCell::new(None) };
    /// Access token → its `Bearer …` header value, validated once.
    static BEARERS: RefCell<Vec<(String, HeaderValue)>> = const { RefCell::new(Vec::new()) };
}

/// Scheme and authority of a base URL without a path of its own; None when it has one
/// (then the URL is joined as text).
fn origin_of(base_url: &str) -> Option<Origin> {
    let uri: Uri = base_url.parse().ok()?;
    let bare = uri.path_and_query().is_none_or(|p| p.as_str() == "/");
    let parts = uri.into_parts();
    match (bare, parts.scheme, parts.authority) {
        (true, Some(scheme), Some(authority)) => Some((scheme, authority)),
        _ => None,
    }
}

/// `base_url` joined with the client's path and query.
fn upstream_uri(base_url: &str, path_and_query: &PathAndQuery) -> Result<Uri, HttpError> {
    let origin = BASE.with(|b| {
        let mut base = b.borrow_mut();
        match base.as_ref() {
            Some((url, origin)) if url == base_url => origin.clone(),
            _ => {
                let origin = origin_of(base_url);
                *base = Some((base_url.to_string(), origin.clone()));
                origin
            }
        }
    });
    Ok(match origin {
        Some((scheme, authority)) => {
            let mut parts = actix_web::http::uri::Parts::default();
            parts.scheme = Some(scheme);
            parts.authority = Some(authority);
            parts.path_and_query = Some(path_and_query.clone());
            Uri::from_parts(parts)?
        }
        None => format!("{}{}", base_url.trim_end_matches('/'), path_and_query).parse::<Uri>()?,
    })
}

/// `Bearer <token>`, or None for a token with bytes a header cannot carry.
fn bearer(access_token: &str) -> Option<HeaderValue> {
    BEARERS.with(|b| {
        let mut kept = b.borrow_mut();
        if let Some((_, value)) = kept.iter().find(|(token, _)| token == access_token) {
            return Some(value.clone());
        }
        let value = HeaderValue::from_str(&format!("Bearer {access_token}")).ok()?;
        if kept.len() >= BEARERS_KEPT {
            kept.clear();
        }
        kept.push((access_token.to_string(), value.clone()));
        Some(value)
    })
}

/// The `anthropic-beta` value: the client's betas and the OAuth beta, each once.
fn beta_value(client_headers: &HeaderMap) -> HeaderValue {
    let mut betas = client_headers
        .get_all(names::ANTHROPIC_BETA)
        .filter_map(|v| v.to_str().ok())
        .peekable();
    if betas.peek().is_none() {
        return HeaderValue::from_static(OAUTH_BETA);
    }
    // Built from visible ASCII header values and commas: always a valid value.
    HeaderValue::from_str(&merged_beta(betas))
        .unwrap_or_else(|_| HeaderValue::from_static(OAUTH_BETA))
}

pub fn build(
    client: &awc::Client,
    cfg: &UpstreamConfig,
    method: Method,
    path_and_query: &PathAndQuery,
    client_headers: &HeaderMap,
    access_token: &str,
) -> Result<awc::ClientRequest, awc::error::SendRequestError> {
    let uri = upstream_uri(&cfg.base_url, path_and_query)
        .map_err(|e| awc::error::SendRequestError::Url(awc::error::InvalidUrl::HttpError(e)))?;
    let mut req = client.request(method, uri).no_decompress();
    let hop_only = connection_named(
        client_headers
            .get_all(header::CONNECTION)
            .filter_map(|v| v.to_str().ok()),
    );
    for (name, value) in client_headers.iter() {
        if forward_request_header(name.as_str())
            && !hop_only
                .iter()
                .any(|n| n.eq_ignore_ascii_case(name.as_str()))
        {
            req = req.append_header((name.clone(), value.clone()));
        }
    }
    req = req.insert_header((names::ANTHROPIC_BETA, beta_value(client_headers)));
    if !client_headers.contains_key(names::ANTHROPIC_VERSION) {
        req = req.insert_header((
            names::ANTHROPIC_VERSION,
            HeaderValue::from_static(DEFAULT_ANTHROPIC_VERSION),
        ));
    }
    if !client_headers.contains_key(header::USER_AGENT) {
        req = req.insert_header((header::USER_AGENT, cfg.user_agent.as_str()));
    }
    req = req.insert_header((
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    ));
    Ok(match bearer(access_token) {
        Some(v) => req.insert_header((header::AUTHORIZATION, v)),
        // A token with bytes a header cannot carry: upstream will refuse it as unauthenticated.
        None => req,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pq(text: &str) -> PathAndQuery {
        text.parse().unwrap()
    }

    #[test]
    fn joins_a_bare_base_and_a_base_with_a_path() {
        let uri = upstream_uri("https://api.anthropic.com", &pq("/v1/messages?beta=true")).unwrap();
        assert_eq!(
            uri.to_string(),
            "https://api.anthropic.com/v1/messages?beta=true"
        );
        let uri = upstream_uri("http://127.0.0.1:9/", &pq("/v1/models")).unwrap();
        assert_eq!(uri.to_string(), "http://127.0.0.1:9/v1/models");
        // A second base on the same thread replaces the remembered one.
        let uri = upstream_uri("http://gw.example/anthropic/", &pq("/v1/messages")).unwrap();
        assert_eq!(uri.to_string(), "http://gw.example/anthropic/v1/messages");
        assert!(upstream_uri("not a url", &pq("/v1/messages")).is_err());
    }

    #[test]
    fn bearer_values_follow_the_token() {
        assert_eq!(bearer("tok-a").unwrap(), "Bearer tok-a");
        assert_eq!(bearer("tok-b").unwrap(), "Bearer tok-b");
        assert_eq!(bearer("tok-a").unwrap(), "Bearer tok-a");
        assert!(bearer("bad\ntoken").is_none());
        for i in 0..(BEARERS_KEPT + 5) {
            assert_eq!(
                bearer(&format!("t{i}")).unwrap(),
                format!("Bearer t{i}").as_str()
            );
        }
        assert!(BEARERS.with(|b| b.borrow().len()) <= BEARERS_KEPT);
    }

    #[test]
    fn betas_always_carry_oauth_once() {
        let mut headers = HeaderMap::new();
        assert_eq!(beta_value(&headers), OAUTH_BETA);
        headers.insert(
            header::HeaderName::from_static("anthropic-beta"),
            HeaderValue::from_static("x-1, oauth-2025-04-20"),
        );
        assert_eq!(beta_value(&headers), "x-1,oauth-2025-04-20");
    }
}
