//! Several real `claude-route serve` processes sharing one Redis (SPEC §11): each has its own
//! temporary directory and listen port, all read the same account directory and use the same
//! `[store] url` and `prefix`.

use super::client::Resp;
use super::env::{claude_code_credential, now_ms, TestEnv, ADMIN_TOKEN};
use super::mock_upstream::MockUpstream;
use super::redis_server::RedisServer;
use super::server::TestServer;
use super::{find_pool_account, poll_async};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One `account/` directory shared by every instance.
pub struct SharedAccounts {
    dir: tempfile::TempDir,
}

impl Default for SharedAccounts {
    fn default() -> Self {
        SharedAccounts::new()
    }
}

impl SharedAccounts {
    pub fn new() -> SharedAccounts {
        SharedAccounts {
            dir: tempfile::Builder::new()
                .prefix("claude-route-shared-accounts")
                .tempdir()
                .expect("tempdir for shared accounts"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn tier_dir(&self, tier: &str) -> PathBuf {
        let d = self.path().join(tier);
        std::fs::create_dir_all(&d).expect("mkdir shared tier dir");
        d
    }

    pub fn account_path(&self, tier: &str, name: &str) -> PathBuf {
        self.tier_dir(tier).join(format!("{name}.json"))
    }

    /// An account in Claude Code's format expiring at `expires_at_ms`.
    pub fn add_expiring(&self, tier: &str, name: &str, expires_at_ms: i64) -> PathBuf {
        let p = self.account_path(tier, name);
        let cred = claude_code_credential(name, expires_at_ms);
        std::fs::write(&p, cred.to_string()).expect("write shared account file");
        p
    }

    /// An account whose token is valid for an hour.
    pub fn add_account(&self, tier: &str, name: &str) -> PathBuf {
        self.add_expiring(tier, name, now_ms() + 3_600_000)
    }
}

/// The TOML every instance gets: the shared Redis and account directory, then `extra`
/// (which must not repeat `[store]` or `[accounts]`).
pub fn instance_toml(redis: &RedisServer, accounts: &SharedAccounts, extra: &str) -> String {
    format!(
        "{}[accounts]\ndir = \"{}\"\n{extra}\n",
        redis.store_toml(),
        accounts.path().display()
    )
}

/// Starts one instance against `mock`, the shared Redis and accounts.
pub fn start_instance(
    mock: &MockUpstream,
    redis: &RedisServer,
    accounts: &SharedAccounts,
    extra: &str,
) -> TestServer {
    let env = TestEnv::new(&mock.url(), &instance_toml(redis, accounts, extra));
    TestServer::start(env)
}

/// Starts `n` instances (each its own port and directory).
pub fn start_instances(
    n: usize,
    mock: &MockUpstream,
    redis: &RedisServer,
    accounts: &SharedAccounts,
    extra: &str,
) -> Vec<TestServer> {
    (0..n)
        .map(|_| start_instance(mock, redis, accounts, extra))
        .collect()
}

/// Waits until the server's pool view lists every one of `names` in `tier`.
pub async fn wait_pool_accounts(
    server: &TestServer,
    tier: &str,
    names: &[&str],
    timeout: Duration,
) -> bool {
    poll_async(timeout, || {
        let fut = try_request(
            "GET",
            server.url("/admin/pool"),
            vec![("authorization".into(), format!("Bearer {ADMIN_TOKEN}"))],
            Vec::new(),
            Duration::from_secs(5),
        );
        async move {
            let res = fut.await.ok()?;
            if res.status != 200 {
                return None;
            }
            let view: serde_json::Value = serde_json::from_slice(&res.body).ok()?;
            names
                .iter()
                .all(|n| find_pool_account(&view, tier, n).is_some())
                .then_some(())
        }
    })
    .await
    .is_some()
}

/// One request that never panics: Err on a connection problem or after `timeout`.
pub async fn try_request(
    method: &str,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Resp, String> {
    let method = awc::http::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
    let client = awc::Client::builder().timeout(timeout).finish();
    let mut req = client.request(method, &url);
    for (n, v) in &headers {
        req = req.append_header((n.as_str(), v.as_str()));
    }
    let mut res = req
        .send_body(body)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let body = res
        .body()
        .limit(64 << 20)
        .await
        .map_err(|e| format!("{url}: reading body: {e}"))?;
    Ok(Resp {
        status: res.status().as_u16(),
        headers: res
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
    })
}

/// `POST /v1/messages` for a Sonnet model with `key`, whose user message is `marker` (the mock
/// records it, so the test knows which key a forwarded request came from).
pub async fn try_message(base_url: &str, key: &str, marker: &str) -> Result<Resp, String> {
    let body = serde_json::json!({
        "model": super::client::SONNET,
        "max_tokens": 16,
        "messages": [{"role": "user", "content": marker}]
    });
    try_request(
        "POST",
        format!("{base_url}/v1/messages"),
        vec![
            ("content-type".into(), "application/json".into()),
            ("x-api-key".into(), key.to_string()),
        ],
        body.to_string().into_bytes(),
        Duration::from_secs(30),
    )
    .await
}

/// The marker (user message text) of a request the mock recorded.
pub fn marker_of(r: &super::mock_upstream::Recorded) -> String {
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
    v["messages"][0]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The error message of an Anthropic-shaped error answer ("" when not one).
pub fn error_message(res: &Resp) -> String {
    serde_json::from_slice::<serde_json::Value>(&res.body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_default()
}
