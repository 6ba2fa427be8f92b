//! Admin API helpers: the pool view, key details, recovery; and small checks shared by the
//! limit, refund, usage and upstream-answer tests.

use super::client::{message_request, request, Resp};
use super::env::ADMIN_TOKEN;
use super::mock_upstream::{Answer, MockUpstream};
use super::server::TestServer;
use super::{poll_async, wait_until};
use serde_json::{json, Value};
use std::time::Duration;

fn admin_auth() -> String {
    format!("Bearer {ADMIN_TOKEN}")
}

impl TestServer {
    /// `GET <path>` with the admin token.
    pub async fn admin_get(&self, path: &str) -> Resp {
        let auth = admin_auth();
        request(
            "GET",
            &self.url(path),
            &[("authorization", &auth)],
            Vec::new(),
        )
        .await
    }

    /// `POST <path>` with the admin token and a JSON body.
    pub async fn admin_post(&self, path: &str, body: &Value) -> Resp {
        let auth = admin_auth();
        let headers = [
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ];
        request(
            "POST",
            &self.url(path),
            &headers,
            body.to_string().into_bytes(),
        )
        .await
    }

    /// `GET /admin/pool` as JSON (asserting 200).
    pub async fn pool_view(&self) -> Value {
        let res = self.admin_get("/admin/pool").await;
        assert_eq!(res.status, 200, "GET /admin/pool: {}", res.text());
        res.json()
    }

    /// The pool view's entry for account `name` of `tier`.
    pub async fn pool_account(&self, tier: &str, name: &str) -> Value {
        let view = self.pool_view().await;
        find_pool_account(&view, tier, name)
            .unwrap_or_else(|| panic!("no account {tier}/{name} in the pool view: {view}"))
    }

    /// `GET /admin/keys/{id}` as JSON (asserting 200).
    pub async fn key_view(&self, id: &str) -> Value {
        let res = self.admin_get(&format!("/admin/keys/{id}")).await;
        assert_eq!(res.status, 200, "GET /admin/keys/{id}: {}", res.text());
        res.json()
    }

    /// `POST /admin/recover {"account": name}` (asserting success).
    pub async fn recover(&self, name: &str) -> Resp {
        let res = self
            .admin_post("/admin/recover", &json!({ "account": name }))
            .await;
        assert!(
            (200..300).contains(&res.status),
            "POST /admin/recover {name}: {} {}",
            res.status,
            res.text()
        );
        res
    }

    /// `POST /admin/sync` (asserting success).
    pub async fn admin_sync(&self) -> Resp {
        let res = self.admin_post("/admin/sync", &json!({})).await;
        assert!(
            (200..300).contains(&res.status),
            "POST /admin/sync: {} {}",
            res.status,
            res.text()
        );
        res
    }

    /// Blacklists account `name` through a 401 "Invalid bearer token" answer to a request of a
    /// key fixed to it, and returns that key.
    pub async fn blacklist_via_401(&self, mock: &MockUpstream, tier: &str, name: &str) -> String {
        let (key, _) = self
            .admin_create_key(&json!({"tier": tier, "account": name}))
            .await;
        mock.push_answer(Answer::error(
            401,
            "authentication_error",
            "Invalid bearer token",
        ));
        let res = self.send_model(&key, super::SONNET).await;
        assert_ne!(res.status, 200, "the 401 should not become a 200");
        let got = poll_async(Duration::from_secs(2), || {
            let fut = self.pool_account(tier, name);
            async { (fut.await["status"] == "blacklisted").then_some(()) }
        })
        .await;
        assert!(
            got.is_some(),
            "{name} not blacklisted: {}",
            self.pool_account(tier, name).await
        );
        key
    }

    /// A non-streaming request for `model` with key `key`.
    pub async fn send_model(&self, key: &str, model: &str) -> Resp {
        self.post_messages(Some(key), &message_request(model), &[])
            .await
    }

    /// Exactly `left` more Sonnet requests are served, then the window is full: what a
    /// window of that many requests looks like when nothing before counted in it.
    pub async fn assert_sonnet_requests_left(&self, key: &str, left: usize) {
        for i in 0..left {
            let res = self.send_model(key, super::SONNET).await;
            assert_eq!(
                res.status,
                200,
                "success {} of {left}: {}",
                i + 1,
                res.text()
            );
        }
        self.assert_sonnet_window_full(key).await;
    }

    /// One more Sonnet request gets the proxy's own 429: the key's window is used up.
    pub async fn assert_sonnet_window_full(&self, key: &str) {
        self.send_model(key, super::SONNET).await.assert_error(
            429,
            "rate_limit_error",
            "Rate limit exceeded for Sonnet",
        );
    }

    /// Polls the key's `usage` until it equals `want` (2 s); returns the last one seen.
    pub async fn wait_key_usage(&self, id: &str, want: &Value) -> Value {
        let got = poll_async(Duration::from_secs(2), || {
            let fut = self.key_view(id);
            async {
                let usage = fut.await["usage"].clone();
                (usage == *want).then_some(usage)
            }
        })
        .await;
        match got {
            Some(u) => u,
            None => self.key_view(id).await["usage"].clone(),
        }
    }

    /// Polls the account's `usage` in the pool view until it equals `want` (2 s); returns the
    /// last one seen.
    pub async fn wait_account_usage(&self, tier: &str, name: &str, want: &Value) -> Value {
        let got = poll_async(Duration::from_secs(2), || {
            let fut = self.pool_account(tier, name);
            async {
                let usage = fut.await["usage"].clone();
                (usage == *want).then_some(usage)
            }
        })
        .await;
        match got {
            Some(u) => u,
            None => self.pool_account(tier, name).await["usage"].clone(),
        }
    }

    /// Waits until some log line contains every one of `needles`.
    pub fn wait_for_log_all(&self, needles: &[&str], timeout: Duration) -> Option<String> {
        wait_until(timeout, || {
            self.logs()
                .into_iter()
                .find(|l| needles.iter().all(|n| l.contains(n)))
        })
    }
}

/// `tiers[tier == t].accounts[name == n]` of a pool view.
pub fn find_pool_account(view: &Value, tier: &str, name: &str) -> Option<Value> {
    view["tiers"]
        .as_array()?
        .iter()
        .find(|t| t["tier"] == tier)?["accounts"]
        .as_array()?
        .iter()
        .find(|a| a["name"] == name)
        .cloned()
}

/// A `usage` object as the admin API shows it.
pub fn usage_json(
    requests: u64,
    input: u64,
    output: u64,
    cache_creation: u64,
    cache_read: u64,
) -> Value {
    json!({
        "requests": requests,
        "input_tokens": input,
        "output_tokens": output,
        "cache_creation_input_tokens": cache_creation,
        "cache_read_input_tokens": cache_read
    })
}

/// Parses an RFC 3339 timestamp into milliseconds since the epoch.
pub fn rfc3339_ms(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("`{text}` is not RFC 3339: {e}"))
        .timestamp_millis()
}
