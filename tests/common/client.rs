//! An HTTP client (awc) for talking to the proxy the way API clients do.

use super::env::ADMIN_TOKEN;
use super::server::TestServer;
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::Value;
use std::time::{Duration, Instant};

/// A complete answer from the proxy.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "answer ({}) is not JSON ({e}): {}",
                self.status,
                self.text()
            )
        })
    }

    /// Asserts the Anthropic error shape, status, type and message start.
    pub fn assert_error(&self, status: u16, kind: &str, message_start: &str) {
        assert_eq!(
            self.status,
            status,
            "expected {status} {kind} `{message_start}…`, got {}: {}",
            self.status,
            self.text()
        );
        let body = self.json();
        assert_eq!(body["type"], "error", "error body shape: {body}");
        assert_eq!(body["error"]["type"], kind, "error type: {body}");
        let message = body["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("error.message is not a string: {body}"));
        assert!(
            message.starts_with(message_start),
            "error message should start with `{message_start}`: {body}"
        );
    }
}

/// A streamed answer: status, headers and each chunk with its arrival time.
#[derive(Debug)]
pub struct StreamResp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub chunks: Vec<(Instant, Bytes)>,
}

impl StreamResp {
    pub fn bytes(&self) -> Vec<u8> {
        self.chunks.iter().flat_map(|(_, b)| b.to_vec()).collect()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub fn client() -> awc::Client {
    awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish()
}

fn header_list(h: &awc::http::header::HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn build(method: &str, url: &str, headers: &[(&str, &str)]) -> awc::ClientRequest {
    let method = awc::http::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = client().request(method, url);
    for (n, v) in headers {
        req = req.append_header((*n, *v));
    }
    req
}

/// Sends one request and reads the whole answer.
pub async fn request(method: &str, url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Resp {
    let mut res = build(method, url, headers)
        .send_body(body)
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let body = res
        .body()
        .limit(64 << 20)
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: reading body: {e}"));
    Resp {
        status: res.status().as_u16(),
        headers: header_list(res.headers()),
        body,
    }
}

/// Sends one request and reads the answer chunk by chunk; stops after `max_chunks` chunks
/// (dropping the connection) when given.
pub async fn request_stream(
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
    max_chunks: Option<usize>,
) -> StreamResp {
    let mut res = build("POST", url, headers)
        .send_body(body)
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = res.status().as_u16();
    let headers = header_list(res.headers());
    let mut chunks = Vec::new();
    while max_chunks.is_none_or(|m| chunks.len() < m) {
        match res.next().await {
            Some(Ok(chunk)) => chunks.push((Instant::now(), chunk)),
            Some(Err(e)) => panic!(
                "POST {url}: stream error after {} chunks: {e}",
                chunks.len()
            ),
            None => break,
        }
    }
    drop(res);
    StreamResp {
        status,
        headers,
        chunks,
    }
}

/// A small valid Messages request for `model`.
pub fn message_request(model: &str) -> Value {
    serde_json::json!({
        "model": model,
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "hello"}]
    })
}

pub const SONNET: &str = "claude-sonnet-4-5";
pub const OPUS: &str = "claude-opus-4-1";
pub const HAIKU: &str = "claude-3-5-haiku-latest";

impl TestServer {
    /// `POST /v1/messages` with `x-api-key: <key>` (when given), a JSON body and extra headers.
    pub async fn post_messages(
        &self,
        key: Option<&str>,
        body: &Value,
        extra: &[(&str, &str)],
    ) -> Resp {
        self.post_raw("/v1/messages", key, body.to_string().into_bytes(), extra)
            .await
    }

    /// `POST <path>` with raw body bytes, `content-type: application/json`.
    pub async fn post_raw(
        &self,
        path: &str,
        key: Option<&str>,
        body: Vec<u8>,
        extra: &[(&str, &str)],
    ) -> Resp {
        let mut headers: Vec<(&str, &str)> = vec![("content-type", "application/json")];
        if let Some(k) = key {
            headers.push(("x-api-key", k));
        }
        headers.extend_from_slice(extra);
        request("POST", &self.url(path), &headers, body).await
    }

    pub async fn get(&self, path: &str, key: Option<&str>, extra: &[(&str, &str)]) -> Resp {
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(k) = key {
            headers.push(("x-api-key", k));
        }
        headers.extend_from_slice(extra);
        request("GET", &self.url(path), &headers, Vec::new()).await
    }

    /// A streaming `POST /v1/messages`, read to the end or for `max_chunks` chunks.
    pub async fn post_stream(
        &self,
        key: &str,
        body: &Value,
        max_chunks: Option<usize>,
    ) -> StreamResp {
        let headers = [("content-type", "application/json"), ("x-api-key", key)];
        request_stream(
            &self.url("/v1/messages"),
            &headers,
            body.to_string().into_bytes(),
            max_chunks,
        )
        .await
    }

    /// `POST /admin/keys` with the admin token; returns (key, whole JSON answer).
    pub async fn admin_create_key(&self, body: &Value) -> (String, Value) {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let headers = [
            ("content-type", "application/json"),
            ("authorization", auth.as_str()),
        ];
        let res = request(
            "POST",
            &self.url("/admin/keys"),
            &headers,
            body.to_string().into_bytes(),
        )
        .await;
        assert!(
            (200..300).contains(&res.status),
            "POST /admin/keys {body} -> {}: {}",
            res.status,
            res.text()
        );
        let json = res.json();
        let key = find_key(&json).unwrap_or_else(|| panic!("no sk-cli-v1- key in {json}"));
        (key, json)
    }
}

/// The first string anywhere in `v` that looks like a proxy key.
pub fn find_key(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if s.starts_with("sk-cli-v1-") && s.len() == 42 => Some(s.clone()),
        Value::Array(items) => items.iter().find_map(find_key),
        Value::Object(m) => m.values().find_map(find_key),
        _ => None,
    }
}
