//! Turns a client's request into Claude's: the account's bearer token, the merged beta
//! list, the client's end-to-end headers and nothing of the client's credentials — written
//! straight into the bytes of an HTTP/1.1 request head.

use crate::config::UpstreamConfig;
use crate::domain::headers::{
    connection_named, forward_request_header, merged_beta, DEFAULT_ANTHROPIC_VERSION, OAUTH_BETA,
};
use crate::http::header_names as names;
use crate::upstream::h1::{Endpoint, Timeouts};
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::Method;
use std::cell::RefCell;
use std::sync::Arc;

/// Bearer header values kept per worker, at most this many (one per account in use).
const BEARERS_KEPT: usize = 64;

thread_local! {
    /// The parsed `base_url` (per worker: the URL is parsed once, not per request).
    static BASE: RefCell<Option<(String, Arc<Endpoint>)>> = const { RefCell::new(None) };
    /// Access token → its `Bearer …` header value, validated once.
    static BEARERS: RefCell<Vec<(String, HeaderValue)>> = const { RefCell::new(Vec::new()) };
}

/// The connect and answer timeouts of `[upstream]`.
pub fn timeouts(cfg: &UpstreamConfig) -> Timeouts {
    Timeouts {
        connect: cfg.connect_timeout.get(),
        answer: cfg.response_timeout.get(),
    }
}

/// Where `base_url` points (checked at start-up, so an error here means a changed config).
pub fn endpoint(base_url: &str) -> Result<Arc<Endpoint>, String> {
    BASE.with(|b| {
        let mut base = b.borrow_mut();
        match base.as_ref() {
            Some((url, endpoint)) if url == base_url => Ok(endpoint.clone()),
            _ => {
                let endpoint = Arc::new(Endpoint::parse(base_url)?);
                *base = Some((base_url.to_string(), endpoint.clone()));
                Ok(endpoint)
            }
        }
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

/// Appends `name: value\r\n`.
pub fn put_header(head: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    head.extend_from_slice(name);
    head.extend_from_slice(b": ");
    head.extend_from_slice(value);
    head.extend_from_slice(b"\r\n");
}

/// The request line and `host`: the caller's path under the endpoint's own path, or with
/// no path of the caller's (""), the endpoint's URL as written.
pub fn start_head(endpoint: &Endpoint, method: &Method, path_and_query: &str) -> Vec<u8> {
    let mut head = Vec::with_capacity(1024);
    head.extend_from_slice(method.as_str().as_bytes());
    head.push(b' ');
    if path_and_query.is_empty() {
        head.extend_from_slice(endpoint.path.as_bytes());
    } else {
        head.extend_from_slice(endpoint.path_prefix().as_bytes());
        head.extend_from_slice(path_and_query.as_bytes());
    }
    head.extend_from_slice(b" HTTP/1.1\r\n");
    put_header(&mut head, b"host", endpoint.authority.as_bytes());
    head
}

/// The head's `content-length` (when there is a body) and the empty line that ends it.
pub fn end_head(mut head: Vec<u8>, body_len: Option<usize>) -> Vec<u8> {
    if let Some(len) = body_len {
        put_header(
            &mut head,
            b"content-length",
            itoa::Buffer::new().format(len).as_bytes(),
        );
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// A head for a request sent on a connection of its own (`h1::Connection::Once`): the given
/// headers, `connection: close`, and the body's length.
pub fn closing_head(
    endpoint: &Endpoint,
    method: &Method,
    path_and_query: &str,
    headers: &[(&[u8], &[u8])],
    body_len: Option<usize>,
) -> Vec<u8> {
    let mut head = start_head(endpoint, method, path_and_query);
    for (name, value) in headers {
        put_header(&mut head, name, value);
    }
    put_header(&mut head, b"connection", b"close");
    end_head(head, body_len)
}

/// The whole head of the request to Claude.
pub fn head(
    endpoint: &Endpoint,
    cfg: &UpstreamConfig,
    method: &Method,
    path_and_query: &str,
    client_headers: &HeaderMap,
    access_token: &str,
    body_len: Option<usize>,
) -> Vec<u8> {
    let mut head = start_head(endpoint, method, path_and_query);
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
            put_header(&mut head, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    put_header(
        &mut head,
        names::ANTHROPIC_BETA.as_str().as_bytes(),
        beta_value(client_headers).as_bytes(),
    );
    if !client_headers.contains_key(names::ANTHROPIC_VERSION) {
        put_header(
            &mut head,
            names::ANTHROPIC_VERSION.as_str().as_bytes(),
            DEFAULT_ANTHROPIC_VERSION.as_bytes(),
        );
    }
    if !client_headers.contains_key(header::USER_AGENT) {
        put_header(&mut head, b"user-agent", cfg.user_agent.as_bytes());
    }
    put_header(&mut head, b"accept-encoding", b"identity");
    // A token with bytes a header cannot carry goes without: Claude refuses it as
    // unauthenticated, and no byte of it can split the head.
    if let Some(v) = bearer(access_token) {
        put_header(&mut head, b"authorization", v.as_bytes());
    }
    end_head(head, body_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderName;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        map
    }

    fn head_text(
        base: &str,
        path: &str,
        client: &HeaderMap,
        token: &str,
        body: Option<usize>,
    ) -> String {
        let endpoint = Endpoint::parse(base).unwrap();
        let cfg = UpstreamConfig::default();
        let bytes = head(&endpoint, &cfg, &Method::POST, path, client, token, body);
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn joins_the_base_path_and_the_clients_path() {
        let text = head_text(
            "https://api.anthropic.com",
            "/v1/messages?beta=true",
            &HeaderMap::new(),
            "t",
            Some(2),
        );
        assert!(
            text.starts_with("POST /v1/messages?beta=true HTTP/1.1\r\nhost: api.anthropic.com\r\n"),
            "{text}"
        );
        let text = head_text(
            "http://gw.example:8080/anthropic/",
            "/v1/messages",
            &HeaderMap::new(),
            "t",
            None,
        );
        assert!(
            text.starts_with("POST /anthropic/v1/messages HTTP/1.1\r\nhost: gw.example:8080\r\n"),
            "{text}"
        );
        assert!(!text.contains("content-length"), "{text}");
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn carries_the_accounts_token_and_the_clients_end_to_end_headers_only() {
        let client = headers(&[
            ("authorization", "Bearer sk-cli-v1-client"),
            ("x-api-key", "sk-cli-v1-client"),
            ("content-type", "application/json"),
            ("x-stainless-lang", "js"),
            ("connection", "x-hop"),
            ("x-hop", "1"),
            ("anthropic-beta", "x-1, oauth-2025-04-20"),
            ("user-agent", "claude-cli/1.0.0"),
        ]);
        let text = head_text(
            "http://127.0.0.1:9",
            "/v1/messages",
            &client,
            "tok-a",
            Some(17),
        );
        let lines: Vec<&str> = text.split("\r\n").collect();
        for line in [
            "content-type: application/json",
            "x-stainless-lang: js",
            "anthropic-beta: x-1,oauth-2025-04-20",
            "anthropic-version: 2023-06-01",
            "user-agent: claude-cli/1.0.0",
            "accept-encoding: identity",
            "authorization: Bearer tok-a",
            "content-length: 17",
        ] {
            assert_eq!(
                lines.iter().filter(|l| **l == line).count(),
                1,
                "{line} once in\n{text}"
            );
        }
        assert!(!text.contains("sk-cli-v1-client"), "{text}");
        assert!(!text.contains("x-hop"), "{text}");
        assert!(!text.contains("connection"), "{text}");
    }

    #[test]
    fn a_request_to_the_url_itself_keeps_its_path() {
        let token_url = Endpoint::parse("https://platform.claude.com/v1/oauth/token").unwrap();
        let head = start_head(&token_url, &Method::POST, "");
        assert!(head.starts_with(b"POST /v1/oauth/token HTTP/1.1\r\nhost: platform.claude.com\r\n"));
        let bare = Endpoint::parse("http://127.0.0.1:9").unwrap();
        assert!(start_head(&bare, &Method::GET, "").starts_with(b"GET / HTTP/1.1\r\n"));
    }

    #[test]
    fn a_closing_head_carries_its_headers_the_close_and_the_length() {
        let endpoint = Endpoint::parse("http://127.0.0.1:9").unwrap();
        let head = closing_head(
            &endpoint,
            &Method::POST,
            "/admin/recover",
            &[(b"authorization", b"Bearer t")],
            Some(12),
        );
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "POST /admin/recover HTTP/1.1\r\nhost: 127.0.0.1:9\r\nauthorization: Bearer t\r\nconnection: close\r\ncontent-length: 12\r\n\r\n"
        );
    }

    #[test]
    fn a_token_that_could_split_the_head_is_not_sent() {
        let text = head_text(
            "http://127.0.0.1:9",
            "/v1/models",
            &HeaderMap::new(),
            "bad\r\nx-evil: 1",
            None,
        );
        assert!(!text.contains("x-evil"), "{text}");
        assert!(!text.contains("authorization"), "{text}");
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

    #[test]
    fn the_endpoint_is_parsed_once_per_base() {
        let a = endpoint("http://127.0.0.1:9").unwrap();
        assert!(Arc::ptr_eq(&a, &endpoint("http://127.0.0.1:9").unwrap()));
        let b = endpoint("http://127.0.0.1:10/x").unwrap();
        assert_eq!(b.path_prefix(), "/x");
        assert!(endpoint("not a url").is_err());
    }
}
