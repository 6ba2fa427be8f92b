//! Helpers for the OAuth refresh, sync and rotation-safety tests (SPEC §9, §10, §14).

use super::client::Resp;
use super::env::{now_ms, refresh_token, TestEnv};
use super::mock_upstream::{Answer, MockUpstream, Recorded};
use super::server::TestServer;
use super::{find_pool_account, wait_until};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// The client id every refresh request must carry.
pub const OAUTH_CLIENT_ID: &str = "9d1c250a-e61b-44d9-88ed-5944d1962f5e";

/// A `[refresh]` section with the given scaled durations.
pub fn refresh_toml(lead: &str, success_lock: &str, cooldown: &str, max_failures: u32) -> String {
    format!(
        "[refresh]\nlead = \"{lead}\"\nsuccess_lock = \"{success_lock}\"\ncooldown = \"{cooldown}\"\n\
         max_failures = {max_failures}\nfailure_window = \"24h\"\n"
    )
}

/// A Claude Code-format credential with explicit tokens, plus unknown fields (top level and
/// inside `claudeAiOauth`) that must survive a write-back.
pub fn claude_code_with(access: &str, refresh: &str, expires_at_ms: i64) -> Value {
    json!({
        "claudeAiOauth": {
            "accessToken": access,
            "refreshToken": refresh,
            "expiresAt": expires_at_ms,
            "scopes": ["user:inference", "user:profile"],
            "subscriptionType": "max",
            "rateLimitTier": "default_claude_max_20x"
        },
        "operatorNote": "keep-me"
    })
}

/// Writes `account/<tier>/<name>.json` in Claude Code's format with the usual test tokens
/// (`sk-ant-oat01-<name>` / `sk-ant-ort01-<name>`) and the given expiry.
pub fn write_expiring(env: &TestEnv, tier: &str, name: &str, expires_at_ms: i64) -> Value {
    let cred = claude_code_with(
        &super::env::access_token(name),
        &refresh_token(name),
        expires_at_ms,
    );
    write_json(env, tier, name, &cred);
    cred
}

/// Writes `account/<tier>/<name>.json` with `value` (pretty printed).
pub fn write_json(env: &TestEnv, tier: &str, name: &str, value: &Value) {
    let text = serde_json::to_string_pretty(value).expect("serialize credential");
    env.write_account_file(tier, &format!("{name}.json"), text.as_bytes());
}

/// Replaces an account file the way an editor or `cp` over it would: write a temp file beside
/// it and rename it into place (so a reader never sees half a file).
pub fn replace_json(env: &TestEnv, tier: &str, name: &str, value: &Value) {
    let dir = env.account_dir(tier);
    let tmp = dir.join(format!(".{name}.json.test-tmp"));
    let text = serde_json::to_string_pretty(value).expect("serialize credential");
    std::fs::write(&tmp, text).expect("write temp account file");
    std::fs::rename(&tmp, dir.join(format!("{name}.json"))).expect("rename account file");
}

/// The parsed contents of `account/<tier>/<name>.json`.
pub fn read_account(env: &TestEnv, tier: &str, name: &str) -> Value {
    let path = env.account_path(tier, name);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON ({e}): {text}", path.display()))
}

/// The `claudeAiOauth` object of a Claude Code-format credential.
pub fn oauth_part(v: &Value) -> &Value {
    &v["claudeAiOauth"]
}

/// Unix permission bits of a file.
pub fn file_mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Waits until the account file's access token is `want`; returns the file's JSON.
pub fn wait_file_access_token(
    env: &TestEnv,
    tier: &str,
    name: &str,
    want: &str,
    timeout: Duration,
) -> Option<Value> {
    wait_until(timeout, || {
        let text = std::fs::read_to_string(env.account_path(tier, name)).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        let token = v["claudeAiOauth"]["accessToken"]
            .as_str()
            .or_else(|| v["accessToken"].as_str())?;
        (token == want).then_some(v)
    })
}

/// A successful token-endpoint answer.
pub fn oauth_ok(access: &str, refresh: &str, expires_in_secs: u64) -> Answer {
    let body = json!({
        "access_token": access,
        "refresh_token": refresh,
        "expires_in": expires_in_secs,
        "token_type": "Bearer"
    });
    Answer::new(200, body.to_string())
}

/// The token endpoint rejecting the refresh token.
pub fn oauth_invalid_grant() -> Answer {
    let body = json!({
        "error": "invalid_grant",
        "error_description": "Refresh token not found or invalid"
    });
    Answer::new(400, body.to_string())
}

/// The token endpoint failing with a 500.
pub fn oauth_server_error() -> Answer {
    Answer::new(500, json!({"error": "server_error"}).to_string())
}

/// The `refresh_token` field of a recorded OAuth call.
pub fn call_refresh_token(call: &Recorded) -> String {
    call.json()["refresh_token"]
        .as_str()
        .unwrap_or_else(|| panic!("OAuth call without refresh_token: {:?}", call.json()))
        .to_string()
}

/// OAuth calls carrying `name`'s original refresh token (`sk-ant-ort01-<name>`).
pub fn calls_for(mock: &MockUpstream, name: &str) -> Vec<Recorded> {
    let rt = refresh_token(name);
    mock.oauth_calls()
        .into_iter()
        .filter(|c| call_refresh_token(c) == rt)
        .collect()
}

/// Waits until the mock saw at least `n` OAuth calls; returns them (None on timeout).
pub fn wait_oauth_calls(mock: &MockUpstream, n: usize, timeout: Duration) -> Option<Vec<Recorded>> {
    wait_until(timeout, || {
        let calls = mock.oauth_calls();
        (calls.len() >= n).then_some(calls)
    })
}

/// Converts a wall-clock time in ms since the epoch into an `Instant`, using one reference
/// pair taken at the same moment.
pub struct Clock {
    instant: Instant,
    wall_ms: i64,
}

impl Clock {
    pub fn now() -> Clock {
        Clock {
            instant: Instant::now(),
            wall_ms: now_ms(),
        }
    }

    /// The `Instant` of wall-clock `ms` (saturating at the reference when in the past).
    pub fn instant_of(&self, ms: i64) -> Instant {
        let delta = ms - self.wall_ms;
        if delta >= 0 {
            self.instant + Duration::from_millis(delta as u64)
        } else {
            self.instant
                .checked_sub(Duration::from_millis((-delta) as u64))
                .unwrap_or(self.instant)
        }
    }
}

/// The `{added, updated, removed, skipped}` counts of a sync answer.
pub fn sync_counts(v: &Value) -> [u64; 4] {
    ["added", "updated", "removed", "skipped"].map(|k| {
        v[k].as_u64()
            .unwrap_or_else(|| panic!("sync answer without numeric `{k}`: {v}"))
    })
}

impl TestServer {
    /// `POST /admin/sync` → its JSON answer.
    pub async fn sync_now(&self) -> Value {
        let res: Resp = self.admin_sync().await;
        res.json()
    }

    /// `GET /admin/status` as JSON (asserting 200).
    pub async fn status_view(&self) -> Value {
        let res = self.admin_get("/admin/status").await;
        assert_eq!(res.status, 200, "GET /admin/status: {}", res.text());
        res.json()
    }

    /// The pool view's entry for an account, or None when the pool does not list it.
    pub async fn pool_account_opt(&self, tier: &str, name: &str) -> Option<Value> {
        find_pool_account(&self.pool_view().await, tier, name)
    }

    /// Waits for the start-up sync of the current process (it may finish after the server
    /// already listens), so files changed afterwards are seen by a later sync only.
    pub fn wait_startup_sync(&self) {
        let done = wait_until(Duration::from_secs(5), || {
            self.logs_since_start()
                .into_iter()
                .find(|l| l.contains("sync finished:"))
        });
        assert!(done.is_some(), "no start-up `sync finished:` log line");
    }

    /// Waits until the pool view shows the account's token expiring after `min_ms` (the pool
    /// takes a refreshed credential after the store and the file); returns the entry.
    pub async fn wait_pool_expiry_after(&self, tier: &str, name: &str, min_ms: i64) -> Value {
        let got = super::poll_async(Duration::from_secs(3), || {
            let fut = self.pool_account_opt(tier, name);
            async move {
                let acc = fut.await?;
                let exp = acc["token_expires_at"].as_i64()?;
                (exp > min_ms).then_some(acc)
            }
        })
        .await;
        got.unwrap_or_else(|| {
            panic!("{tier}/{name}: the pool never showed a token expiring after {min_ms}")
        })
    }

    /// Every log line (all runs) that contains `needle`.
    pub fn log_lines_with(&self, needle: &str) -> Vec<String> {
        self.logs()
            .into_iter()
            .filter(|l| l.contains(needle))
            .collect()
    }
}

/// `status.refresh.accounts[account == name]`.
pub fn status_refresh_account(status: &Value, name: &str) -> Option<Value> {
    status["refresh"]["accounts"]
        .as_array()?
        .iter()
        .find(|a| a["account"] == name)
        .cloned()
}
