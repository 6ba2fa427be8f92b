//! The CLI's calls to a running server's admin API.

use crate::admin_token;
use crate::config::Config;
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
    let url = format!("{}{path}", config.admin_base_url());
    let token = admin_token::read(&config.admin).unwrap_or_default();
    let method = actix_web::http::Method::from_bytes(method.as_bytes())
        .map_err(|e| CallError::Failed(e.to_string()))?;
    let system = actix_web::rt::System::new();
    system.block_on(async move {
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(30))
            .finish();
        let req = client
            .request(method, &url)
            .insert_header(("authorization", format!("Bearer {token}")));
        let sent = match body {
            Some(b) => req.send_json(&b).await,
            None => req.send().await,
        };
        let mut answer = match sent {
            Ok(a) => a,
            Err(awc::error::SendRequestError::Connect(_)) => return Err(CallError::NotRunning),
            Err(e) => return Err(CallError::Failed(format!("{url}: {e}"))),
        };
        let status = answer.status();
        let bytes = answer
            .body()
            .limit(64 * 1024 * 1024)
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
        if status == actix_web::http::StatusCode::UNAUTHORIZED {
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
