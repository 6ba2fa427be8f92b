//! The CLI's calls to a running server's admin API.

use crate::admin_token;
use crate::config::Config;
use crate::upstream::h1::{self, Endpoint};
use crate::upstream::request;
use actix_web::http::{Method, StatusCode};
use serde_json::Value;
use std::time::Duration;

pub enum CallError {
    /// Nothing listens there: the caller may fall back to the store.
    NotRunning,
    Failed(String),
}

/// One admin call; the answer's JSON on success, the server's own message on failure.
pub fn call(
    config: &Config,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<Value, CallError> {
    let base = config.admin_base_url();
    let url = format!("{base}{path}");
    let token = admin_token::read(&config.admin).unwrap_or_default();
    let method =
        Method::from_bytes(method.as_bytes()).map_err(|e| CallError::Failed(e.to_string()))?;
    let endpoint = Endpoint::parse(&base).map_err(|e| {
        CallError::Failed(format!(
            "the admin URL {} cannot be used: {e}; check --admin-url or [admin] url",
            crate::store::redacted_url(&base)
        ))
    })?;
    let body = body.map(|b| b.to_string());
    let bearer = format!("Bearer {token}");
    let mut headers: Vec<(&[u8], &[u8])> = vec![(b"authorization", bearer.as_bytes())];
    if body.is_some() {
        headers.push((b"content-type", b"application/json"));
    }
    let head = request::closing_head(
        &endpoint,
        &method,
        path,
        &headers,
        body.as_ref().map(String::len),
    );
    let timeouts = h1::Timeouts {
        connect: Duration::from_secs(30),
        answer: Duration::from_secs(30),
    };
    let system = actix_web::rt::System::new();
    system.block_on(async move {
        let body = body.unwrap_or_default();
        let mut answer = match h1::send(
            &endpoint,
            &head,
            body.as_bytes(),
            timeouts,
            h1::Connection::Once,
        )
        .await
        {
            Ok(a) => a,
            Err(h1::SendError::Connect(..)) => return Err(CallError::NotRunning),
            Err(e) => return Err(CallError::Failed(format!("{url}: {e}"))),
        };
        let status = answer.status();
        let bytes = answer
            .read_body(64 * 1024 * 1024)
            .await
            .map_err(|e| CallError::Failed(e.to_string()))?;
        let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(json);
        }
        let message = json["error"]["message"].as_str().map_or_else(
            || String::from_utf8_lossy(&bytes).into_owned(),
            str::to_string,
        );
        if status == StatusCode::UNAUTHORIZED {
            return Err(CallError::Failed(format!(
                "the server refused the admin token ({message}); check [admin] token or {}",
                config.admin.token_file.display()
            )));
        }
        Err(CallError::Failed(message))
    })
}

/// An admin call that needs the server: "not running" becomes a clear error.
pub fn call_running(
    config: &Config,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    call(config, method, path, body).map_err(|e| match e {
        CallError::NotRunning => format!(
            "no claude-route server answers at {}; start it with `make run` (or pass --admin-url)",
            config.admin_base_url()
        ),
        CallError::Failed(m) => m,
    })
}
